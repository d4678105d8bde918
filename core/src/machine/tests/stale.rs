//! Steps on an AWS view the executor read earlier than `now`
//! (`Observation::aws_read_at`): the gate acts on a Consul change without a
//! fresh describe; an instance gone since that view is caught on the next
//! fresh one; a deadline that rests on AWS is judged only on a view read
//! after it.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use super::world::{World, launching_with_one_instance};
use crate::machine::{Action, Rollout, RolloutEvent, State, Timestamp, step};

fn new_id(r: &Rollout) -> String {
    let State::Launching(b) = &r.state else {
        panic!("{:?}", r.state)
    };
    b.new[0].id.clone()
}

/// Passing in Consul from now on, seen once by the machine.
fn passing_seen(w: &mut World, r: Rollout, up: &Rc<Cell<bool>>) -> Rollout {
    up.set(true);
    let r = w.step(&r).next;
    let State::Launching(b) = &r.state else {
        panic!("{:?}", r.state)
    };
    assert_eq!(b.new[0].passing_since, Some(w.now));
    r
}

#[test]
fn the_gate_accepts_on_an_aws_view_read_before_the_consul_change() {
    let (mut w, r, up) = launching_with_one_instance();
    // The AWS view the executor holds was read before the instance started
    // passing in Consul; it shows it InService.
    let mut cached = w.observe();
    let read = w.now;
    cached.aws_read_at = Some(read);
    w.tick(Duration::from_secs(1));
    let r = passing_seen(&mut w, r, &up);
    w.tick(Duration::from_secs(10));
    let mut obs = w.observe();
    obs.group = cached.group.clone();
    obs.instances = cached.instances.clone();
    obs.aws_read_at = Some(read);
    let s = step(&r, &obs, w.now);
    assert!(
        matches!(s.next.state, State::Retiring(_)),
        "{:?}",
        s.next.state
    );
    assert_eq!(s.actions[0], Action::Protect(vec![new_id(&r)]));
}

#[test]
fn an_instance_gone_since_the_cached_view_is_caught_by_the_next_fresh_one() {
    let (mut w, r, up) = launching_with_one_instance();
    let id = new_id(&r);
    let r = passing_seen(&mut w, r, &up);
    w.tick(Duration::from_secs(10));
    // The view the executor holds still shows the instance InService, and
    // Consul has not noticed yet that AWS took it away.
    let mut cached = w.observe();
    cached.aws_read_at = Some(w.now);
    w.aws_terminates(&id);
    w.tick(Duration::from_secs(1));
    let s = step(&r, &cached, w.now);
    assert_eq!(
        s.actions.first(),
        Some(&Action::Protect(vec![id.clone()])),
        "acted on the cached view"
    );
    // The protection fails (the instance is not in the group any more), so
    // the executor persists nothing and steps again on a fresh view.
    let fresh = w.observe();
    let s = step(&r, &fresh, w.now);
    let failed = s.actions.iter().find_map(|a| match a {
        Action::Notify(RolloutEvent::Failed { reason }) => Some(reason.clone()),
        _ => None,
    });
    assert_eq!(
        failed.as_deref(),
        Some(
            format!(
                "instance {id} was terminated by AWS before it became healthy (no longer in the group)"
            )
            .as_str()
        ),
        "{:?}",
        s.actions
    );
    assert!(!s.actions.contains(&Action::Protect(vec![id])));
}

#[test]
fn a_deadline_resting_on_aws_is_judged_only_on_a_view_read_after_it() {
    let (mut w, r, _up) = launching_with_one_instance();
    let deadline = match &r.state {
        State::Launching(b) => b.new[0].healthy_deadline_at,
        s => panic!("{s:?}"),
    };
    // Never passing; observed every second until just before the healthy
    // deadline, then once after it.
    let r = w.run_until(r, Duration::from_secs(600), |_, w| {
        w.now.plus(Duration::from_secs(1)) >= deadline
    });
    while w.now < deadline {
        w.tick(Duration::from_secs(1));
    }
    let mut obs = w.observe();
    obs.aws_read_at = Some(Timestamp(deadline.0 - 1));
    let s = step(&r, &obs, w.now);
    assert!(
        matches!(s.next.state, State::Launching(_)),
        "failed on a view read before the deadline: {:?}",
        s.next.state
    );
    obs.aws_read_at = Some(deadline);
    let s = step(&r, &obs, w.now);
    assert!(
        s.actions.iter().any(|a| matches!(
            a,
            Action::Notify(RolloutEvent::Failed { reason }) if reason.contains("not healthy within healthy_deadline")
        )),
        "{:?}",
        s.actions
    );
}

#[test]
fn the_healthy_timer_starts_when_consul_told_of_passing_not_when_the_step_ran() {
    let (mut w, r, up) = launching_with_one_instance();
    let min_healthy = r.spec.params.min_healthy_time;
    // A step sees the instance in service, not passing yet.
    let r = step(&r, &w.observe(), w.now).next;
    w.tick(Duration::from_secs(1));
    // The executor learnt of passing at `told` (the AWS view read then
    // too), then waited 2 s before stepping.
    up.set(true);
    let told = w.now;
    w.tick(Duration::from_secs(2));
    let mut obs = w.observe();
    obs.health_read_at = Some(told);
    obs.aws_read_at = Some(told);
    let r = step(&r, &obs, w.now).next;
    let State::Launching(b) = &r.state else {
        panic!("{:?}", r.state)
    };
    assert_eq!(b.new[0].passing_since, Some(told));
    assert_eq!(r.wake_at(), Some(told.plus(min_healthy)));
    // min_healthy_time after `told`, not after the step: accepted.
    w.now = told.plus(min_healthy);
    let mut obs = w.observe();
    obs.health_read_at = Some(told);
    obs.aws_read_at = Some(told);
    let s = step(&r, &obs, w.now);
    assert!(
        matches!(s.next.state, State::Retiring(_)),
        "{:?}",
        s.next.state
    );
}

#[test]
fn a_health_read_time_after_now_counts_as_now() {
    let (w, r, up) = launching_with_one_instance();
    up.set(true);
    let mut obs = w.observe();
    obs.health_read_at = Some(w.now.plus(Duration::from_secs(5)));
    let r = step(&r, &obs, w.now).next;
    let State::Launching(b) = &r.state else {
        panic!("{:?}", r.state)
    };
    assert_eq!(b.new[0].passing_since, Some(w.now));
}

#[test]
fn passing_in_consul_before_in_service_in_aws_times_from_the_view_showing_it_in_service() {
    let (mut w, r, up) = launching_with_one_instance();
    let id = new_id(&r);
    let min_healthy = r.spec.params.min_healthy_time;
    // Consul says passing from `told`, while AWS still shows the instance
    // Pending (a lifecycle hook, say).
    up.set(true);
    let told = w.now;
    let pending = |w: &World| {
        let mut obs = w.observe();
        for m in &mut obs.group.instances {
            if m.instance_id == id {
                m.lifecycle_state = "Pending:Wait".into();
            }
        }
        obs.health_read_at = Some(told);
        obs
    };
    // Pending for three times min_healthy_time, observed every second
    // (no silence, so no timer restarts on that account).
    let mut r = r;
    for _ in 0..(min_healthy.as_secs() * 3) {
        r = step(&r, &pending(&w), w.now).next;
        w.tick(Duration::from_secs(1));
    }
    let r = step(&r, &pending(&w), w.now).next;
    // InService in the next view, Consul's answer unchanged since `told`.
    w.tick(Duration::from_secs(1));
    let in_service_read = w.now;
    let mut obs = w.observe();
    obs.health_read_at = Some(told);
    obs.aws_read_at = Some(in_service_read);
    let r = step(&r, &obs, w.now).next;
    let State::Launching(b) = &r.state else {
        panic!("{:?}", r.state)
    };
    assert_eq!(b.new[0].passing_since, Some(in_service_read));
    assert_eq!(
        b.new[0].healthy_at, None,
        "not healthy before min_healthy_time in service"
    );
}

#[test]
fn health_told_before_a_silence_restarts_its_timer_after_it() {
    let (mut w, r, up) = launching_with_one_instance();
    up.set(true);
    let told = w.now;
    let mut obs = w.observe();
    obs.health_read_at = Some(told);
    let r = step(&r, &obs, w.now).next;
    // Nobody observed for a minute (a leader change, an outage); Consul's
    // answer is still the one from `told`.
    w.tick(Duration::from_secs(60));
    let mut obs = w.observe();
    obs.health_read_at = Some(told);
    let r = step(&r, &obs, w.now).next;
    let State::Launching(b) = &r.state else {
        panic!("{:?}", r.state)
    };
    assert_eq!(
        b.new[0].passing_since,
        Some(w.now),
        "restarted after the silence"
    );
    assert_eq!(b.new[0].healthy_at, None);
}
