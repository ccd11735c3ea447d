//! Vonage delivery receipts (DLRs), parsed and verified as pure functions.
//!
//! Vonage calls the message's `callback` URL (see [`callback_url`](super::callback_url)) with the
//! receipt's fields as query parameters (GET, the default), as a form (POST) or as a flat JSON
//! object (POST-JSON), depending on the account's setting: `messageId`, `msisdn`, `to`,
//! `network-code`, `price`, `status`, `scts`, `err-code`, `message-timestamp`, `client-ref`, and
//! with signing enabled `timestamp` and `sig`. [`delivery_receipt`] turns those fields into one
//! [`ReceiptEvent`]; the HTTP route that receives them is the binary's (see
//! `src/api/webhooks.rs`), which passes the tenant and notification id from the URL path.
//!
//! `status` is one of `delivered`, `expired`, `failed`, `rejected`, `accepted`, `buffered` or
//! `unknown`; `err-code` says why a message failed
//! (developer.vonage.com/en/messaging/sms/guides/delivery-receipts).

use steps::model::{NotificationId, TenantId};

use super::signature::{self, SignatureMethod};
use crate::receipt::{ReceiptEvent, ReceiptKind, bounded_detail};
use crate::{Secret, redact};

/// The most fields a receipt may have; Vonage sends about a dozen.
pub const RECEIPT_FIELDS_MAX: usize = 32;

/// The longest field name or value read, in bytes.
pub const RECEIPT_FIELD_BYTES_MAX: usize = 1_024;

/// How far a signed receipt's `timestamp` may be from now, in seconds, either way. Five minutes
/// covers clock skew and Vonage's own delivery delay, and bounds how long a captured receipt can
/// be replayed.
pub const SIGNATURE_TOLERANCE_SECS: u64 = 300;

/// Why a receipt was refused. The route answers 400 for the shape errors and 401 for the
/// signature ones; none of them says which field held which value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// More fields than [`RECEIPT_FIELDS_MAX`], or one longer than [`RECEIPT_FIELD_BYTES_MAX`].
    #[error("the receipt is too large")]
    TooLarge,
    /// A field appears twice (a signature covers each name once).
    #[error("field {0} appears more than once")]
    Duplicate(String),
    /// A required field is missing or empty.
    #[error("field {0} is missing")]
    Missing(&'static str),
    /// The body is not a flat JSON object of strings and numbers.
    #[error("the body is not a flat JSON object")]
    NotFlat,
    /// `client-ref` names another notification than the URL.
    #[error("client-ref does not match the notification in the URL")]
    Mismatch,
    /// Signing is configured and `sig` is missing or wrong.
    #[error("the signature does not verify")]
    BadSignature,
    /// The signed `timestamp` is missing, unreadable or outside the tolerance.
    #[error("the signed timestamp is outside the accepted window")]
    Stale,
}

/// How to verify receipts: the account's signature secret and method, and the time now.
#[derive(Debug, Clone, Copy)]
pub struct ReceiptCheck<'a> {
    /// The signature secret from the provider's config.
    pub secret: &'a Secret,
    /// The signing method chosen in the dashboard.
    pub method: SignatureMethod,
    /// Now, in Unix seconds (passed in, so the check stays pure).
    pub now_secs: u64,
}

/// The fields of a POST-JSON receipt, as `(name, value)` pairs (numbers become their decimal
/// text). Query and form receipts are already pairs.
pub fn receipt_fields_from_json(body: &[u8]) -> Result<Vec<(String, String)>, ReceiptError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| ReceiptError::NotFlat)?;
    let serde_json::Value::Object(object) = value else {
        return Err(ReceiptError::NotFlat);
    };
    if object.len() > RECEIPT_FIELDS_MAX {
        return Err(ReceiptError::TooLarge);
    }
    object
        .into_iter()
        .map(|(name, value)| {
            let text = match value {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                _ => return Err(ReceiptError::NotFlat),
            };
            Ok((name, text))
        })
        .collect()
}

/// Verifies (when `check` is given) and parses one delivery receipt for notification `id` of
/// `tenant` (both from the callback URL's path) from its `fields`.
///
/// With `check`, `sig` and `timestamp` must be present, the signature must verify over every
/// field but `sig`, and `timestamp` must be within [`SIGNATURE_TOLERANCE_SECS`] of
/// `check.now_secs`. `client-ref`, when present, must name the same notification.
pub fn delivery_receipt(
    tenant: &TenantId,
    id: &NotificationId,
    fields: &[(String, String)],
    check: Option<ReceiptCheck<'_>>,
) -> Result<ReceiptEvent, ReceiptError> {
    if fields.len() > RECEIPT_FIELDS_MAX
        || fields
            .iter()
            .any(|(n, v)| n.len() > RECEIPT_FIELD_BYTES_MAX || v.len() > RECEIPT_FIELD_BYTES_MAX)
    {
        return Err(ReceiptError::TooLarge);
    }
    let mut names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(ReceiptError::Duplicate(bounded_detail(pair[0])));
    }
    let field = |name: &str| {
        fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    };
    if let Some(check) = check {
        let sig = field("sig").ok_or(ReceiptError::BadSignature)?;
        let pairs: Vec<(&str, &str)> =
            fields.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        if !signature::verify(&pairs, sig, check.secret.expose(), check.method) {
            return Err(ReceiptError::BadSignature);
        }
        // Checked after the signature, so an attacker learns nothing about the window from
        // unsigned guesses.
        let timestamp: u64 =
            field("timestamp").and_then(|t| t.parse().ok()).ok_or(ReceiptError::Stale)?;
        if timestamp.abs_diff(check.now_secs) > SIGNATURE_TOLERANCE_SECS {
            return Err(ReceiptError::Stale);
        }
    }
    if let Some(client_ref) = field("client-ref")
        && client_ref != id.as_str()
    {
        return Err(ReceiptError::Mismatch);
    }
    let status = field("status").ok_or(ReceiptError::Missing("status"))?;
    let err_code = field("err-code").and_then(|c| c.trim().parse::<u32>().ok());
    let kind = kind_of(status, err_code);
    let detail = match (kind, err_code) {
        (ReceiptKind::Accepted | ReceiptKind::Delivered, _) | (_, None | Some(0)) => {
            Some(bounded_detail(&redact::scrub(status, &[])))
        }
        (_, Some(code)) => Some(bounded_detail(&format!(
            "{}: err-code {code} ({})",
            redact::scrub(status, &[]),
            err_code_name(code)
        ))),
    };
    let provider_message_id = field("messageId")
        .filter(|m| m.len() <= 64 && m.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .map(str::to_owned);
    Ok(ReceiptEvent {
        tenant: tenant.clone(),
        notification_id: id.clone(),
        provider_message_id,
        // The callback URL names the notification, not the attempt.
        attempt: None,
        kind,
        at_ms: field("message-timestamp").and_then(parse_message_timestamp),
        detail,
    })
}

/// What a receipt's `status` (and for failures its `err-code`) says happened.
pub fn kind_of(status: &str, err_code: Option<u32>) -> ReceiptKind {
    match status {
        "delivered" => ReceiptKind::Delivered,
        // Held by a downstream carrier for a later try: still on its way.
        "buffered" => ReceiptKind::Deferred,
        // Expired in the carrier's retry scheme, failed or rejected: not delivered. Absent
        // subscriber, permanent (3) means the number is no longer in service: a bad address.
        "expired" | "failed" | "rejected" => match err_code {
            Some(3) => ReceiptKind::Bounced,
            _ => ReceiptKind::Undelivered,
        },
        // `accepted` (taken by the carrier, not yet delivered), `unknown` (no usable receipt from
        // the carrier) and anything new: no change to the lifecycle.
        _ => ReceiptKind::Accepted,
    }
}

/// The documented meaning of a DLR `err-code`.
pub fn err_code_name(code: u32) -> &'static str {
    match code {
        0 => "Delivered",
        1 => "Unknown",
        2 => "Absent Subscriber - Temporary",
        3 => "Absent Subscriber - Permanent",
        4 => "Call Barred by User",
        5 => "Portability Error",
        6 => "Anti-Spam Rejection",
        7 => "Handset Busy",
        8 => "Network Error",
        9 => "Illegal Number",
        10 => "Illegal Message",
        11 => "Unroutable",
        12 => "Destination Unreachable",
        13 => "Subscriber Age Restriction",
        14 => "Number Blocked by Carrier",
        15 => "Pre-Paid - Insufficient funds",
        99 => "General Error",
        _ => "undocumented",
    }
}

/// `message-timestamp` (`2020-01-01 12:00:00`, UTC) in ms since the Unix epoch.
fn parse_message_timestamp(text: &str) -> Option<u64> {
    let at = chrono::NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S").ok()?;
    u64::try_from(at.and_utc().timestamp_millis()).ok()
}
