//! Issue 7: `courant --json ...` is for scripts. Every command's `--json` output is one JSON
//! document on stdout (NDJSON for `tail`), with the shape the README documents: where a command
//! is one API request, exactly the answer the OpenAPI document describes (checked against its
//! schema). Failures keep the documented exit codes and, with `--json`, say why as JSON on
//! stderr. (`tail`'s NDJSON is parsed line by line in `tests/tail_e2e.rs`.)

mod common;

use std::time::Duration;

use common::openapi::validate;
use common::{Stack, courant, stderr};
use serde_json::Value;

/// Runs the CLI with `--json` and parses stdout as one JSON document, asserting success.
fn json(stack: &Stack, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let output = stack.cli(&all);
    assert!(output.status.success(), "courant {args:?}: {}", stderr(&output));
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("courant {args:?}: {e}: {stdout}"))
}

/// The keys of a JSON object, sorted.
fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> =
        value.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
    keys.sort_unstable();
    keys
}

/// Asserts `value` has at least the `expected` keys (the README's documented shape).
fn has_keys(what: &str, value: &Value, expected: &[&str]) {
    let have = keys(value);
    for key in expected {
        assert!(have.contains(key), "{what}: no {key:?} in {value}");
    }
}

#[test]
fn every_command_prints_parseable_json_of_the_documented_shape() {
    let stack = Stack::start(&common::quick_retries("email", 1));
    let _serve = stack.serve("all", "json-host");

    // send → {id, created, deduplicated}
    let sent = json(
        &stack,
        &[
            "send",
            "--recipient",
            "ada",
            "--email",
            "ada@example.com",
            "--channel",
            "email",
            "--template",
            "welcome",
            "--data",
            r#"{"name":"Ada","product":"courant"}"#,
        ],
    );
    validate("submitNotification", 202, &sent);
    let id = sent["id"].as_str().expect("an id").to_owned();
    stack.wait_state(&id, Duration::from_secs(30), |s| s == "sent");

    // status → the notification, with its history.
    let status = json(&stack, &["status", &id]);
    validate("showNotification", 200, &status);
    assert_eq!(status["state"], "sent");

    // history → {id, history: [{at, from, to, cause, ...}]}
    let history = json(&stack, &["history", &id]);
    has_keys("history", &history, &["id", "history"]);
    let entries = history["history"].as_array().expect("a list");
    assert!(!entries.is_empty());
    has_keys("history entry", &entries[0], &["at", "to", "cause"]);

    // explain → {id, state, answer, findings: [...]}
    let explain = json(&stack, &["explain", &id]);
    validate("explainNotification", 200, &explain);
    assert!(!explain["findings"].as_array().expect("findings").is_empty(), "{explain}");

    // list → {notifications: [...]}
    let list = json(&stack, &["list"]);
    validate("listNotifications", 200, &list);
    assert!(!list["notifications"].as_array().expect("a list").is_empty(), "{list}");

    // One that dead-letters: the sandbox's SendGrid refuses every send.
    stack.sandbox_behaviour("sendgrid", r#"{"latency_ms": 1, "server_error_rate": 1.0}"#);
    let doomed = json(
        &stack,
        &[
            "send",
            "--recipient",
            "bob",
            "--email",
            "bob@example.com",
            "--channel",
            "email",
            "--template",
            "welcome",
            "--data",
            r#"{"name":"Bob","product":"courant"}"#,
        ],
    )["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    stack.wait_state(&doomed, Duration::from_secs(30), |s| s == "dead_lettered");

    let dlq = json(&stack, &["dlq", "list"]);
    validate("listDeadLetters", 200, &dlq);
    assert_eq!(dlq["notifications"][0]["id"], doomed.as_str(), "{dlq}");
    let plan = json(&stack, &["dlq", "plan"]);
    validate("planDeadLetters", 200, &plan);
    // Without --yes and without a terminal: a dry run, still one JSON document.
    let replay = json(&stack, &["dlq", "replay"]);
    validate("replayDeadLetters", 200, &replay);
    assert_eq!(replay["dry_run"], true);
    let purge = json(&stack, &["dlq", "purge", &doomed]);
    validate("purgeDeadLetters", 200, &purge);
    // list with filters → a page with its cursor.
    let page = json(&stack, &["list", "--channel", "email", "--since", "1h", "--limit", "1"]);
    validate("listNotifications", 200, &page);
    assert!(page["next_cursor"].is_string(), "two email notifications, one a page: {page}");
    // retry → {id, outcome, state, at}: the dead letter is replayed.
    stack.sandbox_behaviour("sendgrid", r#"{"latency_ms": 1}"#);
    let retried = json(&stack, &["retry", &doomed]);
    validate("retryNotification", 200, &retried);
    assert_eq!(retried["outcome"], "replayed", "{retried}");
    stack.wait_state(&doomed, Duration::from_secs(30), |s| s == "sent");

    // cancel → {id, state}; a sent notification cannot be cancelled: exit 1, JSON on stderr.
    let output = stack.cli(&["--json", "cancel", &id]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let error: Value = serde_json::from_str(stderr(&output).trim()).expect("a JSON error");
    has_keys("error", &error["error"], &["exit_code", "message"]);
    assert_eq!(error["error"]["exit_code"], 1);

    // Not found: exit 3, and the error as JSON.
    let output = stack.cli(&["--json", "status", "n0000nothing"]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let error: Value = serde_json::from_str(stderr(&output).trim()).expect("a JSON error");
    assert_eq!(error["error"]["exit_code"], 3);

    // breakers → {breakers: [...]}
    let breakers = json(&stack, &["breakers"]);
    validate("listBreakers", 200, &breakers);

    // queues → the queue's counts and the workers; stats → rows and latencies.
    let queues = json(&stack, &["queues"]);
    validate("showQueues", 200, &queues);
    assert!(queues["workers_alive"].as_u64() >= Some(1), "{queues}");
    let stats = json(&stack, &["stats", "--window", "15m"]);
    validate("showStats", 200, &stats);

    // config check → {file, valid, providers, routes}
    let config = json(&stack, &["config", "check", stack.config.to_str().expect("utf-8 path")]);
    has_keys("config check", &config, &["file", "valid", "providers", "routes"]);
    assert_eq!(config["valid"], true);

    // keys create → {tenant, key}
    let output = courant()
        .args(["--json", "keys", "create", "--tenant", "beta", "--redis", &stack.redis.url()])
        .output()
        .expect("run keys create");
    assert!(output.status.success(), "{}", stderr(&output));
    let created: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(created["tenant"], "beta");
    assert!(created["key"].as_str().is_some_and(|k| k.starts_with("ck_")), "{created}");

    // simulate → a report per seed.
    let output = courant()
        .args(["--json", "simulate", "--seed", "7", "--notifications", "20"])
        .output()
        .expect("run simulate");
    assert!(output.status.success(), "{}", stderr(&output));
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    has_keys("simulate", &report, &["seed", "notifications", "states", "violations", "trace_hash"]);
    let output = courant()
        .args(["--json", "simulate", "--seeds", "1..3", "--notifications", "10"])
        .output()
        .expect("run simulate");
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object a line"))
        .collect();
    assert_eq!(lines.iter().map(|r| r["seed"].as_u64()).collect::<Vec<_>>(), [Some(1), Some(2)]);
}
