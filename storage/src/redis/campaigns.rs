//! Campaigns on Redis: every write one script in the campaign's slot (`keys::campaigns`); the
//! counters and open sets are written by the record scripts (`scripts.rs`) in the slot of each
//! notification, and summed over the shards here.
//!
//! Finding work: each shard has a due index of campaigns with work, scored by when their next
//! page may be claimed. A claim peeks at all sixteen in one pipeline and runs the claim script
//! only on shards with something due; the script leases the page and moves the campaign's score
//! to the lease's end, so a dead worker's page is due again then.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use redis::{Script, Value};
use steps::model::{NotificationId, RecipientId, TenantId};
use workflows::campaign::{
    Advance, Appended, Campaign, CampaignCreated, CampaignId, CampaignState, Counts,
    LIST_LIMIT_MAX, Moved, OpenPage, PageClaim, PageDone, RECIPIENTS_MAX,
};
use workflows::ports::{Campaigns, StoreError};
use workflows::record::{Created, HistoryEntry, Idempotency, Record};

use super::{Once, RedisStore, codec, parse_i64, parse_pair, parse_string};
use crate::keys::campaigns as keys;
use crate::keys::{self as all_keys, SHARDS, tenants_prefix};
use crate::memory::IDEMPOTENCY_TTL_MS;

/// Creates a campaign with the first page of its segment, indexes it, makes it due when it is
/// expanding, honouring an idempotency key. Ids are pushed 1,000 per `RPUSH`: Lua's `unpack`
/// stops at about 8,000 values.
///
/// KEYS: campaign, members, index, due, [create idempotency key].
/// ARGV: tenant, id, spec json, state, created ms, started ms or '', index member, due member,
/// idempotency value (`cid\nfingerprint`), idempotency ttl ms, recipient ids...
///
/// Returns `{0}` created, `{1, "cid\nfingerprint"}` the key was used before, `{2}` the id exists.
const CREATE: &str = r"
local h, members, index, due, idem = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if idem then
  local prior = redis.call('GET', idem)
  if prior then return {1, prior} end
end
if redis.call('EXISTS', h) == 1 then return {2} end
local first = 11
local n = #ARGV - first + 1
redis.call('HSET', h, 'tenant', ARGV[1], 'id', ARGV[2], 'spec', ARGV[3], 'state', ARGV[4],
  'recipients', n, 'position', 0, 'cursor', '', 'rejected', 0, 'created', ARGV[5],
  'updated', ARGV[5])
if ARGV[6] ~= '' then redis.call('HSET', h, 'started', ARGV[6]) end
for i = first, #ARGV, 1000 do
  redis.call('RPUSH', members, unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('ZADD', index, 0, ARGV[7])
if ARGV[4] == 'expanding' then redis.call('ZADD', due, ARGV[5], ARGV[8]) end
if idem then redis.call('SET', idem, ARGV[9], 'PX', ARGV[10]) end
return {0}
";

/// Appends recipients to a draft's segment, honouring an idempotency key.
///
/// KEYS: campaign, members, [append idempotency key].
/// ARGV: now ms, most recipients, fingerprint, idempotency ttl ms, recipient ids...
///
/// Returns `{0}` not found, `{1, total}` appended, `{2, state}` not a draft,
/// `{3, "fingerprint\ntotal"}` the key was used before, `{4, total}` too many.
const APPEND: &str = r"
local h, members, idem = KEYS[1], KEYS[2], KEYS[3]
local state = redis.call('HGET', h, 'state')
if not state then return {0} end
if idem then
  local prior = redis.call('GET', idem)
  if prior then return {3, prior} end
end
if state ~= 'draft' then return {2, state} end
local have = tonumber(redis.call('HGET', h, 'recipients'))
local first = 5
local n = #ARGV - first + 1
if have + n > tonumber(ARGV[2]) then return {4, have} end
for i = first, #ARGV, 1000 do
  redis.call('RPUSH', members, unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
local total = have + n
redis.call('HSET', h, 'recipients', total, 'updated', ARGV[1])
if idem then redis.call('SET', idem, ARGV[3] .. '\n' .. total, 'PX', ARGV[4]) end
return {1, total}
";

/// Starts a draft: `expanding`, due at once.
///
/// KEYS: campaign, due. ARGV: now ms, due member.
///
/// Returns `{0}` not found, `{1, state}` now in state, `{2, state}` refused.
const START: &str = r"
local h, due = KEYS[1], KEYS[2]
local state = redis.call('HGET', h, 'state')
if not state then return {0} end
if state == 'draft' then
  redis.call('HSET', h, 'state', 'expanding', 'started', ARGV[1], 'updated', ARGV[1])
  redis.call('ZADD', due, ARGV[1], ARGV[2])
  return {1, 'expanding'}
end
if state == 'expanding' then return {1, state} end
return {2, state}
";

/// Cancels: a draft is cancelled; an expanding or expanded campaign is cancelling, its sweep due
/// when the page a worker may hold is released (its advance makes it due at once) or its lease
/// ends.
///
/// KEYS: campaign, due. ARGV: now ms, due member.
///
/// Returns `{0}` not found, `{1, state}` its state now.
const CANCEL: &str = r"
local h, due = KEYS[1], KEYS[2]
local state = redis.call('HGET', h, 'state')
if not state then return {0} end
local now = ARGV[1]
if state == 'draft' then
  state = 'cancelled'
  redis.call('HSET', h, 'state', state, 'cancelled', now, 'finished', now, 'updated', now)
elseif state == 'expanding' or state == 'expanded' then
  state = 'cancelling'
  redis.call('HSET', h, 'state', state, 'cursor', '', 'cancelled', now, 'updated', now)
  local at = tonumber(now)
  local lease_until = tonumber(redis.call('HGET', h, 'lease_until') or '0')
  if redis.call('HEXISTS', h, 'lease') == 1 and lease_until > at then at = lease_until end
  redis.call('ZADD', due, at, ARGV[2])
end
return {1, state}
";

/// Claims due pages of one shard, at most `n`: a campaign with work is leased (token, end) and
/// scored at the lease's end; an entry of a campaign without work is dropped.
///
/// KEYS: due. ARGV: now ms, lease end ms, token prefix, n, the shard's tenants prefix.
///
/// Returns `{{token, campaign fields...}...}`.
const CLAIM: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for i, member in ipairs(due) do
  local tenant, id = string.match(member, '^([%w%._%-]+)/([%w%._%-]+)$')
  local state = false
  local h = nil
  if tenant then
    h = ARGV[5] .. tenant .. ':c:' .. id
    state = redis.call('HGET', h, 'state')
  end
  if state == 'expanding' or state == 'cancelling' then
    local token = ARGV[3] .. '-' .. i
    redis.call('HSET', h, 'lease', token, 'lease_until', ARGV[2])
    redis.call('ZADD', KEYS[1], ARGV[2], member)
    out[#out + 1] = {token, redis.call('HGETALL', h)}
  else
    redis.call('ZREM', KEYS[1], member)
  end
end
return out
";

/// Records a claimed page if the lease is still the caller's (compare-and-set on the token).
///
/// KEYS: campaign, due. ARGV: token, phase (the state claimed in), position, cursor, rejected,
/// '1' when done, next page ms, now ms, due member, recipients matched.
///
/// Returns 1 recorded, 2 cancelled meanwhile (sweep due now), 0 lease lost.
const ADVANCE: &str = r"
local h, due = KEYS[1], KEYS[2]
if redis.call('HGET', h, 'lease') ~= ARGV[1] then return 0 end
redis.call('HDEL', h, 'lease', 'lease_until')
local state = redis.call('HGET', h, 'state')
local phase = ARGV[2]
if state ~= phase then
  if state == 'cancelling' then
    redis.call('ZADD', due, ARGV[8], ARGV[9])
    return 2
  end
  return 0
end
redis.call('HSET', h, 'updated', ARGV[8])
if phase == 'expanding' then
  redis.call('HSET', h, 'position', ARGV[3], 'cursor', ARGV[4])
  redis.call('HINCRBY', h, 'rejected', ARGV[5])
  redis.call('HINCRBY', h, 'recipients', ARGV[10])
else
  redis.call('HSET', h, 'cursor', ARGV[4])
end
if ARGV[6] == '1' then
  if phase == 'expanding' then state = 'expanded' else state = 'cancelled' end
  redis.call('HSET', h, 'state', state, 'finished', ARGV[8])
  redis.call('ZREM', due, ARGV[9])
else
  redis.call('ZADD', due, ARGV[7], ARGV[9])
end
return 1
";

static CREATE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(CREATE));
static APPEND_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(APPEND));
static START_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(START));
static CANCEL_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(CANCEL));
static CLAIM_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(CLAIM));
static ADVANCE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(ADVANCE));

/// A lease token prefix unique to this process and call.
fn token_prefix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static NONCE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let nonce = NONCE.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        all_keys::fnv1a(format!("campaign-{}-{nanos}", std::process::id()).as_bytes())
    });
    format!("{nonce:016x}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("stored campaign is malformed: {what}"))
}

/// Decodes a campaign from its hash fields; `None` for an empty hash.
fn decode(fields: &BTreeMap<String, String>) -> Result<Option<Campaign>, StoreError> {
    if fields.is_empty() {
        return Ok(None);
    }
    let text = |name: &str| fields.get(name).map(String::as_str).ok_or_else(|| corrupt(name));
    let number = |name: &str| text(name)?.parse::<u64>().map_err(|_| corrupt(name));
    let optional = |name: &str| match fields.get(name).map(String::as_str) {
        None | Some("") => Ok(None),
        Some(raw) => raw.parse::<u64>().map(Some).map_err(|_| corrupt(name)),
    };
    Ok(Some(Campaign {
        tenant: TenantId::new(text("tenant")?).map_err(|_| corrupt("tenant"))?,
        id: CampaignId::new(text("id")?).map_err(|_| corrupt("id"))?,
        spec: codec::from_json(text("spec")?)?,
        state: CampaignState::parse(text("state")?).ok_or_else(|| corrupt("state"))?,
        recipients: number("recipients")?,
        position: number("position")?,
        cursor: text("cursor")?.to_owned(),
        rejected: number("rejected")?,
        created_at_ms: number("created")?,
        updated_at_ms: number("updated")?,
        started_at_ms: optional("started")?,
        finished_at_ms: optional("finished")?,
        cancelled_at_ms: optional("cancelled")?,
    }))
}

/// A flat `field, value, ...` array (HGETALL inside a script) as a map.
fn flat_map(value: Value) -> Option<BTreeMap<String, String>> {
    let Value::Array(items) = value else { return None };
    let mut map = BTreeMap::new();
    let mut it = items.into_iter();
    while let Some(field) = it.next() {
        map.insert(parse_string(field)?, parse_string(it.next()?)?);
    }
    Some(map)
}

fn moved(reply: Value, store: &RedisStore, what: &str) -> Result<Moved, StoreError> {
    let (code, value) = parse_pair(reply).ok_or_else(|| store.corrupt(what))?;
    let state = || {
        value
            .clone()
            .and_then(parse_string)
            .and_then(|s| CampaignState::parse(&s))
            .ok_or_else(|| store.corrupt(what))
    };
    match code {
        0 => Ok(Moved::NotFound),
        1 => Ok(Moved::To { state: state()? }),
        2 => Ok(Moved::Refused { state: state()? }),
        _ => Err(store.corrupt(what)),
    }
}

impl RedisStore {
    /// Runs a start or cancel script: both move one campaign and its due entry, and answer
    /// with the state it is in after.
    async fn move_campaign(
        &self,
        script: &Script,
        what: &str,
        tenant: &TenantId,
        id: &CampaignId,
        now_ms: u64,
    ) -> Result<Moved, StoreError> {
        let mut conn = self.conn.clone();
        let reply: Value = script
            .key(keys::campaign(tenant, id))
            .key(keys::due(keys::campaign_shard(id)))
            .arg(now_ms)
            .arg(keys::due_member(tenant, id))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error(what, &e))?;
        moved(reply, self, what)
    }
}

/// Parses an open-set cursor, `shard:scan cursor` (empty: the start).
fn parse_open_cursor(cursor: &str) -> (u16, String) {
    cursor
        .split_once(':')
        .and_then(|(shard, scan)| Some((shard.parse().ok()?, scan.to_owned())))
        .filter(|(shard, _)| *shard < SHARDS)
        .unwrap_or((0, "0".to_owned()))
}

impl Campaigns for RedisStore {
    async fn campaign_create(
        &self,
        campaign: &Campaign,
        recipients: &[RecipientId],
        idempotency: Option<&Idempotency>,
    ) -> Result<CampaignCreated, StoreError> {
        let (tenant, id) = (&campaign.tenant, &campaign.id);
        let shard = keys::campaign_shard(id);
        if let Some(idem) = idempotency
            && all_keys::idempotency_shard(tenant, &idem.key) != shard
        {
            return Err(StoreError::Corrupt(format!(
                "campaign id {id} is not in the shard of its idempotency key; mint ids with \
                 storage::keys::campaigns::new_campaign_id"
            )));
        }
        let mut invocation = CREATE_SCRIPT.prepare_invoke();
        invocation
            .key(keys::campaign(tenant, id))
            .key(keys::members(tenant, id))
            .key(keys::index(shard, tenant))
            .key(keys::due(shard));
        if let Some(idem) = idempotency {
            invocation.key(keys::create_idempotency(tenant, &idem.key));
        }
        invocation
            .arg(tenant.as_str())
            .arg(id.as_str())
            .arg(codec::to_json(&campaign.spec)?)
            .arg(campaign.state.as_str())
            .arg(campaign.created_at_ms)
            .arg(campaign.started_at_ms.map(|ms| ms.to_string()).unwrap_or_default())
            .arg(keys::index_member(id))
            .arg(keys::due_member(tenant, id))
            .arg(idempotency.map(|i| format!("{id}\n{}", i.fingerprint)).unwrap_or_default())
            .arg(IDEMPOTENCY_TTL_MS);
        for recipient in recipients {
            invocation.arg(recipient.as_str());
        }
        let mut conn = self.conn.clone();
        let reply: Value = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error("campaign create", &e))?;
        match parse_pair(reply).ok_or_else(|| self.corrupt("campaign create"))? {
            (0, _) => Ok(CampaignCreated::New),
            (1, Some(prior)) => {
                let prior = parse_string(prior).ok_or_else(|| self.corrupt("campaign create"))?;
                let (prior_id, fingerprint) =
                    prior.split_once('\n').ok_or_else(|| corrupt("idempotency entry"))?;
                let prior_id = CampaignId::new(prior_id).map_err(|_| corrupt("idempotency id"))?;
                let same_request = idempotency.is_some_and(|i| i.fingerprint == fingerprint);
                Ok(CampaignCreated::Existing { id: prior_id, same_request })
            }
            (2, _) => Ok(CampaignCreated::Existing { id: id.clone(), same_request: false }),
            _ => Err(self.corrupt("campaign create")),
        }
    }

    async fn campaign_append(
        &self,
        tenant: &TenantId,
        id: &CampaignId,
        recipients: &[RecipientId],
        idempotency: Option<&Idempotency>,
        now_ms: u64,
    ) -> Result<Appended, StoreError> {
        let mut invocation = APPEND_SCRIPT.prepare_invoke();
        invocation.key(keys::campaign(tenant, id)).key(keys::members(tenant, id));
        if let Some(idem) = idempotency {
            invocation.key(keys::append_idempotency(tenant, id, &idem.key));
        }
        invocation
            .arg(now_ms)
            .arg(RECIPIENTS_MAX)
            .arg(idempotency.map(|i| i.fingerprint.as_str()).unwrap_or_default())
            .arg(IDEMPOTENCY_TTL_MS);
        for recipient in recipients {
            invocation.arg(recipient.as_str());
        }
        let mut conn = self.conn.clone();
        let reply: Value = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error("campaign append", &e))?;
        let (code, value) = parse_pair(reply).ok_or_else(|| self.corrupt("campaign append"))?;
        let number = |v: &Option<Value>| {
            v.as_ref()
                .and_then(parse_i64)
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| self.corrupt("campaign append"))
        };
        match code {
            0 => Ok(Appended::NotFound),
            1 => Ok(Appended::Done { recipients: number(&value)? }),
            2 => {
                let state = value
                    .and_then(parse_string)
                    .and_then(|s| CampaignState::parse(&s))
                    .ok_or_else(|| self.corrupt("campaign append"))?;
                Ok(Appended::Refused { state })
            }
            3 => {
                let prior =
                    value.and_then(parse_string).ok_or_else(|| self.corrupt("campaign append"))?;
                let (fingerprint, total) =
                    prior.split_once('\n').ok_or_else(|| corrupt("append idempotency entry"))?;
                let recipients = total.parse().map_err(|_| corrupt("append idempotency entry"))?;
                let same_request = idempotency.is_some_and(|i| i.fingerprint == fingerprint);
                Ok(Appended::Replayed { recipients, same_request })
            }
            4 => Ok(Appended::TooMany { recipients: number(&value)? }),
            _ => Err(self.corrupt("campaign append")),
        }
    }

    async fn campaign_start(
        &self,
        tenant: &TenantId,
        id: &CampaignId,
        now_ms: u64,
    ) -> Result<Moved, StoreError> {
        self.move_campaign(&START_SCRIPT, "campaign start", tenant, id, now_ms).await
    }

    async fn campaign_cancel(
        &self,
        tenant: &TenantId,
        id: &CampaignId,
        now_ms: u64,
    ) -> Result<Moved, StoreError> {
        self.move_campaign(&CANCEL_SCRIPT, "campaign cancel", tenant, id, now_ms).await
    }

    async fn campaign(
        &self,
        tenant: &TenantId,
        id: &CampaignId,
    ) -> Result<Option<Campaign>, StoreError> {
        let mut conn = self.conn.clone();
        let fields: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(keys::campaign(tenant, id))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error("HGETALL", &e))?;
        decode(&fields)
    }

    async fn campaigns(
        &self,
        tenant: &TenantId,
        after: Option<&CampaignId>,
        limit: usize,
    ) -> Result<Vec<Campaign>, StoreError> {
        let limit = limit.min(LIST_LIMIT_MAX);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let max = after.map_or_else(|| "+".to_owned(), |id| format!("({}", keys::index_member(id)));
        let mut pipe = redis::pipe();
        for shard in 0..SHARDS {
            pipe.cmd("ZREVRANGEBYLEX")
                .arg(keys::index(shard, tenant))
                .arg(&max)
                .arg("-")
                .arg("LIMIT")
                .arg(0)
                .arg(limit);
        }
        let mut conn = self.conn.clone();
        let rows: Vec<Vec<String>> =
            pipe.query_async(&mut conn).await.map_err(|e| self.error("ZREVRANGEBYLEX", &e))?;
        let mut members: Vec<String> = rows.into_iter().flatten().collect();
        members.sort_by(|a, b| b.cmp(a));
        members.truncate(limit);
        let ids: Vec<CampaignId> =
            members.iter().filter_map(|m| keys::parse_index_member(m)).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGETALL").arg(keys::campaign(tenant, id));
        }
        let rows: Vec<BTreeMap<String, String>> =
            pipe.query_async(&mut conn).await.map_err(|e| self.error("HGETALL", &e))?;
        let mut campaigns = Vec::with_capacity(rows.len());
        for row in &rows {
            campaigns.extend(decode(row)?);
        }
        Ok(campaigns)
    }

    async fn campaign_counts(
        &self,
        tenant: &TenantId,
        id: &CampaignId,
    ) -> Result<Counts, StoreError> {
        let mut pipe = redis::pipe();
        for shard in 0..SHARDS {
            pipe.cmd("HGETALL").arg(keys::counts(shard, tenant, id));
        }
        let mut conn = self.conn.clone();
        let rows: Vec<BTreeMap<String, i64>> =
            pipe.query_async(&mut conn).await.map_err(|e| self.error("HGETALL", &e))?;
        let mut sum = Counts::default();
        for row in rows {
            sum.add(&Counts(row));
        }
        Ok(sum)
    }

    async fn campaign_recipients(
        &self,
        tenant: &TenantId,
        id: &CampaignId,
        from: u64,
        len: u64,
    ) -> Result<Vec<RecipientId>, StoreError> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let ids: Vec<String> = redis::cmd("LRANGE")
            .arg(keys::members(tenant, id))
            .arg(from)
            .arg(from.saturating_add(len) - 1)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error("LRANGE", &e))?;
        ids.into_iter()
            .map(|id| RecipientId::new(id).map_err(|_| corrupt("a segment member")))
            .collect()
    }

    async fn campaign_claim(
        &self,
        now_ms: u64,
        lease_ms: u64,
        max: usize,
    ) -> Result<Vec<PageClaim>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        // Peek first (one round trip, read-only), then claim only where something is due.
        let mut pipe = redis::pipe();
        for shard in 0..SHARDS {
            pipe.cmd("ZRANGEBYSCORE")
                .arg(keys::due(shard))
                .arg("-inf")
                .arg(now_ms)
                .arg("LIMIT")
                .arg(0)
                .arg(1);
        }
        let mut conn = self.conn.clone();
        let peeks: Vec<Vec<String>> =
            pipe.query_async(&mut conn).await.map_err(|e| self.error("ZRANGEBYSCORE", &e))?;
        let until_ms = now_ms.saturating_add(lease_ms);
        let mut claims = Vec::new();
        for (shard, peek) in (0..SHARDS).zip(peeks) {
            if peek.is_empty() || claims.len() >= max {
                continue;
            }
            let reply: Value = CLAIM_SCRIPT
                .key(keys::due(shard))
                .arg(now_ms)
                .arg(until_ms)
                .arg(token_prefix())
                .arg(max - claims.len())
                .arg(tenants_prefix(shard))
                .invoke_async(&mut conn)
                .await
                .map_err(|e| self.error("campaign claim", &e))?;
            let Value::Array(items) = reply else { return Err(self.corrupt("campaign claim")) };
            for item in items {
                let Value::Array(mut pair) = item else {
                    return Err(self.corrupt("campaign claim"));
                };
                let fields = pair.pop().and_then(flat_map);
                let token = pair.pop().and_then(parse_string);
                let (Some(fields), Some(token)) = (fields, token) else {
                    return Err(self.corrupt("campaign claim"));
                };
                let campaign = decode(&fields)?.ok_or_else(|| corrupt("claimed and empty"))?;
                claims.push(PageClaim { campaign, token, lease_until_ms: until_ms });
            }
        }
        Ok(claims)
    }

    async fn campaign_advance(
        &self,
        claim: &PageClaim,
        done: &PageDone,
    ) -> Result<Advance, StoreError> {
        let (tenant, id) = (&claim.campaign.tenant, &claim.campaign.id);
        let mut conn = self.conn.clone();
        let reply: i64 = ADVANCE_SCRIPT
            .key(keys::campaign(tenant, id))
            .key(keys::due(keys::campaign_shard(id)))
            .arg(&claim.token)
            .arg(claim.campaign.state.as_str())
            .arg(done.position)
            .arg(&done.cursor)
            .arg(done.rejected)
            .arg(if done.done { "1" } else { "0" })
            .arg(done.next_at_ms)
            .arg(done.now_ms)
            .arg(keys::due_member(tenant, id))
            .arg(done.matched)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error("campaign advance", &e))?;
        match reply {
            1 => Ok(Advance::Done),
            2 => Ok(Advance::Cancelling),
            0 => Ok(Advance::LeaseLost),
            _ => Err(self.corrupt("campaign advance")),
        }
    }

    fn campaign_notification_id(
        &self,
        tenant: &TenantId,
        id: &CampaignId,
        recipient: &RecipientId,
    ) -> NotificationId {
        keys::campaign_notification_id(tenant, id, recipient)
    }

    async fn campaign_create_notification(
        &self,
        record: &Record,
        first: &HistoryEntry,
        campaign: &CampaignId,
    ) -> Result<Created, StoreError> {
        match self.run_create(record, first, Once::None, Some(campaign)).await? {
            (0, _) => Ok(Created::New),
            (2, _) => Ok(Created::Existing { id: record.id.clone(), same_request: false }),
            _ => Err(self.corrupt("campaign create notification")),
        }
    }

    async fn campaign_open(
        &self,
        tenant: &TenantId,
        id: &CampaignId,
        cursor: &str,
        len: usize,
    ) -> Result<OpenPage, StoreError> {
        let (mut shard, mut scan) = parse_open_cursor(cursor);
        let mut ids = Vec::new();
        let mut conn = self.conn.clone();
        while shard < SHARDS && ids.len() < len {
            let (next, members): (String, Vec<String>) = redis::cmd("SSCAN")
                .arg(keys::open(shard, tenant, id))
                .arg(&scan)
                .arg("COUNT")
                .arg(len.max(1))
                .query_async(&mut conn)
                .await
                .map_err(|e| self.error("SSCAN", &e))?;
            ids.extend(members.into_iter().filter_map(|m| NotificationId::new(m).ok()));
            if next == "0" {
                shard += 1;
                scan = "0".to_owned();
            } else {
                scan = next;
            }
        }
        let next = (shard < SHARDS).then(|| format!("{shard}:{scan}"));
        Ok(OpenPage { ids, next })
    }
}

#[cfg(test)]
mod tests {
    use workflows::machine::StateKind;

    use super::*;

    /// The commit script's list of states that leave the open set is exactly the terminal kinds.
    #[test]
    fn the_commit_script_knows_the_terminal_states() {
        let script = super::super::scripts::COMMIT_SOURCE;
        for kind in StateKind::ALL {
            let named = script.contains(&format!("kind == '{}'", kind.as_str()));
            let expected = kind.is_terminal() || kind == StateKind::Skipped;
            assert_eq!(named, expected, "{kind}");
        }
    }

    #[test]
    fn open_cursors_round_trip() {
        assert_eq!(parse_open_cursor(""), (0, "0".to_owned()));
        assert_eq!(parse_open_cursor("3:1234"), (3, "1234".to_owned()));
        assert_eq!(parse_open_cursor("99:1"), (0, "0".to_owned()));
    }
}
