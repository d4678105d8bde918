//! Catalog writes: service and check registration, check status changes,
//! maintenance mode, and the reaper's deregistration.
//!
//! In this emulation an agent's registration lands in the catalog at once
//! (Consul syncs it by anti-entropy within moments). A re-registration that
//! changes nothing takes no index, as Consul's anti-entropy would not write
//! it; checks keep their status across re-registration, as Consul restores
//! them from its snapshot. Status changes invalidate sessions that depend on
//! a check that turned critical. Nothing here may block or do I/O: runners
//! are started through the `spawn` callback the caller passes.

use std::time::{Duration, Instant};

use rand::Rng as _;

use tokio_util::sync::DropGuard;

use super::journal::CheckCommit;
use super::model::{
    CheckDef, CheckKind, CheckRecord, SERVICE_MAINT_PREFIX, ServiceDef, ServiceRecord, Status,
};
use super::store::Store;

/// Starts the runner of an HTTP or TCP check; returns the guard that stops it.
pub(crate) type Spawner<'a> = &'a mut dyn FnMut(&CheckRecord) -> Option<DropGuard>;

/// Default notes of the maintenance check, Consul's text.
pub(crate) const DEFAULT_MAINT_REASON: &str = "Maintenance mode is enabled for this service, but no reason was provided. This is a default message.";

/// Why a check update was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CheckUpdateError {
    /// No check with that ID on the agent (404 in Consul).
    #[error("Unknown check ID \"{0}\". Ensure that the check ID is passed, not the check name.")]
    Unknown(String),
    /// The check is not a TTL check (500 in Consul).
    #[error("CheckID \"{0}\" does not have associated TTL")]
    NotTtl(String),
}

/// Consul's message for an unknown service ID on agent endpoints (404).
pub(crate) fn unknown_service(id: &str) -> String {
    format!(
        "Unknown service ID \"{id}\". Ensure that the service ID is passed, not the service name."
    )
}

impl Store {
    /// Registers (or re-registers) a service and its checks on `node`.
    pub fn register_service(
        &mut self,
        node: &str,
        def: ServiceDef,
        checks: Vec<CheckDef>,
        replace_existing_checks: bool,
        spawn: Spawner<'_>,
    ) {
        let now = Instant::now();
        let key = (node.to_string(), def.id.clone());
        let unchanged_service = self.services.get(&key).is_some_and(|s| s.def == def);
        let stale: Vec<(String, String)> = if replace_existing_checks {
            self.checks
                .iter()
                .filter(|((n, id), c)| {
                    n == node && c.def.service_id == def.id && !checks.iter().any(|d| &d.id == id)
                })
                .map(|(k, _)| k.clone())
                .collect()
        } else {
            Vec::new()
        };
        let unchanged_checks = checks.iter().all(|d| {
            self.checks
                .get(&(node.to_string(), d.id.clone()))
                .is_some_and(|c| c.def == *d)
        });
        if unchanged_service && unchanged_checks && stale.is_empty() {
            // Idempotent: Consul restarts the TTL timers, nothing else.
            for d in &checks {
                if let (Some(c), CheckKind::Ttl(ttl)) = (
                    self.checks.get_mut(&(node.to_string(), d.id.clone())),
                    &d.kind,
                ) {
                    c.ttl_deadline = Some(now + *ttl);
                }
            }
            return;
        }
        let idx = self.next_index();
        let old_name = self.services.get(&key).map(|s| s.def.name.clone());
        let create_index = self.services.get(&key).map_or(idx, |s| s.create_index);
        let name = def.name.clone();
        let tags = def.tags.clone();
        let service_id = def.id.clone();
        self.services.insert(
            key,
            ServiceRecord {
                node: node.to_string(),
                def,
                create_index,
                modify_index: idx,
            },
        );
        if let Some(old) = old_name {
            self.touch_service(&old, idx);
        }
        self.touch_service(&name, idx);
        for k in stale {
            self.remove_check(&k, idx);
        }
        for d in checks {
            let ck = (node.to_string(), d.id.clone());
            let previous = self.checks.remove(&ck);
            let (status, output, create) = match &previous {
                // A re-registration syncs the agent's newest output too.
                Some(p) => (p.status, p.agent_output().to_string(), p.create_index),
                None => (
                    d.initial_status.unwrap_or(Status::Critical),
                    String::new(),
                    idx,
                ),
            };
            drop(previous);
            let ttl_deadline = match d.kind {
                CheckKind::Ttl(ttl) => Some(now + ttl),
                _ => None,
            };
            let generation = self.next_generation();
            let mut record = CheckRecord {
                node: node.to_string(),
                def: d,
                status,
                output,
                service_name: name.clone(),
                service_tags: tags.clone(),
                create_index: create,
                modify_index: idx,
                ttl_deadline,
                critical_since: (status == Status::Critical).then_some(now),
                generation,
                runner: None,
                local_output: None,
                output_sync_due: None,
            };
            record.runner = spawn(&record);
            self.checks.insert(ck, record);
        }
        self.touch_check(node, &service_id, idx);
        self.publish();
    }

    /// Deregisters a service and its checks. False when it is not on `node`.
    pub fn deregister_service(&mut self, node: &str, service_id: &str) -> bool {
        let key = (node.to_string(), service_id.to_string());
        if !self.services.contains_key(&key) {
            return false;
        }
        let idx = self.next_index();
        self.touch_check(node, service_id, idx);
        let check_keys: Vec<(String, String)> = self
            .checks
            .iter()
            .filter(|((n, _), c)| n == node && c.def.service_id == service_id)
            .map(|(k, _)| k.clone())
            .collect();
        for k in check_keys {
            self.remove_check(&k, idx);
        }
        if let Some(service) = self.services.remove(&key) {
            self.touch_service(&service.def.name, idx);
        }
        self.publish();
        true
    }

    /// Deregisters one check. False when it is not on `node`.
    pub fn deregister_check(&mut self, node: &str, check_id: &str) -> bool {
        let key = (node.to_string(), check_id.to_string());
        let Some(service_id) = self.checks.get(&key).map(|c| c.def.service_id.clone()) else {
            return false;
        };
        let idx = self.next_index();
        self.touch_check(node, &service_id, idx);
        self.remove_check(&key, idx);
        self.publish();
        true
    }

    /// Removes one check, invalidating the sessions that depend on it.
    fn remove_check(&mut self, key: &(String, String), idx: u64) {
        if self.checks.remove(key).is_some() {
            self.tables.checks = idx;
            for id in self.sessions_depending_on(&key.0, &key.1) {
                self.invalidate_session(&id, idx);
            }
        }
    }

    /// Sessions on `node` that depend on check `check_id`.
    fn sessions_depending_on(&self, node: &str, check_id: &str) -> Vec<String> {
        self.sessions
            .values()
            .filter(|s| s.node == node)
            .filter(|s| {
                s.all_node_checks().any(|c| c == check_id)
                    || s.service_checks.iter().flatten().any(|c| c == check_id)
            })
            .map(|s| s.id.clone())
            .collect()
    }

    /// Sets a check's status and output as its agent sees them. A status
    /// change reaches the catalog at once (one index); an output-only
    /// change waits for `check_update_interval`, as Consul's agent defers
    /// it. A check turning critical invalidates the sessions using it.
    pub fn set_check_status(&mut self, node: &str, check_id: &str, status: Status, output: &str) {
        let key = (node.to_string(), check_id.to_string());
        let interval = self.timings.check_update_interval;
        let Some(check) = self.checks.get_mut(&key) else {
            return;
        };
        if check.status == status && check.agent_output() == output {
            return;
        }
        if check.status == status && !interval.is_zero() {
            check.local_output = Some(output.to_string());
            if check.output_sync_due.is_none() {
                // Consul's agent waits half the interval plus a random
                // stagger of up to a whole one.
                let stagger = rand::rng().random_range(Duration::ZERO..interval);
                check.output_sync_due = Some(Instant::now() + interval / 2 + stagger);
            }
            // No index: only the janitor must learn the new deadline.
            self.publish();
            return;
        }
        let idx = self.next_index();
        let Some(check) = self.checks.get_mut(&key) else {
            return;
        };
        let previous = check.status;
        let became_critical = status == Status::Critical && previous != Status::Critical;
        if status != Status::Critical {
            check.critical_since = None;
        } else if check.critical_since.is_none() {
            check.critical_since = Some(Instant::now());
        }
        check.status = status;
        check.output = output.to_string();
        check.local_output = None;
        check.output_sync_due = None;
        check.modify_index = idx;
        let service_id = check.def.service_id.clone();
        if status != previous {
            tracing::debug!(node, check = check_id, from = %previous, to = %status, "Check status changed.");
            self.journal_with(|j| {
                j.check_status(CheckCommit {
                    node: node.to_string(),
                    check_id: check_id.to_string(),
                    service_id: service_id.clone(),
                    status,
                    index: idx,
                })
            });
        }
        self.touch_check(node, &service_id, idx);
        if became_critical {
            for id in self.sessions_depending_on(node, check_id) {
                tracing::info!(session = %id, node, check = check_id, "Session invalidated by a critical check.");
                self.invalidate_session(&id, idx);
            }
        }
        self.publish();
    }

    /// A runner's result, ignored when the check was replaced meanwhile.
    pub fn set_probe_result(
        &mut self,
        node: &str,
        check_id: &str,
        generation: u64,
        status: Status,
        output: &str,
    ) {
        let key = (node.to_string(), check_id.to_string());
        if self
            .checks
            .get(&key)
            .is_some_and(|c| c.generation == generation)
        {
            self.set_check_status(node, check_id, status, output);
        }
    }

    /// A TTL update through the agent API (`pass`/`warn`/`fail`/`update`).
    pub fn update_ttl_check(
        &mut self,
        node: &str,
        check_id: &str,
        status: Status,
        output: &str,
    ) -> Result<(), CheckUpdateError> {
        let key = (node.to_string(), check_id.to_string());
        let check = self
            .checks
            .get_mut(&key)
            .ok_or_else(|| CheckUpdateError::Unknown(check_id.to_string()))?;
        let CheckKind::Ttl(ttl) = check.def.kind else {
            return Err(CheckUpdateError::NotTtl(check_id.to_string()));
        };
        check.ttl_deadline = Some(Instant::now() + ttl);
        self.set_check_status(node, check_id, status, output);
        Ok(())
    }

    /// Turns service maintenance on or off. False when the service is unknown.
    pub fn set_service_maintenance(
        &mut self,
        node: &str,
        service_id: &str,
        enable: bool,
        reason: &str,
    ) -> bool {
        let Some((service_name, service_tags)) = self
            .services
            .get(&(node.to_string(), service_id.to_string()))
            .map(|s| (s.def.name.clone(), s.def.tags.clone()))
        else {
            return false;
        };
        let check_id = format!("{SERVICE_MAINT_PREFIX}{service_id}");
        let key = (node.to_string(), check_id.clone());
        let exists = self.checks.contains_key(&key);
        if enable == exists {
            return true;
        }
        let idx = self.next_index();
        if enable {
            let notes = if reason.is_empty() {
                DEFAULT_MAINT_REASON
            } else {
                reason
            };
            let generation = self.next_generation();
            let record = CheckRecord {
                node: node.to_string(),
                def: CheckDef {
                    id: check_id,
                    name: "Service Maintenance Mode".to_string(),
                    notes: notes.to_string(),
                    service_id: service_id.to_string(),
                    kind: CheckKind::Maintenance,
                    deregister_after: None,
                    initial_status: Some(Status::Critical),
                },
                status: Status::Critical,
                output: String::new(),
                service_name,
                service_tags,
                create_index: idx,
                modify_index: idx,
                ttl_deadline: None,
                critical_since: Some(Instant::now()),
                generation,
                runner: None,
                local_output: None,
                output_sync_due: None,
            };
            self.checks.insert(key, record);
        } else {
            self.remove_check(&key, idx);
        }
        self.touch_check(node, service_id, idx);
        self.publish();
        true
    }

    /// Syncs deferred output-only changes whose `check_update_interval`
    /// has passed (one index for all). Returns the next such deadline.
    pub fn sync_check_outputs(&mut self, now: Instant) -> Option<Instant> {
        let due: Vec<(String, String)> = self
            .checks
            .iter()
            .filter(|(_, c)| c.output_sync_due.is_some_and(|d| d <= now))
            .map(|(k, _)| k.clone())
            .collect();
        if !due.is_empty() {
            let idx = self.next_index();
            for key in due {
                let Some(check) = self.checks.get_mut(&key) else {
                    continue;
                };
                check.output_sync_due = None;
                if let Some(output) = check.local_output.take() {
                    check.output = output;
                    check.modify_index = idx;
                }
                let service_id = check.def.service_id.clone();
                self.touch_check(&key.0, &service_id, idx);
            }
            self.publish();
        }
        self.checks.values().filter_map(|c| c.output_sync_due).min()
    }

    /// Deregisters every service one of whose checks has been critical
    /// longer than its `DeregisterCriticalServiceAfter` (at least
    /// `deregister_critical_min`), looking every `reap_interval` as
    /// Consul's reaper does. Returns when to look again.
    pub fn reap_critical_services(&mut self, now: Instant) -> Option<Instant> {
        let timings = self.timings;
        if !timings.reap_interval.is_zero() {
            match self.next_reap {
                Some(at) if now < at => return Some(at),
                _ => self.next_reap = Some(now + timings.reap_interval),
            }
        }
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        for check in self.checks.values() {
            let (Some(after), Some(since)) = (check.def.deregister_after, check.critical_since)
            else {
                continue;
            };
            let after = after.max(timings.deregister_critical_min);
            if check.def.service_id.is_empty() {
                continue;
            }
            let at = since + after;
            if at <= now {
                due.push((check.node.clone(), check.def.service_id.clone()));
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        for (node, service_id) in due {
            if self.deregister_service(&node, &service_id) {
                tracing::info!(node = %node, service = %service_id, "Reaped a service whose check stayed critical.");
            }
        }
        if timings.reap_interval.is_zero() {
            next
        } else {
            self.next_reap
        }
    }

    /// Turns TTL checks past their deadline critical. Returns the next deadline.
    pub fn expire_ttl_checks(&mut self, now: Instant) -> Option<Instant> {
        let mut expired = Vec::new();
        let mut next: Option<Instant> = None;
        for check in self.checks.values_mut() {
            let Some(deadline) = check.ttl_deadline else {
                continue;
            };
            if deadline <= now {
                check.ttl_deadline = None;
                let last = check.agent_output();
                let output = if last.is_empty() || last.starts_with("TTL expired") {
                    "TTL expired".to_string()
                } else {
                    format!("TTL expired (last output before timeout follows): {last}")
                };
                expired.push((check.node.clone(), check.def.id.clone(), output));
            } else {
                next = Some(next.map_or(deadline, |n| n.min(deadline)));
            }
        }
        for (node, id, output) in expired {
            tracing::warn!(node = %node, check = %id, "Check missed TTL, is now critical.");
            self.set_check_status(&node, &id, Status::Critical, &output);
        }
        next
    }
}
