//! Benchmark: how soon a broken image is caught (`failure_time`).
//!
//! A group of `instances` (default 4) on image 1.0.0, run by the fleet
//! simulator, one `rollgate coordinator` with auto approval, batch 2,
//! `healthy_deadline` 2m and `failure_time` left at its default. Each run
//! publishes a broken image whose app boots in 2 s (503, "not answering
//! yet") and then answers 500 on `/health` for ever, and measures from the
//! sandbox Consul's commit journal (see `consul::journal`), so no figure
//! depends on how often anything polls:
//!
//! - **first bad answer → rollout leaves its batch**: from the commit at
//!   which the first of the batch's new instances' agent checks turned
//!   critical (the node agent's probe got its first bad answer and set its
//!   TTL check at once) to the commit of the rollout record's first write
//!   outside `launching` (`reverting`: the revert begins).
//!
//! A last run publishes a good image that boots slower than
//! `failure_time`; it must succeed (slow boots never fail early).
//!
//! Consul runs as in production (ACLs on, Consul's timings), the roles
//! with their tokens from `config/acl/*.hcl`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::consul::{Journal, Status};
use crate::moto::REGION;
use crate::moto::seed::{ImageSpec, register_image};
use crate::node::Binaries;
use crate::observe;

/// `failure_time` as rollgate defaults it (config/rollgate.toml); the
/// scenario leaves the key out of its configuration.
pub const DEFAULT_FAILURE_TIME: Duration = Duration::from_secs(8);

/// Settings of the fail-fast benchmark.
#[derive(Debug, Clone)]
pub struct FailfastBench {
    /// Instances in the group.
    pub instances: usize,
    /// Broken rollouts to measure.
    pub runs: usize,
    /// The broken app's boot delay (503 until then).
    pub broken_boot: Duration,
    /// The good app's boot delay in the last run: longer than
    /// `failure_time`.
    pub slow_boot: Duration,
}

impl Default for FailfastBench {
    fn default() -> Self {
        Self {
            instances: 4,
            runs: 5,
            broken_boot: Duration::from_secs(2),
            slow_boot: Duration::from_secs(12),
        }
    }
}

/// Results of the fail-fast benchmark.
#[derive(Debug, Clone)]
pub struct FailfastResults {
    /// Settings used.
    pub settings: FailfastBench,
    /// Per broken run: first bad answer → the rollout left its batch.
    pub reactions: Vec<Duration>,
    /// Per broken run: the batch's launch → the first bad answer (boot,
    /// process start, 503s, the first probe after the boot).
    pub to_first_bad: Vec<Duration>,
    /// One failure reason, as recorded.
    pub reason: String,
    /// The slow good image's outcome (`succeeded` expected).
    pub slow_outcome: String,
}

/// Runs the benchmark in `dir`.
pub async fn run(
    settings: FailfastBench,
    bins: &Binaries,
    dir: &Path,
) -> anyhow::Result<FailfastResults> {
    let bench = super::world::consul(dir, None).await?;
    let (moto, fleet) = super::world::web_group(bins, dir, &bench, settings.instances).await?;
    let super::world::BenchConsul { consul, http, .. } = bench;
    let addr = consul.http_addr();
    wait_passing(&http, addr, settings.instances).await?;
    let text = |role: &str| {
        format!(
            "[consul]\naddress = \"http://{addr}\"\ntoken_file = {token:?}\n\n[coordinator]\nregistry_poll = \"1h\"\nlock_delay = \"1s\"\n\
             aws_region = \"{REGION}\"\naws_endpoint = \"{moto}\"\n\n[[services]]\nname = \"web\"\n\
             auto_scaling_group = \"web-asg\"\nlaunch_template = \"web-asg-lt\"\nartifact = \"acmeinc/web\"\n\
             approval = \"auto\"\n\n[services.rollout]\nbatch_size = 2\nmin_healthy_time = \"2s\"\n\
             healthy_deadline = \"2m\"\nprogress_deadline = \"5m\"\n",
            moto = moto.endpoint(),
            token = dir.join(format!("{role}.token")).display().to_string(),
        )
    };
    let config = dir.join("coordinator.toml");
    std::fs::write(&config, text("coordinator"))?;
    let ci_config = dir.join("ci.toml");
    std::fs::write(&ci_config, text("ci"))?;
    let mut coordinator = super::world::spawn_coordinator(bins, &config, None)?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let publish = |version: String, spec: ImageSpec| {
        let moto = &moto;
        let ci_config = &ci_config;
        async move {
            let image = register_image(&moto.sdk_config(), &spec).await?;
            super::world::publish(bins, ci_config, "acmeinc/web", &image, &version).await?;
            anyhow::Ok(())
        }
    };
    let mut reactions = Vec::new();
    let mut to_first_bad = Vec::new();
    let mut reason = String::new();
    for run in 1..=settings.runs {
        let version = format!("1.{run}.0");
        let boot = format!("{}ms", settings.broken_boot.as_millis());
        let spec = ImageSpec::new("unpublished/web", &version)
            .tag("sandbox:boot-delay", &boot)
            .tag("sandbox:broken", "true");
        publish(version, spec).await?;
        let (result, why) = outcome(&http, addr, run as u64).await?;
        if result != "reverted" || !why.contains("failure_time") {
            bail!("broken rollout web-{run} ended {result}, not by failure_time: {why}");
        }
        let journal = consul
            .journal()
            .context("the bench's Consul runs without its journal")?;
        let (launch_to_bad, bad_to_left) = measure(&journal, &format!("web-{run}"))?;
        to_first_bad.push(launch_to_bad);
        reactions.push(bad_to_left);
        reason = why;
        // The revert restores the group; the next run starts from it.
        wait_passing(&http, addr, settings.instances).await?;
    }
    let n = settings.runs as u64 + 1;
    let version = format!("1.{n}.0");
    let boot = format!("{}ms", settings.slow_boot.as_millis());
    let spec = ImageSpec::new("unpublished/web", &version).tag("sandbox:boot-delay", &boot);
    publish(version, spec).await?;
    let (slow_outcome, why) = outcome(&http, addr, n).await?;
    if slow_outcome != "succeeded" {
        bail!("the slow good image ended {slow_outcome}: {why}");
    }
    let _ = coordinator.start_kill();
    let _ = coordinator.wait().await;
    fleet.shutdown().await;
    consul.shutdown().await;
    let _ = moto.shutdown();
    Ok(FailfastResults {
        settings,
        reactions,
        to_first_bad,
        reason,
        slow_outcome,
    })
}

/// Waits until `count` instances of `web` pass.
async fn wait_passing(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    count: usize,
) -> anyhow::Result<()> {
    let started = Instant::now();
    while observe::passing(http, addr, "web").await.len() < count {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the group never became passing");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Waits for plan `web-<n>`'s outcome: (result, reason).
async fn outcome(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    n: u64,
) -> anyhow::Result<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Some(plan) = observe::plan(http, addr, n).await {
            let o = &plan["outcome"];
            if o.is_object() {
                return Ok((
                    o["result"].as_str().unwrap_or("?").to_string(),
                    o["reason"].as_str().unwrap_or("").to_string(),
                ));
            }
        }
        if Instant::now() > deadline {
            bail!("rollout web-{n} did not end in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// From the journal, for rollout `id`: (the first batch's launch → the
/// first bad answer of one of its new instances, that answer → the
/// rollout record's first write outside `launching`).
fn measure(journal: &Journal, id: &str) -> anyhow::Result<(Duration, Duration)> {
    let writes: Vec<(u64, serde_json::Value)> = journal
        .kv_writes()
        .iter()
        .filter(|w| w.key == "rollgate/services/web/rollout")
        .filter_map(|w| {
            let v: serde_json::Value = serde_json::from_slice(&w.value).ok()?;
            (v["spec"]["id"].as_str() == Some(id)).then_some((w.index, v))
        })
        .collect();
    let launched = writes
        .iter()
        .find(|(_, v)| v["state"]["state"] == "launching")
        .map(|(i, _)| *i)
        .with_context(|| format!("{id} never launched a batch"))?;
    let left = writes
        .iter()
        .find(|(i, v)| *i > launched && v["state"]["state"] != "launching")
        .map(|(i, _)| *i)
        .with_context(|| format!("{id} never left its batch"))?;
    let new: Vec<String> = writes
        .iter()
        .filter(|(i, v)| *i < left && v["state"]["state"] == "launching")
        .filter_map(|(_, v)| v["state"]["new"].as_array().cloned())
        .flatten()
        .filter_map(|n| n["id"].as_str().map(str::to_string))
        .collect();
    let checks: Vec<String> = new.iter().map(|i| format!("web-{i}:agent")).collect();
    let first_bad = journal
        .check_changes()
        .iter()
        .find(|c| c.status == Status::Critical && checks.contains(&c.check_id))
        .map(|c| c.index)
        .with_context(|| format!("no new instance of {id} answered wrong"))?;
    let at = |index: u64| {
        journal
            .commit_time(index)
            .with_context(|| format!("index {index} has no commit time"))
    };
    Ok((
        at(first_bad)?.saturating_duration_since(at(launched)?),
        at(left)?.saturating_duration_since(at(first_bad)?),
    ))
}

/// Markdown for the scenario.
pub fn section(r: &FailfastResults, command: &str) -> String {
    let mut s = String::new();
    let mut sorted = r.reactions.clone();
    sorted.sort();
    let p50 = super::quantile(&sorted, 0.5);
    let max = sorted.last().copied().unwrap_or_default();
    let min = sorted.first().copied().unwrap_or_default();
    let secs = |d: Duration| format!("{:.2} s", d.as_secs_f64());
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    let goal = Duration::from_secs(10);
    let _ = writeln!(s, "## Fail fast on a broken image\n");
    let _ = writeln!(s, "| measure | value | target | |");
    let _ = writeln!(s, "|---|---|---|---|");
    let _ = writeln!(
        s,
        "| first bad answer → rollout leaves its batch (revert begins), max of {} runs | {} | ≤ 10 s | {} |",
        sorted.len(),
        secs(max),
        verdict(max <= goal && !sorted.is_empty())
    );
    let _ = writeln!(s, "| same, p50 | {} | | |", secs(p50));
    let _ = writeln!(s, "| same, min | {} | | |", secs(min));
    let _ = writeln!(
        s,
        "| of which the coordinator's own time (minus failure_time {}), max | {} | | |",
        humantime::format_duration(DEFAULT_FAILURE_TIME),
        secs(max.saturating_sub(DEFAULT_FAILURE_TIME))
    );
    let mut boots = r.to_first_bad.clone();
    boots.sort();
    let _ = writeln!(
        s,
        "| batch launched → first bad answer, p50 (boot {}, process start, first probe) | {} | | |",
        humantime::format_duration(r.settings.broken_boot),
        secs(super::quantile(&boots, 0.5))
    );
    let _ = writeln!(
        s,
        "| a good image booting in {} (> failure_time) | {} | succeeded | {} |",
        humantime::format_duration(r.settings.slow_boot),
        r.slow_outcome,
        verdict(r.slow_outcome == "succeeded")
    );
    let _ = writeln!(
        s,
        "\nAll runs, first bad answer → left the batch (ms): {}\n",
        super::whole_ms(r.reactions.iter())
    );
    let _ = writeln!(s, "A recorded reason: `{}`\n", r.reason);
    super::provenance(&mut s, command);
    let _ = writeln!(
        s,
        "- Method: {} instances, batch 2, min_healthy_time 2s, healthy_deadline 2m, failure_time left at its default \
         ({}), one coordinator (auto approval), the fleet simulator (real `web` and `rollgate agent` per instance, \
         checks every 1 s) against moto and the sandbox Consul with ACLs on. Each run publishes a broken image \
         (`sandbox:broken`, boot {}: 503 \"not answering yet\" while booting, then /health 500). Times are commit times \
         from the sandbox Consul's journal: the first bad answer is the commit at which the first of the batch's new \
         instances' agent checks turned critical (the probe sets it at once); the batch is left at the commit of the \
         rollout record's first write outside `launching` (`reverting`). A last run rolls out a good image booting \
         slower than failure_time, which must succeed.",
        r.settings.instances,
        humantime::format_duration(DEFAULT_FAILURE_TIME),
        humantime::format_duration(r.settings.broken_boot),
    );
    let _ = writeln!(
        s,
        "- Note: before `failure_time`, a broken image was caught at `healthy_deadline` only (45 s in the demo, 5 min by \
         default). The figure is failure_time (8 s, the default: longer than one agent probe interval plus its timeout, \
         so one bad answer alone never fails a batch) plus the coordinator's reaction: its blocking query sees the \
         critical check within milliseconds and it wakes at the instant the timer runs out."
    );
    s
}
