//! The recipients directory's endpoints: profiles, push devices, preferences, and the paged
//! listing.
//!
//! - `PUT /v1/recipients/{id}` `{"email", "phone", "locale", "time_zone"}` (all optional): sets the
//!   profile's contact data, creating it (201) or replacing it (200); devices and preferences are
//!   kept.
//! - `GET /v1/recipients/{id}`: the profile, its devices (never their tokens) and preferences;
//!   404 when nothing is stored (`"profile": false` when only preferences are).
//! - `POST /v1/recipients/{id}/devices` `{"platform": "ios" | "android" | "web", "token"}`:
//!   registers a device (201; 200 when the token was registered already); the answer names its
//!   id, a hash of the token, to delete it by.
//! - `DELETE /v1/recipients/{id}/devices/{device_id}`: 204, or 404.
//! - `GET /v1/recipients/{id}/preferences`, `PUT /v1/recipients/{id}/preferences`
//!   `{"unsubscribed", "channels", "categories", "quiet_hours"}`: the recipient's choices (see
//!   `steps::preferences`); a recipient needs no profile to have preferences.
//! - `GET /v1/recipients?cursor=&limit=`: the tenant's recipients in id order, a page at a time;
//!   `next_cursor` is the `cursor` of the next page, absent on the last.
//!
//! Every write is one atomic store operation and answers with the entry's new `revision`; the
//! lifecycle's next decision about the recipient reads it. Bad input is a 400 naming the field;
//! nothing is written. Addresses and tokens never appear in a log line.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use steps::model::RecipientId;
use steps::preferences::Preferences;
use steps::recipient::{
    Contact, DEVICES_MAX, Device, DeviceId, DeviceToken, Platform, RecipientEntry,
};
use workflows::ports::{Clock, DeviceAdded, Directory, Inbox, RECIPIENT_PAGE_MAX, Store};

use super::{ApiError, AppState, body, parse, rfc3339, tenant};

/// The recipients directory's routes, merged into the API's router.
pub(super) fn routes<S, C>() -> Router<AppState<S, C>>
where
    S: Store + Inbox + Directory,
    C: Clock,
{
    Router::new()
        .route("/v1/recipients", get(list::<S, C>))
        .route("/v1/recipients/{id}", get(show::<S, C>).put(put_profile::<S, C>))
        .route("/v1/recipients/{id}/devices", post(add_device::<S, C>))
        .route("/v1/recipients/{id}/devices/{device}", delete(remove_device::<S, C>))
        .route(
            "/v1/recipients/{id}/preferences",
            get(show_preferences::<S, C>).put(put_preferences::<S, C>),
        )
}

/// A recipient id from the path of a write: a bad one is a 400 naming it.
fn recipient_id(raw: String) -> Result<RecipientId, ApiError> {
    RecipientId::new(raw)
        .map_err(|e| ApiError::BadRequest { field: "id".into(), message: e.to_string() })
}

/// A device as the API shows it: never its token.
fn device_view(device: &Device) -> Value {
    json!({ "id": device.id, "platform": device.platform, "added_at": rfc3339(device.added_at_ms) })
}

/// A directory entry as the API shows it.
fn entry_view(entry: &RecipientEntry) -> Value {
    let contact = entry.contact();
    json!({
        "id": entry.id,
        "profile": entry.profile.is_some(),
        "email": contact.and_then(|c| c.email.as_ref()).map(|e| e.expose()),
        "phone": contact.and_then(|c| c.phone.as_ref()).map(|p| p.expose()),
        "locale": contact.and_then(|c| c.locale.as_ref()),
        "time_zone": contact.and_then(|c| c.time_zone),
        "devices": entry.devices().iter().map(device_view).collect::<Vec<_>>(),
        "preferences": entry.preferences,
        "revision": entry.revision,
        "updated_at": rfc3339(entry.updated_at_ms),
    })
}

async fn show<S: Store + Inbox + Directory, C: Clock>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let id = RecipientId::new(id).map_err(|_| ApiError::NotFound)?;
    // 404 only when nothing is stored; a recipient with preferences but no profile shows
    // `"profile": false`, as in the listing.
    let entry = state.runner.store().recipient(&tenant, &id).await?.ok_or(ApiError::NotFound)?;
    Ok(axum::Json(entry_view(&entry)).into_response())
}

async fn put_profile<S: Store + Inbox + Directory, C: Clock>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let id = recipient_id(id)?;
    let contact: Contact = parse(&body(&state, raw)?, "")?;
    let store = state.runner.store();
    let now_ms = state.runner.clock().now_ms();
    let (revision, created) = store.put_contact(&tenant, &id, &contact, now_ms).await?;
    tracing::info!(%tenant, recipient = %id, revision, created, "Recipient profile stored.");
    let entry = store.recipient(&tenant, &id).await?.ok_or(ApiError::NotFound)?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(entry_view(&entry))).into_response())
}

/// A device as a client registers it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceBody {
    platform: Platform,
    token: DeviceToken,
}

async fn add_device<S: Store + Inbox + Directory, C: Clock>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let id = recipient_id(id)?;
    let DeviceBody { platform, token } = parse(&body(&state, raw)?, "")?;
    let now_ms = state.runner.clock().now_ms();
    let device = Device::new(platform, token, now_ms);
    let view = |revision: u64| {
        let mut view = device_view(&device);
        view["revision"] = json!(revision);
        axum::Json(view)
    };
    match state.runner.store().add_device(&tenant, &id, &device, now_ms).await? {
        DeviceAdded::Added { revision } => {
            tracing::info!(%tenant, recipient = %id, device = %device.id, %platform, "Device registered.");
            Ok((StatusCode::CREATED, view(revision)).into_response())
        }
        DeviceAdded::Exists { revision } => Ok((StatusCode::OK, view(revision)).into_response()),
        DeviceAdded::Full => Err(ApiError::Unprocessable {
            code: "too_many_devices",
            field: "devices".into(),
            message: format!(
                "recipient {id} has {DEVICES_MAX} devices already, the most allowed; delete one \
                 first"
            ),
        }),
        DeviceAdded::NoProfile => Err(ApiError::NotFound),
    }
}

async fn remove_device<S: Store + Inbox + Directory, C: Clock>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    Path((id, device)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let id = RecipientId::new(id).map_err(|_| ApiError::NotFound)?;
    let device = DeviceId::new(device).map_err(|_| ApiError::NotFound)?;
    let now_ms = state.runner.clock().now_ms();
    match state.runner.store().remove_device(&tenant, &id, &device, now_ms).await? {
        Some(revision) => {
            tracing::info!(%tenant, recipient = %id, %device, revision, "Device removed.");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        None => Err(ApiError::NotFound),
    }
}

fn preferences_view(id: &RecipientId, entry: Option<&RecipientEntry>) -> Value {
    json!({
        "recipient": id,
        "preferences": entry.map(|e| e.preferences.clone()).unwrap_or_default(),
        "revision": entry.map_or(0, |e| e.revision),
    })
}

async fn show_preferences<S: Store + Inbox + Directory, C: Clock>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let id = RecipientId::new(id).map_err(|_| ApiError::NotFound)?;
    // A recipient nobody stored anything about has the defaults: nothing chosen, revision 0.
    let entry = state.runner.store().recipient(&tenant, &id).await?;
    Ok(axum::Json(preferences_view(&id, entry.as_ref())).into_response())
}

async fn put_preferences<S: Store + Inbox + Directory, C: Clock>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let id = recipient_id(id)?;
    let preferences: Preferences = parse(&body(&state, raw)?, "")?;
    preferences
        .validate()
        .map_err(|e| ApiError::BadRequest { field: "categories".into(), message: e.to_string() })?;
    let store = state.runner.store();
    let now_ms = state.runner.clock().now_ms();
    let revision = store.put_preferences(&tenant, &id, &preferences, now_ms).await?;
    tracing::info!(
        %tenant,
        recipient = %id,
        revision,
        unsubscribed = preferences.unsubscribed,
        "Recipient preferences stored."
    );
    let entry = store.recipient(&tenant, &id).await?;
    Ok(axum::Json(preferences_view(&id, entry.as_ref())).into_response())
}

/// `?cursor=&limit=` for the listing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageParams {
    cursor: Option<String>,
    limit: Option<usize>,
}

async fn list<S: Store + Inbox + Directory, C: Clock>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    params: Result<Query<PageParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let Query(params) = params
        .map_err(|e| ApiError::BadRequest { field: "query".into(), message: e.body_text() })?;
    let limit = params.limit.unwrap_or(100);
    if limit == 0 || limit > RECIPIENT_PAGE_MAX {
        return Err(ApiError::BadRequest {
            field: "limit".into(),
            message: format!("must be between 1 and {RECIPIENT_PAGE_MAX}"),
        });
    }
    let cursor = params
        .cursor
        .map(RecipientId::new)
        .transpose()
        .map_err(|e| ApiError::BadRequest { field: "cursor".into(), message: e.to_string() })?;
    let page = state.runner.store().recipients(&tenant, cursor.as_ref(), limit).await?;
    let items: Vec<Value> = page.entries.iter().map(entry_view).collect();
    let mut view = json!({ "recipients": items });
    if let Some(next) = page.next {
        view["next_cursor"] = json!(next);
    }
    Ok(axum::Json(view).into_response())
}
