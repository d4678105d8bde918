//! Alerts about the watcher's own blind spots: Consul unreachable, no
//! cluster leader, a health watch that stopped advancing. Pure: the runner
//! records what it observed in a [`Progress`] and calls [`evaluate`].
//!
//! These alerts are not persisted (when Consul is unreachable there is
//! nowhere to persist them): after a restart a condition that still holds
//! fires again, with a new dedup key.

use std::collections::BTreeMap;

use super::config::WatcherConfig;
use crate::notify::{AlertStatus, Event, MetaKind, MetaNotice, UnixMillis};

/// What the runner observed about Consul.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// When the watcher started.
    pub started_ms: UnixMillis,
    /// Last successful health answer (changed or not).
    pub last_answer_ms: Option<UnixMillis>,
    /// Last failed health read.
    pub last_error_ms: Option<UnixMillis>,
    /// Start of the current run of failures (cleared by an answer).
    pub failing_since_ms: Option<UnixMillis>,
    /// The last error, for the alert.
    pub last_error: String,
    /// Since when answers carry `X-Consul-KnownLeader: false`.
    pub unknown_leader_since_ms: Option<UnixMillis>,
    /// Since when `/v1/status/leader` answers empty.
    pub empty_leader_since_ms: Option<UnixMillis>,
    /// Since when health answers are filtered by ACLs.
    pub filtered_since_ms: Option<UnixMillis>,
    /// What the filtered answers hide, for the alert.
    pub hidden: String,
}

impl Progress {
    /// Records a successful health answer.
    pub fn answered(&mut self, now: UnixMillis, known_leader: bool) {
        self.last_answer_ms = Some(now);
        self.failing_since_ms = None;
        if known_leader {
            self.unknown_leader_since_ms = None;
        } else {
            self.unknown_leader_since_ms.get_or_insert(now);
        }
    }

    /// Records a failed health read.
    pub fn failed(&mut self, now: UnixMillis, error: String) {
        self.last_error_ms = Some(now);
        self.failing_since_ms.get_or_insert(now);
        self.last_error = error;
    }

    /// Records whether a health answer was filtered by ACLs.
    pub fn filtered(&mut self, now: UnixMillis, filtered: bool) {
        if filtered {
            self.filtered_since_ms.get_or_insert(now);
        } else {
            self.filtered_since_ms = None;
            self.hidden.clear();
        }
    }

    /// Records the answer of `/v1/status/leader`.
    pub fn leader(&mut self, now: UnixMillis, leader: &str) {
        if leader.is_empty() {
            self.empty_leader_since_ms.get_or_insert(now);
        } else {
            self.empty_leader_since_ms = None;
        }
    }
}

/// Meta-alerts firing now, with their start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaState {
    /// Kind → since.
    pub firing: BTreeMap<MetaKind, UnixMillis>,
}

fn ms(d: std::time::Duration) -> u64 {
    d.as_millis() as u64
}

/// Raises and resolves meta-alerts; answers the events and when to look
/// again.
pub fn evaluate(
    cfg: &WatcherConfig,
    state: &mut MetaState,
    p: &Progress,
    now: UnixMillis,
) -> (Vec<Event>, Option<UnixMillis>) {
    let no_leader_since = match (p.unknown_leader_since_ms, p.empty_leader_since_ms) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let last_activity = [Some(p.started_ms), p.last_answer_ms, p.last_error_ms]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(p.started_ms);
    // (kind, since when the condition holds, threshold, whether it holds at
    // all, detail). An alert that fired stays firing while its condition
    // holds, even if it restarted (no resolve-and-fire-again on a blip of
    // the other source); "stalled" ends with any sign of life.
    let stalled_since = p.failing_since_ms.is_none().then_some(last_activity);
    let stalled = stalled_since.is_some_and(|s| now >= s + ms(cfg.stall_after));
    let conditions = [
        (
            MetaKind::ConsulUnreachable,
            p.failing_since_ms,
            cfg.unreachable_after,
            p.failing_since_ms.is_some(),
            p.last_error.clone(),
        ),
        (
            MetaKind::NoLeader,
            no_leader_since,
            cfg.no_leader_after,
            no_leader_since.is_some(),
            "Consul reports no cluster leader: writes and consistent reads fail".to_string(),
        ),
        (
            MetaKind::WatchStalled,
            stalled_since,
            cfg.stall_after,
            stalled,
            "the health watch got neither an answer nor an error".to_string(),
        ),
        (
            // At once: every answer that hides something is blind already.
            MetaKind::HiddenByAcls,
            p.filtered_since_ms,
            std::time::Duration::ZERO,
            p.filtered_since_ms.is_some(),
            format!(
                "Consul filtered the health state (X-Consul-Results-Filtered-By-ACLs): the watcher's token cannot read {}; their checks are neither resolved nor fired until it can. Grant service:read and node:read (config/acl/watcher.hcl).",
                if p.hidden.is_empty() {
                    "some services or nodes"
                } else {
                    &p.hidden
                }
            ),
        ),
    ];
    let mut events = Vec::new();
    let mut wake: Option<UnixMillis> = None;
    for (kind, since, after, present, detail) in conditions {
        let firing = state.firing.get(&kind).copied();
        let holds = match firing {
            Some(f) if present => Some(f),
            Some(_) => None,
            None => since.filter(|s| now >= s + ms(after)),
        };
        match (holds, firing) {
            (Some(since), None) => {
                state.firing.insert(kind, since);
                events.push(Event::meta(
                    MetaNotice {
                        kind,
                        status: AlertStatus::Firing,
                        since_ms: since,
                        detail,
                    },
                    now,
                ));
            }
            (None, Some(since)) => {
                state.firing.remove(&kind);
                events.push(Event::meta(
                    MetaNotice {
                        kind,
                        status: AlertStatus::Resolved,
                        since_ms: since,
                        detail: String::new(),
                    },
                    now,
                ));
            }
            _ => {}
        }
        if let Some(s) = since {
            let due = s + ms(after);
            if due > now {
                wake = Some(wake.map_or(due, |w: u64| w.min(due)));
            }
        }
    }
    (events, wake)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::notify::EventBody;

    fn cfg() -> WatcherConfig {
        WatcherConfig {
            unreachable_after: Duration::from_secs(60),
            no_leader_after: Duration::from_secs(30),
            stall_after: Duration::from_secs(900),
            ..WatcherConfig::default()
        }
    }

    fn kinds(events: &[Event]) -> Vec<(MetaKind, AlertStatus)> {
        events
            .iter()
            .map(|e| match &e.body {
                EventBody::Meta(m) => (m.kind, m.status),
                _ => unreachable!("only meta events"),
            })
            .collect()
    }

    #[test]
    fn consul_unreachable_fires_after_the_threshold_and_resolves_once() {
        let (c, mut st) = (cfg(), MetaState::default());
        let mut p = Progress::default();
        p.answered(0, true);
        for t in [1_000, 20_000, 40_000] {
            p.failed(t, "connection refused".into());
        }
        let (e, wake) = evaluate(&c, &mut st, &p, 50_000);
        assert!(e.is_empty());
        assert_eq!(wake, Some(61_000));
        let (e, _) = evaluate(&c, &mut st, &p, 61_000);
        assert_eq!(
            kinds(&e),
            vec![(MetaKind::ConsulUnreachable, AlertStatus::Firing)]
        );
        assert!(evaluate(&c, &mut st, &p, 90_000).0.is_empty(), "fires once");
        p.answered(95_000, true);
        let (e, _) = evaluate(&c, &mut st, &p, 95_000);
        assert_eq!(
            kinds(&e),
            vec![(MetaKind::ConsulUnreachable, AlertStatus::Resolved)]
        );
        assert_eq!(e[0].key, "meta/consul_unreachable/1000/resolved");
    }

    #[test]
    fn no_leader_from_either_source() {
        let (c, mut st) = (cfg(), MetaState::default());
        let mut p = Progress::default();
        p.answered(0, false);
        assert_eq!(
            kinds(&evaluate(&c, &mut st, &p, 30_000).0),
            vec![(MetaKind::NoLeader, AlertStatus::Firing)]
        );
        p.answered(31_000, true);
        p.leader(31_000, "");
        assert!(
            evaluate(&c, &mut st, &p, 32_000).0.is_empty(),
            "still no leader per status/leader"
        );
        p.leader(40_000, "10.0.0.1:8300");
        assert_eq!(
            kinds(&evaluate(&c, &mut st, &p, 40_000).0),
            vec![(MetaKind::NoLeader, AlertStatus::Resolved)]
        );
    }

    #[test]
    fn a_silent_watch_is_stalled_but_a_failing_one_is_unreachable() {
        let (c, mut st) = (cfg(), MetaState::default());
        let mut p = Progress {
            started_ms: 0,
            ..Progress::default()
        };
        p.answered(1_000, true);
        assert_eq!(
            kinds(&evaluate(&c, &mut st, &p, 901_000).0),
            vec![(MetaKind::WatchStalled, AlertStatus::Firing)]
        );
        p.answered(902_000, true);
        assert_eq!(
            kinds(&evaluate(&c, &mut st, &p, 902_000).0),
            vec![(MetaKind::WatchStalled, AlertStatus::Resolved)]
        );
        p.failed(903_000, "refused".into());
        let (e, _) = evaluate(&c, &mut st, &p, 903_000 + 1_000_000);
        assert_eq!(
            kinds(&e),
            vec![(MetaKind::ConsulUnreachable, AlertStatus::Firing)]
        );
    }

    #[test]
    fn a_filtered_health_answer_fires_at_once_naming_what_is_hidden() {
        let (c, mut st) = (cfg(), MetaState::default());
        let mut p = Progress::default();
        p.answered(1_000, true);
        p.filtered(1_000, true);
        p.hidden = "api".into();
        let (e, _) = evaluate(&c, &mut st, &p, 1_000);
        assert_eq!(
            kinds(&e),
            vec![(MetaKind::HiddenByAcls, AlertStatus::Firing)]
        );
        let EventBody::Meta(m) = &e[0].body else {
            unreachable!()
        };
        assert!(
            m.detail.contains("api") && m.detail.contains("service:read"),
            "{}",
            m.detail
        );
        assert!(evaluate(&c, &mut st, &p, 5_000).0.is_empty(), "fires once");
        p.filtered(6_000, false);
        assert_eq!(
            kinds(&evaluate(&c, &mut st, &p, 6_000).0),
            vec![(MetaKind::HiddenByAcls, AlertStatus::Resolved)]
        );
    }
}
