//! `GET /metrics`: Prometheus metrics, in the text exposition format.
//!
//! Counters come from the lifecycle as it happens: [`Metrics`] is the runner's
//! [`Observer`](workflows::ports::Observer), told of every committed transition, and it counts
//! each one by the same classification `explain` uses (`workflows::explain::finding`), so a
//! dashboard and `courant explain` never disagree about what a decision was. Gauges are read
//! when scraped: the queue and dead-letter counts from the store (every process sees the same
//! shared queue), the circuit breakers from this process's registry.
//!
//! Labels are channels, providers, categories, states and reasons: never a tenant, a recipient,
//! an address or an id, so the series stay few and carry no personal data.
//!
//! Every process counts what it did itself (its API's intake, its workers' sends): sum the
//! counters over processes; the queue gauges are the same from every process (take one).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use steps::model::{Channel, ProviderName};
use storage::queue::QueueStats;
use workflows::explain::{FindingKind, finding};
use workflows::machine::{State as Lifecycle, StateKind};
use workflows::ports::Observer;
use workflows::record::{Cause, HistoryEntry, Record};

/// Reads the shared queue's counts (the store's `WakeQueue::stats`).
pub type QueueProbe =
    Arc<dyn Fn() -> BoxFuture<'static, Result<QueueReading, String>> + Send + Sync>;

/// What a scrape reads from the shared queue and the worker registry.
#[derive(Debug, Clone, Default)]
pub struct QueueReading {
    /// The queue's counts.
    pub stats: QueueStats,
    /// How long the oldest ready or due wake-up has been waiting, ms.
    pub lag_ms: u64,
    /// Worker processes whose heartbeat is fresh.
    pub workers_alive: u64,
}

/// The content type of the Prometheus text format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Intake {
    channel: String,
    category: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByChannel {
    channel: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Decision {
    channel: String,
    decision: String,
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SendLabel {
    channel: String,
    provider: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByProvider {
    channel: String,
    provider: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Receipt {
    provider: String,
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Breaker {
    provider: String,
    channel: String,
}

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    accepted: Family<Intake, Counter>,
    deduplicated: Family<ByChannel, Counter>,
    decisions: Family<Decision, Counter>,
    sends: Family<SendLabel, Counter>,
    retries: Family<ByProvider, Counter>,
    fallbacks: Family<ByChannel, Counter>,
    receipts: Family<Receipt, Counter>,
    settled: Family<Decision, Counter>,
    handover_seconds: Family<ByChannel, Histogram>,
    delivery_seconds: Family<ByChannel, Histogram>,
    queue: Family<QueueLabel, Gauge>,
    queue_lag_seconds: Gauge<f64, AtomicU64>,
    workers_alive: Gauge,
    dead_letters: Gauge,
    breaker_state: Family<Breaker, Gauge>,
    breaker_opened: Family<Breaker, Counter>,
    breaker_rejected: Family<Breaker, Counter>,
    workers: Gauge,
    stats_dropped: Counter,
    /// Transitions the live feed's publisher dropped (`crate::events`).
    transition_events_dropped: Counter,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    state: String,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Latency buckets: 50 ms to 3.6 hours, each 4 times the last (a quiet-hours hold is hours long).
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 4.0, 10))
}

impl Metrics {
    /// The metrics of a process running `worker_slots` concurrent wake-ups (0: an API-only
    /// process).
    pub fn new(worker_slots: usize) -> Self {
        let mut registry = Registry::with_prefix("courant");
        let metrics = Self {
            accepted: Family::default(),
            deduplicated: Family::default(),
            decisions: Family::default(),
            sends: Family::default(),
            retries: Family::default(),
            fallbacks: Family::default(),
            receipts: Family::default(),
            settled: Family::default(),
            handover_seconds: Family::new_with_constructor(latency),
            delivery_seconds: Family::new_with_constructor(latency),
            queue: Family::default(),
            queue_lag_seconds: Gauge::default(),
            workers_alive: Gauge::default(),
            dead_letters: Gauge::default(),
            breaker_state: Family::default(),
            breaker_opened: Family::default(),
            breaker_rejected: Family::default(),
            workers: Gauge::default(),
            stats_dropped: Counter::default(),
            transition_events_dropped: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "notifications_accepted",
            "Notifications accepted (API submits and campaign expansion), by channel and category",
            metrics.accepted.clone(),
        );
        registry.register(
            "notifications_deduplicated",
            "Submissions answered with an earlier notification of the same event",
            metrics.deduplicated.clone(),
        );
        registry.register(
            "decisions",
            "Lifecycle decisions that held back or stopped a notification: decision is \
             suppressed (skipped; reason: opted_out, category_opted_out, unsubscribed, \
             not_opted_in, quiet_hours, no_address, rate_limited, capped, collapsed, expired) or \
             deferred (reason: quiet_hours, rate_limited, throttled, collapse_window, \
             retry_backoff, reconcile, waited)",
            metrics.decisions.clone(),
        );
        registry.register(
            "sends",
            "Provider calls by outcome: accepted, failed, unknown (the request may have gone out)",
            metrics.sends.clone(),
        );
        registry.register(
            "retries",
            "Retries scheduled after a failed attempt",
            metrics.retries.clone(),
        );
        registry.register(
            "fallbacks",
            "Channel fallbacks, by the channel that took over",
            metrics.fallbacks.clone(),
        );
        registry.register(
            "receipts_applied",
            "Delivery receipts that moved a notification, by provider and the state it moved to",
            metrics.receipts.clone(),
        );
        registry.register(
            "settled",
            "Notifications reaching a final state (decision: delivered, dead_lettered, skipped, \
             cancelled; reason: the skip reason, or empty)",
            metrics.settled.clone(),
        );
        registry.register(
            "handover_latency_seconds",
            "From acceptance to a provider taking the message",
            metrics.handover_seconds.clone(),
        );
        registry.register(
            "delivery_latency_seconds",
            "From acceptance to delivery (a receipt, or an inbox store)",
            metrics.delivery_seconds.clone(),
        );
        registry.register(
            "queue_wakeups",
            "Wake-ups in the shared queue: ready (due, not fetched), due (timers whose time has \
             come, not yet moved to ready), scheduled (timers still to come), in_flight (fetched, not settled), parked (poisoned), overdue (records past their \
             deadline: lag the reaper has not caught up with)",
            metrics.queue.clone(),
        );
        registry.register(
            "queue_lag_seconds",
            "How long the oldest ready or due wake-up has been waiting (0: none is)",
            metrics.queue_lag_seconds.clone(),
        );
        registry.register(
            "workers_alive",
            "Worker processes whose heartbeat is fresh (every process's view of the registry)",
            metrics.workers_alive.clone(),
        );
        registry.register(
            "dead_letters",
            "Notifications in the dead-letter queue, every tenant's",
            metrics.dead_letters.clone(),
        );
        registry.register(
            "breaker_state",
            "This process's circuit breaker per provider: 0 closed, 1 half-open, 2 open",
            metrics.breaker_state.clone(),
        );
        registry.register(
            "breaker_opened",
            "Times this process's breaker opened",
            metrics.breaker_opened.clone(),
        );
        registry.register(
            "breaker_rejected",
            "Sends this process's open breaker refused",
            metrics.breaker_rejected.clone(),
        );
        registry.register(
            "worker_slots",
            "Wake-ups this process handles at once (0: API only)",
            metrics.workers.clone(),
        );
        registry.register(
            "stats_dropped",
            "Counts for `courant stats` this process dropped because the store fell behind \
             (the stored statistics undercount by this much)",
            metrics.stats_dropped.clone(),
        );
        registry.register(
            "transition_events_dropped",
            "Transitions this process did not publish to the live feed (GET /v1/events, courant \
             tail): its buffer was full or the store refused them; the history still has them",
            metrics.transition_events_dropped.clone(),
        );
        metrics.workers.set(i64::try_from(worker_slots).unwrap_or(i64::MAX));
        Self { registry, ..metrics }
    }

    /// The counter of transitions the live feed's publisher dropped.
    pub fn transition_events_dropped(&self) -> Counter {
        self.transition_events_dropped.clone()
    }

    /// The counter of counts the stats recorder dropped (`crate::stats`).
    pub fn stats_dropped(&self) -> Counter {
        self.stats_dropped.clone()
    }

    /// Reads the gauges and renders everything in the text format.
    async fn render(&self, queue: &QueueProbe, breakers: &providers::breaker::Registry) -> String {
        match queue().await {
            Ok(QueueReading { stats, lag_ms, workers_alive }) => {
                // ms to seconds; a lag never nears 2^53 ms, so the conversion is exact.
                #[allow(clippy::cast_precision_loss)]
                self.queue_lag_seconds.set(lag_ms as f64 / 1_000.0);
                self.workers_alive.set(i64::try_from(workers_alive).unwrap_or(i64::MAX));
                let states = [
                    ("ready", stats.ready),
                    ("due", stats.due),
                    ("scheduled", stats.scheduled),
                    ("in_flight", stats.pending),
                    ("parked", stats.parked),
                    ("overdue", stats.overdue),
                ];
                for (state, n) in states {
                    let label = QueueLabel { state: state.into() };
                    self.queue.get_or_create(&label).set(i64::try_from(n).unwrap_or(i64::MAX));
                }
                self.dead_letters.set(i64::try_from(stats.dead_lettered).unwrap_or(i64::MAX));
            }
            // The store is down: the last values stay, and the error is logged once per scrape.
            Err(error) => tracing::warn!(%error, "Metrics: cannot read the queue counts."),
        }
        for view in breakers.views() {
            let label =
                Breaker { provider: view.provider.to_string(), channel: view.channel.to_string() };
            let state = match view.state {
                providers::breaker::BreakerState::Closed => 0,
                providers::breaker::BreakerState::HalfOpen => 1,
                providers::breaker::BreakerState::Open => 2,
            };
            self.breaker_state.get_or_create(&label).set(state);
            catch_up(&self.breaker_opened.get_or_create(&label), view.opened);
            catch_up(&self.breaker_rejected.get_or_create(&label), view.rejected);
        }
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(%error, "Metrics: cannot encode.");
        }
        text
    }

    fn decision(&self, channel: &str, decision: &str, reason: &str) {
        let label =
            Decision { channel: channel.into(), decision: decision.into(), reason: reason.into() };
        self.decisions.get_or_create(&label).inc();
    }

    fn settle(&self, channel: &str, state: StateKind, reason: &str) {
        let label = Decision {
            channel: channel.into(),
            decision: state.as_str().into(),
            reason: reason.into(),
        };
        self.settled.get_or_create(&label).inc();
    }
}

/// Brings a counter up to a cumulative count kept elsewhere (the breaker registry's).
fn catch_up(counter: &Counter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

/// The skip reason's name (`opted_out`, `quiet_hours`, ...), as the API and history name it.
fn skip_reason(state: &Lifecycle) -> String {
    match state {
        Lifecycle::Skipped { reason } => serde_json::to_value(reason)
            .ok()
            .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_owned))
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// A provider's answer to a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// The provider took it (sent, or delivered at once).
    Accepted,
    /// The call failed.
    Failed,
    /// No answer: the request may have gone out.
    Unknown,
}

impl SendOutcome {
    fn as_str(self) -> &'static str {
        match self {
            SendOutcome::Accepted => "accepted",
            SendOutcome::Failed => "failed",
            SendOutcome::Unknown => "unknown",
        }
    }
}

/// What a committed transition meant: the one classification (on top of the one `explain`
/// uses, `workflows::explain::finding`) that both the Prometheus counters ([`Metrics`]) and the
/// stored statistics (`crate::stats::StatsRecorder`) count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Happened<'a> {
    /// A provider answered a send.
    Send {
        /// The channel.
        channel: Channel,
        /// The provider.
        provider: &'a ProviderName,
        /// Its answer.
        outcome: SendOutcome,
    },
    /// A delivery receipt moved the notification to `state`.
    Receipt {
        /// The provider whose receipt it was.
        provider: &'a ProviderName,
        /// Where it moved the notification.
        state: StateKind,
    },
    /// Skipped, for `reason` (`opted_out`, `quiet_hours`, ...).
    Suppressed {
        /// The channel.
        channel: Channel,
        /// The skip reason.
        reason: String,
    },
    /// Held back until later, for `reason` (`quiet_hours`, `rate_limited`, `retry_backoff`, ...).
    Deferred {
        /// The channel.
        channel: Channel,
        /// The deferral reason.
        reason: &'static str,
    },
    /// A retry was scheduled on a provider after a failed attempt.
    Retry {
        /// The channel.
        channel: Channel,
        /// The provider retried.
        provider: &'a ProviderName,
    },
    /// Another channel took over.
    Fallback {
        /// The channel that took over.
        channel: Channel,
    },
    /// A provider took it, `ms` after acceptance.
    HandedOver {
        /// The channel.
        channel: Channel,
        /// Since acceptance.
        ms: u64,
    },
    /// Delivered, `ms` after acceptance.
    Delivered {
        /// The channel.
        channel: Channel,
        /// Since acceptance.
        ms: u64,
    },
    /// Reached a final state.
    Settled {
        /// The channel.
        channel: Channel,
        /// The provider of the final state, where it has one.
        provider: Option<&'a ProviderName>,
        /// The final state.
        state: StateKind,
        /// The skip reason, or empty.
        reason: String,
    },
}

/// Tells `each` what each of `entries` (committed for `record`, as it was before the commit)
/// meant, in order, with the entry it came from.
pub fn classify<'a>(
    record: &'a Record,
    entries: &'a [HistoryEntry],
    mut each_of: impl FnMut(&'a HistoryEntry, Happened<'a>),
) {
    let mut previous = Some(&record.state);
    for entry in entries {
        let mut each = |happened| each_of(entry, happened);
        let channel = entry.to.channel().unwrap_or(record.request.channel);
        let since_accepted = entry.at_ms.saturating_sub(record.created_at_ms);
        if let (Some(StateKind::Sending), Cause::Provider { provider }) = (entry.from, &entry.cause)
        {
            let outcome = match entry.to.kind() {
                StateKind::Sent | StateKind::Delivered => SendOutcome::Accepted,
                StateKind::Unknown => SendOutcome::Unknown,
                _ => SendOutcome::Failed,
            };
            each(Happened::Send { channel, provider, outcome });
        }
        if let Cause::Receipt { provider } = &entry.cause {
            each(Happened::Receipt { provider, state: entry.to.kind() });
        }
        match finding(entry, previous).map(|f| f.kind) {
            Some(FindingKind::NotSent) => {
                each(Happened::Suppressed { channel, reason: skip_reason(&entry.to) });
            }
            Some(
                kind @ (FindingKind::QuietHours
                | FindingKind::RateLimited
                | FindingKind::Throttled
                | FindingKind::CollapseWindow
                | FindingKind::RetryBackoff
                | FindingKind::Reconcile
                | FindingKind::Waited),
            ) => {
                each(Happened::Deferred { channel, reason: kind.as_str() });
                if kind == FindingKind::RetryBackoff
                    && let Some(provider) = entry.to.provider()
                {
                    each(Happened::Retry { channel, provider });
                }
            }
            Some(FindingKind::Fallback) => each(Happened::Fallback { channel }),
            Some(FindingKind::Sent) => {
                each(Happened::HandedOver { channel, ms: since_accepted });
            }
            Some(FindingKind::Delivered) => {
                // Accepted as delivered (the inbox) is a hand-over too.
                if entry.from == Some(StateKind::Sending) {
                    each(Happened::HandedOver { channel, ms: since_accepted });
                }
                each(Happened::Delivered { channel, ms: since_accepted });
            }
            _ => {}
        }
        let to = entry.to.kind();
        if to.is_terminal() && entry.from.is_none_or(|from| from != to) {
            let (provider, reason) = (entry.to.provider(), skip_reason(&entry.to));
            each(Happened::Settled { channel, provider, state: to, reason });
        }
        previous = Some(&entry.to);
    }
}

/// Seconds, for the latency histograms.
fn seconds(ms: u64) -> f64 {
    ms as f64 / 1_000.0
}

impl Observer for Metrics {
    fn created(&self, record: &Record, _entry: &HistoryEntry) {
        let request = &record.request;
        let label =
            Intake { channel: request.channel.to_string(), category: request.category.to_string() };
        self.accepted.get_or_create(&label).inc();
    }

    fn deduplicated(&self, record: &Record) {
        let label = ByChannel { channel: record.request.channel.to_string() };
        self.deduplicated.get_or_create(&label).inc();
    }

    fn committed(&self, record: &Record, entries: &[HistoryEntry]) {
        classify(record, entries, |_, happened| match happened {
            Happened::Send { channel, provider, outcome } => {
                let label = SendLabel {
                    channel: channel.to_string(),
                    provider: provider.to_string(),
                    outcome: outcome.as_str().into(),
                };
                self.sends.get_or_create(&label).inc();
            }
            Happened::Receipt { provider, state } => {
                let label = Receipt { provider: provider.to_string(), state: state.to_string() };
                self.receipts.get_or_create(&label).inc();
            }
            Happened::Suppressed { channel, reason } => {
                self.decision(channel.as_str(), "suppressed", &reason);
            }
            Happened::Deferred { channel, reason } => {
                self.decision(channel.as_str(), "deferred", reason);
            }
            Happened::Retry { channel, provider } => {
                let label =
                    ByProvider { channel: channel.to_string(), provider: provider.to_string() };
                self.retries.get_or_create(&label).inc();
            }
            Happened::Fallback { channel } => {
                self.fallbacks.get_or_create(&ByChannel { channel: channel.to_string() }).inc();
            }
            Happened::HandedOver { channel, ms } => {
                let label = ByChannel { channel: channel.to_string() };
                self.handover_seconds.get_or_create(&label).observe(seconds(ms));
            }
            Happened::Delivered { channel, ms } => {
                let label = ByChannel { channel: channel.to_string() };
                self.delivery_seconds.get_or_create(&label).observe(seconds(ms));
            }
            Happened::Settled { channel, state, reason, .. } => {
                self.settle(channel.as_str(), state, &reason);
            }
        });
    }
}

/// `GET /metrics`, with its own state beside the API's.
pub fn routes(
    metrics: Arc<Metrics>,
    queue: QueueProbe,
    breakers: providers::breaker::Registry,
) -> Router {
    Router::new().route("/metrics", get(scrape)).with_state(Scrape { metrics, queue, breakers })
}

#[derive(Clone)]
struct Scrape {
    metrics: Arc<Metrics>,
    queue: QueueProbe,
    breakers: providers::breaker::Registry,
}

async fn scrape(State(scrape): State<Scrape>) -> Response {
    let text = scrape.metrics.render(&scrape.queue, &scrape.breakers).await;
    (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}
