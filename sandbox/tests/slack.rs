//! The Slack stand-in, spoken to with plain HTTP as slack-morphism and a
//! webhook client would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use sandbox::slack::{Config, Mode, SlackServer};
use serde_json::{Value, json};

async fn post(url: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(url).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn post_message_answers_like_slack_and_records_posts() {
    let slack = SlackServer::start(Config::default()).await.unwrap();
    let url = format!("{}/chat.postMessage", slack.api_url());
    let msg = json!({"channel": "C0ALERTS", "text": "hello", "blocks": [{"type": "divider"}]});

    let (status, body) = post(&url, Some("xoxb-sandbox-token"), msg.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(body["ok"], true);
    assert_eq!(body["channel"], "C0ALERTS");
    assert!(body["ts"].as_str().unwrap().contains('.'));

    let (_, body) = post(&url, Some("xoxb-wrong"), msg.clone()).await;
    assert_eq!(body, json!({"ok": false, "error": "invalid_auth"}));
    let (_, body) = post(&url, None, msg.clone()).await;
    assert_eq!(body["error"], "not_authed");
    let (_, body) = post(
        &url,
        Some("xoxb-sandbox-token"),
        json!({"channel": "C0NOPE", "text": "x"}),
    )
    .await;
    assert_eq!(body["error"], "channel_not_found");

    let (_, body) = post(
        &format!("{}/auth.test", slack.api_url()),
        Some("xoxb-sandbox-token"),
        json!({}),
    )
    .await;
    assert_eq!(body["ok"], true);

    let posts = slack.posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].text, "hello");
    assert_eq!(posts[0].blocks[0]["type"], "divider");
    slack.shutdown().await;
}

#[tokio::test]
async fn it_goes_down_and_comes_back_on_the_same_port() {
    let slack = SlackServer::start(Config::default()).await.unwrap();
    let url = format!("{}/chat.postMessage", slack.api_url());
    let msg = json!({"channel": "#ops", "text": "x"});

    slack.set_mode(Mode::Error500).await.unwrap();
    assert_eq!(
        post(&url, Some("xoxb-sandbox-token"), msg.clone()).await.0,
        500
    );

    slack.set_mode(Mode::RateLimited(7)).await.unwrap();
    let resp = reqwest::Client::new()
        .post(&url)
        .bearer_auth("xoxb-sandbox-token")
        .json(&msg)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");

    slack.set_mode(Mode::Refuse).await.unwrap();
    let err = reqwest::Client::new()
        .post(&url)
        .timeout(Duration::from_secs(5))
        .json(&msg)
        .send()
        .await
        .expect_err("refused");
    assert!(err.is_connect(), "{err:?}");

    slack.set_mode(Mode::Up).await.unwrap();
    assert_eq!(
        post(&url, Some("xoxb-sandbox-token"), msg).await.1["ok"],
        true
    );
    assert_eq!(
        slack.posts().len(),
        1,
        "only the post made while up is recorded"
    );
    slack.shutdown().await;
}

#[tokio::test]
async fn the_incoming_webhook_accepts_its_secret_url_only() {
    let slack = SlackServer::start(Config::default()).await.unwrap();
    let (status, body) = post(&slack.webhook_url(), None, json!({"text": "via hook"})).await;
    assert_eq!((status, body), (200, Value::String("ok".into())));
    let wrong = slack.webhook_url().replace("sandboxwebhooksecret", "nope");
    let (status, body) = post(&wrong, None, json!({"text": "x"})).await;
    assert_eq!((status, body), (404, Value::String("no_service".into())));
    assert_eq!(slack.posts()[0].via, "webhook");
    slack.shutdown().await;
}

#[tokio::test]
async fn replies_record_their_thread_and_chat_update_edits_like_slack() {
    let slack = SlackServer::start(Config::default()).await.unwrap();
    let token = Some("xoxb-sandbox-token");
    let post_url = format!("{}/chat.postMessage", slack.api_url());
    let update_url = format!("{}/chat.update", slack.api_url());
    let (_, first) = post(
        &post_url,
        token,
        json!({"channel": "C0ALERTS", "text": "FIRING"}),
    )
    .await;
    let ts = first["ts"].as_str().unwrap().to_string();
    let (_, reply) = post(
        &post_url,
        token,
        json!({"channel": "C0ALERTS", "text": "RESOLVED", "thread_ts": ts}),
    )
    .await;
    assert_eq!(reply["message"]["thread_ts"], ts.as_str());

    let (status, body) = post(
        &update_url,
        token,
        json!({"channel": "C0ALERTS", "ts": ts, "text": "now RESOLVED", "blocks": [{"type": "divider"}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["ok"], true);
    assert_eq!(body["channel"], "C0ALERTS");
    assert_eq!(body["ts"], ts.as_str());
    assert_eq!(body["text"], "now RESOLVED");
    assert_eq!(body["message"]["text"], "now RESOLVED");

    let (_, body) = post(
        &update_url,
        token,
        json!({"channel": "C0ALERTS", "ts": "1.000000", "text": "x"}),
    )
    .await;
    assert_eq!(body, json!({"ok": false, "error": "message_not_found"}));
    let (_, body) = post(
        &update_url,
        token,
        json!({"channel": "#ops", "ts": ts, "text": "x"}),
    )
    .await;
    assert_eq!(body["error"], "channel_not_found");
    let (_, body) = post(
        &update_url,
        Some("xoxb-wrong"),
        json!({"channel": "C0ALERTS", "ts": ts, "text": "x"}),
    )
    .await;
    assert_eq!(body["error"], "invalid_auth");
    let (_, body) = post(&update_url, token, json!({"channel": "C0ALERTS", "ts": ts})).await;
    assert_eq!(body["error"], "no_text");

    let posts = slack.posts();
    assert_eq!(posts.len(), 2);
    assert_eq!(posts[0].ts, ts);
    assert_eq!(posts[0].thread_ts, None);
    assert_eq!(
        (posts[0].text.as_str(), posts[0].posted_text.as_str()),
        ("now RESOLVED", "FIRING")
    );
    assert_eq!(posts[0].edits, 1);
    assert_eq!(posts[0].blocks[0]["type"], "divider");
    assert_eq!(posts[1].thread_ts.as_deref(), Some(ts.as_str()));
    let updates = slack.updates();
    assert_eq!(updates.len(), 1);
    assert_eq!(
        (updates[0].ts.as_str(), updates[0].text.as_str()),
        (ts.as_str(), "now RESOLVED")
    );
    slack.shutdown().await;
}
