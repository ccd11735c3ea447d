//! The courant lifecycle: a notification as a persisted state machine.
//!
//! Pure code: no I/O, no clock, no global randomness. Events go in, effects come out; the
//! [`runner`] executes effects through the [`ports`], which the shell implements.
//!
//! # Layout
//! - [`machine`]: the statig state machine, its events and effects.
//! - [`dlq`]: the dead-letter queue's filters, plans and replay schedule.
//! - [`policy`]: retry, rate, route and preference policies (critical categories, per-category
//!   defaults, default quiet hours) as data.
//! - [`record`]: the persisted record, its history entries, commits and wake-ups.
//! - [`inbox`]: the in-app inbox's read state (unread, read, archived) and its live feed, as ports.
//! - [`ports`]: the traits the shell implements (store, inbox, recipients directory, clock,
//!   provider).
//! - [`runner`]: drives one wake-up through the machine, executing its effects.
//! - [`templates`]: built-in and registry templates, pinned versions, the compiled-version cache.
//! - [`campaign`]: campaigns as data: ids, states, pace, counters, progress.
//! - [`fanout`]: workers expanding campaigns into notifications page by page, and cancelling.
//! - [`transitions`]: the live feed of committed transitions (ids only), as a port.

pub mod campaign;
pub mod dlq;
pub mod explain;
pub mod fanout;
pub mod inbox;
pub mod machine;
pub mod policy;
pub mod ports;
pub mod record;
pub mod runner;
pub mod templates;
pub mod transitions;
