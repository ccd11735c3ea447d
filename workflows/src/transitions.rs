//! The live feed of committed transitions, as a port: what `courant tail` and `GET /v1/events`
//! show.
//!
//! A [`Transition`] is one committed history entry with the notification's ids beside it: never a
//! recipient's address, phone number, device token or rendered content, so it may go to any
//! operator of the tenant. The shell's observer turns each entry the runner commits into one and
//! publishes it ([`TransitionFeed::publish_transitions`]; Redis: PUBLISH on the tenant's channel,
//! memory: an in-process channel per subscriber). An API process opens the feed once
//! ([`TransitionFeed::transition_feed`]) and fans it out to its open streams.
//!
//! The feed is best effort, unlike the history: a transition published while no one listens, or
//! while a subscriber's connection is down, is gone. The history is the record.

use std::future::Future;

use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use steps::model::{Attempt, Category, Channel, NotificationId, ProviderName, TenantId};

use crate::machine::StateKind;
use crate::ports::StoreError;
use crate::record::{Cause, HistoryEntry, Record};

/// The most transitions published in one call: a batch is one round trip, and bounded.
pub const PUBLISH_BATCH_MAX: usize = 256;

/// One committed transition of a notification, ids only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The tenant, whose subscribers alone see it.
    pub tenant: TenantId,
    /// The notification.
    pub id: NotificationId,
    /// The record's version after the commit: orders one notification's transitions.
    pub version: u64,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// The state before (none for the first entry).
    pub from: Option<StateKind>,
    /// The state after.
    pub to: StateKind,
    /// Why.
    pub cause: Cause,
    /// The provider the new state is about, if any.
    pub provider: Option<ProviderName>,
    /// The attempt the new state is about, if any.
    pub attempt: Option<Attempt>,
    /// The channel the new state is about, else the one asked for.
    pub channel: Channel,
    /// The notification's category.
    pub category: Category,
    /// The decision inputs that mattered (as in the history).
    pub note: Option<String>,
}

impl Transition {
    /// The transition `entry` made to `record` (as it was before, or after: only its ids, request
    /// and tenant are read).
    pub fn new(record: &Record, entry: &HistoryEntry) -> Self {
        Self {
            tenant: record.tenant.clone(),
            id: record.id.clone(),
            version: entry.version,
            at_ms: entry.at_ms,
            from: entry.from,
            to: entry.to.kind(),
            cause: entry.cause.clone(),
            provider: entry.to.provider().cloned(),
            attempt: entry.to.attempt(),
            channel: entry.to.channel().unwrap_or(record.request.channel),
            category: record.request.category.clone(),
            note: entry.note.clone(),
        }
    }
}

/// The live feed of transitions, for every tenant. Each [`transition_feed`] opens a new
/// subscription (Redis: a connection of its own); the stream ends when the subscription breaks or
/// falls behind, and what was published meanwhile is not replayed.
///
/// [`transition_feed`]: TransitionFeed::transition_feed
pub trait TransitionFeed: Send + Sync + 'static {
    /// Publishes transitions (at most [`PUBLISH_BATCH_MAX`]) to the subscribers open now, in
    /// order.
    fn publish_transitions(
        &self,
        transitions: &[Transition],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Subscribes; transitions published before the returned future resolves are not delivered.
    fn transition_feed(
        &self,
    ) -> impl Future<Output = Result<BoxStream<'static, Transition>, StoreError>> + Send;
}
