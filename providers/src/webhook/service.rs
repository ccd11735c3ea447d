//! The signed webhook provider: one shared client, one signed POST per message.

use futures::future::BoxFuture;
use reqwest::header::CONTENT_TYPE;
use steps::model::{Channel, ProviderName};
use steps::outcome::SendOutcome;
use workflows::ports::{Outbound, Provider};

use super::config::WebhookConfig;
use super::request::body;
use super::response::outcome;
use super::signature::{secret_key, sign};
use crate::Error;
use crate::http::{self, Timeouts};

/// Signing key bytes. `Debug` prints `***`.
struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// A signed outbound webhook (Standard Webhooks) for the chat channel.
#[derive(Debug)]
pub struct Webhook {
    /// The configured name.
    name: ProviderName,
    /// The one client, shared by every call so connections are pooled.
    client: reqwest::Client,
    /// The endpoint.
    url: String,
    /// The decoded signing secret.
    key: Key,
    /// The call and connect deadlines.
    timeouts: Timeouts,
}

impl Webhook {
    /// Builds the provider named `name` from its configuration, after validating it.
    pub fn new(name: ProviderName, config: WebhookConfig) -> Result<Self, Error> {
        config.validate(&name)?;
        let provider = name.as_str();
        let key = secret_key(config.secret.expose()).ok_or_else(|| {
            Error::config(provider, "secret", "must be whsec_ followed by base64")
        })?;
        let timeouts = Timeouts {
            total: std::time::Duration::from_millis(config.timeout_ms),
            connect: std::time::Duration::from_millis(config.connect_timeout_ms),
        };
        let client = http::client(provider, timeouts)?;
        Ok(Self { client, url: config.url, key: Key(key), timeouts, name })
    }

    async fn call(&self, message: &Outbound) -> SendOutcome {
        let now_secs = http::now_ms() / 1_000;
        let body = match body(message, now_secs) {
            Ok(body) => body,
            Err(error) => return SendOutcome::Failed(error),
        };
        let id = message.notification_id.as_str();
        let signature = sign(&self.key.0, id, now_secs, &body);
        let request = self
            .client
            .post(&self.url)
            .timeout(self.timeouts.total)
            .header(CONTENT_TYPE, "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", now_secs.to_string())
            .header("webhook-signature", signature)
            .body(body);
        let answer = match http::exchange(request, self.timeouts, &[]).await {
            Ok(answer) => answer,
            Err(error) => return SendOutcome::Failed(error),
        };
        outcome(answer.status, answer.retry_after_ms(), &answer.body, &[])
    }
}

impl Provider for Webhook {
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
