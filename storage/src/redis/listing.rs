//! The notification listing's index walk: the tenant's per-shard `all` (or `state:<kind>`)
//! ZSETs, scored by `updated_at_ms`, merged newest first by `(score, id)` as
//! [`workflows::listing`] orders them. Each shard is read in chunks with `ZREVRANGEBYSCORE` inside
//! the query's window; records are loaded in pipelines and handed to the [`ListPager`], which
//! filters them and decides where the page stops.

use std::collections::VecDeque;

use steps::model::{NotificationId, TenantId};
use workflows::listing::ListPager;
use workflows::ports::{ListCursor, ListPage, ListQuery, StoreError};

use super::RedisStore;
use crate::keys::{self, SHARDS};

/// Index entries read from one shard per round trip: a page of the default size over sixteen
/// shards is then one round trip, and one reply stays small.
const FETCH_PER_SHARD: usize = 200;
/// The most records loaded per pipeline. The first load is the page size (everything may match),
/// later ones double up to this.
const LOAD_CHUNK_MAX: usize = 500;

/// One shard's index, read in chunks from the top of the window down.
#[derive(Debug)]
struct ShardRun {
    /// The index key.
    key: String,
    /// Entries read and not taken yet, newest first.
    buffer: VecDeque<ListCursor>,
    /// How many entries of the window were read so far (the next `LIMIT` offset).
    offset: usize,
    /// Whether the window holds nothing more.
    done: bool,
}

/// The merged walk over every shard's index.
#[derive(Debug)]
struct Walk<'a> {
    query: &'a ListQuery,
    shards: Vec<ShardRun>,
    /// The window's bounds as `ZREVRANGEBYSCORE` reads them.
    max: String,
    min: String,
}

impl<'a> Walk<'a> {
    fn new(tenant: &TenantId, query: &'a ListQuery) -> Self {
        let (from_ms, to_ms) = query.window_ms();
        let shards = (0..SHARDS)
            .map(|shard| ShardRun {
                key: match query.state {
                    Some(kind) => keys::state_index(shard, tenant, kind),
                    None => keys::all_index(shard, tenant),
                },
                buffer: VecDeque::new(),
                offset: 0,
                done: false,
            })
            .collect();
        let max = if to_ms == u64::MAX { "+inf".to_owned() } else { to_ms.to_string() };
        Self { query, shards, max, min: from_ms.to_string() }
    }

    /// Reads until every shard with entries left has one buffered: one pipeline per round, and
    /// more than one round only while entries at the cursor's own millisecond are skipped.
    async fn fill(&mut self, store: &RedisStore) -> Result<(), StoreError> {
        loop {
            let empty: Vec<usize> = (0..self.shards.len())
                .filter(|&i| self.shards[i].buffer.is_empty() && !self.shards[i].done)
                .collect();
            if empty.is_empty() {
                return Ok(());
            }
            let mut pipe = redis::pipe();
            for &i in &empty {
                pipe.cmd("ZREVRANGEBYSCORE")
                    .arg(&self.shards[i].key)
                    .arg(&self.max)
                    .arg(&self.min)
                    .arg("WITHSCORES")
                    .arg("LIMIT")
                    .arg(self.shards[i].offset)
                    .arg(FETCH_PER_SHARD);
            }
            let mut conn = store.conn.clone();
            let rows: Vec<Vec<(String, f64)>> = pipe
                .query_async(&mut conn)
                .await
                .map_err(|e| store.error("ZREVRANGEBYSCORE", &e))?;
            for (i, row) in empty.into_iter().zip(rows) {
                let shard = &mut self.shards[i];
                shard.offset += row.len();
                shard.done = row.len() < FETCH_PER_SHARD;
                for (id, score) in row {
                    // Scores are whole ms below 2^53, so the conversion is exact. An entry that
                    // is not an id is not a notification's, and is passed over.
                    let Ok(id) = NotificationId::new(id) else { continue };
                    let position = ListCursor { updated_ms: score as u64, id };
                    // The window ends at the cursor's millisecond; of that millisecond only the
                    // entries after the cursor's id are still to come.
                    if self
                        .query
                        .cursor
                        .as_ref()
                        .is_none_or(|c| c.precedes(position.updated_ms, &position.id))
                    {
                        shard.buffer.push_back(position);
                    }
                }
            }
        }
    }

    /// The next entry of the merged walk, once [`fill`](Self::fill) has run.
    fn take(&mut self) -> Option<ListCursor> {
        let newest = self
            .shards
            .iter_mut()
            .filter(|s| !s.buffer.is_empty())
            .max_by(|a, b| a.buffer.front().cmp(&b.buffer.front()))?;
        newest.buffer.pop_front()
    }

    /// Whether any entry is left, once [`fill`](Self::fill) has run.
    fn any(&self) -> bool {
        self.shards.iter().any(|s| !s.buffer.is_empty())
    }
}

impl RedisStore {
    /// [`Store::list`](workflows::ports::Store::list): the merged walk, loaded in pipelines.
    pub(super) async fn list_page(
        &self,
        tenant: &TenantId,
        query: &ListQuery,
    ) -> Result<ListPage, StoreError> {
        let mut walk = Walk::new(tenant, query);
        let mut pager = ListPager::new(query);
        let mut chunk = query.limit_capped().min(LOAD_CHUNK_MAX);
        loop {
            let mut positions = Vec::with_capacity(chunk);
            while positions.len() < chunk {
                walk.fill(self).await?;
                match walk.take() {
                    Some(position) => positions.push(position),
                    None => break,
                }
            }
            if positions.is_empty() {
                return Ok(pager.finish(false));
            }
            let ids: Vec<NotificationId> = positions.iter().map(|p| p.id.clone()).collect();
            let records = self.load_each(tenant, &ids).await?;
            let taken = positions.len();
            for (n, (position, record)) in positions.into_iter().zip(records).enumerate() {
                if !pager.offer(position, record) {
                    let more = n + 1 < taken || {
                        walk.fill(self).await?;
                        walk.any()
                    };
                    return Ok(pager.finish(more));
                }
            }
            chunk = (chunk * 2).min(LOAD_CHUNK_MAX);
        }
    }
}
