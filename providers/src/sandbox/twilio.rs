//! The fake `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`.
//!
//! Checks basic auth, the account in the path and the form, in Twilio's error shape
//! (`{"code","message","more_info","status"}`), honours Twilio's test numbers, and answers
//! `201` with a Message resource.

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Map, Value, json};
use steps::model::PhoneNumber;
use subtle::ConstantTimeEq;

use super::{Counted, Fault, Sandbox, SandboxMessage, SandboxProvider, now_ms, rfc2822};

const PROVIDER: SandboxProvider = SandboxProvider::Twilio;

/// Twilio's limit on a message body, in characters.
const BODY_CHARS_MAX: usize = 1_600;

/// The most form fields read; Twilio's create call has a few dozen optional parameters.
const FIELDS_MAX: usize = 64;

fn error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16(),
    });
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// Twilio's test `To` numbers and the error each gets.
fn magic_to(to: &str) -> Option<(u32, String)> {
    let answer = match to {
        "+15005550001" => (21211, format!("The 'To' number {to} is not a valid phone number.")),
        "+15005550002" => (
            21612,
            format!(
                "The 'To' phone number: {to}, is not currently reachable using the 'From' phone number via SMS."
            ),
        ),
        "+15005550003" => (
            21408,
            format!(
                "Permission to send an SMS has not been enabled for the region indicated by the 'To' number: {to}."
            ),
        ),
        "+15005550004" => (21610, "Attempt to send to unsubscribed recipient".to_owned()),
        "+15005550009" => (21614, format!("'To' number {to} is not a valid mobile number")),
        _ => return None,
    };
    Some(answer)
}

/// Twilio's test `From` numbers and the error each gets.
fn magic_from(from: &str) -> Option<(u32, String)> {
    let answer = match from {
        "+15005550001" => (
            21212,
            format!(
                "The 'From' number {from} is not a valid phone number, shortcode, or alphanumeric sender ID."
            ),
        ),
        "+15005550007" => (
            21606,
            format!(
                "The From phone number {from} is not a valid, SMS-capable inbound phone number or short code for your account."
            ),
        ),
        "+15005550008" => (
            21611,
            "This 'From' number has exceeded the maximum number of queued messages".to_owned(),
        ),
        _ => return None,
    };
    Some(answer)
}

/// The basic-auth user and password, when the header is well-formed.
fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

pub(super) async fn create_message(
    State(sandbox): State<Sandbox>,
    Path(account_sid): Path<String>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    let (delay, fault) = sandbox.admit(PROVIDER);
    tokio::time::sleep(delay).await;

    let shared = &sandbox.shared;
    let authorized = basic_auth(&headers).is_some_and(|(user, password)| {
        let user_ok = user.as_bytes().ct_eq(shared.twilio_account.as_bytes());
        let password_ok = password.as_bytes().ct_eq(shared.twilio_token.expose().as_bytes());
        bool::from(user_ok & password_ok)
    });
    if !authorized {
        sandbox.count(PROVIDER, Counted::Unauthorized);
        return error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    if account_sid != shared.twilio_account {
        sandbox.count(PROVIDER, Counted::Invalid);
        return error(
            StatusCode::NOT_FOUND,
            20404,
            &format!(
                "The requested resource /2010-04-01/Accounts/{account_sid}/Messages.json was not found"
            ),
        );
    }
    // An unreadable form is treated as an empty one: Twilio then complains about the first
    // required parameter, which is what a client sees from the real API too.
    let fields: Vec<(String, String)> =
        form.map(|Form(f)| f).unwrap_or_default().into_iter().take(FIELDS_MAX).collect();
    let field = |name: &str| {
        fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    };
    let (to, from, service, body) =
        (field("To"), field("From"), field("MessagingServiceSid"), field("Body"));

    let bad_request = |code: u32, message: &str| {
        sandbox.count(PROVIDER, Counted::Invalid);
        error(StatusCode::BAD_REQUEST, code, message)
    };
    let Some(to) = to else {
        return bad_request(21604, "A 'To' phone number is required.");
    };
    if PhoneNumber::parse(to).is_err() {
        return bad_request(21211, &format!("The 'To' number {to} is not a valid phone number."));
    }
    if from.is_none() && service.is_none() {
        return bad_request(21603, "A 'From' phone number is required.");
    }
    let service_ok = service.is_none_or(|s| crate::options::sid("", "", s, "MG").is_ok());
    if !service_ok {
        sandbox.count(PROVIDER, Counted::Invalid);
        return error(
            StatusCode::NOT_FOUND,
            20404,
            "The requested resource (Messaging Service) was not found",
        );
    }
    let Some(body) = body else {
        return bad_request(21602, "Message body is required.");
    };
    if body.chars().count() > BODY_CHARS_MAX {
        return bad_request(
            21617,
            "The concatenated message body exceeds the 1600 character limit.",
        );
    }
    if let Some((code, message)) = magic_to(to) {
        sandbox.count(PROVIDER, Counted::Recipient);
        return error(StatusCode::BAD_REQUEST, code, &message);
    }
    if let Some((code, message)) = from.filter(|_| service.is_none()).and_then(magic_from) {
        let counted = if code == 21611 { Counted::RateLimited } else { Counted::Invalid };
        sandbox.count(PROVIDER, counted);
        return error(StatusCode::BAD_REQUEST, code, &message);
    }

    match fault {
        Some(Fault::ServerError(status)) => {
            sandbox.count(PROVIDER, Counted::ServerError);
            let (status, code, text) = if status == 503 {
                (StatusCode::SERVICE_UNAVAILABLE, 20503, "Service Unavailable")
            } else {
                (StatusCode::INTERNAL_SERVER_ERROR, 20500, "Internal Server Error")
            };
            return error(status, code, text);
        }
        Some(Fault::RateLimited(retry_after_secs)) => {
            sandbox.count(PROVIDER, Counted::RateLimited);
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests");
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            return response;
        }
        _ => {}
    }

    let sid = sandbox.twilio_sid();
    let now = now_ms();
    let hang = match fault {
        Some(Fault::Hang(duration)) => Some(duration),
        _ => None,
    };
    let request: Map<String, Value> =
        fields.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    sandbox.record(
        PROVIDER,
        SandboxMessage {
            message_id: sid.clone(),
            received_at_ms: now,
            to: to.to_owned(),
            notification_id: field("StatusCallback").and_then(notification_id),
            answered: hang.is_none(),
            request: Value::Object(request),
        },
    );
    let resource = message_resource(&account_sid, &sid, to, from, service, body, now / 1_000);
    match hang {
        Some(duration) => {
            sandbox.count(PROVIDER, Counted::Hung);
            sandbox.hang(duration).await;
        }
        None => {
            sandbox.count(PROVIDER, Counted::Accepted);
            if let (Some(callback), Some(plan)) =
                (field("StatusCallback"), sandbox.plan_receipts(PROVIDER))
            {
                sandbox.send_twilio_receipts(plan, &sid, callback);
            }
        }
    }
    (StatusCode::CREATED, [(header::CONTENT_TYPE, "application/json")], resource.to_string())
        .into_response()
}

/// The `n` parameter of courant's status-callback URL.
fn notification_id(callback: &str) -> Option<String> {
    let (_, query) = callback.split_once('?')?;
    query.split('&').find_map(|pair| pair.strip_prefix("n=")).map(str::to_owned)
}

/// The number of segments Twilio would bill: GSM-7 when every character is ASCII (a close
/// approximation of the GSM alphabet), else UCS-2.
fn segments(body: &str) -> usize {
    let chars = body.chars().count();
    let (single, multi) = if body.is_ascii() { (160, 153) } else { (70, 67) };
    if chars <= single { 1 } else { chars.div_ceil(multi) }
}

fn message_resource(
    account: &str,
    sid: &str,
    to: &str,
    from: Option<&str>,
    service: Option<&str>,
    body: &str,
    now_secs: u64,
) -> Value {
    let date = rfc2822(now_secs);
    let uri = format!("/2010-04-01/Accounts/{account}/Messages/{sid}");
    // With a Messaging Service, Twilio answers `accepted` before it has picked a sender, so
    // `from` is null and the segment count is 0 (Message resource docs).
    let (status, from, num_segments) = match service {
        Some(_) => ("accepted", None, 0),
        None => ("queued", from, segments(body)),
    };
    json!({
        "account_sid": account,
        "api_version": "2010-04-01",
        "body": body,
        "date_created": date,
        "date_sent": null,
        "date_updated": date,
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": from,
        "messaging_service_sid": service,
        "num_media": "0",
        "num_segments": num_segments.to_string(),
        "price": null,
        "price_unit": "USD",
        "sid": sid,
        "status": status,
        "subresource_uris": { "media": format!("{uri}/Media.json") },
        "to": to,
        "uri": format!("{uri}.json"),
    })
}
