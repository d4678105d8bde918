//! Reverting: back to the stable template version without dropping below
//! the original capacity.
//!
//! 1. Cleanup: pin the stable version (never when it is the failing one:
//!    revert-loop guard) and terminate the new instances not accepted yet
//!    (the surge: old instances still serve). New means launched by the
//!    rollout: members it did not start with, on the target image (image
//!    change) or seen before the stable pin (template change, where every
//!    instance runs the same image). Decrement only while the
//!    desired capacity is above the original; beyond that terminate without
//!    decrement, so the group replaces them from the stable template.
//! 2. Replacing: accepted new instances replaced old ones, so they are
//!    replaced surge style in turn: raise capacity, prove the stable
//!    instances healthy like a batch.
//! 3. Retiring: terminate the accepted new instances with decrement.
//! 4. Restore capacity, protection and processes; `Reverted`.
//!
//! A revert that cannot finish (a deadline passes) ends `Failed` for a
//! person: there is nothing safer to fall back to.

use super::action::{Action, RolloutEvent};
use super::batch::raise_to;
use super::events::{self, EventKind, short};
use super::state::{Batch, Revert, RevertCause, RevertStage, Rollout, State};
use super::time::human;
use super::{Cx, finish, gate};

/// Starts a revert. A rollout that never started has nothing to undo.
pub(super) fn enter(r: &mut Rollout, cause: RevertCause, reason: String, cx: &mut Cx<'_>) -> State {
    if r.progress.started_at.is_none() {
        return done(reason, &cause, cx);
    }
    cx.record(EventKind::RevertStarted {
        reason: short(&reason),
        aborted: matches!(cause, RevertCause::Abort { .. }),
    });
    let obs = cx.obs;
    let terminate = obs
        .alive_ids()
        .filter(|id| !is_known(r, id))
        .map(str::to_owned)
        .collect();
    State::Reverting(Revert {
        cause,
        reason,
        stage: RevertStage::Cleanup { terminate },
        deadline_at: cx.now.plus(r.spec.params.progress_deadline),
    })
}

/// An initial member or an accepted new instance.
fn is_known(r: &Rollout, id: &str) -> bool {
    r.progress.initial_members.iter().any(|m| m == id)
        || r.progress.accepted.iter().any(|m| m == id)
}

/// Whether a member the rollout does not know was launched from the
/// rollout's version (and so must go). For an image change its image says
/// so. For a template change the image is the same either way, so the
/// moment says so: the group launches from the version it pins, and until
/// the revert sees the stable version pinned that is the rollout's (an
/// instance whose launch AWS began before the pin but reported only after
/// it would pass for a stable one; the per-instance template version that
/// could tell is not reliable everywhere).
fn from_target(r: &Rollout, obs: &super::Observation, id: &str, pinned: bool) -> bool {
    if r.spec.changes_template() {
        !pinned
    } else {
        obs.image(id) == Some(r.spec.target_image.as_str())
    }
}

/// One step of a revert.
pub(super) fn reverting(r: &mut Rollout, rv: Revert, cx: &mut Cx<'_>) -> State {
    let Revert {
        cause,
        reason,
        stage,
        deadline_at,
    } = rv;
    let obs = cx.obs;
    let now = cx.now;
    let p = r.spec.params.clone();
    let overdue = now >= deadline_at;
    let stuck = |what: String| {
        format!(
            "{what} within progress_deadline {}",
            human(p.progress_deadline)
        )
    };
    let identical = r.spec.stable_is_target();
    let stage = match stage {
        RevertStage::Cleanup { mut terminate } => {
            let stable = r.spec.stable.template_version;
            let pinned = obs.template_version() == Some(stable);
            if !identical {
                let late: Vec<String> = obs
                    .alive_ids()
                    .filter(|id| !is_known(r, id) && !terminate.iter().any(|t| t == id))
                    .filter(|id| from_target(r, obs, id, pinned))
                    .map(str::to_owned)
                    .collect();
                if r.spec.changes_template() && !pinned && !late.is_empty() {
                    // Once the stable pin is seen, nothing tells these from
                    // stable replacements: persist them before pinning, so
                    // a crash right after the pin cannot forget them.
                    terminate.extend(late);
                    let stage = RevertStage::Cleanup { terminate };
                    return reverting_in(stage, cause, reason, deadline_at);
                }
                terminate.extend(late);
            }
            let mut todo = Vec::new();
            let mut waiting = Vec::new();
            if !identical && !pinned {
                waiting.push(format!("the group to pin launch template version {stable}"));
                todo.push(Action::SetGroupTemplate {
                    template_id: r.spec.launch_template_id.clone(),
                    version: stable,
                });
            }
            let alive: Vec<String> = terminate
                .iter()
                .filter(|id| obs.alive(id))
                .cloned()
                .collect();
            if !alive.is_empty() {
                waiting.push(format!("new instances {} to terminate", alive.join(", ")));
                let surge = obs.group.desired_capacity - r.spec.original.desired;
                let k = usize::try_from(surge).unwrap_or(0).min(alive.len());
                let (dec, keep) = alive.split_at(k);
                for (ids, decrement) in [(dec, true), (keep, false)] {
                    if !ids.is_empty() {
                        let ids = ids.to_vec();
                        todo.push(Action::Terminate { ids, decrement });
                    }
                }
            }
            if waiting.is_empty() {
                return replace_or_finish(r, cause, reason, cx);
            }
            if overdue {
                let why = stuck(format!(
                    "revert not cleaned up: waiting for {}",
                    waiting.join("; ")
                ));
                return failed(r, why, &reason, cx);
            }
            cx.actions.extend(todo);
            RevertStage::Cleanup { terminate }
        }
        RevertStage::Replacing { replace, mut batch } => {
            let known = |id: &str| is_known(r, id);
            let before = batch.clone();
            gate::discover(&mut batch, known, obs, now, &p);
            let what = "stable replacements";
            let verdict = gate::track(&mut batch, obs, now, &p, &r.spec.stable.image)
                .err()
                .or_else(|| gate::overdue(&batch, obs, now, &p, what));
            cx.events.extend(events::instance_changes(&before, &batch));
            if let Some(why) = verdict {
                return failed(r, why, &reason, cx);
            }
            if gate::complete(&batch) {
                let stage = RevertStage::Retiring { terminate: replace };
                return reverting_in(stage, cause, reason, now.plus(p.progress_deadline));
            }
            if obs.group.desired_capacity < batch.desired {
                cx.push(raise_to(obs, batch.desired));
            }
            RevertStage::Replacing { replace, batch }
        }
        RevertStage::Retiring { terminate } => {
            let alive: Vec<String> = terminate
                .iter()
                .filter(|id| obs.alive(id))
                .cloned()
                .collect();
            if alive.is_empty() {
                finish::restore(r, cx);
                return done(reason, &cause, cx);
            }
            if overdue {
                let why = stuck(format!("new instances {} not terminated", alive.join(", ")));
                return failed(r, why, &reason, cx);
            }
            cx.push(Action::Terminate {
                ids: alive,
                decrement: true,
            });
            RevertStage::Retiring { terminate }
        }
    };
    reverting_in(stage, cause, reason, deadline_at)
}

fn reverting_in(
    stage: RevertStage,
    cause: RevertCause,
    reason: String,
    deadline_at: super::Timestamp,
) -> State {
    State::Reverting(Revert {
        cause,
        reason,
        stage,
        deadline_at,
    })
}

/// Cleanup is done: replace the accepted new instances with stable ones,
/// or, when there are none (or stable is the target itself, so replacing
/// would change nothing), finish.
fn replace_or_finish(
    r: &mut Rollout,
    cause: RevertCause,
    reason: String,
    cx: &mut Cx<'_>,
) -> State {
    let obs = cx.obs;
    let p = &r.spec.params;
    let replace: Vec<String> = r
        .progress
        .accepted
        .iter()
        .filter(|id| obs.alive(id))
        .cloned()
        .collect();
    if replace.is_empty() || r.spec.stable_is_target() {
        finish::restore(r, cx);
        return done(reason, &cause, cx);
    }
    let original = r.spec.original.desired;
    let initial_alive = r
        .progress
        .initial_members
        .iter()
        .filter(|id| obs.alive(id))
        .count();
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let desired = original.saturating_add(count(replace.len()));
    // The group fills up to `desired`: as many stable instances as it takes
    // for the initial members still alive to make the original capacity.
    let size = u32::try_from(original.saturating_sub(count(initial_alive)).max(0)).unwrap_or(0);
    cx.push(raise_to(obs, desired));
    cx.record(EventKind::BatchLaunched {
        n: 0,
        size,
        desired,
    });
    let deadline_at = cx.now.plus(p.progress_deadline);
    let batch = Batch {
        number: 0,
        size,
        desired,
        launched_at: cx.now,
        launch_deadline_at: cx.now.plus(p.healthy_deadline),
        progress_deadline_at: deadline_at,
        new: Vec::new(),
    };
    reverting_in(
        RevertStage::Replacing { replace, batch },
        cause,
        reason,
        deadline_at,
    )
}

/// The revert is complete.
fn done(reason: String, cause: &RevertCause, cx: &mut Cx<'_>) -> State {
    cx.notify(RolloutEvent::Reverted {
        reason: reason.clone(),
    });
    cx.record(EventKind::Reverted {
        reason: short(&reason),
    });
    State::Reverted {
        reason,
        aborted: matches!(cause, RevertCause::Abort { .. }),
        at: cx.now,
    }
}

/// The revert itself failed: stop for a person, scaling processes given
/// back.
fn failed(r: &Rollout, why: String, cause_reason: &str, cx: &mut Cx<'_>) -> State {
    let reason = format!("revert failed: {why} (reverting because: {cause_reason})");
    finish::resume_processes(r, cx);
    cx.notify(RolloutEvent::Failed {
        reason: reason.clone(),
    });
    cx.record(EventKind::Failed {
        reason: short(&reason),
    });
    State::Failed {
        reason,
        revertible: false,
        at: cx.now,
    }
}
