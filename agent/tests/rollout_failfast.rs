//! Failing fast, every part a real process on loopback (see
//! `rollout_support`): a good image that boots far slower than
//! `failure_time` succeeds, and a broken one is reverted on the evidence of
//! its answers, not at `healthy_deadline`.
//!
//! Order and times come from the sandbox Consul's commit journal (every
//! check status change and every write of the rollout record, in index
//! order) and from the timestamps the machine recorded, never from the
//! test's own clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rollout_support;

use std::time::Duration;

use rollgate::rollout::plan::Plan;
use rollgate::rollout::store::Store;
use rollout_support::{Endpoints, World};
use sandbox::consul::{Config as ServerConfig, Journal, Status};
use sandbox::moto::seed::ImageSpec;
use sandbox::testkit::{LoggedChild, until};
use serde_json::Value;

/// The rollout record's writes for plan `id` (`web-1`), in index order:
/// (index, record).
fn record_writes(journal: &Journal, id: &str) -> Vec<(u64, Value)> {
    journal
        .kv_writes()
        .iter()
        .filter(|w| w.key == "rollgate/services/web/rollout")
        .filter_map(|w| {
            let v: Value = serde_json::from_slice(&w.value).ok()?;
            (v["spec"]["id"].as_str() == Some(id)).then_some((w.index, v))
        })
        .collect()
}

/// Every new instance the rollout's batches saw.
fn new_instances(writes: &[(u64, Value)]) -> Vec<String> {
    let mut ids: Vec<String> = writes
        .iter()
        .filter(|(_, v)| v["state"]["state"] == "launching")
        .flat_map(|(_, v)| {
            v["state"]["new"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|n| n["id"].as_str().map(str::to_owned))
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Waits (up to four minutes) for plan `id`'s outcome; on timeout, fails
/// with the rollout record and the coordinator's log.
async fn outcome_of(store: &Store, id: &str, c: &LoggedChild) -> Plan {
    for _ in 0..2400 {
        let plans = store.plans("web").await.unwrap_or_default();
        if let Some(p) = plans
            .into_iter()
            .map(|(p, _)| p)
            .find(|p| p.id == id && p.outcome.is_some())
        {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let record = store.rollout("web").await.ok().flatten().map(|(r, _)| r);
    panic!("{id}: no outcome\nrecord: {record:?}\n{}", c.log());
}

/// The status changes of `instance`'s check `kind` (`agent`: the node
/// agent's probe; `http`: Consul's own HTTP check), in index order.
fn changes(journal: &Journal, instance: &str, kind: &str) -> Vec<(u64, Status)> {
    let check = format!("web-{instance}:{kind}");
    journal
        .check_changes()
        .iter()
        .filter(|c| c.check_id == check)
        .map(|c| (c.index, c.status))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_good_image_succeeds_and_a_broken_one_is_reverted_by_failure_time() {
    let w = World::with_consul(ServerConfig {
        journal_kv_prefix: Some("rollgate/".into()),
        ..ServerConfig::default()
    })
    .await;
    // failure_time 3s; healthy_deadline 2m (progress_deadline's value in
    // rollout_support): the reason and the recorded times tell which ended
    // the second rollout.
    let c =
        w.coordinator(&w.config_with("a", &Endpoints::direct(&w), "2m", "failure_time = \"3s\"\n"));

    // 1. A good image whose app boots in 8s (503 all along, then healthy):
    // more than twice failure_time of "not answering yet".
    let good = w
        .publish(ImageSpec::new("acmeinc/web", "1.1.0").tag("sandbox:boot-delay", "8s"))
        .await;
    let store = Store::new(w.client(), "rollgate");
    let plan = outcome_of(&store, "web-1", &c).await;
    let outcome = plan.outcome.clone().unwrap();
    assert_eq!(outcome.word(), "succeeded", "{outcome:?}\n{}", c.log());
    let journal = w.consul.journal().unwrap();
    let writes = record_writes(&journal, "web-1");
    let new = new_instances(&writes);
    assert!(new.len() >= 6, "{new:?}");
    for id in &new {
        // Consul's HTTP check was critical while the app booted (503)...
        let http = changes(&journal, id, "http");
        assert!(
            http.iter().any(|(_, s)| *s == Status::Critical),
            "{id}: the HTTP check saw the boot: {http:?}"
        );
        // ...but the agent's check never was: "not answering yet" is warning.
        let agent = changes(&journal, id, "agent");
        assert!(
            agent.iter().all(|(_, s)| *s != Status::Critical),
            "{id}: {agent:?}"
        );
        assert_eq!(agent.last().map(|(_, s)| *s), Some(Status::Passing), "{id}");
    }
    // No batch ever started the failure timer.
    assert!(
        writes.iter().all(|(_, v)| v["state"]["new"]
            .as_array()
            .is_none_or(|n| n.iter().all(|i| i["critical_since"].is_null()))),
        "a booting instance was taken for a wrong one"
    );

    // 2. A broken image: it boots in 2s (503, "not answering yet"), then
    // /health answers 500 for ever.
    let broken = w
        .publish(
            ImageSpec::new("acmeinc/web", "1.2.0")
                .tag("sandbox:boot-delay", "2s")
                .tag("sandbox:broken", "true"),
        )
        .await;
    let plan = outcome_of(&store, "web-2", &c).await;
    let outcome = plan.outcome.clone().unwrap();
    assert_eq!(outcome.word(), "reverted", "{outcome:?}\n{}", c.log());
    let reason = outcome.reason().to_owned();
    // The reason names the instance, the check, its status and output, and
    // how long it had been wrong; not a deadline.
    for needle in [
        "answered wrong, critical for 3s (failure_time)",
        ":agent",
        "is critical",
        "answered 500",
    ] {
        assert!(reason.contains(needle), "{needle} missing from: {reason}");
    }
    assert!(!reason.contains("healthy_deadline"), "{reason}");
    let failed = reason
        .split_whitespace()
        .nth(1)
        .filter(|id| id.starts_with("i-"))
        .unwrap_or_else(|| panic!("no instance named first: {reason}"))
        .to_owned();

    // The order of events, from the journal.
    let journal = w.consul.journal().unwrap();
    let writes = record_writes(&journal, "web-2");
    let agent = changes(&journal, &failed, "agent");
    let http = changes(&journal, &failed, "http");
    let first_bad = agent
        .iter()
        .find(|(_, s)| *s == Status::Critical)
        .map(|(i, _)| *i)
        .unwrap_or_else(|| panic!("{failed}'s agent check never turned critical: {agent:?}"));
    // Booting came first: Consul's HTTP check critical (503), the agent's
    // check still warning (no change to critical before its first answer).
    let http_critical = http
        .iter()
        .find(|(_, s)| *s == Status::Critical)
        .map(|(i, _)| *i)
        .unwrap();
    assert!(http_critical < first_bad, "{http:?} {agent:?}");
    // The rollout left its batch (reverting) after that first bad answer,
    // and the last launching record shows the timer that did it.
    let left = writes
        .iter()
        .position(|(_, v)| v["state"]["state"] == "reverting")
        .expect("a reverting record");
    let (left_index, reverting) = &writes[left];
    assert!(*left_index > first_bad);
    assert_eq!(reverting["state"]["reason"], reason.as_str());
    let launching = writes[..left]
        .iter()
        .rev()
        .find(|(_, v)| v["state"]["state"] == "launching")
        .map(|(_, v)| v)
        .expect("a launching record");
    let instance = launching["state"]["new"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == failed.as_str())
        .unwrap_or_else(|| panic!("{failed} not in the batch: {launching}"));
    let critical_since = instance["critical_since"].as_u64().expect("timer running");
    let healthy_deadline_at = instance["healthy_deadline_at"].as_u64().unwrap();
    // The whole revert was over (recorded by the machine's own clock)
    // before the instance's healthy_deadline would have come.
    let (_, last) = writes.last().unwrap();
    assert_eq!(last["state"]["state"], "reverted", "{last}");
    let reverted_at = last["state"]["at"].as_u64().unwrap();
    assert!(critical_since < reverted_at && reverted_at < healthy_deadline_at);

    // Back on the good image, the broken one marked failed.
    let (_, _, images) = until("the fleet restored", Duration::from_secs(60), || async {
        let state = w.fleet_state().await;
        (state.2.len() == rollout_support::INSTANCES as usize).then_some(state)
    })
    .await;
    assert!(
        images.iter().all(|(_, ami)| *ami == good),
        "{images:?} (broken: {broken})"
    );
    drop(c);
    w.shutdown().await;
}
