//! The operators' views behind `courant queues`, `courant breakers` and `courant stats`:
//!
//! - `GET /v1/admin/queues`: the shared wake-up queue's counts and lag, and the worker registry
//!   (every tenant's: the queue is shared; workers are named by host and process, nothing else).
//! - `GET /v1/admin/breakers`: every live worker's provider circuit breakers, as its latest
//!   heartbeat reported them (breakers are per process; a heartbeat is at most 5 s old).
//! - `GET /v1/admin/stats?window=1h&channel=&provider=`: the key's tenant's delivery statistics
//!   over the window, by channel and provider, with latency percentiles by channel
//!   (`storage::stats`).

use axum::Router;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use steps::model::{Channel, ProviderName};
use storage::queue::WakeQueue;
use storage::stats::{
    LATENCY_RATIO, MINUTE_MS, StatsStore, WINDOW_MS_MAX, WINDOW_MS_MIN, minute_of, report,
};
use workflows::ports::{Clock, Inbox, Store};

use super::{ApiError, AppState, rfc3339, tenant};

/// The window `courant stats` reads when none is given.
const WINDOW_DEFAULT: &str = "1h";

/// The routes, mounted by `api::router`.
pub fn routes<S, C>() -> Router<AppState<S, C>>
where
    S: Store + Inbox + WakeQueue + StatsStore,
    C: Clock,
{
    Router::new()
        .route("/v1/admin/queues", get(queues::<S, C>))
        .route("/v1/admin/breakers", get(breakers::<S, C>))
        .route("/v1/admin/stats", get(stats::<S, C>))
}

async fn breakers<S, C>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
) -> Result<Response, ApiError>
where
    S: Store + Inbox + WakeQueue,
    C: Clock,
{
    tenant(&state, &headers).await?;
    let store = state.runner.store();
    let now_ms = store.now_ms();
    let workers = store.workers().await?;
    let mut rows: Vec<(&str, &str, serde_json::Value)> = workers
        .iter()
        .filter(|w| w.alive(now_ms))
        .flat_map(|w| w.breakers.iter().map(move |b| (w, b)))
        .map(|(w, b)| {
            let failure_rate = (b.recent_calls > 0)
                .then(|| f64::from(b.recent_failures) / f64::from(b.recent_calls));
            let row = json!({
                "provider": b.provider,
                "channel": b.channel,
                "state": b.state,
                "since": rfc3339(b.since_ms),
                "failure_rate": failure_rate,
                "recent_calls": b.recent_calls,
                "recent_failures": b.recent_failures,
                "consecutive_failures": b.consecutive_failures,
                "calls": b.calls,
                "failures": b.failures,
                "opened": b.opened,
                "rejected": b.rejected,
                "worker": w.id,
                "host": w.host,
                "reported_at": rfc3339(w.seen_at_ms),
            });
            (b.provider.as_str(), w.id.as_str(), row)
        })
        .collect();
    rows.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let breakers: Vec<serde_json::Value> = rows.into_iter().map(|(_, _, row)| row).collect();
    Ok(axum::Json(json!({ "breakers": breakers })).into_response())
}

async fn queues<S, C>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
) -> Result<Response, ApiError>
where
    S: Store + Inbox + WakeQueue,
    C: Clock,
{
    tenant(&state, &headers).await?;
    let store = state.runner.store();
    let stats = store.stats().await?;
    let workers = store.workers().await?;
    let now_ms = store.now_ms();
    let alive = workers.iter().filter(|w| w.alive(now_ms)).count();
    let workers: Vec<_> = workers
        .iter()
        .map(|w| {
            json!({
                "id": w.id,
                "host": w.host,
                "pid": w.pid,
                "slots": w.slots,
                "started_at": rfc3339(w.started_at_ms),
                "last_seen": rfc3339(w.seen_at_ms),
                "last_seen_ago_ms": now_ms.saturating_sub(w.seen_at_ms),
                "alive": w.alive(now_ms),
            })
        })
        .collect();
    Ok(axum::Json(json!({
        "ready": stats.ready,
        "due": stats.due,
        "scheduled": stats.scheduled,
        "in_flight": stats.pending,
        "parked": stats.parked,
        "overdue": stats.overdue,
        "dead_lettered": stats.dead_lettered,
        "lag_ms": stats.lag_ms(now_ms),
        "oldest_waiting_since": stats.oldest_waiting_since_ms.map(rfc3339),
        "workers_alive": alive,
        "workers": workers,
    }))
    .into_response())
}

/// `?window=&channel=&provider=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsParams {
    window: Option<String>,
    channel: Option<String>,
    provider: Option<String>,
}

/// Parses a window (`15m`, `1h`, `24h`, `7d`, any humantime duration) within the limits.
fn window_ms(raw: &str) -> Result<u64, ApiError> {
    let bad = || ApiError::BadRequest {
        field: "window".into(),
        message: format!(
            "must be a duration from 1m to 7d (15m, 1h, 24h, 7d), not '{}'",
            raw.chars().take(32).collect::<String>()
        ),
    };
    let duration = humantime::parse_duration(raw.trim()).map_err(|_| bad())?;
    let ms = u64::try_from(duration.as_millis()).map_err(|_| bad())?;
    if !(WINDOW_MS_MIN..=WINDOW_MS_MAX).contains(&ms) {
        return Err(bad());
    }
    Ok(ms)
}

async fn stats<S, C>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    params: Result<Query<StatsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError>
where
    S: Store + Inbox + WakeQueue + StatsStore,
    C: Clock,
{
    let tenant = tenant(&state, &headers).await?;
    let Query(params) = params
        .map_err(|e| ApiError::BadRequest { field: "query".into(), message: e.body_text() })?;
    let window = params.window.as_deref().unwrap_or(WINDOW_DEFAULT);
    let span_ms = window_ms(window)?;
    let channel = match params.channel.as_deref() {
        None => None,
        Some(raw) => Some(Channel::parse(raw).ok_or_else(|| ApiError::BadRequest {
            field: "channel".into(),
            message: "must be one of email, sms, push, in_app, chat".into(),
        })?),
    };
    let provider = match params.provider.as_deref() {
        None => None,
        Some(raw) => Some(ProviderName::new(raw).map_err(|e| ApiError::BadRequest {
            field: "provider".into(),
            message: e.to_string(),
        })?),
    };
    let store = state.runner.store();
    let now_ms = store.now_ms();
    // Whole minutes: the one in progress and those before it, `span` in all.
    let to_minute = minute_of(now_ms);
    let from_minute = to_minute + 1 - (span_ms.div_ceil(MINUTE_MS)).max(1);
    let counts = store.read_stats(&tenant, from_minute, to_minute).await?;
    let report = report(&counts, channel, provider.as_ref());
    Ok(axum::Json(json!({
        "window": window,
        "window_ms": span_ms,
        "from": rfc3339(from_minute * MINUTE_MS),
        "to": rfc3339(now_ms),
        "channel": channel,
        "provider": provider,
        "latency_relative_error": LATENCY_RATIO - 1.0,
        "rows": report.rows,
        "latency": report.latency,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_durations_from_a_minute_to_a_week() {
        assert_eq!(window_ms("15m").ok(), Some(15 * 60_000));
        assert_eq!(window_ms("1h").ok(), Some(3_600_000));
        assert_eq!(window_ms("24h").ok(), Some(86_400_000));
        assert_eq!(window_ms("7d").ok(), Some(7 * 86_400_000));
        for bad in ["30s", "8d", "soon", "", "-1h"] {
            match window_ms(bad) {
                Err(ApiError::BadRequest { field, .. }) => assert_eq!(field, "window", "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
