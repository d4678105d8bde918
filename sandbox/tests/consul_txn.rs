//! `/v1/txn`: Consul's shape (200 with `Results`, 409 with `Errors` and
//! `OpIndex`), all-or-nothing, one index per transaction, the leader-fence
//! pattern (`check-session` then `cas`), limits, ACLs per operation, and
//! blocking queries woken by a transaction.

mod consul_support;

use std::time::Duration;

use base64::Engine as _;
use consul_support::World;
use sandbox::consul::Config;
use serde_json::{Value, json};

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

async fn txn(world: &World, token: Option<&str>, ops: &Value) -> (u16, Value) {
    let mut req = world.http.put(world.url("/v1/txn")).json(ops);
    if let Some(t) = token {
        req = req.header("X-Consul-Token", t);
    }
    let resp = req.send().await.expect("PUT /v1/txn");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("a body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

async fn session(world: &World) -> String {
    let resp = world
        .put_json(
            &world.url("/v1/session/create"),
            &json!({"LockDelay": "0s"}),
        )
        .await;
    let v: Value = resp.json().await.expect("JSON");
    v["ID"].as_str().expect("an ID").to_string()
}

#[tokio::test]
async fn a_successful_transaction_answers_consuls_shape_with_one_index() {
    let world = World::start(0).await;
    let before = world.server.index();
    let (status, body) = txn(
        &world,
        None,
        &json!([
            {"KV": {"Verb": "set", "Key": "app/a", "Value": b64("one"), "Flags": 7}},
            {"KV": {"Verb": "cas", "Key": "app/b", "Value": b64("two"), "Index": 0}},
            {"KV": {"Verb": "get", "Key": "app/a"}},
            {"KV": {"Verb": "check-not-exists", "Key": "app/c"}},
        ]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["Errors"], Value::Null);
    let results = body["Results"].as_array().expect("Results");
    assert_eq!(results.len(), 3, "check-not-exists returns nothing: {body}");
    assert_eq!(results[0]["KV"]["Key"], "app/a");
    assert_eq!(
        results[0]["KV"]["Value"],
        Value::Null,
        "writes blank the value"
    );
    assert_eq!(results[0]["KV"]["Flags"], 7);
    assert_eq!(results[2]["KV"]["Value"], b64("one"), "get keeps the value");
    let index = results[0]["KV"]["ModifyIndex"].as_u64().expect("index");
    assert_eq!(index, before + 1, "one raft index for the transaction");
    assert_eq!(results[1]["KV"]["ModifyIndex"], index);
    assert_eq!(world.server.index(), index);

    let (status, body) = txn(
        &world,
        None,
        &json!([{"KV": {"Verb": "get-tree", "Key": "app/"}}]),
    )
    .await;
    assert_eq!(status, 200);
    let keys: Vec<&str> = body["Results"]
        .as_array()
        .expect("Results")
        .iter()
        .filter_map(|r| r["KV"]["Key"].as_str())
        .collect();
    assert_eq!(keys, ["app/a", "app/b"]);
}

#[tokio::test]
async fn one_failed_operation_rolls_back_everything_and_reports_each_failure() {
    let world = World::start(0).await;
    assert_eq!(world.put(&world.url("/v1/kv/x"), "old").await.status(), 200);
    let before = world.server.index();
    let (status, body) = txn(
        &world,
        None,
        &json!([
            {"KV": {"Verb": "set", "Key": "x", "Value": b64("new")}},
            {"KV": {"Verb": "delete", "Key": "x"}},
            {"KV": {"Verb": "cas", "Key": "y", "Value": b64("v"), "Index": 99}},
            {"KV": {"Verb": "get", "Key": "missing"}},
            {"KV": {"Verb": "bogus", "Key": "z"}},
        ]),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["Results"], Value::Null);
    assert_eq!(
        body["Errors"],
        json!([
            {"OpIndex": 2, "What": "failed to set key \"y\", index is stale"},
            {"OpIndex": 3, "What": "key \"missing\" doesn't exist"},
            {"OpIndex": 4, "What": "unknown KV verb \"bogus\""},
        ])
    );
    let (status, _, entry) = world.read(&world.url("/v1/kv/x")).await;
    assert_eq!(status, 200, "the delete was rolled back");
    assert_eq!(entry[0]["Value"], b64("old"), "the set was rolled back");
    assert_eq!(
        world.server.index(),
        before,
        "a failed transaction writes nothing"
    );
}

#[tokio::test]
async fn a_deposed_leader_cannot_write_through_the_session_fence() {
    let world = World::start(0).await;
    let leader = session(&world).await;
    let lock = world.url(&format!("/v1/kv/service/leader?acquire={leader}"));
    assert_eq!(
        world.put(&lock, "me").await.text().await.expect("a body"),
        "true"
    );
    let fenced = |session: &str, value: &str| {
        json!([
            {"KV": {"Verb": "check-session", "Key": "service/leader", "Session": session}},
            {"KV": {"Verb": "set", "Key": "service/state", "Value": b64(value)}},
        ])
    };
    let (status, body) = txn(&world, None, &fenced(&leader, "1")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["Results"][0]["KV"]["Session"], leader.as_str());

    // The session dies: the lock is released and the fence refuses.
    let destroy = world.url(&format!("/v1/session/destroy/{leader}"));
    assert_eq!(world.put(&destroy, "").await.status(), 200);
    let (status, body) = txn(&world, None, &fenced(&leader, "2")).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body["Errors"],
        json!([{
            "OpIndex": 0,
            "What": format!("failed session check for key \"service/leader\", current session \"\" != \"{leader}\""),
        }])
    );
    let (_, _, entry) = world.read(&world.url("/v1/kv/service/state")).await;
    assert_eq!(
        entry[0]["Value"],
        b64("1"),
        "the deposed write did not land"
    );

    // Locks through the transaction itself, with Consul's texts.
    let other = session(&world).await;
    let (status, body) = txn(
        &world,
        None,
        &json!([
            {"KV": {"Verb": "lock", "Key": "service/leader", "Value": b64("new"), "Session": other}},
            {"KV": {"Verb": "check-index", "Key": "service/state", "Index": 1}},
        ]),
    )
    .await;
    assert_eq!(status, 409);
    let what = body["Errors"][0]["What"].as_str().unwrap_or_default();
    assert!(
        what.starts_with("failed index check for key \"service/state\", current modify index "),
        "{body}"
    );
    let (status, body) = txn(
        &world,
        None,
        &json!([{"KV": {"Verb": "lock", "Key": "service/leader", "Session": other}}]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["Results"][0]["KV"]["Session"], other.as_str());
    assert_eq!(body["Results"][0]["KV"]["LockIndex"], 2);
    let (status, body) = txn(
        &world,
        None,
        &json!([{"KV": {"Verb": "unlock", "Key": "service/leader", "Session": leader}}]),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(
        body["Errors"][0]["What"],
        "failed to unlock key \"service/leader\", lock isn't held, or is held by another session"
    );
    let (status, body) = txn(
        &world,
        None,
        &json!([{"KV": {"Verb": "lock", "Key": "k", "Session": "no-such"}}]),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(body["Errors"][0]["What"], "invalid session \"no-such\"");
}

#[tokio::test]
async fn lock_delay_refuses_a_lock_in_a_transaction() {
    let world = World::start(0).await;
    let resp = world
        .put_json(
            &world.url("/v1/session/create"),
            &json!({"LockDelay": "10s"}),
        )
        .await;
    let first: Value = resp.json().await.expect("JSON");
    let first = first["ID"].as_str().expect("ID").to_string();
    let acquire = world.url(&format!("/v1/kv/l?acquire={first}"));
    assert_eq!(
        world.put(&acquire, "").await.text().await.expect("a body"),
        "true"
    );
    let destroy = world.url(&format!("/v1/session/destroy/{first}"));
    world.put(&destroy, "").await;
    let second = session(&world).await;
    let (status, body) = txn(
        &world,
        None,
        &json!([{"KV": {"Verb": "lock", "Key": "l", "Session": second}}]),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(
        body["Errors"][0]["What"],
        "failed to lock key \"l\" due to lock delay"
    );
}

#[tokio::test]
async fn limits_and_bad_bodies_answer_consuls_texts() {
    let world = World::start(0).await;
    let many: Vec<Value> = (0..129)
        .map(|i| json!({"KV": {"Verb": "set", "Key": format!("k{i}")}}))
        .collect();
    let (status, body) = txn(&world, None, &Value::Array(many)).await;
    assert_eq!(status, 413);
    assert_eq!(body, "Transaction contains too many operations (129 > 128)");
    let most: Vec<Value> = (0..128)
        .map(|i| json!({"KV": {"Verb": "set", "Key": format!("k{i}")}}))
        .collect();
    assert_eq!(txn(&world, None, &Value::Array(most)).await.0, 200);

    let resp = world.put(&world.url("/v1/txn"), "{").await;
    assert_eq!(resp.status(), 400);
    assert!(
        resp.text()
            .await
            .expect("a body")
            .starts_with("Failed to parse body: ")
    );
    let (status, body) = txn(
        &world,
        None,
        &json!([{"KV": {"Verb": "set", "Key": "k", "Value": "not base64!"}}]),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = txn(&world, None, &json!([{"KV": {"Verb": "set", "Key": ""}}])).await;
    assert_eq!(status, 409);
    assert_eq!(body["Errors"][0]["What"], "Must provide key");
    let resp = world.get(&world.url("/v1/txn")).await;
    assert_eq!(resp.status(), 405);
}

#[tokio::test]
async fn a_transaction_wakes_blocking_queries_on_its_keys() {
    let world = World::start(0).await;
    world.put(&world.url("/v1/kv/w"), "0").await;
    let (_, index, _) = world.read(&world.url("/v1/kv/w")).await;
    let url = world.url(&format!("/v1/kv/w?index={index}&wait=5s"));
    let waiter = {
        let http = world.http.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let resp = http.get(url).send().await.expect("GET");
            (started.elapsed(), consul_support::index_of(&resp))
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _) = txn(
        &world,
        None,
        &json!([{"KV": {"Verb": "set", "Key": "w", "Value": b64("1")}}]),
    )
    .await;
    assert_eq!(status, 200);
    let (took, new_index) = waiter.await.expect("the waiter");
    assert!(
        took < Duration::from_secs(2),
        "woken at once, took {took:?}"
    );
    assert!(new_index > index);
}

#[tokio::test]
async fn each_operation_is_checked_against_the_token() {
    let world = World::with(Config {
        acl_management_token: Some("root-secret".into()),
        acl_read_tokens: vec!["read-secret".into()],
        ..Config::default()
    })
    .await;
    let write = json!([{"KV": {"Verb": "set", "Key": "a", "Value": b64("v")}}]);
    assert_eq!(txn(&world, Some("root-secret"), &write).await.0, 200);
    let (status, body) = txn(&world, Some("wrong-secret"), &write).await;
    assert_eq!((status, body), (403, Value::from("ACL not found")));
    let (status, body) = txn(&world, Some("read-secret"), &write).await;
    assert_eq!(status, 409, "a denied operation is a transaction error");
    let what = body["Errors"][0]["What"].as_str().unwrap_or_default();
    assert!(
        what.starts_with("Permission denied: token with AccessorID '")
            && what.ends_with("lacks permission 'key:write' on \"a\""),
        "{what}"
    );
    let read = json!([{"KV": {"Verb": "get", "Key": "a"}}]);
    let (status, body) = txn(&world, Some("read-secret"), &read).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["Results"][0]["KV"]["Value"], b64("v"));
    let (status, body) = txn(&world, None, &read).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["Results"],
        json!([]),
        "results the token cannot read are dropped"
    );
}
