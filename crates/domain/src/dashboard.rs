//! The dashboard's credentials: one-time sign-in links and sessions.
//!
//! Both are long random tokens that travel to a person (in a link, then in a
//! cookie) and are stored only as SHA-256 hashes, like API keys: a copy of the
//! database opens no session. The CSRF token of a session is derived from the
//! session token itself, so it needs no storage, and a page can only know it
//! if it was served to the holder of the session cookie.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::keys::{ApiKey, KeyHash};

/// How long a sign-in link works, unless configured otherwise.
pub const LINK_TTL_MS: i64 = 15 * 60 * 1000;
/// How long a dashboard session lasts after sign-in.
pub const SESSION_TTL_MS: i64 = 12 * 60 * 60 * 1000;

/// A secret token: a sign-in link's or a session's. Its `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// 32 random bytes, base64url: safe in a URL and in a cookie.
    pub fn generate() -> Self {
        let bytes: [u8; 32] = crate::random_bytes();
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// A token presented by a browser. Anything not shaped like ours is
    /// refused before it reaches the store.
    pub fn parse(raw: &str) -> Option<Self> {
        let ok =
            (32..=128).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self(raw.to_owned()))
    }

    /// The stored form: hex SHA-256, as for API keys.
    pub fn hash(&self) -> KeyHash {
        ApiKey::new(self.0.clone()).hash()
    }

    /// The value itself, for the link or the cookie.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// The CSRF token of the session this token opens: a hash of the session
    /// token under a fixed label, so it differs from the stored hash.
    pub fn csrf_token(&self) -> String {
        let mut digest = Sha256::new();
        digest.update(b"herald-dashboard-csrf\0");
        digest.update(self.0.as_bytes());
        URL_SAFE_NO_PAD.encode(digest.finalize())
    }
}

/// The absolute sign-in URL for a link token, under the public URL.
pub fn sign_in_url(public_url: &str, token: &Token) -> String {
    format!("{}/sign-in?token={}", public_url.trim_end_matches('/'), token.reveal())
}

/// A settings value for the public URL: absolute `http` or `https`, with a
/// host and no query or fragment. Returned without a trailing slash.
pub fn check_public_url(raw: &str) -> Result<String, &'static str> {
    let url = url::Url::parse(raw).map_err(|_| "is not an absolute URL like https://herald.example.com")?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must start with http:// or https://");
    }
    if url.host().is_none() {
        return Err("must name a host");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment");
    }
    Ok(raw.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_hash_stably() {
        let token = Token::generate();
        assert_eq!(Token::parse(token.reveal()), Some(token.clone()));
        assert!(token.hash().matches(&token.hash()));
        assert_ne!(token.hash().as_str(), token.reveal());
        assert_ne!(token.csrf_token(), Token::generate().csrf_token());
        assert_eq!(format!("{token:?}"), "Token(..)");
    }

    #[test]
    fn foreign_tokens_are_refused() {
        for raw in ["", "short", &"a".repeat(129), &format!("{}<", "a".repeat(40))] {
            assert_eq!(Token::parse(raw), None, "{raw}");
        }
    }

    #[test]
    fn sign_in_urls_sit_under_the_public_url() {
        let token = Token::generate();
        assert_eq!(
            sign_in_url("https://h.example.com/", &token),
            format!("https://h.example.com/sign-in?token={}", token.reveal())
        );
    }

    #[test]
    fn public_urls_are_checked() {
        assert_eq!(
            check_public_url("https://h.example.com/").unwrap(),
            "https://h.example.com"
        );
        assert_eq!(
            check_public_url("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert!(check_public_url("ftp://h").is_err());
        assert!(check_public_url("h.example.com").is_err());
        assert!(check_public_url("https://h.example.com/?a=1").is_err());
    }

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        use crate::keys::constant_time_eq;
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
    }
}
