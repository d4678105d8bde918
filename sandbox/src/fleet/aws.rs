//! What the simulator reads from the AWS stand-in: the group's members with
//! their lifecycle state, each member's image and EC2 state, and an image's
//! tags. Read-only: the simulator never changes the AWS world; the code
//! under test does.

use std::collections::BTreeMap;

use aws_config::SdkConfig;
use aws_sdk_ec2::error::DisplayErrorContext;
use aws_sdk_ec2::types::Filter;

use super::image::{ImageBehaviour, ImageError};

/// How many instance ids go into one `instance-id` filter.
const IDS_PER_CALL: usize = 100;

/// How many group names go into one `DescribeAutoScalingGroups`.
const GROUPS_PER_CALL: usize = 50;

/// One member of the group, as the Auto Scaling and EC2 APIs report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    /// `i-...`.
    pub instance_id: String,
    /// The Auto Scaling lifecycle state (`InService`, `Terminating`, ...).
    pub lifecycle: String,
    /// The placement the group reports.
    pub availability_zone: String,
    /// The instance type the group reports (may be empty).
    pub instance_type: String,
    /// The AMI, from `ec2:DescribeInstances`; `None` when EC2 did not
    /// report the instance (yet).
    pub image_id: Option<String>,
    /// The EC2 state name (`pending`, `running`, `terminated`, ...).
    pub ec2_state: Option<String>,
}

impl Member {
    /// Whether the instance is leaving: terminating or terminated in the
    /// group, or no longer running in EC2. A simulated instance in this
    /// state is stopped.
    pub fn leaving(&self) -> bool {
        self.lifecycle.starts_with("Terminat")
            || self.lifecycle == "Detached"
            || matches!(
                self.ec2_state.as_deref(),
                Some("shutting-down" | "terminated" | "stopping" | "stopped")
            )
    }

    /// Whether a machine runs for this member, so the simulator should start
    /// one: pending or running in EC2, and a lifecycle state of an instance
    /// that is (or is about to be) part of the group's capacity or in
    /// standby. Warm-pool, detaching and leaving instances are not started.
    pub fn wants_machine(&self) -> bool {
        !self.leaving()
            && !self.lifecycle.starts_with("Warmed")
            && !self.lifecycle.starts_with("Detach")
            && matches!(self.ec2_state.as_deref(), Some("pending" | "running"))
    }
}

/// The AWS clients the simulator reads with.
#[derive(Debug, Clone)]
pub(crate) struct Aws {
    autoscaling: aws_sdk_autoscaling::Client,
    ec2: aws_sdk_ec2::Client,
}

fn message<E: std::error::Error>(call: &str, e: E) -> String {
    format!("{call}: {}", DisplayErrorContext(e))
}

impl Aws {
    pub fn new(config: &SdkConfig) -> Self {
        Self {
            autoscaling: aws_sdk_autoscaling::Client::new(config),
            ec2: aws_sdk_ec2::Client::new(config),
        }
    }

    /// The group's members, or `None` when the group does not exist.
    pub async fn members(&self, group: &str) -> Result<Option<Vec<Member>>, String> {
        let mut all = self.members_of(&[group.to_owned()], |_| true).await?;
        Ok(all.remove(group))
    }

    /// The members of each of `groups` that exists, read with one
    /// paginated `DescribeAutoScalingGroups` for all of them; EC2's image
    /// and state are read (`DescribeInstances`) only for the members
    /// `detail` selects, the others keep `None`. A simulator that already
    /// knows a member needs only its lifecycle state, and most of moto's
    /// time under many groups went into describing known instances again.
    pub async fn members_of(
        &self,
        groups: &[String],
        detail: impl Fn(&str) -> bool,
    ) -> Result<BTreeMap<String, Vec<Member>>, String> {
        let mut found: BTreeMap<String, Vec<Member>> = BTreeMap::new();
        for names in groups.chunks(GROUPS_PER_CALL) {
            let mut pages = self
                .autoscaling
                .describe_auto_scaling_groups()
                .set_auto_scaling_group_names(Some(names.to_vec()))
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| message("autoscaling:DescribeAutoScalingGroups", e))?;
                for g in page.auto_scaling_groups() {
                    let Some(name) = g.auto_scaling_group_name() else {
                        continue;
                    };
                    if !names.iter().any(|n| n == name) {
                        continue;
                    }
                    let members = g
                        .instances()
                        .iter()
                        .filter_map(|i| {
                            Some(Member {
                                instance_id: i.instance_id()?.to_owned(),
                                lifecycle: i
                                    .lifecycle_state()
                                    .map(|s| s.as_str().to_owned())
                                    .unwrap_or_default(),
                                availability_zone: i
                                    .availability_zone()
                                    .unwrap_or_default()
                                    .to_owned(),
                                instance_type: i.instance_type().unwrap_or_default().to_owned(),
                                image_id: None,
                                ec2_state: None,
                            })
                        })
                        .collect();
                    found.insert(name.to_owned(), members);
                }
            }
        }
        let ids: Vec<String> = found
            .values()
            .flatten()
            .map(|m| m.instance_id.clone())
            .filter(|id| detail(id))
            .collect();
        for chunk in ids.chunks(IDS_PER_CALL) {
            // A filter (not InstanceIds) so that an id EC2 does not know yet
            // is left out instead of failing the whole call.
            let mut pages = self
                .ec2
                .describe_instances()
                .filters(
                    Filter::builder()
                        .name("instance-id")
                        .set_values(Some(chunk.to_vec()))
                        .build(),
                )
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| message("ec2:DescribeInstances", e))?;
                for instance in page.reservations().iter().flat_map(|r| r.instances()) {
                    let Some(id) = instance.instance_id() else {
                        continue;
                    };
                    let Some(m) = found.values_mut().flatten().find(|m| m.instance_id == id) else {
                        continue;
                    };
                    m.image_id = instance.image_id().map(str::to_owned);
                    m.ec2_state = instance
                        .state()
                        .and_then(|s| s.name())
                        .map(|n| n.as_str().to_owned());
                    if m.availability_zone.is_empty() {
                        m.availability_zone = instance
                            .placement()
                            .and_then(|p| p.availability_zone())
                            .unwrap_or_default()
                            .to_owned();
                    }
                }
            }
        }
        Ok(found)
    }

    /// Reads an image's tags and what they make its instances do.
    pub async fn image(&self, image_id: &str) -> Result<ImageBehaviour, ImageError> {
        let out = self
            .ec2
            .describe_images()
            .image_ids(image_id)
            .send()
            .await
            .map_err(|e| {
                let text = DisplayErrorContext(&e).to_string();
                if text.contains("InvalidAMIID") {
                    ImageError::NotFound(image_id.to_owned())
                } else {
                    ImageError::Describe {
                        image: image_id.to_owned(),
                        message: text,
                    }
                }
            })?;
        let image = out
            .images()
            .iter()
            .find(|i| i.image_id() == Some(image_id))
            .ok_or_else(|| ImageError::NotFound(image_id.to_owned()))?;
        ImageBehaviour::from_tags(
            image
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?, t.value().unwrap_or_default()))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(lifecycle: &str, ec2: Option<&str>) -> Member {
        Member {
            instance_id: "i-1".into(),
            lifecycle: lifecycle.into(),
            availability_zone: "us-east-1a".into(),
            instance_type: "t3.micro".into(),
            image_id: Some("ami-1".into()),
            ec2_state: ec2.map(str::to_owned),
        }
    }

    #[test]
    fn which_members_run_a_machine() {
        for (lifecycle, ec2, wants, leaving) in [
            ("InService", Some("running"), true, false),
            ("Pending", Some("pending"), true, false),
            ("Pending:Wait", Some("running"), true, false),
            ("Standby", Some("running"), true, false),
            ("InService", None, false, false),
            ("InService", Some("terminated"), false, true),
            ("Terminating", Some("running"), false, true),
            ("Terminating:Wait", Some("running"), false, true),
            ("Terminated", Some("terminated"), false, true),
            ("Detaching", Some("running"), false, false),
            ("Detached", Some("running"), false, true),
            ("Warmed:Running", Some("running"), false, false),
        ] {
            let m = member(lifecycle, ec2);
            assert_eq!(m.wants_machine(), wants, "{lifecycle} {ec2:?}");
            assert_eq!(m.leaving(), leaving, "{lifecycle} {ec2:?}");
        }
    }
}
