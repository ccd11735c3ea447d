//! The Redis keys of campaigns, and the ids campaigns and their notifications get.
//!
//! A campaign lives in one shard (its id says which, as a notification's does): its hash, its
//! segment list and the idempotency keys of its appends share the shard's hash tag, so every
//! campaign script touches one slot. Its counters and open set are kept per shard of its
//! *notifications*, beside their records, so the record scripts update them in the same slot.
//!
//! | key | type | what |
//! |---|---|---|
//! | `courant:{sNN}:t:<tenant>:c:<cid>` | HASH | the campaign: `spec` (JSON), `state`, `recipients`, `position`, `cursor`, `rejected`, times, `lease`, `lease_until` |
//! | `courant:{sNN}:t:<tenant>:c:<cid>:members` | LIST | its segment's recipient ids, in order |
//! | `courant:{sNN}:t:<tenant>:c:<cid>:idem:<key>` | STRING | an append's idempotency key: `fingerprint\nrecipients`, 24 h |
//! | `courant:{sNN}:t:<tenant>:cidem:<key>` | STRING | a create's idempotency key: `cid\nfingerprint`, 24 h |
//! | `courant:{sNN}:t:<tenant>:campaigns` | ZSET | the tenant's campaigns in this shard, score 0, member `<ulid>:<cid>` (newest first by `ZREVRANGEBYLEX`) |
//! | `courant:{sNN}:campaigns:due` | ZSET | campaigns with work, member `tenant/cid`, score = when the next page may be claimed |
//! | `courant:{sNN}:t:<tenant>:c:<cid>:counts` | HASH | per state (and skip reason), the campaign's notifications in this shard |
//! | `courant:{sNN}:t:<tenant>:c:<cid>:open` | SET | the campaign's notifications in this shard that are not terminal |

use sha2::{Digest, Sha256};
use steps::model::{NotificationId, RecipientId, TenantId};
use workflows::campaign::CampaignId;

use super::{PREFIX, SHARDS, fnv1a, idempotency_shard, shard_tag, tenant_prefix};

/// The length of a minted campaign id: `c`, two hex digits of shard, a 26-character ULID.
const MINTED_ID_LEN: usize = 1 + 2 + 26;
/// Crockford's base 32, as ULIDs use it.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Mints a campaign id, `c{shard:02x}{ulid}`: with an idempotency key, in the key's shard (so
/// the key and the campaign are written by one script), otherwise in the ULID's.
pub fn new_campaign_id(tenant: &TenantId, idempotency_key: Option<&str>, ulid: &str) -> CampaignId {
    let shard = match idempotency_key {
        Some(key) => idempotency_shard(tenant, key),
        None => (fnv1a(ulid.as_bytes()) % u64::from(SHARDS)) as u16,
    };
    let tail: String = ulid.chars().filter(char::is_ascii_alphanumeric).take(26).collect();
    CampaignId::new(format!("c{shard:02x}{tail}")).expect("a minted campaign id is always valid")
}

/// The shard a campaign lives in: the minted one, or one derived from the id.
pub fn campaign_shard(id: &CampaignId) -> u16 {
    let s = id.as_str();
    let minted = s.len() == MINTED_ID_LEN
        && s.starts_with('c')
        && s[1..3].bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let shard = if minted { u16::from_str_radix(&s[1..3], 16).ok() } else { None };
    shard
        .filter(|s| *s < SHARDS)
        .unwrap_or_else(|| (fnv1a(id.as_str().as_bytes()) % u64::from(SHARDS)) as u16)
}

/// The id of campaign `id`'s notification for `recipient`: `n`, a shard, and 26 Crockford
/// characters of SHA-256 over the tenant, the campaign and the recipient (130 bits: ids of two
/// recipients never meet). Deterministic, so a page expanded twice creates nothing twice.
pub fn campaign_notification_id(
    tenant: &TenantId,
    id: &CampaignId,
    recipient: &RecipientId,
) -> NotificationId {
    let mut hasher = Sha256::new();
    for part in [tenant.as_str(), id.as_str(), recipient.as_str()] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    let shard = u16::from(digest[0]) % SHARDS;
    // 26 characters of 5 bits each from the digest's bits after the first byte.
    let mut tail = String::with_capacity(26);
    let (mut acc, mut bits) = (0_u32, 0_u32);
    for &byte in &digest[1..] {
        if tail.len() == 26 {
            break;
        }
        acc = (acc << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 && tail.len() < 26 {
            bits -= 5;
            tail.push(char::from(CROCKFORD[((acc >> bits) & 31) as usize]));
        }
        acc &= (1 << bits) - 1;
    }
    NotificationId::new(format!("n{shard:02x}{tail}")).expect("a derived id is always valid")
}

/// A campaign's hash.
pub fn campaign(tenant: &TenantId, id: &CampaignId) -> String {
    format!("{}c:{id}", tenant_prefix(campaign_shard(id), tenant))
}

/// A campaign's segment (LIST of recipient ids).
pub fn members(tenant: &TenantId, id: &CampaignId) -> String {
    format!("{}:members", campaign(tenant, id))
}

/// The idempotency key of an append to a campaign, in the campaign's slot. Keys outside the id
/// alphabet are replaced by their SHA-256.
pub fn append_idempotency(tenant: &TenantId, id: &CampaignId, key: &str) -> String {
    format!("{}:idem:{}", campaign(tenant, id), key_name(key))
}

/// The idempotency key of a campaign's creation, in the key's shard (where the campaign is
/// minted).
pub fn create_idempotency(tenant: &TenantId, key: &str) -> String {
    let shard = idempotency_shard(tenant, key);
    format!("{}cidem:{}", tenant_prefix(shard, tenant), key_name(key))
}

fn key_name(key: &str) -> String {
    if key.len() <= 128 && steps::model::check_id(key).is_ok() {
        key.to_owned()
    } else {
        format!("sha256-{}", hex::encode(Sha256::digest(key.as_bytes())))
    }
}

/// A tenant's campaign index in one shard (ZSET, score 0, lexicographic by [`index_member`]).
pub fn index(shard: u16, tenant: &TenantId) -> String {
    format!("{}campaigns", tenant_prefix(shard, tenant))
}

/// A campaign's member in its tenant's index: its ULID (time-ordered) then its id, so the
/// index reads newest first with `ZREVRANGEBYLEX`.
pub fn index_member(id: &CampaignId) -> String {
    let s = id.as_str();
    let ulid = if s.len() == MINTED_ID_LEN { &s[3..] } else { s };
    format!("{ulid}:{s}")
}

/// Parses [`index_member`].
pub fn parse_index_member(member: &str) -> Option<CampaignId> {
    CampaignId::new(member.rsplit_once(':')?.1).ok()
}

/// A shard's index of campaigns with work (ZSET, member `tenant/cid`, score = next page due).
pub fn due(shard: u16) -> String {
    format!("{PREFIX}:{}:campaigns:due", shard_tag(shard))
}

/// A campaign's member in the due index.
pub fn due_member(tenant: &TenantId, id: &CampaignId) -> String {
    format!("{tenant}/{id}")
}

/// Parses [`due_member`].
pub fn parse_due_member(member: &str) -> Option<(TenantId, CampaignId)> {
    let (tenant, id) = member.split_once('/')?;
    Some((TenantId::new(tenant).ok()?, CampaignId::new(id).ok()?))
}

/// A campaign's counters in one shard of its notifications (HASH). The record scripts build the
/// same name from the tenant prefix.
pub fn counts(shard: u16, tenant: &TenantId, id: &CampaignId) -> String {
    format!("{}c:{id}:counts", tenant_prefix(shard, tenant))
}

/// A campaign's open (not terminal) notifications in one shard (SET).
pub fn open(shard: u16, tenant: &TenantId, id: &CampaignId) -> String {
    format!("{}c:{id}:open", tenant_prefix(shard, tenant))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{shard_for, shard_of};

    const ULID: &str = "01HZY3K7Q5W9X2M4N6P8R0T2V4";

    #[test]
    fn campaign_ids_carry_their_shard() {
        let acme = TenantId::new("acme").unwrap();
        let id = new_campaign_id(&acme, None, ULID);
        assert_eq!(id.as_str().len(), MINTED_ID_LEN);
        assert_eq!(u64::from(campaign_shard(&id)), fnv1a(ULID.as_bytes()) % 16);
        let keyed = new_campaign_id(&acme, Some("launch-1"), ULID);
        assert_eq!(campaign_shard(&keyed), idempotency_shard(&acme, "launch-1"));
        let tag = shard_tag(campaign_shard(&keyed));
        assert!(create_idempotency(&acme, "launch-1").starts_with(&format!("courant:{tag}:")));
        assert!(campaign(&acme, &keyed).starts_with(&format!("courant:{tag}:t:acme:c:c")));
        assert!(members(&acme, &keyed).ends_with(":members"));
        assert!(append_idempotency(&acme, &keyed, "p2").starts_with(&campaign(&acme, &keyed)));
        let odd = CampaignId::new("my-campaign").unwrap();
        assert!(campaign_shard(&odd) < SHARDS);
    }

    #[test]
    fn notification_ids_are_derived_stable_and_minted_shaped() {
        let acme = TenantId::new("acme").unwrap();
        let cid = new_campaign_id(&acme, None, ULID);
        let ada = RecipientId::new("ada").unwrap();
        let a = campaign_notification_id(&acme, &cid, &ada);
        assert_eq!(a, campaign_notification_id(&acme, &cid, &ada));
        assert_eq!(a.as_str().len(), 29);
        assert_eq!(shard_of(&a), Some(shard_for(&a)), "a derived id names its shard");
        let bob = RecipientId::new("bob").unwrap();
        assert_ne!(a, campaign_notification_id(&acme, &cid, &bob));
        let other = new_campaign_id(&acme, None, "01HZY3K7Q5W9X2M4N6P8R0T2V5");
        assert_ne!(a, campaign_notification_id(&acme, &other, &ada));
        // Spread over the shards.
        let shards: std::collections::BTreeSet<u16> = (0..200)
            .map(|n| {
                let r = RecipientId::new(format!("r{n}")).unwrap();
                shard_for(&campaign_notification_id(&acme, &cid, &r))
            })
            .collect();
        assert_eq!(shards.len(), 16);
    }

    #[test]
    fn index_members_sort_newest_first_and_parse_back() {
        let acme = TenantId::new("acme").unwrap();
        let old = new_campaign_id(&acme, None, "01HZY3K7Q5W9X2M4N6P8R0T2V4");
        let new = new_campaign_id(&acme, None, "01HZY3K7Q6W9X2M4N6P8R0T2V4");
        assert!(index_member(&new) > index_member(&old));
        assert_eq!(parse_index_member(&index_member(&new)), Some(new.clone()));
        assert_eq!(parse_due_member(&due_member(&acme, &new)), Some((acme, new)));
        assert_eq!(due(3), "courant:{s03}:campaigns:due");
    }
}
