//! Vonage: the wire form, the classification of every documented status, the config, signatures
//! (against Vonage's own libraries' vectors), delivery receipts and (with feature `http`) the
//! real call against a local server.

use steps::model::{NotificationId, ProviderName, TenantId};
use steps::outcome::{ErrorClass, ProviderError, SendOutcome};
use steps::render::Content;

use super::receipt::{ReceiptCheck, ReceiptError};
use super::request::{Account, send_sms};
use super::response::outcome;
use super::*;
use crate::Secret;
use crate::receipt::ReceiptKind;
use crate::testing::{TO_PHONE, message};

const KEY: &str = "abcd1234";
const SECRET: &str = "vonage-api-secret-0123";

fn name() -> ProviderName {
    ProviderName::new("vonage").expect("id")
}

fn sms(body: &str) -> Content {
    Content::Sms { body: body.into() }
}

fn account() -> Account<'static> {
    Account { api_key: KEY, api_secret: SECRET, from: "Acme" }
}

/// The form's fields as `name=value` pairs, unencoded, in wire order.
fn form(callback: Option<&str>, content: Content) -> Result<String, ProviderError> {
    let message = message(content);
    let form = send_sms(account(), callback, &name(), &message)?;
    let value = serde_json::to_value(&form).expect("serializes");
    let object = value.as_object().expect("object");
    // serde_json keeps insertion order only with `preserve_order`; list the wire order here.
    let order = ["api_key", "api_secret", "from", "to", "text", "type", "client-ref", "callback"];
    Ok(order
        .iter()
        .filter_map(|k| object.get(*k).and_then(|v| v.as_str()).map(|v| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join("&"))
}

#[test]
fn form_has_credentials_sender_number_without_plus_text_reference_and_callback() {
    let got = form(Some("https://courant.example.com/"), sms("Your code is 123456")).expect("ok");
    assert_eq!(
        got,
        format!(
            "api_key={KEY}&api_secret={SECRET}&from=Acme&to=14155550123&text=Your code is 123456\
             &client-ref=n_01HZX3V4\
             &callback=https://courant.example.com/v1/webhooks/vonage/vonage/acme/n_01HZX3V4"
        )
    );
}

#[test]
fn text_outside_gsm7_is_sent_as_unicode() {
    let got = form(None, sms("Votre code: 123456 ✅")).expect("ok");
    assert!(got.contains("&type=unicode&"), "{got}");
    // GSM-7's own accented letters need no UCS-2.
    let got = form(None, sms("Café à 5 €")).expect("ok");
    assert!(!got.contains("type="), "{got}");
    assert!(!got.contains("callback="), "{got}");
}

#[test]
fn unsendable_messages_are_refused_before_the_call() {
    let e = form(None, Content::Chat { text: "hi".into() }).expect_err("wrong channel");
    assert_eq!(e.class, ErrorClass::ProviderConfig);
    assert_eq!(e.message, "SMS provider got chat content");
    assert_eq!(form(None, sms("")).expect_err("empty").class, ErrorClass::PermanentRecipient);
    let mut m = message(sms("hi"));
    m.recipient.phone = None;
    let e = send_sms(account(), None, &name(), &m).expect_err("no phone");
    assert_eq!(e.class, ErrorClass::PermanentRecipient);
}

#[test]
fn ids_longer_than_client_refs_still_ride_in_the_callback() {
    let mut m = message(sms("hi"));
    m.notification_id = NotificationId::new("n".repeat(101)).expect("id");
    let f = send_sms(account(), Some("https://c.example"), &name(), &m).expect("ok");
    assert_eq!(f.client_ref, None);
    assert!(f.callback.expect("callback").ends_with(&"n".repeat(101)));
}

fn answer(status: &str, text: &str) -> String {
    serde_json::json!({
        "message-count": "1",
        "messages": [{"to": "14155550123", "status": status, "error-text": text}]
    })
    .to_string()
}

/// Classifies an error answer; panics on success.
fn check(status: u16, body: &str) -> ProviderError {
    match outcome(status, None, body.as_bytes(), &[TO_PHONE, "14155550123", KEY, SECRET]) {
        SendOutcome::Failed(error) => error,
        accepted => panic!("expected a failure, got {accepted:?}"),
    }
}

#[test]
fn success_carries_the_message_id() {
    let body = r#"{"message-count":"1","messages":[{"to":"447700900000","message-id":"0C000000217B7F02","status":"0","remaining-balance":"15.53590000","message-price":"0.03330000","network":"23410"}]}"#;
    assert_eq!(
        outcome(200, None, body.as_bytes(), &[]),
        SendOutcome::Accepted {
            provider_message_id: Some("0C000000217B7F02".into()),
            delivered: false
        }
    );
}

#[test]
fn every_documented_status_is_classified() {
    let rate = ErrorClass::RateLimited { retry_after_ms: None };
    let cases: [(&str, &str, ErrorClass); 29] = [
        ("1", "Throttled", rate),
        ("2", "Missing from param", ErrorClass::ProviderConfig),
        ("3", "Invalid from param", ErrorClass::ProviderConfig),
        ("3", "Invalid to address", ErrorClass::PermanentRecipient),
        ("3", "Invalid 'to' param: 4155550123", ErrorClass::PermanentRecipient),
        ("3", "Invalid callback url", ErrorClass::ProviderConfig),
        ("4", "Bad Credentials", ErrorClass::ProviderConfig),
        ("5", "Internal Error", ErrorClass::RETRYABLE),
        ("6", "Invalid Message: unrecognized prefix", ErrorClass::PermanentRecipient),
        ("7", "Number barred.", ErrorClass::PermanentRecipient),
        ("8", "Partner account barred.", ErrorClass::ProviderConfig),
        ("9", "Partner quota exceeded.", ErrorClass::ProviderConfig),
        ("10", "Too many existing binds", rate),
        ("11", "Account not enabled for HTTP", ErrorClass::ProviderConfig),
        ("12", "Message too long", ErrorClass::PermanentRecipient),
        ("13", "Communication Failed", ErrorClass::RETRYABLE),
        ("14", "Invalid Signature", ErrorClass::ProviderConfig),
        ("15", "Illegal Sender Address - rejected", ErrorClass::ProviderConfig),
        ("16", "Invalid TTL", ErrorClass::ProviderConfig),
        ("19", "Facility not allowed", ErrorClass::ProviderConfig),
        ("20", "Invalid Message class", ErrorClass::ProviderConfig),
        ("23", "Bad callback :: Missing Protocol", ErrorClass::ProviderConfig),
        ("29", "Non White-listed Destination - rejected", ErrorClass::PermanentRecipient),
        ("32", "Signature and API Secret Disallowed", ErrorClass::ProviderConfig),
        ("33", "Number De-activated", ErrorClass::PermanentRecipient),
        ("34", "Invalid or Missing Msisdn Param", ErrorClass::PermanentRecipient),
        ("101", "RESPONSE_INVALID_ACCOUNT_CAMPAIGN", ErrorClass::PermanentRecipient),
        ("102", "RESPONSE_INVALID_CAMPAIGN_SHORTCODE", ErrorClass::ProviderConfig),
        ("103", "RESPONSE_INVALID_MSISDN", ErrorClass::PermanentRecipient),
    ];
    for (status, text, class) in cases {
        let e = check(200, &answer(status, text));
        assert_eq!(e.class, class, "status {status}: {text}");
        assert_eq!(e.code.as_deref(), Some(status));
        assert_eq!(e.status, Some(200));
        assert!(!e.message.contains("4155550123"), "{status}: {}", e.message);
    }
}

#[test]
fn undocumented_statuses_and_odd_answers() {
    // An unknown non-zero status: nothing was queued, so a retry cannot duplicate.
    assert_eq!(check(200, &answer("77", "Something new")).class, ErrorClass::RETRYABLE);
    // A 200 we cannot read: it may have been queued.
    assert_eq!(check(200, "{\"messa").class, ErrorClass::Unknown);
    assert_eq!(check(200, r#"{"message-count":"0","messages":[]}"#).class, ErrorClass::Unknown);
    // Proxies and outages.
    assert_eq!(check(503, "").class, ErrorClass::RETRYABLE);
    assert_eq!(check(404, "").class, ErrorClass::ProviderConfig);
    assert_eq!(check(401, "").class, ErrorClass::ProviderConfig);
    match outcome(429, Some(2_000), b"", &[]) {
        SendOutcome::Failed(e) => {
            assert_eq!(e.class, ErrorClass::RateLimited { retry_after_ms: Some(2_000) })
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_long_message_with_one_queued_part_is_accepted() {
    let body = r#"{"message-count":"2","messages":[
        {"to":"14155550123","message-id":"0C000000217B7F02","status":"0"},
        {"to":"14155550123","status":"1","error-text":"Throttled"}]}"#;
    assert!(matches!(
        outcome(200, None, body.as_bytes(), &[]),
        SendOutcome::Accepted { provider_message_id: Some(_), delivered: false }
    ));
}

fn config_toml(extra: &str) -> String {
    format!(
        "base_url = \"https://rest.nexmo.com\"\napi_key = \"{KEY}\"\napi_secret = \"{SECRET}\"\n\
         from = \"Acme\"\n{extra}\n"
    )
}

#[test]
fn config_reads_from_toml_with_defaults_and_hides_secrets() {
    let config: VonageConfig =
        toml::from_str(&config_toml("signature_secret = \"sig-secret\"")).expect("parses");
    assert_eq!(config.signature_method, SignatureMethod::Md5hash);
    assert_eq!(config.timeout_ms, 10_000);
    assert!(config.validate(&name()).is_ok());
    let debug = format!("{config:?}");
    assert!(!debug.contains(SECRET) && !debug.contains("sig-secret"), "{debug}");
    let sha: VonageConfig =
        toml::from_str(&config_toml("signature_method = \"sha256\"")).expect("parses");
    assert_eq!(sha.signature_method, SignatureMethod::Sha256);
}

#[test]
fn config_rejects_bad_senders_keys_and_unknown_fields() {
    assert!(toml::from_str::<VonageConfig>(&config_toml("sender = \"x\"")).is_err());
    for (from, ok) in [
        ("447700900000", true),
        ("Acme Shop", true),
        ("+447700900000", false),
        ("A sender far too long", false),
        ("Acme\nX", false),
        ("Acme-Shop", false),
    ] {
        let mut config: VonageConfig = toml::from_str(&config_toml("")).expect("parses");
        config.from = from.into();
        assert_eq!(config.validate(&name()).is_ok(), ok, "{from:?}");
    }
    let mut config: VonageConfig = toml::from_str(&config_toml("")).expect("parses");
    config.api_key = "ab cd".into();
    assert!(config.validate(&name()).is_err());
}

/// Vonage's Ruby library's test vectors (test/vonage/signature_test.rb): every method over the
/// same inbound-SMS parameters.
#[test]
fn signatures_match_vonages_published_vectors() {
    let params = [
        ("message-timestamp", "2013-11-21 15:27:30"),
        ("messageId", "020000001B0FE827"),
        ("msisdn", "14843472194"),
        ("text", "Test again"),
        ("timestamp", "1385047698"),
        ("to", "13239877404"),
        ("type", "text"),
    ];
    let secret = "my_secret_key_for_testing";
    let vectors = [
        (SignatureMethod::Md5hash, "d2e7b1dc968737c5998ad624e02f90b7"),
        (SignatureMethod::Md5, "DDEBD46008C2D4E93CCE578A332A52D5"),
        (SignatureMethod::Sha1, "27D0D05C2876C7CB1720DBCDBA4D492E1E55C09A"),
        (
            SignatureMethod::Sha256,
            "DDB8397C2B90AAC7F3882D306475C9A5058C92322EEF43C92B298B6E0FC0D330",
        ),
        (
            SignatureMethod::Sha512,
            "E0D3C650F8C9D1A5C174D10DDDBFB003E561F59B265616208B0487C5D819481CD3C311D59CF6165ECD1139622D5BA3A256C0D763AC4A9AD9144B5A426B94FE82",
        ),
    ];
    for (method, expected) in vectors {
        assert_eq!(sign(&params, secret, method), expected, "{method:?}");
        assert!(verify(&params, expected, secret, method), "{method:?}");
        assert!(verify(&params, &expected.to_ascii_lowercase(), secret, method), "{method:?}");
        assert!(!verify(&params, expected, "another secret", method), "{method:?}");
        assert!(!verify(&params, "xxx", secret, method), "{method:?}");
        let mut tampered = params;
        tampered[3] = ("text", "Test agaiN");
        assert!(!verify(&tampered, expected, secret, method), "{method:?}");
    }
    // The Python library's vector (`sig` itself is left out of what is signed).
    let params = [("a", "1"), ("b", "2"), ("timestamp", "1461605396")];
    assert_eq!(
        sign(&params, "secret", SignatureMethod::Md5hash),
        "6af838ef94998832dbfc29020b564830"
    );
    let with_sig = [
        ("a", "1"),
        ("sig", "6af838ef94998832dbfc29020b564830"),
        ("b", "2"),
        ("timestamp", "1461605396"),
    ];
    assert!(verify(
        &with_sig,
        "6af838ef94998832dbfc29020b564830",
        "secret",
        SignatureMethod::Md5hash
    ));
}

#[test]
fn signatures_replace_ampersands_and_equals_in_values() {
    // The Ruby library's vector: `_`, `&` and `=` all sign the same.
    let expected = "c3d6a686ab9c7e7408bb1c0506e9629a";
    for value in ["_", "&", "="] {
        assert!(
            verify(
                &[("k", value)],
                expected,
                "my_secret_key_for_testing",
                SignatureMethod::Md5hash
            ),
            "{value}"
        );
    }
}

fn tenant() -> TenantId {
    TenantId::new("acme").expect("id")
}

fn id() -> NotificationId {
    NotificationId::new("n_01HZX3V4").expect("id")
}

fn dlr(status: &str, err_code: &str) -> Vec<(String, String)> {
    [
        ("err-code", err_code),
        ("message-timestamp", "2018-10-25 12:10:29"),
        ("messageId", "0B00000127FDBC63"),
        ("msisdn", "14155550123"),
        ("network-code", "23410"),
        ("price", "0.03330000"),
        ("scts", "1810251310"),
        ("status", status),
        ("to", "Acme"),
        ("client-ref", "n_01HZX3V4"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

#[test]
fn receipts_map_every_status() {
    let cases = [
        ("delivered", "0", ReceiptKind::Delivered),
        ("accepted", "0", ReceiptKind::Accepted),
        ("buffered", "0", ReceiptKind::Deferred),
        ("unknown", "1", ReceiptKind::Accepted),
        ("expired", "2", ReceiptKind::Undelivered),
        ("failed", "3", ReceiptKind::Bounced),
        ("failed", "6", ReceiptKind::Undelivered),
        ("rejected", "9", ReceiptKind::Undelivered),
        ("rejected", "3", ReceiptKind::Bounced),
    ];
    for (status, code, kind) in cases {
        let event = delivery_receipt(&tenant(), &id(), &dlr(status, code), None).expect(status);
        assert_eq!(event.kind, kind, "{status} {code}");
        assert_eq!(event.tenant, tenant());
        assert_eq!(event.notification_id, id());
        assert_eq!(event.provider_message_id.as_deref(), Some("0B00000127FDBC63"));
        assert_eq!(event.at_ms, Some(1_540_469_429_000));
        let detail = event.detail.expect("detail");
        assert!(!detail.contains("4155550123"), "{detail}");
    }
    let failed = delivery_receipt(&tenant(), &id(), &dlr("failed", "6"), None).expect("ok");
    assert_eq!(failed.detail.as_deref(), Some("failed: err-code 6 (Anti-Spam Rejection)"));
}

#[test]
fn receipts_are_refused_when_malformed() {
    let mut other = dlr("delivered", "0");
    other[9].1 = "n_other".into();
    assert_eq!(delivery_receipt(&tenant(), &id(), &other, None), Err(ReceiptError::Mismatch));
    let mut twice = dlr("delivered", "0");
    twice.push(("status".into(), "failed".into()));
    assert!(matches!(
        delivery_receipt(&tenant(), &id(), &twice, None),
        Err(ReceiptError::Duplicate(_))
    ));
    let no_status: Vec<_> =
        dlr("delivered", "0").into_iter().filter(|(k, _)| k != "status").collect();
    assert_eq!(
        delivery_receipt(&tenant(), &id(), &no_status, None),
        Err(ReceiptError::Missing("status"))
    );
    let many: Vec<_> = (0..40).map(|i| (format!("f{i}"), "x".to_owned())).collect();
    assert_eq!(delivery_receipt(&tenant(), &id(), &many, None), Err(ReceiptError::TooLarge));
    let mut long = dlr("delivered", "0");
    long.push(("x".into(), "y".repeat(RECEIPT_FIELD_BYTES_MAX + 1)));
    assert_eq!(delivery_receipt(&tenant(), &id(), &long, None), Err(ReceiptError::TooLarge));
}

fn signed(
    mut fields: Vec<(String, String)>,
    secret: &str,
    method: SignatureMethod,
    at: u64,
) -> Vec<(String, String)> {
    fields.push(("timestamp".into(), at.to_string()));
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let sig = sign(&pairs, secret, method);
    fields.push(("sig".into(), sig));
    fields
}

#[test]
fn signed_receipts_are_verified() {
    let secret = Secret::new("sig-secret-0123").expect("secret");
    let now = 1_700_000_000;
    for method in [SignatureMethod::Md5hash, SignatureMethod::Sha256, SignatureMethod::Sha512] {
        let check = Some(ReceiptCheck { secret: &secret, method, now_secs: now });
        let good = signed(dlr("delivered", "0"), "sig-secret-0123", method, now - 30);
        let event = delivery_receipt(&tenant(), &id(), &good, check).expect("verifies");
        assert_eq!(event.kind, ReceiptKind::Delivered);
        // Tampered after signing.
        let mut bad = good.clone();
        bad[7].1 = "failed".into();
        assert_eq!(
            delivery_receipt(&tenant(), &id(), &bad, check),
            Err(ReceiptError::BadSignature)
        );
        // Signed with another secret.
        let other = signed(dlr("delivered", "0"), "another-secret", method, now);
        assert_eq!(
            delivery_receipt(&tenant(), &id(), &other, check),
            Err(ReceiptError::BadSignature)
        );
        // Unsigned.
        assert_eq!(
            delivery_receipt(&tenant(), &id(), &dlr("delivered", "0"), check),
            Err(ReceiptError::BadSignature)
        );
        // Replayed too late, or dated too far ahead.
        let old = signed(
            dlr("delivered", "0"),
            "sig-secret-0123",
            method,
            now - SIGNATURE_TOLERANCE_SECS - 1,
        );
        assert_eq!(delivery_receipt(&tenant(), &id(), &old, check), Err(ReceiptError::Stale));
        let ahead = signed(
            dlr("delivered", "0"),
            "sig-secret-0123",
            method,
            now + SIGNATURE_TOLERANCE_SECS + 1,
        );
        assert_eq!(delivery_receipt(&tenant(), &id(), &ahead, check), Err(ReceiptError::Stale));
    }
}

#[test]
fn json_receipts_become_fields() {
    let body = br#"{"err-code":"0","messageId":"0B00000127FDBC63","msisdn":"14155550123","status":"delivered","client-ref":"n_01HZX3V4","price":0.0333}"#;
    let fields = receipt_fields_from_json(body).expect("flat");
    assert!(fields.contains(&("price".into(), "0.0333".into())));
    let event = delivery_receipt(&tenant(), &id(), &fields, None).expect("parses");
    assert_eq!(event.kind, ReceiptKind::Delivered);
    assert_eq!(receipt_fields_from_json(b"[1]"), Err(ReceiptError::NotFlat));
    assert_eq!(receipt_fields_from_json(br#"{"a":{"b":1}}"#), Err(ReceiptError::NotFlat));
}

#[cfg(feature = "http")]
mod http {
    use std::time::{Duration, Instant};

    use workflows::ports::Provider;

    use super::*;
    use crate::testing::{Canned, capture_server, hanging_server, refused_base_url};

    fn provider(base_url: &str, timeout_ms: u64) -> Vonage {
        let mut config: VonageConfig =
            toml::from_str(&config_toml("callback_base_url = \"https://courant.example.com\""))
                .expect("parses");
        config.base_url = base_url.to_owned();
        config.timeout_ms = timeout_ms;
        config.connect_timeout_ms = timeout_ms.min(1_000);
        Vonage::new(name(), config).expect("builds")
    }

    const OK: &str = r#"{"message-count":"1","messages":[{"to":"14155550123","message-id":"0C000000217B7F02","status":"0","remaining-balance":"15.53590000","message-price":"0.03330000","network":"23410"}]}"#;

    #[tokio::test]
    async fn sends_the_documented_request_and_reads_the_message_id() {
        let (base, mut requests) = capture_server(Canned::json(200, OK)).await;
        let outcome = provider(&base, 5_000).send(&message(sms("Your code is 123456"))).await;
        assert_eq!(
            outcome,
            SendOutcome::Accepted {
                provider_message_id: Some("0C000000217B7F02".into()),
                delivered: false
            }
        );
        let request = requests.recv().await.expect("captured");
        assert_eq!(request.method, "POST");
        assert_eq!(request.uri.path(), "/sms/json");
        assert_eq!(request.uri.query(), None, "credentials must not ride in the URL");
        assert_eq!(request.header("authorization"), "");
        assert_eq!(request.header("content-type"), "application/x-www-form-urlencoded");
        assert_eq!(
            std::str::from_utf8(&request.body).expect("utf-8"),
            format!(
                "api_key={KEY}&api_secret={SECRET}&from=Acme&to=14155550123\
                 &text=Your+code+is+123456&client-ref=n_01HZX3V4\
                 &callback=https%3A%2F%2Fcourant.example.com%2Fv1%2Fwebhooks%2Fvonage%2Fvonage%2Facme%2Fn_01HZX3V4"
            )
        );
    }

    #[tokio::test]
    async fn refused_credentials_are_provider_config() {
        let body =
            r#"{"message-count":"1","messages":[{"status":"4","error-text":"Bad Credentials"}]}"#;
        let (base, _requests) = capture_server(Canned::json(200, body)).await;
        let SendOutcome::Failed(e) = provider(&base, 5_000).send(&message(sms("hi"))).await else {
            panic!("expected a failure")
        };
        assert_eq!(e.class, ErrorClass::ProviderConfig);
        assert_eq!(e.code.as_deref(), Some("4"));
    }

    #[tokio::test]
    async fn a_hang_past_the_timeout_is_unknown_and_a_refusal_retryable() {
        let base = hanging_server().await;
        let started = Instant::now();
        let SendOutcome::Failed(e) = provider(&base, 300).send(&message(sms("hi"))).await else {
            panic!("expected a failure")
        };
        assert_eq!(e.class, ErrorClass::Unknown, "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let base = refused_base_url().await;
        let SendOutcome::Failed(e) = provider(&base, 2_000).send(&message(sms("hi"))).await else {
            panic!("expected a failure")
        };
        assert_eq!(e.class, ErrorClass::RETRYABLE, "{e}");
        assert!(!e.message.contains(SECRET), "{}", e.message);
    }

    #[test]
    fn provider_debug_hides_the_secret() {
        let vonage = provider("http://127.0.0.1:9", 1_000);
        let debug = format!("{vonage:?}");
        assert!(!debug.contains(SECRET), "{debug}");
        assert_eq!(vonage.channel(), steps::model::Channel::Sms);
    }
}
