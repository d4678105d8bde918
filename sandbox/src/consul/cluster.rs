//! The running emulated cluster: the store, the settings every listener
//! shares (ACL, datacenter, leader flag, injected faults), the per-node
//! listeners, and the task bookkeeping that lets shutdown stop everything.
//!
//! Every task the cluster starts is spawned on [`Cluster::tracker`] and
//! stops when [`Cluster::root`] is cancelled; shutdown waits for all of
//! them, so no task or port outlives the server.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use super::acl::Acl;
use super::checks;
use super::model::CheckRecord;
use super::store::Store;

/// A fault to inject: the next `count` requests whose path starts with
/// `path_prefix` are answered with `status` and `body` instead of being
/// served. JSON field names are PascalCase, like the rest of the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Fault {
    /// Requests whose path starts with this are affected (`/v1/health/`).
    pub path_prefix: String,
    /// How many requests to affect.
    pub count: u32,
    /// The status to answer (500, 502, ...).
    pub status: u16,
    /// The body to answer, such as a non-JSON error page.
    #[serde(default)]
    pub body: String,
    /// The `Content-Type` of the body; `text/plain` when absent.
    #[serde(default)]
    pub content_type: Option<String>,
}

/// One node's agent listener.
#[derive(Debug)]
pub(crate) struct NodeListener {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Stops the accept loop and this listener's connections.
    pub cancel: CancellationToken,
    /// The accept loop, awaited on removal so the port is free afterwards.
    pub task: Option<JoinHandle<()>>,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Cluster {
    store: Mutex<Store>,
    index_rx: watch::Receiver<u64>,
    /// The configured tokens.
    pub acl: Acl,
    /// Datacenter name every answer reports.
    pub datacenter: String,
    /// Lowest session TTL accepted (Consul's `session_ttl_min`).
    pub session_ttl_min: Duration,
    leader: AtomicBool,
    /// `/v1/` requests received, on every listener (for benchmarks).
    pub requests: std::sync::atomic::AtomicU64,
    faults: Mutex<Vec<Fault>>,
    /// Cancelled at shutdown; parent of every other token.
    pub root: CancellationToken,
    /// Every task the cluster spawned.
    pub tracker: TaskTracker,
    /// Cancelled by a state-losing restart to drop in-flight connections.
    conn_epoch: Mutex<CancellationToken>,
    /// Listeners by node name (the server's node included).
    pub listeners: Mutex<BTreeMap<String, NodeListener>>,
    /// Name of the node the server listener answers for.
    pub server_node: String,
    /// Client for HTTP checks.
    pub http: reqwest::Client,
    /// Client for HTTP checks with `TLSSkipVerify`.
    pub http_insecure: reqwest::Client,
}

/// Locks a mutex, recovering from poisoning (a panicked holder cannot
/// leave the store half-written: writes publish only at their end).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cluster {
    /// A cluster with an empty store.
    pub fn new(
        datacenter: String,
        acl: Acl,
        session_ttl_min: Duration,
        server_node: String,
    ) -> Result<Cluster, reqwest::Error> {
        let (tx, rx) = watch::channel(0);
        let http = reqwest::Client::builder().no_proxy().build()?;
        let http_insecure = reqwest::Client::builder()
            .no_proxy()
            .danger_accept_invalid_certs(true)
            .build()?;
        let root = CancellationToken::new();
        Ok(Cluster {
            store: Mutex::new(Store::new(tx)),
            index_rx: rx,
            acl,
            datacenter,
            session_ttl_min,
            leader: AtomicBool::new(true),
            requests: std::sync::atomic::AtomicU64::new(0),
            faults: Mutex::new(Vec::new()),
            conn_epoch: Mutex::new(root.child_token()),
            root,
            tracker: TaskTracker::new(),
            listeners: Mutex::new(BTreeMap::new()),
            server_node,
            http,
            http_insecure,
        })
    }

    /// The store, locked. Never hold it across an await.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// A receiver that sees every index publication from now on.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        let mut rx = self.index_rx.clone();
        rx.borrow_and_update();
        rx
    }

    /// Whether the cluster has a leader.
    pub fn has_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    /// Sets whether the cluster has a leader.
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::SeqCst);
    }

    /// The token that in-flight connections stop on at a restart.
    pub fn conn_epoch(&self) -> CancellationToken {
        lock(&self.conn_epoch).clone()
    }

    /// Drops every in-flight connection (a restart) and starts a new epoch.
    pub fn new_conn_epoch(&self) {
        let mut epoch = lock(&self.conn_epoch);
        epoch.cancel();
        *epoch = self.root.child_token();
    }

    /// Adds a fault to inject.
    pub fn add_fault(&self, fault: Fault) {
        lock(&self.faults).push(fault);
    }

    /// Removes every pending fault.
    pub fn clear_faults(&self) {
        lock(&self.faults).clear();
    }

    /// Takes one use of the first fault matching `path`, if any.
    pub fn take_fault(&self, path: &str) -> Option<Fault> {
        let mut faults = lock(&self.faults);
        let pos = faults
            .iter()
            .position(|f| f.count > 0 && path.starts_with(&f.path_prefix))?;
        let fault = faults.get_mut(pos)?;
        fault.count -= 1;
        let taken = fault.clone();
        if fault.count == 0 {
            faults.remove(pos);
        }
        Some(taken)
    }

    /// The callback catalog writes use to start HTTP and TCP check runners.
    pub fn spawner(self: &Arc<Self>) -> impl FnMut(&CheckRecord) -> Option<DropGuard> + use<> {
        let cluster = Arc::clone(self);
        move |check| checks::start_probe(&cluster, check)
    }
}
