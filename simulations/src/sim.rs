//! The discrete-event loop: workers, the API and the webhook receiver as actors running the real
//! runner over the real in-memory store, with faults injected through the ports, on virtual time.
//!
//! One run has two phases. In the fault phase notifications arrive and faults fire. Then faults
//! stop, crashed workers come back, clocks agree again, and the run goes on (virtual time jumping
//! from one due thing to the next) until nothing is left to do: that is the liveness phase. The
//! invariants are checked after every step and at the end.
//!
//! An operator replays the dead-letter queue twice, through the API actor's runner
//! (`Runner::dlq_replay`, as `courant dlq replay --yes` does): once in the middle of the fault
//! phase, racing workers and receipts, and once after it. Replays skip notifications that may
//! have been delivered, so the send invariants hold across them. One notification in thirty is
//! also retried by an operator a few seconds after its submission (`Runner::retry`, as
//! `courant retry` does): a retry backoff or a breaker's wait then ends at once, a dead letter is
//! replayed, anything else is refused.
//!
//! Most notifications use a registry template (`notice`, in three locales) that a publisher
//! re-publishes, a new version each time, while they arrive and are in flight, through the same
//! faulty store; the rest use a built-in. Every message a provider took must be exactly its
//! notification's pinned version rendered in its locale with its data, and no SMS may exceed the
//! segment cap. Some submissions are planned to be refused (a missing variable, an SMS over the
//! cap) and must be, for that reason.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use steps::correlation::{CollapseKey, Correlation, EventId};
use steps::filter::SkipReason;
use steps::limits::{Cap, Limit};
use steps::locale::Locale;
use steps::model::{
    Category, Channel, EmailAddress, NotificationId, PhoneNumber, ProviderName, Recipient,
    RecipientId, TemplateId, TenantId,
};
use steps::outcome::ErrorClass;
use steps::rate::{OverLimit, RateLimit};
use steps::render::{
    CompiledTemplate, Content, LOCALES_CEILING, Limits, Part, PartSource, RenderError,
    SMS_SEGMENTS_CEILING, TemplateContent, TemplateSet,
};
use storage::memory::MemoryStore;
use storage::queue::{Delivery, REAPER_SLACK_MS, WakeQueue, retry_delay_ms};
use workflows::campaign::{CampaignCreated, Moved};
use workflows::dlq::DlqFilter;
use workflows::fanout::{Expander, Tick};
use workflows::machine::{Resume, State, StateKind};
use workflows::policy::Policy;
use workflows::ports::{
    Campaigns, Clock, Collapse, Directory, Provider, Store, StoreError, TemplateStore,
    TemplateWrite,
};
use workflows::record::{Cause, HistoryEntry, Idempotency, Record};
use workflows::runner::{
    Advanced, Cancelled, Received, ReplayOptions, ReplayReport, ReplayVerdict, Retried, Runner,
    Submission, SubmitError, Submitted,
};
use workflows::templates::TemplateError;

use crate::campaigns::{self as campaigns, EXPAND_EVERY_MS, PlannedCampaign};
use crate::directory::{self, Change};
use crate::faults::{Fault, FaultSet, Profile};
use crate::outage::{BREAKER_GRACE_MS, Outage, OutageFigures, peak_in_window};
use crate::report::{PolicyFigures, Report, Violation};
use crate::rng::Rng;
use crate::world::{
    FakeProvider, FaultyStore, Journaled, Planted, ReceiptDue, Shared, SimClock, Taken, World,
};

/// Virtual time at the start of every run: 2026-01-01T00:00:00Z (a fixed epoch keeps traces
/// identical across machines and years).
pub const START_MS: u64 = 1_767_225_600_000;
/// The longest a run may go on after the fault phase before unfinished work is a liveness
/// violation: long enough for a day-long email retry budget, an hour of rate-limit deferral and
/// an hour-long `Retry-After`, and a lost wake-up's deadline (`REAPER_SLACK_MS` past it) and the
/// reaper round after it on top of all that.
const LIVENESS_MS: u64 = 3 * 24 * 3_600_000;
/// How often the workers run the reaper, and how many overdue notifications per shard a round
/// re-drives (as in production: `WakeBackendConfig::default`).
const REAP_EVERY_MS: u64 = 30_000;
const REAP_PER_SHARD: usize = 100;
const _: () = assert!(
    LIVENESS_MS >= 24 * 3_600_000 + 2 * 3_600_000 + REAPER_SLACK_MS + REAP_EVERY_MS,
    "the liveness phase must outlast the longest wait plus a lost wake-up's slack"
);
/// How long the fault phase lasts after the last arrival.
const FAULT_TAIL_MS: u64 = 60_000;
/// How often a worker reclaims abandoned wake-ups, and after how long idle (as in production).
const RECLAIM_EVERY_MS: u64 = 2_000;
const RECLAIM_IDLE_MS: u64 = 10_000;
/// The most a worker's clock may be off true time: `courant serve` refuses to run workers on a
/// host whose clock is further off Redis's, so clock faults stay within it.
const MAX_SKEW_MS: u64 = storage::keys::CLOCK_SKEW_MS_MAX;
/// Steps at one instant before the loop is declared stuck.
const STEPS_PER_INSTANT_MAX: u64 = 1_000_000;
/// One notification in this many is retried by an operator (`courant retry`).
const RETRY_EVERY: usize = 30;
/// How long after its submission an operator retries it: long enough for a first failure's
/// backoff to have begun.
const RETRY_AFTER_MS: u64 = 3_000;
/// When the operator's second DLQ replay comes, after the fault phase: by then most retries have
/// run out.
const REPLAY_AFTER_FAULTS_MS: u64 = 2 * 3_600_000;
/// The operator's replay rate, per second.
const REPLAY_RATE_PER_SEC: u32 = 100;
/// The SMS segment cap of the simulator's policy: low, so that the oversized submissions it plans
/// are easy to make (a 400-character name).
const SMS_SEGMENTS_MAX: u32 = 2;
/// The registry template most notifications use, re-published while they are in flight.
const REGISTRY_TEMPLATE: &str = "notice";
/// The most versions the publisher adds in a run (the policy allows 500 a template).
const PUBLISHES_MAX: usize = 200;
/// The locales notifications ask for. The registry template has `en` (its default), `fr` and
/// `fr-CA`: these take each step of the fallback chain.
const LOCALES: [Option<&str>; 6] =
    [None, Some("fr"), Some("fr-CA"), Some("fr-BE"), Some("de"), Some("en-GB")];

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The seed everything random comes from.
    pub seed: u64,
    /// Notifications submitted.
    pub notifications: usize,
    /// Which faults may fire.
    pub profile: Profile,
    /// Worker processes.
    pub workers: usize,
    /// Wake-ups each worker handles at once.
    pub concurrency: usize,
    /// Bugs planted on purpose (tests only).
    pub planted: Planted,
    /// Stop at the first violation (the report then shows the trace around it).
    pub stop_on_violation: bool,
    /// The provider-outage scenario instead of the random workload.
    pub outage: Option<Outage>,
}

impl Config {
    /// A run of `notifications` from `seed` with the swarm profile.
    pub fn new(seed: u64, notifications: usize) -> Config {
        Config {
            seed,
            notifications,
            profile: Profile::Swarm,
            workers: 3,
            concurrency: 8,
            planted: Planted::default(),
            stop_on_violation: true,
            outage: None,
        }
    }

    /// The outage scenario: `mail-a` (the only email provider, paced at 50 sends a second) fails
    /// every call for 60 s from 30 s in, under 40 notifications a second for 150 s, without other
    /// faults.
    pub fn outage(seed: u64) -> Config {
        let arrivals_per_sec = 40;
        Config {
            profile: Profile::None,
            outage: Some(Outage {
                provider: provider_name("mail-a"),
                channel: Channel::Email,
                from_ms: 30_000,
                duration_ms: 60_000,
                send_rate: steps::rate::SendRate { max: 50, window_ms: 1_000 },
                arrivals_per_sec,
            }),
            ..Config::new(seed, 150 * arrivals_per_sec as usize)
        }
    }

    /// The command that replays this run.
    pub fn repro(&self) -> String {
        let profile = match self.profile {
            Profile::None => "none",
            Profile::Swarm => "swarm",
            Profile::All => "all",
        };
        format!(
            "courant simulate --seed {} --notifications {} --faults {profile}",
            self.seed, self.notifications
        )
    }
}

type SimRunner = Runner<FaultyStore<MemoryStore>, SimClock>;

/// How a planned submission must come out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Accepted.
    Accepted,
    /// Refused: its data lacks `order`, which every part uses.
    MissingVariable,
    /// Refused: an SMS whose body is over the segment cap.
    OverSmsCap,
}
type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What an actor is doing.
enum Job {
    /// Handling a wake-up.
    Wake(Delivery, Boxed<Result<Advanced, StoreError>>),
    /// Submitting notification `idx` (try `try_`).
    Submit(usize, u32, Boxed<Result<Submitted, SubmitError>>),
    /// Applying a receipt.
    Receipt(ReceiptDue, Boxed<Result<Received, StoreError>>),
    /// Cancelling notification `idx`.
    Cancel(usize, Boxed<Result<Cancelled, StoreError>>),
    /// An operator retrying notification `idx` (`courant retry`).
    Retry(usize, Boxed<Result<Retried, StoreError>>),
    /// An operator replaying the dead-letter queue.
    Replay(Boxed<Result<ReplayReport, StoreError>>),
    /// A worker's campaign round (`Expander::tick`).
    Expand(Boxed<Result<Tick, StoreError>>),
    /// The tenant creating campaign `k` (try `try_`).
    CampaignCreate(usize, u32, Boxed<Result<CampaignCreated, StoreError>>),
    /// The tenant cancelling campaign `k` (try `try_`).
    CampaignCancel(usize, u32, Boxed<Result<Moved, StoreError>>),
    /// The publisher adding revision `n` of the registry template and publishing it.
    Publish(u32, Boxed<Result<Option<u32>, TemplateError>>),
    /// The application changing what the directory holds about workload recipient `idx`.
    Directory(usize, Change, Boxed<Result<(), StoreError>>),
}

struct Task {
    actor: usize,
    job: Job,
    /// The task waits on a provider answer due then: polling it earlier is wasted work.
    waits_until_ms: u64,
}

/// Something due at a virtual time.
#[derive(Debug, Clone)]
enum Due {
    Submit(usize, u32),
    Cancel(usize),
    /// An operator retries notification `idx` now (`courant retry`).
    Retry(usize),
    Receipt(ReceiptDue),
    Restart(usize),
    ClockStep(usize),
    FaultsOff,
    /// An operator replays the whole dead-letter queue.
    Replay,
    /// The tenant creates campaign `k` (try `try_`).
    CampaignCreate(usize, u32),
    /// The tenant cancels campaign `k` (try `try_`).
    CampaignCancel(usize, u32),
    /// The publisher publishes a new version of the registry template.
    Publish,
    /// The application changes a recipient's preferences or address (the preference fault).
    Directory(usize, Change),
}

/// One planned notification.
#[derive(Debug, Clone)]
struct Planned {
    at_ms: u64,
    channel: Channel,
    recipient: usize,
    opted_out: bool,
    no_address: bool,
    category: &'static str,
    /// The event it reports (`evt-N`), if any: a repeat of an earlier submission's event is a
    /// duplicate the API must answer with the first notification.
    event: Option<usize>,
    /// Its collapse key (`thread-N`), for the `social` category.
    collapse: Option<usize>,
    /// The registry template (else the built-in `note`).
    registry: bool,
    /// The locale it asks for.
    locale: Option<&'static str>,
    /// How its submission must come out.
    expect: Expect,
    /// Whether the notification carries addresses inline (else it names the recipient only).
    inline: bool,
}

struct WorkerState {
    alive: bool,
    consumer: String,
}

/// A simulation run.
pub struct Simulation {
    config: Config,
    /// Each worker's provider circuit breakers.
    breakers: Vec<providers::breaker::Registry>,
    shared: Arc<Shared>,
    store: MemoryStore,
    policy: Arc<Policy>,
    runners: Vec<Arc<SimRunner>>,
    workers: Vec<WorkerState>,
    tasks: Vec<Task>,
    due: BTreeMap<(u64, u64), Due>,
    due_seq: u64,
    plan: Vec<Planned>,
    accepted: BTreeMap<usize, NotificationId>,
    accepted_at: BTreeMap<NotificationId, u64>,
    last_reclaim_ms: u64,
    /// When the reaper last ran.
    last_reap_ms: u64,
    /// Notifications the reaper re-drove.
    redriven: u64,
    faults_on: bool,
    // The checker's view of each notification: last version and state.
    seen: BTreeMap<NotificationId, (u64, StateKind)>,
    /// Each notification's category, from its creation.
    categories: BTreeMap<NotificationId, Category>,
    edges: BTreeMap<(StateKind, StateKind), u64>,
    violations: Vec<Violation>,
    steps: u64,
    tenant: TenantId,
    /// Dead letters the operator replayed.
    replayed: u64,
    /// The tenant's campaigns.
    campaigns: Vec<PlannedCampaign>,
    /// Campaigns the tenant cancelled (the cancel was accepted).
    campaigns_cancelled: BTreeSet<usize>,
    /// The campaign invariants' state.
    campaign_checker: campaigns::Checker,
    /// When the workers last looked for campaign pages.
    last_expand_ms: u64,
    /// What the recipients' policies did.
    policy_figures: PolicyFigures,
    /// The built-in templates, for the checker.
    builtin: Arc<TemplateSet>,
    /// The registry template's revisions so far.
    revisions: u32,
    /// Versions the publisher published.
    versions_published: u64,
    /// Submissions refused as planned.
    refused_on_purpose: u64,
    /// Messages checked against their pinned version.
    renders_checked: u64,
    /// How many workload recipients there are.
    recipients: usize,
}

impl std::fmt::Debug for Simulation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulation")
            .field("config", &self.config)
            .field("tasks", &self.tasks.len())
            .field("due", &self.due.len())
            .finish_non_exhaustive()
    }
}

fn poll_once<T>(future: Pin<&mut (dyn Future<Output = T> + Send)>) -> Poll<T> {
    let mut context = Context::from_waker(Waker::noop());
    future.poll(&mut context)
}

/// Runs a port call that completes at once (every in-memory call does).
fn at_once<T>(future: impl Future<Output = T> + Send) -> T {
    let mut future = std::pin::pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut context) {
        Poll::Ready(value) => value,
        Poll::Pending => unreachable!("in-memory port calls complete at once"),
    }
}

fn templates() -> TemplateSet {
    let id = TemplateId::new("note").unwrap_or_else(|_| unreachable!());
    let part =
        |part, source: &str| PartSource { template: id.clone(), part, source: source.into() };
    // The digest of a collapse group: a count and every merged notification's order, which the
    // collapse invariant looks for in what the provider took.
    let digest = TemplateId::new("digest").unwrap_or_else(|_| unreachable!());
    let items = "{% for item in collapse.items %}[{{ item.order }}]{% endfor %}";
    let merged =
        |part, source: &str| PartSource { template: digest.clone(), part, source: source.into() };
    TemplateSet::from_parts([
        merged(Part::EmailSubject, "{{ collapse.count }} new messages"),
        merged(Part::EmailText, items),
        merged(Part::SmsBody, items),
        merged(Part::InAppTitle, "{{ collapse.count }} new"),
        merged(Part::InAppBody, items),
        merged(Part::PushTitle, "{{ collapse.count }} new"),
        merged(Part::PushBody, items),
        part(Part::EmailSubject, "Hello {{ name }}"),
        part(Part::EmailText, "Hello {{ name }}, your order {{ order }} shipped."),
        part(Part::SmsBody, "Order {{ order }} shipped."),
        part(Part::InAppTitle, "Order {{ order }}"),
        part(Part::InAppBody, "Hello {{ name }}, it shipped."),
        part(Part::PushTitle, "Order {{ order }}"),
        part(Part::PushBody, "It shipped."),
    ])
    .unwrap_or_else(|e| unreachable!("the simulator's templates are valid: {e}"))
}

/// Revision `revision` of the registry template, in `en` (its default), `fr` and `fr-CA`: every
/// part names its revision and locale, so a message shows which version and locale it was
/// rendered from, and every part uses `order`.
fn registry_content(revision: u32) -> TemplateContent {
    let parts = |tag: &str| {
        let mark = format!("[{tag} rev-{revision}]");
        std::collections::BTreeMap::from([
            (Part::EmailSubject, format!("{mark} Order {{{{ order }}}}")),
            (
                Part::EmailText,
                format!("{mark} Hello {{{{ name }}}}, order {{{{ order }}}} shipped."),
            ),
            (Part::SmsBody, format!("{mark} Order {{{{ order }}}} shipped, {{{{ name }}}}.")),
            (Part::InAppTitle, format!("{mark} Order {{{{ order }}}}")),
            (Part::InAppBody, format!("{mark} Hello {{{{ name }}}}, it shipped.")),
            (Part::InAppAction, "/orders/{{ order }}".to_owned()),
            (Part::PushTitle, format!("{mark} Order {{{{ order }}}}")),
            (Part::PushBody, format!("{mark} It shipped.")),
        ])
    };
    let locale = |tag: &str| Locale::parse(tag).unwrap_or_else(|_| unreachable!("a valid tag"));
    TemplateContent {
        default_locale: locale("en"),
        locales: ["en", "fr", "fr-CA"].into_iter().map(|tag| (locale(tag), parts(tag))).collect(),
    }
}

fn registry_id() -> TemplateId {
    TemplateId::new(REGISTRY_TEMPLATE).unwrap_or_else(|_| unreachable!())
}

fn provider_name(s: &str) -> ProviderName {
    ProviderName::new(s).unwrap_or_else(|_| unreachable!())
}

impl Simulation {
    /// Sets a run up: the world, the store, the actors, the workload and the fault schedule.
    pub fn new(config: Config) -> Simulation {
        let mut fault_rng = Rng::fork(config.seed, "faults");
        let faults = match config.profile {
            Profile::None => FaultSet::none(),
            profile => FaultSet::pick(profile, &mut fault_rng),
        };
        let workers = config.workers.max(1);
        let api = workers;
        let webhook = workers + 1;
        let store_actor = workers + 2;
        let world = World::new(faults, fault_rng, config.planted);
        let shared = Shared::new(world, START_MS, store_actor + 1);
        let store = MemoryStore::with_clock(Arc::new(SimClock {
            shared: shared.clone(),
            actor: store_actor,
        }));
        let templates = Arc::new(templates());
        let tenant = TenantId::new("sim").unwrap_or_else(|_| unreachable!());
        // The registry template's first version, published before anything arrives.
        let created = at_once(store.template_create(
            &tenant,
            &registry_id(),
            &registry_content(0),
            true,
            START_MS,
            1_000,
        ));
        assert!(matches!(created, Ok(TemplateWrite::Done(_))), "{created:?}");
        let mut policy = Policy::default();
        policy.templates.sms_segments_max = SMS_SEGMENTS_MAX;
        policy.routes.insert(Channel::Email, vec![provider_name("mail-a")]);
        // Two SMS providers, so a broken one fails over to the other.
        policy.routes.insert(Channel::Sms, vec![provider_name("sms-a"), provider_name("sms-b")]);
        policy.routes.insert(Channel::InApp, vec![provider_name("inapp")]);
        // In-app skips over its limit (the other channels defer), and push has no provider at
        // all, so the skip and the no-route paths run too.
        policy.rate.insert(
            Channel::InApp,
            RateLimit { max: 3, window_ms: 60_000, over_limit: OverLimit::Skip },
        );
        // Tight limits, so the hot recipient's messages wait for room in the window.
        policy.rate.insert(
            Channel::Sms,
            RateLimit { max: 3, window_ms: 600_000, over_limit: OverLimit::Defer },
        );
        policy.rate.insert(
            Channel::Email,
            RateLimit { max: 5, window_ms: 3_600_000, over_limit: OverLimit::Defer },
        );
        // Caps across channels: marketing waits for room in two windows, news is skipped over
        // its cap; otp (critical) is exempt from every per-recipient window.
        let category = |name| Category::new(name).unwrap_or_else(|_| unreachable!());
        policy.categories.entry(category("marketing")).or_default().caps = Some(vec![
            Cap { max: 2, window_ms: 600_000, over_limit: OverLimit::Defer },
            Cap { max: 4, window_ms: 3_600_000, over_limit: OverLimit::Defer },
        ]);
        policy.categories.entry(category("news")).or_default().caps =
            Some(vec![Cap { max: 2, window_ms: 300_000, over_limit: OverLimit::Skip }]);
        // Social notifications with one collapse key go out as one message per 20 s.
        policy.categories.entry(category("social")).or_default().collapse_window_ms = Some(20_000);
        if let Some(outage) = &config.outage {
            // Distinct recipients and no per-recipient limits: only the provider is in the way.
            policy.rate.clear();
            policy.send_rate.insert(outage.provider.clone(), outage.send_rate);
            let from = START_MS + outage.from_ms;
            shared
                .world()
                .outages
                .insert(outage.provider.clone(), (from, from + outage.duration_ms));
        }
        // The planted stale API configuration: the API checks submissions against the highest
        // cap a policy allows, the workers and the checker against the real one.
        let api_policy = if config.planted.segment_cap_unchecked_at_submit {
            let mut stale = policy.clone();
            stale.templates.sms_segments_max = SMS_SEGMENTS_CEILING;
            Arc::new(stale)
        } else {
            Arc::new(policy.clone())
        };
        let policy = Arc::new(policy);
        let breakers: Vec<providers::breaker::Registry> =
            (0..workers).map(|_| providers::breaker::Registry::default()).collect();
        let runner = |actor: usize, worker: bool| {
            let providers: Vec<Arc<dyn Provider>> = if worker {
                [
                    ("mail-a", Channel::Email),
                    ("sms-a", Channel::Sms),
                    ("sms-b", Channel::Sms),
                    ("inapp", Channel::InApp),
                ]
                .into_iter()
                .map(|(name, channel)| {
                    let fake: Arc<dyn Provider> = Arc::new(FakeProvider {
                        name: provider_name(name),
                        channel,
                        shared: shared.clone(),
                        actor,
                    });
                    // Each worker process has its own breakers, as in production.
                    Arc::new(providers::breaker::Breaker::new(
                        fake,
                        providers::breaker::BreakerConfig::default(),
                        breakers[actor].clone(),
                        Arc::new(SimClock { shared: shared.clone(), actor }),
                    )) as Arc<dyn Provider>
                })
                .collect()
            } else {
                Vec::new()
            };
            let faulty = FaultyStore {
                inner: store.clone(),
                shared: shared.clone(),
                actor,
                worker,
                stale: Arc::default(),
            };
            let policy = if worker { policy.clone() } else { api_policy.clone() };
            Arc::new(
                Runner::new(
                    faulty.clone(),
                    SimClock { shared: shared.clone(), actor },
                    templates.clone(),
                    policy,
                    providers,
                )
                .with_template_store(Arc::new(faulty)),
            )
        };
        let mut runners: Vec<Arc<SimRunner>> = (0..workers).map(|w| runner(w, true)).collect();
        runners.push(runner(api, false));
        runners.push(runner(webhook, false));

        let mut sim = Simulation {
            breakers,
            shared,
            store,
            policy,
            runners,
            workers: (0..workers)
                .map(|w| WorkerState { alive: true, consumer: format!("worker-{w}") })
                .collect(),
            tasks: Vec::new(),
            due: BTreeMap::new(),
            due_seq: 0,
            plan: Vec::new(),
            accepted: BTreeMap::new(),
            accepted_at: BTreeMap::new(),
            last_reclaim_ms: START_MS,
            last_reap_ms: START_MS,
            redriven: 0,
            faults_on: true,
            seen: BTreeMap::new(),
            categories: BTreeMap::new(),
            edges: BTreeMap::new(),
            replayed: 0,
            campaigns: Vec::new(),
            campaigns_cancelled: BTreeSet::new(),
            campaign_checker: campaigns::Checker::default(),
            last_expand_ms: START_MS,
            recipients: 0,
            policy_figures: PolicyFigures::default(),
            violations: Vec::new(),
            steps: 0,
            tenant,
            builtin: templates,
            revisions: 0,
            versions_published: 0,
            refused_on_purpose: 0,
            renders_checked: 0,
            config,
        };
        sim.plan_workload();
        sim.seed_directory();
        sim.plan_faults();
        sim
    }

    fn schedule(&mut self, at_ms: u64, due: Due) {
        self.due_seq += 1;
        self.due.insert((at_ms, self.due_seq), due);
    }

    fn plan_workload(&mut self) {
        let mut rng = Rng::fork(self.config.seed, "workload");
        // The template choices have their own stream, so they leave the rest of the workload as
        // it was before templates had a registry.
        let mut template_rng = Rng::fork(self.config.seed, "templates");
        let n = self.config.notifications;
        let recipients = (n / 4).max(5);
        let mut at = START_MS;
        if let Some(outage) = &self.config.outage {
            // Steady arrivals, one recipient each, nothing cancelled or opted out.
            let gap_us = 1_000_000 / u64::from(outage.arrivals_per_sec.max(1));
            for idx in 0..n {
                let at = START_MS + idx as u64 * gap_us / 1_000;
                let channel = match rng.index(100) {
                    0..=49 => Channel::Email,
                    50..=74 => Channel::Sms,
                    _ => Channel::InApp,
                };
                let planned = Planned {
                    at_ms: at,
                    channel,
                    recipient: idx,
                    opted_out: false,
                    no_address: false,
                    category: "orders",
                    event: None,
                    collapse: None,
                    registry: false,
                    locale: None,
                    expect: Expect::Accepted,
                    inline: true,
                };
                self.plan.push(planned);
                self.schedule(at, Due::Submit(idx, 0));
            }
            let faults_end = self.plan.last().map_or(START_MS, |p| p.at_ms) + FAULT_TAIL_MS;
            self.schedule(faults_end, Due::FaultsOff);
            return;
        }
        // A stream of its own, so the directory's draws leave the rest of the workload as it was.
        let mut directory_rng = Rng::fork(self.config.seed, "directory");
        self.recipients = recipients;
        let burst_rate = self.shared.world().faults.rate(Fault::Burst);
        let mut burst_left = 0;
        for idx in 0..n {
            // The burst fault: many notifications for one recipient at one instant.
            if burst_left == 0 && burst_rate > 0.0 && rng.chance(burst_rate) {
                burst_left = rng.range(5, 25);
                self.shared.world().count(Fault::Burst);
            }
            let burst = burst_left > 0;
            burst_left = burst_left.saturating_sub(1);
            // Bursts: a tenth of arrivals come at the same instant as the previous one.
            if !burst && !rng.chance(0.1) {
                at += rng.range(0, 4);
            }
            let channel = match rng.index(100) {
                0..=38 => Channel::Email,
                39..=68 => Channel::Sms,
                69..=97 => Channel::InApp,
                _ => Channel::Push,
            };
            // One recipient is hot (a twentieth of all traffic), so rate limits bite; a burst
            // goes to recipient 1.
            let recipient = if burst {
                1
            } else if rng.chance(0.05) {
                0
            } else {
                rng.index(recipients)
            };
            // A few recipients opted out of the channel, a few have no address for it.
            let opted_out = rng.chance(0.02);
            let no_address = rng.chance(0.02);
            // Categories with their own retry policies (the defaults' `otp` and `marketing`) and
            // caps (`marketing`, `news`); a burst is mostly capped traffic.
            let category = match (burst, rng.index(100)) {
                (false, 0..=14) | (true, 0..=9) => "otp",
                (false, 15..=29) | (true, 10..=59) => "marketing",
                (false, 30..=39) | (true, 60..=89) => "news",
                (false, 40..=44) | (true, 90..=94) => "social",
                _ => "orders",
            };
            let registry = template_rng.chance(0.8);
            let locale = LOCALES[template_rng.index(LOCALES.len())];
            let expect = if !registry {
                Expect::Accepted
            } else if template_rng.chance(0.02) {
                Expect::MissingVariable
            } else if channel == Channel::Sms && template_rng.chance(0.05) {
                Expect::OverSmsCap
            } else {
                Expect::Accepted
            };
            // Three in ten name the recipient only: addresses come from the stored profile.
            let inline = !directory_rng.chance(0.3);
            // Social threads: a few recipients, two threads each, so groups fill; they render the
            // built-in digest.
            let (recipient, collapse) = if category == "social" {
                (if burst { recipient } else { rng.index(3) }, Some(rng.index(2)))
            } else {
                (recipient, None)
            };
            let (registry, expect) =
                if collapse.is_some() { (false, Expect::Accepted) } else { (registry, expect) };
            // A third of submissions report an event; now and then one repeats a recent event (a
            // producer's retry, a duplicated message on the application's bus).
            let event = rng.chance(0.3).then_some(idx);
            let recent: Vec<usize> =
                (idx.saturating_sub(40)..idx).filter(|&j| self.plan[j].event.is_some()).collect();
            let planned = if !recent.is_empty() && rng.chance(0.06) {
                let original = &self.plan[recent[rng.index(recent.len())]];
                Planned { at_ms: at, ..original.clone() }
            } else {
                Planned {
                    at_ms: at,
                    channel,
                    recipient,
                    opted_out,
                    no_address,
                    category,
                    event,
                    collapse,
                    registry,
                    locale,
                    expect,
                    inline,
                }
            };
            self.plan.push(planned);
            self.schedule(at, Due::Submit(idx, 0));
            if rng.chance(0.02) {
                let cancel_at = at + rng.range(0, 5_000);
                self.schedule(cancel_at, Due::Cancel(idx));
            }
            // An operator's retry of one notification in thirty, a few seconds in: some wait on
            // a retry backoff or a breaker then, some are dead letters, most have nothing to
            // retry. Chosen without the generator, so every other draw stays as it was.
            if idx % RETRY_EVERY == RETRY_EVERY / 2 {
                self.schedule(at + RETRY_AFTER_MS, Due::Retry(idx));
            }
        }
        let faults_end = at + FAULT_TAIL_MS;
        // New versions of the registry template while notifications arrive (so they pin
        // different versions, and workers render versions published after them), and a few
        // while they are in flight after the last arrival.
        let publishes = (n / 10 + 3).min(PUBLISHES_MAX);
        for p in 0..publishes {
            let (from, to) = if p + 3 < publishes { (START_MS, at) } else { (at, faults_end) };
            let when = template_rng.range(from, to);
            self.schedule(when, Due::Publish);
        }
        self.schedule(faults_end, Due::FaultsOff);
        self.schedule(START_MS + (faults_end - START_MS) / 2, Due::Replay);
        self.schedule(faults_end + REPLAY_AFTER_FAULTS_MS, Due::Replay);
        self.campaigns = campaigns::plan(self.config.seed, n, recipients, START_MS, faults_end);
        if !self.campaigns.is_empty() {
            // The filter campaign's audience, logged like the workload's profiles so the
            // directory invariants judge its sends too.
            for (id, contact) in campaigns::profiles(recipients * 2) {
                let put = self.store.put_contact(&self.tenant, &id, &contact, START_MS);
                if let Err(error) = at_once(put) {
                    unreachable!("the in-memory directory takes a profile: {error}");
                }
                if let Ok(Some(entry)) = at_once(self.store.recipient(&self.tenant, &id)) {
                    self.shared.world().log_directory(entry);
                }
            }
        }
        for (k, planned) in self.campaigns.clone().into_iter().enumerate() {
            self.schedule(planned.start_ms, Due::CampaignCreate(k, 0));
            if let Some(at) = planned.cancel_at_ms {
                self.schedule(at, Due::CampaignCancel(k, 0));
            }
        }
    }

    fn plan_faults(&mut self) {
        let mut rng = Rng::fork(self.config.seed, "schedule");
        let faults_end = self.faults_end_ms();
        let (drift, steps, brownout) = {
            let world = self.shared.world();
            (
                world.faults.on(Fault::ClockDrift),
                world.faults.rate(Fault::ClockStep),
                world.faults.on(Fault::Brownout),
            )
        };
        if drift {
            for w in 0..self.workers.len() {
                let offset = rng.range(0, MAX_SKEW_MS) as i64 - (MAX_SKEW_MS / 2) as i64;
                self.shared.set_offset(w, offset);
            }
            self.shared.world().count(Fault::ClockDrift);
        }
        if steps > 0.0 {
            for w in 0..self.workers.len() {
                let mut at = START_MS;
                loop {
                    at += rng.range(1_000, 30_000);
                    if at >= faults_end {
                        break;
                    }
                    if rng.chance(steps * 20.0) {
                        self.schedule(at, Due::ClockStep(w));
                    }
                }
            }
        }
        let changes = self.shared.world().faults.rate(Fault::PreferenceChange);
        if changes > 0.0 && self.recipients > 0 {
            // Up to thirty changes over the fault phase, half of them to the hot recipient, whose
            // notifications wait longest (rate limits): opt-outs, unsubscribes, quiet hours and
            // removed numbers while they are in flight.
            let count = (changes * 200.0).ceil() as u64;
            for _ in 0..count {
                let at = START_MS + rng.range(0, (faults_end - START_MS).max(1));
                let who = if rng.chance(0.5) { 0 } else { rng.index(self.recipients) };
                let change = Change::pick(&mut rng);
                self.schedule(at, Due::Directory(who, change));
            }
        }
        if brownout {
            let mut world = self.shared.world();
            for name in ["mail-a", "sms-a", "sms-b", "inapp"] {
                let from = START_MS + rng.range(0, (faults_end - START_MS).max(1));
                world.brownouts.insert(provider_name(name), (from, from + 60_000));
            }
        }
    }

    fn now(&self) -> u64 {
        self.shared.now_ms()
    }

    fn trace(&self, line: String) {
        self.shared.world().trace(line);
    }

    fn trace_id(&self, id: &NotificationId, line: String) {
        self.shared.world().trace_id(id, line);
    }

    /// Runs to the end and reports. failsafe's breakers read a thread-local mock clock here,
    /// moved forward with virtual time (the loop is single-threaded, so that clock is ours).
    pub fn run(self) -> Report {
        failsafe::clock::freeze(|breaker_clock| self.run_frozen(breaker_clock))
    }

    fn run_frozen(mut self, breaker_clock: &mut failsafe::clock::MockClock) -> Report {
        loop {
            self.settle();
            self.check_journal();
            if self.config.stop_on_violation && !self.violations.is_empty() {
                break;
            }
            let Some(next) = self.next_time() else { break };
            let now = self.now();
            let next = if next <= now { now + 1 } else { next };
            if !self.faults_on && next > self.faults_end_ms() + LIVENESS_MS {
                self.violation("liveness", None, "work was still pending after the liveness phase");
                break;
            }
            breaker_clock.advance(std::time::Duration::from_millis(next - now));
            self.shared.advance_to(next);
        }
        self.finish()
    }

    fn faults_end_ms(&self) -> u64 {
        self.plan.last().map_or(START_MS, |p| p.at_ms) + FAULT_TAIL_MS
    }

    /// When the next thing can happen, if anything can.
    fn next_time(&self) -> Option<u64> {
        let mut next: Option<u64> = None;
        let mut consider = |t: Option<u64>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        consider(self.due.keys().next().map(|(at, _)| *at));
        consider(self.shared.world().next_answer_ms());
        consider(self.store.next_timer_due_ms());
        let pending = at_once(self.store.stats()).map_or(0, |s| s.pending);
        if pending > 0 {
            consider(Some(self.last_reclaim_ms + RECLAIM_EVERY_MS));
        }
        // The workers' next look at a due campaign page.
        if !self.live_workers().is_empty() {
            let round = self.last_expand_ms + EXPAND_EVERY_MS;
            consider(self.store.next_campaign_due_ms().map(|due| due.max(round)));
        }
        // A notification whose wake-up was lost waits on nothing but the reaper's round after
        // its deadline.
        if self.reaper_on() {
            let round = self.last_reap_ms + REAP_EVERY_MS;
            consider(self.store.next_deadline_ms().map(|deadline| deadline.max(round)));
        }
        next
    }

    /// Whether the reaper runs: some worker is alive to run it, and it is not planted away.
    fn reaper_on(&self) -> bool {
        !self.config.planted.no_reaper && self.workers.iter().any(|w| w.alive)
    }

    fn live_workers(&self) -> Vec<usize> {
        (0..self.workers.len()).filter(|w| self.workers[*w].alive).collect()
    }

    fn busy(&self, actor: usize) -> usize {
        self.tasks.iter().filter(|t| t.actor == actor && matches!(t.job, Job::Wake(..))).count()
    }

    fn spawn_wake(&mut self, worker: usize, delivery: Delivery) {
        let runner = self.runners[worker].clone();
        let wake = delivery.wake.clone();
        let future: Boxed<Result<Advanced, StoreError>> =
            Box::pin(async move { runner.advance(&wake).await });
        self.trace_id(&delivery.wake.id, format!("a{worker} take {}", delivery.wake.key()));
        self.tasks.push(Task {
            actor: worker,
            job: Job::Wake(delivery, future),
            waits_until_ms: 0,
        });
    }

    /// Makes every bit of progress possible at the current instant.
    fn settle(&mut self) {
        let mut rounds = 0_u64;
        loop {
            rounds += 1;
            self.steps += 1;
            assert!(rounds < STEPS_PER_INSTANT_MAX, "the simulation is stuck at one instant");
            let mut progressed = false;
            let now = self.now();

            // Receipts the providers scheduled.
            let receipts = std::mem::take(&mut self.shared.world().receipts);
            for receipt in receipts {
                self.schedule(receipt.at_ms, Due::Receipt(receipt));
            }
            // Things due now.
            while let Some(entry) = self.due.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let due = entry.remove();
                self.handle_due(due);
                progressed = true;
            }
            // Timers that are due.
            if at_once(self.store.promote_due(now, 1_000)).unwrap_or(0) > 0 {
                progressed = true;
            }
            // Re-drive notifications whose wake-up was lost, as the workers do every 30 s.
            if self.reaper_on() && now >= self.last_reap_ms + REAP_EVERY_MS {
                self.last_reap_ms = now;
                let reaped =
                    at_once(self.store.redrive_overdue(now, REAP_PER_SHARD)).unwrap_or_default();
                if reaped.examined() > 0 {
                    self.redriven += reaped.redriven as u64;
                    self.trace(format!(
                        "reaper re-drove {} overdue, dropped {}",
                        reaped.redriven, reaped.cleared
                    ));
                    progressed = true;
                }
            }
            // Reclaim what dead (or slow) workers hold, as production does every 2 s.
            if now >= self.last_reclaim_ms + RECLAIM_EVERY_MS {
                self.last_reclaim_ms = now;
                for w in self.live_workers() {
                    let free = self.config.concurrency.saturating_sub(self.busy(w));
                    if free == 0 {
                        continue;
                    }
                    let consumer = self.workers[w].consumer.clone();
                    let reclaimed =
                        at_once(self.store.reclaim_abandoned(&consumer, RECLAIM_IDLE_MS, free))
                            .unwrap_or_default();
                    for delivery in reclaimed {
                        self.trace_id(
                            &delivery.wake.id,
                            format!("a{w} reclaim {}", delivery.wake.key()),
                        );
                        self.spawn_wake(w, delivery);
                        progressed = true;
                    }
                }
            }
            // Fetch ready wake-ups.
            let live = self.live_workers();
            for &w in &live {
                let free = self.config.concurrency.saturating_sub(self.busy(w));
                if free == 0 {
                    continue;
                }
                let consumer = self.workers[w].consumer.clone();
                let fetched = at_once(self.store.fetch(&consumer, free, 0)).unwrap_or_default();
                for delivery in fetched {
                    let lost = self.shared.world().roll(Fault::LostWake);
                    if lost {
                        self.trace_id(
                            &delivery.wake.id,
                            format!("wake-up {} lost before a{w} ran it", delivery.wake.key()),
                        );
                        let _ = at_once(self.store.ack(std::slice::from_ref(&delivery)));
                        progressed = true;
                        continue;
                    }
                    let duplicate =
                        live.len() > 1 && self.shared.world().roll(Fault::DuplicateDelivery);
                    if duplicate {
                        let other =
                            live[(live.iter().position(|x| *x == w).unwrap_or(0) + 1) % live.len()];
                        self.trace_id(
                            &delivery.wake.id,
                            format!("duplicate delivery of {} to a{other}", delivery.wake.key()),
                        );
                        self.spawn_wake(other, delivery.clone());
                    }
                    self.spawn_wake(w, delivery);
                    progressed = true;
                }
            }
            // Campaign pages that are due, every worker looking as in production (the claim lets
            // one of them have each page).
            let page_due = self.store.next_campaign_due_ms().is_some_and(|due| due <= now);
            if page_due && now >= self.last_expand_ms + EXPAND_EVERY_MS {
                self.last_expand_ms = now;
                for w in self.live_workers() {
                    let expanding =
                        self.tasks.iter().any(|t| t.actor == w && matches!(t.job, Job::Expand(_)));
                    if !expanding {
                        let expander = Expander::new(self.runners[w].clone());
                        let future: Boxed<_> = Box::pin(async move { expander.tick().await });
                        self.tasks.push(Task {
                            actor: w,
                            job: Job::Expand(future),
                            waits_until_ms: 0,
                        });
                        progressed = true;
                    }
                }
            }
            // Poll every task.
            let mut i = 0;
            while i < self.tasks.len() {
                if self.tasks[i].waits_until_ms > now {
                    i += 1;
                    continue;
                }
                let poll = match &mut self.tasks[i].job {
                    Job::Wake(_, f) => poll_once(f.as_mut()).map(Done::Wake),
                    Job::Submit(_, _, f) => poll_once(f.as_mut()).map(Done::Submit),
                    Job::Receipt(_, f) => poll_once(f.as_mut()).map(Done::Receipt),
                    Job::Cancel(_, f) => poll_once(f.as_mut()).map(Done::Cancel),
                    Job::Retry(_, f) => poll_once(f.as_mut()).map(Done::Retry),
                    Job::Replay(f) => poll_once(f.as_mut()).map(Done::Replay),
                    Job::Expand(f) => poll_once(f.as_mut()).map(Done::Expand),
                    Job::CampaignCreate(_, _, f) => poll_once(f.as_mut()).map(Done::CampaignCreate),
                    Job::CampaignCancel(_, _, f) => poll_once(f.as_mut()).map(Done::CampaignCancel),
                    Job::Publish(_, f) => poll_once(f.as_mut()).map(Done::Publish),
                    Job::Directory(_, _, f) => poll_once(f.as_mut()).map(Done::Directory),
                };
                match poll {
                    Poll::Ready(done) => {
                        let task = self.tasks.remove(i);
                        self.complete(task, done);
                        progressed = true;
                    }
                    Poll::Pending => {
                        if let Some(at_ms) = self.shared.world().last_call_answer_ms.take() {
                            self.tasks[i].waits_until_ms = at_ms;
                        }
                        i += 1;
                    }
                }
            }
            // A task that gave way is polled again at this instant.
            if std::mem::take(&mut self.shared.world().yielded) {
                progressed = true;
            }
            // Workers that died during the polls.
            let crashed = std::mem::take(&mut self.shared.world().crashed);
            for actor in crashed {
                self.kill(actor);
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
    }

    fn handle_due(&mut self, due: Due) {
        let now = self.now();
        match due {
            Due::Submit(idx, try_) => self.submit(idx, try_),
            Due::Cancel(idx) => {
                let Some(id) = self.accepted.get(&idx).cloned() else { return };
                let runner = self.runners[self.workers.len()].clone();
                let tenant = self.tenant.clone();
                self.trace_id(&id, format!("api cancel {id}"));
                let future: Boxed<_> = Box::pin(async move { runner.cancel(&tenant, &id).await });
                self.tasks.push(Task {
                    actor: self.workers.len(),
                    job: Job::Cancel(idx, future),
                    waits_until_ms: 0,
                });
            }
            Due::Retry(idx) => {
                let Some(id) = self.accepted.get(&idx).cloned() else { return };
                let runner = self.runners[self.workers.len()].clone();
                let tenant = self.tenant.clone();
                self.trace_id(&id, format!("operator retry {id}"));
                let future: Boxed<_> = Box::pin(async move { runner.retry(&tenant, &id).await });
                self.tasks.push(Task {
                    actor: self.workers.len(),
                    job: Job::Retry(idx, future),
                    waits_until_ms: 0,
                });
            }
            Due::Receipt(receipt) => {
                let runner = self.runners[self.workers.len() + 1].clone();
                self.trace_id(
                    &receipt.id,
                    format!(
                        "receipt {:?} for {} from {}",
                        receipt.receipt, receipt.id, receipt.provider
                    ),
                );
                let r = receipt.clone();
                let future: Boxed<_> = Box::pin(async move {
                    runner.receipt(&r.tenant, &r.id, &r.provider, r.receipt).await
                });
                self.tasks.push(Task {
                    actor: self.workers.len() + 1,
                    job: Job::Receipt(receipt, future),
                    waits_until_ms: 0,
                });
            }
            Due::Restart(w) => {
                if !self.workers[w].alive {
                    self.workers[w].alive = true;
                    self.trace(format!("a{w} restart (same name)"));
                }
            }
            Due::ClockStep(w) => {
                if self.faults_on {
                    let mut world = self.shared.world();
                    // A step lands the clock anywhere within the skew courant tolerates (serve
                    // refuses to run workers on a host further off than that).
                    let offset = world.rng.range(0, 2 * MAX_SKEW_MS) as i64 - MAX_SKEW_MS as i64;
                    world.count(Fault::ClockStep);
                    world.trace(format!("a{w} clock steps to {offset} ms off"));
                    drop(world);
                    self.shared.set_offset(w, offset);
                }
            }
            Due::Replay => {
                let runner = self.runners[self.workers.len()].clone();
                let tenant = self.tenant.clone();
                self.trace(format!("operator dlq replay at {now}"));
                let options = ReplayOptions {
                    dry_run: false,
                    include_unknown: false,
                    rate_per_sec: REPLAY_RATE_PER_SEC,
                };
                let future: Boxed<_> = Box::pin(async move {
                    runner.dlq_replay(&tenant, &DlqFilter::default(), options).await
                });
                self.tasks.push(Task {
                    actor: self.workers.len(),
                    job: Job::Replay(future),
                    waits_until_ms: 0,
                });
            }
            Due::CampaignCreate(k, try_) => {
                let runner = self.runners[self.workers.len()].clone();
                let campaign = campaigns::campaign(&self.campaigns[k], now);
                // A filter segment stores no list: the walk of the directory finds its members.
                let members = match self.campaigns[k].segment {
                    workflows::campaign::Segment::Recipients => self.campaigns[k].members.clone(),
                    workflows::campaign::Segment::Filter { .. } => Vec::new(),
                };
                self.trace(format!(
                    "api campaign {} ({} recipients, try {try_})",
                    campaign.id,
                    members.len()
                ));
                let key = campaigns::create_key(k);
                let future: Boxed<_> = Box::pin(async move {
                    runner.store().campaign_create(&campaign, &members, Some(&key)).await
                });
                self.tasks.push(Task {
                    actor: self.workers.len(),
                    job: Job::CampaignCreate(k, try_, future),
                    waits_until_ms: 0,
                });
            }
            Due::CampaignCancel(k, try_) => {
                let runner = self.runners[self.workers.len()].clone();
                let id = self.campaigns[k].id.clone();
                let tenant = self.tenant.clone();
                self.trace(format!("api campaign cancel {id} (try {try_})"));
                let future: Boxed<_> = Box::pin(async move {
                    let now_ms = workflows::ports::Clock::now_ms(runner.clock());
                    runner.store().campaign_cancel(&tenant, &id, now_ms).await
                });
                self.tasks.push(Task {
                    actor: self.workers.len(),
                    job: Job::CampaignCancel(k, try_, future),
                    waits_until_ms: 0,
                });
            }
            Due::Publish => {
                self.revisions += 1;
                let revision = self.revisions;
                let runner = self.runners[self.workers.len()].clone();
                let tenant = self.tenant.clone();
                self.trace(format!("publisher adds rev-{revision}"));
                let future: Boxed<_> = Box::pin(async move {
                    let templates = runner.templates();
                    let policy = runner.policy().templates;
                    let id = registry_id();
                    let now = runner.clock().now_ms();
                    let content = registry_content(revision);
                    match templates.add_version(&tenant, &id, content, now, &policy).await? {
                        TemplateWrite::Done(info) => {
                            let version = info.summary.latest;
                            templates.publish(&tenant, &id, version, now).await?;
                            Ok(Some(version))
                        }
                        _ => Ok(None),
                    }
                });
                self.tasks.push(Task {
                    actor: self.workers.len(),
                    job: Job::Publish(revision, future),
                    waits_until_ms: 0,
                });
            }
            Due::Directory(idx, change) => self.change_directory(idx, change),
            Due::FaultsOff => {
                self.faults_on = false;
                self.shared.world().faults_on = false;
                self.trace(format!("faults off at {now}"));
                for w in 0..self.workers.len() {
                    self.shared.set_offset(w, 0);
                    if !self.workers[w].alive {
                        self.workers[w].alive = true;
                        self.trace(format!("a{w} restart for liveness"));
                    }
                }
            }
        }
    }

    fn submit(&mut self, idx: usize, try_: u32) {
        let planned = self.plan[idx].clone();
        let runner = self.runners[self.workers.len()].clone();
        let tenant = self.tenant.clone();
        let n = planned.recipient;
        let recipient = Recipient {
            id: crate::world::recipient(n),
            email: EmailAddress::parse(&format!("r{n}@example.com")).ok(),
            phone: PhoneNumber::parse(&format!("+1415555{:04}", n % 10_000)).ok(),
            opt_out: if planned.opted_out { vec![planned.channel] } else { Vec::new() },
        };
        let recipient = if planned.no_address || !planned.inline {
            Recipient { email: None, phone: None, ..recipient }
        } else {
            recipient
        };
        let name = match planned.expect {
            Expect::OverSmsCap => "x".repeat(400),
            _ => format!("r{n}"),
        };
        let mut data = serde_json::Map::new();
        data.insert("name".into(), serde_json::json!(name));
        if planned.expect != Expect::MissingVariable {
            data.insert("order".into(), serde_json::json!(idx));
        }
        let correlation = Correlation {
            event_id: planned.event.map(|e| {
                EventId::new(format!("evt-{e}")).unwrap_or_else(|_| unreachable!("a valid id"))
            }),
            collapse_key: planned.collapse.map(|k| {
                CollapseKey::new(format!("thread-{k}")).unwrap_or_else(|_| unreachable!("valid"))
            }),
        };
        let template = if planned.collapse.is_some() {
            TemplateId::new("digest").unwrap_or_else(|_| unreachable!())
        } else if planned.registry {
            registry_id()
        } else {
            TemplateId::new("note").unwrap_or_else(|_| unreachable!())
        };
        let submission = Submission {
            recipient,
            channel: planned.channel,
            template,
            data,
            category: Category::new(planned.category).unwrap_or_else(|_| unreachable!()),
            locale: planned.locale.and_then(|l| Locale::parse(l).ok()),
            correlation,
        };
        // A fresh id per try, as the API mints one per request: the idempotency key makes the
        // retries of a lost reply land on the first id.
        let id =
            NotificationId::new(format!("n00sim{idx}t{try_}")).unwrap_or_else(|_| unreachable!());
        let idempotency =
            Idempotency { key: format!("submit-{idx}"), fingerprint: format!("fp-{idx}") };
        let future: Boxed<_> =
            Box::pin(
                async move { runner.submit(&tenant, id, submission, Some(&idempotency)).await },
            );
        self.tasks.push(Task {
            actor: self.workers.len(),
            job: Job::Submit(idx, try_, future),
            waits_until_ms: 0,
        });
    }

    fn kill(&mut self, actor: usize) {
        if actor >= self.workers.len() {
            return;
        }
        let now = self.now();
        // Its futures are dropped mid-flight: whatever it held stays pending in the queue.
        self.tasks.retain(|t| t.actor != actor);
        self.workers[actor].alive = false;
        let delay = self.shared.world().rng.range(100, 5_000);
        self.trace(format!("a{actor} died; restarts in {delay} ms"));
        self.schedule(now + delay, Due::Restart(actor));
    }

    fn complete(&mut self, task: Task, done: Done) {
        let now = self.now();
        match (task.job, done) {
            (Job::Wake(delivery, _), Done::Wake(result)) => {
                let worker = task.actor;
                match result {
                    Ok(advanced) => {
                        let crash = self.shared.world().roll(Fault::CrashBeforeAck);
                        if crash {
                            self.trace_id(
                                &delivery.wake.id,
                                format!("a{worker} crash before ack of {}", delivery.wake.key()),
                            );
                            self.kill(worker);
                            return;
                        }
                        self.trace_id(
                            &delivery.wake.id,
                            format!("a{worker} done {} {advanced:?}", delivery.wake.key()),
                        );
                        let _ = at_once(self.store.ack(std::slice::from_ref(&delivery)));
                    }
                    Err(error) => {
                        let delay = retry_delay_ms(delivery.tries + 1, 1_000, 60_000);
                        self.trace_id(
                            &delivery.wake.id,
                            format!(
                                "a{worker} failed {}: {error}; retry in {delay} ms",
                                delivery.wake.key()
                            ),
                        );
                        let _ = at_once(self.store.retry_later(&delivery, delay));
                    }
                }
            }
            (Job::Submit(idx, try_, _), Done::Submit(result)) => match result {
                Ok(submitted) => {
                    self.trace(format!("api accepted {} (try {try_})", submitted.id));
                    if submitted.deduplicated && !submitted.replayed {
                        self.policy_figures.deduplicated += 1;
                    }
                    match self.plan[idx].expect {
                        Expect::Accepted => {}
                        Expect::MissingVariable => self.violation(
                            "missing-variable",
                            Some(submitted.id.clone()),
                            &format!("submission {idx} lacks `order` but was accepted"),
                        ),
                        Expect::OverSmsCap => self.violation(
                            "segment-cap",
                            Some(submitted.id.clone()),
                            &format!(
                                "submission {idx} is an SMS over {SMS_SEGMENTS_MAX} segments but \
                                 was accepted"
                            ),
                        ),
                    }
                    if let Some(previous) = self.accepted.get(&idx)
                        && *previous != submitted.id
                    {
                        let detail =
                            format!("submission {idx} got {previous} and then {}", submitted.id);
                        self.violation("idempotency", Some(submitted.id.clone()), &detail);
                    }
                    self.accepted_at.entry(submitted.id.clone()).or_insert(now);
                    self.accepted.insert(idx, submitted.id);
                }
                Err(SubmitError::Store(error)) => {
                    self.trace(format!("api submit {idx} failed: {error}; the client retries"));
                    self.schedule(now + 500, Due::Submit(idx, try_ + 1));
                }
                Err(SubmitError::InFlight { retry_after_ms }) => {
                    // A lost reply left the key claimed; the client retries when told to.
                    self.trace(format!("api submit {idx} in flight; retry in {retry_after_ms} ms"));
                    self.schedule(now + retry_after_ms, Due::Submit(idx, try_ + 1));
                }
                Err(SubmitError::Template(error)) if self.refused_as_planned(idx, &error) => {
                    self.refused_on_purpose += 1;
                    self.trace(format!("api refused submission {idx} as planned: {error}"));
                }
                Err(other) => {
                    let detail = format!("submission {idx} was refused: {other}");
                    self.violation("submit", None, &detail);
                }
            },
            (Job::Publish(revision, _), Done::Publish(result)) => match result {
                Ok(Some(version)) => {
                    self.versions_published += 1;
                    self.trace(format!("publisher published rev-{revision} as version {version}"));
                }
                Ok(None) => self.trace(format!("publisher: rev-{revision} refused, template full")),
                Err(error) => {
                    // A lost reply may have added (even published) the version: the next
                    // revision is a new version either way, which is what a client does.
                    self.trace(format!("publisher: rev-{revision} failed: {error}; again in 1 s"));
                    self.schedule(now + 1_000, Due::Publish);
                }
            },
            (Job::Receipt(receipt, _), Done::Receipt(result)) => match result {
                Ok(received) => {
                    self.trace_id(&receipt.id, format!("receipt for {}: {received:?}", receipt.id))
                }
                Err(error) => {
                    self.trace(format!(
                        "receipt for {} failed: {error}; the provider retries",
                        receipt.id
                    ));
                    let mut again = receipt;
                    again.at_ms = now + 1_000;
                    self.schedule(again.at_ms, Due::Receipt(again));
                }
            },
            (Job::Cancel(idx, _), Done::Cancel(result)) => {
                self.trace(format!("cancel of submission {idx}: {result:?}"));
            }
            (Job::Retry(idx, _), Done::Retry(result)) => {
                if matches!(result, Ok(Retried::Replayed { .. })) {
                    self.replayed += 1;
                }
                self.trace(format!("operator retry of submission {idx}: {result:?}"));
            }
            (Job::Replay(_), Done::Replay(result)) => match result {
                Ok(report) => {
                    for (id, verdict) in &report.items {
                        self.trace_id(id, format!("operator replay of {id}: {verdict:?}"));
                        if matches!(verdict, ReplayVerdict::Replay { .. }) {
                            self.replayed += 1;
                        }
                    }
                }
                Err(error) => {
                    // Whatever was replayed before the error is no longer dead-lettered, so
                    // running the whole replay again is safe: the operator does.
                    self.trace(format!("operator dlq replay failed: {error}; again in 1 s"));
                    self.schedule(now + 1_000, Due::Replay);
                }
            },
            (Job::Expand(_), Done::Expand(result)) => {
                match result {
                    Ok(tick) if tick.pages > 0 => {
                        self.trace(format!("a{} campaign round {tick:?}", task.actor))
                    }
                    Ok(_) => {}
                    // The page it held comes back when its lease ends.
                    Err(error) => {
                        self.trace(format!("a{} campaign round failed: {error}", task.actor))
                    }
                }
                self.check_cancelled_campaigns();
            }
            (Job::CampaignCreate(k, try_, _), Done::CampaignCreate(result)) => match result {
                Ok(CampaignCreated::New) => {}
                Ok(CampaignCreated::Existing { id, same_request }) => {
                    if id != self.campaigns[k].id || !same_request {
                        let detail = format!(
                            "campaign {k}'s retry found {id} (same request: {same_request})"
                        );
                        self.violation("idempotency", None, &detail);
                    }
                }
                Err(error) => {
                    self.trace(format!("api campaign {k} failed: {error}; the client retries"));
                    self.schedule(now + 500, Due::CampaignCreate(k, try_ + 1));
                }
            },
            (Job::CampaignCancel(k, try_, _), Done::CampaignCancel(result)) => match result {
                Ok(Moved::To { state }) => {
                    self.trace(format!("campaign {k} cancel: {state}"));
                    self.campaigns_cancelled.insert(k);
                }
                Ok(other) => {
                    // Not created yet (its create is still being retried): the client tries again.
                    self.trace(format!("campaign {k} cancel: {other:?}; again in 1 s"));
                    self.schedule(now + 1_000, Due::CampaignCancel(k, try_ + 1));
                }
                Err(error) => {
                    self.trace(format!("campaign {k} cancel failed: {error}; the client retries"));
                    self.schedule(now + 500, Due::CampaignCancel(k, try_ + 1));
                }
            },
            (Job::Directory(idx, change, _), Done::Directory(result)) => match result {
                Ok(()) => {
                    self.shared.world().count(Fault::PreferenceChange);
                    self.trace(format!("api directory change of r{idx}: {change:?} done"));
                }
                Err(error) => {
                    // The application retries its write (a lost reply was applied already;
                    // writing the same change again is harmless).
                    self.trace(format!("api directory change of r{idx} failed: {error}"));
                    self.schedule(now + 500, Due::Directory(idx, change));
                }
            },
            _ => unreachable!("a task completes with its own kind"),
        }
    }

    /// The cancel invariant, for each cancelled campaign that has just become `cancelled`.
    fn check_cancelled_campaigns(&mut self) {
        let created = self.shared.world().campaign_created.clone();
        for k in self.campaigns_cancelled.clone() {
            let found =
                self.campaign_checker.on_cancelled(&self.store, k, &self.campaigns[k], &created);
            for (invariant, id, detail) in found {
                self.violation(invariant, id, &detail);
            }
        }
    }

    /// Whether a refusal is the one planned for submission `idx`: a missing `order`, or an SMS
    /// over the cap.
    fn refused_as_planned(&self, idx: usize, error: &RenderError) -> bool {
        match self.plan[idx].expect {
            Expect::Accepted => false,
            Expect::MissingVariable => error.missing_variable() == Some("order"),
            Expect::OverSmsCap => matches!(error, RenderError::Limit { part: "sms.body", .. }),
        }
    }

    /// Every message a provider took is its notification's pinned version rendered in its
    /// locale with its data (the checker renders it again from the store's copy of that
    /// version), and no SMS is over the segment cap.
    fn check_rendered(&mut self, record: &Record, taken: &[Taken]) {
        let request = &record.request;
        let template = &request.template;
        let compiled = match template.registry_version() {
            Some(version) => {
                at_once(self.store.template_version(&self.tenant, &template.id, version))
                    .ok()
                    .flatten()
                    .and_then(|stored| {
                        let limits = Limits {
                            locales_per_version_max: LOCALES_CEILING,
                            ..Limits::default()
                        };
                        CompiledTemplate::compile(
                            template.id.clone(),
                            template.version.clone(),
                            stored.content,
                            &limits,
                        )
                        .ok()
                    })
                    .map(Arc::new)
            }
            None => self.builtin.compiled(template).ok().cloned(),
        };
        let limits = self.policy.templates.limits();
        // A collapse survivor renders with what its group merged (kept with its record).
        let collapses = request.correlation.collapse_key.is_some()
            && self.policy.collapse_window_ms(&request.category).is_some();
        let data = if collapses {
            let merged = at_once(self.store.merged(&self.tenant, &record.id))
                .ok()
                .flatten()
                .unwrap_or_else(|| steps::collapse::Merged::alone(&record.id, &request.data));
            steps::collapse::context(&request.data, &merged)
        } else {
            request.data.clone()
        };
        for send in taken {
            self.renders_checked += 1;
            if let Ok(Content::Sms { body }) = serde_json::from_str::<Content>(&send.content) {
                let segments = steps::sms::segments(&body).segments;
                if segments > SMS_SEGMENTS_MAX {
                    let detail = format!("an SMS of {segments} segments reached {}", send.provider);
                    self.violation("segment-cap", Some(record.id.clone()), &detail);
                }
            }
            let Some(compiled) = &compiled else {
                let detail =
                    format!("version {} of {} is not in the store", template.version, template.id);
                self.violation("pinned-version", Some(record.id.clone()), &detail);
                continue;
            };
            let render = |locale: Option<&Locale>| {
                compiled
                    .render(send.channel, locale, &data, &limits)
                    .map(|r| serde_json::to_string(&r.content).unwrap_or_default())
            };
            let expected = render(request.locale.as_ref());
            if expected.as_ref().ok() == Some(&send.content) {
                continue;
            }
            let in_default = render(None).ok();
            let invariant =
                if request.locale.is_some() && in_default.as_ref() == Some(&send.content) {
                    "locale"
                } else {
                    "pinned-version"
                };
            let detail = format!(
                "{} took {} but version {} in locale {:?} renders {:?}",
                send.provider, send.content, template.version, request.locale, expected
            );
            self.violation(invariant, Some(record.id.clone()), &detail);
        }
    }

    fn violation(&mut self, invariant: &str, id: Option<NotificationId>, detail: &str) {
        let history = id
            .as_ref()
            .map(|id| at_once(self.store.history(&self.tenant, id)).unwrap_or_default())
            .unwrap_or_default();
        let trace = {
            let world = self.shared.world();
            let own = id.as_ref().and_then(|id| world.trace_by_id.get(id));
            let mut lines: Vec<String> = own.into_iter().flatten().cloned().collect();
            lines.push("--- the run's last crashes, restarts and phase changes ---".to_owned());
            lines.extend(world.trace_tail.iter().cloned());
            lines
        };
        self.violations.push(Violation {
            invariant: invariant.to_owned(),
            notification: id.map(|i| i.to_string()),
            detail: detail.to_owned(),
            at_ms: self.now().saturating_sub(START_MS),
            history: history.iter().map(describe_entry).collect(),
            trace,
            repro: self.config.repro(),
        });
    }

    /// Checks every commit since the last look: allowed edges only, terminal states never move,
    /// each commit starts from the state the notification was in, attempts within the policy.
    fn check_journal(&mut self) {
        let journal = std::mem::take(&mut self.shared.world().journal);
        for Journaled { id, from_version, state, history, category, seq } in journal {
            self.check_directory_commit(&id, seq, &history);
            if let Some(category) = category {
                self.categories.insert(id.clone(), category);
            }
            let (version, before) = self.seen.get(&id).copied().unwrap_or((0, StateKind::Received));
            if from_version != version && from_version != 0 {
                let detail =
                    format!("committed over v{from_version} but the store was at v{version}");
                self.violation("version", Some(id.clone()), &detail);
            }
            // The only edges out of a terminal state are dead_lettered's (a late delivery
            // receipt here; operator replays are not simulated), and EDGES lists them.
            if before.is_terminal() && state.kind() != before && !before.may_move_to(state.kind()) {
                let detail = format!("terminal {before} moved to {}", state.kind());
                self.violation("terminal", Some(id.clone()), &detail);
            }
            if let Some(from) = history.first().and_then(|first| first.from)
                && from != before
            {
                let detail = format!(
                    "a commit moved it from {from} while it was {before} (a stale writer won)"
                );
                self.violation("stale-write", Some(id.clone()), &detail);
            }
            for entry in &history {
                if let Some(from) = entry.from {
                    let to = entry.to.kind();
                    *self.edges.entry((from, to)).or_default() += 1;
                    if !from.may_move_to(to) {
                        self.violation(
                            "edge",
                            Some(id.clone()),
                            &format!("{from} → {to} is not an allowed transition"),
                        );
                    }
                }
            }
            if let (Some(channel), Some(attempt)) = (state.channel(), state.attempt()) {
                let max = match self.categories.get(&id) {
                    Some(category) => self.policy.retry_for(category, channel).attempts_max,
                    None => self.policy.retry(channel).attempts_max,
                };
                if attempt.0 > max {
                    self.violation(
                        "attempts",
                        Some(id.clone()),
                        &format!("attempt {attempt} > {max}"),
                    );
                }
            }
            self.seen.insert(id, (from_version + 1, state.kind()));
        }
    }

    /// The end-of-run checks and the report.
    fn finish(mut self) -> Report {
        self.check_journal();
        let mut states: BTreeMap<String, u64> = BTreeMap::new();
        let mut latencies = Vec::new();
        let mut sends = 0_u64;
        let mut extra_sends = 0_u64;
        let mut flagged = 0_u64;
        let mut retries = 0_u64;
        let mut attempts = 0_u64;
        // Campaign notifications are held to every per-notification check too.
        let created = self.shared.world().campaign_created.clone();
        let ids: Vec<NotificationId> = self
            .accepted
            .values()
            .cloned()
            .chain(created.iter().map(|(_, _, id)| id.clone()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let complete = self.violations.is_empty() || !self.config.stop_on_violation;
        let mut finals = Vec::with_capacity(ids.len());
        let mut admissions = Admissions::new();
        let mut collapse = CollapseView::default();
        for id in &ids {
            let Some(record) = at_once(self.store.load(&self.tenant, id)).ok().flatten() else {
                self.violation("lost", Some(id.clone()), "an accepted notification has no record");
                continue;
            };
            let history = at_once(self.store.history(&self.tenant, id)).unwrap_or_default();
            let kind = record.state.kind();
            finals.push((id.clone(), record.request.channel, record.created_at_ms, kind));
            *states.entry(kind.to_string()).or_default() += 1;
            attempts += u64::from(record.state.attempt().map_or(0, |a| a.0));
            retries += history
                .iter()
                .filter(|e| {
                    e.from.is_some_and(|f| f == StateKind::Sending || f == StateKind::Unknown)
                        && e.to.kind() == StateKind::Deferred
                })
                .count() as u64;
            if complete && !(kind.is_terminal() || kind == StateKind::Sent) {
                self.violation(
                    "liveness",
                    Some(id.clone()),
                    &format!("still {kind} when everything settled"),
                );
            }
            if kind.is_terminal() || kind == StateKind::Sent {
                latencies.push(record.updated_at_ms.saturating_sub(record.created_at_ms));
            }
            let taken = self.shared.world().ledger.get(id).cloned().unwrap_or_default();
            sends += taken.len() as u64;
            let delivering: BTreeSet<Channel> =
                taken.iter().filter(|t| !t.undelivered).map(|t| t.channel).collect();
            if delivering.len() > 1 {
                let detail = format!("delivered on more than one channel: {delivering:?}");
                self.violation("one-channel", Some(id.clone()), &detail);
            }
            // Per channel: at most one send that may have arrived plus one per unknown outcome,
            // every extra one flagged. A send the provider reported undelivered never arrived:
            // an operator may replay it (the replay is a new send, not a duplicate).
            let channels: BTreeSet<Channel> = taken.iter().map(|t| t.channel).collect();
            for channel in channels {
                let on_channel: Vec<_> =
                    taken.iter().filter(|t| t.channel == channel && !t.undelivered).collect();
                let unknowns = history
                    .iter()
                    .filter(|e| {
                        e.to.kind() == StateKind::Unknown && e.to.channel() == Some(channel)
                    })
                    .count() as u64;
                if on_channel.len() as u64 > 1 + unknowns {
                    let detail = format!(
                        "{} {channel} sends but only {unknowns} unknown outcome(s)",
                        on_channel.len()
                    );
                    self.violation("duplicate-send", Some(id.clone()), &detail);
                }
                for send in on_channel.iter().skip(1) {
                    extra_sends += 1;
                    let was_flagged = history.iter().any(|e| {
                        matches!(&e.to, State::Sending { channel: c, attempt, possible_duplicate: true, .. }
                            if *attempt == send.attempt && *c == channel)
                    });
                    if was_flagged {
                        flagged += 1;
                    } else {
                        let detail = format!(
                            "{channel} attempt {} re-sent without the possible-duplicate flag",
                            send.attempt
                        );
                        self.violation("unflagged-resend", Some(id.clone()), &detail);
                    }
                }
            }
            self.check_dead_letter(&record, &history);
            self.check_retry_timing(&record, &history);
            self.collect_admissions(&record, &history, &mut admissions);
            self.collect_collapse(&record, &mut collapse);
            self.check_rendered(&record, &taken);
            self.check_directory_calls(&record);
        }
        self.check_cancelled_campaigns();
        let found = self.campaign_checker.finish(
            &self.store,
            &self.campaigns,
            &self.campaigns_cancelled,
            &created,
        );
        for (invariant, id, detail) in found {
            self.violation(invariant, id, &detail);
        }
        self.check_windows(&admissions);
        self.check_events();
        self.check_collapse(&collapse);
        let outage = self.config.outage.clone().map(|o| self.outage_figures(&o, &finals));
        latencies.sort_unstable();
        let pct = |p: f64| -> u64 {
            if latencies.is_empty() {
                return 0;
            }
            let i = ((latencies.len() - 1) as f64 * p).round() as usize;
            latencies[i.min(latencies.len() - 1)]
        };
        let world = self.shared.world();
        Report {
            seed: self.config.seed,
            notifications: self.config.notifications,
            accepted: self.accepted.len(),
            campaign_notifications: created.len(),
            campaigns_cancelled: self.campaign_checker.cancelled_with.len(),
            profile: self.config.profile,
            faults: world.faults.clone(),
            fired: world.fired.clone(),
            states,
            sends,
            extra_sends,
            flagged_resends: flagged,
            replayed: self.replayed,
            attempts,
            retries,
            latency_ms_p50: pct(0.5),
            latency_ms_p90: pct(0.9),
            latency_ms_p99: pct(0.99),
            latency_ms_max: latencies.last().copied().unwrap_or(0),
            virtual_ms: self.now().saturating_sub(START_MS),
            steps: self.steps,
            trace_lines: world.trace_len,
            edges: self.edges.iter().map(|((f, t), n)| (format!("{f}→{t}"), *n)).collect(),
            violations: self.violations.clone(),
            trace_hash: format!("{:016x}", world.trace_hash),
            breakers_opened: self.breakers.iter().flat_map(|r| r.views()).map(|v| v.opened).sum(),
            breaker_rejections: self
                .breakers
                .iter()
                .flat_map(|r| r.views())
                .map(|v| v.rejected)
                .sum(),
            redriven: self.redriven,
            versions_published: self.versions_published,
            refused_on_purpose: self.refused_on_purpose,
            renders_checked: self.renders_checked,
            planted: self.config.planted,
            outage,
            policy: self.policy_figures,
        }
    }

    /// Every retry waits within its policy's bounds and never less than the provider's
    /// `Retry-After` (or the reconcile grace after an unknown outcome): the scheduled delay, as the
    /// runner decided it, and the provider's view, when the next attempt reached it.
    fn check_retry_timing(&mut self, record: &Record, history: &[HistoryEntry]) {
        let calls = self.shared.world().call_log.get(&record.id).cloned().unwrap_or_default();
        for (index, (entry, before)) in history.iter().skip(1).zip(history).enumerate() {
            let State::Deferred { until_ms, resume: Resume::Send { channel, attempt: next, .. } } =
                &entry.to
            else {
                continue;
            };
            // Only a failed attempt's retry: not the circuit breaker's wait, which keeps the
            // attempt, nor a deferral some other way.
            let failed = match &before.to {
                State::Sending { attempt, .. } | State::Unknown { attempt, .. }
                    if attempt.next() == *next =>
                {
                    *attempt
                }
                _ => continue,
            };
            let from = before.to.kind();
            if from == StateKind::Sending && !matches!(entry.cause, Cause::Provider { .. }) {
                continue;
            }
            // The call that failed: the one made under the claim this decision follows (`before`,
            // the commit into sending); failing that, the latest of the attempt before this
            // decision. A replay starts the attempts again, so earlier calls may carry the same
            // number, and with clocks apart a later replay's call may look earlier than it was.
            let candidate =
                |c: &&crate::world::CallMade| c.channel == *channel && c.attempt == failed;
            let failed_call = calls
                .iter()
                .rposition(|c| {
                    candidate(&c)
                        && c.claim.as_ref().is_some_and(|claim| claim.now_ms == before.at_ms)
                })
                .or_else(|| {
                    calls
                        .iter()
                        .rposition(|c| candidate(&c) && c.at_ms <= entry.at_ms + 2 * MAX_SKEW_MS)
                });
            let floor_ms = if from == StateKind::Unknown {
                self.policy.reconcile_grace_ms
            } else {
                match failed_call.and_then(|i| calls[i].class) {
                    Some(class) if class.is_retryable() => class.retry_after_ms().unwrap_or(0),
                    _ => continue,
                }
            };
            let policy = self.policy.retry_for(&record.request.category, *channel);
            let nominal = policy.nominal_delay_ms(failed.0);
            let low = if policy.jitter { nominal / 2 } else { nominal };
            let (least, most) = (low.max(floor_ms), nominal.max(floor_ms));
            let delay = until_ms.saturating_sub(entry.at_ms);
            if !(least..=most).contains(&delay) {
                let detail = format!(
                    "{channel} retry after attempt {failed} scheduled {delay} ms later, outside \
                     [{least}, {most}] (policy {nominal} ms, not before {floor_ms} ms)"
                );
                self.violation("retry-bounds", Some(record.id.clone()), &detail);
            }
            // The provider's view: the next attempt never came earlier than that after the answer
            // (clocks may disagree by the skew the workers are allowed).
            let answered = failed_call.and_then(|i| calls[i].answered_at_ms);
            let next_call = failed_call.and_then(|i| {
                calls[i..].iter().find(|c| c.channel == *channel && c.attempt == *next)
            });
            // An operator's retry cuts the wait short on purpose (`courant retry`).
            let cut_short = history.get(index + 2).is_some_and(
                |after| matches!(&after.cause, Cause::Operator { action } if action == "retry"),
            );
            if from == StateKind::Sending
                && !cut_short
                && let (Some(answered), Some(next_call)) = (answered, next_call)
                && next_call.at_ms + 2 * MAX_SKEW_MS < answered + least
            {
                let detail = format!(
                    "{channel} attempt {next} reached the provider {} ms after attempt {failed}'s \
                     answer; it had to wait {least} ms",
                    next_call.at_ms.saturating_sub(answered)
                );
                self.violation("retry-early", Some(record.id.clone()), &detail);
            }
        }
    }

    /// The recipient's limit windows this notification took a slot in, from its committed
    /// history (each `rendered → rate_checked` is an admission in every window its category and
    /// channel take, at the time of the decision), and a check that a critical category was
    /// never held back by one.
    fn collect_admissions(
        &mut self,
        record: &Record,
        history: &[HistoryEntry],
        admissions: &mut Admissions,
    ) {
        let request = &record.request;
        let critical = self.policy.is_critical(&request.category);
        for entry in history {
            if entry.from != Some(StateKind::Rendered) {
                continue;
            }
            let held = match &entry.to {
                State::RateChecked { channel } => {
                    for window in self.policy.windows(&request.category, *channel) {
                        self.policy_figures.admissions += 1;
                        let key = (request.recipient.id.clone(), window.limit.name());
                        let (_, admitted) =
                            admissions.entry(key).or_insert_with(|| (window.limit, Vec::new()));
                        admitted.push((entry.at_ms, record.id.clone()));
                    }
                    false
                }
                State::Deferred { resume: Resume::RateCheck { .. }, .. } => {
                    self.policy_figures.deferred += 1;
                    true
                }
                State::Skipped { .. } => {
                    self.policy_figures.skipped += 1;
                    true
                }
                _ => false,
            };
            if held && entry.note.as_deref().is_some_and(|n| n.contains(" cap (")) {
                self.policy_figures.by_cap += 1;
            }
            if held && critical {
                let detail = format!(
                    "critical category {} was held back by a per-recipient limit: {}",
                    request.category,
                    entry.note.as_deref().unwrap_or("")
                );
                self.violation("critical-limited", Some(record.id.clone()), &detail);
            }
        }
    }

    /// No cap or window is ever exceeded: for every admission, the distinct notifications
    /// admitted to the same recipient's window within its length up to then are at most its max.
    /// The window is shortened by twice the clock skew the workers are allowed, since each
    /// decides with its own clock.
    fn check_windows(&mut self, admissions: &Admissions) {
        for ((recipient, _), (limit, admitted)) in admissions {
            let mut admitted = admitted.clone();
            admitted.sort();
            let span = limit.window_ms().saturating_sub(2 * MAX_SKEW_MS).max(1);
            for (t, id) in &admitted {
                let inside: BTreeSet<&NotificationId> = admitted
                    .iter()
                    .filter(|(at, _)| at <= t && at + span > *t)
                    .map(|(_, id)| id)
                    .collect();
                if inside.len() > limit.max() as usize {
                    let detail = format!(
                        "{limit} of recipient {recipient} held {} notifications in the {} ms up to \
                         {} ms: {inside:?}",
                        inside.len(),
                        span,
                        t.saturating_sub(START_MS)
                    );
                    self.violation("cap-exceeded", Some(id.clone()), &detail);
                    return;
                }
            }
        }
    }

    /// What a record says about collapse: a member (collapsed into a survivor) or a survivor
    /// (what its group merged, and what its provider took).
    fn collapse_record(&self, record: &Record) -> Option<Result<NotificationId, SurvivorView>> {
        if let State::Skipped { reason: SkipReason::Collapsed { into } } = &record.state {
            return Some(Ok(into.clone()));
        }
        let merged = at_once(self.store.merged(&self.tenant, &record.id)).ok().flatten()?;
        let delivered = self
            .shared
            .world()
            .ledger
            .get(&record.id)
            .into_iter()
            .flatten()
            .filter(|t| !t.undelivered)
            .map(|t| t.content.clone())
            .collect();
        Some(Err(SurvivorView { merged, delivered }))
    }

    fn collect_collapse(&mut self, record: &Record, view: &mut CollapseView) {
        match self.collapse_record(record) {
            Some(Ok(into)) => {
                self.policy_figures.collapsed += 1;
                view.members.insert(record.id.clone(), into);
            }
            Some(Err(survivor)) => {
                view.survivors.insert(record.id.clone(), (record.state.kind(), survivor));
            }
            None => {
                view.others.insert(record.id.clone(), record.state.kind());
            }
        }
    }

    /// Collapse: every notification collapsed into a survivor is in that survivor's group exactly
    /// once and in no other, the survivor's message (what the provider took) carries every
    /// member's data, and no member of a group went out on its own; a survivor with no merged
    /// group is accounted for (cancelled while it waited).
    fn check_collapse(&mut self, view: &CollapseView) {
        let mut found: BTreeMap<&NotificationId, Vec<&NotificationId>> = BTreeMap::new();
        for (survivor, (_, s)) in &view.survivors {
            for item in &s.merged.items {
                found.entry(&item.id).or_default().push(survivor);
                if item.id != *survivor && view.members.get(&item.id) != Some(survivor) {
                    let detail =
                        format!("{} is merged into {survivor} but not collapsed into it", item.id);
                    self.violation("collapse", Some(item.id.clone()), &detail);
                }
                for body in &s.delivered {
                    let order = item.data.get("order").map(ToString::to_string).unwrap_or_default();
                    if !body.contains(&format!("[{order}]")) {
                        let detail = format!(
                            "{survivor}'s message lacks {}'s data [{order}]: {body}",
                            item.id
                        );
                        self.violation("collapse", Some(survivor.clone()), &detail);
                    }
                }
            }
        }
        for (member, into) in &view.members {
            let groups = found.get(member).map_or(0, Vec::len);
            // A survivor cancelled, or skipped by a rule that applies to its whole group (the
            // recipient's preferences or quiet hours changed while the group waited, a cap), takes
            // the group's one message with it.
            let accounted =
                matches!(view.others.get(into), Some(StateKind::Cancelled | StateKind::Skipped));
            let in_its_group = found.get(member).is_some_and(|g| g == &vec![into]);
            if !(in_its_group || groups == 0 && accounted) {
                let detail = format!(
                    "collapsed into {into}, but in {groups} group(s) {:?}; {into} is {:?}",
                    found.get(member),
                    view.survivors.get(into).map(|s| s.0).or(view.others.get(into).copied())
                );
                self.violation("collapse", Some(member.clone()), &detail);
            }
        }
    }

    /// Event-level dedup: every accepted submission of the same event for the same recipient and
    /// channel (all within the default 24 h window) got the same notification.
    fn check_events(&mut self) {
        let mut made: BTreeMap<(usize, usize, Channel), BTreeSet<NotificationId>> = BTreeMap::new();
        for (idx, id) in &self.accepted {
            let planned = &self.plan[*idx];
            if let Some(event) = planned.event {
                let key = (event, planned.recipient, planned.channel);
                made.entry(key).or_default().insert(id.clone());
            }
        }
        for ((event, recipient, channel), ids) in made {
            self.policy_figures.events += 1;
            if ids.len() > 1 {
                let detail = format!(
                    "event evt-{event} for r{recipient} on {channel} made {} notifications: {ids:?}",
                    ids.len()
                );
                self.violation("dedup", ids.into_iter().next(), &detail);
            }
        }
    }

    /// The outage scenario's figures, from the call log, the ledger and the final states.
    fn outage_figures(
        &self,
        o: &Outage,
        finals: &[(NotificationId, Channel, u64, StateKind)],
    ) -> OutageFigures {
        let world = self.shared.world();
        let down = START_MS + o.from_ms;
        let up = down + o.duration_ms;
        let watch = down + BREAKER_GRACE_MS;
        let mut calls: Vec<u64> = world
            .call_log
            .values()
            .flatten()
            .filter(|c| c.provider == o.provider)
            .map(|c| c.at_ms)
            .collect();
        calls.sort_unstable();
        let after: Vec<u64> = calls.iter().copied().filter(|&t| t >= up).collect();
        let mut f = OutageFigures {
            calls_while_down: calls.iter().filter(|&&t| (watch..up).contains(&t)).count() as u64,
            calls_first_ms: calls.iter().filter(|&&t| (down..watch).contains(&t)).count() as u64,
            peak_per_window_after: peak_in_window(&after, o.send_rate.window_ms),
            rate_max: o.send_rate.max,
            ..OutageFigures::default()
        };
        for (id, channel, created, kind) in finals {
            let taken = world.ledger.get(id).map_or(&[][..], Vec::as_slice);
            if !matches!(kind, StateKind::Delivered | StateKind::Sent) {
                if taken.iter().any(|t| t.undelivered) {
                    f.bounced += 1;
                } else {
                    f.lost += 1;
                }
            }
            if *channel == o.channel {
                if (watch..up).contains(created) {
                    f.offered_while_down += 1;
                }
                let first = taken.iter().filter(|t| t.channel == o.channel).map(|t| t.at_ms).min();
                if let Some(at) = first
                    && at >= up
                    && *created < up
                {
                    f.backlog_sent += 1;
                    f.drained_after_ms = f.drained_after_ms.max(at - up);
                }
            } else if (down..up).contains(created) {
                f.others_offered += 1;
                let first_call = world.call_log.get(id).and_then(|c| c.first()).map(|c| c.at_ms);
                if let Some(at) = first_call {
                    f.others_latency_ms_max = f.others_latency_ms_max.max(at - created);
                }
            }
        }
        f
    }

    /// Dead-lettered ⇔ the retries were exhausted (or could never succeed).
    fn check_dead_letter(&mut self, record: &Record, history: &[HistoryEntry]) {
        let Some(channel) = record.state.channel() else { return };
        let max = self.policy.retry_for(&record.request.category, channel).attempts_max;
        let attempt = record.state.attempt().map_or(0, |a| a.0);
        let told = self.shared.world().told.get(&(record.id.clone(), channel, attempt)).copied();
        let last_class = told.and_then(|t| t.class);
        let permanent = matches!(
            last_class,
            Some(
                ErrorClass::TokenInvalid
                    | ErrorClass::PermanentRecipient
                    | ErrorClass::ProviderConfig
            )
        );
        let failed_reason = history.iter().rev().find_map(|e| match &e.to {
            State::Failed { reason, .. } => Some(reason.clone()),
            _ => None,
        });
        match &record.state {
            State::DeadLettered { .. } => {
                let reason = failed_reason.unwrap_or_default();
                let explained = attempt == 0
                    || attempt >= max
                    || permanent
                    || reason.contains("time budget")
                    || reason.contains("undelivered");
                if !explained {
                    let detail = format!("dead-lettered at attempt {attempt} of {max}: {reason}");
                    self.violation("dead-letter", Some(record.id.clone()), &detail);
                }
            }
            state if attempt >= max && !state.is_terminal() && state.kind() != StateKind::Sent => {
                let detail = format!("attempt {attempt} of {max} used but it is {}", state.kind());
                self.violation("dead-letter", Some(record.id.clone()), &detail);
            }
            _ => {}
        }
    }
}

/// A survivor of a collapse group: what its group merged, and the bodies its providers took.
struct SurvivorView {
    merged: steps::collapse::Merged,
    delivered: Vec<String>,
}

/// Every notification's part in collapse, at the end of a run.
#[derive(Default)]
struct CollapseView {
    /// Members and the survivor each was collapsed into.
    members: BTreeMap<NotificationId, NotificationId>,
    /// Survivors (a merged group kept with the record) and their final state.
    survivors: BTreeMap<NotificationId, (StateKind, SurvivorView)>,
    /// The rest, with their final state.
    others: BTreeMap<NotificationId, StateKind>,
}

/// Per recipient and window (by `Limit::name`): the limit, and every admission (time, id).
type Admissions = BTreeMap<(RecipientId, String), (Limit, Vec<(u64, NotificationId)>)>;

/// How a task finished.
enum Done {
    Wake(Result<Advanced, StoreError>),
    Directory(Result<(), StoreError>),
    Submit(Result<Submitted, SubmitError>),
    Receipt(Result<Received, StoreError>),
    Replay(Result<ReplayReport, StoreError>),
    Cancel(Result<Cancelled, StoreError>),
    Retry(Result<Retried, StoreError>),
    Expand(Result<Tick, StoreError>),
    CampaignCreate(Result<CampaignCreated, StoreError>),
    CampaignCancel(Result<Moved, StoreError>),
    Publish(Result<Option<u32>, TemplateError>),
}

fn describe_entry(entry: &HistoryEntry) -> String {
    let from = entry.from.map_or("·".to_owned(), |f| f.to_string());
    let mut line = format!(
        "+{} ms v{} {from} → {} ({})",
        entry.at_ms.saturating_sub(START_MS),
        entry.version,
        entry.to.kind(),
        entry.cause
    );
    if let Some(attempt) = entry.to.attempt() {
        line.push_str(&format!(" attempt {attempt}"));
    }
    if let State::Sending { possible_duplicate: true, .. } = entry.to {
        line.push_str(" [possible duplicate]");
    }
    if let Some(note) = &entry.note {
        line.push_str(&format!(": {note}"));
    }
    line
}

/// Runs one seed.
pub fn run(config: Config) -> Report {
    Simulation::new(config).run()
}

// ---- the recipients directory ------------------------------------------------------------------

impl Simulation {
    /// Stores what the application knows about the workload's recipients before anything
    /// arrives: profiles (addresses, a time zone, push devices) for all but every eleventh, and
    /// for some preferences and quiet hours. The outage scenario stores nothing.
    fn seed_directory(&mut self) {
        if self.config.outage.is_some() {
            return;
        }
        for i in 0..self.recipients {
            if !directory::has_profile(i) {
                continue;
            }
            let id = directory::id(i);
            let tenant = &self.tenant;
            let _ = at_once(self.store.put_contact(tenant, &id, &directory::contact(i), START_MS));
            for device in directory::devices(i, START_MS) {
                let _ = at_once(self.store.add_device(tenant, &id, &device, START_MS));
            }
            if let Some(preferences) = directory::initial_preferences(i) {
                let _ = at_once(self.store.put_preferences(tenant, &id, &preferences, START_MS));
            }
            if let Ok(Some(entry)) = at_once(self.store.recipient(tenant, &id)) {
                self.shared.world().log_directory(entry);
            }
        }
    }

    /// The application changes recipient `idx`'s preferences or phone number, through the API
    /// actor's store (with its faults), reading the entry first as a client would.
    fn change_directory(&mut self, idx: usize, change: Change) {
        let api = self.workers.len();
        let runner = self.runners[api].clone();
        let tenant = self.tenant.clone();
        self.trace(format!("api directory change of r{idx}: {change:?} starts"));
        let job_change = change.clone();
        let future: Boxed<Result<(), StoreError>> = Box::pin(async move {
            let store = runner.store();
            let id = directory::id(idx);
            let now_ms = runner.clock().now_ms();
            let entry = store.recipient(&tenant, &id).await?;
            let preferences = entry.as_ref().map(|e| e.preferences.clone()).unwrap_or_default();
            if let Some(preferences) = change.preferences(&preferences) {
                store.put_preferences(&tenant, &id, &preferences, now_ms).await?;
            }
            let contact = entry.as_ref().and_then(|e| e.contact());
            if let Some(contact) = contact.and_then(|c| change.contact(idx, c)) {
                store.put_contact(&tenant, &id, &contact, now_ms).await?;
            }
            Ok(())
        });
        self.tasks.push(Task {
            actor: api,
            job: Job::Directory(idx, job_change, future),
            waits_until_ms: 0,
        });
    }

    /// The directory invariants of one commit (run from the journal, in write order):
    /// - a critical notification is never skipped or deferred for preferences or quiet hours;
    /// - a quiet-hours deferral happens only inside the recipient's quiet hours (as the directory
    ///   held them when it was committed), and waits until a time after it;
    /// - a quiet-hours skip happens only when the window ends after the time budget.
    fn check_directory_commit(&mut self, id: &NotificationId, seq: u64, history: &[HistoryEntry]) {
        let Some(record) = at_once(self.store.load(&self.tenant, id)).ok().flatten() else {
            return;
        };
        let request = &record.request;
        let critical = self.policy.is_critical(&request.category);
        for entry in history {
            let quiet_deferral = match &entry.to {
                State::Deferred { until_ms, resume: Resume::Filter { channel } } => {
                    Some((*until_ms, *channel))
                }
                State::Deferred { until_ms, resume: Resume::Send { channel, .. } } if matches!(&entry.cause, Cause::Step { step } if step == "recheck") => {
                    Some((*until_ms, *channel))
                }
                _ => None,
            };
            let quiet_skip = match &entry.to {
                State::Skipped { reason: SkipReason::QuietHours { channel, until_ms } } => {
                    Some((*until_ms, *channel))
                }
                _ => None,
            };
            if let State::Skipped { reason } = &entry.to
                && reason.is_preference()
                && critical
            {
                let detail = format!("critical {} skipped: {reason}", request.category);
                self.violation("critical", Some(id.clone()), &detail);
            }
            let Some((until_ms, channel)) = quiet_deferral.or(quiet_skip) else { continue };
            if critical {
                let detail = format!("critical {} held for quiet hours", request.category);
                self.violation("critical", Some(id.clone()), &detail);
                continue;
            }
            let stored = self.shared.world().directory_at(&request.recipient.id, seq).cloned();
            let verdict =
                directory::forbidden(&self.policy, request, channel, stored.as_ref(), entry.at_ms);
            if !matches!(verdict, Some(("quiet-hours", _))) {
                let detail = format!(
                    "{} for quiet hours at {} when the recipient was not in them ({verdict:?})",
                    entry.to.kind(),
                    steps::quiet::utc(entry.at_ms)
                );
                self.violation("quiet-hours-deferral", Some(id.clone()), &detail);
            }
            if until_ms <= entry.at_ms {
                let detail =
                    format!("quiet hours deferred to {until_ms}, not after {}", entry.at_ms);
                self.violation("quiet-hours-deferral", Some(id.clone()), &detail);
            }
            let budget_end = record
                .budget_from_ms()
                .saturating_add(self.policy.retry_for(&request.category, channel).ttl_ms);
            let over = until_ms > budget_end;
            if quiet_skip.is_some() != over {
                let detail = format!(
                    "{} although quiet hours end {} the time budget",
                    entry.to.kind(),
                    if over { "after" } else { "within" }
                );
                self.violation("quiet-hours-dropped", Some(id.clone()), &detail);
            }
        }
    }

    /// The directory invariant of every provider call: under the claim it was made with, the
    /// recipient's preferences (as the directory held them just before the claim's commit, in
    /// the store's write order) allowed it, the recipient was not in quiet hours at the claim's
    /// time, and an address for the channel was given or stored. Critical categories pass the
    /// first two.
    fn check_directory_calls(&mut self, record: &Record) {
        let calls = self.shared.world().call_log.get(&record.id).cloned().unwrap_or_default();
        for call in calls {
            let Some(claim) = call.claim else {
                let detail =
                    format!("{} call for attempt {} without a claim", call.channel, call.attempt);
                self.violation("claim", Some(record.id.clone()), &detail);
                continue;
            };
            let recipient = &record.request.recipient.id;
            let stored = self.shared.world().directory_at(recipient, claim.seq).cloned();
            let verdict = directory::forbidden(
                &self.policy,
                &record.request,
                call.channel,
                stored.as_ref(),
                claim.now_ms,
            );
            if let Some((invariant, why)) = verdict {
                let revision = stored.map_or(0, |e| e.revision);
                let detail = format!(
                    "{} reached {} with attempt {} claimed at {}: {why} (directory revision \
                     {revision})",
                    record.request.category,
                    call.provider,
                    call.attempt,
                    steps::quiet::utc(claim.now_ms)
                );
                self.violation(invariant, Some(record.id.clone()), &detail);
            }
        }
    }
}
