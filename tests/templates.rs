//! The template registry through the HTTP API (`router(state)`, no socket) over the in-memory
//! store, with the in-app provider delivering into the same store: create, versions, publish,
//! pinning, locales, limits, preview, and what a template may not do.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use courant::api::{AppState, Limits, router};
use courant::wiring::SystemClock;
use futures::FutureExt;
use serde_json::{Value, json};
use steps::model::{Channel, ProviderName, RecipientId, TenantId};
use storage::memory::MemoryStore;
use storage::queue::WakeQueue;
use tower::ServiceExt;
use workflows::policy::{Policy, TemplatePolicy};
use workflows::ports::{Inbox, InboxItem, ListQuery, Provider, Store};
use workflows::runner::Runner;

struct Api {
    router: axum::Router,
    runner: Arc<Runner<MemoryStore, SystemClock>>,
    store: MemoryStore,
    key_a: String,
    key_b: String,
}

async fn api_with(templates: TemplatePolicy) -> Api {
    let store = MemoryStore::default();
    let builtin = courant::templates::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/templates"
    )))
    .unwrap();
    let inapp = ProviderName::new("inapp").unwrap();
    let mut policy = Policy { templates, ..Policy::default() };
    policy.routes.insert(Channel::InApp, vec![inapp.clone()]);
    let provider: Arc<dyn Provider> =
        Arc::new(providers::inapp::InAppProvider::new(inapp, store.clone()));
    let runner = Arc::new(
        Runner::new(store.clone(), SystemClock, Arc::new(builtin), Arc::new(policy), [provider])
            .with_template_store(Arc::new(store.clone())),
    );
    let key_a = courant::auth::create(&store, &TenantId::new("a").unwrap()).await.unwrap();
    let key_b = courant::auth::create(&store, &TenantId::new("b").unwrap()).await.unwrap();
    let state = AppState {
        runner: runner.clone(),
        limits: Limits::default(),
        ready: Arc::new(|| async { Ok(()) }.boxed()),
    };
    Api { router: router(state), runner, store, key_a, key_b }
}

async fn api() -> Api {
    api_with(TemplatePolicy::default()).await
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
        let location = response.headers().get("location").map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let mut value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if let (Some(location), Some(object)) = (location, value.as_object_mut()) {
            object.insert("_location".into(), json!(location));
        }
        (status, value)
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, &self.key_a, Some(body)).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call("GET", path, &self.key_a, None).await
    }

    async fn submit(&self, body: Value) -> (StatusCode, Value) {
        self.post("/v1/notifications", body).await
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

    async fn inbox(&self, recipient: &str) -> Vec<InboxItem> {
        let tenant = TenantId::new("a").unwrap();
        let recipient = RecipientId::new(recipient).unwrap();
        self.store.inbox_list(&tenant, &recipient, 100).await.unwrap()
    }

    async fn count(&self) -> usize {
        let query = ListQuery { limit: 1_000, ..ListQuery::default() };
        self.store.list(&TenantId::new("a").unwrap(), &query).await.unwrap().records.len()
    }
}

/// An in-app template whose every part says which version it is.
fn in_app(version: &str) -> Value {
    json!({
        "default_locale": "en",
        "locales": { "en": {
            "in_app.title": format!("{version}: order {{{{ order }}}}"),
            "in_app.body": format!("{version}: it shipped, {{{{ name }}}}."),
        }}
    })
}

fn with_id(id: &str, mut content: Value) -> Value {
    content["id"] = json!(id);
    content
}

fn notification(template: &str, channel: &str, recipient: &str, data: Value) -> Value {
    json!({
        "recipient": { "id": recipient, "phone": "+447911123456", "email": "ada@example.com" },
        "channel": channel,
        "template": template,
        "data": data,
        "category": "order_updates",
    })
}

#[tokio::test]
async fn templates_are_created_versioned_published_shown_and_listed() {
    let api = api().await;
    let (status, created) = api.post("/v1/templates", with_id("shipped", in_app("v1"))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["_location"], "/v1/templates/shipped");
    assert_eq!((created["published"].clone(), created["latest"].clone()), (json!(1), json!(1)));
    assert_eq!(created["versions"][0]["channels"], json!(["in_app"]));
    assert_eq!(created["versions"][0]["published"], true);

    // The id is taken.
    let (status, body) = api.post("/v1/templates", with_id("shipped", in_app("again"))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("/versions"), "{body}");

    // A draft version.
    let (status, added) = api.post("/v1/templates/shipped/versions", in_app("v2")).await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    assert_eq!((added["version"].clone(), added["published"].clone()), (json!(2), json!(false)));
    assert_eq!(added["_location"], "/v1/templates/shipped/versions/2");
    let (_, shown) = api.get("/v1/templates/shipped").await;
    assert_eq!((shown["published"].clone(), shown["latest"].clone()), (json!(1), json!(2)));
    assert_eq!(shown["versions"].as_array().unwrap().len(), 2);

    // Versions keep their parts.
    let (status, v1) = api.get("/v1/templates/shipped/versions/1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v1["locales"]["en"]["in_app.title"], "v1: order {{ order }}");
    let (_, v2) = api.get("/v1/templates/shipped/versions/2").await;
    assert_eq!(v2["locales"]["en"]["in_app.title"], "v2: order {{ order }}");
    for missing in ["3", "0", "x"] {
        let (status, _) = api.get(&format!("/v1/templates/shipped/versions/{missing}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    }

    // Publish.
    let (status, published) = api.post("/v1/templates/shipped/versions/2/publish", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{published}");
    assert_eq!(published["published"], 2);
    let (status, _) = api.post("/v1/templates/shipped/versions/9/publish", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api.post("/v1/templates/nope/versions", in_app("x")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Listing pages in id order and names the built-ins.
    api.post("/v1/templates", with_id("alert", in_app("a"))).await;
    api.post("/v1/templates", with_id("zeta", in_app("z"))).await;
    let (_, first) = api.get("/v1/templates?limit=2").await;
    let ids = |page: &Value| -> Vec<String> {
        page["templates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&first), ["alert", "shipped"]);
    assert_eq!(first["next_after"], "shipped");
    assert_eq!(first["builtin"], json!(["order_shipped", "otp", "welcome"]));
    let (_, second) = api.get("/v1/templates?limit=2&after=shipped").await;
    assert_eq!(ids(&second), ["zeta"]);
    assert_eq!(second["next_after"], Value::Null);
    let (status, body) = api.get("/v1/templates?limit=0").await;
    assert_eq!((status, body["error"]["field"].clone()), (StatusCode::BAD_REQUEST, json!("limit")));

    // A built-in is shown read-only, with its content hash as its one version.
    let (status, welcome) = api.get("/v1/templates/welcome").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(welcome["source"], "builtin");
    let hash = welcome["published"].as_str().unwrap().to_owned();
    assert_eq!(hash.len(), 16);
    let (status, version) = api.get(&format!("/v1/templates/welcome/versions/{hash}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(version["locales"]["en"]["sms.body"].as_str().unwrap().contains("{{ product }}"));
    let (status, _) = api.post("/v1/templates/welcome/versions", in_app("x")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "built-ins cannot be changed");
}

#[tokio::test]
async fn a_bad_template_is_a_422_naming_the_part_and_teras_error_and_nothing_is_written() {
    let api = api().await;
    let mut bad = in_app("v1");
    bad["locales"]["fr"] = json!({ "in_app.title": "Commande {{ order", "in_app.body": "x" });
    let (status, body) = api.post("/v1/templates", with_id("bad", bad)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "template_invalid");
    assert_eq!(body["error"]["field"], "locales.fr.in_app.title");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("locales.fr.in_app.title") && message.len() > 40, "{message}");

    // A part name that does not exist is a 400 naming it.
    let mut typo = in_app("v1");
    typo["locales"]["en"]["in_app.titel"] = json!("x");
    let (status, body) = api.post("/v1/templates", with_id("bad", typo)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("in_app.titel"), "{body}");

    // The default locale must have parts; a channel must be whole in each locale.
    let mut no_default = in_app("v1");
    no_default["default_locale"] = json!("de");
    let (status, body) = api.post("/v1/templates", with_id("bad", no_default)).await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("default_locale"))
    );
    let half = json!({ "default_locale": "en", "locales": { "en": { "email.html": "<p>x</p>" } } });
    let (status, body) = api.post("/v1/templates", with_id("bad", half)).await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("locales.en.email.html"))
    );
    let bad_locale = json!({ "default_locale": "english", "locales": {} });
    let (status, body) = api.post("/v1/templates", with_id("bad", bad_locale)).await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("default_locale"))
    );

    // A bad draft version is refused the same way.
    api.post("/v1/templates", with_id("good", in_app("v1"))).await;
    let mut bad = in_app("v2");
    bad["locales"]["en"]["in_app.body"] = json!("{% if %}");
    let (status, body) = api.post("/v1/templates/good/versions", bad).await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("locales.en.in_app.body"))
    );

    let (status, _) = api.get("/v1/templates/bad").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, good) = api.get("/v1/templates/good").await;
    assert_eq!(good["latest"], 1, "the bad version was not written");
}

#[tokio::test]
async fn templates_cannot_include_other_templates_or_read_the_environment() {
    let api = api().await;
    api.post("/v1/templates", with_id("secret", in_app("SECRET"))).await;
    for (n, source) in [
        "{% include \"secret\" %}",
        "{% include \"in_app.body.txt\" %}",
        "{% include \"welcome/sms.body.txt\" %}",
        "{% extends \"base.html\" %}",
        "{{ get_env(name=\"HOME\") }}",
        "{{ now() }}",
    ]
    .into_iter()
    .enumerate()
    {
        let mut content = in_app("x");
        content["locales"]["en"]["in_app.title"] = json!(source);
        let (status, body) = api.post("/v1/templates", with_id(&format!("t{n}"), content)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{source}: {body}");
        assert_eq!(body["error"]["field"], "locales.en.in_app.title", "{source}");
    }
    // Nothing of another template leaks through data either: a template sees its data only.
    let mut content = in_app("x");
    content["locales"]["en"]["in_app.body"] = json!("{{ order }}");
    api.post("/v1/templates", with_id("plain", content)).await;
    let (status, preview) = api
        .post("/v1/templates/plain/preview", json!({ "channel": "in_app", "data": { "order": 1 } }))
        .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["content"]["body"], "1");
}

#[tokio::test]
async fn rendering_always_uses_the_pinned_version_even_after_a_newer_one_is_published() {
    let api = api().await;
    api.post("/v1/templates", with_id("shipped", in_app("v1"))).await;
    let data = json!({ "order": "A-1", "name": "Ada" });
    let (status, first) = api.submit(notification("shipped", "in_app", "ada", data.clone())).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let first_id = first["id"].as_str().unwrap().to_owned();
    let (_, view) = api.get(&format!("/v1/notifications/{first_id}")).await;
    assert_eq!(view["template"], json!({ "id": "shipped", "version": "1" }));

    // v2 is added and published before any worker renders the first notification.
    api.post("/v1/templates/shipped/versions", in_app("v2")).await;
    let (status, _) = api.post("/v1/templates/shipped/versions/2/publish", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, second) = api.submit(notification("shipped", "in_app", "grace", data.clone())).await;
    let second_id = second["id"].as_str().unwrap().to_owned();
    let (_, view) = api.get(&format!("/v1/notifications/{second_id}")).await;
    assert_eq!(view["template"]["version"], "2");

    // And rolled back to v1 for good measure: the second still renders v2.
    api.post("/v1/templates/shipped/versions/1/publish", json!({})).await;
    api.work().await;
    let ada = api.inbox("ada").await;
    assert_eq!(ada.len(), 1);
    assert_eq!(
        (ada[0].title.as_str(), ada[0].body.as_str()),
        ("v1: order A-1", "v1: it shipped, Ada.")
    );
    let grace = api.inbox("grace").await;
    assert_eq!(grace[0].title, "v2: order A-1");
    for id in [&first_id, &second_id] {
        let (_, view) = api.get(&format!("/v1/notifications/{id}")).await;
        assert_eq!(view["state"], "delivered", "{view}");
    }
    // The runner compiled each version once and keeps them.
    assert_eq!(api.runner.templates().cached(), 2);
}

#[tokio::test]
async fn a_missing_variable_in_a_registry_template_is_refused_at_submit_with_its_name() {
    let api = api().await;
    let otp = json!({
        "id": "code",
        "default_locale": "en",
        "locales": { "en": { "sms.body": "Your code is {{ code }}, {{ name }}." } }
    });
    api.post("/v1/templates", otp).await;
    let (status, body) =
        api.submit(notification("code", "sms", "ada", json!({ "name": "Ada" }))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "template_render_failed");
    assert_eq!(body["error"]["field"], "data.code");
    assert!(body["error"]["message"].as_str().unwrap().contains("`code`"), "{body}");
    // In a batch, the item is named too, and nothing of the batch is written.
    let batch = json!({ "notifications": [
        notification("code", "sms", "ada", json!({ "name": "Ada", "code": 1 })),
        notification("code", "sms", "bob", json!({ "code": 2 })),
    ]});
    let (status, body) = api.post("/v1/notifications/batch", batch).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "notifications[1].data.name");
    assert_eq!(api.count().await, 0);
    // With the variable it is accepted.
    let (status, _) =
        api.submit(notification("code", "sms", "ada", json!({ "name": "Ada", "code": 7 }))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // A template without a published version is refused as such.
    let draft = json!({
        "id": "draft", "publish": false, "default_locale": "en",
        "locales": { "en": { "sms.body": "x" } }
    });
    api.post("/v1/templates", draft).await;
    let (status, body) = api.submit(notification("draft", "sms", "ada", json!({}))).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("template_not_published"))
    );
}

#[tokio::test]
async fn the_sms_segment_cap_is_enforced_at_submit_and_previews_count_segments() {
    let policy = TemplatePolicy { sms_segments_max: 2, ..TemplatePolicy::default() };
    let api = api_with(policy).await;
    let sms = json!({
        "id": "sms", "default_locale": "en",
        "locales": { "en": { "sms.body": "{{ text }}" } }
    });
    api.post("/v1/templates", sms).await;
    let submit =
        |text: String| api.submit(notification("sms", "sms", "ada", json!({ "text": text })));
    let (status, body) = submit("a".repeat(306)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = submit("a".repeat(307)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "template_limit_exceeded");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("3 segments") && message.contains("at most 2"), "{message}");
    // An emoji makes it UCS-2: 134 characters, 135 UTF-16 units, three segments of 67.
    let (status, body) = submit(format!("{}😀", "a".repeat(133))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("UCS-2"), "{body}");
    assert_eq!(api.count().await, 1);

    let preview = |text: &str| {
        api.post("/v1/templates/sms/preview", json!({ "channel": "sms", "data": { "text": text } }))
    };
    let (status, body) = preview(&format!("{}€", "a".repeat(159))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["sms"],
        json!({ "encoding": "gsm7", "segments": 2, "units": 161, "characters": 160 })
    );
    let (_, body) = preview("Hi 😀").await;
    assert_eq!(
        body["sms"],
        json!({ "encoding": "ucs2", "segments": 1, "units": 5, "characters": 4 })
    );
    assert_eq!(body["content"], json!({ "body": "Hi 😀" }));
    let (status, body) = preview(&"a".repeat(400)).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("template_limit_exceeded"))
    );
}

#[tokio::test]
async fn locales_fall_back_from_region_to_language_to_the_default() {
    let api = api().await;
    let hello = json!({
        "id": "hello", "default_locale": "en",
        "locales": {
            "en": { "in_app.title": "Hello", "in_app.body": "Hello {{ name }}" },
            "fr": { "in_app.title": "Bonjour", "in_app.body": "Bonjour {{ name }}" },
            "fr-CA": { "in_app.title": "Allô", "in_app.body": "Allô {{ name }}" }
        }
    });
    let (status, body) = api.post("/v1/templates", hello).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let preview = |locale: Option<&str>| {
        let mut body = json!({ "channel": "in_app", "data": { "name": "Ada" } });
        if let Some(locale) = locale {
            body["locale"] = json!(locale);
        }
        api.post("/v1/templates/hello/preview", body)
    };
    for (asked, used, title) in [
        (Some("fr-CA"), "fr-CA", "Allô"),
        (Some("fr_ca"), "fr-CA", "Allô"),
        (Some("fr-BE"), "fr", "Bonjour"),
        (Some("fr"), "fr", "Bonjour"),
        (Some("de-AT"), "en", "Hello"),
        (None, "en", "Hello"),
    ] {
        let (status, body) = preview(asked).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            (body["locale"].as_str().unwrap(), body["content"]["title"].as_str().unwrap()),
            (used, title),
            "{asked:?}"
        );
    }
    // A notification carries its locale through to delivery.
    for (recipient, locale) in [("ada", "fr-CA"), ("bob", "fr-FR"), ("cy", "cy")] {
        let mut n = notification("hello", "in_app", recipient, json!({ "name": recipient }));
        n["locale"] = json!(locale);
        let (status, body) = api.submit(n).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    let mut bad = notification("hello", "in_app", "ada", json!({ "name": "x" }));
    bad["locale"] = json!("not a locale");
    let (status, body) = api.submit(bad).await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("locale"))
    );
    api.work().await;
    assert_eq!(api.inbox("ada").await[0].body, "Allô ada");
    assert_eq!(api.inbox("bob").await[0].body, "Bonjour bob");
    assert_eq!(api.inbox("cy").await[0].body, "Hello cy");
}

#[tokio::test]
async fn preview_renders_without_sending_any_version_and_built_ins() {
    let api = api().await;
    api.post("/v1/templates", with_id("shipped", in_app("v1"))).await;
    api.post("/v1/templates/shipped/versions", in_app("v2")).await;
    let data = json!({ "order": 7, "name": "<b>Ada</b>" });
    let (status, body) = api
        .post("/v1/templates/shipped/preview", json!({ "channel": "in_app", "data": data }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 1, "the published version by default");
    assert_eq!(
        body["content"],
        json!({ "title": "v1: order 7", "body": "v1: it shipped, <b>Ada</b>." })
    );
    assert_eq!(body["sms"], Value::Null);
    let (_, body) = api
        .post(
            "/v1/templates/shipped/preview",
            json!({ "channel": "in_app", "data": data, "version": 2 }),
        )
        .await;
    assert_eq!(
        (body["version"].clone(), body["content"]["title"].clone()),
        (json!(2), json!("v2: order 7"))
    );
    // A built-in, with HTML escaped only in the HTML part.
    let (status, body) = api
        .post(
            "/v1/templates/welcome/preview",
            json!({ "channel": "email", "data": { "name": "<b>Ada</b>", "product": "x" } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["content"]["html"].as_str().unwrap().contains("&lt;b&gt;Ada"), "{body}");
    assert!(body["content"]["text"].as_str().unwrap().contains("<b>Ada</b>"), "{body}");
    assert!(body["content"]["subject"].as_str().unwrap().contains("<b>Ada</b>"), "{body}");
    // Errors: unknown template or version 404, a missing variable or a channel it lacks 422.
    for (path, request) in [
        ("/v1/templates/nope/preview", json!({ "channel": "sms" })),
        ("/v1/templates/shipped/preview", json!({ "channel": "in_app", "version": 3 })),
        (
            "/v1/templates/welcome/preview",
            json!({ "channel": "sms", "version": "0000000000000000" }),
        ),
    ] {
        let (status, body) = api.post(path, request).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    let (status, body) = api
        .post(
            "/v1/templates/shipped/preview",
            json!({ "channel": "in_app", "data": { "order": 1 } }),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("data.name"))
    );
    let (status, body) =
        api.post("/v1/templates/shipped/preview", json!({ "channel": "sms" })).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("template_lacks_channel"))
    );
    // Nothing was sent or stored.
    assert_eq!(api.count().await, 0);
    assert!(api.inbox("ada").await.is_empty());
}

#[tokio::test]
async fn registry_limits_are_enforced_with_clear_errors() {
    let policy = TemplatePolicy {
        templates_per_tenant_max: 2,
        versions_per_template_max: 2,
        locales_per_version_max: 2,
        ..TemplatePolicy::default()
    };
    let api = api_with(policy).await;
    for id in ["one", "two"] {
        let (status, _) = api.post("/v1/templates", with_id(id, in_app(id))).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (status, body) = api.post("/v1/templates", with_id("three", in_app("3"))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "limit_reached");
    assert!(body["error"]["message"].as_str().unwrap().contains("templates_per_tenant_max"));
    // The other tenant has its own count.
    let (status, _) =
        api.call("POST", "/v1/templates", &api.key_b, Some(with_id("three", in_app("3")))).await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, _) = api.post("/v1/templates/one/versions", in_app("2")).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = api.post("/v1/templates/one/versions", in_app("3")).await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("version"))
    );
    assert!(body["error"]["message"].as_str().unwrap().contains("versions_per_template_max"));

    let mut three_locales = in_app("x");
    for tag in ["fr", "de"] {
        three_locales["locales"][tag] = three_locales["locales"]["en"].clone();
    }
    let (status, body) = api.post("/v1/templates/two/versions", three_locales).await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("locales"))
    );
    assert!(body["error"]["message"].as_str().unwrap().contains("at most 2"), "{body}");

    let big = json!({ "default_locale": "en", "locales": { "en": { "sms.body": "x".repeat(64 * 1024 + 1) } } });
    let (status, body) = api.post("/v1/templates/two/versions", big).await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("locales.en.sms.body"))
    );
}

#[tokio::test]
async fn a_tenants_template_shadows_a_built_in_for_that_tenant_only() {
    let api = api().await;
    let welcome = json!({
        "id": "welcome", "default_locale": "en",
        "locales": { "en": { "in_app.title": "Ours", "in_app.body": "Our own welcome, {{ name }}" } }
    });
    let (status, _) = api.post("/v1/templates", welcome).await;
    assert_eq!(status, StatusCode::CREATED);
    let data = json!({ "name": "Ada", "product": "courant" });
    let (_, a) = api.submit(notification("welcome", "in_app", "ada", data.clone())).await;
    let (_, view) = api.get(&format!("/v1/notifications/{}", a["id"].as_str().unwrap())).await;
    assert_eq!(view["template"]["version"], "1");
    // Tenant b still gets the built-in, and does not see tenant a's templates.
    let (status, b) = api
        .call(
            "POST",
            "/v1/notifications",
            &api.key_b,
            Some(notification("welcome", "in_app", "bob", data)),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{b}");
    let path = format!("/v1/notifications/{}", b["id"].as_str().unwrap());
    let (_, view) = api.call("GET", &path, &api.key_b, None).await;
    assert_eq!(view["template"]["version"].as_str().unwrap().len(), 16, "the built-in's hash");
    let (_, shown) = api.call("GET", "/v1/templates/welcome", &api.key_b, None).await;
    assert_eq!(shown["source"], "builtin");
    let (_, listed) = api.call("GET", "/v1/templates", &api.key_b, None).await;
    assert_eq!(listed["templates"], json!([]));
    let (status, _) = api.call("GET", "/v1/templates/welcome/versions/1", &api.key_b, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    api.work().await;
    assert_eq!(api.inbox("ada").await[0].body, "Our own welcome, Ada");
}

#[tokio::test]
async fn an_in_app_action_is_checked_at_submit_and_delivered_with_the_entry() {
    let api = api().await;
    let mut content = in_app("v1");
    content["locales"]["en"]["in_app.action"] = json!("{{ link }}");
    api.post("/v1/templates", with_id("linked", content)).await;
    let submit = |link: &str, to: &str| {
        api.submit(notification(
            "linked",
            "in_app",
            to,
            json!({ "order": 1, "name": "A", "link": link }),
        ))
    };
    for bad in ["javascript:alert(document.cookie)", "data:text/html,x", "not a url"] {
        let (status, body) = submit(bad, "ada").await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("in_app.action"), "{body}");
    }
    let (status, _) = submit("https://shop.example/orders/1", "ada").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = submit("shop://orders/1", "bob").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    api.work().await;
    assert_eq!(api.inbox("ada").await[0].action.as_deref(), Some("https://shop.example/orders/1"));
    assert_eq!(api.inbox("bob").await[0].action.as_deref(), Some("shop://orders/1"));
    let (_, inbox) = api.get("/v1/recipients/bob/inbox").await;
    assert_eq!(inbox["items"][0]["action"], "shop://orders/1");
}

#[test]
fn template_limits_out_of_range_are_refused_at_start_up_naming_the_field() {
    for (text, field) in [
        ("[policy.templates]\nsms_segments_max = 11\n", "templates.sms_segments_max"),
        ("[policy.templates]\nsms_segments_max = 0\n", "templates.sms_segments_max"),
        (
            "[policy.templates]\nlocales_per_version_max = 201\n",
            "templates.locales_per_version_max",
        ),
        ("[policy.templates]\ncompiled_cache_max = 0\n", "templates.compiled_cache_max"),
    ] {
        let config: courant::config::Config = toml::from_str(text).unwrap();
        let err = format!("{:#}", config.finish().unwrap_err());
        assert!(err.contains(field), "{text}: {err}");
    }
    let config: courant::config::Config =
        toml::from_str("[policy.templates]\nsms_segments_max = 10\n").unwrap();
    assert_eq!(config.finish().unwrap().policy.templates.sms_segments_max, 10);
    let err =
        toml::from_str::<courant::config::Config>("[policy.templates]\nsms_segment_max = 3\n")
            .unwrap_err()
            .to_string();
    assert!(err.contains("sms_segment_max"), "{err}");
}
