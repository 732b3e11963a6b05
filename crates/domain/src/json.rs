//! How deep a JSON text nests, found without parsing it.
//!
//! serde_json refuses more than 128 levels when it builds values, but skipping
//! a value (`RawValue`, `IgnoredAny`) has no such limit, so a body nested
//! 100,000 deep was accepted and later blew up whatever indented it. Every
//! JSON body is measured here before it is parsed, and the dashboard's
//! pretty-printer measures what it shows.

/// The deepest nesting accepted in any JSON body (contract §2).
pub const MAX_DEPTH: usize = 128;

/// Whether `text` nests arrays and objects more than `max` levels deep.
/// Brackets inside strings do not count. Linear in the text, no allocation;
/// it stops at the first level past `max`.
pub fn nests_deeper_than(text: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in text {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn depth_is_counted_outside_strings_only() {
        assert!(!nests_deeper_than(nested(128).as_bytes(), MAX_DEPTH));
        assert!(nests_deeper_than(nested(129).as_bytes(), MAX_DEPTH));
        assert!(nests_deeper_than(nested(100_000).as_bytes(), MAX_DEPTH));
        let in_string = format!(r#"{{"a":"{}\"{}"}}"#, "[".repeat(500), "{".repeat(500));
        assert!(!nests_deeper_than(in_string.as_bytes(), 1));
        assert!(nests_deeper_than(br#"{"a":{"b":1}}"#, 1));
        assert!(!nests_deeper_than(br#"{"a":1,"b":[],"c":{}}"#, 2));
        assert!(!nests_deeper_than(b"", 0));
    }
}
