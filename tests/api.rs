//! The HTTP API through `router(state)`, without a socket, over the in-memory store: validation,
//! idempotency, limits, tenant isolation, cancel.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use courant::api::{AppState, Limits, router};
use courant::wiring::SystemClock;
use futures::FutureExt;
use serde_json::{Value, json};
use steps::model::TenantId;
use storage::memory::MemoryStore;
use tower::ServiceExt;
use workflows::policy::Policy;
use workflows::ports::{ListQuery, Store};
use workflows::runner::Runner;

struct Api {
    router: axum::Router,
    store: MemoryStore,
    key_a: String,
    key_b: String,
}

async fn api() -> Api {
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
    let limits = Limits { body_bytes_max: 4_096, batch_len_max: 3 };
    let state = AppState {
        runner,
        limits,
        ready: Arc::new(|| async { Ok(()) }.boxed()),
        breakers: providers::breaker::Registry::default(),
    };
    Api { router: router(state), store, key_a, key_b }
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

    async fn count(&self, tenant: &str) -> usize {
        let tenant = TenantId::new(tenant).unwrap();
        let query = ListQuery { state: None, limit: 1_000 };
        self.store.list(&tenant, &query).await.unwrap().len()
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
