//! The runner: drives one notification through the machine for one wake-up, executing the
//! machine's effects through the ports.
//!
//! Production workers and the simulator run this same code; only the ports differ. The runner
//! itself holds no I/O client, no clock and no randomness: it calls [`Store`], [`Provider`] and
//! [`Clock`].
//!
//! A wake-up runs the pure steps (filter, render, rate decision) in memory and commits twice at
//! most: once to claim the send (state `sending`, with a lease wake-up in case this worker dies
//! mid-call), once to record the provider's answer and schedule what follows. Each commit is a
//! compare-and-set on the record's version, so a duplicate or stale wake-up can never act twice.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use steps::fallback::FallbackDecision;
use steps::model::{Category, Channel, NotificationId, ProviderName, Recipient, Request};
use steps::model::{TemplateId, TenantId};
use steps::outcome::{ErrorClass, ProviderError, SendOutcome};
use steps::rate::RateDecision;
use steps::render::{Content, RenderError, TemplateSet};

use crate::machine::{self, Context, Effect, Event, Machine, Receipt, State, StateKind};
use crate::policy::Policy;
use crate::ports::{Clock, Outbound, Provider, RateKey, Store, StoreError};
use crate::record::{
    Cause, Commit, CommitOutcome, Created, HistoryEntry, Idempotency, Record, Wake,
};

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
}

/// Why a submission was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The template is unknown, lacks the channel, or does not render with the data.
    #[error(transparent)]
    Template(#[from] RenderError),
    /// The idempotency key was used before with a different request.
    #[error("idempotency key was already used for notification {id} with a different request")]
    KeyReused {
        /// The earlier notification.
        id: NotificationId,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a submission came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The notification's id.
    pub id: NotificationId,
    /// False when the idempotency key returned an earlier notification.
    pub created: bool,
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
    templates: Arc<TemplateSet>,
    policy: Arc<Policy>,
    providers: BTreeMap<ProviderName, Arc<dyn Provider>>,
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
    now_ms: u64,
    events: usize,
}

impl<'a> Run<'a> {
    fn new(policy: &'a Policy, record: Record, now_ms: u64) -> Self {
        let machine = machine::restore(record.state.clone(), policy, record.request.channel);
        Run {
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
            self.record.created_at_ms,
            self.now_ms,
        )
        .with_category(&self.record.request.category);
        self.machine.handle_with_context(&event, &mut context);
        self.effects.extend(context.effects);
        let after = self.machine.state();
        if *after != before {
            assert!(!before.is_terminal(), "terminal state {:?} regressed", before.kind());
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
        }
    }
}

fn step(name: &str) -> Cause {
    Cause::Step { step: name.to_owned() }
}

impl<S: Store, C: Clock> Runner<S, C> {
    /// A runner over the given ports. `providers` are looked up by the names in the policy's
    /// routes.
    pub fn new(
        store: S,
        clock: C,
        templates: Arc<TemplateSet>,
        policy: Arc<Policy>,
        providers: impl IntoIterator<Item = Arc<dyn Provider>>,
    ) -> Self {
        let providers = providers.into_iter().map(|p| (p.name().clone(), p)).collect();
        Self { store, clock, templates, policy, providers }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The templates.
    pub fn templates(&self) -> &TemplateSet {
        &self.templates
    }

    /// The policies.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Accepts a notification: pins its template, renders it once to catch missing variables
    /// now rather than at send time, and stores it with its first wake-up.
    pub async fn submit(
        &self,
        tenant: &TenantId,
        id: NotificationId,
        submission: Submission,
        idempotency: Option<&Idempotency>,
    ) -> Result<Submitted, SubmitError> {
        let template = self.templates.pin(&submission.template)?;
        self.templates.render(&template, submission.channel, &submission.data)?;
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
            },
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            wake_at_ms: Some(now_ms),
        };
        let first = HistoryEntry {
            at_ms: now_ms,
            version: 1,
            from: None,
            to: state,
            cause: Cause::Api { action: "submit".into() },
            note: None,
        };
        match self.store.create(&record, &first, idempotency).await? {
            Created::New => Ok(Submitted { id, created: true }),
            Created::Existing { id, same_request: true } => Ok(Submitted { id, created: false }),
            Created::Existing { id, same_request: false } => Err(SubmitError::KeyReused { id }),
        }
    }

    /// Cancels a notification that has not reached a provider yet.
    pub async fn cancel(
        &self,
        tenant: &TenantId,
        id: &NotificationId,
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
            run.handle(Event::Cancel, Cause::Api { action: "cancel".into() });
            if run.machine.state().kind() != StateKind::Cancelled {
                return Ok(Cancelled::Refused { state: run.machine.state().kind() });
            }
            match self.store.commit(&run.commit()).await? {
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
    /// never move.
    pub async fn receipt(
        &self,
        tenant: &TenantId,
        id: &NotificationId,
        provider: &ProviderName,
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
            match self.store.commit(&run.commit()).await? {
                CommitOutcome::Committed { .. } => return Ok(Received::Applied { state }),
                CommitOutcome::NotFound => return Ok(Received::NotFound),
                CommitOutcome::Conflict { .. } => continue,
            }
        }
        Err(StoreError::Unavailable(format!(
            "notification {id} kept changing while a receipt was applied; retry it"
        )))
    }

    /// Handles one wake-up. Business outcomes (retry later, dead-lettered, skipped) are `Ok`;
    /// only infrastructure failures are errors, and the queue retries those.
    pub async fn advance(&self, wake: &Wake) -> Result<Advanced, StoreError> {
        let Some(record) = self.store.load(&wake.tenant, &wake.id).await? else {
            return Ok(Advanced::Missing);
        };
        if record.version != wake.version {
            return Ok(Advanced::Stale { current: record.version });
        }
        let mut run = Run::new(&self.policy, record, self.clock.now_ms());
        run.handle(Event::Wake, Cause::WakeUp);
        while let Some(effect) = run.effects.pop_front() {
            match effect {
                Effect::Filter { channel } => {
                    let decision = steps::filter::decide(&run.record.request, channel);
                    run.handle(Event::Filtered(decision), step("filter"));
                }
                Effect::Render { channel } => {
                    let request = &run.record.request;
                    let rendered = self.templates.render(&request.template, channel, &request.data);
                    let result = rendered.map(|content| {
                        run.content = Some((channel, content));
                    });
                    run.handle(Event::Rendered(result), step("render"));
                }
                Effect::AcquireRate { channel } => {
                    let decision = match self.policy.rate(channel) {
                        None => RateDecision::Allow,
                        Some(limit) => {
                            let key = RateKey {
                                tenant: run.record.tenant.clone(),
                                recipient: run.record.request.recipient.id.clone(),
                                channel,
                            };
                            limit.decide(self.store.rate_acquire(&key, limit, run.now_ms).await?)
                        }
                    };
                    run.handle(Event::RateChecked(decision), step("rate_limit"));
                }
                Effect::Proceed => run.handle(Event::Proceed, step("route")),
                Effect::Fallback { from } => {
                    let decision = self.fallback(&run, from).await?;
                    run.handle(Event::Fallback(decision), step("fallback"));
                }
                Effect::Wake { at_ms } => run.wake_at_ms = Some(at_ms),
                Effect::Send { channel, provider, attempt, .. } => {
                    // Claim: the send is durable before the provider hears of it. If this
                    // worker dies during the call, the lease wake-up finds `sending` at this
                    // version and reconciles instead of silently sending again.
                    run.wake_at_ms = Some(run.now_ms + self.policy.send_lease_ms);
                    match self.commit(&mut run).await? {
                        Some(_) => {}
                        None => return Ok(Advanced::Conflict),
                    }
                    let content = match run.content.take() {
                        Some((c, content)) if c == channel => Ok(content),
                        _ => {
                            let request = &run.record.request;
                            self.templates.render(&request.template, channel, &request.data)
                        }
                    };
                    let content = match content {
                        Ok(content) => content,
                        Err(error) => {
                            run.handle(Event::Rendered(Err(error)), step("render"));
                            continue;
                        }
                    };
                    let outcome = match self.providers.get(&provider) {
                        Some(p) => {
                            let message = Outbound {
                                tenant: run.record.tenant.clone(),
                                notification_id: run.record.id.clone(),
                                attempt,
                                idempotency_key: format!("{}:{channel}:{provider}", run.record.id),
                                recipient: run.record.request.recipient.clone(),
                                category: run.record.request.category.clone(),
                                content,
                            };
                            p.send(&message).await
                        }
                        None => SendOutcome::Failed(ProviderError::new(
                            ErrorClass::ProviderConfig,
                            None,
                            None,
                            &format!("provider {provider} is not configured"),
                        )),
                    };
                    run.now_ms = self.clock.now_ms();
                    run.handle(Event::SendResult(outcome), Cause::Provider { provider });
                }
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

    /// Decides the channel fallback from the notification's whole history: which channels it
    /// went through already, and whether an attempt on the failed one had an unknown outcome.
    async fn fallback(&self, run: &Run<'_>, from: Channel) -> Result<FallbackDecision, StoreError> {
        let record = &run.record;
        let stored = self.store.history(&record.tenant, &record.id).await?;
        let history = stored.iter().chain(run.history.iter());
        let mut tried = vec![record.request.channel];
        let mut maybe_delivered = false;
        for entry in history {
            if let State::Filtered { channel } = entry.to
                && !tried.contains(&channel)
            {
                tried.push(channel);
            }
            maybe_delivered |=
                entry.to.kind() == StateKind::Unknown && entry.to.channel() == Some(from);
        }
        Ok(steps::fallback::decide(
            &record.request,
            &self.policy.fallback,
            from,
            &tried,
            maybe_delivered,
        ))
    }

    /// Commits the run's progress; `None` when another worker got there first.
    async fn commit(&self, run: &mut Run<'_>) -> Result<Option<u64>, StoreError> {
        let commit = run.commit();
        match self.store.commit(&commit).await? {
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
