//! Delivery receipts: the providers' webhooks.
//!
//! - `POST /v1/webhooks/sendgrid/{provider}`: SendGrid's Signed Event Webhook, for a SendGrid
//!   provider configured with `[providers.<name>.event_webhook]`.
//! - `POST /v1/webhooks/twilio/{provider}`: Twilio's status callbacks, for a Twilio provider
//!   with `status_callback_base_url` (the URL Twilio calls, which its signature covers).
//! - `POST /v1/webhooks/ses/{provider}`: SES event publishing through an SNS subscription,
//!   configured under `[webhooks.ses.<provider>]` ([`SesWebhookConfig`]). SNS signs the message
//!   (RSA over its canonical string of the fields; `providers::sns`), the topic must be one of
//!   ours, the certificate is pinned or fetched only from an SNS host (and cached), and a
//!   `SubscriptionConfirmation` is confirmed only by visiting an SNS host.
//! - `GET|POST /v1/webhooks/vonage/{provider}/{tenant}/{id}`: Vonage's delivery receipts (query,
//!   form or JSON), for a Vonage provider with `callback_base_url` **and** `signature_secret`
//!   (signed receipts, `sig` over the sorted fields; `providers::vonage::delivery_receipt`).
//!   Without a secret there is no route: an unsigned receipt could be forged by anyone.
//!
//! `{provider}` is the configured provider's name, so each provider (each account, each key)
//! has its own URL and its own secret. A provider that is not configured for receipts has no
//! route (404): a receipt is never taken unsigned.
//!
//! Every request is verified before anything is read from it, over the body's raw bytes as
//! received (`Bytes`, never re-serialised), by the pure functions of the providers crate
//! (`providers::sendgrid::webhook`, `providers::twilio::webhook`). A forged, unsigned or stale
//! request gets `401` and changes nothing, whatever check failed (the reason is logged, not
//! returned). Bodies are limited to [`BODY_BYTES_MAX`].
//!
//! A verified receipt's events are applied one by one (`apply`):
//! - delivered, undelivered, bounced: `Runner::receipt_for`, a compare-and-set on the record.
//!   Duplicated, reordered and late receipts are harmless: terminal states never move (except a
//!   dead letter's late delivery), and a negative receipt for an earlier attempt is ignored.
//! - accepted, deferred, opened, clicked: no state change; counted in the answer and logged with
//!   the notification id (engagement is not stored: courant has no engagement store).
//! - unsubscribed: the notification's category is switched off on its channel in the
//!   recipient's preferences (`Preferences::unsubscribe_from`); spam report: a global
//!   unsubscribe (`Preferences::unsubscribe_all`). Critical categories still go.
//!
//! The answer is `200` with the counts once every event is applied, so the provider stops
//! retrying; `503` when the store failed (the provider retries, and re-applying is harmless).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use providers::Secret;
use providers::receipt::{ReceiptEvent, ReceiptKind, Rejection};
use providers::sendgrid::webhook::{self as sendgrid, EventWebhookKey};
use providers::sns::{self, SigningCert, SnsMessage};
use providers::twilio::webhook as twilio;
use serde::{Deserialize, Serialize};
use serde_json::json;
use steps::model::{NotificationId, ProviderName, TenantId};
use tracing::Instrument as _;
use workflows::machine::Receipt;
use workflows::ports::{Clock, Directory, Store, StoreError};
use workflows::runner::{Received, Runner};

use crate::config::Config;
use crate::wiring::ProviderConfig;

/// The largest webhook body accepted, in bytes. SendGrid batches events (up to about a thousand
/// per post, well under 1 MiB); Twilio's callbacks are a few hundred bytes. Larger bodies get
/// 413 before they are buffered.
pub const BODY_BYTES_MAX: usize = 2 * 1024 * 1024;

/// A SendGrid provider's receipt settings.
#[derive(Debug, Clone)]
struct SendGridReceiver {
    key: EventWebhookKey,
    tolerance_s: u64,
}

/// A Twilio provider's receipt settings.
#[derive(Debug, Clone)]
struct TwilioReceiver {
    token: Secret,
    /// courant's public base URL as Twilio calls it, without a trailing slash.
    public_base: String,
}

/// Receipt webhooks configured outside a provider's own section: `[webhooks]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// SES events through SNS, by the name of the SES provider they are about:
    /// `POST /v1/webhooks/ses/{name}`.
    pub ses: BTreeMap<ProviderName, SesWebhookConfig>,
}

/// An SNS subscription carrying SES events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SesWebhookConfig {
    /// The SNS topic ARNs accepted; a message of any other topic is refused (401). At least one.
    pub topic_arns: Vec<String>,
    /// A PEM file holding SNS's signing certificate, pinned. Without it the certificate is
    /// fetched from the message's `SigningCertURL`, only from `https://sns.<region>.amazonaws.com/`
    /// and cached; with it nothing is ever fetched.
    #[serde(default)]
    pub certificate_pem_file: Option<PathBuf>,
    /// How far a message's `Timestamp` may be from our clock, in seconds (1..=86,400; default
    /// 3,600: SNS retries a delivery for about an hour).
    #[serde(default = "ses_tolerance_s_default")]
    pub tolerance_s: u64,
    /// Whether to confirm a subscription by visiting its `SubscribeURL` (only ever on an SNS
    /// host; default true).
    #[serde(default = "yes")]
    pub confirm_subscriptions: bool,
}

fn ses_tolerance_s_default() -> u64 {
    sns::TOLERANCE_S_DEFAULT
}

fn yes() -> bool {
    true
}

/// An SES provider's receipt settings.
#[derive(Debug, Clone)]
struct SesReceiver {
    topic_arns: Vec<String>,
    pinned: Option<SigningCert>,
    tolerance_s: u64,
    confirm_subscriptions: bool,
}

/// A Vonage provider's receipt settings: its signature secret and method.
#[derive(Debug, Clone)]
struct VonageReceiver {
    secret: Secret,
    method: providers::vonage::SignatureMethod,
}

/// The most fetched SNS certificates kept (SNS rotates them rarely; one per region in use).
const CERTS_CACHED_MAX: usize = 16;
/// The largest certificate fetched, in bytes.
const CERT_BYTES_MAX: usize = 16 * 1024;

/// The webhook secrets of every provider configured for receipts, by provider name.
#[derive(Debug, Clone, Default)]
pub struct Receivers {
    sendgrid: BTreeMap<ProviderName, SendGridReceiver>,
    twilio: BTreeMap<ProviderName, TwilioReceiver>,
    ses: BTreeMap<ProviderName, SesReceiver>,
    vonage: BTreeMap<ProviderName, VonageReceiver>,
    /// SNS certificates fetched, by URL.
    certs: Arc<Mutex<BTreeMap<String, SigningCert>>>,
}

impl Receivers {
    /// The receivers of the configured providers (the configuration is already validated).
    pub fn from_config(config: &Config) -> anyhow::Result<Receivers> {
        let mut receivers = Receivers::default();
        for (name, provider) in &config.providers {
            match provider {
                ProviderConfig::Sendgrid(c) => {
                    if let Some(webhook) = &c.event_webhook {
                        let key = EventWebhookKey::from_base64_der(&webhook.public_key).map_err(
                            |why| {
                                anyhow::anyhow!("providers.{name}.event_webhook.public_key: {why}")
                            },
                        )?;
                        receivers.sendgrid.insert(
                            name.clone(),
                            SendGridReceiver { key, tolerance_s: webhook.tolerance_s },
                        );
                    }
                }
                ProviderConfig::Twilio(c) => {
                    if let Some(base) = &c.status_callback_base_url {
                        receivers.twilio.insert(
                            name.clone(),
                            TwilioReceiver {
                                token: c.callback_token().clone(),
                                public_base: base.trim_end_matches('/').to_owned(),
                            },
                        );
                    }
                }
                ProviderConfig::Vonage(c) => {
                    if let (Some(_), Some(secret)) = (&c.callback_base_url, &c.signature_secret) {
                        receivers.vonage.insert(
                            name.clone(),
                            VonageReceiver { secret: secret.clone(), method: c.signature_method },
                        );
                    } else if c.callback_base_url.is_some() {
                        tracing::warn!(
                            provider = %name,
                            "Vonage receipts are requested but no signature_secret is set: they \
                             will be refused (an unsigned receipt could be forged)."
                        );
                    }
                }
                // Their receipts are not received here: SES's arrive through SNS
                // (`[webhooks.ses.<name>]`), push and chat answers are synchronous, the inbox
                // is ours.
                _ => {}
            }
        }
        for (name, ses) in &config.webhooks.ses {
            let section = format!("webhooks.ses.{name}");
            if ses.topic_arns.is_empty() {
                anyhow::bail!("{section}.topic_arns: name at least one SNS topic");
            }
            if ses.tolerance_s == 0 || ses.tolerance_s > 86_400 {
                anyhow::bail!("{section}.tolerance_s: must be between 1 and 86400");
            }
            let pinned = match &ses.certificate_pem_file {
                Some(path) => {
                    let pem = std::fs::read_to_string(path).map_err(|e| {
                        anyhow::anyhow!("{section}.certificate_pem_file {}: {e}", path.display())
                    })?;
                    Some(SigningCert::from_pem(&pem).map_err(|why| {
                        anyhow::anyhow!("{section}.certificate_pem_file {}: {why}", path.display())
                    })?)
                }
                None => None,
            };
            receivers.ses.insert(
                name.clone(),
                SesReceiver {
                    topic_arns: ses.topic_arns.clone(),
                    pinned,
                    tolerance_s: ses.tolerance_s,
                    confirm_subscriptions: ses.confirm_subscriptions,
                },
            );
        }
        Ok(receivers)
    }

    /// Whether any provider takes receipts.
    pub fn is_empty(&self) -> bool {
        self.sendgrid.is_empty()
            && self.twilio.is_empty()
            && self.ses.is_empty()
            && self.vonage.is_empty()
    }
}

/// What the webhook handlers share.
struct Shared<S, C> {
    runner: Arc<Runner<S, C>>,
    receivers: Receivers,
    /// Fetches SNS certificates and visits SNS subscribe URLs (only on SNS hosts), no redirects.
    client: reqwest::Client,
}

/// The webhook routes, with their own state and body limit; merged into the API's router.
pub fn routes<S, C>(runner: Arc<Runner<S, C>>, receivers: Receivers) -> Router
where
    S: Store + Directory,
    C: Clock,
{
    Router::new()
        .route("/v1/webhooks/sendgrid/{provider}", post(sendgrid_events::<S, C>))
        .route("/v1/webhooks/twilio/{provider}", post(twilio_status::<S, C>))
        .route("/v1/webhooks/ses/{provider}", post(ses_events::<S, C>))
        .route(
            "/v1/webhooks/vonage/{provider}/{tenant}/{id}",
            get(vonage_receipt::<S, C>).post(vonage_receipt::<S, C>),
        )
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(Arc::new(Shared { runner, receivers, client: sns_client() }))
}

/// How the events of one request came out.
#[derive(Debug, Default, Serialize)]
struct Tally {
    /// Moved a notification (delivered, failed).
    applied: u64,
    /// Taken but changing nothing: a duplicate, a late or out-of-order receipt, another
    /// attempt's or provider's.
    ignored: u64,
    /// Recorded without a state change (accepted, deferred, opened, clicked).
    recorded: u64,
    /// Changed the recipient's preferences (unsubscribe, spam report), or found them already so.
    preferences: u64,
    /// About a notification that does not exist (purged, or another installation's).
    not_found: u64,
    /// Events courant does not use, or not about one of our notifications.
    skipped: u64,
}

fn refused(provider: &str, rejection: Rejection) -> Response {
    tracing::warn!(%provider, reason = rejection.as_str(), "Webhook refused.");
    let body = json!({ "error": {
        "code": "unauthorized",
        "message": "the webhook signature does not verify",
    }});
    (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response()
}

/// The receiver configured for the provider named in the path, with its name.
fn configured<'a, R>(
    receivers: &'a BTreeMap<ProviderName, R>,
    provider: &str,
) -> Option<(&'a ProviderName, &'a R)> {
    ProviderName::new(provider).ok().and_then(|name| receivers.get_key_value(&name))
}

fn not_configured() -> Response {
    let body = json!({ "error": {
        "code": "not_found",
        "message": "no provider of that name takes receipts here",
    }});
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

fn unavailable(error: &StoreError) -> Response {
    tracing::error!(%error, "Store failed while applying a receipt.");
    let body = json!({ "error": {
        "code": "unavailable",
        "message": "the store is unavailable; retry later",
    }});
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

fn malformed() -> Response {
    let body = json!({ "error": {
        "code": "invalid_body",
        "message": "the body is not a receipt this route understands",
    }});
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

async fn sendgrid_events<S: Store + Directory, C: Clock>(
    State(shared): State<Arc<Shared<S, C>>>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((name, receiver)) = configured(&shared.receivers.sendgrid, &provider) else {
        return not_configured();
    };
    let now_s = shared.runner.clock().now_ms() / 1_000;
    let header = |name: &str| headers.get(name).map(|v| v.as_bytes());
    if let Err(rejection) = sendgrid::verify(
        &receiver.key,
        header(sendgrid::SIGNATURE_HEADER),
        header(sendgrid::TIMESTAMP_HEADER),
        &body,
        now_s,
        receiver.tolerance_s,
    ) {
        return refused(name.as_str(), rejection);
    }
    let Ok(parsed) = sendgrid::parse(&body) else { return malformed() };
    apply_all(&shared.runner, name, parsed).await
}

async fn twilio_status<S: Store + Directory, C: Clock>(
    State(shared): State<Arc<Shared<S, C>>>,
    Path(provider): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((name, receiver)) = configured(&shared.receivers.twilio, &provider) else {
        return not_configured();
    };
    // The URL Twilio called: our public base, this path, and the query exactly as received.
    let mut url =
        format!("{}{}/{name}", receiver.public_base, providers::twilio::STATUS_CALLBACK_PATH);
    if let Some(query) = uri.query() {
        url.push('?');
        url.push_str(query);
    }
    let Ok(params) = twilio::form(&body) else {
        return refused(name.as_str(), Rejection::Malformed);
    };
    let presented = headers.get(twilio::SIGNATURE_HEADER).map(|v| v.as_bytes());
    if let Err(rejection) =
        twilio::verify(receiver.token.expose().as_bytes(), presented, &url, &params)
    {
        return refused(name.as_str(), rejection);
    }
    let query = twilio::form(uri.query().unwrap_or("").as_bytes()).unwrap_or_default();
    let Ok(parsed) = twilio::parse(&query, &params) else { return malformed() };
    apply_all(&shared.runner, name, parsed).await
}

/// A Vonage delivery receipt: the fields from the query (GET), a form or a JSON body (POST).
async fn vonage_receipt<S: Store + Directory, C: Clock>(
    State(shared): State<Arc<Shared<S, C>>>,
    Path((provider, tenant, id)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    use providers::vonage::{ReceiptCheck, ReceiptError, delivery_receipt};
    let Some((name, receiver)) = configured(&shared.receivers.vonage, &provider) else {
        return not_configured();
    };
    let (Ok(tenant), Ok(id)) = (TenantId::new(tenant), NotificationId::new(id)) else {
        return malformed();
    };
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let fields = if !body.is_empty() && json {
        providers::vonage::receipt_fields_from_json(&body).ok()
    } else if !body.is_empty() {
        twilio::form(&body).ok()
    } else {
        twilio::form(uri.query().unwrap_or("").as_bytes()).ok()
    };
    let Some(fields) = fields else { return malformed() };
    let check = ReceiptCheck {
        secret: &receiver.secret,
        method: receiver.method,
        now_secs: shared.runner.clock().now_ms() / 1_000,
    };
    let event = match delivery_receipt(&tenant, &id, &fields, Some(check)) {
        Ok(event) => event,
        Err(ReceiptError::BadSignature) => return refused(name.as_str(), Rejection::Forged),
        Err(ReceiptError::Stale) => return refused(name.as_str(), Rejection::Stale),
        Err(_) => return malformed(),
    };
    let parsed = providers::receipt::Parsed { events: vec![event], skipped: 0 };
    apply_all(&shared.runner, name, parsed).await
}

fn sns_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

async fn ses_events<S: Store + Directory, C: Clock>(
    State(shared): State<Arc<Shared<S, C>>>,
    Path(provider): Path<String>,
    body: Bytes,
) -> Response {
    let Some((name, receiver)) = configured(&shared.receivers.ses, &provider) else {
        return not_configured();
    };
    let message = match SnsMessage::parse(&body) {
        Ok(message) => message,
        Err(rejection) => return refused(name.as_str(), rejection),
    };
    if !receiver.topic_arns.contains(&message.topic_arn) {
        return refused(name.as_str(), Rejection::Forged);
    }
    let cert = match &receiver.pinned {
        Some(cert) => cert.clone(),
        None => match fetch_cert(&shared, &message.signing_cert_url).await {
            Ok(cert) => cert,
            Err(Some(rejection)) => return refused(name.as_str(), rejection),
            Err(None) => {
                let body = json!({ "error": {
                    "code": "unavailable",
                    "message": "the signing certificate could not be fetched; retry later",
                }});
                return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
            }
        },
    };
    let now_ms = shared.runner.clock().now_ms();
    if let Err(rejection) = sns::verify(&message, &cert, now_ms, receiver.tolerance_s) {
        return refused(name.as_str(), rejection);
    }
    match message.kind.as_str() {
        "Notification" => {
            let Ok(parsed) = sns::parse_ses(&message.message) else { return malformed() };
            apply_all(&shared.runner, name, parsed).await
        }
        "SubscriptionConfirmation" => {
            let url = message.subscribe_url.as_deref().unwrap_or_default();
            let confirmed = receiver.confirm_subscriptions
                && sns::subscribe_url_allowed(url)
                && shared.client.get(url).send().await.is_ok_and(|r| r.status().is_success());
            if confirmed {
                tracing::info!(provider = %name, topic = %message.topic_arn, "SNS subscription confirmed.");
            } else {
                tracing::warn!(
                    provider = %name,
                    topic = %message.topic_arn,
                    "SNS subscription not confirmed (confirmation off, not an SNS host, or it failed)."
                );
            }
            (StatusCode::OK, axum::Json(json!({ "confirmed": confirmed }))).into_response()
        }
        _ => (StatusCode::OK, axum::Json(json!({}))).into_response(),
    }
}

/// The certificate at `url`, from the cache or fetched: `Err(Some(..))` when the URL is not an
/// SNS host or the answer is no certificate, `Err(None)` when the fetch failed (retry later).
async fn fetch_cert<S, C>(
    shared: &Shared<S, C>,
    url: &str,
) -> Result<SigningCert, Option<Rejection>> {
    if !sns::cert_url_allowed(url) {
        return Err(Some(Rejection::Forged));
    }
    let cached =
        shared.receivers.certs.lock().unwrap_or_else(PoisonError::into_inner).get(url).cloned();
    if let Some(cert) = cached {
        return Ok(cert);
    }
    let response = shared.client.get(url).send().await.map_err(|_| None)?;
    if !response.status().is_success() {
        return Err(None);
    }
    let bytes = response.bytes().await.map_err(|_| None)?;
    if bytes.len() > CERT_BYTES_MAX {
        return Err(Some(Rejection::Malformed));
    }
    let pem = std::str::from_utf8(&bytes).map_err(|_| Some(Rejection::Malformed))?;
    let cert = SigningCert::from_pem(pem).map_err(|_| Some(Rejection::Malformed))?;
    let mut certs = shared.receivers.certs.lock().unwrap_or_else(PoisonError::into_inner);
    if certs.len() >= CERTS_CACHED_MAX {
        certs.pop_first();
    }
    certs.insert(url.to_owned(), cert.clone());
    Ok(cert)
}

async fn apply_all<S: Store + Directory, C: Clock>(
    runner: &Runner<S, C>,
    provider: &ProviderName,
    parsed: providers::receipt::Parsed,
) -> Response {
    let mut tally = Tally { skipped: parsed.skipped as u64, ..Tally::default() };
    // The request's span names the notification when it is about one; each event has its own.
    if let [event] = parsed.events.as_slice() {
        let span = tracing::Span::current();
        span.record("tenant", tracing::field::display(&event.tenant));
        crate::api::record_notification(&event.notification_id);
    }
    for event in &parsed.events {
        let span = tracing::info_span!(
            "receipt",
            notification_id = %event.notification_id,
            tenant = %event.tenant,
            %provider,
            attempt = event.attempt.map(|a| a.0),
            kind = event.kind.as_str(),
        );
        if let Err(error) = apply(runner, provider, event, &mut tally).instrument(span).await {
            return unavailable(&error);
        }
    }
    (StatusCode::OK, axum::Json(tally)).into_response()
}

/// Applies one verified event; see the module docs for what each kind does.
async fn apply<S: Store + Directory, C: Clock>(
    runner: &Runner<S, C>,
    provider: &ProviderName,
    event: &ReceiptEvent,
    tally: &mut Tally,
) -> Result<(), StoreError> {
    let (tenant, id) = (&event.tenant, &event.notification_id);
    let receipt = match event.kind {
        ReceiptKind::Delivered => Receipt::Delivered,
        ReceiptKind::Undelivered => Receipt::Undelivered,
        ReceiptKind::Bounced => Receipt::Bounced,
        ReceiptKind::Accepted
        | ReceiptKind::Deferred
        | ReceiptKind::Opened
        | ReceiptKind::Clicked => {
            tracing::info!(
                notification = %id,
                %provider,
                kind = event.kind.as_str(),
                "Receipt recorded."
            );
            tally.recorded += 1;
            return Ok(());
        }
        ReceiptKind::Unsubscribed | ReceiptKind::SpamReport => {
            return unsubscribe(runner, provider, event, tally).await;
        }
    };
    match runner.receipt_for(tenant, id, provider, event.attempt, receipt).await? {
        Received::Applied { state } => {
            tracing::info!(
                notification = %id,
                %provider,
                kind = event.kind.as_str(),
                %state,
                detail = event.detail.as_deref().unwrap_or(""),
                "Receipt applied."
            );
            tally.applied += 1;
        }
        Received::Ignored { state } => {
            tracing::debug!(notification = %id, %provider, %state, "Receipt ignored.");
            tally.ignored += 1;
        }
        Received::NotFound => tally.not_found += 1,
    }
    Ok(())
}

/// An unsubscribe or a spam report: the notification's recipient's preferences change.
async fn unsubscribe<S: Store + Directory, C: Clock>(
    runner: &Runner<S, C>,
    provider: &ProviderName,
    event: &ReceiptEvent,
    tally: &mut Tally,
) -> Result<(), StoreError> {
    let (tenant, id) = (&event.tenant, &event.notification_id);
    let Some(record) = runner.store().load(tenant, id).await? else {
        tally.not_found += 1;
        return Ok(());
    };
    let request = &record.request;
    let channel = record.state.channel().unwrap_or(request.channel);
    let recipient = &request.recipient.id;
    let mut preferences = runner
        .store()
        .recipient(tenant, recipient)
        .await?
        .map(|entry| entry.preferences)
        .unwrap_or_default();
    let changed = match event.kind {
        ReceiptKind::SpamReport => preferences.unsubscribe_all(),
        _ => preferences.unsubscribe_from(&request.category, channel),
    };
    if changed {
        let now_ms = runner.clock().now_ms();
        runner.store().put_preferences(tenant, recipient, &preferences, now_ms).await?;
        tracing::info!(
            notification = %id,
            %provider,
            kind = event.kind.as_str(),
            category = %request.category,
            %channel,
            "Recipient unsubscribed by a receipt."
        );
    }
    tally.preferences += 1;
    Ok(())
}
