//! The SendGrid provider: one shared client, one call per message.

use futures::future::BoxFuture;
use steps::model::{Channel, EmailAddress, ProviderName};
use steps::outcome::SendOutcome;
use workflows::ports::{Outbound, Provider};

use super::config::SendGridConfig;
use super::request::{MAIL_SEND_PATH, mail_send};
use super::response::{outcome, retry_after_from_reset};
use crate::http::{self, Timeouts};
use crate::{Error, Secret, options};

/// The SendGrid provider.
#[derive(Debug)]
pub struct SendGrid {
    /// The configured name.
    name: ProviderName,
    /// The one client, shared by every call so connections are pooled.
    client: reqwest::Client,
    /// `{base_url}/v3/mail/send`.
    url: String,
    /// The API key.
    api_key: Secret,
    /// The sender address.
    from: EmailAddress,
    /// The sender's display name.
    from_name: Option<String>,
    /// The call and connect deadlines.
    timeouts: Timeouts,
}

impl SendGrid {
    /// Builds the provider named `name` from its configuration, after validating it.
    pub fn new(name: ProviderName, config: SendGridConfig) -> Result<Self, Error> {
        config.validate(&name)?;
        let base_url = options::base_url(name.as_str(), "base_url", &config.base_url)?;
        let timeouts = Timeouts {
            total: std::time::Duration::from_millis(config.timeout_ms),
            connect: std::time::Duration::from_millis(config.connect_timeout_ms),
        };
        let client = http::client(name.as_str(), timeouts)?;
        Ok(Self {
            url: format!("{base_url}{MAIL_SEND_PATH}"),
            client,
            api_key: config.api_key,
            from: config.from,
            from_name: config.from_name,
            timeouts,
            name,
        })
    }

    async fn call(&self, message: &Outbound) -> SendOutcome {
        let body = match mail_send(&self.from, self.from_name.as_deref(), message) {
            Ok(body) => body,
            Err(error) => return SendOutcome::Failed(error),
        };
        let to = message.recipient.email.as_ref().map_or("", EmailAddress::expose);
        let known = [to, self.api_key.expose()];
        let request = self
            .client
            .post(&self.url)
            .bearer_auth(self.api_key.expose())
            .timeout(self.timeouts.total)
            .json(&body);
        let answer = match http::exchange(request, self.timeouts, &known).await {
            Ok(answer) => answer,
            Err(error) => return SendOutcome::Failed(error),
        };
        // The rate-limit reset only says when throttling ends; SendGrid sends it on every answer.
        let retry_after_ms = answer.retry_after_ms().or_else(|| {
            (answer.status == 429)
                .then(|| answer.header("x-ratelimit-reset"))
                .flatten()
                .and_then(|r| retry_after_from_reset(r, http::now_ms()))
        });
        outcome(answer.status, answer.header("x-message-id"), retry_after_ms, &answer.body, &known)
    }
}

impl Provider for SendGrid {
    fn name(&self) -> &ProviderName {
        &self.name
    }

    fn channel(&self) -> Channel {
        Channel::Email
    }

    fn send<'a>(&'a self, message: &'a Outbound) -> BoxFuture<'a, SendOutcome> {
        http::instrumented_send(&self.name, message, self.call(message))
    }
}
