//! The team's bots, read-only: each bot with its real-time endpoints and
//! their status, and each endpoint's attempt log.
//!
//! Real-time endpoints are given in the Create Bot request and are not edited
//! here (the real-time seed: "not configurable via dashboard"); only the engine
//! changes their status, to failed.

use axum::Json;
use axum::extract::State;
use herald_domain::ids::{AttemptId, BotId, EndpointId, EndpointKind};
use herald_store::{Bot, Endpoint};
use maud::{Markup, html};

use crate::extract::{Path, Query};
use crate::format::{mask_url, pretty_body};
use crate::log::{self, Filter, LogQuery, LogTarget};
use crate::session::Session;
use crate::views::{self, Nav, endpoint_badge};
use crate::{DashboardError, DashboardState};

/// `GET /bots`
pub async fn list(State(state): State<DashboardState>, session: Session) -> Result<Markup, DashboardError> {
    let chrome = session.chrome(&state).await?;
    let bots = state.store.list_bots(&session.team).await?;
    let body = html! {
        div.page-header {
            div {
                h1 { "Bots" }
                p.muted { "Meeting bots of this team and their real-time endpoints. Real-time endpoints are set in the Create Bot request and cannot be changed here." }
            }
        }
        @if bots.is_empty() {
            section.card.empty-state {
                h2 { "No bots yet" }
                p.muted { "Bots created with " code { "POST /api/v1/bot/" } " appear here with their real-time endpoints." }
            }
        }
        @for bot in &bots {
            (bot_card(bot))
        }
    };
    Ok(views::page(&chrome, "Bots", Nav::Bots, body))
}

/// `GET /bots/{botId}/endpoints/{endpointId}`: one real-time endpoint and its log.
pub async fn endpoint(
    State(state): State<DashboardState>,
    session: Session,
    Path((bot_id, endpoint_id)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
) -> Result<Markup, DashboardError> {
    let (bot, endpoint) = load_endpoint(&state, &session, &bot_id, &endpoint_id).await?;
    let chrome = session.chrome(&state).await?;
    let target = log_target(&bot, &endpoint);
    let filter = Filter::parse(&query);
    let page = log::load(&state, &session.team, &endpoint.id, &filter, &target).await?;
    let body = html! {
        nav.crumbs aria-label="Breadcrumb" {
            a href="/bots" { "Bots" } span { "/" }
            span.mono { (bot.id) } span { "/" }
            span.mono { (endpoint.id) }
        }
        div.page-header {
            div {
                h1 { "Real-time endpoint" }
                div.header-meta { (endpoint_badge(endpoint.status)) span.mono.muted { (endpoint.id) } }
            }
        }
        section.card id="configuration" {
            div.card-header {
                div {
                    h2 { "Configuration" }
                    p.muted.small { "Read-only: set in the bot's Create Bot request." }
                }
            }
            dl.kv.kv-wide {
                dt { "URL" } dd.mono.break id="config-url" { (mask_url(&endpoint.url)) }
                dt { "Events" } dd { (event_chips(&endpoint)) }
                dt { "Status" } dd id="config-status" { (endpoint_badge(endpoint.status)) }
                dt { "Bot" } dd.mono { (bot.id) }
                dt { "Meeting" } dd.mono.break { (mask_url(&bot.meeting_url)) }
            }
        }
        (log::render(&target, &filter, &page, &chrome.csrf))
    };
    Ok(views::page(&chrome, "Real-time endpoint", Nav::Bots, body))
}

/// `GET /bots/{botId}/endpoints/{endpointId}/attempts.json`
pub async fn attempts_json(
    State(state): State<DashboardState>,
    session: Session,
    Path((bot_id, endpoint_id)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
) -> Result<Json<serde_json::Value>, DashboardError> {
    let (bot, endpoint) = load_endpoint(&state, &session, &bot_id, &endpoint_id).await?;
    let target = log_target(&bot, &endpoint);
    let filter = Filter::parse(&query).first_page();
    let page = log::load(&state, &session.team, &endpoint.id, &filter, &target).await?;
    Ok(log::rows_json(&page))
}

/// `GET /bots/{botId}/endpoints/{endpointId}/attempts/{attemptId}`: Inspect.
pub async fn inspect(
    State(state): State<DashboardState>,
    session: Session,
    Path((bot_id, endpoint_id, attempt_id)): Path<(String, String, String)>,
) -> Result<Markup, DashboardError> {
    let (bot, endpoint) = load_endpoint(&state, &session, &bot_id, &endpoint_id).await?;
    let attempt_id = AttemptId::parse(&attempt_id).ok_or(DashboardError::NotFound)?;
    let attempt = state.store.get_attempt(&session.team, &attempt_id).await?;
    if attempt.endpoint_id != endpoint.id {
        return Err(DashboardError::NotFound);
    }
    let chrome = session.chrome(&state).await?;
    let target = log_target(&bot, &endpoint);
    let body = html! {
        nav.crumbs aria-label="Breadcrumb" {
            a href="/bots" { "Bots" } span { "/" }
            a.mono href=(target.base) { (endpoint.id) } span { "/" }
            span.mono { (attempt.id) }
        }
        (log::render_inspect(&target, &attempt, &chrome.csrf))
    };
    Ok(views::page(&chrome, "Inspect attempt", Nav::Bots, body))
}

fn bot_card(bot: &Bot) -> Markup {
    html! {
        section.card.bot-card data-id=(bot.id) {
            div.card-header {
                div {
                    h2.mono { (bot.id) }
                    p.muted.small.break { "Meeting " span.mono { (mask_url(&bot.meeting_url)) } " · created " (views::time(bot.created_at)) }
                }
            }
            @if bot.metadata != "{}" {
                details.metadata {
                    summary { "Metadata" }
                    pre.code tabindex="0" aria-label="Metadata" { (pretty_body(bot.metadata.as_bytes())) }
                }
            }
            @if bot.endpoints.is_empty() {
                p.muted { "This bot has no real-time endpoints." }
            } @else {
                div.table-wrap {
                    table.table.endpoints-table {
                        thead {
                            tr {
                                th { "Real-time endpoint" }
                                th { "URL" }
                                th { "Events" }
                                th { "Status" }
                                th.actions-col { "Actions" }
                            }
                        }
                        tbody {
                            @for endpoint in &bot.endpoints {
                                tr data-id=(endpoint.id) {
                                    td.mono data-label="Endpoint" { (endpoint.id) }
                                    td data-label="URL" { span.mono.url.break { (mask_url(&endpoint.url)) } }
                                    td data-label="Events" { (event_chips(endpoint)) }
                                    td data-label="Status" { (endpoint_badge(endpoint.status)) }
                                    td.actions data-label="Actions" {
                                        a.btn.btn-sm.btn-secondary href=(format!("/bots/{}/endpoints/{}", bot.id, endpoint.id)) { "View log" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn event_chips(endpoint: &Endpoint) -> Markup {
    html! {
        span.chips { @for t in &endpoint.event_types { span.chip.mono { (t.as_str()) } } }
    }
}

/// The team's bot and one of its real-time endpoints; anything else is a 404.
async fn load_endpoint(
    state: &DashboardState,
    session: &Session,
    bot_id: &str,
    endpoint_id: &str,
) -> Result<(Bot, Endpoint), DashboardError> {
    let bot_id = BotId::parse(bot_id).ok_or(DashboardError::NotFound)?;
    let endpoint_id = EndpointId::parse(EndpointKind::Realtime, endpoint_id).ok_or(DashboardError::NotFound)?;
    let bot = state.store.get_bot(&session.team, &bot_id).await?;
    let endpoint = bot
        .endpoints
        .iter()
        .find(|e| e.id == endpoint_id)
        .cloned()
        .ok_or(DashboardError::NotFound)?;
    Ok((bot, endpoint))
}

fn log_target(bot: &Bot, endpoint: &Endpoint) -> LogTarget {
    LogTarget {
        base: format!("/bots/{}/endpoints/{}", bot.id, endpoint.id),
        resend: false,
        dropped: true,
    }
}
