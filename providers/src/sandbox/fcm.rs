//! The fake FCM: Google's OAuth2 token endpoint (`POST /token`) and FCM HTTP v1
//! `messages:send`.
//!
//! The token endpoint verifies the service-account assertion's RS256 signature with the
//! configured account's public key (and its `iss`, `scope`, `iat`/`exp`), then issues an access
//! token valid for an hour. `messages:send` accepts only a token it issued, checks the project and
//! the body, and answers `{"name": "projects/<p>/messages/<id>"}` or FCM's error shapes. Device
//! tokens starting with `unregistered` get 404 `UNREGISTERED`, and with `invalid` 400
//! `INVALID_ARGUMENT` (not a valid registration token), so token removal can be driven.
//!
//! The checks here are written from Google's documentation, independently of `crate::fcm`.

use std::collections::VecDeque;
use std::path::PathBuf;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::{Behaviour, Counted, Fault, Sandbox, SandboxMessage, SandboxProvider, now_ms};
use crate::Error;

const PROVIDER: SandboxProvider = SandboxProvider::Fcm;

/// The test-only service account the fake trusts by default (committed under
/// `providers/tests/fixtures/push/`; registered nowhere, authorises nothing).
pub const FCM_SERVICE_ACCOUNT_TEST_ONLY: &str =
    include_str!("../../tests/fixtures/push/fcm-service-account-test-only.json");
/// Its project id.
pub const FCM_PROJECT_DEFAULT: &str = "courant-test";
/// How long an issued access token is valid, in seconds (Google's 3599).
pub const ACCESS_TOKEN_SECS: u64 = 3_599;
/// The most access tokens remembered; the oldest is forgotten first.
pub const ACCESS_TOKENS_MAX: usize = 1_024;

/// The fake FCM's trust and behaviour.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmSandbox {
    /// The service account key file whose public key verifies assertions (and whose
    /// `client_email` must be their `iss`). Default: the built-in test-only account.
    #[serde(default)]
    pub service_account_file: Option<PathBuf>,
    /// The project `messages:send` accepts; default the key file's `project_id`.
    #[serde(default)]
    pub project_id: Option<String>,
    /// Latency and injected failures.
    #[serde(default)]
    pub behaviour: Behaviour,
}

/// What the fake trusts, loaded once.
pub(super) struct FcmTrust {
    key: DecodingKey,
    client_email: String,
    project_id: String,
}

impl std::fmt::Debug for FcmTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmTrust").field("project_id", &self.project_id).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct KeyFile {
    client_email: String,
    private_key: String,
    #[serde(default)]
    project_id: Option<String>,
}

impl FcmSandbox {
    /// Reads the key file (or the built-in one) and derives its public key.
    pub(super) fn trust(&self) -> Result<FcmTrust, Error> {
        let bad = |reason: &str| Error::config("sandbox.fcm", "service_account_file", reason);
        let text = match &self.service_account_file {
            Some(path) => std::fs::read_to_string(path).map_err(|_| bad("cannot be read"))?,
            None => FCM_SERVICE_ACCOUNT_TEST_ONLY.to_owned(),
        };
        let file: KeyFile =
            serde_json::from_str(&text).map_err(|_| bad("is not a service account key"))?;
        let der = super::pem_der(&file.private_key).ok_or_else(|| bad("has no PEM key"))?;
        let pair =
            aws_lc_rs::rsa::KeyPair::from_pkcs8(&der).map_err(|_| bad("has no RSA PKCS#8 key"))?;
        let public = aws_lc_rs::signature::KeyPair::public_key(&pair);
        let project_id = self
            .project_id
            .clone()
            .or(file.project_id)
            .unwrap_or_else(|| FCM_PROJECT_DEFAULT.to_owned());
        Ok(FcmTrust {
            key: DecodingKey::from_rsa_der(public.as_ref()),
            client_email: file.client_email,
            project_id,
        })
    }
}

/// The access tokens issued, oldest first, with their expiry (ms).
#[derive(Debug, Default)]
pub(super) struct Issued(VecDeque<(String, u64)>);

/// The assertion's claims, as Google checks them (`iss` is checked by the validation).
#[derive(Debug, Deserialize)]
struct Assertion {
    scope: String,
    aud: String,
    iat: u64,
    exp: u64,
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = json!({"error": error, "error_description": description});
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// `POST /token`.
pub(super) async fn token(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form_content = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let form: Vec<(String, String)> = if form_content {
        url::form_urlencoded::parse(&body).into_owned().collect()
    } else {
        Vec::new()
    };
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if field("grant_type") != Some(crate::fcm::GRANT_TYPE) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Invalid grant_type: ",
        );
    }
    let Some(assertion) = field("assertion") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing required parameter: assertion",
        );
    };
    let trust = &sandbox.shared.fcm;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_aud = false;
    validation.set_issuer(&[trust.client_email.as_str()]);
    let claims = match jsonwebtoken::decode::<Assertion>(assertion, &trust.key, &validation) {
        Ok(data) => data.claims,
        Err(_) => {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Invalid JWT Signature.");
        }
    };
    let now_secs = now_ms() / 1_000;
    let timing_ok = claims.exp > claims.iat
        && claims.exp - claims.iat <= crate::fcm::ASSERTION_SECS
        && claims.iat <= now_secs + 60;
    if !timing_ok {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.",
        );
    }
    if !claims.aud.ends_with("/token") || !claims.scope.split(' ').any(|s| s == crate::fcm::SCOPE) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        );
    }
    let access_token = format!("ya29.sandbox-{}", sandbox.random_hex());
    {
        let mut inner = sandbox.lock();
        let issued = &mut inner.fcm_tokens.0;
        while issued.len() >= ACCESS_TOKENS_MAX {
            issued.pop_front();
        }
        issued.push_back((access_token.clone(), now_ms() + ACCESS_TOKEN_SECS * 1_000));
    }
    let body = json!({"access_token": access_token, "expires_in": ACCESS_TOKEN_SECS,
                      "token_type": "Bearer"});
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn fcm_error(status: StatusCode, grpc: &str, message: &str, code: Option<&str>) -> Response {
    let mut error = json!({"code": status.as_u16(), "message": message, "status": grpc});
    if let Some(code) = code {
        error["details"] = json!([{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                                   "errorCode": code}]);
    }
    (status, [(header::CONTENT_TYPE, "application/json")], json!({ "error": error }).to_string())
        .into_response()
}

/// `POST /v1/projects/{project}/messages:send`.
pub(super) async fn send(
    State(sandbox): State<Sandbox>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (delay, fault) = sandbox.admit(PROVIDER);
    tokio::time::sleep(delay).await;

    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let now = now_ms();
    let known = {
        let inner = sandbox.lock();
        // Every issued token is compared in full, in constant time.
        inner.fcm_tokens.0.iter().fold(false, |found, (token, until)| {
            found | (bool::from(token.as_bytes().ct_eq(given.as_bytes())) && *until > now)
        })
    };
    if !known {
        sandbox.count(PROVIDER, Counted::Unauthorized);
        return fcm_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            None,
        );
    }
    let project = project.as_str();
    if project != sandbox.shared.fcm.project_id {
        sandbox.count(PROVIDER, Counted::Invalid);
        return fcm_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "SenderId mismatch",
            Some("SENDER_ID_MISMATCH"),
        );
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let message = &request["message"];
    let token = message["token"].as_str().unwrap_or("");
    let notification_ok =
        message["notification"]["title"].is_string() && message["notification"]["body"].is_string();
    if token.is_empty() || !notification_ok {
        sandbox.count(PROVIDER, Counted::Invalid);
        return fcm_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Request contains an invalid argument.",
            Some("INVALID_ARGUMENT"),
        );
    }
    if token.starts_with("unregistered") {
        sandbox.count(PROVIDER, Counted::Recipient);
        return fcm_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Requested entity was not found.",
            Some("UNREGISTERED"),
        );
    }
    if token.starts_with("invalid") {
        sandbox.count(PROVIDER, Counted::Recipient);
        return fcm_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "The registration token is not a valid FCM registration token",
            Some("INVALID_ARGUMENT"),
        );
    }
    match fault {
        Some(Fault::ServerError(status)) => {
            sandbox.count(PROVIDER, Counted::ServerError);
            return if status == 503 {
                fcm_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UNAVAILABLE",
                    "The service is currently unavailable.",
                    Some("UNAVAILABLE"),
                )
            } else {
                fcm_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL",
                    "Internal error encountered.",
                    Some("INTERNAL"),
                )
            };
        }
        Some(Fault::RateLimited(secs)) => {
            sandbox.count(PROVIDER, Counted::RateLimited);
            let mut response = fcm_error(
                StatusCode::TOO_MANY_REQUESTS,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded for quota metric 'Send requests'.",
                Some("QUOTA_EXCEEDED"),
            );
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return response;
        }
        Some(Fault::Hang(duration)) => {
            let name = take(&sandbox, project, request.clone(), false);
            sandbox.count(PROVIDER, Counted::Hung);
            sandbox.hang(duration).await;
            return sent(&name);
        }
        None => {}
    }
    let name = take(&sandbox, project, request.clone(), true);
    sandbox.count(PROVIDER, Counted::Accepted);
    sent(&name)
}

fn take(sandbox: &Sandbox, project: &str, request: Value, answered: bool) -> String {
    let name = format!("projects/{project}/messages/0:{}", sandbox.random_hex());
    let message = &request["message"];
    sandbox.record(
        PROVIDER,
        SandboxMessage {
            message_id: name.clone(),
            received_at_ms: now_ms(),
            to: message["token"].as_str().unwrap_or_default().to_owned(),
            notification_id: message["data"]["notification_id"].as_str().map(str::to_owned),
            answered,
            request,
        },
    );
    name
}

fn sent(name: &str) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "name": name }).to_string(),
    )
        .into_response()
}
