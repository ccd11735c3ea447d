//! The HTTP API (axum). `router(state)` builds it without a socket, so tests call it directly.
//!
//! Every `/v1` route needs an API key naming a tenant; every lookup is scoped by that tenant, so
//! one tenant asking for another's notification gets 404. Bad input gets a 4xx JSON error naming
//! the field and the reason, and nothing is written.
//!
//! Searching notifications (filters, time range, cursor paging) is in [`list`]. The
//! dead-letter queue's endpoints (list, plan, replay, purge) are in [`dlq`]; the template
//! registry's (create, versions, publish, list, show, preview) in [`templates`]; the recipients
//! directory's (profiles, devices, preferences) in [`recipients`]; the campaigns' in
//! [`campaigns`]; the in-app inbox's (listing, read state, live stream) in [`inbox`]; the live
//! stream of committed transitions (`GET /v1/events`) in [`events`]; the fan-out both live
//! streams share in [`hub`]; the operators' queue and statistics views (`courant queues`,
//! `courant stats`) in [`ops`]. The providers' delivery receipts (signed webhooks, no API key)
//! are in
//! [`webhooks`], a router of its own with its own state and body limit
//! ([`webhooks::routes`]), merged beside this one by `wiring`.
//!
//! `GET /openapi.json` serves the OpenAPI 3.1 document of every route ([`OPENAPI`],
//! `src/api/openapi.json`); `tests/openapi.rs` keeps it true to the router and the answers.

pub mod campaigns;
pub mod dlq;
pub mod events;
pub mod hub;
pub mod inbox;
pub mod list;
pub mod ops;
pub mod recipients;
pub mod templates;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use steps::correlation::{CollapseKey, Correlation, EventId};
use steps::locale::Locale;
use steps::model::{Category, Channel, NotificationId, Recipient, TemplateId, TenantId};
use storage::queue::WakeQueue;
use storage::stats::StatsStore;
use tracing::Instrument as _;
use workflows::inbox::{InboxFeed, InboxState};
use workflows::machine::{State as LifecycleState, StateKind};
use workflows::ports::{
    Campaigns, Clock, Directory, Inbox, LIST_LIMIT_MAX, Store, StoreError, StoredResponse,
};
use workflows::record::{HistoryEntry, Idempotency, Record};
use workflows::runner::{Cancelled, Retried, Runner, Submission, SubmitError, Submitted};
use workflows::transitions::TransitionFeed;

use crate::auth;

/// The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json`. Written by hand;
/// `tests/openapi.rs` checks that it is valid, that it lists exactly the router's routes and
/// that real answers match its schemas.
pub const OPENAPI: &str = include_str!("api/openapi.json");

/// Limits on what a request may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body, in bytes. 256 KiB holds a batch of 100 notifications with generous
    /// template data; anything larger is refused with 413 before it is buffered.
    pub body_bytes_max: usize,
    /// Most notifications in one batch request. Bounded so a batch is one quick request and a
    /// retry of it is cheap.
    pub batch_len_max: usize,
    /// Live event streams (`GET /v1/events`) this process holds open, every tenant's: each is a
    /// socket and a buffer of [`events`]' size. A few operators tailing each; 503 beyond it.
    pub event_streams_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { body_bytes_max: 256 * 1024, batch_len_max: 100, event_streams_max: 64 }
    }
}

/// A readiness probe: `Ok` when the store answers.
pub type ReadyProbe = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// What the handlers share.
pub struct AppState<S, C> {
    /// The lifecycle runner (it owns the store and the templates).
    pub runner: Arc<Runner<S, C>>,
    /// Request limits.
    pub limits: Limits,
    /// Readiness probe for `/readyz`.
    pub ready: ReadyProbe,
}

impl<S, C> std::fmt::Debug for AppState<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl<S, C> Clone for AppState<S, C> {
    fn clone(&self) -> Self {
        Self { runner: self.runner.clone(), limits: self.limits, ready: self.ready.clone() }
    }
}

/// An API error, rendered as `{"error": {"code", "message", "field"?}}`. Internal details are
/// logged, never returned.
#[derive(Debug)]
pub enum ApiError {
    /// 401: no key, or an unknown one.
    Unauthorized,
    /// 404.
    NotFound,
    /// 400: a field is malformed.
    BadRequest {
        /// The field path (`recipient.email`, `notifications[2].channel`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// 413.
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// 422: well-formed but not acceptable (template does not render, key reused).
    Unprocessable {
        /// A stable code.
        code: &'static str,
        /// The field.
        field: String,
        /// Why.
        message: String,
    },
    /// 409: the request conflicts with the notification's state.
    Conflict {
        /// Why.
        message: String,
    },
    /// 409 with `Retry-After`: a request with the same `Idempotency-Key` and body is in flight.
    InFlight {
        /// When to retry, whole seconds from now (at least 1).
        retry_after_s: u64,
    },
    /// 503: the store is unavailable.
    Unavailable,
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        tracing::error!(%error, "Store failed while serving a request.");
        ApiError::Unavailable
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message, field) = match self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid API key is required: send 'Authorization: Bearer <key>'".to_owned(),
                None,
            ),
            ApiError::NotFound => {
                (StatusCode::NOT_FOUND, "not_found", "no such resource".to_owned(), None)
            }
            ApiError::BadRequest { field, message } => {
                (StatusCode::BAD_REQUEST, "invalid_field", message, Some(field))
            }
            ApiError::TooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is larger than {limit} bytes"),
                None,
            ),
            ApiError::Unprocessable { code, field, message } => {
                (StatusCode::UNPROCESSABLE_ENTITY, code, message, Some(field))
            }
            ApiError::Conflict { message } => (StatusCode::CONFLICT, "conflict", message, None),
            ApiError::InFlight { retry_after_s } => {
                let message = format!(
                    "a request with this Idempotency-Key is still in flight; retry in \
                     {retry_after_s} s"
                );
                let body = json!({ "error": {
                    "code": "idempotency_key_in_flight",
                    "message": message,
                    "field": "Idempotency-Key",
                }});
                let mut response = (StatusCode::CONFLICT, axum::Json(body)).into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
                return response;
            }
            ApiError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the store is unavailable; retry later (with the same Idempotency-Key)".to_owned(),
                None,
            ),
        };
        let mut error = json!({ "code": code, "message": message });
        if let Some(field) = field {
            error["field"] = json!(field);
        }
        (status, axum::Json(json!({ "error": error }))).into_response()
    }
}

/// Builds the router.
pub fn router<S, C>(state: AppState<S, C>) -> Router
where
    S: Store
        + Inbox
        + Directory
        + Campaigns
        + InboxState
        + InboxFeed
        + TransitionFeed
        + WakeQueue
        + StatsStore,
    C: Clock,
{
    let inbox = inbox::routes::<S, C>(&state);
    let events = events::routes::<S, C>(&state);
    let body_limit = state.limits.body_bytes_max;
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz::<S, C>))
        .route("/openapi.json", get(openapi))
        .route("/v1/notifications", post(submit::<S, C>).get(list::list::<S, C>))
        .route("/v1/notifications/batch", post(submit_batch::<S, C>))
        .route("/v1/notifications/{id}", get(show::<S, C>))
        .route("/v1/notifications/{id}/cancel", post(cancel::<S, C>))
        .route("/v1/notifications/{id}/retry", post(retry::<S, C>))
        .route("/v1/notifications/{id}/explain", get(explain::<S, C>))
        .route("/v1/dlq", get(dlq::list::<S, C>))
        .route("/v1/dlq/plan", post(dlq::plan::<S, C>))
        .route("/v1/dlq/replay", post(dlq::replay::<S, C>))
        .route("/v1/dlq/purge", post(dlq::purge::<S, C>))
        .merge(templates::routes::<S, C>())
        .merge(inbox)
        .merge(events)
        .merge(ops::routes::<S, C>())
        .merge(recipients::routes::<S, C>())
        .merge(campaigns::routes::<S, C>())
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

async fn readyz<S: Store + Inbox, C: Clock>(State(state): State<AppState<S, C>>) -> Response {
    match (state.ready)().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(why) => {
            tracing::warn!(%why, "Readiness probe failed.");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable").into_response()
        }
    }
}

/// `GET /openapi.json`: no key needed, it describes the API and holds no data.
async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn tenant<S: Store + Inbox, C: Clock>(
    state: &AppState<S, C>,
    headers: &HeaderMap,
) -> Result<TenantId, ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized)?;
    let tenant = auth::verify(state.runner.store(), presented.trim())
        .await?
        .ok_or(ApiError::Unauthorized)?;
    tracing::Span::current().record("tenant", tracing::field::display(&tenant));
    Ok(tenant)
}

/// A notification as submitted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    recipient: Recipient,
    channel: Channel,
    template: TemplateId,
    #[serde(default)]
    data: serde_json::Map<String, serde_json::Value>,
    #[serde(default = "default_category")]
    category: Category,
    /// The event it reports: the same event for the same recipient and channel within the dedup
    /// window makes no second notification.
    #[serde(default)]
    event_id: Option<EventId>,
    /// The group it may be collapsed into, where its category has a collapse window.
    #[serde(default)]
    collapse_key: Option<CollapseKey>,
    /// The recipient's locale; the template falls back to the locale's parents, then to its
    /// default locale.
    #[serde(default)]
    locale: Option<Locale>,
}

fn default_category() -> Category {
    Category::new("transactional").unwrap_or_else(|_| unreachable!("a valid literal id"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    notifications: Vec<serde_json::Value>,
}

fn body<S, C>(
    state: &AppState<S, C>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| match rejection {
        BytesRejection::FailedToBufferBody(_) => {
            ApiError::TooLarge { limit: state.limits.body_bytes_max }
        }
        other => ApiError::BadRequest { field: "body".into(), message: other.body_text() },
    })
}

/// The field a deserialization error points at: `path` inside `prefix` (the whole body when
/// both are empty).
fn field_path(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path == ".") {
        (true, true) => "body".to_owned(),
        (true, false) => path.to_owned(),
        (false, true) => prefix.to_owned(),
        (false, false) => format!("{prefix}.{path}"),
    }
}

fn bad_field<E: std::fmt::Display>(prefix: &str, e: serde_path_to_error::Error<E>) -> ApiError {
    let field = field_path(prefix, &e.path().to_string());
    ApiError::BadRequest { field, message: e.into_inner().to_string() }
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], prefix: &str) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| bad_field(prefix, e))
}

fn parse_value<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    prefix: &str,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| bad_field(prefix, e))
}

/// The longest `Idempotency-Key` accepted (the IETF draft suggests UUIDs; 255 leaves room).
const IDEMPOTENCY_KEY_LEN_MAX: usize = 255;

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let bad = |message: &str| ApiError::BadRequest {
        field: "Idempotency-Key".into(),
        message: message.into(),
    };
    let key = value.to_str().map_err(|_| bad("must be visible ASCII"))?;
    if key.is_empty() || key.len() > IDEMPOTENCY_KEY_LEN_MAX {
        return Err(bad("must be 1 to 255 characters"));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("must be visible ASCII without spaces"));
    }
    Ok(Some(key.to_owned()))
}

fn fingerprint(value: &impl Serialize) -> String {
    // serde_json maps are ordered, so the same request with its keys in another order hashes
    // the same.
    let canonical = serde_json::to_vec(value).unwrap_or_default();
    hex::encode(Sha256::digest(canonical))
}

fn submission(body: SubmitBody) -> Submission {
    Submission {
        recipient: body.recipient,
        channel: body.channel,
        template: body.template,
        data: body.data,
        category: body.category,
        locale: body.locale,
        correlation: Correlation { event_id: body.event_id, collapse_key: body.collapse_key },
    }
}

/// A template that cannot be used for a submission, as a 422 naming what to fix: a missing
/// variable is `data.<name>`, a broken channel limit (SMS segments, push sizes, the in-app
/// action) is `data`, an unknown or unpublished template is `template`.
fn template_error(prefix: &str, error: steps::render::RenderError) -> ApiError {
    use steps::render::RenderError as E;
    let (code, field) = match &error {
        E::UnknownTemplate(_)
        | E::VersionGone { .. }
        | E::BadId { .. }
        | E::UnknownVersion { .. } => ("unknown_template", "template".to_owned()),
        E::NotPublished(_) => ("template_not_published", "template".to_owned()),
        E::Invalid { .. } => ("template_invalid", "template".to_owned()),
        E::NoChannel { .. } => ("template_lacks_channel", "channel".to_owned()),
        E::Template { .. } => match error.missing_variable() {
            Some(name) => ("template_render_failed", format!("data.{name}")),
            None => ("template_render_failed", "data".to_owned()),
        },
        E::Limit { .. } => ("template_limit_exceeded", "data".to_owned()),
    };
    let field = if prefix.is_empty() { field } else { format!("{prefix}.{field}") };
    ApiError::Unprocessable { code, field, message: error.to_string() }
}

/// Checks that a submission will render (the template its tenant gets, in its locale, within
/// every channel limit), before anything is written.
async fn precheck<S: Store, C: Clock>(
    runner: &Runner<S, C>,
    tenant: &TenantId,
    submission: &Submission,
    prefix: &str,
) -> Result<(), ApiError> {
    match runner.check_submission(tenant, submission).await {
        Ok(_) => Ok(()),
        Err(error) => Err(submit_error(prefix, error)),
    }
}

impl From<SubmitError> for ApiError {
    fn from(error: SubmitError) -> Self {
        submit_error("", error)
    }
}

fn submit_error(prefix: &str, error: SubmitError) -> ApiError {
    match error {
        SubmitError::Template(e) => template_error(prefix, e),
        SubmitError::KeyReused { id } => ApiError::Unprocessable {
            code: "idempotency_key_reused",
            field: "Idempotency-Key".into(),
            message: format!(
                "this key was already used{} with a different request body",
                id.map(|id| format!(" for notification {id}")).unwrap_or_default()
            ),
        },
        SubmitError::InFlight { retry_after_ms } => {
            ApiError::InFlight { retry_after_s: retry_after_ms.div_ceil(1_000).max(1) }
        }
        SubmitError::Store(e) => e.into(),
    }
}

/// Mints the notification's id where its keys live (the event's shard for a submission that is
/// deduplicated, else the idempotency key's) and submits it.
async fn accept<S: Store + Inbox + Directory, C: Clock>(
    state: &AppState<S, C>,
    tenant: &TenantId,
    submission: Submission,
    idempotency: Option<Idempotency>,
    prefix: &str,
) -> Result<Submitted, ApiError> {
    let ulid = ulid::Ulid::generate().to_string();
    let id = match state.runner.event_key(tenant, &submission) {
        Some((event, _)) => {
            storage::keys::new_notification_id_in(storage::keys::event_shard(&event), &ulid)
        }
        None => storage::keys::new_notification_id(
            tenant,
            idempotency.as_ref().map(|i| i.key.as_str()),
            &ulid,
        ),
    };
    let submitted = state.runner.submit(tenant, id, submission, idempotency.as_ref()).await;
    let submitted = submitted.map_err(|e| submit_error(prefix, e))?;
    record_notification(&submitted.id);
    Ok(submitted)
}

/// A submission's answer: 202 with the new notification, 200 with the earlier one of the same
/// event (`deduplicated`), and for an idempotent replay the same, with `Idempotent-Replayed`.
fn submitted_response(submitted: &Submitted) -> Response {
    let status = if submitted.deduplicated { StatusCode::OK } else { StatusCode::ACCEPTED };
    let body = json!({
        "id": submitted.id,
        "created": submitted.created,
        "deduplicated": submitted.deduplicated,
    });
    let mut response = (status, axum::Json(body)).into_response();
    if submitted.replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

async fn submit<S: Store + Inbox + Directory, C: Clock>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let bytes = body(&state, raw)?;
    let key = idempotency_key(&headers)?;
    let value: serde_json::Value = parse(&bytes, "")?;
    let fingerprint = fingerprint(&value);
    let body: SubmitBody = parse_value(value, "")?;
    // `submit` pins and renders the template before it writes anything: a template error is a
    // 422 from there.
    let submission = submission(body);
    let idempotency = key.map(|key| Idempotency { key, fingerprint });
    let submitted = accept(&state, &tenant, submission, idempotency, "").await?;
    tracing::info!(
        notification = %submitted.id,
        %tenant,
        created = submitted.created,
        deduplicated = submitted.deduplicated,
        "Notification accepted."
    );
    Ok(submitted_response(&submitted))
}

/// The key of item `index` of a batch submitted with `key`. A space cannot occur in a client's
/// key, so an item's key never collides with one.
fn item_key(key: &str, index: usize) -> String {
    format!("{key} #{index}")
}

async fn submit_batch<S: Store + Inbox + Directory, C: Clock>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let bytes = body(&state, raw)?;
    let key = idempotency_key(&headers)?;
    let value: serde_json::Value = parse(&bytes, "")?;
    let fingerprint = fingerprint(&value);
    let batch: BatchBody = parse_value(value, "")?;
    let max = state.limits.batch_len_max;
    if batch.notifications.is_empty() || batch.notifications.len() > max {
        return Err(ApiError::BadRequest {
            field: "notifications".into(),
            message: format!("must hold 1 to {max} notifications"),
        });
    }
    // Validate everything first: one bad item refuses the whole batch and writes nothing.
    let mut accepted = Vec::with_capacity(batch.notifications.len());
    for (index, value) in batch.notifications.into_iter().enumerate() {
        let prefix = format!("notifications[{index}]");
        let item_fingerprint = self::fingerprint(&value);
        let body: SubmitBody = parse_value(value, &prefix)?;
        let submission = submission(body);
        precheck(&state.runner, &tenant, &submission, &prefix).await?;
        let idempotency = key.as_ref().map(|key| Idempotency {
            key: item_key(key, index),
            fingerprint: item_fingerprint.clone(),
        });
        accepted.push((prefix, submission, idempotency));
    }
    // Every item has its own key, so a batch retried after a crash mid-way makes each
    // notification once; the batch's key holds the whole answer, and while the first request
    // works a retry is told to wait (409, Retry-After).
    let work = || async {
        let mut items = Vec::with_capacity(accepted.len());
        for (index, (prefix, submission, idempotency)) in accepted.into_iter().enumerate() {
            // One span per item, for its notification id (the request's span has many).
            let span =
                tracing::info_span!("submit_item", index, notification_id = tracing::field::Empty);
            let submitted =
                accept(&state, &tenant, submission, idempotency, &prefix).instrument(span).await?;
            items.push(submitted.stored());
        }
        let response = StoredResponse { items };
        Ok::<_, ApiError>((response.clone(), response))
    };
    let (response, replayed) = match key {
        None => (work().await?.0, false),
        Some(key) => {
            let idempotency = Idempotency { key, fingerprint };
            let now_ms = state.runner.clock().now_ms();
            match state.runner.claimed(&tenant, &idempotency, now_ms, work).await? {
                Ok(response) => (response, false),
                Err(stored) => (stored, true),
            }
        }
    };
    let ids: Vec<&NotificationId> = response.items.iter().map(|i| &i.id).collect();
    let deduplicated: Vec<usize> =
        response.items.iter().enumerate().filter(|(_, i)| i.deduplicated).map(|(n, _)| n).collect();
    tracing::info!(%tenant, count = ids.len(), replayed, "Batch accepted.");
    let body = json!({ "ids": ids, "deduplicated": deduplicated });
    let mut response = (StatusCode::ACCEPTED, axum::Json(body)).into_response();
    if replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// A history entry as the API shows it.
#[derive(Debug, Serialize)]
struct HistoryView<'a> {
    at: String,
    at_ms: u64,
    version: u64,
    from: Option<StateKind>,
    to: StateKind,
    channel: Option<Channel>,
    provider: Option<&'a str>,
    attempt: Option<u32>,
    cause: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<&'a str>,
    detail: &'a LifecycleState,
}

/// Formats ms since the epoch as RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

fn history_view(entry: &HistoryEntry) -> HistoryView<'_> {
    HistoryView {
        at: rfc3339(entry.at_ms),
        at_ms: entry.at_ms,
        version: entry.version,
        from: entry.from,
        to: entry.to.kind(),
        channel: entry.to.channel(),
        provider: entry.to.provider().map(|p| p.as_str()),
        attempt: entry.to.attempt().map(|a| a.0),
        cause: entry.cause.to_string(),
        note: entry.note.as_deref(),
        detail: &entry.to,
    }
}

fn summary(record: &Record) -> serde_json::Value {
    json!({
        "id": record.id,
        "state": record.state.kind(),
        "channel": record.state.channel().unwrap_or(record.request.channel),
        "provider": record.state.provider(),
        "attempt": record.state.attempt(),
        "category": record.request.category,
        "template": record.request.template,
        "recipient": { "id": record.request.recipient.id },
        "version": record.version,
        "created_at": rfc3339(record.created_at_ms),
        "updated_at": rfc3339(record.updated_at_ms),
        "wake_at": record.wake_at_ms.map(rfc3339),
        "replay": record.replay.as_ref().map(|r| json!({
            "count": r.count,
            "budget_from": rfc3339(r.budget_from_ms),
            "possible_duplicate": r.possible_duplicate,
        })),
        "detail": record.state,
    })
}

/// The notification id of a path, or 404; recorded on the request's span.
pub(crate) fn notification_id(raw: &str) -> Result<NotificationId, ApiError> {
    let id = NotificationId::new(raw).map_err(|_| ApiError::NotFound)?;
    record_notification(&id);
    Ok(id)
}

/// Names the notification a request is about on its span (see [`traced`]).
pub(crate) fn record_notification(id: &NotificationId) {
    tracing::Span::current().record("notification_id", tracing::field::display(id));
}

/// Puts each request of `router` in an `info` span named after its method and route (the
/// route's template, never the path: a path may hold a recipient id), with its status and,
/// where the request is about one, the tenant and the notification id. Handlers fill those in
/// when they know them (`tenant`, [`notification_id`]). The span is what exported traces of a
/// request start from.
pub fn traced(router: Router) -> Router {
    router.layer(axum::middleware::from_fn(request_span))
}

async fn request_span(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use tracing::field::Empty;
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |path| path.as_str())
        .to_owned();
    let name = format!("{method} {route}");
    let span = tracing::info_span!(
        "request",
        otel.name = name.as_str(),
        otel.kind = "server",
        http.request.method = %method,
        http.route = route.as_str(),
        http.response.status_code = Empty,
        tenant = Empty,
        notification_id = Empty,
    );
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}

/// The caller's tenant's notification `id` with its history, or 404.
async fn record_and_history<S: Store + Inbox, C: Clock>(
    state: &AppState<S, C>,
    headers: &HeaderMap,
    id: &str,
) -> Result<(workflows::record::Record, Vec<workflows::record::HistoryEntry>), ApiError> {
    let tenant = tenant(state, headers).await?;
    let id = notification_id(id)?;
    let store = state.runner.store();
    let record = store.load(&tenant, &id).await?.ok_or(ApiError::NotFound)?;
    let history = store.history(&tenant, &id).await?;
    Ok((record, history))
}

async fn show<S: Store + Inbox, C: Clock>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (record, history) = record_and_history(&state, &headers, &id).await?;
    let mut view = summary(&record);
    view["history"] = json!(history.iter().map(history_view).collect::<Vec<_>>());
    Ok(axum::Json(view).into_response())
}

/// `GET /v1/notifications/{id}/explain`: why it is where it is, from its recorded decisions
/// (`workflows::explain`).
async fn explain<S: Store + Inbox, C: Clock>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (record, history) = record_and_history(&state, &headers, &id).await?;
    let explanation = workflows::explain::explain(&record, &history);
    let mut view = json!(explanation);
    if let Some(findings) = view["findings"].as_array_mut() {
        for finding in findings {
            if let Some(at_ms) = finding["at_ms"].as_u64() {
                finding["at"] = json!(rfc3339(at_ms));
            }
        }
    }
    Ok(axum::Json(view).into_response())
}

async fn cancel<S: Store + Inbox, C: Clock>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let id = notification_id(&id)?;
    match state.runner.cancel(&tenant, &id).await? {
        Cancelled::Done => {
            tracing::info!(notification = %id, %tenant, "Notification cancelled.");
            Ok(axum::Json(json!({ "id": id, "state": StateKind::Cancelled })).into_response())
        }
        Cancelled::NotFound => Err(ApiError::NotFound),
        Cancelled::Refused { state } => Err(ApiError::Conflict {
            message: format!("notification {id} is {state} and can no longer be cancelled"),
        }),
    }
}

/// `POST /v1/notifications/{id}/retry`: an operator's "try again now" ([`Runner::retry`]). 200
/// with what was done (`replayed` out of the DLQ, or `woken` now), 404, or 409 saying why not.
async fn retry<S: Store + Inbox, C: Clock>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let id = notification_id(&id)?;
    let (outcome, next, at_ms) = match state.runner.retry(&tenant, &id).await? {
        Retried::Replayed { at_ms } => ("replayed", StateKind::Received, at_ms),
        Retried::WokenUp { at_ms } => ("woken", StateKind::Deferred, at_ms),
        Retried::NotFound => return Err(ApiError::NotFound),
        Retried::Refused { state, why } => {
            return Err(ApiError::Conflict {
                message: format!("notification {id} is {state} and was not retried: {why}"),
            });
        }
    };
    tracing::info!(notification = %id, %tenant, outcome, "Notification retried by an operator.");
    Ok(axum::Json(json!({ "id": id, "outcome": outcome, "state": next, "at": rfc3339(at_ms) }))
        .into_response())
}

/// A name from a fixed set (a state, a channel), or a 400 naming the field and the set.
fn one_of<T: Copy>(
    field: &str,
    raw: Option<&str>,
    all: &[T],
    name: impl Fn(T) -> &'static str,
) -> Result<Option<T>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let found = all.iter().copied().find(|v| name(*v) == raw);
    found.map(Some).ok_or_else(|| {
        let names: Vec<&str> = all.iter().map(|v| name(*v)).collect();
        ApiError::BadRequest {
            field: field.to_owned(),
            message: format!("must be one of {}", names.join(", ")),
        }
    })
}

/// A listing's `limit`: 50 unless given, at most [`LIST_LIMIT_MAX`].
fn limit(raw: Option<usize>) -> Result<usize, ApiError> {
    let limit = raw.unwrap_or(50);
    if limit == 0 || limit > LIST_LIMIT_MAX {
        return Err(ApiError::BadRequest {
            field: "limit".into(),
            message: format!("must be between 1 and {LIST_LIMIT_MAX}"),
        });
    }
    Ok(limit)
}
