//! The replicated state of the emulated cluster and its raft-like index.
//!
//! One [`Store`] holds every table (nodes, services, checks, KV, sessions)
//! behind one lock, like Consul's single state store. Every change takes a
//! new index from the one shared counter (strictly increasing, starting at
//! 1), stamps it on the records and tables it touched, and publishes it on a
//! `watch` channel that blocking queries and the janitor wait on.
//!
//! Besides the per-table indexes it keeps, like Consul, a per-service-name
//! index (bumped by the service, its checks, and its node's checks) and KV
//! tombstones, so a query can report the index of the data it returns and a
//! deletion still moves that index forward.
//!
//! The store is synchronous: no code here may await or do I/O while the lock
//! is held. Table-specific operations live in `catalog`, `kv` and `session`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::journal::Journal;
use super::model::{
    CheckDef, CheckKind, CheckRecord, KvEntry, NodeRecord, SERF_CHECK_ID, ServiceRecord,
    SessionRecord, Status,
};

/// The journal's lock; a panic while it was held leaves a usable journal.
fn lock_journal(j: &std::sync::Mutex<Journal>) -> std::sync::MutexGuard<'_, Journal> {
    j.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Output of a healthy `serfHealth` check, as Consul writes it.
pub(crate) const SERF_ALIVE_OUTPUT: &str = "Agent alive and reachable";

/// Agent timings Consul has that tests may shorten; see
/// [`super::Config`] for what each means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timings {
    /// Consul's `check_update_interval` (5m): an output-only check change
    /// waits half of it plus up to a whole one before it reaches the
    /// catalog; zero syncs at once.
    pub check_update_interval: Duration,
    /// How often the reaper looks for services to deregister (30s in
    /// Consul); zero reaps each service the moment it is due.
    pub reap_interval: Duration,
    /// The lowest `DeregisterCriticalServiceAfter` honoured (1m in Consul).
    pub deregister_critical_min: Duration,
}

impl Timings {
    /// Consul's defaults.
    pub const CONSUL: Timings = Timings {
        check_update_interval: Duration::from_secs(300),
        reap_interval: Duration::from_secs(30),
        deregister_critical_min: Duration::from_secs(60),
    };
}

/// Last index at which each table changed (deletions included).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TableIndexes {
    pub nodes: u64,
    pub services: u64,
    pub checks: u64,
    pub kvs: u64,
    pub sessions: u64,
}

/// The cluster's state. See the module docs.
#[derive(Debug)]
pub(crate) struct Store {
    /// The last index handed out.
    pub index: u64,
    pub nodes: BTreeMap<String, NodeRecord>,
    /// Keyed by (node, service ID).
    pub services: BTreeMap<(String, String), ServiceRecord>,
    /// Keyed by (node, check ID).
    pub checks: BTreeMap<(String, String), CheckRecord>,
    pub kv: BTreeMap<String, KvEntry>,
    /// Index at which a KV key was last deleted.
    pub tombstones: BTreeMap<String, u64>,
    pub sessions: BTreeMap<String, SessionRecord>,
    /// Keys that cannot be locked until the instant (lock-delay).
    pub lock_delays: HashMap<String, Instant>,
    pub tables: TableIndexes,
    /// Index of the last change relevant to a service name.
    pub service_index: HashMap<String, u64>,
    /// Agent timings (Consul's unless a test shortened them).
    pub timings: Timings,
    /// When the reaper runs next.
    pub next_reap: Option<Instant>,
    next_generation: u64,
    notifier: watch::Sender<u64>,
    /// The commit journal, when a bench turned it on (see `journal`).
    journal: Option<std::sync::Mutex<Journal>>,
}

impl Store {
    /// An empty store publishing its index on `notifier`.
    pub fn new(notifier: watch::Sender<u64>) -> Store {
        Store {
            index: 0,
            nodes: BTreeMap::new(),
            services: BTreeMap::new(),
            checks: BTreeMap::new(),
            kv: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            sessions: BTreeMap::new(),
            lock_delays: HashMap::new(),
            tables: TableIndexes::default(),
            service_index: HashMap::new(),
            timings: Timings::CONSUL,
            next_reap: None,
            next_generation: 0,
            notifier,
            journal: None,
        }
    }

    /// Takes the next index for a write.
    pub fn next_index(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    /// Wakes everything waiting on the index. Call once per finished write.
    pub fn publish(&self) {
        if let Some(journal) = &self.journal {
            lock_journal(journal).committed(self.index);
        }
        self.notifier.send_replace(self.index);
    }

    /// Turns the commit journal on, watching KV keys under `kv_prefix`.
    pub fn start_journal(&mut self, kv_prefix: &str) {
        self.journal = Some(std::sync::Mutex::new(Journal::new(kv_prefix)));
    }

    /// A copy of the commit journal, when it is on.
    pub fn journal(&self) -> Option<Journal> {
        self.journal.as_ref().map(|j| lock_journal(j).clone())
    }

    /// Adds to the commit journal, when it is on.
    pub fn journal_with(&mut self, f: impl FnOnce(&mut Journal)) {
        if let Some(journal) = &mut self.journal {
            f(journal
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner));
        }
    }

    /// A fresh runner generation number.
    pub fn next_generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    /// Records a change of the service `name` at `idx`.
    pub fn touch_service(&mut self, name: &str, idx: u64) {
        self.tables.services = idx;
        self.service_index.insert(name.to_string(), idx);
    }

    /// Records a change of a check on `node` (of `service_id`, or a node check).
    pub fn touch_check(&mut self, node: &str, service_id: &str, idx: u64) {
        self.tables.checks = idx;
        // Services are keyed by (node, service ID): look up, never scan.
        let names: Vec<String> = if service_id.is_empty() {
            self.services
                .range((node.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == node)
                .map(|(_, s)| s.def.name.clone())
                .collect()
        } else {
            self.services
                .get(&(node.to_string(), service_id.to_string()))
                .map(|s| s.def.name.clone())
                .into_iter()
                .collect()
        };
        for name in names {
            self.service_index.insert(name, idx);
        }
    }

    /// The index to report for service `name`: its own, or the services
    /// table's when it never existed (so its creation wakes watchers).
    pub fn service_name_index(&self, name: &str) -> u64 {
        self.service_index
            .get(name)
            .copied()
            .unwrap_or(self.tables.services.max(self.tables.checks))
    }

    /// Registers a node with a passing `serfHealth` check.
    pub fn add_node(&mut self, name: &str, id: &str, http_addr: SocketAddr) {
        let idx = self.next_index();
        let mut meta = BTreeMap::new();
        meta.insert("consul-network-segment".to_string(), String::new());
        meta.insert(
            "consul-version".to_string(),
            super::CONSUL_VERSION.to_string(),
        );
        self.nodes.insert(
            name.to_string(),
            NodeRecord {
                name: name.to_string(),
                id: id.to_string(),
                address: http_addr.ip().to_string(),
                meta,
                http_addr,
                create_index: idx,
                modify_index: idx,
            },
        );
        self.tables.nodes = idx;
        let generation = self.next_generation();
        self.checks.insert(
            (name.to_string(), SERF_CHECK_ID.to_string()),
            CheckRecord {
                node: name.to_string(),
                def: CheckDef {
                    id: SERF_CHECK_ID.to_string(),
                    name: "Serf Health Status".to_string(),
                    notes: String::new(),
                    service_id: String::new(),
                    kind: CheckKind::Serf,
                    deregister_after: None,
                    initial_status: Some(Status::Passing),
                },
                status: Status::Passing,
                output: SERF_ALIVE_OUTPUT.to_string(),
                service_name: String::new(),
                service_tags: Vec::new(),
                create_index: idx,
                modify_index: idx,
                ttl_deadline: None,
                critical_since: None,
                generation,
                runner: None,
                local_output: None,
                output_sync_due: None,
            },
        );
        self.tables.checks = idx;
        self.publish();
    }

    /// Removes a node with its services and checks, invalidating its sessions.
    /// Returns false when there is no such node.
    pub fn remove_node(&mut self, name: &str) -> bool {
        if !self.nodes.contains_key(name) {
            return false;
        }
        let idx = self.next_index();
        let sessions: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.node == name)
            .map(|s| s.id.clone())
            .collect();
        for id in sessions {
            self.invalidate_session(&id, idx);
        }
        let services: Vec<(String, String)> = self
            .services
            .keys()
            .filter(|(node, _)| node == name)
            .cloned()
            .collect();
        for key in services {
            if let Some(service) = self.services.remove(&key) {
                self.touch_service(&service.def.name, idx);
            }
        }
        self.checks.retain(|(node, _), _| node != name);
        self.nodes.remove(name);
        self.tables.nodes = idx;
        self.tables.checks = idx;
        self.publish();
        true
    }

    /// Forgets everything (a Consul agent restarted without its data), then
    /// re-registers the given nodes. The index restarts from 1.
    pub fn wipe(&mut self, nodes: &[(String, String, SocketAddr)]) {
        self.nodes.clear();
        self.services.clear();
        self.checks.clear();
        self.kv.clear();
        self.tombstones.clear();
        self.sessions.clear();
        self.lock_delays.clear();
        self.service_index.clear();
        self.tables = TableIndexes::default();
        self.index = 0;
        for (name, id, addr) in nodes {
            self.add_node(name, id, *addr);
        }
        self.publish();
    }

    /// Moves the index back to `to` as a snapshot restore of older data
    /// would: every stored index above `to` is lowered to `to`.
    pub fn rewind(&mut self, to: u64) {
        let to = to.max(1);
        let clamp = |i: &mut u64| *i = (*i).min(to);
        self.index = self.index.min(to);
        for n in self.nodes.values_mut() {
            clamp(&mut n.create_index);
            clamp(&mut n.modify_index);
        }
        for s in self.services.values_mut() {
            clamp(&mut s.create_index);
            clamp(&mut s.modify_index);
        }
        for c in self.checks.values_mut() {
            clamp(&mut c.create_index);
            clamp(&mut c.modify_index);
        }
        for e in self.kv.values_mut() {
            clamp(&mut e.create_index);
            clamp(&mut e.modify_index);
        }
        self.tombstones.values_mut().for_each(clamp);
        for s in self.sessions.values_mut() {
            clamp(&mut s.create_index);
            clamp(&mut s.modify_index);
        }
        self.service_index.values_mut().for_each(clamp);
        let t = &mut self.tables;
        for i in [
            &mut t.nodes,
            &mut t.services,
            &mut t.checks,
            &mut t.kvs,
            &mut t.sessions,
        ] {
            clamp(i);
        }
        self.publish();
    }
}
