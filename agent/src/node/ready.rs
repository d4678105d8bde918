//! `GET /ready`: the node's readiness for a load balancer, which is
//! Consul's verdict on the node's service and nothing else.
//!
//! Consul is the one judge of health: the rollout gate, the alerts and the
//! load generator read it, and the load balancer's health check asks this
//! endpoint, which asks the local Consul agent
//! (`GET /v1/agent/health/service/id/:id`) on every request. So a node
//! failing a check, on the wrong version, or draining (maintenance) leaves
//! the load balancer when it leaves Consul's passing set, not later and not
//! by another rule.
//!
//! 200 only when the aggregated status is `passing`; 503 for warning,
//! critical, maintenance, a service the agent does not know (yet), or a
//! Consul agent that does not answer within [`CONSUL_TIMEOUT`]. A 503 body
//! names the status and every check that is not passing, with its output.
//! `HEAD /ready` answers the same status without a body; any other path is
//! 404, any other method on `/ready` 405.
//!
//! This module must never judge the app itself (the probe does, through
//! Consul), cache a verdict, or answer 200 on an error.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::consul::agent::{AggregatedStatus, LocalServiceHealth};
use crate::consul::types::CheckStatus;
use crate::consul::{Client, Error};

/// How long one `/ready` waits for the local Consul agent. The load
/// balancer's own time limit is longer (5 s), so a stuck agent is answered
/// as not ready rather than as a time-out.
pub const CONSUL_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections served at once; more are closed at once. Only the load
/// balancer's nodes call (the security group admits nothing else), a few
/// every check interval.
const MAX_CONNECTIONS: usize = 16;

/// A client that sends no complete request head within this is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// What `/ready` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// 200 when true, 503 otherwise.
    pub ready: bool,
    /// The body: one line with the status, then one per check not passing.
    pub body: String,
}

/// Turns the local agent's answer about `service_id` into the verdict.
pub fn judge(service_id: &str, answer: Result<Option<LocalServiceHealth>, Error>) -> Verdict {
    let health = match answer {
        Ok(Some(health)) => health,
        Ok(None) => {
            return not_ready(format!(
                "not ready: service {service_id} is not registered with the local Consul agent (yet)\n"
            ));
        }
        Err(e) => {
            return not_ready(format!(
                "not ready: cannot ask the local Consul agent about service {service_id}: {e}\n"
            ));
        }
    };
    if health.status == AggregatedStatus::Passing {
        return Verdict {
            ready: true,
            body: format!(
                "ready: service {service_id} is passing ({} checks)\n",
                health.checks.len()
            ),
        };
    }
    let mut body = format!("not ready: service {service_id} is {}\n", health.status);
    for check in &health.checks {
        let maintenance = check.check_id == "_node_maintenance"
            || check.check_id.starts_with("_service_maintenance:");
        if check.status() == CheckStatus::Passing && !maintenance {
            continue;
        }
        let _ = write!(
            body,
            "check {:?} ({}) is {}",
            check.name,
            check.check_id,
            check.status()
        );
        // Maintenance says why in its notes (the reason given); other
        // checks in their output.
        for detail in [check.output.trim(), check.notes.trim()] {
            if !detail.is_empty() {
                let _ = write!(body, ": {detail}");
                break;
            }
        }
        body.push('\n');
    }
    not_ready(body)
}

fn not_ready(body: String) -> Verdict {
    Verdict { ready: false, body }
}

/// Asks the local agent, at most [`CONSUL_TIMEOUT`], and judges.
pub async fn ask(client: &Client, service_id: &str, timeout: Duration) -> Verdict {
    match tokio::time::timeout(timeout, client.agent_service_health(service_id)).await {
        Ok(answer) => judge(service_id, answer),
        Err(_) => not_ready(format!(
            "not ready: the local Consul agent at {} did not answer within {} about service {service_id}\n",
            client.address(),
            humantime::format_duration(timeout)
        )),
    }
}

/// What every connection shares.
struct State {
    client: Client,
    service_id: String,
    timeout: Duration,
    /// The last verdict's readiness, so only changes are logged (the load
    /// balancer asks every few seconds).
    last: Mutex<Option<bool>>,
}

impl State {
    async fn verdict(&self) -> Verdict {
        let verdict = ask(&self.client, &self.service_id, self.timeout).await;
        let changed = {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            last.replace(verdict.ready) != Some(verdict.ready)
        };
        if changed {
            if verdict.ready {
                tracing::info!(service = %self.service_id, "Ready: Consul finds the service passing.");
            } else {
                tracing::warn!(service = %self.service_id, verdict = %verdict.body.trim_end(),
                    "Not ready for the load balancer.");
            }
        }
        verdict
    }
}

/// The running `/ready` listener. [`ReadyServer::stop`] ends it; dropping
/// it without stopping leaves the task running until the runtime ends.
#[derive(Debug)]
pub struct ReadyServer {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl ReadyServer {
    /// Binds `addr` (before anything else happens, so a taken port is a
    /// start-up error) and serves `/ready` for `service_id`.
    pub async fn start(
        addr: SocketAddr,
        client: Client,
        service_id: String,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            client,
            service_id,
            timeout: CONSUL_TIMEOUT,
            last: Mutex::new(None),
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(accept_loop(listener, state, stop.clone()));
        Ok(Self { addr, stop, task })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, closes open connections and waits for the task.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "The /ready listener ended abnormally.");
        }
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, stop: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: pause rather than
                // spin, then keep serving.
                tracing::warn!(error = %e, "Cannot accept a /ready connection.");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if connections.len() >= MAX_CONNECTIONS {
            tracing::debug!(%peer, "Too many /ready connections; closing this one.");
            continue;
        }
        let state = Arc::clone(&state);
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(respond(&req, &state).await) }
            });
            let result = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "A /ready connection ended with an error.");
            }
        });
    }
    connections.shutdown().await;
}

async fn respond(req: &Request<Incoming>, state: &State) -> Response<String> {
    if req.uri().path() != "/ready" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: only /ready is served here\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let verdict = state.verdict().await;
    let status = if verdict.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    // hyper sends no body for HEAD, with the GET answer's length.
    plain(status, verdict.body)
}

fn plain(status: StatusCode, body: impl Into<String>) -> Response<String> {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    // Every answer is the verdict of its moment.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consul::types::HealthCheck;

    fn check(id: &str, name: &str, status: CheckStatus, output: &str, notes: &str) -> HealthCheck {
        HealthCheck {
            check_id: id.into(),
            name: name.into(),
            status: Some(status),
            output: output.into(),
            notes: notes.into(),
            ..HealthCheck::default()
        }
    }

    #[test]
    fn only_passing_is_ready() {
        let passing = LocalServiceHealth {
            status: AggregatedStatus::Passing,
            checks: vec![check(
                "web-1:agent",
                "probe",
                CheckStatus::Passing,
                "ok",
                "",
            )],
        };
        let v = judge("web-1", Ok(Some(passing)));
        assert!(v.ready, "{}", v.body);
        for status in [
            AggregatedStatus::Warning,
            AggregatedStatus::Critical,
            AggregatedStatus::Maintenance,
            AggregatedStatus::Other,
        ] {
            let v = judge(
                "web-1",
                Ok(Some(LocalServiceHealth {
                    status,
                    checks: vec![],
                })),
            );
            assert!(!v.ready, "{status}");
            assert!(v.body.contains(status.as_str()), "{}", v.body);
        }
    }

    #[test]
    fn a_503_names_the_checks_not_passing_with_their_output() {
        let health = LocalServiceHealth {
            status: AggregatedStatus::Critical,
            checks: vec![
                check("web-1:http", "HTTP", CheckStatus::Passing, "200 OK", ""),
                check(
                    "web-1:agent",
                    "rollgate probe",
                    CheckStatus::Critical,
                    "GET /health answered 500",
                    "",
                ),
            ],
        };
        let v = judge("web-1", Ok(Some(health)));
        assert!(!v.ready);
        assert!(v.body.starts_with("not ready: service web-1 is critical\n"));
        assert!(
            v.body.contains(
                "check \"rollgate probe\" (web-1:agent) is critical: GET /health answered 500"
            ),
            "{}",
            v.body
        );
        assert!(!v.body.contains("web-1:http"), "{}", v.body);
    }

    #[test]
    fn maintenance_names_its_reason() {
        let health = LocalServiceHealth {
            status: AggregatedStatus::Maintenance,
            checks: vec![check(
                "_service_maintenance:web-1",
                "Service Maintenance Mode",
                CheckStatus::Critical,
                "",
                "draining i-1",
            )],
        };
        let v = judge("web-1", Ok(Some(health)));
        assert!(!v.ready);
        assert!(v.body.contains("is maintenance"), "{}", v.body);
        assert!(v.body.contains("draining i-1"), "{}", v.body);
    }

    #[test]
    fn unknown_service_and_errors_are_not_ready() {
        let v = judge("web-1", Ok(None));
        assert!(!v.ready);
        assert!(v.body.contains("not registered"), "{}", v.body);
        let e = Error::Status {
            call: "GET /v1/agent/health/service/id/web-1".into(),
            status: 500,
            body: "rpc error".into(),
        };
        let v = judge("web-1", Err(e));
        assert!(!v.ready);
        assert!(v.body.contains("HTTP 500"), "{}", v.body);
    }
}
