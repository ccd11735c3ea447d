//! The campaign checks of the conformance suite: what both stores must do for
//! `workflows::ports::Campaigns`. [`campaign_conformance_tests!`](crate::campaign_conformance_tests)
//! turns them into tests for one store, like `conformance_tests!`.

use std::collections::BTreeSet;

use steps::filter::SkipReason;
use steps::model::{Category, Channel, NotificationId, RecipientId, TemplateId, TenantId};
use workflows::campaign::{
    Advance, Appended, Campaign, CampaignCreated, CampaignId, CampaignSpec, CampaignState, Counts,
    LEASE_MS, Moved, PageClaim, PageDone, RecipientFilter, Segment,
};
use workflows::machine::{State, StateKind};
use workflows::ports::{Campaigns, Purged};
use workflows::record::{Created, Idempotency, Record, Replay};

use super::{Conformance, commit, committed, dead, first, record, sent, tenant, ulid};
use crate::keys::campaigns::new_campaign_id;

/// What the campaign checks need of a store.
pub trait CampaignConformance: Conformance + Campaigns {}

impl<S: Conformance + Campaigns> CampaignConformance for S {}

/// Every campaign check, by name, in the order
/// [`campaign_conformance_tests!`](crate::campaign_conformance_tests) runs them.
pub const CHECKS: [&str; 8] = [
    "campaign_create_load_and_list",
    "campaign_idempotent_create",
    "campaign_append_only_to_drafts",
    "campaign_pages_are_leased_and_paced",
    "campaign_cancel_stops_expansion_then_sweeps",
    "campaign_counters_follow_every_commit",
    "campaign_open_walk_sees_every_open_notification",
    "campaign_filter_pages_keep_their_cursor_and_count_matches",
];

/// Expands to one `#[tokio::test]` per campaign check. `$fresh` is as for `conformance_tests!`.
#[macro_export]
macro_rules! campaign_conformance_tests {
    ($fresh:path) => {
        $crate::campaign_conformance_tests!(@each $fresh;
            campaign_create_load_and_list,
            campaign_idempotent_create,
            campaign_append_only_to_drafts,
            campaign_pages_are_leased_and_paced,
            campaign_cancel_stops_expansion_then_sweeps,
            campaign_counters_follow_every_commit,
            campaign_open_walk_sees_every_open_notification,
            campaign_filter_pages_keep_their_cursor_and_count_matches,
        );
    };
    (@each $fresh:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (store, _guard) = $fresh().await;
                $crate::conformance::campaigns::$name(&store).await;
            }
        )*
    };
}

// ---- fixtures ----------------------------------------------------------------------------------

fn cid(tenant: &TenantId, n: u32) -> CampaignId {
    new_campaign_id(tenant, None, &ulid(n))
}

fn recipients(from: u32, n: u32) -> Vec<RecipientId> {
    (from..from + n).map(|i| RecipientId::new(format!("r{i}")).expect("fixture id")).collect()
}

fn campaign(tenant: &TenantId, id: &CampaignId, state: CampaignState, now_ms: u64) -> Campaign {
    Campaign {
        tenant: tenant.clone(),
        id: id.clone(),
        spec: CampaignSpec {
            template: TemplateId::new("welcome").expect("fixture id"),
            channel: Channel::InApp,
            category: Category::new("marketing").expect("fixture id"),
            data: serde_json::Map::from_iter([("name".to_owned(), serde_json::json!("you"))]),
            segment: Segment::Recipients,
            rate_per_sec: 100,
        },
        state,
        recipients: 0,
        position: 0,
        cursor: String::new(),
        rejected: 0,
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
        started_at_ms: (state == CampaignState::Expanding).then_some(now_ms),
        finished_at_ms: None,
        cancelled_at_ms: None,
    }
}

async fn created<S: CampaignConformance>(store: &S, c: &Campaign, members: &[RecipientId]) {
    let outcome = store.campaign_create(c, members, None).await;
    assert_eq!(outcome, Ok(CampaignCreated::New), "creating campaign {}", c.id);
}

async fn load<S: CampaignConformance>(store: &S, c: &Campaign) -> Campaign {
    store.campaign(&c.tenant, &c.id).await.expect("campaign").expect("the campaign exists")
}

async fn claim<S: CampaignConformance>(store: &S, now_ms: u64) -> Vec<PageClaim> {
    store.campaign_claim(now_ms, LEASE_MS, 10).await.expect("claim")
}

fn page(position: u64, done: bool, next_at_ms: u64, now_ms: u64) -> PageDone {
    PageDone { position, cursor: String::new(), matched: 0, rejected: 0, done, next_at_ms, now_ms }
}

/// A campaign's notification for `recipient`, created in `received`.
async fn notification<S: CampaignConformance>(
    store: &S,
    c: &Campaign,
    recipient: &str,
    now_ms: u64,
) -> Record {
    let rid = RecipientId::new(recipient).expect("fixture id");
    let id = store.campaign_notification_id(&c.tenant, &c.id, &rid);
    let rec = record(&c.tenant, &id, now_ms, None);
    let outcome = store.campaign_create_notification(&rec, &first(now_ms), &c.id).await;
    assert_eq!(outcome, Ok(Created::New), "creating {id}");
    rec
}

async fn counts<S: CampaignConformance>(store: &S, c: &Campaign) -> Counts {
    let counts = store.campaign_counts(&c.tenant, &c.id).await.expect("counts");
    // Zero counters are equivalent to absent ones.
    Counts(counts.0.into_iter().filter(|(_, n)| *n != 0).collect())
}

fn expect(pairs: &[(&str, i64)]) -> Counts {
    Counts(pairs.iter().map(|(field, n)| ((*field).to_owned(), *n)).collect())
}

async fn walk_open<S: CampaignConformance>(
    store: &S,
    c: &Campaign,
    len: usize,
) -> BTreeSet<NotificationId> {
    let mut seen = BTreeSet::new();
    let mut cursor = String::new();
    for _ in 0..10_000 {
        let page = store.campaign_open(&c.tenant, &c.id, &cursor, len).await.expect("open");
        seen.extend(page.ids);
        match page.next {
            Some(next) => cursor = next,
            None => return seen,
        }
    }
    panic!("the open walk of {} does not end", c.id);
}

// ---- the checks --------------------------------------------------------------------------------

/// A campaign reads back as written, with its segment in order; a tenant's campaigns list newest
/// first, page by page, and never another tenant's.
pub async fn campaign_create_load_and_list<S: CampaignConformance>(store: &S) {
    let acme = tenant("acme");
    let now = store.now_ms();
    let ids: Vec<CampaignId> = (1..=5).map(|n| cid(&acme, n)).collect();
    for (i, id) in ids.iter().enumerate() {
        let c = campaign(&acme, id, CampaignState::Draft, now + i as u64);
        created(store, &c, &recipients(0, 3)).await;
    }
    let c = campaign(&acme, &ids[0], CampaignState::Draft, now);
    let loaded = load(store, &c).await;
    assert_eq!(loaded, Campaign { recipients: 3, ..c.clone() });
    let members = store.campaign_recipients(&acme, &c.id, 1, 5).await.expect("recipients");
    assert_eq!(members, recipients(1, 2));
    assert_eq!(store.campaign_recipients(&acme, &c.id, 3, 5).await, Ok(vec![]));

    let newest_first: Vec<CampaignId> = ids.iter().rev().cloned().collect();
    let listed = store.campaigns(&acme, None, 10).await.expect("list");
    assert_eq!(listed.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), newest_first);
    let first_page = store.campaigns(&acme, None, 2).await.expect("list");
    let second_page = store.campaigns(&acme, Some(&first_page[1].id), 2).await.expect("list");
    let rest = store.campaigns(&acme, Some(&second_page[1].id), 2).await.expect("list");
    let paged: Vec<CampaignId> =
        first_page.iter().chain(&second_page).chain(&rest).map(|c| c.id.clone()).collect();
    assert_eq!(paged, newest_first);

    let globex = tenant("globex");
    assert_eq!(store.campaigns(&globex, None, 10).await, Ok(vec![]));
    assert_eq!(store.campaign(&globex, &ids[0]).await, Ok(None));
    assert_eq!(store.campaign_counts(&acme, &ids[0]).await.map(|c| c.total()), Ok(0));
}

/// The same idempotency key returns the first campaign (with whether the request matched); an id
/// that exists is never overwritten.
pub async fn campaign_idempotent_create<S: CampaignConformance>(store: &S) {
    let acme = tenant("acme");
    let now = store.now_ms();
    let key = "launch-1";
    let idem = Idempotency { key: key.into(), fingerprint: "fp".into() };
    let a =
        campaign(&acme, &new_campaign_id(&acme, Some(key), &ulid(1)), CampaignState::Draft, now);
    assert_eq!(
        store.campaign_create(&a, &recipients(0, 2), Some(&idem)).await,
        Ok(CampaignCreated::New)
    );
    let b =
        campaign(&acme, &new_campaign_id(&acme, Some(key), &ulid(2)), CampaignState::Draft, now);
    assert_eq!(
        store.campaign_create(&b, &recipients(0, 2), Some(&idem)).await,
        Ok(CampaignCreated::Existing { id: a.id.clone(), same_request: true })
    );
    let other = Idempotency { key: key.into(), fingerprint: "another".into() };
    assert_eq!(
        store.campaign_create(&b, &recipients(0, 2), Some(&other)).await,
        Ok(CampaignCreated::Existing { id: a.id.clone(), same_request: false })
    );
    assert_eq!(store.campaign(&acme, &b.id).await, Ok(None), "a replayed key created one");
    let again = campaign(&acme, &a.id, CampaignState::Expanding, now + 5);
    assert_eq!(
        store.campaign_create(&again, &recipients(0, 9), None).await,
        Ok(CampaignCreated::Existing { id: a.id.clone(), same_request: false })
    );
    assert_eq!(load(store, &a).await.recipients, 2, "an existing campaign was overwritten");
    // The key is the tenant's own.
    let globex = tenant("globex");
    let g = campaign(
        &globex,
        &new_campaign_id(&globex, Some(key), &ulid(3)),
        CampaignState::Draft,
        now,
    );
    assert_eq!(store.campaign_create(&g, &[], Some(&idem)).await, Ok(CampaignCreated::New));
}

/// Recipients are appended to a draft only, in order; an append's idempotency key appends once;
/// starting makes it due, and a started campaign takes no more.
pub async fn campaign_append_only_to_drafts<S: CampaignConformance>(store: &S) {
    let acme = tenant("acme");
    let now = store.now_ms();
    let c = campaign(&acme, &cid(&acme, 1), CampaignState::Draft, now);
    created(store, &c, &recipients(0, 2)).await;
    assert!(claim(store, now + 1).await.is_empty(), "a draft was claimed");
    let idem = Idempotency { key: "page-2".into(), fingerprint: "fp2".into() };
    let (page_2, page_9) = (recipients(2, 3), recipients(9, 1));
    let append = store.campaign_append(&acme, &c.id, &page_2, Some(&idem), now + 1);
    assert_eq!(append.await, Ok(Appended::Done { recipients: 5 }));
    let again = store.campaign_append(&acme, &c.id, &page_2, Some(&idem), now + 2);
    assert_eq!(again.await, Ok(Appended::Replayed { recipients: 5, same_request: true }));
    let changed = Idempotency { key: "page-2".into(), fingerprint: "other".into() };
    let reused = store.campaign_append(&acme, &c.id, &page_9, Some(&changed), now + 2);
    assert_eq!(reused.await, Ok(Appended::Replayed { recipients: 5, same_request: false }));
    assert_eq!(
        store.campaign_append(&acme, &c.id, &recipients(5, 1), None, now + 3).await,
        Ok(Appended::Done { recipients: 6 })
    );
    let members = store.campaign_recipients(&acme, &c.id, 0, 100).await.expect("recipients");
    assert_eq!(members, recipients(0, 6));
    let missing = cid(&acme, 99);
    assert_eq!(
        store.campaign_append(&acme, &missing, &recipients(0, 1), None, now).await,
        Ok(Appended::NotFound)
    );
    assert_eq!(store.campaign_start(&acme, &missing, now).await, Ok(Moved::NotFound));

    assert_eq!(
        store.campaign_start(&acme, &c.id, now + 4).await,
        Ok(Moved::To { state: CampaignState::Expanding })
    );
    assert_eq!(
        store.campaign_start(&acme, &c.id, now + 5).await,
        Ok(Moved::To { state: CampaignState::Expanding }),
        "starting twice is not an error"
    );
    let loaded = load(store, &c).await;
    assert_eq!((loaded.state, loaded.started_at_ms), (CampaignState::Expanding, Some(now + 4)));
    assert_eq!(
        store.campaign_append(&acme, &c.id, &recipients(6, 1), None, now + 6).await,
        Ok(Appended::Refused { state: CampaignState::Expanding })
    );
    let claims = claim(store, now + 4).await;
    assert_eq!(claims.len(), 1, "a started campaign is due at once");
    assert_eq!(claims[0].campaign.recipients, 6);
}

/// A due page is leased to one claimant at a time; advancing it records the position and makes
/// the next page due when asked; a lease that ends hands the page to another worker and the
/// first one's advance is refused; the last page finishes the campaign.
pub async fn campaign_pages_are_leased_and_paced<S: CampaignConformance>(store: &S) {
    let acme = tenant("acme");
    let now = store.now_ms();
    let c = campaign(&acme, &cid(&acme, 1), CampaignState::Expanding, now);
    created(store, &c, &recipients(0, 250)).await;
    let draft = campaign(&acme, &cid(&acme, 2), CampaignState::Draft, now);
    created(store, &draft, &recipients(0, 1)).await;
    assert!(claim(store, now - 1).await.is_empty(), "claimed before it was due");

    let first_claim = claim(store, now).await;
    assert_eq!(first_claim.len(), 1, "{first_claim:?}");
    let held = &first_claim[0];
    assert_eq!((held.campaign.id.clone(), held.campaign.position), (c.id.clone(), 0));
    assert_eq!(held.lease_until_ms, now + LEASE_MS);
    assert!(claim(store, now + 10).await.is_empty(), "a leased page was claimed twice");
    let advanced = store.campaign_advance(held, &page(100, false, now + 1_000, now + 20)).await;
    assert_eq!(advanced, Ok(Advance::Done));
    assert_eq!(load(store, &c).await.position, 100);
    assert_eq!(
        store.campaign_advance(held, &page(200, false, now, now)).await,
        Ok(Advance::LeaseLost),
        "a released lease advanced again"
    );
    assert!(claim(store, now + 999).await.is_empty(), "the next page came before its pace");

    // A worker takes the next page and dies: the page comes back when the lease ends.
    let dead_worker = claim(store, now + 1_000).await;
    assert_eq!(dead_worker.len(), 1);
    assert_eq!(dead_worker[0].campaign.position, 100);
    assert!(claim(store, now + 1_000 + LEASE_MS - 1).await.is_empty());
    let taken_over = claim(store, now + 1_000 + LEASE_MS).await;
    assert_eq!(taken_over.len(), 1, "a dead worker's page never came back");
    assert_eq!(taken_over[0].campaign.position, 100, "the lost page is expanded again");
    assert_ne!(taken_over[0].token, dead_worker[0].token);
    let late = page(200, false, now, now + 1_000 + LEASE_MS);
    assert_eq!(store.campaign_advance(&dead_worker[0], &late).await, Ok(Advance::LeaseLost));
    let t = now + 1_000 + LEASE_MS + 1;
    assert_eq!(
        store.campaign_advance(&taken_over[0], &page(200, false, t, t)).await,
        Ok(Advance::Done)
    );

    let last = claim(store, t).await;
    assert_eq!(last.len(), 1);
    let finished = page(250, true, t + 500, t + 1);
    assert_eq!(store.campaign_advance(&last[0], &finished).await, Ok(Advance::Done));
    let loaded = load(store, &c).await;
    assert_eq!((loaded.state, loaded.position), (CampaignState::Expanded, 250));
    assert_eq!(loaded.finished_at_ms, Some(t + 1));
    assert!(claim(store, t + LEASE_MS * 2).await.is_empty(), "a finished campaign was claimed");
    assert_eq!(
        store.campaign_start(&acme, &c.id, t).await,
        Ok(Moved::Refused { state: CampaignState::Expanded })
    );
}

/// Cancelling a draft ends it; cancelling an expanding campaign stops its expansion (the
/// page's holder learns it when it advances) and makes its sweep due once the page is released
/// (or its lease ends); the sweep's last page ends it `cancelled`.
pub async fn campaign_cancel_stops_expansion_then_sweeps<S: CampaignConformance>(store: &S) {
    let acme = tenant("acme");
    let now = store.now_ms();
    let draft = campaign(&acme, &cid(&acme, 1), CampaignState::Draft, now);
    created(store, &draft, &recipients(0, 3)).await;
    assert_eq!(
        store.campaign_cancel(&acme, &draft.id, now + 1).await,
        Ok(Moved::To { state: CampaignState::Cancelled })
    );
    assert_eq!(
        store.campaign_start(&acme, &draft.id, now + 2).await,
        Ok(Moved::Refused { state: CampaignState::Cancelled })
    );
    assert_eq!(store.campaign_cancel(&acme, &cid(&acme, 9), now).await, Ok(Moved::NotFound));

    let c = campaign(&acme, &cid(&acme, 2), CampaignState::Expanding, now);
    created(store, &c, &recipients(0, 1_000)).await;
    let held = claim(store, now).await.pop().expect("a claim");
    assert_eq!(
        store.campaign_cancel(&acme, &c.id, now + 5).await,
        Ok(Moved::To { state: CampaignState::Cancelling })
    );
    assert_eq!(
        store.campaign_cancel(&acme, &c.id, now + 6).await,
        Ok(Moved::To { state: CampaignState::Cancelling }),
        "cancelling twice is not an error"
    );
    let loaded = load(store, &c).await;
    assert_eq!((loaded.state, loaded.cancelled_at_ms), (CampaignState::Cancelling, Some(now + 5)));
    assert!(claim(store, now + 10).await.is_empty(), "the sweep started under a held page");
    assert_eq!(
        store.campaign_advance(&held, &page(500, false, now + 1_000, now + 20)).await,
        Ok(Advance::Cancelling)
    );
    assert_eq!(load(store, &c).await.position, 0, "a page finished after the cancel counted");
    let sweep = claim(store, now + 20).await.pop().expect("the sweep is due at once");
    assert_eq!(sweep.campaign.state, CampaignState::Cancelling);
    assert_eq!(sweep.campaign.cursor, "");
    let mut more = page(0, false, now + 21, now + 21);
    more.cursor = "somewhere".into();
    assert_eq!(store.campaign_advance(&sweep, &more).await, Ok(Advance::Done));
    let next = claim(store, now + 21).await.pop().expect("the next sweep page");
    assert_eq!(next.campaign.cursor, "somewhere");
    assert_eq!(
        store.campaign_advance(&next, &page(0, true, now + 22, now + 22)).await,
        Ok(Advance::Done)
    );
    let loaded = load(store, &c).await;
    assert_eq!((loaded.state, loaded.finished_at_ms), (CampaignState::Cancelled, Some(now + 22)));
    assert!(claim(store, now + LEASE_MS * 2).await.is_empty());

    // A campaign whose page holder died is swept when the lease ends.
    let orphan = campaign(&acme, &cid(&acme, 3), CampaignState::Expanding, now);
    created(store, &orphan, &recipients(0, 10)).await;
    let lost = claim(store, now).await.pop().expect("a claim");
    store.campaign_cancel(&acme, &orphan.id, now + 1).await.expect("cancel");
    assert!(claim(store, now + LEASE_MS - 1).await.is_empty());
    let swept = claim(store, now + LEASE_MS).await.pop().expect("swept after the lease");
    assert_eq!(swept.campaign.state, CampaignState::Cancelling);
    let stale = page(10, true, now, now + LEASE_MS);
    assert_eq!(store.campaign_advance(&lost, &stale).await, Ok(Advance::LeaseLost));
}

/// A campaign's counters follow its notifications' states through every commit (skips by
/// reason), exactly: a refused commit and a second create of the same id count nothing; a
/// replay moves a dead letter back; a purge takes it out. Notifications of other campaigns
/// and none are not counted.
pub async fn campaign_counters_follow_every_commit<S: CampaignConformance>(store: &S) {
    let acme = tenant("acme");
    let now = store.now_ms();
    let c = campaign(&acme, &cid(&acme, 1), CampaignState::Expanding, now);
    created(store, &c, &recipients(0, 3)).await;
    let other = campaign(&acme, &cid(&acme, 2), CampaignState::Expanding, now);
    created(store, &other, &recipients(0, 3)).await;

    let a = notification(store, &c, "r0", now).await;
    let b = notification(store, &c, "r1", now).await;
    let d = notification(store, &c, "r2", now).await;
    notification(store, &other, "r0", now).await;
    let plain = record(&acme, &crate::keys::new_notification_id(&acme, None, &ulid(7)), now, None);
    assert_eq!(store.create(&plain, &first(now), None).await, Ok(Created::New));
    assert_eq!(counts(store, &c).await, expect(&[("received", 3)]));
    let again = store.campaign_create_notification(&a, &first(now), &c.id).await;
    assert_eq!(again, Ok(Created::Existing { id: a.id.clone(), same_request: false }));
    assert_eq!(counts(store, &c).await, expect(&[("received", 3)]), "a second create counted");

    let opted_out = State::Skipped { reason: SkipReason::OptedOut { channel: Channel::InApp } };
    committed(store, &commit(&a, 1, opted_out.clone(), now + 1, None)).await;
    let refused = store.commit(&commit(&a, 1, sent(), now + 2, None)).await;
    assert!(
        refused.is_ok_and(|o| !matches!(o, workflows::record::CommitOutcome::Committed { .. }))
    );
    committed(store, &commit(&b, 1, sent(), now + 2, None)).await;
    committed(store, &commit(&d, 1, State::Received {}, now + 2, Some(now + 3))).await;
    committed(store, &commit(&plain, 1, sent(), now + 2, None)).await;
    assert_eq!(
        counts(store, &c).await,
        expect(&[("received", 1), ("sent", 1), ("skipped:opted_out", 1)])
    );
    assert_eq!(counts(store, &other).await, expect(&[("received", 1)]));

    committed(store, &commit(&d, 2, dead(), now + 3, None)).await;
    let progress = counts(store, &c).await;
    assert_eq!(progress, expect(&[("dead_lettered", 1), ("sent", 1), ("skipped:opted_out", 1)]));
    assert_eq!(progress.kind(StateKind::Skipped), 1);
    // An operator's replay: back in flight.
    let mut replay = commit(&d, 3, State::Received {}, now + 4, Some(now + 5));
    replay.replay = Some(Replay { budget_from_ms: now + 5, possible_duplicate: false, count: 1 });
    committed(store, &replay).await;
    assert_eq!(
        counts(store, &c).await,
        expect(&[("received", 1), ("sent", 1), ("skipped:opted_out", 1)])
    );
    committed(store, &commit(&d, 4, dead(), now + 6, None)).await;
    assert_eq!(store.purge(&acme, &d.id, 5).await, Ok(Purged::Done));
    assert_eq!(counts(store, &c).await, expect(&[("sent", 1), ("skipped:opted_out", 1)]));
}

/// The open walk returns every notification of the campaign that is not terminal, across all
/// shards, page by page, and none that is.
pub async fn campaign_open_walk_sees_every_open_notification<S: CampaignConformance>(store: &S) {
    let acme = tenant("acme");
    let now = store.now_ms();
    let c = campaign(&acme, &cid(&acme, 1), CampaignState::Expanding, now);
    created(store, &c, &recipients(0, 300)).await;
    let mut open = BTreeSet::new();
    for i in 0..300 {
        let rec = notification(store, &c, &format!("r{i}"), now).await;
        match i % 3 {
            0 => {
                let cancelled = State::Cancelled {};
                committed(store, &commit(&rec, 1, cancelled, now + 1, None)).await;
            }
            1 => {
                committed(store, &commit(&rec, 1, sent(), now + 1, None)).await;
                open.insert(rec.id);
            }
            _ => {
                open.insert(rec.id);
            }
        }
    }
    let shards: BTreeSet<u16> = open.iter().map(crate::keys::shard_for).collect();
    assert!(shards.len() > 8, "the fixture spreads over the shards");
    assert_eq!(walk_open(store, &c, 7).await, open);
    assert_eq!(walk_open(store, &c, 1_000).await, open);
    let empty = campaign(&acme, &cid(&acme, 2), CampaignState::Expanding, now);
    assert_eq!(walk_open(store, &empty, 10).await, BTreeSet::new());
    assert_eq!(
        counts(store, &c).await,
        expect(&[("cancelled", 100), ("received", 100), ("sent", 100)])
    );
}

/// A filter segment's pages record where the directory walk goes on and how many recipients it
/// matched; its size grows with them, and its spec (the filter) reads back as written.
pub async fn campaign_filter_pages_keep_their_cursor_and_count_matches<S: CampaignConformance>(
    store: &S,
) {
    let acme = tenant("acme");
    let now = store.now_ms();
    let mut c = campaign(&acme, &cid(&acme, 1), CampaignState::Expanding, now);
    let filter: RecipientFilter =
        serde_json::from_value(serde_json::json!({ "locale": "fr", "reachable": true }))
            .expect("a filter");
    c.spec.segment = Segment::Filter { filter };
    created(store, &c, &[]).await;
    assert_eq!(load(store, &c).await.spec, c.spec);
    let first = claim(store, now).await.pop().expect("due at once");
    assert_eq!((first.campaign.cursor.as_str(), first.campaign.recipients), ("", 0));
    let walked = PageDone { cursor: "r049".into(), matched: 7, ..page(50, false, now, now) };
    assert_eq!(store.campaign_advance(&first, &walked).await, Ok(Advance::Done));
    let second = claim(store, now).await.pop().expect("the next page");
    assert_eq!(second.campaign.cursor, "r049");
    assert_eq!((second.campaign.position, second.campaign.recipients), (50, 7));
    let last = PageDone { cursor: String::new(), matched: 3, ..page(80, true, now, now + 1) };
    assert_eq!(store.campaign_advance(&second, &last).await, Ok(Advance::Done));
    let loaded = load(store, &c).await;
    assert_eq!(
        (loaded.state, loaded.position, loaded.recipients),
        (CampaignState::Expanded, 80, 10)
    );
}
