//! The OpenAPI document (`src/api/openapi.json`, served at `GET /openapi.json`) is kept true:
//! - it is a valid OpenAPI 3.1 document (Python's `openapi-spec-validator`);
//! - every documented (method, path) exists on a running server, and every `.route(..)` in
//!   `src/` is documented; the query parameters each handler reads are the documented ones;
//! - real answers of a running server (the real binary, a real Redis, the provider sandbox)
//!   match the schemas it documents for them (`common::openapi::validate`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::openapi::{self, METHODS, Operation};
use common::{Stack, http};
use providers::twilio::webhook as twilio;
use serde_json::{Value, json};

const DOCUMENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/api/openapi.json");

#[test]
fn the_document_is_a_valid_openapi_3_1_document() {
    // The reference validator of the OpenAPI Initiative's schemas; `.ci/run` installs it.
    let script = "import json, sys\n\
                  from openapi_spec_validator import OpenAPIV31SpecValidator, validate\n\
                  validate(json.load(open(sys.argv[1])), cls=OpenAPIV31SpecValidator)\n\
                  print('valid')\n";
    let output = Command::new("python3")
        .args(["-c", script, DOCUMENT])
        .output()
        .expect("python3 runs (the tests need it, with the openapi-spec-validator package)");
    assert!(
        output.status.success() && output.stdout.starts_with(b"valid"),
        "src/api/openapi.json is not a valid OpenAPI 3.1 document:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(openapi::document()["openapi"].as_str().is_some_and(|v| v.starts_with("3.1.")));
}

#[test]
fn every_operation_has_an_id_its_errors_and_the_right_security() {
    let mut ids = BTreeSet::new();
    let mut problems = Vec::new();
    for Operation { method, path, id, spec } in openapi::operations() {
        let name = format!("{method} {path}");
        if id.is_empty() {
            problems.push(format!("{name} has no operationId"));
        } else if !ids.insert(id.clone()) {
            problems.push(format!("{name}: operationId {id} is used twice"));
        }
        // Every JSON error answer is the one error shape.
        for (status, response) in spec["responses"].as_object().into_iter().flatten() {
            let response = openapi::resolve(response);
            let schema = response.pointer("/content/application~1json/schema");
            if status.starts_with(['4', '5'])
                && let Some(schema) = schema
                && schema["$ref"] != "#/components/schemas/Error"
            {
                problems.push(format!("{name} {status}: an error answer must be the Error schema"));
            }
        }
        // The API key is needed everywhere under /v1 except by the providers' webhooks.
        let open = path.starts_with("/v1/webhooks/") || !path.starts_with("/v1/");
        let documented_open = spec.get("security") == Some(&json!([]));
        if open != documented_open {
            problems.push(format!(
                "{name}: security must be {}",
                if open { "[] (no API key)" } else { "the document's (the API key)" }
            ));
        }
        if !open && spec["responses"].get("401").is_none() {
            problems.push(format!("{name} needs an API key but documents no 401"));
        }
    }
    assert!(problems.is_empty(), "src/api/openapi.json:\n{}", problems.join("\n"));
}

/// `path` with each `{placeholder}` filled by the next of `values` (or `probe-<name>`).
fn fill(path: &str, values: &[&str]) -> String {
    let mut filled = String::new();
    let mut values = values.iter();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').map(|c| open + c).expect("a closed placeholder");
        filled.push_str(&rest[..open]);
        match values.next() {
            Some(value) => filled.push_str(value),
            None => filled.push_str(&format!("probe-{}", &rest[open + 1..close])),
        }
        rest = &rest[close + 1..];
    }
    filled.push_str(rest);
    filled
}

/// The index just after the parenthesis that closes the one open before `text`.
fn closing(text: &str) -> usize {
    let mut depth = 1;
    for (at, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return at;
                }
            }
            _ => {}
        }
    }
    text.len()
}

/// The HTTP methods a method router names: the `get`, `post`, ... called in `text`
/// (`get(show).put(put_profile)`).
fn methods_in(text: &str) -> Vec<String> {
    let mut methods = Vec::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at].is_ascii_alphabetic() || bytes[at] == b'_' {
            let start = at;
            while at < bytes.len() && (bytes[at].is_ascii_alphanumeric() || bytes[at] == b'_') {
                at += 1;
            }
            let word = &text[start..at];
            let called = text[at..].trim_start().starts_with('(');
            if called && METHODS.contains(&word) {
                methods.push(word.to_uppercase());
            }
        } else {
            at += 1;
        }
    }
    methods
}

/// Every `(method, path)` routed in `text` by `.route("/path", get(..).post(..))`.
fn routes_in(text: &str) -> Vec<(String, String)> {
    let mut routes = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(".route(") {
        let args = &rest[at + ".route(".len()..];
        let end = closing(args);
        let call = &args[..end];
        rest = &args[end..];
        let Some(literal) = call.trim_start().strip_prefix('"') else { continue };
        let Some(quote) = literal.find('"') else { continue };
        let path = &literal[..quote];
        if path.starts_with('/') {
            for method in methods_in(&literal[quote + 1..]) {
                routes.push((method, path.to_owned()));
            }
        }
    }
    routes
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// Every route of the server, from the source: `(method, path)` → the file routing it.
fn routed() -> BTreeMap<(String, String), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut routes = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read a source file");
        let name = file.strip_prefix(root).unwrap_or(&file).display().to_string();
        for route in routes_in(&text) {
            routes.insert(route, name.clone());
        }
    }
    routes
}

#[test]
fn the_route_extraction_reads_every_shape_of_route_call() {
    let text = r#"
        Router::new()
            .route("/a", get(|| async { "ok" }))
            .route("/b/{id}", get(show::<S, C>).put(put_profile::<S, C>))
            .route(
                "/c/{id}/d",
                get(show_preferences::<S, C>).delete(forget::<S, C>),
            )
            .merge(other)
        config.policy.route(Channel::Push);
    "#;
    let routes: Vec<String> = routes_in(text).iter().map(|(m, p)| format!("{m} {p}")).collect();
    assert_eq!(
        routes,
        ["GET /a", "GET /b/{id}", "PUT /b/{id}", "GET /c/{id}/d", "DELETE /c/{id}/d"]
    );
}

/// The fields a query string may hold, from the 400 a handler answers for an unknown one
/// (serde: "unknown field `x`, expected `a`, `b` or `c`", "..., there are no fields"); `None`
/// when the answer is no such refusal.
fn unknown_query_field(body: &str) -> Option<BTreeSet<String>> {
    let body: Value = serde_json::from_str(body).ok()?;
    let message = body["error"]["message"].as_str()?;
    if body["error"]["field"] != "query" || !message.contains("unknown field") {
        return None;
    }
    let Some((_, expected)) = message.split_once("expected") else {
        return Some(BTreeSet::new());
    };
    Some(expected.split('`').skip(1).step_by(2).map(str::to_owned).collect())
}

#[test]
fn every_route_is_documented_and_every_documented_route_exists() {
    let documented: BTreeSet<(String, String)> =
        openapi::operations().into_iter().map(|o| (o.method, o.path)).collect();
    let routed = routed();
    let mut problems = Vec::new();
    for ((method, path), file) in &routed {
        if !documented.contains(&(method.clone(), path.clone())) {
            problems.push(format!(
                "{method} {path} is routed in {file} but not documented in src/api/openapi.json"
            ));
        }
    }
    for (method, path) in &documented {
        if !routed.contains_key(&(method.clone(), path.clone())) {
            problems.push(format!(
                "{method} {path} is documented in src/api/openapi.json but no .route(..) in src/ \
                 routes it"
            ));
        }
    }

    // A real server: each documented operation, asked without an API key, must reach a
    // handler. Axum's answers when none does are a 404 with an empty body (no such path) and a
    // 405 (no such method on the path); a handler that needs the key answers 401.
    let stack = Stack::start("");
    let _api = stack.serve("api", "openapi-routes");
    for operation in openapi::operations() {
        let (method, path) = (&operation.method, &operation.path);
        let url = format!("{}{}", stack.api_url, fill(path, &[]));
        let (status, body) = http::request(method, &url, None).expect("the API answers");
        let needs_key = operation.spec.get("security") != Some(&json!([]));
        if status == 405 || (status == 404 && body.trim().is_empty()) {
            problems.push(format!(
                "{method} {path} is documented in src/api/openapi.json but the server has no such \
                 route (it answered {status})"
            ));
        } else if needs_key && status != 401 {
            problems.push(format!(
                "{method} {path} is documented as needing the API key, but without one it \
                 answered {status}"
            ));
        }
    }

    // The query parameters, both ways. Every handler's parameters refuse unknown fields, and
    // serde's refusal names the fields it reads ("unknown field `x`, expected `state` or
    // `limit`"): a parameter read but not documented, or documented but not read, is found.
    // Streams are left out: their answer never ends.
    for operation in openapi::operations() {
        let (method, path) = (&operation.method, &operation.path);
        if operation.spec.pointer("/responses/200/content/text~1event-stream").is_some() {
            continue;
        }
        let mut documented = BTreeSet::new();
        for parameter in operation.spec["parameters"].as_array().into_iter().flatten() {
            let parameter = openapi::resolve(parameter);
            if parameter["in"] == "query" {
                documented.insert(parameter["name"].as_str().expect("a name").to_owned());
            }
        }
        let url = format!("{}{}?undocumented_probe=1", stack.api_url, fill(path, &[]));
        let (_, body) =
            http::request_with_key(method, &url, Some(&stack.key), None).expect("the API answers");
        let read = match unknown_query_field(&body) {
            Some(read) => read,
            // It ignores unknown parameters: it must read the documented ones.
            None => documented.clone(),
        };
        for name in read.difference(&documented) {
            problems.push(format!(
                "{method} {path} reads the query parameter {name}, which src/api/openapi.json \
                 does not document"
            ));
        }
        for name in documented.difference(&read) {
            problems.push(format!(
                "{method} {path} documents the query parameter {name}, which the server does \
                 not read"
            ));
        }
    }

    // The document the server serves is this one.
    let (status, served) = http::request("GET", &format!("{}/openapi.json", stack.api_url), None)
        .expect("the API answers");
    assert_eq!(status, 200);
    let served: Value = serde_json::from_str(&served).expect("GET /openapi.json is JSON");
    assert!(&served == openapi::document(), "GET /openapi.json is not src/api/openapi.json");

    assert!(problems.is_empty(), "the API and its document differ:\n{}", problems.join("\n"));
}

/// A server to drive, with the documented operations as the way to call it.
struct Api<'a> {
    stack: &'a Stack,
    /// The operations whose success was validated.
    succeeded: std::cell::RefCell<BTreeSet<String>>,
}

/// Operations with a JSON success answer the test does not drive to success, and why.
const NOT_DRIVEN: [(&str, &str); 4] = [
    ("sendgridReceipts", "needs SendGrid's ECDSA key in the config (tests/receipts_e2e.rs)"),
    ("sesReceipts", "needs an SNS topic and certificate (providers' SNS tests)"),
    ("vonageReceiptGet", "needs a Vonage provider with a signature secret"),
    ("vonageReceiptPost", "needs a Vonage provider with a signature secret"),
];

impl Api<'_> {
    /// Validates an answer to `operation_id` against the document, and notes a success.
    fn validate(&self, operation_id: &str, status: u16, body: &Value) {
        openapi::validate(operation_id, status, body);
        if (200..300).contains(&status) {
            self.succeeded.borrow_mut().insert(operation_id.to_owned());
        }
    }

    /// Every operation with a JSON success answer was driven to one (or is in `NOT_DRIVEN`).
    fn assert_all_driven(&self) {
        let succeeded = self.succeeded.borrow();
        let missing: Vec<String> = openapi::operations()
            .into_iter()
            .filter(|o| {
                let json_success = o.spec["responses"].as_object().into_iter().flatten().any(
                    |(status, response)| {
                        status.starts_with('2')
                            && openapi::resolve(response)
                                .pointer("/content/application~1json")
                                .is_some()
                    },
                );
                json_success
                    && !succeeded.contains(&o.id)
                    && !NOT_DRIVEN.iter().any(|(id, _)| *id == o.id)
            })
            .map(|o| format!("{} ({} {})", o.id, o.method, o.path))
            .collect();
        assert!(
            missing.is_empty(),
            "these operations' success answers are documented but never checked against a real \
             server; drive them in real_answers_match_the_documented_schemas:\n{}",
            missing.join("\n")
        );
    }

    /// Calls `operation_id` (its documented method and path, with `params` in its placeholders
    /// and `query` after it), requires `status`, validates the answer against the document and
    /// returns it.
    fn check(
        &self,
        operation_id: &str,
        params: &[&str],
        query: &str,
        body: &Value,
        status: u16,
    ) -> Value {
        let operation = openapi::operation(operation_id);
        let path = format!("{}{query}", fill(&operation.path, params));
        let text = if body.is_null() { String::new() } else { body.to_string() };
        let (got, answer) = self.stack.call(&operation.method, &path, &text);
        assert_eq!(got, status, "{} {path} answered {got}: {answer}", operation.method);
        self.validate(operation_id, got, &answer);
        if (200..300).contains(&got) && !body.is_null() {
            openapi::validate_request(operation_id, body);
        }
        answer
    }

    /// `check`, for an answer that is one of several statuses (a race the test does not
    /// control); returns the status too.
    fn check_any(
        &self,
        operation_id: &str,
        params: &[&str],
        body: &Value,
        statuses: &[u16],
    ) -> (u16, Value) {
        let operation = openapi::operation(operation_id);
        let path = fill(&operation.path, params);
        let (got, answer) = self.stack.call(&operation.method, &path, &body.to_string());
        assert!(statuses.contains(&got), "{} {path} answered {got}: {answer}", operation.method);
        self.validate(operation_id, got, &answer);
        (got, answer)
    }

    /// Polls a notification until `done(view)`, validating every answer on the way.
    fn wait(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let view = self.check("showNotification", &[id], "", &Value::Null, 200);
            if done(&view) {
                return view;
            }
            assert!(Instant::now() < deadline, "{id} did not get there: {view}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn welcome(recipient: &str) -> Value {
    json!({
        "recipient": { "id": recipient, "email": "ada@example.com" },
        "channel": "email",
        "template": "welcome",
        "data": { "name": "Ada", "product": "courant" },
    })
}

#[test]
fn real_answers_match_the_documented_schemas() {
    // SMS fails for good after one attempt, so a dead letter comes quickly.
    let stack = Stack::start(&common::quick_retries("sms", 1));
    stack.sandbox_behaviour("twilio", r#"{"latency_ms": 1, "server_error_rate": 1.0}"#);
    let api = Api { stack: &stack, succeeded: Default::default() };
    let null = Value::Null;

    // Before any worker runs: a notification waits in `received`, and can be cancelled.
    let _api = stack.serve("api", "openapi-api");
    let waiting = api.check("submitNotification", &[], "", &welcome("ada"), 202);
    let waiting = waiting["id"].as_str().expect("an id").to_owned();
    api.check("showNotification", &[&waiting], "", &null, 200);
    api.check("cancelNotification", &[&waiting], "", &null, 200);
    api.check("explainNotification", &[&waiting], "", &null, 200);
    // The same event again is the same notification (200, deduplicated).
    let mut event = welcome("ada");
    event["event_id"] = json!("signup-1");
    api.check("submitNotification", &[], "", &event, 202);
    let again = api.check("submitNotification", &[], "", &event, 200);
    assert_eq!(again["deduplicated"], true);

    // Recipients, before the worker needs them.
    let profile =
        json!({ "email": "ada@example.com", "locale": "en", "time_zone": "Europe/Paris" });
    api.check("putRecipient", &["ada"], "", &profile, 201);
    api.check("putRecipient", &["ada"], "", &profile, 200);
    let device = json!({ "platform": "ios", "token": "a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2" });
    let added = api.check("addDevice", &["ada"], "", &device, 201);
    api.check("addDevice", &["ada"], "", &device, 200);
    let preferences = json!({
        "channels": { "sms": true },
        "categories": { "marketing": { "enabled": true, "channels": { "email": true } } },
    });
    api.check("putPreferences", &["ada"], "", &preferences, 200);
    // Quiet hours for someone who gets nothing here (they would defer whatever came at night).
    let quiet = json!({ "quiet_hours": { "start": "22:00", "end": "07:00" } });
    api.check("putPreferences", &["carol"], "", &quiet, 200);
    api.check("showPreferences", &["carol"], "", &null, 200);
    api.check("showPreferences", &["ada"], "", &null, 200);
    api.check("putPreferences", &["bob"], "", &json!({ "quiet_hours": false }), 200);
    api.check("showPreferences", &["nobody"], "", &null, 200);
    api.check("showRecipient", &["ada"], "", &null, 200);
    api.check("showRecipient", &["bob"], "", &null, 200);
    api.check("listRecipients", &[], "?limit=1", &null, 200);
    api.check("listRecipients", &[], "", &null, 200);
    let device_id = added["id"].as_str().expect("a device id");
    api.check("removeDevice", &["ada", device_id], "", &null, 204);
    api.check("removeDevice", &["ada", device_id], "", &null, 404);

    // Now the worker: delivered in-app, sent email, dead-lettered SMS.
    let _worker = stack.serve("worker", "openapi-worker");
    let email = api.check("submitNotification", &[], "", &welcome("ada"), 202);
    let in_app = json!({
        "recipient": { "id": "ada" },
        "channel": "in_app",
        "template": "order_shipped",
        "data": { "name": "Ada", "order_id": "A-1" },
    });
    let in_app = api.check("submitNotification", &[], "", &in_app, 202);
    let sms = json!({
        "recipient": { "id": "bob", "phone": "+14155550123" },
        "channel": "sms",
        "template": "otp",
        "data": { "code": "1", "product": "courant" },
        "category": "transactional",
        "locale": "en",
    });
    let sms = api.check("submitNotification", &[], "", &sms, 202);
    let batch = json!({ "notifications": [welcome("ada"), welcome("grace")] });
    api.check("submitBatch", &[], "", &batch, 202);
    let [email, in_app, sms] =
        [email, in_app, sms].map(|v| v["id"].as_str().expect("an id").to_owned());
    api.wait(&email, |v| v["state"] == "sent" || v["state"] == "delivered");
    api.wait(&in_app, |v| v["state"] == "delivered");
    api.wait(&sms, |v| v["state"] == "dead_lettered");
    // Too late to cancel what was delivered.
    api.check("cancelNotification", &[&in_app], "", &null, 409);
    for id in [&email, &in_app, &sms] {
        api.check("explainNotification", &[id], "", &null, 200);
    }
    api.check("listNotifications", &[], "", &null, 200);
    api.check("listNotifications", &[], "?state=dead_lettered&limit=5", &null, 200);
    // A page of one among several: the answer carries a cursor, and the cursor continues.
    let page = api.check(
        "listNotifications",
        &[],
        "?category=transactional&since=1h&until=2099-01-01T00:00:00Z&limit=1",
        &null,
        200,
    );
    let cursor = page["next_cursor"].as_str().unwrap_or_else(|| panic!("a next page: {page}"));
    let next = api.check(
        "listNotifications",
        &[],
        &format!("?category=transactional&since=1h&limit=1&cursor={cursor}"),
        &null,
        200,
    );
    assert_ne!(next["notifications"][0]["id"], page["notifications"][0]["id"], "{next}");
    api.check("listNotifications", &[], "?since=yesterday", &null, 400);

    // The dead-letter queue.
    api.check("listDeadLetters", &[], "", &null, 200);
    api.check("listDeadLetters", &[], "?channel=sms&older_than=0&limit=10", &null, 200);
    api.check("planDeadLetters", &[], "", &json!({ "filter": { "channel": "sms" } }), 200);
    api.check("replayDeadLetters", &[], "", &json!({ "filter": { "reason": "attempts" } }), 200);
    api.check("replayDeadLetters", &[], "", &json!({ "id": email }), 200);
    api.check("replayDeadLetters", &[], "", &json!({ "id": "no-such-notification" }), 404);
    let replayed = api.check("replayDeadLetters", &[], "", &json!({ "id": sms, "yes": true }), 200);
    assert_eq!(replayed["replay"], 1, "{replayed}");
    // Replayed, it fails again: dead-lettered a second time; an operator's retry replays it too.
    api.wait(&sms, |v| v["state"] == "dead_lettered" && v["replay"]["count"] == 1);
    api.check("retryNotification", &[&in_app], "", &null, 409);
    api.check("retryNotification", &[&sms], "", &null, 200);
    api.wait(&sms, |v| v["state"] == "dead_lettered" && v["replay"]["count"] == 2);
    api.check("purgeDeadLetters", &[], "", &json!({}), 200);
    api.check("purgeDeadLetters", &[], "", &json!({ "id": email, "yes": true }), 200);
    let purged = api.check("purgeDeadLetters", &[], "", &json!({ "id": sms, "yes": true }), 200);
    assert_eq!(purged["purge"], 1, "{purged}");
    api.check("listBreakers", &[], "", &null, 200);
    api.check("showQueues", &[], "", &null, 200);
    api.check("showStats", &[], "", &null, 200);
    api.check("showStats", &[], "?window=24h&channel=email&provider=sendgrid", &null, 200);
    api.check("showStats", &[], "?window=8d", &null, 400);
    api.check("openapi", &[], "", &null, 200);

    // The inbox the in-app notification landed in.
    let page = api.check("listInbox", &["ada"], "?status=all&limit=1", &null, 200);
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    api.check("countInbox", &["ada"], "", &null, 200);
    api.check("readInboxEntry", &["ada", &in_app], "", &null, 200);
    api.check("archiveInboxEntry", &["ada", &in_app], "", &null, 200);
    api.check("listInbox", &["ada"], "?status=archived", &null, 200);
    api.check("unarchiveInboxEntry", &["ada", &in_app], "", &null, 200);
    api.check("readAllInbox", &["ada"], "", &null, 200);
    api.check("readInboxEntry", &["ada", &email], "", &null, 404);

    // Templates: the registry's and the built-ins.
    let template = json!({
        "id": "shipped",
        "default_locale": "en",
        "locales": { "en": { "sms.body": "Order {{ order }} shipped", "email.subject": "Shipped", "email.text": "Order {{ order }}" } },
    });
    api.check("createTemplate", &[], "", &template, 201);
    api.check("createTemplate", &[], "", &template, 409);
    let version =
        json!({ "default_locale": "en", "locales": { "en": { "sms.body": "v2: {{ order }}" } } });
    api.check("addTemplateVersion", &["shipped"], "", &version, 201);
    api.check("showTemplateVersion", &["shipped", "2"], "", &null, 200);
    api.check("publishTemplateVersion", &["shipped", "2"], "", &null, 200);
    api.check("showTemplate", &["shipped"], "", &null, 200);
    let builtin = api.check("showTemplate", &["welcome"], "", &null, 200);
    let hash = builtin["published"].as_str().expect("a built-in's hash");
    api.check("showTemplateVersion", &["welcome", hash], "", &null, 200);
    api.check("showTemplateVersion", &["welcome", "1"], "", &null, 404);
    api.check("listTemplates", &[], "", &null, 200);
    api.check("listTemplates", &[], "?limit=1", &null, 200);
    let preview = json!({ "channel": "sms", "data": { "order": 42 } });
    api.check("previewTemplate", &["shipped"], "", &preview, 200);
    let preview = json!({ "channel": "email", "data": { "order": 42 }, "version": 1 });
    api.check("previewTemplate", &["shipped"], "", &preview, 200);
    let preview = json!({ "channel": "in_app", "data": { "name": "Ada", "order_id": "A-1" }, "locale": "fr" });
    api.check("previewTemplate", &["order_shipped"], "", &preview, 200);
    let bad = json!({ "id": "broken", "default_locale": "en", "locales": { "en": { "sms.body": "{{ oops" } } });
    api.check("createTemplate", &[], "", &bad, 422);

    // Campaigns: one to a list (a draft, appended, started), one to a filter, one cancelled.
    let campaign = json!({
        "template": "welcome",
        "channel": "in_app",
        "data": { "name": "there", "product": "courant" },
        "segment": { "recipients": ["ada", "bob"] },
        "draft": true,
    });
    let listed = api.check("createCampaign", &[], "", &campaign, 202);
    let listed = listed["id"].as_str().expect("a campaign id").to_owned();
    api.check("appendCampaignRecipients", &[&listed], "", &json!({ "recipients": ["grace"] }), 200);
    api.check("startCampaign", &[&listed], "", &null, 200);
    api.check("showCampaign", &[&listed], "", &null, 200);
    let mut filtered = campaign.clone();
    filtered["segment"] = json!({ "filter": { "locale": "en", "reachable": true } });
    filtered["draft"] = json!(false);
    let filtered = api.check("createCampaign", &[], "", &filtered, 202);
    let filtered = filtered["id"].as_str().expect("a campaign id").to_owned();
    api.check("appendCampaignRecipients", &[&filtered], "", &json!({ "recipients": ["x"] }), 409);
    api.check("showCampaign", &[&filtered], "", &null, 200);
    let draft = api.check("createCampaign", &[], "", &campaign, 202);
    let draft = draft["id"].as_str().expect("a campaign id").to_owned();
    api.check("cancelCampaign", &[&draft], "", &null, 200);
    api.check_any("cancelCampaign", &[&listed], &null, &[200, 409]);
    api.check("listCampaigns", &[], "", &null, 200);
    api.check("listCampaigns", &[], "?limit=1", &null, 200);
    api.check("showCampaign", &["no-such-campaign"], "", &null, 404);

    // The error answers.
    let mut bad = welcome("ada");
    bad["channel"] = json!("pigeon");
    let error = api.check("submitNotification", &[], "", &bad, 400);
    assert_eq!(error["error"]["field"], "channel", "{error}");
    api.check("submitNotification", &[], "", &json!("not an object"), 400);
    api.check("listNotifications", &[], "?state=lost", &null, 400);
    api.check("listNotifications", &[], "?colour=red", &null, 400);
    api.check("listDeadLetters", &[], "?older_than=soon", &null, 400);
    api.check("submitBatch", &[], "", &json!({ "notifications": [] }), 400);
    api.check("listInbox", &["ada"], "?cursor=x", &null, 400);
    let mut missing = welcome("ada");
    missing["data"] = json!({ "product": "courant" });
    let error = api.check("submitNotification", &[], "", &missing, 422);
    assert_eq!(error["error"]["field"], "data.name", "{error}");
    api.check("showNotification", &["no-such-notification"], "", &null, 404);
    api.check("explainNotification", &["no-such-notification"], "", &null, 404);
    api.check("showRecipient", &["nobody"], "", &null, 404);
    api.check("showTemplate", &["no-such-template"], "", &null, 404);
    for (operation_id, params) in [
        ("listNotifications", &[][..]),
        ("showNotification", &[email.as_str()][..]),
        ("listBreakers", &[][..]),
    ] {
        let operation = openapi::operation(operation_id);
        let url = format!("{}{}", stack.api_url, fill(&operation.path, params));
        for key in [None, Some("ck_not_a_key")] {
            let (status, text) = http::request_with_key(&operation.method, &url, key, None)
                .expect("the API answers");
            assert_eq!(status, 401, "{text}");
            api.validate(operation_id, status, &serde_json::from_str(&text).expect("JSON"));
        }
    }
    // The receipts: a signed Twilio callback (about the email, so Twilio's word changes
    // nothing), the same forged, and a provider that takes none.
    let url = format!("{}/v1/webhooks/twilio/twilio?n={email}&t=acme&a=1", stack.api_url);
    let form = "MessageSid=SM1&MessageStatus=delivered";
    let params = twilio::form(form.as_bytes()).expect("a form");
    let signed = twilio::signature(b"sandbox-twilio-token", &url, &params);
    for (signature, expected) in [(signed.as_str(), 200), ("Zm9yZ2Vk", 401)] {
        let headers = [(twilio::SIGNATURE_HEADER, signature)];
        let (status, text) = http::request_with_headers("POST", &url, &headers, Some(form))
            .expect("the API answers");
        assert_eq!(status, expected, "{text}");
        api.validate("twilioReceipts", status, &serde_json::from_str(&text).expect("JSON"));
    }
    let url = format!("{}/v1/webhooks/sendgrid/sendgrid", stack.api_url);
    let (status, text) = http::request("POST", &url, Some("[]")).expect("the API answers");
    assert_eq!(status, 404, "{text}");
    api.validate("sendgridReceipts", status, &serde_json::from_str(&text).expect("JSON"));

    api.assert_all_driven();
}

#[test]
fn the_validator_refuses_an_answer_that_breaks_the_schema() {
    // The check above could pass by accepting anything; it does not.
    let good = json!({ "id": "n1", "created": true, "deduplicated": false });
    openapi::validate("submitNotification", 202, &good);
    for bad in [
        json!({ "id": "n1", "created": true }),
        json!({ "id": "n1", "created": "yes", "deduplicated": false }),
        json!({ "id": "n1", "created": true, "deduplicated": false, "extra": 1 }),
    ] {
        let refused =
            std::panic::catch_unwind(|| openapi::validate("submitNotification", 202, &bad));
        assert!(refused.is_err(), "{bad} passed");
    }
    let undocumented =
        std::panic::catch_unwind(|| openapi::validate("submitNotification", 418, &good));
    assert!(undocumented.is_err(), "an undocumented status passed");
    let error = json!({ "error": { "code": "not_found", "message": "no such resource" } });
    openapi::validate("showNotification", 404, &error);
    let bad_date = json!({ "breakers": [{ "provider": "p", "channel": "sms", "state": "open",
        "since": "yesterday", "rejected": 0, "opened": 1 }] });
    let refused = std::panic::catch_unwind(|| openapi::validate("listBreakers", 200, &bad_date));
    assert!(refused.is_err(), "a date that is no date-time passed");
    openapi::validate_request("putRecipient", &json!({ "email": "ada@example.com" }));
    for bad in [json!({ "email": 5 }), json!({ "mail": "ada@example.com" })] {
        let refused = std::panic::catch_unwind(|| openapi::validate_request("putRecipient", &bad));
        assert!(refused.is_err(), "the request {bad} passed");
    }
}
