//! `courant tail`: follows `GET /v1/events`, one line per transition (a line of JSON each with
//! `--json`), until Ctrl-C or `--count` transitions. A dropped connection is reopened after a
//! short pause, said on stderr; transitions committed while it was down are not shown (the
//! history has them).

use std::io::Write;
use std::time::Duration;

use clap::Args;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::Value;

use super::{Client, Failure, text, transition};

/// `courant tail`'s filters and stop condition.
#[derive(Debug, Args, Clone)]
pub struct TailArgs {
    /// Only this notification's transitions.
    #[arg(long)]
    pub id: Option<String>,
    /// Only this channel's (email, sms, push, chat, in_app).
    #[arg(long)]
    pub channel: Option<String>,
    /// Only transitions to this state (sent, delivered, failed, dead_lettered, ...).
    #[arg(long)]
    pub state: Option<String>,
    /// Only transitions about this provider.
    #[arg(long)]
    pub provider: Option<String>,
    /// Only this category's.
    #[arg(long)]
    pub category: Option<String>,
    /// Stop after this many transitions.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
}

impl TailArgs {
    fn query(&self) -> Vec<(&'static str, String)> {
        let fields = [
            ("id", &self.id),
            ("channel", &self.channel),
            ("state", &self.state),
            ("provider", &self.provider),
            ("category", &self.category),
        ];
        fields.into_iter().filter_map(|(name, value)| Some((name, value.clone()?))).collect()
    }
}

/// The pause before the first reconnect; it doubles up to [`RECONNECT_DELAY_MAX`], and starts
/// again once a connection has been answered.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);
/// The longest pause between reconnects.
const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(10);
/// A connection with nothing on it for this long is taken as dropped: the server sends a comment
/// every 15 s.
const IDLE_MAX: Duration = Duration::from_secs(45);

/// Why a connection ended.
enum Ended {
    /// `--count` transitions were shown.
    Done,
    /// The connection dropped, or was refused for now (503): reconnect.
    Dropped(String),
}

/// `courant tail`.
pub async fn run(client: &Client, args: &TailArgs) -> Result<(), Failure> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(IDLE_MAX)
        .build()
        .map_err(|e| Failure::new(1, format!("cannot build an HTTP client: {e}")))?;
    let url = client.url_with("/v1/events", &args.query())?;
    let key = client.key()?;
    let mut shown = 0;
    let mut delay = RECONNECT_DELAY;
    let mut connected_once = false;
    loop {
        let response = match http.get(url.clone()).bearer_auth(key).send().await {
            Ok(response) => response,
            // Never connected: the server is not there (exit 4), not a connection that dropped.
            Err(error) if !connected_once => return Err(client.unreachable(&error)),
            Err(error) => {
                delay = reconnect(&format!("cannot reconnect: {error}"), delay).await;
                continue;
            }
        };
        let status = response.status();
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            let why = Client::refusal(response).await.message;
            delay = reconnect(&why, delay).await;
            continue;
        }
        if !status.is_success() {
            // A bad filter or key: reconnecting would not help.
            return Err(Client::refusal(response).await);
        }
        if connected_once {
            eprintln!("courant tail: reconnected.");
        } else {
            eprintln!("courant tail: following transitions at {}.", client.server);
        }
        connected_once = true;
        delay = RECONNECT_DELAY;
        match follow(client, response, args.count, &mut shown).await? {
            Ended::Done => return Ok(()),
            Ended::Dropped(why) => delay = reconnect(&why, delay).await,
        }
    }
}

/// Says why on stderr, waits `delay`, and returns the next delay.
async fn reconnect(why: &str, delay: Duration) -> Duration {
    eprintln!("courant tail: {why}; reconnecting in {:.1} s.", delay.as_secs_f64());
    tokio::time::sleep(delay).await;
    (delay * 2).min(RECONNECT_DELAY_MAX)
}

/// Shows one connection's transitions until it ends or `count` are shown in all.
async fn follow(
    client: &Client,
    response: reqwest::Response,
    count: Option<u64>,
    shown: &mut u64,
) -> Result<Ended, Failure> {
    let mut events = response.bytes_stream().eventsource();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(error) => return Ok(Ended::Dropped(format!("connection lost: {error}"))),
        };
        match event.event.as_str() {
            "transition" => {
                let Ok(value) = serde_json::from_str::<Value>(&event.data) else {
                    eprintln!("courant tail: skipped an event that is not JSON.");
                    continue;
                };
                show(client, &value)?;
                *shown += 1;
                if count.is_some_and(|count| *shown >= count) {
                    return Ok(Ended::Done);
                }
            }
            "lagged" => {
                let missed: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
                eprintln!(
                    "courant tail: missed {} transitions (this client fell behind).",
                    text(&missed["missed"])
                );
            }
            _ => {}
        }
    }
    Ok(Ended::Dropped("the server closed the stream".into()))
}

/// Prints one transition: a line of JSON with `--json`, else its time, id, transition, cause,
/// provider and attempt.
fn show(client: &Client, event: &Value) -> Result<(), Failure> {
    let line = if client.json {
        event.to_string()
    } else {
        let attempt = event["attempt"].as_u64().map_or_else(|| "-".to_owned(), |a| format!("#{a}"));
        // Padded to the usual widths, so lines mostly align (a stream cannot measure its rows).
        format!(
            "{}  {}  {:<28}  {:<22}  {:<10}  {attempt}",
            text(&event["at"]),
            text(&event["id"]),
            transition(event),
            text(&event["cause"]),
            text(&event["provider"]),
        )
    };
    writeln!(std::io::stdout(), "{line}")
        .map_err(|e| Failure::new(1, format!("cannot write to stdout: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_filters_given_are_sent() {
        let args = TailArgs {
            id: None,
            channel: Some("email".into()),
            state: Some("sent".into()),
            provider: None,
            category: None,
            count: Some(3),
        };
        assert_eq!(
            args.query(),
            vec![("channel", "email".to_owned()), ("state", "sent".to_owned())]
        );
    }
}
