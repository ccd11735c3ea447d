//! End to end: the real binary (`courant serve`, `courant sandbox`, the ops CLI) against a Redis
//! this test run starts itself.

mod common;

use std::time::{Duration, Instant};

use common::{Stack, courant, free_port, stderr};

fn is_final(state: &str) -> bool {
    matches!(state, "sent" | "delivered" | "dead_lettered" | "skipped" | "cancelled")
}

#[test]
fn notifications_reach_sent_and_delivered_and_history_shows_every_transition() {
    let stack = Stack::start("");
    let _serve = stack.serve("all", "e2e-host");
    let email = stack.send("email", "welcome", r#"{"name":"Ada","product":"courant"}"#);
    let sms = stack.send("sms", "otp", r#"{"code":"123456","product":"courant"}"#);
    let in_app = stack.send("in_app", "order_shipped", r#"{"name":"Ada","order_id":"A-1"}"#);

    let view = stack.wait_state(&email, Duration::from_secs(15), |s| s == "sent");
    assert_eq!(view["provider"], "sendgrid");
    let view = stack.wait_state(&sms, Duration::from_secs(15), |s| s == "sent");
    assert_eq!(view["provider"], "twilio");
    stack.wait_state(&in_app, Duration::from_secs(15), |s| s == "delivered");

    // The delivered notification's history, as a table for people...
    let output = stack.cli(&["history", &in_app]);
    assert!(output.status.success(), "{}", stderr(&output));
    let table = String::from_utf8(output.stdout).unwrap();
    for expected in [
        "→ received",
        "received → filtered",
        "filtered → rendered",
        "rendered → rate_checked",
        "rate_checked → sending",
        "sending → delivered",
        "api submit",
        "provider inapp",
    ] {
        assert!(table.contains(expected), "history lacks {expected:?}:\n{table}");
    }
    // ...and as JSON, every entry with a time and a cause.
    let history = stack.cli_json(&["history", &in_app]);
    let entries = history["history"].as_array().unwrap();
    assert_eq!(entries.len(), 6);
    for entry in entries {
        assert!(entry["at"].as_str().unwrap().ends_with('Z'), "{entry}");
        assert!(!entry["cause"].as_str().unwrap().is_empty(), "{entry}");
    }

    // The sandbox saw exactly one SendGrid and one Twilio request.
    let stats = stack.sandbox_stats();
    assert_eq!(stats["sendgrid"]["accepted"], 1, "{stats}");
    assert_eq!(stats["twilio"]["accepted"], 1, "{stats}");

    // The in-app inbox holds the message.
    let list = stack.cli_json(&["list", "--state", "delivered"]);
    let ids: Vec<&str> =
        list["notifications"].as_array().unwrap().iter().filter_map(|n| n["id"].as_str()).collect();
    assert_eq!(ids, vec![in_app.as_str()]);
}

#[test]
fn exhausted_retries_dead_letter_after_exactly_the_policy_attempts() {
    let policy = r#"
[policy.retry.sms]
attempts_max = 3
delay_ms_base = 100
factor = 2.0
delay_ms_max = 400
jitter = true
ttl_ms = 60000
"#;
    let stack = Stack::start(policy);
    stack.sandbox_behaviour("twilio", r#"{"latency_ms": 1, "server_error_rate": 1.0}"#);
    let _serve = stack.serve("all", "e2e-host");
    // No email address, so no fallback: the SMS has nowhere else to go.
    let id = stack.send_with(
        &["--recipient", "bob", "--phone", "+14155550123"],
        "sms",
        "otp",
        r#"{"code":"1","product":"courant"}"#,
    );
    let view = stack.wait_state(&id, Duration::from_secs(20), |s| s == "dead_lettered");
    assert_eq!(view["attempt"], 3);
    // Business failures are retried by our policy only: exactly three provider calls, never
    // apalis-redis's 25-attempt loop.
    std::thread::sleep(Duration::from_millis(1_500));
    let stats = stack.sandbox_stats();
    assert_eq!(stats["twilio"]["received"], 3, "{stats}");

    let dlq = stack.cli_json(&["dlq", "list"]);
    let items = dlq["notifications"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], id.as_str());
    let output = stack.cli(&["dlq", "list"]);
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(table.contains(&id) && table.contains("all 3 attempts used"), "{table}");

    let history = stack.cli_json(&["history", &id]);
    let deferred =
        history["history"].as_array().unwrap().iter().filter(|e| e["to"] == "deferred").count();
    assert_eq!(deferred, 2, "two retries were scheduled");
    let table = String::from_utf8(stack.cli(&["history", &id]).stdout).unwrap();
    assert!(table.contains("no usable fallback from sms"), "{table}");
}

#[test]
fn exhausted_sms_falls_back_to_email_delivered_exactly_once_and_delivered_sms_never_does() {
    let policy = r#"
[policy.retry.sms]
attempts_max = 2
delay_ms_base = 100
factor = 2.0
delay_ms_max = 200
jitter = true
ttl_ms = 60000
"#;
    let stack = Stack::start(policy);
    stack.sandbox_behaviour("twilio", r#"{"latency_ms": 1, "server_error_rate": 1.0}"#);
    let _serve = stack.serve("all", "e2e-host");
    let id = stack.send("sms", "otp", r#"{"code":"1","product":"courant"}"#);
    let view = stack.wait_state(&id, Duration::from_secs(20), |s| s == "sent");
    assert_eq!(view["channel"], "email");
    assert_eq!(view["provider"], "sendgrid");
    std::thread::sleep(Duration::from_millis(1_000));
    let stats = stack.sandbox_stats();
    assert_eq!(stats["twilio"]["received"], 2, "{stats}");
    assert_eq!(stats["sendgrid"]["received"], 1, "exactly one email: {stats}");
    let table = String::from_utf8(stack.cli(&["history", &id]).stdout).unwrap();
    assert!(
        table.contains("failed → filtered") && table.contains("falling back to email"),
        "{table}"
    );

    // Once SMS works, an SMS that reaches the provider never becomes an email too.
    stack.sandbox_behaviour("twilio", r#"{"latency_ms": 1}"#);
    let id = stack.send_to("carol", "sms", "otp", r#"{"code":"2","product":"courant"}"#);
    let view = stack.wait_state(&id, Duration::from_secs(20), |s| s == "sent");
    assert_eq!(view["channel"], "sms");
    std::thread::sleep(Duration::from_millis(500));
    let stats = stack.sandbox_stats();
    assert_eq!(stats["sendgrid"]["received"], 1, "no second email: {stats}");
}

#[test]
fn a_killed_workers_wake_ups_are_rerun_by_another_worker_and_none_is_lost() {
    // A short lease and quick email retries, so a send cut off by the kill is reconciled and
    // re-sent within the test's time.
    let policy = r#"
[policy]
send_lease_ms = 5000
reconcile_grace_ms = 500
[policy.retry.email]
attempts_max = 5
delay_ms_base = 200
factor = 2.0
delay_ms_max = 1000
jitter = true
ttl_ms = 600000
"#;
    let stack = Stack::start(policy);
    // Slow sends, so the worker dies with work in flight.
    stack.sandbox_behaviour("sendgrid", r#"{"latency_ms": 3000}"#);
    let _api = stack.serve("api", "host-a");
    let mut worker_a = stack.serve("worker", "host-a");
    let ids: Vec<String> = (0..30)
        .map(|i| {
            let data = format!(r#"{{"name":"n{i}","product":"p"}}"#);
            stack.send_to(&format!("user{i}"), "email", "welcome", &data)
        })
        .collect();
    // Let worker A take work, then kill it without warning, mid-send.
    std::thread::sleep(Duration::from_millis(1_000));
    worker_a.kill9();
    stack.sandbox_behaviour("sendgrid", r#"{"latency_ms": 5}"#);
    let killed_at = Instant::now();
    let _worker_b = stack.serve("worker", "host-b");
    for id in &ids {
        let view = stack.wait_state(id, Duration::from_secs(30), is_final);
        assert_eq!(view["state"], "sent", "{id}: {view}");
    }
    let took = killed_at.elapsed();
    assert!(took < Duration::from_secs(20), "recovery took {took:?}");
    // Every notification was sent; any second send is one whose first outcome was unknown.
    let stats = stack.sandbox_stats();
    let accepted = stats["sendgrid"]["received"].as_u64().unwrap();
    let mut flagged = 0;
    for id in &ids {
        let history = stack.cli_json(&["history", id]);
        flagged +=
            history["history"].as_array().unwrap().iter().filter(|e| e["to"] == "unknown").count()
                as u64;
    }
    assert!(flagged > 0, "the kill should have cut sends off mid-call");
    assert!(accepted >= 30 && accepted <= 30 + flagged, "{accepted} sends, {flagged} flagged");
}

#[test]
fn a_worker_restarted_at_once_under_the_same_host_works() {
    let stack = Stack::start("");
    let _api = stack.serve("api", "same-host");
    let mut worker = stack.serve("worker", "same-host");
    let first = stack.send("in_app", "order_shipped", r#"{"name":"A","order_id":"1"}"#);
    stack.wait_state(&first, Duration::from_secs(15), |s| s == "delivered");
    worker.kill9();
    let _again = stack.serve("worker", "same-host");
    let started = Instant::now();
    let second = stack.send("in_app", "order_shipped", r#"{"name":"B","order_id":"2"}"#);
    stack.wait_state(&second, Duration::from_secs(15), |s| s == "delivered");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[test]
fn sigterm_finishes_in_flight_work_and_loses_nothing() {
    let stack = Stack::start("");
    stack.sandbox_behaviour("sendgrid", r#"{"latency_ms": 700}"#);
    let mut serve = stack.serve("all", "e2e-host");
    let ids: Vec<String> = (0..10)
        .map(|i| {
            let data = format!(r#"{{"name":"n{i}","product":"p"}}"#);
            stack.send_to(&format!("user{i}"), "email", "welcome", &data)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    assert!(serve.terminate(Duration::from_secs(30)), "serve exits cleanly on SIGTERM");
    // Nothing was left half-sent: a record in `sending` would mean a send was cut off.
    let _again = stack.serve("all", "e2e-host");
    for id in &ids {
        let view = stack.cli_json(&["status", id]);
        assert_ne!(view["state"], "sending", "{id} was cut off mid-send");
    }
    for id in &ids {
        let view = stack.wait_state(id, Duration::from_secs(20), is_final);
        assert_eq!(view["state"], "sent");
        let history = stack.cli_json(&["history", id]);
        let unknown = history["history"].as_array().unwrap().iter().any(|e| e["to"] == "unknown");
        assert!(!unknown, "{id}: a graceful stop must not leave unknown outcomes");
    }
}

#[test]
fn a_dropped_redis_connection_does_not_stop_the_workers() {
    let stack = Stack::start("");
    let _serve = stack.serve("all", "e2e-host");
    let first = stack.send("in_app", "order_shipped", r#"{"name":"A","order_id":"1"}"#);
    stack.wait_state(&first, Duration::from_secs(15), |s| s == "delivered");
    // Drop every client connection, the workers' blocking reader included.
    let output = std::process::Command::new("redis-cli")
        .args(["-p", &stack.redis.port().to_string(), "CLIENT", "KILL", "TYPE", "normal"])
        .output()
        .expect("redis-cli");
    assert!(output.status.success(), "{}", stderr(&output));
    std::thread::sleep(Duration::from_millis(500));
    let second = stack.send("in_app", "order_shipped", r#"{"name":"B","order_id":"2"}"#);
    stack.wait_state(&second, Duration::from_secs(15), |s| s == "delivered");
}

#[test]
fn serve_explains_an_unreachable_redis() {
    let port = free_port();
    let output = courant()
        .args(["serve", "--redis", &format!("redis://127.0.0.1:{port}")])
        .output()
        .expect("run serve");
    assert!(!output.status.success());
    let text = stderr(&output);
    assert!(text.contains("Redis") && text.contains("--redis"), "{text}");
}

#[test]
fn cli_reports_not_found_and_missing_keys_with_exit_codes() {
    let stack = Stack::start("");
    let _serve = stack.serve("api", "e2e-host");
    let output = stack.cli(&["status", "n00doesnotexist"]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let output = courant()
        .args(["status", "x"])
        .env("COURANT_SERVER", &stack.api_url)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("COURANT_API_KEY"));
}

#[test]
fn a_failing_provider_trips_its_breaker_which_answers_fast_and_shows_in_the_cli() {
    let config = r#"
[breaker]
consecutive_failures = 2
open_ms = 60000

[policy.retry.sms]
attempts_max = 5
delay_ms_base = 100
factor = 2.0
delay_ms_max = 200
jitter = false
ttl_ms = 600000
"#;
    let stack = Stack::start(config);
    stack.sandbox_behaviour("twilio", r#"{"latency_ms": 1, "server_error_rate": 1.0}"#);
    // An API process and a worker process: the breaker lives in the worker, and the API shows
    // it from the worker's heartbeat.
    let _api = stack.serve("api", "e2e-api-host");
    let _worker = stack.serve("worker", "e2e-worker-host");
    let id = stack.send_with(
        &["--recipient", "bob", "--phone", "+14155550123"],
        "sms",
        "otp",
        r#"{"code":"1","product":"courant"}"#,
    );
    let started = Instant::now();
    loop {
        let table = String::from_utf8(stack.cli(&["history", &id]).stdout).unwrap();
        if table.contains("circuit breaker of twilio is open") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "the breaker never opened:\n{table}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Two real calls opened it; the third attempt was refused without reaching the provider and
    // waits for the probe instead of using up its attempts.
    let stats = stack.sandbox_stats();
    assert_eq!(stats["twilio"]["received"], 2, "{stats}");
    let view = stack.cli_json(&["status", &id]);
    assert_eq!(view["state"], "deferred");
    assert_eq!(view["attempt"], 3);
    // The worker reports it with its next heartbeat (every 5 s).
    let twilio = loop {
        let breakers = stack.cli_json(&["breakers"]);
        let twilio = breakers["breakers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["provider"] == "twilio")
            .cloned();
        if let Some(twilio) = twilio.filter(|t| t["state"] == "open") {
            break twilio;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "not reported open: {breakers}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(twilio["opened"], 1, "{twilio}");
    assert_eq!(twilio["host"], "e2e-worker-host", "{twilio}");
    // Both calls that reached Twilio failed: a failure rate of 1 over 2 calls, 2 in a row.
    assert_eq!(twilio["failure_rate"], 1.0, "{twilio}");
    assert_eq!((twilio["recent_calls"].as_u64(), twilio["calls"].as_u64()), (Some(2), Some(2)));
    assert_eq!(twilio["consecutive_failures"], 2, "{twilio}");
    assert!(twilio["rejected"].as_u64() >= Some(1), "the third attempt was refused: {twilio}");
    let table = String::from_utf8(stack.cli(&["breakers"]).stdout).unwrap();
    assert!(table.contains("twilio") && table.contains("open"), "{table}");
    assert!(table.contains("100%") && table.contains("e2e-worker-host"), "{table}");
}

/// Issue 4, item 7: `courant dlq replay --yes` delivers every replayed notification exactly once.
/// Both sandbox providers fail every send, so SMS falls back to email and both dead-letter; a
/// replay without `--yes` changes nothing; with the providers back, `--yes` re-drives each one
/// through the normal lifecycle (SMS from SMS again) and the sandbox takes exactly one message
/// per notification; a second replay touches nothing. Then `dlq purge` removes dead letters.
#[test]
fn dlq_replay_yes_delivers_every_dead_letter_exactly_once_and_purge_removes_them() {
    let config = r#"
[breaker]
consecutive_failures = 1000
open_ms = 60000

[policy.retry.sms]
attempts_max = 2
delay_ms_base = 100
factor = 2.0
delay_ms_max = 200
jitter = false
ttl_ms = 60000

[policy.retry.email]
attempts_max = 2
delay_ms_base = 100
factor = 2.0
delay_ms_max = 200
jitter = false
ttl_ms = 60000
"#;
    let stack = Stack::start(config);
    let failing = r#"{"latency_ms": 1, "server_error_rate": 1.0}"#;
    stack.sandbox_behaviour("twilio", failing);
    stack.sandbox_behaviour("sendgrid", failing);
    let _serve = stack.serve("all", "e2e-host");
    let mut sms = Vec::new();
    let mut ids = Vec::new();
    for i in 0..12 {
        let data = format!(r#"{{"code":"{i}","name":"n{i}","product":"courant"}}"#);
        let (channel, template) = if i % 2 == 0 { ("sms", "otp") } else { ("email", "welcome") };
        let id = stack.send_to(&format!("dlq{i}"), channel, template, &data);
        if channel == "sms" {
            sms.push(id.clone());
        }
        ids.push(id);
    }
    for id in &ids {
        let view = stack.wait_state(id, Duration::from_secs(30), is_final);
        assert_eq!(view["state"], "dead_lettered", "{id}: {view}");
        // SMS fell back to email, which failed too.
        assert_eq!(view["channel"], "email", "{id}: {view}");
    }
    let list = stack.cli_json(&["dlq", "list", "--channel", "email", "--newer-than", "1h"]);
    assert_eq!(list["notifications"].as_array().unwrap().len(), 12, "{list}");
    let plan = stack.cli_json(&["dlq", "plan"]);
    assert_eq!((plan["matched"].as_u64(), plan["replay"].as_u64()), (Some(12), Some(12)), "{plan}");
    assert_eq!(plan["maybe_delivered"], 0, "{plan}");
    assert_eq!(plan["by_channel"]["email"], 12, "{plan}");
    assert_eq!(plan["by_provider"]["sendgrid"], 12, "{plan}");
    let table = String::from_utf8(stack.cli(&["dlq", "plan"]).stdout).unwrap();
    assert!(table.contains("MATCHED") && table.contains("sendgrid"), "{table}");
    assert!(
        stack.sandbox_messages("sendgrid").is_empty()
            && stack.sandbox_messages("twilio").is_empty()
    );

    // Without --yes: a dry run that says so and changes nothing.
    let received_before = stack.sandbox_stats();
    let output = stack.cli(&["dlq", "replay"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("dry run: nothing changed; re-run with --yes"),
        "{}",
        stderr(&output)
    );
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(table.contains("would_replay") && table.contains("would replay 12"), "{table}");
    let dry = stack.cli_json(&["dlq", "replay"]);
    assert_eq!((dry["dry_run"].as_bool(), dry["replay"].as_u64()), (Some(true), Some(12)));
    std::thread::sleep(Duration::from_millis(500));
    for id in &ids {
        assert_eq!(stack.cli_json(&["status", id])["state"], "dead_lettered", "{id}");
    }
    assert_eq!(stack.sandbox_stats(), received_before, "a dry run sent nothing");

    // The providers recover; the replay re-drives every one at 50 per second.
    let healthy = r#"{"latency_ms": 1}"#;
    stack.sandbox_behaviour("twilio", healthy);
    stack.sandbox_behaviour("sendgrid", healthy);
    let done = stack.cli_json(&["dlq", "replay", "--yes", "--rate", "50"]);
    assert_eq!((done["dry_run"].as_bool(), done["replay"].as_u64()), (Some(false), Some(12)));
    assert_eq!(done["skipped"], 0, "{done}");
    for id in &ids {
        let view = stack.wait_state(id, Duration::from_secs(30), is_final);
        assert_eq!(view["state"], "sent", "{id}: {view}");
        // On the original channel again: attempts from 1, no fallback needed.
        let channel = if sms.contains(id) { "sms" } else { "email" };
        assert_eq!(view["channel"], channel, "{id}: {view}");
        assert_eq!(view["attempt"], 1, "{id}: {view}");
        assert_eq!(view["replay"]["count"], 1, "{id}: {view}");
        assert_eq!(view["replay"]["possible_duplicate"], false, "{id}: {view}");
    }
    let history = String::from_utf8(stack.cli(&["history", &sms[0]]).stdout).unwrap();
    assert!(
        history.contains("dead_lettered → received") && history.contains("operator dlq replay"),
        "{history}"
    );

    // Exactly one message per notification reached the providers, on one channel.
    std::thread::sleep(Duration::from_millis(1_000));
    let mut taken: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
    let (sendgrid, twilio) = (stack.sandbox_messages("sendgrid"), stack.sandbox_messages("twilio"));
    for (provider, messages) in [("sendgrid", &sendgrid), ("twilio", &twilio)] {
        for message in messages {
            assert_eq!(message["answered"], true, "{message}");
            let id =
                message["notification_id"].as_str().expect("the message names its notification");
            taken.entry(id.to_owned()).or_default().push(provider);
        }
    }
    for id in &ids {
        let expected = if sms.contains(id) { vec!["twilio"] } else { vec!["sendgrid"] };
        assert_eq!(taken.get(id), Some(&expected), "{id}: {taken:?}");
    }
    assert_eq!(taken.len(), ids.len(), "{taken:?}");

    // A second replay touches nothing.
    let again = stack.cli_json(&["dlq", "replay", "--yes"]);
    assert_eq!(
        (again["replay"].as_u64(), again["items"].as_array().map(Vec::len)),
        (Some(0), Some(0))
    );
    let stats = stack.sandbox_stats();
    assert_eq!(
        stats["sendgrid"]["accepted"].as_u64().unwrap()
            + stats["twilio"]["accepted"].as_u64().unwrap(),
        12,
        "{stats}"
    );
    // By id, a notification that is no longer dead-lettered is skipped with its state.
    let one = stack.cli_json(&["dlq", "replay", &ids[1], "--yes"]);
    assert_eq!(one["items"][0]["skip_reason"], "not_dead_lettered", "{one}");
    assert_eq!(one["items"][0]["state"], "sent", "{one}");

    // Purge: new dead letters, one by id and the rest by filter, dry run first.
    stack.sandbox_behaviour("sendgrid", failing);
    let doomed: Vec<String> = (0..3)
        .map(|i| {
            let data = format!(r#"{{"name":"p{i}","product":"courant"}}"#);
            stack.send_to(&format!("purge{i}"), "email", "welcome", &data)
        })
        .collect();
    for id in &doomed {
        let view = stack.wait_state(id, Duration::from_secs(30), is_final);
        assert_eq!(view["state"], "dead_lettered", "{id}: {view}");
    }
    let output = stack.cli(&["dlq", "purge", "--channel", "email"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("dry run: nothing changed"), "{}", stderr(&output));
    assert!(String::from_utf8(output.stdout).unwrap().contains("would purge 3"));
    let one = stack.cli_json(&["dlq", "purge", &doomed[0], "--yes"]);
    assert_eq!(one["purge"], 1, "{one}");
    // At a terminal, purge shows what it would delete and asks; "n" changes nothing.
    let (ok, shown) = stack.cli_tty(&["dlq", "purge", "--channel", "email"], "n\n");
    assert!(ok, "{shown}");
    assert!(shown.contains("would purge 2"), "{shown}");
    assert!(shown.contains("Delete these 2 dead letters for good? [y/N]"), "{shown}");
    assert!(shown.contains("nothing changed"), "{shown}");
    assert_eq!(stack.cli_json(&["dlq", "list"])["notifications"].as_array().unwrap().len(), 2);
    // Named ids act on exactly those (as the CLI does once the operator says yes).
    let (status, named) = stack.call(
        "POST",
        "/v1/dlq/purge",
        &format!(r#"{{"ids": ["{}", "{}"], "yes": true}}"#, doomed[1], ids[0]),
    );
    assert_eq!(status, 200, "{named}");
    assert_eq!((named["purge"].as_u64(), named["skipped"].as_u64()), (Some(1), Some(1)), "{named}");
    let (ok, shown) = stack.cli_tty(&["dlq", "purge", "--channel", "email"], "y\n");
    assert!(
        ok && shown.contains("Delete this dead letter for good? [y/N]")
            && shown.contains("purged 1")
    );
    assert_eq!(stack.cli_json(&["dlq", "list"])["notifications"], serde_json::json!([]));
    for id in &doomed {
        assert_eq!(stack.cli(&["status", id]).status.code(), Some(3), "{id} is gone");
    }
    // The sent ones were never dead letters and are still there.
    assert_eq!(stack.cli_json(&["status", &ids[0]])["state"], "sent");
    // An id and filters together is a usage error.
    let output = stack.cli(&["dlq", "replay", &ids[0], "--channel", "sms"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}
