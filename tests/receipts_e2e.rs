//! Receipts end to end on the real binary: `courant dev` sends an email and an SMS through its
//! sandbox, which posts signed receipts back (SendGrid's event webhook, Twilio's status
//! callback), and both notifications end `delivered` by those receipts.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{Process, courant, free_port, http, wait_http_ok};

/// Starts `courant dev` and returns it with its API URL and the API key it printed.
fn dev() -> (Process, String, String) {
    let port = free_port();
    let mut child = courant()
        .args(["dev", "--no-demo", "--listen", &format!("127.0.0.1:{port}"), "--templates"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/templates"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn courant dev");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(key) = line.trim().strip_prefix("export COURANT_API_KEY=") {
                let _ = tx.send(key.to_owned());
            }
        }
    });
    let key = rx.recv_timeout(Duration::from_secs(30)).expect("courant dev printed no API key");
    let url = format!("http://127.0.0.1:{port}");
    wait_http_ok(&format!("{url}/healthz"), Duration::from_secs(15));
    (Process { child, name: "courant dev".into() }, url, key)
}

#[test]
fn courant_dev_ends_delivered_by_the_sandboxes_signed_receipts() {
    let (_dev, url, key) = dev();
    let submit = |body: Value| {
        let (status, answer) = http::request_with_key(
            "POST",
            &format!("{url}/v1/notifications"),
            Some(&key),
            Some(&body.to_string()),
        )
        .unwrap();
        assert_eq!(status, 202, "{answer}");
        let answer: Value = serde_json::from_str(&answer).unwrap();
        answer["id"].as_str().unwrap().to_owned()
    };
    let email = submit(json!({
        "recipient": {"id": "ada", "email": "ada@example.com"},
        "channel": "email",
        "template": "welcome",
        "data": {"name": "Ada", "product": "courant"},
    }));
    let sms = submit(json!({
        "recipient": {"id": "ada", "phone": "+14155550123"},
        "channel": "sms",
        "template": "otp",
        "data": {"code": "123456", "product": "courant"},
        "category": "otp",
    }));
    for (id, provider) in [(email, "sendgrid"), (sms, "twilio")] {
        let deadline = Instant::now() + Duration::from_secs(20);
        let view = loop {
            let (_, body) = http::request_with_key(
                "GET",
                &format!("{url}/v1/notifications/{id}"),
                Some(&key),
                None,
            )
            .unwrap();
            let view: Value = serde_json::from_str(&body).unwrap();
            if view["state"] == "delivered" {
                break view;
            }
            assert!(Instant::now() < deadline, "{id} never delivered: {view}");
            std::thread::sleep(Duration::from_millis(100));
        };
        let history = view["history"].as_array().unwrap();
        let last = history.last().unwrap();
        assert_eq!(last["to"], "delivered");
        assert_eq!(last["cause"], format!("receipt {provider}"), "{view}");
        assert!(history.iter().any(|e| e["to"] == "sent"), "{view}");
    }
}
