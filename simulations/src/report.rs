//! What a run found: counts, latencies, faults fired, edges visited, invariant violations (with
//! the trace around them and the command that replays them) and the trace hash.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::faults::{Fault, FaultSet, Profile};
use crate::world::Planted;

/// How many violations beyond the first the text report names.
const VIOLATIONS_LISTED_MAX: usize = 10;

/// An invariant that did not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Which invariant (`edge`, `terminal`, `duplicate-send`, `liveness`, ...).
    pub invariant: String,
    /// The notification it concerns, if one.
    pub notification: Option<String>,
    /// What was wrong.
    pub detail: String,
    /// Virtual ms since the run started.
    pub at_ms: u64,
    /// The notification's history, one line per transition.
    pub history: Vec<String>,
    /// The last trace lines before the violation.
    pub trace: Vec<String>,
    /// The command that replays the run.
    pub repro: String,
}

/// One run's report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Notifications planned.
    pub notifications: usize,
    /// Submissions accepted by the API (a duplicate event is accepted with the first one's id).
    pub accepted: usize,
    /// Notifications the tenant's campaigns created.
    pub campaign_notifications: usize,
    /// Campaigns seen `cancelled` (their sweep done) and checked then.
    pub campaigns_cancelled: usize,
    /// The fault profile.
    pub profile: Profile,
    /// The faults this seed turned on, with their rates.
    pub faults: FaultSet,
    /// How often each fault fired.
    pub fired: BTreeMap<Fault, u64>,
    /// Final states, counted.
    pub states: BTreeMap<String, u64>,
    /// Messages the providers really took.
    pub sends: u64,
    /// Sends beyond the first per notification (each must follow an unknown outcome).
    pub extra_sends: u64,
    /// Extra sends that carried the possible-duplicate flag.
    pub flagged_resends: u64,
    /// Dead letters the operator replayed.
    pub replayed: u64,
    /// Attempts in all (the last attempt number of each notification).
    pub attempts: u64,
    /// Retries scheduled after a failed or unknown attempt.
    pub retries: u64,
    /// Virtual latency from acceptance to the final state, percentiles, ms.
    pub latency_ms_p50: u64,
    /// See `latency_ms_p50`.
    pub latency_ms_p90: u64,
    /// See `latency_ms_p50`.
    pub latency_ms_p99: u64,
    /// See `latency_ms_p50`.
    pub latency_ms_max: u64,
    /// Virtual time the run covered, ms.
    pub virtual_ms: u64,
    /// Simulator steps.
    pub steps: u64,
    /// Trace lines hashed.
    pub trace_lines: u64,
    /// Transitions taken, by edge.
    pub edges: BTreeMap<String, u64>,
    /// Invariant violations (empty when everything held).
    pub violations: Vec<Violation>,
    /// The hash of the whole trace: the same seed must give the same hash.
    pub trace_hash: String,
    /// Times a worker's provider circuit breaker opened.
    pub breakers_opened: u64,
    /// Sends an open breaker refused (nothing went out; the notification failed over or waited).
    pub breaker_rejections: u64,
    /// Overdue notifications the reaper re-drove (their wake-up was lost or very late).
    pub redriven: u64,
    /// Versions of the registry template published during the run.
    pub versions_published: u64,
    /// Submissions refused as planned (a missing variable, an SMS over the segment cap).
    pub refused_on_purpose: u64,
    /// Messages the providers took that were checked against their pinned version.
    pub renders_checked: u64,
    /// Bugs planted on purpose (tests only).
    pub planted: Planted,
    /// The outage scenario's figures, when it ran.
    pub outage: Option<crate::outage::OutageFigures>,
    /// What the policies of issue 5 did: limits, dedup, collapse.
    pub policy: PolicyFigures,
}

/// What the recipients' policies did in a run, from the committed histories.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PolicyFigures {
    /// Slots taken in recipients' windows (channel rate limits and category caps), each checked
    /// against its window.
    pub admissions: u64,
    /// Notifications deferred by a full window (each deferral counted).
    pub deferred: u64,
    /// Notifications skipped by a full window (its policy, or its time budget).
    pub skipped: u64,
    /// Of the deferrals and skips, those a category cap caused.
    pub by_cap: u64,
    /// Distinct events (event id, recipient, channel) submitted.
    pub events: u64,
    /// Submissions answered with an earlier notification of their event.
    pub deduplicated: u64,
    /// Notifications collapsed into another's message.
    pub collapsed: u64,
}

impl Report {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The report for people.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "seed {}  notifications {} (accepted {}, and {} from campaigns)",
            self.seed, self.notifications, self.accepted, self.campaign_notifications
        );
        let states: Vec<String> = self.states.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(out, "final states   {}", states.join(", "));
        let dlq = self.states.get("dead_lettered").copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "sends          {} ({} re-sends after unknown outcomes, {} flagged)  attempts {}  retries {}  DLQ {dlq} (replayed {})",
            self.sends,
            self.extra_sends,
            self.flagged_resends,
            self.attempts,
            self.retries,
            self.replayed
        );
        let _ = writeln!(
            out,
            "latency (virtual)  p50 {} ms  p90 {} ms  p99 {} ms  max {} ms",
            self.latency_ms_p50, self.latency_ms_p90, self.latency_ms_p99, self.latency_ms_max
        );
        let fired: Vec<String> =
            self.fired.iter().map(|(f, n)| format!("{}×{n}", serde_name(f))).collect();
        let _ = writeln!(
            out,
            "faults fired   {}",
            if fired.is_empty() { "none".into() } else { fired.join(", ") }
        );
        let _ = writeln!(
            out,
            "breakers       opened {} times, refused {} sends",
            self.breakers_opened, self.breaker_rejections
        );
        if let Some(f) = &self.outage {
            let _ = writeln!(
                out,
                "outage         {} of {} offered reached the failed provider while its breakers were \
                 open ({:.1}%), {} in the first {} ms",
                f.calls_while_down,
                f.offered_while_down,
                100.0 * f.call_ratio(),
                f.calls_first_ms,
                crate::outage::BREAKER_GRACE_MS
            );
            let _ = writeln!(
                out,
                "               backlog of {} drained {:.1} s after recovery, at most {} sends per \
                 window (rate {}); other channels' slowest first call {} ms; {} lost, {} bounced",
                f.backlog_sent,
                f.drained_after_ms as f64 / 1_000.0,
                f.peak_per_window_after,
                f.rate_max,
                f.others_latency_ms_max,
                f.lost,
                f.bounced
            );
        }
        let _ = writeln!(out, "reaper         re-drove {} overdue notifications", self.redriven);
        let p = &self.policy;
        let _ = writeln!(
            out,
            "limits         {} slots taken; {} deferrals and {} skips by a full window ({} by a \
             category cap)",
            p.admissions, p.deferred, p.skipped, p.by_cap
        );
        let _ = writeln!(
            out,
            "dedup          {} events, {} duplicate submissions answered with the first",
            p.events, p.deduplicated
        );
        let _ = writeln!(
            out,
            "collapse       {} notifications merged into another's message",
            p.collapsed
        );
        let _ = writeln!(
            out,
            "templates      {} versions published, {} submissions refused as planned, {} sends \
             matched their pinned version",
            self.versions_published, self.refused_on_purpose, self.renders_checked
        );
        let _ = writeln!(
            out,
            "virtual time   {:.1} s  steps {}  trace lines {}",
            self.virtual_ms as f64 / 1_000.0,
            self.steps,
            self.trace_lines
        );
        if self.violations.is_empty() {
            let _ = writeln!(out, "invariants     all held");
        } else {
            let _ = writeln!(out, "invariants     {} VIOLATED", self.violations.len());
            // The first violation in full; the rest one line each (the first is usually the cause).
            for v in self.violations.iter().skip(1).take(VIOLATIONS_LISTED_MAX) {
                let _ = writeln!(
                    out,
                    "  also {}: {}{}",
                    v.invariant,
                    v.notification.as_deref().map(|n| format!("{n}: ")).unwrap_or_default(),
                    v.detail
                );
            }
            if self.violations.len() > VIOLATIONS_LISTED_MAX + 1 {
                let more = self.violations.len() - VIOLATIONS_LISTED_MAX - 1;
                let _ = writeln!(out, "  ... and {more} more (--json lists them all)");
            }
            for v in self.violations.iter().take(1) {
                let _ = writeln!(
                    out,
                    "\n{}: {}{}",
                    v.invariant,
                    v.notification.as_deref().map(|n| format!("{n}: ")).unwrap_or_default(),
                    v.detail
                );
                let _ = writeln!(out, "  at +{} ms (virtual)", v.at_ms);
                if !v.history.is_empty() {
                    let _ = writeln!(out, "  history:");
                    for line in &v.history {
                        let _ = writeln!(out, "    {line}");
                    }
                }
                let _ = writeln!(out, "  events (this notification's, then the run's last):");
                for line in &v.trace {
                    let _ = writeln!(out, "    {line}");
                }
                let _ = writeln!(out, "  replay: {}", v.repro);
            }
        }
        let _ = writeln!(out, "trace hash     {}", self.trace_hash);
        out
    }
}

fn serde_name(fault: &Fault) -> String {
    serde_json::to_value(fault).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}
