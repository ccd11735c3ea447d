//! The in-memory statistics: the Redis shape (one map of counters per tenant and minute), pruned
//! of minutes older than [`STATS_TTL_MS`] on every write, as Redis expires them.

use std::collections::BTreeMap;
use std::future::{Future, ready};

use steps::model::TenantId;
use workflows::ports::StoreError;

use super::MemoryStore;
use crate::stats::{
    Counts, MinuteCounts, STATS_TTL_MS, StatsStore, check_add, check_read, minute_of,
};

/// Every tenant's counters by minute.
pub(super) type Minutes = BTreeMap<(TenantId, u64), Counts>;

impl StatsStore for MemoryStore {
    fn add_stats(
        &self,
        batch: &[MinuteCounts],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        if let Err(error) = check_add(batch) {
            return ready(Err(error));
        }
        let oldest_kept = minute_of(self.clock.now_ms().saturating_sub(STATS_TTL_MS));
        let mut inner = self.lock();
        for minute in batch {
            let counts = inner.stats.entry((minute.tenant.clone(), minute.minute)).or_default();
            for (key, n) in &minute.counts {
                let total = counts.entry(key.clone()).or_default();
                *total = total.saturating_add(*n);
            }
        }
        inner.stats.retain(|(_, minute), _| *minute >= oldest_kept);
        ready(Ok(()))
    }

    fn read_stats(
        &self,
        tenant: &TenantId,
        from_minute: u64,
        to_minute: u64,
    ) -> impl Future<Output = Result<Counts, StoreError>> + Send {
        if let Err(error) = check_read(from_minute, to_minute) {
            return ready(Err(error));
        }
        let inner = self.lock();
        let range = (tenant.clone(), from_minute)..=(tenant.clone(), to_minute);
        let mut sum = Counts::new();
        for counts in inner.stats.range(range).map(|(_, counts)| counts) {
            for (key, n) in counts {
                let total = sum.entry(key.clone()).or_default();
                *total = total.saturating_add(*n);
            }
        }
        ready(Ok(sum))
    }
}
