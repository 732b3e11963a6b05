//! Herald's integration tests, in one binary: each module drives the real
//! server over HTTP against real receivers on 127.0.0.1.

// Panicking on a broken expectation is how a test fails.
#![allow(clippy::unwrap_used)]

mod helpers;
#[macro_use]
mod stores;

mod accounts;
mod cluster;
mod crash;
mod dashboard_health;
mod dashboard_health_ui;
mod dashboard_http;
mod dashboard_ui;
mod delivery;
mod demo;
mod hardening;
mod operations;
mod process;
mod publish;
mod realtime;
mod receiver_kit;
mod receivers;
mod recover;
mod resend;
mod retention;
mod retries;
mod webhooks;
