//! The fake receiver of signed webhooks, `POST /sandbox/webhook`.
//!
//! It does what a careful receiver does (Standard Webhooks): verifies `webhook-signature` over
//! the raw body with its `whsec_` secret and refuses a timestamp more than five minutes off (401),
//! refuses a body that is not JSON (400), and answers `204` otherwise, recording the message under
//! its `webhook-id`. Injected faults answer 429 with `Retry-After`, 500/503, or hang.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::{Counted, Fault, Sandbox, SandboxMessage, SandboxProvider, now_ms};

const PROVIDER: SandboxProvider = SandboxProvider::Webhook;

fn text(headers: &HeaderMap, name: &str) -> String {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

pub(super) async fn receive(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (delay, fault) = sandbox.admit(PROVIDER);
    tokio::time::sleep(delay).await;

    let id = text(&headers, "webhook-id");
    let verified = crate::webhook::verify(
        &sandbox.shared.webhook_key,
        &id,
        &text(&headers, "webhook-timestamp"),
        &text(&headers, "webhook-signature"),
        &body,
        now_ms() / 1_000,
    );
    if let Err(error) = verified {
        sandbox.count(PROVIDER, Counted::Unauthorized);
        return (StatusCode::UNAUTHORIZED, error.to_string()).into_response();
    }
    let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
        sandbox.count(PROVIDER, Counted::Invalid);
        return (StatusCode::BAD_REQUEST, "the body is not JSON").into_response();
    };
    match fault {
        Some(Fault::ServerError(status)) => {
            sandbox.count(PROVIDER, Counted::ServerError);
            return StatusCode::from_u16(status)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
                .into_response();
        }
        Some(Fault::RateLimited(retry_after_secs)) => {
            sandbox.count(PROVIDER, Counted::RateLimited);
            let mut response = StatusCode::TOO_MANY_REQUESTS.into_response();
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            return response;
        }
        _ => {}
    }
    let hang = match fault {
        Some(Fault::Hang(duration)) => Some(duration),
        _ => None,
    };
    let data = &payload["data"];
    sandbox.record(
        PROVIDER,
        SandboxMessage {
            message_id: id,
            received_at_ms: now_ms(),
            to: data["recipient_id"].as_str().unwrap_or("").to_owned(),
            notification_id: data["notification_id"].as_str().map(str::to_owned),
            answered: hang.is_none(),
            request: payload,
        },
    );
    match hang {
        Some(duration) => {
            sandbox.count(PROVIDER, Counted::Hung);
            sandbox.hang(duration).await;
        }
        None => sandbox.count(PROVIDER, Counted::Accepted),
    }
    StatusCode::NO_CONTENT.into_response()
}
