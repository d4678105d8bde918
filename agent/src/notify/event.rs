//! What rollgate tells people about: health alerts, rollout events and
//! alerts about the watcher's own blind spots, as one serialisable [`Event`].
//!
//! An event carries its dedup key: enqueueing the same event twice (a crash
//! between enqueueing and recording that it was enqueued, two replicas
//! computing the same notice) makes one outbox entry, so one message. Keys
//! are derived from persisted state (a group's start and sequence number, a
//! rollout's ID and stage), never from the time the code happened to run.
//!
//! This module is pure data: it never renders, routes or sends.

use serde::{Deserialize, Serialize};

use crate::consul::types::CheckStatus;

/// Milliseconds since the Unix epoch: wall-clock time that survives a
/// restart (outbox and watcher state are persisted with it).
pub type UnixMillis = u64;

/// The current wall-clock time in [`UnixMillis`].
pub fn now_ms() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How urgent an event is; routes can require a minimum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing (a rollout started, a batch is healthy).
    Info,
    /// Needs attention soon (a check warns).
    Warning,
    /// Needs attention now (a check is critical, a rollout failed).
    Critical,
}

impl Severity {
    /// The word used in messages and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    /// The severity of a non-passing check status.
    pub fn of_status(status: CheckStatus) -> Self {
        match status {
            CheckStatus::Passing => Severity::Info,
            CheckStatus::Warning => Severity::Warning,
            CheckStatus::Critical | CheckStatus::Unknown => Severity::Critical,
        }
    }
}

/// Whether an alert starts (or repeats) or ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// Something is wrong.
    Firing,
    /// It is fixed; sent only after a firing notice for the same thing.
    Resolved,
}

impl AlertStatus {
    /// `FIRING` or `RESOLVED`, as subjects show it.
    pub fn word(self) -> &'static str {
        match self {
            AlertStatus::Firing => "FIRING",
            AlertStatus::Resolved => "RESOLVED",
        }
    }
}

/// One notification-worthy event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Dedup key: one outbox entry, so one message per receiver, per key.
    /// Any text; the outbox escapes it into a Consul key.
    pub key: String,
    /// When it happened.
    pub at_ms: UnixMillis,
    /// Routing and display severity. A resolved notice keeps the severity of
    /// what it resolves, so it reaches the same receivers.
    pub severity: Severity,
    /// The service concerned, empty for node-level and watcher alerts;
    /// routes match on it.
    pub service: String,
    /// Tags of the service; routes match on them.
    pub tags: Vec<String>,
    /// What happened.
    pub body: EventBody,
}

/// The three families of events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// A (grouped) health notice from the watcher.
    Health(HealthNotice),
    /// A rollout event from the coordinator.
    Rollout(RolloutNotice),
    /// The watcher's own blind spots (Consul unreachable, no leader, stalled).
    Meta(MetaNotice),
}

impl EventBody {
    /// `health`, `rollout` or `meta`, as routes name the kinds.
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::Health(_) => "health",
            EventBody::Rollout(_) => "rollout",
            EventBody::Meta(_) => "meta",
        }
    }
}

/// A grouped health notice: the checks of one group (a service on a node,
/// by default) that fire, and those that resolved since the last notice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthNotice {
    /// Firing while any check fires; resolved when the last one resolved.
    pub status: AlertStatus,
    /// The group's service, empty for node checks (`serfHealth`).
    pub service: String,
    /// The group's node, empty when grouping by service only.
    pub node: String,
    /// The checks that fire now.
    pub firing: Vec<CheckInfo>,
    /// The checks that were notified as firing and are now passing (or gone).
    pub resolved: Vec<CheckInfo>,
    /// Service checks not notified because their node is down (`serfHealth`
    /// inhibits them): the alert names the node instead.
    pub inhibited: u32,
    /// A reminder of an unresolved alert (`repeat_interval`).
    pub repeat: bool,
}

/// One check in a health notice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckInfo {
    /// Node the check runs on.
    pub node: String,
    /// Check ID (`serfHealth`, `service:web-i-0abc`).
    pub check_id: String,
    /// Human name of the check.
    pub name: String,
    /// Status at the time of the notice; `None` when the check is gone.
    pub status: Option<CheckStatus>,
    /// Output of the last run (truncated).
    pub output: String,
    /// Service instance ID, empty for node checks.
    pub service_id: String,
    /// Service name, empty for node checks.
    pub service_name: String,
    /// EC2 instance ID derived from the service ID (`<service>-<i-…>`),
    /// empty when it does not have that form.
    pub instance: String,
    /// Since when the status holds.
    pub since_ms: UnixMillis,
    /// The check is gone because its node left Consul (the instance was
    /// terminated or stopped), not only deregistered.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub node_gone: bool,
    /// Its node or service instance is in maintenance.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub maintenance: bool,
}

impl CheckInfo {
    /// `passing`, `critical`, …, `in maintenance` when its instance or node
    /// is in maintenance, `deregistered` when the check is gone, and
    /// `terminated` when it is gone with its node.
    pub fn status_word(&self) -> &'static str {
        match self.status {
            None if self.node_gone => "terminated",
            None => "deregistered",
            Some(_) if self.maintenance => "in maintenance",
            Some(s) => s.as_str(),
        }
    }
}

/// The stages of a rollout that are notified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutStage {
    /// A plan waits for an operator's approval.
    PendingApproval,
    /// The rollout started.
    Started,
    /// A batch of new instances proved healthy.
    BatchHealthy,
    /// The rollout failed (the reason says why).
    Failed,
    /// The group was returned to the previous stable version.
    Reverted,
    /// Every instance runs the new version.
    Succeeded,
    /// The canary is healthy and waits for `rollgate promote` (or for its
    /// automatic promotion, said in the reason).
    CanaryWaiting,
    /// The canary was promoted; the remaining batches follow.
    Promoted,
    /// An operator paused the rollout.
    Paused,
    /// An operator resumed it.
    Resumed,
    /// An operator aborted it; a revert follows.
    Aborted,
}

impl RolloutStage {
    /// Snake-case name, used in dedup keys.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutStage::PendingApproval => "pending_approval",
            RolloutStage::Started => "started",
            RolloutStage::BatchHealthy => "batch_healthy",
            RolloutStage::Failed => "failed",
            RolloutStage::Reverted => "reverted",
            RolloutStage::Succeeded => "succeeded",
            RolloutStage::CanaryWaiting => "canary_waiting",
            RolloutStage::Promoted => "promoted",
            RolloutStage::Paused => "paused",
            RolloutStage::Resumed => "resumed",
            RolloutStage::Aborted => "aborted",
        }
    }

    /// Words for a subject line.
    pub fn title(self) -> &'static str {
        match self {
            RolloutStage::PendingApproval => "PLAN PENDING APPROVAL",
            RolloutStage::Started => "ROLLOUT STARTED",
            RolloutStage::BatchHealthy => "BATCH HEALTHY",
            RolloutStage::Failed => "ROLLOUT FAILED",
            RolloutStage::Reverted => "ROLLOUT REVERTED",
            RolloutStage::Succeeded => "ROLLOUT SUCCEEDED",
            RolloutStage::CanaryWaiting => "CANARY WAITING FOR PROMOTION",
            RolloutStage::Promoted => "CANARY PROMOTED",
            RolloutStage::Paused => "ROLLOUT PAUSED",
            RolloutStage::Resumed => "ROLLOUT RESUMED",
            RolloutStage::Aborted => "ROLLOUT ABORTED",
        }
    }

    /// The severity this stage is sent with.
    pub fn severity(self) -> Severity {
        match self {
            RolloutStage::Failed => Severity::Critical,
            RolloutStage::Reverted
            | RolloutStage::PendingApproval
            | RolloutStage::CanaryWaiting
            | RolloutStage::Aborted => Severity::Warning,
            _ => Severity::Info,
        }
    }
}

/// A rollout event, as the coordinator reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutNotice {
    /// The rollout (or plan) ID: the dedup key is built from it.
    pub rollout_id: String,
    /// Which stage; `None` only in a default value.
    pub stage: Option<RolloutStage>,
    /// The service rolled out (`web`).
    pub service: String,
    /// The Auto Scaling group.
    pub group: String,
    /// Version running before.
    pub old_version: String,
    /// Version rolled out.
    pub new_version: String,
    /// AMI running before.
    pub old_ami: String,
    /// AMI rolled out.
    pub new_ami: String,
    /// The plan, in words (instances to replace, batches), when relevant.
    pub plan: String,
    /// Why it failed or was reverted: names the instance, check, status,
    /// output and deadline.
    pub reason: String,
    /// For `batch_healthy`: which batch (1-based).
    pub batch: Option<u32>,
    /// For `batch_healthy`: of how many.
    pub batches: Option<u32>,
    /// For stages that can happen more than once in a rollout (`paused`,
    /// `resumed`): which time, so each is its own message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordinal: Option<u32>,
}

/// The watcher's own blind spots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetaKind {
    /// The health watch has failed for longer than `unreachable_after`.
    ConsulUnreachable,
    /// Consul reports no cluster leader for longer than `no_leader_after`.
    NoLeader,
    /// The health watch got neither an answer nor an error for longer than
    /// `stall_after`.
    WatchStalled,
    /// Consul's answer was filtered by ACLs
    /// (`X-Consul-Results-Filtered-By-ACLs`): the token cannot see some
    /// services or nodes, whose checks are then neither resolved nor fired.
    HiddenByAcls,
}

impl MetaKind {
    /// Snake-case name, used in dedup keys.
    pub fn as_str(self) -> &'static str {
        match self {
            MetaKind::ConsulUnreachable => "consul_unreachable",
            MetaKind::NoLeader => "no_leader",
            MetaKind::WatchStalled => "watch_stalled",
            MetaKind::HiddenByAcls => "hidden_by_acls",
        }
    }

    /// Words for a subject line.
    pub fn title(self) -> &'static str {
        match self {
            MetaKind::ConsulUnreachable => "Consul unreachable: health alerts are blind",
            MetaKind::NoLeader => "Consul cluster has no leader",
            MetaKind::WatchStalled => "health watch stopped advancing",
            MetaKind::HiddenByAcls => {
                "Consul hides part of the health state from the watcher's token"
            }
        }
    }
}

/// An alert about the watcher itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaNotice {
    /// What is wrong.
    pub kind: MetaKind,
    /// Firing or resolved.
    pub status: AlertStatus,
    /// Since when.
    pub since_ms: UnixMillis,
    /// The last error or observation, for the operator.
    pub detail: String,
}

impl Event {
    /// A rollout event; its dedup key is
    /// `rollout/<id>/<stage>[/<batch>][/<ordinal>]`, so
    /// the coordinator may enqueue it again after a restart without a
    /// second message.
    pub fn rollout(notice: RolloutNotice, tags: Vec<String>, at_ms: UnixMillis) -> Self {
        let stage = notice.stage.unwrap_or(RolloutStage::Started);
        let mut key = format!("rollout/{}/{}", notice.rollout_id, stage.as_str());
        for n in [notice.batch, notice.ordinal].into_iter().flatten() {
            key.push_str(&format!("/{n}"));
        }
        Self {
            key,
            at_ms,
            severity: stage.severity(),
            service: notice.service.clone(),
            tags,
            body: EventBody::Rollout(RolloutNotice {
                stage: Some(stage),
                ..notice
            }),
        }
    }

    /// A meta-alert; its dedup key is `meta/<kind>/<since>/<status>`.
    pub fn meta(notice: MetaNotice, at_ms: UnixMillis) -> Self {
        Self {
            key: format!(
                "meta/{}/{}/{}",
                notice.kind.as_str(),
                notice.since_ms,
                notice.status.word().to_ascii_lowercase()
            ),
            at_ms,
            severity: Severity::Critical,
            service: String::new(),
            tags: Vec::new(),
            body: EventBody::Meta(notice),
        }
    }
}

impl Event {
    /// The story this notice belongs to: its alert group's episode
    /// (`health/<group>/<since>`), its rollout (`rollout/<id>`), or its
    /// meta-alert (`meta/<kind>/<since>`). Per receiver, a story's notices
    /// are delivered in [`Event::position`] order and threaded together.
    pub fn story(&self) -> String {
        match &self.body {
            EventBody::Rollout(r) => format!("rollout/{}", r.rollout_id),
            EventBody::Meta(m) => format!("meta/{}/{}", m.kind.as_str(), m.since_ms),
            EventBody::Health(_) => self
                .key
                .rsplit_once('/')
                .map(|(story, _)| story.to_string())
                .unwrap_or_else(|| self.key.clone()),
        }
    }

    /// Where the notice stands in its story: a health notice by its
    /// sequence number (from the key), the others by time, then by how a
    /// rollout's stages follow each other (or firing before resolved).
    pub fn position(&self) -> (u64, u64) {
        match &self.body {
            EventBody::Health(_) => (
                self.key
                    .rsplit_once('/')
                    .and_then(|(_, seq)| seq.parse().ok())
                    .unwrap_or(0),
                self.at_ms,
            ),
            EventBody::Rollout(r) => (self.at_ms, r.stage.map(RolloutStage::rank).unwrap_or(0)),
            EventBody::Meta(m) => (self.at_ms, u64::from(m.status == AlertStatus::Resolved)),
        }
    }
}

impl RolloutStage {
    /// The order stages happen in within one rollout, for events stamped
    /// with the same millisecond.
    fn rank(self) -> u64 {
        match self {
            RolloutStage::PendingApproval => 0,
            RolloutStage::Started => 1,
            RolloutStage::CanaryWaiting => 2,
            RolloutStage::Promoted => 3,
            RolloutStage::BatchHealthy => 4,
            RolloutStage::Paused => 5,
            RolloutStage::Resumed => 6,
            RolloutStage::Failed | RolloutStage::Aborted => 7,
            RolloutStage::Reverted => 8,
            RolloutStage::Succeeded => 9,
        }
    }
}

/// The EC2 instance ID in a service ID of the form `<service>-i-<hex>`
/// (how the node agent names its registration), or empty.
pub fn instance_of(service_id: &str) -> String {
    match service_id.find("-i-") {
        Some(pos) => {
            let id = &service_id[pos + 1..];
            if id.len() > 2 && id[2..].chars().all(|c| c.is_ascii_alphanumeric()) {
                id.to_string()
            } else {
                String::new()
            }
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_keys_are_stable_per_stage_and_batch() {
        let n = RolloutNotice {
            rollout_id: "r-7".into(),
            stage: Some(RolloutStage::BatchHealthy),
            batch: Some(2),
            ..RolloutNotice::default()
        };
        let e = Event::rollout(n.clone(), vec![], 5);
        assert_eq!(e.key, "rollout/r-7/batch_healthy/2");
        assert_eq!(Event::rollout(n, vec![], 99).key, e.key);
        assert_eq!(e.severity, Severity::Info);
    }

    #[test]
    fn repeatable_stages_get_one_key_per_occurrence() {
        let pause = |n| RolloutNotice {
            rollout_id: "r-7".into(),
            stage: Some(RolloutStage::Paused),
            ordinal: Some(n),
            ..RolloutNotice::default()
        };
        let first = Event::rollout(pause(1), vec![], 5);
        assert_eq!(first.key, "rollout/r-7/paused/1");
        assert_ne!(Event::rollout(pause(2), vec![], 5).key, first.key);
    }

    #[test]
    fn instance_ids_come_from_agent_service_ids() {
        assert_eq!(instance_of("web-i-0abc123"), "i-0abc123");
        assert_eq!(instance_of("web"), "");
        assert_eq!(instance_of("web-i-"), "");
    }

    #[test]
    fn events_round_trip_as_json() {
        let e = Event::meta(
            MetaNotice {
                kind: MetaKind::NoLeader,
                status: AlertStatus::Firing,
                since_ms: 1,
                detail: "x".into(),
            },
            2,
        );
        let back: Event =
            serde_json::from_str(&serde_json::to_string(&e).expect("json")).expect("decodes");
        assert_eq!(back, e);
        assert_eq!(e.key, "meta/no_leader/1/firing");
    }
}
