//! The APNs request for one device: path, headers and payload.

use serde::Serialize;
use sha2::{Digest, Sha256};
use steps::model::NotificationId;
use steps::outcome::{ErrorClass, ProviderError};
use steps::recipient::{Device, DeviceId};
use workflows::ports::{Outbound, SendHints};

use crate::push::push_content;

/// The longest `apns-collapse-id` APNs accepts, in bytes.
pub const COLLAPSE_ID_BYTES_MAX: usize = 64;
/// The longest device token accepted, in hex digits (APNs tokens are 64; Apple reserves the
/// right to lengthen them).
pub const TOKEN_HEX_MAX: usize = 200;

/// `/3/device/{token}`, or the classified reason the token can never work: APNs tokens are
/// hexadecimal, and anything else would also be unsafe in a path.
pub fn path(device: &Device) -> Result<String, ProviderError> {
    let token = device.token.expose();
    if token.is_empty()
        || token.len() > TOKEN_HEX_MAX
        || !token.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(ProviderError::new(
            ErrorClass::TokenInvalid,
            None,
            Some("BadDeviceToken".into()),
            "the device token is not an APNs token (hexadecimal)",
        ));
    }
    Ok(format!("/3/device/{token}"))
}

/// The `apns-id` of a notification's message to a device: a UUID derived from both (SHA-256,
/// shaped as a version 8 UUID), so every re-send of it carries the same id.
pub fn apns_id(notification: &NotificationId, device: &DeviceId) -> String {
    let digest = Sha256::digest(format!("{notification}:{device}").as_bytes());
    let mut bytes = [0_u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80; // version 8 (custom)
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 9562 variant
    let hex = hex::encode(bytes);
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// The `apns-collapse-id` for a collapse key: the key itself when it fits in 64 bytes, else the
/// first 64 hex digits of its SHA-256 (the same key always gives the same id).
pub fn collapse_id(key: &str) -> String {
    if key.len() <= COLLAPSE_ID_BYTES_MAX {
        key.to_owned()
    } else {
        hex::encode(Sha256::digest(key.as_bytes()))[..COLLAPSE_ID_BYTES_MAX].to_owned()
    }
}

/// The request headers besides `authorization`, in the order sent.
pub fn headers(
    topic: &str,
    message: &Outbound,
    device: &Device,
    hints: &SendHints,
) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("apns-topic", topic.to_owned()),
        ("apns-push-type", "alert".to_owned()),
        ("apns-id", apns_id(&message.notification_id, &device.id)),
        // 0: deliver once, keep nothing, when the lifecycle gave no end.
        ("apns-expiration", hints.expires_at_ms.map_or(0, |ms| ms / 1_000).to_string()),
        ("apns-priority", if hints.critical { "10" } else { "5" }.to_owned()),
    ];
    if let Some(key) = &hints.collapse_key {
        headers.push(("apns-collapse-id", collapse_id(key)));
    }
    headers
}

/// The payload.
#[derive(Debug, Serialize)]
pub(crate) struct Payload<'a> {
    pub aps: Aps<'a>,
    /// Our notification id, for the app.
    pub notification_id: &'a str,
}

/// `aps`.
#[derive(Debug, Serialize)]
pub(crate) struct Aps<'a> {
    pub alert: Alert<'a>,
}

/// `aps.alert`.
#[derive(Debug, Serialize)]
pub(crate) struct Alert<'a> {
    pub title: &'a str,
    pub body: &'a str,
}

/// The payload of `message`.
pub(crate) fn payload(message: &Outbound) -> Result<Payload<'_>, ProviderError> {
    let (title, body) = push_content(message)?;
    Ok(Payload {
        aps: Aps { alert: Alert { title, body } },
        notification_id: message.notification_id.as_str(),
    })
}

/// The provider token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ProviderClaims {
    /// The team id.
    pub iss: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
}
