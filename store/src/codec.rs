//! The value format of every stored record:
//! `[version: u8][crc32 of payload: u32 BE][payload: JSON]`.
//!
//! A record whose version is unknown or whose checksum does not match is reported as
//! [`StoreError::Corrupt`] naming the tree and key, never a panic.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::StoreError;

/// The current format version. Bump it (and keep a decoder for the old one) when the
/// encoding changes, not when a struct gains an optional field.
pub const FORMAT_VERSION: u8 = 1;
const HEADER: usize = 5;

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION, 0, 0, 0, 0];
    // Serialising our own model types to JSON cannot fail: no maps with non-string keys.
    serde_json::to_writer(&mut out, value).expect("model types serialise to JSON");
    let crc = crc32fast::hash(&out[HEADER..]);
    out[1..HEADER].copy_from_slice(&crc.to_be_bytes());
    out
}

pub fn decode<T: DeserializeOwned>(tree: &str, key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        tree: tree.to_string(),
        key: describe_key(key),
        reason,
    };
    if bytes.len() < HEADER {
        return Err(corrupt(format!(
            "record is {} bytes, shorter than its header",
            bytes.len()
        )));
    }
    if bytes[0] != FORMAT_VERSION {
        return Err(corrupt(format!(
            "format version {} is not supported (this build reads {FORMAT_VERSION})",
            bytes[0]
        )));
    }
    let stored = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let payload = &bytes[HEADER..];
    if crc32fast::hash(payload) != stored {
        return Err(corrupt("checksum mismatch".to_string()));
    }
    serde_json::from_slice(payload).map_err(|e| corrupt(format!("undecodable payload: {e}")))
}

/// Keys in error messages: printable ASCII as text, anything else as hex.
pub(crate) fn describe_key(key: &[u8]) -> String {
    if key.iter().all(|b| b.is_ascii_graphic()) {
        String::from_utf8_lossy(key).into_owned()
    } else {
        format!("0x{}", hex::encode(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let bytes = encode(&serde_json::json!({"a": 1}));
        let v: serde_json::Value = decode("t", b"k", &bytes).unwrap();
        assert_eq!(v["a"], 1);
    }

    #[test]
    fn corruption_names_tree_and_key() {
        let mut bytes = encode(&serde_json::json!({"a": 1}));
        let last = bytes.len() - 2;
        bytes[last] ^= 0x01;
        let err = decode::<serde_json::Value>("jobs", b"job-1", &bytes).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("jobs") && msg.contains("job-1") && msg.contains("checksum"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_version_and_short_records_are_errors() {
        let mut bytes = encode(&1u32);
        bytes[0] = 9;
        assert!(
            decode::<u32>("t", &[0xff], &bytes)
                .unwrap_err()
                .to_string()
                .contains("version 9")
        );
        assert!(
            decode::<u32>("t", &[0xff], &[1, 2])
                .unwrap_err()
                .to_string()
                .contains("0xff")
        );
    }
}
