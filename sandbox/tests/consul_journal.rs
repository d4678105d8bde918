//! The commit journal (a benchmark's measuring aid): off by default; when
//! on, it holds every watched KV write (plain, CAS and transaction, but not
//! a failed transaction's), every check status change, and a commit time
//! for each index, all through the real HTTP API.

mod consul_support;

use base64::Engine as _;
use consul_support::World;
use sandbox::consul::{Config, Status};
use serde_json::json;

#[tokio::test]
async fn the_journal_is_off_unless_asked_for() {
    let world = World::start(0).await;
    world.put(&world.url("/v1/kv/rollgate/a"), "1").await;
    assert!(world.server.journal().is_none());
    world.server.shutdown().await;
}

#[tokio::test]
async fn the_journal_records_watched_writes_checks_and_commit_times() {
    let world = World::with(Config {
        nodes: 1,
        journal_kv_prefix: Some("rollgate/".to_string()),
        ..Config::default()
    })
    .await;
    let put = world.put(&world.url("/v1/kv/rollgate/a"), "one").await;
    assert_eq!(put.status(), 200);
    world.put(&world.url("/v1/kv/other/b"), "ignored").await;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let ok = world
        .put_json(
            &world.url("/v1/txn"),
            &json!([{"KV": {"Verb": "set", "Key": "rollgate/a", "Value": b64("two")}}]),
        )
        .await;
    assert_eq!(ok.status(), 200);
    // A failed transaction commits nothing, so the journal has nothing of it.
    let failed = world
        .put_json(
            &world.url("/v1/txn"),
            &json!([
                {"KV": {"Verb": "set", "Key": "rollgate/a", "Value": b64("three")}},
                {"KV": {"Verb": "cas", "Key": "rollgate/a", "Index": 1, "Value": b64("x")}}
            ]),
        )
        .await;
    assert_eq!(failed.status(), 409);
    world
        .register(
            "node-1",
            &json!({"ID": "web-1", "Name": "web", "Check": {"CheckID": "web-ttl", "TTL": "30s", "Status": "warning"}}),
        )
        .await;
    let pass = world
        .put_json(
            &world.agent("node-1", "/v1/agent/check/update/web-ttl"),
            &json!({"Status": "passing", "Output": "ok"}),
        )
        .await;
    assert_eq!(pass.status(), 200);

    let journal = world.server.journal().expect("the journal is on");
    let values: Vec<(&str, &[u8])> = journal
        .kv_writes()
        .iter()
        .map(|w| (w.key.as_str(), w.value.as_slice()))
        .collect();
    assert_eq!(
        values,
        vec![("rollgate/a", &b"one"[..]), ("rollgate/a", &b"two"[..])]
    );
    let (first, second) = (&journal.kv_writes()[0], &journal.kv_writes()[1]);
    assert!(second.index > first.index);
    let change = journal
        .check_changes()
        .iter()
        .find(|c| c.check_id == "web-ttl")
        .expect("the status change is journalled");
    assert_eq!(
        (
            change.node.as_str(),
            change.service_id.as_str(),
            change.status
        ),
        ("node-1", "web-1", Status::Passing)
    );
    assert!(change.index > second.index);
    let t1 = journal.commit_time(first.index).expect("committed");
    let t2 = journal.commit_time(second.index).expect("committed");
    let t3 = journal.commit_time(change.index).expect("committed");
    assert!(t1 <= t2 && t2 <= t3, "commit times follow the index");
    assert_eq!(journal.commit_time(world.server.index() + 1), None);
    world.server.shutdown().await;
}
