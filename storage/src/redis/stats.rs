//! Delivery statistics on Redis: a HASH per tenant and minute (`keys::stats_minute`), added to
//! with pipelined `HINCRBY` and given its TTL by the same pipeline, read back with pipelined
//! `HGETALL`. Single-key commands only: no script, no cross-slot step.

use std::collections::HashMap;

use steps::model::TenantId;
use workflows::ports::StoreError;

use super::RedisStore;
use crate::keys;
use crate::stats::{
    Counts, MinuteCounts, STATS_TTL_MS, StatKey, StatsStore, check_add, check_read,
};

/// Commands per pipeline: bounds one request's size and the time it holds the connection.
const PIPELINE_MAX: usize = 1_000;

impl StatsStore for RedisStore {
    async fn add_stats(&self, batch: &[MinuteCounts]) -> Result<(), StoreError> {
        check_add(batch)?;
        let mut commands: Vec<redis::Cmd> = Vec::new();
        for minute in batch {
            let key = keys::stats_minute(&minute.tenant, minute.minute);
            for (stat, n) in &minute.counts {
                let mut cmd = redis::cmd("HINCRBY");
                cmd.arg(&key).arg(stat.field()).arg(i64::try_from(*n).unwrap_or(i64::MAX));
                commands.push(cmd);
            }
            let mut expire = redis::cmd("PEXPIRE");
            expire.arg(&key).arg(STATS_TTL_MS);
            commands.push(expire);
        }
        for chunk in commands.chunks(PIPELINE_MAX) {
            let mut pipe = redis::pipe();
            for cmd in chunk {
                pipe.add_command(cmd.clone()).ignore();
            }
            let mut conn = self.conn.clone();
            let _: redis::Value =
                pipe.query_async(&mut conn).await.map_err(|e| self.error("add stats", &e))?;
        }
        Ok(())
    }

    async fn read_stats(
        &self,
        tenant: &TenantId,
        from_minute: u64,
        to_minute: u64,
    ) -> Result<Counts, StoreError> {
        check_read(from_minute, to_minute)?;
        let minutes: Vec<u64> = (from_minute..=to_minute).collect();
        let mut sum = Counts::new();
        for chunk in minutes.chunks(PIPELINE_MAX) {
            let mut pipe = redis::pipe();
            for minute in chunk {
                pipe.cmd("HGETALL").arg(keys::stats_minute(tenant, *minute));
            }
            let mut conn = self.conn.clone();
            let hashes: Vec<HashMap<String, u64>> =
                pipe.query_async(&mut conn).await.map_err(|e| self.error("read stats", &e))?;
            for (field, n) in hashes.into_iter().flatten() {
                // A field an older or newer version wrote, that this one does not know: skipped.
                if let Some(key) = StatKey::parse(&field) {
                    let total = sum.entry(key).or_default();
                    *total = total.saturating_add(n);
                }
            }
        }
        Ok(sum)
    }
}
