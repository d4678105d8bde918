//! Rollouts through bad weather, every part a real process on loopback (see
//! `rollout_support`): AWS throttling and failing calls mid-rollout, Consul
//! unreachable from the coordinator for a minute mid-batch (faults injected
//! by `sandbox::proxy` between the coordinator and one server only), the
//! leader stalled (SIGSTOP) mid-batch until its liveness check hands the
//! lock to the other replica, and a canary held until an operator promotes
//! it. (The leader killed with SIGKILL is in `rollout_e2e`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rollout_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rollgate::consul::QueryOptions;
use rollgate::rollout::store::Store;
use rollout_support::{Endpoints, INSTANCES, World, rollgate_cli};
use sandbox::moto::seed::ImageSpec;
use sandbox::proxy::{FaultProxy, Mode};
use sandbox::testkit::until;

/// Waits until the rollout's first batch has launched and its new instances
/// are known to the rollout (their healthy deadlines running).
async fn first_batch_known(store: &Store) {
    until(
        "the first batch's new instances known",
        Duration::from_secs(90),
        || async {
            let (r, _) = store.rollout("web").await.ok()??;
            match &r.state {
                rollgate::rollout::machine::State::Launching(b) if !b.new.is_empty() => Some(()),
                _ => None,
            }
        },
    )
    .await;
}

/// Holds `mode` on `proxy` for `d`, checking twice a second that the
/// rollout's record stays in KV (read directly, not through the proxy).
async fn hold(proxy: &FaultProxy, mode: Mode, d: Duration, store: &Store) {
    proxy.set(mode.clone());
    let end = Instant::now() + d;
    while Instant::now() < end {
        let record = store.rollout("web").await.unwrap();
        assert!(
            record.is_some(),
            "the rollout record vanished during {mode:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    proxy.set(Mode::Forward);
}

/// Every instance on `image`, desired capacity back to where it was.
async fn assert_rolled_to(w: &World, image: &str) {
    let (desired, _, images) = until("the group settled", Duration::from_secs(60), || async {
        let state = w.fleet_state().await;
        (state.2.len() == INSTANCES as usize).then_some(state)
    })
    .await;
    assert_eq!(desired, INSTANCES);
    assert!(
        images.iter().all(|(_, ami)| ami == image),
        "no leaked or old instance: {images:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_throttling_and_errors_mid_rollout_delay_it_without_harm() {
    let mut w = World::new().await;
    w.start_load().await;
    let aws = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], w.moto.port())))
        .await
        .unwrap();
    let via = Endpoints {
        aws: aws.url(),
        ..Endpoints::direct(&w)
    };
    let c = w.coordinator(&w.config_with("a", &via, "1m", ""));
    let image = w
        .publish(ImageSpec::new("acmeinc/web", "1.1.0").tag("sandbox:boot-delay", "3s"))
        .await;
    let store = Store::new(w.client(), "rollgate");
    first_batch_known(&store).await;
    // Every AWS call throttled for 10 s, then failing with 500 for 10 s.
    hold(&aws, Mode::AwsThrottle, Duration::from_secs(10), &store).await;
    let throttled = aws.faulted();
    hold(
        &aws,
        Mode::Respond {
            status: 500,
            body: "<html><body>Internal Server Error</body></html>".into(),
        },
        Duration::from_secs(10),
        &store,
    )
    .await;
    assert!(throttled > 0, "the coordinator never met the throttling");
    assert!(
        aws.faulted() > throttled,
        "the coordinator never met the 500s"
    );

    let plan = w.outcome(Duration::from_secs(180)).await;
    let outcome = plan.outcome.clone().unwrap();
    assert_eq!(outcome.word(), "succeeded", "{outcome:?}\n{}", c.log());
    assert_rolled_to(&w, &image).await;
    // The operator can tell what happened from the log.
    let log = c.log();
    assert!(
        log.contains("Throttling") || log.contains("RequestLimitExceeded"),
        "the throttling is named in the log:\n{log}"
    );
    let report = w.shutdown().await.unwrap();
    assert_eq!(report.failed, 0, "{:?}", report.failures.first());
    assert!(report.min_targets_seen >= INSTANCES as usize);
    drop(c);
    aws.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_unreachable_for_a_minute_mid_batch_does_not_fail_the_batch() {
    let mut w = World::new().await;
    w.start_load().await;
    let consul = FaultProxy::start(w.consul.http_addr()).await.unwrap();
    let via = Endpoints {
        consul: consul.url(),
        ..Endpoints::direct(&w)
    };
    // A healthy deadline far shorter than the outage: counting the minute
    // nobody could observe would fail the batch.
    let c = w.coordinator(&w.config_with("a", &via, "30s", ""));
    let image = w
        .publish(ImageSpec::new("acmeinc/web", "1.2.0").tag("sandbox:boot-delay", "5s"))
        .await;
    let store = Store::new(w.client(), "rollgate");
    first_batch_known(&store).await;
    hold(&consul, Mode::Refuse, Duration::from_secs(60), &store).await;
    assert!(consul.faulted() > 0, "the coordinator never met the outage");

    let plan = w.outcome(Duration::from_secs(240)).await;
    let outcome = plan.outcome.clone().unwrap();
    assert_eq!(outcome.word(), "succeeded", "{outcome:?}\n{}", c.log());
    assert_rolled_to(&w, &image).await;
    let log = c.log();
    assert!(
        log.contains("Nobody observed this rollout"),
        "the deadline shift is logged:\n{log}"
    );
    let report = w.shutdown().await.unwrap();
    assert_eq!(report.failed, 0, "{:?}", report.failures.first());
    assert!(report.min_targets_seen >= INSTANCES as usize);
    drop(c);
    consul.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_waits_for_promote_then_the_rollout_completes() {
    let w = World::new().await;
    let c = w.coordinator(&w.config_with("a", &Endpoints::direct(&w), "1m", "canary = 1\n"));
    let image = w.publish(ImageSpec::new("acmeinc/web", "1.4.0")).await;
    let store = Store::new(w.client(), "rollgate");
    until("the canary waiting", Duration::from_secs(90), || async {
        let (r, _) = store.rollout("web").await.ok()??;
        (r.state.name() == "canary_paused").then_some(())
    })
    .await;
    // Waiting for a person: nothing moves, the canary serves beside every
    // old instance.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (r, _) = store.rollout("web").await.unwrap().unwrap();
    assert_eq!(r.state.name(), "canary_paused");
    let (desired, _, images) = w.fleet_state().await;
    assert_eq!(desired, INSTANCES + 1, "the canary is a surge");
    let on_new = images.iter().filter(|(_, ami)| *ami == image).count();
    assert_eq!(on_new, 1, "{images:?}");
    let (code, out) = rollgate_cli(&w, &["status"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("rollgate promote web"),
        "status says how to go on: {out}"
    );

    let (code, out) = rollgate_cli(&w, &["promote"]).await;
    assert_eq!(code, 0, "{out}");
    let plan = w.outcome(Duration::from_secs(180)).await;
    let outcome = plan.outcome.clone().unwrap();
    assert_eq!(outcome.word(), "succeeded", "{outcome:?}\n{}", c.log());
    assert_rolled_to(&w, &image).await;
    // Both steps reached the ops channel.
    let posts = w.slack.wait_for(4, Duration::from_secs(30)).await;
    let text: Vec<String> = posts
        .iter()
        .map(|p| format!("{} {}", p.text, p.blocks))
        .collect();
    for title in ["CANARY WAITING FOR PROMOTION", "CANARY PROMOTED"] {
        assert!(
            text.iter().any(|t| t.contains(title)),
            "{title} missing: {text:#?}"
        );
    }
    drop(c);
    w.shutdown().await;
}

/// Sends `signal` (`STOP`, `CONT`) to a process, as an operator's `kill`.
fn signal(child: &tokio::process::Child, signal: &str) {
    let pid = child.id().expect("the process runs").to_string();
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// The session holding the leader lock, if any.
async fn lock_session(client: &rollgate::consul::Client) -> Option<String> {
    client
        .kv_get("rollgate/leader", &QueryOptions::default())
        .await
        .ok()?
        .value?
        .session
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_leader_loses_the_lock_through_its_liveness_check_and_stops_acting() {
    let w = World::new().await;
    let a = w.coordinator(&w.config("a", "2m"));
    let client = w.client();
    let stalled = until("a leads", Duration::from_secs(20), || lock_session(&client)).await;
    let b = w.coordinator(&w.config("b", "2m"));
    let image = w
        .publish(ImageSpec::new("acmeinc/web", "1.5.0").tag("sandbox:boot-delay", "3s"))
        .await;
    let store = Store::new(w.client(), "rollgate");
    first_batch_known(&store).await;
    assert_eq!(
        lock_session(&client).await.as_deref(),
        Some(stalled.as_str()),
        "a still leads:\n{}",
        b.log()
    );

    // The leader stops being scheduled, as in a process stalled on a
    // machine under pressure: it neither refreshes its check nor renews its
    // session. Its check goes critical when its TTL runs out, which ends
    // its session (the session's own TTL would take far longer).
    signal(&a.child, "STOP");
    let taken = until("b takes the lock", Duration::from_secs(60), || async {
        lock_session(&client).await.filter(|s| *s != stalled)
    })
    .await;
    let info = client
        .session_info(&taken, &QueryOptions::default())
        .await
        .unwrap()
        .value
        .expect("the new leader's session exists");
    let checks: Vec<String> = info
        .service_checks
        .iter()
        .flatten()
        .map(|c| c.id.clone())
        .collect();
    assert_eq!(
        checks,
        ["rollgate-coordinator-b:alive"],
        "the new leader's session depends on its own liveness check: {info:?}"
    );
    let gone = client
        .session_info(&stalled, &QueryOptions::default())
        .await
        .unwrap()
        .value;
    assert!(
        gone.is_none(),
        "the stalled leader's session is gone: {gone:?}"
    );

    // The stalled process resumes: it learns it lost the lock and stops
    // acting (its writes would be refused by the fence anyway).
    signal(&a.child, "CONT");
    until(
        "a knows it lost the lock",
        Duration::from_secs(30),
        || async { a.log().contains("Leadership lost").then_some(()) },
    )
    .await;

    let plan = w.outcome(Duration::from_secs(240)).await;
    let outcome = plan.outcome.clone().unwrap();
    assert_eq!(
        outcome.word(),
        "succeeded",
        "{outcome:?}\n--- a ---\n{}\n--- b ---\n{}",
        a.log(),
        b.log()
    );
    assert!(b.log().contains("Leadership acquired"), "{}", b.log());
    // Nothing done twice: every instance replaced exactly once, capacity
    // back where it was.
    assert_rolled_to(&w, &image).await;
    drop((a, b));
    w.shutdown().await;
}
