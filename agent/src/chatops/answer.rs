//! Answering an interaction: who may act, the decision through the same
//! check-and-set as `rollgate approve` ([`Store::decide`]), the message
//! updated in place (and said in its thread, which keeps it once later
//! notices update the message), and an ephemeral line to anyone refused.
//!
//! Safe to repeat: a plan is decided once (the check-and-set), so two
//! clicks at once give one decision and the other clicker is told who was
//! first; an envelope Slack delivers again finds the plan decided by the
//! same user and only updates the message again. Nothing is recorded for a
//! user the service does not list.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::notify::blocks::ButtonAction;
use crate::rollout::machine::OperatorCommand;
use crate::rollout::plan::{Decision, Plan, now_ms, parse_plan_id};
use crate::rollout::store::Store;

use super::ChatopsError;
use super::api::SlackApi;
use super::interaction::{Interaction, MessageRef, SlackUser};
use super::messages;

/// Answers interactions for the leader.
#[derive(Debug, Clone)]
pub struct Answerer {
    /// The Slack API.
    pub api: Arc<SlackApi>,
    /// Each service's `slack_approvers`.
    pub approvers: Arc<BTreeMap<String, Vec<String>>>,
    /// The leader's (fenced) store.
    pub store: Store,
}

impl Answerer {
    /// Answers one interaction.
    pub async fn answer(&self, interaction: Interaction) -> Result<(), ChatopsError> {
        match interaction {
            Interaction::Button {
                user,
                action,
                plan,
                message,
                trigger_id,
                blocks,
            } => {
                let Some(service) = self.may_act(&user, action, &plan, &message).await? else {
                    return Ok(());
                };
                match action {
                    ButtonAction::Approve => {
                        let decision = Decision::Approved {
                            by: user.who(),
                            at: now_ms(),
                        };
                        self.decide(&user, &plan, &message, &blocks, decision).await
                    }
                    ButtonAction::Reject => {
                        let (p, _) = self.store.plan(&plan).await?;
                        if !p.is_pending(now_ms()) {
                            return self
                                .tell(&message, &user, messages::already(&p, now_ms()))
                                .await;
                        }
                        self.api
                            .open_modal(&trigger_id, messages::reject_modal(&plan, &message))
                            .await
                    }
                    ButtonAction::Pause
                    | ButtonAction::Resume
                    | ButtonAction::Abort
                    | ButtonAction::Promote => {
                        self.command(&user, action, &service, &plan, &message).await
                    }
                }
            }
            Interaction::RejectReason {
                user,
                plan,
                message,
                reason,
            } => {
                if self
                    .may_act(&user, ButtonAction::Reject, &plan, &message)
                    .await?
                    .is_none()
                {
                    return Ok(());
                }
                if reason.is_empty() {
                    return self
                        .tell(
                            &message,
                            &user,
                            format!("Plan {plan} was not rejected: a reason is required."),
                        )
                        .await;
                }
                let decision = Decision::Rejected {
                    by: user.who(),
                    at: now_ms(),
                    reason,
                };
                // The modal has no blocks of the message: keep what it shows
                // by reading nothing back (a header and the decision).
                self.decide(&user, &plan, &message, &serde_json::Value::Null, decision)
                    .await
            }
        }
    }

    /// The plan's service when `user` may act on it; otherwise tells them
    /// why not and answers `None`.
    async fn may_act(
        &self,
        user: &SlackUser,
        action: ButtonAction,
        plan: &str,
        message: &MessageRef,
    ) -> Result<Option<String>, ChatopsError> {
        let Some((service, _)) = parse_plan_id(plan) else {
            tracing::warn!(plan = %plan, "A Slack button names no plan; ignored.");
            return Ok(None);
        };
        let Some(listed) = self.approvers.get(service) else {
            self.tell(
                message,
                user,
                format!("rollgate does not manage {service}."),
            )
            .await?;
            return Ok(None);
        };
        if listed.contains(&user.id) {
            return Ok(Some(service.to_string()));
        }
        for group in listed.iter().filter(|g| g.starts_with('S')) {
            match self.api.group_members(group).await {
                Ok(members) if members.contains(&user.id) => return Ok(Some(service.to_string())),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(group = %group, error = %e, "Cannot list a Slack user group's members.");
                    self.tell(
                        message,
                        user,
                        format!("Cannot check your membership of {group} ({e}); nothing was done."),
                    )
                    .await?;
                    return Ok(None);
                }
            }
        }
        tracing::info!(user = %user.who(), action = action.verb(), plan = %plan,
            "Refused a Slack user the service does not list.");
        self.tell(message, user, messages::not_allowed(action, service))
            .await?;
        Ok(None)
    }

    async fn decide(
        &self,
        user: &SlackUser,
        plan: &str,
        message: &MessageRef,
        seen: &serde_json::Value,
        decision: Decision,
    ) -> Result<(), ChatopsError> {
        let kind = decision.word();
        match self.store.decide(plan, decision, now_ms()).await? {
            Ok(p) => {
                tracing::info!(plan = %p.id, decision = %messages::decision_words(&p),
                    "Plan decided from Slack.");
                self.show(&p, message, seen).await?;
                // The first message will show the story's later notices;
                // the thread keeps the decision.
                self.api.reply(message, messages::decided_text(&p)).await
            }
            Err(p) if same_decider(&p, user, kind) => {
                // The same user's decision seen again (Slack delivered the
                // envelope twice): nothing new, show it again.
                self.show(&p, message, seen).await
            }
            Err(p) => {
                self.tell(message, user, messages::already(&p, now_ms()))
                    .await
            }
        }
    }

    async fn show(
        &self,
        plan: &Plan,
        message: &MessageRef,
        seen: &serde_json::Value,
    ) -> Result<(), ChatopsError> {
        self.api
            .update(
                message,
                messages::decided_text(plan),
                messages::decided_blocks(seen, plan),
            )
            .await
    }

    async fn command(
        &self,
        user: &SlackUser,
        action: ButtonAction,
        service: &str,
        plan: &str,
        message: &MessageRef,
    ) -> Result<(), ChatopsError> {
        let running = self.store.rollout(service).await?;
        let Some((rollout, _)) = running.filter(|(r, _)| r.spec.id == plan) else {
            return self
                .tell(
                    message,
                    user,
                    format!("Rollout {plan} is not running; nothing was done."),
                )
                .await;
        };
        let command = match action {
            ButtonAction::Pause => OperatorCommand::Pause,
            ButtonAction::Resume => OperatorCommand::Resume,
            ButtonAction::Promote => OperatorCommand::Promote,
            _ => OperatorCommand::Abort {
                by: user.who(),
                reason: "aborted from Slack".into(),
            },
        };
        self.store.push_command(service, &command).await?;
        tracing::info!(rollout = %rollout.spec.id, user = %user.who(), action = action.verb(),
            "Rollout command from Slack queued.");
        self.tell(
            message,
            user,
            format!(
                "Asked rollout {plan} of {service} to {}; the leader applies it on its next step.",
                action.verb()
            ),
        )
        .await
    }

    async fn tell(
        &self,
        message: &MessageRef,
        user: &SlackUser,
        text: String,
    ) -> Result<(), ChatopsError> {
        self.api.tell(&message.channel, &user.id, text).await
    }
}

/// Whether `plan` was decided `kind` by `user` (a repeat of their click).
fn same_decider(plan: &Plan, user: &SlackUser, kind: &str) -> bool {
    let who = user.who();
    match &plan.decision {
        Decision::Approved { by, .. } | Decision::Rejected { by, .. } => {
            *by == who && plan.decision.word() == kind
        }
        _ => false,
    }
}
