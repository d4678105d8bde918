//! The `[agent]` section: what the node agent registers and how it probes.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Problems;

/// Settings of `rollgate agent`, the process on every instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Name the service is registered under; other services discover it by it.
    pub service_name: String,
    /// Service ID; empty means `<service_name>-<instance_id>`, stable across
    /// agent restarts so re-registering replaces rather than duplicates.
    pub service_id: String,
    /// Port Consul advertises: Apache's port on a real node, the app's in the
    /// sandbox.
    pub service_port: u16,
    /// Address Consul advertises; empty means the instance's private IPv4.
    pub service_address: String,
    /// Tags of the service.
    pub tags: Vec<String>,
    /// Artifact the image was built from (`acmeinc/web`), put in Meta.
    pub artifact: String,
    /// Version baked into the image; the agent's probe fails when the app
    /// reports another one (a half-updated image must not pass).
    pub expected_version: String,
    /// Base URL of the app, probed at `/health` and `/version` by the agent.
    pub app_url: String,
    /// URL Consul's own HTTP check requests (through Apache on a node).
    pub check_url: String,
    /// How often Consul runs the HTTP check.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// Time limit of one probe or HTTP check run.
    #[serde(with = "humantime_serde")]
    pub check_timeout: Duration,
    /// TTL of the agent's own check; the agent refreshes it at most TTL/2
    /// apart, so a dead agent turns the check critical within one TTL.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Consul removes the service after its checks stay critical this long
    /// (a node that died without draining).
    #[serde(with = "humantime_serde")]
    pub deregister_critical_after: Duration,
    /// Time between entering maintenance and deregistering on shutdown, so
    /// load balancers and clients move away first.
    #[serde(with = "humantime_serde")]
    pub drain_time: Duration,
    /// Instance metadata endpoint (IMDSv2). Empty means the standard variable
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT`, else `http://169.254.169.254`.
    pub imds_endpoint: String,
    /// Identity to use when the metadata service cannot be reached (outside
    /// EC2). Used only as a fallback, with a warning.
    pub identity: Option<StaticIdentity>,
    /// Where to serve `GET /ready`: 200 only while the local Consul agent
    /// finds the service passing, 503 otherwise (warning, critical,
    /// maintenance, not registered, Consul unreachable). The load
    /// balancer's health check asks it, so the load balancer and Consul
    /// agree on which nodes serve. Unset: no listener.
    pub ready_listen: Option<SocketAddr>,
}

/// A fixed instance identity for hosts without a metadata service.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StaticIdentity {
    /// EC2 instance ID (`i-...`).
    pub instance_id: String,
    /// AMI ID (`ami-...`).
    pub ami_id: String,
    /// Availability zone.
    pub availability_zone: String,
    /// Private IPv4 address.
    pub local_ipv4: String,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            service_name: "web".into(),
            service_id: String::new(),
            service_port: 80,
            service_address: String::new(),
            tags: Vec::new(),
            artifact: String::new(),
            expected_version: String::new(),
            app_url: "http://127.0.0.1:8080".into(),
            check_url: "http://127.0.0.1:80/health".into(),
            check_interval: Duration::from_secs(5),
            check_timeout: Duration::from_secs(2),
            ttl: Duration::from_secs(10),
            deregister_critical_after: Duration::from_secs(300),
            drain_time: Duration::from_secs(15),
            imds_endpoint: String::new(),
            identity: None,
            ready_listen: None,
        }
    }
}

impl AgentConfig {
    /// Rules every file must keep, whatever the subcommand.
    pub(crate) fn validate(&self, p: &mut Problems) {
        let s = Duration::from_secs;
        let name_ok =
            |v: &str| !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !name_ok(&self.service_name) {
            p.push(
                "agent.service_name",
                &self.service_name,
                "must be non-empty letters, digits and '-' (a DNS label)",
            );
        }
        if !self.service_id.is_empty()
            && !self
                .service_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        {
            p.push(
                "agent.service_id",
                &self.service_id,
                "must use letters, digits, '-', '_', '.', ':'",
            );
        }
        if self.service_port == 0 {
            p.push("agent.service_port", 0, "must be between 1 and 65535");
        }
        for (key, url) in [
            ("agent.app_url", &self.app_url),
            ("agent.check_url", &self.check_url),
        ] {
            match url::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => p.push(key, url, "must be an http(s) URL with a host"),
            }
        }
        if !self.imds_endpoint.is_empty() && url::Url::parse(&self.imds_endpoint).is_err() {
            p.push("agent.imds_endpoint", &self.imds_endpoint, "must be a URL");
        }
        p.duration_in("agent.check_interval", self.check_interval, s(1), s(3600));
        p.duration_in(
            "agent.check_timeout",
            self.check_timeout,
            Duration::from_millis(100),
            s(300),
        );
        // Consul's minimum TTL-check granularity is one second; refreshing at
        // TTL/2 needs at least 2 s to be meaningful.
        p.duration_in("agent.ttl", self.ttl, s(2), s(3600));
        // Consul enforces a minimum of one minute for the reaper.
        p.duration_in(
            "agent.deregister_critical_after",
            self.deregister_critical_after,
            s(60),
            s(7 * 24 * 3600),
        );
        p.duration_in("agent.drain_time", self.drain_time, s(0), s(3600));
        if self.check_timeout >= self.check_interval {
            p.push(
                "agent.check_timeout",
                humantime::format_duration(self.check_timeout),
                "must be shorter than agent.check_interval",
            );
        }
        for (i, tag) in self.tags.iter().enumerate() {
            if tag.is_empty() || tag.chars().any(char::is_whitespace) {
                p.push(
                    &format!("agent.tags[{i}]"),
                    tag,
                    "must be non-empty without spaces",
                );
            }
        }
    }

    /// Rules that apply only when running `rollgate agent`.
    pub fn validate_for_agent(&self) -> Problems {
        let mut p = Problems::default();
        if self.expected_version.trim().is_empty() {
            p.push(
                "agent.expected_version",
                "",
                "required by `rollgate agent`: the version baked into the image",
            );
        }
        p
    }
}
