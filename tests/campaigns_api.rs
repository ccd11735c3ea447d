//! The campaign endpoints through `router(state)`, without a socket, over the in-memory store
//! with the real runner, the in-app provider and the campaign expander, on a clock the test
//! moves: validation, idempotency, drafts and pages, pace, progress, cancel, listing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use courant::api::{AppState, Limits, router};
use futures::FutureExt;
use serde_json::{Value, json};
use steps::model::{Channel, NotificationId, ProviderName, RecipientId, TenantId};
use storage::memory::MemoryStore;
use storage::queue::WakeQueue;
use tower::ServiceExt;
use workflows::campaign::CampaignId;
use workflows::fanout::Expander;
use workflows::policy::Policy;
use workflows::ports::{Campaigns, Clock, Inbox, Provider, Store};
use workflows::runner::Runner;

const T0: u64 = 1_700_000_000_000;

/// A clock the test moves by hand, shared by the store, the runner and the provider.
#[derive(Debug, Clone)]
struct TestClock(Arc<AtomicU64>);

impl Clock for TestClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl TestClock {
    fn set(&self, ms: u64) {
        self.0.fetch_max(ms, Ordering::SeqCst);
    }
}

struct Api {
    router: axum::Router,
    store: MemoryStore,
    runner: Arc<Runner<MemoryStore, TestClock>>,
    expander: Expander<MemoryStore, TestClock>,
    clock: TestClock,
    key_a: String,
    key_b: String,
}

async fn api() -> Api {
    let clock = TestClock(Arc::new(AtomicU64::new(T0)));
    let store = MemoryStore::with_clock(Arc::new(clock.clone()));
    let templates = courant::templates::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/templates"
    )))
    .unwrap();
    let inapp = ProviderName::new("inapp").unwrap();
    let mut policy = Policy::default();
    policy.routes.insert(Channel::InApp, vec![inapp.clone()]);
    let provider: Arc<dyn Provider> = Arc::new(providers::inapp::InAppProvider::with_clock(
        inapp,
        store.clone(),
        Arc::new(clock.clone()),
    ));
    let runner = Arc::new(
        Runner::new(
            store.clone(),
            clock.clone(),
            Arc::new(templates),
            Arc::new(policy),
            [provider],
        )
        .with_template_store(Arc::new(store.clone())),
    );
    let key_a = courant::auth::create(&store, &TenantId::new("a").unwrap()).await.unwrap();
    let key_b = courant::auth::create(&store, &TenantId::new("b").unwrap()).await.unwrap();
    let state = AppState {
        runner: runner.clone(),
        limits: Limits { body_bytes_max: 4_096, batch_len_max: 3, ..Limits::default() },
        ready: Arc::new(|| async { Ok(()) }.boxed()),
    };
    Api {
        router: router(state),
        store,
        expander: Expander::new(runner.clone()),
        runner,
        clock,
        key_a,
        key_b,
    }
}

fn ids(from: usize, n: usize) -> Vec<String> {
    (from..from + n).map(|i| format!("user-{i}")).collect()
}

fn campaign_body(recipients: &[String], rate: u32) -> Value {
    json!({
        "template": "welcome",
        "channel": "in_app",
        "category": "marketing",
        "data": { "name": "there", "product": "courant" },
        "segment": { "recipients": recipients },
        "rate_per_sec": rate,
    })
}

impl Api {
    async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> (StatusCode, Value, HeaderMap) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        if let Some(k) = idempotency_key {
            request = request.header("idempotency-key", k);
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        let request = request.header("content-type", "application/json").body(body).unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 24).await.unwrap();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value, headers)
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let (status, value, _) = self.call("POST", path, Some(&self.key_a), Some(body), None).await;
        (status, value)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (status, value, _) = self.call("GET", path, Some(&self.key_a), None, None).await;
        (status, value)
    }

    async fn create(&self, body: &Value) -> String {
        let (status, view) = self.post("/v1/campaigns", body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{view}");
        view["id"].as_str().unwrap().to_owned()
    }

    async fn show(&self, id: &str) -> Value {
        let (status, view) = self.get(&format!("/v1/campaigns/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{view}");
        view
    }

    /// Runs every ready wake-up, as the workers would, until none is left.
    async fn work(&self) {
        loop {
            self.store.promote_due(self.clock.now_ms(), 1_000).await.unwrap();
            let deliveries = self.store.fetch("test-worker", 1_000, 0).await.unwrap();
            if deliveries.is_empty() {
                return;
            }
            for delivery in &deliveries {
                self.runner.advance(&delivery.wake).await.unwrap();
            }
            self.store.ack(&deliveries).await.unwrap();
        }
    }

    /// One campaign round, then the workers.
    async fn tick(&self) -> workflows::fanout::Tick {
        let tick = self.expander.tick().await.unwrap();
        self.work().await;
        tick
    }

    /// Campaign rounds and workers, moving the clock to each next due page, until no campaign
    /// has work.
    async fn run(&self) {
        for _ in 0..10_000 {
            let tick = self.tick().await;
            if tick.pages == 0 {
                match self.store.next_campaign_due_ms() {
                    Some(due_ms) => self.clock.set(due_ms),
                    None => return,
                }
            }
        }
        panic!("the campaigns never finished");
    }

    async fn history(&self, id: &NotificationId) -> Vec<workflows::record::HistoryEntry> {
        self.store.history(&TenantId::new("a").unwrap(), id).await.unwrap()
    }

    fn notification(&self, campaign: &str, recipient: &str) -> NotificationId {
        self.store.campaign_notification_id(
            &TenantId::new("a").unwrap(),
            &CampaignId::new(campaign).unwrap(),
            &RecipientId::new(recipient).unwrap(),
        )
    }
}

#[tokio::test]
async fn a_campaign_expands_at_its_pace_and_completes_with_its_progress() {
    let api = api().await;
    let mut recipients = ids(0, 1_233);
    recipients.push("user-7".into()); // listed twice: one notification
    let id = api.create(&campaign_body(&recipients, 500)).await;

    let view = api.show(&id).await;
    assert_eq!(view["state"], "expanding");
    assert_eq!((view["recipients"].as_u64(), view["position"].as_u64()), (Some(1_234), Some(0)));
    assert_eq!(view["progress"]["expanded"], 0);

    // The first page: 500 notifications (rate 500/s), delivered by the workers.
    let tick = api.tick().await;
    assert_eq!((tick.pages, tick.created), (1, 500));
    let view = api.show(&id).await;
    assert_eq!(view["position"], 500);
    assert_eq!(view["progress"]["expanded"], 500);
    assert_eq!(view["progress"]["delivered"], 500);
    assert_eq!(view["progress"]["in_flight"], 0);
    assert_eq!(view["state"], "expanding");
    // The pace: the next page is due a second after the first started, not before.
    assert_eq!(api.tick().await.pages, 0, "the next page came before its pace");
    assert_eq!(api.store.next_campaign_due_ms(), Some(T0 + 1_000));

    api.run().await;
    let view = api.show(&id).await;
    assert_eq!(view["state"], "completed", "{view}");
    assert_eq!(view["position"], 1_234);
    let progress = &view["progress"];
    assert_eq!(progress["expanded"], 1_233, "an id listed twice got two notifications");
    assert_eq!(progress["delivered"], 1_233);
    assert_eq!(progress["in_flight"], 0);
    assert_eq!(progress["skipped"]["total"], 0);
    assert_eq!(view["counts"], json!({ "delivered": 1_233 }));
    assert!(view["finished_at"].is_string());

    // Each recipient got exactly one, and its history names the campaign.
    let tenant = TenantId::new("a").unwrap();
    let inbox =
        api.store.inbox_list(&tenant, &RecipientId::new("user-7").unwrap(), 10).await.unwrap();
    assert_eq!(inbox.len(), 1);
    let history = api.history(&api.notification(&id, "user-7")).await;
    assert_eq!(history[0].cause.to_string(), "api campaign");
    assert!(history[0].note.as_deref().unwrap().contains(&id), "{history:?}");
    assert_eq!(history.last().unwrap().to.kind().as_str(), "delivered");

    // A completed campaign has nothing to cancel.
    let (status, body) = api.post(&format!("/v1/campaigns/{id}/cancel"), &json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

#[tokio::test]
async fn bad_input_is_refused_with_the_field_named_and_nothing_is_written() {
    let api = api().await;
    let good = campaign_body(&ids(0, 3), 100);
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (json!({ "template": "welcome", "channel": "in_app" }), StatusCode::BAD_REQUEST, "body"),
        (
            {
                let mut b = good.clone();
                b["segment"]["recipients"] = json!(["ok", "not ok"]);
                b
            },
            StatusCode::BAD_REQUEST,
            "segment.recipients[1]",
        ),
        (
            {
                let mut b = good.clone();
                b["segment"]["recipients"] = json!(ids(0, 10_001));
                b
            },
            StatusCode::BAD_REQUEST,
            "segment.recipients",
        ),
        (
            {
                let mut b = good.clone();
                b["segment"]["recipients"] = json!([]);
                b
            },
            StatusCode::BAD_REQUEST,
            "segment.recipients",
        ),
        (
            {
                let mut b = good.clone();
                b["rate_per_sec"] = json!(0);
                b
            },
            StatusCode::BAD_REQUEST,
            "rate_per_sec",
        ),
        (
            {
                let mut b = good.clone();
                b["rate_per_sec"] = json!(10_001);
                b
            },
            StatusCode::BAD_REQUEST,
            "rate_per_sec",
        ),
        (
            {
                let mut b = good.clone();
                b["channel"] = json!("fax");
                b
            },
            StatusCode::BAD_REQUEST,
            "channel",
        ),
        (
            {
                let mut b = good.clone();
                b["segment"] = json!({});
                b
            },
            StatusCode::BAD_REQUEST,
            "segment",
        ),
        (
            {
                let mut b = good.clone();
                b["segment"] = json!({ "filter": { "locale": "not a locale" } });
                b
            },
            StatusCode::BAD_REQUEST,
            "segment.filter.locale",
        ),
        (
            {
                let mut b = good.clone();
                b["segment"] = json!({ "filter": { "time_zone": "Mars/Olympus" } });
                b
            },
            StatusCode::BAD_REQUEST,
            "segment.filter.time_zone",
        ),
        (
            {
                let mut b = good.clone();
                b["data"] = json!({ "product": "courant" });
                b
            },
            StatusCode::UNPROCESSABLE_ENTITY,
            "data",
        ),
        (
            {
                let mut b = good.clone();
                b["template"] = json!("no_such_template");
                b
            },
            StatusCode::UNPROCESSABLE_ENTITY,
            "template",
        ),
        (
            {
                let mut b = good.clone();
                b["segment"]["filter"] = json!({});
                b
            },
            StatusCode::BAD_REQUEST,
            "segment",
        ),
    ];
    for (body, status, field) in cases {
        let (got, view) = api.post("/v1/campaigns", &body).await;
        assert_eq!(got, status, "{view}");
        let named = view["error"]["field"].as_str().unwrap_or_default();
        assert!(named.starts_with(field), "expected field {field}, got {view}");
    }
    // The missing variable is named.
    let mut missing = good.clone();
    missing["data"] = json!({ "product": "courant" });
    let (_, view) = api.post("/v1/campaigns", &missing).await;
    assert!(view["error"]["message"].as_str().unwrap().contains("name"), "{view}");
    // Without a key.
    let (status, _, _) = api.call("POST", "/v1/campaigns", None, Some(&good), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, list) = api.get("/v1/campaigns").await;
    assert_eq!(list["campaigns"], json!([]), "a refused request wrote a campaign");
    // A page of 10,000 long ids fits the campaign body limit, and a larger body gets 413.
    let long: Vec<String> = (0..10_000).map(|i| format!("{i:0>120}")).collect();
    let (status, view) = api.post("/v1/campaigns", &campaign_body(&long, 100)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{view}");
    let mut huge = campaign_body(&long, 100);
    huge["data"]["padding"] = json!("x".repeat(2 * 1024 * 1024));
    let (status, _) = api.post("/v1/campaigns", &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn idempotency_keys_create_once_and_append_once() {
    let api = api().await;
    let body = campaign_body(&ids(0, 3), 100);
    let (status, first, _) =
        api.call("POST", "/v1/campaigns", Some(&api.key_a), Some(&body), Some("launch-7")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(first["created"], true);
    let (status, again, headers) =
        api.call("POST", "/v1/campaigns", Some(&api.key_a), Some(&body), Some("launch-7")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        (again["id"].clone(), again["created"].clone()),
        (first["id"].clone(), json!(false))
    );
    assert_eq!(headers.get("idempotent-replayed").unwrap(), "true");
    let other = campaign_body(&ids(0, 4), 100);
    let (status, refused, _) =
        api.call("POST", "/v1/campaigns", Some(&api.key_a), Some(&other), Some("launch-7")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["error"]["field"], "Idempotency-Key");
    let (_, list) = api.get("/v1/campaigns").await;
    assert_eq!(list["campaigns"].as_array().unwrap().len(), 1);

    // Appends to a draft.
    let mut draft = campaign_body(&ids(0, 2), 100);
    draft["draft"] = json!(true);
    let id = api.create(&draft).await;
    let path = format!("/v1/campaigns/{id}/recipients");
    let page = json!({ "recipients": ids(2, 3) });
    for _ in 0..2 {
        let (status, view, _) =
            api.call("POST", &path, Some(&api.key_a), Some(&page), Some("page-2")).await;
        assert_eq!(status, StatusCode::OK, "{view}");
        assert_eq!(view["recipients"], 5, "an append with the same key appended twice");
    }
    let changed = json!({ "recipients": ids(9, 1) });
    let (status, _, _) =
        api.call("POST", &path, Some(&api.key_a), Some(&changed), Some("page-2")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(api.show(&id).await["recipients"], 5);
}

#[tokio::test]
async fn a_draft_takes_pages_then_starts_and_takes_no_more() {
    let api = api().await;
    let mut draft = campaign_body(&[], 10_000);
    draft["draft"] = json!(true);
    let id = api.create(&draft).await;
    for page in 0..3 {
        let body = json!({ "recipients": ids(page * 100, 100) });
        let (status, view) = api.post(&format!("/v1/campaigns/{id}/recipients"), &body).await;
        assert_eq!(status, StatusCode::OK, "{view}");
        assert_eq!(view["recipients"], (page + 1) * 100);
    }
    let (status, view) =
        api.post(&format!("/v1/campaigns/{id}/recipients"), &json!({ "recipients": [] })).await;
    assert_eq!(
        (status, view["error"]["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("recipients"))
    );
    api.run().await;
    assert_eq!(api.show(&id).await["progress"]["expanded"], 0, "a draft was expanded");

    for _ in 0..2 {
        let (status, view) = api.post(&format!("/v1/campaigns/{id}/start"), &json!({})).await;
        assert_eq!((status, view["state"].clone()), (StatusCode::OK, json!("expanding")));
    }
    let (status, _) = api
        .post(&format!("/v1/campaigns/{id}/recipients"), &json!({ "recipients": ["late"] }))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    api.run().await;
    let view = api.show(&id).await;
    assert_eq!(
        (view["state"].clone(), view["progress"]["delivered"].clone()),
        (json!("completed"), json!(300))
    );

    // Another tenant sees none of it.
    let path = format!("/v1/campaigns/{id}");
    let (status, _, _) = api.call("GET", &path, Some(&api.key_b), None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) =
        api.call("POST", &format!("{path}/cancel"), Some(&api.key_b), Some(&json!({})), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list, _) = api.call("GET", "/v1/campaigns", Some(&api.key_b), None, None).await;
    assert_eq!(list["campaigns"], json!([]));
    let (status, _) = api.get("/v1/campaigns/not%20an%20id").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn cancel_stops_expansion_and_cancels_what_has_not_reached_a_provider() {
    let api = api().await;
    let id = api.create(&campaign_body(&ids(0, 1_000), 100)).await;
    // One page of 100 expanded, not yet worked on.
    let tick = api.expander.tick().await.unwrap();
    assert_eq!(tick.created, 100);
    let (status, view) = api.post(&format!("/v1/campaigns/{id}/cancel"), &json!({})).await;
    assert_eq!((status, view["state"].clone()), (StatusCode::OK, json!("cancelling")));
    api.run().await;
    let view = api.show(&id).await;
    assert_eq!(view["state"], "cancelled", "{view}");
    assert_eq!(view["position"], 100, "expansion went on after the cancel");
    let progress = &view["progress"];
    assert_eq!(
        (progress["expanded"].clone(), progress["cancelled"].clone()),
        (json!(100), json!(100))
    );
    assert_eq!(progress["delivered"], 0);
    let history = api.history(&api.notification(&id, "user-42")).await;
    let last = history.last().unwrap();
    assert_eq!(last.to.kind().as_str(), "cancelled");
    assert_eq!(last.cause.to_string(), "api campaign cancel");
    assert!(last.note.as_deref().unwrap().contains(&format!("campaign {id} was cancelled")));
    // Cancelling again changes nothing.
    let (status, view) = api.post(&format!("/v1/campaigns/{id}/cancel"), &json!({})).await;
    assert_eq!((status, view["state"].clone()), (StatusCode::OK, json!("cancelled")));

    // Notifications that reached a provider are left alone: deliver one page, expand the next,
    // cancel.
    let second = api.create(&campaign_body(&ids(0, 1_000), 100)).await;
    api.tick().await;
    api.clock.set(api.clock.now_ms() + 1_000);
    api.expander.tick().await.unwrap();
    api.post(&format!("/v1/campaigns/{second}/cancel"), &json!({})).await;
    api.run().await;
    let progress = api.show(&second).await["progress"].clone();
    assert_eq!(
        (progress["delivered"].clone(), progress["cancelled"].clone()),
        (json!(100), json!(100))
    );
    assert_eq!(progress["expanded"], 200);

    // A draft is cancelled at once.
    let mut draft = campaign_body(&ids(0, 5), 100);
    draft["draft"] = json!(true);
    let third = api.create(&draft).await;
    let (_, view) = api.post(&format!("/v1/campaigns/{third}/cancel"), &json!({})).await;
    assert_eq!(view["state"], "cancelled");
    let (status, _) = api.post(&format!("/v1/campaigns/{third}/start"), &json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn campaigns_list_newest_first_in_pages() {
    let api = api().await;
    let mut created = Vec::new();
    for i in 0..5 {
        api.clock.set(T0 + i * 10);
        let mut body = campaign_body(&ids(0, 1), 100);
        body["draft"] = json!(true);
        created.push(api.create(&body).await);
    }
    created.reverse();
    let (status, page) = api.get("/v1/campaigns?limit=2").await;
    assert_eq!(status, StatusCode::OK);
    let mut seen: Vec<String> = Vec::new();
    let mut page = page;
    loop {
        for c in page["campaigns"].as_array().unwrap() {
            assert_eq!(c["state"], "draft");
            seen.push(c["id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => page = api.get(&format!("/v1/campaigns?limit=2&after={next}")).await.1,
            None => break,
        }
    }
    assert_eq!(seen, created);
    for bad in ["limit=0", "limit=101", "after=a%20b", "nope=1"] {
        let (status, _) = api.get(&format!("/v1/campaigns?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn pages_wait_while_the_workers_are_behind() {
    let api = api().await;
    let id = api.create(&campaign_body(&ids(0, 8_000), 10_000)).await;
    // Expand without working: pages of 500 every 50 ms until 5,000 are due, then held.
    let mut created = 0;
    for _ in 0..40 {
        let tick = api.expander.tick().await.unwrap();
        created += tick.created;
        if tick.held > 0 {
            break;
        }
        api.clock.set(api.store.next_campaign_due_ms().unwrap());
    }
    assert_eq!(created, workflows::campaign::DUE_MAX, "expansion went on past the cap");
    let view = api.show(&id).await;
    assert_eq!(
        (view["position"].clone(), view["progress"]["in_flight"].clone()),
        (json!(5_000), json!(5_000))
    );
    // Held pages come back every HOLD_MS and wait while nothing moves.
    api.clock.set(api.store.next_campaign_due_ms().unwrap());
    assert_eq!(api.expander.tick().await.unwrap().held, 1);
    // The workers catch up; the rest follows.
    api.work().await;
    api.run().await;
    let view = api.show(&id).await;
    assert_eq!(
        (view["state"].clone(), view["progress"]["delivered"].clone()),
        (json!("completed"), json!(8_000))
    );
}

/// Puts a profile in the directory.
async fn profile(api: &Api, id: &str, contact: Value) {
    use workflows::ports::Directory;
    let contact: steps::recipient::Contact = serde_json::from_value(contact).unwrap();
    let tenant = TenantId::new("a").unwrap();
    let recipient = RecipientId::new(id).unwrap();
    api.store.put_contact(&tenant, &recipient, &contact, T0).await.unwrap();
}

async fn request_of(api: &Api, campaign: &str, recipient: &str) -> Option<steps::model::Request> {
    let id = api.notification(campaign, recipient);
    let record = api.store.load(&TenantId::new("a").unwrap(), &id).await.unwrap();
    record.map(|r| r.request)
}

#[tokio::test]
async fn a_filter_segment_walks_the_directory_and_takes_addresses_from_profiles() {
    let api = api().await;
    // 1,200 recipients, a third French with an email address, a third French without one.
    for i in 0..1_200 {
        let contact = match i % 3 {
            0 => json!({ "email": format!("p{i}@example.com"), "locale": "fr-FR" }),
            1 => json!({ "locale": "fr" }),
            _ => json!({ "email": format!("p{i}@example.com"), "locale": "en" }),
        };
        profile(&api, &format!("p{i:04}"), contact).await;
    }
    let body = json!({
        "template": "welcome",
        "channel": "email",
        "data": { "name": "there", "product": "courant" },
        "segment": { "filter": { "locale": "fr", "reachable": true } },
        "rate_per_sec": 500,
    });
    let id = api.create(&body).await;
    assert_eq!(api.show(&id).await["recipients"], 0, "a filter's size is learnt as it walks");
    let tick = api.expander.tick().await.unwrap();
    assert_eq!((tick.pages, tick.created), (1, 167), "a page walks 500 directory entries");
    let view = api.show(&id).await;
    assert_eq!((view["position"].clone(), view["recipients"].clone()), (json!(500), json!(167)));
    api.run().await;
    let view = api.show(&id).await;
    assert_eq!(view["position"], 1_200);
    assert_eq!(view["recipients"], 400);
    assert_eq!(view["progress"]["expanded"], 400, "{view}");
    // Named by id: the lifecycle takes the address from the profile when it sends. Those without
    // one, or in English, got nothing.
    let request = request_of(&api, &id, "p0003").await.expect("a French recipient with email");
    assert_eq!((request.recipient.email, request.channel), (None, Channel::Email));
    assert!(request_of(&api, &id, "p0004").await.is_none(), "no email: not reachable");
    assert!(request_of(&api, &id, "p0005").await.is_none(), "English: not in the segment");
    // A filter campaign takes no list of ids.
    let (status, _) =
        api.post(&format!("/v1/campaigns/{id}/recipients"), &json!({ "recipients": ["x"] })).await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn skips_for_want_of_an_address_or_a_preference_are_counted_by_reason() {
    let api = api().await;
    profile(&api, "ada", json!({ "phone": "+447911123456" })).await;
    profile(&api, "bob", json!({ "email": "bob@example.com" })).await;
    let body = |category: &str| {
        json!({
            "template": "otp",
            "channel": "sms",
            "category": category,
            "data": { "code": "123456", "product": "courant" },
            "segment": { "recipients": ["ada", "bob", "cy"] },
        })
    };
    let account = api.create(&body("account")).await;
    // Marketing SMS needs the recipient's opt-in by default: the preference filter holds every
    // campaign notification to it like any other.
    let marketing = api.create(&body("marketing")).await;
    api.run().await;
    let view = api.show(&account).await;
    let progress = &view["progress"];
    assert_eq!(progress["expanded"], 3);
    assert_eq!(progress["skipped"]["by_reason"], json!({ "no_address": 2 }), "{view}");
    // ada's stored phone addresses hers; there is no SMS provider in this test, so it
    // dead-letters for want of a route.
    assert_eq!(progress["failed"], 1, "{view}");
    assert_eq!(view["state"], "completed");
    let view = api.show(&marketing).await;
    assert_eq!(view["progress"]["skipped"]["by_reason"], json!({ "not_opted_in": 3 }), "{view}");
    assert_eq!(view["counts"], json!({ "skipped:not_opted_in": 3 }));
}

#[tokio::test]
async fn each_notification_renders_in_its_recipients_locale() {
    let api = api().await;
    let template = json!({
        "id": "promo",
        "default_locale": "en",
        "locales": {
            "en": { "in_app.title": "Sale", "in_app.body": "Hello {{ name }}" },
            "fr": { "in_app.title": "Soldes", "in_app.body": "Bonjour {{ name }}" },
        },
    });
    let (status, view) = api.post("/v1/templates", &template).await;
    assert_eq!(status, StatusCode::CREATED, "{view}");
    profile(&api, "amelie", json!({ "locale": "fr-CA" })).await;
    profile(&api, "bob", json!({ "locale": "en-GB" })).await;
    let body = json!({
        "template": "promo",
        "channel": "in_app",
        "data": { "name": "you" },
        "segment": { "recipients": ["amelie", "bob", "cy"] },
    });
    api.create(&body).await;
    api.run().await;
    let tenant = TenantId::new("a").unwrap();
    let title = |recipient: &str| {
        let recipient = RecipientId::new(recipient).unwrap();
        let store = api.store.clone();
        let tenant = tenant.clone();
        async move { store.inbox_list(&tenant, &recipient, 1).await.unwrap()[0].title.clone() }
    };
    assert_eq!(title("amelie").await, "Soldes", "fr-CA falls back to fr");
    assert_eq!(title("bob").await, "Sale");
    assert_eq!(title("cy").await, "Sale", "no profile: the default locale");
}

#[tokio::test]
async fn a_chat_campaign_needs_no_address_for_any_recipient() {
    let api = api().await;
    profile(&api, "ada", json!({ "phone": "+447911123456" })).await;
    let id = api
        .create(&json!({
            "template": "order_shipped",
            "channel": "chat",
            "category": "account",
            "data": { "name": "there", "order_id": "A-1" },
            "segment": { "recipients": ["ada", "bob"] },
        }))
        .await;
    api.run().await;
    let view = api.show(&id).await;
    let progress = &view["progress"];
    assert_eq!(progress["expanded"], 2, "{view}");
    // A chat provider posts to its own endpoint, so nobody is skipped for want of an address;
    // there is no chat provider in this test, so both dead-letter for want of a route.
    assert_eq!(progress["skipped"]["total"], 0, "{view}");
    assert_eq!(progress["failed"], 2, "{view}");
    assert_eq!(view["state"], "completed");
}
