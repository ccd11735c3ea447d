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
//!
//! [sandbox.vonage]                # also [sandbox.vonage.behaviour], and so on below
//! api_key = "sandbox1"
//! api_secret = "sandbox-vonage-secret"
//!
//! [sandbox.webhook]
//! secret = "whsec_Y291cmFudC1zYW5kYm94LXdlYmhvb2stc2VjcmV0ISE="
//!
//! [sandbox.slack]
//! token = "sandbox-slack-token"
//!
//! [sandbox.ses]
//! access_key_id = "AKIASANDBOX000000000"
//! secret_access_key = "sandbox-ses-secret-key"
//! region = "us-east-1"
//!
//! [sandbox.ses.behaviour]
//! latency_ms = 5
//!
//! [sandbox.smtp]                  # the SMTP listener (dev mode)
//! username = "sandbox"
//! password = "sandbox-smtp-password"
//!
//! [sandbox.fcm]                   # all optional: the built-in test-only account by default
//! service_account_file = "fcm-service-account.json"
//! project_id = "courant-test"
//!
//! [sandbox.apns]                  # all optional: the built-in test-only key by default
//! key_file = "AuthKey.p8"
//! key_id = "KEY1234567"
//! team_id = "TEAM123456"
//! topic = "com.example.courant"
//! ```

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

/// The default Vonage API key the sandbox accepts.
pub const VONAGE_KEY_DEFAULT: &str = "sandbox1";
/// The default Vonage API secret the sandbox accepts (dev mode only; not a real secret).
pub const VONAGE_SECRET_DEFAULT: &str = "sandbox-vonage-secret";
/// The default signing secret the sandbox's webhook receiver verifies with (dev mode only).
pub const WEBHOOK_SECRET_DEFAULT: &str = "whsec_Y291cmFudC1zYW5kYm94LXdlYmhvb2stc2VjcmV0ISE=";
/// The default Slack webhook token the sandbox accepts (the last segment of the webhook URL).
pub const SLACK_TOKEN_DEFAULT: &str = "sandbox-slack-token";

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
    /// The fake Vonage SMS API.
    #[serde(default)]
    pub vonage: VonageSandbox,
    /// The fake receiver of signed webhooks.
    #[serde(default)]
    pub webhook: WebhookSandbox,
    /// The fake Slack incoming webhook.
    #[serde(default)]
    pub slack: SlackSandbox,
    /// The fake FCM.
    #[serde(default)]
    pub fcm: super::FcmSandbox,
    /// The fake APNs.
    #[serde(default)]
    pub apns: super::ApnsSandbox,
    /// The fake Amazon SES.
    #[serde(default)]
    pub ses: SesSandbox,
    /// The local SMTP relay.
    #[serde(default)]
    pub smtp: SmtpSandbox,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            seed: None,
            messages_kept_max: MESSAGES_KEPT_DEFAULT,
            sendgrid: SendGridSandbox::default(),
            twilio: TwilioSandbox::default(),
            vonage: VonageSandbox::default(),
            webhook: WebhookSandbox::default(),
            slack: SlackSandbox::default(),
            fcm: super::FcmSandbox::default(),
            apns: super::ApnsSandbox::default(),
            ses: SesSandbox::default(),
            smtp: SmtpSandbox::default(),
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

/// The default SES access key id the sandbox accepts (dev mode only; not a real key).
pub const SES_ACCESS_KEY_ID_DEFAULT: &str = "AKIASANDBOX000000000";
/// The default SES secret access key the sandbox signs with (dev mode only; not a real key).
pub const SES_SECRET_KEY_DEFAULT: &str = "sandbox-ses-secret-key";
/// The default SES region the sandbox expects in credential scopes.
pub const SES_REGION_DEFAULT: &str = "us-east-1";

/// The fake Amazon SES's credentials and behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SesSandbox {
    /// The only access key id accepted; any other gets SES's 403 `UnrecognizedClientException`.
    /// Default `AKIASANDBOX000000000`.
    #[serde(default = "ses_access_key_id_default")]
    pub access_key_id: String,
    /// The secret access key every signature is verified with; a signature made with another
    /// gets SES's 403 `InvalidSignatureException`. Default `sandbox-ses-secret-key`.
    #[serde(default = "ses_secret_key_default")]
    pub secret_access_key: Secret,
    /// The region credential scopes must name. Default `us-east-1`.
    #[serde(default = "ses_region_default")]
    pub region: String,
    /// Latency and injected failures.
    #[serde(default)]
    pub behaviour: Behaviour,
    /// SES events (Send, then Delivery or a permanent Bounce) published through a signed SNS
    /// notification after each message taken, like a configuration set's SNS destination (off
    /// by default).
    #[serde(default)]
    pub receipts: super::receipts::ReceiptBehaviour,
    /// Where the notifications go: courant's `/v1/webhooks/ses/{provider}` URL.
    #[serde(default)]
    pub receipts_url: Option<String>,
    /// The SNS topic the notifications name (courant's `[webhooks.ses.<name>] topic_arns`).
    #[serde(default = "ses_topic_arn_default")]
    pub topic_arn: String,
}

/// The SNS topic the fake SES publishes its events to.
pub const SES_TOPIC_ARN_DEFAULT: &str = "arn:aws:sns:us-east-1:000000000000:courant-sandbox-ses";

fn ses_topic_arn_default() -> String {
    SES_TOPIC_ARN_DEFAULT.to_owned()
}

impl Default for SesSandbox {
    fn default() -> Self {
        Self {
            access_key_id: ses_access_key_id_default(),
            secret_access_key: ses_secret_key_default(),
            region: ses_region_default(),
            behaviour: Behaviour::default(),
            receipts: Default::default(),
            receipts_url: None,
            topic_arn: ses_topic_arn_default(),
        }
    }
}

impl SesSandbox {
    fn validate(&self) -> Result<(), Error> {
        let key_ok = (16..=128).contains(&self.access_key_id.len())
            && self.access_key_id.bytes().all(|b| b.is_ascii_alphanumeric());
        if !key_ok {
            return Err(Error::config(
                "sandbox.ses",
                "access_key_id",
                "must be 16 to 128 letters and digits",
            ));
        }
        let region_ok = (1..=32).contains(&self.region.len())
            && self
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !region_ok {
            return Err(Error::config("sandbox.ses", "region", "must be an AWS region name"));
        }
        self.behaviour.validate("sandbox.ses")
    }
}

fn ses_access_key_id_default() -> String {
    SES_ACCESS_KEY_ID_DEFAULT.to_owned()
}

pub(super) fn ses_secret_key_default() -> Secret {
    Secret::new(SES_SECRET_KEY_DEFAULT).unwrap_or_else(|_| unreachable!("a valid constant"))
}

fn ses_region_default() -> String {
    SES_REGION_DEFAULT.to_owned()
}

/// The default SMTP user name the sandbox accepts.
pub const SMTP_USERNAME_DEFAULT: &str = "sandbox";
/// The default SMTP password the sandbox accepts (dev mode only).
pub const SMTP_PASSWORD_DEFAULT: &str = "sandbox-smtp-password";

/// The local SMTP relay's credentials and behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSandbox {
    /// The only AUTH user name accepted. Default `sandbox`.
    #[serde(default = "smtp_username_default")]
    pub username: String,
    /// The only AUTH password accepted; anything else gets `535`. Default
    /// `sandbox-smtp-password`.
    #[serde(default = "smtp_password_default")]
    pub password: Secret,
    /// Latency and injected failures (shown as `451` replies and late `250`s).
    #[serde(default)]
    pub behaviour: Behaviour,
}

impl Default for SmtpSandbox {
    fn default() -> Self {
        Self {
            username: smtp_username_default(),
            password: smtp_password_default(),
            behaviour: Behaviour::default(),
        }
    }
}

fn smtp_username_default() -> String {
    SMTP_USERNAME_DEFAULT.to_owned()
}

pub(super) fn smtp_password_default() -> Secret {
    Secret::new(SMTP_PASSWORD_DEFAULT).unwrap_or_else(|_| unreachable!("a valid constant"))
}

/// The fake Vonage's credentials and behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VonageSandbox {
    /// The API key accepted (`api_key` in the form). Default `sandbox1`.
    #[serde(default = "vonage_key_default")]
    pub api_key: String,
    /// The API secret accepted (`api_secret`); anything else gets status 4, Bad Credentials.
    /// Default `sandbox-vonage-secret`.
    #[serde(default = "vonage_secret_default")]
    pub api_secret: Secret,
    /// Latency and injected failures.
    #[serde(default)]
    pub behaviour: Behaviour,
}

impl Default for VonageSandbox {
    fn default() -> Self {
        Self {
            api_key: vonage_key_default(),
            api_secret: vonage_secret_default(),
            behaviour: Behaviour::default(),
        }
    }
}

fn vonage_key_default() -> String {
    VONAGE_KEY_DEFAULT.to_owned()
}

pub(super) fn vonage_secret_default() -> Secret {
    Secret::new(VONAGE_SECRET_DEFAULT).unwrap_or_else(|_| unreachable!("a valid constant"))
}

/// The fake webhook receiver's secret and behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSandbox {
    /// The secret `webhook-signature` is verified with (`whsec_` + base64); a bad signature gets
    /// 401. Default [`WEBHOOK_SECRET_DEFAULT`].
    #[serde(default = "webhook_secret_default")]
    pub secret: Secret,
    /// Latency and injected failures.
    #[serde(default)]
    pub behaviour: Behaviour,
}

impl Default for WebhookSandbox {
    fn default() -> Self {
        Self { secret: webhook_secret_default(), behaviour: Behaviour::default() }
    }
}

pub(super) fn webhook_secret_default() -> Secret {
    Secret::new(WEBHOOK_SECRET_DEFAULT).unwrap_or_else(|_| unreachable!("a valid constant"))
}

/// The fake Slack's token and behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackSandbox {
    /// The token accepted as the last segment of `/services/{team}/{bot}/{token}`; anything else
    /// gets Slack's 403 `invalid_token`. Default `sandbox-slack-token`.
    #[serde(default = "slack_token_default")]
    pub token: Secret,
    /// Latency and injected failures.
    #[serde(default)]
    pub behaviour: Behaviour,
}

impl Default for SlackSandbox {
    fn default() -> Self {
        Self { token: slack_token_default(), behaviour: Behaviour::default() }
    }
}

pub(super) fn slack_token_default() -> Secret {
    Secret::new(SLACK_TOKEN_DEFAULT).unwrap_or_else(|_| unreachable!("a valid constant"))
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
        if crate::webhook::secret_key(self.webhook.secret.expose()).is_none() {
            return Err(Error::config(
                "sandbox.webhook",
                "secret",
                "must be whsec_ followed by the base64 of 24 to 64 bytes",
            ));
        }
        self.sendgrid.behaviour.validate("sandbox.sendgrid")?;
        self.twilio.behaviour.validate("sandbox.twilio")?;
        self.vonage.behaviour.validate("sandbox.vonage")?;
        self.webhook.behaviour.validate("sandbox.webhook")?;
        self.slack.behaviour.validate("sandbox.slack")?;
        self.fcm.behaviour.validate("sandbox.fcm")?;
        self.apns.behaviour.validate("sandbox.apns")?;
        self.ses.validate()?;
        self.smtp.behaviour.validate("sandbox.smtp")?;
        self.sendgrid.receipts.validate("sandbox.sendgrid")?;
        if let Some(url) = &self.sendgrid.receipts_url {
            crate::options::base_url("sandbox.sendgrid", "receipts_url", url)?;
        }
        self.twilio.receipts.validate("sandbox.twilio")?;
        self.ses.receipts.validate("sandbox.ses")?;
        if let Some(url) = &self.ses.receipts_url {
            crate::options::base_url("sandbox.ses", "receipts_url", url)?;
        }
        if !self.ses.topic_arn.starts_with("arn:") || self.ses.topic_arn.len() > 256 {
            return Err(Error::config("sandbox.ses", "topic_arn", "must be an SNS topic ARN"));
        }
        Ok(())
    }
}
