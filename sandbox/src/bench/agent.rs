//! Benchmark: the node agent's footprint and reaction.
//!
//! - Idle footprint: one node (IMDS, `web`, `rollgate agent`) registered and
//!   passing; the agent's resident memory (VmRSS, peak VmHWM) and CPU time
//!   (utime + stime from /proc) over a steady-state window.
//! - Ready to passing: the app starts with a boot delay; the time from the
//!   app's `/health` first answering 200 (polled every 5 ms) to the service
//!   appearing in `/v1/health/service/web?passing` (a blocking query). Targets:
//!   ≤ one check interval + 100 ms.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::consul::{Config as ConsulConfig, Server};
use crate::imds::Identity;
use crate::node::{Binaries, NodeSpec, SimNode};

/// Settings of the agent benchmark.
#[derive(Debug, Clone)]
pub struct AgentBench {
    /// Steady-state window for memory and CPU.
    pub window: Duration,
    /// Ready-to-passing repetitions.
    pub runs: usize,
    /// The agent's check interval.
    pub check_interval: Duration,
}

/// Results of the agent benchmark.
#[derive(Debug, Clone)]
pub struct AgentResults {
    /// Settings used.
    pub settings: AgentBench,
    /// Resident memory at the end of the window, KiB.
    pub rss_kib: u64,
    /// Peak resident memory, KiB.
    pub peak_rss_kib: u64,
    /// Anonymous resident memory (heap, stacks), KiB.
    pub anon_kib: u64,
    /// File-backed resident memory (the binary's code and data pages,
    /// shared and reclaimable), KiB.
    pub file_kib: u64,
    /// CPU used over the window, as a percentage of one core.
    pub cpu_percent: f64,
    /// Ready-to-passing times, sorted.
    pub ready_to_passing: Vec<Duration>,
}

fn identity(n: usize) -> Identity {
    Identity {
        instance_id: format!("i-bench{n:012}"),
        ami_id: "ami-0bench0000000001".into(),
        availability_zone: "sandbox-1a".into(),
        region: "sandbox-1".into(),
        local_ipv4: std::net::Ipv4Addr::LOCALHOST,
        instance_type: "t3.micro".into(),
        account_id: "000000000000".into(),
    }
}

fn proc_field(pid: u32, file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime + stime in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after ')'.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second (USER_HZ), 100 on Linux.
const TICKS_PER_SEC: f64 = 100.0;

async fn passing(http: &reqwest::Client, consul: SocketAddr, index: u64) -> (bool, u64) {
    let url = format!("http://{consul}/v1/health/service/web?passing&index={index}&wait=10s");
    match http.get(url).send().await {
        Ok(r) => {
            let idx = r
                .headers()
                .get("X-Consul-Index")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(index);
            let list: Vec<serde_json::Value> = r.json().await.unwrap_or_default();
            (!list.is_empty(), idx)
        }
        Err(_) => (false, index),
    }
}

/// Runs the benchmark in `dir`.
pub async fn run(
    settings: AgentBench,
    bins: &Binaries,
    dir: &Path,
) -> anyhow::Result<AgentResults> {
    let consul = Server::start(ConsulConfig {
        nodes: 1,
        ..ConsulConfig::default()
    })
    .await?;
    let node_addr = consul.nodes()[0].addr;
    let http = reqwest::Client::new();
    let spec = |n: usize, env: Vec<(String, String)>| NodeSpec {
        identity: identity(n),
        consul: node_addr,
        web_env: env,
        expected_version: "1.0.0".into(),
        artifact: "acmeinc/web".into(),
        check_interval: settings.check_interval,
        ttl: Duration::from_secs(10),
        drain_time: Duration::from_millis(0),
        dir: dir.join(format!("node-{n}")),
    };

    // Footprint.
    let node = SimNode::start(bins, &spec(0, vec![("WEB_VERSION".into(), "1.0.0".into())])).await?;
    let started = Instant::now();
    let mut index = 0;
    loop {
        let (ok, idx) = passing(&http, consul.http_addr(), index).await;
        if ok {
            break;
        }
        index = idx;
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "node never passed:\n{}",
            node.agent_log()
        );
    }
    let pid = node
        .agent_pid()
        .ok_or_else(|| anyhow::anyhow!("agent exited"))?;
    // Let start-up settle before the window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t0 = cpu_ticks(pid).unwrap_or(0);
    let w0 = Instant::now();
    tokio::time::sleep(settings.window).await;
    let t1 = cpu_ticks(pid).unwrap_or(0);
    let elapsed = w0.elapsed().as_secs_f64();
    let rss_kib = proc_field(pid, "status", "VmRSS:").unwrap_or(0);
    let peak_rss_kib = proc_field(pid, "status", "VmHWM:").unwrap_or(0);
    let anon_kib = proc_field(pid, "status", "RssAnon:").unwrap_or(0);
    let file_kib = proc_field(pid, "status", "RssFile:").unwrap_or(0);
    let cpu_percent = (t1.saturating_sub(t0)) as f64 / TICKS_PER_SEC / elapsed * 100.0;
    node.stop(Duration::from_secs(5)).await;

    // Ready to passing.
    let mut times = Vec::new();
    for n in 1..=settings.runs {
        let node = SimNode::start(
            bins,
            &spec(
                n,
                vec![
                    ("WEB_VERSION".into(), "1.0.0".into()),
                    // Spread over the check interval so the runs do not all
                    // land just after a check (a lucky phase).
                    (
                        "WEB_BOOT_DELAY".into(),
                        format!(
                            "{}ms",
                            2000 + (n as u128 * 379) % settings.check_interval.as_millis().max(1)
                        ),
                    ),
                ],
            ),
        )
        .await?;
        let health = format!("http://{}/health", node.web_addr);
        let watcher = {
            let http = http.clone();
            let addr = consul.http_addr();
            tokio::spawn(async move {
                let mut index = 0;
                loop {
                    let (ok, idx) = passing(&http, addr, index).await;
                    if ok {
                        return Instant::now();
                    }
                    index = idx;
                }
            })
        };
        let ready = loop {
            if let Ok(r) = http.get(&health).send().await {
                if r.status().is_success() {
                    break Instant::now();
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let passed = tokio::time::timeout(Duration::from_secs(30), watcher).await??;
        times.push(passed.saturating_duration_since(ready));
        node.stop(Duration::from_secs(5)).await;
        // Wait until the service is gone before the next run.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    times.sort();
    consul.shutdown().await;
    Ok(AgentResults {
        settings,
        rss_kib,
        peak_rss_kib,
        anon_kib,
        file_kib,
        cpu_percent,
        ready_to_passing: times,
    })
}
