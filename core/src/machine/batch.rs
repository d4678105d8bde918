//! The surge loop: launch a batch, prove it healthy, retire as many old
//! instances, repeat; with the canary pause after the first batch.

use super::action::{Action, RolloutEvent};
use super::events::{self, EventKind};
use super::observe::Observation;
use super::state::{Batch, Canary, Retire, Rollout, State};
use super::time::{Timestamp, human};
use super::{Cx, finish, gate};

/// Old instances still to retire: chosen at start, not chosen yet, still
/// alive (an old instance that vanished on its own is not replaced twice).
fn remaining_old<'a>(r: &'a Rollout, obs: &'a Observation) -> impl Iterator<Item = &'a String> {
    r.progress
        .to_replace
        .iter()
        .filter(|id| !r.progress.retired.contains(id) && obs.alive(id))
}

/// Starts the next batch, or the bake when no old instance is left. The
/// first batch is the canary when there is one; the last may be smaller.
/// The capacity asked is absolute (original + batch), so a replay, or a
/// desired capacity someone else changed, ends at the same number.
pub(super) fn next_batch(
    r: &mut Rollout,
    progress_deadline_at: Timestamp,
    cx: &mut Cx<'_>,
) -> State {
    let obs = cx.obs;
    let p = &r.spec.params;
    let remaining = remaining_old(r, obs).count();
    if remaining == 0 {
        let watch = r
            .progress
            .accepted
            .iter()
            .filter(|id| obs.alive(id))
            .cloned()
            .collect();
        let until = cx.now.plus(p.bake_time);
        cx.record(EventKind::Baking { until });
        return State::Baking {
            since: cx.now,
            until,
            watch,
        };
    }
    let canary = r.progress.batches_done == 0 && p.canary > 0;
    let size = if canary { p.canary } else { p.batch() }.min(clamp_u32(remaining));
    let desired = r.spec.original.desired.saturating_add(clamp_i32(size));
    cx.push(raise_to(obs, desired));
    let number = r.progress.batches_done + 1;
    cx.record(EventKind::BatchLaunched {
        n: number,
        size,
        desired,
    });
    State::Launching(Batch {
        number,
        size,
        desired,
        launched_at: cx.now,
        launch_deadline_at: cx.now.plus(p.healthy_deadline),
        progress_deadline_at,
        new: Vec::new(),
    })
}

/// The `SetCapacity` that runs the group at `desired`, raising the maximum
/// size only when it is too low.
pub(super) fn raise_to(obs: &Observation, desired: i32) -> Action {
    Action::SetCapacity {
        min: None,
        max: (obs.group.max_size < desired).then_some(desired),
        desired: Some(desired),
    }
}

/// `Launching`: adopt new members, run their timers, fail on a vanished
/// instance or a passed deadline, move on once the whole batch is healthy.
pub(super) fn launching(r: &mut Rollout, mut b: Batch, cx: &mut Cx<'_>) -> State {
    let obs = cx.obs;
    let p = &r.spec.params;
    let progress = &r.progress;
    let known = |id: &str| {
        progress.initial_members.iter().any(|m| m == id)
            || progress.accepted.iter().any(|m| m == id)
    };
    let before = b.clone();
    gate::discover(&mut b, known, obs, cx.now, p);
    let what = format!("batch {}", b.number);
    let verdict = repinned(r, obs)
        .or_else(|| gate::track(&mut b, obs, cx.now, p, &r.spec.target_image).err())
        .or_else(|| gate::overdue(&b, obs, cx.now, p, &what));
    cx.events.extend(events::instance_changes(&before, &b));
    if let Some(reason) = verdict {
        return finish::fail(r, reason, cx);
    }
    if gate::complete(&b) {
        return batch_healthy(r, b, cx);
    }
    if obs.group.desired_capacity < b.desired {
        cx.push(raise_to(obs, b.desired));
    }
    State::Launching(b)
}

/// For a template change, the group no longer pinning the rollout's
/// version while a batch launches, as a failure reason. An image change
/// sees this in the new instances' image (the gate); a template change
/// cannot (the image is the same), and its instances would launch with
/// another version's settings and still pass.
fn repinned(r: &Rollout, obs: &Observation) -> Option<String> {
    let target = r.spec.target_template_version?;
    let pins = obs.template_version();
    (r.spec.changes_template() && pins != Some(target)).then(|| {
        let pins = pins.map_or("no numbered version".to_owned(), |v| format!("version {v}"));
        format!(
            "the group's launch template changed under the rollout: it pins {pins}, not {target}, so new instances may not carry the template change"
        )
    })
}

/// A batch is healthy: protect it, tell people, then pause for promotion
/// (canary) or retire old instances.
fn batch_healthy(r: &mut Rollout, b: Batch, cx: &mut Cx<'_>) -> State {
    let p = &r.spec.params;
    let ids = b.ids();
    cx.push(Action::Protect(ids.clone()));
    let left = clamp_u32(remaining_old(r, cx.obs).count()).saturating_sub(b.size);
    cx.notify(RolloutEvent::BatchHealthy {
        n: b.number,
        of: b.number + left.div_ceil(p.batch()),
    });
    let canary = b.number == 1 && p.canary > 0 && r.progress.batches_done == 0;
    if canary && !r.progress.promoted {
        let auto_promote_at = p.auto_promote.then(|| cx.now.plus(p.bake_time));
        cx.notify(RolloutEvent::CanaryWaiting { auto_promote_at });
        cx.record(EventKind::CanaryPaused { auto_promote_at });
        return State::CanaryPaused(Canary {
            size: b.size,
            new: ids,
            since: cx.now,
            auto_promote_at,
        });
    }
    if canary {
        cx.notify(RolloutEvent::Promoted);
        cx.record(EventKind::Promoted);
    }
    retire(r, b.number, ids, b.size, b.progress_deadline_at, cx)
}

/// Accepts the batch and chooses the old instances to terminate, in the
/// plan's order. Nothing is terminated in this step: the choice is persisted
/// first, so a crash cannot make a replay choose others.
fn retire(
    r: &mut Rollout,
    batch: u32,
    new: Vec<String>,
    size: u32,
    progress_deadline_at: Timestamp,
    cx: &mut Cx<'_>,
) -> State {
    let terminate: Vec<String> = remaining_old(r, cx.obs)
        .take(size as usize)
        .cloned()
        .collect();
    let p = &mut r.progress;
    for id in &new {
        if !p.accepted.contains(id) {
            p.accepted.push(id.clone());
        }
    }
    p.retired.extend(terminate.iter().cloned());
    State::Retiring(Retire {
        batch,
        new,
        terminate,
        progress_deadline_at,
    })
}

/// `Retiring`: keeps asking to protect the batch and to terminate (with
/// decrement) the chosen old instances still alive; an old instance already
/// terminating or gone is done. Then the next batch.
pub(super) fn retiring(r: &mut Rollout, rt: Retire, cx: &mut Cx<'_>) -> State {
    let obs = cx.obs;
    let pending: Vec<String> = rt
        .terminate
        .iter()
        .filter(|id| obs.alive(id))
        .cloned()
        .collect();
    if pending.is_empty() {
        cx.record(EventKind::BatchRetired {
            n: rt.batch,
            count: clamp_u32(rt.terminate.len()),
        });
        r.progress.batches_done += 1;
        return next_batch(r, rt.progress_deadline_at, cx);
    }
    if cx.now >= rt.progress_deadline_at {
        let states: Vec<String> = pending
            .iter()
            .map(|id| {
                let s = obs.member(id).map_or("?", |m| m.lifecycle_state.as_str());
                format!("{id} ({s})")
            })
            .collect();
        let reason = format!(
            "old instances not terminated within progress_deadline {}: {}",
            human(r.spec.params.progress_deadline),
            states.join(", ")
        );
        return finish::fail(r, reason, cx);
    }
    let unprotected: Vec<String> = rt
        .new
        .iter()
        .filter(|id| obs.member(id).is_some_and(|m| !m.protected_from_scale_in))
        .cloned()
        .collect();
    if !unprotected.is_empty() {
        cx.push(Action::Protect(unprotected));
    }
    cx.push(Action::Terminate {
        ids: pending,
        decrement: true,
    });
    State::Retiring(rt)
}

/// `CanaryPaused`: the canary must keep passing; a promote (or
/// `auto_promote_at`) retires as many old instances and goes on. Waiting
/// for a person is not a lack of progress: the progress deadline restarts
/// at promotion.
pub(super) fn canary(r: &mut Rollout, c: Canary, cx: &mut Cx<'_>) -> State {
    let obs = cx.obs;
    for id in &c.new {
        if !obs.passing(id) {
            let how = if obs.alive(id) {
                "stopped passing"
            } else {
                "was terminated by AWS"
            };
            let reason = format!(
                "canary instance {id} {how} while waiting for promotion: {}",
                obs.why_not_passing(id)
            );
            return finish::fail(r, reason, cx);
        }
    }
    let auto = c.auto_promote_at.is_some_and(|t| cx.now >= t);
    if !(r.progress.promoted || auto) {
        return State::CanaryPaused(c);
    }
    cx.notify(RolloutEvent::Promoted);
    cx.record(EventKind::Promoted);
    let deadline = cx.now.plus(r.spec.params.progress_deadline);
    retire(r, 1, c.new, c.size, deadline, cx)
}

fn clamp_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn clamp_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
