//! Single steps: timers, terminal states, template creation, choices made
//! before acting, the world diverging.

use std::time::Duration;

use super::world::{NEW, World, launching_with_one_instance, params, spec};
use crate::machine::{Action, OperatorCommand, Rollout, RolloutEvent, State, Timestamp, step};

fn batch_timer(r: &Rollout) -> (Option<Timestamp>, Option<Timestamp>) {
    let State::Launching(b) = &r.state else {
        panic!("{:?}", r.state)
    };
    (b.new[0].passing_since, b.new[0].healthy_at)
}

#[test]
fn one_non_passing_observation_restarts_min_healthy_time() {
    let (mut w, r, up) = launching_with_one_instance();
    up.set(true);
    let t = w.now;
    let r = w.step(&r).next;
    assert_eq!(batch_timer(&r), (Some(t), None));
    w.tick(Duration::from_secs(9));
    let r = w.step(&r).next;
    assert_eq!(batch_timer(&r), (Some(t), None), "9s < 10s");
    up.set(false);
    w.tick(Duration::from_secs(1));
    let r = w.step(&r).next;
    assert_eq!(batch_timer(&r), (None, None), "the blip restarts the timer");
    up.set(true);
    w.tick(Duration::from_secs(1));
    let t2 = w.now;
    let r = w.step(&r).next;
    w.tick(Duration::from_secs(9));
    let s = w.step(&r);
    assert!(
        matches!(s.next.state, State::Launching(_)),
        "only 9s since the blip"
    );
    assert_eq!(s.next.wake_at(), Some(t2.plus(Duration::from_secs(10))));
    w.tick(Duration::from_secs(1));
    let s = w.step(&s.next);
    assert!(
        matches!(s.next.state, State::Retiring(_)),
        "{:?}",
        s.next.state
    );
    assert!(
        !s.actions
            .iter()
            .any(|a| matches!(a, Action::Terminate { .. })),
        "old instances are chosen and persisted before any is terminated"
    );
    assert!(
        s.actions
            .contains(&Action::Notify(RolloutEvent::BatchHealthy { n: 1, of: 1 }))
    );
}

#[test]
fn terminal_states_do_nothing_and_ignore_commands() {
    let mut w = World::new(1, 0);
    let r = w.run(Rollout::new(spec(&w, params())));
    assert!(matches!(r.state, State::Succeeded { .. }));
    let mut obs = w.observe();
    obs.commands = vec![
        OperatorCommand::Pause,
        OperatorCommand::Resume,
        OperatorCommand::Promote,
        OperatorCommand::Abort {
            by: "x".into(),
            reason: "y".into(),
        },
    ];
    let s = step(&r, &obs, w.now.plus(Duration::from_secs(3600)));
    assert_eq!(s.next, r);
    assert!(s.actions.is_empty());
    assert_eq!(s.next.wake_at(), None);
}

#[test]
fn template_version_is_asked_until_observed_then_pinned_by_number() {
    let w = World::new(2, 0);
    let r = Rollout::new(spec(&w, params()));
    let obs = w.observe();
    let s = step(&r, &obs, w.now);
    assert_eq!(s.actions, vec![Action::Notify(RolloutEvent::Started)]);
    let s = step(&s.next, &obs, w.now);
    let create = s
        .actions
        .iter()
        .filter(|a| matches!(a, Action::CreateTemplateVersion { .. }));
    assert_eq!(create.count(), 1);
    // Not observed yet: asked again (the Fleet returns the same number).
    let again = step(&s.next, &obs, w.now);
    assert_eq!(again.actions, s.actions);
    let mut obs = obs;
    obs.created_template_version = Some(7);
    let s = step(&s.next, &obs, w.now);
    assert_eq!(s.next.spec.target_template_version, Some(7));
    assert!(s.actions.contains(&Action::SetGroupTemplate {
        template_id: "lt-1".into(),
        version: 7
    }));
    assert!(
        !s.actions
            .iter()
            .any(|a| matches!(a, Action::CreateTemplateVersion { .. }))
    );
}

#[test]
fn preparation_stuck_past_the_progress_deadline_fails() {
    let w = World::new(2, 0);
    let r = Rollout::new(spec(&w, params()));
    let obs = w.observe();
    let mut r = step(&r, &obs, w.now).next;
    // The executor never manages to create the version, stepping every
    // second (a silence would move the deadline: see tests::gaps).
    for s in 1..600 {
        r = step(&r, &obs, w.now.plus(Duration::from_secs(s))).next;
        assert!(matches!(r.state, State::Preparing { .. }), "{:?}", r.state);
    }
    let s = step(&r, &obs, w.now.plus(Duration::from_secs(600)));
    let State::Reverting(rv) = &s.next.state else {
        panic!("{:?}", s.next.state)
    };
    assert_eq!(
        rv.reason,
        "rollout not prepared within progress_deadline 10m: waiting for processes \
         AZRebalance, AlarmNotification, ScheduledActions to be suspended; \
         a launch template version for ami-new to be created"
    );
}

#[test]
fn a_desired_capacity_lowered_by_someone_is_raised_again() {
    let mut w = World::new(2, 0);
    let r = Rollout::new(spec(&w, params()));
    let r = w.run_until(r, Duration::from_secs(60), |r, _| {
        r.state.name() == "launching"
    });
    w.group.desired_capacity = 2;
    let s = w.step(&r);
    assert!(s.actions.contains(&Action::SetCapacity {
        min: None,
        max: None,
        desired: Some(4)
    }));
    let r = w.run(s.next);
    assert!(matches!(r.state, State::Succeeded { .. }));
    assert_eq!(w.group.desired_capacity, 2);
}

#[test]
fn extra_instances_from_a_raised_capacity_join_the_batch_and_are_given_back() {
    let mut w = World::new(2, 0);
    let r = Rollout::new(spec(&w, params()));
    let r = w.run_until(r, Duration::from_secs(60), |r, _| {
        r.state.name() == "launching"
    });
    w.group.max_size = 5;
    w.group.desired_capacity = 5; // someone scales out by one more
    w.tick(Duration::from_secs(1));
    let r = w.run_until(r, Duration::from_secs(120), |r, _| {
        r.state.name() != "launching"
    });
    let State::Retiring(rt) = &r.state else {
        panic!("{:?}", r.state)
    };
    assert_eq!(
        rt.new.len(),
        3,
        "the extra instance had to prove healthy too"
    );
    assert_eq!(rt.terminate.len(), 2, "only the surge is given back");
    let r = w.run(r);
    assert!(matches!(r.state, State::Succeeded { .. }));
    assert_eq!(w.group.desired_capacity, 2, "original capacity restored");
    assert_eq!(w.group.max_size, 2);
    assert!(w.images().iter().all(|i| *i == NEW));
}

#[test]
fn a_new_instance_on_the_wrong_image_fails() {
    let mut w = World::new(2, 0);
    let r = Rollout::new(spec(&w, params()));
    let r = w.run_until(r, Duration::from_secs(60), |r, w| {
        r.state.name() == "launching" && !w.launched.is_empty()
    });
    let id = w.launched[0].clone();
    w.ec2.get_mut(&id).unwrap().0 = "ami-other".into();
    let s = w.step(&r);
    let State::Reverting(rv) = &s.next.state else {
        panic!("{:?}", s.next.state)
    };
    assert_eq!(
        rv.reason,
        format!(
            "instance {id} runs ami-other, not ami-new: the group's launch template changed under the rollout"
        )
    );
}

#[test]
fn wake_at_is_the_earliest_timer() {
    let (mut w, r, up) = launching_with_one_instance();
    let State::Launching(b) = &r.state else {
        panic!()
    };
    let deadline = b.new[0].healthy_deadline_at;
    assert_eq!(r.wake_at(), Some(deadline.min(b.progress_deadline_at)));
    up.set(true);
    let t = w.now;
    let r = w.step(&r).next;
    assert_eq!(r.wake_at(), Some(t.plus(Duration::from_secs(10))));
}
