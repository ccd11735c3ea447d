//! Issue 4's outage scenario: `mail-a`, the only email provider, fails every call for 60 s under
//! a steady 40 notifications a second (half of them email).

use simulations::sim::{Config, run};

#[test]
fn a_60_s_provider_outage_is_ridden_through() {
    for seed in [1, 2, 3] {
        let report = run(Config::outage(seed));
        assert!(report.passed(), "seed {seed}:\n{}", report.text());
        let f = report.outage.clone().expect("the outage figures");
        eprintln!("seed {seed}: {f:?}");
        // The breakers opened within a few seconds: after the first 3 s, calls to the failed
        // provider stayed under 5% of the email offered meanwhile.
        assert!(f.offered_while_down > 1_000, "seed {seed}: {f:?}");
        assert!(f.call_ratio() < 0.05, "seed {seed}: {:.3} of offered: {f:?}", f.call_ratio());
        assert!(report.breakers_opened > 0, "seed {seed}");
        // Other providers were unaffected: SMS and in-app reached their providers within a
        // second of submission all through the outage.
        assert!(f.others_offered > 1_000, "seed {seed}: {f:?}");
        assert!(f.others_latency_ms_max < 1_000, "seed {seed}: {f:?}");
        // The backlog drained after recovery, never faster than the provider's send rate.
        assert!(f.backlog_sent > 1_000, "seed {seed}: {f:?}");
        assert!(f.peak_per_window_after <= u64::from(f.rate_max), "seed {seed}: {f:?}");
        assert!(f.drained_after_ms < 120_000, "seed {seed}: {f:?}");
        // Nothing was lost (a bounce is the provider's verdict on a message it took).
        assert_eq!(f.lost, 0, "seed {seed}: {f:?}");
    }
}
