//! Per-recipient limits: the recipient's sliding window on a channel and the category caps
//! (marketing at most 1 a day and 5 a week, on every channel together), taken **all or nothing**.
//!
//! A notification on its way to a provider takes one slot in every window that applies to it:
//! the window of its channel (`policy.rate`) and each cap of its category
//! (`policy.categories.<c>.caps`). Either it gets a slot in all of them, or in none, and then
//! the answer says which windows are full and when each has room again. The counting must be
//! atomic across workers, so it happens in the store (one Lua script on Redis, one critical
//! section in memory); both follow [`admit`], the reference the conformance suite holds them to.
//!
//! A slot is held by the notification's id (the *member*), not by an anonymous token: a worker
//! that took its slots and died before committing takes the same slots again when the
//! notification is re-driven, instead of using a second one, and a notification that falls back
//! from SMS to email is counted once by its category's caps. Taking a slot again moves it to the
//! later time (never back), so a window never looks emptier than the sends it admitted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Category, Channel};
use crate::rate::{OverLimit, RateDecision};

/// The most windows one notification takes a slot in: its channel's window and its category's
/// caps ([`CAPS_PER_CATEGORY_MAX`]).
pub const WINDOWS_MAX: usize = 1 + CAPS_PER_CATEGORY_MAX;
/// The most caps a category may have (a day, a week, a month, ... eight is plenty).
pub const CAPS_PER_CATEGORY_MAX: usize = 8;
/// The largest `max` of a window: each admission is one entry in the store, so this bounds a
/// window's size.
pub const WINDOW_MAX_MAX: u32 = 100_000;
/// The longest window: a year and a day.
pub const WINDOW_MS_MAX: u64 = 366 * 24 * 3_600_000;

fn defer() -> OverLimit {
    OverLimit::Defer
}

/// A category cap: at most `max` notifications of the category per `window_ms` for one
/// recipient, on every channel together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cap {
    /// Notifications allowed in a window.
    pub max: u32,
    /// The window, in milliseconds.
    pub window_ms: u64,
    /// What to do over the cap: wait for room (`defer`, the default) or drop it (`skip`).
    #[serde(default = "defer")]
    pub over_limit: OverLimit,
}

/// Why a window or a cap is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// `max` is 0 or above [`WINDOW_MAX_MAX`].
    #[error("max must be between 1 and {WINDOW_MAX_MAX}")]
    Max,
    /// `window_ms` is 0 or above [`WINDOW_MS_MAX`].
    #[error("window_ms must be between 1 and {WINDOW_MS_MAX} (a year and a day)")]
    WindowMs,
}

/// Checks a window's numbers (a channel's rate limit or a cap).
pub fn check_window(max: u32, window_ms: u64) -> Result<(), WindowError> {
    if max == 0 || max > WINDOW_MAX_MAX {
        return Err(WindowError::Max);
    }
    if window_ms == 0 || window_ms > WINDOW_MS_MAX {
        return Err(WindowError::WindowMs);
    }
    Ok(())
}

/// Which limit a window is: it names the window's key in the store and the reason recorded in
/// the history when the window is full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Limit {
    /// The recipient's window on a channel (`policy.rate.<channel>`).
    Channel {
        /// The channel.
        channel: Channel,
        /// Notifications allowed in the window.
        max: u32,
        /// The window, ms.
        window_ms: u64,
    },
    /// A cap of a category, across channels (`policy.categories.<category>.caps`).
    Cap {
        /// The category.
        category: Category,
        /// Notifications allowed in the window.
        max: u32,
        /// The window, ms.
        window_ms: u64,
    },
}

impl Limit {
    /// Notifications allowed in the window.
    pub fn max(&self) -> u32 {
        match self {
            Limit::Channel { max, .. } | Limit::Cap { max, .. } => *max,
        }
    }

    /// The window, ms.
    pub fn window_ms(&self) -> u64 {
        match self {
            Limit::Channel { window_ms, .. } | Limit::Cap { window_ms, .. } => *window_ms,
        }
    }

    /// The window's name among one recipient's windows: `rate:<channel>` or
    /// `cap:<category>:<window_ms>`. A channel's window keeps its name when its `max` changes,
    /// and a cap when its `max` changes, so a configuration change keeps the counts.
    pub fn name(&self) -> String {
        match self {
            Limit::Channel { channel, .. } => format!("rate:{channel}"),
            Limit::Cap { category, window_ms, .. } => format!("cap:{category}:{window_ms}"),
        }
    }
}

/// A duration for people: `24 h`, `10 min`, `30 s`, or ms.
pub fn human_ms(ms: u64) -> String {
    const HOUR: u64 = 3_600_000;
    const MINUTE: u64 = 60_000;
    if ms >= HOUR && ms.is_multiple_of(HOUR) {
        format!("{} h", ms / HOUR)
    } else if ms >= MINUTE && ms.is_multiple_of(MINUTE) {
        format!("{} min", ms / MINUTE)
    } else if ms >= 1_000 && ms.is_multiple_of(1_000) {
        format!("{} s", ms / 1_000)
    } else {
        format!("{ms} ms")
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Channel { channel, max, window_ms } => {
                write!(f, "the {channel} rate limit ({max} per {})", human_ms(*window_ms))
            }
            Limit::Cap { category, max, window_ms } => {
                write!(f, "the {category} cap ({max} per {})", human_ms(*window_ms))
            }
        }
    }
}

/// One window a notification takes a slot in, and what happens when it is full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Which limit.
    pub limit: Limit,
    /// Over it: defer or skip.
    pub over_limit: OverLimit,
}

/// A full window in an [`Admission::Full`] answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Full {
    /// Its index in the windows asked for.
    pub index: usize,
    /// When its oldest admission leaves it, so it has room again, ms since the Unix epoch.
    pub retry_at_ms: u64,
}

/// The store's answer to "may this notification take a slot in all these windows now?".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum Admission {
    /// It holds a slot in every window (taken now, or already held).
    Admitted,
    /// Nothing was taken: these windows are full, in the order asked.
    Full {
        /// The full windows.
        full: Vec<Full>,
    },
}

/// Whether an admission at `at_ms` is still inside a window of `window_ms` at `now_ms`: after
/// `now_ms - window_ms` (an admission at exactly that time has left).
fn inside(at_ms: u64, window_ms: u64, now_ms: u64) -> bool {
    at_ms.saturating_add(window_ms) > now_ms
}

/// The reference state of one window: who holds a slot since when.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counted {
    /// Each admitted member and when it was (last) admitted, ms.
    pub admitted: BTreeMap<String, u64>,
}

impl Counted {
    /// Drops the admissions that have left a window of `window_ms` at `now_ms`: an admission
    /// at exactly `now_ms - window_ms` has left.
    fn prune(&mut self, window_ms: u64, now_ms: u64) {
        self.admitted.retain(|_, at| inside(*at, window_ms, now_ms));
    }

    /// When the window has room again: when its oldest admission leaves it.
    fn room_at_ms(&self, window_ms: u64, now_ms: u64) -> u64 {
        self.admitted.values().min().copied().unwrap_or(now_ms).saturating_add(window_ms)
    }

    /// How many admissions the window holds.
    pub fn len(&self) -> usize {
        self.admitted.len()
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.admitted.is_empty()
    }
}

/// The reference semantics of taking slots, all or nothing, for `member` at `now_ms`.
/// `counted` holds one recipient's windows by [`Limit::name`].
///
/// Every window first drops what has left it. A window where `member` already holds a slot has
/// room for it. If any other window holds `max` admissions already, nothing changes and the
/// answer lists each full window with the time its oldest admission leaves. Otherwise `member`
/// is admitted in every window at `now_ms` (a slot it held moves to `now_ms`, never back).
pub fn admit(
    counted: &mut BTreeMap<String, Counted>,
    windows: &[Window],
    member: &str,
    now_ms: u64,
) -> Admission {
    let mut full = Vec::new();
    for (index, window) in windows.iter().enumerate() {
        let limit = &window.limit;
        let counted = counted.entry(limit.name()).or_default();
        counted.prune(limit.window_ms(), now_ms);
        if !counted.admitted.contains_key(member) && counted.len() >= limit.max() as usize {
            full.push(Full { index, retry_at_ms: counted.room_at_ms(limit.window_ms(), now_ms) });
        }
    }
    if !full.is_empty() {
        return Admission::Full { full };
    }
    for window in windows {
        let counted = counted.entry(window.limit.name()).or_default();
        let at = counted.admitted.entry(member.to_owned()).or_insert(now_ms);
        *at = (*at).max(now_ms);
    }
    Admission::Admitted
}

/// How many admissions each window holds at `now_ms`, without taking anything.
pub fn usage(counted: &BTreeMap<String, Counted>, windows: &[Window], now_ms: u64) -> Vec<u32> {
    windows
        .iter()
        .map(|w| {
            let window_ms = w.limit.window_ms();
            counted.get(&w.limit.name()).map_or(0, |c| {
                c.admitted.values().filter(|&&at| inside(at, window_ms, now_ms)).count() as u32
            })
        })
        .collect()
}

/// Turns the store's answer into the lifecycle's decision. Full windows whose policy is `skip`
/// skip the notification (the first one is the reason); otherwise it waits until every full
/// window has room again, and the reason is the window that has room last.
pub fn decide(windows: &[Window], admission: &Admission) -> RateDecision {
    let Admission::Full { full } = admission else { return RateDecision::Allow };
    let named = |f: &Full| windows.get(f.index).map(|w| (w, f.retry_at_ms));
    if let Some((window, _)) =
        full.iter().filter_map(named).find(|(w, _)| w.over_limit == OverLimit::Skip)
    {
        return RateDecision::Skip { limit: window.limit.clone() };
    }
    match full.iter().filter_map(named).max_by_key(|(_, at)| *at) {
        Some((window, until_ms)) => RateDecision::Defer { until_ms, limit: window.limit.clone() },
        // A store answer naming no window it was asked about: treat it as admitted rather than
        // wait forever (the conformance suite keeps stores from answering this).
        None => RateDecision::Allow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(max: u32, window_ms: u64, over_limit: OverLimit) -> Window {
        Window { limit: Limit::Channel { channel: Channel::Sms, max, window_ms }, over_limit }
    }

    fn cap(max: u32, window_ms: u64, over_limit: OverLimit) -> Window {
        let category = Category::new("marketing").unwrap();
        Window { limit: Limit::Cap { category, max, window_ms }, over_limit }
    }

    #[test]
    fn all_or_nothing_and_the_full_windows_are_named() {
        let windows = [channel(3, 1_000, OverLimit::Defer), cap(1, 10_000, OverLimit::Defer)];
        let mut counted = BTreeMap::new();
        assert_eq!(admit(&mut counted, &windows, "a", 100), Admission::Admitted);
        // The cap is full: nothing is taken, not even in the channel window that had room.
        assert_eq!(
            admit(&mut counted, &windows, "b", 200),
            Admission::Full { full: vec![Full { index: 1, retry_at_ms: 10_100 }] }
        );
        assert_eq!(usage(&counted, &windows, 200), vec![1, 1]);
        // The member that holds the slots is admitted again, and its slots move to now.
        assert_eq!(admit(&mut counted, &windows, "a", 300), Admission::Admitted);
        assert_eq!(counted["cap:marketing:10000"].admitted["a"], 300);
        assert_eq!(usage(&counted, &windows, 300), vec![1, 1]);
        // A slot never moves back (a worker whose clock is behind).
        assert_eq!(admit(&mut counted, &windows, "a", 250), Admission::Admitted);
        assert_eq!(counted["rate:sms"].admitted["a"], 300);
        // At exactly window_ms after the last admission, it has left.
        assert_eq!(admit(&mut counted, &windows, "b", 10_300), Admission::Admitted);
    }

    #[test]
    fn every_full_window_is_listed_with_when_it_has_room() {
        let windows = [channel(1, 1_000, OverLimit::Defer), cap(1, 5_000, OverLimit::Defer)];
        let mut counted = BTreeMap::new();
        admit(&mut counted, &windows, "a", 0);
        let answer = admit(&mut counted, &windows, "b", 500);
        assert_eq!(
            answer,
            Admission::Full {
                full: vec![
                    Full { index: 0, retry_at_ms: 1_000 },
                    Full { index: 1, retry_at_ms: 5_000 }
                ]
            }
        );
        // Deferred until both have room, and the reason is the one that has room last.
        assert_eq!(
            decide(&windows, &answer),
            RateDecision::Defer { until_ms: 5_000, limit: windows[1].limit.clone() }
        );
        // A full window whose policy is skip skips, whatever the others say.
        let skipping = [channel(1, 1_000, OverLimit::Skip), cap(1, 5_000, OverLimit::Defer)];
        assert_eq!(
            decide(&skipping, &answer),
            RateDecision::Skip { limit: skipping[0].limit.clone() }
        );
        assert_eq!(decide(&windows, &Admission::Admitted), RateDecision::Allow);
    }

    #[test]
    fn names_and_reasons_say_which_window() {
        let w = cap(1, 86_400_000, OverLimit::Defer);
        assert_eq!(w.limit.name(), "cap:marketing:86400000");
        assert_eq!(w.limit.to_string(), "the marketing cap (1 per 24 h)");
        let w = channel(3, 600_000, OverLimit::Defer);
        assert_eq!(w.limit.name(), "rate:sms");
        assert_eq!(w.limit.to_string(), "the sms rate limit (3 per 10 min)");
        assert_eq!(human_ms(1_500), "1500 ms");
        assert_eq!(human_ms(30_000), "30 s");
        assert_eq!(check_window(0, 1), Err(WindowError::Max));
        assert_eq!(check_window(1, 0), Err(WindowError::WindowMs));
        assert_eq!(check_window(1, WINDOW_MS_MAX + 1), Err(WindowError::WindowMs));
        assert_eq!(check_window(WINDOW_MAX_MAX, WINDOW_MS_MAX), Ok(()));
        let toml_cap: Cap = serde_json::from_str(r#"{"max": 1, "window_ms": 5}"#).unwrap();
        assert_eq!(toml_cap.over_limit, OverLimit::Defer, "defer is the default");
    }

    proptest::proptest! {
        /// Whatever the arrivals, no window of any length `window_ms` holds more than `max`
        /// members' admissions, counting each member at every time it was admitted.
        #[test]
        fn no_window_ever_holds_more_than_its_max(
            arrivals in proptest::collection::vec((0u64..30_000, 0usize..12), 1..200),
            max_a in 1u32..4,
            max_b in 1u32..6,
        ) {
            let windows = [channel(max_a, 1_000, OverLimit::Defer), cap(max_b, 7_000, OverLimit::Defer)];
            let mut arrivals = arrivals;
            arrivals.sort_unstable();
            let mut counted = BTreeMap::new();
            let mut admitted: Vec<(u64, usize)> = Vec::new();
            for (now, member) in arrivals {
                if admit(&mut counted, &windows, &format!("m{member}"), now) == Admission::Admitted {
                    admitted.push((now, member));
                }
            }
            for window in &windows {
                let w = window.limit.window_ms();
                for &(t, _) in &admitted {
                    let inside: std::collections::BTreeSet<usize> = admitted
                        .iter()
                        .filter(|(at, _)| *at + w > t && *at <= t)
                        .map(|(_, m)| *m)
                        .collect();
                    proptest::prop_assert!(inside.len() <= window.limit.max() as usize);
                }
            }
        }
    }
}
