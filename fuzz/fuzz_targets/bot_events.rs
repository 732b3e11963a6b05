//! `POST /api/v1/bot/{botId}/events` up to the store: one event or a batch,
//! each with data that is valid JSON, or a client error. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    match herald_api::bots::parse_bot_events(bytes, 1_765_198_584_697) {
        Ok(events) => {
            assert!(!events.is_empty());
            for event in events {
                assert!(serde_json::from_str::<serde::de::IgnoredAny>(&event.data).is_ok());
            }
        }
        Err(e) => assert!(e.is_client_error(), "{e:?}"),
    }
});
