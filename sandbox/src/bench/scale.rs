//! Benchmark: one coordinator rolling many services at once.
//!
//! `services` groups (default 20) of `instances` instances each (default
//! 50) in moto, followed by the light simulator ([`crate::fleet::light`]:
//! Consul nodes and registrations as `rollgate agent` makes them, no
//! processes), and one real `rollgate coordinator` (auto approval) for all
//! of them. Each service gets a new image at the same moment (`rollgate
//! publish`, one per service, started together), and the bench waits until
//! every rollout has an outcome. Measured:
//!
//! - **gate reaction**, per batch of every service, from the sandbox
//!   Consul's commit journal exactly as in the rollout scenario: from the
//!   commit of the batch's last new instance's check turning passing, plus
//!   `min_healthy_time`, to the commit of the record's move to `retiring`;
//! - the coordinator's **CPU** (utime + stime from /proc over the rollouts'
//!   window, as a share of one core) and **resident memory** (peak VmHWM);
//! - **Consul requests per second** over the same window, every client
//!   included (coordinator, simulator, the bench's own polling), and the
//!   coordinator's share estimated by subtracting the others' counted
//!   requests.
//!
//! Consul runs as in production (ACLs on, Consul's timings): the
//! simulator has the agent role's token, the coordinator and `rollgate
//! publish` theirs.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::fleet::light::{self, LightConfig, LightGroup};
use crate::moto::seed::{ImageSpec, SeedSpec, register_image, seed_group};
use crate::moto::{Moto, REGION};
use crate::node::Binaries;

use super::aws_tap::AwsTap;
use super::rollout::{GateParts, Taps};
use super::{cpu_ticks, proc_status_kib};

/// Settings of the scale benchmark.
#[derive(Debug, Clone)]
pub struct ScaleBench {
    /// Services (one group each).
    pub services: usize,
    /// Instances per group.
    pub instances: usize,
    /// Batch size.
    pub batch: u32,
    /// The new images' boot delay.
    pub boot_delay: Duration,
    /// `min_healthy_time` of the rollouts.
    pub min_healthy: Duration,
}

impl Default for ScaleBench {
    fn default() -> Self {
        Self {
            services: 20,
            instances: 50,
            batch: 10,
            boot_delay: Duration::from_secs(2),
            min_healthy: Duration::from_secs(3),
        }
    }
}

/// Results of the scale benchmark.
#[derive(Debug, Clone)]
pub struct ScaleResults {
    /// Settings used.
    pub settings: ScaleBench,
    /// Gate reactions of every batch of every service, sorted.
    pub reactions: Vec<Duration>,
    /// From the first publish to the last outcome.
    pub window: Duration,
    /// Per service, its rollout's wall time, sorted.
    pub durations: Vec<Duration>,
    /// The coordinator's CPU time over the window.
    pub cpu: Duration,
    /// The coordinator's peak resident memory, KiB.
    pub peak_rss_kib: u64,
    /// Consul `/v1/` requests over the window, every client.
    pub consul_requests: u64,
    /// Every batch's gate reaction taken apart (the coordinator's AWS
    /// calls through [`AwsTap`]).
    pub parts: Vec<GateParts>,
    /// The coordinator's AWS calls over the window, by action, with their
    /// mean time in moto.
    pub aws_calls: Vec<(String, usize, Duration)>,
}

/// The name of service `i` (from 1).
fn service(i: usize) -> String {
    format!("svc{i:02}")
}

/// A role's policy for the services `svc01`, `svc02`, ... instead of the
/// one service `web` the files in config/acl are written for: in
/// production each service's agents and pipeline hold the policy with
/// their service's name (the files say so); here one token per role
/// stands for all of them. Every rule on a `web` path becomes a prefix
/// rule on the `svc` services (`rollgate/services/svc`,
/// `rollgate/trigger/acmeinc_svc`, `service_prefix "svc"`): wider than
/// any one service's policy, never narrower.
fn for_many_services(policy: &str) -> String {
    let mut out = String::with_capacity(policy.len());
    for line in policy.lines() {
        let trimmed = line.trim_start();
        let widened = if trimmed.starts_with('#') {
            line.to_string()
        } else if trimmed.starts_with("service \"web\"") {
            line.replace("service \"web\"", "service_prefix \"svc\"")
        } else if let Some(start) = line.find("\"rollgate/services/web/") {
            let keyword = if trimmed.starts_with("key_prefix") {
                "key_prefix"
            } else {
                "key"
            };
            let end = line[start + 1..]
                .find('"')
                .map_or(line.len(), |e| start + 2 + e);
            format!(
                "{}key_prefix \"rollgate/services/svc\"{}",
                &line[..line.find(keyword).unwrap_or(0)],
                &line[end..]
            )
        } else if line.contains("\"rollgate/trigger/acmeinc_web\"") {
            line.replace(
                "key \"rollgate/trigger/acmeinc_web\"",
                "key_prefix \"rollgate/trigger/acmeinc_svc\"",
            )
        } else {
            line.to_string()
        };
        out.push_str(&widened);
        out.push('\n');
    }
    out
}

/// Runs the benchmark in `dir`.
pub async fn run(
    settings: ScaleBench,
    bins: &Binaries,
    dir: &Path,
) -> anyhow::Result<ScaleResults> {
    // The roles' policies from config/acl, widened from the one service
    // `web` to the services `svc01`... (see `for_many_services`).
    let policies = dir.join("acl");
    std::fs::create_dir_all(&policies)?;
    let mut web_rules = 0;
    for entry in std::fs::read_dir(crate::acl_roles::policy_dir())? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "hcl") {
            let text = std::fs::read_to_string(&path)?;
            web_rules += text.matches("web").count();
            std::fs::write(
                policies.join(path.file_name().unwrap_or_default()),
                for_many_services(&text),
            )?;
        }
    }
    anyhow::ensure!(web_rules > 0, "config/acl names no `web` rule to widen");
    let super::world::BenchConsul {
        consul,
        roles,
        http,
    } = super::world::consul(dir, Some(&policies)).await?;
    let consul = Arc::new(consul);
    let addr = consul.http_addr();
    let agent_token = roles
        .secret("agent")
        .cloned()
        .context("no agent role token")?;
    let moto = Moto::start()
        .await
        .context("starting moto (bash sandbox/scripts/prerequisites)")?;
    let count = i32::try_from(settings.instances).unwrap_or(50);
    let mut groups = Vec::new();
    for i in 1..=settings.services {
        let name = service(i);
        seed_group(
            &moto,
            &SeedSpec::new(
                &format!("{name}-asg"),
                ImageSpec::new(&format!("acmeinc/{name}"), "1.0.0"),
                count,
            ),
        )
        .await?;
        groups.push(LightGroup {
            group: format!("{name}-asg"),
            service: name,
        });
    }
    let fleet = light::start(
        Arc::clone(&consul),
        LightConfig {
            aws: moto.sdk_config(),
            groups,
            poll: Duration::from_secs(1),
            agent_token,
        },
    );
    let total = settings.services * settings.instances;
    let started = Instant::now();
    loop {
        let mut passing = 0;
        for i in 1..=settings.services {
            passing += crate::observe::passing(&http, addr, &service(i))
                .await
                .len();
        }
        if passing >= total {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("only {passing} of {total} instances became passing");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The coordinator's AWS calls go through the tap; the simulator's and
    // the bench's own go to moto directly.
    let tap = AwsTap::start(moto.endpoint()).await?;
    let anchor = (Instant::now(), super::wall_ms());
    let config = dir.join("coordinator.toml");
    let text = |role: &str| {
        let mut t = format!(
            "[consul]\naddress = \"http://{addr}\"\ntoken_file = {token:?}\n\n[coordinator]\nregistry_poll = \"1h\"\n\
             aws_region = \"{REGION}\"\naws_endpoint = \"{moto}\"\n",
            moto = tap.endpoint(),
            token = dir.join(format!("{role}.token")).display().to_string(),
        );
        for i in 1..=settings.services {
            let name = service(i);
            t.push_str(&format!(
                "\n[[services]]\nname = \"{name}\"\nauto_scaling_group = \"{name}-asg\"\n\
                 launch_template = \"{name}-asg-lt\"\nartifact = \"acmeinc/{name}\"\napproval = \"auto\"\n\n\
                 [services.rollout]\nbatch_size = {batch}\nmin_healthy_time = \"{mh}ms\"\n\
                 healthy_deadline = \"5m\"\nprogress_deadline = \"10m\"\n",
                batch = settings.batch,
                mh = settings.min_healthy.as_millis(),
            ));
        }
        t
    };
    std::fs::write(&config, text("coordinator"))?;
    let ci_config = dir.join("ci.toml");
    std::fs::write(&ci_config, text("ci"))?;
    let mut coordinator = super::world::spawn_coordinator(bins, &config, None)?;
    let pid = coordinator.id().context("the coordinator has no PID")?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // New images first (registering is not part of the window), then every
    // publish at once.
    let boot = format!("{}ms", settings.boot_delay.as_millis());
    let mut images = Vec::new();
    for i in 1..=settings.services {
        let spec = ImageSpec::new("unpublished/web", "1.1.0").tag("sandbox:boot-delay", &boot);
        images.push((i, register_image(&moto.sdk_config(), &spec).await?));
    }
    let cpu_before = cpu_ticks(pid).unwrap_or(0);
    let requests_before = consul.requests();
    let window_start = Instant::now();
    let mut publishes = tokio::task::JoinSet::new();
    for (i, image) in images {
        let bins = bins.clone();
        let ci_config = ci_config.clone();
        publishes.spawn(async move {
            let artifact = format!("acmeinc/{}", service(i));
            super::world::publish(&bins, &ci_config, &artifact, &image, "1.1.0").await
        });
    }
    while let Some(done) = publishes.join_next().await {
        done??;
    }
    let mut pending: Vec<usize> = (1..=settings.services).collect();
    let deadline = Instant::now() + Duration::from_secs(900);
    while !pending.is_empty() {
        let mut still = Vec::new();
        for i in pending {
            let key = format!("rollgate/services/{}/plans/{:010}", service(i), 1);
            match crate::observe::kv_json(&http, addr, &key).await {
                Some(plan) if plan["outcome"].is_object() => {
                    let result = plan["outcome"]["result"].as_str().unwrap_or("?");
                    if result != "succeeded" {
                        bail!(
                            "the rollout of {} ended {result}: {}",
                            service(i),
                            plan["outcome"]["reason"]
                        );
                    }
                }
                _ => still.push(i),
            }
        }
        pending = still;
        if Instant::now() > deadline {
            bail!("{} rollouts did not end in 15 minutes", pending.len());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let window = window_start.elapsed();
    let cpu = Duration::from_millis(cpu_ticks(pid).unwrap_or(0).saturating_sub(cpu_before) * 10);
    let consul_requests = consul.requests().saturating_sub(requests_before);
    let peak_rss_kib = proc_status_kib(pid, "VmHWM:").unwrap_or(0);

    let journal = consul
        .journal()
        .context("the bench's Consul runs without its journal")?;
    let calls = tap.calls();
    let mut reactions = Vec::new();
    let mut durations = Vec::new();
    let mut parts = Vec::new();
    for i in 1..=settings.services {
        let group = format!("{}-asg", service(i));
        let taps = Taps {
            calls: &calls,
            group: &group,
            anchor,
        };
        let m =
            super::rollout::measure(&journal, &service(i), 1, settings.min_healthy, Some(&taps))?;
        reactions.extend(m.reactions);
        durations.push(m.duration);
        parts.extend(m.parts);
    }
    let mut by_action: std::collections::BTreeMap<String, (usize, Duration)> = Default::default();
    for c in calls.iter().filter(|c| c.arrived >= window_start) {
        let e = by_action.entry(c.action.clone()).or_default();
        e.0 += 1;
        e.1 += c.answered.saturating_duration_since(c.arrived);
    }
    let aws_calls = by_action
        .into_iter()
        .map(|(a, (n, total))| (a, n, total / u32::try_from(n.max(1)).unwrap_or(u32::MAX)))
        .collect();
    reactions.sort();
    durations.sort();

    let _ = coordinator.start_kill();
    let _ = coordinator.wait().await;
    fleet.shutdown().await;
    if let Ok(consul) = Arc::try_unwrap(consul) {
        consul.shutdown().await;
    }
    let _ = moto.shutdown();
    Ok(ScaleResults {
        settings,
        reactions,
        window,
        durations,
        cpu,
        peak_rss_kib,
        consul_requests,
        parts,
        aws_calls,
    })
}

#[cfg(test)]
mod tests {
    use super::for_many_services;

    #[test]
    fn web_rules_become_prefix_rules_on_the_svc_services() {
        let policy = "# service \"web\" in a comment stays\nservice \"web\" {\n  policy = \"write\"\n}\n\
                      key \"rollgate/services/web/rollout\" {\nkey_prefix \"rollgate/services/web/plans/\" {\n\
                      key \"rollgate/trigger/acmeinc_web\" {\nkey_prefix \"rollgate/services/\" {\n";
        assert_eq!(
            for_many_services(policy),
            "# service \"web\" in a comment stays\nservice_prefix \"svc\" {\n  policy = \"write\"\n}\n\
             key_prefix \"rollgate/services/svc\" {\nkey_prefix \"rollgate/services/svc\" {\n\
             key_prefix \"rollgate/trigger/acmeinc_svc\" {\nkey_prefix \"rollgate/services/\" {\n"
        );
    }
}
