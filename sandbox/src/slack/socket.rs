//! Socket Mode: `apps.connections.open` and the WebSocket it hands out.
//!
//! As Slack documents it: `apps.connections.open` takes the app-level token
//! (`xapp-…`, `Authorization: Bearer`) and answers a one-time WebSocket URL
//! (here `ws://127.0.0.1:PORT/link/?ticket=…&app_id=…`). On connecting the
//! client receives `{"type":"hello",…}`; each interaction then arrives as an
//! envelope `{"envelope_id","type":"interactive","payload",
//! "accepts_response_payload","retry_attempt","retry_reason"}` that the
//! client must acknowledge by sending `{"envelope_id": …}` back. An envelope
//! not acknowledged within the acknowledgement timeout is delivered again
//! with `retry_attempt` one higher and `retry_reason: "timeout"` (at most
//! three retries), also on a connection opened later.
//!
//! Tests steer it through [`super::SlackHandle`]: drop every connection,
//! stall them (open but silent, not even a pong), ask the clients to
//! reconnect (`{"type":"disconnect","reason":"refresh_requested"}`), deliver
//! an envelope again although it was acknowledged (an ack lost on the way),
//! and count connections, deliveries and acknowledgements.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{
    ErrorResponse, Request, Response as WsResponse,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Shared, lock, outage, slack_error};

/// The app ID in the URLs and payloads.
pub const APP_ID: &str = "A0SANDBOX";

/// How many times an unacknowledged envelope is delivered again.
const MAX_RETRIES: u32 = 3;

/// One delivery of an envelope, as the tests see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The envelope.
    pub envelope_id: String,
    /// `retry_attempt` it carried (0: the first delivery).
    pub retry_attempt: u32,
    /// The connection it went to.
    pub connection: u64,
}

#[derive(Debug)]
struct Envelope {
    /// `interactive`.
    kind: &'static str,
    payload: Value,
    accepts_response_payload: bool,
    /// Deliveries so far.
    attempts: u32,
    /// When it was last sent; `None`: not sent yet (no connection).
    sent_at: Option<tokio::time::Instant>,
    acked: bool,
}

#[derive(Debug)]
struct Connection {
    id: u64,
    tx: mpsc::UnboundedSender<Message>,
    drop: CancellationToken,
    /// Cancelled to stop reading and writing while keeping the TCP
    /// connection open (a half-open connection: no pongs, no envelopes).
    stall: CancellationToken,
}

/// Socket Mode's part of the stand-in's state.
#[derive(Debug, Default)]
pub(super) struct SocketState {
    /// Tickets handed out and not used yet.
    tickets: Vec<String>,
    connections: Vec<Connection>,
    /// Connections ever opened.
    opened: u64,
    envelopes: BTreeMap<String, Envelope>,
    /// Envelope IDs in order of creation.
    order: Vec<String>,
    deliveries: Vec<Delivery>,
    /// Acknowledgements received, in order (repeats included).
    acks: Vec<String>,
    seq: u64,
    /// Where the WebSocket listener is.
    ws_addr: Option<SocketAddr>,
}

impl SocketState {
    pub(super) fn next_id(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("{prefix}{:08}", self.seq)
    }

    /// Queues an envelope and sends it on a connection if there is one.
    pub(super) fn enqueue(&mut self, payload: Value, accepts_response_payload: bool) -> String {
        self.seq += 1;
        let id = format!("5a4d{:04x}-0000-4000-8000-{:012x}", self.seq, self.seq);
        self.envelopes.insert(
            id.clone(),
            Envelope {
                kind: "interactive",
                payload,
                accepts_response_payload,
                attempts: 0,
                sent_at: None,
                acked: false,
            },
        );
        self.order.push(id.clone());
        self.send(&id, "");
        id
    }

    /// Sends envelope `id` on the first open connection (round robin is not
    /// needed: Slack picks any).
    fn send(&mut self, id: &str, reason: &str) -> bool {
        let Some(conn) = self.connections.iter().find(|c| !c.tx.is_closed()) else {
            return false;
        };
        let Some(env) = self.envelopes.get_mut(id) else {
            return false;
        };
        let frame = json!({
            "envelope_id": id,
            "type": env.kind,
            "payload": env.payload,
            "accepts_response_payload": env.accepts_response_payload,
            "retry_attempt": env.attempts,
            "retry_reason": if env.attempts == 0 { "" } else { reason },
        });
        if conn
            .tx
            .send(Message::Text(frame.to_string().into()))
            .is_err()
        {
            return false;
        }
        self.deliveries.push(Delivery {
            envelope_id: id.to_string(),
            retry_attempt: env.attempts,
            connection: conn.id,
        });
        env.attempts += 1;
        env.sent_at = Some(tokio::time::Instant::now());
        true
    }

    /// Sends what is due: never sent, or unacknowledged past `timeout`.
    fn resend_due(&mut self, timeout: Duration) {
        let now = tokio::time::Instant::now();
        let due: Vec<String> = self
            .order
            .iter()
            .filter(|id| {
                self.envelopes.get(*id).is_some_and(|e| {
                    !e.acked
                        && e.attempts <= MAX_RETRIES
                        && e.sent_at.is_none_or(|t| now.duration_since(t) >= timeout)
                })
            })
            .cloned()
            .collect();
        for id in due {
            self.send(&id, "timeout");
        }
    }

    pub(super) fn connections(&self) -> usize {
        self.connections
            .iter()
            .filter(|c| !c.tx.is_closed())
            .count()
    }

    pub(super) fn opened(&self) -> u64 {
        self.opened
    }

    pub(super) fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.clone()
    }

    pub(super) fn acks(&self) -> Vec<String> {
        self.acks.clone()
    }

    /// Delivers `id` again although it may have been acknowledged (an
    /// acknowledgement Slack did not receive).
    pub(super) fn redeliver(&mut self, id: &str) -> bool {
        self.send(id, "timeout")
    }

    /// Asks every client to reconnect, as Slack does before it refreshes a
    /// connection: `{"type":"disconnect","reason":"refresh_requested"}`.
    /// The connection stays open until the client closes it.
    pub(super) fn refresh_all(&self) -> usize {
        let frame = json!({
            "type": "disconnect",
            "reason": "refresh_requested",
            "debug_info": {"host": "sandbox-slack"},
        })
        .to_string();
        self.connections
            .iter()
            .filter(|c| c.tx.send(Message::Text(frame.clone().into())).is_ok())
            .count()
    }

    /// Stalls every connection: kept open, but nothing is read or sent any
    /// more, not even a pong (a network path that died silently).
    pub(super) fn stall_all(&mut self) -> usize {
        let n = self.connections.len();
        for c in self.connections.drain(..) {
            c.stall.cancel();
        }
        n
    }

    /// Drops every connection without a close frame (a network failure).
    pub(super) fn drop_all(&mut self) -> usize {
        let n = self.connections.len();
        for c in self.connections.drain(..) {
            c.drop.cancel();
        }
        n
    }
}

/// Starts the WebSocket listener and the redelivery ticker.
pub(super) async fn start(
    shared: Arc<Mutex<Shared>>,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> std::io::Result<SocketAddr> {
    let listen = SocketAddr::new(lock(&shared).config.listen.ip(), 0);
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    lock(&shared).socket.ws_addr = Some(addr);
    let (s, c, t) = (shared.clone(), cancel.clone(), tracker.clone());
    tracker.spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = c.cancelled() => return,
                r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
            };
            t.spawn(connection(stream, s.clone(), c.clone()));
        }
    });
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let mut s = lock(&shared);
            let timeout = s.config.ack_timeout;
            s.socket.resend_due(timeout);
        }
    });
    Ok(addr)
}

/// One WebSocket client.
// The handshake callback's error type is tungstenite's.
#[allow(clippy::result_large_err)]
async fn connection(stream: TcpStream, shared: Arc<Mutex<Shared>>, cancel: CancellationToken) {
    let check = shared.clone();
    let callback = move |req: &Request, resp: WsResponse| -> Result<WsResponse, ErrorResponse> {
        let ticket = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("ticket="))
            .unwrap_or("")
            .to_string();
        let mut s = lock(&check);
        match s.socket.tickets.iter().position(|t| *t == ticket) {
            Some(i) if req.uri().path() == "/link/" => {
                s.socket.tickets.remove(i);
                Ok(resp)
            }
            _ => {
                let mut r = ErrorResponse::new(Some("invalid or used ticket".into()));
                *r.status_mut() = axum::http::StatusCode::UNAUTHORIZED;
                Err(r)
            }
        }
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let (mut sink, mut frames) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let drop = cancel.child_token();
    let stall = CancellationToken::new();
    let id = {
        let mut s = lock(&shared);
        s.socket.opened += 1;
        let id = s.socket.opened;
        let hello = json!({
            "type": "hello",
            "num_connections": s.socket.connections() + 1,
            "debug_info": {"host": "sandbox-slack", "build_number": 1, "approximate_connection_time": 18060},
            "connection_info": {"app_id": APP_ID},
        });
        let _ = tx.send(Message::Text(hello.to_string().into()));
        s.socket.connections.push(Connection {
            id,
            tx,
            drop: drop.clone(),
            stall: stall.clone(),
        });
        // What waits (never sent, or unacknowledged) goes out now.
        s.socket.resend_due(Duration::ZERO);
        id
    };
    loop {
        // Biased: a stall removes the connection from the list, which
        // closes `rx` at the same moment; the stall must win, or the socket
        // would be closed instead of held silent.
        tokio::select! {
            biased;
            _ = drop.cancelled() => break,
            _ = stall.cancelled() => {
                // Hold the connection open, silent, until dropped.
                lock(&shared).socket.connections.retain(|c| c.id != id);
                drop.cancelled().await;
                return;
            }
            out = rx.recv() => match out {
                Some(m) => if sink.send(m).await.is_err() { break },
                None => break,
            },
            frame = frames.next() => match frame {
                Some(Ok(Message::Text(t))) => acknowledge(&shared, t.as_str()),
                Some(Ok(Message::Ping(p))) => { let _ = sink.send(Message::Pong(p)).await; }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    lock(&shared).socket.connections.retain(|c| c.id != id);
}

fn acknowledge(shared: &Mutex<Shared>, text: &str) {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let Some(id) = v["envelope_id"].as_str() else {
        return;
    };
    let mut s = lock(shared);
    s.socket.acks.push(id.to_string());
    if let Some(e) = s.socket.envelopes.get_mut(id) {
        e.acked = true;
    }
}

/// `apps.connections.open`: app-level token only.
pub(super) async fn connections_open(
    State(shared): State<Arc<Mutex<Shared>>>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = outage(&shared) {
        return r;
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let mut s = lock(&shared);
    match token {
        None => return slack_error("not_authed"),
        Some(t) if t == s.config.token => return slack_error("not_allowed_token_type"),
        Some(t) if t != s.config.app_token => return slack_error("invalid_auth"),
        Some(_) => {}
    }
    let Some(addr) = s.socket.ws_addr else {
        return slack_error("internal_error");
    };
    let ticket = s.socket.next_id("sandbox-ticket-");
    s.socket.tickets.push(ticket.clone());
    Json(json!({
        "ok": true,
        "url": format!("ws://{addr}/link/?ticket={ticket}&app_id={APP_ID}"),
    }))
    .into_response()
}
