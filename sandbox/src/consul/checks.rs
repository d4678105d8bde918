//! Runs checks the way a Consul agent does, and the timers of the cluster.
//!
//! - HTTP checks: a request every `Interval` (at least 1s, as Consul),
//!   `Timeout` default 10s; 2xx is passing, 429 warning, anything else or a
//!   connection error critical. Output as Consul writes it:
//!   `HTTP GET <url>: 200 OK Output: <body>` (the last 4 KiB of the body,
//!   as Consul's ring buffer keeps).
//! - TCP checks: a connection every `Interval`; `TCP connect <addr>: Success`.
//! - The janitor (one task per cluster) turns TTL checks critical with
//!   `TTL expired`, invalidates sessions after 2 x TTL, syncs deferred
//!   output-only check changes after `check_update_interval`, and
//!   deregisters services whose check stayed critical for
//!   `DeregisterCriticalServiceAfter` (at least 1m, looked at every 30s, as
//!   Consul's reaper; tests may shorten both through `Config`).
//!
//! The first probe runs at once (Consul staggers it randomly within the
//! interval). Runners never touch a check that was replaced: each carries
//! the generation it was started for. All tasks stop on cancellation.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::cluster::Cluster;
use super::model::{CheckKind, CheckRecord, Status};

/// Consul's `OutputMaxSize` default.
const OUTPUT_MAX: usize = 4096;
/// Consul's shortest check interval.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Timeout of an HTTP or TCP check when none is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the runner of an HTTP or TCP check; `None` for other kinds.
pub(crate) fn start_probe(cluster: &Arc<Cluster>, check: &CheckRecord) -> Option<DropGuard> {
    if !matches!(
        check.def.kind,
        CheckKind::Http { .. } | CheckKind::Tcp { .. }
    ) {
        return None;
    }
    let token = cluster.root.child_token();
    let guard = token.clone().drop_guard();
    let cluster = Arc::clone(cluster);
    let node = check.node.clone();
    let id = check.def.id.clone();
    let kind = check.def.kind.clone();
    let generation = check.generation;
    let tracker = cluster.tracker.clone();
    tracker.spawn(async move {
        run_probe(&cluster, &node, &id, generation, &kind, &token).await;
    });
    Some(guard)
}

async fn run_probe(
    cluster: &Cluster,
    node: &str,
    id: &str,
    generation: u64,
    kind: &CheckKind,
    token: &CancellationToken,
) {
    let interval = match kind {
        CheckKind::Http { interval, .. } | CheckKind::Tcp { interval, .. } => {
            (*interval).max(MIN_INTERVAL)
        }
        _ => return,
    };
    loop {
        let started = Instant::now();
        let result = tokio::select! {
            _ = token.cancelled() => return,
            r = probe(cluster, kind) => r,
        };
        let (status, output) = result;
        cluster
            .store()
            .set_probe_result(node, id, generation, status, &output);
        tokio::select! {
            _ = token.cancelled() => return,
            _ = sleep_until(started + interval) => {}
        }
    }
}

async fn probe(cluster: &Cluster, kind: &CheckKind) -> (Status, String) {
    match kind {
        CheckKind::Http {
            url,
            method,
            header,
            tls_skip_verify,
            timeout,
            ..
        } => {
            let client = if *tls_skip_verify {
                &cluster.http_insecure
            } else {
                &cluster.http
            };
            probe_http(client, url, method, header, *timeout).await
        }
        CheckKind::Tcp {
            address, timeout, ..
        } => probe_tcp(address, *timeout).await,
        _ => (Status::Critical, String::new()),
    }
}

/// Go's spelling of a method in `url.Error` (`Get`, `Post`).
fn go_method(method: &str) -> String {
    let lower = method.to_ascii_lowercase();
    let mut chars = lower.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

async fn probe_http(
    client: &reqwest::Client,
    url: &str,
    method: &str,
    header: &std::collections::BTreeMap<String, Vec<String>>,
    timeout: Duration,
) -> (Status, String) {
    let method = if method.is_empty() { "GET" } else { method };
    let Ok(m) = reqwest::Method::from_bytes(method.as_bytes()) else {
        return (
            Status::Critical,
            format!("net/http: invalid method {method:?}"),
        );
    };
    let mut request = client.request(m, url).timeout(timeout);
    let mut has_agent = false;
    for (name, values) in header {
        has_agent |= name.eq_ignore_ascii_case("user-agent");
        for value in values {
            request = request.header(name.as_str(), value.as_str());
        }
    }
    if !has_agent {
        request = request.header("User-Agent", "Consul Health Check");
    }
    request = request.header("Accept", "text/plain, text/*, */*");
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            return (
                Status::Critical,
                format!("{} \"{url}\": {}", go_method(method), describe(&e)),
            );
        }
    };
    let code = response.status();
    // Consul reads the body into a ring buffer of OutputMaxSize bytes, so
    // it keeps the last 4 KiB, not the first.
    let mut tail: Vec<u8> = Vec::new();
    let mut response = response;
    while let Ok(Some(chunk)) = response.chunk().await {
        tail.extend_from_slice(&chunk);
        if tail.len() > OUTPUT_MAX {
            tail.drain(..tail.len() - OUTPUT_MAX);
        }
    }
    let body = String::from_utf8_lossy(&tail).into_owned();
    let output = format!("HTTP {method} {url}: {code} Output: {body}");
    let status = if code.is_success() {
        Status::Passing
    } else if code.as_u16() == 429 {
        Status::Warning
    } else {
        Status::Critical
    };
    (status, output)
}

/// A connection error worded like Go's net package where it matters.
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            .to_string();
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                let target = error.url().map(|u| {
                    format!(
                        "{}:{}",
                        u.host_str().unwrap_or_default(),
                        u.port_or_known_default().unwrap_or(80)
                    )
                });
                return format!(
                    "dial tcp {}: connect: connection refused",
                    target.unwrap_or_default()
                );
            }
        }
        source = e.source();
    }
    error.to_string()
}

async fn probe_tcp(address: &str, timeout: Duration) -> (Status, String) {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(mut stream)) => {
            let _ = stream.shutdown().await;
            (Status::Passing, format!("TCP connect {address}: Success"))
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => (
            Status::Critical,
            format!("dial tcp {address}: connect: connection refused"),
        ),
        Ok(Err(e)) => (Status::Critical, format!("dial tcp {address}: {e}")),
        Err(_) => (Status::Critical, format!("dial tcp {address}: i/o timeout")),
    }
}

/// The cluster's timers: TTL checks, session TTLs, the critical-service
/// reaper. Sleeps until the earliest deadline or the next write.
pub(crate) async fn janitor(cluster: Arc<Cluster>) {
    let mut changes = cluster.subscribe();
    loop {
        // Marked before looking, so a write made meanwhile wakes us again.
        changes.borrow_and_update();
        let next = {
            let now = std::time::Instant::now();
            let mut store = cluster.store();
            [
                store.expire_ttl_checks(now),
                store.expire_sessions(now),
                store.reap_critical_services(now),
                store.sync_check_outputs(now),
            ]
            .into_iter()
            .flatten()
            .min()
        };
        let wake = next.map_or_else(
            || Instant::now() + Duration::from_secs(3600),
            Instant::from_std,
        );
        tokio::select! {
            _ = cluster.root.cancelled() => return,
            r = changes.changed() => if r.is_err() { return },
            _ = sleep_until(wake) => {}
        }
    }
}
