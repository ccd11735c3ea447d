//! The runner: drives one notification through the machine for one wake-up, executing the
//! machine's effects through the ports.
//!
//! Production workers and the simulator run this same code; only the ports differ. The runner
//! itself holds no I/O client, no clock and no randomness: it calls [`Store`], [`Directory`],
//! [`Provider`] and [`Clock`].
//!
//! A wake-up runs the pure steps (filter, render, rate decision) in memory and commits twice at
//! most: once to claim the send (state `sending`, with a lease wake-up in case this worker dies
//! mid-call), once to record the provider's answer and schedule what follows. Each commit is a
//! compare-and-set on the record's version, so a duplicate or stale wake-up can never act twice.
//! The filter reads the recipient's directory entry, and reads it again right after the claim is
//! committed: the preferences, quiet hours and addresses in force when the send was claimed are
//! the ones that decide whether, and where, the provider is called.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{Map, Value};
use steps::collapse::{CollapseDecision, Joined, Merged};
use steps::correlation::Correlation;
use steps::fallback::FallbackDecision;
use steps::filter::{self, FilterDecision};
use steps::locale::Locale;
use steps::model::{
    Attempt, Category, Channel, NotificationId, ProviderName, Recipient, Request, TemplateRef,
};
use steps::model::{TemplateId, TenantId};
use steps::outcome::{ErrorClass, ProviderError, SendOutcome};
use steps::rate::{RateDecision, SendSlot};
use steps::recipient::RecipientEntry;
use steps::render::{Content, Limits, RenderError, Rendered, TemplateSet};
use tracing::Instrument as _;

use crate::dlq::{self, DlqFilter, DlqPlan, Truncated};
use crate::machine::{self, Context, Effect, Event, Machine, Receipt, Resume, State, StateKind};
use crate::policy::Policy;
use crate::ports::{
    CLAIM_LEASE_MS, Claimed, Clock, CollapseGroup, CreatedOnce, Delivery, Directory, EventKey,
    Observer, Outbound, Provider, Purged, RecipientKey, SendHints, Store, StoreError, StoredItem,
    StoredResponse, TemplateStore,
};
use crate::record::{
    Cause, Commit, CommitOutcome, Created, HistoryEntry, Idempotency, Record, Replay, Wake,
};
use crate::templates::{TemplateError, Templates};

/// The most events one wake-up may feed the machine. A well-formed lifecycle needs about ten; more
/// means the machine loops, which is a bug worth stopping on.
const EVENTS_PER_WAKE_MAX: usize = 64;
/// How often a cancel or a receipt retries after losing a compare-and-set race.
const CANCEL_TRIES_MAX: usize = 8;

/// What one wake-up came to. None of these is an error: the wake-up is done either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Advanced {
    /// No such notification (purged, or a forged wake-up).
    Missing,
    /// The record moved past the wake-up's version: a duplicate or superseded wake-up.
    Stale {
        /// The version found.
        current: u64,
    },
    /// Nothing to do (terminal, or waiting for a receipt).
    Settled {
        /// The state found.
        state: StateKind,
    },
    /// Progress was committed.
    Committed {
        /// The new version.
        version: u64,
        /// The new state.
        state: StateKind,
        /// When the next wake-up is due, if one was scheduled.
        wake_at_ms: Option<u64>,
    },
    /// Another worker committed first; its wake-up carries on.
    Conflict,
}

/// What the application asks for, before the template is pinned.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    /// The recipient.
    pub recipient: Recipient,
    /// The channel.
    pub channel: Channel,
    /// The template.
    pub template: TemplateId,
    /// The template variables.
    pub data: serde_json::Map<String, serde_json::Value>,
    /// The category.
    pub category: Category,
    /// The locale to render in (absent: the template's default).
    pub locale: Option<Locale>,
    /// The event it reports and the group it may be collapsed into, if any.
    pub correlation: Correlation,
}

/// Why a submission was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The template is unknown, lacks the channel, or does not render with the data.
    #[error(transparent)]
    Template(#[from] RenderError),
    /// The idempotency key was used before with a different request.
    #[error("idempotency key was already used{} with a different request", .id.as_ref().map(|id| format!(" for notification {id}")).unwrap_or_default())]
    KeyReused {
        /// The earlier notification, when known.
        id: Option<NotificationId>,
    },
    /// A request with the same idempotency key and body is still being handled.
    #[error("a request with this idempotency key is in flight; retry in {retry_after_ms} ms")]
    InFlight {
        /// When to retry, ms from now.
        retry_after_ms: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<TemplateError> for SubmitError {
    fn from(error: TemplateError) -> Self {
        match error {
            TemplateError::Render(e) => SubmitError::Template(e),
            TemplateError::Store(e) => SubmitError::Store(e),
            TemplateError::NoRegistry => SubmitError::Store(no_registry()),
        }
    }
}

/// A runner asked for a registry version without a registry: a wiring mistake, reported as an
/// infrastructure error so nothing is failed for it.
fn no_registry() -> StoreError {
    StoreError::Unavailable("no template registry is configured in this process".into())
}

/// Splits what rendering a stored notification came to: a render error is the lifecycle's
/// business (the notification fails), a registry that could not be read is an infrastructure
/// error (nothing is decided, the wake-up is retried).
fn split(
    result: Result<Rendered, TemplateError>,
) -> Result<Result<Rendered, RenderError>, StoreError> {
    match result {
        Ok(rendered) => Ok(Ok(rendered)),
        Err(TemplateError::Render(error)) => Ok(Err(error)),
        Err(TemplateError::Store(error)) => Err(error),
        Err(TemplateError::NoRegistry) => Err(no_registry()),
    }
}

/// What a submission came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The notification's id.
    pub id: NotificationId,
    /// Whether this request created it (false: an idempotent replay, or a duplicate event).
    pub created: bool,
    /// Whether the id is an earlier notification of the same event (event-level dedup), now or
    /// in the request an idempotent replay repeats.
    pub deduplicated: bool,
    /// Whether this is the stored answer of an earlier request with the same idempotency key.
    pub replayed: bool,
}

impl Submitted {
    fn new(id: NotificationId) -> Self {
        Self { id, created: true, deduplicated: false, replayed: false }
    }

    /// The answer stored for an idempotent replay.
    pub fn stored(&self) -> StoredItem {
        StoredItem { id: self.id.clone(), deduplicated: self.deduplicated }
    }

    /// A stored answer, replayed.
    pub fn replay(item: &StoredItem) -> Self {
        Self {
            id: item.id.clone(),
            created: false,
            deduplicated: item.deduplicated,
            replayed: true,
        }
    }
}

/// What a cancel came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancelled {
    /// Cancelled now.
    Done,
    /// No such notification.
    NotFound,
    /// Too late: the notification is in `state`.
    Refused {
        /// The state that refused.
        state: StateKind,
    },
}

/// What a receipt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// It moved the notification to `state`.
    Applied {
        /// The new state.
        state: StateKind,
    },
    /// The notification's state does not take it (a duplicate, a late or an early receipt).
    Ignored {
        /// The state found.
        state: StateKind,
    },
    /// No such notification.
    NotFound,
}

/// What replaying one dead letter came to (or, in a dry run, would come to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayVerdict {
    /// Re-driven through the lifecycle from `received`, its first wake-up at `at_ms`.
    Replay {
        /// When its lifecycle starts again, ms since the Unix epoch.
        at_ms: u64,
        /// Whether its sends are flagged as possible duplicates (forced past an unknown outcome).
        possible_duplicate: bool,
    },
    /// Left alone: an attempt's outcome was unknown, so it may have been delivered (the operator
    /// can insist with `include_unknown`).
    MaybeDelivered,
    /// Left alone: it is not dead-lettered (any more): replayed already, delivered late, or
    /// never dead-lettered.
    NotDeadLettered {
        /// The state found.
        state: StateKind,
    },
    /// No such notification.
    NotFound,
}

/// How to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayOptions {
    /// Only say what would happen; change nothing.
    pub dry_run: bool,
    /// Replay even notifications that may have been delivered (an unknown outcome); their sends
    /// are flagged as possible duplicates.
    pub include_unknown: bool,
    /// Replays per second (1..=[`dlq::REPLAY_RATE_MAX`]): the n-th replayed notification's
    /// first wake-up is `n / rate` seconds from now.
    pub rate_per_sec: u32,
}

/// What a replay of a filter's dead letters came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Each selected notification and its verdict, oldest dead letter first.
    pub items: Vec<(NotificationId, ReplayVerdict)>,
    /// How many DLQ entries were examined.
    pub scanned: usize,
    /// Why the examination stopped early, if it did.
    pub truncated: Option<Truncated>,
}

/// What purging one dead letter came to (or, in a dry run, would come to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeVerdict {
    /// Deleted: record, history, index entries and idempotency key.
    Purge,
    /// Left alone: it is not dead-lettered (any more).
    NotDeadLettered {
        /// The state found.
        state: StateKind,
    },
    /// No such notification.
    NotFound,
}

/// What a purge of a filter's dead letters came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeReport {
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Each selected notification and its verdict, oldest dead letter first.
    pub items: Vec<(NotificationId, PurgeVerdict)>,
    /// How many DLQ entries were examined.
    pub scanned: usize,
    /// Why the examination stopped early, if it did.
    pub truncated: Option<Truncated>,
}

/// Derives a notification's seed from its id (FNV-1a): stable across processes and replays.
pub fn seed_for(id: &NotificationId) -> u64 {
    id.as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Drives notifications through the lifecycle.
pub struct Runner<S, C> {
    store: S,
    clock: C,
    templates: Templates,
    policy: Arc<Policy>,
    providers: BTreeMap<ProviderName, Arc<dyn Provider>>,
    /// Told of every committed transition (the shell's metrics, stats and live feed).
    observers: Vec<Arc<dyn Observer>>,
}

impl<S, C> std::fmt::Debug for Runner<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("providers", &self.providers.keys()).finish()
    }
}

/// One wake-up's work in progress.
struct Run<'a> {
    policy: &'a Policy,
    record: Record,
    machine: Machine,
    /// Entries not committed yet.
    history: Vec<HistoryEntry>,
    effects: VecDeque<Effect>,
    wake_at_ms: Option<u64>,
    content: Option<(Channel, Content)>,
    /// The provider whose send slot this notification holds (it was deferred to that slot).
    slot: Option<ProviderName>,
    /// What this notification's collapse group merged, once known in this wake-up.
    merged: Option<Merged>,
    now_ms: u64,
    events: usize,
}

impl<'a> Run<'a> {
    fn new(policy: &'a Policy, record: Record, now_ms: u64) -> Self {
        let machine = machine::restore(record.state.clone(), policy, record.request.channel);
        let slot = match &record.state {
            State::Deferred { resume: Resume::SendSlot { provider, .. }, .. } => {
                Some(provider.clone())
            }
            _ => None,
        };
        Run {
            slot,
            merged: None,
            policy,
            record,
            machine,
            history: Vec::new(),
            effects: VecDeque::new(),
            wake_at_ms: None,
            content: None,
            now_ms,
            events: 0,
        }
    }

    fn handle(&mut self, event: Event, cause: Cause) {
        self.events += 1;
        assert!(
            self.events <= EVENTS_PER_WAKE_MAX,
            "notification {} fed more than {EVENTS_PER_WAKE_MAX} events in one wake-up",
            self.record.id
        );
        let before = self.machine.state().clone();
        let mut context = Context::new(
            self.policy,
            self.record.request.channel,
            self.record.seed,
            self.record.budget_from_ms(),
            self.now_ms,
        )
        .with_category(&self.record.request.category);
        context.possible_duplicate = self.record.possible_duplicate();
        context.collapse_window_ms = collapse_window_ms(self.policy, &self.record.request);
        self.machine.handle_with_context(&event, &mut context);
        self.effects.extend(context.effects);
        let after = self.machine.state();
        if *after != before {
            // Terminal states never regress; the only edges out of one are dead_lettered's
            // (an operator's replay, a late delivery receipt), and EDGES lists exactly those.
            assert!(
                !before.is_terminal() || before.kind().may_move_to(after.kind()),
                "terminal state {:?} regressed to {:?} on {}",
                before.kind(),
                after.kind(),
                event.name()
            );
            self.history.push(HistoryEntry {
                at_ms: self.now_ms,
                version: self.record.version + 1,
                from: Some(before.kind()),
                to: after.clone(),
                cause,
                note: context.note,
            });
        }
    }

    /// Appends `text` to the note of the history entry the last `handle` wrote, if it wrote one
    /// (`written` is the history's length before that `handle`).
    fn annotate(&mut self, written: usize, text: &str) {
        if self.history.len() > written
            && let Some(entry) = self.history.last_mut()
        {
            let note = entry.note.get_or_insert_with(String::new);
            if !note.is_empty() {
                note.push_str("; ");
            }
            note.push_str(text);
        }
    }

    fn dirty(&self) -> bool {
        !self.history.is_empty() || self.wake_at_ms.is_some()
    }

    fn commit(&mut self) -> Commit {
        let version = self.record.version + 1;
        let mut history = std::mem::take(&mut self.history);
        for entry in &mut history {
            entry.version = version;
        }
        Commit {
            tenant: self.record.tenant.clone(),
            id: self.record.id.clone(),
            expected_version: self.record.version,
            state: self.machine.state().clone(),
            history,
            wake_at_ms: self.wake_at_ms.take(),
            now_ms: self.now_ms,
            replay: None,
        }
    }
}

/// The collapse window of a request, when it collapses: it has a `collapse_key` and its category
/// a collapse window.
fn collapse_window_ms(policy: &Policy, request: &Request) -> Option<u64> {
    request.correlation.collapse_key.as_ref()?;
    policy.collapse_window_ms(&request.category)
}

fn step(name: &str) -> Cause {
    Cause::Step { step: name.to_owned() }
}

impl<S: Store, C: Clock> Runner<S, C> {
    /// A runner over the given ports, rendering the built-in `templates` only until
    /// [`with_template_store`](Self::with_template_store) attaches the tenants' registry.
    /// `providers` are looked up by the names in the policy's routes.
    pub fn new(
        store: S,
        clock: C,
        templates: Arc<TemplateSet>,
        policy: Arc<Policy>,
        providers: impl IntoIterator<Item = Arc<dyn Provider>>,
    ) -> Self {
        let providers = providers.into_iter().map(|p| (p.name().clone(), p)).collect();
        let templates = Templates::new(templates, policy.templates.compiled_cache_max as usize);
        Self { store, clock, templates, policy, providers, observers: Vec::new() }
    }

    /// Attaches an observer, told of every transition after it is committed (after those
    /// attached before it).
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observers.push(observer);
        self
    }

    /// Commits `commit` to `record`, telling the observers when it is applied.
    async fn commit_to(
        &self,
        record: &Record,
        commit: &Commit,
    ) -> Result<CommitOutcome, StoreError> {
        let outcome = self.store.commit(commit).await?;
        if let CommitOutcome::Committed { .. } = &outcome {
            for observer in &self.observers {
                observer.committed(record, &commit.history);
            }
        }
        Ok(outcome)
    }

    /// Tells the observers about a created notification, or a duplicate answered instead.
    pub(crate) fn observe_created(&self, record: &Record, first: &HistoryEntry, created: bool) {
        for observer in &self.observers {
            if created {
                observer.created(record, first);
            } else {
                observer.deduplicated(record);
            }
        }
    }

    /// Attaches the tenants' template registry (in production, the same store).
    pub fn with_template_store(mut self, registry: Arc<dyn TemplateStore>) -> Self {
        self.templates = self.templates.with_registry(registry);
        self
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The templates: built-ins and the registry.
    pub fn templates(&self) -> &Templates {
        &self.templates
    }

    /// The limits rendering checks (the policy's SMS segment cap).
    pub fn render_limits(&self) -> Limits {
        self.policy.templates.limits()
    }

    /// Renders what a submission would send, without storing anything: the template `tenant`
    /// gets for its id (the published version), in the submission's locale, with its data,
    /// within every channel limit. What `submit` checks before it stores.
    pub async fn check_submission(
        &self,
        tenant: &TenantId,
        submission: &Submission,
    ) -> Result<(TemplateRef, Rendered), SubmitError> {
        let compiled = self.templates.published(tenant, &submission.template).await?;
        // A collapsing submission renders as a group of one: the `collapse` variables are there.
        let collapses = submission.correlation.collapse_key.is_some()
            && self.policy.collapse_window_ms(&submission.category).is_some();
        let data = if collapses {
            let placeholder = NotificationId::new("n").unwrap_or_else(|_| unreachable!("valid"));
            let alone = Merged::alone(&placeholder, &submission.data);
            std::borrow::Cow::Owned(steps::collapse::context(&submission.data, &alone))
        } else {
            std::borrow::Cow::Borrowed(&submission.data)
        };
        let rendered = compiled.render(
            submission.channel,
            submission.locale.as_ref(),
            &data,
            &self.render_limits(),
        )?;
        Ok((compiled.pin(), rendered))
    }

    /// Renders a stored notification for `channel` with the version it pinned and `data` (its
    /// own, or for a collapsing one with what its group merged: see [`Runner::render_data`]).
    async fn render(
        &self,
        record: &Record,
        channel: Channel,
        data: &Map<String, Value>,
    ) -> Result<Rendered, TemplateError> {
        let request = &record.request;
        let compiled = self.templates.pinned(&record.tenant, &request.template).await?;
        Ok(compiled.render(channel, request.locale.as_ref(), data, &self.render_limits())?)
    }

    /// The policies.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The dedup key and window of a submission: `None` without an `event_id`, or when its
    /// category's dedup window is 0.
    pub fn event_key(&self, tenant: &TenantId, submission: &Submission) -> Option<(EventKey, u64)> {
        let event = submission.correlation.event_id.clone()?;
        let window_ms = self.policy.dedup_window_ms_for(&submission.category);
        (window_ms > 0).then(|| {
            let key = EventKey {
                tenant: tenant.clone(),
                event,
                recipient: submission.recipient.id.clone(),
                channel: submission.channel,
            };
            (key, window_ms)
        })
    }

    async fn create_once(
        &self,
        record: &Record,
        first: &HistoryEntry,
        event: &EventKey,
        window_ms: u64,
    ) -> Result<Submitted, SubmitError> {
        match self.store.create_once(record, first, event, window_ms).await? {
            CreatedOnce::New => {
                self.observe_created(record, first, true);
                Ok(Submitted::new(record.id.clone()))
            }
            CreatedOnce::Duplicate { id } => {
                self.observe_created(record, first, false);
                Ok(Submitted { id, created: false, deduplicated: true, replayed: false })
            }
            CreatedOnce::IdTaken => Err(SubmitError::KeyReused { id: Some(record.id.clone()) }),
        }
    }

    /// Runs `work` under a claim of `idempotency`'s key: `Ok(Ok(value))` when this request did
    /// the work (its answer is stored with the key), `Ok(Err(response))` with the stored answer
    /// when a request with the same key and body was done before. A request in flight with the
    /// same key ([`SubmitError::InFlight`]), or the key used with another body
    /// ([`SubmitError::KeyReused`]), is an error. When `work` fails, the claim is released so a
    /// retry can start at once; when the process dies instead, the claim's lease runs out and a
    /// retry takes over (so `work` must be idempotent: each notification it creates has its own
    /// key or event).
    pub async fn claimed<T, E, W>(
        &self,
        tenant: &TenantId,
        idempotency: &Idempotency,
        now_ms: u64,
        work: impl FnOnce() -> W,
    ) -> Result<Result<T, StoredResponse>, E>
    where
        W: Future<Output = Result<(T, StoredResponse), E>>,
        E: From<SubmitError>,
    {
        let store_error = |e: StoreError| E::from(SubmitError::Store(e));
        let claim = self.store.claim_key(tenant, idempotency, now_ms, CLAIM_LEASE_MS).await;
        match claim.map_err(store_error)? {
            Claimed::Done { response } => return Ok(Err(response)),
            Claimed::InFlight { until_ms } => {
                let retry_after_ms = until_ms.saturating_sub(now_ms).max(1);
                return Err(SubmitError::InFlight { retry_after_ms }.into());
            }
            Claimed::Reused { id } => return Err(SubmitError::KeyReused { id }.into()),
            Claimed::Held => {}
        }
        match work().await {
            Ok((value, response)) => {
                let done_ms = self.clock.now_ms();
                let finished = self.store.finish_key(tenant, idempotency, &response, done_ms).await;
                finished.map_err(store_error)?;
                Ok(Ok(value))
            }
            Err(error) => {
                // Best effort: if the release fails too, the lease runs out and a retry takes
                // over then.
                let _ = self.store.release_key(tenant, idempotency).await;
                Err(error)
            }
        }
    }

    /// Cancels a notification that has not reached a provider yet.
    pub async fn cancel(
        &self,
        tenant: &TenantId,
        id: &NotificationId,
    ) -> Result<Cancelled, StoreError> {
        self.cancel_for(tenant, id, Cause::Api { action: "cancel".into() }, None).await
    }

    /// [`cancel`](Self::cancel) with the cause recorded in the history, and `why` added to the
    /// entry's note (a campaign's cancel names the campaign).
    pub async fn cancel_for(
        &self,
        tenant: &TenantId,
        id: &NotificationId,
        cause: Cause,
        why: Option<&str>,
    ) -> Result<Cancelled, StoreError> {
        for _ in 0..CANCEL_TRIES_MAX {
            let Some(record) = self.store.load(tenant, id).await? else {
                return Ok(Cancelled::NotFound);
            };
            if record.state.kind() == StateKind::Cancelled {
                // Cancelling twice is not an error, and changes nothing.
                return Ok(Cancelled::Done);
            }
            let mut run = Run::new(&self.policy, record, self.clock.now_ms());
            run.handle(Event::Cancel, cause.clone());
            if run.machine.state().kind() != StateKind::Cancelled {
                return Ok(Cancelled::Refused { state: run.machine.state().kind() });
            }
            if let (Some(why), Some(entry)) = (why, run.history.last_mut()) {
                let note = entry.note.get_or_insert_with(String::new);
                if !note.is_empty() {
                    note.push_str("; ");
                }
                note.push_str(why);
            }
            let commit = run.commit();
            match self.commit_to(&run.record, &commit).await? {
                CommitOutcome::Committed { .. } => return Ok(Cancelled::Done),
                CommitOutcome::NotFound => return Ok(Cancelled::NotFound),
                CommitOutcome::Conflict { .. } => continue,
            }
        }
        let state =
            self.store.load(tenant, id).await?.map_or(StateKind::Received, |r| r.state.kind());
        Ok(Cancelled::Refused { state })
    }

    /// Applies a delivery receipt (a provider webhook). Duplicated, reordered and late receipts
    /// are harmless: an event the state does not take changes nothing, and terminal states
    /// never move, except that a delivery receipt from the provider a dead-lettered
    /// notification was last with takes it out of the DLQ as delivered (it arrived after all).
    pub async fn receipt(
        &self,
        tenant: &TenantId,
        id: &NotificationId,
        provider: &ProviderName,
        receipt: Receipt,
    ) -> Result<Received, StoreError> {
        self.receipt_for(tenant, id, provider, None, receipt).await
    }

    /// [`Runner::receipt`] for a receipt that names the attempt it is about (`attempt`): a
    /// negative receipt (undelivered, bounced) for another attempt than the notification's
    /// current one is ignored, since a later attempt may well arrive. A delivery receipt counts
    /// whatever the attempt: the message arrived.
    pub async fn receipt_for(
        &self,
        tenant: &TenantId,
        id: &NotificationId,
        provider: &ProviderName,
        attempt: Option<Attempt>,
        receipt: Receipt,
    ) -> Result<Received, StoreError> {
        for _ in 0..CANCEL_TRIES_MAX {
            let Some(record) = self.store.load(tenant, id).await? else {
                return Ok(Received::NotFound);
            };
            if record.state.provider() != Some(provider) {
                // A receipt from a provider the notification is not with any more (it fell back
                // to another channel or failed over) says nothing about where it is now.
                return Ok(Received::Ignored { state: record.state.kind() });
            }
            let negative = matches!(receipt, Receipt::Undelivered | Receipt::Bounced);
            if negative && attempt.is_some() && record.state.attempt() != attempt {
                return Ok(Received::Ignored { state: record.state.kind() });
            }
            let mut run = Run::new(&self.policy, record, self.clock.now_ms());
            run.handle(Event::Receipt(receipt), Cause::Receipt { provider: provider.clone() });
            if !run.effects.is_empty() {
                // The new state has work to do (an undelivered message moves on from `failed`):
                // a worker does it, woken by this commit, so a webhook request stays short.
                run.wake_at_ms = Some(run.now_ms);
            }
            if !run.dirty() {
                return Ok(Received::Ignored { state: run.machine.state().kind() });
            }
            let state = run.machine.state().kind();
            let commit = run.commit();
            match self.commit_to(&run.record, &commit).await? {
                CommitOutcome::Committed { .. } => return Ok(Received::Applied { state }),
                CommitOutcome::NotFound => return Ok(Received::NotFound),
                CommitOutcome::Conflict { .. } => continue,
            }
        }
        Err(StoreError::Unavailable(format!(
            "notification {id} kept changing while a receipt was applied; retry it"
        )))
    }

    /// Replays one dead-lettered notification: `received` again, on its original channel,
    /// attempts from 1, the retry time budget counting from `at_ms`, its first wake-up at
    /// `at_ms`; one history entry says so. One that may have been delivered (an unknown
    /// outcome) is left alone unless `include_unknown`, and then every send is flagged as a
    /// possible duplicate. Idempotent: anything not dead-lettered is left alone.
    pub async fn replay(
        &self,
        tenant: &TenantId,
        id: &NotificationId,
        at_ms: u64,
        include_unknown: bool,
        dry_run: bool,
    ) -> Result<ReplayVerdict, StoreError> {
        for _ in 0..CANCEL_TRIES_MAX {
            let Some(record) = self.store.load(tenant, id).await? else {
                return Ok(ReplayVerdict::NotFound);
            };
            if record.state.kind() != StateKind::DeadLettered {
                return Ok(ReplayVerdict::NotDeadLettered { state: record.state.kind() });
            }
            // Read after the record: if it changes in between, the commit's compare-and-set
            // fails and the next try reads both again.
            let history = self.store.history(tenant, id).await?;
            let possible_duplicate = dlq::maybe_delivered(&record, &history);
            if possible_duplicate && !include_unknown {
                return Ok(ReplayVerdict::MaybeDelivered);
            }
            if dry_run {
                return Ok(ReplayVerdict::Replay { at_ms, possible_duplicate });
            }
            let count = record.replay.as_ref().map_or(0, |r| r.count).saturating_add(1);
            let mut run = Run::new(&self.policy, record, self.clock.now_ms());
            run.handle(Event::Replay, Cause::Operator { action: "dlq replay".into() });
            if run.machine.state().kind() != StateKind::Received {
                // The machine takes a replay only from dead_lettered, which was checked above.
                return Ok(ReplayVerdict::NotDeadLettered { state: run.machine.state().kind() });
            }
            let at_ms = at_ms.max(run.now_ms);
            if let Some(entry) = run.history.last_mut() {
                let note = entry.note.get_or_insert_with(String::new);
                let wait_ms = at_ms - run.now_ms;
                note.push_str(&format!("; replay {count}, first wake-up in {wait_ms} ms"));
                if possible_duplicate {
                    note.push_str(
                        "; an earlier attempt's outcome was unknown, so every send is flagged as \
                         a possible duplicate",
                    );
                }
            }
            run.wake_at_ms = Some(at_ms);
            let mut commit = run.commit();
            commit.replay = Some(Replay { budget_from_ms: at_ms, possible_duplicate, count });
            match self.commit_to(&run.record, &commit).await? {
                CommitOutcome::Committed { .. } => {
                    return Ok(ReplayVerdict::Replay { at_ms, possible_duplicate });
                }
                CommitOutcome::NotFound => return Ok(ReplayVerdict::NotFound),
                CommitOutcome::Conflict { .. } => continue,
            }
        }
        Err(StoreError::Unavailable(format!(
            "notification {id} kept changing while it was replayed; retry"
        )))
    }

    /// What a replay of `filter`'s dead letters would touch, with the same `include_unknown`.
    pub async fn dlq_plan(
        &self,
        tenant: &TenantId,
        filter: &DlqFilter,
        include_unknown: bool,
    ) -> Result<DlqPlan, StoreError> {
        let page = self.store.dead_letters(tenant, filter, self.clock.now_ms()).await?;
        let mut plan =
            DlqPlan { scanned: page.scanned, truncated: page.truncated, ..DlqPlan::default() };
        for record in &page.records {
            let history = self.store.history(tenant, &record.id).await?;
            let replayed = include_unknown || !dlq::maybe_delivered(record, &history);
            plan.count(record, replayed);
        }
        Ok(plan)
    }

    /// Replays `filter`'s dead letters, oldest first, spread at `options.rate_per_sec` by their
    /// first wake-up (durable: nothing sleeps, and a restart keeps the spread). With
    /// `filter.ids`, each one's verdict is reported even when it is not dead-lettered.
    pub async fn dlq_replay(
        &self,
        tenant: &TenantId,
        filter: &DlqFilter,
        options: ReplayOptions,
    ) -> Result<ReplayReport, StoreError> {
        let now_ms = self.clock.now_ms();
        let page = self.store.dead_letters(tenant, filter, now_ms).await?;
        let ids = dlq::targets(filter, &page);
        let mut items = Vec::with_capacity(ids.len());
        let mut replayed = 0;
        for id in ids {
            let at_ms = dlq::replay_at_ms(now_ms, replayed, options.rate_per_sec);
            let verdict =
                self.replay(tenant, &id, at_ms, options.include_unknown, options.dry_run).await?;
            if matches!(verdict, ReplayVerdict::Replay { .. }) {
                replayed += 1;
            }
            items.push((id, verdict));
        }
        Ok(ReplayReport {
            dry_run: options.dry_run,
            items,
            scanned: page.scanned,
            truncated: page.truncated,
        })
    }

    /// Deletes one dead-lettered notification and everything stored about it. Anything not
    /// dead-lettered is left alone.
    pub async fn purge(
        &self,
        tenant: &TenantId,
        id: &NotificationId,
        dry_run: bool,
    ) -> Result<PurgeVerdict, StoreError> {
        for _ in 0..CANCEL_TRIES_MAX {
            let Some(record) = self.store.load(tenant, id).await? else {
                return Ok(PurgeVerdict::NotFound);
            };
            if record.state.kind() != StateKind::DeadLettered {
                return Ok(PurgeVerdict::NotDeadLettered { state: record.state.kind() });
            }
            if dry_run {
                return Ok(PurgeVerdict::Purge);
            }
            match self.store.purge(tenant, id, record.version).await? {
                Purged::Done => return Ok(PurgeVerdict::Purge),
                Purged::NotFound => return Ok(PurgeVerdict::NotFound),
                Purged::Conflict { .. } => continue,
            }
        }
        Err(StoreError::Unavailable(format!(
            "notification {id} kept changing while it was purged; retry"
        )))
    }

    /// Purges `filter`'s dead letters, oldest first. With `filter.ids`, each one's verdict is
    /// reported even when it is not dead-lettered.
    pub async fn dlq_purge(
        &self,
        tenant: &TenantId,
        filter: &DlqFilter,
        dry_run: bool,
    ) -> Result<PurgeReport, StoreError> {
        let page = self.store.dead_letters(tenant, filter, self.clock.now_ms()).await?;
        let ids = dlq::targets(filter, &page);
        let mut items = Vec::with_capacity(ids.len());
        for id in ids {
            let verdict = self.purge(tenant, &id, dry_run).await?;
            items.push((id, verdict));
        }
        Ok(PurgeReport { dry_run, items, scanned: page.scanned, truncated: page.truncated })
    }

    /// Commits the run's progress; `None` when another worker got there first.
    async fn commit(&self, run: &mut Run<'_>) -> Result<Option<u64>, StoreError> {
        let commit = run.commit();
        let span = tracing::info_span!(
            "commit",
            notification_id = %run.record.id,
            tenant = %run.record.tenant,
            version = run.record.version,
        );
        match self.commit_to(&run.record, &commit).instrument(span).await? {
            CommitOutcome::Committed { version } => {
                run.record.version = version;
                run.record.state = commit.state;
                run.record.updated_at_ms = commit.now_ms;
                Ok(Some(version))
            }
            CommitOutcome::Conflict { .. } | CommitOutcome::NotFound => Ok(None),
        }
    }
}

/// What the wake-up does after an effect: the next one, or stop with this answer.
enum Flow {
    Next,
    Done(Advanced),
}

/// The span an effect's work runs in: named after the step, with the notification id, the
/// tenant and what the effect names (channel; provider and attempt for a send). Ids only: never
/// an address or content. None for the effects that do no work of their own.
fn effect_span(effect: &Effect, record: &Record) -> tracing::Span {
    let (id, tenant) = (&record.id, &record.tenant);
    match effect {
        Effect::Filter { channel } => {
            tracing::info_span!("filter", notification_id = %id, %tenant, %channel)
        }
        Effect::Render { channel } => {
            tracing::info_span!("render", notification_id = %id, %tenant, %channel)
        }
        Effect::AcquireRate { channel } => {
            tracing::info_span!("rate", notification_id = %id, %tenant, %channel)
        }
        Effect::Collapse { channel } | Effect::CollapseClose { channel } => {
            tracing::info_span!("collapse", notification_id = %id, %tenant, %channel)
        }
        Effect::Fallback { from } => {
            tracing::info_span!("fallback", notification_id = %id, %tenant, channel = %from)
        }
        Effect::Send { channel, provider, attempt, .. } => tracing::info_span!(
            "send",
            notification_id = %id,
            %tenant,
            %channel,
            %provider,
            attempt = attempt.0
        ),
        Effect::Proceed | Effect::Wake { .. } => tracing::Span::none(),
    }
}

/// The lifecycle's own work: it reads the recipients directory for every filter decision.
impl<S: Store + Directory, C: Clock> Runner<S, C> {
    /// Accepts a notification: pins its template's published version, renders it once to catch
    /// missing variables and broken limits now rather than at send time, and stores it with its
    /// first wake-up.
    ///
    /// With an `event_id` (and a dedup window for its category), the record is created once per
    /// event, recipient and channel: a duplicate answers with the first notification's id. The
    /// record then lives in the event's hash slot, so an idempotency key (which lives in its
    /// own) is claimed first and finished with the answer; a retry meanwhile is
    /// [`SubmitError::InFlight`]. `id` must be minted for that slot (see the storage crate's
    /// `keys::new_notification_id`).
    pub async fn submit(
        &self,
        tenant: &TenantId,
        id: NotificationId,
        submission: Submission,
        idempotency: Option<&Idempotency>,
    ) -> Result<Submitted, SubmitError> {
        let event = self.event_key(tenant, &submission);
        let (record, first) = self.accept(tenant, id.clone(), submission).await?;
        let now_ms = record.created_at_ms;
        let Some((event, window_ms)) = event else {
            return match self.store.create(&record, &first, idempotency).await? {
                Created::New => {
                    self.observe_created(&record, &first, true);
                    Ok(Submitted::new(id))
                }
                Created::Existing { id, same_request: true } => {
                    Ok(Submitted::replay(&StoredItem { id, deduplicated: false }))
                }
                // The record's own id: a key claimed by a request that has not finished (or an id
                // collision), which names no earlier notification.
                Created::Existing { id: other, same_request: false } => {
                    Err(SubmitError::KeyReused { id: (other != id).then_some(other) })
                }
            };
        };
        let Some(idempotency) = idempotency else {
            return self.create_once(&record, &first, &event, window_ms).await;
        };
        let work = || async {
            let submitted = self.create_once(&record, &first, &event, window_ms).await?;
            let response = StoredResponse { items: vec![submitted.stored()] };
            Ok((submitted, response))
        };
        self.claimed::<_, SubmitError, _>(tenant, idempotency, now_ms, work).await.and_then(
            |claimed| match claimed {
                Ok(submitted) => Ok(submitted),
                Err(response) => response
                    .items
                    .first()
                    .map(Submitted::replay)
                    .ok_or_else(|| StoreError::Corrupt("an empty stored answer".into()).into()),
            },
        )
    }

    /// What [`submit`](Self::submit) stores: the record at version 1 in `received`, rendering in
    /// the stored profile's locale when none is asked for, its template pinned and rendered once,
    /// and its first history entry. Campaigns create their notifications from it too
    /// (`fanout`).
    pub async fn accept(
        &self,
        tenant: &TenantId,
        id: NotificationId,
        submission: Submission,
    ) -> Result<(Record, HistoryEntry), SubmitError> {
        let mut submission = submission;
        if submission.locale.is_none() {
            // No locale asked for: the stored profile's, pinned now so that the check below
            // renders exactly what the recipient will get.
            let entry = self.store.recipient(tenant, &submission.recipient.id).await?;
            submission.locale =
                entry.as_ref().and_then(|e| e.contact()).and_then(|c| c.locale.clone());
        }
        let (template, _) = self.check_submission(tenant, &submission).await?;
        let now_ms = self.clock.now_ms();
        let state = State::Received {};
        let record = Record {
            tenant: tenant.clone(),
            seed: seed_for(&id),
            id: id.clone(),
            version: 1,
            state: state.clone(),
            request: Request {
                recipient: submission.recipient,
                channel: submission.channel,
                template,
                data: submission.data,
                category: submission.category,
                locale: submission.locale,
                correlation: submission.correlation,
            },
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            wake_at_ms: Some(now_ms),
            replay: None,
        };
        let first = HistoryEntry {
            at_ms: now_ms,
            version: 1,
            from: None,
            to: state,
            cause: Cause::Api { action: "submit".into() },
            note: None,
        };
        Ok((record, first))
    }

    /// Handles one wake-up. Business outcomes (retry later, dead-lettered, skipped) are `Ok`;
    /// only infrastructure failures are errors, and the queue retries those.
    ///
    /// The preference filter reads the recipient's directory entry as it is now, at the filter
    /// step and again after every send claim is committed, before the provider is called: an
    /// opt-out, an unsubscribe, quiet hours or a removed address written before the claim stop
    /// the send (the history says which). Addresses and devices for the call come from that same
    /// read (an address given with the notification wins).
    pub async fn advance(&self, wake: &Wake) -> Result<Advanced, StoreError> {
        let span = tracing::info_span!(
            "advance",
            notification_id = %wake.id,
            tenant = %wake.tenant,
            version = wake.version,
        );
        self.advance_in_span(wake).instrument(span).await
    }

    async fn advance_in_span(&self, wake: &Wake) -> Result<Advanced, StoreError> {
        let Some(record) = self.store.load(&wake.tenant, &wake.id).await? else {
            return Ok(Advanced::Missing);
        };
        if record.version != wake.version {
            return Ok(Advanced::Stale { current: record.version });
        }
        let mut run = Run::new(&self.policy, record, self.clock.now_ms());
        run.handle(Event::Wake, Cause::WakeUp);
        while let Some(effect) = run.effects.pop_front() {
            // Each effect's work in a span of its own (`filter`, `render`, `rate`, `send`, ...),
            // inside the caller's; `instrument`, as the work awaits.
            let span = effect_span(&effect, &run.record);
            let run = &mut run;
            let flow = async move {
                match effect {
                    Effect::Filter { channel } => {
                        let entry = self.directory_entry(run).await?;
                        let decision =
                            self.filter(&run.record, channel, entry.as_ref(), run.now_ms);
                        let decision = self.joined_before(run, channel, decision).await?;
                        let written = run.history.len();
                        run.handle(Event::Filtered(decision), step("filter"));
                        run.annotate(written, &read_at(entry.as_ref()));
                    }
                    Effect::Render { channel } => {
                        let data = self.render_data(run).await?;
                        let rendered = split(self.render(&run.record, channel, &data).await)?;
                        let result = rendered.map(|rendered| {
                            run.content = Some((channel, rendered.content));
                        });
                        run.handle(Event::Rendered(result), step("render"));
                    }
                    Effect::Collapse { channel } => {
                        let decision = self.collapse_join(run, channel).await?;
                        run.handle(Event::Collapsed(decision), step("collapse"));
                    }
                    Effect::CollapseClose { channel } => {
                        let decision = self.collapse_close(run, channel).await?;
                        run.handle(Event::Collapsed(decision), step("collapse"));
                    }
                    Effect::AcquireRate { channel } => {
                        // The channel's window and the category's caps, all or nothing; none for a
                        // critical category.
                        let request = &run.record.request;
                        let windows = self.policy.windows(&request.category, channel);
                        let decision = if windows.is_empty() {
                            RateDecision::Allow
                        } else {
                            let key = RecipientKey {
                                tenant: run.record.tenant.clone(),
                                recipient: request.recipient.id.clone(),
                            };
                            let admission = self
                                .store
                                .acquire_windows(&key, &run.record.id, &windows, run.now_ms)
                                .await?;
                            steps::limits::decide(&windows, &admission)
                        };
                        run.handle(Event::RateChecked(decision), step("rate_limit"));
                    }
                    Effect::Proceed => run.handle(Event::Proceed, step("route")),
                    Effect::Fallback { from } => {
                        let decision = self.fallback(run, from).await?;
                        run.handle(Event::Fallback(decision), step("fallback"));
                    }
                    Effect::Wake { at_ms } => run.wake_at_ms = Some(at_ms),
                    Effect::Send { channel, provider, attempt, .. } => {
                        // Pace: a provider with a send rate gets at most its rate, from every worker
                        // together. Over it, the send holds a later slot and waits for it durably.
                        if let Some(rate) = self.policy.send_rate(&provider)
                            && run.slot.take_if(|held| *held == provider).is_none()
                        {
                            let record = &run.record;
                            let ttl_ms =
                                self.policy.retry_for(&record.request.category, channel).ttl_ms;
                            let wait_ms_max = record
                                .budget_from_ms()
                                .saturating_add(ttl_ms)
                                .saturating_sub(run.now_ms);
                            let throttled = match self
                                .store
                                .send_slot(&provider, rate, run.now_ms, wait_ms_max)
                                .await?
                            {
                                SendSlot::Now => None,
                                SendSlot::At { at_ms } => {
                                    Some(Event::Throttled { until_ms: at_ms, reserved: true })
                                }
                                SendSlot::TooLate { at_ms } => {
                                    Some(Event::Throttled { until_ms: at_ms, reserved: false })
                                }
                            };
                            if let Some(event) = throttled {
                                run.handle(event, step("send_rate"));
                                return Ok(Flow::Next);
                            }
                        }
                        // The content: rendered by this wake-up already, or rendered now (a send
                        // resumed after a wait), with the pinned version. Before the claim, so that
                        // a registry read that fails leaves nothing claimed; a render error is
                        // recorded after the claim, as the lifecycle expects it there.
                        let content = match run.content.take() {
                            Some((c, content)) if c == channel => Ok(content),
                            _ => {
                                let data = self.render_data(run).await?;
                                let rendered = self.render(&run.record, channel, &data).await;
                                split(rendered)?.map(|r| r.content)
                            }
                        };
                        // Claim: the send is durable before the provider hears of it. If this
                        // worker dies during the call, the lease wake-up finds `sending` at this
                        // version and reconciles instead of silently sending again.
                        run.wake_at_ms = Some(run.now_ms + self.policy.send_lease_ms);
                        match self.commit(run).await? {
                            Some(_) => {}
                            None => return Ok(Flow::Done(Advanced::Conflict)),
                        }
                        // Re-check, after the claim: whatever the directory held when the claim was
                        // committed is read here, so an opt-out written before the claim is never
                        // missed. The time is the claim's (quiet hours are judged at the claim).
                        let entry = self.directory_entry(run).await?;
                        let recheck = self.filter(&run.record, channel, entry.as_ref(), run.now_ms);
                        let rechecked = match recheck {
                            FilterDecision::Allow { rule, .. } => rule,
                            refused => {
                                let written = run.history.len();
                                run.handle(Event::Rechecked(refused), step("recheck"));
                                run.annotate(written, &read_at(entry.as_ref()));
                                return Ok(Flow::Next);
                            }
                        };
                        let content = match content {
                            Ok(content) => content,
                            Err(error) => {
                                run.handle(Event::Rendered(Err(error)), step("render"));
                                return Ok(Flow::Next);
                            }
                        };
                        let delivery = match self.providers.get(&provider) {
                            Some(p) => {
                                let request = &run.record.request;
                                let message = Outbound {
                                    tenant: run.record.tenant.clone(),
                                    notification_id: run.record.id.clone(),
                                    attempt,
                                    idempotency_key: format!(
                                        "{}:{channel}:{provider}",
                                        run.record.id
                                    ),
                                    recipient: filter::addressed(
                                        &request.recipient,
                                        entry.as_ref(),
                                    ),
                                    category: request.category.clone(),
                                    content,
                                    devices: filter::devices(entry.as_ref()),
                                };
                                let hints = self.send_hints(&run.record, channel);
                                let span = tracing::info_span!(
                                    "provider_call",
                                    notification_id = %message.notification_id,
                                    tenant = %message.tenant,
                                    %channel,
                                    %provider,
                                    attempt = attempt.0,
                                );
                                p.deliver(&message, &hints).instrument(span).await
                            }
                            None => Delivery {
                                outcome: SendOutcome::Failed(ProviderError::new(
                                    ErrorClass::ProviderConfig,
                                    None,
                                    None,
                                    &format!("provider {provider} is not configured"),
                                )),
                                devices: Vec::new(),
                            },
                        };
                        run.now_ms = self.clock.now_ms();
                        let removed = self.remove_dead_devices(run, &delivery).await;
                        let written = run.history.len();
                        run.handle(
                            Event::SendResult(delivery.outcome.clone()),
                            Cause::Provider { provider },
                        );
                        run.annotate(
                            written,
                            &format!(
                                "re-checked after the claim: {rechecked}; {}",
                                read_at(entry.as_ref())
                            ),
                        );
                        if let Some(summary) = delivery.summary() {
                            run.annotate(written, &summary);
                        }
                        if let Some(removed) = removed {
                            run.annotate(written, &removed);
                        }
                    }
                }
                Ok::<_, StoreError>(Flow::Next)
            }
            .instrument(span)
            .await?;
            if let Flow::Done(advanced) = flow {
                return Ok(advanced);
            }
        }
        if !run.dirty() {
            return Ok(Advanced::Settled { state: run.machine.state().kind() });
        }
        let wake_at_ms = run.wake_at_ms;
        match self.commit(&mut run).await? {
            Some(version) => {
                Ok(Advanced::Committed { version, state: run.machine.state().kind(), wake_at_ms })
            }
            None => Ok(Advanced::Conflict),
        }
    }

    /// What a provider may use beyond the message: the collapse key, whether the category is
    /// critical, and when the retry budget ends.
    fn send_hints(&self, record: &Record, channel: Channel) -> SendHints {
        let request = &record.request;
        let ttl_ms = self.policy.retry_for(&request.category, channel).ttl_ms;
        SendHints {
            collapse_key: request.correlation.collapse_key.as_ref().map(|k| k.as_str().to_owned()),
            critical: self.policy.is_critical(&request.category),
            expires_at_ms: Some(record.budget_from_ms().saturating_add(ttl_ms)),
        }
    }

    /// Removes the push devices a send found dead from the recipient, and says so for the
    /// history (by device id, never the token). A removal that fails is noted, not an error: the
    /// message was sent, and the next send finds the token dead again and retries the removal.
    async fn remove_dead_devices(&self, run: &Run<'_>, delivery: &Delivery) -> Option<String> {
        let tenant = &run.record.tenant;
        let recipient = &run.record.request.recipient.id;
        let mut removed = Vec::new();
        let mut kept = Vec::new();
        for device in delivery.dead() {
            match self.store.remove_device(tenant, recipient, device, run.now_ms).await {
                Ok(_) => removed.push(device.to_string()),
                Err(error) => kept.push(format!("{device} ({error})")),
            }
        }
        let mut parts = Vec::new();
        if !removed.is_empty() {
            parts.push(format!("removed dead device(s) {}", removed.join(", ")));
        }
        if !kept.is_empty() {
            parts.push(format!("could not remove dead device(s) {}", kept.join(", ")));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// The recipient's directory entry, as it is now.
    async fn directory_entry(&self, run: &Run<'_>) -> Result<Option<RecipientEntry>, StoreError> {
        self.store.recipient(&run.record.tenant, &run.record.request.recipient.id).await
    }

    /// The preference filter for `record` on `channel` at `now_ms`, with the policy's rules for
    /// its category and what the directory holds (`entry`).
    fn filter(
        &self,
        record: &Record,
        channel: Channel,
        entry: Option<&RecipientEntry>,
        now_ms: u64,
    ) -> FilterDecision {
        let rules = self.policy.filter_rules(&record.request.category);
        filter::decide(&record.request, channel, &rules, entry, now_ms)
    }

    /// The variables a notification renders with: its data, and for a collapsing one what its
    /// group merged (`steps::collapse::context`), kept with its record once the group closed.
    async fn render_data(&self, run: &mut Run<'_>) -> Result<Map<String, Value>, StoreError> {
        let record = &run.record;
        if collapse_window_ms(run.policy, &record.request).is_none() {
            return Ok(record.request.data.clone());
        }
        if run.merged.is_none() {
            run.merged = self.store.merged(&record.tenant, &record.id).await?;
        }
        let data = &run.record.request.data;
        let alone;
        let merged = match &run.merged {
            Some(merged) => merged,
            None => {
                alone = Merged::alone(&run.record.id, data);
                &alone
            }
        };
        Ok(steps::collapse::context(data, merged))
    }

    /// A collapsing notification the filter would skip, but that joined another's collapse group
    /// before (a wake-up whose join was applied but whose answer was lost, run again after an
    /// opt-out): its data is in that group's one message already, so it goes on to its collapse
    /// step, which finds the membership and ends it collapsed into the survivor, as its history
    /// then says. (The survivor's own send is checked against the preferences at its claim.)
    async fn joined_before(
        &self,
        run: &Run<'_>,
        channel: Channel,
        decision: FilterDecision,
    ) -> Result<FilterDecision, StoreError> {
        let FilterDecision::Skip(reason) = &decision else { return Ok(decision) };
        let record = &run.record;
        let (Some(group), Some(_)) = (
            Self::collapse_group(record, channel),
            collapse_window_ms(run.policy, &record.request),
        ) else {
            return Ok(decision);
        };
        match self.store.collapse_member(&group, &record.id, run.now_ms).await? {
            Some(into) if into != record.id => Ok(FilterDecision::Allow {
                channel,
                rule: format!(
                    "joined the collapse group of {into} before this decision ({reason}); that \
                     group's message carries this one"
                ),
            }),
            _ => Ok(decision),
        }
    }

    fn collapse_group(record: &Record, channel: Channel) -> Option<CollapseGroup> {
        Some(CollapseGroup {
            tenant: record.tenant.clone(),
            recipient: record.request.recipient.id.clone(),
            channel,
            key: record.request.correlation.collapse_key.clone()?,
        })
    }

    /// Keeps what the group merged with the record, for every later render, and says so.
    async fn closed(
        &self,
        run: &mut Run<'_>,
        merged: Merged,
    ) -> Result<CollapseDecision, StoreError> {
        let record = &run.record;
        self.store.keep_merged(&record.tenant, &record.id, &merged).await?;
        let count = merged.items.len();
        run.merged = Some(merged);
        Ok(CollapseDecision::Closed { count })
    }

    /// Joins the notification's collapse group (or opens one). A survivor whose group closed
    /// before (a replay, a fallback to another channel) has what it merged already.
    async fn collapse_join(
        &self,
        run: &mut Run<'_>,
        channel: Channel,
    ) -> Result<CollapseDecision, StoreError> {
        let record = &run.record;
        if let Some(merged) = self.store.merged(&record.tenant, &record.id).await? {
            let count = merged.items.len();
            run.merged = Some(merged);
            return Ok(CollapseDecision::Closed { count });
        }
        let (Some(group), Some(window_ms)) = (
            Self::collapse_group(record, channel),
            collapse_window_ms(run.policy, &record.request),
        ) else {
            // The machine asks only for collapsing notifications: render it alone.
            let merged = Merged::alone(&record.id, &record.request.data);
            return self.closed(run, merged).await;
        };
        let data = &record.request.data;
        match self.store.collapse_join(&group, &record.id, data, window_ms, run.now_ms).await? {
            Joined::Merged { into } => Ok(CollapseDecision::Merged { into }),
            Joined::Wait { until_ms } => Ok(CollapseDecision::Wait { until_ms }),
            Joined::Closed { merged } => self.closed(run, merged).await,
        }
    }

    /// Closes the group the notification opened, once its window ended (or its time budget
    /// cannot wait for that).
    async fn collapse_close(
        &self,
        run: &mut Run<'_>,
        channel: Channel,
    ) -> Result<CollapseDecision, StoreError> {
        let record = &run.record;
        let merged = match Self::collapse_group(record, channel) {
            Some(group) => self.store.collapse_close(&group, &record.id, run.now_ms).await?,
            None => None,
        };
        let merged = merged.unwrap_or_else(|| Merged::alone(&record.id, &record.request.data));
        self.closed(run, merged).await
    }

    /// Decides the channel fallback from the notification's whole history: which channels it
    /// went through already, and whether an attempt on the failed one had an unknown outcome.
    /// The fallback channel must pass the preference filter as the directory holds it now.
    async fn fallback(&self, run: &Run<'_>, from: Channel) -> Result<FallbackDecision, StoreError> {
        let record = &run.record;
        let stored = self.store.history(&record.tenant, &record.id).await?;
        let history: Vec<&HistoryEntry> = stored.iter().chain(run.history.iter()).collect();
        // An operator's replay starts the lifecycle over: only what happened since counts.
        let since_replay = history.iter().rposition(|e| e.is_replay()).map_or(0, |i| i + 1);
        let mut tried = vec![record.request.channel];
        let mut maybe_delivered = false;
        for entry in &history[since_replay..] {
            if let State::Filtered { channel } = entry.to
                && !tried.contains(&channel)
            {
                tried.push(channel);
            }
            maybe_delivered |=
                entry.to.kind() == StateKind::Unknown && entry.to.channel() == Some(from);
        }
        let entry = self.directory_entry(run).await?;
        Ok(steps::fallback::decide(
            &record.request,
            &self.policy.fallback,
            from,
            &tried,
            maybe_delivered,
            |channel| self.filter(record, channel, entry.as_ref(), run.now_ms),
        ))
    }
}

/// What a decision read of the directory saw, for the history.
fn read_at(entry: Option<&RecipientEntry>) -> String {
    match entry {
        Some(entry) => format!("read at directory revision {}", entry.revision),
        None => "nothing stored for the recipient".to_owned(),
    }
}
