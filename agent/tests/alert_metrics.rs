//! `rollgate watch`'s own `/metrics` (issue 15, item 5): the watcher as
//! `rollgate watch` runs it (`alerting::run`, leader lock, outbox sender)
//! against the sandbox Consul with ACLs on, the Slack stand-in and the SMTP
//! server, with `watch.metrics_listen` set. A check goes critical, then
//! passes again: `/metrics`, read by a Prometheus text-format parser, must
//! hold exactly the two transitions, the two notices delivered to each
//! receiver with their latencies, and the watcher's Consul calls; no
//! coordinator figure, and no label naming a check, an instance or a node.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod alert_support;
mod metrics_support;

use std::net::SocketAddr;
use std::time::Duration;

use alert_support::{World, eventually, logs};
use metrics_support::{Samples, total, value};
use rollgate::consul::types::CheckStatus;
use rollgate::shutdown::Shutdown;
use sandbox::testkit::free_addr;

const WAIT: Duration = Duration::from_secs(30);

/// `/metrics` parsed (histograms as their `_count`), or `None` while it
/// does not answer.
async fn scrape(addr: SocketAddr) -> Option<Samples> {
    let r = reqwest::get(format!("http://{addr}/metrics")).await.ok()?;
    assert_eq!(r.status().as_u16(), 200);
    let content_type = r.headers()[reqwest::header::CONTENT_TYPE].clone();
    assert!(
        content_type
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "{content_type:?}"
    );
    let text = r.text().await.ok()?;
    Some(metrics_support::parse(&text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_metrics_count_the_transitions_deliveries_and_latencies_of_one_alert() {
    logs();
    let mut w = World::start(1).await;
    let listen = free_addr();
    w.config.watch.metrics_listen = listen.to_string();
    let check = w.register("node-1", "web", "web-i-0abc", 1).await.remove(0);

    let shutdown = Shutdown::new();
    let config = w.config.clone();
    let watcher = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { rollgate::alerting::run(&config, shutdown).await })
    };
    let mut answered = false;
    for _ in 0..200 {
        if scrape(listen).await.is_some() {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answered, "no /metrics on {listen}");

    // Critical, then passing again: one firing and one resolved notice,
    // each to Slack and to email.
    w.set("node-1", &check, CheckStatus::Critical, "HTTP 500")
        .await;
    assert!(
        eventually(WAIT, || !w.slack.posts().is_empty()
            && !w.smtp.messages().is_empty())
        .await,
        "the firing notice"
    );
    w.set("node-1", &check, CheckStatus::Passing, "HTTP 200")
        .await;
    assert!(
        eventually(WAIT, || w.slack.posts().len() >= 2
            && w.smtp.messages().len() >= 2)
        .await,
        "the resolved notice"
    );

    // Counted right after each delivery: wait for the fourth.
    let mut m = Samples::new();
    for _ in 0..200 {
        m = scrape(listen).await.unwrap();
        if total(&m, "rollgate_outbox_delivery_attempts_total") >= 4.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = "rollgate_watch_check_transitions_total";
    assert_eq!(
        value(&m, t, &[("from", "untracked"), ("to", "critical")]),
        1.0,
        "{m:?}"
    );
    assert_eq!(
        value(&m, t, &[("from", "critical"), ("to", "passing")]),
        1.0
    );
    assert_eq!(total(&m, t), 2.0, "no other transition: {m:?}");
    let attempts = "rollgate_outbox_delivery_attempts_total";
    for receiver in ["ops-slack", "ops-email"] {
        assert_eq!(
            value(
                &m,
                attempts,
                &[("receiver", receiver), ("result", "delivered")]
            ),
            2.0,
            "{receiver}: {m:?}"
        );
        assert_eq!(
            value(
                &m,
                "rollgate_alert_latency_seconds_count",
                &[("receiver", receiver)]
            ),
            2.0,
            "{receiver}"
        );
    }
    assert_eq!(total(&m, attempts), 4.0, "no failed attempt: {m:?}");
    // The watcher's Consul calls, by operation (never by key or node).
    assert!(
        value(
            &m,
            "rollgate_consul_requests_total",
            &[
                ("method", "GET"),
                ("operation", "health/state"),
                ("result", "ok")
            ]
        ) > 0.0,
        "{m:?}"
    );
    // Only what a watcher has: none of the coordinator's state figures.
    for coordinator_only in [
        "rollgate_leader",
        "rollgate_rollouts_total",
        "rollgate_outbox_depth",
    ] {
        assert!(
            !m.keys().any(|(n, _)| n == coordinator_only),
            "{coordinator_only} on a watcher"
        );
    }
    for (name, labels) in m.keys() {
        for v in labels.values() {
            assert!(
                !v.contains("i-0abc") && !v.contains("node-1") && !v.contains(&check),
                "{name}{labels:?}: no instance, node or check as a label value"
            );
        }
    }

    shutdown.requested.cancel();
    watcher.await.unwrap().unwrap();
    // The listener stopped with the watcher.
    assert!(scrape(listen).await.is_none());
    w.shutdown().await;
}
