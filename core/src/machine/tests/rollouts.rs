//! Rollouts that succeed.

use std::time::Duration;

use super::world::{NEW, World, params, spec};
use crate::machine::{Action, Rollout, RolloutEvent, State};

#[test]
fn good_rollout_surges_batch_by_batch_and_succeeds() {
    let mut w = World::new(6, 0);
    let old: Vec<String> = w.ec2.keys().cloned().collect();
    let r = w.run(Rollout::new(spec(&w, params())));

    assert!(matches!(r.state, State::Succeeded { .. }), "{:?}", r.state);
    // Surge: capacity never below the original, serving never below it.
    assert_eq!(w.min_desired, 6);
    assert_eq!(w.min_serving, 6);
    // Every instance on the target, the group as it was.
    assert_eq!(w.images(), vec![NEW; 6]);
    assert_eq!(w.group.desired_capacity, 6);
    assert_eq!(w.group.max_size, 6, "max restored after being raised");
    assert_eq!(w.group.min_size, 2);
    assert!(w.group.suspended_processes.is_empty(), "processes resumed");
    assert!(w.group.instances.iter().all(|m| !m.protected_from_scale_in));
    assert_eq!(w.template(), 2, "pinned to the created version");
    // Exactly the old instances were terminated, once each; 6 launched.
    let mut terminated = w.terminated.clone();
    terminated.sort();
    assert_eq!(terminated, old);
    assert_eq!(w.launched.len(), 6);
    // The surge peaked at one batch.
    let peak = w.actions().filter_map(|a| match a {
        Action::SetCapacity { desired, .. } => *desired,
        _ => None,
    });
    assert_eq!(peak.max(), Some(8));
    // Explicit versions only.
    for a in w.actions() {
        if let Action::SetGroupTemplate { version, .. } = a {
            assert_eq!(*version, 2);
        }
    }
    assert_eq!(
        w.stable_recorded,
        vec![(2, NEW.to_owned(), "2.0.0".to_owned())]
    );
    assert_eq!(
        w.events(),
        vec![
            RolloutEvent::Started,
            RolloutEvent::BatchHealthy { n: 1, of: 3 },
            RolloutEvent::BatchHealthy { n: 2, of: 3 },
            RolloutEvent::BatchHealthy { n: 3, of: 3 },
            RolloutEvent::Succeeded,
        ]
    );
    assert!(
        !w.actions()
            .any(|a| matches!(a, Action::MarkImageFailed { .. }))
    );
}

#[test]
fn old_instances_are_terminated_only_after_their_batch_is_healthy() {
    let mut w = World::new(4, 0);
    let r = w.run(Rollout::new(spec(&w, params())));
    assert!(matches!(r.state, State::Succeeded { .. }));
    // Each Terminate comes after a Protect of as many healthy new instances.
    let mut protected = 0;
    let mut terminated = 0;
    for a in w.actions() {
        match a {
            Action::Protect(ids) => protected = protected.max(ids.len() + terminated),
            Action::Terminate { ids, decrement } => {
                assert!(decrement);
                terminated += ids.len();
                assert!(terminated <= protected, "terminated before protecting");
            }
            _ => {}
        }
    }
}

#[test]
fn last_batch_may_be_smaller() {
    let mut w = World::new(5, 0);
    let r = w.run(Rollout::new(spec(&w, params())));
    assert!(matches!(r.state, State::Succeeded { .. }));
    let healthy: Vec<_> = w
        .events()
        .into_iter()
        .filter(|e| matches!(e, RolloutEvent::BatchHealthy { .. }))
        .collect();
    assert_eq!(healthy.len(), 3);
    assert_eq!(healthy[2], RolloutEvent::BatchHealthy { n: 3, of: 3 });
    assert_eq!(w.launched.len(), 5);
    assert_eq!(w.min_desired, 5);
}

#[test]
fn instances_already_on_the_target_are_skipped() {
    let mut w = World::new(4, 2);
    let on_target: Vec<String> = w
        .ec2
        .iter()
        .filter(|(_, (img, _))| img == NEW)
        .map(|(id, _)| id.clone())
        .collect();
    let mut s = spec(&w, params());
    // Even if a stale plan lists one of them, it is not replaced.
    s.instances_to_replace.push(on_target[0].clone());
    let r = w.run(Rollout::new(s));
    assert!(matches!(r.state, State::Succeeded { .. }));
    assert_eq!(w.launched.len(), 4);
    for id in &on_target {
        assert!(!w.terminated.contains(id), "{id} was on the target already");
        assert!(w.group.instances.iter().any(|m| &m.instance_id == id));
    }
    assert!(
        w.events()
            .contains(&RolloutEvent::BatchHealthy { n: 2, of: 2 })
    );
    assert_eq!(w.images(), vec![NEW; 6]);
}

#[test]
fn processes_suspended_by_an_operator_stay_suspended() {
    let mut w = World::new(2, 0);
    w.group.suspended_processes = vec!["AZRebalance".into()];
    let r = w.run(Rollout::new(spec(&w, params())));
    assert!(matches!(r.state, State::Succeeded { .. }));
    assert_eq!(w.group.suspended_processes, vec!["AZRebalance".to_owned()]);
    let suspended = w.actions().find_map(|a| match a {
        Action::SuspendProcesses(p) => Some(p.clone()),
        _ => None,
    });
    assert_eq!(
        suspended,
        Some(vec![
            "AlarmNotification".to_owned(),
            "ScheduledActions".to_owned()
        ])
    );
}

#[test]
fn progress_deadline_restarts_whenever_an_instance_becomes_healthy() {
    // Six batches of ~32s each: far longer than the 60s progress deadline
    // in total, but an instance becomes healthy well within each minute.
    let mut w = World::new(6, 0);
    let mut p = params();
    p.batch_size = 1;
    p.progress_deadline = Duration::from_secs(60);
    let r = w.run(Rollout::new(spec(&w, p)));
    assert!(matches!(r.state, State::Succeeded { .. }), "{:?}", r.state);
    assert!(w.now.since(super::world::T0) > Duration::from_secs(150));
}

#[test]
fn nothing_to_replace_still_pins_the_template_and_records_stable() {
    let mut w = World::new(0, 3);
    let r = w.run(Rollout::new(spec(&w, params())));
    assert!(matches!(r.state, State::Succeeded { .. }));
    assert!(w.launched.is_empty() && w.terminated.is_empty());
    assert_eq!(w.template(), 2);
    assert_eq!(w.stable_recorded.len(), 1);
}
