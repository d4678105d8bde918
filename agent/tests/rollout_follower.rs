//! The executor's Consul follower against the sandbox Consul (ACLs on):
//! it shows a service's health per instance and its pending commands, wakes
//! its reader on a change with the moment the change arrived, and answers a
//! failed read as an error instead of the view it held before.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::time::Duration;

use rollgate::config::ConsulConfig;
use rollgate::consul::Client;
use rollgate::rollout::follower::{CONFIRMED_FOR, Follower};
use rollgate::rollout::machine::OperatorCommand;
use rollgate::rollout::plan::now_ms;
use rollgate::rollout::store::Store;
use sandbox::consul::{Config as ServerConfig, Fault, Server, ServerHandle};
use serde_json::json;

const MANAGEMENT: &str = "follower-test-management";

fn client(consul: &ServerHandle) -> Client {
    Client::new(&ConsulConfig {
        address: format!("http://{}", consul.http_addr()),
        token: Some(rollgate::config::Secret::new(MANAGEMENT)),
        timeout: Duration::from_secs(5),
        ..ConsulConfig::default()
    })
    .unwrap()
}

/// The sandbox Consul (ACLs on) and a store on it with the management
/// token.
async fn world() -> (ServerHandle, Store) {
    let consul = Server::start(ServerConfig::with_acls(MANAGEMENT))
        .await
        .unwrap();
    let store = Store::new(client(&consul), "rollgate");
    (consul, store)
}

/// Runs `body` beside the follower's loops.
async fn beside<T>(follower: &Follower<'_>, body: impl Future<Output = T>) -> T {
    tokio::select! {
        () = follower.run() => unreachable!("the follower never returns"),
        out = body => out,
    }
}

/// Registers `web` for instance `id` on a node of its own, its one check
/// at `status`; answers the node's agent address.
async fn register(consul: &ServerHandle, id: &str, status: &str) -> std::net::SocketAddr {
    let agent = consul.add_node(&format!("node-{id}")).await.unwrap();
    let body = json!({
        "ID": format!("web-{id}"),
        "Name": "web",
        "Port": 80,
        "Meta": {"instance_id": id, "version": "1.0.0"},
        "Checks": [{"CheckID": format!("web-{id}:agent"), "Name": "agent", "TTL": "10m", "Status": status}],
    });
    let r = reqwest::Client::new()
        .put(format!("http://{agent}/v1/agent/service/register"))
        .header("X-Consul-Token", MANAGEMENT)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    agent
}

async fn set_check(agent: std::net::SocketAddr, id: &str, status: &str) {
    let r = reqwest::Client::new()
        .put(format!(
            "http://{agent}/v1/agent/check/update/web-{id}:agent"
        ))
        .header("X-Consul-Token", MANAGEMENT)
        .json(&json!({"Status": status, "Output": format!("now {status}")}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

/// Waits (5 s at most) for the follower's view to satisfy `ok`, one change
/// at a time; errors on the way are skipped.
async fn until(
    follower: &Follower<'_>,
    what: &str,
    ok: impl Fn(&rollgate::rollout::follower::HealthView, usize) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let seen = follower.changes();
        if let Ok((h, c)) = follower.view().await {
            if ok(&h, c.len()) {
                return;
            }
        }
        assert!(
            tokio::time::timeout_at(deadline, follower.changed_since(seen))
                .await
                .is_ok(),
            "the follower never showed {what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_commands_are_followed_and_a_change_is_dated_when_it_arrived() {
    let (consul, store) = world().await;
    let follower = Follower::new(&store, "web", Duration::from_secs(30));
    beside(&follower, async {
        let (h, c) = follower.view().await.unwrap();
        assert!(h.by_instance.is_empty(), "{h:?}");
        assert!(c.is_empty(), "{c:?}");

        let before = now_ms();
        let agent = register(&consul, "i-1", "warning").await;
        until(&follower, "i-1 registered, not passing", |h, _| {
            h.by_instance.get("i-1").is_some_and(|x| !x.all_passing)
        })
        .await;
        let seen = follower.changes();
        let told = now_ms();
        set_check(agent, "i-1", "passing").await;
        tokio::time::timeout(Duration::from_secs(5), follower.changed_since(seen))
            .await
            .expect("a health change wakes the reader");
        until(&follower, "i-1 passing", |h, _| {
            h.by_instance.get("i-1").is_some_and(|x| x.all_passing)
        })
        .await;
        // Read 300 ms after the change arrived, the view is dated when it
        // arrived (after the change was made), not when it is read.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let read = now_ms();
        let (h, _) = follower.view().await.unwrap();
        assert!(h.at.0 >= told && h.at.0 >= before, "{:?} < {told}", h.at);
        assert!(h.at.0 + 250 <= read, "dated {:?}, read at {read}", h.at);
        // Caught up: a plain read answers the view's index (what the
        // executor checks before acting).
        assert_eq!(follower.current().await.unwrap().index, h.index);
        // The view counts as confirmed for a moment after its answer
        // arrived, only at its own index; a read at that index confirms it
        // again from the read's sending, without waking anyone.
        let good = follower.confirmed_until(h.index).expect("confirmed");
        assert_eq!(good, h.confirmed + CONFIRMED_FOR);
        assert_eq!(follower.confirmed_until(h.index + 1), None);
        let changes = follower.changes();
        let asked = tokio::time::Instant::now();
        let again = follower.current().await.unwrap();
        assert!(again.confirmed >= asked && again.confirmed > h.confirmed);
        follower.offer(again);
        let good = follower.confirmed_until(h.index).unwrap();
        assert!(good >= asked + CONFIRMED_FOR, "confirmed again by the read");
        assert_eq!(follower.changes(), changes, "a confirmation is no change");
        // A read at an older index confirms nothing.
        let mut stale = follower.current().await.unwrap();
        stale.index = h.index - 1;
        follower.offer(stale);
        assert_eq!(follower.confirmed_until(h.index), Some(good));
        // An offer showing the same health at a newer index (Consul moved
        // the index without a change) keeps the time the view arrived; one
        // at an older index is ignored.
        let mut same = follower.current().await.unwrap();
        same.index = h.index + 1;
        follower.offer(same);
        let (offered, _) = follower.view().await.unwrap();
        assert_eq!((offered.index, offered.at), (h.index + 1, h.at));
        let mut older = follower.current().await.unwrap();
        older.index = 1;
        follower.offer(older);
        assert_eq!(follower.view().await.unwrap().0.index, h.index + 1);

        store
            .push_command("web", &OperatorCommand::Pause)
            .await
            .unwrap();
        until(&follower, "one pending command", |_, commands| {
            commands == 1
        })
        .await;
    })
    .await;
    consul.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_health_read_is_answered_as_an_error_not_as_the_older_view() {
    let (consul, store) = world().await;
    let follower = Follower::new(&store, "web", Duration::from_secs(30));
    beside(&follower, async {
        let agent = register(&consul, "i-1", "passing").await;
        until(&follower, "i-1 passing", |h, _| {
            h.by_instance.get("i-1").is_some_and(|x| x.all_passing)
        })
        .await;
        // The next health requests fail; a change makes the follower ask.
        consul.inject_fault(Fault {
            path_prefix: "/v1/health/".into(),
            count: 2,
            status: 500,
            body: "rpc error: no leader".into(),
            content_type: None,
        });
        set_check(agent, "i-1", "critical").await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let error = loop {
            let seen = follower.changes();
            if let Err(e) = follower.view().await {
                break e;
            }
            let _ = tokio::time::timeout_at(deadline, follower.changed_since(seen)).await;
            assert!(
                tokio::time::Instant::now() < deadline,
                "no failed read shown within 5 s"
            );
        };
        assert!(error.to_string().contains("500"), "{error}");
        // Then it recovers on its own, with what Consul says now.
        until(&follower, "i-1 critical after the failures", |h, _| {
            h.by_instance.get("i-1").is_some_and(|x| !x.all_passing)
        })
        .await;
    })
    .await;
    consul.shutdown().await;
}
