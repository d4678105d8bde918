//! The fleet simulator: makes the instances of an emulated Auto Scaling
//! group real. For every instance moto launches in the group it starts a
//! simulated node ([`SimNode`]: IMDS with the instance's identity, the real
//! `web` app, the real `rollgate agent`) on a Consul node of its own; for
//! every instance that leaves the group it stops that node the way an
//! instance shutdown does (SIGTERM to the agent, which drains: maintenance,
//! wait, deregister; then the app), and removes the Consul node.
//!
//! # How it follows the group
//!
//! A background task polls the group every [`FleetConfig::poll`]
//! (`autoscaling:DescribeAutoScalingGroups`, then `ec2:DescribeInstances`
//! for each member's image and EC2 state; moto reports the launch template's
//! current version per instance, so the image comes from `ImageId` only).
//!
//! - A member that is pending or running in EC2 and in the group's capacity
//!   (`Pending*`, `InService`) or in standby (`EnteringStandby`, `Standby`:
//!   a standby instance keeps running on EC2) and not yet simulated gets a
//!   node. moto marks instances running at once, so nodes start at once;
//!   the app's boot delay simulates the rest of a boot.
//! - A simulated instance that is no longer in the group, is `Terminating*`,
//!   `Terminated` or `Detached`, or is no longer running in EC2, is stopped.
//!   A detached instance would keep running on EC2; the simulator only
//!   simulates members. `Detaching` and warm-pool instances are never
//!   started.
//! - An instance id that was stopped is never started again.
//!
//! What an instance does comes from its AMI's tags ([`image`]):
//! `rollgate:version` (required) is the version the agent expects and the
//! app reports, `rollgate:artifact` goes into the service Meta, and the
//! behaviour tags [`BOOT_DELAY_TAG`], [`BROKEN_TAG`], [`FAIL_AFTER_TAG`] and
//! [`VERSION_OVERRIDE_TAG`] make it slow, broken, or half-baked. Image tags
//! are cached per AMI for [`IMAGE_CACHE_TTL`].
//!
//! Stops run in background tasks, so one slow drain never holds up the loop,
//! and a draining instance keeps serving until its agent has exited. Moto
//! errors are logged and retried at the next poll; an instance that cannot
//! be started (unreadable or invalid image tags, a Consul node or a process
//! that does not start) is logged with the cause and retried with back-off.
//!
//! # What it must never do
//!
//! - Change the AWS world: it only reads (the code under test acts).
//! - Reach anything off loopback: it refuses an AWS configuration without a
//!   loopback endpoint override (so it can never read a real AWS account)
//!   and a Consul address off loopback.
//! - Leak a process: [`FleetHandle::shutdown`] drains and stops every node
//!   and waits for every task; dropping the handle kills every child process
//!   as a last resort.
//!
//! It drives the sandbox Consul only: nodes are added and removed through
//! its control API (`/sandbox/v1/nodes`), which a real Consul lacks.

mod aws;
mod control;
pub mod image;
pub mod light;

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aws_config::SdkConfig;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::acl_roles::Secret;
use crate::imds::Identity;
use crate::moto::REGION;
use crate::node::{Binaries, NodeSpec, SimNode};

use self::aws::{Aws, Member};
use self::control::Control;
pub use self::image::{
    ARTIFACT_TAG, BOOT_DELAY_TAG, BROKEN_TAG, FAIL_AFTER_TAG, ImageBehaviour, ImageError,
    VERSION_OVERRIDE_TAG, VERSION_TAG,
};

/// How long an image's tags are trusted before they are read again (tags
/// change when an image is published).
pub const IMAGE_CACHE_TTL: Duration = Duration::from_secs(10);
/// The longest wait before retrying an instance that could not be started.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);
/// How long past its drain time an agent may take to exit before it is
/// killed.
pub const STOP_MARGIN: Duration = Duration::from_secs(5);
/// The account id moto reports, served in the identity document.
const ACCOUNT_ID: &str = "123456789012";
/// The instance type used when the group reports none.
const DEFAULT_INSTANCE_TYPE: &str = "t3.micro";

/// Why the simulator cannot start.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// An address the simulator would talk to is not on loopback.
    #[error("the fleet simulator only talks to loopback; the {what} {addr} is not on loopback")]
    NotLoopback {
        /// What the address is for.
        what: &'static str,
        /// The address as given.
        addr: String,
    },
    /// The AWS configuration points at AWS itself.
    #[error(
        "the AWS configuration has no endpoint override: the fleet simulator reads the AWS \
         stand-in (moto) only, never AWS; use Moto::sdk_config()"
    )]
    NoEndpoint,
    /// A setting is out of range.
    #[error("invalid fleet simulator setting: {0}")]
    Config(String),
    /// The HTTP client for the Consul control API could not be built.
    #[error("cannot build the HTTP client for the sandbox Consul's control API: {0}")]
    HttpClient(#[source] reqwest::Error),
}

/// How to run the simulator.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The AWS stand-in's SDK configuration ([`crate::moto::Moto::sdk_config`]);
    /// its endpoint must be on loopback.
    pub moto: SdkConfig,
    /// The Auto Scaling group to follow.
    pub group: String,
    /// The sandbox Consul's server listener
    /// ([`crate::consul::ServerHandle::http_addr`]): nodes are added and
    /// removed through its control API.
    pub consul: SocketAddr,
    /// The `web` and `rollgate` binaries every node runs.
    pub binaries: Binaries,
    /// Directory for the nodes' configuration files, one folder per instance.
    pub dir: PathBuf,
    /// The agents' check interval (and Consul's HTTP check interval).
    pub check_interval: Duration,
    /// The agents' TTL.
    pub ttl: Duration,
    /// The agents' drain time: how long a stopping instance stays in
    /// maintenance, still serving, before it deregisters.
    pub drain_time: Duration,
    /// How often the group is read.
    pub poll: Duration,
    /// The Consul ACL token of the node agent role (`config/acl/agent.hcl`,
    /// see [`crate::acl_roles`]), written to each instance's folder as
    /// `consul-token` and given to its agent as `consul.token_file`, as
    /// Puppet does on a real instance. `None` for a Consul with ACLs off.
    pub agent_token: Option<Secret>,
}

impl FleetConfig {
    /// A simulator for `group` with sandbox timings: check every second, TTL
    /// 4 s, drain 1 s, poll every 200 ms.
    pub fn new(
        moto: SdkConfig,
        group: &str,
        consul: SocketAddr,
        binaries: Binaries,
        dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            moto,
            group: group.to_owned(),
            consul,
            binaries,
            dir: dir.into(),
            check_interval: Duration::from_secs(1),
            ttl: Duration::from_secs(4),
            drain_time: Duration::from_secs(1),
            poll: Duration::from_millis(200),
            agent_token: None,
        }
    }

    /// The same, with the agents using `token` (the agent role's token).
    pub fn with_agent_token(self, token: Secret) -> Self {
        Self {
            agent_token: Some(token),
            ..self
        }
    }

    fn validate(&self) -> Result<(), FleetError> {
        if !self.consul.ip().is_loopback() {
            return Err(FleetError::NotLoopback {
                what: "Consul address",
                addr: self.consul.to_string(),
            });
        }
        let endpoint = self.moto.endpoint_url().ok_or(FleetError::NoEndpoint)?;
        let loopback = url::Url::parse(endpoint)
            .ok()
            .is_some_and(|u| match u.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            });
        if !loopback {
            return Err(FleetError::NotLoopback {
                what: "AWS endpoint",
                addr: endpoint.to_owned(),
            });
        }
        if self.group.is_empty() {
            return Err(FleetError::Config("the group name is empty".into()));
        }
        if self.poll < Duration::from_millis(10) {
            return Err(FleetError::Config(format!(
                "poll {:?} is below 10ms",
                self.poll
            )));
        }
        // The agent's own limits: it refuses to start outside them.
        if self.check_interval < Duration::from_secs(1) || self.ttl < Duration::from_secs(2) {
            return Err(FleetError::Config(format!(
                "the agent needs a check interval of at least 1s and a TTL of at least 2s \
                 (got {:?} and {:?})",
                self.check_interval, self.ttl
            )));
        }
        Ok(())
    }
}

/// Where a simulated instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InstanceState {
    /// Its processes are starting, or the app is within its boot delay.
    Booting,
    /// Its processes run and the app's boot delay has passed. Says nothing
    /// about health: a broken image's instance is running too.
    Running,
    /// It left the group: its agent drains (maintenance, then deregister)
    /// while the app keeps serving, then the app stops.
    Draining,
    /// Its processes have exited and its Consul node is gone.
    Stopped,
}

/// One simulated instance, as [`FleetHandle::snapshot`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimInstance {
    /// The EC2 instance id (`i-...`), also the agent's identity.
    pub instance_id: String,
    /// The AMI it was launched from.
    pub image_id: String,
    /// The image's `rollgate:version`: what the agent expects.
    pub version: String,
    /// What the app reports (differs from `version` on a half-baked image).
    pub reported_version: String,
    /// Its availability zone, as the group reports it.
    pub availability_zone: String,
    /// Its Consul node (`node-<instance id>`).
    pub consul_node: String,
    /// Where it is in its life.
    pub state: InstanceState,
    /// Where its app listens, once started.
    pub web_addr: Option<SocketAddr>,
    /// The app's process id, once started (kept after it stopped).
    pub web_pid: Option<u32>,
    /// The agent's process id, once started (kept after it stopped).
    pub agent_pid: Option<u32>,
    /// How the agent exited when it exited on its own while the instance
    /// ran (it never does in normal operation; its log says why).
    pub agent_exit: Option<String>,
}

/// What the simulator did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetCounters {
    /// Nodes started.
    pub started: u64,
    /// Nodes stopped (drained, or killed after the grace).
    pub stopped: u64,
    /// Attempts to start an instance that failed (image tags unreadable or
    /// invalid, Consul node or processes not started); each is retried.
    pub start_failures: u64,
    /// Polls of the group that failed (retried at the next poll).
    pub poll_failures: u64,
}

/// Entry point: see [`Fleet::start`].
#[derive(Debug)]
pub struct Fleet;

impl Fleet {
    /// Validates `config` and starts following the group in the background.
    /// The first poll happens at once.
    pub fn start(config: FleetConfig) -> Result<FleetHandle, FleetError> {
        config.validate()?;
        let control = Control::new(config.consul).map_err(FleetError::HttpClient)?;
        let region = config
            .moto
            .region()
            .map(|r| r.as_ref().to_owned())
            .unwrap_or_else(|| REGION.to_owned());
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            control,
            binaries: config.binaries,
            dir: config.dir,
            region,
            check_interval: config.check_interval,
            ttl: config.ttl,
            drain_time: config.drain_time,
            poll: config.poll,
            agent_token: config.agent_token,
            tracker: TaskTracker::new(),
            kill: CancellationToken::new(),
        });
        let cancel = CancellationToken::new();
        let aws = Aws::new(&config.moto);
        let poll_task = tokio::spawn(poll_loop(
            Arc::clone(&shared),
            aws,
            config.group.clone(),
            cancel.clone(),
        ));
        tracing::info!(group = %config.group, consul = %config.consul, poll = ?config.poll,
            "Fleet simulator started.");
        Ok(FleetHandle {
            shared,
            group: config.group,
            cancel,
            poll_task: Some(poll_task),
        })
    }
}

/// A running simulator. [`FleetHandle::shutdown`] stops it cleanly; dropping
/// it kills every node's processes without draining.
#[derive(Debug)]
pub struct FleetHandle {
    shared: Arc<Shared>,
    group: String,
    cancel: CancellationToken,
    poll_task: Option<JoinHandle<()>>,
}

impl FleetHandle {
    /// The group followed.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Every instance simulated so far (stopped ones included), by id.
    pub fn snapshot(&self) -> Vec<SimInstance> {
        let state = self.shared.lock();
        let now = Instant::now();
        state
            .entries
            .values()
            .map(|e| {
                let mut info = e.info.clone();
                info.state = match e.phase {
                    Phase::Starting => InstanceState::Booting,
                    Phase::Up { ready_at } if now < ready_at => InstanceState::Booting,
                    Phase::Up { .. } => InstanceState::Running,
                    Phase::Draining => InstanceState::Draining,
                    Phase::Stopped => InstanceState::Stopped,
                };
                info
            })
            .collect()
    }

    /// What the simulator did so far.
    pub fn counters(&self) -> FleetCounters {
        self.shared.lock().counters
    }

    /// What the agent of a booting or running instance logged so far
    /// (`None` for an unknown, draining or stopped instance).
    pub fn agent_log(&self, instance_id: &str) -> Option<String> {
        self.shared
            .lock()
            .entries
            .get(instance_id)?
            .node
            .as_ref()
            .map(SimNode::agent_log)
    }

    /// Stops following the group, drains and stops every node (in
    /// parallel: about one drain time), removes their Consul nodes, and
    /// waits for every task. No process of the simulator is left when it
    /// returns.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.poll_task.take() {
            let _ = task.await;
        }
        let up: Vec<(String, String, SimNode)> = {
            let mut state = self.shared.lock();
            state.closing = true;
            state
                .entries
                .iter_mut()
                .filter_map(|(id, e)| {
                    let node = e.node.take()?;
                    e.phase = Phase::Draining;
                    Some((id.clone(), e.info.consul_node.clone(), node))
                })
                .collect()
        };
        for (id, consul_node, node) in up {
            self.shared
                .tracker
                .spawn(stop_node(Arc::clone(&self.shared), id, consul_node, node));
        }
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
        tracing::info!(group = %self.group, "Fleet simulator stopped.");
    }
}

impl Drop for FleetHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
        // Tasks holding a node drop it (killing its processes) when they
        // see this, or when the runtime drops them.
        self.shared.kill.cancel();
        if let Some(task) = self.poll_task.take() {
            task.abort();
        }
        let nodes: Vec<SimNode> = {
            let mut state = self.shared.lock();
            state.closing = true;
            state
                .entries
                .values_mut()
                .filter_map(|e| e.node.take())
                .collect()
        };
        if !nodes.is_empty() {
            tracing::warn!(group = %self.group, nodes = nodes.len(),
                "Fleet simulator dropped without shutdown; killing its nodes.");
        }
        // Every child is spawned with kill_on_drop.
        drop(nodes);
    }
}

/// The internal phase of an instance.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Its Consul node and processes are being started.
    Starting,
    /// Its processes run; the app boots until `ready_at`.
    Up { ready_at: Instant },
    /// Being stopped by a task that owns the node.
    Draining,
    /// Gone.
    Stopped,
}

#[derive(Debug)]
struct Entry {
    info: SimInstance,
    phase: Phase,
    /// Held here while `Up`; moved into the task that stops it.
    node: Option<SimNode>,
}

/// Back-off of an instance that could not be started.
#[derive(Debug)]
struct Retry {
    attempts: u32,
    not_before: Instant,
    last_error: String,
}

#[derive(Debug, Default)]
struct State {
    entries: BTreeMap<String, Entry>,
    retries: HashMap<String, Retry>,
    counters: FleetCounters,
    /// Shutdown began: a node that finishes starting is stopped at once.
    closing: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    control: Control,
    binaries: Binaries,
    dir: PathBuf,
    region: String,
    check_interval: Duration,
    ttl: Duration,
    drain_time: Duration,
    poll: Duration,
    agent_token: Option<Secret>,
    /// Every start and stop task.
    tracker: TaskTracker,
    /// Cancelled on drop: tasks drop their node (killing it) at once.
    kill: CancellationToken,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a failed attempt to start `id` and when to try again.
    fn failed_attempt(&self, id: &str, error: String) {
        let mut state = self.lock();
        state.counters.start_failures += 1;
        let retry = state.retries.entry(id.to_owned()).or_insert(Retry {
            attempts: 0,
            not_before: Instant::now(),
            last_error: String::new(),
        });
        retry.attempts += 1;
        let delay = self
            .poll
            .saturating_mul(1 << retry.attempts.min(10))
            .min(MAX_RETRY_DELAY)
            .max(self.poll);
        retry.not_before = Instant::now() + delay;
        if retry.last_error != error {
            tracing::warn!(instance = %id, attempt = retry.attempts, retry_in = ?delay,
                error = %error, "Cannot start the instance's node; retrying.");
            retry.last_error = error;
        } else {
            tracing::debug!(instance = %id, attempt = retry.attempts, retry_in = ?delay,
                error = %error, "Still cannot start the instance's node; retrying.");
        }
    }
}

async fn poll_loop(shared: Arc<Shared>, aws: Aws, group: String, cancel: CancellationToken) {
    let mut ticker = tokio::time::interval(shared.poll);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut images: HashMap<String, (Instant, ImageBehaviour)> = HashMap::new();
    let mut failing: Option<String> = None;
    let mut missing = false;
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let read = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            read = aws.members(&group) => read,
        };
        let members = match read {
            Err(error) => {
                shared.lock().counters.poll_failures += 1;
                if failing.as_deref() != Some(error.as_str()) {
                    tracing::warn!(group = %group, error = %error,
                        "Cannot read the Auto Scaling group; retrying at the next poll.");
                }
                failing = Some(error);
                continue;
            }
            Ok(found) => {
                if failing.take().is_some() {
                    tracing::info!(group = %group, "Reading the Auto Scaling group works again.");
                }
                match found {
                    Some(members) => {
                        missing = false;
                        members
                    }
                    None => {
                        if !missing {
                            tracing::warn!(group = %group,
                                "The Auto Scaling group does not exist; simulating no instances.");
                        }
                        missing = true;
                        Vec::new()
                    }
                }
            }
        };
        check_agents(&shared);
        stop_leavers(&shared, &members);
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = start_newcomers(&shared, &aws, &members, &mut images) => {}
        }
    }
}

/// Reports an agent that exited on its own (once per instance): the
/// instance then never passes, and the agent's log says why.
fn check_agents(shared: &Shared) {
    let mut state = shared.lock();
    for (id, entry) in &mut state.entries {
        if entry.info.agent_exit.is_some() {
            continue;
        }
        let Some(node) = entry.node.as_mut() else {
            continue;
        };
        let exit = match node.agent_exited() {
            Ok(Some(status)) => status.to_string(),
            Ok(None) => continue,
            Err(e) => format!("unknown ({e})"),
        };
        let log = node.agent_log();
        let tail: Vec<&str> = log.lines().rev().take(10).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        tracing::error!(instance = %id, status = %exit, log = %tail.join("\n"),
            "The instance's agent exited on its own; the instance will not pass.");
        entry.info.agent_exit = Some(exit);
    }
}

/// Moves every simulated instance that left the group into a stop task.
fn stop_leavers(shared: &Arc<Shared>, members: &[Member]) {
    let leaving: Vec<(String, String, SimNode, String)> = {
        let mut state = shared.lock();
        state
            .entries
            .iter_mut()
            .filter(|(_, e)| matches!(e.phase, Phase::Up { .. }))
            .filter_map(|(id, e)| {
                let reason = match members.iter().find(|m| &m.instance_id == id) {
                    None => "no longer in the group".to_owned(),
                    Some(m) if m.leaving() => format!(
                        "lifecycle {}, EC2 state {}",
                        m.lifecycle,
                        m.ec2_state.as_deref().unwrap_or("unknown")
                    ),
                    Some(_) => return None,
                };
                let node = e.node.take()?;
                e.phase = Phase::Draining;
                Some((id.clone(), e.info.consul_node.clone(), node, reason))
            })
            .collect()
    };
    for (id, consul_node, node, reason) in leaving {
        tracing::info!(instance = %id, reason = %reason, drain_time = ?shared.drain_time,
            "Instance is leaving; draining its node.");
        shared
            .tracker
            .spawn(stop_node(Arc::clone(shared), id, consul_node, node));
    }
}

/// Starts a node for every member that runs a machine and has none yet.
async fn start_newcomers(
    shared: &Arc<Shared>,
    aws: &Aws,
    members: &[Member],
    images: &mut HashMap<String, (Instant, ImageBehaviour)>,
) {
    let now = Instant::now();
    let newcomers: Vec<&Member> = {
        let state = shared.lock();
        if state.closing {
            return;
        }
        members
            .iter()
            .filter(|m| m.wants_machine())
            .filter(|m| !state.entries.contains_key(&m.instance_id))
            .filter(|m| {
                state
                    .retries
                    .get(&m.instance_id)
                    .is_none_or(|r| r.not_before <= now)
            })
            .collect()
    };
    for member in newcomers {
        let Some(image_id) = member.image_id.clone() else {
            continue;
        };
        let cached = images
            .get(&image_id)
            .filter(|(at, _)| at.elapsed() < IMAGE_CACHE_TTL)
            .map(|(_, b)| b.clone());
        let behaviour = match cached {
            Some(b) => b,
            None => match aws.image(&image_id).await {
                Ok(b) => {
                    images.insert(image_id.clone(), (Instant::now(), b.clone()));
                    b
                }
                Err(e) => {
                    shared.failed_attempt(
                        &member.instance_id,
                        format!("image {image_id} cannot be simulated: {e}"),
                    );
                    continue;
                }
            },
        };
        let info = SimInstance {
            instance_id: member.instance_id.clone(),
            image_id,
            version: behaviour.version.clone(),
            reported_version: behaviour.reported_version.clone(),
            availability_zone: member.availability_zone.clone(),
            consul_node: format!("node-{}", member.instance_id),
            state: InstanceState::Booting,
            web_addr: None,
            web_pid: None,
            agent_pid: None,
            agent_exit: None,
        };
        {
            let mut state = shared.lock();
            if state.closing {
                return;
            }
            state.entries.insert(
                member.instance_id.clone(),
                Entry {
                    info: info.clone(),
                    phase: Phase::Starting,
                    node: None,
                },
            );
        }
        let instance_type = if member.instance_type.is_empty() {
            DEFAULT_INSTANCE_TYPE.to_owned()
        } else {
            member.instance_type.clone()
        };
        shared.tracker.spawn(start_node(
            Arc::clone(shared),
            info,
            behaviour,
            instance_type,
        ));
    }
}

/// Adds the instance's Consul node and starts its processes; on failure
/// undoes what was done and schedules a retry.
async fn start_node(
    shared: Arc<Shared>,
    info: SimInstance,
    behaviour: ImageBehaviour,
    instance_type: String,
) {
    let id = info.instance_id.clone();
    let attempt = async {
        // The token file first, as Puppet writes it before the agent runs.
        let dir = shared.dir.join(&id);
        let token_file = match &shared.agent_token {
            None => None,
            Some(token) => {
                let path = dir.join("consul-token");
                token.write_file(&path).map_err(|e| {
                    format!("cannot write its Consul token file {}: {e}", path.display())
                })?;
                Some(path)
            }
        };
        let consul = shared.control.add_node(&info.consul_node).await?;
        let spec = NodeSpec {
            identity: Identity {
                instance_id: id.clone(),
                ami_id: info.image_id.clone(),
                availability_zone: info.availability_zone.clone(),
                region: shared.region.clone(),
                local_ipv4: Ipv4Addr::LOCALHOST,
                instance_type,
                account_id: ACCOUNT_ID.to_owned(),
            },
            consul,
            web_env: behaviour.web_env(),
            expected_version: behaviour.version.clone(),
            artifact: behaviour.artifact.clone(),
            check_interval: shared.check_interval,
            ttl: shared.ttl,
            drain_time: shared.drain_time,
            dir,
            token_file,
            // The load generator plays the load balancer from Consul's
            // passing instances; nothing here asks /ready.
            ready_listen: None,
        };
        match SimNode::start(&shared.binaries, &spec).await {
            Ok(node) => Ok(node),
            Err(e) => {
                if let Err(cleanup) = shared.control.remove_node(&info.consul_node).await {
                    tracing::warn!(instance = %id, node = %info.consul_node, error = %cleanup,
                        "Cannot remove the Consul node of an instance that did not start.");
                }
                Err(format!(
                    "its processes ({} and {}) did not start: {e}",
                    shared.binaries.web.display(),
                    shared.binaries.rollgate.display()
                ))
            }
        }
    };
    let result = tokio::select! {
        // Dropping the attempt kills whatever it started.
        _ = shared.kill.cancelled() => return,
        result = attempt => result,
    };
    let node = match result {
        Ok(node) => node,
        Err(error) => {
            shared.lock().entries.remove(&id);
            shared.failed_attempt(&id, error);
            return;
        }
    };
    let web_addr = node.web_addr;
    let closing = {
        let mut state = shared.lock();
        state.counters.started += 1;
        state.retries.remove(&id);
        let closing = state.closing;
        match state.entries.get_mut(&id) {
            Some(entry) => {
                entry.info.web_addr = Some(web_addr);
                entry.info.web_pid = node.web_pid();
                entry.info.agent_pid = node.agent_pid();
                if closing {
                    entry.phase = Phase::Draining;
                    Some(node)
                } else {
                    entry.phase = Phase::Up {
                        ready_at: Instant::now() + behaviour.boot_delay,
                    };
                    entry.node = Some(node);
                    None
                }
            }
            // Unreachable: only this task removes a starting entry.
            None => Some(node),
        }
    };
    tracing::info!(instance = %id, image = %info.image_id, version = %behaviour.version,
        reported_version = %behaviour.reported_version, web = %web_addr,
        consul_node = %info.consul_node, boot_delay = ?behaviour.boot_delay,
        broken = behaviour.broken, "Instance started.");
    if let Some(node) = closing {
        stop_node(shared, id, info.consul_node, node).await;
    }
}

/// Stops a node as an instance shutdown does, then removes its Consul node.
async fn stop_node(shared: Arc<Shared>, id: String, consul_node: String, node: SimNode) {
    let grace = shared.drain_time + STOP_MARGIN;
    tokio::select! {
        // Dropping the stop future drops the node, which kills its children.
        _ = shared.kill.cancelled() => return,
        _ = node.stop(grace) => {}
    }
    if let Err(error) = shared.control.remove_node(&consul_node).await {
        tracing::warn!(instance = %id, node = %consul_node, error = %error,
            "Cannot remove the instance's Consul node.");
    }
    {
        let mut state = shared.lock();
        state.counters.stopped += 1;
        if let Some(entry) = state.entries.get_mut(&id) {
            entry.phase = Phase::Stopped;
        }
    }
    tracing::info!(instance = %id, node = %consul_node, "Instance stopped; its Consul node left.");
}
