//! The fake `POST /sms/json` (Vonage's SMS API).
//!
//! Like Vonage, it answers `200` for every request it reads, with
//! `{"message-count","messages":[...]}`: `status` `"0"` and a `message-id` per part on success,
//! else a non-zero `status` and `error-text` (2 missing parameter, 3 invalid parameter, 4 bad
//! credentials, 1 throttled, 5 internal error). A long text is split into parts as Vonage bills
//! it (`steps::sms::segments`). Injected 503s are plain HTTP errors, the way an
//! outage in front of the API looks.

use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use steps::model::PhoneNumber;
use subtle::ConstantTimeEq;

use super::{Counted, Fault, Sandbox, SandboxMessage, SandboxProvider, now_ms};

const PROVIDER: SandboxProvider = SandboxProvider::Vonage;

/// The most form fields read; the SMS API has a couple of dozen parameters.
const FIELDS_MAX: usize = 64;

/// Vonage's limit on a message, in characters (longer texts are refused as invalid).
const TEXT_CHARS_MAX: usize = 3_200;

fn answer(parts: Vec<Value>) -> Response {
    let body = json!({ "message-count": parts.len().to_string(), "messages": parts });
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn error(status: u32, text: &str) -> Response {
    answer(vec![json!({ "status": status.to_string(), "error-text": text })])
}

pub(super) async fn send_sms(
    State(sandbox): State<Sandbox>,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    let (delay, fault) = sandbox.admit(PROVIDER);
    tokio::time::sleep(delay).await;

    // An unreadable form reads as an empty one: Vonage then reports the first missing parameter.
    let fields: Vec<(String, String)> =
        form.map(|Form(f)| f).unwrap_or_default().into_iter().take(FIELDS_MAX).collect();
    let field = |name: &str| {
        fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    };
    let shared = &sandbox.shared;
    let (Some(key), Some(secret)) = (field("api_key"), field("api_secret")) else {
        sandbox.count(PROVIDER, Counted::Unauthorized);
        return error(2, "Missing api_key");
    };
    let key_ok = key.as_bytes().ct_eq(shared.vonage_key.as_bytes());
    let secret_ok = secret.as_bytes().ct_eq(shared.vonage_secret.expose().as_bytes());
    if !bool::from(key_ok & secret_ok) {
        sandbox.count(PROVIDER, Counted::Unauthorized);
        return error(4, "Bad Credentials");
    }
    let invalid = |status: u32, text: &str| {
        sandbox.count(PROVIDER, Counted::Invalid);
        error(status, text)
    };
    let Some(from) = field("from") else {
        return invalid(2, "Missing from param");
    };
    let Some(to) = field("to") else {
        return invalid(2, "Missing to param");
    };
    let Some(text) = field("text") else {
        return invalid(2, "Missing text param");
    };
    // Vonage wants the number without `+`; with one it is not a number.
    if to.starts_with('+') || PhoneNumber::parse(&format!("+{to}")).is_err() {
        sandbox.count(PROVIDER, Counted::Recipient);
        return error(3, &format!("Invalid to address: {to}"));
    }
    if from.chars().count() > 15 {
        return invalid(3, "Invalid from param");
    }
    let unicode = match field("type") {
        None | Some("text") => false,
        Some("unicode") => true,
        Some(_) => return invalid(3, "Invalid type param"),
    };
    if text.chars().count() > TEXT_CHARS_MAX {
        return invalid(3, "Invalid text param: too long");
    }
    let segments = steps::sms::segments(text);
    if !unicode && segments.encoding == steps::sms::Encoding::Ucs2 {
        // Vonage would replace the characters GSM-7 lacks with `?`; a client that forgot
        // `type=unicode` should see that here rather than in a customer's complaint.
        return invalid(3, "Invalid text param: characters outside GSM-7 need type=unicode");
    }
    if field("callback").is_some_and(|c| !c.starts_with("http")) {
        return invalid(23, "Bad callback :: Missing Protocol");
    }

    match fault {
        Some(Fault::ServerError(503)) => {
            sandbox.count(PROVIDER, Counted::ServerError);
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        Some(Fault::ServerError(_)) => {
            sandbox.count(PROVIDER, Counted::ServerError);
            return error(5, "Internal Error");
        }
        Some(Fault::RateLimited(_)) => {
            // Vonage throttles with a status in a 200, without Retry-After.
            sandbox.count(PROVIDER, Counted::RateLimited);
            return error(1, "Throttled");
        }
        _ => {}
    }

    let parts = usize::try_from(segments.segments).unwrap_or(1).max(1);
    let ids: Vec<String> = (0..parts).map(|_| sandbox.vonage_message_id()).collect();
    let hang = match fault {
        Some(Fault::Hang(duration)) => Some(duration),
        _ => None,
    };
    let request: Map<String, Value> = fields
        .iter()
        .filter(|(k, _)| k != "api_secret")
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    sandbox.record(
        PROVIDER,
        SandboxMessage {
            message_id: ids[0].clone(),
            received_at_ms: now_ms(),
            to: to.to_owned(),
            notification_id: field("client-ref").map(str::to_owned),
            answered: hang.is_none(),
            request: Value::Object(request),
        },
    );
    match hang {
        Some(duration) => {
            sandbox.count(PROVIDER, Counted::Hung);
            sandbox.hang(duration).await;
        }
        None => sandbox.count(PROVIDER, Counted::Accepted),
    }
    answer(
        ids.into_iter()
            .map(|id| {
                json!({
                    "to": to,
                    "message-id": id,
                    "status": "0",
                    "remaining-balance": "10.00000000",
                    "message-price": "0.03330000",
                    "network": "23410",
                })
            })
            .collect(),
    )
}
