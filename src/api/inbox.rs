//! The in-app inbox's endpoints: what a client app shows, marks and streams.
//!
//! - `GET /v1/recipients/{id}/inbox?status=all|unread|archived&limit=&cursor=`: entries newest
//!   first, `limit` 1 to 100 (default 20); `next_cursor` is the `cursor` of the next page, absent
//!   on the last. `status=all` (the default) is every entry not archived.
//! - `GET /v1/recipients/{id}/inbox/count`: `{"unread"}`, entries neither read nor archived.
//! - `POST /v1/recipients/{id}/inbox/{notification_id}/read`: marks one entry read (the first
//!   read time is kept); `POST .../archive` archives it, `POST .../unarchive` restores it. Each
//!   answers with the entry's state and the unread count, or 404 for an entry the recipient does
//!   not have.
//! - `POST /v1/recipients/{id}/inbox/read-all`: marks every unread entry read; `{"marked"}`.
//! - `GET /v1/recipients/{id}/inbox/stream`: Server-Sent Events. First an `unread` event with the
//!   count, then an `inbox` event per new entry (`{"entry", "unread"}`), each with the entry's
//!   sequence number as its id; a comment every 15 s keeps proxies from closing it. With
//!   `Last-Event-ID` (or `?last_event_id=`), the entries after that id that are still in the
//!   inbox are sent first, so a client that reconnects misses nothing. The stream ends when the
//!   client falls behind or the server's feed breaks; the client reconnects (browsers'
//!   `EventSource` does, with `Last-Event-ID`). See [`super::hub`] for the fan-out and its bounds.
//!
//! Every route is scoped by the API key's tenant like the rest of `/v1`, and marks are
//! idempotent: repeating one changes nothing and answers the same.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{FutureExt, Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use steps::model::{NotificationId, RecipientId, TenantId};
use workflows::inbox::{
    INBOX_PAGE_MAX, InboxEntry, InboxEvent, InboxFeed, InboxState, InboxStatus, Marked,
};
use workflows::ports::{Clock, Store};

use super::hub::{Delivery, Hub, HubLimits, Keyed, Refused, StreamsEnd, Subscription, sse};
use super::{ApiError, AppState, rfc3339, tenant};

impl Keyed for InboxEvent {
    type Key = (TenantId, RecipientId);

    fn key(&self) -> Self::Key {
        (self.tenant.clone(), self.recipient.clone())
    }
}

/// The page size when `limit` is not given.
const PAGE_DEFAULT: usize = 20;

/// The inbox's routes, merged into the API's router, with their fan-out [`Hub`] (one per router:
/// the store's feed is opened by the first stream).
pub(super) fn routes<S, C>(state: &AppState<S, C>) -> Router<AppState<S, C>>
where
    S: Store + InboxState + InboxFeed,
    C: Clock,
{
    let runner = state.runner.clone();
    let hub: Hub<InboxEvent> = Hub::new(
        "inbox",
        Arc::new(move || {
            let runner = runner.clone();
            async move { runner.store().inbox_feed().await }.boxed()
        }),
        HubLimits::default(),
    );
    Router::new()
        .route("/v1/recipients/{id}/inbox", get(list::<S, C>))
        .route("/v1/recipients/{id}/inbox/count", get(count::<S, C>))
        .route("/v1/recipients/{id}/inbox/read-all", post(read_all::<S, C>))
        .route("/v1/recipients/{id}/inbox/stream", get(stream::<S, C>))
        .route("/v1/recipients/{id}/inbox/{notification}/read", post(read::<S, C>))
        .route("/v1/recipients/{id}/inbox/{notification}/archive", post(archive::<S, C>))
        .route("/v1/recipients/{id}/inbox/{notification}/unarchive", post(unarchive::<S, C>))
        .layer(Extension(hub))
}

fn recipient(raw: String) -> Result<RecipientId, ApiError> {
    RecipientId::new(raw).map_err(|_| ApiError::NotFound)
}

fn query<T>(params: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    params
        .map(|Query(params)| params)
        .map_err(|e| ApiError::BadRequest { field: "query".into(), message: e.body_text() })
}

/// An entry as the API shows it: the stored content, its sequence number and its state.
fn entry_view(entry: &InboxEntry) -> Value {
    let mut view = serde_json::to_value(&entry.item).unwrap_or_else(|_| json!({}));
    view["seq"] = json!(entry.seq);
    view["at"] = json!(rfc3339(entry.item.at_ms));
    view["read"] = json!(entry.read_at_ms.is_some());
    view["read_at"] = json!(entry.read_at_ms.map(rfc3339));
    view["archived"] = json!(entry.archived_at_ms.is_some());
    view["archived_at"] = json!(entry.archived_at_ms.map(rfc3339));
    view
}

/// `?status=&limit=&cursor=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    status: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// A cursor is the sequence number the next page starts below. Opaque to clients: only ever
/// handed back as it was given.
fn cursor(raw: Option<&str>) -> Result<Option<u64>, ApiError> {
    let bad = || ApiError::BadRequest {
        field: "cursor".into(),
        message: "must be a next_cursor from an earlier page".into(),
    };
    match raw {
        None => Ok(None),
        Some(raw) => raw.parse::<u64>().ok().filter(|&c| c > 0).map(Some).ok_or_else(bad),
    }
}

async fn list<S: Store + InboxState, C: Clock>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let recipient = recipient(id)?;
    let params = query(params)?;
    let status = match params.status.as_deref() {
        None => InboxStatus::All,
        Some(raw) => InboxStatus::parse(raw).ok_or_else(|| ApiError::BadRequest {
            field: "status".into(),
            message: "must be one of all, unread, archived".into(),
        })?,
    };
    let limit = params.limit.unwrap_or(PAGE_DEFAULT);
    if limit == 0 || limit > INBOX_PAGE_MAX {
        return Err(ApiError::BadRequest {
            field: "limit".into(),
            message: format!("must be between 1 and {INBOX_PAGE_MAX}"),
        });
    }
    let before = cursor(params.cursor.as_deref())?;
    let store = state.runner.store();
    let page = store.inbox_page(&tenant, &recipient, status, before, limit).await?;
    let items: Vec<Value> = page.entries.iter().map(entry_view).collect();
    let mut body = json!({ "recipient": recipient, "status": status, "items": items });
    if let Some(next) = page.next {
        body["next_cursor"] = json!(next.to_string());
    }
    Ok(Json(body).into_response())
}

async fn count<S: Store + InboxState, C: Clock>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let recipient = recipient(id)?;
    let counts = state.runner.store().inbox_counts(&tenant, &recipient).await?;
    Ok(Json(json!({ "recipient": recipient, "unread": counts.unread })).into_response())
}

/// A change to one entry, as an answer: its new state and the unread count, or 404.
fn changed(id: &NotificationId, marked: Marked, state: Value) -> Result<Response, ApiError> {
    match marked {
        Marked::Done { unread } => {
            let mut body = json!({ "notification_id": id, "unread": unread });
            if let (Some(body), Some(state)) = (body.as_object_mut(), state.as_object()) {
                body.extend(state.clone());
            }
            Ok(Json(body).into_response())
        }
        Marked::NotFound => Err(ApiError::NotFound),
    }
}

/// The tenant (from the key), recipient and notification an entry's route names, checked.
async fn entry<S: Store + InboxState, C: Clock>(
    state: &AppState<S, C>,
    headers: &HeaderMap,
    (recipient_id, notification_id): (String, String),
) -> Result<(TenantId, RecipientId, NotificationId), ApiError> {
    let tenant = tenant(state, headers).await?;
    Ok((tenant, recipient(recipient_id)?, super::notification_id(&notification_id)?))
}

async fn read<S: Store + InboxState, C: Clock>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    Path(path): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (tenant, recipient, id) = entry(&state, &headers, path).await?;
    let now_ms = state.runner.clock().now_ms();
    let marked = state.runner.store().inbox_mark_read(&tenant, &recipient, &id, now_ms).await?;
    changed(&id, marked, json!({ "read": true }))
}

async fn read_all<S: Store + InboxState, C: Clock>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let recipient = recipient(id)?;
    let now_ms = state.runner.clock().now_ms();
    let marked = state.runner.store().inbox_mark_all_read(&tenant, &recipient, now_ms).await?;
    tracing::info!(%tenant, marked, "Inbox marked read.");
    Ok(Json(json!({ "recipient": recipient, "marked": marked })).into_response())
}

async fn archive<S: Store + InboxState, C: Clock>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    Path(path): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (tenant, recipient, id) = entry(&state, &headers, path).await?;
    let now_ms = state.runner.clock().now_ms();
    let marked = state.runner.store().inbox_archive(&tenant, &recipient, &id, now_ms).await?;
    changed(&id, marked, json!({ "archived": true }))
}

async fn unarchive<S: Store + InboxState, C: Clock>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    Path(path): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (tenant, recipient, id) = entry(&state, &headers, path).await?;
    let marked = state.runner.store().inbox_unarchive(&tenant, &recipient, &id).await?;
    changed(&id, marked, json!({ "archived": false }))
}

/// `?last_event_id=`, for clients that cannot set the header.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamParams {
    last_event_id: Option<String>,
}

/// The sequence number a stream resumes after: the `Last-Event-ID` header, else the query's.
fn last_event_id(headers: &HeaderMap, query: Option<&str>) -> Result<Option<u64>, ApiError> {
    let (field, raw) = match headers.get("last-event-id") {
        Some(value) => ("Last-Event-ID", value.to_str().ok()),
        None => ("last_event_id", query),
    };
    let Some(raw) = raw.map(str::trim) else {
        return if field == "Last-Event-ID" { Err(bad_event_id(field)) } else { Ok(None) };
    };
    // An empty id is what EventSource sends when no event had one: a fresh start.
    if raw.is_empty() {
        return Ok(None);
    }
    raw.parse().map(Some).map_err(|_| bad_event_id(field))
}

fn bad_event_id(field: &str) -> ApiError {
    ApiError::BadRequest {
        field: field.into(),
        message: "must be the id of an event from this stream".into(),
    }
}

/// A refused stream: 429 when a bound is reached (with the error shape of every other answer),
/// 503 when the feed is down.
fn refused(why: Refused) -> Response {
    match why {
        Refused::Unavailable => ApiError::Unavailable.into_response(),
        Refused::PerKey(_) | Refused::Total(_) => {
            let body = json!({ "error": {
                "code": "too_many_streams",
                "message": why.to_string(),
            }});
            (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response()
        }
    }
}

fn inbox_event(entry: &InboxEntry, unread: u64) -> Event {
    Event::default()
        .event("inbox")
        .id(entry.seq.to_string())
        .data(json!({ "entry": entry_view(entry), "unread": unread }).to_string())
}

/// The live events after what was sent: those newer than `last`, in order, until the hub drops
/// the stream. The subscription lives as long as the stream, so a client that goes away gives
/// its place back.
fn live(
    subscription: Subscription<InboxEvent>,
    last: u64,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold((subscription, last), |(mut subscription, last)| async move {
        loop {
            // The inbox's hub closes a full stream (`WhenFull::Close`) rather than skip.
            let Delivery::Event(event) = subscription.events.recv().await? else { return None };
            if event.entry.seq > last {
                let sent = inbox_event(&event.entry, event.unread);
                return Some((Ok(sent), (subscription, event.entry.seq)));
            }
        }
    })
}

async fn stream<S: Store + InboxState + InboxFeed, C: Clock>(
    State(state): State<AppState<S, C>>,
    Extension(hub): Extension<Hub<InboxEvent>>,
    end: Option<Extension<StreamsEnd>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    params: Result<Query<StreamParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let recipient = recipient(id)?;
    let params = query(params)?;
    let after = last_event_id(&headers, params.last_event_id.as_deref())?;
    // Subscribe first, then read the store: an entry stored in between is both read and
    // announced, and the announcement is skipped by its sequence number; none falls in a gap.
    let subscription =
        match hub.subscribe((tenant.clone(), recipient.clone()), Box::new(|_| true)).await {
            Ok(subscription) => subscription,
            Err(why) => return Ok(refused(why)),
        };
    let store = state.runner.store();
    let counts = store.inbox_counts(&tenant, &recipient).await?;
    let mut first = vec![
        Event::default()
            .event("unread")
            .id(after.unwrap_or(counts.last_seq).to_string())
            .data(json!({ "unread": counts.unread }).to_string()),
    ];
    let mut last = counts.last_seq;
    if let Some(after) = after {
        // What the client missed, a page at a time; the inbox holds at most INBOX_LEN_MAX
        // entries, so this is a few reads at most.
        let mut from = after;
        loop {
            let missed = store.inbox_since(&tenant, &recipient, from, INBOX_PAGE_MAX).await?;
            for entry in &missed {
                first.push(inbox_event(entry, counts.unread));
                from = entry.seq;
                last = last.max(entry.seq);
            }
            if missed.len() < INBOX_PAGE_MAX {
                break;
            }
        }
    }
    tracing::debug!(%tenant, resumed = after.is_some(), "Inbox stream opened.");
    let events = futures::stream::iter(first.into_iter().map(Ok)).chain(live(subscription, last));
    Ok(sse(events, end))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn cursors_and_event_ids_are_checked() {
        assert!(matches!(cursor(None), Ok(None)));
        assert!(matches!(cursor(Some("42")), Ok(Some(42))));
        assert!(cursor(Some("0")).is_err());
        assert!(cursor(Some("abc")).is_err());
        let mut headers = HeaderMap::new();
        assert!(matches!(last_event_id(&headers, None), Ok(None)));
        assert!(matches!(last_event_id(&headers, Some("7")), Ok(Some(7))));
        assert!(last_event_id(&headers, Some("x")).is_err());
        headers.insert("last-event-id", HeaderValue::from_static("12"));
        assert!(matches!(last_event_id(&headers, Some("7")), Ok(Some(12))));
        headers.insert("last-event-id", HeaderValue::from_static(""));
        assert!(matches!(last_event_id(&headers, None), Ok(None)));
    }
}
