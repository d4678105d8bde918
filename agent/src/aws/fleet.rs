//! The plain data the [`Fleet`](super::Fleet) trait speaks: what a rollout
//! needs to know about an Auto Scaling group, its instances and its launch
//! template. No AWS SDK type appears in a public field; the one SDK value
//! that must travel (the full launch template data) is wrapped opaquely in
//! [`LaunchTemplateData`].

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// An Auto Scaling group as `DescribeAutoScalingGroups` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// The group's name, which is also its identifier.
    pub name: String,
    /// The floor the group never scales below; a surge may have to lower it
    /// back after raising it.
    pub min_size: i32,
    /// The ceiling; a surge needs `desired + batch <= max_size`.
    pub max_size: i32,
    /// How many instances the group is trying to run right now.
    pub desired_capacity: i32,
    /// The launch template (and the version, as the group pins it) that new
    /// instances start from. `None` for groups on a launch configuration or a
    /// mixed instances policy, which rollgate does not roll.
    pub launch_template: Option<LaunchTemplateRef>,
    /// Every instance the group currently tracks, in every lifecycle state.
    pub instances: Vec<GroupInstance>,
    /// Scaling processes suspended on the group (`AZRebalance`,
    /// `ReplaceUnhealthy`, ...), so a crashed rollout can tell what it left
    /// suspended.
    pub suspended_processes: Vec<String>,
}

impl Group {
    /// The instances in a given lifecycle state (`InService`, `Pending`, ...).
    pub fn instances_in<'a>(&'a self, state: &'a str) -> impl Iterator<Item = &'a GroupInstance> {
        self.instances
            .iter()
            .filter(move |i| i.lifecycle_state == state)
    }
}

/// A launch template as a group (or a rollout) refers to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchTemplateRef {
    /// `lt-...`: the stable identifier every call uses.
    pub id: String,
    /// The human name; empty when AWS did not report one.
    pub name: String,
    /// The version as the group holds it: a number (`"7"`), or `$Latest` /
    /// `$Default` for groups not created by rollgate. rollgate itself only
    /// ever pins numbers.
    pub version: String,
}

impl LaunchTemplateRef {
    /// The pinned version number, `None` for `$Latest`/`$Default`.
    pub fn version_number(&self) -> Option<i64> {
        self.version.parse().ok()
    }
}

/// One member of an Auto Scaling group (`DescribeAutoScalingGroups`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInstance {
    /// `i-...`.
    pub instance_id: String,
    /// Auto Scaling's lifecycle state: `Pending`, `InService`, `Standby`,
    /// `Terminating`, `Terminated`, `Detaching`, ... (as AWS spells it).
    pub lifecycle_state: String,
    /// Auto Scaling's own health view, `Healthy` or `Unhealthy` (not Consul's).
    pub health_status: String,
    /// Whether scale-in may pick this instance; protected instances are the
    /// ones a rollout keeps while it lowers the desired capacity.
    pub protected_from_scale_in: bool,
    /// Where it runs, for reports.
    pub availability_zone: String,
}

/// An EC2 instance as `DescribeInstances` reports it. The image is the truth
/// about what an instance runs: the launch template version a group reports
/// per instance is unreliable in some emulators, `image_id` is not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// `i-...`.
    pub instance_id: String,
    /// The AMI it was launched from.
    pub image_id: String,
    /// EC2 state name: `pending`, `running`, `shutting-down`, `terminated`,
    /// `stopping`, `stopped`.
    pub state: String,
    /// Its private IPv4 address, when it has one yet.
    pub private_ip: Option<String>,
    /// Where it runs.
    pub availability_zone: String,
    /// When EC2 launched it; `None` only if AWS did not say.
    #[serde(with = "humantime_serde")]
    pub launch_time: Option<SystemTime>,
}

/// One version of a launch template (`DescribeLaunchTemplateVersions`).
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchTemplateVersion {
    /// `lt-...`.
    pub template_id: String,
    /// The template's name.
    pub template_name: String,
    /// The version number; versions are immutable, so the number identifies
    /// the data.
    pub version_number: i64,
    /// The AMI this version launches, when it names one.
    pub image_id: Option<String>,
    /// The version's description, if any.
    pub description: Option<String>,
    /// Everything else the version launches with, ready to be sent back.
    pub data: LaunchTemplateData,
}

/// The full data of a launch template version, opaque on purpose: rollgate
/// copies it whole into a new version and changes only the image.
///
/// It holds the data in the form `CreateLaunchTemplateVersion` takes, so what
/// was read is exactly what will be sent. Two values compare equal when every
/// field does. Its `Debug` output redacts user data (the SDK marks it
/// sensitive).
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchTemplateData(pub(crate) aws_sdk_ec2::types::RequestLaunchTemplateData);

impl Default for LaunchTemplateData {
    fn default() -> Self {
        Self(aws_sdk_ec2::types::RequestLaunchTemplateData::builder().build())
    }
}

impl LaunchTemplateData {
    /// Data that launches `image_id` and sets nothing else (for fakes and
    /// tests).
    pub fn with_image_only(image_id: &str) -> Self {
        Self(
            aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                .image_id(image_id)
                .build(),
        )
    }

    /// The same data launching another image.
    pub fn with_image(&self, image_id: &str) -> Self {
        let mut data = self.0.clone();
        data.image_id = Some(image_id.to_owned());
        Self(data)
    }

    /// The AMI the data launches.
    pub fn image_id(&self) -> Option<&str> {
        self.0.image_id()
    }

    /// The instance type (`t3.micro`), for plans and reports.
    pub fn instance_type(&self) -> Option<&str> {
        self.0.instance_type().map(|t| t.as_str())
    }

    /// The security groups by id, for reports.
    pub fn security_group_ids(&self) -> &[String] {
        self.0.security_group_ids()
    }

    /// The base64 user data, if any.
    pub fn user_data(&self) -> Option<&str> {
        self.0.user_data()
    }
}
