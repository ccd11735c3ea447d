//! The Redis inbox under real concurrency: many connections and tasks on a multi-threaded
//! runtime appending and marking everything read at once, against a throwaway redis-server.

use std::sync::Arc;

use futures::StreamExt;
use steps::model::{Category, RecipientId, TenantId};
use storage::keys;
use storage::redis::RedisStore;
use storage::testing::RedisServer;
use workflows::inbox::{InboxFeed, InboxState, InboxStatus};
use workflows::ports::{Inbox, InboxItem};

fn item(tenant: &TenantId, n: u32) -> InboxItem {
    InboxItem {
        notification_id: keys::new_notification_id(
            tenant,
            None,
            &format!("01HZZZZZZZZZZZZZZZZZ{n:06}"),
        ),
        title: format!("title {n}"),
        body: "body".into(),
        category: Category::new("news").unwrap(),
        at_ms: u64::from(n),
        read: false,
        action: None,
    }
}

/// Eight connections append 400 entries while four others mark everything read in a loop: each
/// entry is marked by exactly one mark-all-read or still unread, the count equals the unread
/// entries listed, and the feed announced every entry once with the count at that moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_unread_count_stays_exact_under_concurrent_appends_and_mark_all() {
    let server = RedisServer::start();
    let url = server.url();
    let acme = TenantId::new("acme").unwrap();
    let bob = RecipientId::new("bob").unwrap();
    let watcher = RedisStore::connect(&url).await.unwrap();
    let mut feed = watcher.inbox_feed().await.unwrap();

    let writers = 8_u32;
    let per_writer = 50_u32;
    let total = writers * per_writer;
    let mut appends = Vec::new();
    for w in 0..writers {
        let store = RedisStore::connect(&url).await.unwrap();
        let (acme, bob) = (acme.clone(), bob.clone());
        appends.push(tokio::spawn(async move {
            for n in 0..per_writer {
                store.inbox_append(&acme, &bob, &item(&acme, w * per_writer + n)).await.unwrap();
            }
        }));
    }
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut markers = Vec::new();
    for m in 0..4_u64 {
        let store = RedisStore::connect(&url).await.unwrap();
        let (acme, bob, done) = (acme.clone(), bob.clone(), done.clone());
        markers.push(tokio::spawn(async move {
            let mut marked = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                marked += store.inbox_mark_all_read(&acme, &bob, 1_000 + m).await.unwrap();
                tokio::task::yield_now().await;
            }
            marked
        }));
    }
    for append in appends {
        append.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut marked = 0;
    for marker in markers {
        marked += marker.await.unwrap();
    }
    assert!(marked > 0, "the markers ran while the appends did");

    let counts = watcher.inbox_counts(&acme, &bob).await.unwrap();
    assert_eq!(counts.last_seq, u64::from(total));
    assert_eq!(marked + counts.unread, u64::from(total), "each entry marked once or unread");
    let mut unread = 0;
    let mut before = None;
    loop {
        let page = watcher.inbox_page(&acme, &bob, InboxStatus::Unread, before, 100).await.unwrap();
        unread += page.entries.len() as u64;
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(unread, counts.unread);

    // The feed saw every entry once, in sequence order, each count at most the entries so far.
    for expected in 1..=u64::from(total) {
        let event = tokio::time::timeout(std::time::Duration::from_secs(5), feed.next())
            .await
            .expect("an event within 5 s")
            .expect("the feed is open");
        assert_eq!(event.entry.seq, expected);
        assert!(event.unread >= 1 && event.unread <= expected);
    }
}
