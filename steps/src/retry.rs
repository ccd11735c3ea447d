//! Retry policy as data: how many attempts, how far apart, for how long a message stays worth
//! sending.
//!
//! Delays come from backon's exponential builder seeded per notification, so a replay (or the
//! simulator) computes the same schedule. Nothing here sleeps: the caller turns a delay into a
//! durable wake-up.

use std::time::Duration;

use backon::{BackoffBuilder, ConstantBuilder, ExponentialBuilder};
use serde::{Deserialize, Serialize};

use crate::model::Attempt;

/// How a channel (or a category on a channel) retries failed sends.
///
/// Delays grow exponentially from `delay_ms_base` by `factor` up to `delay_ms_max`, unless
/// `schedule_ms` lists them explicitly (`[60000, 300000, 900000, 3600000]` for 1 min, 5 min,
/// 15 min, then hourly); its last entry repeats for further retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. 1 means never retry.
    pub attempts_max: u32,
    /// The delay before the first retry, in milliseconds.
    pub delay_ms_base: u64,
    /// The growth factor between consecutive retries.
    pub factor: f32,
    /// The cap on a single delay, in milliseconds.
    pub delay_ms_max: u64,
    /// Whether to spread delays with seeded jitter (avoids a retry herd after an outage).
    pub jitter: bool,
    /// How long after acceptance the message stays worth sending, in milliseconds. A retry that
    /// would fall after it dead-letters instead.
    pub ttl_ms: u64,
    /// Explicit nominal delays, in milliseconds, one per retry; when set, `delay_ms_base` and
    /// `factor` are not used and every entry must lie within `1..=delay_ms_max`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedule_ms: Vec<u64>,
}

/// Why a policy is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// `attempts_max` is 0 or absurdly high.
    #[error("attempts_max must be between 1 and 100")]
    Attempts,
    /// The factor is below 1 or not finite.
    #[error("factor must be a finite number >= 1")]
    Factor,
    /// The delays are inconsistent.
    #[error("delay_ms_base must be >= 1 and <= delay_ms_max")]
    Delays,
    /// The TTL is zero.
    #[error("ttl_ms must be > 0")]
    Ttl,
    /// The explicit schedule is too long or has a delay outside `1..=delay_ms_max`.
    #[error("schedule_ms must hold at most 100 delays, each between 1 and delay_ms_max")]
    Schedule,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Retry at `at_ms` (absolute, ms since the Unix epoch).
    RetryAt {
        /// When the next attempt may run.
        at_ms: u64,
        /// The delay that was chosen, before `Retry-After` was applied.
        delay_ms: u64,
    },
    /// Every attempt is used.
    Exhausted,
    /// The next attempt would land after the message's time budget.
    Expired,
}

impl RetryPolicy {
    /// Checks the policy (run at start-up on every configured policy).
    pub fn validate(&self) -> Result<(), PolicyError> {
        if !(1..=100).contains(&self.attempts_max) {
            return Err(PolicyError::Attempts);
        }
        if !self.factor.is_finite() || self.factor < 1.0 {
            return Err(PolicyError::Factor);
        }
        if self.delay_ms_base == 0 || self.delay_ms_base > self.delay_ms_max {
            return Err(PolicyError::Delays);
        }
        if self.ttl_ms == 0 {
            return Err(PolicyError::Ttl);
        }
        if self.schedule_ms.len() > 100
            || self.schedule_ms.iter().any(|&d| d == 0 || d > self.delay_ms_max)
        {
            return Err(PolicyError::Schedule);
        }
        Ok(())
    }

    /// The nominal delay `d` before retry number `retry` (1-based): the schedule's entry, or
    /// `base × factor^(retry-1)`, capped at `delay_ms_max`. With jitter, the actual delay lies in
    /// `[d/2, d]`.
    pub fn nominal_delay_ms(&self, retry: u32) -> u64 {
        if let Some(last) = self.schedule_ms.last() {
            let index = retry.saturating_sub(1) as usize;
            return (*self.schedule_ms.get(index).unwrap_or(last)).min(self.delay_ms_max);
        }
        let mut d = self.delay_ms_base as f64;
        for _ in 1..retry {
            d = (d * f64::from(self.factor)).min(self.delay_ms_max as f64);
        }
        (d as u64).min(self.delay_ms_max)
    }

    /// The delay before retry number `retry` (1-based), deterministic in `seed`.
    pub fn delay_ms(&self, seed: u64, retry: u32) -> u64 {
        let nominal = self.nominal_delay_ms(retry);
        if !self.jitter {
            return nominal;
        }
        // backon's jitter adds U[0,1) × d, giving [d, 2d) and up to twice the cap. Halving maps
        // it to [d/2, d): spread out, and never above `delay_ms_max`.
        let nth = retry.saturating_sub(1) as usize;
        let jittered = if self.schedule_ms.is_empty() {
            ExponentialBuilder::new()
                .with_min_delay(Duration::from_millis(self.delay_ms_base))
                .with_max_delay(Duration::from_millis(self.delay_ms_max))
                .with_factor(self.factor)
                .with_max_times(retry as usize)
                .with_jitter()
                .with_jitter_seed(seed)
                .build()
                .nth(nth)
        } else {
            ConstantBuilder::new()
                .with_delay(Duration::from_millis(nominal))
                .with_max_times(retry as usize)
                .with_jitter()
                .with_jitter_seed(seed)
                .build()
                .nth(nth)
        }
        .map_or(nominal, |d| d.as_millis() as u64);
        (jittered / 2).clamp(nominal / 2, nominal)
    }

    /// Decides what follows failed attempt `failed` of a notification accepted at
    /// `accepted_at_ms`, at `now_ms`. `retry_after_ms` is the provider's `Retry-After`, in
    /// milliseconds from now: never retry earlier than it.
    pub fn after_failure(
        &self,
        seed: u64,
        failed: Attempt,
        accepted_at_ms: u64,
        now_ms: u64,
        retry_after_ms: Option<u64>,
    ) -> RetryDecision {
        if failed.0 >= self.attempts_max {
            return RetryDecision::Exhausted;
        }
        let delay_ms = self.delay_ms(seed, failed.0);
        let wait = delay_ms.max(retry_after_ms.unwrap_or(0));
        let at_ms = now_ms.saturating_add(wait);
        if at_ms > accepted_at_ms.saturating_add(self.ttl_ms) {
            return RetryDecision::Expired;
        }
        RetryDecision::RetryAt { at_ms, delay_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(jitter: bool) -> RetryPolicy {
        RetryPolicy {
            attempts_max: 5,
            delay_ms_base: 1_000,
            factor: 2.0,
            delay_ms_max: 5_000,
            jitter,
            ttl_ms: 3_600_000,
            schedule_ms: Vec::new(),
        }
    }

    fn scheduled(jitter: bool) -> RetryPolicy {
        RetryPolicy { schedule_ms: vec![60_000, 300_000, 900_000, 3_600_000], ..policy(jitter) }
            .with_max(3_600_000)
    }

    impl RetryPolicy {
        fn with_max(mut self, delay_ms_max: u64) -> Self {
            self.delay_ms_max = delay_ms_max;
            self
        }
    }

    #[test]
    fn an_explicit_schedule_is_followed_and_its_last_delay_repeats() {
        let p = scheduled(false);
        assert_eq!(p.validate(), Ok(()));
        let d: Vec<u64> = (1..=6).map(|r| p.delay_ms(7, r)).collect();
        assert_eq!(d, vec![60_000, 300_000, 900_000, 3_600_000, 3_600_000, 3_600_000]);
    }

    #[test]
    fn jitter_spreads_a_herd_over_the_window() {
        for p in [policy(true), scheduled(true)] {
            let delays: std::collections::BTreeSet<u64> =
                (0..200u64).map(|seed| p.delay_ms(seed, 2)).collect();
            let n = p.nominal_delay_ms(2);
            assert!(delays.len() > 100, "only {} distinct delays", delays.len());
            assert!(delays.first().is_some_and(|&d| d < n * 6 / 10), "{delays:?}");
            assert!(delays.last().is_some_and(|&d| d > n * 9 / 10), "{delays:?}");
        }
    }

    #[test]
    fn a_schedule_beyond_the_cap_or_with_zero_is_refused() {
        let mut p = scheduled(false);
        p.delay_ms_max = 900_000;
        assert_eq!(p.validate(), Err(PolicyError::Schedule));
        let mut p = scheduled(false);
        p.schedule_ms[0] = 0;
        assert_eq!(p.validate(), Err(PolicyError::Schedule));
    }

    #[test]
    fn nominal_delays_grow_and_cap() {
        let p = policy(false);
        let d: Vec<u64> = (1..=5).map(|r| p.delay_ms(7, r)).collect();
        assert_eq!(d, vec![1_000, 2_000, 4_000, 5_000, 5_000]);
    }

    #[test]
    fn exhausted_after_attempts_max() {
        let p = policy(false);
        assert_eq!(p.after_failure(1, Attempt(5), 0, 0, None), RetryDecision::Exhausted);
        assert!(matches!(
            p.after_failure(1, Attempt(4), 0, 0, None),
            RetryDecision::RetryAt { at_ms: 5_000, .. }
        ));
    }

    #[test]
    fn retry_after_is_honoured() {
        let p = policy(false);
        let d = p.after_failure(1, Attempt(1), 0, 10, Some(30_000));
        assert_eq!(d, RetryDecision::RetryAt { at_ms: 30_010, delay_ms: 1_000 });
    }

    #[test]
    fn ttl_expires_retries() {
        let mut p = policy(false);
        p.ttl_ms = 1_500;
        assert_eq!(p.after_failure(1, Attempt(1), 0, 1_000, None), RetryDecision::Expired);
    }

    #[test]
    fn invalid_policies_are_rejected() {
        let mut p = policy(true);
        p.attempts_max = 0;
        assert_eq!(p.validate(), Err(PolicyError::Attempts));
        let mut p = policy(true);
        p.delay_ms_base = 10_000;
        assert_eq!(p.validate(), Err(PolicyError::Delays));
        assert_eq!(policy(true).validate(), Ok(()));
    }

    proptest! {
        #[test]
        fn jittered_delay_is_within_bounds_and_replayable(seed: u64, retry in 1u32..20) {
            let p = policy(true);
            let d = p.delay_ms(seed, retry);
            let n = p.nominal_delay_ms(retry);
            prop_assert!(d >= n / 2 && d <= n && d <= p.delay_ms_max, "{d} vs {n}");
            prop_assert_eq!(d, p.delay_ms(seed, retry));
        }

        #[test]
        fn jittered_scheduled_delay_is_within_bounds_and_replayable(seed: u64, retry in 1u32..10) {
            let p = scheduled(true);
            let d = p.delay_ms(seed, retry);
            let n = p.nominal_delay_ms(retry);
            prop_assert!(d >= n / 2 && d <= n, "{d} vs {n}");
            prop_assert_eq!(d, p.delay_ms(seed, retry));
        }
    }
}
