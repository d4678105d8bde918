//! The AWS boundary: what a rollout needs of EC2 and Auto Scaling
//! ([`Fleet`]), its SDK implementation ([`sdk::SdkFleet`]), a retrying
//! decorator ([`retry::Retrying`]), the AMI artifact registry ([`registry`]),
//! and, for tests only, an in-memory fake (`memory::MemoryFleet`, compiled
//! with `cfg(test)` or the `test-util` feature, never in the product).
//!
//! What this module must never do:
//!
//! - let an SDK type out: the rest of rollgate sees plain data
//!   ([`Group`], [`Instance`], [`LaunchTemplateVersion`], ...);
//! - decide anything about a rollout: every method does exactly one thing to
//!   AWS, and is idempotent, so the executor can replay an action after a
//!   crash without knowing whether the first attempt landed;
//! - pin `$Latest` or `$Default`: a group is always set to an explicit
//!   launch template version number;
//! - change a launch template's default version or any field of it but the
//!   image: Terraform owns those (`infra/README.md`);
//! - lose the call and the resource on an error (see [`Error`]).
//!
//! # Async traits
//!
//! [`Fleet`] and [`registry::Registry`] use `async fn` in traits (Rust 1.75+)
//! with `Send` futures declared in the trait, not `#[async_trait]`: no boxing,
//! no macro. The price is that they are not object-safe; code that needs a
//! fleet takes it as a generic parameter (`F: Fleet`), which is also what lets
//! tests pass a `memory::MemoryFleet`.
//!
//! All SDK calls live in [`sdk`] and [`registry`], on receivers named `ec2` and
//! `autoscaling`; `tests/iam_policy.rs` derives the coordinator's IAM actions
//! from those calls.

pub mod error;
mod fleet;
#[cfg(any(test, feature = "test-util"))]
pub mod memory;
pub mod registry;
pub mod retry;
pub mod sdk;
mod template_data;

use std::future::Future;

pub use error::{Error, FailureKind, Result};
pub use fleet::{
    Group, GroupInstance, Instance, LaunchTemplateData, LaunchTemplateRef, LaunchTemplateVersion,
};

/// Everything a rollout does to EC2 and Auto Scaling.
///
/// Every method is idempotent: calling it again with the same arguments after
/// it succeeded (or after a crash left it unknown whether it did) leaves the
/// world as one call would, and returns `Ok`.
pub trait Fleet: Send + Sync {
    /// The group, its template and its members
    /// (`autoscaling:DescribeAutoScalingGroups`). [`Error::NotFound`] names
    /// the group when it does not exist.
    fn describe_group(&self, name: &str) -> impl Future<Output = Result<Group>> + Send;

    /// Several groups at once (`autoscaling:DescribeAutoScalingGroups`
    /// with their names): those that exist, in no particular order. The
    /// default asks for each in turn; the SDK's asks for up to 50 in one
    /// call.
    fn describe_groups(&self, names: &[String]) -> impl Future<Output = Result<Vec<Group>>> + Send {
        async move {
            let mut found = Vec::with_capacity(names.len());
            for name in names {
                match self.describe_group(name).await {
                    Ok(g) => found.push(g),
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(found)
        }
    }

    /// The EC2 view of instances (`ec2:DescribeInstances`): the image each runs,
    /// its state and address. Ids EC2 does not know are left out; an empty
    /// list makes no call.
    fn describe_instances(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<Instance>>> + Send;

    /// The EC2 view of every member of `group`: one
    /// [`describe_instances`](Fleet::describe_instances) of its member ids.
    fn describe_members(
        &self,
        group: &Group,
    ) -> impl Future<Output = Result<Vec<Instance>>> + Send {
        let ids: Vec<String> = group
            .instances
            .iter()
            .map(|i| i.instance_id.clone())
            .collect();
        async move { self.describe_instances(&ids).await }
    }

    /// One version of a launch template (`ec2:DescribeLaunchTemplateVersions`).
    /// `version` is a number, or `$Default`/`$Latest` (reading is fine; only
    /// pinning them is not).
    fn launch_template_version(
        &self,
        template_id: &str,
        version: &str,
    ) -> impl Future<Output = Result<LaunchTemplateVersion>> + Send;

    /// A new version of `base`'s template that launches `image_id` and is
    /// otherwise `base`'s full data, its description included
    /// (`ec2:CreateLaunchTemplateVersion`): the image is the only field
    /// rollgate owns, Terraform owns the rest (`infra/README.md`), so a
    /// version rollgate wrote reads back to Terraform as its own. Never
    /// changes the template's default version. Returns the new version
    /// number. Replaying it for the same `rollout_id` returns the version the
    /// first call created instead of creating another one.
    fn create_launch_template_version(
        &self,
        base: &LaunchTemplateVersion,
        image_id: &str,
        rollout_id: &str,
    ) -> impl Future<Output = Result<i64>> + Send;

    /// Pins the group to `template_id` at `version`
    /// (`autoscaling:UpdateAutoScalingGroup`). Instances launched from now on
    /// use it; running ones are untouched.
    fn set_group_launch_template(
        &self,
        group: &str,
        template_id: &str,
        version: i64,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Changes the group's minimum and/or maximum size
    /// (`autoscaling:UpdateAutoScalingGroup`); `None` leaves a bound alone,
    /// both `None` makes no call.
    fn set_group_size(
        &self,
        group: &str,
        min: Option<i32>,
        max: Option<i32>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Sets the desired capacity, ignoring cooldowns
    /// (`autoscaling:SetDesiredCapacity`). Raising it launches instances;
    /// lowering it scales in unprotected instances.
    fn set_desired_capacity(
        &self,
        group: &str,
        desired: i32,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Protects instances from scale-in, or lifts the protection
    /// (`autoscaling:SetInstanceProtection`). An empty list makes no call.
    fn set_instance_protection(
        &self,
        group: &str,
        ids: &[String],
        protected: bool,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Terminates a group member, lowering the desired capacity by one when
    /// `decrement_desired` (`autoscaling:TerminateInstanceInAutoScalingGroup`).
    /// An instance that is already terminating, terminated or unknown is `Ok`:
    /// the goal is reached, and a replay must not lower the capacity twice.
    fn terminate_instance(
        &self,
        id: &str,
        decrement_desired: bool,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Suspends scaling processes (`autoscaling:SuspendProcesses`) such as
    /// `AZRebalance` or `ReplaceUnhealthy`. An empty list makes no call (AWS
    /// would read it as "all processes").
    fn suspend_processes(
        &self,
        group: &str,
        processes: &[String],
    ) -> impl Future<Output = Result<()>> + Send;

    /// Resumes scaling processes (`autoscaling:ResumeProcesses`). An empty
    /// list makes no call (AWS would read it as "all processes").
    fn resume_processes(
        &self,
        group: &str,
        processes: &[String],
    ) -> impl Future<Output = Result<()>> + Send;
}
