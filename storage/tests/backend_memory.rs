//! `WakeBackend` over the in-memory queue: the same worker contract as on Redis (pickup, retries
//! with backoff and a cap, release on graceful shutdown, the reaper), with the queue polled every
//! 10 ms.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apalis::prelude::{BoxDynError, Data, Monitor, WorkerBuilder, WorkerBuilderExt};
use steps::model::TenantId;
use storage::backend::{WakeBackend, WakeBackendConfig};
use storage::keys;
use storage::memory::MemoryStore;
use storage::queue::{QueueStats, REAPER_SLACK_MS, TRIES_MAX, WakeQueue};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use workflows::ports::{Clock, Store};
use workflows::record::{Created, Wake};

#[derive(Debug, Default)]
struct Seen {
    runs: Mutex<BTreeMap<String, Vec<Instant>>>,
    failing: Mutex<Vec<String>>,
    run_ms: u64,
}

impl Seen {
    fn runs(&self, wake: &Wake) -> Vec<Instant> {
        self.runs.lock().unwrap().get(&wake.key()).cloned().unwrap_or_default()
    }

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
    seen.runs.lock().unwrap().entry(wake.key()).or_default().push(Instant::now());
    if seen.run_ms > 0 {
        tokio::time::sleep(Duration::from_millis(seen.run_ms)).await;
    }
    if seen.failing.lock().unwrap().contains(&wake.key()) {
        return Err("provider unreachable (test)".into());
    }
    Ok(())
}

struct Running {
    stop: oneshot::Sender<()>,
    monitor: JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.monitor)
            .await
            .expect("the worker stops within 10 s")
            .expect("the monitor task does not panic");
    }
}

fn spawn_worker(
    store: &MemoryStore,
    concurrency: usize,
    config: WakeBackendConfig,
    seen: &Arc<Seen>,
) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let backend = WakeBackend::with_config(store.clone(), config);
    let seen = Arc::clone(seen);
    let monitor = Monitor::new().should_restart(|_, _| false).register(move |_| {
        WorkerBuilder::new("memory-worker")
            .backend(backend.clone())
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
    Running { stop, monitor }
}

fn wake(n: u32) -> Wake {
    let tenant = TenantId::new("acme").unwrap();
    let id = keys::new_notification_id(&tenant, None, &format!("01HZZZZZZZZZZZZZZZZZ{n:06}"));
    Wake { tenant, id, version: 1 }
}

async fn push(store: &MemoryStore, wake: &Wake, at_ms: u64) {
    store.schedule(&[(wake.clone(), at_ms)]).await.expect("schedule");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wakes_run_promptly_and_timers_when_due() {
    let store = MemoryStore::new();
    let seen = Arc::new(Seen::default());
    let worker = spawn_worker(&store, 8, WakeBackendConfig::default(), &seen);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Each due wake-up is picked up without anything else happening (the backend promotes
    // every 50 ms and polls every 10 ms; how fast is measured in benches/, not asserted here,
    // since a loaded CI machine makes any tight bound flaky: 10 s only means "not stuck").
    for i in 0..10 {
        let w = wake(i);
        push(&store, &w, store.now_ms()).await;
        seen.wait_for(&w, 1, Duration::from_secs(10)).await.expect("picked up");
    }
    let later = wake(100);
    let sent = Instant::now();
    push(&store, &later, store.now_ms() + 300).await;
    let ran = seen.wait_for(&later, 1, Duration::from_secs(2)).await.expect("timer ran");
    assert!(ran.duration_since(sent) >= Duration::from_millis(300), "a timer ran early");
    worker.stop().await;
    assert_eq!(store.stats().await, Ok(QueueStats::default()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_retry_with_backoff_then_park() {
    let store = MemoryStore::new();
    let seen = Arc::new(Seen::default());
    let (bad, good) = (wake(1), wake(2));
    seen.failing.lock().unwrap().push(bad.key());
    let config = WakeBackendConfig { retry_base_ms: 10, retry_max_ms: 80, ..Default::default() };
    let worker = spawn_worker(&store, 4, config, &seen);
    push(&store, &bad, 0).await;
    push(&store, &good, 0).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.stats().await.unwrap().parked == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let runs = seen.runs(&bad);
    assert_eq!(runs.len(), TRIES_MAX as usize);
    for (i, pair) in runs.windows(2).enumerate() {
        let want = storage::queue::retry_delay_ms(u32::try_from(i).unwrap(), 10, 80);
        assert!(
            pair[1].duration_since(pair[0]) >= Duration::from_millis(want),
            "retry {i} too early"
        );
    }
    assert_eq!(seen.runs(&good).len(), 1);
    worker.stop().await;
    assert_eq!(store.stats().await, Ok(QueueStats { parked: 1, ..QueueStats::default() }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_releases_unstarted_wakes() {
    let store = MemoryStore::new();
    let seen = Arc::new(Seen { run_ms: 300, ..Seen::default() });
    // The backend fetches up to 10 while apalis runs one at a time.
    let config = WakeBackendConfig { concurrency: 10, ..Default::default() };
    for i in 0..5 {
        push(&store, &wake(i), 0).await;
    }
    let worker = spawn_worker(&store, 1, config, &seen);
    let deadline = Instant::now() + Duration::from_secs(2);
    while seen.runs.lock().unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    worker.stop().await;
    let ran = seen.runs.lock().unwrap().len();
    assert!((1..5).contains(&ran), "{ran} ran before the stop");
    let stats = store.stats().await.unwrap();
    let waiting = stats.oldest_waiting_since_ms;
    assert_eq!(waiting.is_some(), ran < 5, "{stats:?}");
    assert_eq!(
        stats,
        QueueStats {
            ready: 5 - ran as u64,
            oldest_waiting_since_ms: waiting,
            ..QueueStats::default()
        }
    );
}

/// A clock the test moves by hand: the reaper's deadlines are minutes away in real time.
#[derive(Debug, Default)]
struct ManualClock(std::sync::atomic::AtomicU64);

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A notification whose wake-up was lost is run by a worker once its deadline has passed: the
/// worker's maintenance runs the reaper. One whose deadline has not passed is left alone, and the
/// re-driven one is not re-driven again round after round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_reaper_redrives_a_lost_wake_up_after_its_deadline() {
    let clock = Arc::new(ManualClock::default());
    let t0 = storage::memory::SystemClock.now_ms();
    clock.0.store(t0, std::sync::atomic::Ordering::Relaxed);
    let store = MemoryStore::with_clock(clock.clone());
    let (lost, late) = (wake(1), wake(2));
    let created_at = |w: &Wake, at_ms: u64| {
        let record = storage::conformance::record(&w.tenant, &w.id, at_ms, Some(at_ms));
        (record, storage::conformance::first(at_ms))
    };
    for (w, at_ms) in [(&lost, t0), (&late, t0 + REAPER_SLACK_MS)] {
        let (record, first) = created_at(w, at_ms);
        assert_eq!(store.create(&record, &first, None).await, Ok(Created::New));
    }
    // Both first wake-ups are lost: taken off the queue and never run.
    let taken = store.fetch("lossy", 10, 0).await.expect("fetch");
    assert_eq!(taken.len(), 2);
    store.ack(&taken).await.expect("ack");
    clock.0.store(t0 + REAPER_SLACK_MS, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(store.stats().await.map(|s| s.overdue), Ok(1));

    let seen = Arc::new(Seen::default());
    let config = WakeBackendConfig { reap_every_ms: 20, ..Default::default() };
    let worker = spawn_worker(&store, 4, config, &seen);
    assert!(seen.wait_for(&lost, 1, Duration::from_secs(5)).await.is_some(), "never re-driven");
    // Many reaper rounds later (the clock stands still): once, and only the overdue one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(seen.runs(&lost).len(), 1, "re-driven again before a slack had passed");
    assert!(seen.runs(&late).is_empty(), "re-driven before its deadline");
    assert_eq!(store.stats().await, Ok(QueueStats::default()));
    worker.stop().await;
}
