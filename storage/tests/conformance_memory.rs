//! The conformance suite against the in-memory store.

use storage::memory::MemoryStore;

async fn fresh() -> (MemoryStore, ()) {
    (MemoryStore::new(), ())
}

storage::conformance_tests!(fresh);
