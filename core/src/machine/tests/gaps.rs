//! Silence: stretches of time in which no coordinator observed the world
//! (a leader takeover, Consul or AWS unreachable). Deadlines count observed
//! time only.

use std::time::Duration;

use super::world::{NEW, World, params, spec};
use crate::machine::{Action, HEARTBEAT, OBSERVATION_GAP, Rollout, RolloutEvent, State, Timestamp};

/// Steps until the first batch's new instances are all known (their
/// healthy deadlines running).
fn until_batch_seen(w: &mut World, r: Rollout) -> Rollout {
    w.run_until(
        r,
        Duration::from_secs(600),
        |r, _| matches!(&r.state, State::Launching(b) if b.new.len() == b.size as usize),
    )
}

/// The world moves on for `d` while nobody steps the rollout.
fn silence(w: &mut World, d: Duration) {
    for _ in 0..d.as_secs() {
        w.tick(Duration::from_secs(1));
    }
}

/// A broken image's first batch, a minute after its launch: answers the
/// rollout and the launch time.
fn broken_batch_a_minute_in(w: &mut World) -> (Rollout, Timestamp) {
    w.broken_new_image();
    let r = Rollout::new(spec(w, params()));
    let r = w.run_until(r, Duration::from_secs(600), |_, w| !w.launched.is_empty());
    let launched = w.now;
    let r = w.run_until(r, Duration::from_secs(60), |_, _| false);
    (r, launched)
}

fn failed_at(w: &World) -> Timestamp {
    w.when(|a| matches!(a, Action::MarkImageFailed { .. }))
        .expect("the image was marked failed")
}

fn unobserved(w: &World) -> Vec<Duration> {
    w.events()
        .into_iter()
        .filter_map(|e| match e {
            RolloutEvent::Unobserved { gap } => Some(gap),
            _ => None,
        })
        .collect()
}

#[test]
fn a_takeover_longer_than_the_healthy_deadline_does_not_fail_the_batch() {
    let mut w = World::new(4, 0);
    let mut p = params();
    p.healthy_deadline = Duration::from_secs(60);
    let r = Rollout::new(spec(&w, p));
    let r = until_batch_seen(&mut w, r);
    // The leader dies right after launching the batch; the next one takes
    // over five minutes later, when the instances have long been healthy
    // but nobody saw them become so.
    silence(&mut w, Duration::from_secs(300));
    let r = w.run(r);
    assert!(matches!(r.state, State::Succeeded { .. }), "{:?}", r.state);
    assert_eq!(w.images(), vec![NEW; 4]);
    let gaps = unobserved(&w);
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert!(gaps[0] >= Duration::from_secs(300), "{gaps:?}");
    assert!(
        !w.events()
            .iter()
            .any(|e| matches!(e, RolloutEvent::Failed { .. }))
    );
}

#[test]
fn health_timers_restart_after_a_silence() {
    let mut w = World::new(2, 0);
    let mut p = params();
    p.min_healthy_time = Duration::from_secs(60);
    let r = Rollout::new(spec(&w, p));
    // The batch is passing, its one-minute timers running, when nobody
    // observes for two minutes.
    let r = w.run_until(r, Duration::from_secs(600), |r, _| {
        matches!(&r.state, State::Launching(b)
            if b.new.len() == b.size as usize && b.new.iter().all(|n| n.passing_since.is_some()))
    });
    silence(&mut w, Duration::from_secs(120));
    let resumed = w.now;
    let r = w.run(r);
    assert!(matches!(r.state, State::Succeeded { .. }), "{:?}", r.state);
    // Nobody saw it pass without interruption: the batch is accepted a full
    // min_healthy_time after observation resumed, not at once.
    let protected = w
        .when(|a| matches!(a, Action::Protect(_)))
        .expect("the batch was protected");
    assert!(
        protected.since(resumed) >= Duration::from_secs(60),
        "protected {:?} after the silence",
        protected.since(resumed)
    );
}

#[test]
fn a_broken_image_still_fails_counting_only_observed_time() {
    let mut w = World::new(2, 0);
    let (r, launched) = broken_batch_a_minute_in(&mut w);
    silence(&mut w, Duration::from_secs(600));
    let r = w.run(r);
    assert!(matches!(r.state, State::Reverted { .. }), "{:?}", r.state);
    // 5m of healthy_deadline, plus the ~10m nobody watched.
    let after = failed_at(&w).since(launched).as_secs();
    assert!((900..=905).contains(&after), "failed {after}s after launch");
}

#[test]
fn a_short_silence_moves_no_deadline() {
    let mut w = World::new(2, 0);
    let (r, launched) = broken_batch_a_minute_in(&mut w);
    silence(&mut w, OBSERVATION_GAP - HEARTBEAT - Duration::from_secs(1));
    let r = w.run(r);
    assert!(matches!(r.state, State::Reverted { .. }), "{:?}", r.state);
    let after = failed_at(&w).since(launched).as_secs();
    assert!((300..=302).contains(&after), "failed {after}s after launch");
    assert!(unobserved(&w).is_empty());
}

#[test]
fn a_pause_is_not_counted_twice() {
    let mut w = World::new(2, 0);
    let (r, launched) = broken_batch_a_minute_in(&mut w);
    w.commands.push(crate::machine::OperatorCommand::Pause);
    let r = w.run_until(r, Duration::from_secs(2), |_, _| false);
    assert!(matches!(r.state, State::Paused { .. }));
    // Nobody observes for ten minutes while it is paused.
    silence(&mut w, Duration::from_secs(600));
    w.commands.push(crate::machine::OperatorCommand::Resume);
    let r = w.run(r);
    assert!(matches!(r.state, State::Reverted { .. }), "{:?}", r.state);
    let after = failed_at(&w).since(launched).as_secs();
    assert!((900..=905).contains(&after), "failed {after}s after launch");
    assert!(unobserved(&w).is_empty(), "the pause already covers it");
}

#[test]
fn a_waiting_rollout_writes_a_heartbeat_not_a_record_per_step() {
    let mut w = World::new(2, 0);
    w.boot = Duration::from_secs(120);
    w.healthy_after_boot();
    let mut r = Rollout::new(spec(&w, params()));
    r = w.run_until(r, Duration::from_secs(600), |_, w| !w.launched.is_empty());
    let mut writes = 0;
    for _ in 0..60 {
        let next = w.step(&r).next;
        if next != r {
            writes += 1;
        }
        let seen = next.progress.observed_at.expect("observed");
        assert!(
            w.now.since(seen) < HEARTBEAT,
            "heartbeat {seen} at {}",
            w.now
        );
        r = next;
        w.tick(Duration::from_secs(1));
    }
    // One write per heartbeat while nothing else changes.
    assert!((12..=13).contains(&writes), "{writes} writes in 60s");
}
