//! Per-provider circuit breakers (failsafe): a provider that keeps failing is left alone for a
//! while, so a notification fails over or waits at once instead of waiting on a dead provider,
//! and the provider is not hammered while it recovers.
//!
//! [`Breaker`] wraps any [`Provider`]. While its breaker is open, `send` answers
//! [`ErrorClass::CircuitOpen`] without calling the provider (nothing sent, no attempt used).
//! Half-open lets exactly one probe through at a time (failsafe alone admits every caller).
//! Failures that say the provider is unwell (5xx, timeouts, 429, broken credentials) count
//! against it; answers about the recipient (bad number, dead token) do not.
//!
//! The breaker state is per process (each worker process learns for itself) and visible through
//! the [`Registry`]: with its calls, failures and the failure rate of the latest
//! [`RECENT_CALLS`]. Each worker process reports it with its heartbeat, and the API serves every
//! live worker's. failsafe reads its own clock, which the simulator
//! freezes and advances with virtual time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use failsafe::backoff::{self, Constant};
use failsafe::failure_policy::{self, ConsecutiveFailures};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use steps::model::{Channel, ProviderName};
use steps::outcome::{ErrorClass, ProviderError, SendOutcome};
use workflows::ports::{Clock, Delivery, Outbound, Provider, SendHints};

/// The clock skew courant tolerates between hosts, ms (`storage::keys::CLOCK_SKEW_MS_MAX`; the
/// providers crate does not depend on storage).
const CLOCK_SKEW_MS_MAX: u64 = 1_000;

/// When a breaker opens, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker. 5: one bad answer in a healthy stream does
    /// not trip it, a dead provider trips it within a handful of calls.
    pub consecutive_failures: u32,
    /// How long it stays open before letting one probe through, in ms (whole seconds: failsafe's
    /// resolution). Constant, so a refused send knows exactly when to come back; 10 s keeps a
    /// dead provider probed six times a minute.
    pub open_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { consecutive_failures: 5, open_ms: 10_000 }
    }
}

impl BreakerConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        if self.consecutive_failures == 0 || self.consecutive_failures > 1_000 {
            return Err("consecutive_failures must be between 1 and 1000".into());
        }
        if !(1_000..=600_000).contains(&self.open_ms) || !self.open_ms.is_multiple_of(1_000) {
            return Err("open_ms must be whole seconds between 1000 and 600000".into());
        }
        Ok(())
    }
}

/// A breaker's state as operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused.
    Open,
    /// One probe at a time goes through.
    HalfOpen,
}

/// How many of a provider's latest calls a breaker's failure rate is taken over.
pub const RECENT_CALLS: u32 = 100;

/// Whether each of a provider's latest calls (at most [`RECENT_CALLS`]) failed: a bit each, the
/// newest lowest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecentCalls {
    failed: u128,
    len: u32,
}

impl RecentCalls {
    /// Records a call.
    pub fn push(&mut self, failed: bool) {
        self.failed = (self.failed << 1) | u128::from(failed);
        self.len = (self.len + 1).min(RECENT_CALLS);
    }

    /// How many calls are counted (at most [`RECENT_CALLS`]).
    pub fn calls(&self) -> u32 {
        self.len
    }

    /// How many of them failed.
    pub fn failures(&self) -> u32 {
        let kept = if self.len >= u128::BITS { u128::MAX } else { (1_u128 << self.len) - 1 };
        (self.failed & kept).count_ones()
    }
}

/// One breaker's view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BreakerView {
    /// The provider.
    pub provider: ProviderName,
    /// Its channel.
    pub channel: Channel,
    /// The state.
    pub state: BreakerState,
    /// Since when, ms since the Unix epoch.
    pub since_ms: u64,
    /// Calls refused while open, since the process started.
    pub rejected: u64,
    /// Times it opened, since the process started.
    pub opened: u64,
    /// Calls that reached the provider, since the process started.
    pub calls: u64,
    /// Of those, the ones that said the provider is unwell (what the breaker counts).
    pub failures: u64,
    /// Failures in a row, up to the latest call (the breaker opens at its threshold).
    pub consecutive_failures: u32,
    /// The latest calls, for the failure rate.
    #[serde(skip)]
    pub recent: RecentCalls,
}

impl BreakerView {
    /// Records a call that reached the provider.
    fn record(&mut self, failed: bool) {
        self.calls += 1;
        self.failures += u64::from(failed);
        self.consecutive_failures = if failed { self.consecutive_failures + 1 } else { 0 };
        self.recent.push(failed);
    }
}

/// The breakers of a process, by provider.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    views: Arc<Mutex<BTreeMap<ProviderName, BreakerView>>>,
}

impl Registry {
    /// Every breaker's view, by provider name.
    pub fn views(&self) -> Vec<BreakerView> {
        self.views.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect()
    }

    fn update(&self, provider: &ProviderName, change: impl FnOnce(&mut BreakerView)) {
        let mut views = self.views.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(view) = views.get_mut(provider) {
            change(view);
        }
    }
}

/// Mirrors failsafe's transitions into the registry.
#[derive(Clone)]
struct Recorder {
    provider: ProviderName,
    registry: Registry,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").field("provider", &self.provider).finish_non_exhaustive()
    }
}

impl Recorder {
    fn set(&self, state: BreakerState) {
        let now = self.clock.now_ms();
        self.registry.update(&self.provider, |view| {
            if state == BreakerState::Open {
                view.opened += 1;
            }
            view.state = state;
            view.since_ms = now;
        });
    }
}

impl failsafe::Instrument for Recorder {
    fn on_call_rejected(&self) {
        self.registry.update(&self.provider, |view| view.rejected += 1);
    }

    fn on_open(&self) {
        tracing::warn!(provider = %self.provider, "Circuit breaker opened.");
        self.set(BreakerState::Open);
    }

    fn on_half_open(&self) {
        self.set(BreakerState::HalfOpen);
    }

    fn on_closed(&self) {
        tracing::info!(provider = %self.provider, "Circuit breaker closed.");
        self.set(BreakerState::Closed);
    }
}

type Machine = failsafe::StateMachine<ConsecutiveFailures<Constant>, Recorder>;

/// A provider behind a circuit breaker.
pub struct Breaker {
    inner: Arc<dyn Provider>,
    machine: Machine,
    /// Set while the half-open probe is in flight, so only one goes through.
    probing: AtomicBool,
    registry: Registry,
    clock: Arc<dyn Clock>,
    open_ms: u64,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker").field("inner", &self.inner).finish_non_exhaustive()
    }
}

/// Clears the half-open probe flag when the probe ends, however it ends.
struct ProbeGuard<'a>(&'a AtomicBool);

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Whether an outcome says the provider itself is unwell.
fn unhealthy(outcome: &SendOutcome) -> bool {
    match outcome {
        SendOutcome::Accepted { .. } => false,
        SendOutcome::Failed(error) => match error.class {
            ErrorClass::Retryable { .. }
            | ErrorClass::RateLimited { .. }
            | ErrorClass::Unknown
            | ErrorClass::ProviderConfig => true,
            ErrorClass::TokenInvalid
            | ErrorClass::PermanentRecipient
            | ErrorClass::CircuitOpen { .. } => false,
        },
    }
}

impl Breaker {
    /// Wraps `inner`, registering its breaker in `registry`; `clock` stamps state changes.
    pub fn new(
        inner: Arc<dyn Provider>,
        config: BreakerConfig,
        registry: Registry,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let recorder = Recorder {
            provider: inner.name().clone(),
            registry: registry.clone(),
            clock: clock.clone(),
        };
        registry.views.lock().unwrap_or_else(PoisonError::into_inner).insert(
            inner.name().clone(),
            BreakerView {
                provider: inner.name().clone(),
                channel: inner.channel(),
                state: BreakerState::Closed,
                since_ms: clock.now_ms(),
                rejected: 0,
                opened: 0,
                calls: 0,
                failures: 0,
                consecutive_failures: 0,
                recent: RecentCalls::default(),
            },
        );
        let policy = failure_policy::consecutive_failures(
            config.consecutive_failures,
            backoff::constant(Duration::from_millis(config.open_ms)),
        );
        let machine = failsafe::Config::new().failure_policy(policy).instrument(recorder).build();
        Self {
            inner,
            machine,
            probing: AtomicBool::new(false),
            registry,
            clock,
            open_ms: config.open_ms,
        }
    }

    fn view(&self) -> Option<BreakerView> {
        self.registry
            .views
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(self.inner.name())
            .cloned()
    }

    fn state(&self) -> BreakerState {
        self.view().map_or(BreakerState::Closed, |v| v.state)
    }

    fn refuse(&self) -> SendOutcome {
        // Come back when the breaker lets its next probe through, and never sooner than twice
        // the clock skew courant tolerates between hosts, so a deferral written with one
        // host's clock cannot come due at once on another's.
        let floor_ms = 2 * CLOCK_SKEW_MS_MAX;
        let retry_after_ms = match self.view() {
            Some(v) if v.state == BreakerState::Open => {
                (v.since_ms + self.open_ms).saturating_sub(self.clock.now_ms()).max(floor_ms)
            }
            _ => floor_ms,
        };
        SendOutcome::Failed(ProviderError::new(
            ErrorClass::CircuitOpen { retry_after_ms: Some(retry_after_ms) },
            None,
            None,
            &format!("the circuit breaker of {} is open", self.inner.name()),
        ))
    }
}

impl Provider for Breaker {
    fn name(&self) -> &ProviderName {
        self.inner.name()
    }

    fn channel(&self) -> Channel {
        self.inner.channel()
    }

    fn send<'a>(&'a self, message: &'a Outbound) -> BoxFuture<'a, SendOutcome> {
        Box::pin(async move { self.deliver(message, &SendHints::default()).await.outcome })
    }

    fn deliver<'a>(
        &'a self,
        message: &'a Outbound,
        hints: &'a SendHints,
    ) -> BoxFuture<'a, Delivery> {
        let refused = |outcome| Delivery { outcome, devices: Vec::new() };
        Box::pin(async move {
            if !self.machine.is_call_permitted() {
                return refused(self.refuse());
            }
            let probe = self.state() == BreakerState::HalfOpen;
            if probe && self.probing.swap(true, Ordering::AcqRel) {
                // Another call is the probe; this one waits like any refused call.
                self.registry.update(self.inner.name(), |view| view.rejected += 1);
                return refused(self.refuse());
            }
            // Released however the call ends, even if its future is dropped mid-flight (a
            // timeout, a crash): a probe that never came back must not wedge the breaker.
            let _probe = probe.then(|| ProbeGuard(&self.probing));
            let delivery = self.inner.deliver(message, hints).await;
            let failed = unhealthy(&delivery.outcome);
            if failed {
                self.machine.on_error();
            } else {
                self.machine.on_success();
            }
            self.registry.update(self.inner.name(), |view| view.record(failed));
            delivery
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::atomic::AtomicU64;

    use futures::executor::block_on;
    use steps::model::*;
    use steps::render::Content;

    use super::*;

    #[derive(Debug)]
    struct Scripted {
        name: ProviderName,
        answers: Mutex<VecDeque<SendOutcome>>,
        calls: AtomicU64,
    }

    impl Provider for Scripted {
        fn name(&self) -> &ProviderName {
            &self.name
        }
        fn channel(&self) -> Channel {
            Channel::Sms
        }
        fn send<'a>(&'a self, _: &'a Outbound) -> BoxFuture<'a, SendOutcome> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let answer = self.answers.lock().unwrap().pop_front().unwrap_or(ok());
            Box::pin(async move { answer })
        }
    }

    #[derive(Debug)]
    struct Fixed;
    impl Clock for Fixed {
        fn now_ms(&self) -> u64 {
            1_000
        }
    }

    fn ok() -> SendOutcome {
        SendOutcome::Accepted { provider_message_id: None, delivered: false }
    }

    fn fail(class: ErrorClass) -> SendOutcome {
        SendOutcome::Failed(ProviderError::new(class, Some(503), None, "down"))
    }

    fn message() -> Outbound {
        Outbound {
            tenant: TenantId::new("t").unwrap(),
            notification_id: NotificationId::new("n1").unwrap(),
            attempt: Attempt(1),
            idempotency_key: "n1:sms:twilio".into(),
            recipient: Recipient {
                id: RecipientId::new("r").unwrap(),
                email: None,
                phone: None,
                opt_out: vec![],
            },
            category: Category::new("otp").unwrap(),
            content: Content::Sms { body: "hi".into() },
            devices: vec![],
        }
    }

    fn breaker(answers: Vec<SendOutcome>) -> (Breaker, Arc<Scripted>, Registry) {
        let inner = Arc::new(Scripted {
            name: ProviderName::new("twilio").unwrap(),
            answers: Mutex::new(answers.into()),
            calls: AtomicU64::new(0),
        });
        let registry = Registry::default();
        let config = BreakerConfig { consecutive_failures: 3, open_ms: 5_000 };
        let provider: Arc<dyn Provider> = inner.clone();
        (Breaker::new(provider, config, registry.clone(), Arc::new(Fixed)), inner, registry)
    }

    fn class(outcome: &SendOutcome) -> Option<ErrorClass> {
        match outcome {
            SendOutcome::Failed(e) => Some(e.class),
            SendOutcome::Accepted { .. } => None,
        }
    }

    #[test]
    fn opens_after_consecutive_failures_refuses_then_probes_and_closes() {
        failsafe::clock::freeze(|clock| {
            let (b, inner, registry) = breaker(vec![fail(ErrorClass::RETRYABLE); 3]);
            for _ in 0..3 {
                assert_eq!(class(&block_on(b.send(&message()))), Some(ErrorClass::RETRYABLE));
            }
            assert_eq!(registry.views()[0].state, BreakerState::Open);
            // Open: refused at once, the provider never called.
            let refused = block_on(b.send(&message()));
            assert!(matches!(
                class(&refused),
                Some(ErrorClass::CircuitOpen { retry_after_ms: Some(5_000) })
            ));
            assert_eq!(inner.calls.load(Ordering::SeqCst), 3);
            assert_eq!(registry.views()[0].rejected, 1);
            // After the open period a probe goes through; its success closes the breaker.
            clock.advance(Duration::from_secs(6));
            assert_eq!(class(&block_on(b.send(&message()))), None);
            assert_eq!(inner.calls.load(Ordering::SeqCst), 4);
            assert_eq!(registry.views()[0].state, BreakerState::Closed);
            assert_eq!(registry.views()[0].opened, 1);
            // The calls that reached the provider: three failures, then a success.
            let view = registry.views()[0].clone();
            assert_eq!((view.calls, view.failures, view.consecutive_failures), (4, 3, 0));
            assert_eq!((view.recent.calls(), view.recent.failures()), (4, 3));
        });
    }

    #[test]
    fn the_failure_rate_is_over_the_latest_hundred_calls() {
        let mut recent = RecentCalls::default();
        assert_eq!((recent.calls(), recent.failures()), (0, 0));
        for _ in 0..150 {
            recent.push(true);
        }
        assert_eq!((recent.calls(), recent.failures()), (RECENT_CALLS, RECENT_CALLS));
        for _ in 0..60 {
            recent.push(false);
        }
        assert_eq!((recent.calls(), recent.failures()), (100, 40));
        for _ in 0..100 {
            recent.push(false);
        }
        assert_eq!(recent.failures(), 0);
    }

    /// Fails three times, hangs on the fourth call, then succeeds.
    #[derive(Debug)]
    struct HangsOnce {
        name: ProviderName,
        calls: AtomicU64,
    }

    impl Provider for HangsOnce {
        fn name(&self) -> &ProviderName {
            &self.name
        }
        fn channel(&self) -> Channel {
            Channel::Sms
        }
        fn send<'a>(&'a self, _: &'a Outbound) -> BoxFuture<'a, SendOutcome> {
            match self.calls.fetch_add(1, Ordering::SeqCst) {
                0..=2 => Box::pin(async { fail(ErrorClass::RETRYABLE) }),
                3 => Box::pin(futures::future::pending()),
                _ => Box::pin(async { ok() }),
            }
        }
    }

    #[test]
    fn a_probe_dropped_mid_flight_does_not_wedge_the_breaker() {
        failsafe::clock::freeze(|clock| {
            let inner: Arc<dyn Provider> = Arc::new(HangsOnce {
                name: ProviderName::new("twilio").unwrap(),
                calls: AtomicU64::new(0),
            });
            let registry = Registry::default();
            let config = BreakerConfig { consecutive_failures: 3, open_ms: 5_000 };
            let b = Breaker::new(inner, config, registry.clone(), Arc::new(Fixed));
            let message = message();
            for _ in 0..3 {
                block_on(b.send(&message));
            }
            clock.advance(Duration::from_secs(6));
            // The probe starts and is dropped before it answers (its worker died).
            let mut probe = b.send(&message);
            let mut context = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(probe.as_mut().poll(&mut context).is_pending());
            drop(probe);
            assert_eq!(registry.views()[0].state, BreakerState::HalfOpen);
            // The next call may probe, and its success closes the breaker.
            assert_eq!(class(&block_on(b.send(&message))), None);
            assert_eq!(registry.views()[0].state, BreakerState::Closed);
        });
    }

    #[test]
    fn recipient_errors_do_not_count_against_the_provider() {
        failsafe::clock::freeze(|_| {
            let (b, _, registry) = breaker(vec![fail(ErrorClass::PermanentRecipient); 10]);
            for _ in 0..10 {
                block_on(b.send(&message()));
            }
            assert_eq!(registry.views()[0].state, BreakerState::Closed);
        });
    }
}
