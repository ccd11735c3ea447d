//! The in-memory in-app inbox: [`Inbox`], [`InboxState`] and [`InboxFeed`] for [`MemoryStore`].
//!
//! Its own lock beside the notification data's (an inbox call never touches a notification), and
//! each call is one short critical section, as each Redis inbox operation is one script. The feed
//! is a [`Feed`]: a subscriber that falls behind is dropped, its stream ends and its clients
//! resume from their last sequence number.

use std::collections::BTreeMap;
use std::future::{Future, ready};
use std::sync::{Mutex, MutexGuard, PoisonError};

use futures::stream::BoxStream;
use steps::model::{NotificationId, RecipientId, TenantId};
use workflows::inbox::{
    INBOX_PAGE_MAX, InboxCounts, InboxEntry, InboxEvent, InboxFeed, InboxPage, InboxState,
    InboxStatus, Marked,
};
use workflows::ports::{INBOX_LEN_MAX, Inbox, InboxItem, StoreError};

use super::MemoryStore;
use super::feed::Feed;

/// One recipient's inbox.
#[derive(Debug, Default)]
struct RecipientInbox {
    /// The newest sequence number handed out (0 before the first append).
    last_seq: u64,
    /// Entries by sequence number, at most [`INBOX_LEN_MAX`].
    entries: BTreeMap<u64, InboxEntry>,
    /// Each entry's sequence number by notification.
    seqs: BTreeMap<NotificationId, u64>,
}

impl RecipientInbox {
    fn unread(&self) -> u64 {
        self.entries.values().filter(|e| is_unread(e)).count() as u64
    }

    fn entry_mut(&mut self, id: &NotificationId) -> Option<&mut InboxEntry> {
        let seq = self.seqs.get(id)?;
        self.entries.get_mut(seq)
    }
}

fn is_unread(entry: &InboxEntry) -> bool {
    entry.read_at_ms.is_none() && entry.archived_at_ms.is_none()
}

fn shows(status: InboxStatus, entry: &InboxEntry) -> bool {
    match status {
        InboxStatus::All => entry.archived_at_ms.is_none(),
        InboxStatus::Unread => is_unread(entry),
        InboxStatus::Archived => entry.archived_at_ms.is_some(),
    }
}

/// Every inbox, and the feed's subscribers.
#[derive(Debug, Default)]
pub(super) struct Inboxes {
    /// Inboxes by tenant and recipient.
    boxes: Mutex<BTreeMap<(TenantId, RecipientId), RecipientInbox>>,
    /// The feed's subscribers.
    feed: Feed<InboxEvent>,
}

impl Inboxes {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<(TenantId, RecipientId), RecipientInbox>> {
        // Nothing panics while holding the lock, so a poisoned lock still holds consistent data.
        self.boxes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn change(
        &self,
        tenant: &TenantId,
        recipient: &RecipientId,
        id: &NotificationId,
        apply: impl FnOnce(&mut InboxEntry),
    ) -> Marked {
        let mut boxes = self.lock();
        let Some(inbox) = boxes.get_mut(&(tenant.clone(), recipient.clone())) else {
            return Marked::NotFound;
        };
        let Some(entry) = inbox.entry_mut(id) else { return Marked::NotFound };
        apply(entry);
        Marked::Done { unread: inbox.unread() }
    }
}

/// The entry as listed: `item.read` follows the read time.
fn view(entry: &InboxEntry) -> InboxEntry {
    let mut entry = entry.clone();
    entry.item.read = entry.read_at_ms.is_some();
    entry
}

impl Inbox for MemoryStore {
    fn inbox_append(
        &self,
        tenant: &TenantId,
        recipient: &RecipientId,
        item: &InboxItem,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let mut boxes = self.inbox.lock();
        let inbox = boxes.entry((tenant.clone(), recipient.clone())).or_default();
        if !inbox.seqs.contains_key(&item.notification_id) {
            inbox.last_seq += 1;
            let seq = inbox.last_seq;
            let mut item = item.clone();
            item.read = false;
            let entry = InboxEntry { seq, item, read_at_ms: None, archived_at_ms: None };
            inbox.seqs.insert(entry.item.notification_id.clone(), seq);
            inbox.entries.insert(seq, entry.clone());
            while inbox.entries.len() > INBOX_LEN_MAX {
                if let Some((_, old)) = inbox.entries.pop_first() {
                    inbox.seqs.remove(&old.item.notification_id);
                }
            }
            let unread = inbox.unread();
            // Published under the inbox lock (the feeds' lock is only ever taken inside it), so
            // subscribers see each recipient's entries in sequence order, as Redis publishes them
            // from the append script.
            self.inbox.feed.publish(InboxEvent {
                tenant: tenant.clone(),
                recipient: recipient.clone(),
                entry,
                unread,
            });
        }
        ready(Ok(()))
    }

    fn inbox_list(
        &self,
        tenant: &TenantId,
        recipient: &RecipientId,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<InboxItem>, StoreError>> + Send {
        let boxes = self.inbox.lock();
        let items = boxes
            .get(&(tenant.clone(), recipient.clone()))
            .map(|inbox| {
                let newest = inbox.entries.values().rev();
                newest.take(limit.min(INBOX_LEN_MAX)).map(|e| view(e).item).collect()
            })
            .unwrap_or_default();
        ready(Ok(items))
    }
}

impl InboxState for MemoryStore {
    fn inbox_page(
        &self,
        tenant: &TenantId,
        recipient: &RecipientId,
        status: InboxStatus,
        before: Option<u64>,
        limit: usize,
    ) -> impl Future<Output = Result<InboxPage, StoreError>> + Send {
        let limit = limit.min(INBOX_PAGE_MAX);
        let boxes = self.inbox.lock();
        let mut page = InboxPage { entries: Vec::new(), next: None };
        if let Some(inbox) = boxes.get(&(tenant.clone(), recipient.clone()))
            && limit > 0
        {
            let older = inbox.entries.range(..before.unwrap_or(u64::MAX)).rev();
            let mut shown = older.map(|(_, e)| e).filter(|e| shows(status, e));
            page.entries = shown.by_ref().take(limit).map(view).collect();
            if shown.next().is_some() {
                page.next = page.entries.last().map(|e| e.seq);
            }
        }
        ready(Ok(page))
    }

    fn inbox_since(
        &self,
        tenant: &TenantId,
        recipient: &RecipientId,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<InboxEntry>, StoreError>> + Send {
        let boxes = self.inbox.lock();
        let entries = boxes
            .get(&(tenant.clone(), recipient.clone()))
            .map(|inbox| {
                let newer = inbox.entries.range(after.saturating_add(1)..).map(|(_, e)| e);
                let shown = newer.filter(|e| shows(InboxStatus::All, e));
                shown.take(limit.min(INBOX_PAGE_MAX)).map(view).collect()
            })
            .unwrap_or_default();
        ready(Ok(entries))
    }

    fn inbox_counts(
        &self,
        tenant: &TenantId,
        recipient: &RecipientId,
    ) -> impl Future<Output = Result<InboxCounts, StoreError>> + Send {
        let boxes = self.inbox.lock();
        let counts = boxes
            .get(&(tenant.clone(), recipient.clone()))
            .map(|inbox| InboxCounts { unread: inbox.unread(), last_seq: inbox.last_seq })
            .unwrap_or_default();
        ready(Ok(counts))
    }

    fn inbox_mark_read(
        &self,
        tenant: &TenantId,
        recipient: &RecipientId,
        id: &NotificationId,
        now_ms: u64,
    ) -> impl Future<Output = Result<Marked, StoreError>> + Send {
        let marked = self.inbox.change(tenant, recipient, id, |entry| {
            entry.read_at_ms.get_or_insert(now_ms);
        });
        ready(Ok(marked))
    }

    fn inbox_mark_all_read(
        &self,
        tenant: &TenantId,
        recipient: &RecipientId,
        now_ms: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let mut boxes = self.inbox.lock();
        let mut marked = 0;
        if let Some(inbox) = boxes.get_mut(&(tenant.clone(), recipient.clone())) {
            for entry in inbox.entries.values_mut().filter(|e| is_unread(e)) {
                entry.read_at_ms = Some(now_ms);
                marked += 1;
            }
        }
        ready(Ok(marked))
    }

    fn inbox_archive(
        &self,
        tenant: &TenantId,
        recipient: &RecipientId,
        id: &NotificationId,
        now_ms: u64,
    ) -> impl Future<Output = Result<Marked, StoreError>> + Send {
        let marked = self.inbox.change(tenant, recipient, id, |entry| {
            entry.archived_at_ms.get_or_insert(now_ms);
        });
        ready(Ok(marked))
    }

    fn inbox_unarchive(
        &self,
        tenant: &TenantId,
        recipient: &RecipientId,
        id: &NotificationId,
    ) -> impl Future<Output = Result<Marked, StoreError>> + Send {
        let marked = self.inbox.change(tenant, recipient, id, |entry| entry.archived_at_ms = None);
        ready(Ok(marked))
    }
}

impl InboxFeed for MemoryStore {
    fn inbox_feed(
        &self,
    ) -> impl Future<Output = Result<BoxStream<'static, InboxEvent>, StoreError>> + Send {
        ready(Ok(self.inbox.feed.subscribe()))
    }
}
