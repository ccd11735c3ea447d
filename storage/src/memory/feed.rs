//! The in-memory stores' live feeds (the inbox's, the transitions'): a bounded `futures` channel
//! per subscriber (this crate's in-memory half has no tokio). A publish offers each subscriber the
//! message; a subscriber whose channel is full is dropped, so its stream ends (as a Redis
//! subscriber that falls behind is disconnected) instead of the store buffering for it without
//! bound.

use std::sync::{Mutex, PoisonError};

use futures::StreamExt;
use futures::channel::mpsc;
use futures::stream::BoxStream;

/// Messages a subscriber may have waiting before it is dropped as too slow. The API's fan-out
/// drains its feed at once, so only a stalled process fills this.
pub const FEED_BUFFER: usize = 1_024;

/// One feed's subscribers.
#[derive(Debug)]
pub(super) struct Feed<T> {
    /// A closed or full one is removed on the next publish.
    subscribers: Mutex<Vec<mpsc::Sender<T>>>,
}

impl<T> Default for Feed<T> {
    fn default() -> Self {
        Self { subscribers: Mutex::new(Vec::new()) }
    }
}

impl<T: Clone + Send + 'static> Feed<T> {
    /// Offers `message` to every subscriber.
    pub(super) fn publish(&self, message: T) {
        // Nothing panics while holding the lock, so a poisoned lock still holds consistent data.
        let mut subscribers = self.subscribers.lock().unwrap_or_else(PoisonError::into_inner);
        subscribers.retain_mut(|subscriber| subscriber.try_send(message.clone()).is_ok());
    }

    /// A new subscriber's stream: what is published from now on.
    pub(super) fn subscribe(&self) -> BoxStream<'static, T> {
        let (sender, receiver) = mpsc::channel(FEED_BUFFER);
        self.subscribers.lock().unwrap_or_else(PoisonError::into_inner).push(sender);
        receiver.boxed()
    }
}
