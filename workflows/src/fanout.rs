//! Campaign fan-out: workers expand campaigns page by page into ordinary notifications, and
//! sweep a cancelled campaign's notifications.
//!
//! [`Expander::tick`] is one round of a worker's campaign loop (the binary runs it every
//! 250 ms in every worker process, the simulator as one of its actors):
//!
//! 1. claim due pages ([`Campaigns::campaign_claim`]): each is leased to this worker for
//!    [`LEASE_MS`], and its campaign is not due again before the lease ends, so no two workers
//!    hold a page of one campaign at once;
//! 2. expand each: read the page's recipients (the next ids of its list, or the next directory
//!    entries from its cursor, kept when its filter matches) and create one notification per
//!    recipient through the same record-building path as `POST /v1/notifications`
//!    ([`Runner::accept`]), in the recipient's profile locale and addressed from the directory
//!    when it is sent, with an id
//!    derived from the campaign and the recipient ([`Campaigns::campaign_notification_id`]): a
//!    page expanded again after a crash creates only what is missing, and an id listed twice in
//!    the segment gets one notification;
//! 3. record it ([`Campaigns::campaign_advance`], compare-and-set on the lease's token) with the
//!    next page due one page's worth of the campaign's rate after this one started, so a
//!    million recipients are never a million notifications due at once;
//! 4. hold a page back while [`DUE_MAX`] of the campaign's notifications are due or running
//!    (read from its counters), so a rate faster than the workers cannot pile work up either.
//!
//! A page is created [`STATE_CHECK_EVERY`] notifications at a time, concurrently. Between those
//! chunks a worker stops if its lease ends within [`LEASE_MARGIN_MS`] (leaving the page to come
//! back) or if the campaign was cancelled. A cancelled campaign's sweep pages go through its open notifications and cancel
//! each that has not reached a provider, naming the campaign in its history.

use std::sync::Arc;

use steps::locale::Locale;
use steps::model::{NotificationId, Recipient, RecipientId};
use steps::recipient::RecipientEntry;

use crate::campaign::{
    Advance, Campaign, CampaignState, DUE_MAX, HOLD_MS, LEASE_MARGIN_MS, LEASE_MS, PageClaim,
    PageDone, SWEEP_PAGE_LEN, Segment, locale_for, page_interval_ms, recipient_for,
};
use crate::ports::{Campaigns, Clock, Directory, Store, StoreError};
use crate::record::{Cause, Created};
use crate::runner::{Cancelled, Runner, Submission, SubmitError};

/// The most pages one [`Expander::tick`] claims.
pub const CLAIMS_PER_TICK_MAX: usize = 4;
/// How many of a page's notifications are created at once (concurrently), and so how often, in
/// recipients, an expanding worker re-reads its campaign's state and its lease: a cancel stops
/// expansion within this many notifications.
pub const STATE_CHECK_EVERY: usize = 50;

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tick {
    /// Pages claimed.
    pub pages: usize,
    /// Notifications created.
    pub created: u64,
    /// Recipients whose notification existed already (a page expanded again, or an id listed
    /// twice).
    pub existing: u64,
    /// Recipients that could not become a notification (the template stopped rendering).
    pub rejected: u64,
    /// Notifications a cancel sweep cancelled.
    pub cancelled: u64,
    /// Pages held back because [`DUE_MAX`] of their campaign's notifications were due or
    /// running.
    pub held: usize,
    /// Pages given up unrecorded: the lease was about to end or was lost, or the campaign was
    /// cancelled mid-page.
    pub abandoned: usize,
    /// Campaigns that finished (expanded, or cancelled after their sweep).
    pub finished: usize,
    /// Why the last rejected recipient was rejected, for the worker's log.
    pub rejection: Option<String>,
    /// When the earliest next page of the campaigns this tick advanced is due: a worker loop
    /// can sleep until then rather than a whole poll period.
    pub next_due_ms: Option<u64>,
}

/// What creating one campaign notification came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expanded {
    /// Created.
    Created,
    /// It existed already.
    Existing,
}

impl<S: Store + Campaigns + Directory, C: Clock> Runner<S, C> {
    /// Creates `campaign`'s notification for `recipient` (at segment position `position`): the
    /// record [`accept`](Runner::accept) builds, with its id derived from the campaign and the
    /// recipient and its first history entry naming the campaign. Idempotent.
    pub async fn submit_in_campaign(
        &self,
        campaign: &Campaign,
        recipient: Recipient,
        locale: Option<Locale>,
        position: u64,
    ) -> Result<(Expanded, NotificationId), SubmitError> {
        let store = self.store();
        let id = store.campaign_notification_id(&campaign.tenant, &campaign.id, &recipient.id);
        let submission = Submission {
            recipient,
            channel: campaign.spec.channel,
            template: campaign.spec.template.clone(),
            data: campaign.spec.data.clone(),
            category: campaign.spec.category.clone(),
            locale,
            correlation: Default::default(),
        };
        let (record, mut first) = self.accept(&campaign.tenant, id.clone(), submission).await?;
        first.cause = Cause::Api { action: "campaign".into() };
        first.note = Some(format!("campaign {}, segment position {position}", campaign.id));
        match store.campaign_create_notification(&record, &first, &campaign.id).await? {
            Created::New => {
                self.observe_created(&record, &first, true);
                Ok((Expanded::Created, id))
            }
            Created::Existing { .. } => Ok((Expanded::Existing, id)),
        }
    }
}

/// One recipient of a page.
struct Member {
    /// The recipient.
    id: RecipientId,
    /// Their directory entry, when the page read it (a filter segment's walk).
    entry: Option<RecipientEntry>,
    /// Whether they are in the segment (a filter segment's walk sees everyone).
    matched: bool,
}

/// A page of a campaign's segment.
struct Page {
    /// The recipients, in segment order.
    members: Vec<Member>,
    /// Where a filter segment's walk goes on.
    next: Option<String>,
    /// Whether this is the segment's last page.
    last: bool,
}

/// Expands campaigns and sweeps cancelled ones (see the module doc).
pub struct Expander<S, C> {
    /// The runner: its store, clock and templates.
    runner: Arc<Runner<S, C>>,
}

impl<S, C> std::fmt::Debug for Expander<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expander").finish_non_exhaustive()
    }
}

impl<S: Store + Campaigns + Directory, C: Clock> Expander<S, C> {
    /// An expander over `runner`'s store, clock and templates.
    pub fn new(runner: Arc<Runner<S, C>>) -> Self {
        Self { runner }
    }

    /// One round: claims up to [`CLAIMS_PER_TICK_MAX`] due pages and does them. A store
    /// failure stops the round; the pages it held come back when their leases end.
    pub async fn tick(&self) -> Result<Tick, StoreError> {
        let now_ms = self.runner.clock().now_ms();
        let claims =
            self.runner.store().campaign_claim(now_ms, LEASE_MS, CLAIMS_PER_TICK_MAX).await?;
        let mut tick = Tick { pages: claims.len(), ..Tick::default() };
        for claim in &claims {
            match claim.campaign.state {
                CampaignState::Expanding => self.expand(claim, &mut tick).await?,
                CampaignState::Cancelling => self.sweep(claim, &mut tick).await?,
                // The store hands out only campaigns with work.
                CampaignState::Draft | CampaignState::Expanded | CampaignState::Cancelled => {}
            }
        }
        Ok(tick)
    }

    /// Whether the lease leaves time for one more step.
    fn lease_left(&self, claim: &PageClaim) -> bool {
        self.runner.clock().now_ms().saturating_add(LEASE_MARGIN_MS) < claim.lease_until_ms
    }

    async fn expand(&self, claim: &PageClaim, tick: &mut Tick) -> Result<(), StoreError> {
        let store = self.runner.store();
        let campaign = &claim.campaign;
        let started_ms = self.runner.clock().now_ms();
        // Back-pressure: the workers (or a provider) are slower than the rate; let them catch
        // up rather than pile up due notifications.
        if store.campaign_counts(&campaign.tenant, &campaign.id).await?.due() >= DUE_MAX {
            tick.held += 1;
            let done = PageDone {
                position: campaign.position,
                cursor: campaign.cursor.clone(),
                matched: 0,
                rejected: 0,
                done: false,
                next_at_ms: started_ms.saturating_add(HOLD_MS),
                now_ms: started_ms,
            };
            return self.advance(claim, &done, tick).await;
        }
        let page = self.page(campaign).await?;
        let mut rejected = 0;
        let mut matched = 0;
        let mut walked = 0;
        // In chunks: each chunk's notifications are created concurrently (one round trip's
        // worth on Redis), and between chunks the lease and the campaign's state are checked.
        for (n, chunk) in page.members.chunks(STATE_CHECK_EVERY).enumerate() {
            if !self.lease_left(claim) {
                tick.abandoned += 1;
                return Ok(());
            }
            if n > 0 {
                let now = store.campaign(&campaign.tenant, &campaign.id).await?;
                if now.is_none_or(|c| c.state != CampaignState::Expanding) {
                    break;
                }
            }
            let first = campaign.position + walked;
            let created = futures::future::join_all(
                chunk
                    .iter()
                    .zip(first..)
                    .filter(|(member, _)| member.matched)
                    .map(|(member, position)| self.create(campaign, member, position)),
            )
            .await;
            for (result, position) in created {
                matched += 1;
                match result {
                    Ok(Expanded::Created) => tick.created += 1,
                    Ok(Expanded::Existing) => tick.existing += 1,
                    Err(SubmitError::Store(error)) => return Err(error),
                    // Only an idempotency claim is ever in flight, and a campaign notification
                    // is created without one: the page comes back when its lease ends.
                    Err(SubmitError::InFlight { .. }) => {
                        return Err(StoreError::Unavailable(format!(
                            "campaign {} position {position}: a create was in flight",
                            campaign.id
                        )));
                    }
                    // The campaign's template rendered with its data when it was accepted; it
                    // no longer does (a template changed under it). The data is the same for
                    // every recipient, so this is the campaign's problem: counted, not retried
                    // forever.
                    Err(error @ (SubmitError::Template(_) | SubmitError::KeyReused { .. })) => {
                        tick.rejection =
                            Some(format!("campaign {} position {position}: {error}", campaign.id));
                        rejected += 1;
                    }
                }
            }
            walked += chunk.len() as u64;
        }
        let all = walked == page.members.len() as u64;
        let position = campaign.position + walked;
        let cursor = match (&campaign.spec.segment, all) {
            (Segment::Recipients, _) => campaign.cursor.clone(),
            (Segment::Filter { .. }, true) => page.next.clone().unwrap_or_default(),
            // Cut short by a cancel: the directory walk would go on after the last id walked.
            (Segment::Filter { .. }, false) => page
                .members
                .get(walked.saturating_sub(1) as usize)
                .filter(|_| walked > 0)
                .map_or_else(|| campaign.cursor.clone(), |m| m.id.to_string()),
        };
        let done = PageDone {
            position,
            cursor,
            matched: match campaign.spec.segment {
                Segment::Recipients => 0,
                Segment::Filter { .. } => matched,
            },
            rejected,
            // A page cut short by a cancel is never the last: its advance finds the cancel.
            done: all && page.last,
            next_at_ms: started_ms
                .saturating_add(page_interval_ms(walked, campaign.spec.rate_per_sec)),
            now_ms: self.runner.clock().now_ms(),
        };
        self.advance(claim, &done, tick).await
    }

    /// The campaign's next page of its segment: recipient ids from its list, or the next
    /// directory entries from its cursor (each marked whether the filter matches).
    async fn page(&self, campaign: &Campaign) -> Result<Page, StoreError> {
        let store = self.runner.store();
        let (tenant, id) = (&campaign.tenant, &campaign.id);
        let page_len = campaign.page_len();
        match &campaign.spec.segment {
            Segment::Recipients => {
                let len = page_len.min(campaign.recipients.saturating_sub(campaign.position));
                let ids = store.campaign_recipients(tenant, id, campaign.position, len).await?;
                let last =
                    (ids.len() as u64) < len || campaign.position + len >= campaign.recipients;
                let members =
                    ids.into_iter().map(|id| Member { id, entry: None, matched: true }).collect();
                Ok(Page { members, next: None, last })
            }
            Segment::Filter { filter } => {
                let after = RecipientId::new(campaign.cursor.as_str()).ok();
                let limit = usize::try_from(page_len).unwrap_or(usize::MAX);
                let listed = store.recipients(tenant, after.as_ref(), limit).await?;
                let channel = campaign.spec.channel;
                let members = listed
                    .entries
                    .into_iter()
                    .map(|entry| Member {
                        id: entry.id.clone(),
                        matched: filter.matches(&entry, channel),
                        entry: Some(entry),
                    })
                    .collect();
                let next = listed.next.map(|id| id.to_string());
                Ok(Page { last: next.is_none(), members, next })
            }
        }
    }

    /// Creates one member's notification, in the locale of their profile (read now when the
    /// page did not bring it); the lifecycle addresses it from the directory when it sends.
    async fn create(
        &self,
        campaign: &Campaign,
        member: &Member,
        position: u64,
    ) -> (Result<Expanded, SubmitError>, u64) {
        let entry = match &member.entry {
            Some(entry) => Some(entry.clone()),
            None => match self.runner.store().recipient(&campaign.tenant, &member.id).await {
                Ok(entry) => entry,
                Err(error) => return (Err(SubmitError::Store(error)), position),
            },
        };
        let recipient = recipient_for(&member.id);
        let locale = locale_for(entry.as_ref());
        let created = self.runner.submit_in_campaign(campaign, recipient, locale, position).await;
        (created.map(|(expanded, _)| expanded), position)
    }

    async fn sweep(&self, claim: &PageClaim, tick: &mut Tick) -> Result<(), StoreError> {
        let campaign = &claim.campaign;
        let page = self
            .runner
            .store()
            .campaign_open(&campaign.tenant, &campaign.id, &campaign.cursor, SWEEP_PAGE_LEN)
            .await?;
        let why = format!("campaign {} was cancelled", campaign.id);
        for id in &page.ids {
            if !self.lease_left(claim) {
                tick.abandoned += 1;
                return Ok(());
            }
            let cause = Cause::Api { action: "campaign cancel".into() };
            // Refused: it reached a provider (or ended) first; it runs its course.
            if self.runner.cancel_for(&campaign.tenant, id, cause, Some(&why)).await?
                == Cancelled::Done
            {
                tick.cancelled += 1;
            }
        }
        let now_ms = self.runner.clock().now_ms();
        let done = PageDone {
            position: campaign.position,
            cursor: page.next.clone().unwrap_or_default(),
            matched: 0,
            rejected: 0,
            done: page.next.is_none(),
            next_at_ms: now_ms,
            now_ms,
        };
        self.advance(claim, &done, tick).await
    }

    async fn advance(
        &self,
        claim: &PageClaim,
        done: &PageDone,
        tick: &mut Tick,
    ) -> Result<(), StoreError> {
        match self.runner.store().campaign_advance(claim, done).await? {
            Advance::Done => {
                tick.rejected += done.rejected;
                tick.finished += usize::from(done.done);
                if !done.done {
                    let next = tick.next_due_ms.map_or(done.next_at_ms, |n| n.min(done.next_at_ms));
                    tick.next_due_ms = Some(next);
                }
            }
            Advance::Cancelling | Advance::LeaseLost => tick.abandoned += 1,
        }
        Ok(())
    }
}
