//! The page's HTML, rendered on the server from the API's views
//! ([`super::super::views`]), so page and API show the same facts.
//!
//! Every text that comes from a record, Consul or the request goes
//! through [`esc`]; nothing here ever receives a Consul token (a session's
//! CSRF token is the only secret a page holds, in its forms). The element
//! IDs are the contract with the browser tests
//! (`/work/helpers/console-page-contract.md`, summarised in the README).

use std::fmt::Write as _;

use super::super::api::OutboxView;
use super::super::views::{HistoryEntry, InstanceView, PlanView, RolloutView, ServiceView};
use crate::rollout::plan::Millis;
use crate::rollout::render;

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes one path segment of a link (service and plan names are plain,
/// but a record could hold anything).
fn seg(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Who is logged in and their CSRF token, for the header and the forms.
#[derive(Debug, Clone, Copy)]
pub struct Viewer<'a> {
    /// `#whoami`.
    pub who: &'a str,
    /// The session's CSRF token.
    pub csrf: &'a str,
}

/// A whole page: `title`, the header (who, logout) when logged in, `body`.
/// `live` names the service whose event stream the script opens.
pub fn layout(title: &str, viewer: Option<Viewer<'_>>, live: Option<&str>, body: &str) -> String {
    let mut h = String::with_capacity(body.len() + 1024);
    let _ = writeln!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · rollgate</title>\
         <link rel=\"stylesheet\" href=\"/assets/console.css\">\
         <script src=\"/assets/console.js\" defer></script></head>",
        esc(title)
    );
    match live {
        Some(service) => {
            let _ = write!(
                h,
                "<body data-live=\"off\" data-service=\"{}\">",
                esc(service)
            );
        }
        None => h.push_str("<body>"),
    }
    h.push_str("<header><a class=\"brand\" href=\"/\">rollgate</a><nav><a href=\"/\">Services</a> <a href=\"/outbox\">Outbox</a></nav>");
    if let Some(v) = viewer {
        let _ = write!(
            h,
            "<div class=\"who\">Logged in as <span id=\"whoami\">{}</span> \
             <form method=\"post\" action=\"/logout\" class=\"inline\">{}\
             <button id=\"logout\" type=\"submit\">Log out</button></form></div>",
            esc(v.who),
            csrf_input(v.csrf)
        );
    }
    h.push_str("</header>\n<main>\n");
    h.push_str(body);
    h.push_str("\n</main></body></html>\n");
    h
}

fn csrf_input(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    )
}

/// The login form: a token (ACLs on) or a name (ACLs off).
pub fn login(acls: bool, error: Option<&str>) -> String {
    let mut b = String::from("<h1>Log in</h1>\n");
    if let Some(e) = error {
        let _ = write!(
            b,
            "<p id=\"login-error\" class=\"error\" role=\"alert\">{}</p>",
            esc(e)
        );
    }
    b.push_str("<form method=\"post\" action=\"/login\" class=\"login\">");
    if acls {
        b.push_str(
            "<label for=\"token\">Your Consul ACL token</label>\
             <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" required>\
             <p class=\"hint\">The console acts with your token: Consul's ACLs (the operator \
             policy) decide what you may do, and decisions record the token's description. \
             It stays on the server, never in a page or a URL.</p>",
        );
    } else {
        b.push_str(
            "<label for=\"operator\">Your name</label>\
             <input id=\"operator\" name=\"operator\" maxlength=\"64\" required>\
             <p class=\"hint\">Consul's ACLs are off, so no token can say who you are: \
             decisions record this name (as <code>--as</code> does on the CLI).</p>",
        );
    }
    b.push_str("<button id=\"login-submit\" type=\"submit\">Log in</button></form>");
    layout("Log in", None, None, &b)
}

/// An error page (`#page-error`, or `#action-error` after a post).
pub fn error(viewer: Option<Viewer<'_>>, after_post: bool, message: &str) -> String {
    let id = if after_post {
        "action-error"
    } else {
        "page-error"
    };
    let body = format!(
        "<h1>Not done</h1><p id=\"{id}\" class=\"error\" role=\"alert\">{}</p>\
         <p><a href=\"/\">Services</a> · <a href=\"/login\">Log in</a></p>",
        esc(message)
    );
    layout("Error", viewer, None, &body)
}

/// `/`: every service at a glance.
pub fn services(viewer: Viewer<'_>, services: &[ServiceView]) -> String {
    let mut b = String::from(
        "<h1>Services</h1>\n<table id=\"services\"><thead><tr><th>Service</th>\
         <th>Stable version</th><th>Rollout</th><th>Pending plans</th></tr></thead><tbody>\n",
    );
    for s in services {
        let _ = write!(
            b,
            "<tr data-service=\"{name}\"><td><a class=\"service-link\" href=\"/services/{link}\">{name}</a></td><td>{stable}</td><td>",
            name = esc(&s.name),
            link = seg(&s.name),
            stable = stable_text(s),
        );
        match (&s.active_rollout, &s.last_outcome) {
            (Some(r), _) => {
                let _ = write!(
                    b,
                    "{} to {}: {} (batch {}/{})",
                    plan_link(&r.plan),
                    esc(&r.target_version),
                    esc(r.phase),
                    r.batch,
                    r.batches
                );
            }
            (None, Some(o)) => {
                let _ = write!(
                    b,
                    "last: {} {} at {}",
                    plan_link(&o.plan),
                    esc(o.outcome),
                    esc(&render::time(o.at))
                );
            }
            (None, None) => b.push_str("none yet"),
        }
        b.push_str("</td><td>");
        if s.pending_plans.is_empty() {
            b.push_str("none");
        }
        for p in &s.pending_plans {
            let _ = write!(b, "{} ", plan_link(p));
        }
        b.push_str("</td></tr>\n");
    }
    b.push_str("</tbody></table>");
    layout("Services", Some(viewer), None, &b)
}

fn plan_link(id: &str) -> String {
    format!(
        "<a class=\"plan-link\" href=\"/plans/{}\">{}</a>",
        seg(id),
        esc(id)
    )
}

fn stable_text(s: &ServiceView) -> String {
    match (&s.stable, &s.stable_refused) {
        (Some(st), _) => esc(&st.version),
        (None, Some(_)) => "hidden (your token may not read it)".into(),
        (None, None) => "not recorded yet".into(),
    }
}

/// How a rollout that ended is shown.
#[derive(Debug)]
pub struct Ended<'a> {
    /// Its plan.
    pub plan: &'a str,
    /// `succeeded`, `reverted`, `failed`, `aborted`.
    pub outcome: &'a str,
    /// When.
    pub at: Millis,
    /// Why, as the alert gives it (empty for a success).
    pub reason: &'a str,
    /// Batches of its plan.
    pub batches: u32,
    /// The versions.
    pub from_version: &'a str,
    /// To.
    pub to_version: &'a str,
    /// The service's instances now (new: the plan's target image).
    pub instances: Vec<InstanceView>,
}

/// What the live section shows.
#[derive(Debug)]
pub struct Live<'a> {
    /// The service.
    pub service: &'a str,
    /// At a glance.
    pub view: &'a ServiceView,
    /// The active rollout in full.
    pub rollout: Option<&'a RolloutView>,
    /// Else the last one that ended.
    pub ended: Option<Ended<'a>>,
    /// Every plan, newest first.
    pub history: &'a [HistoryEntry],
    /// Now, for the countdown.
    pub now: Millis,
}

/// `/services/{service}` around its live section (`live`, from
/// [`live_section`]), with the refusal of a post if there was one.
pub fn service(
    viewer: Viewer<'_>,
    service: &str,
    live: &str,
    action_error: Option<&str>,
) -> String {
    let mut body = format!("<h1>{}</h1>\n", esc(service));
    if let Some(e) = action_error {
        let _ = writeln!(
            body,
            "<p id=\"action-error\" class=\"error\" role=\"alert\">{}</p>",
            esc(e)
        );
    }
    let _ = write!(
        body,
        "<p class=\"live-note muted\" id=\"live-state\">Reload to refresh (live updates need JavaScript).</p>\n{live}"
    );
    layout(service, Some(viewer), Some(service), &body)
}

/// The part of the service page that the event stream replaces:
/// `<div id="live">`.
pub fn live_section(csrf: &str, live: &Live<'_>) -> String {
    let v = live.view;
    let mut b = String::with_capacity(4096);
    let _ = write!(
        b,
        "<div id=\"live\" data-service=\"{}\">\n<section class=\"summary\"><p>Stable version: ",
        esc(live.service)
    );
    match (&v.stable, &v.stable_refused) {
        (Some(s), _) => {
            let _ = write!(
                b,
                "<strong id=\"stable-version\">{}</strong> <span class=\"muted\">({}, launch template version {})</span>",
                esc(&s.version),
                esc(&s.image),
                s.template_version
            );
        }
        (None, Some(why)) => {
            let _ = write!(
                b,
                "<strong id=\"stable-version\"></strong> <span class=\"muted\">hidden: Consul refused the read ({})</span>",
                esc(why)
            );
        }
        (None, None) => b.push_str(
            "<strong id=\"stable-version\"></strong> <span class=\"muted\">not recorded yet</span>",
        ),
    }
    b.push_str("</p>\n<h2>Pending plans</h2><ul id=\"pending-plans\">");
    if v.pending_plans.is_empty() {
        b.push_str("<li class=\"muted\">none</li>");
    }
    for p in &v.pending_plans {
        let to = live
            .history
            .iter()
            .find(|h| &h.plan == p)
            .map(|h| format!(" {} → {}", esc(&h.from_version), esc(&h.to_version)))
            .unwrap_or_default();
        let _ = write!(b, "<li>{}{to}</li>", plan_link(p));
    }
    b.push_str("</ul></section>\n");
    match (live.rollout, &live.ended) {
        (Some(r), _) => active(&mut b, csrf, live, r),
        (None, Some(e)) => ended(&mut b, live.service, e),
        (None, None) => b.push_str(
            "<section id=\"no-rollout\"><h2>Rollout</h2><p>No rollout has run yet.</p></section>\n",
        ),
    }
    history(&mut b, live.history);
    b.push_str("</div>");
    b
}

fn active(b: &mut String, csrf: &str, live: &Live<'_>, r: &RolloutView) {
    let _ = write!(
        b,
        "<section id=\"rollout\" data-state=\"active\"><h2>Rollout {} : {} → {}</h2>\n\
         <p>Phase <strong id=\"rollout-phase\">{}</strong> · batch <strong id=\"rollout-batch\">{}/{}</strong>",
        plan_link(&r.plan),
        esc(&r.stable_version),
        esc(&r.target_version),
        esc(r.phase),
        r.batch,
        r.batches
    );
    if let Some(at) = r.next_deadline_at {
        // The same text for the same state (an update is sent only when
        // the section changed); the script turns it into a countdown.
        let _ = write!(
            b,
            " · next deadline <span id=\"countdown\" data-deadline=\"{at}\">at {}</span>",
            esc(&render::time(at))
        );
    }
    b.push_str("</p>\n");
    if r.filtered_by_acls {
        b.push_str("<p class=\"warn\">Consul hid some instances or checks from your token: the list below is not the whole truth.</p>\n");
    }
    bar(b, &r.instances);
    // The buttons that apply in this phase.
    let phase = r.phase;
    let runs = !matches!(phase, "reverting" | "succeeded" | "reverted" | "failed");
    let mut forms = String::new();
    let service = seg(live.service);
    let mut form = |word: &str, label: &str, extra: &str| {
        let _ = write!(
            forms,
            "<form method=\"post\" action=\"/services/{service}/{word}\" class=\"inline\">{}{extra}\
             <button id=\"{word}\" type=\"submit\">{label}</button></form>",
            csrf_input(csrf)
        );
    };
    if runs && phase != "paused" {
        form("pause", "Pause", "");
    }
    if phase == "paused" {
        form("resume", "Resume", "");
    }
    if phase == "canary_paused" {
        form("promote", "Promote", "");
    }
    if runs {
        form(
            "abort",
            "Abort (revert)",
            "<input name=\"reason\" id=\"abort-reason\" placeholder=\"why (optional)\" maxlength=\"1000\">",
        );
    }
    if !forms.is_empty() {
        let _ = writeln!(b, "<div class=\"actions\">{forms}</div>");
    }
    timeline(b, live.service);
    instances(b, &r.instances, live.now);
    b.push_str("</section>\n");
}

fn ended(b: &mut String, service: &str, e: &Ended<'_>) {
    let batch = if e.outcome == "succeeded" {
        format!("{}/{}", e.batches, e.batches)
    } else {
        format!("-/{}", e.batches)
    };
    let _ = writeln!(
        b,
        "<section id=\"rollout\" data-state=\"ended\"><h2>Last rollout {} : {} → {}</h2>\n\
         <p>Phase <strong id=\"rollout-phase\">{}</strong> · batch <strong id=\"rollout-batch\">{}</strong> · ended {}</p>",
        plan_link(e.plan),
        esc(e.from_version),
        esc(e.to_version),
        esc(e.outcome),
        batch,
        esc(&render::time(e.at))
    );
    if !e.reason.is_empty() {
        let _ = writeln!(
            b,
            "<p class=\"reason\">Why: <span id=\"rollout-reason\">{}</span></p>",
            esc(e.reason)
        );
    }
    bar(b, &e.instances);
    timeline(b, service);
    instances(b, &e.instances, 0);
    b.push_str("</section>\n");
}

fn timeline(b: &mut String, service: &str) {
    let _ = writeln!(
        b,
        "<figure><img id=\"timeline\" src=\"/services/{}/timeline.svg\" alt=\"The rollout's timeline\"></figure>",
        seg(service)
    );
}

/// `#bar`: old / new not yet passing / new passing, as an inline SVG
/// (geometry attributes, so no inline style is needed).
fn bar(b: &mut String, list: &[InstanceView]) {
    let old = list.iter().filter(|i| i.generation == "old").count();
    let new = list.len() - old;
    let passing = list
        .iter()
        .filter(|i| i.generation == "new" && i.passing)
        .count();
    let total = list.len().max(1);
    let w = |n: usize| n * 100 / total;
    let waiting = new - passing;
    let (wo, wn) = (w(old), w(waiting));
    let wp = if passing > 0 { 100 - wo - wn } else { 0 };
    let _ = writeln!(
        b,
        "<div id=\"bar\" data-old=\"{old}\" data-new=\"{new}\" data-passing=\"{passing}\">\
         <svg viewBox=\"0 0 100 6\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"{old} old, {new} new, {passing} new passing\">\
         <rect class=\"old\" x=\"0\" y=\"0\" width=\"{wo}\" height=\"6\"/>\
         <rect class=\"new\" x=\"{wo}\" y=\"0\" width=\"{wn}\" height=\"6\"/>\
         <rect class=\"passing\" x=\"{}\" y=\"0\" width=\"{wp}\" height=\"6\"/></svg>\
         <p><span class=\"key old\"></span>{old} old · <span class=\"key new\"></span>{waiting} new, not yet passing · \
         <span class=\"key passing\"></span>{passing} new, passing</p></div>",
        wo + wn,
    );
}

fn instances(b: &mut String, list: &[InstanceView], now: Millis) {
    b.push_str(
        "<table id=\"instances\"><thead><tr><th>Instance</th><th></th><th>Image</th><th>Version</th>\
         <th>Zone</th><th>Checks</th><th>Health timer</th></tr></thead><tbody>\n",
    );
    for i in list {
        let _ = write!(
            b,
            "<tr data-instance=\"{id}\" class=\"{gen}\"><td>{id}<br><span class=\"muted\">{node}</span></td>\
             <td>{gen}</td><td>{image}</td><td>{version}</td><td>{zone}</td><td><ul class=\"checks\">",
            id = esc(&i.instance_id),
            node = esc(&i.node),
            gen = i.generation,
            image = esc(&i.image),
            version = esc(&i.version),
            zone = esc(&i.zone),
        );
        if i.checks.is_empty() {
            b.push_str("<li class=\"muted\">no checks</li>");
        }
        for c in &i.checks {
            let _ = write!(
                b,
                "<li class=\"check {status}\"><strong>{name}</strong> {status}<pre>{output}</pre></li>",
                status = esc(c.status),
                name = esc(if c.name.is_empty() {
                    &c.check_id
                } else {
                    &c.name
                }),
                output = esc(c.output.trim()),
            );
        }
        b.push_str("</ul></td><td>");
        if let Some(t) = &i.health_timer {
            match (t.healthy_at, t.proven_in_ms) {
                (Some(at), _) => {
                    let _ = write!(b, "proven healthy at {}", esc(&render::time(at)));
                }
                (None, Some(ms)) => {
                    // Passing since + min_healthy_time: the same for the
                    // same state.
                    let at = now.saturating_add(ms);
                    let _ = write!(
                        b,
                        "counts healthy <span data-deadline=\"{at}\">at {}</span> if it keeps passing",
                        esc(&render::time(at))
                    );
                }
                (None, None) => {
                    let _ = write!(
                        b,
                        "not passing; fails at {}",
                        esc(&render::time(t.healthy_deadline_at))
                    );
                }
            }
        }
        b.push_str("</td></tr>\n");
    }
    b.push_str("</tbody></table>\n");
}

fn history(b: &mut String, list: &[HistoryEntry]) {
    b.push_str(
        "<section id=\"history\"><h2>History</h2><table><thead><tr><th>Plan</th><th>Change</th>\
         <th>Decision</th><th>Outcome</th></tr></thead><tbody>\n",
    );
    for h in list {
        let outcome = match (h.outcome, h.ended_at) {
            (Some(o), Some(at)) if h.reason.is_empty() => {
                format!("{} at {}", esc(o), esc(&render::time(at)))
            }
            (Some(o), Some(at)) => format!(
                "{} at {}: {}",
                esc(o),
                esc(&render::time(at)),
                esc(&h.reason)
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            b,
            "<tr data-plan=\"{}\"><td>{}</td><td>{} → {}</td><td>{}</td><td>{outcome}</td></tr>",
            esc(&h.plan),
            plan_link(&h.plan),
            esc(&h.from_version),
            esc(&h.to_version),
            esc(&h.decision_text),
        );
    }
    b.push_str("</tbody></table></section>\n");
}

/// `/plans/{plan}`: the diff, and Approve / Reject or who decided.
pub fn plan(viewer: Viewer<'_>, p: &PlanView, action_error: Option<&str>) -> String {
    let plan = &p.plan;
    let mut b = format!(
        "<h1>Plan {}</h1><p>Service <a href=\"/services/{}\">{}</a> · {} → {}</p>\n",
        esc(&plan.id),
        seg(&plan.service),
        esc(&plan.service),
        esc(&plan.current.version),
        esc(&plan.target.version)
    );
    if let Some(e) = action_error {
        let _ = writeln!(
            b,
            "<p id=\"action-error\" class=\"error\" role=\"alert\">{}</p>",
            esc(e)
        );
    }
    let _ = writeln!(b, "<pre id=\"plan-diff\">{}</pre>", esc(&p.diff));
    if p.awaiting_decision {
        let id = seg(&plan.id);
        let _ = writeln!(
            b,
            "<div class=\"actions\"><form method=\"post\" action=\"/plans/{id}/approve\" class=\"inline\">{csrf}\
             <button id=\"approve\" type=\"submit\">Approve</button></form>\
             <form method=\"post\" action=\"/plans/{id}/reject\" class=\"inline\">{csrf}\
             <input id=\"reason\" name=\"reason\" placeholder=\"why (required)\" maxlength=\"1000\" required>\
             <button id=\"reject\" type=\"submit\">Reject</button></form></div>",
            csrf = csrf_input(viewer.csrf)
        );
    } else {
        let _ = writeln!(
            b,
            "<p>Decision: <strong id=\"decision\">{}</strong></p>",
            esc(&render::decision(&plan.decision))
        );
    }
    if let Some(o) = &plan.outcome {
        let _ = write!(b, "<p>Outcome: <strong>{}</strong>", esc(o.word()));
        if !o.reason().is_empty() {
            let _ = write!(b, ": {}", esc(o.reason()));
        }
        b.push_str("</p>\n");
    }
    layout(&format!("Plan {}", plan.id), Some(viewer), None, &b)
}

/// `/outbox`: deliveries per receiver, then every entry.
pub fn outbox(viewer: Viewer<'_>, o: &OutboxView) -> String {
    let mut b = format!(
        "<h1>Alert outbox</h1><p>{} entries not yet delivered to every receiver.</p>\n\
         <table id=\"receivers\"><thead><tr><th>Receiver</th><th>Pending</th><th>Delivered</th>\
         <th>Failing</th></tr></thead><tbody>\n",
        o.depth
    );
    for (name, c) in &o.receivers {
        let _ = writeln!(
            b,
            "<tr data-receiver=\"{n}\"><td>{n}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            c.pending,
            c.delivered,
            c.failing,
            n = esc(name)
        );
    }
    b.push_str(
        "</tbody></table>\n<h2>Entries</h2><table id=\"outbox\"><thead><tr><th>Enqueued</th>\
         <th>Kind</th><th>Service</th><th>Deliveries</th></tr></thead><tbody>\n",
    );
    for e in &o.entries {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><ul>",
            esc(&render::time(e.enqueued_at)),
            esc(e.kind),
            esc(&e.service)
        );
        for (r, d) in &e.deliveries {
            let _ = write!(
                b,
                "<li class=\"{}\">{}: {} after {} attempt(s)",
                esc(d.state),
                esc(r),
                esc(d.state),
                d.attempts
            );
            if !d.last_error.is_empty() {
                let _ = write!(b, " · last error: {}", esc(&d.last_error));
            }
            b.push_str("</li>");
        }
        b.push_str("</ul></td></tr>\n");
    }
    b.push_str("</tbody></table>");
    layout("Outbox", Some(viewer), None, &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_everywhere() {
        assert_eq!(
            esc("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
        let page = error(None, true, "<img src=x onerror=alert(1)>");
        assert!(!page.contains("<img src=x"), "{page}");
        assert!(page.contains("id=\"action-error\""));
        assert_eq!(seg("a/b c"), "a%2Fb%20c");
    }
}
