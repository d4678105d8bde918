//! Light simulated instances, for benchmarks of many services at once.
//!
//! The full simulator ([`super::Fleet`]) runs the real `web` app and the
//! real `rollgate agent` for each instance: faithful, and about 15 MiB and
//! two processes an instance, which a 2-core machine cannot do a thousand
//! times. A light instance has no process at all: for each member moto
//! launches in one of the followed groups, the simulator adds a Consul node
//! (`node-<instance>`, its own agent listener, as the full simulator does)
//! and registers the service through that node's agent API with the agent
//! role's token, the way `rollgate agent` does: the same IDs, the same
//! `instance_id`/`version`/`artifact` Meta, and the agent's TTL check
//! starting at `warning` ("not answered yet"). After the image's
//! [`BOOT_DELAY_TAG`](super::BOOT_DELAY_TAG) it reports the check passing,
//! or critical for a [`BROKEN_TAG`](super::BROKEN_TAG) image. A member that
//! leaves the group is deregistered and its node removed at once (a real
//! agent drains first; nothing here serves traffic).
//!
//! What it leaves out, and why a benchmark of the coordinator may: the
//! HTTP check Consul runs against the app (one TTL check carries the
//! instance's verdict), the TTL's refresh (the TTL is long enough for any
//! benchmark run), and the drain. The coordinator under test still sees
//! Consul exactly as it would: services, checks, blocking queries, ACLs.
//!
//! It only reads AWS: one `DescribeAutoScalingGroups` for all the groups
//! per poll, and `DescribeInstances` only for members it has not seen yet
//! (their image and EC2 state); a member it knows leaves when its group
//! says so or drops it. The full simulator reads every member of its one
//! group each poll; at a thousand instances that was most of moto's work,
//! and moto's slowness was then in every figure of the coordinator.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use aws_config::SdkConfig;
use serde_json::json;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::acl_roles::Secret;
use crate::consul::ServerHandle;

use super::aws::Aws;
use super::image::ImageBehaviour;

/// The TTL of a light instance's check: longer than any benchmark run, so
/// nothing needs to refresh it.
const LIGHT_TTL: &str = "30m";

/// One group to follow and the Consul service its instances register.
#[derive(Debug, Clone)]
pub struct LightGroup {
    /// The Auto Scaling group.
    pub group: String,
    /// The Consul service name (the coordinator's `services[].name`).
    pub service: String,
}

/// Settings of the light simulator.
#[derive(Debug, Clone)]
pub struct LightConfig {
    /// moto's SDK configuration (loopback only).
    pub aws: SdkConfig,
    /// The groups to follow.
    pub groups: Vec<LightGroup>,
    /// How often each group is read.
    pub poll: Duration,
    /// The agent role's token, used for registrations and check updates.
    pub agent_token: Secret,
}

/// A running light simulator; [`LightFleetHandle::shutdown`] stops it.
#[derive(Debug)]
pub struct LightFleetHandle {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    started: Arc<std::sync::atomic::AtomicUsize>,
}

impl LightFleetHandle {
    /// Instances started so far.
    pub fn started(&self) -> usize {
        self.started.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops following; the nodes it made stay in Consul.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

/// Starts following the groups.
pub fn start(consul: Arc<ServerHandle>, config: LightConfig) -> LightFleetHandle {
    let cancel = CancellationToken::new();
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let task = tokio::spawn(run(consul, config, cancel.clone(), Arc::clone(&started)));
    LightFleetHandle {
        cancel,
        task,
        started,
    }
}

/// A member known to the simulator.
#[derive(Debug)]
struct Known {
    node: String,
    group: String,
}

async fn run(
    consul: Arc<ServerHandle>,
    config: LightConfig,
    cancel: CancellationToken,
    started: Arc<std::sync::atomic::AtomicUsize>,
) {
    let aws = Aws::new(&config.aws);
    let http = match crate::acl_roles::http_client(&config.agent_token, Duration::from_secs(10)) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "Light fleet: no HTTP client.");
            return;
        }
    };
    let mut known: BTreeMap<String, Known> = BTreeMap::new();
    let mut gone: BTreeSet<String> = BTreeSet::new();
    let mut images: BTreeMap<String, ImageBehaviour> = BTreeMap::new();
    let mut booting: JoinSet<()> = JoinSet::new();
    let names: Vec<String> = config.groups.iter().map(|g| g.group.clone()).collect();
    let mut tick = tokio::time::interval(config.poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let mut read = match aws
            .members_of(&names, |id| !known.contains_key(id) && !gone.contains(id))
            .await
        {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(error = %e, "Light fleet: reading the groups failed; retrying.");
                continue;
            }
        };
        for g in &config.groups {
            let Some(members) = read.remove(&g.group) else {
                continue;
            };
            // moto drops a terminated instance from the group at once: one
            // that is simply gone has left too.
            let present: BTreeSet<&str> = members.iter().map(|m| m.instance_id.as_str()).collect();
            let vanished: Vec<String> = known
                .iter()
                .filter(|(id, k)| k.group == g.group && !present.contains(id.as_str()))
                .map(|(id, _)| id.clone())
                .collect();
            for id in vanished {
                if let Some(k) = known.remove(&id) {
                    gone.insert(id);
                    if let Err(e) = consul.remove_node(&k.node).await {
                        tracing::warn!(node = %k.node, error = %e, "Light fleet: removing a node failed.");
                    }
                }
            }
            for m in &members {
                let id = &m.instance_id;
                if m.leaving() {
                    if let Some(k) = known.remove(id) {
                        gone.insert(id.clone());
                        if let Err(e) = consul.remove_node(&k.node).await {
                            tracing::warn!(node = %k.node, error = %e, "Light fleet: removing a node failed.");
                        }
                    }
                    continue;
                }
                if !m.wants_machine() || known.contains_key(id) || gone.contains(id) {
                    continue;
                }
                let Some(image_id) = m.image_id.clone() else {
                    continue;
                };
                if !images.contains_key(&image_id) {
                    match aws.image(&image_id).await {
                        Ok(b) => {
                            images.insert(image_id.clone(), b);
                        }
                        Err(e) => {
                            tracing::warn!(image = %image_id, error = %e, "Light fleet: unreadable image; retrying.");
                            continue;
                        }
                    }
                }
                let behaviour = images[&image_id].clone();
                let node = format!("node-{id}");
                match register(
                    &consul,
                    &http,
                    &node,
                    &g.service,
                    id,
                    &image_id,
                    &m.availability_zone,
                    &behaviour,
                )
                .await
                {
                    Ok(agent) => {
                        known.insert(
                            id.clone(),
                            Known {
                                node,
                                group: g.group.clone(),
                            },
                        );
                        started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let http = http.clone();
                        let check = format!("{}-{id}:agent", g.service);
                        let cancel = cancel.clone();
                        booting.spawn(async move {
                            tokio::select! {
                                () = cancel.cancelled() => {}
                                () = tokio::time::sleep(behaviour.boot_delay) => {
                                    report(&http, agent, &check, &behaviour).await;
                                }
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(node = %node, error = %e, "Light fleet: starting an instance failed; retrying.");
                        let _ = consul.remove_node(&node).await;
                    }
                }
            }
        }
        while booting.try_join_next().is_some() {}
    }
    booting.shutdown().await;
}

/// Adds the node and registers the service as `rollgate agent` would;
/// answers the node's agent address.
#[allow(clippy::too_many_arguments)]
async fn register(
    consul: &ServerHandle,
    http: &reqwest::Client,
    node: &str,
    service: &str,
    instance: &str,
    image: &str,
    zone: &str,
    behaviour: &ImageBehaviour,
) -> anyhow::Result<SocketAddr> {
    let agent = consul
        .add_node(node)
        .await
        .with_context(|| format!("adding Consul node {node}"))?;
    let id = format!("{service}-{instance}");
    let body = json!({
        "ID": id,
        "Name": service,
        "Address": "127.0.0.1",
        "Port": 80,
        "Meta": {
            "instance_id": instance,
            "ami_id": image,
            "version": behaviour.version,
            "az": zone,
            "artifact": behaviour.artifact,
        },
        "Checks": [{
            "CheckID": format!("{id}:agent"),
            "Name": format!("{service} light instance"),
            "TTL": LIGHT_TTL,
            "Status": "warning",
        }],
    });
    let resp = http
        .put(format!("http://{agent}/v1/agent/service/register"))
        .json(&body)
        .send()
        .await
        .context("PUT /v1/agent/service/register")?;
    anyhow::ensure!(
        resp.status().is_success(),
        "PUT /v1/agent/service/register on {node}: {}",
        resp.status()
    );
    Ok(agent)
}

/// Reports the booted instance's verdict on its TTL check.
async fn report(http: &reqwest::Client, agent: SocketAddr, check: &str, b: &ImageBehaviour) {
    let (status, output) = if b.broken {
        ("critical", "GET /health: 500 (broken image)".to_string())
    } else {
        ("passing", format!("version {} answers", b.version))
    };
    let url = format!("http://{agent}/v1/agent/check/update/{check}");
    let body = json!({"Status": status, "Output": output});
    match http.put(&url).json(&body).send().await {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => tracing::warn!(check, status = %r.status(), "Light fleet: check update refused."),
        Err(e) => tracing::warn!(check, error = %e, "Light fleet: check update failed."),
    }
}
