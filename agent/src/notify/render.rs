//! How an event reads: a subject line that sorts well in a mailbox
//! (`[rollgate] FIRING web: 2 checks critical on node-3`), a plain-text body
//! (also Slack's fallback `text`) and an HTML body. Pure.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use super::event::{
    AlertStatus, CheckInfo, Event, EventBody, HealthNotice, MetaNotice, RolloutNotice, UnixMillis,
};
use super::links::Link;

/// Longest check output shown in a message.
pub const MAX_OUTPUT: usize = 500;
/// Most checks listed one by one; the rest are counted.
pub const MAX_CHECKS: usize = 10;

/// RFC 3339 UTC time, to the second.
pub fn time(ms: UnixMillis) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Cuts `s` to `max` bytes on a char boundary, marking the cut.
pub fn truncate(s: &str, max: usize) -> String {
    let s = s.trim();
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The one-line title, without the `[rollgate]` prefix.
pub fn title(event: &Event) -> String {
    match &event.body {
        EventBody::Health(h) => health_title(h),
        EventBody::Rollout(r) => rollout_title(r),
        EventBody::Meta(m) => format!("{} rollgate: {}", m.status.word(), m.kind.title()),
    }
}

/// The email subject: `[rollgate] ` + [`title`].
pub fn subject(event: &Event) -> String {
    format!("[rollgate] {}", title(event))
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn where_(h: &HealthNotice, checks: &[CheckInfo]) -> String {
    if !h.node.is_empty() {
        return format!(" on {}", h.node);
    }
    let mut nodes: Vec<&str> = checks.iter().map(|c| c.node.as_str()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    match nodes.as_slice() {
        [] => String::new(),
        [one] => format!(" on {one}"),
        many => format!(" on {} nodes", many.len()),
    }
}

fn health_title(h: &HealthNotice) -> String {
    let subject = if h.service.is_empty() {
        "node".to_string()
    } else {
        h.service.clone()
    };
    let node_down = h
        .firing
        .iter()
        .any(|c| c.check_id == "serfHealth" && c.service_id.is_empty());
    match h.status {
        AlertStatus::Firing if node_down => {
            let mut t = format!("FIRING node {} is down (serfHealth critical", h.node);
            if h.inhibited > 0 {
                let _ = write!(
                    t,
                    "; {} inhibited",
                    plural(h.inhibited as usize, "service check")
                );
            }
            t.push(')');
            t
        }
        AlertStatus::Firing => {
            let worst = h
                .firing
                .iter()
                .filter_map(|c| c.status)
                .max()
                .map(|s| s.as_str())
                .unwrap_or("failing");
            format!(
                "FIRING{} {subject}: {} {worst}{}",
                if h.repeat { " (repeat)" } else { "" },
                plural(h.firing.len(), "check"),
                where_(h, &h.firing)
            )
        }
        AlertStatus::Resolved => format!(
            "RESOLVED {subject}: {}{}",
            resolved_words(&h.resolved),
            where_(h, &h.resolved)
        ),
    }
}

/// What ended the alert, in words that match the facts: checks passing
/// again, in maintenance, deregistered, or gone with their node (the
/// instance terminated); never "passing" for a check that is not.
fn resolved_words(resolved: &[CheckInfo]) -> String {
    let count = |word: &str| resolved.iter().filter(|c| c.status_word() == word).count();
    let mut parts = Vec::new();
    let terminated: Vec<&CheckInfo> = resolved
        .iter()
        .filter(|c| c.status_word() == "terminated")
        .collect();
    if !terminated.is_empty() {
        let mut instances: Vec<&str> = terminated
            .iter()
            .map(|c| c.instance.as_str())
            .filter(|i| !i.is_empty())
            .collect();
        instances.sort_unstable();
        instances.dedup();
        let what = match instances.as_slice() {
            [] => "node".to_string(),
            [one] => format!("instance {one}"),
            many => format!("{} instances", many.len()),
        };
        parts.push(format!(
            "{what} terminated ({} gone)",
            plural(terminated.len(), "check")
        ));
    }
    for (word, phrase) in [
        ("deregistered", "deregistered"),
        ("in maintenance", "in maintenance"),
        ("passing", "passing again"),
    ] {
        let n = count(word);
        if n > 0 {
            parts.push(format!("{} {phrase}", plural(n, "check")));
        }
    }
    let known = ["terminated", "deregistered", "in maintenance", "passing"];
    let other = resolved
        .iter()
        .filter(|c| !known.contains(&c.status_word()))
        .count();
    if other > 0 {
        parts.push(format!("{} no longer failing", plural(other, "check")));
    }
    parts.join(", ")
}

fn rollout_title(r: &RolloutNotice) -> String {
    let stage = r.stage.map(|s| s.title()).unwrap_or("ROLLOUT");
    let name = if r.service.is_empty() {
        &r.group
    } else {
        &r.service
    };
    let mut t = format!(
        "{stage} {name}: {} -> {}",
        or_dash(&r.old_version),
        or_dash(&r.new_version)
    );
    if let (Some(b), Some(n)) = (r.batch, r.batches) {
        let _ = write!(t, " (batch {b}/{n})");
    }
    if !r.reason.is_empty() {
        let _ = write!(
            t,
            ": {}",
            truncate(r.reason.lines().next().unwrap_or(""), 120)
        );
    }
    t
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// Key-value lines describing the event (used by text, HTML and Slack).
pub fn facts(event: &Event) -> Vec<(&'static str, String)> {
    let mut f = Vec::new();
    match &event.body {
        EventBody::Health(h) => {
            f.push(("Status", h.status.word().to_string()));
            if !h.service.is_empty() {
                f.push(("Service", h.service.clone()));
            }
            if !h.node.is_empty() {
                f.push(("Node", h.node.clone()));
            }
            let all: Vec<&CheckInfo> = h.firing.iter().chain(&h.resolved).collect();
            let mut instances: Vec<&str> = all
                .iter()
                .map(|c| c.instance.as_str())
                .filter(|i| !i.is_empty())
                .collect();
            instances.dedup();
            if !instances.is_empty() {
                f.push(("Instance", instances.join(", ")));
            }
            if h.inhibited > 0 {
                f.push((
                    "Inhibited",
                    format!("{} service checks on this node", h.inhibited),
                ));
            }
        }
        EventBody::Rollout(r) => {
            if let Some(s) = r.stage {
                f.push(("Stage", s.title().to_string()));
            }
            for (k, v) in [
                ("Service", &r.service),
                ("Group", &r.group),
                ("Rollout", &r.rollout_id),
                ("Old version", &r.old_version),
                ("New version", &r.new_version),
                ("Old AMI", &r.old_ami),
                ("New AMI", &r.new_ami),
            ] {
                if !v.is_empty() {
                    f.push((k, v.clone()));
                }
            }
            if let (Some(b), Some(n)) = (r.batch, r.batches) {
                f.push(("Batch", format!("{b} of {n}")));
            }
        }
        EventBody::Meta(m) => {
            f.push(("Status", m.status.word().to_string()));
            f.push(("Since", time(m.since_ms)));
        }
    }
    f.push(("Time", time(event.at_ms)));
    f
}

/// One line per check: `critical  serfHealth on node-3 (since …): output`.
pub fn check_line(c: &CheckInfo) -> String {
    let mut l = format!(
        "{:<12} {} ({}) on {}",
        c.status_word(),
        c.name,
        c.check_id,
        c.node
    );
    if !c.instance.is_empty() {
        let _ = write!(l, " [{}]", c.instance);
    }
    let _ = write!(l, " since {}", time(c.since_ms));
    if !c.output.trim().is_empty() {
        let _ = write!(
            l,
            "\n    {}",
            truncate(&c.output, MAX_OUTPUT).replace('\n', "\n    ")
        );
    }
    l
}

/// Sections of checks: (heading, lines), at most [`MAX_CHECKS`] each.
pub fn check_sections(event: &Event) -> Vec<(String, Vec<&CheckInfo>, usize)> {
    let EventBody::Health(h) = &event.body else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (heading, list) in [("Firing", &h.firing), ("Resolved", &h.resolved)] {
        if list.is_empty() {
            continue;
        }
        let shown: Vec<&CheckInfo> = list.iter().take(MAX_CHECKS).collect();
        out.push((
            heading.to_string(),
            shown,
            list.len().saturating_sub(MAX_CHECKS),
        ));
    }
    out
}

/// Free text of rollout and meta events (plan, reason, detail).
pub fn details(event: &Event) -> Vec<(&'static str, String)> {
    match &event.body {
        EventBody::Rollout(r) => [("Plan", &r.plan), ("Reason", &r.reason)]
            .into_iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(k, v)| (k, truncate(v, 3000)))
            .collect(),
        EventBody::Meta(MetaNotice { detail, .. }) if !detail.is_empty() => {
            vec![("Detail", truncate(detail, 3000))]
        }
        _ => Vec::new(),
    }
}

/// The plain-text body, with `link` (the console's page) on a line of its
/// own after the facts.
pub fn text(event: &Event, link: Option<&Link>) -> String {
    let mut t = format!("{}\n\n", title(event));
    for (k, v) in facts(event) {
        let _ = writeln!(t, "{k}: {v}");
    }
    if let Some(l) = link {
        let _ = writeln!(t, "\n{}: {}", l.label, l.url);
    }
    for (heading, checks, more) in check_sections(event) {
        let _ = writeln!(t, "\n{heading}:");
        for c in checks {
            let _ = writeln!(t, "  {}", check_line(c).replace('\n', "\n  "));
        }
        if more > 0 {
            let _ = writeln!(t, "  … and {more} more");
        }
    }
    for (k, v) in details(event) {
        let _ = write!(t, "\n{k}:\n{v}\n");
    }
    let _ = write!(t, "\n-- \nrollgate (event {})\n", event.key);
    t
}

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The HTML body, with `link` (the console's page) after the facts.
pub fn html(event: &Event, link: Option<&Link>) -> String {
    let mut h = format!(
        "<!DOCTYPE html><html><body style=\"font-family:sans-serif\">\n<h2>{}</h2>\n<table>\n",
        escape(&title(event))
    );
    for (k, v) in facts(event) {
        let _ = writeln!(
            h,
            "<tr><th align=\"left\">{k}</th><td>{}</td></tr>",
            escape(&v)
        );
    }
    h.push_str("</table>\n");
    if let Some(l) = link {
        let _ = writeln!(
            h,
            "<p><a href=\"{}\">{}</a></p>",
            escape(&l.url),
            escape(&l.label)
        );
    }
    for (heading, checks, more) in check_sections(event) {
        let _ = writeln!(h, "<h3>{heading}</h3>\n<ul>");
        for c in checks {
            let _ = writeln!(
                h,
                "<li><b>{}</b> {} (<code>{}</code>) on {}{} since {}<pre>{}</pre></li>",
                escape(c.status_word()),
                escape(&c.name),
                escape(&c.check_id),
                escape(&c.node),
                if c.instance.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", escape(&c.instance))
                },
                time(c.since_ms),
                escape(&truncate(&c.output, MAX_OUTPUT))
            );
        }
        if more > 0 {
            let _ = writeln!(h, "<li>… and {more} more</li>");
        }
        h.push_str("</ul>\n");
    }
    for (k, v) in details(event) {
        let _ = writeln!(h, "<h3>{k}</h3><pre>{}</pre>", escape(&v));
    }
    let _ = writeln!(
        h,
        "<p><small>rollgate (event {})</small></p>\n</body></html>",
        escape(&event.key)
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consul::types::CheckStatus;
    use crate::notify::{RolloutStage, Severity};

    fn check(node: &str, id: &str, status: CheckStatus) -> CheckInfo {
        CheckInfo {
            node: node.into(),
            check_id: id.into(),
            name: id.into(),
            status: Some(status),
            output: "HTTP GET http://10.0.0.3/health: 503 <oops>".into(),
            service_id: "web-i-0abc".into(),
            service_name: "web".into(),
            instance: "i-0abc".into(),
            since_ms: 0,
            node_gone: false,
            maintenance: false,
        }
    }

    fn health(status: AlertStatus, firing: Vec<CheckInfo>, resolved: Vec<CheckInfo>) -> Event {
        Event {
            key: "health/web@node-3/1/1".into(),
            at_ms: 1_700_000_000_000,
            severity: Severity::Critical,
            service: "web".into(),
            tags: vec![],
            body: EventBody::Health(HealthNotice {
                status,
                service: "web".into(),
                node: "node-3".into(),
                firing,
                resolved,
                inhibited: 0,
                repeat: false,
            }),
        }
    }

    #[test]
    fn subjects_sort_and_say_what_is_wrong() {
        let e = health(
            AlertStatus::Firing,
            vec![
                check("node-3", "a", CheckStatus::Critical),
                check("node-3", "b", CheckStatus::Warning),
            ],
            vec![],
        );
        assert_eq!(
            subject(&e),
            "[rollgate] FIRING web: 2 checks critical on node-3"
        );
        let r = health(
            AlertStatus::Resolved,
            vec![],
            vec![check("node-3", "a", CheckStatus::Passing)],
        );
        assert_eq!(
            subject(&r),
            "[rollgate] RESOLVED web: 1 check passing again on node-3"
        );
    }

    #[test]
    fn resolved_headlines_say_how_it_ended() {
        let gone = |node_gone: bool| CheckInfo {
            status: None,
            node_gone,
            ..check("node-3", "a", CheckStatus::Passing)
        };
        let terminated = health(AlertStatus::Resolved, vec![], vec![gone(true), gone(true)]);
        assert_eq!(
            subject(&terminated),
            "[rollgate] RESOLVED web: instance i-0abc terminated (2 checks gone) on node-3"
        );
        assert!(text(&terminated, None).contains("terminated"));
        let deregistered = health(AlertStatus::Resolved, vec![], vec![gone(false)]);
        assert_eq!(
            subject(&deregistered),
            "[rollgate] RESOLVED web: 1 check deregistered on node-3"
        );
        let maintenance = CheckInfo {
            maintenance: true,
            ..check("node-3", "b", CheckStatus::Passing)
        };
        let mixed = health(
            AlertStatus::Resolved,
            vec![],
            vec![maintenance, check("node-3", "c", CheckStatus::Passing)],
        );
        assert_eq!(
            subject(&mixed),
            "[rollgate] RESOLVED web: 1 check in maintenance, 1 check passing again on node-3"
        );
    }

    #[test]
    fn bodies_carry_outputs_escaped_in_html() {
        let e = health(
            AlertStatus::Firing,
            vec![check("node-3", "a", CheckStatus::Critical)],
            vec![],
        );
        assert!(text(&e, None).contains("503 <oops>"));
        assert!(html(&e, None).contains("503 &lt;oops&gt;"));
        assert!(text(&e, None).contains("Instance: i-0abc"));
    }

    #[test]
    fn rollout_failure_subject_names_versions_and_reason() {
        let e = Event::rollout(
            RolloutNotice {
                rollout_id: "r1".into(),
                stage: Some(RolloutStage::Failed),
                service: "web".into(),
                old_version: "1.0.0".into(),
                new_version: "1.1.0".into(),
                reason: "instance i-1: check web critical: HTTP 500; healthy_deadline 5m passed"
                    .into(),
                ..RolloutNotice::default()
            },
            vec![],
            0,
        );
        let s = subject(&e);
        assert!(
            s.starts_with("[rollgate] ROLLOUT FAILED web: 1.0.0 -> 1.1.0: instance i-1"),
            "{s}"
        );
        assert!(text(&e, None).contains("Reason:\ninstance i-1"));
    }

    #[test]
    fn a_link_is_a_line_of_text_and_an_anchor_in_html() {
        let e = health(AlertStatus::Firing, vec![], vec![]);
        let link = Link {
            label: "Open web's rollout in the console".into(),
            url: "https://r.example.com/services/web?a=1&b=2".into(),
        };
        assert!(text(&e, Some(&link)).contains(
            "\nOpen web's rollout in the console: https://r.example.com/services/web?a=1&b=2\n"
        ));
        assert!(
            html(&e, Some(&link))
                .contains("<a href=\"https://r.example.com/services/web?a=1&amp;b=2\">")
        );
        assert!(!text(&e, None).contains("console"));
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("ééé", 3), "é…");
        assert_eq!(truncate("  ab ", 5), "ab");
    }
}
