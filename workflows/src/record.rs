//! What courant persists about a notification: the record (state, version, request, times) and
//! its history (every transition with its time, cause and decision inputs).

use serde::{Deserialize, Serialize};
use steps::model::{NotificationId, ProviderName, Request, TenantId};

use crate::machine::{State, StateKind};

/// The durable record of one notification. `version` grows by one with every commit; a wake-up
/// carrying an older version is stale and does nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The owning tenant.
    pub tenant: TenantId,
    /// The notification's id.
    pub id: NotificationId,
    /// Bumped by every commit (compare-and-set).
    pub version: u64,
    /// The lifecycle state with its data.
    pub state: State,
    /// What was asked for.
    pub request: Request,
    /// The seed for everything random about this notification (retry jitter).
    pub seed: u64,
    /// When it was accepted, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// When it was last committed, ms since the Unix epoch.
    pub updated_at_ms: u64,
    /// When its next wake-up is due, if one is scheduled.
    pub wake_at_ms: Option<u64>,
    /// Set by an operator's replay from the dead-letter queue (the latest one): the retry time
    /// budget counts from its start instead of `created_at_ms`. Absent on records never replayed
    /// (and on records stored before replays existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<Replay>,
}

impl Record {
    /// When the retry time budget (`ttl_ms`) started: the latest replay's start, or acceptance.
    pub fn budget_from_ms(&self) -> u64 {
        self.replay.as_ref().map_or(self.created_at_ms, |r| r.budget_from_ms)
    }

    /// Whether every send of this lifecycle may duplicate an earlier attempt whose outcome was
    /// unknown: an operator replayed it knowing that (`--include-unknown`).
    pub fn possible_duplicate(&self) -> bool {
        self.replay.as_ref().is_some_and(|r| r.possible_duplicate)
    }
}

/// What an operator's replay from the dead-letter queue set on a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replay {
    /// When the replayed lifecycle starts (its first wake-up), ms since the Unix epoch: the retry
    /// time budget counts from here, so a replay a day later is not expired at once.
    pub budget_from_ms: u64,
    /// Whether an attempt before the replay had an unknown outcome (it may have arrived): every
    /// send after the replay is then flagged as a possible duplicate. Sticky across replays.
    pub possible_duplicate: bool,
    /// How many times the notification has been replayed.
    pub count: u32,
}

/// Why a transition happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Cause {
    /// An API request (`submit`, `cancel`).
    Api {
        /// The request.
        action: String,
    },
    /// A wake-up from the queue.
    WakeUp,
    /// A lifecycle step's decision (`filter`, `render`, `rate_limit`, `route`, `retry_policy`).
    Step {
        /// The step.
        step: String,
    },
    /// A provider's answer.
    Provider {
        /// The provider.
        provider: ProviderName,
    },
    /// A delivery receipt.
    Receipt {
        /// The provider that sent it.
        provider: ProviderName,
    },
    /// An operator action from the CLI.
    Operator {
        /// The action.
        action: String,
    },
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Api { action } => write!(f, "api {action}"),
            Cause::WakeUp => write!(f, "wake-up"),
            Cause::Step { step } => write!(f, "step {step}"),
            Cause::Provider { provider } => write!(f, "provider {provider}"),
            Cause::Receipt { provider } => write!(f, "receipt {provider}"),
            Cause::Operator { action } => write!(f, "operator {action}"),
        }
    }
}

/// One transition in a notification's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// The version the commit carrying this entry produced.
    pub version: u64,
    /// The state before (none for the first entry).
    pub from: Option<StateKind>,
    /// The state after, with its data (channel, provider, attempt, ...).
    pub to: State,
    /// Why.
    pub cause: Cause,
    /// The decision inputs that mattered (which rule, which counter, which delay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl HistoryEntry {
    /// Whether this entry is an operator's replay out of the dead-letter queue: the lifecycle
    /// starts over after it.
    pub fn is_replay(&self) -> bool {
        self.from == Some(StateKind::DeadLettered) && self.to.kind() == StateKind::Received
    }
}

/// A wake-up: "look at notification `id` at version `version`". Small, so the queue stays cheap;
/// `tenant/id/version` is its deterministic identity, so duplicates collapse where they can and
/// are harmless where they cannot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Wake {
    /// The tenant.
    pub tenant: TenantId,
    /// The notification.
    pub id: NotificationId,
    /// The version the wake-up was scheduled for.
    pub version: u64,
}

impl Wake {
    /// The deterministic identity, `tenant/id/version`.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.tenant, self.id, self.version)
    }

    /// Parses [`Wake::key`].
    pub fn parse_key(s: &str) -> Option<Wake> {
        let mut parts = s.splitn(3, '/');
        let tenant = TenantId::new(parts.next()?).ok()?;
        let id = NotificationId::new(parts.next()?).ok()?;
        let version = parts.next()?.parse().ok()?;
        Some(Wake { tenant, id, version })
    }
}

/// A commit: move a record from `expected_version` to `expected_version + 1`.
#[derive(Debug, Clone, PartialEq)]
pub struct Commit {
    /// The tenant.
    pub tenant: TenantId,
    /// The notification.
    pub id: NotificationId,
    /// The version the caller read; the commit fails if the record moved on.
    pub expected_version: u64,
    /// The new state.
    pub state: State,
    /// History entries to append (their `version` is `expected_version + 1`).
    pub history: Vec<HistoryEntry>,
    /// When to wake the notification up next, if at all. The wake-up is enqueued in the same
    /// atomic step as the state change, so a crash cannot separate them.
    pub wake_at_ms: Option<u64>,
    /// The commit time, ms since the Unix epoch.
    pub now_ms: u64,
    /// Replaces the record's replay data (only an operator's replay sets it); `None` leaves the
    /// record's as it is.
    pub replay: Option<Replay>,
}

/// What a commit came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Applied; the record is now at `version`.
    Committed {
        /// The new version.
        version: u64,
    },
    /// Someone else committed first; the record is at `current`.
    Conflict {
        /// The version found.
        current: u64,
    },
    /// There is no such record.
    NotFound,
}

/// The idempotency of a submit: a key and a fingerprint of the request it came with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Idempotency {
    /// The client's `Idempotency-Key`.
    pub key: String,
    /// A fingerprint of the request body (the same key with another body is refused).
    pub fingerprint: String,
}

/// What creating a record came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// A new record was written and its first wake-up enqueued.
    New,
    /// The idempotency key was used before; the earlier notification is returned.
    Existing {
        /// The notification created with the key.
        id: NotificationId,
        /// Whether the earlier request had the same fingerprint.
        same_request: bool,
    },
}
