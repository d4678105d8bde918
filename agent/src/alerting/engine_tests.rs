//! The engine under a fake clock: every test steps it once per simulated
//! second over a scripted cluster, collecting the events it emits.

use std::time::Duration;

use super::*;
use crate::consul::types::{CheckStatus, HealthCheck};
use crate::notify::EventBody;

use CheckStatus::{Critical, Passing, Warning};

const S: u64 = 1000;

fn cfg() -> WatcherConfig {
    WatcherConfig {
        change_threshold: Duration::from_secs(30),
        group_wait: Duration::from_secs(10),
        group_interval: Duration::from_secs(60),
        repeat_interval: Duration::from_secs(3600),
        ..WatcherConfig::default()
    }
}

fn hc(node: &str, id: &str, service: &str, status: CheckStatus) -> HealthCheck {
    HealthCheck {
        node: node.into(),
        check_id: id.into(),
        name: format!("{id} check"),
        status: Some(status),
        output: format!("{id} is {status}"),
        service_id: if service.is_empty() {
            String::new()
        } else {
            format!("{service}-i-0{node}")
        },
        service_name: service.into(),
        service_tags: Some(vec!["prod".into()]),
        ..HealthCheck::default()
    }
}

/// A simulation: state, clock, and every event emitted with its time.
struct Sim {
    cfg: WatcherConfig,
    state: State,
    now: u64,
    events: Vec<(u64, Event)>,
}

impl Sim {
    fn new(cfg: WatcherConfig) -> Self {
        Self {
            cfg,
            state: State::default(),
            now: 1_000_000,
            events: Vec::new(),
        }
    }

    /// Steps once per second for `secs` seconds with the cluster `world(t)`
    /// (t in seconds since the start of this call).
    fn run(&mut self, secs: u64, world: impl Fn(u64) -> Vec<HealthCheck>) {
        for t in 0..secs {
            let snap = Snapshot::from_checks(&world(t));
            let step = step(&self.cfg, std::mem::take(&mut self.state), &snap, self.now);
            if let Some(w) = step.next_wake {
                assert!(w > self.now, "a wake-up is always in the future");
            }
            self.state = step.state;
            for e in step.events {
                self.events.push((self.now, e));
            }
            self.now += S;
        }
    }

    fn health(&self) -> Vec<(u64, &HealthNotice)> {
        self.events
            .iter()
            .filter_map(|(t, e)| match &e.body {
                EventBody::Health(h) => Some((*t, h)),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn a_check_flapping_every_5s_for_2_minutes_sends_nothing() {
    let mut sim = Sim::new(cfg());
    sim.run(10, |_| vec![hc("n1", "web", "web", Passing)]);
    sim.run(120, |t| {
        let status = if (t / 5) % 2 == 0 { Critical } else { Passing };
        vec![hc("n1", "web", "web", status)]
    });
    sim.run(120, |_| vec![hc("n1", "web", "web", Passing)]);
    assert!(sim.events.is_empty(), "{:?}", sim.events);
    assert!(sim.state.checks.is_empty() && sim.state.groups.is_empty());
}

#[test]
fn critical_past_the_threshold_fires_once_then_resolves_once() {
    let mut sim = Sim::new(cfg());
    sim.run(5, |_| vec![hc("n1", "web", "web", Passing)]);
    let start = sim.now;
    sim.run(600, |_| vec![hc("n1", "web", "web", Critical)]);
    let h = sim.health();
    assert_eq!(h.len(), 1, "{h:?}");
    let (t, n) = h[0];
    assert_eq!(n.status, AlertStatus::Firing);
    // threshold (30 s) + group_wait (10 s)
    assert_eq!(t - start, 40 * S);
    assert_eq!(
        n.firing[0].since_ms, start,
        "since = when it turned critical"
    );
    assert_eq!(n.firing[0].instance, "i-0n1");
    let resolved_start = sim.now;
    sim.run(600, |_| vec![hc("n1", "web", "web", Passing)]);
    let h = sim.health();
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(h[1].1.status, AlertStatus::Resolved);
    assert_eq!(h[1].1.resolved.len(), 1);
    assert!(h[1].0 - resolved_start >= 30 * S);
    assert!(sim.state.groups.is_empty() && sim.state.checks.is_empty());
    let e = &sim.events[1].1;
    assert_eq!(
        e.severity,
        Severity::Critical,
        "a resolved notice routes like its alert"
    );
    assert_eq!(e.tags, vec!["prod".to_string()]);
}

#[test]
fn first_seen_passing_sends_nothing_first_seen_critical_fires() {
    let mut sim = Sim::new(cfg());
    sim.run(300, |_| vec![hc("n1", "a", "web", Passing)]);
    assert!(sim.events.is_empty());
    let mut sim = Sim::new(cfg());
    sim.run(300, |_| vec![hc("n1", "a", "web", Critical)]);
    assert_eq!(sim.health().len(), 1);
}

#[test]
fn an_alert_that_clears_before_group_wait_sends_nothing_at_all() {
    let mut sim = Sim::new(WatcherConfig {
        group_wait: Duration::from_secs(60),
        ..cfg()
    });
    sim.run(40, |_| vec![hc("n1", "a", "web", Critical)]); // effective at 30 s
    sim.run(300, |_| vec![hc("n1", "a", "web", Passing)]);
    assert!(sim.events.is_empty(), "no resolved without a firing notice");
}

#[test]
fn checks_of_one_group_are_sent_together() {
    let mut sim = Sim::new(cfg());
    sim.run(200, |t| {
        vec![
            hc("n1", "a", "web", Critical),
            hc("n1", "b", "web", if t >= 5 { Critical } else { Passing }),
            hc("n2", "a", "web", Passing),
        ]
    });
    let h = sim.health();
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(h[0].1.firing.len(), 2);
    assert_eq!(sim.events[0].1.key.split('/').next(), Some("health"));
    // A third check later: one notice after group_interval, listing all three.
    sim.run(200, |_| {
        vec![
            hc("n1", "a", "web", Critical),
            hc("n1", "b", "web", Critical),
            hc("n1", "c", "web", Warning),
        ]
    });
    let h = sim.health();
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(h[1].1.firing.len(), 3);
    assert!(h[1].0 - h[0].0 >= 60 * S, "group_interval holds");
}

#[test]
fn grouping_by_service_only_puts_nodes_together() {
    let mut sim = Sim::new(WatcherConfig {
        group_by: vec![GroupBy::Service],
        ..cfg()
    });
    sim.run(100, |_| {
        vec![
            hc("n1", "a", "web", Critical),
            hc("n2", "a", "web", Critical),
        ]
    });
    let h = sim.health();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].1.firing.len(), 2);
    assert_eq!(h[0].1.node, "");
    assert_eq!(
        crate::notify::render::title(&sim.events[0].1),
        "FIRING web: 2 checks critical on 2 nodes"
    );
}

#[test]
fn unresolved_alerts_repeat_every_repeat_interval() {
    let mut sim = Sim::new(WatcherConfig {
        repeat_interval: Duration::from_secs(100),
        ..cfg()
    });
    sim.run(400, |_| vec![hc("n1", "a", "web", Critical)]);
    let h = sim.health();
    // first at 40 s, repeats at 140, 240, 340
    assert_eq!(h.len(), 4, "{h:?}");
    assert!(!h[0].1.repeat && h[1..].iter().all(|(_, n)| n.repeat));
    let keys: Vec<&str> = sim.events.iter().map(|(_, e)| e.key.as_str()).collect();
    let mut unique = keys.clone();
    unique.dedup();
    assert_eq!(unique.len(), 4, "every notice has its own key: {keys:?}");
}

#[test]
fn a_status_change_inside_a_firing_group_is_notified() {
    let mut sim = Sim::new(cfg());
    sim.run(100, |_| vec![hc("n1", "a", "web", Warning)]);
    sim.run(200, |_| vec![hc("n1", "a", "web", Critical)]);
    let h = sim.health();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0].1.firing[0].status, Some(Warning));
    assert_eq!(h[1].1.firing[0].status, Some(Critical));
    assert_eq!(sim.events[0].1.severity, Severity::Warning);
    assert_eq!(sim.events[1].1.severity, Severity::Critical);
}

#[test]
fn thresholds_can_be_set_per_service_and_per_check() {
    let mut c = cfg();
    c.service_thresholds
        .insert("db".into(), Duration::from_secs(120));
    c.check_thresholds
        .insert("fast".into(), Duration::from_secs(0));
    let mut sim = Sim::new(c);
    let start = sim.now;
    sim.run(300, |_| {
        vec![
            hc("n1", "slow", "db", Critical),
            hc("n2", "fast", "db", Critical),
            hc("n3", "x", "web", Critical),
        ]
    });
    let mut firsts: Vec<(String, u64)> = sim
        .health()
        .iter()
        .map(|(t, n)| (n.firing[0].check_id.clone(), (t - start) / S))
        .collect();
    firsts.sort();
    assert_eq!(
        firsts,
        vec![("fast".into(), 10), ("slow".into(), 130), ("x".into(), 40)]
    );
}

#[test]
fn maintenance_is_a_silence_not_a_failure() {
    let mut sim = Sim::new(cfg());
    sim.run(10, |_| {
        vec![hc("n1", "a", "web", Passing), hc("n2", "a", "web", Passing)]
    });
    sim.run(600, |_| {
        vec![
            hc("n1", "_node_maintenance", "", Critical),
            hc("n1", "a", "web", Critical),
            hc("n1", "serfHealth", "", Critical),
            hc("n2", "_service_maintenance:web-i-0n2", "web", Critical),
            hc("n2", "a", "web", Critical),
        ]
    });
    assert!(sim.events.is_empty(), "{:?}", sim.events);
}

#[test]
fn maintenance_after_a_notice_mutes_without_resolving() {
    let mut sim = Sim::new(cfg());
    sim.run(100, |_| vec![hc("n1", "a", "web", Critical)]);
    assert_eq!(sim.health().len(), 1);
    sim.run(600, |_| {
        vec![
            hc("n1", "a", "web", Critical),
            hc("n1", "_node_maintenance", "", Critical),
        ]
    });
    assert_eq!(
        sim.health().len(),
        1,
        "no resolved, no repeat while silenced"
    );
    sim.run(200, |_| vec![hc("n1", "a", "web", Passing)]);
    let h = sim.health();
    assert_eq!(h.len(), 2);
    assert_eq!(h[1].1.status, AlertStatus::Resolved);
}

#[test]
fn a_node_down_is_one_alert_naming_the_node_not_one_per_check() {
    let mut sim = Sim::new(cfg());
    let world = |down: bool| {
        let status = if down { Critical } else { Passing };
        let mut v: Vec<HealthCheck> = (0..20)
            .map(|i| hc("node-3", &format!("service:web-{i}"), "web", status))
            .collect();
        v.push(hc("node-3", "serfHealth", "", status));
        v.push(hc("node-4", "service:web-x", "web", Passing));
        v
    };
    sim.run(10, |_| world(false));
    // The service checks turn critical a second before serfHealth does.
    sim.run(300, |t| {
        let mut v = world(true);
        if t == 0 {
            v.iter_mut()
                .filter(|c| c.check_id == "serfHealth")
                .for_each(|c| c.status = Some(Passing));
        }
        v
    });
    let h = sim.health();
    assert_eq!(h.len(), 1, "{h:?}");
    let n = h[0].1;
    assert_eq!(n.node, "node-3");
    assert_eq!(n.firing.len(), 1);
    assert_eq!(n.firing[0].check_id, "serfHealth");
    assert_eq!(n.inhibited, 20);
    let title = crate::notify::render::title(&sim.events[0].1);
    assert!(
        title.contains("node-3 is down") && title.contains("20 service checks inhibited"),
        "{title}"
    );
    // The node comes back: one resolved notice.
    sim.run(300, |_| world(false));
    let h = sim.health();
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(h[1].1.status, AlertStatus::Resolved);
}

#[test]
fn a_deregistered_firing_check_resolves_as_gone() {
    let mut sim = Sim::new(cfg());
    let serf = || hc("n1", "serfHealth", "", Passing);
    sim.run(100, |_| vec![serf(), hc("n1", "a", "web", Critical)]);
    sim.run(200, |_| vec![serf()]);
    let h = sim.health();
    assert_eq!(h.len(), 2);
    assert_eq!(h[1].1.resolved[0].status, None);
    assert_eq!(h[1].1.resolved[0].status_word(), "deregistered");
    let title = crate::notify::render::title(&sim.events[1].1);
    assert_eq!(title, "RESOLVED web: 1 check deregistered on n1");
}

/// The finding of issue 17: after a revert, the bad instances were drained
/// (maintenance), deregistered and terminated (their node left Consul), and
/// the headline said "2 checks passing again".
#[test]
fn checks_gone_with_a_terminated_instance_are_not_called_passing() {
    let mut sim = Sim::new(cfg());
    let checks = |status| {
        vec![
            hc("n7", "serfHealth", "", Passing),
            hc("n7", "service:web", "web", status),
            hc("n7", "web:ready", "web", status),
        ]
    };
    sim.run(100, |_| checks(Critical));
    assert_eq!(sim.health().len(), 1);
    sim.run(20, |_| {
        let mut v = checks(Critical);
        v.push(hc("n7", "_service_maintenance:web-i-0n7", "web", Critical));
        v
    });
    sim.run(200, |_| vec![hc("n8", "serfHealth", "", Passing)]);
    let h = sim.health();
    assert_eq!(h.len(), 2, "{h:?}");
    assert!(
        h[1].1
            .resolved
            .iter()
            .all(|c| c.status_word() == "terminated")
    );
    let title = crate::notify::render::title(&sim.events[1].1);
    assert_eq!(
        title,
        "RESOLVED web: instance i-0n7 terminated (2 checks gone) on n7"
    );
    assert!(!title.contains("passing"), "{title}");
}

#[test]
fn a_restart_from_saved_state_neither_repeats_nor_forgets() {
    let mut sim = Sim::new(cfg());
    sim.run(100, |_| vec![hc("n1", "a", "web", Critical)]);
    assert_eq!(sim.health().len(), 1);
    // Save and load the state, as the watcher does through Consul KV.
    let json = serde_json::to_string(&sim.state).expect("serialises");
    sim.state = serde_json::from_str(&json).expect("loads");
    sim.run(300, |_| vec![hc("n1", "a", "web", Critical)]);
    assert_eq!(sim.health().len(), 1, "no repeat after a restart");
    sim.run(300, |_| vec![hc("n1", "a", "web", Passing)]);
    assert_eq!(sim.health().len(), 2, "the resolution is not forgotten");
}

#[test]
fn recomputing_a_step_gives_the_same_keys() {
    let c = cfg();
    let snap = Snapshot::from_checks(&[hc("n1", "a", "web", Critical)]);
    let s1 = step(&c, State::default(), &snap, 0).state;
    let s2 = step(&c, s1, &snap, 40 * S).state;
    let a = step(&c, s2.clone(), &snap, 50 * S);
    let b = step(&c, s2, &snap, 50 * S + 7);
    assert_eq!(a.events.len(), 1);
    assert_eq!(a.events[0].key, b.events[0].key);
}

#[test]
fn next_wake_points_at_the_next_deadline() {
    let c = cfg();
    let snap = Snapshot::from_checks(&[hc("n1", "a", "web", Critical)]);
    let s = step(&c, State::default(), &snap, 0);
    assert_eq!(s.next_wake, Some(30 * S), "threshold");
    let s = step(&c, s.state, &snap, 30 * S);
    assert_eq!(s.next_wake, Some(40 * S), "group_wait");
    let s = step(&c, s.state, &snap, 40 * S);
    assert_eq!(s.events.len(), 1);
    assert_eq!(s.next_wake, Some(40 * S + 3600 * S), "repeat_interval");
}

/// A simulation step over an answer Consul filtered by ACLs.
fn partial(checks: &[HealthCheck]) -> Snapshot {
    let mut s = Snapshot::from_checks(checks);
    s.partial = true;
    s
}

#[test]
fn checks_hidden_by_acls_are_neither_resolved_nor_fired() {
    let c = cfg();
    let mut sim = Sim::new(c.clone());
    // a (web) fires; b (api) is critical but not yet past its threshold.
    sim.run(60, |t| {
        vec![
            hc("n1", "a", "web", Critical),
            hc("n2", "b", "api", if t >= 50 { Critical } else { Passing }),
        ]
    });
    assert_eq!(sim.health().len(), 1, "web fired");
    // The token loses sight of both: answers are filtered and empty.
    for _ in 0..600 {
        let step = step(&c, std::mem::take(&mut sim.state), &partial(&[]), sim.now);
        sim.state = step.state;
        sim.events.extend(step.events.into_iter().map(|e| (0, e)));
        sim.now += S;
    }
    assert_eq!(
        sim.health().len(),
        1,
        "no resolved notice for web and no firing one for api while hidden"
    );
    // Visible again, both still critical: api fires now, web is not
    // resolved (it never recovered).
    sim.run(60, |_| {
        vec![
            hc("n1", "a", "web", Critical),
            hc("n2", "b", "api", Critical),
        ]
    });
    let notices = sim.health();
    assert_eq!(notices.len(), 2, "{notices:?}");
    assert_eq!(notices[1].1.status, AlertStatus::Firing);
}

#[test]
fn an_unfiltered_answer_without_a_check_still_resolves_it() {
    let mut sim = Sim::new(cfg());
    sim.run(60, |_| vec![hc("n1", "a", "web", Critical)]);
    sim.run(120, |_| vec![]);
    let notices = sim.health();
    assert_eq!(
        notices.len(),
        2,
        "a check that is gone (not hidden) resolves"
    );
    assert_eq!(notices[1].1.status, AlertStatus::Resolved);
}
