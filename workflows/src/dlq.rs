//! The dead-letter queue's operator tools, as pure data and decisions: which dead letters a
//! filter selects, which of them may have been delivered after all, what a replay would touch,
//! and when each replayed notification starts.
//!
//! The runner (`Runner::dlq_plan`, `dlq_replay`, `dlq_purge`) reads and commits through the
//! store; the HTTP API and the CLI show the results. Everything here is bounded: one request
//! examines at most [`DLQ_SCAN_MAX`] dead letters and says so when it stopped early.

use std::collections::{BTreeMap, BTreeSet};

use steps::model::{Channel, NotificationId, ProviderName};

use crate::machine::{State, StateKind};
use crate::record::{HistoryEntry, Record};

/// The most dead letters one listing, plan, replay or purge examines, newest first. Bounded so an
/// operator command is one request of predictable size; a larger DLQ is worked through with
/// narrower filters (age, channel, reason) or repeated commands.
pub const DLQ_SCAN_MAX: usize = 10_000;
/// How many characters of a reason a plan groups by: enough to tell "all 3 attempts used" from
/// "invalid 'To' number" without one group per distinct provider message.
pub const REASON_KEY_CHARS: usize = 60;
/// Replays per second unless the operator asks otherwise: gentle on providers that have just
/// recovered.
pub const REPLAY_RATE_DEFAULT: u32 = 10;
/// The fastest replay rate accepted, per second.
pub const REPLAY_RATE_MAX: u32 = 1_000;

/// Which dead letters an operator command is about. Every condition that is set must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqFilter {
    /// Only these notifications (any, when empty): one an operator names, or exactly those a
    /// dry run showed. At most [`DLQ_SCAN_MAX`].
    pub ids: BTreeSet<NotificationId>,
    /// Only reasons containing this text (ASCII case-insensitive).
    pub reason_contains: Option<String>,
    /// Only notifications dead-lettered on this channel (after any fallback, the last channel).
    pub channel: Option<Channel>,
    /// Only notifications last with this provider.
    pub provider: Option<ProviderName>,
    /// Only notifications dead-lettered at least this long ago, in ms.
    pub older_than_ms: Option<u64>,
    /// Only notifications dead-lettered at most this long ago, in ms.
    pub newer_than_ms: Option<u64>,
    /// At most this many (capped at [`DLQ_SCAN_MAX`]).
    pub limit: usize,
}

impl Default for DlqFilter {
    fn default() -> Self {
        Self {
            ids: BTreeSet::new(),
            reason_contains: None,
            channel: None,
            provider: None,
            older_than_ms: None,
            newer_than_ms: None,
            limit: DLQ_SCAN_MAX,
        }
    }
}

impl DlqFilter {
    /// Whether `record` is dead-lettered and selected by the filter at `now_ms`. A dead-lettered
    /// record's `updated_at_ms` is when it was dead-lettered (nothing commits it afterwards
    /// without moving it out of the DLQ).
    pub fn matches(&self, record: &Record, now_ms: u64) -> bool {
        let State::DeadLettered { channel, provider, reason, .. } = &record.state else {
            return false;
        };
        let (from_ms, to_ms) = self.window_ms(now_ms);
        (self.ids.is_empty() || self.ids.contains(&record.id))
            && self.channel.is_none_or(|c| c == *channel)
            && self.provider.as_ref().is_none_or(|p| provider.as_ref() == Some(p))
            && self
                .reason_contains
                .as_deref()
                .is_none_or(|needle| contains_ignore_case(reason, needle))
            && (from_ms..=to_ms).contains(&record.updated_at_ms)
    }

    /// The dead-lettered-at times the filter selects at `now_ms`, inclusive:
    /// `[now - newer_than, now - older_than]`.
    pub fn window_ms(&self, now_ms: u64) -> (u64, u64) {
        let from_ms = self.newer_than_ms.map_or(0, |ms| now_ms.saturating_sub(ms));
        let to_ms = self.older_than_ms.map_or(u64::MAX, |ms| now_ms.saturating_sub(ms));
        (from_ms, to_ms)
    }

    /// The limit, capped at [`DLQ_SCAN_MAX`].
    pub fn limit_capped(&self) -> usize {
        self.limit.min(DLQ_SCAN_MAX)
    }
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack.to_ascii_lowercase().contains(&needle.to_ascii_lowercase())
}

/// Why a DLQ listing stopped before the end of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truncated {
    /// The filter's limit was reached; more dead letters may match.
    Limit,
    /// [`DLQ_SCAN_MAX`] dead letters were examined; older ones were not looked at.
    Scan,
}

impl Truncated {
    /// The snake_case name, for JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Truncated::Limit => "limit",
            Truncated::Scan => "scan",
        }
    }
}

/// Dead letters selected by a filter, most recently dead-lettered first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DlqPage {
    /// The records, dead-lettered and matching, newest first.
    pub records: Vec<Record>,
    /// How many DLQ entries were examined.
    pub scanned: usize,
    /// Why the listing stopped early, if it did.
    pub truncated: Option<Truncated>,
}

/// What a replay or purge of `filter` works through, oldest first: the page's dead letters, then
/// the ids the filter names that the page left out (not found, or not dead-lettered), so each
/// named one gets its verdict. Named ids are only added when the page is complete: one cut at
/// its limit must not be extended past it.
pub fn targets(filter: &DlqFilter, page: &DlqPage) -> Vec<NotificationId> {
    let mut ids: Vec<NotificationId> = page.records.iter().rev().map(|r| r.id.clone()).collect();
    if page.truncated.is_none() {
        let listed: BTreeSet<&NotificationId> = page.records.iter().map(|r| &r.id).collect();
        let missing: Vec<NotificationId> =
            filter.ids.iter().filter(|id| !listed.contains(id)).cloned().collect();
        ids.extend(missing);
    }
    ids
}

/// Whether a dead-lettered notification may have reached its recipient after all: an attempt in
/// its history had an unknown outcome (the request was written, no answer came), or an earlier
/// replay was already forced past one. A replay skips it unless the operator insists.
pub fn maybe_delivered(record: &Record, history: &[HistoryEntry]) -> bool {
    record.possible_duplicate() || history.iter().any(|e| e.to.kind() == StateKind::Unknown)
}

/// When the `index`-th replayed notification (from 0) starts, at `rate_per_sec`: replays are
/// spread by their first wake-up, so the spread survives restarts and nothing sleeps.
pub fn replay_at_ms(now_ms: u64, index: usize, rate_per_sec: u32) -> u64 {
    let rate = u64::from(rate_per_sec.clamp(1, REPLAY_RATE_MAX));
    let index = u64::try_from(index).unwrap_or(u64::MAX);
    now_ms.saturating_add(index.saturating_mul(1_000) / rate)
}

/// The first [`REASON_KEY_CHARS`] characters of a reason, the key a plan groups it under.
pub fn reason_key(reason: &str) -> String {
    let mut key: String = reason.chars().take(REASON_KEY_CHARS).collect();
    if reason.chars().count() > REASON_KEY_CHARS {
        key.push('…');
    }
    key
}

/// What a replay with the same filter would touch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DlqPlan {
    /// Dead letters the filter selects.
    pub matched: u64,
    /// Of those, how many a replay would re-drive.
    pub replay: u64,
    /// Of those, how many a replay would skip because they may have been delivered.
    pub maybe_delivered: u64,
    /// Replays by the channel they were dead-lettered on.
    pub by_channel: BTreeMap<String, u64>,
    /// Replays by the provider they were last with (`none` when no provider was reached).
    pub by_provider: BTreeMap<String, u64>,
    /// Replays by reason ([`reason_key`]).
    pub by_reason: BTreeMap<String, u64>,
    /// How many DLQ entries were examined.
    pub scanned: usize,
    /// Why the examination stopped early, if it did.
    pub truncated: Option<Truncated>,
}

impl DlqPlan {
    /// Counts one selected dead letter; `replayed` says whether a replay would re-drive it.
    pub fn count(&mut self, record: &Record, replayed: bool) {
        self.matched += 1;
        if !replayed {
            self.maybe_delivered += 1;
            return;
        }
        self.replay += 1;
        let State::DeadLettered { channel, provider, reason, .. } = &record.state else {
            return;
        };
        *self.by_channel.entry(channel.as_str().to_owned()).or_default() += 1;
        let provider = provider.as_ref().map_or("none", |p| p.as_str()).to_owned();
        *self.by_provider.entry(provider).or_default() += 1;
        *self.by_reason.entry(reason_key(reason)).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_are_spread_at_the_rate_and_the_rate_is_clamped() {
        let now = 1_000_000;
        assert_eq!(replay_at_ms(now, 0, 10), now);
        assert_eq!(replay_at_ms(now, 3, 10), now + 300);
        assert_eq!(replay_at_ms(now, 3, 3), now + 1_000);
        assert_eq!(replay_at_ms(now, 5, 0), now + 5_000, "a zero rate is read as one per second");
        assert_eq!(replay_at_ms(now, 5, 1_000_000), now + 5, "at most REPLAY_RATE_MAX per second");
        assert_eq!(replay_at_ms(u64::MAX - 1, usize::MAX, 1), u64::MAX, "saturates");
    }

    #[test]
    fn reasons_are_grouped_by_their_start() {
        assert_eq!(reason_key("all 3 attempts used"), "all 3 attempts used");
        let long = "é".repeat(REASON_KEY_CHARS + 5);
        let key = reason_key(&long);
        assert_eq!(key.chars().count(), REASON_KEY_CHARS + 1);
        assert!(key.ends_with('…'));
        assert_eq!(reason_key(&"x".repeat(REASON_KEY_CHARS)), "x".repeat(REASON_KEY_CHARS));
    }

    #[test]
    fn the_age_window_is_inclusive_and_saturates() {
        let filter = DlqFilter {
            older_than_ms: Some(1_000),
            newer_than_ms: Some(5_000),
            ..Default::default()
        };
        assert_eq!(filter.window_ms(10_000), (5_000, 9_000));
        assert_eq!(filter.window_ms(500), (0, 0));
        assert_eq!(DlqFilter::default().window_ms(10_000), (0, u64::MAX));
        assert_eq!(DlqFilter { limit: 50_000, ..Default::default() }.limit_capped(), DLQ_SCAN_MAX);
    }
}
