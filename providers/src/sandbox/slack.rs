//! The fake Slack incoming webhook, `POST /services/{team}/{bot}/{token}`.
//!
//! Slack's answers: `200` `ok`; `403` `invalid_token` for a token it does not know; `400`
//! `invalid_payload` for a body that is not a JSON object, `no_text` when `text` is missing or
//! empty; `429` with `Retry-After`; `500` `rollup_error`. Bodies are plain text, as Slack sends.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use subtle::ConstantTimeEq;

use super::{Counted, Fault, Sandbox, SandboxMessage, SandboxProvider, now_ms};

const PROVIDER: SandboxProvider = SandboxProvider::Slack;

fn answer(status: StatusCode, body: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html")], body).into_response()
}

pub(super) async fn post_message(
    State(sandbox): State<Sandbox>,
    Path((team, bot, token)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let (delay, fault) = sandbox.admit(PROVIDER);
    tokio::time::sleep(delay).await;

    if !bool::from(token.as_bytes().ct_eq(sandbox.shared.slack_token.expose().as_bytes())) {
        sandbox.count(PROVIDER, Counted::Unauthorized);
        return answer(StatusCode::FORBIDDEN, "invalid_token");
    }
    let payload = match serde_json::from_slice::<Value>(&body) {
        Ok(payload @ Value::Object(_)) => payload,
        _ => {
            sandbox.count(PROVIDER, Counted::Invalid);
            return answer(StatusCode::BAD_REQUEST, "invalid_payload");
        }
    };
    if payload["text"].as_str().is_none_or(|t| t.trim().is_empty()) {
        sandbox.count(PROVIDER, Counted::Invalid);
        return answer(StatusCode::BAD_REQUEST, "no_text");
    }
    match fault {
        Some(Fault::ServerError(_)) => {
            sandbox.count(PROVIDER, Counted::ServerError);
            return answer(StatusCode::INTERNAL_SERVER_ERROR, "rollup_error");
        }
        Some(Fault::RateLimited(retry_after_secs)) => {
            sandbox.count(PROVIDER, Counted::RateLimited);
            let mut response = answer(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            return response;
        }
        _ => {}
    }
    let hang = match fault {
        Some(Fault::Hang(duration)) => Some(duration),
        _ => None,
    };
    sandbox.record(
        PROVIDER,
        SandboxMessage {
            message_id: format!("{team}/{bot}/{}", now_ms()),
            received_at_ms: now_ms(),
            to: format!("{team}/{bot}"),
            notification_id: None,
            answered: hang.is_none(),
            request: payload.clone(),
        },
    );
    match hang {
        Some(duration) => {
            sandbox.count(PROVIDER, Counted::Hung);
            sandbox.hang(duration).await;
        }
        None => sandbox.count(PROVIDER, Counted::Accepted),
    }
    answer(StatusCode::OK, "ok")
}
