//! [`MemoryFleet`]: an in-memory [`Fleet`] for the executor's pure-logic
//! tests.
//!
//! It models exactly the semantics a surge rollout relies on, the way moto
//! and AWS behave, and nothing else:
//!
//! - raising the desired capacity launches instances at once from the
//!   group's launch template version (`$Latest`/`$Default` resolved at launch);
//!   they are `InService`/`running`, or `Pending`/`pending` while
//!   [`MemoryFleet::hold_launches_pending`] is on;
//! - lowering it scales in the *oldest unprotected* instances (moto's order;
//!   AWS's default policy balances zones first, so code must protect what it
//!   wants to keep, never rely on the order); protected instances stay even
//!   above the desired capacity;
//! - the desired capacity must stay within min..=max (`ValidationError`);
//!   changing min/max drags the desired capacity into the new range;
//! - terminating a member with decrement lowers the desired capacity (and
//!   refuses to go below min), without decrement launches a replacement;
//!   terminated instances stay visible to `describe_instances` as
//!   `terminated`;
//! - launch template versions are immutable and numbered from 1; creating a
//!   version is idempotent as in [`super::sdk::SdkFleet`].
//!
//! Not modelled: availability zones, health checks, cooldowns, lifecycle
//! hooks, standby, and the effect of suspended processes (they are only
//! recorded). Failures can be injected per call with
//! [`MemoryFleet::fail_next`].
//!
//! # Tests only
//!
//! Compiled with `cfg(test)` (this crate's unit tests) or the `test-util`
//! feature (its integration tests, through the dev-dependency of `rollgate`
//! on itself); never in the product, which must not carry a fake fleet.
//! A feature rather than a separate `testkit` crate because the unit tests
//! inside this crate use the fake too (`aws::retry`'s tests, for one):
//! a `testkit` crate would depend on the *library* `rollgate`, a different
//! crate from the one `cargo test --lib` compiles, so its `MemoryFleet` would
//! implement another copy of [`Fleet`] and the unit tests could not use it.
//! It also builds errors with the crate-private constructors of
//! [`Error`]. `tests/product_build.rs` checks that a normal build leaves
//! the feature off.

mod state;

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use super::{
    Error, FailureKind, Fleet, Group, Instance, LaunchTemplateData, LaunchTemplateVersion, Result,
};
use state::State;

/// An in-memory EC2 + Auto Scaling world: groups, instances, templates.
#[derive(Debug, Default)]
pub struct MemoryFleet {
    /// Everything, behind one lock: calls are atomic, as each AWS call is.
    state: Mutex<State>,
}

impl MemoryFleet {
    /// An empty world.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation completes under the lock before any panic can occur
        // in a caller, so a poisoned lock still holds consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a launch template whose version 1 (the default) launches
    /// `image_id`.
    pub fn add_template(&self, name: &str, image_id: &str) -> LaunchTemplateVersion {
        self.lock()
            .add_template(name, LaunchTemplateData::with_image_only(image_id))
    }

    /// What `terraform apply` does to the template after a change of a field
    /// Terraform owns (`update_default_version = true`): a new version with
    /// `change` applied to the latest version's data (so its image is
    /// whatever the latest version launches) and `description`, made the
    /// default. Returns it.
    ///
    /// # Panics
    /// When the template does not exist: a broken test setup.
    pub fn terraform_apply(
        &self,
        template_id: &str,
        description: &str,
        change: impl FnOnce(&LaunchTemplateData) -> LaunchTemplateData,
    ) -> LaunchTemplateVersion {
        self.lock()
            .terraform_apply(template_id, description, change)
            .expect("an existing template")
    }

    /// The number of the template's default version.
    ///
    /// # Panics
    /// When the template does not exist: a broken test setup.
    pub fn default_version(&self, template_id: &str) -> i64 {
        self.lock()
            .template_version(template_id, "$Default")
            .map(|v| v.version_number)
            .expect("an existing template")
    }

    /// Creates a group pinned to `template_id` at `version` and launches
    /// `desired` instances.
    ///
    /// # Panics
    /// When the template or version does not exist or the sizes are
    /// inconsistent: a broken test setup.
    pub fn add_group(
        &self,
        name: &str,
        template_id: &str,
        version: i64,
        min: i32,
        max: i32,
        desired: i32,
    ) {
        let mut state = self.lock();
        state
            .add_group(name, template_id, version, min, max, desired)
            .expect("a consistent test group");
    }

    /// While on, new instances stay `Pending`/`pending` until
    /// [`MemoryFleet::complete_launches`].
    pub fn hold_launches_pending(&self, hold: bool) {
        self.lock().hold_pending = hold;
    }

    /// Brings every pending instance in service.
    pub fn complete_launches(&self) {
        self.lock().complete_launches();
    }

    /// Makes EC2 terminate an instance behind the group's back (a failed
    /// host, an operator): it leaves its group, which launches a replacement.
    pub fn lose_instance(&self, id: &str) {
        self.lock().lose_instance(id);
    }

    /// Makes the next `times` calls of `call` (IAM spelling, e.g.
    /// `autoscaling:SetDesiredCapacity`) fail with a retryable `Throttling`
    /// error, before they change anything.
    pub fn fail_next(&self, call: &'static str, times: u32) {
        *self.lock().faults.entry(call).or_default() += times;
    }

    /// Every call made so far that changes the world, in order, as
    /// `call resource` lines (`autoscaling:SetDesiredCapacity web 3`).
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// Counts of the group's members by image id (live members only).
    pub fn images_in_group(&self, group: &str) -> BTreeMap<String, usize> {
        self.lock().images_in_group(group)
    }

    /// Runs one call: injected fault first, then `f` on the state.
    fn call<T>(
        &self,
        call: &'static str,
        resource: String,
        f: impl FnOnce(&mut State) -> Result<T>,
    ) -> Result<T> {
        let mut state = self.lock();
        if let Some(left) = state.faults.get_mut(call).filter(|n| **n > 0) {
            *left -= 1;
            return Err(Error::Api {
                call,
                resource,
                kind: FailureKind::Service,
                code: Some("Throttling".to_owned()),
                status: Some(400),
                message: "Rate exceeded (injected)".to_owned(),
            });
        }
        if !call.contains(":Describe") {
            state.calls.push(format!("{call} {resource}"));
        }
        f(&mut state)
    }
}

impl Fleet for MemoryFleet {
    async fn describe_group(&self, name: &str) -> Result<Group> {
        self.call(
            "autoscaling:DescribeAutoScalingGroups",
            format!("group {name}"),
            |s| s.describe_group(name),
        )
    }

    async fn describe_instances(&self, ids: &[String]) -> Result<Vec<Instance>> {
        // As the trait says (and the SDK does): an empty list makes no call.
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.call(
            "ec2:DescribeInstances",
            format!("instances {}", ids.join(",")),
            |s| Ok(s.describe_instances(ids)),
        )
    }

    async fn launch_template_version(
        &self,
        template_id: &str,
        version: &str,
    ) -> Result<LaunchTemplateVersion> {
        let resource = format!("launch template {template_id} version {version}");
        self.call(
            "ec2:DescribeLaunchTemplateVersions",
            resource.clone(),
            |s| {
                s.template_version(template_id, version)
                    .cloned()
                    .ok_or_else(|| {
                        Error::not_found("ec2:DescribeLaunchTemplateVersions", resource, "")
                    })
            },
        )
    }

    async fn create_launch_template_version(
        &self,
        base: &LaunchTemplateVersion,
        image_id: &str,
        rollout_id: &str,
    ) -> Result<i64> {
        let resource = format!(
            "launch template {} (from version {} with image {image_id})",
            base.template_id, base.version_number
        );
        self.call("ec2:CreateLaunchTemplateVersion", resource, |s| {
            s.create_version(base, image_id, rollout_id)
        })
    }

    async fn set_group_launch_template(
        &self,
        group: &str,
        template_id: &str,
        version: i64,
    ) -> Result<()> {
        let resource = format!("group {group} (launch template {template_id} version {version})");
        self.call("autoscaling:UpdateAutoScalingGroup", resource, |s| {
            s.set_template(group, template_id, version)
        })
    }

    async fn set_group_size(&self, group: &str, min: Option<i32>, max: Option<i32>) -> Result<()> {
        if min.is_none() && max.is_none() {
            return Ok(());
        }
        let resource = format!("group {group} (min {min:?}, max {max:?})");
        self.call("autoscaling:UpdateAutoScalingGroup", resource, |s| {
            s.set_size(group, min, max)
        })
    }

    async fn set_desired_capacity(&self, group: &str, desired: i32) -> Result<()> {
        let resource = format!("group {group} (desired {desired})");
        self.call("autoscaling:SetDesiredCapacity", resource, |s| {
            s.set_desired(group, desired)
        })
    }

    async fn set_instance_protection(
        &self,
        group: &str,
        ids: &[String],
        protected: bool,
    ) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let resource = format!(
            "group {group} instances {} (protected {protected})",
            ids.join(",")
        );
        self.call("autoscaling:SetInstanceProtection", resource, |s| {
            s.set_protection(group, ids, protected)
        })
    }

    async fn terminate_instance(&self, id: &str, decrement_desired: bool) -> Result<()> {
        let resource = format!("instance {id} (decrement {decrement_desired})");
        self.call(
            "autoscaling:TerminateInstanceInAutoScalingGroup",
            resource,
            |s| s.terminate(id, decrement_desired),
        )
    }

    async fn suspend_processes(&self, group: &str, processes: &[String]) -> Result<()> {
        if processes.is_empty() {
            return Ok(());
        }
        let resource = format!("group {group} processes {}", processes.join(","));
        self.call("autoscaling:SuspendProcesses", resource, |s| {
            s.group_mut("autoscaling:SuspendProcesses", group)?
                .suspended
                .extend(processes.iter().cloned());
            Ok(())
        })
    }

    async fn resume_processes(&self, group: &str, processes: &[String]) -> Result<()> {
        if processes.is_empty() {
            return Ok(());
        }
        let resource = format!("group {group} processes {}", processes.join(","));
        self.call("autoscaling:ResumeProcesses", resource, |s| {
            let g = s.group_mut("autoscaling:ResumeProcesses", group)?;
            for p in processes {
                g.suspended.remove(p);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests;
