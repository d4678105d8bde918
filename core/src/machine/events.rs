//! The rollout's own timeline: what happened and when, recorded in the
//! persisted record ([`Progress::events`]) so the console can draw it
//! after the fact, from the record alone.
//!
//! Events are recorded by the step that makes them happen, into the state
//! it returns: a step replayed after a crash starts from the previous
//! record, which does not hold them yet, so a replay records each event
//! once (the same level-triggered argument as for the state itself). Every
//! event of one step carries the step's `now` and the instance counts of
//! its observation, as the step left the rollout: absolute numbers, so a
//! chart stays right even when the middle of a long timeline was dropped.
//!
//! The list is bounded (a rollout record is rewritten at every change and
//! must stay far below Consul's 512 KB value limit): the first
//! [`KEEP_FIRST`] events (the start, the first batches) and the last
//! [`KEEP_LAST`] (the end) are kept; events dropped in between are counted
//! in [`Progress::events_dropped`]. Reasons are cut at
//! [`REASON_LIMIT`] characters (the full reason is in the terminal state and
//! the plan's outcome).
//!
//! What this module must never do: read a clock or observe anything the
//! step was not given.

use serde::{Deserialize, Serialize};

use super::observe::Observation;
use super::state::{Batch, Progress, RevertStage, Rollout, State};
use super::time::Timestamp;

/// Events kept from the start of a rollout.
pub const KEEP_FIRST: usize = 32;

/// Events kept from the end of a rollout (the most recent ones).
pub const KEEP_LAST: usize = 160;

/// Characters of a reason kept in an event.
pub const REASON_LIMIT: usize = 300;

/// One thing that happened to a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When (the step's `now`).
    pub at: Timestamp,
    /// What.
    #[serde(flatten)]
    pub kind: EventKind,
    /// The group as the step saw it: what a chart plots.
    pub counts: Counts,
}

/// Instances of the group when an event was recorded, as the observation
/// of its step showed them. Live members only (terminating ones are gone).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// On the stable side: for an image change, members not running the
    /// target image; for a template change, members present at start and
    /// a revert's stable replacements.
    pub old: u32,
    /// On the target: for an image change, members running the target
    /// image; for a template change, members launched by the rollout (not
    /// a revert's stable replacements).
    pub new: u32,
    /// Of `new`, those InService and passing every Consul check.
    pub passing: u32,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// The first step: members recorded.
    Started,
    /// Processes suspended and the group pinned to the target template
    /// version.
    Prepared {
        /// The pinned version.
        template_version: i64,
    },
    /// Capacity raised for a batch. Batch 0 is a revert's stable
    /// replacements.
    BatchLaunched {
        /// Batch number (1-based; the canary is batch 1).
        n: u32,
        /// New instances it launches.
        size: u32,
        /// The desired capacity it runs at.
        desired: i32,
    },
    /// A new member adopted by a batch.
    InstanceSeen {
        /// `i-...`.
        id: String,
        /// Its batch (0: a revert's stable replacement).
        batch: u32,
    },
    /// A new member passed every check for `min_healthy_time`.
    InstanceHealthy {
        /// `i-...`.
        id: String,
    },
    /// A new member stopped passing before its batch completed (its
    /// healthy mark is taken back).
    InstanceUnhealthy {
        /// `i-...`.
        id: String,
    },
    /// A new member started answering clearly wrong (its `failure_time`
    /// timer started).
    InstanceWrong {
        /// `i-...`.
        id: String,
    },
    /// A batch's old instances are terminated: the batch is done.
    BatchRetired {
        /// Batch number.
        n: u32,
        /// Old instances it retired.
        count: u32,
    },
    /// The canary is healthy and waits for a promotion.
    CanaryPaused {
        /// When it promotes itself, with `auto_promote`.
        auto_promote_at: Option<Timestamp>,
    },
    /// The canary was promoted.
    Promoted,
    /// An operator paused it (the `n`th time).
    Paused {
        /// 1-based count of pauses.
        n: u32,
    },
    /// An operator resumed it after pause `n`.
    Resumed {
        /// The pause this ends.
        n: u32,
    },
    /// Nobody observed it for `gap_ms` (leader change, outage): deadlines
    /// moved later by that time.
    Unobserved {
        /// The silence, in milliseconds.
        gap_ms: u64,
    },
    /// Every old instance is retired; watching the new ones until `until`.
    Baking {
        /// Success at this instant if nothing goes wrong.
        until: Timestamp,
    },
    /// A revert began.
    RevertStarted {
        /// The failure, or the operator's words (cut at [`REASON_LIMIT`]).
        reason: String,
        /// An operator aborted (not a failure).
        aborted: bool,
    },
    /// The rollout, or its revert, failed (cut at [`REASON_LIMIT`]). A
    /// revert may follow.
    Failed {
        /// Why.
        reason: String,
    },
    /// Done: every instance runs the target.
    Succeeded,
    /// Done: the group is back on the stable version.
    Reverted {
        /// Why it was reverted (cut at [`REASON_LIMIT`]).
        reason: String,
    },
}

impl EventKind {
    /// A short name (`batch_launched`), as serialised.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::Prepared { .. } => "prepared",
            EventKind::BatchLaunched { .. } => "batch_launched",
            EventKind::InstanceSeen { .. } => "instance_seen",
            EventKind::InstanceHealthy { .. } => "instance_healthy",
            EventKind::InstanceUnhealthy { .. } => "instance_unhealthy",
            EventKind::InstanceWrong { .. } => "instance_wrong",
            EventKind::BatchRetired { .. } => "batch_retired",
            EventKind::CanaryPaused { .. } => "canary_paused",
            EventKind::Promoted => "promoted",
            EventKind::Paused { .. } => "paused",
            EventKind::Resumed { .. } => "resumed",
            EventKind::Unobserved { .. } => "unobserved",
            EventKind::Baking { .. } => "baking",
            EventKind::RevertStarted { .. } => "revert_started",
            EventKind::Failed { .. } => "failed",
            EventKind::Succeeded => "succeeded",
            EventKind::Reverted { .. } => "reverted",
        }
    }
}

/// `reason` cut at [`REASON_LIMIT`] characters, marked when cut.
pub(super) fn short(reason: &str) -> String {
    match reason.char_indices().nth(REASON_LIMIT) {
        None => reason.to_owned(),
        Some((end, _)) => format!("{}…", &reason[..end]),
    }
}

impl Progress {
    /// Appends `event`, dropping the oldest event after the first
    /// [`KEEP_FIRST`] when the list is full.
    pub(super) fn record(&mut self, event: Event) {
        self.events.push(event);
        if self.events.len() > KEEP_FIRST + KEEP_LAST {
            self.events.remove(KEEP_FIRST);
            self.events_dropped = self.events_dropped.saturating_add(1);
        }
    }
}

/// What changed in a batch's instances between `before` and `after` (one
/// step of the gate), in the batch's order.
pub(super) fn instance_changes(before: &Batch, after: &Batch) -> Vec<EventKind> {
    let mut out = Vec::new();
    for n in &after.new {
        let was = before.new.iter().find(|b| b.id == n.id);
        if was.is_none() {
            out.push(EventKind::InstanceSeen {
                id: n.id.clone(),
                batch: after.number,
            });
        }
        let healthy = was.is_some_and(|b| b.healthy_at.is_some());
        match (healthy, n.healthy_at.is_some()) {
            (false, true) => out.push(EventKind::InstanceHealthy { id: n.id.clone() }),
            (true, false) => out.push(EventKind::InstanceUnhealthy { id: n.id.clone() }),
            _ => {}
        }
        let wrong = was.is_some_and(|b| b.critical_since.is_some());
        if !wrong && n.critical_since.is_some() {
            out.push(EventKind::InstanceWrong { id: n.id.clone() });
        }
    }
    out
}

/// The counts of `obs` for rollout `r` (as the step leaves it).
pub(super) fn counts(r: &Rollout, obs: &Observation) -> Counts {
    let replacements: Vec<&str> = match &r.state {
        State::Reverting(rv) => match &rv.stage {
            RevertStage::Replacing { batch, .. } => {
                batch.new.iter().map(|n| n.id.as_str()).collect()
            }
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    let launched = |id: &str| {
        !r.progress.initial_members.iter().any(|m| m == id) && !replacements.contains(&id)
    };
    let is_new = |id: &str| match obs.image(id) {
        Some(image) if !r.spec.changes_template() => image == r.spec.target_image,
        _ => launched(id),
    };
    let mut c = Counts::default();
    for id in obs.alive_ids() {
        if is_new(id) {
            c.new += 1;
            if obs.passing(id) {
                c.passing += 1;
            }
        } else {
            c.old += 1;
        }
    }
    c
}
