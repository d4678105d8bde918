//! The persisted rollout: its spec, what it has done so far, and the state
//! it is in. Each state carries its own deadlines as instants (so a restart
//! resumes them exactly) and knows how to shift them across a pause.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::events::Event;
use super::spec::RolloutSpec;
use super::time::Timestamp;

/// A rollout as it is stored in KV, the machine's whole memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    /// What was approved; only `target_template_version` changes, once.
    pub spec: RolloutSpec,
    /// Facts recorded along the way that span states.
    pub progress: Progress,
    /// Where it is.
    pub state: State,
}

/// Facts a rollout records as it goes, needed by several states.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// When the first step ran.
    pub started_at: Option<Timestamp>,
    /// Every live member when the rollout started: never counted as new,
    /// whatever image it runs.
    pub initial_members: Vec<String>,
    /// Old instances to replace, in order: the plan's list, rechecked against
    /// the group at start (gone ones dropped, ones already on the target
    /// image skipped, old-image members the plan missed appended; for a
    /// template change every member present at start).
    pub to_replace: Vec<String>,
    /// Old instances the rollout chose to terminate, over all batches.
    pub retired: Vec<String>,
    /// New instances proven healthy and accepted (canary: once promoted);
    /// protected from scale-in until the rollout ends.
    pub accepted: Vec<String>,
    /// Batches completed (retired).
    pub batches_done: u32,
    /// Scaling processes this rollout suspended (not those suspended
    /// before it): exactly what it resumes at the end.
    pub processes: Vec<String>,
    /// An operator promoted the canary (possibly before it was healthy).
    pub promoted: bool,
    /// How many times an operator paused it (numbers the pause notices).
    #[serde(default)]
    pub pauses: u32,
    /// When a coordinator last stepped it (refreshed at least every
    /// [`HEARTBEAT`](super::HEARTBEAT) while active): a longer silence means
    /// nobody observed the world, and the deadlines move later by that time.
    #[serde(default)]
    pub observed_at: Option<Timestamp>,
    /// What happened and when, for the console's timeline (see
    /// [`EventKind`](super::EventKind)): bounded, the first and the last
    /// events kept. Absent from records written before it existed (read
    /// as empty).
    #[serde(default)]
    pub events: Vec<Event>,
    /// Events dropped from the middle of `events` to keep it bounded.
    #[serde(default)]
    pub events_dropped: u32,
}

/// Where a rollout is. Non-terminal states own their deadlines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// Approved, not started: the first step records the initial members.
    Pending,
    /// Suspending processes, creating the template version and pinning it.
    Preparing {
        /// Fails the rollout if preparation is not done by then.
        progress_deadline_at: Timestamp,
    },
    /// Capacity raised by one batch; waiting for its new instances to
    /// appear and prove healthy (launching and waiting healthy in one).
    Launching(Batch),
    /// A batch proved healthy: its instances are protected and the same
    /// number of old ones are being terminated (with decrement).
    Retiring(Retire),
    /// The canary batch is healthy and surged; waiting for a promotion.
    CanaryPaused(Canary),
    /// Every old instance is retired; watching the new ones a while.
    Baking {
        /// Since when.
        since: Timestamp,
        /// Success at this instant if nothing went wrong.
        until: Timestamp,
        /// New instances watched: any turning non-passing or vanishing fails.
        watch: Vec<String>,
    },
    /// Frozen by an operator: no actions, deadlines stopped.
    Paused {
        /// When it was paused: on resume every deadline of `prior` moves
        /// later by the time spent paused.
        since: Timestamp,
        /// The state to go back to.
        prior: Box<State>,
    },
    /// Returning the group to the stable version (failure or abort).
    Reverting(Revert),
    /// Done: every instance runs the target, which is now stable.
    Succeeded {
        /// When.
        at: Timestamp,
    },
    /// Done: the group is back on the stable version.
    Reverted {
        /// The failure or abort that caused the revert.
        reason: String,
        /// An operator aborted (the image was not marked failed).
        aborted: bool,
        /// When.
        at: Timestamp,
    },
    /// Stopped on a failure without reverting (`auto_revert = false`), or a
    /// revert that could not finish. The group is left as it is.
    Failed {
        /// Why.
        reason: String,
        /// An operator may still `abort` to revert (false when the revert
        /// itself failed).
        revertible: bool,
        /// When.
        at: Timestamp,
    },
}

/// One batch of new instances being launched and proven.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// 1-based batch number (0 for a revert's stable replacements).
    pub number: u32,
    /// How many new instances the batch launches.
    pub size: u32,
    /// The desired capacity the batch runs at (absolute: a replay is a no-op).
    pub desired: i32,
    /// When the capacity was raised.
    pub launched_at: Timestamp,
    /// If fewer than `size` new instances have appeared by then, fail
    /// (`launched_at + healthy_deadline`).
    pub launch_deadline_at: Timestamp,
    /// Restarted whenever one of its instances becomes healthy.
    pub progress_deadline_at: Timestamp,
    /// The new instances seen so far.
    pub new: Vec<NewInstance>,
}

/// A new instance under watch, with its own health timer and deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewInstance {
    /// `i-...`.
    pub id: String,
    /// When the machine first saw it in the group.
    pub first_seen: Timestamp,
    /// Must be healthy by then (`first_seen + healthy_deadline`).
    pub healthy_deadline_at: Timestamp,
    /// Passing (InService, every check) in every observation since then;
    /// `None` after any non-passing one.
    pub passing_since: Option<Timestamp>,
    /// When it had passed for `min_healthy_time`. Lost again if it stops
    /// passing before its batch completes.
    pub healthy_at: Option<Timestamp>,
    /// Answering wrong (see [`crate::health`]) in every observation since
    /// then; `None` after any other one. `failure_time` after it, the
    /// batch fails.
    #[serde(default)]
    pub critical_since: Option<Timestamp>,
    /// InService and alive in every observation since the step then;
    /// `None` after any showing otherwise. `passing_since` starts no
    /// earlier.
    #[serde(default)]
    pub in_service_since: Option<Timestamp>,
    /// Health timers (`passing_since`, `critical_since`) start no earlier:
    /// the step that restarted them after a pause or a silence. Health
    /// dated before it (`Observation::health_read_at`) was not watched
    /// continuously.
    #[serde(default)]
    pub timers_from: Option<Timestamp>,
}

/// Retiring old instances for a healthy batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retire {
    /// The batch number.
    pub batch: u32,
    /// The batch's new instances (accepted, protected).
    pub new: Vec<String>,
    /// The old instances chosen on entry. Chosen before any is terminated
    /// and persisted, so a crash cannot make the machine pick others.
    pub terminate: Vec<String>,
    /// Carried from the batch; AWS must terminate them by then.
    pub progress_deadline_at: Timestamp,
}

/// A healthy canary waiting for promotion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Canary {
    /// How many canary instances (the surge to give back on promotion).
    pub size: u32,
    /// The canary instances: any turning non-passing or vanishing fails.
    pub new: Vec<String>,
    /// When it started waiting.
    pub since: Timestamp,
    /// With `auto_promote`: promote at `since + bake_time`.
    pub auto_promote_at: Option<Timestamp>,
}

/// Why a revert happens, which decides whether the image is marked failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum RevertCause {
    /// The rollout failed: evidence against the image (marked failed).
    Failure,
    /// An operator aborted: a decision, not evidence (not marked).
    Abort {
        /// Who.
        by: String,
    },
}

/// A revert in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revert {
    /// Failure or abort.
    pub cause: RevertCause,
    /// The failure reason, or the operator's words.
    pub reason: String,
    /// Which part of the revert.
    pub stage: RevertStage,
    /// The current stage must be done by then (`progress_deadline` per
    /// stage); a stuck revert ends `Failed` for a human.
    pub deadline_at: Timestamp,
}

/// The parts of a revert, in order. Capacity stays at or above the original
/// desired capacity throughout: accepted new instances are replaced surge
/// style (stable ones launched and proven first), not just terminated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum RevertStage {
    /// Pin the stable template (unless identical to the target) and
    /// terminate the new instances not yet accepted (the surge).
    Cleanup {
        /// New, unaccepted instances; latecomers on the target image join.
        terminate: Vec<String>,
    },
    /// Launch stable instances in place of the accepted new ones.
    Replacing {
        /// The accepted new instances to replace.
        replace: Vec<String>,
        /// The stable replacements, proven like a batch.
        batch: Batch,
    },
    /// Stable replacements serve: terminate the accepted new instances.
    Retiring {
        /// The accepted new instances.
        terminate: Vec<String>,
    },
}

impl Rollout {
    /// A rollout about to start.
    pub fn new(spec: RolloutSpec) -> Self {
        Self {
            spec,
            progress: Progress::default(),
            state: State::Pending,
        }
    }

    /// The earliest instant at which the step will act without any change
    /// in the world (a deadline, a health timer, the end of a bake): the
    /// executor steps again then even if no blocking query returned.
    pub fn wake_at(&self) -> Option<Timestamp> {
        let mht = self.spec.params.min_healthy_time;
        let fail_fast = self.spec.params.fail_fast();
        let batch_wake = |b: &Batch| {
            let wrong = b.new.iter().filter_map(|n| {
                n.critical_since
                    .zip(fail_fast)
                    .map(|(since, ft)| since.plus(ft))
            });
            let timers = b.new.iter().filter(|n| n.healthy_at.is_none());
            let timers = timers.flat_map(|n| {
                [
                    Some(n.healthy_deadline_at),
                    n.passing_since.map(|p| p.plus(mht)),
                ]
            });
            timers
                .flatten()
                .chain(wrong)
                .chain([b.progress_deadline_at])
                .chain((b.new.len() < b.size as usize).then_some(b.launch_deadline_at))
                .min()
        };
        match &self.state {
            State::Preparing {
                progress_deadline_at,
            } => Some(*progress_deadline_at),
            State::Launching(b) => batch_wake(b),
            State::Retiring(r) => Some(r.progress_deadline_at),
            State::CanaryPaused(c) => c.auto_promote_at,
            State::Baking { until, .. } => Some(*until),
            State::Reverting(r) => match &r.stage {
                RevertStage::Replacing { batch, .. } => {
                    batch_wake(batch).map(|t| t.min(r.deadline_at))
                }
                _ => Some(r.deadline_at),
            },
            State::Pending
            | State::Paused { .. }
            | State::Succeeded { .. }
            | State::Reverted { .. }
            | State::Failed { .. } => None,
        }
    }

    /// Whether the rollout is over: `status --wait` returns, the executor
    /// stops stepping it. A `Failed { revertible: true }` one still takes
    /// an `abort` (which reverts it), so it is stepped when one arrives.
    pub fn is_terminal(&self) -> bool {
        self.state.is_terminal()
    }

    /// How it ended, stamped `at`; `None` while it is not over.
    pub fn outcome(&self, at: crate::plan::Millis) -> Option<crate::plan::Outcome> {
        use crate::plan::Outcome;
        Some(match &self.state {
            State::Succeeded { .. } => Outcome::Succeeded { at },
            State::Reverted {
                reason,
                aborted: true,
                ..
            } => Outcome::Aborted {
                at,
                reason: reason.clone(),
            },
            State::Reverted { reason, .. } => Outcome::Reverted {
                at,
                reason: reason.clone(),
            },
            State::Failed { reason, .. } => Outcome::Failed {
                at,
                reason: reason.clone(),
            },
            _ => return None,
        })
    }
}

impl State {
    /// Over: no step emits actions any more (except an abort of a
    /// revertible `Failed`).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            State::Succeeded { .. } | State::Reverted { .. } | State::Failed { .. }
        )
    }

    /// A short name for status output and logs.
    pub fn name(&self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Preparing { .. } => "preparing",
            State::Launching(_) => "launching",
            State::Retiring(_) => "retiring",
            State::CanaryPaused(_) => "canary_paused",
            State::Baking { .. } => "baking",
            State::Paused { .. } => "paused",
            State::Reverting(_) => "reverting",
            State::Succeeded { .. } => "succeeded",
            State::Reverted { .. } => "reverted",
            State::Failed { .. } => "failed",
        }
    }

    /// Moves every deadline later by `by` (the time spent paused), and
    /// restarts health timers at `now`: nobody watched continuously while
    /// paused, so `min_healthy_time` must be proven again after a resume.
    pub(super) fn shift(&mut self, by: Duration, now: Timestamp) {
        match self {
            State::Preparing {
                progress_deadline_at,
            } => *progress_deadline_at = progress_deadline_at.plus(by),
            State::Launching(b) => b.shift(by, now),
            State::Retiring(r) => r.progress_deadline_at = r.progress_deadline_at.plus(by),
            State::CanaryPaused(c) => c.auto_promote_at = c.auto_promote_at.map(|t| t.plus(by)),
            State::Baking { until, .. } => *until = until.plus(by),
            State::Reverting(r) => r.deadline_at = r.deadline_at.plus(by),
            State::Paused { prior, .. } => prior.shift(by, now),
            State::Pending
            | State::Succeeded { .. }
            | State::Reverted { .. }
            | State::Failed { .. } => {}
        }
    }
}

impl Batch {
    fn shift(&mut self, by: Duration, now: Timestamp) {
        self.launched_at = self.launched_at.plus(by);
        self.launch_deadline_at = self.launch_deadline_at.plus(by);
        self.progress_deadline_at = self.progress_deadline_at.plus(by);
        for n in &mut self.new {
            n.healthy_deadline_at = n.healthy_deadline_at.plus(by);
            if n.healthy_at.is_none() {
                n.passing_since = None;
            }
            // Nobody watched: "wrong without interruption" starts again.
            n.critical_since = None;
            n.timers_from = Some(now);
        }
    }

    /// IDs of its instances.
    pub fn ids(&self) -> Vec<String> {
        self.new.iter().map(|n| n.id.clone()).collect()
    }
}
