//! Opaque pagination cursors for the attempt log, which is ordered newest
//! first by attempt time, ties broken by log position. A cursor wraps the
//! place of the last item of a page; clients only hand it back.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub timestamp_ms: i64,
    pub seq: i64,
}

impl Cursor {
    pub fn encode(self) -> String {
        URL_SAFE_NO_PAD.encode(format!("t{}.{}", self.timestamp_ms, self.seq))
    }

    pub fn decode(raw: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
        let text = std::str::from_utf8(&bytes).ok()?;
        let (timestamp, seq) = text.strip_prefix('t')?.split_once('.')?;
        Some(Self {
            timestamp_ms: timestamp.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn garbage_is_not_a_cursor() {
        for raw in ["", "!!", "eDEy", "c3h4", "dDE"] {
            assert_eq!(Cursor::decode(raw), None, "{raw}");
        }
    }

    proptest! {
        #[test]
        fn cursors_round_trip(timestamp_ms in any::<i64>(), seq in any::<i64>()) {
            let cursor = Cursor { timestamp_ms, seq };
            prop_assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        }
    }
}
