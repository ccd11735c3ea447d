//! The runner (`workflows::runner`) over a minimal in-memory store, a fixed clock and scripted
//! providers: what one wake-up commits, what it sends, and what it refuses to do twice.
//!
//! The fake store here is deliberately small (one mutex, compare-and-set on the version); the
//! real stores and their conformance suite live in `storage/`.

use std::collections::{BTreeMap, VecDeque};
use std::future::{Future, ready};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::executor::block_on;
use futures::future::BoxFuture;
use steps::model::{Attempt, Category, Channel, NotificationId, PhoneNumber, ProviderName};
use steps::model::{Recipient, RecipientId, TemplateId, TenantId};
use steps::outcome::{ErrorClass, ProviderError, SendOutcome};
use steps::rate::{RateCheck, RateLimit, SlidingWindow};
use steps::render::{Part, PartSource, TemplateSet};
use workflows::machine::{Resume, State, StateKind};
use workflows::policy::Policy;
use workflows::ports::{ApiKey, Clock, ListQuery, Outbound, Provider, RateKey, Store, StoreError};
use workflows::record::{Commit, CommitOutcome, Created, HistoryEntry, Idempotency, Record, Wake};
use workflows::runner::{Advanced, Cancelled, Runner, Submission};

const T0_MS: u64 = 1_700_000_000_000;

// ---------------------------------------------------------------------------------------------
// Fakes
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Data {
    records: BTreeMap<NotificationId, Record>,
    history: BTreeMap<NotificationId, Vec<HistoryEntry>>,
    /// Every wake-up enqueued, in order: (due at, wake).
    wakes: Vec<(u64, Wake)>,
    windows: BTreeMap<RateKey, SlidingWindow>,
}

/// One tenant's records behind a mutex; every method is atomic.
#[derive(Debug, Default)]
struct FakeStore(Mutex<Data>);

impl FakeStore {
    fn record(&self, id: &NotificationId) -> Record {
        self.0.lock().unwrap().records[id].clone()
    }

    fn wakes(&self) -> Vec<(u64, Wake)> {
        self.0.lock().unwrap().wakes.clone()
    }

    fn entries(&self, id: &NotificationId) -> Vec<HistoryEntry> {
        self.0.lock().unwrap().history[id].clone()
    }

    /// Puts a record in `state` directly (a state a crash left behind).
    fn force(&self, id: &NotificationId, state: State) -> u64 {
        let mut data = self.0.lock().unwrap();
        let record = data.records.get_mut(id).unwrap();
        record.version += 1;
        record.state = state;
        record.version
    }
}

impl Store for FakeStore {
    fn create(
        &self,
        record: &Record,
        first: &HistoryEntry,
        _idempotency: Option<&Idempotency>,
    ) -> impl Future<Output = Result<Created, StoreError>> + Send {
        let mut data = self.0.lock().unwrap();
        data.records.insert(record.id.clone(), record.clone());
        data.history.insert(record.id.clone(), vec![first.clone()]);
        let wake = Wake { tenant: record.tenant.clone(), id: record.id.clone(), version: 1 };
        data.wakes.push((record.wake_at_ms.unwrap_or(record.created_at_ms), wake));
        ready(Ok(Created::New))
    }

    fn load(
        &self,
        _tenant: &TenantId,
        id: &NotificationId,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send {
        ready(Ok(self.0.lock().unwrap().records.get(id).cloned()))
    }

    fn commit(
        &self,
        commit: &Commit,
    ) -> impl Future<Output = Result<CommitOutcome, StoreError>> + Send {
        let mut data = self.0.lock().unwrap();
        let Some(record) = data.records.get_mut(&commit.id) else {
            return ready(Ok(CommitOutcome::NotFound));
        };
        if record.version != commit.expected_version {
            return ready(Ok(CommitOutcome::Conflict { current: record.version }));
        }
        record.version += 1;
        record.state = commit.state.clone();
        record.updated_at_ms = commit.now_ms;
        record.wake_at_ms = commit.wake_at_ms;
        let version = record.version;
        let tenant = record.tenant.clone();
        data.history.get_mut(&commit.id).unwrap().extend(commit.history.iter().cloned());
        if let Some(at) = commit.wake_at_ms {
            data.wakes.push((at, Wake { tenant, id: commit.id.clone(), version }));
        }
        ready(Ok(CommitOutcome::Committed { version }))
    }

    fn history(
        &self,
        _tenant: &TenantId,
        id: &NotificationId,
    ) -> impl Future<Output = Result<Vec<HistoryEntry>, StoreError>> + Send {
        ready(Ok(self.entries(id)))
    }

    fn list(
        &self,
        _tenant: &TenantId,
        _query: &ListQuery,
    ) -> impl Future<Output = Result<Vec<Record>, StoreError>> + Send {
        ready(Err(StoreError::Unavailable("not in this fake".into())))
    }

    fn dead_letters(
        &self,
        _tenant: &TenantId,
        _limit: usize,
    ) -> impl Future<Output = Result<Vec<Record>, StoreError>> + Send {
        ready(Err(StoreError::Unavailable("not in this fake".into())))
    }

    fn rate_acquire(
        &self,
        key: &RateKey,
        limit: &RateLimit,
        now_ms: u64,
    ) -> impl Future<Output = Result<RateCheck, StoreError>> + Send {
        let mut data = self.0.lock().unwrap();
        ready(Ok(data.windows.entry(key.clone()).or_default().admit(limit, now_ms)))
    }

    fn put_api_key(
        &self,
        _key_id: &str,
        _key: &ApiKey,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        ready(Err(StoreError::Unavailable("not in this fake".into())))
    }

    fn api_key(
        &self,
        _key_id: &str,
    ) -> impl Future<Output = Result<Option<ApiKey>, StoreError>> + Send {
        ready(Err(StoreError::Unavailable("not in this fake".into())))
    }
}

#[derive(Debug, Default)]
struct FixedClock(AtomicU64);

impl Clock for FixedClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A provider that answers from a script (then accepts) and remembers what it was sent.
#[derive(Debug)]
struct Scripted {
    name: ProviderName,
    answers: Mutex<VecDeque<SendOutcome>>,
    sent: Mutex<Vec<Outbound>>,
}

impl Provider for Scripted {
    fn name(&self) -> &ProviderName {
        &self.name
    }

    fn channel(&self) -> Channel {
        Channel::Sms
    }

    fn send<'a>(&'a self, message: &'a Outbound) -> BoxFuture<'a, SendOutcome> {
        self.sent.lock().unwrap().push(message.clone());
        let answer = self.answers.lock().unwrap().pop_front().unwrap_or(SendOutcome::Accepted {
            provider_message_id: Some(format!("SM{}", message.attempt)),
            delivered: false,
        });
        Box::pin(ready(answer))
    }
}

struct World {
    runner: Runner<FakeStore, FixedClock>,
    sms: Arc<Scripted>,
    tenant: TenantId,
}

fn twilio() -> ProviderName {
    ProviderName::new("twilio").unwrap()
}

fn world(answers: Vec<SendOutcome>) -> World {
    let templates = TemplateSet::from_parts([PartSource {
        template: TemplateId::new("otp").unwrap(),
        part: Part::SmsBody,
        source: "Your code is {{ code }}".into(),
    }])
    .unwrap();
    let mut policy = Policy::default();
    policy.routes.insert(Channel::Sms, vec![twilio()]);
    let sms = Arc::new(Scripted {
        name: twilio(),
        answers: Mutex::new(answers.into()),
        sent: Mutex::new(Vec::new()),
    });
    let runner = Runner::new(
        FakeStore::default(),
        FixedClock(AtomicU64::new(T0_MS)),
        Arc::new(templates),
        Arc::new(policy),
        [sms.clone() as Arc<dyn Provider>],
    );
    World { runner, sms, tenant: TenantId::new("acme").unwrap() }
}

impl World {
    fn submit(&self, id: &str) -> NotificationId {
        let id = NotificationId::new(id).unwrap();
        let submission = Submission {
            recipient: Recipient {
                id: RecipientId::new("u1").unwrap(),
                email: None,
                phone: Some(PhoneNumber::parse("+447911123456").unwrap()),
                opt_out: vec![],
            },
            channel: Channel::Sms,
            template: TemplateId::new("otp").unwrap(),
            data: serde_json::json!({"code": "123456"}).as_object().unwrap().clone(),
            category: Category::new("otp").unwrap(),
        };
        let submitted = block_on(self.runner.submit(&self.tenant, id.clone(), submission, None));
        assert!(submitted.unwrap().created);
        id
    }

    fn advance(&self, id: &NotificationId, version: u64) -> Advanced {
        let wake = Wake { tenant: self.tenant.clone(), id: id.clone(), version };
        block_on(self.runner.advance(&wake)).unwrap()
    }

    fn set_now(&self, now_ms: u64) {
        self.runner.clock().0.store(now_ms, Ordering::SeqCst);
    }

    fn sent(&self) -> Vec<Outbound> {
        self.sms.sent.lock().unwrap().clone()
    }

    fn store(&self) -> &FakeStore {
        self.runner.store()
    }
}

fn failure(class: ErrorClass) -> SendOutcome {
    SendOutcome::Failed(ProviderError::new(class, Some(500), None, "boom"))
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn one_wake_up_claims_then_sends_then_records_the_answer() {
    let w = world(vec![]);
    let id = w.submit("n_1");
    assert_eq!(
        w.advance(&id, 1),
        Advanced::Committed { version: 3, state: StateKind::Sent, wake_at_ms: None }
    );
    // Version 2 was the claim (with its lease wake-up), version 3 the answer.
    let lease = w.runner.policy().send_lease_ms;
    let wakes: Vec<(u64, u64)> = w.store().wakes().iter().map(|(at, w)| (*at, w.version)).collect();
    assert_eq!(wakes, [(T0_MS, 1), (T0_MS + lease, 2)]);
    let history: Vec<(u64, Option<StateKind>, StateKind)> =
        w.store().entries(&id).iter().map(|e| (e.version, e.from, e.to.kind())).collect();
    use StateKind as K;
    assert_eq!(
        history,
        [
            (1, None, K::Received),
            (2, Some(K::Received), K::Filtered),
            (2, Some(K::Filtered), K::Rendered),
            (2, Some(K::Rendered), K::RateChecked),
            (2, Some(K::RateChecked), K::Sending),
            (3, Some(K::Sending), K::Sent),
        ]
    );
    let sent = w.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].attempt, Attempt(1));
    assert_eq!(sent[0].content, steps::render::Content::Sms { body: "Your code is 123456".into() });
}

#[test]
fn duplicate_and_stale_wake_ups_do_nothing() {
    let w = world(vec![]);
    let id = w.submit("n_1");
    w.advance(&id, 1);
    // The same wake-up delivered again (at-least-once queue), and the now-stale lease wake-up.
    assert_eq!(w.advance(&id, 1), Advanced::Stale { current: 3 });
    assert_eq!(w.advance(&id, 2), Advanced::Stale { current: 3 });
    assert_eq!(w.sent().len(), 1);
    // The current version finds `sent` and settles without a commit.
    assert_eq!(w.advance(&id, 3), Advanced::Settled { state: StateKind::Sent });
    assert_eq!(w.store().record(&id).version, 3);
}

#[test]
fn an_expired_lease_never_calls_the_provider_and_flags_the_resend() {
    let w = world(vec![]);
    let id = w.submit("n_1");
    // A worker claimed attempt 1 and died mid-call: the lease wake-up finds `sending`.
    let version = w.store().force(
        &id,
        State::Sending {
            channel: Channel::Sms,
            provider: twilio(),
            attempt: Attempt(1),
            possible_duplicate: false,
        },
    );
    let Advanced::Committed { state: StateKind::Deferred, wake_at_ms: Some(at), version } =
        w.advance(&id, version)
    else {
        panic!("expected a deferred re-send");
    };
    assert!(w.sent().is_empty(), "the lease wake-up must not send");
    let record = w.store().record(&id);
    assert!(matches!(
        record.state,
        State::Deferred {
            resume: Resume::Send { attempt: Attempt(2), possible_duplicate: true, .. },
            ..
        }
    ));
    // Woken on time, the re-send goes out flagged in the history.
    w.set_now(at);
    w.advance(&id, version);
    assert_eq!(w.sent().len(), 1);
    let flagged = w.store().entries(&id).into_iter().any(|e| {
        matches!(e.to, State::Sending { attempt: Attempt(2), possible_duplicate: true, .. })
    });
    assert!(flagged, "the re-send after an unknown outcome is flagged in the history");
}

#[test]
fn a_retry_waits_for_its_wake_up() {
    let w = world(vec![failure(ErrorClass::RETRYABLE)]);
    let id = w.submit("n_1");
    let Advanced::Committed { state: StateKind::Deferred, wake_at_ms: Some(at), version } =
        w.advance(&id, 1)
    else {
        panic!("expected a deferred retry");
    };
    assert!(at > T0_MS);
    // Nothing more is sent until the wake-up comes; the queue decides when that is.
    assert_eq!(w.sent().len(), 1);
    w.set_now(at);
    assert!(matches!(w.advance(&id, version), Advanced::Committed { state: StateKind::Sent, .. }));
    let sent = w.sent();
    assert_eq!(sent.iter().map(|m| m.attempt).collect::<Vec<_>>(), [Attempt(1), Attempt(2)]);
}

#[test]
fn cancel_before_the_send_and_not_after() {
    let w = world(vec![]);
    let id = w.submit("n_1");
    assert_eq!(block_on(w.runner.cancel(&w.tenant, &id)).unwrap(), Cancelled::Done);
    assert_eq!(w.store().record(&id).state, State::Cancelled {});
    // The pending wake-up is stale now; nothing is sent.
    assert_eq!(w.advance(&id, 1), Advanced::Stale { current: 2 });
    assert!(w.sent().is_empty());

    let id = w.submit("n_2");
    w.advance(&id, 1);
    assert_eq!(
        block_on(w.runner.cancel(&w.tenant, &id)).unwrap(),
        Cancelled::Refused { state: StateKind::Sent }
    );
    let missing = NotificationId::new("n_404").unwrap();
    assert_eq!(block_on(w.runner.cancel(&w.tenant, &missing)).unwrap(), Cancelled::NotFound);
}

/// DESIGN.md §3: duplicates are prevented with "the provider's own idempotency key where it has
/// one" and an unknown outcome is reconciled before any re-send. A provider can only recognise a
/// re-send as a duplicate if it carries the same key as the attempt whose outcome was unknown.
///
/// BUG (fails today): the runner builds the key as `{id}:{channel}:{attempt}`
/// (`runner.rs`, `Outbound { idempotency_key: .. }`), so the re-send after an unknown outcome gets
/// a fresh key and the provider delivers it a second time. Because every attempt is claimed once,
/// a per-attempt key never deduplicates anything.
#[test]
fn the_resend_after_an_unknown_outcome_reuses_the_idempotency_key() {
    let w = world(vec![failure(ErrorClass::Unknown)]);
    let id = w.submit("n_1");
    let Advanced::Committed { state: StateKind::Deferred, wake_at_ms: Some(at), version } =
        w.advance(&id, 1)
    else {
        panic!("expected a deferred re-send");
    };
    w.set_now(at);
    w.advance(&id, version);
    let sent = w.sent();
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[0].idempotency_key, sent[1].idempotency_key,
        "the re-send of an unknown attempt must reuse its idempotency key"
    );
}

fn accepted() -> SendOutcome {
    SendOutcome::Accepted { provider_message_id: Some("SM1".into()), delivered: false }
}

#[test]
fn receipts_deliver_once_and_duplicates_change_nothing() {
    use workflows::machine::Receipt;
    use workflows::runner::Received;
    let w = world(vec![accepted()]);
    let id = w.submit("n_1");
    assert!(matches!(w.advance(&id, 1), Advanced::Committed { state: StateKind::Sent, .. }));
    let receipt = |r| block_on(w.runner.receipt(&w.tenant, &id, &twilio(), r)).unwrap();
    assert_eq!(receipt(Receipt::Delivered), Received::Applied { state: StateKind::Delivered });
    // A duplicate, and a late contradicting one, are ignored: delivered never regresses.
    assert_eq!(receipt(Receipt::Delivered), Received::Ignored { state: StateKind::Delivered });
    assert_eq!(receipt(Receipt::Undelivered), Received::Ignored { state: StateKind::Delivered });
    let missing = NotificationId::new("n_404").unwrap();
    let outcome = block_on(w.runner.receipt(&w.tenant, &missing, &twilio(), Receipt::Delivered));
    assert_eq!(outcome.unwrap(), Received::NotFound);
}

#[test]
fn an_undelivered_receipt_hands_the_rest_to_a_worker() {
    use workflows::machine::Receipt;
    use workflows::runner::Received;
    let w = world(vec![accepted()]);
    let id = w.submit("n_1");
    assert!(matches!(w.advance(&id, 1), Advanced::Committed { state: StateKind::Sent, .. }));
    let outcome = block_on(w.runner.receipt(&w.tenant, &id, &twilio(), Receipt::Undelivered));
    assert_eq!(outcome.unwrap(), Received::Applied { state: StateKind::Failed });
    // The receipt's commit scheduled a wake-up; the worker dead-letters it.
    let record = block_on(w.store().load(&w.tenant, &id)).unwrap().unwrap();
    assert_eq!(record.wake_at_ms, Some(T0_MS));
    assert!(matches!(
        w.advance(&id, record.version),
        Advanced::Committed { state: StateKind::DeadLettered, .. }
    ));
}
