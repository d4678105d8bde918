//! Operators: canary promotion, pause and resume, abort.

use std::time::Duration;

use super::world::{NEW, OLD, World, critical, params, passing, spec};
use crate::machine::{Action, OperatorCommand, Rollout, RolloutEvent, State};

fn canary_params() -> crate::machine::Params {
    let mut p = params();
    p.canary = 1;
    p
}

#[test]
fn canary_waits_for_promotion_then_continues() {
    let mut w = World::new(5, 0);
    let r = Rollout::new(spec(&w, canary_params()));
    let r = w.run_until(r, Duration::from_secs(600), |r, _| {
        r.state.name() == "canary_paused"
    });
    assert!(matches!(r.state, State::CanaryPaused(_)));
    // Waiting for a person is not a stuck rollout: hours go by, nothing moves.
    let before = w.performed.len();
    let r = w.run_until(r, Duration::from_secs(3 * 3600), |_, _| false);
    assert!(matches!(r.state, State::CanaryPaused(_)), "{:?}", r.state);
    assert_eq!(w.performed.len(), before, "no action while waiting");
    assert_eq!(
        w.group.desired_capacity, 6,
        "the canary is surge: old ones all serve"
    );
    assert!(w.terminated.is_empty());

    w.commands.push(OperatorCommand::Promote);
    let r = w.run(r);
    assert!(matches!(r.state, State::Succeeded { .. }), "{:?}", r.state);
    assert_eq!(
        w.events(),
        vec![
            RolloutEvent::Started,
            RolloutEvent::BatchHealthy { n: 1, of: 3 },
            RolloutEvent::CanaryWaiting {
                auto_promote_at: None
            },
            RolloutEvent::Promoted,
            RolloutEvent::BatchHealthy { n: 2, of: 3 },
            RolloutEvent::BatchHealthy { n: 3, of: 3 },
            RolloutEvent::Succeeded,
        ]
    );
    assert_eq!(w.images(), vec![NEW; 5]);
    assert!(w.min_desired >= 5);
}

#[test]
fn canary_auto_promotes_after_bake_time() {
    let mut w = World::new(3, 0);
    let mut p = canary_params();
    p.auto_promote = true;
    p.bake_time = Duration::from_secs(120);
    let r = w.run(Rollout::new(spec(&w, p)));
    assert!(matches!(r.state, State::Succeeded { .. }));
    let waiting = w
        .when(|a| matches!(a, Action::Notify(RolloutEvent::CanaryWaiting { .. })))
        .unwrap();
    let promoted = w
        .when(|a| a == &Action::Notify(RolloutEvent::Promoted))
        .unwrap();
    assert_eq!(promoted.since(waiting), Duration::from_secs(120));
    assert!(w.events().contains(&RolloutEvent::CanaryWaiting {
        auto_promote_at: Some(waiting.plus(Duration::from_secs(120)))
    }));
}

#[test]
fn a_promote_before_the_canary_is_healthy_skips_the_pause() {
    let mut w = World::new(3, 0);
    w.commands.push(OperatorCommand::Promote);
    let r = w.run(Rollout::new(spec(&w, canary_params())));
    assert!(matches!(r.state, State::Succeeded { .. }));
    let events = w.events();
    assert!(events.contains(&RolloutEvent::Promoted));
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, RolloutEvent::CanaryWaiting { .. }))
    );
}

#[test]
fn a_canary_turning_unhealthy_while_waiting_fails() {
    let mut w = World::new(3, 0);
    let r = Rollout::new(spec(&w, canary_params()));
    let r = w.run_until(r, Duration::from_secs(600), |r, _| {
        r.state.name() == "canary_paused"
    });
    let canary = w.launched[0].clone();
    w.health = Box::new(|p| {
        Some(if p.image == NEW {
            critical(p.id)
        } else {
            passing()
        })
    });
    let r = w.run(r);
    let State::Reverted { reason, .. } = &r.state else {
        panic!("{:?}", r.state)
    };
    assert!(
        reason.starts_with(&format!(
            "canary instance {canary} stopped passing while waiting for promotion: check web-{canary}:agent"
        )),
        "{reason}"
    );
    assert_eq!(w.images(), vec![OLD; 3]);
    assert!(w.min_desired >= 3);
}

#[test]
fn pause_freezes_actions_and_deadlines_resume_shifts_them() {
    let mut w = World::new(2, 0);
    w.health = Box::new(|p| {
        Some(if p.image == NEW {
            critical(p.id)
        } else {
            passing()
        })
    });
    let r = Rollout::new(spec(&w, params()));
    // One minute into the first batch, an operator pauses for ten minutes:
    // longer than the 5m healthy deadline.
    let r = w.run_until(r, Duration::from_secs(600), |_, w| !w.launched.is_empty());
    let launched = w.now;
    let r = w.run_until(r, Duration::from_secs(60), |_, _| false);
    w.commands.push(OperatorCommand::Pause);
    let r = w.run_until(r, Duration::from_secs(2), |_, _| false);
    assert!(matches!(r.state, State::Paused { .. }));
    let before = w.performed.len();
    let r = w.run_until(r, Duration::from_secs(600), |_, _| false);
    assert!(
        matches!(r.state, State::Paused { .. }),
        "a deadline fired while paused"
    );
    assert_eq!(w.performed.len(), before, "an action while paused");

    w.commands.push(OperatorCommand::Resume);
    let r = w.run(r);
    assert!(matches!(r.state, State::Reverted { .. }), "{:?}", r.state);
    // The 5m deadline moved by the ~10m paused: it fired ~15m after launch.
    let failed = w
        .when(|a| matches!(a, Action::MarkImageFailed { .. }))
        .unwrap();
    let after = failed.since(launched).as_secs();
    assert!((900..=905).contains(&after), "failed {after}s after launch");
    let events = w.events();
    let pos = |e: &RolloutEvent| events.iter().position(|x| x == e).unwrap();
    assert!(pos(&RolloutEvent::Paused { n: 1 }) < pos(&RolloutEvent::Resumed { n: 1 }));
}

#[test]
fn abort_reverts_without_marking_the_image_failed() {
    let mut w = World::new(6, 0);
    let r = Rollout::new(spec(&w, params()));
    let r = w.run_until(r, Duration::from_secs(900), |r, _| {
        r.progress.batches_done == 1
    });
    w.commands.push(OperatorCommand::Abort {
        by: "alice".into(),
        reason: "wrong build".into(),
    });
    let r = w.run(r);
    let State::Reverted {
        reason, aborted, ..
    } = &r.state
    else {
        panic!("{:?}", r.state)
    };
    assert!(aborted);
    assert_eq!(reason, "aborted by alice: wrong build");
    assert!(
        !w.actions()
            .any(|a| matches!(a, Action::MarkImageFailed { .. }))
    );
    let events = w.events();
    assert!(events.contains(&RolloutEvent::Aborted {
        by: "alice".into(),
        reason: "wrong build".into()
    }));
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, RolloutEvent::Failed { .. }))
    );
    assert!(matches!(events.last(), Some(RolloutEvent::Reverted { .. })));
    assert_eq!(w.template(), 1);
    assert_eq!(w.images(), vec![OLD; 6]);
    assert_eq!(w.group.desired_capacity, 6);
    assert_eq!(
        w.min_serving, 6,
        "the revert replaced accepted instances surge style"
    );
    assert!(w.min_desired >= 6);
}

#[test]
fn abort_while_paused_reverts() {
    let mut w = World::new(2, 0);
    let r = Rollout::new(spec(&w, params()));
    let r = w.run_until(r, Duration::from_secs(600), |_, w| !w.launched.is_empty());
    w.commands.push(OperatorCommand::Pause);
    let r = w.run_until(r, Duration::from_secs(30), |_, _| false);
    w.commands.push(OperatorCommand::Abort {
        by: "bob".into(),
        reason: "later".into(),
    });
    let r = w.run(r);
    assert!(
        matches!(r.state, State::Reverted { aborted: true, .. }),
        "{:?}",
        r.state
    );
    assert_eq!(w.images(), vec![OLD; 2]);
    assert_eq!(w.group.desired_capacity, 2);
}

#[test]
fn abort_before_start_does_nothing_to_the_group() {
    let mut w = World::new(2, 0);
    w.commands.push(OperatorCommand::Abort {
        by: "bob".into(),
        reason: "no".into(),
    });
    let r = w.run(Rollout::new(spec(&w, params())));
    assert!(matches!(r.state, State::Reverted { aborted: true, .. }));
    assert!(w.actions().all(|a| matches!(a, Action::Notify(_))));
}
