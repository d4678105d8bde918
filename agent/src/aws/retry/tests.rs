#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::aws::memory::MemoryFleet;

fn policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(4),
    }
}

fn world() -> (Retrying<MemoryFleet>, String) {
    let fleet = MemoryFleet::new();
    let v1 = fleet.add_template("web", "ami-1");
    fleet.add_group("web", &v1.template_id, 1, 0, 5, 1);
    (Retrying::new(fleet, policy(4)), v1.template_id)
}

#[test]
fn delays_grow_exponentially_with_jitter_up_to_the_cap() {
    let p = policy(10);
    for _ in 0..50 {
        let d1 = p.delay(1);
        assert!(
            d1 >= Duration::from_millis(500) && d1 <= Duration::from_secs(1),
            "{d1:?}"
        );
        let d2 = p.delay(2);
        assert!(
            d2 >= Duration::from_secs(1) && d2 <= Duration::from_secs(2),
            "{d2:?}"
        );
        let d9 = p.delay(9);
        assert!(
            d9 >= Duration::from_secs(2) && d9 <= Duration::from_secs(4),
            "{d9:?}"
        );
    }
    assert!(p.delay(u32::MAX) <= Duration::from_secs(4), "no overflow");
}

#[tokio::test(start_paused = true)]
async fn retries_retryable_failures_until_they_pass() {
    let (fleet, _) = world();
    fleet.inner().fail_next("autoscaling:SetDesiredCapacity", 3);
    let start = Instant::now();
    fleet.set_desired_capacity("web", 3).await.unwrap();
    let waited = start.elapsed();
    // Three delays: [0.5,1] + [1,2] + [2,4] seconds of (paused) time.
    assert!(
        waited >= Duration::from_millis(3500) && waited <= Duration::from_secs(7),
        "{waited:?}"
    );
    assert_eq!(
        fleet.describe_group("web").await.unwrap().desired_capacity,
        3
    );
}

#[tokio::test(start_paused = true)]
async fn gives_up_after_max_attempts_with_the_last_error() {
    let (fleet, _) = world();
    fleet
        .inner()
        .fail_next("autoscaling:DescribeAutoScalingGroups", 4);
    let err = fleet.describe_group("web").await.unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(err.call(), "autoscaling:DescribeAutoScalingGroups");
    assert_eq!(err.resource(), "group web");
    // The fifth call is not failed by the fake: exactly four attempts were made.
    fleet.describe_group("web").await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn final_errors_are_returned_at_once() {
    let (fleet, _) = world();
    let start = Instant::now();
    let err = fleet.set_desired_capacity("web", 99).await.unwrap_err();
    assert!(!err.is_retryable());
    assert_eq!(start.elapsed(), Duration::ZERO);
    let err = fleet.describe_group("nope").await.unwrap_err();
    assert!(err.is_not_found());
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn every_method_goes_through_the_decorator() {
    let (fleet, template_id) = world();
    let base = fleet
        .launch_template_version(&template_id, "1")
        .await
        .unwrap();
    let v2 = fleet
        .create_launch_template_version(&base, "ami-2", "v2")
        .await
        .unwrap();
    fleet
        .set_group_launch_template("web", &template_id, v2)
        .await
        .unwrap();
    fleet.set_group_size("web", Some(1), Some(6)).await.unwrap();
    let group = fleet.describe_group("web").await.unwrap();
    let ids: Vec<String> = group
        .instances
        .iter()
        .map(|i| i.instance_id.clone())
        .collect();
    fleet
        .set_instance_protection("web", &ids, true)
        .await
        .unwrap();
    fleet
        .suspend_processes("web", &["Launch".to_owned()])
        .await
        .unwrap();
    fleet
        .resume_processes("web", &["Launch".to_owned()])
        .await
        .unwrap();
    assert_eq!(fleet.describe_instances(&ids).await.unwrap().len(), 1);
    fleet.terminate_instance(&ids[0], false).await.unwrap();
    assert_eq!(fleet.inner().calls().len(), 7);
}
