//! A rollout's timeline as an SVG chart, drawn from the rollout's own
//! record (`Progress::events`, recorded by the machine as it goes): time
//! on x from the start to the end (or now), stepped lines of the old, new
//! and passing instance counts, vertical markers for batches, pauses, the
//! revert and the end, and the failure reason in words.
//!
//! [`svg`] is pure and deterministic: the same record and `now` give the
//! same bytes (a golden test holds it to `testdata/`). Every string from
//! the record goes through [`esc`]; no font, script or external reference
//! is put in the document.
//!
//! [`timeline`] serves it at `GET /services/{service}/timeline.svg`: the
//! active rollout, or else the last finished one (its archived record),
//! read with the caller's token (the API's headers, or the page's login
//! session) as the API reads, so Consul's ACLs decide who sees it.

use std::fmt::Write as _;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::auth::Caller;
use super::error::ApiError;
use super::server::Shared;
use crate::consul::records::{RecordError, Records};
use crate::rollout::machine::{Counts, Event, EventKind, Rollout, State as Phase, Timestamp};
use crate::rollout::plan::parse_plan_id;

/// The chart's size, in CSS pixels.
pub const WIDTH: u32 = 960;
/// The chart's height.
pub const HEIGHT: u32 = 320;

/// The plot area: left, right, top, bottom.
const X0: f64 = 56.0;
const X1: f64 = 940.0;
const Y0: f64 = 72.0;
const Y1: f64 = 250.0;

/// Characters of a reason shown under the chart.
const REASON_SHOWN: usize = 150;

/// The lines: what, colour, dash pattern, and a vertical offset in pixels
/// so that lines at the same count stay visible side by side.
const LINES: [(&str, &str, &str, f64); 3] = [
    ("old", "#8a8f98", "", 2.0),
    ("new", "#1f6feb", "", 0.0),
    ("passing", "#2da44e", "6 3", -2.0),
];

/// A line's name in the legend: the passing count is of new instances only
/// (old ones passing are not counted), and the legend says so.
fn legend_label(line: &str) -> String {
    match line {
        "passing" => "new passing instances".into(),
        other => format!("{other} instances"),
    }
}

/// `text` safe as SVG character data or an attribute value: the five XML
/// specials escaped, control characters (not allowed in XML 1.0) replaced
/// by a space.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// `text` cut at `n` characters, marked when cut.
fn cut(text: &str, n: usize) -> String {
    match text.char_indices().nth(n) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}…", &text[..end]),
    }
}

/// A duration as the chart labels it: whole seconds (`1m 30s`).
fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// An instant in RFC 3339 (UTC), or in milliseconds since the epoch
/// beyond the year 9999, which RFC 3339 cannot write.
fn instant(t: Timestamp) -> String {
    const YEAR_10000: u64 = 253_402_300_800_000;
    if t.as_millis() < YEAR_10000 {
        t.to_string()
    } else {
        format!("{} ms after the epoch", t.as_millis())
    }
}

/// How the rollout ended, and when; `None` while it runs.
fn ended(r: &Rollout) -> Option<(&'static str, Timestamp)> {
    match &r.state {
        Phase::Succeeded { at } => Some(("succeeded", *at)),
        Phase::Reverted {
            aborted: true, at, ..
        } => Some(("aborted", *at)),
        Phase::Reverted { at, .. } => Some(("reverted", *at)),
        Phase::Failed { at, .. } => Some(("failed", *at)),
        _ => None,
    }
}

/// The reason a finished rollout gives, if it did not succeed.
fn reason(r: &Rollout) -> Option<&str> {
    match &r.state {
        Phase::Reverted { reason, .. } | Phase::Failed { reason, .. } => Some(reason),
        _ => None,
    }
}

/// A vertical marker: when, its label, its kind (the SVG class).
struct Marker {
    at: Timestamp,
    label: String,
    class: &'static str,
}

/// The markers of the events, in order: batch launches (`batch`),
/// canary, promotion and bake (`step`), failure, revert and the end
/// (`revert`, `end`).
fn markers(events: &[Event]) -> Vec<Marker> {
    let mut out = Vec::new();
    for e in events {
        let (label, class) = match &e.kind {
            EventKind::BatchLaunched { n: 0, size, .. } => (format!("stable ×{size}"), "batch"),
            EventKind::BatchLaunched { n, size, .. } => (format!("batch {n} ×{size}"), "batch"),
            EventKind::CanaryPaused { .. } => ("canary waits".to_owned(), "step"),
            EventKind::Promoted => ("promoted".to_owned(), "step"),
            EventKind::Baking { .. } => ("bake".to_owned(), "step"),
            EventKind::Failed { .. } => ("failed".to_owned(), "revert"),
            EventKind::RevertStarted { aborted: true, .. } => ("abort".to_owned(), "revert"),
            EventKind::RevertStarted { .. } => ("revert".to_owned(), "revert"),
            EventKind::Succeeded => ("succeeded".to_owned(), "end"),
            EventKind::Reverted { .. } => ("reverted".to_owned(), "end"),
            _ => continue,
        };
        out.push(Marker {
            at: e.at,
            label,
            class,
        });
    }
    out
}

/// Spans with nobody acting: operator pauses (`paused`) and stretches no
/// coordinator observed (`unobserved`), as (from, to, label, class).
fn spans(events: &[Event], end: Timestamp) -> Vec<(Timestamp, Timestamp, String, &'static str)> {
    let mut out = Vec::new();
    let mut paused: Option<(Timestamp, u32)> = None;
    for e in events {
        match &e.kind {
            EventKind::Paused { n } => paused = Some((e.at, *n)),
            EventKind::Resumed { .. } => {
                if let Some((from, n)) = paused.take() {
                    out.push((from, e.at, format!("paused ({n})"), "paused"));
                }
            }
            EventKind::Unobserved { gap_ms } => {
                let from = Timestamp(e.at.0.saturating_sub(*gap_ms));
                out.push((from, e.at, "unobserved".to_owned(), "unobserved"));
            }
            _ => {}
        }
    }
    if let Some((from, n)) = paused {
        out.push((from, end, format!("paused ({n})"), "paused"));
    }
    out
}

/// The chart's scales.
struct Scale {
    t0: u64,
    t1: u64,
    top: u32,
}

impl Scale {
    fn x(&self, t: Timestamp) -> f64 {
        let t = t.0.clamp(self.t0, self.t1);
        let span = (self.t1 - self.t0).max(1);
        X0 + (t - self.t0) as f64 * (X1 - X0) / span as f64
    }

    fn y(&self, v: u32) -> f64 {
        Y1 - f64::from(v) * (Y1 - Y0) / f64::from(self.top)
    }
}

/// One count of `c`, by line name.
fn count(c: &Counts, line: &str) -> u32 {
    match line {
        "old" => c.old,
        "new" => c.new,
        _ => c.passing,
    }
}

/// The stepped path of one line: each event's count holds until the next
/// event, the last one until the end.
fn path(events: &[Event], s: &Scale, line: &str, offset: f64) -> String {
    let mut d = String::new();
    let mut last: Option<u32> = None;
    for e in events {
        let v = count(&e.counts, line);
        let x = s.x(e.at);
        match last {
            None => {
                let _ = write!(d, "M{x:.1} {:.1}", s.y(v) + offset);
            }
            Some(prev) if prev != v => {
                let _ = write!(d, " H{x:.1} V{:.1}", s.y(v) + offset);
            }
            Some(_) => {}
        }
        last = Some(v);
    }
    let _ = write!(d, " H{:.1}", s.x(Timestamp(s.t1)));
    d
}

/// The timeline of `rollout` as a standalone SVG document, drawn up to
/// `now` while it runs (to its end once over).
pub fn svg(rollout: &Rollout, now: Timestamp) -> String {
    let spec = &rollout.spec;
    let events = &rollout.progress.events;
    let end = ended(rollout);
    let t0 = rollout
        .progress
        .started_at
        .or(events.first().map(|e| e.at))
        .unwrap_or(now);
    let t1 = end
        .map_or(now, |(_, at)| at)
        .max(events.last().map_or(t0, |e| e.at));
    let scale = Scale {
        t0: t0.0,
        t1: t1.0.max(t0.0.saturating_add(1000)),
        top: events
            .iter()
            .map(|e| e.counts.old.max(e.counts.new))
            .max()
            .unwrap_or(0)
            .max(1),
    };
    let outcome = end.map_or_else(|| rollout.state.name(), |(word, _)| word);
    let title = format!(
        "Rollout {} of {}: {} → {} ({outcome})",
        spec.id, spec.service, spec.stable.version, spec.target_version
    );

    let mut o = String::with_capacity(8 * 1024);
    let _ = write!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\" \
         role=\"img\" aria-label=\"{t}\">\n<title>{t}</title>\n",
        t = esc(&title)
    );
    let _ = writeln!(
        o,
        "<rect width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"#ffffff\"/>"
    );
    let elapsed = Duration::from_millis(scale.t1 - scale.t0);
    let when = if end.is_some() { "in" } else { "running for" };
    let _ = writeln!(
        o,
        "<text x=\"{X0}\" y=\"20\" font-size=\"15\" font-weight=\"bold\">{}</text>",
        esc(&format!("{title}, {when} {}", human(elapsed)))
    );
    let _ = writeln!(
        o,
        "<text x=\"{X0}\" y=\"38\" fill=\"#57606a\">{}</text>",
        esc(&format!(
            "started {} · {} → {} · batches done: {}",
            instant(t0),
            spec.stable.image,
            spec.target_image,
            rollout.progress.batches_done
        ))
    );
    legend(&mut o);

    // Spans first (behind everything), then the grid, the lines, markers.
    for (from, to, label, class) in spans(events, Timestamp(scale.t1)) {
        let (a, b) = (scale.x(from), scale.x(to));
        let _ = writeln!(
            o,
            "<g class=\"{class}\"><rect x=\"{a:.1}\" y=\"{Y0:.1}\" width=\"{:.1}\" height=\"{:.1}\" \
             fill=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"#57606a\">{}</text></g>",
            (b - a).max(1.0),
            Y1 - Y0,
            if class == "paused" {
                "#fff8c5"
            } else {
                "#eaeef2"
            },
            a + 3.0,
            Y1 - 6.0,
            esc(&label)
        );
    }
    grid(&mut o, &scale);
    if events.is_empty() {
        let _ = writeln!(
            o,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#57606a\">{}</text>",
            (X0 + X1) / 2.0,
            (Y0 + Y1) / 2.0,
            esc("No events recorded: this rollout was written by a release without timelines.")
        );
    } else {
        for (line, colour, dash, offset) in LINES {
            let dash = if dash.is_empty() {
                String::new()
            } else {
                format!(" stroke-dasharray=\"{dash}\"")
            };
            let _ = writeln!(
                o,
                "<path class=\"line {line}\" d=\"{}\" fill=\"none\" stroke=\"{colour}\" \
                 stroke-width=\"2\"{dash}/>",
                path(events, &scale, line, offset)
            );
        }
    }
    for (i, m) in markers(events).iter().enumerate() {
        let x = scale.x(m.at);
        let colour = match m.class {
            "revert" => "#cf222e",
            "end" => "#24292f",
            _ => "#6e7781",
        };
        let dash = if m.class == "batch" || m.class == "step" {
            " stroke-dasharray=\"3 3\""
        } else {
            ""
        };
        // Labels take turns on three rows so neighbours do not overlap;
        // near the right edge they end at their line.
        let row = (i % 3) as f64;
        let (tx, anchor) = if x > X1 - 90.0 {
            (x - 3.0, " text-anchor=\"end\"")
        } else {
            (x + 3.0, "")
        };
        let _ = writeln!(
            o,
            "<g class=\"marker {}\"><line x1=\"{x:.1}\" y1=\"{Y0:.1}\" x2=\"{x:.1}\" y2=\"{Y1:.1}\" \
             stroke=\"{colour}\"{dash}/><text x=\"{tx:.1}\" y=\"{:.1}\"{anchor} fill=\"{colour}\">{}</text></g>",
            m.class,
            Y0 + 12.0 + row * 13.0,
            esc(&m.label)
        );
    }
    // Instances answering wrong: a red tick under the axis, named.
    for e in events {
        if let EventKind::InstanceWrong { id } = &e.kind {
            let x = scale.x(e.at);
            let _ = writeln!(
                o,
                "<g class=\"wrong\"><title>{}</title><line x1=\"{x:.1}\" y1=\"{:.1}\" \
                 x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#cf222e\" stroke-width=\"3\"/></g>",
                esc(&format!("{id} answered wrong")),
                Y1,
                Y1 + 6.0
            );
        }
    }
    footer(&mut o, rollout);
    o.push_str("</svg>\n");
    o
}

/// The legend: one swatch per line.
fn legend(o: &mut String) {
    for (i, (line, colour, dash, _)) in LINES.iter().enumerate() {
        let x = X0 + i as f64 * 110.0;
        let dash = if dash.is_empty() {
            String::new()
        } else {
            format!(" stroke-dasharray=\"{dash}\"")
        };
        let _ = writeln!(
            o,
            "<g class=\"legend\"><line x1=\"{x:.1}\" y1=\"54\" x2=\"{:.1}\" y2=\"54\" \
             stroke=\"{colour}\" stroke-width=\"2\"{dash}/><text x=\"{:.1}\" y=\"58\">{}</text></g>",
            x + 20.0,
            x + 25.0,
            esc(&legend_label(line))
        );
    }
}

/// Axes: the count at the bottom and top, elapsed time at five ticks.
fn grid(o: &mut String, s: &Scale) {
    for v in [0, s.top] {
        let y = s.y(v);
        let _ = writeln!(
            o,
            "<line x1=\"{X0:.1}\" y1=\"{y:.1}\" x2=\"{X1:.1}\" y2=\"{y:.1}\" stroke=\"#d0d7de\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#57606a\">{v}</text>",
            X0 - 6.0,
            y + 4.0
        );
    }
    for i in 0..=4u64 {
        // In u128: a record with absurd instants must not overflow.
        let t = s.t0 + u64::try_from(u128::from(s.t1 - s.t0) * u128::from(i) / 4).unwrap_or(0);
        let x = s.x(Timestamp(t));
        let anchor = match i {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let _ = writeln!(
            o,
            "<line x1=\"{x:.1}\" y1=\"{Y1:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#8c959f\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\" fill=\"#57606a\">{}</text>",
            Y1 + 4.0,
            Y1 + 18.0,
            esc(&human(Duration::from_millis(t - s.t0)))
        );
    }
}

/// Under the chart: the reason a rollout did not succeed, and how many
/// events the bounded record dropped.
fn footer(o: &mut String, r: &Rollout) {
    let mut y = Y1 + 40.0;
    if let Some(reason) = reason(r) {
        let _ = writeln!(
            o,
            "<text class=\"reason\" x=\"{X0}\" y=\"{y:.1}\" fill=\"#cf222e\">{}<title>{}</title></text>",
            esc(&cut(reason, REASON_SHOWN)),
            esc(reason)
        );
        y += 16.0;
    }
    if r.progress.events_dropped > 0 {
        let _ = writeln!(
            o,
            "<text class=\"dropped\" x=\"{X0}\" y=\"{y:.1}\" fill=\"#57606a\">{}</text>",
            esc(&format!(
                "{} events in the middle were not kept (the record keeps the first and the last).",
                r.progress.events_dropped
            ))
        );
    }
}

/// A service's rollout to draw: the active one, or else the last finished
/// one (the archived record of the newest plan with an outcome); `None`
/// when the service never had one. Read with the caller's token.
pub async fn rollout_to_draw(
    c: &Caller,
    prefix: &str,
    service: &str,
) -> Result<Option<Rollout>, ApiError> {
    if let Some((r, _)) = c.store.rollout(service).await? {
        return Ok(Some(r));
    }
    let plans = c.store.plans(service).await?;
    let Some((plan, _)) = plans.iter().rev().find(|(p, _)| p.outcome.is_some()) else {
        return Ok(None);
    };
    let n = parse_plan_id(&plan.id).map_or(0, |(_, n)| n);
    let key = format!("{prefix}/services/{service}/rollouts/{n:010}");
    match Records::new(c.store.client().clone())
        .get::<Rollout>(&key)
        .await
    {
        Ok(r) => Ok(r.map(|v| v.value)),
        Err(RecordError::Consul(crate::consul::Error::PermissionDenied { body, .. }))
            if !body.contains("ACL not found") =>
        {
            Err(ApiError::Forbidden(format!(
                "the last rollout of {service} ({}) is archived at {key}, which this token may \
                 not read (it needs key:read on key_prefix \"{prefix}/services/{service}/rollouts/\"): {body}",
                plan.id
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// The SVG answer: `image/svg+xml`, never cached (it is one caller's
/// view, and it changes), and no script or outside resource even when
/// opened on its own.
pub fn answer(body: String) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("image/svg+xml; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// The chart for a service that has had no rollout yet.
pub fn nothing_yet(service: &str) -> String {
    let t = esc(&format!("No rollout of {service} yet"));
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"60\" \
         viewBox=\"0 0 {WIDTH} 60\" font-family=\"sans-serif\" font-size=\"13\" role=\"img\" \
         aria-label=\"{t}\">\n<title>{t}</title>\n<text x=\"{X0}\" y=\"34\" fill=\"#57606a\">{t}</text>\n</svg>\n"
    )
}

/// The chart of `service` for caller `c` at `now`.
pub async fn for_caller(
    c: &Caller,
    prefix: &str,
    service: &str,
    now: Timestamp,
) -> Result<Response, ApiError> {
    let body = match rollout_to_draw(c, prefix, service).await? {
        Some(r) => svg(&r, now),
        None => nothing_yet(service),
    };
    Ok(answer(body))
}

/// `GET /services/{service}/timeline.svg`: the page's login session (the
/// page embeds the chart as an image, which carries the session cookie,
/// not a token), or else the token as the API takes it. Errors are the
/// API's JSON errors (404 for an unknown service, 401 without a token or
/// session, 403 when Consul refuses the token).
pub async fn timeline(
    State(state): State<Shared>,
    Path(service): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(svc) = state.services.iter().find(|s| s.name == service) else {
        return Err(ApiError::NotFound(format!(
            "no service {service:?} in [[services]]"
        )));
    };
    let c = super::page::reader(&state, &headers).await?;
    let now = Timestamp::from_millis(crate::rollout::plan::now_ms());
    for_caller(&c, &state.prefix, &svc.name, now).await
}

#[cfg(test)]
mod tests;
