//! Sessions: creation with Consul's validation, renewal, destruction and
//! invalidation (TTL expiry, a critical check it depends on, its node
//! leaving), which releases or deletes the locks it held and arms
//! lock-delay on those keys.
//!
//! A session depends on checks of its node: `NodeChecks` (default
//! `serfHealth`) and `ServiceChecks`. Creating one on a missing or critical
//! check fails with Consul's `Missing check '<id>' registration` or `Check
//! '<id>' is in critical state` (500); a listed check turning critical,
//! running out of TTL or being removed invalidates the session at the same
//! index (see `catalog`), before any renewal could save it.
//!
//! TTLs: Consul accepts 10s..24h by default (`session_ttl_min` is
//! configurable, here [`super::Config::session_ttl_min`]) and invalidates a
//! session only after twice its TTL without renewal. Error texts are
//! Consul's, which answers them with status 500. No I/O happens here.

use std::time::{Duration, Instant};

use rand::Rng as _;
use serde_json::Value;

use super::duration;
use super::model::{Behavior, SessionRecord, Status};
use super::store::Store;
use super::views;

/// Longest session TTL Consul accepts.
pub const SESSION_TTL_MAX: Duration = Duration::from_secs(24 * 3600);
/// Consul invalidates a session after this many TTLs without renewal.
pub const SESSION_TTL_MULTIPLIER: u32 = 2;

/// A validated session creation request.
#[derive(Debug, Clone)]
pub(crate) struct NewSession {
    pub name: String,
    pub node: String,
    pub lock_delay: Duration,
    pub behavior: Behavior,
    pub ttl: String,
    pub node_checks: Option<Vec<String>>,
    pub service_checks: Option<Vec<String>>,
    pub legacy_checks: Option<Vec<String>>,
}

/// Validates a behavior string as Consul's `Session.Apply` does.
pub(crate) fn parse_behavior(raw: &str) -> Result<Behavior, String> {
    match raw {
        "" | "release" => Ok(Behavior::Release),
        "delete" => Ok(Behavior::Delete),
        other => Err(format!("Invalid Behavior setting '{other}'")),
    }
}

/// Validates a TTL string; returns the parsed TTL (`None` for no TTL).
pub(crate) fn parse_ttl(raw: &str, min: Duration) -> Result<Option<Duration>, String> {
    if raw.is_empty() {
        return Ok(None);
    }
    let ttl = duration::parse(raw).map_err(|e| format!("Session TTL '{raw}' invalid: {e}"))?;
    if ttl.is_zero() {
        return Ok(None);
    }
    if ttl < min || ttl > SESSION_TTL_MAX {
        return Err(format!(
            "Invalid Session TTL '{}', must be between [{}={}]",
            ttl.as_nanos(),
            duration::format(min),
            duration::format(SESSION_TTL_MAX)
        ));
    }
    Ok(Some(ttl))
}

/// A random UUID in Consul's textual form.
pub(crate) fn new_uuid() -> String {
    let b: [u8; 16] = rand::rng().random();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0fff,
        (u16::from_be_bytes([b[8], b[9]]) & 0x3fff) | 0x8000,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]])
    )
}

impl Store {
    /// Creates a session; errors carry Consul's text (answered with 500).
    pub fn session_create(
        &mut self,
        req: NewSession,
        ttl: Option<Duration>,
    ) -> Result<String, String> {
        if !self.nodes.contains_key(&req.node) {
            return Err("Missing node registration".to_string());
        }
        let node_checks = req
            .node_checks
            .iter()
            .flatten()
            .chain(req.legacy_checks.iter().flatten());
        let service_checks = req.service_checks.iter().flatten();
        for check_id in node_checks.chain(service_checks) {
            match self.checks.get(&(req.node.clone(), check_id.clone())) {
                None => return Err(format!("Missing check '{check_id}' registration")),
                Some(c) if c.status == Status::Critical => {
                    return Err(format!("Check '{check_id}' is in critical state"));
                }
                Some(_) => {}
            }
        }
        let id = loop {
            let id = new_uuid();
            if !self.sessions.contains_key(&id) {
                break id;
            }
        };
        let idx = self.next_index();
        let expires = ttl.map(|t| Instant::now() + t * SESSION_TTL_MULTIPLIER);
        self.sessions.insert(
            id.clone(),
            SessionRecord {
                id: id.clone(),
                name: req.name,
                node: req.node,
                lock_delay: req.lock_delay,
                behavior: req.behavior,
                ttl: req.ttl,
                node_checks: req.node_checks,
                service_checks: req.service_checks,
                legacy_checks: req.legacy_checks,
                create_index: idx,
                modify_index: idx,
                expires,
            },
        );
        self.tables.sessions = idx;
        self.publish();
        Ok(id)
    }

    /// Destroys a session (a no-op for an unknown one, as in Consul).
    pub fn session_destroy(&mut self, id: &str) {
        if self.sessions.contains_key(id) {
            let idx = self.next_index();
            self.invalidate_session(id, idx);
            self.publish();
        }
    }

    /// Renews a session's TTL; `None` when it no longer exists.
    pub fn session_renew(&mut self, id: &str) -> Option<Value> {
        let session = self.sessions.get_mut(id)?;
        if let Ok(Some(ttl)) = parse_ttl(&session.ttl, Duration::ZERO) {
            session.expires = Some(Instant::now() + ttl * SESSION_TTL_MULTIPLIER);
        }
        Some(views::session(session))
    }

    /// One session (as a list, possibly empty) and the index to report.
    pub fn session_info(&self, id: &str) -> (Vec<Value>, u64) {
        match self.sessions.get(id) {
            Some(s) => (vec![views::session(s)], s.modify_index),
            None => (Vec::new(), self.tables.sessions),
        }
    }

    /// All sessions, or those of one node.
    pub fn session_list(&self, node: Option<&str>) -> (Vec<Value>, u64) {
        let list = self
            .sessions
            .values()
            .filter(|s| node.is_none_or(|n| s.node == n))
            .map(views::session)
            .collect();
        (list, self.tables.sessions)
    }

    /// Removes a session at `idx`, releasing or deleting its locks and
    /// arming lock-delay on them. The caller publishes.
    pub fn invalidate_session(&mut self, id: &str, idx: u64) {
        let Some(session) = self.sessions.remove(id) else {
            return;
        };
        self.tables.sessions = idx;
        let held: Vec<String> = self
            .kv
            .values()
            .filter(|e| e.session.as_deref() == Some(id))
            .map(|e| e.key.clone())
            .collect();
        let until = Instant::now() + session.lock_delay;
        for key in held {
            match session.behavior {
                Behavior::Release => {
                    if let Some(e) = self.kv.get_mut(&key) {
                        e.session = None;
                        e.modify_index = idx;
                    }
                }
                Behavior::Delete => {
                    self.kv.remove(&key);
                    self.tombstones.insert(key.clone(), idx);
                }
            }
            self.tables.kvs = idx;
            if !session.lock_delay.is_zero() {
                self.lock_delays.insert(key, until);
            }
        }
    }

    /// Invalidates sessions whose TTL ran out. Returns the next expiry.
    pub fn expire_sessions(&mut self, now: Instant) -> Option<Instant> {
        let expired: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.expires.is_some_and(|e| e <= now))
            .map(|s| s.id.clone())
            .collect();
        if !expired.is_empty() {
            let idx = self.next_index();
            for id in expired {
                tracing::info!(session = %id, "Session TTL expired, invalidating it.");
                self.invalidate_session(&id, idx);
            }
            self.publish();
        }
        self.lock_delays.retain(|_, until| *until > now);
        self.sessions.values().filter_map(|s| s.expires).min()
    }
}
