//! The APNs provider: one HTTP/2 client, a reused provider token, one call per device.

use futures::future::BoxFuture;
use jsonwebtoken::EncodingKey;
use secrecy::ExposeSecret;
use steps::model::{Channel, ProviderName};
use steps::outcome::SendOutcome;
use steps::recipient::{Device, Platform};
use workflows::ports::{Delivery, Outbound, Provider, SendHints};

use super::config::ApnsConfig;
use super::request::{headers, path, payload};
use super::response::{outcome, reason};
use super::token::ProviderToken;
use crate::http::{self, Timeouts};
use crate::{Error, options, push};

/// The platforms APNs sends to.
pub const PLATFORMS: [Platform; 1] = [Platform::Ios];

/// The APNs provider.
#[derive(Debug)]
pub struct Apns {
    /// The configured name.
    name: ProviderName,
    /// The one client: HTTP/2 over TLS (ALPN `h2`) for `https://`, HTTP/2 with prior knowledge
    /// for an `http://` sandbox.
    client: reqwest::Client,
    /// The base URL, without a trailing `/`.
    base_url: String,
    /// The app's bundle id (`apns-topic`).
    topic: String,
    /// The provider token.
    tokens: ProviderToken,
    /// The call and connect deadlines.
    timeouts: Timeouts,
}

impl Apns {
    /// Builds the provider named `name` from its configuration, reading the `.p8` key.
    pub fn new(name: ProviderName, config: ApnsConfig) -> Result<Self, Error> {
        config.validate(&name)?;
        let pem = config.load_key(&name)?;
        let key = EncodingKey::from_ec_pem(pem.expose_secret().as_bytes()).map_err(|_| {
            Error::config(name.as_str(), "key_file", "is not a P-256 key in PKCS#8 PEM")
        })?;
        let base_url = options::base_url(name.as_str(), "base_url", &config.base_url)?;
        let timeouts = Timeouts {
            total: std::time::Duration::from_millis(config.timeout_ms),
            connect: std::time::Duration::from_millis(config.connect_timeout_ms),
        };
        let mut builder = http::builder(timeouts);
        if base_url.starts_with("http://") {
            // APNs speaks only HTTP/2; without TLS there is no ALPN to agree on it.
            builder = builder.http2_prior_knowledge();
        }
        let client = builder
            .build()
            .map_err(|source| Error::Client { provider: name.as_str().to_owned(), source })?;
        Ok(Self {
            tokens: ProviderToken::new(config.team_id, config.key_id, key),
            base_url,
            topic: config.topic,
            client,
            timeouts,
            name,
        })
    }

    async fn send_one(
        &self,
        message: &Outbound,
        device: &Device,
        hints: &SendHints,
    ) -> SendOutcome {
        let path = match path(device) {
            Ok(path) => path,
            Err(error) => return SendOutcome::Failed(error),
        };
        let body = match payload(message) {
            Ok(body) => body,
            Err(error) => return SendOutcome::Failed(error),
        };
        let now_ms = http::now_ms();
        let token = match self.tokens.token(now_ms) {
            Ok(token) => token,
            Err(error) => return SendOutcome::Failed(error),
        };
        let known = [device.token.expose(), token.expose_secret()];
        let mut request = self
            .client
            .post(format!("{}{path}", self.base_url))
            .header("authorization", format!("bearer {}", token.expose_secret()))
            .timeout(self.timeouts.total)
            .json(&body);
        for (name, value) in headers(&self.topic, message, device, hints) {
            request = request.header(name, value);
        }
        let answer = match http::exchange(request, self.timeouts, &known).await {
            Ok(answer) => answer,
            Err(error) => return SendOutcome::Failed(error),
        };
        if answer.status == 403
            && matches!(
                reason(&answer.body).as_deref(),
                Some("ExpiredProviderToken" | "InvalidProviderToken")
            )
        {
            self.tokens.refused(&token, now_ms);
        }
        outcome(answer.status, answer.header("apns-id"), answer.retry_after_ms(), &answer.body)
    }
}

impl Provider for Apns {
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
        push::deliver_each(&self.name, message, &PLATFORMS, "ios", |device| {
            self.send_one(message, device, hints)
        })
    }
}
