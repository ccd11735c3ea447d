//! The Vonage provider: one shared client, one call per message.

use futures::future::BoxFuture;
use steps::model::{Channel, PhoneNumber, ProviderName};
use steps::outcome::SendOutcome;
use workflows::ports::{Outbound, Provider};

use super::config::VonageConfig;
use super::request::{Account, SMS_PATH, send_sms};
use super::response::outcome;
use crate::http::{self, Timeouts};
use crate::{Error, Secret, options};

/// The Vonage SMS API provider.
#[derive(Debug)]
pub struct Vonage {
    /// The configured name.
    name: ProviderName,
    /// The one client, shared by every call so connections are pooled.
    client: reqwest::Client,
    /// `{base_url}/sms/json`.
    url: String,
    /// The API key.
    api_key: String,
    /// The API secret.
    api_secret: Secret,
    /// The sender.
    from: String,
    /// courant's public base URL for delivery receipts.
    callback_base: Option<String>,
    /// The call and connect deadlines.
    timeouts: Timeouts,
}

impl Vonage {
    /// Builds the provider named `name` from its configuration, after validating it.
    pub fn new(name: ProviderName, config: VonageConfig) -> Result<Self, Error> {
        config.validate(&name)?;
        let provider = name.as_str();
        let base_url = options::base_url(provider, "base_url", &config.base_url)?;
        let callback_base = match &config.callback_base_url {
            Some(base) => Some(options::base_url(provider, "callback_base_url", base)?),
            None => None,
        };
        let timeouts = Timeouts {
            total: std::time::Duration::from_millis(config.timeout_ms),
            connect: std::time::Duration::from_millis(config.connect_timeout_ms),
        };
        let client = http::client(provider, timeouts)?;
        Ok(Self {
            url: format!("{base_url}{SMS_PATH}"),
            client,
            api_key: config.api_key,
            api_secret: config.api_secret,
            from: config.from,
            callback_base,
            timeouts,
            name,
        })
    }

    async fn call(&self, message: &Outbound) -> SendOutcome {
        let account = Account {
            api_key: &self.api_key,
            api_secret: self.api_secret.expose(),
            from: &self.from,
        };
        let form = match send_sms(account, self.callback_base.as_deref(), &self.name, message) {
            Ok(form) => form,
            Err(error) => return SendOutcome::Failed(error),
        };
        let to = message.recipient.phone.as_ref().map_or("", PhoneNumber::expose);
        let known =
            [to, to.trim_start_matches('+'), self.api_key.as_str(), self.api_secret.expose()];
        // The credentials travel in the form body, never in the URL, so no log of a URL or a
        // proxy's access log can carry them.
        let request = self.client.post(&self.url).timeout(self.timeouts.total).form(&form);
        let answer = match http::exchange(request, self.timeouts, &known).await {
            Ok(answer) => answer,
            Err(error) => return SendOutcome::Failed(error),
        };
        outcome(answer.status, answer.retry_after_ms(), &answer.body, &known)
    }
}

impl Provider for Vonage {
    fn name(&self) -> &ProviderName {
        &self.name
    }

    fn channel(&self) -> Channel {
        Channel::Sms
    }

    fn send<'a>(&'a self, message: &'a Outbound) -> BoxFuture<'a, SendOutcome> {
        http::instrumented_send(&self.name, message, self.call(message))
    }
}
