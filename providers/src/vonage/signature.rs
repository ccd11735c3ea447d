//! Vonage's signed-request scheme, for verifying signed delivery receipts.
//!
//! Vonage signs a webhook by sorting its parameters by name (leaving out `sig` itself), writing
//! each as `&name=value` with any `&` or `=` inside a value replaced by `_`, and then either
//! hashing that string followed by the signature secret with MD5 (`md5hash`, the default) or
//! taking an HMAC of it keyed with the secret (`md5`, `sha1`, `sha256`, `sha512`). The digest is
//! sent as hex in `sig`, together with a `timestamp` (Unix seconds) that is itself signed, so a
//! captured receipt cannot be replayed later than the tolerance allows
//! (developer.vonage.com/en/getting-started/concepts/signing-messages).

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use subtle::ConstantTimeEq;

/// The signing method chosen in Vonage's dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureMethod {
    /// MD5 of the parameter string followed by the secret (Vonage's default).
    #[default]
    Md5hash,
    /// HMAC-MD5.
    Md5,
    /// HMAC-SHA1.
    Sha1,
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

/// The longest `sig` read, in hex digits (SHA-512's 128).
const SIG_HEX_MAX: usize = 128;

/// The string Vonage signs: the parameters but `sig`, sorted by name, each as `&name=value` with
/// `&` and `=` in values replaced by `_`.
pub(crate) fn canonical<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut sorted: Vec<(&str, &str)> =
        params.into_iter().filter(|(name, _)| *name != "sig").collect();
    sorted.sort_unstable();
    let mut out = String::new();
    for (name, value) in sorted {
        out.push('&');
        out.push_str(name);
        out.push('=');
        out.extend(value.chars().map(|c| if c == '&' || c == '=' { '_' } else { c }));
    }
    out
}

fn hmac_of<M: Mac + KeyInit>(secret: &str, text: &str) -> Vec<u8> {
    // HMAC takes keys of any length, so `new_from_slice` cannot fail here.
    let Ok(mut mac) = <M as KeyInit>::new_from_slice(secret.as_bytes()) else {
        return Vec::new();
    };
    mac.update(text.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The digest of `params` under `method` and `secret`, as bytes.
fn digest(params: &[(&str, &str)], secret: &str, method: SignatureMethod) -> Vec<u8> {
    let text = canonical(params.iter().copied());
    match method {
        SignatureMethod::Md5hash => {
            let mut hasher = md5::Md5::new();
            hasher.update(text.as_bytes());
            hasher.update(secret.as_bytes());
            hasher.finalize().to_vec()
        }
        SignatureMethod::Md5 => hmac_of::<Hmac<md5::Md5>>(secret, &text),
        SignatureMethod::Sha1 => hmac_of::<Hmac<sha1::Sha1>>(secret, &text),
        SignatureMethod::Sha256 => hmac_of::<Hmac<sha2::Sha256>>(secret, &text),
        SignatureMethod::Sha512 => hmac_of::<Hmac<sha2::Sha512>>(secret, &text),
    }
}

/// The `sig` Vonage would send for `params`: lowercase hex for `md5hash`, uppercase hex for the
/// HMACs (as Vonage's own libraries produce them). Used by the sandbox and the tests.
pub fn sign(params: &[(&str, &str)], secret: &str, method: SignatureMethod) -> String {
    let hex = hex_of(&digest(params, secret, method));
    match method {
        SignatureMethod::Md5hash => hex,
        _ => hex.to_ascii_uppercase(),
    }
}

/// Whether `sig` is the signature of `params` (every parameter but `sig`) under `method` and
/// `secret`. Hex case is ignored; the digests are compared in constant time.
pub fn verify(params: &[(&str, &str)], sig: &str, secret: &str, method: SignatureMethod) -> bool {
    if sig.is_empty() || sig.len() > SIG_HEX_MAX {
        return false;
    }
    let Some(presented) = bytes_of_hex(sig) else {
        return false;
    };
    let expected = digest(params, secret, method);
    presented.len() == expected.len() && bool::from(presented.ct_eq(&expected))
}

fn hex_of(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn bytes_of_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |b: u8| char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok());
    text.as_bytes().chunks(2).map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?)).collect()
}
