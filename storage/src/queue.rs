//! The wake-up queue: at-least-once delivery of [`Wake`]s to workers.
//!
//! A wake-up is enqueued by the same atomic step that commits the state change it belongs to
//! (`Store::create` / `Store::commit`): straight into *ready* when it is due, into *timers*
//! otherwise. Workers [`fetch`](WakeQueue::fetch) ready wake-ups, which then stay *pending* under
//! the worker's consumer name until they are [`ack`](WakeQueue::ack)ed. A worker that dies leaves
//! its wake-ups pending; [`reclaim_abandoned`](WakeQueue::reclaim_abandoned) hands them to a live
//! worker once they have been idle long enough. Recovery needs no heartbeat and no worker
//! registry: it is per message, and a worker restarted under the same name works at once.
//!
//! Workers do write [`heartbeat`](WakeQueue::heartbeat)s into a registry
//! ([`workers`](WakeQueue::workers)), but only for operators (`courant queues`: which workers are
//! alive, on which host, with how many slots): nothing reads it to decide who may work or what
//! to recover, so a stale or missing entry changes nothing but that view.
//!
//! Duplicates are harmless by construction: a wake-up carries the record version it was scheduled
//! for, and the runner's compare-and-set makes a stale or repeated one do nothing.
//!
//! Wake-ups can still be lost: Redis losing its last second of writes, an operator deleting a
//! stream, a wake-up parked after [`TRIES_MAX`] failures, a bug. So every record that waits on a
//! worker also has a **deadline** ([`deadline_ms`]), written by the same atomic step as its state
//! and its wake-up: the wake-up's due time plus [`REAPER_SLACK_MS`]. The reaper
//! ([`redrive_overdue`](WakeQueue::redrive_overdue)) enqueues a fresh wake-up for each record past
//! its deadline and moves the deadline a slack further, so nothing waits forever and nothing is
//! re-driven in a tight loop.

use std::fmt;
use std::future::Future;

use steps::model::{NotificationId, TenantId};
use workflows::machine::StateKind;
use workflows::ports::StoreError;
use workflows::record::Wake;

/// After this many infrastructure failures a wake-up is parked instead of retried. Business
/// outcomes never count: the runner turns those into state changes and fresh wake-ups.
pub const TRIES_MAX: u32 = 10;

/// The most wake-ups one [`WakeQueue::fetch`] returns, whatever the caller asks for. Bounds the
/// work a single worker holds without having started it.
pub const FETCH_MAX: usize = 1_000;

/// The most wake-ups one [`WakeQueue::schedule`] call takes.
pub const SCHEDULE_BATCH_MAX: usize = 10_000;

/// The most due timers [`WakeQueue::promote_due`] moves per shard in one call. Bounded so that a
/// backlog of any size is promoted in small atomic chunks (apalis-redis unpacks every due id in
/// one script and dies at about 8,000).
pub const PROMOTE_PER_SHARD_MAX: usize = 1_000;

/// The longest block a [`WakeQueue::fetch`] may ask for: it holds a connection for that long, and
/// must stay well inside the Redis response timeout (5 s).
pub const BLOCK_MS_MAX: u64 = 2_000;

/// How long past its wake-up's due time a record waiting on a worker is overdue: 5 min. Long
/// enough that a healthy queue always wins (promotion runs every 50 ms, a dead worker's wake-ups
/// are reclaimed after 10 s, infrastructure retries back off to 60 s), short enough that a lost
/// wake-up costs minutes, not a day. A stuck record is re-driven at most once per slack, which
/// also bounds the cost of a wake-up that keeps failing and being parked.
pub const REAPER_SLACK_MS: u64 = 5 * 60_000;

/// The most overdue records one [`WakeQueue::redrive_overdue`] re-drives per shard, whatever the
/// caller asks for: each shard is one atomic script, so this bounds its run time.
pub const REDRIVE_PER_SHARD_MAX: usize = 1_000;

/// Whether a record in this state waits on a worker, and so has a deadline: every state but the
/// terminal ones and `sent`, which waits for a receipt that may never come (a lost receipt is the
/// provider's silence, not stuck work).
pub fn has_deadline(kind: StateKind) -> bool {
    !kind.is_terminal() && kind != StateKind::Sent
}

/// The deadline of a record written at `now_ms` in state `kind` with its next wake-up at
/// `wake_at_ms`: that wake-up's time (not before now) plus [`REAPER_SLACK_MS`]; `None` for a
/// state without one. A state that waits on a worker but was written without a wake-up gets one
/// slack from now: it has nothing else to wake it, so the reaper will.
pub fn deadline_ms(kind: StateKind, wake_at_ms: Option<u64>, now_ms: u64) -> Option<u64> {
    has_deadline(kind)
        .then(|| wake_at_ms.unwrap_or(now_ms).max(now_ms).saturating_add(REAPER_SLACK_MS))
}

/// A record's member in the deadline index, `tenant/id`: one entry per record, moved by every
/// commit.
pub(crate) fn deadline_member(tenant: &TenantId, id: &NotificationId) -> String {
    format!("{tenant}/{id}")
}

/// Parses [`deadline_member`].
pub(crate) fn parse_deadline_member(member: &str) -> Option<(TenantId, NotificationId)> {
    let (tenant, id) = member.split_once('/')?;
    Some((TenantId::new(tenant).ok()?, NotificationId::new(id).ok()?))
}

/// What one reaper round ([`WakeQueue::redrive_overdue`]) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Overdue records given a fresh wake-up (their deadline moved a slack further).
    pub redriven: usize,
    /// Index entries dropped: the record is gone, terminal or `sent`.
    pub cleared: usize,
}

impl Reaped {
    /// Overdue entries looked at.
    pub fn examined(&self) -> usize {
        self.redriven + self.cleared
    }
}

/// Where a delivery came from, opaque to callers: the shard and stream entry id on Redis, a
/// sequence number in memory. Its `Display` is safe to log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryTag(pub(crate) TagInner);

/// The inside of a [`DeliveryTag`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum TagInner {
    /// A Redis stream entry.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Stream {
        /// The shard whose ready stream holds the entry.
        shard: u16,
        /// The stream entry id (`<ms>-<seq>`).
        entry: String,
    },
    /// An entry of the in-memory queue.
    Memory {
        /// Its sequence number, unique per store.
        seq: u64,
    },
}

impl fmt::Display for DeliveryTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            TagInner::Stream { shard, entry } => write!(f, "s{shard:02x}/{entry}"),
            TagInner::Memory { seq } => write!(f, "m/{seq}"),
        }
    }
}

/// One wake-up handed to a worker. Settle it with [`WakeQueue::ack`],
/// [`WakeQueue::retry_later`] or [`WakeQueue::release`]; an unsettled delivery is re-delivered
/// to some worker after it has been idle for the reclaim time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The wake-up.
    pub wake: Wake,
    /// Where it came from (needed to settle it).
    pub tag: DeliveryTag,
    /// How many times it failed for infrastructure reasons before this delivery.
    pub tries: u32,
}

/// What [`WakeQueue::retry_later`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retried {
    /// Scheduled again at `at_ms` with `tries` failures counted.
    Scheduled {
        /// When it is due.
        at_ms: u64,
        /// Failures so far.
        tries: u32,
    },
    /// Failed [`TRIES_MAX`] times: parked for an operator.
    Parked,
    /// The delivery was already settled (acked, or retried by another worker): nothing done.
    AlreadySettled,
}

/// Counts for the ops CLI and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Due and not yet fetched.
    pub ready: u64,
    /// Timers whose time has come but that are not in ready yet (promotion runs every 50 ms in
    /// every worker, so more than a handful here means no worker is promoting).
    pub due: u64,
    /// Timers waiting for their time, which is still to come.
    pub scheduled: u64,
    /// Fetched and not yet settled (in flight, or left behind by a dead worker).
    pub pending: u64,
    /// Parked after [`TRIES_MAX`] failures.
    pub parked: u64,
    /// Records past their deadline and not re-driven yet: their wake-up is late or lost. The
    /// reaper ([`WakeQueue::redrive_overdue`]) brings this back to zero.
    pub overdue: u64,
    /// Records in the dead-letter queue, every tenant's.
    pub dead_lettered: u64,
    /// Since when the oldest wake-up that could run has been waiting (store clock, ms since the
    /// epoch): the earliest of the oldest ready entry's arrival in ready and the oldest due
    /// timer's due time. `None` when nothing is ready or due. See [`QueueStats::lag_ms`].
    pub oldest_waiting_since_ms: Option<u64>,
}

impl QueueStats {
    /// The queue lag at `now_ms`: how long the oldest ready or due wake-up has been waiting; 0
    /// when none is.
    pub fn lag_ms(&self, now_ms: u64) -> u64 {
        self.oldest_waiting_since_ms.map_or(0, |since| now_ms.saturating_sub(since))
    }
}

/// How often a worker process writes its heartbeat into the store.
pub const HEARTBEAT_MS: u64 = 5_000;

/// A worker is alive while its last heartbeat is at most this old: three heartbeats.
pub const WORKER_ALIVE_MS: u64 = 3 * HEARTBEAT_MS;

/// Registry entries not refreshed for this long are removed (by the next heartbeat of any
/// worker): 6 h, long enough to see in `courant queues` which workers died this morning.
pub const WORKER_FORGET_MS: u64 = 6 * 60 * 60 * 1_000;

/// The most registry entries [`WakeQueue::workers`] returns (the freshest first).
pub const WORKERS_LIST_MAX: usize = 500;

/// The longest worker id, host name or registry entry field kept; longer ones are cut.
pub const WORKER_FIELD_LEN_MAX: usize = 200;

/// The most provider breakers one heartbeat reports; more are left out.
pub const WORKER_BREAKERS_MAX: usize = 64;

/// A provider's circuit breaker in one worker process, as its heartbeat reports it (breakers are
/// per process: each worker learns for itself).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BreakerBeat {
    /// The provider.
    pub provider: String,
    /// Its channel.
    pub channel: String,
    /// `closed`, `open` or `half_open`.
    pub state: String,
    /// Since when, ms since the epoch.
    pub since_ms: u64,
    /// Times it opened since the process started.
    pub opened: u64,
    /// Calls refused while open since the process started.
    pub rejected: u64,
    /// Calls that reached the provider since the process started.
    pub calls: u64,
    /// Of those, the ones that said the provider is unwell.
    pub failures: u64,
    /// How many of the latest calls (at most 100) the failure rate is over.
    pub recent_calls: u32,
    /// How many of them failed.
    pub recent_failures: u32,
    /// Failures in a row, up to the latest call.
    pub consecutive_failures: u32,
}

/// One worker process in the registry: what its heartbeats say. No personal data: a host name,
/// a process id, a slot count, times and its provider breakers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorkerBeat {
    /// The worker's consumer name (unique per process).
    pub id: String,
    /// The host it runs on (`HOSTNAME`).
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// How many wake-ups it handles at once.
    pub slots: u32,
    /// When it started, ms since the epoch.
    pub started_at_ms: u64,
    /// When this heartbeat was written (the store's clock for the registry's order).
    pub seen_at_ms: u64,
    /// Its provider circuit breakers as of this heartbeat (at most [`WORKER_BREAKERS_MAX`]).
    #[serde(default)]
    pub breakers: Vec<BreakerBeat>,
}

impl WorkerBeat {
    /// Whether the worker was seen within [`WORKER_ALIVE_MS`] of `now_ms`.
    pub fn alive(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.seen_at_ms) <= WORKER_ALIVE_MS
    }

    /// The beat with its text fields cut to [`WORKER_FIELD_LEN_MAX`] (on a character boundary)
    /// and at most [`WORKER_BREAKERS_MAX`] breakers.
    pub(crate) fn bounded(&self) -> WorkerBeat {
        let cut = |s: &str| s.chars().take(WORKER_FIELD_LEN_MAX).collect::<String>();
        let breakers = self
            .breakers
            .iter()
            .take(WORKER_BREAKERS_MAX)
            .map(|b| BreakerBeat {
                provider: cut(&b.provider),
                channel: cut(&b.channel),
                state: cut(&b.state),
                ..b.clone()
            })
            .collect();
        WorkerBeat { id: cut(&self.id), host: cut(&self.host), breakers, ..self.clone() }
    }
}

/// The backoff of [`WakeQueue::retry_later`] after the `tries`-th failure (counted from 0):
/// `base_ms * 2^tries`, capped at `max_ms`.
pub fn retry_delay_ms(tries: u32, base_ms: u64, max_ms: u64) -> u64 {
    let factor = 1_u64.checked_shl(tries.min(63)).unwrap_or(u64::MAX);
    base_ms.saturating_mul(factor).min(max_ms)
}

/// The member a wake-up has in a timers set: its key, plus `#tries` once it has failed. The key
/// alone for fresh wake-ups, so scheduling the same wake-up twice collapses into one timer.
pub(crate) fn timer_member(wake_key: &str, tries: u32) -> String {
    if tries == 0 { wake_key.to_owned() } else { format!("{wake_key}#{tries}") }
}

/// Parses [`timer_member`]: the wake key and the tries.
pub(crate) fn parse_timer_member(member: &str) -> (&str, u32) {
    match member.split_once('#') {
        Some((key, tries)) => (key, tries.parse().unwrap_or(0)),
        None => (member, 0),
    }
}

/// The wake-up queue. Both stores implement it; the apalis backend (`backend::WakeBackend`)
/// drives it. Every method is bounded (see the `*_MAX` constants) and safe to call from many
/// workers at once.
pub trait WakeQueue: Clone + Send + Sync + 'static {
    /// A handle on the same queue for one consumer loop. On Redis it gets its own connection for
    /// blocking reads, because a blocking read stalls every other request on a multiplexed
    /// connection; in memory it is a plain clone.
    fn dedicated(&self) -> Self {
        self.clone()
    }

    /// The queue's clock, ms since the Unix epoch: when retries fall due, what `promote_due` is
    /// told is now. The system clock on Redis, the store's clock in memory.
    fn now_ms(&self) -> u64;

    /// Takes up to `max` (at most [`FETCH_MAX`]) ready wake-ups for `consumer`, waiting up to
    /// `block_ms` (at most [`BLOCK_MS_MAX`]) for the first one. The in-memory queue never waits.
    fn fetch(
        &self,
        consumer: &str,
        max: usize,
        block_ms: u64,
    ) -> impl Future<Output = Result<Vec<Delivery>, StoreError>> + Send;

    /// Settles handled deliveries: they are gone for good.
    fn ack(&self, deliveries: &[Delivery]) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Settles a delivery that failed for infrastructure reasons: atomically schedules it again
    /// `delay_ms` from now with one more try counted, or parks it after [`TRIES_MAX`] tries.
    fn retry_later(
        &self,
        delivery: &Delivery,
        delay_ms: u64,
    ) -> impl Future<Output = Result<Retried, StoreError>> + Send;

    /// Puts fetched but unstarted deliveries straight back into ready (graceful shutdown).
    fn release(
        &self,
        deliveries: &[Delivery],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Moves timers due at `now_ms` into ready, at most `max_per_shard` (at most
    /// [`PROMOTE_PER_SHARD_MAX`]) per shard, and returns how many moved. Call it again while it
    /// returns a full chunk.
    fn promote_due(
        &self,
        now_ms: u64,
        max_per_shard: usize,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Hands deliveries that have been pending for at least `min_idle_ms` (their worker died, or
    /// fetched them and never settled them) to `consumer`, at most `max` (at most
    /// [`FETCH_MAX`]). The caller runs them like fresh deliveries.
    fn reclaim_abandoned(
        &self,
        consumer: &str,
        min_idle_ms: u64,
        max: usize,
    ) -> impl Future<Output = Result<Vec<Delivery>, StoreError>> + Send;

    /// Schedules wake-ups outside a commit (the reaper, operator replays, tests): each goes into
    /// the timers at its time and is promoted by `promote_due` when due. At most
    /// [`SCHEDULE_BATCH_MAX`] per call.
    fn schedule(
        &self,
        wakes: &[(Wake, u64)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The reaper: for records whose deadline is at or before `now_ms` (at most `max_per_shard`,
    /// at most [`REDRIVE_PER_SHARD_MAX`], per shard), enqueues a wake-up at the record's current
    /// version, ready at once, and moves the deadline to `now_ms + REAPER_SLACK_MS`; entries of
    /// records that are gone, terminal or `sent` are dropped. Each shard is one atomic step, so
    /// two reapers never re-drive the same record twice in one slack. The duplicate wake-up this
    /// makes when the original was only late is harmless (see the module doc). Call it again
    /// while it examines a full chunk.
    fn redrive_overdue(
        &self,
        now_ms: u64,
        max_per_shard: usize,
    ) -> impl Future<Output = Result<Reaped, StoreError>> + Send;

    /// Counts for operators.
    fn stats(&self) -> impl Future<Output = Result<QueueStats, StoreError>> + Send;

    /// Writes a worker's heartbeat into the shared registry (its entry replaced, keyed by id)
    /// and removes entries not refreshed for [`WORKER_FORGET_MS`].
    fn heartbeat(&self, beat: &WorkerBeat) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The registry: every worker seen within [`WORKER_FORGET_MS`], the most recently seen
    /// first, at most [`WORKERS_LIST_MAX`].
    fn workers(&self) -> impl Future<Output = Result<Vec<WorkerBeat>, StoreError>> + Send;
}

/// The error for a batch that is over its limit: a caller bug, reported rather than truncated.
pub(crate) fn over_limit(what: &str, len: usize, max: usize) -> StoreError {
    StoreError::Unavailable(format!("{what} of {len} is over the limit of {max}; split it"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_and_cap() {
        let delays: Vec<u64> = (0..9).map(|t| retry_delay_ms(t, 1_000, 60_000)).collect();
        assert_eq!(delays, [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000]);
        assert_eq!(retry_delay_ms(200, 1_000, 60_000), 60_000);
        assert_eq!(retry_delay_ms(0, 0, 60_000), 0);
    }

    #[test]
    fn timer_members_round_trip() {
        assert_eq!(timer_member("acme/n1/3", 0), "acme/n1/3");
        assert_eq!(timer_member("acme/n1/3", 2), "acme/n1/3#2");
        assert_eq!(parse_timer_member("acme/n1/3#2"), ("acme/n1/3", 2));
        assert_eq!(parse_timer_member("acme/n1/3"), ("acme/n1/3", 0));
    }

    #[test]
    fn deadlines_follow_the_wake_up_and_skip_settled_states() {
        let slack = REAPER_SLACK_MS;
        assert_eq!(deadline_ms(StateKind::Deferred, Some(9_000), 1_000), Some(9_000 + slack));
        // A wake-up in the past (a skewed clock) counts from now.
        assert_eq!(deadline_ms(StateKind::Received, Some(500), 1_000), Some(1_000 + slack));
        // Waiting on a worker with nothing to wake it: the reaper will, one slack from now.
        assert_eq!(deadline_ms(StateKind::Failed, None, 1_000), Some(1_000 + slack));
        for kind in StateKind::ALL {
            let expected = !kind.is_terminal() && kind != StateKind::Sent;
            assert_eq!(has_deadline(kind), expected, "{kind}");
            assert_eq!(deadline_ms(kind, Some(2_000), 1_000).is_some(), expected, "{kind}");
        }
        assert_eq!(deadline_ms(StateKind::Sent, Some(2_000), 1_000), None);
    }

    #[test]
    fn deadline_members_round_trip() {
        let tenant = TenantId::new("acme").unwrap();
        let id = NotificationId::new("n01abc").unwrap();
        assert_eq!(deadline_member(&tenant, &id), "acme/n01abc");
        assert_eq!(parse_deadline_member("acme/n01abc"), Some((tenant, id)));
        assert_eq!(parse_deadline_member("acme"), None);
        assert_eq!(parse_deadline_member("acme/n01abc/3"), None);
    }

    #[test]
    fn tags_display_without_payload() {
        let tag = DeliveryTag(TagInner::Stream { shard: 10, entry: "1-0".into() });
        assert_eq!(tag.to_string(), "s0a/1-0");
        assert_eq!(DeliveryTag(TagInner::Memory { seq: 7 }).to_string(), "m/7");
    }
}
