//! Benchmark: the rollout's gate reaction and overhead.
//!
//! A group of `instances` (default 12) on image 1.0.0, run by the fleet
//! simulator, one `rollgate coordinator` with auto approval, batch `batch`.
//! Each run publishes a new image whose app boots in `boot_delay`, and
//! measures, from outside, through Consul:
//!
//! - **gate reaction**, per batch: from the moment the batch's last new
//!   instance has been passing for `min_healthy_time` (passing first seen
//!   through a blocking query on `/v1/health/service/web?passing`) to the
//!   rollout record's transition to `retiring` (the coordinator's next
//!   action: the new instances are protected, then the state persisted);
//! - **overhead**: the rollout's wall time (record created to outcome)
//!   divided by the floor Σ over batches (boot + `min_healthy_time`), where
//!   a batch's boot is measured: from its launch to its last new instance
//!   first passing (the app's boot delay, the process start and the first
//!   round of both checks, which no coordinator can shorten). The nominal
//!   floor, batches × (boot delay + `min_healthy_time`), is reported too.
//!
//! Consul runs as in production (ACLs on, Consul's timings): the agents,
//! the coordinator and `rollgate publish` have their roles' tokens from
//! `config/acl/*.hcl`; the measuring reads use a `global-read-only` token.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::Command;

use crate::acl_roles::Secret;
use crate::consul::{Config as ConsulConfig, Server};
use crate::fleet::{Fleet, FleetConfig};
use crate::moto::seed::{ImageSpec, SeedSpec, register_image, seed_group};
use crate::moto::{Moto, REGION};
use crate::node::Binaries;
use crate::observe;

/// Settings of the rollout benchmark.
#[derive(Debug, Clone)]
pub struct RolloutBench {
    /// Instances in the group.
    pub instances: usize,
    /// Batch size.
    pub batch: u32,
    /// The app's boot delay in the new images.
    pub boot_delay: Duration,
    /// `min_healthy_time` of the rollout.
    pub min_healthy: Duration,
    /// Rollouts to measure.
    pub runs: usize,
}

/// Results of the rollout benchmark.
#[derive(Debug, Clone)]
pub struct RolloutResults {
    /// Settings used.
    pub settings: RolloutBench,
    /// Gate reaction samples, sorted.
    pub reactions: Vec<Duration>,
    /// Wall time of each rollout.
    pub durations: Vec<Duration>,
    /// The nominal floor: batches × (boot delay + min_healthy_time).
    pub floor: Duration,
    /// Per rollout, per batch: launch to the batch's last new instance
    /// first seen passing (boot delay + process start + the first passing
    /// check of both checks).
    pub boots: Vec<Vec<Duration>>,
}

impl RolloutResults {
    /// Per rollout: the floor with boots as measured, Σ (boot + min_healthy_time).
    pub fn measured_floors(&self) -> Vec<Duration> {
        self.boots
            .iter()
            .map(|b| b.iter().map(|d| *d + self.settings.min_healthy).sum())
            .collect()
    }
}

/// Runs the benchmark in `dir`.
pub async fn run(
    settings: RolloutBench,
    bins: &Binaries,
    dir: &Path,
) -> anyhow::Result<RolloutResults> {
    let management = Secret::random();
    let consul = Server::start(ConsulConfig::with_acls(management.expose())).await?;
    let roles = crate::acl_roles::create_workspace_roles(consul.http_addr(), &management).await?;
    for role in ["coordinator", "ci"] {
        roles.write_file(role, &dir.join(format!("{role}.token")))?;
    }
    let read =
        crate::acl_roles::create_read_token(consul.http_addr(), &management, "bench reads").await?;
    let moto = Moto::start()
        .await
        .context("starting moto (bash sandbox/scripts/prerequisites)")?;
    let count = i32::try_from(settings.instances).unwrap_or(12);
    seed_group(
        &moto,
        &SeedSpec::new("web-asg", ImageSpec::new("acmeinc/web", "1.0.0"), count),
    )
    .await?;
    let agent_token = roles
        .secret("agent")
        .cloned()
        .context("no agent role token")?;
    let fleet = Fleet::start(
        FleetConfig::new(
            moto.sdk_config(),
            "web-asg",
            consul.http_addr(),
            bins.clone(),
            dir.join("fleet"),
        )
        .with_agent_token(agent_token),
    )?;
    let http = crate::acl_roles::http_client(&read, Duration::from_secs(660))?;
    let addr = consul.http_addr();
    let started = Instant::now();
    while observe::passing(&http, addr, "web").await.len() < settings.instances {
        if started.elapsed() > Duration::from_secs(90) {
            bail!("the group never became passing");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let config = dir.join("coordinator.toml");
    let text = |role: &str| {
        format!(
            "[consul]\naddress = \"http://{addr}\"\ntoken_file = {token:?}\n\n[coordinator]\nregistry_poll = \"1h\"\nlock_delay = \"1s\"\n\
             aws_region = \"{REGION}\"\naws_endpoint = \"{moto}\"\n\n[[services]]\nname = \"web\"\n\
             auto_scaling_group = \"web-asg\"\nlaunch_template = \"web-asg-lt\"\nartifact = \"acmeinc/web\"\n\
             approval = \"auto\"\n\n[services.rollout]\nbatch_size = {batch}\nmin_healthy_time = \"{mh}ms\"\n\
             healthy_deadline = \"2m\"\nprogress_deadline = \"5m\"\n",
            moto = moto.endpoint(),
            batch = settings.batch,
            mh = settings.min_healthy.as_millis(),
            token = dir.join(format!("{role}.token")).display().to_string(),
        )
    };
    std::fs::write(&config, text("coordinator"))?;
    let ci_config = dir.join("ci.toml");
    std::fs::write(&ci_config, text("ci"))?;
    let env = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let mut coordinator = Command::new(&bins.rollgate)
        .arg("--config")
        .arg(&config)
        .arg("coordinator")
        .envs(env)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut reactions = Vec::new();
    let mut durations = Vec::new();
    let mut boots = Vec::new();
    for run in 1..=settings.runs {
        let version = format!("1.{run}.0");
        let boot = format!("{}ms", settings.boot_delay.as_millis());
        let spec = ImageSpec::new("unpublished/web", &version).tag("sandbox:boot-delay", &boot);
        let image = register_image(&moto.sdk_config(), &spec).await?;
        let out = Command::new(&bins.rollgate)
            .arg("--config")
            .arg(&ci_config)
            .args([
                "publish",
                "--artifact",
                "acmeinc/web",
                "--ami",
                &image,
                "--version",
                &version,
            ])
            .envs(env)
            .output()
            .await?;
        if !out.status.success() {
            bail!("publish failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let followed = follow(&http, addr, run as u64, &settings).await?;
        reactions.extend(followed.reactions);
        durations.push(followed.duration);
        boots.push(followed.boots);
    }
    let _ = coordinator.start_kill();
    let _ = coordinator.wait().await;
    fleet.shutdown().await;
    consul.shutdown().await;
    let _ = moto.shutdown();
    reactions.sort();
    let batches = (settings.instances as u32).div_ceil(settings.batch.max(1));
    Ok(RolloutResults {
        floor: (settings.boot_delay + settings.min_healthy) * batches,
        settings,
        reactions,
        durations,
        boots,
    })
}

/// What one rollout measured.
struct Followed {
    reactions: Vec<Duration>,
    duration: Duration,
    /// Per batch: from the batch's launch (`launched_at` in the record, the
    /// coordinator's clock on this machine) to its last new instance first
    /// seen passing.
    boots: Vec<Duration>,
}

/// Milliseconds since the Unix epoch, comparable with the record's times.
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// Follows rollout `web-<n>`; answers its gate reactions, boots and wall
/// time.
async fn follow(
    http: &reqwest::Client,
    consul: std::net::SocketAddr,
    n: u64,
    settings: &RolloutBench,
) -> anyhow::Result<Followed> {
    let mut passing_since: BTreeMap<String, (Instant, u64)> = BTreeMap::new();
    let mut started: Option<Instant> = None;
    let mut last_state = String::new();
    let mut batch_new: Vec<String> = Vec::new();
    let mut launched_at: u64 = 0;
    let mut reactions = Vec::new();
    let mut boots = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        // Poll tightly: both the gate and the transition are timed here.
        let now = Instant::now();
        let now_ms = wall_ms();
        let ids: Vec<String> = observe::passing(http, consul, "web")
            .await
            .iter()
            .filter_map(|e| {
                e["Service"]["Meta"]["instance_id"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        passing_since.retain(|id, _| ids.contains(id));
        for id in ids {
            passing_since.entry(id).or_insert((now, now_ms));
        }
        let rollout = observe::kv_json(http, consul, "rollgate/services/web/rollout").await;
        if let Some(r) = &rollout {
            started.get_or_insert(now);
            let state = r["state"]["state"].as_str().unwrap_or("").to_string();
            if state == "launching" {
                batch_new = r["state"]["new"]
                    .as_array()
                    .map(|v| {
                        v.iter()
                            .filter_map(|i| i["id"].as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                launched_at = r["state"]["launched_at"].as_u64().unwrap_or(0);
            }
            if state == "retiring" && last_state == "launching" && !batch_new.is_empty() {
                let last_passing = batch_new
                    .iter()
                    .filter_map(|id| passing_since.get(id))
                    .max();
                if let Some((first_passing, first_passing_ms)) = last_passing {
                    let gate = *first_passing + settings.min_healthy;
                    reactions.push(now.saturating_duration_since(gate));
                    boots.push(Duration::from_millis(
                        first_passing_ms.saturating_sub(launched_at),
                    ));
                }
            }
            last_state = state;
        }
        if let Some(plan) = observe::plan(http, consul, n).await {
            if plan["outcome"].is_object() {
                let result = plan["outcome"]["result"].as_str().unwrap_or("?");
                if result != "succeeded" {
                    bail!(
                        "rollout web-{n} ended {result}: {}",
                        plan["outcome"]["reason"]
                    );
                }
                let duration = started.map(|s| s.elapsed()).unwrap_or_default();
                return Ok(Followed {
                    reactions,
                    duration,
                    boots,
                });
            }
        }
        if Instant::now() > deadline {
            bail!("rollout web-{n} did not end in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
