//! The simulated world the ports see: virtual time, the fault dice, provider calls in flight, the
//! send ledger, the commit journal and the trace. And the ports themselves: a clock per actor, a
//! store wrapper that injects store faults and crashes, and fake providers.
//!
//! Everything here is shared by the simulator loop and the futures it polls. The loop is
//! single-threaded; the mutex only satisfies the ports' `Send + Sync` bounds and is never held
//! across a call into another port (the in-memory store reads the clock under its own lock).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use steps::collapse::{Joined, Merged};
use steps::limits::{Admission, Window};
use steps::model::TemplateId;
use steps::model::{
    Attempt, Category, Channel, NotificationId, ProviderName, RecipientId, TenantId,
};
use steps::outcome::{ErrorClass, ProviderError, SendOutcome};
use steps::preferences::Preferences;
use steps::rate::{SendRate, SendSlot};
use steps::recipient::{Contact, Device, DeviceId, RecipientEntry};
use steps::render::TemplateContent;
use workflows::campaign::CampaignId;
use workflows::dlq::{DlqFilter, DlqPage};
use workflows::machine::{Receipt, State};
use workflows::ports::{
    ApiKey, Claimed, Clock, Collapse, CollapseGroup, CreatedOnce, Dedup, DeviceAdded, Directory,
    EventKey, LimitWindows, ListQuery, Outbound, Provider, Purged, RecipientKey, RecipientPage,
    Store, StoreError, StoreFuture, StoredResponse, StoredVersion, TemplateInfo, TemplateStore,
    TemplateSummary, TemplateWrite,
};
use workflows::record::{Commit, CommitOutcome, Created, HistoryEntry, Idempotency, Record};

use crate::faults::{Fault, FaultSet};
use crate::rng::Rng;

/// Bugs planted on purpose, to prove the simulator catches them. Test-only: nothing outside the
/// simulator reads these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Planted {
    /// Commits skip the version check (the store overwrites whatever is there).
    pub no_version_check: bool,
    /// An unknown outcome is reported as retryable, so the lifecycle re-sends without
    /// reconciling and without flagging the re-send.
    pub resend_unknown_unflagged: bool,
    /// The runner never hears a provider's `Retry-After` (a provider module that drops it).
    pub retry_after_dropped: bool,
    /// The reaper never runs, so a lost wake-up leaves its notification waiting forever.
    pub no_reaper: bool,
    /// A cancelled campaign's sweep finds none of its open notifications (a store that loses the
    /// open set), so nothing of it is cancelled.
    pub campaign_sweep_lost: bool,
    /// A campaign notification's id is not derived from the campaign and the recipient alone
    /// (a counter is mixed in), so a page expanded again creates its notifications again.
    pub campaign_ids_not_derived: bool,
    /// A recipient's limits are checked and then taken in two steps, with other workers running
    /// in between (a check-then-take instead of one atomic script).
    pub non_atomic_limits: bool,
    /// A submission's event is never looked up: every submission makes a notification.
    pub no_dedup: bool,
    /// Closing a collapse group returns only the survivor's own item (a store that reads the
    /// first item and forgets the rest).
    pub collapse_drops_items: bool,
    /// The template registry answers a request for any version with the latest version's
    /// content (a store that reads the wrong field): a notification renders a version it did not
    /// pin.
    pub template_version_ignored: bool,
    /// Loading a record loses its locale (a codec that forgets the field): a notification renders
    /// in the template's default locale.
    pub locale_dropped: bool,
    /// The API checks submissions against a higher SMS segment cap than the policy's (a stale
    /// configuration on the API hosts).
    pub segment_cap_unchecked_at_submit: bool,
    /// Each actor keeps the first directory entry it read of each recipient and never reads it
    /// again: a preference cache without invalidation, so the re-check after a claim misses an
    /// opt-out written since.
    pub stale_directory: bool,
}

/// One message a provider really took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// The attempt that carried it.
    pub attempt: Attempt,
    /// The provider.
    pub provider: ProviderName,
    /// When, in virtual ms.
    pub at_ms: u64,
    /// The channel it went out on.
    pub channel: Channel,
    /// Whether the provider will report it undelivered (so it did not reach the recipient).
    pub undelivered: bool,
    /// What it said: the rendered content, as JSON.
    pub content: String,
}

/// A committed transition, as the checker sees it.
#[derive(Debug, Clone)]
pub struct Journaled {
    /// The notification.
    pub id: NotificationId,
    /// The version it moved from.
    pub from_version: u64,
    /// The new state.
    pub state: State,
    /// The history entries of the commit.
    pub history: Vec<HistoryEntry>,
    /// The notification's category, on its creation only.
    pub category: Option<Category>,
    /// Its place in the store's write order ([`World::seq`]).
    pub seq: u64,
}

/// A send claim (a commit into `sending`), as the directory invariants need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// Its place in the store's write order ([`World::seq`]).
    pub seq: u64,
    /// The commit's time (the claiming worker's clock): quiet hours are judged at it.
    pub now_ms: u64,
}

/// A receipt the fake providers scheduled.
#[derive(Debug, Clone)]
pub struct ReceiptDue {
    /// When it arrives, virtual ms.
    pub at_ms: u64,
    /// The tenant.
    pub tenant: TenantId,
    /// The notification.
    pub id: NotificationId,
    /// The provider sending it.
    pub provider: ProviderName,
    /// What it says.
    pub receipt: Receipt,
}

/// A provider call in flight.
#[derive(Debug)]
struct Call {
    /// When the answer arrives.
    answer_at_ms: u64,
    /// The answer.
    outcome: SendOutcome,
    /// Where the call is in the call log: (notification, index).
    logged: (NotificationId, usize),
}

/// One request a provider received, taken or not, for the retry-timing invariants.
#[derive(Debug, Clone)]
pub struct CallMade {
    /// The provider.
    pub provider: ProviderName,
    /// The channel.
    pub channel: Channel,
    /// The attempt it carried.
    pub attempt: Attempt,
    /// When the provider received it, virtual ms.
    pub at_ms: u64,
    /// The failure class answered, `None` for an acceptance.
    pub class: Option<ErrorClass>,
    /// When the runner got the answer (`None`: it never did, the worker died first).
    pub answered_at_ms: Option<u64>,
    /// The claim the call was made under: the notification's latest commit into `sending`.
    pub claim: Option<Claim>,
}

/// What the sim told the runner about one attempt, for the dead-letter invariant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Told {
    /// The class of the failure, `None` for an acceptance.
    pub class: Option<ErrorClass>,
}

/// The mutable world.
#[derive(Debug)]
pub struct World {
    /// The faults of this run.
    pub faults: FaultSet,
    /// Off during the liveness phase.
    pub faults_on: bool,
    /// The fault dice.
    pub rng: Rng,
    /// How often each fault fired.
    pub fired: BTreeMap<Fault, u64>,
    /// Planted bugs.
    pub planted: Planted,
    /// Provider calls in flight, by call id.
    calls: BTreeMap<u64, Call>,
    /// The next call id.
    next_call: u64,
    /// What providers really took, per notification.
    pub ledger: BTreeMap<NotificationId, Vec<Taken>>,
    /// What each attempt was told, per notification, channel and attempt.
    pub told: BTreeMap<(NotificationId, Channel, u32), Told>,
    /// Every request the providers received, per notification, in order.
    pub call_log: BTreeMap<NotificationId, Vec<CallMade>>,
    /// Actors that crashed during the current poll round.
    pub crashed: BTreeSet<usize>,
    /// Commits since the checker last looked.
    pub journal: Vec<Journaled>,
    /// Receipts scheduled since the loop last looked.
    pub receipts: Vec<ReceiptDue>,
    /// Per provider, a brownout window (virtual ms).
    pub brownouts: BTreeMap<ProviderName, (u64, u64)>,
    /// Per provider, a full outage window (virtual ms): every call fails with a 503, faults on
    /// or off (the outage scenario).
    pub outages: BTreeMap<ProviderName, (u64, u64)>,
    /// The trace hash so far (FNV-1a over every trace line).
    pub trace_hash: u64,
    /// The last trace lines, for violation reports.
    pub trace_tail: std::collections::VecDeque<String>,
    /// Trace lines in all.
    pub trace_len: u64,
    /// The answer time of the provider call registered during the current poll, so the loop
    /// can leave the task alone until then.
    pub last_call_answer_ms: Option<u64>,
    /// The last trace lines about each notification, for violation reports.
    pub trace_by_id: BTreeMap<NotificationId, std::collections::VecDeque<String>>,
    /// Every campaign notification created, in order: (campaign, recipient, notification).
    pub campaign_created: Vec<(CampaignId, RecipientId, NotificationId)>,
    /// Campaign notification ids handed out (for the planted `campaign_ids_not_derived`).
    pub campaign_ids_minted: u64,
    /// The store's write order: every journaled commit and every directory write takes the
    /// next number, so "what the directory held when this send was claimed" is exact.
    pub seq: u64,
    /// Each notification's latest send claim.
    pub claims: BTreeMap<NotificationId, Claim>,
    /// Every directory write, per recipient, in write order: (seq, the entry it left).
    pub directory_log: BTreeMap<RecipientId, Vec<(u64, RecipientEntry)>>,
    /// A task gave way to the others during the current poll round (it must be polled again
    /// at the same instant).
    pub yielded: bool,
}

/// How many of the run's last trace lines a violation report shows.
pub const TRACE_TAIL_LEN: usize = 20;
/// How many trace lines are kept per notification.
pub const TRACE_PER_ID_LEN: usize = 40;

impl World {
    /// A world with the given faults (on), fault dice and planted bugs.
    pub fn new(faults: FaultSet, rng: Rng, planted: Planted) -> World {
        World {
            faults,
            faults_on: true,
            rng,
            fired: BTreeMap::new(),
            planted,
            calls: BTreeMap::new(),
            next_call: 0,
            ledger: BTreeMap::new(),
            told: BTreeMap::new(),
            crashed: BTreeSet::new(),
            journal: Vec::new(),
            receipts: Vec::new(),
            brownouts: BTreeMap::new(),
            outages: BTreeMap::new(),
            trace_hash: 0xcbf2_9ce4_8422_2325,
            trace_tail: std::collections::VecDeque::new(),
            trace_len: 0,
            trace_by_id: BTreeMap::new(),
            last_call_answer_ms: None,
            call_log: BTreeMap::new(),
            campaign_created: Vec::new(),
            campaign_ids_minted: 0,
            seq: 0,
            claims: BTreeMap::new(),
            directory_log: BTreeMap::new(),
            yielded: false,
        }
    }

    /// The next place in the store's write order.
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Logs a directory write that left `entry`.
    pub fn log_directory(&mut self, entry: RecipientEntry) {
        let seq = self.next_seq();
        self.directory_log.entry(entry.id.clone()).or_default().push((seq, entry));
    }

    /// What the directory held for `recipient` just before write `seq`.
    pub fn directory_at(&self, recipient: &RecipientId, seq: u64) -> Option<&RecipientEntry> {
        let log = self.directory_log.get(recipient)?;
        log.iter().take_while(|(at, _)| *at < seq).last().map(|(_, entry)| entry)
    }

    fn hash_line(&mut self, line: &str) {
        for b in line.bytes().chain([b'\n']) {
            self.trace_hash = (self.trace_hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.trace_len += 1;
    }

    /// Records a trace line about the run (a crash, a restart, the end of the fault phase):
    /// hashed, and kept in the run's tail for reports.
    pub fn trace(&mut self, line: String) {
        self.hash_line(&line);
        if self.trace_tail.len() == TRACE_TAIL_LEN {
            self.trace_tail.pop_front();
        }
        self.trace_tail.push_back(line);
    }

    /// Records a trace line about one notification: hashed, and kept with the notification for
    /// reports (not in the run's tail, which would cost a copy of every line).
    pub fn trace_id(&mut self, id: &NotificationId, line: String) {
        self.hash_line(&line);
        let lines = match self.trace_by_id.get_mut(id) {
            Some(lines) => lines,
            None => self.trace_by_id.entry(id.clone()).or_default(),
        };
        if lines.len() == TRACE_PER_ID_LEN {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// Rolls the dice for a fault; counts it when it fires.
    pub fn roll(&mut self, fault: Fault) -> bool {
        if !self.faults_on {
            return false;
        }
        let rate = self.faults.rate(fault);
        let fired = self.rng.chance(rate);
        if fired {
            *self.fired.entry(fault).or_default() += 1;
        }
        fired
    }

    /// Counts a fault that fired without a roll (a brownout window hit, a drift applied).
    pub fn count(&mut self, fault: Fault) {
        *self.fired.entry(fault).or_default() += 1;
    }

    /// The earliest answer still to come.
    pub fn next_answer_ms(&self) -> Option<u64> {
        self.calls.values().map(|c| c.answer_at_ms).min()
    }

    /// Calls still in flight.
    pub fn calls_in_flight(&self) -> usize {
        self.calls.len()
    }
}

/// What the simulator and the ports share.
#[derive(Debug)]
pub struct Shared {
    world: Mutex<World>,
    /// True virtual time, ms since the Unix epoch.
    now_ms: AtomicU64,
    /// Per actor, its clock's offset from true time (drift and steps).
    offsets: Vec<AtomicI64>,
}

impl Shared {
    /// A world at `start_ms` for `actors` clocks.
    pub fn new(world: World, start_ms: u64, actors: usize) -> Arc<Shared> {
        Arc::new(Shared {
            world: Mutex::new(world),
            now_ms: AtomicU64::new(start_ms),
            offsets: (0..actors).map(|_| AtomicI64::new(0)).collect(),
        })
    }

    /// The world, locked. Never hold it across a call into a port.
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True virtual time.
    pub fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::Relaxed)
    }

    /// Moves virtual time forward (never back).
    pub fn advance_to(&self, at_ms: u64) {
        self.now_ms.fetch_max(at_ms, Ordering::Relaxed);
    }

    /// Sets an actor's clock offset.
    pub fn set_offset(&self, actor: usize, offset_ms: i64) {
        if let Some(o) = self.offsets.get(actor) {
            o.store(offset_ms, Ordering::Relaxed);
        }
    }

    /// An actor's clock offset.
    pub fn offset(&self, actor: usize) -> i64 {
        self.offsets.get(actor).map_or(0, |o| o.load(Ordering::Relaxed))
    }
}

/// An actor's clock: true virtual time plus the actor's offset.
#[derive(Debug, Clone)]
pub struct SimClock {
    /// The world.
    pub shared: Arc<Shared>,
    /// Whose clock (an index into the offsets; the store's clock uses an actor with offset 0).
    pub actor: usize,
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        let now = self.shared.now_ms() as i64 + self.shared.offset(self.actor);
        now.max(0) as u64
    }
}

/// Wraps the store one actor uses: injects store errors, lost replies and crashes at the
/// boundaries after a commit, journals every applied commit, and plants the no-version-check bug
/// when asked.
#[derive(Debug, Clone)]
pub struct FaultyStore<S> {
    /// The real (in-memory) store.
    pub inner: S,
    /// The world.
    pub shared: Arc<Shared>,
    /// Whose store this is.
    pub actor: usize,
    /// Whether the actor is a worker (only workers crash).
    pub worker: bool,
    /// The planted stale directory cache (`Planted::stale_directory`): the first entry read of
    /// each recipient.
    pub stale: StaleCache,
}

/// The planted stale directory cache of one actor: the first entry it read of each recipient.
pub type StaleCache = Arc<Mutex<BTreeMap<(TenantId, RecipientId), Option<RecipientEntry>>>>;

/// What the dice say about one store call.
pub(crate) enum StoreFault {
    None,
    Error,
    LostReply,
}

impl<S: Store> FaultyStore<S> {
    pub(crate) fn dice(&self, op: &str) -> StoreFault {
        let mut world = self.shared.world();
        if world.roll(Fault::StoreError) {
            world.trace(format!("a{} store {op}: error", self.actor));
            StoreFault::Error
        } else if op != "load" && world.roll(Fault::StoreLostReply) {
            world.trace(format!("a{} store {op}: reply lost", self.actor));
            StoreFault::LostReply
        } else {
            StoreFault::None
        }
    }

    pub(crate) fn unavailable(op: &str) -> StoreError {
        StoreError::Unavailable(format!("simulated {op} failure"))
    }

    /// Whether the actor dies at this boundary (only workers do).
    pub(crate) fn crash(&self, fault: Fault, what: &str) -> bool {
        if !self.worker {
            return false;
        }
        let mut world = self.shared.world();
        if world.roll(fault) {
            world.trace(format!("a{} crash {what}", self.actor));
            world.crashed.insert(self.actor);
            return true;
        }
        false
    }
}

impl<S: Store> Store for FaultyStore<S> {
    async fn create(
        &self,
        record: &Record,
        first: &HistoryEntry,
        idempotency: Option<&Idempotency>,
    ) -> Result<Created, StoreError> {
        match self.dice("create") {
            StoreFault::Error => Err(Self::unavailable("create")),
            StoreFault::LostReply => {
                let created = self.inner.create(record, first, idempotency).await?;
                if created == Created::New {
                    journal_create(&self.shared, record, first);
                }
                Err(Self::unavailable("create reply"))
            }
            StoreFault::None => {
                let created = self.inner.create(record, first, idempotency).await?;
                if created == Created::New {
                    journal_create(&self.shared, record, first);
                }
                Ok(created)
            }
        }
    }

    async fn load(
        &self,
        tenant: &TenantId,
        id: &NotificationId,
    ) -> Result<Option<Record>, StoreError> {
        let mut record = match self.dice("load") {
            StoreFault::None | StoreFault::LostReply => self.inner.load(tenant, id).await?,
            StoreFault::Error => return Err(Self::unavailable("load")),
        };
        let dropped = self.shared.world().planted.locale_dropped;
        if dropped && let Some(record) = &mut record {
            record.request.locale = None;
        }
        Ok(record)
    }

    async fn commit(&self, commit: &Commit) -> Result<CommitOutcome, StoreError> {
        let fault = self.dice("commit");
        if matches!(fault, StoreFault::Error) {
            return Err(Self::unavailable("commit"));
        }
        let mut commit = commit.clone();
        let planted = self.shared.world().planted;
        if planted.no_version_check
            && let Some(current) = self.inner.load(&commit.tenant, &commit.id).await?
        {
            commit.expected_version = current.version;
        }
        let outcome = self.inner.commit(&commit).await?;
        if let CommitOutcome::Committed { version } = outcome {
            {
                let mut world = self.shared.world();
                let id = commit.id.clone();
                world.trace_id(
                    &id,
                    format!(
                        "a{} commit {} v{}->v{version} {}",
                        self.actor,
                        commit.id,
                        commit.expected_version,
                        commit.state.kind()
                    ),
                );
                let seq = world.next_seq();
                if matches!(commit.state, State::Sending { .. }) {
                    world.claims.insert(id.clone(), Claim { seq, now_ms: commit.now_ms });
                }
                world.journal.push(Journaled {
                    id: commit.id.clone(),
                    from_version: commit.expected_version,
                    state: commit.state.clone(),
                    history: commit.history.clone(),
                    category: None,
                    seq,
                });
            }
            let claim = matches!(commit.state, State::Sending { .. });
            let (fault, what) = if claim {
                (Fault::CrashAfterClaim, "after claim")
            } else {
                (Fault::CrashAfterPersist, "after persist")
            };
            if self.crash(fault, what) {
                futures::future::pending::<()>().await;
            }
        }
        match fault {
            StoreFault::LostReply => Err(Self::unavailable("commit reply")),
            _ => Ok(outcome),
        }
    }

    fn history(
        &self,
        tenant: &TenantId,
        id: &NotificationId,
    ) -> impl Future<Output = Result<Vec<HistoryEntry>, StoreError>> + Send {
        self.inner.history(tenant, id)
    }

    fn list(
        &self,
        tenant: &TenantId,
        query: &ListQuery,
    ) -> impl Future<Output = Result<workflows::ports::ListPage, StoreError>> + Send {
        self.inner.list(tenant, query)
    }

    fn dead_letters(
        &self,
        tenant: &TenantId,
        filter: &DlqFilter,
        now_ms: u64,
    ) -> impl Future<Output = Result<DlqPage, StoreError>> + Send {
        self.inner.dead_letters(tenant, filter, now_ms)
    }

    fn purge(
        &self,
        tenant: &TenantId,
        id: &NotificationId,
        expected_version: u64,
    ) -> impl Future<Output = Result<Purged, StoreError>> + Send {
        self.inner.purge(tenant, id, expected_version)
    }

    async fn send_slot(
        &self,
        provider: &ProviderName,
        rate: &SendRate,
        now_ms: u64,
        wait_ms_max: u64,
    ) -> Result<SendSlot, StoreError> {
        match self.dice("pace") {
            StoreFault::Error => Err(Self::unavailable("pace")),
            StoreFault::LostReply => {
                self.inner.send_slot(provider, rate, now_ms, wait_ms_max).await?;
                Err(Self::unavailable("pace reply"))
            }
            StoreFault::None => self.inner.send_slot(provider, rate, now_ms, wait_ms_max).await,
        }
    }

    fn put_api_key(
        &self,
        key_id: &str,
        key: &ApiKey,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.inner.put_api_key(key_id, key)
    }

    fn api_key(
        &self,
        key_id: &str,
    ) -> impl Future<Output = Result<Option<ApiKey>, StoreError>> + Send {
        self.inner.api_key(key_id)
    }
}

impl<S: Store + TemplateStore> FaultyStore<S> {
    /// A registry write under the dice: an error does nothing, a lost reply does the write and
    /// then fails (the caller cannot tell them apart).
    async fn template_write(
        &self,
        op: &str,
        write: impl Future<Output = Result<TemplateWrite, StoreError>>,
    ) -> Result<TemplateWrite, StoreError> {
        match self.dice(op) {
            StoreFault::Error => Err(Self::unavailable(op)),
            StoreFault::LostReply => {
                write.await?;
                Err(Self::unavailable(op))
            }
            StoreFault::None => write.await,
        }
    }

    /// A registry read under the dice: a lost reply is an error too.
    fn template_read(&self, op: &str) -> Result<(), StoreError> {
        match self.dice(op) {
            StoreFault::None => Ok(()),
            StoreFault::Error | StoreFault::LostReply => Err(Self::unavailable(op)),
        }
    }
}

impl<S: Store + Directory> FaultyStore<S> {
    /// Runs a directory write with the store fault dice, and logs the entry it left in the
    /// world's write order when it was applied (a lost reply is applied too).
    async fn directory_write<T>(
        &self,
        op: &str,
        tenant: &TenantId,
        id: &RecipientId,
        write: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let fault = self.dice(op);
        if matches!(fault, StoreFault::Error) {
            return Err(Self::unavailable(op));
        }
        let result = write.await?;
        if let Some(entry) = self.inner.recipient(tenant, id).await? {
            let mut world = self.shared.world();
            world.trace(format!("a{} directory {op} {id} rev {}", self.actor, entry.revision));
            world.log_directory(entry);
        }
        match fault {
            StoreFault::LostReply => Err(Self::unavailable(op)),
            _ => Ok(result),
        }
    }
}

/// The registry under the same faults as the rest of the store, and the planted
/// `template_version_ignored` bug.
impl<S: Store + TemplateStore> TemplateStore for FaultyStore<S> {
    fn template_create<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a TemplateId,
        content: &'a TemplateContent,
        publish: bool,
        now_ms: u64,
        templates_max: u32,
    ) -> StoreFuture<'a, TemplateWrite> {
        let write = self.inner.template_create(tenant, id, content, publish, now_ms, templates_max);
        Box::pin(self.template_write("template create", write))
    }

    fn template_add_version<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a TemplateId,
        content: &'a TemplateContent,
        now_ms: u64,
        versions_max: u32,
    ) -> StoreFuture<'a, TemplateWrite> {
        let write = self.inner.template_add_version(tenant, id, content, now_ms, versions_max);
        Box::pin(self.template_write("template add version", write))
    }

    fn template_publish<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a TemplateId,
        version: u32,
        now_ms: u64,
    ) -> StoreFuture<'a, TemplateWrite> {
        let write = self.inner.template_publish(tenant, id, version, now_ms);
        Box::pin(self.template_write("template publish", write))
    }

    fn template_published<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a TemplateId,
    ) -> StoreFuture<'a, Option<Option<u32>>> {
        Box::pin(async move {
            self.template_read("template published")?;
            self.inner.template_published(tenant, id).await
        })
    }

    fn template_info<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a TemplateId,
    ) -> StoreFuture<'a, Option<TemplateInfo>> {
        Box::pin(async move {
            self.template_read("template info")?;
            self.inner.template_info(tenant, id).await
        })
    }

    fn template_version<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a TemplateId,
        version: u32,
    ) -> StoreFuture<'a, Option<StoredVersion>> {
        Box::pin(async move {
            self.template_read("template version")?;
            let asked = version;
            let ignored = self.shared.world().planted.template_version_ignored;
            let version = match ignored {
                true => match self.inner.template_info(tenant, id).await? {
                    Some(info) => info.summary.latest,
                    None => version,
                },
                false => version,
            };
            let mut stored = self.inner.template_version(tenant, id, version).await?;
            if let Some(stored) = &mut stored {
                stored.summary.version = asked;
            }
            Ok(stored)
        })
    }

    fn template_list<'a>(
        &'a self,
        tenant: &'a TenantId,
        after: Option<&'a TemplateId>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<TemplateSummary>> {
        Box::pin(async move {
            self.template_read("template list")?;
            self.inner.template_list(tenant, after, limit).await
        })
    }
}

impl<S: Store + Directory> Directory for FaultyStore<S> {
    async fn recipient(
        &self,
        tenant: &TenantId,
        id: &RecipientId,
    ) -> Result<Option<RecipientEntry>, StoreError> {
        if let StoreFault::Error = self.dice("load") {
            return Err(Self::unavailable("directory read"));
        }
        if self.shared.world().planted.stale_directory {
            let key = (tenant.clone(), id.clone());
            let cached =
                self.stale.lock().unwrap_or_else(PoisonError::into_inner).get(&key).cloned();
            if let Some(entry) = cached {
                return Ok(entry);
            }
            let entry = self.inner.recipient(tenant, id).await?;
            self.stale.lock().unwrap_or_else(PoisonError::into_inner).insert(key, entry.clone());
            return Ok(entry);
        }
        self.inner.recipient(tenant, id).await
    }

    async fn put_contact(
        &self,
        tenant: &TenantId,
        id: &RecipientId,
        contact: &Contact,
        now_ms: u64,
    ) -> Result<(u64, bool), StoreError> {
        let write = self.inner.put_contact(tenant, id, contact, now_ms);
        self.directory_write("put_contact", tenant, id, write).await
    }

    async fn put_preferences(
        &self,
        tenant: &TenantId,
        id: &RecipientId,
        preferences: &Preferences,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let write = self.inner.put_preferences(tenant, id, preferences, now_ms);
        self.directory_write("put_preferences", tenant, id, write).await
    }

    async fn add_device(
        &self,
        tenant: &TenantId,
        id: &RecipientId,
        device: &Device,
        now_ms: u64,
    ) -> Result<DeviceAdded, StoreError> {
        let write = self.inner.add_device(tenant, id, device, now_ms);
        self.directory_write("add_device", tenant, id, write).await
    }

    async fn remove_device(
        &self,
        tenant: &TenantId,
        id: &RecipientId,
        device: &DeviceId,
        now_ms: u64,
    ) -> Result<Option<u64>, StoreError> {
        let write = self.inner.remove_device(tenant, id, device, now_ms);
        self.directory_write("remove_device", tenant, id, write).await
    }

    fn recipients(
        &self,
        tenant: &TenantId,
        after: Option<&RecipientId>,
        limit: usize,
    ) -> impl Future<Output = Result<RecipientPage, StoreError>> + Send {
        self.inner.recipients(tenant, after, limit)
    }
}

impl<S: Store> Dedup for FaultyStore<S> {
    async fn claim_key(
        &self,
        tenant: &TenantId,
        idempotency: &Idempotency,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Claimed, StoreError> {
        match self.dice("claim") {
            StoreFault::Error => Err(Self::unavailable("claim")),
            StoreFault::LostReply => {
                self.inner.claim_key(tenant, idempotency, now_ms, lease_ms).await?;
                Err(Self::unavailable("claim reply"))
            }
            StoreFault::None => self.inner.claim_key(tenant, idempotency, now_ms, lease_ms).await,
        }
    }

    async fn finish_key(
        &self,
        tenant: &TenantId,
        idempotency: &Idempotency,
        response: &StoredResponse,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        match self.dice("finish") {
            StoreFault::Error => Err(Self::unavailable("finish")),
            StoreFault::LostReply => {
                self.inner.finish_key(tenant, idempotency, response, now_ms).await?;
                Err(Self::unavailable("finish reply"))
            }
            StoreFault::None => self.inner.finish_key(tenant, idempotency, response, now_ms).await,
        }
    }

    fn release_key(
        &self,
        tenant: &TenantId,
        idempotency: &Idempotency,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.inner.release_key(tenant, idempotency)
    }

    async fn create_once(
        &self,
        record: &Record,
        first: &HistoryEntry,
        event: &EventKey,
        window_ms: u64,
    ) -> Result<CreatedOnce, StoreError> {
        let fault = self.dice("create");
        if matches!(fault, StoreFault::Error) {
            return Err(Self::unavailable("create"));
        }
        let created = if self.shared.world().planted.no_dedup {
            match self.inner.create(record, first, None).await? {
                Created::New => CreatedOnce::New,
                Created::Existing { .. } => CreatedOnce::IdTaken,
            }
        } else {
            self.inner.create_once(record, first, event, window_ms).await?
        };
        if created == CreatedOnce::New {
            journal_create(&self.shared, record, first);
        }
        match fault {
            StoreFault::LostReply => Err(Self::unavailable("create reply")),
            _ => Ok(created),
        }
    }
}

impl<S: Store> Collapse for FaultyStore<S> {
    async fn collapse_join(
        &self,
        group: &CollapseGroup,
        member: &NotificationId,
        data: &serde_json::Map<String, serde_json::Value>,
        window_ms: u64,
        now_ms: u64,
    ) -> Result<Joined, StoreError> {
        match self.dice("collapse") {
            StoreFault::Error => Err(Self::unavailable("collapse")),
            StoreFault::LostReply => {
                self.inner.collapse_join(group, member, data, window_ms, now_ms).await?;
                Err(Self::unavailable("collapse reply"))
            }
            StoreFault::None => {
                self.inner.collapse_join(group, member, data, window_ms, now_ms).await
            }
        }
    }

    async fn collapse_close(
        &self,
        group: &CollapseGroup,
        survivor: &NotificationId,
        now_ms: u64,
    ) -> Result<Option<Merged>, StoreError> {
        let fault = self.dice("collapse close");
        if matches!(fault, StoreFault::Error) {
            return Err(Self::unavailable("collapse close"));
        }
        let mut merged = self.inner.collapse_close(group, survivor, now_ms).await?;
        if self.shared.world().planted.collapse_drops_items
            && let Some(merged) = &mut merged
        {
            merged.items.truncate(1);
        }
        match fault {
            StoreFault::LostReply => Err(Self::unavailable("collapse close reply")),
            _ => Ok(merged),
        }
    }

    async fn collapse_member(
        &self,
        group: &CollapseGroup,
        member: &NotificationId,
        now_ms: u64,
    ) -> Result<Option<NotificationId>, StoreError> {
        match self.dice("load") {
            StoreFault::Error => Err(Self::unavailable("collapse member")),
            StoreFault::None | StoreFault::LostReply => {
                self.inner.collapse_member(group, member, now_ms).await
            }
        }
    }

    async fn keep_merged(
        &self,
        tenant: &TenantId,
        id: &NotificationId,
        merged: &Merged,
    ) -> Result<(), StoreError> {
        match self.dice("keep merged") {
            StoreFault::Error => Err(Self::unavailable("keep merged")),
            StoreFault::LostReply => {
                self.inner.keep_merged(tenant, id, merged).await?;
                Err(Self::unavailable("keep merged reply"))
            }
            StoreFault::None => self.inner.keep_merged(tenant, id, merged).await,
        }
    }

    fn merged(
        &self,
        tenant: &TenantId,
        id: &NotificationId,
    ) -> impl Future<Output = Result<Option<Merged>, StoreError>> + Send {
        self.inner.merged(tenant, id)
    }
}

impl<S: Store> LimitWindows for FaultyStore<S> {
    async fn acquire_windows(
        &self,
        key: &RecipientKey,
        member: &NotificationId,
        windows: &[Window],
        now_ms: u64,
    ) -> Result<Admission, StoreError> {
        match self.dice("limits") {
            StoreFault::Error => Err(Self::unavailable("limits")),
            StoreFault::LostReply => {
                self.acquire(key, member, windows, now_ms).await?;
                Err(Self::unavailable("limits reply"))
            }
            StoreFault::None => self.acquire(key, member, windows, now_ms).await,
        }
    }

    fn window_usage(
        &self,
        key: &RecipientKey,
        windows: &[Window],
        now_ms: u64,
    ) -> impl Future<Output = Result<Vec<u32>, StoreError>> + Send {
        self.inner.window_usage(key, windows, now_ms)
    }
}

impl<S: Store> FaultyStore<S> {
    /// Takes the limits' slots: one atomic call, or with the planted bug a check, other workers
    /// running, and then a take that no longer checks.
    async fn acquire(
        &self,
        key: &RecipientKey,
        member: &NotificationId,
        windows: &[Window],
        now_ms: u64,
    ) -> Result<Admission, StoreError> {
        if !self.shared.world().planted.non_atomic_limits {
            return self.inner.acquire_windows(key, member, windows, now_ms).await;
        }
        let usage = self.inner.window_usage(key, windows, now_ms).await?;
        let room = windows.iter().zip(&usage).all(|(w, used)| *used < w.limit.max());
        if !room {
            return self.inner.acquire_windows(key, member, windows, now_ms).await;
        }
        YieldOnce { shared: self.shared.clone(), done: false }.await;
        let unchecked: Vec<Window> = windows
            .iter()
            .map(|w| {
                let mut w = w.clone();
                match &mut w.limit {
                    steps::limits::Limit::Channel { max, .. }
                    | steps::limits::Limit::Cap { max, .. } => *max = u32::MAX,
                }
                w
            })
            .collect();
        self.inner.acquire_windows(key, member, &unchecked, now_ms).await
    }
}

/// Gives way once: pending on the first poll, ready on the next, and tells the loop to poll
/// again at the same instant.
struct YieldOnce {
    shared: Arc<Shared>,
    done: bool,
}

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.done {
            return Poll::Ready(());
        }
        self.done = true;
        self.shared.world().yielded = true;
        Poll::Pending
    }
}

pub(crate) fn journal_create(shared: &Shared, record: &Record, first: &HistoryEntry) {
    let mut world = shared.world();
    world.trace_id(&record.id, format!("create {} {}", record.id, record.request.channel));
    let seq = world.next_seq();
    world.journal.push(Journaled {
        id: record.id.clone(),
        from_version: 0,
        state: record.state.clone(),
        history: vec![first.clone()],
        category: Some(record.request.category.clone()),
        seq,
    });
}

/// The fake of one provider. Every decision (what it answers, how late, whether it really took
/// the message, which receipts follow) comes from the world's fault dice.
#[derive(Debug)]
pub struct FakeProvider {
    /// The provider's name.
    pub name: ProviderName,
    /// Its channel.
    pub channel: Channel,
    /// The world.
    pub shared: Arc<Shared>,
    /// The actor (worker) whose runner holds this instance.
    pub actor: usize,
}

/// How long a healthy provider takes, virtual ms.
const LATENCY_MS: (u64, u64) = (5, 80);
/// The providers' client timeout (`providers::options::TIMEOUT_MS_DEFAULT`).
const TIMEOUT_MS: u64 = 10_000;

enum Answer {
    /// The worker dies with the message taken: the call never returns.
    Crash,
    /// Answer after a latency.
    Call(u64),
}

impl FakeProvider {
    fn decide(&self, message: &Outbound) -> Answer {
        let now = self.shared.now_ms();
        let mut world = self.shared.world();
        let id = &message.notification_id;
        let attempt = message.attempt;
        let brownout = world
            .brownouts
            .get(&self.name)
            .is_some_and(|(from, to)| world.faults_on && (*from..*to).contains(&now));
        let error = |class, status: u16, message: &str| {
            SendOutcome::Failed(ProviderError::new(class, Some(status), None, message))
        };
        let accepted = SendOutcome::Accepted {
            provider_message_id: Some(format!("{}-{}", self.name, world.next_call)),
            delivered: self.channel == Channel::InApp,
        };
        let latency = world.rng.range(LATENCY_MS.0, LATENCY_MS.1);
        // (outcome, latency, whether the provider really took the message)
        let outage =
            world.outages.get(&self.name).is_some_and(|(from, to)| (*from..*to).contains(&now));
        let (mut outcome, latency, taken) = if outage {
            (error(ErrorClass::RETRYABLE, 503, "outage"), latency, false)
        } else if brownout && world.rng.chance(0.9) {
            world.count(Fault::Brownout);
            // Some maintenance pages say when to come back.
            let retry_after_ms = world.rng.chance(0.3).then(|| world.rng.range(1_000, 30_000));
            (error(ErrorClass::Retryable { retry_after_ms }, 503, "brownout"), latency, false)
        } else if world.roll(Fault::InvalidToken) {
            (error(ErrorClass::TokenInvalid, 410, "Unregistered"), latency, false)
        } else if world.roll(Fault::ProviderAuth) {
            (error(ErrorClass::ProviderConfig, 401, "authentication failed"), latency, false)
        } else if world.roll(Fault::ProviderServerError) {
            (error(ErrorClass::RETRYABLE, 500, "internal error"), latency, false)
        } else if world.roll(Fault::RateLimitedNoRetryAfter) {
            let class = ErrorClass::RateLimited { retry_after_ms: None };
            (error(class, 429, "slow down (Retry-After: soon)"), latency, false)
        } else if world.roll(Fault::RateLimitedRetryAfterZero) {
            let class = ErrorClass::RateLimited { retry_after_ms: Some(0) };
            (error(class, 429, "slow down"), latency, false)
        } else if world.roll(Fault::RateLimitedRetryAfterLarge) {
            let class = ErrorClass::RateLimited { retry_after_ms: Some(3_600_000) };
            (error(class, 429, "slow down"), latency, false)
        } else if world.roll(Fault::ResetBeforeWrite) {
            (error(ErrorClass::RETRYABLE, 0, "connection reset before write"), 1, false)
        } else if world.roll(Fault::TimeoutNotAccepted) {
            (error(ErrorClass::Unknown, 0, "timed out"), TIMEOUT_MS, false)
        } else if world.roll(Fault::TimeoutAccepted) {
            (error(ErrorClass::Unknown, 0, "timed out"), TIMEOUT_MS, true)
        } else if world.roll(Fault::ResetAfterWrite) {
            let taken = world.rng.chance(0.5);
            (error(ErrorClass::Unknown, 0, "connection reset after write"), latency, taken)
        } else if world.roll(Fault::SlowResponse) {
            (accepted, world.rng.range(5_000, 60_000), true)
        } else {
            (accepted, latency, true)
        };
        if world.planted.resend_unknown_unflagged
            && let SendOutcome::Failed(e) = &mut outcome
            && e.class == ErrorClass::Unknown
        {
            e.class = ErrorClass::RETRYABLE;
        }
        let class = match &outcome {
            SendOutcome::Failed(e) => Some(e.class),
            SendOutcome::Accepted { .. } => None,
        };
        if world.planted.retry_after_dropped
            && let SendOutcome::Failed(e) = &mut outcome
        {
            e.class = match e.class {
                ErrorClass::Retryable { .. } => ErrorClass::RETRYABLE,
                ErrorClass::RateLimited { .. } => ErrorClass::RateLimited { retry_after_ms: None },
                other => other,
            };
        }
        world.told.insert((id.clone(), self.channel, attempt.0), Told { class });
        world.trace_id(
            id,
            format!(
                "a{} {} {id} attempt {attempt}: {} in {latency} ms{}",
                self.actor,
                self.name,
                class.map_or("accepted", |c| c.name()),
                if taken { ", taken" } else { "" }
            ),
        );
        if taken {
            let undelivered = if self.channel == Channel::InApp {
                false
            } else {
                self.schedule_receipts(&mut world, message, now, latency)
            };
            world.ledger.entry(id.clone()).or_default().push(Taken {
                attempt,
                provider: self.name.clone(),
                at_ms: now,
                channel: self.channel,
                undelivered,
                content: serde_json::to_string(&message.content).unwrap_or_default(),
            });
        }
        let claim = world.claims.get(id).copied();
        let log = world.call_log.entry(id.clone()).or_default();
        log.push(CallMade {
            provider: self.name.clone(),
            channel: self.channel,
            attempt,
            at_ms: now,
            class,
            answered_at_ms: None,
            claim,
        });
        let logged = (id.clone(), log.len() - 1);
        if taken && world.roll(Fault::CrashAfterSend) {
            world.trace(format!("a{} crash after send", self.actor));
            world.crashed.insert(self.actor);
            return Answer::Crash;
        }
        let call = world.next_call;
        world.next_call += 1;
        world.calls.insert(call, Call { answer_at_ms: now + latency, outcome, logged });
        world.last_call_answer_ms = Some(now + latency);
        Answer::Call(call)
    }

    /// Schedules the receipts of a message the provider took; returns whether the message is
    /// undelivered (decided here, whether or not its receipt arrives).
    fn schedule_receipts(
        &self,
        world: &mut World,
        message: &Outbound,
        now: u64,
        latency: u64,
    ) -> bool {
        let receipt =
            if world.rng.chance(0.03) { Receipt::Undelivered } else { Receipt::Delivered };
        let undelivered = receipt == Receipt::Undelivered;
        if world.roll(Fault::ReceiptLost) {
            return undelivered;
        }
        let mut delay = latency + world.rng.range(50, 2_000);
        if world.roll(Fault::ReceiptEarly) {
            delay = 1;
        }
        if world.roll(Fault::ReceiptReordered) {
            delay = world.rng.range(1, 120_000);
        }
        let due = ReceiptDue {
            at_ms: now + delay,
            tenant: message.tenant.clone(),
            id: message.notification_id.clone(),
            provider: self.name.clone(),
            receipt,
        };
        if world.roll(Fault::ReceiptDuplicated) {
            let mut again = due.clone();
            again.at_ms += world.rng.range(1, 5_000);
            world.receipts.push(again);
        }
        world.receipts.push(due);
        undelivered
    }
}

/// Waits for a provider call's answer; pending until virtual time reaches it.
struct CallFuture {
    shared: Arc<Shared>,
    call: u64,
}

impl Future for CallFuture {
    type Output = SendOutcome;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<SendOutcome> {
        let now = self.shared.now_ms();
        let mut world = self.shared.world();
        match world.calls.get(&self.call) {
            Some(call) if call.answer_at_ms <= now => {
                let call = world.calls.remove(&self.call);
                if let Some((id, index)) = call.as_ref().map(|c| c.logged.clone())
                    && let Some(made) = world.call_log.get_mut(&id).and_then(|l| l.get_mut(index))
                {
                    made.answered_at_ms = Some(now);
                }
                Poll::Ready(call.map_or_else(
                    || {
                        SendOutcome::Failed(ProviderError::new(
                            ErrorClass::Unknown,
                            None,
                            None,
                            "call lost",
                        ))
                    },
                    |c| c.outcome,
                ))
            }
            // The simulator polls every task after each step, so no waker is needed.
            _ => Poll::Pending,
        }
    }
}

impl Drop for CallFuture {
    fn drop(&mut self) {
        // A crashed worker drops its calls: the answer goes nowhere.
        self.shared.world().calls.remove(&self.call);
    }
}

impl Provider for FakeProvider {
    fn name(&self) -> &ProviderName {
        &self.name
    }

    fn channel(&self) -> Channel {
        self.channel
    }

    fn send<'a>(&'a self, message: &'a Outbound) -> BoxFuture<'a, SendOutcome> {
        Box::pin(async move {
            match self.decide(message) {
                Answer::Crash => futures::future::pending().await,
                Answer::Call(call) => CallFuture { shared: self.shared.clone(), call }.await,
            }
        })
    }
}

/// The recipient ids of the workload, by index.
pub fn recipient(i: usize) -> RecipientId {
    RecipientId::new(format!("r{i}")).unwrap_or_else(|_| unreachable!("a valid id"))
}
