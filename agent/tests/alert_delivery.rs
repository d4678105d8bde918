//! The outbox and its sender against the real stand-ins: outages, fallback,
//! a sender killed mid-way, and receivers that refuse. Durations are scaled
//! down (a "2 minute" outage lasts 3 s, fallback_after is 1 s).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod alert_support;

use std::collections::BTreeSet;
use std::time::Duration;

use alert_support::{World, eventually, logs};
use rollgate::notify::{Enqueued, Event, RolloutNotice, RolloutStage, now_ms};
use sandbox::slack::Mode;

const WAIT: Duration = Duration::from_secs(20);
const SETTLE: Duration = Duration::from_millis(1500);

fn rollout(id: &str, stage: RolloutStage) -> Event {
    Event::rollout(
        RolloutNotice {
            rollout_id: id.into(),
            stage: Some(stage),
            service: "web".into(),
            group: "web-asg".into(),
            old_version: "1.0.0".into(),
            new_version: "1.1.0".into(),
            old_ami: "ami-0old".into(),
            new_ami: "ami-0new".into(),
            reason: if stage == RolloutStage::Failed {
                "instance i-0abc: check service:web critical (HTTP 500) past healthy_deadline 5m"
                    .into()
            } else {
                String::new()
            },
            ..RolloutNotice::default()
        },
        vec![],
        now_ms(),
    )
}

/// The event keys named in posts as they were posted (a story's first
/// message is later updated to show the current state).
fn keys(texts: impl Iterator<Item = String>) -> Vec<String> {
    texts
        .filter_map(|t| {
            t.split("(event ")
                .nth(1)
                .map(|k| k.trim_end_matches([')', '\n']).to_string())
        })
        .collect()
}

#[tokio::test]
async fn slack_down_then_up_delivers_everything_once_and_falls_back_to_email_once() {
    logs();
    let mut w = World::start(0).await;
    w.config.notify.default_receivers = vec!["ops-slack".into()];
    let outbox = w.outbox();
    w.slack.set_mode(Mode::Refuse).await.unwrap();
    let (sender, stop) = w.sender();
    for (id, stage) in [("r1", RolloutStage::Started), ("r1", RolloutStage::Failed)] {
        assert!(matches!(
            outbox.enqueue(rollout(id, stage)).await.unwrap(),
            Enqueued::New { .. }
        ));
    }
    // The same event again is one entry.
    assert!(matches!(
        outbox
            .enqueue(rollout("r1", RolloutStage::Failed))
            .await
            .unwrap(),
        Enqueued::Duplicate { .. }
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    w.slack.set_mode(Mode::Error500).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(w.slack.posts().is_empty());
    // fallback_after (1 s) has passed: each event went to email, once.
    assert!(eventually(WAIT, || w.smtp.messages().len() >= 2).await);
    w.slack.set_mode(Mode::Up).await.unwrap();
    assert!(eventually(WAIT, || w.slack.posts().len() >= 2).await);
    tokio::time::sleep(SETTLE).await;
    let slack_keys = keys(w.slack.posts().into_iter().map(|p| p.posted_text));
    let mail_subjects: Vec<String> = w.smtp.messages().iter().map(|m| m.subject()).collect();
    assert_eq!(slack_keys.len(), 2, "{slack_keys:?}");
    // One rollout, one thread: in order, the failure replies to the start.
    assert_eq!(slack_keys, ["rollout/r1/started", "rollout/r1/failed"]);
    let posts = w.slack.posts();
    assert_eq!(posts[1].thread_ts.as_deref(), Some(posts[0].ts.as_str()));
    assert!(
        posts[0].text.starts_with("ROLLOUT FAILED"),
        "{}",
        posts[0].text
    );
    assert_eq!(
        slack_keys.iter().collect::<BTreeSet<_>>().len(),
        2,
        "none twice: {slack_keys:?}"
    );
    assert_eq!(
        mail_subjects.len(),
        2,
        "one fallback per event: {mail_subjects:?}"
    );
    assert!(
        mail_subjects
            .iter()
            .any(|s| s.starts_with("[rollgate] ROLLOUT FAILED web: 1.0.0 -> 1.1.0"))
    );
    // Every entry is recorded as delivered, the fallback marked as such.
    for (_, _, entry) in outbox.list().await.unwrap() {
        let entry = entry.unwrap();
        assert!(entry.done_ms.is_some(), "{entry:?}");
        assert_eq!(
            entry.deliveries["ops-email"].fallback_for.as_deref(),
            Some("ops-slack")
        );
    }
    stop.cancel();
    sender.await.unwrap();
    w.shutdown().await;
}

#[tokio::test]
async fn a_sender_killed_with_alerts_in_the_outbox_is_replaced_and_each_is_delivered_once() {
    logs();
    let mut w = World::start(0).await;
    w.config.notify.default_receivers = vec!["ops-slack".into()];
    w.config.notify.fallback_after = Duration::from_secs(3600);
    let outbox = w.outbox();
    w.slack.set_mode(Mode::Error500).await.unwrap();
    let (sender, _stop) = w.sender();
    for id in ["a", "b", "c"] {
        outbox
            .enqueue(rollout(id, RolloutStage::Started))
            .await
            .unwrap();
    }
    assert!(eventually(WAIT, || w.slack.requests() >= 3).await);
    sender.abort(); // killed: no clean-up at all
    let _ = sender.await;
    let pending = outbox.list().await.unwrap();
    assert_eq!(pending.len(), 3);
    assert!(
        pending
            .iter()
            .all(|(_, _, e)| e.as_ref().unwrap().done_ms.is_none())
    );

    w.slack.set_mode(Mode::Up).await.unwrap();
    let (sender, stop) = w.sender();
    assert!(eventually(WAIT, || w.slack.posts().len() >= 3).await);
    tokio::time::sleep(SETTLE).await;
    let k = keys(w.slack.posts().into_iter().map(|p| p.posted_text));
    assert_eq!(k.len(), 3, "{k:?}");
    assert_eq!(
        k.iter().collect::<BTreeSet<_>>().len(),
        3,
        "each exactly once: {k:?}"
    );

    // A second sender running at the same time (a new leader while the old
    // one still runs) sends nothing again.
    let (sender2, stop2) = w.sender();
    tokio::time::sleep(SETTLE).await;
    assert_eq!(w.slack.posts().len(), 3);
    stop.cancel();
    stop2.cancel();
    sender.await.unwrap();
    sender2.await.unwrap();
    w.shutdown().await;
}

#[tokio::test]
async fn slack_refusals_name_the_receiver_and_the_cause_and_the_event_stays() {
    logs();
    let mut w = World::start(0).await;
    let event = rollout("r9", RolloutStage::Succeeded);

    w.config.notify.receivers[0] =
        alert_support::slack_receiver(&w.slack, "xoxb-wrong", "C0ALERTS");
    let e = w
        .receivers()
        .send("ops-slack", &event, Duration::from_secs(5))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("receiver ops-slack") && text.contains("invalid_auth"),
        "{text}"
    );
    assert!(
        text.contains("retrying will not help") && !e.retryable(),
        "{text}"
    );

    w.config.notify.receivers[0] =
        alert_support::slack_receiver(&w.slack, alert_support::TOKEN, "C0GONE");
    let e = w
        .receivers()
        .send("ops-slack", &event, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("channel_not_found") && !e.retryable(),
        "{e}"
    );

    w.config.notify.receivers[0] =
        alert_support::slack_receiver(&w.slack, alert_support::TOKEN, "C0ALERTS");
    w.slack.set_mode(Mode::RateLimited(2)).await.unwrap();
    let e = w
        .receivers()
        .send("ops-slack", &event, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        e.retryable() && e.retry_after() == Some(Duration::from_secs(2)),
        "{e}"
    );
    w.slack.set_mode(Mode::Up).await.unwrap();

    // Through the outbox: the event stays, with the error recorded.
    w.config.notify.receivers[0] =
        alert_support::slack_receiver(&w.slack, "xoxb-wrong", "C0ALERTS");
    w.config.notify.default_receivers = vec!["ops-slack".into()];
    w.config.notify.fallback_after = Duration::from_secs(3600);
    let outbox = w.outbox();
    outbox.enqueue(event).await.unwrap();
    let (sender, stop) = w.sender();
    let mut last_error = String::new();
    let recorded = async {
        for _ in 0..200 {
            let list = outbox.list().await.unwrap();
            if let Some((_, _, Ok(entry))) = list.first() {
                last_error = entry.deliveries["ops-slack"].last_error.clone();
                if !last_error.is_empty() {
                    return Some(entry.clone());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
    .await
    .expect("the failure is recorded");
    assert!(
        last_error.contains("ops-slack") && last_error.contains("invalid_auth"),
        "{last_error}"
    );
    assert!(recorded.deliveries["ops-slack"].delivered_ms.is_none());
    assert!(w.slack.posts().is_empty());
    stop.cancel();
    sender.await.unwrap();
    w.shutdown().await;
}

#[tokio::test]
async fn smtp_refusals_name_the_receiver_and_what_was_refused() {
    logs();
    let mut w = World::start(0).await;
    let event = rollout("r5", RolloutStage::Reverted);
    w.smtp.reject_recipient("ops@example.com");
    let e = w
        .receivers()
        .send("ops-email", &event, Duration::from_secs(5))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("receiver ops-email") && text.contains("refused a recipient"),
        "{text}"
    );
    assert!(text.contains("550") && !e.retryable(), "{text}");
    w.smtp.accept_all_recipients();

    if let Some(email) = w.config.notify.receivers[1].email.as_mut() {
        email.username = "rollgate".into();
        email.password = Some(rollgate::config::Secret::new("hunter2"));
    }
    w.smtp.reject_logins(true);
    let e = w
        .receivers()
        .send("ops-email", &event, Duration::from_secs(5))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("receiver ops-email") && text.contains("refused the login"),
        "{text}"
    );
    assert!(!text.contains("hunter2"));
    w.smtp.reject_logins(false);
    w.receivers()
        .send("ops-email", &event, Duration::from_secs(5))
        .await
        .unwrap();
    let m = w.smtp.messages();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].login.as_deref(), Some("rollgate"));
    assert_eq!(
        m[0].subject(),
        "[rollgate] ROLLOUT REVERTED web: 1.0.0 -> 1.1.0"
    );
    w.shutdown().await;
}

#[tokio::test]
async fn email_over_starttls_with_the_servers_ca() {
    logs();
    let w = World::start(0).await;
    let tls = sandbox::smtp::SmtpServer::start(sandbox::smtp::Config {
        starttls: true,
        ..sandbox::smtp::Config::default()
    })
    .await
    .unwrap();
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), tls.ca_pem().unwrap()).unwrap();
    let mut config = w.config.notify.clone();
    let mut receiver = alert_support::email_receiver(&tls);
    if let Some(e) = receiver.email.as_mut() {
        e.tls = rollgate::notify::config::TlsMode::Starttls;
        e.allow_insecure = false;
        e.ca_file = Some(ca.path().into());
    }
    config.receivers = vec![receiver];
    let receivers = rollgate::notify::Receivers::from_config_with_env(&config, &|_| None).unwrap();
    receivers
        .send(
            "ops-email",
            &rollout("r7", RolloutStage::Succeeded),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let m = tls.messages();
    assert_eq!(m.len(), 1);
    assert!(m[0].tls, "the message went over TLS");
    tls.shutdown().await;
    w.shutdown().await;
}

#[tokio::test]
async fn incoming_webhooks_post_blocks_and_map_errors() {
    logs();
    let w = World::start(0).await;
    let mut config = w.config.notify.clone();
    config.receivers = vec![rollgate::notify::config::ReceiverConfig {
        name: "team-hook".into(),
        webhook: Some(rollgate::notify::config::WebhookReceiver {
            url_env: Some("HOOK".into()),
            allow_insecure: true,
            ..Default::default()
        }),
        ..Default::default()
    }];
    let url = w.slack.webhook_url();
    let receivers = rollgate::notify::Receivers::from_config_with_env(&config, &|k| {
        (k == "HOOK").then(|| url.clone())
    })
    .unwrap();
    receivers
        .send(
            "team-hook",
            &rollout("r8", RolloutStage::PendingApproval),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let posts = w.slack.posts();
    assert_eq!(posts[0].via, "webhook");
    assert!(posts[0].text.starts_with("PLAN PENDING APPROVAL web"));

    let wrong = url.replace("sandboxwebhooksecret", "revoked");
    let receivers =
        rollgate::notify::Receivers::from_config_with_env(&config, &|_| Some(wrong.clone()))
            .unwrap();
    let e = receivers
        .send(
            "team-hook",
            &rollout("r8", RolloutStage::Started),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("receiver team-hook")
            && text.contains("no_service")
            && !text.contains(&wrong),
        "{text}"
    );
    w.shutdown().await;
}
