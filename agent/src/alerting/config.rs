//! The `[watch]` section: how the health watcher turns Consul's check
//! statuses into alerts.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Problems;

/// What alerts are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// The check's service (empty for node checks).
    Service,
    /// The check's node.
    Node,
}

/// Settings of the health watcher (`rollgate watch`, or inside the
/// coordinator).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WatcherConfig {
    /// A new check status must hold this long before it is acted on; flaps
    /// shorter than this send nothing.
    #[serde(with = "humantime_serde")]
    pub change_threshold: Duration,
    /// `change_threshold` per service name (`{ web = "1m" }`).
    #[serde(with = "duration_map")]
    pub service_thresholds: BTreeMap<String, Duration>,
    /// `change_threshold` per check ID (wins over the service's).
    #[serde(with = "duration_map")]
    pub check_thresholds: BTreeMap<String, Duration>,
    /// Alerts sharing these are sent together: `["service", "node"]`
    /// (default), `["service"]` or `["node"]`.
    pub group_by: Vec<GroupBy>,
    /// How long a new group waits for more alerts before its first notice.
    #[serde(with = "humantime_serde")]
    pub group_wait: Duration,
    /// Minimum time between two notices of one group when it changes.
    #[serde(with = "humantime_serde")]
    pub group_interval: Duration,
    /// An unresolved group is notified again this often.
    #[serde(with = "humantime_serde")]
    pub repeat_interval: Duration,
    /// Raise "Consul unreachable" when the health watch has failed this long.
    #[serde(with = "humantime_serde")]
    pub unreachable_after: Duration,
    /// Raise "no leader" when Consul has reported none this long.
    #[serde(with = "humantime_serde")]
    pub no_leader_after: Duration,
    /// How often the cluster leader is checked (`/v1/status/leader`).
    #[serde(with = "humantime_serde")]
    pub leader_check_interval: Duration,
    /// Raise "watch stalled" when the health watch got neither an answer nor
    /// an error this long (a blocking query answers at least every
    /// `consul.max_wait`).
    #[serde(with = "humantime_serde")]
    pub stall_after: Duration,
    /// Take the leader lock (`<kv_prefix>/watch/leader`) so only one
    /// `rollgate watch` replica alerts. Turn off only when one replica runs.
    pub leader_lock: bool,
    /// `IP:PORT` where `rollgate watch` serves Prometheus metrics at
    /// `/metrics` (check transitions, deliveries, alert latency, its
    /// Consul calls); empty (the default): no listener, no metrics kept. A
    /// coordinator ignores it: its console serves `/metrics` on
    /// `http.listen`, its embedded watcher's figures included.
    pub metrics_listen: String,
}

impl Default for WatcherConfig {
    fn default() -> Self {
        Self {
            change_threshold: Duration::from_secs(30),
            service_thresholds: BTreeMap::new(),
            check_thresholds: BTreeMap::new(),
            group_by: vec![GroupBy::Service, GroupBy::Node],
            group_wait: Duration::from_secs(30),
            group_interval: Duration::from_secs(300),
            repeat_interval: Duration::from_secs(4 * 3600),
            unreachable_after: Duration::from_secs(60),
            no_leader_after: Duration::from_secs(30),
            leader_check_interval: Duration::from_secs(30),
            stall_after: Duration::from_secs(900),
            leader_lock: true,
            metrics_listen: String::new(),
        }
    }
}

impl WatcherConfig {
    /// Checks ranges and names.
    pub fn validate(&self, p: &mut Problems) {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        p.duration_in(
            "watch.change_threshold",
            self.change_threshold,
            s(0),
            s(86_400),
        );
        for (k, d) in &self.service_thresholds {
            p.duration_in(
                &format!("watch.service_thresholds.{k}"),
                *d,
                s(0),
                s(86_400),
            );
        }
        for (k, d) in &self.check_thresholds {
            p.duration_in(&format!("watch.check_thresholds.{k}"), *d, s(0), s(86_400));
        }
        p.duration_in("watch.group_wait", self.group_wait, s(0), s(3600));
        p.duration_in(
            "watch.group_interval",
            self.group_interval,
            ms(1),
            s(86_400),
        );
        p.duration_in(
            "watch.repeat_interval",
            self.repeat_interval,
            self.group_interval,
            s(30 * 86_400),
        );
        p.duration_in(
            "watch.unreachable_after",
            self.unreachable_after,
            ms(1),
            s(86_400),
        );
        p.duration_in(
            "watch.no_leader_after",
            self.no_leader_after,
            ms(1),
            s(86_400),
        );
        p.duration_in(
            "watch.leader_check_interval",
            self.leader_check_interval,
            ms(100),
            s(3600),
        );
        p.duration_in("watch.stall_after", self.stall_after, ms(1), s(86_400));
        if !self.metrics_listen.is_empty()
            && self.metrics_listen.parse::<std::net::SocketAddr>().is_err()
        {
            p.push(
                "watch.metrics_listen",
                &self.metrics_listen,
                "must be IP:PORT (an IP address, not a host name), e.g. \"127.0.0.1:9181\", or empty for no metrics",
            );
        }
        let mut seen = self.group_by.clone();
        seen.sort();
        seen.dedup();
        if self.group_by.is_empty() || seen.len() != self.group_by.len() {
            p.push(
                "watch.group_by",
                format!("{:?}", self.group_by),
                "must list \"service\", \"node\" or both, each once",
            );
        }
    }

    /// The threshold of a check: per check ID, else per service, else the
    /// default.
    pub fn threshold(&self, check_id: &str, service: &str) -> Duration {
        self.check_thresholds
            .get(check_id)
            .or_else(|| self.service_thresholds.get(service))
            .copied()
            .unwrap_or(self.change_threshold)
    }
}

/// A map of human-readable durations (`{ web = "1m" }`).
mod duration_map {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<String, Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let m: BTreeMap<&String, humantime_serde::Serde<&Duration>> = m
            .iter()
            .map(|(k, v)| (k, humantime_serde::Serde::from(v)))
            .collect();
        m.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Duration>, D::Error> {
        let m: BTreeMap<String, humantime_serde::Serde<Duration>> = BTreeMap::deserialize(d)?;
        Ok(m.into_iter().map(|(k, v)| (k, v.into_inner())).collect())
    }
}
