//! The fake `POST /v3/mail/send`.
//!
//! Validation follows SendGrid's documented rules for the fields courant sends, and answers with
//! SendGrid's messages and field paths, independently of `crate::sendgrid` (so a bug in our
//! request builder shows up as a 400 here instead of being mirrored).

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use steps::model::EmailAddress;
use subtle::ConstantTimeEq;

use super::{Counted, Fault, Sandbox, SandboxMessage, SandboxProvider, now_ms};

const PROVIDER: SandboxProvider = SandboxProvider::Sendgrid;

/// SendGrid's limit on personalizations per request.
const PERSONALIZATIONS_MAX: usize = 1_000;

const HELP_TO: &str = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message.personalizations.to";
const HELP_PERSONALIZATIONS: &str =
    "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#-Personalizations-Errors";
const HELP_FROM: &str =
    "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message.from";
const HELP_SUBJECT: &str =
    "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message.subject";
const HELP_CONTENT: &str =
    "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message.content";

/// One entry of SendGrid's `errors` array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Problem {
    field: Option<String>,
    message: &'static str,
    help: Option<&'static str>,
}

fn problem(field: impl Into<String>, message: &'static str, help: &'static str) -> Problem {
    Problem { field: Some(field.into()), message, help: Some(help) }
}

fn errors(status: StatusCode, problems: &[Problem]) -> Response {
    let errors: Vec<Value> = problems
        .iter()
        .map(|p| json!({"field": p.field, "message": p.message, "help": p.help}))
        .collect();
    (status, [(header::CONTENT_TYPE, "application/json")], json!({ "errors": errors }).to_string())
        .into_response()
}

fn request_error(status: StatusCode, message: &'static str) -> Response {
    errors(status, &[Problem { field: None, message, help: None }])
}

pub(super) async fn mail_send(
    axum::extract::State(sandbox): axum::extract::State<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (delay, fault) = sandbox.admit(PROVIDER);
    tokio::time::sleep(delay).await;

    let expected = format!("Bearer {}", sandbox.shared.sendgrid_key.expose());
    let given = headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes).unwrap_or_default();
    if !bool::from(given.ct_eq(expected.as_bytes())) {
        sandbox.count(PROVIDER, Counted::Unauthorized);
        return request_error(
            StatusCode::UNAUTHORIZED,
            "The provided authorization grant is invalid, expired, or revoked",
        );
    }
    let json_content = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_content {
        sandbox.count(PROVIDER, Counted::Invalid);
        return request_error(StatusCode::BAD_REQUEST, "Content-Type should be application/json.");
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        sandbox.count(PROVIDER, Counted::Invalid);
        return request_error(StatusCode::BAD_REQUEST, "Bad Request");
    };
    let problems = validate(&request);
    if !problems.is_empty() {
        sandbox.count(PROVIDER, Counted::Invalid);
        return errors(StatusCode::BAD_REQUEST, &problems);
    }

    match fault {
        Some(Fault::ServerError(status)) => {
            sandbox.count(PROVIDER, Counted::ServerError);
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return request_error(status, "internal error");
        }
        Some(Fault::RateLimited(retry_after_secs)) => {
            sandbox.count(PROVIDER, Counted::RateLimited);
            let mut response = request_error(StatusCode::TOO_MANY_REQUESTS, "too many requests");
            let reset = now_ms() / 1_000 + retry_after_secs;
            let headers = response.headers_mut();
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            headers.insert("x-ratelimit-limit", HeaderValue::from(600_u64));
            headers.insert("x-ratelimit-remaining", HeaderValue::from(0_u64));
            headers.insert("x-ratelimit-reset", HeaderValue::from(reset));
            return response;
        }
        Some(Fault::Hang(duration)) => {
            let id = take(&sandbox, request, false);
            sandbox.count(PROVIDER, Counted::Hung);
            sandbox.hang(duration).await;
            return accepted(&id);
        }
        None => {}
    }
    if let Some(plan) = sandbox.plan_receipts(PROVIDER) {
        let id = sandbox.sendgrid_message_id();
        sandbox.send_sendgrid_receipts(plan, &id, &request);
        record(&sandbox, id.clone(), request, true);
        sandbox.count(PROVIDER, Counted::Accepted);
        return accepted(&id);
    }
    let id = take(&sandbox, request, true);
    sandbox.count(PROVIDER, Counted::Accepted);
    accepted(&id)
}

/// Records the message and returns its id.
fn take(sandbox: &Sandbox, request: Value, answered: bool) -> String {
    let id = sandbox.sendgrid_message_id();
    record(sandbox, id.clone(), request, answered);
    id
}

/// Records the message under `id`.
fn record(sandbox: &Sandbox, id: String, request: Value, answered: bool) {
    let first = &request["personalizations"][0];
    let to = first["to"][0]["email"].as_str().unwrap_or_default().to_owned();
    let notification_id = first["custom_args"]["notification_id"].as_str().map(str::to_owned);
    sandbox.record(
        PROVIDER,
        SandboxMessage {
            message_id: id,
            received_at_ms: now_ms(),
            to,
            notification_id,
            answered,
            request,
        },
    );
}

fn accepted(id: &str) -> Response {
    let mut response = StatusCode::ACCEPTED.into_response();
    if let Ok(value) = HeaderValue::from_str(id) {
        response.headers_mut().insert("x-message-id", value);
    }
    response
}

fn is_address(value: &Value) -> bool {
    value.as_str().is_some_and(|s| EmailAddress::parse(s).is_ok())
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// SendGrid's checks for the fields courant uses, in SendGrid's words.
pub(super) fn validate(request: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    let has_template = request.get("template_id").is_some_and(Value::is_string);

    let personalizations = request.get("personalizations").and_then(Value::as_array);
    let personalizations = match personalizations {
        Some(list) if !list.is_empty() && list.len() <= PERSONALIZATIONS_MAX => list.as_slice(),
        _ => {
            problems.push(problem(
                "personalizations",
                "The personalizations field is required and must have at least one personalization.",
                HELP_PERSONALIZATIONS,
            ));
            &[]
        }
    };
    for (i, p) in personalizations.iter().enumerate() {
        match p.get("to").and_then(Value::as_array) {
            Some(to) if !to.is_empty() => {
                for (j, address) in to.iter().enumerate() {
                    if !is_address(&address["email"]) {
                        problems.push(problem(
                            format!("personalizations.{i}.to.{j}.email"),
                            "Does not contain a valid address.",
                            HELP_TO,
                        ));
                    }
                }
            }
            _ => problems.push(problem(
                format!("personalizations.{i}.to"),
                "The to array is required for all personalization objects, and must have at least one email object with a valid email address.",
                HELP_TO,
            )),
        }
        if let Some(args) = p.get("custom_args") {
            let all_strings = args.as_object().is_some_and(|m| m.values().all(Value::is_string));
            if !all_strings {
                let given = args
                    .as_object()
                    .and_then(|m| m.values().find(|v| !v.is_string()))
                    .map_or(type_name(args), type_name);
                problems.push(Problem {
                    field: Some(format!("personalizations.{i}.custom_args")),
                    message: match given {
                        "number" => "Invalid type. Expected: string, given: number.",
                        "boolean" => "Invalid type. Expected: string, given: boolean.",
                        "null" => "Invalid type. Expected: string, given: null.",
                        _ => "Invalid type. Expected: string, given: object.",
                    },
                    help: Some(HELP_PERSONALIZATIONS),
                });
            }
        }
    }

    if !is_address(&request["from"]["email"]) {
        problems.push(problem(
            "from.email",
            "The from email does not contain a valid address.",
            HELP_FROM,
        ));
    }

    let subject_everywhere = !personalizations.is_empty()
        && personalizations
            .iter()
            .all(|p| p.get("subject").and_then(Value::as_str).is_some_and(|s| !s.is_empty()));
    let subject = request.get("subject").and_then(Value::as_str).is_some_and(|s| !s.is_empty());
    if !subject && !subject_everywhere && !has_template {
        problems.push(problem(
            "subject",
            "The subject is required. You can get around this requirement if you use a template with a subject defined or if every personalization has a subject defined.",
            HELP_SUBJECT,
        ));
    }

    match request.get("content").and_then(Value::as_array) {
        Some(content) if !content.is_empty() => {
            for (i, part) in content.iter().enumerate() {
                if part["type"].as_str().is_none_or(str::is_empty) {
                    problems.push(problem(
                        format!("content.{i}.type"),
                        "The content type cannot contain ';', or CRLF characters, and must be at least one character long.",
                        HELP_CONTENT,
                    ));
                }
                if part["value"].as_str().is_none_or(str::is_empty) {
                    problems.push(problem(
                        format!("content.{i}.value"),
                        "The content value must be a string at least one character in length.",
                        HELP_CONTENT,
                    ));
                }
            }
            let plain_later = content.iter().skip(1).any(|p| p["type"] == "text/plain");
            if plain_later {
                problems.push(problem(
                    "content",
                    "If present, text/plain content must be first, followed by text/html, followed by any other content.",
                    HELP_CONTENT,
                ));
            }
        }
        _ if has_template => {}
        _ => problems.push(problem(
            "content",
            "Unless a valid template_id is provided, the content parameter is required. There must be at least one defined content block. We typically suggest both text/plain and text/html blocks are included, but only one block is required.",
            HELP_CONTENT,
        )),
    }
    problems
}
