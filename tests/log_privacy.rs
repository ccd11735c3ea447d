//! No personal data or secret in any log line (issue 7): an end-to-end run of the real binary on
//! Redis, with debug logs in JSON, through every path that handles an address, a token or a
//! credential (submit, the directory, devices, templates, provider calls that succeed and fail,
//! fallback, retries, the dead-letter queue, the CLI). Then every line of the server's and the
//! sandbox's logs is scanned for each of them.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Process, Stack, courant, stderr, wait_http_ok};

/// What must never appear in a log line.
const EMAIL: &str = "private.person@example.org";
const PHONE: &str = "+14155550188";
const FALLBACK_PHONE: &str = "+15005550001";
const DEVICE_TOKEN: &str = "fcm-device-token-0123456789abcdefSECRET";
const SENDGRID_KEY: &str = "sandbox-sendgrid-key";
const TWILIO_TOKEN: &str = "sandbox-twilio-token";

#[test]
fn no_address_token_or_secret_in_any_log_line() {
    let config = "[policy.retry.email]\nattempts_max = 2\ndelay_ms_base = 100\nfactor = 2.0\n\
                  delay_ms_max = 200\njitter = false\nttl_ms = 600000\n";
    let stack = Stack::start(config);
    let log = stack.dir.path().join("server.log");
    let _server = Process {
        child: courant()
            .args(["--log-format", "json", "serve", "--role", "all", "--config"])
            .arg(&stack.config)
            .env("COURANT_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn serve"),
        name: "serve".into(),
    };
    wait_http_ok(&format!("{}/healthz", stack.api_url), Duration::from_secs(15));
    let timeout = Duration::from_secs(20);
    let data = r#"{"name":"Private Person","product":"courant"}"#;

    // The directory: a profile with both addresses and a device.
    let profile = format!(r#"{{"email":"{EMAIL}","phone":"{PHONE}","time_zone":"Europe/Paris"}}"#);
    let (status, body) = stack.call("PUT", "/v1/recipients/private", &profile);
    assert_eq!(status, 201, "{body}");
    let device = format!(r#"{{"platform":"android","token":"{DEVICE_TOKEN}"}}"#);
    let (status, body) = stack.call("POST", "/v1/recipients/private/devices", &device);
    assert!((200..300).contains(&status), "{status} {body}");
    // Sends by stored and inline addresses, on both HTTP providers.
    let sms = stack.send_with(
        &["--recipient", "private"],
        "sms",
        "otp",
        r#"{"code":"123456","product":"courant"}"#,
    );
    let email = stack.send_with(&["--recipient", "p2", "--email", EMAIL], "email", "welcome", data);
    for id in [&sms, &email] {
        stack.wait_state(id, timeout, |s| s == "sent");
    }
    // A provider refusal that names the number, then the fallback to email.
    let fallback = stack.send_with(
        &["--recipient", "p3", "--phone", FALLBACK_PHONE, "--email", EMAIL],
        "sms",
        "welcome",
        data,
    );
    stack.wait_state(&fallback, timeout, |s| s == "sent");
    // A bad address at submit: the error must not echo it into the logs either.
    let (status, _) = stack.call(
        "POST",
        "/v1/notifications",
        r#"{"recipient":{"id":"p4","email":"not-an-address@"},"channel":"email","template":"welcome","data":{}}"#,
    );
    assert_eq!(status, 400);
    // Retries and a dead letter, then the CLI's views of it.
    stack.sandbox_behaviour("sendgrid", r#"{"latency_ms": 1, "server_error_rate": 1.0}"#);
    let dead = stack.send_with(&["--recipient", "p5", "--email", EMAIL], "email", "welcome", data);
    stack.wait_state(&dead, timeout, |s| s == "dead_lettered");
    for args in [["explain", dead.as_str()], ["history", dead.as_str()]] {
        let output = stack.cli(&args);
        assert!(output.status.success(), "{}", stderr(&output));
    }
    let output = stack.cli(&["dlq", "list"]);
    assert!(output.status.success(), "{}", stderr(&output));

    let text = std::fs::read_to_string(&log).expect("the server log");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() > 20, "too few log lines to mean anything: {}", lines.len());
    let secrets = [
        EMAIL,
        PHONE,
        FALLBACK_PHONE,
        "15005550001",
        DEVICE_TOKEN,
        SENDGRID_KEY,
        TWILIO_TOKEN,
        &stack.key,
    ];
    let mut with_id = 0;
    for line in &lines {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
        for secret in secrets {
            assert!(!line.contains(secret), "a log line holds '{secret}': {line}");
        }
        let mentions = [&sms, &email, &fallback, &dead].iter().any(|id| line.contains(id.as_str()));
        if mentions {
            with_id += 1;
            assert!(value.is_object());
        }
    }
    assert!(with_id > 0, "no log line names a notification: the scan would prove nothing");
    // The API key prefix is not secret, but the key is: nothing after its id part.
    let key_secret = stack.key.rsplit('_').next().expect("key secret");
    assert!(!text.contains(key_secret));
    eprintln!("scanned {} log lines, {with_id} naming a notification", lines.len());
}
