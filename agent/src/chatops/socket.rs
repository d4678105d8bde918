//! The Socket Mode connection: opened with `apps.connections.open`, kept
//! open, opened again with back-off ([`crate::backoff`]) when it drops or
//! Slack asks (`disconnect`).
//!
//! Every envelope is acknowledged (`{"envelope_id": …}`) the moment it
//! arrives, before anything is decided: Slack waits only a few seconds and
//! delivers an unacknowledged envelope again. What an envelope asks is
//! handed to the caller's channel; the same envelope delivered twice is
//! handed over twice, and what it asks must be safe to do twice (a decision
//! is a check-and-set, see [`super::answer`]).
//!
//! slack-morphism's API client opens the connection; the WebSocket itself is
//! tokio-tungstenite (the version slack-morphism's own listener uses),
//! driven here so that acknowledging comes first, reconnecting follows the
//! crate's back-off, and the task is cancelled and awaited with the
//! leader's round. Never logged: the tokens, and the WebSocket URL (its
//! ticket opens a connection).

use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::ChatopsError;
use super::api::SlackApi;

/// The connection's pacing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// First wait before opening it again; doubles per failure in a row.
    pub reconnect_min: Duration,
    /// Longest wait before opening it again.
    pub reconnect_max: Duration,
    /// How often the client pings Slack.
    pub ping_every: Duration,
    /// A connection that sent nothing (not even a pong) this long is
    /// dropped and opened again: a half-open TCP connection never says it
    /// closed.
    pub silent_after: Duration,
}

impl Timing {
    /// `reconnect_min` and `reconnect_max` as configured; pings every 20s,
    /// silent after 65s.
    pub fn new(reconnect_min: Duration, reconnect_max: Duration) -> Self {
        Self {
            reconnect_min,
            reconnect_max,
            ping_every: Duration::from_secs(20),
            silent_after: Duration::from_secs(65),
        }
    }
}

/// One interactive envelope, acknowledged already.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// Slack's envelope ID.
    pub id: String,
    /// How many times Slack delivered it before (`retry_attempt`).
    pub retry_attempt: u64,
    /// Its payload.
    pub payload: Value,
}

/// How one connection ended.
enum Ended {
    /// Cancelled: stop.
    Cancelled,
    /// Dropped or refreshed after saying `hello`: reconnect at once.
    AfterHello,
}

/// Keeps a connection open until `cancel`, sending every interactive
/// envelope to `out`.
pub async fn run(
    api: &SlackApi,
    out: mpsc::Sender<Envelope>,
    timing: Timing,
    cancel: &CancellationToken,
) {
    let mut failures = 0u32;
    loop {
        match connect_once(api, &out, &timing, cancel).await {
            Ok(Ended::Cancelled) => return,
            Ok(Ended::AfterHello) => {
                // It worked until now: start the back-off over, but still
                // wait a little, so a connection that keeps dropping right
                // after `hello` does not make us hammer Slack.
                failures = 1;
                tracing::info!("Slack Socket Mode connection closed; opening another.");
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, failures, "Cannot keep the Slack Socket Mode connection; retrying.");
            }
        }
        let pause = crate::backoff::delay(failures, timing.reconnect_min, timing.reconnect_max);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

async fn connect_once(
    api: &SlackApi,
    out: &mpsc::Sender<Envelope>,
    timing: &Timing,
    cancel: &CancellationToken,
) -> Result<Ended, ChatopsError> {
    let url = tokio::select! {
        _ = cancel.cancelled() => return Ok(Ended::Cancelled),
        u = api.open_connection() => u?,
    };
    let (mut ws, _) = tokio::select! {
        _ = cancel.cancelled() => return Ok(Ended::Cancelled),
        c = tokio_tungstenite::connect_async(url.as_str()) => c.map_err(|e| ChatopsError::Socket(strip_url(&e.to_string(), &url)))?,
    };
    let mut hello = false;
    let mut ping = tokio::time::interval(timing.ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard = tokio::time::Instant::now();
    loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => {
                let _ = ws.close(None).await;
                return Ok(Ended::Cancelled);
            }
            _ = ping.tick() => {
                // A connection that went silent (no frame, not even our
                // pings' pongs) is dead without having said so.
                if heard.elapsed() > timing.silent_after {
                    tracing::warn!(silent_for = ?heard.elapsed(), "Slack Socket Mode connection went silent.");
                    break;
                }
                if ws.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
                continue;
            }
            f = ws.next() => f,
        };
        heard = tokio::time::Instant::now();
        let text = match frame {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                if hello {
                    tracing::warn!(error = %e, "Slack Socket Mode connection failed.");
                    break;
                }
                return Err(ChatopsError::Socket(e.to_string()));
            }
        };
        let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
            tracing::warn!("Slack sent a Socket Mode frame that is not JSON; ignored.");
            continue;
        };
        // Acknowledge first, whatever it is.
        if let Some(id) = v["envelope_id"].as_str() {
            let ack = json!({ "envelope_id": id }).to_string();
            if let Err(e) = ws.send(Message::Text(ack.into())).await {
                tracing::warn!(envelope = %id, error = %e, "Cannot acknowledge a Slack envelope; Slack will deliver it again.");
                break;
            }
        }
        match v["type"].as_str().unwrap_or("") {
            "hello" => {
                hello = true;
                tracing::info!("Slack Socket Mode connection open.");
            }
            "disconnect" => {
                tracing::info!(reason = %v["reason"].as_str().unwrap_or(""), "Slack asked to reconnect.");
                break;
            }
            "interactive" => {
                let envelope = Envelope {
                    id: v["envelope_id"].as_str().unwrap_or("").to_string(),
                    retry_attempt: v["retry_attempt"].as_u64().unwrap_or(0),
                    payload: v["payload"].clone(),
                };
                if out.send(envelope).await.is_err() {
                    return Ok(Ended::Cancelled);
                }
            }
            other => tracing::debug!(kind = %other, "Slack Socket Mode envelope ignored."),
        }
    }
    if hello {
        Ok(Ended::AfterHello)
    } else {
        Err(ChatopsError::Socket(
            "the connection closed before Slack said hello".into(),
        ))
    }
}

/// An error's text without the WebSocket URL (its ticket).
fn strip_url(message: &str, url: &str) -> String {
    message.replace(url, "<socket mode url>")
}
