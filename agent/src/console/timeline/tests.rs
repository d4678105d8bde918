//! The timeline's SVG: golden documents for a finished success (with a
//! pause) and an aborted rollout, and structural checks: markers per
//! event, escaping of every string, well-formed XML, determinism.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::rollout::machine::Rollout;

const SUCCEEDED: &str = include_str!("../testdata/timeline_succeeded.json");
const REVERTED: &str = include_str!("../testdata/timeline_reverted.json");
const GOLDEN_SUCCEEDED: &str = include_str!("../testdata/timeline_succeeded.svg");
const GOLDEN_REVERTED: &str = include_str!("../testdata/timeline_reverted.svg");

/// The fixtures were recorded by the core's test world from this instant.
const T0: u64 = 1_700_000_000_000;

fn load(json: &str) -> Rollout {
    serde_json::from_str(json).unwrap()
}

/// An hour after the fixtures ended: a finished rollout ignores `now`.
fn later() -> Timestamp {
    Timestamp(T0 + 3_600_000)
}

/// Compares with the checked-in document; with `ROLLGATE_BLESS=1` writes
/// it instead (review the diff before committing).
fn golden(name: &str, expected: &str, actual: &str) {
    if std::env::var_os("ROLLGATE_BLESS").is_some() {
        let path = format!("{}/src/console/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::write(path, actual).unwrap();
        return;
    }
    assert!(
        expected == actual,
        "{name} differs from the checked-in document; got:\n{actual}"
    );
}

fn occurrences(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

/// A minimal well-formedness check: tags nest and close, attribute values
/// are quoted without a raw `<`, and text holds no raw `<` or a `&` that
/// is not one of the entities the renderer writes.
fn well_formed(doc: &str) -> Result<(), String> {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = doc;
    let entities = ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"];
    while !rest.is_empty() {
        let text_end = rest.find('<').unwrap_or(rest.len());
        let text = &rest[..text_end];
        for (i, _) in text.match_indices('&') {
            if !entities.iter().any(|e| text[i..].starts_with(e)) {
                return Err(format!("a raw & in text: {text:?}"));
            }
        }
        if text.contains('>') {
            return Err(format!("a raw > in text: {text:?}"));
        }
        rest = &rest[text_end..];
        if rest.is_empty() {
            break;
        }
        let close = rest.find('>').ok_or("an unclosed tag")?;
        let tag = &rest[1..close];
        if tag.contains('<') {
            return Err(format!("a < inside a tag: {tag:?}"));
        }
        if occurrences(tag, "\"") % 2 != 0 {
            return Err(format!("unbalanced quotes: {tag:?}"));
        }
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop().ok_or(format!("</{name}> closes nothing"))?;
            if open != name {
                return Err(format!("</{name}> closes <{open}>"));
            }
        } else if !tag.ends_with('/') {
            let name = tag.split_whitespace().next().unwrap_or_default();
            stack.push(name.to_owned());
        }
        rest = &rest[close + 1..];
    }
    if stack.is_empty() {
        Ok(())
    } else {
        Err(format!("unclosed: {stack:?}"))
    }
}

#[test]
fn a_finished_success_with_a_pause_draws_as_checked_in() {
    let r = load(SUCCEEDED);
    let doc = svg(&r, later());
    golden("timeline_succeeded.svg", GOLDEN_SUCCEEDED, &doc);
    assert_eq!(
        doc,
        svg(&r, Timestamp(T0 + 7_200_000)),
        "deterministic, `now` unused once over"
    );
    well_formed(&doc).unwrap();
    assert!(
        doc.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"960\" height=\"320\"")
    );
    assert!(doc.contains("<title>Rollout web-7 of web: 1.0.0 → 2.0.0 (succeeded)</title>"));
    // Two batches, one pause, the bake and the end.
    assert_eq!(occurrences(&doc, "class=\"marker batch\""), 2);
    assert_eq!(occurrences(&doc, "class=\"paused\""), 1);
    assert_eq!(occurrences(&doc, "class=\"marker step\""), 1);
    assert_eq!(occurrences(&doc, "class=\"marker end\""), 1);
    assert_eq!(occurrences(&doc, "class=\"marker revert\""), 0);
    assert_eq!(occurrences(&doc, "<path class=\"line "), 3);
    assert!(!doc.contains("class=\"reason\""), "a success has no reason");
}

#[test]
fn an_aborted_rollout_draws_the_revert_and_its_reason() {
    let r = load(REVERTED);
    let doc = svg(&r, later());
    golden("timeline_reverted.svg", GOLDEN_REVERTED, &doc);
    well_formed(&doc).unwrap();
    // Batches 1 and 2, then the stable replacements.
    assert_eq!(occurrences(&doc, "class=\"marker batch\""), 3);
    assert!(doc.contains(">stable ×2</text>"));
    assert_eq!(occurrences(&doc, "class=\"marker revert\""), 1);
    assert!(doc.contains(">abort</text>"));
    assert_eq!(
        occurrences(&doc, "class=\"wrong\""),
        2,
        "two instances answered wrong"
    );
    // The reason, escaped: the operator's words hold <, & and quotes.
    assert!(doc.contains("aborted by alice (0b1c): checks &lt;red&gt; &amp; &quot;failing&quot;"));
    assert!(!doc.contains("<red>"));
    assert!(doc.contains("(aborted)</title>"));
}

#[test]
fn the_batch_markers_follow_the_events() {
    let mut r = load(SUCCEEDED);
    let launches = |r: &Rollout| {
        r.progress
            .events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::BatchLaunched { .. }))
            .count()
    };
    assert_eq!(launches(&r), 2);
    r.progress
        .events
        .retain(|e| !matches!(e.kind, EventKind::BatchLaunched { n: 2, .. }));
    let doc = svg(&r, later());
    assert_eq!(occurrences(&doc, "class=\"marker batch\""), launches(&r));
    assert_eq!(occurrences(&doc, "class=\"marker batch\""), 1);
}

#[test]
fn every_string_from_the_record_is_escaped() {
    let mut r = load(REVERTED);
    let evil = "<script>alert('x')</script> & \"q\"";
    r.spec.id = format!("web-7{evil}");
    r.spec.service = format!("web{evil}");
    r.spec.stable.version = evil.into();
    r.spec.target_version = evil.into();
    r.spec.stable.image = evil.into();
    r.spec.target_image = evil.into();
    for e in &mut r.progress.events {
        if let EventKind::InstanceWrong { id } = &mut e.kind {
            *id = format!("i-1{evil}");
        }
    }
    if let Phase::Reverted { reason, .. } = &mut r.state {
        *reason = format!("{evil}\u{1}\u{7}");
    }
    let doc = svg(&r, later());
    well_formed(&doc).unwrap();
    assert!(!doc.contains("<script"), "{doc}");
    assert!(!doc.contains("'x'"));
    assert!(doc.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"));
    assert!(
        !doc.chars().any(|c| c.is_control() && c != '\n'),
        "control characters removed"
    );
    assert!(esc("a\u{0}b").eq("a b"));
}

#[test]
fn a_running_rollout_is_drawn_up_to_now() {
    let mut r = load(SUCCEEDED);
    // Cut the record at the pause: still running, paused.
    let paused = r
        .progress
        .events
        .iter()
        .position(|e| matches!(e.kind, EventKind::Paused { .. }))
        .unwrap();
    r.progress.events.truncate(paused + 1);
    let at = r.progress.events[paused].at;
    r.state = Phase::Paused {
        since: at,
        prior: Box::new(Phase::Pending),
    };
    let now = at.plus(Duration::from_secs(20));
    let doc = svg(&r, now);
    well_formed(&doc).unwrap();
    assert!(doc.contains("(paused)</title>"));
    assert!(doc.contains("running for 1m 1s"), "{doc}");
    // The pause runs to the right edge: the chart ends at `now`.
    assert_eq!(occurrences(&doc, "class=\"paused\""), 1);
    assert!(doc.contains(&format!(
            "<rect x=\"{:.1}\"",
            Scale {
                t0: T0,
                t1: now.0,
                top: 4
            }
            .x(at)
        )));
    assert_ne!(
        doc,
        svg(&r, now.plus(Duration::from_secs(1))),
        "later, longer"
    );
}

#[test]
fn a_record_without_events_says_so_and_still_draws() {
    let mut r = load(SUCCEEDED);
    r.progress.events.clear();
    let doc = svg(&r, later());
    well_formed(&doc).unwrap();
    assert!(doc.contains("No events recorded"));
    assert_eq!(occurrences(&doc, "<path class=\"line "), 0);
    let empty = nothing_yet("we<b");
    well_formed(&empty).unwrap();
    assert!(empty.contains("<title>No rollout of we&lt;b yet</title>"));
}

#[test]
fn dropped_events_are_counted_under_the_chart() {
    let mut r = load(SUCCEEDED);
    r.progress.events_dropped = 41;
    let doc = svg(&r, later());
    assert!(doc.contains(">41 events in the middle were not kept"));
}

#[test]
fn absurd_instants_draw_without_a_panic() {
    let mut r = load(REVERTED);
    r.progress.started_at = Some(Timestamp(u64::MAX - 10));
    if let Some(e) = r.progress.events.last_mut() {
        e.at = Timestamp(u64::MAX);
    }
    r.progress.events[1].at = Timestamp(0);
    let doc = svg(&r, Timestamp(0));
    well_formed(&doc).unwrap();
    let mut r = load(SUCCEEDED);
    r.progress.started_at = Some(Timestamp(0));
    r.state = Phase::Succeeded {
        at: Timestamp(u64::MAX),
    };
    well_formed(&svg(&r, Timestamp(0))).unwrap();
}
