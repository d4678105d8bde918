//! Benchmark: the node agent's footprint and reaction.
//!
//! - Idle footprint: one node (IMDS, `web`, `rollgate agent`) registered and
//!   passing; the agent's resident memory (VmRSS, peak VmHWM, and by mapping
//!   from /proc/PID/smaps) and CPU time (utime + stime from /proc) over a
//!   steady-state window.
//! - Ready to passing: the app starts with a boot delay; the time from the
//!   app's `/health` first answering 200 (polled every 5 ms) to the service
//!   appearing in `/v1/health/service/web?passing` (a blocking query). Targets:
//!   ≤ one check interval + 100 ms.
//!
//! Consul runs as in production (ACLs on, Consul's timings): the agent has
//! the `agent` role's token (`config/acl/agent.hcl`) in its token file; the
//! measuring queries use a `global-read-only` token.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{cpu_ticks, proc_status_kib};
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
    /// Resident memory by mapping at the end of the window, largest first.
    pub mappings: Vec<Mapping>,
    /// CPU used over the window, as a percentage of one core.
    pub cpu_percent: f64,
    /// Ready-to-passing times, sorted.
    pub ready_to_passing: Vec<Duration>,
}

/// Resident memory of one group of mappings of the agent, from
/// /proc/PID/smaps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// What the pages are (`rollgate code`, `libc`, `heap`, ...).
    pub name: String,
    /// Resident, KiB.
    pub rss_kib: u64,
    /// Of which anonymous (written: heap, stacks, relocated data), KiB.
    pub anon_kib: u64,
}

/// The group a mapping of /proc/PID/smaps belongs to, from its permissions
/// and path.
fn mapping_group(perms: &str, path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    if file == "rollgate" {
        return match perms.get(..3) {
            Some("r-x") => "rollgate code",
            Some("r--") => "rollgate read-only data",
            _ => "rollgate writable data",
        }
        .into();
    }
    if file.starts_with("libc.so") {
        "libc".into()
    } else if file.starts_with("ld-linux") {
        "ld.so".into()
    } else if file.contains(".so") {
        "other libraries".into()
    } else if path == "[heap]" {
        "heap".into()
    } else if path.starts_with("[stack") {
        "stack".into()
    } else if path.is_empty() {
        "other anonymous".into()
    } else {
        // [vdso], [vvar] and the like.
        "kernel-provided".into()
    }
}

/// Sums the resident memory of `smaps` (the text of /proc/PID/smaps) by
/// [`mapping_group`], largest first.
pub fn smaps_breakdown(smaps: &str) -> Vec<Mapping> {
    let mut groups: Vec<Mapping> = Vec::new();
    let mut current: Option<usize> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // A mapping header: range perms offset dev inode [path].
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).unwrap_or("");
            let name = mapping_group(perms, path);
            current = Some(match groups.iter().position(|g| g.name == name) {
                Some(i) => i,
                None => {
                    groups.push(Mapping {
                        name,
                        rss_kib: 0,
                        anon_kib: 0,
                    });
                    groups.len() - 1
                }
            });
            continue;
        }
        let (Some(i), Some(kib)) = (current, fields.next().and_then(|v| v.parse::<u64>().ok()))
        else {
            continue;
        };
        match first {
            "Rss:" => groups[i].rss_kib += kib,
            "Anonymous:" => groups[i].anon_kib += kib,
            _ => {}
        }
    }
    groups.retain(|g| g.rss_kib > 0);
    groups.sort_by_key(|g| std::cmp::Reverse(g.rss_kib));
    groups
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
    let management = crate::acl_roles::Secret::random();
    let consul = Server::start(ConsulConfig {
        nodes: 1,
        ..ConsulConfig::with_acls(management.expose())
    })
    .await?;
    let roles = crate::acl_roles::create_workspace_roles(consul.http_addr(), &management).await?;
    let token_file = roles.write_file("agent", &dir.join("agent.token"))?;
    let read =
        crate::acl_roles::create_read_token(consul.http_addr(), &management, "bench reads").await?;
    let node_addr = consul.nodes()[0].addr;
    // The app's /health is asked without a token; Consul with the read token.
    let http = reqwest::Client::new();
    let consul_http = crate::acl_roles::http_client(&read, Duration::from_secs(660))?;
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
        token_file: Some(token_file.clone()),
        // On, as the image runs it: the listener is part of the footprint.
        ready_listen: Some(crate::testkit::free_addr()),
    };

    // Footprint.
    let node = SimNode::start(bins, &spec(0, vec![("WEB_VERSION".into(), "1.0.0".into())])).await?;
    let started = Instant::now();
    let mut index = 0;
    loop {
        let (ok, idx) = passing(&consul_http, consul.http_addr(), index).await;
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
    let rss_kib = proc_status_kib(pid, "VmRSS:").unwrap_or(0);
    let peak_rss_kib = proc_status_kib(pid, "VmHWM:").unwrap_or(0);
    let anon_kib = proc_status_kib(pid, "RssAnon:").unwrap_or(0);
    let file_kib = proc_status_kib(pid, "RssFile:").unwrap_or(0);
    let mappings = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .map(|t| smaps_breakdown(&t))
        .unwrap_or_default();
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
            let http = consul_http.clone();
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
        mappings,
        cpu_percent,
        ready_to_passing: times,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaps_are_grouped_by_mapping() {
        let smaps = "\
55d0c0000000-55d0c0100000 r--p 00000000 08:01 42 /usr/local/bin/rollgate
Rss:                 100 kB
Anonymous:            40 kB
55d0c0100000-55d0c0200000 r-xp 00100000 08:01 42 /usr/local/bin/rollgate
Rss:                 300 kB
Anonymous:             0 kB
7f0000000000-7f0000100000 r-xp 00000000 08:01 7 /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                 200 kB
Anonymous:             0 kB
7f0000200000-7f0000300000 rw-p 00000000 00:00 0 [heap]
Rss:                  50 kB
Anonymous:            50 kB
7f0000300000-7f0000400000 rw-p 00000000 00:00 0
Rss:                   8 kB
Anonymous:             8 kB
";
        let g = smaps_breakdown(smaps);
        let names: Vec<&str> = g.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "rollgate code",
                "libc",
                "rollgate read-only data",
                "heap",
                "other anonymous"
            ]
        );
        assert_eq!(g[2].anon_kib, 40);
        assert_eq!(g.iter().map(|m| m.rss_kib).sum::<u64>(), 658);
    }
}
