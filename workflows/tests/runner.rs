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
use steps::filter::SkipReason;
use steps::limits::{self, Admission, Counted, Window};
use steps::model::{
    Attempt, Category, Channel, EmailAddress, NotificationId, PhoneNumber, ProviderName,
};
use steps::model::{Recipient, RecipientId, TemplateId, TenantId};
use steps::outcome::{ErrorClass, ProviderError, SendOutcome};
use steps::preferences::Preferences;
use steps::rate::{Pacer, SendRate, SendSlot};
use steps::recipient::{Contact, Device, DeviceId, Profile, RecipientEntry};
use steps::render::{Part, PartSource, TemplateSet};
use workflows::dlq::{DlqFilter, DlqPage};
use workflows::machine::{Resume, State, StateKind};
use workflows::policy::Policy;
use workflows::ports::{
    ApiKey, CLAIM_LEASE_MS, Claimed, Clock, Collapse, CollapseGroup, CreatedOnce, Dedup, Delivery,
    DeviceAdded, DeviceOutcome, DeviceResult, Directory, EventKey, LimitWindows, ListQuery,
    Outbound, Provider, Purged, RecipientKey, RecipientPage, SendHints, Store, StoreError,
    StoredResponse,
};
use workflows::record::{
    Cause, Commit, CommitOutcome, Created, HistoryEntry, Idempotency, Record, Replay, Wake,
};
use workflows::runner::{
    Advanced, Cancelled, PurgeVerdict, ReplayOptions, ReplayVerdict, Runner, Submission,
};

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
    windows: BTreeMap<RecipientKey, BTreeMap<String, Counted>>,
    /// Idempotency claims: fingerprint, lease end, answer.
    claims: BTreeMap<String, (String, u64, Option<StoredResponse>)>,
    /// Events seen, and the notification each made (windows are not modelled here).
    events: BTreeMap<EventKey, NotificationId>,
    /// Collapse groups (the reference semantics), and what survivors kept.
    collapse: BTreeMap<CollapseGroup, steps::collapse::Groups>,
    merged: BTreeMap<NotificationId, steps::collapse::Merged>,
    pacers: BTreeMap<ProviderName, Pacer>,
    /// The recipients directory of the one tenant.
    directory: BTreeMap<RecipientId, RecipientEntry>,
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

impl Dedup for FakeStore {
    fn claim_key(
        &self,
        _tenant: &TenantId,
        idempotency: &Idempotency,
        now_ms: u64,
        lease_ms: u64,
    ) -> impl Future<Output = Result<Claimed, StoreError>> + Send {
        let mut data = self.0.lock().unwrap();
        let fresh = (idempotency.fingerprint.clone(), now_ms + lease_ms, None);
        let claimed = match data.claims.get_mut(&idempotency.key) {
            None => {
                data.claims.insert(idempotency.key.clone(), fresh);
                Claimed::Held
            }
            Some((fp, _, response)) if *fp != idempotency.fingerprint => {
                Claimed::Reused { id: response.as_ref().map(|r| r.items[0].id.clone()) }
            }
            Some((_, _, Some(response))) => Claimed::Done { response: response.clone() },
            Some((_, until_ms, None)) if *until_ms > now_ms => {
                Claimed::InFlight { until_ms: *until_ms }
            }
            Some(held) => {
                *held = fresh;
                Claimed::Held
            }
        };
        ready(Ok(claimed))
    }

    fn finish_key(
        &self,
        _tenant: &TenantId,
        idempotency: &Idempotency,
        response: &StoredResponse,
        _now_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let mut data = self.0.lock().unwrap();
        if let Some((fp, _, stored @ None)) = data.claims.get_mut(&idempotency.key)
            && *fp == idempotency.fingerprint
        {
            *stored = Some(response.clone());
        }
        ready(Ok(()))
    }

    fn release_key(
        &self,
        _tenant: &TenantId,
        idempotency: &Idempotency,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let mut data = self.0.lock().unwrap();
        if matches!(data.claims.get(&idempotency.key), Some((_, _, None))) {
            data.claims.remove(&idempotency.key);
        }
        ready(Ok(()))
    }

    fn create_once(
        &self,
        record: &Record,
        first: &HistoryEntry,
        event: &EventKey,
        _window_ms: u64,
    ) -> impl Future<Output = Result<CreatedOnce, StoreError>> + Send {
        if let Some(id) = self.0.lock().unwrap().events.get(event) {
            return ready(Ok(CreatedOnce::Duplicate { id: id.clone() }));
        }
        self.0.lock().unwrap().events.insert(event.clone(), record.id.clone());
        let created = futures::FutureExt::now_or_never(self.create(record, first, None));
        assert_eq!(created, Some(Ok(Created::New)), "the fake's create is immediate");
        ready(Ok(CreatedOnce::New))
    }
}

impl Collapse for FakeStore {
    fn collapse_join(
        &self,
        group: &CollapseGroup,
        member: &NotificationId,
        data: &serde_json::Map<String, serde_json::Value>,
        window_ms: u64,
        now_ms: u64,
    ) -> impl Future<Output = Result<steps::collapse::Joined, StoreError>> + Send {
        let mut data_ = self.0.lock().unwrap();
        let groups = data_.collapse.entry(group.clone()).or_default();
        let keep = steps::collapse::COLLAPSE_KEEP_MS;
        ready(Ok(steps::collapse::join(groups, member, data, window_ms, keep, now_ms)))
    }

    fn collapse_close(
        &self,
        group: &CollapseGroup,
        survivor: &NotificationId,
        now_ms: u64,
    ) -> impl Future<Output = Result<Option<steps::collapse::Merged>, StoreError>> + Send {
        let mut data = self.0.lock().unwrap();
        let merged =
            data.collapse.get_mut(group).and_then(|g| steps::collapse::close(g, survivor, now_ms));
        ready(Ok(merged))
    }

    fn collapse_member(
        &self,
        group: &CollapseGroup,
        member: &NotificationId,
        now_ms: u64,
    ) -> impl Future<Output = Result<Option<NotificationId>, StoreError>> + Send {
        let data = self.0.lock().unwrap();
        let groups = data.collapse.get(group);
        ready(Ok(groups.and_then(|g| steps::collapse::member_of(g, member, now_ms))))
    }

    fn keep_merged(
        &self,
        _tenant: &TenantId,
        id: &NotificationId,
        merged: &steps::collapse::Merged,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.0.lock().unwrap().merged.entry(id.clone()).or_insert_with(|| merged.clone());
        ready(Ok(()))
    }

    fn merged(
        &self,
        _tenant: &TenantId,
        id: &NotificationId,
    ) -> impl Future<Output = Result<Option<steps::collapse::Merged>, StoreError>> + Send {
        ready(Ok(self.0.lock().unwrap().merged.get(id).cloned()))
    }
}

impl LimitWindows for FakeStore {
    fn acquire_windows(
        &self,
        key: &RecipientKey,
        member: &NotificationId,
        windows: &[Window],
        now_ms: u64,
    ) -> impl Future<Output = Result<Admission, StoreError>> + Send {
        let mut data = self.0.lock().unwrap();
        let counted = data.windows.entry(key.clone()).or_default();
        ready(Ok(limits::admit(counted, windows, member.as_str(), now_ms)))
    }

    fn window_usage(
        &self,
        key: &RecipientKey,
        windows: &[Window],
        now_ms: u64,
    ) -> impl Future<Output = Result<Vec<u32>, StoreError>> + Send {
        let data = self.0.lock().unwrap();
        let empty = BTreeMap::new();
        ready(Ok(limits::usage(data.windows.get(key).unwrap_or(&empty), windows, now_ms)))
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
        if let Some(replay) = &commit.replay {
            record.replay = Some(replay.clone());
        }
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
        filter: &DlqFilter,
        now_ms: u64,
    ) -> impl Future<Output = Result<DlqPage, StoreError>> + Send {
        // Newest first by dead-lettered time (ties by id), no scan cap: a handful of records.
        let data = self.0.lock().unwrap();
        let mut records: Vec<Record> =
            data.records.values().filter(|r| filter.matches(r, now_ms)).cloned().collect();
        records.sort_by(|a, b| (b.updated_at_ms, &b.id).cmp(&(a.updated_at_ms, &a.id)));
        let scanned = records.len();
        records.truncate(filter.limit_capped());
        ready(Ok(DlqPage { records, scanned, truncated: None }))
    }

    fn purge(
        &self,
        _tenant: &TenantId,
        id: &NotificationId,
        expected_version: u64,
    ) -> impl Future<Output = Result<Purged, StoreError>> + Send {
        let mut data = self.0.lock().unwrap();
        let outcome = match data.records.get(id).map(|r| r.version) {
            None => Purged::NotFound,
            Some(v) if v != expected_version => Purged::Conflict { current: v },
            Some(_) => {
                data.records.remove(id);
                data.history.remove(id);
                Purged::Done
            }
        };
        ready(Ok(outcome))
    }

    fn send_slot(
        &self,
        provider: &ProviderName,
        rate: &SendRate,
        now_ms: u64,
        wait_ms_max: u64,
    ) -> impl Future<Output = Result<SendSlot, StoreError>> + Send {
        let mut data = self.0.lock().unwrap();
        let pacer = data.pacers.entry(provider.clone()).or_default();
        ready(Ok(pacer.reserve(rate, now_ms, wait_ms_max)))
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

impl FakeStore {
    /// The recipient's entry, created empty, after `write` changed it (one write: one revision).
    fn write_entry<T>(
        &self,
        id: &RecipientId,
        now_ms: u64,
        write: impl FnOnce(&mut RecipientEntry) -> T,
    ) -> (u64, T) {
        let mut data = self.0.lock().unwrap();
        let entry = data.directory.entry(id.clone()).or_insert_with(|| RecipientEntry {
            id: id.clone(),
            profile: None,
            preferences: Preferences::default(),
            revision: 0,
            updated_at_ms: now_ms,
        });
        let out = write(entry);
        entry.revision += 1;
        entry.updated_at_ms = now_ms;
        (entry.revision, out)
    }
}

impl Directory for FakeStore {
    fn recipient(
        &self,
        _tenant: &TenantId,
        id: &RecipientId,
    ) -> impl Future<Output = Result<Option<RecipientEntry>, StoreError>> + Send {
        ready(Ok(self.0.lock().unwrap().directory.get(id).cloned()))
    }

    fn put_contact(
        &self,
        _tenant: &TenantId,
        id: &RecipientId,
        contact: &Contact,
        now_ms: u64,
    ) -> impl Future<Output = Result<(u64, bool), StoreError>> + Send {
        let (revision, created) = self.write_entry(id, now_ms, |entry| {
            let profile = entry.profile.get_or_insert_with(Profile::default);
            let created = profile.contact == Contact::default() && profile.devices.is_empty();
            profile.contact = contact.clone();
            created
        });
        ready(Ok((revision, created)))
    }

    fn put_preferences(
        &self,
        _tenant: &TenantId,
        id: &RecipientId,
        preferences: &Preferences,
        now_ms: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let (revision, ()) =
            self.write_entry(id, now_ms, |entry| entry.preferences = preferences.clone());
        ready(Ok(revision))
    }

    fn add_device(
        &self,
        _tenant: &TenantId,
        id: &RecipientId,
        device: &Device,
        now_ms: u64,
    ) -> impl Future<Output = Result<DeviceAdded, StoreError>> + Send {
        let (revision, ()) = self.write_entry(id, now_ms, |entry| {
            entry.profile.get_or_insert_with(Profile::default).devices.push(device.clone());
        });
        ready(Ok(DeviceAdded::Added { revision }))
    }

    fn remove_device(
        &self,
        _tenant: &TenantId,
        id: &RecipientId,
        device: &DeviceId,
        now_ms: u64,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send {
        let (revision, ()) = self.write_entry(id, now_ms, |entry| {
            if let Some(profile) = &mut entry.profile {
                profile.devices.retain(|d| d.id != *device);
            }
        });
        ready(Ok(Some(revision)))
    }

    fn recipients(
        &self,
        _tenant: &TenantId,
        _after: Option<&RecipientId>,
        _limit: usize,
    ) -> impl Future<Output = Result<RecipientPage, StoreError>> + Send {
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
    channel: Channel,
    answers: Mutex<VecDeque<SendOutcome>>,
    sent: Mutex<Vec<Outbound>>,
    /// The hints of every `deliver`.
    hints: Mutex<Vec<SendHints>>,
}

impl Provider for Scripted {
    fn name(&self) -> &ProviderName {
        &self.name
    }

    fn channel(&self) -> Channel {
        self.channel
    }

    fn send<'a>(&'a self, message: &'a Outbound) -> BoxFuture<'a, SendOutcome> {
        self.sent.lock().unwrap().push(message.clone());
        let answer = self.answers.lock().unwrap().pop_front().unwrap_or(SendOutcome::Accepted {
            provider_message_id: Some(format!("SM{}", message.attempt)),
            delivered: false,
        });
        Box::pin(ready(answer))
    }

    /// A push provider's per-device results: a device whose token starts with `dead` is dead,
    /// the others accept (the scripted answer, when one is left, stands for the whole send).
    fn deliver<'a>(
        &'a self,
        message: &'a Outbound,
        hints: &'a SendHints,
    ) -> BoxFuture<'a, Delivery> {
        self.hints.lock().unwrap().push(hints.clone());
        Box::pin(async move {
            let outcome = self.send(message).await;
            if self.channel != Channel::Push {
                return Delivery { outcome, devices: vec![] };
            }
            let devices: Vec<DeviceResult> = message
                .devices
                .iter()
                .map(|d| DeviceResult {
                    device: d.id.clone(),
                    outcome: if d.token.expose().starts_with("dead") {
                        DeviceOutcome::Dead
                    } else {
                        DeviceOutcome::Accepted
                    },
                })
                .collect();
            let outcome = if devices.iter().all(|d| d.outcome == DeviceOutcome::Dead) {
                failure(ErrorClass::TokenInvalid)
            } else {
                outcome
            };
            Delivery { outcome, devices }
        })
    }
}

struct World {
    runner: Runner<FakeStore, FixedClock>,
    sms: Arc<Scripted>,
    email: Arc<Scripted>,
    push: Arc<Scripted>,
    tenant: TenantId,
    /// Whether recipients have an email address (so SMS can fall back to email).
    with_email: bool,
}

fn twilio() -> ProviderName {
    ProviderName::new("twilio").unwrap()
}

fn sendgrid() -> ProviderName {
    ProviderName::new("sendgrid").unwrap()
}

fn fcm() -> ProviderName {
    ProviderName::new("fcm").unwrap()
}

/// An SMS-only world: recipients have no email address, so nothing falls back.
fn world(answers: Vec<SendOutcome>) -> World {
    world_with(answers, vec![], false)
}

/// SMS answers, email answers (both accept once their script runs out), and whether recipients
/// have an email address too (SMS → email fallback, the default policy's rule).
fn world_with(sms: Vec<SendOutcome>, email: Vec<SendOutcome>, with_email: bool) -> World {
    world_with_policy(sms, email, with_email, |_| {})
}

/// [`world_with`], with the policy changed by `tweak`.
fn world_with_policy(
    sms: Vec<SendOutcome>,
    email: Vec<SendOutcome>,
    with_email: bool,
    tweak: impl FnOnce(&mut Policy),
) -> World {
    let template = TemplateId::new("otp").unwrap();
    let part =
        |part, source: &str| PartSource { template: template.clone(), part, source: source.into() };
    let digest = TemplateId::new("digest").unwrap();
    let templates = TemplateSet::from_parts([
        part(Part::SmsBody, "Your code is {{ code }}"),
        part(Part::EmailSubject, "Your code"),
        part(Part::EmailText, "Your code is {{ code }}"),
        part(Part::PushTitle, "Your code"),
        part(Part::PushBody, "Your code is {{ code }}"),
        PartSource {
            template: digest,
            part: Part::SmsBody,
            source: "{{ collapse.count }} new:{% for item in collapse.items %} [{{ item.code }}]\
                     {% endfor %}"
                .into(),
        },
    ])
    .unwrap();
    let mut policy = Policy::default();
    policy.routes.insert(Channel::Sms, vec![twilio()]);
    policy.routes.insert(Channel::Email, vec![sendgrid()]);
    policy.routes.insert(Channel::Push, vec![fcm()]);
    tweak(&mut policy);
    let scripted = |name, channel, answers: Vec<SendOutcome>| {
        Arc::new(Scripted {
            name,
            channel,
            answers: Mutex::new(answers.into()),
            sent: Mutex::new(Vec::new()),
            hints: Mutex::new(Vec::new()),
        })
    };
    let sms = scripted(twilio(), Channel::Sms, sms);
    let email = scripted(sendgrid(), Channel::Email, email);
    let push = scripted(fcm(), Channel::Push, vec![]);
    let runner = Runner::new(
        FakeStore::default(),
        FixedClock(AtomicU64::new(T0_MS)),
        Arc::new(templates),
        Arc::new(policy),
        [
            sms.clone() as Arc<dyn Provider>,
            email.clone() as Arc<dyn Provider>,
            push.clone() as Arc<dyn Provider>,
        ],
    );
    World { runner, sms, email, push, tenant: TenantId::new("acme").unwrap(), with_email }
}

impl World {
    fn submit(&self, id: &str) -> NotificationId {
        let id = NotificationId::new(id).unwrap();
        let submission = Submission {
            recipient: Recipient {
                id: RecipientId::new("u1").unwrap(),
                email: self.with_email.then(|| EmailAddress::parse("u1@example.com").unwrap()),
                phone: Some(PhoneNumber::parse("+447911123456").unwrap()),
                opt_out: vec![],
            },
            channel: Channel::Sms,
            template: TemplateId::new("otp").unwrap(),
            data: serde_json::json!({"code": "123456"}).as_object().unwrap().clone(),
            category: Category::new("otp").unwrap(),
            locale: None,
            correlation: Default::default(),
        };
        let submitted = block_on(self.runner.submit(&self.tenant, id.clone(), submission, None));
        assert!(submitted.unwrap().created);
        id
    }

    /// Submits `id` in `category` on `channel` (the recipient `u1` has an email address when the
    /// world says so).
    fn submit_as(&self, id: &str, category: &str, channel: Channel) -> NotificationId {
        let id = NotificationId::new(id).unwrap();
        let submission = Submission {
            recipient: Recipient {
                id: RecipientId::new("u1").unwrap(),
                email: self.with_email.then(|| EmailAddress::parse("u1@example.com").unwrap()),
                phone: Some(PhoneNumber::parse("+447911123456").unwrap()),
                opt_out: vec![],
            },
            channel,
            template: TemplateId::new("otp").unwrap(),
            data: serde_json::json!({"code": "123456"}).as_object().unwrap().clone(),
            category: Category::new(category).unwrap(),
            correlation: Default::default(),
            locale: None,
        };
        let submitted = block_on(self.runner.submit(&self.tenant, id.clone(), submission, None));
        assert!(submitted.unwrap().created);
        id
    }

    /// Submits `id`, a `chat` SMS with the `digest` template and collapse key `key`.
    fn submit_chat(&self, id: &str, key: &str, code: u32) -> NotificationId {
        let submission = Submission {
            recipient: Recipient {
                id: RecipientId::new("u1").unwrap(),
                email: None,
                phone: Some(PhoneNumber::parse("+447911123456").unwrap()),
                opt_out: vec![],
            },
            channel: Channel::Sms,
            template: TemplateId::new("digest").unwrap(),
            data: serde_json::json!({ "code": code }).as_object().unwrap().clone(),
            category: Category::new("chat").unwrap(),
            correlation: steps::correlation::Correlation {
                event_id: None,
                collapse_key: Some(steps::correlation::CollapseKey::new(key).unwrap()),
            },
            locale: None,
        };
        let id = NotificationId::new(id).unwrap();
        let submitted = block_on(self.runner.submit(&self.tenant, id.clone(), submission, None));
        assert!(submitted.unwrap().created);
        id
    }

    /// Submits `id` (an otp SMS) reporting `event`, with an idempotency key if given.
    fn submit_event(
        &self,
        id: &str,
        event: &str,
        category: &str,
        idempotency: Option<&Idempotency>,
    ) -> Result<workflows::runner::Submitted, workflows::runner::SubmitError> {
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
            category: Category::new(category).unwrap(),
            correlation: steps::correlation::Correlation {
                event_id: Some(steps::correlation::EventId::new(event).unwrap()),
                collapse_key: None,
            },
            locale: None,
        };
        let id = NotificationId::new(id).unwrap();
        block_on(self.runner.submit(&self.tenant, id, submission, idempotency))
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

// ---------------------------------------------------------------------------------------------
// The dead-letter queue: replay, late receipts, purge
// ---------------------------------------------------------------------------------------------

impl World {
    /// Runs every wake-up due by now until the notification rests; returns its record.
    fn settle(&self, id: &NotificationId) -> Record {
        for _ in 0..20 {
            let record = self.store().record(id);
            match record.wake_at_ms {
                Some(at) => {
                    self.set_now(self.runner.clock().now_ms().max(at));
                    self.advance(id, record.version);
                }
                None => return record,
            }
        }
        panic!("{id} never settled: {:?}", self.store().record(id).state);
    }

    fn replay(&self, id: &NotificationId, at_ms: u64, include_unknown: bool) -> ReplayVerdict {
        block_on(self.runner.replay(&self.tenant, id, at_ms, include_unknown, false)).unwrap()
    }

    fn email_sent(&self) -> Vec<Outbound> {
        self.email.sent.lock().unwrap().clone()
    }
}

fn permanent() -> SendOutcome {
    failure(ErrorClass::PermanentRecipient)
}

/// A replay re-drives a dead letter from `received` on its channel, attempts from 1, with one
/// history entry naming the operator and the old reason, and a fresh time budget: a replay long
/// after the original budget ran out still retries instead of expiring at once.
#[test]
fn a_replay_re_drives_a_dead_letter_with_a_fresh_time_budget() {
    let w = world(vec![permanent(), failure(ErrorClass::RETRYABLE)]);
    let id = w.submit("n_1");
    let dead = w.settle(&id);
    assert_eq!(dead.state.kind(), StateKind::DeadLettered);
    let ttl_ms = w.runner.policy().retry(Channel::Sms).ttl_ms;
    let later = T0_MS + 3 * ttl_ms;
    w.set_now(later);
    let at = later + 2_000;
    assert_eq!(
        w.replay(&id, at, false),
        ReplayVerdict::Replay { at_ms: at, possible_duplicate: false }
    );
    let record = w.store().record(&id);
    assert_eq!(
        (record.state.clone(), record.version, record.wake_at_ms),
        (State::Received {}, dead.version + 1, Some(at))
    );
    assert_eq!(
        record.replay,
        Some(Replay { budget_from_ms: at, possible_duplicate: false, count: 1 })
    );
    let entry = w.store().entries(&id).last().unwrap().clone();
    assert!(entry.is_replay());
    assert_eq!(entry.cause, Cause::Operator { action: "dlq replay".into() });
    let State::DeadLettered { reason, .. } = &dead.state else { unreachable!() };
    let note = entry.note.as_deref().unwrap();
    assert!(note.contains(reason.as_str()) && note.contains("replay 1"), "{note}");
    // The first send of the replay fails retryably: within the fresh budget, it is retried.
    w.set_now(at);
    let Advanced::Committed { state: StateKind::Deferred, .. } = w.advance(&id, record.version)
    else {
        panic!("expected a retry: {:?}", w.store().record(&id).state);
    };
    let record = w.settle(&id);
    assert_eq!(record.state.kind(), StateKind::Sent);
    let attempts: Vec<u32> = w.sent().iter().map(|m| m.attempt.0).collect();
    assert_eq!(attempts, [1, 1, 2], "the replay starts at attempt 1 again");
}

/// A dead letter whose history shows an unknown outcome may have been delivered: replay leaves
/// it alone unless forced, and a forced replay flags its sends as possible duplicates.
#[test]
fn a_dead_letter_that_may_have_been_delivered_is_replayed_only_when_forced() {
    let w = world(vec![failure(ErrorClass::Unknown), permanent()]);
    let id = w.submit("n_1");
    let dead = w.settle(&id);
    assert_eq!(dead.state.kind(), StateKind::DeadLettered);
    let at = w.runner.clock().now_ms();
    assert_eq!(w.replay(&id, at, false), ReplayVerdict::MaybeDelivered);
    assert_eq!(w.store().record(&id).version, dead.version, "a refused replay wrote nothing");
    assert_eq!(
        w.replay(&id, at, true),
        ReplayVerdict::Replay { at_ms: at, possible_duplicate: true }
    );
    let record = w.settle(&id);
    assert_eq!(record.state.kind(), StateKind::Sent);
    let flagged = w.store().entries(&id).into_iter().rev().find_map(|e| match e.to {
        State::Sending { attempt, possible_duplicate, .. } => Some((attempt, possible_duplicate)),
        _ => None,
    });
    assert_eq!(flagged, Some((Attempt(1), true)), "the first send after the replay is flagged");
    assert!(record.possible_duplicate());
}

/// Replays are idempotent: anything not dead-lettered is skipped with its state, a missing one
/// is reported, and a dry run writes nothing.
#[test]
fn replay_touches_only_dead_letters_and_a_dry_run_nothing() {
    let w = world(vec![permanent()]);
    let id = w.submit("n_1");
    let dead = w.settle(&id);
    let at = w.runner.clock().now_ms();
    let dry = block_on(w.runner.replay(&w.tenant, &id, at, false, true)).unwrap();
    assert_eq!(dry, ReplayVerdict::Replay { at_ms: at, possible_duplicate: false });
    assert_eq!(w.store().record(&id), dead, "a dry run wrote nothing");
    assert!(matches!(w.replay(&id, at, false), ReplayVerdict::Replay { .. }));
    assert_eq!(
        w.replay(&id, at, false),
        ReplayVerdict::NotDeadLettered { state: StateKind::Received }
    );
    let missing = NotificationId::new("n_404").unwrap();
    assert_eq!(w.replay(&missing, at, false), ReplayVerdict::NotFound);
}

/// A delivery receipt from the provider a dead letter was last with takes it out of the DLQ as
/// delivered; a replay then leaves it alone. A receipt from another provider is ignored.
#[test]
fn a_late_delivery_receipt_delivers_a_dead_letter_and_replay_skips_it() {
    use workflows::machine::Receipt;
    use workflows::runner::Received;
    let w = world(vec![failure(ErrorClass::RETRYABLE); 4]);
    let id = w.submit("n_1");
    let dead = w.settle(&id);
    assert!(matches!(&dead.state, State::DeadLettered { provider: Some(p), .. } if *p == twilio()));
    let other = block_on(w.runner.receipt(&w.tenant, &id, &sendgrid(), Receipt::Delivered));
    assert_eq!(other.unwrap(), Received::Ignored { state: StateKind::DeadLettered });
    let late = block_on(w.runner.receipt(&w.tenant, &id, &twilio(), Receipt::Delivered));
    assert_eq!(late.unwrap(), Received::Applied { state: StateKind::Delivered });
    let record = w.store().record(&id);
    let attempts = dead.state.attempt().unwrap();
    assert_eq!(
        record.state,
        State::Delivered { channel: Channel::Sms, provider: twilio(), attempt: attempts }
    );
    let at = w.runner.clock().now_ms();
    assert_eq!(
        w.replay(&id, at, false),
        ReplayVerdict::NotDeadLettered { state: StateKind::Delivered }
    );
}

/// After a replay the channel fallback starts fresh: the email it fell back to before the replay
/// does not count as tried, so a replayed SMS that fails for good falls back to email again.
#[test]
fn the_channel_fallback_starts_fresh_after_a_replay() {
    let w = world_with(vec![permanent(), permanent()], vec![permanent()], true);
    let id = w.submit("n_1");
    let dead = w.settle(&id);
    assert!(
        matches!(&dead.state, State::DeadLettered { channel: Channel::Email, .. }),
        "{:?}",
        dead.state
    );
    assert_eq!((w.sent().len(), w.email_sent().len()), (1, 1));
    let at = w.runner.clock().now_ms();
    assert!(matches!(w.replay(&id, at, false), ReplayVerdict::Replay { .. }));
    let record = w.settle(&id);
    // The replay started on SMS (the original channel), which failed again, then fell back to
    // email, which accepted.
    assert!(
        matches!(&record.state, State::Sent { channel: Channel::Email, .. }),
        "{:?}",
        record.state
    );
    assert_eq!((w.sent().len(), w.email_sent().len()), (2, 2));
}

/// A replay of many dead letters spreads their first wake-ups at the rate, oldest first, and
/// counts only what it replays; a dry run reports the same and writes nothing.
#[test]
fn a_filtered_replay_spreads_first_wake_ups_at_the_rate() {
    let w = world(vec![permanent(), permanent(), permanent()]);
    let ids: Vec<NotificationId> = (1..=3)
        .map(|n| {
            let id = w.submit(&format!("n_{n}"));
            w.settle(&id);
            w.set_now(w.runner.clock().now_ms() + 10);
            id
        })
        .collect();
    let now = w.runner.clock().now_ms();
    let filter = DlqFilter::default();
    let options = ReplayOptions { dry_run: true, include_unknown: false, rate_per_sec: 4 };
    let dry = block_on(w.runner.dlq_replay(&w.tenant, &filter, options)).unwrap();
    let expected: Vec<(NotificationId, ReplayVerdict)> = ids
        .iter()
        .zip([now, now + 250, now + 500])
        .map(|(id, at_ms)| (id.clone(), ReplayVerdict::Replay { at_ms, possible_duplicate: false }))
        .collect();
    assert_eq!(dry.items, expected);
    assert!(ids.iter().all(|id| w.store().record(id).state.kind() == StateKind::DeadLettered));
    let done = block_on(w.runner.dlq_replay(
        &w.tenant,
        &filter,
        ReplayOptions { dry_run: false, ..options },
    ))
    .unwrap();
    assert_eq!(done.items, expected);
    let wakes: Vec<Option<u64>> = ids.iter().map(|id| w.store().record(id).wake_at_ms).collect();
    assert_eq!(wakes, [Some(now), Some(now + 250), Some(now + 500)]);
    // A second replay finds nothing dead-lettered.
    let again = block_on(w.runner.dlq_replay(
        &w.tenant,
        &filter,
        ReplayOptions { dry_run: false, ..options },
    ))
    .unwrap();
    assert_eq!(again.items, vec![]);
    // By id, a notification that is not dead-lettered is reported with its state.
    let one = DlqFilter { ids: [ids[0].clone()].into(), ..DlqFilter::default() };
    let report = block_on(w.runner.dlq_replay(&w.tenant, &one, options)).unwrap();
    assert_eq!(
        report.items,
        vec![(ids[0].clone(), ReplayVerdict::NotDeadLettered { state: StateKind::Received })]
    );
}

/// A plan counts what a replay would touch; a purge deletes only dead letters, and a dry run
/// deletes nothing.
#[test]
fn plan_and_purge_of_dead_letters() {
    let w = world(vec![failure(ErrorClass::Unknown), permanent(), permanent()]);
    let maybe = w.submit("n_1");
    w.settle(&maybe);
    let plain = w.submit("n_2");
    w.settle(&plain);
    let alive = w.submit("n_3");
    w.settle(&alive);
    assert_eq!(w.store().record(&alive).state.kind(), StateKind::Sent);
    let plan = block_on(w.runner.dlq_plan(&w.tenant, &DlqFilter::default(), false)).unwrap();
    assert_eq!((plan.matched, plan.replay, plan.maybe_delivered), (2, 1, 1));
    assert_eq!(plan.by_channel.get("sms"), Some(&1));
    assert_eq!(plan.by_provider.get("twilio"), Some(&1));
    let forced = block_on(w.runner.dlq_plan(&w.tenant, &DlqFilter::default(), true)).unwrap();
    assert_eq!((forced.matched, forced.replay, forced.maybe_delivered), (2, 2, 0));

    let dry = block_on(w.runner.dlq_purge(&w.tenant, &DlqFilter::default(), true)).unwrap();
    assert_eq!(dry.items.len(), 2);
    assert!(dry.items.iter().all(|(_, v)| *v == PurgeVerdict::Purge));
    assert_eq!(w.store().record(&plain).state.kind(), StateKind::DeadLettered);
    let done = block_on(w.runner.dlq_purge(&w.tenant, &DlqFilter::default(), false)).unwrap();
    assert_eq!(done.items.len(), 2);
    assert!(block_on(w.store().load(&w.tenant, &plain)).unwrap().is_none());
    assert!(block_on(w.store().load(&w.tenant, &maybe)).unwrap().is_none());
    let one = DlqFilter { ids: [alive.clone()].into(), ..DlqFilter::default() };
    let report = block_on(w.runner.dlq_purge(&w.tenant, &one, false)).unwrap();
    assert_eq!(
        report.items,
        vec![(alive.clone(), PurgeVerdict::NotDeadLettered { state: StateKind::Sent })]
    );
    assert!(block_on(w.store().load(&w.tenant, &alive)).unwrap().is_some());
}

/// A provider's send rate holds the second of two simultaneous sends for its slot; at the slot it
/// goes out on the same attempt without asking the pacer again (which would push it further).
#[test]
fn a_paced_provider_sends_the_second_message_at_its_reserved_slot() {
    let w = world_with_policy(vec![], vec![], false, |p| {
        p.send_rate.insert(twilio(), steps::rate::SendRate { max: 1, window_ms: 1_000 });
    });
    let first = w.submit("n_1");
    let second = w.submit("n_2");
    assert!(matches!(w.advance(&first, 1), Advanced::Committed { state: StateKind::Sent, .. }));
    let held = w.advance(&second, 1);
    let Advanced::Committed { version, state: StateKind::Deferred, wake_at_ms } = held else {
        panic!("expected a deferral to the slot, got {held:?}");
    };
    assert_eq!(wake_at_ms, Some(T0_MS + 1_000));
    assert_eq!(w.sent().len(), 1);
    w.set_now(T0_MS + 1_000);
    let sent = w.advance(&second, version);
    assert!(matches!(sent, Advanced::Committed { state: StateKind::Sent, .. }), "{sent:?}");
    let sent = w.sent();
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|m| m.attempt == Attempt(1)), "no attempt is used by the wait");
}

// ---------------------------------------------------------------------------------------------
// The recipients directory, preferences and quiet hours
// ---------------------------------------------------------------------------------------------

/// 07:00 in Paris the morning after T0 (T0 is 23:13 there): the end of a 22:00–07:00 window.
const PARIS_MORNING_MS: u64 = T0_MS + 28_000_000;

fn u1() -> RecipientId {
    RecipientId::new("u1").unwrap()
}

/// A recipient named by id only: every address comes from the directory.
fn by_id() -> Recipient {
    Recipient { id: u1(), email: None, phone: None, opt_out: vec![] }
}

fn paris(phone: &str) -> Contact {
    Contact {
        email: Some(EmailAddress::parse("u1@example.com").unwrap()),
        phone: Some(PhoneNumber::parse(phone).unwrap()),
        locale: None,
        time_zone: Some(steps::recipient::TimeZone::parse("Europe/Paris").unwrap()),
    }
}

fn prefs(json: serde_json::Value) -> Preferences {
    serde_json::from_value(json).unwrap()
}

impl World {
    fn submit_to(
        &self,
        id: &str,
        category: &str,
        channel: Channel,
        recipient: Recipient,
    ) -> NotificationId {
        let id = NotificationId::new(id).unwrap();
        let submission = Submission {
            recipient,
            channel,
            template: TemplateId::new("otp").unwrap(),
            data: serde_json::json!({"code": "123456"}).as_object().unwrap().clone(),
            category: Category::new(category).unwrap(),
            correlation: Default::default(),
            locale: None,
        };
        block_on(self.runner.submit(&self.tenant, id.clone(), submission, None)).unwrap();
        id
    }

    fn put_contact(&self, contact: Contact) -> u64 {
        block_on(self.store().put_contact(&self.tenant, &u1(), &contact, T0_MS)).unwrap().0
    }

    fn put_preferences(&self, preferences: Preferences) -> u64 {
        block_on(self.store().put_preferences(&self.tenant, &u1(), &preferences, T0_MS)).unwrap()
    }

    fn notes(&self, id: &NotificationId) -> Vec<String> {
        self.store().entries(id).into_iter().filter_map(|e| e.note).collect()
    }
}

/// A notification that names only a recipient id gets its addresses from the stored profile,
/// read when the send goes out: a number changed while a retry waits is the one the retry uses.
/// The history names the directory revision each decision read.
#[test]
fn addresses_come_from_the_stored_profile_as_it_is_at_each_send() {
    let w = world(vec![failure(ErrorClass::RETRYABLE)]);
    w.put_contact(paris("+33612345678"));
    w.set_now(T0_MS + 12 * 3_600_000); // midday in Paris: no quiet hours anyway
    let id = w.submit_to("n_1", "orders", Channel::Sms, by_id());
    let Advanced::Committed { state: StateKind::Deferred, wake_at_ms: Some(at), version } =
        w.advance(&id, 1)
    else {
        panic!("a deferred retry");
    };
    assert_eq!(w.put_contact(paris("+33699999999")), 2);
    w.set_now(at);
    w.advance(&id, version);
    let phones: Vec<String> =
        w.sent().iter().map(|m| m.recipient.phone.as_ref().unwrap().expose().to_owned()).collect();
    assert_eq!(phones, ["+33612345678", "+33699999999"]);
    let notes = w.notes(&id).join("\n");
    assert!(notes.contains("phone number from the stored profile"), "{notes}");
    assert!(notes.contains("read at directory revision 1"), "{notes}");
    assert!(
        notes.contains("re-checked after the claim") && notes.contains("revision 2"),
        "{notes}"
    );
    // An inline address wins over the stored one.
    let inline = Recipient { phone: Some(PhoneNumber::parse("+447911123456").unwrap()), ..by_id() };
    let id = w.submit_to("n_2", "orders", Channel::Sms, inline);
    w.advance(&id, 1);
    assert_eq!(
        w.sent().last().unwrap().recipient.phone.as_ref().unwrap().expose(),
        "+447911123456"
    );
}

/// Neither an inline nor a stored address: skipped with `no_address`, recorded, nothing sent.
#[test]
fn no_address_anywhere_skips_and_says_so() {
    let w = world(vec![]);
    let id = w.submit_to("n_1", "orders", Channel::Email, by_id());
    assert!(matches!(w.advance(&id, 1), Advanced::Committed { state: StateKind::Skipped, .. }));
    assert_eq!(
        w.store().record(&id).state,
        State::Skipped { reason: SkipReason::NoAddress { channel: Channel::Email } }
    );
    let notes = w.notes(&id).join("\n");
    assert!(notes.contains("recipient has no email address"), "{notes}");
    assert!(notes.contains("nothing stored for the recipient"), "{notes}");
    assert!(w.email.sent.lock().unwrap().is_empty());
}

/// An opt-out written while a retry waits stops the retry after its claim, before the provider
/// is called: the skip, its reason and the moment are in the history.
#[test]
fn an_opt_out_while_a_retry_waits_stops_it_before_the_provider() {
    let w = world(vec![failure(ErrorClass::RETRYABLE)]);
    w.put_contact(paris("+33612345678"));
    w.set_now(T0_MS + 12 * 3_600_000);
    let id = w.submit_to("n_1", "orders", Channel::Sms, by_id());
    let Advanced::Committed { wake_at_ms: Some(at), version, .. } = w.advance(&id, 1) else {
        panic!("a deferred retry");
    };
    w.put_preferences(prefs(serde_json::json!({"channels": {"sms": false}})));
    w.set_now(at);
    assert!(matches!(
        w.advance(&id, version),
        Advanced::Committed { state: StateKind::Skipped, .. }
    ));
    assert_eq!(w.sent().len(), 1, "only the first attempt reached the provider");
    assert_eq!(
        w.store().record(&id).state,
        State::Skipped { reason: SkipReason::OptedOut { channel: Channel::Sms } }
    );
    let last = w.store().entries(&id).pop().unwrap();
    assert_eq!(
        (last.from, &last.cause),
        (Some(StateKind::Sending), &Cause::Step { step: "recheck".into() })
    );
    let note = last.note.unwrap();
    assert!(note.contains("re-checked after attempt 2 was claimed, before twilio"), "{note}");
    assert!(note.contains("read at directory revision 2"), "{note}");
}

/// Global unsubscribe blocks everything but critical categories; the policy's opt-in default
/// (marketing SMS) needs the specific opt-in; each skip names its rule.
#[test]
fn unsubscribe_and_opt_in_defaults_spare_only_critical_categories() {
    let w = world(vec![]);
    w.set_now(T0_MS + 12 * 3_600_000);
    w.put_contact(paris("+33612345678"));
    let marketing = w.submit_to("n_m", "marketing", Channel::Sms, by_id());
    w.advance(&marketing, 1);
    assert!(matches!(
        w.store().record(&marketing).state,
        State::Skipped { reason: SkipReason::NotOptedIn { .. } }
    ));
    w.put_preferences(prefs(
        serde_json::json!({"categories": {"marketing": {"channels": {"sms": true}}}}),
    ));
    let opted_in = w.submit_to("n_m2", "marketing", Channel::Sms, by_id());
    w.advance(&opted_in, 1);
    assert_eq!(w.store().record(&opted_in).state.kind(), StateKind::Sent);
    w.put_preferences(prefs(serde_json::json!({
        "unsubscribed": true,
        "categories": {"marketing": {"channels": {"sms": true}}}
    })));
    let blocked = w.submit_to("n_o", "orders", Channel::Sms, by_id());
    w.advance(&blocked, 1);
    assert_eq!(
        w.store().record(&blocked).state,
        State::Skipped { reason: SkipReason::Unsubscribed { channel: Channel::Sms } }
    );
    let otp = w.submit_to("n_otp", "otp", Channel::Sms, by_id());
    w.advance(&otp, 1);
    assert_eq!(w.store().record(&otp).state.kind(), StateKind::Sent);
    let notes = w.notes(&otp).join("\n");
    assert!(notes.contains("otp is a critical category"), "{notes}");
    assert_eq!(w.sent().len(), 2, "the opted-in marketing text and the code");
}

/// Quiet hours in the recipient's time zone defer a non-critical message to the window's end
/// (a durable wake-up, with the reason and the time in the history); at the end the filter runs
/// again and the message goes out. A critical one passes at once.
#[test]
fn quiet_hours_defer_to_the_end_of_the_window_and_critical_passes() {
    let w = world(vec![]);
    w.put_contact(paris("+33612345678"));
    w.put_preferences(prefs(
        serde_json::json!({"quiet_hours": {"start": "22:00", "end": "07:00"}}),
    ));
    let id = w.submit_to("n_1", "orders", Channel::Email, by_id());
    assert_eq!(
        w.advance(&id, 1),
        Advanced::Committed {
            version: 2,
            state: StateKind::Deferred,
            wake_at_ms: Some(PARIS_MORNING_MS)
        }
    );
    assert_eq!(
        w.store().record(&id).state,
        State::Deferred {
            until_ms: PARIS_MORNING_MS,
            resume: Resume::Filter { channel: Channel::Email }
        }
    );
    let note = w.notes(&id).pop().unwrap();
    assert!(note.contains("quiet hours 22:00–07:00 in Europe/Paris (it is 23:13 there)"), "{note}");
    assert!(note.contains("deferred to 07:00 local, 2023-11-15T06:00:00Z"), "{note}");
    assert!(w.email.sent.lock().unwrap().is_empty());
    w.set_now(PARIS_MORNING_MS);
    assert!(matches!(w.advance(&id, 2), Advanced::Committed { state: StateKind::Sent, .. }));
    assert_eq!(w.email.sent.lock().unwrap().len(), 1);
    let kinds: Vec<StateKind> = w.store().entries(&id).iter().map(|e| e.to.kind()).collect();
    use StateKind as K;
    assert_eq!(
        kinds,
        [
            K::Received,
            K::Deferred,
            K::Received,
            K::Filtered,
            K::Rendered,
            K::RateChecked,
            K::Sending,
            K::Sent
        ]
    );
    // The code goes out in the middle of the night.
    w.set_now(T0_MS);
    let otp = w.submit_to("n_otp", "otp", Channel::Email, by_id());
    w.advance(&otp, 1);
    assert_eq!(w.email.sent.lock().unwrap().len(), 2);
}

/// Quiet hours that end after the message's time budget skip it with that reason (an order
/// SMS is worth an hour; the window ends in almost eight).
#[test]
fn quiet_hours_past_the_time_budget_skip_with_the_reason() {
    let w = world(vec![]);
    w.put_contact(paris("+33612345678"));
    w.put_preferences(prefs(
        serde_json::json!({"quiet_hours": {"start": "22:00", "end": "07:00"}}),
    ));
    let id = w.submit_to("n_1", "orders", Channel::Sms, by_id());
    w.advance(&id, 1);
    assert_eq!(
        w.store().record(&id).state,
        State::Skipped {
            reason: SkipReason::QuietHours { channel: Channel::Sms, until_ms: PARIS_MORNING_MS }
        }
    );
    let note = w.notes(&id).pop().unwrap();
    assert!(note.contains("after the time budget ends"), "{note}");
    assert!(w.sent().is_empty());
}

/// A retry that comes due inside quiet hours set meanwhile waits for their end without using an
/// attempt: the re-check after its claim defers the same attempt.
#[test]
fn quiet_hours_set_while_a_retry_waits_defer_the_same_attempt() {
    let w = world_with(vec![], vec![failure(ErrorClass::RETRYABLE)], false);
    w.put_contact(paris("+33612345678"));
    w.set_now(T0_MS - 2 * 3_600_000); // 21:13 in Paris
    let id = w.submit_to("n_1", "orders", Channel::Email, by_id());
    let Advanced::Committed { wake_at_ms: Some(at), version, .. } = w.advance(&id, 1) else {
        panic!("a deferred retry");
    };
    w.put_preferences(prefs(
        serde_json::json!({"quiet_hours": {"start": "21:00", "end": "07:00"}}),
    ));
    w.set_now(at);
    let Advanced::Committed { state: StateKind::Deferred, wake_at_ms: Some(end), version } =
        w.advance(&id, version)
    else {
        panic!("deferred for quiet hours");
    };
    assert_eq!(end, PARIS_MORNING_MS);
    assert!(matches!(
        w.store().record(&id).state,
        State::Deferred { resume: Resume::Send { attempt: Attempt(2), .. }, .. }
    ));
    assert_eq!(w.email.sent.lock().unwrap().len(), 1);
    w.set_now(end);
    w.advance(&id, version);
    let attempts: Vec<Attempt> = w.email.sent.lock().unwrap().iter().map(|m| m.attempt).collect();
    assert_eq!(attempts, [Attempt(1), Attempt(2)]);
}

/// Push goes to the devices stored when the send is claimed: a removed device is not sent to,
/// and with none left the re-check skips for want of an address.
#[test]
fn push_goes_to_the_devices_stored_at_the_send() {
    let w = world(vec![]);
    w.set_now(T0_MS + 12 * 3_600_000);
    w.put_contact(paris("+33612345678"));
    let device = |token: &str| {
        let token = steps::recipient::DeviceToken::parse(token).unwrap();
        Device::new(steps::recipient::Platform::Ios, token, T0_MS)
    };
    let (a, b) = (device("token-a"), device("token-b"));
    for d in [&a, &b] {
        block_on(w.store().add_device(&w.tenant, &u1(), d, T0_MS)).unwrap();
    }
    let id = w.submit_to("n_1", "orders", Channel::Push, by_id());
    w.advance(&id, 1);
    block_on(w.store().remove_device(&w.tenant, &u1(), &a.id, T0_MS)).unwrap();
    let id2 = w.submit_to("n_2", "orders", Channel::Push, by_id());
    w.advance(&id2, 1);
    let sent = w.push.sent.lock().unwrap().clone();
    let ids: Vec<Vec<DeviceId>> =
        sent.iter().map(|m| m.devices.iter().map(|d| d.id.clone()).collect()).collect();
    assert_eq!(ids, [vec![a.id.clone(), b.id.clone()], vec![b.id.clone()]]);
    block_on(w.store().remove_device(&w.tenant, &u1(), &b.id, T0_MS)).unwrap();
    let id3 = w.submit_to("n_3", "orders", Channel::Push, by_id());
    w.advance(&id3, 1);
    assert_eq!(
        w.store().record(&id3).state,
        State::Skipped { reason: SkipReason::NoAddress { channel: Channel::Push } }
    );
}

/// A dead push token is removed from the recipient (by the runner, through the directory) and
/// the other devices still get the message; the history names the devices by id, never token.
#[test]
fn a_dead_push_device_is_removed_and_the_others_still_get_the_message() {
    let w = world(vec![]);
    w.set_now(T0_MS + 12 * 3_600_000);
    w.put_contact(paris("+33612345678"));
    let device = |token: &str| {
        let token = steps::recipient::DeviceToken::parse(token).unwrap();
        Device::new(steps::recipient::Platform::Android, token, T0_MS)
    };
    let (dead, b, c) = (device("dead-token-a"), device("token-b"), device("token-c"));
    for d in [&dead, &b, &c] {
        block_on(w.store().add_device(&w.tenant, &u1(), d, T0_MS)).unwrap();
    }
    let id = w.submit_to("n_1", "orders", Channel::Push, by_id());
    w.advance(&id, 1);
    assert_eq!(w.store().record(&id).state.kind(), StateKind::Sent);
    let sent = w.push.sent.lock().unwrap().clone();
    let to: Vec<DeviceId> = sent[0].devices.iter().map(|d| d.id.clone()).collect();
    assert_eq!(to, [dead.id.clone(), b.id.clone(), c.id.clone()]);
    let entry = block_on(w.store().recipient(&w.tenant, &u1())).unwrap().unwrap();
    let kept: Vec<DeviceId> = entry.devices().iter().map(|d| d.id.clone()).collect();
    assert_eq!(kept, [b.id.clone(), c.id.clone()], "only the dead device is removed");
    let history = w.store().entries(&id);
    let note = history.last().unwrap().note.clone().unwrap_or_default();
    assert!(note.contains(&format!("removed dead device(s) {}", dead.id)), "{note}");
    assert!(note.contains(&format!("{} accepted", b.id)), "{note}");
    assert!(!note.contains("dead-token-a") && !note.contains("token-b"), "{note}");
    // The hints: no collapse key, not critical, the retry budget's end.
    let hints = w.push.hints.lock().unwrap().clone();
    assert_eq!(hints.len(), 1);
    assert_eq!(hints[0].collapse_key, None);
    assert!(!hints[0].critical);
    assert!(hints[0].expires_at_ms.is_some_and(|at| at > T0_MS));
    // The next push goes to the two remaining devices only.
    let id2 = w.submit_to("n_2", "orders", Channel::Push, by_id());
    w.advance(&id2, 1);
    let sent = w.push.sent.lock().unwrap().clone();
    let to: Vec<DeviceId> = sent[1].devices.iter().map(|d| d.id.clone()).collect();
    assert_eq!(to, [b.id.clone(), c.id.clone()]);
}

/// Every device dead: the notification fails (token invalid is permanent for push) and the
/// devices are gone, so the next push is skipped for want of a device.
#[test]
fn all_push_devices_dead_fails_the_notification_and_removes_them() {
    let w = world(vec![]);
    w.set_now(T0_MS + 12 * 3_600_000);
    w.put_contact(paris("+33612345678"));
    let device = |token: &str| {
        let token = steps::recipient::DeviceToken::parse(token).unwrap();
        Device::new(steps::recipient::Platform::Ios, token, T0_MS)
    };
    for d in [device("dead-1"), device("dead-2")] {
        block_on(w.store().add_device(&w.tenant, &u1(), &d, T0_MS)).unwrap();
    }
    let id = w.submit_to("n_1", "otp", Channel::Push, by_id());
    w.advance(&id, 1);
    // Failed on push for good; with no channel to fall back to, it is dead-lettered.
    assert_eq!(w.store().record(&id).state.kind(), StateKind::DeadLettered);
    let history = w.store().entries(&id);
    assert!(history.iter().any(|e| e.to.kind() == StateKind::Failed), "{history:?}");
    assert!(w.push.hints.lock().unwrap()[0].critical, "otp is critical");
    let entry = block_on(w.store().recipient(&w.tenant, &u1())).unwrap().unwrap();
    assert!(entry.devices().is_empty());
    let id2 = w.submit_to("n_2", "orders", Channel::Push, by_id());
    w.advance(&id2, 1);
    assert_eq!(
        w.store().record(&id2).state,
        State::Skipped { reason: SkipReason::NoAddress { channel: Channel::Push } }
    );
}

/// The channel fallback honours stored preferences: SMS fails for good, and email is no
/// fallback for a recipient who switched email off.
#[test]
fn the_fallback_channel_must_pass_the_stored_preferences() {
    let w = world_with(vec![failure(ErrorClass::PermanentRecipient)], vec![], false);
    w.set_now(T0_MS + 12 * 3_600_000);
    w.put_contact(paris("+33612345678"));
    w.put_preferences(prefs(serde_json::json!({"channels": {"email": false}})));
    let id = w.submit_to("n_1", "orders", Channel::Sms, by_id());
    w.advance(&id, 1);
    assert_eq!(w.store().record(&id).state.kind(), StateKind::DeadLettered);
    let notes = w.notes(&id).join("\n");
    assert!(notes.contains("recipient opted out of email"), "{notes}");
    assert!(w.email.sent.lock().unwrap().is_empty());
}

fn cap(max: u32, window_ms: u64, over_limit: steps::rate::OverLimit) -> steps::limits::Cap {
    steps::limits::Cap { max, window_ms, over_limit }
}

/// A category cap counts across channels, together with each channel's window, all or nothing:
/// the second marketing message waits for the cap (the reason in its history) without taking an
/// email slot, and goes out when the cap has room; an OTP passes whatever its caps say.
#[test]
fn a_category_cap_holds_back_across_channels_and_critical_categories_pass() {
    use steps::rate::OverLimit::Defer;
    let hour = 3_600_000;
    let w = world_with_policy(vec![], vec![], true, |p| {
        let marketing = Category::new("marketing").unwrap();
        p.categories.get_mut(&marketing).unwrap().caps = Some(vec![cap(1, hour, Defer)]);
        let otp = Category::new("otp").unwrap();
        p.categories.get_mut(&otp).unwrap().caps = Some(vec![cap(1, hour, Defer)]);
    });
    // Marketing SMS is opt-in by default: this recipient opted in.
    w.put_preferences(prefs(
        serde_json::json!({"categories": {"marketing": {"channels": {"sms": true}}}}),
    ));
    let first = w.submit_as("n_1", "marketing", Channel::Sms);
    assert!(matches!(w.advance(&first, 1), Advanced::Committed { state: StateKind::Sent, .. }));
    let second = w.submit_as("n_2", "marketing", Channel::Email);
    let held = w.advance(&second, 1);
    let Advanced::Committed { version, state: StateKind::Deferred, wake_at_ms } = held else {
        panic!("expected a deferral by the cap, got {held:?}");
    };
    assert_eq!(wake_at_ms, Some(T0_MS + hour), "until the first send leaves the cap's window");
    let note = w.store().entries(&second).last().unwrap().note.clone().unwrap();
    assert_eq!(
        note,
        "the marketing cap (1 per 1 h) is reached; deferred 3600000 ms until it has room"
    );
    // Nothing was taken in the email window: all or nothing.
    let key = RecipientKey { tenant: w.tenant.clone(), recipient: RecipientId::new("u1").unwrap() };
    let marketing = Category::new("marketing").unwrap();
    let windows = w.runner.policy().windows(&marketing, Channel::Email);
    assert_eq!(windows.len(), 2);
    assert_eq!(block_on(w.store().window_usage(&key, &windows, T0_MS)).unwrap(), vec![0, 1]);
    // OTPs are critical: their caps never hold them back.
    for n in 3..6 {
        let otp = w.submit_as(&format!("n_{n}"), "otp", Channel::Sms);
        assert!(matches!(w.advance(&otp, 1), Advanced::Committed { state: StateKind::Sent, .. }));
    }
    // When the cap has room, the deferred message goes out.
    w.set_now(T0_MS + hour);
    let sent = w.advance(&second, version);
    assert!(matches!(sent, Advanced::Committed { state: StateKind::Sent, .. }), "{sent:?}");
    assert_eq!(w.email.sent.lock().unwrap().len(), 1);
}

/// Over a cap whose policy is skip, the notification is skipped with the cap as its reason; a
/// deferral that would end after the time budget is skipped as expired, naming the cap.
#[test]
fn a_full_cap_skips_by_policy_or_when_waiting_would_outlast_the_budget() {
    use steps::rate::OverLimit::{Defer, Skip};
    let hour = 3_600_000;
    let w = world_with_policy(vec![], vec![], true, |p| {
        p.categories.insert(
            Category::new("news").unwrap(),
            workflows::policy::CategoryPolicy {
                caps: Some(vec![cap(1, hour, Skip)]),
                ..Default::default()
            },
        );
        // A day-long cap on an SMS whose budget is an hour.
        p.categories.insert(
            Category::new("promo").unwrap(),
            workflows::policy::CategoryPolicy {
                caps: Some(vec![cap(1, 24 * hour, Defer)]),
                ..Default::default()
            },
        );
    });
    let first = w.submit_as("n_1", "news", Channel::Sms);
    assert!(matches!(w.advance(&first, 1), Advanced::Committed { state: StateKind::Sent, .. }));
    let second = w.submit_as("n_2", "news", Channel::Sms);
    w.advance(&second, 1);
    let reason =
        SkipReason::Capped { category: Category::new("news").unwrap(), max: 1, window_ms: hour };
    assert_eq!(w.store().record(&second).state, State::Skipped { reason });

    let promo = w.submit_as("n_3", "promo", Channel::Sms);
    assert!(matches!(w.advance(&promo, 1), Advanced::Committed { state: StateKind::Sent, .. }));
    let late = w.submit_as("n_4", "promo", Channel::Sms);
    w.advance(&late, 1);
    assert_eq!(
        w.store().record(&late).state,
        State::Skipped { reason: SkipReason::Expired { channel: Channel::Sms } }
    );
    let note = w.store().entries(&late).last().unwrap().note.clone().unwrap();
    assert!(note.starts_with("the promo cap (1 per 24 h) is reached and has room only"), "{note}");
    assert_eq!(w.sent().len(), 2, "only the first of each category went out");
}

/// The same event for the same recipient and channel makes one notification: a duplicate is
/// answered with the first one's id and writes nothing; a category whose dedup window is 0
/// does not deduplicate.
#[test]
fn a_duplicate_event_is_answered_with_the_first_notification() {
    let w = world_with_policy(vec![], vec![], false, |p| {
        p.categories.insert(
            Category::new("chatter").unwrap(),
            workflows::policy::CategoryPolicy { dedup_window_ms: Some(0), ..Default::default() },
        );
    });
    let first = w.submit_event("n_1", "order-1:shipped", "otp", None).unwrap();
    assert!(first.created && !first.deduplicated);
    let again = w.submit_event("n_2", "order-1:shipped", "otp", None).unwrap();
    assert_eq!(again.id, first.id);
    assert!(!again.created && again.deduplicated && !again.replayed);
    assert!(
        block_on(w.store().load(&w.tenant, &NotificationId::new("n_2").unwrap()))
            .unwrap()
            .is_none()
    );
    // Without a dedup window, the same event makes another notification.
    let a = w.submit_event("n_3", "ping", "chatter", None).unwrap();
    let b = w.submit_event("n_4", "ping", "chatter", None).unwrap();
    assert!(a.created && b.created && a.id != b.id);
}

/// With an idempotency key and an event, the key is claimed, the record made once per event,
/// and the answer stored with the key: a retry gets it back, another body is refused, and a
/// request that finds the key claimed is told to retry once the holder's lease runs out (then
/// it takes over).
#[test]
fn an_idempotency_key_with_an_event_is_claimed_then_answered() {
    use workflows::runner::SubmitError;
    let w = world(vec![]);
    let key = Idempotency { key: "k1".into(), fingerprint: "fp-1".into() };
    let first = w.submit_event("n_1", "e1", "otp", Some(&key)).unwrap();
    assert!(first.created);
    let retry = w.submit_event("n_2", "e1", "otp", Some(&key)).unwrap();
    assert_eq!(retry.id, first.id);
    assert!(retry.replayed && !retry.created && !retry.deduplicated);
    let changed = Idempotency { key: "k1".into(), fingerprint: "fp-2".into() };
    assert_eq!(
        w.submit_event("n_3", "e1", "otp", Some(&changed)),
        Err(SubmitError::KeyReused { id: Some(first.id.clone()) })
    );
    // Another request holds k2 (its process may have died).
    let held = Idempotency { key: "k2".into(), fingerprint: "fp-3".into() };
    let claim = block_on(w.store().claim_key(&w.tenant, &held, T0_MS, CLAIM_LEASE_MS)).unwrap();
    assert_eq!(claim, Claimed::Held);
    w.set_now(T0_MS + 1_000);
    assert_eq!(
        w.submit_event("n_4", "e2", "otp", Some(&held)),
        Err(SubmitError::InFlight { retry_after_ms: CLAIM_LEASE_MS - 1_000 })
    );
    w.set_now(T0_MS + CLAIM_LEASE_MS);
    let taken_over = w.submit_event("n_5", "e2", "otp", Some(&held)).unwrap();
    assert!(taken_over.created);
    let replayed = w.submit_event("n_6", "e2", "otp", Some(&held)).unwrap();
    assert_eq!((replayed.id, replayed.replayed), (taken_over.id, true));
    // A duplicate event under a new key is answered with the first, and stored so.
    let other = Idempotency { key: "k3".into(), fingerprint: "fp-4".into() };
    let duplicate = w.submit_event("n_7", "e1", "otp", Some(&other)).unwrap();
    assert_eq!((duplicate.id.clone(), duplicate.deduplicated), (first.id.clone(), true));
    let again = w.submit_event("n_8", "e1", "otp", Some(&other)).unwrap();
    assert_eq!((again.id, again.deduplicated, again.replayed), (first.id, true, true));
}

/// A chat world: `chat` collapses SMS for 30 s.
fn chat_world(sms: Vec<SendOutcome>) -> World {
    world_with_policy(sms, vec![], false, |p| {
        p.categories.insert(
            Category::new("chat").unwrap(),
            workflows::policy::CategoryPolicy {
                collapse_window_ms: Some(30_000),
                ..Default::default()
            },
        );
    })
}

/// Three notifications with one collapse key inside the window go out as one message: the first
/// waits the window, the others end skipped, collapsed into it (their history says so), and the
/// one message renders with a count and every one's data.
#[test]
fn notifications_with_one_collapse_key_go_out_as_one_message() {
    let w = chat_world(vec![]);
    let first = w.submit_chat("n_1", "room-1", 1);
    let second = w.submit_chat("n_2", "room-1", 2);
    let third = w.submit_chat("n_3", "room-1", 3);
    let other_room = w.submit_chat("n_4", "room-2", 4);
    let held = w.advance(&first, 1);
    assert_eq!(
        held,
        Advanced::Committed {
            version: 2,
            state: StateKind::Deferred,
            wake_at_ms: Some(T0_MS + 30_000)
        }
    );
    assert!(matches!(
        w.store().record(&first).state,
        State::Deferred { resume: Resume::Collapse { channel: Channel::Sms }, .. }
    ));
    w.set_now(T0_MS + 5_000);
    for member in [&second, &third] {
        w.advance(member, 1);
        let reason = SkipReason::Collapsed { into: first.clone() };
        assert_eq!(w.store().record(member).state, State::Skipped { reason });
        let note = w.store().entries(member).last().unwrap().note.clone().unwrap();
        assert!(note.starts_with("collapsed into notification n_1"), "{note}");
    }
    // Another key has its own group.
    assert!(matches!(
        w.advance(&other_room, 1),
        Advanced::Committed { state: StateKind::Deferred, .. }
    ));
    assert!(w.sent().is_empty(), "nothing goes out before the window ends");
    w.set_now(T0_MS + 30_000);
    let sent = w.advance(&first, 2);
    assert!(matches!(sent, Advanced::Committed { state: StateKind::Sent, .. }), "{sent:?}");
    let sent = w.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].content, steps::render::Content::Sms { body: "3 new: [1] [2] [3]".into() });
    let closing =
        w.store().entries(&first).iter().find(|e| e.from == Some(StateKind::Deferred)).cloned();
    assert_eq!(
        closing.and_then(|e| e.note).as_deref(),
        Some("the collapse window ended: one message for 3 notification(s)")
    );
}

/// A worker that joined the group and died before committing: the re-run joins again and is
/// answered the same, so the data is merged once; the survivor's retry, on a later wake-up,
/// renders with the same merged data (kept with its record).
#[test]
fn a_merge_repeated_after_a_crash_counts_once_and_a_retry_renders_the_same_message() {
    let w = chat_world(vec![failure(ErrorClass::RETRYABLE)]);
    let first = w.submit_chat("n_1", "room-1", 1);
    let second = w.submit_chat("n_2", "room-1", 2);
    w.advance(&first, 1);
    // The dead worker's join.
    let group = CollapseGroup {
        tenant: w.tenant.clone(),
        recipient: RecipientId::new("u1").unwrap(),
        channel: Channel::Sms,
        key: steps::correlation::CollapseKey::new("room-1").unwrap(),
    };
    let data = w.store().record(&second).request.data;
    let joined = block_on(w.store().collapse_join(&group, &second, &data, 30_000, T0_MS)).unwrap();
    assert_eq!(joined, steps::collapse::Joined::Merged { into: first.clone() });
    // Its wake-up runs again.
    w.advance(&second, 1);
    let reason = SkipReason::Collapsed { into: first.clone() };
    assert_eq!(w.store().record(&second).state, State::Skipped { reason });
    w.set_now(T0_MS + 30_000);
    let Advanced::Committed { version, state: StateKind::Deferred, wake_at_ms: Some(retry_at) } =
        w.advance(&first, 2)
    else {
        panic!("expected a retry after the failed send");
    };
    w.set_now(retry_at);
    assert!(matches!(
        w.advance(&first, version),
        Advanced::Committed { state: StateKind::Sent, .. }
    ));
    let bodies: Vec<steps::render::Content> = w.sent().into_iter().map(|m| m.content).collect();
    let one = steps::render::Content::Sms { body: "2 new: [1] [2]".into() };
    assert_eq!(bodies, vec![one.clone(), one], "the retry renders the same merged message");
}

/// A worker joined the group, lost the answer and died; the recipient opted out before the
/// wake-up ran again. The notification's data is in the group's one message already, so the
/// re-run ends it collapsed into the survivor (as its history says), not skipped for the opt-out
/// while its data goes out with the survivor. (Found by the simulator, seed 1000 with every
/// fault, once campaigns moved its path.)
#[test]
fn a_member_whose_join_was_applied_ends_collapsed_even_after_an_opt_out() {
    let w = chat_world(vec![]);
    let first = w.submit_chat("n_1", "room-1", 1);
    let second = w.submit_chat("n_2", "room-1", 2);
    let lone = w.submit_chat("n_3", "room-2", 3);
    w.advance(&first, 1);
    let group = CollapseGroup {
        tenant: w.tenant.clone(),
        recipient: RecipientId::new("u1").unwrap(),
        channel: Channel::Sms,
        key: steps::correlation::CollapseKey::new("room-1").unwrap(),
    };
    let data = w.store().record(&second).request.data;
    block_on(w.store().collapse_join(&group, &second, &data, 30_000, T0_MS)).unwrap();
    w.put_preferences(prefs(serde_json::json!({"channels": {"sms": false}})));
    w.advance(&second, 1);
    let reason = SkipReason::Collapsed { into: first.clone() };
    assert_eq!(w.store().record(&second).state, State::Skipped { reason });
    let notes = w.notes(&second).join(" | ");
    assert!(notes.contains("joined the collapse group of n_1 before this decision"), "{notes}");
    // One that never joined is skipped for the opt-out as before.
    w.advance(&lone, 1);
    assert_eq!(
        w.store().record(&lone).state,
        State::Skipped { reason: SkipReason::OptedOut { channel: Channel::Sms } }
    );
}

/// A collapsing submission is checked with the collapse variables; a missing one of its own is
/// still refused at submit.
#[test]
fn a_collapsing_template_is_checked_at_submit_with_its_collapse_variables() {
    let w = chat_world(vec![]);
    let mut submission = Submission {
        recipient: Recipient {
            id: RecipientId::new("u1").unwrap(),
            email: None,
            phone: Some(PhoneNumber::parse("+447911123456").unwrap()),
            opt_out: vec![],
        },
        channel: Channel::Sms,
        template: TemplateId::new("digest").unwrap(),
        data: serde_json::Map::new(),
        category: Category::new("chat").unwrap(),
        correlation: steps::correlation::Correlation {
            event_id: None,
            collapse_key: Some(steps::correlation::CollapseKey::new("room").unwrap()),
        },
        locale: None,
    };
    let error =
        block_on(w.runner.check_submission(&w.tenant, &submission)).unwrap_err().to_string();
    assert!(error.contains("code"), "{error}");
    submission.data.insert("code".into(), serde_json::json!(7));
    assert!(block_on(w.runner.check_submission(&w.tenant, &submission)).is_ok());
    // Without a collapse key there are no collapse variables.
    submission.correlation.collapse_key = None;
    let error =
        block_on(w.runner.check_submission(&w.tenant, &submission)).unwrap_err().to_string();
    assert!(error.contains("collapse"), "{error}");
}
