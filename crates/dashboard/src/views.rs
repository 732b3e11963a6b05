//! The page shell and the small pieces every page uses: the sidebar, status
//! badges, times, notices. `maud` escapes every value interpolated with
//! `(…)`; nothing here builds markup from strings.

use herald_domain::attempt::AttemptStatus;
use herald_domain::webhook::EndpointStatus;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::format::{iso_time, utc_time};

/// Which sidebar entry is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Webhooks,
    Bots,
}

/// What the shell of a signed-in page shows: the team and the CSRF token
/// for its forms and script.
pub struct Chrome {
    pub team_name: String,
    pub csrf: String,
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Herald" }
            link rel="icon" href="data:,";
            link rel="stylesheet" href="/assets/dashboard.css";
            script src="/assets/dashboard.js" defer {}
        }
    }
}

/// A signed-in page: sidebar with the team and navigation, then `body`.
pub fn page(chrome: &Chrome, title: &str, nav: Nav, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                meta name="csrf-token" content=(chrome.csrf);
                div.shell {
                    aside.sidebar {
                        a.brand href="/webhooks" {
                            span.logo { "H" }
                            span.brand-name { "Herald" }
                        }
                        div.team {
                            span.team-label { "Team" }
                            span.team-name { (chrome.team_name) }
                        }
                        nav.nav aria-label="Main" {
                            a.nav-link.active[nav == Nav::Webhooks] href="/webhooks" {
                                (PreEscaped(ICON_WEBHOOK)) span { "Webhooks" }
                            }
                            a.nav-link.active[nav == Nav::Bots] href="/bots" {
                                (PreEscaped(ICON_BOT)) span { "Bots" }
                            }
                        }
                        form.sign-out method="post" action="/sign-out" {
                            (csrf_input(&chrome.csrf))
                            button.btn.btn-ghost type="submit" id="sign-out" { "Sign out" }
                        }
                    }
                    main.content { (body) }
                }
            }
        }
    }
}

/// A page with only a message: signed out, errors, refused links.
pub fn message_page(title: &str, message: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body.plain {
                main.message-card {
                    div.brand.brand-dark {
                        span.logo { "H" }
                        span.brand-name { "Herald" }
                    }
                    h1 { (title) }
                    p.muted { (message) }
                }
            }
        }
    }
}

pub fn csrf_input(csrf: &str) -> Markup {
    html! { input type="hidden" name="_csrf" value=(csrf); }
}

/// The colour of a badge.
#[derive(Debug, Clone, Copy)]
pub enum Tone {
    Success,
    Warning,
    Danger,
    Neutral,
}

impl Tone {
    pub fn class(self) -> &'static str {
        match self {
            Self::Success => "badge badge-success",
            Self::Warning => "badge badge-warning",
            Self::Danger => "badge badge-danger",
            Self::Neutral => "badge badge-neutral",
        }
    }
}

pub fn badge(tone: Tone, label: &str) -> Markup {
    html! { span class=(tone.class()) { span.dot {} (label) } }
}

pub fn endpoint_status(status: EndpointStatus) -> (Tone, &'static str) {
    match status {
        EndpointStatus::Active => (Tone::Success, "Active"),
        EndpointStatus::Deactivated => (Tone::Neutral, "Deactivated"),
        EndpointStatus::Failed => (Tone::Danger, "Failed"),
    }
}

pub fn endpoint_badge(status: EndpointStatus) -> Markup {
    let (tone, label) = endpoint_status(status);
    badge(tone, label)
}

pub fn attempt_status(status: AttemptStatus) -> (Tone, &'static str) {
    match status {
        AttemptStatus::Success => (Tone::Success, "Success"),
        AttemptStatus::Retrying => (Tone::Warning, "Retrying"),
        AttemptStatus::Failed => (Tone::Danger, "Failed"),
        AttemptStatus::Dropped => (Tone::Neutral, "Dropped"),
    }
}

pub fn attempt_badge(status: AttemptStatus) -> Markup {
    let (tone, label) = attempt_status(status);
    badge(tone, label)
}

pub fn manual_tag() -> Markup {
    html! { span.tag.tag-manual title="Sent by a person: a resend or a test event" { "manual" } }
}

/// A time in UTC, which the page's script turns into the viewer's zone.
pub fn time(ms: i64) -> Markup {
    html! { time datetime=(iso_time(ms)) data-ts=(ms) { (utc_time(ms)) } }
}

/// A one-line confirmation or warning at the top of a page.
pub fn notice(text: &str, warning: bool) -> Markup {
    html! {
        div.notice.notice-warning[warning] role="status" { (text) }
    }
}

const ICON_WEBHOOK: &str = r#"<svg viewBox="0 0 24 24" width="18" height="18" aria-hidden="true"><path fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" d="M10 13a5 5 0 0 0 7.5.5l3-3a5 5 0 0 0-7-7l-1.7 1.7M14 11a5 5 0 0 0-7.5-.5l-3 3a5 5 0 0 0 7 7l1.7-1.7"/></svg>"#;
const ICON_BOT: &str = r#"<svg viewBox="0 0 24 24" width="18" height="18" aria-hidden="true"><g fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><rect x="4" y="8" width="16" height="12" rx="3"/><path d="M12 4v4M9 13h.01M15 13h.01M9 17h6"/></g></svg>"#;
