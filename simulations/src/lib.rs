//! courant's deterministic simulator: the same lifecycle core and runner the workers run, over the
//! in-memory store, fake providers, an at-least-once fake queue and a virtual clock, all driven
//! from one seed.
//!
//! The simulator itself is built by its own issue ("Deterministic simulator with failure
//! injection and property tests"); this crate fixes its place in the dependency graph: the core
//! and `storage` without features (no Redis, no tokio, no network).
