//! What a rollout was asked to do, frozen when it starts: the target, the
//! stable version to fall back on, the parameters and the capacity to
//! restore. Part of the persisted [`Rollout`](super::Rollout).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::time::millis;
use crate::coordinator::config::RolloutParams;

/// The rollout parameters (semantics.md, "Rollout parameters"), as the
/// machine persists them: durations in milliseconds, so a stored state does
/// not depend on how the configuration spells durations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    /// New instances launched per batch (Nomad `max_parallel`); 0 is read
    /// as 1, so a bad value cannot stall a rollout.
    pub batch_size: u32,
    /// How long a new instance must pass, without interruption, to count as
    /// healthy; any non-passing observation restarts its timer.
    #[serde(rename = "min_healthy_time_ms", with = "millis")]
    pub min_healthy_time: Duration,
    /// A new instance not healthy this long after it was first seen fails
    /// the rollout.
    #[serde(rename = "healthy_deadline_ms", with = "millis")]
    pub healthy_deadline: Duration,
    /// Starts with the rollout and restarts whenever an instance becomes
    /// healthy; expiry fails the rollout (a stuck rollout must not hang).
    #[serde(rename = "progress_deadline_ms", with = "millis")]
    pub progress_deadline: Duration,
    /// Launch this many first and pause until promoted; 0 = no canary.
    pub canary: u32,
    /// Promote the canary without an operator once it has been healthy for
    /// `bake_time`.
    pub auto_promote: bool,
    /// After the last batch (and before auto-promoting a canary), keep
    /// watching this long before declaring success.
    #[serde(rename = "bake_time_ms", with = "millis")]
    pub bake_time: Duration,
    /// On failure, return the group to the stable version; when false the
    /// rollout stops where it failed, for an operator to look (and abort).
    pub auto_revert: bool,
}

impl Default for Params {
    /// The defaults of semantics.md.
    fn default() -> Self {
        Self::from(&RolloutParams::default())
    }
}

impl From<&RolloutParams> for Params {
    fn from(p: &RolloutParams) -> Self {
        Self {
            batch_size: p.batch_size,
            min_healthy_time: p.min_healthy_time,
            healthy_deadline: p.healthy_deadline,
            progress_deadline: p.progress_deadline,
            canary: p.canary,
            auto_promote: p.auto_promote,
            bake_time: p.bake_time,
            auto_revert: p.auto_revert,
        }
    }
}

impl Params {
    /// The batch size, at least 1.
    pub fn batch(&self) -> u32 {
        self.batch_size.max(1)
    }
}

/// The last version known good: what a revert returns to and what the next
/// plan compares against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StableRef {
    /// Launch template version number (never `$Latest`).
    pub template_version: i64,
    /// The AMI that version launches.
    pub image: String,
    /// The app version that image carries.
    pub version: String,
}

/// An Auto Scaling group's size bounds and desired capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// Minimum size.
    pub min: i32,
    /// Maximum size.
    pub max: i32,
    /// Desired capacity: the surge never takes the group below it.
    pub desired: i32,
}

/// The input of a rollout, from the approved plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutSpec {
    /// The plan ID (`web-7`): names the rollout in KV, notices and dedup keys.
    pub id: String,
    /// The service (`web`): the Consul service whose health gates the rollout.
    pub service: String,
    /// The Auto Scaling group.
    pub group: String,
    /// The launch template (`lt-...`) the group uses.
    pub launch_template_id: String,
    /// The AMI to roll out.
    pub target_image: String,
    /// The app version it carries (for notices and `RecordStable`).
    pub target_version: String,
    /// The template version that launches the target image: `None` until the
    /// machine asked for it and the executor reported its number.
    pub target_template_version: Option<i64>,
    /// What runs now, known good: the revert target.
    pub stable: StableRef,
    /// How to roll.
    pub params: Params,
    /// The group's size at plan time, restored at the end (either way).
    pub original: Capacity,
    /// Old instances to replace, in the plan's order. The machine rechecks
    /// them against the group when it starts (see `Progress::to_replace`).
    pub instances_to_replace: Vec<String>,
}

impl RolloutSpec {
    /// Whether going back to `stable` would be going back to the failing
    /// version itself: then a revert must not touch the template (revert-loop
    /// guard), only clean up.
    pub fn stable_is_target(&self) -> bool {
        self.stable.image == self.target_image
            || self.target_template_version == Some(self.stable.template_version)
    }
}
