//! An apalis 1.0 [`Backend`] over the wake-up queue (feature `apalis`).
//!
//! ```ignore
//! let backend = WakeBackend::new(store.clone()).concurrency(64);
//! Monitor::new()
//!     .register(move |_| {
//!         WorkerBuilder::new("worker-1")
//!             .backend(backend.clone())
//!             .concurrency(64)
//!             .data(runner.clone())
//!             .build(handle) // async fn handle(wake: Wake, runner: Data<..>) -> Result<(), BoxDynError>
//!     })
//!     .run_with_signal(tokio::signal::ctrl_c())
//!     .await?;
//! ```
//!
//! Why our own backend rather than apalis-redis (research/apalis-and-deps.md §3.10):
//! - fetching is one `XREADGROUP` that blocks ≤ 1 s, so an idle worker sees a new wake-up in
//!   milliseconds, not at the next 30 s heartbeat;
//! - due timers are promoted in bounded chunks (`WakeQueue::promote_due`), so a backlog of any
//!   size is harmless;
//! - retries are ours: `Ok` acks, `Err` schedules the wake-up again after 1 s, 2 s, 4 s … 60 s and
//!   parks it after `TRIES_MAX` failures; apalis's retry layer and apalis-redis's 25 hard-coded
//!   attempts never come into play;
//! - a dead worker's wake-ups are reclaimed per message (`XAUTOCLAIM`), with no heartbeat or
//!   worker registry involved, so a worker restarted under the same name works at once (the
//!   registry `courant queues` shows is for operators only);
//! - the reaper (`WakeQueue::redrive_overdue`) runs every 30 s and re-drives notifications whose
//!   wake-up was lost (their deadline passed), so nothing waits forever;
//! - a Redis error never kills the worker (apalis treats any backend error as fatal): it is
//!   logged, the backend backs off briefly and polls on;
//! - on graceful shutdown, fetched but unstarted wake-ups go straight back to ready.
//!
//! The backend drives all of this from the worker's own task: `poll_ready`/`poll_next` poll the
//! fetch, the maintenance round (promote + reap + reclaim) and the settlement of finished
//! wake-ups side by side, each an owned future, so nothing is spawned and nothing outlives the
//! worker.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::layers::{Layer, Service};
use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::context::WorkerContext;
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::time::{Instant, Sleep};
use workflows::ports::StoreError;
use workflows::record::Wake;

use crate::queue::{
    BLOCK_MS_MAX, Delivery, PROMOTE_PER_SHARD_MAX, REDRIVE_PER_SHARD_MAX, Reaped, Retried,
    WakeQueue, retry_delay_ms,
};

/// The most wake-ups one fetch takes, whatever the free concurrency.
pub const FETCH_BATCH_MAX: usize = 100;
/// The most abandoned wake-ups one reclaim round takes.
pub const RECLAIM_BATCH_MAX: usize = 100;
/// The most finished-but-unsettled outcomes kept. Past it the oldest are dropped with a warning:
/// their wake-ups stay pending and are re-delivered after the reclaim time, which is harmless.
pub const OUTCOMES_MAX: usize = 10_000;
/// The shortest and longest pause after a failed queue operation.
const ERROR_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// See [`ERROR_BACKOFF_MIN`].
const ERROR_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Settlement attempts at shutdown before the rest is left to reclaim.
const CLOSE_SETTLE_TRIES_MAX: u32 = 3;

/// How a [`WakeBackend`] polls, maintains and retries. The defaults are what production uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WakeBackendConfig {
    /// The worker's concurrency (the `n` of `.concurrency(n)`): a fetch never takes more than
    /// the free slots, so fetched wake-ups start at once instead of idling in a buffer.
    pub concurrency: usize,
    /// How long a fetch waits on an empty queue (Redis `BLOCK`). 1 s: an idle worker still picks
    /// a new wake-up up within milliseconds (the read returns as soon as one arrives), while an
    /// idle worker costs one request per second.
    pub block_ms: u64,
    /// The pause before fetching again after an empty fetch that did not block (the in-memory
    /// queue): 10 ms.
    pub idle_poll_ms: u64,
    /// How often due timers are promoted: 50 ms, the added latency of a scheduled wake-up.
    pub promote_every_ms: u64,
    /// Timers promoted per shard per round (at most `PROMOTE_PER_SHARD_MAX`): 500.
    pub promote_per_shard: usize,
    /// How often abandoned wake-ups are reclaimed: 2 s.
    pub reclaim_every_ms: u64,
    /// How long a wake-up must have been pending before another worker takes it over: 10 s,
    /// well above any normal run and well below the 20 s recovery bound.
    pub reclaim_min_idle_ms: u64,
    /// How often the reaper re-drives overdue notifications (a lost wake-up): 30 s, so a lost
    /// wake-up is made good within `queue::REAPER_SLACK_MS` plus 30 s, while an idle fleet spends
    /// one small script per shard per worker every 30 s on it. A round that finds a full chunk
    /// runs again with the next promotion.
    pub reap_every_ms: u64,
    /// Overdue notifications re-driven per shard per round (at most `REDRIVE_PER_SHARD_MAX`):
    /// 100, so a large loss (a Redis that lost its queue) is fed to the workers in chunks.
    pub reap_per_shard: usize,
    /// The first retry delay after a failed handler: 1 s.
    pub retry_base_ms: u64,
    /// The longest retry delay: 60 s.
    pub retry_max_ms: u64,
}

impl Default for WakeBackendConfig {
    fn default() -> Self {
        Self {
            concurrency: FETCH_BATCH_MAX,
            block_ms: 1_000,
            idle_poll_ms: 10,
            promote_every_ms: 50,
            promote_per_shard: 500,
            reclaim_every_ms: 2_000,
            reclaim_min_idle_ms: 10_000,
            reap_every_ms: 30_000,
            reap_per_shard: 100,
            retry_base_ms: 1_000,
            retry_max_ms: 60_000,
        }
    }
}

/// What became of a delivery once its handler finished.
#[derive(Debug)]
enum Outcome {
    /// Handled: acknowledge.
    Ack(Delivery),
    /// Failed: schedule again after the delay.
    Retry(Delivery, u64),
}

/// Outcomes shared between the ack layer (which records them) and the backend (which settles
/// them in batches).
type Outcomes = Arc<Mutex<VecDeque<Outcome>>>;

fn push_outcome(outcomes: &Outcomes, outcome: Outcome) {
    let mut queue = outcomes.lock().unwrap_or_else(PoisonError::into_inner);
    if queue.len() >= OUTCOMES_MAX {
        queue.pop_front();
        tracing::warn!(
            limit = OUTCOMES_MAX,
            "Too many unsettled wake-ups; the oldest will be re-delivered after the reclaim time."
        );
    }
    queue.push_back(outcome);
}

/// A maintenance round's result.
#[derive(Debug)]
struct Maintenance {
    /// Whether a promote chunk came back full (run the next round at once).
    more_due: bool,
    /// Whether the reaper examined a full chunk (reap again in the next round).
    more_overdue: bool,
    /// Abandoned deliveries now ours.
    reclaimed: Vec<Delivery>,
}

/// A boxed future in a slot that is `Sync` although the future is not: it is only ever reached
/// through `&mut self` (`Mutex::get_mut`), so the lock is never taken. `Sync` lets a worker
/// factory (which `Monitor::register` requires to be `Sync`) hold a template backend.
struct Slot<T>(Mutex<Option<BoxFuture<'static, T>>>);

impl<T> Slot<T> {
    fn empty() -> Self {
        Self(Mutex::new(None))
    }

    fn get(&mut self) -> &mut Option<BoxFuture<'static, T>> {
        self.0.get_mut().unwrap_or_else(PoisonError::into_inner)
    }
}

fn backoff(errors: u32) -> Duration {
    let factor = 1_u32.checked_shl(errors.saturating_sub(1).min(16)).unwrap_or(u32::MAX);
    ERROR_BACKOFF_MIN.saturating_mul(factor).min(ERROR_BACKOFF_MAX)
}

fn sleep(duration: Duration) -> Pin<Box<Sleep>> {
    Box::pin(tokio::time::sleep(duration))
}

/// An apalis backend that feeds a worker from a [`WakeQueue`]: `Task<Wake>`s, acked, retried
/// and released by its own layer (see the module doc).
pub struct WakeBackend<Q: WakeQueue> {
    /// The queue, with its own connection for blocking reads.
    queue: Q,
    /// The settings.
    config: WakeBackendConfig,
    /// The consumer name: the worker's name, learned at the first poll.
    consumer: Option<String>,
    /// Fetched (or reclaimed) and not yet handed to the worker.
    buffer: VecDeque<Delivery>,
    /// The fetch in flight.
    fetch: Slot<Result<Vec<Delivery>, StoreError>>,
    /// When the fetch in flight started (an empty answer much faster than the block time means
    /// the queue does not block, so pause before asking again).
    fetch_started: Option<Instant>,
    /// A pause before the next fetch (idle or after an error).
    fetch_pause: Option<Pin<Box<Sleep>>>,
    /// Consecutive failed fetches.
    fetch_errors: u32,
    /// The maintenance round in flight.
    maintenance: Slot<Result<Maintenance, StoreError>>,
    /// When the next maintenance round starts.
    maintenance_timer: Option<Pin<Box<Sleep>>>,
    /// Consecutive failed maintenance rounds.
    maintenance_errors: u32,
    /// When the next maintenance round also reclaims.
    reclaim_at: Option<Instant>,
    /// When the next maintenance round also runs the reaper.
    reap_at: Option<Instant>,
    /// Finished handlers' outcomes, recorded by [`WakeAckLayer`].
    outcomes: Outcomes,
    /// The settlement in flight; it hands back what it could not settle.
    settle: Slot<Vec<Outcome>>,
    /// A pause before settling again after a failure.
    settle_pause: Option<Pin<Box<Sleep>>>,
    /// Consecutive failed settlements.
    settle_errors: u32,
    /// The release of the buffer at shutdown.
    release: Slot<()>,
    /// Deliveries handed out, for unique task ids.
    handed_out: u64,
}

/// A fresh backend on the same queue and settings: nothing in flight is shared, so a worker
/// factory (`Monitor::register`) can clone one template backend per worker it builds.
impl<Q: WakeQueue> Clone for WakeBackend<Q> {
    fn clone(&self) -> Self {
        Self::with_config(self.queue.clone(), self.config.clone())
    }
}

impl<Q: WakeQueue> std::fmt::Debug for WakeBackend<Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakeBackend")
            .field("consumer", &self.consumer)
            .field("config", &self.config)
            .field("buffered", &self.buffer.len())
            .field("handed_out", &self.handed_out)
            .finish_non_exhaustive()
    }
}

impl<Q: WakeQueue> WakeBackend<Q> {
    /// A backend over `queue` with the default settings (it takes a [`WakeQueue::dedicated`]
    /// handle of its own). Set [`concurrency`](Self::concurrency) to the worker's.
    pub fn new(queue: Q) -> Self {
        Self::with_config(queue, WakeBackendConfig::default())
    }

    /// A backend over `queue` with `config`.
    pub fn with_config(queue: Q, config: WakeBackendConfig) -> Self {
        Self {
            queue: queue.dedicated(),
            config,
            consumer: None,
            buffer: VecDeque::new(),
            fetch: Slot::empty(),
            fetch_started: None,
            fetch_pause: None,
            fetch_errors: 0,
            maintenance: Slot::empty(),
            maintenance_timer: None,
            maintenance_errors: 0,
            reclaim_at: None,
            reap_at: None,
            outcomes: Arc::new(Mutex::new(VecDeque::new())),
            settle: Slot::empty(),
            settle_pause: None,
            settle_errors: 0,
            release: Slot::empty(),
            handed_out: 0,
        }
    }

    /// Sets the worker's concurrency (the `n` of `.concurrency(n)`), which bounds each fetch.
    #[must_use]
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.config.concurrency = concurrency.max(1);
        self
    }

    fn consumer(&mut self, worker: &WorkerContext) -> String {
        self.consumer.get_or_insert_with(|| worker.name().to_owned()).clone()
    }

    fn task(&mut self, delivery: Delivery) -> Task<Wake> {
        self.handed_out += 1;
        // Unique per hand-out: apalis (with task-context) refuses two live tasks with one id,
        // and a reclaim can hand the same entry out again while a slow run still holds it.
        let id = TaskId::from_string(format!(
            "{}@{}#{}",
            delivery.wake.key(),
            delivery.tag,
            self.handed_out
        ));
        TaskBuilder::new(delivery.wake.clone())
            .task_id(id)
            .attempt(usize::try_from(delivery.tries).unwrap_or(usize::MAX))
            .data(delivery)
            .build()
    }

    /// Runs the maintenance rounds: promote due timers every `promote_every_ms` (at once while
    /// chunks come back full), re-drive overdue notifications every `reap_every_ms`, reclaim
    /// abandoned wake-ups every `reclaim_every_ms`.
    fn drive_maintenance(&mut self, cx: &mut Context<'_>, worker: &WorkerContext) {
        loop {
            if let Some(round) = self.maintenance.get().as_mut() {
                let Poll::Ready(result) = round.poll_unpin(cx) else { return };
                *self.maintenance.get() = None;
                let pause = match result {
                    Ok(done) => {
                        self.maintenance_errors = 0;
                        self.buffer.extend(done.reclaimed);
                        if done.more_overdue {
                            self.reap_at = None;
                        }
                        if done.more_due {
                            Duration::ZERO
                        } else {
                            Duration::from_millis(self.config.promote_every_ms)
                        }
                    }
                    Err(error) => {
                        self.maintenance_errors = self.maintenance_errors.saturating_add(1);
                        tracing::warn!(%error, "Wake queue maintenance failed; retrying.");
                        backoff(self.maintenance_errors)
                    }
                };
                self.maintenance_timer = Some(sleep(pause));
            }
            let timer = self.maintenance_timer.get_or_insert_with(|| sleep(Duration::ZERO));
            if timer.as_mut().poll(cx).is_pending() {
                return;
            }
            self.maintenance_timer = None;
            let now = Instant::now();
            let reclaim = self.reclaim_at.is_none_or(|at| now >= at);
            if reclaim {
                self.reclaim_at = Some(now + Duration::from_millis(self.config.reclaim_every_ms));
            }
            let reap = self.reap_at.is_none_or(|at| now >= at);
            if reap {
                self.reap_at = Some(now + Duration::from_millis(self.config.reap_every_ms));
            }
            let queue = self.queue.clone();
            let consumer = self.consumer(worker);
            let per_shard = self.config.promote_per_shard.clamp(1, PROMOTE_PER_SHARD_MAX);
            let reap_per_shard = self.config.reap_per_shard.clamp(1, REDRIVE_PER_SHARD_MAX);
            let min_idle_ms = self.config.reclaim_min_idle_ms;
            *self.maintenance.get() = Some(Box::pin(async move {
                let moved = queue.promote_due(queue.now_ms(), per_shard).await?;
                let reaped = if reap {
                    queue.redrive_overdue(queue.now_ms(), reap_per_shard).await?
                } else {
                    Reaped::default()
                };
                if reaped.redriven > 0 {
                    tracing::info!(
                        redriven = reaped.redriven,
                        cleared = reaped.cleared,
                        "Re-drove overdue notifications; their wake-ups were late or lost."
                    );
                } else if reaped.cleared > 0 {
                    tracing::debug!(
                        cleared = reaped.cleared,
                        "Dropped deadlines of notifications that are gone or settled."
                    );
                }
                let reclaimed = if reclaim {
                    queue.reclaim_abandoned(&consumer, min_idle_ms, RECLAIM_BATCH_MAX).await?
                } else {
                    Vec::new()
                };
                if !reclaimed.is_empty() {
                    tracing::info!(count = reclaimed.len(), "Reclaimed abandoned wake-ups.");
                }
                Ok(Maintenance {
                    more_due: moved >= per_shard,
                    more_overdue: reaped.examined() >= reap_per_shard,
                    reclaimed,
                })
            }));
        }
    }

    /// Settles finished handlers' outcomes in batches: one ack call for all the `Ok`s, one retry
    /// per `Err`. What fails is kept and tried again after a pause.
    fn drive_settle(&mut self, cx: &mut Context<'_>) {
        loop {
            if let Some(settle) = self.settle.get().as_mut() {
                let Poll::Ready(unsettled) = settle.poll_unpin(cx) else { return };
                *self.settle.get() = None;
                if unsettled.is_empty() {
                    self.settle_errors = 0;
                } else {
                    self.settle_errors = self.settle_errors.saturating_add(1);
                    let mut outcomes = self.outcomes.lock().unwrap_or_else(PoisonError::into_inner);
                    for outcome in unsettled.into_iter().rev() {
                        outcomes.push_front(outcome);
                    }
                    drop(outcomes);
                    self.settle_pause = Some(sleep(backoff(self.settle_errors)));
                }
            }
            if let Some(pause) = self.settle_pause.as_mut() {
                if pause.as_mut().poll(cx).is_pending() {
                    return;
                }
                self.settle_pause = None;
            }
            let batch: Vec<Outcome> = {
                let mut outcomes = self.outcomes.lock().unwrap_or_else(PoisonError::into_inner);
                outcomes.drain(..).collect()
            };
            if batch.is_empty() {
                return;
            }
            let queue = self.queue.clone();
            *self.settle.get() = Some(Box::pin(settle(queue, batch)));
        }
    }

    fn start_fetch(&mut self, worker: &WorkerContext) {
        let free = self.config.concurrency.saturating_sub(worker.task_count() + self.buffer.len());
        let max = free.clamp(1, FETCH_BATCH_MAX);
        let queue = self.queue.clone();
        let consumer = self.consumer(worker);
        let block_ms = self.config.block_ms.min(BLOCK_MS_MAX);
        self.fetch_started = Some(Instant::now());
        *self.fetch.get() =
            Some(Box::pin(async move { queue.fetch(&consumer, max, block_ms).await }));
    }
}

async fn settle<Q: WakeQueue>(queue: Q, batch: Vec<Outcome>) -> Vec<Outcome> {
    let mut acks = Vec::new();
    let mut retries = Vec::new();
    for outcome in batch {
        match outcome {
            Outcome::Ack(delivery) => acks.push(delivery),
            Outcome::Retry(delivery, delay_ms) => retries.push((delivery, delay_ms)),
        }
    }
    let mut unsettled = Vec::new();
    if !acks.is_empty()
        && let Err(error) = queue.ack(&acks).await
    {
        tracing::warn!(%error, count = acks.len(), "Cannot acknowledge wake-ups; retrying.");
        unsettled.extend(acks.into_iter().map(Outcome::Ack));
    }
    for (delivery, delay_ms) in retries {
        match queue.retry_later(&delivery, delay_ms).await {
            Ok(Retried::Scheduled { tries, .. }) => tracing::debug!(
                notification_id = %delivery.wake.id,
                tries,
                delay_ms,
                "Wake-up scheduled again after a failure."
            ),
            Ok(Retried::Parked | Retried::AlreadySettled) => {}
            Err(error) => {
                tracing::warn!(%error, notification_id = %delivery.wake.id, "Cannot reschedule a failed wake-up; retrying.");
                unsettled.push(Outcome::Retry(delivery, delay_ms));
            }
        }
    }
    unsettled
}

impl<Q: WakeQueue> Backend for WakeBackend<Q> {
    type Task = Task<Wake>;
    /// Never returned: apalis stops a worker on any backend error, so errors are logged and
    /// retried here instead.
    type Error = StoreError;

    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        // Called on every turn of the worker loop, also while all slots are busy: the place to
        // keep maintenance and settlement moving.
        self.drive_maintenance(cx, worker);
        self.drive_settle(cx);
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        self.drive_maintenance(cx, worker);
        self.drive_settle(cx);
        loop {
            if let Some(delivery) = self.buffer.pop_front() {
                return Poll::Ready(Some(Ok(self.task(delivery))));
            }
            if let Some(fetch) = self.fetch.get().as_mut() {
                let Poll::Ready(result) = fetch.poll_unpin(cx) else { return Poll::Pending };
                *self.fetch.get() = None;
                let started = self.fetch_started.take();
                match result {
                    Ok(deliveries) => {
                        self.fetch_errors = 0;
                        // An empty answer long before the block time: the queue does not block
                        // (memory), so do not spin.
                        let quick = started.is_some_and(|s| {
                            s.elapsed() < Duration::from_millis(self.config.block_ms / 2)
                        });
                        if deliveries.is_empty() && quick {
                            self.fetch_pause =
                                Some(sleep(Duration::from_millis(self.config.idle_poll_ms)));
                        }
                        self.buffer.extend(deliveries);
                    }
                    Err(error) => {
                        self.fetch_errors = self.fetch_errors.saturating_add(1);
                        tracing::warn!(%error, errors = self.fetch_errors, "Wake queue fetch failed; retrying.");
                        self.fetch_pause = Some(sleep(backoff(self.fetch_errors)));
                    }
                }
                continue;
            }
            if let Some(pause) = self.fetch_pause.as_mut() {
                if pause.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.fetch_pause = None;
            }
            self.start_fetch(worker);
        }
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        // What an in-flight fetch or reclaim returns is already ours: wait for it (a blocked read
        // returns within `block_ms`) so it can be released, not left pending.
        if let Some(fetch) = self.fetch.get().as_mut() {
            let Poll::Ready(result) = fetch.poll_unpin(cx) else { return Poll::Pending };
            *self.fetch.get() = None;
            match result {
                Ok(deliveries) => self.buffer.extend(deliveries),
                Err(error) => tracing::warn!(%error, "Wake queue fetch failed during shutdown."),
            }
        }
        if let Some(round) = self.maintenance.get().as_mut() {
            let Poll::Ready(result) = round.poll_unpin(cx) else { return Poll::Pending };
            *self.maintenance.get() = None;
            match result {
                Ok(done) => self.buffer.extend(done.reclaimed),
                Err(error) => {
                    tracing::warn!(%error, "Wake queue maintenance failed during shutdown.")
                }
            }
        }
        // Settle every finished handler, a few tries at most.
        loop {
            if self.settle.get().is_some() || self.settle_pause.is_some() {
                self.drive_settle(cx);
                if self.settle.get().is_some() || self.settle_pause.is_some() {
                    return Poll::Pending;
                }
            }
            let left = self.outcomes.lock().unwrap_or_else(PoisonError::into_inner).len();
            if left == 0 {
                break;
            }
            if self.settle_errors >= CLOSE_SETTLE_TRIES_MAX {
                tracing::warn!(
                    count = left,
                    "Could not settle finished wake-ups before shutdown; they will be re-delivered after the reclaim time."
                );
                self.outcomes.lock().unwrap_or_else(PoisonError::into_inner).clear();
                break;
            }
            self.drive_settle(cx);
        }
        // Hand back what was fetched but never started.
        if self.release.get().is_none() && !self.buffer.is_empty() {
            let queue = self.queue.clone();
            let deliveries: Vec<Delivery> = self.buffer.drain(..).collect();
            *self.release.get() = Some(Box::pin(async move {
                if let Err(error) = queue.release(&deliveries).await {
                    tracing::warn!(
                        %error,
                        count = deliveries.len(),
                        "Could not release unstarted wake-ups; they will be re-delivered after the reclaim time."
                    );
                }
            }));
        }
        if let Some(release) = self.release.get().as_mut() {
            if release.poll_unpin(cx).is_pending() {
                return Poll::Pending;
            }
            *self.release.get() = None;
        }
        Poll::Ready(Ok(()))
    }
}

impl<Q: WakeQueue> BackendConfig for WakeBackend<Q> {
    type Args = Wake;
    type Id = String;
    /// "Ephemeral" in apalis's sense only: tasks come out decoded, no codec step. Durability is
    /// the queue's.
    type Kind = Ephemeral;
    type Config = WakeBackendConfig;
    type Layer = WakeAckLayer;

    fn config(&self) -> &Self::Config {
        &self.config
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> Self::Layer {
        WakeAckLayer {
            outcomes: Arc::clone(&self.outcomes),
            retry_base_ms: self.config.retry_base_ms,
            retry_max_ms: self.config.retry_max_ms,
        }
    }
}

/// The backend's layer: records each handler's result for the backend to settle (`Ok` acks,
/// `Err` retries later with backoff). It sits outside the user's middleware, so it sees the
/// final result of a run.
#[derive(Clone)]
pub struct WakeAckLayer {
    /// Where results go.
    outcomes: Outcomes,
    /// The first retry delay.
    retry_base_ms: u64,
    /// The longest retry delay.
    retry_max_ms: u64,
}

impl std::fmt::Debug for WakeAckLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakeAckLayer")
            .field("retry_base_ms", &self.retry_base_ms)
            .field("retry_max_ms", &self.retry_max_ms)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for WakeAckLayer {
    type Service = WakeAck<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WakeAck { inner, layer: self.clone() }
    }
}

/// The service of [`WakeAckLayer`].
#[derive(Debug, Clone)]
pub struct WakeAck<S> {
    /// The wrapped service.
    inner: S,
    /// The layer's settings and outcome queue.
    layer: WakeAckLayer,
}

impl<S> Service<Task<Wake>> for WakeAck<S>
where
    S: Service<Task<Wake>>,
    S::Error: std::fmt::Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = WakeAckFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, task: Task<Wake>) -> Self::Future {
        let delivery = task.data().get::<Delivery>().cloned();
        WakeAckFuture {
            inner: Box::pin(self.inner.call(task)),
            delivery,
            layer: self.layer.clone(),
        }
    }
}

/// The future of [`WakeAck`]: the run, then its outcome recorded.
pub struct WakeAckFuture<F> {
    /// The run.
    inner: Pin<Box<F>>,
    /// The delivery it settles (taken when the run finishes).
    delivery: Option<Delivery>,
    /// Where the outcome goes.
    layer: WakeAckLayer,
}

impl<F> std::fmt::Debug for WakeAckFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakeAckFuture").field("delivery", &self.delivery).finish_non_exhaustive()
    }
}

impl<F, T, E> Future for WakeAckFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    type Output = Result<T, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = std::task::ready!(self.inner.as_mut().poll(cx));
        if let Some(delivery) = self.delivery.take() {
            let outcome = match &result {
                Ok(_) => Outcome::Ack(delivery),
                Err(error) => {
                    let delay_ms = retry_delay_ms(
                        delivery.tries,
                        self.layer.retry_base_ms,
                        self.layer.retry_max_ms,
                    );
                    tracing::warn!(
                        %error,
                        notification_id = %delivery.wake.id,
                        tries = delivery.tries,
                        delay_ms,
                        "Wake-up failed; retrying later."
                    );
                    Outcome::Retry(delivery, delay_ms)
                }
            };
            push_outcome(&self.layer.outcomes, outcome);
        }
        Poll::Ready(result)
    }
}
