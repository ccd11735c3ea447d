//! The in-app inbox's read state and live feed, as ports beside [`Inbox`](crate::ports::Inbox).
//!
//! Every entry of a recipient's inbox gets a sequence number when it is appended: increasing per
//! tenant and recipient, never reused (trimming the oldest entry does not lower it). The sequence
//! is the listing order (newest first), the paging cursor and the live stream's event id, so a
//! client that reconnects with the last id it saw misses nothing.
//!
//! An entry is *unread* until it is marked read, and *archived* once archived; archived entries
//! leave the default view and never count as unread. Every operation is one atomic step per tenant
//! and recipient (one Lua script on Redis), idempotent, and the unread count is exact: it is kept
//! beside the entries in the same atomic steps, never recomputed.
//!
//! [`InboxFeed`] is the stream of new entries as the stores announce them (Redis: PUBLISH from the
//! append script; memory: a bounded channel per subscriber). The API process opens it once and
//! fans it out to its open streams.

use std::future::Future;

use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use steps::model::{NotificationId, RecipientId, TenantId};

use crate::ports::{Inbox, InboxItem, StoreError};

/// The largest page an inbox listing returns.
pub const INBOX_PAGE_MAX: usize = 100;

/// Which entries a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InboxStatus {
    /// Entries not archived (read or not): the inbox as a recipient sees it.
    All,
    /// Entries neither read nor archived.
    Unread,
    /// Archived entries.
    Archived,
}

impl InboxStatus {
    /// Parses the query parameter (`all`, `unread`, `archived`).
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "all" => Some(Self::All),
            "unread" => Some(Self::Unread),
            "archived" => Some(Self::Archived),
            _ => None,
        }
    }
}

/// A stored inbox entry with its read state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxEntry {
    /// Its place in the recipient's inbox: increasing, never reused.
    pub seq: u64,
    /// The content, as appended; `item.read` says whether `read_at_ms` is set.
    pub item: InboxItem,
    /// When it was first marked read, ms since the Unix epoch.
    pub read_at_ms: Option<u64>,
    /// When it was archived, ms since the Unix epoch.
    pub archived_at_ms: Option<u64>,
}

/// One page of a listing, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxPage {
    /// The entries.
    pub entries: Vec<InboxEntry>,
    /// Where the next page starts (pass as `before`), when there are more.
    pub next: Option<u64>,
}

/// A recipient's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InboxCounts {
    /// Entries neither read nor archived.
    pub unread: u64,
    /// The newest entry's sequence number (0 before the first append).
    pub last_seq: u64,
}

/// What a change to one entry found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marked {
    /// The entry is in the asked state now (it may have been already); the unread count after.
    Done {
        /// Unread entries after the change.
        unread: u64,
    },
    /// The recipient has no such entry (never appended, or trimmed).
    NotFound,
}

/// A new entry, as the feed announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxEvent {
    /// The tenant.
    pub tenant: TenantId,
    /// The recipient.
    pub recipient: RecipientId,
    /// The entry (unread, not archived).
    pub entry: InboxEntry,
    /// The recipient's unread count right after the append.
    pub unread: u64,
}

/// The inbox's read state. Both stores implement it and pass the same conformance checks; every
/// method is one atomic step for one tenant and recipient.
pub trait InboxState: Inbox {
    /// A page of entries in `status`, newest first, strictly older than `before` when given, at
    /// most `limit` (capped at [`INBOX_PAGE_MAX`]).
    fn inbox_page(
        &self,
        tenant: &TenantId,
        recipient: &RecipientId,
        status: InboxStatus,
        before: Option<u64>,
        limit: usize,
    ) -> impl Future<Output = Result<InboxPage, StoreError>> + Send;

    /// Entries not archived that are newer than `after`, oldest first, at most `limit` (capped at
    /// [`INBOX_PAGE_MAX`]): what a stream resumed after `after` missed.
    fn inbox_since(
        &self,
        tenant: &TenantId,
        recipient: &RecipientId,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<InboxEntry>, StoreError>> + Send;

    /// The unread count and the newest sequence number.
    fn inbox_counts(
        &self,
        tenant: &TenantId,
        recipient: &RecipientId,
    ) -> impl Future<Output = Result<InboxCounts, StoreError>> + Send;

    /// Marks one entry read at `now_ms` (an entry read before keeps its first time).
    fn inbox_mark_read(
        &self,
        tenant: &TenantId,
        recipient: &RecipientId,
        id: &NotificationId,
        now_ms: u64,
    ) -> impl Future<Output = Result<Marked, StoreError>> + Send;

    /// Marks every unread entry read at `now_ms`, returning how many were marked. An entry
    /// appended concurrently is either marked or stays unread and counted: never lost from the
    /// count.
    fn inbox_mark_all_read(
        &self,
        tenant: &TenantId,
        recipient: &RecipientId,
        now_ms: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Archives one entry at `now_ms` (an archived entry keeps its first time); it no longer
    /// counts as unread.
    fn inbox_archive(
        &self,
        tenant: &TenantId,
        recipient: &RecipientId,
        id: &NotificationId,
        now_ms: u64,
    ) -> impl Future<Output = Result<Marked, StoreError>> + Send;

    /// Takes an entry out of the archive; unread again if it was never read.
    fn inbox_unarchive(
        &self,
        tenant: &TenantId,
        recipient: &RecipientId,
        id: &NotificationId,
    ) -> impl Future<Output = Result<Marked, StoreError>> + Send;
}

/// The feed of new inbox entries, for every tenant. Each call opens a new subscription (Redis: a
/// connection of its own); an API process opens one and fans it out. The stream ends when the
/// subscription breaks or falls behind: the subscriber then tells its clients to resume from
/// their last sequence number, so nothing is silently lost.
pub trait InboxFeed: Send + Sync + 'static {
    /// Subscribes; events appended before the returned future resolves are not delivered.
    fn inbox_feed(
        &self,
    ) -> impl Future<Output = Result<BoxStream<'static, InboxEvent>, StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse() {
        assert_eq!(InboxStatus::parse("all"), Some(InboxStatus::All));
        assert_eq!(InboxStatus::parse("unread"), Some(InboxStatus::Unread));
        assert_eq!(InboxStatus::parse("archived"), Some(InboxStatus::Archived));
        assert_eq!(InboxStatus::parse("read"), None);
    }
}
