//! The Socket Mode client and the Slack calls of approvals against the
//! Slack stand-in on loopback: envelopes acknowledged at once, the
//! connection opened again after Slack was unreachable or dropped it, and
//! tokens never in an error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rollgate::chatops::ChatOps;
use rollgate::chatops::api::SlackApi;
use rollgate::chatops::interaction::MessageRef;
use rollgate::chatops::socket;
use rollgate::config::{Config, Secret};
use rollgate::notify::config::{ReceiverConfig, SlackReceiver};
use sandbox::slack::{Config as SlackConfig, Mode, SlackHandle, SlackServer, User};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn receiver(slack: &SlackHandle, bot: &str) -> SlackReceiver {
    SlackReceiver {
        channel: "C0ALERTS".into(),
        token: Some(Secret::new(bot)),
        api_url: slack.api_url(),
        allow_insecure: true,
        ..SlackReceiver::default()
    }
}

/// Alice clicks Approve on the plan's message: the envelope reaches the
/// handler's channel, the one Slack sent. Answers its ID and the envelope.
async fn click_arrives(
    slack: &SlackHandle,
    alice: &User,
    ts: &str,
    rx: &mut mpsc::Receiver<socket::Envelope>,
) -> (String, socket::Envelope) {
    let id = slack.click(alice, ts, "rollgate:approve:web-1").unwrap();
    let envelope = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(envelope.id, id);
    (id, envelope)
}

/// Waits until the client has opened `n` sockets in all, one open now.
async fn opened(slack: &SlackHandle, n: u64, what: &str) {
    assert!(
        slack
            .wait_until(Duration::from_secs(30), |s| s.sockets_opened() == n
                && s.socket_connections() == 1)
            .await,
        "{what}"
    );
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[tokio::test]
async fn tokens_never_appear_in_errors() {
    let slack = SlackServer::start(SlackConfig::default()).await.unwrap();
    let wrong_app = "xapp-1-A0WRONG-secret-app-value";
    let wrong_bot = "xoxb-wrong-secret-bot-value";
    let api = SlackApi::new(
        "ops-slack",
        &receiver(&slack, wrong_bot),
        Secret::new(wrong_app),
        &no_env,
    )
    .unwrap();
    let e = api.open_connection().await.unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(text.contains("apps.connections.open"), "{text}");
    assert!(text.contains("invalid_auth"), "{text}");
    assert!(text.contains("app-level token"), "{text}");
    let message = MessageRef {
        channel: "C0ALERTS".into(),
        ts: "1.2".into(),
    };
    let e = api.tell("C0ALERTS", "U0EVE", "x".into()).await.unwrap_err();
    let text2 = format!("{e} {e:?} {api:?}");
    assert!(text2.contains("chat.postEphemeral"), "{text2}");
    let e = api
        .update(&message, "x".into(), Vec::new())
        .await
        .unwrap_err();
    let text3 = format!("{e} {e:?}");
    for t in [&text, &text2, &text3] {
        assert!(!t.contains(wrong_app) && !t.contains(wrong_bot), "{t}");
    }

    // An unknown user group says which setting to fix.
    let good = SlackApi::new(
        "ops-slack",
        &receiver(&slack, "xoxb-sandbox-token"),
        Secret::new(wrong_app),
        &no_env,
    )
    .unwrap();
    let e = good.group_members("S0NOPE").await.unwrap_err();
    assert!(
        e.to_string().contains("no_such_subteam") && e.to_string().contains("slack_approvers"),
        "{e}"
    );

    // The configuration: a missing token names the key; a bot token given
    // as the app-level token is refused without being echoed.
    let mut config = Config::default();
    config.notify.receivers = vec![ReceiverConfig {
        name: "ops-slack".into(),
        slack: Some(receiver(&slack, "xoxb-sandbox-token")),
        ..ReceiverConfig::default()
    }];
    config.coordinator.slack_app.receiver = "ops-slack".into();
    config.coordinator.slack_app.app_token_env = Some("SLACK_APP_TOKEN".into());
    let e = ChatOps::from_config_with_env(&config, &no_env).unwrap_err();
    assert!(
        e.to_string()
            .contains("coordinator.slack_app.app_token_file")
            && e.to_string().contains("SLACK_APP_TOKEN"),
        "{e}"
    );
    let e = ChatOps::from_config_with_env(&config, &|_| Some(wrong_bot.into())).unwrap_err();
    assert!(e.to_string().contains("app-level token"), "{e}");
    assert!(!format!("{e} {e:?}").contains(wrong_bot), "{e:?}");
    let ok = ChatOps::from_config_with_env(&config, &|_| Some(wrong_app.into()))
        .unwrap()
        .expect("on");
    assert!(!format!("{ok:?}").contains(wrong_app), "{ok:?}");
    slack.shutdown().await;
}

#[tokio::test]
async fn envelopes_are_acknowledged_at_once_and_the_connection_comes_back() {
    // Redelivery only after a minute: an envelope delivered twice below
    // would mean it was not acknowledged at all.
    let slack = SlackServer::start(SlackConfig {
        ack_timeout: Duration::from_secs(60),
        ..SlackConfig::default()
    })
    .await
    .unwrap();
    // A message with a button to click.
    let posted: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/chat.postMessage", slack.api_url()))
        .bearer_auth("xoxb-sandbox-token")
        .json(&json!({"channel": "C0ALERTS", "text": "plan", "blocks": [
            {"type": "actions", "block_id": "rollgate:web-1", "elements": [
                {"type": "button", "action_id": "rollgate:approve:web-1", "value": "web-1",
                 "text": {"type": "plain_text", "text": "Approve"}}]}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ts = posted["ts"].as_str().unwrap().to_string();

    // Slack is down when the client starts: it keeps trying.
    slack.set_mode(Mode::Error500).await.unwrap();
    let api = SlackApi::new(
        "ops-slack",
        &receiver(&slack, "xoxb-sandbox-token"),
        Secret::new(SlackConfig::default().app_token),
        &no_env,
    )
    .unwrap();
    let (tx, mut rx) = mpsc::channel(8);
    let cancel = CancellationToken::new();
    let run = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            socket::run(
                &api,
                tx,
                socket::Timing {
                    reconnect_min: Duration::from_millis(20),
                    reconnect_max: Duration::from_millis(200),
                    ping_every: Duration::from_millis(100),
                    silent_after: Duration::from_millis(500),
                },
                &cancel,
            )
            .await
        })
    };
    assert!(
        slack
            .wait_until(Duration::from_secs(30), |s| s.requests() >= 2)
            .await,
        "it retries"
    );
    assert_eq!(slack.socket_connections(), 0);
    slack.set_mode(Mode::Up).await.unwrap();
    assert!(
        slack
            .wait_until(Duration::from_secs(30), |s| s.socket_connections() == 1)
            .await,
        "connected once Slack is back"
    );

    // A click: acknowledged by the client and handed over.
    let alice = User::new("U0ALICE", "alice");
    let (id, envelope) = click_arrives(&slack, &alice, &ts, &mut rx).await;
    assert_eq!(envelope.payload["user"]["id"], "U0ALICE");
    assert!(
        slack
            .wait_until(Duration::from_secs(30), |s| s.acks().contains(&id))
            .await
    );

    // Dropped: opened again, and the next click arrives.
    slack.drop_sockets();
    opened(&slack, 2, "re-opened").await;
    let (id, _) = click_arrives(&slack, &alice, &ts, &mut rx).await;
    assert_eq!(
        slack
            .deliveries()
            .iter()
            .filter(|d| d.envelope_id == id)
            .count(),
        1,
        "acknowledged in time: delivered once"
    );

    assert!(
        slack
            .wait_until(Duration::from_secs(30), |s| s.acks().contains(&id))
            .await
    );

    // Slack asks for a refresh: the client opens a new connection.
    assert_eq!(slack.refresh_sockets(), 1);
    opened(&slack, 3, "refreshed").await;

    // The path dies silently (no close, no pong): noticed, opened again,
    // and clicks arrive again.
    assert_eq!(slack.stall_sockets(), 1);
    opened(&slack, 4, "a silent connection is replaced").await;
    click_arrives(&slack, &alice, &ts, &mut rx).await;

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("stops when cancelled")
        .unwrap();
    slack.shutdown().await;
}
