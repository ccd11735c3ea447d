//! Campaigns end to end, through the real binary: a segment sent in pages over HTTP, expanded by
//! the workers' campaign loop at its pace, delivered in-app by the real runner and workers, its
//! progress read while it runs.
//!
//! - 100,000 recipients on `courant dev` (the in-memory store): the "done means".
//! - 5,000 recipients on `courant serve` over a throwaway Redis, with the same checks.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{Process, Stack, courant, free_port, wait_http_ok};

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
    // Read the key, then keep draining so the process never blocks on a full pipe.
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

struct Client {
    http: reqwest::Client,
    url: String,
    key: String,
}

impl Client {
    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await
            .expect("POST");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status().as_u16(), 200, "GET {path}");
        response.json().await.expect("JSON")
    }
}

/// One progress reading.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    state: String,
    position: u64,
    expanded: u64,
    delivered: u64,
    in_flight: u64,
}

/// Sends a campaign of `n` recipients in pages of 10,000 (a draft, appended, started), polls
/// its progress until it completes, checks it, and returns what was seen on the way.
async fn campaign(client: &Client, n: usize, rate: u32, timeout: Duration) -> Vec<Sample> {
    let page = |from: usize| -> Vec<String> {
        (from..(from + 10_000).min(n)).map(|i| format!("member-{i:06}")).collect()
    };
    let started = Instant::now();
    let body = json!({
        "template": "welcome",
        "channel": "in_app",
        "data": { "name": "there", "product": "courant" },
        "segment": { "recipients": page(0) },
        "rate_per_sec": rate,
        "draft": true,
    });
    let (status, created) = client.post("/v1/campaigns", &body).await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().expect("an id").to_owned();
    for from in (10_000..n).step_by(10_000) {
        let (status, view) = client
            .post(&format!("/v1/campaigns/{id}/recipients"), &json!({ "recipients": page(from) }))
            .await;
        assert_eq!(status, 200, "{view}");
    }
    let (status, view) = client.post(&format!("/v1/campaigns/{id}/start"), &json!({})).await;
    assert_eq!(status, 200, "{view}");
    eprintln!("campaign {id}: {n} recipients sent in {:?}", started.elapsed());

    let started = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let view = loop {
        let view = client.get(&format!("/v1/campaigns/{id}")).await;
        let progress = &view["progress"];
        let number = |v: &Value| v.as_u64().expect("a count");
        let sample = Sample {
            state: view["state"].as_str().unwrap_or_default().to_owned(),
            position: number(&view["position"]),
            expanded: number(&progress["expanded"]),
            delivered: number(&progress["delivered"]),
            in_flight: number(&progress["in_flight"]),
        };
        // Every reading adds up: each notification is counted once, in one state.
        let settled = ["sent", "delivered", "failed", "cancelled"]
            .iter()
            .map(|k| number(&progress[*k]))
            .sum::<u64>()
            + number(&progress["skipped"]["total"]);
        assert_eq!(sample.expanded, sample.in_flight + settled, "{view}");
        // Notifications are created before their page is recorded: at most one page ahead.
        let page_len = u64::from(rate).min(500);
        assert!(sample.expanded <= sample.position + page_len, "{view}");
        assert!(sample.position <= n as u64, "{view}");
        if samples.last() != Some(&sample) {
            samples.push(sample.clone());
        }
        if sample.state == "completed" {
            break view;
        }
        assert!(started.elapsed() < timeout, "not completed after {timeout:?}: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let elapsed = started.elapsed();
    let max_in_flight = samples.iter().map(|s| s.in_flight).max().unwrap_or(0);
    eprintln!(
        "campaign {id}: {n} expanded and delivered in {elapsed:?} ({:.0}/s); {} progress \
         readings, at most {max_in_flight} in flight",
        n as f64 / elapsed.as_secs_f64(),
        samples.len()
    );
    let progress = &view["progress"];
    assert_eq!(progress["expanded"], n, "{view}");
    assert_eq!(progress["delivered"], n, "{view}");
    assert_eq!(view["position"], n);
    assert_eq!(view["counts"], json!({ "delivered": n }), "{view}");
    // Seen moving while it ran: readings part-way through, growing.
    let partway: Vec<&Sample> =
        samples.iter().filter(|s| s.expanded > 0 && s.expanded < n as u64).collect();
    assert!(partway.len() >= 3, "progress was not seen moving: {samples:?}");
    assert!(samples.windows(2).all(|w| w[0].position <= w[1].position), "{samples:?}");
    // Never more due at once than the cap and the page being expanded.
    let cap = workflows::campaign::DUE_MAX + workflows::campaign::PAGE_LEN_MAX;
    assert!(max_in_flight <= cap, "{max_in_flight} in flight at once");
    assert!(samples.windows(2).all(|w| w[0].delivered <= w[1].delivered), "{samples:?}");
    samples
}

fn client(url: String, key: String) -> Client {
    Client { http: reqwest::Client::new(), url, key }
}

/// The "done means": a 100,000-recipient campaign expands and completes, its progress
/// visible while it runs (in memory: the real binary, runner, workers and in-app provider).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100k_recipient_campaign_expands_and_completes_with_progress_visible() {
    let (_dev, url, key) = dev();
    let client = client(url, key);
    let samples = campaign(&client, 100_000, 10_000, Duration::from_secs(600)).await;
    assert!(samples.iter().any(|s| s.state == "expanding"));
}

/// Prints the servers' logs when the test fails.
struct LogsOnFailure<'a>(&'a Stack);

impl Drop for LogsOnFailure<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for entry in std::fs::read_dir(self.0.dir.path()).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().ends_with(".log") {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!("--- {:?} (last lines)", entry.file_name());
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// The same on Redis, smaller: `courant serve` (API and workers) over a throwaway Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_on_redis_expands_and_completes_with_progress_visible() {
    let stack = Stack::start("");
    let _server = stack.serve("all", "campaigns");
    let _logs = LogsOnFailure(&stack);
    let client = client(stack.api_url.clone(), stack.key.clone());
    campaign(&client, 5_000, 5_000, Duration::from_secs(120)).await;

    // Cancelled mid-way: expansion stops, and nothing of it is left on its way.
    let recipients: Vec<String> = (0..5_000).map(|i| format!("late-{i}")).collect();
    let body = json!({
        "template": "welcome",
        "channel": "in_app",
        "data": { "name": "there", "product": "courant" },
        "segment": { "recipients": recipients },
        "rate_per_sec": 200,
    });
    let (status, created) = client.post("/v1/campaigns", &body).await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().expect("an id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(&format!("/v1/campaigns/{id}")).await["progress"]["expanded"] == 0 {
        assert!(Instant::now() < deadline, "the campaign never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, view) = client.post(&format!("/v1/campaigns/{id}/cancel"), &json!({})).await;
    assert_eq!((status, view["state"].clone()), (200, json!("cancelling")), "{view}");
    let view = loop {
        let view = client.get(&format!("/v1/campaigns/{id}")).await;
        if view["state"] == "cancelled" {
            break view;
        }
        assert!(Instant::now() < deadline, "the cancel never finished: {view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let progress = &view["progress"];
    assert_eq!(progress["in_flight"], 0, "{view}");
    let expanded = progress["expanded"].as_u64().expect("a count");
    assert!(expanded < 5_000, "expansion did not stop: {view}");
    let settled = progress["delivered"].as_u64().unwrap() + progress["cancelled"].as_u64().unwrap();
    assert_eq!(settled, expanded, "{view}");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let later = client.get(&format!("/v1/campaigns/{id}")).await;
    assert_eq!(later["progress"]["expanded"], expanded, "expansion went on after the cancel");
    eprintln!("cancelled campaign {id}: {}", view["progress"]);

    // A filter over the directory, on email: the French recipients with an address, each sent to
    // the address in their profile.
    use workflows::ports::Directory;
    let store = storage::redis::RedisStore::connect(&stack.redis.url()).await.expect("connect");
    let acme = steps::model::TenantId::new("acme").expect("tenant");
    for i in 0..300 {
        let contact = match i % 3 {
            0 => json!({ "email": format!("fr{i}@example.com"), "locale": "fr-FR" }),
            1 => json!({ "locale": "fr" }),
            _ => json!({ "email": format!("en{i}@example.com"), "locale": "en" }),
        };
        let contact: steps::recipient::Contact = serde_json::from_value(contact).expect("contact");
        let id = steps::model::RecipientId::new(format!("dir-{i:03}")).expect("id");
        store.put_contact(&acme, &id, &contact, 1).await.expect("put contact");
    }
    let body = json!({
        "template": "welcome",
        "channel": "email",
        "data": { "name": "there", "product": "courant" },
        "segment": { "filter": { "locale": "fr", "reachable": true } },
        "rate_per_sec": 200,
    });
    let (status, created) = client.post("/v1/campaigns", &body).await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().expect("an id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let view = loop {
        let view = client.get(&format!("/v1/campaigns/{id}")).await;
        if view["state"] == "completed" {
            break view;
        }
        assert!(Instant::now() < deadline, "the filter campaign never completed: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((view["recipients"].clone(), view["position"].clone()), (json!(100), json!(300)));
    let progress = &view["progress"];
    let handed = progress["sent"].as_u64().unwrap() + progress["delivered"].as_u64().unwrap();
    assert_eq!((progress["expanded"].clone(), handed), (json!(100), 100), "{view}");
    let messages = stack.sandbox_messages("sendgrid");
    let to: std::collections::BTreeSet<&str> =
        messages.iter().filter_map(|m| m["to"].as_str()).collect();
    assert_eq!(to.len(), 100, "{} messages", messages.len());
    assert!(to.iter().all(|a| a.starts_with("fr")), "{to:?}");
}
