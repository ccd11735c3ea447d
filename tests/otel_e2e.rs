//! Trace export end to end: `courant dev` with `OTEL_EXPORTER_OTLP_ENDPOINT` pointed at a small
//! OTLP/HTTP collector this test runs (`POST /v1/traces`, protobuf, decoded with
//! `opentelemetry-proto`). An email is sent and delivered by the sandbox's signed receipt; the
//! spans of the API request, the provider call and the receipt all name the notification, and no
//! attribute anywhere holds the recipient's address or phone number. Without an endpoint, no
//! exporter exists at all. `courant serve` on Redis exports to its file's `[telemetry]` endpoint.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::{Value, json};

use common::{Process, Stack, courant, free_port, http, wait_http_ok};

/// What must never be exported.
const EMAIL: &str = "traced.person@example.org";
const PHONE: &str = "+14155550177";

/// A minimal OTLP/HTTP collector: keeps every decoded export request; counts any other request.
struct Collector {
    /// Its base URL (what `OTEL_EXPORTER_OTLP_ENDPOINT` takes).
    url: String,
    /// The export requests received.
    received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    /// Requests to any other path, or bodies that did not decode.
    other: Arc<Mutex<u32>>,
    /// Serves it; dropped with the test.
    _runtime: tokio::runtime::Runtime,
}

impl Collector {
    fn start() -> Collector {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the collector");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let received = Arc::new(Mutex::new(Vec::new()));
        let other = Arc::new(Mutex::new(0));
        let (kept, bad) = (received.clone(), other.clone());
        let fallback = other.clone();
        let app = axum::Router::new()
            .route(
                "/v1/traces",
                axum::routing::post(move |body: axum::body::Bytes| async move {
                    match ExportTraceServiceRequest::decode(body) {
                        Ok(request) => kept.lock().unwrap().push(request),
                        Err(_) => *bad.lock().unwrap() += 1,
                    }
                    ExportTraceServiceResponse::default().encode_to_vec()
                }),
            )
            .fallback(move || async move {
                *fallback.lock().unwrap() += 1;
                axum::http::StatusCode::NOT_FOUND
            });
        runtime.spawn(async move { axum::serve(listener, app).await });
        Collector { url, received, other, _runtime: runtime }
    }

    /// Every span received so far.
    fn spans(&self) -> Vec<Span> {
        let received = self.received.lock().unwrap();
        received
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| s.spans.clone())
            .collect()
    }

    /// How many requests arrived, of any kind.
    fn requests(&self) -> usize {
        self.received.lock().unwrap().len() + *self.other.lock().unwrap() as usize
    }
}

fn text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|kv| kv.key == key).map(|kv| text(&kv.value))
}

/// A running `courant dev`.
struct Dev {
    process: Process,
    /// The API's base URL.
    url: String,
    /// The API key it printed.
    key: String,
    /// Its log lines so far.
    log: Arc<Mutex<Vec<String>>>,
}

/// Starts `courant dev` with `env`.
fn dev(env: &[(&str, &str)]) -> Dev {
    let port = free_port();
    let mut command = courant();
    command
        .args(["dev", "--no-demo", "--listen", &format!("127.0.0.1:{port}"), "--templates"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/templates"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("spawn courant dev");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let log = Arc::new(Mutex::new(Vec::new()));
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(key) = line.trim().strip_prefix("export COURANT_API_KEY=") {
                let _ = tx.send(key.to_owned());
            }
            lines.lock().unwrap().push(line);
        }
    });
    let key = rx.recv_timeout(Duration::from_secs(30)).expect("courant dev printed no API key");
    let url = format!("http://127.0.0.1:{port}");
    wait_http_ok(&format!("{url}/healthz"), Duration::from_secs(15));
    Dev { process: Process { child, name: "courant dev".into() }, url, key, log }
}

/// Submits the email and waits until the sandbox's receipt has made it `delivered`.
fn send_and_deliver(url: &str, key: &str) -> String {
    let body = json!({
        "recipient": {"id": "traced", "email": EMAIL, "phone": PHONE},
        "channel": "email",
        "template": "welcome",
        "data": {"name": "Traced Person", "product": "courant"},
    });
    let submit = format!("{url}/v1/notifications");
    let (status, answer) =
        http::request_with_key("POST", &submit, Some(key), Some(&body.to_string())).unwrap();
    assert_eq!(status, 202, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    let id = answer["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let show = format!("{url}/v1/notifications/{id}");
        let (_, body) = http::request_with_key("GET", &show, Some(key), None).unwrap();
        let view: Value = serde_json::from_str(&body).unwrap();
        if view["state"] == "delivered" {
            return id;
        }
        assert!(Instant::now() < deadline, "{id} never delivered: {view}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The names of the process's threads (Linux: `/proc/PID/task/*/comm`, 15 characters).
fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process's threads");
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

/// The SDK's batch processor thread ("OpenTelemetry.Traces.BatchProcessor", cut to 15).
const EXPORTER_THREAD: &str = "OpenTelemetry.T";

#[test]
fn spans_from_request_to_provider_call_to_receipt_carry_the_notification_id() {
    let collector = Collector::start();
    // A schedule delay far longer than the test: every span leaves in the flush at exit, so the
    // test also shows that a clean shutdown sends what is queued.
    let mut dev = dev(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.url),
        ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ("OTEL_SERVICE_NAME", "courant-otel-e2e"),
    ]);
    if cfg!(target_os = "linux") {
        let threads = thread_names(dev.process.child.id());
        assert!(threads.iter().any(|t| t == EXPORTER_THREAD), "no exporter thread: {threads:?}");
    }
    let id = send_and_deliver(&dev.url, &dev.key);
    assert!(dev.process.terminate(Duration::from_secs(60)), "courant dev exited with a failure");
    let spans = collector.spans();
    let about = |name: &str| -> Vec<&Span> {
        spans
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| attribute(&s.attributes, "notification_id").as_deref() == Some(&id))
            .collect()
    };
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    // The API request that submitted it, and the ones that read it back by its path.
    let posted = about("POST /v1/notifications");
    assert_eq!(posted.len(), 1, "no submit span for {id}: {names:?}");
    assert_eq!(attribute(&posted[0].attributes, "tenant").as_deref(), Some("dev"));
    assert_eq!(
        attribute(&posted[0].attributes, "http.response.status_code").as_deref(),
        Some("202")
    );
    assert!(!about("GET /v1/notifications/{id}").is_empty(), "no show span: {names:?}");
    // The worker: the wake-up's steps and the provider call, with provider and attempt.
    for step in ["advance", "filter", "render", "send", "commit"] {
        assert!(!about(step).is_empty(), "no {step} span for {id}: {names:?}");
    }
    let calls = about("provider_call");
    assert_eq!(calls.len(), 1, "{names:?}");
    let call = &calls[0].attributes;
    assert_eq!(attribute(call, "provider").as_deref(), Some("sendgrid"));
    assert_eq!(attribute(call, "channel").as_deref(), Some("email"));
    assert_eq!(attribute(call, "attempt").as_deref(), Some("1"));
    // The receipt webhook that delivered it.
    let receipts = about("receipt");
    assert!(
        receipts.iter().any(|r| attribute(&r.attributes, "kind").as_deref() == Some("delivered")),
        "no delivered receipt span for {id}: {names:?}"
    );
    assert!(!about("POST /v1/webhooks/sendgrid/{provider}").is_empty(), "{names:?}");
    // The resource names the service.
    let resources = collector.received.lock().unwrap();
    let service = resources
        .iter()
        .flat_map(|r| &r.resource_spans)
        .filter_map(|r| r.resource.as_ref())
        .find_map(|r| attribute(&r.attributes, "service.name"));
    assert_eq!(service.as_deref(), Some("courant-otel-e2e"));
    // No attribute of any span, span event or resource holds the address or the number.
    let mut values = Vec::new();
    for request in resources.iter() {
        for resource in &request.resource_spans {
            if let Some(r) = &resource.resource {
                values.extend(r.attributes.iter().map(|kv| text(&kv.value)));
            }
            for span in resource.scope_spans.iter().flat_map(|s| &s.spans) {
                values.push(span.name.clone());
                values.extend(span.attributes.iter().map(|kv| text(&kv.value)));
                for event in &span.events {
                    values.push(event.name.clone());
                    values.extend(event.attributes.iter().map(|kv| text(&kv.value)));
                }
            }
        }
    }
    assert!(values.len() > 50, "too little was exported to check: {values:?}");
    for value in &values {
        assert!(!value.contains(EMAIL) && !value.contains(PHONE), "exported: {value}");
    }
}

#[test]
fn without_an_endpoint_no_exporter_exists_and_disabled_export_sends_nothing() {
    // No endpoint: no exporter thread at all (the default is off, at no cost).
    let mut off = dev(&[]);
    if cfg!(target_os = "linux") {
        let threads = thread_names(off.process.child.id());
        assert!(!threads.iter().any(|t| t == EXPORTER_THREAD), "{threads:?}");
    }
    list(&off);
    assert!(off.process.terminate(Duration::from_secs(60)));
    // An endpoint, but the standard kill switch on: the collector hears nothing, even at exit.
    let collector = Collector::start();
    let mut disabled = dev(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.url),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ("OTEL_SDK_DISABLED", "true"),
    ]);
    list(&disabled);
    assert!(disabled.process.terminate(Duration::from_secs(60)));
    assert_eq!(collector.requests(), 0);
}

/// A request with a span (a listing).
fn list(dev: &Dev) {
    let url = format!("{}/v1/notifications", dev.url);
    let (status, body) = http::request_with_key("GET", &url, Some(&dev.key), None).unwrap();
    assert_eq!(status, 200, "{body}");
}

#[test]
fn an_unreachable_collector_is_logged_once_and_notifications_are_delivered() {
    // Nothing listens there: every export fails at once.
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let mut dev =
        dev(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), ("OTEL_BSP_SCHEDULE_DELAY", "20")]);
    send_and_deliver(&dev.url, &dev.key);
    // Several exports fail (each request's spans leave within 20 ms); one warning says so.
    let failures = || {
        let log = dev.log.lock().unwrap();
        log.iter().filter(|l| l.contains("Span export failed")).cloned().collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while failures().is_empty() {
        assert!(Instant::now() < deadline, "no export failure was logged");
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..3 {
        list(&dev);
    }
    assert!(dev.process.terminate(Duration::from_secs(60)));
    let failures = failures();
    // At most one a minute (this test takes seconds; a very loaded machine may take longer).
    let minutes = usize::try_from(started.elapsed().as_secs() / 60).unwrap();
    assert!((1..=1 + minutes).contains(&failures.len()), "{failures:?}");
}

#[test]
fn serve_exports_to_the_endpoint_of_its_configuration_file() {
    let collector = Collector::start();
    let telemetry = format!(
        "[telemetry]\notlp_endpoint = \"{}/\"\nservice_name = \"courant-from-file\"\n",
        collector.url
    );
    let stack = Stack::start(&telemetry);
    let mut serve = stack.serve("all", "otel");
    let id = stack.send("sms", "otp", r#"{"code":"123456","product":"courant"}"#);
    stack.wait_state(&id, Duration::from_secs(30), |s| s == "sent");
    // The spans leave at the latest in the flush at exit.
    assert!(serve.terminate(Duration::from_secs(60)), "serve exited with a failure");
    let spans = collector.spans();
    let call = spans
        .iter()
        .find(|s| {
            s.name == "provider_call"
                && attribute(&s.attributes, "notification_id").as_deref() == Some(&id)
        })
        .unwrap_or_else(|| panic!("no provider call span for {id}"));
    assert_eq!(attribute(&call.attributes, "provider").as_deref(), Some("twilio"));
    assert_eq!(attribute(&call.attributes, "tenant").as_deref(), Some("acme"));
    let received = collector.received.lock().unwrap();
    let service = received
        .iter()
        .flat_map(|r| &r.resource_spans)
        .filter_map(|r| r.resource.as_ref())
        .find_map(|r| attribute(&r.attributes, "service.name"));
    assert_eq!(service.as_deref(), Some("courant-from-file"));
}
