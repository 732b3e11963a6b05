//! Opaque pagination cursors. A cursor wraps the position of the last item of
//! a page (a store sequence number); clients only hand it back.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(pub i64);

impl Cursor {
    pub fn encode(self) -> String {
        URL_SAFE_NO_PAD.encode(format!("s{}", self.0))
    }

    pub fn decode(raw: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
        let text = std::str::from_utf8(&bytes).ok()?;
        text.strip_prefix('s')?.parse().ok().map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn garbage_is_not_a_cursor() {
        for raw in ["", "!!", "eDEy", "c3h4"] {
            assert_eq!(Cursor::decode(raw), None, "{raw}");
        }
    }

    proptest! {
        #[test]
        fn cursors_round_trip(n in any::<i64>()) {
            prop_assert_eq!(Cursor::decode(&Cursor(n).encode()), Some(Cursor(n)));
        }
    }
}
