//! The Redis store and wake-up queue (feature `redis`).
//!
//! Every write is one Lua script (`scripts.rs`) touching one hash slot, so every state change is
//! atomic with its history entry, its index moves, its deadline and its next wake-up, and the key
//! layout ([`crate::keys`]) runs unchanged on Redis Cluster. Reads are single commands or pipelines.
//!
//! The runner's round trips per notification are few on purpose: `load` (one HGETALL),
//! `acquire_windows` (one script, the recipient's limits), two `commit`s (one script each), and
//! two reads of the recipient's directory entry (one HGETALL each: the filter, and the re-check
//! after the claim).
//!
//! One rule follows from the one-slot scripts: a notification created with an idempotency key
//! must live in the key's shard, so `create` refuses an id that was not minted for its key
//! (mint ids with [`keys::new_notification_id`]). The in-memory store has no slots and does not
//! check.
//!
//! Cluster readiness: every script and every key follows the slot rules, but the connections are
//! standalone (`ConnectionManager`) and a fetch is one `XREADGROUP` over all sixteen ready
//! streams, which a cluster would refuse as cross-slot; running on Redis Cluster needs a cluster
//! connection and one read per node.
//!
//! Two connections: a multiplexed [`ConnectionManager`] for everything, and a dedicated one per
//! consumer loop ([`WakeQueue::dedicated`](crate::queue::WakeQueue::dedicated)) for the blocking
//! `XREADGROUP`, because a blocked command stalls every request queued behind it on a
//! multiplexed connection. Both reconnect by themselves after a Redis restart.

mod campaigns;
mod codec;
mod collapse;
mod dedup;
mod directory;
mod inbox;
mod limits;
mod listing;
mod queue;
mod scripts;
mod stats;
mod templates;
mod transitions;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, ErrorKind, RedisError, Value};
use steps::model::{NotificationId, ProviderName, TenantId};
use steps::rate::{SendRate, SendSlot};
use workflows::campaign::{CampaignId, counter_field};
use workflows::dlq::{DLQ_SCAN_MAX, DlqFilter, DlqPage, Truncated};
use workflows::ports::{
    ApiKey, Clock, HISTORY_LEN_MAX, ListPage, ListQuery, Purged, Store, StoreError,
};
use workflows::record::{Commit, CommitOutcome, Created, HistoryEntry, Idempotency, Record};

use crate::keys::{self, SHARDS};
use crate::memory::{IDEMPOTENCY_TTL_MS, SystemClock};
use crate::queue::{deadline_member, deadline_ms};

/// How long a request may wait for its answer. Far above Redis's normal sub-millisecond latency
/// (and above the longest blocking read), so only a really stuck server trips it; apalis-redis's
/// 500 ms default killed whole worker pools under load.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection attempt may take.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);
/// Records read per pipeline while walking the DLQ: big enough to keep round trips few, small
/// enough that one reply stays a few MB at most.
const DLQ_LOAD_CHUNK: usize = 500;
/// Reconnect attempts per failure before a request gives up (the next request tries again).
const RECONNECT_RETRIES: usize = 3;
/// The longest pause between reconnect attempts.
const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(1);

/// The Redis store, inbox and wake-up queue. A cheap handle: clones share the connections.
#[derive(Clone)]
pub struct RedisStore {
    /// The multiplexed connection for everything but blocking reads.
    conn: ConnectionManager,
    /// For opening dedicated connections.
    client: Client,
    /// The URL with any password masked: the only form that appears in errors.
    shown_url: Arc<str>,
    /// The password in the URL, if any, scrubbed from every error message we pass on.
    secret: Option<Arc<str>>,
    /// The connection for blocking reads, opened on first use; shared by clones, fresh for each
    /// [`dedicated`](crate::queue::WakeQueue::dedicated) handle.
    blocking: Arc<tokio::sync::Mutex<Option<ConnectionManager>>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("url", &self.shown_url).finish_non_exhaustive()
    }
}

/// The URL with the password (and a lone user name) masked: `redis://user:***@host:6379/0`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(user, _)| user);
            let masked = if user.is_empty() { "***".to_owned() } else { format!("{user}:***") };
            format!("{scheme}://{masked}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// The password (or lone secret) in a URL's user info, if any.
fn url_secret(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let userinfo = authority.rsplit_once('@')?.0;
    let secret = userinfo.split_once(':').map_or(userinfo, |(_, password)| password);
    (!secret.is_empty()).then(|| secret.to_owned())
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_number_of_retries(RECONNECT_RETRIES)
        .set_max_delay(RECONNECT_DELAY_MAX)
}

/// Whether an error is Redis saying a stream or its consumer group is missing (after a restart
/// without persistence, a FLUSHALL, or a deleted stream), by itself or in a pipeline's failures
/// (which carry no code of their own: `stats` and `reclaim_abandoned` are pipelines).
fn is_no_group(error: &RedisError) -> bool {
    error.code() == Some("NOGROUP")
        || error
            .clone()
            .into_server_errors()
            .is_some_and(|errors| errors.iter().any(|(_, e)| e.code() == "NOGROUP"))
}

fn parse_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn parse_string(value: Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        Value::VerbatimString { text, .. } => Some(text),
        _ => None,
    }
}

/// What a create checks besides the id: an idempotency key in the record's slot, or an event
/// (event-level dedup) in the record's slot.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Once<'a> {
    None,
    Key(&'a Idempotency),
    Event(&'a workflows::ports::EventKey, u64),
}

/// An optional time as a script argument: the number, or `''` for none.
fn optional_ms(ms: Option<u64>) -> String {
    ms.map(|ms| ms.to_string()).unwrap_or_default()
}

/// A script's `{code, value}` reply.
fn parse_pair(value: Value) -> Option<(i64, Option<Value>)> {
    let Value::Array(mut items) = value else { return None };
    if items.is_empty() {
        return None;
    }
    let rest = (items.len() > 1).then(|| items.swap_remove(1));
    Some((parse_i64(&items[0])?, rest))
}

impl RedisStore {
    /// Connects, checks the server answers and makes sure every ready stream has its consumer
    /// group. The error says what is wrong and how to fix it, without the URL's password.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let shown_url: Arc<str> = redact_url(url).into();
        let secret: Option<Arc<str>> = url_secret(url).map(Into::into);
        let client = Client::open(url).map_err(|_| {
            StoreError::Unavailable(format!(
                "invalid Redis URL {shown_url}: expected redis://[user:password@]host:port[/db]"
            ))
        })?;
        let conn = ConnectionManager::new_with_config(client.clone(), manager_config())
            .await
            .map_err(|e| connect_error(&shown_url, secret.as_deref(), &e))?;
        let store = Self {
            conn,
            client,
            shown_url,
            secret,
            blocking: Arc::new(tokio::sync::Mutex::new(None)),
        };
        store.ping().await?;
        store.ensure_groups().await?;
        Ok(store)
    }

    /// The URL with its password masked, for logs and status output.
    pub fn shown_url(&self) -> &str {
        &self.shown_url
    }

    /// Checks that Redis answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let pong: String =
            redis::cmd("PING").query_async(&mut conn).await.map_err(|e| self.error("PING", &e))?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!(
                "Redis at {} answered PING with {pong:?}; is it really Redis?",
                self.shown_url
            )))
        }
    }

    /// How far this host's clock is ahead of Redis's (`TIME`), in ms (negative: behind).
    /// Workers need clocks within `keys::CLOCK_SKEW_MS_MAX` of Redis's (run NTP).
    pub async fn clock_skew_ms(&self) -> Result<i64, StoreError> {
        let mut conn = self.conn.clone();
        let before = SystemClock.now_ms();
        let (secs, micros): (u64, u64) =
            redis::cmd("TIME").query_async(&mut conn).await.map_err(|e| self.error("time", &e))?;
        let after = SystemClock.now_ms();
        let redis_ms = secs * 1_000 + micros / 1_000;
        // Compare with the middle of the round trip.
        Ok(((before + after) / 2) as i64 - redis_ms as i64)
    }

    /// Human warnings about settings that put notifications at risk: AOF off, `appendfsync`
    /// other than `everysec`/`always`, a `maxmemory-policy` other than `noeviction`. Empty when
    /// all is well. When `CONFIG GET` is not permitted, one warning says so.
    pub async fn durability_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let mut conn = self.conn.clone();
        let mut settings = BTreeMap::new();
        for name in ["appendonly", "appendfsync", "maxmemory-policy"] {
            let reply: Result<BTreeMap<String, String>, RedisError> =
                redis::cmd("CONFIG").arg("GET").arg(name).query_async(&mut conn).await;
            match reply {
                Ok(map) => {
                    if let Some(value) = map.get(name) {
                        settings.insert(name, value.to_ascii_lowercase());
                    }
                }
                Err(e) => {
                    warnings.push(format!(
                        "cannot check Redis durability settings at {}: CONFIG GET is not \
                         permitted ({}); make sure the server runs with appendonly yes, \
                         appendfsync everysec and maxmemory-policy noeviction",
                        self.shown_url,
                        self.scrub(&e.to_string())
                    ));
                    return warnings;
                }
            }
        }
        match settings.get("appendonly").map(String::as_str) {
            Some("yes") => {}
            other => warnings.push(format!(
                "Redis AOF is off (appendonly {}): a Redis crash or restart loses accepted \
                 notifications and their wake-ups; set `appendonly yes`",
                other.unwrap_or("unknown")
            )),
        }
        match settings.get("appendfsync").map(String::as_str) {
            Some("everysec" | "always") => {}
            other => warnings.push(format!(
                "Redis appendfsync is {}: a crash can lose more than the last second of writes; \
                 set `appendfsync everysec`",
                other.unwrap_or("unknown")
            )),
        }
        match settings.get("maxmemory-policy").map(String::as_str) {
            Some("noeviction") => {}
            other => warnings.push(format!(
                "Redis maxmemory-policy is {}: under memory pressure Redis would silently evict \
                 notification records and queued wake-ups; set `maxmemory-policy noeviction`",
                other.unwrap_or("unknown")
            )),
        }
        warnings
    }

    /// Creates the consumer group of every ready stream (and the stream), if missing.
    pub(crate) async fn ensure_groups(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        for shard in 0..SHARDS {
            let reply: Result<Value, RedisError> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(keys::ready(shard))
                .arg(keys::CONSUMER_GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut conn)
                .await;
            match reply {
                Ok(_) => {}
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(self.error("XGROUP CREATE", &e)),
            }
        }
        Ok(())
    }

    /// An error message without the URL's password.
    fn scrub(&self, message: &str) -> String {
        match &self.secret {
            Some(secret) => message.replace(&**secret, "***"),
            None => message.to_owned(),
        }
    }

    /// Maps a Redis error of operation `what` to a store error that names the server, not the
    /// password.
    pub(crate) fn error(&self, what: &str, e: &RedisError) -> StoreError {
        let detail = if e.is_timeout() {
            format!("no answer within {} s", RESPONSE_TIMEOUT.as_secs())
        } else if e.is_connection_refusal() {
            "connection refused; is redis-server running?".to_owned()
        } else if e.is_connection_dropped() {
            "connection dropped; reconnecting".to_owned()
        } else {
            self.scrub(&e.to_string())
        };
        match e.kind() {
            ErrorKind::Parse | ErrorKind::UnexpectedReturnType => StoreError::Corrupt(format!(
                "unexpected reply to {what} from Redis at {}: {detail}",
                self.shown_url
            )),
            _ => StoreError::Unavailable(format!(
                "Redis {what} at {} failed: {detail}",
                self.shown_url
            )),
        }
    }

    /// A feed of the messages published on the channels matching `pattern`, each decoded by
    /// `decode` (a malformed one is logged and skipped), over a pub/sub connection of its own.
    /// The stream ends when the connection breaks.
    pub(crate) async fn pubsub_feed<T: Send + 'static>(
        &self,
        pattern: &str,
        what: &'static str,
        decode: fn(&str) -> Result<T, StoreError>,
    ) -> Result<futures::stream::BoxStream<'static, T>, StoreError> {
        use futures::StreamExt;
        let connect = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.psubscribe(pattern).await?;
            Ok::<_, RedisError>(pubsub)
        };
        let pubsub = match tokio::time::timeout(CONNECTION_TIMEOUT, connect).await {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(e)) => return Err(self.error("PSUBSCRIBE", &e)),
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "no pub/sub connection to Redis at {} within {} s",
                    self.shown_url,
                    CONNECTION_TIMEOUT.as_secs()
                )));
            }
        };
        let messages = pubsub.into_on_message().filter_map(move |message| {
            let decoded = match message.get_payload::<String>() {
                Ok(payload) => decode(&payload),
                Err(_) => Err(StoreError::Corrupt(format!("a published {what} is not text"))),
            };
            let message = decoded
                .inspect_err(|error| tracing::warn!(%error, what, "Skipped a malformed message."))
                .ok();
            std::future::ready(message)
        });
        Ok(messages.boxed())
    }

    fn corrupt(&self, what: &str) -> StoreError {
        StoreError::Corrupt(format!("unexpected reply to {what} from Redis at {}", self.shown_url))
    }

    async fn load_record(
        &self,
        tenant: &TenantId,
        id: &NotificationId,
    ) -> Result<Option<Record>, StoreError> {
        let mut conn = self.conn.clone();
        let fields: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(keys::record(tenant, id))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error("HGETALL", &e))?;
        codec::decode_record(&fields)
    }

    /// Runs the create script: a record with an idempotency key, an event, or neither, and for a
    /// campaign's notification its campaign (the script tags the record and counts it in the
    /// campaign's counters, see `campaigns`). Returns the script's `{code, value}`.
    pub(crate) async fn run_create(
        &self,
        record: &Record,
        first: &HistoryEntry,
        once: Once<'_>,
        campaign: Option<&CampaignId>,
    ) -> Result<(i64, Option<Value>), StoreError> {
        let shard = keys::shard_for(&record.id);
        let (home, what) = match once {
            Once::None => (shard, ""),
            Once::Key(idem) => {
                (keys::idempotency_shard(&record.tenant, &idem.key), "idempotency key")
            }
            Once::Event(event, _) => (keys::event_shard(event), "event"),
        };
        if home != shard {
            return Err(StoreError::Corrupt(format!(
                "notification id {} is not in the shard of its {what}, so the two cannot be \
                 written atomically; mint ids with storage::keys::new_notification_id",
                record.id
            )));
        }
        let idempotency = match once {
            Once::Key(idem) => Some(idem),
            _ => None,
        };
        let wake = workflows::record::Wake {
            tenant: record.tenant.clone(),
            id: record.id.clone(),
            version: record.version,
        };
        let fields = codec::RecordFields::encode(record)?;
        let first_json = codec::to_json(first)?;
        let mut invocation = scripts::CREATE_SCRIPT.prepare_invoke();
        invocation
            .key(keys::record(&record.tenant, &record.id))
            .key(keys::history(&record.tenant, &record.id))
            .key(keys::ready(shard))
            .key(keys::timers(shard))
            .key(keys::deadlines(shard));
        match once {
            Once::None => {}
            Once::Key(idem) => {
                invocation.key(keys::idempotency(&record.tenant, &idem.key));
            }
            Once::Event(event, _) => {
                invocation.key(keys::event(event));
            }
        }
        let deadline = deadline_ms(record.state.kind(), record.wake_at_ms, record.created_at_ms);
        invocation
            .arg(keys::tenant_prefix(shard, &record.tenant))
            .arg(record.id.as_str())
            .arg(record.tenant.as_str())
            .arg(record.version)
            .arg(&fields.state)
            .arg(record.state.kind().as_str())
            .arg(&fields.request)
            .arg(record.seed.to_string())
            .arg(record.created_at_ms)
            .arg(record.updated_at_ms)
            .arg(optional_ms(record.wake_at_ms))
            .arg(first_json)
            .arg(HISTORY_LEN_MAX)
            .arg(wake.key())
            .arg(
                idempotency
                    .map(|i| format!("{}\n{}", record.id, i.fingerprint))
                    .unwrap_or_default(),
            )
            .arg(IDEMPOTENCY_TTL_MS)
            .arg(&fields.replay)
            .arg(optional_ms(deadline))
            .arg(deadline_member(&record.tenant, &record.id));
        match once {
            Once::Event(_, window_ms) => invocation.arg("event").arg(window_ms.max(1)),
            _ => invocation.arg("").arg(""),
        };
        invocation
            .arg(campaign.map(CampaignId::as_str).unwrap_or_default())
            .arg(counter_field(&record.state))
            .arg(if record.state.is_terminal() { "0" } else { "1" });
        let mut conn = self.conn.clone();
        let reply: Value =
            invocation.invoke_async(&mut conn).await.map_err(|e| self.error("create", &e))?;
        parse_pair(reply).ok_or_else(|| self.corrupt("create"))
    }

    /// The records of `ids`, in order, `None` for a missing one: one pipeline.
    async fn load_each(
        &self,
        tenant: &TenantId,
        ids: &[NotificationId],
    ) -> Result<Vec<Option<Record>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HGETALL").arg(keys::record(tenant, id));
        }
        let mut conn = self.conn.clone();
        let rows: Vec<BTreeMap<String, String>> =
            pipe.query_async(&mut conn).await.map_err(|e| self.error("HGETALL", &e))?;
        rows.iter().map(codec::decode_record).collect()
    }

    /// The newest DLQ ids of a tenant dead-lettered within `[from_ms, to_ms]`, merged over the
    /// shards: at most `DLQ_SCAN_MAX + 1` (one more than a walk may examine, to tell whether it
    /// stopped early).
    async fn dlq_ids(
        &self,
        tenant: &TenantId,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<NotificationId>, StoreError> {
        let take = DLQ_SCAN_MAX + 1;
        let max = if to_ms == u64::MAX { "+inf".to_owned() } else { to_ms.to_string() };
        let mut pipe = redis::pipe();
        for shard in 0..SHARDS {
            pipe.cmd("ZREVRANGEBYSCORE")
                .arg(keys::dlq(shard, tenant))
                .arg(&max)
                .arg(from_ms)
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(take);
        }
        let mut conn = self.conn.clone();
        let rows: Vec<Vec<(String, f64)>> =
            pipe.query_async(&mut conn).await.map_err(|e| self.error("ZREVRANGEBYSCORE", &e))?;
        let mut merged: Vec<(u64, String)> = rows
            .into_iter()
            .flatten()
            // Scores are whole ms below 2^53, so the conversion is exact.
            .map(|(id, score)| (score as u64, id))
            .collect();
        merged.sort_by(|a, b| b.cmp(a));
        merged.truncate(take);
        Ok(merged.into_iter().filter_map(|(_, id)| NotificationId::new(id).ok()).collect())
    }
}

fn connect_error(shown_url: &str, secret: Option<&str>, e: &RedisError) -> StoreError {
    let message = if e.is_connection_refusal() {
        format!(
            "cannot reach Redis at {shown_url}: connection refused; is redis-server running? \
             start it or pass --redis URL"
        )
    } else if e.is_timeout() {
        format!(
            "cannot reach Redis at {shown_url}: no answer within {} s; check the host, the port \
             and any firewall in between",
            CONNECTION_TIMEOUT.as_secs()
        )
    } else if e.kind() == ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("WRONGPASS" | "NOAUTH"))
    {
        format!(
            "Redis at {shown_url} refused the credentials; check the user name and password in \
             the URL"
        )
    } else {
        let detail = e.to_string();
        let detail = match secret {
            Some(secret) => detail.replace(secret, "***"),
            None => detail,
        };
        format!("cannot connect to Redis at {shown_url}: {detail}")
    };
    StoreError::Unavailable(message)
}

impl Store for RedisStore {
    async fn create(
        &self,
        record: &Record,
        first: &HistoryEntry,
        idempotency: Option<&Idempotency>,
    ) -> Result<Created, StoreError> {
        let once = idempotency.map_or(Once::None, Once::Key);
        match self.run_create(record, first, once, None).await? {
            (0, _) => Ok(Created::New),
            (1, Some(prior)) => {
                let prior = parse_string(prior).ok_or_else(|| self.corrupt("create"))?;
                let (id, fingerprint) = match dedup::KeyValue::parse(&prior)? {
                    dedup::KeyValue::Created { id, fingerprint } => (Some(id), fingerprint),
                    dedup::KeyValue::Claim(claim) => (claim.first_id(), claim.fp),
                };
                // A key claimed by a request that has not finished names no notification yet.
                let same_request =
                    id.is_some() && idempotency.is_some_and(|i| i.fingerprint == fingerprint);
                Ok(Created::Existing { id: id.unwrap_or_else(|| record.id.clone()), same_request })
            }
            (2, _) => Ok(Created::Existing { id: record.id.clone(), same_request: false }),
            _ => Err(self.corrupt("create")),
        }
    }

    async fn load(
        &self,
        tenant: &TenantId,
        id: &NotificationId,
    ) -> Result<Option<Record>, StoreError> {
        self.load_record(tenant, id).await
    }

    async fn commit(&self, commit: &Commit) -> Result<CommitOutcome, StoreError> {
        let shard = keys::shard_for(&commit.id);
        let version = commit.expected_version + 1;
        let wake = workflows::record::Wake {
            tenant: commit.tenant.clone(),
            id: commit.id.clone(),
            version,
        };
        let mut invocation = scripts::COMMIT_SCRIPT.prepare_invoke();
        invocation
            .key(keys::record(&commit.tenant, &commit.id))
            .key(keys::history(&commit.tenant, &commit.id))
            .key(keys::ready(shard))
            .key(keys::timers(shard))
            .key(keys::deadlines(shard))
            .arg(keys::tenant_prefix(shard, &commit.tenant))
            .arg(commit.id.as_str())
            .arg(commit.expected_version)
            .arg(codec::to_json(&commit.state)?)
            .arg(commit.state.kind().as_str())
            .arg(commit.now_ms)
            .arg(optional_ms(commit.wake_at_ms))
            .arg(wake.key())
            .arg(optional_ms(deadline_ms(commit.state.kind(), commit.wake_at_ms, commit.now_ms)))
            .arg(deadline_member(&commit.tenant, &commit.id))
            .arg(HISTORY_LEN_MAX)
            .arg(commit.replay.as_ref().map(codec::to_json).transpose()?.unwrap_or_default());
        for entry in &commit.history {
            invocation.arg(codec::to_json(entry)?);
        }
        let mut conn = self.conn.clone();
        let reply: Value =
            invocation.invoke_async(&mut conn).await.map_err(|e| self.error("commit", &e))?;
        let number =
            |v: Option<Value>| v.as_ref().and_then(parse_i64).and_then(|n| u64::try_from(n).ok());
        match parse_pair(reply).ok_or_else(|| self.corrupt("commit"))? {
            (0, _) => Ok(CommitOutcome::NotFound),
            (1, v) => Ok(CommitOutcome::Committed {
                version: number(v).ok_or_else(|| self.corrupt("commit"))?,
            }),
            (2, v) => Ok(CommitOutcome::Conflict {
                current: number(v).ok_or_else(|| self.corrupt("commit"))?,
            }),
            _ => Err(self.corrupt("commit")),
        }
    }

    async fn history(
        &self,
        tenant: &TenantId,
        id: &NotificationId,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let mut conn = self.conn.clone();
        let reply: Value = redis::cmd("XRANGE")
            .arg(keys::history(tenant, id))
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(HISTORY_LEN_MAX)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error("XRANGE", &e))?;
        let entries = codec::stream_entries(reply).ok_or_else(|| self.corrupt("XRANGE"))?;
        entries
            .into_iter()
            .map(|entry| {
                let json = entry.field("e").ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "history entry {} of {id} has no payload",
                        entry.id
                    ))
                })?;
                codec::from_json(json)
            })
            .collect()
    }

    async fn list(&self, tenant: &TenantId, query: &ListQuery) -> Result<ListPage, StoreError> {
        self.list_page(tenant, query).await
    }

    async fn dead_letters(
        &self,
        tenant: &TenantId,
        filter: &DlqFilter,
        now_ms: u64,
    ) -> Result<DlqPage, StoreError> {
        let limit = filter.limit_capped();
        if !filter.ids.is_empty() {
            // Named ids: load them rather than walk the index; newest first, as the walk gives.
            let ids: Vec<NotificationId> = filter.ids.iter().cloned().collect();
            let mut page = DlqPage { scanned: ids.len(), ..DlqPage::default() };
            for chunk in ids.chunks(DLQ_LOAD_CHUNK) {
                let loaded = self.load_each(tenant, chunk).await?.into_iter().flatten();
                page.records.extend(loaded.filter(|r| filter.matches(r, now_ms)));
            }
            page.records.sort_by(|a, b| (b.updated_at_ms, &b.id).cmp(&(a.updated_at_ms, &a.id)));
            if page.records.len() > limit {
                page.records.truncate(limit);
                page.truncated = Some(Truncated::Limit);
            }
            return Ok(page);
        }
        let (from_ms, to_ms) = filter.window_ms(now_ms);
        let ids = self.dlq_ids(tenant, from_ms, to_ms).await?;
        let mut page = DlqPage::default();
        'walk: for chunk in ids.chunks(DLQ_LOAD_CHUNK) {
            for record in self.load_each(tenant, chunk).await? {
                if page.records.len() >= limit {
                    page.truncated = Some(Truncated::Limit);
                    break 'walk;
                }
                if page.scanned >= DLQ_SCAN_MAX {
                    page.truncated = Some(Truncated::Scan);
                    break 'walk;
                }
                page.scanned += 1;
                // Read after the index: a record that left the DLQ meanwhile no longer matches.
                if let Some(record) = record.filter(|r| filter.matches(r, now_ms)) {
                    page.records.push(record);
                }
            }
        }
        Ok(page)
    }

    async fn purge(
        &self,
        tenant: &TenantId,
        id: &NotificationId,
        expected_version: u64,
    ) -> Result<Purged, StoreError> {
        let shard = keys::shard_for(id);
        let mut conn = self.conn.clone();
        let reply: Value = scripts::PURGE_SCRIPT
            .key(keys::record(tenant, id))
            .key(keys::history(tenant, id))
            .arg(keys::tenant_prefix(shard, tenant))
            .arg(id.as_str())
            .arg(expected_version)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error("purge", &e))?;
        match parse_pair(reply).ok_or_else(|| self.corrupt("purge"))? {
            (0, _) => Ok(Purged::NotFound),
            (1, _) => Ok(Purged::Done),
            (2, v) => Ok(Purged::Conflict {
                current: v
                    .as_ref()
                    .and_then(parse_i64)
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or_else(|| self.corrupt("purge"))?,
            }),
            _ => Err(self.corrupt("purge")),
        }
    }

    async fn send_slot(
        &self,
        provider: &ProviderName,
        rate: &SendRate,
        now_ms: u64,
        wait_ms_max: u64,
    ) -> Result<SendSlot, StoreError> {
        let mut conn = self.conn.clone();
        let reply: Value = scripts::PACE_SCRIPT
            .key(keys::pacer(provider))
            .arg(now_ms)
            .arg(rate.interval_us())
            .arg(wait_ms_max)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error("send_slot", &e))?;
        let (code, value) = parse_pair(reply).ok_or_else(|| self.corrupt("send_slot"))?;
        let at_ms = value
            .as_ref()
            .and_then(parse_i64)
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| self.corrupt("send_slot"))?;
        match code {
            1 => Ok(SendSlot::Now),
            2 => Ok(SendSlot::At { at_ms }),
            0 => Ok(SendSlot::TooLate { at_ms }),
            _ => Err(self.corrupt("send_slot")),
        }
    }

    async fn put_api_key(&self, key_id: &str, key: &ApiKey) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: Value = redis::cmd("SET")
            .arg(keys::api_key(key_id))
            .arg(codec::to_json(key)?)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error("SET", &e))?;
        Ok(())
    }

    async fn api_key(&self, key_id: &str) -> Result<Option<ApiKey>, StoreError> {
        let mut conn = self.conn.clone();
        let json: Option<String> = redis::cmd("GET")
            .arg(keys::api_key(key_id))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error("GET", &e))?;
        json.map(|j| codec::from_json(&j)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact_url("redis://:hunter2@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redact_url("redis://bob:hunter2@h:1"), "redis://bob:***@h:1");
        assert_eq!(redact_url("redis://token@h"), "redis://***@h");
        assert_eq!(redact_url("redis://u:p@ss@h/2"), "redis://u:***@h/2");
        assert_eq!(url_secret("redis://bob:hunter2@h:1"), Some("hunter2".into()));
        assert_eq!(url_secret("redis://token@h"), Some("token".into()));
        assert_eq!(url_secret("redis://h:1"), None);
    }
}
