//! What a rollout was asked to do, frozen when it starts: the target, the
//! stable version to fall back on, the parameters and the capacity to
//! restore. Part of the persisted [`Rollout`](super::Rollout).

use serde::{Deserialize, Serialize};

pub use crate::params::Params;
pub use crate::plan::Change;

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
    /// What the plan changes. A template change (Terraform wrote a new
    /// default version; the image stays) replaces every instance that was
    /// there when the rollout started, whatever image it runs: see
    /// [`changes_template`](Self::changes_template). `Image` in rollouts
    /// recorded before this field existed, which is what they were.
    #[serde(default)]
    pub change: Change,
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

    /// Whether the rollout changes the launch template, not the image: the
    /// target image is the stable one, so the machine cannot tell old from
    /// new instances by image. It tells them by identity instead: old are
    /// the members present when it started (none of them launched by it),
    /// new are the members it saw appear while the group pinned its version.
    /// The per-instance launch template version AWS reports is not used
    /// (emulators report the template's default version there).
    pub fn changes_template(&self) -> bool {
        matches!(self.change, Change::Template { .. })
    }

    /// Whether going back to `stable` would be going back to the failing
    /// version itself: then a revert must not touch the template (revert-loop
    /// guard), only clean up. For an image change the same image is the same
    /// thing; for a template change the image is the same by definition and
    /// only the template version counts.
    pub fn stable_is_target(&self) -> bool {
        let same_version = self.target_template_version == Some(self.stable.template_version);
        if self.changes_template() {
            return same_version;
        }
        self.stable.image == self.target_image || same_version
    }
}
