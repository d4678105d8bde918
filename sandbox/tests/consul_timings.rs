//! The waits Consul imposes, kept by default and shortened only on
//! request: the 1-minute minimum of `DeregisterCriticalServiceAfter` with a
//! reaper every 30 seconds, output-only check changes reaching the catalog
//! after `check_update_interval`, HTTP check output keeping the last 4 KiB
//! of the body, and `/v1/health/state/:state` validated as Consul does.

mod consul_support;

use std::time::Duration;

use consul_support::World;
use sandbox::consul::Config;
use serde_json::{Value, json};

fn output_of(checks: &Value, id: &str) -> String {
    checks
        .as_array()
        .into_iter()
        .flatten()
        .chain(checks.as_object().into_iter().flat_map(|m| m.values()))
        .find(|c| c["CheckID"] == id)
        .and_then(|c| c["Output"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn deregister_critical_service_after_has_consuls_one_minute_minimum() {
    let world = World::start(1).await;
    world
        .register(
            "node-1",
            &json!({"ID": "web-1", "Name": "web",
                    "Check": {"CheckID": "web-ttl", "TTL": "30s", "DeregisterCriticalServiceAfter": "1s"}}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, _, services) = world.read(&world.url("/v1/catalog/service/web")).await;
    assert_eq!(
        services.as_array().map(Vec::len),
        Some(1),
        "critical for 2.5s: Consul raises 1s to its 1-minute minimum"
    );
}

#[tokio::test]
async fn output_only_changes_reach_the_catalog_after_check_update_interval() {
    let world = World::with(Config {
        nodes: 1,
        // Synced between 200 and 600 ms after the change.
        check_update_interval: Duration::from_millis(400),
        ..Config::default()
    })
    .await;
    world
        .register(
            "node-1",
            &json!({"ID": "web-1", "Name": "web", "Check": {"CheckID": "t", "TTL": "30s"}}),
        )
        .await;
    let url = world.agent("node-1", "/v1/agent/check/update/t");
    let update = |status: &'static str, output: &'static str| {
        let (world, url) = (&world, url.clone());
        async move {
            world
                .put_json(&url, &json!({"Status": status, "Output": output}))
                .await
        }
    };
    assert_eq!(update("passing", "first").await.status(), 200);
    let (_, index, health) = world.read(&world.url("/v1/health/checks/web")).await;
    assert_eq!(
        output_of(&health, "t"),
        "first",
        "a status change syncs at once"
    );

    assert_eq!(update("passing", "second").await.status(), 200);
    let (_, _, agent) = world.read(&world.agent("node-1", "/v1/agent/checks")).await;
    assert_eq!(
        output_of(&agent, "t"),
        "second",
        "the agent sees it at once"
    );
    let (_, same_index, health) = world.read(&world.url("/v1/health/checks/web")).await;
    assert_eq!(output_of(&health, "t"), "first", "the catalog waits");
    assert_eq!(same_index, index, "no raft write yet");

    let started = tokio::time::Instant::now();
    let (_, later, health) = world
        .read(&world.url(&format!("/v1/health/checks/web?index={index}&wait=5s")))
        .await;
    assert_eq!(output_of(&health, "t"), "second");
    assert!(later > index);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn the_default_check_update_interval_is_consuls_five_minutes() {
    let world = World::start(1).await;
    world
        .register(
            "node-1",
            &json!({"ID": "web-1", "Name": "web", "Check": {"CheckID": "t", "TTL": "30s", "Status": "passing"}}),
        )
        .await;
    let url = world.agent("node-1", "/v1/agent/check/pass/t?note=changed");
    assert_eq!(world.put(&url, "").await.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, _, health) = world.read(&world.url("/v1/health/checks/web")).await;
    assert_eq!(output_of(&health, "t"), "", "not synced within moments");
}

#[tokio::test]
async fn http_check_output_keeps_the_last_4_kib_of_the_body() {
    let body = format!("HEAD{}TAIL", "x".repeat(6000));
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(move || {
            let body = body.clone();
            async move { body }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let world = World::start(1).await;
    world
        .register(
            "node-1",
            &json!({"ID": "web-1", "Name": "web",
                    "Check": {"CheckID": "h", "HTTP": format!("http://{addr}/health"), "Interval": "10s"}}),
        )
        .await;
    let health = world
        .wait_for("/v1/health/checks/web", Duration::from_secs(5), |c| {
            c[0]["Status"] == "passing"
        })
        .await;
    let output = output_of(&health, "h");
    let kept = output
        .split_once(" Output: ")
        .map(|(_, b)| b)
        .unwrap_or_default();
    assert_eq!(kept.len(), 4096, "{}", output.len());
    assert!(kept.ends_with("TAIL") && !kept.contains("HEAD"));
    server.abort();
}

#[tokio::test]
async fn health_state_names_are_checked_as_consul_does() {
    let world = World::start(0).await;
    let (status, _, body) = world.read(&world.url("/v1/health/state/bogus")).await;
    assert_eq!(
        (status.as_u16(), body),
        (200, json!([])),
        "no check is in it"
    );
    let resp = world.get(&world.url("/v1/health/state/")).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.text().await.expect("a body"), "Missing check state");
    let (status, _, body) = world.read(&world.url("/v1/health/state/any")).await;
    assert_eq!(status, 200);
    assert_eq!(body.as_array().map(Vec::len), Some(1), "serfHealth: {body}");
}
