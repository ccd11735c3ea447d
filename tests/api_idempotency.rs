//! Idempotency and event-level dedup through the HTTP API (`router(state)`, no socket), over the
//! in-memory store and a clock the tests move: the same key and body give the stored answer, a
//! changed body 422, a key in flight 409 with `Retry-After`, keys are per tenant and kept 24 h;
//! a batch is answered as a whole and never duplicates an item when retried after a crash; the
//! same `event_id` for the same recipient and channel makes one notification.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use courant::api::{AppState, Limits, router};
use futures::FutureExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use steps::model::TenantId;
use storage::memory::MemoryStore;
use workflows::policy::Policy;
use workflows::ports::{CLAIM_LEASE_MS, Claimed, Clock, Dedup, ListQuery, Store};
use workflows::record::Idempotency;
use workflows::runner::Runner;

const T0_MS: u64 = 1_767_225_600_000;

/// A clock the tests move.
#[derive(Debug, Clone)]
struct TestClock(Arc<AtomicU64>);

impl Clock for TestClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct Api {
    router: axum::Router,
    store: MemoryStore,
    clock: TestClock,
    runner: Arc<Runner<MemoryStore, TestClock>>,
    key_a: String,
    key_b: String,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn api() -> Api {
    let clock = TestClock(Arc::new(AtomicU64::new(T0_MS)));
    let store = MemoryStore::with_clock(Arc::new(clock.clone()));
    let templates = courant::templates::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/templates"
    )))
    .unwrap();
    let runner = Arc::new(Runner::new(
        store.clone(),
        clock.clone(),
        Arc::new(templates),
        Arc::new(Policy::default()),
        Vec::new(),
    ));
    let key_a = courant::auth::create(&store, &TenantId::new("a").unwrap()).await.unwrap();
    let key_b = courant::auth::create(&store, &TenantId::new("b").unwrap()).await.unwrap();
    let state = AppState {
        runner: runner.clone(),
        limits: Limits { body_bytes_max: 16_384, batch_len_max: 5, ..Limits::default() },
        ready: Arc::new(|| async { Ok(()) }.boxed()),
    };
    Api { router: router(state), store, clock, runner, key_a, key_b }
}

impl Api {
    async fn post(&self, path: &str, api_key: &str, body: &Value, key: Option<&str>) -> Answer {
        let mut request = Request::builder()
            .method("POST")
            .uri(path)
            .header("authorization", format!("Bearer {api_key}"))
            .header("content-type", "application/json");
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let request = request.body(Body::from(body.to_string())).unwrap();
        let response = tower::ServiceExt::oneshot(self.router.clone(), request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        Answer { status, headers, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
    }

    async fn submit(&self, body: &Value, key: Option<&str>) -> Answer {
        self.post("/v1/notifications", &self.key_a, body, key).await
    }

    async fn batch(&self, items: &[Value], key: Option<&str>) -> Answer {
        let body = json!({ "notifications": items });
        self.post("/v1/notifications/batch", &self.key_a, &body, key).await
    }

    async fn count(&self, tenant: &str) -> usize {
        let tenant = TenantId::new(tenant).unwrap();
        let query = ListQuery { limit: 1_000, ..ListQuery::default() };
        self.store.list(&tenant, &query).await.unwrap().records.len()
    }

    fn advance(&self, ms: u64) {
        self.clock.0.fetch_add(ms, Ordering::SeqCst);
    }
}

fn welcome(name: &str) -> Value {
    json!({
        "recipient": { "id": "ada", "email": "ada@example.com" },
        "channel": "email",
        "template": "welcome",
        "data": { "name": name, "product": "courant" },
        "category": "account"
    })
}

fn shipped(event: &str, channel: &str) -> Value {
    json!({
        "recipient": { "id": "ada", "email": "ada@example.com", "phone": "+447911123456" },
        "channel": channel,
        "template": "order_shipped",
        "data": { "order_id": "A-1", "name": "Ada" },
        "category": "orders",
        "event_id": event
    })
}

/// The API's fingerprint of a body: SHA-256 of its canonical JSON.
fn fingerprint(value: &Value) -> String {
    hex::encode(Sha256::digest(serde_json::to_vec(value).unwrap()))
}

fn replayed(answer: &Answer) -> bool {
    answer.headers.get("idempotent-replayed").is_some_and(|v| v == "true")
}

#[tokio::test]
async fn the_same_key_and_body_get_the_stored_answer_and_another_body_422() {
    let api = api().await;
    let first = api.submit(&welcome("Ada"), Some("order-1")).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(first.body["created"], true);
    assert!(!replayed(&first));
    let again = api.submit(&welcome("Ada"), Some("order-1")).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.body["id"], first.body["id"]);
    assert_eq!(again.body["created"], false);
    assert!(replayed(&again));
    let changed = api.submit(&welcome("Grace"), Some("order-1")).await;
    assert_eq!(changed.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(changed.body["error"]["code"], "idempotency_key_reused");
    assert_eq!(changed.body["error"]["field"], "Idempotency-Key");
    let named = changed.body["error"]["message"].as_str().unwrap();
    assert!(named.contains(first.body["id"].as_str().unwrap()), "{named}");
    assert_eq!(api.count("a").await, 1);
}

#[tokio::test]
async fn keys_are_per_tenant_and_kept_for_24_hours() {
    let api = api().await;
    let a = api.submit(&welcome("Ada"), Some("order-1")).await;
    let b = api.post("/v1/notifications", &api.key_b, &welcome("Ada"), Some("order-1")).await;
    assert_eq!((a.status, b.status), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    assert_ne!(a.body["id"], b.body["id"], "another tenant's key of the same name is its own");
    assert_eq!(b.body["created"], true);
    // Just before 24 h the key still answers; after, the same request makes a new notification.
    api.advance(24 * 3_600_000 - 1);
    let kept = api.submit(&welcome("Ada"), Some("order-1")).await;
    assert_eq!(kept.body["id"], a.body["id"]);
    api.advance(1);
    let later = api.submit(&welcome("Ada"), Some("order-1")).await;
    assert_eq!(later.body["created"], true);
    assert_ne!(later.body["id"], a.body["id"]);
    assert_eq!(api.count("a").await, 2);
}

#[tokio::test]
async fn a_batch_is_answered_as_a_whole_under_its_key() {
    let api = api().await;
    let items = [welcome("Ada"), welcome("Grace")];
    let first = api.batch(&items, Some("batch-1")).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    assert_eq!(first.body["ids"].as_array().unwrap().len(), 2);
    assert!(!replayed(&first));
    let again = api.batch(&items, Some("batch-1")).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.body, first.body);
    assert!(replayed(&again));
    // A batch that differs in any item, or has fewer, is another body.
    for other in [vec![welcome("Ada"), welcome("Linus")], vec![welcome("Ada")]] {
        let refused = api.batch(&other, Some("batch-1")).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.body);
        assert_eq!(refused.body["error"]["code"], "idempotency_key_reused");
    }
    // A single submit with the batch's key is another body too.
    let single = api.submit(&welcome("Ada"), Some("batch-1")).await;
    assert_eq!(single.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(api.count("a").await, 2);
}

/// While the first request of a batch holds its key, a retry is told to come back (409 with
/// `Retry-After`); once the holder's lease has run out (it died mid-way), the retry takes over
/// and finishes the batch without making again what the first request made.
#[tokio::test]
async fn a_batch_in_flight_gets_409_and_a_dead_holder_is_taken_over_without_duplicates() {
    let api = api().await;
    let tenant = TenantId::new("a").unwrap();
    let items = [welcome("Ada"), welcome("Grace"), welcome("Linus")];
    let body = json!({ "notifications": items });
    // The first request claimed the batch's key and made item 0, then its process died.
    let key = Idempotency { key: "batch-9".into(), fingerprint: fingerprint(&body) };
    let claim = api.store.claim_key(&tenant, &key, T0_MS, CLAIM_LEASE_MS).await.unwrap();
    assert_eq!(claim, Claimed::Held);
    // Items have keys of their own, which no client can send (a space is refused).
    let item = Idempotency { key: "batch-9 #0".into(), fingerprint: fingerprint(&items[0]) };
    let client = api.submit(&items[0], Some("batch-9 #0")).await;
    assert_eq!(client.status, StatusCode::BAD_REQUEST, "{}", client.body);
    let single = welcome("Ada");
    let id0 = {
        let ulid = "01J0000000000000000000000A";
        let id = storage::keys::new_notification_id(&tenant, Some(&item.key), ulid);
        let submission = workflows::runner::Submission {
            recipient: serde_json::from_value(single["recipient"].clone()).unwrap(),
            channel: steps::model::Channel::Email,
            template: steps::model::TemplateId::new("welcome").unwrap(),
            data: single["data"].as_object().unwrap().clone(),
            category: steps::model::Category::new("account").unwrap(),
            correlation: Default::default(),
            locale: None,
        };
        api.runner.submit(&tenant, id, submission, Some(&item)).await.unwrap().id
    };
    api.advance(1_000);
    let busy = api.batch(&items, Some("batch-9")).await;
    assert_eq!(busy.status, StatusCode::CONFLICT, "{}", busy.body);
    assert_eq!(busy.body["error"]["code"], "idempotency_key_in_flight");
    assert_eq!(busy.headers["retry-after"], "9");
    assert_eq!(api.count("a").await, 1, "nothing was written while in flight");
    api.advance(CLAIM_LEASE_MS - 1_000);
    let done = api.batch(&items, Some("batch-9")).await;
    assert_eq!(done.status, StatusCode::ACCEPTED, "{}", done.body);
    assert_eq!(done.body["ids"][0], json!(id0), "the item made before the crash is reused");
    assert_eq!(api.count("a").await, 3);
    let again = api.batch(&items, Some("batch-9")).await;
    assert_eq!(again.body, done.body);
    assert!(replayed(&again));
}

#[tokio::test]
async fn the_same_event_for_the_same_recipient_and_channel_makes_one_notification() {
    let api = api().await;
    let first = api.submit(&shipped("order-1:shipped", "email"), None).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    assert_eq!(
        (first.body["created"].clone(), first.body["deduplicated"].clone()),
        (json!(true), json!(false))
    );
    let duplicate = api.submit(&shipped("order-1:shipped", "email"), None).await;
    assert_eq!(duplicate.status, StatusCode::OK);
    assert_eq!(duplicate.body["id"], first.body["id"]);
    assert_eq!(duplicate.body["created"], false);
    assert_eq!(duplicate.body["deduplicated"], true);
    assert!(!replayed(&duplicate));
    assert_eq!(api.count("a").await, 1);
    // Another channel, another event or another tenant is another notification.
    let sms = api.submit(&shipped("order-1:shipped", "sms"), None).await;
    let other = api.submit(&shipped("order-2:shipped", "email"), None).await;
    let theirs =
        api.post("/v1/notifications", &api.key_b, &shipped("order-1:shipped", "email"), None).await;
    for answer in [&sms, &other, &theirs] {
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
        assert_eq!(answer.body["created"], true);
    }
    assert_eq!(api.count("a").await, 3);
    // After the dedup window (24 h by default) the event makes a new notification.
    api.advance(24 * 3_600_000);
    let later = api.submit(&shipped("order-1:shipped", "email"), None).await;
    assert_eq!(later.status, StatusCode::ACCEPTED);
    assert_ne!(later.body["id"], first.body["id"]);
}

#[tokio::test]
async fn an_event_with_a_key_is_answered_once_and_its_key_in_flight_gets_409() {
    let api = api().await;
    let tenant = TenantId::new("a").unwrap();
    let body = shipped("order-1:shipped", "email");
    let first = api.submit(&body, Some("k-1")).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    let retry = api.submit(&body, Some("k-1")).await;
    assert_eq!(
        (retry.status, retry.body["id"].clone()),
        (StatusCode::ACCEPTED, first.body["id"].clone())
    );
    assert!(replayed(&retry));
    // The same event under another key: deduplicated, and that answer is what the key keeps.
    let other = api.submit(&body, Some("k-2")).await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(other.body["deduplicated"], true);
    let other_again = api.submit(&body, Some("k-2")).await;
    assert_eq!(other_again.status, StatusCode::OK);
    assert_eq!(other_again.body["id"], first.body["id"]);
    assert_eq!(other_again.body["deduplicated"], true);
    assert!(replayed(&other_again));
    // A request holding k-3 (claimed, not finished): the retry is told when to come back.
    let held = Idempotency { key: "k-3".into(), fingerprint: fingerprint(&shipped("e-3", "sms")) };
    api.store.claim_key(&tenant, &held, T0_MS, CLAIM_LEASE_MS).await.unwrap();
    let busy = api.submit(&shipped("e-3", "sms"), Some("k-3")).await;
    assert_eq!(busy.status, StatusCode::CONFLICT, "{}", busy.body);
    assert_eq!(busy.headers["retry-after"], "10");
    let changed = api.submit(&shipped("e-4", "sms"), Some("k-3")).await;
    assert_eq!(changed.status, StatusCode::UNPROCESSABLE_ENTITY, "another body is refused");
    api.advance(CLAIM_LEASE_MS);
    let taken_over = api.submit(&shipped("e-3", "sms"), Some("k-3")).await;
    assert_eq!(taken_over.status, StatusCode::ACCEPTED, "{}", taken_over.body);
    assert_eq!(api.count("a").await, 2);
}

#[tokio::test]
async fn bad_event_ids_and_collapse_keys_are_named() {
    let api = api().await;
    for (field, value) in [
        ("event_id", json!("")),
        ("event_id", json!("has space")),
        ("event_id", json!("x".repeat(256))),
        ("collapse_key", json!(7)),
    ] {
        let mut body = welcome("Ada");
        body[field] = value;
        let answer = api.submit(&body, None).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{field}: {}", answer.body);
        assert_eq!(answer.body["error"]["field"], field);
    }
    assert_eq!(api.count("a").await, 0);
}

/// On Redis, where a record, its idempotency key and its event must share a hash slot or the
/// store refuses the write: the API mints each id where its keys live.
#[tokio::test]
async fn over_redis_events_keys_and_batches_land_in_their_slots() {
    let server = storage::testing::RedisServer::start();
    let store = storage::redis::RedisStore::connect(&server.url()).await.unwrap();
    let templates = courant::templates::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/templates"
    )))
    .unwrap();
    let runner = Arc::new(Runner::new(
        store.clone(),
        courant::wiring::SystemClock,
        Arc::new(templates),
        Arc::new(Policy::default()),
        Vec::new(),
    ));
    let api_key = courant::auth::create(&store, &TenantId::new("a").unwrap()).await.unwrap();
    let state = AppState {
        runner,
        limits: Limits { body_bytes_max: 16_384, batch_len_max: 5, ..Limits::default() },
        ready: Arc::new(|| async { Ok(()) }.boxed()),
    };
    let router = router(state);
    let post = async |path: &str, body: &Value, key: Option<&str>| {
        let mut request = Request::builder()
            .method("POST")
            .uri(path)
            .header("authorization", format!("Bearer {api_key}"))
            .header("content-type", "application/json");
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let request = request.body(Body::from(body.to_string())).unwrap();
        let response = tower::ServiceExt::oneshot(router.clone(), request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice::<Value>(&bytes).unwrap())
    };
    let (s1, first) = post("/v1/notifications", &shipped("o-1", "email"), None).await;
    let (s2, again) = post("/v1/notifications", &shipped("o-1", "email"), None).await;
    assert_eq!((s1, s2), (StatusCode::ACCEPTED, StatusCode::OK), "{first} {again}");
    assert_eq!(again["id"], first["id"]);
    let (s3, keyed) = post("/v1/notifications", &shipped("o-2", "sms"), Some("k-1")).await;
    let (s4, replay) = post("/v1/notifications", &shipped("o-2", "sms"), Some("k-1")).await;
    assert_eq!((s3, s4), (StatusCode::ACCEPTED, StatusCode::ACCEPTED), "{keyed} {replay}");
    assert_eq!(replay["id"], keyed["id"]);
    let plain = post("/v1/notifications", &welcome("Ada"), Some("k-2")).await;
    assert_eq!(plain.0, StatusCode::ACCEPTED, "{}", plain.1);
    let items = [shipped("o-1", "email"), welcome("Grace"), shipped("o-3", "email")];
    let batch = json!({ "notifications": items });
    let (s5, made) = post("/v1/notifications/batch", &batch, Some("b-1")).await;
    assert_eq!(s5, StatusCode::ACCEPTED, "{made}");
    assert_eq!(made["ids"][0], first["id"]);
    assert_eq!(made["deduplicated"], json!([0]));
    let (s6, replayed) = post("/v1/notifications/batch", &batch, Some("b-1")).await;
    assert_eq!((s6, replayed), (StatusCode::ACCEPTED, made));
}
