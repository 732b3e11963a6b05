//! "Recover failed deliveries" (contract §4.1) on a webhook's page: a time
//! picker that starts at the first failure since the last success, a
//! confirmation that says how many events will be sent again, and the
//! recover's progress, which the page's live log keeps up to date.

use axum::extract::State;
use axum::response::Redirect;
use herald_domain::webhook::EndpointStatus;
use herald_store::{Endpoint, RecoverOutcome, RecoverWindow, Recovery};
use maud::{Markup, html};
use serde::Deserialize;

use crate::extract::{Path, Query};
use crate::format::{parse_utc_input, utc_input};
use crate::lookup::{field, load_webhook};
use crate::session::{Protected, Session};
use crate::views::{self, Nav, csrf_input};
use crate::{DashboardError, DashboardState};

/// Where the picker starts when the webhook is not failing now: a day back.
const DEFAULT_LOOKBACK_MS: i64 = 24 * 3_600_000;

/// How far before the first failure the picker starts: that failure is a
/// delivery's last attempt, made up to half a minute (the standard
/// schedule) after its event, or later still when the receiver asked to
/// wait; the window is over events' creation times.
const BEFORE_FIRST_FAILURE_MS: i64 = 5 * 60_000;

/// What the page says of a recover in progress, or of the last one.
pub fn progress(recovery: &Recovery) -> String {
    match recovery.finished_at {
        None => format!(
            "Recovering: {} of {} events sent again so far.",
            recovery.made, recovery.total
        ),
        Some(_) => format!(
            "The last recover sent {} of {} events again.",
            recovery.made, recovery.total
        ),
    }
}

/// The webhook page's card: progress of the latest recover, and the picker.
pub fn panel(webhook: &Endpoint, latest: Option<&Recovery>, now_ms: i64) -> Markup {
    let since = webhook
        .failing_since
        .map_or(now_ms - DEFAULT_LOOKBACK_MS, |t| t - BEFORE_FIRST_FAILURE_MS);
    let running = latest.is_some_and(|r| r.finished_at.is_none());
    html! {
        section.card id="recover" {
            div.card-header {
                div {
                    h2 { "Recover failed deliveries" }
                    p.muted.small {
                        "After an outage, send again every event whose latest delivery to this webhook failed. "
                        "Each is sent once, as a manual delivery with the same id and body."
                    }
                }
            }
            p.small id="recover-progress" hidden[latest.is_none()] {
                @if let Some(recovery) = latest { (progress(recovery)) }
            }
            @if webhook.status != EndpointStatus::Active {
                p.muted.small { "Activate the webhook to recover its failed deliveries." }
            } @else if !running {
                form.recover-form method="get" action=(format!("/webhooks/{}/recover", webhook.id)) {
                    label for="recover-since" { "Events created since (UTC)" }
                    input type="datetime-local" id="recover-since" name="since" value=(utc_input(since)) required;
                    @if webhook.failing_since.is_some() {
                        span.muted.small { "Five minutes before the first failure since the last success." }
                    }
                    button.btn.btn-sm.btn-secondary type="submit" id="recover-preview" { "Recover failed deliveries…" }
                }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct PreviewQuery {
    #[serde(default)]
    since: Option<String>,
}

/// `GET /webhooks/{id}/recover?since=…`: how many events a recover from
/// then until now would send, and the button that starts it.
pub async fn preview(
    State(state): State<DashboardState>,
    session: Session,
    Path(id): Path<String>,
    Query(query): Query<PreviewQuery>,
) -> Result<maud::Markup, DashboardError> {
    let webhook = load_webhook(&state, &session, &id).await?;
    let since = query
        .since
        .as_deref()
        .and_then(parse_utc_input)
        .ok_or_else(|| DashboardError::BadRequest("choose a date and time to recover from".into()))?;
    let until = state.settings.clock.now_ms();
    if since >= until {
        return Err(DashboardError::BadRequest(
            "the time to recover from must be in the past".into(),
        ));
    }
    let window = RecoverWindow {
        since_ms: since,
        until_ms: until,
    };
    let count = state
        .store
        .count_recoverable(&session.team, &webhook.id, window)
        .await?;
    let chrome = session.chrome(&state).await?;
    let back = format!("/webhooks/{}", webhook.id);
    let body = html! {
        nav.crumbs aria-label="Breadcrumb" {
            a href="/webhooks" { "Webhooks" } span { "/" } a href=(back) { (webhook.name) } span { "/" } span { "Recover" }
        }
        div.page-header { div { h1 { "Recover failed deliveries" } } }
        section.card id="recover-confirm" {
            @if count == 0 {
                p id="recover-count" { "No event created since " (views::time(since)) " has a failed latest delivery: there is nothing to recover." }
                a.btn.btn-secondary href=(back) { "Back to the webhook" }
            } @else {
                p id="recover-count" {
                    strong { (count) @if count == 1 { " event" } @else { " events" } }
                    " created between " (views::time(since)) " and now failed to reach this webhook, and will be sent again, each once."
                }
                p.muted.small {
                    "They go at the webhook's normal pace, as manual deliveries with their original ids and bodies; "
                    "their attempts appear in the live log."
                }
                form.inline method="post" action=(format!("/webhooks/{}/recover", webhook.id)) {
                    (csrf_input(&chrome.csrf))
                    input type="hidden" name="since" value=(since);
                    input type="hidden" name="until" value=(until);
                    button.btn.btn-primary type="submit" id="confirm-recover" {
                        "Send " (count) @if count == 1 { " event" } @else { " events" } " again"
                    }
                }
                " "
                a.btn.btn-link href=(back) { "Cancel" }
            }
        }
    };
    Ok(views::page(&chrome, "Recover failed deliveries", Nav::Webhooks, body))
}

/// `POST /webhooks/{id}/recover`: starts the recover just confirmed.
#[tracing::instrument(skip_all, fields(team_id = %session.team, endpoint_id = %id))]
pub async fn start(
    State(state): State<DashboardState>,
    Path(id): Path<String>,
    Protected { session, form }: Protected<Vec<(String, String)>>,
) -> Result<Redirect, DashboardError> {
    let webhook = load_webhook(&state, &session, &id).await?;
    let number = |name: &str| field(&form, name).and_then(|v| v.parse::<i64>().ok());
    let (Some(since), Some(until)) = (number("since"), number("until")) else {
        return Err(DashboardError::BadRequest(
            "the recover's time window is missing".into(),
        ));
    };
    let window = RecoverWindow::new(since, until)
        .map_err(|_| DashboardError::BadRequest("the recover's time window is empty".into()))?;
    let now = state.settings.clock.now_ms();
    let notice = match state.store.recover(&session.team, &webhook.id, window, now).await? {
        RecoverOutcome::Created(_) => {
            state.engine.recover_requested();
            "recovering"
        }
        RecoverOutcome::UnknownWebhook => return Err(DashboardError::NotFound),
        RecoverOutcome::Deactivated => "inactive",
        RecoverOutcome::Running => "recover-running",
    };
    Ok(Redirect::to(&format!("/webhooks/{}?notice={notice}", webhook.id)))
}
