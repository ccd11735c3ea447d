//! The FCM provider: one shared client, an access token cache, one call per device.

use futures::future::BoxFuture;
use jsonwebtoken::EncodingKey;
use secrecy::ExposeSecret;
use steps::model::{Channel, ProviderName};
use steps::outcome::SendOutcome;
use steps::recipient::{Device, Platform};
use workflows::ports::{Delivery, Outbound, Provider, SendHints};

use super::config::FcmConfig;
use super::request::{send_body, send_path};
use super::response::outcome;
use super::token::TokenSource;
use crate::http::{self, Timeouts};
use crate::{Error, options, push};

/// The platforms FCM sends to.
pub const PLATFORMS: [Platform; 2] = [Platform::Android, Platform::Web];

/// The FCM HTTP v1 provider.
#[derive(Debug)]
pub struct Fcm {
    /// The configured name.
    name: ProviderName,
    /// The one client, shared by every call (and the token endpoint).
    client: reqwest::Client,
    /// `{base_url}/v1/projects/{project_id}/messages:send`.
    url: String,
    /// The access tokens.
    tokens: TokenSource,
    /// The call and connect deadlines.
    timeouts: Timeouts,
}

impl Fcm {
    /// Builds the provider named `name` from its configuration, reading the service account key.
    pub fn new(name: ProviderName, config: FcmConfig) -> Result<Self, Error> {
        config.validate(&name)?;
        let account = config.load_key(&name)?;
        let key =
            EncodingKey::from_rsa_pem(account.private_key_pem().as_bytes()).map_err(|_| {
                Error::config(name.as_str(), "service_account_file", "has an unusable private_key")
            })?;
        let base_url = options::base_url(name.as_str(), "base_url", &config.base_url)?;
        let timeouts = Timeouts {
            total: std::time::Duration::from_millis(config.timeout_ms),
            connect: std::time::Duration::from_millis(config.connect_timeout_ms),
        };
        let client = http::client(name.as_str(), timeouts)?;
        Ok(Self {
            url: format!("{base_url}{}", send_path(&config.project_id)),
            tokens: TokenSource::new(account, key, client.clone(), timeouts),
            client,
            timeouts,
            name,
        })
    }

    /// Sends to one device. A `401` drops the access token and tries once more with a new one
    /// (a token revoked or expired early); nothing was sent on a `401`, so this is safe.
    async fn send_one(
        &self,
        message: &Outbound,
        device: &Device,
        hints: &SendHints,
    ) -> SendOutcome {
        let body = match send_body(message, device, hints, http::now_ms()) {
            Ok(body) => body,
            Err(error) => return SendOutcome::Failed(error),
        };
        let mut tries = 0;
        loop {
            tries += 1;
            let token = match self.tokens.token().await {
                Ok(token) => token,
                Err(error) => return SendOutcome::Failed(error),
            };
            let known = [device.token.expose(), token.expose_secret()];
            let request = self
                .client
                .post(&self.url)
                .bearer_auth(token.expose_secret())
                .timeout(self.timeouts.total)
                .json(&body);
            let answer = match http::exchange(request, self.timeouts, &known).await {
                Ok(answer) => answer,
                Err(error) => return SendOutcome::Failed(error),
            };
            if answer.status == 401 {
                self.tokens.forget(&token).await;
                if tries < 2 {
                    continue;
                }
            }
            return outcome(answer.status, answer.retry_after_ms(), &answer.body, &known);
        }
    }
}

impl Provider for Fcm {
    fn name(&self) -> &ProviderName {
        &self.name
    }

    fn channel(&self) -> Channel {
        Channel::Push
    }

    fn send<'a>(&'a self, message: &'a Outbound) -> BoxFuture<'a, SendOutcome> {
        Box::pin(async move { self.deliver(message, &SendHints::default()).await.outcome })
    }

    fn deliver<'a>(
        &'a self,
        message: &'a Outbound,
        hints: &'a SendHints,
    ) -> BoxFuture<'a, Delivery> {
        push::deliver_each(&self.name, message, &PLATFORMS, "android or web", |device| {
            self.send_one(message, device, hints)
        })
    }
}
