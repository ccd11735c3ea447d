//! End to end: `courant tail` (the real binary) follows `GET /v1/events` of a real server while
//! notifications go through, on one process and across an API and a worker process.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Stack, courant};
use serde_json::Value;

/// A running `courant tail`, its stderr read line by line on a thread.
struct Tail {
    child: Child,
    stderr: mpsc::Receiver<String>,
}

impl Tail {
    /// Starts `courant tail --json ARGS` against the stack and waits until it follows the stream
    /// (the server has subscribed it), so nothing sent afterwards is missed.
    fn start(stack: &Stack, args: &[&str]) -> Tail {
        let mut child = courant()
            .arg("tail")
            .arg("--json")
            .args(args)
            .env("COURANT_SERVER", &stack.api_url)
            .env("COURANT_API_KEY", &stack.key)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn courant tail");
        let (sender, stderr) = mpsc::channel();
        let pipe = child.stderr.take().expect("stderr is piped");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let mut tail = Tail { child, stderr };
        tail.wait_stderr("following transitions", Duration::from_secs(20));
        tail
    }

    fn wait_stderr(&mut self, wanted: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(wanted) => return,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!("courant tail never said {wanted:?}; its stderr: {seen:#?}");
    }

    /// Waits for the exit (`--count` reached) and returns the lines it printed, parsed.
    fn lines(mut self, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for courant tail") {
                break status;
            }
            assert!(Instant::now() < deadline, "courant tail did not stop within {timeout:?}");
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut stdout = String::new();
        let pipe = self.child.stdout.as_mut().expect("stdout is piped");
        pipe.read_to_string(&mut stdout).expect("read stdout");
        let stderr: Vec<String> = self.stderr.try_iter().collect();
        assert!(status.success(), "courant tail failed: {status}; stderr: {stderr:#?}");
        stdout
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
            .collect()
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn tail_follows_one_channels_transitions_in_order_and_stops_after_count() {
    let stack = Stack::start("");
    let _serve = stack.serve("all", "tail-host");
    let tail = Tail::start(&stack, &["--channel", "email", "--count", "6"]);
    // The SMS goes all the way through first: had the filter let it pass, its lines would come
    // before the email's.
    let sms = stack.send("sms", "otp", r#"{"code":"123456","product":"courant"}"#);
    stack.wait_state(&sms, Duration::from_secs(30), |s| s == "sent");
    let email = stack.send("email", "welcome", r#"{"name":"Ada","product":"courant"}"#);
    stack.wait_state(&email, Duration::from_secs(30), |s| s == "sent");

    let lines = tail.lines(Duration::from_secs(30));
    assert_eq!(lines.len(), 6, "{lines:#?}");
    let history = stack.cli_json(&["history", &email]);
    let recorded: Vec<(Value, Value)> = history["history"]
        .as_array()
        .expect("a history")
        .iter()
        .map(|e| (e["from"].clone(), e["to"].clone()))
        .collect();
    let shown: Vec<(Value, Value)> =
        lines.iter().map(|e| (e["from"].clone(), e["to"].clone())).collect();
    assert_eq!(shown, recorded[..6], "the email's transitions, in the history's order");
    assert_eq!(shown.first().map(|t| t.1.as_str()), Some(Some("received")));
    assert_eq!(shown.last().map(|t| t.1.as_str()), Some(Some("sent")));
    for line in &lines {
        assert_eq!(line["id"], email.as_str(), "{line}");
        assert_eq!(line["channel"], "email", "{line}");
        assert!(line["at"].as_str().is_some_and(|at| at.ends_with('Z')), "{line}");
        assert!(!line["cause"].as_str().unwrap_or_default().is_empty(), "{line}");
        // Ids only: the recipient's address and phone number are never in an event.
        let text = line.to_string();
        assert!(!text.contains("ada@example.com") && !text.contains("+14155550123"), "{text}");
    }
    let sent = lines.last().unwrap();
    assert_eq!((&sent["provider"], &sent["attempt"]), (&Value::from("sendgrid"), &Value::from(1)));
    assert_eq!(sent["cause"], "provider sendgrid");
}

#[test]
fn an_api_process_streams_what_a_separate_worker_process_commits() {
    let stack = Stack::start("");
    let _api = stack.serve("api", "tail-api");
    let tail = Tail::start(&stack, &["--state", "sent", "--count", "1"]);
    // Only the worker process sends: the API process runs no workers.
    let _worker = stack.serve("worker", "tail-worker");
    let email = stack.send("email", "welcome", r#"{"name":"Ada","product":"courant"}"#);
    let lines = tail.lines(Duration::from_secs(60));
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["id"], email.as_str());
    assert_eq!(
        (&lines[0]["from"], &lines[0]["to"]),
        (&Value::from("sending"), &Value::from("sent"))
    );
    assert_eq!(lines[0]["provider"], "sendgrid");
}

#[test]
fn bad_filters_are_refused_naming_the_field() {
    let stack = Stack::start("");
    let _serve = stack.serve("api", "tail-api");
    let output = stack.cli(&["tail", "--state", "done"]);
    assert_eq!(output.status.code(), Some(1), "{}", common::stderr(&output));
    let stderr = common::stderr(&output);
    assert!(stderr.contains("400") && stderr.contains("(field state)"), "{stderr}");
}

#[test]
fn tail_reconnects_when_the_server_goes_away_and_says_so() {
    let stack = Stack::start("");
    let mut api = stack.serve("api", "tail-api");
    let mut tail = Tail::start(&stack, &["--state", "sent", "--count", "1"]);
    // A graceful shutdown ends the open streams rather than wait for them.
    assert!(api.terminate(Duration::from_secs(20)), "the API server stopped cleanly");
    tail.wait_stderr("reconnecting", Duration::from_secs(20));
    let _api = stack.serve("api", "tail-api");
    tail.wait_stderr("reconnected", Duration::from_secs(30));
    let _worker = stack.serve("worker", "tail-worker");
    let email = stack.send("email", "welcome", r#"{"name":"Ada","product":"courant"}"#);
    let lines = tail.lines(Duration::from_secs(60));
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!((&lines[0]["id"], &lines[0]["to"]), (&Value::from(email), &Value::from("sent")));
}
