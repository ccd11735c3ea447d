//! Regression tests for the wake-up queue on real Redis, each on its own throwaway
//! `redis-server`, mostly through a real apalis worker over `WakeBackend`. Each test guards one
//! of the apalis-redis 1.0 defects measured in research/apalis-and-deps.md §3.10, or the
//! reaper that makes good a lost wake-up.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apalis::prelude::{BoxDynError, Data, Monitor, WorkerBuilder, WorkerBuilderExt};
use futures::future::BoxFuture;
use steps::model::{
    Category, Channel, NotificationId, ProviderName, Recipient, RecipientId, Request, TemplateId,
    TemplateRef, TenantId,
};
use steps::outcome::{ErrorClass, ProviderError, SendOutcome};
use steps::render::{Part, PartSource, TemplateSet};
use storage::backend::{WakeBackend, WakeBackendConfig};
use storage::keys;
use storage::queue::{QueueStats, Reaped, TRIES_MAX, WakeQueue};
use storage::redis::RedisStore;
use storage::testing::RedisServer;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use workflows::machine::{State, StateKind};
use workflows::policy::Policy;
use workflows::ports::{Outbound, Provider, Store};
use workflows::record::{Cause, Created, HistoryEntry, Record, Wake};
use workflows::runner::{Advanced, Runner, Submission};

/// Tests that measure time or load the machine hard run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every run of every wake-up, with when it started.
#[derive(Debug, Default)]
struct Seen {
    /// Wake key → start times.
    runs: Mutex<BTreeMap<String, Vec<Instant>>>,
    /// Wake keys whose handler fails.
    failing: Mutex<BTreeSet<String>>,
    /// How long each run takes.
    run_ms: u64,
}

impl Seen {
    fn runs(&self, wake: &Wake) -> Vec<Instant> {
        self.runs.lock().unwrap().get(&wake.key()).cloned().unwrap_or_default()
    }

    fn distinct(&self) -> usize {
        self.runs.lock().unwrap().len()
    }

    fn total(&self) -> usize {
        self.runs.lock().unwrap().values().map(Vec::len).sum()
    }

    /// Waits until `wake` has run `n` times; the time of the `n`-th run.
    async fn wait_for(&self, wake: &Wake, n: usize, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(at) = self.runs(wake).get(n - 1) {
                return Some(*at);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

async fn handle(wake: Wake, seen: Data<Arc<Seen>>) -> Result<(), BoxDynError> {
    let key = wake.key();
    seen.runs.lock().unwrap().entry(key.clone()).or_default().push(Instant::now());
    if seen.run_ms > 0 {
        tokio::time::sleep(Duration::from_millis(seen.run_ms)).await;
    }
    if seen.failing.lock().unwrap().contains(&key) {
        return Err("provider unreachable (test)".into());
    }
    Ok(())
}

/// A worker running under a `Monitor` in its own task.
struct Running {
    stop: oneshot::Sender<()>,
    monitor: JoinHandle<()>,
    starts: Arc<Mutex<usize>>,
}

fn spawn_worker(
    store: &RedisStore,
    name: &str,
    concurrency: usize,
    config: WakeBackendConfig,
    seen: &Arc<Seen>,
) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let starts = Arc::new(Mutex::new(0));
    let counter = Arc::clone(&starts);
    let store = store.clone();
    let name = name.to_owned();
    let seen = Arc::clone(seen);
    let monitor = Monitor::new()
        .should_restart(|_, _| false)
        .shutdown_timeout(Duration::from_secs(10))
        .on_event(move |_, event| {
            if matches!(event, apalis_core_event::Event::Start) {
                *counter.lock().unwrap() += 1;
            }
        })
        .register(move |_| {
            let backend =
                WakeBackend::with_config(store.clone(), config.clone()).concurrency(concurrency);
            WorkerBuilder::new(name.as_str())
                .backend(backend)
                .concurrency(concurrency)
                .data(Arc::clone(&seen))
                .build(handle)
        });
    let monitor = tokio::spawn(async move {
        let signal = async move {
            let _ = stopped.await;
            Ok(())
        };
        monitor.run_with_signal(signal).await.expect("the monitor exits cleanly");
    });
    Running { stop, monitor, starts }
}

/// Re-exported event type (apalis's prelude does not name it).
mod apalis_core_event {
    pub use apalis::prelude::Event;
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(15), self.monitor)
            .await
            .expect("the worker stops within 15 s")
            .expect("the monitor task does not panic");
    }

    fn starts(&self) -> usize {
        *self.starts.lock().unwrap()
    }

    fn is_running(&self) -> bool {
        !self.monitor.is_finished()
    }
}

fn tenant() -> TenantId {
    TenantId::new("acme").unwrap()
}

fn wake(n: u32) -> Wake {
    let tenant = tenant();
    let id = keys::new_notification_id(&tenant, None, &format!("01HZZZZZZZZZZZZZZZZZ{n:06}"));
    Wake { tenant, id, version: 1 }
}

/// Submits a notification whose first wake-up is due now: the real enqueue path.
async fn submit(store: &RedisStore, n: u32) -> Wake {
    let wake = wake(n);
    let now = store.now_ms();
    let record = Record {
        tenant: wake.tenant.clone(),
        id: wake.id.clone(),
        version: 1,
        state: State::Received {},
        request: Request {
            recipient: Recipient {
                id: RecipientId::new("bob").unwrap(),
                email: None,
                phone: None,
                opt_out: Vec::new(),
            },
            channel: Channel::InApp,
            template: TemplateRef { id: TemplateId::new("welcome").unwrap(), version: "v1".into() },
            data: serde_json::Map::new(),
            category: Category::new("news").unwrap(),
            locale: None,
            correlation: Default::default(),
        },
        seed: 1,
        created_at_ms: now,
        updated_at_ms: now,
        wake_at_ms: Some(now),
        replay: None,
    };
    let first = HistoryEntry {
        at_ms: now,
        version: 1,
        from: None,
        to: State::Received {},
        cause: Cause::Api { action: "submit".into() },
        note: None,
    };
    assert_eq!(store.create(&record, &first, None).await, Ok(Created::New));
    wake
}

/// Shows the library's logs in failing tests (and with `--nocapture`).
fn logs() {
    let _ =
        tracing_subscriber::fmt().with_test_writer().with_env_filter("storage=debug").try_init();
}

async fn connect(server: &RedisServer) -> RedisStore {
    RedisStore::connect(&server.url()).await.expect("connect to the test server")
}

async fn wait_for_stats(store: &RedisStore, want: QueueStats, timeout: Duration) -> QueueStats {
    let deadline = Instant::now() + timeout;
    loop {
        let stats = store.stats().await.expect("stats");
        if stats == want || Instant::now() > deadline {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// B1: a backlog of due wake-ups of any size drains (apalis-redis dies at about 8,000), with
/// none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_100k_due_wakes_drains_completely() {
    let _serial = SERIAL.lock().await;
    let server = RedisServer::start();
    let store = connect(&server).await;
    let n = 100_000_u32;
    let due = store.now_ms() - 1;
    let wakes: Vec<(Wake, u64)> = (0..n).map(|i| (wake(i), due)).collect();
    for chunk in wakes.chunks(storage::queue::SCHEDULE_BATCH_MAX) {
        store.schedule(chunk).await.expect("schedule");
    }
    assert_eq!(store.stats().await.expect("stats").due, u64::from(n));

    let seen = Arc::new(Seen::default());
    let started = Instant::now();
    let worker = spawn_worker(&store, "drain", 200, WakeBackendConfig::default(), &seen);
    let deadline = started + Duration::from_secs(90);
    while seen.distinct() < n as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    let distinct = seen.distinct();
    let total = seen.total();
    eprintln!(
        "drained {distinct} distinct wake-ups ({total} runs) in {:.2} s ({:.0}/s)",
        elapsed.as_secs_f64(),
        distinct as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(distinct, n as usize, "wake-ups were lost");
    assert!(worker.is_running(), "the worker died");
    let stats = wait_for_stats(&store, QueueStats::default(), Duration::from_secs(5)).await;
    assert_eq!(stats, QueueStats::default(), "everything settled");
    assert_eq!(total, n as usize, "no wake-up ran twice");
    worker.stop().await;
}

/// B3: an idle worker picks a new wake-up up at once (apalis-redis: up to the 30 s heartbeat).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_picks_up_a_new_wake_in_under_250_ms() {
    let _serial = SERIAL.lock().await;
    let server = RedisServer::start();
    let store = connect(&server).await;
    let seen = Arc::new(Seen::default());
    let worker = spawn_worker(&store, "idle", 8, WakeBackendConfig::default(), &seen);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut latencies = Vec::new();
    for i in 0..20_u32 {
        // Land at different points of the worker's 1 s blocking read.
        tokio::time::sleep(Duration::from_millis(u64::from(37 * i % 400))).await;
        let sent = Instant::now();
        let wake = submit(&store, i).await;
        let ran = seen.wait_for(&wake, 1, Duration::from_secs(5)).await.expect("picked up");
        latencies.push(ran.duration_since(sent));
    }
    let max = latencies.iter().max().copied().unwrap_or_default();
    eprintln!("idle pickup: max {max:?} over {} samples: {latencies:?}", latencies.len());
    assert!(max < Duration::from_millis(250), "an idle worker took {max:?}");
    worker.stop().await;
}

/// B5: a failing handler is retried on our backoff and parked after our cap; a successful one
/// never runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_back_off_and_are_capped_and_successes_never_rerun() {
    let server = RedisServer::start();
    let store = connect(&server).await;
    let seen = Arc::new(Seen::default());
    let failing = submit(&store, 1).await;
    let fine = submit(&store, 2).await;
    seen.failing.lock().unwrap().insert(failing.key());
    let config = WakeBackendConfig { retry_base_ms: 20, retry_max_ms: 200, ..Default::default() };
    let worker = spawn_worker(&store, "retries", 4, config, &seen);

    let parked = QueueStats { parked: 1, ..QueueStats::default() };
    let stats = wait_for_stats(&store, parked, Duration::from_secs(20)).await;
    assert_eq!(stats, parked, "the failing wake-up ends up parked");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let runs = seen.runs(&failing);
    assert_eq!(runs.len(), TRIES_MAX as usize, "runs of the failing wake-up");
    for (i, pair) in runs.windows(2).enumerate() {
        let want = storage::queue::retry_delay_ms(u32::try_from(i).unwrap(), 20, 200);
        let gap = pair[1].duration_since(pair[0]);
        assert!(
            gap >= Duration::from_millis(want),
            "retry {i} came after {gap:?}, before {want} ms"
        );
    }
    assert_eq!(seen.runs(&fine).len(), 1, "a handled wake-up never runs again");
    assert!(worker.is_running());
    worker.stop().await;
}

/// B6: a worker whose connections are killed, or whose Redis restarts, keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_survives_killed_connections_and_a_redis_restart() {
    logs();
    let mut server = RedisServer::start();
    let store = connect(&server).await;
    let seen = Arc::new(Seen::default());
    let worker = spawn_worker(&store, "survivor", 4, WakeBackendConfig::default(), &seen);
    let first = submit(&store, 1).await;
    seen.wait_for(&first, 1, Duration::from_secs(5)).await.expect("first wake-up handled");

    // Kill every client connection but the one asking.
    let client = redis::Client::open(server.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(killed >= 2, "killed {killed} connections");
    let second = submit(&connect(&server).await, 2).await;
    seen.wait_for(&second, 1, Duration::from_secs(5)).await.expect("handled after CLIENT KILL");

    server.restart();
    let third = submit(&connect(&server).await, 3).await;
    seen.wait_for(&third, 1, Duration::from_secs(10)).await.expect("handled after a restart");
    assert!(worker.is_running(), "the worker died");
    assert_eq!(worker.starts(), 1, "the same worker carried on");
    worker.stop().await;
}

/// B7: a worker stopped and started again at once under the same name works; what it had
/// fetched but not started goes back to ready on the way out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_restarted_under_the_same_name_works_at_once() {
    let server = RedisServer::start();
    let store = connect(&server).await;
    let seen = Arc::new(Seen { run_ms: 200, ..Seen::default() });
    // The backend may fetch 10 while apalis runs 1 at a time: 9 sit in its buffer.
    let config = WakeBackendConfig { concurrency: 10, ..Default::default() };
    let first = submit(&store, 1).await;
    let worker = spawn_worker_with(&store, "same-name", 1, config.clone(), &seen);
    seen.wait_for(&first, 1, Duration::from_secs(5)).await.expect("handled");
    let more: Vec<Wake> = {
        let mut v = Vec::new();
        for i in 10..20 {
            v.push(submit(&store, i).await);
        }
        v
    };
    seen.wait_for(&more[0], 1, Duration::from_secs(5)).await;
    worker.stop().await;
    let stats = store.stats().await.expect("stats");
    assert_eq!(stats.pending, 0, "nothing left pending by a graceful stop: {stats:?}");

    let again = spawn_worker_with(&store, "same-name", 1, config, &seen);
    let last = submit(&store, 99).await;
    seen.wait_for(&last, 1, Duration::from_secs(5))
        .await
        .expect("handled after a same-name restart");
    for wake in &more {
        seen.wait_for(wake, 1, Duration::from_secs(10)).await.expect("released wake-ups handled");
    }
    assert_eq!(seen.total(), 12, "every wake-up ran exactly once");
    again.stop().await;
}

/// A worker whose apalis concurrency differs from the backend's fetch size (to fill its buffer).
fn spawn_worker_with(
    store: &RedisStore,
    name: &str,
    apalis_concurrency: usize,
    config: WakeBackendConfig,
    seen: &Arc<Seen>,
) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let store = store.clone();
    let name = name.to_owned();
    let seen = Arc::clone(seen);
    let monitor = Monitor::new().should_restart(|_, _| false).register(move |_| {
        WorkerBuilder::new(name.as_str())
            .backend(WakeBackend::with_config(store.clone(), config.clone()))
            .concurrency(apalis_concurrency)
            .data(Arc::clone(&seen))
            .build(handle)
    });
    let monitor = tokio::spawn(async move {
        let signal = async move {
            let _ = stopped.await;
            Ok(())
        };
        monitor.run_with_signal(signal).await.expect("the monitor exits cleanly");
    });
    Running { stop, monitor, starts: Arc::new(Mutex::new(1)) }
}

/// B7/B8: entries a crashed worker fetched and never settled are re-run by a live worker: per
/// message, with the production settings (10 s idle, 2 s rounds), well within 20 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_wakes_are_reclaimed_by_another_worker() {
    let server = RedisServer::start();
    let store = connect(&server).await;
    let wakes = [submit(&store, 1).await, submit(&store, 2).await];
    // A worker that fetched and then died (kill -9): its entries stay pending under its name.
    let taken = store.fetch("crashed", 10, 0).await.expect("fetch");
    assert_eq!(taken.len(), 2);
    let crashed_at = Instant::now();
    let seen = Arc::new(Seen::default());
    let worker = spawn_worker(&store, "alive", 4, WakeBackendConfig::default(), &seen);
    for wake in &wakes {
        let ran = seen.wait_for(wake, 1, Duration::from_secs(20)).await.expect("reclaimed");
        let after = ran.duration_since(crashed_at);
        eprintln!("{} re-run {after:?} after the crash", wake.key());
        assert!(after >= Duration::from_secs(10), "reclaimed before the idle time");
        assert!(after < Duration::from_secs(20), "reclaimed after {after:?}");
    }
    let stats = wait_for_stats(&store, QueueStats::default(), Duration::from_secs(5)).await;
    assert_eq!(stats, QueueStats::default());
    worker.stop().await;
}

/// Ids that differ only in the shard prefix are different notifications (sanity for `wake`).
#[test]
fn fixture_wakes_are_distinct() {
    let ids: BTreeSet<NotificationId> = (0..100).map(|i| wake(i).id).collect();
    assert_eq!(ids.len(), 100);
}

/// An in-app provider that fails each notification's first call (retryable) and delivers on the
/// next, so a notification spends time mid-lifecycle in `deferred`, waiting on a timer.
#[derive(Debug)]
struct FlakyInbox {
    name: ProviderName,
    called: Mutex<BTreeSet<NotificationId>>,
}

impl Provider for FlakyInbox {
    fn name(&self) -> &ProviderName {
        &self.name
    }

    fn channel(&self) -> Channel {
        Channel::InApp
    }

    fn send<'a>(&'a self, message: &'a Outbound) -> BoxFuture<'a, SendOutcome> {
        let first = self.called.lock().unwrap().insert(message.notification_id.clone());
        Box::pin(std::future::ready(if first {
            SendOutcome::Failed(ProviderError::new(ErrorClass::RETRYABLE, Some(503), None, "busy"))
        } else {
            SendOutcome::Accepted { provider_message_id: None, delivered: true }
        }))
    }
}

/// The "no stuck work", on real Redis: the wake-ups of notifications mid-lifecycle (some
/// just accepted, some deferred after a failed send) are lost with every queue key of the server
/// deleted; nothing would ever wake them again. The reaper, run past their deadline, re-drives
/// every one, and the real runner takes each to `delivered`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_whose_wake_ups_were_lost_are_redriven_and_complete() {
    let server = RedisServer::start();
    let store = connect(&server).await;
    let inbox = ProviderName::new("inbox").unwrap();
    let mut policy = Policy::default();
    policy.routes.insert(Channel::InApp, vec![inbox.clone()]);
    let template = TemplateId::new("note").unwrap();
    let part =
        |part, source: &str| PartSource { template: template.clone(), part, source: source.into() };
    let templates = TemplateSet::from_parts([
        part(Part::InAppTitle, "Order {{ order }}"),
        part(Part::InAppBody, "It shipped."),
    ])
    .unwrap();
    let provider = Arc::new(FlakyInbox { name: inbox, called: Mutex::default() });
    let runner = Runner::new(
        store.clone(),
        storage::memory::SystemClock,
        Arc::new(templates),
        Arc::new(policy),
        [provider as Arc<dyn Provider>],
    );
    let n = 24_u32;
    let mut ids = Vec::new();
    for i in 0..n {
        let id = keys::new_notification_id(&tenant(), None, &format!("01HZZZZZZZZZZZZZZZZZ{i:06}"));
        let submission = Submission {
            recipient: Recipient {
                id: RecipientId::new(format!("r{i}")).unwrap(),
                email: None,
                phone: None,
                opt_out: Vec::new(),
            },
            channel: Channel::InApp,
            template: template.clone(),
            data: serde_json::Map::from_iter([("order".to_owned(), serde_json::json!(i))]),
            category: Category::new("news").unwrap(),
            locale: None,
            correlation: Default::default(),
        };
        runner.submit(&tenant(), id.clone(), submission, None).await.expect("submit");
        ids.push(id);
    }
    // Half get one wake-up handled (the send fails: deferred, a timer set); the other half's first
    // wake-up is taken and never handled.
    let first = store.fetch("w", 100, 0).await.expect("fetch");
    assert_eq!(first.len(), n as usize);
    for (i, delivery) in first.iter().enumerate() {
        if i % 2 == 0 {
            let advanced = runner.advance(&delivery.wake).await.expect("advance");
            assert!(
                matches!(advanced, Advanced::Committed { state: StateKind::Deferred, .. }),
                "{advanced:?}"
            );
        }
    }
    store.ack(&first).await.expect("ack");
    // Lose every wake-up: delete this server's queue keys (ready streams with their consumer
    // group, timers), as a Redis that lost its last writes or an operator's mistake would.
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut del = redis::cmd("DEL");
    for shard in 0..keys::SHARDS {
        del.arg(keys::ready(shard)).arg(keys::timers(shard));
    }
    let _: i64 = del.query_async(&mut conn).await.unwrap();
    // (The next fetch recreates the consumer groups the DEL took.)
    let stats = store.stats().await.expect("stats");
    assert_eq!((stats.ready, stats.scheduled, stats.pending, stats.overdue), (0, 0, 0, 0));

    // Not before the deadline; all of them after it.
    assert_eq!(store.redrive_overdue(store.now_ms(), 100).await, Ok(Reaped::default()));
    let later = store.now_ms() + 24 * 3_600_000;
    let reaped = store.redrive_overdue(later, 100).await.expect("reap");
    assert_eq!(reaped, Reaped { redriven: n as usize, cleared: 0 });
    // The workers carry on (timers promoted as if their time had come).
    let mut rounds = 0;
    loop {
        store.promote_due(later, 1_000).await.expect("promote");
        let batch = store.fetch("w", 100, 0).await.expect("fetch");
        if batch.is_empty() {
            break;
        }
        for delivery in &batch {
            runner.advance(&delivery.wake).await.expect("advance");
        }
        store.ack(&batch).await.expect("ack");
        rounds += 1;
        assert!(rounds < 10, "the lifecycle does not settle");
    }
    for id in &ids {
        let record = store.load(&tenant(), id).await.expect("load").expect("record");
        assert_eq!(record.state.kind(), StateKind::Delivered, "{id}");
    }
    // Settled records keep no deadline: nothing overdue, nothing for a reaper to do.
    assert_eq!(store.stats().await, Ok(QueueStats::default()));
    assert_eq!(store.redrive_overdue(later * 2, 100).await, Ok(Reaped::default()));
}
