//! Benchmark: the rollout's gate reaction and overhead.
//!
//! A group of `instances` (default 12) on image 1.0.0, run by the fleet
//! simulator, one `rollgate coordinator` with auto approval, batch `batch`.
//! Each run publishes a new image whose app boots in `boot_delay`, and
//! measures from the sandbox Consul's commit journal (the moment each index
//! was committed, every write of the rollout and plan records, every check
//! status change), so no figure depends on how often anything polls:
//!
//! - **gate reaction**, per batch: from the gate (the commit at which the
//!   batch's last new instance's last check turned passing, plus
//!   `min_healthy_time`) to the commit of the rollout record's move from
//!   `launching` to `retiring` (the coordinator's next action: it saw the
//!   change through its blocking query, waited `min_healthy_time`,
//!   protected the new instances, then persisted the state);
//! - **overhead**: the rollout's wall time (the record's first commit to
//!   the commit of the plan's outcome) divided by the floor Σ over batches
//!   (boot + `min_healthy_time`), where a batch's boot is measured: from
//!   the commit that put the batch in `launching` to its gate commit (the
//!   app's boot delay, the process start and the first round of both
//!   checks, which no coordinator can shorten). The nominal floor,
//!   batches × (boot delay + `min_healthy_time`), is reported too.
//!
//! Consul runs as in production (ACLs on, Consul's timings): the agents,
//! the coordinator and `rollgate publish` have their roles' tokens from
//! `config/acl/*.hcl`; the measuring reads use a `global-read-only` token.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::aws_tap::{AwsCall, AwsTap};
use crate::consul::{Journal, Status};
use crate::moto::REGION;
use crate::moto::seed::{ImageSpec, register_image};
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
    /// Every batch's gate reaction taken apart (the coordinator's AWS
    /// calls through [`AwsTap`]).
    pub parts: Vec<GateParts>,
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
    let bench = super::world::consul(dir, None).await?;
    let (moto, fleet) = super::world::web_group(bins, dir, &bench, settings.instances).await?;
    let super::world::BenchConsul { consul, http, .. } = bench;
    let addr = consul.http_addr();
    // The coordinator's AWS calls go through the tap; the simulator's and
    // the bench's own go to moto directly.
    let tap = AwsTap::start(moto.endpoint()).await?;
    let anchor = (Instant::now(), super::wall_ms());
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
            moto = tap.endpoint(),
            batch = settings.batch,
            mh = settings.min_healthy.as_millis(),
            token = dir.join(format!("{role}.token")).display().to_string(),
        )
    };
    std::fs::write(&config, text("coordinator"))?;
    let ci_config = dir.join("ci.toml");
    std::fs::write(&ci_config, text("ci"))?;
    let mut coordinator = super::world::spawn_coordinator(bins, &config, None)?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut reactions = Vec::new();
    let mut durations = Vec::new();
    let mut boots = Vec::new();
    let mut parts = Vec::new();
    for run in 1..=settings.runs {
        let version = format!("1.{run}.0");
        let boot = format!("{}ms", settings.boot_delay.as_millis());
        let spec = ImageSpec::new("unpublished/web", &version).tag("sandbox:boot-delay", &boot);
        let image = register_image(&moto.sdk_config(), &spec).await?;
        super::world::publish(bins, &ci_config, "acmeinc/web", &image, &version).await?;
        let followed = follow(&http, &consul, run as u64, &settings, &tap, anchor).await?;
        reactions.extend(followed.reactions);
        parts.extend(followed.parts);
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
        parts,
    })
}

/// What one rollout measured.
pub(crate) struct Followed {
    pub(crate) reactions: Vec<Duration>,
    pub(crate) duration: Duration,
    /// Per batch: from the commit of the record that put the batch in
    /// `launching` to the commit of its last new instance's last check
    /// turning passing.
    pub(crate) boots: Vec<Duration>,
    /// Per batch, when the coordinator's AWS calls were tapped: its gate
    /// reaction taken apart.
    pub(crate) parts: Vec<GateParts>,
}

/// Waits until rollout `web-<n>` has an outcome (polling, 100 ms: the
/// figures come from the journal, not from when this loop looks), then
/// measures it from the journal.
async fn follow(
    http: &reqwest::Client,
    consul: &crate::consul::ServerHandle,
    n: u64,
    settings: &RolloutBench,
    tap: &AwsTap,
    anchor: (Instant, u64),
) -> anyhow::Result<Followed> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Some(plan) = observe::plan(http, consul.http_addr(), n).await {
            if plan["outcome"].is_object() {
                let result = plan["outcome"]["result"].as_str().unwrap_or("?");
                if result != "succeeded" {
                    bail!(
                        "rollout web-{n} ended {result}: {}",
                        plan["outcome"]["reason"]
                    );
                }
                let journal = consul
                    .journal()
                    .context("the bench's Consul runs without its journal")?;
                let calls = tap.calls();
                let taps = Taps {
                    calls: &calls,
                    group: "web-asg",
                    anchor,
                };
                return measure(&journal, "web", n, settings.min_healthy, Some(&taps));
            }
        }
        if Instant::now() > deadline {
            bail!("rollout web-{n} did not end in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One write of the rollout record, decoded.
struct RecordWrite {
    index: u64,
    state: String,
    new: Vec<String>,
    /// Per new instance (as `new`), its `passing_since`: the coordinator's
    /// clock (ms since the epoch) at the health read that first saw it
    /// passing.
    passing_since: Vec<Option<u64>>,
}

/// What the coordinator's AWS calls and clock add to a measurement: the
/// tap's record of its calls and its group, and a moment read on both
/// clocks (the bench's `Instant`, wall-clock ms) to place the record's
/// `passing_since` on the journal's clock.
pub(crate) struct Taps<'a> {
    /// Every call the coordinator made, in order of arrival.
    pub(crate) calls: &'a [AwsCall],
    /// The service's Auto Scaling group.
    pub(crate) group: &'a str,
    /// `(Instant::now(), wall ms)` taken together.
    pub(crate) anchor: (Instant, u64),
}

impl Taps<'_> {
    /// The wall-clock `ms` on the bench's clock (±1 ms).
    fn instant(&self, ms: u64) -> Instant {
        let (at, wall) = self.anchor;
        if ms >= wall {
            at + Duration::from_millis(ms - wall)
        } else {
            at.checked_sub(Duration::from_millis(wall - ms))
                .unwrap_or(at)
        }
    }
}

/// A gate reaction taken apart (see [`Followed::parts`]).
#[derive(Debug, Clone, Copy)]
pub struct GateParts {
    /// Health commit → the coordinator's health read that first saw the
    /// batch's last instance passing (its `passing_since`).
    pub seen: Duration,
    /// Gate (health commit + `min_healthy_time`) → the coordinator's first
    /// request acting on it (`SetInstanceProtection` of the batch) arriving
    /// at the tap: the coordinator's own reaction.
    pub coordinator: Duration,
    /// Of `coordinator`, the AWS describe calls of this group it waited
    /// for (arrived after the gate, answered before the acting request).
    pub describes: Duration,
    /// The acting request's time in moto (arrival at the tap → answer).
    pub moto: Duration,
    /// moto's answer → the commit of the record's move to `retiring`
    /// (the notice enqueued, the fenced write).
    pub record: Duration,
}

/// Measures rollout `<service>-<n>` from the journal: per batch, the gate
/// (the commit at which its last new instance's last check turned passing,
/// plus `min_healthy`) to the commit of the record's move from `launching`
/// to `retiring`; the wall time from the record's first write to the
/// plan's outcome.
pub(crate) fn measure(
    journal: &Journal,
    service: &str,
    n: u64,
    min_healthy: Duration,
    taps: Option<&Taps<'_>>,
) -> anyhow::Result<Followed> {
    let id = format!("{service}-{n}");
    let rollout_key = format!("rollgate/services/{service}/rollout");
    let plan_key = format!("rollgate/services/{service}/plans/{n:010}");
    let writes: Vec<RecordWrite> = journal
        .kv_writes()
        .iter()
        .filter(|w| w.key == rollout_key)
        .filter_map(|w| {
            let v: serde_json::Value = serde_json::from_slice(&w.value).ok()?;
            (v["spec"]["id"].as_str() == Some(id.as_str())).then(|| RecordWrite {
                index: w.index,
                state: v["state"]["state"].as_str().unwrap_or("").to_string(),
                new: v["state"]["new"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|i| i["id"].as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                passing_since: v["state"]["new"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter(|i| i["id"].is_string())
                            .map(|i| i["passing_since"].as_u64())
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect();
    let (Some(first), Some(outcome)) = (
        writes.first(),
        journal
            .kv_writes()
            .iter()
            .filter(|w| w.key == plan_key)
            .find(|w| {
                serde_json::from_slice::<serde_json::Value>(&w.value)
                    .is_ok_and(|v| v["outcome"].is_object())
            }),
    ) else {
        bail!("the journal has no record of rollout {id} or its outcome");
    };
    let at = |index: u64| {
        journal
            .commit_time(index)
            .with_context(|| format!("index {index} has no commit time"))
    };
    let duration = at(outcome.index)?.saturating_duration_since(at(first.index)?);
    let mut reactions = Vec::new();
    let mut boots = Vec::new();
    let mut parts = Vec::new();
    for pair in writes.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        if before.state != "launching" || after.state != "retiring" || before.new.is_empty() {
            continue;
        }
        let launched = writes
            .iter()
            .find(|w| w.state == "launching" && w.new == before.new)
            .map_or(before.index, |w| w.index);
        let Some(passing) = before
            .new
            .iter()
            .map(|instance| last_turned_passing(journal, instance, after.index))
            .collect::<Option<Vec<u64>>>()
            .and_then(|v| v.into_iter().max())
        else {
            continue;
        };
        let passing_at = at(passing)?;
        let committed = at(after.index)?;
        reactions.push(committed.saturating_duration_since(passing_at + min_healthy));
        boots.push(passing_at.saturating_duration_since(at(launched)?));
        if let Some(taps) = taps {
            if let Some(p) = take_apart(taps, before, passing_at, min_healthy, committed) {
                parts.push(p);
            }
        }
    }
    Ok(Followed {
        reactions,
        duration,
        boots,
        parts,
    })
}

/// One batch's gate reaction taken apart with the tap's record: `before`
/// is the last record write in `launching`, `passing_at` the health
/// commit, `committed` the commit of the move to `retiring`. `None` when
/// the record or the tap lacks a piece (no `passing_since`, no protection
/// call in the window).
fn take_apart(
    taps: &Taps<'_>,
    before: &RecordWrite,
    passing_at: Instant,
    min_healthy: Duration,
    committed: Instant,
) -> Option<GateParts> {
    let seen_ms = before
        .passing_since
        .iter()
        .copied()
        .collect::<Option<Vec<u64>>>()?;
    let seen = taps.instant(seen_ms.into_iter().max()?);
    let gate = passing_at + min_healthy;
    let ours = |c: &&AwsCall| {
        c.group.as_deref() == Some(taps.group) || c.instances.iter().any(|i| before.new.contains(i))
    };
    let act = taps.calls.iter().filter(ours).find(|c| {
        c.action == "SetInstanceProtection"
            && c.protect == Some(true)
            && c.arrived >= passing_at
            && c.arrived <= committed
            && c.instances.iter().any(|i| before.new.contains(i))
    })?;
    let describes = taps
        .calls
        .iter()
        .filter(ours)
        .filter(|c| {
            c.action.starts_with("Describe") && c.arrived >= gate && c.answered <= act.arrived
        })
        .map(|c| c.answered.saturating_duration_since(c.arrived))
        .sum();
    Some(GateParts {
        seen: seen.saturating_duration_since(passing_at),
        coordinator: act.arrived.saturating_duration_since(gate),
        describes,
        moto: act.answered.saturating_duration_since(act.arrived),
        record: committed.saturating_duration_since(act.answered),
    })
}

/// The index at which the last of `instance`'s checks (its node's, the
/// fleet naming the node `node-<instance>`) turned passing before
/// `before`; `None` when none changed in the journal.
fn last_turned_passing(journal: &Journal, instance: &str, before: u64) -> Option<u64> {
    let node = format!("node-{instance}");
    let mut last: BTreeMap<&str, (u64, Status)> = BTreeMap::new();
    for c in journal
        .check_changes()
        .iter()
        .filter(|c| c.node == node && c.index < before)
    {
        last.insert(c.check_id.as_str(), (c.index, c.status));
    }
    last.values()
        .filter(|(_, status)| *status == Status::Passing)
        .map(|(index, _)| *index)
        .max()
}
