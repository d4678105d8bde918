//! What the machine asks the executor to do. Every action is idempotent:
//! performing it twice, or again after a crash left it unknown whether the
//! first attempt landed, leaves the world as one performance would. The
//! executor performs a step's actions in order and stops at the first error
//! (a later action may rely on an earlier one, e.g. pin the stable template
//! before terminating without decrement).

use serde::{Deserialize, Serialize};

/// The scaling processes a rollout suspends: the ones that would launch or
/// terminate instances behind its back (AZ rebalancing, alarm-driven scaling
/// policies, scheduled actions). Launch, Terminate and health replacement
/// stay on: the surge needs the first two, and a dying instance should still
/// be replaced.
///
/// `infra/web.tf` (`local.rollout_suspended_processes`) lists the same
/// processes: Terraform refuses an apply while they are suspended, which is
/// how it knows a rollout is under way (`agent/tests/infra_ownership.rs`
/// keeps the two in step).
pub const SUSPENDED_PROCESSES: [&str; 3] = ["AZRebalance", "AlarmNotification", "ScheduledActions"];

/// One thing to do to AWS, to the KV store or to people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", content = "with", rename_all = "snake_case")]
pub enum Action {
    /// `Fleet::suspend_processes`. Only processes not already suspended are
    /// named; never an empty list.
    SuspendProcesses(Vec<String>),
    /// `Fleet::resume_processes`: only those the rollout itself suspended
    /// (an operator's own suspensions are left alone).
    ResumeProcesses(Vec<String>),
    /// `Fleet::create_launch_template_version` from `base_version`'s full
    /// data with `image`, and nothing else changed: not even the
    /// description, which stays the base's (Terraform owns every field but
    /// the image, see `infra/README.md`). The executor puts the returned
    /// number in the next
    /// [`Observation::created_template_version`](super::Observation); a replay
    /// returns the same number (the Fleet finds the version it created).
    CreateTemplateVersion {
        /// `lt-...`.
        template_id: String,
        /// The version to copy: the template's default version (Terraform's)
        /// as recorded in the spec, so a replay copies the same one.
        base_version: i64,
        /// The AMI the new version launches.
        image: String,
        /// The rollout creating it: part of the version's idempotency token,
        /// so a replay of this rollout gets the version it created.
        rollout_id: String,
    },
    /// `Fleet::set_group_launch_template` with an explicit number (never
    /// `$Latest`/`$Default`).
    SetGroupTemplate {
        /// `lt-...`.
        template_id: String,
        /// The version to pin.
        version: i64,
    },
    /// Absolute sizes (`None` = leave alone), so a replay changes nothing.
    /// With the Fleet's two calls, keep `min <= desired <= max` at every
    /// moment: when `max` is absent or not below the group's current max,
    /// call `set_group_size` first, then `set_desired_capacity`; when
    /// lowering `max`, set the desired capacity first.
    SetCapacity {
        /// New minimum size.
        min: Option<i32>,
        /// New maximum size.
        max: Option<i32>,
        /// New desired capacity (`SetDesiredCapacity`, ignoring cooldowns).
        desired: Option<i32>,
    },
    /// `Fleet::set_instance_protection(ids, true)`: proven new instances are
    /// kept out of any scale-in while the rollout lowers capacity.
    Protect(Vec<String>),
    /// `Fleet::set_instance_protection(ids, false)`: protection was a rollout
    /// tool; a finished group scales in normally.
    Unprotect(Vec<String>),
    /// `Fleet::terminate_instance` for each ID. With `decrement` the desired
    /// capacity drops by one per instance (the surge is given back); without,
    /// the group replaces the instance from its current template. The machine
    /// only names live members (terminating an unknown ID is an error in some
    /// emulators); the Fleet treats an instance already terminating as done,
    /// so a replay never lowers the capacity twice.
    Terminate {
        /// Instance IDs.
        ids: Vec<String>,
        /// `ShouldDecrementDesiredCapacity`.
        decrement: bool,
    },
    /// Record the rolled-out version as the service's stable one in KV (what
    /// the next plan compares against and reverts to). A plain overwrite.
    RecordStable {
        /// Template version now pinned.
        template_version: i64,
        /// Its AMI.
        image: String,
        /// Its app version.
        version: String,
    },
    /// Mark the image failed in KV (revert-loop guard): the planner refuses
    /// to roll it out again without a new explicit approval. A plain put.
    MarkImageFailed {
        /// The AMI.
        image: String,
        /// Why, as in the failure notice.
        reason: String,
    },
    /// Enqueue a notice in the outbox. The outbox dedup key comes from the
    /// rollout ID and the event (and batch), so a replay sends nothing twice.
    Notify(RolloutEvent),
}

/// What people are told. The executor maps these onto the notifier's
/// rollout stages (`Failed`, `Reverted`, `Succeeded`, `BatchHealthy`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RolloutEvent {
    /// The rollout began (first step).
    Started,
    /// Batch `n` of `of` is healthy (its new instances are protected and old
    /// ones about to be retired, or the canary is about to wait).
    BatchHealthy {
        /// 1-based batch number (the canary is batch 1).
        n: u32,
        /// Batches in all, as far as known now.
        of: u32,
    },
    /// The canary is healthy and waits for `rollgate promote` (or for
    /// `auto_promote_at`).
    CanaryWaiting {
        /// When it promotes itself, with `auto_promote`.
        auto_promote_at: Option<super::Timestamp>,
    },
    /// The canary was promoted; normal batches follow.
    Promoted,
    /// The rollout failed; the reason names the instance, check, status,
    /// output and deadline.
    Failed {
        /// Why.
        reason: String,
    },
    /// The group is back on the stable version (after a failure or an abort).
    Reverted {
        /// Why it was reverted.
        reason: String,
    },
    /// Every instance runs the target.
    Succeeded,
    /// An operator paused the rollout (the `n`th time).
    Paused {
        /// 1-based count of pauses in this rollout.
        n: u32,
    },
    /// An operator resumed it after pause `n`.
    Resumed {
        /// The pause this ends.
        n: u32,
    },
    /// No coordinator observed the rollout for `gap` (a leader takeover, an
    /// outage of Consul or AWS): its deadlines moved later by that time and
    /// the health timers of instances not yet accepted restarted.
    Unobserved {
        /// How long nobody observed.
        #[serde(with = "super::time::millis")]
        gap: std::time::Duration,
    },
    /// An operator aborted it; a revert follows.
    Aborted {
        /// Who.
        by: String,
        /// Why, as given.
        reason: String,
    },
}
