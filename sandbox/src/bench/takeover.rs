//! Benchmark: leader takeover after SIGKILL.
//!
//! A group of `instances` (default 6) run by the fleet simulator, two real
//! `rollgate coordinator` replicas (`a`, `b`) with the default lock and
//! liveness settings, auto approval. Each run publishes a new image and,
//! at a random moment of its rollout, SIGKILLs the replica holding the
//! leader lock, then measures from outside, through blocking queries on
//! the lock key:
//!
//! - **lock freed**: from the SIGKILL to the key losing the dead leader's
//!   session (its liveness check's TTL ran out and Consul invalidated the
//!   session);
//! - **takeover**: from the SIGKILL to the key naming the other replica's
//!   session (its first acquisition, after the lock-delay), from which it
//!   resumes the rollout with fenced writes.
//!
//! The killed replica is started again only after the takeover (a
//! restarted replica removes its predecessor's check at once, which would
//! measure the restart, not the death), and becomes the standby. Every
//! rollout must succeed; at the end the fleet's counters must show exactly
//! one launch and one termination per replaced instance (an instance
//! terminated twice, or a wrong one, shows as a missing or extra instance).
//!
//! Consul runs as in production (ACLs on, Consul's timings): the agents,
//! the coordinators and `rollgate publish` have their roles' tokens from
//! `config/acl/*.hcl`; the measuring reads use a `global-read-only` token.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use rand::Rng as _;
use tokio::process::Child;

use crate::fleet::InstanceState;
use crate::moto::seed::{ImageSpec, register_image};
use crate::moto::{Moto, REGION};
use crate::node::Binaries;
use crate::observe;

/// The lock key (`consul.kv_prefix` `rollgate`).
const LEADER_KEY: &str = "rollgate/leader";

/// Settings of the takeover benchmark.
#[derive(Debug, Clone)]
pub struct TakeoverBench {
    /// SIGKILLs, one per rollout.
    pub kills: usize,
    /// Instances in the group.
    pub instances: usize,
    /// Batch size.
    pub batch: u32,
    /// The app's boot delay in the new images.
    pub boot_delay: Duration,
    /// `min_healthy_time` of the rollouts.
    pub min_healthy: Duration,
}

impl TakeoverBench {
    /// The issue's scenario: 20 kills.
    pub fn issue() -> Self {
        Self {
            kills: 20,
            instances: 6,
            batch: 2,
            boot_delay: Duration::from_secs(2),
            min_healthy: Duration::from_secs(2),
        }
    }
}

/// One kill's measurements.
#[derive(Debug, Clone)]
pub struct Kill {
    /// The rollout (`web-<n>`).
    pub rollout: u64,
    /// The rollout state the leader was killed in.
    pub state: String,
    /// SIGKILL to the dead leader's session leaving the lock key.
    pub freed: Duration,
    /// SIGKILL to the other replica's acquisition.
    pub takeover: Duration,
}

/// Results of the takeover benchmark.
#[derive(Debug, Clone)]
pub struct TakeoverResults {
    /// Settings used.
    pub settings: TakeoverBench,
    /// Every kill, in order.
    pub kills: Vec<Kill>,
    /// Rollouts that succeeded (all of them, or the run fails).
    pub rollouts_succeeded: usize,
    /// The warm-up rollout's wall time (no kill), which bounds the kill
    /// moments.
    pub warmup: Duration,
    /// Nodes the fleet simulator started and stopped.
    pub launched: u64,
    /// Nodes stopped (terminated instances).
    pub terminated: u64,
    /// What launched and terminated must be: one each per replaced
    /// instance (plus the initial group's launches).
    pub expected_launched: u64,
    /// See `expected_launched`.
    pub expected_terminated: u64,
}

impl TakeoverResults {
    /// Takeover times, sorted.
    pub fn takeovers(&self) -> Vec<Duration> {
        let mut v: Vec<Duration> = self.kills.iter().map(|k| k.takeover).collect();
        v.sort();
        v
    }

    /// Lock-freed times, sorted.
    pub fn freed(&self) -> Vec<Duration> {
        let mut v: Vec<Duration> = self.kills.iter().map(|k| k.freed).collect();
        v.sort();
        v
    }
}

/// The lock key as seen by one blocking read.
#[derive(Debug, Clone, Default)]
struct LockView {
    index: u64,
    session: Option<String>,
    holder: Option<String>,
}

async fn read_lock(
    http: &reqwest::Client,
    consul: SocketAddr,
    index: u64,
) -> anyhow::Result<LockView> {
    let mut url = format!("http://{consul}/v1/kv/{LEADER_KEY}");
    if index > 0 {
        url.push_str(&format!("?index={index}&wait=60s"));
    }
    let resp = http.get(url).send().await?;
    let new_index = resp
        .headers()
        .get("X-Consul-Index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(1);
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(LockView {
            index: new_index,
            ..LockView::default()
        });
    }
    let entries: Vec<serde_json::Value> = resp.error_for_status()?.json().await?;
    let entry = entries.first().cloned().unwrap_or_default();
    let holder = entry["Value"]
        .as_str()
        .and_then(|raw| base64::engine::general_purpose::STANDARD.decode(raw).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["holder"].as_str().map(str::to_string));
    Ok(LockView {
        // A lower index is a reset (Consul's rule): start over from 1.
        index: if new_index < index {
            1
        } else {
            new_index.max(1)
        },
        session: entry["Session"].as_str().map(str::to_string),
        holder,
    })
}

/// A coordinator replica process.
struct Replica {
    name: String,
    child: Child,
}

fn spawn_replica(bins: &Binaries, dir: &Path, name: &str) -> anyhow::Result<Replica> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("coordinator-{name}.log")))?;
    let child =
        super::world::spawn_coordinator(bins, &dir.join(format!("{name}.toml")), Some(log))?;
    Ok(Replica {
        name: name.to_string(),
        child,
    })
}

/// Runs the benchmark in `dir`.
pub async fn run(
    settings: TakeoverBench,
    bins: &Binaries,
    dir: &Path,
) -> anyhow::Result<TakeoverResults> {
    let bench = super::world::consul(dir, None).await?;
    let (moto, fleet) = super::world::web_group(bins, dir, &bench, settings.instances).await?;
    let super::world::BenchConsul { consul, http, .. } = bench;
    let addr = consul.http_addr();
    let started = Instant::now();
    while observe::passing(&http, addr, "web").await.len() < settings.instances {
        if started.elapsed() > Duration::from_secs(90) {
            bail!("the group never became passing");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The lock and liveness settings are the defaults: what production gets.
    let text = |replica: &str, role: &str| {
        format!(
            "[consul]\naddress = \"http://{addr}\"\ntoken_file = {token:?}\n\n[coordinator]\nregistry_poll = \"1h\"\n\
             replica_name = \"{replica}\"\naws_region = \"{REGION}\"\naws_endpoint = \"{moto}\"\n\n[[services]]\nname = \"web\"\n\
             auto_scaling_group = \"web-asg\"\nlaunch_template = \"web-asg-lt\"\nartifact = \"acmeinc/web\"\n\
             approval = \"auto\"\n\n[services.rollout]\nbatch_size = {batch}\nmin_healthy_time = \"{mh}ms\"\n\
             healthy_deadline = \"2m\"\nprogress_deadline = \"5m\"\n",
            moto = moto.endpoint(),
            batch = settings.batch,
            mh = settings.min_healthy.as_millis(),
            token = dir.join(format!("{role}.token")).display().to_string(),
        )
    };
    for name in ["a", "b"] {
        std::fs::write(dir.join(format!("{name}.toml")), text(name, "coordinator"))?;
    }
    let ci_config = dir.join("ci.toml");
    std::fs::write(&ci_config, text("ci", "ci"))?;
    let mut replicas = vec![spawn_replica(bins, dir, "a")?];
    wait_for_leader(&http, addr, Duration::from_secs(60)).await?;
    replicas.push(spawn_replica(bins, dir, "b")?);
    // Let b register its check and contend.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let publish = |n: u64| publish(bins, &moto, &ci_config, n, settings.boot_delay);
    // A warm-up rollout without a kill, to know how long one takes.
    let warmup_started = Instant::now();
    publish(1).await?;
    wait_outcome(&http, addr, 1).await?;
    let warmup = warmup_started.elapsed();
    let mut rng = rand::rng();
    let mut kills = Vec::new();
    for k in 0..settings.kills {
        let n = k as u64 + 2;
        publish(n).await?;
        // The rollout is under way once its record exists.
        let t0 = Instant::now();
        let version = format!("1.{n}.0");
        while observe::kv_json(&http, addr, "rollgate/services/web/rollout")
            .await
            .is_none_or(|r| r["spec"]["target_version"].as_str() != Some(version.as_str()))
        {
            if t0.elapsed() > Duration::from_secs(60) {
                bail!("rollout web-{n} never started");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let delay = warmup.mul_f64(rng.random_range(0.0..0.8));
        tokio::time::sleep(delay).await;
        let state = observe::kv_json(&http, addr, "rollgate/services/web/rollout")
            .await
            .and_then(|r| r["state"]["state"].as_str().map(str::to_string))
            .unwrap_or_else(|| "finishing".into());
        let before = read_lock(&http, addr, 0).await?;
        let (Some(dead_session), Some(holder)) = (before.session.clone(), before.holder.clone())
        else {
            bail!("nobody holds the lock before kill {}", k + 1);
        };
        let Some(pos) = replicas.iter().position(|r| r.name == holder) else {
            bail!("the lock holder {holder:?} is not one of the replicas");
        };
        let mut dead = replicas.remove(pos);
        let killed_at = Instant::now();
        dead.child
            .start_kill()
            .context("sending SIGKILL to the leader")?;
        let _ = dead.child.wait().await;
        let (freed, takeover) = follow_takeover(&http, addr, &dead_session, before.index).await?;
        let freed = freed.saturating_duration_since(killed_at);
        let takeover = takeover.saturating_duration_since(killed_at);
        tracing::info!(kill = k + 1, rollout = n, state = %state, freed = ?freed, takeover = ?takeover,
            "Leader killed and replaced.");
        kills.push(Kill {
            rollout: n,
            state,
            freed,
            takeover,
        });
        // The killed replica comes back as the standby.
        replicas.push(spawn_replica(bins, dir, &dead.name)?);
        wait_outcome(&http, addr, n).await?;
    }
    let rollouts = settings.kills + 1;
    // Drained instances stop a little after the rollout's end.
    let expected_terminated = (settings.instances * rollouts) as u64;
    let expected_launched = (settings.instances * (rollouts + 1)) as u64;
    let settle = Instant::now();
    let mut counters = fleet.counters();
    while counters.stopped < expected_terminated && settle.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        counters = fleet.counters();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    counters = fleet.counters();
    let running = fleet
        .snapshot()
        .iter()
        .filter(|i| !matches!(i.state, InstanceState::Stopped))
        .count();
    for mut r in replicas {
        let _ = r.child.start_kill();
        let _ = r.child.wait().await;
    }
    fleet.shutdown().await;
    consul.shutdown().await;
    let _ = moto.shutdown();
    if running != settings.instances {
        bail!(
            "{running} instances running at the end, expected {}",
            settings.instances
        );
    }
    Ok(TakeoverResults {
        settings,
        kills,
        rollouts_succeeded: rollouts,
        warmup,
        launched: counters.started,
        terminated: counters.stopped,
        expected_launched,
        expected_terminated,
    })
}

async fn wait_for_leader(
    http: &reqwest::Client,
    consul: SocketAddr,
    within: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    while read_lock(http, consul, 0).await?.session.is_none() {
        if started.elapsed() > within {
            bail!("no coordinator took the leader lock within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Follows the lock key from `index` until a session other than `dead`
/// holds it; answers when `dead` left the key and when the other took it.
async fn follow_takeover(
    http: &reqwest::Client,
    consul: SocketAddr,
    dead: &str,
    mut index: u64,
) -> anyhow::Result<(Instant, Instant)> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut freed: Option<Instant> = None;
    loop {
        let view = read_lock(http, consul, index.max(1)).await?;
        let now = Instant::now();
        index = view.index;
        match view.session.as_deref() {
            Some(s) if s == dead => {}
            Some(_) => return Ok((freed.unwrap_or(now), now)),
            None => {
                freed.get_or_insert(now);
            }
        }
        if now > deadline {
            bail!("no replica took the lock within 2 minutes of the kill");
        }
    }
}

async fn publish(
    bins: &Binaries,
    moto: &Moto,
    ci_config: &Path,
    n: u64,
    boot_delay: Duration,
) -> anyhow::Result<()> {
    let version = format!("1.{n}.0");
    let boot = format!("{}ms", boot_delay.as_millis());
    let spec = ImageSpec::new("unpublished/web", &version).tag("sandbox:boot-delay", &boot);
    let image = register_image(&moto.sdk_config(), &spec).await?;
    super::world::publish(bins, ci_config, "acmeinc/web", &image, &version).await
}

/// Waits for plan `web-<n>` to end; fails unless it succeeded.
async fn wait_outcome(http: &reqwest::Client, consul: SocketAddr, n: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Some(plan) = observe::plan(http, consul, n).await {
            if plan["outcome"].is_object() {
                let result = plan["outcome"]["result"].as_str().unwrap_or("?");
                if result != "succeeded" {
                    bail!(
                        "rollout web-{n} ended {result}: {}",
                        plan["outcome"]["reason"]
                    );
                }
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("rollout web-{n} did not end in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
