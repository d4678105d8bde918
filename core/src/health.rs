//! A Consul check's status, as the rollout gate and the health watcher read
//! it. Consul's HTTP API spells these words; the Consul client in `rollgate`
//! decodes its answers into this type.

use serde::{Deserialize, Serialize};

/// Status of a check, as Consul reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// The check passes.
    Passing,
    /// The check warns (HTTP 429, or set by its owner).
    Warning,
    /// The check fails.
    Critical,
    /// Anything newer Consul versions may add; treated as not passing.
    #[serde(other)]
    Unknown,
}

impl CheckStatus {
    /// The status word Consul uses.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Passing => "passing",
            CheckStatus::Warning => "warning",
            CheckStatus::Critical => "critical",
            CheckStatus::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for CheckStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
