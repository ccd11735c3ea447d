//! The conformance suite against the Redis store, each test on its own throwaway redis-server.

use storage::redis::RedisStore;
use storage::testing::RedisServer;

async fn fresh() -> (RedisStore, RedisServer) {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.expect("connect to the test server");
    (store, server)
}

storage::conformance_tests!(fresh);
storage::campaign_conformance_tests!(fresh);
storage::inbox_conformance_tests!(fresh);
storage::transition_conformance_tests!(fresh);

// ---- Redis-only checks -------------------------------------------------------------------------

use std::collections::BTreeSet;

use steps::limits::{Limit, Window};
use steps::model::{Channel, RecipientId, TenantId};
use steps::rate::OverLimit;
use storage::keys;
use storage::queue::{REAPER_SLACK_MS, Reaped, WakeQueue};
use workflows::machine::State;
use workflows::ports::{
    ApiKey, Inbox, InboxItem, LimitWindows, RecipientKey, Store, TemplateStore,
};
use workflows::record::{Cause, Commit, Created, HistoryEntry, Idempotency, Record};

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(server.url()).expect("url");
    client.get_multiplexed_async_connection().await.expect("connect")
}

/// The hash tag of a key: what Redis Cluster hashes.
fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let close = open + key[open..].find('}')?;
    (close > open + 1).then(|| &key[open + 1..close])
}

/// Every key is under `courant:` with a hash tag, and all the keys of one notification (record,
/// history, indexes, idempotency key, queue) share the notification's shard tag.
#[tokio::test]
async fn every_key_is_namespaced_and_a_notification_lives_in_one_slot() {
    let (store, server) = fresh().await;
    let acme = TenantId::new("acme").unwrap();
    let now = store.now_ms();
    let idem = Idempotency { key: "order-7".into(), fingerprint: "fp".into() };
    let id = keys::new_notification_id(&acme, Some(&idem.key), "01HZZZZZZZZZZZZZZZZZ000001");
    let shard = keys::shard_of(&id).expect("minted");
    let request: steps::model::Request = serde_json::from_value(serde_json::json!({
        "recipient": { "id": "bob" },
        "channel": "in_app",
        "template": { "id": "welcome", "version": "v1" },
        "data": {},
        "category": "news"
    }))
    .expect("request");
    let record = Record {
        tenant: acme.clone(),
        id: id.clone(),
        version: 1,
        state: State::Received {},
        request,
        seed: 3,
        created_at_ms: now,
        updated_at_ms: now,
        wake_at_ms: Some(now),
        replay: None,
    };
    let first = HistoryEntry {
        at_ms: now,
        version: 1,
        from: None,
        to: State::Received {},
        cause: Cause::Api { action: "submit".into() },
        note: None,
    };
    assert_eq!(store.create(&record, &first, Some(&idem)).await, Ok(Created::New));
    // The record names its idempotency key (for a purge), which lives in the record's slot.
    let named: Option<String> = redis::cmd("HGET")
        .arg(keys::record(&acme, &id))
        .arg("idem")
        .query_async(&mut raw(&server).await)
        .await
        .unwrap();
    assert_eq!(named, Some(keys::idempotency(&acme, &idem.key)));
    let mut conn = raw(&server).await;
    let deadline = async |conn: &mut redis::aio::MultiplexedConnection| -> Option<u64> {
        let mut zscore = redis::cmd("ZSCORE");
        zscore.arg(keys::deadlines(shard)).arg(format!("acme/{id}"));
        zscore.query_async(conn).await.unwrap()
    };
    let in_slot = deadline(&mut conn).await;
    assert_eq!(in_slot, Some(now + REAPER_SLACK_MS), "the deadline is in the record's slot");
    let commit = Commit {
        tenant: acme.clone(),
        id: id.clone(),
        expected_version: 1,
        state: State::Cancelled {},
        history: vec![],
        wake_at_ms: Some(now + 60_000),
        now_ms: now,
        replay: None,
    };
    store.commit(&commit).await.expect("commit");
    assert_eq!(deadline(&mut conn).await, None, "a cancelled record keeps no deadline");
    let bob = RecipientId::new("bob").unwrap();
    let key = RecipientKey { tenant: acme.clone(), recipient: bob.clone() };
    let category = steps::model::Category::new("news").unwrap();
    let windows = [
        Window {
            limit: Limit::Channel { channel: Channel::Sms, max: 5, window_ms: 60_000 },
            over_limit: OverLimit::Defer,
        },
        Window {
            limit: Limit::Cap { category, max: 1, window_ms: 86_400_000 },
            over_limit: OverLimit::Defer,
        },
    ];
    store.acquire_windows(&key, &id, &windows, now).await.expect("limits");
    let item = InboxItem {
        notification_id: id.clone(),
        title: "t".into(),
        body: "b".into(),
        category: steps::model::Category::new("news").unwrap(),
        at_ms: now,
        read: false,
        action: None,
    };
    store.inbox_append(&acme, &bob, &item).await.expect("inbox");
    let welcome = steps::model::TemplateId::new("welcome").unwrap();
    let content: steps::render::TemplateContent = serde_json::from_value(serde_json::json!({
        "default_locale": "en",
        "locales": { "en": { "sms.body": "Hi" } }
    }))
    .unwrap();
    let created = store.template_create(&acme, &welcome, &content, true, now, 10).await;
    assert!(matches!(created, Ok(workflows::ports::TemplateWrite::Done(_))), "{created:?}");
    let api = ApiKey { tenant: acme.clone(), secret_sha256_hex: "00".repeat(32) };
    store.put_api_key("0123456789abcdef", &api).await.expect("api key");

    let all: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut conn).await.unwrap();
    let tag = format!("s{shard:02x}");
    let mut seen = BTreeSet::new();
    for k in &all {
        assert!(k.starts_with("courant:"), "{k} is outside the namespace");
        if k.starts_with("courant:apikey:") {
            seen.insert("apikey");
            continue;
        }
        let t = hash_tag(k).unwrap_or_else(|| panic!("{k} has no hash tag"));
        if k.contains(":t:acme:") {
            assert_eq!(t, tag, "{k} is not in the notification's slot");
            seen.insert("notification");
        } else if t.starts_with("r:") {
            assert_eq!(t, "r:acme:bob", "{k}");
            seen.insert("rate");
        } else if t.starts_with("i:") {
            assert_eq!(t, "i:acme:bob", "{k}");
            seen.insert("inbox");
        } else if t.starts_with("t:") {
            assert_eq!(t, "t:acme", "{k}: a tenant's registry is one slot");
            seen.insert("templates");
        } else {
            assert!(k.contains(":q:"), "{k} is unexpected");
            seen.insert("queue");
        }
    }
    for k in [
        keys::record(&acme, &id),
        keys::history(&acme, &id),
        keys::idempotency(&acme, &idem.key),
        keys::all_index(shard, &acme),
        keys::state_index(shard, &acme, workflows::machine::StateKind::Cancelled),
        keys::timers(shard),
        keys::ready(shard),
        keys::templates(&acme),
        keys::template(&acme, &welcome),
        keys::template_content(&acme, &welcome),
    ] {
        assert!(all.contains(&k), "{k} missing from {all:?}");
    }
    assert!(
        !all.contains(&keys::state_index(shard, &acme, workflows::machine::StateKind::Received)),
        "the old state index still holds the record"
    );
    assert_eq!(seen.len(), 6, "{seen:?}");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(keys::idempotency(&acme, &idem.key))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 86_000_000 && ttl <= 86_400_000, "idempotency ttl {ttl} ms");
}

#[tokio::test]
async fn connect_errors_say_what_to_do_and_never_show_the_password() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("redis://admin:hunter2-secret@127.0.0.1:{closed}/0");
    let error = RedisStore::connect(&url).await.expect_err("nothing listens there").to_string();
    assert!(error.contains("connection refused; is redis-server running?"), "{error}");
    assert!(error.contains("--redis URL"), "{error}");
    assert!(error.contains(&format!("redis://admin:***@127.0.0.1:{closed}/0")), "{error}");
    assert!(!error.contains("hunter2"), "{error}");

    let server = RedisServer::start();
    let url = format!("redis://nobody:hunter2-secret@127.0.0.1:{}", server.port());
    let error = RedisStore::connect(&url).await.expect_err("no such user").to_string();
    assert!(error.contains("refused the credentials"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");

    let error = RedisStore::connect("not a url").await.expect_err("bad url").to_string();
    assert!(error.contains("invalid Redis URL"), "{error}");
}

#[tokio::test]
async fn durability_warnings_name_what_to_change() {
    let (store, server) = fresh().await;
    // The test server runs without AOF, with the default everysec and noeviction.
    let warnings = store.durability_warnings().await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("appendonly yes"), "{warnings:?}");

    let mut conn = raw(&server).await;
    for (name, value) in
        [("appendonly", "yes"), ("appendfsync", "no"), ("maxmemory-policy", "allkeys-lru")]
    {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let warnings = store.durability_warnings().await;
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("appendfsync everysec")), "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("maxmemory-policy noeviction")), "{warnings:?}");

    // A user without CONFIG: one warning that says so.
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("app")
        .arg("on")
        .arg(">hunter2-secret")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .arg("-config")
        .query_async(&mut conn)
        .await
        .unwrap();
    let limited =
        RedisStore::connect(&format!("redis://app:hunter2-secret@127.0.0.1:{}", server.port()))
            .await
            .expect("the limited user connects");
    let warnings = limited.durability_warnings().await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("CONFIG GET is not permitted"), "{warnings:?}");
    assert!(!warnings[0].contains("hunter2"), "{warnings:?}");
}

/// Entries that do not hold a wake key can never be handled: they are parked, not delivered and
/// not left to loop.
#[tokio::test]
async fn unreadable_entries_are_parked() {
    let (store, server) = fresh().await;
    let mut conn = raw(&server).await;
    let _: String = redis::cmd("XADD")
        .arg(keys::ready(3))
        .arg("*")
        .arg("w")
        .arg("not a wake key")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: i64 = redis::cmd("ZADD")
        .arg(keys::timers(5))
        .arg(0)
        .arg("garbage:member")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(store.fetch("w", 10, 0).await, Ok(vec![]));
    assert_eq!(store.promote_due(store.now_ms(), 10).await, Ok(1));
    let stats = store.stats().await.expect("stats");
    assert_eq!(stats, storage::queue::QueueStats { parked: 2, ..Default::default() });
}

/// Deadline entries the reaper cannot act on (the record is gone, the member is not a
/// `tenant/id`) are dropped, not re-driven and not left to come back every round.
#[tokio::test]
async fn the_reaper_drops_entries_of_missing_or_unreadable_records() {
    let (store, server) = fresh().await;
    let mut conn = raw(&server).await;
    for member in ["acme/n00gone", "not a member", "acme/n00x/3"] {
        let _: i64 = redis::cmd("ZADD")
            .arg(keys::deadlines(4))
            .arg(0)
            .arg(member)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    assert_eq!(store.stats().await.expect("stats").overdue, 3);
    assert_eq!(
        store.redrive_overdue(store.now_ms(), 10).await,
        Ok(Reaped { redriven: 0, cleared: 3 })
    );
    assert_eq!(store.stats().await, Ok(storage::queue::QueueStats::default()));
    assert_eq!(store.fetch("w", 10, 0).await, Ok(vec![]));
}

/// Every campaign key is namespaced and hash-tagged: the campaign's own keys (hash, segment,
/// idempotency keys, index, due index) in the campaign's shard, its counters and open set beside
/// each notification, in the notification's shard.
#[tokio::test]
async fn campaign_keys_live_in_the_campaign_slot_and_counters_beside_their_records() {
    use storage::keys::campaigns as ckeys;
    use workflows::campaign::{Campaign, CampaignSpec, CampaignState, Segment};
    use workflows::ports::Campaigns;

    let (store, server) = fresh().await;
    let acme = TenantId::new("acme").unwrap();
    let now = store.now_ms();
    let idem = Idempotency { key: "launch".into(), fingerprint: "fp".into() };
    let cid = ckeys::new_campaign_id(&acme, Some(&idem.key), "01HZZZZZZZZZZZZZZZZZ000001");
    let campaign = Campaign {
        tenant: acme.clone(),
        id: cid.clone(),
        spec: CampaignSpec {
            template: steps::model::TemplateId::new("welcome").unwrap(),
            channel: Channel::InApp,
            category: steps::model::Category::new("news").unwrap(),
            data: serde_json::Map::new(),
            segment: Segment::Recipients,
            rate_per_sec: 100,
        },
        state: CampaignState::Draft,
        recipients: 2,
        position: 0,
        cursor: String::new(),
        rejected: 0,
        created_at_ms: now,
        updated_at_ms: now,
        started_at_ms: None,
        finished_at_ms: None,
        cancelled_at_ms: None,
    };
    let members = [RecipientId::new("ada").unwrap(), RecipientId::new("bob").unwrap()];
    store.campaign_create(&campaign, &members, Some(&idem)).await.expect("create");
    let page = Idempotency { key: "page-2".into(), fingerprint: "fp2".into() };
    let more = [RecipientId::new("cy").unwrap()];
    store.campaign_append(&acme, &cid, &more, Some(&page), now).await.expect("append");
    store.campaign_start(&acme, &cid, now).await.expect("start");
    store.campaign_claim(now, 60_000, 1).await.expect("claim");
    let request: steps::model::Request = serde_json::from_value(serde_json::json!({
        "recipient": { "id": "ada" },
        "channel": "in_app",
        "template": { "id": "welcome", "version": "v1" },
        "data": {},
        "category": "news"
    }))
    .unwrap();
    let mut notification_shards = BTreeSet::new();
    for member in members.iter().chain(&more) {
        let id = store.campaign_notification_id(&acme, &cid, member);
        notification_shards.insert(format!("s{:02x}", keys::shard_for(&id)));
        let record = Record {
            tenant: acme.clone(),
            id: id.clone(),
            version: 1,
            state: State::Received {},
            request: request.clone(),
            seed: 3,
            created_at_ms: now,
            updated_at_ms: now,
            wake_at_ms: Some(now),
            replay: None,
        };
        let first = HistoryEntry {
            at_ms: now,
            version: 1,
            from: None,
            to: State::Received {},
            cause: Cause::Api { action: "campaign".into() },
            note: None,
        };
        store.campaign_create_notification(&record, &first, &cid).await.expect("create");
    }
    let campaign_tag = format!("s{:02x}", ckeys::campaign_shard(&cid));
    let mut conn = raw(&server).await;
    let all: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut conn).await.unwrap();
    let mut seen = BTreeSet::new();
    for k in &all {
        assert!(k.starts_with("courant:"), "{k} is outside the namespace");
        let tag = hash_tag(k).unwrap_or_else(|| panic!("{k} has no hash tag"));
        let campaign_key =
            k.contains(&format!(":c:{cid}")) && !k.ends_with(":counts") && !k.ends_with(":open");
        if campaign_key || k.contains(":cidem:") || k.ends_with(":campaigns") {
            assert_eq!(tag, campaign_tag, "{k} is not in the campaign's slot");
            seen.insert("campaign");
        } else if k.ends_with(":campaigns:due") {
            assert_eq!(tag, campaign_tag, "{k}: the campaign is due in its own shard");
            seen.insert("due");
        } else if k.ends_with(":counts") || k.ends_with(":open") {
            assert!(notification_shards.contains(tag), "{k} is beside no notification");
            seen.insert("counters");
        }
    }
    assert_eq!(seen.len(), 3, "{all:?}");
    // Each counter key sits in a shard with the notifications it counts.
    for shard in &notification_shards {
        let n: i64 = redis::cmd("HGET")
            .arg(ckeys::counts(u16::from_str_radix(&shard[1..], 16).unwrap(), &acme, &cid))
            .arg("received")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(n >= 1, "{shard}");
    }
}

/// A recipient's directory entry and its index entry are in one slot (`{dNN}`, the recipient's
/// directory shard), under the namespace.
#[tokio::test]
async fn a_recipients_directory_keys_share_one_slot() {
    use steps::preferences::Preferences;
    use steps::recipient::{Device, DeviceToken, Platform};
    use workflows::ports::Directory;

    let (store, server) = fresh().await;
    let acme = TenantId::new("acme").unwrap();
    let bob = RecipientId::new("bob").unwrap();
    let now = store.now_ms();
    store.put_contact(&acme, &bob, &Default::default(), now).await.expect("contact");
    store.put_preferences(&acme, &bob, &Preferences::default(), now).await.expect("prefs");
    let token = DeviceToken::parse("secret-token").unwrap();
    store.add_device(&acme, &bob, &Device::new(Platform::Ios, token, now), now).await.expect("dev");
    let mut conn = raw(&server).await;
    // Everything but the ready streams `connect` creates.
    let all: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut conn).await.unwrap();
    let all: Vec<String> = all.into_iter().filter(|k| !k.ends_with(":q:ready")).collect();
    let shard = keys::recipient_shard(&acme, &bob);
    let expected =
        BTreeSet::from([keys::recipient(&acme, &bob), keys::recipient_index(shard, &acme)]);
    assert_eq!(all.iter().cloned().collect::<BTreeSet<_>>(), expected);
    for k in &all {
        assert_eq!(hash_tag(k), Some(format!("d{shard:02x}").as_str()), "{k}");
    }
}

/// Two processes on one Redis: what one writes, the other's very next read sees. The directory
/// has no cache, so there is nothing to invalidate and nothing to miss.
#[tokio::test]
async fn an_opt_out_written_by_one_process_is_read_by_another_at_once() {
    use steps::model::Category;
    use steps::preferences::{CategoryChoice, Preferences};
    use workflows::ports::Directory;

    let (api, server) = fresh().await;
    let worker = RedisStore::connect(&server.url()).await.expect("a second connection");
    let acme = TenantId::new("acme").unwrap();
    let bob = RecipientId::new("bob").unwrap();
    let now = api.now_ms();
    let marketing = Category::new("marketing").unwrap();
    for round in 0..50_u64 {
        // The worker reads (as the lifecycle does before a decision), then the API writes.
        let before = worker.recipient(&acme, &bob).await.expect("read");
        let on = round % 2 == 1;
        let mut preferences = Preferences::default();
        preferences
            .categories
            .insert(marketing.clone(), CategoryChoice { enabled: Some(on), ..Default::default() });
        let revision = api.put_preferences(&acme, &bob, &preferences, now).await.expect("write");
        let after = worker.recipient(&acme, &bob).await.expect("read").expect("entry");
        assert_eq!(after.revision, revision);
        assert_eq!(after.preferences, preferences, "round {round}");
        assert_ne!(before.map(|e| e.preferences), Some(preferences));
    }
}

/// A tenant's minute of statistics is one hash under its tag, expiring after 8 days.
#[tokio::test]
async fn stats_minutes_are_hashes_that_expire() {
    use storage::stats::{MinuteCounts, STATS_TTL_MS, StatKey, StatKind, StatsStore};
    let (store, server) = fresh().await;
    let acme = TenantId::new("acme").unwrap();
    let minute = storage::stats::minute_of(store.now_ms());
    let key = StatKey::new(StatKind::Accepted, Channel::Sms, None);
    let batch = [MinuteCounts { tenant: acme.clone(), minute, counts: [(key.clone(), 4)].into() }];
    store.add_stats(&batch).await.unwrap();
    let name = keys::stats_minute(&acme, minute);
    assert_eq!(name, format!("courant:{{st:acme}}:m:{minute}"));
    let mut conn = raw(&server).await;
    let n: u64 =
        redis::cmd("HGET").arg(&name).arg("accepted|sms||").query_async(&mut conn).await.unwrap();
    assert_eq!(n, 4);
    let ttl_ms: i64 = redis::cmd("PTTL").arg(&name).query_async(&mut conn).await.unwrap();
    assert!(ttl_ms > 0 && ttl_ms as u64 <= STATS_TTL_MS, "{ttl_ms}");
    assert!(ttl_ms as u64 > STATS_TTL_MS - 60_000, "{ttl_ms}");
}
