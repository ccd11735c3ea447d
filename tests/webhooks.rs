//! The receipt webhooks on the real binary (`courant serve`) with a real Redis: signed receipts
//! move notifications, forged, unsigned and stale ones get 401 and change nothing, duplicates
//! and out-of-order receipts are harmless, unsubscribes and spam reports change preferences.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Stack, http};
use providers::sendgrid::webhook::{self as sendgrid, SigningKey};
use providers::twilio::webhook as twilio;
use serde_json::{Value, json};

/// The test's own SendGrid signing key; the server is configured with its public half.
fn key() -> SigningKey {
    SigningKey::from_slice(&[42u8; 32]).expect("a valid scalar")
}

fn stack() -> Stack {
    let public = sendgrid::public_key(&key()).to_base64_der();
    Stack::start(&format!(
        "[providers.sendgrid.event_webhook]\npublic_key = \"{public}\"\ntolerance_s = 300\n"
    ))
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// One raw HTTP/1.1 POST with exactly these headers and body bytes; returns status and body.
fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_once('/').expect("a path");
    let mut stream = TcpStream::connect(host).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut request = format!("POST /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes).expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read");
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn view(stack: &Stack, id: &str) -> Value {
    let url = format!("{}/v1/notifications/{id}", stack.api_url);
    let (status, body) = http::request_with_key("GET", &url, Some(&stack.key), None).unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn sendgrid_event(id: &str, event: &str, extra: Value) -> Value {
    let mut value = json!({
        "email": "ada@example.com",
        "event": event,
        "timestamp": now_s(),
        "sg_message_id": "abc.filter",
        "notification_id": id,
        "tenant": "acme",
        "attempt": "1",
    });
    if let (Some(object), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
        object.extend(extra.clone());
    }
    value
}

/// Posts `events`, signed now; returns status and the answer's counts.
fn post_sendgrid(stack: &Stack, events: &[Value]) -> (u16, Value) {
    let body = serde_json::to_vec(events).unwrap();
    let timestamp = now_s();
    let signature = sendgrid::sign(&key(), timestamp, &body);
    let (status, answer) = post_signed_sendgrid(stack, &signature, &timestamp.to_string(), &body);
    (status, serde_json::from_str(&answer).unwrap_or(Value::Null))
}

fn post_signed_sendgrid(
    stack: &Stack,
    signature: &str,
    timestamp: &str,
    body: &[u8],
) -> (u16, String) {
    post(
        &format!("{}/v1/webhooks/sendgrid/sendgrid", stack.api_url),
        &[
            ("Content-Type", "application/json"),
            (sendgrid::SIGNATURE_HEADER, signature),
            (sendgrid::TIMESTAMP_HEADER, timestamp),
        ],
        body,
    )
}

fn send_email(stack: &Stack, category: &str) -> String {
    let id = stack.send_with(
        &["--recipient", "ada", "--email", "ada@example.com", "--category", category],
        "email",
        "welcome",
        r#"{"name":"Ada","product":"courant"}"#,
    );
    stack.wait_state(&id, Duration::from_secs(20), |s| s == "sent");
    id
}

#[test]
fn sendgrid_receipts_are_verified_and_never_regress_a_terminal_state() {
    let stack = stack();
    let _server = stack.serve("all", "webhooks-sendgrid");
    let id = send_email(&stack, "account");
    let history_len = view(&stack, &id)["history"].as_array().unwrap().len();

    // Forged: every byte of the signed material (timestamp and body) and of the signature
    // changed in turn, an unsigned request, a stale one. Each is 401 and changes nothing.
    let body = serde_json::to_vec(&[sendgrid_event(&id, "delivered", json!({}))]).unwrap();
    let signed_at = now_s();
    let timestamp = signed_at.to_string();
    let signature = sendgrid::sign(&key(), signed_at, &body);
    for i in 0..body.len() {
        let mut changed = body.clone();
        changed[i] ^= 0x01;
        let (status, _) = post_signed_sendgrid(&stack, &signature, &timestamp, &changed);
        assert_eq!(status, 401, "body byte {i} changed");
    }
    for i in 0..timestamp.len() {
        let mut changed = timestamp.clone().into_bytes();
        changed[i] = if changed[i] == b'9' { b'0' } else { changed[i] + 1 };
        let changed = String::from_utf8(changed).unwrap();
        let (status, _) = post_signed_sendgrid(&stack, &signature, &changed, &body);
        assert_eq!(status, 401, "timestamp byte {i} changed");
    }
    for i in 0..signature.len() {
        let mut changed = signature.clone().into_bytes();
        changed[i] = if changed[i] == b'A' { b'B' } else { b'A' };
        let changed = String::from_utf8(changed).unwrap();
        let (status, _) = post_signed_sendgrid(&stack, &changed, &timestamp, &body);
        assert_eq!(status, 401, "signature byte {i} changed");
    }
    let url = format!("{}/v1/webhooks/sendgrid/sendgrid", stack.api_url);
    assert_eq!(post(&url, &[], &body).0, 401, "unsigned");
    let stale = now_s() - 301;
    let stale_signature = sendgrid::sign(&key(), stale, &body);
    assert_eq!(post_signed_sendgrid(&stack, &stale_signature, &stale.to_string(), &body).0, 401);
    let other = SigningKey::from_slice(&[7u8; 32]).unwrap();
    let forged = sendgrid::sign(&other, now_s(), &body);
    assert_eq!(post_signed_sendgrid(&stack, &forged, &now_s().to_string(), &body).0, 401);
    let unchanged = view(&stack, &id);
    assert_eq!(unchanged["state"], "sent");
    assert_eq!(unchanged["history"].as_array().unwrap().len(), history_len);

    // An unknown provider name has no route.
    let unknown = format!("{}/v1/webhooks/sendgrid/nope", stack.api_url);
    assert_eq!(post(&unknown, &[], &body).0, 404);

    // Signed: processed and open change nothing, delivered delivers; then a bounce, a
    // duplicate delivery and a late processed are harmless.
    let (status, answer) = post_sendgrid(
        &stack,
        &[
            sendgrid_event(&id, "processed", json!({})),
            sendgrid_event(&id, "delivered", json!({})),
            sendgrid_event(&id, "open", json!({})),
        ],
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"], 1, "{answer}");
    assert_eq!(answer["recorded"], 2, "{answer}");
    assert_eq!(view(&stack, &id)["state"], "delivered");
    let (status, answer) = post_sendgrid(
        &stack,
        &[
            sendgrid_event(&id, "bounce", json!({"type": "bounce", "reason": "550 no such user"})),
            sendgrid_event(&id, "delivered", json!({})),
            sendgrid_event(&id, "delivered", json!({})),
        ],
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"], 0, "{answer}");
    assert_eq!(answer["ignored"], 3, "{answer}");
    let after = view(&stack, &id);
    assert_eq!(after["state"], "delivered");
    let history = after["history"].as_array().unwrap();
    assert_eq!(history.len(), history_len + 1, "{after}");
    assert_eq!(history.last().unwrap()["cause"], "receipt sendgrid");

    // A receipt for a notification that does not exist is counted, nothing else.
    let (status, answer) = post_sendgrid(
        &stack,
        &[sendgrid_event("n00NOSUCHNOTIFICATION00000000", "delivered", json!({}))],
    );
    assert_eq!(status, 200);
    assert_eq!(answer["not_found"], 1, "{answer}");
}

#[test]
fn a_bounce_fails_the_notification_and_the_history_says_it_bounced() {
    let stack = stack();
    let _server = stack.serve("all", "webhooks-bounce");
    let id = send_email(&stack, "account");
    // A bounce for another attempt says nothing about this one.
    let (_, answer) = post_sendgrid(
        &stack,
        &[sendgrid_event(&id, "bounce", json!({"type": "bounce", "attempt": "7"}))],
    );
    assert_eq!(answer["ignored"], 1, "{answer}");
    assert_eq!(view(&stack, &id)["state"], "sent");
    let (status, answer) = post_sendgrid(
        &stack,
        &[
            sendgrid_event(&id, "bounce", json!({"type": "bounce", "reason": "550 5.1.1 unknown"})),
            sendgrid_event(&id, "bounce", json!({"type": "bounce"})),
        ],
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"], 1, "{answer}");
    assert_eq!(answer["ignored"], 1, "{answer}");
    let done = stack.wait_state(&id, Duration::from_secs(20), |s| s == "dead_lettered");
    let history = done["history"].as_array().unwrap();
    let bounced = history
        .iter()
        .find(|entry| entry["to"] == "failed")
        .unwrap_or_else(|| panic!("no failed entry: {done}"));
    assert_eq!(bounced["cause"], "receipt sendgrid");
    assert!(bounced["note"].as_str().unwrap_or("").starts_with("bounced:"), "{bounced}");
}

#[test]
fn unsubscribes_and_spam_reports_change_the_recipients_preferences() {
    let stack = stack();
    let _server = stack.serve("all", "webhooks-prefs");
    let id = send_email(&stack, "newsletter");
    let preferences = || {
        let url = format!("{}/v1/recipients/ada/preferences", stack.api_url);
        let (status, body) = http::request_with_key("GET", &url, Some(&stack.key), None).unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()
    };
    let (status, answer) = post_sendgrid(
        &stack,
        &[
            sendgrid_event(&id, "group_unsubscribe", json!({"asm_group_id": 1})),
            sendgrid_event(&id, "unsubscribe", json!({})),
        ],
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["preferences"], 2, "{answer}");
    let prefs = preferences();
    let prefs = prefs.get("preferences").unwrap_or(&prefs);
    assert_eq!(prefs["categories"]["newsletter"]["channels"]["email"], false, "{prefs}");
    assert_ne!(prefs["unsubscribed"], true, "{prefs}");
    assert_eq!(view(&stack, &id)["state"], "sent", "an unsubscribe moves no notification");

    let (status, answer) = post_sendgrid(&stack, &[sendgrid_event(&id, "spamreport", json!({}))]);
    assert_eq!(status, 200, "{answer}");
    let prefs = preferences();
    let prefs = prefs.get("preferences").unwrap_or(&prefs);
    assert_eq!(prefs["unsubscribed"], true, "{prefs}");
}

#[test]
fn twilio_callbacks_are_verified_over_the_url_and_the_form() {
    let stack = stack();
    let _server = stack.serve("all", "webhooks-twilio");
    let id = stack.send("sms", "otp", r#"{"code":"123456","product":"courant"}"#);
    stack.wait_state(&id, Duration::from_secs(20), |s| s == "sent");
    let history_len = view(&stack, &id)["history"].as_array().unwrap().len();
    // The callback URL the message named, as the sandbox saw it.
    let message = stack
        .sandbox_messages("twilio")
        .into_iter()
        .find(|m| m["notification_id"] == id.as_str())
        .expect("the sandbox took the message");
    let callback = message["request"]["StatusCallback"].as_str().unwrap().to_owned();
    assert!(callback.contains("&t=acme&a=1"), "{callback}");
    let path = callback.strip_prefix(&stack.api_url).unwrap().to_owned();
    let form =
        "MessageSid=SM0123&MessageStatus=delivered&AccountSid=AC00000000000000000000000000000000";
    let params = twilio::form(form.as_bytes()).unwrap();
    let token = b"sandbox-twilio-token";
    let signature = twilio::signature(token, &callback, &params);
    let send = |path: &str, signature: &str, body: &[u8]| {
        post(
            &format!("{}{path}", stack.api_url),
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                (twilio::SIGNATURE_HEADER, signature),
            ],
            body,
        )
    };
    // Every byte of the URL's query, the form and the signature, changed in turn.
    let query_at = path.find('?').unwrap() + 1;
    for i in query_at..path.len() {
        let mut changed = path.clone().into_bytes();
        changed[i] = if changed[i] == b'1' { b'2' } else { b'1' };
        let changed = String::from_utf8(changed).unwrap();
        assert_eq!(send(&changed, &signature, form.as_bytes()).0, 401, "url byte {i}");
    }
    for i in 0..form.len() {
        let mut changed = form.as_bytes().to_vec();
        changed[i] = if changed[i] == b'x' { b'y' } else { b'x' };
        assert_eq!(send(&path, &signature, &changed).0, 401, "form byte {i}");
    }
    for i in 0..signature.len() {
        let mut changed = signature.clone().into_bytes();
        changed[i] = if changed[i] == b'A' { b'B' } else { b'A' };
        let changed = String::from_utf8(changed).unwrap();
        assert_eq!(send(&path, &changed, form.as_bytes()).0, 401, "signature byte {i}");
    }
    assert_eq!(post(&format!("{}{path}", stack.api_url), &[], form.as_bytes()).0, 401);
    let unchanged = view(&stack, &id);
    assert_eq!(unchanged["state"], "sent");
    assert_eq!(unchanged["history"].as_array().unwrap().len(), history_len);

    // Signed: sent changes nothing, delivered delivers, an undelivered after it and a
    // duplicate delivered are ignored.
    let sent = "MessageSid=SM0123&MessageStatus=sent";
    let sent_signature =
        twilio::signature(token, &callback, &twilio::form(sent.as_bytes()).unwrap());
    let (status, answer) = send(&path, &sent_signature, sent.as_bytes());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(view(&stack, &id)["state"], "sent");
    let (status, answer) = send(&path, &signature, form.as_bytes());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(view(&stack, &id)["state"], "delivered");
    let late = "MessageSid=SM0123&MessageStatus=undelivered&ErrorCode=30003";
    let late_signature =
        twilio::signature(token, &callback, &twilio::form(late.as_bytes()).unwrap());
    assert_eq!(send(&path, &late_signature, late.as_bytes()).0, 200);
    assert_eq!(send(&path, &signature, form.as_bytes()).0, 200);
    let after = view(&stack, &id);
    assert_eq!(after["state"], "delivered");
    assert_eq!(after["history"].as_array().unwrap().len(), history_len + 1);
}

const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:courant-ses";

fn ses_event(id: &str, event_type: &str, extra: Value) -> String {
    let mut event = json!({
        "eventType": event_type,
        "mail": {
            "messageId": "0100018b-ses",
            "destination": ["ada@example.com"],
            "tags": {"notification_id": [id], "tenant": ["acme"], "attempt": ["1"]}
        }
    });
    if let (Some(object), Some(extra)) = (event.as_object_mut(), extra.as_object()) {
        object.extend(extra.clone());
    }
    event.to_string()
}

/// SES receipts arrive through SNS. The SES provider itself is built on another branch, so the
/// SNS subscription here is configured for the stack's email provider (`sendgrid`): the receipts
/// are about the notifications it sent, which is all the route needs.
#[test]
fn ses_events_through_sns_are_verified_and_applied() {
    use providers::sandbox::sns::{SnsSigner, to_json};
    let signer = SnsSigner::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("sns.pem");
    std::fs::write(&cert, signer.cert_pem()).unwrap();
    let stack = Stack::start(&format!(
        "[webhooks.ses.sendgrid]\ntopic_arns = [\"{TOPIC}\"]\ncertificate_pem_file = \"{}\"\n",
        cert.display()
    ));
    let _server = stack.serve("all", "webhooks-ses");
    let id = send_email(&stack, "account");
    let history_len = view(&stack, &id)["history"].as_array().unwrap().len();
    let url = format!("{}/v1/webhooks/ses/sendgrid", stack.api_url);
    let now = || humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let send = |body: &Value| {
        let (status, answer) = post(
            &url,
            &[("Content-Type", "text/plain; charset=UTF-8")],
            body.to_string().as_bytes(),
        );
        (status, serde_json::from_str::<Value>(&answer).unwrap_or(Value::Null))
    };

    // Forged: a changed message, another topic, a stale one, no signature.
    let delivered =
        signer.notification(TOPIC, "m1", &ses_event(&id, "Delivery", json!({})), &now()).unwrap();
    let mut changed = delivered.clone();
    changed["Message"] = ses_event(&id, "Delivery", json!({"x": 1})).into();
    assert_eq!(send(&changed).0, 401);
    let other_topic = "arn:aws:sns:us-east-1:123456789012:someone-else";
    let other = signer
        .notification(other_topic, "m1", &ses_event(&id, "Delivery", json!({})), &now())
        .unwrap();
    assert_eq!(send(&other).0, 401);
    let stale = signer
        .notification(
            TOPIC,
            "m1",
            &ses_event(&id, "Delivery", json!({})),
            "2020-01-01T00:00:00.000Z",
        )
        .unwrap();
    assert_eq!(send(&stale).0, 401);
    let mut unsigned = delivered.clone();
    unsigned["Signature"] = "".into();
    assert_eq!(send(&unsigned).0, 401);
    assert_eq!(send(&json!({"hello": "world"})).0, 401);
    let unchanged = view(&stack, &id);
    assert_eq!(unchanged["state"], "sent");
    assert_eq!(unchanged["history"].as_array().unwrap().len(), history_len);

    // Signed: Send changes nothing, Delivery delivers, a Permanent bounce after it is ignored.
    let sent =
        signer.notification(TOPIC, "m0", &ses_event(&id, "Send", json!({})), &now()).unwrap();
    let (status, answer) = send(&sent);
    assert_eq!((status, &answer["recorded"]), (200, &json!(1)), "{answer}");
    let (status, answer) = send(&delivered);
    assert_eq!((status, &answer["applied"]), (200, &json!(1)), "{answer}");
    assert_eq!(view(&stack, &id)["state"], "delivered");
    let bounce = json!({"bounce": {"bounceType": "Permanent", "bounceSubType": "General"}});
    let bounced =
        signer.notification(TOPIC, "m2", &ses_event(&id, "Bounce", bounce), &now()).unwrap();
    let (status, answer) = send(&bounced);
    assert_eq!((status, &answer["ignored"]), (200, &json!(1)), "{answer}");
    assert_eq!(view(&stack, &id)["state"], "delivered");

    // A complaint unsubscribes the recipient.
    let complaint =
        signer.notification(TOPIC, "m3", &ses_event(&id, "Complaint", json!({})), &now()).unwrap();
    assert_eq!(send(&complaint).0, 200);
    let prefs_url = format!("{}/v1/recipients/ada/preferences", stack.api_url);
    let (_, prefs) = http::request_with_key("GET", &prefs_url, Some(&stack.key), None).unwrap();
    let prefs: Value = serde_json::from_str(&prefs).unwrap();
    let prefs = prefs.get("preferences").unwrap_or(&prefs);
    assert_eq!(prefs["unsubscribed"], true, "{prefs}");

    // A signed confirmation whose SubscribeURL is not an SNS host is not visited.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let subscribe = format!("http://{}/confirm", listener.local_addr().unwrap());
    let mut confirmation = providers::sns::SnsMessage {
        kind: "SubscriptionConfirmation".into(),
        message_id: "m4".into(),
        token: Some("token".into()),
        topic_arn: TOPIC.into(),
        subject: None,
        message: "You have chosen to subscribe to the topic.".into(),
        timestamp: now(),
        signature_version: String::new(),
        signature: String::new(),
        signing_cert_url: "https://sns.us-east-1.amazonaws.com/x.pem".into(),
        subscribe_url: Some(subscribe),
        unsubscribe_url: None,
    };
    signer.sign(&mut confirmation).unwrap();
    let (status, answer) = send(&to_json(&confirmation));
    assert_eq!((status, &answer["confirmed"]), (200, &json!(false)), "{answer}");
    assert!(listener.accept().is_err(), "the subscribe URL was visited");
}

#[test]
fn vonage_receipts_are_verified_and_applied() {
    use providers::vonage::{SignatureMethod, sign};
    let secret = "vonage-signature-secret";
    let stack = Stack::start(&format!(
        "[providers.vonage]\nkind = \"vonage\"\nbase_url = \"{{sandbox_url}}\"\n\
         api_key = \"sandbox1\"\napi_secret = \"sandbox-vonage-secret\"\nfrom = \"courant\"\n\
         callback_base_url = \"http://127.0.0.1:1\"\nsignature_secret = \"{secret}\"\n\
         signature_method = \"sha256\"\n[policy.routes]\nsms = [\"vonage\"]\n"
    ));
    let _server = stack.serve("all", "webhooks-vonage");
    let id = stack.send("sms", "otp", r#"{"code":"123456","product":"courant"}"#);
    stack.wait_state(&id, Duration::from_secs(20), |s| s == "sent");
    let history_len = view(&stack, &id)["history"].as_array().unwrap().len();
    let url = format!("{}/v1/webhooks/vonage/vonage/acme/{id}", stack.api_url);
    let receipt = |status: &str, timestamp: u64| -> Vec<(String, String)> {
        let mut fields: Vec<(String, String)> = [
            ("msisdn", "14155550123"),
            ("to", "courant"),
            ("messageId", "0A0000000123ABCD1"),
            ("status", status),
            ("err-code", "0"),
            ("client-ref", id.as_str()),
            ("message-timestamp", "2026-11-22 08:00:00"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        fields.push(("timestamp".into(), timestamp.to_string()));
        let pairs: Vec<(&str, &str)> =
            fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let sig = sign(&pairs, secret, SignatureMethod::Sha256);
        fields.push(("sig".into(), sig));
        fields
    };
    let form = |fields: &[(String, String)]| -> String {
        url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish()
    };
    let headers = [("Content-Type", "application/x-www-form-urlencoded")];
    // Forged (another secret), unsigned, stale and tampered receipts: 401, nothing changes.
    let mut forged = receipt("delivered", now_s());
    forged.last_mut().unwrap().1 = "0".repeat(64);
    let unsigned: Vec<(String, String)> =
        receipt("delivered", now_s()).into_iter().filter(|(k, _)| k != "sig").collect();
    let stale = receipt("delivered", now_s() - 3_600);
    let mut tampered = receipt("delivered", now_s());
    tampered[3].1 = "failed".into();
    for (what, fields) in
        [("forged", forged), ("unsigned", unsigned), ("stale", stale), ("tampered", tampered)]
    {
        let (status, body) = post(&url, &headers, form(&fields).as_bytes());
        assert_eq!(status, 401, "{what}: {body}");
    }
    assert_eq!(view(&stack, &id)["state"], "sent");
    assert_eq!(view(&stack, &id)["history"].as_array().unwrap().len(), history_len);
    // Another provider's name has no route; a signed receipt for the wrong notification is
    // refused before anything is applied.
    let (status, _) = post(
        &format!("{}/v1/webhooks/vonage/nosuch/acme/{id}", stack.api_url),
        &headers,
        form(&receipt("delivered", now_s())).as_bytes(),
    );
    assert_eq!(status, 404);
    // Signed: delivered, as a form POST and again as a GET (a duplicate changes nothing).
    let good = receipt("delivered", now_s());
    let (status, body) = post(&url, &headers, form(&good).as_bytes());
    assert_eq!(status, 200, "{body}");
    assert_eq!(view(&stack, &id)["state"], "delivered");
    let get_url = format!("{url}?{}", form(&good));
    let (status, body) = http::request("GET", &get_url, None).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(view(&stack, &id)["state"], "delivered");
    // A late failure does not undo the delivery.
    let (status, _) = post(&url, &headers, form(&receipt("failed", now_s())).as_bytes());
    assert_eq!(status, 200);
    assert_eq!(view(&stack, &id)["state"], "delivered");
}
