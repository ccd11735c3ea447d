//! Campaigns: one message intent fanned out to a segment of recipients, as data.
//!
//! A campaign is stored once (its spec, its segment, its progress) and expanded by workers in
//! pages ([`crate::fanout`]) into ordinary notifications, at a bounded pace. This module holds
//! what is pure about it: ids, states, limits, the pace, the counter each notification state is
//! counted under, and the progress view built from those counters.
//!
//! # Counters
//! Every notification created by a campaign carries the campaign's id in its stored record (not
//! in [`Record`](crate::record::Record): the store keeps it beside the record, as it keeps the
//! idempotency key). The store's create, commit and purge steps move the notification between
//! per-campaign counters in the same atomic step as the record ([`counter_field`] names the
//! counter of a state), so each counter is exactly the number of the campaign's notifications in
//! that state right now: a commit happens once (compare-and-set), a stale or re-delivered
//! wake-up commits nothing, an operator's replay moves a dead letter back to `received`, a purge
//! takes it out. Nothing is counted twice, and nothing needs a scan of the notifications.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use steps::locale::Locale;
use steps::model::{
    Category, Channel, IdError, Recipient, RecipientId, TemplateId, TenantId, check_id,
};
use steps::recipient::{RecipientEntry, TimeZone};

use crate::machine::{State, StateKind};

/// The most recipients one request may carry (`POST /v1/campaigns` or an append): bounded so a
/// request stays a few hundred KB and one atomic store step; larger segments come in pages.
pub const RECIPIENTS_PER_REQUEST_MAX: usize = 10_000;
/// The most recipients one campaign may have: ten million ids is a few hundred MB in Redis, which
/// is where a list of ids stops being the right tool (a filter over the directory is).
pub const RECIPIENTS_MAX: u64 = 10_000_000;
/// The most recipients one page expands into notifications: one page is one lease, a few
/// hundred store steps, and at most this many notifications due at once per campaign.
pub const PAGE_LEN_MAX: u64 = 500;
/// The default pace, notifications created per second: a million recipients take under three
/// hours, and no campaign floods the workers unless it asks to.
pub const RATE_PER_SEC_DEFAULT: u32 = 100;
/// The fastest pace a campaign may ask for. Above it one campaign would crowd out every other
/// notification on a normal fleet.
pub const RATE_PER_SEC_MAX: u32 = 10_000;
/// How long a worker holds a page it claimed. A worker that dies mid-page loses it after this, and
/// the page is expanded again (creating only what is missing).
pub const LEASE_MS: u64 = 60_000;
/// A worker stops expanding its page this long before its lease ends, so a page is never
/// expanded by two workers at once even with clocks a second apart.
pub const LEASE_MARGIN_MS: u64 = 10_000;
/// The most notifications of one campaign that may be due or running at once (in flight and not
/// deferred to a later time): past it, the next page waits [`HOLD_MS`] for the workers to catch
/// up. The rate bounds how fast a campaign adds work; this bounds how much of it can pile up
/// when the workers (or a provider) are slower than the rate.
pub const DUE_MAX: u64 = 5_000;
/// How long a page held back by [`DUE_MAX`] waits before it looks again.
pub const HOLD_MS: u64 = 250;
/// Notifications one cancel page looks at.
pub const SWEEP_PAGE_LEN: usize = 500;
/// The most campaigns one listing returns.
pub const LIST_LIMIT_MAX: usize = 100;

/// A campaign's id: `c`, two hex digits of shard, a ULID when courant mints it
/// (`storage::keys::new_campaign_id`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CampaignId(String);

impl CampaignId {
    /// Builds the id after checking its syntax (`steps::model::check_id`).
    pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
        Self::try_from(s.into())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CampaignId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        check_id(&s)?;
        Ok(Self(s))
    }
}

impl From<CampaignId> for String {
    fn from(id: CampaignId) -> String {
        id.0
    }
}

impl fmt::Display for CampaignId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a campaign is in its life.
///
/// ```text
/// draft ──start──▶ expanding ──last page──▶ expanded
///   │                 │                        │
///   └──cancel──▶ cancelled ◀──sweep done── cancelling ◀──cancel──┘
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignState {
    /// Created with `draft: true`: recipients may still be appended; nothing is expanded.
    Draft,
    /// Workers expand its segment page by page.
    Expanding,
    /// Every recipient has its notification; they run like any other.
    Expanded,
    /// Cancelled: expansion has stopped, and workers cancel its notifications that have not
    /// reached a provider yet.
    Cancelling,
    /// Cancelled, and every notification that could be cancelled is.
    Cancelled,
}

impl CampaignState {
    /// Every state.
    pub const ALL: [CampaignState; 5] = [
        CampaignState::Draft,
        CampaignState::Expanding,
        CampaignState::Expanded,
        CampaignState::Cancelling,
        CampaignState::Cancelled,
    ];

    /// The snake_case name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignState::Draft => "draft",
            CampaignState::Expanding => "expanding",
            CampaignState::Expanded => "expanded",
            CampaignState::Cancelling => "cancelling",
            CampaignState::Cancelled => "cancelled",
        }
    }

    /// Parses [`as_str`](Self::as_str).
    pub fn parse(s: &str) -> Option<CampaignState> {
        CampaignState::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether a worker has a page to do: expand one, or cancel notifications.
    pub fn has_work(self) -> bool {
        matches!(self, CampaignState::Expanding | CampaignState::Cancelling)
    }
}

impl fmt::Display for CampaignState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a campaign goes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Segment {
    /// An explicit list of recipient ids, stored with the campaign in the order given (the first
    /// page with the campaign, further pages appended while it is a draft). An id listed twice
    /// gets one notification. Addresses come from each recipient's profile in the directory.
    Recipients,
    /// Every recipient of the tenant's directory that the filter matches, walked in id order
    /// page by page when the campaign expands (a recipient stored after the walk passed their id
    /// is not included).
    Filter {
        /// Who matches.
        filter: RecipientFilter,
    },
}

/// A simple filter over the recipient directory. Every condition given must hold; the empty
/// filter matches everyone in the directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientFilter {
    /// Recipients whose locale is this tag or a more specific one: `fr` matches `fr` and
    /// `fr-CA`, `fr-CA` only `fr-CA` (and `fr-CA-...`). Case-insensitive, as BCP 47 is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<Locale>,
    /// Recipients in this IANA time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<TimeZone>,
    /// Only recipients the campaign's channel can reach: with an email address for email, a
    /// phone number for SMS, a device for push (in-app reaches everyone).
    #[serde(default)]
    pub reachable: bool,
}

impl RecipientFilter {
    /// Whether `entry` matches, for a campaign on `channel`.
    pub fn matches(&self, entry: &RecipientEntry, channel: Channel) -> bool {
        let contact = entry.contact();
        if let Some(wanted) = &self.locale {
            let Some(locale) = contact.and_then(|c| c.locale.as_ref()) else { return false };
            let (have, want) = (locale.as_str(), wanted.as_str());
            let more_specific = have.len() > want.len()
                && have.as_bytes()[want.len()] == b'-'
                && have[..want.len()].eq_ignore_ascii_case(want);
            if !(have.eq_ignore_ascii_case(want) || more_specific) {
                return false;
            }
        }
        if let Some(zone) = self.time_zone
            && entry.time_zone() != Some(zone)
        {
            return false;
        }
        !self.reachable || reachable(entry, channel)
    }
}

/// Whether a recipient with this directory entry can be reached on `channel`.
pub fn reachable(entry: &RecipientEntry, channel: Channel) -> bool {
    let contact = entry.contact();
    match channel {
        Channel::Email => contact.is_some_and(|c| c.email.is_some()),
        Channel::Sms => contact.is_some_and(|c| c.phone.is_some()),
        Channel::Push => !entry.devices().is_empty(),
        // Chat providers post to the endpoint they are configured with (a Slack channel, a
        // webhook URL): every recipient is reachable there.
        Channel::InApp | Channel::Chat => true,
    }
}

/// The locale a campaign notification renders in: the recipient's, from their profile (none: the
/// template's default).
pub fn locale_for(entry: Option<&RecipientEntry>) -> Option<Locale> {
    entry?.contact()?.locale.clone()
}

/// The recipient a campaign notification is for, named by id alone: the lifecycle reads their
/// addresses (and preferences) from the directory when it sends, so an address changed or an
/// opt-out written after the page was expanded is the one that counts. (An address given with
/// the notification would win over the stored one, which is why none is copied here.)
pub fn recipient_for(id: &RecipientId) -> Recipient {
    Recipient { id: id.clone(), email: None, phone: None, opt_out: Vec::new() }
}

/// What a campaign sends: the same for every recipient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignSpec {
    /// The template.
    pub template: TemplateId,
    /// The channel.
    pub channel: Channel,
    /// The category.
    pub category: Category,
    /// The template variables, the same for every recipient.
    pub data: serde_json::Map<String, serde_json::Value>,
    /// Who it goes to.
    pub segment: Segment,
    /// Notifications created per second (1..=[`RATE_PER_SEC_MAX`]).
    pub rate_per_sec: u32,
}

/// A stored campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Campaign {
    /// The owning tenant.
    pub tenant: TenantId,
    /// The campaign's id.
    pub id: CampaignId,
    /// What it sends, to whom, how fast.
    pub spec: CampaignSpec,
    /// Where it is.
    pub state: CampaignState,
    /// Recipients in its segment (ids stored, duplicates included); for a filter segment, the
    /// recipients matched so far.
    pub recipients: u64,
    /// Segment positions expanded so far (for a filter segment, directory entries walked): the
    /// next page starts here.
    pub position: u64,
    /// An opaque cursor: a filter segment's place in the directory (the last recipient id
    /// walked) while expanding, the cancel sweep's place while cancelling (empty: from the
    /// start).
    pub cursor: String,
    /// Positions that could not become a notification (the template stopped rendering with the
    /// campaign's data after it was accepted).
    pub rejected: u64,
    /// When it was created, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// When it last changed.
    pub updated_at_ms: u64,
    /// When expansion started.
    pub started_at_ms: Option<u64>,
    /// When it reached `expanded` or `cancelled`.
    pub finished_at_ms: Option<u64>,
    /// When it was cancelled.
    pub cancelled_at_ms: Option<u64>,
}

impl Campaign {
    /// Recipients a page of this campaign expands.
    pub fn page_len(&self) -> u64 {
        page_len(self.spec.rate_per_sec)
    }
}

/// Recipients per page at `rate_per_sec`: one second's worth, at most [`PAGE_LEN_MAX`], so a
/// slow campaign creates its notifications a second's worth at a time, not 500 at once.
pub fn page_len(rate_per_sec: u32) -> u64 {
    u64::from(rate_per_sec).clamp(1, PAGE_LEN_MAX)
}

/// How long after a page of `expanded` recipients started the next page may start, at
/// `rate_per_sec`: the pace is kept page to page, whatever the page took.
pub fn page_interval_ms(expanded: u64, rate_per_sec: u32) -> u64 {
    let rate = u64::from(rate_per_sec.max(1));
    expanded.saturating_mul(1_000).div_ceil(rate)
}

/// A page a worker holds under a lease: expand the next recipients (the campaign is
/// `expanding`) or cancel the next notifications (`cancelling`).
#[derive(Debug, Clone, PartialEq)]
pub struct PageClaim {
    /// The campaign as it was when claimed.
    pub campaign: Campaign,
    /// The lease's token: only the holder may advance the campaign.
    pub token: String,
    /// When the lease ends, ms since the Unix epoch (store clock).
    pub lease_until_ms: u64,
}

/// What a worker did with its page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageDone {
    /// The next page's position (expanding).
    pub position: u64,
    /// The next page's cursor (a filter segment's, or the sweep's).
    pub cursor: String,
    /// Recipients the page's filter matched (added to the campaign's `recipients`; 0 for a
    /// list segment, whose size is known).
    pub matched: u64,
    /// Positions that could not become a notification in this page.
    pub rejected: u64,
    /// Whether that was the last page.
    pub done: bool,
    /// When the next page may start.
    pub next_at_ms: u64,
    /// Now.
    pub now_ms: u64,
}

/// What advancing a campaign came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advance {
    /// Recorded; the next page is due at `next_at_ms` (or the campaign is finished).
    Done,
    /// The campaign was cancelled while the page was expanded: nothing recorded, and its
    /// cancel sweep is due now.
    Cancelling,
    /// The lease was lost (it ran out and another worker took the page): nothing recorded.
    LeaseLost,
}

/// A page of a campaign's open notifications (not in a terminal state), for the cancel sweep.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpenPage {
    /// The notifications.
    pub ids: Vec<steps::model::NotificationId>,
    /// Where the next page starts; `None` when this was the last.
    pub next: Option<String>,
}

/// What creating a campaign came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CampaignCreated {
    /// Created.
    New,
    /// The idempotency key was used before; the earlier campaign is returned.
    Existing {
        /// The campaign created with the key.
        id: CampaignId,
        /// Whether the earlier request had the same fingerprint.
        same_request: bool,
    },
}

/// What appending recipients came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Appended; the segment now holds `recipients`.
    Done {
        /// Recipients in the segment now.
        recipients: u64,
    },
    /// The idempotency key was used before for this campaign: nothing appended.
    Replayed {
        /// Recipients in the segment after the earlier append.
        recipients: u64,
        /// Whether the earlier request had the same fingerprint.
        same_request: bool,
    },
    /// The campaign is not a draft any more: nothing appended.
    Refused {
        /// Its state.
        state: CampaignState,
    },
    /// The segment would exceed [`RECIPIENTS_MAX`]: nothing appended.
    TooMany {
        /// Recipients in the segment now.
        recipients: u64,
    },
    /// No such campaign.
    NotFound,
}

/// What starting or cancelling a campaign came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moved {
    /// It is now in `state` (or already was, for a repeated request).
    To {
        /// Its state now.
        state: CampaignState,
    },
    /// Its state does not allow it.
    Refused {
        /// Its state.
        state: CampaignState,
    },
    /// No such campaign.
    NotFound,
}

/// The counter a campaign notification in `state` is counted under: the state's kind, and for a
/// skipped one its reason's kind too (`skipped:opted_out`), so skips can be told apart by
/// reason. The Redis scripts compute the same from the state's JSON.
pub fn counter_field(state: &State) -> String {
    match state {
        State::Skipped { reason } => {
            let value = serde_json::to_value(reason).unwrap_or_default();
            let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("unknown");
            format!("skipped:{kind}")
        }
        other => other.kind().as_str().to_owned(),
    }
}

/// A campaign's counters: how many of its notifications are in each state now, by
/// [`counter_field`]. Summed over the store's shards.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counts(pub BTreeMap<String, i64>);

impl Counts {
    /// Adds `other`'s counters to these (one shard's to the sum).
    pub fn add(&mut self, other: &Counts) {
        for (field, n) in &other.0 {
            *self.0.entry(field.clone()).or_default() += n;
        }
    }

    fn of(&self, field: &str) -> u64 {
        u64::try_from(self.0.get(field).copied().unwrap_or(0)).unwrap_or(0)
    }

    /// Notifications due or running now: in flight and not deferred to a later time.
    pub fn due(&self) -> u64 {
        let settled = [
            StateKind::Sent,
            StateKind::Delivered,
            StateKind::DeadLettered,
            StateKind::Skipped,
            StateKind::Cancelled,
            StateKind::Deferred,
        ];
        self.total().saturating_sub(settled.into_iter().map(|k| self.kind(k)).sum())
    }

    /// Notifications in a state of `kind` (every skip reason, for `skipped`).
    pub fn kind(&self, kind: StateKind) -> u64 {
        if kind == StateKind::Skipped {
            self.skipped().values().sum()
        } else {
            self.of(kind.as_str())
        }
    }

    /// Skipped notifications by reason.
    pub fn skipped(&self) -> BTreeMap<String, u64> {
        self.0
            .iter()
            .filter_map(|(field, n)| {
                let reason = field.strip_prefix("skipped:")?;
                Some((reason.to_owned(), u64::try_from(*n).unwrap_or(0)))
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Every notification the campaign has.
    pub fn total(&self) -> u64 {
        self.0.values().map(|n| u64::try_from(*n).unwrap_or(0)).sum()
    }
}

/// A campaign's progress, as the API shows it. Every number is a count of the campaign's
/// notifications by where they are now (see the module doc), so they add up:
/// `expanded = in_flight + sent + delivered + failed + skipped.total + cancelled`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// The campaign's state, with `completed` for an expanded campaign none of whose
    /// notifications waits on a worker any more.
    pub state: &'static str,
    /// Recipients in the segment.
    pub recipients: u64,
    /// Segment positions expanded.
    pub position: u64,
    /// Notifications created (an id listed twice has one).
    pub expanded: u64,
    /// Still on their way: received, filtered, rendered, rate-checked, deferred, sending, or
    /// failed on a channel and not yet dead-lettered or fallen back.
    pub in_flight: u64,
    /// Handed to a provider, waiting for a delivery receipt (`sent`).
    pub sent: u64,
    /// Delivered (a receipt, or a channel where acceptance is delivery such as in-app).
    pub delivered: u64,
    /// Dead-lettered: failed for good.
    pub failed: u64,
    /// Skipped, in total and by reason.
    pub skipped: Skipped,
    /// Cancelled.
    pub cancelled: u64,
    /// Positions that could not become a notification.
    pub rejected: u64,
}

/// Skipped notifications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// All of them.
    pub total: u64,
    /// By reason (`opted_out`, `no_address`, `rate_limited`, `expired`, ...).
    pub by_reason: BTreeMap<String, u64>,
}

impl Progress {
    /// The progress of `campaign` with `counts`.
    pub fn of(campaign: &Campaign, counts: &Counts) -> Progress {
        let by_reason = counts.skipped();
        let skipped = Skipped { total: by_reason.values().sum(), by_reason };
        let sent = counts.kind(StateKind::Sent);
        let delivered = counts.kind(StateKind::Delivered);
        let failed = counts.kind(StateKind::DeadLettered);
        let cancelled = counts.kind(StateKind::Cancelled);
        let expanded = counts.total();
        let settled = sent + delivered + failed + skipped.total + cancelled;
        let in_flight = expanded.saturating_sub(settled);
        let state = match campaign.state {
            CampaignState::Expanded if in_flight == 0 => "completed",
            other => other.as_str(),
        };
        Progress {
            state,
            recipients: campaign.recipients,
            position: campaign.position,
            expanded,
            in_flight,
            sent,
            delivered,
            failed,
            skipped,
            cancelled,
            rejected: campaign.rejected,
        }
    }
}

#[cfg(test)]
mod tests {
    use steps::filter::SkipReason;
    use steps::model::Attempt;
    use steps::recipient::{Contact, Profile};

    use super::*;

    fn entry(contact: Option<Contact>) -> RecipientEntry {
        RecipientEntry {
            id: RecipientId::new("ada").unwrap(),
            profile: contact.map(|contact| Profile { contact, devices: Vec::new() }),
            preferences: Default::default(),
            revision: 1,
            updated_at_ms: 1,
        }
    }

    #[test]
    fn filters_match_locale_by_language_time_zone_and_reach() {
        let contact: Contact = serde_json::from_value(serde_json::json!({
            "email": "ada@example.com", "locale": "fr-CA", "time_zone": "America/Toronto"
        }))
        .unwrap();
        let ada = entry(Some(contact));
        let bare = entry(None);
        let filter =
            |json: serde_json::Value| -> RecipientFilter { serde_json::from_value(json).unwrap() };
        let everyone = RecipientFilter::default();
        assert!(everyone.matches(&ada, Channel::Sms) && everyone.matches(&bare, Channel::Email));
        assert!(filter(serde_json::json!({"locale": "fr"})).matches(&ada, Channel::Email));
        assert!(filter(serde_json::json!({"locale": "FR-ca"})).matches(&ada, Channel::Email));
        assert!(!filter(serde_json::json!({"locale": "fr-FR"})).matches(&ada, Channel::Email));
        assert!(
            serde_json::from_value::<RecipientFilter>(serde_json::json!({"locale": "f"})).is_err()
        );
        assert!(!filter(serde_json::json!({"locale": "fr"})).matches(&bare, Channel::Email));
        let toronto = filter(serde_json::json!({"time_zone": "America/Toronto"}));
        assert!(toronto.matches(&ada, Channel::InApp) && !toronto.matches(&bare, Channel::InApp));
        let reach = filter(serde_json::json!({"reachable": true}));
        assert!(reach.matches(&ada, Channel::Email) && !reach.matches(&ada, Channel::Sms));
        assert!(reach.matches(&bare, Channel::InApp) && !reach.matches(&bare, Channel::Email));
        assert!(serde_json::from_value::<RecipientFilter>(serde_json::json!({"x": 1})).is_err());
    }

    #[test]
    fn a_recipient_is_named_by_id_and_takes_the_locale_of_their_profile() {
        let id = RecipientId::new("ada").unwrap();
        let r = recipient_for(&id);
        assert_eq!((r.id, r.phone, r.email), (id, None, None), "the directory addresses it");
        let french: Contact =
            serde_json::from_value(serde_json::json!({ "locale": "fr-ca" })).unwrap();
        let locale = locale_for(Some(&entry(Some(french))));
        assert_eq!(locale.map(|l| l.as_str().to_owned()), Some("fr-CA".to_owned()));
        assert_eq!(locale_for(None), None);
    }

    #[test]
    fn pages_are_a_second_of_the_pace_and_at_most_the_cap() {
        assert_eq!(page_len(1), 1);
        assert_eq!(page_len(100), 100);
        assert_eq!(page_len(RATE_PER_SEC_MAX), PAGE_LEN_MAX);
        assert_eq!(page_len(0), 1);
        assert_eq!(page_interval_ms(100, 100), 1_000);
        assert_eq!(page_interval_ms(500, 10_000), 50);
        assert_eq!(page_interval_ms(1, 3), 334, "rounded up: never faster than the rate");
        assert_eq!(page_interval_ms(0, 100), 0);
        assert_eq!(page_interval_ms(10, 0), 10_000, "a zero rate is read as one per second");
    }

    #[test]
    fn skipped_states_count_by_reason() {
        let skipped = State::Skipped { reason: SkipReason::NoAddress { channel: Channel::Email } };
        assert_eq!(counter_field(&skipped), "skipped:no_address");
        assert_eq!(counter_field(&State::Received {}), "received");
        let delivered = State::Delivered {
            channel: Channel::InApp,
            provider: steps::model::ProviderName::new("inapp").unwrap(),
            attempt: Attempt::FIRST,
        };
        assert_eq!(counter_field(&delivered), "delivered");
    }

    fn campaign(state: CampaignState) -> Campaign {
        Campaign {
            tenant: TenantId::new("acme").unwrap(),
            id: CampaignId::new("c01x").unwrap(),
            spec: CampaignSpec {
                template: TemplateId::new("welcome").unwrap(),
                channel: Channel::InApp,
                category: Category::new("marketing").unwrap(),
                data: serde_json::Map::new(),
                segment: Segment::Recipients,
                rate_per_sec: 100,
            },
            state,
            recipients: 10,
            position: 10,
            cursor: String::new(),
            rejected: 0,
            created_at_ms: 1,
            updated_at_ms: 1,
            started_at_ms: Some(1),
            finished_at_ms: None,
            cancelled_at_ms: None,
        }
    }

    #[test]
    fn progress_adds_up_and_completes_when_nothing_is_in_flight() {
        let counts = Counts(BTreeMap::from([
            ("received".to_owned(), 1),
            ("sent".to_owned(), 2),
            ("delivered".to_owned(), 3),
            ("dead_lettered".to_owned(), 1),
            ("skipped:opted_out".to_owned(), 2),
            ("skipped:no_address".to_owned(), 1),
            ("cancelled".to_owned(), 0),
        ]));
        let p = Progress::of(&campaign(CampaignState::Expanded), &counts);
        assert_eq!((p.expanded, p.in_flight, p.sent, p.delivered, p.failed), (10, 1, 2, 3, 1));
        assert_eq!(p.skipped.total, 3);
        assert_eq!(p.skipped.by_reason["opted_out"], 2);
        assert_eq!(p.state, "expanded");
        let mut done = counts.clone();
        done.0.insert("received".into(), 0);
        done.0.insert("delivered".into(), 4);
        assert_eq!(Progress::of(&campaign(CampaignState::Expanded), &done).state, "completed");
        assert_eq!(Progress::of(&campaign(CampaignState::Expanding), &done).state, "expanding");
    }

    #[test]
    fn counts_sum_over_shards() {
        let mut sum = Counts::default();
        sum.add(&Counts(BTreeMap::from([("received".to_owned(), 2)])));
        sum.add(&Counts(BTreeMap::from([("received".to_owned(), -1), ("sent".to_owned(), 1)])));
        assert_eq!(sum.kind(StateKind::Received), 1);
        assert_eq!(sum.total(), 2);
        sum.add(&Counts(BTreeMap::from([("deferred".to_owned(), 4), ("sending".to_owned(), 2)])));
        assert_eq!(sum.due(), 3, "received and sending are due, deferred and sent are not");
    }

    #[test]
    fn states_round_trip_their_names() {
        for state in CampaignState::ALL {
            assert_eq!(CampaignState::parse(state.as_str()), Some(state));
        }
        assert!(CampaignState::Expanding.has_work() && CampaignState::Cancelling.has_work());
        assert!(!CampaignState::Draft.has_work() && !CampaignState::Expanded.has_work());
    }
}
