//! The Lua scripts. Each one is a single atomic step that touches one hash slot: every key it
//! receives or builds shares one hash tag (`{sNN}`, `{r:..}` or `{i:..}`).
//!
//! Keys a script builds itself (the state indexes, whose name depends on the *stored* state kind)
//! are built from a prefix passed in `ARGV` that already carries the slot's hash tag.
//!
//! Numbers cross into Lua as strings and are compared with `tonumber`: ms timestamps (< 2^53) and
//! versions are exact in Lua's doubles.

use std::sync::LazyLock;

use redis::Script;

/// Creates a record with its first history entry, indexes, deadline and first wake-up, honouring
/// an idempotency key or, instead, an event seen before (event-level dedup).
///
/// KEYS: record, history, ready, timers, deadlines, [idempotency key, or with ARGV[20] =
/// 'event' the event's dedup key].
/// ARGV: tenant prefix, id, tenant, version, state json, state kind, request json, seed,
/// created ms, updated ms, wake ms or '', first history entry json, history max len,
/// wake key, idempotency value (`id\nfingerprint`), idempotency ttl ms, replay json or '',
/// deadline ms or '', deadline member, what KEYS[6] is ('' or 'event'), event window ms,
/// campaign id or '', campaign counter field, '1' when the state is not terminal.
///
/// The record keeps the name of its idempotency key (field `idem`), so a purge can forget it.
/// A campaign's notification keeps its campaign (`campaign`) and the counter it is counted
/// under (`cfield`), is counted in the campaign's counters of this shard and, while not
/// terminal, is in its open set (`workflows::campaign`).
///
/// Returns `{0}` created, `{1, value}` the key was used before (its value), `{2}` the id exists,
/// `{3, id}` the event was seen within its window (the notification it made).
const CREATE: &str = r"
local rec, hist, ready, timers, deadlines = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local idem, event = KEYS[6], nil
if ARGV[20] == 'event' then idem, event = nil, KEYS[6] end
if idem then
  local prior = redis.call('GET', idem)
  if prior then return {1, prior} end
end
if event then
  local prior = redis.call('GET', event)
  if prior then return {3, prior} end
end
if redis.call('EXISTS', rec) == 1 then return {2} end
local p, id, kind, wake = ARGV[1], ARGV[2], ARGV[6], ARGV[11]
redis.call('HSET', rec, 'tenant', ARGV[3], 'id', id, 'version', ARGV[4], 'state', ARGV[5],
  'kind', kind, 'request', ARGV[7], 'seed', ARGV[8], 'created', ARGV[9], 'updated', ARGV[10])
if wake ~= '' then redis.call('HSET', rec, 'wake', wake) end
if ARGV[17] ~= '' then redis.call('HSET', rec, 'replay', ARGV[17]) end
if idem then redis.call('HSET', rec, 'idem', idem) end
redis.call('XADD', hist, 'MAXLEN', ARGV[13], '*', 'e', ARGV[12])
redis.call('ZADD', p .. 'state:' .. kind, ARGV[10], id)
redis.call('ZADD', p .. 'all', ARGV[10], id)
if kind == 'dead_lettered' and redis.call('ZADD', p .. 'dlq', ARGV[10], id) == 1 then
  redis.call('INCR', string.match(p, '^(.-}:)') .. 'dlq:count')
end
if wake ~= '' then
  if tonumber(wake) <= tonumber(ARGV[9]) then
    redis.call('XADD', ready, '*', 'w', ARGV[14], 't', '0')
  else
    redis.call('ZADD', timers, wake, ARGV[14])
  end
end
if ARGV[18] ~= '' then redis.call('ZADD', deadlines, ARGV[18], ARGV[19]) end
if idem then redis.call('SET', idem, ARGV[15], 'PX', ARGV[16]) end
if event then redis.call('SET', event, ARGV[2], 'PX', ARGV[21]) end
if ARGV[22] ~= '' then
  local base = p .. 'c:' .. ARGV[22]
  redis.call('HSET', rec, 'campaign', ARGV[22], 'cfield', ARGV[23])
  redis.call('HINCRBY', base .. ':counts', ARGV[23], 1)
  if ARGV[24] == '1' then redis.call('SADD', base .. ':open', id) end
end
return {0}
";

/// Compare-and-set of a record, with its history, index moves, DLQ, deadline and next wake-up.
///
/// KEYS: record, history, ready, timers, deadlines.
/// ARGV: tenant prefix, id, expected version, state json, state kind, now ms, wake ms or '',
/// wake key (of the new version), deadline ms or '' (none: drop the entry), deadline member,
/// history max len, replay json or '' (kept as it is), history entry json...
///
/// A campaign's notification (field `campaign`) moves between its campaign's counters in this
/// shard when its counter field changes (the state kind, `skipped:<reason kind>` for a skip,
/// as `workflows::campaign::counter_field`), and in or out of the campaign's open set.
///
/// Returns `{0}` not found, `{1, version}` committed, `{2, current}` conflict.
const COMMIT: &str = r"
local rec, hist, ready, timers, deadlines = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local current = redis.call('HGET', rec, 'version')
if not current then return {0} end
if tonumber(current) ~= tonumber(ARGV[3]) then return {2, tonumber(current)} end
local p, id, kind, now, wake = ARGV[1], ARGV[2], ARGV[5], ARGV[6], ARGV[7]
local version = tonumber(current) + 1
local old_kind = redis.call('HGET', rec, 'kind')
redis.call('HSET', rec, 'version', tostring(version), 'state', ARGV[4], 'kind', kind,
  'updated', now)
if wake ~= '' then
  redis.call('HSET', rec, 'wake', wake)
else
  redis.call('HDEL', rec, 'wake')
end
if ARGV[12] ~= '' then redis.call('HSET', rec, 'replay', ARGV[12]) end
for i = 13, #ARGV do
  redis.call('XADD', hist, 'MAXLEN', ARGV[11], '*', 'e', ARGV[i])
end
if old_kind and old_kind ~= kind then
  redis.call('ZREM', p .. 'state:' .. old_kind, id)
end
redis.call('ZADD', p .. 'state:' .. kind, now, id)
redis.call('ZADD', p .. 'all', now, id)
if kind == 'dead_lettered' and old_kind ~= 'dead_lettered' then
  if redis.call('ZADD', p .. 'dlq', now, id) == 1 then
    redis.call('INCR', string.match(p, '^(.-}:)') .. 'dlq:count')
  end
elseif kind ~= 'dead_lettered' and old_kind == 'dead_lettered' then
  if redis.call('ZREM', p .. 'dlq', id) == 1 then
    redis.call('DECR', string.match(p, '^(.-}:)') .. 'dlq:count')
  end
end
if wake ~= '' then
  if tonumber(wake) <= tonumber(now) then
    redis.call('XADD', ready, '*', 'w', ARGV[8], 't', '0')
  else
    redis.call('ZADD', timers, wake, ARGV[8])
  end
end
if ARGV[9] ~= '' then
  redis.call('ZADD', deadlines, ARGV[9], ARGV[10])
else
  redis.call('ZREM', deadlines, ARGV[10])
end
local camp = redis.call('HGET', rec, 'campaign')
if camp then
  local base = p .. 'c:' .. camp
  local field = kind
  if kind == 'skipped' then
    local ok, state = pcall(cjson.decode, ARGV[4])
    local reason = ok and type(state) == 'table' and type(state.Skipped) == 'table'
      and type(state.Skipped.reason) == 'table' and state.Skipped.reason.kind
    if type(reason) ~= 'string' then reason = 'unknown' end
    field = 'skipped:' .. reason
  end
  local old_field = redis.call('HGET', rec, 'cfield') or old_kind
  if old_field ~= field then
    redis.call('HINCRBY', base .. ':counts', old_field, -1)
    redis.call('HINCRBY', base .. ':counts', field, 1)
    redis.call('HSET', rec, 'cfield', field)
  end
  if kind == 'delivered' or kind == 'dead_lettered' or kind == 'skipped' or kind == 'cancelled' then
    redis.call('SREM', base .. ':open', id)
  else
    redis.call('SADD', base .. ':open', id)
  end
end
return {1, version}
";

/// Deletes a record at an expected version (compare-and-set) with its history, its index
/// entries, its DLQ entry and its idempotency key (when the record names one in its own slot and
/// the key still names the record). A campaign's notification leaves its campaign's counters and
/// open set.
///
/// KEYS: record, history. ARGV: tenant prefix, id, expected version.
///
/// Returns `{0}` not found, `{1}` deleted, `{2, current}` conflict.
const PURGE: &str = r"
local rec, hist = KEYS[1], KEYS[2]
local current = redis.call('HGET', rec, 'version')
if not current then return {0} end
if tonumber(current) ~= tonumber(ARGV[3]) then return {2, tonumber(current)} end
local p, id = ARGV[1], ARGV[2]
local kind = redis.call('HGET', rec, 'kind')
local idem = redis.call('HGET', rec, 'idem')
if kind then redis.call('ZREM', p .. 'state:' .. kind, id) end
redis.call('ZREM', p .. 'all', id)
if redis.call('ZREM', p .. 'dlq', id) == 1 then
  redis.call('DECR', string.match(p, '^(.-}:)') .. 'dlq:count')
end
local camp = redis.call('HGET', rec, 'campaign')
if camp then
  local cfield = redis.call('HGET', rec, 'cfield') or kind
  if cfield then redis.call('HINCRBY', p .. 'c:' .. camp .. ':counts', cfield, -1) end
  redis.call('SREM', p .. 'c:' .. camp .. ':open', id)
end
local idem_prefix = p .. 'idem:'
if idem and string.sub(idem, 1, #idem_prefix) == idem_prefix then
  local value = redis.call('GET', idem)
  if value and string.sub(value, 1, #id + 1) == id .. '\n' then redis.call('DEL', idem) end
end
redis.call('DEL', rec, hist)
return {1}
";

/// Reserves a provider's next send slot, exactly as `steps::rate::Pacer::reserve`.
///
/// KEYS: pacer. ARGV: now ms, interval µs, longest wait ms.
///
/// Returns `{1, now}` go now, `{2, at_ms}` reserved for later, `{0, at_ms}` too late (nothing
/// reserved). Slots are kept in µs; µs since the epoch stay exact in Lua's doubles until 2255.
const PACE: &str = r"
local now_ms = tonumber(ARGV[1])
local now_us = now_ms * 1000
local next_us = tonumber(redis.call('GET', KEYS[1]) or '0')
local at_us = next_us
if at_us < now_us then at_us = now_us end
local at_ms = math.ceil(at_us / 1000)
if at_ms - now_ms > tonumber(ARGV[3]) then return {0, at_ms} end
local after = at_us + tonumber(ARGV[2])
local ttl = math.ceil((after - now_us) / 1000) + 60000
redis.call('SET', KEYS[1], string.format('%.0f', after), 'PX', ttl)
if at_us <= now_us then return {1, now_ms} end
return {2, at_ms}
";

/// Moves due timers into the ready stream, at most `n` per call (one shard), each in its own
/// loop step: no `unpack` of an unbounded list. A member that is not a wake key is parked.
///
/// KEYS: timers, ready, parked. ARGV: now ms, n.
///
/// Returns how many moved.
const PROMOTE: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  local key, tries = member, '0'
  local hash = string.find(member, '#', 1, true)
  if hash then
    key = string.sub(member, 1, hash - 1)
    tries = string.sub(member, hash + 1)
  end
  if string.match(key, '^[%w%._%-]+/[%w%._%-]+/%d+$') then
    redis.call('XADD', KEYS[2], '*', 'w', key, 't', tries)
  else
    redis.call('ZADD', KEYS[3], ARGV[1], member)
  end
  redis.call('ZREM', KEYS[1], member)
end
return #due
";

/// The reaper, one shard: re-drives records past their deadline, at most `n` per call, each in
/// its own loop step. A record still waiting on a worker gets a wake-up at its current version,
/// straight into ready, and its deadline moves to the next one; the entry of a record that is
/// gone, settled (a kind listed in ARGV) or unreadable is dropped.
///
/// KEYS: deadlines, ready. ARGV: now ms, n, next deadline ms, the shard's tenants prefix
/// (`courant:{sNN}:t:`), the state kinds without a deadline...
///
/// Returns `{re-driven, dropped}`.
const REDRIVE: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local settled = {}
for i = 5, #ARGV do settled[ARGV[i]] = true end
local redriven = 0
for _, member in ipairs(due) do
  local current = nil
  local tenant, id = string.match(member, '^([%w%._%-]+)/([%w%._%-]+)$')
  if tenant then
    current = redis.call('HMGET', ARGV[4] .. tenant .. ':n:' .. id, 'version', 'kind')
  end
  if current and current[1] and current[2] and not settled[current[2]] then
    redis.call('XADD', KEYS[2], '*', 'w', member .. '/' .. current[1], 't', '0')
    redis.call('ZADD', KEYS[1], ARGV[3], member)
    redriven = redriven + 1
  else
    redis.call('ZREM', KEYS[1], member)
  end
end
return {redriven, #due - redriven}
";

/// Acknowledges and deletes delivered entries of one ready stream.
///
/// KEYS: ready. ARGV: entry ids (at most the ack chunk).
///
/// Returns how many were still pending.
const ACK: &str = r"
local n = redis.call('XACK', KEYS[1], 'workers', unpack(ARGV))
redis.call('XDEL', KEYS[1], unpack(ARGV))
return n
";

/// Settles a failed delivery: back into the timers with one more try, or parked after the
/// last. Does nothing for an entry that is no longer pending (settled elsewhere).
///
/// KEYS: ready, timers, parked. ARGV: entry id, wake key, tries after this failure, due ms,
/// tries max, now ms.
///
/// Returns -1 already settled, 0 parked, 1 scheduled.
const RETRY: &str = r"
if redis.call('XACK', KEYS[1], 'workers', ARGV[1]) == 0 then return -1 end
redis.call('XDEL', KEYS[1], ARGV[1])
if tonumber(ARGV[3]) >= tonumber(ARGV[5]) then
  redis.call('ZADD', KEYS[3], ARGV[6], ARGV[2])
  return 0
end
local member = ARGV[2]
if tonumber(ARGV[3]) > 0 then member = member .. '#' .. ARGV[3] end
redis.call('ZADD', KEYS[2], ARGV[4], member)
return 1
";

/// Puts fetched, unstarted entries back at the end of their ready stream.
///
/// KEYS: ready. ARGV: (entry id, wake key, tries) triples.
///
/// Returns how many went back.
const RELEASE: &str = r"
local n = 0
for i = 1, #ARGV, 3 do
  if redis.call('XACK', KEYS[1], 'workers', ARGV[i]) == 1 then
    redis.call('XDEL', KEYS[1], ARGV[i])
    redis.call('XADD', KEYS[1], '*', 'w', ARGV[i + 1], 't', ARGV[i + 2])
    n = n + 1
  end
end
return n
";

/// One shard's queue counts, read atomically.
///
/// KEYS: ready, timers, parked, deadlines, dlq count. ARGV: now ms, consumer group.
///
/// Returns `{ready, pending, due, scheduled, parked, overdue, dead, oldest ready ms or -1,
/// oldest due ms or -1}`. Acked entries are deleted at once, so the stream holds exactly the
/// ready and the pending ones; the oldest ready entry is the first after the group's last
/// delivered id, and its id's time part is when it arrived in ready.
const QUEUE_STATS: &str = r"
local now = tonumber(ARGV[1])
local len = redis.call('XLEN', KEYS[1])
local pending, last = 0, '0-0'
if len > 0 then
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local name, p, l
    for i = 1, #group, 2 do
      if group[i] == 'name' then name = group[i + 1]
      elseif group[i] == 'pending' then p = group[i + 1]
      elseif group[i] == 'last-delivered-id' then l = group[i + 1] end
    end
    if name == ARGV[2] then pending, last = tonumber(p), l end
  end
end
local oldest_ready = -1
if len > pending then
  local first = redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', 1)
  if first[1] then oldest_ready = tonumber(string.match(first[1][1], '^(%d+)')) end
end
local due = redis.call('ZCOUNT', KEYS[2], '-inf', now)
local timers = redis.call('ZCARD', KEYS[2])
local oldest_due = -1
if due > 0 then oldest_due = tonumber(redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')[2]) end
local parked = redis.call('ZCARD', KEYS[3])
local overdue = redis.call('ZCOUNT', KEYS[4], '-inf', now)
local dead = tonumber(redis.call('GET', KEYS[5]) or '0')
return {len - pending, pending, due, timers - due, parked, overdue, dead, oldest_ready, oldest_due}
";

/// Writes a worker's heartbeat and forgets workers silent for too long, at most 100 per call.
///
/// KEYS: the registry (ZSET), its entries (HASH). ARGV: worker id, seen ms, entry JSON, forget
/// entries seen before this ms.
///
/// Returns how many were forgotten.
const HEARTBEAT: &str = r"
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[4], 'LIMIT', 0, 100)
for _, id in ipairs(old) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
return #old
";

/// The compiled scripts (their SHA1 is computed once).
pub(crate) static CREATE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(CREATE));
/// See [`COMMIT`].
pub(crate) static COMMIT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(COMMIT));
/// See [`PURGE`].
pub(crate) static PURGE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(PURGE));
/// See [`PACE`].
pub(crate) static PACE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(PACE));
/// See [`PROMOTE`].
pub(crate) static PROMOTE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(PROMOTE));
/// See [`REDRIVE`].
pub(crate) static REDRIVE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(REDRIVE));
/// See [`ACK`].
pub(crate) static ACK_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(ACK));
/// See [`RETRY`].
pub(crate) static RETRY_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RETRY));
/// See [`RELEASE`].
pub(crate) static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE));
/// See [`QUEUE_STATS`].
pub(crate) static QUEUE_STATS_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(QUEUE_STATS));
/// See [`HEARTBEAT`].
pub(crate) static HEARTBEAT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(HEARTBEAT));
/// The commit script's source, for tests that read it.
#[cfg(test)]
pub(crate) const COMMIT_SOURCE: &str = COMMIT;
