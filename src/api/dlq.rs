//! The dead-letter queue's operator endpoints: list with filters, plan, replay, purge.
//!
//! - `GET /v1/dlq?reason=&channel=&provider=&older_than=&newer_than=&limit=`
//! - `POST /v1/dlq/plan` `{"id" | "ids" | "filter", "include_unknown"}`
//! - `POST /v1/dlq/replay` `{"id" | "ids" | "filter", "yes", "rate_per_sec", "include_unknown"}`
//! - `POST /v1/dlq/purge` `{"id" | "ids" | "filter", "yes"}`
//!
//! `ids` (at most 10,000) names exactly the notifications to act on: the CLI confirms a dry run
//! by sending the ids it showed, so what runs is what the operator saw, not whatever matches the
//! filter a moment later.
//! A filter is `{"reason", "channel", "provider", "older_than", "newer_than", "limit"}`; ages are
//! `30s`, `15m`, `2h`, `7d` (anything humantime reads) or a number of ms. Replay and purge are
//! dry runs unless `"yes": true`: a dry run answers exactly what would happen and writes
//! nothing. Every input is checked before anything is written; a bad one is a 400 naming it.

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use steps::model::{Channel, NotificationId, ProviderName};
use workflows::dlq::{
    DLQ_SCAN_MAX, DlqFilter, DlqPlan, REPLAY_RATE_DEFAULT, REPLAY_RATE_MAX, Truncated,
};
use workflows::machine::{State as LifecycleState, StateKind};
use workflows::ports::{Clock, Inbox, LIST_LIMIT_MAX, Store};
use workflows::record::Record;
use workflows::runner::{PurgeVerdict, ReplayOptions, ReplayVerdict};

use super::{ApiError, AppState, body, parse, rfc3339, summary, tenant};

/// The longest age a filter accepts: ten years, far beyond any DLQ retention.
const AGE_MS_MAX: u64 = 10 * 365 * 86_400_000;
/// The longest `reason` filter accepted, in bytes.
const REASON_FILTER_LEN_MAX: usize = 200;

/// A DLQ filter as the query string or a JSON body carries it, before it is checked.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilterParams {
    /// Only reasons containing this text (case-insensitive).
    reason: Option<String>,
    /// Only this channel.
    channel: Option<String>,
    /// Only this provider.
    provider: Option<String>,
    /// Dead-lettered at least this long ago: `30s`, `15m`, `2h`, `7d`, or ms.
    older_than: Option<Value>,
    /// Dead-lettered at most this long ago.
    newer_than: Option<Value>,
    /// At most this many.
    limit: Option<usize>,
}

fn bad(prefix: &str, field: &str, message: impl Into<String>) -> ApiError {
    let field = if prefix.is_empty() { field.to_owned() } else { format!("{prefix}.{field}") };
    ApiError::BadRequest { field, message: message.into() }
}

/// Parses an age: a whole number of ms, or a humantime duration (`30s`, `15m`, `2h`, `7d`).
pub fn parse_age(value: &Value) -> Result<u64, String> {
    let ms = match value {
        Value::Number(n) => n.as_u64().ok_or("must be a whole number of ms or a duration")?,
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().map_err(|_| "is too large".to_owned())?
        }
        Value::String(s) => {
            let duration = humantime::parse_duration(s.trim()).map_err(|e| {
                format!("must be a duration like 30s, 15m, 2h or 7d, or a number of ms ({e})")
            })?;
            u64::try_from(duration.as_millis()).map_err(|_| "is too large".to_owned())?
        }
        _ => return Err("must be a duration like 30s, 15m, 2h or 7d, or a number of ms".into()),
    };
    if ms > AGE_MS_MAX {
        return Err(format!("must be at most ten years ({AGE_MS_MAX} ms)"));
    }
    Ok(ms)
}

impl FilterParams {
    /// Checks every field; `prefix` names where the filter sat in the request (`filter`, or
    /// nothing for the query string).
    fn check(
        self,
        prefix: &str,
        limit_default: usize,
        limit_max: usize,
    ) -> Result<DlqFilter, ApiError> {
        let reason_contains = match self.reason {
            Some(r) if r.is_empty() || r.len() > REASON_FILTER_LEN_MAX => {
                return Err(bad(
                    prefix,
                    "reason",
                    format!("must be 1 to {REASON_FILTER_LEN_MAX} bytes"),
                ));
            }
            other => other,
        };
        let channel = match self.channel.as_deref() {
            None => None,
            Some(raw) => Some(Channel::parse(raw).ok_or_else(|| {
                let all: Vec<&str> = Channel::ALL.iter().map(|c| c.as_str()).collect();
                bad(prefix, "channel", format!("must be one of {}", all.join(", ")))
            })?),
        };
        let provider = match self.provider {
            None => None,
            Some(raw) => Some(
                ProviderName::new(raw)
                    .map_err(|e| bad(prefix, "provider", format!("is not a provider name: {e}")))?,
            ),
        };
        let age = |field: &str, value: Option<Value>| -> Result<Option<u64>, ApiError> {
            value.as_ref().map(parse_age).transpose().map_err(|m| bad(prefix, field, m))
        };
        let older_than_ms = age("older_than", self.older_than)?;
        let newer_than_ms = age("newer_than", self.newer_than)?;
        if let (Some(older), Some(newer)) = (older_than_ms, newer_than_ms)
            && older > newer
        {
            return Err(bad(
                prefix,
                "newer_than",
                "must be at least older_than, or nothing can match",
            ));
        }
        let limit = self.limit.unwrap_or(limit_default);
        if limit == 0 || limit > limit_max {
            return Err(bad(prefix, "limit", format!("must be between 1 and {limit_max}")));
        }
        Ok(DlqFilter {
            ids: BTreeSet::new(),
            reason_contains,
            channel,
            provider,
            older_than_ms,
            newer_than_ms,
            limit,
        })
    }
}

/// What a plan, replay or purge is about: one `id`, a set of `ids`, or a `filter`.
struct Target {
    id: Option<String>,
    ids: Option<Vec<String>>,
    filter: Option<FilterParams>,
}

impl Target {
    /// Checks the target: at most one of `id`, `ids` and `filter` (none: the whole DLQ).
    fn check(self) -> Result<DlqFilter, ApiError> {
        let given = [self.id.is_some(), self.ids.is_some(), self.filter.is_some()];
        if given.iter().filter(|g| **g).count() > 1 {
            let field = if self.id.is_some() { "id" } else { "ids" };
            return Err(ApiError::BadRequest {
                field: field.into(),
                message: "give one of id, ids or filter, not several".into(),
            });
        }
        let named = |field: &str, raw: String| {
            NotificationId::new(raw).map_err(|e| ApiError::BadRequest {
                field: field.into(),
                message: format!("is not a notification id: {e}"),
            })
        };
        if let Some(id) = self.id {
            let id = named("id", id)?;
            super::record_notification(&id);
            return Ok(DlqFilter { ids: [id].into(), limit: 1, ..DlqFilter::default() });
        }
        if let Some(raw) = self.ids {
            if raw.is_empty() || raw.len() > DLQ_SCAN_MAX {
                return Err(ApiError::BadRequest {
                    field: "ids".into(),
                    message: format!("must name 1 to {DLQ_SCAN_MAX} notifications"),
                });
            }
            let ids = raw
                .into_iter()
                .enumerate()
                .map(|(i, id)| named(&format!("ids[{i}]"), id))
                .collect::<Result<BTreeSet<_>, _>>()?;
            return Ok(DlqFilter { limit: ids.len(), ids, ..DlqFilter::default() });
        }
        self.filter.unwrap_or_default().check("filter", DLQ_SCAN_MAX, DLQ_SCAN_MAX)
    }
}

/// Parses a JSON body; an empty body is `{}`.
fn json_body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return parse(b"{}", "");
    }
    parse(bytes, "")
}

fn truncated(t: Option<Truncated>) -> Value {
    t.map_or(Value::Null, |t| json!(t.as_str()))
}

/// A dead letter as listings show it: the notification summary plus why and when.
fn dead_letter(record: &Record) -> Value {
    let mut view = summary(record);
    if let LifecycleState::DeadLettered { reason, .. } = &record.state {
        view["reason"] = json!(reason);
    }
    view["dead_lettered_at"] = json!(rfc3339(record.updated_at_ms));
    view
}

/// `GET /v1/dlq`
pub(super) async fn list<S: Store + Inbox, C: Clock>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    params: Result<Query<FilterParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let Query(params) = params
        .map_err(|e| ApiError::BadRequest { field: "query".into(), message: e.body_text() })?;
    let filter = params.check("", 50, LIST_LIMIT_MAX)?;
    let now_ms = state.runner.clock().now_ms();
    let page = state.runner.store().dead_letters(&tenant, &filter, now_ms).await?;
    let items: Vec<Value> = page.records.iter().map(dead_letter).collect();
    Ok(axum::Json(json!({
        "notifications": items,
        "scanned": page.scanned,
        "truncated": truncated(page.truncated),
    }))
    .into_response())
}

/// `POST /v1/dlq/plan`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanBody {
    id: Option<String>,
    ids: Option<Vec<String>>,
    filter: Option<FilterParams>,
    #[serde(default)]
    include_unknown: bool,
}

fn plan_view(plan: &DlqPlan, include_unknown: bool) -> Value {
    json!({
        "matched": plan.matched,
        "replay": plan.replay,
        "maybe_delivered": plan.maybe_delivered,
        "include_unknown": include_unknown,
        "by_channel": plan.by_channel,
        "by_provider": plan.by_provider,
        "by_reason": plan.by_reason,
        "scanned": plan.scanned,
        "truncated": truncated(plan.truncated),
    })
}

pub(super) async fn plan<S: Store + Inbox, C: Clock>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let bytes = body(&state, raw)?;
    let request: PlanBody = json_body(&bytes)?;
    let filter = Target { id: request.id, ids: request.ids, filter: request.filter }.check()?;
    let plan = state.runner.dlq_plan(&tenant, &filter, request.include_unknown).await?;
    Ok(axum::Json(plan_view(&plan, request.include_unknown)).into_response())
}

/// `POST /v1/dlq/replay`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    id: Option<String>,
    ids: Option<Vec<String>>,
    filter: Option<FilterParams>,
    #[serde(default)]
    yes: bool,
    rate_per_sec: Option<u32>,
    #[serde(default)]
    include_unknown: bool,
}

pub(super) async fn replay<S: Store + Inbox, C: Clock>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let bytes = body(&state, raw)?;
    let request: ReplayBody = json_body(&bytes)?;
    let one = request.id.is_some();
    let filter = Target { id: request.id, ids: request.ids, filter: request.filter }.check()?;
    let rate_per_sec = request.rate_per_sec.unwrap_or(REPLAY_RATE_DEFAULT);
    if rate_per_sec == 0 || rate_per_sec > REPLAY_RATE_MAX {
        return Err(ApiError::BadRequest {
            field: "rate_per_sec".into(),
            message: format!("must be between 1 and {REPLAY_RATE_MAX}"),
        });
    }
    let options = ReplayOptions {
        dry_run: !request.yes,
        include_unknown: request.include_unknown,
        rate_per_sec,
    };
    let report = state.runner.dlq_replay(&tenant, &filter, options).await?;
    if one && matches!(report.items.as_slice(), [(_, ReplayVerdict::NotFound)]) {
        return Err(ApiError::NotFound);
    }
    let (mut replay, mut skipped, mut maybe_delivered) = (0_u64, 0_u64, 0_u64);
    let items: Vec<Value> = report
        .items
        .iter()
        .map(|(id, verdict)| match verdict {
            ReplayVerdict::Replay { at_ms, possible_duplicate } => {
                replay += 1;
                let outcome = if report.dry_run { "would_replay" } else { "replayed" };
                json!({
                    "id": id,
                    "outcome": outcome,
                    "at": rfc3339(*at_ms),
                    "possible_duplicate": possible_duplicate,
                })
            }
            ReplayVerdict::MaybeDelivered => {
                skipped += 1;
                maybe_delivered += 1;
                skipped_item(id, "maybe_delivered", None)
            }
            ReplayVerdict::NotDeadLettered { state } => {
                skipped += 1;
                skipped_item(id, "not_dead_lettered", Some(*state))
            }
            ReplayVerdict::NotFound => {
                skipped += 1;
                skipped_item(id, "not_found", None)
            }
        })
        .collect();
    tracing::info!(
        %tenant,
        dry_run = report.dry_run,
        replay,
        skipped,
        rate_per_sec,
        "Dead-letter replay."
    );
    Ok(axum::Json(json!({
        "dry_run": report.dry_run,
        "replay": replay,
        "skipped": skipped,
        "maybe_delivered": maybe_delivered,
        "rate_per_sec": rate_per_sec,
        "items": items,
        "scanned": report.scanned,
        "truncated": truncated(report.truncated),
    }))
    .into_response())
}

/// One item a replay or purge left alone, and why (with the state it was found in, when it was
/// not dead-lettered).
fn skipped_item(id: &NotificationId, reason: &str, state: Option<StateKind>) -> Value {
    let mut item = json!({ "id": id, "outcome": "skipped", "skip_reason": reason });
    if let Some(state) = state {
        item["state"] = json!(state);
    }
    item
}

/// `POST /v1/dlq/purge`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    id: Option<String>,
    ids: Option<Vec<String>>,
    filter: Option<FilterParams>,
    #[serde(default)]
    yes: bool,
}

pub(super) async fn purge<S: Store + Inbox, C: Clock>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let bytes = body(&state, raw)?;
    let request: PurgeBody = json_body(&bytes)?;
    let one = request.id.is_some();
    let filter = Target { id: request.id, ids: request.ids, filter: request.filter }.check()?;
    let report = state.runner.dlq_purge(&tenant, &filter, !request.yes).await?;
    if one && matches!(report.items.as_slice(), [(_, PurgeVerdict::NotFound)]) {
        return Err(ApiError::NotFound);
    }
    let (mut purge, mut skipped) = (0_u64, 0_u64);
    let items: Vec<Value> = report
        .items
        .iter()
        .map(|(id, verdict)| match verdict {
            PurgeVerdict::Purge => {
                purge += 1;
                let outcome = if report.dry_run { "would_purge" } else { "purged" };
                json!({ "id": id, "outcome": outcome })
            }
            PurgeVerdict::NotDeadLettered { state } => {
                skipped += 1;
                skipped_item(id, "not_dead_lettered", Some(*state))
            }
            PurgeVerdict::NotFound => {
                skipped += 1;
                skipped_item(id, "not_found", None)
            }
        })
        .collect();
    tracing::info!(%tenant, dry_run = report.dry_run, purge, skipped, "Dead-letter purge.");
    Ok(axum::Json(json!({
        "dry_run": report.dry_run,
        "purge": purge,
        "skipped": skipped,
        "items": items,
        "scanned": report.scanned,
        "truncated": truncated(report.truncated),
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_durations_or_milliseconds() {
        assert_eq!(parse_age(&json!("30s")), Ok(30_000));
        assert_eq!(parse_age(&json!("15m")), Ok(900_000));
        assert_eq!(parse_age(&json!("2h")), Ok(7_200_000));
        assert_eq!(parse_age(&json!("7d")), Ok(604_800_000));
        assert_eq!(parse_age(&json!("1500")), Ok(1_500));
        assert_eq!(parse_age(&json!(1500)), Ok(1_500));
        for bad in [json!("soon"), json!(""), json!(-5), json!(1.5), json!(true), json!("20y")] {
            assert!(parse_age(&bad).is_err(), "{bad}");
        }
    }
}
