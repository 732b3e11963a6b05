//! An endpoint's attempt log as the dashboard shows it, for team webhooks and
//! real-time endpoints alike: filters (status, event id), cursor paging,
//! newest first, the JSON the page polls for new attempts, and the Inspect
//! view of one attempt.
//!
//! Rows are described once ([`Row`]) and rendered twice: here as HTML, and by
//! `dashboard.js` from the polled JSON, which sets every value with
//! `textContent`. The log is read only; it is written by the engine.

use axum::Json;
use herald_domain::attempt::AttemptStatus;
use herald_domain::cursor::Cursor;
use herald_domain::ids::{EndpointId, EventId, TeamId};
use herald_store::{Attempt, AttemptFilter};
use maud::{Markup, html};
use serde::{Deserialize, Serialize};

use crate::format::{mask_url, pretty_body, utc_time};
use crate::views::{self, attempt_badge, attempt_status, csrf_input, manual_tag};
use crate::{DashboardError, DashboardState};

const DEFAULT_LIMIT: usize = 25;
const MAX_LIMIT: usize = 100;

/// The log's query string. `limit` is kept through paging and polling.
#[derive(Debug, Default, Deserialize)]
pub struct LogQuery {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default, rename = "eventId")]
    pub event_id: Option<String>,
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub limit: Option<String>,
    /// A confirmation to show, by name (never text from the URL).
    #[serde(default)]
    pub notice: Option<String>,
}

/// Where a log lives and what it offers.
pub struct LogTarget {
    /// The endpoint's page, e.g. `/webhooks/wh_…`; the log's URLs hang off it.
    pub base: String,
    /// Webhooks offer Resend on each row; real-time endpoints do not.
    pub resend: bool,
    /// Real-time endpoints can have dropped attempts.
    pub dropped: bool,
}

/// A parsed filter, with what the person typed so the form can show it again.
pub struct Filter {
    status: Option<AttemptStatus>,
    event_id: Option<EventId>,
    before: Option<Cursor>,
    limit: usize,
    status_raw: String,
    event_id_raw: String,
    /// Why the event id (or the cursor) cannot be used; the log shows nothing then.
    problem: Option<String>,
}

impl Filter {
    pub fn parse(query: &LogQuery) -> Self {
        let mut problem = None;
        let status_raw = query.status.clone().unwrap_or_default();
        let status = AttemptStatus::parse(&status_raw);
        let event_id_raw = query.event_id.as_deref().unwrap_or("").trim().to_owned();
        let event_id = if event_id_raw.is_empty() {
            None
        } else {
            match EventId::parse(&event_id_raw) {
                Ok(id) => Some(id),
                Err(why) => {
                    problem = Some(format!("An event id {why}."));
                    None
                }
            }
        };
        let before = match query.cursor.as_deref().filter(|c| !c.is_empty()) {
            None => None,
            Some(raw) => match Cursor::decode(raw) {
                Some(cursor) => Some(cursor),
                None => {
                    problem = Some("This page link is not valid any more; go back to the newest attempts.".into());
                    None
                }
            },
        };
        let limit = query
            .limit
            .as_deref()
            .and_then(|l| l.parse::<usize>().ok())
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .unwrap_or(DEFAULT_LIMIT);
        Self {
            status,
            event_id,
            before,
            limit,
            status_raw: status.map(|s| s.as_str().to_owned()).unwrap_or_default(),
            event_id_raw,
            problem,
        }
    }

    /// The same filter from its first page: what the page polls.
    pub fn first_page(&self) -> Self {
        Self {
            before: None,
            problem: self.problem.clone(),
            event_id: self.event_id.clone(),
            status_raw: self.status_raw.clone(),
            event_id_raw: self.event_id_raw.clone(),
            ..*self
        }
    }

    /// The query string of this filter (without cursor), for links.
    fn query(&self, cursor: Option<&str>) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        if !self.status_raw.is_empty() {
            q.append_pair("status", &self.status_raw);
        }
        if !self.event_id_raw.is_empty() {
            q.append_pair("eventId", &self.event_id_raw);
        }
        if self.limit != DEFAULT_LIMIT {
            q.append_pair("limit", &self.limit.to_string());
        }
        if let Some(cursor) = cursor {
            q.append_pair("cursor", cursor);
        }
        q.finish()
    }
}

/// One page of a log: its rows, newest first, and the cursor of the next page.
pub struct LogPage {
    rows: Vec<Row>,
    next: Option<String>,
}

/// One attempt as a row of the log table, in the HTML and in the polled JSON.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    id: String,
    cursor: String,
    event_id: String,
    event_type: &'static str,
    timestamp: i64,
    iso: String,
    utc: String,
    status_label: &'static str,
    badge_class: &'static str,
    attempt: u32,
    manual: bool,
    outcome: String,
    inspect_url: String,
}

impl Row {
    fn new(a: &Attempt, target: &LogTarget) -> Self {
        let (tone, label) = attempt_status(a.status);
        Self {
            id: a.id.to_string(),
            cursor: Cursor {
                timestamp_ms: a.timestamp_ms,
                seq: a.seq,
            }
            .encode(),
            event_id: a.event_id.to_string(),
            event_type: a.event_type.as_str(),
            timestamp: a.timestamp_ms,
            iso: crate::format::iso_time(a.timestamp_ms),
            utc: utc_time(a.timestamp_ms),
            status_label: label,
            badge_class: tone.class(),
            attempt: a.attempt,
            manual: a.manual,
            outcome: outcome(a),
            inspect_url: format!("{}/attempts/{}", target.base, a.id),
        }
    }
}

/// What an attempt came to, in a few words.
fn outcome(a: &Attempt) -> String {
    match (&a.response, &a.error) {
        (Some(response), _) => format!("HTTP {}", response.status),
        (None, Some(error)) => {
            let short: String = error.chars().take(60).collect();
            if short.len() < error.len() {
                format!("{short}…")
            } else {
                short
            }
        }
        (None, None) => "no answer".into(),
    }
}

/// Reads one page of the endpoint's log under `filter`.
pub async fn load(
    state: &DashboardState,
    team: &TeamId,
    endpoint: &EndpointId,
    filter: &Filter,
    target: &LogTarget,
) -> Result<LogPage, DashboardError> {
    if filter.problem.is_some() {
        return Ok(LogPage {
            rows: Vec::new(),
            next: None,
        });
    }
    let (attempts, next) = herald_store::attempt_page(
        state.store.as_ref(),
        team,
        endpoint,
        &AttemptFilter {
            status: filter.status,
            event_id: filter.event_id.clone(),
            before: filter.before,
            limit: filter.limit,
        },
    )
    .await?;
    Ok(LogPage {
        rows: attempts.iter().map(|a| Row::new(a, target)).collect(),
        next,
    })
}

/// The rows the page's script polls for (the first page of the filter).
pub fn rows_json(page: &LogPage) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "rows": page.rows }))
}

/// The log card: filters, table, pager.
pub fn render(target: &LogTarget, filter: &Filter, page: &LogPage, csrf: &str) -> Markup {
    let first_page = filter.before.is_none() && filter.problem.is_none();
    let poll_url = format!("{}/attempts.json?{}", target.base, filter.query(None));
    let older_base = format!("{}?{}", target.base, filter.query(Some("")));
    let mut statuses = vec![
        (AttemptStatus::Success, "Success"),
        (AttemptStatus::Retrying, "Retrying"),
        (AttemptStatus::Failed, "Failed"),
    ];
    if target.dropped {
        statuses.push((AttemptStatus::Dropped, "Dropped"));
    }
    html! {
        section.card.log-card {
            div.card-header {
                div {
                    h2 { "Logs" }
                    p.muted.small { "One row per delivery attempt, newest first. Retries share the event's id and payload." }
                }
                @if first_page {
                    span.live id="live" title="New attempts appear here as they happen" { span.pulse {} "Live" }
                }
            }
            form.filters method="get" action=(target.base) {
                div.field.field-inline {
                    label for="filter-status" { "Status" }
                    select id="filter-status" name="status" {
                        option value="" selected[filter.status.is_none()] { "All statuses" }
                        @for (status, label) in &statuses {
                            option value=(status.as_str()) selected[filter.status == Some(*status)] { (label) }
                        }
                    }
                }
                div.field.field-inline.field-grow {
                    label for="filter-event" { "Event ID" }
                    input id="filter-event" type="text" name="eventId" value=(filter.event_id_raw)
                        placeholder="evt_…" autocomplete="off" spellcheck="false";
                }
                @if filter.limit != DEFAULT_LIMIT {
                    input type="hidden" name="limit" value=(filter.limit);
                }
                div.filter-actions {
                    button.btn.btn-secondary type="submit" id="apply-filters" { "Apply" }
                    @if !filter.status_raw.is_empty() || !filter.event_id_raw.is_empty() {
                        a.btn.btn-link href=(target.base) id="clear-filters" { "Clear" }
                    }
                }
            }
            @if let Some(problem) = &filter.problem {
                p.field-error id="filter-error" { (problem) }
            }
            div.table-wrap {
                table.table.log-table id="log"
                    data-poll=[first_page.then_some(&poll_url)]
                    data-limit=(filter.limit)
                    data-resend=[target.resend.then(|| format!("{}/resend", target.base))] {
                    thead {
                        tr {
                            th { "Event type" }
                            th { "Timestamp" }
                            th { "Status" }
                            th.actions-col { "Actions" }
                        }
                    }
                    tbody {
                        @for row in &page.rows {
                            (render_row(row, target, csrf))
                        }
                    }
                }
            }
            p.empty id="log-empty" hidden[!page.rows.is_empty()] {
                @if filter.problem.is_some() || !filter.status_raw.is_empty() || !filter.event_id_raw.is_empty() {
                    "No attempts match these filters."
                } @else {
                    "No delivery attempts yet. They appear here as soon as an event is sent."
                }
            }
            div.pager {
                @if filter.before.is_some() {
                    a.btn.btn-secondary href=(format!("{}?{}", target.base, filter.query(None))) id="newest-link" { "← Newest" }
                }
                a.btn.btn-secondary id="older-link" data-base=(older_base)
                    href=(page.next.as_deref().map(|c| format!("{older_base}{c}")).unwrap_or_default())
                    hidden[page.next.is_none()] { "Older →" }
            }
        }
    }
}

fn render_row(row: &Row, target: &LogTarget, csrf: &str) -> Markup {
    html! {
        tr data-id=(row.id) data-cursor=(row.cursor) {
            td data-label="Event type" {
                div.mono { (row.event_type) }
                div.sub.mono.event-id { (row.event_id) }
            }
            td data-label="Timestamp" {
                time datetime=(row.iso) data-ts=(row.timestamp) { (row.utc) }
            }
            td data-label="Status" {
                div.status-cell {
                    span class=(row.badge_class) { span.dot {} (row.status_label) }
                    @if row.manual { (manual_tag()) }
                }
                div.sub { "Attempt " (row.attempt) " · " (row.outcome) }
            }
            td.actions data-label="Actions" {
                a.btn.btn-sm.btn-secondary.inspect href=(row.inspect_url) { "Inspect" }
                @if target.resend {
                    form.inline method="post" action=(format!("{}/resend", target.base)) {
                        (csrf_input(csrf))
                        input type="hidden" name="event_id" value=(row.event_id);
                        button.btn.btn-sm.btn-ghost.resend type="submit" { "Resend" }
                    }
                }
            }
        }
    }
}

/// The Inspect view of one attempt: what was sent and what came back.
pub fn render_inspect(target: &LogTarget, attempt: &Attempt, csrf: &str) -> Markup {
    let request_body = attempt
        .request_body
        .as_deref()
        .map(pretty_body)
        .unwrap_or_else(|| "(not kept)".into());
    html! {
        div.page-header {
            div {
                h1 { "Attempt " (attempt.attempt) " of " span.mono { (attempt.event_id) } }
                div.header-meta {
                    (attempt_badge(attempt.status))
                    @if attempt.manual { (manual_tag()) }
                    span.muted { (views::time(attempt.timestamp_ms)) " · " (attempt.duration_ms) " ms" }
                }
            }
            div.header-actions {
                a.btn.btn-secondary href=(target.base) { "Back to log" }
                @if target.resend {
                    form.inline method="post" action=(format!("{}/resend", target.base)) {
                        (csrf_input(csrf))
                        input type="hidden" name="event_id" value=(attempt.event_id);
                        button.btn.btn-primary type="submit" id="resend" { "Resend event" }
                    }
                }
            }
        }
        div.grid-2 {
            section.card id="request" {
                h2 { "Request" }
                dl.kv {
                    dt { "Method" } dd.mono { "POST" }
                    dt { "URL" } dd.mono.break { (mask_url(&attempt.request_url)) }
                    dt { "Event type" } dd.mono { (attempt.event_type.as_str()) }
                }
                h3 { "Headers" }
                (headers_table(&attempt.request_headers))
                h3 { "Body" }
                pre.code id="request-body" tabindex="0" aria-label="Request body" { (request_body) }
            }
            section.card id="response" {
                h2 { "Response" }
                @match (&attempt.response, &attempt.error) {
                    (Some(response), _) => {
                        dl.kv {
                            dt { "Status" }
                            dd { span.mono.http-status id="response-status" { (response.status) } }
                        }
                        h3 { "Headers" }
                        (headers_table(&response.headers))
                        h3 { "Body" }
                        @if response.body.is_empty() {
                            p.muted { "(empty)" }
                        } @else {
                            pre.code id="response-body" tabindex="0" aria-label="Response body" { (pretty_body(&response.body)) }
                        }
                    }
                    (None, Some(error)) => {
                        div.error-box id="response-error" {
                            strong { "No response. " }
                            (error)
                        }
                    }
                    (None, None) => {
                        p.muted { "No response was recorded." }
                    }
                }
            }
        }
    }
}

fn headers_table(headers: &[(String, String)]) -> Markup {
    html! {
        @if headers.is_empty() {
            p.muted { "(none)" }
        } @else {
            table.table.headers-table {
                tbody {
                    @for (name, value) in headers {
                        tr { th.mono { (name) } td.mono.break { (value) } }
                    }
                }
            }
        }
    }
}
