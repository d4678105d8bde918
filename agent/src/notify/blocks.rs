//! The Slack Block Kit layout of an event: a header with the title, a
//! section of fields (status, service, node, instance, versions, time), one
//! section per check (status, name, output) or the rollout's plan or failure
//! reason, and a context line with the dedup key. Pure; shared by the Web
//! API and webhook notifiers.
//!
//! Slack's limits are respected here (header 150 chars, a section's text
//! 3,000, at most 10 fields, 50 blocks), and `&`, `<`, `>` are escaped as
//! Slack's mrkdwn requires.

use slack_morphism::prelude::*;

use super::Event;
use super::render;

/// Escapes text for Slack mrkdwn.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn emoji(event: &Event) -> &'static str {
    use super::{AlertStatus, EventBody, RolloutStage};
    match &event.body {
        EventBody::Health(h) if h.status == AlertStatus::Resolved => ":white_check_mark:",
        EventBody::Meta(m) if m.status == AlertStatus::Resolved => ":white_check_mark:",
        EventBody::Rollout(r) => match r.stage {
            Some(RolloutStage::Failed) => ":x:",
            Some(RolloutStage::Reverted) => ":leftwards_arrow_with_hook:",
            Some(RolloutStage::Succeeded | RolloutStage::BatchHealthy) => ":white_check_mark:",
            Some(RolloutStage::PendingApproval | RolloutStage::CanaryWaiting) => ":hourglass:",
            Some(RolloutStage::Paused) => ":double_vertical_bar:",
            Some(RolloutStage::Aborted) => ":octagonal_sign:",
            _ => ":rocket:",
        },
        _ => ":rotating_light:",
    }
}

/// The blocks of `event`.
pub fn blocks(event: &Event) -> Vec<SlackBlock> {
    let mut out: Vec<SlackBlock> = Vec::new();
    let header = render::truncate(&render::title(event), 145);
    out.push(SlackHeaderBlock::new(pt!(header)).into());

    let fields: Vec<SlackBlockText> = render::facts(event)
        .into_iter()
        .take(10)
        .map(|(k, v)| md!("*{}*\n{}", k, escape(&render::truncate(&v, 1900))))
        .collect();
    out.push(
        SlackSectionBlock::new()
            .with_text(md!("{} {}", emoji(event), escape(&render::title(event))))
            .with_fields(fields)
            .into(),
    );

    for (heading, checks, more) in render::check_sections(event) {
        out.push(SlackDividerBlock::new().into());
        out.push(
            SlackSectionBlock::new()
                .with_text(md!("*{}*", heading))
                .into(),
        );
        for c in checks {
            let mut text = format!(
                "*{}* `{}` on {}{}\nsince {}",
                escape(c.status_word()),
                escape(&c.name),
                escape(&c.node),
                if c.instance.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", escape(&c.instance))
                },
                render::time(c.since_ms)
            );
            if !c.output.trim().is_empty() {
                text.push_str(&format!(
                    "\n```{}```",
                    escape(&render::truncate(&c.output, render::MAX_OUTPUT))
                ));
            }
            out.push(SlackSectionBlock::new().with_text(md!(text)).into());
        }
        if more > 0 {
            out.push(SlackContextBlock::new(vec![md!("… and {} more", more)]).into());
        }
    }
    for (k, v) in render::details(event) {
        out.push(
            SlackSectionBlock::new()
                .with_text(md!(
                    "*{}*\n```{}```",
                    k,
                    escape(&render::truncate(&v, 2800))
                ))
                .into(),
        );
    }
    out.push(
        SlackContextBlock::new(vec![md!(
            "rollgate · {} · event `{}`",
            render::time(event.at_ms),
            escape(&event.key)
        )])
        .into(),
    );
    out.truncate(50);
    out
}

/// The blocks of a story's first message once `event` followed it: the
/// event's blocks, saying that this is the current state and that every
/// notice is in the thread.
pub fn current_state(event: &Event) -> Vec<SlackBlock> {
    let mut out = blocks(event);
    out.truncate(49);
    out.insert(
        1,
        SlackContextBlock::new(vec![md!(
            "Current state, updated {}. Every notice of this story is in the thread.",
            render::time(event.at_ms)
        )])
        .into(),
    );
    out
}

/// The plain-text fallback Slack shows in notifications and to clients that
/// cannot render blocks.
pub fn fallback_text(event: &Event) -> String {
    render::truncate(&render::text(event), 3500)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::{MetaKind, MetaNotice};

    #[test]
    fn blocks_serialise_as_slack_expects() {
        let e = Event::meta(
            MetaNotice {
                kind: MetaKind::ConsulUnreachable,
                status: crate::notify::AlertStatus::Firing,
                since_ms: 0,
                detail: "connection refused <127.0.0.1:8500>".into(),
            },
            0,
        );
        let json = serde_json::to_value(blocks(&e)).expect("serialises");
        assert_eq!(json[0]["type"], "header");
        assert_eq!(json[0]["text"]["type"], "plain_text");
        assert_eq!(json[1]["type"], "section");
        let all = json.to_string();
        assert!(all.contains("&lt;127.0.0.1:8500&gt;"), "{all}");
    }
}
