#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

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

#[test]
fn decide_plans_supersedes_and_guards() {
    let newest = image("ami-new", "1.3.0");
    let failed = BTreeSet::new();
    let now = 1_795_000_000_000;
    // Up to date.
    assert!(matches!(
        decide(&newest, "ami-new", true, &[], &failed, now),
        Verdict::Nothing(_)
    ));
    // A new image with no plans: plan it.
    assert_eq!(
        decide(&newest, "ami-old", true, &[], &failed, now),
        Verdict::Plan { supersede: vec![] }
    );
    // A pending plan for an older image is superseded.
    let mut older = sample_plan();
    older.id = "web-2".into();
    older.target = ImageRef::from_image(&image("ami-mid", "1.2.9"));
    assert_eq!(
        decide(
            &newest,
            "ami-old",
            true,
            std::slice::from_ref(&older),
            &failed,
            now
        ),
        Verdict::Plan {
            supersede: vec!["web-2".into()]
        }
    );
    // A plan for the same image: nothing (no plan produced twice).
    let same = sample_plan();
    assert!(matches!(
        decide(
            &newest,
            "ami-old",
            true,
            std::slice::from_ref(&same),
            &failed,
            now
        ),
        Verdict::Nothing(_)
    ));
    // Rejected stays rejected.
    let mut rejected = same.clone();
    rejected.decision = Decision::Rejected {
        by: "ops".into(),
        at: now,
        reason: "no".into(),
    };
    assert!(matches!(
        decide(&newest, "ami-old", true, &[rejected], &failed, now),
        Verdict::Nothing(r) if r.contains("rejected")
    ));
    // An image that failed before is never planned again.
    let failed: BTreeSet<String> = ["ami-new".to_string()].into();
    assert!(matches!(
        decide(&newest, "ami-old", true, &[], &failed, now),
        Verdict::Nothing(r) if r.contains("failed")
    ));
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
