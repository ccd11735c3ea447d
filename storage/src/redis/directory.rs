//! The Redis recipients directory ([`Directory`]).
//!
//! One HASH per recipient (`keys::recipient`): `contact` and `prefs` (JSON), `rev` (bumped by
//! every write), `updated` (ms) and a `dev:<device id>` field per push device; and per directory
//! shard a ZSET of the tenant's recipient ids, every score 0, walked with `ZRANGEBYLEX` in id
//! order (`keys::recipient_index`). A recipient's hash and its index entry share a slot, so every
//! write is one script that updates both. A read is one `HGETALL`.
//!
//! There is no cache in front of it, on purpose: the lifecycle must see an opt-out on its next
//! decision, from whichever process wrote it, and a cache that checked a revision on every read
//! would cost the same round trip as the read it saved (ARCHITECTURE.md, "The recipients
//! directory").

use std::collections::BTreeMap;
use std::sync::LazyLock;

use redis::{Script, Value};
use steps::model::{RecipientId, TenantId};
use steps::preferences::Preferences;
use steps::recipient::{Contact, DEVICES_MAX, Device, DeviceId, Profile, RecipientEntry};
use workflows::ports::{DeviceAdded, Directory, RECIPIENT_PAGE_MAX, RecipientPage, StoreError};

use super::{RedisStore, codec, parse_i64, parse_pair};
use crate::keys::{self, SHARDS};

/// Sets one JSON field of the entry (`contact` or `prefs`), bumps the revision, indexes the id.
///
/// KEYS: entry, index. ARGV: field, json, now ms, recipient id.
/// Returns `{revision, 1 if the field is new else 0}`.
const PUT_FIELD: &str = r"
local entry, index = KEYS[1], KEYS[2]
local new = redis.call('HEXISTS', entry, ARGV[1]) == 0
redis.call('HSET', entry, ARGV[1], ARGV[2], 'updated', ARGV[3])
local rev = redis.call('HINCRBY', entry, 'rev', 1)
redis.call('ZADD', index, 0, ARGV[4])
if new then return {rev, 1} end
return {rev, 0}
";

/// Registers a device on an entry with a profile, at most a maximum.
///
/// KEYS: entry. ARGV: device id, device json, max devices, now ms.
/// Returns `{0}` no profile, `{1, revision}` added, `{2, revision}` already there, `{3}` full.
const ADD_DEVICE: &str = r"
local entry = KEYS[1]
if redis.call('HEXISTS', entry, 'contact') == 0 then return {0} end
local field = 'dev:' .. ARGV[1]
if redis.call('HEXISTS', entry, field) == 1 then
  return {2, tonumber(redis.call('HGET', entry, 'rev'))}
end
local n = 0
for _, name in ipairs(redis.call('HKEYS', entry)) do
  if string.sub(name, 1, 4) == 'dev:' then n = n + 1 end
end
if n >= tonumber(ARGV[3]) then return {3} end
redis.call('HSET', entry, field, ARGV[2], 'updated', ARGV[4])
return {1, redis.call('HINCRBY', entry, 'rev', 1)}
";

/// Removes a device.
///
/// KEYS: entry. ARGV: device id, now ms.
/// Returns `{0}` no such device, `{1, revision}` removed.
const REMOVE_DEVICE: &str = r"
local entry = KEYS[1]
if redis.call('HDEL', entry, 'dev:' .. ARGV[1]) == 0 then return {0} end
redis.call('HSET', entry, 'updated', ARGV[2])
return {1, redis.call('HINCRBY', entry, 'rev', 1)}
";

static PUT_FIELD_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(PUT_FIELD));
static ADD_DEVICE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(ADD_DEVICE));
static REMOVE_DEVICE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(REMOVE_DEVICE));

/// Decodes an entry's hash; `None` for an empty one (nothing stored).
fn decode(
    id: &RecipientId,
    fields: &BTreeMap<String, String>,
) -> Result<Option<RecipientEntry>, StoreError> {
    if fields.is_empty() {
        return Ok(None);
    }
    let number = |name: &str| -> Result<u64, StoreError> {
        let raw = fields.get(name).ok_or_else(|| {
            StoreError::Corrupt(format!("directory entry of {id} has no `{name}` field"))
        })?;
        raw.parse().map_err(|_| {
            StoreError::Corrupt(format!("directory entry of {id} has a bad `{name}`: {raw:?}"))
        })
    };
    let contact: Option<Contact> =
        fields.get("contact").map(|j| codec::from_json(j)).transpose()?;
    let preferences: Preferences =
        fields.get("prefs").map(|j| codec::from_json(j)).transpose()?.unwrap_or_default();
    let mut devices = fields
        .iter()
        .filter(|(name, _)| name.starts_with("dev:"))
        .map(|(_, json)| codec::from_json::<Device>(json))
        .collect::<Result<Vec<_>, _>>()?;
    devices.sort_by(|a, b| (a.added_at_ms, &a.id).cmp(&(b.added_at_ms, &b.id)));
    Ok(Some(RecipientEntry {
        id: id.clone(),
        profile: contact.map(|contact| Profile { contact, devices }),
        preferences,
        revision: number("rev")?,
        updated_at_ms: number("updated")?,
    }))
}

impl RedisStore {
    async fn put_field(
        &self,
        tenant: &TenantId,
        id: &RecipientId,
        field: &str,
        json: String,
        now_ms: u64,
    ) -> Result<(u64, bool), StoreError> {
        let shard = keys::recipient_shard(tenant, id);
        let mut conn = self.conn.clone();
        let reply: Value = PUT_FIELD_SCRIPT
            .key(keys::recipient(tenant, id))
            .key(keys::recipient_index(shard, tenant))
            .arg(field)
            .arg(json)
            .arg(now_ms)
            .arg(id.as_str())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error("directory put", &e))?;
        let corrupt = || self.corrupt("directory put");
        let Value::Array(items) = reply else { return Err(corrupt()) };
        let numbers: Vec<i64> = items.iter().filter_map(parse_i64).collect();
        match numbers.as_slice() {
            [rev, new] => Ok((u64::try_from(*rev).map_err(|_| corrupt())?, *new == 1)),
            _ => Err(corrupt()),
        }
    }
}

impl Directory for RedisStore {
    async fn recipient(
        &self,
        tenant: &TenantId,
        id: &RecipientId,
    ) -> Result<Option<RecipientEntry>, StoreError> {
        let mut conn = self.conn.clone();
        let fields: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(keys::recipient(tenant, id))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error("HGETALL", &e))?;
        decode(id, &fields)
    }

    async fn put_contact(
        &self,
        tenant: &TenantId,
        id: &RecipientId,
        contact: &Contact,
        now_ms: u64,
    ) -> Result<(u64, bool), StoreError> {
        self.put_field(tenant, id, "contact", codec::to_json(contact)?, now_ms).await
    }

    async fn put_preferences(
        &self,
        tenant: &TenantId,
        id: &RecipientId,
        preferences: &Preferences,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let (revision, _) =
            self.put_field(tenant, id, "prefs", codec::to_json(preferences)?, now_ms).await?;
        Ok(revision)
    }

    async fn add_device(
        &self,
        tenant: &TenantId,
        id: &RecipientId,
        device: &Device,
        now_ms: u64,
    ) -> Result<DeviceAdded, StoreError> {
        let mut conn = self.conn.clone();
        let reply: Value = ADD_DEVICE_SCRIPT
            .key(keys::recipient(tenant, id))
            .arg(device.id.as_str())
            .arg(codec::to_json(device)?)
            .arg(DEVICES_MAX)
            .arg(now_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error("add_device", &e))?;
        let corrupt = || self.corrupt("add_device");
        let (code, value) = parse_pair(reply).ok_or_else(corrupt)?;
        let revision = || {
            value
                .as_ref()
                .and_then(parse_i64)
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(corrupt)
        };
        match code {
            0 => Ok(DeviceAdded::NoProfile),
            1 => Ok(DeviceAdded::Added { revision: revision()? }),
            2 => Ok(DeviceAdded::Exists { revision: revision()? }),
            3 => Ok(DeviceAdded::Full),
            _ => Err(corrupt()),
        }
    }

    async fn remove_device(
        &self,
        tenant: &TenantId,
        id: &RecipientId,
        device: &DeviceId,
        now_ms: u64,
    ) -> Result<Option<u64>, StoreError> {
        let mut conn = self.conn.clone();
        let reply: Value = REMOVE_DEVICE_SCRIPT
            .key(keys::recipient(tenant, id))
            .arg(device.as_str())
            .arg(now_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error("remove_device", &e))?;
        let corrupt = || self.corrupt("remove_device");
        match parse_pair(reply).ok_or_else(corrupt)? {
            (0, _) => Ok(None),
            (1, Some(v)) => {
                parse_i64(&v).and_then(|n| u64::try_from(n).ok()).map(Some).ok_or_else(corrupt)
            }
            _ => Err(corrupt()),
        }
    }

    async fn recipients(
        &self,
        tenant: &TenantId,
        after: Option<&RecipientId>,
        limit: usize,
    ) -> Result<RecipientPage, StoreError> {
        let limit = limit.min(RECIPIENT_PAGE_MAX);
        if limit == 0 {
            return Ok(RecipientPage { entries: Vec::new(), next: None });
        }
        // One more than the page, from every shard: the merge then knows whether more follow.
        let min = after.map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        let mut pipe = redis::pipe();
        for shard in 0..SHARDS {
            pipe.cmd("ZRANGEBYLEX")
                .arg(keys::recipient_index(shard, tenant))
                .arg(&min)
                .arg("+")
                .arg("LIMIT")
                .arg(0)
                .arg(limit + 1);
        }
        let mut conn = self.conn.clone();
        let rows: Vec<Vec<String>> =
            pipe.query_async(&mut conn).await.map_err(|e| self.error("ZRANGEBYLEX", &e))?;
        // Ids compare bytewise in Redis and as `String`s here: the same order.
        let mut ids: Vec<RecipientId> =
            rows.into_iter().flatten().filter_map(|id| RecipientId::new(id).ok()).collect();
        ids.sort();
        let more = ids.len() > limit;
        ids.truncate(limit);
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGETALL").arg(keys::recipient(tenant, id));
        }
        let rows: Vec<BTreeMap<String, String>> = if ids.is_empty() {
            Vec::new()
        } else {
            pipe.query_async(&mut conn).await.map_err(|e| self.error("HGETALL", &e))?
        };
        let mut entries = Vec::with_capacity(ids.len());
        for (id, fields) in ids.iter().zip(&rows) {
            // An index entry always has its hash (one script writes both); skip one that does
            // not rather than fail the whole page.
            if let Some(entry) = decode(id, fields)? {
                entries.push(entry);
            }
        }
        let next = if more { ids.last().cloned() } else { None };
        Ok(RecipientPage { entries, next })
    }
}
