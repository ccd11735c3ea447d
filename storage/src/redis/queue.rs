//! The wake-up queue on Redis Streams.
//!
//! Per shard: a ready STREAM read through the consumer group `workers`, a timers ZSET (score =
//! due ms), a parked ZSET, and the deadline index the reaper reads (written by the store's
//! create and commit scripts). Stream entries hold only the wake key (`tenant/id/version`) and
//! the try count. Fetching is one `XREADGROUP` over all shards; recovery of a dead worker's
//! entries is `XAUTOCLAIM` (per message, needing no heartbeat; the worker registry, two keys
//! under `{w}`, is for operators only).
//!
//! Every multi-key step is a script on one shard; steps over many shards are pipelines of
//! per-shard scripts, each prefixed by `SCRIPT LOAD` so a restarted Redis never answers
//! `NOSCRIPT` inside a pipeline.

use std::collections::BTreeMap;

use redis::aio::ConnectionManager;
use redis::{Pipeline, RedisError, Script, Value};
use workflows::ports::StoreError;
use workflows::record::Wake;

use super::codec::{self, StreamEntry};
use super::scripts::{
    ACK_SCRIPT, HEARTBEAT_SCRIPT, PROMOTE_SCRIPT, QUEUE_STATS_SCRIPT, REDRIVE_SCRIPT,
    RELEASE_SCRIPT, RETRY_SCRIPT,
};
use super::{RedisStore, is_no_group, manager_config};
use crate::keys::{self, CONSUMER_GROUP, SHARDS};
use crate::memory::SystemClock;
use crate::queue::{
    BLOCK_MS_MAX, Delivery, DeliveryTag, FETCH_MAX, PROMOTE_PER_SHARD_MAX, QueueStats,
    REAPER_SLACK_MS, REDRIVE_PER_SHARD_MAX, Reaped, Retried, SCHEDULE_BATCH_MAX, TRIES_MAX,
    TagInner, WORKER_FORGET_MS, WORKERS_LIST_MAX, WakeQueue, WorkerBeat, has_deadline, over_limit,
    timer_member,
};
use workflows::machine::StateKind;
use workflows::ports::Clock;

/// Follow-up reads per fetch, on the streams that filled their share of the read before.
const FOLLOW_UP_READS_MAX: usize = 2;
/// Entries per ack / release script: bounds the script's `unpack` and its run time.
const SETTLE_CHUNK_MAX: usize = 500;
/// Commands per pipeline when scheduling.
const SCHEDULE_PIPELINE_MAX: usize = 1_000;

/// The shard of a ready-stream key (`courant:{s0a}:q:ready`).
fn shard_of_ready_key(key: &str) -> Option<u16> {
    let rest = key.strip_prefix(keys::PREFIX)?.strip_prefix(":{s")?;
    let shard = u16::from_str_radix(rest.get(..2)?, 16).ok()?;
    (shard < SHARDS && rest.get(2..)? == "}:q:ready").then_some(shard)
}

fn stream_tag(shard: u16, entry: &str) -> DeliveryTag {
    DeliveryTag(TagInner::Stream { shard, entry: entry.to_owned() })
}

fn stream_place(delivery: &Delivery) -> Option<(u16, &str)> {
    match &delivery.tag.0 {
        TagInner::Stream { shard, entry } => Some((*shard, entry.as_str())),
        TagInner::Memory { .. } => None,
    }
}

/// A pipeline that loads `script` first (its reply ignored), so the EVALSHAs that follow cannot
/// fail with NOSCRIPT after a Redis restart.
fn script_pipeline(script: &Script) -> Pipeline {
    let mut pipe = redis::pipe();
    pipe.load_script(script).ignore();
    pipe
}

/// Deliveries grouped by shard, in shard order.
fn by_shard(deliveries: &[Delivery]) -> BTreeMap<u16, Vec<(&str, &Delivery)>> {
    let mut groups: BTreeMap<u16, Vec<(&str, &Delivery)>> = BTreeMap::new();
    for delivery in deliveries {
        if let Some((shard, entry)) = stream_place(delivery) {
            groups.entry(shard).or_default().push((entry, delivery));
        }
    }
    groups
}

impl RedisStore {
    async fn blocking_conn(&self) -> Result<ConnectionManager, StoreError> {
        let mut slot = self.blocking.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let conn = ConnectionManager::new_with_config(self.client.clone(), manager_config())
            .await
            .map_err(|e| self.error("connect (blocking reads)", &e))?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Runs `query` once, and once more after recreating the consumer groups if Redis says they
    /// are missing (a restart without persistence, a FLUSHALL).
    async fn with_groups<T, F, Fut>(&self, what: &str, query: F) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        match query().await {
            Ok(v) => Ok(v),
            Err(e) if is_no_group(&e) => {
                self.ensure_groups().await?;
                query().await.map_err(|e| self.error(what, &e))
            }
            Err(e) => Err(self.error(what, &e)),
        }
    }

    async fn read_group(
        &self,
        conn: &ConnectionManager,
        consumer: &str,
        shards: &[u16],
        count: usize,
        block_ms: u64,
    ) -> Result<Vec<(u16, Vec<StreamEntry>)>, StoreError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(CONSUMER_GROUP).arg(consumer).arg("COUNT").arg(count);
        // BLOCK 0 would block forever; no BLOCK at all is a plain poll.
        if block_ms > 0 {
            cmd.arg("BLOCK").arg(block_ms);
        }
        cmd.arg("STREAMS");
        for &shard in shards {
            cmd.arg(keys::ready(shard));
        }
        for _ in shards {
            cmd.arg(">");
        }
        let reply: Value = self
            .with_groups("XREADGROUP", || {
                let mut conn = conn.clone();
                let cmd = cmd.clone();
                async move { cmd.query_async(&mut conn).await }
            })
            .await?;
        let streams = codec::read_reply(reply).ok_or_else(|| self.corrupt("XREADGROUP"))?;
        streams
            .into_iter()
            .map(|(key, entries)| {
                let shard = shard_of_ready_key(&key).ok_or_else(|| self.corrupt("XREADGROUP"))?;
                Ok((shard, entries))
            })
            .collect()
    }

    /// Turns stream entries into deliveries; entries that do not hold a wake key are parked
    /// (they can never be handled) and settled.
    async fn deliveries(
        &self,
        entries: Vec<(u16, Vec<StreamEntry>)>,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut out = Vec::new();
        let mut poisoned = Vec::new();
        for (shard, entries) in entries {
            for entry in entries {
                let wake = entry.field("w").and_then(Wake::parse_key);
                let tries = entry.field("t").and_then(|t| t.parse().ok()).unwrap_or(0);
                match wake {
                    Some(wake) => {
                        out.push(Delivery { wake, tag: stream_tag(shard, &entry.id), tries })
                    }
                    None => poisoned.push((shard, entry)),
                }
            }
        }
        for (shard, entry) in poisoned {
            tracing::warn!(tag = %stream_tag(shard, &entry.id), "Unreadable wake-up entry; parked.");
            let key = entry.field("w").unwrap_or("").to_owned();
            let now_ms = self.now_ms();
            let mut conn = self.conn.clone();
            let _: i64 = RETRY_SCRIPT
                .key(keys::ready(shard))
                .key(keys::timers(shard))
                .key(keys::parked(shard))
                .arg(&entry.id)
                .arg(if key.is_empty() { format!("unreadable:{}", entry.id) } else { key })
                .arg(TRIES_MAX)
                .arg(now_ms)
                .arg(TRIES_MAX)
                .arg(now_ms)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| self.error("park", &e))?;
        }
        Ok(out)
    }
}

impl WakeQueue for RedisStore {
    fn dedicated(&self) -> Self {
        Self { blocking: std::sync::Arc::new(tokio::sync::Mutex::new(None)), ..self.clone() }
    }

    fn now_ms(&self) -> u64 {
        SystemClock.now_ms()
    }

    async fn fetch(
        &self,
        consumer: &str,
        max: usize,
        block_ms: u64,
    ) -> Result<Vec<Delivery>, StoreError> {
        let max = max.clamp(1, FETCH_MAX);
        let conn = self.blocking_conn().await?;
        let all: Vec<u16> = (0..SHARDS).collect();
        // COUNT applies per stream: ask each for its share, then top up from the streams that
        // filled theirs, so one busy shard still drains at full speed. Below one per shard the
        // first read can overshoot; the surplus goes straight back.
        let share = (max / usize::from(SHARDS)).max(1);
        let block_ms = block_ms.min(BLOCK_MS_MAX);
        let mut read = self.read_group(&conn, consumer, &all, share, block_ms).await?;
        let mut total: usize = read.iter().map(|(_, e)| e.len()).sum();
        let mut full: Vec<u16> =
            read.iter().filter(|(_, e)| e.len() >= share).map(|(s, _)| *s).collect();
        for _ in 0..FOLLOW_UP_READS_MAX {
            if total >= max || full.is_empty() {
                break;
            }
            let remaining = max - total;
            let (targets, count) = if full.len() <= remaining {
                (full.clone(), remaining / full.len())
            } else {
                (full[..remaining].to_vec(), 1)
            };
            let more = self.read_group(&conn, consumer, &targets, count, 0).await?;
            total += more.iter().map(|(_, e)| e.len()).sum::<usize>();
            full = more.iter().filter(|(_, e)| e.len() >= count).map(|(s, _)| *s).collect();
            read.extend(more);
        }
        let mut deliveries = self.deliveries(read).await?;
        if deliveries.len() > max {
            let surplus = deliveries.split_off(max);
            self.release(&surplus).await?;
        }
        Ok(deliveries)
    }

    async fn ack(&self, deliveries: &[Delivery]) -> Result<(), StoreError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let mut pipe = script_pipeline(&ACK_SCRIPT);
        for (shard, entries) in by_shard(deliveries) {
            for chunk in entries.chunks(SETTLE_CHUNK_MAX) {
                let mut invocation = ACK_SCRIPT.key(keys::ready(shard));
                for (entry, _) in chunk {
                    invocation.arg(*entry);
                }
                pipe.invoke_script(&invocation).ignore();
            }
        }
        let mut conn = self.conn.clone();
        let _: Value = pipe.query_async(&mut conn).await.map_err(|e| self.error("ack", &e))?;
        Ok(())
    }

    async fn retry_later(&self, delivery: &Delivery, delay_ms: u64) -> Result<Retried, StoreError> {
        let Some((shard, entry)) = stream_place(delivery) else {
            return Ok(Retried::AlreadySettled);
        };
        let now_ms = self.now_ms();
        let tries = delivery.tries.saturating_add(1);
        let at_ms = now_ms.saturating_add(delay_ms);
        let mut conn = self.conn.clone();
        let outcome: i64 = RETRY_SCRIPT
            .key(keys::ready(shard))
            .key(keys::timers(shard))
            .key(keys::parked(shard))
            .arg(entry)
            .arg(delivery.wake.key())
            .arg(tries)
            .arg(at_ms)
            .arg(TRIES_MAX)
            .arg(now_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error("retry_later", &e))?;
        match outcome {
            1 => Ok(Retried::Scheduled { at_ms, tries }),
            0 => {
                tracing::warn!(
                    notification_id = %delivery.wake.id,
                    tries,
                    "Wake-up failed too often; parked for an operator."
                );
                Ok(Retried::Parked)
            }
            _ => Ok(Retried::AlreadySettled),
        }
    }

    async fn release(&self, deliveries: &[Delivery]) -> Result<(), StoreError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let mut pipe = script_pipeline(&RELEASE_SCRIPT);
        for (shard, entries) in by_shard(deliveries) {
            for chunk in entries.chunks(SETTLE_CHUNK_MAX) {
                let mut invocation = RELEASE_SCRIPT.key(keys::ready(shard));
                for (entry, delivery) in chunk {
                    invocation.arg(*entry).arg(delivery.wake.key()).arg(delivery.tries);
                }
                pipe.invoke_script(&invocation).ignore();
            }
        }
        let mut conn = self.conn.clone();
        let _: Value = pipe.query_async(&mut conn).await.map_err(|e| self.error("release", &e))?;
        Ok(())
    }

    async fn promote_due(&self, now_ms: u64, max_per_shard: usize) -> Result<usize, StoreError> {
        let max_per_shard = max_per_shard.clamp(1, PROMOTE_PER_SHARD_MAX);
        let mut pipe = script_pipeline(&PROMOTE_SCRIPT);
        for shard in 0..SHARDS {
            pipe.invoke_script(
                PROMOTE_SCRIPT
                    .key(keys::timers(shard))
                    .key(keys::ready(shard))
                    .key(keys::parked(shard))
                    .arg(now_ms)
                    .arg(max_per_shard),
            );
        }
        let mut conn = self.conn.clone();
        let moved: Vec<i64> =
            pipe.query_async(&mut conn).await.map_err(|e| self.error("promote", &e))?;
        Ok(moved.into_iter().map(|n| usize::try_from(n).unwrap_or(0)).sum())
    }

    async fn reclaim_abandoned(
        &self,
        consumer: &str,
        min_idle_ms: u64,
        max: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let per_shard = max.clamp(1, FETCH_MAX).div_ceil(usize::from(SHARDS));
        let mut pipe = redis::pipe();
        for shard in 0..SHARDS {
            pipe.cmd("XAUTOCLAIM")
                .arg(keys::ready(shard))
                .arg(CONSUMER_GROUP)
                .arg(consumer)
                .arg(min_idle_ms)
                .arg("0-0")
                .arg("COUNT")
                .arg(per_shard);
        }
        let replies: Vec<Value> = self
            .with_groups("XAUTOCLAIM", || {
                let mut conn = self.conn.clone();
                let pipe = pipe.clone();
                async move { pipe.query_async(&mut conn).await }
            })
            .await?;
        let mut claimed = Vec::with_capacity(replies.len());
        for (shard, reply) in (0..SHARDS).zip(replies) {
            let entries =
                codec::autoclaim_reply(reply).ok_or_else(|| self.corrupt("XAUTOCLAIM"))?;
            claimed.push((shard, entries));
        }
        self.deliveries(claimed).await
    }

    async fn schedule(&self, wakes: &[(Wake, u64)]) -> Result<(), StoreError> {
        if wakes.len() > SCHEDULE_BATCH_MAX {
            return Err(over_limit("a schedule batch", wakes.len(), SCHEDULE_BATCH_MAX));
        }
        for chunk in wakes.chunks(SCHEDULE_PIPELINE_MAX) {
            let mut pipe = redis::pipe();
            for (wake, at_ms) in chunk {
                pipe.cmd("ZADD")
                    .arg(keys::timers(keys::shard_for(&wake.id)))
                    .arg(*at_ms)
                    .arg(timer_member(&wake.key(), 0))
                    .ignore();
            }
            let mut conn = self.conn.clone();
            let _: Value =
                pipe.query_async(&mut conn).await.map_err(|e| self.error("schedule", &e))?;
        }
        Ok(())
    }

    async fn redrive_overdue(
        &self,
        now_ms: u64,
        max_per_shard: usize,
    ) -> Result<Reaped, StoreError> {
        let max_per_shard = max_per_shard.clamp(1, REDRIVE_PER_SHARD_MAX);
        let next_deadline_ms = now_ms.saturating_add(REAPER_SLACK_MS);
        let settled: Vec<&str> = StateKind::ALL
            .into_iter()
            .filter(|k| !has_deadline(*k))
            .map(StateKind::as_str)
            .collect();
        let mut pipe = script_pipeline(&REDRIVE_SCRIPT);
        for shard in 0..SHARDS {
            pipe.invoke_script(
                REDRIVE_SCRIPT
                    .key(keys::deadlines(shard))
                    .key(keys::ready(shard))
                    .arg(now_ms)
                    .arg(max_per_shard)
                    .arg(next_deadline_ms)
                    .arg(keys::tenants_prefix(shard))
                    .arg(&settled),
            );
        }
        let mut conn = self.conn.clone();
        let counts: Vec<(i64, i64)> =
            pipe.query_async(&mut conn).await.map_err(|e| self.error("redrive", &e))?;
        let count = |n: i64| usize::try_from(n).unwrap_or(0);
        Ok(counts.into_iter().fold(Reaped::default(), |sum, (redriven, cleared)| Reaped {
            redriven: sum.redriven + count(redriven),
            cleared: sum.cleared + count(cleared),
        }))
    }

    async fn stats(&self) -> Result<QueueStats, StoreError> {
        let now_ms = self.now_ms();
        let mut pipe = script_pipeline(&QUEUE_STATS_SCRIPT);
        for shard in 0..SHARDS {
            pipe.invoke_script(
                QUEUE_STATS_SCRIPT
                    .key(keys::ready(shard))
                    .key(keys::timers(shard))
                    .key(keys::parked(shard))
                    .key(keys::deadlines(shard))
                    .key(keys::dlq_count(shard))
                    .arg(now_ms)
                    .arg(CONSUMER_GROUP),
            );
        }
        let mut conn = self.conn.clone();
        let shards: Vec<Vec<i64>> =
            pipe.query_async(&mut conn).await.map_err(|e| self.error("stats", &e))?;
        let mut stats = QueueStats::default();
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        let since = |n: i64| u64::try_from(n).ok();
        for shard in shards {
            let [ready, pending, due, scheduled, parked, overdue, dead, oldest_ready, oldest_due] =
                shard[..]
            else {
                return Err(self.corrupt("stats"));
            };
            stats.ready += count(ready);
            stats.pending += count(pending);
            stats.due += count(due);
            stats.scheduled += count(scheduled);
            stats.parked += count(parked);
            stats.overdue += count(overdue);
            stats.dead_lettered += count(dead);
            let oldest = since(oldest_ready).into_iter().chain(since(oldest_due));
            stats.oldest_waiting_since_ms =
                stats.oldest_waiting_since_ms.into_iter().chain(oldest).min();
        }
        Ok(stats)
    }

    async fn heartbeat(&self, beat: &WorkerBeat) -> Result<(), StoreError> {
        let beat = beat.bounded();
        let entry = codec::to_json(&beat)?;
        let forget_before_ms = beat.seen_at_ms.saturating_sub(WORKER_FORGET_MS);
        let mut conn = self.conn.clone();
        let _: i64 = HEARTBEAT_SCRIPT
            .key(keys::workers())
            .key(keys::worker_entries())
            .arg(&beat.id)
            .arg(beat.seen_at_ms)
            .arg(entry)
            .arg(forget_before_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error("heartbeat", &e))?;
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerBeat>, StoreError> {
        let mut conn = self.conn.clone();
        let last = isize::try_from(WORKERS_LIST_MAX).unwrap_or(isize::MAX) - 1;
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(keys::workers())
            .arg(0)
            .arg(last)
            .arg("REV")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error("workers", &e))?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let entries: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(keys::worker_entries())
            .arg(&ids)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error("workers", &e))?;
        // An id without its entry was forgotten between the two reads: skip it.
        entries.into_iter().flatten().map(|json| codec::from_json(&json)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_keys_map_back_to_their_shard() {
        for shard in 0..SHARDS {
            assert_eq!(shard_of_ready_key(&keys::ready(shard)), Some(shard));
        }
        assert_eq!(shard_of_ready_key("courant:{s10}:q:ready"), None);
        assert_eq!(shard_of_ready_key("courant:{s01}:q:timers"), None);
    }
}
