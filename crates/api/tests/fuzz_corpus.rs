//! The fuzz corpus (`fuzz/corpus/`), replayed on every test run with the
//! fuzz targets' own checks: the parsers of what outsiders send either make
//! sound events or answer a client error, whatever the bytes.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    files.sort();
    files
}

#[test]
fn the_publish_corpus_parses_into_sound_events_or_client_errors() {
    let mut accepted = 0;
    for (path, bytes) in corpus("publish_body") {
        match herald_api::events::parse_publish(&bytes, 1_765_198_584_697) {
            Ok(event) => {
                accepted += 1;
                let body = std::str::from_utf8(&event.body).unwrap();
                serde_json::from_str::<serde::de::IgnoredAny>(body).unwrap();
                assert!(body.contains(&event.data), "{}", path.display());
            }
            Err(e) => assert!(e.is_client_error(), "{}: {e:?}", path.display()),
        }
    }
    assert!(accepted > 0, "the corpus holds at least one good publish");
}

#[test]
fn the_bot_events_corpus_parses_into_sound_events_or_client_errors() {
    let mut accepted = 0;
    for (path, bytes) in corpus("bot_events") {
        match herald_api::bots::parse_bot_events(&bytes, 1_765_198_584_697) {
            Ok(events) => {
                accepted += 1;
                for event in events {
                    serde_json::from_str::<serde::de::IgnoredAny>(&event.data).unwrap();
                }
            }
            Err(e) => assert!(e.is_client_error(), "{}: {e:?}", path.display()),
        }
    }
    assert!(accepted > 0, "the corpus holds at least one good batch");
}
