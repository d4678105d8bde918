//! The service registration the agent keeps in the local Consul agent.
//!
//! Pure: configuration and identity in, Consul's registration body out. Two
//! checks:
//!
//! - an HTTP check that Consul itself runs against `agent.check_url` (through
//!   Apache on a real node), so the service fails even if the rollgate agent
//!   is wedged;
//! - a TTL check owned by the agent, driven by its own probes (health *and*
//!   the expected version), so a dead agent turns the instance critical
//!   within one TTL.
//!
//! Both start as `warning`: not answered yet. The TTL check stays warning
//! until the app has answered once (see [`super::probe`]), so a booting
//! instance carries a warning check however slowly it boots, and the
//! coordinator fails a batch early (`failure_time`) only on an instance
//! whose TTL check (ID ending in [`AGENT_CHECK_SUFFIX`]) is critical while
//! no check is warning: one that answered, wrongly. Consul's HTTP check
//! cannot know "yet" (it turns critical on the first refused connection) and
//! is never taken as evidence.
//!
//! IDs are stable functions of the instance ID, so re-registering (after a
//! Consul restart, or an agent restart) replaces and never duplicates.

use std::collections::BTreeMap;

use crate::consul::types::{CheckDefinition, CheckStatus, ServiceRegistration, go_duration};
use rollgate_core::health::AGENT_CHECK_SUFFIX;

use super::config::AgentConfig;
use super::identity::Identity;

/// Meta key carrying the EC2 instance ID: the coordinator maps Consul service
/// instances to Auto Scaling instances through it.
pub const META_INSTANCE_ID: &str = "instance_id";

/// The IDs the agent uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    /// Service ID.
    pub service: String,
    /// ID of Consul's HTTP check.
    pub http_check: String,
    /// ID of the agent's TTL check.
    pub ttl_check: String,
}

/// The IDs for this configuration and instance.
pub fn ids(config: &AgentConfig, identity: &Identity) -> Ids {
    let service = if config.service_id.is_empty() {
        format!("{}-{}", config.service_name, identity.instance_id)
    } else {
        config.service_id.clone()
    };
    Ids {
        http_check: format!("{service}:http"),
        ttl_check: format!("{service}{AGENT_CHECK_SUFFIX}"),
        service,
    }
}

/// The registration body.
pub fn build(config: &AgentConfig, identity: &Identity) -> ServiceRegistration {
    let ids = ids(config, identity);
    let mut meta = BTreeMap::new();
    meta.insert(META_INSTANCE_ID.to_string(), identity.instance_id.clone());
    meta.insert("ami_id".to_string(), identity.ami_id.clone());
    meta.insert("version".to_string(), config.expected_version.clone());
    meta.insert("az".to_string(), identity.availability_zone.clone());
    if !config.artifact.is_empty() {
        meta.insert("artifact".to_string(), config.artifact.clone());
    }
    let deregister = go_duration(config.deregister_critical_after);
    let address = if config.service_address.is_empty() {
        identity.local_ipv4.clone()
    } else {
        config.service_address.clone()
    };
    ServiceRegistration {
        id: ids.service.clone(),
        name: config.service_name.clone(),
        tags: config.tags.clone(),
        address,
        port: config.service_port,
        meta,
        checks: vec![
            CheckDefinition {
                check_id: ids.http_check,
                name: format!("{} HTTP health", config.service_name),
                notes: format!(
                    "Consul requests {} every {}",
                    config.check_url,
                    go_duration(config.check_interval)
                ),
                http: config.check_url.clone(),
                interval: go_duration(config.check_interval),
                timeout: go_duration(config.check_timeout),
                deregister_critical_service_after: deregister.clone(),
                status: Some(CheckStatus::Warning),
                ..CheckDefinition::default()
            },
            CheckDefinition {
                check_id: ids.ttl_check,
                name: format!("{} rollgate agent probe", config.service_name),
                notes: format!(
                    "rollgate agent: /health answers and /version is {}",
                    config.expected_version
                ),
                ttl: go_duration(config.ttl),
                deregister_critical_service_after: deregister,
                // Not yet answered: warning, not critical. Consul copies a
                // change of output alone to the catalog only every
                // check_update_interval (minutes), but a change of status at
                // once: starting from warning, the first bad answer
                // (critical) reaches the coordinator with its output, so a
                // failure reason can quote it. Warning is not passing: the
                // gate and the load balancer still wait, and the
                // rollout's fail-fast waits too: warning is "not answered
                // yet", never evidence against the image.
                status: Some(CheckStatus::Warning),
                ..CheckDefinition::default()
            },
        ],
    }
}

/// A service Meta pair Consul would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// More pairs than Consul allows.
    #[error("{0} Meta pairs; Consul allows 64")]
    TooMany(usize),
    /// A key with characters Consul refuses, too long, or with the reserved
    /// `consul-` prefix.
    #[error("Meta key {0:?} breaks Consul's rules")]
    BadKey(String),
    /// A value longer than Consul allows; carries its key.
    #[error("Meta value of {0:?} is longer than 512 bytes")]
    LongValue(String),
}

/// Checks Consul's rules for Meta (keys of letters, digits, `_`, `-`; no
/// `consul-` prefix; at most 64 pairs; keys ≤ 128 and values ≤ 512 bytes),
/// so a bad value is reported by the agent rather than as Consul's 400.
pub fn check_meta(meta: &BTreeMap<String, String>) -> Result<(), MetaError> {
    if meta.len() > 64 {
        return Err(MetaError::TooMany(meta.len()));
    }
    for (k, v) in meta {
        if k.is_empty()
            || k.len() > 128
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            || k.starts_with("consul-")
        {
            return Err(MetaError::BadKey(k.clone()));
        }
        if v.len() > 512 {
            return Err(MetaError::LongValue(k.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;

    fn identity() -> Identity {
        Identity {
            instance_id: "i-0abc".into(),
            ami_id: "ami-1234".into(),
            availability_zone: "eu-west-1a".into(),
            local_ipv4: "10.0.1.7".into(),
            source: "imds",
        }
    }

    #[test]
    fn registration_carries_meta_checks_and_stable_ids() {
        let c = AgentConfig {
            expected_version: "1.4.2".into(),
            artifact: "acmeinc/web".into(),
            tags: vec!["web".into()],
            ttl: Duration::from_secs(10),
            ..AgentConfig::default()
        };
        let r = build(&c, &identity());
        assert_eq!(r.id, "web-i-0abc");
        assert_eq!(r.name, "web");
        assert_eq!(r.address, "10.0.1.7");
        assert_eq!(r.port, 80);
        assert_eq!(r.meta["instance_id"], "i-0abc");
        assert_eq!(r.meta["ami_id"], "ami-1234");
        assert_eq!(r.meta["version"], "1.4.2");
        assert_eq!(r.meta["artifact"], "acmeinc/web");
        assert_eq!(r.meta["az"], "eu-west-1a");
        check_meta(&r.meta).unwrap();
        assert_eq!(r.checks.len(), 2);
        assert_eq!(r.checks[0].http, "http://127.0.0.1:80/health");
        assert_eq!(r.checks[0].interval, "5s");
        assert_eq!(r.checks[1].ttl, "10s");
        assert!(
            r.checks
                .iter()
                .all(|c| c.deregister_critical_service_after == "300s")
        );
        assert_eq!(build(&c, &identity()), r, "same input, same body");
        // The JSON uses Consul's field names.
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["Checks"][1]["TTL"], "10s");
        assert_eq!(json["Checks"][0]["HTTP"], "http://127.0.0.1:80/health");
        assert_eq!(json["Meta"]["instance_id"], "i-0abc");
        assert_eq!(json["ID"], "web-i-0abc");
    }

    #[test]
    fn meta_rules() {
        let mut m = BTreeMap::new();
        m.insert("consul-x".to_string(), "v".to_string());
        assert_eq!(check_meta(&m), Err(MetaError::BadKey("consul-x".into())));
        let mut m = BTreeMap::new();
        m.insert("bad key".to_string(), "v".to_string());
        assert_eq!(check_meta(&m), Err(MetaError::BadKey("bad key".into())));
        let mut m = BTreeMap::new();
        m.insert("long".to_string(), "v".repeat(513));
        assert_eq!(check_meta(&m), Err(MetaError::LongValue("long".into())));
        let m: BTreeMap<_, _> = (0..65).map(|i| (format!("k{i}"), String::new())).collect();
        assert_eq!(check_meta(&m), Err(MetaError::TooMany(65)));
    }
}
