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

/// A decided plan's message: a header saying the decision, the decision
/// with who and when, then the blocks the user saw without their header and
/// buttons (none when they cannot be read back, as after the modal).
pub fn decided_blocks(seen: &Value, plan: &Plan) -> Vec<SlackBlock> {
    let kept: Vec<Value> = seen
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] != "actions" && b["type"] != "header")
        .cloned()
        .collect();
    let rest: Vec<SlackBlock> = serde_json::from_value(Value::Array(kept)).unwrap_or_default();
    let emoji = match plan.decision {
        Decision::Approved { .. } => ":white_check_mark:",
        Decision::Rejected { .. } => ":no_entry:",
        _ => ":information_source:",
    };
    let mut blocks: Vec<SlackBlock> = vec![
        SlackHeaderBlock::new(SlackBlockPlainTextOnly::from(format!(
            "PLAN {} {}",
            truncate(&plan.id, 100),
            plan.decision.word().to_uppercase()
        )))
        .into(),
        SlackSectionBlock::new()
            .with_text(md!(
                "{} *Plan {}* {}",
                emoji,
                escape(&plan.id),
                escape(&decision_words(plan))
            ))
            .into(),
    ];
    blocks.extend(rest.into_iter().take(48));
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    const PLAN: &str = include_str!("../rollout/store/testdata/plan_v1.json");

    fn plan(decision: Decision) -> Plan {
        let mut p: Plan = crate::consul::records::decode("k", PLAN.as_bytes()).unwrap();
        p.decision = decision;
        p
    }

    #[test]
    fn a_decided_message_keeps_what_was_shown_and_loses_its_buttons() {
        let p = plan(Decision::Approved {
            by: "alice (Slack U0ALICE)".into(),
            at: 1_795_000_000_000,
        });
        let seen = json!([
            {"type": "header", "text": {"type": "plain_text", "text": "PLAN PENDING APPROVAL"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "1.0.0 -> 1.1.0"}},
            {"type": "actions", "elements": [{"type": "button", "action_id": "rollgate:approve:web-1",
                "text": {"type": "plain_text", "text": "Approve"}}]},
        ]);
        let out = serde_json::to_value(decided_blocks(&seen, &p)).unwrap();
        let text = out.to_string();
        assert!(!text.contains("\"actions\""), "{text}");
        assert!(
            text.contains("1.0.0 -&gt; 1.1.0") || text.contains("1.0.0 -> 1.1.0"),
            "{text}"
        );
        assert_eq!(out[0]["type"], "header");
        assert_eq!(out[0]["text"]["text"], "PLAN web-2 APPROVED");
        assert!(!text.contains("PENDING"), "{text}");
        assert!(
            out[1]["text"]["text"]
                .as_str()
                .unwrap()
                .contains("approved by alice (Slack U0ALICE)"),
            "{text}"
        );
        // Nothing readable was shown (the modal): a header and the decision.
        let out = serde_json::to_value(decided_blocks(&serde_json::Value::Null, &p)).unwrap();
        assert_eq!(out.as_array().unwrap().len(), 2, "{out}");
        assert!(decided_text(&p).contains("approved by alice"));
    }

    #[test]
    fn a_late_click_is_told_what_happened() {
        let expired = plan(Decision::Pending { expires_at: 10 });
        assert!(
            already(&expired, 20).contains("expired"),
            "{}",
            already(&expired, 20)
        );
        let rejected = plan(Decision::Rejected {
            by: "bob (Slack U0BOB)".into(),
            at: 1_795_000_000_000,
            reason: "too risky".into(),
        });
        let text = already(&rejected, 20);
        assert!(
            text.contains("already rejected by bob (Slack U0BOB)"),
            "{text}"
        );
        assert!(
            not_allowed(ButtonAction::Approve, "web")
                .starts_with("You are not allowed to approve web")
        );
    }
}
