//! The live inbox streams' fan-out: one store feed per API process, many local streams.
//!
//! The feed ([`InboxFeed`]: one Redis pub/sub connection, or the in-memory store's channel) is
//! opened when the first stream subscribes and then kept open. One task reads it and offers each
//! event to the local streams of its tenant and recipient, each a bounded channel:
//!
//! - at most [`HubLimits::per_recipient_max`] streams per recipient (tabs, devices) and
//!   [`HubLimits::total_max`] in the process; a subscription beyond either is refused;
//! - a stream whose channel is full (its client reads slower than its inbox fills) is dropped,
//!   not buffered for: its response ends and the client reconnects with `Last-Event-ID`;
//! - when the feed breaks (Redis restarted, the subscriber fell behind), every stream is closed
//!   the same way, since pub/sub does not replay what was published while it was away; the task
//!   reopens the feed after [`HubLimits::retry`].
//!
//! Closing rather than buffering is safe because the store is the source of truth: a resumed
//! stream reads what it missed from the store before it goes live again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use steps::model::{RecipientId, TenantId};
use tokio::sync::{mpsc, watch};
use workflows::inbox::InboxEvent;
use workflows::ports::StoreError;

/// Opens the store's feed.
pub type FeedOpener = Arc<
    dyn Fn() -> BoxFuture<'static, Result<BoxStream<'static, InboxEvent>, StoreError>>
        + Send
        + Sync,
>;

/// The hub's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubLimits {
    /// Streams one recipient may hold open: enough for a few devices and tabs; more is a
    /// client opening streams in a loop.
    pub per_recipient_max: usize,
    /// Streams the process holds open: each is a socket and a small buffer.
    pub total_max: usize,
    /// Events a stream may have waiting before it is dropped as too slow. An inbox gets a few
    /// entries a minute; a client this far behind is stalled.
    pub buffer: usize,
    /// How long a new stream waits for the feed to be connected before it is refused (503).
    pub ready_wait: Duration,
    /// The pause before the feed is reopened after it broke.
    pub retry: Duration,
}

impl Default for HubLimits {
    fn default() -> Self {
        Self {
            per_recipient_max: 16,
            total_max: 10_000,
            buffer: 64,
            ready_wait: Duration::from_secs(5),
            retry: Duration::from_secs(1),
        }
    }
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The recipient has [`HubLimits::per_recipient_max`] streams open.
    #[error("this recipient has {0} streams open already")]
    Recipient(usize),
    /// The process has [`HubLimits::total_max`] streams open.
    #[error("this server has {0} streams open already")]
    Total(usize),
    /// The feed is not connected.
    #[error("the inbox feed is not connected")]
    Unavailable,
}

/// One local stream's sender.
#[derive(Debug)]
struct Local {
    /// Its id, for the subscription's guard to remove it by.
    id: u64,
    /// Where its events go.
    sender: mpsc::Sender<Arc<InboxEvent>>,
}

type Key = (TenantId, RecipientId);

/// The open streams.
#[derive(Debug, Default)]
struct Streams {
    /// By tenant and recipient.
    by_recipient: HashMap<Key, Vec<Local>>,
    /// How many in all.
    total: usize,
    /// The next stream id.
    next_id: u64,
    /// Whether the feed task runs.
    running: bool,
}

impl Streams {
    fn remove(&mut self, key: &Key, keep: impl Fn(&Local) -> bool) {
        if let Some(locals) = self.by_recipient.get_mut(key) {
            let before = locals.len();
            locals.retain(keep);
            self.total -= before - locals.len();
            if locals.is_empty() {
                self.by_recipient.remove(key);
            }
        }
    }
}

struct Shared {
    open: FeedOpener,
    limits: HubLimits,
    streams: Mutex<Streams>,
    /// Whether the feed is connected.
    ready: watch::Sender<bool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Streams> {
        // Nothing panics while holding the lock, so a poisoned lock still holds consistent data.
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fan_out(&self, event: InboxEvent) {
        let key = (event.tenant.clone(), event.recipient.clone());
        let event = Arc::new(event);
        let mut streams = self.lock();
        streams.remove(&key, |local| match local.sender.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    tenant = %key.0,
                    stream = local.id,
                    "Inbox stream dropped: its client is too slow."
                );
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }

    /// Closes every stream: their clients resume from the store.
    fn close_all(&self) {
        let mut streams = self.lock();
        streams.by_recipient.clear();
        streams.total = 0;
    }

    async fn run(self: Arc<Self>) {
        loop {
            match (self.open)().await {
                Ok(mut feed) => {
                    self.ready.send_replace(true);
                    tracing::info!("Inbox feed connected.");
                    while let Some(event) = feed.next().await {
                        self.fan_out(event);
                    }
                    tracing::warn!("Inbox feed ended; closing the open streams.");
                }
                Err(error) => tracing::warn!(%error, "Inbox feed could not be opened."),
            }
            self.ready.send_replace(false);
            self.close_all();
            tokio::time::sleep(self.limits.retry).await;
        }
    }
}

/// The fan-out. A cheap handle: clones share the streams.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let streams = self.shared.lock();
        f.debug_struct("Hub").field("streams", &streams.total).finish_non_exhaustive()
    }
}

/// A local stream: its events, and its place in the hub, given back when dropped.
#[derive(Debug)]
pub struct Subscription {
    /// New entries of the recipient, in sequence order; ends when the hub drops the stream.
    pub events: mpsc::Receiver<Arc<InboxEvent>>,
    /// Held for its `Drop`, which takes the stream out of the hub.
    _guard: Guard,
}

struct Guard {
    shared: Arc<Shared>,
    key: Key,
    id: u64,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").field("id", &self.id).finish_non_exhaustive()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let id = self.id;
        self.shared.lock().remove(&self.key, |local| local.id != id);
    }
}

impl Hub {
    /// A hub over the feed `open` opens; nothing is opened until the first subscription.
    pub fn new(open: FeedOpener, limits: HubLimits) -> Self {
        let (ready, _) = watch::channel(false);
        Self { shared: Arc::new(Shared { open, limits, streams: Mutex::default(), ready }) }
    }

    /// How many streams are open.
    pub fn open_streams(&self) -> usize {
        self.shared.lock().total
    }

    /// Opens a stream of the recipient's new entries, once the feed is connected (so nothing
    /// stored after this returns is missed while the stream lives).
    pub async fn subscribe(
        &self,
        tenant: &TenantId,
        recipient: &RecipientId,
    ) -> Result<Subscription, Refused> {
        let limits = self.shared.limits;
        let key = (tenant.clone(), recipient.clone());
        let (sender, events) = mpsc::channel(limits.buffer);
        let guard = {
            let mut streams = self.shared.lock();
            if streams.total >= limits.total_max {
                return Err(Refused::Total(streams.total));
            }
            let mine = streams.by_recipient.get(&key).map_or(0, Vec::len);
            if mine >= limits.per_recipient_max {
                return Err(Refused::Recipient(mine));
            }
            let id = streams.next_id;
            streams.next_id += 1;
            streams.total += 1;
            streams.by_recipient.entry(key.clone()).or_default().push(Local { id, sender });
            if !streams.running {
                streams.running = true;
                tokio::spawn(self.shared.clone().run());
            }
            Guard { shared: self.shared.clone(), key, id }
        };
        let mut ready = self.shared.ready.subscribe();
        match tokio::time::timeout(limits.ready_wait, ready.wait_for(|ready| *ready)).await {
            Ok(Ok(_)) => Ok(Subscription { events, _guard: guard }),
            _ => Err(Refused::Unavailable),
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;
    use steps::model::Category;
    use storage::memory::MemoryStore;
    use workflows::inbox::InboxFeed;
    use workflows::ports::{Inbox, InboxItem};

    use super::*;

    fn hub(store: &MemoryStore, limits: HubLimits) -> Hub {
        let store = store.clone();
        Hub::new(
            Arc::new(move || {
                let store = store.clone();
                async move { store.inbox_feed().await }.boxed()
            }),
            limits,
        )
    }

    fn ids() -> (TenantId, RecipientId, RecipientId) {
        let t = TenantId::new("acme").unwrap();
        (t, RecipientId::new("bob").unwrap(), RecipientId::new("carol").unwrap())
    }

    async fn append(store: &MemoryStore, recipient: &RecipientId, n: u32) {
        let tenant = TenantId::new("acme").unwrap();
        let item = InboxItem {
            notification_id: storage::keys::new_notification_id(
                &tenant,
                None,
                &format!("01HZZZZZZZZZZZZZZZZZ{n:06}"),
            ),
            title: "t".into(),
            body: "b".into(),
            category: Category::new("news").unwrap(),
            at_ms: 1,
            read: false,
            action: None,
        };
        store.inbox_append(&tenant, recipient, &item).await.unwrap();
    }

    #[tokio::test]
    async fn events_reach_their_recipients_streams_only() {
        let store = MemoryStore::new();
        let hub = hub(&store, HubLimits::default());
        let (acme, bob, carol) = ids();
        let mut one = hub.subscribe(&acme, &bob).await.unwrap();
        let mut two = hub.subscribe(&acme, &bob).await.unwrap();
        let mut other = hub.subscribe(&acme, &carol).await.unwrap();
        append(&store, &bob, 1).await;
        for sub in [&mut one, &mut two] {
            let event = tokio::time::timeout(Duration::from_secs(1), sub.events.recv()).await;
            assert_eq!(event.unwrap().unwrap().entry.seq, 1);
        }
        let nothing = tokio::time::timeout(Duration::from_millis(50), other.events.recv()).await;
        assert!(nothing.is_err(), "carol's stream got bob's entry");
        assert_eq!(hub.open_streams(), 3);
        drop(one);
        assert_eq!(hub.open_streams(), 2, "a dropped stream gives its place back");
    }

    #[tokio::test]
    async fn streams_are_bounded_per_recipient_and_in_all() {
        let store = MemoryStore::new();
        let limits = HubLimits { per_recipient_max: 2, total_max: 3, ..HubLimits::default() };
        let hub = hub(&store, limits);
        let (acme, bob, carol) = ids();
        let _a = hub.subscribe(&acme, &bob).await.unwrap();
        let b = hub.subscribe(&acme, &bob).await.unwrap();
        assert_eq!(hub.subscribe(&acme, &bob).await.err(), Some(Refused::Recipient(2)));
        let _c = hub.subscribe(&acme, &carol).await.unwrap();
        assert_eq!(hub.subscribe(&acme, &carol).await.err(), Some(Refused::Total(3)));
        drop(b);
        assert!(hub.subscribe(&acme, &carol).await.is_ok());
    }

    #[tokio::test]
    async fn a_slow_stream_is_dropped_not_buffered() {
        let store = MemoryStore::new();
        let hub = hub(&store, HubLimits { buffer: 2, ..HubLimits::default() });
        let (acme, bob, _) = ids();
        let mut slow = hub.subscribe(&acme, &bob).await.unwrap();
        let mut fast = hub.subscribe(&acme, &bob).await.unwrap();
        for n in 1..=3 {
            append(&store, &bob, n).await;
            // The fast one reads each event as it comes.
            let event = tokio::time::timeout(Duration::from_secs(1), fast.events.recv()).await;
            assert_eq!(event.unwrap().unwrap().entry.seq, u64::from(n));
        }
        // The slow one got the two its buffer holds, then was closed.
        assert_eq!(slow.events.recv().await.unwrap().entry.seq, 1);
        assert_eq!(slow.events.recv().await.unwrap().entry.seq, 2);
        assert!(slow.events.recv().await.is_none(), "the slow stream ends");
        assert_eq!(hub.open_streams(), 1);
    }

    #[tokio::test]
    async fn a_broken_feed_closes_every_stream_and_is_reopened() {
        // A feed that ends at once, then works: the streams open meanwhile are closed.
        let store = MemoryStore::new();
        let opened = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let open: FeedOpener = {
            let (store, opened) = (store.clone(), opened.clone());
            Arc::new(move || {
                let n = opened.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let store = store.clone();
                async move {
                    if n == 0 {
                        // Connected, then broken after a moment.
                        let feed = store.inbox_feed().await?;
                        let ends = tokio::time::sleep(Duration::from_millis(100));
                        Ok(feed.take_until(ends).boxed())
                    } else {
                        store.inbox_feed().await
                    }
                }
                .boxed()
            })
        };
        let limits = HubLimits { retry: Duration::from_millis(10), ..HubLimits::default() };
        let hub = Hub::new(open, limits);
        let (acme, bob, _) = ids();
        let mut first = hub.subscribe(&acme, &bob).await.unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(2), first.events.recv()).await;
        assert!(ended.unwrap().is_none(), "the stream closes with the feed");
        assert_eq!(hub.open_streams(), 0);
        let mut second = hub.subscribe(&acme, &bob).await.unwrap();
        append(&store, &bob, 1).await;
        let event = tokio::time::timeout(Duration::from_secs(1), second.events.recv()).await;
        assert_eq!(event.unwrap().unwrap().entry.seq, 1);
        assert!(opened.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    }
}
