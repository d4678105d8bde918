//! Consul's answer for a service mapped to what the rollout core reads:
//! health per EC2 instance, through the service instance's Meta
//! `instance_id` (written by the node agent). The core knows nothing of
//! Consul's JSON; this is the one place that translates it.

use std::collections::BTreeMap;

use crate::consul::types::{HealthCheck, ServiceEntry};
use crate::node::registration::META_INSTANCE_ID;
use crate::rollout::machine::{CheckFailure, Health};

/// Maps `GET /v1/health/service/:service` entries to EC2 instance IDs
/// through Meta `instance_id`. Entries without it are ignored; two entries
/// for one instance (a stale registration) must both pass.
pub fn health_by_instance(entries: &[ServiceEntry]) -> BTreeMap<String, Health> {
    let mut out: BTreeMap<String, Health> = BTreeMap::new();
    for e in entries {
        let Some(id) = e
            .service
            .meta
            .as_ref()
            .and_then(|m| m.get(META_INSTANCE_ID))
        else {
            continue;
        };
        let h = Health::from_checks(e.checks.iter().map(check));
        out.entry(id.clone())
            .or_insert_with(Health::passing)
            .merge(h);
    }
    out
}

fn check(c: &HealthCheck) -> CheckFailure {
    CheckFailure {
        check_id: c.check_id.clone(),
        name: c.name.clone(),
        status: c.status(),
        output: c.output.clone(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::consul::types::{AgentService, CheckStatus};

    #[test]
    fn consul_entries_map_to_instances_through_meta() {
        let check = |id: &str, status, output: &str| HealthCheck {
            check_id: id.into(),
            name: format!("{id} check"),
            status: Some(status),
            output: format!("{output}\n"),
            ..HealthCheck::default()
        };
        let entry = |instance: Option<&str>, checks| ServiceEntry {
            service: AgentService {
                meta: instance.map(|i| BTreeMap::from([("instance_id".to_owned(), i.to_owned())])),
                ..AgentService::default()
            },
            checks,
            ..ServiceEntry::default()
        };
        let entries = vec![
            entry(
                Some("i-1"),
                vec![
                    check("serfHealth", CheckStatus::Passing, ""),
                    check("web-i-1:agent", CheckStatus::Passing, "ok"),
                ],
            ),
            entry(
                Some("i-2"),
                vec![
                    check("serfHealth", CheckStatus::Passing, ""),
                    check(
                        "_service_maintenance:web-i-2",
                        CheckStatus::Critical,
                        "draining",
                    ),
                ],
            ),
            entry(
                Some("i-3"),
                vec![check("web-i-3:agent", CheckStatus::Passing, "")],
            ),
            // A stale second registration for i-3 that fails.
            entry(
                Some("i-3"),
                vec![check("web-i-3b:agent", CheckStatus::Warning, "429")],
            ),
            entry(None, vec![check("x", CheckStatus::Critical, "")]),
        ];
        let h = health_by_instance(&entries);
        assert_eq!(h.len(), 3);
        assert_eq!(h["i-1"], Health::passing());
        assert!(!h["i-2"].all_passing, "maintenance mode is not passing");
        assert_eq!(
            h["i-2"].describe(),
            "check _service_maintenance:web-i-2 \"_service_maintenance:web-i-2 check\" is critical: draining"
        );
        assert!(!h["i-3"].all_passing);
        assert_eq!(h["i-3"].failing.len(), 1);
        assert_eq!(h["i-3"].failing[0].status, CheckStatus::Warning);
    }

    #[test]
    fn booting_and_answering_wrong_survive_the_translation() {
        let check = |id: &str, status, output: &str| HealthCheck {
            check_id: id.into(),
            name: id.into(),
            status: Some(status),
            output: output.into(),
            ..HealthCheck::default()
        };
        let entry = |instance: &str, checks| ServiceEntry {
            service: AgentService {
                meta: Some(BTreeMap::from([(
                    "instance_id".to_owned(),
                    instance.to_owned(),
                )])),
                ..AgentService::default()
            },
            checks,
            ..ServiceEntry::default()
        };
        let entries = vec![
            // Booting: Consul's HTTP check refused, the agent still waiting.
            entry(
                "i-boot",
                vec![
                    check("serfHealth", CheckStatus::Passing, ""),
                    check(
                        "web-i-boot:http",
                        CheckStatus::Critical,
                        "connection refused",
                    ),
                    check(
                        "web-i-boot:agent",
                        CheckStatus::Warning,
                        "not answering yet: GET http://127.0.0.1:8080/health answered 503",
                    ),
                ],
            ),
            // Answered 500.
            entry(
                "i-bad",
                vec![
                    check("serfHealth", CheckStatus::Passing, ""),
                    check("web-i-bad:http", CheckStatus::Critical, "HTTP 500"),
                    check("web-i-bad:agent", CheckStatus::Critical, "answered 500"),
                ],
            ),
            // Healthy, but a stale registration of the same instance still
            // waits for its first answer: no evidence yet.
            entry(
                "i-stale",
                vec![check(
                    "web-i-stale:agent",
                    CheckStatus::Critical,
                    "answered 500",
                )],
            ),
            entry(
                "i-stale",
                vec![check(
                    "web-i-stale-b:agent",
                    CheckStatus::Warning,
                    "not answering yet",
                )],
            ),
        ];
        let h = health_by_instance(&entries);
        assert!(h["i-boot"].answered_wrong().is_empty());
        let wrong: Vec<&str> = h["i-bad"]
            .answered_wrong()
            .iter()
            .map(|c| c.check_id.as_str())
            .collect();
        assert_eq!(
            wrong,
            ["web-i-bad:agent"],
            "only the agent's check is evidence"
        );
        assert!(h["i-stale"].answered_wrong().is_empty());
    }
}
