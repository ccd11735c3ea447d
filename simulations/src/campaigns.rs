//! Campaigns in the simulator: the tenant sends three campaigns during the fault phase, two in-app
//! to lists of ids (one of them cancelled part-way) and one by email to a filter over its
//! recipient directory (the French recipients with an email address), the workers expand them
//! with the production expander (`workflows::fanout`) through their fault-injecting stores, and
//! the checker holds them to:
//!
//! - **campaign-once**: every member of a campaign that was not cancelled gets exactly one
//!   notification, and no one else gets any; a cancelled campaign gives no member two;
//! - **campaign-counts**: a campaign's counters equal its notifications' states, exactly;
//! - **campaign-cancel**: when a cancelled campaign reaches `cancelled`, every notification of it
//!   that is not terminal had claimed a send (or was replayed by the operator since), and none is
//!   created after that;
//! - **campaign-done**: a campaign ends `expanded` with its whole segment expanded, or
//!   `cancelled` when it was cancelled.
//!
//! The faults reach the expander through the store: errors and lost replies on claims, creates
//! and advances, and workers dying mid-page (a crash after a notification is created), whose
//! pages come back when their lease ends and are expanded again.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use steps::model::{Category, Channel, NotificationId, RecipientId, TemplateId, TenantId};
use steps::recipient::Contact;
use workflows::campaign::{
    Advance, Appended, Campaign, CampaignCreated, CampaignId, CampaignSpec, CampaignState, Counts,
    Moved, OpenPage, PageClaim, PageDone, RecipientFilter, Segment, counter_field,
};
use workflows::machine::StateKind;
use workflows::ports::{Campaigns, Store, StoreError};
use workflows::record::{Created, HistoryEntry, Idempotency, Record};

use crate::faults::Fault;
use crate::rng::Rng;
use crate::world::{FaultyStore, StoreFault, journal_create, recipient};

/// How often each worker looks for due campaign pages, as in production.
pub(crate) const EXPAND_EVERY_MS: u64 = 250;

/// A campaign the simulated tenant sends.
#[derive(Debug, Clone)]
pub(crate) struct PlannedCampaign {
    /// Its id.
    pub(crate) id: CampaignId,
    /// Its segment, in order (an id may be listed twice).
    pub(crate) members: Vec<RecipientId>,
    /// Its pace.
    pub(crate) rate_per_sec: u32,
    /// When the tenant creates it.
    pub(crate) start_ms: u64,
    /// When the tenant cancels it, if it does.
    pub(crate) cancel_at_ms: Option<u64>,
    /// Its channel.
    pub(crate) channel: Channel,
    /// Its segment: the list of `members`, or a filter whose matches are the `members`.
    pub(crate) segment: Segment,
    /// The position it ends at: the list's length (a filter's walk ends wherever the directory
    /// does, which the workload's own changes move).
    pub(crate) end_position: Option<u64>,
}

/// The time zone only the filter campaign's audience lives in (the workload's recipients are in
/// `directory::ZONES`), so its filter selects exactly these profiles whatever else the
/// directory holds.
const AUDIENCE_ZONE: &str = "Pacific/Chatham";

/// The filter campaign's audience in the tenant's directory: `count` profiles (ids `c<i>`, apart
/// from the workload's `r<i>`), a third French with an email address, a third French without
/// one, a third English with one.
pub(crate) fn profiles(count: usize) -> Vec<(RecipientId, Contact)> {
    (0..count)
        .map(|i| {
            let contact = match i % 3 {
                0 => serde_json::json!({ "email": format!("c{i}@example.com"), "locale": "fr-FR" }),
                1 => serde_json::json!({ "locale": "fr" }),
                _ => serde_json::json!({ "email": format!("c{i}@example.com"), "locale": "en" }),
            };
            let mut contact = contact;
            contact["time_zone"] = serde_json::json!(AUDIENCE_ZONE);
            let contact: Contact = serde_json::from_value(contact)
                .unwrap_or_else(|e| unreachable!("a valid fixture contact: {e}"));
            let id = RecipientId::new(format!("c{i}")).unwrap_or_else(|_| unreachable!());
            (id, contact)
        })
        .collect()
}

/// Plans the run's campaigns: none for tiny runs; otherwise one that runs to the end and one
/// cancelled somewhere in its expansion, each to a fifth as many recipients as there are
/// notifications, drawn with replacement from a range twice the workload's recipients (so some
/// are listed twice and some also get other notifications, whose in-app rate limit then skips
/// theirs).
pub(crate) fn plan(
    seed: u64,
    notifications: usize,
    recipients: usize,
    start_ms: u64,
    faults_end_ms: u64,
) -> Vec<PlannedCampaign> {
    if notifications < 20 {
        return Vec::new();
    }
    let mut rng = Rng::fork(seed, "campaigns");
    let tenant = tenant();
    let size = (notifications / 5).clamp(5, 2_000);
    let window = (faults_end_ms.saturating_sub(start_ms) / 2).max(1);
    let mut planned: Vec<PlannedCampaign> = (0..2_u32)
        .map(|k| {
            let members: Vec<RecipientId> =
                (0..size).map(|_| recipient(rng.index(recipients * 2))).collect();
            let rate_per_sec = if k == 0 { rng.range(20, 200) as u32 } else { 100 };
            let start = start_ms + rng.range(0, window);
            let expansion_ms = size as u64 * 1_000 / u64::from(rate_per_sec) + 2_000;
            let cancel_at_ms = (k == 1).then(|| start + rng.range(0, expansion_ms));
            PlannedCampaign {
                id: campaign_id(&tenant, k),
                end_position: Some(members.len() as u64),
                members,
                rate_per_sec,
                start_ms: start,
                cancel_at_ms,
                channel: Channel::InApp,
                segment: Segment::Recipients,
            }
        })
        .collect();
    // The directory filter: everyone of the audience French with an email address, by email.
    let directory = profiles(recipients * 2);
    let filter: RecipientFilter = serde_json::from_value(serde_json::json!({
        "locale": "fr", "time_zone": AUDIENCE_ZONE, "reachable": true
    }))
    .unwrap_or_else(|e| unreachable!("a valid filter: {e}"));
    let members = directory
        .iter()
        .filter(|(_, c)| {
            c.email.is_some() && c.locale.as_ref().is_some_and(|l| l.as_str().starts_with("fr"))
        })
        .map(|(id, _)| id.clone())
        .collect();
    planned.push(PlannedCampaign {
        id: campaign_id(&tenant, 2),
        members,
        rate_per_sec: 50,
        start_ms: start_ms + rng.range(0, window),
        cancel_at_ms: None,
        channel: Channel::Email,
        segment: Segment::Filter { filter },
        end_position: None,
    });
    planned
}

/// Campaign `k`'s id, minted as the API mints it for the idempotency key it is created with.
fn campaign_id(tenant: &TenantId, k: u32) -> CampaignId {
    let ulid = format!("01J00000000000000000000{k:03}");
    storage::keys::campaigns::new_campaign_id(tenant, Some(&format!("campaign-{k}")), &ulid)
}

/// The simulated tenant.
fn tenant() -> TenantId {
    TenantId::new("sim").unwrap_or_else(|_| unreachable!())
}

/// The campaign as the API would store it, created at `now_ms`.
pub(crate) fn campaign(planned: &PlannedCampaign, now_ms: u64) -> Campaign {
    let data = serde_json::json!({ "name": "you", "order": "news" });
    Campaign {
        tenant: tenant(),
        id: planned.id.clone(),
        spec: CampaignSpec {
            template: TemplateId::new("note").unwrap_or_else(|_| unreachable!()),
            channel: planned.channel,
            category: Category::new("marketing").unwrap_or_else(|_| unreachable!()),
            data: data.as_object().cloned().unwrap_or_default(),
            segment: planned.segment.clone(),
            rate_per_sec: planned.rate_per_sec,
        },
        state: CampaignState::Expanding,
        recipients: match planned.segment {
            Segment::Recipients => planned.members.len() as u64,
            Segment::Filter { .. } => 0,
        },
        position: 0,
        cursor: String::new(),
        rejected: 0,
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
        started_at_ms: Some(now_ms),
        finished_at_ms: None,
        cancelled_at_ms: None,
    }
}

/// The idempotency key the tenant creates campaign `k` with (its retries land on the first).
pub(crate) fn create_key(k: usize) -> Idempotency {
    Idempotency { key: format!("campaign-{k}"), fingerprint: format!("fp-campaign-{k}") }
}

/// Whether a notification in this state, with this history, is accounted for when its
/// campaign is cancelled: terminal, or it claimed a send at some point (a cancel must not touch
/// a notification a provider may be handling), or an operator replayed it.
fn accounted_for(record: &Record, history: &[HistoryEntry]) -> bool {
    record.state.is_terminal()
        || history.iter().any(|e| e.to.kind() == StateKind::Sending || e.is_replay())
}

/// The checker's campaign state.
#[derive(Debug, Default)]
pub(crate) struct Checker {
    /// Per cancelled campaign (by plan index), how many notifications it had when it was seen
    /// `cancelled`.
    pub(crate) cancelled_with: BTreeMap<usize, usize>,
}

/// A violation: invariant, notification, detail.
pub(crate) type Found = (&'static str, Option<NotificationId>, String);

/// Notifications created per campaign, by recipient.
pub(crate) fn created_by_campaign(
    created: &[(CampaignId, RecipientId, NotificationId)],
) -> BTreeMap<CampaignId, BTreeMap<RecipientId, Vec<NotificationId>>> {
    let mut out: BTreeMap<CampaignId, BTreeMap<RecipientId, Vec<NotificationId>>> = BTreeMap::new();
    for (campaign, recipient, id) in created {
        out.entry(campaign.clone())
            .or_default()
            .entry(recipient.clone())
            .or_default()
            .push(id.clone());
    }
    out
}

impl Checker {
    /// The cancel invariant, at the first look after campaign `k` became `cancelled`.
    pub(crate) fn on_cancelled<S: Store + Campaigns>(
        &mut self,
        store: &S,
        k: usize,
        planned: &PlannedCampaign,
        created: &[(CampaignId, RecipientId, NotificationId)],
    ) -> Vec<Found> {
        let tenant = tenant();
        if self.cancelled_with.contains_key(&k) {
            return Vec::new();
        }
        let state = at_once(store.campaign(&tenant, &planned.id)).ok().flatten().map(|c| c.state);
        if state != Some(CampaignState::Cancelled) {
            return Vec::new();
        }
        let ids: Vec<&NotificationId> =
            created.iter().filter(|(c, _, _)| *c == planned.id).map(|(_, _, id)| id).collect();
        self.cancelled_with.insert(k, ids.len());
        let mut found = Vec::new();
        for id in ids {
            let Some(record) = at_once(store.load(&tenant, id)).ok().flatten() else { continue };
            let history = at_once(store.history(&tenant, id)).unwrap_or_default();
            if !accounted_for(&record, &history) {
                found.push((
                    "campaign-cancel",
                    Some(id.clone()),
                    format!(
                        "campaign {} is cancelled but this notification is {} and never claimed \
                         a send",
                        planned.id,
                        record.state.kind()
                    ),
                ));
            }
        }
        found
    }

    /// The end-of-run campaign checks.
    pub(crate) fn finish<S: Store + Campaigns>(
        &self,
        store: &S,
        planned: &[PlannedCampaign],
        cancelled: &BTreeSet<usize>,
        created: &[(CampaignId, RecipientId, NotificationId)],
    ) -> Vec<Found> {
        let tenant = tenant();
        let by_campaign = created_by_campaign(created);
        let mut found = Vec::new();
        for (k, plan) in planned.iter().enumerate() {
            let Some(campaign) = at_once(store.campaign(&tenant, &plan.id)).ok().flatten() else {
                continue;
            };
            let members: BTreeSet<&RecipientId> = plan.members.iter().collect();
            let empty = BTreeMap::new();
            let made = by_campaign.get(&plan.id).unwrap_or(&empty);
            for (recipient, ids) in made {
                if ids.len() > 1 {
                    found.push((
                        "campaign-once",
                        ids.get(1).cloned(),
                        format!(
                            "{recipient} got {} notifications from campaign {}: {ids:?}",
                            ids.len(),
                            plan.id
                        ),
                    ));
                }
                if !members.contains(recipient) {
                    found.push((
                        "campaign-once",
                        ids.first().cloned(),
                        format!("{recipient} is not in campaign {}'s segment", plan.id),
                    ));
                }
            }
            let was_cancelled = cancelled.contains(&k);
            if was_cancelled {
                if campaign.state != CampaignState::Cancelled {
                    found.push((
                        "campaign-done",
                        None,
                        format!("campaign {} was cancelled but is {}", plan.id, campaign.state),
                    ));
                }
                if let Some(then) = self.cancelled_with.get(&k)
                    && made.values().map(Vec::len).sum::<usize>() > *then
                {
                    found.push((
                        "campaign-cancel",
                        None,
                        format!(
                            "campaign {} created notifications after it was cancelled",
                            plan.id
                        ),
                    ));
                }
            } else {
                let matched = BTreeSet::from_iter(&plan.members).len() as u64;
                let done = campaign.state == CampaignState::Expanded
                    && plan.end_position.is_none_or(|end| campaign.position == end)
                    && (plan.segment == Segment::Recipients || campaign.recipients == matched);
                if !done {
                    found.push((
                        "campaign-done",
                        None,
                        format!(
                            "campaign {} is {} at position {} (ends at {:?}) with {} recipients",
                            plan.id,
                            campaign.state,
                            campaign.position,
                            plan.end_position,
                            campaign.recipients
                        ),
                    ));
                }
                for member in &members {
                    if !made.contains_key(*member) {
                        found.push((
                            "campaign-once",
                            None,
                            format!("{member} got nothing from campaign {}", plan.id),
                        ));
                    }
                }
            }
            // The counters are exactly the notifications' states.
            let mut tally: BTreeMap<String, i64> = BTreeMap::new();
            for id in made.values().flatten() {
                if let Some(record) = at_once(store.load(&tenant, id)).ok().flatten() {
                    *tally.entry(counter_field(&record.state)).or_default() += 1;
                }
            }
            let counts = at_once(store.campaign_counts(&tenant, &plan.id)).unwrap_or_default();
            let counted: BTreeMap<String, i64> =
                counts.0.into_iter().filter(|(_, n)| *n != 0).collect();
            if counted != tally {
                found.push((
                    "campaign-counts",
                    None,
                    format!(
                        "campaign {} counts {counted:?} but its notifications are {tally:?}",
                        plan.id
                    ),
                ));
            }
        }
        found
    }
}

/// Runs a port call that completes at once (every in-memory call does).
fn at_once<T>(future: impl Future<Output = T> + Send) -> T {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut context) {
        std::task::Poll::Ready(value) => value,
        std::task::Poll::Pending => unreachable!("in-memory port calls complete at once"),
    }
}

impl<S: Store + Campaigns> FaultyStore<S> {
    /// A mutating call under the dice: an error does nothing, a lost reply does it and fails.
    async fn faulty<T, F>(&self, op: &str, call: F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        match self.dice(op) {
            StoreFault::Error => Err(Self::unavailable(op)),
            StoreFault::LostReply => {
                call.await?;
                Err(Self::unavailable(&format!("{op} reply")))
            }
            StoreFault::None => call.await,
        }
    }

    /// A read under the dice: it may fail.
    async fn read<T, F>(&self, call: F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        match self.dice("load") {
            StoreFault::Error => Err(Self::unavailable("campaign read")),
            StoreFault::None | StoreFault::LostReply => call.await,
        }
    }
}

impl<S: Store + Campaigns> Campaigns for FaultyStore<S> {
    async fn campaign_create(
        &self,
        campaign: &Campaign,
        recipients: &[RecipientId],
        idempotency: Option<&Idempotency>,
    ) -> Result<CampaignCreated, StoreError> {
        self.faulty(
            "campaign create",
            self.inner.campaign_create(campaign, recipients, idempotency),
        )
        .await
    }

    async fn campaign_append(
        &self,
        tenant: &TenantId,
        id: &CampaignId,
        recipients: &[RecipientId],
        idempotency: Option<&Idempotency>,
        now_ms: u64,
    ) -> Result<Appended, StoreError> {
        let call = self.inner.campaign_append(tenant, id, recipients, idempotency, now_ms);
        self.faulty("campaign append", call).await
    }

    async fn campaign_start(
        &self,
        tenant: &TenantId,
        id: &CampaignId,
        now_ms: u64,
    ) -> Result<Moved, StoreError> {
        self.faulty("campaign start", self.inner.campaign_start(tenant, id, now_ms)).await
    }

    async fn campaign_cancel(
        &self,
        tenant: &TenantId,
        id: &CampaignId,
        now_ms: u64,
    ) -> Result<Moved, StoreError> {
        self.faulty("campaign cancel", self.inner.campaign_cancel(tenant, id, now_ms)).await
    }

    async fn campaign(
        &self,
        tenant: &TenantId,
        id: &CampaignId,
    ) -> Result<Option<Campaign>, StoreError> {
        self.read(self.inner.campaign(tenant, id)).await
    }

    async fn campaigns(
        &self,
        tenant: &TenantId,
        after: Option<&CampaignId>,
        limit: usize,
    ) -> Result<Vec<Campaign>, StoreError> {
        self.read(self.inner.campaigns(tenant, after, limit)).await
    }

    async fn campaign_counts(
        &self,
        tenant: &TenantId,
        id: &CampaignId,
    ) -> Result<Counts, StoreError> {
        self.read(self.inner.campaign_counts(tenant, id)).await
    }

    async fn campaign_recipients(
        &self,
        tenant: &TenantId,
        id: &CampaignId,
        from: u64,
        len: u64,
    ) -> Result<Vec<RecipientId>, StoreError> {
        self.read(self.inner.campaign_recipients(tenant, id, from, len)).await
    }

    async fn campaign_claim(
        &self,
        now_ms: u64,
        lease_ms: u64,
        max: usize,
    ) -> Result<Vec<PageClaim>, StoreError> {
        let claims =
            self.faulty("campaign claim", self.inner.campaign_claim(now_ms, lease_ms, max)).await?;
        if !claims.is_empty() {
            let pages: Vec<String> = claims
                .iter()
                .map(|c| format!("{} {} @{}", c.campaign.id, c.campaign.state, c.campaign.position))
                .collect();
            self.shared.world().trace(format!("a{} claims {}", self.actor, pages.join(", ")));
        }
        Ok(claims)
    }

    async fn campaign_advance(
        &self,
        claim: &PageClaim,
        done: &PageDone,
    ) -> Result<Advance, StoreError> {
        let advance =
            self.faulty("campaign advance", self.inner.campaign_advance(claim, done)).await;
        self.shared.world().trace(format!(
            "a{} advances {} to {} (done {}): {advance:?}",
            self.actor, claim.campaign.id, done.position, done.done
        ));
        advance
    }

    fn campaign_notification_id(
        &self,
        tenant: &TenantId,
        id: &CampaignId,
        recipient: &RecipientId,
    ) -> NotificationId {
        let derived = self.inner.campaign_notification_id(tenant, id, recipient);
        let mut world = self.shared.world();
        if !world.planted.campaign_ids_not_derived {
            return derived;
        }
        world.campaign_ids_minted += 1;
        NotificationId::new(format!("{derived}x{}", world.campaign_ids_minted))
            .unwrap_or_else(|_| unreachable!("a valid id"))
    }

    async fn campaign_create_notification(
        &self,
        record: &Record,
        first: &HistoryEntry,
        campaign: &CampaignId,
    ) -> Result<Created, StoreError> {
        let fault = self.dice("create");
        if matches!(fault, StoreFault::Error) {
            return Err(Self::unavailable("create"));
        }
        let created = self.inner.campaign_create_notification(record, first, campaign).await?;
        if created == Created::New {
            journal_create(&self.shared, record, first);
            let recipient = record.request.recipient.id.clone();
            self.shared.world().campaign_created.push((
                campaign.clone(),
                recipient,
                record.id.clone(),
            ));
            // A worker may die with its page half expanded: the page comes back after its lease.
            if self.crash(Fault::CrashAfterPersist, "mid campaign page") {
                futures::future::pending::<()>().await;
            }
        }
        match fault {
            StoreFault::LostReply => Err(Self::unavailable("create reply")),
            _ => Ok(created),
        }
    }

    async fn campaign_open(
        &self,
        tenant: &TenantId,
        id: &CampaignId,
        cursor: &str,
        len: usize,
    ) -> Result<OpenPage, StoreError> {
        if self.shared.world().planted.campaign_sweep_lost {
            return Ok(OpenPage::default());
        }
        self.read(self.inner.campaign_open(tenant, id, cursor, len)).await
    }
}
