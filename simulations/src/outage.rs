//! The provider-outage scenario: one provider fails every call for a while under a steady load,
//! and the figures that show how courant rode through it.
//!
//! It runs inside the ordinary simulator (same runner, breakers, pacer, queue and invariants);
//! [`Outage`] only shapes the workload (steady arrivals, distinct recipients, no per-recipient
//! limits) and takes the provider down. [`OutageFigures`] are measured from the providers' call
//! log, the send ledger and the final records.

use serde::Serialize;
use steps::model::{Channel, ProviderName};
use steps::rate::SendRate;

/// A provider outage under steady load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outage {
    /// The provider that goes down (`mail-a`, the only email provider, so email backs up).
    pub provider: ProviderName,
    /// The channel it serves.
    pub channel: Channel,
    /// When it goes down, ms after the start of the run.
    pub from_ms: u64,
    /// How long it stays down, ms.
    pub duration_ms: u64,
    /// Its send rate, which the backlog must respect when it comes back.
    pub send_rate: SendRate,
    /// Notifications offered per second, all channels together.
    pub arrivals_per_sec: u32,
}

/// How long after the outage begins the breakers may take to open before calls count against
/// them.
pub const BREAKER_GRACE_MS: u64 = 3_000;

/// What the outage came to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutageFigures {
    /// Notifications for the failed provider's channel offered while it was down, from
    /// [`BREAKER_GRACE_MS`] after it went down.
    pub offered_while_down: u64,
    /// Calls the failed provider received in the same interval (breaker probes and the like).
    pub calls_while_down: u64,
    /// Calls to the failed provider in the first [`BREAKER_GRACE_MS`] of the outage (before the
    /// breakers opened).
    pub calls_first_ms: u64,
    /// The most calls the provider took in any window of its send rate after it came back.
    pub peak_per_window_after: u64,
    /// The send rate's `max`, for comparison.
    pub rate_max: u32,
    /// How long after the outage ended the last backed-up notification went out, ms.
    pub drained_after_ms: u64,
    /// Notifications for the failed provider's channel that went out after it came back.
    pub backlog_sent: u64,
    /// Notifications on other channels submitted during the outage.
    pub others_offered: u64,
    /// The slowest of those from submission to reaching their provider, ms.
    pub others_latency_ms_max: u64,
    /// Notifications that bounced (the provider took them and reported them undelivered, as a
    /// small share of real sends do): dead-lettered for a reason that is not the outage.
    pub bounced: u64,
    /// Accepted notifications that ended neither delivered, sent nor bounced.
    pub lost: u64,
}

impl OutageFigures {
    /// Calls while the provider was down per offered notification.
    pub fn call_ratio(&self) -> f64 {
        self.calls_while_down as f64 / self.offered_while_down.max(1) as f64
    }
}

/// The most timestamps (sorted) that fall in any half-open window `[t, t + window_ms)`.
pub fn peak_in_window(sorted_ms: &[u64], window_ms: u64) -> u64 {
    let mut peak = 0;
    let mut start = 0;
    for (end, &t) in sorted_ms.iter().enumerate() {
        while sorted_ms[start] + window_ms <= t {
            start += 1;
        }
        peak = peak.max(end + 1 - start);
    }
    peak as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_counts_the_busiest_window() {
        assert_eq!(peak_in_window(&[], 1_000), 0);
        assert_eq!(peak_in_window(&[0, 999, 1_000, 1_001, 1_500], 1_000), 4);
        assert_eq!(peak_in_window(&[0, 1_000, 2_000], 1_000), 1);
    }
}
