//! The fake APNs: `POST /3/device/{token}` over HTTP/2 without TLS (prior knowledge).
//!
//! It verifies the provider token (ES256 with the configured key's public half, `kid`, `iss`,
//! an `iat` under an hour old), the `apns-topic`, `apns-push-type` and the payload, and answers
//! `200` with the `apns-id` (the request's, or a new UUID) or APNs's `{"reason": ...}` errors.
//! Device tokens starting with `dead` get 410 `Unregistered` (with `timestamp`), and with `bad`
//! 400 `BadDeviceToken`, so token removal can be driven. A request over HTTP/1 is refused: APNs
//! speaks only HTTP/2.
//!
//! The checks here are written from Apple's documentation, independently of `crate::apns`.

use std::path::PathBuf;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Behaviour, Counted, Fault, Sandbox, SandboxMessage, SandboxProvider, now_ms};
use crate::Error;

const PROVIDER: SandboxProvider = SandboxProvider::Apns;

/// The test-only `.p8` key the fake trusts by default (committed under
/// `providers/tests/fixtures/push/`; registered nowhere, authorises nothing).
pub const APNS_KEY_TEST_ONLY: &str = include_str!("../../tests/fixtures/push/apns-test-only.p8");
/// The default team id.
pub const APNS_TEAM_DEFAULT: &str = "TEAM123456";
/// The default key id.
pub const APNS_KEY_ID_DEFAULT: &str = "KEY1234567";
/// The default topic (bundle id).
pub const APNS_TOPIC_DEFAULT: &str = "com.example.courant";
/// The largest payload APNs accepts for an alert, in bytes.
pub const PAYLOAD_BYTES_MAX: usize = 4_096;
/// A provider token older than this is expired, in seconds.
const PROVIDER_TOKEN_SECS_MAX: u64 = 3_600;

/// The fake APNs's trust and behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsSandbox {
    /// The `.p8` key whose public half verifies provider tokens. Default: the built-in
    /// test-only key.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The key id the tokens must name (`kid`). Default `KEY1234567`.
    #[serde(default = "key_id_default")]
    pub key_id: String,
    /// The team id the tokens must name (`iss`). Default `TEAM123456`.
    #[serde(default = "team_default")]
    pub team_id: String,
    /// The only `apns-topic` accepted. Default `com.example.courant`.
    #[serde(default = "topic_default")]
    pub topic: String,
    /// Latency and injected failures.
    #[serde(default)]
    pub behaviour: Behaviour,
}

impl Default for ApnsSandbox {
    fn default() -> Self {
        Self {
            key_file: None,
            key_id: key_id_default(),
            team_id: team_default(),
            topic: topic_default(),
            behaviour: Behaviour::default(),
        }
    }
}

fn key_id_default() -> String {
    APNS_KEY_ID_DEFAULT.to_owned()
}

fn team_default() -> String {
    APNS_TEAM_DEFAULT.to_owned()
}

fn topic_default() -> String {
    APNS_TOPIC_DEFAULT.to_owned()
}

/// What the fake trusts, loaded once.
pub(super) struct ApnsTrust {
    key: DecodingKey,
    key_id: String,
    team_id: String,
    topic: String,
}

impl std::fmt::Debug for ApnsTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsTrust").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl ApnsSandbox {
    /// Reads the key (or the built-in one) and derives its public half.
    pub(super) fn trust(&self) -> Result<ApnsTrust, Error> {
        let bad = |reason: &str| Error::config("sandbox.apns", "key_file", reason);
        let pem = match &self.key_file {
            Some(path) => std::fs::read_to_string(path).map_err(|_| bad("cannot be read"))?,
            None => APNS_KEY_TEST_ONLY.to_owned(),
        };
        let der = super::pem_der(&pem).ok_or_else(|| bad("is not a PEM key"))?;
        let pair = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &der,
        )
        .map_err(|_| bad("is not a P-256 PKCS#8 key"))?;
        let public = aws_lc_rs::signature::KeyPair::public_key(&pair);
        Ok(ApnsTrust {
            key: DecodingKey::from_ec_der(public.as_ref()),
            key_id: self.key_id.clone(),
            team_id: self.team_id.clone(),
            topic: self.topic.clone(),
        })
    }
}

#[derive(Debug, Deserialize)]
struct ProviderClaims {
    iss: String,
    iat: u64,
}

fn reason(status: StatusCode, apns_id: &str, reason: &str) -> Response {
    let mut body = json!({ "reason": reason });
    if status == StatusCode::GONE {
        body["timestamp"] = json!(now_ms());
    }
    let mut response =
        (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
    if let Ok(value) = HeaderValue::from_str(apns_id) {
        response.headers_mut().insert("apns-id", value);
    }
    response
}

/// `POST /3/device/{token}`.
pub(super) async fn push(
    State(sandbox): State<Sandbox>,
    Path(token): Path<String>,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if version != Version::HTTP_2 {
        // APNs refuses anything but HTTP/2.
        return StatusCode::HTTP_VERSION_NOT_SUPPORTED.into_response();
    }
    let (delay, fault) = sandbox.admit(PROVIDER);
    tokio::time::sleep(delay).await;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let apns_id = match header("apns-id") {
        Some(id) if is_uuid(id) => id.to_owned(),
        Some(_) => {
            sandbox.count(PROVIDER, Counted::Invalid);
            return reason(StatusCode::BAD_REQUEST, "", "BadMessageId");
        }
        None => uuid(&sandbox.random_hex()),
    };
    let trust = &sandbox.shared.apns;
    let Some(jwt) = header("authorization").and_then(|v| v.strip_prefix("bearer ")) else {
        sandbox.count(PROVIDER, Counted::Unauthorized);
        return reason(StatusCode::FORBIDDEN, &apns_id, "MissingProviderToken");
    };
    let kid_ok = jsonwebtoken::decode_header(jwt)
        .ok()
        .is_some_and(|h| h.alg == Algorithm::ES256 && h.kid.as_deref() == Some(&trust.key_id));
    let mut validation = Validation::new(Algorithm::ES256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.set_issuer(&[trust.team_id.as_str()]);
    let claims = jsonwebtoken::decode::<ProviderClaims>(jwt, &trust.key, &validation);
    let claims = match claims {
        Ok(data) if kid_ok && data.claims.iss == trust.team_id => data.claims,
        _ => {
            sandbox.count(PROVIDER, Counted::Unauthorized);
            return reason(StatusCode::FORBIDDEN, &apns_id, "InvalidProviderToken");
        }
    };
    if now_ms() / 1_000 > claims.iat + PROVIDER_TOKEN_SECS_MAX {
        sandbox.count(PROVIDER, Counted::Unauthorized);
        return reason(StatusCode::FORBIDDEN, &apns_id, "ExpiredProviderToken");
    }
    let checks = [
        (header("apns-topic").is_none(), StatusCode::BAD_REQUEST, "MissingTopic"),
        (
            header("apns-topic") != Some(trust.topic.as_str()),
            StatusCode::BAD_REQUEST,
            "TopicDisallowed",
        ),
        (
            !matches!(header("apns-push-type"), Some("alert" | "background")),
            StatusCode::BAD_REQUEST,
            "InvalidPushType",
        ),
        (
            header("apns-priority").is_some_and(|p| !matches!(p, "1" | "5" | "10")),
            StatusCode::BAD_REQUEST,
            "BadPriority",
        ),
        (
            header("apns-expiration").is_some_and(|e| e.parse::<u64>().is_err()),
            StatusCode::BAD_REQUEST,
            "BadExpirationDate",
        ),
        (
            header("apns-collapse-id").is_some_and(|c| c.len() > 64),
            StatusCode::BAD_REQUEST,
            "BadCollapseId",
        ),
        (body.len() > PAYLOAD_BYTES_MAX, StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge"),
        (
            token.is_empty() || !token.bytes().all(|b| b.is_ascii_hexdigit()),
            StatusCode::BAD_REQUEST,
            "BadDeviceToken",
        ),
    ];
    if let Some((_, status, why)) = checks.iter().find(|(failed, _, _)| *failed) {
        sandbox.count(PROVIDER, Counted::Invalid);
        return reason(*status, &apns_id, why);
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if !request["aps"].is_object() {
        sandbox.count(PROVIDER, Counted::Invalid);
        return reason(StatusCode::BAD_REQUEST, &apns_id, "PayloadEmpty");
    }
    if token.starts_with("dead") {
        sandbox.count(PROVIDER, Counted::Recipient);
        return reason(StatusCode::GONE, &apns_id, "Unregistered");
    }
    if token.starts_with("bad") {
        sandbox.count(PROVIDER, Counted::Recipient);
        return reason(StatusCode::BAD_REQUEST, &apns_id, "BadDeviceToken");
    }
    match fault {
        Some(Fault::ServerError(status)) => {
            sandbox.count(PROVIDER, Counted::ServerError);
            return if status == 503 {
                reason(StatusCode::SERVICE_UNAVAILABLE, &apns_id, "ServiceUnavailable")
            } else {
                reason(StatusCode::INTERNAL_SERVER_ERROR, &apns_id, "InternalServerError")
            };
        }
        Some(Fault::RateLimited(secs)) => {
            sandbox.count(PROVIDER, Counted::RateLimited);
            let mut response = reason(StatusCode::TOO_MANY_REQUESTS, &apns_id, "TooManyRequests");
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return response;
        }
        Some(Fault::Hang(duration)) => {
            take(&sandbox, &apns_id, &token, request, false);
            sandbox.count(PROVIDER, Counted::Hung);
            sandbox.hang(duration).await;
            return accepted(&apns_id);
        }
        None => {}
    }
    take(&sandbox, &apns_id, &token, request, true);
    sandbox.count(PROVIDER, Counted::Accepted);
    accepted(&apns_id)
}

fn take(sandbox: &Sandbox, apns_id: &str, token: &str, request: Value, answered: bool) {
    sandbox.record(
        PROVIDER,
        SandboxMessage {
            message_id: apns_id.to_owned(),
            received_at_ms: now_ms(),
            to: token.to_owned(),
            notification_id: request["notification_id"].as_str().map(str::to_owned),
            answered,
            request,
        },
    );
}

fn accepted(apns_id: &str) -> Response {
    let mut response = StatusCode::OK.into_response();
    if let Ok(value) = HeaderValue::from_str(apns_id) {
        response.headers_mut().insert("apns-id", value);
    }
    response
}

/// Whether `id` is a UUID in APNs's form (8-4-4-4-12 hex digits).
fn is_uuid(id: &str) -> bool {
    let parts: Vec<&str> = id.split('-').collect();
    parts.len() == 5
        && parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A UUID (version 4 shape) from 32 random hex digits.
fn uuid(hex: &str) -> String {
    let hex = format!("{hex:0<32}");
    format!("{}-{}-4{}-a{}-{}", &hex[..8], &hex[8..12], &hex[13..16], &hex[17..20], &hex[20..32])
}
