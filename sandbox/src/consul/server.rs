//! Starting, reshaping and stopping the emulated cluster: [`Server`],
//! [`Config`], [`ServerHandle`].
//!
//! The server listener is the agent of node `server-1` (which also carries
//! the `consul` service, as a Consul server does); each further node gets
//! its own listener on `127.0.0.1:0`. Shutdown cancels every task and waits
//! for all of them, so every port is free when it returns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::net::TcpListener;

use super::acl::Acl;
use super::checks;
use super::cluster::{Cluster, Fault, lock};
use super::listener;
use super::model::{SERF_CHECK_ID, ServiceDef, Status};
use super::registration;
use super::session::new_uuid;
use super::store::{SERF_ALIVE_OUTPUT, Timings};

/// Name of the node the server listener answers for.
pub const SERVER_NODE: &str = "server-1";

/// Errors starting or reshaping the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
    /// `add_node` with a name already in use.
    #[error("a node named {0:?} already exists")]
    NodeExists(String),
    /// No node has that name.
    #[error("no node named {0:?}")]
    UnknownNode(String),
    /// The server's own node cannot be removed.
    #[error("the server node {0:?} cannot be removed")]
    ServerNode(String),
    /// The HTTP client used by HTTP checks could not be built.
    #[error("cannot build the HTTP client for checks: {0}")]
    HttpClient(#[source] reqwest::Error),
}

/// How to start the server.
///
/// [`Config::default`] starts a Consul with ACLs off and Consul's own
/// timings; [`Config::with_acls`] turns ACLs on (`default_policy =
/// "deny"`) with a management token. The timing fields below exist so a
/// test can shorten a wait Consul imposes; each defaults to Consul's value
/// and must only be changed by the tests that need it.
#[derive(Clone)]
pub struct Config {
    /// Address of the server listener (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// Client nodes to start (`node-1` ... `node-N`), besides `server-1`.
    pub nodes: usize,
    /// Datacenter name.
    pub datacenter: String,
    /// Management token (the SecretID of a token with the built-in
    /// `global-management` policy, like `acl.tokens.initial_management`);
    /// when set, ACLs are enforced with `default_policy = "deny"`.
    pub acl_management_token: Option<String>,
    /// Tokens holding the built-in `global-read-only` policy (read on
    /// every resource, no ACL reads, no writes). Only used with ACLs on.
    pub acl_read_tokens: Vec<String>,
    /// Lowest session TTL accepted (Consul's `session_ttl_min`, 10s);
    /// tests lower it to exercise expiry quickly.
    pub session_ttl_min: Duration,
    /// Consul's `check_update_interval` (5m): an output-only check change
    /// reaches the catalog (health and catalog endpoints) between half and
    /// one and a half of this after it happened, as Consul's agent
    /// staggers it; the agent's own `/v1/agent/checks` shows it at once. A
    /// status change syncs at once. Zero syncs every change at once.
    pub check_update_interval: Duration,
    /// How often the critical-service reaper runs (Consul: 30s). Zero
    /// reaps each service the moment it is due.
    pub reap_interval: Duration,
    /// Lowest `DeregisterCriticalServiceAfter` honoured (Consul: 1m);
    /// lower values are raised to it.
    pub deregister_critical_min: Duration,
    /// Turns the commit journal on, watching KV keys under this prefix (see
    /// [`ServerHandle::journal`]). A measuring aid for benchmarks: it
    /// changes no answer and no timing. Off (`None`) by default.
    pub journal_kv_prefix: Option<String>,
}

impl Config {
    /// Consul's defaults with ACLs on: `management` is the management
    /// token's SecretID; every other request needs a token created through
    /// `/v1/acl/token`, or is the anonymous token, which may do nothing.
    pub fn with_acls(management: impl Into<String>) -> Config {
        Config {
            acl_management_token: Some(management.into()),
            ..Config::default()
        }
    }

    /// Consul's timings shortened for tests: output-only check changes
    /// synced at once, services reaped the moment they are due with no
    /// minimum. Never for anything that claims Consul's behaviour.
    pub fn fast_timings(self) -> Config {
        Config {
            check_update_interval: Duration::ZERO,
            reap_interval: Duration::ZERO,
            deregister_critical_min: Duration::ZERO,
            ..self
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            nodes: 0,
            datacenter: "dc1".to_string(),
            acl_management_token: None,
            acl_read_tokens: Vec::new(),
            session_ttl_min: Duration::from_secs(10),
            check_update_interval: Timings::CONSUL.check_update_interval,
            reap_interval: Timings::CONSUL.reap_interval,
            deregister_critical_min: Timings::CONSUL.deregister_critical_min,
            journal_kv_prefix: None,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens are secrets: never print them.
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("nodes", &self.nodes)
            .field("datacenter", &self.datacenter)
            .field("acl_enabled", &self.acl_management_token.is_some())
            .field("acl_read_tokens", &self.acl_read_tokens.len())
            .field("session_ttl_min", &self.session_ttl_min)
            .field("check_update_interval", &self.check_update_interval)
            .field("reap_interval", &self.reap_interval)
            .field("deregister_critical_min", &self.deregister_critical_min)
            .field("journal_kv_prefix", &self.journal_kv_prefix)
            .finish()
    }
}

/// A node's name and the address of its agent HTTP API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeInfo {
    /// Node name (`node-1`).
    pub name: String,
    /// Agent HTTP address.
    pub addr: SocketAddr,
}

/// Entry point: see [`Server::start`].
#[derive(Debug)]
pub struct Server;

impl Server {
    /// Binds every listener, registers the nodes and starts serving.
    pub async fn start(config: Config) -> Result<ServerHandle, Error> {
        let acl = Acl::new(
            config.acl_management_token.as_deref(),
            &config.acl_read_tokens,
        );
        let cluster = Arc::new(
            Cluster::new(
                config.datacenter.clone(),
                acl,
                config.session_ttl_min,
                SERVER_NODE.to_string(),
            )
            .map_err(Error::HttpClient)?,
        );
        cluster.store().timings = Timings {
            check_update_interval: config.check_update_interval,
            reap_interval: config.reap_interval,
            deregister_critical_min: config.deregister_critical_min,
        };
        if let Some(prefix) = &config.journal_kv_prefix {
            cluster.store().start_journal(prefix);
        }
        let server = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen,
                source,
            })?;
        let http_addr = server.local_addr().map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
        attach(&cluster, SERVER_NODE, server, http_addr, &new_uuid());
        register_consul_service(&cluster);
        let handle = ServerHandle { cluster, http_addr };
        for i in 1..=config.nodes {
            handle.add_node(&format!("node-{i}")).await?;
        }
        let janitor = checks::janitor(Arc::clone(&handle.cluster));
        handle.cluster.tracker.spawn(janitor);
        tracing::info!(http = %http_addr, nodes = config.nodes, datacenter = %config.datacenter, "Consul sandbox listening.");
        Ok(handle)
    }
}

/// A running server. Dropping it stops every task without waiting;
/// [`ServerHandle::shutdown`] also waits until every port is free.
#[derive(Debug)]
pub struct ServerHandle {
    cluster: Arc<Cluster>,
    http_addr: SocketAddr,
}

fn attach(cluster: &Arc<Cluster>, name: &str, listener: TcpListener, addr: SocketAddr, id: &str) {
    cluster.store().add_node(name, id, addr);
    let handle = listener::spawn(cluster, name, listener, addr);
    lock(&cluster.listeners).insert(name.to_string(), handle);
}

fn register_consul_service(cluster: &Arc<Cluster>) {
    let def = ServiceDef {
        id: "consul".to_string(),
        name: "consul".to_string(),
        tags: Vec::new(),
        address: String::new(),
        port: 8300,
        meta: Default::default(),
        enable_tag_override: false,
        tagged_addresses: Default::default(),
        weights: (1, 1),
    };
    cluster
        .store()
        .register_service(SERVER_NODE, def, Vec::new(), false, &mut |_| None);
}

/// Every node, the server's included.
pub(crate) fn all_nodes(cluster: &Cluster) -> Vec<NodeInfo> {
    lock(&cluster.listeners)
        .iter()
        .map(|(name, l)| NodeInfo {
            name: name.clone(),
            addr: l.addr,
        })
        .collect()
}

/// Starts a node with its own listener on `127.0.0.1:0`.
pub(crate) async fn add_node(cluster: &Arc<Cluster>, name: &str) -> Result<SocketAddr, Error> {
    if lock(&cluster.listeners).contains_key(name) {
        return Err(Error::NodeExists(name.to_string()));
    }
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let listener = TcpListener::bind(any)
        .await
        .map_err(|source| Error::Bind { addr: any, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr: any, source })?;
    attach(cluster, name, listener, addr, &new_uuid());
    tracing::info!(node = name, http = %addr, "Node joined.");
    Ok(addr)
}

/// Stops a node's listener and removes it from the catalog.
pub(crate) async fn remove_node(cluster: &Arc<Cluster>, name: &str) -> Result<(), Error> {
    if name == cluster.server_node {
        return Err(Error::ServerNode(name.to_string()));
    }
    let listener = lock(&cluster.listeners)
        .remove(name)
        .ok_or_else(|| Error::UnknownNode(name.to_string()))?;
    listener.cancel.cancel();
    if let Some(task) = listener.task {
        let _ = task.await;
    }
    cluster.store().remove_node(name);
    tracing::info!(node = name, "Node left.");
    Ok(())
}

/// A bulk registration was refused (nothing was registered).
#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    /// No node has that name.
    #[error(transparent)]
    Node(Error),
    /// Registration number `.0` (from 0) is not valid: Consul's 400 text.
    #[error("registration {0}: {1}")]
    Registration(usize, String),
}

/// Registers many services on `node` at once, each body as for
/// `PUT /v1/agent/service/register` (without `replace-existing-checks`):
/// all are validated first, then written under one lock. Answers how many
/// were registered.
pub(crate) fn register_services(
    cluster: &Arc<Cluster>,
    node: &str,
    bodies: &[serde_json::Value],
) -> Result<usize, BulkError> {
    let parsed = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| registration::parse_value(b).map_err(|e| BulkError::Registration(i, e.body)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut spawn = cluster.spawner();
    let mut store = cluster.store();
    if !store.nodes.contains_key(node) {
        return Err(BulkError::Node(Error::UnknownNode(node.to_string())));
    }
    let n = parsed.len();
    for (service, checks) in parsed {
        store.register_service(node, service, checks, false, &mut spawn);
    }
    Ok(n)
}

/// Sets a node's `serfHealth` check, as gossip would on a failed node.
pub(crate) fn set_serf_health(
    cluster: &Cluster,
    node: &str,
    status: Status,
    output: Option<&str>,
) -> Result<(), Error> {
    let mut store = cluster.store();
    if !store.nodes.contains_key(node) {
        return Err(Error::UnknownNode(node.to_string()));
    }
    let default = match status {
        Status::Passing => SERF_ALIVE_OUTPUT,
        _ => "Agent not live or unreachable",
    };
    store.set_check_status(node, SERF_CHECK_ID, status, output.unwrap_or(default));
    Ok(())
}

/// Forgets all state as an agent restarted without its data would; see
/// [`ServerHandle::restart_lost_state`].
pub(crate) fn restart_lost_state(cluster: &Arc<Cluster>) {
    cluster.new_conn_epoch();
    {
        let mut store = cluster.store();
        let mut nodes: Vec<(String, String, SocketAddr)> = store
            .nodes
            .values()
            .map(|n| (n.name.clone(), n.id.clone(), n.http_addr))
            .collect();
        // The server's node registers first, as it would after a restart.
        nodes.sort_by_key(|(name, _, _)| name != &cluster.server_node);
        store.wipe(&nodes);
    }
    register_consul_service(cluster);
    tracing::info!("Cluster restarted and lost its state.");
}

impl ServerHandle {
    /// Address of the server listener (also the agent of `server-1`).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The client nodes (not `server-1`), with their agent addresses.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        all_nodes(&self.cluster)
            .into_iter()
            .filter(|n| n.name != self.cluster.server_node)
            .collect()
    }

    /// Starts a new node (a new agent with its own listener).
    pub async fn add_node(&self, name: &str) -> Result<SocketAddr, Error> {
        add_node(&self.cluster, name).await
    }

    /// Stops a node: its listener closes, its services, checks and
    /// sessions leave the catalog.
    pub async fn remove_node(&self, name: &str) -> Result<(), Error> {
        remove_node(&self.cluster, name).await
    }

    /// Sets a node's `serfHealth` status (and output, or a default).
    pub fn set_serf_health(
        &self,
        node: &str,
        status: Status,
        output: Option<&str>,
    ) -> Result<(), Error> {
        set_serf_health(&self.cluster, node, status, output)
    }

    /// Registers many services on `node` at once (the control API's
    /// `PUT nodes/:name/services`); see the module docs.
    pub fn register_services(
        &self,
        node: &str,
        bodies: &[serde_json::Value],
    ) -> Result<usize, BulkError> {
        register_services(&self.cluster, node, bodies)
    }

    /// Makes the next `fault.count` matching requests fail as described.
    pub fn inject_fault(&self, fault: Fault) {
        self.cluster.add_fault(fault);
    }

    /// Drops every pending fault.
    pub fn clear_faults(&self) {
        self.cluster.clear_faults();
    }

    /// A copy of the commit journal, when [`Config::journal_kv_prefix`]
    /// turned it on.
    pub fn journal(&self) -> Option<super::Journal> {
        self.cluster.store().journal()
    }

    /// How many `/v1/` requests every listener received so far.
    pub fn requests(&self) -> u64 {
        self.cluster
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The current raft index.
    pub fn index(&self) -> u64 {
        self.cluster.store().index
    }

    /// Moves the index back to `to` (at least 1), as a snapshot restore
    /// would; returns the new index. Writes continue from there.
    pub fn rewind_index(&self, to: u64) -> u64 {
        let mut store = self.cluster.store();
        store.rewind(to);
        store.index
    }

    /// With `false`, the cluster has no leader: `/v1/status/leader`
    /// answers `""`, `X-Consul-KnownLeader` is `false`, and cluster reads
    /// without `?stale` and all cluster writes fail with 500.
    pub fn set_leader(&self, leader: bool) {
        self.cluster.set_leader(leader);
        self.cluster.store().publish();
    }

    /// Simulates an agent restart that lost its data: in-flight requests
    /// are dropped, the catalog, KV and sessions are wiped, and the index
    /// restarts from 1. Nodes keep their names, IDs and ports and come back
    /// with a passing `serfHealth`; services must be registered again.
    pub fn restart_lost_state(&self) {
        restart_lost_state(&self.cluster);
    }

    /// Stops every listener, check runner and timer, and waits for them.
    pub async fn shutdown(self) {
        self.cluster.root.cancel();
        self.cluster.tracker.close();
        self.cluster.tracker.wait().await;
        lock(&self.cluster.listeners).clear();
        tracing::info!(http = %self.http_addr, "Consul sandbox stopped.");
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.cluster.root.cancel();
        self.cluster.tracker.close();
    }
}
