//! Herald's pure core: the words of the contract as types, and the rules that
//! hold between them.
//!
//! Everything here is a function of its inputs. This crate does no I/O, reads
//! no clock and knows nothing of SQL, HTTP servers or tokio: callers pass `now`
//! in. The one concession is randomness: keys and secrets come from the
//! operating system through [`random_bytes`], ids from a CSPRNG it seeds.
//!
//! What lives here: prefixed ids ([`ids`]), API keys ([`keys`]), event types and
//! the bodies delivered for them ([`event`]), JSON nesting depth ([`json`]), per-tenant limits ([`limits`]), webhook validation
//! ([`webhook`]), the target-URL rules ([`target`]), Standard Webhooks signing
//! ([`signing`]), the retry policies ([`retry`]), attempt outcomes
//! ([`attempt`]), pagination cursors ([`cursor`]) and the dashboard's link and
//! session tokens ([`dashboard`]).

pub mod attempt;
pub mod bot;
pub mod cursor;
pub mod dashboard;
pub mod error;
pub mod event;
pub mod ids;
pub mod json;
pub mod keys;
pub mod limits;
pub mod retry;
pub mod signing;
pub mod target;
pub mod webhook;

pub use error::ValidationError;

/// Fills a fresh array from the operating system's random source.
///
/// The OS source failing means the machine cannot make secrets at all; there
/// is no sensible way to continue, so this is the one place domain panics.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).expect("the operating system's random source is unavailable");
    buf
}
