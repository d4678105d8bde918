//! Failing fast (`failure_time`): a new instance answering wrong fails its
//! batch after `failure_time` without interruption; one not answering yet
//! (booting, however slowly) only ever fails at `healthy_deadline`.

use std::time::Duration;

use super::world::{NEW, OLD, World, params, passing, spec};
use crate::health::CheckStatus;
use crate::machine::{
    Action, CheckFailure, Health, Params, Rollout, RolloutEvent, State, Timestamp,
};

const FT: Duration = Duration::from_secs(10);

fn fast() -> Params {
    Params {
        failure_time: FT,
        ..params()
    }
}

fn check(id: &str, kind: &str, status: CheckStatus, output: &str) -> CheckFailure {
    CheckFailure {
        check_id: format!("web-{id}:{kind}"),
        name: format!("web {kind}"),
        status,
        output: output.into(),
    }
}

/// Booting: Consul's HTTP check is refused (critical), the agent's probe
/// has had no answer yet (warning).
fn booting(id: &str) -> Health {
    Health::from_checks([
        check(id, "http", CheckStatus::Critical, "connection refused"),
        check(
            id,
            "agent",
            CheckStatus::Warning,
            "not answering yet: connection refused",
        ),
    ])
}

/// Answered, and wrong: /health passes but the version is not the image's.
fn wrong_version(id: &str) -> Health {
    Health::from_checks([
        check(id, "http", CheckStatus::Passing, "200"),
        check(
            id,
            "agent",
            CheckStatus::Critical,
            "version mismatch: the app reports \"1.9.9\" but the image expects \"2.0.0\"",
        ),
    ])
}

fn reason_of(r: &Rollout) -> String {
    match &r.state {
        State::Reverted { reason, .. } | State::Failed { reason, .. } => reason.clone(),
        s => panic!("not failed: {s:?}"),
    }
}

/// When the first batch's capacity was raised.
fn launched_at(w: &World) -> Timestamp {
    w.when(|a| {
        matches!(
            a,
            Action::SetCapacity {
                desired: Some(8),
                ..
            }
        )
    })
    .unwrap()
}

fn failed_at(w: &World) -> Timestamp {
    w.when(|a| matches!(a, Action::MarkImageFailed { .. }))
        .unwrap()
}

#[test]
fn an_instance_answering_wrong_for_failure_time_fails_its_batch() {
    let mut w = World::new(6, 0);
    let boot = w.boot;
    w.health = Box::new(move |p| {
        (p.age >= boot).then(|| {
            if p.image == NEW {
                wrong_version(p.id)
            } else {
                passing()
            }
        })
    });
    let r = w.run(Rollout::new(spec(&w, fast())));

    assert!(
        matches!(r.state, State::Reverted { aborted: false, .. }),
        "{:?}",
        r.state
    );
    let first = w.launched[0].clone();
    let expected = format!(
        "instance {first} answered wrong, critical for 10s (failure_time): check web-{first}:agent \
         \"web agent\" is critical: version mismatch: the app reports \"1.9.9\" but the image \
         expects \"2.0.0\""
    );
    assert_eq!(reason_of(&r), expected);
    // Its first answer came at the end of its boot; ten seconds later (the
    // world steps every second) the batch failed: long before
    // healthy_deadline (5m).
    let after = failed_at(&w).since(launched_at(&w));
    assert!(
        (boot + FT..=boot + FT + Duration::from_secs(2)).contains(&after),
        "{after:?}"
    );
    let events = w.events();
    assert!(events.contains(&RolloutEvent::Failed {
        reason: expected.clone()
    }));
    assert_eq!(
        events.last(),
        Some(&RolloutEvent::Reverted { reason: expected })
    );
    assert!(w.terminated.iter().all(|id| !id.starts_with("i-old")));
    assert_eq!(w.min_serving, 6);
    assert_eq!(w.images(), vec![OLD; 6]);
}

#[test]
fn not_answering_yet_never_fails_early_only_at_healthy_deadline() {
    let mut w = World::new(6, 0);
    // Registered at once, and never answering: warning forever.
    w.health = Box::new(|p| {
        Some(if p.image == NEW {
            booting(p.id)
        } else {
            passing()
        })
    });
    let r = w.run(Rollout::new(spec(&w, fast())));

    let reason = reason_of(&r);
    assert!(
        reason.contains("not healthy within healthy_deadline 5m"),
        "{reason}"
    );
    assert!(reason.contains("is warning: not answering yet"), "{reason}");
    assert!(!reason.contains("failure_time"), "{reason}");
    let after = failed_at(&w).since(launched_at(&w));
    assert!((300..=302).contains(&after.as_secs()), "{after:?}");
}

#[test]
fn a_slow_boot_far_longer_than_failure_time_succeeds() {
    let mut w = World::new(6, 0);
    // Two minutes of "not answering yet", twelve times failure_time.
    let boot = Duration::from_secs(120);
    w.health = Box::new(move |p| {
        Some(if p.image == NEW && p.age < boot {
            booting(p.id)
        } else {
            passing()
        })
    });
    let r = w.run(Rollout::new(spec(&w, fast())));
    assert!(matches!(r.state, State::Succeeded { .. }), "{:?}", r.state);
    assert_eq!(w.images(), vec![NEW; 6]);
}

#[test]
fn consul_s_http_check_lagging_the_agent_s_is_no_evidence() {
    let mut w = World::new(6, 0);
    let boot = w.boot;
    // Booted: the agent's probe passes at once, but Consul's HTTP check
    // still shows the last 503 for 15 s (longer than failure_time).
    let lag = boot + Duration::from_secs(15);
    w.health = Box::new(move |p| {
        Some(if p.image != NEW || p.age >= lag {
            passing()
        } else if p.age < boot {
            booting(p.id)
        } else {
            Health::from_checks([
                check(p.id, "http", CheckStatus::Critical, "HTTP GET: 503"),
                check(p.id, "agent", CheckStatus::Passing, "healthy"),
            ])
        })
    });
    let r = w.run(Rollout::new(spec(&w, fast())));
    assert!(matches!(r.state, State::Succeeded { .. }), "{:?}", r.state);
}

#[test]
fn answering_wrong_briefly_then_recovering_does_not_fail() {
    let mut w = World::new(6, 0);
    let boot = w.boot;
    // Wrong for 9 s (less than failure_time) right after boot, then fine.
    w.health = Box::new(move |p| {
        (p.age >= boot).then(|| {
            if p.image == NEW && p.age < boot + Duration::from_secs(9) {
                wrong_version(p.id)
            } else {
                passing()
            }
        })
    });
    let r = w.run(Rollout::new(spec(&w, fast())));
    assert!(matches!(r.state, State::Succeeded { .. }), "{:?}", r.state);
}

#[test]
fn flapping_restarts_the_failure_timer() {
    let mut w = World::new(6, 0);
    let boot = w.boot;
    // Wrong for 8 s, then "not answering" for 1 s (a restart), again and
    // again: never wrong for 10 s in a row, never healthy either.
    w.health = Box::new(move |p| {
        (p.age >= boot).then(|| {
            if p.image != NEW {
                passing()
            } else if (p.age - boot).as_secs() % 9 == 8 {
                booting(p.id)
            } else {
                wrong_version(p.id)
            }
        })
    });
    let r = w.run(Rollout::new(spec(&w, fast())));
    let reason = reason_of(&r);
    assert!(
        reason.contains("not healthy within healthy_deadline 5m"),
        "{reason}"
    );
    let after = failed_at(&w).since(launched_at(&w));
    assert!((300..=302).contains(&after.as_secs()), "{after:?}");
}

#[test]
fn failure_time_zero_turns_failing_fast_off() {
    let mut w = World::new(6, 0);
    let boot = w.boot;
    w.health = Box::new(move |p| {
        (p.age >= boot).then(|| {
            if p.image == NEW {
                wrong_version(p.id)
            } else {
                passing()
            }
        })
    });
    let off = Params {
        failure_time: Duration::ZERO,
        ..params()
    };
    let r = w.run(Rollout::new(spec(&w, off)));
    assert!(
        reason_of(&r).contains("healthy_deadline"),
        "{}",
        reason_of(&r)
    );
}

#[test]
fn the_executor_is_woken_when_failure_time_runs_out() {
    let mut w = World::new(6, 0);
    let boot = w.boot;
    w.health = Box::new(move |p| {
        (p.age >= boot).then(|| {
            if p.image == NEW {
                wrong_version(p.id)
            } else {
                passing()
            }
        })
    });
    let r = w.run_until(
        Rollout::new(spec(&w, fast())),
        Duration::from_secs(600),
        |r, _| match &r.state {
            State::Launching(b) => b.new.iter().any(|n| n.critical_since.is_some()),
            _ => false,
        },
    );
    let State::Launching(b) = &r.state else {
        panic!("{:?}", r.state)
    };
    let since = b.new.iter().find_map(|n| n.critical_since).unwrap();
    assert_eq!(r.wake_at(), Some(since.plus(FT)));
    // A pause forgets it: nobody watched without interruption.
    let mut r2 = r.clone();
    r2.state.shift(Duration::from_secs(60), w.now);
    let State::Launching(b) = &r2.state else {
        panic!()
    };
    assert!(b.new.iter().all(|n| n.critical_since.is_none()));
}

#[test]
fn a_record_without_failure_time_keeps_failing_fast_off() {
    let w = World::new(6, 0);
    let mut json = serde_json::to_value(Rollout::new(spec(&w, fast()))).unwrap();
    assert_eq!(json["spec"]["params"]["failure_time_ms"], 10_000);
    json["spec"]["params"]
        .as_object_mut()
        .unwrap()
        .remove("failure_time_ms");
    let old: Rollout = serde_json::from_value(json).unwrap();
    assert_eq!(old.spec.params.failure_time, Duration::ZERO);
    assert_eq!(old.spec.params.fail_fast(), None);
    // A configuration that says nothing gets the documented default.
    assert_eq!(Params::default().failure_time, Duration::from_secs(8));
}
