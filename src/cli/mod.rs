//! The ops CLI: commands that talk to a running server's API. Data goes to stdout (a table for
//! people, JSON with `--json`); everything else goes to stderr.
//!
//! Exit codes: 0 success, 1 the server refused or failed, 2 usage error (clap), 3 not found,
//! 4 the server could not be reached.

use std::io::Write;

use clap::Args;
use serde_json::{Value, json};

mod dlq;
mod list;
mod ops;
mod tail;

pub use dlq::{DlqCommand, DlqFilterArgs, run as dlq};
pub use list::{ListArgs, run as list};
pub use ops::{StatsArgs, queues, stats};
pub use tail::{TailArgs, run as tail};

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

/// A CLI failure, with its exit code.
#[derive(Debug)]
pub struct Failure {
    /// The process exit code.
    pub code: i32,
    /// What to tell the user.
    pub message: String,
}

impl Failure {
    pub(crate) fn new(code: i32, message: impl Into<String>) -> Self {
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

    fn key(&self) -> Result<&str, Failure> {
        self.api_key.as_deref().ok_or_else(|| {
            Failure::new(
                2,
                "no API key: pass --api-key or set COURANT_API_KEY (courant dev prints one)",
            )
        })
    }

    fn unreachable(&self, error: &reqwest::Error) -> Failure {
        Failure::new(4, format!("cannot reach the courant server at {}: {error}", self.server))
    }

    /// The failure an unsuccessful answer says: its status, the error's message and field.
    async fn refusal(response: reqwest::Response) -> Failure {
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let message = body["error"]["message"].as_str().unwrap_or("no details").to_owned();
        let field =
            body["error"]["field"].as_str().map(|f| format!(" (field {f})")).unwrap_or_default();
        let code = if status == reqwest::StatusCode::NOT_FOUND { 3 } else { 1 };
        Failure::new(code, format!("server answered {status}: {message}{field}"))
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> Result<Value, Failure> {
        let key = self.key()?;
        let response = request.bearer_auth(key).send().await.map_err(|e| self.unreachable(&e))?;
        if !response.status().is_success() {
            return Err(Self::refusal(response).await);
        }
        Ok(response.json().await.unwrap_or(Value::Null))
    }

    /// The URL of a path with query-string pairs (encoded here).
    fn url_with(&self, path: &str, query: &[(&str, String)]) -> Result<reqwest::Url, Failure> {
        let mut url = reqwest::Url::parse(&self.url(path))
            .map_err(|e| Failure::new(2, format!("--server {} is not a URL: {e}", self.server)))?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in query {
                pairs.append_pair(name, value);
            }
        }
        Ok(url)
    }

    /// GET a path.
    pub async fn get(&self, path: &str) -> Result<Value, Failure> {
        let http = self.http()?;
        self.call(http.get(self.url(path))).await
    }

    /// GET a path with query-string pairs (encoded here).
    pub async fn get_query(&self, path: &str, query: &[(&str, String)]) -> Result<Value, Failure> {
        let http = self.http()?;
        self.call(http.get(self.url_with(path, query)?)).await
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

    pub(crate) fn emit(
        &self,
        value: &Value,
        table: impl FnOnce(&Value) -> String,
    ) -> Result<(), Failure> {
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

pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `from → to` of a history entry or live event (`→ to` for the first).
pub(crate) fn transition(entry: &Value) -> String {
    match entry["from"].as_str() {
        Some(from) => format!("{from} → {}", text(&entry["to"])),
        None => format!("→ {}", text(&entry["to"])),
    }
}

/// A table of the objects in `value[list]`, one column per JSON pointer.
pub(crate) fn list_table(value: &Value, list: &str, header: &[&str], pointers: &[&str]) -> String {
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
                        vec![
                            text(&e["at"]),
                            transition(e),
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

/// `courant cancel ID`
pub async fn cancel(client: &Client, id: &str) -> Result<(), Failure> {
    let value = client.post(&format!("/v1/notifications/{id}/cancel"), &json!({}), None).await?;
    client.emit(&value, |v| format!("{} {}\n", text(&v["id"]), text(&v["state"])))
}

/// `courant retry ID`: try a dead-lettered or waiting notification again now.
pub async fn retry(client: &Client, id: &str) -> Result<(), Failure> {
    let value = client.post(&format!("/v1/notifications/{id}/retry"), &json!({}), None).await?;
    client.emit(&value, |v| {
        format!(
            "{} {} ({}, at {})\n",
            text(&v["id"]),
            text(&v["outcome"]),
            text(&v["state"]),
            text(&v["at"])
        )
    })
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
        let rows: Vec<Vec<String>> = v["breakers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| {
                let rate = match b["failure_rate"].as_f64() {
                    Some(rate) => format!("{:.0}% of {}", rate * 100.0, text(&b["recent_calls"])),
                    None => "-".to_owned(),
                };
                vec![
                    text(&b["provider"]),
                    text(&b["channel"]),
                    text(&b["state"]),
                    text(&b["since"]),
                    rate,
                    text(&b["consecutive_failures"]),
                    text(&b["opened"]),
                    text(&b["rejected"]),
                    text(&b["host"]),
                    text(&b["worker"]),
                ]
            })
            .collect();
        table(
            &[
                "PROVIDER",
                "CHANNEL",
                "STATE",
                "SINCE",
                "FAILURE RATE",
                "IN A ROW",
                "OPENED",
                "REJECTED",
                "HOST",
                "WORKER",
            ],
            &rows,
        )
    })
}

/// `courant keys create`: the key on stdout (shown once), or `{"tenant", "key"}` with `--json`.
pub fn key_created(client: &Client, tenant: &str, key: &str) -> Result<(), Failure> {
    client.emit(&json!({ "tenant": tenant, "key": key }), |v| format!("{}\n", text(&v["key"])))?;
    eprintln!(
        "API key for tenant '{tenant}' created; it is shown once. Export it as COURANT_API_KEY."
    );
    Ok(())
}

/// `courant config check FILE`: whether the file is a valid configuration, and what it sets up.
pub fn config_check(client: &Client, file: &std::path::Path) -> Result<(), Failure> {
    let config = crate::config::Config::load(file)
        .and_then(crate::config::Config::finish)
        .map_err(|e| Failure::new(1, format!("{e:#}")))?;
    let routes: serde_json::Map<String, Value> = config
        .policy
        .routes
        .iter()
        .map(|(channel, route)| {
            let names: Vec<&str> = route.iter().map(|p| p.as_str()).collect();
            (channel.to_string(), json!(names))
        })
        .collect();
    let value = json!({
        "file": file.display().to_string(),
        "valid": true,
        "providers": config.providers.len(),
        "routes": routes,
        "traces": config.telemetry.otlp_endpoint,
    });
    client.emit(&value, |v| {
        let routes: Vec<String> = v["routes"]
            .as_object()
            .map(|routes| {
                routes
                    .iter()
                    .map(|(channel, names)| {
                        let names: Vec<String> = names
                            .as_array()
                            .map(|n| n.iter().map(text).collect())
                            .unwrap_or_default();
                        format!("{channel} → {}", names.join(", "))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let traces = match v["traces"].as_str() {
            Some(endpoint) => format!("exported to {endpoint}"),
            None => "not exported (unless OTEL_EXPORTER_OTLP_* is set)".to_owned(),
        };
        format!(
            "{} is valid: {} provider(s); routes: {}; traces: {traces}\n",
            text(&v["file"]),
            text(&v["providers"]),
            if routes.is_empty() { "none".to_owned() } else { routes.join("; ") }
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
    fn tables_align() {
        let t = table(&["A", "LONGER"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    LONGER\nxyz  1\n");
    }
}
