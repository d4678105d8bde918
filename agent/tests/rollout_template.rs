//! A Terraform-only change rolled out end to end, every part a real process
//! on loopback (see `rollout_support`): Terraform writes a new default
//! launch template version (another instance type, the same image), the
//! coordinator's planner plans it as a template change (approved by
//! policy), and the rollout replaces every instance surge style, under
//! load, with zero failed requests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rollout_support;

use std::time::Duration;

use aws_sdk_ec2::types::{InstanceType, RequestLaunchTemplateData};
use rollgate::aws::Fleet as _;
use rollgate::aws::sdk::SdkFleet;
use rollgate::rollout::plan::{Change, Decision, Plan};
use rollgate::rollout::store::Store;
use rollout_support::{INSTANCES, World};
use sandbox::testkit::{LoggedChild, until};

/// What Terraform's apply writes: a new version with another instance type,
/// the image unchanged, made the default. Answers its number. (Not user
/// data: moto 5 answers 500 to any launch from a template version that has
/// some.)
async fn terraform_apply(w: &World) -> i64 {
    let ec2 = aws_sdk_ec2::Client::new(&w.moto.sdk_config());
    let created = ec2
        .create_launch_template_version()
        .launch_template_id(&w.seeded.template_id)
        .version_description("terraform")
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id(&w.seeded.image_id)
                .instance_type(InstanceType::T3Small)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let version = created
        .launch_template_version()
        .and_then(|v| v.version_number())
        .unwrap();
    ec2.modify_launch_template()
        .launch_template_id(&w.seeded.template_id)
        .default_version(version.to_string())
        .send()
        .await
        .unwrap();
    version
}

/// The plan once its rollout ended; on timeout, a failure with the
/// rollout's last state and the coordinator's log.
async fn outcome_or_log(w: &World, c: &LoggedChild, limit: Duration) -> Plan {
    let store = Store::new(w.client(), "rollgate");
    let end = std::time::Instant::now() + limit;
    loop {
        if let Ok(plans) = store.plans("web").await
            && let Some((p, _)) = plans.into_iter().find(|(p, _)| p.outcome.is_some())
        {
            return p;
        }
        if std::time::Instant::now() > end {
            let state = store.rollout("web").await.ok().flatten();
            panic!(
                "no outcome within {limit:?}; rollout: {state:#?}\n{}",
                c.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terraform_only_change_replaces_every_instance_with_zero_failed_requests() {
    let mut w = World::new().await;
    w.start_load().await;
    let default = terraform_apply(&w).await;
    assert_ne!(default, w.seeded.template_version);
    // Nobody publishes: the planner's registry poll finds the new default
    // version and plans a template change, approved by policy.
    let cfg = w.config("a", "1m");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("registry_poll = \"1h\"", "registry_poll = \"1s\""),
    )
    .unwrap();
    let c = w.coordinator(&cfg);

    let plan = outcome_or_log(&w, &c, Duration::from_secs(240)).await;
    assert_eq!(
        plan.change,
        Change::Template {
            from_version: w.seeded.template_version,
            to_version: default,
        },
        "{plan:?}"
    );
    assert_eq!(plan.target.image_id, w.seeded.image_id, "the image stays");
    assert!(
        matches!(&plan.decision, Decision::Approved { by, .. } if by == "policy:auto"),
        "{:?}",
        plan.decision
    );
    let outcome = plan.outcome.clone().unwrap();
    assert_eq!(outcome.word(), "succeeded", "{outcome:?}\n{}", c.log());

    let (desired, version, images) = until("settled", Duration::from_secs(30), || async {
        let state = w.fleet_state().await;
        (state.2.len() == INSTANCES as usize).then_some(state)
    })
    .await;
    assert_eq!(desired, INSTANCES, "desired capacity back to {INSTANCES}");
    assert!(
        images.iter().all(|(_, ami)| *ami == w.seeded.image_id),
        "the image did not change: {images:?}"
    );
    assert!(
        images
            .iter()
            .all(|(id, _)| !w.seeded.instance_ids.contains(id)),
        "every instance replaced, though all ran the target image: {images:?} (initial {:?})",
        w.seeded.instance_ids
    );
    // The group pins the rollout's copy of Terraform's version: a new
    // explicit number carrying Terraform's settings and the same image.
    let version: i64 = version.parse().expect("an explicit version number");
    assert!(
        version > default,
        "a new copy, not {default} itself: {version}"
    );
    let fleet = SdkFleet::new(&w.moto.sdk_config());
    let copy = fleet
        .launch_template_version(&w.seeded.template_id, &version.to_string())
        .await
        .unwrap();
    assert_eq!(copy.data.instance_type(), Some("t3.small"));
    assert_eq!(copy.image_id.as_deref(), Some(w.seeded.image_id.as_str()));
    // The stable version is the copy now; the image was not marked failed.
    let store = Store::new(w.client(), "rollgate");
    let stable = store.stable("web").await.unwrap().unwrap();
    assert_eq!(stable.template_version, version);
    assert_eq!(stable.image, w.seeded.image_id);
    assert!(store.failed_images("web").await.unwrap().is_empty());

    // The notices say what changed: the template version, not "1.0.0 ->
    // 1.0.0".
    let to = format!("(launch template v{default})");
    until(
        "a notice naming the template",
        Duration::from_secs(30),
        || async {
            w.slack
                .posts()
                .iter()
                .any(|p| p.text.contains(&to))
                .then_some(())
        },
    )
    .await;

    let report = w.shutdown().await.unwrap();
    assert_eq!(
        report.failed,
        0,
        "zero failed requests: {:?}",
        report.failures.first()
    );
    assert!(report.sent > 100, "{}", report.sent);
    assert!(
        report.min_targets_seen >= INSTANCES as usize,
        "passing instances never below {INSTANCES}: {}",
        report.min_targets_seen
    );
    drop(c);
}
