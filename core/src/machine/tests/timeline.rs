//! The timeline a rollout records of itself (`Progress::events`): in
//! order, once per event whatever the executor replays, bounded, and
//! readable from records written before it existed.

use std::time::Duration;

use super::crash::run_with_crashes;
use super::world::{NEW, World, critical, params, passing, spec};
use crate::machine::{
    Counts, Event, EventKind, KEEP_FIRST, KEEP_LAST, OperatorCommand, Progress, REASON_LIMIT,
    Rollout, State, Timestamp, step,
};

/// Each event as its name plus its main detail, for compact expectations.
fn names(r: &Rollout) -> Vec<String> {
    r.progress
        .events
        .iter()
        .map(|e| match &e.kind {
            EventKind::Prepared { template_version } => format!("prepared {template_version}"),
            EventKind::BatchLaunched { n, size, desired } => {
                format!("batch_launched {n} {size} {desired}")
            }
            EventKind::InstanceSeen { id, batch } => format!("instance_seen {id} {batch}"),
            EventKind::InstanceHealthy { id }
            | EventKind::InstanceUnhealthy { id }
            | EventKind::InstanceWrong { id } => format!("{} {id}", e.kind.name()),
            EventKind::BatchRetired { n, count } => format!("batch_retired {n} {count}"),
            EventKind::Paused { n } | EventKind::Resumed { n } => format!("{} {n}", e.kind.name()),
            EventKind::RevertStarted { aborted, .. } => format!("revert_started {aborted}"),
            k => k.name().to_owned(),
        })
        .collect()
}

fn counts(old: u32, new: u32, passing: u32) -> Counts {
    Counts { old, new, passing }
}

/// The events of a clean successful rollout of 4 instances, batches of 2.
const SUCCESS: [&str; 16] = [
    "started",
    "prepared 2",
    "batch_launched 1 2 6",
    "instance_seen i-0100 1",
    "instance_seen i-0101 1",
    "instance_healthy i-0100",
    "instance_healthy i-0101",
    "batch_retired 1 2",
    "batch_launched 2 2 6",
    "instance_seen i-0102 2",
    "instance_seen i-0103 2",
    "instance_healthy i-0102",
    "instance_healthy i-0103",
    "batch_retired 2 2",
    "baking",
    "succeeded",
];

#[test]
fn a_success_records_every_step_in_order_with_the_counts_it_saw() {
    let mut w = World::new(4, 0);
    let r = w.run(Rollout::new(spec(&w, params())));
    assert_eq!(names(&r), SUCCESS);
    let ev = &r.progress.events;
    assert_eq!(r.progress.events_dropped, 0);
    assert_eq!(Some(ev[0].at), r.progress.started_at);
    let State::Succeeded { at } = r.state else {
        panic!("{:?}", r.state)
    };
    assert_eq!(ev.last().unwrap().at, at);
    assert!(ev.windows(2).all(|p| p[0].at <= p[1].at), "in time order");
    assert_eq!(ev[0].counts, counts(4, 0, 0));
    // Batch 1 seen, then healthy, then its old instances gone.
    assert_eq!(ev[3].counts, counts(4, 2, 0));
    assert_eq!(ev[5].counts, counts(4, 2, 2));
    assert_eq!(ev[7].counts, counts(2, 2, 2));
    assert_eq!(ev.last().unwrap().counts, counts(0, 4, 4));
    assert_eq!(
        ev[14].kind,
        EventKind::Baking { until: at },
        "the bake ends at the success"
    );
}

#[test]
fn a_failure_records_what_went_wrong_the_revert_and_its_end() {
    let mut w = World::new(4, 0);
    w.broken_new_image();
    let r = w.run(Rollout::new(spec(&w, params())));
    assert_eq!(
        names(&r),
        [
            "started",
            "prepared 2",
            "batch_launched 1 2 6",
            "instance_seen i-0100 1",
            "instance_seen i-0101 1",
            "instance_wrong i-0100",
            "instance_wrong i-0101",
            "failed",
            "revert_started false",
            "reverted",
        ]
    );
    let State::Reverted { reason, at, .. } = &r.state else {
        panic!("{:?}", r.state)
    };
    let ev = &r.progress.events;
    assert_eq!(
        ev[7].kind,
        EventKind::Failed {
            reason: reason.clone()
        }
    );
    assert_eq!(
        ev[8].kind,
        EventKind::RevertStarted {
            reason: reason.clone(),
            aborted: false
        }
    );
    assert_eq!(ev[7].at, ev[8].at, "one step: failed and reverting");
    assert_eq!(ev[9].at, *at);
    assert_eq!(ev[9].counts, counts(4, 0, 0), "back on the old image");
}

#[test]
fn an_abort_after_a_batch_records_the_stable_replacements() {
    let mut w = World::new(4, 0);
    let r = Rollout::new(spec(&w, params()));
    let r = w.run_until(r, Duration::from_secs(900), |r, _| {
        r.progress.batches_done == 1
    });
    w.commands.push(OperatorCommand::Abort {
        by: "alice".into(),
        reason: "wrong build".into(),
    });
    let r = w.run(r);
    let n = names(&r);
    let tail: Vec<&str> = n[9..].iter().map(String::as_str).collect();
    assert_eq!(&n[..9], &SUCCESS[..9]);
    assert_eq!(
        tail,
        [
            "revert_started true",
            "batch_launched 0 2 6",
            "instance_seen i-0104 0",
            "instance_seen i-0105 0",
            "instance_healthy i-0104",
            "instance_healthy i-0105",
            "reverted",
        ]
    );
    let ev = &r.progress.events;
    assert_eq!(
        ev[9].kind,
        EventKind::RevertStarted {
            reason: "aborted by alice: wrong build".into(),
            aborted: true
        }
    );
    // The second batch's instances were cleaned up; the stable
    // replacements count as old, not new.
    assert_eq!(ev[13].counts, counts(4, 2, 2));
    assert_eq!(ev.last().unwrap().counts, counts(4, 0, 0));
}

#[test]
fn a_canary_records_its_pause_and_promotion() {
    let mut w = World::new(3, 0);
    let mut p = params();
    p.canary = 1;
    let r = Rollout::new(spec(&w, p));
    let r = w.run_until(r, Duration::from_secs(600), |r, _| {
        r.state.name() == "canary_paused"
    });
    w.commands.push(OperatorCommand::Promote);
    let r = w.run(r);
    let n = names(&r);
    let at = |name: &str| n.iter().position(|x| x == name).unwrap();
    assert_eq!(n[2], "batch_launched 1 1 4");
    assert!(at("instance_healthy i-0100") < at("canary_paused"));
    assert_eq!(at("canary_paused") + 1, at("promoted"));
    assert_eq!(at("promoted") + 1, at("batch_retired 1 1"));
    assert_eq!(n.last().unwrap(), "succeeded");
}

#[test]
fn pause_and_resume_are_recorded_and_nothing_happens_between_them() {
    let mut w = World::new(2, 0);
    let r = Rollout::new(spec(&w, params()));
    let r = w.run_until(r, Duration::from_secs(600), |_, w| !w.launched.is_empty());
    w.commands.push(OperatorCommand::Pause);
    let r = w.run_until(r, Duration::from_secs(300), |_, _| false);
    assert!(matches!(r.state, State::Paused { .. }));
    w.commands.push(OperatorCommand::Resume);
    let r = w.run(r);
    assert!(matches!(r.state, State::Succeeded { .. }), "{:?}", r.state);
    let n = names(&r);
    let paused = n.iter().position(|x| x == "paused 1").unwrap();
    assert_eq!(n[paused + 1], "resumed 1", "{n:?}");
    let ev = &r.progress.events;
    assert_eq!(
        ev[paused + 1].at.since(ev[paused].at),
        Duration::from_secs(300)
    );
    assert_eq!(n.iter().filter(|x| x.starts_with("paused")).count(), 1);
    assert_eq!(n.last().unwrap(), "succeeded");
}

#[test]
fn a_step_replayed_after_a_crash_records_nothing_twice() {
    let mut clean = World::new(6, 0);
    let expected = names(&clean.run(Rollout::new(spec(&clean, params()))));
    for keep in [|_| 0, |_| 1, |n| n - 1] as [fn(usize) -> usize; 3] {
        let mut w = World::new(6, 0);
        let start = Rollout::new(spec(&w, params()));
        let r = run_with_crashes(&mut w, start, 2, keep);
        assert_eq!(names(&r), expected, "replays recorded the same events");
    }
    let mut w = World::new(6, 0);
    w.broken_new_image();
    let start = Rollout::new(spec(&w, params()));
    let r = run_with_crashes(&mut w, start, 2, |n| n - 1);
    let n = names(&r);
    for once in ["started", "failed", "revert_started false", "reverted"] {
        assert_eq!(n.iter().filter(|x| *x == once).count(), 1, "{once}: {n:?}");
    }
}

#[test]
fn the_same_observation_stepped_twice_records_nothing_twice() {
    let mut clean = World::new(6, 0);
    let expected = names(&clean.run(Rollout::new(spec(&clean, params()))));
    let mut w = World::new(6, 0);
    let mut r = Rollout::new(spec(&w, params()));
    while !r.is_terminal() {
        let obs = w.observe();
        let first = step(&r, &obs, w.now);
        let second = step(&first.next, &obs, w.now);
        w.perform(&first.actions);
        w.perform(&second.actions);
        r = second.next;
        w.tick(Duration::from_secs(1));
    }
    assert_eq!(names(&r), expected);
}

#[test]
fn a_record_written_before_events_existed_loads_and_records_on() {
    let mut w = World::new(4, 0);
    let r = Rollout::new(spec(&w, params()));
    let r = w.run_until(r, Duration::from_secs(600), |_, w| !w.launched.is_empty());
    let mut json = serde_json::to_value(&r).unwrap();
    let progress = json["progress"].as_object_mut().unwrap();
    assert!(progress.remove("events").is_some());
    assert!(progress.remove("events_dropped").is_some());
    let old: Rollout = serde_json::from_value(json).unwrap();
    assert!(old.progress.events.is_empty());
    assert_eq!(old.progress.events_dropped, 0);
    let r = w.run(old);
    let n = names(&r);
    assert_eq!(n.first().unwrap(), "instance_seen i-0100 1", "{n:?}");
    assert_eq!(n.last().unwrap(), "succeeded");
}

#[test]
fn an_event_is_stored_as_flat_json() {
    let e = Event {
        at: Timestamp(1_700_000_003_000),
        kind: EventKind::BatchLaunched {
            n: 1,
            size: 2,
            desired: 6,
        },
        counts: counts(4, 0, 0),
    };
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "at": 1_700_000_003_000_u64,
            "event": "batch_launched",
            "n": 1,
            "size": 2,
            "desired": 6,
            "counts": {"old": 4, "new": 0, "passing": 0},
        })
    );
    assert_eq!(serde_json::from_value::<Event>(json).unwrap(), e);
}

#[test]
fn the_list_keeps_the_first_and_the_last_events_and_counts_the_rest() {
    let mut p = Progress::default();
    let total = 500_u64;
    for i in 0..total {
        p.record(Event {
            at: Timestamp(i),
            kind: EventKind::Started,
            counts: Counts::default(),
        });
    }
    let at: Vec<u64> = p.events.iter().map(|e| e.at.0).collect();
    assert_eq!(at.len(), KEEP_FIRST + KEEP_LAST);
    let first: Vec<u64> = (0..KEEP_FIRST as u64).collect();
    let last: Vec<u64> = (total - KEEP_LAST as u64..total).collect();
    assert_eq!(&at[..KEEP_FIRST], first.as_slice());
    assert_eq!(&at[KEEP_FIRST..], last.as_slice());
    assert_eq!(
        u64::from(p.events_dropped),
        total - (KEEP_FIRST + KEEP_LAST) as u64
    );
}

#[test]
fn a_long_reason_is_cut_in_the_event_not_in_the_state() {
    let mut w = World::new(2, 0);
    let long = "é".repeat(REASON_LIMIT * 2);
    let r = Rollout::new(spec(&w, params()));
    let r = w.run_until(r, Duration::from_secs(600), |_, w| !w.launched.is_empty());
    w.commands.push(OperatorCommand::Abort {
        by: "bob".into(),
        reason: long.clone(),
    });
    let r = w.run(r);
    let State::Reverted { reason, .. } = &r.state else {
        panic!("{:?}", r.state)
    };
    assert!(reason.ends_with(&long), "the state keeps it whole");
    let cut = r
        .progress
        .events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::RevertStarted { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(cut.chars().count(), REASON_LIMIT + 1);
    assert!(cut.starts_with("aborted by bob: é") && cut.ends_with('…'));
}

#[test]
fn an_instance_flapping_is_recorded_healthy_then_unhealthy() {
    let mut w = World::new(2, 0);
    let mut p = params();
    p.failure_time = Duration::from_secs(3600);
    // i-0101 never registers, so the batch cannot complete while i-0100
    // turns healthy.
    let boot = w.boot;
    w.health = Box::new(move |p| (p.age >= boot && p.id != "i-0101").then(passing));
    let r = Rollout::new(spec(&w, p));
    let r = w.run_until(r, Duration::from_secs(600), |r, _| {
        r.progress
            .events
            .iter()
            .any(|e| matches!(e.kind, EventKind::InstanceHealthy { .. }))
    });
    assert!(matches!(r.state, State::Launching(_)), "{:?}", r.state);
    w.health = Box::new(|p| {
        Some(if p.image == NEW {
            critical(p.id)
        } else {
            passing()
        })
    });
    let r = w.run_until(r, Duration::from_secs(5), |_, _| false);
    let n = names(&r);
    let tail: Vec<&str> = n[n.len() - 4..].iter().map(String::as_str).collect();
    assert_eq!(
        tail,
        [
            "instance_healthy i-0100",
            "instance_unhealthy i-0100",
            "instance_wrong i-0100",
            "instance_wrong i-0101",
        ]
    );
}
