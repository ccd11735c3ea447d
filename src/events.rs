//! The live feed's publisher: the runner's [`Observer`] that turns each committed history entry
//! into a [`Transition`] (ids only) and publishes it on the store's feed
//! ([`TransitionFeed`]), for `GET /v1/events` and `courant tail`.
//!
//! The runner must never wait for the feed: the observer only offers each transition to a bounded
//! channel, and one background task publishes what it holds, a batch per round trip. When the
//! channel is full (the store is slow or down) the transition is dropped and counted
//! (`courant_transition_events_dropped_total`); the history keeps it either way.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use workflows::ports::Observer;
use workflows::record::{HistoryEntry, Record};
use workflows::transitions::{PUBLISH_BATCH_MAX, Transition, TransitionFeed};

/// Transitions waiting to be published. A worker commits a few per notification; this holds
/// several seconds of a busy process's commits, so only a stalled store fills it.
pub const BUFFER: usize = 4_096;

/// Publishes committed transitions without blocking the runner.
#[derive(Debug)]
pub struct Publisher {
    /// To the publishing task.
    sender: mpsc::Sender<Transition>,
    /// Transitions not published (a full buffer, or the store refused them).
    dropped: Counter,
}

impl Publisher {
    /// A publisher onto `feed`, counting what it drops in `dropped`; spawns its publishing task
    /// (on the current tokio runtime), which ends when the publisher is dropped.
    pub fn start<F: TransitionFeed>(feed: F, dropped: Counter) -> Arc<Self> {
        let (sender, receiver) = mpsc::channel(BUFFER);
        tokio::spawn(publish(feed, receiver, dropped.clone()));
        Arc::new(Self { sender, dropped })
    }

    fn offer(&self, record: &Record, entry: &HistoryEntry) {
        if self.sender.try_send(Transition::new(record, entry)).is_err() {
            self.dropped.inc();
        }
    }
}

impl Observer for Publisher {
    fn created(&self, record: &Record, entry: &HistoryEntry) {
        self.offer(record, entry);
    }

    fn deduplicated(&self, _record: &Record) {}

    fn committed(&self, record: &Record, entries: &[HistoryEntry]) {
        for entry in entries {
            self.offer(record, entry);
        }
    }
}

/// Publishes what the channel holds, a batch at a time, until every sender is gone.
async fn publish<F: TransitionFeed>(
    feed: F,
    mut receiver: mpsc::Receiver<Transition>,
    dropped: Counter,
) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH_MAX);
    while receiver.recv_many(&mut batch, PUBLISH_BATCH_MAX).await > 0 {
        if let Err(error) = feed.publish_transitions(&batch).await {
            tracing::warn!(%error, count = batch.len(), "Transitions not published to the live feed.");
            dropped.inc_by(batch.len() as u64);
        }
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;
    use steps::model::TenantId;
    use storage::conformance::{first, record};
    use storage::memory::MemoryStore;
    use workflows::machine::StateKind;
    use workflows::ports::StoreError;

    use super::*;

    #[tokio::test]
    async fn created_and_committed_entries_reach_the_feed_in_order() {
        let store = MemoryStore::new();
        let mut feed = store.transition_feed().await.unwrap();
        let dropped = Counter::default();
        let publisher = Publisher::start(store.clone(), dropped.clone());
        let acme = TenantId::new("acme").unwrap();
        let id = storage::keys::new_notification_id(&acme, None, "01HZZZZZZZZZZZZZZZZZ000001");
        let record = record(&acme, &id, 1_000, None);
        publisher.created(&record, &first(1_000));
        let mut later = first(1_001);
        later.version = 2;
        later.from = Some(StateKind::Received);
        publisher.committed(&record, &[later.clone(), later]);
        let mut versions = Vec::new();
        for _ in 0..3 {
            let got = tokio::time::timeout(Duration::from_secs(5), feed.next()).await;
            let got = got.expect("a transition within 5 s").expect("the feed is open");
            assert_eq!((got.tenant.as_str(), &got.id), ("acme", &id));
            versions.push(got.version);
        }
        assert_eq!(versions, [1, 2, 2]);
        assert_eq!(dropped.get(), 0);
    }

    /// Never ready to publish: the buffer fills.
    struct Stalled;

    impl TransitionFeed for Stalled {
        async fn publish_transitions(&self, _: &[Transition]) -> Result<(), StoreError> {
            std::future::pending().await
        }

        async fn transition_feed(
            &self,
        ) -> Result<futures::stream::BoxStream<'static, Transition>, StoreError> {
            Err(StoreError::Unavailable("stalled".into()))
        }
    }

    #[tokio::test]
    async fn a_full_buffer_drops_and_counts_instead_of_blocking() {
        let dropped = Counter::default();
        let publisher = Publisher::start(Stalled, dropped.clone());
        let acme = TenantId::new("acme").unwrap();
        let id = storage::keys::new_notification_id(&acme, None, "01HZZZZZZZZZZZZZZZZZ000001");
        let record = record(&acme, &id, 1_000, None);
        // The test's runtime runs one task at a time: the publishing task takes nothing until
        // this one yields, so the buffer holds exactly BUFFER.
        for _ in 0..BUFFER + 10 {
            publisher.created(&record, &first(1_000));
        }
        assert_eq!(dropped.get(), 10);
    }
}
