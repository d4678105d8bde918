//! The `[coordinator]` section and the `[[services]]` it manages.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use rollgate_core::Params;
use rollgate_core::plan::PlanSettings;

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
    /// Session TTL of the leader lock (10s..1h): a backstop; without the
    /// liveness check a dead leader is replaced after about this (Consul may
    /// take twice as long) plus `lock_delay`.
    #[serde(with = "humantime_serde")]
    pub lock_ttl: Duration,
    /// TTL of this replica's liveness check (0s, or 1s..60s, shorter than
    /// `lock_ttl`), refreshed three times per TTL; the leader's session
    /// depends on it, so a dead leader is replaced after about this plus
    /// `lock_delay`. `0s` turns the check off (the session TTL decides).
    #[serde(with = "humantime_serde")]
    pub leader_check_ttl: Duration,
    /// Consul's lock-delay after a leader's session is lost (0s..60s): covers
    /// an AWS call a deposed leader had already sent (its KV writes are
    /// fenced atomically, its tasks stop the moment it learns).
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
    /// Approvals from Slack: the app whose buttons are answered over Socket
    /// Mode (`[coordinator.slack_app]`; off unless `receiver` is set).
    pub slack_app: crate::chatops::config::SlackAppConfig,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            registry_poll: Duration::from_secs(60),
            replica_name: String::new(),
            lock_ttl: Duration::from_secs(15),
            leader_check_ttl: Duration::from_secs(2),
            lock_delay: Duration::from_secs(2),
            aws_region: String::new(),
            aws_endpoint: String::new(),
            image_owners: vec!["self".into()],
            slack_app: Default::default(),
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
    #[serde(with = "params_toml")]
    pub rollout: Params,
    /// Who may approve, reject, pause, abort and promote from Slack's
    /// buttons: Slack user IDs (`U…`) and user group IDs (`S…`). Empty:
    /// nobody (the buttons answer "not allowed").
    pub slack_approvers: Vec<String>,
}

impl ServiceConfig {
    /// What the rollout core needs to plan this service.
    pub fn plan_settings(&self) -> PlanSettings<'_> {
        PlanSettings {
            service: &self.name,
            params: &self.rollout,
            approval_timeout: self.approval_timeout,
            expected_boot_time: self.expected_boot_time,
        }
    }
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
            rollout: Params::default(),
            slack_approvers: Vec::new(),
        }
    }
}

/// How `[services.rollout]` is spelled in the configuration: the core's
/// [`Params`] with durations as humantime strings (`"10s"`) and unknown keys
/// rejected. Used only through `#[serde(with = "params_toml")]`, so the
/// configuration deserialises into the core's type and the core knows
/// nothing of the file format.
pub(crate) mod params_toml {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Params;

    /// The file's shape; every field documented in config/rollgate.toml.
    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Section {
        #[serde(deserialize_with = "at_least_one")]
        batch_size: u32,
        #[serde(with = "humantime_serde")]
        min_healthy_time: Duration,
        #[serde(with = "humantime_serde")]
        healthy_deadline: Duration,
        #[serde(with = "humantime_serde")]
        failure_time: Duration,
        #[serde(with = "humantime_serde")]
        progress_deadline: Duration,
        canary: u32,
        auto_promote: bool,
        #[serde(with = "humantime_serde")]
        bake_time: Duration,
        auto_revert: bool,
    }

    impl Default for Section {
        fn default() -> Self {
            Section::from(&Params::default())
        }
    }

    impl From<&Params> for Section {
        fn from(p: &Params) -> Self {
            Section {
                batch_size: p.batch_size,
                min_healthy_time: p.min_healthy_time,
                healthy_deadline: p.healthy_deadline,
                failure_time: p.failure_time,
                progress_deadline: p.progress_deadline,
                canary: p.canary,
                auto_promote: p.auto_promote,
                bake_time: p.bake_time,
                auto_revert: p.auto_revert,
            }
        }
    }

    impl From<Section> for Params {
        fn from(s: Section) -> Self {
            Params {
                batch_size: s.batch_size,
                min_healthy_time: s.min_healthy_time,
                healthy_deadline: s.healthy_deadline,
                failure_time: s.failure_time,
                progress_deadline: s.progress_deadline,
                canary: s.canary,
                auto_promote: s.auto_promote,
                bake_time: s.bake_time,
                auto_revert: s.auto_revert,
            }
        }
    }

    /// A whole number of at least 1 that fits a `u32`. Said so to the
    /// operator in these words, where serde would say "expected u32".
    fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        struct AtLeastOne;
        impl serde::de::Visitor<'_> for AtLeastOne {
            type Value = u32;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "a whole number between 1 and {}", u32::MAX)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u32, E> {
                u32::try_from(v)
                    .ok()
                    .filter(|v| *v >= 1)
                    .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u32, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::invalid_value(serde::de::Unexpected::Signed(v), &self)),
                }
            }
        }
        d.deserialize_u32(AtLeastOne)
    }

    pub(crate) fn serialize<S: Serializer>(p: &Params, s: S) -> Result<S::Ok, S::Error> {
        Section::from(p).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Params, D::Error> {
        Section::deserialize(d).map(Params::from)
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
        if !self.leader_check_ttl.is_zero() {
            p.duration_in(
                "coordinator.leader_check_ttl",
                self.leader_check_ttl,
                s(1),
                s(60),
            );
            if self.leader_check_ttl >= self.lock_ttl {
                p.push(
                    "coordinator.leader_check_ttl",
                    humantime::format_duration(self.leader_check_ttl),
                    "must be shorter than coordinator.lock_ttl (or \"0s\" to turn the check off), or the check never notices a dead leader first",
                );
            }
        }
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
        self.slack_app.validate(p);
    }
}

/// What `rollgate coordinator` needs beyond the rules of every file: at
/// least one service to roll out. Part of
/// [`crate::config::Config::validate_for`], which the daemon runs at start
/// and `check-config --role coordinator` runs too.
pub(crate) fn validate_for_coordinator(config: &crate::config::Config, p: &mut Problems) {
    crate::chatops::config::validate_with(config, p);
    if config.services.is_empty() {
        p.push(
            "services",
            "",
            "`rollgate coordinator` needs at least one [[services]] entry to roll out \
             (see config/rollgate.toml)",
        );
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
        if !r.failure_time.is_zero() && r.failure_time >= r.healthy_deadline {
            p.push(
                &key("rollout.failure_time"),
                humantime::format_duration(r.failure_time),
                "must be shorter than rollout.healthy_deadline, which would always fail the batch first; \
                 set it lower, or \"0s\" to turn failing fast off",
            );
        }
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

#[cfg(test)]
mod failure_time_tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use crate::config::{Config, Sources};

    fn load(rollout: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollgate.toml");
        std::fs::write(
            &path,
            format!(
                "[[services]]\nname = \"web\"\nauto_scaling_group = \"web\"\n\
                 launch_template = \"web\"\nartifact = \"acmeinc/web\"\n\n\
                 [services.rollout]\n{rollout}"
            ),
        )
        .unwrap();
        Config::load(&Sources {
            file: Some((path, true)),
            env: Vec::new(),
        })
        .map_err(|e| e.to_string())
    }

    #[test]
    fn failure_time_is_read_defaulted_and_checked_against_healthy_deadline() {
        let c = load("").unwrap();
        assert_eq!(
            c.services[0].rollout.failure_time,
            Duration::from_secs(8),
            "the documented default"
        );
        let c = load("failure_time = \"3s\"\nhealthy_deadline = \"1m\"\n").unwrap();
        assert_eq!(c.services[0].rollout.failure_time, Duration::from_secs(3));
        // Zero turns failing fast off, whatever the deadline.
        let c =
            load("failure_time = \"0s\"\nhealthy_deadline = \"2s\"\nmin_healthy_time = \"1s\"\n")
                .unwrap();
        assert_eq!(c.services[0].rollout.fail_fast(), None);
        // Not shorter than healthy_deadline: named, with the way out. The
        // default (8s) counts too, when the deadline is shorter.
        for rollout in [
            "failure_time = \"1m\"\nhealthy_deadline = \"1m\"\n",
            "healthy_deadline = \"6s\"\nmin_healthy_time = \"1s\"\n",
        ] {
            let e = load(rollout).unwrap_err();
            assert!(e.contains("services[0].rollout.failure_time"), "{e}");
            assert!(e.contains("shorter than rollout.healthy_deadline"), "{e}");
            assert!(e.contains("\"0s\""), "{e}");
        }
        let e = load("failure_time = \"soon\"\n").unwrap_err();
        assert!(e.contains("failure_time"), "{e}");
    }
}
