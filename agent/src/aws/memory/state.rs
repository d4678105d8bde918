//! The world of a [`super::MemoryFleet`] and the rules that change it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, UNIX_EPOCH};

use crate::aws::{
    Error, FailureKind, Group, GroupInstance, Instance, LaunchTemplateRef, LaunchTemplateVersion,
    Result,
};

mod templates;

const ZONE: &str = "memory-1a";

#[derive(Debug, Default)]
pub(super) struct State {
    /// Auto Scaling groups by name.
    groups: BTreeMap<String, MemGroup>,
    /// Every instance ever launched, terminated ones included (EC2 keeps
    /// showing them for a while too).
    instances: BTreeMap<String, MemInstance>,
    /// Launch templates by id.
    templates: BTreeMap<String, MemTemplate>,
    /// Source of ids and launch times, so runs are deterministic.
    sequence: u64,
    /// Whether new instances start `Pending` instead of `InService`.
    pub(super) hold_pending: bool,
    /// Injected failures left, per call.
    pub(super) faults: BTreeMap<&'static str, u32>,
    /// Log of the calls that changed something.
    pub(super) calls: Vec<String>,
}

#[derive(Debug)]
pub(super) struct MemGroup {
    min: i32,
    max: i32,
    desired: i32,
    template: LaunchTemplateRef,
    /// Live members (not terminated), oldest first.
    members: Vec<String>,
    pub(super) suspended: BTreeSet<String>,
}

#[derive(Debug)]
struct MemInstance {
    image_id: String,
    lifecycle: &'static str,
    ec2_state: &'static str,
    protected: bool,
    sequence: u64,
}

#[derive(Debug)]
struct MemTemplate {
    name: String,
    versions: BTreeMap<i64, LaunchTemplateVersion>,
    default: i64,
    /// Client tokens of created versions, as AWS remembers them.
    tokens: BTreeMap<String, i64>,
}

fn validation(call: &'static str, resource: String, message: String) -> Error {
    Error::Api {
        call,
        resource,
        kind: FailureKind::Service,
        code: Some("ValidationError".to_owned()),
        status: Some(400),
        message,
    }
}

impl State {
    fn next(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }

    pub(super) fn add_group(
        &mut self,
        name: &str,
        template_id: &str,
        version: i64,
        min: i32,
        max: i32,
        desired: i32,
    ) -> Result<()> {
        let call = "autoscaling:CreateAutoScalingGroup";
        if !(min <= desired && desired <= max) {
            return Err(validation(
                call,
                format!("group {name}"),
                "min <= desired <= max".into(),
            ));
        }
        let group = MemGroup {
            min,
            max,
            desired,
            template: self.template_ref(call, name, template_id, version)?,
            members: Vec::new(),
            suspended: BTreeSet::new(),
        };
        self.groups.insert(name.to_owned(), group);
        self.reconcile(name);
        Ok(())
    }

    pub(super) fn group_mut(&mut self, call: &'static str, name: &str) -> Result<&mut MemGroup> {
        self.groups
            .get_mut(name)
            .ok_or_else(|| Error::not_found(call, format!("group {name}"), ""))
    }

    pub(super) fn describe_group(&self, name: &str) -> Result<Group> {
        let g = self.groups.get(name).ok_or_else(|| {
            Error::not_found(
                "autoscaling:DescribeAutoScalingGroups",
                format!("group {name}"),
                "",
            )
        })?;
        let instances = g
            .members
            .iter()
            .filter_map(|id| Some((id, self.instances.get(id)?)))
            .map(|(id, i)| GroupInstance {
                instance_id: id.clone(),
                lifecycle_state: i.lifecycle.to_owned(),
                health_status: "Healthy".to_owned(),
                protected_from_scale_in: i.protected,
                availability_zone: ZONE.to_owned(),
            })
            .collect();
        Ok(Group {
            name: name.to_owned(),
            min_size: g.min,
            max_size: g.max,
            desired_capacity: g.desired,
            launch_template: Some(g.template.clone()),
            instances,
            suspended_processes: g.suspended.iter().cloned().collect(),
        })
    }

    pub(super) fn describe_instances(&self, ids: &[String]) -> Vec<Instance> {
        ids.iter()
            .filter_map(|id| Some((id, self.instances.get(id)?)))
            .map(|(id, i)| Instance {
                instance_id: id.clone(),
                image_id: i.image_id.clone(),
                state: i.ec2_state.to_owned(),
                private_ip: Some(format!(
                    "10.0.{}.{}",
                    (i.sequence / 250) % 250,
                    i.sequence % 250 + 1
                )),
                availability_zone: ZONE.to_owned(),
                launch_time: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000 + i.sequence)),
            })
            .collect()
    }

    pub(super) fn set_size(
        &mut self,
        group: &str,
        min: Option<i32>,
        max: Option<i32>,
    ) -> Result<()> {
        let call = "autoscaling:UpdateAutoScalingGroup";
        let g = self.group_mut(call, group)?;
        let (min, max) = (min.unwrap_or(g.min), max.unwrap_or(g.max));
        if min > max || min < 0 {
            return Err(validation(
                call,
                format!("group {group}"),
                format!("min {min} must be <= max {max}"),
            ));
        }
        (g.min, g.max) = (min, max);
        g.desired = g.desired.clamp(min, max);
        self.reconcile(group);
        Ok(())
    }

    pub(super) fn set_desired(&mut self, group: &str, desired: i32) -> Result<()> {
        let call = "autoscaling:SetDesiredCapacity";
        let g = self.group_mut(call, group)?;
        if desired < g.min || desired > g.max {
            let message = format!(
                "New SetDesiredCapacity value {desired} is outside min {} .. max {}",
                g.min, g.max
            );
            return Err(validation(call, format!("group {group}"), message));
        }
        g.desired = desired;
        self.reconcile(group);
        Ok(())
    }

    pub(super) fn set_protection(
        &mut self,
        group: &str,
        ids: &[String],
        protected: bool,
    ) -> Result<()> {
        let call = "autoscaling:SetInstanceProtection";
        let g = self.group_mut(call, group)?;
        if let Some(stranger) = ids.iter().find(|id| !g.members.contains(id)) {
            let message =
                format!("The instance {stranger} is not part of Auto Scaling group {group}");
            return Err(validation(call, format!("group {group}"), message));
        }
        for id in ids {
            if let Some(i) = self.instances.get_mut(id) {
                i.protected = protected;
            }
        }
        Ok(())
    }

    pub(super) fn terminate(&mut self, id: &str, decrement: bool) -> Result<()> {
        let call = "autoscaling:TerminateInstanceInAutoScalingGroup";
        let Some(group) = self.group_of(id) else {
            return Ok(()); // Unknown, terminated or not a member: already gone.
        };
        let g = self.group_mut(call, &group)?;
        if decrement {
            if g.desired - 1 < g.min {
                let message = format!(
                    "Currently, desiredSize equals minSize ({}). Terminating instance without replacement will violate group's min size constraint.",
                    g.min
                );
                return Err(validation(call, format!("instance {id}"), message));
            }
            g.desired -= 1;
        }
        g.members.retain(|m| m != id);
        self.mark_terminated(id);
        self.reconcile(&group);
        Ok(())
    }

    pub(super) fn lose_instance(&mut self, id: &str) {
        if let Some(group) = self.group_of(id) {
            if let Some(g) = self.groups.get_mut(&group) {
                g.members.retain(|m| m != id);
            }
            self.mark_terminated(id);
            self.reconcile(&group);
        } else {
            self.mark_terminated(id);
        }
    }

    pub(super) fn complete_launches(&mut self) {
        for i in self
            .instances
            .values_mut()
            .filter(|i| i.lifecycle == "Pending")
        {
            (i.lifecycle, i.ec2_state) = ("InService", "running");
        }
    }

    pub(super) fn images_in_group(&self, group: &str) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for id in self
            .groups
            .get(group)
            .map(|g| g.members.as_slice())
            .unwrap_or_default()
        {
            if let Some(i) = self.instances.get(id) {
                *counts.entry(i.image_id.clone()).or_default() += 1;
            }
        }
        counts
    }

    fn group_of(&self, id: &str) -> Option<String> {
        self.groups
            .iter()
            .find(|(_, g)| g.members.iter().any(|m| m == id))
            .map(|(name, _)| name.clone())
    }

    fn mark_terminated(&mut self, id: &str) {
        if let Some(i) = self.instances.get_mut(id) {
            (i.lifecycle, i.ec2_state, i.protected) = ("Terminated", "terminated", false);
        }
    }

    /// Launches or scales in until the live members match the desired
    /// capacity (protected instances are never scaled in).
    fn reconcile(&mut self, group: &str) {
        let Some(g) = self.groups.get(group) else {
            return;
        };
        let live = i32::try_from(g.members.len()).unwrap_or(i32::MAX);
        if live < g.desired {
            let image = self
                .template_version(&g.template.id, &g.template.version)
                .and_then(|v| v.image_id.clone())
                .unwrap_or_default();
            for _ in live..g.desired {
                let sequence = self.next();
                let id = format!("i-{sequence:017x}");
                let (lifecycle, ec2_state) = if self.hold_pending {
                    ("Pending", "pending")
                } else {
                    ("InService", "running")
                };
                let instance = MemInstance {
                    image_id: image.clone(),
                    lifecycle,
                    ec2_state,
                    protected: false,
                    sequence,
                };
                self.instances.insert(id.clone(), instance);
                if let Some(g) = self.groups.get_mut(group) {
                    g.members.push(id);
                }
            }
        } else if live > g.desired {
            let excess = usize::try_from(live - g.desired).unwrap_or(0);
            let victims: Vec<String> = g
                .members
                .iter()
                .filter(|id| self.instances.get(*id).is_some_and(|i| !i.protected))
                .take(excess)
                .cloned()
                .collect();
            for id in &victims {
                self.mark_terminated(id);
            }
            if let Some(g) = self.groups.get_mut(group) {
                g.members.retain(|m| !victims.contains(m));
            }
        }
    }
}
