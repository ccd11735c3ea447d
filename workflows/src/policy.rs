//! The policies the lifecycle follows, as data: retries, rate limits and provider routes per
//! channel, with retry overrides and per-recipient caps per category. The binary builds this
//! from its configuration and validates it at start-up.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use steps::collapse::COLLAPSE_WINDOW_MS_MAX;
use steps::fallback::FallbackRule;
use steps::filter::Rules;
use steps::limits::{CAPS_PER_CATEGORY_MAX, Cap, Limit, Window, WindowError, check_window};
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
    #[error("rate limit for {channel}: {error}")]
    Rate {
        /// The channel.
        channel: Channel,
        /// What is wrong.
        error: WindowError,
    },
    /// A category's caps are invalid.
    #[error("categories.{category}.caps{}: {error}", .index.map(|i| format!("[{i}]")).unwrap_or_default())]
    Cap {
        /// The category.
        category: Category,
        /// The cap at fault, when one is.
        index: Option<usize>,
        /// What is wrong.
        error: CapError,
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
    /// A collapse window is out of range.
    #[error(
        "categories.{category}.collapse_window_ms must be between 1 and {COLLAPSE_WINDOW_MS_MAX} (an hour)"
    )]
    CollapseWindow {
        /// The category.
        category: Category,
    },
    /// A dedup window is too long.
    #[error("{}dedup_window_ms must be at most {DEDUP_WINDOW_MS_MAX} (30 days)", .category.as_ref().map(|c| format!("categories.{c}.")).unwrap_or_default())]
    DedupWindow {
        /// The category whose window it is (none: the default window).
        category: Option<Category>,
    },
}

/// The longest dedup window: 30 days (an event id is remembered that long per recipient and
/// channel).
pub const DEDUP_WINDOW_MS_MAX: u64 = 30 * 24 * 3_600_000;

/// Why a category's caps are invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CapError {
    /// A cap's numbers are out of range.
    #[error(transparent)]
    Window(#[from] WindowError),
    /// More caps than [`CAPS_PER_CATEGORY_MAX`].
    #[error("at most {CAPS_PER_CATEGORY_MAX} caps per category")]
    TooMany,
    /// Two caps of the category have the same window (they would count in one window).
    #[error("two caps have the same window_ms; merge them (the smaller max wins)")]
    SameWindow,
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
    /// How long an `event_id` is remembered per recipient and channel, in ms: a submission of
    /// the same event for the same recipient and channel within it creates no second
    /// notification (the answer names the first). 24 h by default; 0 turns dedup off. A
    /// category may set its own.
    pub dedup_window_ms: u64,
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
    /// Caps per recipient across every channel (`marketing` at most 1 a day and 5 a week): a
    /// notification takes a slot in each, together with its channel's rate limit, all or
    /// nothing. Critical categories are exempt. Unset keeps the default (`marketing`: 1 a day,
    /// 5 a week, deferred; nothing else is capped); `[]` removes every cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caps: Option<Vec<Cap>>,
    /// This category's dedup window (see [`Policy::dedup_window_ms`]); unset uses the policy's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dedup_window_ms: Option<u64>,
    /// Collapse: notifications of this category with the same `collapse_key` for the same
    /// recipient and channel within this many ms go out as one message (the first waits the
    /// window, the others merge into it). Unset: no collapsing (the key is kept, unused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collapse_window_ms: Option<u64>,
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

    /// The collapse window of `category`, if it collapses.
    pub fn collapse_window_ms(&self, category: &Category) -> Option<u64> {
        self.categories.get(category).and_then(|c| c.collapse_window_ms)
    }

    /// How long an `event_id` of `category` is remembered (0: not at all).
    pub fn dedup_window_ms_for(&self, category: &Category) -> u64 {
        self.categories
            .get(category)
            .and_then(|c| c.dedup_window_ms)
            .unwrap_or(self.dedup_window_ms)
    }

    /// The caps of a category (none for most).
    pub fn caps(&self, category: &Category) -> &[Cap] {
        self.categories.get(category).and_then(|c| c.caps.as_deref()).unwrap_or(&[])
    }

    /// The windows a notification of `category` on `channel` takes a slot in before it goes to
    /// a provider: the channel's rate limit and the category's caps. None for a critical
    /// category: security alerts and one-time codes are never held back per recipient (the
    /// providers' send rates still apply).
    pub fn windows(&self, category: &Category, channel: Channel) -> Vec<Window> {
        if self.is_critical(category) {
            return Vec::new();
        }
        let rate = self.rate(channel).map(|r| Window {
            limit: Limit::Channel { channel, max: r.max, window_ms: r.window_ms },
            over_limit: r.over_limit,
        });
        let caps = self.caps(category).iter().map(|cap| Window {
            limit: Limit::Cap {
                category: category.clone(),
                max: cap.max,
                window_ms: cap.window_ms,
            },
            over_limit: cap.over_limit,
        });
        rate.into_iter().chain(caps).collect()
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
            check_window(rate.max, rate.window_ms)
                .map_err(|error| Error::Rate { channel: *channel, error })?;
        }
        for (category, overrides) in &self.categories {
            let caps = overrides.caps.as_deref().unwrap_or(&[]);
            let fault = |index, error| Error::Cap { category: category.clone(), index, error };
            if caps.len() > CAPS_PER_CATEGORY_MAX {
                return Err(fault(None, CapError::TooMany));
            }
            for (index, cap) in caps.iter().enumerate() {
                check_window(cap.max, cap.window_ms).map_err(|e| fault(Some(index), e.into()))?;
                if caps[..index].iter().any(|c| c.window_ms == cap.window_ms) {
                    return Err(fault(Some(index), CapError::SameWindow));
                }
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
        if self.dedup_window_ms > DEDUP_WINDOW_MS_MAX {
            return Err(Error::DedupWindow { category: None });
        }
        for (category, overrides) in &self.categories {
            if overrides.dedup_window_ms.is_some_and(|ms| ms > DEDUP_WINDOW_MS_MAX) {
                return Err(Error::DedupWindow { category: Some(category.clone()) });
            }
            if overrides.collapse_window_ms.is_some_and(|ms| ms == 0 || ms > COLLAPSE_WINDOW_MS_MAX)
            {
                return Err(Error::CollapseWindow { category: category.clone() });
            }
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
    /// - `otp` and `security` are critical (no opt-out, unsubscribe, quiet hours or cap stops
    ///   them); `marketing` and `social` are opt-in on SMS, sent by default elsewhere; no default
    ///   quiet hours;
    /// - at most 10 SMS and 20 emails per recipient per hour; `marketing` at most 1 a day and 5
    ///   a week per recipient on every channel together (deferred until there is room, or
    ///   skipped when that is past its time budget); SMS falls back to email.
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
                    ..CategoryPolicy::default()
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
                    caps: Some(vec![
                        Cap { max: 1, window_ms: 24 * hour, over_limit: OverLimit::Defer },
                        Cap { max: 5, window_ms: 7 * 24 * hour, over_limit: OverLimit::Defer },
                    ]),
                    ..CategoryPolicy::default()
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
            dedup_window_ms: 24 * hour,
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
