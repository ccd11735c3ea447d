//! `courant simulate`: runs the deterministic simulator for one seed or a range and prints the
//! report (a table for people, JSON with `--json`). Exit code 1 when an invariant is violated.

use std::io::Write;

use simulations::{Config, Profile, Report};

use crate::cli::Failure;

/// Parses `A..B` (B excluded).
fn parse_range(s: &str) -> Option<std::ops::Range<u64>> {
    let (a, b) = s.split_once("..")?;
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a < b).then_some(a..b)
}

/// The most notifications one run may simulate: bounded so a typo cannot eat the machine's memory.
const NOTIFICATIONS_MAX: usize = 2_000_000;

/// Runs the command.
pub fn command(
    seed: Option<u64>,
    seeds: Option<&str>,
    notifications: usize,
    faults: &str,
    scenario: Option<&str>,
    json: bool,
) -> Result<(), Failure> {
    let usage = |message: String| Failure { code: 2, message };
    let profile = Profile::parse(faults)
        .ok_or_else(|| usage(format!("--faults must be one of {}", Profile::NAMES)))?;
    let outage = match scenario {
        None => false,
        Some("outage") => true,
        Some(other) => return Err(usage(format!("--scenario must be outage, not {other:?}"))),
    };
    if notifications == 0 || notifications > NOTIFICATIONS_MAX {
        return Err(usage(format!("--notifications must be between 1 and {NOTIFICATIONS_MAX}")));
    }
    let range = match (seed, seeds) {
        (Some(seed), None) => seed..seed.saturating_add(1),
        (None, Some(s)) => parse_range(s)
            .ok_or_else(|| usage(format!("--seeds must be A..B with A < B, not {s:?}")))?,
        (None, None) => return Err(usage("pass --seed N or --seeds A..B".into())),
        (Some(_), Some(_)) => return Err(usage("pass --seed or --seeds, not both".into())),
    };
    let single = range.end - range.start == 1;
    let mut failed = Vec::new();
    let mut out = std::io::stdout().lock();
    let started = std::time::Instant::now();
    let mut simulated = 0_usize;
    for seed in range.clone() {
        let config = if outage {
            Config::outage(seed)
        } else {
            Config { profile, ..Config::new(seed, notifications) }
        };
        let report: Report = simulations::run(config);
        simulated += report.accepted;
        if !report.passed() {
            failed.push(seed);
        }
        let text = if json {
            serde_json::to_string(&report).unwrap_or_default() + "\n"
        } else if single {
            report.text()
        } else {
            format!(
                "seed {seed:>8}  {}  states {}  trace {}\n",
                if report.passed() { "ok  " } else { "FAIL" },
                report.states.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "),
                report.trace_hash
            )
        };
        out.write_all(text.as_bytes()).map_err(|e| Failure { code: 1, message: e.to_string() })?;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{} seed(s), {simulated} notifications in {secs:.2} s ({:.0} notifications/s)",
        range.end - range.start,
        simulated as f64 / secs.max(1e-9)
    );
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Failure {
            code: 1,
            message: format!(
                "invariants violated for seed(s) {failed:?}; replay one with: courant simulate --seed {} --notifications {notifications} --faults {faults}",
                failed[0]
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("3..7"), Some(3..7));
        assert_eq!(parse_range("7..3"), None);
        assert_eq!(parse_range("x..3"), None);
    }
}
