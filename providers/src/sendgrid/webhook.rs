//! The Signed Event Webhook: SendGrid's delivery receipts, verified and parsed (pure).
//!
//! SendGrid posts a JSON array of events to our URL, signed with ECDSA P-256 over SHA-256 of
//! `timestamp + raw body`: `X-Twilio-Email-Event-Webhook-Timestamp` carries the timestamp (Unix
//! seconds, as text) and `X-Twilio-Email-Event-Webhook-Signature` the base64 of the DER
//! signature. The verification key is shown in SendGrid's Mail Settings as the base64 of a DER
//! `SubjectPublicKeyInfo`. The signature is checked over the bytes exactly as received (never
//! re-serialised JSON), and a timestamp outside the tolerance is refused, which bounds replays.
//!
//! Each event carries our `custom_args` as top-level fields (`notification_id`, `tenant`,
//! `attempt`; see `request.rs`), which is how it finds its notification. Events without them
//! (mail sent by other systems on the same account) are skipped.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
/// The signing key type (P-256), for the sandbox and tests that sign receipts.
pub use p256::ecdsa::SigningKey;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{DerSignature, Signature, VerifyingKey};
use p256::pkcs8::{DecodePublicKey as _, EncodePublicKey as _};
use serde::Deserialize;
use steps::model::{Attempt, NotificationId, TenantId};

use crate::receipt::{Parsed, ReceiptEvent, ReceiptKind, Rejection, bounded_detail};
use crate::redact::scrub;

/// The header carrying the base64 DER signature.
pub const SIGNATURE_HEADER: &str = "X-Twilio-Email-Event-Webhook-Signature";
/// The header carrying the signing time, Unix seconds as text.
pub const TIMESTAMP_HEADER: &str = "X-Twilio-Email-Event-Webhook-Timestamp";
/// The most events one request may carry. SendGrid batches events per request (a few thousand at
/// most in practice); more is refused rather than processed for minutes.
pub const EVENTS_MAX: usize = 10_000;
/// The default tolerance between the signed timestamp and our clock, in seconds: 5 minutes,
/// what Stripe and Slack use for the same check; SendGrid retries failed posts for 24 hours,
/// but each retry is signed afresh.
pub const TOLERANCE_S_DEFAULT: u64 = 300;
/// The longest signature header accepted, in characters (a DER P-256 signature is at most 72
/// bytes, 96 in base64).
const SIGNATURE_CHARS_MAX: usize = 128;
/// The longest timestamp header accepted, in characters.
const TIMESTAMP_CHARS_MAX: usize = 20;

/// The Event Webhook's verification key.
#[derive(Clone, PartialEq, Eq)]
pub struct EventWebhookKey(VerifyingKey);

impl std::fmt::Debug for EventWebhookKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventWebhookKey(P-256)")
    }
}

impl EventWebhookKey {
    /// Reads the key as SendGrid shows it: base64 of a DER `SubjectPublicKeyInfo` (a PEM body
    /// without its armour lines; whitespace is ignored).
    pub fn from_base64_der(text: &str) -> Result<Self, String> {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let der = STANDARD.decode(compact.as_bytes()).map_err(|_| "not base64".to_owned())?;
        VerifyingKey::from_public_key_der(&der)
            .map(EventWebhookKey)
            .map_err(|_| "not a DER-encoded P-256 public key (SubjectPublicKeyInfo)".to_owned())
    }

    /// The key as SendGrid shows it (base64 DER SPKI).
    pub fn to_base64_der(&self) -> String {
        let der = self
            .0
            .to_public_key_der()
            .unwrap_or_else(|_| unreachable!("a P-256 key always encodes as SPKI"));
        STANDARD.encode(der.as_bytes())
    }
}

/// Verifies one request: the headers' values as received (`None` when absent), the raw body,
/// our clock in Unix seconds and the tolerance in seconds. The timestamp is checked against the
/// clock before the signature, so a stale request costs no curve arithmetic.
pub fn verify(
    key: &EventWebhookKey,
    signature: Option<&[u8]>,
    timestamp: Option<&[u8]>,
    body: &[u8],
    now_s: u64,
    tolerance_s: u64,
) -> Result<(), Rejection> {
    let (Some(signature), Some(timestamp)) = (signature, timestamp) else {
        return Err(Rejection::Unsigned);
    };
    if timestamp.is_empty()
        || timestamp.len() > TIMESTAMP_CHARS_MAX
        || !timestamp.iter().all(u8::is_ascii_digit)
    {
        return Err(Rejection::Malformed);
    }
    let signed_at_s: u64 = std::str::from_utf8(timestamp)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or(Rejection::Malformed)?;
    if signed_at_s.abs_diff(now_s) > tolerance_s {
        return Err(Rejection::Stale);
    }
    if signature.len() > SIGNATURE_CHARS_MAX {
        return Err(Rejection::Malformed);
    }
    let der = STANDARD.decode(signature).map_err(|_| Rejection::Malformed)?;
    let signature = Signature::from_der(&der).map_err(|_| Rejection::Malformed)?;
    let mut signed = Vec::with_capacity(timestamp.len() + body.len());
    signed.extend_from_slice(timestamp);
    signed.extend_from_slice(body);
    key.0.verify(&signed, &signature).map_err(|_| Rejection::Forged)
}

/// Signs `body` at `timestamp_s` the way SendGrid does: returns the signature header's value.
/// The sandbox's receipts and the tests use it.
pub fn sign(key: &SigningKey, timestamp_s: u64, body: &[u8]) -> String {
    let mut signed = timestamp_s.to_string().into_bytes();
    signed.extend_from_slice(body);
    let signature: DerSignature = key.sign(&signed);
    STANDARD.encode(signature.as_bytes())
}

/// The verification key of a signing key.
pub fn public_key(key: &SigningKey) -> EventWebhookKey {
    EventWebhookKey(*key.verifying_key())
}

/// One event as SendGrid posts it: the fields courant reads, plus our `custom_args`.
#[derive(Debug, Deserialize)]
struct Event {
    #[serde(default)]
    event: Option<String>,
    /// For `bounce`: `bounce` (the address does not work) or `blocked` (refused for reputation
    /// or content; the address may be fine).
    #[serde(default, rename = "type")]
    bounce_type: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    sg_message_id: Option<String>,
    #[serde(default)]
    timestamp: Option<u64>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    notification_id: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    attempt: Option<serde_json::Value>,
}

/// What an event name (and a bounce's type) means to courant; `None` for events it does not use
/// (`group_resubscribe`, ...).
pub fn kind(event: &str, bounce_type: Option<&str>) -> Option<ReceiptKind> {
    Some(match event {
        "processed" => ReceiptKind::Accepted,
        "deferred" => ReceiptKind::Deferred,
        "delivered" => ReceiptKind::Delivered,
        "bounce" => match bounce_type {
            Some("blocked") => ReceiptKind::Undelivered,
            _ => ReceiptKind::Bounced,
        },
        "dropped" => ReceiptKind::Undelivered,
        "open" => ReceiptKind::Opened,
        "click" => ReceiptKind::Clicked,
        "unsubscribe" | "group_unsubscribe" => ReceiptKind::Unsubscribed,
        "spamreport" => ReceiptKind::SpamReport,
        _ => return None,
    })
}

/// Parses a verified body (a JSON array of events). `Err(Malformed)` when it is not a JSON
/// array of objects or holds more than [`EVENTS_MAX`] events.
pub fn parse(body: &[u8]) -> Result<Parsed, Rejection> {
    let events: Vec<serde_json::Value> =
        serde_json::from_slice(body).map_err(|_| Rejection::Malformed)?;
    if events.len() > EVENTS_MAX {
        return Err(Rejection::Malformed);
    }
    let mut parsed = Parsed::default();
    for value in events {
        let event: Event = serde_json::from_value(value).map_err(|_| Rejection::Malformed)?;
        match receipt(event) {
            Some(receipt) => parsed.events.push(receipt),
            None => parsed.skipped += 1,
        }
    }
    Ok(parsed)
}

fn receipt(event: Event) -> Option<ReceiptEvent> {
    let kind = kind(event.event.as_deref()?, event.bounce_type.as_deref())?;
    let notification_id = NotificationId::new(event.notification_id?).ok()?;
    let tenant = TenantId::new(event.tenant?).ok()?;
    let attempt = match event.attempt {
        Some(serde_json::Value::String(text)) => text.parse().ok().map(Attempt),
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().and_then(|n| u32::try_from(n).ok()).map(Attempt)
        }
        _ => None,
    };
    // The X-Message-Id we were given is the part of `sg_message_id` before the first dot.
    let provider_message_id =
        event.sg_message_id.as_deref().and_then(|id| id.split('.').next()).map(bounded_detail);
    let known: Vec<&str> = event.email.as_deref().into_iter().collect();
    let detail = match (&event.bounce_type, &event.status, &event.reason) {
        (None, None, None) => None,
        (bounce_type, status, reason) => {
            let text = [bounce_type.as_deref(), status.as_deref(), reason.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(": ");
            Some(bounded_detail(&scrub(&text, &known)))
        }
    };
    Some(ReceiptEvent {
        tenant,
        notification_id,
        attempt,
        provider_message_id,
        kind,
        at_ms: event.timestamp.map(|s| s.saturating_mul(1_000)),
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sendgrid/sendgrid-python `test/unit/test_eventwebhook.py` (the same vector is in the
    /// other SendGrid SDKs' `eventwebhook` tests): the public key, signature and timestamp, and
    /// the payload, which that test builds with `json.dumps(.., sort_keys=True,
    /// separators=(',', ':')) + '\r\n'`.
    const SDK_PUBLIC_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g==";
    const SDK_SIGNATURE: &str = "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluLtEZtM=";
    const SDK_TIMESTAMP: &str = "1600112502";
    const SDK_PAYLOAD: &str = "[{\"email\":\"hello@world.com\",\"event\":\"dropped\",\"reason\":\"Bounced Address\",\"sg_event_id\":\"ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA\",\"sg_message_id\":\"LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0\",\"smtp-id\":\"<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>\",\"timestamp\":1600112492}]\r\n";
    /// The same test's "bad key" and "bad signature".
    const SDK_OTHER_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqTxd43gyp8IOEto2LdIfjRQrIbsd4SXZkLW6jDutdhXSJCWHw8REntlo7aNDthvj+y7GjUuFDb/R1NGe1OPzpA==";
    const SDK_BAD_SIGNATURE: &str = "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH3j/0=";
    const SDK_NOW_S: u64 = 1_600_112_502;

    fn check(
        key: &str,
        signature: &str,
        timestamp: &str,
        body: &str,
        now_s: u64,
    ) -> Result<(), Rejection> {
        let key = EventWebhookKey::from_base64_der(key).unwrap();
        verify(
            &key,
            Some(signature.as_bytes()),
            Some(timestamp.as_bytes()),
            body.as_bytes(),
            now_s,
            TOLERANCE_S_DEFAULT,
        )
    }

    #[test]
    fn the_sdk_vector_verifies() {
        assert_eq!(
            check(SDK_PUBLIC_KEY, SDK_SIGNATURE, SDK_TIMESTAMP, SDK_PAYLOAD, SDK_NOW_S),
            Ok(())
        );
    }

    #[test]
    fn the_sdk_negative_vectors_are_refused() {
        let forged = Err(Rejection::Forged);
        assert_eq!(
            check(SDK_OTHER_KEY, SDK_SIGNATURE, SDK_TIMESTAMP, SDK_PAYLOAD, SDK_NOW_S),
            forged
        );
        assert_eq!(
            check(SDK_PUBLIC_KEY, SDK_SIGNATURE, SDK_TIMESTAMP, "payload", SDK_NOW_S),
            forged
        );
        assert_eq!(
            check(SDK_PUBLIC_KEY, SDK_BAD_SIGNATURE, SDK_TIMESTAMP, SDK_PAYLOAD, SDK_NOW_S),
            forged
        );
        assert_eq!(
            check(SDK_PUBLIC_KEY, SDK_SIGNATURE, "timestamp", SDK_PAYLOAD, SDK_NOW_S),
            Err(Rejection::Malformed)
        );
        // Without its trailing CRLF the body is not what was signed.
        assert_eq!(
            check(SDK_PUBLIC_KEY, SDK_SIGNATURE, SDK_TIMESTAMP, SDK_PAYLOAD.trim_end(), SDK_NOW_S),
            forged
        );
    }

    #[test]
    fn stale_and_unsigned_requests_are_refused() {
        let late = SDK_NOW_S + TOLERANCE_S_DEFAULT + 1;
        assert_eq!(
            check(SDK_PUBLIC_KEY, SDK_SIGNATURE, SDK_TIMESTAMP, SDK_PAYLOAD, late),
            Err(Rejection::Stale)
        );
        let early = SDK_NOW_S - TOLERANCE_S_DEFAULT - 1;
        assert_eq!(
            check(SDK_PUBLIC_KEY, SDK_SIGNATURE, SDK_TIMESTAMP, SDK_PAYLOAD, early),
            Err(Rejection::Stale)
        );
        let key = EventWebhookKey::from_base64_der(SDK_PUBLIC_KEY).unwrap();
        let body = SDK_PAYLOAD.as_bytes();
        let ts = Some(SDK_TIMESTAMP.as_bytes());
        let sig = Some(SDK_SIGNATURE.as_bytes());
        assert_eq!(verify(&key, None, ts, body, SDK_NOW_S, 300), Err(Rejection::Unsigned));
        assert_eq!(verify(&key, sig, None, body, SDK_NOW_S, 300), Err(Rejection::Unsigned));
    }

    #[test]
    fn a_changed_byte_anywhere_is_refused() {
        let signed = SDK_TIMESTAMP.to_owned() + SDK_PAYLOAD;
        let mut material = signed.into_bytes();
        for i in 0..material.len() {
            material[i] ^= 0x01;
            let (timestamp, body) = material.split_at(SDK_TIMESTAMP.len());
            let key = EventWebhookKey::from_base64_der(SDK_PUBLIC_KEY).unwrap();
            let outcome = verify(
                &key,
                Some(SDK_SIGNATURE.as_bytes()),
                Some(timestamp),
                body,
                SDK_NOW_S,
                u64::MAX,
            );
            assert!(outcome.is_err(), "byte {i} changed and it still verified");
            material[i] ^= 0x01;
        }
        let mut signature = SDK_SIGNATURE.as_bytes().to_vec();
        let key = EventWebhookKey::from_base64_der(SDK_PUBLIC_KEY).unwrap();
        for i in 0..signature.len() {
            let original = signature[i];
            signature[i] = if original == b'A' { b'B' } else { b'A' };
            let outcome = verify(
                &key,
                Some(&signature),
                Some(SDK_TIMESTAMP.as_bytes()),
                SDK_PAYLOAD.as_bytes(),
                SDK_NOW_S,
                300,
            );
            assert!(outcome.is_err(), "signature byte {i} changed and it still verified");
            signature[i] = original;
        }
    }

    #[test]
    fn our_signer_matches_the_verifier() {
        let key = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let public = public_key(&key);
        let round = EventWebhookKey::from_base64_der(&public.to_base64_der()).unwrap();
        assert_eq!(round, public);
        let body = b"[{\"event\":\"delivered\"}]";
        let signature = sign(&key, 1_700_000_000, body);
        assert_eq!(
            verify(
                &round,
                Some(signature.as_bytes()),
                Some(b"1700000000"),
                body,
                1_700_000_010,
                300
            ),
            Ok(())
        );
    }

    #[test]
    fn events_map_to_receipt_kinds() {
        let cases = [
            ("processed", None, Some(ReceiptKind::Accepted)),
            ("deferred", None, Some(ReceiptKind::Deferred)),
            ("delivered", None, Some(ReceiptKind::Delivered)),
            ("bounce", Some("bounce"), Some(ReceiptKind::Bounced)),
            ("bounce", None, Some(ReceiptKind::Bounced)),
            ("bounce", Some("blocked"), Some(ReceiptKind::Undelivered)),
            ("dropped", None, Some(ReceiptKind::Undelivered)),
            ("open", None, Some(ReceiptKind::Opened)),
            ("click", None, Some(ReceiptKind::Clicked)),
            ("unsubscribe", None, Some(ReceiptKind::Unsubscribed)),
            ("group_unsubscribe", None, Some(ReceiptKind::Unsubscribed)),
            ("spamreport", None, Some(ReceiptKind::SpamReport)),
            ("group_resubscribe", None, None),
        ];
        for (event, bounce_type, expected) in cases {
            assert_eq!(kind(event, bounce_type), expected, "{event} {bounce_type:?}");
        }
    }

    #[test]
    fn parses_our_ids_and_skips_foreign_events() {
        let body = br#"[
          {"email":"ada@example.com","event":"bounce","type":"bounce","status":"5.1.1",
           "reason":"550 5.1.1 ada@example.com does not exist","timestamp":1700000000,
           "sg_message_id":"abc123.filter0001","notification_id":"n0001ARZ3NDEKTSV4RRFFQ69G5FAV",
           "tenant":"acme","attempt":"2"},
          {"email":"bob@example.com","event":"delivered","timestamp":1700000001},
          {"email":"ada@example.com","event":"group_resubscribe","notification_id":"n1",
           "tenant":"acme"}
        ]"#;
        let parsed = parse(body).unwrap();
        assert_eq!(parsed.skipped, 2);
        let event = &parsed.events[0];
        assert_eq!(event.kind, ReceiptKind::Bounced);
        assert_eq!(event.tenant.as_str(), "acme");
        assert_eq!(event.notification_id.as_str(), "n0001ARZ3NDEKTSV4RRFFQ69G5FAV");
        assert_eq!(event.attempt, Some(Attempt(2)));
        assert_eq!(event.provider_message_id.as_deref(), Some("abc123"));
        assert_eq!(event.at_ms, Some(1_700_000_000_000));
        let detail = event.detail.as_deref().unwrap();
        assert!(!detail.contains("ada@"), "{detail}");
        assert!(detail.starts_with("bounce: 5.1.1: 550"), "{detail}");
        assert_eq!(parse(b"{}"), Err(Rejection::Malformed));
        assert_eq!(parse(b"[1]"), Err(Rejection::Malformed));
    }
}
