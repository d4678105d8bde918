//! [`SdkFleet`]: the [`Fleet`] over the real AWS SDK clients, and the SDK
//! configuration both it and the registry are built from.
//!
//! Production: [`load_config`] / [`SdkFleet::from_env`] use the standard
//! chain (`AWS_REGION`, `AWS_ENDPOINT_URL`, credentials from the environment,
//! profile, web identity or the instance profile), HTTPS through rustls, and
//! the SDK's standard retries for quick blips; [`crate::aws::retry::Retrying`]
//! adds slower retries on top. Tests: `test_config` /
//! `SdkFleet::for_endpoint` point at an emulator with static dummy
//! credentials, SDK retries off and short time-outs; they exist only with
//! `cfg(test)` or the `test-util` feature, so the product carries no dummy
//! credentials.
//!
//! This module must never log or return credentials, and every call it makes
//! is one of the operations `tests/iam_policy.rs` finds on the `ec2` and
//! `autoscaling` receivers.

use aws_config::SdkConfig;
use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
use aws_sdk_ec2::types::Filter;
use tracing::{debug, info};

use super::{Error, Fleet, Group, GroupInstance, Instance, LaunchTemplateVersion, Result};

mod config;
mod convert;
mod templates;

#[cfg(any(test, feature = "test-util"))]
pub use config::test_config;
pub use config::{autoscaling_endpoint, ec2_endpoint, load_config, timeouts};
use convert::{instance_from_sdk, template_ref, warn_skipped};

const DESCRIBE_GROUPS: &str = "autoscaling:DescribeAutoScalingGroups";
/// Group names per `DescribeAutoScalingGroups`, so that one answer stays of
/// a reasonable size (it pages on beside).
const GROUP_NAMES_PER_CALL: usize = 50;
const DESCRIBE_GROUP_INSTANCES: &str = "autoscaling:DescribeAutoScalingInstances";
const UPDATE_GROUP: &str = "autoscaling:UpdateAutoScalingGroup";
const SET_DESIRED: &str = "autoscaling:SetDesiredCapacity";
const SET_PROTECTION: &str = "autoscaling:SetInstanceProtection";
const TERMINATE: &str = "autoscaling:TerminateInstanceInAutoScalingGroup";
const SUSPEND: &str = "autoscaling:SuspendProcesses";
const RESUME: &str = "autoscaling:ResumeProcesses";
const DESCRIBE_INSTANCES: &str = "ec2:DescribeInstances";

/// How many instance ids go into one `DescribeInstances` filter.
const INSTANCE_IDS_PER_CALL: usize = 100;

/// The [`Fleet`] backed by `aws-sdk-ec2` and `aws-sdk-autoscaling`.
#[derive(Debug, Clone)]
pub struct SdkFleet {
    /// EC2: instances, launch templates.
    ec2: aws_sdk_ec2::Client,
    /// Auto Scaling: the group and its members.
    autoscaling: aws_sdk_autoscaling::Client,
    /// Where EC2 calls go, named by errors without an answer.
    ec2_endpoint: String,
    /// Where Auto Scaling calls go, likewise.
    autoscaling_endpoint: String,
}

impl SdkFleet {
    /// Clients from an SDK configuration.
    pub fn new(config: &SdkConfig) -> Self {
        Self {
            ec2: aws_sdk_ec2::Client::new(config),
            autoscaling: aws_sdk_autoscaling::Client::new(config),
            ec2_endpoint: ec2_endpoint(config),
            autoscaling_endpoint: autoscaling_endpoint(config),
        }
    }

    /// An SDK error of `call`, naming the endpoint it went to.
    fn error<E>(
        &self,
        call: &'static str,
        resource: impl Into<String>,
        err: aws_sdk_ec2::error::SdkError<E, aws_sdk_ec2::config::http::HttpResponse>,
    ) -> Error
    where
        E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.locate(Error::from_sdk(call, resource, err))
    }

    /// `error`, naming the endpoint of its call's service.
    fn locate(&self, error: Error) -> Error {
        let endpoint = if error.call().starts_with("ec2:") {
            &self.ec2_endpoint
        } else {
            &self.autoscaling_endpoint
        };
        error.at(endpoint)
    }

    /// Clients from the standard AWS chain; see [`load_config`].
    pub async fn from_env(region: Option<&str>, endpoint: Option<&str>) -> Self {
        Self::new(&load_config(region, endpoint).await)
    }

    /// Clients for an emulator; see [`test_config`].
    #[cfg(any(test, feature = "test-util"))]
    pub fn for_endpoint(endpoint_url: &str, region: &str) -> Self {
        Self::new(&test_config(endpoint_url, region))
    }

    /// The artifact registry over the same EC2 client, for images owned by
    /// this account.
    pub fn registry(&self) -> super::registry::SdkRegistry {
        super::registry::SdkRegistry::from_client(self.ec2.clone())
            .with_endpoint(self.ec2_endpoint.clone())
    }

    /// Whether `id` is already gone from its group or from EC2: terminating,
    /// terminated, or unknown. A running instance outside any group is not
    /// gone.
    async fn is_gone(&self, id: &str) -> Result<bool> {
        let members = self
            .autoscaling
            .describe_auto_scaling_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(|e| self.error(DESCRIBE_GROUP_INSTANCES, format!("instance {id}"), e))?;
        if let Some(member) = members.auto_scaling_instances().first() {
            let state = member.lifecycle_state().unwrap_or_default();
            return Ok(state.starts_with("Terminat"));
        }
        let instances = self.describe_instances(&[id.to_owned()]).await?;
        Ok(instances
            .iter()
            .all(|i| matches!(i.state.as_str(), "shutting-down" | "terminated")))
    }
}

/// A group as `DescribeAutoScalingGroups` answers it, in the boundary's
/// terms.
fn group_of(
    group: &aws_sdk_autoscaling::types::AutoScalingGroup,
    name: &str,
    resource: &str,
) -> Result<Group> {
    let launch_template = match group.launch_template() {
        None => None,
        Some(spec) => Some(template_ref(spec).ok_or_else(|| {
            Error::unexpected(
                DESCRIBE_GROUPS,
                resource,
                "the group's launch template has no id",
            )
        })?),
    };
    let instances = group
        .instances()
        .iter()
        .map(|i| GroupInstance {
            instance_id: i.instance_id().unwrap_or_default().to_owned(),
            lifecycle_state: i
                .lifecycle_state()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            health_status: i.health_status().unwrap_or_default().to_owned(),
            protected_from_scale_in: i.protected_from_scale_in().unwrap_or(false),
            availability_zone: i.availability_zone().unwrap_or_default().to_owned(),
        })
        .collect();
    Ok(Group {
        name: name.to_owned(),
        min_size: group.min_size().unwrap_or_default(),
        max_size: group.max_size().unwrap_or_default(),
        desired_capacity: group.desired_capacity().unwrap_or_default(),
        launch_template,
        instances,
        suspended_processes: group
            .suspended_processes()
            .iter()
            .filter_map(|p| p.process_name().map(str::to_owned))
            .collect(),
    })
}

impl Fleet for SdkFleet {
    async fn describe_group(&self, name: &str) -> Result<Group> {
        let resource = format!("group {name}");
        let out = self
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .map_err(|e| self.error(DESCRIBE_GROUPS, resource.clone(), e))?;
        let Some(group) = out
            .auto_scaling_groups()
            .iter()
            .find(|g| g.auto_scaling_group_name() == Some(name))
        else {
            return Err(Error::not_found(DESCRIBE_GROUPS, resource, ""));
        };
        group_of(group, name, &resource)
    }

    async fn describe_groups(&self, names: &[String]) -> Result<Vec<Group>> {
        let mut found = Vec::with_capacity(names.len());
        for chunk in names.chunks(GROUP_NAMES_PER_CALL) {
            let resource = format!("groups {}", chunk.join(", "));
            let mut pages = self
                .autoscaling
                .describe_auto_scaling_groups()
                .set_auto_scaling_group_names(Some(chunk.to_vec()))
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| self.error(DESCRIBE_GROUPS, resource.clone(), e))?;
                for group in page.auto_scaling_groups() {
                    let Some(name) = group
                        .auto_scaling_group_name()
                        .filter(|n| chunk.iter().any(|c| c == n))
                    else {
                        continue;
                    };
                    found.push(group_of(group, name, &format!("group {name}"))?);
                }
            }
        }
        Ok(found)
    }

    async fn describe_instances(&self, ids: &[String]) -> Result<Vec<Instance>> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(INSTANCE_IDS_PER_CALL) {
            // A filter, not InstanceIds: an unknown id is left out instead of
            // failing the whole call (instances vanish during a rollout).
            let filter = Filter::builder()
                .name("instance-id")
                .set_values(Some(chunk.to_vec()))
                .build();
            let mut next_token = None;
            loop {
                let out = self
                    .ec2
                    .describe_instances()
                    .filters(filter.clone())
                    .set_next_token(next_token)
                    .send()
                    .await
                    .map_err(|e| {
                        self.error(
                            DESCRIBE_INSTANCES,
                            format!("instances {}", chunk.join(",")),
                            e,
                        )
                    })?;
                for reservation in out.reservations() {
                    found.extend(reservation.instances().iter().map(instance_from_sdk));
                }
                next_token = out
                    .next_token()
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned);
                if next_token.is_none() {
                    break;
                }
            }
        }
        Ok(found)
    }

    async fn launch_template_version(
        &self,
        template_id: &str,
        version: &str,
    ) -> Result<LaunchTemplateVersion> {
        templates::describe_version(&self.ec2, template_id, version)
            .await
            .map_err(|e| self.locate(e))
    }

    async fn create_launch_template_version(
        &self,
        base: &LaunchTemplateVersion,
        image_id: &str,
        rollout_id: &str,
    ) -> Result<i64> {
        templates::create_version(&self.ec2, base, image_id, rollout_id)
            .await
            .map_err(|e| self.locate(e))
    }

    async fn set_group_launch_template(
        &self,
        group: &str,
        template_id: &str,
        version: i64,
    ) -> Result<()> {
        let spec = LaunchTemplateSpecification::builder()
            .launch_template_id(template_id)
            .version(version.to_string())
            .build();
        self.autoscaling
            .update_auto_scaling_group()
            .auto_scaling_group_name(group)
            .launch_template(spec)
            .send()
            .await
            .map_err(|e| {
                self.error(
                    UPDATE_GROUP,
                    format!("group {group} (launch template {template_id} version {version})"),
                    e,
                )
            })?;
        info!(
            group,
            template_id, version, "Group pinned to launch template version."
        );
        Ok(())
    }

    async fn set_group_size(&self, group: &str, min: Option<i32>, max: Option<i32>) -> Result<()> {
        if min.is_none() && max.is_none() {
            return Ok(());
        }
        self.autoscaling
            .update_auto_scaling_group()
            .auto_scaling_group_name(group)
            .set_min_size(min)
            .set_max_size(max)
            .send()
            .await
            .map_err(|e| self.error(UPDATE_GROUP, format!("group {group}"), e))?;
        info!(group, ?min, ?max, "Group size bounds set.");
        Ok(())
    }

    async fn set_desired_capacity(&self, group: &str, desired: i32) -> Result<()> {
        self.autoscaling
            .set_desired_capacity()
            .auto_scaling_group_name(group)
            .desired_capacity(desired)
            .honor_cooldown(false)
            .send()
            .await
            .map_err(|e| {
                self.error(SET_DESIRED, format!("group {group} (desired {desired})"), e)
            })?;
        info!(group, desired, "Desired capacity set.");
        Ok(())
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
        self.autoscaling
            .set_instance_protection()
            .auto_scaling_group_name(group)
            .set_instance_ids(Some(ids.to_vec()))
            .protected_from_scale_in(protected)
            .send()
            .await
            .map_err(|e| {
                self.error(
                    SET_PROTECTION,
                    format!("group {group} instances {}", ids.join(",")),
                    e,
                )
            })?;
        debug!(group, instances = %ids.join(","), protected, "Scale-in protection set.");
        Ok(())
    }

    async fn terminate_instance(&self, id: &str, decrement_desired: bool) -> Result<()> {
        let result = self
            .autoscaling
            .terminate_instance_in_auto_scaling_group()
            .instance_id(id)
            .should_decrement_desired_capacity(decrement_desired)
            .send()
            .await;
        let error = match result {
            Ok(_) => {
                info!(instance = id, decrement_desired, "Instance terminating.");
                return Ok(());
            }
            Err(e) => self.error(TERMINATE, format!("instance {id}"), e),
        };
        // AWS answers a ValidationError for an instance that is no longer a
        // member; moto answers HTTP 500. Either way, look before failing: an
        // instance already on its way out is the goal, and treating it as done
        // keeps a replay from lowering the desired capacity twice. A transport
        // failure leaves it unknown whether the call landed: retry instead.
        if matches!(&error, Error::Unreachable { .. }) {
            return Err(error);
        }
        if self.is_gone(id).await? {
            debug!(instance = id, error = %error, "Instance already gone; termination is done.");
            return Ok(());
        }
        Err(error)
    }

    async fn suspend_processes(&self, group: &str, processes: &[String]) -> Result<()> {
        if processes.is_empty() {
            return Ok(());
        }
        self.autoscaling
            .suspend_processes()
            .auto_scaling_group_name(group)
            .set_scaling_processes(Some(processes.to_vec()))
            .send()
            .await
            .map_err(|e| {
                self.error(
                    SUSPEND,
                    format!("group {group} processes {}", processes.join(",")),
                    e,
                )
            })?;
        info!(group, processes = %processes.join(","), "Scaling processes suspended.");
        Ok(())
    }

    async fn resume_processes(&self, group: &str, processes: &[String]) -> Result<()> {
        if processes.is_empty() {
            return Ok(());
        }
        self.autoscaling
            .resume_processes()
            .auto_scaling_group_name(group)
            .set_scaling_processes(Some(processes.to_vec()))
            .send()
            .await
            .map_err(|e| {
                self.error(
                    RESUME,
                    format!("group {group} processes {}", processes.join(",")),
                    e,
                )
            })?;
        info!(group, processes = %processes.join(","), "Scaling processes resumed.");
        Ok(())
    }
}
