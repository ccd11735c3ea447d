//! Idempotency claims and event-level dedup on Redis.
//!
//! An idempotency key holds either `id\nfingerprint`, written by the create script together
//! with the record it names, or a *claim* (JSON: the fingerprint, the holder's lease, and once
//! finished the stored answer), for requests whose work spans more than one slot. Each claim
//! step is one script on the key. An event seen for a recipient and channel is a STRING in the
//! event's shard naming the notification it made, written by the create script with the record
//! (see `scripts::CREATE`).

use std::sync::LazyLock;

use redis::{Script, Value};
use serde::{Deserialize, Serialize};
use steps::model::{NotificationId, TenantId};
use workflows::ports::{Claimed, CreatedOnce, Dedup, EventKey, StoreError, StoredResponse};
use workflows::record::{HistoryEntry, Idempotency, Record};

use super::{Once, RedisStore, codec, parse_pair, parse_string};
use crate::keys;
use crate::memory::IDEMPOTENCY_TTL_MS;

/// A claim as stored (JSON). `until_ms` is below 2^53, exact in Lua's doubles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Claim {
    /// The fingerprint of the request that claimed the key.
    pub(super) fp: String,
    /// When the holder's lease runs out.
    pub(super) until_ms: u64,
    /// The answer, once finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) response: Option<StoredResponse>,
}

impl Claim {
    /// The first notification of the answer, if finished.
    pub(super) fn first_id(&self) -> Option<NotificationId> {
        self.response.as_ref()?.items.first().map(|i| i.id.clone())
    }
}

/// What an idempotency key holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum KeyValue {
    /// Written by the create script: the record's id and the request's fingerprint.
    Created { id: NotificationId, fingerprint: String },
    /// A claim.
    Claim(Claim),
}

impl KeyValue {
    pub(super) fn parse(value: &str) -> Result<KeyValue, StoreError> {
        if value.starts_with('{') {
            return codec::from_json(value).map(KeyValue::Claim);
        }
        let (id, fingerprint) = value
            .split_once('\n')
            .ok_or_else(|| StoreError::Corrupt("an idempotency entry is malformed".into()))?;
        let id = NotificationId::new(id)
            .map_err(|e| StoreError::Corrupt(format!("idempotency entry names a bad id: {e}")))?;
        Ok(KeyValue::Created { id, fingerprint: fingerprint.to_owned() })
    }
}

/// Claims a key: a missing key is claimed (kept 24 h); a pending claim with the same fingerprint
/// whose lease ran out is taken over (the lease moves, the 24 h stay). Anything else is left as
/// it is and returned for the caller to read.
///
/// KEYS: the key. ARGV: fingerprint, now ms, the fresh claim (JSON), ttl ms.
///
/// Returns `{0}` held, `{1, value}` not held.
const CLAIM: &str = r"
local value = redis.call('GET', KEYS[1])
if not value then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
  return {0}
end
if string.sub(value, 1, 1) ~= '{' then return {1, value} end
local claim = cjson.decode(value)
if claim.fp ~= ARGV[1] or claim.response ~= nil then return {1, value} end
if tonumber(claim.until_ms) > tonumber(ARGV[2]) then return {1, value} end
redis.call('SET', KEYS[1], ARGV[3], 'KEEPTTL')
return {0}
";

/// Stores a claim's answer, unless the key holds something else (another request's, or an
/// answer already). A key that expired meanwhile gets the answer for another 24 h.
///
/// KEYS: the key. ARGV: fingerprint, the finished claim (JSON), ttl ms.
///
/// Returns 1 stored, 0 left as it was.
const FINISH: &str = r"
local value = redis.call('GET', KEYS[1])
if not value then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
if string.sub(value, 1, 1) ~= '{' then return 0 end
local claim = cjson.decode(value)
if claim.fp ~= ARGV[1] or claim.response ~= nil then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
";

/// Drops a pending claim with this fingerprint.
///
/// KEYS: the key. ARGV: fingerprint.
///
/// Returns 1 dropped, 0 left as it was.
const RELEASE: &str = r"
local value = redis.call('GET', KEYS[1])
if not value or string.sub(value, 1, 1) ~= '{' then return 0 end
local claim = cjson.decode(value)
if claim.fp ~= ARGV[1] or claim.response ~= nil then return 0 end
redis.call('DEL', KEYS[1])
return 1
";

static CLAIM_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(CLAIM));
static FINISH_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(FINISH));
static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE));

/// Reads what a key that was not claimed holds.
fn not_held(value: KeyValue, fingerprint: &str, now_ms: u64) -> Claimed {
    match value {
        KeyValue::Created { id, fingerprint: fp } if fp == fingerprint => Claimed::Done {
            response: StoredResponse {
                items: vec![workflows::ports::StoredItem { id, deduplicated: false }],
            },
        },
        KeyValue::Created { id, .. } => Claimed::Reused { id: Some(id) },
        KeyValue::Claim(claim) if claim.fp != fingerprint => {
            Claimed::Reused { id: claim.first_id() }
        }
        KeyValue::Claim(Claim { response: Some(response), .. }) => Claimed::Done { response },
        // The script takes over a claim whose lease ran out, so this one is still held (a
        // lease exactly at `now_ms` is taken over, never reported).
        KeyValue::Claim(claim) => Claimed::InFlight { until_ms: claim.until_ms.max(now_ms + 1) },
    }
}

impl Dedup for RedisStore {
    async fn claim_key(
        &self,
        tenant: &TenantId,
        idempotency: &Idempotency,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Claimed, StoreError> {
        let fresh = Claim {
            fp: idempotency.fingerprint.clone(),
            until_ms: now_ms.saturating_add(lease_ms),
            response: None,
        };
        let mut conn = self.conn.clone();
        let reply: Value = CLAIM_SCRIPT
            .key(keys::idempotency(tenant, &idempotency.key))
            .arg(&idempotency.fingerprint)
            .arg(now_ms)
            .arg(codec::to_json(&fresh)?)
            .arg(IDEMPOTENCY_TTL_MS)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error("claim_key", &e))?;
        match parse_pair(reply).ok_or_else(|| self.corrupt("claim_key"))? {
            (0, _) => Ok(Claimed::Held),
            (1, Some(value)) => {
                let value = parse_string(value).ok_or_else(|| self.corrupt("claim_key"))?;
                Ok(not_held(KeyValue::parse(&value)?, &idempotency.fingerprint, now_ms))
            }
            _ => Err(self.corrupt("claim_key")),
        }
    }

    async fn finish_key(
        &self,
        tenant: &TenantId,
        idempotency: &Idempotency,
        response: &StoredResponse,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let done = Claim {
            fp: idempotency.fingerprint.clone(),
            until_ms: now_ms,
            response: Some(response.clone()),
        };
        let mut conn = self.conn.clone();
        let _: Value = FINISH_SCRIPT
            .key(keys::idempotency(tenant, &idempotency.key))
            .arg(&idempotency.fingerprint)
            .arg(codec::to_json(&done)?)
            .arg(IDEMPOTENCY_TTL_MS)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error("finish_key", &e))?;
        Ok(())
    }

    async fn release_key(
        &self,
        tenant: &TenantId,
        idempotency: &Idempotency,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: Value = RELEASE_SCRIPT
            .key(keys::idempotency(tenant, &idempotency.key))
            .arg(&idempotency.fingerprint)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error("release_key", &e))?;
        Ok(())
    }

    async fn create_once(
        &self,
        record: &Record,
        first: &HistoryEntry,
        event: &EventKey,
        window_ms: u64,
    ) -> Result<CreatedOnce, StoreError> {
        match self.run_create(record, first, Once::Event(event, window_ms), None).await? {
            (0, _) => Ok(CreatedOnce::New),
            (3, Some(id)) => {
                let id = parse_string(id).ok_or_else(|| self.corrupt("create_once"))?;
                let id = NotificationId::new(id).map_err(|e| {
                    StoreError::Corrupt(format!("an event entry names a bad id: {e}"))
                })?;
                Ok(CreatedOnce::Duplicate { id })
            }
            (2, _) => Ok(CreatedOnce::IdTaken),
            _ => Err(self.corrupt("create_once")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_of_both_kinds_parse() {
        let id = NotificationId::new("n0a1").unwrap();
        assert_eq!(
            KeyValue::parse("n0a1\nfp").unwrap(),
            KeyValue::Created { id: id.clone(), fingerprint: "fp".into() }
        );
        let claim = Claim { fp: "fp".into(), until_ms: 1_767_225_600_000, response: None };
        let json = codec::to_json(&claim).unwrap();
        assert_eq!(json, r#"{"fp":"fp","until_ms":1767225600000}"#);
        assert_eq!(KeyValue::parse(&json).unwrap(), KeyValue::Claim(claim.clone()));
        assert!(KeyValue::parse("no newline").is_err());
        assert_eq!(
            not_held(KeyValue::Claim(claim.clone()), "other", 0),
            Claimed::Reused { id: None }
        );
        assert_eq!(
            not_held(KeyValue::Claim(claim), "fp", 5),
            Claimed::InFlight { until_ms: 1_767_225_600_000 }
        );
        assert_eq!(
            not_held(KeyValue::Created { id: id.clone(), fingerprint: "x".into() }, "fp", 5),
            Claimed::Reused { id: Some(id) }
        );
    }
}
