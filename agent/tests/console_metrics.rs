//! The console of real `rollgate coordinator` replicas in the sandbox world
//! (moto, the sandbox Consul with ACLs on, the fleet of real `web` and
//! `rollgate agent` processes): a follower's API shows the pending plan and
//! its approval through the follower starts the rollout; after it succeeds,
//! `/metrics`, read by a Prometheus text-format parser, holds what that
//! rollout must produce, on the leader and on the follower alike.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod metrics_support;
mod rollout_support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use metrics_support::{Samples, get};
use rollout_support::{Endpoints, INSTANCES, World};
use sandbox::moto::seed::ImageSpec;
use sandbox::testkit::{free_addr, until};
use serde_json::Value;

/// Replica `replica`'s configuration: manual approval, the console on
/// `console`.
fn config(w: &World, replica: &str, console: SocketAddr) -> PathBuf {
    let path = w.config_with(replica, &Endpoints::direct(w), "1m", "");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("approval = \"auto\""), "{text}");
    let text = text.replace("approval = \"auto\"", "approval = \"manual\"");
    std::fs::write(&path, format!("{text}\n[http]\nlisten = \"{console}\"\n")).unwrap();
    path
}

/// `/metrics` parsed: (name, labels) to value.
async fn scrape(console: SocketAddr) -> Samples {
    let r = reqwest::get(format!("http://{console}/metrics"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.unwrap();
    metrics_support::parse(&text)
}

async fn api(
    console: SocketAddr,
    method: reqwest::Method,
    path: &str,
    token: &str,
) -> (u16, Value) {
    let r = reqwest::Client::new()
        .request(method, format!("http://{console}{path}"))
        .header("X-Consul-Token", token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followers_api_approves_and_metrics_hold_what_the_rollout_produced() {
    let w = World::new().await;
    let (a_console, b_console) = (free_addr(), free_addr());
    let a = w.coordinator(&config(&w, "a", a_console));
    until("replica a leads", Duration::from_secs(60), || async {
        let m = reqwest::get(format!("http://{a_console}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        m.contains("rollgate_leader 1").then_some(())
    })
    .await;
    let b = w.coordinator(&config(&w, "b", b_console));
    let operator = w.roles.secret("operator").unwrap().expose().to_owned();

    w.publish(ImageSpec::new("acmeinc/web", "1.1.0")).await;
    // The follower answers: the pending plan, with its diff.
    let plan = until(
        "b shows the pending plan",
        Duration::from_secs(60),
        || async {
            let (status, body) = api(
                b_console,
                reqwest::Method::GET,
                "/v1/services/web",
                &operator,
            )
            .await;
            (status == 200)
                .then(|| body["pending_plans"][0].as_str().map(str::to_owned))
                .flatten()
        },
    )
    .await;
    let (status, body) = api(
        b_console,
        reqwest::Method::GET,
        &format!("/v1/plans/{plan}"),
        &operator,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["diff"].as_str().unwrap().contains("1.1.0"), "{body}");
    // Approved through the follower, with the operator's token.
    let (status, body) = api(
        b_console,
        reqwest::Method::POST,
        &format!("/v1/plans/{plan}/approve"),
        &operator,
    )
    .await;
    assert_eq!(status, 200, "{body}\n{}", b.log());
    let outcome = w.outcome(Duration::from_secs(240)).await;
    assert_eq!(
        outcome.outcome.as_ref().unwrap().word(),
        "succeeded",
        "{:?}\n{}",
        outcome.outcome,
        a.log()
    );

    for (console, leader) in [(a_console, 1.0), (b_console, 0.0)] {
        let m = until(
            "the new instances counted, the old ones gone",
            Duration::from_secs(30),
            || async {
                let m = scrape(console).await;
                let new = m.get(&(
                    "rollgate_instances_passing".to_owned(),
                    [("generation", "new"), ("service", "web")]
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ));
                // Retired instances leave Consul's passing list once the
                // simulator has stopped them (it polls the group): wait for
                // that too, the figures below are then settled.
                let old = m.get(&(
                    "rollgate_instances_passing".to_owned(),
                    [("generation", "old"), ("service", "web")]
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ));
                (new == Some(&f64::from(INSTANCES)) && old == Some(&0.0)).then_some(m)
            },
        )
        .await;
        let web = [("service", "web")];
        assert_eq!(get(&m, "rollgate_leader", &[]), leader, "{console}");
        assert_eq!(
            get(
                &m,
                "rollgate_rollouts_total",
                &[("outcome", "succeeded"), ("service", "web")]
            ),
            1.0
        );
        for outcome in ["reverted", "failed", "aborted"] {
            assert_eq!(
                get(
                    &m,
                    "rollgate_rollouts_total",
                    &[("outcome", outcome), ("service", "web")]
                ),
                0.0,
                "{outcome}"
            );
        }
        assert_eq!(
            get(
                &m,
                "rollgate_rollout_duration_seconds_count",
                &[("outcome", "succeeded"), ("service", "web")]
            ),
            1.0
        );
        assert_eq!(
            get(
                &m,
                "rollgate_instances",
                &[("generation", "new"), ("service", "web")]
            ),
            f64::from(INSTANCES)
        );
        // Retired instances may stay registered (critical) until Consul
        // deregisters them; none of them passes.
        assert_eq!(
            get(
                &m,
                "rollgate_instances_passing",
                &[("generation", "old"), ("service", "web")]
            ),
            0.0
        );
        assert_eq!(get(&m, "rollgate_plans_pending_approval", &web), 0.0);
        assert_eq!(get(&m, "rollgate_plan_pending_approval_seconds", &web), 0.0);
        assert_eq!(
            get(&m, "rollgate_plan_approval_wait_seconds_count", &web),
            1.0
        );
        // Six instances in batches of two: three gates, each seen from
        // the rollout's own record.
        assert_eq!(get(&m, "rollgate_gate_reaction_seconds_count", &web), 3.0);
        assert_eq!(
            get(
                &m,
                "rollgate_rollout_phase",
                &[("phase", "succeeded"), ("service", "web")]
            ),
            0.0,
            "no active rollout any more"
        );
        // Consul calls are counted by operation, never by key.
        assert!(
            get(
                &m,
                "rollgate_consul_requests_total",
                &[("method", "GET"), ("operation", "kv"), ("result", "ok")]
            ) > 0.0
        );
        assert!(
            m.keys().all(|(_, l)| l
                .values()
                .all(|v| !v.starts_with("i-") && !v.contains("web-"))),
            "no instance or plan IDs as labels"
        );
    }
    // The leader made the AWS calls, through the retrying decorator.
    let m = scrape(a_console).await;
    assert!(
        get(
            &m,
            "rollgate_aws_requests_total",
            &[("operation", "DescribeAutoScalingGroups"), ("result", "ok")]
        ) > 0.0
    );
    drop((a, b));
    w.shutdown().await;
}
