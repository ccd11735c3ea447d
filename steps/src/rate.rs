//! The rate decision: a per-recipient, per-channel sliding window.
//!
//! The counting itself must be atomic across workers, so it happens in the store (a Lua script on
//! Redis, a mutex in memory). Both follow [`SlidingWindow::admit`], the reference semantics the
//! conformance tests hold them to. This module turns the store's answer into a lifecycle decision.

use serde::{Deserialize, Serialize};

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

/// The store's answer to "may one more go out now?".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum RateCheck {
    /// Admitted; `count` sends are now in the window, this one included.
    Allowed {
        /// Sends in the window after this one.
        count: u32,
    },
    /// Refused; the window has room again at `retry_at_ms`.
    Limited {
        /// When the oldest entry leaves the window.
        retry_at_ms: u64,
    },
}

/// What the lifecycle does with the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// Go ahead.
    Allow,
    /// Wait until `until_ms`.
    Defer {
        /// When to try again.
        until_ms: u64,
    },
    /// Give up on the notification.
    Skip,
}

impl RateLimit {
    /// Turns the store's answer into a decision.
    pub fn decide(&self, check: RateCheck) -> RateDecision {
        match (check, self.over_limit) {
            (RateCheck::Allowed { .. }, _) => RateDecision::Allow,
            (RateCheck::Limited { retry_at_ms }, OverLimit::Defer) => {
                RateDecision::Defer { until_ms: retry_at_ms }
            }
            (RateCheck::Limited { .. }, OverLimit::Skip) => RateDecision::Skip,
        }
    }
}

/// The reference sliding window: the timestamps (ms) of admitted sends, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlidingWindow {
    /// Admission times still inside the window, oldest first.
    pub admitted_ms: Vec<u64>,
}

impl SlidingWindow {
    /// Drops entries older than the window, then admits one more at `now_ms` if there is room.
    /// An entry at exactly `now_ms - window_ms` has left the window.
    pub fn admit(&mut self, limit: &RateLimit, now_ms: u64) -> RateCheck {
        let floor = now_ms.saturating_sub(limit.window_ms);
        self.admitted_ms.retain(|&t| t > floor);
        if (self.admitted_ms.len() as u64) < u64::from(limit.max) {
            self.admitted_ms.push(now_ms);
            RateCheck::Allowed { count: self.admitted_ms.len() as u32 }
        } else {
            let oldest = self.admitted_ms.first().copied().unwrap_or(now_ms);
            RateCheck::Limited { retry_at_ms: oldest + limit.window_ms }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit { max: 2, window_ms: 1_000, over_limit: OverLimit::Defer };

    #[test]
    fn window_admits_max_then_defers_until_the_oldest_leaves() {
        let mut w = SlidingWindow::default();
        assert_eq!(w.admit(&LIMIT, 100), RateCheck::Allowed { count: 1 });
        assert_eq!(w.admit(&LIMIT, 200), RateCheck::Allowed { count: 2 });
        assert_eq!(w.admit(&LIMIT, 300), RateCheck::Limited { retry_at_ms: 1_100 });
        assert_eq!(w.admit(&LIMIT, 1_100), RateCheck::Allowed { count: 2 });
    }

    #[test]
    fn decision_follows_policy() {
        let limited = RateCheck::Limited { retry_at_ms: 5 };
        assert_eq!(LIMIT.decide(limited), RateDecision::Defer { until_ms: 5 });
        let skip = RateLimit { over_limit: OverLimit::Skip, ..LIMIT };
        assert_eq!(skip.decide(limited), RateDecision::Skip);
        assert_eq!(skip.decide(RateCheck::Allowed { count: 1 }), RateDecision::Allow);
    }
}
