//! The HTTP API through `router(state)`, without a socket, over the in-memory store: validation,
//! idempotency, limits, tenant isolation, cancel, the dead-letter queue's tools.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use courant::api::{AppState, Limits, router};
use courant::wiring::SystemClock;
use futures::FutureExt;
use serde_json::{Value, json};
use steps::model::TenantId;
use storage::memory::MemoryStore;
use storage::queue::WakeQueue;
use tower::ServiceExt;
use workflows::policy::Policy;
use workflows::ports::{ListQuery, Store};
use workflows::runner::Runner;

struct Api {
    router: axum::Router,
    runner: Arc<Runner<MemoryStore, SystemClock>>,
    store: MemoryStore,
    key_a: String,
    key_b: String,
}

async fn api() -> Api {
    api_with(Limits { body_bytes_max: 4_096, batch_len_max: 3, ..Limits::default() }).await
}

async fn api_with(limits: Limits) -> Api {
    let store = MemoryStore::default();
    let templates = courant::templates::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/templates"
    )))
    .unwrap();
    let runner = Arc::new(Runner::new(
        store.clone(),
        SystemClock,
        Arc::new(templates),
        Arc::new(Policy::default()),
        Vec::new(),
    ));
    let key_a = courant::auth::create(&store, &TenantId::new("a").unwrap()).await.unwrap();
    let key_b = courant::auth::create(&store, &TenantId::new("b").unwrap()).await.unwrap();
    let state =
        AppState { runner: runner.clone(), limits, ready: Arc::new(|| async { Ok(()) }.boxed()) };
    Api { router: router(state), runner, store, key_a, key_b }
}

impl Api {
    async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<String>,
        idempotency_key: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        if let Some(k) = idempotency_key {
            request = request.header("idempotency-key", k);
        }
        let request = request
            .header("content-type", "application/json")
            .body(body.map_or_else(Body::empty, Body::from))
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    async fn submit(&self, body: &Value, key: Option<&str>) -> (StatusCode, Value) {
        self.call("POST", "/v1/notifications", Some(&self.key_a), Some(body.to_string()), key).await
    }

    /// Runs every ready wake-up, as the workers would, until none is left.
    async fn work(&self) {
        for _ in 0..100 {
            let deliveries = self.store.fetch("test-worker", 100, 0).await.unwrap();
            if deliveries.is_empty() {
                return;
            }
            for delivery in &deliveries {
                self.runner.advance(&delivery.wake).await.unwrap();
            }
            self.store.ack(&deliveries).await.unwrap();
        }
        panic!("the wake-ups never ran out");
    }

    async fn post(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, Some(key), Some(body.to_string()), None).await
    }

    async fn state_of(&self, id: &str) -> Value {
        let (_, view) = self
            .call("GET", &format!("/v1/notifications/{id}"), Some(&self.key_a), None, None)
            .await;
        view["state"].clone()
    }

    async fn count(&self, tenant: &str) -> usize {
        let tenant = TenantId::new(tenant).unwrap();
        let query = ListQuery { limit: 1_000, ..ListQuery::default() };
        self.store.list(&tenant, &query).await.unwrap().records.len()
    }
}

fn welcome() -> Value {
    json!({
        "recipient": { "id": "ada", "email": "ada@example.com" },
        "channel": "email",
        "template": "welcome",
        "data": { "name": "Ada", "product": "courant" },
        "category": "account"
    })
}

#[tokio::test]
async fn submit_then_get_shows_state_and_history() {
    let api = api().await;
    let (status, body) = api.submit(&welcome(), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let (status, view) =
        api.call("GET", &format!("/v1/notifications/{id}"), Some(&api.key_a), None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["state"], "received");
    assert_eq!(view["channel"], "email");
    assert_eq!(view["history"][0]["to"], "received");
    assert_eq!(view["history"][0]["cause"], "api submit");
}

#[tokio::test]
async fn requests_without_a_valid_key_are_refused() {
    let api = api().await;
    let (status, body) = api.call("GET", "/v1/notifications", None, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    let last = if api.key_a.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}", &api.key_a[..api.key_a.len() - 1]);
    let (status, _) = api.call("GET", "/v1/notifications", Some(&forged), None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_fields_are_named_and_nothing_is_written() {
    let api = api().await;
    let mut bad_email = welcome();
    bad_email["recipient"]["email"] = json!("not-an-email");
    let (status, body) = api.submit(&bad_email, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["field"], "recipient.email", "{body}");

    let mut bad_channel = welcome();
    bad_channel["channel"] = json!("pigeon");
    let (status, body) = api.submit(&bad_channel, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["field"], "channel", "{body}");

    let mut unknown = welcome();
    unknown["colour"] = json!("red");
    let (status, body) = api.submit(&unknown, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["message"].as_str().unwrap().contains("colour"), "{body}");

    let (status, _) = api
        .call("POST", "/v1/notifications", Some(&api.key_a), Some("{not json".into()), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(api.count("a").await, 0);
}

#[tokio::test]
async fn a_missing_template_variable_is_refused_with_its_name() {
    let api = api().await;
    let mut missing = welcome();
    missing["data"] = json!({ "name": "Ada" });
    let (status, body) = api.submit(&missing, None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "template_render_failed");
    assert!(body["error"]["message"].as_str().unwrap().contains("product"), "{body}");
    assert_eq!(api.count("a").await, 0);
}

#[tokio::test]
async fn idempotency_key_returns_the_same_notification() {
    let api = api().await;
    let (s1, first) = api.submit(&welcome(), Some("order-1")).await;
    let (s2, second) = api.submit(&welcome(), Some("order-1")).await;
    assert_eq!((s1, s2), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    assert_eq!(first["id"], second["id"]);
    assert_eq!(second["created"], false);
    assert_eq!(api.count("a").await, 1);

    let mut changed = welcome();
    changed["data"]["name"] = json!("Grace");
    let (status, body) = api.submit(&changed, Some("order-1")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "idempotency_key_reused");
    assert_eq!(api.count("a").await, 1);
}

#[tokio::test]
async fn body_and_batch_sizes_are_limited() {
    let api = api().await;
    let mut big = welcome();
    big["data"]["name"] = json!("x".repeat(5_000));
    let (status, body) = api.submit(&big, None).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");

    let batch = json!({ "notifications": [welcome(), welcome(), welcome(), welcome()] });
    let (status, body) = api
        .call("POST", "/v1/notifications/batch", Some(&api.key_a), Some(batch.to_string()), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["field"], "notifications");
    assert_eq!(api.count("a").await, 0);
}

#[tokio::test]
async fn a_batch_with_one_bad_item_writes_nothing() {
    let api = api().await;
    let mut bad = welcome();
    bad["recipient"]["phone"] = json!("12345");
    let batch = json!({ "notifications": [welcome(), bad] });
    let (status, body) = api
        .call("POST", "/v1/notifications/batch", Some(&api.key_a), Some(batch.to_string()), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["field"], "notifications[1].recipient.phone", "{body}");
    assert_eq!(api.count("a").await, 0);

    let batch = json!({ "notifications": [welcome(), welcome()] });
    let (status, body) = api
        .call("POST", "/v1/notifications/batch", Some(&api.key_a), Some(batch.to_string()), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["ids"].as_array().unwrap().len(), 2);
    assert_eq!(api.count("a").await, 2);
}

#[tokio::test]
async fn another_tenant_gets_404() {
    let api = api().await;
    let (_, body) = api.submit(&welcome(), None).await;
    let id = body["id"].as_str().unwrap();
    let path = format!("/v1/notifications/{id}");
    let (status, _) = api.call("GET", &path, Some(&api.key_b), None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) =
        api.call("POST", &format!("{path}/cancel"), Some(&api.key_b), None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api.call("GET", &path, Some(&api.key_a), None, None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn cancel_before_sending() {
    let api = api().await;
    let (_, body) = api.submit(&welcome(), None).await;
    let id = body["id"].as_str().unwrap();
    let path = format!("/v1/notifications/{id}/cancel");
    let (status, body) = api.call("POST", &path, Some(&api.key_a), None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "cancelled");
    // Cancelling again is idempotent and commits nothing.
    let (status, _) = api.call("POST", &path, Some(&api.key_a), None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, view) =
        api.call("GET", &format!("/v1/notifications/{id}"), Some(&api.key_a), None, None).await;
    assert_eq!(view["state"], "cancelled");
    assert_eq!(view["version"], 2);
}

#[tokio::test]
async fn health_and_readiness() {
    let api = api().await;
    let (status, _) = api.call("GET", "/healthz", None, None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api.call("GET", "/readyz", None, None, None).await;
    assert_eq!(status, StatusCode::OK);
}

/// A notification the default policy cannot send (no provider is configured for email): it
/// fails at once and, with no fallback for email, is dead-lettered.
async fn dead_letter(api: &Api) -> String {
    let (status, body) = api.submit(&welcome(), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    api.work().await;
    assert_eq!(api.state_of(&id).await, "dead_lettered");
    id
}

#[tokio::test]
async fn dlq_inputs_are_checked_and_a_bad_one_names_its_field_and_writes_nothing() {
    let api = api().await;
    let id = dead_letter(&api).await;
    let key = api.key_a.clone();
    let path = format!("/v1/notifications/{id}");
    let (_, before) = api.call("GET", &path, Some(&key), None, None).await;
    for (query, field) in [
        ("channel=fax", "channel"),
        ("older_than=soon", "older_than"),
        ("newer_than=-5", "newer_than"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("older_than=2h&newer_than=1h", "newer_than"),
        ("provider=no%20spaces", "provider"),
        ("colour=red", "query"),
    ] {
        let (status, body) =
            api.call("GET", &format!("/v1/dlq?{query}"), Some(&key), None, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
    let bodies = [
        (
            "/v1/dlq/replay",
            json!({ "filter": { "channel": "fax" }, "yes": true }),
            "filter.channel",
        ),
        (
            "/v1/dlq/replay",
            json!({ "filter": { "older_than": "later" }, "yes": true }),
            "filter.older_than",
        ),
        ("/v1/dlq/replay", json!({ "filter": { "limit": 10001 }, "yes": true }), "filter.limit"),
        ("/v1/dlq/replay", json!({ "id": id, "filter": {}, "yes": true }), "id"),
        ("/v1/dlq/replay", json!({ "id": "not an id!", "yes": true }), "id"),
        ("/v1/dlq/replay", json!({ "rate_per_sec": 0, "yes": true }), "rate_per_sec"),
        ("/v1/dlq/replay", json!({ "rate_per_sec": 1001, "yes": true }), "rate_per_sec"),
        ("/v1/dlq/replay", json!({ "yes": "please" }), "yes"),
        ("/v1/dlq/replay", json!({ "filter": { "reason": "" }, "yes": true }), "filter.reason"),
        (
            "/v1/dlq/purge",
            json!({ "filter": { "provider": "a b" }, "yes": true }),
            "filter.provider",
        ),
        ("/v1/dlq/purge", json!({ "rate_per_sec": 5, "yes": true }), "rate_per_sec"),
        ("/v1/dlq/plan", json!({ "filter": { "newer_than": true } }), "filter.newer_than"),
    ];
    for (path, body, field) in bodies {
        let (status, answer) = api.post(path, &key, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}: {answer}");
        let got = answer["error"]["field"].as_str().unwrap_or_default();
        assert!(got == field || got.starts_with(field), "{path} {body}: {answer}");
    }
    // Nothing was replayed or purged.
    let (_, after) = api.call("GET", &path, Some(&key), None, None).await;
    assert_eq!(after, before);
}

#[tokio::test]
async fn dlq_list_plan_replay_and_purge_through_the_api() {
    let api = api().await;
    let first = dead_letter(&api).await;
    // Two dead letters of the same millisecond are ordered by id; "newest first" needs two.
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    let second = dead_letter(&api).await;
    let key = api.key_a.clone();

    // List, with filters.
    let (status, list) = api.call("GET", "/v1/dlq", Some(&key), None, None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let ids: Vec<&str> =
        list["notifications"].as_array().unwrap().iter().filter_map(|n| n["id"].as_str()).collect();
    assert_eq!(ids, vec![second.as_str(), first.as_str()], "newest first");
    assert_eq!(list["notifications"][0]["reason"], "no provider is configured for email");
    assert!(list["notifications"][0]["dead_lettered_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!((list["scanned"].clone(), list["truncated"].clone()), (json!(2), Value::Null));
    let filtered = |query: &'static str| {
        let key = key.clone();
        let api = &api;
        async move {
            let (status, list) =
                api.call("GET", &format!("/v1/dlq?{query}"), Some(&key), None, None).await;
            assert_eq!(status, StatusCode::OK, "{list}");
            list["notifications"].as_array().unwrap().len()
        }
    };
    assert_eq!(filtered("channel=email&reason=NO%20PROVIDER&newer_than=1h").await, 2);
    assert_eq!(filtered("channel=sms").await, 0);
    assert_eq!(filtered("older_than=1h").await, 0);
    assert_eq!(filtered("provider=sendgrid").await, 0);
    assert_eq!(filtered("limit=1").await, 1);
    // Another tenant sees none of it and cannot touch it.
    let (_, theirs) = api.call("GET", "/v1/dlq", Some(&api.key_b), None, None).await;
    assert_eq!(theirs["notifications"], json!([]));
    let (status, _) =
        api.post("/v1/dlq/replay", &api.key_b, json!({ "id": first, "yes": true })).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) =
        api.post("/v1/dlq/purge", &api.key_b, json!({ "id": first, "yes": true })).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Plan.
    let (status, plan) = api.post("/v1/dlq/plan", &key, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!((plan["matched"].clone(), plan["replay"].clone()), (json!(2), json!(2)));
    assert_eq!(plan["maybe_delivered"], 0);
    assert_eq!(plan["by_channel"], json!({ "email": 2 }));
    assert_eq!(plan["by_provider"], json!({ "none": 2 }));
    assert_eq!(plan["by_reason"], json!({ "no provider is configured for email": 2 }));

    // A replay without `yes` is a dry run: exactly what would happen, nothing changed.
    let (status, dry) = api.post("/v1/dlq/replay", &key, json!({ "rate_per_sec": 2 })).await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!((dry["dry_run"].clone(), dry["replay"].clone()), (json!(true), json!(2)));
    let outcomes: Vec<(&str, &str)> = dry["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["id"].as_str().unwrap(), i["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(outcomes, vec![(first.as_str(), "would_replay"), (second.as_str(), "would_replay")]);
    assert_eq!(api.state_of(&first).await, "dead_lettered");

    // With `yes`, one by id: back to received, with an operator's history entry.
    let (status, done) =
        api.post("/v1/dlq/replay", &key, json!({ "id": first, "yes": true })).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["items"][0]["outcome"], "replayed");
    assert_eq!(api.state_of(&first).await, "received");
    let (_, view) =
        api.call("GET", &format!("/v1/notifications/{first}"), Some(&key), None, None).await;
    let last = view["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["from"].clone(), last["to"].clone()),
        (json!("dead_lettered"), json!("received"))
    );
    assert_eq!(last["cause"], "operator dlq replay");
    // Replaying it again is skipped with the reason; an unknown id is 404.
    let (_, again) = api.post("/v1/dlq/replay", &key, json!({ "id": first, "yes": true })).await;
    assert_eq!(again["items"][0]["skip_reason"], "not_dead_lettered", "{again}");
    assert_eq!(again["items"][0]["state"], "received");
    let missing = "n00ZZZZZZZZZZZZZZZZZZZZZZZZZZ";
    let (status, _) = api.post("/v1/dlq/replay", &key, json!({ "id": missing, "yes": true })).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The replayed one runs the lifecycle again (and fails again: still no provider).
    api.work().await;
    assert_eq!(api.state_of(&first).await, "dead_lettered");

    // Purge: a dry run deletes nothing, `yes` deletes both.
    let (status, dry) = api.post("/v1/dlq/purge", &key, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!((dry["dry_run"].clone(), dry["purge"].clone()), (json!(true), json!(2)));
    assert_eq!(api.count("a").await, 2);
    let (_, done) = api.post("/v1/dlq/purge", &key, json!({ "yes": true })).await;
    assert_eq!((done["dry_run"].clone(), done["purge"].clone()), (json!(false), json!(2)));
    assert_eq!(api.count("a").await, 0);
    let (status, _) =
        api.call("GET", &format!("/v1/notifications/{first}"), Some(&key), None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Opens `GET /v1/events` (with `query`) and returns the response, its body unread.
async fn open_events(api: &Api, key: Option<&str>, query: &str) -> axum::response::Response {
    let mut request = Request::builder().uri(format!("/v1/events{query}"));
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    api.router.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap()
}

/// The next event on a stream, skipping comments: its name and its data.
async fn next_event(body: &mut axum::body::BodyDataStream, seen: &mut String) -> (String, Value) {
    use futures::StreamExt;
    loop {
        while let Some(end) = seen.find("\n\n") {
            let block: String = seen.drain(..end + 2).collect();
            let field = |name: &str| {
                block.lines().find_map(|line| line.strip_prefix(name)).map(str::to_owned)
            };
            if let (Some(event), Some(data)) = (field("event: "), field("data: ")) {
                return (event, serde_json::from_str(&data).unwrap());
            }
        }
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), body.next()).await;
        let chunk = chunk.expect("an event within 5 s").expect("the stream is open").unwrap();
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test]
async fn event_streams_are_authenticated_tenant_scoped_and_capped_per_process() {
    use workflows::transitions::{Transition, TransitionFeed};
    let api = api_with(Limits { event_streams_max: 1, ..Limits::default() }).await;
    assert_eq!(open_events(&api, None, "").await.status(), StatusCode::UNAUTHORIZED);
    let bad = open_events(&api, Some(&api.key_a), "?channel=fax").await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let body = axum::body::to_bytes(bad.into_body(), 1 << 16).await.unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["field"], "channel");

    // One stream fills this process's cap: another is refused until it closes.
    let first = open_events(&api, Some(&api.key_b), "").await;
    assert_eq!(first.status(), StatusCode::OK);
    let refused = open_events(&api, Some(&api.key_a), "").await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = axum::body::to_bytes(refused.into_body(), 1 << 16).await.unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], "too_many_streams");
    drop(first);
    let mine = open_events(&api, Some(&api.key_a), "?state=received").await;
    assert_eq!(mine.status(), StatusCode::OK);
    let mut stream = mine.into_body().into_data_stream();

    // Another tenant's transition is not shown; this tenant's is, as ids.
    let (a, b) = (TenantId::new("a").unwrap(), TenantId::new("b").unwrap());
    let theirs = storage::keys::new_notification_id(&b, None, "01HZZZZZZZZZZZZZZZZZ000001");
    let ours = storage::keys::new_notification_id(&a, None, "01HZZZZZZZZZZZZZZZZZ000002");
    let record = |tenant: &TenantId, id| storage::conformance::record(tenant, id, 1_000, None);
    let first_entry = storage::conformance::first(1_000);
    let transitions = [
        Transition::new(&record(&b, &theirs), &first_entry),
        Transition::new(&record(&a, &ours), &first_entry),
    ];
    api.store.publish_transitions(&transitions).await.unwrap();
    let mut seen = String::new();
    let (name, event) = next_event(&mut stream, &mut seen).await;
    assert_eq!(name, "transition");
    assert_eq!(event["id"], ours.as_str());
    assert_eq!((&event["from"], &event["to"]), (&Value::Null, &json!("received")));
    assert_eq!(event["cause"], "api submit");
    assert!(!event.to_string().contains("@example.com"), "{event}");
}

#[tokio::test]
async fn a_stream_that_falls_behind_is_told_how_many_it_missed() {
    use workflows::transitions::{Transition, TransitionFeed};
    let api = api().await;
    let a = TenantId::new("a").unwrap();
    let transition = |n: u32| {
        let id =
            storage::keys::new_notification_id(&a, None, &format!("01HZZZZZZZZZZZZZZZZZ{n:06}"));
        let record = storage::conformance::record(&a, &id, 1_000, None);
        Transition::new(&record, &storage::conformance::first(1_000))
    };
    // A stream nobody reads yet, and one that only wants the marker published last: once the
    // marker is out, the hub has offered the slow stream everything before it.
    let slow = open_events(&api, Some(&api.key_a), "").await;
    let mut slow = slow.into_body().into_data_stream();
    let marker = transition(999_999);
    let watcher = open_events(&api, Some(&api.key_a), &format!("?id={}", marker.id)).await;
    let mut watcher = watcher.into_body().into_data_stream();
    let many: Vec<Transition> = (1..=300).map(transition).collect();
    for batch in many.chunks(100) {
        api.store.publish_transitions(batch).await.unwrap();
    }
    api.store.publish_transitions(std::slice::from_ref(&marker)).await.unwrap();
    let (_, seen_marker) = next_event(&mut watcher, &mut String::new()).await;
    assert_eq!(seen_marker["id"], marker.id.as_str());

    // The slow stream holds the first 256 (its buffer); the other 44 and the marker were skipped.
    let mut seen = String::new();
    for n in 1..=256 {
        let (name, event) = next_event(&mut slow, &mut seen).await;
        assert_eq!((name.as_str(), &event["id"]), ("transition", &json!(many[n - 1].id)));
    }
    let after = transition(1_000_000);
    api.store.publish_transitions(std::slice::from_ref(&after)).await.unwrap();
    let (name, lagged) = next_event(&mut slow, &mut seen).await;
    assert_eq!((name.as_str(), &lagged), ("lagged", &json!({ "missed": 45 })));
    let (name, event) = next_event(&mut slow, &mut seen).await;
    assert_eq!((name.as_str(), &event["id"]), ("transition", &json!(after.id)));
}
