//! A local SNS signer: SNS messages signed the way SNS signs them, with a self-signed certificate
//! (rcgen) that a test or a dev configuration pins. For tests and the SES sandbox.
//!
//! The RSA key is a fixed development key (`sns-signing-key.pem`, generated for courant's
//! sandbox and used nowhere else): ring, which signs, cannot generate RSA keys, and generating
//! one per run is slow. Its certificate is made fresh by [`SnsSigner::new`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::receipt::Rejection;
use crate::sns::SnsMessage;

/// The sandbox's SNS signing key (PKCS#8 PEM). Not a secret: it signs nothing but local tests.
const KEY_PEM: &str = include_str!("sns-signing-key.pem");

/// Signs SNS messages.
pub struct SnsSigner {
    key: ring::signature::RsaKeyPair,
    cert_pem: String,
}

impl std::fmt::Debug for SnsSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnsSigner")
    }
}

impl SnsSigner {
    /// A signer with a fresh self-signed certificate for the sandbox key.
    pub fn new() -> Result<SnsSigner, String> {
        let key_pair = rcgen::KeyPair::from_pem_and_sign_algo(KEY_PEM, &rcgen::PKCS_RSA_SHA256)
            .map_err(|e| format!("sandbox SNS key: {e}"))?;
        let params = rcgen::CertificateParams::new(vec!["sns.sandbox.invalid".to_owned()])
            .map_err(|e| format!("sandbox SNS certificate: {e}"))?;
        let cert =
            params.self_signed(&key_pair).map_err(|e| format!("sandbox SNS certificate: {e}"))?;
        let key = ring::signature::RsaKeyPair::from_pkcs8(&key_pair.serialize_der())
            .map_err(|e| format!("sandbox SNS key: {e}"))?;
        Ok(SnsSigner { key, cert_pem: cert.pem() })
    }

    /// The certificate to pin (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Signs `message` in place with `SignatureVersion` 2 (SHA-256). Version 1 (SHA-1) is
    /// verified but not produced here: ring signs with SHA-1 for no one (the tests hold the
    /// verifier to a version 1 vector made with OpenSSL instead).
    pub fn sign(&self, message: &mut SnsMessage) -> Result<(), Rejection> {
        let padding = &ring::signature::RSA_PKCS1_SHA256;
        message.signature_version = "2".to_owned();
        let canonical = message.canonical()?;
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(padding, &ring::rand::SystemRandom::new(), canonical.as_bytes(), &mut signature)
            .map_err(|_| Rejection::Malformed)?;
        message.signature = STANDARD.encode(signature);
        Ok(())
    }

    /// An SNS `Notification` of `topic_arn` carrying `payload`, published at `timestamp`
    /// (ISO 8601), signed, as the JSON SNS posts.
    pub fn notification(
        &self,
        topic_arn: &str,
        message_id: &str,
        payload: &str,
        timestamp: &str,
    ) -> Result<serde_json::Value, Rejection> {
        let mut message = SnsMessage {
            kind: "Notification".to_owned(),
            message_id: message_id.to_owned(),
            token: None,
            topic_arn: topic_arn.to_owned(),
            subject: None,
            message: payload.to_owned(),
            timestamp: timestamp.to_owned(),
            signature_version: String::new(),
            signature: String::new(),
            signing_cert_url:
                "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-sandbox.pem"
                    .to_owned(),
            subscribe_url: None,
            unsubscribe_url: None,
        };
        self.sign(&mut message)?;
        Ok(to_json(&message))
    }
}

/// The message as SNS posts it.
pub fn to_json(message: &SnsMessage) -> serde_json::Value {
    let mut value = serde_json::json!({
        "Type": message.kind,
        "MessageId": message.message_id,
        "TopicArn": message.topic_arn,
        "Message": message.message,
        "Timestamp": message.timestamp,
        "SignatureVersion": message.signature_version,
        "Signature": message.signature,
        "SigningCertURL": message.signing_cert_url,
    });
    let optional = [
        ("Token", &message.token),
        ("Subject", &message.subject),
        ("SubscribeURL", &message.subscribe_url),
        ("UnsubscribeURL", &message.unsubscribe_url),
    ];
    for (name, field) in optional {
        if let Some(field) = field {
            value[name] = field.clone().into();
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipt::ReceiptKind;
    use crate::sns::{self, SigningCert};

    const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:courant-ses";
    const NOW: &str = "2026-11-22T07:00:00.000Z";
    const NOW_MS: u64 = 1_795_330_800_000;

    fn delivery() -> String {
        serde_json::json!({
            "eventType": "Delivery",
            "mail": {
                "messageId": "0100018b-ses",
                "destination": ["ada@example.com"],
                "tags": {"notification_id": ["n_1"], "tenant": ["acme"], "attempt": ["1"]}
            },
            "delivery": {"recipients": ["ada@example.com"]}
        })
        .to_string()
    }

    #[test]
    fn signed_messages_verify_with_the_pinned_certificate() {
        let signer = SnsSigner::new().unwrap();
        let cert = SigningCert::from_pem(signer.cert_pem()).unwrap();
        let json = signer.notification(TOPIC, "m1", &delivery(), NOW).unwrap();
        let message = SnsMessage::parse(json.to_string().as_bytes()).unwrap();
        assert_eq!(message.signature_version, "2");
        assert_eq!(sns::verify(&message, &cert, NOW_MS, 3_600), Ok(()));
        let parsed = sns::parse_ses(&message.message).unwrap();
        assert_eq!(parsed.events[0].kind, ReceiptKind::Delivered);
        assert_eq!(parsed.events[0].notification_id.as_str(), "n_1");
    }

    /// A `SignatureVersion` 1 (SHA-1) message signed by OpenSSL with the sandbox key
    /// (`openssl dgst -sha1 -sign sns-signing-key.pem` over the canonical string below).
    #[test]
    fn a_version_1_message_signed_by_openssl_verifies() {
        let signer = SnsSigner::new().unwrap();
        let cert = SigningCert::from_pem(signer.cert_pem()).unwrap();
        let payload = r#"{"eventType":"Delivery","mail":{"messageId":"0100018b-ses","tags":{"notification_id":["n_1"],"tenant":["acme"],"attempt":["1"]}}}"#;
        let message = SnsMessage {
            kind: "Notification".into(),
            message_id: "m1".into(),
            token: None,
            topic_arn: TOPIC.into(),
            subject: None,
            message: payload.into(),
            timestamp: NOW.into(),
            signature_version: "1".into(),
            signature: "ZBvJ+rpB4H5vmcl/dj/OVRHDL8INeIhQpwVM9qce9STMblF+GUktalfziFw0jJG4Y8l6B8gfgp/TIwOAaKSDpyTg1aI0GR9P/KuqfphBnqcalOKL0pIJcCkEGY81nKW/R21IzI8LAMhNQO0s/hREyizatIxdi9irjsdATZQiVgbjqaeMVvNg1SS4qzLQMkBuqGcXYAcO4q08Yz4U2KO5t9zHy5dr9qQmOq7vsYsIDYSpwX+XI0eskpeQXXB3Afk5ore+MesiKWdQEcjZ7s3VSoBSXUf0OnjlttcG4yR4/gt66+E/E0892tICeOFTVFJRKuksMCFRDxWuwPnUT7zfEg==".into(),
            signing_cert_url: "https://sns.us-east-1.amazonaws.com/x.pem".into(),
            subscribe_url: None,
            unsubscribe_url: None,
        };
        assert_eq!(sns::verify(&message, &cert, NOW_MS, 3_600), Ok(()));
        let mut as_v2 = message.clone();
        as_v2.signature_version = "2".into();
        assert_eq!(sns::verify(&as_v2, &cert, NOW_MS, 3_600), Err(Rejection::Forged));
    }

    #[test]
    fn a_changed_signed_field_or_signature_is_refused_and_stale_messages_too() {
        let signer = SnsSigner::new().unwrap();
        let cert = SigningCert::from_pem(signer.cert_pem()).unwrap();
        let json = signer.notification(TOPIC, "m1", &delivery(), NOW).unwrap();
        let message = SnsMessage::parse(json.to_string().as_bytes()).unwrap();
        let mut payload = message.message.clone().into_bytes();
        for i in 0..payload.len() {
            payload[i] ^= 0x01;
            let mut changed = message.clone();
            changed.message = String::from_utf8_lossy(&payload).into_owned();
            assert!(sns::verify(&changed, &cert, NOW_MS, 3_600).is_err(), "message byte {i}");
            payload[i] ^= 0x01;
        }
        let mut changed = message.clone();
        changed.topic_arn.push('x');
        assert_eq!(sns::verify(&changed, &cert, NOW_MS, 3_600), Err(Rejection::Forged));
        let mut changed = message.clone();
        changed.message_id = "m2".into();
        assert_eq!(sns::verify(&changed, &cert, NOW_MS, 3_600), Err(Rejection::Forged));
        let mut changed = message.clone();
        changed.signature_version = "1".into();
        assert_eq!(sns::verify(&changed, &cert, NOW_MS, 3_600), Err(Rejection::Forged));
        let mut changed = message.clone();
        changed.signature = changed.signature.replacen(|c: char| c.is_ascii_alphabetic(), "0", 1);
        assert!(sns::verify(&changed, &cert, NOW_MS, 3_600).is_err());
        assert_eq!(sns::verify(&message, &cert, NOW_MS + 3_601_000, 3_600), Err(Rejection::Stale));
    }

    #[test]
    fn certificates_and_confirmations_are_fetched_only_from_sns_hosts() {
        assert!(sns::cert_url_allowed(
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-01d088a6f77103d0fe307c0069e40ed6.pem"
        ));
        assert!(sns::cert_url_allowed("https://sns.cn-north-1.amazonaws.com.cn/x.pem"));
        for bad in [
            "http://sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com.evil.example/x.pem",
            "https://evil.example/sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com:8443/x.pem",
            "https://user@sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com/x.txt",
            "https://sns..amazonaws.com/x.pem",
            "https://s3.amazonaws.com/x.pem",
        ] {
            assert!(!sns::cert_url_allowed(bad), "{bad}");
        }
        assert!(sns::subscribe_url_allowed(
            "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn&Token=t"
        ));
        assert!(!sns::subscribe_url_allowed("https://127.0.0.1/?Action=ConfirmSubscription"));
    }

    #[test]
    fn ses_events_map_to_receipt_kinds() {
        let cases = [
            ("Send", None, Some(ReceiptKind::Accepted)),
            ("Delivery", None, Some(ReceiptKind::Delivered)),
            ("Bounce", Some("Permanent"), Some(ReceiptKind::Bounced)),
            ("Bounce", Some("Transient"), Some(ReceiptKind::Undelivered)),
            ("Bounce", Some("Undetermined"), Some(ReceiptKind::Undelivered)),
            ("Complaint", None, Some(ReceiptKind::SpamReport)),
            ("Reject", None, Some(ReceiptKind::Undelivered)),
            ("DeliveryDelay", None, Some(ReceiptKind::Deferred)),
            ("Open", None, Some(ReceiptKind::Opened)),
            ("Click", None, Some(ReceiptKind::Clicked)),
            ("Subscription", None, Some(ReceiptKind::Unsubscribed)),
            ("Rendering Failure", None, Some(ReceiptKind::Undelivered)),
            ("Something", None, None),
        ];
        for (event, bounce, expected) in cases {
            assert_eq!(sns::ses_kind(event, bounce), expected, "{event}");
        }
        let bounce = serde_json::json!({
            "eventType": "Bounce",
            "bounce": {"bounceType": "Permanent", "bounceSubType": "General"},
            "mail": {"destination": ["ada@example.com"], "tags": {"notification_id": ["n_1"], "tenant": ["acme"], "attempt": ["2"]}}
        });
        let parsed = sns::parse_ses(&bounce.to_string()).unwrap();
        assert_eq!(parsed.events[0].kind, ReceiptKind::Bounced);
        assert_eq!(parsed.events[0].attempt, Some(steps::model::Attempt(2)));
        assert_eq!(parsed.events[0].detail.as_deref(), Some("Permanent: General"));
        let untagged = serde_json::json!({"eventType": "Delivery", "mail": {}});
        assert_eq!(sns::parse_ses(&untagged.to_string()).unwrap().skipped, 1);
        assert_eq!(sns::parse_ses("[]"), Err(Rejection::Malformed));
    }
}
