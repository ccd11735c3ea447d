//! The in-app inbox end to end: the real binary with the API and the worker as separate
//! processes (`courant serve --role api`, `--role worker`) over a throwaway Redis; the inbox
//! endpoints over real HTTP, and the live stream (Server-Sent Events) receiving a message the
//! worker stored, published through Redis to the API process.

mod common;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{Process, Stack, courant, stderr};

/// An HTTP client for one tenant's key.
struct Client {
    http: reqwest::Client,
    url: String,
    key: String,
}

impl Client {
    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request =
            self.http.request(method, format!("{}{path}", self.url)).bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.request(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str) -> (u16, Value) {
        self.request(reqwest::Method::POST, path, None).await
    }

    /// Submits an in-app notification to `recipient`, returning its id.
    async fn send(&self, recipient: &str, order: &str) -> String {
        let body = json!({
            "recipient": { "id": recipient },
            "channel": "in_app",
            "template": "order_shipped",
            "data": { "name": "Ada", "order_id": order },
        });
        let (status, answer) =
            self.request(reqwest::Method::POST, "/v1/notifications", Some(body)).await;
        assert_eq!(status, 202, "{answer}");
        answer["id"].as_str().expect("an id").to_owned()
    }

    async fn unread(&self, recipient: &str) -> u64 {
        let (status, body) = self.get(&format!("/v1/recipients/{recipient}/inbox/count")).await;
        assert_eq!(status, 200, "{body}");
        body["unread"].as_u64().expect("a count")
    }
}

/// The API and a worker, as separate processes, on a fresh stack.
struct Servers {
    stack: Stack,
    api: Process,
    _worker: Process,
}

fn servers() -> Servers {
    let stack = Stack::start("");
    let api = stack.serve("api", "inbox-api");
    let worker = stack.serve("worker", "inbox-worker");
    Servers { stack, api, _worker: worker }
}

fn client(stack: &Stack, key: &str) -> Client {
    Client { http: reqwest::Client::new(), url: stack.api_url.clone(), key: key.to_owned() }
}

/// A key for another tenant.
fn key_for(stack: &Stack, tenant: &str) -> String {
    let output = courant()
        .args(["keys", "create", "--tenant", tenant, "--redis", &stack.redis.url()])
        .output()
        .expect("run keys create");
    assert!(output.status.success(), "keys create failed: {}", stderr(&output));
    String::from_utf8(output.stdout).expect("utf8").trim().to_owned()
}

/// Polls until `recipient` has `n` unread entries.
async fn wait_unread(client: &Client, recipient: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let unread = client.unread(recipient).await;
        if unread == n {
            return;
        }
        assert!(Instant::now() < deadline, "{recipient} has {unread} unread, not {n}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
struct Sse {
    event: String,
    id: Option<String>,
    data: Value,
}

/// A Server-Sent Events reader over a streaming response.
struct SseReader {
    response: reqwest::Response,
    buffer: String,
    /// Keep-alive comments seen.
    comments: usize,
}

impl SseReader {
    async fn open(client: &Client, recipient: &str, last_event_id: Option<&str>) -> SseReader {
        let mut request = client
            .http
            .get(format!("{}/v1/recipients/{recipient}/inbox/stream", client.url))
            .bearer_auth(&client.key);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.expect("open the stream");
        assert_eq!(response.status().as_u16(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert_eq!(content_type, "text/event-stream");
        assert_eq!(response.headers()["x-accel-buffering"], "no");
        SseReader { response, buffer: String::new(), comments: 0 }
    }

    /// The next event (comments are counted and skipped).
    async fn next(&mut self) -> Sse {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = Sse { event: "message".into(), id: None, data: Value::Null };
                let mut any = false;
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.comments += 1;
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event.event = v.trim().to_owned();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        event.data = serde_json::from_str(v.trim()).expect("JSON data");
                        any = true;
                    }
                }
                if any {
                    return event;
                }
                continue;
            }
            let chunk = self.response.chunk().await.expect("read the stream");
            let chunk = chunk.expect("the stream is still open");
            self.buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_lists_in_pages_marks_read_and_archives_per_tenant() {
    let servers = servers();
    let stack = &servers.stack;
    let acme = client(stack, &stack.key);
    let ids = [acme.send("ada", "A-1").await, acme.send("ada", "A-2").await];
    wait_unread(&acme, "ada", 2).await;
    let third = acme.send("ada", "A-3").await;
    wait_unread(&acme, "ada", 3).await;

    // Pages, newest first, with a cursor.
    let (status, first) = acme.get("/v1/recipients/ada/inbox?limit=2").await;
    assert_eq!(status, 200, "{first}");
    let items = first["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["notification_id"], third.as_str());
    assert_eq!(items[0]["title"], "Order A-3 shipped");
    assert_eq!(
        (items[0]["read"].clone(), items[0]["archived"].clone()),
        (json!(false), json!(false))
    );
    assert!(items[0]["at"].as_str().unwrap().ends_with('Z'));
    let cursor = first["next_cursor"].as_str().expect("a next page").to_owned();
    let (_, second) = acme.get(&format!("/v1/recipients/ada/inbox?limit=2&cursor={cursor}")).await;
    let items = second["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert!(second.get("next_cursor").is_none(), "{second}");
    let oldest = items[0]["notification_id"].as_str().unwrap().to_owned();
    assert!(ids.contains(&oldest));

    // Mark one read, twice: the same answer; an unknown entry is 404.
    let read = format!("/v1/recipients/ada/inbox/{third}/read");
    let (status, body) = acme.post(&read).await;
    assert_eq!(
        (status, body["unread"].clone(), body["read"].clone()),
        (200, json!(2), json!(true))
    );
    let (status, again) = acme.post(&read).await;
    assert_eq!((status, again), (200, body));
    let (status, body) = acme.post("/v1/recipients/ada/inbox/n00UNKNOWN/read").await;
    assert_eq!((status, body["error"]["code"].clone()), (404, json!("not_found")));
    let (status, _) = acme.post(&format!("/v1/recipients/bob/inbox/{third}/read")).await;
    assert_eq!(status, 404, "bob has no such entry");
    let (_, listed) = acme.get("/v1/recipients/ada/inbox?limit=1").await;
    assert_eq!(listed["items"][0]["read"], true);
    assert!(listed["items"][0]["read_at"].as_str().unwrap().ends_with('Z'));

    // Archive one unread entry: out of the count and the default view, into `archived`.
    let (status, body) = acme.post(&format!("/v1/recipients/ada/inbox/{oldest}/archive")).await;
    assert_eq!((status, body["unread"].clone()), (200, json!(1)));
    let (_, archived) = acme.get("/v1/recipients/ada/inbox?status=archived").await;
    assert_eq!(archived["items"].as_array().unwrap().len(), 1);
    assert_eq!(archived["items"][0]["notification_id"], oldest.as_str());
    let (_, all) = acme.get("/v1/recipients/ada/inbox").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    let (_, unread) = acme.get("/v1/recipients/ada/inbox?status=unread").await;
    assert_eq!(unread["items"].as_array().unwrap().len(), 1);

    // Read all, then unarchive the never-read entry: unread again.
    let (status, body) = acme.post("/v1/recipients/ada/inbox/read-all").await;
    assert_eq!((status, body["marked"].clone()), (200, json!(1)));
    assert_eq!(acme.unread("ada").await, 0);
    let (status, body) = acme.post(&format!("/v1/recipients/ada/inbox/{oldest}/unarchive")).await;
    assert_eq!(
        (status, body["unread"].clone(), body["archived"].clone()),
        (200, json!(1), json!(false))
    );

    // Bad input is a 400 naming the field.
    for (query, field) in [
        ("status=read", "status"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("cursor=abc", "cursor"),
        ("color=red", "query"),
    ] {
        let (status, body) = acme.get(&format!("/v1/recipients/ada/inbox?{query}")).await;
        assert_eq!((status, body["error"]["field"].clone()), (400, json!(field)), "{query}");
    }

    // Another tenant sees nothing of acme's and cannot change it; no key is 401.
    let globex = client(stack, &key_for(stack, "globex"));
    assert_eq!(globex.unread("ada").await, 0);
    let (_, listed) = globex.get("/v1/recipients/ada/inbox").await;
    assert_eq!(listed["items"], json!([]));
    let (status, _) = globex.post(&format!("/v1/recipients/ada/inbox/{oldest}/read")).await;
    assert_eq!(status, 404);
    assert_eq!(acme.unread("ada").await, 1);
    let anonymous = client(stack, "ck_nobody.nothing");
    for path in [
        "/v1/recipients/ada/inbox",
        "/v1/recipients/ada/inbox/count",
        "/v1/recipients/ada/inbox/stream",
    ] {
        let (status, body) = anonymous.get(path).await;
        assert_eq!((status, body["error"]["code"].clone()), (401, json!("unauthorized")), "{path}");
    }
}

/// The bound: a message submitted through the API, delivered by a worker in another
/// process, reaches a client connected to the API's stream in under a second. Prints the
/// latencies (see docs/benchmarks.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_in_app_message_reaches_a_connected_stream_within_a_second() {
    let servers = servers();
    let stack = &servers.stack;
    let acme = client(stack, &stack.key);
    let mut stream = SseReader::open(&acme, "ada", None).await;
    let hello = stream.next().await;
    assert_eq!((hello.event.as_str(), hello.data.clone()), ("unread", json!({ "unread": 0 })));
    assert_eq!(hello.id.as_deref(), Some("0"));

    let rounds = 10;
    let mut latencies = Vec::new();
    let mut last_id = String::new();
    for n in 1..=rounds {
        let started = Instant::now();
        let id = acme.send("ada", &format!("L-{n}")).await;
        let event = tokio::time::timeout(Duration::from_secs(1), stream.next())
            .await
            .unwrap_or_else(|_| panic!("message {n} did not reach the stream within 1 s"));
        latencies.push(started.elapsed());
        assert_eq!(event.event, "inbox");
        assert_eq!(event.data["entry"]["notification_id"], id.as_str());
        assert_eq!(event.data["entry"]["title"], format!("Order L-{n} shipped"));
        assert_eq!(event.data["unread"], n);
        assert_eq!(event.id.as_deref(), Some(n.to_string().as_str()));
        last_id = event.id.expect("an id");
    }
    let first = latencies[0];
    latencies.sort();
    eprintln!(
        "inbox stream latency (submit to event, {rounds} messages, separate worker process): \
         first {first:?}, median {:?}, max {:?}",
        latencies[rounds / 2],
        latencies[rounds - 1]
    );

    // Another recipient's message does not reach ada's stream; a reconnect with the last id
    // gets what was stored while it was away, then live messages.
    drop(stream);
    let missed = acme.send("ada", "M-1").await;
    acme.send("bob", "B-1").await;
    wait_unread(&acme, "ada", rounds as u64 + 1).await;
    let mut resumed = SseReader::open(&acme, "ada", Some(&last_id)).await;
    let hello = resumed.next().await;
    assert_eq!((hello.event.as_str(), hello.data["unread"].clone()), ("unread", json!(rounds + 1)));
    let replayed = resumed.next().await;
    assert_eq!(replayed.event, "inbox");
    assert_eq!(replayed.data["entry"]["notification_id"], missed.as_str());
    assert_eq!(replayed.id, Some((rounds + 1).to_string()));
    let live = acme.send("ada", "M-2").await;
    let event = tokio::time::timeout(Duration::from_secs(1), resumed.next()).await.expect("live");
    assert_eq!(event.data["entry"]["notification_id"], live.as_str());
    assert_eq!(event.id, Some((rounds + 2).to_string()));
}

/// An open stream does not hold up the API's graceful shutdown: SIGTERM ends the stream and the
/// process exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_stream_ends_at_shutdown() {
    let mut servers = servers();
    let acme = client(&servers.stack, &servers.stack.key);
    let mut stream = SseReader::open(&acme, "ada", None).await;
    assert_eq!(stream.next().await.event, "unread");
    let api = &mut servers.api;
    let exited = tokio::task::block_in_place(|| api.terminate(Duration::from_secs(10)));
    assert!(exited, "the API exited with an error");
    let rest = tokio::time::timeout(Duration::from_secs(5), stream.response.chunk()).await;
    assert!(matches!(rest, Ok(Ok(None)) | Ok(Err(_))), "the stream ended: {rest:?}");
}
