//! The `messages:send` body for one device, and the OAuth2 assertion that buys the access token.

use serde::Serialize;
use steps::outcome::ProviderError;
use steps::recipient::{Device, Platform};
use workflows::ports::{Outbound, SendHints};

use crate::push::push_content;

/// The OAuth2 scope FCM HTTP v1 needs.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// The grant type of a signed-JWT assertion (RFC 7523).
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// How long an assertion is valid, in seconds: Google accepts at most an hour.
pub const ASSERTION_SECS: u64 = 3_600;

/// The path of `messages:send` for `project_id`, below the base URL.
pub fn send_path(project_id: &str) -> String {
    format!("/v1/projects/{project_id}/messages:send")
}

/// The claims of the service account's assertion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Claims {
    /// The service account's email.
    pub iss: String,
    /// [`SCOPE`].
    pub scope: String,
    /// The token endpoint.
    pub aud: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expiry: `iat` + [`ASSERTION_SECS`].
    pub exp: u64,
}

impl Claims {
    /// The claims for `client_email` at `token_uri`, issued at `now_secs`.
    pub fn new(client_email: &str, token_uri: &str, now_secs: u64) -> Self {
        Self {
            iss: client_email.to_owned(),
            scope: SCOPE.to_owned(),
            aud: token_uri.to_owned(),
            iat: now_secs,
            exp: now_secs + ASSERTION_SECS,
        }
    }
}

/// `{"message": ...}`.
#[derive(Debug, Serialize)]
pub(crate) struct SendBody<'a> {
    pub message: Message<'a>,
}

/// One message to one device.
#[derive(Debug, Serialize)]
pub(crate) struct Message<'a> {
    /// The device's registration token.
    pub token: &'a str,
    /// What the device shows.
    pub notification: Notification<'a>,
    /// Our ids, handed to the app with the message (FCM requires string values).
    pub data: Data<'a>,
    /// Android delivery options (Android devices only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub android: Option<Android>,
    /// Web push delivery options (web devices only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webpush: Option<WebPush>,
}

/// The displayed part.
#[derive(Debug, Serialize)]
pub(crate) struct Notification<'a> {
    pub title: &'a str,
    pub body: &'a str,
}

/// Our ids.
#[derive(Debug, Serialize)]
pub(crate) struct Data<'a> {
    pub notification_id: &'a str,
    pub tenant: &'a str,
    pub attempt: String,
}

/// `android`: priority, and the collapse key and time to live when known.
#[derive(Debug, Serialize)]
pub(crate) struct Android {
    /// `HIGH` for critical categories, `NORMAL` otherwise.
    pub priority: &'static str,
    /// The notification's collapse key: the device keeps only the newest of the group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collapse_key: Option<String>,
    /// How long FCM keeps the message for an offline device: `"<seconds>s"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

/// `webpush`: the Web Push protocol headers.
#[derive(Debug, Serialize)]
pub(crate) struct WebPush {
    pub headers: WebPushHeaders,
}

/// RFC 8030 headers.
#[derive(Debug, Serialize)]
pub(crate) struct WebPushHeaders {
    /// `high` for critical categories, `normal` otherwise.
    #[serde(rename = "Urgency")]
    pub urgency: &'static str,
    /// Seconds the push service keeps the message.
    #[serde(rename = "TTL", skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

/// The body for `device`. `now_ms` turns the hints' expiry into a time to live.
pub(crate) fn send_body<'a>(
    message: &'a Outbound,
    device: &'a Device,
    hints: &SendHints,
    now_ms: u64,
) -> Result<SendBody<'a>, ProviderError> {
    let (title, body) = push_content(message)?;
    let ttl_secs = hints.expires_at_ms.map(|at| at.saturating_sub(now_ms) / 1_000);
    let android = (device.platform == Platform::Android).then(|| Android {
        priority: if hints.critical { "HIGH" } else { "NORMAL" },
        collapse_key: hints.collapse_key.clone(),
        ttl: ttl_secs.map(|s| format!("{s}s")),
    });
    let webpush = (device.platform == Platform::Web).then(|| WebPush {
        headers: WebPushHeaders {
            urgency: if hints.critical { "high" } else { "normal" },
            ttl: ttl_secs.map(|s| s.to_string()),
        },
    });
    Ok(SendBody {
        message: Message {
            token: device.token.expose(),
            notification: Notification { title, body },
            data: Data {
                notification_id: message.notification_id.as_str(),
                tenant: message.tenant.as_str(),
                attempt: message.attempt.0.to_string(),
            },
            android,
            webpush,
        },
    })
}
