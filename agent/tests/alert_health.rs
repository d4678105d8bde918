//! The health watcher end to end: the sandbox Consul's checks change, the
//! watcher notices through its blocking query, and the Slack stand-in and the
//! SMTP server receive exactly what they should. Durations are scaled down
//! (threshold 400 ms instead of 30 s).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod alert_support;

use std::time::Duration;

use alert_support::{World, eventually, logs};
use rollgate::consul::QueryOptions;
use rollgate::consul::health::HealthState;
use rollgate::consul::types::CheckStatus;
use sandbox::consul::{Fault, Status};

const WAIT: Duration = Duration::from_secs(15);
/// Long enough for any late, duplicate message to show up.
const SETTLE: Duration = Duration::from_millis(1500);

#[tokio::test]
async fn a_critical_check_sends_one_message_per_channel_then_one_resolved_notice() {
    logs();
    let w = World::start(1).await;
    let checks = w.register("node-1", "web", "web-i-0abc", 1).await;
    let run = w.watch();
    tokio::time::sleep(Duration::from_millis(600)).await;

    w.set(
        "node-1",
        &checks[0],
        CheckStatus::Critical,
        "HTTP GET /health: 503 Service Unavailable",
    )
    .await;
    assert!(
        eventually(WAIT, || !w.slack.posts().is_empty()
            && !w.smtp.messages().is_empty())
        .await
    );
    tokio::time::sleep(SETTLE).await;
    let posts = w.slack.posts();
    let mails = w.smtp.messages();
    assert_eq!((posts.len(), mails.len()), (1, 1), "{posts:?}");
    assert_eq!(
        mails[0].subject(),
        "[rollgate] FIRING web: 1 check critical on node-1"
    );
    assert!(
        posts[0]
            .text
            .starts_with("FIRING web: 1 check critical on node-1"),
        "{}",
        posts[0].text
    );
    assert!(posts[0].text.contains("503 Service Unavailable"));
    assert!(posts[0].text.contains("i-0abc"), "the instance is named");
    assert_eq!(posts[0].blocks[0]["type"], "header");
    assert!(mails[0].data.contains("text/html") && mails[0].data.contains("text/plain"));

    w.set(
        "node-1",
        &checks[0],
        CheckStatus::Passing,
        "HTTP GET /health: 200 OK",
    )
    .await;
    assert!(
        eventually(WAIT, || w.slack.posts().len() >= 2
            && w.smtp.messages().len() >= 2)
        .await
    );
    tokio::time::sleep(SETTLE).await;
    let posts = w.slack.posts();
    let mails = w.smtp.messages();
    assert_eq!((posts.len(), mails.len()), (2, 2));
    assert_eq!(
        mails[1].subject(),
        "[rollgate] RESOLVED web: 1 check passing again on node-1"
    );
    assert!(posts[1].text.starts_with("RESOLVED"));
    run.stop().await;
    w.shutdown().await;
}

#[tokio::test]
async fn a_check_flapping_faster_than_the_threshold_sends_nothing() {
    logs();
    let mut w = World::start(1).await;
    w.config.watch.change_threshold = Duration::from_millis(800);
    let checks = w.register("node-1", "web", "web-i-0abc", 1).await;
    let run = w.watch();
    tokio::time::sleep(Duration::from_millis(400)).await;
    for i in 0..16 {
        let status = if i % 2 == 0 {
            CheckStatus::Critical
        } else {
            CheckStatus::Passing
        };
        w.set("node-1", &checks[0], status, "flap").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(w.slack.posts().is_empty() && w.smtp.messages().is_empty());
    run.stop().await;
    w.shutdown().await;
}

#[tokio::test]
async fn twenty_checks_and_serf_health_on_one_node_make_one_alert_naming_the_node() {
    logs();
    let mut w = World::start(2).await;
    w.config.watch.group_wait = Duration::from_millis(800);
    let checks = w.register("node-1", "web", "web-i-0abc", 20).await;
    w.register("node-2", "web", "web-i-0def", 1).await;
    let run = w.watch();
    tokio::time::sleep(Duration::from_millis(600)).await;

    for c in &checks {
        w.set("node-1", c, CheckStatus::Critical, "connection refused")
            .await;
    }
    w.consul
        .set_serf_health(
            "node-1",
            Status::Critical,
            Some("Agent not live or unreachable"),
        )
        .expect("serf health set");
    assert!(
        eventually(WAIT, || !w.slack.posts().is_empty()
            && !w.smtp.messages().is_empty())
        .await
    );
    tokio::time::sleep(SETTLE).await;
    let posts = w.slack.posts();
    let mails = w.smtp.messages();
    assert_eq!(
        (posts.len(), mails.len()),
        (1, 1),
        "{:#?}",
        posts.iter().map(|p| &p.text).collect::<Vec<_>>()
    );
    let subject = mails[0].subject();
    assert!(subject.contains("node node-1 is down"), "{subject}");
    assert!(subject.contains("20 service checks inhibited"), "{subject}");
    run.stop().await;
    w.shutdown().await;
}

#[tokio::test]
async fn a_service_in_maintenance_sends_nothing() {
    logs();
    let w = World::start(1).await;
    let checks = w.register("node-1", "web", "web-i-0abc", 1).await;
    let run = w.watch();
    tokio::time::sleep(Duration::from_millis(500)).await;
    w.agent("node-1")
        .service_maintenance("web-i-0abc", true, "draining for shutdown")
        .await
        .expect("maintenance on");
    w.set("node-1", &checks[0], CheckStatus::Critical, "app stopped")
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(w.slack.posts().is_empty(), "{:?}", w.slack.posts());
    assert!(w.smtp.messages().is_empty());
    run.stop().await;
    w.shutdown().await;
}

#[tokio::test]
async fn a_malformed_health_answer_is_a_clear_error_and_the_watcher_carries_on() {
    logs();
    let w = World::start(1).await;
    let checks = w.register("node-1", "web", "web-i-0abc", 1).await;
    // Seen directly through the client: the error names the call and the cause.
    w.consul.inject_fault(Fault {
        path_prefix: "/v1/health/state".into(),
        count: 1,
        status: 200,
        body: "<html>proxy error</html>".into(),
        content_type: Some("text/html".into()),
    });
    let e = w
        .client()
        .health_state(HealthState::Any, &QueryOptions::default())
        .await
        .expect_err("malformed");
    let text = e.to_string();
    assert!(
        text.contains("GET /v1/health/state/any") && text.contains("not the expected JSON"),
        "{text}"
    );
    assert!(text.contains("proxy error"), "{text}");

    // The watcher survives a few of them and still alerts afterwards.
    w.consul.inject_fault(Fault {
        path_prefix: "/v1/health/state".into(),
        count: 3,
        status: 200,
        body: "<html>proxy error</html>".into(),
        content_type: Some("text/html".into()),
    });
    let run = w.watch();
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.set("node-1", &checks[0], CheckStatus::Critical, "HTTP 500")
        .await;
    assert!(
        eventually(WAIT, || w.slack.posts().len() == 1
            && w.smtp.messages().len() == 1)
        .await
    );
    run.stop().await;
    w.shutdown().await;
}

#[tokio::test]
async fn a_restarted_watcher_neither_repeats_nor_forgets_an_alert() {
    logs();
    let w = World::start(1).await;
    let checks = w.register("node-1", "web", "web-i-0abc", 1).await;
    let run = w.watch();
    tokio::time::sleep(Duration::from_millis(500)).await;
    w.set("node-1", &checks[0], CheckStatus::Critical, "HTTP 500")
        .await;
    assert!(eventually(WAIT, || w.slack.posts().len() == 1).await);
    // Killed once the delivery is recorded. (Killed between Slack's answer
    // and the record, the story's first message may be posted again: the
    // README's "What delivery guarantees"; alert_order.rs tests that case.)
    let outbox = w.outbox();
    let mut recorded = false;
    for _ in 0..200 {
        let entries = outbox.list().await.unwrap_or_default();
        recorded = !entries.is_empty()
            && entries.iter().all(|(_, _, e)| {
                e.as_ref()
                    .is_ok_and(|e| e.deliveries.values().all(|d| d.delivered_ms.is_some()))
            });
        if recorded {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recorded, "the delivery is recorded");
    // Killed, not stopped: the tasks are aborted.
    run.watching.abort();
    run.sender.abort();
    let run = w.watch();
    tokio::time::sleep(SETTLE).await;
    assert_eq!(w.slack.posts().len(), 1, "no repeat after the restart");
    w.set("node-1", &checks[0], CheckStatus::Passing, "ok")
        .await;
    assert!(
        eventually(WAIT, || w.slack.posts().len() == 2).await,
        "the resolution is not forgotten"
    );
    assert!(w.slack.posts()[1].text.starts_with("RESOLVED"));
    run.stop().await;
    w.shutdown().await;
}

#[tokio::test]
async fn rollgate_watch_takes_the_lock_alerts_and_releases_the_lock_on_shutdown() {
    logs();
    let w = World::start(1).await;
    let checks = w.register("node-1", "web", "web-i-0abc", 1).await;
    let shutdown = rollgate::shutdown::Shutdown::new();
    let config = w.config.clone();
    let s = shutdown.clone();
    let running = tokio::spawn(async move { rollgate::alerting::run(&config, s).await });
    let lock_key = format!("{}/watch/leader", w.config.consul.kv_prefix);
    let client = w.client();
    let held = async {
        for _ in 0..200 {
            let kv = client
                .kv_get(&lock_key, &QueryOptions::default())
                .await
                .unwrap();
            if kv.value.is_some_and(|k| k.session.is_some()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    assert!(held.await, "the leader lock is taken");
    tokio::time::sleep(Duration::from_millis(500)).await;
    w.set("node-1", &checks[0], CheckStatus::Critical, "HTTP 500")
        .await;
    assert!(
        eventually(WAIT, || w.slack.posts().len() == 1
            && w.smtp.messages().len() == 1)
        .await
    );

    shutdown.requested.cancel();
    let result = tokio::time::timeout(Duration::from_secs(15), running)
        .await
        .expect("stops promptly")
        .expect("no panic");
    assert!(result.is_ok(), "{result:?}");
    let kv = client
        .kv_get(&lock_key, &QueryOptions::default())
        .await
        .unwrap();
    assert!(
        kv.value.is_none_or(|k| k.session.is_none()),
        "the lock is released"
    );
    w.shutdown().await;
}

#[tokio::test]
async fn a_watcher_that_loses_sight_of_a_service_says_so_and_neither_resolves_nor_fires_it() {
    logs();
    let w = World::start(1).await;
    let api = w.register("node-1", "api", "api-i-0abc", 1).await;
    let web = w.register("node-1", "web", "web-i-0def", 1).await;
    // With the watcher role's token: api fires.
    let run = w.watch();
    w.set("node-1", &api[0], CheckStatus::Critical, "api is down")
        .await;
    assert!(eventually(WAIT, || !w.slack.posts().is_empty()).await);
    run.stop().await;
    assert!(
        w.slack.posts()[0].text.starts_with("FIRING api"),
        "{:?}",
        w.slack.posts()
    );

    // The watcher comes back with a token that may not read api (the
    // watcher's policy and an exact deny): Consul filters api out.
    let http = sandbox::acl_roles::http_client(&w.management, Duration::from_secs(10)).unwrap();
    let consul = format!("http://{}", w.consul.http_addr());
    let rules = format!(
        "{}\nservice \"api\" {{\n  policy = \"deny\"\n}}\n",
        std::fs::read_to_string(sandbox::acl_roles::policy_dir().join("watcher.hcl")).unwrap()
    );
    let policy = serde_json::json!({ "Name": "watcher-without-api", "Rules": rules });
    let r = http
        .put(format!("{consul}/v1/acl/policy"))
        .json(&policy)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let token = serde_json::json!({ "Policies": [{ "Name": "watcher-without-api" }] });
    let r = http
        .put(format!("{consul}/v1/acl/token"))
        .json(&token)
        .send()
        .await
        .unwrap();
    let secret = r.json::<serde_json::Value>().await.unwrap()["SecretID"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut narrow = w.config.consul.clone();
    narrow.token = Some(rollgate::config::Secret::new(secret));
    let client = rollgate::consul::Client::new(&narrow).unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let (sender, sender_cancel) = w.sender();
    let watcher = rollgate::alerting::Watcher::new(
        client,
        w.config.watch.clone(),
        &w.config.consul.kv_prefix,
        w.config.consul.max_wait,
        w.outbox(),
        None,
    );
    let watching = tokio::spawn(watcher.run(cancel.clone()));

    // api recovers where this watcher cannot see it; web fails where it can.
    w.set("node-1", &api[0], CheckStatus::Passing, "api is back")
        .await;
    w.set("node-1", &web[0], CheckStatus::Critical, "web is down")
        .await;
    assert!(
        eventually(WAIT, || w
            .slack
            .posts()
            .iter()
            .any(|p| p.text.starts_with("FIRING web")))
        .await,
        "the visible service still alerts: {:?}",
        w.slack.posts()
    );
    assert!(
        eventually(WAIT, || w
            .slack
            .posts()
            .iter()
            .any(|p| p.text.contains("api") && p.text.contains("service:read")))
        .await,
        "a meta-alert names the hidden service: {:?}",
        w.slack.posts()
    );
    tokio::time::sleep(SETTLE).await;
    let posts = w.slack.posts();
    assert!(
        !posts.iter().any(|p| p.text.starts_with("RESOLVED api")),
        "no resolved notice for a check it cannot see: {posts:?}"
    );
    cancel.cancel();
    sender_cancel.cancel();
    let _ = watching.await;
    let _ = sender.await;
    w.shutdown().await;
}

/// Issue 17: after a revert, Slack said "2 checks passing again" about an
/// instance that had been drained, deregistered and terminated.
#[tokio::test]
async fn an_alert_ended_by_a_terminated_instance_says_terminated_not_passing() {
    logs();
    let w = World::start(2).await;
    let checks = w.register("node-1", "web", "web-i-0abc", 2).await;
    let run = w.watch();
    tokio::time::sleep(Duration::from_millis(600)).await;
    for c in &checks {
        w.set("node-1", c, CheckStatus::Critical, "HTTP GET /health: 500")
            .await;
    }
    assert!(eventually(WAIT, || w.smtp.messages().len() == 1).await);
    // The revert drains the instance, deregisters it and terminates it: its
    // node leaves Consul.
    let agent = w.agent("node-1");
    agent
        .service_maintenance("web-i-0abc", true, "rollgate agent draining i-0abc")
        .await
        .unwrap();
    agent.deregister_service("web-i-0abc").await.unwrap();
    w.consul.remove_node("node-1").await.unwrap();
    assert!(
        eventually(WAIT, || w.smtp.messages().len() >= 2
            && w.slack.posts().len() >= 2)
        .await
    );
    tokio::time::sleep(SETTLE).await;
    let mails = w.smtp.messages();
    assert_eq!(mails.len(), 2);
    assert_eq!(
        mails[1].subject(),
        "[rollgate] RESOLVED web: instance i-0abc terminated (2 checks gone) on node-1"
    );
    let reply = &w.slack.posts()[1];
    assert!(
        reply
            .text
            .starts_with("RESOLVED web: instance i-0abc terminated (2 checks gone) on node-1"),
        "{}",
        reply.text
    );
    assert!(!reply.text.contains("passing"), "{}", reply.text);
    run.stop().await;
    w.shutdown().await;
}
