//! A local stand-in for the providers' APIs, for dev mode and integration tests.
//!
//! It answers the SendGrid, Amazon SES, Twilio, Vonage, Slack, FCM and APNs endpoints the real
//! providers call, with their real wire formats: `202` and `X-Message-Id` for SendGrid,
//! `200 {"MessageId"}` for SES (every request's SigV4 signature verified, see `ses.rs`), `201`
//! and a Message
//! resource (`sid` is `SM` and 32 hex digits) for Twilio, `200` and
//! `{"message-count","messages"}` for Vonage (errors as a non-zero `status`, as Vonage does),
//! `200 ok` for Slack, Google's OAuth2 token endpoint and `messages:send` for FCM (see `fcm.rs`),
//! `POST /3/device/{token}` over HTTP/2 without TLS for APNs (see `apns.rs`), and each provider's
//! own error bodies. The push fakes verify the real signatures (RS256 assertions, ES256 provider
//! tokens) with built-in test-only keys unless configured otherwise, and have designated device
//! tokens that answer "token invalid" (FCM `unregistered...`/`invalid...`, APNs
//! `dead...`/`bad...`). It also
//! receives signed webhooks (`POST /sandbox/webhook`) and verifies their Standard Webhooks
//! signature, as a receiver would. It checks credentials (401 in the provider's
//! shape), validates bodies (400 in the provider's shape) and injects latency and failures per
//! provider (see [`Behaviour`]): 500/503, 429 with `Retry-After`, and hangs that take the message
//! but answer too late, which is how unknown outcomes happen for real.
//!
//! Twilio's documented test numbers work as with Twilio's test credentials, so fallbacks can be
//! driven deterministically: `To` = `+15005550001` (invalid, 21211), `+15005550002` (unroutable,
//! 21612), `+15005550003` (no permission for the region, 21408), `+15005550004` (unsubscribed,
//! 21610), `+15005550009` (not a mobile number, 21614); `From` = `+15005550001` (invalid, 21212),
//! `+15005550007` (not owned, 21606), `+15005550008` (queue full, 21611).
//!
//! [`serve_smtp`] adds a local SMTP relay on a listener of its own (plain text, this host only,
//! AUTH with the `[sandbox.smtp]` credentials), so dev mode's SMTP provider has somewhere to send;
//! its messages are kept and counted like the others (`provider=smtp`), one request per
//! transaction, and its behaviour shows as `451` replies and late `250`s.
//!
//! Inspection endpoints:
//! - `GET /sandbox/stats`: per provider, requests received, accepted and failed by kind.
//! - `GET /sandbox/messages?provider=sendgrid[&limit=N]`: the last accepted messages (at most
//!   `messages_kept_max` per provider), oldest first, with their full request bodies. These hold
//!   recipients' addresses: the sandbox is a dev tool and must never face real traffic.
//! - `POST /sandbox/reset`: clears stats and messages.
//! - `GET`/`PUT /sandbox/behaviour/{provider}`: reads or replaces a provider's [`Behaviour`] at
//!   run time (start an outage in the middle of a demo).
//!
//! The caller binds the listener ([`serve`], or [`serve_with`] to keep a [`Sandbox`] handle for
//! in-process stats); tests bind port 0. [`dev_provider_configs`] points the real providers at a
//! sandbox with its default credentials, [`dev_push_configs`] the push providers.

mod apns;
mod config;
mod fcm;
#[cfg(all(test, feature = "http"))]
mod push_tests;
mod receipts;
mod sendgrid;
mod ses;
mod slack;
mod smtp;
pub mod sns;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_sms_chat;
mod twilio;
mod vonage;
mod webhook;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::{
    Behaviour, HANG_MS_MAX, LATENCY_MS_MAX, MESSAGES_KEPT_DEFAULT, MESSAGES_KEPT_MAX,
    RETRY_AFTER_SECS_MAX, SENDGRID_KEY_DEFAULT, SandboxConfig, SendGridSandbox,
    TWILIO_ACCOUNT_DEFAULT, TWILIO_TOKEN_DEFAULT, TwilioSandbox,
};
pub use config::{
    SES_ACCESS_KEY_ID_DEFAULT, SES_REGION_DEFAULT, SES_SECRET_KEY_DEFAULT, SMTP_PASSWORD_DEFAULT,
    SMTP_USERNAME_DEFAULT, SesSandbox, SmtpSandbox,
};
pub use config::{
    SLACK_TOKEN_DEFAULT, SlackSandbox, VONAGE_KEY_DEFAULT, VONAGE_SECRET_DEFAULT, VonageSandbox,
    WEBHOOK_SECRET_DEFAULT, WebhookSandbox,
};
pub use receipts::{LATE_MS_MAX, ReceiptBehaviour};
pub use ses::{dev_ses_config, ses_tags};
pub use smtp::{dev_smtp_config, serve_smtp};

pub use apns::{
    APNS_KEY_ID_DEFAULT, APNS_KEY_TEST_ONLY, APNS_TEAM_DEFAULT, APNS_TOPIC_DEFAULT, ApnsSandbox,
};
pub use fcm::{FCM_PROJECT_DEFAULT, FCM_SERVICE_ACCOUNT_TEST_ONLY, FcmSandbox};

use crate::{Error, Secret};

/// The largest request body accepted, in bytes. A notification is a few KiB; SendGrid's own cap
/// (30 MB, for attachments) is far beyond anything courant sends. Larger bodies get a 413.
pub const BODY_BYTES_MAX: usize = 1024 * 1024;

/// The most messages one `GET /sandbox/messages` returns.
pub const MESSAGES_PAGE_MAX: usize = 10_000;

/// A faked provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxProvider {
    /// SendGrid v3 mail send.
    Sendgrid,
    /// Twilio Messages.
    Twilio,
    /// Vonage's SMS API.
    Vonage,
    /// The receiver of signed webhooks.
    Webhook,
    /// Slack incoming webhooks.
    Slack,
    /// FCM HTTP v1 (and Google's OAuth2 token endpoint).
    Fcm,
    /// APNs (HTTP/2).
    Apns,
    /// Amazon SES v2 SendEmail.
    Ses,
    /// The local SMTP relay.
    Smtp,
}

/// How many providers the sandbox fakes.
const PROVIDERS: usize = 9;

impl SandboxProvider {
    fn index(self) -> usize {
        match self {
            SandboxProvider::Sendgrid => 0,
            SandboxProvider::Twilio => 1,
            SandboxProvider::Vonage => 2,
            SandboxProvider::Webhook => 3,
            SandboxProvider::Slack => 4,
            SandboxProvider::Fcm => 5,
            SandboxProvider::Apns => 6,
            SandboxProvider::Ses => 7,
            SandboxProvider::Smtp => 8,
        }
    }

    /// The config section naming its behaviour in errors.
    fn scope(self) -> &'static str {
        match self {
            SandboxProvider::Sendgrid => "sandbox.sendgrid",
            SandboxProvider::Twilio => "sandbox.twilio",
            SandboxProvider::Vonage => "sandbox.vonage",
            SandboxProvider::Webhook => "sandbox.webhook",
            SandboxProvider::Slack => "sandbox.slack",
            SandboxProvider::Fcm => "sandbox.fcm",
            SandboxProvider::Apns => "sandbox.apns",
            SandboxProvider::Ses => "sandbox.ses",
            SandboxProvider::Smtp => "sandbox.smtp",
        }
    }
}

/// Per-provider request counts. Every request lands in exactly one bucket once answered, so
/// `received == accepted + failed.total()` when no request is in flight.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderStats {
    /// Requests received.
    pub received: u64,
    /// Requests answered with success.
    pub accepted: u64,
    /// Requests answered otherwise, by kind.
    pub failed: FailedStats,
}

/// Failed requests by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedStats {
    /// Wrong or missing credentials (401).
    pub unauthorized: u64,
    /// Malformed requests, wrong account or sender (400/404).
    pub invalid: u64,
    /// Refused recipients (Twilio test numbers).
    pub recipient: u64,
    /// Injected 500/503.
    pub server_error: u64,
    /// Injected 429 (and Twilio's queue-full test sender).
    pub rate_limited: u64,
    /// Injected hangs: the message was taken, the answer came too late.
    pub hung: u64,
}

impl FailedStats {
    /// All failures.
    pub fn total(&self) -> u64 {
        self.unauthorized
            + self.invalid
            + self.recipient
            + self.server_error
            + self.rate_limited
            + self.hung
    }
}

/// The counts of every provider, as `GET /sandbox/stats` returns them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// The fake SendGrid.
    pub sendgrid: ProviderStats,
    /// The fake Twilio.
    pub twilio: ProviderStats,
    /// The fake Vonage.
    #[serde(default)]
    pub vonage: ProviderStats,
    /// The fake webhook receiver.
    #[serde(default)]
    pub webhook: ProviderStats,
    /// The fake Slack.
    #[serde(default)]
    pub slack: ProviderStats,
    /// The fake FCM (`messages:send` only; token requests are not counted).
    #[serde(default)]
    pub fcm: ProviderStats,
    /// The fake APNs.
    #[serde(default)]
    pub apns: ProviderStats,
    /// The fake Amazon SES.
    #[serde(default)]
    pub ses: ProviderStats,
    /// The local SMTP relay (one request per transaction).
    #[serde(default)]
    pub smtp: ProviderStats,
}

/// One message the sandbox took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxMessage {
    /// The id it answered with (`X-Message-Id`, or the `SM...` sid).
    pub message_id: String,
    /// When it arrived, ms since the Unix epoch.
    pub received_at_ms: u64,
    /// The recipient (`personalizations[0].to[0].email`, or `To`).
    pub to: String,
    /// courant's notification id, from `custom_args` or the `StatusCallback` URL, when present.
    pub notification_id: Option<String>,
    /// Whether the answer was sent in time; `false` for an injected hang.
    pub answered: bool,
    /// The whole request body: SendGrid's JSON, or Twilio's form as a JSON object.
    pub request: serde_json::Value,
}

/// What the draw for one request decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Answer 500 or 503.
    ServerError(u16),
    /// Answer 429 with this `Retry-After`.
    RateLimited(u64),
    /// Take the message, answer after this long.
    Hang(Duration),
}

/// What happened to a request, for the stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counted {
    Accepted,
    Unauthorized,
    Invalid,
    Recipient,
    ServerError,
    RateLimited,
    Hung,
}

/// The mutable part, behind one mutex: held for counter updates and draws only, never across an
/// await, so contention is a few hundred nanoseconds per request.
#[derive(Debug)]
struct Inner {
    rng: StdRng,
    behaviour: [Behaviour; PROVIDERS],
    stats: [ProviderStats; PROVIDERS],
    messages: [VecDeque<SandboxMessage>; PROVIDERS],
    /// The fake FCM's issued access tokens.
    fcm_tokens: fcm::Issued,
}

#[derive(Debug)]
struct Shared {
    sendgrid_key: Secret,
    twilio_account: String,
    twilio_token: Secret,
    vonage_key: String,
    vonage_secret: Secret,
    /// The decoded `whsec_` secret signed webhooks are verified with.
    webhook_key: Vec<u8>,
    slack_token: Secret,
    ses_access_key_id: String,
    ses_secret_key: Secret,
    ses_region: String,
    smtp_username: String,
    smtp_password: Secret,
    messages_kept_max: usize,
    /// Each provider's receipts (fixed at start): SendGrid's, Twilio's, SES's.
    receipts: [ReceiptBehaviour; 3],
    /// Where the fake SES publishes its events (an SNS subscription's endpoint).
    ses_receipts_url: Option<String>,
    /// The SNS topic its notifications name.
    ses_topic_arn: String,
    /// Signs the fake SES's SNS notifications.
    sns: sns::SnsSigner,
    /// Where the fake SendGrid posts its receipts.
    sendgrid_receipts_url: Option<String>,
    /// The key the fake SendGrid signs its receipts with.
    signing_key: crate::sendgrid::webhook::SigningKey,
    /// The client receipts are posted with.
    client: reqwest::Client,
    /// The fake FCM's trusted service account.
    fcm: fcm::FcmTrust,
    /// The fake APNs's trusted key.
    apns: apns::ApnsTrust,
    inner: Mutex<Inner>,
    /// Flips to `true` on shutdown, releasing hung requests so graceful shutdown is quick.
    shutdown: watch::Sender<bool>,
}

/// The sandbox's state: a cheap, cloneable handle for the router and for tests.
#[derive(Debug, Clone)]
pub struct Sandbox {
    shared: Arc<Shared>,
}

impl Sandbox {
    /// A sandbox from a validated configuration.
    pub fn new(config: SandboxConfig) -> Result<Self, Error> {
        config.validate()?;
        let mut rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => rand::make_rng(),
        };
        // The receipts' signing key, from the sandbox's own generator (replayable with a seed).
        let signing_key = loop {
            let bytes: [u8; 32] = rng.random();
            if let Ok(key) = crate::sendgrid::webhook::SigningKey::from_slice(&bytes) {
                break key;
            }
        };
        let sns = sns::SnsSigner::new()
            .map_err(|reason| Error::config("sandbox.ses", "receipts", reason))?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|source| Error::Client { provider: "sandbox".into(), source })?;
        let (shutdown, _) = watch::channel(false);
        // `validate` checked it decodes.
        let webhook_key =
            crate::webhook::secret_key(config.webhook.secret.expose()).unwrap_or_default();
        let fcm = config.fcm.trust()?;
        let apns = config.apns.trust()?;
        Ok(Self {
            shared: Arc::new(Shared {
                sendgrid_key: config.sendgrid.api_key,
                twilio_account: config.twilio.account_sid,
                twilio_token: config.twilio.auth_token,
                ses_access_key_id: config.ses.access_key_id,
                ses_secret_key: config.ses.secret_access_key,
                ses_region: config.ses.region,
                smtp_username: config.smtp.username,
                smtp_password: config.smtp.password,
                receipts: [config.sendgrid.receipts, config.twilio.receipts, config.ses.receipts],
                ses_receipts_url: config.ses.receipts_url,
                ses_topic_arn: config.ses.topic_arn,
                sns,
                sendgrid_receipts_url: config.sendgrid.receipts_url,
                signing_key,
                client,
                vonage_key: config.vonage.api_key,
                vonage_secret: config.vonage.api_secret,
                webhook_key,
                slack_token: config.slack.token,
                messages_kept_max: config.messages_kept_max,
                fcm,
                apns,
                inner: Mutex::new(Inner {
                    rng,
                    behaviour: [
                        config.sendgrid.behaviour,
                        config.twilio.behaviour,
                        config.vonage.behaviour,
                        config.webhook.behaviour,
                        config.slack.behaviour,
                        config.fcm.behaviour,
                        config.apns.behaviour,
                        config.ses.behaviour,
                        config.smtp.behaviour,
                    ],
                    stats: Default::default(),
                    messages: Default::default(),
                    fcm_tokens: fcm::Issued::default(),
                }),
                shutdown,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves counters, not invariants, half-updated; the
        // sandbox keeps serving rather than failing every later request.
        self.shared.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The public key the fake SendGrid's receipts verify with, as SendGrid shows it (base64
    /// DER SPKI): what `[providers.<name>.event_webhook] public_key` must be.
    pub fn sendgrid_webhook_key(&self) -> String {
        crate::sendgrid::webhook::public_key(&self.shared.signing_key).to_base64_der()
    }

    /// The certificate the fake SES's SNS notifications verify with (PEM): what
    /// `[webhooks.ses.<name>] certificate_pem_file` must hold.
    pub fn ses_signing_cert_pem(&self) -> &str {
        self.shared.sns.cert_pem()
    }

    /// The SNS topic the fake SES's notifications name.
    pub fn ses_topic_arn(&self) -> &str {
        &self.shared.ses_topic_arn
    }

    /// The counts so far.
    pub fn stats(&self) -> Stats {
        let inner = self.lock();
        let stats = |p: SandboxProvider| inner.stats[p.index()].clone();
        Stats {
            sendgrid: stats(SandboxProvider::Sendgrid),
            twilio: stats(SandboxProvider::Twilio),
            vonage: stats(SandboxProvider::Vonage),
            webhook: stats(SandboxProvider::Webhook),
            slack: stats(SandboxProvider::Slack),
            fcm: stats(SandboxProvider::Fcm),
            apns: stats(SandboxProvider::Apns),
            ses: stats(SandboxProvider::Ses),
            smtp: stats(SandboxProvider::Smtp),
        }
    }

    /// The messages `provider` took, oldest first.
    pub fn messages(&self, provider: SandboxProvider) -> Vec<SandboxMessage> {
        self.lock().messages[provider.index()].iter().cloned().collect()
    }

    /// The behaviour of `provider`.
    pub fn behaviour(&self, provider: SandboxProvider) -> Behaviour {
        self.lock().behaviour[provider.index()].clone()
    }

    /// Replaces the behaviour of `provider`, after validating it.
    pub fn set_behaviour(
        &self,
        provider: SandboxProvider,
        behaviour: Behaviour,
    ) -> Result<(), Error> {
        behaviour.validate(provider.scope())?;
        self.lock().behaviour[provider.index()] = behaviour;
        Ok(())
    }

    /// Clears stats and messages.
    pub fn reset(&self) {
        let mut inner = self.lock();
        inner.stats = Default::default();
        inner.messages = Default::default();
    }

    /// Releases hung requests; called by [`serve`] when its shutdown signal fires.
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }

    /// Counts a request in and draws its latency and fault. Drawing on arrival, in arrival
    /// order, is what makes a seeded run replayable.
    fn admit(&self, provider: SandboxProvider) -> (Duration, Option<Fault>) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.stats[provider.index()].received += 1;
        let b = &inner.behaviour[provider.index()];
        let jitter = if b.jitter_ms > 0 { inner.rng.random_range(0..=b.jitter_ms) } else { 0 };
        let delay = Duration::from_millis(b.latency_ms + jitter);
        let draw: f64 = inner.rng.random();
        let fault = if draw < b.hang_rate {
            Some(Fault::Hang(Duration::from_millis(b.hang_ms)))
        } else if draw < b.hang_rate + b.rate_limited_rate {
            Some(Fault::RateLimited(b.retry_after_secs))
        } else if draw < b.hang_rate + b.rate_limited_rate + b.server_error_rate {
            Some(Fault::ServerError(if inner.rng.random::<bool>() { 500 } else { 503 }))
        } else {
            None
        };
        (delay, fault)
    }

    fn count(&self, provider: SandboxProvider, what: Counted) {
        let mut inner = self.lock();
        let stats = &mut inner.stats[provider.index()];
        let counter = match what {
            Counted::Accepted => &mut stats.accepted,
            Counted::Unauthorized => &mut stats.failed.unauthorized,
            Counted::Invalid => &mut stats.failed.invalid,
            Counted::Recipient => &mut stats.failed.recipient,
            Counted::ServerError => &mut stats.failed.server_error,
            Counted::RateLimited => &mut stats.failed.rate_limited,
            Counted::Hung => &mut stats.failed.hung,
        };
        *counter += 1;
    }

    fn record(&self, provider: SandboxProvider, message: SandboxMessage) {
        let kept_max = self.shared.messages_kept_max;
        let mut inner = self.lock();
        let messages = &mut inner.messages[provider.index()];
        while messages.len() >= kept_max {
            messages.pop_front();
        }
        messages.push_back(message);
    }

    /// A SendGrid-style message id: 22 characters of the URL-safe base64 alphabet.
    fn sendgrid_message_id(&self) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut inner = self.lock();
        (0..22).map(|_| char::from(ALPHABET[inner.rng.random_range(0..64)])).collect()
    }

    /// 32 random lowercase hex digits (FCM message names, access tokens, APNs ids).
    fn random_hex(&self) -> String {
        let mut inner = self.lock();
        let (a, b): (u64, u64) = (inner.rng.random(), inner.rng.random());
        format!("{a:016x}{b:016x}")
    }

    /// A Twilio message SID: `SM` + 32 lowercase hex digits.
    fn twilio_sid(&self) -> String {
        let mut inner = self.lock();
        let (a, b): (u64, u64) = (inner.rng.random(), inner.rng.random());
        format!("SM{a:016x}{b:016x}")
    }

    /// A Vonage message id: 16 uppercase hex digits.
    fn vonage_message_id(&self) -> String {
        let value: u64 = self.lock().rng.random();
        format!("{value:016X}")
    }

    /// Waits out an injected hang, or until shutdown.
    async fn hang(&self, duration: Duration) {
        let mut shutdown = self.shared.shutdown.subscribe();
        if *shutdown.borrow() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(duration) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// The sandbox's routes.
pub fn router(sandbox: Sandbox) -> Router {
    Router::new()
        .route("/v3/mail/send", post(sendgrid::mail_send))
        .route("/2010-04-01/Accounts/{account_sid}/Messages.json", post(twilio::create_message))
        .route("/sms/json", post(vonage::send_sms))
        .route("/sandbox/webhook", post(webhook::receive))
        .route("/services/{team}/{bot}/{token}", post(slack::post_message))
        .route("/token", post(fcm::token))
        .route("/v1/projects/{project}/messages:send", post(fcm::send))
        .route("/3/device/{token}", post(apns::push))
        .route(crate::ses::SEND_EMAIL_PATH, post(ses::send_email))
        .route("/sandbox/stats", get(stats))
        .route("/sandbox/messages", get(messages))
        .route("/sandbox/reset", post(reset))
        .route("/sandbox/behaviour/{provider}", get(get_behaviour).put(put_behaviour))
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(sandbox)
}

/// Serves a sandbox built from `config` on `listener` until `shutdown` completes, then releases
/// hung requests and drains the rest. An invalid configuration is an `InvalidInput` error.
pub async fn serve(
    listener: TcpListener,
    config: SandboxConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let sandbox = Sandbox::new(config)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    serve_with(listener, sandbox, shutdown).await
}

/// Like [`serve`], with a sandbox the caller keeps a handle to (to read its stats in-process).
pub async fn serve_with(
    listener: TcpListener,
    sandbox: Sandbox,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(sandbox.clone());
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "Provider sandbox listening.");
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            sandbox.shutdown();
        })
        .await
}

async fn stats(State(sandbox): State<Sandbox>) -> Json<Stats> {
    Json(sandbox.stats())
}

/// `GET /sandbox/messages` parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessagesQuery {
    /// Which provider.
    provider: SandboxProvider,
    /// At most this many, the most recent (default and cap [`MESSAGES_PAGE_MAX`]).
    limit: Option<usize>,
}

async fn messages(
    State(sandbox): State<Sandbox>,
    query: Result<Query<MessagesQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return sandbox_error(
            StatusCode::BAD_REQUEST,
            "expected ?provider=sendgrid (or twilio, vonage, webhook, slack, fcm, apns, ses, smtp), \
             optionally &limit=N",
        );
    };
    let all = sandbox.messages(query.provider);
    let limit = query.limit.unwrap_or(MESSAGES_PAGE_MAX).min(MESSAGES_PAGE_MAX);
    let skip = all.len().saturating_sub(limit);
    Json(all.into_iter().skip(skip).collect::<Vec<_>>()).into_response()
}

async fn reset(State(sandbox): State<Sandbox>) -> StatusCode {
    sandbox.reset();
    StatusCode::NO_CONTENT
}

async fn get_behaviour(
    State(sandbox): State<Sandbox>,
    provider: Result<Path<SandboxProvider>, axum::extract::rejection::PathRejection>,
) -> Response {
    match provider {
        Ok(Path(provider)) => Json(sandbox.behaviour(provider)).into_response(),
        Err(_) => sandbox_error(StatusCode::NOT_FOUND, "unknown provider"),
    }
}

async fn put_behaviour(
    State(sandbox): State<Sandbox>,
    provider: Result<Path<SandboxProvider>, axum::extract::rejection::PathRejection>,
    behaviour: Result<Json<Behaviour>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Path(provider)) = provider else {
        return sandbox_error(StatusCode::NOT_FOUND, "unknown provider");
    };
    let behaviour = match behaviour {
        Ok(Json(behaviour)) => behaviour,
        Err(rejection) => return sandbox_error(StatusCode::BAD_REQUEST, &rejection.body_text()),
    };
    match sandbox.set_behaviour(provider, behaviour) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => sandbox_error(StatusCode::BAD_REQUEST, &error.to_string()),
    }
}

fn sandbox_error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// Now, in ms since the Unix epoch (the sandbox is shell code and reads the clock).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The DER bytes of the first PEM block in `pem`.
fn pem_der(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN "))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END "))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body.trim()).ok()
}

/// An RFC 2822 date in GMT (`Thu, 24 Aug 2023 05:01:45 +0000`), the format of Twilio's
/// `date_created`.
fn rfc2822(unix_secs: u64) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let days = unix_secs / 86_400;
    let secs = unix_secs % 86_400;
    // Howard Hinnant's civil-from-days, for days since 1970-01-01 (a Thursday).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60,
    )
}

/// Provider configs pointing at a sandbox on `base_url` with its default credentials, for
/// `courant dev`: `sendgrid` sends from `courant@dev.example`, `twilio` from Twilio's valid test
/// number `+15005550006`, no status callbacks and no event webhook (`courant dev` adds both,
/// pointing at its own API, with the key of the sandbox it starts).
pub fn dev_provider_configs(
    base_url: &str,
) -> (crate::sendgrid::SendGridConfig, crate::twilio::TwilioConfig) {
    let sendgrid = crate::sendgrid::SendGridConfig {
        base_url: base_url.to_owned(),
        api_key: config::sendgrid_key_default(),
        from: steps::model::EmailAddress::parse("courant@dev.example")
            .unwrap_or_else(|_| unreachable!("a valid constant")),
        from_name: Some("courant dev".to_owned()),
        timeout_ms: crate::options::TIMEOUT_MS_DEFAULT,
        connect_timeout_ms: crate::options::CONNECT_TIMEOUT_MS_DEFAULT,
        event_webhook: None,
    };
    let twilio = crate::twilio::TwilioConfig {
        base_url: base_url.to_owned(),
        account_sid: TWILIO_ACCOUNT_DEFAULT.to_owned(),
        auth_token: config::twilio_token_default(),
        api_key_sid: None,
        from: Some("+15005550006".to_owned()),
        messaging_service_sid: None,
        status_callback_base_url: None,
        webhook_auth_token: None,
        timeout_ms: crate::options::TIMEOUT_MS_DEFAULT,
        connect_timeout_ms: crate::options::CONNECT_TIMEOUT_MS_DEFAULT,
    };
    (sendgrid, twilio)
}

/// Provider configs for the SMS failover and chat routes of `courant dev`, pointing at a sandbox
/// on `base_url` with its default credentials: `vonage` (sender `courant`, no receipt callback),
/// `webhook` (POSTs to the sandbox's signed-webhook receiver) and `slack` (the sandbox's fake
/// incoming webhook).
pub fn dev_chat_provider_configs(
    base_url: &str,
) -> (crate::vonage::VonageConfig, crate::webhook::WebhookConfig, crate::slack::SlackConfig) {
    let base = base_url.trim_end_matches('/');
    let vonage = crate::vonage::VonageConfig {
        base_url: base.to_owned(),
        api_key: VONAGE_KEY_DEFAULT.to_owned(),
        api_secret: config::vonage_secret_default(),
        from: "courant".to_owned(),
        callback_base_url: None,
        signature_secret: None,
        signature_method: crate::vonage::SignatureMethod::default(),
        timeout_ms: crate::options::TIMEOUT_MS_DEFAULT,
        connect_timeout_ms: crate::options::CONNECT_TIMEOUT_MS_DEFAULT,
    };
    let webhook = crate::webhook::WebhookConfig {
        url: format!("{base}/sandbox/webhook"),
        secret: config::webhook_secret_default(),
        timeout_ms: crate::options::TIMEOUT_MS_DEFAULT,
        connect_timeout_ms: crate::options::CONNECT_TIMEOUT_MS_DEFAULT,
    };
    let slack_url = format!("{base}/services/T00000000/B00000000/{SLACK_TOKEN_DEFAULT}");
    let slack = crate::slack::SlackConfig {
        webhook_url: Secret::new(slack_url).unwrap_or_else(|_| {
            unreachable!("the sandbox's own address is short and has no whitespace")
        }),
        timeout_ms: crate::options::TIMEOUT_MS_DEFAULT,
        connect_timeout_ms: crate::options::CONNECT_TIMEOUT_MS_DEFAULT,
    };
    (vonage, webhook, slack)
}

/// FCM and APNs provider configs pointing at a sandbox on `base_url`, for `courant dev`: the
/// built-in test-only keys are written into `dir` (the providers read keys from files) and the
/// providers trust them as the sandbox does.
pub fn dev_push_configs(
    base_url: &str,
    dir: &std::path::Path,
) -> std::io::Result<(crate::fcm::FcmConfig, crate::apns::ApnsConfig)> {
    std::fs::create_dir_all(dir)?;
    let service_account_file = dir.join("fcm-service-account-test-only.json");
    std::fs::write(&service_account_file, FCM_SERVICE_ACCOUNT_TEST_ONLY)?;
    let key_file = dir.join("apns-test-only.p8");
    std::fs::write(&key_file, APNS_KEY_TEST_ONLY)?;
    let fcm = crate::fcm::FcmConfig {
        base_url: base_url.to_owned(),
        project_id: FCM_PROJECT_DEFAULT.to_owned(),
        service_account_file,
        token_uri: Some(format!("{base_url}/token")),
        timeout_ms: crate::options::TIMEOUT_MS_DEFAULT,
        connect_timeout_ms: crate::options::CONNECT_TIMEOUT_MS_DEFAULT,
    };
    let apns = crate::apns::ApnsConfig {
        base_url: base_url.to_owned(),
        team_id: APNS_TEAM_DEFAULT.to_owned(),
        key_id: APNS_KEY_ID_DEFAULT.to_owned(),
        key_file,
        topic: APNS_TOPIC_DEFAULT.to_owned(),
        timeout_ms: crate::options::TIMEOUT_MS_DEFAULT,
        connect_timeout_ms: crate::options::CONNECT_TIMEOUT_MS_DEFAULT,
    };
    Ok((fcm, apns))
}
