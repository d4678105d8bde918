//! Crashes and replays: the executor dies between two actions, performs an
//! action list twice, or steps twice on one observation. The outcome must be
//! the same as a clean run: no extra launch, no old instance terminated
//! twice, no capacity dip.

use std::time::Duration;

use super::world::{NEW, OLD, World, params, spec};
use crate::machine::{Action, Rollout, State, step};

/// The smallest pieces an executor performs one by one (one termination
/// per instance), so a crash can fall inside an action.
fn atoms(actions: &[Action]) -> Vec<Action> {
    actions
        .iter()
        .flat_map(|a| match a {
            Action::Terminate { ids, decrement } => ids
                .iter()
                .map(|id| Action::Terminate {
                    ids: vec![id.clone()],
                    decrement: *decrement,
                })
                .collect(),
            a => vec![a.clone()],
        })
        .collect()
}

/// Runs a rollout where every `period`th step with actions crashes after performing
/// `keep(n)` of its `n` atomic actions: the new state is not persisted and
/// the commands not consumed; the executor restarts at once from the old
/// state with a fresh observation.
pub(super) fn run_with_crashes(
    w: &mut World,
    mut r: Rollout,
    period: usize,
    keep: fn(usize) -> usize,
) -> Rollout {
    let end = w.now.plus(Duration::from_secs(7200));
    let mut crashes = 0;
    let mut busy = 0;
    while !r.is_terminal() && w.now < end {
        let s = step(&r, &w.observe(), w.now);
        let atoms = atoms(&s.actions);
        busy += usize::from(!atoms.is_empty());
        if busy % period == period - 1 && !atoms.is_empty() {
            for a in &atoms[..keep(atoms.len())] {
                w.apply(a);
            }
            crashes += 1;
            continue;
        }
        w.perform(&s.actions);
        w.commands.clear();
        r = s.next;
        w.tick(Duration::from_secs(1));
    }
    assert!(crashes > 5, "the test crashed only {crashes} times");
    r
}

fn check_clean_success(w: &World, r: &Rollout, old: &[String]) {
    assert!(matches!(r.state, State::Succeeded { .. }), "{:?}", r.state);
    assert_eq!(
        w.launched.len(),
        old.len(),
        "extra launches: {:?}",
        w.launched
    );
    let mut t = w.terminated.clone();
    t.sort();
    assert_eq!(t, old, "each old instance terminated exactly once");
    assert_eq!(w.images(), vec![NEW; old.len()]);
    assert!(w.min_desired >= 6, "capacity dipped to {}", w.min_desired);
    assert_eq!(w.group.desired_capacity, 6);
    assert_eq!(w.group.max_size, 6);
    assert!(w.group.suspended_processes.is_empty());
}

#[test]
fn a_crash_between_two_actions_is_harmless() {
    let keeps: [fn(usize) -> usize; 3] = [|_| 0, |_| 1, |n| n - 1];
    for period in [2, 3] {
        for keep in keeps {
            let mut w = World::new(6, 0);
            let old: Vec<String> = w.ec2.keys().cloned().collect();
            let r = Rollout::new(spec(&w, params()));
            let r = run_with_crashes(&mut w, r, period, keep);
            check_clean_success(&w, &r, &old);
        }
    }
}

#[test]
fn a_crash_during_a_revert_is_harmless() {
    let keeps: [fn(usize) -> usize; 2] = [|_| 1, |n| n - 1];
    for keep in keeps {
        let mut w = World::new(6, 0);
        w.broken_new_image();
        let r = Rollout::new(spec(&w, params()));
        let r = run_with_crashes(&mut w, r, 2, keep);
        assert!(matches!(r.state, State::Reverted { .. }), "{:?}", r.state);
        assert!(w.terminated.iter().all(|id| !id.starts_with("i-old")));
        assert_eq!(w.images(), vec![OLD; 6]);
        assert_eq!(w.template(), 1);
        assert!(w.min_desired >= 6);
        assert_eq!(w.group.desired_capacity, 6);
    }
}

#[test]
fn performing_every_action_list_twice_is_harmless() {
    let mut w = World::new(6, 0);
    let old: Vec<String> = w.ec2.keys().cloned().collect();
    let mut r = Rollout::new(spec(&w, params()));
    while !r.is_terminal() {
        let s = w.step(&r);
        w.perform(&s.actions);
        r = s.next;
        w.tick(Duration::from_secs(1));
    }
    check_clean_success(&w, &r, &old);
}

#[test]
fn the_same_observation_twice_is_harmless() {
    let mut w = World::new(6, 0);
    let old: Vec<String> = w.ec2.keys().cloned().collect();
    let mut r = Rollout::new(spec(&w, params()));
    while !r.is_terminal() {
        let obs = w.observe();
        let first = step(&r, &obs, w.now);
        assert_eq!(first, step(&r, &obs, w.now), "step is not a function");
        // The executor steps the new state before the world shows the
        // first step's effects (an eventually consistent read).
        let second = step(&first.next, &obs, w.now);
        w.perform(&first.actions);
        w.perform(&second.actions);
        w.commands.clear();
        r = second.next;
        w.tick(Duration::from_secs(1));
    }
    check_clean_success(&w, &r, &old);
}
