//! The rollout state machine: a pure function from (persisted state, what
//! the executor observed, now) to (next state, actions).
//!
//! It replaces the instances of an Auto Scaling group batch by batch, surge
//! style (architecture principle 5): raise the desired capacity by a batch,
//! wait until every new instance is InService and passing all its Consul
//! checks continuously for `min_healthy_time`, protect them, then terminate
//! the same number of old instances with decrement. Capacity never drops
//! below the original desired capacity, and a failure before retirement
//! costs nothing: the old instances still serve.
//!
//! What it must never do: any I/O, read a clock, or use randomness. The
//! executor performs the actions (each idempotent) and feeds back what it
//! sees; every edge case (a deadline hit mid-batch, a vanished instance,
//! flapping health, a crash between two actions) is a unit test with a fake
//! clock.
//!
//! # States
//!
//! ```text
//!  Pending ─▶ Preparing ─▶ Launching(batch) ─▶ Retiring(batch) ─┬▶ Launching(next batch)
//!                              │    (canary batch)              └▶ Baking ─▶ Succeeded
//!                              └──▶ CanaryPaused ─(promote)─▶ Retiring
//!
//!  any active state ─(pause)─▶ Paused ─(resume, deadlines shifted)─▶ same state
//!  any active state ─(failure, auto_revert)─▶ Reverting ─▶ Reverted
//!                  ─(failure, no auto_revert)─▶ Failed ─(abort)─▶ Reverting
//!                  ─(abort)─▶ Reverting: Cleanup ─▶ Replacing ─▶ Retiring ─▶ Reverted
//!                                                     (revert stuck) ─▶ Failed
//! ```
//!
//! # The executor's contract
//!
//! 1. Load the [`Rollout`]; build an [`Observation`] from reads only.
//! 2. `let Step { next, actions } = step(&rollout, &obs, now)`.
//! 3. Perform `actions` in order; on an error stop and go back to 1 later
//!    (the state is not advanced).
//! 4. If `next != rollout`, persist `next` with check-and-set, then delete
//!    the commands the observation carried; step again at once.
//!    Otherwise wait for a change (blocking queries) or [`Rollout::wake_at`].
//! 5. Stop stepping once [`Rollout::is_terminal`], except that a
//!    `Failed { revertible: true }` rollout still takes an `abort` (step it
//!    when one arrives).
//!
//! A crash anywhere leaves the previous state in KV; the next step from it,
//! given the real world, re-emits what is still needed. That works because:
//!
//! - states are level-triggered: they keep asking for what the world does not
//!   show yet (processes suspended, template pinned, capacity raised, old
//!   instances terminating), with absolute values, so a replay is a no-op;
//! - each step makes at most one transition, and a choice that must not
//!   change (which old instances to terminate) is made on entering
//!   [`State::Retiring`] and persisted before the first `Terminate`;
//! - new instances are recognised from the world (members that were not
//!   there at start and are not accepted yet), not from what was launched;
//! - one-shot actions (`Notify`, `RecordStable`, `MarkImageFailed`) are
//!   emitted on a transition and deduplicated downstream;
//! - the timeline ([`Progress::events`], see [`EventKind`]) is recorded in
//!   the state the step returns, so a replay from the previous record
//!   records each event once.
//!
//! # Image changes and template changes
//!
//! A rollout changes the image (a new one, or a rollback), or, with the image
//! unchanged, the launch template ([`Change::Template`]: Terraform wrote a
//! new default version). Old and new are told apart by identity, which
//! works for both: old are the members present at start (for an image change
//! less those already on the target image; for a template change all of
//! them, since every member runs the target image), new are the members that
//! appeared since and that the batches adopt by ID. Where a revert meets a
//! member it has not seen before, an image change asks its image; a template
//! change asks whether the group still pinned the rollout's version (the
//! per-instance template version AWS reports is not trusted: emulators
//! report the default version there). A template change also fails when the
//! group stops pinning its version during a batch, the one sign of "the
//! template changed under the rollout" its instances cannot show.
//!
//! # The world diverging
//!
//! - An old instance vanishing is not a failure: it is simply not retired
//!   (never terminated twice, never named in a `Terminate` once gone); later
//!   batches shrink. A member the group launches on its own joins the next
//!   batch and must prove healthy like the others (one appearing after the
//!   last batch is not gated by the rollout; the health watcher sees it).
//! - A new instance of the current batch vanishing (or starting to
//!   terminate) fails the rollout, naming it: its batch cannot be proven, and
//!   guessing why AWS took it is not honest.
//! - The rollout owns the group's capacity while it runs (the scaling
//!   processes that would fight it are suspended): a desired capacity lowered
//!   below the batch's is raised again; a higher one launches extra new
//!   instances, which join the batch; the original capacity is restored at
//!   the end either way.
//! - A new instance on another image than the target (the template changed
//!   under the rollout) fails the rollout.
//!
//! # Pause, abort, failure
//!
//! Pausing stops all actions and all deadlines: on resume every deadline of
//! the paused state moves later by the time spent paused, and health timers
//! restart (nobody watched them continuously). A revert is not pausable.
//! A failure is evidence against the image: it is marked failed (the planner
//! will not roll it again without a new approval). A template change's
//! failure is evidence against Terraform's template version, not against the
//! image every stable instance runs: nothing is marked, and the plan's
//! outcome (reverted or failed) is the record the planner reads before it
//! plans that version again. An abort is an operator's decision: nothing is
//! marked. All revert the same way, back to the stable template version.

use std::time::Duration;

mod action;
mod batch;
mod events;
mod finish;
mod gate;
mod observe;
mod prepare;
mod revert;
mod spec;
mod state;
mod time;

#[cfg(test)]
mod tests;

pub use action::{Action, RolloutEvent, SUSPENDED_PROCESSES};
pub use events::{Counts, Event, EventKind, KEEP_FIRST, KEEP_LAST, REASON_LIMIT};
pub use observe::{CheckFailure, Health, Observation, OperatorCommand};
pub use spec::{Capacity, Change, Params, RolloutSpec, StableRef};
pub use state::{
    Batch, Canary, NewInstance, Progress, Retire, Revert, RevertCause, RevertStage, Rollout, State,
};
pub use time::Timestamp;
pub(crate) use time::millis;

/// The result of one step: the state to persist and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The state after this step (equal to the input when nothing changed).
    pub next: Rollout,
    /// What the executor must do, in order, before persisting `next`.
    pub actions: Vec<Action>,
}

/// Advances a rollout by at most one transition. Pure: the same arguments
/// always give the same result.
pub fn step(state: &Rollout, obs: &Observation, now: Timestamp) -> Step {
    let mut next = state.clone();
    let mut cx = Cx {
        obs,
        now,
        actions: Vec::new(),
        events: Vec::new(),
    };
    if next.spec.target_template_version.is_none() && !next.is_terminal() {
        next.spec.target_template_version = obs.created_template_version;
    }
    catch_up(&mut next, &mut cx);
    let current = std::mem::replace(&mut next.state, State::Pending);
    let (current, commanded) = apply_commands(&mut next, current, &mut cx);
    next.state = if commanded {
        current
    } else {
        advance(&mut next, current, &mut cx)
    };
    if !cx.events.is_empty() {
        let counts = events::counts(&next, obs);
        for kind in std::mem::take(&mut cx.events) {
            next.progress.record(Event {
                at: now,
                kind,
                counts,
            });
        }
    }
    heartbeat(state, &mut next, now);
    Step {
        next,
        actions: cx.actions,
    }
}

/// How often a rollout that is waiting records that it is still observed
/// (one check-and-set write per interval).
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// Silence longer than this since the last recorded step means nobody
/// observed the world in between. The executor steps at least every second
/// while it runs, so only a leader takeover, a crash or an outage of Consul
/// or AWS (steps failing) produce one.
pub const OBSERVATION_GAP: Duration = Duration::from_secs(15);

/// Deadlines measure observed time: a batch must not fail its
/// `healthy_deadline` because the coordinators were changing leader (about
/// two lock TTLs plus the lock delay) or could not reach Consul. After a
/// silence longer than [`OBSERVATION_GAP`] every deadline of the state moves
/// later by the whole silence, and health timers of instances not yet
/// accepted restart, exactly as after a pause (nobody watched them
/// continuously). A paused rollout is left alone: resuming shifts it by the
/// whole pause anyway.
fn catch_up(r: &mut Rollout, cx: &mut Cx<'_>) {
    let Some(last) = r.progress.observed_at else {
        return;
    };
    let gap = cx.now.since(last);
    if r.is_terminal() || gap <= OBSERVATION_GAP || matches!(r.state, State::Paused { .. }) {
        return;
    }
    r.state.shift(gap, cx.now);
    cx.notify(RolloutEvent::Unobserved { gap });
    cx.record(EventKind::Unobserved {
        gap_ms: u64::try_from(gap.as_millis()).unwrap_or(u64::MAX),
    });
}

/// Records `now` as the last observation when the step changed anything,
/// or when the last record is [`HEARTBEAT`] old, so silence is measurable.
fn heartbeat(before: &Rollout, next: &mut Rollout, now: Timestamp) {
    if next.is_terminal() {
        return;
    }
    let stale = before
        .progress
        .observed_at
        .is_none_or(|t| now.since(t) >= HEARTBEAT);
    if stale || next != before {
        next.progress.observed_at = Some(now);
    }
}

/// What every state handler works with.
struct Cx<'a> {
    /// This tick's observation.
    obs: &'a Observation,
    /// The time of this step.
    now: Timestamp,
    /// Actions so far, in order.
    actions: Vec<Action>,
    /// Timeline events so far, in order: recorded into the next state at
    /// the end of the step, with its instant and counts.
    events: Vec<EventKind>,
}

impl Cx<'_> {
    fn push(&mut self, a: Action) {
        self.actions.push(a);
    }

    fn notify(&mut self, e: RolloutEvent) {
        self.actions.push(Action::Notify(e));
    }

    fn record(&mut self, e: EventKind) {
        self.events.push(e);
    }
}

/// One transition of the state itself (commands were handled before).
fn advance(r: &mut Rollout, state: State, cx: &mut Cx<'_>) -> State {
    match state {
        State::Pending => prepare::start(r, cx),
        State::Preparing {
            progress_deadline_at,
        } => prepare::prepare(r, progress_deadline_at, cx),
        State::Launching(b) => batch::launching(r, b, cx),
        State::Retiring(rt) => batch::retiring(r, rt, cx),
        State::CanaryPaused(c) => batch::canary(r, c, cx),
        State::Baking {
            since,
            until,
            watch,
        } => finish::baking(r, since, until, watch, cx),
        State::Reverting(rv) => revert::reverting(r, rv, cx),
        s @ (State::Paused { .. }
        | State::Succeeded { .. }
        | State::Reverted { .. }
        | State::Failed { .. }) => s,
    }
}

/// Applies pending operator commands in order. Returns the state and whether
/// a command made a transition (then the step stops there). Commands that do
/// not apply (resume when not paused, pause during a revert, anything once
/// over) are ignored; a promote is remembered for the canary.
fn apply_commands(r: &mut Rollout, mut state: State, cx: &mut Cx<'_>) -> (State, bool) {
    let obs = cx.obs;
    let mut moved = false;
    for cmd in &obs.commands {
        state = match (cmd, state) {
            (OperatorCommand::Abort { by, reason }, s) if abortable(&s) => {
                moved = true;
                cx.notify(RolloutEvent::Aborted {
                    by: by.clone(),
                    reason: reason.clone(),
                });
                let cause = state::RevertCause::Abort { by: by.clone() };
                revert::enter(r, cause, format!("aborted by {by}: {reason}"), cx)
            }
            (OperatorCommand::Pause, s) if pausable(&s) => {
                moved = true;
                r.progress.pauses += 1;
                cx.notify(RolloutEvent::Paused {
                    n: r.progress.pauses,
                });
                cx.record(EventKind::Paused {
                    n: r.progress.pauses,
                });
                State::Paused {
                    since: cx.now,
                    prior: Box::new(s),
                }
            }
            (OperatorCommand::Resume, State::Paused { since, prior }) => {
                moved = true;
                let mut prior = *prior;
                prior.shift(cx.now.since(since), cx.now);
                cx.notify(RolloutEvent::Resumed {
                    n: r.progress.pauses,
                });
                cx.record(EventKind::Resumed {
                    n: r.progress.pauses,
                });
                prior
            }
            (OperatorCommand::Promote, s) => {
                if !s.is_terminal() {
                    r.progress.promoted = true;
                }
                s
            }
            (_, s) => s,
        };
    }
    (state, moved)
}

/// Pausing makes sense while the rollout moves forward; not during a revert
/// (it restores service) and not once over.
fn pausable(s: &State) -> bool {
    matches!(
        s,
        State::Pending
            | State::Preparing { .. }
            | State::Launching(_)
            | State::Retiring(_)
            | State::CanaryPaused(_)
            | State::Baking { .. }
    )
}

/// An abort reverts anything not already reverting or over, and a failure
/// that was left in place (`auto_revert = false`).
fn abortable(s: &State) -> bool {
    pausable(s)
        || matches!(
            s,
            State::Paused { .. }
                | State::Failed {
                    revertible: true,
                    ..
                }
        )
}
