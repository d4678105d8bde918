//! The Slack stand-in's Socket Mode and interactivity, spoken to as a
//! Socket Mode client would: `apps.connections.open`, a WebSocket, envelopes
//! acknowledged (or not), `views.open`, `chat.postEphemeral`,
//! `usergroups.users.list`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use sandbox::slack::{Config, InteractError, SlackHandle, SlackServer, User};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const BOT: &str = "xoxb-sandbox-token";

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn call(slack: &SlackHandle, method: &str, token: Option<&str>, body: Value) -> Value {
    let mut req = reqwest::Client::new()
        .post(format!("{}/{method}", slack.api_url()))
        .json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap().json().await.unwrap()
}

async fn open(slack: &SlackHandle) -> Ws {
    let app = Config::default().app_token;
    let r = call(slack, "apps.connections.open", Some(&app), json!({})).await;
    assert_eq!(r["ok"], true, "{r}");
    let url = r["url"].as_str().unwrap();
    assert!(url.starts_with("ws://127.0.0.1:"), "{url}");
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame in time")
            .expect("the socket is open")
            .unwrap();
        if let Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

/// A message with Approve and Reject buttons, as rollgate posts it.
async fn post_with_buttons(slack: &SlackHandle) -> String {
    let r = call(
        slack,
        "chat.postMessage",
        Some(BOT),
        json!({"channel": "C0ALERTS", "text": "plan web-1", "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": "plan"}},
            {"type": "actions", "block_id": "rollgate_plan", "elements": [
                {"type": "button", "action_id": "rollgate_approve:web-1", "value": "web-1",
                 "style": "primary", "text": {"type": "plain_text", "text": "Approve"}},
                {"type": "button", "action_id": "rollgate_reject:web-1", "value": "web-1",
                 "style": "danger", "text": {"type": "plain_text", "text": "Reject"}},
            ]},
        ]}),
    )
    .await;
    r["ts"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn connections_open_wants_the_app_level_token_and_hands_out_one_time_urls() {
    let slack = SlackServer::start(Config::default()).await.unwrap();
    let r = call(&slack, "apps.connections.open", None, json!({})).await;
    assert_eq!(r["error"], "not_authed");
    let r = call(&slack, "apps.connections.open", Some(BOT), json!({})).await;
    assert_eq!(r["error"], "not_allowed_token_type");
    let r = call(
        &slack,
        "apps.connections.open",
        Some("xapp-wrong"),
        json!({}),
    )
    .await;
    assert_eq!(r["error"], "invalid_auth");

    let app = Config::default().app_token;
    let r = call(&slack, "apps.connections.open", Some(&app), json!({})).await;
    let url = r["url"].as_str().unwrap().to_string();
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["connection_info"]["app_id"], "A0SANDBOX");
    assert!(
        tokio_tungstenite::connect_async(&url).await.is_err(),
        "a ticket is used once"
    );
    assert_eq!(slack.socket_connections(), 1);
    slack.shutdown().await;
}

#[tokio::test]
async fn a_click_arrives_as_an_envelope_redelivered_until_acknowledged() {
    let slack = SlackServer::start(Config {
        ack_timeout: Duration::from_millis(300),
        ..Config::default()
    })
    .await
    .unwrap();
    let ts = post_with_buttons(&slack).await;
    let mut ws = open(&slack).await;
    assert_eq!(next_json(&mut ws).await["type"], "hello");

    let alice = User::new("U0ALICE", "alice");
    let id = slack.click(&alice, &ts, "rollgate_approve:web-1").unwrap();
    let env = next_json(&mut ws).await;
    assert_eq!(env["envelope_id"], id);
    assert_eq!(env["type"], "interactive");
    assert_eq!(env["retry_attempt"], 0);
    let p = &env["payload"];
    assert_eq!(p["type"], "block_actions");
    assert_eq!(p["user"]["id"], "U0ALICE");
    assert_eq!(p["user"]["username"], "alice");
    assert_eq!(p["container"]["message_ts"], ts.as_str());
    assert_eq!(p["channel"]["id"], "C0ALERTS");
    assert_eq!(p["actions"][0]["action_id"], "rollgate_approve:web-1");
    assert_eq!(p["actions"][0]["block_id"], "rollgate_plan");
    assert_eq!(p["actions"][0]["value"], "web-1");
    assert!(p["trigger_id"].as_str().is_some_and(|t| !t.is_empty()));

    // Not acknowledged: delivered again, marked as a retry.
    let again = next_json(&mut ws).await;
    assert_eq!(again["envelope_id"], id);
    assert_eq!(again["retry_attempt"], 1);
    assert_eq!(again["retry_reason"], "timeout");
    ws.send(Message::Text(json!({"envelope_id": id}).to_string().into()))
        .await
        .unwrap();
    assert!(
        slack
            .wait_until(Duration::from_secs(10), |s| s.acks().contains(&id))
            .await
    );
    // A test can still make Slack deliver it again (a lost ack).
    assert!(slack.redeliver(&id));
    let third = next_json(&mut ws).await;
    assert_eq!(third["envelope_id"], id);
    assert_eq!(third["retry_attempt"], 2);

    // A button the message does not have cannot be clicked.
    assert_eq!(
        slack.click(&alice, &ts, "rollgate_pause:web"),
        Err(InteractError::NoButton {
            ts: ts.clone(),
            action_id: "rollgate_pause:web".into()
        })
    );
    // Once updated without buttons, none can.
    let r = call(
        &slack,
        "chat.update",
        Some(BOT),
        json!({"channel": "C0ALERTS", "ts": ts, "text": "approved", "blocks": []}),
    )
    .await;
    assert_eq!(r["ok"], true);
    assert!(slack.click(&alice, &ts, "rollgate_approve:web-1").is_err());
    slack.shutdown().await;
}

#[tokio::test]
async fn envelopes_wait_for_a_connection_and_a_dropped_socket_can_be_reopened() {
    let slack = SlackServer::start(Config::default()).await.unwrap();
    let ts = post_with_buttons(&slack).await;
    let mut ws = open(&slack).await;
    next_json(&mut ws).await;
    assert_eq!(slack.drop_sockets(), 1);
    // The client sees its socket end.
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the dropped socket ends");
    assert!(
        slack
            .wait_until(Duration::from_secs(10), |s| s.socket_connections() == 0)
            .await
    );

    let bob = User::new("U0BOB", "bob");
    let id = slack.click(&bob, &ts, "rollgate_reject:web-1").unwrap();
    assert!(slack.deliveries().is_empty(), "no connection: not sent yet");
    let mut ws = open(&slack).await;
    assert_eq!(next_json(&mut ws).await["type"], "hello");
    let env = next_json(&mut ws).await;
    assert_eq!(env["envelope_id"], id);
    assert_eq!(slack.sockets_opened(), 2);
    slack.shutdown().await;
}

#[tokio::test]
async fn a_modal_needs_a_fresh_trigger_and_its_submission_carries_the_values() {
    let slack = SlackServer::start(Config::default()).await.unwrap();
    let ts = post_with_buttons(&slack).await;
    let mut ws = open(&slack).await;
    next_json(&mut ws).await;
    let bob = User::new("U0BOB", "bob");
    slack.click(&bob, &ts, "rollgate_reject:web-1").unwrap();
    let env = next_json(&mut ws).await;
    let trigger = env["payload"]["trigger_id"].as_str().unwrap().to_string();

    let view = json!({
        "type": "modal",
        "callback_id": "rollgate_reject",
        "private_metadata": "web-1",
        "title": {"type": "plain_text", "text": "Reject web-1"},
        "submit": {"type": "plain_text", "text": "Reject"},
        "blocks": [{"type": "input", "block_id": "reason",
            "label": {"type": "plain_text", "text": "Reason"},
            "element": {"type": "plain_text_input", "action_id": "reason"}}],
    });
    let r = call(
        &slack,
        "views.open",
        Some(BOT),
        json!({"trigger_id": trigger, "view": view}),
    )
    .await;
    assert_eq!(r["ok"], true, "{r}");
    let view_id = r["view"]["id"].as_str().unwrap().to_string();
    let r = call(
        &slack,
        "views.open",
        Some(BOT),
        json!({"trigger_id": trigger, "view": view}),
    )
    .await;
    assert_eq!(r["error"], "invalid_trigger_id", "a trigger is used once");
    assert_eq!(slack.views()[0].user, bob);

    let id = slack
        .submit_view(
            &view_id,
            &bob,
            &[("reason", "reason", "error rate too high")],
        )
        .unwrap();
    let env = next_json(&mut ws).await;
    assert_eq!(env["envelope_id"], id);
    assert_eq!(env["accepts_response_payload"], true);
    let p = &env["payload"];
    assert_eq!(p["type"], "view_submission");
    assert_eq!(p["user"]["id"], "U0BOB");
    assert_eq!(p["view"]["id"], view_id.as_str());
    assert_eq!(p["view"]["callback_id"], "rollgate_reject");
    assert_eq!(p["view"]["private_metadata"], "web-1");
    assert_eq!(
        p["view"]["state"]["values"]["reason"]["reason"]["value"],
        "error rate too high"
    );
    assert_eq!(
        slack.submit_view("V0NOPE", &bob, &[]),
        Err(InteractError::NoView("V0NOPE".into()))
    );
    slack.shutdown().await;
}

#[tokio::test]
async fn ephemeral_messages_and_user_groups() {
    let slack = SlackServer::start(Config::default()).await.unwrap();
    let r = call(
        &slack,
        "chat.postEphemeral",
        Some(BOT),
        json!({"channel": "C0ALERTS", "user": "U0EVE", "text": "you are not allowed to approve web"}),
    )
    .await;
    assert_eq!(r["ok"], true, "{r}");
    assert!(r["message_ts"].as_str().is_some());
    let r = call(
        &slack,
        "chat.postEphemeral",
        Some(BOT),
        json!({"channel": "C0NOPE", "user": "U0EVE", "text": "x"}),
    )
    .await;
    assert_eq!(r["error"], "channel_not_found");
    let e = slack.ephemerals();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].user, "U0EVE");
    assert!(slack.posts().is_empty(), "ephemeral messages are not posts");

    slack.set_usergroup("S0OPS", &["U0ALICE", "U0BOB"]);
    let get = |group: &str| {
        reqwest::Client::new()
            .get(format!(
                "{}/usergroups.users.list?usergroup={group}",
                slack.api_url()
            ))
            .bearer_auth(BOT)
            .send()
    };
    let r: Value = get("S0OPS").await.unwrap().json().await.unwrap();
    assert_eq!(r, json!({"ok": true, "users": ["U0ALICE", "U0BOB"]}));
    let r: Value = get("S0NOPE").await.unwrap().json().await.unwrap();
    assert_eq!(r["error"], "no_such_subteam");
    slack.shutdown().await;
}

#[tokio::test]
async fn a_stalled_socket_stays_open_but_silent() {
    let slack = SlackServer::start(Config::default()).await.unwrap();
    let ts = post_with_buttons(&slack).await;
    let mut ws = open(&slack).await;
    next_json(&mut ws).await;
    assert_eq!(slack.stall_sockets(), 1);
    assert_eq!(slack.socket_connections(), 0, "no longer used");
    slack
        .click(&User::new("U0BOB", "bob"), &ts, "rollgate_approve:web-1")
        .unwrap();
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    // Nothing comes back, and the socket is not closed either.
    let quiet = tokio::time::timeout(Duration::from_millis(500), ws.next()).await;
    assert!(quiet.is_err(), "silent: {quiet:?}");
    assert!(slack.deliveries().is_empty());
    slack.shutdown().await;
}
