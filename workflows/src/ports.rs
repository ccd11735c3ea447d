//! The ports: what the lifecycle needs from the outside world, as traits. The shell implements them
//! (`storage` for [`Store`], [`Inbox`] and [`Directory`], `providers` for [`Provider`], the binary
//! for [`Clock`]); the simulator implements them again with fakes. The runner only ever sees these.

use std::future::Future;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use steps::model::{
    Attempt, Category, Channel, NotificationId, ProviderName, Recipient, RecipientId, TenantId,
};
use steps::outcome::SendOutcome;
use steps::preferences::Preferences;
use steps::rate::{RateCheck, RateLimit, SendRate, SendSlot};
use steps::recipient::{Contact, Device, DeviceId, RecipientEntry};
use steps::render::Content;

use crate::dlq::{DlqFilter, DlqPage};
use crate::machine::StateKind;
use crate::record::{Commit, CommitOutcome, Created, HistoryEntry, Idempotency, Record};

/// A store failure. Business outcomes are never errors; these are infrastructure problems, and the
/// caller retries the whole wake-up later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or did not answer in time.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored value could not be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// The key of a rate window: one recipient on one channel, within a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RateKey {
    /// The tenant.
    pub tenant: TenantId,
    /// The recipient.
    pub recipient: RecipientId,
    /// The channel.
    pub channel: Channel,
}

/// A listing query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Only records in this state.
    pub state: Option<StateKind>,
    /// At most this many, most recently updated first.
    pub limit: usize,
}

/// The longest history kept per notification; older entries are trimmed. Large enough for every
/// transition of a notification that used all its retries on two channels.
pub const HISTORY_LEN_MAX: usize = 200;
/// The largest page any listing returns.
pub const LIST_LIMIT_MAX: usize = 1_000;

/// The durable store of notification records.
///
/// Every method is one atomic operation. Implementations: Redis (production) and in-memory
/// (simulator and dev mode), held to one conformance suite.
pub trait Store: Send + Sync + 'static {
    /// Writes a new record (version 1) with its first history entry, indexes it and enqueues its
    /// first wake-up, all at once. With `idempotency`, a key used before returns the earlier
    /// notification instead.
    fn create(
        &self,
        record: &Record,
        first: &HistoryEntry,
        idempotency: Option<&Idempotency>,
    ) -> impl Future<Output = Result<Created, StoreError>> + Send;

    /// Reads a record.
    fn load(
        &self,
        tenant: &TenantId,
        id: &NotificationId,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send;

    /// Compare-and-set: applies `commit` only if the record is at `commit.expected_version`,
    /// together with its history entries, index updates and the next wake-up.
    fn commit(
        &self,
        commit: &Commit,
    ) -> impl Future<Output = Result<CommitOutcome, StoreError>> + Send;

    /// A notification's history, oldest first (at most [`HISTORY_LEN_MAX`] entries).
    fn history(
        &self,
        tenant: &TenantId,
        id: &NotificationId,
    ) -> impl Future<Output = Result<Vec<HistoryEntry>, StoreError>> + Send;

    /// Records of a tenant, most recently updated first.
    fn list(
        &self,
        tenant: &TenantId,
        query: &ListQuery,
    ) -> impl Future<Output = Result<Vec<Record>, StoreError>> + Send;

    /// Dead-lettered records of a tenant that `filter` selects at `now_ms`
    /// ([`DlqFilter::matches`]), most recently dead-lettered first: at most
    /// `filter.limit_capped()`, found among the newest [`DLQ_SCAN_MAX`](crate::dlq::DLQ_SCAN_MAX)
    /// entries of the DLQ inside the filter's age window. With `filter.id`, only that record is
    /// looked at.
    fn dead_letters(
        &self,
        tenant: &TenantId,
        filter: &DlqFilter,
        now_ms: u64,
    ) -> impl Future<Output = Result<DlqPage, StoreError>> + Send;

    /// Deletes a record if it is still at `expected_version` (compare-and-set): the record, its
    /// history, its index entries, its DLQ entry and the idempotency key it was created with,
    /// if that key still names it. Wake-ups already queued for it find nothing and do nothing.
    fn purge(
        &self,
        tenant: &TenantId,
        id: &NotificationId,
        expected_version: u64,
    ) -> impl Future<Output = Result<Purged, StoreError>> + Send;

    /// Takes a slot in a sliding rate window, atomically (see `steps::rate::SlidingWindow`).
    fn rate_acquire(
        &self,
        key: &RateKey,
        limit: &RateLimit,
        now_ms: u64,
    ) -> impl Future<Output = Result<RateCheck, StoreError>> + Send;

    /// Reserves the next send slot of a provider's send rate, atomically across workers (see
    /// `steps::rate::Pacer::reserve`): now, at a reserved later time, or too late to wait for.
    fn send_slot(
        &self,
        provider: &ProviderName,
        rate: &SendRate,
        now_ms: u64,
        wait_ms_max: u64,
    ) -> impl Future<Output = Result<SendSlot, StoreError>> + Send;

    /// Registers an API key: `key_id` is the key's public part, `key` holds its tenant and the
    /// SHA-256 of its secret part (the secret itself is never stored).
    fn put_api_key(
        &self,
        key_id: &str,
        key: &ApiKey,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The API key registered under `key_id`, if any.
    fn api_key(
        &self,
        key_id: &str,
    ) -> impl Future<Output = Result<Option<ApiKey>, StoreError>> + Send;
}

/// What a purge came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purged {
    /// The record and everything about it is gone.
    Done,
    /// The record moved on since it was read; nothing was deleted.
    Conflict {
        /// The version found.
        current: u64,
    },
    /// There is no such record.
    NotFound,
}

/// A stored API key: the tenant it names and the SHA-256 (hex) of its secret part. The caller
/// compares the hash of a presented secret with `secret_sha256_hex` in constant time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// The tenant the key acts for.
    pub tenant: TenantId,
    /// SHA-256 of the secret part, lowercase hex.
    pub secret_sha256_hex: String,
}

/// An in-app inbox entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxItem {
    /// The notification it came from.
    pub notification_id: NotificationId,
    /// The title.
    pub title: String,
    /// The body.
    pub body: String,
    /// The category.
    pub category: Category,
    /// When it was stored, ms since the Unix epoch.
    pub at_ms: u64,
    /// Whether the recipient has read it.
    pub read: bool,
}

/// The longest in-app inbox kept per recipient; older entries are trimmed.
pub const INBOX_LEN_MAX: usize = 500;

/// The in-app inbox: the storage of the in-app channel.
pub trait Inbox: Send + Sync + 'static {
    /// Stores an entry, idempotently per notification (a second append of the same notification
    /// changes nothing).
    fn inbox_append(
        &self,
        tenant: &TenantId,
        recipient: &RecipientId,
        item: &InboxItem,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A recipient's entries, newest first.
    fn inbox_list(
        &self,
        tenant: &TenantId,
        recipient: &RecipientId,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<InboxItem>, StoreError>> + Send;
}

/// The time, in ms since the Unix epoch. Production reads the system clock; the simulator hands
/// out virtual time.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now_ms(&self) -> u64;
}

/// One message for a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// The tenant.
    pub tenant: TenantId,
    /// The notification (passed to providers that carry custom ids, so receipts map back).
    pub notification_id: NotificationId,
    /// The attempt.
    pub attempt: Attempt,
    /// `{id}:{channel}:{provider}`, the same for every attempt on this provider, for providers
    /// with idempotency keys: a re-send after an unknown outcome is then recognised as one.
    pub idempotency_key: String,
    /// The recipient and their addresses.
    pub recipient: Recipient,
    /// The category.
    pub category: Category,
    /// The rendered content.
    pub content: Content,
    /// The recipient's push devices, as the directory holds them when the send is claimed (a
    /// removed device is not sent to). Empty for other channels' providers to ignore.
    pub devices: Vec<Device>,
}

/// A provider of one channel. `send` never panics and never returns an error type: every failure
/// is classified into a [`SendOutcome::Failed`] with its `ErrorClass`.
pub trait Provider: Send + Sync + std::fmt::Debug + 'static {
    /// The configured name.
    fn name(&self) -> &ProviderName;
    /// The channel it serves.
    fn channel(&self) -> Channel;
    /// Sends one message.
    fn send<'a>(&'a self, message: &'a Outbound) -> BoxFuture<'a, SendOutcome>;
}

/// The most recipients one page of [`Directory::recipients`] returns.
pub const RECIPIENT_PAGE_MAX: usize = 1_000;

/// One page of a tenant's recipients, in id order (bytewise).
#[derive(Debug, Clone, PartialEq)]
pub struct RecipientPage {
    /// The entries, in id order.
    pub entries: Vec<RecipientEntry>,
    /// The cursor of the next page (the last id of this one), `None` when this is the last.
    pub next: Option<RecipientId>,
}

/// What registering a push device came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceAdded {
    /// Registered; the entry is now at `revision`.
    Added {
        /// The entry's new revision.
        revision: u64,
    },
    /// The same token on the same platform was registered already; nothing changed.
    Exists {
        /// The entry's revision.
        revision: u64,
    },
    /// The recipient has [`DEVICES_MAX`](steps::recipient::DEVICES_MAX) devices already;
    /// nothing changed.
    Full,
    /// No profile is stored for the recipient; nothing changed.
    NoProfile,
}

/// The recipients directory: per tenant and recipient id, a profile (addresses, push devices,
/// locale, time zone) and preferences, with a revision that grows with every write.
///
/// Every method is one atomic operation, and a read sees every write that completed before it
/// started, from any process: the lifecycle reads the directory for each decision (the filter,
/// and again after each send's claim), so an opt-out is honoured by the next decision after it is
/// written. Implementations: Redis and in-memory, held to the conformance suite.
pub trait Directory: Send + Sync + 'static {
    /// The recipient's entry, `None` when nothing is stored for them.
    fn recipient(
        &self,
        tenant: &TenantId,
        id: &RecipientId,
    ) -> impl Future<Output = Result<Option<RecipientEntry>, StoreError>> + Send;

    /// Sets the recipient's contact data (creating the profile), keeping their devices and
    /// preferences. Returns the new revision and whether the profile is new.
    fn put_contact(
        &self,
        tenant: &TenantId,
        id: &RecipientId,
        contact: &Contact,
        now_ms: u64,
    ) -> impl Future<Output = Result<(u64, bool), StoreError>> + Send;

    /// Replaces the recipient's preferences (with or without a profile). Returns the new revision.
    fn put_preferences(
        &self,
        tenant: &TenantId,
        id: &RecipientId,
        preferences: &Preferences,
        now_ms: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Registers a push device on the recipient's profile, at most
    /// [`DEVICES_MAX`](steps::recipient::DEVICES_MAX).
    fn add_device(
        &self,
        tenant: &TenantId,
        id: &RecipientId,
        device: &Device,
        now_ms: u64,
    ) -> impl Future<Output = Result<DeviceAdded, StoreError>> + Send;

    /// Removes a push device. Returns the new revision, `None` when there was no such device.
    fn remove_device(
        &self,
        tenant: &TenantId,
        id: &RecipientId,
        device: &DeviceId,
        now_ms: u64,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;

    /// A tenant's recipients with anything stored, in id order, from just after `after` (from the
    /// start when `None`), at most `limit` (capped at [`RECIPIENT_PAGE_MAX`]). Walking the pages
    /// visits every recipient stored before the walk began exactly once, whatever is written
    /// meanwhile.
    fn recipients(
        &self,
        tenant: &TenantId,
        after: Option<&RecipientId>,
        limit: usize,
    ) -> impl Future<Output = Result<RecipientPage, StoreError>> + Send;
}
