//! The ops CLI: commands that talk to a running server's API. Data goes to stdout (a table for
//! people, JSON with `--json`); everything else goes to stderr.
//!
//! Exit codes: 0 success, 1 the server refused or failed, 2 usage error (clap), 3 not found,
//! 4 the server could not be reached.

use std::io::Write;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// Where the server is and how to talk to it.
#[derive(Debug, Args, Clone)]
pub struct Client {
    /// The courant server's base URL.
    #[arg(long, env = "COURANT_SERVER", default_value = "http://127.0.0.1:8080", global = true)]
    pub server: String,
    /// The API key (printed by `courant dev` or `courant keys create`).
    #[arg(long, env = "COURANT_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

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

/// Dead-letter queue commands. Replay and purge are dry runs unless `--yes`.
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
    /// from 1), spread at a bounded rate. A dry run unless --yes.
    Replay {
        /// One notification instead of a filter.
        #[arg(conflicts_with_all = FILTER_FLAGS)]
        id: Option<String>,
        #[command(flatten)]
        filter: DlqFilterArgs,
        /// Really replay (without it, only show what would happen).
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
    /// Delete dead letters: record, history, indexes and idempotency key. A dry run unless
    /// --yes.
    Purge {
        /// One notification instead of a filter.
        #[arg(conflicts_with_all = FILTER_FLAGS)]
        id: Option<String>,
        #[command(flatten)]
        filter: DlqFilterArgs,
        /// Really delete (without it, only show what would be deleted).
        #[arg(long)]
        yes: bool,
    },
}

/// A CLI failure, with its exit code.
#[derive(Debug)]
pub struct Failure {
    /// The process exit code.
    pub code: i32,
    /// What to tell the user.
    pub message: String,
}

impl Failure {
    fn new(code: i32, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl Client {
    fn http(&self) -> Result<reqwest::Client, Failure> {
        reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(|e| Failure::new(1, format!("cannot build an HTTP client: {e}")))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.trim_end_matches('/'))
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> Result<Value, Failure> {
        let key = self.api_key.as_deref().ok_or_else(|| {
            Failure::new(
                2,
                "no API key: pass --api-key or set COURANT_API_KEY (courant dev prints one)",
            )
        })?;
        let response = request.bearer_auth(key).send().await.map_err(|e| {
            Failure::new(4, format!("cannot reach the courant server at {}: {e}", self.server))
        })?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let message = body["error"]["message"].as_str().unwrap_or("no details").to_owned();
        let field =
            body["error"]["field"].as_str().map(|f| format!(" (field {f})")).unwrap_or_default();
        let code = if status == reqwest::StatusCode::NOT_FOUND { 3 } else { 1 };
        Err(Failure::new(code, format!("server answered {status}: {message}{field}")))
    }

    /// GET a path.
    pub async fn get(&self, path: &str) -> Result<Value, Failure> {
        let http = self.http()?;
        self.call(http.get(self.url(path))).await
    }

    /// GET a path with query-string pairs (encoded here).
    pub async fn get_query(&self, path: &str, query: &[(&str, String)]) -> Result<Value, Failure> {
        let http = self.http()?;
        let mut url = reqwest::Url::parse(&self.url(path))
            .map_err(|e| Failure::new(2, format!("--server {} is not a URL: {e}", self.server)))?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in query {
                pairs.append_pair(name, value);
            }
        }
        self.call(http.get(url)).await
    }

    /// POST JSON to a path.
    pub async fn post(
        &self,
        path: &str,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<Value, Failure> {
        let http = self.http()?;
        let mut request = http.post(self.url(path)).json(body);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        self.call(request).await
    }

    fn emit(&self, value: &Value, table: impl FnOnce(&Value) -> String) -> Result<(), Failure> {
        let text = if self.json {
            serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
        } else {
            table(value)
        };
        std::io::stdout()
            .write_all(text.as_bytes())
            .map_err(|e| Failure::new(1, format!("cannot write to stdout: {e}")))
    }
}

/// Renders rows as an aligned table with a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A table of the objects in `value[list]`, one column per JSON pointer.
fn list_table(value: &Value, list: &str, header: &[&str], pointers: &[&str]) -> String {
    let rows: Vec<Vec<String>> = value[list]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| {
                    pointers.iter().map(|p| text(item.pointer(p).unwrap_or(&Value::Null))).collect()
                })
                .collect()
        })
        .unwrap_or_default();
    table(header, &rows)
}

fn notifications_table(value: &Value) -> String {
    list_table(
        value,
        "notifications",
        &["ID", "STATE", "CHANNEL", "PROVIDER", "ATTEMPT", "CATEGORY", "UPDATED"],
        &["/id", "/state", "/channel", "/provider", "/attempt", "/category", "/updated_at"],
    )
}

/// `courant status ID`
pub async fn status(client: &Client, id: &str) -> Result<(), Failure> {
    let value = client.get(&format!("/v1/notifications/{id}")).await?;
    client.emit(&value, |n| {
        let fields = [
            ("id", text(&n["id"])),
            ("state", text(&n["state"])),
            ("channel", text(&n["channel"])),
            ("provider", text(&n["provider"])),
            ("attempt", text(&n["attempt"])),
            ("category", text(&n["category"])),
            (
                "template",
                format!("{} @ {}", text(&n["template"]["id"]), text(&n["template"]["version"])),
            ),
            ("recipient", text(&n["recipient"]["id"])),
            ("created", text(&n["created_at"])),
            ("updated", text(&n["updated_at"])),
            ("next wake-up", text(&n["wake_at"])),
            ("replays", n["replay"]["count"].as_u64().unwrap_or(0).to_string()),
            ("transitions", n["history"].as_array().map_or(0, Vec::len).to_string()),
        ];
        let rows: Vec<Vec<String>> =
            fields.into_iter().map(|(k, v)| vec![k.to_owned(), v]).collect();
        table(&["FIELD", "VALUE"], &rows)
    })
}

/// `courant history ID`
pub async fn history(client: &Client, id: &str) -> Result<(), Failure> {
    let value = client.get(&format!("/v1/notifications/{id}")).await?;
    let history = json!({ "id": value["id"], "history": value["history"] });
    client.emit(&history, |h| {
        let rows: Vec<Vec<String>> = h["history"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| {
                        let transition = match e["from"].as_str() {
                            Some(from) => format!("{from} → {}", text(&e["to"])),
                            None => format!("→ {}", text(&e["to"])),
                        };
                        vec![
                            text(&e["at"]),
                            transition,
                            text(&e["cause"]),
                            text(&e["provider"]),
                            text(&e["attempt"]),
                            text(&e["note"]),
                        ]
                    })
                    .collect()
            })
            .unwrap_or_default();
        table(&["TIME", "TRANSITION", "CAUSE", "PROVIDER", "ATTEMPT", "NOTE"], &rows)
    })
}

/// `courant explain ID`: the answer, then the decisions behind it.
pub async fn explain(client: &Client, id: &str) -> Result<(), Failure> {
    let value = client.get(&format!("/v1/notifications/{id}/explain")).await?;
    client.emit(&value, |v| {
        let rows: Vec<Vec<String>> = v["findings"]
            .as_array()
            .map(|findings| {
                findings
                    .iter()
                    .map(|f| {
                        vec![
                            text(&f["at"]),
                            text(&f["kind"]),
                            text(&f["summary"]),
                            text(&f["data"]),
                        ]
                    })
                    .collect()
            })
            .unwrap_or_default();
        format!(
            "{} ({}): {}\n\n{}",
            text(&v["id"]),
            text(&v["state"]),
            text(&v["answer"]),
            table(&["TIME", "DECISION", "WHAT", "DATA"], &rows)
        )
    })
}

/// `courant list`
pub async fn list(client: &Client, state: Option<&str>, limit: usize) -> Result<(), Failure> {
    let mut path = format!("/v1/notifications?limit={limit}");
    if let Some(state) = state {
        path.push_str(&format!("&state={state}"));
    }
    let value = client.get(&path).await?;
    client.emit(&value, notifications_table)
}

/// `courant dlq ...`
pub async fn dlq(client: &Client, command: &DlqCommand) -> Result<(), Failure> {
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
            body["yes"] = json!(yes);
            body["rate_per_sec"] = json!(rate);
            body["include_unknown"] = json!(include_unknown);
            let value = client.post("/v1/dlq/replay", &body, None).await?;
            client.emit(&value, |v| {
                let mut out = list_table(
                    v,
                    "items",
                    &["ID", "OUTCOME", "STARTS", "FLAGGED", "SKIPPED BECAUSE", "STATE"],
                    &["/id", "/outcome", "/at", "/possible_duplicate", "/skip_reason", "/state"],
                );
                let verb = if v["dry_run"] == json!(true) { "would replay" } else { "replayed" };
                out.push_str(&format!(
                    "{verb} {}, skipped {} ({} may have been delivered) at {}/s\n",
                    text(&v["replay"]),
                    text(&v["skipped"]),
                    text(&v["maybe_delivered"]),
                    text(&v["rate_per_sec"]),
                ));
                out
            })?;
            if value["maybe_delivered"].as_u64().unwrap_or(0) > 0 {
                eprintln!(
                    "note: notifications whose outcome was unknown may have been delivered and \
                     were skipped; --include-unknown replays them, flagged as possible duplicates"
                );
            }
            truncation_note(&value, "dead letters");
            dry_run_note(&value);
            Ok(())
        }
        DlqCommand::Purge { id, filter, yes } => {
            let mut body = filter.target(id.as_deref());
            body["yes"] = json!(yes);
            let value = client.post("/v1/dlq/purge", &body, None).await?;
            client.emit(&value, |v| {
                let mut out = list_table(
                    v,
                    "items",
                    &["ID", "OUTCOME", "SKIPPED BECAUSE", "STATE"],
                    &["/id", "/outcome", "/skip_reason", "/state"],
                );
                let verb = if v["dry_run"] == json!(true) { "would purge" } else { "purged" };
                out.push_str(&format!(
                    "{verb} {}, skipped {}\n",
                    text(&v["purge"]),
                    text(&v["skipped"])
                ));
                out
            })?;
            truncation_note(&value, "dead letters");
            dry_run_note(&value);
            Ok(())
        }
    }
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

/// `courant cancel ID`
pub async fn cancel(client: &Client, id: &str) -> Result<(), Failure> {
    let value = client.post(&format!("/v1/notifications/{id}/cancel"), &json!({}), None).await?;
    client.emit(&value, |v| format!("{} {}\n", text(&v["id"]), text(&v["state"])))
}

/// What `courant send` submits.
#[derive(Debug, Args)]
pub struct Send {
    /// The recipient's id in your application.
    #[arg(long)]
    pub recipient: String,
    /// The recipient's email address.
    #[arg(long)]
    pub email: Option<String>,
    /// The recipient's phone number (E.164, e.g. +14155550123).
    #[arg(long)]
    pub phone: Option<String>,
    /// The channel: email, sms, push, in_app or chat.
    #[arg(long)]
    pub channel: String,
    /// The template id.
    #[arg(long)]
    pub template: String,
    /// Template variables as a JSON object.
    #[arg(long, default_value = "{}")]
    pub data: String,
    /// The category.
    #[arg(long, default_value = "transactional")]
    pub category: String,
    /// An idempotency key: sending twice with it creates one notification.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// The recipient's locale (`fr-CA`); the template falls back to `fr`, then its default.
    #[arg(long)]
    pub locale: Option<String>,
    /// The event it reports: the same event for the same recipient and channel within the dedup
    /// window makes one notification (the answer names the first).
    #[arg(long)]
    pub event_id: Option<String>,
    /// The group it may be merged into with others, where its category has a collapse window.
    #[arg(long)]
    pub collapse_key: Option<String>,
}

/// `courant send ...`
pub async fn send(client: &Client, send: &Send) -> Result<(), Failure> {
    let data: Value = serde_json::from_str(&send.data)
        .map_err(|e| Failure::new(2, format!("--data is not valid JSON: {e}")))?;
    let mut recipient = json!({ "id": send.recipient });
    if let Some(email) = &send.email {
        recipient["email"] = json!(email);
    }
    if let Some(phone) = &send.phone {
        recipient["phone"] = json!(phone);
    }
    let mut body = json!({
        "recipient": recipient,
        "channel": send.channel,
        "template": send.template,
        "data": data,
        "category": send.category,
    });
    if let Some(locale) = &send.locale {
        body["locale"] = json!(locale);
    }
    if let Some(event_id) = &send.event_id {
        body["event_id"] = json!(event_id);
    }
    if let Some(collapse_key) = &send.collapse_key {
        body["collapse_key"] = json!(collapse_key);
    }
    let value = client.post("/v1/notifications", &body, send.idempotency_key.as_deref()).await?;
    if value["deduplicated"] == json!(true) {
        eprintln!("deduplicated: the event already made this notification");
    }
    client.emit(&value, |v| format!("{}\n", text(&v["id"])))
}

/// `courant breakers`
pub async fn breakers(client: &Client) -> Result<(), Failure> {
    let value = client.get("/v1/admin/breakers").await?;
    client.emit(&value, |v| {
        list_table(
            v,
            "breakers",
            &["PROVIDER", "CHANNEL", "STATE", "SINCE", "OPENED", "REJECTED"],
            &["/provider", "/channel", "/state", "/since", "/opened", "/rejected"],
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_tables_pick_nested_fields_and_show_missing_ones_as_dashes() {
        let value = json!({ "items": [{ "a": "x", "b": { "c": 1 } }, { "a": "yy" }] });
        let t = list_table(&value, "items", &["A", "C"], &["/a", "/b/c"]);
        assert_eq!(t, "A   C\nx   1\nyy  -\n");
    }

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

    #[test]
    fn tables_align() {
        let t = table(&["A", "LONGER"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    LONGER\nxyz  1\n");
    }
}
