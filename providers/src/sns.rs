//! Amazon SNS messages, verified, and the SES events they carry: SES's delivery receipts (pure).
//!
//! SES publishes its events (configuration-set event publishing) to an SNS topic, and SNS posts
//! each one to our HTTPS subscription as a JSON document. SNS signs the message, not the HTTP
//! request: `Signature` is RSA PKCS#1 v1.5 over SNS's canonical string of the message's fields
//! (each name, a newline, its value, a newline, in a fixed order; `Subject` only when present),
//! with SHA-1 (`SignatureVersion` 1) or SHA-256 (2), by the key of the X.509 certificate at
//! `SigningCertURL`. So the verification reads the fields as parsed from the body (SNS's own
//! rule), and every field that is signed is checked; the certificate is either pinned in the
//! configuration or fetched only from an `https://sns.<region>.amazonaws.com/` URL
//! ([`cert_url_allowed`]), never from wherever a message points.
//!
//! A `SubscriptionConfirmation` is verified the same way; its `SubscribeURL` is visited only
//! when it is on that same SNS host ([`subscribe_url_allowed`]).
//!
//! The SES event (the `Message` of a `Notification`) names our notification in `mail.tags`
//! (`notification_id`, `tenant`, `attempt`, which the SES provider sets as message tags).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use steps::model::{Attempt, NotificationId, TenantId};

use crate::receipt::{Parsed, ReceiptEvent, ReceiptKind, Rejection, bounded_detail};
use crate::redact::scrub;

/// The default tolerance on an SNS message's `Timestamp`, in seconds: an hour. SNS retries a
/// failed delivery with backoff for up to an hour by default (its HTTP delivery policy); the
/// signature covers the timestamp, so an older message is a replay.
pub const TOLERANCE_S_DEFAULT: u64 = 3_600;
/// The longest field accepted in an SNS message, in bytes (SNS messages are at most 256 KiB).
const FIELD_BYTES_MAX: usize = 256 * 1024;

/// An SNS message as posted to an HTTP(S) subscription.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SnsMessage {
    /// `Notification`, `SubscriptionConfirmation` or `UnsubscribeConfirmation`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// SNS's id of the message.
    pub message_id: String,
    /// The confirmation token (confirmations only).
    #[serde(default)]
    pub token: Option<String>,
    /// The topic.
    pub topic_arn: String,
    /// The subject (notifications, when the publisher set one).
    #[serde(default)]
    pub subject: Option<String>,
    /// The payload: for SES events, the event as JSON text.
    pub message: String,
    /// When SNS published it (ISO 8601, UTC).
    pub timestamp: String,
    /// `1` (SHA-1) or `2` (SHA-256).
    pub signature_version: String,
    /// The base64 signature.
    pub signature: String,
    /// Where the signing certificate is.
    #[serde(rename = "SigningCertURL")]
    pub signing_cert_url: String,
    /// The URL that confirms a subscription (confirmations only).
    #[serde(default, rename = "SubscribeURL")]
    pub subscribe_url: Option<String>,
    /// The URL that ends the subscription (notifications).
    #[serde(default, rename = "UnsubscribeURL")]
    pub unsubscribe_url: Option<String>,
}

impl SnsMessage {
    /// Parses a body; `Malformed` when it is not an SNS message or a field is too long.
    pub fn parse(body: &[u8]) -> Result<SnsMessage, Rejection> {
        let message: SnsMessage = serde_json::from_slice(body).map_err(|_| Rejection::Malformed)?;
        if message.message.len() > FIELD_BYTES_MAX {
            return Err(Rejection::Malformed);
        }
        Ok(message)
    }

    /// The string SNS signs: the signed fields for this message's type, each as `name\nvalue\n`.
    pub fn canonical(&self) -> Result<String, Rejection> {
        let mut fields: Vec<(&str, &str)> =
            vec![("Message", &self.message), ("MessageId", &self.message_id)];
        match self.kind.as_str() {
            "Notification" => {
                if let Some(subject) = &self.subject {
                    fields.push(("Subject", subject));
                }
                fields.push(("Timestamp", &self.timestamp));
                fields.push(("TopicArn", &self.topic_arn));
            }
            "SubscriptionConfirmation" | "UnsubscribeConfirmation" => {
                let url = self.subscribe_url.as_deref().ok_or(Rejection::Malformed)?;
                let token = self.token.as_deref().ok_or(Rejection::Malformed)?;
                fields.push(("SubscribeURL", url));
                fields.push(("Timestamp", &self.timestamp));
                fields.push(("Token", token));
                fields.push(("TopicArn", &self.topic_arn));
            }
            _ => return Err(Rejection::Malformed),
        }
        fields.push(("Type", &self.kind));
        let mut text = String::new();
        for (name, value) in fields {
            text.push_str(name);
            text.push('\n');
            text.push_str(value);
            text.push('\n');
        }
        Ok(text)
    }
}

/// Whether `url` is an SNS endpoint: `https://sns.<region>.amazonaws.com[.cn]/...`, no user,
/// no port. Nothing else is ever fetched.
fn sns_host(url: &str) -> Option<url::Url> {
    let parsed = url::Url::parse(url).ok()?;
    if parsed.scheme() != "https"
        || parsed.port().is_some()
        || !parsed.username().is_empty()
        || parsed.password().is_some()
    {
        return None;
    }
    let host = parsed.host_str()?;
    let rest = host.strip_prefix("sns.")?;
    let region =
        rest.strip_suffix(".amazonaws.com").or_else(|| rest.strip_suffix(".amazonaws.com.cn"))?;
    let region_ok = !region.is_empty()
        && region.len() <= 32
        && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    region_ok.then_some(parsed)
}

/// Whether a signing certificate may be fetched from `url`: an SNS host, a `.pem` path.
pub fn cert_url_allowed(url: &str) -> bool {
    sns_host(url).is_some_and(|u| u.path().ends_with(".pem") && u.query().is_none())
}

/// Whether a subscription may be confirmed by visiting `url`: an SNS host.
pub fn subscribe_url_allowed(url: &str) -> bool {
    sns_host(url).is_some()
}

/// A signing certificate's RSA public key.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningCert {
    /// The PKCS#1 `RSAPublicKey`, DER.
    rsa_public_key: Vec<u8>,
}

impl std::fmt::Debug for SigningCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningCert(RSA)")
    }
}

/// The OID of `rsaEncryption`.
const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";

impl SigningCert {
    /// Reads a PEM certificate; it must carry an RSA key.
    pub fn from_pem(pem: &str) -> Result<SigningCert, String> {
        use x509_cert::der::DecodePem as _;
        let cert = x509_cert::Certificate::from_pem(pem.as_bytes())
            .map_err(|_| "not a PEM X.509 certificate".to_owned())?;
        let spki = cert.tbs_certificate().subject_public_key_info();
        if spki.algorithm.oid.to_string() != RSA_ENCRYPTION {
            return Err("the certificate's key is not RSA".to_owned());
        }
        let rsa_public_key = spki.subject_public_key.raw_bytes().to_vec();
        Ok(SigningCert { rsa_public_key })
    }
}

/// Verifies `message` with `cert`: its signature over the canonical string, and its timestamp
/// within `tolerance_s` of `now_ms`.
pub fn verify(
    message: &SnsMessage,
    cert: &SigningCert,
    now_ms: u64,
    tolerance_s: u64,
) -> Result<(), Rejection> {
    let algorithm: &dyn ring::signature::VerificationAlgorithm =
        match message.signature_version.as_str() {
            "1" => &ring::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            "2" => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            _ => return Err(Rejection::Malformed),
        };
    let published = chrono::DateTime::parse_from_rfc3339(&message.timestamp)
        .map_err(|_| Rejection::Malformed)?;
    let published_ms =
        u64::try_from(published.timestamp_millis()).map_err(|_| Rejection::Malformed)?;
    if published_ms.abs_diff(now_ms) > tolerance_s.saturating_mul(1_000) {
        return Err(Rejection::Stale);
    }
    let signature =
        STANDARD.decode(message.signature.as_bytes()).map_err(|_| Rejection::Malformed)?;
    let canonical = message.canonical()?;
    ring::signature::UnparsedPublicKey::new(algorithm, &cert.rsa_public_key)
        .verify(canonical.as_bytes(), &signature)
        .map_err(|_| Rejection::Forged)
}

/// An SES event, as far as courant reads it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SesEvent {
    /// Event publishing's name (`Delivery`, `Bounce`, ...).
    #[serde(default)]
    event_type: Option<String>,
    /// The older notifications' name for the same thing.
    #[serde(default)]
    notification_type: Option<String>,
    mail: SesMail,
    #[serde(default)]
    bounce: Option<SesBounce>,
    #[serde(default)]
    reject: Option<serde_json::Value>,
    #[serde(default)]
    delivery_delay: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SesMail {
    #[serde(default)]
    message_id: Option<String>,
    #[serde(default)]
    tags: std::collections::BTreeMap<String, Vec<String>>,
    #[serde(default)]
    destination: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SesBounce {
    #[serde(default)]
    bounce_type: Option<String>,
    #[serde(default)]
    bounce_sub_type: Option<String>,
}

/// What an SES event type (and a bounce's type) means to courant; `None` for one it does not
/// use. A `Permanent` bounce is a hard bounce; a `Transient` or `Undetermined` one means SES gave
/// up without blaming the address.
pub fn ses_kind(event_type: &str, bounce_type: Option<&str>) -> Option<ReceiptKind> {
    Some(match event_type {
        "Send" => ReceiptKind::Accepted,
        "Delivery" => ReceiptKind::Delivered,
        "Bounce" => match bounce_type {
            Some("Permanent") => ReceiptKind::Bounced,
            _ => ReceiptKind::Undelivered,
        },
        "Complaint" => ReceiptKind::SpamReport,
        "Reject" | "Rendering Failure" => ReceiptKind::Undelivered,
        "DeliveryDelay" => ReceiptKind::Deferred,
        "Open" => ReceiptKind::Opened,
        "Click" => ReceiptKind::Clicked,
        "Subscription" => ReceiptKind::Unsubscribed,
        _ => return None,
    })
}

/// Parses a verified notification's `Message` (an SES event). An event without our tags is
/// skipped; one that is not an SES event is `Malformed`.
pub fn parse_ses(message: &str) -> Result<Parsed, Rejection> {
    let event: SesEvent = serde_json::from_str(message).map_err(|_| Rejection::Malformed)?;
    let tag = |name: &str| event.mail.tags.get(name).and_then(|values| values.first()).cloned();
    let name = event.event_type.as_deref().or(event.notification_type.as_deref());
    let bounce_type = event.bounce.as_ref().and_then(|b| b.bounce_type.as_deref());
    let kind = name.and_then(|name| ses_kind(name, bounce_type));
    let ids = (
        tag("notification_id").and_then(|n| NotificationId::new(n).ok()),
        tag("tenant").and_then(|t| TenantId::new(t).ok()),
    );
    let (Some(kind), (Some(notification_id), Some(tenant))) = (kind, ids) else {
        return Ok(Parsed { events: vec![], skipped: 1 });
    };
    let known: Vec<&str> = event.mail.destination.iter().map(String::as_str).collect();
    let detail = match (&event.bounce, &event.reject, &event.delivery_delay) {
        (Some(bounce), _, _) => {
            let text = [bounce.bounce_type.as_deref(), bounce.bounce_sub_type.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(": ");
            Some(bounded_detail(&scrub(&text, &known)))
        }
        (_, Some(reject), _) => {
            reject.get("reason").and_then(|r| r.as_str()).map(|r| bounded_detail(&scrub(r, &known)))
        }
        (_, _, Some(delay)) => delay
            .get("delayType")
            .and_then(|r| r.as_str())
            .map(|r| bounded_detail(&scrub(r, &known))),
        _ => None,
    };
    let event = ReceiptEvent {
        tenant,
        notification_id,
        attempt: tag("attempt").and_then(|a| a.parse().ok()).map(Attempt),
        provider_message_id: event.mail.message_id.as_deref().map(bounded_detail),
        kind,
        at_ms: None,
        detail,
    };
    Ok(Parsed { events: vec![event], skipped: 0 })
}
