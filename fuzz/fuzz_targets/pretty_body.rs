//! The dashboard's pretty-printer on any stored body: bounded output, and
//! when it indents, the same JSON value as the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let shown = herald_dashboard::pretty_body(bytes);
    let raw = String::from_utf8_lossy(bytes);
    assert!(shown.len() <= raw.len().max(herald_dashboard::PRETTY_MAX_BYTES));
    if shown != raw {
        let before: Result<serde_json::Value, _> = serde_json::from_slice(bytes);
        let after: Result<serde_json::Value, _> = serde_json::from_str(&shown);
        if let (Ok(before), Ok(after)) = (before, after) {
            assert_eq!(before, after, "indenting changed the value");
        }
    }
});
