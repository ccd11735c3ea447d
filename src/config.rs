//! courant's configuration: one serde tree, read from a TOML file, every section optional with
//! defaults that work for a first run, validated at start-up with errors that say what to fix.
//!
//! Each field's doc comment is its documentation (README.md's configuration reference mirrors
//! them).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Deserialize;
use steps::model::{Channel, ProviderName};
use workflows::policy::Policy;

use crate::api::Limits;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The HTTP API.
    pub api: ApiConfig,
    /// The Redis server (`serve` only; `dev` keeps everything in memory).
    pub redis: RedisConfig,
    /// The workers.
    pub worker: WorkerConfig,
    /// The folder holding one sub-folder per template.
    pub templates_dir: PathBuf,
    /// Retry, rate limit and routing policies.
    pub policy: Policy,
    /// Providers by name. The name is what routes refer to.
    pub providers: BTreeMap<ProviderName, crate::wiring::ProviderConfig>,
    /// The circuit breaker every HTTP provider gets.
    pub breaker: providers::breaker::BreakerConfig,
    /// Receipt webhooks configured outside a provider's section (SES through SNS).
    pub webhooks: crate::api::webhooks::WebhooksConfig,
    /// Trace export over OTLP (off unless an endpoint is configured).
    pub telemetry: crate::telemetry::TelemetryConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            api: ApiConfig::default(),
            redis: RedisConfig::default(),
            worker: WorkerConfig::default(),
            templates_dir: PathBuf::from("templates"),
            policy: Policy::default(),
            providers: BTreeMap::new(),
            breaker: providers::breaker::BreakerConfig::default(),
            webhooks: Default::default(),
            telemetry: Default::default(),
        }
    }
}

/// The HTTP API's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// The address to listen on. Loopback by default: expose it deliberately.
    pub listen: SocketAddr,
    /// Request limits.
    pub limits: Limits,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], 8080)), limits: Limits::default() }
    }
}

/// The Redis connection.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`. May carry a password, so it is never logged.
    pub url: String,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig").field("url", &redact_url(&self.url)).finish()
    }
}

/// A Redis URL with any password replaced by `***`, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self { url: "redis://127.0.0.1:6379".into() }
    }
}

/// The workers' settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Wake-ups handled at once per process. Most of a wake-up is waiting on Redis or a
    /// provider, so this is far above the core count; 128 keeps a 10 ms provider busy at
    /// ~10k sends/s without unbounded memory.
    pub concurrency: usize,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self { concurrency: 128 }
    }
}

/// The most wake-ups a process may handle at once: bounded so a typo cannot open ten thousand
/// provider connections.
const CONCURRENCY_MAX: usize = 4_096;

impl Config {
    /// Reads a TOML file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("the configuration file {} is invalid", path.display()))
    }

    /// Gives channels the configuration does not mention their default retry policy and rate
    /// limit (setting `policy.retry.email` must not silently change SMS), keeps the default
    /// categories' retry overrides, criticality, preference defaults and caps for every category
    /// and channel it does not set, fills the routes of channels without one from the configured providers (in name
    /// order), then checks everything.
    pub fn finish(mut self) -> anyhow::Result<Config> {
        let defaults = Policy::default();
        for (channel, retry) in defaults.retry {
            self.policy.retry.entry(channel).or_insert(retry);
        }
        for (category, overrides) in defaults.categories {
            let entry = self.policy.categories.entry(category).or_default();
            entry.critical = entry.critical.or(overrides.critical);
            entry.caps = entry.caps.take().or(overrides.caps);
            for (channel, retry) in overrides.retry {
                entry.retry.entry(channel).or_insert(retry);
            }
            for (channel, on) in overrides.defaults {
                entry.defaults.entry(channel).or_insert(on);
            }
        }
        for (channel, rate) in defaults.rate {
            self.policy.rate.entry(channel).or_insert(rate);
        }
        for channel in Channel::ALL {
            if self.policy.routes.contains_key(&channel) {
                continue;
            }
            // A push group stands for its members: where there is one, the push route is the
            // groups alone (a member first in the route would take the message for its
            // platforms only).
            let grouped = self
                .providers
                .values()
                .any(|p| matches!(p, crate::wiring::ProviderConfig::PushGroup(_)));
            let route: Vec<ProviderName> = self
                .providers
                .iter()
                .filter(|(_, p)| p.channel() == channel)
                .filter(|(_, p)| !(grouped && p.is_push_service()))
                .map(|(name, _)| name.clone())
                .collect();
            if !route.is_empty() {
                self.policy.routes.insert(channel, route);
            }
        }
        self.validate()?;
        Ok(self)
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.policy.validate().context("policy")?;
        self.breaker.validate().map_err(|e| anyhow::anyhow!("breaker: {e}"))?;
        self.telemetry.validate().context("telemetry")?;
        if self.worker.concurrency == 0 || self.worker.concurrency > CONCURRENCY_MAX {
            bail!("worker.concurrency must be between 1 and {CONCURRENCY_MAX}");
        }
        if self.api.limits.batch_len_max == 0 || self.api.limits.body_bytes_max < 1_024 {
            bail!("api.limits: batch_len_max must be >= 1 and body_bytes_max >= 1024");
        }
        if self.api.limits.event_streams_max == 0 {
            bail!("api.limits: event_streams_max must be >= 1");
        }
        for (channel, route) in &self.policy.routes {
            for name in route {
                let Some(provider) = self.providers.get(name) else {
                    bail!(
                        "policy.routes.{channel} names provider '{name}', which is not configured under [providers]"
                    );
                };
                if provider.channel() != *channel {
                    bail!(
                        "policy.routes.{channel} names provider '{name}', which serves {}",
                        provider.channel()
                    );
                }
            }
        }
        if let Some(name) = self.policy.send_rate.keys().find(|n| !self.providers.contains_key(*n))
        {
            bail!(
                "policy.send_rate names provider '{name}', which is not configured under [providers]"
            );
        }
        for (name, provider) in &self.providers {
            provider.validate(name).with_context(|| format!("providers.{name}"))?;
            if let crate::wiring::ProviderConfig::PushGroup(group) = provider {
                for member in &group.members {
                    if !self.providers.get(member).is_some_and(|p| p.is_push_service()) {
                        bail!(
                            "providers.{name}: member '{member}' must be a configured fcm or apns provider"
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("redis://:hunter2@db:6379/0"), "redis://***@db:6379/0");
        assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn empty_file_gives_defaults() {
        let config: Config = toml::from_str("").unwrap();
        let config = config.finish().unwrap();
        assert_eq!(config.worker.concurrency, 128);
    }

    #[test]
    fn a_partial_policy_keeps_the_other_defaults() {
        let text = "[policy.retry.email]\nattempts_max = 2\ndelay_ms_base = 10\nfactor = 2.0\n\
                    delay_ms_max = 100\njitter = false\nttl_ms = 1000\n";
        let config = toml::from_str::<Config>(text).unwrap().finish().unwrap();
        assert_eq!(config.policy.retry(Channel::Email).attempts_max, 2);
        let sms = Policy::default().retry(Channel::Sms).clone();
        assert_eq!(config.policy.retry(Channel::Sms), &sms);
    }

    #[test]
    fn a_category_override_keeps_the_other_category_defaults() {
        let text = "[policy.categories.otp.retry.sms]\nattempts_max = 2\ndelay_ms_base = 500\n\
                    factor = 2.0\ndelay_ms_max = 1000\njitter = true\nttl_ms = 30000\n\
                    [policy.categories.alerts.retry.email]\nattempts_max = 9\n\
                    delay_ms_base = 1000\nfactor = 1.0\ndelay_ms_max = 60000\njitter = true\n\
                    ttl_ms = 600000\nschedule_ms = [1000, 10000, 60000]\n";
        let config = toml::from_str::<Config>(text).unwrap().finish().unwrap();
        let policy = &config.policy;
        let defaults = Policy::default();
        let category = |name: &str| steps::model::Category::new(name).unwrap();
        assert_eq!(policy.retry_for(&category("otp"), Channel::Sms).attempts_max, 2);
        // What the file does not set keeps its default: the OTP email and the marketing policy.
        let otp_email = defaults.retry_for(&category("otp"), Channel::Email);
        assert_eq!(policy.retry_for(&category("otp"), Channel::Email), otp_email);
        let marketing = defaults.retry_for(&category("marketing"), Channel::Email);
        assert_eq!(policy.retry_for(&category("marketing"), Channel::Email), marketing);
        assert!(policy.is_critical(&category("otp")), "an otp override keeps otp critical");
        assert!(policy.is_critical(&category("security")));
        assert!(!policy.is_critical(&category("alerts")));
        // Marketing stays opt-in on SMS.
        assert_eq!(
            policy.filter_rules(&category("marketing")).defaults.get(&Channel::Sms),
            Some(&false)
        );
        let alerts = policy.retry_for(&category("alerts"), Channel::Email);
        assert_eq!(alerts.nominal_delay_ms(3), 60_000);
        // A bad override is refused at start-up, naming where it is.
        let text = "[policy.categories.otp.retry.sms]\nattempts_max = 0\ndelay_ms_base = 500\n\
                    factor = 2.0\ndelay_ms_max = 1000\njitter = true\nttl_ms = 30000\n";
        let err = format!("{:#}", toml::from_str::<Config>(text).unwrap().finish().unwrap_err());
        assert!(err.contains("category otp on sms: attempts_max"), "{err}");
    }

    #[test]
    fn preference_defaults_and_quiet_hours_come_from_the_policy() {
        let category = |name: &str| steps::model::Category::new(name).unwrap();
        let text = "[policy]\nquiet_hours = { start = \"22:00\", end = \"07:30\" }\n\
                    [policy.categories.marketing.defaults]\nsms = true\npush = false\n";
        let config = toml::from_str::<Config>(text).unwrap().finish().unwrap();
        let rules = config.policy.filter_rules(&category("marketing"));
        assert_eq!(rules.quiet_hours.map(ToString::to_string).as_deref(), Some("22:00–07:30"));
        assert_eq!(rules.defaults.get(&Channel::Sms), Some(&true), "the file's choice wins");
        assert_eq!(rules.defaults.get(&Channel::Push), Some(&false));
        assert!(!rules.critical);
        assert!(config.policy.filter_rules(&category("otp")).critical);
        // The shipped defaults: social is opt-in on SMS too; no default quiet hours.
        let config = toml::from_str::<Config>("").unwrap().finish().unwrap();
        let social = config.policy.filter_rules(&category("social"));
        assert_eq!((social.defaults.get(&Channel::Sms), social.quiet_hours), (Some(&false), None));
        // A bad window names the field.
        let text = "[policy]\nquiet_hours = { start = \"22:00\", end = \"25:00\" }\n";
        let err = format!("{:#}", toml::from_str::<Config>(text).unwrap_err());
        assert!(err.contains("HH:MM") && err.contains("quiet_hours"), "{err}");
    }

    #[test]
    fn caps_are_read_checked_and_keep_their_defaults() {
        let category = |name: &str| steps::model::Category::new(name).unwrap();
        let text = "[policy.categories.news]\ncaps = [{ max = 2, window_ms = 3600000 }, \
                    { max = 3, window_ms = 86400000, over_limit = \"skip\" }]\n\
                    [policy.categories.marketing.retry.sms]\nattempts_max = 2\n\
                    delay_ms_base = 500\nfactor = 2.0\ndelay_ms_max = 1000\njitter = true\n\
                    ttl_ms = 30000\n";
        let config = toml::from_str::<Config>(text).unwrap().finish().unwrap();
        let news = config.policy.caps(&category("news"));
        assert_eq!(news.len(), 2);
        assert_eq!(news[1].over_limit, steps::rate::OverLimit::Skip);
        // Setting marketing's SMS retries keeps its default caps; `caps = []` removes them.
        assert_eq!(config.policy.caps(&category("marketing")).len(), 2);
        let text = "[policy.categories.marketing]\ncaps = []\n";
        let config = toml::from_str::<Config>(text).unwrap().finish().unwrap();
        assert!(config.policy.caps(&category("marketing")).is_empty());
        // A bad cap is refused at start-up, naming where it is.
        let text = "[policy.categories.news]\ncaps = [{ max = 0, window_ms = 1000 }]\n";
        let err = format!("{:#}", toml::from_str::<Config>(text).unwrap().finish().unwrap_err());
        assert!(err.contains("categories.news.caps[0]: max must be between 1 and"), "{err}");
        let err = toml::from_str::<Config>("[policy.categories.news]\ncaps = [{ max = 1 }]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("window_ms"), "{err}");
    }

    #[test]
    fn send_rates_must_name_configured_providers_and_be_valid() {
        let config: Config =
            toml::from_str("[policy.send_rate.nope]\nmax = 10\nwindow_ms = 1000\n").unwrap();
        let err = format!("{:#}", config.finish().unwrap_err());
        assert!(err.contains("send_rate") && err.contains("nope"), "{err}");
        let text = "[policy.send_rate.inapp]\nmax = 0\nwindow_ms = 1000\n\
                    [providers.inapp]\nkind = \"in_app\"\n";
        let err = format!("{:#}", toml::from_str::<Config>(text).unwrap().finish().unwrap_err());
        assert!(err.contains("send rate for inapp"), "{err}");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = toml::from_str::<Config>("[api]\nlisen = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }

    #[test]
    fn routes_must_name_configured_providers() {
        let config: Config = toml::from_str("[policy.routes]\nemail = [\"nope\"]\n").unwrap();
        let err = format!("{:#}", config.finish().unwrap_err());
        assert!(err.contains("nope") && err.contains("not configured"), "{err}");
    }

    fn push_providers(group_members: &str) -> String {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/providers/tests/fixtures/push");
        format!(
            r#"
[providers.fcm]
kind = "fcm"
base_url = "http://127.0.0.1:9"
project_id = "courant-test"
service_account_file = "{fixtures}/fcm-service-account-test-only.json"

[providers.apns]
kind = "apns"
base_url = "http://127.0.0.1:9"
team_id = "TEAM123456"
key_id = "KEY1234567"
key_file = "{fixtures}/apns-test-only.p8"
topic = "com.example.courant"

[providers.inapp]
kind = "in_app"

[providers.push]
kind = "push_group"
members = {group_members}
"#
        )
    }

    #[test]
    fn a_push_group_is_the_default_push_route_and_names_push_services_only() {
        let config: Config = toml::from_str(&push_providers(r#"["apns", "fcm"]"#)).unwrap();
        let config = config.finish().unwrap();
        let route: Vec<&str> =
            config.policy.route(Channel::Push).iter().map(ProviderName::as_str).collect();
        assert_eq!(route, ["push"]);
        for bad in [r#"["inapp"]"#, r#"["nope"]"#, "[]"] {
            let config: Config = toml::from_str(&push_providers(bad)).unwrap();
            let err = format!("{:#}", config.finish().unwrap_err());
            assert!(err.contains("providers.push"), "{bad}: {err}");
        }
    }
}
