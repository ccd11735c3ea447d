//! The conformance suite every store must pass (feature `test-support`).
//!
//! Each check takes a fresh, empty store and panics with a message when the store breaks the
//! contract of `workflows::ports` or [`WakeQueue`]. [`conformance_tests!`](crate::conformance_tests)
//! turns the whole list into `#[tokio::test]`s for one store:
//!
//! ```ignore
//! async fn fresh() -> (MemoryStore, ()) { (MemoryStore::new(), ()) }
//! storage::conformance_tests!(fresh);
//! ```
//!
//! The campaign checks are in [`campaigns`] (`campaign_conformance_tests!`), the inbox's read
//! state and feed in [`inbox`] (`inbox_conformance_tests!`), the live transition feed in
//! [`transitions`] (`transition_conformance_tests!`).
//!
//! Times are taken from the store's own clock ([`WakeQueue::now_ms`]) so the same checks hold on
//! Redis, whose idle times and TTLs run on real time.

pub mod campaigns;
pub mod inbox;
mod templates;
pub mod transitions;

use std::time::Duration;

use steps::limits::{self, Admission, Cap, Full, Limit, Window};
use steps::locale::Locale;
use steps::model::{
    Attempt, Category, Channel, EmailAddress, NotificationId, PhoneNumber, ProviderName, Recipient,
    RecipientId, Request, TemplateId, TemplateRef, TenantId,
};
use steps::preferences::Preferences;
use steps::rate::{OverLimit, Pacer, SendRate, SendSlot};
use steps::recipient::{
    Contact, DEVICES_MAX, Device, DeviceId, DeviceToken, Platform, RecipientEntry, TimeZone,
};
use workflows::dlq::{DlqFilter, Truncated};
use workflows::machine::{State, StateKind};
use workflows::ports::{
    ApiKey, Claimed, CollapseGroup, CreatedOnce, DeviceAdded, Directory, EventKey, HISTORY_LEN_MAX,
    INBOX_LEN_MAX, Inbox, InboxItem, ListCursor, ListQuery, Purged, RecipientKey, Store,
    StoredItem, StoredResponse,
};
use workflows::record::{
    Cause, Commit, CommitOutcome, Created, HistoryEntry, Idempotency, Record, Replay, Wake,
};

use crate::keys::{self, SHARDS};
use crate::queue::{Delivery, QueueStats, REAPER_SLACK_MS, Reaped, Retried, TRIES_MAX, WakeQueue};
use crate::stats::StatsStore;

pub use templates::{
    a_template_may_start_as_a_draft, template_limits_are_enforced,
    templates_are_listed_in_pages_and_apart_per_tenant, templates_create_version_publish_and_read,
};

/// What the suite needs of a store.
pub trait Conformance: Store + Inbox + WakeQueue + Directory + StatsStore {}

impl<S: Store + Inbox + WakeQueue + Directory + StatsStore> Conformance for S {}

/// Every check, by name, in the order [`conformance_tests!`](crate::conformance_tests) runs them.
pub const CHECKS: [&str; 39] = [
    "create_and_load_round_trip",
    "idempotent_create",
    "commit_compare_and_set",
    "history_order_and_cap",
    "state_index_and_list",
    "list_filters_select_by_every_field",
    "list_pages_walk_every_record_once_in_order",
    "dead_letter_queue",
    "dead_letter_filters",
    "purge_deletes_everything_about_a_record",
    "replay_data_is_kept",
    "wake_enqueued_with_new_version",
    "limit_windows_follow_the_reference",
    "send_slots_follow_the_reference_pacer",
    "inbox_is_idempotent_newest_first_and_capped",
    "api_keys",
    "queue_fetch_ack_and_stats",
    "retry_later_backs_off_then_parks",
    "release_returns_deliveries_to_ready",
    "abandoned_deliveries_are_reclaimed",
    "promote_is_bounded_per_shard",
    "queue_stats_tell_due_from_scheduled_and_the_lag",
    "workers_heartbeat_into_a_shared_registry",
    "stats_add_up_per_tenant_and_minute",
    "tenant_isolation",
    "idempotency_keys_are_claimed_finished_and_released",
    "an_event_creates_one_record_within_its_window",
    "collapse_groups_follow_the_reference",
    "lost_wake_is_redriven_after_its_deadline",
    "settled_records_are_never_redriven",
    "overdue_records_are_counted_and_reaped_in_bounded_chunks",
    "directory_entries_round_trip_with_revisions",
    "directory_devices_are_bounded_idempotent_and_removable",
    "directory_reads_see_the_latest_write",
    "directory_pages_walk_each_recipient_once_in_id_order",
    "templates_create_version_publish_and_read",
    "a_template_may_start_as_a_draft",
    "template_limits_are_enforced",
    "templates_are_listed_in_pages_and_apart_per_tenant",
];

/// Expands to one `#[tokio::test]` per conformance check. `$fresh` is an `async fn() -> (S, G)`
/// returning a fresh, empty store and a guard kept alive for the test (a `RedisServer`, `()`).
#[macro_export]
macro_rules! conformance_tests {
    ($fresh:path) => {
        $crate::conformance_tests!(@each $fresh;
            create_and_load_round_trip,
            idempotent_create,
            commit_compare_and_set,
            history_order_and_cap,
            state_index_and_list,
            list_filters_select_by_every_field,
            list_pages_walk_every_record_once_in_order,
            dead_letter_queue,
            dead_letter_filters,
            purge_deletes_everything_about_a_record,
            replay_data_is_kept,
            wake_enqueued_with_new_version,
            limit_windows_follow_the_reference,
            send_slots_follow_the_reference_pacer,
            inbox_is_idempotent_newest_first_and_capped,
            api_keys,
            queue_fetch_ack_and_stats,
            retry_later_backs_off_then_parks,
            release_returns_deliveries_to_ready,
            abandoned_deliveries_are_reclaimed,
            promote_is_bounded_per_shard,
            queue_stats_tell_due_from_scheduled_and_the_lag,
            workers_heartbeat_into_a_shared_registry,
            stats_add_up_per_tenant_and_minute,
            tenant_isolation,
            idempotency_keys_are_claimed_finished_and_released,
            an_event_creates_one_record_within_its_window,
            collapse_groups_follow_the_reference,
            lost_wake_is_redriven_after_its_deadline,
            settled_records_are_never_redriven,
            overdue_records_are_counted_and_reaped_in_bounded_chunks,
            directory_entries_round_trip_with_revisions,
            directory_devices_are_bounded_idempotent_and_removable,
            directory_reads_see_the_latest_write,
            directory_pages_walk_each_recipient_once_in_id_order,
            templates_create_version_publish_and_read,
            a_template_may_start_as_a_draft,
            template_limits_are_enforced,
            templates_are_listed_in_pages_and_apart_per_tenant,
        );
    };
    (@each $fresh:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (store, _guard) = $fresh().await;
                $crate::conformance::$name(&store).await;
            }
        )*
    };
}

// ---- fixtures ----------------------------------------------------------------------------------

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).expect("fixture tenant is valid")
}

/// A distinct, valid 26-character ULID-like string per `n`.
fn ulid(n: u32) -> String {
    format!("01HZZZZZZZZZZZZZZZZZ{n:06}")
}

fn id(tenant: &TenantId, n: u32) -> NotificationId {
    keys::new_notification_id(tenant, None, &ulid(n))
}

fn request() -> Request {
    Request {
        recipient: Recipient {
            id: RecipientId::new("bob").expect("fixture id"),
            email: Some(EmailAddress::parse("bob@example.com").expect("fixture address")),
            phone: None,
            opt_out: Vec::new(),
        },
        channel: Channel::Email,
        template: TemplateRef {
            id: TemplateId::new("welcome").expect("fixture id"),
            version: "v1".into(),
        },
        data: serde_json::Map::from_iter([("name".to_owned(), serde_json::json!("Bob"))]),
        category: Category::new("order_updates").expect("fixture id"),
        locale: Some(steps::locale::Locale::parse("fr-CA").expect("fixture locale")),
        correlation: Default::default(),
    }
}

/// A fixture record in `received` at version 1, written at `now_ms` with its wake-up at
/// `wake_at_ms` (other tests use it too).
pub fn record(
    tenant: &TenantId,
    id: &NotificationId,
    now_ms: u64,
    wake_at_ms: Option<u64>,
) -> Record {
    Record {
        tenant: tenant.clone(),
        id: id.clone(),
        version: 1,
        state: State::Received {},
        request: request(),
        seed: 0xfeed_beef_dead_cafe,
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
        wake_at_ms,
        replay: None,
    }
}

/// The first history entry of a [`record`] written at `now_ms`.
pub fn first(now_ms: u64) -> HistoryEntry {
    HistoryEntry {
        at_ms: now_ms,
        version: 1,
        from: None,
        to: State::Received {},
        cause: Cause::Api { action: "submit".into() },
        note: None,
    }
}

fn provider() -> ProviderName {
    ProviderName::new("sendgrid").expect("fixture id")
}

fn sent() -> State {
    State::Sent {
        channel: Channel::Email,
        provider: provider(),
        attempt: Attempt::FIRST,
        provider_message_id: Some("msg-1".into()),
    }
}

fn dead() -> State {
    State::DeadLettered {
        channel: Channel::Email,
        provider: Some(provider()),
        attempt: Attempt(3),
        reason: "all 3 attempts used".into(),
    }
}

fn entry(version: u64, at_ms: u64, to: &State) -> HistoryEntry {
    HistoryEntry {
        at_ms,
        version,
        from: Some(StateKind::Received),
        to: to.clone(),
        cause: Cause::WakeUp,
        note: Some(format!("entry at {at_ms}")),
    }
}

fn commit(
    record: &Record,
    expected_version: u64,
    state: State,
    now_ms: u64,
    wake_at_ms: Option<u64>,
) -> Commit {
    let history = vec![entry(expected_version + 1, now_ms, &state)];
    Commit {
        tenant: record.tenant.clone(),
        id: record.id.clone(),
        expected_version,
        state,
        history,
        wake_at_ms,
        now_ms,
        replay: None,
    }
}

async fn create<S: Conformance>(store: &S, record: &Record) {
    let created = store.create(record, &first(record.created_at_ms), None).await;
    assert_eq!(created, Ok(Created::New), "creating {}", record.id);
}

async fn committed<S: Conformance>(store: &S, commit: &Commit) -> u64 {
    match store.commit(commit).await {
        Ok(CommitOutcome::Committed { version }) => version,
        other => panic!("commit of {} expected to apply, got {other:?}", commit.id),
    }
}

/// The queue's counts, with the time of its oldest waiting wake-up checked (set exactly when
/// something is ready or due) and then blanked, so checks compare counts.
async fn stats<S: Conformance>(store: &S) -> QueueStats {
    let stats = store.stats().await.expect("stats");
    let waiting = stats.ready + stats.due > 0;
    assert_eq!(stats.oldest_waiting_since_ms.is_some(), waiting, "{stats:?}");
    QueueStats { oldest_waiting_since_ms: None, ..stats }
}

/// Fetches everything ready (several calls if needed).
async fn fetch_all<S: Conformance>(store: &S, consumer: &str) -> Vec<Delivery> {
    let mut out = Vec::new();
    for _ in 0..100 {
        let got = store.fetch(consumer, 100, 0).await.expect("fetch");
        if got.is_empty() {
            break;
        }
        out.extend(got);
    }
    out
}

fn ids_of(records: &[Record]) -> Vec<NotificationId> {
    records.iter().map(|r| r.id.clone()).collect()
}

fn wake(tenant: &TenantId, id: &NotificationId, version: u64) -> Wake {
    Wake { tenant: tenant.clone(), id: id.clone(), version }
}

/// Calls `round` (one call limited to one item per shard) until it does nothing, and checks that
/// it did at most one per shard each time, `n` in all, over more than one call.
async fn in_bounded_rounds(n: u32, what: &str, mut round: impl AsyncFnMut() -> usize) {
    let mut total = 0;
    let mut calls = 0;
    loop {
        let done = round().await;
        assert!(done <= usize::from(SHARDS), "{what}: {done} in one call");
        if done == 0 {
            break;
        }
        total += done;
        calls += 1;
        assert!(calls <= n, "{what} does not converge");
    }
    assert_eq!(total, n as usize, "{what}");
    assert!(calls > 1, "{what}: one call did {n} with a limit of one per shard");
}

/// Schedules `n` distinct wake-ups due before now and promotes them all.
async fn ready_wakes<S: Conformance>(store: &S, n: u32) -> Vec<Wake> {
    let acme = tenant("acme");
    let now = store.now_ms();
    let wakes: Vec<Wake> = (0..n).map(|i| wake(&acme, &id(&acme, 1_000 + i), 1)).collect();
    let timed: Vec<(Wake, u64)> = wakes.iter().map(|w| (w.clone(), now - 1)).collect();
    store.schedule(&timed).await.expect("schedule");
    let mut promoted = 0;
    while promoted < n as usize {
        let moved = store.promote_due(now, 1_000).await.expect("promote");
        assert!(moved > 0, "promote_due stalled at {promoted} of {n}");
        promoted += moved;
    }
    wakes
}

// ---- the checks --------------------------------------------------------------------------------

/// A created record loads back equal, with its first history entry.
pub async fn create_and_load_round_trip<S: Conformance>(store: &S) {
    let acme = tenant("acme");
    let now = store.now_ms();
    let rec = record(&acme, &id(&acme, 1), now, Some(now));
    create(store, &rec).await;
    assert_eq!(store.load(&acme, &rec.id).await, Ok(Some(rec.clone())));
    assert_eq!(store.history(&acme, &rec.id).await, Ok(vec![first(now)]));
    assert_eq!(store.load(&acme, &id(&acme, 2)).await, Ok(None));
    assert_eq!(store.history(&acme, &id(&acme, 2)).await, Ok(vec![]));
    // A record without a wake-up keeps none.
    let quiet = record(&acme, &id(&acme, 3), now, None);
    create(store, &quiet).await;
    assert_eq!(store.load(&acme, &quiet.id).await.expect("load").map(|r| r.wake_at_ms), Some(None));
}

/// An idempotency key returns the first notification, says whether the request matched, and
/// creates nothing the second time; keys are scoped by tenant.
pub async fn idempotent_create<S: Conformance>(store: &S) {
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let now = store.now_ms();
    let key = "order-42";
    let idem = Idempotency { key: key.into(), fingerprint: "fp-1".into() };
    let first_id = keys::new_notification_id(&acme, Some(key), &ulid(1));
    let rec = record(&acme, &first_id, now, Some(now));
    assert_eq!(store.create(&rec, &first(now), Some(&idem)).await, Ok(Created::New));

    let second_id = keys::new_notification_id(&acme, Some(key), &ulid(2));
    let again = record(&acme, &second_id, now + 1, Some(now + 1));
    assert_eq!(
        store.create(&again, &first(now + 1), Some(&idem)).await,
        Ok(Created::Existing { id: first_id.clone(), same_request: true })
    );
    let other_body = Idempotency { key: key.into(), fingerprint: "fp-2".into() };
    assert_eq!(
        store.create(&again, &first(now + 1), Some(&other_body)).await,
        Ok(Created::Existing { id: first_id.clone(), same_request: false })
    );
    assert_eq!(store.load(&acme, &second_id).await, Ok(None), "a repeated key created a record");

    let theirs_id = keys::new_notification_id(&globex, Some(key), &ulid(3));
    let theirs = record(&globex, &theirs_id, now, Some(now));
    assert_eq!(store.create(&theirs, &first(now), Some(&idem)).await, Ok(Created::New));

    // The same id twice is refused, never overwritten.
    assert_eq!(
        store.create(&rec, &first(now), None).await,
        Ok(Created::Existing { id: first_id.clone(), same_request: false })
    );
    assert_eq!(stats(store).await.ready, 2, "only the two new records enqueue a wake-up");
}

/// An idempotency key whose work spans several steps: the first claim holds it; a second with
/// the same body is in flight until the lease runs out, then takes over; another body is a
/// reuse; the finished answer is returned to every later claim and never replaced; a release
/// frees a pending claim only. A key written by a create reads as done. Keys are per tenant.
pub async fn idempotency_keys_are_claimed_finished_and_released<S: Conformance>(store: &S) {
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let now = store.now_ms();
    let lease = 10_000;
    let idem = Idempotency { key: "batch-7".into(), fingerprint: "fp-1".into() };
    let other = Idempotency { key: "batch-7".into(), fingerprint: "fp-2".into() };
    assert_eq!(store.claim_key(&acme, &idem, now, lease).await, Ok(Claimed::Held));
    assert_eq!(
        store.claim_key(&acme, &idem, now + 1, lease).await,
        Ok(Claimed::InFlight { until_ms: now + lease })
    );
    assert_eq!(
        store.claim_key(&acme, &other, now + 1, lease).await,
        Ok(Claimed::Reused { id: None })
    );
    // Another tenant's key of the same name is its own.
    assert_eq!(store.claim_key(&globex, &idem, now + 1, lease).await, Ok(Claimed::Held));
    // The holder's lease ran out: the next claim with the same body takes over.
    assert_eq!(store.claim_key(&acme, &idem, now + lease, lease).await, Ok(Claimed::Held));
    assert_eq!(
        store.claim_key(&acme, &idem, now + lease + 1, lease).await,
        Ok(Claimed::InFlight { until_ms: now + 2 * lease })
    );
    let answer = StoredResponse {
        items: vec![
            StoredItem { id: id(&acme, 1), deduplicated: false },
            StoredItem { id: id(&acme, 2), deduplicated: true },
        ],
    };
    store.finish_key(&acme, &idem, &answer, now + 20).await.expect("finish");
    assert_eq!(
        store.claim_key(&acme, &idem, now + 21, lease).await,
        Ok(Claimed::Done { response: answer.clone() })
    );
    assert_eq!(
        store.claim_key(&acme, &other, now + 21, lease).await,
        Ok(Claimed::Reused { id: Some(id(&acme, 1)) })
    );
    // A late finish (a holder taken for dead) or a release changes nothing once finished.
    let late = StoredResponse { items: vec![StoredItem { id: id(&acme, 3), deduplicated: false }] };
    store.finish_key(&acme, &idem, &late, now + 22).await.expect("finish");
    store.release_key(&acme, &idem).await.expect("release");
    assert_eq!(
        store.claim_key(&acme, &idem, now + 23, lease).await,
        Ok(Claimed::Done { response: answer })
    );
    // A pending claim is released by its own body only.
    store.release_key(&globex, &other).await.expect("release");
    assert!(matches!(
        store.claim_key(&globex, &idem, now + 24, lease).await,
        Ok(Claimed::InFlight { .. })
    ));
    store.release_key(&globex, &idem).await.expect("release");
    assert_eq!(store.claim_key(&globex, &idem, now + 25, lease).await, Ok(Claimed::Held));
    // A key a create wrote with its record is done, with that record.
    let key = "order-9";
    let created = Idempotency { key: key.into(), fingerprint: "fp-c".into() };
    let rec = record(&acme, &keys::new_notification_id(&acme, Some(key), &ulid(9)), now, None);
    assert_eq!(store.create(&rec, &first(now), Some(&created)).await, Ok(Created::New));
    let item = StoredItem { id: rec.id.clone(), deduplicated: false };
    assert_eq!(
        store.claim_key(&acme, &created, now + 1, lease).await,
        Ok(Claimed::Done { response: StoredResponse { items: vec![item] } })
    );
    let reused = Idempotency { key: key.into(), fingerprint: "fp-x".into() };
    assert_eq!(
        store.claim_key(&acme, &reused, now + 1, lease).await,
        Ok(Claimed::Reused { id: Some(rec.id.clone()) })
    );
    // A create with a key that a pending claim holds writes nothing.
    let pending = Idempotency { key: "pending".into(), fingerprint: "fp-p".into() };
    assert_eq!(store.claim_key(&acme, &pending, now, lease).await, Ok(Claimed::Held));
    let blocked =
        record(&acme, &keys::new_notification_id(&acme, Some("pending"), &ulid(10)), now, None);
    let answer = store.create(&blocked, &first(now), Some(&pending)).await;
    assert!(matches!(answer, Ok(Created::Existing { same_request: false, .. })), "{answer:?}");
    assert_eq!(store.load(&acme, &blocked.id).await, Ok(None));
}

/// The same event for the same recipient and channel creates one record within its window; the
/// duplicate names the first and writes nothing. Another recipient, channel or tenant is another
/// event, and after the window the event makes a new record.
pub async fn an_event_creates_one_record_within_its_window<S: Conformance>(store: &S) {
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let event = |tenant: &TenantId, recipient: &str, channel| EventKey {
        tenant: tenant.clone(),
        event: steps::correlation::EventId::new("order-1:shipped").expect("fixture id"),
        recipient: RecipientId::new(recipient).expect("fixture id"),
        channel,
    };
    let once = async |event: &EventKey, n: u32, window_ms: u64| {
        let id = keys::new_notification_id_in(keys::event_shard(event), &ulid(n));
        let now = store.now_ms();
        let rec = record(&event.tenant, &id, now, Some(now));
        (id, store.create_once(&rec, &first(now), event, window_ms).await)
    };
    let shipped = event(&acme, "bob", Channel::Email);
    let day = 86_400_000;
    let (first_id, created) = once(&shipped, 1, day).await;
    assert_eq!(created, Ok(CreatedOnce::New));
    let (second_id, again) = once(&shipped, 2, day).await;
    assert_eq!(again, Ok(CreatedOnce::Duplicate { id: first_id.clone() }));
    assert_eq!(store.load(&acme, &second_id).await, Ok(None), "a duplicate created a record");
    for (n, other) in [
        (3, event(&acme, "carol", Channel::Email)),
        (4, event(&acme, "bob", Channel::Sms)),
        (5, event(&globex, "bob", Channel::Email)),
    ] {
        assert_eq!(once(&other, n, day).await.1, Ok(CreatedOnce::New), "{other:?}");
    }
    // The same id again (with an unseen event of its shard) is refused, never overwritten.
    let now = store.now_ms();
    let rec = record(&acme, &first_id, now, None);
    let fresh = (0..1_000)
        .map(|n| event(&acme, &format!("dave{n}"), Channel::Email))
        .find(|e| keys::event_shard(e) == keys::event_shard(&shipped))
        .expect("an event in the same shard");
    assert_eq!(store.create_once(&rec, &first(now), &fresh, day).await, Ok(CreatedOnce::IdTaken));
    // A short window: after it the event makes a new record (TTLs run on the store's clock).
    let brief = event(&acme, "erin", Channel::Push);
    assert_eq!(once(&brief, 6, 200).await.1, Ok(CreatedOnce::New));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(once(&brief, 7, 200).await.1, Ok(CreatedOnce::New));
}

/// Collapse groups join and close exactly as `steps::collapse::join` and `close`: the first
/// opens a group and waits, the next ones inside the window merge into it, a repeated join gets
/// the same answer, a closed or full group takes no newcomer, each key, channel and recipient has
/// its own groups. What a survivor keeps with its record is kept once.
pub async fn collapse_groups_follow_the_reference<S: Conformance>(store: &S) {
    use steps::collapse::{self, COLLAPSE_ITEMS_MAX, COLLAPSE_KEEP_MS, Groups, Merged};
    let acme = tenant("acme");
    let now = store.now_ms();
    let group = |recipient: &str, channel, key: &str| CollapseGroup {
        tenant: acme.clone(),
        recipient: RecipientId::new(recipient).expect("fixture id"),
        channel,
        key: steps::correlation::CollapseKey::new(key).expect("fixture key"),
    };
    let chat = group("bob", Channel::InApp, "room:42");
    let data = |n: u32| {
        serde_json::Map::from_iter([("message".to_owned(), serde_json::json!(format!("m{n}")))])
    };
    let window = 60_000;
    let mut reference = Groups::default();
    enum Step {
        Join(u32, u64),
        Close(u32, u64),
    }
    let steps = [
        Step::Join(1, 0),
        Step::Join(2, 10),
        Step::Join(3, 20),
        Step::Join(2, 30),
        Step::Join(1, 40),
        Step::Join(4, 60_000),
        Step::Close(1, 60_001),
        Step::Join(1, 60_002),
        Step::Close(1, 60_003),
        Step::Join(5, 60_004),
        Step::Close(4, 60_005),
        Step::Join(6, 60_006),
        Step::Join(3, 60_007),
        Step::Close(9, 60_008),
    ];
    for step in steps {
        match step {
            Step::Join(n, offset) => {
                let member = id(&acme, n);
                let expected = collapse::join(
                    &mut reference,
                    &member,
                    &data(n),
                    window,
                    COLLAPSE_KEEP_MS,
                    now + offset,
                );
                let got = store.collapse_join(&chat, &member, &data(n), window, now + offset).await;
                assert_eq!(got, Ok(expected), "join {n} at +{offset} ms");
                // Which group each notification joined, as the reference says (reads only).
                for m in 1..=9 {
                    let expected = collapse::member_of(&reference, &id(&acme, m), now + offset);
                    let got = store.collapse_member(&chat, &id(&acme, m), now + offset).await;
                    assert_eq!(got, Ok(expected), "member {m} after join {n} at +{offset} ms");
                }
            }
            Step::Close(n, offset) => {
                let survivor = id(&acme, n);
                let expected = collapse::close(&mut reference, &survivor, now + offset);
                let got = store.collapse_close(&chat, &survivor, now + offset).await;
                assert_eq!(got, Ok(expected), "close {n} at +{offset} ms");
            }
        }
    }
    let merged = store.collapse_close(&chat, &id(&acme, 1), now + 60_010).await.expect("close");
    let ids: Vec<NotificationId> =
        merged.expect("a group").items.into_iter().map(|i| i.id).collect();
    assert_eq!(ids, [id(&acme, 1), id(&acme, 2), id(&acme, 3)], "the reference merged as expected");
    // Other keys, channels and recipients have their own groups.
    for other in [
        group("bob", Channel::InApp, "room:7"),
        group("bob", Channel::Email, "room:42"),
        group("carol", Channel::InApp, "room:42"),
    ] {
        let joined = store.collapse_join(&other, &id(&acme, 20), &data(20), window, now + 5).await;
        assert_eq!(joined, Ok(collapse::Joined::Wait { until_ms: now + 5 + window }), "{other:?}");
    }
    // A full group sends the next one to a group of its own.
    let busy = group("dave", Channel::Sms, "k");
    for n in 0..COLLAPSE_ITEMS_MAX as u32 {
        store.collapse_join(&busy, &id(&acme, 100 + n), &data(n), window, now).await.expect("join");
    }
    let next = id(&acme, 999);
    let joined = store.collapse_join(&busy, &next, &data(999), window, now + 1).await;
    assert_eq!(joined, Ok(collapse::Joined::Wait { until_ms: now + 1 + window }));
    let full = store.collapse_close(&busy, &id(&acme, 100), now + 2).await.expect("close");
    assert_eq!(full.map(|m| m.items.len()), Some(COLLAPSE_ITEMS_MAX));
    // What a survivor keeps with its record is kept once, and only for a record that exists.
    let rec = record(&acme, &id(&acme, 1), now, None);
    create(store, &rec).await;
    assert_eq!(store.merged(&acme, &rec.id).await, Ok(None));
    let first_kept = Merged::alone(&rec.id, &data(1));
    store.keep_merged(&acme, &rec.id, &first_kept).await.expect("keep");
    store.keep_merged(&acme, &rec.id, &Merged::alone(&rec.id, &data(2))).await.expect("keep");
    assert_eq!(store.merged(&acme, &rec.id).await, Ok(Some(first_kept)));
    assert_eq!(store.load(&acme, &rec.id).await.expect("load"), Some(rec), "the record is intact");
    let ghost = id(&acme, 77);
    store.keep_merged(&acme, &ghost, &Merged::alone(&ghost, &data(7))).await.expect("keep");
    assert_eq!(store.merged(&acme, &ghost).await, Ok(None));
}

/// A commit applies only at the expected version; a stale one reports the current version; an
/// unknown record is not found.
pub async fn commit_compare_and_set<S: Conformance>(store: &S) {
    let acme = tenant("acme");
    let now = store.now_ms();
    let rec = record(&acme, &id(&acme, 1), now, Some(now));
    create(store, &rec).await;

    let c = commit(&rec, 1, sent(), now + 5, None);
    assert_eq!(store.commit(&c).await, Ok(CommitOutcome::Committed { version: 2 }));
    let loaded = store.load(&acme, &rec.id).await.expect("load").expect("record");
    assert_eq!(loaded.version, 2);
    assert_eq!(loaded.state, sent());
    assert_eq!(loaded.updated_at_ms, now + 5);
    assert_eq!(loaded.created_at_ms, now);
    assert_eq!(loaded.wake_at_ms, None);
    assert_eq!(loaded.request, rec.request);
    assert_eq!(loaded.seed, rec.seed);

    assert_eq!(store.commit(&c).await, Ok(CommitOutcome::Conflict { current: 2 }));
    let mut ahead = c.clone();
    ahead.expected_version = 7;
    assert_eq!(store.commit(&ahead).await, Ok(CommitOutcome::Conflict { current: 2 }));

    let missing = commit(&record(&acme, &id(&acme, 9), now, None), 1, sent(), now, None);
    assert_eq!(store.commit(&missing).await, Ok(CommitOutcome::NotFound));

    let c3 = commit(&rec, 2, dead(), now + 9, Some(now + 60_000));
    assert_eq!(store.commit(&c3).await, Ok(CommitOutcome::Committed { version: 3 }));
    let loaded = store.load(&acme, &rec.id).await.expect("load").expect("record");
    assert_eq!((loaded.version, loaded.wake_at_ms), (3, Some(now + 60_000)));
}

/// History comes back oldest first and keeps only the newest `HISTORY_LEN_MAX` entries.
pub async fn history_order_and_cap<S: Conformance>(store: &S) {
    let acme = tenant("acme");
    let now = store.now_ms();
    let rec = record(&acme, &id(&acme, 1), now, None);
    create(store, &rec).await;
    let per_commit = 50_u64;
    let commits = 5_u64;
    for v in 1..=commits {
        let mut c = commit(&rec, v, sent(), now + v, None);
        c.history =
            (0..per_commit).map(|i| entry(v + 1, now + v * per_commit + i, &sent())).collect();
        committed(store, &c).await;
    }
    let history = store.history(&acme, &rec.id).await.expect("history");
    assert_eq!(history.len(), HISTORY_LEN_MAX);
    let total = 1 + per_commit * commits;
    let dropped = total - HISTORY_LEN_MAX as u64;
    assert_eq!(history.first().map(|e| e.version), Some(2 + dropped / per_commit));
    assert_eq!(
        history.last().map(|e| (e.version, e.at_ms)),
        Some((commits + 1, now + commits * per_commit + per_commit - 1))
    );
    assert!(history.windows(2).all(|w| w[0].at_ms < w[1].at_ms), "history out of order");
}

/// Listings are newest first, filter by state, follow commits between states, honour limits.
pub async fn state_index_and_list<S: Conformance>(store: &S) {
    let acme = tenant("acme");
    let now = store.now_ms();
    let recs: Vec<Record> =
        (0..3).map(|i| record(&acme, &id(&acme, i + 1), now + u64::from(i), None)).collect();
    for r in &recs {
        create(store, r).await;
    }
    let (a, b, c) = (&recs[0], &recs[1], &recs[2]);
    let list = |state: Option<StateKind>, limit: usize| ListQuery { state, limit, ..all_of() };
    let all = store.list(&acme, &list(None, 10)).await.expect("list").records;
    assert_eq!(ids_of(&all), vec![c.id.clone(), b.id.clone(), a.id.clone()]);
    assert_eq!(all[0], *c);
    let received = listed(store, &acme, &list(Some(StateKind::Received), 10)).await;
    assert_eq!(ids_of(&received), vec![c.id.clone(), b.id.clone(), a.id.clone()]);

    committed(store, &commit(b, 1, sent(), now + 10, None)).await;
    let received = listed(store, &acme, &list(Some(StateKind::Received), 10)).await;
    assert_eq!(ids_of(&received), vec![c.id.clone(), a.id.clone()]);
    let sent_list = listed(store, &acme, &list(Some(StateKind::Sent), 10)).await;
    assert_eq!(ids_of(&sent_list), vec![b.id.clone()]);
    assert_eq!(sent_list[0].version, 2);
    let all = listed(store, &acme, &list(None, 10)).await;
    assert_eq!(ids_of(&all), vec![b.id.clone(), c.id.clone(), a.id.clone()]);
    let two = store.list(&acme, &list(None, 2)).await.expect("list");
    assert_eq!(ids_of(&two.records), vec![b.id.clone(), c.id.clone()]);
    assert_eq!(two.truncated, Some(Truncated::Limit), "one more was left");
    assert_eq!(two.next, Some(ListCursor::of(&two.records[1])));
    assert_eq!(listed(store, &acme, &list(Some(StateKind::Delivered), 10)).await, vec![]);
}

/// Every record (no filter), most recently updated first.
fn all_of() -> ListQuery {
    ListQuery { limit: 100, ..ListQuery::default() }
}

/// The records a listing's first page holds.
async fn listed<S: Conformance>(store: &S, tenant: &TenantId, query: &ListQuery) -> Vec<Record> {
    store.list(tenant, query).await.expect("list").records
}

/// A listing selects by state, channel, provider, category, recipient and a time range of the
/// last update, inclusive at both ends; every filter set must hold.
pub async fn list_filters_select_by_every_field<S: Conformance>(store: &S) {
    let acme = tenant("acme");
    let now = store.now_ms();
    let twilio = ProviderName::new("twilio").expect("fixture id");
    let sms_dead = State::DeadLettered {
        channel: Channel::Sms,
        provider: Some(twilio.clone()),
        attempt: Attempt(2),
        reason: "all 2 attempts used".into(),
    };
    // 1: email to bob, order_updates, received (updated at now - 30 s).
    // 2: email to bob, sent with sendgrid (now - 20 s).
    // 3: SMS to alice, marketing, dead-lettered with twilio (now - 10 s).
    let one = record(&acme, &id(&acme, 1), now - 30_000, None);
    let two = record(&acme, &id(&acme, 2), now - 40_000, None);
    let mut three = record(&acme, &id(&acme, 3), now - 40_000, None);
    three.request.channel = Channel::Sms;
    three.request.category = Category::new("marketing").expect("fixture id");
    three.request.recipient.id = RecipientId::new("alice").expect("fixture id");
    for r in [&one, &two, &three] {
        create(store, r).await;
    }
    committed(store, &commit(&two, 1, sent(), now - 20_000, None)).await;
    committed(store, &commit(&three, 1, sms_dead, now - 10_000, None)).await;
    let (one, two, three) = (one.id, two.id, three.id);
    let ours = &acme;
    let check = |query: ListQuery, expected: Vec<NotificationId>| async move {
        assert_eq!(ids_of(&listed(store, ours, &query).await), expected, "{query:?}");
    };
    check(all_of(), vec![three.clone(), two.clone(), one.clone()]).await;
    check(ListQuery { state: Some(StateKind::Sent), ..all_of() }, vec![two.clone()]).await;
    check(ListQuery { channel: Some(Channel::Sms), ..all_of() }, vec![three.clone()]).await;
    check(ListQuery { channel: Some(Channel::Email), ..all_of() }, vec![two.clone(), one.clone()])
        .await;
    check(ListQuery { channel: Some(Channel::Push), ..all_of() }, vec![]).await;
    check(ListQuery { provider: Some(provider()), ..all_of() }, vec![two.clone()]).await;
    check(ListQuery { provider: Some(twilio.clone()), ..all_of() }, vec![three.clone()]).await;
    let marketing = Category::new("marketing").expect("fixture id");
    check(ListQuery { category: Some(marketing), ..all_of() }, vec![three.clone()]).await;
    let bob = RecipientId::new("bob").expect("fixture id");
    check(ListQuery { recipient: Some(bob.clone()), ..all_of() }, vec![two.clone(), one.clone()])
        .await;
    // The time range is of the last update, inclusive.
    check(ListQuery { since_ms: Some(now - 20_000), ..all_of() }, vec![three.clone(), two.clone()])
        .await;
    check(ListQuery { until_ms: Some(now - 20_000), ..all_of() }, vec![two.clone(), one.clone()])
        .await;
    check(
        ListQuery { since_ms: Some(now - 25_000), until_ms: Some(now - 15_000), ..all_of() },
        vec![two.clone()],
    )
    .await;
    check(ListQuery { since_ms: Some(now), ..all_of() }, vec![]).await;
    // Every filter must hold.
    check(
        ListQuery { recipient: Some(bob.clone()), state: Some(StateKind::Received), ..all_of() },
        vec![one.clone()],
    )
    .await;
    check(ListQuery { recipient: Some(bob), provider: Some(twilio), ..all_of() }, vec![]).await;
    // The limit counts matches, not examined entries.
    let page = store
        .list(&acme, &ListQuery { channel: Some(Channel::Email), limit: 1, ..all_of() })
        .await
        .expect("list");
    assert_eq!(ids_of(&page.records), vec![two.clone()]);
    assert_eq!((page.scanned, page.truncated), (2, Some(Truncated::Limit)));
    // Other tenants see none of it.
    assert_eq!(listed(store, &tenant("globex"), &all_of()).await, vec![]);
}

/// Paging with `next` walks every selected record exactly once, newest first by
/// `(updated_at_ms, id)`, also among records updated in the same millisecond and spread over
/// every shard; the last page names no next one.
pub async fn list_pages_walk_every_record_once_in_order<S: Conformance>(store: &S) {
    let acme = tenant("acme");
    let now = store.now_ms();
    // 40 records on 5 distinct times (8 per millisecond), over the shards their ids fall in.
    let mut expected: Vec<(u64, NotificationId)> = Vec::new();
    for n in 0..40_u32 {
        let at_ms = now - u64::from(n % 5) * 1_000;
        let rec = record(&acme, &id(&acme, n + 100), at_ms, None);
        create(store, &rec).await;
        expected.push((at_ms, rec.id));
    }
    expected.sort_by(|a, b| b.cmp(a));
    for (query, want) in [
        (ListQuery::default(), expected.clone()),
        (
            ListQuery { until_ms: Some(now - 1_000), since_ms: Some(now - 3_000), ..all_of() },
            expected
                .iter()
                .filter(|(at, _)| (now - 3_000..=now - 1_000).contains(at))
                .cloned()
                .collect(),
        ),
    ] {
        for page_size in [1, 3, 8, 40] {
            let mut seen = Vec::new();
            let mut query = ListQuery { limit: page_size, ..query.clone() };
            for _ in 0..=want.len() {
                let page = store.list(&acme, &query).await.expect("list");
                assert!(page.records.len() <= page_size);
                seen.extend(page.records.iter().map(|r| (r.updated_at_ms, r.id.clone())));
                match page.next {
                    Some(next) => {
                        assert_eq!(page.truncated, Some(Truncated::Limit));
                        query.cursor = Some(next);
                    }
                    None => {
                        assert_eq!(page.truncated, None);
                        break;
                    }
                }
            }
            assert_eq!(seen, want, "pages of {page_size} for {query:?}");
        }
    }
    // Many records of one shard in a few milliseconds: more than a store reads from a shard at
    // once, so its walk reads on past records of the cursor's millisecond.
    let initech = tenant("initech");
    let mut crowded: Vec<(u64, NotificationId)> = Vec::new();
    for n in 0..450_u32 {
        let at_ms = now - u64::from(n % 3);
        let rec = record(&initech, &keys::new_notification_id_in(3, &ulid(n + 1_000)), at_ms, None);
        create(store, &rec).await;
        crowded.push((at_ms, rec.id));
    }
    crowded.sort_by(|a, b| b.cmp(a));
    for page_size in [7, 100, 1_000] {
        let mut seen = Vec::new();
        let mut query = ListQuery { limit: page_size, ..ListQuery::default() };
        for _ in 0..=crowded.len() {
            let page = store.list(&initech, &query).await.expect("list");
            seen.extend(page.records.iter().map(|r| (r.updated_at_ms, r.id.clone())));
            match page.next {
                Some(next) => query.cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, crowded, "pages of {page_size} in one shard");
    }
    // A cursor between two records of one millisecond continues with the smaller ids.
    let (at, ref mid) = expected[3];
    let after =
        ListQuery { cursor: Some(ListCursor { updated_ms: at, id: mid.clone() }), ..all_of() };
    let rest: Vec<_> = listed(store, &acme, &after).await.into_iter().map(|r| r.id).collect();
    let want: Vec<_> = expected[4..].iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(rest, want);
}

fn limit(limit: usize) -> DlqFilter {
    DlqFilter { limit, ..DlqFilter::default() }
}

async fn dlq_ids<S: Conformance>(
    store: &S,
    tenant: &TenantId,
    filter: &DlqFilter,
    now_ms: u64,
) -> Vec<NotificationId> {
    ids_of(&store.dead_letters(tenant, filter, now_ms).await.expect("dead letters").records)
}

/// Entering `dead_lettered` puts a record in the DLQ, newest first; leaving it takes it out.
pub async fn dead_letter_queue<S: Conformance>(store: &S) {
    let acme = tenant("acme");
    let now = store.now_ms();
    let recs: Vec<Record> = (0..3).map(|i| record(&acme, &id(&acme, i + 1), now, None)).collect();
    for r in &recs {
        create(store, r).await;
    }
    let page = store.dead_letters(&acme, &limit(10), now + 20).await.expect("dead letters");
    assert_eq!((page.records, page.scanned, page.truncated), (vec![], 0, None));
    committed(store, &commit(&recs[0], 1, dead(), now + 5, None)).await;
    committed(store, &commit(&recs[1], 1, dead(), now + 9, None)).await;
    committed(store, &commit(&recs[2], 1, sent(), now + 12, None)).await;
    let page = store.dead_letters(&acme, &limit(10), now + 20).await.expect("dead letters");
    assert_eq!(ids_of(&page.records), vec![recs[1].id.clone(), recs[0].id.clone()]);
    assert_eq!((page.scanned, page.truncated), (2, None));
    assert_eq!(page.records[0].state, dead());
    let one = store.dead_letters(&acme, &limit(1), now + 20).await.expect("dead letters");
    assert_eq!(ids_of(&one.records), vec![recs[1].id.clone()]);
    assert_eq!(one.truncated, Some(Truncated::Limit), "one more was left unexamined");
    let dead_list = ListQuery { state: Some(StateKind::DeadLettered), ..all_of() };
    assert_eq!(ids_of(&listed(store, &acme, &dead_list).await), ids_of(&page.records));
    // Leaving the DLQ (an operator's replay) takes it out of the queue.
    assert_eq!(stats(store).await.dead_lettered, 2, "the count of every tenant's dead letters");
    committed(store, &commit(&recs[1], 2, State::Received {}, now + 15, Some(now + 15))).await;
    assert_eq!(dlq_ids(store, &acme, &limit(10), now + 20).await, vec![recs[0].id.clone()]);
    assert_eq!(stats(store).await.dead_lettered, 1, "a replay takes it out of the count");
    // Another tenant's dead letter counts too; a purge takes it out.
    let globex = tenant("globex");
    let theirs = record(&globex, &id(&globex, 7), now, None);
    create(store, &theirs).await;
    committed(store, &commit(&theirs, 1, dead(), now + 16, None)).await;
    assert_eq!(stats(store).await.dead_lettered, 2);
    assert_eq!(store.purge(&globex, &theirs.id, 2).await, Ok(Purged::Done));
    assert_eq!(stats(store).await.dead_lettered, 1);
}

/// A DLQ filter selects by id, reason (case-insensitive), channel, provider and age, and every
/// condition set must hold.
pub async fn dead_letter_filters<S: Conformance>(store: &S) {
    let acme = tenant("acme");
    let now = store.now_ms();
    let twilio = ProviderName::new("twilio").expect("fixture id");
    let dead_as = |channel, provider: Option<ProviderName>, reason: &str| State::DeadLettered {
        channel,
        provider,
        attempt: Attempt(2),
        reason: reason.into(),
    };
    // Dead-lettered 10 s, 5 s and 1 s before `now`, one with no provider at all.
    let cases = [
        (10_000, dead_as(Channel::Sms, Some(twilio.clone()), "twilio: all 2 attempts used")),
        (5_000, dead_as(Channel::Email, Some(provider()), "sendgrid: All 2 Attempts used")),
        (1_000, dead_as(Channel::Chat, None, "no provider is configured for chat")),
    ];
    let mut ids = Vec::new();
    for (n, (ago, state)) in (1..).zip(cases) {
        let rec = record(&acme, &id(&acme, n), now - 20_000, None);
        create(store, &rec).await;
        committed(store, &commit(&rec, 1, state, now - ago, None)).await;
        ids.push(rec.id);
    }
    // One that never failed, to be sure only dead letters come back.
    let alive = record(&acme, &id(&acme, 9), now - 3_000, Some(now));
    create(store, &alive).await;
    let (old, mid, new) = (ids[0].clone(), ids[1].clone(), ids[2].clone());
    let all = || DlqFilter::default();
    let ours = &acme;
    let check = |filter: DlqFilter, expected: Vec<NotificationId>| async move {
        assert_eq!(dlq_ids(store, ours, &filter, now).await, expected, "{filter:?}");
    };
    check(all(), vec![new.clone(), mid.clone(), old.clone()]).await;
    check(DlqFilter { ids: [mid.clone()].into(), ..all() }, vec![mid.clone()]).await;
    // Named ids: only the dead-lettered ones among them, newest first, other filters still hold.
    let named = [old.clone(), alive.id.clone(), new.clone(), id(&acme, 78)];
    check(DlqFilter { ids: named.clone().into(), ..all() }, vec![new.clone(), old.clone()]).await;
    check(DlqFilter { ids: named.into(), channel: Some(Channel::Sms), ..all() }, vec![old.clone()])
        .await;
    check(DlqFilter { ids: [alive.id.clone()].into(), ..all() }, vec![]).await;
    check(DlqFilter { ids: [id(&acme, 77)].into(), ..all() }, vec![]).await;
    check(DlqFilter { channel: Some(Channel::Sms), ..all() }, vec![old.clone()]).await;
    check(DlqFilter { provider: Some(twilio), ..all() }, vec![old.clone()]).await;
    let attempts = || Some("ALL 2 attempts".to_owned());
    check(DlqFilter { reason_contains: attempts(), ..all() }, vec![mid.clone(), old.clone()]).await;
    check(
        DlqFilter { reason_contains: attempts(), channel: Some(Channel::Email), ..all() },
        vec![mid.clone()],
    )
    .await;
    check(DlqFilter { older_than_ms: Some(5_000), ..all() }, vec![mid.clone(), old.clone()]).await;
    check(DlqFilter { newer_than_ms: Some(5_000), ..all() }, vec![new.clone(), mid.clone()]).await;
    check(
        DlqFilter { older_than_ms: Some(2_000), newer_than_ms: Some(6_000), ..all() },
        vec![mid.clone()],
    )
    .await;
    check(DlqFilter { older_than_ms: Some(60_000), ..all() }, vec![]).await;
    // The limit counts matches, not examined entries.
    let page = store
        .dead_letters(&acme, &DlqFilter { reason_contains: attempts(), limit: 1, ..all() }, now)
        .await
        .expect("dead letters");
    assert_eq!(ids_of(&page.records), vec![mid.clone()]);
    assert_eq!((page.scanned, page.truncated), (2, Some(Truncated::Limit)));
    // Other tenants see none of it.
    assert_eq!(dlq_ids(store, &tenant("globex"), &all(), now).await, vec![]);
}

/// A purge at the record's version deletes the record, its history, its index and DLQ entries
/// and its idempotency key (a new submit with the key creates a new notification); at another
/// version it changes nothing.
pub async fn purge_deletes_everything_about_a_record<S: Conformance>(store: &S) {
    let acme = tenant("acme");
    let now = store.now_ms();
    let key = "order-7";
    let idem = Idempotency { key: key.into(), fingerprint: "fp".into() };
    let rec = record(&acme, &keys::new_notification_id(&acme, Some(key), &ulid(1)), now, None);
    assert_eq!(store.create(&rec, &first(now), Some(&idem)).await, Ok(Created::New));
    committed(store, &commit(&rec, 1, dead(), now + 1, None)).await;
    let other = record(&acme, &id(&acme, 2), now, None);
    create(store, &other).await;
    committed(store, &commit(&other, 1, dead(), now + 2, None)).await;

    assert_eq!(store.purge(&acme, &rec.id, 1).await, Ok(Purged::Conflict { current: 2 }));
    assert_eq!(store.purge(&tenant("globex"), &rec.id, 2).await, Ok(Purged::NotFound));
    assert!(store.load(&acme, &rec.id).await.expect("load").is_some(), "a refused purge deleted");

    assert_eq!(store.purge(&acme, &rec.id, 2).await, Ok(Purged::Done));
    assert_eq!(store.load(&acme, &rec.id).await, Ok(None));
    assert_eq!(store.history(&acme, &rec.id).await, Ok(vec![]));
    assert_eq!(dlq_ids(store, &acme, &DlqFilter::default(), now + 5).await, vec![other.id.clone()]);
    assert_eq!(ids_of(&listed(store, &acme, &all_of()).await), vec![other.id.clone()]);
    let dead_list = ListQuery { state: Some(StateKind::DeadLettered), ..all_of() };
    assert_eq!(ids_of(&listed(store, &acme, &dead_list).await), vec![other.id.clone()]);
    assert_eq!(store.purge(&acme, &rec.id, 2).await, Ok(Purged::NotFound));
    // The idempotency key is forgotten: the same key creates a new notification.
    let again = record(&acme, &keys::new_notification_id(&acme, Some(key), &ulid(3)), now, None);
    assert_eq!(store.create(&again, &first(now), Some(&idem)).await, Ok(Created::New));
    // Purging a record created without a key leaves other keys alone.
    assert_eq!(store.purge(&acme, &other.id, 2).await, Ok(Purged::Done));
    let repeat = record(&acme, &keys::new_notification_id(&acme, Some(key), &ulid(4)), now, None);
    assert_eq!(
        store.create(&repeat, &first(now), Some(&idem)).await,
        Ok(Created::Existing { id: again.id.clone(), same_request: true })
    );
}

/// A commit with replay data stores it with the record; later commits without it keep it.
pub async fn replay_data_is_kept<S: Conformance>(store: &S) {
    let acme = tenant("acme");
    let now = store.now_ms();
    let rec = record(&acme, &id(&acme, 1), now, None);
    create(store, &rec).await;
    committed(store, &commit(&rec, 1, dead(), now + 1, None)).await;
    let replay = Replay { budget_from_ms: now + 500, possible_duplicate: true, count: 1 };
    let mut c = commit(&rec, 2, State::Received {}, now + 2, Some(now + 500));
    c.replay = Some(replay.clone());
    committed(store, &c).await;
    let loaded = store.load(&acme, &rec.id).await.expect("load").expect("record");
    assert_eq!(loaded.replay.as_ref(), Some(&replay));
    assert_eq!((loaded.budget_from_ms(), loaded.possible_duplicate()), (now + 500, true));
    committed(store, &commit(&rec, 3, sent(), now + 3, None)).await;
    let loaded = store.load(&acme, &rec.id).await.expect("load").expect("record");
    assert_eq!(loaded.replay, Some(replay));
    assert_eq!(loaded.created_at_ms, now);
}

/// Create and commit enqueue the wake-up with the new version: ready when due, a timer
/// otherwise, promoted when due and not before.
pub async fn wake_enqueued_with_new_version<S: Conformance>(store: &S) {
    let acme = tenant("acme");
    let now = store.now_ms();
    let rec = record(&acme, &id(&acme, 1), now, Some(now));
    create(store, &rec).await;
    let got = store.fetch("c1", 10, 0).await.expect("fetch");
    assert_eq!(
        got.iter().map(|d| (&d.wake, d.tries)).collect::<Vec<_>>(),
        vec![(&wake(&acme, &rec.id, 1), 0)]
    );
    store.ack(&got).await.expect("ack");

    let later = now + 60_000;
    assert_eq!(committed(store, &commit(&rec, 1, sent(), now, Some(later))).await, 2);
    assert_eq!(store.fetch("c1", 10, 0).await, Ok(vec![]), "a future wake-up is not ready");
    assert_eq!(stats(store).await, QueueStats { scheduled: 1, ..QueueStats::default() });
    assert_eq!(store.promote_due(now, 100).await, Ok(0));
    assert_eq!(store.promote_due(later - 1, 100).await, Ok(0));
    assert_eq!(store.promote_due(later, 100).await, Ok(1));
    let got = store.fetch("c1", 10, 0).await.expect("fetch");
    assert_eq!(got.iter().map(|d| &d.wake).collect::<Vec<_>>(), vec![&wake(&acme, &rec.id, 2)]);
    store.ack(&got).await.expect("ack");

    // Due at the commit time: straight to ready.
    assert_eq!(committed(store, &commit(&rec, 2, sent(), now + 1, Some(now + 1))).await, 3);
    let got = store.fetch("c1", 10, 0).await.expect("fetch");
    assert_eq!(got.iter().map(|d| &d.wake).collect::<Vec<_>>(), vec![&wake(&acme, &rec.id, 3)]);
    store.ack(&got).await.expect("ack");

    // No wake-up asked for, none enqueued.
    committed(store, &commit(&rec, 3, sent(), now + 2, None)).await;
    assert_eq!(store.promote_due(later * 2, 100).await, Ok(0));
    assert_eq!(store.fetch("c1", 10, 0).await, Ok(vec![]));
    assert_eq!(stats(store).await, QueueStats::default());
}

/// A recipient's windows admit and refuse exactly as `steps::limits::admit`: all or nothing,
/// every full window named with when it has room, a member that holds its slots admitted again
/// (its slots move to the later time, never back), each recipient with its own windows; and
/// `window_usage` counts what is held without taking anything.
pub async fn limit_windows_follow_the_reference<S: Conformance>(store: &S) {
    let acme = tenant("acme");
    let now = store.now_ms();
    let bob =
        RecipientKey { tenant: acme.clone(), recipient: RecipientId::new("bob").expect("id") };
    let marketing = Category::new("marketing").expect("fixture id");
    let sms = Window {
        limit: Limit::Channel { channel: Channel::Sms, max: 2, window_ms: 60_000 },
        over_limit: OverLimit::Defer,
    };
    let cap = |c: Cap| Window {
        limit: Limit::Cap { category: marketing.clone(), max: c.max, window_ms: c.window_ms },
        over_limit: c.over_limit,
    };
    let day = cap(Cap { max: 3, window_ms: 120_000, over_limit: OverLimit::Defer });
    let week = cap(Cap { max: 4, window_ms: 300_000, over_limit: OverLimit::Skip });
    let all = [sms.clone(), day.clone(), week.clone()];
    let member = |n: u32| id(&acme, n);
    let mut reference = std::collections::BTreeMap::new();
    // (offset ms, member, which windows)
    let steps: [(u64, u32, &[Window]); 14] = [
        (0, 1, &all),
        (1_000, 2, &all),
        // The SMS window is full; the caps had room but nothing is taken.
        (2_000, 3, &all),
        (2_000, 3, &all[1..]),
        // The member holding its slots is admitted again; its slots move to now.
        (3_000, 1, &all),
        // A worker whose clock is behind: the slot does not move back.
        (2_500, 1, &all),
        (59_999, 4, &all),
        (61_000, 4, &all),
        (62_000, 5, &all[1..]),
        (63_000, 6, &all[1..]),
        (121_000, 6, &all),
        (200_000, 7, &all),
        (299_999, 8, &all[1..]),
        (1_000_000, 8, &all),
    ];
    let mut full_seen = std::collections::BTreeSet::new();
    for (offset, n, windows) in steps {
        let at = now + offset;
        let expected = limits::admit(&mut reference, windows, member(n).as_str(), at);
        if let Admission::Full { full } = &expected {
            full_seen.extend(full.iter().map(|f| windows[f.index].limit.name()));
        }
        let got = store.acquire_windows(&bob, &member(n), windows, at).await;
        assert_eq!(got, Ok(expected.clone()), "member {n} at +{offset} ms");
        let usage = limits::usage(&reference, &all, at);
        assert_eq!(store.window_usage(&bob, &all, at).await, Ok(usage), "usage at +{offset} ms");
    }
    // The sequence filled the channel window and both caps.
    assert_eq!(full_seen.len(), 3, "{full_seen:?}");
    let at = now + 1_000_001;
    let answer = store.acquire_windows(&bob, &member(9), &[day.clone(), week.clone()], at).await;
    assert_eq!(answer, Ok(limits::admit(&mut reference, &[day, week], member(9).as_str(), at)));
    let dave =
        RecipientKey { tenant: acme.clone(), recipient: RecipientId::new("dave").expect("id") };
    let one = std::slice::from_ref(&sms);
    assert_eq!(store.acquire_windows(&dave, &member(1), one, now).await, Ok(Admission::Admitted));
    assert_eq!(
        store.acquire_windows(&dave, &member(2), one, now + 5).await,
        Ok(Admission::Admitted)
    );
    let full = store.acquire_windows(&dave, &member(10), one, now + 10).await;
    assert_eq!(
        full,
        Ok(Admission::Full { full: vec![Full { index: 0, retry_at_ms: now + 60_000 }] }),
        "a full window says when its oldest admission leaves"
    );
    // Other recipients have their own windows; no windows at all admits.
    let carol =
        RecipientKey { tenant: acme.clone(), recipient: RecipientId::new("carol").expect("id") };
    assert_eq!(
        store.acquire_windows(&carol, &member(10), &all, now).await,
        Ok(Admission::Admitted)
    );
    assert_eq!(store.window_usage(&carol, &all, now).await, Ok(vec![1, 1, 1]));
    assert_eq!(store.acquire_windows(&carol, &member(11), &[], now).await, Ok(Admission::Admitted));
    let other = RecipientKey { tenant: tenant("other"), recipient: bob.recipient.clone() };
    assert_eq!(store.window_usage(&other, &all, now).await, Ok(vec![0, 0, 0]));
    // More windows than a notification can have is refused.
    let many = vec![sms; limits::WINDOWS_MAX + 1];
    assert!(store.acquire_windows(&carol, &member(12), &many, now).await.is_err());
}

/// Provider send slots are reserved exactly as `steps::rate::Pacer::reserve`, per provider.
pub async fn send_slots_follow_the_reference_pacer<S: Conformance>(store: &S) {
    let now = store.now_ms();
    // Three per second: one every 333.334 ms, in µs.
    let rate = SendRate { max: 3, window_ms: 1_000 };
    let twilio = ProviderName::new("twilio").expect("fixture name");
    let mut reference = Pacer::default();
    let calls = [(0, 10_000), (0, 10_000), (1, 10_000), (2, 100), (2, 10_000), (5_000, 0)];
    for (offset, wait_ms_max) in calls {
        let at = now + offset;
        let expected = reference.reserve(&rate, at, wait_ms_max);
        let got = store.send_slot(&twilio, &rate, at, wait_ms_max).await;
        assert_eq!(got, Ok(expected), "at +{offset} ms, waiting at most {wait_ms_max} ms");
    }
    assert_eq!(
        store.send_slot(&twilio, &rate, now + 5_000, 10_000).await,
        Ok(SendSlot::At { at_ms: now + 5_334 })
    );
    // Another provider has its own pacer.
    let vonage = ProviderName::new("vonage").expect("fixture name");
    assert_eq!(store.send_slot(&vonage, &rate, now, 0).await, Ok(SendSlot::Now));
}

/// The inbox keeps one entry per notification, lists newest first and keeps `INBOX_LEN_MAX`.
pub async fn inbox_is_idempotent_newest_first_and_capped<S: Conformance>(store: &S) {
    let acme = tenant("acme");
    let bob = RecipientId::new("bob").expect("fixture id");
    let item = |n: u32, title: &str| InboxItem {
        notification_id: id(&acme, n),
        title: title.into(),
        body: format!("body {n}"),
        category: Category::new("order_updates").expect("fixture id"),
        at_ms: u64::from(n),
        read: false,
        action: Some(format!("/orders/{n}")),
    };
    for n in 1..=3 {
        store.inbox_append(&acme, &bob, &item(n, "first")).await.expect("append");
    }
    store.inbox_append(&acme, &bob, &item(2, "again")).await.expect("append");
    let listed = store.inbox_list(&acme, &bob, 10).await.expect("list");
    assert_eq!(listed, vec![item(3, "first"), item(2, "first"), item(1, "first")]);
    assert_eq!(store.inbox_list(&acme, &bob, 2).await.expect("list").len(), 2);
    assert_eq!(store.inbox_list(&acme, &bob, 0).await, Ok(vec![]));
    let carol = RecipientId::new("carol").expect("fixture id");
    assert_eq!(store.inbox_list(&acme, &carol, 10).await, Ok(vec![]));
    assert_eq!(store.inbox_list(&tenant("globex"), &bob, 10).await, Ok(vec![]));

    let extra = 5;
    let total = u32::try_from(INBOX_LEN_MAX).expect("small") + extra;
    for n in 1..=total {
        store.inbox_append(&acme, &carol, &item(n, "capped")).await.expect("append");
    }
    let listed = store.inbox_list(&acme, &carol, INBOX_LEN_MAX + 10).await.expect("list");
    assert_eq!(listed.len(), INBOX_LEN_MAX);
    assert_eq!(listed.first(), Some(&item(total, "capped")));
    assert_eq!(listed.last(), Some(&item(extra + 1, "capped")));
}

/// API keys are stored and found by id.
pub async fn api_keys<S: Conformance>(store: &S) {
    let key = ApiKey { tenant: tenant("acme"), secret_sha256_hex: "ab".repeat(32) };
    assert_eq!(store.api_key("0123456789abcdef").await, Ok(None));
    store.put_api_key("0123456789abcdef", &key).await.expect("put");
    assert_eq!(store.api_key("0123456789abcdef").await, Ok(Some(key.clone())));
    assert_eq!(store.api_key("fedcba9876543210").await, Ok(None));
    let rotated = ApiKey { secret_sha256_hex: "cd".repeat(32), ..key };
    store.put_api_key("0123456789abcdef", &rotated).await.expect("put");
    assert_eq!(store.api_key("0123456789abcdef").await, Ok(Some(rotated)));
}

/// Fetch honours `max`, fetched wake-ups are pending until acked, stats add up.
pub async fn queue_fetch_ack_and_stats<S: Conformance>(store: &S) {
    let wakes = ready_wakes(store, 3).await;
    assert_eq!(stats(store).await, QueueStats { ready: 3, ..QueueStats::default() });
    let two = store.fetch("a", 2, 0).await.expect("fetch");
    assert_eq!(two.len(), 2, "fetch returns at most max");
    assert_eq!(stats(store).await, QueueStats { ready: 1, pending: 2, ..QueueStats::default() });
    store.ack(&two[..1]).await.expect("ack");
    assert_eq!(stats(store).await, QueueStats { ready: 1, pending: 1, ..QueueStats::default() });
    let rest = store.fetch("b", 10, 0).await.expect("fetch");
    assert_eq!(rest.len(), 1);
    let mut seen: Vec<Wake> = two.iter().chain(&rest).map(|d| d.wake.clone()).collect();
    seen.sort_by_key(Wake::key);
    let mut expected = wakes;
    expected.sort_by_key(Wake::key);
    assert_eq!(seen, expected, "every wake-up delivered once");
    store.ack(&two[1..]).await.expect("ack");
    store.ack(&rest).await.expect("ack");
    store.ack(&rest).await.expect("a second ack is harmless");
    assert_eq!(stats(store).await, QueueStats::default());
    assert_eq!(store.fetch("a", 10, 0).await, Ok(vec![]));
}

/// A failed delivery comes back after its delay with one more try, and is parked after
/// `TRIES_MAX` tries; settling twice does nothing.
pub async fn retry_later_backs_off_then_parks<S: Conformance>(store: &S) {
    let wakes = ready_wakes(store, 1).await;
    let mut delivery = store.fetch("a", 10, 0).await.expect("fetch").pop().expect("one delivery");
    assert_eq!(delivery.tries, 0);
    let before = store.now_ms();
    let outcome = store.retry_later(&delivery, 60_000).await.expect("retry");
    let Retried::Scheduled { at_ms, tries: 1 } = outcome else {
        panic!("expected a first retry, got {outcome:?}")
    };
    assert!(at_ms >= before + 60_000 && at_ms <= store.now_ms() + 60_000, "due {at_ms}");
    assert_eq!(stats(store).await, QueueStats { scheduled: 1, ..QueueStats::default() });
    assert_eq!(store.retry_later(&delivery, 0).await, Ok(Retried::AlreadySettled));
    assert_eq!(store.promote_due(at_ms - 1, 100).await, Ok(0));
    assert_eq!(store.promote_due(at_ms, 100).await, Ok(1));

    let mut deliveries = 1;
    loop {
        delivery = store.fetch("a", 10, 0).await.expect("fetch").pop().expect("redelivered");
        deliveries += 1;
        assert_eq!(delivery.wake, wakes[0]);
        assert_eq!(delivery.tries, deliveries - 1);
        match store.retry_later(&delivery, 0).await.expect("retry") {
            Retried::Scheduled { tries, .. } => assert_eq!(tries, deliveries),
            Retried::Parked => break,
            Retried::AlreadySettled => panic!("a pending delivery was already settled"),
        }
        assert_eq!(store.promote_due(store.now_ms() + 1_000, 100).await, Ok(1));
    }
    assert_eq!(deliveries, TRIES_MAX, "parked after exactly TRIES_MAX tries");
    assert_eq!(stats(store).await, QueueStats { parked: 1, ..QueueStats::default() });
    assert_eq!(store.promote_due(store.now_ms() + 10_000_000, 100).await, Ok(0));
}

/// Released deliveries go straight back to ready, tries unchanged.
pub async fn release_returns_deliveries_to_ready<S: Conformance>(store: &S) {
    ready_wakes(store, 2).await;
    let got = store.fetch("a", 10, 0).await.expect("fetch");
    assert_eq!(got.len(), 2);
    store.release(&got).await.expect("release");
    assert_eq!(stats(store).await, QueueStats { ready: 2, ..QueueStats::default() });
    let again = fetch_all(store, "b").await;
    let key = |ds: &[Delivery]| {
        let mut v: Vec<(String, u32)> = ds.iter().map(|d| (d.wake.key(), d.tries)).collect();
        v.sort();
        v
    };
    assert_eq!(key(&again), key(&got));
    store.ack(&again).await.expect("ack");
    assert_eq!(stats(store).await, QueueStats::default());
}

/// A delivery its consumer never settles is handed to another consumer once idle long enough.
pub async fn abandoned_deliveries_are_reclaimed<S: Conformance>(store: &S) {
    let wakes = ready_wakes(store, 1).await;
    let got = store.fetch("dead-worker", 10, 0).await.expect("fetch");
    assert_eq!(got.len(), 1);
    assert_eq!(store.reclaim_abandoned("live-worker", 60_000, 10).await, Ok(vec![]));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let reclaimed = store.reclaim_abandoned("live-worker", 100, 10).await.expect("reclaim");
    assert_eq!(reclaimed.iter().map(|d| &d.wake).collect::<Vec<_>>(), vec![&wakes[0]]);
    // Just claimed: not idle any more.
    assert_eq!(store.reclaim_abandoned("third-worker", 100, 10).await, Ok(vec![]));
    store.ack(&reclaimed).await.expect("ack");
    assert_eq!(stats(store).await, QueueStats::default());
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(store.reclaim_abandoned("live-worker", 100, 10).await, Ok(vec![]));
}

/// `promote_due` moves at most `max_per_shard` per shard per call and eventually everything.
pub async fn promote_is_bounded_per_shard<S: Conformance>(store: &S) {
    let acme = tenant("acme");
    let now = store.now_ms();
    let n = 40_u32;
    let timed: Vec<(Wake, u64)> =
        (0..n).map(|i| (wake(&acme, &id(&acme, i), 1), now - u64::from(i))).collect();
    store.schedule(&timed).await.expect("schedule");
    store.schedule(&timed[..5]).await.expect("scheduling again collapses");
    let later: Vec<(Wake, u64)> = vec![(wake(&acme, &id(&acme, 999), 1), now + 60_000)];
    store.schedule(&later).await.expect("schedule");
    assert_eq!(
        stats(store).await,
        QueueStats { due: u64::from(n), scheduled: 1, ..QueueStats::default() }
    );
    in_bounded_rounds(n, "promote_due", async || store.promote_due(now, 1).await.expect("promote"))
        .await;
    assert_eq!(
        stats(store).await,
        QueueStats { ready: u64::from(n), scheduled: 1, ..QueueStats::default() }
    );
    let all = fetch_all(store, "a").await;
    assert_eq!(all.len(), n as usize);
    store.ack(&all).await.expect("ack");
}

/// Due timers are told from future ones, and the lag is the age of the oldest wake-up that
/// could run: a due timer's due time, or a ready entry's arrival in ready.
pub async fn queue_stats_tell_due_from_scheduled_and_the_lag<S: Conformance>(store: &S) {
    let acme = tenant("acme");
    let empty = store.stats().await.expect("stats");
    assert_eq!((empty.oldest_waiting_since_ms, empty.lag_ms(store.now_ms())), (None, 0));
    let now = store.now_ms();
    let timed = [
        (wake(&acme, &id(&acme, 1), 1), now - 60_000),
        (wake(&acme, &id(&acme, 2), 1), now - 1_000),
        (wake(&acme, &id(&acme, 3), 1), now + 3_600_000),
    ];
    store.schedule(&timed).await.expect("schedule");
    let raw = store.stats().await.expect("stats");
    assert_eq!((raw.due, raw.scheduled, raw.ready), (2, 1, 0), "{raw:?}");
    assert_eq!(raw.oldest_waiting_since_ms, Some(now - 60_000), "the oldest due timer");
    assert!(raw.lag_ms(store.now_ms()) >= 60_000, "{raw:?}");

    // Promoted, they wait in ready: the lag now counts from their arrival there.
    let before_promote = store.now_ms();
    assert_eq!(store.promote_due(before_promote, 100).await, Ok(2));
    let raw = store.stats().await.expect("stats");
    assert_eq!((raw.due, raw.scheduled, raw.ready), (0, 1, 2), "{raw:?}");
    let since = raw.oldest_waiting_since_ms.expect("two wait in ready");
    // Redis stamps the arrival with its own clock: allow the test's second of skew.
    assert!(since + 1_000 >= before_promote && since <= store.now_ms() + 1_000, "{raw:?}");

    // Fetched, nothing waits any more.
    let got = fetch_all(store, "a").await;
    assert_eq!(got.len(), 2);
    assert_eq!(
        stats(store).await,
        QueueStats { pending: 2, scheduled: 1, ..QueueStats::default() }
    );
    store.ack(&got).await.expect("ack");
}

/// Worker heartbeats land in one registry, freshest first; a newer beat replaces the entry;
/// long-silent workers are forgotten; a worker is alive within three heartbeats.
pub async fn workers_heartbeat_into_a_shared_registry<S: Conformance>(store: &S) {
    use crate::queue::{
        BreakerBeat, HEARTBEAT_MS, WORKER_ALIVE_MS, WORKER_BREAKERS_MAX, WORKER_FORGET_MS,
        WorkerBeat,
    };
    assert_eq!(store.workers().await, Ok(vec![]));
    let now = store.now_ms();
    let beat = |id: &str, seen_at_ms: u64| WorkerBeat {
        id: id.into(),
        host: "host-a".into(),
        pid: 4242,
        slots: 32,
        started_at_ms: now - 3_600_000,
        seen_at_ms,
        breakers: vec![],
    };
    store.heartbeat(&beat("w-old", now - 2 * WORKER_ALIVE_MS)).await.expect("beat");
    store.heartbeat(&beat("w-live", now - HEARTBEAT_MS)).await.expect("beat");
    store.heartbeat(&beat("w-live", now)).await.expect("a newer beat replaces the entry");
    let workers = store.workers().await.expect("workers");
    assert_eq!(workers, vec![beat("w-live", now), beat("w-old", now - 2 * WORKER_ALIVE_MS)]);
    let alive: Vec<bool> = workers.iter().map(|w| w.alive(now)).collect();
    assert_eq!(alive, [true, false]);

    // A beat long after the old one's last removes it; a field over its limit is cut.
    let later = now + WORKER_FORGET_MS;
    let long = WorkerBeat { host: "h".repeat(1_000), ..beat("w-next", later) };
    store.heartbeat(&long).await.expect("beat");
    let ids: Vec<String> =
        store.workers().await.expect("workers").into_iter().map(|w| w.id).collect();
    assert_eq!(ids, ["w-next", "w-live"], "w-old was forgotten");
    let next = store.workers().await.expect("workers").remove(0);
    assert_eq!(next.host.len(), crate::queue::WORKER_FIELD_LEN_MAX);

    // A beat carries the worker's breakers; at most WORKER_BREAKERS_MAX of them are kept.
    let breaker = |n: usize| BreakerBeat {
        provider: format!("provider-{n}"),
        channel: "sms".into(),
        state: if n == 0 { "open".into() } else { "closed".into() },
        since_ms: later,
        opened: 1,
        rejected: 3,
        calls: 40,
        failures: 9,
        recent_calls: 40,
        recent_failures: 9,
        consecutive_failures: 5,
    };
    let many: Vec<BreakerBeat> = (0..WORKER_BREAKERS_MAX + 5).map(breaker).collect();
    let with = WorkerBeat { breakers: many.clone(), ..beat("w-next", later + 1) };
    store.heartbeat(&with).await.expect("beat");
    let next = store.workers().await.expect("workers").remove(0);
    assert_eq!(next.breakers, many[..WORKER_BREAKERS_MAX], "{:?}", next.breakers.len());
}

/// Statistics add up over the minutes read, repeated adds accumulate, a tenant reads only its
/// own, and both limits (counters per add, minutes per read) are enforced.
pub async fn stats_add_up_per_tenant_and_minute<S: Conformance>(store: &S) {
    use crate::stats::{
        ADD_COUNTERS_MAX, Counts, MinuteCounts, READ_MINUTES_MAX, StatKey, StatKind, minute_of,
    };
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let now = minute_of(store.now_ms());
    let sent = StatKey::new(StatKind::Sent, Channel::Email, Some(&provider()));
    let skipped = StatKey::with_detail(StatKind::Skipped, Channel::Email, None, "opted_out");
    let slow = StatKey::latency(StatKind::Handover, Channel::Email, 1_500);
    let minute = |tenant: &TenantId, minute: u64, counts: &[(&StatKey, u64)]| MinuteCounts {
        tenant: tenant.clone(),
        minute,
        counts: counts.iter().map(|(k, n)| ((*k).clone(), *n)).collect(),
    };
    let batch = [
        minute(&acme, now - 2, &[(&sent, 3), (&skipped, 1)]),
        minute(&acme, now, &[(&sent, 2), (&slow, 1)]),
        minute(&globex, now, &[(&sent, 100)]),
    ];
    assert_eq!(store.read_stats(&acme, now - 2, now).await, Ok(Counts::new()));
    store.add_stats(&batch).await.expect("add");
    store.add_stats(&[minute(&acme, now, &[(&sent, 5)])]).await.expect("a second add adds");
    let counts = |pairs: &[(&StatKey, u64)]| -> Counts {
        pairs.iter().map(|(k, n)| ((*k).clone(), *n)).collect()
    };
    let all = store.read_stats(&acme, now - 2, now).await.expect("read");
    assert_eq!(all, counts(&[(&sent, 10), (&skipped, 1), (&slow, 1)]));
    let recent = store.read_stats(&acme, now - 1, now).await.expect("read");
    assert_eq!(recent, counts(&[(&sent, 7), (&slow, 1)]), "minutes outside the range are left out");
    let theirs = store.read_stats(&globex, now - 2, now).await.expect("read");
    assert_eq!(theirs, counts(&[(&sent, 100)]), "a tenant reads only its own");
    assert_eq!(store.read_stats(&acme, now - 10, now - 5).await, Ok(Counts::new()));

    assert!(store.read_stats(&acme, now, now - 1).await.is_err(), "an empty range");
    assert!(store.read_stats(&acme, now - READ_MINUTES_MAX, now).await.is_err(), "too long");
    assert!(store.read_stats(&acme, now + 1 - READ_MINUTES_MAX, now).await.is_ok());
    let huge: Counts = (0..=ADD_COUNTERS_MAX)
        .map(|i| {
            (StatKey::with_detail(StatKind::Deferred, Channel::Sms, None, &format!("r{i}")), 1)
        })
        .collect();
    let over = MinuteCounts { tenant: acme.clone(), minute: now, counts: huge };
    assert!(store.add_stats(&[over]).await.is_err(), "an add over the limit is refused");
    assert_eq!(store.read_stats(&acme, now, now).await.expect("read")[&sent], 7, "nothing added");
}

/// A tenant sees nothing of another tenant's notifications.
pub async fn tenant_isolation<S: Conformance>(store: &S) {
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let now = store.now_ms();
    let rec = record(&acme, &id(&acme, 1), now, None);
    create(store, &rec).await;
    committed(store, &commit(&rec, 1, dead(), now + 1, None)).await;
    assert_eq!(store.load(&globex, &rec.id).await, Ok(None));
    assert_eq!(store.history(&globex, &rec.id).await, Ok(vec![]));
    let mut theirs = commit(&rec, 2, sent(), now + 2, None);
    theirs.tenant = globex.clone();
    assert_eq!(store.commit(&theirs).await, Ok(CommitOutcome::NotFound));
    assert_eq!(listed(store, &globex, &all_of()).await, vec![]);
    let page = store.dead_letters(&globex, &DlqFilter::default(), now + 5).await.expect("dlq");
    assert_eq!(page.records, vec![]);
    let ours = store.load(&acme, &rec.id).await.expect("load").expect("record");
    assert_eq!((ours.version, ours.state), (2, dead()));
}

/// Redrives exactly `n` and drops nothing.
fn redriven(n: usize) -> Reaped {
    Reaped { redriven: n, cleared: 0 }
}

/// Loses whatever wake-ups are due at `at_ms`: promoted, fetched and acked without being run, as
/// a Redis that lost its last second of writes or an operator deleting a stream would.
async fn lose_wakes<S: Conformance>(store: &S, at_ms: u64) -> Vec<Wake> {
    store.promote_due(at_ms, 1_000).await.expect("promote");
    let lost = fetch_all(store, "lossy").await;
    store.ack(&lost).await.expect("ack");
    lost.into_iter().map(|d| d.wake).collect()
}

/// A record whose wake-up was lost is re-driven at its current version once its deadline (its
/// wake-up's time plus `REAPER_SLACK_MS`) has passed, not before; the deadline then moves a slack
/// further, so a record that stays stuck is re-driven once per slack, never in a loop; and a
/// commit moves it with the new wake-up.
pub async fn lost_wake_is_redriven_after_its_deadline<S: Conformance>(store: &S) {
    let acme = tenant("acme");
    let now = store.now_ms();
    let rec = record(&acme, &id(&acme, 1), now, Some(now));
    create(store, &rec).await;
    let wake_at = now + 60_000;
    assert_eq!(lose_wakes(store, now).await, vec![wake(&acme, &rec.id, 1)]);
    assert_eq!(committed(store, &commit(&rec, 1, State::Received {}, now, Some(wake_at))).await, 2);
    assert_eq!(lose_wakes(store, wake_at).await, vec![wake(&acme, &rec.id, 2)]);

    let deadline = wake_at + REAPER_SLACK_MS;
    assert_eq!(store.redrive_overdue(deadline - 1, 100).await, Ok(Reaped::default()));
    assert_eq!(store.fetch("c1", 10, 0).await, Ok(vec![]), "re-driven before its deadline");
    assert_eq!(store.redrive_overdue(deadline, 100).await, Ok(redriven(1)));
    let got = store.fetch("c1", 10, 0).await.expect("fetch");
    assert_eq!(
        got.iter().map(|d| (&d.wake, d.tries)).collect::<Vec<_>>(),
        vec![(&wake(&acme, &rec.id, 2), 0)],
        "one wake-up at the current version, ready at once"
    );
    store.ack(&got).await.expect("ack");
    // A second reaper at the same moment finds nothing: the deadline moved a slack on.
    assert_eq!(store.redrive_overdue(deadline, 100).await, Ok(Reaped::default()));
    let next = deadline + REAPER_SLACK_MS;
    assert_eq!(store.redrive_overdue(next - 1, 100).await, Ok(Reaped::default()));
    assert_eq!(store.redrive_overdue(next, 100).await, Ok(redriven(1)));
    store.ack(&fetch_all(store, "c1").await).await.expect("ack");

    // A commit writes the deadline of its own wake-up.
    let later = next + 3_600_000;
    assert_eq!(committed(store, &commit(&rec, 2, State::Received {}, next, Some(later))).await, 3);
    let deadline = later + REAPER_SLACK_MS;
    assert_eq!(store.redrive_overdue(deadline - 1, 100).await, Ok(Reaped::default()));
    assert_eq!(lose_wakes(store, later).await, vec![wake(&acme, &rec.id, 3)]);
    assert_eq!(store.redrive_overdue(deadline, 100).await, Ok(redriven(1)));
    let got = fetch_all(store, "c1").await;
    assert_eq!(got.iter().map(|d| &d.wake).collect::<Vec<_>>(), vec![&wake(&acme, &rec.id, 3)]);
    store.ack(&got).await.expect("ack");
}

/// Terminal and `sent` records have no deadline, whatever wake-up their commit carried, so the
/// reaper never re-drives them; a record that waits on a worker with no wake-up at all gets one
/// slack from its commit.
pub async fn settled_records_are_never_redriven<S: Conformance>(store: &S) {
    let acme = tenant("acme");
    let now = store.now_ms();
    let recs: Vec<Record> =
        (0..4).map(|i| record(&acme, &id(&acme, i + 1), now, Some(now))).collect();
    for r in &recs {
        create(store, r).await;
    }
    lose_wakes(store, now).await;
    let far = now + 30 * 86_400_000;
    committed(store, &commit(&recs[0], 1, dead(), now, Some(now + 60_000))).await;
    committed(store, &commit(&recs[1], 1, State::Cancelled {}, now, None)).await;
    committed(store, &commit(&recs[2], 1, sent(), now, Some(now + 60_000))).await;
    // Waiting on a worker, nothing to wake it: only the reaper will.
    committed(store, &commit(&recs[3], 1, State::Received {}, now, None)).await;
    lose_wakes(store, far).await;
    assert_eq!(store.redrive_overdue(now + REAPER_SLACK_MS - 1, 100).await, Ok(Reaped::default()));
    assert_eq!(store.redrive_overdue(now + REAPER_SLACK_MS, 100).await, Ok(redriven(1)));
    let got = fetch_all(store, "c1").await;
    assert_eq!(got.iter().map(|d| &d.wake).collect::<Vec<_>>(), vec![&wake(&acme, &recs[3].id, 2)]);
    store.ack(&got).await.expect("ack");
    // Once it settles too, nothing is ever re-driven again.
    committed(store, &commit(&recs[3], 2, sent(), now + 1, None)).await;
    assert_eq!(store.redrive_overdue(far, 100).await, Ok(Reaped::default()));
    assert_eq!(store.fetch("c1", 10, 0).await, Ok(vec![]));
    // Nothing queued; the one dead letter waits for an operator, not a worker.
    assert_eq!(stats(store).await, QueueStats { dead_lettered: 1, ..QueueStats::default() });
}

/// `stats` counts the records past their deadline; the reaper takes at most `max_per_shard` of
/// them per shard per call, and every one of them eventually.
pub async fn overdue_records_are_counted_and_reaped_in_bounded_chunks<S: Conformance>(store: &S) {
    let acme = tenant("acme");
    let now = store.now_ms();
    // Written two slacks ago without a wake-up: overdue since one slack ago.
    let long_ago = now - 2 * REAPER_SLACK_MS;
    let n = 40_u32;
    for i in 0..n {
        create(store, &record(&acme, &id(&acme, i), long_ago, None)).await;
    }
    let fresh = record(&acme, &id(&acme, 999), now, Some(now + 60_000));
    create(store, &fresh).await;
    assert_eq!(
        stats(store).await,
        QueueStats { overdue: u64::from(n), scheduled: 1, ..QueueStats::default() }
    );
    in_bounded_rounds(n, "redrive_overdue", async || {
        let reaped = store.redrive_overdue(now, 1).await.expect("redrive");
        assert_eq!(reaped.cleared, 0, "a waiting record's entry was dropped");
        reaped.redriven
    })
    .await;
    assert_eq!(
        stats(store).await,
        QueueStats { ready: u64::from(n), scheduled: 1, ..QueueStats::default() }
    );
    let all = fetch_all(store, "a").await;
    let mut woken: Vec<Wake> = all.iter().map(|d| d.wake.clone()).collect();
    woken.sort_by_key(Wake::key);
    let mut expected: Vec<Wake> = (0..n).map(|i| wake(&acme, &id(&acme, i), 1)).collect();
    expected.sort_by_key(Wake::key);
    assert_eq!(woken, expected, "each overdue record woken once, at its version");
    store.ack(&all).await.expect("ack");
}

// ---- the recipients directory ------------------------------------------------------------------

fn recipient_id(s: &str) -> RecipientId {
    RecipientId::new(s).expect("fixture recipient id")
}

fn contact(email: &str) -> Contact {
    Contact {
        email: Some(EmailAddress::parse(email).expect("fixture address")),
        phone: Some(PhoneNumber::parse("+447911123456").expect("fixture number")),
        locale: Some(Locale::parse("en-GB").expect("fixture locale")),
        time_zone: Some(TimeZone::parse("Europe/London").expect("fixture zone")),
    }
}

fn device(token: &str, added_at_ms: u64) -> Device {
    let token = DeviceToken::parse(token).expect("fixture token");
    Device::new(Platform::Android, token, added_at_ms)
}

fn opted_out_of_sms() -> Preferences {
    Preferences { channels: [(Channel::Sms, false)].into(), ..Preferences::default() }
}

async fn entry_of<S: Conformance>(
    store: &S,
    tenant: &TenantId,
    id: &RecipientId,
) -> RecipientEntry {
    store.recipient(tenant, id).await.expect("read").expect("an entry")
}

/// Contact data and preferences are written independently (a `PUT` of one keeps the other),
/// every write bumps the revision by one, and a read returns what was written.
pub async fn directory_entries_round_trip_with_revisions<S: Conformance>(store: &S) {
    let acme = tenant("acme");
    let bob = recipient_id("bob");
    let now = store.now_ms();
    assert_eq!(store.recipient(&acme, &bob).await, Ok(None));
    assert_eq!(
        store.put_contact(&acme, &bob, &contact("bob@example.com"), now).await,
        Ok((1, true))
    );
    let entry = entry_of(store, &acme, &bob).await;
    assert_eq!(entry.id, bob);
    assert_eq!(entry.revision, 1);
    assert_eq!(entry.updated_at_ms, now);
    assert_eq!(entry.contact(), Some(&contact("bob@example.com")));
    assert_eq!(entry.preferences, Preferences::default());
    assert_eq!(store.put_preferences(&acme, &bob, &opted_out_of_sms(), now + 1).await, Ok(2));
    let changed = contact("robert@example.com");
    assert_eq!(store.put_contact(&acme, &bob, &changed, now + 2).await, Ok((3, false)));
    let entry = entry_of(store, &acme, &bob).await;
    assert_eq!((entry.revision, entry.updated_at_ms), (3, now + 2));
    assert_eq!(entry.contact(), Some(&changed));
    assert_eq!(entry.preferences, opted_out_of_sms(), "a profile PUT keeps the preferences");
    // Preferences without a profile: an inline-addressed recipient can have them too.
    let ann = recipient_id("ann");
    assert_eq!(store.put_preferences(&acme, &ann, &opted_out_of_sms(), now).await, Ok(1));
    let entry = entry_of(store, &acme, &ann).await;
    assert_eq!((entry.profile, entry.preferences), (None, opted_out_of_sms()));
    // Another tenant's recipient of the same id is someone else.
    assert_eq!(store.recipient(&tenant("globex"), &bob).await, Ok(None));
}

/// Devices need a profile, are at most `DEVICES_MAX`, register idempotently by their id (derived
/// from the token), come back oldest first, are removed by id, and a profile `PUT` keeps them.
pub async fn directory_devices_are_bounded_idempotent_and_removable<S: Conformance>(store: &S) {
    let acme = tenant("acme");
    let bob = recipient_id("bob");
    let now = store.now_ms();
    let first = device("token-0", now);
    assert_eq!(store.add_device(&acme, &bob, &first, now).await, Ok(DeviceAdded::NoProfile));
    assert_eq!(store.recipient(&acme, &bob).await, Ok(None), "nothing written");
    store.put_contact(&acme, &bob, &contact("bob@example.com"), now).await.expect("put");
    let mut added = Vec::new();
    for i in 0..DEVICES_MAX {
        // Registered newest token first in time order reversed, to check the order on read.
        let d = device(&format!("token-{i}"), now + 100 - i as u64);
        let revision = 2 + i as u64;
        assert_eq!(
            store.add_device(&acme, &bob, &d, now).await,
            Ok(DeviceAdded::Added { revision })
        );
        added.push(d);
    }
    let last = 1 + DEVICES_MAX as u64;
    let extra = device("token-extra", now);
    assert_eq!(store.add_device(&acme, &bob, &extra, now).await, Ok(DeviceAdded::Full));
    let again = device("token-3", now + 999);
    assert_eq!(
        store.add_device(&acme, &bob, &again, now).await,
        Ok(DeviceAdded::Exists { revision: last }),
        "the same token is the same device"
    );
    let entry = entry_of(store, &acme, &bob).await;
    added.reverse();
    assert_eq!(entry.devices(), added.as_slice(), "oldest first, unchanged by the re-register");
    assert_eq!(entry.revision, last);
    // A profile PUT keeps the devices.
    store.put_contact(&acme, &bob, &contact("bob@example.com"), now).await.expect("put");
    assert_eq!(entry_of(store, &acme, &bob).await.devices().len(), DEVICES_MAX);
    assert_eq!(store.remove_device(&acme, &bob, &again.id, now + 5).await, Ok(Some(last + 2)));
    assert_eq!(store.remove_device(&acme, &bob, &again.id, now + 5).await, Ok(None));
    let entry = entry_of(store, &acme, &bob).await;
    assert_eq!(entry.devices().len(), DEVICES_MAX - 1);
    assert!(entry.devices().iter().all(|d| d.id != again.id));
    assert_eq!(
        store.add_device(&acme, &bob, &extra, now).await,
        Ok(DeviceAdded::Added { revision: last + 3 })
    );
    let unknown = DeviceId::new("d0000000000000000").expect("id");
    assert_eq!(store.remove_device(&acme, &recipient_id("nobody"), &unknown, now).await, Ok(None));
}

/// Every write is seen by the very next read: an opt-out, then an opt-in, then an opt-out again,
/// each read right after its write sees it (the lifecycle reads before every decision; there is
/// no cache to invalidate).
pub async fn directory_reads_see_the_latest_write<S: Conformance>(store: &S) {
    let acme = tenant("acme");
    let bob = recipient_id("bob");
    let now = store.now_ms();
    for round in 0..20_u64 {
        let opted_out = round % 2 == 0;
        let preferences = Preferences {
            unsubscribed: opted_out,
            channels: [(Channel::Email, !opted_out)].into(),
            ..Preferences::default()
        };
        let revision = store.put_preferences(&acme, &bob, &preferences, now + round).await;
        assert_eq!(revision, Ok(round + 1));
        let entry = entry_of(store, &acme, &bob).await;
        assert_eq!(entry.preferences, preferences, "round {round}");
        assert_eq!(entry.revision, round + 1);
    }
}

/// A tenant's recipients walk in pages, in id order, each exactly once: only that tenant's, the
/// cursor excluding what came before, the last page saying so; recipients added behind the
/// cursor during the walk are not visited twice, those ahead of it are visited.
pub async fn directory_pages_walk_each_recipient_once_in_id_order<S: Conformance>(store: &S) {
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let now = store.now_ms();
    let mut expected: Vec<RecipientId> =
        (0..37).map(|i| recipient_id(&format!("u{:03}", (i * 7919) % 1_000))).collect();
    for (i, id) in expected.iter().enumerate() {
        if i % 3 == 0 {
            store.put_preferences(&acme, id, &opted_out_of_sms(), now).await.expect("put");
        } else {
            store.put_contact(&acme, id, &contact("x@example.com"), now).await.expect("put");
        }
    }
    store
        .put_contact(&globex, &recipient_id("g1"), &contact("g@example.com"), now)
        .await
        .expect("put");
    expected.sort();
    let mut seen = Vec::new();
    let mut cursor: Option<RecipientId> = None;
    let mut pages = 0;
    loop {
        let page = store.recipients(&acme, cursor.as_ref(), 5).await.expect("page");
        assert!(page.entries.len() <= 5);
        seen.extend(page.entries.iter().map(|e| e.id.clone()));
        pages += 1;
        if pages == 2 {
            // Behind the cursor and ahead of it.
            store
                .put_contact(&acme, &recipient_id("a000"), &contact("a@example.com"), now)
                .await
                .expect("put");
            store
                .put_contact(&acme, &recipient_id("z999"), &contact("z@example.com"), now)
                .await
                .expect("put");
        }
        match page.next {
            Some(next) => {
                assert_eq!(Some(&next), page.entries.last().map(|e| &e.id));
                cursor = Some(next);
            }
            None => break,
        }
        assert!(pages < 100, "the walk does not end");
    }
    expected.push(recipient_id("z999"));
    assert_eq!(seen, expected);
    assert_eq!(pages, expected.len().div_ceil(5));
    // The entries carry what was stored.
    let page = store.recipients(&acme, None, 1_000_000).await.expect("page");
    assert_eq!(page.entries.len(), expected.len() + 1, "capped, not refused");
    assert_eq!(page.next, None);
    let first = &page.entries[0];
    assert_eq!((first.id.as_str(), first.contact().is_some()), ("a000", true));
    assert_eq!(store.recipients(&acme, None, 0).await.expect("page").entries, vec![]);
    let theirs = store.recipients(&globex, None, 10).await.expect("page");
    assert_eq!(theirs.entries.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["g1"]);
    assert_eq!(store.recipients(&tenant("initech"), None, 10).await.expect("page").entries, vec![]);
}
