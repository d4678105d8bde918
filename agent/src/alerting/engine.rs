//! The alerting engine: a pure function of (state, snapshot, now) that
//! answers the next state, the events to enqueue and when to run again.
//!
//! Per check (only checks that are not settled-passing are kept):
//!
//! - a status must hold `change_threshold` (per check ID, per service, or
//!   the default) before it becomes *effective*; flaps inside the window
//!   change nothing;
//! - a check first seen passing is not tracked at all, so it never notifies.
//!
//! Per alert: a check whose effective status is not passing *fires*, unless
//! it is *silenced* (its node or service instance is in maintenance) or
//! *inhibited* (its node's `serfHealth` fails: the node alert names the node
//! instead of one alert per service check). Both are muted, not resolved.
//!
//! Per group (`group_by`: service and node by default), like Alertmanager:
//! the first notice waits `group_wait` for more alerts; later changes are
//! notified at most every `group_interval`; an unchanged firing group is
//! notified again every `repeat_interval`; a resolved notice goes out only
//! for checks that were notified as firing. Every notice's dedup key is
//! `health/<group>/<group since>/<sequence>`, all from the state, so
//! recomputing a step after a crash yields the same keys.
//!
//! No I/O, no clock: the caller passes `now`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::config::{GroupBy, WatcherConfig};
use super::diff::{CheckKey, Snapshot, Transition};
use crate::consul::types::CheckStatus;
use crate::notify::event::instance_of;
use crate::notify::render::truncate;
use crate::notify::{AlertStatus, CheckInfo, Event, EventBody, HealthNotice, Severity, UnixMillis};

/// Output kept per notified check in the state (the notice itself carries
/// the longer current output).
const STATE_OUTPUT: usize = 200;

/// What the watcher persists between steps (and across restarts).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    /// Checks that are not settled-passing.
    #[serde(with = "pairs")]
    pub checks: BTreeMap<CheckKey, CheckState>,
    /// Alert groups with something firing or notified.
    pub groups: BTreeMap<String, GroupState>,
}

/// The tracked status of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckState {
    /// Last observed status.
    pub observed: CheckStatus,
    /// Since when it is observed.
    pub observed_since: UnixMillis,
    /// The status acted on (held for the threshold).
    pub effective: CheckStatus,
    /// Since when the effective status holds.
    pub effective_since: UnixMillis,
}

/// One alert group's notification state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    /// The group's service label (empty: node checks, or not grouped).
    pub service: String,
    /// The group's node label (empty when not grouped by node).
    pub node: String,
    /// When the group started firing: part of every dedup key.
    pub since: UnixMillis,
    /// Last notice, `None` before the first.
    pub last_notified: Option<UnixMillis>,
    /// Notices sent so far: part of every dedup key.
    pub seq: u32,
    /// Checks notified as firing, with what the notice said.
    #[serde(with = "pairs")]
    pub notified: BTreeMap<CheckKey, CheckInfo>,
    /// Service tags seen in the group, for routing by tag.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// The result of a step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The next state.
    pub state: State,
    /// Events to enqueue, before the state is saved.
    pub events: Vec<Event>,
    /// Run again at this time even if Consul reports no change.
    pub next_wake: Option<UnixMillis>,
    /// Status changes seen in this snapshot (for logs).
    pub transitions: Vec<Transition>,
}

fn ms(d: std::time::Duration) -> u64 {
    d.as_millis() as u64
}

fn min_opt(a: Option<u64>, b: u64) -> Option<u64> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// One step of the engine.
pub fn step(cfg: &WatcherConfig, mut state: State, snap: &Snapshot, now: UnixMillis) -> Step {
    let mut transitions = tracked_transitions(&state, snap);
    // A filtered answer is not the whole truth: a tracked check missing from
    // it is hidden, not gone. It keeps its state, frozen (no resolve, no
    // promotion to firing) until the token can see it again.
    let hidden: BTreeSet<CheckKey> = if snap.partial {
        transitions
            .iter()
            .filter(|t| t.to.is_none())
            .map(|t| t.key.clone())
            .collect()
    } else {
        BTreeSet::new()
    };
    transitions.retain(|t| !hidden.contains(&t.key));
    for t in &transitions {
        match (t.from, t.to) {
            (_, None) => {
                state.checks.remove(&t.key);
            }
            (None, Some(to)) => {
                state.checks.insert(
                    t.key.clone(),
                    CheckState {
                        observed: to,
                        observed_since: now,
                        effective: CheckStatus::Passing,
                        effective_since: now,
                    },
                );
            }
            (Some(_), Some(to)) => {
                if let Some(c) = state.checks.get_mut(&t.key) {
                    c.observed = to;
                    c.observed_since = now;
                }
            }
        }
    }
    let mut next_wake = None;
    for (k, c) in state.checks.iter_mut() {
        if c.effective == c.observed || hidden.contains(k) {
            continue;
        }
        let service = snap.get(k).map(|o| &*o.service_name).unwrap_or("");
        let due = c.observed_since + ms(cfg.threshold(&k.check_id, service));
        if now >= due {
            c.effective = c.observed;
            c.effective_since = c.observed_since;
        } else {
            next_wake = min_opt(next_wake, due);
        }
    }
    state.checks.retain(|_, c| {
        !(c.effective == CheckStatus::Passing && c.observed == CheckStatus::Passing)
    });

    let alerts = classify(cfg, &state, snap);
    let mut events = Vec::new();
    let ids: BTreeSet<String> = state
        .groups
        .keys()
        .cloned()
        .chain(alerts.keys().cloned())
        .collect();
    for id in ids {
        // A group that notified a check now hidden keeps its state: no
        // resolved notice, no repeat, until the token sees it again.
        if state
            .groups
            .get(&id)
            .is_some_and(|g| g.notified.keys().any(|k| hidden.contains(k)))
        {
            continue;
        }
        let empty = GroupAlerts::default();
        let a = alerts.get(&id).unwrap_or(&empty);
        let (event, wake, keep) = group_step(cfg, &id, state.groups.remove(&id), a, snap, now);
        if let Some(e) = event {
            events.push(e);
        }
        if let Some(w) = wake {
            next_wake = min_opt(next_wake, w);
        }
        if let Some(g) = keep {
            state.groups.insert(id, g);
        }
    }
    Step {
        state,
        events,
        next_wake,
        transitions,
    }
}

/// [`diff`](super::diff::diff) of the tracked checks against `snap`, without the checks first
/// seen passing (they are not tracked): the same transitions, without
/// building one for every settled-passing check of the cluster.
fn tracked_transitions(state: &State, snap: &Snapshot) -> Vec<Transition> {
    // Both are in key order: one merge, no lookup (and no key built) per
    // check of the cluster.
    let mut out = Vec::new();
    let mut tracked = state.checks.iter().peekable();
    for (node, id, o) in snap.iter() {
        let mut from = None;
        while let Some((k, c)) = tracked.peek() {
            match (k.node.as_str(), k.check_id.as_str()).cmp(&(node, id)) {
                std::cmp::Ordering::Less => {
                    out.push(Transition {
                        key: (*k).clone(),
                        from: Some(c.observed),
                        to: None,
                    });
                    tracked.next();
                }
                std::cmp::Ordering::Equal => {
                    from = Some(c.observed);
                    tracked.next();
                    break;
                }
                std::cmp::Ordering::Greater => break,
            }
        }
        let untracked_passing = from.is_none() && o.status == CheckStatus::Passing;
        if from != Some(o.status) && !untracked_passing {
            out.push(Transition {
                key: CheckKey::new(node, id),
                from,
                to: Some(o.status),
            });
        }
    }
    for (k, c) in tracked {
        out.push(Transition {
            key: k.clone(),
            from: Some(c.observed),
            to: None,
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// The alerts of one group at this step.
#[derive(Debug, Default)]
struct GroupAlerts {
    /// Labels (service, node).
    labels: (String, String),
    /// Firing and neither silenced nor inhibited.
    active: BTreeMap<CheckKey, CheckInfo>,
    /// Firing but silenced or inhibited.
    muted: BTreeSet<CheckKey>,
    /// Service checks inhibited because this (node) group's node is down.
    inhibited: u32,
    /// Service tags of the firing checks.
    tags: BTreeSet<String>,
}

fn group_of(cfg: &WatcherConfig, service: &str, node: &str) -> (String, (String, String)) {
    let s = if cfg.group_by.contains(&GroupBy::Service) {
        service
    } else {
        ""
    };
    let n = if cfg.group_by.contains(&GroupBy::Node) {
        node
    } else {
        ""
    };
    let id = format!(
        "{}@{}",
        if cfg.group_by.contains(&GroupBy::Service) {
            if s.is_empty() { "-" } else { s }
        } else {
            "*"
        },
        if n.is_empty() { "*" } else { n }
    );
    (id, (s.to_string(), n.to_string()))
}

fn classify(cfg: &WatcherConfig, state: &State, snap: &Snapshot) -> BTreeMap<String, GroupAlerts> {
    let mut down: BTreeSet<String> = snap.serf_failing();
    down.extend(
        state
            .checks
            .iter()
            .filter(|(k, c)| k.is_serf() && c.effective != CheckStatus::Passing)
            .map(|(k, _)| k.node.clone()),
    );
    let mut out: BTreeMap<String, GroupAlerts> = BTreeMap::new();
    let mut inhibited_per_node: BTreeMap<String, u32> = BTreeMap::new();
    for (k, c) in &state.checks {
        let Some(o) = snap.get(k) else {
            continue;
        };
        if c.effective == CheckStatus::Passing {
            continue;
        }
        let (id, labels) = group_of(cfg, &o.service_name, &k.node);
        let g = out.entry(id).or_default();
        g.labels = labels;
        let inhibited = !k.is_serf() && down.contains(&k.node);
        if inhibited && !snap.silenced(k) {
            *inhibited_per_node.entry(k.node.clone()).or_default() += 1;
        }
        if snap.silenced(k) || inhibited {
            g.muted.insert(k.clone());
        } else {
            g.tags.extend(o.tags.iter().map(|t| t.to_string()));
            g.active.insert(
                k.clone(),
                CheckInfo {
                    node: k.node.clone(),
                    check_id: k.check_id.clone(),
                    name: o.name.to_string(),
                    status: Some(c.effective),
                    output: o.output.to_string(),
                    service_id: o.service_id.to_string(),
                    service_name: o.service_name.to_string(),
                    instance: instance_of(&o.service_id),
                    since_ms: c.effective_since,
                    node_gone: false,
                    maintenance: false,
                },
            );
        }
    }
    for (node, n) in inhibited_per_node {
        let (id, _) = group_of(cfg, "", &node);
        if let Some(g) = out.get_mut(&id) {
            g.inhibited = n;
        }
    }
    out
}

/// One group's step: answers the notice to send, when to wake, and the
/// group's state if it is to be kept.
fn group_step(
    cfg: &WatcherConfig,
    id: &str,
    group: Option<GroupState>,
    a: &GroupAlerts,
    snap: &Snapshot,
    now: UnixMillis,
) -> (Option<Event>, Option<UnixMillis>, Option<GroupState>) {
    let mut g = match group {
        Some(g) => g,
        None if a.active.is_empty() => return (None, None, None),
        None => GroupState {
            service: a.labels.0.clone(),
            node: a.labels.1.clone(),
            since: now,
            last_notified: None,
            seq: 0,
            notified: BTreeMap::new(),
            tags: Vec::new(),
        },
    };
    for t in &a.tags {
        if !g.tags.contains(t) {
            g.tags.push(t.clone());
        }
    }
    let Some(last) = g.last_notified else {
        if a.active.is_empty() {
            return (None, None, None); // resolved or muted before anyone was told
        }
        let due = g.since + ms(cfg.group_wait);
        if now < due {
            return (None, Some(due), Some(g));
        }
        let e = notice(id, &mut g, a, Vec::new(), Severity::Info, false, now);
        return (Some(e), Some(now + ms(cfg.repeat_interval)), Some(g));
    };
    let resolved: Vec<CheckKey> = g
        .notified
        .keys()
        .filter(|k| !a.active.contains_key(*k) && !a.muted.contains(*k))
        .cloned()
        .collect();
    let changed = !resolved.is_empty()
        || a.active
            .iter()
            .any(|(k, i)| g.notified.get(k).map(|n| n.status) != Some(i.status));
    if changed {
        let due = last + ms(cfg.group_interval);
        if now < due {
            return (None, Some(due), Some(g));
        }
        let was = worst(resolved.iter().filter_map(|k| g.notified.get(k)));
        let resolved_info: Vec<CheckInfo> = resolved
            .iter()
            .filter_map(|k| {
                let mut info = g.notified.remove(k)?;
                let current = snap.get(k);
                info.status = current.map(|o| o.status);
                if let Some(o) = current {
                    info.output = o.output.to_string();
                }
                // What ended the alert, in the headline's words: passing,
                // in maintenance, deregistered, or gone with its node.
                info.node_gone = current.is_none() && !snap.has_node(&k.node);
                info.maintenance = current.is_some() && snap.silenced(k);
                info.since_ms = now;
                Some(info)
            })
            .collect();
        let e = notice(id, &mut g, a, resolved_info, was, false, now);
        if g.notified.is_empty() {
            return (Some(e), None, None);
        }
        let wake = (!a.active.is_empty()).then(|| now + ms(cfg.repeat_interval));
        return (Some(e), wake, Some(g));
    }
    if a.active.is_empty() {
        // Only muted checks remain notified: wait for them to resolve.
        return (None, None, Some(g));
    }
    let due = last + ms(cfg.repeat_interval);
    if now < due {
        return (None, Some(due), Some(g));
    }
    let e = notice(id, &mut g, a, Vec::new(), Severity::Info, true, now);
    (Some(e), Some(now + ms(cfg.repeat_interval)), Some(g))
}

/// The highest severity among checks (warning when there is none).
fn worst<'a>(checks: impl Iterator<Item = &'a CheckInfo>) -> Severity {
    checks
        .filter_map(|c| c.status)
        .map(Severity::of_status)
        .max()
        .unwrap_or(Severity::Warning)
}

/// Builds a notice and records it in the group.
fn notice(
    id: &str,
    g: &mut GroupState,
    a: &GroupAlerts,
    resolved: Vec<CheckInfo>,
    resolved_severity: Severity,
    repeat: bool,
    now: UnixMillis,
) -> Event {
    g.seq += 1;
    g.last_notified = Some(now);
    let firing: Vec<CheckInfo> = a.active.values().cloned().collect();
    for (k, i) in &a.active {
        let mut kept = i.clone();
        kept.output = truncate(&kept.output, STATE_OUTPUT);
        g.notified.insert(k.clone(), kept);
    }
    let status = if firing.is_empty() {
        AlertStatus::Resolved
    } else {
        AlertStatus::Firing
    };
    let severity = if firing.is_empty() {
        resolved_severity
    } else {
        worst(firing.iter()).max(resolved_severity)
    };
    let mut services: Vec<String> = firing
        .iter()
        .chain(&resolved)
        .map(|c| c.service_name.clone())
        .collect();
    services.sort();
    services.dedup();
    let service = if !g.service.is_empty() {
        g.service.clone()
    } else if services.len() == 1 {
        services.remove(0)
    } else {
        String::new()
    };
    Event {
        key: format!("health/{id}/{}/{}", g.since, g.seq),
        at_ms: now,
        severity,
        service: service.clone(),
        tags: g.tags.clone(),
        body: EventBody::Health(HealthNotice {
            status,
            service,
            node: g.node.clone(),
            firing,
            resolved,
            inhibited: a.inhibited,
            repeat,
        }),
    }
}

/// Serialises a map with structured keys as a list of pairs (JSON keys must
/// be strings).
mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        m: &BTreeMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter())
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
