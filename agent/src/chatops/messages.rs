//! What approvals show in Slack: the reject-reason modal, a decided plan's
//! message (the decision, who and when, no buttons), and the answers only
//! the clicking user sees. Pure.

use serde_json::Value;
use slack_morphism::prelude::*;

use crate::notify::blocks::{ButtonAction, escape};
use crate::rollout::plan::{Decision, Plan};
use crate::rollout::render;

use super::interaction::{MessageRef, ModalContext, REASON_INPUT, REJECT_CALLBACK};

/// The modal asking why a plan is rejected.
pub fn reject_modal(plan: &str, message: &MessageRef) -> SlackView {
    let context = ModalContext {
        plan: plan.into(),
        message: message.clone(),
    };
    let input = SlackInputBlock::new(
        SlackBlockPlainTextOnly::from("Why reject it?"),
        SlackInputBlockElement::PlainTextInput(
            SlackBlockPlainTextInputElement::new()
                .with_action_id(SlackActionId(REASON_INPUT.into()))
                .with_multiline(true)
                .with_max_length(2000),
        ),
    )
    .with_block_id(SlackBlockId(REASON_INPUT.into()));
    SlackView::Modal(
        SlackModalView::new(
            SlackBlockPlainTextOnly::from(format!("Reject {}", truncate(plan, 16))),
            vec![
                SlackSectionBlock::new()
                    .with_text(md!(
                        "Plan `{}` will not roll out. The reason is recorded and shown in `rollgate history`.",
                        escape(plan)
                    ))
                    .into(),
                input.into(),
            ],
        )
        .with_submit(SlackBlockPlainTextOnly::from("Reject"))
        .with_close(SlackBlockPlainTextOnly::from("Cancel"))
        .with_callback_id(SlackCallbackId(REJECT_CALLBACK.into()))
        .with_private_metadata(serde_json::to_string(&context).unwrap_or_default()),
    )
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// `approved by alice (Slack U0ALICE) at …`.
pub fn decision_words(plan: &Plan) -> String {
    render::decision(&plan.decision)
}

/// The fallback text of a decided plan's message.
pub fn decided_text(plan: &Plan) -> String {
    format!(
        "Plan {} of {}: {}.",
        plan.id,
        plan.service,
        decision_words(plan)
    )
}

/// A decided plan's message: the blocks the user saw without their
/// buttons, then the decision. When those blocks cannot be read back, a
/// header and the decision alone.
pub fn decided_blocks(seen: &Value, plan: &Plan) -> Vec<SlackBlock> {
    let kept: Vec<Value> = seen
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] != "actions")
        .cloned()
        .collect();
    let mut blocks: Vec<SlackBlock> = serde_json::from_value(Value::Array(kept))
        .ok()
        .filter(|b: &Vec<SlackBlock>| !b.is_empty())
        .unwrap_or_else(|| {
            vec![
                SlackHeaderBlock::new(SlackBlockPlainTextOnly::from(format!("Plan {}", plan.id)))
                    .into(),
            ]
        });
    let emoji = match plan.decision {
        Decision::Approved { .. } => ":white_check_mark:",
        Decision::Rejected { .. } => ":no_entry:",
        _ => ":information_source:",
    };
    blocks.truncate(48);
    let at = blocks.len().min(1);
    blocks.insert(
        at,
        SlackSectionBlock::new()
            .with_text(md!(
                "{} *Plan {}* {}",
                emoji,
                escape(&plan.id),
                escape(&decision_words(plan))
            ))
            .into(),
    );
    blocks
}

/// The ephemeral answer to a user the service does not list.
pub fn not_allowed(action: ButtonAction, service: &str) -> String {
    format!(
        "You are not allowed to {} {service}: ask to be added to its slack_approvers.",
        action.verb()
    )
}

/// The ephemeral answer to a click on a plan decided already.
pub fn already(plan: &Plan, now: u64) -> String {
    match &plan.decision {
        Decision::Pending { .. } if !plan.is_pending(now) => {
            format!("Plan {} expired: nobody answered in time.", plan.id)
        }
        d => format!("Plan {} is already {}.", plan.id, render::decision(d)),
    }
}
