//! `X-Hub-Signature-256` verification: HMAC-SHA256 of the raw body under the webhook secret,
//! compared in constant time.
//!
//! Only `sha256=<64 hex digits>` is accepted. GitHub also sends the legacy SHA-1 signature
//! (`X-Hub-Signature: sha1=…`); a delivery signed only that way is refused, since SHA-1 HMACs
//! are not what this channel trusts.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The header GitHub signs deliveries with.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// The legacy SHA-1 signature header (never trusted; only used to word the refusal).
pub const LEGACY_SIGNATURE_HEADER: &str = "x-hub-signature";

/// Hex digits in a SHA-256 signature.
const SHA256_HEX_LEN: usize = 64;

/// Why a delivery's signature was refused. Every message says what to check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "the X-Hub-Signature-256 header is missing; set a secret on the GitHub webhook (the same \
         value as RAUSKU_GITHUB_WEBHOOK_SECRET) so GitHub signs its deliveries"
    )]
    Missing,
    #[error(
        "only a SHA-1 signature (`sha1=…`) was sent; SHA-1 signatures are not accepted, send \
         X-Hub-Signature-256: sha256=<hex> (GitHub does when the webhook has a secret)"
    )]
    Sha1Only,
    #[error(
        "X-Hub-Signature-256 must look like `sha256=<64 hex digits>`; got a value starting \
         with {prefix:?}"
    )]
    Malformed {
        /// The first few characters of the header, to tell a wrong algorithm or a stray prefix.
        prefix: String,
    },
    #[error(
        "X-Hub-Signature-256 has {len} hex digits after `sha256=`, not 64; the header was cut \
         short or altered on the way"
    )]
    WrongLength { len: usize },
    #[error(
        "X-Hub-Signature-256 does not match the body; check that the webhook's secret equals \
         RAUSKU_GITHUB_WEBHOOK_SECRET and that nothing in between rewrites the body"
    )]
    Mismatch,
}

/// Checks `header` (the value of `X-Hub-Signature-256`, or of the legacy `X-Hub-Signature` if
/// that is all there is) against `body` signed with `secret`.
pub fn verify(secret: &[u8], header: Option<&str>, body: &[u8]) -> Result<(), SignatureError> {
    let header = header.map(str::trim).filter(|h| !h.is_empty());
    let Some(header) = header else {
        return Err(SignatureError::Missing);
    };
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        if header.starts_with("sha1=") {
            return Err(SignatureError::Sha1Only);
        }
        return Err(SignatureError::Malformed {
            prefix: header.chars().take(10).collect(),
        });
    };
    if hex_sig.len() != SHA256_HEX_LEN {
        return Err(SignatureError::WrongLength { len: hex_sig.len() });
    }
    let expected = hex::decode(hex_sig).map_err(|_| SignatureError::Malformed {
        prefix: header.chars().take(10).collect(),
    })?;
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    // Constant-time comparison.
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// `sha256=<hex>` of `body` under `secret`: what GitHub sends (for tests and tools).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's documented test vector.
    const SECRET: &[u8] = b"It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const SIGNATURE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn githubs_test_vector_verifies() {
        assert_eq!(verify(SECRET, Some(SIGNATURE), BODY), Ok(()));
        assert_eq!(sign(SECRET, BODY), SIGNATURE);
        // Hex digits in upper case are the same signature.
        let upper = format!("sha256={}", SIGNATURE[7..].to_ascii_uppercase());
        assert_eq!(verify(SECRET, Some(&upper), BODY), Ok(()));
    }

    #[test]
    fn missing_or_empty_is_missing() {
        assert_eq!(verify(SECRET, None, BODY), Err(SignatureError::Missing));
        assert_eq!(verify(SECRET, Some(""), BODY), Err(SignatureError::Missing));
        assert_eq!(
            verify(SECRET, Some("  "), BODY),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn sha1_only_is_refused_by_name() {
        let err = verify(
            SECRET,
            Some("sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59"),
            BODY,
        )
        .unwrap_err();
        assert_eq!(err, SignatureError::Sha1Only);
        assert!(err.to_string().contains("SHA-1"), "{err}");
    }

    #[test]
    fn malformed_values() {
        for value in [
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "sha512=abc",
            "SHA256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "Bearer x",
        ] {
            match verify(SECRET, Some(value), BODY) {
                Err(SignatureError::Malformed { .. }) => {}
                other => panic!("{value}: {other:?}"),
            }
        }
        // The right length but not hex.
        let not_hex = format!("sha256={}", "zz".repeat(32));
        assert!(matches!(
            verify(SECRET, Some(&not_hex), BODY),
            Err(SignatureError::Malformed { .. })
        ));
    }

    #[test]
    fn truncated_or_padded_is_wrong_length() {
        let truncated = &SIGNATURE[..SIGNATURE.len() - 2];
        assert_eq!(
            verify(SECRET, Some(truncated), BODY),
            Err(SignatureError::WrongLength { len: 62 })
        );
        assert_eq!(
            verify(SECRET, Some("sha256="), BODY),
            Err(SignatureError::WrongLength { len: 0 })
        );
        let padded = format!("{SIGNATURE}00");
        assert_eq!(
            verify(SECRET, Some(&padded), BODY),
            Err(SignatureError::WrongLength { len: 66 })
        );
    }

    #[test]
    fn wrong_secret_body_or_digest_is_a_mismatch() {
        assert_eq!(
            verify(b"another secret", Some(SIGNATURE), BODY),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, Some(SIGNATURE), b"Hello, World?"),
            Err(SignatureError::Mismatch)
        );
        // One bit flipped in the digest.
        let mut flipped = SIGNATURE.to_string();
        flipped.replace_range(SIGNATURE.len() - 1.., "6");
        assert_eq!(
            verify(SECRET, Some(&flipped), BODY),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn messages_say_what_to_fix() {
        assert!(
            SignatureError::Missing
                .to_string()
                .contains("RAUSKU_GITHUB_WEBHOOK_SECRET")
        );
        assert!(SignatureError::Mismatch.to_string().contains("secret"));
        assert!(
            SignatureError::WrongLength { len: 3 }
                .to_string()
                .contains("not 64")
        );
    }
}
