//! What a rollout was asked to do, frozen when it starts: the target, the
//! stable version to fall back on, the parameters and the capacity to
//! restore. Part of the persisted [`Rollout`](super::Rollout).

use serde::{Deserialize, Serialize};

pub use crate::params::Params;

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
    /// The version the target's version copies: the template's default
    /// version when the plan was made (Terraform writes each change of the
    /// template as a new default version). Recorded, not looked up again, so
    /// a replay after a crash copies the same base. `None` in rollouts
    /// recorded before this field existed: they copy `stable`'s version, as
    /// they did then.
    #[serde(default)]
    pub base_template_version: Option<i64>,
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
    /// The version the target's version copies (see
    /// [`base_template_version`](Self::base_template_version)).
    pub fn base_version(&self) -> i64 {
        self.base_template_version
            .unwrap_or(self.stable.template_version)
    }

    /// Whether going back to `stable` would be going back to the failing
    /// version itself: then a revert must not touch the template (revert-loop
    /// guard), only clean up.
    pub fn stable_is_target(&self) -> bool {
        self.stable.image == self.target_image
            || self.target_template_version == Some(self.stable.template_version)
    }
}
