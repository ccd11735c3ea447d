//! Property test: any workload, any fault profile, any number of workers: every invariant holds.
//! proptest shrinks a failure to the smallest workload that still fails (fewest notifications,
//! fewest workers), and saves it in `workloads.proptest-regressions`, which is committed so the
//! case is replayed first on every run.

use proptest::prelude::*;
use simulations::{Config, Profile, run};

fn profile() -> impl Strategy<Value = Profile> {
    prop_oneof![Just(Profile::Swarm), Just(Profile::All), Just(Profile::None)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_workload_holds_every_invariant(
        seed in any::<u64>(),
        notifications in 1usize..120,
        workers in 1usize..5,
        concurrency in 1usize..10,
        profile in profile(),
    ) {
        let mut config = Config::new(seed, notifications);
        config.workers = workers;
        config.concurrency = concurrency;
        config.profile = profile;
        let report = run(config);
        prop_assert!(report.passed(), "{}", report.text());
        // Every submission is accepted, or refused as planned (which the report checked).
        prop_assert_eq!(report.accepted + report.refused_on_purpose as usize, notifications);
    }
}
