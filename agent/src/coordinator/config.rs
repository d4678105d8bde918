//! The `[coordinator]` section and the `[[services]]` it manages.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Problems;

/// Settings of `rollgate coordinator` as a whole.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CoordinatorConfig {
    /// How often the artifact registry (AMI tags) is checked, in addition to
    /// the immediate trigger `rollgate publish` writes.
    #[serde(with = "humantime_serde")]
    pub registry_poll: Duration,
    /// Name of this replica in the leader lock; empty means the host name.
    pub replica_name: String,
    /// Session TTL of the leader lock (10s..1h): a dead leader is replaced
    /// after about this (Consul may take twice as long) plus `lock_delay`.
    #[serde(with = "humantime_serde")]
    pub lock_ttl: Duration,
    /// Consul's lock-delay after a leader's session is lost (0s..60s).
    #[serde(with = "humantime_serde")]
    pub lock_delay: Duration,
    /// AWS region; empty means the standard chain (`AWS_REGION`, profile,
    /// instance metadata).
    pub aws_region: String,
    /// AWS endpoint override (an emulator); empty means the standard
    /// `AWS_ENDPOINT_URL` or AWS itself.
    pub aws_endpoint: String,
    /// Owners whose images count as artifacts (`self`, or account IDs).
    pub image_owners: Vec<String>,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            registry_poll: Duration::from_secs(60),
            replica_name: String::new(),
            lock_ttl: Duration::from_secs(15),
            lock_delay: Duration::from_secs(15),
            aws_region: String::new(),
            aws_endpoint: String::new(),
            image_owners: vec!["self".into()],
        }
    }
}

/// How a plan gets approved.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Approval {
    /// An operator runs `rollgate approve`.
    Manual,
    /// Approved as soon as it is planned (environments that need no operator).
    Auto,
}

/// One service the coordinator rolls out: an Auto Scaling group, its launch
/// template, the artifact whose images it runs, and how to roll.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Service name: the Consul service the rollout gates on, and the name
    /// operators use (`rollgate plan web`).
    pub name: String,
    /// The Auto Scaling group running it.
    pub auto_scaling_group: String,
    /// Its launch template, by name or ID (`lt-...`). The coordinator owns
    /// the template's versions once it manages the service.
    pub launch_template: String,
    /// The artifact (`acmeinc/web`): images tagged `rollgate:artifact` with it.
    pub artifact: String,
    /// `manual` or `auto`.
    pub approval: Approval,
    /// An unanswered plan expires after this.
    #[serde(with = "humantime_serde")]
    pub approval_timeout: Duration,
    /// Typical time from launch to the app answering, for plan estimates only.
    #[serde(with = "humantime_serde")]
    pub expected_boot_time: Duration,
    /// How to roll.
    pub rollout: RolloutParams,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            auto_scaling_group: String::new(),
            launch_template: String::new(),
            artifact: String::new(),
            approval: Approval::Manual,
            approval_timeout: Duration::from_secs(72 * 3600),
            expected_boot_time: Duration::from_secs(60),
            rollout: RolloutParams::default(),
        }
    }
}

/// Rollout parameters (semantics: Nomad's update stanza and EC2 instance
/// refresh, restated).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutParams {
    /// New instances launched per step.
    pub batch_size: u32,
    /// A new instance must pass, without interruption, this long to count
    /// as healthy.
    #[serde(with = "humantime_serde")]
    pub min_healthy_time: Duration,
    /// A new instance not healthy by then fails the rollout.
    #[serde(with = "humantime_serde")]
    pub healthy_deadline: Duration,
    /// Restarts whenever an instance becomes healthy; expiry fails the
    /// rollout (a stuck rollout must not hang forever).
    #[serde(with = "humantime_serde")]
    pub progress_deadline: Duration,
    /// Launch this many first and pause until promoted.
    pub canary: u32,
    /// Promote the canary by itself after `bake_time`.
    pub auto_promote: bool,
    /// After the last batch (and for an auto-promoted canary), keep watching
    /// this long before declaring success.
    #[serde(with = "humantime_serde")]
    pub bake_time: Duration,
    /// On failure, return the group to the last stable image and version.
    pub auto_revert: bool,
}

impl Default for RolloutParams {
    fn default() -> Self {
        Self {
            batch_size: 1,
            min_healthy_time: Duration::from_secs(10),
            healthy_deadline: Duration::from_secs(300),
            progress_deadline: Duration::from_secs(600),
            canary: 0,
            auto_promote: false,
            bake_time: Duration::ZERO,
            auto_revert: true,
        }
    }
}

impl CoordinatorConfig {
    pub(crate) fn validate(&self, p: &mut Problems) {
        let s = Duration::from_secs;
        p.duration_in(
            "coordinator.registry_poll",
            self.registry_poll,
            s(1),
            s(24 * 3600),
        );
        p.duration_in("coordinator.lock_ttl", self.lock_ttl, s(10), s(3600));
        p.duration_in("coordinator.lock_delay", self.lock_delay, s(0), s(60));
        if !self.aws_endpoint.is_empty() && url::Url::parse(&self.aws_endpoint).is_err() {
            p.push(
                "coordinator.aws_endpoint",
                &self.aws_endpoint,
                "must be a URL",
            );
        }
        if self.image_owners.is_empty() {
            p.push(
                "coordinator.image_owners",
                "[]",
                "must name at least one owner (\"self\")",
            );
        }
    }
}

/// Checks every `[[services]]` entry; names are unique.
pub(crate) fn validate_services(services: &[ServiceConfig], p: &mut Problems) {
    let mut seen = std::collections::BTreeSet::new();
    for (i, svc) in services.iter().enumerate() {
        let key = |k: &str| format!("services[{i}].{k}");
        let dns =
            |v: &str| !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !dns(&svc.name) {
            p.push(
                &key("name"),
                &svc.name,
                "must be non-empty letters, digits and '-'",
            );
        } else if !seen.insert(svc.name.clone()) {
            p.push(
                &key("name"),
                &svc.name,
                "is used by another [[services]] entry",
            );
        }
        for (k, v) in [
            ("auto_scaling_group", &svc.auto_scaling_group),
            ("launch_template", &svc.launch_template),
            ("artifact", &svc.artifact),
        ] {
            if v.trim().is_empty() {
                p.push(&key(k), "", "is required");
            }
        }
        let r = &svc.rollout;
        let s = Duration::from_secs;
        if r.batch_size == 0 {
            p.push(&key("rollout.batch_size"), 0, "must be at least 1");
        }
        p.duration_in(
            &key("approval_timeout"),
            svc.approval_timeout,
            s(60),
            s(30 * 24 * 3600),
        );
        p.duration_in(
            &key("expected_boot_time"),
            svc.expected_boot_time,
            s(0),
            s(3600),
        );
        p.duration_in(
            &key("rollout.min_healthy_time"),
            r.min_healthy_time,
            s(0),
            s(3600),
        );
        p.duration_in(
            &key("rollout.healthy_deadline"),
            r.healthy_deadline,
            s(1),
            s(24 * 3600),
        );
        p.duration_in(
            &key("rollout.progress_deadline"),
            r.progress_deadline,
            s(1),
            s(24 * 3600),
        );
        p.duration_in(&key("rollout.bake_time"), r.bake_time, s(0), s(24 * 3600));
        if r.min_healthy_time >= r.healthy_deadline {
            p.push(
                &key("rollout.min_healthy_time"),
                humantime::format_duration(r.min_healthy_time),
                "must be shorter than rollout.healthy_deadline, or no instance can ever be healthy in time",
            );
        }
        if r.progress_deadline < r.healthy_deadline {
            p.push(
                &key("rollout.progress_deadline"),
                humantime::format_duration(r.progress_deadline),
                "must be at least rollout.healthy_deadline",
            );
        }
    }
}
