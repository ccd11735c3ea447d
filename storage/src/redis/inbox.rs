//! The Redis in-app inbox: [`Inbox`], [`InboxState`] and [`InboxFeed`] for [`RedisStore`].
//!
//! A recipient's inbox is eight keys under one hash tag ([`keys::inbox`]); every operation is one
//! script taking all eight, so each is atomic: an append and a mark-all-read never interleave,
//! and the unread set (whose `ZCARD` is the count) changes in the same step as the entries. The
//! append script also publishes the new entry on the tenant's channel, so a subscriber sees
//! exactly the entries that were stored, in sequence order per recipient.
//!
//! The feed is a pub/sub connection of its own (a subscribed connection can do nothing else),
//! subscribed to every tenant's channel by pattern. Pub/sub is fire-and-forget: a subscriber that
//! was disconnected misses what was published meanwhile, which is why the feed ends on any
//! connection error and the API's fan-out then closes its streams, whose clients resume from
//! their last sequence number (read back from the store, which missed nothing).

use std::sync::LazyLock;

use futures::stream::BoxStream;
use redis::Script;
use steps::model::{NotificationId, RecipientId, TenantId};
use workflows::inbox::{
    INBOX_PAGE_MAX, InboxCounts, InboxEntry, InboxEvent, InboxFeed, InboxPage, InboxState,
    InboxStatus, Marked,
};
use workflows::ports::{INBOX_LEN_MAX, Inbox, InboxItem, StoreError};

use super::RedisStore;
use super::codec::{from_json, to_json};
use crate::keys::inbox::{INBOX_EVENTS_PATTERN, InboxKeys, inbox_events};

/// Appends an entry once per notification: the next sequence number, into every set, trimming
/// the oldest entries beyond the cap, then publishes it.
///
/// KEYS: the inbox ([`InboxKeys`]). ARGV: notification id, item json, cap, channel,
/// `tenant\nrecipient`.
///
/// Returns `{seq, unread}` appended, `{0, 0}` already there.
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HSETNX', KEYS[6], ARGV[1], ARGV[2]) == 0 then return {0, 0} end
local seq = redis.call('INCR', KEYS[1])
redis.call('ZADD', KEYS[2], seq, ARGV[1])
redis.call('ZADD', KEYS[3], seq, ARGV[1])
redis.call('ZADD', KEYS[4], seq, ARGV[1])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if over > 0 then
  for _, old in ipairs(redis.call('ZRANGE', KEYS[2], 0, over - 1)) do
    for k = 2, 5 do redis.call('ZREM', KEYS[k], old) end
    for k = 6, 8 do redis.call('HDEL', KEYS[k], old) end
  end
end
local unread = redis.call('ZCARD', KEYS[4])
redis.call('PUBLISH', ARGV[4], seq .. '\n' .. unread .. '\n' .. ARGV[5] .. '\n' .. ARGV[2])
return {seq, unread}
",
    )
});

/// Reads entries of one set with their state: newest first below a bound (`rev`), or oldest
/// first above one (`fwd`).
///
/// KEYS: the inbox. ARGV: `rev` or `fwd`, the set's key index (2 to 5), the bound (a score,
/// `(n` exclusive or `+inf`), limit.
///
/// Returns `{seq, item json, read ms, archived ms}` per entry (nil where unset).
static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local key = KEYS[tonumber(ARGV[2])]
local rows
if ARGV[1] == 'rev' then
  rows = redis.call('ZREVRANGEBYSCORE', key, ARGV[3], '-inf', 'WITHSCORES', 'LIMIT', 0, ARGV[4])
else
  rows = redis.call('ZRANGEBYSCORE', key, ARGV[3], '+inf', 'WITHSCORES', 'LIMIT', 0, ARGV[4])
end
local n = #rows / 2
if n == 0 then return {} end
local ids = {}
for i = 1, n do ids[i] = rows[2 * i - 1] end
local items = redis.call('HMGET', KEYS[6], unpack(ids))
local read = redis.call('HMGET', KEYS[7], unpack(ids))
local archived = redis.call('HMGET', KEYS[8], unpack(ids))
local out = {}
for i = 1, n do out[i] = {rows[2 * i], items[i], read[i], archived[i]} end
return out
",
    )
});

/// The unread count and the newest sequence number.
///
/// KEYS: the inbox. Returns `{unread, last seq}`.
static COUNTS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
return {redis.call('ZCARD', KEYS[4]), tonumber(redis.call('GET', KEYS[1]) or '0')}
",
    )
});

/// Marks one entry read, keeping an earlier read time.
///
/// KEYS: the inbox. ARGV: notification id, now ms. Returns the unread count, -1 no such entry.
static MARK_READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return -1 end
if redis.call('HSETNX', KEYS[7], ARGV[1], ARGV[2]) == 1 then
  redis.call('ZREM', KEYS[4], ARGV[1])
end
return redis.call('ZCARD', KEYS[4])
",
    )
});

/// Marks every unread entry read (at most the inbox cap of them).
///
/// KEYS: the inbox. ARGV: now ms. Returns how many were marked.
static MARK_ALL_READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local ids = redis.call('ZRANGE', KEYS[4], 0, -1)
for _, id in ipairs(ids) do redis.call('HSETNX', KEYS[7], id, ARGV[1]) end
redis.call('DEL', KEYS[4])
return #ids
",
    )
});

/// Archives one entry, keeping an earlier archive time.
///
/// KEYS: the inbox. ARGV: notification id, now ms. Returns the unread count, -1 no such entry.
static ARCHIVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local seq = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not seq then return -1 end
if redis.call('HSETNX', KEYS[8], ARGV[1], ARGV[2]) == 1 then
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[1])
  redis.call('ZADD', KEYS[5], seq, ARGV[1])
end
return redis.call('ZCARD', KEYS[4])
",
    )
});

/// Takes one entry out of the archive: unread again unless it was read.
///
/// KEYS: the inbox. ARGV: notification id. Returns the unread count, -1 no such entry.
static UNARCHIVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local seq = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not seq then return -1 end
if redis.call('HDEL', KEYS[8], ARGV[1]) == 1 then
  redis.call('ZREM', KEYS[5], ARGV[1])
  redis.call('ZADD', KEYS[3], seq, ARGV[1])
  if redis.call('HEXISTS', KEYS[7], ARGV[1]) == 0 then
    redis.call('ZADD', KEYS[4], seq, ARGV[1])
  end
end
return redis.call('ZCARD', KEYS[4])
",
    )
});

/// One row of [`READ`].
type Row = (String, Option<String>, Option<String>, Option<String>);

fn number(raw: &str, what: &str) -> Result<u64, StoreError> {
    raw.parse().map_err(|_| StoreError::Corrupt(format!("inbox {what} is not a number: {raw:?}")))
}

/// An entry from a row; `None` for an id whose content is missing (cannot happen while the
/// scripts keep the keys in step, and is skipped rather than failing the whole page).
fn entry(row: Row) -> Result<Option<InboxEntry>, StoreError> {
    let (seq, item, read, archived) = row;
    let Some(item) = item else { return Ok(None) };
    let mut item: InboxItem = from_json(&item)?;
    let read_at_ms = read.map(|r| number(&r, "read time")).transpose()?;
    item.read = read_at_ms.is_some();
    Ok(Some(InboxEntry {
        seq: number(&seq, "sequence")?,
        item,
        read_at_ms,
        archived_at_ms: archived.map(|a| number(&a, "archive time")).transpose()?,
    }))
}

/// The key index (in [`InboxKeys`]) of the set a status lists.
fn set_of(status: InboxStatus) -> usize {
    match status {
        InboxStatus::All => 3,
        InboxStatus::Unread => 4,
        InboxStatus::Archived => 5,
    }
}

fn marked(found: i64) -> Marked {
    u64::try_from(found).map_or(Marked::NotFound, |unread| Marked::Done { unread })
}

/// A published event: `seq\nunread\ntenant\nrecipient\nitem json`.
fn event(payload: &str) -> Result<InboxEvent, StoreError> {
    let bad = || StoreError::Corrupt("malformed inbox event".into());
    let mut parts = payload.splitn(5, '\n');
    let mut next = || parts.next().ok_or_else(bad);
    let seq = number(next()?, "sequence")?;
    let unread = number(next()?, "unread count")?;
    let tenant = TenantId::new(next()?).map_err(|_| bad())?;
    let recipient = RecipientId::new(next()?).map_err(|_| bad())?;
    let mut item: InboxItem = from_json(next()?)?;
    item.read = false;
    let entry = InboxEntry { seq, item, read_at_ms: None, archived_at_ms: None };
    Ok(InboxEvent { tenant, recipient, entry, unread })
}

impl RedisStore {
    async fn read_rows(
        &self,
        keys: &InboxKeys,
        args: (&str, usize, String, usize),
    ) -> Result<Vec<InboxEntry>, StoreError> {
        let mut conn = self.conn.clone();
        let rows: Vec<Row> = READ
            .key(&keys.0[..])
            .arg(args.0)
            .arg(args.1)
            .arg(args.2)
            .arg(args.3)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error("inbox read", &e))?;
        Ok(rows
            .into_iter()
            .map(entry)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect())
    }

    async fn change(
        &self,
        script: &Script,
        what: &str,
        keys: &InboxKeys,
        id: &NotificationId,
        now_ms: Option<u64>,
    ) -> Result<Marked, StoreError> {
        let mut conn = self.conn.clone();
        let mut invocation = script.key(&keys.0[..]);
        invocation.arg(id.as_str());
        if let Some(now_ms) = now_ms {
            invocation.arg(now_ms);
        }
        let found: i64 =
            invocation.invoke_async(&mut conn).await.map_err(|e| self.error(what, &e))?;
        Ok(marked(found))
    }
}

impl Inbox for RedisStore {
    async fn inbox_append(
        &self,
        tenant: &TenantId,
        recipient: &RecipientId,
        item: &InboxItem,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let mut item = item.clone();
        item.read = false;
        let _: (u64, u64) = APPEND
            .key(&InboxKeys::new(tenant, recipient).0[..])
            .arg(item.notification_id.as_str())
            .arg(to_json(&item)?)
            .arg(INBOX_LEN_MAX)
            .arg(inbox_events(tenant))
            .arg(format!("{tenant}\n{recipient}"))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error("inbox_append", &e))?;
        Ok(())
    }

    async fn inbox_list(
        &self,
        tenant: &TenantId,
        recipient: &RecipientId,
        limit: usize,
    ) -> Result<Vec<InboxItem>, StoreError> {
        let limit = limit.min(INBOX_LEN_MAX);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let keys = InboxKeys::new(tenant, recipient);
        let entries = self.read_rows(&keys, ("rev", 2, "+inf".into(), limit)).await?;
        Ok(entries.into_iter().map(|e| e.item).collect())
    }
}

impl InboxState for RedisStore {
    async fn inbox_page(
        &self,
        tenant: &TenantId,
        recipient: &RecipientId,
        status: InboxStatus,
        before: Option<u64>,
        limit: usize,
    ) -> Result<InboxPage, StoreError> {
        let limit = limit.min(INBOX_PAGE_MAX);
        if limit == 0 {
            return Ok(InboxPage { entries: Vec::new(), next: None });
        }
        let keys = InboxKeys::new(tenant, recipient);
        let bound = before.map_or_else(|| "+inf".to_owned(), |b| format!("({b}"));
        // One more than asked says whether there is a next page.
        let mut entries = self.read_rows(&keys, ("rev", set_of(status), bound, limit + 1)).await?;
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next = if more { entries.last().map(|e| e.seq) } else { None };
        Ok(InboxPage { entries, next })
    }

    async fn inbox_since(
        &self,
        tenant: &TenantId,
        recipient: &RecipientId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<InboxEntry>, StoreError> {
        let limit = limit.min(INBOX_PAGE_MAX);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let keys = InboxKeys::new(tenant, recipient);
        self.read_rows(&keys, ("fwd", set_of(InboxStatus::All), format!("({after}"), limit)).await
    }

    async fn inbox_counts(
        &self,
        tenant: &TenantId,
        recipient: &RecipientId,
    ) -> Result<InboxCounts, StoreError> {
        let mut conn = self.conn.clone();
        let (unread, last_seq): (u64, u64) = COUNTS
            .key(&InboxKeys::new(tenant, recipient).0[..])
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error("inbox_counts", &e))?;
        Ok(InboxCounts { unread, last_seq })
    }

    async fn inbox_mark_read(
        &self,
        tenant: &TenantId,
        recipient: &RecipientId,
        id: &NotificationId,
        now_ms: u64,
    ) -> Result<Marked, StoreError> {
        let keys = InboxKeys::new(tenant, recipient);
        self.change(&MARK_READ, "inbox_mark_read", &keys, id, Some(now_ms)).await
    }

    async fn inbox_mark_all_read(
        &self,
        tenant: &TenantId,
        recipient: &RecipientId,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        MARK_ALL_READ
            .key(&InboxKeys::new(tenant, recipient).0[..])
            .arg(now_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error("inbox_mark_all_read", &e))
    }

    async fn inbox_archive(
        &self,
        tenant: &TenantId,
        recipient: &RecipientId,
        id: &NotificationId,
        now_ms: u64,
    ) -> Result<Marked, StoreError> {
        let keys = InboxKeys::new(tenant, recipient);
        self.change(&ARCHIVE, "inbox_archive", &keys, id, Some(now_ms)).await
    }

    async fn inbox_unarchive(
        &self,
        tenant: &TenantId,
        recipient: &RecipientId,
        id: &NotificationId,
    ) -> Result<Marked, StoreError> {
        let keys = InboxKeys::new(tenant, recipient);
        self.change(&UNARCHIVE, "inbox_unarchive", &keys, id, None).await
    }
}

impl InboxFeed for RedisStore {
    async fn inbox_feed(&self) -> Result<BoxStream<'static, InboxEvent>, StoreError> {
        self.pubsub_feed(INBOX_EVENTS_PATTERN, "inbox event", event).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_decode() {
        let item = r#"{"notification_id":"n0aX","title":"t","body":"b","category":"news","at_ms":5,"read":false}"#;
        let decoded = event(&format!("7\n3\nacme\nbob\n{item}")).expect("decoded");
        assert_eq!((decoded.entry.seq, decoded.unread), (7, 3));
        assert_eq!((decoded.tenant.as_str(), decoded.recipient.as_str()), ("acme", "bob"));
        assert_eq!(decoded.entry.item.title, "t");
        assert!(event("7\n3\nacme").is_err());
        assert!(event("x\n3\nacme\nbob\n{}").is_err());
    }
}
