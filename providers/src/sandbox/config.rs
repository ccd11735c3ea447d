//! The sandbox's configuration.
//!
//! ```toml
//! [sandbox]
//! seed = 7                        # optional: replayable latency, faults and ids
//! messages_kept_max = 1000
//!
//! [sandbox.sendgrid]
//! api_key = "sandbox-sendgrid-key"
//!
//! [sandbox.sendgrid.behaviour]
//! latency_ms = 5
//! jitter_ms = 0
//! server_error_rate = 0.0         # answers 500 or 503
//! rate_limited_rate = 0.0         # answers 429 with Retry-After
//! retry_after_secs = 1
//! hang_rate = 0.0                 # takes the message, answers after hang_ms
//! hang_ms = 30000
//!
//! [sandbox.twilio]
//! account_sid = "AC00000000000000000000000000000000"
//! auth_token = "sandbox-twilio-token"
//!
//! [sandbox.twilio.behaviour]
//! latency_ms = 5
//!
//! [sandbox.sendgrid.receipts]     # signed receipts (see `receipts.rs`); same keys for twilio
//! enabled = true
//! delay_ms = 50
//! undelivered_rate = 0.0
//! lost_rate = 0.0
//! duplicated_rate = 0.0
//! reordered_rate = 0.0
//! late_rate = 0.0
//! late_ms = 10000
//! ```
//! and `sandbox.sendgrid.receipts_url` names courant's SendGrid webhook URL.

use serde::{Deserialize, Serialize};

use crate::{Error, Secret};

/// Default accepted messages kept per provider.
pub const MESSAGES_KEPT_DEFAULT: usize = 1_000;
/// Most accepted messages kept per provider: each holds a whole request body, and the sandbox
/// must not become the memory hog of a long dev session.
pub const MESSAGES_KEPT_MAX: usize = 100_000;
/// Longest latency or jitter accepted, in ms.
pub const LATENCY_MS_MAX: u64 = 60_000;
/// Longest hang accepted, in ms.
pub const HANG_MS_MAX: u64 = 600_000;
/// Longest `Retry-After` accepted, in seconds (a day, like `steps::outcome::parse_retry_after_secs`).
pub const RETRY_AFTER_SECS_MAX: u64 = 86_400;

/// The default SendGrid key the sandbox accepts (dev mode only; not a real key).
pub const SENDGRID_KEY_DEFAULT: &str = "sandbox-sendgrid-key";
/// The default Twilio account SID the sandbox accepts.
pub const TWILIO_ACCOUNT_DEFAULT: &str = "AC00000000000000000000000000000000";
/// The default Twilio auth token the sandbox accepts (dev mode only; not a real token).
pub const TWILIO_TOKEN_DEFAULT: &str = "sandbox-twilio-token";

/// The sandbox's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// The seed of the sandbox's randomness (latency jitter, fault draws, message ids). With a
    /// seed, the same sequence of requests meets the same answers; without one, the sandbox seeds
    /// itself from the OS and runs differ.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Accepted messages kept per provider for `GET /sandbox/messages`; older ones are dropped
    /// (1..=100,000; default 1,000).
    #[serde(default = "messages_kept_default")]
    pub messages_kept_max: usize,
    /// The fake SendGrid.
    #[serde(default)]
    pub sendgrid: SendGridSandbox,
    /// The fake Twilio.
    #[serde(default)]
    pub twilio: TwilioSandbox,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            seed: None,
            messages_kept_max: MESSAGES_KEPT_DEFAULT,
            sendgrid: SendGridSandbox::default(),
            twilio: TwilioSandbox::default(),
        }
    }
}

fn messages_kept_default() -> usize {
    MESSAGES_KEPT_DEFAULT
}

/// The fake SendGrid's credentials and behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendGridSandbox {
    /// The only API key accepted (`Authorization: Bearer <key>`); anything else gets SendGrid's
    /// 401. Default `sandbox-sendgrid-key`.
    #[serde(default = "sendgrid_key_default")]
    pub api_key: Secret,
    /// Latency and injected failures.
    #[serde(default)]
    pub behaviour: Behaviour,
    /// Signed Event Webhook receipts after each message taken (off by default).
    #[serde(default)]
    pub receipts: super::receipts::ReceiptBehaviour,
    /// Where the receipts go: courant's `/v1/webhooks/sendgrid/{provider}` URL.
    #[serde(default)]
    pub receipts_url: Option<String>,
}

impl Default for SendGridSandbox {
    fn default() -> Self {
        Self {
            api_key: sendgrid_key_default(),
            behaviour: Behaviour::default(),
            receipts: Default::default(),
            receipts_url: None,
        }
    }
}

/// The fake Twilio's credentials and behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioSandbox {
    /// The account SID accepted, as basic-auth user and in the path. Default
    /// `AC00000000000000000000000000000000`.
    #[serde(default = "twilio_account_default")]
    pub account_sid: String,
    /// The auth token accepted as basic-auth password; anything else gets Twilio's 401 (20003).
    /// Default `sandbox-twilio-token`.
    #[serde(default = "twilio_token_default")]
    pub auth_token: Secret,
    /// Latency and injected failures.
    #[serde(default)]
    pub behaviour: Behaviour,
    /// Signed status callbacks to each message's `StatusCallback` (off by default).
    #[serde(default)]
    pub receipts: super::receipts::ReceiptBehaviour,
}

impl Default for TwilioSandbox {
    fn default() -> Self {
        Self {
            account_sid: twilio_account_default(),
            auth_token: twilio_token_default(),
            behaviour: Behaviour::default(),
            receipts: Default::default(),
        }
    }
}

pub(super) fn sendgrid_key_default() -> Secret {
    Secret::new(SENDGRID_KEY_DEFAULT).unwrap_or_else(|_| unreachable!("a valid constant"))
}

fn twilio_account_default() -> String {
    TWILIO_ACCOUNT_DEFAULT.to_owned()
}

pub(super) fn twilio_token_default() -> Secret {
    Secret::new(TWILIO_TOKEN_DEFAULT).unwrap_or_else(|_| unreachable!("a valid constant"))
}

/// How a fake provider behaves: latency, and the fractions of requests that fail on purpose.
///
/// For each authenticated, well-formed request one draw decides: a hang with probability
/// `hang_rate`, else a 429 with `rate_limited_rate`, else a 500/503 with `server_error_rate`,
/// else acceptance. The three rates must add up to at most 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Behaviour {
    /// Fixed latency before every answer, in ms (default 5: a fast but not instant provider,
    /// so concurrency bugs that need an await point still show up).
    #[serde(default = "latency_ms_default")]
    pub latency_ms: u64,
    /// Extra latency, uniform in `0..=jitter_ms`, in ms (default 0).
    #[serde(default)]
    pub jitter_ms: u64,
    /// Fraction of requests answered 500 or 503 (even odds), in `0..=1` (default 0).
    #[serde(default)]
    pub server_error_rate: f64,
    /// Fraction of requests answered 429 with `Retry-After: retry_after_secs` (default 0).
    #[serde(default)]
    pub rate_limited_rate: f64,
    /// The `Retry-After` of injected 429s, in seconds (default 1).
    #[serde(default = "retry_after_secs_default")]
    pub retry_after_secs: u64,
    /// Fraction of requests whose message is taken (recorded, as if sent) but whose answer only
    /// comes after `hang_ms`, past any sane client timeout: the lost-answer case that produces an
    /// unknown outcome (default 0).
    #[serde(default)]
    pub hang_rate: f64,
    /// How long a hung request waits before answering, in ms (default 30,000; a shutdown ends
    /// the wait early).
    #[serde(default = "hang_ms_default")]
    pub hang_ms: u64,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            latency_ms: latency_ms_default(),
            jitter_ms: 0,
            server_error_rate: 0.0,
            rate_limited_rate: 0.0,
            retry_after_secs: retry_after_secs_default(),
            hang_rate: 0.0,
            hang_ms: hang_ms_default(),
        }
    }
}

fn latency_ms_default() -> u64 {
    5
}

fn retry_after_secs_default() -> u64 {
    1
}

fn hang_ms_default() -> u64 {
    30_000
}

impl Behaviour {
    /// Checks the bounds; `scope` names the section in errors (`sandbox.twilio`).
    pub fn validate(&self, scope: &str) -> Result<(), Error> {
        let rates = [
            ("server_error_rate", self.server_error_rate),
            ("rate_limited_rate", self.rate_limited_rate),
            ("hang_rate", self.hang_rate),
        ];
        for (field, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(Error::config(scope, field, "must be between 0 and 1"));
            }
        }
        if rates.iter().map(|(_, r)| r).sum::<f64>() > 1.0 + f64::EPSILON {
            return Err(Error::config(
                scope,
                "server_error_rate",
                "the three rates must add up to at most 1",
            ));
        }
        if self.latency_ms > LATENCY_MS_MAX || self.jitter_ms > LATENCY_MS_MAX {
            return Err(Error::config(
                scope,
                "latency_ms",
                format!("latency and jitter must be at most {LATENCY_MS_MAX}"),
            ));
        }
        if self.hang_ms == 0 || self.hang_ms > HANG_MS_MAX {
            return Err(Error::config(
                scope,
                "hang_ms",
                format!("must be between 1 and {HANG_MS_MAX}"),
            ));
        }
        if self.retry_after_secs > RETRY_AFTER_SECS_MAX {
            return Err(Error::config(
                scope,
                "retry_after_secs",
                format!("must be at most {RETRY_AFTER_SECS_MAX}"),
            ));
        }
        Ok(())
    }
}

impl SandboxConfig {
    /// Checks every bound.
    pub fn validate(&self) -> Result<(), Error> {
        if !(1..=MESSAGES_KEPT_MAX).contains(&self.messages_kept_max) {
            return Err(Error::config(
                "sandbox",
                "messages_kept_max",
                format!("must be between 1 and {MESSAGES_KEPT_MAX}"),
            ));
        }
        crate::options::sid("sandbox.twilio", "account_sid", &self.twilio.account_sid, "AC")?;
        self.sendgrid.behaviour.validate("sandbox.sendgrid")?;
        self.twilio.behaviour.validate("sandbox.twilio")?;
        self.sendgrid.receipts.validate("sandbox.sendgrid")?;
        if let Some(url) = &self.sendgrid.receipts_url {
            crate::options::base_url("sandbox.sendgrid", "receipts_url", url)?;
        }
        self.twilio.receipts.validate("sandbox.twilio")
    }
}
