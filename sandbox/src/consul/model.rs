//! The records the emulated cluster stores: nodes, services, checks, KV
//! entries and sessions, each with the raft indexes Consul keeps on them.
//!
//! These are internal shapes; what clients see is rendered from them by
//! [`super::views`]. Records must never hold anything that outlives the
//! store except a check's runner guard, whose drop stops the runner.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio_util::sync::DropGuard;

/// Status of a health check, as Consul names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// Healthy.
    Passing,
    /// Degraded (HTTP 429, or set by the check's owner).
    Warning,
    /// Failing.
    Critical,
}

impl Status {
    /// Consul's word for the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Passing => "passing",
            Status::Warning => "warning",
            Status::Critical => "critical",
        }
    }

    /// Parses Consul's word for a status.
    pub fn parse(word: &str) -> Option<Status> {
        match word {
            "passing" => Some(Status::Passing),
            "warning" => Some(Status::Warning),
            "critical" => Some(Status::Critical),
            _ => None,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// CheckID of the node liveness check every Consul agent has.
pub const SERF_CHECK_ID: &str = "serfHealth";
/// Prefix of the check ID Consul adds for service maintenance mode.
pub const SERVICE_MAINT_PREFIX: &str = "_service_maintenance:";

/// A node: one simulated Consul agent.
#[derive(Debug, Clone)]
pub(crate) struct NodeRecord {
    /// Node name (`node-1`).
    pub name: String,
    /// Node ID, a UUID that survives a state-losing restart.
    pub id: String,
    /// The node's IP address.
    pub address: String,
    /// Node metadata.
    pub meta: BTreeMap<String, String>,
    /// Where this node's agent HTTP API listens.
    pub http_addr: SocketAddr,
    /// Raft index of the registration.
    pub create_index: u64,
    /// Raft index of the last change.
    pub modify_index: u64,
}

/// An address and port in `TaggedAddresses` of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaggedAddress {
    pub address: String,
    pub port: u16,
}

/// A service definition as registered with an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceDef {
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    pub address: String,
    pub port: u16,
    pub meta: BTreeMap<String, String>,
    pub enable_tag_override: bool,
    pub tagged_addresses: BTreeMap<String, TaggedAddress>,
    /// DNS weights (passing, warning).
    pub weights: (i64, i64),
}

/// A registered service instance on a node.
#[derive(Debug, Clone)]
pub(crate) struct ServiceRecord {
    pub node: String,
    pub def: ServiceDef,
    pub create_index: u64,
    pub modify_index: u64,
}

/// How a check decides its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CheckKind {
    /// Critical unless updated through the agent API within the TTL.
    Ttl(Duration),
    /// The agent requests a URL every interval.
    Http {
        url: String,
        method: String,
        header: BTreeMap<String, Vec<String>>,
        tls_skip_verify: bool,
        interval: Duration,
        timeout: Duration,
    },
    /// The agent opens a TCP connection every interval.
    Tcp {
        address: String,
        interval: Duration,
        timeout: Duration,
    },
    /// The node liveness check, set by the emulated gossip layer.
    Serf,
    /// The check service maintenance mode adds.
    Maintenance,
}

impl CheckKind {
    /// Consul's `Type` of the check.
    pub fn type_name(&self) -> &'static str {
        match self {
            CheckKind::Ttl(_) => "ttl",
            CheckKind::Http { .. } => "http",
            CheckKind::Tcp { .. } => "tcp",
            CheckKind::Serf => "",
            CheckKind::Maintenance => "maintenance",
        }
    }
}

/// A check definition as registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckDef {
    pub id: String,
    pub name: String,
    pub notes: String,
    /// Empty for node-level checks.
    pub service_id: String,
    pub kind: CheckKind,
    pub deregister_after: Option<Duration>,
    /// Status given at registration; Consul starts checks critical otherwise.
    pub initial_status: Option<Status>,
}

/// A registered check with its current state.
#[derive(Debug)]
pub(crate) struct CheckRecord {
    pub node: String,
    pub def: CheckDef,
    pub status: Status,
    pub output: String,
    pub service_name: String,
    pub service_tags: Vec<String>,
    pub create_index: u64,
    pub modify_index: u64,
    /// When a TTL check expires unless updated.
    pub ttl_deadline: Option<Instant>,
    /// Since when the check has been critical (for the reaper).
    pub critical_since: Option<Instant>,
    /// Identifies this registration, so a runner of a replaced check stops.
    pub generation: u64,
    /// Dropping this stops the check's runner task.
    pub runner: Option<DropGuard>,
    /// Output the agent holds but has not synced to the catalog yet (an
    /// output-only change waits for `check_update_interval`, as in Consul).
    pub local_output: Option<String>,
    /// When `local_output` reaches the catalog.
    pub output_sync_due: Option<Instant>,
}

impl CheckRecord {
    /// The output as the check's own agent sees it (newest).
    pub fn agent_output(&self) -> &str {
        self.local_output.as_deref().unwrap_or(&self.output)
    }
}

/// A KV entry.
#[derive(Debug, Clone)]
pub(crate) struct KvEntry {
    pub key: String,
    pub value: Vec<u8>,
    pub flags: u64,
    pub lock_index: u64,
    pub session: Option<String>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// What happens to a session's locks when it is invalidated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Behavior {
    Release,
    Delete,
}

impl Behavior {
    pub fn as_str(self) -> &'static str {
        match self {
            Behavior::Release => "release",
            Behavior::Delete => "delete",
        }
    }
}

/// A session.
#[derive(Debug, Clone)]
pub(crate) struct SessionRecord {
    pub id: String,
    pub name: String,
    pub node: String,
    pub lock_delay: Duration,
    pub behavior: Behavior,
    /// TTL as given (Consul echoes the string).
    pub ttl: String,
    /// Node check IDs; `None` renders as `null`.
    pub node_checks: Option<Vec<String>>,
    /// Service check IDs (`ServiceChecks[].ID`).
    pub service_checks: Option<Vec<String>>,
    /// The deprecated `Checks` field, kept only when it says something.
    pub legacy_checks: Option<Vec<String>>,
    pub create_index: u64,
    pub modify_index: u64,
    /// When the session is invalidated unless renewed (2 x TTL, as Consul).
    pub expires: Option<Instant>,
}

impl SessionRecord {
    /// Every node check ID the session depends on.
    pub fn all_node_checks(&self) -> impl Iterator<Item = &String> {
        self.node_checks
            .iter()
            .flatten()
            .chain(self.legacy_checks.iter().flatten())
    }
}
