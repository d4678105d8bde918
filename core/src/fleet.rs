//! The plain data a rollout reasons over: an Auto Scaling group and its
//! members, EC2 instances, the launch template version a group runs, and an
//! image of the artifact registry. The `rollgate` crate's AWS layer fills
//! these from the SDK; nothing here knows how.

use std::collections::BTreeMap;
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

/// What a plan needs of a launch template version: which template, which
/// version, and the image it launches. (The full launch data stays with the
/// AWS layer, which copies it whole.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateVersion {
    /// `lt-...`.
    pub template_id: String,
    /// The template's name.
    pub template_name: String,
    /// The version number.
    pub version_number: i64,
    /// The AMI this version launches, when it names one.
    pub image_id: Option<String>,
}

/// An AMI as the registry sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// `ami-...`.
    pub image_id: String,
    /// The AMI name (free text, for people).
    pub name: String,
    /// The [`ARTIFACT_TAG`] value, `None` for an untagged image.
    pub artifact: Option<String>,
    /// The [`VERSION_TAG`] value, `None` when not tagged.
    pub version: Option<String>,
    /// EC2's image state: `available`, `pending`, `failed`, ...; only
    /// available images can launch.
    pub state: String,
    /// When the AMI was created (one-second resolution in some emulators).
    #[serde(with = "humantime_serde")]
    pub creation_date: Option<SystemTime>,
    /// Every tag of the image (behaviour tags of the sandbox included).
    pub tags: BTreeMap<String, String>,
}

impl Image {
    /// Whether EC2 can launch it.
    pub fn is_available(&self) -> bool {
        self.state == "available"
    }
}
