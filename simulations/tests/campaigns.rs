//! Campaigns under the simulator: every member gets exactly one notification, the counters are
//! exact, a cancel leaves no unclaimed notification running, and planted bugs in each of those
//! are caught.

use std::collections::BTreeSet;

use simulations::{Config, Planted, Profile, Report, run};

fn invariants(report: &Report) -> BTreeSet<&str> {
    report.violations.iter().map(|v| v.invariant.as_str()).collect()
}

#[test]
fn campaigns_hold_their_invariants_under_faults() {
    let (mut expanded, mut cancelled) = (0, 0);
    for seed in [0, 1, 2, 3, 7, 42, 99, 1_000] {
        for profile in [Profile::Swarm, Profile::All] {
            let mut config = Config::new(seed, 300);
            config.profile = profile;
            let report = run(config);
            assert!(report.passed(), "{}", report.text());
            expanded += report.campaign_notifications;
            cancelled += report.campaigns_cancelled;
        }
    }
    assert!(expanded > 1_000, "the campaigns hardly ran: {expanded} notifications");
    assert!(cancelled >= 8, "cancels were hardly checked: {cancelled} of 16 runs");
}

/// The first seed in `0..seeds` whose run breaks an invariant under `planted`.
fn first_failure(planted: Planted, seeds: u64) -> Option<(u64, Report)> {
    (0..seeds).find_map(|seed| {
        let mut c = Config::new(seed, 100);
        c.planted = planted;
        let report = run(c);
        (!report.passed()).then_some((seed, report))
    })
}

#[test]
fn a_cancel_sweep_that_finds_nothing_is_caught() {
    let planted = Planted { campaign_sweep_lost: true, ..Planted::default() };
    let (seed, report) = first_failure(planted, 300).expect("caught within 300 seeds");
    eprintln!("lost cancel sweep: caught by seed {seed}");
    assert!(invariants(&report).contains("campaign-cancel"), "seed {seed}: {}", report.text());
    // The same seed without the bug holds.
    let clean = run(Config::new(seed, 100));
    assert!(clean.passed(), "{}", clean.text());
}

#[test]
fn notification_ids_not_derived_from_campaign_and_recipient_are_caught() {
    let planted = Planted { campaign_ids_not_derived: true, ..Planted::default() };
    let (seed, report) = first_failure(planted, 300).expect("caught within 300 seeds");
    eprintln!("ids not derived: caught by seed {seed}");
    assert!(invariants(&report).contains("campaign-once"), "seed {seed}: {}", report.text());
    let clean = run(Config::new(seed, 100));
    assert!(clean.passed(), "{}", clean.text());
}
