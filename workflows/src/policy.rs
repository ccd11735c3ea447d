//! The policies the lifecycle follows, as data: retries, rate limits and provider routes per
//! channel. The binary builds this from its configuration and validates it at start-up.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use steps::fallback::FallbackRule;
use steps::model::{Channel, ProviderName};
use steps::rate::{OverLimit, RateLimit};
use steps::retry::{PolicyError, RetryPolicy};

/// Why a policy is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A retry policy is invalid.
    #[error("retry policy for {channel}: {error}")]
    Retry {
        /// The channel.
        channel: Channel,
        /// What is wrong.
        error: PolicyError,
    },
    /// A rate limit is invalid.
    #[error("rate limit for {channel}: max and window_ms must both be > 0")]
    Rate {
        /// The channel.
        channel: Channel,
    },
    /// The send lease is too short or too long.
    #[error("send_lease_ms must be between 1000 and 600000")]
    Lease,
    /// The reconcile grace is too long.
    #[error("reconcile_grace_ms must be at most 600000")]
    Grace,
}

/// Every lifecycle policy. Missing fields take their [`Default`] values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Retry policy per channel; a channel without one uses [`Policy::RETRY_DEFAULT`].
    pub retry: BTreeMap<Channel, RetryPolicy>,
    /// Rate limit per channel; a channel without one is not limited.
    pub rate: BTreeMap<Channel, RateLimit>,
    /// Provider order per channel: the first is used, later ones are for failover.
    pub routes: BTreeMap<Channel, Vec<ProviderName>>,
    /// Channel fallbacks, tried in order when a channel failed for good.
    pub fallback: Vec<FallbackRule>,
    /// How long a claimed send may take before the notification is considered to have an
    /// unknown outcome, in ms. Must exceed the provider timeout by a margin.
    pub send_lease_ms: u64,
    /// After an unknown outcome, the least time to wait for a delivery receipt before
    /// re-sending, in ms. Receipts usually arrive within seconds; 30 s catches most without
    /// making an OTP late.
    pub reconcile_grace_ms: u64,
}

impl Policy {
    /// The retry policy used by channels without their own: 5 attempts, 1 s doubling to 5 min,
    /// jittered, worth sending for 24 h.
    pub const RETRY_DEFAULT: RetryPolicy = RetryPolicy {
        attempts_max: 5,
        delay_ms_base: 1_000,
        factor: 2.0,
        delay_ms_max: 300_000,
        jitter: true,
        ttl_ms: 86_400_000,
    };

    /// The retry policy for a channel.
    pub fn retry(&self, channel: Channel) -> &RetryPolicy {
        self.retry.get(&channel).unwrap_or(&Self::RETRY_DEFAULT)
    }

    /// The rate limit for a channel, if any.
    pub fn rate(&self, channel: Channel) -> Option<&RateLimit> {
        self.rate.get(&channel)
    }

    /// The provider route for a channel (empty when none is configured).
    pub fn route(&self, channel: Channel) -> &[ProviderName] {
        self.routes.get(&channel).map_or(&[], Vec::as_slice)
    }

    /// Checks every policy.
    pub fn validate(&self) -> Result<(), Error> {
        for (channel, retry) in &self.retry {
            retry.validate().map_err(|error| Error::Retry { channel: *channel, error })?;
        }
        for (channel, rate) in &self.rate {
            if rate.max == 0 || rate.window_ms == 0 {
                return Err(Error::Rate { channel: *channel });
            }
        }
        if !(1_000..=600_000).contains(&self.send_lease_ms) {
            return Err(Error::Lease);
        }
        if self.reconcile_grace_ms > 600_000 {
            return Err(Error::Grace);
        }
        Ok(())
    }
}

impl Default for Policy {
    /// Defaults that make sense for a first run: SMS retries fast and briefly (an OTP is worthless
    /// after minutes), email keeps trying for hours, at most 10 SMS and 20 emails per recipient
    /// per hour.
    fn default() -> Self {
        let retry = BTreeMap::from([
            (
                Channel::Sms,
                RetryPolicy {
                    attempts_max: 4,
                    delay_ms_base: 2_000,
                    factor: 2.0,
                    delay_ms_max: 30_000,
                    jitter: true,
                    ttl_ms: 300_000,
                },
            ),
            (
                Channel::Email,
                RetryPolicy {
                    attempts_max: 6,
                    delay_ms_base: 60_000,
                    factor: 3.0,
                    delay_ms_max: 3_600_000,
                    jitter: true,
                    ttl_ms: 86_400_000,
                },
            ),
            (
                Channel::Push,
                RetryPolicy {
                    attempts_max: 3,
                    delay_ms_base: 1_000,
                    factor: 2.0,
                    delay_ms_max: 10_000,
                    jitter: true,
                    ttl_ms: 3_600_000,
                },
            ),
        ]);
        let hour = 3_600_000;
        let rate = BTreeMap::from([
            (Channel::Sms, RateLimit { max: 10, window_ms: hour, over_limit: OverLimit::Defer }),
            (Channel::Email, RateLimit { max: 20, window_ms: hour, over_limit: OverLimit::Defer }),
        ]);
        // SMS → email for every category: a code or an alert that cannot reach the phone is
        // still worth an email, when the recipient has an address and allows email.
        let fallback =
            vec![FallbackRule { from: Channel::Sms, to: Channel::Email, categories: None }];
        Self {
            retry,
            rate,
            routes: BTreeMap::new(),
            fallback,
            send_lease_ms: 30_000,
            reconcile_grace_ms: 30_000,
        }
    }
}
