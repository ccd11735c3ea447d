//! OAuth2 access tokens for FCM: a service-account assertion (RS256) exchanged at the token
//! endpoint, cached and refreshed before it expires.
//!
//! One refresh at a time: the cache is a mutex held across the exchange, so concurrent sends that
//! find the token stale wait for the one refresh instead of each buying a token. A `401` from
//! FCM drops the token it was sent with ([`TokenSource::forget`]), so the next send buys a new one.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use steps::outcome::{ErrorClass, ProviderError};
use tokio::sync::Mutex;

use super::config::ServiceAccount;
use super::request::{Claims, GRANT_TYPE};
use super::response::token_outcome;
use crate::http::{self, Timeouts};

/// How long before its expiry a token is replaced: 5 minutes, so a token never expires between
/// being read here and reaching FCM, even with a slow call and some clock skew.
pub const REFRESH_EARLY_MS: u64 = 5 * 60 * 1_000;

/// A cached token.
struct Cached {
    token: SecretString,
    refresh_at_ms: u64,
}

/// The access tokens of one service account.
pub(crate) struct TokenSource {
    account: ServiceAccount,
    key: EncodingKey,
    client: reqwest::Client,
    timeouts: Timeouts,
    cached: Mutex<Option<Cached>>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource").field("account", &self.account).finish_non_exhaustive()
    }
}

impl TokenSource {
    /// A token source for `account`, calling its token endpoint with `client`.
    pub fn new(
        account: ServiceAccount,
        key: EncodingKey,
        client: reqwest::Client,
        timeouts: Timeouts,
    ) -> Self {
        Self { account, key, client, timeouts, cached: Mutex::new(None) }
    }

    /// A valid access token: the cached one, or a new one when it is due for refresh.
    pub async fn token(&self) -> Result<SecretString, ProviderError> {
        let mut cached = self.cached.lock().await;
        let now_ms = http::now_ms();
        if let Some(c) = cached.as_ref()
            && now_ms < c.refresh_at_ms
        {
            return Ok(c.token.clone());
        }
        let fresh = self.fetch(now_ms).await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// Drops `token` from the cache if it is still the cached one (FCM refused it).
    pub async fn forget(&self, token: &SecretString) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|c| c.token.expose_secret() == token.expose_secret()) {
            *cached = None;
        }
    }

    async fn fetch(&self, now_ms: u64) -> Result<Cached, ProviderError> {
        let claims =
            Claims::new(&self.account.client_email, &self.account.token_uri, now_ms / 1_000);
        let assertion = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map_err(|_| {
                ProviderError::new(
                    ErrorClass::ProviderConfig,
                    None,
                    None,
                    "cannot sign the service account assertion",
                )
            })?;
        let request = self
            .client
            .post(&self.account.token_uri)
            .timeout(self.timeouts.total)
            .form(&[("grant_type", GRANT_TYPE), ("assertion", assertion.as_str())]);
        let answer = http::exchange(request, self.timeouts, &[assertion.as_str()]).await.map_err(
            |mut error| {
                // No message was sent whatever happened to the token call: retrying is safe.
                if error.class == ErrorClass::Unknown {
                    error.class = ErrorClass::RETRYABLE;
                }
                error.message = format!("token endpoint: {}", error.message);
                error
            },
        )?;
        let token = token_outcome(answer.status, answer.retry_after_ms(), &answer.body)?;
        let lifetime_ms = token.expires_in.saturating_mul(1_000);
        // Refreshed 5 minutes early; a token shorter-lived than 10 minutes at half its life.
        let early_ms = REFRESH_EARLY_MS.min(lifetime_ms / 2);
        Ok(Cached {
            token: SecretString::from(token.access_token),
            refresh_at_ms: now_ms + lifetime_ms - early_ms,
        })
    }
}
