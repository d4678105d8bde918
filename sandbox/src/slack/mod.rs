//! An HTTP stand-in for the Slack Web API methods rollgate uses
//! (`chat.postMessage` with `thread_ts`, `chat.update`, `auth.test`, under
//! `/api/`) and for an incoming
//! webhook (`/services/T0SANDBOX/B0ROLLGATE/<secret>`), reached by
//! slack-morphism through its API URL setting.
//!
//! It answers like Slack: HTTP 200 with `{"ok":true,...}` or
//! `{"ok":false,"error":"invalid_auth"|"not_authed"|"channel_not_found"}`,
//! 429 with `Retry-After` and `ratelimited`, and records every accepted post
//! ([`SlackHandle::posts`], each with its `ts` and the `thread_ts` it
//! replied to, and its content as last updated) and every accepted update
//! ([`SlackHandle::updates`]). `chat.update` answers like Slack:
//! `message_not_found` for an unknown `ts`, `channel_not_found` for another
//! channel, `no_text` without text or blocks, and on success
//! `{"ok":true,"channel","ts","text","message":{..}}`. Switches make it go down ([`Mode::Refuse`]:
//! connections refused and open ones closed; [`Mode::Error500`]) and come
//! back on the same port. It never talks to the real Slack.
//!
//! For approvals from Slack it also speaks Socket Mode ([`socket`]:
//! `apps.connections.open` with the app-level token, a WebSocket on
//! loopback, envelopes that must be acknowledged and are redelivered when
//! they are not) and answers interactions ([`interact`]: `views.open`,
//! `chat.postEphemeral`, `usergroups.users.list`); a test "clicks" a button
//! of a recorded message as a given user ([`SlackHandle::click`]) and
//! submits a modal ([`SlackHandle::submit_view`]).

pub mod interact;
pub mod socket;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

pub use self::interact::{Ephemeral, InteractError, OpenedView, User};
pub use self::socket::Delivery;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The webhook secret path segment the stand-in accepts.
pub const WEBHOOK_SECRET: &str = "sandboxwebhooksecret";

/// How to start the stand-in.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address; `127.0.0.1:0` picks a free port.
    pub listen: SocketAddr,
    /// The bot token accepted (`Authorization: Bearer …`).
    pub token: String,
    /// Channels that exist (IDs or `#names`); any channel when empty.
    pub channels: Vec<String>,
    /// The app-level token `apps.connections.open` accepts (`xapp-…`).
    pub app_token: String,
    /// An envelope not acknowledged this long is delivered again (Slack:
    /// a few seconds).
    pub ack_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: "xoxb-sandbox-token".into(),
            channels: vec!["C0ALERTS".into(), "#ops".into()],
            app_token: "xapp-1-A0SANDBOX-1-sandbox-app-token".into(),
            ack_timeout: Duration::from_secs(3),
        }
    }
}

/// How the stand-in behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answers like Slack.
    Up,
    /// Refuses connections and closes open ones.
    Refuse,
    /// Answers HTTP 500 to everything.
    Error500,
    /// Answers HTTP 429 `ratelimited` with this `Retry-After` (seconds).
    RateLimited(u64),
}

/// One accepted message.
#[derive(Debug, Clone, PartialEq)]
pub struct Post {
    /// `api` (chat.postMessage) or `webhook`.
    pub via: &'static str,
    /// Channel (API posts only).
    pub channel: String,
    /// The plain-text `text` (as last updated).
    pub text: String,
    /// The `text` as first posted, before any update.
    pub posted_text: String,
    /// The `blocks` array as sent (as last updated).
    pub blocks: Value,
    /// The message's `ts` (API posts only).
    pub ts: String,
    /// The `thread_ts` it was posted with: the thread it replies to.
    pub thread_ts: Option<String>,
    /// How many times `chat.update` changed it.
    pub edits: u32,
}

/// One accepted `chat.update`.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// Channel.
    pub channel: String,
    /// The `ts` of the message updated.
    pub ts: String,
    /// The new `text`.
    pub text: String,
    /// The new `blocks`.
    pub blocks: Value,
}

#[derive(Debug)]
struct Shared {
    config: Config,
    mode: Mode,
    posts: Vec<Post>,
    updates: Vec<Update>,
    /// Requests seen in any mode (for tests that count attempts).
    requests: u64,
    seq: u64,
    /// Socket Mode connections and envelopes.
    socket: socket::SocketState,
    /// Triggers, modals, ephemeral messages, user groups.
    interact: interact::InteractState,
}

/// Entry point: see [`SlackServer::start`].
#[derive(Debug)]
pub struct SlackServer;

/// A running stand-in.
#[derive(Debug)]
pub struct SlackHandle {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    /// Cancelled to stop everything.
    cancel: CancellationToken,
    /// Cancelled to close the current listener and its connections.
    serving: Mutex<CancellationToken>,
    tracker: TaskTracker,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SlackServer {
    /// Binds and starts serving.
    pub async fn start(config: Config) -> std::io::Result<SlackHandle> {
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let handle = SlackHandle {
            addr,
            shared: Arc::new(Mutex::new(Shared {
                config,
                mode: Mode::Up,
                posts: Vec::new(),
                updates: Vec::new(),
                requests: 0,
                seq: 0,
                socket: Default::default(),
                interact: Default::default(),
            })),
            cancel: CancellationToken::new(),
            serving: Mutex::new(CancellationToken::new()),
            tracker: TaskTracker::new(),
        };
        socket::start(
            handle.shared.clone(),
            handle.cancel.clone(),
            &handle.tracker,
        )
        .await?;
        handle.serve(listener);
        Ok(handle)
    }
}

impl SlackHandle {
    /// `http://127.0.0.1:PORT/api`, for slack-morphism's API URL.
    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// The incoming-webhook URL the stand-in accepts.
    pub fn webhook_url(&self) -> String {
        format!(
            "http://{}/services/T0SANDBOX/B0ROLLGATE/{WEBHOOK_SECRET}",
            self.addr
        )
    }

    /// The listen address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every accepted post so far.
    pub fn posts(&self) -> Vec<Post> {
        lock(&self.shared).posts.clone()
    }

    /// Every accepted `chat.update`, in order.
    pub fn updates(&self) -> Vec<Update> {
        lock(&self.shared).updates.clone()
    }

    /// `user` clicks the button `action_id` of the message `ts`: its
    /// `block_actions` envelope is delivered over Socket Mode (now, or when
    /// a connection opens). Answers the envelope ID; refused when the
    /// message (as last updated) has no such button.
    pub fn click(&self, user: &User, ts: &str, action_id: &str) -> Result<String, InteractError> {
        interact::click(&self.shared, user, ts, action_id)
    }

    /// `user` submits the modal `view_id` with `values`: `(block_id,
    /// action_id, text)` of its text inputs. Answers the envelope ID.
    pub fn submit_view(
        &self,
        view_id: &str,
        user: &User,
        values: &[(&str, &str, &str)],
    ) -> Result<String, InteractError> {
        interact::submit(&self.shared, view_id, user, values)
    }

    /// Delivers envelope `id` again, as Slack does when it did not get the
    /// acknowledgement. False when no connection is open.
    pub fn redeliver(&self, envelope_id: &str) -> bool {
        lock(&self.shared).socket.redeliver(envelope_id)
    }

    /// Drops every Socket Mode connection, as a network failure would.
    /// Answers how many were open.
    pub fn drop_sockets(&self) -> usize {
        lock(&self.shared).socket.drop_all()
    }

    /// Sends every Socket Mode client Slack's `disconnect` envelope
    /// (`refresh_requested`): a client should open a new connection.
    pub fn refresh_sockets(&self) -> usize {
        lock(&self.shared).socket.refresh_all()
    }

    /// Stalls every Socket Mode connection: the TCP connection stays open
    /// but nothing more is read or sent, not even a pong, as when the path
    /// to Slack dies silently. Answers how many there were.
    pub fn stall_sockets(&self) -> usize {
        lock(&self.shared).socket.stall_all()
    }

    /// Socket Mode connections open now.
    pub fn socket_connections(&self) -> usize {
        lock(&self.shared).socket.connections()
    }

    /// Socket Mode connections ever opened.
    pub fn sockets_opened(&self) -> u64 {
        lock(&self.shared).socket.opened()
    }

    /// Every envelope delivery, in order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.shared).socket.deliveries()
    }

    /// Acknowledgements received (envelope IDs, repeats included), in order.
    pub fn acks(&self) -> Vec<String> {
        lock(&self.shared).socket.acks()
    }

    /// Ephemeral messages posted.
    pub fn ephemerals(&self) -> Vec<Ephemeral> {
        lock(&self.shared).interact.ephemerals.clone()
    }

    /// Modals opened.
    pub fn views(&self) -> Vec<OpenedView> {
        lock(&self.shared).interact.views.clone()
    }

    /// Defines user group `id` (`S…`) with these members.
    pub fn set_usergroup(&self, id: &str, users: &[&str]) {
        lock(&self.shared)
            .interact
            .usergroups
            .insert(id.into(), users.iter().map(|u| (*u).to_string()).collect());
    }

    /// Waits until `check` holds or `timeout` passed; answers whether it held.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        check: impl Fn(&SlackHandle) -> bool,
    ) -> bool {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            if check(self) {
                return true;
            }
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Requests that reached a handler, accepted or not.
    pub fn requests(&self) -> u64 {
        lock(&self.shared).requests
    }

    /// Waits until at least `n` posts arrived or `timeout` passed.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Post> {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            let p = self.posts();
            if p.len() >= n || tokio::time::Instant::now() >= until {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Switches the behaviour. Leaving [`Mode::Refuse`] binds the same
    /// port again.
    pub async fn set_mode(&self, mode: Mode) -> std::io::Result<()> {
        let before = std::mem::replace(&mut lock(&self.shared).mode, mode);
        if mode == Mode::Refuse && before != Mode::Refuse {
            lock(&self.serving).cancel();
            // Slack gone: its Socket Mode connections go too.
            lock(&self.shared).socket.drop_all();
        }
        if before == Mode::Refuse && mode != Mode::Refuse {
            let mut last = None;
            for _ in 0..50 {
                match TcpListener::bind(self.addr).await {
                    Ok(l) => {
                        *lock(&self.serving) = CancellationToken::new();
                        self.serve(l);
                        return Ok(());
                    }
                    Err(e) => last = Some(e),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            return Err(last.unwrap_or_else(|| std::io::Error::other("cannot bind again")));
        }
        Ok(())
    }

    /// Stops serving and waits for every connection to close.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        lock(&self.serving).cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    fn serve(&self, listener: TcpListener) {
        let serving = lock(&self.serving).clone();
        let (cancel, tracker) = (self.cancel.clone(), self.tracker.clone());
        let app = axum::Router::new()
            .route("/api/chat.postMessage", post(post_message))
            .route("/api/chat.update", post(update_message))
            .route("/api/auth.test", any(auth_test))
            .route("/api/apps.connections.open", post(socket::connections_open))
            .route("/api/views.open", post(interact::views_open))
            .route("/api/chat.postEphemeral", post(interact::post_ephemeral))
            .route("/api/usergroups.users.list", any(interact::usergroup_users))
            .route("/services/{*path}", post(webhook))
            .with_state(self.shared.clone());
        self.tracker.spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = serving.cancelled() => return,
                    r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
                };
                let (app, cancel, serving) = (app.clone(), cancel.clone(), serving.clone());
                tracker.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        tower::ServiceExt::oneshot(app.clone(), req)
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = serving.cancelled() => {}
                        _ = conn => {}
                    }
                });
            }
        });
    }
}

/// What every Web API method with a JSON body checks first, in Slack's
/// order: the stand-in's mode (an outage answers before anything else),
/// the bot token, then the body. `Ok` is the parsed body.
fn admit(shared: &Mutex<Shared>, headers: &HeaderMap, body: &[u8]) -> Result<Value, Box<Response>> {
    if let Some(r) = outage(shared) {
        return Err(Box::new(r));
    }
    if let Some(code) = auth_error(shared, headers) {
        return Err(Box::new(slack_error(code)));
    }
    serde_json::from_slice::<Value>(body).map_err(|_| Box::new(slack_error("invalid_json")))
}

/// The mode's answer, when it is not `Up`.
fn outage(shared: &Mutex<Shared>) -> Option<Response> {
    let mut s = lock(shared);
    s.requests += 1;
    match s.mode {
        Mode::Up | Mode::Refuse => None,
        Mode::Error500 => {
            Some((StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response())
        }
        Mode::RateLimited(secs) => Some(
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, secs.to_string())],
                Json(json!({"ok": false, "error": "ratelimited"})),
            )
                .into_response(),
        ),
    }
}

fn auth_error(shared: &Mutex<Shared>, headers: &HeaderMap) -> Option<&'static str> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token {
        None => Some("not_authed"),
        Some(t) if t != lock(shared).config.token => Some("invalid_auth"),
        Some(_) => None,
    }
}

fn slack_error(code: &str) -> Response {
    Json(json!({"ok": false, "error": code})).into_response()
}

async fn post_message(
    State(shared): State<Arc<Mutex<Shared>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let req = match admit(&shared, &headers, &body) {
        Ok(req) => req,
        Err(r) => return *r,
    };
    let channel = req["channel"].as_str().unwrap_or("").to_string();
    let mut s = lock(&shared);
    if channel.is_empty()
        || (!s.config.channels.is_empty() && !s.config.channels.contains(&channel))
    {
        return slack_error("channel_not_found");
    }
    let text = req["text"].as_str().unwrap_or("").to_string();
    if text.is_empty() && req["blocks"].is_null() {
        return slack_error("no_text");
    }
    s.seq += 1;
    let ts = format!("1700000000.{:06}", s.seq);
    let thread_ts = req["thread_ts"].as_str().map(str::to_string);
    s.posts.push(Post {
        via: "api",
        channel: channel.clone(),
        text: text.clone(),
        posted_text: text.clone(),
        blocks: req["blocks"].clone(),
        ts: ts.clone(),
        thread_ts: thread_ts.clone(),
        edits: 0,
    });
    let mut message = json!({"type": "message", "text": text, "ts": ts, "bot_id": "B0ROLLGATE"});
    if let Some(t) = thread_ts {
        message["thread_ts"] = json!(t);
    }
    Json(json!({
        "ok": true,
        "channel": channel,
        "ts": ts,
        "message": message,
    }))
    .into_response()
}

async fn update_message(
    State(shared): State<Arc<Mutex<Shared>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let req = match admit(&shared, &headers, &body) {
        Ok(req) => req,
        Err(r) => return *r,
    };
    let channel = req["channel"].as_str().unwrap_or("").to_string();
    let ts = req["ts"].as_str().unwrap_or("").to_string();
    let text = req["text"].as_str().unwrap_or("").to_string();
    if text.is_empty() && req["blocks"].is_null() {
        return slack_error("no_text");
    }
    let mut s = lock(&shared);
    let Some(post) = s.posts.iter_mut().find(|p| p.via == "api" && p.ts == ts) else {
        return slack_error("message_not_found");
    };
    if post.channel != channel {
        return slack_error("channel_not_found");
    }
    post.text = text.clone();
    if !req["blocks"].is_null() {
        post.blocks = req["blocks"].clone();
    }
    post.edits += 1;
    let mut message = json!({"type": "message", "text": text, "ts": ts, "bot_id": "B0ROLLGATE"});
    if let Some(t) = &post.thread_ts {
        message["thread_ts"] = json!(t);
    }
    let blocks = post.blocks.clone();
    s.updates.push(Update {
        channel: channel.clone(),
        ts: ts.clone(),
        text: text.clone(),
        blocks,
    });
    Json(json!({
        "ok": true,
        "channel": channel,
        "ts": ts,
        "text": text,
        "message": message,
    }))
    .into_response()
}

async fn auth_test(State(shared): State<Arc<Mutex<Shared>>>, headers: HeaderMap) -> Response {
    if let Some(r) = outage(&shared) {
        return r;
    }
    if let Some(code) = auth_error(&shared, &headers) {
        return slack_error(code);
    }
    Json(json!({
        "ok": true,
        "url": "https://sandbox.slack.invalid/",
        "team": "sandbox",
        "user": "rollgate",
        "team_id": "T0SANDBOX",
        "user_id": "U0ROLLGATE",
        "bot_id": "B0ROLLGATE",
    }))
    .into_response()
}

async fn webhook(
    State(shared): State<Arc<Mutex<Shared>>>,
    Path(path): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = outage(&shared) {
        return r;
    }
    if path != format!("T0SANDBOX/B0ROLLGATE/{WEBHOOK_SECRET}") {
        return (StatusCode::NOT_FOUND, "no_service").into_response();
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "invalid_payload").into_response();
    };
    let text = req["text"].as_str().unwrap_or("").to_string();
    lock(&shared).posts.push(Post {
        via: "webhook",
        channel: String::new(),
        posted_text: text.clone(),
        text,
        blocks: req["blocks"].clone(),
        ts: String::new(),
        thread_ts: None,
        edits: 0,
    });
    (StatusCode::OK, "ok").into_response()
}
