//! The ends of a rollout: the bake and success, failure (revert or stop),
//! and the clean-up every end shares (capacity, protection, processes).

use super::action::{Action, RolloutEvent};
use super::events::{EventKind, short};
use super::observe::Observation;
use super::state::{RevertCause, Rollout, State};
use super::time::{Timestamp, human};
use super::{Cx, revert};

/// `Baking`: every watched new instance must stay alive and passing until
/// `until`; then success.
pub(super) fn baking(
    r: &mut Rollout,
    since: Timestamp,
    until: Timestamp,
    watch: Vec<String>,
    cx: &mut Cx<'_>,
) -> State {
    let obs = cx.obs;
    let bake = human(r.spec.params.bake_time);
    for id in &watch {
        if !obs.passing(id) {
            let how = if obs.alive(id) {
                "stopped passing"
            } else {
                "was terminated by AWS"
            };
            let reason = format!(
                "instance {id} {how} during bake_time {bake}: {}",
                obs.why_not_passing(id)
            );
            return fail(r, reason, cx);
        }
    }
    if cx.now < until {
        return State::Baking {
            since,
            until,
            watch,
        };
    }
    succeed(r, cx)
}

/// Success: original capacity, protection lifted, processes resumed, the
/// target recorded as stable, people told.
fn succeed(r: &mut Rollout, cx: &mut Cx<'_>) -> State {
    let Some(version) = r.spec.target_template_version else {
        // Preparing cannot end without it; say so rather than record a lie.
        let reason = "rollout reached the end without a launch template version (bug)".to_owned();
        return fail(r, reason, cx);
    };
    restore(r, cx);
    cx.push(Action::RecordStable {
        template_version: version,
        image: r.spec.target_image.clone(),
        version: r.spec.target_version.clone(),
    });
    cx.notify(RolloutEvent::Succeeded);
    cx.record(EventKind::Succeeded);
    State::Succeeded { at: cx.now }
}

/// A failure: notify with the reason and mark the image failed (evidence
/// against it; not for a template change, whose image is the stable one),
/// then revert (`auto_revert`) or stop where it is.
///
/// Stopping leaves template, capacity and instances as they are for an
/// operator to look at (and `abort` to revert); only the scaling processes
/// are given back, so the group is not left without its automation.
pub(super) fn fail(r: &mut Rollout, reason: String, cx: &mut Cx<'_>) -> State {
    cx.notify(RolloutEvent::Failed {
        reason: reason.clone(),
    });
    cx.record(EventKind::Failed {
        reason: short(&reason),
    });
    // A template change's image runs on every stable instance: the failure
    // is not its fault, and marking it would stop every later plan of it.
    // The evidence against Terraform's version is the plan's outcome, which
    // the planner reads before planning that version again.
    if !r.spec.changes_template() {
        cx.push(Action::MarkImageFailed {
            image: r.spec.target_image.clone(),
            reason: reason.clone(),
        });
    }
    if r.spec.params.auto_revert {
        return revert::enter(r, RevertCause::Failure, reason, cx);
    }
    resume_processes(r, cx);
    State::Failed {
        reason,
        revertible: true,
        at: cx.now,
    }
}

/// Puts the group back to its original capacity, lifts the protection the
/// rollout set, and resumes the processes it suspended; each only where
/// the observation shows it is needed.
pub(super) fn restore(r: &Rollout, cx: &mut Cx<'_>) {
    let obs = cx.obs;
    let (g, o) = (&obs.group, r.spec.original);
    let differs = |now: i32, was: i32| (now != was).then_some(was);
    let (min, max, desired) = (
        differs(g.min_size, o.min),
        differs(g.max_size, o.max),
        differs(g.desired_capacity, o.desired),
    );
    if min.is_some() || max.is_some() || desired.is_some() {
        cx.push(Action::SetCapacity { min, max, desired });
    }
    let protected = protected_new(r, obs);
    if !protected.is_empty() {
        cx.push(Action::Unprotect(protected));
    }
    resume_processes(r, cx);
}

/// Live members launched during the rollout that are protected from
/// scale-in (protection an operator set on an initial member is theirs).
fn protected_new(r: &Rollout, obs: &Observation) -> Vec<String> {
    obs.group
        .instances
        .iter()
        .filter(|m| m.protected_from_scale_in && obs.alive(&m.instance_id))
        .filter(|m| !r.progress.initial_members.contains(&m.instance_id))
        .map(|m| m.instance_id.clone())
        .collect()
}

/// Resumes the processes this rollout suspended that are still suspended.
pub(super) fn resume_processes(r: &Rollout, cx: &mut Cx<'_>) {
    let suspended = &cx.obs.group.suspended_processes;
    let ours: Vec<String> = r
        .progress
        .processes
        .iter()
        .filter(|p| suspended.contains(p))
        .cloned()
        .collect();
    if !ours.is_empty() {
        cx.push(Action::ResumeProcesses(ours));
    }
}
