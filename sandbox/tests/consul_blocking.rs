//! Blocking queries: a relevant write ends the wait at once, an unrelated
//! one does not, the wait expires with jitter of at most wait/16, hash
//! blocking on agent endpoints, and an index that goes backwards.
//! Time bounds are generous: a noisy 2-core machine must keep them.

mod consul_support;

use std::time::{Duration, Instant};

use consul_support::{World, index_of};
use serde_json::{Value, json};

#[tokio::test]
async fn a_write_wakes_a_blocked_kv_read_promptly() {
    let world = World::start(0).await;
    world.put(&world.url("/v1/kv/app/config"), "v1").await;
    let (_, index, _) = world.read(&world.url("/v1/kv/app/config")).await;

    let url = world.url(&format!("/v1/kv/app/config?index={index}&wait=5s"));
    let http = world.http.clone();
    let started = Instant::now();
    let blocked = tokio::spawn(async move { http.get(url).send().await.expect("GET") });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let written = Instant::now();
    world.put(&world.url("/v1/kv/app/config"), "v2").await;
    let resp = blocked.await.expect("the blocked read finishes");
    let answered = Instant::now();

    assert!(
        answered - written < Duration::from_secs(1),
        "took {:?} after the write",
        answered - written
    );
    assert!(
        answered - started >= Duration::from_millis(250),
        "it did block before the write"
    );
    assert!(index_of(&resp) > index);
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body[0]["Value"], "djI=");
    world.server.shutdown().await;
}

#[tokio::test]
async fn an_unrelated_write_does_not_end_the_wait_and_the_wait_expires() {
    let world = World::start(0).await;
    world.put(&world.url("/v1/kv/a"), "1").await;
    let (_, index, _) = world.read(&world.url("/v1/kv/a")).await;

    let url = world.url(&format!("/v1/kv/a?index={index}&wait=1s"));
    let http = world.http.clone();
    let started = Instant::now();
    let blocked = tokio::spawn(async move { http.get(url).send().await.expect("GET") });
    tokio::time::sleep(Duration::from_millis(200)).await;
    world.put(&world.url("/v1/kv/b"), "other key").await;
    let resp = blocked.await.expect("the blocked read finishes");
    let elapsed = started.elapsed();

    // wait (1s) plus at most wait/16 of jitter, plus slack for a busy machine.
    assert!(
        elapsed >= Duration::from_millis(1000),
        "returned early after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(1000 + 63 + 1500),
        "took {elapsed:?}"
    );
    assert_eq!(index_of(&resp), index, "no change: same index");
    world.server.shutdown().await;
}

#[tokio::test]
async fn health_queries_wake_on_a_check_status_change() {
    let world = World::start(1).await;
    world
        .register(
            "node-1",
            &json!({"ID": "web-1", "Name": "web", "Check": {"CheckID": "web-ttl", "TTL": "30s", "Status": "passing"}}),
        )
        .await;
    let (_, index, body) = world
        .read(&world.url("/v1/health/service/web?passing"))
        .await;
    assert_eq!(body.as_array().map(Vec::len), Some(1));

    let url = world.url(&format!(
        "/v1/health/service/web?passing&index={index}&wait=5s"
    ));
    let http = world.http.clone();
    let blocked = tokio::spawn(async move { http.get(url).send().await.expect("GET") });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let failed = Instant::now();
    world
        .put(
            &world.agent("node-1", "/v1/agent/check/fail/web-ttl?note=down"),
            "",
        )
        .await;
    let resp = blocked.await.expect("finishes");
    assert!(
        failed.elapsed() < Duration::from_secs(1),
        "took {:?}",
        failed.elapsed()
    );
    assert!(index_of(&resp) > index);
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body, json!([]), "the failing instance is not passing");
    world.server.shutdown().await;
}

#[tokio::test]
async fn agent_service_blocks_on_its_content_hash() {
    let world = World::start(1).await;
    let service = json!({"ID": "web-1", "Name": "web", "Port": 80});
    world.register("node-1", &service).await;
    let resp = world
        .get(&world.agent("node-1", "/v1/agent/service/web-1"))
        .await;
    let hash = resp.headers()["x-consul-contenthash"]
        .to_str()
        .expect("ASCII")
        .to_string();
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["ContentHash"], hash.as_str());

    // Same content: waits the full wait.
    let started = Instant::now();
    let resp = world
        .get(&world.agent(
            "node-1",
            &format!("/v1/agent/service/web-1?hash={hash}&wait=1s"),
        ))
        .await;
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(resp.headers()["x-consul-contenthash"], hash.as_str());

    // A change answers at once with a new hash.
    let url = world.agent(
        "node-1",
        &format!("/v1/agent/service/web-1?hash={hash}&wait=5s"),
    );
    let http = world.http.clone();
    let blocked = tokio::spawn(async move { http.get(url).send().await.expect("GET") });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let changed = Instant::now();
    world
        .register("node-1", &json!({"ID": "web-1", "Name": "web", "Port": 81}))
        .await;
    let resp = blocked.await.expect("finishes");
    assert!(changed.elapsed() < Duration::from_secs(1));
    assert_ne!(resp.headers()["x-consul-contenthash"], hash.as_str());
    world.server.shutdown().await;
}

#[tokio::test]
async fn an_index_that_goes_backwards_is_reported_and_blocks_high_indexes() {
    let world = World::start(0).await;
    for i in 0..5 {
        world.put(&world.url(&format!("/v1/kv/k{i}")), "x").await;
    }
    let (_, before, _) = world.read(&world.url("/v1/kv/?recurse")).await;
    assert!(before >= 5);
    assert_eq!(world.server.rewind_index(2), 2);
    let (_, after, body) = world.read(&world.url("/v1/kv/?recurse")).await;
    assert_eq!(after, 2, "the index went backwards");
    assert_eq!(
        body.as_array().map(Vec::len),
        Some(5),
        "the data is still there"
    );

    // A client that keeps its old index waits the whole wait, as with Consul.
    let started = Instant::now();
    let resp = world
        .get(&world.url(&format!("/v1/kv/?recurse&index={before}&wait=1s")))
        .await;
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(index_of(&resp), 2);

    // Writes continue from the lower index.
    world.put(&world.url("/v1/kv/k9"), "y").await;
    let (_, next, _) = world.read(&world.url("/v1/kv/k9")).await;
    assert_eq!(next, 3);

    // The control API does the same.
    let resp = world
        .put_json(&world.url("/sandbox/v1/index/rewind"), &json!({"Index": 1}))
        .await;
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["Index"], 1);
    world.server.shutdown().await;
}

#[tokio::test]
async fn bad_blocking_parameters_answer_consuls_errors() {
    let world = World::start(0).await;
    let resp = world.get(&world.url("/v1/kv/a?index=1&wait=10")).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.text().await.expect("body"), "Invalid wait time");
    let resp = world.get(&world.url("/v1/kv/a?index=abc")).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.text().await.expect("body"), "Invalid index");
    let resp = world
        .get(&world.url("/v1/catalog/nodes?stale&consistent"))
        .await;
    assert_eq!(resp.status(), 400);
    let resp = world.get(&world.url("/v1/catalog/nodes?stale")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-consul-knownleader"], "true");
    assert_eq!(resp.headers()["x-consul-lastcontact"], "0");
    assert_eq!(resp.headers()["content-type"], "application/json");
    world.server.shutdown().await;
}
