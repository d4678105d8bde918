//! Template changes: Terraform wrote a new default version (say another
//! instance type) and the image stays. Every instance already runs the
//! target image, so the machine must tell old from new by identity: the
//! members present at start are old, the ones it saw appear are new. The
//! world records which version launched each instance (the machine never
//! sees that), so these tests can check the machine got it right.

use std::time::Duration;

use super::crash::run_with_crashes;
use super::world::{OLD, World, critical, params, passing, spec};
use crate::machine::{
    Action, Change, OperatorCommand, RevertStage, Rollout, RolloutSpec, State, step,
};

/// Terraform's new default version.
const TERRAFORM: i64 = 2;
/// The version the rollout creates: a copy of [`TERRAFORM`] with the image.
const COPY: i64 = 3;

/// Six members on the stable version 1, Terraform's version 2 the default,
/// and a plan that rolls version 2 out with the same image.
fn template_world() -> (World, RolloutSpec) {
    let mut w = World::new(6, 0);
    w.templates
        .insert(TERRAFORM, (OLD.into(), "terraform".into()));
    let mut s = spec(&w, params());
    s.target_image = OLD.into();
    s.target_version = "1.0.0".into();
    s.base_template_version = Some(TERRAFORM);
    s.change = Change::Template {
        from_version: 1,
        to_version: TERRAFORM,
    };
    (w, s)
}

fn initial(w: &World) -> Vec<String> {
    w.ec2.keys().cloned().collect()
}

/// The template version that launched each live member.
fn live_versions(w: &World) -> Vec<i64> {
    w.group
        .instances
        .iter()
        .map(|m| w.launched_from[&m.instance_id])
        .collect()
}

/// Instances on the copy never pass once booted; the rest pass.
fn broken_copy(w: &mut World) {
    let boot = w.boot;
    w.health = Box::new(move |p| {
        (p.age >= boot).then(|| {
            if p.template == COPY {
                critical(p.id)
            } else {
                passing()
            }
        })
    });
}

/// How many times the image was marked failed.
fn image_marks(w: &World) -> usize {
    w.actions()
        .filter(|a| matches!(a, Action::MarkImageFailed { .. }))
        .count()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// After a revert: every initial member still serves, nothing the rollout
/// launched is left, the group pins the stable version, capacity restored.
fn check_reverted(w: &World, r: &Rollout, old: &[String]) {
    assert!(
        matches!(r.state, State::Reverted { aborted: false, .. }),
        "{:?}",
        r.state
    );
    assert!(
        w.terminated.iter().all(|id| w.launched_from[id] == COPY),
        "only the rollout's instances are terminated: {:?}",
        w.terminated
            .iter()
            .map(|id| (id, w.launched_from[id]))
            .collect::<Vec<_>>()
    );
    let live: Vec<String> = w
        .group
        .instances
        .iter()
        .map(|m| m.instance_id.clone())
        .collect();
    assert_eq!(sorted(live), old, "the initial members serve on");
    assert_eq!(w.template(), 1, "back on the stable version");
    assert!(w.min_desired >= 6, "capacity dipped to {}", w.min_desired);
    assert_eq!(w.group.desired_capacity, 6);
    assert_eq!(w.group.max_size, 6);
    assert!(w.group.suspended_processes.is_empty());
    assert!(w.stable_recorded.is_empty(), "{:?}", w.stable_recorded);
    assert_eq!(
        image_marks(w),
        0,
        "the image runs on every stable instance: not marked failed"
    );
}

#[test]
fn a_template_change_replaces_every_instance_on_the_same_image() {
    let (mut w, s) = template_world();
    let old = initial(&w);
    let r = w.run(Rollout::new(s));
    assert!(matches!(r.state, State::Succeeded { .. }), "{:?}", r.state);
    assert_eq!(
        r.progress.to_replace.len(),
        6,
        "every member is old, though all run the target image"
    );
    assert_eq!(sorted(w.terminated.clone()), old, "each old one once");
    assert_eq!(w.launched.len(), 6, "no extra launch: {:?}", w.launched);
    assert_eq!(live_versions(&w), vec![COPY; 6], "all on the copy");
    assert_eq!(w.images(), vec![OLD; 6]);
    assert_eq!(w.templates[&COPY].0, OLD, "the copy keeps the image");
    assert!(
        w.actions().all(|a| match a {
            Action::CreateTemplateVersion {
                base_version,
                image,
                ..
            } => *base_version == TERRAFORM && image == OLD,
            _ => true,
        }),
        "the copy is of Terraform's version"
    );
    assert_eq!(w.template(), COPY);
    assert_eq!(
        w.stable_recorded,
        vec![(COPY, OLD.to_owned(), "1.0.0".to_owned())]
    );
    assert!(w.min_desired >= 6, "capacity dipped to {}", w.min_desired);
    assert!(w.min_serving >= 6, "serving dipped to {}", w.min_serving);
    assert_eq!(w.group.desired_capacity, 6);
    assert_eq!(w.group.max_size, 6);
    assert!(w.group.suspended_processes.is_empty());
    assert!(w.group.instances.iter().all(|m| !m.protected_from_scale_in));
    assert_eq!(image_marks(&w), 0);
}

#[test]
fn a_failing_template_reverts_and_terminates_only_the_rollouts_instances() {
    let (mut w, s) = template_world();
    let old = initial(&w);
    broken_copy(&mut w);
    let r = w.run(Rollout::new(s));
    check_reverted(&w, &r, &old);
    let State::Reverted { reason, .. } = &r.state else {
        unreachable!()
    };
    assert!(reason.contains("healthy_deadline"), "{reason}");
    assert_eq!(w.terminated.len(), 2, "the first batch's surge");
}

#[test]
fn a_failure_after_accepted_batches_replaces_them_with_stable_instances() {
    // The copy's instances of batch 1 pass (it is accepted and retires two
    // old members); those launched later fail.
    let (mut w, s) = template_world();
    let boot = w.boot;
    let t0 = w.now;
    w.health = Box::new(move |p| {
        (p.age >= boot).then(|| {
            let launched = p.now.since(t0).saturating_sub(p.age);
            if p.template == COPY && launched >= Duration::from_secs(30) {
                critical(p.id)
            } else {
                passing()
            }
        })
    });
    let r = w.run(Rollout::new(s));
    assert!(
        matches!(r.state, State::Reverted { aborted: false, .. }),
        "{:?}",
        r.state
    );
    assert_eq!(r.progress.accepted.len(), 2, "{:?}", r.progress);
    assert_eq!(live_versions(&w), vec![1; 6], "stable instances only");
    assert_eq!(w.template(), 1);
    let retired: Vec<&String> = w
        .terminated
        .iter()
        .filter(|id| was_initial(&w, id))
        .collect();
    assert_eq!(retired.len(), 2, "only batch 1's retirements: {retired:?}");
    assert!(
        w.launched
            .iter()
            .filter(|id| w.launched_from[*id] == COPY)
            .all(|id| w.terminated.contains(id)),
        "every instance the rollout launched is gone"
    );
    assert!(
        w.actions()
            .any(|a| matches!(a, Action::SetGroupTemplate { version: 1, .. })),
        "the stable version is pinned again (the same image is not the same version)"
    );
    assert!(w.min_desired >= 6, "capacity dipped to {}", w.min_desired);
    assert_eq!(w.group.desired_capacity, 6);
    assert_eq!(image_marks(&w), 0);
}

fn was_initial(w: &World, id: &str) -> bool {
    w.launched_from[id] == 1 && !w.launched.iter().any(|l| l == id)
}

#[test]
fn an_abort_marks_nothing() {
    let (mut w, s) = template_world();
    let old = initial(&w);
    let r = w.run_until(
        Rollout::new(s),
        Duration::from_secs(600),
        |r, _| matches!(&r.state, State::Launching(b) if !b.new.is_empty()),
    );
    w.commands.push(OperatorCommand::Abort {
        by: "ops".into(),
        reason: "wrong instance type".into(),
    });
    let r = w.run(r);
    assert!(
        matches!(r.state, State::Reverted { aborted: true, .. }),
        "{:?}",
        r.state
    );
    assert_eq!(image_marks(&w), 0);
    assert_eq!(live_versions(&w), vec![1; 6]);
    assert!(w.terminated.iter().all(|id| !old.contains(id)));
}

#[test]
fn a_latecomer_is_recorded_before_the_stable_pin() {
    // Abort while batch 1 launches, then the group launches one more
    // instance from the copy before the revert's first step: the revert
    // must record it before pinning the stable version, or a crash right
    // after the pin would leave nothing telling it from a stable instance.
    let (mut w, s) = template_world();
    let r = w.run_until(
        Rollout::new(s),
        Duration::from_secs(600),
        |r, _| matches!(&r.state, State::Launching(b) if b.new.len() == 2),
    );
    w.commands.push(OperatorCommand::Abort {
        by: "ops".into(),
        reason: "test".into(),
    });
    let r = w.step(&r).next;
    assert!(matches!(r.state, State::Reverting(_)), "{:?}", r.state);
    w.group.desired_capacity += 1;
    w.group.max_size += 1;
    w.tick(Duration::from_secs(1));
    let late = w.launched.last().unwrap().clone();
    assert_eq!(w.launched_from[&late], COPY);

    let s1 = step(&r, &w.observe(), w.now);
    let State::Reverting(rv) = &s1.next.state else {
        panic!("{:?}", s1.next.state)
    };
    let RevertStage::Cleanup { terminate } = &rv.stage else {
        panic!("{:?}", rv.stage)
    };
    assert!(terminate.contains(&late), "{terminate:?}");
    assert!(
        !s1.actions
            .iter()
            .any(|a| matches!(a, Action::SetGroupTemplate { .. })),
        "no pin before the latecomer is persisted: {:?}",
        s1.actions
    );
    // The next step pins and terminates it.
    let s2 = step(&s1.next, &w.observe(), w.now);
    assert!(
        s2.actions
            .iter()
            .any(|a| matches!(a, Action::SetGroupTemplate { version: 1, .. })),
        "{:?}",
        s2.actions
    );
    assert!(
        s2.actions
            .iter()
            .any(|a| matches!(a, Action::Terminate { ids, .. } if ids.contains(&late))),
        "{:?}",
        s2.actions
    );
}

#[test]
fn a_group_repinned_under_a_template_change_fails_it() {
    let (mut w, s) = template_world();
    let r = w.run_until(Rollout::new(s), Duration::from_secs(600), |r, _| {
        matches!(r.state, State::Launching(_))
    });
    // Someone pins the stable version by hand: new instances would launch
    // without the change, on the same image, and pass.
    w.group.launch_template.as_mut().unwrap().version = "1".into();
    let r = w.run(r);
    let State::Reverted { reason, .. } = &r.state else {
        panic!("{:?}", r.state)
    };
    assert!(reason.contains("changed under the rollout"), "{reason}");
    assert!(reason.contains("version 1, not 3"), "{reason}");
}

#[test]
fn a_crash_anywhere_in_a_template_change_is_harmless() {
    let keeps: [fn(usize) -> usize; 3] = [|_| 0, |_| 1, |n| n - 1];
    for period in [2, 3] {
        for keep in keeps {
            let (mut w, s) = template_world();
            let old = initial(&w);
            let r = run_with_crashes(&mut w, Rollout::new(s), period, keep);
            assert!(matches!(r.state, State::Succeeded { .. }), "{:?}", r.state);
            assert_eq!(sorted(w.terminated.clone()), old, "each old one once");
            assert_eq!(w.launched.len(), 6, "no extra launch: {:?}", w.launched);
            assert_eq!(live_versions(&w), vec![COPY; 6]);
            assert_eq!(w.template(), COPY);
            assert!(w.min_desired >= 6, "capacity dipped to {}", w.min_desired);
            assert_eq!(w.group.desired_capacity, 6);
        }
    }
}

#[test]
fn a_crash_during_a_template_revert_is_harmless() {
    let keeps: [fn(usize) -> usize; 2] = [|_| 1, |n| n - 1];
    for keep in keeps {
        let (mut w, s) = template_world();
        let old = initial(&w);
        broken_copy(&mut w);
        let r = run_with_crashes(&mut w, Rollout::new(s), 2, keep);
        check_reverted(&w, &r, &old);
    }
}

#[test]
fn a_replay_from_kv_mid_rollout_ends_the_same() {
    // The coordinator dies mid-batch; its successor reads the rollout back
    // from KV (JSON) and carries on from a fresh observation.
    let (mut w, s) = template_world();
    let old = initial(&w);
    let r = w.run_until(Rollout::new(s), Duration::from_secs(600), |r, _| {
        r.progress.batches_done == 1 && matches!(r.state, State::Launching(_))
    });
    let stored = serde_json::to_string(&r).unwrap();
    let back: Rollout = serde_json::from_str(&stored).unwrap();
    assert_eq!(back, r);
    assert!(back.spec.changes_template());
    let r = w.run(back);
    assert!(matches!(r.state, State::Succeeded { .. }), "{:?}", r.state);
    assert_eq!(sorted(w.terminated.clone()), old);
    assert_eq!(live_versions(&w), vec![COPY; 6]);
}

#[test]
fn a_rollout_stored_before_change_existed_is_an_image_change() {
    let (_, s) = template_world();
    let mut json = serde_json::to_value(Rollout::new(s)).unwrap();
    json["spec"].as_object_mut().unwrap().remove("change");
    let r: Rollout = serde_json::from_value(json).unwrap();
    assert_eq!(r.spec.change, Change::Image);
    assert!(!r.spec.changes_template());
    // And so the same image is the failing one: a revert leaves the
    // template alone, as it always did.
    assert!(r.spec.stable_is_target());
}

#[test]
fn a_template_canary_waits_for_promotion_then_replaces_the_rest() {
    let (mut w, mut s) = template_world();
    let old = initial(&w);
    s.params.canary = 1;
    let r = w.run_until(Rollout::new(s), Duration::from_secs(600), |r, _| {
        matches!(r.state, State::CanaryPaused(_))
    });
    assert!(matches!(r.state, State::CanaryPaused(_)), "{:?}", r.state);
    assert_eq!(w.terminated, Vec::<String>::new(), "nothing retired yet");
    assert_eq!(
        live_versions(&w).iter().filter(|v| **v == COPY).count(),
        1,
        "one canary on the copy"
    );
    w.commands.push(OperatorCommand::Promote);
    let r = w.run(r);
    assert!(matches!(r.state, State::Succeeded { .. }), "{:?}", r.state);
    assert_eq!(sorted(w.terminated.clone()), old);
    assert_eq!(live_versions(&w), vec![COPY; 6]);
    assert!(w.min_desired >= 6, "capacity dipped to {}", w.min_desired);
}
