//! What a Socket Mode envelope asks, read from Slack's documented payload
//! shapes (`block_actions`, `view_submission`). Pure.
//!
//! Only the fields rollgate acts on are read, so a field Slack adds or
//! leaves out elsewhere in the payload never makes a click unreadable.

use serde_json::Value;

use crate::notify::blocks::ButtonAction;

/// The `callback_id` of the reject-reason modal.
pub const REJECT_CALLBACK: &str = "rollgate:reject";
/// The block and action IDs of the modal's reason input.
pub const REASON_INPUT: &str = "reason";

/// A Slack user, as a decision records them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackUser {
    /// `U…`.
    pub id: String,
    /// Their user name.
    pub name: String,
}

impl SlackUser {
    /// How a decision names them: `alice (Slack U0ALICE)`.
    pub fn who(&self) -> String {
        format!("{} (Slack {})", self.name, self.id)
    }
}

/// The message a button was on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MessageRef {
    /// Channel ID.
    pub channel: String,
    /// The message's `ts`.
    pub ts: String,
}

/// One interaction rollgate answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Interaction {
    /// A button of a rollgate message was clicked.
    Button {
        /// Who clicked.
        user: SlackUser,
        /// What the button does.
        action: ButtonAction,
        /// The plan (or its rollout) it was for.
        plan: String,
        /// Where the button was.
        message: MessageRef,
        /// To open a modal in answer (once, within seconds).
        trigger_id: String,
        /// The message's blocks as the user saw them.
        blocks: Value,
    },
    /// The reject-reason modal was submitted.
    RejectReason {
        /// Who submitted.
        user: SlackUser,
        /// The plan.
        plan: String,
        /// The message whose button opened the modal.
        message: MessageRef,
        /// The reason given.
        reason: String,
    },
}

impl Interaction {
    /// Who asked, and the message they asked on.
    pub fn asker(&self) -> (&SlackUser, &MessageRef) {
        match self {
            Interaction::Button { user, message, .. }
            | Interaction::RejectReason { user, message, .. } => (user, message),
        }
    }
}

/// The modal's `private_metadata`: which plan and message it is about.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModalContext {
    /// The plan.
    pub plan: String,
    /// The message with the buttons.
    pub message: MessageRef,
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

fn user(p: &Value) -> Option<SlackUser> {
    let id = text(&p["user"]["id"]);
    if id.is_empty() {
        return None;
    }
    let name = [&p["user"]["username"], &p["user"]["name"]]
        .into_iter()
        .map(text)
        .find(|n| !n.is_empty())
        .unwrap_or_else(|| id.clone());
    Some(SlackUser { id, name })
}

/// Reads an interactive envelope's payload; `None` for anything that is
/// not a rollgate button or the reject modal (other apps' or unknown).
pub fn parse(payload: &Value) -> Option<Interaction> {
    match payload["type"].as_str()? {
        "block_actions" => {
            let action = payload["actions"].as_array()?.first()?;
            let (action, plan) = ButtonAction::parse(action["action_id"].as_str()?)?;
            let channel = [
                &payload["container"]["channel_id"],
                &payload["channel"]["id"],
            ]
            .into_iter()
            .map(text)
            .find(|c| !c.is_empty())?;
            let ts = [
                &payload["container"]["message_ts"],
                &payload["message"]["ts"],
            ]
            .into_iter()
            .map(text)
            .find(|t| !t.is_empty())?;
            Some(Interaction::Button {
                user: user(payload)?,
                action,
                plan: plan.to_string(),
                message: MessageRef { channel, ts },
                trigger_id: text(&payload["trigger_id"]),
                blocks: payload["message"]["blocks"].clone(),
            })
        }
        "view_submission" => {
            let view = &payload["view"];
            if view["callback_id"] != REJECT_CALLBACK {
                return None;
            }
            let context: ModalContext =
                serde_json::from_str(view["private_metadata"].as_str()?).ok()?;
            let reason = text(&view["state"]["values"][REASON_INPUT][REASON_INPUT]["value"]);
            Some(Interaction::RejectReason {
                user: user(payload)?,
                plan: context.plan,
                message: context.message,
                reason: reason.trim().to_string(),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_click_names_the_user_the_plan_and_the_message() {
        let p = json!({
            "type": "block_actions",
            "user": {"id": "U0ALICE", "username": "alice", "name": "alice"},
            "container": {"type": "message", "message_ts": "1.2", "channel_id": "C0ALERTS"},
            "trigger_id": "t-1",
            "message": {"ts": "1.2", "blocks": []},
            "actions": [{"type": "button", "action_id": "rollgate:approve:web-3", "value": "web-3"}],
        });
        let Some(Interaction::Button {
            user,
            action,
            plan,
            message,
            trigger_id,
            ..
        }) = parse(&p)
        else {
            panic!("not a button: {p}");
        };
        assert_eq!(user.who(), "alice (Slack U0ALICE)");
        assert_eq!(action, ButtonAction::Approve);
        assert_eq!(plan, "web-3");
        assert_eq!(
            message,
            MessageRef {
                channel: "C0ALERTS".into(),
                ts: "1.2".into()
            }
        );
        assert_eq!(trigger_id, "t-1");

        let other = json!({"type": "block_actions", "user": {"id": "U1"},
            "actions": [{"action_id": "someone-elses-button"}]});
        assert_eq!(parse(&other), None);
    }

    #[test]
    fn the_modal_carries_the_plan_and_the_reason() {
        let context = serde_json::to_string(&ModalContext {
            plan: "web-3".into(),
            message: MessageRef {
                channel: "C0ALERTS".into(),
                ts: "1.2".into(),
            },
        })
        .unwrap_or_default();
        let p = json!({
            "type": "view_submission",
            "user": {"id": "U0BOB", "username": "bob"},
            "view": {"callback_id": REJECT_CALLBACK, "private_metadata": context,
                "state": {"values": {"reason": {"reason": {"type": "plain_text_input", "value": " too risky "}}}}},
        });
        assert_eq!(
            parse(&p),
            Some(Interaction::RejectReason {
                user: SlackUser {
                    id: "U0BOB".into(),
                    name: "bob".into()
                },
                plan: "web-3".into(),
                message: MessageRef {
                    channel: "C0ALERTS".into(),
                    ts: "1.2".into()
                },
                reason: "too risky".into(),
            })
        );
    }
}
