//! Sessions tied to health checks, as Consul ties them: `NodeChecks`
//! defaults to `serfHealth`, `ServiceChecks` name a service's checks, a
//! session cannot be created on a critical or missing check (500 with
//! Consul's text), and a listed check turning critical (or its TTL running
//! out, or its removal) invalidates the session at once: its locks are
//! released or deleted (`Behavior`) and lock-delay applies.

mod consul_support;

use std::time::{Duration, Instant};

use consul_support::World;
use serde_json::{Value, json};

async fn create(world: &World, node: &str, spec: Value) -> (u16, Value) {
    let resp = world
        .put_json(&world.agent(node, "/v1/session/create"), &spec)
        .await;
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("a body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn id_of(world: &World, node: &str, spec: Value) -> String {
    let (status, body) = create(world, node, spec).await;
    assert_eq!(status, 200, "{body}");
    body["ID"].as_str().expect("an ID").to_string()
}

async fn register_leader_check(world: &World, ttl: &str) {
    world
        .register(
            "node-1",
            &json!({"ID": "coordinator", "Name": "coordinator",
                    "Check": {"CheckID": "coordinator-alive", "TTL": ttl, "Status": "passing"}}),
        )
        .await;
}

async fn acquire(world: &World, key: &str, session: &str) -> bool {
    let url = world.url(&format!("/v1/kv/{key}?acquire={session}"));
    world.put(&url, "me").await.text().await.expect("a body") == "true"
}

async fn session_info(world: &World, id: &str) -> Value {
    world
        .read(&world.url(&format!("/v1/session/info/{id}")))
        .await
        .2
}

#[tokio::test]
async fn node_checks_default_to_serf_health_as_in_consul() {
    let world = World::start(1).await;
    let id = id_of(&world, "node-1", json!({})).await;
    let info = session_info(&world, &id).await;
    assert_eq!(info[0]["Node"], "node-1");
    assert_eq!(info[0]["NodeChecks"], json!(["serfHealth"]));
    assert_eq!(info[0]["ServiceChecks"], Value::Null);

    register_leader_check(&world, "30s").await;
    let id = id_of(
        &world,
        "node-1",
        json!({"ServiceChecks": [{"ID": "coordinator-alive"}]}),
    )
    .await;
    let info = session_info(&world, &id).await;
    assert_eq!(
        info[0]["NodeChecks"],
        json!(["serfHealth"]),
        "still the default"
    );
    assert_eq!(info[0]["ServiceChecks"][0]["ID"], "coordinator-alive");

    let id = id_of(&world, "node-1", json!({"Checks": []})).await;
    let info = session_info(&world, &id).await;
    assert_eq!(info[0]["NodeChecks"], json!([]), "an explicit empty list");
}

#[tokio::test]
async fn a_session_cannot_be_created_on_a_critical_or_missing_check() {
    let world = World::start(1).await;
    register_leader_check(&world, "30s").await;
    let fail = world.agent("node-1", "/v1/agent/check/fail/coordinator-alive");
    assert_eq!(world.put(&fail, "").await.status(), 200);
    let (status, body) = create(
        &world,
        "node-1",
        json!({"ServiceChecks": [{"ID": "coordinator-alive"}]}),
    )
    .await;
    assert_eq!(
        (status, body),
        (500, json!("Check 'coordinator-alive' is in critical state"))
    );
    let (status, body) = create(&world, "node-1", json!({"NodeChecks": ["nope"]})).await;
    assert_eq!(
        (status, body),
        (500, json!("Missing check 'nope' registration"))
    );
}

#[tokio::test]
async fn a_critical_check_invalidates_the_session_at_once_and_releases_its_lock() {
    let world = World::start(1).await;
    register_leader_check(&world, "30s").await;
    let leader = id_of(
        &world,
        "node-1",
        json!({"Name": "leader", "LockDelay": "1s", "TTL": "60s",
               "ServiceChecks": [{"ID": "coordinator-alive"}]}),
    )
    .await;
    assert!(acquire(&world, "service/leader", &leader).await);
    let (_, index, _) = world.read(&world.url("/v1/kv/service/leader")).await;

    let fail = world.agent("node-1", "/v1/agent/check/fail/coordinator-alive");
    let failed_at = Instant::now();
    assert_eq!(world.put(&fail, "").await.status(), 200);
    let (_, _, entry) = world
        .read(&world.url(&format!("/v1/kv/service/leader?index={index}&wait=5s")))
        .await;
    assert!(
        failed_at.elapsed() < Duration::from_secs(1),
        "at once, not after the session TTL"
    );
    assert!(entry[0].get("Session").is_none(), "released: {entry}");
    assert_eq!(session_info(&world, &leader).await, json!([]));

    // Lock-delay: nobody takes the lock for LockDelay after it was lost.
    let pass = world.agent("node-1", "/v1/agent/check/pass/coordinator-alive");
    assert_eq!(world.put(&pass, "").await.status(), 200);
    let next = id_of(
        &world,
        "node-1",
        json!({"ServiceChecks": [{"ID": "coordinator-alive"}]}),
    )
    .await;
    assert!(
        !acquire(&world, "service/leader", &next).await,
        "lock-delay"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(acquire(&world, "service/leader", &next).await);
}

#[tokio::test]
async fn a_dead_process_loses_its_lock_when_its_ttl_check_runs_out() {
    let world = World::start(1).await;
    register_leader_check(&world, "1s").await;
    let leader = id_of(
        &world,
        "node-1",
        json!({"Behavior": "delete", "LockDelay": "0s", "TTL": "60s",
               "ServiceChecks": [{"ID": "coordinator-alive"}]}),
    )
    .await;
    assert!(acquire(&world, "service/leader", &leader).await);
    let started = Instant::now();
    // The process "dies": nobody refreshes the TTL check any more.
    let (_, index, _) = world.read(&world.url("/v1/kv/service/leader")).await;
    let resp = world
        .get(&world.url(&format!("/v1/kv/service/leader?index={index}&wait=10s")))
        .await;
    assert_eq!(resp.status(), 404, "Behavior=delete removed the lock key");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "lost with the 1s check, not 2 x the 60s session TTL: {took:?}"
    );
    assert_eq!(session_info(&world, &leader).await, json!([]));
}

#[tokio::test]
async fn removing_a_listed_check_invalidates_the_session() {
    let world = World::start(1).await;
    register_leader_check(&world, "30s").await;
    let id = id_of(
        &world,
        "node-1",
        json!({"ServiceChecks": [{"ID": "coordinator-alive"}]}),
    )
    .await;
    let url = world.agent("node-1", "/v1/agent/service/deregister/coordinator");
    assert_eq!(world.put(&url, "").await.status(), 200);
    assert_eq!(session_info(&world, &id).await, json!([]));
    // A session with no checks at all is untouched by a failed node.
    let free = id_of(&world, "node-1", json!({"Checks": []})).await;
    world
        .server
        .set_serf_health("node-1", sandbox::consul::Status::Critical, None)
        .expect("known node");
    assert_eq!(session_info(&world, &free).await[0]["ID"], free.as_str());
}
