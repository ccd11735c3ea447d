//! The SES provider: one shared client, one signed call per message.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use futures::future::BoxFuture;
use steps::model::{Channel, EmailAddress, ProviderName};
use steps::outcome::{ErrorClass, ProviderError, SendOutcome};
use workflows::ports::{Outbound, Provider};

use super::SIGNING_SERVICE;
use super::config::SesConfig;
use super::request::{SEND_EMAIL_PATH, from_address, send_email};
use super::response::outcome;
use crate::http::{self, Timeouts};
use crate::{Error, Secret, options};

/// The Amazon SES provider.
pub struct Ses {
    /// The configured name.
    name: ProviderName,
    /// The one client, shared by every call so connections are pooled.
    client: reqwest::Client,
    /// `{base_url}/v2/email/outbound-emails`.
    url: String,
    /// The signing region.
    region: String,
    /// The access key id, kept apart to scrub it from error messages.
    access_key_id: Secret,
    /// The signing credentials (`Debug` redacts the secret key and the token).
    credentials: Credentials,
    /// The sender address, bare, to tell a refused sender from a refused recipient.
    from: EmailAddress,
    /// `FromEmailAddress`, with the display name.
    from_address: String,
    /// `ConfigurationSetName`.
    configuration_set: Option<String>,
    /// The call and connect deadlines.
    timeouts: Timeouts,
    /// The signing time source: the system clock, or a fixed time in tests.
    now: fn() -> SystemTime,
}

impl std::fmt::Debug for Ses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // By hand: `Credentials`' own `Debug` prints the access key id.
        f.debug_struct("Ses")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("region", &self.region)
            .field("credentials", &"***")
            .field("configuration_set", &self.configuration_set)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl Ses {
    /// Builds the provider named `name` from its configuration, after validating it.
    pub fn new(name: ProviderName, config: SesConfig) -> Result<Self, Error> {
        config.validate(&name)?;
        let base_url = options::base_url(name.as_str(), "base_url", &config.base_url)?;
        let timeouts = Timeouts {
            total: std::time::Duration::from_millis(config.timeout_ms),
            connect: std::time::Duration::from_millis(config.connect_timeout_ms),
        };
        let client = http::client(name.as_str(), timeouts)?;
        let credentials = Credentials::new(
            config.access_key_id.expose(),
            config.secret_access_key.expose(),
            config.session_token.as_ref().map(|t| t.expose().to_owned()),
            None,
            "courant-config",
        );
        Ok(Self {
            url: format!("{base_url}{SEND_EMAIL_PATH}"),
            client,
            region: config.region,
            access_key_id: config.access_key_id,
            credentials,
            from_address: from_address(&config.from, config.from_name.as_deref()),
            from: config.from,
            configuration_set: config.configuration_set,
            timeouts,
            now: SystemTime::now,
            name,
        })
    }

    /// The same provider signing with the time `now` gives (a fixed time makes the signature
    /// reproducible in tests).
    #[cfg(test)]
    pub(crate) fn with_clock(mut self, now: fn() -> SystemTime) -> Self {
        self.now = now;
        self
    }

    /// The SigV4 headers (`x-amz-date`, `authorization`, and `x-amz-security-token` with temporary
    /// credentials) for a POST of `body` with `content_type`.
    fn signature_headers(
        &self,
        content_type: &str,
        body: &[u8],
    ) -> Result<Vec<(String, String)>, ProviderError> {
        let failed = |what: &str| {
            // Only a bad URL or region gets here: the same for every message.
            ProviderError::new(
                ErrorClass::ProviderConfig,
                None,
                None,
                &format!("cannot sign: {what}"),
            )
        };
        let identity = self.credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(SIGNING_SERVICE)
            .time((self.now)())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| failed(&e.to_string()))?
            .into();
        let headers = [("content-type", content_type)];
        let signable = SignableRequest::new(
            "POST",
            self.url.as_str(),
            headers.into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|_| failed("the request is not signable"))?;
        let (instructions, _signature) =
            sign(signable, &params).map_err(|_| failed("signing failed"))?.into_parts();
        Ok(instructions.headers().map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
    }

    async fn call(&self, message: &Outbound) -> SendOutcome {
        let body =
            match send_email(self.from_address.clone(), self.configuration_set.as_deref(), message)
            {
                Ok(body) => body,
                Err(error) => return SendOutcome::Failed(error),
            };
        let body = match serde_json::to_vec(&body) {
            Ok(body) => body,
            Err(_) => {
                return SendOutcome::Failed(ProviderError::new(
                    ErrorClass::ProviderConfig,
                    None,
                    None,
                    "cannot encode the request",
                ));
            }
        };
        let content_type = "application/json";
        let signature = match self.signature_headers(content_type, &body) {
            Ok(headers) => headers,
            Err(error) => return SendOutcome::Failed(error),
        };
        let to = message.recipient.email.as_ref().map_or("", EmailAddress::expose);
        let known = [to, self.access_key_id.expose()];
        let mut request = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .timeout(self.timeouts.total)
            .body(body);
        for (name, value) in signature {
            request = request.header(name, value);
        }
        let answer = match http::exchange(request, self.timeouts, &known).await {
            Ok(answer) => answer,
            Err(error) => return SendOutcome::Failed(error),
        };
        outcome(
            answer.status,
            answer.header("x-amzn-errortype"),
            answer.retry_after_ms(),
            &answer.body,
            self.from.expose(),
            &known,
        )
    }
}

impl Provider for Ses {
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
