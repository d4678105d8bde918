//! Starting a rollout: record who was there, then suspend the scaling
//! processes that would fight it, create the target template version (a copy
//! of the recorded base, the template's default version, with the target
//! image) and pin the group to it.

use super::action::{Action, RolloutEvent, SUSPENDED_PROCESSES};
use super::events::EventKind;
use super::state::{Rollout, State};
use super::time::{Timestamp, human};
use super::{Cx, batch, finish};

/// `Pending`: records the members and what to replace (by image, or every
/// member for a template change), and which processes
/// this rollout will suspend (not those an operator suspended already), all
/// from the observation and before any AWS action, so a replay after a crash
/// records the same.
pub(super) fn start(r: &mut Rollout, cx: &mut Cx<'_>) -> State {
    let obs = cx.obs;
    let target = r.spec.target_image.as_str();
    // An image change skips members already on the target image. A template
    // change cannot tell by image (every member runs it): every member
    // present now is old, since this rollout has launched nothing yet.
    let by_image = !r.spec.changes_template();
    let on_target = |id: &str| by_image && obs.image(id) == Some(target);
    let mut initial: Vec<String> = obs.alive_ids().map(str::to_owned).collect();
    initial.sort();
    let mut to_replace: Vec<String> = r
        .spec
        .instances_to_replace
        .iter()
        .filter(|id| obs.alive(id) && !on_target(id))
        .cloned()
        .collect();
    for id in obs.alive_ids() {
        if !on_target(id) && !to_replace.iter().any(|t| t == id) {
            to_replace.push(id.to_owned());
        }
    }
    let p = &mut r.progress;
    p.started_at = Some(cx.now);
    p.initial_members = initial;
    p.to_replace = to_replace;
    p.processes = SUSPENDED_PROCESSES
        .iter()
        .filter(|s| !obs.group.suspended_processes.iter().any(|g| g == *s))
        .map(|s| (*s).to_owned())
        .collect();
    cx.notify(RolloutEvent::Started);
    cx.record(EventKind::Started);
    State::Preparing {
        progress_deadline_at: cx.now.plus(r.spec.params.progress_deadline),
    }
}

/// `Preparing`: asks for whatever the observation does not show done yet;
/// moves to the first batch once everything is. Raising the maximum size is
/// left to each batch (it knows how much it needs).
pub(super) fn prepare(r: &mut Rollout, deadline: Timestamp, cx: &mut Cx<'_>) -> State {
    let obs = cx.obs;
    let spec = &r.spec;
    let mut todo = Vec::new();
    let mut waiting = Vec::new();

    let missing: Vec<String> = r
        .progress
        .processes
        .iter()
        .filter(|p| !obs.group.suspended_processes.contains(p))
        .cloned()
        .collect();
    if !missing.is_empty() {
        waiting.push(format!("processes {} to be suspended", missing.join(", ")));
        todo.push(Action::SuspendProcesses(missing));
    }
    match spec.target_template_version {
        None => {
            waiting.push(format!(
                "a launch template version for {} to be created",
                spec.target_image
            ));
            todo.push(Action::CreateTemplateVersion {
                template_id: spec.launch_template_id.clone(),
                base_version: spec.base_version(),
                image: spec.target_image.clone(),
                rollout_id: spec.id.clone(),
            });
        }
        Some(v) if obs.template_version() != Some(v) => {
            let now_on = obs
                .group
                .launch_template
                .as_ref()
                .map_or("none", |t| t.version.as_str());
            waiting.push(format!(
                "the group to pin launch template version {v} (it has {now_on})"
            ));
            todo.push(Action::SetGroupTemplate {
                template_id: spec.launch_template_id.clone(),
                version: v,
            });
        }
        Some(_) => {}
    }

    if waiting.is_empty() {
        if let Some(template_version) = spec.target_template_version {
            cx.record(EventKind::Prepared { template_version });
        }
        return batch::next_batch(r, deadline, cx);
    }
    if cx.now >= deadline {
        let reason = format!(
            "rollout not prepared within progress_deadline {}: waiting for {}",
            human(spec.params.progress_deadline),
            waiting.join("; ")
        );
        return finish::fail(r, reason, cx);
    }
    cx.actions.extend(todo);
    State::Preparing {
        progress_deadline_at: deadline,
    }
}
