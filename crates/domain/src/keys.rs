//! API keys: how they are read from a request, minted and stored.
//!
//! Keys are long random tokens, so a plain SHA-256 is a sufficient hash for
//! storage (no password stretching needed): a leaked table does not reveal
//! keys, and lookups stay one indexed read.

use base64::Engine;
use sha2::{Digest, Sha256};

/// The prefix of every team key.
pub const TEAM_KEY_PREFIX: &str = "hk_";

/// A key as presented by a client. Wrapped so it is never printed by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(..)")
    }
}

/// Which kind of key the caller presents, judged by its shape only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Team,
    Other,
}

impl ApiKey {
    /// Reads the key from an `Authorization` header value: `Bearer <key>`,
    /// `Token <key>` or the bare key, as the contract allows.
    pub fn from_authorization(header: &str) -> Option<Self> {
        let header = header.trim();
        let key = ["Bearer ", "bearer ", "Token ", "token "]
            .iter()
            .find_map(|scheme| header.strip_prefix(scheme))
            .unwrap_or(header)
            .trim();
        let is_scheme_word = ["bearer", "token"].contains(&key.to_ascii_lowercase().as_str());
        (!key.is_empty() && !key.contains(' ') && !is_scheme_word).then(|| Self(key.to_owned()))
    }

    pub fn new(raw: String) -> Self {
        Self(raw)
    }

    /// A fresh team key: `hk_` and 32 random bytes, base64url.
    pub fn generate_team_key() -> Self {
        let bytes: [u8; 32] = crate::random_bytes();
        Self(format!(
            "{TEAM_KEY_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        ))
    }

    /// A fresh admin key for a new store.
    pub fn generate_admin_key() -> Self {
        let bytes: [u8; 32] = crate::random_bytes();
        Self(format!(
            "hadm_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        ))
    }

    pub fn kind(&self) -> KeyKind {
        if self.0.starts_with(TEAM_KEY_PREFIX) {
            KeyKind::Team
        } else {
            KeyKind::Other
        }
    }

    /// The stored form: hex SHA-256.
    pub fn hash(&self) -> KeyHash {
        KeyHash(hex(&Sha256::digest(self.0.as_bytes())))
    }

    /// The key itself, to show once to whoever created it.
    pub fn reveal(&self) -> &str {
        &self.0
    }
}

/// The SHA-256 of a key, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyHash(String);

impl KeyHash {
    pub fn from_stored(raw: String) -> Self {
        Self(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Compares in time independent of where the hashes differ.
    pub fn matches(&self, other: &KeyHash) -> bool {
        constant_time_eq(&self.0, &other.0)
    }
}

/// Compares two strings in time independent of where they differ
/// (`subtle`; strings of different lengths differ at once).
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// Lower-case hex. Every authenticated request hashes its key, so this
/// writes into one buffer rather than formatting a string per byte.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_hash_is_the_lower_case_hex_sha256_of_the_key() {
        // sha256("abc"), the FIPS 180-2 example.
        assert_eq!(
            hex(&Sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn authorization_header_forms_are_all_accepted() {
        for header in ["Bearer hk_abc", "Token hk_abc", "hk_abc", "  Bearer   hk_abc "] {
            assert_eq!(
                ApiKey::from_authorization(header),
                Some(ApiKey::new("hk_abc".into())),
                "{header}"
            );
        }
        assert_eq!(ApiKey::from_authorization("Bearer "), None);
        assert_eq!(ApiKey::from_authorization("Basic a b"), None);
    }

    #[test]
    fn team_keys_are_recognised_and_hash_stably() {
        let key = ApiKey::generate_team_key();
        assert_eq!(key.kind(), KeyKind::Team);
        assert!(key.hash().matches(&key.hash()));
        assert!(!key.hash().matches(&ApiKey::generate_team_key().hash()));
        assert_eq!(ApiKey::generate_admin_key().kind(), KeyKind::Other);
        assert_eq!(format!("{key:?}"), "ApiKey(..)");
    }
}
