//! Every state persists as JSON in Consul KV and reads back identical.

use std::time::Duration;

use super::world::{NEW, T0, World, critical, params, passing, spec};
use crate::machine::{
    Action, Batch, Canary, NewInstance, Observation, Retire, Revert, RevertCause, RevertStage,
    Rollout, RolloutEvent, State, Timestamp,
};

fn at(s: u64) -> Timestamp {
    T0.plus(Duration::from_secs(s))
}

fn every_state() -> Vec<State> {
    let batch = Batch {
        number: 2,
        size: 2,
        desired: 8,
        launched_at: at(1),
        launch_deadline_at: at(301),
        progress_deadline_at: at(601),
        new: vec![NewInstance {
            id: "i-0100".into(),
            first_seen: at(2),
            healthy_deadline_at: at(302),
            passing_since: Some(at(22)),
            healthy_at: None,
            critical_since: Some(at(5)),
            in_service_since: Some(at(3)),
            timers_from: Some(at(4)),
        }],
    };
    let revert = |cause, stage| {
        State::Reverting(Revert {
            cause,
            reason: "instance i-0100 not healthy within healthy_deadline 5m: ...".into(),
            stage,
            deadline_at: at(900),
        })
    };
    vec![
        State::Pending,
        State::Preparing {
            progress_deadline_at: at(600),
        },
        State::Launching(batch.clone()),
        State::Retiring(Retire {
            batch: 2,
            new: vec!["i-0100".into(), "i-0101".into()],
            terminate: vec!["i-old0".into(), "i-old1".into()],
            progress_deadline_at: at(640),
        }),
        State::CanaryPaused(Canary {
            size: 1,
            new: vec!["i-0100".into()],
            since: at(40),
            auto_promote_at: Some(at(100)),
        }),
        State::Baking {
            since: at(200),
            until: at(230),
            watch: vec!["i-0100".into()],
        },
        State::Paused {
            since: at(50),
            prior: Box::new(State::Launching(batch.clone())),
        },
        revert(
            RevertCause::Failure,
            RevertStage::Cleanup {
                terminate: vec!["i-0102".into()],
            },
        ),
        revert(
            RevertCause::Abort { by: "alice".into() },
            RevertStage::Replacing {
                replace: vec!["i-0100".into()],
                batch,
            },
        ),
        revert(
            RevertCause::Failure,
            RevertStage::Retiring {
                terminate: vec!["i-0100".into()],
            },
        ),
        State::Succeeded { at: at(300) },
        State::Reverted {
            reason: "aborted by alice: no".into(),
            aborted: true,
            at: at(300),
        },
        State::Failed {
            reason: "revert failed: ...".into(),
            revertible: false,
            at: at(300),
        },
    ]
}

fn roundtrip(r: &Rollout) {
    let json = serde_json::to_string(r).unwrap();
    let back: Rollout = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, r, "{json}");
}

#[test]
fn every_state_roundtrips_through_json() {
    let w = World::new(2, 0);
    let base = Rollout::new(spec(&w, params()));
    let states = every_state();
    let names: std::collections::BTreeSet<&str> = states.iter().map(State::name).collect();
    assert_eq!(names.len(), 11, "a state is missing from the sample");
    for state in states {
        roundtrip(&Rollout {
            state,
            ..base.clone()
        });
    }
}

#[test]
fn states_of_real_runs_roundtrip_and_json_is_readable() {
    for broken in [false, true] {
        let mut w = World::new(3, 0);
        let boot = w.boot;
        w.health = Box::new(move |p| {
            (p.age >= boot).then(|| {
                if broken && p.image == NEW {
                    critical(p.id)
                } else {
                    passing()
                }
            })
        });
        let mut p = params();
        p.canary = 1;
        p.auto_promote = true;
        let mut r = Rollout::new(spec(&w, p));
        while !r.is_terminal() {
            roundtrip(&r);
            r = w.step(&r).next;
            w.tick(Duration::from_secs(1));
        }
        roundtrip(&r);
    }
    let w = World::new(1, 0);
    let json = serde_json::to_value(Rollout::new(spec(&w, params()))).unwrap();
    assert_eq!(json["state"]["state"], "pending");
    assert_eq!(json["spec"]["params"]["healthy_deadline_ms"], 300_000);
}

#[test]
fn observations_and_actions_roundtrip() {
    let w = World::new(2, 0);
    let obs = w.observe();
    let back: Observation = serde_json::from_str(&serde_json::to_string(&obs).unwrap()).unwrap();
    assert_eq!(back, obs);
    let actions = vec![
        Action::SuspendProcesses(vec!["AZRebalance".into()]),
        Action::SetCapacity {
            min: None,
            max: Some(8),
            desired: Some(8),
        },
        Action::Terminate {
            ids: vec!["i-1".into()],
            decrement: true,
        },
        Action::Notify(RolloutEvent::BatchHealthy { n: 1, of: 3 }),
        Action::Notify(RolloutEvent::CanaryWaiting {
            auto_promote_at: Some(T0),
        }),
    ];
    let json = serde_json::to_string(&actions).unwrap();
    assert_eq!(serde_json::from_str::<Vec<Action>>(&json).unwrap(), actions);
}
