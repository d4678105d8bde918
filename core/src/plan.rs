//! Plans: what runs against what would run, and the decision on it.
//!
//! Pure: [`compute`] turns the observed group, instances, launch template and
//! images into a [`Plan`]; [`decide`] says what the coordinator does when
//! the registry shows an image (nothing and why, or plan it and supersede
//! older pending plans), and `rollgate publish` asks it the same question
//! ([`decide_publish`]) before it claims anything; [`decide_template`] says
//! when a Terraform-only change of the launch template is due;
//! [`rollback_target`] chooses the version `rollgate rollback` goes back
//! to; [`Decision`] records an operator's (or the policy's) answer. Storage
//! is `rollout::store`; rendering is `rollout::render`.
//!
//! Handover to the rollout: a plan whose decision is `Approved` and that has
//! no `outcome` yet is the rollout's input; the rollout records its outcome
//! on the plan when it ends. Older approved plans run first.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fleet::{Group, Image, Instance, TemplateVersion};
use crate::params::Params;

mod decide;
mod rollback;

pub use decide::{
    Ignored, Published, Situation, Verdict, decide, decide_publish, decide_template, running_base,
};
pub use rollback::{RollbackRefusal, StableVersion, rollback_target, stable_versions};

/// Milliseconds since the Unix epoch: plans persist as JSON and tests use
/// fixed times.
pub type Millis = u64;

/// The current time in [`Millis`].
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An image in a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// AMI ID.
    pub image_id: String,
    /// App version (`rollgate:version` tag); empty when untagged.
    pub version: String,
    /// Artifact (`rollgate:artifact` tag); empty when untagged.
    pub artifact: String,
}

impl ImageRef {
    /// From a registry image.
    pub fn from_image(image: &Image) -> Self {
        Self {
            image_id: image.image_id.clone(),
            version: image.version.clone().unwrap_or_default(),
            artifact: image.artifact.clone().unwrap_or_default(),
        }
    }
}

/// What happens to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceAction {
    /// Replaced by a new instance on the target image.
    Replace,
    /// Already on the target image: kept.
    Keep,
}

/// One instance of the group at plan time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedInstance {
    /// Instance ID.
    pub instance_id: String,
    /// Its image (from DescribeInstances).
    pub image_id: String,
    /// Its availability zone.
    pub availability_zone: String,
    /// Its Auto Scaling lifecycle state.
    pub lifecycle_state: String,
    /// Replace or keep.
    pub action: InstanceAction,
}

/// The answer to a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Decision {
    /// Waiting for an operator until `expires_at`.
    Pending {
        /// When it expires.
        expires_at: Millis,
    },
    /// Approved.
    Approved {
        /// Who (`--as`, the OS user, or `policy:auto`).
        by: String,
        /// When.
        at: Millis,
    },
    /// Rejected.
    Rejected {
        /// Who.
        by: String,
        /// When.
        at: Millis,
        /// Why, as given.
        reason: String,
    },
    /// Nobody answered in time.
    Expired {
        /// When it was marked expired.
        at: Millis,
    },
    /// A newer image arrived first.
    Superseded {
        /// The newer plan.
        by_plan: String,
        /// When.
        at: Millis,
    },
}

impl Decision {
    /// A short word for tables.
    pub fn word(&self) -> &'static str {
        match self {
            Decision::Pending { .. } => "pending",
            Decision::Approved { .. } => "approved",
            Decision::Rejected { .. } => "rejected",
            Decision::Expired { .. } => "expired",
            Decision::Superseded { .. } => "superseded",
        }
    }
}

/// How a rollout of the plan ended (written by the rollout).
///
/// Stored as `{"result": "succeeded", "at": ..., "reason": ...}`, the shape
/// the first releases wrote with a free-text `result`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// Every instance runs the target image, proven healthy.
    Succeeded {
        /// When it ended.
        at: Millis,
    },
    /// It failed and the group went back to the stable version.
    Reverted {
        /// When it ended.
        at: Millis,
        /// Why it failed (instance, check, status, output, deadline).
        reason: String,
    },
    /// It failed and was left where it stopped (`auto_revert = false`, or a
    /// revert that could not finish).
    Failed {
        /// When it ended.
        at: Millis,
        /// Why.
        reason: String,
    },
    /// An operator aborted it; the group went back to the stable version.
    Aborted {
        /// When it ended.
        at: Millis,
        /// Who and why, as given.
        reason: String,
    },
}

impl Outcome {
    /// The word operators read (`succeeded`, `reverted`, ...).
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Succeeded { .. } => "succeeded",
            Outcome::Reverted { .. } => "reverted",
            Outcome::Failed { .. } => "failed",
            Outcome::Aborted { .. } => "aborted",
        }
    }

    /// When it ended.
    pub fn at(&self) -> Millis {
        match self {
            Outcome::Succeeded { at }
            | Outcome::Reverted { at, .. }
            | Outcome::Failed { at, .. }
            | Outcome::Aborted { at, .. } => *at,
        }
    }

    /// Why, empty for a success.
    pub fn reason(&self) -> &str {
        match self {
            Outcome::Succeeded { .. } => "",
            Outcome::Reverted { reason, .. }
            | Outcome::Failed { reason, .. }
            | Outcome::Aborted { reason, .. } => reason,
        }
    }

    /// Whether the rollout did what was asked.
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Succeeded { .. })
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.word())
    }
}

/// What a plan changes, and so how it was asked for.
///
/// Stored as `{"kind": "image"}`, `{"kind": "rollback", ...}` or
/// `{"kind": "template", ...}`; plans stored before this field existed are
/// image plans.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A new image of the artifact (published, or found by the registry
    /// poll).
    #[default]
    Image,
    /// Back to an earlier stable version, asked for by `rollgate rollback`.
    Rollback {
        /// Who asked (`--as`, the OS user).
        requested_by: String,
        /// A version that failed before, overridden explicitly.
        #[serde(default)]
        override_failed: bool,
    },
    /// The image stays; the launch template's default version changed (a
    /// Terraform apply), and the instances are replaced to pick it up.
    Template {
        /// The default version the running instances were launched from.
        from_version: i64,
        /// The new default version.
        to_version: i64,
    },
}

impl Change {
    /// A short word for tables and notices (`image`, `rollback`,
    /// `template`).
    pub fn word(&self) -> &'static str {
        match self {
            Change::Image => "image",
            Change::Rollback { .. } => "rollback",
            Change::Template { .. } => "template",
        }
    }
}

/// A plan for one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// `<service>-<n>`, what operators type.
    pub id: String,
    /// Service name.
    pub service: String,
    /// What it changes; plans stored before this field existed are image
    /// plans.
    #[serde(default)]
    pub change: Change,
    /// When it was computed.
    pub created_at: Millis,
    /// The Auto Scaling group.
    pub group: String,
    /// Launch template ID.
    pub launch_template_id: String,
    /// Launch template name.
    pub launch_template_name: String,
    /// The template version the group runs now (the stable one to revert to).
    pub current_template_version: i64,
    /// The template's default version at plan time (Terraform's): the
    /// rollout's new version copies it and changes only the image. `None` in
    /// plans stored before it was recorded.
    #[serde(default)]
    pub base_template_version: Option<i64>,
    /// What runs now (the current template version's image).
    pub current: ImageRef,
    /// What would run.
    pub target: ImageRef,
    /// Desired capacity at plan time.
    pub desired_capacity: i32,
    /// Minimum size at plan time.
    pub min_size: i32,
    /// Maximum size at plan time.
    pub max_size: i32,
    /// The group's instances.
    pub instances: Vec<PlannedInstance>,
    /// Number of steps (the canary step included).
    pub batches: u32,
    /// Estimated duration.
    #[serde(with = "humantime_serde")]
    pub estimate: Duration,
    /// Rollout parameters, frozen at plan time.
    pub params: Params,
    /// The answer.
    pub decision: Decision,
    /// How its rollout ended, once it has.
    pub outcome: Option<Outcome>,
}

impl Plan {
    /// Instances to replace.
    pub fn to_replace(&self) -> impl Iterator<Item = &PlannedInstance> {
        self.instances
            .iter()
            .filter(|i| i.action == InstanceAction::Replace)
    }

    /// Whether it still waits for an answer at `now`.
    pub fn is_pending(&self, now: Millis) -> bool {
        matches!(self.decision, Decision::Pending { expires_at } if expires_at > now)
    }

    /// Approved and not yet finished: the rollout's input.
    pub fn is_open_approved(&self) -> bool {
        matches!(self.decision, Decision::Approved { .. }) && self.outcome.is_none()
    }
}

/// What the service's configuration says about planning it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanSettings<'a> {
    /// The service's name.
    pub service: &'a str,
    /// How to roll it.
    pub params: &'a Params,
    /// An unanswered plan expires after this.
    pub approval_timeout: Duration,
    /// Typical time from launch to the app answering, for estimates only.
    pub expected_boot_time: Duration,
}

/// What [`compute`] needs, as observed.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    /// The service and how to plan it.
    pub service: PlanSettings<'a>,
    /// The plan's ID.
    pub id: String,
    /// The group.
    pub group: &'a Group,
    /// Its instances (DescribeInstances).
    pub instances: &'a [Instance],
    /// The template version the group points at.
    pub template: &'a TemplateVersion,
    /// The number of the template's default version (`$Default`).
    pub default_template_version: i64,
    /// The registry's view of the current image, when it is an artifact.
    pub current_image: Option<&'a Image>,
    /// The image to roll out.
    pub target: &'a Image,
    /// What the plan changes: for a template change every instance is
    /// replaced, though it runs the target image already.
    pub change: Change,
    /// Now.
    pub now: Millis,
}

/// The instances launched per step when `n` are to be replaced: the
/// configured `batch_size`, capped at `n` (the rollout never launches more
/// than it replaces).
pub fn effective_batch(n: u32, params: &Params) -> u32 {
    params.batch().min(n.max(1))
}

/// Number of steps to replace `n` instances.
pub fn batches(n: u32, params: &Params) -> u32 {
    if n == 0 {
        return 0;
    }
    let batch = effective_batch(n, params);
    let canary = params.canary.min(n);
    let rest = n - canary;
    u32::from(canary > 0) + rest.div_ceil(batch)
}

/// Rough duration: each step waits for boot and `min_healthy_time`; then
/// the bake.
pub fn estimate(steps: u32, service: &PlanSettings<'_>) -> Duration {
    (service.expected_boot_time + service.params.min_healthy_time) * steps
        + service.params.bake_time
}

/// Computes the plan. Instances leaving the group (Terminating, Terminated)
/// are left out; instances already on the target image are kept, except in
/// a template change, which replaces every instance.
pub fn compute(input: &PlanInput<'_>) -> Plan {
    let replace_all = matches!(input.change, Change::Template { .. });
    let gone = |state: &str| state.starts_with("Terminat");
    let mut instances: Vec<PlannedInstance> = input
        .group
        .instances
        .iter()
        .filter(|gi| !gone(&gi.lifecycle_state))
        .map(|gi| {
            let image_id = input
                .instances
                .iter()
                .find(|i| i.instance_id == gi.instance_id)
                .map(|i| i.image_id.clone())
                .unwrap_or_default();
            let action = if image_id == input.target.image_id && !replace_all {
                InstanceAction::Keep
            } else {
                InstanceAction::Replace
            };
            PlannedInstance {
                instance_id: gi.instance_id.clone(),
                image_id,
                availability_zone: gi.availability_zone.clone(),
                lifecycle_state: gi.lifecycle_state.clone(),
                action,
            }
        })
        .collect();
    instances.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    let n = instances
        .iter()
        .filter(|i| i.action == InstanceAction::Replace)
        .count() as u32;
    let steps = batches(n, input.service.params);
    let current = match input.current_image {
        Some(img) => ImageRef::from_image(img),
        None => ImageRef {
            image_id: input.template.image_id.clone().unwrap_or_default(),
            version: String::new(),
            artifact: String::new(),
        },
    };
    Plan {
        id: input.id.clone(),
        service: input.service.service.to_owned(),
        change: input.change.clone(),
        created_at: input.now,
        group: input.group.name.clone(),
        launch_template_id: input.template.template_id.clone(),
        launch_template_name: input.template.template_name.clone(),
        current_template_version: input.template.version_number,
        base_template_version: Some(input.default_template_version),
        current,
        target: ImageRef::from_image(input.target),
        desired_capacity: input.group.desired_capacity,
        min_size: input.group.min_size,
        max_size: input.group.max_size,
        instances,
        batches: steps,
        estimate: estimate(steps, &input.service),
        params: input.service.params.clone(),
        decision: Decision::Pending {
            expires_at: input.now + input.service.approval_timeout.as_millis() as u64,
        },
        outcome: None,
    }
}

/// Pending plans whose time ran out at `now`.
pub fn expired(plans: &[Plan], now: Millis) -> Vec<String> {
    plans
        .iter()
        .filter(|p| matches!(p.decision, Decision::Pending { expires_at } if expires_at <= now))
        .map(|p| p.id.clone())
        .collect()
}

/// Splits a plan ID into service and sequence (`web-api-7` → `web-api`, 7).
pub fn parse_plan_id(id: &str) -> Option<(&str, u64)> {
    let (service, n) = id.rsplit_once('-')?;
    let n = n.parse().ok()?;
    (!service.is_empty()).then_some((service, n))
}

#[cfg(test)]
mod tests;

/// Fixtures shared by the rollout modules' tests.
#[cfg(test)]
pub(crate) mod tests_support {
    pub(crate) use super::tests::sample_plan;
}
