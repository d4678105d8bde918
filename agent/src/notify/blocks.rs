//! The Slack Block Kit layout of an event: a header with the title, a
//! section of fields (status, service, node, instance, versions, time), one
//! section per check (status, name, output) or the rollout's plan or failure
//! reason, a link to the console's page when there is one, and a context
//! line with the dedup key. Pure; shared by the Web API and webhook
//! notifiers.
//!
//! Slack's limits are respected here (header 150 chars, a section's text
//! 3,000, at most 10 fields, 50 blocks), and `&`, `<`, `>` are escaped as
//! Slack's mrkdwn requires.

use slack_morphism::prelude::*;

use super::Event;
use super::links::Link;
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

/// The blocks of `event`, with `link` (the console's page) right under
/// its fields.
pub fn blocks(event: &Event, link: Option<&Link>) -> Vec<SlackBlock> {
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
    if let Some(l) = link {
        out.push(
            SlackSectionBlock::new()
                .with_text(md!(":link: <{}|{}>", escape(&l.url), escape(&l.label)))
                .into(),
        );
    }

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
pub fn current_state(event: &Event, link: Option<&Link>) -> Vec<SlackBlock> {
    let mut out = blocks(event, link);
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

/// What a button does. Its `action_id` is `rollgate:<verb>:<plan ID>`
/// (the rollout's ID is its plan's), so a click names the plan it was
/// meant for even when a newer one exists; `crate::chatops` answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonAction {
    /// Approve the plan.
    Approve,
    /// Reject the plan (asks for a reason).
    Reject,
    /// Pause the rollout.
    Pause,
    /// Resume the paused rollout.
    Resume,
    /// Abort (revert) the rollout.
    Abort,
    /// Promote the waiting canary.
    Promote,
}

impl ButtonAction {
    /// The verb in action IDs and messages.
    pub fn verb(self) -> &'static str {
        match self {
            ButtonAction::Approve => "approve",
            ButtonAction::Reject => "reject",
            ButtonAction::Pause => "pause",
            ButtonAction::Resume => "resume",
            ButtonAction::Abort => "abort",
            ButtonAction::Promote => "promote",
        }
    }

    /// The action of a verb.
    pub fn from_verb(verb: &str) -> Option<Self> {
        [
            ButtonAction::Approve,
            ButtonAction::Reject,
            ButtonAction::Pause,
            ButtonAction::Resume,
            ButtonAction::Abort,
            ButtonAction::Promote,
        ]
        .into_iter()
        .find(|a| a.verb() == verb)
    }

    /// `rollgate:<verb>:<plan>`.
    pub fn action_id(self, plan: &str) -> String {
        format!("rollgate:{}:{plan}", self.verb())
    }

    /// The action and plan ID of an `action_id` made by [`Self::action_id`].
    pub fn parse(action_id: &str) -> Option<(Self, &str)> {
        let (verb, plan) = action_id.strip_prefix("rollgate:")?.split_once(':')?;
        let action = Self::from_verb(verb)?;
        (!plan.is_empty()).then_some((action, plan))
    }
}

/// The buttons a rollout event offers: Approve and Reject for a plan
/// waiting for approval; Pause (Resume when paused) and Abort while it
/// runs, and Promote for a canary waiting; none once it ended.
pub fn buttons(event: &Event) -> Vec<ButtonAction> {
    use super::{EventBody, RolloutStage as S};
    let EventBody::Rollout(r) = &event.body else {
        return Vec::new();
    };
    match r.stage {
        Some(S::PendingApproval) => vec![ButtonAction::Approve, ButtonAction::Reject],
        Some(S::CanaryWaiting) => vec![
            ButtonAction::Promote,
            ButtonAction::Pause,
            ButtonAction::Abort,
        ],
        Some(S::Paused) => vec![ButtonAction::Resume, ButtonAction::Abort],
        Some(S::Started | S::BatchHealthy | S::Promoted | S::Resumed) => {
            vec![ButtonAction::Pause, ButtonAction::Abort]
        }
        _ => Vec::new(),
    }
}

/// `blocks` with the event's buttons (an `actions` block before the last,
/// context, block), for receivers whose Slack app answers clicks.
pub fn with_buttons(event: &Event, mut blocks: Vec<SlackBlock>) -> Vec<SlackBlock> {
    use super::EventBody;
    let actions = buttons(event);
    let EventBody::Rollout(r) = &event.body else {
        return blocks;
    };
    if actions.is_empty() {
        return blocks;
    }
    let elements = actions
        .iter()
        .map(|a| {
            let label = match a {
                ButtonAction::Approve => "Approve",
                ButtonAction::Reject => "Reject",
                ButtonAction::Pause => "Pause",
                ButtonAction::Resume => "Resume",
                ButtonAction::Abort => "Abort",
                ButtonAction::Promote => "Promote",
            };
            let mut b = SlackBlockButtonElement::new(SlackBlockPlainTextOnly::from(label))
                .with_action_id(SlackActionId(a.action_id(&r.rollout_id)))
                .with_value(r.rollout_id.clone());
            match a {
                ButtonAction::Approve | ButtonAction::Promote | ButtonAction::Resume => {
                    b = b.with_style(SlackBlockButtonStyle::Primary)
                }
                ButtonAction::Reject | ButtonAction::Abort => {
                    b = b.with_style(SlackBlockButtonStyle::Danger)
                }
                ButtonAction::Pause => {}
            }
            SlackActionBlockElement::Button(b)
        })
        .collect();
    let block = SlackActionsBlock::new(elements)
        .with_block_id(SlackBlockId(format!("rollgate:{}", r.rollout_id)))
        .into();
    blocks.truncate(49);
    let at = blocks.len().saturating_sub(1);
    blocks.insert(at, block);
    blocks
}

/// The plain-text fallback Slack shows in notifications and to clients that
/// cannot render blocks.
pub fn fallback_text(event: &Event, link: Option<&Link>) -> String {
    render::truncate(&render::text(event, link), 3500)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::{MetaKind, MetaNotice};

    #[test]
    fn a_plan_offers_approve_and_reject_with_its_id_in_the_action() {
        use crate::notify::{RolloutNotice, RolloutStage};
        let e = Event::rollout(
            RolloutNotice {
                rollout_id: "web-3".into(),
                stage: Some(RolloutStage::PendingApproval),
                service: "web".into(),
                ..RolloutNotice::default()
            },
            Vec::new(),
            0,
        );
        let json = serde_json::to_value(with_buttons(&e, blocks(&e, None))).expect("serialises");
        let actions = json
            .as_array()
            .expect("an array")
            .iter()
            .find(|b| b["type"] == "actions")
            .expect("an actions block");
        assert_eq!(
            actions["elements"][0]["action_id"],
            "rollgate:approve:web-3"
        );
        assert_eq!(actions["elements"][1]["action_id"], "rollgate:reject:web-3");
        assert_eq!(actions["elements"][0]["style"], "primary");
        assert_eq!(
            ButtonAction::parse("rollgate:approve:web-3"),
            Some((ButtonAction::Approve, "web-3"))
        );
        assert_eq!(ButtonAction::parse("rollgate:approve:"), None);
        assert_eq!(ButtonAction::parse("other:approve:web-3"), None);
        let done = Event::rollout(
            RolloutNotice {
                rollout_id: "web-3".into(),
                stage: Some(RolloutStage::Succeeded),
                ..RolloutNotice::default()
            },
            Vec::new(),
            0,
        );
        assert!(buttons(&done).is_empty());
    }

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
        let json = serde_json::to_value(blocks(&e, None)).expect("serialises");
        assert_eq!(json[0]["type"], "header");
        assert_eq!(json[0]["text"]["type"], "plain_text");
        assert_eq!(json[1]["type"], "section");
        let all = json.to_string();
        assert!(all.contains("&lt;127.0.0.1:8500&gt;"), "{all}");
    }
}
