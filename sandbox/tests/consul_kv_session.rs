//! KV check-and-set, locks with sessions, lock-delay, session validation,
//! invalidation (destroy, TTL, a failed node) and key listing.

mod consul_support;

use std::time::{Duration, Instant};

use consul_support::World;
use sandbox::consul::{Config, Status};
use serde_json::{Value, json};

async fn body(resp: reqwest::Response) -> String {
    resp.text().await.expect("a body")
}

async fn session(world: &World, spec: Value) -> String {
    let resp = world
        .put_json(&world.url("/v1/session/create"), &spec)
        .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("JSON");
    v["ID"].as_str().expect("an ID").to_string()
}

#[tokio::test]
async fn check_and_set_creates_only_once_and_detects_conflicts() {
    let world = World::start(0).await;
    let url = |q: &str| world.url(&format!("/v1/kv/rollout/web{q}"));
    assert_eq!(body(world.put(&url("?cas=0"), "a").await).await, "true");
    assert_eq!(
        body(world.put(&url("?cas=0"), "b").await).await,
        "false",
        "cas=0 creates only"
    );
    let (_, _, entry) = world.read(&url("")).await;
    let modify = entry[0]["ModifyIndex"].as_u64().expect("ModifyIndex");
    assert_eq!(
        body(
            world
                .put(&url(&format!("?cas={}", modify + 100)), "c")
                .await
        )
        .await,
        "false"
    );
    assert_eq!(
        body(world.put(&url(&format!("?cas={modify}")), "d").await).await,
        "true"
    );
    assert_eq!(
        body(world.put(&url(&format!("?cas={modify}")), "e").await).await,
        "false",
        "stale index"
    );
    let (_, _, entry) = world.read(&url("")).await;
    assert_eq!(entry[0]["Value"], "ZA==");
    assert_eq!(entry[0]["CreateIndex"].as_u64(), Some(modify));

    // Deletes: cas=0 never deletes, the right index does, a missing key is fine.
    let modify = entry[0]["ModifyIndex"].as_u64().expect("ModifyIndex");
    let del = |q: String| world.http.delete(url(&q)).send();
    assert_eq!(
        body(del("?cas=0".into()).await.expect("DELETE")).await,
        "false"
    );
    assert_eq!(
        body(del(format!("?cas={modify}")).await.expect("DELETE")).await,
        "true"
    );
    let (status, index, _) = world.read(&url("")).await;
    assert_eq!(status, 404);
    assert!(index > modify, "a deletion moves the key's index forward");
    world.server.shutdown().await;
}

#[tokio::test]
async fn values_over_512_kib_are_rejected_with_413() {
    let world = World::start(0).await;
    let resp = world
        .put(&world.url("/v1/kv/big"), vec![b'x'; 512 * 1024 + 1])
        .await;
    assert_eq!(resp.status(), 413);
    assert!(
        body(resp)
            .await
            .starts_with("Request body(524289 bytes) too large, max size: 524288 bytes.")
    );
    let resp = world
        .put(&world.url("/v1/kv/big"), vec![b'x'; 512 * 1024])
        .await;
    assert_eq!(body(resp).await, "true");
    world.server.shutdown().await;
}

#[tokio::test]
async fn only_one_session_holds_a_lock() {
    let world = World::start(0).await;
    let s1 = session(&world, json!({"Name": "a", "LockDelay": "0s"})).await;
    let s2 = session(&world, json!({"Name": "b"})).await;
    let lock = |q: String| world.url(&format!("/v1/kv/leader?{q}"));
    assert_eq!(
        body(world.put(&lock(format!("acquire={s1}")), "one").await).await,
        "true"
    );
    assert_eq!(
        body(world.put(&lock(format!("acquire={s2}")), "two").await).await,
        "false"
    );
    assert_eq!(
        body(world.put(&lock(format!("acquire={s1}")), "one again").await).await,
        "true"
    );
    let (_, _, entry) = world.read(&world.url("/v1/kv/leader")).await;
    assert_eq!(entry[0]["Session"], s1.as_str());
    assert_eq!(
        entry[0]["LockIndex"], 1,
        "re-acquiring by the holder does not count"
    );
    assert_eq!(
        body(world.put(&lock(format!("release={s2}")), "").await).await,
        "false",
        "not the holder"
    );
    assert_eq!(
        body(world.put(&lock(format!("release={s1}")), "").await).await,
        "true"
    );
    assert_eq!(
        body(world.put(&lock(format!("acquire={s2}")), "two").await).await,
        "true"
    );
    let (_, _, entry) = world.read(&world.url("/v1/kv/leader")).await;
    assert_eq!(entry[0]["LockIndex"], 2);
    let resp = world
        .put(
            &lock("acquire=00000000-0000-0000-0000-000000000000".into()),
            "x",
        )
        .await;
    assert_eq!(resp.status(), 500);
    assert_eq!(
        body(resp).await,
        "invalid session \"00000000-0000-0000-0000-000000000000\""
    );
    let resp = world
        .put(&lock(format!("acquire={s1}&release={s1}")), "x")
        .await;
    assert_eq!(resp.status(), 400);
    world.server.shutdown().await;
}

#[tokio::test]
async fn lock_delay_blocks_reacquisition_after_destroy() {
    let world = World::start(0).await;
    let holder = session(&world, json!({"LockDelay": "1s"})).await;
    let other = session(&world, json!({})).await;
    let lock = |s: &str| world.url(&format!("/v1/kv/leader?acquire={s}"));
    assert_eq!(body(world.put(&lock(&holder), "x").await).await, "true");
    let destroyed = Instant::now();
    assert_eq!(
        body(
            world
                .put(&world.url(&format!("/v1/session/destroy/{holder}")), "")
                .await
        )
        .await,
        "true"
    );
    let (_, _, entry) = world.read(&world.url("/v1/kv/leader")).await;
    assert!(
        entry[0].get("Session").is_none(),
        "released on destroy: {entry}"
    );
    assert_eq!(
        body(world.put(&lock(&other), "y").await).await,
        "false",
        "lock-delay"
    );
    while destroyed.elapsed() < Duration::from_millis(1100) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        body(world.put(&lock(&other), "y").await).await,
        "true",
        "after lock-delay"
    );
    // Renewing a destroyed session is a 404.
    let resp = world
        .put(&world.url(&format!("/v1/session/renew/{holder}")), "")
        .await;
    assert_eq!(resp.status(), 404);
    assert_eq!(body(resp).await, format!("Session id '{holder}' not found"));
    world.server.shutdown().await;
}

#[tokio::test]
async fn session_ttl_is_validated_with_consuls_text() {
    let world = World::start(0).await;
    for (ttl, text) in [
        (
            "5s",
            "Invalid Session TTL '5000000000', must be between [10s=24h0m0s]",
        ),
        (
            "25h",
            "Invalid Session TTL '90000000000000', must be between [10s=24h0m0s]",
        ),
        (
            "ten",
            "Session TTL 'ten' invalid: time: invalid duration \"ten\"",
        ),
    ] {
        let resp = world
            .put_json(&world.url("/v1/session/create"), &json!({"TTL": ttl}))
            .await;
        assert_eq!(resp.status(), 500, "TTL {ttl}");
        assert_eq!(body(resp).await, text);
    }
    let resp = world
        .put_json(
            &world.url("/v1/session/create"),
            &json!({"Behavior": "keep"}),
        )
        .await;
    assert_eq!(body(resp).await, "Invalid Behavior setting 'keep'");
    let id = session(&world, json!({"TTL": "10s", "Behavior": "delete"})).await;
    let resp = world
        .put(&world.url(&format!("/v1/session/renew/{id}")), "")
        .await;
    let renewed: Value = resp.json().await.expect("JSON");
    assert_eq!(renewed[0]["ID"], id.as_str());
    assert_eq!(renewed[0]["Behavior"], "delete");
    world.server.shutdown().await;
}

#[tokio::test]
async fn sessions_die_with_their_ttl_or_their_node_and_drop_their_locks() {
    let world = World::with(Config {
        nodes: 1,
        session_ttl_min: Duration::from_secs(1),
        ..Config::default()
    })
    .await;
    let ttl = session(
        &world,
        json!({"TTL": "1s", "Behavior": "delete", "LockDelay": "0s"}),
    )
    .await;
    world
        .put(&world.url(&format!("/v1/kv/ephemeral?acquire={ttl}")), "x")
        .await;
    let created = Instant::now();
    world
        .wait_for("/v1/session/list", Duration::from_secs(6), |l| {
            l.as_array().is_some_and(Vec::is_empty)
        })
        .await;
    assert!(
        created.elapsed() >= Duration::from_millis(1900),
        "Consul waits 2 x TTL: {:?}",
        created.elapsed()
    );
    let (status, _, _) = world.read(&world.url("/v1/kv/ephemeral")).await;
    assert_eq!(status, 404, "Behavior=delete removed the key");

    let on_node = session(&world, json!({"Node": "node-1"})).await;
    world
        .put(&world.url(&format!("/v1/kv/leader?acquire={on_node}")), "x")
        .await;
    let (_, _, listed) = world.read(&world.url("/v1/session/node/node-1")).await;
    assert_eq!(listed[0]["ID"], on_node.as_str());
    world
        .server
        .set_serf_health("node-1", Status::Critical, None)
        .expect("known node");
    let (_, _, info) = world
        .read(&world.url(&format!("/v1/session/info/{on_node}")))
        .await;
    assert_eq!(info, json!([]), "invalidated by the failed serfHealth");
    let (_, _, entry) = world.read(&world.url("/v1/kv/leader")).await;
    assert!(entry[0].get("Session").is_none());
    // A session cannot be created on a node whose check is critical.
    let resp = world
        .put_json(&world.url("/v1/session/create"), &json!({"Node": "node-1"}))
        .await;
    assert_eq!(resp.status(), 500);
    assert_eq!(body(resp).await, "Check 'serfHealth' is in critical state");
    world.server.shutdown().await;
}

#[tokio::test]
async fn keys_listing_honours_the_separator() {
    let world = World::start(0).await;
    for key in [
        "web/bar",
        "web/foo",
        "web/subdir/x",
        "web/subdir/y",
        "other",
    ] {
        world.put(&world.url(&format!("/v1/kv/{key}")), "v").await;
    }
    let (_, _, keys) = world.read(&world.url("/v1/kv/web/?keys&separator=/")).await;
    assert_eq!(keys, json!(["web/bar", "web/foo", "web/subdir/"]));
    let (_, _, all) = world.read(&world.url("/v1/kv/web/?recurse")).await;
    assert_eq!(all.as_array().map(Vec::len), Some(4));
    let (status, _, _) = world.read(&world.url("/v1/kv/nothing/?keys")).await;
    assert_eq!(status, 404);
    let resp = world
        .http
        .delete(world.url("/v1/kv/web/?recurse"))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(body(resp).await, "true");
    let (status, _, _) = world.read(&world.url("/v1/kv/web/?recurse")).await;
    assert_eq!(status, 404);
    let (_, _, raw) = world.read(&world.url("/v1/kv/other")).await;
    assert_eq!(raw[0]["Value"], "dg==");
    let resp = world.get(&world.url("/v1/kv/other?raw")).await;
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(body(resp).await, "v");
    world.server.shutdown().await;
}
