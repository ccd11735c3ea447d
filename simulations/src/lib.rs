//! courant's deterministic simulator: the same lifecycle core and runner the workers run, over the
//! in-memory store, fake providers, an at-least-once queue and a virtual clock, all from one seed.
//!
//! Like FoundationDB's and TigerBeetle's simulators, it runs the real code many times under
//! injected faults and checks invariants: every accepted notification settles; a provider takes a
//! message that may arrive at most once plus once per unknown outcome, and every such re-send is
//! flagged (an operator's DLQ replay, which the simulator also runs, included); transitions
//! follow the lifecycle's edges; terminal states never move, except a dead letter along its two
//! edges (a late delivery receipt, a replay); attempts stay within policy; dead-lettered means
//! the retries were exhausted; no recipient's window or category cap ever holds more than its
//! max, and critical categories are never held back by one; one event for one recipient and
//! channel makes one notification; a collapsed notification's data goes out in exactly one
//! survivor's message; the same seed gives the same trace.
//!
//! # Layout
//! - [`rng`]: SplitMix64, forked into sub-streams (workload, faults, schedule).
//! - [`directory`]: the recipients' stored profiles and preferences, the preference fault's
//!   changes, and the oracle of the directory invariants.
//! - [`faults`]: the fault kinds and how a seed picks which are on (swarm testing).
//! - [`world`]: virtual time, the fault dice, the send ledger, the trace; the ports (clock, a
//!   fault-injecting store wrapper, fake providers).
//! - [`sim`]: the discrete-event loop and the invariant checks.
//! - `campaigns`: the campaign workload, the fault-injecting store's campaign port and the
//!   campaign invariants.
//! - [`report`]: what a run found.
//!
//! Nothing on the simulated path reads the wall clock, the OS's randomness or a hash map's order.

mod campaigns;
pub mod directory;
pub mod faults;
pub mod outage;
pub mod report;
pub mod rng;
pub mod sim;
pub mod world;

pub use faults::{Fault, Profile};
pub use report::{PolicyFigures, Report, Violation};
pub use sim::{Config, run};
pub use world::Planted;
