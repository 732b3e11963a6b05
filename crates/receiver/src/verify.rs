//! Standard Webhooks verification: is this request from Herald, unchanged,
//! and recent?
//!
//! A delivery carries `webhook-id`, `webhook-timestamp` (Unix seconds) and
//! `webhook-signature`: one or more space-separated `v1,<base64>` values, each
//! an HMAC-SHA256 of `id.timestamp.body` keyed with the bytes after `whsec_`.
//! During a secret rotation Herald sends two (new first); one match with any
//! secret the [`Verifier`] holds is enough. The timestamp check bounds how
//! long a captured request can be replayed; the de-duplication of legitimate
//! retries is [`crate::Deduplicator`]'s job, not this one's.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;

/// The header holding the event id, the same on every attempt.
pub const WEBHOOK_ID: &str = "webhook-id";
/// The header holding the attempt's time in Unix seconds.
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// The header holding the space-separated `v1,<base64>` signatures.
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// How far a `webhook-timestamp` may be from the receiver's clock, either
/// way, by default: the Standard Webhooks recommendation.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

const SECRET_PREFIX: &str = "whsec_";

/// Standard base64 that accepts a missing or present padding, as the
/// reference libraries do (Python's appends `==` before decoding).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a secret was refused when building a [`Verifier`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The part after `whsec_` is not base64.
    #[error("the secret is not `whsec_` followed by base64")]
    NotBase64,
    /// The secret decodes to no bytes.
    #[error("the secret is empty")]
    Empty,
    /// A verifier was asked for with no secret at all.
    #[error("a verifier needs at least one secret")]
    NoSecret,
}

/// Why a request was not accepted as a genuine, recent delivery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// One of the three Standard Webhooks headers is absent or empty.
    #[error("the {0} header is missing")]
    MissingHeader(&'static str),
    /// A header is present but not visible ASCII text.
    #[error("the {0} header is not valid text")]
    InvalidHeader(&'static str),
    /// `webhook-timestamp` is not a whole number of Unix seconds.
    #[error("the webhook-timestamp header is not a Unix time in seconds")]
    InvalidTimestamp,
    /// The attempt was signed longer ago than the tolerance: a replay, or a
    /// clock far behind.
    #[error("the webhook-timestamp is too old")]
    TooOld,
    /// The attempt claims to come from further in the future than the
    /// tolerance: a clock far ahead.
    #[error("the webhook-timestamp is too far in the future")]
    TooNew,
    /// No `v1` signature in the header matches any of the secrets: a wrong
    /// secret, a changed body, id or timestamp, or not Herald at all.
    #[error("no signature matches")]
    NoMatchingSignature,
}

impl VerifyError {
    /// Whether the request is malformed (answer 400) rather than unsigned,
    /// stale or forged (answer 401).
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            Self::MissingHeader(_) | Self::InvalidHeader(_) | Self::InvalidTimestamp
        )
    }
}

/// One endpoint secret, ready to verify with. Its `Debug` hides the value.
#[derive(Clone)]
pub struct Secret {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl FromStr for Secret {
    type Err = SecretError;

    /// Reads `whsec_<base64>`, as Herald shows it. The prefix may be left
    /// out, as every Standard Webhooks library allows.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let encoded = raw.trim();
        let encoded = encoded.strip_prefix(SECRET_PREFIX).unwrap_or(encoded);
        let key = BASE64.decode(encoded).map_err(|_| SecretError::NotBase64)?;
        if key.is_empty() {
            return Err(SecretError::Empty);
        }
        let mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| SecretError::Empty)?;
        Ok(Self { mac })
    }
}

impl Secret {
    /// The MAC state after `id.timestamp.body`, to finish once per candidate.
    fn mac_of(&self, id: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `v1,<base64>` signature Herald would send for this attempt. For
    /// tests of a receiver: sign a body of your own and post it to yourself.
    pub fn sign(&self, id: &str, timestamp_s: u64, body: &[u8]) -> String {
        let mac = self.mac_of(id, &timestamp_s.to_string(), body);
        format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
    }
}

/// What a successful verification vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The `webhook-id`: Herald's event id, the same on every attempt and
    /// every redelivery of the event. De-duplicate by it.
    pub id: String,
    /// When this attempt was signed.
    pub timestamp: SystemTime,
}

/// Checks deliveries against one or more secrets. Cheap to clone (the
/// secrets are shared), so it can live in an axum state.
#[derive(Debug, Clone)]
pub struct Verifier {
    secrets: Arc<[Secret]>,
    tolerance: Duration,
}

impl Verifier {
    /// A verifier for one endpoint secret (`whsec_…`).
    pub fn new(secret: &str) -> Result<Self, SecretError> {
        Self::with_secrets([secret])
    }

    /// A verifier that accepts a signature made with any of `secrets`: keep
    /// the old and the new secret side by side while you roll a rotation out.
    pub fn with_secrets<I, S>(secrets: I) -> Result<Self, SecretError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let secrets = secrets
            .into_iter()
            .map(|s| s.as_ref().parse::<Secret>())
            .collect::<Result<Vec<_>, _>>()?;
        if secrets.is_empty() {
            return Err(SecretError::NoSecret);
        }
        Ok(Self {
            secrets: secrets.into(),
            tolerance: DEFAULT_TOLERANCE,
        })
    }

    /// Sets how far the `webhook-timestamp` may be from the clock, either way.
    pub fn with_tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// The timestamp tolerance in force.
    pub fn tolerance(&self) -> Duration {
        self.tolerance
    }

    /// Verifies a request by its headers and its body bytes, exactly as
    /// received (before any JSON parsing), against the system clock.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<Verified, VerifyError> {
        self.verify_at(headers, body, SystemTime::now())
    }

    /// [`Verifier::verify`] as if the clock read `now`.
    pub fn verify_at(&self, headers: &HeaderMap, body: &[u8], now: SystemTime) -> Result<Verified, VerifyError> {
        let header = |name: &'static str| match headers.get(name) {
            None => Err(VerifyError::MissingHeader(name)),
            Some(value) => value.to_str().map_err(|_| VerifyError::InvalidHeader(name)),
        };
        self.verify_parts(
            header(WEBHOOK_ID)?,
            header(WEBHOOK_TIMESTAMP)?,
            header(WEBHOOK_SIGNATURE)?,
            body,
            now,
        )
    }

    /// Verifies the three header values and the body, for frameworks
    /// without `http` header maps. `now` is the receiver's clock.
    pub fn verify_parts(
        &self,
        id: &str,
        timestamp: &str,
        signatures: &str,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Verified, VerifyError> {
        let (id, timestamp, signatures) = (id.trim(), timestamp.trim(), signatures.trim());
        for (name, value) in [
            (WEBHOOK_ID, id),
            (WEBHOOK_TIMESTAMP, timestamp),
            (WEBHOOK_SIGNATURE, signatures),
        ] {
            if value.is_empty() {
                return Err(VerifyError::MissingHeader(name));
            }
        }
        let signed_at = self.check_timestamp(timestamp, now)?;
        let macs: Vec<Hmac<Sha256>> = self
            .secrets
            .iter()
            .map(|secret| secret.mac_of(id, timestamp, body))
            .collect();
        let matched = signatures
            .split_ascii_whitespace()
            .filter_map(|versioned| versioned.split_once(','))
            .filter(|(version, _)| *version == "v1")
            .filter_map(|(_, encoded)| BASE64.decode(encoded).ok())
            // `verify_slice` compares in constant time.
            .any(|candidate| macs.iter().any(|mac| mac.clone().verify_slice(&candidate).is_ok()));
        if !matched {
            return Err(VerifyError::NoMatchingSignature);
        }
        Ok(Verified {
            id: id.to_owned(),
            timestamp: signed_at,
        })
    }

    fn check_timestamp(&self, timestamp: &str, now: SystemTime) -> Result<SystemTime, VerifyError> {
        if !timestamp.bytes().all(|b| b.is_ascii_digit()) {
            return Err(VerifyError::InvalidTimestamp);
        }
        let signed_at = timestamp
            .parse::<u64>()
            .ok()
            .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s)))
            .ok_or(VerifyError::InvalidTimestamp)?;
        match now.duration_since(signed_at) {
            Ok(age) if age > self.tolerance => Err(VerifyError::TooOld),
            Err(ahead) if ahead.duration() > self.tolerance => Err(VerifyError::TooNew),
            _ => Ok(signed_at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use http::HeaderValue;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const OTHER: &str = "whsec_dGhlIG90aGVyIHNlY3JldCwgMzIgYnl0ZXMgbG9uZyE=";
    const ID: &str = "evt_0192d3f4a1b27c3e8d9f0a1b2c3d4e5f";
    const BODY: &[u8] = br#"{"id":"evt_0192d3f4a1b27c3e8d9f0a1b2c3d4e5f","eventType":"meeting.completed","createdAt":1765198584697,"data":{}}"#;

    /// The Standard Webhooks signature, computed here with `hmac` directly,
    /// independently of `Secret::sign`.
    fn expected(secret: &str, id: &str, timestamp: u64, body: &[u8]) -> String {
        let key = STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    fn at(unix_s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(unix_s)
    }

    fn headers(id: &str, timestamp: &str, signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(WEBHOOK_ID, HeaderValue::from_str(id).unwrap());
        headers.insert(WEBHOOK_TIMESTAMP, HeaderValue::from_str(timestamp).unwrap());
        headers.insert(WEBHOOK_SIGNATURE, HeaderValue::from_str(signature).unwrap());
        headers
    }

    const NOW: u64 = 1_765_198_584;

    #[test]
    fn the_standard_webhooks_published_example_verifies() {
        let verifier = Verifier::new(SECRET).unwrap();
        let signature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        let body = br#"{"test": 2432232314}"#;
        let verified = verifier
            .verify_parts(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                "1614265330",
                signature,
                body,
                at(1_614_265_330),
            )
            .unwrap();
        assert_eq!(verified.id, "msg_p5jXN8AQM9LWM0D4loKWxJek");
        assert_eq!(verified.timestamp, at(1_614_265_330));
        let secret: Secret = SECRET.parse().unwrap();
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body),
            signature
        );
    }

    #[test]
    fn a_delivery_signed_with_the_secret_verifies_from_headers() {
        let signature = expected(SECRET, ID, NOW, BODY);
        let verifier = Verifier::new(SECRET).unwrap();
        let verified = verifier
            .verify_at(&headers(ID, &NOW.to_string(), &signature), BODY, at(NOW + 2))
            .unwrap();
        assert_eq!(verified.id, ID);
    }

    #[test]
    fn any_one_of_several_signatures_may_match_any_secret() {
        let new = expected(OTHER, ID, NOW, BODY);
        let old = expected(SECRET, ID, NOW, BODY);
        let both = format!("{new} {old}");
        let ts = NOW.to_string();
        for secret in [SECRET, OTHER] {
            let verifier = Verifier::new(secret).unwrap();
            assert!(verifier.verify_parts(ID, &ts, &both, BODY, at(NOW)).is_ok(), "{secret}");
        }
        let verifier = Verifier::with_secrets([SECRET, OTHER]).unwrap();
        assert!(verifier.verify_parts(ID, &ts, &new, BODY, at(NOW)).is_ok());
        assert!(verifier.verify_parts(ID, &ts, &old, BODY, at(NOW)).is_ok());
    }

    #[test]
    fn other_versions_and_garbage_signatures_are_skipped() {
        let good = expected(SECRET, ID, NOW, BODY);
        let header = format!("v1a,{} v2,abc nonsense v1,!!! {good}", &good[3..]);
        let verifier = Verifier::new(SECRET).unwrap();
        assert!(
            verifier
                .verify_parts(ID, &NOW.to_string(), &header, BODY, at(NOW))
                .is_ok()
        );
        let only_other_versions = format!("v2,{}", &good[3..]);
        assert_eq!(
            verifier.verify_parts(ID, &NOW.to_string(), &only_other_versions, BODY, at(NOW)),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn a_tampered_body_id_or_timestamp_is_refused() {
        let signature = expected(SECRET, ID, NOW, BODY);
        let verifier = Verifier::new(SECRET).unwrap();
        let ts = NOW.to_string();
        let mut tampered = BODY.to_vec();
        tampered[10] ^= 1;
        assert_eq!(
            verifier.verify_parts(ID, &ts, &signature, &tampered, at(NOW)),
            Err(VerifyError::NoMatchingSignature)
        );
        assert_eq!(
            verifier.verify_parts("evt_other", &ts, &signature, BODY, at(NOW)),
            Err(VerifyError::NoMatchingSignature)
        );
        assert_eq!(
            verifier.verify_parts(ID, &(NOW + 1).to_string(), &signature, BODY, at(NOW)),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn a_wrong_secret_is_refused() {
        let signature = expected(OTHER, ID, NOW, BODY);
        let verifier = Verifier::new(SECRET).unwrap();
        assert_eq!(
            verifier.verify_parts(ID, &NOW.to_string(), &signature, BODY, at(NOW)),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn timestamps_outside_the_tolerance_are_refused_either_way() {
        let signature = expected(SECRET, ID, NOW, BODY);
        let ts = NOW.to_string();
        let verifier = Verifier::new(SECRET).unwrap();
        assert!(verifier.verify_parts(ID, &ts, &signature, BODY, at(NOW + 300)).is_ok());
        assert!(verifier.verify_parts(ID, &ts, &signature, BODY, at(NOW - 300)).is_ok());
        assert_eq!(
            verifier.verify_parts(ID, &ts, &signature, BODY, at(NOW + 301)),
            Err(VerifyError::TooOld)
        );
        assert_eq!(
            verifier.verify_parts(ID, &ts, &signature, BODY, at(NOW - 301)),
            Err(VerifyError::TooNew)
        );
        let strict = verifier.with_tolerance(Duration::from_secs(10));
        assert_eq!(
            strict.verify_parts(ID, &ts, &signature, BODY, at(NOW + 11)),
            Err(VerifyError::TooOld)
        );
    }

    #[test]
    fn the_timestamp_is_checked_before_the_signature() {
        // A stale replay is reported as stale even with a valid signature,
        // and a forged one as stale without spending an HMAC on it.
        let verifier = Verifier::new(SECRET).unwrap();
        assert_eq!(
            verifier.verify_parts(ID, "1000", "v1,AAAA", BODY, at(NOW)),
            Err(VerifyError::TooOld)
        );
    }

    #[test]
    fn missing_and_malformed_headers_are_named() {
        let verifier = Verifier::new(SECRET).unwrap();
        let signature = expected(SECRET, ID, NOW, BODY);
        let mut h = headers(ID, &NOW.to_string(), &signature);
        h.remove(WEBHOOK_SIGNATURE);
        assert_eq!(
            verifier.verify_at(&h, BODY, at(NOW)),
            Err(VerifyError::MissingHeader(WEBHOOK_SIGNATURE))
        );
        let mut h = headers(ID, &NOW.to_string(), &signature);
        h.insert(WEBHOOK_ID, HeaderValue::from_bytes(b"evt_\xff").unwrap());
        assert_eq!(
            verifier.verify_at(&h, BODY, at(NOW)),
            Err(VerifyError::InvalidHeader(WEBHOOK_ID))
        );
        assert_eq!(
            verifier.verify_parts(" ", "1", &signature, BODY, at(NOW)),
            Err(VerifyError::MissingHeader(WEBHOOK_ID))
        );
        for ts in ["-5", "1.5", "12e3", "99999999999999999999999", "soon"] {
            assert_eq!(
                verifier.verify_parts(ID, ts, &signature, BODY, at(NOW)),
                Err(VerifyError::InvalidTimestamp),
                "{ts}"
            );
        }
        assert!(VerifyError::InvalidTimestamp.is_malformed());
        assert!(!VerifyError::NoMatchingSignature.is_malformed());
    }

    #[test]
    fn secrets_are_read_with_or_without_prefix_and_padding() {
        let unpadded = OTHER.trim_end_matches('=');
        let signature = expected(OTHER, ID, NOW, BODY);
        for raw in [OTHER, unpadded, &OTHER["whsec_".len()..]] {
            let verifier = Verifier::new(raw).unwrap();
            assert!(
                verifier
                    .verify_parts(ID, &NOW.to_string(), &signature, BODY, at(NOW))
                    .is_ok()
            );
        }
        assert_eq!(Verifier::new("whsec_not base64!").unwrap_err(), SecretError::NotBase64);
        assert_eq!(Verifier::new("whsec_").unwrap_err(), SecretError::Empty);
        assert_eq!(
            Verifier::with_secrets(Vec::<String>::new()).unwrap_err(),
            SecretError::NoSecret
        );
        assert_eq!(format!("{:?}", SECRET.parse::<Secret>().unwrap()), "Secret(..)");
        assert!(!format!("{:?}", Verifier::new(SECRET).unwrap()).contains("MfKQ"));
    }

    #[test]
    fn unpadded_signatures_verify_too() {
        let signature = expected(SECRET, ID, NOW, BODY);
        let unpadded = signature.trim_end_matches('=');
        let verifier = Verifier::new(SECRET).unwrap();
        assert!(
            verifier
                .verify_parts(ID, &NOW.to_string(), unpadded, BODY, at(NOW))
                .is_ok()
        );
    }
}
