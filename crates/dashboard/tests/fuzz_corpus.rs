//! The pretty-printer's fuzz corpus (`fuzz/corpus/pretty_body`), replayed
//! with the fuzz target's checks: bounded output, and indenting never
//! changes the JSON value.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

#[test]
fn the_pretty_body_corpus_is_shown_bounded_and_unchanged_in_value() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/pretty_body");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let shown = herald_dashboard::pretty_body(&bytes);
        let raw = String::from_utf8_lossy(&bytes);
        assert!(
            shown.len() <= raw.len().max(herald_dashboard::PRETTY_MAX_BYTES),
            "{}",
            path.display()
        );
        if shown != raw
            && let (Ok(before), Ok(after)) = (
                serde_json::from_slice::<serde_json::Value>(&bytes),
                serde_json::from_str::<serde_json::Value>(&shown),
            )
        {
            assert_eq!(before, after, "{}", path.display());
        }
        seen += 1;
    }
    assert!(seen > 0);
}
