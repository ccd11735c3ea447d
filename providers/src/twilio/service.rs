//! The Twilio provider: one shared client, one call per message.

use futures::future::BoxFuture;
use steps::model::{Channel, PhoneNumber, ProviderName};
use steps::outcome::SendOutcome;
use workflows::ports::{Outbound, Provider};

use super::config::TwilioConfig;
use super::request::{Sender, create_message, messages_path};
use super::response::outcome;
use crate::http::{self, Timeouts};
use crate::{Error, Secret, options};

/// The Twilio provider.
#[derive(Debug)]
pub struct Twilio {
    /// The configured name.
    name: ProviderName,
    /// The one client, shared by every call so connections are pooled.
    client: reqwest::Client,
    /// `{base_url}/2010-04-01/Accounts/{sid}/Messages.json`.
    url: String,
    /// The account SID (scrubbed from error messages).
    account_sid: String,
    /// The basic-auth user: the API key SID, or the account SID.
    user: String,
    /// The basic-auth password.
    auth_token: Secret,
    /// `From` or `MessagingServiceSid`.
    sender: Sender,
    /// courant's public base URL for status callbacks.
    status_callback_base: Option<String>,
    /// The call and connect deadlines.
    timeouts: Timeouts,
}

impl Twilio {
    /// Builds the provider named `name` from its configuration, after validating it.
    pub fn new(name: ProviderName, config: TwilioConfig) -> Result<Self, Error> {
        config.validate(&name)?;
        let provider = name.as_str();
        let base_url = options::base_url(provider, "base_url", &config.base_url)?;
        let status_callback_base = match &config.status_callback_base_url {
            Some(base) => Some(options::base_url(provider, "status_callback_base_url", base)?),
            None => None,
        };
        let sender = match (config.from, config.messaging_service_sid) {
            (Some(from), None) => Sender::From(from),
            (None, Some(service)) => Sender::Service(service),
            // `validate` has refused every other combination.
            _ => {
                return Err(Error::config(
                    provider,
                    "from",
                    "set exactly one of from and messaging_service_sid",
                ));
            }
        };
        let timeouts = Timeouts {
            total: std::time::Duration::from_millis(config.timeout_ms),
            connect: std::time::Duration::from_millis(config.connect_timeout_ms),
        };
        let client = http::client(provider, timeouts)?;
        Ok(Self {
            url: format!("{base_url}{}", messages_path(&config.account_sid)),
            client,
            user: config.api_key_sid.unwrap_or_else(|| config.account_sid.clone()),
            account_sid: config.account_sid,
            auth_token: config.auth_token,
            sender,
            status_callback_base,
            timeouts,
            name,
        })
    }

    async fn call(&self, message: &Outbound) -> SendOutcome {
        let form = match create_message(
            &self.sender,
            self.status_callback_base.as_deref(),
            &self.name,
            message,
        ) {
            Ok(form) => form,
            Err(error) => return SendOutcome::Failed(error),
        };
        let to = message.recipient.phone.as_ref().map_or("", PhoneNumber::expose);
        let known = [
            to,
            to.trim_start_matches('+'),
            self.account_sid.as_str(),
            self.user.as_str(),
            self.auth_token.expose(),
        ];
        let request = self
            .client
            .post(&self.url)
            .basic_auth(&self.user, Some(self.auth_token.expose()))
            .timeout(self.timeouts.total)
            .form(&form);
        let answer = match http::exchange(request, self.timeouts, &known).await {
            Ok(answer) => answer,
            Err(error) => return SendOutcome::Failed(error),
        };
        outcome(answer.status, answer.retry_after_ms(), &answer.body, &known)
    }
}

impl Provider for Twilio {
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
