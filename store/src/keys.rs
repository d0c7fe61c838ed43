//! API keys: scopes, hashing, and the key format.
//!
//! A key looks like `rk_<16 hex id>_<48 hex secret>`. Only the SHA-256 of the secret is stored;
//! a presented key is found by its id and its hash compared in constant time.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::KeyId;
use crate::time::Timestamp;

/// What a key may do. Each scope includes the ones below it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// `GET` routes.
    Read,
    /// Create jobs, send messages, cancel, approve.
    Operator,
    /// Job types, keys, runtime reload.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Operator => "operator",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "read" => Ok(Scope::Read),
            "operator" => Ok(Scope::Operator),
            "admin" => Ok(Scope::Admin),
            other => Err(format!(
                "unknown scope `{other}`; expected read, operator or admin"
            )),
        }
    }
}

/// A stored key. The secret is never stored, only its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiKey {
    pub id: KeyId,
    pub name: String,
    pub scope: Scope,
    /// Hex SHA-256 of the secret part.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    #[schema(ignore)]
    pub secret_hash: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// The parts of a presented key.
pub struct ParsedKey<'a> {
    pub short_id: &'a str,
    pub secret: &'a str,
}

/// The short id that appears in a key: the last 16 hex digits of its `KeyId`.
pub fn short_id(id: KeyId) -> String {
    let hex = id.0.simple().to_string();
    hex[16..].to_string()
}

/// Splits `rk_<id>_<secret>`; anything else is not a stored key (it may still be the bootstrap
/// key, which is compared as a whole).
pub fn parse_key(presented: &str) -> Option<ParsedKey<'_>> {
    let rest = presented.strip_prefix("rk_")?;
    let (short_id, secret) = rest.split_once('_')?;
    (short_id.len() == 16 && !secret.is_empty()).then_some(ParsedKey { short_id, secret })
}

pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Compares two digests without an early exit.
pub fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// A new random key: the stored record and the full secret to show once.
pub fn generate(name: &str, scope: Scope) -> (ApiKey, String) {
    use rand::RngCore;
    let id = KeyId::new();
    let mut secret = [0u8; 24];
    rand::rng().fill_bytes(&mut secret);
    let secret = hex::encode(secret);
    let full = format!("rk_{}_{}", short_id(id), secret);
    let key = ApiKey {
        id,
        name: name.to_string(),
        scope,
        secret_hash: hex::encode(hash_secret(&secret)),
        created_at: Timestamp::now(),
        revoked_at: None,
    };
    (key, full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_verify() {
        let (key, full) = generate("ci", Scope::Operator);
        let parsed = parse_key(&full).expect("parses");
        assert_eq!(parsed.short_id, short_id(key.id));
        let stored: [u8; 32] = hex::decode(&key.secret_hash).unwrap().try_into().unwrap();
        assert!(digests_equal(&hash_secret(parsed.secret), &stored));
        assert!(!digests_equal(&hash_secret("wrong"), &stored));
    }

    #[test]
    fn scopes_are_ordered() {
        assert!(Scope::Admin > Scope::Operator && Scope::Operator > Scope::Read);
        assert_eq!("operator".parse::<Scope>().unwrap(), Scope::Operator);
        assert!("root".parse::<Scope>().is_err());
    }
}
