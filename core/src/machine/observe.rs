//! What the executor saw this tick: the group, the instances, Consul health
//! per instance, pending operator commands and the values its own actions
//! returned. The machine trusts nothing else: every step recomputes from this
//! (Nomad's deployment watcher, bottlerocket's controller).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::fleet::{Group, GroupInstance, Instance};
use crate::health::CheckStatus;

use super::time::Timestamp;

/// One tick's view of the world, built by the executor from reads only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// `Fleet::describe_group`: capacity, template version, members with
    /// lifecycle state and scale-in protection, suspended processes.
    pub group: Group,
    /// `Fleet::describe_instances` for the group's members: the image each
    /// runs (the truth about "already on the target") and its EC2 state.
    pub instances: Vec<Instance>,
    /// Consul health by EC2 instance ID: the service instance whose Meta
    /// `instance_id` is that ID (the executor maps Consul's answer). A
    /// missing key means "not registered in Consul".
    pub health: BTreeMap<String, Health>,
    /// Operator commands not yet consumed, oldest first. The executor deletes
    /// them once it has persisted the state of the step that saw them.
    pub commands: Vec<OperatorCommand>,
    /// The number the last `CreateTemplateVersion` the executor performed
    /// for this rollout returned. The executor keeps it until the persisted
    /// spec has `target_template_version`; after a crash the machine asks
    /// again and the Fleet's idempotent create returns the same number.
    pub created_template_version: Option<i64>,
    /// When `group` and `instances` were read (the read's start), when
    /// that was before this step's `now`: the executor may step on a
    /// Consul event with the AWS view it already holds (EC2 has no change
    /// feed; a describe under load takes longer than a gate). `None`: read
    /// for this step. A deadline that rests on what AWS shows (an instance
    /// launched, in service, terminated) fails the rollout only on a view
    /// read after it ([`Observation::aws_at`]); timers that rest on
    /// Consul run on `now`.
    #[serde(default)]
    pub aws_read_at: Option<Timestamp>,
    /// When Consul first answered `health` as it is (the arrival of the
    /// blocking query's answer that changed it), when that was before this
    /// step's `now`: the executor follows health in the background and may
    /// step later than it learnt of a change (it was waiting for an AWS
    /// read, say). The timers that start on a health change
    /// (`min_healthy_time`, `failure_time`) start then, not at `now`.
    /// `None`: read for this step.
    #[serde(default)]
    pub health_read_at: Option<Timestamp>,
}

/// A service instance's health in Consul.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Every check (service and node) passes. Maintenance mode is a
    /// critical check, so it is not passing.
    pub all_passing: bool,
    /// The checks that do not pass, for failure reasons.
    pub failing: Vec<CheckFailure>,
}

/// A check that does not pass, with what a failure reason must name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckFailure {
    /// Consul check ID (`web-i-0abc:agent`, `serfHealth`).
    pub check_id: String,
    /// Its human name.
    pub name: String,
    /// Warning, critical or unknown (passing only on the way into
    /// [`Health::from_checks`]).
    pub status: CheckStatus,
    /// Its last output.
    pub output: String,
}

/// An operator command (`rollgate pause|resume|abort|promote`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum OperatorCommand {
    /// Freeze the rollout: no actions, deadlines suspended.
    Pause,
    /// Continue a paused rollout.
    Resume,
    /// Stop and revert. An operator's decision, not evidence against the
    /// image: the image is not marked failed.
    Abort {
        /// Who aborted.
        by: String,
        /// Why, as given.
        reason: String,
    },
    /// Let the canary go on (before it is healthy: go on as soon as it is).
    Promote,
}

impl Health {
    /// Every check passing.
    pub fn passing() -> Self {
        Self {
            all_passing: true,
            failing: Vec::new(),
        }
    }

    /// From every check of one service instance (service and node checks),
    /// passing ones included: those are dropped, the rest are the failures.
    pub fn from_checks(checks: impl IntoIterator<Item = CheckFailure>) -> Self {
        let failing: Vec<CheckFailure> = checks
            .into_iter()
            .filter(|c| c.status != CheckStatus::Passing)
            .map(|c| CheckFailure {
                output: c.output.trim().to_owned(),
                ..c
            })
            .collect();
        Self {
            all_passing: failing.is_empty(),
            failing,
        }
    }

    /// Merges the health of a second service instance that maps to the same
    /// EC2 instance (a stale registration): both must pass.
    pub fn merge(&mut self, other: Health) {
        self.all_passing &= other.all_passing;
        self.failing.extend(other.failing);
    }

    /// The failing checks in words: `check ID "name" is critical: output`.
    pub fn describe(&self) -> String {
        if self.failing.is_empty() {
            return "not passing in Consul".to_owned();
        }
        self.failing
            .iter()
            .map(|c| {
                format!(
                    "check {} \"{}\" is {}: {}",
                    c.check_id, c.name, c.status, c.output
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl Observation {
    /// The moment the AWS part shows, at the latest `now`.
    pub fn aws_at(&self, now: Timestamp) -> Timestamp {
        self.aws_read_at.map_or(now, |t| t.min(now))
    }

    /// The moment the health part shows, at the latest `now`.
    pub fn health_at(&self, now: Timestamp) -> Timestamp {
        self.health_read_at.map_or(now, |t| t.min(now))
    }

    /// The group member with this ID.
    pub fn member(&self, id: &str) -> Option<&GroupInstance> {
        self.group.instances.iter().find(|m| m.instance_id == id)
    }

    /// The image an instance runs, when EC2 reported it.
    pub fn image(&self, id: &str) -> Option<&str> {
        self.ec2(id).map(|i| i.image_id.as_str())
    }

    /// Consul health of an instance; `None` = not registered.
    pub fn health(&self, id: &str) -> Option<&Health> {
        self.health.get(id)
    }

    /// The template version the group pins, when it is a number.
    pub fn template_version(&self) -> Option<i64> {
        self.group
            .launch_template
            .as_ref()
            .and_then(|t| t.version_number())
    }

    /// A member that is, or will be, in service: not leaving the group and
    /// not shutting down in EC2. What "vanished" is measured against.
    pub fn alive(&self, id: &str) -> bool {
        let Some(m) = self.member(id) else {
            return false;
        };
        let leaving = ["Terminat", "Detach"]
            .iter()
            .any(|p| m.lifecycle_state.starts_with(p));
        let ec2_gone = self
            .ec2(id)
            .is_some_and(|i| matches!(i.state.as_str(), "shutting-down" | "terminated"));
        !leaving && !ec2_gone
    }

    /// IDs of the live members, in the group's order.
    pub fn alive_ids(&self) -> impl Iterator<Item = &str> {
        self.group
            .instances
            .iter()
            .map(|m| m.instance_id.as_str())
            .filter(|id| self.alive(id))
    }

    /// InService and every Consul check passing: one good observation. A
    /// healthy instance is one that stays so for `min_healthy_time`.
    pub fn passing(&self, id: &str) -> bool {
        self.in_service(id) && self.health(id).is_some_and(|h| h.all_passing)
    }

    /// Alive and InService in the group: what [`Observation::passing`]
    /// asks of AWS.
    pub fn in_service(&self, id: &str) -> bool {
        self.alive(id)
            && self
                .member(id)
                .is_some_and(|m| m.lifecycle_state == "InService")
    }

    /// Why an instance is not passing, naming its lifecycle state and every
    /// failing check with status and output (or "not registered in Consul").
    pub fn why_not_passing(&self, id: &str) -> String {
        let Some(m) = self.member(id) else {
            return "no longer in the group".to_owned();
        };
        let mut why = Vec::new();
        if m.lifecycle_state != "InService" {
            why.push(format!(
                "lifecycle state {}, not InService",
                m.lifecycle_state
            ));
        }
        match self.health(id) {
            None => why.push("not registered in Consul".to_owned()),
            Some(h) if !h.all_passing => why.push(h.describe()),
            Some(_) => {}
        }
        if why.is_empty() {
            "passing".to_owned()
        } else {
            why.join("; ")
        }
    }

    fn ec2(&self, id: &str) -> Option<&Instance> {
        self.instances.iter().find(|i| i.instance_id == id)
    }
}
