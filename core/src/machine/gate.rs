//! The health gate for a batch of new instances, shared by rollout batches
//! and a revert's stable replacements: adopt new members, run each one's
//! `min_healthy_time` and `failure_time` timers, and say which deadline
//! passed, or which instance answered wrong for too long, and why.

use super::observe::{CheckFailure, Health, Observation};
use super::spec::Params;
use super::state::{Batch, NewInstance};
use super::time::{Timestamp, human};

/// Adopts live members the rollout does not know yet (`known` says which
/// it knows) into the batch; each one's healthy deadline starts now.
pub(super) fn discover(
    b: &mut Batch,
    known: impl Fn(&str) -> bool,
    obs: &Observation,
    now: Timestamp,
    p: &Params,
) {
    let fresh: Vec<String> = obs
        .alive_ids()
        .filter(|id| !known(id) && !b.new.iter().any(|n| n.id == *id))
        .map(str::to_owned)
        .collect();
    for id in fresh {
        b.new.push(NewInstance {
            id,
            first_seen: now,
            healthy_deadline_at: now.plus(p.healthy_deadline),
            passing_since: None,
            healthy_at: None,
            critical_since: None,
            in_service_since: None,
            timers_from: None,
        });
    }
}

/// Updates every instance's health timer from this observation. An
/// instance counts as healthy once it has passed in every observation for
/// `min_healthy_time`; any non-passing one restarts the timer (and takes back
/// a healthy mark: the batch must be healthy as a whole when it completes).
/// Each instance becoming healthy restarts the progress deadline. An
/// instance answering wrong (see [`crate::health`]) starts its
/// `failure_time` timer; any other observation stops it.
///
/// Errs, naming the instance, when one left the group or runs another image
/// than `image`.
pub(super) fn track(
    b: &mut Batch,
    obs: &Observation,
    now: Timestamp,
    p: &Params,
    image: &str,
) -> Result<(), String> {
    for n in &mut b.new {
        if !obs.alive(&n.id) {
            let state = obs
                .member(&n.id)
                .map_or("no longer in the group".to_owned(), |m| {
                    format!("lifecycle state {}", m.lifecycle_state)
                });
            let when = if n.healthy_at.is_some() {
                "its batch completed"
            } else {
                "it became healthy"
            };
            return Err(format!(
                "instance {} was terminated by AWS before {when} ({state})",
                n.id
            ));
        }
        if let Some(runs) = obs.image(&n.id).filter(|i| *i != image) {
            return Err(format!(
                "instance {} runs {runs}, not {image}: the group's launch template changed under the rollout",
                n.id
            ));
        }
        // A health timer starts when Consul told of the change, which may
        // be before this step (see `Observation::health_read_at`), but
        // never before the instance was seen in service in AWS, nor before
        // the timers last restarted (a pause, a silence).
        let told = obs.health_at(now).max(n.timers_from.unwrap_or_default());
        if obs.in_service(&n.id) {
            // `now`, not the view's date: a view may be dated older than
            // its group part (see `Observation::aws_read_at`).
            n.in_service_since.get_or_insert(now);
        } else {
            n.in_service_since = None;
        }
        if obs.passing(&n.id) {
            let seen = told.max(n.in_service_since.unwrap_or(now));
            let since = *n.passing_since.get_or_insert(seen);
            if n.healthy_at.is_none() && now.since(since) >= p.min_healthy_time {
                n.healthy_at = Some(now);
                b.progress_deadline_at = now.plus(p.progress_deadline);
            }
        } else {
            n.passing_since = None;
            n.healthy_at = None;
        }
        if answered_wrong(obs, &n.id).is_empty() {
            n.critical_since = None;
        } else {
            n.critical_since.get_or_insert(told);
        }
    }
    Ok(())
}

/// The checks showing that an instance answered, and wrong (see
/// [`crate::health`]); empty while it is passing, not answering yet, or not
/// registered in Consul.
fn answered_wrong<'a>(obs: &'a Observation, id: &str) -> Vec<&'a CheckFailure> {
    obs.health(id)
        .map(Health::answered_wrong)
        .unwrap_or_default()
}

/// The first new instance that has answered wrong for `failure_time`
/// without interruption, as a failure reason naming the instance, each
/// check that says so with its status and output, and how long. `None` when
/// failing fast is off (`failure_time` zero) or no instance has.
fn wrong_too_long(b: &Batch, obs: &Observation, now: Timestamp, p: &Params) -> Option<String> {
    let ft = p.fail_fast()?;
    let n = b
        .new
        .iter()
        .find(|n| n.critical_since.is_some_and(|since| now.since(since) >= ft))?;
    let checks = answered_wrong(obs, &n.id)
        .iter()
        .map(|c| {
            format!(
                "check {} \"{}\" is {}: {}",
                c.check_id, c.name, c.status, c.output
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    Some(format!(
        "instance {} answered wrong, critical for {} (failure_time): {checks}",
        n.id,
        human(ft)
    ))
}

/// Every expected instance has appeared and is healthy.
pub(super) fn complete(b: &Batch) -> bool {
    b.new.len() >= b.size as usize && b.new.iter().all(|n| n.healthy_at.is_some())
}

/// The first deadline that has passed, as a failure reason naming the
/// instance, what is wrong with it and the deadline. `what` names the batch.
/// An instance answering wrong for `failure_time` comes first: it is the
/// earliest evidence, and the reason it gives is the answer, not a deadline.
pub(super) fn overdue(
    b: &Batch,
    obs: &Observation,
    now: Timestamp,
    p: &Params,
    what: &str,
) -> Option<String> {
    if let Some(reason) = wrong_too_long(b, obs, now, p) {
        return Some(reason);
    }
    // Healthy means in service too, and "appeared" is AWS's word: these
    // deadlines are judged on an AWS view read after them, never on an
    // older one the executor reused (see `Observation::aws_read_at`).
    let seen = obs.aws_at(now);
    let unhealthy = || b.new.iter().filter(|n| n.healthy_at.is_none());
    if let Some(n) = unhealthy().find(|n| seen >= n.healthy_deadline_at) {
        return Some(format!(
            "instance {} not healthy within healthy_deadline {}: {}",
            n.id,
            human(p.healthy_deadline),
            detail(n, obs, now, p)
        ));
    }
    if b.new.len() < b.size as usize && seen >= b.launch_deadline_at {
        return Some(format!(
            "{what}: {} of {} new instances appeared within healthy_deadline {} (desired capacity {}, asked {})",
            b.new.len(),
            b.size,
            human(p.healthy_deadline),
            obs.group.desired_capacity,
            b.desired
        ));
    }
    if seen >= b.progress_deadline_at {
        let stuck = unhealthy()
            .next()
            .map(|n| format!("instance {}: {}", n.id, detail(n, obs, now, p)))
            .unwrap_or_else(|| format!("{what}: no new instance appeared"));
        return Some(format!(
            "no instance became healthy within progress_deadline {}: {stuck}",
            human(p.progress_deadline)
        ));
    }
    None
}

/// Why a new instance is not healthy yet: its lifecycle state and failing
/// checks, or how long it has been passing out of `min_healthy_time`.
fn detail(n: &NewInstance, obs: &Observation, now: Timestamp, p: &Params) -> String {
    match n.passing_since {
        Some(since) if obs.passing(&n.id) => format!(
            "passing for only {} of min_healthy_time {} (any non-passing status restarts the timer)",
            human(now.since(since)),
            human(p.min_healthy_time)
        ),
        _ => obs.why_not_passing(&n.id),
    }
}
