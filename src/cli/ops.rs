//! `courant queues` and `courant stats`: the shared queue and its workers, and the tenant's
//! delivery statistics over a window (`GET /v1/admin/queues`, `GET /v1/admin/stats`).

use clap::Args;
use serde_json::Value;

use super::{Client, Failure, list_table, table, text};

/// `courant queues`: the queue's counts, then one row per worker in the registry.
pub async fn queues(client: &Client) -> Result<(), Failure> {
    let value = client.get("/v1/admin/queues").await?;
    client.emit(&value, |v| {
        let counts = [
            ("ready", "due, waiting for a worker"),
            ("due", "timers whose time has come, not yet in ready"),
            ("scheduled", "timers still to come"),
            ("in_flight", "fetched, not settled"),
            ("parked", "failed too often: for an operator"),
            ("overdue", "past their deadline: the reaper re-drives them"),
            ("dead_lettered", "in the dead-letter queue (every tenant)"),
            ("lag_ms", "how long the oldest ready or due wake-up has waited"),
            ("workers_alive", "seen within three heartbeats"),
        ];
        let rows: Vec<Vec<String>> = counts
            .into_iter()
            .map(|(name, what)| vec![name.to_owned(), text(&v[name]), what.to_owned()])
            .collect();
        let workers = list_table(
            v,
            "workers",
            &["WORKER", "HOST", "PID", "SLOTS", "ALIVE", "LAST SEEN", "STARTED"],
            &["/id", "/host", "/pid", "/slots", "/alive", "/last_seen", "/started_at"],
        );
        format!("{}\n{workers}", table(&["QUEUE", "COUNT", "WHAT"], &rows))
    })
}

/// What `courant stats` reads.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// How far back: 15m, 1h, 24h, 7d (any duration from 1m to 7d).
    #[arg(long, default_value = "1h")]
    pub window: String,
    /// Only this channel (email, sms, push, in_app, chat).
    #[arg(long)]
    pub channel: Option<String>,
    /// Only this provider (rows counted before a provider is chosen, and latencies, drop out).
    #[arg(long)]
    pub provider: Option<String>,
}

/// `reason=n, reason=n` of a by-reason object, or `-`.
fn reasons(value: &Value) -> String {
    let pairs: Vec<String> = value
        .as_object()
        .map(|map| map.iter().map(|(reason, n)| format!("{reason}={n}")).collect())
        .unwrap_or_default();
    if pairs.is_empty() { "-".into() } else { pairs.join(", ") }
}

/// `courant stats`: a table per channel and provider, then the latencies per channel.
pub async fn stats(client: &Client, args: &StatsArgs) -> Result<(), Failure> {
    let mut query = vec![("window", args.window.clone())];
    if let Some(channel) = &args.channel {
        query.push(("channel", channel.clone()));
    }
    if let Some(provider) = &args.provider {
        query.push(("provider", provider.clone()));
    }
    let value = client.get_query("/v1/admin/stats", &query).await?;
    client.emit(&value, |v| {
        let rows: Vec<Vec<String>> = v["rows"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        let mut cells: Vec<String> = [
                            "/channel",
                            "/provider",
                            "/accepted",
                            "/sent",
                            "/delivered",
                            "/failed",
                            "/unknown",
                            "/dead_lettered",
                        ]
                        .iter()
                        .map(|p| text(r.pointer(p).unwrap_or(&Value::Null)))
                        .collect();
                        cells.push(reasons(&r["skipped"]));
                        cells.push(reasons(&r["deferred"]));
                        cells
                    })
                    .collect()
            })
            .unwrap_or_default();
        let counts = table(
            &[
                "CHANNEL",
                "PROVIDER",
                "ACCEPTED",
                "SENT",
                "DELIVERED",
                "FAILED",
                "UNKNOWN",
                "DEAD",
                "SKIPPED",
                "DEFERRED",
            ],
            &rows,
        );
        let latency = list_table(
            v,
            "latency",
            &["CHANNEL", "LATENCY", "COUNT", "P50 MS", "P90 MS", "P99 MS", "MAX MS"],
            &["/channel", "/kind", "/count", "/p50_ms", "/p90_ms", "/p99_ms", "/max_ms"],
        );
        let error = v["latency_relative_error"].as_f64().unwrap_or(0.2) * 100.0;
        format!(
            "{} to {} ({})\n\n{counts}\n{latency}\nLatencies are histogram bucket upper bounds: \
             at most {error:.0} % above the true value.\n",
            text(&v["from"]),
            text(&v["to"]),
            text(&v["window"]),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reasons_read_as_pairs() {
        assert_eq!(
            reasons(&json!({ "opted_out": 2, "quiet_hours": 1 })),
            "opted_out=2, quiet_hours=1"
        );
        assert_eq!(reasons(&json!({})), "-");
        assert_eq!(reasons(&Value::Null), "-");
    }
}
