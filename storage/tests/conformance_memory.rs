//! The conformance suite against the in-memory store.

use storage::memory::MemoryStore;

async fn fresh() -> (MemoryStore, ()) {
    (MemoryStore::new(), ())
}

storage::conformance_tests!(fresh);
storage::campaign_conformance_tests!(fresh);
storage::inbox_conformance_tests!(fresh);
storage::transition_conformance_tests!(fresh);

// ---- in-memory-only checks ---------------------------------------------------------------------

use steps::model::{Attempt, Channel, TenantId};
use storage::keys;
use workflows::dlq::{DLQ_SCAN_MAX, DlqFilter, Truncated};
use workflows::machine::State;
use workflows::ports::Store;
use workflows::record::{Cause, Commit, HistoryEntry, Record};

/// A DLQ walk examines at most `DLQ_SCAN_MAX` entries and says it stopped there. (Too slow to
/// set up over Redis in every test run; the Redis store walks the same way, see `dead_letters`.)
#[tokio::test]
async fn a_dlq_walk_stops_at_the_scan_cap_and_says_so() {
    let store = MemoryStore::new();
    let acme = TenantId::new("acme").unwrap();
    let request: steps::model::Request = serde_json::from_value(serde_json::json!({
        "recipient": { "id": "bob" },
        "channel": "in_app",
        "template": { "id": "welcome", "version": "v1" },
        "data": {},
        "category": "news"
    }))
    .unwrap();
    let now = 1_700_000_000_000_u64;
    let total = DLQ_SCAN_MAX + 5;
    for n in 0..total {
        let id = keys::new_notification_id(&acme, None, &format!("01HZZZZZZZZZZZZZZZ{n:08}"));
        let at = now - 1_000_000 + n as u64;
        let record = Record {
            tenant: acme.clone(),
            id: id.clone(),
            version: 1,
            state: State::Received {},
            request: request.clone(),
            seed: 1,
            created_at_ms: at,
            updated_at_ms: at,
            wake_at_ms: None,
            replay: None,
        };
        let first = HistoryEntry {
            at_ms: at,
            version: 1,
            from: None,
            to: State::Received {},
            cause: Cause::WakeUp,
            note: None,
        };
        store.create(&record, &first, None).await.unwrap();
        let dead = State::DeadLettered {
            channel: Channel::InApp,
            provider: None,
            attempt: Attempt(1),
            reason: "all 1 attempts used".into(),
        };
        let commit = Commit {
            tenant: acme.clone(),
            id,
            expected_version: 1,
            state: dead,
            history: vec![],
            wake_at_ms: None,
            now_ms: at,
            replay: None,
        };
        store.commit(&commit).await.unwrap();
    }
    let nothing =
        DlqFilter { reason_contains: Some("no such reason".into()), ..DlqFilter::default() };
    let page = store.dead_letters(&acme, &nothing, now).await.unwrap();
    assert_eq!(page.records.len(), 0);
    assert_eq!((page.scanned, page.truncated), (DLQ_SCAN_MAX, Some(Truncated::Scan)));
    let everything = store.dead_letters(&acme, &DlqFilter::default(), now).await.unwrap();
    assert_eq!(everything.records.len(), DLQ_SCAN_MAX);
    assert_eq!(everything.truncated, Some(Truncated::Limit));
    // Newest first.
    assert!(everything.records.windows(2).all(|w| w[0].updated_at_ms > w[1].updated_at_ms));
    // An age window past the newest five leaves exactly the cap to walk: no truncation.
    let older =
        DlqFilter { older_than_ms: Some(1_000_000 - total as u64 + 6), ..DlqFilter::default() };
    let page = store.dead_letters(&acme, &older, now).await.unwrap();
    assert_eq!((page.records.len(), page.truncated), (DLQ_SCAN_MAX, None));
}
