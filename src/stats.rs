//! The stored delivery statistics behind `courant stats`: [`StatsRecorder`] is a runner
//! [`Observer`] that counts what the lifecycle does (with the metrics' classification,
//! [`crate::metrics::classify`]) per tenant and minute, and flushes the increments into the
//! store (`storage::stats::StatsStore`) about once a second, so the API process and every worker
//! process add to the same numbers.
//!
//! The runner is never held up: an observation is handed to the flusher through a bounded
//! channel with `try_send`, and one that does not fit is dropped and counted
//! (`courant_stats_dropped_total`; logged by the flusher). What the flusher holds when the process
//! stops (at most a second's worth) is lost: the statistics are for operators, not billing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use steps::model::TenantId;
use storage::stats::{ADD_COUNTERS_MAX, Counts, MinuteCounts, StatKey, StatKind, StatsStore};
use tokio::sync::mpsc;
use workflows::machine::StateKind;
use workflows::ports::Observer;
use workflows::record::{HistoryEntry, Record};

use crate::metrics::{Happened, SendOutcome, classify};

/// Observations waiting for the flusher, at most: about a second of a very busy process.
/// Beyond it observations are dropped (and counted), never waited for.
pub const QUEUED_MAX: usize = 65_536;

/// How often the flusher writes its increments to the store.
pub const FLUSH_EVERY_MS: u64 = 1_000;

/// One counted thing.
#[derive(Debug)]
struct Observation {
    tenant: TenantId,
    minute: u64,
    key: StatKey,
}

/// Counts the lifecycle into the store's statistics. Attach it to the runner with
/// `with_observer`; [`StatsRecorder::start`] spawns its flusher on the current tokio runtime.
pub struct StatsRecorder {
    queue: mpsc::Sender<Observation>,
    /// Observations dropped because the flusher was behind (`courant_stats_dropped_total`).
    dropped: Counter,
}

impl std::fmt::Debug for StatsRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsRecorder").field("dropped", &self.dropped()).finish_non_exhaustive()
    }
}

impl StatsRecorder {
    /// A recorder writing into `store`, its flusher spawned on the current runtime, counting
    /// what it drops in `dropped`.
    pub fn start<S: StatsStore>(store: S, dropped: Counter) -> Arc<StatsRecorder> {
        let (recorder, observations) = StatsRecorder::unstarted(QUEUED_MAX, dropped);
        tokio::spawn(flush_loop(store, observations, recorder.dropped.clone()));
        Arc::new(recorder)
    }

    /// A recorder whose queue holds `capacity` observations, and the queue's other end.
    fn unstarted(
        capacity: usize,
        dropped: Counter,
    ) -> (StatsRecorder, mpsc::Receiver<Observation>) {
        let (queue, observations) = mpsc::channel(capacity);
        (StatsRecorder { queue, dropped }, observations)
    }

    /// Observations dropped so far because the flusher was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    fn count(&self, record: &Record, at_ms: u64, key: StatKey) {
        let observation = Observation {
            tenant: record.tenant.clone(),
            minute: storage::stats::minute_of(at_ms),
            key,
        };
        if self.queue.try_send(observation).is_err() {
            self.dropped.inc();
        }
    }
}

impl Observer for StatsRecorder {
    fn created(&self, record: &Record, entry: &HistoryEntry) {
        let key = StatKey::new(StatKind::Accepted, record.request.channel, None);
        self.count(record, entry.at_ms, key);
    }

    fn deduplicated(&self, _record: &Record) {}

    fn committed(&self, record: &Record, entries: &[HistoryEntry]) {
        // Each entry's own time decides its minute.
        classify(record, entries, |entry, happened| {
            if let Some(key) = stat_of(&happened) {
                self.count(record, entry.at_ms, key);
            }
        });
    }
}

/// The counter a classified transition adds to, if any.
fn stat_of(happened: &Happened<'_>) -> Option<StatKey> {
    Some(match happened {
        Happened::Send { channel, provider, outcome } => {
            let kind = match outcome {
                SendOutcome::Accepted => StatKind::Sent,
                SendOutcome::Failed => StatKind::Failed,
                SendOutcome::Unknown => StatKind::Unknown,
            };
            StatKey::new(kind, *channel, Some(provider))
        }
        Happened::Suppressed { channel, reason } => {
            StatKey::with_detail(StatKind::Skipped, *channel, None, reason)
        }
        Happened::Deferred { channel, reason } => {
            StatKey::with_detail(StatKind::Deferred, *channel, None, reason)
        }
        Happened::HandedOver { channel, ms } => StatKey::latency(StatKind::Handover, *channel, *ms),
        Happened::Delivered { channel, ms } => StatKey::latency(StatKind::Delivery, *channel, *ms),
        Happened::Settled { channel, provider, state, .. } => match state {
            StateKind::Delivered => StatKey::new(StatKind::Delivered, *channel, *provider),
            StateKind::DeadLettered => StatKey::new(StatKind::DeadLettered, *channel, *provider),
            _ => return None,
        },
        Happened::Receipt { .. } | Happened::Retry { .. } | Happened::Fallback { .. } => {
            return None;
        }
    })
}

/// Aggregates observations and writes them every [`FLUSH_EVERY_MS`], until the recorder is
/// dropped.
async fn flush_loop<S: StatsStore>(
    store: S,
    mut observations: mpsc::Receiver<Observation>,
    dropped: Counter,
) {
    let mut pending: BTreeMap<(TenantId, u64), Counts> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(FLUSH_EVERY_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dropped_seen = 0;
    loop {
        tokio::select! {
            observation = observations.recv() => match observation {
                Some(o) => *pending.entry((o.tenant, o.minute)).or_default().entry(o.key).or_default() += 1,
                None => {
                    flush(&store, std::mem::take(&mut pending)).await;
                    return;
                }
            },
            _ = tick.tick() => {
                flush(&store, std::mem::take(&mut pending)).await;
                let dropped_now = dropped.get();
                if dropped_now > dropped_seen {
                    tracing::warn!(
                        dropped = dropped_now - dropped_seen,
                        dropped_total = dropped_now,
                        "Stats: observations dropped; the store is slower than the lifecycle."
                    );
                    dropped_seen = dropped_now;
                }
            }
        }
    }
}

/// Writes `pending` in batches of at most `ADD_COUNTERS_MAX` counters; a batch the store
/// refuses is logged and lost.
async fn flush<S: StatsStore>(store: &S, pending: BTreeMap<(TenantId, u64), Counts>) {
    let mut batch: Vec<MinuteCounts> = Vec::new();
    let mut counters = 0;
    for ((tenant, minute), counts) in pending {
        if counters + counts.len() > ADD_COUNTERS_MAX && !batch.is_empty() {
            write(store, std::mem::take(&mut batch)).await;
            counters = 0;
        }
        counters += counts.len();
        batch.push(MinuteCounts { tenant, minute, counts });
    }
    if !batch.is_empty() {
        write(store, batch).await;
    }
}

async fn write<S: StatsStore>(store: &S, batch: Vec<MinuteCounts>) {
    if let Err(error) = store.add_stats(&batch).await {
        let lost: usize = batch.iter().map(|m| m.counts.len()).sum();
        tracing::warn!(%error, counters = lost, "Stats: cannot write the last second's counts.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use steps::model::{Channel, ProviderName};
    use storage::memory::MemoryStore;

    /// A notification accepted at `at_ms` (the conformance suite's email fixture).
    fn accepted_record(tenant: &str, at_ms: u64) -> (Record, HistoryEntry) {
        let tenant = TenantId::new(tenant).expect("fixture tenant");
        let id = storage::keys::new_notification_id(&tenant, None, "01HZZZZZZZZZZZZZZZZZ000001");
        let record = storage::conformance::record(&tenant, &id, at_ms, None);
        (record, storage::conformance::first(at_ms))
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (recorder, mut observations) = StatsRecorder::unstarted(2, Counter::default());
        let (record, entry) = accepted_record("acme", 1_700_000_000_000);
        for _ in 0..5 {
            // Returns at once even though nobody drains the queue.
            recorder.created(&record, &entry);
        }
        assert_eq!(recorder.dropped(), 3);
        let first = observations.try_recv().expect("queued");
        assert_eq!(first.key, StatKey::new(StatKind::Accepted, Channel::Email, None));
        assert_eq!(first.minute, storage::stats::minute_of(1_700_000_000_000));
        assert_eq!(first.tenant.as_str(), "acme");
    }

    #[tokio::test]
    async fn the_flusher_writes_counts_into_the_tenants_minute() {
        let store = MemoryStore::new();
        let recorder = StatsRecorder::start(store.clone(), Counter::default());
        let now_ms = workflows::ports::Clock::now_ms(&storage::memory::SystemClock);
        let (record, entry) = accepted_record("acme", now_ms);
        recorder.created(&record, &entry);
        recorder.created(&record, &entry);
        let minute = storage::stats::minute_of(now_ms);
        let acme = TenantId::new("acme").unwrap();
        let key = StatKey::new(StatKind::Accepted, Channel::Email, None);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let counts = store.read_stats(&acme, minute, minute).await.expect("read");
            if counts.get(&key) == Some(&2) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never flushed: {counts:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let other = TenantId::new("globex").unwrap();
        assert!(store.read_stats(&other, minute, minute).await.expect("read").is_empty());
    }

    #[test]
    fn sends_settles_and_decisions_map_to_their_counters() {
        let sendgrid = ProviderName::new("sendgrid").unwrap();
        let sent = Happened::Send {
            channel: Channel::Email,
            provider: &sendgrid,
            outcome: SendOutcome::Accepted,
        };
        assert_eq!(
            stat_of(&sent),
            Some(StatKey::new(StatKind::Sent, Channel::Email, Some(&sendgrid)))
        );
        let dead = Happened::Settled {
            channel: Channel::Sms,
            provider: None,
            state: StateKind::DeadLettered,
            reason: String::new(),
        };
        assert_eq!(stat_of(&dead), Some(StatKey::new(StatKind::DeadLettered, Channel::Sms, None)));
        let skipped = Happened::Settled {
            channel: Channel::Sms,
            provider: None,
            state: StateKind::Skipped,
            reason: "opted_out".into(),
        };
        assert_eq!(stat_of(&skipped), None, "skips are counted by their decision, once");
        let deferred = Happened::Deferred { channel: Channel::Push, reason: "quiet_hours" };
        assert_eq!(
            stat_of(&deferred),
            Some(StatKey::with_detail(StatKind::Deferred, Channel::Push, None, "quiet_hours"))
        );
    }
}
