//! Rollouts that fail: deadlines, vanished instances, reverts.

use std::time::Duration;

use super::world::{NEW, OLD, T0, World, critical, params, passing, spec};
use crate::machine::{Action, Rollout, RolloutEvent, State};

fn reason_of(r: &Rollout) -> String {
    match &r.state {
        State::Reverted { reason, .. } | State::Failed { reason, .. } => reason.clone(),
        s => panic!("not failed: {s:?}"),
    }
}

/// The group is back where it was: stable template, old image, capacity.
fn assert_reverted(w: &World, n: usize) {
    assert_eq!(w.template(), 1, "stable template pinned");
    assert_eq!(w.images(), vec![OLD; n]);
    assert_eq!(w.group.desired_capacity, i32::try_from(n).unwrap());
    assert_eq!(w.group.max_size, i32::try_from(n).unwrap());
    assert_eq!(w.group.min_size, 2);
    assert!(w.group.suspended_processes.is_empty());
    assert!(w.group.instances.iter().all(|m| !m.protected_from_scale_in));
    assert!(
        w.min_desired >= i32::try_from(n).unwrap(),
        "capacity dipped"
    );
}

#[test]
fn instance_never_healthy_fails_at_healthy_deadline_and_reverts() {
    let mut w = World::new(6, 0);
    w.broken_new_image();
    let r = w.run(Rollout::new(spec(&w, params())));

    assert!(
        matches!(r.state, State::Reverted { aborted: false, .. }),
        "{:?}",
        r.state
    );
    let first = w.launched[0].clone();
    let expected = format!(
        "instance {first} not healthy within healthy_deadline 5m: check web-{first}:agent \
         \"web rollgate agent probe\" is critical: GET http://127.0.0.1:8080/health answered 500"
    );
    assert_eq!(reason_of(&r), expected);
    // It failed when the deadline passed, not before: first seen right
    // after the launch, five minutes later.
    let launched = w.when(|a| {
        matches!(
            a,
            Action::SetCapacity {
                desired: Some(8),
                ..
            }
        )
    });
    let failed = w
        .when(|a| matches!(a, Action::MarkImageFailed { .. }))
        .unwrap();
    let after = failed.since(launched.unwrap());
    assert!((300..=302).contains(&after.as_secs()), "{after:?}");
    assert!(w.actions().any(|a| a
        == &Action::MarkImageFailed {
            image: NEW.into(),
            reason: expected.clone(),
        }));
    let events = w.events();
    assert!(events.contains(&RolloutEvent::Failed {
        reason: expected.clone()
    }));
    assert_eq!(
        events.last(),
        Some(&RolloutEvent::Reverted { reason: expected })
    );
    // The failing surge was terminated; no old instance was touched.
    assert!(w.terminated.iter().all(|id| !id.starts_with("i-old")));
    assert_eq!(w.min_serving, 6);
    assert_reverted(&w, 6);
}

#[test]
fn an_instance_not_in_consul_is_named_as_not_registered() {
    let mut w = World::new(2, 0);
    w.health = Box::new(|p| (p.image == OLD).then(passing));
    let r = w.run(Rollout::new(spec(&w, params())));
    let id = &w.launched[0];
    assert_eq!(
        reason_of(&r),
        format!("instance {id} not healthy within healthy_deadline 5m: not registered in Consul")
    );
}

#[test]
fn flapping_health_restarts_the_timer() {
    // Booted at 20s, passing except at 25s and 32s: healthy only after 10s
    // without interruption, i.e. at 33s + 10s = 43s.
    let mut w = World::new(1, 0);
    let mut p = params();
    p.batch_size = 1;
    w.health = Box::new(|p| {
        let s = p.age.as_secs();
        (p.age >= Duration::from_secs(20) && s != 25 && s != 32).then(passing)
    });
    let r = w.run(Rollout::new(spec(&w, p)));
    assert!(matches!(r.state, State::Succeeded { .. }));
    let launched = w.when(|a| {
        matches!(
            a,
            Action::SetCapacity {
                desired: Some(2),
                ..
            }
        )
    });
    let healthy = w.when(|a| matches!(a, Action::Notify(RolloutEvent::BatchHealthy { .. })));
    let took = healthy.unwrap().since(launched.unwrap()).as_secs();
    assert!((43..=44).contains(&took), "healthy after {took}s");
}

#[test]
fn flapping_until_the_deadline_names_the_short_passing_window() {
    let mut w = World::new(1, 0);
    let mut p = params();
    p.batch_size = 1;
    p.healthy_deadline = Duration::from_secs(60);
    // Non-passing every 8th second: never 10s in a row.
    w.health = Box::new(|p| (p.age.as_secs() % 8 != 0).then(passing));
    let r = w.run(Rollout::new(spec(&w, p)));
    let reason = reason_of(&r);
    assert!(
        reason.contains("not healthy within healthy_deadline 1m: passing for only"),
        "{reason}"
    );
    assert!(reason.contains("of min_healthy_time 10s"), "{reason}");
}

#[test]
fn progress_deadline_fails_a_stuck_rollout() {
    let mut w = World::new(4, 0);
    w.broken_new_image();
    let mut p = params();
    p.progress_deadline = Duration::from_secs(120);
    let r = w.run(Rollout::new(spec(&w, p)));
    let reason = reason_of(&r);
    let id = &w.launched[0];
    assert!(
        reason.starts_with(&format!(
            "no instance became healthy within progress_deadline 2m: instance {id}: check web-{id}:agent"
        )),
        "{reason}"
    );
    assert!(reason.contains("is critical: GET http://127.0.0.1:8080/health answered 500"));
    let failed = w
        .when(|a| matches!(a, Action::MarkImageFailed { .. }))
        .unwrap();
    assert!((120..=122).contains(&failed.since(T0).as_secs()));
    assert_reverted(&w, 4);
}

#[test]
fn a_new_instance_terminated_by_aws_mid_batch_fails_naming_it() {
    let mut w = World::new(4, 0);
    let r = Rollout::new(spec(&w, params()));
    // Once the machine has seen both new instances of the batch.
    let r = w.run_until(
        r,
        Duration::from_secs(600),
        |r, _| matches!(&r.state, State::Launching(b) if b.new.len() == 2),
    );
    let victim = w.launched[1].clone();
    w.aws_terminates(&victim);
    let r = w.run(r);
    assert_eq!(
        reason_of(&r),
        format!(
            "instance {victim} was terminated by AWS before it became healthy (lifecycle state Terminating)"
        )
    );
    assert!(matches!(r.state, State::Reverted { .. }));
    assert_reverted(&w, 4);
}

#[test]
fn an_old_instance_vanishing_is_not_a_failure() {
    let mut w = World::new(6, 0);
    let r = Rollout::new(spec(&w, params()));
    // After the first batch is retired, AWS takes an old instance away that
    // the rollout has not chosen yet; the group replaces it.
    let r = w.run_until(r, Duration::from_secs(600), |r, _| {
        r.progress.batches_done == 1
    });
    let gone = r
        .progress
        .to_replace
        .iter()
        .find(|id| !r.progress.retired.contains(id))
        .unwrap()
        .clone();
    w.aws_terminates(&gone);
    let r = w.run(r);
    assert!(matches!(r.state, State::Succeeded { .. }), "{:?}", r.state);
    for a in w.actions() {
        if let Action::Terminate { ids, .. } = a {
            assert!(!ids.contains(&gone), "terminated a vanished instance");
        }
    }
    let mut t = w.terminated.clone();
    t.sort();
    t.dedup();
    assert_eq!(t.len(), w.terminated.len(), "terminated twice");
    assert_eq!(w.images(), vec![NEW; 6]);
    assert_eq!(w.group.desired_capacity, 6);
    assert!(w.min_desired >= 6);
}

#[test]
fn auto_revert_off_leaves_the_new_version_and_stops() {
    let mut w = World::new(4, 0);
    w.broken_new_image();
    let mut p = params();
    p.auto_revert = false;
    let r = w.run(Rollout::new(spec(&w, p)));
    assert!(
        matches!(
            r.state,
            State::Failed {
                revertible: true,
                ..
            }
        ),
        "{:?}",
        r.state
    );
    assert_eq!(w.template(), 2, "left on the new version");
    assert!(w.terminated.is_empty());
    assert_eq!(w.group.desired_capacity, 6, "surge left for inspection");
    assert!(
        w.group.suspended_processes.is_empty(),
        "processes given back"
    );
    assert!(
        w.actions()
            .any(|a| matches!(a, Action::MarkImageFailed { .. }))
    );
    let events = w.events();
    assert!(matches!(events.last(), Some(RolloutEvent::Failed { .. })));
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, RolloutEvent::Reverted { .. }))
    );
    // Nothing more happens on its own...
    let before = w.performed.len();
    let r = w.run_until(r, Duration::from_secs(60), |_, _| false);
    assert_eq!(w.performed.len(), before);
    // ...but an operator can still revert it.
    w.commands.push(crate::machine::OperatorCommand::Abort {
        by: "ops".into(),
        reason: "enough".into(),
    });
    let r = w.step(&r).next;
    w.tick(Duration::from_secs(1));
    let r = w.run(r);
    assert!(
        matches!(r.state, State::Reverted { aborted: true, .. }),
        "{:?}",
        r.state
    );
    assert_reverted(&w, 4);
}

#[test]
fn failure_after_accepted_batches_reverts_without_a_capacity_dip() {
    // The first two batches are fine; instances launched after that break.
    let mut w = World::new(6, 0);
    let boot = w.boot;
    w.health = Box::new(move |p| {
        let launched_at = p.now.since(T0).saturating_sub(p.age);
        let broken = p.image == NEW && launched_at > Duration::from_secs(60);
        (p.age >= boot).then(|| if broken { critical(p.id) } else { passing() })
    });
    let r = w.run(Rollout::new(spec(&w, params())));
    assert!(matches!(r.state, State::Reverted { .. }), "{:?}", r.state);
    assert!(r.progress.accepted.len() >= 2, "{:?}", r.progress);
    // Accepted new instances were replaced by stable ones before going.
    assert_eq!(w.min_serving, 6);
    assert_reverted(&w, 6);
}

#[test]
fn an_instance_failing_during_the_bake_reverts_everything() {
    let mut w = World::new(4, 0);
    let mut p = params();
    p.bake_time = Duration::from_secs(300);
    let r = Rollout::new(spec(&w, p));
    let r = w.run_until(r, Duration::from_secs(900), |r, _| {
        r.state.name() == "baking"
    });
    let sick = w.launched[2].clone();
    let boot = w.boot;
    let sick2 = sick.clone();
    w.health = Box::new(move |p| {
        (p.age >= boot).then(|| {
            if p.id == sick2 {
                critical(p.id)
            } else {
                passing()
            }
        })
    });
    let r = w.run(r);
    let reason = reason_of(&r);
    assert!(
        reason.starts_with(&format!(
            "instance {sick} stopped passing during bake_time 5m: check"
        )),
        "{reason}"
    );
    assert!(matches!(r.state, State::Reverted { .. }));
    assert_reverted(&w, 4);
}

#[test]
fn revert_loop_guard_never_reverts_to_the_failing_image() {
    let mut w = World::new(2, 0);
    w.broken_new_image();
    let mut s = spec(&w, params());
    s.stable.image = NEW.into(); // "stable" is the failing image itself
    let r = w.run(Rollout::new(s));
    assert!(matches!(r.state, State::Reverted { .. }));
    let pins: Vec<i64> = w
        .actions()
        .filter_map(|a| match a {
            Action::SetGroupTemplate { version, .. } => Some(*version),
            _ => None,
        })
        .collect();
    assert_eq!(pins, vec![2], "no revert to the identical version");
    assert!(
        w.actions()
            .any(|a| matches!(a, Action::MarkImageFailed { image, .. } if image == NEW))
    );
    // Still cleaned up: the surge is gone, capacity and processes restored.
    assert_eq!(w.group.desired_capacity, 2);
    assert_eq!(w.group.max_size, 2);
    assert!(w.group.suspended_processes.is_empty());
}

#[test]
fn revert_loop_guard_on_identical_template_version() {
    let mut w = World::new(2, 0);
    w.broken_new_image();
    w.templates.insert(1, (NEW.into(), "initial".into()));
    let mut s = spec(&w, params());
    s.target_template_version = Some(1); // the stable version is the target
    let r = w.run(Rollout::new(s));
    assert!(matches!(r.state, State::Reverted { .. }), "{:?}", r.state);
    assert!(
        !w.actions()
            .any(|a| matches!(a, Action::SetGroupTemplate { .. }))
    );
    assert!(
        !w.actions()
            .any(|a| matches!(a, Action::CreateTemplateVersion { .. }))
    );
    assert_eq!(w.group.desired_capacity, 2);
}

#[test]
fn a_revert_decrements_capacity_only_down_to_the_original() {
    // The failing batch has an extra new instance: the group replaced an old
    // one AWS took away, from the target template. Terminating all three
    // with decrement would take the group below its original capacity.
    let mut w = World::new(4, 0);
    w.broken_new_image();
    let r = Rollout::new(spec(&w, params()));
    let r = w.run_until(
        r,
        Duration::from_secs(600),
        |r, _| matches!(&r.state, State::Launching(b) if b.new.len() == 2),
    );
    w.aws_terminates("i-old3");
    let r = w.run(r);
    let State::Reverted { reason, .. } = &r.state else {
        panic!("{:?}", r.state)
    };
    assert!(
        reason.contains("not healthy within healthy_deadline"),
        "{reason}"
    );
    let no_decrement = w.actions().any(|a| {
        matches!(
            a,
            Action::Terminate {
                decrement: false,
                ..
            }
        )
    });
    assert!(
        no_decrement,
        "the extra instance is replaced, not given back"
    );
    assert!(w.min_desired >= 4, "capacity dipped to {}", w.min_desired);
    assert_reverted(&w, 4);
}
