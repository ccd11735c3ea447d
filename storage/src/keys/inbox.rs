//! The Redis keys of the in-app inbox, and the channel its new entries are published on.
//!
//! A recipient's inbox lives under one hash tag, `{i:<tenant>:<recipient>}`, so every inbox
//! operation is one script over one slot. The sets are kept in step by those scripts: every
//! entry is in `ids`, and in exactly one of `active` (not archived) and `archived`; `unread` is
//! the part of `active` not yet read, so its `ZCARD` is the unread count, exact at every step.
//!
//! | key | type | what |
//! |---|---|---|
//! | `courant:{i:<tenant>:<recipient>}:inbox:seq` | STRING | the newest sequence number handed out |
//! | `courant:{i:<tenant>:<recipient>}:inbox:ids` | ZSET | every entry (member: notification id, score: sequence) |
//! | `courant:{i:<tenant>:<recipient>}:inbox:active` | ZSET | entries not archived (the same) |
//! | `courant:{i:<tenant>:<recipient>}:inbox:unread` | ZSET | entries neither read nor archived (the same) |
//! | `courant:{i:<tenant>:<recipient>}:inbox:archived` | ZSET | archived entries (the same) |
//! | `courant:{i:<tenant>:<recipient>}:inbox:items` | HASH | entry content by notification id (JSON) |
//! | `courant:{i:<tenant>:<recipient>}:inbox:read_at` | HASH | when each read entry was first read, ms |
//! | `courant:{i:<tenant>:<recipient>}:inbox:archived_at` | HASH | when each archived entry was archived, ms |
//! | `courant:inbox-events:<tenant>` | pub/sub channel | every new entry of the tenant's recipients |

use steps::model::{RecipientId, TenantId};

use super::PREFIX;

/// The keys of one recipient's inbox, in the order every inbox script takes them (`KEYS[1]` to
/// `KEYS[8]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxKeys(pub [String; 8]);

impl InboxKeys {
    /// The inbox of `recipient` in `tenant`.
    pub fn new(tenant: &TenantId, recipient: &RecipientId) -> Self {
        let key = |name: &str| format!("{PREFIX}:{{i:{tenant}:{recipient}}}:inbox:{name}");
        Self([
            key("seq"),
            key("ids"),
            key("active"),
            key("unread"),
            key("archived"),
            key("items"),
            key("read_at"),
            key("archived_at"),
        ])
    }
}

/// The pub/sub channel a tenant's new inbox entries are published on.
pub fn inbox_events(tenant: &TenantId) -> String {
    format!("{PREFIX}:inbox-events:{tenant}")
}

/// The pattern matching every tenant's [`inbox_events`] channel: what an API process subscribes
/// to.
pub const INBOX_EVENTS_PATTERN: &str = "courant:inbox-events:*";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inbox_is_one_hash_tag_and_events_match_the_pattern() {
        let acme = TenantId::new("acme").unwrap();
        let bob = RecipientId::new("bob").unwrap();
        let keys = InboxKeys::new(&acme, &bob);
        assert_eq!(keys.0[0], "courant:{i:acme:bob}:inbox:seq");
        assert_eq!(keys.0[7], "courant:{i:acme:bob}:inbox:archived_at");
        assert!(keys.0.iter().all(|k| k.starts_with("courant:{i:acme:bob}:inbox:")));
        let channel = inbox_events(&acme);
        assert_eq!(channel, "courant:inbox-events:acme");
        assert!(channel.starts_with(INBOX_EVENTS_PATTERN.trim_end_matches('*')));
    }
}
