//! Standard Webhooks signing: `v1,` + base64 HMAC-SHA256 of `id.timestamp.body`
//! keyed with the bytes of the endpoint secret after `whsec_`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const SECRET_PREFIX: &str = "whsec_";

/// The Standard Webhooks headers every delivery carries, beside
/// `content-type: application/json` ([`CONTENT_TYPE`]).
pub const WEBHOOK_ID: &str = "webhook-id";
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";
/// The content type of every delivered body.
pub const CONTENT_TYPE: &str = "application/json";

/// An endpoint's signing secret, `whsec_` + base64 of 32 random bytes.
/// Its `Debug` hides the value so it cannot land in a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    pub fn generate() -> Self {
        let bytes: [u8; 32] = crate::random_bytes();
        Self(format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes)))
    }

    /// Accepts a stored or given secret; `None` if it is not `whsec_` + base64.
    pub fn parse(raw: &str) -> Option<Self> {
        let key = STANDARD.decode(raw.strip_prefix(SECRET_PREFIX)?).ok()?;
        (!key.is_empty()).then(|| Self(raw.to_owned()))
    }

    /// The secret as text, for the owner of the endpoint.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// The HMAC key: the bytes after `whsec_`, base64-decoded.
    pub fn key(&self) -> Vec<u8> {
        // `parse` and `generate` only ever build valid base64.
        STANDARD.decode(&self.0[SECRET_PREFIX.len()..]).unwrap_or_default()
    }
}

/// The secret a webhook had before its last rotation (contract §4.2): until
/// `expires_at_ms` every delivery carries a signature with it too, after the
/// one with the current secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousSecret {
    pub secret: Secret,
    pub expires_at_ms: i64,
}

impl PreviousSecret {
    /// Whether a delivery signed at `now_ms` is still signed with it.
    pub fn in_grace(&self, now_ms: i64) -> bool {
        now_ms < self.expires_at_ms
    }
}

/// Whether a rotation with a grace of `grace_s` may replace the current
/// secret at `now_ms`. One previous secret is kept, so while one is still in
/// its grace only a rotation with no grace (which drops every old secret at
/// once, as after a leak) may go ahead; `Err` says until when it signs.
pub fn may_rotate(previous: Option<&PreviousSecret>, grace_s: i64, now_ms: i64) -> Result<(), i64> {
    match previous.filter(|p| p.in_grace(now_ms)) {
        Some(previous) if grace_s > 0 => Err(previous.expires_at_ms),
        _ => Ok(()),
    }
}

/// How long a rotated-out secret keeps signing unless the rotation says.
pub const DEFAULT_ROTATION_GRACE_S: i64 = 86_400;
/// The longest grace a rotation may give: 7 days.
pub const MAX_ROTATION_GRACE_S: i64 = 604_800;

/// A prepared HMAC key, so the hot path does not decode base64 per attempt.
#[derive(Clone)]
pub struct Signer {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    pub fn new(secret: &Secret) -> Self {
        let mac = Hmac::<Sha256>::new_from_slice(&secret.key()).expect("HMAC-SHA256 accepts keys of any length");
        Self { mac }
    }

    /// The `webhook-signature` header value for one attempt.
    pub fn sign(&self, id: &str, timestamp_s: i64, body: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp_s.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matches_the_standard_webhooks_published_example() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = Signer::new(&secret).sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_rotation_within_a_grace_needs_no_grace_of_its_own() {
        let previous = PreviousSecret {
            secret: Secret::generate(),
            expires_at_ms: 1_000,
        };
        assert_eq!(may_rotate(Some(&previous), 3_600, 999), Err(1_000));
        assert_eq!(may_rotate(Some(&previous), 0, 999), Ok(()));
        assert_eq!(may_rotate(Some(&previous), 3_600, 1_000), Ok(()));
        assert_eq!(may_rotate(None, 3_600, 0), Ok(()));
    }

    #[test]
    fn secrets_are_refused_without_prefix_or_base64() {
        assert!(Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_none());
        assert!(Secret::parse("whsec_not base64!").is_none());
        assert_eq!(format!("{:?}", Secret::generate()), "Secret(..)");
    }

    proptest! {
        #[test]
        fn signatures_verify_with_the_same_secret_only(body in proptest::collection::vec(any::<u8>(), 0..256), ts in 0i64..4_000_000_000) {
            let secret = Secret::generate();
            let round_tripped = Secret::parse(secret.reveal()).unwrap();
            let a = Signer::new(&secret).sign("evt_1", ts, &body);
            prop_assert_eq!(&a, &Signer::new(&round_tripped).sign("evt_1", ts, &body));
            prop_assert_ne!(&a, &Signer::new(&Secret::generate()).sign("evt_1", ts, &body));
            prop_assert_ne!(&a, &Signer::new(&secret).sign("evt_2", ts, &body));
        }
    }
}
