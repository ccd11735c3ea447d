//! courant's storage: the durable record of every notification, and the wake-up queue that drives
//! it. The shell side of the `workflows::ports` traits.
//!
//! Two implementations are held to one conformance suite: [`memory`] (the simulator and dev mode;
//! no tokio, no Redis) and `redis` (production, feature `redis`). Both implement
//! `workflows::ports::Store`, `workflows::ports::Inbox` (with `workflows::inbox::InboxState` and
//! `InboxFeed`: read state and the feed of new entries), [`queue::WakeQueue`] and
//! [`stats::StatsStore`].
//!
//! # Layout
//! - [`keys`]: the Redis key layout, shards and notification ids.
//! - [`queue`]: the wake-up queue trait, deliveries and their settlement, the worker registry.
//! - [`stats`]: delivery statistics per tenant and minute (the `StatsStore` port), latency
//!   histograms and the report built from them.
//! - [`memory`]: the in-memory store and queue.
//! - `redis` (feature `redis`): the Redis store and queue, every write one Lua script.
//! - `backend` (feature `apalis`): an apalis 1.0 `Backend` over any [`queue::WakeQueue`].
//! - `testing` (feature `test-support`): a throwaway `redis-server` for tests.
//! - `conformance` (feature `test-support`): the suite both stores must pass.
//!
//! # Features
//! - none: [`memory`] only; what the simulator uses.
//! - `redis`: the Redis store (redis 1.x, tokio).
//! - `apalis`: `backend::WakeBackend`.
//! - `test-support`: `testing::RedisServer` and `conformance`.

pub mod keys;
pub mod memory;
pub mod queue;
pub mod stats;

#[cfg(feature = "redis")]
pub mod redis;

#[cfg(feature = "apalis")]
pub mod backend;

#[cfg(feature = "test-support")]
pub mod testing;

#[cfg(feature = "test-support")]
pub mod conformance;
