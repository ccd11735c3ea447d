//! Collapse groups on Redis: a recipient's groups, their open pointer and memberships under the
//! recipient's hash tag (`{r:<tenant>:<recipient>}`), so joining and closing are one script each,
//! exactly as `steps::collapse::join` and `close`. What a survivor's group merged is kept in its
//! record (field `merged`), so a purge takes it along.

use std::sync::LazyLock;

use redis::{Script, Value};
use steps::collapse::{COLLAPSE_ITEMS_MAX, COLLAPSE_KEEP_MS, Joined, Merged, MergedItem};
use steps::model::{NotificationId, TenantId};
use workflows::ports::{Collapse, CollapseGroup, StoreError};

use super::{RedisStore, codec, parse_i64, parse_string};
use crate::keys;

/// Joins a member to the open group, or opens one; see `steps::collapse::join`.
///
/// KEYS: the open pointer, the member's membership, the member's own group.
/// ARGV: member id, member item (JSON), now ms, window ms, keep ms, most items, the recipient's
/// groups prefix.
///
/// Returns `{1, survivor}` merged, `{2, until ms}` wait, `{3, item...}` closed.
const JOIN: &str = r"
local member, item = ARGV[1], ARGV[2]
local now, window, keep, max = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]),
  tonumber(ARGV[6])
local survivor = redis.call('GET', KEYS[2])
if survivor then
  if survivor ~= member then return {1, survivor} end
  local g = redis.call('HMGET', KEYS[3], 'closes', 'closed', 'n')
  if not g[1] then return {3, item} end
  if g[2] ~= '1' then return {2, tonumber(g[1])} end
  local out = {3}
  for i = 1, tonumber(g[3]) do out[#out + 1] = redis.call('HGET', KEYS[3], 'i:' .. i) end
  return out
end
local open = redis.call('GET', KEYS[1])
if open then
  local group = ARGV[7] .. open
  local g = redis.call('HMGET', group, 'closes', 'closed', 'n')
  if g[1] and g[2] ~= '1' and tonumber(g[3]) < max and now < tonumber(g[1]) then
    local n = tonumber(g[3]) + 1
    redis.call('HSET', group, 'n', n, 'i:' .. n, item)
    redis.call('SET', KEYS[2], open, 'PX', keep)
    return {1, open}
  end
end
local closes = now + window
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'closes', closes, 'closed', '0', 'n', 1, 'i:1', item)
redis.call('PEXPIRE', KEYS[3], window + keep)
redis.call('SET', KEYS[1], member, 'PX', window)
redis.call('SET', KEYS[2], member, 'PX', window + keep)
return {2, closes}
";

/// Closes a survivor's group; see `steps::collapse::close`.
///
/// KEYS: the open pointer, the survivor's group. ARGV: survivor id.
///
/// Returns `{0}` gone, `{1, item...}` closed.
const CLOSE: &str = r"
local n = redis.call('HGET', KEYS[2], 'n')
if not n then return {0} end
redis.call('HSET', KEYS[2], 'closed', '1')
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
local out = {1}
for i = 1, tonumber(n) do out[#out + 1] = redis.call('HGET', KEYS[2], 'i:' .. i) end
return out
";

/// Keeps a survivor's merged items with its record, once.
///
/// KEYS: the record. ARGV: the merged items (JSON).
const KEEP: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSETNX', KEYS[1], 'merged', ARGV[1]) end
return 1
";

static JOIN_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(JOIN));
static CLOSE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(CLOSE));
static KEEP_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(KEEP));

impl RedisStore {
    /// A script's `{code, value...}` reply.
    fn code_and_rest(&self, reply: Value, what: &str) -> Result<(i64, Vec<Value>), StoreError> {
        let Value::Array(mut items) = reply else { return Err(self.corrupt(what)) };
        if items.is_empty() {
            return Err(self.corrupt(what));
        }
        let code = parse_i64(&items.remove(0)).ok_or_else(|| self.corrupt(what))?;
        Ok((code, items))
    }

    fn merged_items(&self, values: Vec<Value>, what: &str) -> Result<Merged, StoreError> {
        let items = values
            .into_iter()
            .map(|v| {
                let json = parse_string(v).ok_or_else(|| self.corrupt(what))?;
                codec::from_json::<MergedItem>(&json)
            })
            .collect::<Result<_, _>>()?;
        Ok(Merged { items })
    }
}

impl Collapse for RedisStore {
    async fn collapse_join(
        &self,
        group: &CollapseGroup,
        member: &NotificationId,
        data: &serde_json::Map<String, serde_json::Value>,
        window_ms: u64,
        now_ms: u64,
    ) -> Result<Joined, StoreError> {
        let item = MergedItem { id: member.clone(), data: data.clone() };
        let own_group =
            format!("{}{member}", keys::collapse_groups_prefix(&group.tenant, &group.recipient));
        let mut conn = self.conn.clone();
        let reply: Value = JOIN_SCRIPT
            .key(keys::collapse_open(group))
            .key(keys::collapse_member(&group.tenant, &group.recipient, member))
            .key(own_group)
            .arg(member.as_str())
            .arg(codec::to_json(&item)?)
            .arg(now_ms)
            .arg(window_ms.max(1))
            .arg(COLLAPSE_KEEP_MS)
            .arg(COLLAPSE_ITEMS_MAX)
            .arg(keys::collapse_groups_prefix(&group.tenant, &group.recipient))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error("collapse_join", &e))?;
        let (code, mut rest) = self.code_and_rest(reply, "collapse_join")?;
        match code {
            1 if rest.len() == 1 => {
                let into =
                    parse_string(rest.remove(0)).ok_or_else(|| self.corrupt("collapse_join"))?;
                let into = NotificationId::new(into).map_err(|e| {
                    StoreError::Corrupt(format!("a collapse group names a bad id: {e}"))
                })?;
                Ok(Joined::Merged { into })
            }
            2 if rest.len() == 1 => {
                let until_ms = parse_i64(&rest[0])
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or_else(|| self.corrupt("collapse_join"))?;
                Ok(Joined::Wait { until_ms })
            }
            3 => Ok(Joined::Closed { merged: self.merged_items(rest, "collapse_join")? }),
            _ => Err(self.corrupt("collapse_join")),
        }
    }

    async fn collapse_close(
        &self,
        group: &CollapseGroup,
        survivor: &NotificationId,
        _now_ms: u64,
    ) -> Result<Option<Merged>, StoreError> {
        let own_group =
            format!("{}{survivor}", keys::collapse_groups_prefix(&group.tenant, &group.recipient));
        let mut conn = self.conn.clone();
        let reply: Value = CLOSE_SCRIPT
            .key(keys::collapse_open(group))
            .key(own_group)
            .arg(survivor.as_str())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error("collapse_close", &e))?;
        match self.code_and_rest(reply, "collapse_close")? {
            (0, _) => Ok(None),
            (1, rest) => Ok(Some(self.merged_items(rest, "collapse_close")?)),
            _ => Err(self.corrupt("collapse_close")),
        }
    }

    async fn collapse_member(
        &self,
        group: &CollapseGroup,
        member: &NotificationId,
        _now_ms: u64,
    ) -> Result<Option<NotificationId>, StoreError> {
        // The membership key expires when the membership is forgotten (`PX`), as the reference's
        // keep time says.
        let mut conn = self.conn.clone();
        let survivor: Option<String> = redis::cmd("GET")
            .arg(keys::collapse_member(&group.tenant, &group.recipient, member))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error("collapse_member", &e))?;
        survivor
            .map(|s| NotificationId::new(s).map_err(|_| self.corrupt("collapse_member")))
            .transpose()
    }

    async fn keep_merged(
        &self,
        tenant: &TenantId,
        id: &NotificationId,
        merged: &Merged,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: Value = KEEP_SCRIPT
            .key(keys::record(tenant, id))
            .arg(codec::to_json(merged)?)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error("keep_merged", &e))?;
        Ok(())
    }

    async fn merged(
        &self,
        tenant: &TenantId,
        id: &NotificationId,
    ) -> Result<Option<Merged>, StoreError> {
        let mut conn = self.conn.clone();
        let json: Option<String> = redis::cmd("HGET")
            .arg(keys::record(tenant, id))
            .arg("merged")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error("HGET", &e))?;
        json.map(|j| codec::from_json(&j)).transpose()
    }
}
