//! `courant list`: search notifications by state, channel, provider, category, recipient and
//! last-update time, newest first, a page at a time (`--cursor`) or every page (`--all`).

use clap::Args;
use serde_json::{Value, json};

use super::{Client, Failure, list_table};

/// The most pages `--all` follows: with the largest page size, 100,000 notifications; a search
/// that needs more is narrowed with filters or continued with `--cursor`.
pub const ALL_PAGES_MAX: usize = 100;

/// What `courant list` searches for. Every filter given must hold.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this state (received, deferred, sending, sent, delivered, dead_lettered, ...).
    #[arg(long)]
    pub state: Option<String>,
    /// Only this channel (email, sms, push, in_app, chat).
    #[arg(long)]
    pub channel: Option<String>,
    /// Only notifications whose current or last provider is this one.
    #[arg(long)]
    pub provider: Option<String>,
    /// Only this category.
    #[arg(long)]
    pub category: Option<String>,
    /// Only this recipient (your application's id for them).
    #[arg(long)]
    pub recipient: Option<String>,
    /// Only notifications last updated at or after this time: RFC 3339 (2026-05-01T12:00:00Z)
    /// or an age (30m, 2h, 7d: that long ago).
    #[arg(long)]
    pub since: Option<String>,
    /// Only notifications last updated at or before this time (as --since).
    #[arg(long)]
    pub until: Option<String>,
    /// At most this many per page (1 to 1000).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Continue after an earlier page (the cursor it printed).
    #[arg(long)]
    pub cursor: Option<String>,
    /// Follow every next page to the end (at most 100 pages).
    #[arg(long)]
    pub all: bool,
}

impl ListArgs {
    fn query(&self, cursor: Option<&str>) -> Vec<(&'static str, String)> {
        let filters = [
            ("state", &self.state),
            ("channel", &self.channel),
            ("provider", &self.provider),
            ("category", &self.category),
            ("recipient", &self.recipient),
            ("since", &self.since),
            ("until", &self.until),
        ];
        let mut query: Vec<(&str, String)> =
            filters.into_iter().filter_map(|(name, v)| Some((name, v.clone()?))).collect();
        query.push(("limit", self.limit.to_string()));
        if let Some(cursor) = cursor {
            query.push(("cursor", cursor.to_owned()));
        }
        query
    }
}

fn notifications_table(value: &Value) -> String {
    list_table(
        value,
        "notifications",
        &["ID", "STATE", "CHANNEL", "PROVIDER", "ATTEMPT", "CATEGORY", "UPDATED"],
        &["/id", "/state", "/channel", "/provider", "/attempt", "/category", "/updated_at"],
    )
}

/// `courant list ...`: one page (the API's body), or with `--all` every page in one body whose
/// `next_cursor` is set only when [`ALL_PAGES_MAX`] pages did not reach the end.
pub async fn run(client: &Client, args: &ListArgs) -> Result<(), Failure> {
    let mut value =
        client.get_query("/v1/notifications", &args.query(args.cursor.as_deref())).await?;
    if args.all {
        let mut pages = 1;
        while let Some(cursor) = value["next_cursor"].as_str().map(str::to_owned) {
            if pages >= ALL_PAGES_MAX {
                eprintln!("stopped after {ALL_PAGES_MAX} pages");
                break;
            }
            let page = client.get_query("/v1/notifications", &args.query(Some(&cursor))).await?;
            pages += 1;
            value = merge(value, page);
        }
    }
    if let Some(cursor) = value["next_cursor"].as_str() {
        eprintln!("more: --cursor {cursor}");
    }
    client.emit(&value, notifications_table)
}

/// `next` appended to `sum`: the notifications of both, the scans added up, the rest `next`'s.
fn merge(sum: Value, next: Value) -> Value {
    let mut notifications = sum["notifications"].as_array().cloned().unwrap_or_default();
    notifications.extend(next["notifications"].as_array().cloned().unwrap_or_default());
    let scanned = sum["scanned"].as_u64().unwrap_or(0) + next["scanned"].as_u64().unwrap_or(0);
    json!({
        "notifications": notifications,
        "next_cursor": next["next_cursor"],
        "scanned": scanned,
        "truncated": next["truncated"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_merge_in_order_and_keep_the_last_cursor() {
        let one = json!({ "notifications": [{"id": "a"}], "next_cursor": "c1~1~a", "scanned": 3,
            "truncated": "limit" });
        let two = json!({ "notifications": [{"id": "b"}], "next_cursor": null, "scanned": 2,
            "truncated": null });
        let sum = merge(one, two);
        assert_eq!(sum["notifications"], json!([{"id": "a"}, {"id": "b"}]));
        assert_eq!((sum["next_cursor"].clone(), sum["scanned"].clone()), (json!(null), json!(5)));
    }
}
