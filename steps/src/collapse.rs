//! Collapse: notifications with the same `collapse_key` for the same recipient and channel,
//! inside their category's collapse window, go out as one message ("3 new messages").
//!
//! The first notification of a key *opens* a group and waits for the window to end; each one
//! that arrives inside the window *joins* it (its data is added to the group, atomically with
//! the membership) and ends `skipped`, collapsed into the first; when the window ends, the first
//! *closes* the group and renders once with every member's data. Joining and closing are
//! idempotent, so a worker that dies between a store step and its commit repeats it harmlessly:
//! a member finds its membership, a survivor its closed group. The store follows [`join`] and
//! [`close`] (one Lua script each on Redis, one critical section in memory), the reference the
//! conformance suite holds it to; the template variables are [`context`]'s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::NotificationId;

/// The most notifications one group merges: a full group is closed to newcomers, and the next
/// one opens a group of its own. Bounds the data one message carries.
pub const COLLAPSE_ITEMS_MAX: usize = 50;
/// The longest collapse window a category may have: the first notification of a group waits
/// that long before it goes out.
pub const COLLAPSE_WINDOW_MS_MAX: u64 = 3_600_000;
/// How long after its window a group and its memberships are kept, for a worker that crashed
/// mid-merge to find them again (the reaper re-drives it within minutes).
pub const COLLAPSE_KEEP_MS: u64 = 24 * 3_600_000;

/// One notification merged into a group: its id and its template data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergedItem {
    /// The notification.
    pub id: NotificationId,
    /// Its template variables.
    pub data: Map<String, Value>,
}

/// What a closed group merged, the first notification (the survivor) first, then in the order
/// they joined.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Merged {
    /// The merged notifications.
    pub items: Vec<MergedItem>,
}

impl Merged {
    /// A group of one: a survivor whose group is gone renders with its own data only.
    pub fn alone(id: &NotificationId, data: &Map<String, Value>) -> Merged {
        Merged { items: vec![MergedItem { id: id.clone(), data: data.clone() }] }
    }
}

/// What joining came to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "joined")]
pub enum Joined {
    /// Merged into the group of `into`, which carries this notification's data.
    Merged {
        /// The survivor.
        into: NotificationId,
    },
    /// This notification opened a group (or asks again before closing it): it waits until
    /// `until_ms`, when its window ends.
    Wait {
        /// When the window ends.
        until_ms: u64,
    },
    /// This notification's group is closed: what it merged.
    Closed {
        /// The merged notifications.
        merged: Merged,
    },
}

/// What the lifecycle hears back from a collapse step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollapseDecision {
    /// Merged into `into`'s group: this notification is done.
    Merged {
        /// The survivor.
        into: NotificationId,
    },
    /// It opened a group: wait until `until_ms` for others.
    Wait {
        /// When the window ends.
        until_ms: u64,
    },
    /// Its group is closed: render with the `count` notifications it merged.
    Closed {
        /// How many notifications the message stands for.
        count: usize,
    },
}

/// One group: open until `closes_ms` (or until closed), holding its members' data.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Group {
    /// When its window ends.
    pub closes_ms: u64,
    /// Whether its survivor closed it.
    pub closed: bool,
    /// What it merged so far, survivor first.
    pub items: Vec<MergedItem>,
    /// When it is forgotten.
    pub expires_at_ms: u64,
}

/// The reference state of one recipient's groups on one channel and key.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Groups {
    /// The open group newcomers join (its survivor), until its window ends.
    pub open: Option<(NotificationId, u64)>,
    /// Groups by survivor.
    pub groups: BTreeMap<NotificationId, Group>,
    /// Each member's survivor (a survivor is its own), until forgotten.
    pub members: BTreeMap<NotificationId, (NotificationId, u64)>,
}

impl Groups {
    fn group(&self, survivor: &NotificationId, now_ms: u64) -> Option<&Group> {
        self.groups.get(survivor).filter(|g| g.expires_at_ms > now_ms)
    }
}

/// The reference semantics of joining, for `member` with `data` at `now_ms`:
/// - a notification that joined before gets the same answer (a member its survivor; a
///   survivor `Wait` while its group is open, its items once closed, itself alone if the group
///   is gone);
/// - otherwise it joins the open group while that is open, inside its window and not full;
/// - otherwise it opens a group of its own, newcomers' until `now + window_ms`, and waits.
pub fn join(
    groups: &mut Groups,
    member: &NotificationId,
    data: &Map<String, Value>,
    window_ms: u64,
    keep_ms: u64,
    now_ms: u64,
) -> Joined {
    if let Some((survivor, _)) = groups.members.get(member).filter(|(_, exp)| *exp > now_ms) {
        if survivor != member {
            return Joined::Merged { into: survivor.clone() };
        }
        return match groups.group(member, now_ms) {
            Some(group) if group.closed => {
                Joined::Closed { merged: Merged { items: group.items.clone() } }
            }
            Some(group) => Joined::Wait { until_ms: group.closes_ms },
            None => Joined::Closed { merged: Merged::alone(member, data) },
        };
    }
    let item = MergedItem { id: member.clone(), data: data.clone() };
    let open = groups.open.clone().filter(|(_, until)| *until > now_ms);
    if let Some((survivor, _)) = open
        && let Some(group) = groups.groups.get_mut(&survivor)
        && group.expires_at_ms > now_ms
        && !group.closed
        && group.items.len() < COLLAPSE_ITEMS_MAX
        && now_ms < group.closes_ms
    {
        group.items.push(item);
        let expires = now_ms.saturating_add(keep_ms);
        groups.members.insert(member.clone(), (survivor.clone(), expires));
        return Joined::Merged { into: survivor };
    }
    let closes_ms = now_ms.saturating_add(window_ms);
    let expires_at_ms = closes_ms.saturating_add(keep_ms);
    groups.groups.insert(
        member.clone(),
        Group { closes_ms, closed: false, items: vec![item], expires_at_ms },
    );
    groups.open = Some((member.clone(), closes_ms));
    groups.members.insert(member.clone(), (member.clone(), expires_at_ms));
    Joined::Wait { until_ms: closes_ms }
}

/// The reference semantics of closing `survivor`'s group at `now_ms`: no newcomer joins it any
/// more, and the answer is what it merged (the same however often it is asked); `None` when
/// the group is gone.
pub fn close(groups: &mut Groups, survivor: &NotificationId, now_ms: u64) -> Option<Merged> {
    let group = groups.groups.get_mut(survivor).filter(|g| g.expires_at_ms > now_ms)?;
    group.closed = true;
    if groups.open.as_ref().is_some_and(|(open, _)| open == survivor) {
        groups.open = None;
    }
    Some(Merged { items: group.items.clone() })
}

/// The reference semantics of asking which group `member` joined at `now_ms`: its survivor (a
/// survivor is its own) while the membership is kept, `None` when it never joined (or it is
/// forgotten). Changes nothing.
pub fn member_of(groups: &Groups, member: &NotificationId, now_ms: u64) -> Option<NotificationId> {
    groups.members.get(member).filter(|(_, expires)| *expires > now_ms).map(|(s, _)| s.clone())
}

/// The template variables of a collapsing notification: its own `data`, and `collapse` with
/// `count` (how many notifications the message stands for, itself included), `items` (each
/// one's data, oldest first, its own first) and `ids` (their notification ids, in the same
/// order). `collapse` replaces a variable of that name in `data`.
pub fn context(data: &Map<String, Value>, merged: &Merged) -> Map<String, Value> {
    let mut context = data.clone();
    let items: Vec<Value> = merged.items.iter().map(|i| Value::Object(i.data.clone())).collect();
    let ids: Vec<Value> = merged.items.iter().map(|i| Value::String(i.id.to_string())).collect();
    let mut collapse = Map::new();
    collapse.insert("count".into(), Value::from(merged.items.len()));
    collapse.insert("items".into(), Value::Array(items));
    collapse.insert("ids".into(), Value::Array(ids));
    context.insert("collapse".into(), Value::Object(collapse));
    context
}

#[cfg(test)]
mod member_tests {
    use super::*;

    #[test]
    fn a_member_is_known_until_its_membership_is_forgotten() {
        let mut groups = Groups::default();
        let id = |s: &str| NotificationId::new(s).unwrap();
        let data = Map::new();
        join(&mut groups, &id("a"), &data, 1_000, 5_000, 0);
        join(&mut groups, &id("b"), &data, 1_000, 5_000, 10);
        assert_eq!(member_of(&groups, &id("b"), 10), Some(id("a")));
        assert_eq!(member_of(&groups, &id("a"), 10), Some(id("a")), "a survivor is its own");
        assert_eq!(member_of(&groups, &id("c"), 10), None);
        assert_eq!(member_of(&groups, &id("b"), 10 + 5_000), None, "forgotten after the keep");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> NotificationId {
        NotificationId::new(format!("n{n}")).unwrap()
    }

    fn data(n: u32) -> Map<String, Value> {
        serde_json::json!({ "message": n }).as_object().unwrap().clone()
    }

    const WINDOW: u64 = 1_000;
    const KEEP: u64 = 10_000;

    #[test]
    fn the_first_waits_the_others_merge_and_the_close_returns_them_all() {
        let mut g = Groups::default();
        assert_eq!(
            join(&mut g, &id(1), &data(1), WINDOW, KEEP, 0),
            Joined::Wait { until_ms: 1_000 }
        );
        assert_eq!(
            join(&mut g, &id(2), &data(2), WINDOW, KEEP, 10),
            Joined::Merged { into: id(1) }
        );
        assert_eq!(
            join(&mut g, &id(3), &data(3), WINDOW, KEEP, 999),
            Joined::Merged { into: id(1) }
        );
        // Asking again is answered the same (a worker that died before committing).
        assert_eq!(
            join(&mut g, &id(2), &data(2), WINDOW, KEEP, 500),
            Joined::Merged { into: id(1) }
        );
        assert_eq!(
            join(&mut g, &id(1), &data(1), WINDOW, KEEP, 500),
            Joined::Wait { until_ms: 1_000 }
        );
        // At the window's end a newcomer opens a group of its own.
        assert_eq!(
            join(&mut g, &id(4), &data(4), WINDOW, KEEP, 1_000),
            Joined::Wait { until_ms: 2_000 }
        );
        let merged = close(&mut g, &id(1), 1_000).unwrap();
        let ids: Vec<&NotificationId> = merged.items.iter().map(|i| &i.id).collect();
        assert_eq!(ids, [&id(1), &id(2), &id(3)]);
        assert_eq!(close(&mut g, &id(1), 1_001), Some(merged.clone()), "closing is idempotent");
        assert_eq!(join(&mut g, &id(1), &data(1), WINDOW, KEEP, 1_002), Joined::Closed { merged });
        // A closed group takes no newcomer, even inside its window.
        let mut g2 = Groups::default();
        join(&mut g2, &id(1), &data(1), WINDOW, KEEP, 0);
        close(&mut g2, &id(1), 5);
        assert_eq!(
            join(&mut g2, &id(2), &data(2), WINDOW, KEEP, 6),
            Joined::Wait { until_ms: 1_006 }
        );
        // After the keep time, a group is gone: its survivor renders alone.
        assert_eq!(close(&mut g2, &id(1), 1_000 + KEEP), None);
    }

    #[test]
    fn a_full_group_sends_newcomers_to_a_group_of_their_own() {
        let mut g = Groups::default();
        for n in 0..COLLAPSE_ITEMS_MAX as u32 {
            join(&mut g, &id(n), &data(n), WINDOW, KEEP, 1);
        }
        let next = COLLAPSE_ITEMS_MAX as u32;
        assert_eq!(
            join(&mut g, &id(next), &data(next), WINDOW, KEEP, 2),
            Joined::Wait { until_ms: 1_002 }
        );
        assert_eq!(close(&mut g, &id(0), 3).unwrap().items.len(), COLLAPSE_ITEMS_MAX);
    }

    #[test]
    fn the_template_sees_a_count_the_items_and_their_ids() {
        let merged = Merged {
            items: vec![
                MergedItem { id: id(1), data: data(1) },
                MergedItem { id: id(2), data: data(2) },
            ],
        };
        let mut own = data(1);
        own.insert("collapse".into(), Value::from("shadowed"));
        let context = context(&own, &merged);
        assert_eq!(context["message"], 1);
        assert_eq!(
            Value::Object(context),
            serde_json::json!({
                "message": 1,
                "collapse": {
                    "count": 2,
                    "items": [{ "message": 1 }, { "message": 2 }],
                    "ids": ["n1", "n2"],
                }
            })
        );
    }
}
