//! Prefixed, time-ordered ids: `acc_…`, `team_…`, `wh_…`, `evt_…`, `att_…`.
//!
//! An id is a UUIDv7 written in lower-case Crockford base32 (26 characters)
//! after its prefix, so ids sort by creation time as strings and the prefix
//! tells a person what kind of thing they are looking at. Parsing checks the
//! prefix only: ids are opaque to clients and looked up, never decoded.

use std::fmt;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Encodes 128 bits as 26 base32 characters, most significant first.
fn encode_base32(value: u128) -> String {
    let mut out = [0u8; 26];
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 5 * (25 - i);
        *slot = ALPHABET[((value >> shift) & 31) as usize];
    }
    out.iter().map(|&b| b as char).collect()
}

/// A new time-ordered suffix, from the given Unix time in milliseconds.
pub fn new_suffix(now_ms: i64) -> String {
    let ts = uuid::Timestamp::from_unix(
        uuid::NoContext,
        (now_ms.max(0) / 1000) as u64,
        ((now_ms.max(0) % 1000) * 1_000_000) as u32,
    );
    // `new_v7` with `NoContext` fills the random part from uuid's `fast-rng`
    // source: a thread-local CSPRNG seeded from the OS, so ids stay
    // unguessable without a system call for every id (every publish and
    // every attempt mints one; two `getrandom` calls each were 1.4% of the
    // server's CPU).
    let uuid = *uuid::Uuid::new_v7(ts).as_bytes();
    encode_base32(u128::from_be_bytes(uuid))
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// Mints a new id for something created at `now_ms`.
            pub fn generate(now_ms: i64) -> Self {
                Self(format!("{}_{}", $prefix, new_suffix(now_ms)))
            }

            /// Accepts an id from the outside world if it has the right prefix
            /// and only id characters. Anything else cannot name one of ours.
            pub fn parse(raw: &str) -> Option<Self> {
                let rest = raw.strip_prefix($prefix)?.strip_prefix('_')?;
                let ok = !rest.is_empty()
                    && rest.len() <= 64
                    && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                ok.then(|| Self(raw.to_owned()))
            }

            /// Wraps a value read back from our own store.
            pub fn from_stored(raw: String) -> Self {
                Self(raw)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// An account: the platform customer that owns teams.
    AccountId, "acc"
);
prefixed_id!(
    /// A team: the unit of tenancy. Every webhook, bot, event and attempt has one.
    TeamId, "team"
);
prefixed_id!(
    /// One delivery attempt.
    AttemptId, "att"
);
prefixed_id!(
    /// A bot of the real-time seed.
    BotId, "bot"
);
prefixed_id!(
    /// A bot's recording: one per bot, named in every real-time envelope.
    RecordingId, "rec"
);
prefixed_id!(
    /// A bot's participant-events stream: one per bot.
    ParticipantEventsId, "pe"
);
prefixed_id!(
    /// A bot's transcript: one per bot.
    TranscriptId, "tr"
);
prefixed_id!(
    /// A team key (`key_…`), by which it is listed and revoked; the key
    /// itself (`hk_…`) is shown once and stored only as a hash.
    KeyId, "key"
);

prefixed_id!(
    /// A recover of a webhook's failed deliveries (contract §4.1).
    RecoveryId, "rcv"
);

/// An endpoint that receives deliveries: a team webhook (`wh_…`) or a bot's
/// real-time endpoint (`rte_…`). The engine treats both alike; the prefix says
/// which rules (retry policy, ordering) apply.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct EndpointId(String);

/// Which of the two kinds of endpoint an [`EndpointId`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointKind {
    Webhook,
    Realtime,
}

impl EndpointKind {
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Webhook => "wh",
            Self::Realtime => "rte",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Realtime => "realtime",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "webhook" => Some(Self::Webhook),
            "realtime" => Some(Self::Realtime),
            _ => None,
        }
    }
}

impl EndpointId {
    pub fn generate(kind: EndpointKind, now_ms: i64) -> Self {
        Self(format!("{}_{}", kind.prefix(), new_suffix(now_ms)))
    }

    /// Accepts an endpoint id of the given kind from the outside world.
    pub fn parse(kind: EndpointKind, raw: &str) -> Option<Self> {
        let rest = raw.strip_prefix(kind.prefix())?.strip_prefix('_')?;
        let ok = !rest.is_empty()
            && rest.len() <= 64
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        ok.then(|| Self(raw.to_owned()))
    }

    pub fn from_stored(raw: String) -> Self {
        Self(raw)
    }

    pub fn kind(&self) -> EndpointKind {
        if self.0.starts_with("rte_") {
            EndpointKind::Realtime
        } else {
            EndpointKind::Webhook
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of a logical event: minted as `evt_…`, or given by the publisher as
/// an idempotency key. It travels in the `webhook-id` header, so it must be a
/// valid header value: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct EventId(String);

impl EventId {
    pub const PREFIX: &'static str = "evt";

    pub fn generate(now_ms: i64) -> Self {
        Self(format!("evt_{}", new_suffix(now_ms)))
    }

    /// Accepts a publisher's id. Returns why it is refused otherwise.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        if raw.is_empty() || raw.len() > 255 {
            return Err("must be 1 to 255 characters");
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be visible ASCII characters without spaces");
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn from_stored(raw: String) -> Self {
        Self(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A delivery: one event on its way to one endpoint. Internal only, never in
/// the API, so a plain database sequence number serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId(pub i64);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_carry_their_prefix_and_parse_back() {
        let id = TeamId::generate(1_765_198_584_697);
        assert!(id.as_str().starts_with("team_"));
        assert_eq!(id.as_str().len(), 5 + 26);
        assert_eq!(TeamId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(AccountId::parse(id.as_str()), None);
        assert_eq!(TeamId::parse("team_"), None);
        assert_eq!(TeamId::parse("team_a b"), None);
    }

    #[test]
    fn endpoint_ids_know_their_kind() {
        let wh = EndpointId::generate(EndpointKind::Webhook, 0);
        let rte = EndpointId::generate(EndpointKind::Realtime, 0);
        assert_eq!(wh.kind(), EndpointKind::Webhook);
        assert_eq!(rte.kind(), EndpointKind::Realtime);
        assert!(EndpointId::parse(EndpointKind::Webhook, rte.as_str()).is_none());
        assert!(EndpointId::parse(EndpointKind::Realtime, rte.as_str()).is_some());
    }

    proptest! {
        #[test]
        fn ids_sort_by_creation_time(a in 0i64..4_000_000_000_000, b in 0i64..4_000_000_000_000) {
            let (ia, ib) = (EventId::generate(a), EventId::generate(b));
            if a < b {
                prop_assert!(ia < ib);
            } else if a > b {
                prop_assert!(ia > ib);
            }
        }

        #[test]
        fn generated_ids_round_trip(now in 0i64..4_000_000_000_000) {
            let id = AttemptId::generate(now);
            prop_assert_eq!(AttemptId::parse(id.as_str()), Some(id.clone()));
            let evt = EventId::generate(now);
            prop_assert_eq!(EventId::parse(evt.as_str()), Ok(evt.clone()));
        }
    }
}
