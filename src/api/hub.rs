//! The live streams' fan-out: one store feed per API process, many local streams. The inbox's
//! streams (`GET /v1/recipients/{id}/inbox/stream`) and the transitions' (`GET /v1/events`) each
//! have a [`Hub`] over their store feed.
//!
//! The feed (one Redis pub/sub connection, or the in-memory store's channel) is opened when the
//! first stream subscribes and then kept open. One task reads it and offers each event to the
//! local streams of its key ([`Keyed`]: tenant and recipient for the inbox, tenant for the
//! transitions) that want it, each a bounded channel:
//!
//! - at most [`HubLimits::per_key_max`] streams per key and [`HubLimits::total_max`] in the
//!   process; a subscription beyond either is refused;
//! - a stream whose channel is full (its client reads slower than events come) is, by
//!   [`HubLimits::when_full`], either dropped ([`WhenFull::Close`]: its response ends and the
//!   client resumes from the store) or skips events and is told how many it missed, in order,
//!   before the next event that fits ([`WhenFull::Skip`]: a live view with nothing to resume);
//! - when the feed breaks (Redis restarted, the subscriber fell behind), every stream is closed,
//!   since pub/sub does not replay what was published while it was away; the task reopens the
//!   feed after [`HubLimits::retry`].
//!
//! Nothing here buffers without bound: the store is the source of truth.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use std::convert::Infallible;
use std::future::Future;

use axum::extract::Extension;
use axum::http::{HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use workflows::ports::StoreError;

/// An event of a feed, routed to the streams of its key.
pub trait Keyed: Send + Sync + 'static {
    /// What streams subscribe to.
    type Key: Clone + Eq + Hash + Send + Sync + 'static;
    /// The event's key.
    fn key(&self) -> Self::Key;
}

/// Opens the store's feed.
pub type FeedOpener<E> =
    Arc<dyn Fn() -> BoxFuture<'static, Result<BoxStream<'static, E>, StoreError>> + Send + Sync>;

/// What becomes of a stream whose buffer is full when an event comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// It is dropped: its response ends, and its client resumes from the store.
    Close,
    /// The event is skipped and counted; the stream gets [`Delivery::Missed`] before its next
    /// event.
    Skip,
}

/// The hub's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubLimits {
    /// Streams one key may hold open (an inbox: enough for a few devices and tabs; more is a
    /// client opening streams in a loop).
    pub per_key_max: usize,
    /// Streams the process holds open: each is a socket and a small buffer.
    pub total_max: usize,
    /// Events a stream may have waiting before [`when_full`](Self::when_full) applies.
    pub buffer: usize,
    /// What a full stream gets.
    pub when_full: WhenFull,
    /// How long a new stream waits for the feed to be connected before it is refused (503).
    pub ready_wait: Duration,
    /// The pause before the feed is reopened after it broke.
    pub retry: Duration,
}

impl Default for HubLimits {
    /// The inbox's: an inbox gets a few entries a minute, so a client 64 behind is stalled.
    fn default() -> Self {
        Self {
            per_key_max: 16,
            total_max: 10_000,
            buffer: 64,
            when_full: WhenFull::Close,
            ready_wait: Duration::from_secs(5),
            retry: Duration::from_secs(1),
        }
    }
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The key has [`HubLimits::per_key_max`] streams open.
    #[error("{0} streams are open for this already")]
    PerKey(usize),
    /// The process has [`HubLimits::total_max`] streams open.
    #[error("this server has {0} streams open already")]
    Total(usize),
    /// The feed is not connected.
    #[error("the live feed is not connected")]
    Unavailable,
}

/// What a stream receives.
#[derive(Debug)]
pub enum Delivery<E> {
    /// An event.
    Event(Arc<E>),
    /// This many events were skipped since the last delivery: the stream was full
    /// ([`WhenFull::Skip`]).
    Missed(u64),
}

/// Which events a stream wants, beside its key.
pub type Wants<E> = Box<dyn Fn(&E) -> bool + Send + Sync>;

/// One local stream's sender.
struct Local<E> {
    /// Its id, for the subscription's guard to remove it by.
    id: u64,
    /// Where its events go.
    sender: mpsc::Sender<Delivery<E>>,
    /// Its filter.
    wants: Wants<E>,
    /// Events skipped and not yet reported ([`WhenFull::Skip`]).
    missed: u64,
}

impl<E> Local<E> {
    /// Offers the stream an event; false when it is to be dropped.
    fn offer(&mut self, event: &Arc<E>, when_full: WhenFull, what: &'static str) -> bool {
        use mpsc::error::TrySendError;
        if self.missed > 0 {
            // The report goes first, so the stream sees the gap where it was.
            match self.sender.try_send(Delivery::Missed(self.missed)) {
                Ok(()) => self.missed = 0,
                Err(TrySendError::Full(_)) => {
                    self.missed += 1;
                    return true;
                }
                Err(TrySendError::Closed(_)) => return false,
            }
        }
        match self.sender.try_send(Delivery::Event(event.clone())) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => match when_full {
                WhenFull::Close => {
                    tracing::warn!(
                        what,
                        stream = self.id,
                        "Stream dropped: its client is too slow."
                    );
                    false
                }
                WhenFull::Skip => {
                    self.missed += 1;
                    true
                }
            },
            Err(TrySendError::Closed(_)) => false,
        }
    }
}

/// The open streams.
struct Streams<E: Keyed> {
    /// By key.
    by_key: HashMap<E::Key, Vec<Local<E>>>,
    /// How many in all.
    total: usize,
    /// The next stream id.
    next_id: u64,
    /// Whether the feed task runs.
    running: bool,
}

impl<E: Keyed> Default for Streams<E> {
    fn default() -> Self {
        Self { by_key: HashMap::new(), total: 0, next_id: 0, running: false }
    }
}

impl<E: Keyed> Streams<E> {
    fn remove(&mut self, key: &E::Key, mut keep: impl FnMut(&mut Local<E>) -> bool) {
        if let Some(locals) = self.by_key.get_mut(key) {
            let before = locals.len();
            locals.retain_mut(&mut keep);
            self.total -= before - locals.len();
            if locals.is_empty() {
                self.by_key.remove(key);
            }
        }
    }
}

struct Shared<E: Keyed> {
    open: FeedOpener<E>,
    limits: HubLimits,
    /// What the hub carries, for its logs.
    what: &'static str,
    streams: Mutex<Streams<E>>,
    /// Whether the feed is connected.
    ready: watch::Sender<bool>,
}

impl<E: Keyed> Shared<E> {
    fn lock(&self) -> MutexGuard<'_, Streams<E>> {
        // Nothing panics while holding the lock, so a poisoned lock still holds consistent data.
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fan_out(&self, event: E) {
        let key = event.key();
        let event = Arc::new(event);
        let when_full = self.limits.when_full;
        let mut streams = self.lock();
        streams.remove(&key, |local| {
            if !(local.wants)(&event) {
                return !local.sender.is_closed();
            }
            local.offer(&event, when_full, self.what)
        });
    }

    /// Closes every stream: their clients resume from the store, or reconnect.
    fn close_all(&self) {
        let mut streams = self.lock();
        streams.by_key.clear();
        streams.total = 0;
    }

    async fn run(self: Arc<Self>) {
        let what = self.what;
        loop {
            match (self.open)().await {
                Ok(mut feed) => {
                    self.ready.send_replace(true);
                    tracing::info!(what, "Live feed connected.");
                    while let Some(event) = feed.next().await {
                        self.fan_out(event);
                    }
                    tracing::warn!(what, "Live feed ended; closing the open streams.");
                }
                Err(error) => tracing::warn!(%error, what, "Live feed could not be opened."),
            }
            self.ready.send_replace(false);
            self.close_all();
            tokio::time::sleep(self.limits.retry).await;
        }
    }
}

/// The fan-out. A cheap handle: clones share the streams.
pub struct Hub<E: Keyed> {
    shared: Arc<Shared<E>>,
}

impl<E: Keyed> Clone for Hub<E> {
    fn clone(&self) -> Self {
        Self { shared: self.shared.clone() }
    }
}

impl<E: Keyed> std::fmt::Debug for Hub<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let streams = self.shared.lock();
        f.debug_struct("Hub")
            .field("what", &self.shared.what)
            .field("streams", &streams.total)
            .finish_non_exhaustive()
    }
}

/// A local stream: its deliveries, and its place in the hub, given back when dropped.
pub struct Subscription<E: Keyed> {
    /// Its key's events that it wants, in the feed's order; ends when the hub drops the stream.
    pub events: mpsc::Receiver<Delivery<E>>,
    /// Held for its `Drop`, which takes the stream out of the hub.
    _guard: Guard<E>,
}

impl<E: Keyed> std::fmt::Debug for Subscription<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").field("id", &self._guard.id).finish_non_exhaustive()
    }
}

struct Guard<E: Keyed> {
    shared: Arc<Shared<E>>,
    key: E::Key,
    id: u64,
}

impl<E: Keyed> Drop for Guard<E> {
    fn drop(&mut self) {
        let id = self.id;
        self.shared.lock().remove(&self.key, |local| local.id != id);
    }
}

impl<E: Keyed> Hub<E> {
    /// A hub of `what` (for logs) over the feed `open` opens; nothing is opened until the first
    /// subscription.
    pub fn new(what: &'static str, open: FeedOpener<E>, limits: HubLimits) -> Self {
        assert!(limits.buffer > 0 && limits.per_key_max > 0, "a hub's limits are positive");
        let (ready, _) = watch::channel(false);
        let streams = Mutex::new(Streams::default());
        Self { shared: Arc::new(Shared { open, limits, what, streams, ready }) }
    }

    /// How many streams are open.
    pub fn open_streams(&self) -> usize {
        self.shared.lock().total
    }

    /// Opens a stream of the key's events that `wants` accepts, once the feed is connected (so
    /// nothing published after this returns is missed while the stream lives).
    pub async fn subscribe(
        &self,
        key: E::Key,
        wants: Wants<E>,
    ) -> Result<Subscription<E>, Refused> {
        let limits = self.shared.limits;
        let (sender, events) = mpsc::channel(limits.buffer);
        let guard = {
            let mut streams = self.shared.lock();
            if streams.total >= limits.total_max {
                return Err(Refused::Total(streams.total));
            }
            let mine = streams.by_key.get(&key).map_or(0, Vec::len);
            if mine >= limits.per_key_max {
                return Err(Refused::PerKey(mine));
            }
            let id = streams.next_id;
            streams.next_id += 1;
            streams.total += 1;
            let local = Local { id, sender, wants, missed: 0 };
            streams.by_key.entry(key.clone()).or_default().push(local);
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

/// Ends every live stream when its future resolves. The binary layers it onto the router
/// (`router(state).layer(Extension(StreamsEnd::new(shutdown)))`): a graceful shutdown waits for
/// every open connection, and a stream never ends by itself. Without it (tests calling `router`
/// directly), streams end only when their clients go.
#[derive(Clone)]
pub struct StreamsEnd(futures::future::Shared<BoxFuture<'static, ()>>);

impl StreamsEnd {
    /// Streams end when `end` resolves.
    pub fn new(end: impl Future<Output = ()> + Send + 'static) -> Self {
        Self(end.boxed().shared())
    }
}

impl std::fmt::Debug for StreamsEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamsEnd").finish_non_exhaustive()
    }
}

/// How often an idle stream sends a comment: below the 30 to 60 s idle timeouts of common
/// proxies and load balancers.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// A Server-Sent Events answer of `events`, with a keep-alive comment, ending when the server
/// shuts down (`end`, see [`StreamsEnd`]).
pub fn sse(
    events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static,
    end: Option<Extension<StreamsEnd>>,
) -> Response {
    let end = match end {
        Some(Extension(StreamsEnd(end))) => end.boxed(),
        None => futures::future::pending().boxed(),
    };
    let keep_alive = KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive");
    let mut response = Sse::new(events.take_until(end)).keep_alive(keep_alive).into_response();
    // Proxies must pass each event on at once: nginx buffers unless told not to.
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;
    use steps::model::Category;
    use steps::model::{RecipientId, TenantId};
    use storage::memory::MemoryStore;
    use workflows::inbox::{InboxEvent, InboxFeed};
    use workflows::ports::{Inbox, InboxItem};

    use super::*;

    fn hub(store: &MemoryStore, limits: HubLimits) -> Hub<InboxEvent> {
        let store = store.clone();
        Hub::new(
            "inbox",
            Arc::new(move || {
                let store = store.clone();
                async move { store.inbox_feed().await }.boxed()
            }),
            limits,
        )
    }

    async fn subscribe(
        hub: &Hub<InboxEvent>,
        tenant: &TenantId,
        recipient: &RecipientId,
    ) -> Result<Subscription<InboxEvent>, Refused> {
        hub.subscribe((tenant.clone(), recipient.clone()), Box::new(|_| true)).await
    }

    /// The sequence number of a delivered entry.
    fn seq(delivery: Option<Delivery<InboxEvent>>) -> u64 {
        match delivery {
            Some(Delivery::Event(event)) => event.entry.seq,
            other => panic!("expected an entry, got {other:?}"),
        }
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
        let mut one = subscribe(&hub, &acme, &bob).await.unwrap();
        let mut two = subscribe(&hub, &acme, &bob).await.unwrap();
        let mut other = subscribe(&hub, &acme, &carol).await.unwrap();
        append(&store, &bob, 1).await;
        for sub in [&mut one, &mut two] {
            let event = tokio::time::timeout(Duration::from_secs(1), sub.events.recv()).await;
            assert_eq!(seq(event.unwrap()), 1);
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
        let limits = HubLimits { per_key_max: 2, total_max: 3, ..HubLimits::default() };
        let hub = hub(&store, limits);
        let (acme, bob, carol) = ids();
        let _a = subscribe(&hub, &acme, &bob).await.unwrap();
        let b = subscribe(&hub, &acme, &bob).await.unwrap();
        assert_eq!(subscribe(&hub, &acme, &bob).await.err(), Some(Refused::PerKey(2)));
        let _c = subscribe(&hub, &acme, &carol).await.unwrap();
        assert_eq!(subscribe(&hub, &acme, &carol).await.err(), Some(Refused::Total(3)));
        drop(b);
        assert!(subscribe(&hub, &acme, &carol).await.is_ok());
    }

    #[tokio::test]
    async fn a_slow_stream_is_dropped_not_buffered() {
        let store = MemoryStore::new();
        let hub = hub(&store, HubLimits { buffer: 2, ..HubLimits::default() });
        let (acme, bob, _) = ids();
        let mut slow = subscribe(&hub, &acme, &bob).await.unwrap();
        let mut fast = subscribe(&hub, &acme, &bob).await.unwrap();
        for n in 1..=3 {
            append(&store, &bob, n).await;
            // The fast one reads each event as it comes.
            let event = tokio::time::timeout(Duration::from_secs(1), fast.events.recv()).await;
            assert_eq!(seq(event.unwrap()), u64::from(n));
        }
        // The slow one got the two its buffer holds, then was closed.
        assert_eq!(seq(slow.events.recv().await), 1);
        assert_eq!(seq(slow.events.recv().await), 2);
        assert!(slow.events.recv().await.is_none(), "the slow stream ends");
        assert_eq!(hub.open_streams(), 1);
    }

    #[tokio::test]
    async fn a_broken_feed_closes_every_stream_and_is_reopened() {
        // A feed that ends at once, then works: the streams open meanwhile are closed.
        let store = MemoryStore::new();
        let opened = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let open: FeedOpener<InboxEvent> = {
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
        let hub = Hub::new("inbox", open, limits);
        let (acme, bob, _) = ids();
        let mut first = subscribe(&hub, &acme, &bob).await.unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(2), first.events.recv()).await;
        assert!(ended.unwrap().is_none(), "the stream closes with the feed");
        assert_eq!(hub.open_streams(), 0);
        let mut second = subscribe(&hub, &acme, &bob).await.unwrap();
        append(&store, &bob, 1).await;
        let event = tokio::time::timeout(Duration::from_secs(1), second.events.recv()).await;
        assert_eq!(seq(event.unwrap()), 1);
        assert!(opened.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    }

    #[tokio::test]
    async fn a_full_stream_that_skips_is_told_how_many_it_missed_where_it_missed_them() {
        let store = MemoryStore::new();
        let limits = HubLimits { buffer: 2, when_full: WhenFull::Skip, ..HubLimits::default() };
        let hub = hub(&store, limits);
        let (acme, bob, _) = ids();
        let mut slow = subscribe(&hub, &acme, &bob).await.unwrap();
        let mut fast = subscribe(&hub, &acme, &bob).await.unwrap();
        for n in 1..=5 {
            append(&store, &bob, n).await;
            let event = tokio::time::timeout(Duration::from_secs(1), fast.events.recv()).await;
            assert_eq!(seq(event.unwrap()), u64::from(n));
        }
        // The slow one holds the two its buffer takes; 3 to 5 were skipped, not queued.
        assert_eq!(seq(slow.events.recv().await), 1);
        assert_eq!(seq(slow.events.recv().await), 2);
        append(&store, &bob, 6).await;
        let event = tokio::time::timeout(Duration::from_secs(1), fast.events.recv()).await;
        assert_eq!(seq(event.unwrap()), 6);
        // The gap is reported before the next event, and the stream stays open.
        assert!(matches!(slow.events.recv().await, Some(Delivery::Missed(3))));
        assert_eq!(seq(slow.events.recv().await), 6);
        assert_eq!(hub.open_streams(), 2);
    }

    #[tokio::test]
    async fn a_stream_gets_only_the_events_it_wants() {
        let store = MemoryStore::new();
        let hub = hub(&store, HubLimits::default());
        let (acme, bob, _) = ids();
        let even = Box::new(|event: &InboxEvent| event.entry.seq.is_multiple_of(2));
        let mut even = hub.subscribe((acme.clone(), bob.clone()), even).await.unwrap();
        for n in 1..=4 {
            append(&store, &bob, n).await;
        }
        for expected in [2, 4] {
            let event = tokio::time::timeout(Duration::from_secs(1), even.events.recv()).await;
            assert_eq!(seq(event.unwrap()), expected);
        }
    }
}
