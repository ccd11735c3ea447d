//! Campaigns in the in-memory store: the same semantics as the Redis scripts
//! (`redis::campaigns`), held to the same conformance checks (`conformance::campaigns`).

use std::collections::{BTreeMap, BTreeSet};
use std::future::{Future, ready};
use std::ops::Bound;

use steps::model::{NotificationId, RecipientId, TenantId};
use workflows::campaign::{
    Advance, Appended, Campaign, CampaignCreated, CampaignId, CampaignState, Counts,
    LIST_LIMIT_MAX, Moved, OpenPage, PageClaim, PageDone, RECIPIENTS_MAX, counter_field,
};
use workflows::machine::State;
use workflows::ports::{Campaigns, StoreError};
use workflows::record::{Created, HistoryEntry, Idempotency, Record};

use super::{CreateReply, IDEMPOTENCY_TTL_MS, MemoryStore, Once, ScoreSet};
use crate::keys::campaigns as keys;

/// One stored campaign.
#[derive(Debug)]
struct Stored {
    /// The campaign.
    campaign: Campaign,
    /// Its segment's recipient ids, in order.
    members: Vec<RecipientId>,
    /// The lease on its current page: token and end.
    lease: Option<(String, u64)>,
    /// Idempotency keys of appends: fingerprint, recipients after, expiry.
    appends: BTreeMap<String, (String, u64, u64)>,
}

/// Every campaign and its notifications' counters.
#[derive(Debug, Default)]
pub(super) struct Data {
    /// Campaigns by tenant and id.
    campaigns: BTreeMap<(TenantId, CampaignId), Stored>,
    /// Each tenant's campaigns by `keys::index_member` (newest last).
    index: BTreeMap<TenantId, BTreeSet<String>>,
    /// Campaigns with work, `tenant/cid` by when the next page may be claimed.
    due: ScoreSet,
    /// Idempotency keys of creates: the campaign, the fingerprint, the expiry.
    create_keys: BTreeMap<(TenantId, String), (CampaignId, String, u64)>,
    /// Per campaign, its notifications by counter field.
    counts: BTreeMap<(TenantId, CampaignId), BTreeMap<String, i64>>,
    /// Per campaign, its notifications that are not terminal.
    open: BTreeMap<(TenantId, CampaignId), BTreeSet<NotificationId>>,
    /// Leases handed out, for unique tokens.
    leases: u64,
}

impl Data {
    /// Moves a campaign notification from `old` (none: just created) to `new` in the counters
    /// and the open set, as the record scripts do on Redis.
    pub(super) fn counted(
        &mut self,
        tenant: &TenantId,
        campaign: &CampaignId,
        id: &NotificationId,
        old: Option<&State>,
        new: &State,
    ) {
        let key = (tenant.clone(), campaign.clone());
        let new_field = counter_field(new);
        let old_field = old.map(counter_field);
        if old_field.as_ref() != Some(&new_field) {
            let counts = self.counts.entry(key.clone()).or_default();
            if let Some(old) = old_field {
                *counts.entry(old).or_default() -= 1;
            }
            *counts.entry(new_field).or_default() += 1;
        }
        let open = self.open.entry(key).or_default();
        if new.is_terminal() {
            open.remove(id);
        } else {
            open.insert(id.clone());
        }
    }

    /// Takes a purged campaign notification out of the counters and the open set.
    pub(super) fn uncounted(
        &mut self,
        tenant: &TenantId,
        campaign: &CampaignId,
        id: &NotificationId,
        state: &State,
    ) {
        let key = (tenant.clone(), campaign.clone());
        *self.counts.entry(key.clone()).or_default().entry(counter_field(state)).or_default() -= 1;
        self.open.entry(key).or_default().remove(id);
    }

    fn stored(&mut self, tenant: &TenantId, id: &CampaignId) -> Option<&mut Stored> {
        self.campaigns.get_mut(&(tenant.clone(), id.clone()))
    }

    fn create(
        &mut self,
        campaign: &Campaign,
        recipients: &[RecipientId],
        idempotency: Option<&Idempotency>,
    ) -> CampaignCreated {
        let now_ms = campaign.created_at_ms;
        let tenant = &campaign.tenant;
        if let Some(idem) = idempotency
            && let Some((id, fingerprint, expires_at_ms)) =
                self.create_keys.get(&(tenant.clone(), idem.key.clone()))
            && *expires_at_ms > now_ms
        {
            return CampaignCreated::Existing {
                id: id.clone(),
                same_request: *fingerprint == idem.fingerprint,
            };
        }
        let key = (tenant.clone(), campaign.id.clone());
        if self.campaigns.contains_key(&key) {
            return CampaignCreated::Existing { id: campaign.id.clone(), same_request: false };
        }
        let mut stored = campaign.clone();
        stored.recipients = recipients.len() as u64;
        if stored.state == CampaignState::Expanding {
            self.due.insert(keys::due_member(tenant, &campaign.id), now_ms);
        }
        self.index.entry(tenant.clone()).or_default().insert(keys::index_member(&campaign.id));
        self.campaigns.insert(
            key,
            Stored {
                campaign: stored,
                members: recipients.to_vec(),
                lease: None,
                appends: BTreeMap::new(),
            },
        );
        if let Some(idem) = idempotency {
            self.create_keys.insert(
                (tenant.clone(), idem.key.clone()),
                (
                    campaign.id.clone(),
                    idem.fingerprint.clone(),
                    now_ms.saturating_add(IDEMPOTENCY_TTL_MS),
                ),
            );
        }
        CampaignCreated::New
    }

    fn append(
        &mut self,
        tenant: &TenantId,
        id: &CampaignId,
        recipients: &[RecipientId],
        idempotency: Option<&Idempotency>,
        now_ms: u64,
    ) -> Appended {
        let Some(stored) = self.stored(tenant, id) else { return Appended::NotFound };
        if let Some(idem) = idempotency
            && let Some((fingerprint, after, expires_at_ms)) = stored.appends.get(&idem.key)
            && *expires_at_ms > now_ms
        {
            return Appended::Replayed {
                recipients: *after,
                same_request: *fingerprint == idem.fingerprint,
            };
        }
        let campaign = &mut stored.campaign;
        if campaign.state != CampaignState::Draft {
            return Appended::Refused { state: campaign.state };
        }
        let total = campaign.recipients + recipients.len() as u64;
        if total > RECIPIENTS_MAX {
            return Appended::TooMany { recipients: campaign.recipients };
        }
        stored.members.extend_from_slice(recipients);
        campaign.recipients = total;
        campaign.updated_at_ms = now_ms;
        if let Some(idem) = idempotency {
            let expires_at_ms = now_ms.saturating_add(IDEMPOTENCY_TTL_MS);
            stored
                .appends
                .insert(idem.key.clone(), (idem.fingerprint.clone(), total, expires_at_ms));
        }
        Appended::Done { recipients: total }
    }

    fn start(&mut self, tenant: &TenantId, id: &CampaignId, now_ms: u64) -> Moved {
        let Some(stored) = self.campaigns.get_mut(&(tenant.clone(), id.clone())) else {
            return Moved::NotFound;
        };
        let campaign = &mut stored.campaign;
        match campaign.state {
            CampaignState::Draft => {
                campaign.state = CampaignState::Expanding;
                campaign.started_at_ms = Some(now_ms);
                campaign.updated_at_ms = now_ms;
                self.due.insert(keys::due_member(tenant, id), now_ms);
                Moved::To { state: CampaignState::Expanding }
            }
            CampaignState::Expanding => Moved::To { state: CampaignState::Expanding },
            state => Moved::Refused { state },
        }
    }

    fn cancel(&mut self, tenant: &TenantId, id: &CampaignId, now_ms: u64) -> Moved {
        let Some(stored) = self.campaigns.get_mut(&(tenant.clone(), id.clone())) else {
            return Moved::NotFound;
        };
        let campaign = &mut stored.campaign;
        match campaign.state {
            CampaignState::Draft => {
                campaign.state = CampaignState::Cancelled;
                campaign.cancelled_at_ms = Some(now_ms);
                campaign.finished_at_ms = Some(now_ms);
                campaign.updated_at_ms = now_ms;
            }
            CampaignState::Expanding | CampaignState::Expanded => {
                campaign.state = CampaignState::Cancelling;
                campaign.cursor = String::new();
                campaign.cancelled_at_ms = Some(now_ms);
                campaign.updated_at_ms = now_ms;
                // A worker holding a page finishes (or gives up) first; its advance makes the
                // sweep due at once.
                let at_ms = match &stored.lease {
                    Some((_, until_ms)) if *until_ms > now_ms => *until_ms,
                    _ => now_ms,
                };
                self.due.insert(keys::due_member(tenant, id), at_ms);
            }
            CampaignState::Cancelling | CampaignState::Cancelled => {}
        }
        Moved::To { state: stored.campaign.state }
    }

    fn claim(&mut self, now_ms: u64, lease_ms: u64, max: usize) -> Vec<PageClaim> {
        let due: Vec<String> = self
            .due
            .order
            .iter()
            .take_while(|(score, _)| *score <= now_ms)
            .take(max)
            .map(|(_, member)| member.clone())
            .collect();
        let mut claims = Vec::new();
        let until_ms = now_ms.saturating_add(lease_ms);
        for member in due {
            let stored = keys::parse_due_member(&member)
                .and_then(|key| self.campaigns.get_mut(&key))
                .filter(|stored| stored.campaign.state.has_work());
            let Some(stored) = stored else {
                self.due.remove(&member);
                continue;
            };
            self.leases += 1;
            let token = format!("m{}", self.leases);
            stored.lease = Some((token.clone(), until_ms));
            claims.push(PageClaim {
                campaign: stored.campaign.clone(),
                token,
                lease_until_ms: until_ms,
            });
            self.due.insert(member, until_ms);
        }
        claims
    }

    fn advance(&mut self, claim: &PageClaim, done: &PageDone) -> Advance {
        let (tenant, id) = (&claim.campaign.tenant, &claim.campaign.id);
        let member = keys::due_member(tenant, id);
        let Some(stored) = self.campaigns.get_mut(&(tenant.clone(), id.clone())) else {
            return Advance::LeaseLost;
        };
        if stored.lease.as_ref().is_none_or(|(token, _)| *token != claim.token) {
            return Advance::LeaseLost;
        }
        stored.lease = None;
        let campaign = &mut stored.campaign;
        let phase = claim.campaign.state;
        if campaign.state != phase {
            if campaign.state == CampaignState::Cancelling {
                self.due.insert(member, done.now_ms);
                return Advance::Cancelling;
            }
            return Advance::LeaseLost;
        }
        campaign.updated_at_ms = done.now_ms;
        match phase {
            CampaignState::Expanding => {
                campaign.position = done.position;
                campaign.rejected += done.rejected;
                campaign.recipients += done.matched;
                campaign.cursor.clone_from(&done.cursor);
            }
            _ => campaign.cursor.clone_from(&done.cursor),
        }
        if done.done {
            campaign.state = match phase {
                CampaignState::Expanding => CampaignState::Expanded,
                _ => CampaignState::Cancelled,
            };
            campaign.finished_at_ms = Some(done.now_ms);
            self.due.remove(&member);
        } else {
            self.due.insert(member, done.next_at_ms);
        }
        Advance::Done
    }

    fn list(&self, tenant: &TenantId, after: Option<&CampaignId>, limit: usize) -> Vec<Campaign> {
        let Some(index) = self.index.get(tenant) else { return Vec::new() };
        let upper = match after {
            Some(after) => Bound::Excluded(keys::index_member(after)),
            None => Bound::Unbounded,
        };
        index
            .range((Bound::Unbounded, upper))
            .rev()
            .take(limit.min(LIST_LIMIT_MAX))
            .filter_map(|member| keys::parse_index_member(member))
            .filter_map(|id| self.campaigns.get(&(tenant.clone(), id)))
            .map(|stored| stored.campaign.clone())
            .collect()
    }

    fn open_page(&self, tenant: &TenantId, id: &CampaignId, cursor: &str, len: usize) -> OpenPage {
        let Some(open) = self.open.get(&(tenant.clone(), id.clone())) else {
            return OpenPage::default();
        };
        let from = match NotificationId::new(cursor) {
            Ok(after) => Bound::Excluded(after),
            Err(_) => Bound::Unbounded,
        };
        let mut rest = open.range((from, Bound::Unbounded));
        let ids: Vec<NotificationId> = rest.by_ref().take(len.max(1)).cloned().collect();
        let next = match (rest.next(), ids.last()) {
            (Some(_), Some(last)) => Some(last.as_str().to_owned()),
            _ => None,
        };
        OpenPage { ids, next }
    }
}

impl MemoryStore {
    /// When the earliest campaign page is due, if any campaign has work: lets a simulator jump
    /// its virtual clock to the next page.
    pub fn next_campaign_due_ms(&self) -> Option<u64> {
        self.lock().campaigns.due.first_score()
    }
}

impl Campaigns for MemoryStore {
    fn campaign_create(
        &self,
        campaign: &Campaign,
        recipients: &[RecipientId],
        idempotency: Option<&Idempotency>,
    ) -> impl Future<Output = Result<CampaignCreated, StoreError>> + Send {
        ready(Ok(self.lock().campaigns.create(campaign, recipients, idempotency)))
    }

    fn campaign_append(
        &self,
        tenant: &TenantId,
        id: &CampaignId,
        recipients: &[RecipientId],
        idempotency: Option<&Idempotency>,
        now_ms: u64,
    ) -> impl Future<Output = Result<Appended, StoreError>> + Send {
        ready(Ok(self.lock().campaigns.append(tenant, id, recipients, idempotency, now_ms)))
    }

    fn campaign_start(
        &self,
        tenant: &TenantId,
        id: &CampaignId,
        now_ms: u64,
    ) -> impl Future<Output = Result<Moved, StoreError>> + Send {
        ready(Ok(self.lock().campaigns.start(tenant, id, now_ms)))
    }

    fn campaign_cancel(
        &self,
        tenant: &TenantId,
        id: &CampaignId,
        now_ms: u64,
    ) -> impl Future<Output = Result<Moved, StoreError>> + Send {
        ready(Ok(self.lock().campaigns.cancel(tenant, id, now_ms)))
    }

    fn campaign(
        &self,
        tenant: &TenantId,
        id: &CampaignId,
    ) -> impl Future<Output = Result<Option<Campaign>, StoreError>> + Send {
        let inner = self.lock();
        let key = (tenant.clone(), id.clone());
        ready(Ok(inner.campaigns.campaigns.get(&key).map(|s| s.campaign.clone())))
    }

    fn campaigns(
        &self,
        tenant: &TenantId,
        after: Option<&CampaignId>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Campaign>, StoreError>> + Send {
        ready(Ok(self.lock().campaigns.list(tenant, after, limit)))
    }

    fn campaign_counts(
        &self,
        tenant: &TenantId,
        id: &CampaignId,
    ) -> impl Future<Output = Result<Counts, StoreError>> + Send {
        let inner = self.lock();
        let counts = inner.campaigns.counts.get(&(tenant.clone(), id.clone())).cloned();
        ready(Ok(Counts(counts.unwrap_or_default())))
    }

    fn campaign_recipients(
        &self,
        tenant: &TenantId,
        id: &CampaignId,
        from: u64,
        len: u64,
    ) -> impl Future<Output = Result<Vec<RecipientId>, StoreError>> + Send {
        let inner = self.lock();
        let page = inner
            .campaigns
            .campaigns
            .get(&(tenant.clone(), id.clone()))
            .map(|stored| {
                let from = usize::try_from(from).unwrap_or(usize::MAX);
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                stored.members.iter().skip(from).take(len).cloned().collect()
            })
            .unwrap_or_default();
        ready(Ok(page))
    }

    fn campaign_claim(
        &self,
        now_ms: u64,
        lease_ms: u64,
        max: usize,
    ) -> impl Future<Output = Result<Vec<PageClaim>, StoreError>> + Send {
        ready(Ok(self.lock().campaigns.claim(now_ms, lease_ms, max)))
    }

    fn campaign_advance(
        &self,
        claim: &PageClaim,
        done: &PageDone,
    ) -> impl Future<Output = Result<Advance, StoreError>> + Send {
        ready(Ok(self.lock().campaigns.advance(claim, done)))
    }

    fn campaign_notification_id(
        &self,
        tenant: &TenantId,
        id: &CampaignId,
        recipient: &RecipientId,
    ) -> NotificationId {
        keys::campaign_notification_id(tenant, id, recipient)
    }

    fn campaign_create_notification(
        &self,
        record: &Record,
        first: &HistoryEntry,
        campaign: &CampaignId,
    ) -> impl Future<Output = Result<Created, StoreError>> + Send {
        let created = match self.create_now(record, first, Once::None, Some(campaign)) {
            CreateReply::New => Created::New,
            // No key and no event: only the id can be taken (the page was expanded before).
            _ => Created::Existing { id: record.id.clone(), same_request: false },
        };
        ready(Ok(created))
    }

    fn campaign_open(
        &self,
        tenant: &TenantId,
        id: &CampaignId,
        cursor: &str,
        len: usize,
    ) -> impl Future<Output = Result<OpenPage, StoreError>> + Send {
        ready(Ok(self.lock().campaigns.open_page(tenant, id, cursor, len)))
    }
}
