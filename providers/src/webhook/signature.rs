//! Standard Webhooks signatures (www.standardwebhooks.com, spec section "Signature scheme").
//!
//! The signed content is `{webhook-id}.{webhook-timestamp}.{body}`, over the body's raw bytes;
//! the signature is the base64 of its HMAC-SHA256 keyed with the secret's decoded bytes, sent as
//! `webhook-signature: v1,<base64>`. A header may carry several space-separated signatures (key
//! rotation); one valid `v1` is enough. Receivers refuse timestamps more than five minutes away,
//! which bounds replay.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// Fewest secret bytes accepted (192 bits, the spec's minimum).
pub const SECRET_BYTES_MIN: usize = 24;

/// Most secret bytes accepted (the spec's maximum).
pub const SECRET_BYTES_MAX: usize = 64;

/// How far `webhook-timestamp` may be from now, in seconds, either way (the spec's default).
pub const TOLERANCE_SECS: u64 = 300;

/// The most signatures read from one `webhook-signature` header.
const SIGNATURES_MAX: usize = 8;

/// Longest `webhook-id` accepted when verifying, in bytes.
const ID_BYTES_MAX: usize = 256;

/// The key bytes of a `whsec_` secret (the prefix is optional), when it is valid base64 of
/// [`SECRET_BYTES_MIN`]..=[`SECRET_BYTES_MAX`] bytes.
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    let key = STANDARD.decode(encoded).ok()?;
    (SECRET_BYTES_MIN..=SECRET_BYTES_MAX).contains(&key.len()).then_some(key)
}

fn mac(key: &[u8], id: &str, timestamp_secs: u64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length; `secret_key` bounds ours anyway.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `webhook-signature` value for one message: `v1,<base64 HMAC-SHA256>`.
pub fn sign(key: &[u8], id: &str, timestamp_secs: u64, body: &[u8]) -> String {
    let tag = mac(key, id, timestamp_secs, body).finalize().into_bytes();
    format!("v1,{}", STANDARD.encode(tag))
}

/// Why a signed webhook was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// `webhook-id`, `webhook-timestamp` or `webhook-signature` is missing or malformed.
    #[error("a webhook header is missing or malformed")]
    Header,
    /// The timestamp is more than [`TOLERANCE_SECS`] away from now.
    #[error("the webhook timestamp is outside the accepted window")]
    Stale,
    /// No signature in the header matches.
    #[error("no webhook signature matches")]
    Signature,
}

/// Verifies a received webhook: `id`, `timestamp` and `signature` are the `webhook-id`,
/// `webhook-timestamp` and `webhook-signature` headers, `body` the raw bytes as received, `key`
/// the secret's bytes ([`secret_key`]) and `now_secs` the time now. Each `v1` signature is
/// compared in constant time.
pub fn verify(
    key: &[u8],
    id: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now_secs: u64,
) -> Result<(), VerifyError> {
    if id.is_empty() || id.len() > ID_BYTES_MAX {
        return Err(VerifyError::Header);
    }
    let timestamp_secs: u64 = timestamp.trim().parse().map_err(|_| VerifyError::Header)?;
    if timestamp_secs.abs_diff(now_secs) > TOLERANCE_SECS {
        return Err(VerifyError::Stale);
    }
    let expected = mac(key, id, timestamp_secs, body);
    let mut any = false;
    for entry in signature.split(' ').filter(|e| !e.is_empty()).take(SIGNATURES_MAX) {
        any = true;
        let Some(("v1", encoded)) = entry.split_once(',') else { continue };
        let Ok(tag) = STANDARD.decode(encoded) else { continue };
        // `verify_slice` compares in constant time.
        if expected.clone().verify_slice(&tag).is_ok() {
            return Ok(());
        }
    }
    if any { Err(VerifyError::Signature) } else { Err(VerifyError::Header) }
}
