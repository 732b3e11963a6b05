//! `POST /api/v1/events` up to the store: any bytes either become an event
//! whose delivered body is valid JSON holding `data` exactly as sent, or a
//! client error. Never a panic, never a 5xx.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    match herald_api::events::parse_publish(bytes, 1_765_198_584_697) {
        Ok(event) => {
            assert!(serde_json::from_slice::<serde::de::IgnoredAny>(&event.body).is_ok());
            let body = std::str::from_utf8(&event.body).expect("the delivered body is UTF-8");
            assert!(body.contains(&event.data), "data is delivered as sent");
        }
        Err(e) => assert!(e.is_client_error(), "{e:?}"),
    }
});
