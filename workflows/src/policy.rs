//! The policies the lifecycle follows, as data: retries, rate limits and provider routes per
//! channel, with retry overrides per category. The binary builds this from its configuration and
//! validates it at start-up.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use steps::fallback::FallbackRule;
use steps::filter::Rules;
use steps::model::{Category, Channel, ProviderName};
use steps::quiet::QuietHours;
use steps::rate::{OverLimit, RateLimit, SendRate};
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
    /// A category's retry policy is invalid.
    #[error("retry policy for category {category} on {channel}: {error}")]
    CategoryRetry {
        /// The category.
        category: Category,
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
    /// A provider's send rate is invalid.
    #[error(
        "send rate for {provider}: max and window_ms must both be > 0, and at most 1000 sends per ms"
    )]
    SendRate {
        /// The provider.
        provider: ProviderName,
    },
    /// The send lease is too short or too long.
    #[error("send_lease_ms must be between 1000 and 600000")]
    Lease,
    /// The reconcile grace is too long.
    #[error("reconcile_grace_ms must be at most 600000")]
    Grace,
    /// A template limit is out of its range.
    #[error("templates.{field} must be between 1 and {max}")]
    Templates {
        /// The limit.
        field: &'static str,
        /// Its highest allowed value.
        max: u64,
    },
}

/// Every lifecycle policy. Missing fields take their [`Default`] values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Retry policy per channel; a channel without one uses [`Policy::RETRY_DEFAULT`].
    pub retry: BTreeMap<Channel, RetryPolicy>,
    /// Overrides per category (an OTP retries fast and briefly, marketing waits longer).
    pub categories: BTreeMap<Category, CategoryPolicy>,
    /// Rate limit per channel; a channel without one is not limited.
    pub rate: BTreeMap<Channel, RateLimit>,
    /// Provider order per channel: the first is used, later ones are for failover.
    pub routes: BTreeMap<Channel, Vec<ProviderName>>,
    /// Send rate per provider, across every worker and tenant; a provider without one is not
    /// paced. A send over the rate waits for a reserved slot without using an attempt.
    pub send_rate: BTreeMap<ProviderName, SendRate>,
    /// Channel fallbacks, tried in order when a channel failed for good.
    pub fallback: Vec<FallbackRule>,
    /// How long a claimed send may take before the notification is considered to have an
    /// unknown outcome, in ms. Must exceed the provider timeout by a margin.
    pub send_lease_ms: u64,
    /// After an unknown outcome, the least time to wait for a delivery receipt before
    /// re-sending, in ms. Receipts usually arrive within seconds; 30 s catches most without
    /// making an OTP late.
    pub reconcile_grace_ms: u64,
    /// Quiet hours for recipients who set none, in each recipient's own time zone (recipients
    /// without a stored time zone get none). Unset by default: quiet hours are the recipient's
    /// choice unless the operator makes them a default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
    /// Template limits: the SMS segment cap and the registry's sizes.
    #[serde(default)]
    pub templates: TemplatePolicy,
}

/// Template limits (`[policy.templates]`). Every one is checked when a template or a
/// notification is submitted, with a 422 that names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TemplatePolicy {
    /// Most SMS segments a rendered SMS may take, 1 to 10 (GSM-7: 160 characters in one SMS,
    /// 153 a segment beyond; UCS-2: 70 and 67). Each segment is billed as one SMS. Checked at
    /// submit (422) and again at render. Default 6: 918 GSM-7 or 402 UCS-2 characters.
    pub sms_segments_max: u32,
    /// Most templates a tenant may create in the registry (built-ins do not count). Default
    /// 1,000.
    pub templates_per_tenant_max: u32,
    /// Most versions one registry template may have. Versions are immutable and never deleted
    /// (a pinned notification may still need one), so this bounds a template's storage. Default
    /// 500.
    pub versions_per_template_max: u32,
    /// Most locales one version may hold. Default 50.
    pub locales_per_version_max: u32,
    /// Compiled template versions each process keeps (least recently used go first). Versions
    /// never change, so a cached one is never stale. Default 1,024.
    pub compiled_cache_max: u32,
}

impl Default for TemplatePolicy {
    fn default() -> Self {
        Self {
            sms_segments_max: steps::render::SMS_SEGMENTS_DEFAULT,
            templates_per_tenant_max: 1_000,
            versions_per_template_max: 500,
            locales_per_version_max: steps::render::LOCALES_DEFAULT as u32,
            compiled_cache_max: 1_024,
        }
    }
}

impl TemplatePolicy {
    /// The limits rendering checks.
    pub fn limits(&self) -> steps::render::Limits {
        steps::render::Limits {
            sms_segments_max: self.sms_segments_max,
            locales_per_version_max: self.locales_per_version_max as usize,
        }
    }

    fn validate(&self) -> Result<(), Error> {
        let checks: [(&'static str, u32, u64); 5] = [
            (
                "sms_segments_max",
                self.sms_segments_max,
                u64::from(steps::render::SMS_SEGMENTS_CEILING),
            ),
            ("templates_per_tenant_max", self.templates_per_tenant_max, 100_000),
            ("versions_per_template_max", self.versions_per_template_max, 10_000),
            (
                "locales_per_version_max",
                self.locales_per_version_max,
                steps::render::LOCALES_CEILING as u64,
            ),
            ("compiled_cache_max", self.compiled_cache_max, 100_000),
        ];
        for (field, value, max) in checks {
            if value == 0 || u64::from(value) > max {
                return Err(Error::Templates { field, max });
            }
        }
        Ok(())
    }
}

/// What a category changes in the policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CategoryPolicy {
    /// Retry policy per channel for this category; a channel not listed uses the channel's.
    pub retry: BTreeMap<Channel, RetryPolicy>,
    /// A critical category (security alerts, one-time codes) is one recipients cannot switch
    /// off: it passes opt-outs, global unsubscribe, quiet hours and per-recipient caps. Unset
    /// keeps the default (`otp` and `security` are critical, nothing else is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub critical: Option<bool>,
    /// Per channel, whether the category goes out to a recipient who made no choice about it: a
    /// channel not listed does; `false` makes the category opt-in there (only the recipient's
    /// choice for this category on this channel turns it on). `marketing` and `social` are opt-in
    /// on SMS by default (texts cost the recipient attention, and consent to marketing texts is
    /// required to be specific); on email, push and in-app they go out until the recipient opts
    /// out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub defaults: BTreeMap<Channel, bool>,
}

/// The retry policy of channels without one, as a static so that it can be lent out.
static RETRY_FALLBACK: RetryPolicy = Policy::RETRY_DEFAULT;

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
        schedule_ms: Vec::new(),
    };

    /// The retry policy for a channel, whatever the category.
    pub fn retry(&self, channel: Channel) -> &RetryPolicy {
        self.retry.get(&channel).unwrap_or(&RETRY_FALLBACK)
    }

    /// The retry policy for a category on a channel: the category's own, else the channel's.
    pub fn retry_for(&self, category: &Category, channel: Channel) -> &RetryPolicy {
        self.categories
            .get(category)
            .and_then(|c| c.retry.get(&channel))
            .unwrap_or_else(|| self.retry(channel))
    }

    /// Whether a category is critical (see [`CategoryPolicy::critical`]).
    pub fn is_critical(&self, category: &Category) -> bool {
        self.categories.get(category).and_then(|c| c.critical).unwrap_or(false)
    }

    /// What the preference filter needs to know about a category: whether it is critical, its
    /// per-channel defaults, and the default quiet hours.
    pub fn filter_rules(&self, category: &Category) -> Rules<'_> {
        static NONE: BTreeMap<Channel, bool> = BTreeMap::new();
        Rules {
            critical: self.is_critical(category),
            defaults: self.categories.get(category).map_or(&NONE, |c| &c.defaults),
            quiet_hours: self.quiet_hours.as_ref(),
        }
    }

    /// The rate limit for a channel, if any.
    pub fn rate(&self, channel: Channel) -> Option<&RateLimit> {
        self.rate.get(&channel)
    }

    /// The send rate of a provider, if it is paced.
    pub fn send_rate(&self, provider: &ProviderName) -> Option<&SendRate> {
        self.send_rate.get(provider)
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
        for (category, overrides) in &self.categories {
            for (channel, retry) in &overrides.retry {
                retry.validate().map_err(|error| Error::CategoryRetry {
                    category: category.clone(),
                    channel: *channel,
                    error,
                })?;
            }
        }
        for (channel, rate) in &self.rate {
            if rate.max == 0 || rate.window_ms == 0 {
                return Err(Error::Rate { channel: *channel });
            }
        }
        for (provider, rate) in &self.send_rate {
            if !rate.is_valid() {
                return Err(Error::SendRate { provider: provider.clone() });
            }
        }
        if !(1_000..=600_000).contains(&self.send_lease_ms) {
            return Err(Error::Lease);
        }
        if self.reconcile_grace_ms > 600_000 {
            return Err(Error::Grace);
        }
        self.templates.validate()?;
        Ok(())
    }
}

impl Default for Policy {
    /// Defaults that make sense for a first run:
    /// - SMS retries for up to an hour; an `otp` SMS retries within seconds and gives up after two
    ///   minutes (a late code is worthless), and its email fallback after ten;
    /// - push gets two quick retries;
    /// - email (transactional) retries after 1 min, 5 min, 15 min, then hourly, for a day;
    ///   `marketing` email waits longer between fewer attempts;
    /// - `otp` and `security` are critical (no opt-out, unsubscribe or quiet hours stops them);
    ///   `marketing` and `social` are opt-in on SMS, sent by default elsewhere; no default quiet
    ///   hours;
    /// - at most 10 SMS and 20 emails per recipient per hour; SMS falls back to email.
    fn default() -> Self {
        let second = 1_000;
        let minute = 60 * second;
        let hour = 60 * minute;
        let retry = BTreeMap::from([
            (Channel::Sms, exponential(5, 10 * second, 3.0, 10 * minute, hour)),
            (
                Channel::Email,
                RetryPolicy {
                    schedule_ms: vec![minute, 5 * minute, 15 * minute, hour],
                    ..exponential(8, minute, 1.0, hour, 24 * hour)
                },
            ),
            (Channel::Push, exponential(3, second, 2.0, 10 * second, hour)),
        ]);
        let categories = BTreeMap::from([
            (
                Category::new("otp").expect("a valid category"),
                CategoryPolicy {
                    retry: BTreeMap::from([
                        (Channel::Sms, exponential(4, 2 * second, 2.0, 15 * second, 2 * minute)),
                        (Channel::Email, exponential(3, 5 * second, 3.0, minute, 10 * minute)),
                        (Channel::Push, exponential(2, second, 2.0, second, 2 * minute)),
                    ]),
                    critical: Some(true),
                    defaults: BTreeMap::new(),
                },
            ),
            (
                Category::new("security").expect("a valid category"),
                CategoryPolicy { critical: Some(true), ..CategoryPolicy::default() },
            ),
            (
                Category::new("marketing").expect("a valid category"),
                CategoryPolicy {
                    retry: BTreeMap::from([
                        (Channel::Email, exponential(5, 30 * minute, 2.0, 6 * hour, 48 * hour)),
                        (Channel::Push, exponential(2, 10 * minute, 2.0, hour, 6 * hour)),
                    ]),
                    critical: None,
                    defaults: BTreeMap::from([(Channel::Sms, false)]),
                },
            ),
            (
                Category::new("social").expect("a valid category"),
                CategoryPolicy {
                    defaults: BTreeMap::from([(Channel::Sms, false)]),
                    ..CategoryPolicy::default()
                },
            ),
        ]);
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
            categories,
            rate,
            routes: BTreeMap::new(),
            send_rate: BTreeMap::new(),
            fallback,
            send_lease_ms: 30_000,
            reconcile_grace_ms: 30_000,
            templates: TemplatePolicy::default(),
            quiet_hours: None,
        }
    }
}

/// A jittered exponential retry policy.
fn exponential(
    attempts_max: u32,
    delay_ms_base: u64,
    factor: f32,
    delay_ms_max: u64,
    ttl_ms: u64,
) -> RetryPolicy {
    RetryPolicy {
        attempts_max,
        delay_ms_base,
        factor,
        delay_ms_max,
        jitter: true,
        ttl_ms,
        schedule_ms: Vec::new(),
    }
}
