//! `courant dlq list|plan|replay|purge`: the dead-letter queue. Replay and purge show what they
//! would touch and ask first (at a terminal); `--yes` skips the question.

use std::io::{IsTerminal, Write};

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{Client, Failure, list_table, table, text};

/// Which dead letters a DLQ command is about. Every filter given must hold.
#[derive(Debug, Args, Clone, Default)]
pub struct DlqFilterArgs {
    /// Only reasons containing this text (case-insensitive).
    #[arg(long)]
    pub reason: Option<String>,
    /// Only notifications dead-lettered on this channel (sms, email, push, in_app, chat).
    #[arg(long)]
    pub channel: Option<String>,
    /// Only notifications last with this provider.
    #[arg(long)]
    pub provider: Option<String>,
    /// Only notifications dead-lettered at least this long ago: 30s, 15m, 2h, 7d, or ms.
    #[arg(long)]
    pub older_than: Option<String>,
    /// Only notifications dead-lettered at most this long ago: 30s, 15m, 2h, 7d, or ms.
    #[arg(long)]
    pub newer_than: Option<String>,
    /// At most this many (list: 50 unless given; plan, replay and purge: up to 10000).
    #[arg(long)]
    pub limit: Option<usize>,
}

/// The filter flags, for `conflicts_with_all` on a notification id.
const FILTER_FLAGS: [&str; 6] =
    ["reason", "channel", "provider", "older_than", "newer_than", "limit"];

impl DlqFilterArgs {
    /// The filter as query-string pairs (for `GET /v1/dlq`).
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        let mut add = |name, value: Option<String>| {
            if let Some(value) = value {
                pairs.push((name, value));
            }
        };
        add("reason", self.reason.clone());
        add("channel", self.channel.clone());
        add("provider", self.provider.clone());
        add("older_than", self.older_than.clone());
        add("newer_than", self.newer_than.clone());
        add("limit", self.limit.map(|l| l.to_string()));
        pairs
    }

    /// The target of a plan, replay or purge: `{"id"}` or `{"filter"}`.
    fn target(&self, id: Option<&str>) -> Value {
        if let Some(id) = id {
            return json!({ "id": id });
        }
        let filter: serde_json::Map<String, Value> =
            self.query().into_iter().map(|(k, v)| (k.to_owned(), json!(v))).collect();
        let mut filter = Value::Object(filter);
        if let Some(limit) = self.limit {
            filter["limit"] = json!(limit);
        }
        json!({ "filter": filter })
    }
}

/// Dead-letter queue commands. Replay and purge show what they would touch and ask first;
/// `--yes` skips the question, and without a terminal they are dry runs unless `--yes`.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead-lettered notifications, newest first.
    List {
        #[command(flatten)]
        filter: DlqFilterArgs,
    },
    /// Count what a replay with these filters would touch: by channel, provider and reason,
    /// and how many it would skip because they may have been delivered.
    Plan {
        #[command(flatten)]
        filter: DlqFilterArgs,
        /// Count notifications whose outcome was unknown as replayed (see replay).
        #[arg(long)]
        include_unknown: bool,
    },
    /// Re-drive dead letters through the normal lifecycle (on their original channel, attempts
    /// from 1), spread at a bounded rate. Shows what it would replay and asks, unless --yes.
    Replay {
        /// One notification instead of a filter.
        #[arg(conflicts_with_all = FILTER_FLAGS)]
        id: Option<String>,
        #[command(flatten)]
        filter: DlqFilterArgs,
        /// Replay without asking (without it: show what would happen, then ask at a terminal).
        #[arg(long)]
        yes: bool,
        /// Replays per second (1 to 1000).
        #[arg(long, default_value_t = 10)]
        rate: u32,
        /// Also replay notifications that may have been delivered (an attempt's outcome was
        /// unknown); their sends are flagged as possible duplicates.
        #[arg(long)]
        include_unknown: bool,
    },
    /// Delete dead letters: record, history, indexes and idempotency key. Shows what it would
    /// delete and asks, unless --yes.
    Purge {
        /// One notification instead of a filter.
        #[arg(conflicts_with_all = FILTER_FLAGS)]
        id: Option<String>,
        #[command(flatten)]
        filter: DlqFilterArgs,
        /// Delete without asking (without it: show what would be deleted, then ask at a
        /// terminal).
        #[arg(long)]
        yes: bool,
    },
}

/// `courant dlq ...`
pub async fn run(client: &Client, command: &DlqCommand) -> Result<(), Failure> {
    match command {
        DlqCommand::List { filter } => {
            let value = client.get_query("/v1/dlq", &filter.query()).await?;
            client.emit(&value, |v| {
                list_table(
                    v,
                    "notifications",
                    &["ID", "CHANNEL", "PROVIDER", "ATTEMPTS", "REASON", "DEAD-LETTERED"],
                    &["/id", "/channel", "/provider", "/attempt", "/reason", "/dead_lettered_at"],
                )
            })?;
            truncation_note(&value, "dead letters");
            Ok(())
        }
        DlqCommand::Plan { filter, include_unknown } => {
            let mut body = filter.target(None);
            body["include_unknown"] = json!(include_unknown);
            let value = client.post("/v1/dlq/plan", &body, None).await?;
            client.emit(&value, plan_table)?;
            truncation_note(&value, "dead letters");
            Ok(())
        }
        DlqCommand::Replay { id, filter, yes, rate, include_unknown } => {
            let mut body = filter.target(id.as_deref());
            body["rate_per_sec"] = json!(rate);
            body["include_unknown"] = json!(include_unknown);
            act(client, Action::Replay, body, *yes).await
        }
        DlqCommand::Purge { id, filter, yes } => {
            act(client, Action::Purge, filter.target(id.as_deref()), *yes).await
        }
    }
}

/// A bulk or destructive DLQ action.
#[derive(Debug, Clone, Copy)]
enum Action {
    Replay,
    Purge,
}

impl Action {
    fn path(self) -> &'static str {
        match self {
            Action::Replay => "/v1/dlq/replay",
            Action::Purge => "/v1/dlq/purge",
        }
    }

    /// The outcome a dry run gives the items it would act on.
    fn would(self) -> &'static str {
        match self {
            Action::Replay => "would_replay",
            Action::Purge => "would_purge",
        }
    }

    /// The question asked before acting on `n` dead letters.
    fn question(self, n: usize, body: &Value) -> String {
        match self {
            Action::Replay => {
                format!("Replay {} at {}/s? [y/N] ", these(n), text(&body["rate_per_sec"]))
            }
            Action::Purge => format!("Delete {} for good? [y/N] ", these(n)),
        }
    }

    /// The answer for people.
    fn table(self, v: &Value) -> String {
        let dry = v["dry_run"] == json!(true);
        match self {
            Action::Replay => {
                let mut out = list_table(
                    v,
                    "items",
                    &["ID", "OUTCOME", "STARTS", "FLAGGED", "SKIPPED BECAUSE", "STATE"],
                    &["/id", "/outcome", "/at", "/possible_duplicate", "/skip_reason", "/state"],
                );
                out.push_str(&format!(
                    "{} {}, skipped {} ({} may have been delivered) at {}/s\n",
                    if dry { "would replay" } else { "replayed" },
                    text(&v["replay"]),
                    text(&v["skipped"]),
                    text(&v["maybe_delivered"]),
                    text(&v["rate_per_sec"]),
                ));
                out
            }
            Action::Purge => {
                let mut out = list_table(
                    v,
                    "items",
                    &["ID", "OUTCOME", "SKIPPED BECAUSE", "STATE"],
                    &["/id", "/outcome", "/skip_reason", "/state"],
                );
                out.push_str(&format!(
                    "{} {}, skipped {}\n",
                    if dry { "would purge" } else { "purged" },
                    text(&v["purge"]),
                    text(&v["skipped"])
                ));
                out
            }
        }
    }

    /// Shows an answer: the data on stdout, the notes on stderr.
    fn show(self, client: &Client, value: &Value) -> Result<(), Failure> {
        client.emit(value, |v| self.table(v))?;
        if matches!(self, Action::Replay) && value["maybe_delivered"].as_u64().unwrap_or(0) > 0 {
            eprintln!(
                "note: notifications whose outcome was unknown may have been delivered and were \
                 skipped; --include-unknown replays them, flagged as possible duplicates"
            );
        }
        truncation_note(value, "dead letters");
        Ok(())
    }
}

/// Replays or purges. With `--yes`, at once. Without it, a dry run shows what would be touched;
/// then, when a person is at a terminal, the CLI asks, and on "yes" acts on exactly the ids it
/// showed (not on whatever matches the filter a moment later). Without a terminal (or with
/// `--json`), the dry run is all that happens.
async fn act(client: &Client, action: Action, mut body: Value, yes: bool) -> Result<(), Failure> {
    body["yes"] = json!(yes);
    let value = client.post(action.path(), &body, None).await?;
    action.show(client, &value)?;
    if yes {
        return Ok(());
    }
    let ids: Vec<Value> = value["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|item| item["outcome"] == action.would())
        .map(|item| item["id"].clone())
        .collect();
    let interactive =
        !client.json && std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    if ids.is_empty() || !interactive {
        dry_run_note(&value);
        return Ok(());
    }
    if !confirm(&action.question(ids.len(), &body))? {
        eprintln!("nothing changed");
        return Ok(());
    }
    if let Some(fields) = body.as_object_mut() {
        fields.remove("id");
        fields.remove("filter");
    }
    body["ids"] = Value::Array(ids);
    body["yes"] = json!(true);
    let done = client.post(action.path(), &body, None).await?;
    action.show(client, &done)
}

/// "this dead letter" or "these N dead letters".
fn these(n: usize) -> String {
    if n == 1 { "this dead letter".to_owned() } else { format!("these {n} dead letters") }
}

/// Asks a yes/no question on stderr and reads the answer from stdin: only "y" or "yes" is yes.
fn confirm(question: &str) -> Result<bool, Failure> {
    let mut stderr = std::io::stderr();
    stderr
        .write_all(question.as_bytes())
        .and_then(|()| stderr.flush())
        .map_err(|e| Failure::new(1, format!("cannot ask: {e}")))?;
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| Failure::new(1, format!("cannot read the answer: {e}")))?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

/// A DLQ plan for people: the totals, then the replays by channel, provider and reason.
fn plan_table(v: &Value) -> String {
    let mut out = table(
        &["MATCHED", "REPLAY", "SKIP (MAYBE DELIVERED)"],
        &[vec![text(&v["matched"]), text(&v["replay"]), text(&v["maybe_delivered"])]],
    );
    for (title, key) in
        [("CHANNEL", "by_channel"), ("PROVIDER", "by_provider"), ("REASON", "by_reason")]
    {
        let rows: Vec<Vec<String>> = v[key]
            .as_object()
            .map(|groups| groups.iter().map(|(k, n)| vec![k.clone(), text(n)]).collect())
            .unwrap_or_default();
        if !rows.is_empty() {
            out.push('\n');
            out.push_str(&table(&[title, "REPLAY"], &rows));
        }
    }
    out
}

/// Tells on stderr when a DLQ command stopped before the end of the queue.
fn truncation_note(value: &Value, what: &str) {
    match value["truncated"].as_str() {
        Some("limit") => eprintln!(
            "note: stopped at the limit; more {what} may match (raise --limit or narrow the \
             filters)"
        ),
        Some("scan") => eprintln!(
            "note: stopped after examining {} {what}, the most one request looks at; older ones \
             were not looked at (narrow the filters, e.g. --older-than, --channel)",
            text(&value["scanned"])
        ),
        _ => {}
    }
}

/// Tells on stderr, clearly, that a dry run changed nothing.
fn dry_run_note(value: &Value) {
    if value["dry_run"] == json!(true) {
        eprintln!("dry run: nothing changed; re-run with --yes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dlq_targets_are_an_id_or_a_filter() {
        let filter = DlqFilterArgs {
            reason: Some("all 3 attempts".into()),
            channel: Some("sms".into()),
            older_than: Some("2h".into()),
            limit: Some(20),
            ..DlqFilterArgs::default()
        };
        assert_eq!(
            filter.target(None),
            json!({ "filter": {
                "reason": "all 3 attempts", "channel": "sms", "older_than": "2h", "limit": 20
            }})
        );
        assert_eq!(filter.target(Some("n01abc")), json!({ "id": "n01abc" }));
        assert_eq!(DlqFilterArgs::default().target(None), json!({ "filter": {} }));
    }

    #[test]
    fn plan_tables_show_totals_and_groups() {
        let plan = json!({
            "matched": 3, "replay": 2, "maybe_delivered": 1,
            "by_channel": { "sms": 2 }, "by_provider": { "twilio": 2 }, "by_reason": {}
        });
        let t = plan_table(&plan);
        assert!(
            t.starts_with("MATCHED  REPLAY  SKIP (MAYBE DELIVERED)\n3        2       1\n"),
            "{t}"
        );
        assert!(t.contains("CHANNEL  REPLAY\nsms      2\n"), "{t}");
        assert!(t.contains("PROVIDER  REPLAY\ntwilio    2\n"), "{t}");
        assert!(!t.contains("REASON"), "empty groups are left out: {t}");
    }
}
