//! Consul's JSON shapes, with Consul's field names.
//!
//! Only the fields rollgate reads or writes are declared; unknown fields in
//! answers are ignored so newer Consul versions keep working. Optional fields
//! are skipped when empty on the way out, as Consul's own Go client does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use rollgate_core::health::CheckStatus;

/// Body of `PUT /v1/agent/service/register`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceRegistration {
    /// Stable service ID: registering again with it replaces the service.
    #[serde(rename = "ID")]
    pub id: String,
    /// Service name other services discover (`web`).
    pub name: String,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Address advertised for the service; empty means the node's address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// Port advertised for the service.
    #[serde(default)]
    pub port: u16,
    /// Metadata; rollgate maps instances through `instance_id`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    /// The checks of the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckDefinition>,
}

/// A check inside a service registration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CheckDefinition {
    /// Stable check ID (needed to update a TTL check).
    #[serde(rename = "CheckID")]
    pub check_id: String,
    /// Human name.
    pub name: String,
    /// Free text shown next to the check.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
    /// URL Consul requests for an HTTP check.
    #[serde(rename = "HTTP", default, skip_serializing_if = "String::is_empty")]
    pub http: String,
    /// `host:port` Consul connects to for a TCP check.
    #[serde(rename = "TCP", default, skip_serializing_if = "String::is_empty")]
    pub tcp: String,
    /// TTL of a TTL check (Go duration, `10s`).
    #[serde(rename = "TTL", default, skip_serializing_if = "String::is_empty")]
    pub ttl: String,
    /// How often Consul runs an HTTP/TCP check (Go duration).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interval: String,
    /// Time limit of one HTTP/TCP check run (Go duration).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub timeout: String,
    /// Initial status; Consul starts checks critical unless told otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<CheckStatus>,
    /// Consul deregisters the service when the check stays critical this long.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub deregister_critical_service_after: String,
}

/// A service as the local agent knows it (`GET /v1/agent/services`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AgentService {
    /// Service ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Service name.
    pub service: String,
    /// Tags.
    pub tags: Option<Vec<String>>,
    /// Metadata.
    pub meta: Option<BTreeMap<String, String>>,
    /// Port.
    pub port: u16,
    /// Address.
    pub address: String,
    /// Datacenter (newer Consul versions).
    pub datacenter: Option<String>,
    /// Raft index of the registration, in catalog answers.
    pub create_index: Option<u64>,
    /// Raft index of the last change, in catalog answers.
    pub modify_index: Option<u64>,
}

/// A check as health endpoints report it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HealthCheck {
    /// Node the check runs on.
    pub node: String,
    /// Check ID (`serfHealth`, `service:web-i-1`, ...).
    #[serde(rename = "CheckID")]
    pub check_id: String,
    /// Human name.
    pub name: String,
    /// Current status.
    pub status: Option<CheckStatus>,
    /// Notes set at registration (the maintenance reason lives here).
    pub notes: String,
    /// Output of the last run.
    pub output: String,
    /// Service the check belongs to; empty for node checks.
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    /// Name of that service.
    pub service_name: String,
    /// Tags of that service.
    pub service_tags: Option<Vec<String>>,
    /// Check type (`http`, `ttl`, ...), where Consul reports it.
    #[serde(rename = "Type")]
    pub kind: String,
    /// Raft index of creation.
    pub create_index: u64,
    /// Raft index of the last change.
    pub modify_index: u64,
}

impl HealthCheck {
    /// The status, unknown if absent.
    pub fn status(&self) -> CheckStatus {
        self.status.unwrap_or(CheckStatus::Unknown)
    }
}

/// A node in health and catalog answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Node {
    /// Node ID (UUID).
    #[serde(rename = "ID")]
    pub id: String,
    /// Node name.
    pub node: String,
    /// Node address.
    pub address: String,
    /// Datacenter.
    pub datacenter: String,
    /// Node metadata.
    pub meta: Option<BTreeMap<String, String>>,
}

/// One instance of a service with its node and checks
/// (`GET /v1/health/service/:service`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceEntry {
    /// The node.
    pub node: Node,
    /// The service instance.
    pub service: AgentService,
    /// Node checks and service checks together.
    pub checks: Vec<HealthCheck>,
}

/// `GET /v1/agent/self`, the parts rollgate uses.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AgentSelf {
    /// The agent's configuration.
    pub config: AgentSelfConfig,
}

/// `Config` inside `GET /v1/agent/self`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AgentSelfConfig {
    /// The agent's datacenter.
    pub datacenter: String,
    /// The agent's node name.
    pub node_name: String,
    /// The agent's node ID.
    #[serde(rename = "NodeID")]
    pub node_id: String,
}

/// A KV entry as Consul stores it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct KvPair {
    /// Full key.
    pub key: String,
    /// Base64 value as Consul sends it; see [`KvPair::value`].
    #[serde(rename = "Value")]
    pub raw_value: Option<String>,
    /// Opaque flags.
    pub flags: u64,
    /// How many times a lock on this key was acquired.
    pub lock_index: u64,
    /// Session holding the lock, if any.
    pub session: Option<String>,
    /// Raft index of creation.
    pub create_index: u64,
    /// Raft index of the last change; the `cas` token.
    pub modify_index: u64,
}

impl KvPair {
    /// The decoded value (empty when Consul sent `null`).
    pub fn value(&self) -> Result<Vec<u8>, base64::DecodeError> {
        use base64::Engine as _;
        match &self.raw_value {
            Some(v) => base64::engine::general_purpose::STANDARD.decode(v),
            None => Ok(Vec::new()),
        }
    }
}

/// A session (`GET /v1/session/info/:id`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SessionEntry {
    /// Session ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Human name.
    pub name: String,
    /// Node the session is tied to.
    pub node: String,
    /// Lock-delay in nanoseconds, as Consul reports it.
    pub lock_delay: u64,
    /// `release` or `delete`.
    pub behavior: String,
    /// TTL (Go duration), empty for none.
    #[serde(rename = "TTL")]
    pub ttl: String,
    /// Node checks the session depends on.
    pub node_checks: Option<Vec<String>>,
    /// Service checks the session depends on (Consul 1.7+).
    #[serde(default)]
    pub service_checks: Option<Vec<ServiceCheckRef>>,
    /// Raft index of creation.
    pub create_index: u64,
    /// Raft index of the last change.
    pub modify_index: u64,
}

/// Body of `PUT /v1/session/create`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SessionRequest {
    /// Human name (shows who holds a lock).
    pub name: String,
    /// TTL (Go duration, 10s..24h). Consul invalidates after up to twice this.
    #[serde(rename = "TTL")]
    pub ttl: String,
    /// After the session is invalidated, nobody may acquire its locks for this long.
    pub lock_delay: String,
    /// `release` (keep the keys) or `delete`.
    pub behavior: String,
    /// Service checks of the session's node it depends on: when one goes
    /// critical (or is removed), Consul invalidates the session at once.
    /// `NodeChecks` keep Consul's default (`serfHealth`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub service_checks: Vec<ServiceCheckRef>,
}

/// A service check a session depends on (`ServiceChecks` entries).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceCheckRef {
    /// The check's ID on the session's node.
    #[serde(rename = "ID")]
    pub id: String,
}

/// Formats a duration the way Go's `time.ParseDuration` accepts it.
pub fn go_duration(d: std::time::Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
