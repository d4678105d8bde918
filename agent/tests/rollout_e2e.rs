//! Whole rollouts, every part a real process on loopback (see
//! `rollout_support`): a good image, a broken one, the leader killed, and
//! operators steering.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rollout_support;

use std::time::Duration;

use rollgate::consul::QueryOptions;
use rollgate::rollout::store::Store;
use rollout_support::{Endpoints, INSTANCES, World, rollgate_cli};
use sandbox::moto::seed::ImageSpec;
use sandbox::testkit::until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_image_replaces_every_instance_with_zero_failed_requests() {
    let mut w = World::new().await;
    w.start_load().await;
    let c = w.coordinator(&w.config("a", "1m"));
    let image = w.publish(ImageSpec::new("acmeinc/web", "1.1.0")).await;
    let plan = w.outcome(Duration::from_secs(180)).await;
    let outcome = plan.outcome.clone().unwrap();
    assert_eq!(outcome.word(), "succeeded", "{outcome:?}\n{}", c.log());

    let (desired, version, images) = w.fleet_state().await;
    assert_eq!(desired, INSTANCES, "desired capacity back to {INSTANCES}");
    assert_eq!(images.len(), INSTANCES as usize, "{images:?}");
    assert!(
        images.iter().all(|(_, ami)| *ami == image),
        "all on the new image: {images:?}"
    );
    assert_ne!(
        version,
        w.seeded.template_version.to_string(),
        "a new explicit template version"
    );
    assert!(
        version.parse::<i64>().is_ok(),
        "an explicit version, never $Latest: {version}"
    );
    let slack = w.slack.posts();
    assert!(slack.iter().any(|p| p.text.contains("1.1.0")), "{slack:?}");

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_image_fails_in_the_first_batch_and_is_reverted() {
    // Consul's own timings: an output-only check change reaches the
    // catalog only after check_update_interval (minutes), so the failure
    // reason can quote the probe's output ("answered 500") only because the
    // agent registers its checks as warning and the first bad answer is a
    // change of status, synced at once.
    let mut w = World::new().await;
    w.start_load().await;
    // Failing fast off: this story is healthy_deadline's (rollout_failfast.rs
    // tells the failure_time one).
    let c =
        w.coordinator(&w.config_with("a", &Endpoints::direct(&w), "8s", "failure_time = \"0s\"\n"));
    let image = w
        .publish(ImageSpec::new("acmeinc/web", "1.2.0").tag("sandbox:broken", "true"))
        .await;
    let plan = w.outcome(Duration::from_secs(180)).await;
    let outcome = plan.outcome.clone().unwrap();
    assert_eq!(outcome.word(), "reverted", "{outcome:?}\n{}", c.log());
    // The reason names the instance, the check, its status and output, and
    // the deadline.
    for needle in ["i-", "healthy_deadline", "critical", "500"] {
        assert!(
            outcome.reason().contains(needle),
            "{needle} missing from: {}",
            outcome.reason()
        );
    }
    let (desired, version, images) = until(
        "the old fleet restored",
        Duration::from_secs(60),
        || async {
            let state = w.fleet_state().await;
            (state.2.len() == INSTANCES as usize).then_some(state)
        },
    )
    .await;
    assert_eq!(desired, INSTANCES);
    assert_eq!(
        version,
        w.seeded.template_version.to_string(),
        "back on the stable version"
    );
    assert!(
        images.iter().all(|(_, ami)| *ami == w.seeded.image_id),
        "{images:?} (broken: {image})"
    );
    // The notification carries the reason.
    let posts = w.slack.wait_for(2, Duration::from_secs(30)).await;
    assert!(
        posts.iter().any(|p| p.text.contains("healthy_deadline")
            || p.blocks.to_string().contains("healthy_deadline")),
        "{posts:?}"
    );
    let report = w.shutdown().await.unwrap();
    assert_eq!(
        report.failed,
        0,
        "zero failed requests: {:?}",
        report.failures.first()
    );
    assert!(
        report.min_targets_seen >= INSTANCES as usize,
        "{}",
        report.min_targets_seen
    );
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_mid_batch_is_replaced_and_every_instance_is_accounted_for() {
    let w = World::new().await;
    let mut a = w.coordinator(&w.config("a", "2m"));
    let client = w.client();
    until("a leads", Duration::from_secs(20), || async {
        let kv = client
            .kv_get("rollgate/leader", &QueryOptions::default())
            .await
            .ok()?
            .value?;
        kv.session.map(|_| ())
    })
    .await;
    let b = w.coordinator(&w.config("b", "2m"));
    let image = w.publish(ImageSpec::new("acmeinc/web", "1.3.0")).await;
    // Kill the leader while it waits on the first batch.
    let store = Store::new(w.client(), "rollgate");
    until(
        "the first batch launching",
        Duration::from_secs(60),
        || async {
            let (r, _) = store.rollout("web").await.ok()??;
            (r.state.name() == "launching").then_some(())
        },
    )
    .await;
    a.child.start_kill().unwrap();
    let _ = a.child.wait().await;
    let plan = w.outcome(Duration::from_secs(240)).await;
    let outcome = plan.outcome.clone().unwrap();
    assert_eq!(outcome.word(), "succeeded", "{outcome:?}\n{}", b.log());
    assert!(b.log().contains("Leadership acquired"), "{}", b.log());
    let (desired, _, images) = until("settled", Duration::from_secs(30), || async {
        let state = w.fleet_state().await;
        (state.2.len() == INSTANCES as usize).then_some(state)
    })
    .await;
    assert_eq!(desired, INSTANCES);
    assert!(
        images.iter().all(|(_, ami)| *ami == image),
        "no leaked or old instance: {images:?}"
    );
    drop(b);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_pause_resume_and_abort_a_rollout() {
    let w = World::new().await;
    let c = w.coordinator(&w.config("a", "2m"));
    // No rollout yet: every command is a clear refusal (exit 4).
    for cmd in ["pause", "resume", "abort", "promote"] {
        let (code, out) = rollgate_cli(&w, &[cmd]).await;
        assert_eq!(code, 4, "{cmd}: {out}");
        assert!(
            out.contains("no rollout in progress for web"),
            "{cmd}: {out}"
        );
    }
    w.publish(ImageSpec::new("acmeinc/web", "1.4.0")).await;
    let store = Store::new(w.client(), "rollgate");
    until("the rollout running", Duration::from_secs(60), || async {
        let (r, _) = store.rollout("web").await.ok()??;
        (r.state.name() == "launching").then_some(())
    })
    .await;

    let (code, out) = rollgate_cli(&w, &["pause"]).await;
    assert_eq!(code, 0, "{out}");
    let at_pause = until("paused", Duration::from_secs(20), || async {
        let (r, _) = store.rollout("web").await.ok()??;
        (r.state.name() == "paused").then_some(r.progress)
    })
    .await;
    let (code, out) = rollgate_cli(&w, &["status"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("paused"), "{out}");
    // Paused means frozen: nothing advances while it is.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (r, _) = store.rollout("web").await.unwrap().unwrap();
    assert_eq!(r.state.name(), "paused");
    assert_eq!(r.progress, at_pause, "nothing advanced while paused");

    let (code, out) = rollgate_cli(&w, &["resume"]).await;
    assert_eq!(code, 0, "{out}");
    until("resumed", Duration::from_secs(20), || async {
        let (r, _) = store.rollout("web").await.ok()??;
        (r.state.name() != "paused").then_some(())
    })
    .await;

    let (code, out) = rollgate_cli(&w, &["abort", "--reason", "wrong build"]).await;
    assert_eq!(code, 0, "{out}");
    let plan = w.outcome(Duration::from_secs(120)).await;
    let outcome = plan.outcome.unwrap();
    assert_eq!(outcome.word(), "aborted", "{outcome:?}\n{}", c.log());
    let (code, out) = rollgate_cli(&w, &["status", "--wait"]).await;
    assert_eq!(code, 1, "status --wait exits 1 after an abort: {out}");
    let (_, _, images) = until("the old fleet back", Duration::from_secs(60), || async {
        let state = w.fleet_state().await;
        (state.2.len() == INSTANCES as usize).then_some(state)
    })
    .await;
    assert!(
        images.iter().all(|(_, ami)| *ami == w.seeded.image_id),
        "{images:?}"
    );
    // An abort is an operator's decision, not evidence: the image is not
    // marked failed.
    assert!(store.failed_images("web").await.unwrap().is_empty());
    drop(c);
    w.shutdown().await;
}
