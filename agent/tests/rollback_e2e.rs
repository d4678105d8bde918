//! `rollgate rollback` end to end, every part a real process on loopback
//! (see `rollout_support`): a good release, then a rollback to the version
//! before it through the same plan, approval and gated surge rollout, under
//! load, with zero failed requests; the newer image is not planned again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rollout_support;

use std::time::Duration;

use rollgate::rollout::plan::{Change, Plan};
use rollgate::rollout::store::Store;
use rollout_support::{INSTANCES, World};
use sandbox::moto::seed::ImageSpec;
use sandbox::testkit::until;
use tokio::process::Command;

/// The CLI as an operator runs it: the operator role's token, AWS reachable
/// (rollback observes the group as the planner does).
async fn operator(w: &World, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rollgate"))
        .arg("--config")
        .arg(w.cli_config("operator"))
        .args(args)
        .env_clear()
        .env("USER", "ops-test")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn plans(w: &World) -> Vec<Plan> {
    Store::new(w.client(), "rollgate")
        .plans("web")
        .await
        .unwrap()
        .into_iter()
        .map(|(p, _)| p)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_returns_to_the_last_stable_version_with_zero_failed_requests() {
    let mut w = World::new().await;
    w.start_load().await;
    let c = w.coordinator(&w.config("a", "1m"));
    let v11 = w.publish(ImageSpec::new("acmeinc/web", "1.1.0")).await;
    let first = w.outcome(Duration::from_secs(180)).await;
    assert_eq!(
        first.outcome.as_ref().unwrap().word(),
        "succeeded",
        "{}",
        c.log()
    );

    // Nothing to go back to but 1.0.0, which ran before the first plan; a
    // version that never ran stable is refused, naming those that did.
    let (code, out) = operator(&w, &["rollback", "web", "--to", "0.1.0"]).await;
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("never ran stable") && out.contains("1.1.0, 1.0.0"),
        "{out}"
    );

    let (code, out) = operator(&w, &["rollback", "web", "--as", "alice"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("rollback to 1.0.0, asked by alice"), "{out}");
    let back = until(
        "the rollback's outcome",
        Duration::from_secs(180),
        || async {
            plans(&w)
                .await
                .pop()
                .filter(|p| p.id != first.id && p.outcome.is_some())
        },
    )
    .await;
    assert_eq!(
        back.outcome.as_ref().unwrap().word(),
        "succeeded",
        "{:?}\n{}",
        back.outcome,
        c.log()
    );
    assert!(
        matches!(&back.change, Change::Rollback { requested_by, override_failed: false } if requested_by == "alice"),
        "{:?}",
        back.change
    );
    assert_eq!(back.target.image_id, w.seeded.image_id);
    let (desired, _, images) = w.fleet_state().await;
    assert_eq!(desired, INSTANCES);
    assert!(
        images.iter().all(|(_, ami)| *ami == w.seeded.image_id),
        "all back on 1.0.0: {images:?}"
    );

    // A new leader plans from scratch at once: 1.1.0, newer but built before
    // the rollback, is not planned again.
    drop(c);
    let c2 = w.coordinator(&w.config("b", "1m"));
    until("b leads", Duration::from_secs(60), || async {
        c2.log().contains("Leadership acquired").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = plans(&w).await;
    assert_eq!(
        all.len(),
        2,
        "no plan for {v11} after the rollback: {all:?}"
    );

    let (code, history) = operator(&w, &["history", "web"]).await;
    assert_eq!(code, 0, "{history}");
    assert!(history.contains("rollback 1.1.0 -> 1.0.0"), "{history}");

    let report = w.shutdown().await.unwrap();
    assert_eq!(
        report.failed,
        0,
        "zero failed requests: {:?}",
        report.failures.first()
    );
    assert!(report.sent > 100, "{}", report.sent);
    drop(c2);
}
