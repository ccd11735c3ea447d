//! The ports: what the lifecycle needs from the outside world, as traits. The shell implements them
//! (`storage` for [`Store`], [`Inbox`] and [`Directory`], `providers` for [`Provider`], the binary
//! for [`Clock`]); the simulator implements them again with fakes. The runner only ever sees these.

use std::future::Future;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use steps::collapse::{Joined, Merged};
use steps::correlation::{CollapseKey, EventId};
use steps::limits::{Admission, Window};
use steps::locale::Locale;
use steps::model::{
    Attempt, Category, Channel, NotificationId, ProviderName, Recipient, RecipientId, TemplateId,
    TenantId,
};
use steps::outcome::{ErrorClass, SendOutcome};
use steps::preferences::Preferences;
use steps::rate::{SendRate, SendSlot};
use steps::recipient::{Contact, Device, DeviceId, RecipientEntry};
use steps::render::{Content, TemplateContent};

use crate::campaign::{
    Advance, Appended, Campaign, CampaignCreated, CampaignId, Counts, Moved, OpenPage, PageClaim,
    PageDone,
};
use crate::dlq::{DlqFilter, DlqPage};
pub use crate::listing::{ListCursor, ListPage, ListQuery};
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

/// The longest history kept per notification; older entries are trimmed. Large enough for every
/// transition of a notification that used all its retries on two channels.
pub const HISTORY_LEN_MAX: usize = 200;
/// The largest page any listing returns.
pub const LIST_LIMIT_MAX: usize = 1_000;

/// The durable store of notification records.
///
/// Every method is one atomic operation. Implementations: Redis (production) and in-memory
/// (simulator and dev mode), held to one conformance suite. A store also keeps the recipients'
/// [`LimitWindows`], the keys of [`Dedup`] and the groups of [`Collapse`].
pub trait Store: LimitWindows + Dedup + Collapse + Send + Sync + 'static {
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

    /// Records of a tenant that `query` selects ([`ListQuery::matches`]), newest first by
    /// `(updated_at_ms, id)`: the tenant's index (every record, or `query.state`'s) is walked from
    /// the query's cursor through a [`ListPager`](crate::listing::ListPager), so a page holds at
    /// most `query.limit_capped()` records found among at most
    /// [`LIST_SCAN_MAX`](crate::listing::LIST_SCAN_MAX) entries, and names where the next starts.
    fn list(
        &self,
        tenant: &TenantId,
        query: &ListQuery,
    ) -> impl Future<Output = Result<ListPage, StoreError>> + Send;

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
    /// Whether the recipient has read it, as listed (see `crate::inbox`); a new entry is unread
    /// whatever this says when it is appended.
    pub read: bool,
    /// The URL or deep link the entry opens (the template's `in_app.action`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
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

/// Sees every transition the runner commits, after it is committed: the shell's metrics. It is
/// told, never asked, so it cannot change what the lifecycle does; an implementation must be
/// cheap and must not block (counters in memory, not I/O).
pub trait Observer: Send + Sync + std::fmt::Debug + 'static {
    /// A notification was created (`entry` is its first history entry).
    fn created(&self, record: &Record, entry: &HistoryEntry);
    /// A duplicate submission was answered with an earlier notification (event dedup).
    fn deduplicated(&self, record: &Record);
    /// `entries` were committed for `record` (as it was before the commit: its request and
    /// acceptance time are what matter).
    fn committed(&self, record: &Record, entries: &[HistoryEntry]);
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

    /// Sends one message with the lifecycle's [`SendHints`], and says what became of each push
    /// device it was sent to. The runner calls this; it removes the devices found dead from the
    /// recipient and records every device's result in the history (by device id).
    ///
    /// The default sends with [`send`](Self::send) and reports no devices: only push providers,
    /// which send once per device, override it.
    fn deliver<'a>(
        &'a self,
        message: &'a Outbound,
        hints: &'a SendHints,
    ) -> BoxFuture<'a, Delivery> {
        let _ = hints;
        Box::pin(async move { Delivery { outcome: self.send(message).await, devices: Vec::new() } })
    }
}

/// What the lifecycle knows about a send beyond the message itself, for providers that can use it
/// (push: collapsing, priority, expiry).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendHints {
    /// The notification's collapse key, when it has one: a push provider passes it on so the
    /// device shows only the newest message of the group.
    pub collapse_key: Option<String>,
    /// Whether the category is critical (one-time codes, security alerts): sent at the highest
    /// priority.
    pub critical: bool,
    /// When the lifecycle stops trying (the retry budget's end), ms since the Unix epoch: a push
    /// service need not store the message for the device beyond it.
    pub expires_at_ms: Option<u64>,
}

/// What became of one push device in a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceOutcome {
    /// The push service took the message for the device.
    Accepted,
    /// The token is dead (uninstalled app, expired or malformed token): remove the device.
    Dead,
    /// The call for this device failed with this class.
    Failed(ErrorClass),
    /// Not tried: an earlier device's answer stopped the send (a configuration or rate-limit
    /// answer, which every device would get).
    Skipped,
}

/// One push device's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceResult {
    /// The device (never its token).
    pub device: DeviceId,
    /// What became of it.
    pub outcome: DeviceOutcome,
}

/// What one [`Provider::deliver`] came to: the outcome the lifecycle decides on, and the result
/// of each push device sent to (empty for other channels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The notification's outcome.
    pub outcome: SendOutcome,
    /// Each device's result, in the order sent.
    pub devices: Vec<DeviceResult>,
}

impl Delivery {
    /// The devices found dead, to remove from the recipient.
    pub fn dead(&self) -> impl Iterator<Item = &DeviceId> {
        self.devices.iter().filter(|d| d.outcome == DeviceOutcome::Dead).map(|d| &d.device)
    }

    /// One line for the history: each device's result by id, `None` without devices.
    pub fn summary(&self) -> Option<String> {
        if self.devices.is_empty() {
            return None;
        }
        let parts: Vec<String> = self
            .devices
            .iter()
            .map(|d| {
                let what = match d.outcome {
                    DeviceOutcome::Accepted => "accepted".to_owned(),
                    DeviceOutcome::Dead => "token invalid".to_owned(),
                    DeviceOutcome::Failed(class) => format!("failed ({})", class.name()),
                    DeviceOutcome::Skipped => "not tried".to_owned(),
                };
                format!("{} {what}", d.device)
            })
            .collect();
        Some(format!("push devices: {}", parts.join(", ")))
    }
}

/// Campaigns: their specs, segments and progress, the leases workers expand them under, and the
/// per-campaign counters the store keeps beside each campaign notification (see
/// [`crate::campaign`]). Every method is one atomic operation; both stores implement it and pass
/// the same conformance checks.
pub trait Campaigns: Send + Sync + 'static {
    /// Creates a campaign with the first recipients of its segment (none for a filter segment,
    /// whose members the expansion finds in the directory). A campaign created in
    /// [`Expanding`](crate::campaign::CampaignState::Expanding) is due for its first page at once. With
    /// `idempotency`, a key used before returns the earlier campaign instead.
    fn campaign_create(
        &self,
        campaign: &Campaign,
        recipients: &[RecipientId],
        idempotency: Option<&Idempotency>,
    ) -> impl Future<Output = Result<CampaignCreated, StoreError>> + Send;

    /// Appends recipients to a draft's segment (at most
    /// [`RECIPIENTS_MAX`](crate::campaign::RECIPIENTS_MAX) in all). With `idempotency`, a key
    /// used before for this campaign appends nothing and says what the earlier append left.
    fn campaign_append(
        &self,
        tenant: &TenantId,
        id: &CampaignId,
        recipients: &[RecipientId],
        idempotency: Option<&Idempotency>,
        now_ms: u64,
    ) -> impl Future<Output = Result<Appended, StoreError>> + Send;

    /// Starts a draft: `expanding`, its first page due at once. Starting a campaign that is
    /// expanding already changes nothing.
    fn campaign_start(
        &self,
        tenant: &TenantId,
        id: &CampaignId,
        now_ms: u64,
    ) -> impl Future<Output = Result<Moved, StoreError>> + Send;

    /// Cancels a campaign: a draft is `cancelled` at once; an expanding or expanded one is
    /// `cancelling`: no page is expanded any more, and its cancel sweep is due once no worker
    /// holds a page of it. Cancelling twice changes nothing.
    fn campaign_cancel(
        &self,
        tenant: &TenantId,
        id: &CampaignId,
        now_ms: u64,
    ) -> impl Future<Output = Result<Moved, StoreError>> + Send;

    /// Reads a campaign.
    fn campaign(
        &self,
        tenant: &TenantId,
        id: &CampaignId,
    ) -> impl Future<Output = Result<Option<Campaign>, StoreError>> + Send;

    /// A tenant's campaigns, newest first, after `after` (exclusive) when given: at most
    /// `limit` (at most [`campaign::LIST_LIMIT_MAX`](crate::campaign::LIST_LIMIT_MAX)).
    fn campaigns(
        &self,
        tenant: &TenantId,
        after: Option<&CampaignId>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Campaign>, StoreError>> + Send;

    /// A campaign's counters, summed over the shards its notifications live in.
    fn campaign_counts(
        &self,
        tenant: &TenantId,
        id: &CampaignId,
    ) -> impl Future<Output = Result<Counts, StoreError>> + Send;

    /// `len` recipients of a campaign's segment from position `from`, in segment order.
    fn campaign_recipients(
        &self,
        tenant: &TenantId,
        id: &CampaignId,
        from: u64,
        len: u64,
    ) -> impl Future<Output = Result<Vec<RecipientId>, StoreError>> + Send;

    /// Claims up to `max` due pages, at most one per campaign: each campaign with work
    /// ([`CampaignState::has_work`](crate::campaign::CampaignState::has_work)) whose next page is due at `now_ms` is leased until
    /// `now_ms + lease_ms` to the caller, and is not due again before the lease ends (so no two
    /// workers hold one campaign's page at once, and a dead worker's page comes back). Entries of
    /// campaigns without work are dropped.
    fn campaign_claim(
        &self,
        now_ms: u64,
        lease_ms: u64,
        max: usize,
    ) -> impl Future<Output = Result<Vec<PageClaim>, StoreError>> + Send;

    /// Records a claimed page (compare-and-set on the lease's token): the next position or
    /// cursor, the next page due at `done.next_at_ms`, or the campaign finished (`expanded`, or
    /// `cancelled` after its sweep). The lease ends either way.
    fn campaign_advance(
        &self,
        claim: &PageClaim,
        done: &PageDone,
    ) -> impl Future<Output = Result<Advance, StoreError>> + Send;

    /// The id of the notification a campaign creates for a recipient: derived from the tenant,
    /// the campaign and the recipient, so a page expanded again creates nothing twice.
    fn campaign_notification_id(
        &self,
        tenant: &TenantId,
        id: &CampaignId,
        recipient: &RecipientId,
    ) -> NotificationId;

    /// Creates a campaign's notification like [`Store::create`] (without an idempotency key: its
    /// id is [`campaign_notification_id`](Self::campaign_notification_id), and an existing id is
    /// `Created::Existing`), tagged with the campaign: the store counts it in the campaign's
    /// counters and moves it between them with every commit, and keeps it in the campaign's open
    /// set until it is terminal.
    fn campaign_create_notification(
        &self,
        record: &Record,
        first: &HistoryEntry,
        campaign: &CampaignId,
    ) -> impl Future<Output = Result<Created, StoreError>> + Send;

    /// A page of a campaign's open notifications (not terminal), from `cursor` (empty: the
    /// start), about `len` of them: what a cancel sweeps. Every notification open for the whole
    /// walk is returned at least once.
    fn campaign_open(
        &self,
        tenant: &TenantId,
        id: &CampaignId,
        cursor: &str,
        len: usize,
    ) -> impl Future<Output = Result<OpenPage, StoreError>> + Send;
}

/// Whose limit windows: one recipient of a tenant. Every window of a recipient lives together
/// (one hash slot on Redis), so all of them are taken in one atomic step.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecipientKey {
    /// The tenant.
    pub tenant: TenantId,
    /// The recipient.
    pub recipient: RecipientId,
}

/// The recipients' limits: the windows of the channels' rate limits and the categories' caps
/// (issue 5: no cap or window is ever exceeded, under concurrent workers).
///
/// Every method is one atomic operation, following the reference in `steps::limits`, and held
/// to the conformance suite on both stores.
pub trait LimitWindows: Send + Sync + 'static {
    /// Takes a slot for `member` in every window of `windows` (at most
    /// [`steps::limits::WINDOWS_MAX`]), all or nothing, at `now_ms`: see
    /// `steps::limits::admit`.
    fn acquire_windows(
        &self,
        key: &RecipientKey,
        member: &NotificationId,
        windows: &[Window],
        now_ms: u64,
    ) -> impl Future<Output = Result<Admission, StoreError>> + Send;

    /// How many admissions each of `windows` holds at `now_ms`, taking nothing: see
    /// `steps::limits::usage`.
    fn window_usage(
        &self,
        key: &RecipientKey,
        windows: &[Window],
        now_ms: u64,
    ) -> impl Future<Output = Result<Vec<u32>, StoreError>> + Send;
}

/// One notification an idempotent request came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredItem {
    /// The notification.
    pub id: NotificationId,
    /// Whether it was an earlier notification of the same event (nothing new was created).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deduplicated: bool,
}

/// What an idempotent request came to, kept with its key, so a retry with the same key and body
/// gets the same answer: one item for a submit, one per notification for a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    /// The notifications, in the request's order.
    pub items: Vec<StoredItem>,
}

/// What claiming an idempotency key came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// The caller holds the key (fresh, or taken over from a holder whose lease ran out): it
    /// does the work, then [`Dedup::finish_key`] (or [`Dedup::release_key`] if it gives up).
    Held,
    /// A request with the same key and body is done: its answer.
    Done {
        /// The stored answer.
        response: StoredResponse,
    },
    /// A request with the same key and body holds it until `until_ms`.
    InFlight {
        /// When its lease runs out, ms since the Unix epoch.
        until_ms: u64,
    },
    /// The key was used with another body.
    Reused {
        /// The notification it made, when known.
        id: Option<NotificationId>,
    },
}

/// How long a request may hold an idempotency key before another request with the same key and
/// body may take over (its holder is taken for dead): far above a batch's few hundred ms.
pub const CLAIM_LEASE_MS: u64 = 10_000;

/// An event for one recipient on one channel: what event-level dedup counts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventKey {
    /// The tenant.
    pub tenant: TenantId,
    /// The application's event id.
    pub event: EventId,
    /// The recipient.
    pub recipient: RecipientId,
    /// The channel.
    pub channel: Channel,
}

/// What creating a record once per event came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreatedOnce {
    /// A new record was written (and the event remembered with it).
    New,
    /// The event was seen within its window: nothing was written; `id` is the notification it
    /// made.
    Duplicate {
        /// The earlier notification.
        id: NotificationId,
    },
    /// A record with this id exists already (an id collision); nothing was written.
    IdTaken,
}

/// Idempotency keys whose work spans more than one atomic step, and event-level dedup.
///
/// A submit's idempotency key is checked in the script that creates the record when both live
/// in one hash slot. When they cannot (a batch of notifications in many slots, a notification
/// that must live in its event's slot), the key is *claimed* first: a pending entry with a lease
/// that a retry sees as in flight, then *finished* with the answer, which a retry gets back.
pub trait Dedup: Send + Sync + 'static {
    /// Claims `idempotency.key` of `tenant` for a request with `idempotency.fingerprint`, for
    /// `lease_ms` from `now_ms`. The key is kept 24 h from its first claim.
    fn claim_key(
        &self,
        tenant: &TenantId,
        idempotency: &Idempotency,
        now_ms: u64,
        lease_ms: u64,
    ) -> impl Future<Output = Result<Claimed, StoreError>> + Send;

    /// Stores the answer of a claimed key. A key already finished keeps its first answer.
    fn finish_key(
        &self,
        tenant: &TenantId,
        idempotency: &Idempotency,
        response: &StoredResponse,
        now_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Drops a pending claim with this fingerprint (its holder gave up), so a retry need not
    /// wait for the lease. A finished key is kept.
    fn release_key(
        &self,
        tenant: &TenantId,
        idempotency: &Idempotency,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Creates a record as [`Store::create`] does, unless `event` was seen within `window_ms`:
    /// the check, the record and the remembered event are one atomic step (the record lives in
    /// the event's hash slot).
    fn create_once(
        &self,
        record: &Record,
        first: &HistoryEntry,
        event: &EventKey,
        window_ms: u64,
    ) -> impl Future<Output = Result<CreatedOnce, StoreError>> + Send;
}

/// A collapse group's key: one recipient's notifications on one channel with one
/// `collapse_key`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CollapseGroup {
    /// The tenant.
    pub tenant: TenantId,
    /// The recipient.
    pub recipient: RecipientId,
    /// The channel.
    pub channel: Channel,
    /// The application's collapse key.
    pub key: CollapseKey,
}

/// Collapse groups ("3 new messages"): joining and closing follow the reference in
/// `steps::collapse` (`join`, `close`), each one atomic step; a survivor keeps what its group
/// merged with its record, so every later render (a retry, a replay) has it.
pub trait Collapse: Send + Sync + 'static {
    /// Joins `member` (with its template `data`) to the open group of `group`, or opens one
    /// that newcomers join for `window_ms`; see `steps::collapse::join`. Groups and
    /// memberships are kept `steps::collapse::COLLAPSE_KEEP_MS` past their window.
    fn collapse_join(
        &self,
        group: &CollapseGroup,
        member: &NotificationId,
        data: &serde_json::Map<String, serde_json::Value>,
        window_ms: u64,
        now_ms: u64,
    ) -> impl Future<Output = Result<Joined, StoreError>> + Send;

    /// Closes the group `survivor` opened and returns what it merged (`None`: it is gone); see
    /// `steps::collapse::close`.
    fn collapse_close(
        &self,
        group: &CollapseGroup,
        survivor: &NotificationId,
        now_ms: u64,
    ) -> impl Future<Output = Result<Option<Merged>, StoreError>> + Send;

    /// Keeps what a survivor's group merged with its record (the first kept stays; nothing is
    /// kept for a record that does not exist).
    fn keep_merged(
        &self,
        tenant: &TenantId,
        id: &NotificationId,
        merged: &Merged,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The survivor of the group `member` joined in `group` (a survivor is its own), while the
    /// membership is kept; `None` when it never joined. Reads only; see
    /// `steps::collapse::member_of`. The filter asks it before skipping a collapsing
    /// notification: one that joined a group before (a lost reply, then a retry) is collapsed,
    /// its data already in the group's one message.
    fn collapse_member(
        &self,
        group: &CollapseGroup,
        member: &NotificationId,
        now_ms: u64,
    ) -> impl Future<Output = Result<Option<NotificationId>, StoreError>> + Send;

    /// What a survivor's group merged, kept with its record.
    fn merged(
        &self,
        tenant: &TenantId,
        id: &NotificationId,
    ) -> impl Future<Output = Result<Option<Merged>, StoreError>> + Send;
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

// ---- The template registry ----------------------------------------------------------------------

/// A template version's summary, as its template lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionSummary {
    /// The version's number, from 1.
    pub version: u32,
    /// When it was created, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// Its default locale.
    pub default_locale: Locale,
    /// The locales it has parts for.
    pub locales: Vec<Locale>,
    /// The channels some locale of it is complete for.
    pub channels: Vec<Channel>,
}

impl VersionSummary {
    /// The summary of `content` as version `version`.
    pub fn of(version: u32, created_at_ms: u64, content: &TemplateContent) -> VersionSummary {
        VersionSummary {
            version,
            created_at_ms,
            default_locale: content.default_locale.clone(),
            locales: content.locales.keys().cloned().collect(),
            channels: content.channels(),
        }
    }
}

/// A stored template version. Immutable once written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVersion {
    /// Its number, time, locales and channels.
    pub summary: VersionSummary,
    /// Its parts.
    pub content: TemplateContent,
}

/// A registry template, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSummary {
    /// Its id.
    pub id: TemplateId,
    /// The version new notifications pin, if one is published.
    pub published: Option<u32>,
    /// Its newest version (also how many it has: versions count from 1, none is deleted).
    pub latest: u32,
    /// When it was created, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// When a version was last added or published, ms since the Unix epoch.
    pub updated_at_ms: u64,
}

/// A registry template with its versions' summaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateInfo {
    /// The template.
    pub summary: TemplateSummary,
    /// Its versions, oldest first.
    pub versions: Vec<VersionSummary>,
}

/// What a registry write came to. Refusals are outcomes, not errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateWrite {
    /// Written; the template as it is now (a new version is the last of its versions).
    Done(TemplateInfo),
    /// `template_create`: the tenant already has a template with this id.
    Exists,
    /// `template_add_version`, `template_publish`: the tenant has no template with this id.
    NotFound,
    /// `template_publish`: the template has no such version.
    NoSuchVersion,
    /// `template_create`: the tenant has `limit` templates already; `template_add_version`: the
    /// template has `limit` versions already.
    Full {
        /// The limit that was reached.
        limit: u32,
    },
}

/// A boxed future, for the object-safe [`TemplateStore`].
pub type StoreFuture<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

/// Each tenant's template registry: templates with immutable, numbered versions, one of which is
/// published.
///
/// Object-safe (boxed futures, like [`Provider`]) so the runner holds it beside its [`Store`]
/// without another type parameter, and the built-in-only runners of tests need none. Every write
/// is one atomic operation; both stores implement it and the conformance suite holds them to the
/// same behaviour. The content is checked (it compiles, its limits hold) by
/// [`crate::templates::Templates`] before it reaches the store.
pub trait TemplateStore: Send + Sync + 'static {
    /// Creates template `id` with `content` as version 1, published if `publish`, unless the
    /// tenant has one by that id ([`TemplateWrite::Exists`]) or has `templates_max` templates
    /// ([`TemplateWrite::Full`]).
    fn template_create<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a TemplateId,
        content: &'a TemplateContent,
        publish: bool,
        now_ms: u64,
        templates_max: u32,
    ) -> StoreFuture<'a, TemplateWrite>;

    /// Adds a draft version (the next number) to template `id`, unless it has `versions_max`.
    fn template_add_version<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a TemplateId,
        content: &'a TemplateContent,
        now_ms: u64,
        versions_max: u32,
    ) -> StoreFuture<'a, TemplateWrite>;

    /// Publishes an existing version: new notifications pin it from now on. Publishing the
    /// published version changes nothing.
    fn template_publish<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a TemplateId,
        version: u32,
        now_ms: u64,
    ) -> StoreFuture<'a, TemplateWrite>;

    /// The published version of template `id`: `None` when the tenant has no such template,
    /// `Some(None)` when it has one with no published version. One cheap read: every submission
    /// makes it.
    fn template_published<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a TemplateId,
    ) -> StoreFuture<'a, Option<Option<u32>>>;

    /// Template `id` with its versions' summaries.
    fn template_info<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a TemplateId,
    ) -> StoreFuture<'a, Option<TemplateInfo>>;

    /// One version of template `id`, with its content.
    fn template_version<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a TemplateId,
        version: u32,
    ) -> StoreFuture<'a, Option<StoredVersion>>;

    /// The tenant's templates in id order, starting after `after`, at most `limit` (capped at
    /// [`LIST_LIMIT_MAX`]).
    fn template_list<'a>(
        &'a self,
        tenant: &'a TenantId,
        after: Option<&'a TemplateId>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<TemplateSummary>>;
}
