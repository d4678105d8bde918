//! Benchmark: the health watcher's throughput.
//!
//! The sandbox Consul (in this process) holds `instances` service instances
//! with `checks_per_instance` TTL checks each, spread over `nodes` nodes so
//! that every instance is alone in its alert group (group by service and
//! node): instance `i` is service `svc-<i / nodes>` on node
//! `node-<i % nodes + 1>`. The real `rollgate watch` runs as its own process
//! (so its CPU and memory can be read from /proc, and the server's work is
//! not counted as its own) with `change_threshold = 0` and `group_wait = 0`,
//! delivering to the Slack stand-in's webhook.
//!
//! 1. Seed every instance through the control API's bulk registration.
//! 2. Start the watcher; wait for its baseline: one sentinel check (instance
//!    0) turns critical and its alert must reach the outbox, so the watcher
//!    has seen every seeded check passing before the measured changes.
//! 3. Make `changes` status changes (passing → critical or warning, each on
//!    a different instance, so no first-seen-passing rule and no group
//!    interval can swallow or delay one), evenly spread over `spread`,
//!    through the node agents' `PUT /v1/agent/check/update/:id`, noting the
//!    time just before each request is sent.
//! 4. Follow the outbox prefix with blocking queries (`?keys`), noting when
//!    each new entry is first seen; afterwards read every entry and match
//!    it to its change by content (node, check ID, status among the
//!    notice's firing checks).
//!
//! Reported: change → enqueued (observed) p50/p99, change → the entry's own
//! `enqueued_ms`, watcher CPU over the change window and in total, peak RSS
//! (VmHWM). Fails when a change was not matched to exactly one entry.
//!
//! Consul runs as in production, ACLs on: `rollgate watch` has the
//! `watcher` role's token (`config/acl/watcher.hcl`), so the figures
//! include Consul's filtering of every answer it reads. The bench's own
//! requests (reads of the outbox, and the check updates that stand in for
//! the agents of services no rollgate role may write) use the management
//! token.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;
use serde_json::{Value, json};

use super::{cpu_ticks, proc_status_kib};
use crate::consul::{Config as ConsulConfig, Server};
use crate::node::Binaries;
use crate::slack::{Config as SlackConfig, SlackServer};

/// Clock ticks per second (USER_HZ), 100 on Linux.
const TICKS_PER_SEC: f64 = 100.0;
/// The watcher's KV prefix.
const KV_PREFIX: &str = "rollgate";

/// Settings of the watcher benchmark.
#[derive(Debug, Clone)]
pub struct WatcherBench {
    /// Service instances registered.
    pub instances: usize,
    /// TTL checks per instance.
    pub checks_per_instance: usize,
    /// Consul nodes the instances are spread over.
    pub nodes: usize,
    /// Status changes made.
    pub changes: usize,
    /// The changes are spread evenly over this.
    pub spread: Duration,
    /// How long to wait for the alerts after the last change.
    pub drain_limit: Duration,
}

impl WatcherBench {
    /// The sizes of issue #6: 10,000 instances × 3 checks, 1,000 changes
    /// over 10 s.
    pub fn issue() -> Self {
        Self {
            instances: 10_000,
            checks_per_instance: 3,
            nodes: 100,
            changes: 1_000,
            spread: Duration::from_secs(10),
            drain_limit: Duration::from_secs(60),
        }
    }
}

/// Results of the watcher benchmark.
#[derive(Debug, Clone)]
pub struct WatcherResults {
    /// Settings used.
    pub settings: WatcherBench,
    /// Change → entry first seen in the outbox, sorted.
    pub latencies: Vec<Duration>,
    /// Change → the entry's `enqueued_ms` (the watcher's clock, taken just
    /// before its write), sorted.
    pub enqueue_started: Vec<Duration>,
    /// Changes matched to exactly one outbox entry.
    pub matched: usize,
    /// Outbox entries that match no change (nor the sentinel).
    pub unexpected: Vec<String>,
    /// Time to register every instance.
    pub seed_time: Duration,
    /// Size of one `/v1/health/state/any` answer, bytes.
    pub health_bytes: usize,
    /// Watcher start → the sentinel's alert in the outbox.
    pub baseline_time: Duration,
    /// First change → last matched entry seen.
    pub window: Duration,
    /// Watcher CPU over the window, seconds.
    pub cpu_window_secs: f64,
    /// Watcher CPU over the window, % of one core.
    pub cpu_percent: f64,
    /// Watcher CPU since it started, seconds.
    pub cpu_total_secs: f64,
    /// Watcher peak resident memory (VmHWM), KiB.
    pub peak_rss_kib: u64,
    /// Watcher resident memory at the end (VmRSS), KiB.
    pub rss_kib: u64,
}

/// Where instance `i` lives and what it is called.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Instance {
    node: String,
    service: String,
    service_id: String,
}

fn instance(settings: &WatcherBench, i: usize) -> Instance {
    let nodes = settings.nodes.max(1);
    let service = format!("svc-{:04}", i / nodes);
    Instance {
        node: format!("node-{}", i % nodes + 1),
        service_id: format!("{service}-i{i:06}"),
        service,
    }
}

fn check_id(inst: &Instance, c: usize) -> String {
    format!("{}-c{c}", inst.service_id)
}

fn registration(settings: &WatcherBench, i: usize) -> Value {
    let inst = instance(settings, i);
    let checks: Vec<Value> = (0..settings.checks_per_instance)
        .map(|c| {
            json!({
                "CheckID": check_id(&inst, c),
                "Name": format!("check {c}"),
                "TTL": "24h",
                "Status": "passing",
                "Output": "ok",
            })
        })
        .collect();
    json!({
        "ID": inst.service_id,
        "Name": inst.service,
        "Tags": ["bench"],
        "Address": "127.0.0.1",
        "Port": 8080,
        "Meta": {
            "instance_id": format!("i-{i:017x}"),
            "ami_id": "ami-0bench0000000001",
            "version": "1.0.0",
        },
        "Checks": checks,
    })
}

/// One status change made.
#[derive(Debug, Clone)]
struct Change {
    node: String,
    check_id: String,
    status: &'static str,
    at: Instant,
    wall_ms: u64,
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Outbox keys as first seen, shared with the follower task.
type Seen = Arc<Mutex<HashMap<String, Instant>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Follows `<prefix>/outbox/` with blocking `?keys` queries, noting when
/// each key is first seen, until `stop` is cancelled.
async fn follow(
    http: reqwest::Client,
    consul: SocketAddr,
    seen: Seen,
    notify: Arc<tokio::sync::Notify>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut index = 0u64;
    loop {
        let url = format!("http://{consul}/v1/kv/{KV_PREFIX}/outbox/?keys&index={index}&wait=30s");
        let answer = tokio::select! {
            _ = stop.cancelled() => return,
            r = http.get(&url).send() => r,
        };
        let now = Instant::now();
        let Ok(resp) = answer else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let next = resp
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(index);
        index = if next < index { 0 } else { next.max(1) };
        let keys: Vec<String> = resp.json().await.unwrap_or_default();
        let mut fresh = false;
        {
            let mut seen = lock(&seen);
            for k in keys {
                seen.entry(k).or_insert_with(|| {
                    fresh = true;
                    now
                });
            }
        }
        if fresh {
            notify.notify_waiters();
        }
    }
}

/// Waits until `seen` holds at least `n` keys, or `limit` passes; answers
/// how many it holds.
async fn wait_for_keys(
    seen: &Seen,
    notify: &tokio::sync::Notify,
    n: usize,
    limit: Duration,
) -> usize {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let notified = notify.notified();
        let count = lock(seen).len();
        if count >= n {
            return count;
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(deadline) => return lock(seen).len(),
        }
    }
}

/// What an outbox entry says, for matching.
#[derive(Debug, Clone)]
struct Notice {
    key: String,
    enqueued_ms: u64,
    /// (node, check ID, status) of the firing checks.
    firing: Vec<(String, String, String)>,
}

async fn read_outbox(http: &reqwest::Client, consul: SocketAddr) -> anyhow::Result<Vec<Notice>> {
    let url = format!("http://{consul}/v1/kv/{KV_PREFIX}/outbox/?recurse");
    let resp = http.get(&url).send().await?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(Vec::new());
    }
    let list: Vec<Value> = resp.error_for_status()?.json().await?;
    let mut out = Vec::new();
    for kv in list {
        let key = kv["Key"].as_str().unwrap_or_default().to_string();
        let raw = kv["Value"].as_str().unwrap_or_default();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(raw)
            .with_context(|| format!("outbox entry {key} is not base64"))?;
        let entry: Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("outbox entry {key} is not JSON"))?;
        let firing = entry["event"]["body"]["firing"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|c| {
                        let s = |f: &str| c[f].as_str().unwrap_or_default().to_string();
                        (s("node"), s("check_id"), s("status"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Notice {
            key,
            enqueued_ms: entry["enqueued_ms"].as_u64().unwrap_or(0),
            firing,
        });
    }
    Ok(out)
}

async fn update_check(
    http: &reqwest::Client,
    agent: SocketAddr,
    check_id: &str,
    status: &str,
    output: &str,
) -> anyhow::Result<()> {
    let url = format!("http://{agent}/v1/agent/check/update/{check_id}");
    let resp = http
        .put(&url)
        .json(&json!({ "Status": status, "Output": output }))
        .send()
        .await?;
    ensure!(
        resp.status().is_success(),
        "updating {check_id}: {}",
        resp.status()
    );
    Ok(())
}

fn watcher_config(consul: SocketAddr, token_file: &Path, webhook: &str) -> String {
    let token_file = token_file.display().to_string();
    format!(
        "[consul]\naddress = \"http://{consul}\"\ntoken_file = {token_file:?}\n\
         kv_prefix = \"{KV_PREFIX}\"\n\n\
         [log]\nlevel = \"info\"\n\n\
         [notify]\ndefault_receivers = [\"bench\"]\n\n\
         [[notify.receivers]]\nname = \"bench\"\n[notify.receivers.webhook]\n\
         url = \"{webhook}\"\nallow_insecure = true\n\n\
         [watch]\nchange_threshold = \"0s\"\ngroup_wait = \"0s\"\n"
    )
}

/// The watcher log's last warnings and errors (or its last lines when it
/// has none), for failure messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let bad: Vec<&str> = all
        .iter()
        .copied()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    let lines = if bad.is_empty() { all } else { bad };
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Runs the benchmark in `dir`.
pub async fn run(
    settings: WatcherBench,
    bins: &Binaries,
    dir: &Path,
) -> anyhow::Result<WatcherResults> {
    ensure!(settings.nodes >= 1, "at least one node");
    ensure!(
        settings.checks_per_instance >= 1,
        "at least one check per instance"
    );
    ensure!(
        settings.changes >= 1 && settings.changes < settings.instances,
        "changes must be at least 1 and fewer than the instances (instance 0 is the sentinel)"
    );
    let management = crate::acl_roles::Secret::random();
    let consul = Server::start(ConsulConfig {
        nodes: settings.nodes,
        ..ConsulConfig::with_acls(management.expose())
    })
    .await?;
    let roles = crate::acl_roles::create_workspace_roles(consul.http_addr(), &management).await?;
    let token_file = roles.write_file("watcher", &dir.join("watcher.token"))?;
    let addr = consul.http_addr();
    let agents: HashMap<String, SocketAddr> = consul
        .nodes()
        .into_iter()
        .map(|n| (n.name, n.addr))
        .collect();
    let slack = SlackServer::start(SlackConfig::default()).await?;
    let http = crate::acl_roles::http_client(&management, Duration::from_secs(120))?;

    // 1. Seed, one bulk request per node.
    let seeding = Instant::now();
    let mut per_node: HashMap<String, Vec<Value>> = HashMap::new();
    for i in 0..settings.instances {
        per_node
            .entry(instance(&settings, i).node)
            .or_default()
            .push(registration(&settings, i));
    }
    for (node, bodies) in per_node {
        let resp = http
            .put(format!("http://{addr}/sandbox/v1/nodes/{node}/services"))
            .json(&bodies)
            .send()
            .await?;
        let status = resp.status();
        if !status.is_success() {
            bail!(
                "bulk registration on {node}: {status}: {}",
                resp.text().await.unwrap_or_default()
            );
        }
    }
    let seed_time = seeding.elapsed();
    let health_bytes = http
        .get(format!("http://{addr}/v1/health/state/any"))
        .send()
        .await?
        .bytes()
        .await?
        .len();
    tracing::info!(instances = settings.instances, seed = ?seed_time, health_bytes, "Seeded the sandbox Consul.");

    // 2. The watcher, and its baseline.
    let seen: Seen = Arc::new(Mutex::new(HashMap::new()));
    let notify = Arc::new(tokio::sync::Notify::new());
    let stop = tokio_util::sync::CancellationToken::new();
    let follower = tokio::spawn(follow(
        http.clone(),
        addr,
        seen.clone(),
        notify.clone(),
        stop.clone(),
    ));
    let config = dir.join("watcher.toml");
    std::fs::write(
        &config,
        watcher_config(addr, &token_file, &slack.webhook_url()),
    )?;
    let log = dir.join("watcher.log");
    let mut watcher = tokio::process::Command::new(&bins.rollgate)
        .arg("--config")
        .arg(&config)
        .arg("watch")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bins.rollgate.display()))?;
    let pid = watcher
        .id()
        .ok_or_else(|| anyhow::anyhow!("the watcher exited at once"))?;
    let started = Instant::now();
    let sentinel = instance(&settings, 0);
    update_check(
        &http,
        agents[&sentinel.node],
        &check_id(&sentinel, 0),
        "critical",
        "sentinel",
    )
    .await?;
    if wait_for_keys(&seen, &notify, 1, Duration::from_secs(120)).await < 1 {
        bail!(
            "the watcher never alerted on the sentinel check:\n{}",
            log_tail(&log)
        );
    }
    let baseline_time = started.elapsed();
    // Let the sender deliver the sentinel and everything settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    if let Ok(Some(status)) = watcher.try_wait() {
        bail!("the watcher exited ({status}):\n{}", log_tail(&log));
    }

    // 3. The changes, evenly spread.
    let stride = ((settings.instances - 1) / settings.changes).max(1);
    let interval = settings.spread / u32::try_from(settings.changes).unwrap_or(u32::MAX);
    let ticks0 = cpu_ticks(pid).unwrap_or(0);
    let t0 = tokio::time::Instant::now();
    let mut changes = Vec::with_capacity(settings.changes);
    let mut requests = Vec::with_capacity(settings.changes);
    for k in 0..settings.changes {
        tokio::time::sleep_until(t0 + interval * u32::try_from(k).unwrap_or(u32::MAX)).await;
        let inst = instance(&settings, 1 + k * stride);
        let change = Change {
            check_id: check_id(&inst, k % settings.checks_per_instance),
            node: inst.node,
            status: if k % 2 == 0 { "critical" } else { "warning" },
            at: Instant::now(),
            wall_ms: wall_ms(),
        };
        let http = http.clone();
        let agent = agents[&change.node];
        let (id, status) = (change.check_id.clone(), change.status);
        requests.push(tokio::spawn(async move {
            update_check(&http, agent, &id, status, &format!("bench change {k}")).await
        }));
        changes.push(change);
    }
    for r in requests {
        r.await??;
    }
    let first_change = changes.first().map(|c| c.at).unwrap_or_else(Instant::now);
    let expected = settings.changes + 1;
    let count = wait_for_keys(&seen, &notify, expected, settings.drain_limit).await;
    let ticks1 = cpu_ticks(pid).unwrap_or(0);
    let window_end = lock(&seen)
        .values()
        .max()
        .copied()
        .unwrap_or_else(Instant::now);
    let rss_kib = proc_status_kib(pid, "VmRSS:").unwrap_or(0);
    let peak_rss_kib = proc_status_kib(pid, "VmHWM:").unwrap_or(0);
    let cpu_total_secs = ticks1 as f64 / TICKS_PER_SEC;
    stop.cancel();
    let _ = follower.await;

    // 4. Match every entry to its change.
    let notices = read_outbox(&http, addr).await?;
    let _ = watcher.start_kill();
    let _ = watcher.wait().await;
    slack.shutdown().await;
    consul.shutdown().await;

    let seen = lock(&seen).clone();
    let sentinel_check = check_id(&sentinel, 0);
    let mut used = vec![false; notices.len()];
    let mut latencies = Vec::new();
    let mut enqueue_started = Vec::new();
    let mut problems = Vec::new();
    for c in &changes {
        let hits: Vec<usize> = notices
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                n.firing
                    .iter()
                    .any(|(node, id, st)| *node == c.node && *id == c.check_id && st == c.status)
            })
            .map(|(i, _)| i)
            .collect();
        match hits.as_slice() {
            [i] => {
                used[*i] = true;
                let n = &notices[*i];
                match seen.get(&n.key) {
                    Some(at) => latencies.push(at.saturating_duration_since(c.at)),
                    None => problems.push(format!(
                        "{} on {}: alert {} not seen by the follower in time",
                        c.check_id, c.node, n.key
                    )),
                }
                enqueue_started.push(Duration::from_millis(
                    n.enqueued_ms.saturating_sub(c.wall_ms),
                ));
            }
            [] => problems.push(format!(
                "{} on {} → {}: no alert",
                c.check_id, c.node, c.status
            )),
            many => problems.push(format!(
                "{} on {} → {}: {} alerts",
                c.check_id,
                c.node,
                c.status,
                many.len()
            )),
        }
    }
    let unexpected: Vec<String> = notices
        .iter()
        .zip(&used)
        .filter(|(n, used)| {
            !**used
                && !n
                    .firing
                    .iter()
                    .any(|(node, id, _)| *node == sentinel.node && *id == sentinel_check)
        })
        .map(|(n, _)| n.key.clone())
        .collect();
    let matched = latencies.len();
    if !problems.is_empty() {
        bail!(
            "{} of {} changes were not matched to exactly one alert ({count} outbox keys seen), e.g. {}\nwatcher log:\n{}",
            problems.len(),
            settings.changes,
            problems
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; "),
            log_tail(&log)
        );
    }
    latencies.sort();
    enqueue_started.sort();
    let window = window_end.saturating_duration_since(first_change);
    let cpu_window_secs = ticks1.saturating_sub(ticks0) as f64 / TICKS_PER_SEC;
    Ok(WatcherResults {
        cpu_percent: cpu_window_secs / window.as_secs_f64().max(0.001) * 100.0,
        settings,
        latencies,
        enqueue_started,
        matched,
        unexpected,
        seed_time,
        health_bytes,
        baseline_time,
        window,
        cpu_window_secs,
        cpu_total_secs,
        peak_rss_kib,
        rss_kib,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_instance_is_alone_in_its_group() {
        let s = WatcherBench {
            instances: 50,
            nodes: 7,
            ..WatcherBench::issue()
        };
        let mut groups: Vec<(String, String)> = (0..s.instances)
            .map(|i| {
                let inst = instance(&s, i);
                (inst.service, inst.node)
            })
            .collect();
        groups.sort();
        groups.dedup();
        assert_eq!(groups.len(), s.instances);
    }
}
