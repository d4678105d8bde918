//! A Consul check's status, as the rollout gate and the health watcher read
//! it. Consul's HTTP API spells these words; the Consul client in `rollgate`
//! decodes its answers into this type.
//!
//! # Not answering yet, or answering wrong
//!
//! The rollout fails a batch early (`failure_time`) only on evidence that a
//! new instance is wrong, never because it is slow. The statuses carry that
//! distinction, by contract with the node agent, which registers its checks
//! as `warning` and keeps its own probe's check at `warning` until the app
//! has answered once:
//!
//! - **warning**: not answered yet (connection refused or reset, a timeout,
//!   502/503/504 before the app's first answer: booting, however slowly),
//!   or overloaded (429). Not passing, and no evidence either.
//! - **critical**: answered, and wrong: `/health` answered something else
//!   than 2xx (other than the statuses above before the first answer),
//!   `/version` names another version than the image's, or the app stopped
//!   answering after it had answered once.
//!
//! Only the node agent's own check (ID `<service ID>:agent`,
//! [`AGENT_CHECK_SUFFIX`]) keeps that contract, so only it is evidence.
//! Consul's HTTP check knows nothing of "yet": it is critical from the first
//! refused connection, and it lags the agent's by up to its interval (a
//! booted app can be passing in the agent's check and still critical in the
//! HTTP check for a few seconds). So an instance counts as answering wrong
//! ([`Health::answered_wrong`]) when its agent's check is critical *and none
//! of its checks is warning* (or unknown: an HTTP check answered 429, a
//! stale second registration still waiting). A critical agent check
//! includes a TTL that expired: the agent in the image stopped reporting.
//! Maintenance mode (Consul's `_service_maintenance:*` and
//! `_node_maintenance` checks, critical) is a decision, not evidence, and
//! is left out. An instance not registered in Consul at all has not
//! answered either. All of these still fail at `healthy_deadline`: only the
//! early failure needs evidence.

use serde::{Deserialize, Serialize};

use crate::machine::{CheckFailure, Health};

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

/// The end of the node agent's own check ID (`web-i-0abc:agent`): the
/// check driven by its probe, the only one that tells "not answered yet"
/// (warning) from "answered wrong" (critical). The agent builds the ID with
/// it.
pub const AGENT_CHECK_SUFFIX: &str = ":agent";

/// Whether a check ID is the node agent's own check.
pub fn is_agent_check(check_id: &str) -> bool {
    check_id.ends_with(AGENT_CHECK_SUFFIX)
}

/// Whether a check ID is one of Consul's maintenance checks (service or
/// node maintenance mode): critical, but set by a person or a drain.
pub fn is_maintenance(check_id: &str) -> bool {
    check_id.starts_with("_service_maintenance:") || check_id == "_node_maintenance"
}

impl Health {
    /// The checks that say this instance answered, and wrong: its node
    /// agent's checks that are critical, unless one of its checks
    /// (maintenance left out) is warning or unknown ("not answered yet").
    /// Empty when there is no such evidence, passing or not (see the module
    /// documentation).
    pub fn answered_wrong(&self) -> Vec<&CheckFailure> {
        let mut wrong = Vec::new();
        for c in self.failing.iter().filter(|c| !is_maintenance(&c.check_id)) {
            match c.status {
                CheckStatus::Critical if is_agent_check(&c.check_id) => wrong.push(c),
                CheckStatus::Critical | CheckStatus::Passing => {}
                CheckStatus::Warning | CheckStatus::Unknown => return Vec::new(),
            }
        }
        wrong
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(id: &str, status: CheckStatus) -> CheckFailure {
        CheckFailure {
            check_id: id.into(),
            name: format!("{id} check"),
            status,
            output: format!("{status} output"),
        }
    }

    fn ids(h: &Health) -> Vec<&str> {
        h.answered_wrong()
            .iter()
            .map(|c| c.check_id.as_str())
            .collect()
    }

    #[test]
    fn critical_is_evidence_only_when_no_check_still_waits() {
        use CheckStatus::*;
        // Booting: Consul's HTTP check is refused (critical), the agent's
        // probe has not had an answer yet (warning).
        let booting =
            Health::from_checks([check("web:http", Critical), check("web:agent", Warning)]);
        assert!(ids(&booting).is_empty());
        // Answered 500: both critical; the agent's check is the evidence.
        let broken =
            Health::from_checks([check("web:http", Critical), check("web:agent", Critical)]);
        assert_eq!(ids(&broken), ["web:agent"]);
        // Booted: the agent's check passes, Consul's HTTP check has not run
        // since the last 503. No evidence.
        let lagging =
            Health::from_checks([check("web:http", Critical), check("web:agent", Passing)]);
        assert!(ids(&lagging).is_empty());
        // Another check critical alone (the HTTP check, a node check): no
        // evidence either; healthy_deadline decides.
        let other = Health::from_checks([check("serfHealth", Critical)]);
        assert!(ids(&other).is_empty());
        // Wrong version: /health passes, the agent's probe is critical.
        let version = Health::from_checks([
            check("serfHealth", Passing),
            check("web:http", Passing),
            check("web:agent", Critical),
        ]);
        assert_eq!(ids(&version), ["web:agent"]);
        // Overloaded (429 is warning): not evidence.
        let busy = Health::from_checks([check("web:http", Warning), check("web:agent", Critical)]);
        assert!(ids(&busy).is_empty());
        // A status a newer Consul may add is not evidence either.
        let unknown =
            Health::from_checks([check("web:http", Unknown), check("web:agent", Critical)]);
        assert!(ids(&unknown).is_empty());
        assert!(ids(&Health::passing()).is_empty());
    }

    #[test]
    fn maintenance_is_not_evidence() {
        use CheckStatus::*;
        let drained = Health::from_checks([
            check("_service_maintenance:web-i-1", Critical),
            check("web:agent", Passing),
        ]);
        assert!(!drained.all_passing);
        assert!(ids(&drained).is_empty());
        let node = Health::from_checks([check("_node_maintenance", Critical)]);
        assert!(ids(&node).is_empty());
        let broken_in_maintenance = Health::from_checks([
            check("_service_maintenance:web-i-1", Critical),
            check("web:agent", Critical),
        ]);
        assert_eq!(ids(&broken_in_maintenance), ["web:agent"]);
        assert!(is_maintenance("_service_maintenance:web-i-1"));
        assert!(!is_maintenance("web-i-1:agent"));
    }
}
