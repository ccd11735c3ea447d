//! Searching notifications: `GET /v1/notifications?state=&channel=&provider=&category=
//! &recipient=&since=&until=&limit=&cursor=`.
//!
//! Every filter given must hold. `since` and `until` bound the record's last update
//! (`updated_at`, what the indexes are ordered by), inclusive: an RFC 3339 timestamp, or an age
//! (`30s`, `2h`, `7d`: that long ago). The answer is newest first by `(updated_at, id)`;
//! `next_cursor` continues after the page (null at the end), and `truncated` says why the page
//! stopped early: `limit` (it is full) or `scan` (the request examined
//! [`LIST_SCAN_MAX`](workflows::listing::LIST_SCAN_MAX) records; continue with the cursor).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use steps::model::{Category, Channel, ProviderName, RecipientId};
use workflows::listing::{ListCursor, ListQuery};
use workflows::machine::StateKind;
use workflows::ports::{Clock, Inbox, Store};

use super::dlq::{parse_age, truncated};
use super::{ApiError, AppState, one_of, summary, tenant};

/// The query string of a listing, before it is checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    state: Option<String>,
    channel: Option<String>,
    provider: Option<String>,
    category: Option<String>,
    recipient: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

fn bad(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::BadRequest { field: field.to_owned(), message: message.into() }
}

/// A time bound: an RFC 3339 timestamp, or an age (`2h`, `7d`, ms) meaning that long before
/// `now_ms`.
pub(super) fn parse_time(field: &str, raw: &str, now_ms: u64) -> Result<u64, ApiError> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(raw.trim()) {
        return u64::try_from(at.timestamp_millis())
            .map_err(|_| bad(field, "must not be before 1970"));
    }
    let age = parse_age(&Value::String(raw.to_owned())).map_err(|_| {
        bad(
            field,
            "must be an RFC 3339 timestamp (2026-05-01T12:00:00Z) or an age like 30m, 2h or 7d",
        )
    })?;
    Ok(now_ms.saturating_sub(age))
}

/// A typed id, or a 400 naming the field.
fn id<T>(
    field: &str,
    raw: Option<String>,
    new: impl Fn(String) -> Result<T, steps::model::IdError>,
) -> Result<Option<T>, ApiError> {
    raw.map(|raw| new(raw).map_err(|e| bad(field, format!("is not a valid id: {e}")))).transpose()
}

impl ListParams {
    /// Checks every field at `now_ms` (ages count back from it).
    pub(super) fn check(self, now_ms: u64) -> Result<ListQuery, ApiError> {
        let state = one_of("state", self.state.as_deref(), &StateKind::ALL, StateKind::as_str)?;
        let channel = one_of("channel", self.channel.as_deref(), &Channel::ALL, Channel::as_str)?;
        let since_ms = self.since.map(|s| parse_time("since", &s, now_ms)).transpose()?;
        let until_ms = self.until.map(|s| parse_time("until", &s, now_ms)).transpose()?;
        if let (Some(since), Some(until)) = (since_ms, until_ms)
            && since > until
        {
            return Err(bad("since", "must not be later than until, or nothing can match"));
        }
        let cursor = match self.cursor.as_deref() {
            None => None,
            Some(raw) => Some(ListCursor::parse(raw).ok_or_else(|| {
                bad("cursor", "is not a cursor: pass the next_cursor of an earlier page as it is")
            })?),
        };
        let limit = super::limit(self.limit)?;
        Ok(ListQuery {
            state,
            channel,
            provider: id("provider", self.provider, ProviderName::new)?,
            category: id("category", self.category, Category::new)?,
            recipient: id("recipient", self.recipient, RecipientId::new)?,
            since_ms,
            until_ms,
            cursor,
            limit,
        })
    }
}

/// `GET /v1/notifications`
pub(super) async fn list<S: Store + Inbox, C: Clock>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let Query(params) = params.map_err(|e| bad("query", e.body_text()))?;
    let query = params.check(state.runner.clock().now_ms())?;
    let page = state.runner.store().list(&tenant, &query).await?;
    let items: Vec<Value> = page.records.iter().map(summary).collect();
    Ok(axum::Json(json!({
        "notifications": items,
        "next_cursor": page.next.as_ref().map(ListCursor::encode),
        "scanned": page.scanned,
        "truncated": truncated(page.truncated),
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: u64 = 1_780_000_000_000;

    fn params(pairs: &[(&str, &str)]) -> Result<ListQuery, ApiError> {
        let query: String =
            pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
        let Query(params): Query<ListParams> =
            Query::try_from_uri(&format!("/?{query}").parse().unwrap()).unwrap();
        params.check(NOW_MS)
    }

    fn field(result: Result<ListQuery, ApiError>) -> String {
        match result {
            Err(ApiError::BadRequest { field, .. }) => field,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn times_are_timestamps_or_ages() {
        assert_eq!(parse_time("since", "2h", NOW_MS).unwrap(), NOW_MS - 7_200_000);
        assert_eq!(parse_time("since", "7d", NOW_MS).unwrap(), NOW_MS - 604_800_000);
        assert_eq!(parse_time("since", "1970-01-01T00:00:01.5Z", NOW_MS).unwrap(), 1_500);
        assert_eq!(parse_time("since", "1970-01-01T01:00:01+01:00", NOW_MS).unwrap(), 1_000);
        assert_eq!(
            field(parse_time("until", "yesterday", NOW_MS).map(|_| ListQuery::default())),
            "until"
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        assert_eq!(field(params(&[("state", "lost")])), "state");
        assert_eq!(field(params(&[("channel", "fax")])), "channel");
        assert_eq!(field(params(&[("cursor", "abc")])), "cursor");
        assert_eq!(field(params(&[("since", "soon")])), "since");
        assert_eq!(field(params(&[("since", "1h"), ("until", "2h")])), "since");
        assert_eq!(field(params(&[("limit", "0")])), "limit");
        assert_eq!(field(params(&[("recipient", "a%20b")])), "recipient");
        let query = params(&[("state", "deferred"), ("since", "1h"), ("limit", "7")]).unwrap();
        assert_eq!(query.state, Some(StateKind::Deferred));
        assert_eq!((query.since_ms, query.limit), (Some(NOW_MS - 3_600_000), 7));
    }
}
