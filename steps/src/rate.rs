//! Rates: the per-recipient, per-channel rate limit, the lifecycle's rate decision, and the
//! per-provider send pacer.
//!
//! The counting itself must be atomic across workers, so it happens in the store (a Lua script on
//! Redis, a mutex in memory). A recipient's windows (the channel's and the category caps) are
//! taken together, all or nothing, following [`crate::limits::admit`]; the pacer follows
//! [`Pacer::reserve`]. Those are the reference semantics the conformance tests hold the stores to.

use serde::{Deserialize, Serialize};

use crate::limits::Limit;

/// What happens to a notification over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverLimit {
    /// Wait until the window has room (the default: nothing is lost).
    Defer,
    /// Drop it with a recorded reason (for messages that are worthless late).
    Skip,
}

/// At most `max` notifications per `window_ms` for one recipient on one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Notifications allowed in a window.
    pub max: u32,
    /// The window, in milliseconds.
    pub window_ms: u64,
    /// What to do over the limit.
    pub over_limit: OverLimit,
}

/// What the lifecycle does about the recipient's limits (see [`crate::limits::decide`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateDecision {
    /// Go ahead: a slot is held in every window.
    Allow,
    /// Wait until `until_ms`, when every full window has room again.
    Defer {
        /// When to try again.
        until_ms: u64,
        /// The full window that has room last (recorded as the reason).
        limit: Limit,
    },
    /// Give up on the notification: a full window's policy says skip.
    Skip {
        /// That window.
        limit: Limit,
    },
}

/// A provider's send rate: at most `max` sends in any `window_ms`, paced evenly (one every
/// `window_ms / max`), across every worker. It is what keeps a backlog that built up during an
/// outage from hitting the provider all at once when it comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRate {
    /// Sends allowed in a window.
    pub max: u32,
    /// The window, in milliseconds.
    pub window_ms: u64,
}

impl SendRate {
    /// The spacing between two sends, in microseconds (at least 1), rounded up so that `max`
    /// intervals never fit in less than the window.
    pub fn interval_us(&self) -> u64 {
        self.window_ms.saturating_mul(1_000).div_ceil(u64::from(self.max.max(1))).max(1)
    }

    /// Whether the rate is usable: both numbers above zero, at most a million sends a second.
    pub fn is_valid(&self) -> bool {
        self.max > 0
            && self.window_ms > 0
            && self.window_ms.saturating_mul(1_000) >= u64::from(self.max)
    }
}

/// The store's answer to "when may this send go out?".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "slot")]
pub enum SendSlot {
    /// Now.
    Now,
    /// At `at_ms`: the slot is reserved for this send, so it goes out then without asking again.
    At {
        /// The reserved time, ms since the Unix epoch.
        at_ms: u64,
    },
    /// The first free slot, `at_ms`, is further away than the caller can wait; nothing reserved.
    TooLate {
        /// The first free slot.
        at_ms: u64,
    },
}

/// The reference send pacer: the earliest time the next send may go out.
///
/// Each caller gets the first free slot and moves it one interval on, so `n` sends span at least
/// `(n - 1)` intervals and no window of `window_ms` holds more than `max`. A caller that must
/// wait holds its slot: a backlog drains at exactly the rate, with no herd at each free slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pacer {
    /// The next free slot, in microseconds since the Unix epoch.
    pub next_us: u64,
}

impl Pacer {
    /// Reserves the first free slot at or after `now_ms`, unless it is more than `wait_ms_max`
    /// away.
    pub fn reserve(&mut self, rate: &SendRate, now_ms: u64, wait_ms_max: u64) -> SendSlot {
        let now_us = now_ms.saturating_mul(1_000);
        let at_us = self.next_us.max(now_us);
        let at_ms = at_us.div_ceil(1_000);
        if at_ms - now_ms > wait_ms_max {
            return SendSlot::TooLate { at_ms };
        }
        self.next_us = at_us.saturating_add(rate.interval_us());
        if at_us <= now_us { SendSlot::Now } else { SendSlot::At { at_ms } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_spaces_sends_evenly_and_reserves_slots() {
        // 4 per second: one every 250 ms.
        let rate = SendRate { max: 4, window_ms: 1_000 };
        let mut p = Pacer::default();
        assert_eq!(p.reserve(&rate, 1_000, 10_000), SendSlot::Now);
        assert_eq!(p.reserve(&rate, 1_000, 10_000), SendSlot::At { at_ms: 1_250 });
        assert_eq!(p.reserve(&rate, 1_010, 10_000), SendSlot::At { at_ms: 1_500 });
        // Too far for this caller: nothing reserved, the next one gets the same slot.
        assert_eq!(p.reserve(&rate, 1_010, 100), SendSlot::TooLate { at_ms: 1_750 });
        assert_eq!(p.reserve(&rate, 1_020, 10_000), SendSlot::At { at_ms: 1_750 });
        // After a pause, the next send goes now.
        assert_eq!(p.reserve(&rate, 5_000, 0), SendSlot::Now);
        assert!(!SendRate { max: 0, window_ms: 1 }.is_valid());
        assert!(!SendRate { max: 2_000, window_ms: 1 }.is_valid());
        assert!(SendRate { max: 1_000, window_ms: 1 }.is_valid());
    }

    proptest::proptest! {
        #[test]
        fn no_window_holds_more_than_max(
            max in 1u32..50,
            window_ms in 1u64..5_000,
            arrivals in proptest::collection::vec(0u64..20_000, 1..200),
        ) {
            let rate = SendRate { max, window_ms };
            proptest::prop_assume!(rate.is_valid());
            let mut arrivals = arrivals;
            arrivals.sort_unstable();
            let mut p = Pacer::default();
            let mut sent: Vec<u64> = arrivals
                .iter()
                .map(|&now| match p.reserve(&rate, now, u64::MAX) {
                    SendSlot::Now => now,
                    SendSlot::At { at_ms } | SendSlot::TooLate { at_ms } => at_ms,
                })
                .collect();
            sent.sort_unstable();
            for (i, &start) in sent.iter().enumerate() {
                let within = sent[i..].iter().take_while(|&&t| t < start + window_ms).count();
                proptest::prop_assert!(within <= max as usize, "{within} sends in {window_ms} ms");
            }
        }
    }
}
