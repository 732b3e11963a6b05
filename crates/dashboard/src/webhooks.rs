//! The Webhooks settings pages of the seed: the list (activate or deactivate
//! from a row), Create Webhook, and the Webhook Detail page with its
//! read-only configuration, the hidden signing secret, the log, a test event
//! and resends.
//!
//! Input is checked with the same domain rules as the API
//! (`check_name`, `check_webhook_url`, `check_event_types`), and every change
//! is signalled to the engine exactly as the API does it.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;
use herald_domain::event::{EventType, sample_meeting_completed, team_event_body};
use herald_domain::ids::{AttemptId, EndpointId, EndpointKind, EventId};
use herald_domain::signing::{DEFAULT_ROTATION_GRACE_S, MAX_ROTATION_GRACE_S, Secret, may_rotate};
use herald_domain::webhook::{EndpointStatus, check_event_types, check_name, check_status, check_webhook_url};
use herald_store::{Endpoint, ManualOutcome, NewEvent, WebhookPatch};
use maud::{Markup, html};
use serde_json::value::RawValue;

use crate::extract::{Path, Query};
use crate::format::{MASK, mask_url};
use crate::health;
use crate::log::{self, Filter, LogQuery, LogTarget};
use crate::lookup::{field, load_webhook};
use crate::recover;
use crate::session::{Protected, Session};
use crate::views::{self, Chrome, Nav, csrf_input};
use crate::{DashboardError, DashboardState};

type FormPairs = Vec<(String, String)>;

/// `GET /webhooks`
pub async fn list(
    State(state): State<DashboardState>,
    session: Session,
    Query(query): Query<LogQuery>,
) -> Result<Markup, DashboardError> {
    let chrome = session.chrome(&state).await?;
    let webhooks = state.store.list_webhooks(&session.team).await?;
    // One short indexed read per webhook (at most 24 rows each, never the log).
    let mut day = Vec::with_capacity(webhooks.len());
    for webhook in &webhooks {
        day.push(health::last_day(&state, &session.team, &webhook.id).await?);
    }
    let body = html! {
        div.page-header {
            div {
                h1 { "Webhooks" }
                p.muted { "Webhooks deliver completed meeting data to your systems as soon as a meeting has been processed." }
            }
            div.header-actions {
                a.btn.btn-primary href="/webhooks/new" id="create-webhook" { "+ Create webhook" }
            }
        }
        (notice_for(query.notice.as_deref()))
        @if webhooks.is_empty() {
            section.card.empty-state {
                h2 { "No webhooks yet" }
                p.muted { "Create a webhook to receive a meeting.completed event each time a meeting has been processed." }
                a.btn.btn-primary href="/webhooks/new" { "Create your first webhook" }
            }
        } @else {
            section.card.card-flush {
                div.table-wrap {
                    table.table id="webhooks" {
                        thead {
                            tr {
                                th { "Name" }
                                th { "Webhook type" }
                                th { "Webhook URL" }
                                th { "Status" }
                                th { "Last 24 hours" }
                                th.actions-col { "Actions" }
                            }
                        }
                        tbody {
                            @for (webhook, hours) in webhooks.iter().zip(&day) {
                                tr data-id=(webhook.id) {
                                    td data-label="Name" {
                                        a.row-title href=(format!("/webhooks/{}", webhook.id)) { (webhook.name) }
                                    }
                                    td data-label="Webhook type" { (event_types(&webhook.event_types)) }
                                    td data-label="Webhook URL" { span.mono.url.break { (mask_url(&webhook.url)) } }
                                    td data-label="Status" { (health::status_badge(webhook)) }
                                    td data-label="Last 24 hours" { (health::rate_cell(hours)) }
                                    td.actions data-label="Actions" {
                                        a.btn.btn-sm.btn-secondary href=(format!("/webhooks/{}", webhook.id)) { "Open" }
                                        (status_form(webhook, "list", &chrome.csrf))
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(views::page(&chrome, "Webhooks", Nav::Webhooks, body))
}

/// `GET /webhooks/new`
pub async fn new_form(State(state): State<DashboardState>, session: Session) -> Result<Markup, DashboardError> {
    let chrome = session.chrome(&state).await?;
    let draft = Draft {
        event_types: vec![EventType::MeetingCompleted.as_str().to_owned()],
        status: EndpointStatus::Active.as_str().to_owned(),
        ..Draft::default()
    };
    Ok(create_page(&chrome, &draft, &BTreeMap::new()))
}

/// `POST /webhooks`: creates, or shows the form again with the reasons next
/// to the fields and what was typed kept.
#[tracing::instrument(skip_all, fields(team_id = %session.team))]
pub async fn create(
    State(state): State<DashboardState>,
    Protected { session, form }: Protected<FormPairs>,
) -> Result<Response, DashboardError> {
    let draft = Draft::from_pairs(&form);
    let mut errors = BTreeMap::new();
    let name = check_name(&draft.name).map_err(|e| errors.insert("name", sentence(&e.message)));
    let url = check_webhook_url(&draft.url, state.settings.target_policy)
        .map_err(|e| errors.insert("url", sentence(&e.reason.to_string())));
    let event_types = check_event_types(&draft.event_types).map_err(|e| {
        let message = if draft.event_types.is_empty() {
            "Select at least one event type.".to_owned()
        } else {
            sentence(&e.message)
        };
        errors.insert("eventTypes", message)
    });
    let status =
        check_status(&draft.status).map_err(|_| errors.insert("status", "Choose Active or Deactivated.".into()));
    let (Ok(name), Ok(url), Ok(event_types), Ok(status)) = (name, url, event_types, status) else {
        let chrome = session.chrome(&state).await?;
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, create_page(&chrome, &draft, &errors)).into_response());
    };
    let now = herald_engine::now_ms();
    let webhook = Endpoint {
        id: EndpointId::generate(EndpointKind::Webhook, now),
        team_id: session.team.clone(),
        bot_id: None,
        name,
        url,
        event_types,
        status,
        secret: Secret::generate(),
        previous_secret: None,
        deactivated_reason: None,
        failing_since: None,
        metadata: "{}".into(),
        created_at: now,
    };
    let limit = state.settings.limits.webhooks_per_team;
    if !state.store.create_endpoint(&webhook, limit).await? {
        let chrome = session.chrome(&state).await?;
        let errors = BTreeMap::from([(
            LIMIT_ERROR,
            format!("This team already has {limit} webhooks, the most it may have. Delete one to make room."),
        )]);
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, create_page(&chrome, &draft, &errors)).into_response());
    }
    Ok(Redirect::to(&format!("/webhooks/{}?notice=created", webhook.id)).into_response())
}

/// `GET /webhooks/{id}`: configuration and logs.
pub async fn detail(
    State(state): State<DashboardState>,
    session: Session,
    Path(id): Path<String>,
    Query(query): Query<LogQuery>,
) -> Result<Markup, DashboardError> {
    let webhook = load_webhook(&state, &session, &id).await?;
    let chrome = session.chrome(&state).await?;
    let target = log_target(&webhook);
    let filter = Filter::parse(&query);
    let page = log::load(&state, &session.team, &webhook.id, &filter, &target).await?;
    let hours = health::last_day(&state, &session.team, &webhook.id).await?;
    let recoveries = state.store.recoveries(&session.team, &webhook.id, 1).await?;
    let now = state.settings.clock.now_ms();
    let body = html! {
        nav.crumbs aria-label="Breadcrumb" { a href="/webhooks" { "Webhooks" } span { "/" } span { (webhook.name) } }
        div.page-header {
            div {
                h1 { (webhook.name) }
                div.header-meta { (health::status_badge(&webhook)) span.mono.muted { (webhook.id) } }
            }
            div.header-actions {
                form.inline method="post" action=(format!("/webhooks/{}/test-event", webhook.id)) {
                    (csrf_input(&chrome.csrf))
                    button.btn.btn-secondary type="submit" id="send-test-event"
                        disabled[webhook.status != EndpointStatus::Active] { "Send test event" }
                }
                (status_form(&webhook, "detail", &chrome.csrf))
            }
        }
        (notice_for(query.notice.as_deref()))
        (health::deactivation_banner(&webhook, &chrome.csrf))
        (health::card(&webhook, &hours))
        (recover::panel(&webhook, recoveries.first(), now))
        section.card id="configuration" {
            div.card-header {
                div {
                    h2 { "Configuration" }
                    p.muted.small { "Read-only: the webhook's active configuration." }
                }
            }
            dl.kv.kv-wide {
                dt { "Name" } dd id="config-name" { (webhook.name) }
                dt { "Webhook URL" } dd.mono.break id="config-url" { (mask_url(&webhook.url)) }
                dt { "Event types" } dd id="config-event-types" { (event_types(&webhook.event_types)) }
                dt { "Status" } dd id="config-status" { (health::status_badge(&webhook)) }
                dt { "Created" } dd { (views::time(webhook.created_at)) }
                dt { "Signing secret" }
                dd {
                    div.secret {
                        code.mono id="secret-value" { (MASK) (MASK) (MASK) (MASK) }
                        button.btn.btn-sm.btn-secondary type="button" id="reveal-secret"
                            data-url=(format!("/webhooks/{}/secret", webhook.id)) { "Reveal" }
                        button.btn.btn-sm.btn-ghost type="button" id="copy-secret" hidden { "Copy" }
                    }
                    p.muted.small { "Verify the " code { "webhook-signature" } " header of each delivery with this secret (Standard Webhooks)." }
                    @if let Some(previous) = webhook.previous_secret.as_ref().filter(|p| p.in_grace(now)) {
                        p.small id="previous-secret-note" {
                            "The previous secret also signs every delivery, second, until "
                            (views::time(previous.expires_at_ms)) "."
                        }
                    }
                    (rotate_form(&webhook, &chrome.csrf))
                }
            }
        }
        (log::render(&target, &filter, &page, &chrome.csrf))
    };
    Ok(views::page(&chrome, &webhook.name, Nav::Webhooks, body))
}

/// `GET /webhooks/{id}/attempts.json`: the newest page of the filtered log, polled.
pub async fn attempts_json(
    State(state): State<DashboardState>,
    session: Session,
    Path(id): Path<String>,
    Query(query): Query<LogQuery>,
) -> Result<Json<serde_json::Value>, DashboardError> {
    let webhook = load_webhook(&state, &session, &id).await?;
    let target = log_target(&webhook);
    let filter = Filter::parse(&query).first_page();
    let page = log::load(&state, &session.team, &webhook.id, &filter, &target).await?;
    let mut json = log::rows_json(&page);
    // The latest recover's progress, for the line above the log.
    let recoveries = state.store.recoveries(&session.team, &webhook.id, 1).await?;
    json.0["recover"] = recoveries.first().map(recover::progress).into();
    Ok(json)
}

/// `GET /webhooks/{id}/attempts/{attemptId}`: Inspect.
pub async fn inspect(
    State(state): State<DashboardState>,
    session: Session,
    Path((id, attempt_id)): Path<(String, String)>,
) -> Result<Markup, DashboardError> {
    let webhook = load_webhook(&state, &session, &id).await?;
    let attempt_id = AttemptId::parse(&attempt_id).ok_or(DashboardError::NotFound)?;
    let attempt = state.store.get_attempt(&session.team, &attempt_id).await?;
    if attempt.endpoint_id != webhook.id {
        return Err(DashboardError::NotFound);
    }
    let chrome = session.chrome(&state).await?;
    let target = log_target(&webhook);
    let body = html! {
        nav.crumbs aria-label="Breadcrumb" {
            a href="/webhooks" { "Webhooks" } span { "/" }
            a href=(target.base) { (webhook.name) } span { "/" }
            span.mono { (attempt.id) }
        }
        (log::render_inspect(&target, &attempt, &chrome.csrf))
    };
    Ok(views::page(&chrome, "Inspect attempt", Nav::Webhooks, body))
}

/// `POST /webhooks/{id}/status`: activate or deactivate.
#[tracing::instrument(skip_all, fields(team_id = %session.team, endpoint_id = %id))]
pub async fn set_status(
    State(state): State<DashboardState>,
    Path(id): Path<String>,
    Protected { session, form }: Protected<FormPairs>,
) -> Result<Redirect, DashboardError> {
    let webhook = load_webhook(&state, &session, &id).await?;
    let status = check_status(field(&form, "status").unwrap_or(""))
        .map_err(|_| DashboardError::BadRequest("the status must be active or deactivated".into()))?;
    let patch = WebhookPatch {
        status: Some(status),
        ..WebhookPatch::default()
    };
    state.store.update_webhook(&session.team, &webhook.id, &patch).await?;
    state.engine.endpoint_changed(&webhook.id).await;
    let notice = match status {
        EndpointStatus::Active => "activated",
        _ => "deactivated",
    };
    Ok(match field(&form, "back") {
        Some("detail") => Redirect::to(&format!("/webhooks/{}?notice={notice}", webhook.id)),
        _ => Redirect::to(&format!("/webhooks?notice={notice}")),
    })
}

/// `POST /webhooks/{id}/secret`: the signing secret, for the page's script
/// to show on request. It is never part of a page's source.
pub async fn reveal_secret(
    State(state): State<DashboardState>,
    Path(id): Path<String>,
    Protected { session, .. }: Protected<FormPairs>,
) -> Result<Json<serde_json::Value>, DashboardError> {
    let webhook = load_webhook(&state, &session, &id).await?;
    Ok(Json(serde_json::json!({ "secret": webhook.secret.reveal() })))
}

/// The grace periods Rotate offers, in seconds, with the default first.
const GRACE_CHOICES: [(i64, &str); 4] = [
    (DEFAULT_ROTATION_GRACE_S, "24 hours (recommended)"),
    (3_600, "1 hour"),
    (MAX_ROTATION_GRACE_S, "7 days"),
    (0, "None: drop the current secret now"),
];

/// Rotate, behind a disclosure that says what it does: the confirmation.
fn rotate_form(webhook: &Endpoint, csrf: &str) -> Markup {
    html! {
        details.rotate id="rotate" {
            summary.btn.btn-sm.btn-secondary { "Rotate secret…" }
            form.rotate-form method="post" action=(format!("/webhooks/{}/secret/rotate", webhook.id)) {
                (csrf_input(csrf))
                p.small {
                    "A new secret signs every delivery from now on. During the grace period the current secret "
                    "signs too (a second signature in the same header), so your receiver keeps verifying while "
                    "you deploy the new secret; after it, only the new one does."
                }
                label for="grace" { "Grace period" }
                select id="grace" name="grace" {
                    @for (seconds, label) in GRACE_CHOICES {
                        option value=(seconds) { (label) }
                    }
                }
                button.btn.btn-sm.btn-primary type="submit" id="confirm-rotate" { "Rotate the signing secret" }
            }
        }
    }
}

/// `POST /webhooks/{id}/secret/rotate`: a new secret, the current one
/// signing too for the chosen grace (contract §4.2).
#[tracing::instrument(skip_all, fields(team_id = %session.team, endpoint_id = %id))]
pub async fn rotate_secret(
    State(state): State<DashboardState>,
    Path(id): Path<String>,
    Protected { session, form }: Protected<FormPairs>,
) -> Result<Redirect, DashboardError> {
    let webhook = load_webhook(&state, &session, &id).await?;
    let grace = field(&form, "grace")
        .and_then(|raw| raw.parse::<i64>().ok())
        .filter(|g| (0..=MAX_ROTATION_GRACE_S).contains(g))
        .ok_or_else(|| DashboardError::BadRequest("choose a grace period from the list".into()))?;
    let now = state.settings.clock.now_ms();
    if may_rotate(webhook.previous_secret.as_ref(), grace, now).is_err() {
        return Ok(Redirect::to(&format!(
            "/webhooks/{}?notice=rotate-in-grace",
            webhook.id
        )));
    }
    let expires_at = now + grace * 1000;
    state
        .store
        .rotate_secret(&session.team, &webhook.id, &Secret::generate(), expires_at)
        .await?;
    state.engine.endpoint_changed(&webhook.id).await;
    Ok(Redirect::to(&format!("/webhooks/{}?notice=rotated", webhook.id)))
}

/// `POST /webhooks/{id}/test-event`: a new `meeting.completed` event with
/// sample data, delivered to this webhook only.
#[tracing::instrument(skip_all, fields(team_id = %session.team, endpoint_id = %id))]
pub async fn send_test_event(
    State(state): State<DashboardState>,
    Path(id): Path<String>,
    Protected { session, .. }: Protected<FormPairs>,
) -> Result<Redirect, DashboardError> {
    let webhook = load_webhook(&state, &session, &id).await?;
    let back = |notice: &str| Redirect::to(&format!("/webhooks/{}?notice={notice}", webhook.id));
    if !state.engine.has_room() {
        return Ok(back("busy"));
    }
    let team = state.store.get_team(&session.team).await?;
    let now = herald_engine::now_ms();
    let id = EventId::generate(now);
    let meeting_id = format!("mtg_test_{}", herald_domain::ids::new_suffix(now));
    let data = sample_meeting_completed(team.account_id.as_str(), team.id.as_str(), &meeting_id);
    let raw = RawValue::from_string(data.clone())
        .map_err(|e| DashboardError::Internal(format!("the sample event is not JSON: {e}")))?;
    let event = NewEvent {
        body: Bytes::from(team_event_body(id.as_str(), EventType::MeetingCompleted, now, &raw)),
        id,
        id_given: false,
        team_id: team.id.to_string(),
        account_id: team.account_id.to_string(),
        event_type: EventType::MeetingCompleted,
        created_at: now,
        data,
    };
    let outcome = state
        .store
        .publish_test_event(event, &webhook.id, &state.engine.new_lease())
        .await?;
    Ok(back(deliver(&state, outcome, "test-sent").await?))
}

/// `POST /webhooks/{id}/resend` with `event_id`: a new delivery of a stored
/// event of the team, with the same id and body, marked manual.
#[tracing::instrument(skip_all, fields(team_id = %session.team, endpoint_id = %id))]
pub async fn resend(
    State(state): State<DashboardState>,
    Path(id): Path<String>,
    Protected { session, form }: Protected<FormPairs>,
) -> Result<Redirect, DashboardError> {
    let webhook = load_webhook(&state, &session, &id).await?;
    let back = |notice: &str| Redirect::to(&format!("/webhooks/{}?notice={notice}", webhook.id));
    let Some(event) = field(&form, "event_id").and_then(|raw| EventId::parse(raw).ok()) else {
        return Ok(back("unknown-event"));
    };
    if !state.engine.has_room() {
        return Ok(back("busy"));
    }
    let outcome = state
        .store
        .resend(
            &session.team,
            &webhook.id,
            &event,
            &state.engine.new_lease(),
            herald_engine::now_ms(),
        )
        .await?;
    Ok(back(deliver(&state, outcome, "resent").await?))
}

/// Hands a manual delivery to the engine; the notice to show either way.
async fn deliver(
    state: &DashboardState,
    outcome: ManualOutcome,
    done: &'static str,
) -> Result<&'static str, DashboardError> {
    match outcome {
        ManualOutcome::Created(delivery) => {
            state.engine.metrics().deliveries_created.fetch_add(1, Relaxed);
            state.engine.enqueue(vec![delivery]).await;
            Ok(done)
        }
        ManualOutcome::Deactivated => Ok("inactive"),
        ManualOutcome::UnknownEvent | ManualOutcome::NotAWebhookEvent => Ok("unknown-event"),
        ManualOutcome::UnknownWebhook => Err(DashboardError::NotFound),
    }
}

fn log_target(webhook: &Endpoint) -> LogTarget {
    LogTarget {
        base: format!("/webhooks/{}", webhook.id),
        resend: true,
        dropped: false,
    }
}

/// What the person typed into Create Webhook.
#[derive(Debug, Default)]
struct Draft {
    name: String,
    url: String,
    event_types: Vec<String>,
    status: String,
}

impl Draft {
    fn from_pairs(pairs: &[(String, String)]) -> Self {
        Self {
            name: field(pairs, "name").unwrap_or("").to_owned(),
            url: field(pairs, "url").unwrap_or("").trim().to_owned(),
            event_types: pairs
                .iter()
                .filter(|(k, _)| k == "eventTypes")
                .map(|(_, v)| v.clone())
                .collect(),
            status: field(pairs, "status").unwrap_or("active").to_owned(),
        }
    }
}

/// The key of the Create form's error that belongs to no field: the team is
/// at its webhook limit.
const LIMIT_ERROR: &str = "limit";

fn create_page(chrome: &Chrome, draft: &Draft, errors: &BTreeMap<&'static str, String>) -> Markup {
    let error = |field: &str| errors.get(field).cloned();
    let team_types: Vec<EventType> = EventType::ALL
        .into_iter()
        .filter(|t| t.is_team_webhook_type())
        .collect();
    let body = html! {
        nav.crumbs aria-label="Breadcrumb" { a href="/webhooks" { "Webhooks" } span { "/" } span { "Create webhook" } }
        div.page-header {
            div {
                h1 { "Create webhook" }
                p.muted { "Register an endpoint to receive webhook POST requests for this team." }
            }
        }
        section.card.form-card {
            form method="post" action="/webhooks" id="create-form" novalidate {
                (csrf_input(&chrome.csrf))
                @if let Some(message) = error(LIMIT_ERROR) {
                    div.notice.notice-warning role="alert" { (message) }
                } @else if !errors.is_empty() {
                    div.notice.notice-warning role="alert" { "Please fix the highlighted fields." }
                }
                div.field.invalid[error("name").is_some()] {
                    label for="name" { "Name" }
                    input id="name" type="text" name="name" value=(draft.name) maxlength="200"
                        placeholder="e.g. ATS sync" autocomplete="off";
                    @if let Some(message) = error("name") { p.field-error id="name-error" { (message) } }
                    p.hint { "A label to help you identify the webhook. It does not affect delivery or payloads." }
                }
                div.field.invalid[error("url").is_some()] {
                    label for="url" { "URL" }
                    input id="url" type="url" name="url" value=(draft.url)
                        placeholder="https://example.com/webhooks/herald" autocomplete="off" spellcheck="false";
                    @if let Some(message) = error("url") { p.field-error id="url-error" { (message) } }
                    p.hint { "The HTTPS endpoint that will receive webhook POST requests. It must be publicly reachable and accept JSON." }
                }
                fieldset.field.invalid[error("eventTypes").is_some()] {
                    legend { "Event types" }
                    @for event_type in &team_types {
                        label.check {
                            input type="checkbox" name="eventTypes" value=(event_type.as_str())
                                checked[draft.event_types.iter().any(|t| t == event_type.as_str())];
                            span {
                                span.mono { (event_type.as_str()) }
                                span.hint { " — a meeting has ended and all its assets are final." }
                            }
                        }
                    }
                    @if let Some(message) = error("eventTypes") { p.field-error id="eventTypes-error" { (message) } }
                }
                fieldset.field.invalid[error("status").is_some()] {
                    legend { "Status" }
                    label.check {
                        input type="radio" name="status" value="active" checked[draft.status != "deactivated"];
                        span { "Active — deliver events as they happen" }
                    }
                    label.check {
                        input type="radio" name="status" value="deactivated" checked[draft.status == "deactivated"];
                        span { "Deactivated — create it now, deliver nothing yet" }
                    }
                    @if let Some(message) = error("status") { p.field-error { (message) } }
                }
                div.form-actions {
                    button.btn.btn-primary type="submit" id="submit-webhook" { "Create webhook" }
                    a.btn.btn-link href="/webhooks" { "Cancel" }
                }
            }
        }
    };
    views::page(chrome, "Create webhook", Nav::Webhooks, body)
}

/// The Activate / Deactivate button of a webhook; `back` says where to return.
fn status_form(webhook: &Endpoint, back: &'static str, csrf: &str) -> Markup {
    let (next, label, class) = match webhook.status {
        EndpointStatus::Active => ("deactivated", "Deactivate", "btn btn-sm btn-danger-ghost toggle-status"),
        _ => ("active", "Activate", "btn btn-sm btn-success-ghost toggle-status"),
    };
    html! {
        form.inline method="post" action=(format!("/webhooks/{}/status", webhook.id)) {
            (csrf_input(csrf))
            input type="hidden" name="status" value=(next);
            input type="hidden" name="back" value=(back);
            button class=(class) type="submit" { (label) }
        }
    }
}

fn event_types(types: &[EventType]) -> Markup {
    html! {
        span.chips { @for t in types { span.chip.mono { (t.as_str()) } } }
    }
}

/// A confirmation named in the URL; unknown names show nothing, so no text
/// from the URL ever reaches the page.
fn notice_for(name: Option<&str>) -> Markup {
    let (text, warning) = match name {
        Some("created") => (
            "Webhook created. Its signing secret is in the configuration below.",
            false,
        ),
        Some("test-sent") => ("Test event sent. Its attempts appear in the log below.", false),
        Some("resent") => ("Event resent as a new delivery; its attempts are marked manual.", false),
        Some("activated") => ("Webhook activated: events are delivered again.", false),
        Some("recovering") => (
            "Recover started: the failed events are being sent again. Their attempts appear in the log below.",
            false,
        ),
        Some("recover-running") => (
            "A recover of this webhook is still running; wait for it to finish.",
            true,
        ),
        Some("rotate-in-grace") => (
            "The previous secret still signs until its grace period ends: rotate again after that, or choose None to drop every old secret now.",
            true,
        ),
        Some("rotated") => (
            "Signing secret rotated. Reveal it below and give it to your receiver before the grace period ends.",
            false,
        ),
        Some("deactivated") => (
            "Webhook deactivated: nothing is delivered until it is activated again.",
            false,
        ),
        Some("inactive") => ("This webhook is deactivated: activate it to send events to it.", true),
        Some("unknown-event") => ("There is no such event in this team.", true),
        Some("busy") => ("Herald is at capacity right now; try again in a moment.", true),
        _ => return html! {},
    };
    views::notice(text, warning)
}

/// A rule's message as a sentence: capitalised, with a full stop.
fn sentence(message: &str) -> String {
    let mut chars = message.chars();
    let mut out: String = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    };
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}
