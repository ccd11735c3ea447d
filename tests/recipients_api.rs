//! The recipients directory's HTTP API through `router(state)`, over the in-memory store:
//! profiles, devices, preferences, the listing, their status codes and validation, tenant
//! isolation, and what the lifecycle records when it applies them.

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
use workflows::ports::Clock;
use workflows::runner::Runner;

struct Api {
    router: axum::Router,
    runner: Arc<Runner<MemoryStore, SystemClock>>,
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
    let state = AppState {
        runner: runner.clone(),
        limits: Limits { body_bytes_max: 4_096, batch_len_max: 3, ..Limits::default() },
        ready: Arc::new(|| async { Ok(()) }.boxed()),
    };
    Api { router: router(state), runner, store, key_a, key_b }
}

impl Api {
    async fn call(
        &self,
        method: &str,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call("PUT", path, &self.key_a, Some(body)).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call("GET", path, &self.key_a, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, &self.key_a, Some(body)).await
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

    /// Submits an email to `ada` by id only, works it, and returns the notification's view.
    async fn email_ada(&self, category: &str) -> Value {
        let body = json!({
            "recipient": { "id": "ada" },
            "channel": "email",
            "template": "welcome",
            "data": { "name": "Ada", "product": "courant" },
            "category": category
        });
        let (status, accepted) = self.post("/v1/notifications", body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
        self.work().await;
        let id = accepted["id"].as_str().unwrap();
        let (status, view) = self.get(&format!("/v1/notifications/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        view
    }
}

fn error_field(body: &Value) -> &str {
    body["error"]["field"].as_str().unwrap_or("")
}

fn error_message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or("")
}

/// All notes of a notification's history, one per line.
fn notes(view: &Value) -> String {
    view["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["note"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn ada() -> Value {
    json!({
        "email": "ada@example.com",
        "phone": "+447911123456",
        "locale": "en-GB",
        "time_zone": "Europe/London"
    })
}

#[tokio::test]
async fn a_profile_is_created_replaced_and_read_back() {
    let api = api().await;
    let (status, body) = api.put("/v1/recipients/ada", ada()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!((body["id"].as_str(), body["revision"].as_u64()), (Some("ada"), Some(1)));
    assert_eq!(body["time_zone"], "Europe/London");
    let (status, body) = api
        .put("/v1/recipients/ada", json!({ "email": "ada@lovelace.org", "time_zone": "UTC" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revision"], 2);
    let (status, body) = api.get("/v1/recipients/ada").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["email"], "ada@lovelace.org");
    assert_eq!(body["phone"], Value::Null, "a PUT replaces every contact field");
    assert_eq!(body["profile"], true);
    assert_eq!(body["devices"], json!([]));
    assert_eq!(api.get("/v1/recipients/grace").await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.get("/v1/recipients/bad:id").await.0, StatusCode::NOT_FOUND);
    // Another tenant's recipient of the same id is not this one.
    let (status, _) = api.call("GET", "/v1/recipients/ada", &api.key_b, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api.call("GET", "/v1/recipients/ada", "nope", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_profile_fields_are_named_and_nothing_is_written() {
    let api = api().await;
    let cases = [
        (json!({ "phone": "07911123456" }), "phone", "E.164"),
        (json!({ "email": "ada" }), "email", "email address"),
        (json!({ "time_zone": "Europe/Atlantis" }), "time_zone", "IANA time zone"),
        (json!({ "locale": "english_GB" }), "locale", "language tag"),
        (json!({ "email": 7 }), "email", "string"),
    ];
    for (body, field, message) in cases {
        let (status, error) = api.put("/v1/recipients/ada", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
        assert_eq!(error_field(&error), field, "{body}: {error}");
        assert!(error_message(&error).contains(message), "{body}: {error}");
    }
    let (status, error) = api.put("/v1/recipients/ada", json!({ "nickname": "Ada" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_message(&error).contains("nickname"), "{error}");
    let (status, error) = api.put("/v1/recipients/a:b", ada()).await;
    assert_eq!((status, error_field(&error)), (StatusCode::BAD_REQUEST, "id"), "{error}");
    let (status, error) = api.put(&format!("/v1/recipients/{}", "x".repeat(129)), ada()).await;
    assert_eq!((status, error_field(&error)), (StatusCode::BAD_REQUEST, "id"), "{error}");
    let huge = json!({ "email": format!("{}@example.com", "a".repeat(5_000)) });
    assert_eq!(api.put("/v1/recipients/ada", huge).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(api.get("/v1/recipients/ada").await.0, StatusCode::NOT_FOUND, "nothing written");
}

#[tokio::test]
async fn devices_are_registered_by_token_deleted_by_id_and_never_shown() {
    let api = api().await;
    let token = "f3a9c1e07b5d4a2e9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d";
    let device = json!({ "platform": "ios", "token": token });
    let (status, _) = api.post("/v1/recipients/ada/devices", device.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a device needs a profile");
    api.put("/v1/recipients/ada", ada()).await;
    let (status, added) = api.post("/v1/recipients/ada/devices", device.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    let id = added["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with('d') && id.len() == 17, "{id}");
    assert_eq!(added["platform"], "ios");
    assert!(!added.to_string().contains(token), "the token is never returned");
    let (status, again) = api.post("/v1/recipients/ada/devices", device).await;
    assert_eq!(
        (status, &again["id"]),
        (StatusCode::OK, &json!(id)),
        "registering twice is one device"
    );
    let (_, view) = api.get("/v1/recipients/ada").await;
    assert_eq!(view["devices"].as_array().unwrap().len(), 1);
    assert!(!view.to_string().contains(token), "{view}");
    // Bad input names the field.
    for (body, field) in [
        (json!({ "platform": "blackberry", "token": "t" }), "platform"),
        (json!({ "platform": "web", "token": "" }), "token"),
        (json!({ "platform": "web", "token": "tab\there" }), "token"),
    ] {
        let (status, error) = api.post("/v1/recipients/ada/devices", body).await;
        assert_eq!((status, error_field(&error)), (StatusCode::BAD_REQUEST, field), "{error}");
    }
    // At most ten.
    for i in 1..10 {
        let body = json!({ "platform": "android", "token": format!("token-{i}") });
        assert_eq!(api.post("/v1/recipients/ada/devices", body).await.0, StatusCode::CREATED);
    }
    let (status, error) = api
        .post("/v1/recipients/ada/devices", json!({ "platform": "web", "token": "one-more" }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        (error["error"]["code"].as_str(), error_field(&error)),
        (Some("too_many_devices"), "devices")
    );
    // Deleted by id, once.
    let path = format!("/v1/recipients/ada/devices/{id}");
    assert_eq!(api.call("DELETE", &path, &api.key_a, None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(api.call("DELETE", &path, &api.key_a, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.call("DELETE", &path, &api.key_b, None).await.0, StatusCode::NOT_FOUND);
    let (_, view) = api.get("/v1/recipients/ada").await;
    assert_eq!(view["devices"].as_array().unwrap().len(), 9);
}

#[tokio::test]
async fn preferences_are_read_and_replaced_with_their_revision() {
    let api = api().await;
    let (status, body) = api.get("/v1/recipients/ada/preferences").await;
    assert_eq!(status, StatusCode::OK, "a recipient nobody stored has the defaults");
    assert_eq!(
        (body["revision"].as_u64(), &body["preferences"]["unsubscribed"]),
        (Some(0), &json!(false))
    );
    let choices = json!({
        "unsubscribed": false,
        "channels": { "sms": false },
        "categories": { "marketing": { "enabled": false, "channels": { "email": true } } },
        "quiet_hours": { "start": "22:00", "end": "07:00" }
    });
    let (status, body) = api.put("/v1/recipients/ada/preferences", choices.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revision"], 1);
    let (_, read) = api.get("/v1/recipients/ada/preferences").await;
    assert_eq!(read["preferences"], choices);
    // Without a profile the recipient is listed and shown with its preferences.
    let (status, shown) = api.get("/v1/recipients/ada").await;
    assert_eq!((status, &shown["profile"]), (StatusCode::OK, &json!(false)));
    // `false` turns a policy's default quiet hours off.
    let (_, body) =
        api.put("/v1/recipients/ada/preferences", json!({ "quiet_hours": false })).await;
    assert_eq!(body["preferences"]["quiet_hours"], false);
    assert_eq!(body["revision"], 2);
    // Another tenant sees nothing of it.
    let (_, theirs) = api.call("GET", "/v1/recipients/ada/preferences", &api.key_b, None).await;
    assert_eq!(theirs["revision"], 0);
}

#[tokio::test]
async fn bad_preferences_are_named_and_nothing_is_written() {
    let api = api().await;
    let cases = [
        (
            json!({ "quiet_hours": { "start": "22:00", "end": "25:00" } }),
            "quiet_hours.end",
            "HH:MM",
        ),
        (
            json!({ "quiet_hours": { "start": "22:00", "end": "22:00" } }),
            "quiet_hours",
            "must differ",
        ),
        (json!({ "quiet_hours": true }), "quiet_hours", "false for no quiet hours"),
        (json!({ "channels": { "fax": false } }), "channels", "unknown variant"),
        (json!({ "categories": { "mark eting": {} } }), "categories", "may only contain"),
        (
            json!({ "categories": { "marketing": { "enabled": "yes" } } }),
            "categories.marketing.enabled",
            "boolean",
        ),
        (json!({ "unsubscribe": true }), "unsubscribe", "unknown field"),
    ];
    for (body, field, message) in cases {
        let (status, error) = api.put("/v1/recipients/ada/preferences", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
        assert!(error_field(&error).starts_with(field), "{body}: {error}");
        assert!(error_message(&error).contains(message), "{body}: {error}");
    }
    let many: serde_json::Map<String, Value> =
        (0..101).map(|i| (format!("c{i}"), json!({}))).collect();
    let (status, error) =
        api.put("/v1/recipients/ada/preferences", json!({ "categories": many })).await;
    assert_eq!((status, error_field(&error)), (StatusCode::BAD_REQUEST, "categories"), "{error}");
    assert!(error_message(&error).contains("at most 100"), "{error}");
    let (_, body) = api.get("/v1/recipients/ada/preferences").await;
    assert_eq!(body["revision"], 0, "nothing was written");
}

#[tokio::test]
async fn recipients_are_listed_in_pages_in_id_order() {
    let api = api().await;
    let ids = ["zoe", "ada", "mia", "bob", "kim", "eve", "lin"];
    for id in ids {
        assert_eq!(api.put(&format!("/v1/recipients/{id}"), ada()).await.0, StatusCode::CREATED);
    }
    api.call("PUT", "/v1/recipients/other", &api.key_b, Some(ada())).await;
    let mut seen = Vec::new();
    let mut path = "/v1/recipients?limit=3".to_owned();
    loop {
        let (status, page) = api.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for r in page["recipients"].as_array().unwrap() {
            seen.push(r["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/recipients?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    let mut expected: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(seen, expected);
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("cursor=a:b", "cursor"),
        ("colour=red", "query"),
    ] {
        let (status, error) = api.get(&format!("/v1/recipients?{query}")).await;
        assert_eq!(
            (status, error_field(&error)),
            (StatusCode::BAD_REQUEST, field),
            "{query}: {error}"
        );
    }
}

/// The lifecycle applies what the directory holds and the history says which rule decided, with
/// the revision it read: an unsubscribe skips, a critical category passes it, no address
/// anywhere skips with `no_address`, and quiet hours defer to the window's end.
#[tokio::test]
async fn the_history_records_each_preference_decision() {
    let api = api().await;
    // No profile and no inline address.
    let view = api.email_ada("news").await;
    assert_eq!(view["state"], "skipped", "{view}");
    assert_eq!(view["detail"]["Skipped"]["reason"]["kind"], "no_address");
    assert!(notes(&view).contains("nothing stored for the recipient"), "{view}");

    api.put("/v1/recipients/ada", json!({ "email": "ada@example.com", "time_zone": "UTC" })).await;
    api.put("/v1/recipients/ada/preferences", json!({ "unsubscribed": true })).await;
    let view = api.email_ada("news").await;
    assert_eq!(view["state"], "skipped", "{view}");
    assert_eq!(view["detail"]["Skipped"]["reason"]["kind"], "unsubscribed");
    let text = notes(&view);
    assert!(
        text.contains("unsubscribed") && text.contains("read at directory revision 2"),
        "{text}"
    );
    // `security` is critical: it is not skipped (it fails later only because this test
    // configures no provider).
    let view = api.email_ada("security").await;
    assert_ne!(view["state"], "skipped", "{view}");
    assert!(notes(&view).contains("security is a critical category"), "{view}");

    // Quiet hours around now in UTC: deferred to their end, which the history names.
    let now_ms = SystemClock.now_ms();
    let hm = |ms: u64| {
        let minutes = (ms / 60_000) % (24 * 60);
        format!("{:02}:{:02}", minutes / 60, minutes % 60)
    };
    let window = json!({ "start": hm(now_ms - 3_600_000), "end": hm(now_ms + 2 * 3_600_000) });
    api.put("/v1/recipients/ada/preferences", json!({ "quiet_hours": window })).await;
    let view = api.email_ada("news").await;
    assert_eq!(view["state"], "deferred", "{view}");
    assert_eq!(view["detail"]["Deferred"]["resume"]["at"], "filter");
    let until_ms = view["detail"]["Deferred"]["until_ms"].as_u64().unwrap();
    assert!(until_ms > now_ms + 3_600_000 && until_ms <= now_ms + 2 * 3_600_000 + 60_000, "{view}");
    let text = notes(&view);
    assert!(text.contains("quiet hours") && text.contains("in UTC"), "{text}");
    assert!(text.contains("read at directory revision 3"), "{text}");
}

/// A notification submitted without a locale is pinned to the recipient's stored locale when it
/// is accepted (normalised, as the templates spell it; the template renders in it, falling back
/// as usual); one that names a locale keeps it; a recipient without a profile keeps the
/// template's default.
#[tokio::test]
async fn a_notification_without_a_locale_takes_the_stored_one() {
    use workflows::ports::Store;

    let api = api().await;
    let (status, _) = api
        .put("/v1/recipients/ada", json!({ "email": "ada@example.com", "locale": "fr_ca" }))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let submit = |recipient: &str, locale: Option<&str>| {
        let mut body = json!({
            "recipient": { "id": recipient, "email": "x@example.com" },
            "channel": "email",
            "template": "welcome",
            "data": { "name": "Ada", "product": "courant" }
        });
        if let Some(locale) = locale {
            body["locale"] = json!(locale);
        }
        body
    };
    let mut locales = Vec::new();
    for (recipient, locale) in [("ada", None), ("ada", Some("de")), ("grace", None)] {
        let (status, accepted) = api.post("/v1/notifications", submit(recipient, locale)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
        let id = steps::model::NotificationId::new(accepted["id"].as_str().unwrap()).unwrap();
        let tenant = TenantId::new("a").unwrap();
        let record = api.store.load(&tenant, &id).await.unwrap().unwrap();
        locales.push(record.request.locale.map(|l| l.as_str().to_owned()));
    }
    assert_eq!(locales, [Some("fr-CA".to_owned()), Some("de".to_owned()), None]);
}
