//! The Redis key layout and the notification ids that decide it.
//!
//! Every key starts with `courant:` and carries a hash tag (`{...}`), so every Lua script touches
//! exactly one hash slot and the data can live on Redis Cluster:
//!
//! | key | type | what |
//! |---|---|---|
//! | `courant:{sNN}:t:<tenant>:n:<id>` | HASH | the record (field `merged`: what its collapse group merged) |
//! | `courant:{sNN}:t:<tenant>:h:<id>` | STREAM | its history, capped at `HISTORY_LEN_MAX` |
//! | `courant:{sNN}:t:<tenant>:state:<kind>` | ZSET | ids by state, score = updated_at_ms |
//! | `courant:{sNN}:t:<tenant>:all` | ZSET | every id, score = updated_at_ms |
//! | `courant:{sNN}:t:<tenant>:dlq` | ZSET | dead-lettered ids, score = when |
//! | `courant:{sNN}:t:<tenant>:idem:<key>` | STRING | `id\nfingerprint`, or a claim (JSON: fingerprint, lease, answer), 24 h TTL |
//! | `courant:{sNN}:t:<tenant>:event:<sha256>` | STRING | the notification an event made for a recipient and channel, TTL the dedup window |
//! | `courant:{sNN}:q:ready` | STREAM | due wake-ups (consumer group `workers`) |
//! | `courant:{sNN}:q:timers` | ZSET | future wake-ups, score = due ms |
//! | `courant:{sNN}:q:parked` | ZSET | poisoned wake-ups, score = when parked |
//! | `courant:{sNN}:deadlines` | ZSET | records waiting on a worker, score = when overdue |
//! | `courant:{sNN}:dlq:count` | STRING | how many of the shard's records (every tenant) are dead-lettered |
//! | `courant:{w}:workers` | ZSET | the worker registry: worker id, score = last heartbeat ms |
//! | `courant:{w}:workers:entries` | HASH | worker id → its heartbeat (JSON: host, pid, slots, started, seen) |
//! | `courant:{st:<tenant>}:m:<minute>` | HASH | a tenant's delivery statistics of one minute (`kind\|channel\|provider\|detail` → count), 8-day TTL |
//! | `courant:{r:<tenant>:<recipient>}:rate:<channel>` | ZSET | a channel's rate window (member: notification id, score: admitted ms) |
//! | `courant:{r:<tenant>:<recipient>}:cap:<category>:<window_ms>` | ZSET | a category cap's window (the same) |
//! | `courant:{r:<tenant>:<recipient>}:collapse:<channel>:<sha256>` | STRING | the open collapse group of a key (its survivor), TTL the window |
//! | `courant:{r:<tenant>:<recipient>}:collapse:g:<survivor>` | HASH | a collapse group: window end, closed, merged items |
//! | `courant:{r:<tenant>:<recipient>}:collapse:of:<id>` | STRING | the group a notification joined (its survivor) |
//! | `courant:{i:<tenant>:<recipient>}:inbox:*` | ZSET, HASH, STRING | the in-app inbox ([`inbox`]) |
//! | `courant:events:<tenant>` | pub/sub channel | the tenant's committed transitions, JSON ([`transition_events`]) |
//! | `courant:apikey:<key id>` | STRING | an API key (JSON: tenant, secret hash) |
//! | `courant:{dNN}:t:<tenant>:r:<recipient>` | HASH | a recipient's directory entry |
//! | `courant:{dNN}:t:<tenant>:recipients` | ZSET | a tenant's recipient ids, all scores 0 |
//! | `courant:{t:<tenant>}:tpl` | ZSET | the tenant's registry template ids, all scored 0 |
//! | `courant:{t:<tenant>}:tpl:<id>` | HASH | a template: `published`, `latest`, times, `v:<n>` summaries |
//! | `courant:{t:<tenant>}:tpl:<id>:content` | HASH | its versions' content (JSON) by number |
//!
//! Campaigns' keys are in [`campaigns`].
//!
//! `NN` is the shard (two hex digits) of the notification: [`SHARDS`] shards spread the load over
//! a cluster while keeping a notification's record, history, indexes and wake-ups in one slot.
//! The recipients directory has its own [`SHARDS`] shards (`{dNN}`, by tenant and recipient id,
//! see [`recipient_shard`]), so an entry and its place in the tenant's index are in one slot,
//! and a tenant's recipients spread over the cluster.
//! Tenant, recipient and notification ids are restricted to `[A-Za-z0-9._-]`
//! (`steps::model::check_id`), so they cannot break out of a key.

pub mod campaigns;
pub mod inbox;

use sha2::{Digest, Sha256};
use steps::limits::Limit;
use steps::model::{NotificationId, ProviderName, RecipientId, TemplateId, TenantId};
use workflows::machine::StateKind;
use workflows::ports::{CollapseGroup, EventKey};

/// The most a worker host's clock may differ from the store's (Redis `TIME`), in ms. Wake-up
/// times are written with the committing worker's clock and promoted with another's; beyond this
/// skew a deferral can come due the moment it is written, and a notification waiting on a
/// provider can spin. `courant serve` checks it at start-up.
pub const CLOCK_SKEW_MS_MAX: u64 = 1_000;

/// How many shards the per-notification keys and the wake queue are spread over. Fixed: changing
/// it moves every key.
pub const SHARDS: u16 = 16;

/// The prefix of every key.
pub const PREFIX: &str = "courant";

/// The length of a minted notification id: `n`, two hex digits of shard, a 26-character ULID.
const MINTED_ID_LEN: usize = 1 + 2 + 26;

/// FNV-1a, 64 bits: stable across processes, platforms and releases (unlike `DefaultHasher`).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn shard_of_hash(hash: u64) -> u16 {
    // SHARDS is small, so the remainder always fits.
    (hash % u64::from(SHARDS)) as u16
}

/// The shard an idempotency key of a tenant lives in. A notification created with the key is
/// minted into the same shard, so the key and the record are in one slot.
pub fn idempotency_shard(tenant: &TenantId, idempotency_key: &str) -> u16 {
    let mut bytes = Vec::with_capacity(tenant.as_str().len() + 1 + idempotency_key.len());
    bytes.extend_from_slice(tenant.as_str().as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(idempotency_key.as_bytes());
    shard_of_hash(fnv1a(&bytes))
}

/// Mints a notification id, `n{shard:02x}{ulid}`. `ulid` is a 26-character Crockford string the
/// caller generates (this crate draws no randomness). With an idempotency key the shard is the
/// key's (see [`idempotency_shard`]), otherwise it is derived from the ULID.
///
/// Characters of `ulid` outside `[A-Za-z0-9]` are dropped and it is cut to 26 characters, so the
/// result is always a valid id.
pub fn new_notification_id(
    tenant: &TenantId,
    idempotency_key: Option<&str>,
    ulid: &str,
) -> NotificationId {
    let shard = match idempotency_key {
        Some(key) => idempotency_shard(tenant, key),
        None => shard_of_hash(fnv1a(ulid.as_bytes())),
    };
    new_notification_id_in(shard, ulid)
}

/// Mints a notification id in `shard` (taken modulo [`SHARDS`]), as [`new_notification_id`]
/// does: for a notification that must live in its event's shard ([`event_shard`]).
pub fn new_notification_id_in(shard: u16, ulid: &str) -> NotificationId {
    let shard = shard % SHARDS;
    let tail: String = ulid.chars().filter(char::is_ascii_alphanumeric).take(26).collect();
    let id = format!("n{shard:02x}{tail}");
    // Invariant: 3 to 29 characters of [a-zA-Z0-9], which `check_id` always accepts.
    NotificationId::new(id).expect("a minted notification id is always valid")
}

/// The shard encoded in an id minted by [`new_notification_id`]; `None` for any other id.
pub fn shard_of(id: &NotificationId) -> Option<u16> {
    let s = id.as_str();
    if s.len() != MINTED_ID_LEN || !s.starts_with('n') {
        return None;
    }
    let hex = s.get(1..3)?;
    if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    if !s[3..].bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let shard = u16::from_str_radix(hex, 16).ok()?;
    (shard < SHARDS).then_some(shard)
}

/// The shard a notification's keys live in: the minted one, or for ids minted elsewhere (the
/// simulator, imports) one derived from the id, so every valid id has a stable home.
pub fn shard_for(id: &NotificationId) -> u16 {
    shard_of(id).unwrap_or_else(|| shard_of_hash(fnv1a(id.as_str().as_bytes())))
}

/// The hash tag of a shard, `{s0a}`.
pub fn shard_tag(shard: u16) -> String {
    format!("{{s{shard:02x}}}")
}

/// The prefix of every tenant's per-shard keys, `courant:{s0a}:t:`. The reaper's script appends
/// `<tenant>:n:<id>` to reach a record named in the deadline index, staying in the slot.
pub fn tenants_prefix(shard: u16) -> String {
    format!("{PREFIX}:{}:t:", shard_tag(shard))
}

/// The prefix of a tenant's per-shard keys, `courant:{s0a}:t:<tenant>:`. Scripts append
/// `state:<kind>`, `all` and `dlq` to it, so keys built inside a script stay in the slot.
pub fn tenant_prefix(shard: u16, tenant: &TenantId) -> String {
    format!("{}{tenant}:", tenants_prefix(shard))
}

/// A notification's record (HASH).
pub fn record(tenant: &TenantId, id: &NotificationId) -> String {
    format!("{}n:{id}", tenant_prefix(shard_for(id), tenant))
}

/// A notification's history (STREAM).
pub fn history(tenant: &TenantId, id: &NotificationId) -> String {
    format!("{}h:{id}", tenant_prefix(shard_for(id), tenant))
}

/// A tenant's index of one state in one shard (ZSET, score = updated_at_ms).
pub fn state_index(shard: u16, tenant: &TenantId, kind: StateKind) -> String {
    format!("{}state:{}", tenant_prefix(shard, tenant), kind.as_str())
}

/// A tenant's index of every notification in one shard (ZSET, score = updated_at_ms).
pub fn all_index(shard: u16, tenant: &TenantId) -> String {
    format!("{}all", tenant_prefix(shard, tenant))
}

/// A tenant's dead-letter queue in one shard (ZSET, score = when dead-lettered).
pub fn dlq(shard: u16, tenant: &TenantId) -> String {
    format!("{}dlq", tenant_prefix(shard, tenant))
}

/// The longest idempotency key kept verbatim in a key name; longer or unusual keys are hashed.
const IDEMPOTENCY_KEY_VERBATIM_MAX: usize = 128;

/// An idempotency key (STRING `id\nfingerprint`, 24 h TTL), in the key's shard. Keys outside the
/// id alphabet (the header is client-supplied) are replaced by their SHA-256, so nothing a client
/// sends can change the key's shape.
pub fn idempotency(tenant: &TenantId, idempotency_key: &str) -> String {
    let shard = idempotency_shard(tenant, idempotency_key);
    let verbatim = idempotency_key.len() <= IDEMPOTENCY_KEY_VERBATIM_MAX
        && steps::model::check_id(idempotency_key).is_ok();
    let name = if verbatim {
        idempotency_key.to_owned()
    } else {
        format!("sha256-{}", hex::encode(Sha256::digest(idempotency_key.as_bytes())))
    };
    format!("{}idem:{name}", tenant_prefix(shard, tenant))
}

/// The bytes an event is known by: its id, the recipient and the channel, `\0`-separated.
fn event_bytes(event: &EventKey) -> Vec<u8> {
    let mut bytes = Vec::new();
    for part in [event.event.as_str(), event.recipient.as_str(), event.channel.as_str()] {
        bytes.extend_from_slice(part.as_bytes());
        bytes.push(0);
    }
    bytes
}

/// The shard an event of a tenant lives in (its dedup key, and the notification it makes): a
/// submission with an `event_id` is minted there ([`new_notification_id_in`]) so the check,
/// the record and the remembered event are one script.
pub fn event_shard(event: &EventKey) -> u16 {
    let mut bytes = event.tenant.as_str().as_bytes().to_vec();
    bytes.push(0);
    bytes.extend(event_bytes(event));
    shard_of_hash(fnv1a(&bytes))
}

/// An event seen for a recipient on a channel (STRING: the notification it made, TTL the dedup
/// window), in the event's shard. The application's event id is hashed into the name.
pub fn event(event: &EventKey) -> String {
    let name = hex::encode(Sha256::digest(event_bytes(event)));
    format!("{}event:{name}", tenant_prefix(event_shard(event), &event.tenant))
}

/// The open collapse group of a recipient's key on a channel (STRING: its survivor's id, TTL
/// the window), under the recipient's hash tag. The application's key is hashed into the name.
pub fn collapse_open(group: &CollapseGroup) -> String {
    let key = hex::encode(Sha256::digest(group.key.as_str().as_bytes()));
    format!("{PREFIX}:{{r:{}:{}}}:collapse:{}:{key}", group.tenant, group.recipient, group.channel)
}

/// The prefix of a recipient's collapse groups, `courant:{r:<tenant>:<recipient>}:collapse:g:`:
/// each group (HASH: `closes`, `closed`, `n`, `i:<k>` the k-th merged item's JSON) is named by
/// its survivor's id after it, so the join script reaches any group of the recipient in its
/// slot.
pub fn collapse_groups_prefix(tenant: &TenantId, recipient: &RecipientId) -> String {
    format!("{PREFIX}:{{r:{tenant}:{recipient}}}:collapse:g:")
}

/// Which group a notification joined (STRING: its survivor's id; a survivor names itself).
pub fn collapse_member(tenant: &TenantId, recipient: &RecipientId, id: &NotificationId) -> String {
    format!("{PREFIX}:{{r:{tenant}:{recipient}}}:collapse:of:{id}")
}

/// A shard's ready wake-ups (STREAM, consumer group [`CONSUMER_GROUP`]).
pub fn ready(shard: u16) -> String {
    format!("{PREFIX}:{}:q:ready", shard_tag(shard))
}

/// A shard's future wake-ups (ZSET, score = due ms).
pub fn timers(shard: u16) -> String {
    format!("{PREFIX}:{}:q:timers", shard_tag(shard))
}

/// A shard's parked (poisoned) wake-ups (ZSET, score = when parked).
pub fn parked(shard: u16) -> String {
    format!("{PREFIX}:{}:q:parked", shard_tag(shard))
}

/// A shard's deadline index (ZSET, member `tenant/id`, score = when the record is overdue): every
/// record that waits on a worker, written by the same script as the record (see
/// `queue::deadline_ms`), read by the reaper.
pub fn deadlines(shard: u16) -> String {
    format!("{PREFIX}:{}:deadlines", shard_tag(shard))
}

/// How many records of a shard, every tenant's, are dead-lettered (STRING counter). The scripts
/// that add to or remove from a tenant's `dlq` index keep it, from the index's own answer (ZADD
/// of a new member, ZREM of a present one), so it never drifts; [`DLQ_COUNT_SUFFIX`] is how they
/// name it after the shard's `courant:{sNN}:` prefix.
pub fn dlq_count(shard: u16) -> String {
    format!("{PREFIX}:{}:{DLQ_COUNT_SUFFIX}", shard_tag(shard))
}

/// See [`dlq_count`].
pub const DLQ_COUNT_SUFFIX: &str = "dlq:count";

/// The worker registry (ZSET: worker id, score = its last heartbeat, ms): see
/// `queue::WakeQueue::heartbeat`. One small key for the whole fleet.
pub fn workers() -> String {
    format!("{PREFIX}:{{w}}:workers")
}

/// The worker registry's entries (HASH: worker id → JSON of `queue::WorkerBeat`: host, pid,
/// slots, start and last heartbeat times), beside [`workers`] in its slot.
pub fn worker_entries() -> String {
    format!("{PREFIX}:{{w}}:workers:entries")
}

/// A tenant's delivery statistics for one minute (HASH: `stats::StatKey` field → count;
/// expires after `stats::STATS_TTL_MS`). `minute` is ms since the epoch / 60,000. A tenant's
/// minutes share its `{st:<tenant>}` tag, so reading a window is one pipeline to one node.
pub fn stats_minute(tenant: &TenantId, minute: u64) -> String {
    format!("{PREFIX}:{{st:{tenant}}}:m:{minute}")
}

/// The consumer group every worker reads the ready streams through.
pub const CONSUMER_GROUP: &str = "workers";

/// One of a recipient's limit windows (ZSET: member the notification id, score when it was
/// admitted): `rate:<channel>` or `cap:<category>:<window_ms>` ([`Limit::name`]), all of a
/// recipient's under one hash tag so one script takes them together.
pub fn limit(tenant: &TenantId, recipient: &RecipientId, limit: &Limit) -> String {
    format!("{PREFIX}:{{r:{tenant}:{recipient}}}:{}", limit.name())
}

/// A provider's send pacer: its next free send slot, in µs (STRING). Shared by every tenant, as
/// the provider's own limit is.
pub fn pacer(provider: &ProviderName) -> String {
    format!("{PREFIX}:{{p:{provider}}}:pacer")
}

/// The longest API key id kept verbatim in a key name; longer or unusual ids are hashed.
const API_KEY_ID_VERBATIM_MAX: usize = 64;

/// The pub/sub channel a tenant's committed transitions are published on (not a key: nothing is
/// stored).
pub fn transition_events(tenant: &TenantId) -> String {
    format!("{PREFIX}:events:{tenant}")
}

/// The pattern matching every tenant's [`transition_events`] channel: what an API process
/// subscribes to.
pub const TRANSITION_EVENTS_PATTERN: &str = "courant:events:*";

/// An API key by its public id (STRING, the JSON of `workflows::ports::ApiKey`). Ids outside
/// `[A-Za-z0-9._-]` (they come from clients) are replaced by their SHA-256.
pub fn api_key(key_id: &str) -> String {
    let verbatim =
        key_id.len() <= API_KEY_ID_VERBATIM_MAX && steps::model::check_id(key_id).is_ok();
    if verbatim {
        format!("{PREFIX}:apikey:{key_id}")
    } else {
        format!("{PREFIX}:apikey:sha256-{}", hex::encode(Sha256::digest(key_id.as_bytes())))
    }
}

/// The directory shard of a recipient: its entry and its index entry live there.
pub fn recipient_shard(tenant: &TenantId, recipient: &RecipientId) -> u16 {
    let mut bytes = Vec::with_capacity(tenant.as_str().len() + 1 + recipient.as_str().len());
    bytes.extend_from_slice(tenant.as_str().as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(recipient.as_str().as_bytes());
    shard_of_hash(fnv1a(&bytes))
}

/// A recipient's directory entry (HASH: `contact` and `prefs` JSON, `rev`, `updated`, and one
/// `dev:<device id>` JSON field per push device).
pub fn recipient(tenant: &TenantId, recipient: &RecipientId) -> String {
    let shard = recipient_shard(tenant, recipient);
    format!("{PREFIX}:{{d{shard:02x}}}:t:{tenant}:r:{recipient}")
}

/// A tenant's recipient ids in one directory shard (ZSET, every score 0, so `ZRANGEBYLEX` walks
/// them in id order).
pub fn recipient_index(shard: u16, tenant: &TenantId) -> String {
    format!("{PREFIX}:{{d{shard:02x}}}:t:{tenant}:recipients")
}

/// A tenant's registry template ids (ZSET, every score 0, so `ZRANGEBYLEX` pages them in id
/// order). A tenant's whole registry shares one hash tag: creating a template checks the
/// tenant's count in the same script.
pub fn templates(tenant: &TenantId) -> String {
    format!("{PREFIX}:{{t:{tenant}}}:tpl")
}

/// A registry template (HASH): `published` (absent until one is), `latest`, `created`,
/// `updated`, and each version's summary under `v:<n>` (JSON).
pub fn template(tenant: &TenantId, id: &TemplateId) -> String {
    format!("{PREFIX}:{{t:{tenant}}}:tpl:{id}")
}

/// A registry template's versions' content (HASH: `<n>` → JSON), apart from the template so that
/// reading the template does not read every version's text.
pub fn template_content(tenant: &TenantId, id: &TemplateId) -> String {
    format!("{PREFIX}:{{t:{tenant}}}:tpl:{id}:content")
}

#[cfg(test)]
mod tests {
    use super::*;
    use steps::model::Channel;

    const ULID: &str = "01HZY3K7Q5W9X2M4N6P8R0T2V4";

    fn tenant(s: &str) -> TenantId {
        TenantId::new(s).unwrap()
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn minted_ids_round_trip_their_shard() {
        let id = new_notification_id(&tenant("acme"), None, ULID);
        assert_eq!(id.as_str().len(), MINTED_ID_LEN);
        assert!(id.as_str().ends_with(ULID));
        let shard = shard_of(&id).unwrap();
        assert_eq!(shard, (fnv1a(ULID.as_bytes()) % 16) as u16);
        assert_eq!(&id.as_str()[..3], format!("n{shard:02x}"));
        assert_eq!(shard_for(&id), shard);
    }

    #[test]
    fn an_idempotency_key_puts_the_id_in_the_key_shard() {
        let acme = tenant("acme");
        for key in ["order-1", "order-2", "a key with spaces", "x"] {
            let id = new_notification_id(&acme, Some(key), ULID);
            assert_eq!(shard_of(&id), Some(idempotency_shard(&acme, key)));
            let idem = idempotency(&acme, key);
            let tag = shard_tag(idempotency_shard(&acme, key));
            assert!(idem.starts_with(&format!("courant:{tag}:t:acme:idem:")), "{idem}");
            assert!(record(&acme, &id).starts_with(&format!("courant:{tag}:")));
        }
        // The tenant is part of the hash: the same key of two tenants spreads independently.
        let shards: std::collections::BTreeSet<u16> =
            (0..64).map(|i| idempotency_shard(&tenant(&format!("t{i}")), "k")).collect();
        assert!(shards.len() > 8, "{shards:?}");
    }

    #[test]
    fn ids_not_minted_here_have_no_encoded_shard_but_a_stable_home() {
        for s in ["n_123", "nzz01HZY3K7Q5W9X2M4N6P8R0T2V4", "n1001HZY3K7Q5W9X2M4N6P8R0T2V4", "abc"]
        {
            let id = NotificationId::new(s).unwrap();
            assert_eq!(shard_of(&id), None, "{s}");
            assert_eq!(shard_for(&id), shard_for(&id));
            assert!(shard_for(&id) < SHARDS);
        }
    }

    #[test]
    fn odd_ulids_still_make_valid_ids() {
        let id = new_notification_id(&tenant("acme"), None, "not a ulid: {}/\n");
        assert!(steps::model::check_id(id.as_str()).is_ok());
        let long = "A".repeat(40);
        let id = new_notification_id(&tenant("acme"), None, &long);
        assert_eq!(id.as_str().len(), MINTED_ID_LEN);
        assert!(shard_of(&id).is_some());
    }

    #[test]
    fn keys_have_the_documented_shapes() {
        let acme = tenant("acme");
        let id = NotificationId::new(format!("n0a{ULID}")).unwrap();
        assert_eq!(record(&acme, &id), format!("courant:{{s0a}}:t:acme:n:n0a{ULID}"));
        assert_eq!(history(&acme, &id), format!("courant:{{s0a}}:t:acme:h:n0a{ULID}"));
        assert_eq!(
            state_index(10, &acme, StateKind::DeadLettered),
            "courant:{s0a}:t:acme:state:dead_lettered"
        );
        assert_eq!(dlq(10, &acme), "courant:{s0a}:t:acme:dlq");
        assert_eq!(ready(15), "courant:{s0f}:q:ready");
        assert_eq!(timers(0), "courant:{s00}:q:timers");
        assert_eq!(parked(1), "courant:{s01}:q:parked");
        assert_eq!(deadlines(2), "courant:{s02}:deadlines");
        assert_eq!(
            format!("{}acme:n:n0a{ULID}", tenants_prefix(10)),
            record(&acme, &id),
            "the reaper's script reaches a record from the prefix"
        );
        let bob = RecipientId::new("bob").unwrap();
        let sms = Limit::Channel { channel: Channel::Sms, max: 3, window_ms: 60_000 };
        assert_eq!(limit(&acme, &bob, &sms), "courant:{r:acme:bob}:rate:sms");
        let category = steps::model::Category::new("marketing").unwrap();
        let cap = Limit::Cap { category, max: 1, window_ms: 86_400_000 };
        assert_eq!(limit(&acme, &bob, &cap), "courant:{r:acme:bob}:cap:marketing:86400000");
        assert_eq!(api_key("ab12"), "courant:apikey:ab12");
        let shard = recipient_shard(&acme, &bob);
        assert_eq!(recipient(&acme, &bob), format!("courant:{{d{shard:02x}}}:t:acme:r:bob"));
        assert_eq!(recipient_index(3, &acme), "courant:{d03}:t:acme:recipients");
        let welcome = TemplateId::new("welcome").unwrap();
        assert_eq!(templates(&acme), "courant:{t:acme}:tpl");
        assert_eq!(template(&acme, &welcome), "courant:{t:acme}:tpl:welcome");
        assert_eq!(template_content(&acme, &welcome), "courant:{t:acme}:tpl:welcome:content");
    }

    #[test]
    fn an_event_puts_its_notification_in_the_event_shard() {
        let key = |event: &str, recipient: &str, channel| EventKey {
            tenant: tenant("acme"),
            event: steps::correlation::EventId::new(event).unwrap(),
            recipient: RecipientId::new(recipient).unwrap(),
            channel,
        };
        let shipped = key("order-1:shipped", "bob", Channel::Email);
        let shard = event_shard(&shipped);
        let id = new_notification_id_in(shard, ULID);
        assert_eq!(shard_of(&id), Some(shard));
        let name = event(&shipped);
        assert!(name.starts_with(&format!("courant:{}:t:acme:event:", shard_tag(shard))), "{name}");
        assert!(!name.contains("order-1"), "the application's event id is hashed: {name}");
        // Another recipient, channel or tenant is another event.
        assert_ne!(name, event(&key("order-1:shipped", "carol", Channel::Email)));
        assert_ne!(name, event(&key("order-1:shipped", "bob", Channel::Sms)));
        let other = EventKey { tenant: tenant("zeta"), ..shipped.clone() };
        assert_ne!(name, event(&other));
        assert_eq!(new_notification_id_in(SHARDS + 3, ULID), new_notification_id_in(3, ULID));
    }

    #[test]
    fn unusual_idempotency_keys_are_hashed() {
        let acme = tenant("acme");
        let key = idempotency(&acme, "a:b}{c");
        assert!(key.contains(":idem:sha256-"), "{key}");
        assert!(!key.contains("a:b}{c"));
        assert!(idempotency(&acme, "plain-key_1.2").ends_with(":idem:plain-key_1.2"));
    }
}
