//! Conformance checks of the in-app inbox's read state and feed ([`workflows::inbox`]).

use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;
use steps::model::{Category, RecipientId, TenantId};
use workflows::inbox::{
    INBOX_PAGE_MAX, InboxCounts, InboxEntry, InboxFeed, InboxState, InboxStatus, Marked,
};
use workflows::ports::{INBOX_LEN_MAX, InboxItem};

use super::{Conformance, id, tenant};

/// What the inbox checks need of a store.
pub trait InboxConformance: Conformance + InboxState + InboxFeed {}

impl<S: Conformance + InboxState + InboxFeed> InboxConformance for S {}

/// Every inbox check, by name, in the order
/// [`inbox_conformance_tests!`](crate::inbox_conformance_tests) runs them.
pub const CHECKS: [&str; 5] = [
    "inbox_pages_newest_first_with_a_cursor_and_a_status",
    "inbox_read_and_archive_are_idempotent_and_counted",
    "inbox_trimming_keeps_the_count_exact",
    "inbox_unread_count_is_exact_under_concurrent_appends_and_mark_all",
    "inbox_feed_announces_each_new_entry_once_in_order",
];

/// Expands to one `#[tokio::test]` per inbox check. `$fresh` is as for `conformance_tests!`.
#[macro_export]
macro_rules! inbox_conformance_tests {
    ($fresh:path) => {
        $crate::inbox_conformance_tests!(@each $fresh;
            inbox_pages_newest_first_with_a_cursor_and_a_status,
            inbox_read_and_archive_are_idempotent_and_counted,
            inbox_trimming_keeps_the_count_exact,
            inbox_unread_count_is_exact_under_concurrent_appends_and_mark_all,
            inbox_feed_announces_each_new_entry_once_in_order,
        );
    };
    (@each $fresh:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (store, _guard) = $fresh().await;
                $crate::conformance::inbox::$name(&store).await;
            }
        )*
    };
}

// ---- fixtures ----------------------------------------------------------------------------------

fn recipient(name: &str) -> RecipientId {
    RecipientId::new(name).expect("fixture id")
}

fn item(tenant: &TenantId, n: u32) -> InboxItem {
    InboxItem {
        notification_id: id(tenant, n),
        title: format!("title {n}"),
        body: format!("body {n}"),
        category: Category::new("order_updates").expect("fixture id"),
        at_ms: 1_000 + u64::from(n),
        read: false,
        action: n.is_multiple_of(2).then(|| format!("/orders/{n}")),
    }
}

fn seqs(entries: &[InboxEntry]) -> Vec<u64> {
    entries.iter().map(|e| e.seq).collect()
}

/// Every entry in `status`, walking the pages.
async fn walk<S: InboxConformance>(
    store: &S,
    tenant: &TenantId,
    recipient: &RecipientId,
    status: InboxStatus,
) -> Vec<InboxEntry> {
    let mut all = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .inbox_page(tenant, recipient, status, before, INBOX_PAGE_MAX)
            .await
            .expect("page");
        all.extend(page.entries);
        match page.next {
            Some(next) => before = Some(next),
            None => return all,
        }
    }
}

// ---- checks ------------------------------------------------------------------------------------

/// Entries get increasing sequence numbers (a repeated append gets none), list newest first in
/// pages whose cursor walks each entry once, and stay apart per tenant and recipient.
pub async fn inbox_pages_newest_first_with_a_cursor_and_a_status<S: InboxConformance>(store: &S) {
    let acme = tenant("acme");
    let bob = recipient("bob");
    for n in 1..=5 {
        store.inbox_append(&acme, &bob, &item(&acme, n)).await.expect("append");
    }
    store.inbox_append(&acme, &bob, &item(&acme, 3)).await.expect("append again");

    let first = store.inbox_page(&acme, &bob, InboxStatus::All, None, 2).await.expect("page");
    assert_eq!(seqs(&first.entries), vec![5, 4]);
    assert_eq!(first.entries[0].item, item(&acme, 5));
    assert_eq!((first.entries[0].read_at_ms, first.entries[0].archived_at_ms), (None, None));
    assert_eq!(first.next, Some(4));
    let second = store.inbox_page(&acme, &bob, InboxStatus::All, first.next, 2).await.expect("p");
    assert_eq!((seqs(&second.entries), second.next), (vec![3, 2], Some(2)));
    let last = store.inbox_page(&acme, &bob, InboxStatus::All, second.next, 2).await.expect("p");
    assert_eq!((seqs(&last.entries), last.next), (vec![1], None));
    // A page that ends exactly at the last entry says there is no next one.
    let exact = store.inbox_page(&acme, &bob, InboxStatus::All, None, 5).await.expect("page");
    assert_eq!((exact.entries.len(), exact.next), (5, None));
    let none = store.inbox_page(&acme, &bob, InboxStatus::All, None, 0).await.expect("page");
    assert!(none.entries.is_empty());
    let archived = store.inbox_page(&acme, &bob, InboxStatus::Archived, None, 10).await;
    assert!(archived.expect("page").entries.is_empty());
    assert_eq!(
        store.inbox_counts(&acme, &bob).await,
        Ok(InboxCounts { unread: 5, last_seq: 5 }),
        "the repeated append made no entry"
    );

    let since = store.inbox_since(&acme, &bob, 2, 10).await.expect("since");
    assert_eq!(seqs(&since), vec![3, 4, 5], "oldest first after the cursor");
    assert_eq!(seqs(&store.inbox_since(&acme, &bob, 3, 1).await.expect("since")), vec![4]);
    assert!(store.inbox_since(&acme, &bob, 5, 10).await.expect("since").is_empty());

    // Pages are capped.
    let carol = recipient("carol");
    let many = u32::try_from(INBOX_PAGE_MAX).expect("small") + 3;
    for n in 1..=many {
        store.inbox_append(&acme, &carol, &item(&acme, 100 + n)).await.expect("append");
    }
    let capped = store.inbox_page(&acme, &carol, InboxStatus::All, None, INBOX_PAGE_MAX + 50).await;
    let capped = capped.expect("page");
    assert_eq!(capped.entries.len(), INBOX_PAGE_MAX);
    assert_eq!(capped.next, Some(4));
    assert_eq!(walk(store, &acme, &carol, InboxStatus::All).await.len(), many as usize);

    // Apart per tenant and recipient.
    let globex = tenant("globex");
    assert_eq!(store.inbox_counts(&globex, &bob).await, Ok(InboxCounts::default()));
    let dave = recipient("dave");
    assert!(walk(store, &acme, &dave, InboxStatus::All).await.is_empty());
    store.inbox_append(&globex, &bob, &item(&globex, 1)).await.expect("append");
    assert_eq!(store.inbox_counts(&globex, &bob).await.expect("counts").last_seq, 1);
    assert_eq!(store.inbox_counts(&acme, &bob).await.expect("counts").last_seq, 5);
}

/// Reading and archiving keep their first time, count exactly, and say when there is no such
/// entry; unarchiving restores an unread entry to the unread count.
pub async fn inbox_read_and_archive_are_idempotent_and_counted<S: InboxConformance>(store: &S) {
    let acme = tenant("acme");
    let bob = recipient("bob");
    for n in 1..=4 {
        store.inbox_append(&acme, &bob, &item(&acme, n)).await.expect("append");
    }
    let one = id(&acme, 1);
    assert_eq!(store.inbox_mark_read(&acme, &bob, &one, 50).await, Ok(Marked::Done { unread: 3 }));
    assert_eq!(store.inbox_mark_read(&acme, &bob, &one, 60).await, Ok(Marked::Done { unread: 3 }));
    let listed = walk(store, &acme, &bob, InboxStatus::All).await;
    let read = listed.iter().find(|e| e.item.notification_id == one).expect("listed");
    assert_eq!(read.read_at_ms, Some(50), "the first read time is kept");
    assert!(read.item.read);
    assert_eq!(seqs(&walk(store, &acme, &bob, InboxStatus::Unread).await), vec![4, 3, 2]);

    // Unknown entries, other recipients and other tenants.
    let unknown = id(&acme, 99);
    assert_eq!(store.inbox_mark_read(&acme, &bob, &unknown, 70).await, Ok(Marked::NotFound));
    assert_eq!(store.inbox_archive(&acme, &bob, &unknown, 70).await, Ok(Marked::NotFound));
    assert_eq!(store.inbox_unarchive(&acme, &bob, &unknown).await, Ok(Marked::NotFound));
    let carol = recipient("carol");
    assert_eq!(store.inbox_mark_read(&acme, &carol, &one, 70).await, Ok(Marked::NotFound));
    let globex = tenant("globex");
    assert_eq!(store.inbox_archive(&globex, &bob, &one, 70).await, Ok(Marked::NotFound));

    // Archiving an unread entry takes it out of the count and the default view.
    let two = id(&acme, 2);
    assert_eq!(store.inbox_archive(&acme, &bob, &two, 80).await, Ok(Marked::Done { unread: 2 }));
    assert_eq!(store.inbox_archive(&acme, &bob, &two, 90).await, Ok(Marked::Done { unread: 2 }));
    let archived = walk(store, &acme, &bob, InboxStatus::Archived).await;
    assert_eq!(seqs(&archived), vec![2]);
    assert_eq!((archived[0].archived_at_ms, archived[0].read_at_ms), (Some(80), None));
    assert_eq!(seqs(&walk(store, &acme, &bob, InboxStatus::All).await), vec![4, 3, 1]);
    assert_eq!(seqs(&walk(store, &acme, &bob, InboxStatus::Unread).await), vec![4, 3]);
    assert_eq!(seqs(&store.inbox_since(&acme, &bob, 0, 10).await.expect("since")), vec![1, 3, 4]);
    // Reading an archived entry records the time but changes no count.
    assert_eq!(store.inbox_mark_read(&acme, &bob, &two, 95).await, Ok(Marked::Done { unread: 2 }));
    let three = id(&acme, 3);
    assert_eq!(store.inbox_archive(&acme, &bob, &three, 96).await, Ok(Marked::Done { unread: 1 }));

    // Mark all read: marks what is unread, archived entries aside, and is idempotent.
    assert_eq!(store.inbox_mark_all_read(&acme, &bob, 100).await, Ok(1));
    assert_eq!(store.inbox_mark_all_read(&acme, &bob, 110).await, Ok(0));
    assert_eq!(store.inbox_counts(&acme, &bob).await.expect("counts").unread, 0);
    let four = walk(store, &acme, &bob, InboxStatus::All).await;
    assert_eq!(four[0].read_at_ms, Some(100));
    assert_eq!(four[1].read_at_ms, Some(50));

    // Unarchiving: a never-read entry is unread again; a read one stays read.
    assert_eq!(store.inbox_unarchive(&acme, &bob, &three).await, Ok(Marked::Done { unread: 1 }));
    assert_eq!(store.inbox_unarchive(&acme, &bob, &three).await, Ok(Marked::Done { unread: 1 }));
    assert_eq!(store.inbox_unarchive(&acme, &bob, &two).await, Ok(Marked::Done { unread: 1 }));
    assert_eq!(seqs(&walk(store, &acme, &bob, InboxStatus::Unread).await), vec![3]);
    assert_eq!(seqs(&walk(store, &acme, &bob, InboxStatus::All).await), vec![4, 3, 2, 1]);
    assert!(walk(store, &acme, &bob, InboxStatus::Archived).await.is_empty());
    assert_eq!(store.inbox_counts(&acme, &bob).await, Ok(InboxCounts { unread: 1, last_seq: 4 }));
}

/// Beyond `INBOX_LEN_MAX` the oldest entries go, with their state: the count stays exact and the
/// sequence keeps counting.
pub async fn inbox_trimming_keeps_the_count_exact<S: InboxConformance>(store: &S) {
    let acme = tenant("acme");
    let bob = recipient("bob");
    let extra = 3;
    let total = u32::try_from(INBOX_LEN_MAX).expect("small") + extra;
    store.inbox_append(&acme, &bob, &item(&acme, 1)).await.expect("append");
    store.inbox_archive(&acme, &bob, &id(&acme, 1), 5).await.expect("archive");
    store.inbox_append(&acme, &bob, &item(&acme, 2)).await.expect("append");
    store.inbox_mark_read(&acme, &bob, &id(&acme, 2), 5).await.expect("read");
    for n in 3..=total {
        store.inbox_append(&acme, &bob, &item(&acme, n)).await.expect("append");
    }
    let counts = store.inbox_counts(&acme, &bob).await.expect("counts");
    assert_eq!(counts, InboxCounts { unread: INBOX_LEN_MAX as u64, last_seq: u64::from(total) });
    let all = walk(store, &acme, &bob, InboxStatus::All).await;
    assert_eq!(all.len(), INBOX_LEN_MAX);
    assert_eq!(all.last().map(|e| e.seq), Some(u64::from(extra) + 1));
    assert!(walk(store, &acme, &bob, InboxStatus::Archived).await.is_empty());
    let gone = store.inbox_mark_read(&acme, &bob, &id(&acme, 1), 9).await;
    assert_eq!(gone, Ok(Marked::NotFound), "trimmed entries are gone");
    assert_eq!(store.inbox_mark_all_read(&acme, &bob, 10).await, Ok(INBOX_LEN_MAX as u64));
    // A trimmed notification appended again is a new entry with a new sequence number.
    store.inbox_append(&acme, &bob, &item(&acme, 1)).await.expect("append");
    let newest = store.inbox_page(&acme, &bob, InboxStatus::Unread, None, 5).await.expect("page");
    assert_eq!(seqs(&newest.entries), vec![u64::from(total) + 1]);
}

/// Appends racing mark-all-reads: every entry is either marked by exactly one of them or still
/// unread and counted, and the count is the number of unread entries listed.
pub async fn inbox_unread_count_is_exact_under_concurrent_appends_and_mark_all<
    S: InboxConformance,
>(
    store: &S,
) {
    let acme = tenant("acme");
    let bob = recipient("bob");
    let appends = 200_u32;
    // Interleaved: a mark-all-read after every eighth append, all in flight at once (on Redis,
    // pipelined on one connection, so the server runs them interleaved in this order).
    let work = (1..=appends).map(|n| {
        let acme = &acme;
        let bob = &bob;
        async move {
            store.inbox_append(acme, bob, &item(acme, n)).await.expect("append");
            if n.is_multiple_of(8) {
                store.inbox_mark_all_read(acme, bob, 1_000 + u64::from(n)).await.expect("mark")
            } else {
                0
            }
        }
    });
    let marked = join_all(work).await;
    let marked: u64 = marked.iter().sum();
    let counts = store.inbox_counts(&acme, &bob).await.expect("counts");
    assert_eq!(counts.last_seq, u64::from(appends));
    assert_eq!(marked + counts.unread, u64::from(appends), "each entry marked once or unread");
    let unread = walk(store, &acme, &bob, InboxStatus::Unread).await;
    assert_eq!(unread.len() as u64, counts.unread);
    let all = walk(store, &acme, &bob, InboxStatus::All).await;
    assert_eq!(all.iter().filter(|e| e.read_at_ms.is_none()).count() as u64, counts.unread);
    assert!(unread.iter().all(|e| e.read_at_ms.is_none()));
    // And a final mark-all leaves nothing unread.
    assert_eq!(store.inbox_mark_all_read(&acme, &bob, 2_000).await, Ok(counts.unread));
    assert_eq!(store.inbox_counts(&acme, &bob).await.expect("counts").unread, 0);
}

/// Every subscriber of the feed sees each new entry once, in order, with the unread count after
/// it; a repeated append announces nothing.
pub async fn inbox_feed_announces_each_new_entry_once_in_order<S: InboxConformance>(store: &S) {
    let acme = tenant("acme");
    let bob = recipient("bob");
    let mut first = store.inbox_feed().await.expect("subscribe");
    let mut second = store.inbox_feed().await.expect("subscribe");
    store.inbox_append(&acme, &bob, &item(&acme, 1)).await.expect("append");
    store.inbox_append(&acme, &bob, &item(&acme, 1)).await.expect("append again");
    store.inbox_append(&acme, &bob, &item(&acme, 2)).await.expect("append");
    let globex = tenant("globex");
    store.inbox_append(&globex, &bob, &item(&globex, 7)).await.expect("append");
    for feed in [&mut first, &mut second] {
        let mut events = Vec::new();
        for _ in 0..3 {
            let event = tokio::time::timeout(Duration::from_secs(5), feed.next()).await;
            events.push(event.expect("an event within 5 s").expect("the feed is open"));
        }
        let seen: Vec<_> = events
            .iter()
            .map(|e| (e.tenant.as_str(), e.recipient.as_str(), e.entry.seq, e.unread))
            .collect();
        assert_eq!(
            seen,
            vec![("acme", "bob", 1, 1), ("acme", "bob", 2, 2), ("globex", "bob", 1, 1)]
        );
        assert_eq!(events[1].entry.item, item(&acme, 2));
        assert_eq!((events[1].entry.read_at_ms, events[1].entry.archived_at_ms), (None, None));
        let nothing = tokio::time::timeout(Duration::from_millis(100), feed.next()).await;
        assert!(nothing.is_err(), "no event for the repeated append");
    }
}
