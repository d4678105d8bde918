#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::fleet::{GroupInstance, LaunchTemplateRef, TemplateVersion};

pub(crate) fn image(id: &str, version: &str) -> Image {
    Image {
        image_id: id.into(),
        name: format!("web-{version}"),
        artifact: Some("acmeinc/web".into()),
        version: Some(version.into()),
        state: "available".into(),
        creation_date: Some(std::time::UNIX_EPOCH + Duration::from_secs(1_795_000_000)),
        tags: BTreeMap::new(),
    }
}

pub(crate) fn params() -> Params {
    Params {
        batch_size: 2,
        min_healthy_time: Duration::from_secs(30),
        ..Params::default()
    }
}

pub(crate) fn settings(params: &Params) -> PlanSettings<'_> {
    PlanSettings {
        service: "web",
        params,
        approval_timeout: Duration::from_secs(72 * 3600),
        expected_boot_time: Duration::from_secs(60),
    }
}

pub(crate) fn group(ids: &[&str]) -> Group {
    Group {
        name: "web-asg".into(),
        min_size: ids.len() as i32,
        max_size: 12,
        desired_capacity: ids.len() as i32,
        launch_template: Some(LaunchTemplateRef {
            id: "lt-0123".into(),
            name: "web-lt".into(),
            version: "4".into(),
        }),
        instances: ids
            .iter()
            .enumerate()
            .map(|(n, id)| GroupInstance {
                instance_id: id.to_string(),
                lifecycle_state: "InService".into(),
                health_status: "Healthy".into(),
                protected_from_scale_in: false,
                availability_zone: if n % 2 == 0 {
                    "eu-west-1a"
                } else {
                    "eu-west-1b"
                }
                .into(),
            })
            .collect(),
        suspended_processes: vec![],
    }
}

pub(crate) fn instances(pairs: &[(&str, &str)]) -> Vec<Instance> {
    pairs
        .iter()
        .map(|(id, ami)| Instance {
            instance_id: id.to_string(),
            image_id: ami.to_string(),
            state: "running".into(),
            private_ip: Some("10.0.0.1".into()),
            availability_zone: "eu-west-1a".into(),
            launch_time: None,
        })
        .collect()
}

pub(crate) fn template() -> TemplateVersion {
    TemplateVersion {
        template_id: "lt-0123".into(),
        template_name: "web-lt".into(),
        version_number: 4,
        image_id: Some("ami-old".into()),
    }
}

pub(crate) fn sample_plan() -> Plan {
    let params = params();
    let g = group(&["i-1", "i-2", "i-3", "i-4", "i-5", "i-6"]);
    let inst = instances(&[
        ("i-1", "ami-old"),
        ("i-2", "ami-old"),
        ("i-3", "ami-old"),
        ("i-4", "ami-old"),
        ("i-5", "ami-old"),
        ("i-6", "ami-new"),
    ]);
    let t = template();
    let old = image("ami-old", "1.2.3");
    let new = image("ami-new", "1.3.0");
    compute(&PlanInput {
        service: settings(&params),
        id: "web-3".into(),
        group: &g,
        instances: &inst,
        template: &t,
        // Terraform wrote version 5 since the group was pinned to 4.
        default_template_version: 5,
        current_image: Some(&old),
        target: &new,
        change: Change::Image,
        now: 1_795_000_000_000,
    })
}

#[test]
fn compute_replaces_only_instances_off_target() {
    let p = sample_plan();
    assert_eq!(p.to_replace().count(), 5);
    assert_eq!(
        p.instances
            .iter()
            .find(|i| i.instance_id == "i-6")
            .unwrap()
            .action,
        InstanceAction::Keep
    );
    assert_eq!(p.batches, 3, "5 instances in batches of 2");
    assert_eq!(p.estimate, Duration::from_secs(3 * 90));
    assert_eq!(p.current.version, "1.2.3");
    assert_eq!(p.target.version, "1.3.0");
    assert_eq!(p.current_template_version, 4);
    assert_eq!(
        p.base_template_version,
        Some(5),
        "the rollout copies the default version, not the pinned one"
    );
    assert!(p.is_pending(1_795_000_000_000));
    assert!(!p.is_pending(1_795_000_000_000 + 72 * 3600 * 1000));
}

#[test]
fn batches_count_the_canary_step() {
    let mut r = Params {
        batch_size: 3,
        ..Params::default()
    };
    assert_eq!(batches(0, &r), 0);
    assert_eq!(batches(12, &r), 4);
    r.canary = 1;
    assert_eq!(batches(12, &r), 1 + 4, "1 canary then 11 in batches of 3");
    r.canary = 20;
    assert_eq!(
        batches(2, &r),
        1,
        "a canary larger than the group is the whole group"
    );
}

fn situation<'a>(
    running: &'a str,
    plans: &'a [Plan],
    failed: &'a BTreeSet<String>,
) -> Situation<'a> {
    Situation {
        running_image: running,
        fleet_converged: true,
        plans,
        failed,
        published: None,
        now: NOW,
    }
}

const NOW: Millis = 1_795_000_000_000;

fn nothing(v: Verdict) -> Ignored {
    match v {
        Verdict::Nothing(why) => why,
        other => panic!("expected nothing, got {other:?}"),
    }
}

#[test]
fn decide_plans_supersedes_and_guards() {
    let newest = image("ami-new", "1.3.0");
    let failed = BTreeSet::new();
    // Up to date.
    assert!(matches!(
        nothing(decide(&newest, &situation("ami-new", &[], &failed))),
        Ignored::AlreadyRunning { .. }
    ));
    // A new image with no plans: plan it.
    assert_eq!(
        decide(&newest, &situation("ami-old", &[], &failed)),
        Verdict::Plan { supersede: vec![] }
    );
    // A pending plan for an older image is superseded.
    let mut older = sample_plan();
    older.id = "web-2".into();
    older.target = ImageRef::from_image(&image("ami-mid", "1.2.9"));
    assert_eq!(
        decide(
            &newest,
            &situation("ami-old", std::slice::from_ref(&older), &failed)
        ),
        Verdict::Plan {
            supersede: vec!["web-2".into()]
        }
    );
    // A plan for the same image: nothing (no plan produced twice).
    let same = sample_plan();
    let why = nothing(decide(
        &newest,
        &situation("ami-old", std::slice::from_ref(&same), &failed),
    ));
    assert!(matches!(&why, Ignored::Covered { plan, .. } if plan == "web-3"));
    assert!(why.is_on_its_way());
    // Rejected stays rejected, and says who and how to override.
    let mut rejected = same.clone();
    rejected.decision = Decision::Rejected {
        by: "ops".into(),
        at: NOW,
        reason: "no".into(),
    };
    let why = nothing(decide(
        &newest,
        &situation("ami-old", std::slice::from_ref(&rejected), &failed),
    ));
    assert!(why.to_string().contains("rejected by ops (no)"), "{why}");
    assert!(!why.is_on_its_way());
    assert!(why.hint("web").unwrap().contains("--force"));
    // An image that failed before is never planned again.
    let failed: BTreeSet<String> = ["ami-new".to_string()].into();
    let why = nothing(decide(&newest, &situation("ami-old", &[], &failed)));
    assert!(matches!(why, Ignored::Failed { .. }));
    assert!(why.to_string().contains("failed a rollout before"), "{why}");
    assert!(why.hint("web").unwrap().contains("--force"));
}

#[test]
fn publish_of_an_older_image_says_what_runs_and_how_to_roll_back() {
    let older = image("ami-old", "1.2.3");
    let newest = image("ami-new", "1.3.0");
    let failed = BTreeSet::new();
    let s = situation("ami-new", &[], &failed);
    let why = nothing(decide_publish(&older, &newest, &s));
    assert!(
        matches!(
            &why,
            Ignored::NotNewest {
                newest_runs: true,
                ..
            }
        ),
        "{why:?}"
    );
    assert!(why.to_string().contains("which the group runs"), "{why}");
    assert!(
        why.hint("web")
            .unwrap()
            .contains("rollgate rollback web --to 1.2.3"),
        "{why:?}"
    );
    // Publishing the newest decides as the planner does.
    assert_eq!(
        decide_publish(&newest, &newest, &situation("ami-old", &[], &failed)),
        decide(&newest, &situation("ami-old", &[], &failed))
    );
}

/// A history: 1.2.3 ran first; web-1 rolled out 1.3.0 successfully.
fn history_with_success() -> Vec<Plan> {
    let mut first = sample_plan();
    first.id = "web-1".into();
    first.created_at = NOW - 10_000;
    first.decision = Decision::Approved {
        by: "alice".into(),
        at: NOW - 9_000,
    };
    first.outcome = Some(Outcome::Succeeded { at: NOW - 5_000 });
    vec![first]
}

fn rollback_plan(of: &[Plan], at: Millis) -> Plan {
    let mut r = of[0].clone();
    r.id = "web-2".into();
    r.change = Change::Rollback {
        requested_by: "alice".into(),
        override_failed: false,
    };
    r.created_at = at;
    r.current = of[0].target.clone();
    r.target = of[0].current.clone();
    r.decision = Decision::Pending {
        expires_at: at + 1_000_000,
    };
    r.outcome = None;
    r
}

#[test]
fn rollback_goes_to_the_last_stable_version_and_refuses_failed_ones() {
    let plans = history_with_success();
    let none = BTreeSet::new();
    let stable = stable_versions(&plans);
    let versions: Vec<&str> = stable.iter().map(|v| v.image.version.as_str()).collect();
    assert_eq!(versions, ["1.3.0", "1.2.3"], "most recent first");
    // By default: the last stable version other than the running one.
    let t = rollback_target(&plans, "ami-new", &none, None, false).unwrap();
    assert_eq!(t.image.image_id, "ami-old");
    assert_eq!(t.plan, None, "it ran before the first plan");
    // By version or by AMI.
    assert_eq!(
        rollback_target(&plans, "ami-new", &none, Some("1.2.3"), false)
            .unwrap()
            .image
            .image_id,
        "ami-old"
    );
    assert!(rollback_target(&plans, "ami-new", &none, Some("ami-old"), false).is_ok());
    // Not a version that never ran stable, nor the running one.
    let e = rollback_target(&plans, "ami-new", &none, Some("0.9"), false).unwrap_err();
    assert!(e.to_string().contains("1.3.0, 1.2.3"), "{e}");
    let e = rollback_target(&plans, "ami-new", &none, Some("1.3.0"), false).unwrap_err();
    assert!(matches!(e, RollbackRefusal::AlreadyRunning { .. }), "{e}");
    // A version that failed since is refused, named, unless forced.
    let failed: BTreeSet<String> = ["ami-old".to_string()].into();
    let e = rollback_target(&plans, "ami-new", &failed, None, false).unwrap_err();
    assert!(
        e.to_string().contains("1.2.3") && e.to_string().contains("ami-old"),
        "{e}"
    );
    assert!(e.to_string().contains("--force"), "{e}");
    assert!(rollback_target(&plans, "ami-new", &failed, None, true).is_ok());
    // Nothing earlier: refused.
    let e = rollback_target(&[], "ami-new", &none, None, false).unwrap_err();
    assert!(matches!(e, RollbackRefusal::NoEarlierVersion { .. }), "{e}");
}

#[test]
fn a_rollback_is_not_superseded_by_the_newer_image_until_a_new_publish() {
    let mut plans = history_with_success();
    let newest = image("ami-new", "1.3.0"); // built at 1_795_000_000 s
    let rollback = rollback_plan(&plans, NOW + 60_000);
    plans.push(rollback.clone());
    let none = BTreeSet::new();
    // Pending rollback, group still on 1.3.0 but not converged: the newest
    // image is not planned over the rollback.
    let mut s = situation("ami-new", &plans, &none);
    s.fleet_converged = false;
    let why = nothing(decide(&newest, &s));
    assert!(
        matches!(&why, Ignored::SkippedByRollback { plan, .. } if plan == "web-2"),
        "{why:?}"
    );
    assert!(why.hint("web").unwrap().contains("publish it again"));
    // After the rollback succeeded: the group runs 1.2.3; 1.3.0 stays skipped.
    plans[1].decision = Decision::Approved {
        by: "alice".into(),
        at: NOW + 61_000,
    };
    plans[1].outcome = Some(Outcome::Succeeded { at: NOW + 90_000 });
    let s = situation("ami-old", &plans, &none);
    assert!(matches!(
        nothing(decide(&newest, &s)),
        Ignored::SkippedByRollback { .. }
    ));
    // Publishing it again after the rollback rolls forward on purpose.
    let mut s = situation("ami-old", &plans, &none);
    s.published = Some(Published {
        image_id: "ami-new",
        at: NOW + 120_000,
    });
    assert_eq!(decide(&newest, &s), Verdict::Plan { supersede: vec![] });
    // A publish from before the rollback does not count.
    s.published = Some(Published {
        image_id: "ami-new",
        at: NOW,
    });
    assert!(matches!(decide(&newest, &s), Verdict::Nothing(_)));
    // An image built after the rollback is planned as usual.
    let mut newer = image("ami-newer", "1.4.0");
    newer.creation_date = Some(std::time::UNIX_EPOCH + Duration::from_millis(NOW + 100_000));
    let s = situation("ami-old", &plans, &none);
    assert_eq!(decide(&newer, &s), Verdict::Plan { supersede: vec![] });
    // A rejected rollback skips nothing.
    plans[1].decision = Decision::Rejected {
        by: "bob".into(),
        at: NOW + 61_000,
        reason: String::new(),
    };
    plans[1].outcome = None;
    let s = situation("ami-old", &plans, &none);
    assert_eq!(decide(&newest, &s), Verdict::Plan { supersede: vec![] });
}

#[test]
fn a_newer_default_template_version_with_the_same_image_is_a_template_change() {
    let plans = history_with_success(); // web-1: 1.3.0 from base 5, succeeded
    assert_eq!(running_base(&plans, "ami-new", 7), 5);
    assert_eq!(
        running_base(&[], "ami-new", 7),
        7,
        "no history: the pinned version"
    );
    // Terraform wrote version 6 as the default.
    assert_eq!(
        decide_template("ami-new", true, 7, 6, &plans, NOW),
        Some(Change::Template {
            from_version: 5,
            to_version: 6
        })
    );
    // Not when the default is the base, nor mid-rollout, nor with an open plan.
    assert_eq!(decide_template("ami-new", true, 7, 5, &plans, NOW), None);
    assert_eq!(decide_template("ami-new", false, 7, 6, &plans, NOW), None);
    let mut open = plans.clone();
    open.push(sample_plan());
    assert_eq!(decide_template("ami-new", true, 7, 6, &open, NOW), None);
    // A template change that succeeded moves the base; one that was
    // rejected is not planned again for the same version.
    let mut done = plans.clone();
    let mut t = plans[0].clone();
    t.id = "web-2".into();
    t.change = Change::Template {
        from_version: 5,
        to_version: 6,
    };
    t.current = t.target.clone();
    t.outcome = Some(Outcome::Succeeded { at: NOW });
    done.push(t.clone());
    assert_eq!(running_base(&done, "ami-new", 8), 6);
    assert_eq!(decide_template("ami-new", true, 8, 6, &done, NOW), None);
    let mut no = plans.clone();
    t.outcome = None;
    t.decision = Decision::Rejected {
        by: "bob".into(),
        at: NOW,
        reason: String::new(),
    };
    no.push(t);
    assert_eq!(decide_template("ami-new", true, 7, 6, &no, NOW), None);
    assert!(decide_template("ami-new", true, 7, 9, &no, NOW).is_some());
}

#[test]
fn a_template_change_replaces_every_instance_though_they_run_the_image() {
    let params = params();
    let g = group(&["i-1", "i-2", "i-3"]);
    let inst = instances(&[("i-1", "ami-new"), ("i-2", "ami-new"), ("i-3", "ami-new")]);
    let t = template();
    let new = image("ami-new", "1.3.0");
    let p = compute(&PlanInput {
        service: settings(&params),
        id: "web-9".into(),
        group: &g,
        instances: &inst,
        template: &t,
        default_template_version: 6,
        current_image: Some(&new),
        target: &new,
        change: Change::Template {
            from_version: 5,
            to_version: 6,
        },
        now: NOW,
    });
    assert_eq!(p.to_replace().count(), 3);
    assert_eq!(p.batches, 2);
    assert_eq!(p.current, p.target);
    assert_eq!(p.change.word(), "template");
}

#[test]
fn a_batch_larger_than_the_group_is_capped() {
    let p = Params {
        batch_size: 50,
        ..Params::default()
    };
    assert_eq!(effective_batch(6, &p), 6);
    assert_eq!(batches(6, &p), 1);
    assert_eq!(effective_batch(0, &p), 1);
    let small = Params {
        batch_size: 2,
        ..Params::default()
    };
    assert_eq!(effective_batch(6, &small), 2);
}

#[test]
fn expiry_and_ids() {
    let p = sample_plan();
    let Decision::Pending { expires_at } = p.decision else {
        panic!("pending")
    };
    assert!(expired(std::slice::from_ref(&p), expires_at - 1).is_empty());
    assert_eq!(expired(&[p], expires_at), vec!["web-3".to_string()]);
    assert_eq!(parse_plan_id("web-api-12"), Some(("web-api", 12)));
    assert_eq!(parse_plan_id("web"), None);
    assert_eq!(parse_plan_id("-3"), None);
}

#[test]
fn plans_round_trip_as_json() {
    let p = sample_plan();
    let json = serde_json::to_string(&p).unwrap();
    assert!(json.contains("\"state\":\"pending\""), "{json}");
    let back: Plan = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p);
}
