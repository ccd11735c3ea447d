//! The APNs provider token: a JWT signed ES256 with the `.p8` key (header `kid` = key id,
//! claims `iss` = team id and `iat`).
//!
//! Apple refuses a token older than an hour (`ExpiredProviderToken`) and one replaced more often
//! than every 20 minutes (`TooManyProviderTokenUpdates`), so one token is reused for
//! [`REFRESH_AFTER_MS`] (50 minutes) and a refused one is replaced only once it is at least
//! [`REPLACE_AFTER_MS`] (20 minutes) old. Signing is a fast local computation, done under a plain
//! mutex.

use std::sync::{Mutex, PoisonError};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use steps::outcome::{ErrorClass, ProviderError};

use super::request::ProviderClaims;

/// The age at which a token is replaced before use: 50 minutes, under Apple's hour.
pub const REFRESH_AFTER_MS: u64 = 50 * 60 * 1_000;
/// The youngest token replaced after Apple refused it: Apple allows one update per 20 minutes.
pub const REPLACE_AFTER_MS: u64 = 20 * 60 * 1_000;

struct Cached {
    token: SecretString,
    issued_at_ms: u64,
}

/// The provider tokens of one team and key.
pub(crate) struct ProviderToken {
    team_id: String,
    key_id: String,
    key: EncodingKey,
    cached: Mutex<Option<Cached>>,
}

impl std::fmt::Debug for ProviderToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderToken").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl ProviderToken {
    /// Tokens for `team_id`, signed with `key` (id `key_id`).
    pub fn new(team_id: String, key_id: String, key: EncodingKey) -> Self {
        Self { team_id, key_id, key, cached: Mutex::new(None) }
    }

    /// The token to send at `now_ms`: the cached one while younger than [`REFRESH_AFTER_MS`].
    pub fn token(&self, now_ms: u64) -> Result<SecretString, ProviderError> {
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = cached.as_ref()
            && now_ms.saturating_sub(c.issued_at_ms) < REFRESH_AFTER_MS
        {
            return Ok(c.token.clone());
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let claims = ProviderClaims { iss: self.team_id.clone(), iat: now_ms / 1_000 };
        let token = jsonwebtoken::encode(&header, &claims, &self.key).map_err(|_| {
            ProviderError::new(
                ErrorClass::ProviderConfig,
                None,
                None,
                "cannot sign the provider token",
            )
        })?;
        let token = SecretString::from(token);
        *cached = Some(Cached { token: token.clone(), issued_at_ms: now_ms });
        Ok(token)
    }

    /// Apple refused `token` (expired or invalid): it is dropped if it is still the cached one
    /// and at least [`REPLACE_AFTER_MS`] old, so the next send signs a new one.
    pub fn refused(&self, token: &SecretString, now_ms: u64) {
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        if cached.as_ref().is_some_and(|c| {
            c.token.expose_secret() == token.expose_secret()
                && now_ms.saturating_sub(c.issued_at_ms) >= REPLACE_AFTER_MS
        }) {
            *cached = None;
        }
    }
}
