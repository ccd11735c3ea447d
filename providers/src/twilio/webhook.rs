//! Status callbacks: Twilio's delivery receipts for SMS, verified and parsed (pure).
//!
//! Twilio posts a form (`application/x-www-form-urlencoded`) to the `StatusCallback` URL a
//! message named, signed in `X-Twilio-Signature`: the base64 of HMAC-SHA1, keyed with the
//! account's auth token, over the full URL Twilio called (scheme, host, path and query) followed
//! by every POST parameter sorted by name, each name directly followed by its value. The
//! signature is compared in constant time. Twilio's signature carries no timestamp, so a
//! replayed callback verifies; replays are harmless because applying a receipt twice changes
//! nothing (see `workflows::runner::Runner::receipt`).
//!
//! Our ids are in the URL's query (`n`, `t`, `a`: see `request::status_callback_url`); the form
//! says what happened (`MessageStatus`, `ErrorCode`, `MessageSid`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha1::Sha1;
use steps::model::{Attempt, NotificationId, TenantId};

use crate::receipt::{Parsed, ReceiptEvent, ReceiptKind, Rejection, bounded_detail};

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Twilio-Signature";
/// The most form parameters accepted; a status callback has about a dozen.
pub const PARAMS_MAX: usize = 100;
/// The longest signature header accepted, in characters (an HMAC-SHA1 is 28 in base64).
const SIGNATURE_CHARS_MAX: usize = 64;

/// The `X-Twilio-Signature` value for `url` and the POST `params`: base64(HMAC-SHA1(token,
/// url + each name and value, sorted by name)). Sorting by name then value also settles
/// repeated names the way Twilio's SDKs do. The sandbox's callbacks and the tests use it.
pub fn signature(token: &[u8], url: &str, params: &[(String, String)]) -> String {
    STANDARD.encode(keyed(token, url, params).finalize().into_bytes())
}

/// The HMAC over `url` and the sorted parameters, not finalised.
fn keyed(token: &[u8], url: &str, params: &[(String, String)]) -> Hmac<Sha1> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = <Hmac<Sha1>>::new_from_slice(token)
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

/// Verifies a callback: the signature header as received (`None` when absent), the public URL
/// Twilio called and the form's parameters. The comparison is constant-time (`Mac::verify`).
pub fn verify(
    token: &[u8],
    presented: Option<&[u8]>,
    url: &str,
    params: &[(String, String)],
) -> Result<(), Rejection> {
    let presented = presented.ok_or(Rejection::Unsigned)?;
    if presented.is_empty() || presented.len() > SIGNATURE_CHARS_MAX {
        return Err(Rejection::Malformed);
    }
    let presented = STANDARD.decode(presented).map_err(|_| Rejection::Malformed)?;
    keyed(token, url, params).verify_slice(&presented).map_err(|_| Rejection::Forged)
}

/// Decodes a form body (or a query string) into its parameters, in order; at most
/// [`PARAMS_MAX`].
pub fn form(body: &[u8]) -> Result<Vec<(String, String)>, Rejection> {
    let mut params = Vec::new();
    for (name, value) in url::form_urlencoded::parse(body) {
        if params.len() == PARAMS_MAX {
            return Err(Rejection::Malformed);
        }
        params.push((name.into_owned(), value.into_owned()));
    }
    Ok(params)
}

/// What a `MessageStatus` (and its `ErrorCode`) means to courant; `None` for a status courant
/// does not use.
///
/// `undelivered` and `failed` are undelivered, except for the error codes that say the number
/// itself does not work, which are a hard bounce: 30005 (unknown or inactive handset) and 30006
/// (a landline or an unreachable carrier).
pub fn kind(status: &str, error_code: Option<&str>) -> Option<ReceiptKind> {
    Some(match status {
        "accepted" | "scheduled" | "queued" | "sending" | "sent" => ReceiptKind::Accepted,
        "delivered" => ReceiptKind::Delivered,
        "undelivered" | "failed" => match error_code {
            Some("30005" | "30006") => ReceiptKind::Bounced,
            _ => ReceiptKind::Undelivered,
        },
        "read" => ReceiptKind::Opened,
        "canceled" => ReceiptKind::Undelivered,
        _ => return None,
    })
}

/// Parses a verified callback: `query` is the callback URL's query, `params` the form.
/// `Err(Malformed)` when the query does not name a notification and tenant (a callback for a
/// URL we never handed out), `Ok` with the event skipped when the status is not one courant uses.
pub fn parse(query: &[(String, String)], params: &[(String, String)]) -> Result<Parsed, Rejection> {
    let field = |pairs: &[(String, String)], name: &str| {
        pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    };
    let notification_id =
        field(query, "n").and_then(|n| NotificationId::new(n).ok()).ok_or(Rejection::Malformed)?;
    let tenant =
        field(query, "t").and_then(|t| TenantId::new(t).ok()).ok_or(Rejection::Malformed)?;
    let attempt = field(query, "a").and_then(|a| a.parse().ok()).map(Attempt);
    let status = field(params, "MessageStatus").or_else(|| field(params, "SmsStatus"));
    let error_code = field(params, "ErrorCode").filter(|c| !c.is_empty());
    let Some(kind) = status.as_deref().and_then(|s| kind(s, error_code.as_deref())) else {
        return Ok(Parsed { events: vec![], skipped: 1 });
    };
    let detail = error_code.as_deref().map(|code| bounded_detail(&format!("error {code}")));
    let event = ReceiptEvent {
        tenant,
        notification_id,
        attempt,
        provider_message_id: field(params, "MessageSid").map(|s| bounded_detail(&s)),
        kind,
        at_ms: None,
        detail,
    };
    Ok(Parsed { events: vec![event], skipped: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect()
    }

    /// twilio/twilio-python `tests/unit/test_request_validator.py` (the same vector is in the
    /// other twilio-* SDKs' request validator tests and Twilio's security docs).
    const SDK_TOKEN: &str = "12345";
    const SDK_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const SDK_EXPECTED: &str = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
    fn sdk_params() -> Vec<(String, String)> {
        pairs(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
            ("Caller", "+14158675309"),
        ])
    }

    #[test]
    fn the_sdk_vector_verifies() {
        assert_eq!(signature(SDK_TOKEN.as_bytes(), SDK_URL, &sdk_params()), SDK_EXPECTED);
        assert_eq!(
            verify(SDK_TOKEN.as_bytes(), Some(SDK_EXPECTED.as_bytes()), SDK_URL, &sdk_params()),
            Ok(())
        );
    }

    #[test]
    fn the_sdk_repeated_names_vector_verifies() {
        // The same test file's `test_compute_signature_duplicate_multi_dict`.
        let params = pairs(&[
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
        ]);
        assert_eq!(
            signature(SDK_TOKEN.as_bytes(), SDK_URL, &params),
            "IK+Dwps556ElfBT0I3Rgjkr1wJU="
        );
    }

    #[test]
    fn a_changed_byte_anywhere_is_refused() {
        let token = SDK_TOKEN.as_bytes();
        let check = |sig: &[u8], url: &str, params: &[(String, String)]| {
            verify(token, Some(sig), url, params)
        };
        let mut url = SDK_URL.as_bytes().to_vec();
        for i in 0..url.len() {
            url[i] ^= 0x01;
            let text = String::from_utf8_lossy(&url).into_owned();
            assert!(check(SDK_EXPECTED.as_bytes(), &text, &sdk_params()).is_err(), "url byte {i}");
            url[i] ^= 0x01;
        }
        let params = sdk_params();
        for p in 0..params.len() {
            for i in 0..params[p].1.len() {
                let mut changed = params.clone();
                let mut bytes = changed[p].1.clone().into_bytes();
                bytes[i] ^= 0x01;
                changed[p].1 = String::from_utf8_lossy(&bytes).into_owned();
                assert!(
                    check(SDK_EXPECTED.as_bytes(), SDK_URL, &changed).is_err(),
                    "param {p} {i}"
                );
            }
        }
        let mut sig = SDK_EXPECTED.as_bytes().to_vec();
        for i in 0..sig.len() {
            let original = sig[i];
            sig[i] = if original == b'A' { b'B' } else { b'A' };
            assert!(check(&sig, SDK_URL, &sdk_params()).is_err(), "signature byte {i}");
            sig[i] = original;
        }
        // A parameter added or removed.
        let mut more = sdk_params();
        more.push(("Extra".into(), String::new()));
        assert_eq!(check(SDK_EXPECTED.as_bytes(), SDK_URL, &more), Err(Rejection::Forged));
        assert_eq!(
            check(SDK_EXPECTED.as_bytes(), SDK_URL, &sdk_params()[1..]),
            Err(Rejection::Forged)
        );
        assert_eq!(verify(token, None, SDK_URL, &sdk_params()), Err(Rejection::Unsigned));
        assert_eq!(
            verify(b"54321", Some(SDK_EXPECTED.as_bytes()), SDK_URL, &sdk_params()),
            Err(Rejection::Forged)
        );
    }

    #[test]
    fn statuses_map_to_receipt_kinds() {
        let cases = [
            ("queued", None, Some(ReceiptKind::Accepted)),
            ("sending", None, Some(ReceiptKind::Accepted)),
            ("sent", None, Some(ReceiptKind::Accepted)),
            ("delivered", None, Some(ReceiptKind::Delivered)),
            ("undelivered", Some("30003"), Some(ReceiptKind::Undelivered)),
            ("failed", Some("30008"), Some(ReceiptKind::Undelivered)),
            ("undelivered", Some("30005"), Some(ReceiptKind::Bounced)),
            ("failed", Some("30006"), Some(ReceiptKind::Bounced)),
            ("read", None, Some(ReceiptKind::Opened)),
            ("receiving", None, None),
        ];
        for (status, code, expected) in cases {
            assert_eq!(kind(status, code), expected, "{status} {code:?}");
        }
    }

    #[test]
    fn parses_the_ids_from_the_query_and_the_status_from_the_form() {
        let query = form(b"n=n0001ARZ3NDEKTSV4RRFFQ69G5FAV&t=acme&a=2").unwrap();
        let params =
            form(b"MessageSid=SM0123&MessageStatus=undelivered&ErrorCode=30003&To=%2B14155550123")
                .unwrap();
        let parsed = parse(&query, &params).unwrap();
        let event = &parsed.events[0];
        assert_eq!(event.kind, ReceiptKind::Undelivered);
        assert_eq!(event.tenant.as_str(), "acme");
        assert_eq!(event.attempt, Some(Attempt(2)));
        assert_eq!(event.provider_message_id.as_deref(), Some("SM0123"));
        assert_eq!(event.detail.as_deref(), Some("error 30003"));
        assert_eq!(parse(&form(b"t=acme").unwrap(), &params), Err(Rejection::Malformed));
        let unknown = form(b"MessageStatus=receiving").unwrap();
        assert_eq!(parse(&query, &unknown).unwrap().skipped, 1);
        let many = "a=1&".repeat(PARAMS_MAX + 1);
        assert_eq!(form(many.as_bytes()), Err(Rejection::Malformed));
    }
}
