//! Plans as operators read them, in the spirit of `terraform plan`: a header,
//! the image change, one line per instance with its fate, a summary with the
//! estimate, and the commands to answer. Colour only on a terminal; `--json`
//! output is the stored plan itself.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use crate::plan::{Change, Decision, InstanceAction, Millis, Plan, effective_batch};

/// Styling: ANSI colours on a terminal, plain text otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// Whether to emit ANSI colour codes.
    pub color: bool,
}

impl Style {
    fn paint(self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    fn bold(self, t: &str) -> String {
        self.paint("1", t)
    }
    fn yellow(self, t: &str) -> String {
        self.paint("33", t)
    }
    fn green(self, t: &str) -> String {
        self.paint("32", t)
    }
    fn red(self, t: &str) -> String {
        self.paint("31", t)
    }
    fn dim(self, t: &str) -> String {
        self.paint("2", t)
    }
}

/// A UTC timestamp, to the second.
pub fn time(ms: Millis) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    s.replace('T', " ").replace('Z', " UTC")
}

fn version(v: &str) -> String {
    if v.is_empty() {
        "untagged".into()
    } else {
        v.to_string()
    }
}

/// The decision in words.
pub fn decision(d: &Decision) -> String {
    match d {
        Decision::Pending { expires_at } => {
            format!("pending approval, expires {}", time(*expires_at))
        }
        Decision::Approved { by, at } => format!("approved by {by} at {}", time(*at)),
        Decision::Rejected { by, at, reason } => {
            format!("rejected by {by} at {}: {reason}", time(*at))
        }
        Decision::Expired { at } => format!("expired at {}", time(*at)),
        Decision::Superseded { by_plan, at } => {
            format!("superseded by {by_plan} at {}", time(*at))
        }
    }
}

/// What a plan changes, in words.
pub fn change(p: &Plan) -> String {
    match &p.change {
        Change::Image => "image: a new image of the artifact".to_owned(),
        Change::Rollback {
            requested_by,
            override_failed,
        } => format!(
            "rollback to {}, asked by {requested_by}{}",
            version(&p.target.version),
            if *override_failed {
                " (a version that failed before, overridden)"
            } else {
                ""
            }
        ),
        Change::Template {
            from_version,
            to_version,
        } => format!(
            "template: launch template default version {from_version} -> {to_version}, same image"
        ),
    }
}

/// The full plan.
pub fn plan(p: &Plan, style: Style) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}",
        style.bold(&format!("Plan {}", p.id)),
        style.dim(&format!("({})", decision(&p.decision)))
    );
    let _ = writeln!(
        out,
        "  service {}: Auto Scaling group {}, launch template {} ({}), planned {}",
        p.service,
        p.group,
        p.launch_template_name,
        p.launch_template_id,
        time(p.created_at)
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "  change    {}", change(p));
    let base = p
        .base_template_version
        .unwrap_or(p.current_template_version);
    match &p.change {
        Change::Template {
            from_version,
            to_version,
        } => {
            let _ = writeln!(
                out,
                "    image     {} ({}), unchanged",
                p.target.image_id,
                version(&p.target.version)
            );
            let _ = writeln!(
                out,
                "  {} launch template default version {from_version}  ->  {}  (a Terraform change)",
                style.yellow("~"),
                style.bold(&to_version.to_string()),
            );
            let _ = writeln!(
                out,
                "  {} launch template version {}  ->  a new version copied from {} with image {}; every instance is replaced to pick it up",
                style.yellow("~"),
                p.current_template_version,
                base,
                p.target.image_id
            );
        }
        Change::Image | Change::Rollback { .. } => {
            let _ = writeln!(
                out,
                "  {} image     {} ({})  ->  {} ({})",
                style.yellow("~"),
                p.current.image_id,
                version(&p.current.version),
                style.bold(&p.target.image_id),
                style.bold(&version(&p.target.version)),
            );
            if !p.target.artifact.is_empty() {
                let _ = writeln!(out, "    artifact  {}", p.target.artifact);
            }
            let _ = writeln!(
                out,
                "  {} launch template version {}  ->  a new version copied from {}{} with image {}",
                style.yellow("~"),
                p.current_template_version,
                base,
                if p.base_template_version.is_some() {
                    " (the default version)"
                } else {
                    ""
                },
                p.target.image_id
            );
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  instances ({}, desired {}, min {}, max {}):",
        p.instances.len(),
        p.desired_capacity,
        p.min_size,
        p.max_size
    );
    for i in &p.instances {
        let (mark, fate) = match i.action {
            InstanceAction::Replace => (style.yellow("-/+"), "replace".to_string()),
            InstanceAction::Keep => (
                "   ".to_string(),
                style.dim("already on the target image, kept"),
            ),
        };
        let _ = writeln!(
            out,
            "  {mark} {:<20} {:<22} {:<12} {fate}",
            i.instance_id,
            if i.image_id.is_empty() {
                "?"
            } else {
                &i.image_id
            },
            i.availability_zone
        );
    }
    let replace = p.to_replace().count();
    let kept = p.instances.len() - replace;
    let _ = writeln!(out);
    let mut summary = format!(
        "Plan: {replace} to replace in {} step{}",
        p.batches,
        if p.batches == 1 { "" } else { "s" }
    );
    if p.params.canary > 0 {
        let _ = write!(
            summary,
            " (a canary of {} first, then batches of {})",
            p.params.canary.min(replace as u32),
            p.params.batch_size
        );
    } else {
        let _ = write!(
            summary,
            " of {}",
            effective_batch(replace as u32, &p.params)
        );
    }
    let _ = write!(summary, ", {kept} kept.");
    let capped = replace > 0 && p.params.batch() > replace as u32;
    if capped {
        let _ = write!(
            summary,
            " (batch_size {} is more than the {replace} to replace: capped at {replace}.)",
            p.params.batch_size
        );
    }
    let _ = writeln!(out, "  {}", style.bold(&summary));
    let _ = writeln!(
        out,
        "  New instances are launched and proven healthy in Consul ({} passing without interruption) before old ones are retired.",
        humantime::format_duration(p.params.min_healthy_time)
    );
    let _ = writeln!(
        out,
        "  Estimated duration: about {}. Deadlines: healthy {}, progress {}. Auto-revert: {}.",
        humantime::format_duration(p.estimate),
        humantime::format_duration(p.params.healthy_deadline),
        humantime::format_duration(p.params.progress_deadline),
        if p.params.auto_revert { "on" } else { "off" }
    );
    if let Some(o) = &p.outcome {
        let word = if o.is_success() {
            style.green(o.word())
        } else {
            style.red(o.word())
        };
        let _ = writeln!(
            out,
            "  Outcome: {word} at {}{}",
            time(o.at()),
            if o.reason().is_empty() {
                String::new()
            } else {
                format!(": {}", o.reason())
            }
        );
    }
    if matches!(p.decision, Decision::Pending { .. }) {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  Approve: rollgate approve {}    Reject: rollgate reject {} --reason TEXT",
            p.id, p.id
        );
    }
    out
}

/// One line per plan, newest first, for `rollgate history`.
pub fn history(plans: &[Plan], style: Style) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}",
        style.bold(&format!(
            "{:<12} {:<20} {:<28} {:<11} {:<34} {}",
            "PLAN", "PLANNED", "CHANGE", "DECISION", "BY / WHEN", "OUTCOME"
        ))
    );
    for p in plans {
        let change = match &p.change {
            Change::Image => format!(
                "{} -> {}",
                version(&p.current.version),
                version(&p.target.version)
            ),
            Change::Rollback { .. } => format!(
                "rollback {} -> {}",
                version(&p.current.version),
                version(&p.target.version)
            ),
            Change::Template {
                from_version,
                to_version,
            } => format!("template v{from_version} -> v{to_version}"),
        };
        let (by, when) = match &p.decision {
            Decision::Approved { by, at } | Decision::Rejected { by, at, .. } => {
                (by.clone(), time(*at))
            }
            Decision::Superseded { by_plan, at } => (format!("by {by_plan}"), time(*at)),
            Decision::Expired { at } => (String::new(), time(*at)),
            Decision::Pending { .. } => (String::new(), String::new()),
        };
        let outcome = match &p.outcome {
            Some(o) if o.reason().is_empty() => o.word().to_owned(),
            Some(o) => format!("{}: {}", o.word(), o.reason()),
            // A rejected plan has no outcome: its reason goes there.
            None => match &p.decision {
                Decision::Rejected { reason, .. } => format!("reason: {reason}"),
                _ => String::new(),
            },
        };
        let line = format!(
            "{:<12} {:<20} {:<28} {:<11} {:<34} {}",
            p.id,
            time(p.created_at).trim_end_matches(" UTC"),
            change,
            p.decision.word(),
            format!("{by} {when}").trim(),
            outcome
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::plan::tests_support::sample_plan;

    const GOLDEN: &str = include_str!("testdata/plan_web.txt");
    const GOLDEN_HISTORY: &str = include_str!("testdata/history_web.txt");

    #[test]
    fn plan_renders_like_the_golden_file() {
        let text = plan(&sample_plan(), Style { color: false });
        if text != GOLDEN {
            // Print for review; update testdata only on purpose.
            eprintln!("--- rendered ---\n{text}--- end ---");
        }
        assert_eq!(text, GOLDEN);
    }

    #[test]
    fn colour_only_when_asked() {
        let plain = plan(&sample_plan(), Style { color: false });
        assert!(!plain.contains('\x1b'));
        let coloured = plan(&sample_plan(), Style { color: true });
        assert!(coloured.contains("\x1b[33m-/+\x1b[0m"));
    }

    #[test]
    fn history_renders_like_the_golden_file() {
        let mut approved = sample_plan();
        approved.id = "web-2".into();
        approved.decision = Decision::Approved {
            by: "alice".into(),
            at: 1_795_000_600_000,
        };
        approved.outcome = Some(crate::plan::Outcome::Reverted {
            at: 1_795_001_000_000,
            reason: "instance i-7 not healthy within healthy_deadline 5m".into(),
        });
        let text = history(&[sample_plan(), approved], Style { color: false });
        if text != GOLDEN_HISTORY {
            eprintln!("--- rendered ---\n{text}--- end ---");
        }
        assert_eq!(text, GOLDEN_HISTORY);
    }

    #[test]
    fn a_batch_larger_than_the_group_is_capped_and_said_so() {
        let mut p = sample_plan();
        p.params.batch_size = 50;
        p.batches = crate::plan::batches(5, &p.params);
        let text = plan(&p, Style { color: false });
        assert!(
            text.contains("5 to replace in 1 step of 5, 1 kept."),
            "{text}"
        );
        assert!(
            text.contains("batch_size 50 is more than the 5 to replace: capped at 5"),
            "{text}"
        );
        assert!(!plan(&sample_plan(), Style { color: false }).contains("capped"));
    }

    #[test]
    fn rollbacks_and_template_changes_say_what_they_are() {
        let mut r = sample_plan();
        std::mem::swap(&mut r.current, &mut r.target);
        r.change = Change::Rollback {
            requested_by: "alice".into(),
            override_failed: false,
        };
        let text = plan(&r, Style { color: false });
        assert!(
            text.contains("change    rollback to 1.2.3, asked by alice"),
            "{text}"
        );
        assert!(
            text.contains("ami-new (1.3.0)  ->  ami-old (1.2.3)"),
            "{text}"
        );
        let line = history(std::slice::from_ref(&r), Style { color: false });
        assert!(line.contains("rollback 1.3.0 -> 1.2.3"), "{line}");

        let mut t = sample_plan();
        t.change = Change::Template {
            from_version: 4,
            to_version: 5,
        };
        t.current = t.target.clone();
        let text = plan(&t, Style { color: false });
        assert!(
            text.contains("change    template: launch template default version 4 -> 5, same image"),
            "{text}"
        );
        assert!(text.contains("ami-new (1.3.0), unchanged"), "{text}");
        assert!(text.contains("every instance is replaced"), "{text}");
        let line = history(std::slice::from_ref(&t), Style { color: false });
        assert!(line.contains("template v4 -> v5"), "{line}");
    }
}
