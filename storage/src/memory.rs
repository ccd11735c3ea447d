//! The in-memory store and wake-up queue: the simulator's and dev mode's storage.
//!
//! One `std::sync::Mutex` around plain `BTreeMap`s: every operation is one short critical section
//! with no await inside, which is what makes each operation atomic (as a Lua script is on Redis)
//! and keeps this module free of tokio. `BTreeMap` everywhere, never `HashMap`, so iteration
//! order, and with it everything the simulator observes, is deterministic.
//!
//! The semantics follow the Redis store in everything the conformance suite checks
//! (`conformance`): compare-and-set on the version, capped history, state indexes, the DLQ,
//! idempotency with fingerprints, the recipients' limit windows, the inbox, the queue, the deadline
//! index the reaper reads, the recipients directory (`memory/directory.rs`) and the template
//! registry (`memory/templates.rs`).

mod directory;
mod feed;
mod inbox;
mod templates;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::{Future, ready};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use steps::collapse::{self, COLLAPSE_KEEP_MS, Groups, Joined, Merged};
use steps::limits::{self, Admission, Counted, Window};
use steps::model::{NotificationId, ProviderName, TenantId};
use steps::rate::{Pacer, SendRate, SendSlot};
use workflows::campaign::CampaignId;
use workflows::dlq::{DLQ_SCAN_MAX, DlqFilter, DlqPage, Truncated};
use workflows::listing::ListPager;
use workflows::machine::StateKind;
use workflows::ports::{
    ApiKey, Claimed, Clock, Collapse, CollapseGroup, CreatedOnce, Dedup, EventKey, HISTORY_LEN_MAX,
    LimitWindows, ListCursor, ListPage, ListQuery, Purged, RecipientKey, Store, StoreError,
    StoredItem, StoredResponse,
};
use workflows::record::{Commit, CommitOutcome, Created, HistoryEntry, Idempotency, Record, Wake};
use workflows::transitions::{PUBLISH_BATCH_MAX, Transition, TransitionFeed};

use crate::keys;
use crate::queue::{
    BLOCK_MS_MAX, Delivery, DeliveryTag, FETCH_MAX, PROMOTE_PER_SHARD_MAX, QueueStats,
    REAPER_SLACK_MS, REDRIVE_PER_SHARD_MAX, Reaped, Retried, SCHEDULE_BATCH_MAX, TRIES_MAX,
    TagInner, WORKER_FORGET_MS, WORKERS_LIST_MAX, WakeQueue, WorkerBeat, deadline_member,
    deadline_ms, has_deadline, over_limit, parse_deadline_member, parse_timer_member, timer_member,
};

mod campaigns;
mod stats;

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_TTL_MS: u64 = 24 * 60 * 60 * 1_000;

/// The system clock, for dev mode and the server. The simulator passes its virtual clock instead.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        since.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// The in-memory store, inbox and wake-up queue. A cheap handle: clones share the data.
#[derive(Clone)]
pub struct MemoryStore {
    /// Everything, behind one lock (see the module doc for why one).
    inner: Arc<Mutex<Inner>>,
    /// The clock of the queue (retry times, reclaim idle times).
    clock: Arc<dyn Clock>,
    /// The template registry, behind its own lock (`memory/templates.rs`).
    templates: Arc<templates::RegistryLock>,
    /// The in-app inboxes and their feed, behind their own lock (`memory/inbox.rs`).
    inbox: Arc<inbox::Inboxes>,
    /// The transition feed's subscribers (`memory/feed.rs`): in-process, for dev mode.
    transitions: Arc<feed::Feed<Transition>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("MemoryStore")
            .field("tenants", &inner.tenants.len())
            .field("ready", &inner.queue.ready.len())
            .field("scheduled", &inner.queue.timers.len())
            .field("pending", &inner.queue.pending.len())
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

/// One notification's stored data.
#[derive(Debug)]
struct Slot {
    /// The record.
    record: Record,
    /// Its history, oldest first, at most [`HISTORY_LEN_MAX`].
    history: VecDeque<HistoryEntry>,
    /// When it entered the DLQ, while it is dead-lettered.
    dead_lettered_at_ms: Option<u64>,
    /// The idempotency key it was created with, if any (a purge forgets the key too).
    idempotency_key: Option<String>,
    /// The campaign that created it, if any: its counters follow the record's state.
    campaign: Option<CampaignId>,
    /// What its collapse group merged, once it closed the group.
    merged: Option<Merged>,
}

/// A remembered idempotency key.
#[derive(Debug)]
struct IdempotencyEntry {
    /// What the key holds.
    value: KeyValue,
    /// When it is forgotten.
    expires_at_ms: u64,
}

/// What an idempotency key holds.
#[derive(Debug)]
enum KeyValue {
    /// The notification created with it, in the create itself.
    Created {
        /// The notification.
        id: NotificationId,
        /// The request fingerprint it came with.
        fingerprint: String,
    },
    /// A claim ([`Dedup::claim_key`]): pending until `until_ms`, or done with its answer.
    Claim {
        /// The request fingerprint it came with.
        fingerprint: String,
        /// When a pending claim's lease runs out.
        until_ms: u64,
        /// The answer, once finished.
        response: Option<StoredResponse>,
    },
}

impl KeyValue {
    fn fingerprint(&self) -> &str {
        match self {
            KeyValue::Created { fingerprint, .. } | KeyValue::Claim { fingerprint, .. } => {
                fingerprint
            }
        }
    }

    /// The (first) notification it names, if it names one.
    fn id(&self) -> Option<&NotificationId> {
        match self {
            KeyValue::Created { id, .. } => Some(id),
            KeyValue::Claim { response, .. } => response.as_ref()?.items.first().map(|i| &i.id),
        }
    }
}

/// What a create came to (before it is told apart for [`Store::create`] and
/// [`Dedup::create_once`]).
enum CreateReply {
    New,
    /// The idempotency key was used before: what it holds.
    KeyUsed {
        id: Option<NotificationId>,
        same_request: bool,
    },
    /// The event was seen within its window.
    Duplicate(NotificationId),
    IdTaken,
}

/// What a create checks besides the id: an idempotency key, or an event.
#[derive(Clone, Copy)]
enum Once<'a> {
    None,
    Key(&'a Idempotency),
    Event(&'a EventKey, u64),
}

/// A wake-up in the queue.
#[derive(Debug, Clone)]
struct Entry {
    /// The wake-up.
    wake: Wake,
    /// Infrastructure failures so far.
    tries: u32,
}

/// A fetched, unsettled wake-up.
#[derive(Debug)]
struct Pending {
    /// The wake-up.
    entry: Entry,
    /// Who holds it.
    consumer: String,
    /// When it was (re)delivered: the reclaim idle time counts from here.
    delivered_at_ms: u64,
}

/// A sorted set of members by score, as a Redis ZSET: one score per member, walked in (score,
/// member) order like `ZRANGEBYSCORE`. The timers and the deadline index are both one.
#[derive(Debug, Default)]
struct ScoreSet {
    /// Each member's score.
    scores: BTreeMap<String, u64>,
    /// The same, ordered by (score, member).
    order: BTreeSet<(u64, String)>,
}

impl ScoreSet {
    /// Adds `member` at `score`, or moves it there.
    fn insert(&mut self, member: String, score: u64) {
        if let Some(old) = self.scores.insert(member.clone(), score) {
            self.order.remove(&(old, member.clone()));
        }
        self.order.insert((score, member));
    }

    /// Removes `member`, if there.
    fn remove(&mut self, member: &str) {
        if let Some(score) = self.scores.remove(member) {
            self.order.remove(&(score, member.to_owned()));
        }
    }

    fn len(&self) -> usize {
        self.scores.len()
    }

    /// The lowest score.
    fn first_score(&self) -> Option<u64> {
        self.order.first().map(|(score, _)| *score)
    }

    /// How many members score at or below `max`.
    fn count_up_to(&self, max: u64) -> usize {
        self.order.iter().take_while(|(score, _)| *score <= max).count()
    }

    /// The members scoring at or below `max`, lowest first, at most `per_shard` of each shard
    /// (`shard_of` says which): one bounded `ZRANGEBYSCORE … LIMIT` per shard, as on Redis.
    fn due_per_shard(
        &self,
        max: u64,
        per_shard: usize,
        shard_of: impl Fn(&str) -> u16,
    ) -> Vec<(u64, String)> {
        let mut taken = [0_usize; keys::SHARDS as usize];
        let mut due = Vec::new();
        for (score, member) in &self.order {
            if *score > max || taken.iter().all(|&n| n >= per_shard) {
                break;
            }
            let shard = usize::from(shard_of(member));
            if taken[shard] < per_shard {
                taken[shard] += 1;
                due.push((*score, member.clone()));
            }
        }
        due
    }
}

/// The queue, shaped like its Redis counterpart (ready stream, timers set, pending list).
#[derive(Debug, Default)]
struct MemQueue {
    /// The next entry's sequence number (the stand-in for a stream entry id).
    next_seq: u64,
    /// Due wake-ups in arrival order: sequence number, when it arrived in ready, the entry.
    ready: VecDeque<(u64, u64, Entry)>,
    /// Timer members and their due time.
    timers: ScoreSet,
    /// Fetched and unsettled, by sequence number.
    pending: BTreeMap<u64, Pending>,
    /// Parked wake keys and when they were parked.
    parked: BTreeMap<String, u64>,
}

impl MemQueue {
    /// Appends to ready an entry arriving at `now_ms` (what a stream entry id records on Redis).
    fn push_ready(&mut self, entry: Entry, now_ms: u64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.ready.push_back((seq, now_ms, entry));
    }

    /// Enqueues the wake-up of a create or commit: ready if due at `now_ms`, a timer otherwise.
    fn enqueue(&mut self, wake: Wake, at_ms: u64, now_ms: u64) {
        if at_ms <= now_ms {
            self.push_ready(Entry { wake, tries: 0 }, now_ms);
        } else {
            self.timers.insert(timer_member(&wake.key(), 0), at_ms);
        }
    }
}

/// All data.
#[derive(Debug, Default)]
struct Inner {
    /// Notifications by tenant and id.
    tenants: BTreeMap<TenantId, BTreeMap<NotificationId, Slot>>,
    /// Idempotency keys by tenant and key.
    idempotency: BTreeMap<(TenantId, String), IdempotencyEntry>,
    /// Events seen: the notification each made, and when the event is forgotten.
    events: BTreeMap<EventKey, (NotificationId, u64)>,
    /// Collapse groups.
    collapse: BTreeMap<CollapseGroup, Groups>,
    /// Each recipient's limit windows, by `Limit::name`.
    limits: BTreeMap<RecipientKey, BTreeMap<String, Counted>>,
    pacers: BTreeMap<ProviderName, Pacer>,
    /// API keys by key id.
    api_keys: BTreeMap<String, ApiKey>,
    /// The recipients directory (see `directory`).
    recipients: directory::Recipients,
    /// The wake-up queue.
    queue: MemQueue,
    /// The deadline index: `tenant/id` of every record waiting on a worker, by when it is
    /// overdue (`queue::deadline_ms`).
    deadlines: ScoreSet,
    /// Campaigns, their due index and their notifications' counters (`memory::campaigns`).
    campaigns: campaigns::Data,
    /// The worker registry, by worker id.
    workers: BTreeMap<String, WorkerBeat>,
    /// Delivery statistics by tenant and minute (`memory::stats`).
    stats: stats::Minutes,
}

impl Inner {
    /// Records in the dead-letter queue, every tenant's.
    fn dead_lettered(&self) -> usize {
        let slots = self.tenants.values().flat_map(BTreeMap::values);
        slots.filter(|slot| slot.dead_lettered_at_ms.is_some()).count()
    }
}

impl Inner {
    /// Writes a record's deadline, or drops it for a state that has none.
    fn set_deadline(&mut self, tenant: &TenantId, id: &NotificationId, deadline_ms: Option<u64>) {
        let member = deadline_member(tenant, id);
        match deadline_ms {
            Some(at_ms) => self.deadlines.insert(member, at_ms),
            None => self.deadlines.remove(&member),
        }
    }
}

fn memory_tag(seq: u64) -> DeliveryTag {
    DeliveryTag(TagInner::Memory { seq })
}

fn memory_seq(delivery: &Delivery) -> Option<u64> {
    match delivery.tag.0 {
        TagInner::Memory { seq } => Some(seq),
        TagInner::Stream { .. } => None,
    }
}

/// Newest first, as the Redis indexes order them: by time, ties by id, both descending.
fn newest_first(items: &mut [(u64, &Record)]) {
    items.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.id.cmp(&a.1.id)));
}

impl MemoryStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty store whose queue reads `clock` (the simulator's virtual clock).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner::default())),
            clock,
            templates: Arc::default(),
            inbox: Arc::default(),
            transitions: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding the lock, so a poisoned lock still holds consistent data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn create_now(
        &self,
        record: &Record,
        first: &HistoryEntry,
        once: Once<'_>,
        campaign: Option<&CampaignId>,
    ) -> CreateReply {
        let mut inner = self.lock();
        let now_ms = record.created_at_ms;
        match once {
            Once::Key(idem) => {
                let key = (record.tenant.clone(), idem.key.clone());
                if let Some(entry) = inner.idempotency.get(&key)
                    && entry.expires_at_ms > now_ms
                {
                    let same_request = entry.value.fingerprint() == idem.fingerprint;
                    let id = entry.value.id().cloned();
                    return CreateReply::KeyUsed { id, same_request };
                }
            }
            Once::Event(event, _) => {
                if let Some((id, expires_at_ms)) = inner.events.get(event)
                    && *expires_at_ms > now_ms
                {
                    return CreateReply::Duplicate(id.clone());
                }
            }
            Once::None => {}
        }
        let idempotency = match once {
            Once::Key(idem) => Some(idem),
            _ => None,
        };
        let tenant = inner.tenants.entry(record.tenant.clone()).or_default();
        if tenant.contains_key(&record.id) {
            // Never overwrite: an id collision is refused.
            return CreateReply::IdTaken;
        }
        let dead = (record.state.kind() == StateKind::DeadLettered).then_some(record.updated_at_ms);
        tenant.insert(
            record.id.clone(),
            Slot {
                record: record.clone(),
                history: VecDeque::from([first.clone()]),
                dead_lettered_at_ms: dead,
                idempotency_key: idempotency.map(|i| i.key.clone()),
                campaign: campaign.cloned(),
                merged: None,
            },
        );
        if let Some(campaign) = campaign {
            inner.campaigns.counted(&record.tenant, campaign, &record.id, None, &record.state);
        }
        if let Some(at_ms) = record.wake_at_ms {
            let wake = Wake {
                tenant: record.tenant.clone(),
                id: record.id.clone(),
                version: record.version,
            };
            inner.queue.enqueue(wake, at_ms, now_ms);
        }
        let deadline = deadline_ms(record.state.kind(), record.wake_at_ms, now_ms);
        inner.set_deadline(&record.tenant, &record.id, deadline);
        match once {
            Once::Key(idem) => {
                inner.idempotency.insert(
                    (record.tenant.clone(), idem.key.clone()),
                    IdempotencyEntry {
                        value: KeyValue::Created {
                            id: record.id.clone(),
                            fingerprint: idem.fingerprint.clone(),
                        },
                        expires_at_ms: now_ms.saturating_add(IDEMPOTENCY_TTL_MS),
                    },
                );
            }
            Once::Event(event, window_ms) => {
                let expires_at_ms = now_ms.saturating_add(window_ms);
                inner.events.insert(event.clone(), (record.id.clone(), expires_at_ms));
            }
            Once::None => {}
        }
        CreateReply::New
    }

    fn claim_now(
        &self,
        tenant: &TenantId,
        idem: &Idempotency,
        now_ms: u64,
        lease_ms: u64,
    ) -> Claimed {
        let mut inner = self.lock();
        let key = (tenant.clone(), idem.key.clone());
        let until_ms = now_ms.saturating_add(lease_ms);
        match inner.idempotency.get_mut(&key).filter(|e| e.expires_at_ms > now_ms) {
            None => {
                let value = KeyValue::Claim {
                    fingerprint: idem.fingerprint.clone(),
                    until_ms,
                    response: None,
                };
                let expires_at_ms = now_ms.saturating_add(IDEMPOTENCY_TTL_MS);
                inner.idempotency.insert(key, IdempotencyEntry { value, expires_at_ms });
                Claimed::Held
            }
            Some(entry) if entry.value.fingerprint() != idem.fingerprint => {
                Claimed::Reused { id: entry.value.id().cloned() }
            }
            Some(entry) => match &mut entry.value {
                KeyValue::Created { id, .. } => Claimed::Done {
                    response: StoredResponse {
                        items: vec![StoredItem { id: id.clone(), deduplicated: false }],
                    },
                },
                KeyValue::Claim { response: Some(response), .. } => {
                    Claimed::Done { response: response.clone() }
                }
                KeyValue::Claim { until_ms: held_until, response: None, .. } => {
                    if *held_until > now_ms {
                        Claimed::InFlight { until_ms: *held_until }
                    } else {
                        // The holder's lease ran out: it is taken for dead, this caller takes
                        // over (what it did is idempotent, so doing it again is safe).
                        *held_until = until_ms;
                        Claimed::Held
                    }
                }
            },
        }
    }

    fn finish_now(
        &self,
        tenant: &TenantId,
        idem: &Idempotency,
        response: &StoredResponse,
        now_ms: u64,
    ) {
        let mut inner = self.lock();
        let key = (tenant.clone(), idem.key.clone());
        match inner.idempotency.get_mut(&key).filter(|e| e.expires_at_ms > now_ms) {
            Some(IdempotencyEntry {
                value: KeyValue::Claim { fingerprint, response: stored @ None, .. },
                ..
            }) if *fingerprint == idem.fingerprint => {
                *stored = Some(response.clone());
            }
            Some(_) => {}
            None => {
                // The claim expired meanwhile (a request that took a day): keep the answer anyway.
                let value = KeyValue::Claim {
                    fingerprint: idem.fingerprint.clone(),
                    until_ms: now_ms,
                    response: Some(response.clone()),
                };
                let expires_at_ms = now_ms.saturating_add(IDEMPOTENCY_TTL_MS);
                inner.idempotency.insert(key, IdempotencyEntry { value, expires_at_ms });
            }
        }
    }

    fn release_now(&self, tenant: &TenantId, idem: &Idempotency) {
        let mut inner = self.lock();
        let key = (tenant.clone(), idem.key.clone());
        let pending = inner.idempotency.get(&key).is_some_and(|e| {
            matches!(&e.value, KeyValue::Claim { fingerprint, response: None, .. }
                if *fingerprint == idem.fingerprint)
        });
        if pending {
            inner.idempotency.remove(&key);
        }
    }

    fn commit_now(&self, commit: &Commit) -> CommitOutcome {
        let mut inner = self.lock();
        let Some(slot) = inner.tenants.get_mut(&commit.tenant).and_then(|t| t.get_mut(&commit.id))
        else {
            return CommitOutcome::NotFound;
        };
        if slot.record.version != commit.expected_version {
            return CommitOutcome::Conflict { current: slot.record.version };
        }
        let version = commit.expected_version + 1;
        let campaign = slot.campaign.clone().map(|c| (c, slot.record.state.clone()));
        let was_dead = slot.record.state.kind() == StateKind::DeadLettered;
        let is_dead = commit.state.kind() == StateKind::DeadLettered;
        slot.record.version = version;
        slot.record.state = commit.state.clone();
        slot.record.updated_at_ms = commit.now_ms;
        slot.record.wake_at_ms = commit.wake_at_ms;
        if let Some(replay) = &commit.replay {
            slot.record.replay = Some(replay.clone());
        }
        for entry in &commit.history {
            slot.history.push_back(entry.clone());
        }
        while slot.history.len() > HISTORY_LEN_MAX {
            slot.history.pop_front();
        }
        match (was_dead, is_dead) {
            (false, true) => slot.dead_lettered_at_ms = Some(commit.now_ms),
            (true, false) => slot.dead_lettered_at_ms = None,
            _ => {}
        }
        if let Some(at_ms) = commit.wake_at_ms {
            let wake = Wake { tenant: commit.tenant.clone(), id: commit.id.clone(), version };
            inner.queue.enqueue(wake, at_ms, commit.now_ms);
        }
        let deadline = deadline_ms(commit.state.kind(), commit.wake_at_ms, commit.now_ms);
        inner.set_deadline(&commit.tenant, &commit.id, deadline);
        if let Some((campaign, old)) = campaign {
            let (tenant, id) = (&commit.tenant, &commit.id);
            inner.campaigns.counted(tenant, &campaign, id, Some(&old), &commit.state);
        }
        CommitOutcome::Committed { version }
    }

    /// The index walk of the Redis store, over the tenant's records: newest first by
    /// `(updated_at_ms, id)`, from the query's cursor inside its time window, through the pager.
    fn list_now(&self, tenant: &TenantId, query: &ListQuery) -> ListPage {
        let inner = self.lock();
        let Some(slots) = inner.tenants.get(tenant) else { return ListPage::default() };
        let (from_ms, to_ms) = query.window_ms();
        let mut items: Vec<(u64, &Record)> = slots
            .values()
            .map(|s| &s.record)
            .filter(|r| query.state.is_none_or(|k| r.state.kind() == k))
            .filter(|r| (from_ms..=to_ms).contains(&r.updated_at_ms))
            .filter(|r| query.cursor.as_ref().is_none_or(|c| c.precedes(r.updated_at_ms, &r.id)))
            .map(|r| (r.updated_at_ms, r))
            .collect();
        newest_first(&mut items);
        let mut pager = ListPager::new(query);
        let mut entries = items.into_iter();
        for (_, record) in entries.by_ref() {
            if !pager.offer(ListCursor::of(record), Some(record.clone())) {
                break;
            }
        }
        pager.finish(entries.next().is_some())
    }

    fn dead_letters_now(&self, tenant: &TenantId, filter: &DlqFilter, now_ms: u64) -> DlqPage {
        let inner = self.lock();
        let Some(slots) = inner.tenants.get(tenant) else { return DlqPage::default() };
        let limit = filter.limit_capped();
        // The DLQ (or the named ids in it) in the filter's age window, newest first, as the Redis
        // store walks its index.
        let (from_ms, to_ms) = filter.window_ms(now_ms);
        let mut items: Vec<(u64, &Record)> = slots
            .values()
            .filter(|s| filter.ids.is_empty() || filter.ids.contains(&s.record.id))
            .filter_map(|s| s.dead_lettered_at_ms.map(|at| (at, &s.record)))
            .filter(|(at, _)| (from_ms..=to_ms).contains(at))
            .collect();
        newest_first(&mut items);
        let mut page = DlqPage::default();
        for (_, record) in &items {
            if page.records.len() >= limit {
                page.truncated = Some(Truncated::Limit);
                break;
            }
            if page.scanned >= DLQ_SCAN_MAX {
                page.truncated = Some(Truncated::Scan);
                break;
            }
            page.scanned += 1;
            if filter.matches(record, now_ms) {
                page.records.push((*record).clone());
            }
        }
        page
    }

    fn purge_now(&self, tenant: &TenantId, id: &NotificationId, expected_version: u64) -> Purged {
        let mut inner = self.lock();
        let Some(slots) = inner.tenants.get_mut(tenant) else { return Purged::NotFound };
        let Some(slot) = slots.get(id) else { return Purged::NotFound };
        if slot.record.version != expected_version {
            return Purged::Conflict { current: slot.record.version };
        }
        let (key, campaign) = slots
            .remove(id)
            .map(|slot| (slot.idempotency_key, slot.campaign.map(|c| (c, slot.record.state))))
            .unwrap_or_default();
        if let Some((campaign, state)) = campaign {
            inner.campaigns.uncounted(tenant, &campaign, id, &state);
        }
        if let Some(key) = key {
            let key = (tenant.clone(), key);
            // Only while the key still names this notification (it may have expired and been
            // reused since).
            if inner.idempotency.get(&key).is_some_and(|entry| {
                matches!(&entry.value, KeyValue::Created { id: created, .. } if created == id)
            }) {
                inner.idempotency.remove(&key);
            }
        }
        Purged::Done
    }

    fn fetch_now(&self, consumer: &str, max: usize) -> Vec<Delivery> {
        let now_ms = self.clock.now_ms();
        let mut inner = self.lock();
        let queue = &mut inner.queue;
        let mut out = Vec::new();
        while out.len() < max.min(FETCH_MAX) {
            let Some((seq, _, entry)) = queue.ready.pop_front() else { break };
            out.push(Delivery {
                wake: entry.wake.clone(),
                tag: memory_tag(seq),
                tries: entry.tries,
            });
            let pending = Pending { entry, consumer: consumer.to_owned(), delivered_at_ms: now_ms };
            queue.pending.insert(seq, pending);
        }
        out
    }

    fn retry_now(&self, delivery: &Delivery, delay_ms: u64) -> Retried {
        let now_ms = self.clock.now_ms();
        let mut inner = self.lock();
        let queue = &mut inner.queue;
        let Some(pending) = memory_seq(delivery).and_then(|seq| queue.pending.remove(&seq)) else {
            return Retried::AlreadySettled;
        };
        let tries = pending.entry.tries.saturating_add(1);
        let key = pending.entry.wake.key();
        if tries >= TRIES_MAX {
            tracing::warn!(
                notification_id = %pending.entry.wake.id,
                tries,
                "Wake-up failed too often; parked for an operator."
            );
            queue.parked.insert(key, now_ms);
            return Retried::Parked;
        }
        let at_ms = now_ms.saturating_add(delay_ms);
        queue.timers.insert(timer_member(&key, tries), at_ms);
        Retried::Scheduled { at_ms, tries }
    }

    fn promote_now(&self, now_ms: u64, max_per_shard: usize) -> usize {
        let max_per_shard = max_per_shard.min(PROMOTE_PER_SHARD_MAX);
        let mut inner = self.lock();
        let queue = &mut inner.queue;
        // A member that does not parse is parked below, as Redis parks what it cannot read.
        let due = queue.timers.due_per_shard(now_ms, max_per_shard, |member| {
            Wake::parse_key(parse_timer_member(member).0).map_or(0, |w| keys::shard_for(&w.id))
        });
        for (_, member) in &due {
            queue.timers.remove(member);
            let (key, tries) = parse_timer_member(member);
            match Wake::parse_key(key) {
                Some(wake) => queue.push_ready(Entry { wake, tries }, now_ms),
                None => {
                    queue.parked.insert(key.to_owned(), now_ms);
                }
            }
        }
        due.len()
    }

    fn redrive_now(&self, now_ms: u64, max_per_shard: usize) -> Reaped {
        let max_per_shard = max_per_shard.clamp(1, REDRIVE_PER_SHARD_MAX);
        let mut inner = self.lock();
        let due = inner.deadlines.due_per_shard(now_ms, max_per_shard, |member| {
            parse_deadline_member(member).map_or(0, |(_, id)| keys::shard_for(&id))
        });
        let mut reaped = Reaped::default();
        for (_, member) in due {
            let waiting = parse_deadline_member(&member).and_then(|(tenant, id)| {
                let record = &inner.tenants.get(&tenant)?.get(&id)?.record;
                has_deadline(record.state.kind()).then_some(Wake {
                    version: record.version,
                    tenant,
                    id,
                })
            });
            match waiting {
                Some(wake) => {
                    inner.queue.push_ready(Entry { wake, tries: 0 }, now_ms);
                    inner.deadlines.insert(member, now_ms.saturating_add(REAPER_SLACK_MS));
                    reaped.redriven += 1;
                }
                None => {
                    inner.deadlines.remove(&member);
                    reaped.cleared += 1;
                }
            }
        }
        reaped
    }

    fn reclaim_now(&self, consumer: &str, min_idle_ms: u64, max: usize) -> Vec<Delivery> {
        let now_ms = self.clock.now_ms();
        let mut inner = self.lock();
        let mut out = Vec::new();
        for (seq, pending) in &mut inner.queue.pending {
            if out.len() >= max.min(FETCH_MAX) {
                break;
            }
            if now_ms.saturating_sub(pending.delivered_at_ms) >= min_idle_ms {
                pending.consumer = consumer.to_owned();
                pending.delivered_at_ms = now_ms;
                out.push(Delivery {
                    wake: pending.entry.wake.clone(),
                    tag: memory_tag(*seq),
                    tries: pending.entry.tries,
                });
            }
        }
        out
    }

    /// When the earliest timer is due, if any: lets a simulator jump its virtual clock straight
    /// to the next thing that can happen.
    pub fn next_timer_due_ms(&self) -> Option<u64> {
        self.lock().queue.timers.first_score()
    }

    /// When the earliest deadline falls, if any record waits on a worker: lets a simulator that
    /// runs the reaper jump to the moment a lost wake-up becomes overdue.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.lock().deadlines.first_score()
    }

    /// Who holds each pending delivery, for tests and the ops view: (tag, consumer).
    pub fn pending_consumers(&self) -> Vec<(DeliveryTag, String)> {
        let inner = self.lock();
        inner.queue.pending.iter().map(|(seq, p)| (memory_tag(*seq), p.consumer.clone())).collect()
    }
}

impl Store for MemoryStore {
    fn create(
        &self,
        record: &Record,
        first: &HistoryEntry,
        idempotency: Option<&Idempotency>,
    ) -> impl Future<Output = Result<Created, StoreError>> + Send {
        let once = idempotency.map_or(Once::None, Once::Key);
        let created = match self.create_now(record, first, once, None) {
            CreateReply::New => Created::New,
            CreateReply::KeyUsed { id, same_request } => Created::Existing {
                // A key whose claim is still pending names no notification yet.
                same_request: same_request && id.is_some(),
                id: id.unwrap_or_else(|| record.id.clone()),
            },
            CreateReply::Duplicate(id) => Created::Existing { id, same_request: false },
            CreateReply::IdTaken => {
                Created::Existing { id: record.id.clone(), same_request: false }
            }
        };
        ready(Ok(created))
    }

    fn load(
        &self,
        tenant: &TenantId,
        id: &NotificationId,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send {
        let inner = self.lock();
        let record = inner.tenants.get(tenant).and_then(|t| t.get(id)).map(|s| s.record.clone());
        ready(Ok(record))
    }

    fn commit(
        &self,
        commit: &Commit,
    ) -> impl Future<Output = Result<CommitOutcome, StoreError>> + Send {
        ready(Ok(self.commit_now(commit)))
    }

    fn history(
        &self,
        tenant: &TenantId,
        id: &NotificationId,
    ) -> impl Future<Output = Result<Vec<HistoryEntry>, StoreError>> + Send {
        let inner = self.lock();
        let history = inner
            .tenants
            .get(tenant)
            .and_then(|t| t.get(id))
            .map(|s| s.history.iter().cloned().collect())
            .unwrap_or_default();
        ready(Ok(history))
    }

    fn list(
        &self,
        tenant: &TenantId,
        query: &ListQuery,
    ) -> impl Future<Output = Result<ListPage, StoreError>> + Send {
        ready(Ok(self.list_now(tenant, query)))
    }

    fn dead_letters(
        &self,
        tenant: &TenantId,
        filter: &DlqFilter,
        now_ms: u64,
    ) -> impl Future<Output = Result<DlqPage, StoreError>> + Send {
        ready(Ok(self.dead_letters_now(tenant, filter, now_ms)))
    }

    fn purge(
        &self,
        tenant: &TenantId,
        id: &NotificationId,
        expected_version: u64,
    ) -> impl Future<Output = Result<Purged, StoreError>> + Send {
        ready(Ok(self.purge_now(tenant, id, expected_version)))
    }

    fn send_slot(
        &self,
        provider: &ProviderName,
        rate: &SendRate,
        now_ms: u64,
        wait_ms_max: u64,
    ) -> impl Future<Output = Result<SendSlot, StoreError>> + Send {
        let mut inner = self.lock();
        let slot =
            inner.pacers.entry(provider.clone()).or_default().reserve(rate, now_ms, wait_ms_max);
        ready(Ok(slot))
    }

    fn put_api_key(
        &self,
        key_id: &str,
        key: &ApiKey,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.lock().api_keys.insert(key_id.to_owned(), key.clone());
        ready(Ok(()))
    }

    fn api_key(
        &self,
        key_id: &str,
    ) -> impl Future<Output = Result<Option<ApiKey>, StoreError>> + Send {
        ready(Ok(self.lock().api_keys.get(key_id).cloned()))
    }
}

impl TransitionFeed for MemoryStore {
    fn publish_transitions(
        &self,
        transitions: &[Transition],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        assert!(transitions.len() <= PUBLISH_BATCH_MAX, "a publish batch is bounded");
        for transition in transitions {
            self.transitions.publish(transition.clone());
        }
        ready(Ok(()))
    }

    fn transition_feed(
        &self,
    ) -> impl Future<Output = Result<futures::stream::BoxStream<'static, Transition>, StoreError>> + Send
    {
        ready(Ok(self.transitions.subscribe()))
    }
}

impl Dedup for MemoryStore {
    fn claim_key(
        &self,
        tenant: &TenantId,
        idempotency: &Idempotency,
        now_ms: u64,
        lease_ms: u64,
    ) -> impl Future<Output = Result<Claimed, StoreError>> + Send {
        ready(Ok(self.claim_now(tenant, idempotency, now_ms, lease_ms)))
    }

    fn finish_key(
        &self,
        tenant: &TenantId,
        idempotency: &Idempotency,
        response: &StoredResponse,
        now_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.finish_now(tenant, idempotency, response, now_ms);
        ready(Ok(()))
    }

    fn release_key(
        &self,
        tenant: &TenantId,
        idempotency: &Idempotency,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.release_now(tenant, idempotency);
        ready(Ok(()))
    }

    fn create_once(
        &self,
        record: &Record,
        first: &HistoryEntry,
        event: &EventKey,
        window_ms: u64,
    ) -> impl Future<Output = Result<CreatedOnce, StoreError>> + Send {
        let created = match self.create_now(record, first, Once::Event(event, window_ms), None) {
            CreateReply::New => CreatedOnce::New,
            CreateReply::Duplicate(id) => CreatedOnce::Duplicate { id },
            CreateReply::IdTaken | CreateReply::KeyUsed { .. } => CreatedOnce::IdTaken,
        };
        ready(Ok(created))
    }
}

impl Collapse for MemoryStore {
    fn collapse_join(
        &self,
        group: &CollapseGroup,
        member: &NotificationId,
        data: &serde_json::Map<String, serde_json::Value>,
        window_ms: u64,
        now_ms: u64,
    ) -> impl Future<Output = Result<Joined, StoreError>> + Send {
        let mut inner = self.lock();
        let groups = inner.collapse.entry(group.clone()).or_default();
        ready(Ok(collapse::join(groups, member, data, window_ms, COLLAPSE_KEEP_MS, now_ms)))
    }

    fn collapse_close(
        &self,
        group: &CollapseGroup,
        survivor: &NotificationId,
        now_ms: u64,
    ) -> impl Future<Output = Result<Option<Merged>, StoreError>> + Send {
        let mut inner = self.lock();
        let merged = inner
            .collapse
            .get_mut(group)
            .and_then(|groups| collapse::close(groups, survivor, now_ms));
        ready(Ok(merged))
    }

    fn collapse_member(
        &self,
        group: &CollapseGroup,
        member: &NotificationId,
        now_ms: u64,
    ) -> impl Future<Output = Result<Option<NotificationId>, StoreError>> + Send {
        let inner = self.lock();
        let survivor = inner
            .collapse
            .get(group)
            .and_then(|groups| collapse::member_of(groups, member, now_ms));
        ready(Ok(survivor))
    }

    fn keep_merged(
        &self,
        tenant: &TenantId,
        id: &NotificationId,
        merged: &Merged,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let mut inner = self.lock();
        if let Some(slot) = inner.tenants.get_mut(tenant).and_then(|t| t.get_mut(id)) {
            slot.merged.get_or_insert_with(|| merged.clone());
        }
        ready(Ok(()))
    }

    fn merged(
        &self,
        tenant: &TenantId,
        id: &NotificationId,
    ) -> impl Future<Output = Result<Option<Merged>, StoreError>> + Send {
        let inner = self.lock();
        let merged =
            inner.tenants.get(tenant).and_then(|t| t.get(id)).and_then(|s| s.merged.clone());
        ready(Ok(merged))
    }
}

impl LimitWindows for MemoryStore {
    fn acquire_windows(
        &self,
        key: &RecipientKey,
        member: &NotificationId,
        windows: &[Window],
        now_ms: u64,
    ) -> impl Future<Output = Result<Admission, StoreError>> + Send {
        if windows.len() > limits::WINDOWS_MAX {
            return ready(Err(over_limit("a window set", windows.len(), limits::WINDOWS_MAX)));
        }
        let mut inner = self.lock();
        let counted = inner.limits.entry(key.clone()).or_default();
        ready(Ok(limits::admit(counted, windows, member.as_str(), now_ms)))
    }

    fn window_usage(
        &self,
        key: &RecipientKey,
        windows: &[Window],
        now_ms: u64,
    ) -> impl Future<Output = Result<Vec<u32>, StoreError>> + Send {
        let inner = self.lock();
        let usage = match inner.limits.get(key) {
            Some(counted) => limits::usage(counted, windows, now_ms),
            None => vec![0; windows.len()],
        };
        ready(Ok(usage))
    }
}

impl WakeQueue for MemoryStore {
    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    fn fetch(
        &self,
        consumer: &str,
        max: usize,
        block_ms: u64,
    ) -> impl Future<Output = Result<Vec<Delivery>, StoreError>> + Send {
        // Never waits: the simulator drives time, and the backend polls on its own schedule.
        debug_assert!(block_ms <= BLOCK_MS_MAX);
        ready(Ok(self.fetch_now(consumer, max)))
    }

    fn ack(&self, deliveries: &[Delivery]) -> impl Future<Output = Result<(), StoreError>> + Send {
        let mut inner = self.lock();
        for seq in deliveries.iter().filter_map(memory_seq) {
            inner.queue.pending.remove(&seq);
        }
        ready(Ok(()))
    }

    fn retry_later(
        &self,
        delivery: &Delivery,
        delay_ms: u64,
    ) -> impl Future<Output = Result<Retried, StoreError>> + Send {
        ready(Ok(self.retry_now(delivery, delay_ms)))
    }

    fn release(
        &self,
        deliveries: &[Delivery],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let now_ms = self.clock.now_ms();
        let mut inner = self.lock();
        let queue = &mut inner.queue;
        for seq in deliveries.iter().filter_map(memory_seq) {
            if let Some(pending) = queue.pending.remove(&seq) {
                queue.push_ready(pending.entry, now_ms);
            }
        }
        ready(Ok(()))
    }

    fn promote_due(
        &self,
        now_ms: u64,
        max_per_shard: usize,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send {
        ready(Ok(self.promote_now(now_ms, max_per_shard)))
    }

    fn reclaim_abandoned(
        &self,
        consumer: &str,
        min_idle_ms: u64,
        max: usize,
    ) -> impl Future<Output = Result<Vec<Delivery>, StoreError>> + Send {
        ready(Ok(self.reclaim_now(consumer, min_idle_ms, max)))
    }

    fn schedule(
        &self,
        wakes: &[(Wake, u64)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        if wakes.len() > SCHEDULE_BATCH_MAX {
            return ready(Err(over_limit("a schedule batch", wakes.len(), SCHEDULE_BATCH_MAX)));
        }
        let mut inner = self.lock();
        for (wake, at_ms) in wakes {
            inner.queue.timers.insert(timer_member(&wake.key(), 0), *at_ms);
        }
        ready(Ok(()))
    }

    fn redrive_overdue(
        &self,
        now_ms: u64,
        max_per_shard: usize,
    ) -> impl Future<Output = Result<Reaped, StoreError>> + Send {
        ready(Ok(self.redrive_now(now_ms, max_per_shard)))
    }

    fn stats(&self) -> impl Future<Output = Result<QueueStats, StoreError>> + Send {
        let now_ms = self.clock.now_ms();
        let inner = self.lock();
        let q = &inner.queue;
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let due = q.timers.count_up_to(now_ms);
        let oldest_ready = q.ready.iter().map(|(_, since_ms, _)| *since_ms).min();
        let oldest_due = q.timers.first_score().filter(|at_ms| *at_ms <= now_ms);
        ready(Ok(QueueStats {
            ready: count(q.ready.len()),
            due: count(due),
            scheduled: count(q.timers.len() - due),
            pending: count(q.pending.len()),
            parked: count(q.parked.len()),
            overdue: count(inner.deadlines.count_up_to(now_ms)),
            dead_lettered: count(inner.dead_lettered()),
            oldest_waiting_since_ms: oldest_ready.into_iter().chain(oldest_due).min(),
        }))
    }

    fn heartbeat(&self, beat: &WorkerBeat) -> impl Future<Output = Result<(), StoreError>> + Send {
        let mut inner = self.lock();
        let workers = &mut inner.workers;
        workers.insert(beat.id.clone(), beat.bounded());
        let forget_before = beat.seen_at_ms.saturating_sub(WORKER_FORGET_MS);
        workers.retain(|_, w| w.seen_at_ms >= forget_before);
        ready(Ok(()))
    }

    fn workers(&self) -> impl Future<Output = Result<Vec<WorkerBeat>, StoreError>> + Send {
        let inner = self.lock();
        let mut all: Vec<WorkerBeat> = inner.workers.values().cloned().collect();
        all.sort_by(|a, b| b.seen_at_ms.cmp(&a.seen_at_ms).then_with(|| a.id.cmp(&b.id)));
        all.truncate(WORKERS_LIST_MAX);
        ready(Ok(all))
    }
}
