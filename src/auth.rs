//! API keys: `ck_<id>_<secret>`. The id is public and names the stored key; only the SHA-256 of
//! the secret is stored, and a presented secret's hash is compared with it in constant time.

use sha2::{Digest, Sha256};
use steps::model::TenantId;
use subtle::ConstantTimeEq;
use workflows::ports::{ApiKey, Store, StoreError};

/// Hex characters in a key id (64 bits: unique enough to name keys, not a secret).
const ID_HEX_LEN: usize = 16;
/// Hex characters in a key secret (256 bits).
const SECRET_HEX_LEN: usize = 64;

fn split(presented: &str) -> Option<(&str, &str)> {
    let rest = presented.strip_prefix("ck_")?;
    let (id, secret) = rest.split_once('_')?;
    let hex = |s: &str, len| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id, ID_HEX_LEN) && hex(secret, SECRET_HEX_LEN)).then_some((id, secret))
}

fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Mints a key for `tenant`, stores its hash and returns the key. The key is shown once.
pub async fn create<S: Store>(store: &S, tenant: &TenantId) -> Result<String, StoreError> {
    let id = hex::encode(rand::random::<[u8; ID_HEX_LEN / 2]>());
    let secret = hex::encode(rand::random::<[u8; SECRET_HEX_LEN / 2]>());
    let key = ApiKey { tenant: tenant.clone(), secret_sha256_hex: digest(&secret) };
    store.put_api_key(&id, &key).await?;
    Ok(format!("ck_{id}_{secret}"))
}

/// The tenant a presented key acts for, or `None` when the key is malformed or unknown.
pub async fn verify<S: Store>(store: &S, presented: &str) -> Result<Option<TenantId>, StoreError> {
    let Some((id, secret)) = split(presented) else { return Ok(None) };
    let Some(stored) = store.api_key(id).await? else { return Ok(None) };
    let presented_hash = digest(secret);
    let equal: bool = presented_hash.as_bytes().ct_eq(stored.secret_sha256_hex.as_bytes()).into();
    Ok(equal.then_some(stored.tenant))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_shape() {
        let id = "0123456789abcdef";
        let secret = "a".repeat(SECRET_HEX_LEN);
        assert_eq!(split(&format!("ck_{id}_{secret}")), Some((id, secret.as_str())));
        assert_eq!(split(&format!("ck_{id}_{}", &secret[1..])), None);
        assert_eq!(split(&format!("xx_{id}_{secret}")), None);
        assert_eq!(split("ck_"), None);
    }

    #[tokio::test]
    async fn created_keys_verify_and_others_do_not() {
        let store = storage::memory::MemoryStore::default();
        let tenant = TenantId::new("acme").unwrap();
        let key = create(&store, &tenant).await.unwrap();
        assert_eq!(verify(&store, &key).await.unwrap(), Some(tenant));
        let mut forged = key.clone();
        forged.pop();
        forged.push(if key.ends_with('0') { '1' } else { '0' });
        assert_eq!(verify(&store, &forged).await.unwrap(), None);
        assert_eq!(verify(&store, "ck_nope").await.unwrap(), None);
    }
}
