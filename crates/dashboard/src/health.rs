//! A webhook's health at a glance (contract §4.3): its success rate over the
//! last 24 hours on the list, a banner when Herald deactivated it, and on its
//! page a chart of the hourly buckets with the p50/p95 durations, drawn as
//! SVG on the server (no script, nothing from outside). Everything comes
//! from the store's per-hour counters, never from the log.

use herald_domain::ids::{EndpointId, TeamId};
use herald_domain::webhook::EndpointStatus;
use herald_store::health::{fill_hours, first_hour, quantile_ms};
use herald_store::{Endpoint, HourStats};
use maud::{Markup, html};

use crate::format::utc_time;
use crate::views::{self, Tone, csrf_input};
use crate::{DashboardError, DashboardState};

/// The hours the list's rate and the page's chart cover.
pub const HOURS: i64 = 24;

/// The webhook's last [`HOURS`] hours up to the current one, oldest first.
pub async fn last_day(
    state: &DashboardState,
    team: &TeamId,
    id: &EndpointId,
) -> Result<Vec<HourStats>, DashboardError> {
    let from = first_hour(state.settings.clock.now_ms(), HOURS);
    let stored = state.store.webhook_stats(team, id, from).await?;
    Ok(fill_hours(stored, from, HOURS))
}

/// Attempts of the hours, and the share of them that succeeded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub attempts: i64,
    pub success: f64,
}

pub fn rate(hours: &[HourStats]) -> Option<Rate> {
    let attempts: i64 = hours.iter().map(|h| h.success + h.retrying + h.failed).sum();
    let success: i64 = hours.iter().map(|h| h.success).sum();
    (attempts > 0).then(|| Rate {
        attempts,
        success: success as f64 / attempts as f64,
    })
}

/// How a success rate reads: below 50% the webhook is failing, below 95%
/// it is struggling.
fn rate_tone(rate: f64) -> Tone {
    if rate < 0.5 {
        Tone::Danger
    } else if rate < 0.95 {
        Tone::Warning
    } else {
        Tone::Success
    }
}

fn percent(share: f64) -> String {
    let p = share * 100.0;
    if p > 99.9 && p < 100.0 {
        "99.9%".to_owned()
    } else if p >= 10.0 || p == 0.0 {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

/// The list's cell: the rate as a badge, "Failing" when below half.
pub fn rate_cell(hours: &[HourStats]) -> Markup {
    match rate(hours) {
        None => html! { span.muted.small { "No attempts" } },
        Some(r) => {
            let tone = rate_tone(r.success);
            let label = match tone {
                Tone::Danger => format!("Failing · {}", percent(r.success)),
                _ => percent(r.success),
            };
            html! {
                span.rate title=(format!("{} of {} attempts in the last 24 hours succeeded", percent(r.success), r.attempts)) {
                    (views::badge(tone, &label))
                }
            }
        }
    }
}

/// The status badge with Herald's reason, when Herald deactivated it.
pub fn status_badge(webhook: &Endpoint) -> Markup {
    match (&webhook.deactivated_reason, webhook.status) {
        (Some(reason), EndpointStatus::Deactivated) => html! {
            span title=(reason) { (views::badge(Tone::Danger, "Deactivated by Herald")) }
        },
        _ => views::endpoint_badge(webhook.status),
    }
}

/// The banner of a webhook Herald deactivated, with the way back.
pub fn deactivation_banner(webhook: &Endpoint, csrf: &str) -> Markup {
    let Some(reason) = webhook.deactivated_reason.as_deref() else {
        return html! {};
    };
    if webhook.status != EndpointStatus::Deactivated {
        return html! {};
    }
    html! {
        div.banner.banner-danger role="alert" id="deactivated-banner" {
            div {
                strong { "Herald deactivated this webhook." }
                " " (reason)
                " Nothing is delivered to it until it is activated again; events published meanwhile are not sent to it."
            }
            form.inline method="post" action=(format!("/webhooks/{}/status", webhook.id)) {
                (csrf_input(csrf))
                input type="hidden" name="status" value="active";
                input type="hidden" name="back" value="detail";
                button.btn.btn-sm.btn-secondary type="submit" { "Activate again" }
            }
        }
    }
}

/// A sentence that says in one read how the webhook is doing.
fn headline(webhook: &Endpoint, hours: &[HourStats]) -> Markup {
    let rate = rate(hours);
    html! {
        p.health-headline id="health-headline" {
            @match rate {
                None => { "No attempts in the last 24 hours." }
                Some(r) => {
                    strong { (percent(r.success)) }
                    " of " (r.attempts) " attempts in the last 24 hours succeeded."
                }
            }
            @if let Some(since) = webhook.failing_since {
                " " span.health-failing { "Every delivery has failed since " (views::time(since)) "." }
            }
        }
    }
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 200.0;
const LEFT: f64 = 44.0;
const RIGHT: f64 = 52.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 26.0;

/// An hour's p50 and p95 durations, when it had attempts.
type Quantiles = (Option<i64>, Option<i64>);

/// The health card: the headline, the chart and its numbers as a table.
pub fn card(webhook: &Endpoint, hours: &[HourStats]) -> Markup {
    let max_count = hours
        .iter()
        .map(|h| h.success + h.retrying + h.failed)
        .max()
        .unwrap_or(0)
        .max(1);
    let quantiles: Vec<Quantiles> = hours
        .iter()
        .map(|h| (quantile_ms(h, 0.5), quantile_ms(h, 0.95)))
        .collect();
    let max_ms = quantiles.iter().filter_map(|q| q.1).max().unwrap_or(0).max(1);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let slot = plot_w / hours.len().max(1) as f64;
    let bar_w = (slot * 0.7).max(1.0);
    let y_count = |n: i64| TOP + plot_h - plot_h * n as f64 / max_count as f64;
    let y_ms = |ms: i64| TOP + plot_h - plot_h * ms as f64 / max_ms as f64;
    let x_mid = |i: usize| LEFT + slot * (i as f64 + 0.5);
    let line = |pick: fn(&Quantiles) -> Option<i64>| -> String {
        quantiles
            .iter()
            .enumerate()
            .filter_map(|(i, q)| pick(q).map(|ms| format!("{:.1},{:.1}", x_mid(i), y_ms(ms))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    // Each hour's bar: success at the bottom, then retrying, then failed.
    let mut rects: Vec<(&'static str, String, String, String)> = Vec::new();
    for (i, h) in hours.iter().enumerate() {
        let x = format!("{:.1}", LEFT + slot * i as f64 + (slot - bar_w) / 2.0);
        let mut base = 0;
        for (class, n) in [
            ("bar-success", h.success),
            ("bar-retrying", h.retrying),
            ("bar-failed", h.failed),
        ] {
            if n > 0 {
                let (top, bottom) = (y_count(base + n), y_count(base));
                rects.push((class, x.clone(), format!("{top:.1}"), format!("{:.1}", bottom - top)));
            }
            base += n;
        }
    }
    let summary = match rate(hours) {
        None => "No attempts in the last 24 hours.".to_owned(),
        Some(r) => format!(
            "Attempts per hour over the last 24 hours: {} of {} succeeded; the slowest hour's p95 was {} ms.",
            percent(r.success),
            r.attempts,
            max_ms
        ),
    };
    html! {
        section.card id="health" {
            div.card-header {
                div {
                    h2 { "Health" }
                    p.muted.small { "Attempts per hour by outcome, and how long the median (p50) and slowest 5% (p95) took." }
                }
            }
            (headline(webhook, hours))
            div.chart-wrap {
                svg.chart viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-labelledby="health-chart-title" {
                    title id="health-chart-title" { (summary) }
                    line.axis x1=(LEFT) y1=(TOP + plot_h) x2=(WIDTH - RIGHT) y2=(TOP + plot_h) {}
                    text.axis-label x=(LEFT - 6.0) y=(TOP + 4.0) text-anchor="end" { (max_count) }
                    text.axis-label x=(LEFT - 6.0) y=(TOP + plot_h) text-anchor="end" { "0" }
                    text.axis-label x=(WIDTH - RIGHT + 6.0) y=(TOP + 4.0) { (max_ms) " ms" }
                    @for (class, x, y, height) in &rects {
                        rect class=(class) x=(x) y=(y) width=(format!("{bar_w:.1}")) height=(height) {}
                    }
                    @for (i, h) in hours.iter().enumerate() {
                        @if i % 6 == 0 {
                            text.axis-label x=(format!("{:.1}", x_mid(i))) y=(HEIGHT - 8.0) text-anchor="middle" {
                                (utc_time(h.start_ms).get(11..16).unwrap_or(""))
                            }
                        }
                    }
                    polyline.line-p95 points=(line(|q| q.1)) {}
                    polyline.line-p50 points=(line(|q| q.0)) {}
                    @for (i, q) in quantiles.iter().enumerate() {
                        @if let Some(ms) = q.1 {
                            circle.dot-p95 cx=(format!("{:.1}", x_mid(i))) cy=(format!("{:.1}", y_ms(ms))) r="3" {}
                        }
                        @if let Some(ms) = q.0 {
                            circle.dot-p50 cx=(format!("{:.1}", x_mid(i))) cy=(format!("{:.1}", y_ms(ms))) r="3" {}
                        }
                    }
                }
            }
            ul.legend {
                li { span.swatch.swatch-success {} "Success" }
                li { span.swatch.swatch-retrying {} "Retrying" }
                li { span.swatch.swatch-failed {} "Failed" }
                li { span.swatch-line.swatch-p50 {} "p50 duration" }
                li { span.swatch-line.swatch-p95 {} "p95 duration" }
            }
            details.health-numbers {
                summary { "Show the numbers" }
                div.table-wrap {
                    table.table id="health-table" {
                        thead { tr { th { "Hour (UTC)" } th { "Success" } th { "Retrying" } th { "Failed" } th { "p50" } th { "p95" } } }
                        tbody {
                            @for (h, q) in hours.iter().zip(&quantiles).rev() {
                                tr {
                                    td { (views::time(h.start_ms)) }
                                    td { (h.success) }
                                    td { (h.retrying) }
                                    td { (h.failed) }
                                    td { (q.0.map(|ms| format!("{ms} ms")).unwrap_or_else(|| "—".into())) }
                                    td { (q.1.map(|ms| format!("{ms} ms")).unwrap_or_else(|| "—".into())) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hour(success: i64, retrying: i64, failed: i64) -> HourStats {
        HourStats {
            success,
            retrying,
            failed,
            ..HourStats::default()
        }
    }

    #[test]
    fn the_rate_counts_every_attempt_and_reads_as_failing_below_half() {
        assert_eq!(rate(&[hour(0, 0, 0)]), None);
        let r = rate(&[hour(3, 0, 0), hour(0, 4, 1)]).unwrap();
        assert_eq!(r.attempts, 8);
        assert!((r.success - 0.375).abs() < 1e-9);
        assert!(matches!(rate_tone(r.success), Tone::Danger));
        assert!(matches!(rate_tone(0.9), Tone::Warning));
        assert!(matches!(rate_tone(1.0), Tone::Success));
        assert_eq!(percent(0.9996), "99.9%");
        assert_eq!(percent(1.0), "100%");
        assert_eq!(percent(0.055), "5.5%");
    }
}
