//! From Consul's answer to `GET /v1/health/state/any` to what the engine
//! reasons about: a [`Snapshot`] (checks by (node, check), maintenance
//! silences, nodes whose `serfHealth` fails) and the [`Transition`]s between
//! two of them. Pure.
//!
//! Maintenance checks (`_node_maintenance`, `_service_maintenance:<id>`)
//! are silences, not failures: they never appear among the checks.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::consul::types::{CheckStatus, HealthCheck};

/// Consul's node maintenance check ID.
pub const NODE_MAINTENANCE: &str = "_node_maintenance";
/// Prefix of Consul's service maintenance check IDs.
pub const SERVICE_MAINTENANCE_PREFIX: &str = "_service_maintenance:";
/// The Serf (node liveness) check ID.
pub const SERF_HEALTH: &str = "serfHealth";

/// Identifies a check across the cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CheckKey {
    /// Node name.
    pub node: String,
    /// Check ID (unique per node).
    pub check_id: String,
}

impl CheckKey {
    /// A key.
    pub fn new(node: impl Into<String>, check_id: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            check_id: check_id.into(),
        }
    }

    /// Whether this is the node's `serfHealth` check.
    pub fn is_serf(&self) -> bool {
        self.check_id == SERF_HEALTH
    }
}

/// One check as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Human name.
    pub name: String,
    /// Current status.
    pub status: CheckStatus,
    /// Output of the last run.
    pub output: String,
    /// Service instance ID, empty for node checks.
    pub service_id: String,
    /// Service name, empty for node checks.
    pub service_name: String,
    /// Service tags.
    pub tags: Vec<String>,
}

/// Consul's health state, digested.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every check except maintenance checks.
    pub checks: BTreeMap<CheckKey, Observed>,
    /// Nodes in maintenance, with the reason.
    pub node_maintenance: BTreeMap<String, String>,
    /// Service instances in maintenance: (node, service ID) → reason.
    pub service_maintenance: BTreeMap<(String, String), String>,
    /// Entries that could not be used (no node or no check ID), for a log
    /// line.
    pub skipped: usize,
}

/// A status change of one check between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The check.
    pub key: CheckKey,
    /// Status before (`None`: first seen).
    pub from: Option<CheckStatus>,
    /// Status after (`None`: gone).
    pub to: Option<CheckStatus>,
}

impl Snapshot {
    /// Digests Consul's answer.
    pub fn from_checks(checks: &[HealthCheck]) -> Self {
        let mut s = Snapshot::default();
        for c in checks {
            if c.node.is_empty() || c.check_id.is_empty() {
                s.skipped += 1;
                continue;
            }
            let reason = || {
                if c.notes.is_empty() {
                    c.output.clone()
                } else {
                    c.notes.clone()
                }
            };
            if c.check_id == NODE_MAINTENANCE {
                s.node_maintenance.insert(c.node.clone(), reason());
                continue;
            }
            if let Some(service_id) = c.check_id.strip_prefix(SERVICE_MAINTENANCE_PREFIX) {
                let id = if c.service_id.is_empty() {
                    service_id.to_string()
                } else {
                    c.service_id.clone()
                };
                s.service_maintenance.insert((c.node.clone(), id), reason());
                continue;
            }
            s.checks.insert(
                CheckKey::new(&c.node, &c.check_id),
                Observed {
                    name: c.name.clone(),
                    status: c.status(),
                    output: c.output.clone(),
                    service_id: c.service_id.clone(),
                    service_name: c.service_name.clone(),
                    tags: c.service_tags.clone().unwrap_or_default(),
                },
            );
        }
        s
    }

    /// Whether alerts for this check are silenced by maintenance.
    pub fn silenced(&self, key: &CheckKey) -> bool {
        if self.node_maintenance.contains_key(&key.node) {
            return true;
        }
        self.checks.get(key).is_some_and(|o| {
            !o.service_id.is_empty()
                && self
                    .service_maintenance
                    .contains_key(&(key.node.clone(), o.service_id.clone()))
        })
    }

    /// Nodes whose `serfHealth` is not passing right now.
    pub fn serf_failing(&self) -> BTreeSet<String> {
        self.checks
            .iter()
            .filter(|(k, o)| k.is_serf() && o.status != CheckStatus::Passing)
            .map(|(k, _)| k.node.clone())
            .collect()
    }

    /// Statuses only, for [`diff`].
    pub fn statuses(&self) -> BTreeMap<CheckKey, CheckStatus> {
        self.checks
            .iter()
            .map(|(k, o)| (k.clone(), o.status))
            .collect()
    }
}

/// Every check whose status differs between `before` and `after`
/// (appeared, changed or gone), in key order.
pub fn diff(before: &BTreeMap<CheckKey, CheckStatus>, after: &Snapshot) -> Vec<Transition> {
    let mut out = Vec::new();
    for (k, o) in &after.checks {
        let from = before.get(k).copied();
        if from != Some(o.status) {
            out.push(Transition {
                key: k.clone(),
                from,
                to: Some(o.status),
            });
        }
    }
    for (k, s) in before {
        if !after.checks.contains_key(k) {
            out.push(Transition {
                key: k.clone(),
                from: Some(*s),
                to: None,
            });
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn hc(node: &str, id: &str, service: &str, status: CheckStatus) -> HealthCheck {
        HealthCheck {
            node: node.into(),
            check_id: id.into(),
            name: id.into(),
            status: Some(status),
            service_id: if service.is_empty() {
                String::new()
            } else {
                format!("{service}-i-1")
            },
            service_name: service.into(),
            ..HealthCheck::default()
        }
    }

    #[test]
    fn maintenance_checks_become_silences() {
        let mut m = hc(
            "n1",
            "_service_maintenance:web-i-1",
            "web",
            CheckStatus::Critical,
        );
        m.notes = "deploying".into();
        let s = Snapshot::from_checks(&[
            hc("n1", "service:web-i-1", "web", CheckStatus::Critical),
            m,
            hc("n2", "_node_maintenance", "", CheckStatus::Critical),
            hc("n2", "serfHealth", "", CheckStatus::Critical),
            hc("", "x", "", CheckStatus::Critical),
        ]);
        assert_eq!(s.checks.len(), 2);
        assert_eq!(s.skipped, 1);
        assert!(s.silenced(&CheckKey::new("n1", "service:web-i-1")));
        assert!(s.silenced(&CheckKey::new("n2", "serfHealth")));
        assert_eq!(
            s.service_maintenance[&("n1".into(), "web-i-1".into())],
            "deploying"
        );
        assert_eq!(s.serf_failing().into_iter().collect::<Vec<_>>(), vec!["n2"]);
    }

    #[test]
    fn diff_reports_appeared_changed_and_gone_checks() {
        let before = Snapshot::from_checks(&[
            hc("n1", "a", "web", CheckStatus::Passing),
            hc("n1", "b", "web", CheckStatus::Passing),
            hc("n1", "c", "web", CheckStatus::Critical),
        ])
        .statuses();
        let after = Snapshot::from_checks(&[
            hc("n1", "a", "web", CheckStatus::Passing),
            hc("n1", "b", "web", CheckStatus::Warning),
            hc("n2", "d", "web", CheckStatus::Passing),
        ]);
        let t = diff(&before, &after);
        let short: Vec<_> = t
            .iter()
            .map(|t| (t.key.check_id.as_str(), t.from, t.to))
            .collect();
        assert_eq!(
            short,
            vec![
                ("b", Some(CheckStatus::Passing), Some(CheckStatus::Warning)),
                ("c", Some(CheckStatus::Critical), None),
                ("d", None, Some(CheckStatus::Passing)),
            ]
        );
        assert!(diff(&after.statuses(), &after).is_empty());
    }
}
