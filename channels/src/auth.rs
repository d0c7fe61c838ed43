//! API keys: who is calling, and with which scope.
//!
//! Stored keys (`rk_<id>_<secret>`) are found by their short id and their secret's SHA-256
//! compared in constant time; only hashes are stored. A bootstrap key from the configuration
//! (`RAUSKU_API_KEY`) is never stored: its hash is kept in memory and compared the same way.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use store::keys::{self, digests_equal, hash_secret, parse_key, short_id};
use store::{ApiKey, KeyId, Scope, Store, StoreError, Timestamp};

/// The caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Stable id for rate limits and idempotency scopes: the key id, or `bootstrap`.
    pub id: String,
    pub name: String,
    pub scope: Scope,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no key with id {0}")]
    NotFound(String),
    #[error("a key name must be 1 to 64 characters")]
    InvalidName,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The keys this gateway accepts. Cheap to clone.
#[derive(Clone)]
pub struct ApiKeys {
    store: Store,
    /// SHA-256 of the bootstrap key, if one is configured.
    bootstrap: Option<[u8; 32]>,
    /// Stored keys by short id (revoked ones included, so they can be listed).
    keys: Arc<RwLock<KeysById>>,
}

/// Stored keys by short id, with the decoded hash of each secret.
type KeysById = HashMap<String, (ApiKey, [u8; 32])>;

impl ApiKeys {
    pub fn load(store: Store, bootstrap: Option<&str>) -> Result<ApiKeys, StoreError> {
        let keys = ApiKeys {
            store,
            bootstrap: bootstrap.map(hash_secret),
            keys: Arc::default(),
        };
        keys.reload()?;
        Ok(keys)
    }

    fn reload(&self) -> Result<(), StoreError> {
        let mut map = HashMap::new();
        for key in self.store.api_keys()? {
            let mut digest = [0u8; 32];
            if hex::decode_to_slice(&key.secret_hash, &mut digest).is_err() {
                tracing::warn!(id = %key.id, "ignoring api key with a malformed hash");
                continue;
            }
            map.insert(short_id(key.id), (key, digest));
        }
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = map;
        Ok(())
    }

    /// Whether any key can authenticate at all (bootstrap or an active stored key).
    pub fn any_active(&self) -> bool {
        self.bootstrap.is_some()
            || self
                .keys
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .any(|(k, _)| k.revoked_at.is_none())
    }

    /// The caller presenting `presented`, if it is a valid, unrevoked key.
    pub fn authenticate(&self, presented: &str) -> Option<Principal> {
        let digest = hash_secret(presented);
        if let Some(boot) = &self.bootstrap
            && digests_equal(&digest, boot)
        {
            return Some(Principal {
                id: "bootstrap".into(),
                name: "bootstrap".into(),
                scope: Scope::Admin,
            });
        }
        let parsed = parse_key(presented)?;
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let (key, stored) = keys.get(parsed.short_id)?;
        let ok = digests_equal(&hash_secret(parsed.secret), stored);
        (ok && key.revoked_at.is_none()).then(|| Principal {
            id: key.id.to_string(),
            name: key.name.clone(),
            scope: key.scope,
        })
    }

    /// Creates a key; the returned string is the only copy of the secret.
    pub fn create(&self, name: &str, scope: Scope) -> Result<(ApiKey, String), AuthError> {
        if name.is_empty() || name.chars().count() > 64 {
            return Err(AuthError::InvalidName);
        }
        let (key, full) = keys::generate(name, scope);
        self.store.put_api_key(&key)?;
        self.reload()?;
        Ok((key, full))
    }

    /// Stored keys, oldest first, without their hashes.
    pub fn list(&self) -> Vec<ApiKey> {
        let mut out: Vec<ApiKey> = self
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|(k, _)| ApiKey {
                secret_hash: String::new(),
                ..k.clone()
            })
            .collect();
        out.sort_by_key(|k| k.id);
        out
    }

    /// Revokes a key by its id (full UUID or the 16-hex short id).
    pub fn revoke(&self, id: &str) -> Result<ApiKey, AuthError> {
        let found = {
            let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
            keys.values()
                .find(|(k, _)| k.id.to_string() == id || short_id(k.id) == id)
                .map(|(k, _)| k.clone())
        };
        let mut key = found.ok_or_else(|| AuthError::NotFound(id.to_string()))?;
        if key.revoked_at.is_none() {
            key.revoked_at = Some(Timestamp::now());
            self.store.put_api_key(&key)?;
            self.reload()?;
        }
        Ok(ApiKey {
            secret_hash: String::new(),
            ..key
        })
    }

    pub fn get(&self, id: KeyId) -> Option<ApiKey> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&short_id(id))
            .map(|(k, _)| k.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(store::StoreConfig::new(dir.path())).unwrap();
        (dir, store)
    }

    #[test]
    fn bootstrap_key_is_admin() {
        let (_d, store) = store();
        let keys = ApiKeys::load(store, Some("s3cret-bootstrap")).unwrap();
        assert_eq!(
            keys.authenticate("s3cret-bootstrap").unwrap().scope,
            Scope::Admin
        );
        assert!(keys.authenticate("s3cret-bootstrap ").is_none());
        assert!(keys.authenticate("").is_none());
    }

    #[test]
    fn stored_keys_authenticate_until_revoked_and_survive_reload() {
        let (_d, store) = store();
        let keys = ApiKeys::load(store.clone(), None).unwrap();
        assert!(!keys.any_active());
        let (key, secret) = keys.create("ci", Scope::Operator).unwrap();
        let who = keys.authenticate(&secret).unwrap();
        assert_eq!((who.scope, who.name.as_str()), (Scope::Operator, "ci"));
        // A wrong secret with the right id is refused.
        let forged = format!("{}x", &secret[..secret.len() - 1]);
        assert!(keys.authenticate(&forged).is_none());
        // Another instance over the same store sees it; only the hash is stored.
        let again = ApiKeys::load(store.clone(), None).unwrap();
        assert!(again.authenticate(&secret).is_some());
        assert!(
            store
                .api_keys()
                .unwrap()
                .iter()
                .all(|k| !k.secret_hash.contains(&secret[20..]))
        );
        keys.revoke(&short_id(key.id)).unwrap();
        assert!(keys.authenticate(&secret).is_none());
        assert!(keys.list()[0].revoked_at.is_some());
        assert!(matches!(keys.revoke("nope"), Err(AuthError::NotFound(_))));
    }
}
