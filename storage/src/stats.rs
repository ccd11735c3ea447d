//! Delivery statistics: per tenant, per minute counters kept in the store, so that every process
//! (the API's intake, every worker's sends) adds to the same numbers and `courant stats` reads
//! them back over a window.
//!
//! The port is [`StatsStore`]: [`add`](StatsStore::add_stats) increments (the binary's stats
//! observer aggregates in memory and flushes about once a second) and
//! [`read`](StatsStore::read_stats) sums the minutes of a window. A counter is a [`StatKey`]:
//! what happened, on which channel and provider, and a detail (a skip or deferral reason, a
//! latency bucket).
//!
//! Latencies are histograms over [`LATENCY_BUCKETS`] fixed, log-spaced buckets from 1 ms to
//! 24 h, each bound [`LATENCY_RATIO`] times the last, so minutes and processes merge by adding.
//! A percentile is reported as the upper bound of the bucket it falls in: never below the true
//! value and at most 20 % above it (a value above 24 h lands in the last bucket).
//!
//! On Redis a minute of a tenant is one HASH (`keys::stats_minute`), written with pipelined
//! `HINCRBY` and expiring after [`STATS_TTL_MS`]; in memory the same shape, pruned on write.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::LazyLock;

use serde::Serialize;
use steps::model::{Channel, ProviderName, TenantId};
use workflows::ports::StoreError;

/// One minute, the bucket width.
pub const MINUTE_MS: u64 = 60_000;

/// How long a minute's counters are kept: 8 days, a day more than the longest window.
pub const STATS_TTL_MS: u64 = 8 * 24 * 60 * MINUTE_MS;

/// The shortest window `courant stats` reads.
pub const WINDOW_MS_MIN: u64 = MINUTE_MS;

/// The longest window: 7 days (10,080 minutes read back, each one small hash).
pub const WINDOW_MS_MAX: u64 = 7 * 24 * 60 * MINUTE_MS;

/// The most minutes one [`StatsStore::read_stats`] sums: the longest window plus the minute in
/// progress.
pub const READ_MINUTES_MAX: u64 = WINDOW_MS_MAX / MINUTE_MS + 1;

/// The most counters one [`StatsStore::add_stats`] call writes. A flush of a busy second holds
/// a few hundred; more is a caller bug, refused rather than truncated.
pub const ADD_COUNTERS_MAX: usize = 20_000;

/// The ratio between consecutive latency bucket bounds: the relative error of a percentile.
pub const LATENCY_RATIO: f64 = 1.2;

/// How many latency buckets: bounds `ceil(1.2^i)` ms for i = 0..=101, from 1 ms to just over
/// 24 h (1.2^101 ms ≈ 27.6 h).
pub const LATENCY_BUCKETS: usize = 102;

static LATENCY_BOUNDS_MS: LazyLock<[u64; LATENCY_BUCKETS]> = LazyLock::new(|| {
    let mut bounds = [0_u64; LATENCY_BUCKETS];
    let mut bound = 1.0_f64;
    for slot in &mut bounds {
        // Exact for these magnitudes (< 2^53); the cast saturates by definition.
        *slot = bound.ceil() as u64;
        bound *= LATENCY_RATIO;
    }
    bounds
});

/// The upper bound, in ms, of latency bucket `bucket` (the last bucket's for anything beyond).
pub fn latency_bound_ms(bucket: usize) -> u64 {
    LATENCY_BOUNDS_MS[bucket.min(LATENCY_BUCKETS - 1)]
}

/// The bucket a latency of `ms` falls in: the first whose bound is at least `ms`; the last one
/// for anything longer.
pub fn latency_bucket(ms: u64) -> usize {
    LATENCY_BOUNDS_MS.partition_point(|&bound| bound < ms).min(LATENCY_BUCKETS - 1)
}

/// What a counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StatKind {
    /// Notifications accepted (no provider yet).
    Accepted,
    /// A provider accepted a send.
    Sent,
    /// Delivered (a receipt, or an inbox store).
    Delivered,
    /// A provider call failed.
    Failed,
    /// A provider call whose outcome is unknown (the request may have gone out).
    Unknown,
    /// Dead-lettered.
    DeadLettered,
    /// Skipped; the detail is the reason.
    Skipped,
    /// Deferred; the detail is the reason.
    Deferred,
    /// Acceptance to a provider taking it; the detail is the latency bucket.
    Handover,
    /// Acceptance to delivery; the detail is the latency bucket.
    Delivery,
}

impl StatKind {
    /// Every kind.
    pub const ALL: [StatKind; 10] = [
        StatKind::Accepted,
        StatKind::Sent,
        StatKind::Delivered,
        StatKind::Failed,
        StatKind::Unknown,
        StatKind::DeadLettered,
        StatKind::Skipped,
        StatKind::Deferred,
        StatKind::Handover,
        StatKind::Delivery,
    ];

    /// Its name in fields and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            StatKind::Accepted => "accepted",
            StatKind::Sent => "sent",
            StatKind::Delivered => "delivered",
            StatKind::Failed => "failed",
            StatKind::Unknown => "unknown",
            StatKind::DeadLettered => "dead_lettered",
            StatKind::Skipped => "skipped",
            StatKind::Deferred => "deferred",
            StatKind::Handover => "handover",
            StatKind::Delivery => "delivery",
        }
    }

    fn parse(s: &str) -> Option<StatKind> {
        StatKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// The longest detail kept (reasons are short names; longer ones are cut).
const DETAIL_LEN_MAX: usize = 64;

/// One counter: `kind|channel|provider|detail` as a hash field (provider and detail may be
/// empty). Channels, providers and reasons are names, never personal data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StatKey {
    /// What it counts.
    pub kind: StatKind,
    /// The channel.
    pub channel: Channel,
    /// The provider, where one is known.
    pub provider: Option<ProviderName>,
    /// The reason (skipped, deferred) or the latency bucket (handover, delivery); empty
    /// otherwise.
    pub detail: String,
}

impl StatKey {
    /// A counter without a detail.
    pub fn new(kind: StatKind, channel: Channel, provider: Option<&ProviderName>) -> StatKey {
        StatKey { kind, channel, provider: provider.cloned(), detail: String::new() }
    }

    /// A counter with a detail (cut to 64 characters of `[A-Za-z0-9_.-]`, the rest dropped).
    pub fn with_detail(
        kind: StatKind,
        channel: Channel,
        provider: Option<&ProviderName>,
        detail: &str,
    ) -> StatKey {
        let detail: String = detail
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            .take(DETAIL_LEN_MAX)
            .collect();
        StatKey { detail, ..StatKey::new(kind, channel, provider) }
    }

    /// A latency observation of `ms` of `kind` (handover or delivery).
    pub fn latency(kind: StatKind, channel: Channel, ms: u64) -> StatKey {
        StatKey::with_detail(kind, channel, None, &latency_bucket(ms).to_string())
    }

    /// The hash field.
    pub fn field(&self) -> String {
        let provider = self.provider.as_ref().map_or("", ProviderName::as_str);
        format!("{}|{}|{provider}|{}", self.kind.as_str(), self.channel, self.detail)
    }

    /// Parses [`StatKey::field`]; `None` for a field this version does not know.
    pub fn parse(field: &str) -> Option<StatKey> {
        let mut parts = field.splitn(4, '|');
        let kind = StatKind::parse(parts.next()?)?;
        let channel = Channel::parse(parts.next()?)?;
        let provider = match parts.next()? {
            "" => None,
            name => Some(ProviderName::new(name).ok()?),
        };
        let detail = parts.next()?.to_owned();
        Some(StatKey { kind, channel, provider, detail })
    }
}

/// Counters summed: what a read returns.
pub type Counts = BTreeMap<StatKey, u64>;

/// Increments for one minute of one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinuteCounts {
    /// The tenant.
    pub tenant: TenantId,
    /// The minute: ms since the epoch divided by [`MINUTE_MS`].
    pub minute: u64,
    /// What to add.
    pub counts: Counts,
}

/// The minute `at_ms` falls in.
pub fn minute_of(at_ms: u64) -> u64 {
    at_ms / MINUTE_MS
}

/// The statistics port. Both stores implement it.
pub trait StatsStore: Clone + Send + Sync + 'static {
    /// Adds `batch` to the stored counters (at most [`ADD_COUNTERS_MAX`] counters in all).
    fn add_stats(
        &self,
        batch: &[MinuteCounts],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The tenant's counters summed over minutes `from_minute..=to_minute` (at most
    /// [`READ_MINUTES_MAX`] minutes). Fields this version does not know are left out.
    fn read_stats(
        &self,
        tenant: &TenantId,
        from_minute: u64,
        to_minute: u64,
    ) -> impl Future<Output = Result<Counts, StoreError>> + Send;
}

/// Checks an add batch against [`ADD_COUNTERS_MAX`].
pub(crate) fn check_add(batch: &[MinuteCounts]) -> Result<(), StoreError> {
    let n: usize = batch.iter().map(|m| m.counts.len()).sum();
    if n > ADD_COUNTERS_MAX {
        return Err(crate::queue::over_limit("a stats batch", n, ADD_COUNTERS_MAX));
    }
    Ok(())
}

/// Checks a read's minute range against [`READ_MINUTES_MAX`].
pub(crate) fn check_read(from_minute: u64, to_minute: u64) -> Result<(), StoreError> {
    let n = to_minute.saturating_sub(from_minute).saturating_add(1);
    if from_minute > to_minute || n > READ_MINUTES_MAX {
        return Err(StoreError::Unavailable(format!(
            "a stats read of minutes {from_minute}..={to_minute} is outside 1 to \
             {READ_MINUTES_MAX} minutes"
        )));
    }
    Ok(())
}

// ---- the report --------------------------------------------------------------------------------

/// One channel and provider's counts over a window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Row {
    /// The channel.
    pub channel: String,
    /// The provider; `null` for what is counted before one is chosen (accepted, most skips and
    /// deferrals).
    pub provider: Option<String>,
    /// Accepted.
    pub accepted: u64,
    /// Sent (a provider accepted it).
    pub sent: u64,
    /// Delivered.
    pub delivered: u64,
    /// Provider calls that failed.
    pub failed: u64,
    /// Provider calls with an unknown outcome.
    pub unknown: u64,
    /// Dead-lettered.
    pub dead_lettered: u64,
    /// Skipped, by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Deferred, by reason.
    pub deferred: BTreeMap<String, u64>,
}

/// A latency distribution of one channel over a window, in ms. Each percentile is the upper
/// bound of its histogram bucket: at most [`LATENCY_RATIO`] times the true value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Latency {
    /// The channel.
    pub channel: String,
    /// `handover` (accepted → a provider took it) or `delivery` (accepted → delivered).
    pub kind: &'static str,
    /// How many observations.
    pub count: u64,
    /// The median.
    pub p50_ms: u64,
    /// The 90th percentile.
    pub p90_ms: u64,
    /// The 99th percentile.
    pub p99_ms: u64,
    /// The largest.
    pub max_ms: u64,
}

/// What `GET /v1/admin/stats` reports: rows by channel and provider, latencies by channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Counts, by channel then provider.
    pub rows: Vec<Row>,
    /// Latencies, by channel then kind.
    pub latency: Vec<Latency>,
}

/// Builds the report from summed counters, keeping only `channel` and `provider` when given
/// (a provider filter drops the rows counted before a provider is chosen, and the latencies,
/// which are per channel).
pub fn report(
    counts: &Counts,
    channel: Option<Channel>,
    provider: Option<&ProviderName>,
) -> Report {
    let mut rows: BTreeMap<(Channel, Option<ProviderName>), Row> = BTreeMap::new();
    let mut histograms: BTreeMap<(Channel, StatKind), [u64; LATENCY_BUCKETS]> = BTreeMap::new();
    for (key, &n) in counts {
        if channel.is_some_and(|c| c != key.channel) {
            continue;
        }
        if let StatKind::Handover | StatKind::Delivery = key.kind {
            if provider.is_some() {
                continue;
            }
            if let Ok(bucket) = key.detail.parse::<usize>() {
                let histogram =
                    histograms.entry((key.channel, key.kind)).or_insert([0; LATENCY_BUCKETS]);
                histogram[bucket.min(LATENCY_BUCKETS - 1)] += n;
            }
            continue;
        }
        if provider.is_some() && key.provider.as_ref() != provider {
            continue;
        }
        let row = rows.entry((key.channel, key.provider.clone())).or_insert_with(|| Row {
            channel: key.channel.to_string(),
            provider: key.provider.as_ref().map(ToString::to_string),
            ..Row::default()
        });
        let reason = || if key.detail.is_empty() { "other".to_owned() } else { key.detail.clone() };
        match key.kind {
            StatKind::Accepted => row.accepted += n,
            StatKind::Sent => row.sent += n,
            StatKind::Delivered => row.delivered += n,
            StatKind::Failed => row.failed += n,
            StatKind::Unknown => row.unknown += n,
            StatKind::DeadLettered => row.dead_lettered += n,
            StatKind::Skipped => *row.skipped.entry(reason()).or_default() += n,
            StatKind::Deferred => *row.deferred.entry(reason()).or_default() += n,
            StatKind::Handover | StatKind::Delivery => {}
        }
    }
    let latency = histograms
        .into_iter()
        .map(|((channel, kind), histogram)| percentiles(channel, kind, &histogram))
        .collect();
    Report { rows: rows.into_values().collect(), latency }
}

/// The percentiles of one histogram.
fn percentiles(channel: Channel, kind: StatKind, histogram: &[u64; LATENCY_BUCKETS]) -> Latency {
    let count: u64 = histogram.iter().sum();
    // The bucket holding the observation of rank ceil(q × count) (1-based), as an upper bound.
    let at = |q_percent: u64| {
        let rank = (count * q_percent).div_ceil(100).max(1);
        let mut seen = 0;
        for (bucket, n) in histogram.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return latency_bound_ms(bucket);
            }
        }
        0
    };
    let max = histogram.iter().rposition(|&n| n > 0).map_or(0, latency_bound_ms);
    Latency {
        channel: channel.to_string(),
        kind: kind.as_str(),
        count,
        p50_ms: at(50),
        p90_ms: at(90),
        p99_ms: at(99),
        max_ms: max,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_span_1_ms_to_a_day_at_20_percent() {
        assert_eq!(latency_bound_ms(0), 1);
        assert!(latency_bound_ms(LATENCY_BUCKETS - 1) >= 24 * 60 * 60 * 1_000);
        assert!(latency_bound_ms(LATENCY_BUCKETS - 2) < 24 * 60 * 60 * 1_000);
        for ms in [0, 1, 2, 5, 37, 999, 1_000, 1_001, 60_000, 3_600_000, 86_400_000] {
            let bound = latency_bound_ms(latency_bucket(ms));
            assert!(bound >= ms, "{ms} ms in a bucket up to {bound}");
            // Relative error: the bound is at most 1.2 × the value, plus the rounding up of the
            // smallest buckets to whole ms.
            assert!(bound as f64 <= (ms as f64) * LATENCY_RATIO + 1.0, "{ms} → {bound}");
        }
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS - 1);
    }

    #[test]
    fn keys_round_trip_their_field() {
        let sendgrid = ProviderName::new("sendgrid").unwrap();
        let keys = [
            StatKey::new(StatKind::Accepted, Channel::Email, None),
            StatKey::new(StatKind::Sent, Channel::Sms, Some(&sendgrid)),
            StatKey::with_detail(StatKind::Skipped, Channel::Push, None, "opted_out"),
            StatKey::latency(StatKind::Handover, Channel::InApp, 250),
        ];
        for key in keys {
            assert_eq!(StatKey::parse(&key.field()), Some(key.clone()), "{}", key.field());
        }
        assert_eq!(
            StatKey::new(StatKind::Sent, Channel::Sms, Some(&sendgrid)).field(),
            "sent|sms|sendgrid|"
        );
        assert_eq!(
            StatKey::with_detail(StatKind::Deferred, Channel::Email, None, "a|b c").detail,
            "abc",
            "a detail cannot break out of its field"
        );
        assert_eq!(StatKey::parse("bogus|email||"), None);
        assert_eq!(StatKey::parse("sent|pigeon||"), None);
    }

    #[test]
    fn the_report_sums_rows_and_reads_percentiles_off_the_buckets() {
        let sendgrid = ProviderName::new("sendgrid").unwrap();
        let mut counts = Counts::new();
        counts.insert(StatKey::new(StatKind::Accepted, Channel::Email, None), 100);
        counts.insert(StatKey::new(StatKind::Sent, Channel::Email, Some(&sendgrid)), 90);
        counts.insert(StatKey::new(StatKind::Failed, Channel::Email, Some(&sendgrid)), 10);
        counts
            .insert(StatKey::with_detail(StatKind::Skipped, Channel::Email, None, "opted_out"), 3);
        // 90 hand-overs at 100 ms, 9 at 1 s, 1 at 60 s.
        counts.insert(StatKey::latency(StatKind::Handover, Channel::Email, 100), 90);
        counts.insert(StatKey::latency(StatKind::Handover, Channel::Email, 1_000), 9);
        counts.insert(StatKey::latency(StatKind::Handover, Channel::Email, 60_000), 1);
        counts.insert(StatKey::new(StatKind::Accepted, Channel::Sms, None), 7);

        let all = report(&counts, None, None);
        assert_eq!(all.rows.len(), 3);
        let email = &all.rows[0];
        assert_eq!((email.channel.as_str(), email.provider.as_deref()), ("email", None));
        assert_eq!((email.accepted, email.skipped["opted_out"]), (100, 3));
        let sendgrid_row = &all.rows[1];
        assert_eq!((sendgrid_row.sent, sendgrid_row.failed), (90, 10));
        let handover = &all.latency[0];
        assert_eq!((handover.kind, handover.count), ("handover", 100));
        let bound = |ms| latency_bound_ms(latency_bucket(ms));
        assert_eq!(handover.p50_ms, bound(100));
        assert_eq!(handover.p90_ms, bound(100));
        assert_eq!(handover.p99_ms, bound(1_000));
        assert_eq!(handover.max_ms, bound(60_000));

        let sms = report(&counts, Some(Channel::Sms), None);
        assert_eq!(sms.rows.len(), 1);
        assert!(sms.latency.is_empty());
        let by_provider = report(&counts, None, Some(&sendgrid));
        assert_eq!(by_provider.rows.len(), 1);
        assert!(by_provider.latency.is_empty());
    }
}
