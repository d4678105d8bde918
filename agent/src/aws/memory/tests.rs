#![allow(clippy::unwrap_used)]

use super::*;

fn ids(group: &Group) -> Vec<String> {
    group
        .instances
        .iter()
        .map(|i| i.instance_id.clone())
        .collect()
}

#[tokio::test]
async fn a_surge_rollout_runs_on_the_memory_fleet() {
    let fleet = MemoryFleet::new();
    let v1 = fleet.add_template("web", "ami-old");
    fleet.add_group("web", &v1.template_id, 1, 2, 4, 2);
    let old = ids(&fleet.describe_group("web").await.unwrap());

    let v2 = fleet
        .create_launch_template_version(&v1, "ami-new", "web-2")
        .await
        .unwrap();
    assert_eq!(v2, 2);
    assert_eq!(
        fleet
            .create_launch_template_version(&v1, "ami-new", "web-2")
            .await
            .unwrap(),
        2,
        "idempotent"
    );
    let read = fleet
        .launch_template_version(&v1.template_id, "$Latest")
        .await
        .unwrap();
    assert_eq!(read.data, v1.data.with_image("ami-new"));

    fleet
        .set_group_launch_template("web", &v1.template_id, v2)
        .await
        .unwrap();
    fleet
        .set_instance_protection("web", &old, true)
        .await
        .unwrap();
    fleet.set_desired_capacity("web", 4).await.unwrap();
    let group = fleet.describe_group("web").await.unwrap();
    assert_eq!(group.instances_in("InService").count(), 4);
    assert_eq!(fleet.images_in_group("web").get("ami-new"), Some(&2));

    // Protect the new ones, release the old ones, scale back in.
    let new: Vec<String> = ids(&group)
        .into_iter()
        .filter(|i| !old.contains(i))
        .collect();
    fleet
        .set_instance_protection("web", &new, true)
        .await
        .unwrap();
    fleet
        .set_instance_protection("web", &old, false)
        .await
        .unwrap();
    fleet.set_desired_capacity("web", 2).await.unwrap();
    assert_eq!(ids(&fleet.describe_group("web").await.unwrap()), new);
    let gone = fleet.describe_instances(&old).await.unwrap();
    assert!(gone.iter().all(|i| i.state == "terminated"));
}

#[tokio::test]
async fn terminate_decrements_refuses_to_break_min_and_is_idempotent() {
    let fleet = MemoryFleet::new();
    let v1 = fleet.add_template("web", "ami-1");
    fleet.add_group("web", &v1.template_id, 1, 1, 3, 2);
    let members = ids(&fleet.describe_group("web").await.unwrap());

    fleet.terminate_instance(&members[0], true).await.unwrap();
    fleet.terminate_instance(&members[0], true).await.unwrap();
    let group = fleet.describe_group("web").await.unwrap();
    assert_eq!((group.desired_capacity, group.instances.len()), (1, 1));

    let err = fleet
        .terminate_instance(&members[1], true)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ValidationError"));
    assert!(!err.is_retryable());

    // Without decrement the group replaces it.
    fleet.terminate_instance(&members[1], false).await.unwrap();
    let group = fleet.describe_group("web").await.unwrap();
    assert_eq!(group.instances.len(), 1);
    assert_ne!(group.instances[0].instance_id, members[1]);
    fleet.terminate_instance("i-unknown", true).await.unwrap();
}

#[tokio::test]
async fn pending_launches_size_limits_and_lost_instances() {
    let fleet = MemoryFleet::new();
    let v1 = fleet.add_template("web", "ami-1");
    fleet.add_group("web", &v1.template_id, 1, 1, 2, 1);
    fleet.hold_launches_pending(true);
    assert!(fleet.set_desired_capacity("web", 3).await.is_err());
    fleet.set_group_size("web", None, Some(3)).await.unwrap();
    fleet.set_desired_capacity("web", 3).await.unwrap();
    assert_eq!(
        fleet
            .describe_group("web")
            .await
            .unwrap()
            .instances_in("Pending")
            .count(),
        2
    );
    fleet.complete_launches();
    let group = fleet.describe_group("web").await.unwrap();
    assert_eq!(group.instances_in("InService").count(), 3);

    fleet.hold_launches_pending(false);
    fleet.lose_instance(&group.instances[0].instance_id);
    let after = fleet.describe_group("web").await.unwrap();
    assert_eq!(after.instances.len(), 3);
    assert!(!ids(&after).contains(&group.instances[0].instance_id));

    fleet.set_group_size("web", Some(1), Some(1)).await.unwrap();
    assert_eq!(
        fleet.describe_group("web").await.unwrap().desired_capacity,
        1
    );
}

#[tokio::test]
async fn errors_name_the_call_and_resource_and_faults_can_be_injected() {
    let fleet = MemoryFleet::new();
    let err = fleet.describe_group("nope").await.unwrap_err();
    assert!(err.is_not_found());
    assert_eq!(
        err.to_string(),
        "autoscaling:DescribeAutoScalingGroups: group nope does not exist"
    );
    let err = fleet
        .launch_template_version("lt-404", "$Default")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("lt-404"), "{err}");

    let v1 = fleet.add_template("web", "ami-1");
    fleet.add_group("web", &v1.template_id, 1, 0, 2, 1);
    fleet.fail_next("autoscaling:SetDesiredCapacity", 1);
    let err = fleet.set_desired_capacity("web", 2).await.unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(
        fleet.describe_group("web").await.unwrap().desired_capacity,
        1,
        "a fault changes nothing"
    );
    fleet.set_desired_capacity("web", 2).await.unwrap();

    fleet
        .suspend_processes("web", &["AZRebalance".to_owned()])
        .await
        .unwrap();
    assert_eq!(
        fleet
            .describe_group("web")
            .await
            .unwrap()
            .suspended_processes,
        ["AZRebalance"]
    );
    fleet
        .resume_processes("web", &["AZRebalance".to_owned()])
        .await
        .unwrap();
    assert!(
        fleet
            .describe_group("web")
            .await
            .unwrap()
            .suspended_processes
            .is_empty()
    );
    assert_eq!(
        fleet.calls(),
        [
            "autoscaling:SetDesiredCapacity group web (desired 2)",
            "autoscaling:SuspendProcesses group web processes AZRebalance",
            "autoscaling:ResumeProcesses group web processes AZRebalance",
        ]
    );
}

#[tokio::test]
async fn a_version_copies_terraforms_default_and_leaves_the_default_alone() {
    let fleet = MemoryFleet::new();
    let v1 = fleet.add_template("web", "ami-old");
    fleet.add_group("web", &v1.template_id, 1, 1, 2, 1);
    // Terraform changes the instance type: version 2, the new default,
    // launching whatever the latest version did.
    let v2 = fleet.terraform_apply(&v1.template_id, "web (terraform)", |d| {
        d.with_instance_type("t3.large")
    });
    assert_eq!(
        (v2.version_number, v2.image_id.as_deref()),
        (2, Some("ami-old"))
    );
    let base = fleet
        .launch_template_version(&v1.template_id, "$Default")
        .await
        .unwrap();
    assert_eq!(base, v2);

    let v3 = fleet
        .create_launch_template_version(&base, "ami-new", "web-7")
        .await
        .unwrap();
    assert_eq!(v3, 3);
    let read = fleet
        .launch_template_version(&v1.template_id, "3")
        .await
        .unwrap();
    assert_eq!(read.data, base.data.with_image("ami-new"));
    assert_eq!(read.data.instance_type(), Some("t3.large"));
    assert_eq!(
        read.description.as_deref(),
        Some("web (terraform)"),
        "the base's description, no description of rollgate's"
    );
    assert_eq!(
        fleet.default_version(&v1.template_id),
        2,
        "default untouched"
    );
    assert_eq!(
        fleet
            .create_launch_template_version(&base, "ami-new", "web-7")
            .await
            .unwrap(),
        3,
        "a replay of the rollout gets its version"
    );
}
