//! Interactivity: the payloads a user's click or a modal's submission
//! produce (`block_actions`, `view_submission`, as Slack documents them),
//! and the Web API methods an app answers them with: `views.open` (needs
//! the interaction's `trigger_id`, usable once), `chat.postEphemeral`
//! (recorded as [`Ephemeral`]s) and `usergroups.users.list`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::socket::APP_ID;
use super::{Shared, admit, auth_error, lock, outage, slack_error};

/// A user of the sandbox workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// `U…`.
    pub id: String,
    /// Their user name.
    pub name: String,
}

impl User {
    /// A user with this ID and name.
    pub fn new(id: &str, name: &str) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
        }
    }
}

/// A message only one user saw (`chat.postEphemeral`).
#[derive(Debug, Clone, PartialEq)]
pub struct Ephemeral {
    /// Channel.
    pub channel: String,
    /// The user it was shown to.
    pub user: String,
    /// Its text.
    pub text: String,
}

/// A modal opened with `views.open`.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenedView {
    /// `V…`.
    pub id: String,
    /// The trigger it was opened with.
    pub trigger_id: String,
    /// Who it was opened for.
    pub user: User,
    /// The view as sent.
    pub view: Value,
}

/// Why a click or a submission could not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InteractError {
    /// No API message with this `ts`.
    #[error("no message with ts {0}")]
    NoMessage(String),
    /// The message has no button with this `action_id` (now).
    #[error("message {ts} has no button {action_id}")]
    NoButton {
        /// The message.
        ts: String,
        /// The button looked for.
        action_id: String,
    },
    /// No view opened with this ID.
    #[error("no view {0}")]
    NoView(String),
}

#[derive(Debug, Default)]
pub(super) struct InteractState {
    /// Trigger IDs handed out, with the user they belong to; removed when used.
    triggers: BTreeMap<String, User>,
    pub(super) ephemerals: Vec<Ephemeral>,
    pub(super) views: Vec<OpenedView>,
    pub(super) usergroups: BTreeMap<String, Vec<String>>,
}

fn user_json(user: &User) -> Value {
    json!({"id": user.id, "username": user.name, "name": user.name, "team_id": "T0SANDBOX"})
}

/// Builds the `block_actions` payload of `user` clicking button `action_id`
/// on message `ts`, and queues its envelope. Answers the envelope ID.
pub(super) fn click(
    shared: &Mutex<Shared>,
    user: &User,
    ts: &str,
    action_id: &str,
) -> Result<String, InteractError> {
    let mut s = lock(shared);
    let post = s
        .posts
        .iter()
        .find(|p| p.via == "api" && p.ts == ts)
        .cloned()
        .ok_or_else(|| InteractError::NoMessage(ts.into()))?;
    let button = post
        .blocks
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| {
            b["elements"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |e| (b["block_id"].clone(), e))
        })
        .find(|(_, e)| e["type"] == "button" && e["action_id"] == action_id)
        .ok_or_else(|| InteractError::NoButton {
            ts: ts.into(),
            action_id: action_id.into(),
        })?;
    let trigger = s.socket.next_id("13345224609.738474920.");
    let trigger = format!("{trigger}8d5b3f7a2c");
    s.interact.triggers.insert(trigger.clone(), user.clone());
    let (block_id, element) = button;
    s.seq += 1;
    let action_ts = format!("1700001000.{:06}", s.seq);
    let mut message = json!({
        "type": "message",
        "user": "U0ROLLGATE",
        "bot_id": "B0ROLLGATE",
        "ts": post.ts,
        "text": post.text,
        "blocks": post.blocks,
    });
    if let Some(t) = &post.thread_ts {
        message["thread_ts"] = json!(t);
    }
    let payload = json!({
        "type": "block_actions",
        "user": user_json(user),
        "api_app_id": APP_ID,
        "token": "sandboxverificationtoken",
        "container": {
            "type": "message",
            "message_ts": post.ts,
            "channel_id": post.channel,
            "is_ephemeral": false,
        },
        "trigger_id": trigger,
        "team": {"id": "T0SANDBOX", "domain": "sandbox"},
        "enterprise": null,
        "is_enterprise_install": false,
        "channel": {"id": post.channel, "name": post.channel.trim_start_matches('#')},
        "message": message,
        "state": {"values": {}},
        "response_url": "https://hooks.slack.invalid/actions/T0SANDBOX/1/sandbox",
        "actions": [{
            "type": "button",
            "action_id": element["action_id"],
            "block_id": block_id,
            "text": element["text"],
            "value": element["value"],
            "style": element["style"],
            "action_ts": action_ts,
        }],
    });
    Ok(s.socket.enqueue(payload, false))
}

/// Builds the `view_submission` payload of `user` submitting view
/// `view_id` with `values` (`(block_id, action_id, text)` of its
/// `plain_text_input`s), and queues its envelope.
pub(super) fn submit(
    shared: &Mutex<Shared>,
    view_id: &str,
    user: &User,
    values: &[(&str, &str, &str)],
) -> Result<String, InteractError> {
    let mut s = lock(shared);
    let opened = s
        .interact
        .views
        .iter()
        .find(|v| v.id == view_id)
        .cloned()
        .ok_or_else(|| InteractError::NoView(view_id.into()))?;
    let mut state = serde_json::Map::new();
    for (block, action, text) in values {
        let entry = state.entry(block.to_string()).or_insert_with(|| json!({}));
        entry[*action] = json!({"type": "plain_text_input", "value": text});
    }
    let mut view = opened.view.clone();
    view["id"] = json!(opened.id);
    view["team_id"] = json!("T0SANDBOX");
    view["app_id"] = json!(APP_ID);
    view["bot_id"] = json!("B0ROLLGATE");
    view["hash"] = json!("1700002000.sandbox");
    view["state"] = json!({"values": state});
    let trigger = s.socket.next_id("13345224610.738474920.");
    let payload = json!({
        "type": "view_submission",
        "team": {"id": "T0SANDBOX", "domain": "sandbox"},
        "user": user_json(user),
        "api_app_id": APP_ID,
        "token": "sandboxverificationtoken",
        "trigger_id": trigger,
        "view": view,
        "response_urls": [],
        "is_enterprise_install": false,
    });
    Ok(s.socket.enqueue(payload, true))
}

/// `views.open`: a modal for the user of a (once usable) `trigger_id`.
pub(super) async fn views_open(
    State(shared): State<Arc<Mutex<Shared>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let req = match admit(&shared, &headers, &body) {
        Ok(req) => req,
        Err(r) => return *r,
    };
    let trigger = req["trigger_id"].as_str().unwrap_or("").to_string();
    if req["view"]["type"] != "modal" {
        return slack_error("invalid_arguments");
    }
    let mut s = lock(&shared);
    let Some(user) = s.interact.triggers.remove(&trigger) else {
        return slack_error("invalid_trigger_id");
    };
    let id = s.socket.next_id("V0SANDBOX");
    s.interact.views.push(OpenedView {
        id: id.clone(),
        trigger_id: trigger,
        user,
        view: req["view"].clone(),
    });
    let mut view = req["view"].clone();
    view["id"] = json!(id);
    view["team_id"] = json!("T0SANDBOX");
    view["app_id"] = json!(APP_ID);
    view["bot_id"] = json!("B0ROLLGATE");
    view["state"] = json!({"values": {}});
    view["hash"] = json!("1700002000.sandbox");
    Json(json!({"ok": true, "view": view})).into_response()
}

/// `chat.postEphemeral`.
pub(super) async fn post_ephemeral(
    State(shared): State<Arc<Mutex<Shared>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let req = match admit(&shared, &headers, &body) {
        Ok(req) => req,
        Err(r) => return *r,
    };
    let channel = req["channel"].as_str().unwrap_or("").to_string();
    let user = req["user"].as_str().unwrap_or("").to_string();
    let text = req["text"].as_str().unwrap_or("").to_string();
    let mut s = lock(&shared);
    if channel.is_empty()
        || (!s.config.channels.is_empty() && !s.config.channels.contains(&channel))
    {
        return slack_error("channel_not_found");
    }
    if user.is_empty() {
        return slack_error("user_not_in_channel");
    }
    if text.is_empty() && req["blocks"].is_null() {
        return slack_error("no_text");
    }
    s.seq += 1;
    let ts = format!("1700000500.{:06}", s.seq);
    s.interact.ephemerals.push(Ephemeral {
        channel,
        user,
        text,
    });
    Json(json!({"ok": true, "message_ts": ts})).into_response()
}

/// `usergroups.users.list?usergroup=S…`.
pub(super) async fn usergroup_users(
    State(shared): State<Arc<Mutex<Shared>>>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if let Some(r) = outage(&shared) {
        return r;
    }
    if let Some(code) = auth_error(&shared, &headers) {
        return slack_error(code);
    }
    let group = q.get("usergroup").cloned().unwrap_or_default();
    match lock(&shared).interact.usergroups.get(&group) {
        Some(users) => Json(json!({"ok": true, "users": users})).into_response(),
        None => slack_error("no_such_subteam"),
    }
}
