//! The Slack provider: one shared client, one POST per message.

use futures::future::BoxFuture;
use steps::model::{Channel, ProviderName};
use steps::outcome::SendOutcome;
use workflows::ports::{Outbound, Provider};

use super::config::SlackConfig;
use super::request::post_message;
use super::response::outcome;
use crate::http::{self, Timeouts};
use crate::{Error, Secret};

/// A Slack incoming webhook, for the chat channel.
#[derive(Debug)]
pub struct Slack {
    /// The configured name.
    name: ProviderName,
    /// The one client, shared by every call so connections are pooled.
    client: reqwest::Client,
    /// The webhook URL (a credential).
    url: Secret,
    /// The call and connect deadlines.
    timeouts: Timeouts,
}

impl Slack {
    /// Builds the provider named `name` from its configuration, after validating it.
    pub fn new(name: ProviderName, config: SlackConfig) -> Result<Self, Error> {
        config.validate(&name)?;
        let timeouts = Timeouts {
            total: std::time::Duration::from_millis(config.timeout_ms),
            connect: std::time::Duration::from_millis(config.connect_timeout_ms),
        };
        let client = http::client(name.as_str(), timeouts)?;
        Ok(Self { client, url: config.webhook_url, timeouts, name })
    }

    async fn call(&self, message: &Outbound) -> SendOutcome {
        let body = match post_message(message) {
            Ok(body) => body,
            Err(error) => return SendOutcome::Failed(error),
        };
        let url = self.url.expose();
        // The token is the URL's last segment; both are scrubbed from any transport error
        // (which `exchange` already strips of the URL).
        let token = url.rsplit('/').next().unwrap_or("");
        let known = [url, token];
        let request = self.client.post(url).timeout(self.timeouts.total).json(&body);
        let answer = match http::exchange(request, self.timeouts, &known).await {
            Ok(answer) => answer,
            Err(error) => return SendOutcome::Failed(error),
        };
        outcome(answer.status, answer.retry_after_ms(), &answer.body)
    }
}

impl Provider for Slack {
    fn name(&self) -> &ProviderName {
        &self.name
    }

    fn channel(&self) -> Channel {
        Channel::Chat
    }

    fn send<'a>(&'a self, message: &'a Outbound) -> BoxFuture<'a, SendOutcome> {
        http::instrumented_send(&self.name, message, self.call(message))
    }
}
