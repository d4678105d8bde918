//! `SdkFleet` against a real moto server (one per test: tests run in
//! parallel and moto's state is global to the server).

use std::collections::BTreeSet;

use aws_sdk_ec2::types::{
    LaunchTemplateHttpTokensState, LaunchTemplateInstanceMetadataOptionsRequest,
    LaunchTemplateTagSpecificationRequest, RequestLaunchTemplateData, ResourceType, Tag,
};
use rollgate::aws::sdk::SdkFleet;
use rollgate::aws::{Fleet, Group};
use sandbox::moto::seed::{self, ImageSpec, SeedSpec, Seeded};
use sandbox::moto::{Moto, REGION};

async fn world(instances: i32) -> (Moto, SdkFleet, Seeded) {
    let moto = Moto::start()
        .await
        .unwrap_or_else(|e| panic!("moto must start: {e}"));
    let spec = SeedSpec::new("web", ImageSpec::new("acmeinc/web", "1.0.0"), instances);
    let seeded = seed::seed_group(&moto, &spec).await.expect("seed");
    let fleet = SdkFleet::for_endpoint(moto.endpoint(), REGION);
    (moto, fleet, seeded)
}

async fn new_image(moto: &Moto, version: &str) -> String {
    seed::register_image(&moto.sdk_config(), &ImageSpec::new("acmeinc/web", version))
        .await
        .expect("register image")
}

fn ids(group: &Group) -> BTreeSet<String> {
    group
        .instances
        .iter()
        .map(|i| i.instance_id.clone())
        .collect()
}

async fn images_of(fleet: &SdkFleet, group: &Group) -> Vec<String> {
    let ids: Vec<String> = ids(group).into_iter().collect();
    let mut images: Vec<String> = fleet
        .describe_instances(&ids)
        .await
        .expect("describe instances")
        .into_iter()
        .map(|i| i.image_id)
        .collect();
    images.sort();
    images
}

#[tokio::test]
async fn describes_the_group_and_its_instances() {
    let (_moto, fleet, seeded) = world(2).await;
    let group = fleet.describe_group("web").await.expect("describe group");
    assert_eq!(
        (group.min_size, group.max_size, group.desired_capacity),
        (2, 4, 2)
    );
    let template = group.launch_template.as_ref().expect("a launch template");
    assert_eq!(
        (template.id.as_str(), template.version.as_str()),
        (seeded.template_id.as_str(), "1")
    );
    assert_eq!(template.name, "web-lt");
    assert_eq!(ids(&group), seeded.instance_ids.iter().cloned().collect());
    assert!(
        group
            .instances
            .iter()
            .all(|i| i.lifecycle_state == "InService" && !i.protected_from_scale_in)
    );

    let mut asked = seeded.instance_ids.clone();
    asked.push("i-0000000000000dead".to_owned());
    let instances = fleet
        .describe_instances(&asked)
        .await
        .expect("describe instances");
    assert_eq!(instances.len(), 2, "unknown ids are left out");
    for i in &instances {
        assert_eq!(i.image_id, seeded.image_id);
        assert_eq!(i.state, "running");
        assert!(i.private_ip.is_some() && i.launch_time.is_some(), "{i:?}");
    }
    assert!(
        fleet
            .describe_instances(&[])
            .await
            .expect("no call")
            .is_empty()
    );
}

#[tokio::test]
async fn a_new_template_version_carries_the_full_data_and_the_new_image() {
    let (moto, fleet, _) = world(1).await;
    // A richer template than the seed's, made directly through the SDK.
    let data = RequestLaunchTemplateData::builder()
        .image_id(new_image(&moto, "0.9.0").await)
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Small)
        .key_name("ops")
        .user_data("IyEvYmluL3NoCmVjaG8gaGVsbG8K")
        .security_group_ids("sg-0123456789abcdef0")
        .metadata_options(
            LaunchTemplateInstanceMetadataOptionsRequest::builder()
                .http_tokens(LaunchTemplateHttpTokensState::Required)
                .http_put_response_hop_limit(1)
                .build(),
        )
        .tag_specifications(
            LaunchTemplateTagSpecificationRequest::builder()
                .resource_type(ResourceType::Instance)
                .tags(Tag::builder().key("Service").value("web").build())
                .build(),
        )
        .build();
    let ec2 = aws_sdk_ec2::Client::new(&moto.sdk_config());
    let created = ec2
        .create_launch_template()
        .launch_template_name("rich")
        .version_description("web nodes (terraform)")
        .launch_template_data(data)
        .send()
        .await
        .expect("create template");
    let template_id = created
        .launch_template()
        .and_then(|t| t.launch_template_id())
        .expect("template id")
        .to_owned();

    let base = fleet
        .launch_template_version(&template_id, "$Default")
        .await
        .expect("read base");
    assert_eq!(
        (base.version_number, base.data.instance_type()),
        (1, Some("t3.small"))
    );
    assert_eq!(base.data.user_data(), Some("IyEvYmluL3NoCmVjaG8gaGVsbG8K"));
    let image = new_image(&moto, "1.0.0").await;
    let v2 = fleet
        .create_launch_template_version(&base, &image, "web-1")
        .await
        .expect("create version");
    assert_eq!(v2, 2);
    let read = fleet
        .launch_template_version(&template_id, "2")
        .await
        .expect("read v2");
    assert_eq!(read.image_id.as_deref(), Some(image.as_str()));
    assert_eq!(
        read.description.as_deref(),
        Some("web nodes (terraform)"),
        "the base's description: none of rollgate's for Terraform to undo"
    );
    assert_eq!(
        read.data,
        base.data.with_image(&image),
        "everything but the image is the base's"
    );

    let again = fleet
        .create_launch_template_version(&base, &image, "web-1")
        .await
        .expect("replay");
    assert_eq!(
        again, 2,
        "a replay finds the version instead of creating another"
    );
    let latest = fleet
        .launch_template_version(&template_id, "$Latest")
        .await
        .expect("latest");
    assert_eq!(latest.version_number, 2);
}

#[tokio::test]
async fn a_rollout_copies_the_default_version_terraform_wrote_and_leaves_it_default() {
    let (moto, fleet, seeded) = world(1).await;
    let ec2 = aws_sdk_ec2::Client::new(&moto.sdk_config());
    // `terraform apply` after a change of the instance type: a new version
    // from the latest one (`update_default_version = true`), made default.
    // The group stays pinned to version 1 until a rollout.
    let v1 = fleet
        .launch_template_version(&seeded.template_id, "1")
        .await
        .expect("v1");
    ec2.create_launch_template_version()
        .launch_template_id(&seeded.template_id)
        .source_version("1")
        .version_description("web nodes (terraform)")
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .set_image_id(v1.image_id.clone())
                .instance_type(aws_sdk_ec2::types::InstanceType::T3Large)
                .build(),
        )
        .send()
        .await
        .expect("terraform's version");
    ec2.modify_launch_template()
        .launch_template_id(&seeded.template_id)
        .default_version("2")
        .send()
        .await
        .expect("terraform makes it default");

    let base = fleet
        .launch_template_version(&seeded.template_id, "$Default")
        .await
        .expect("the default version");
    assert_eq!(base.version_number, 2);
    let image = new_image(&moto, "2.0.0").await;
    let v3 = fleet
        .create_launch_template_version(&base, &image, "web-9")
        .await
        .expect("the rollout's version");
    assert_eq!(v3, 3);
    let read = fleet
        .launch_template_version(&seeded.template_id, "3")
        .await
        .expect("v3");
    assert_eq!(read.image_id.as_deref(), Some(image.as_str()));
    assert_eq!(
        read.data.instance_type(),
        Some("t3.large"),
        "Terraform's field"
    );
    assert_eq!(read.data, base.data.with_image(&image));
    assert_eq!(read.description, base.description);
    let default = fleet
        .launch_template_version(&seeded.template_id, "$Default")
        .await
        .expect("default");
    assert_eq!(
        default.version_number, 2,
        "rollgate never moves the default"
    );
    assert_eq!(
        fleet
            .create_launch_template_version(&base, &image, "web-9")
            .await
            .expect("replay"),
        3,
        "a replay of the rollout gets its version"
    );
}

#[tokio::test]
async fn pinning_a_version_and_surging_launches_the_new_image() {
    let (moto, fleet, seeded) = world(2).await;
    let base = fleet
        .launch_template_version(&seeded.template_id, "1")
        .await
        .expect("base");
    let image = new_image(&moto, "2.0.0").await;
    let v2 = fleet
        .create_launch_template_version(&base, &image, "web-2")
        .await
        .expect("v2");
    fleet
        .set_group_launch_template("web", &seeded.template_id, v2)
        .await
        .expect("pin v2");
    let old: Vec<String> = seeded.instance_ids.clone();
    fleet
        .set_instance_protection("web", &old, true)
        .await
        .expect("protect old");
    fleet.set_desired_capacity("web", 4).await.expect("surge");

    let group = fleet.describe_group("web").await.expect("describe");
    assert_eq!(
        group.launch_template.as_ref().map(|t| t.version.as_str()),
        Some("2")
    );
    assert_eq!(group.instances.len(), 4);
    let expected = vec![
        image.clone(),
        image.clone(),
        seeded.image_id.clone(),
        seeded.image_id.clone(),
    ];
    let mut expected_sorted = expected;
    expected_sorted.sort();
    assert_eq!(images_of(&fleet, &group).await, expected_sorted);

    // Swap protection and scale back in: the old, unprotected ones go.
    let new: Vec<String> = ids(&group)
        .into_iter()
        .filter(|i| !old.contains(i))
        .collect();
    fleet
        .set_instance_protection("web", &new, true)
        .await
        .expect("protect new");
    fleet
        .set_instance_protection("web", &old, false)
        .await
        .expect("release old");
    fleet
        .set_desired_capacity("web", 2)
        .await
        .expect("scale in");
    let group = fleet.describe_group("web").await.expect("describe");
    assert_eq!(ids(&group), new.iter().cloned().collect());
    assert_eq!(images_of(&fleet, &group).await, [image.clone(), image]);
    let gone = fleet.describe_instances(&old).await.expect("old instances");
    assert!(
        gone.iter()
            .all(|i| matches!(i.state.as_str(), "shutting-down" | "terminated")),
        "{gone:?}"
    );
}

#[tokio::test]
async fn terminate_decrements_and_is_idempotent() {
    let (_moto, fleet, seeded) = world(2).await;
    fleet
        .set_group_size("web", Some(0), None)
        .await
        .expect("lower min");
    let victim = seeded.instance_ids[0].clone();
    fleet
        .terminate_instance(&victim, true)
        .await
        .expect("terminate");
    let group = fleet.describe_group("web").await.expect("describe");
    assert_eq!(group.desired_capacity, 1);
    assert!(!ids(&group).contains(&victim) || group.instances_in("Terminating").count() == 1);

    fleet
        .terminate_instance(&victim, true)
        .await
        .expect("replay is Ok");
    fleet
        .terminate_instance("i-0123456789abcdef0", true)
        .await
        .expect("unknown is Ok");
    let group = fleet.describe_group("web").await.expect("describe");
    assert_eq!(
        group.desired_capacity, 1,
        "a replay does not decrement twice"
    );
    let min_max = (group.min_size, group.max_size);
    assert_eq!(min_max, (0, 4));
}

#[tokio::test]
async fn suspends_and_resumes_processes() {
    let (_moto, fleet, _) = world(1).await;
    let processes = vec!["AZRebalance".to_owned(), "ReplaceUnhealthy".to_owned()];
    fleet
        .suspend_processes("web", &processes)
        .await
        .expect("suspend");
    fleet
        .suspend_processes("web", &processes)
        .await
        .expect("suspend again");
    let mut suspended = fleet
        .describe_group("web")
        .await
        .expect("describe")
        .suspended_processes;
    suspended.sort();
    assert_eq!(suspended, processes);
    fleet
        .resume_processes("web", &processes)
        .await
        .expect("resume");
    fleet
        .resume_processes("web", &[])
        .await
        .expect("empty is a no-op");
    assert!(
        fleet
            .describe_group("web")
            .await
            .expect("describe")
            .suspended_processes
            .is_empty()
    );
}

#[tokio::test]
async fn errors_name_the_call_and_the_resource() {
    let (_moto, fleet, seeded) = world(1).await;
    let err = fleet
        .describe_group("nope")
        .await
        .expect_err("missing group");
    assert!(err.is_not_found() && !err.is_retryable(), "{err:?}");
    assert_eq!(
        err.to_string(),
        "autoscaling:DescribeAutoScalingGroups: group nope does not exist"
    );

    let err = fleet
        .launch_template_version("lt-0123456789abcdef0", "1")
        .await
        .expect_err("missing template");
    let text = err.to_string();
    assert!(
        text.starts_with("ec2:DescribeLaunchTemplateVersions")
            && text.contains("lt-0123456789abcdef0"),
        "{text}"
    );
    assert!(!err.is_retryable(), "{err:?}");

    let err = fleet
        .launch_template_version(&seeded.template_id, "42")
        .await
        .expect_err("missing version");
    assert!(err.to_string().contains("version 42"), "{err}");

    let err = fleet
        .set_desired_capacity("nope", 1)
        .await
        .expect_err("missing group");
    let text = err.to_string();
    assert!(
        text.contains("autoscaling:SetDesiredCapacity") && text.contains("group nope"),
        "{text}"
    );

    let err = fleet
        .set_group_launch_template("nope", &seeded.template_id, 1)
        .await
        .expect_err("missing group");
    let text = err.to_string();
    assert!(
        text.contains("autoscaling:UpdateAutoScalingGroup") && text.contains("group nope"),
        "{text}"
    );
    // (moto accepts a desired capacity above the maximum; AWS refuses it with
    // a ValidationError, which is not retryable. Not asserted here.)
}

#[tokio::test]
async fn describes_several_groups_in_one_call_leaving_out_those_that_do_not_exist() {
    let (moto, fleet, _) = world(2).await;
    let spec = SeedSpec::new("api", ImageSpec::new("acmeinc/api", "1.0.0"), 3);
    seed::seed_group(&moto, &spec).await.expect("seed api");
    let names = ["web", "no-such-group", "api"].map(str::to_owned);
    let mut groups = fleet
        .describe_groups(&names)
        .await
        .expect("describe groups");
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    let found: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(found, ["api", "web"]);
    // The same as asking for each alone.
    for g in &groups {
        assert_eq!(
            *g,
            fleet.describe_group(&g.name).await.expect("describe group")
        );
    }
    assert_eq!(groups[0].instances.len(), 3);
    assert_eq!(groups[1].instances.len(), 2);
}
