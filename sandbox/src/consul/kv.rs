//! The KV store: reads, check-and-set writes, session locks and deletes,
//! with Consul's semantics (`cas=0` creates only, `acquire` increments
//! `LockIndex` only for a new holder, lock-delay refuses acquisition for a
//! while after a lock was lost, `release` clears `Session` and writes the
//! body like Consul does).
//!
//! Index reported for a read: the entry's `ModifyIndex` for one key, the
//! highest `ModifyIndex` or tombstone within the prefix for a list, and the
//! KV table's index when there is nothing (so a creation wakes a watcher).
//! Nothing here does I/O; the HTTP layer maps results to answers.

use std::time::Instant;

use serde_json::Value;

use super::model::KvEntry;
use super::store::Store;
use super::views;

/// Largest value Consul accepts (`kv_max_value_size`, 512 KiB).
pub const MAX_VALUE_SIZE: usize = 512 * 1024;

/// A KV write: the body and flags of a PUT.
#[derive(Debug)]
pub(crate) struct KvWrite {
    pub key: String,
    pub value: Vec<u8>,
    pub flags: u64,
}

/// Why a lock acquisition failed with an error (not a plain `false`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LockError {
    /// The session does not exist; Consul answers 500 with this text.
    #[error("invalid session \"{0}\"")]
    InvalidSession(String),
}

impl Store {
    fn kv_prefix_index(&self, prefix: &str) -> u64 {
        let live = self
            .kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e.modify_index)
            .max();
        let dead = self
            .tombstones
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, i)| *i)
            .max();
        match live.max(dead) {
            Some(idx) => idx,
            None => self.tables.kvs,
        }
    }

    /// One entry (as JSON) and the index to report.
    pub fn kv_get(&self, key: &str) -> (Option<(Value, Vec<u8>)>, u64) {
        match self.kv.get(key) {
            Some(e) => (Some((views::kv_entry(e), e.value.clone())), e.modify_index),
            None => (
                None,
                self.tombstones.get(key).copied().unwrap_or(self.tables.kvs),
            ),
        }
    }

    /// Every entry under `prefix`, and the index to report.
    pub fn kv_list(&self, prefix: &str) -> (Vec<Value>, u64) {
        let entries = self
            .kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, e)| views::kv_entry(e))
            .collect();
        (entries, self.kv_prefix_index(prefix))
    }

    /// The keys under `prefix`, cut after the first `separator` past it.
    pub fn kv_keys(&self, prefix: &str, separator: &str) -> (Vec<String>, u64) {
        let mut keys: Vec<String> = Vec::new();
        for key in self
            .kv
            .range(prefix.to_string()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix))
        {
            let rest = &key[prefix.len()..];
            let shown = match (separator.is_empty(), rest.find(separator)) {
                (false, Some(pos)) => &key[..prefix.len() + pos + separator.len()],
                _ => key.as_str(),
            };
            if keys.last().map(String::as_str) != Some(shown) {
                keys.push(shown.to_string());
            }
        }
        (keys, self.kv_prefix_index(prefix))
    }

    fn kv_store(&mut self, write: KvWrite, idx: u64, lock_index: u64, session: Option<String>) {
        let create_index = self.kv.get(&write.key).map_or(idx, |e| e.create_index);
        self.tombstones.remove(&write.key);
        self.journal_with(|j| j.kv_write(&write.key, idx, &write.value));
        self.kv.insert(
            write.key.clone(),
            KvEntry {
                key: write.key,
                value: write.value,
                flags: write.flags,
                lock_index,
                session,
                create_index,
                modify_index: idx,
            },
        );
        self.tables.kvs = idx;
    }

    /// A plain or check-and-set write. `cas = Some(0)` creates only.
    pub fn kv_set(&mut self, write: KvWrite, cas: Option<u64>) -> bool {
        let existing = self.kv.get(&write.key);
        match (cas, existing) {
            (Some(0), Some(_)) => return false,
            (Some(c), Some(e)) if c != 0 && e.modify_index != c => return false,
            (Some(c), None) if c != 0 => return false,
            _ => {}
        }
        let (lock_index, session) =
            existing.map_or((0, None), |e| (e.lock_index, e.session.clone()));
        let idx = self.next_index();
        self.kv_store(write, idx, lock_index, session);
        self.publish();
        true
    }

    /// `?acquire=`: takes the lock for `session` and writes the value.
    pub fn kv_acquire(&mut self, write: KvWrite, session: &str) -> Result<bool, LockError> {
        if let Some(until) = self.lock_delays.get(&write.key) {
            if *until > Instant::now() {
                tracing::info!(key = %write.key, session, "Rejecting lock of key due to lock-delay.");
                return Ok(false);
            }
        }
        if !self.sessions.contains_key(session) {
            return Err(LockError::InvalidSession(session.to_string()));
        }
        let lock_index = match self.kv.get(&write.key) {
            Some(e) if e.session.as_deref() == Some(session) => e.lock_index,
            Some(e) if e.session.is_some() => return Ok(false),
            Some(e) => e.lock_index + 1,
            None => 1,
        };
        let idx = self.next_index();
        self.kv_store(write, idx, lock_index, Some(session.to_string()));
        self.publish();
        Ok(true)
    }

    /// `?release=`: clears the lock if `session` holds it, writing the value.
    pub fn kv_release(&mut self, write: KvWrite, session: &str) -> bool {
        let Some(lock_index) = self
            .kv
            .get(&write.key)
            .filter(|e| e.session.as_deref() == Some(session))
            .map(|e| e.lock_index)
        else {
            return false;
        };
        let idx = self.next_index();
        self.kv_store(write, idx, lock_index, None);
        self.publish();
        true
    }

    /// Deletes a key (or a prefix with `recurse`); with `cas` only if the
    /// `ModifyIndex` matches (a missing key counts as deleted).
    pub fn kv_delete(&mut self, key: &str, recurse: bool, cas: Option<u64>) -> bool {
        if let Some(c) = cas {
            match self.kv.get(key) {
                None => return true,
                Some(e) if c == 0 || e.modify_index != c => return false,
                Some(_) => {}
            }
        }
        let keys: Vec<String> = if recurse {
            self.kv
                .range(key.to_string()..)
                .map(|(k, _)| k)
                .take_while(|k| k.starts_with(key))
                .cloned()
                .collect()
        } else if self.kv.contains_key(key) {
            vec![key.to_string()]
        } else {
            Vec::new()
        };
        if keys.is_empty() {
            return true;
        }
        let idx = self.next_index();
        for k in keys {
            self.kv.remove(&k);
            self.tombstones.insert(k, idx);
        }
        self.tables.kvs = idx;
        self.publish();
        true
    }
}
