//! The faults the simulator injects, and how a seed picks which are on (swarm testing: each seed
//! turns a different subset on, each with its own rate, so rare combinations get explored).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::rng::Rng;

/// One kind of injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The provider answers 500/503.
    ProviderServerError,
    /// 429 without a usable `Retry-After` (missing or malformed).
    RateLimitedNoRetryAfter,
    /// 429 with `Retry-After: 0`.
    RateLimitedRetryAfterZero,
    /// 429 with a large `Retry-After` (an hour).
    RateLimitedRetryAfterLarge,
    /// The call times out after the provider took the message (outcome unknown, it was sent).
    TimeoutAccepted,
    /// The call times out and the provider never took the message (outcome unknown, not sent).
    TimeoutNotAccepted,
    /// The answer comes late (possibly after the send lease).
    SlowResponse,
    /// The connection resets before the request was written (retryable, not sent).
    ResetBeforeWrite,
    /// The connection resets after the request was written (outcome unknown, maybe sent).
    ResetAfterWrite,
    /// The provider says the device token is dead.
    InvalidToken,
    /// The provider refuses our credentials (401): its configuration is broken, fail over.
    ProviderAuth,
    /// The provider fails most calls for a stretch of time.
    Brownout,
    /// The queue hands the same wake-up to two workers.
    DuplicateDelivery,
    /// The worker dies right after claiming a send (before calling the provider).
    CrashAfterClaim,
    /// The worker dies right after the provider took the message (before recording it).
    CrashAfterSend,
    /// The worker dies right after committing a result (before acking the wake-up).
    CrashAfterPersist,
    /// The worker dies after finishing a wake-up, before the ack reached the queue.
    CrashBeforeAck,
    /// A store call fails without doing anything.
    StoreError,
    /// A store call does its work but the answer is lost.
    StoreLostReply,
    /// A wake-up vanishes from the queue before any worker runs it (Redis lost its last second
    /// of writes, an operator deleted a stream): only the reaper wakes the notification again.
    LostWake,
    /// A receipt webhook arrives twice.
    ReceiptDuplicated,
    /// Receipts arrive out of order (long random delays).
    ReceiptReordered,
    /// A receipt arrives before the send's result was recorded.
    ReceiptEarly,
    /// A receipt never arrives.
    ReceiptLost,
    /// A worker's clock jumps (forwards or backwards).
    ClockStep,
    /// Workers' clocks disagree by a constant offset.
    ClockDrift,
    /// The application changes recipients' preferences (opt-outs and back, global unsubscribe,
    /// quiet hours) and phone numbers while their notifications are in flight.
    PreferenceChange,
    /// Many notifications for one recipient arrive at the same instant (a fan-out gone wrong, a
    /// retry storm): every worker takes their limit windows at once.
    Burst,
}

impl Fault {
    /// Every fault.
    pub const ALL: [Fault; 28] = [
        Fault::ProviderServerError,
        Fault::RateLimitedNoRetryAfter,
        Fault::RateLimitedRetryAfterZero,
        Fault::RateLimitedRetryAfterLarge,
        Fault::TimeoutAccepted,
        Fault::TimeoutNotAccepted,
        Fault::SlowResponse,
        Fault::ResetBeforeWrite,
        Fault::ResetAfterWrite,
        Fault::InvalidToken,
        Fault::ProviderAuth,
        Fault::Brownout,
        Fault::DuplicateDelivery,
        Fault::CrashAfterClaim,
        Fault::CrashAfterSend,
        Fault::CrashAfterPersist,
        Fault::CrashBeforeAck,
        Fault::StoreError,
        Fault::StoreLostReply,
        Fault::LostWake,
        Fault::ReceiptDuplicated,
        Fault::ReceiptReordered,
        Fault::ReceiptEarly,
        Fault::ReceiptLost,
        Fault::ClockStep,
        Fault::ClockDrift,
        Fault::PreferenceChange,
        Fault::Burst,
    ];

    /// The highest rate a swarm draws for the fault. Crashes and clock steps are rarer than
    /// provider errors, or a run would be nothing but recovery.
    fn rate_max(self) -> f64 {
        match self {
            Fault::CrashAfterClaim
            | Fault::CrashAfterSend
            | Fault::CrashAfterPersist
            | Fault::CrashBeforeAck
            | Fault::ClockStep
            | Fault::Burst => 0.02,
            Fault::StoreError | Fault::StoreLostReply | Fault::LostWake => 0.03,
            Fault::Brownout | Fault::ClockDrift => 1.0,
            _ => 0.15,
        }
    }
}

/// Which faults a run injects, and how often.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultSet {
    /// Rate per fault (a probability per opportunity); absent means off.
    pub rates: BTreeMap<Fault, f64>,
}

/// The named fault profiles of `courant simulate --faults`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// No faults at all.
    None,
    /// Swarm: each fault on with probability one half, at a rate drawn up to its maximum.
    Swarm,
    /// Every fault on, at half its maximum rate.
    All,
}

impl Profile {
    /// Parses a profile name.
    pub fn parse(s: &str) -> Option<Profile> {
        match s {
            "none" => Some(Profile::None),
            "swarm" => Some(Profile::Swarm),
            "all" => Some(Profile::All),
            _ => None,
        }
    }

    /// The profile's names, for messages.
    pub const NAMES: &'static str = "none, swarm, all";
}

impl FaultSet {
    /// No faults.
    pub fn none() -> FaultSet {
        FaultSet { rates: BTreeMap::new() }
    }

    /// The faults a seed turns on under `profile`.
    pub fn pick(profile: Profile, rng: &mut Rng) -> FaultSet {
        let mut rates = BTreeMap::new();
        for fault in Fault::ALL {
            match profile {
                Profile::None => {}
                Profile::All => {
                    rates.insert(fault, fault.rate_max() / 2.0);
                }
                Profile::Swarm => {
                    // Draw both numbers whether or not the fault is on, so turning one fault off
                    // does not shift every other fault's rate.
                    let on = rng.chance(0.5);
                    let rate = fault.rate_max() * (0.05 + 0.95 * rng.unit());
                    if on {
                        rates.insert(fault, rate);
                    }
                }
            }
        }
        FaultSet { rates }
    }

    /// The rate of a fault (0 when off).
    pub fn rate(&self, fault: Fault) -> f64 {
        self.rates.get(&fault).copied().unwrap_or(0.0)
    }

    /// Whether a fault is on.
    pub fn on(&self, fault: Fault) -> bool {
        self.rate(fault) > 0.0
    }
}
