//! KV transactions (`/v1/txn`) with Consul's state-store semantics: every
//! operation runs in order against the state the earlier ones left, every
//! failure is collected with its operation index, and if any failed nothing
//! is kept. A transaction that writes takes one raft index for all its
//! writes and publishes once, so blocking queries on the touched keys wake
//! up exactly once.
//!
//! Texts are Consul's (`agent/consul/state/txn.go`, `kvs.go`); results of
//! operations other than `get`/`get-tree`/`get-or-empty` carry the entry
//! without its value, as Consul blanks it. ACL and lock-delay pre-checks
//! happen in the HTTP layer before this runs, as Consul's `Txn.preCheck`
//! runs before the Raft apply. No I/O happens here.

use std::collections::BTreeMap;

use super::model::KvEntry;
use super::store::Store;

/// A KV operation's verb, as Consul's `api.KVOp` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    Set,
    Cas,
    Lock,
    Unlock,
    Get,
    GetOrEmpty,
    GetTree,
    CheckIndex,
    CheckSession,
    CheckNotExists,
    Delete,
    DeleteCas,
    DeleteTree,
}

impl Verb {
    /// Parses Consul's verb word; `None` for an unknown one.
    pub fn parse(word: &str) -> Option<Verb> {
        Some(match word {
            "set" => Verb::Set,
            "cas" => Verb::Cas,
            "lock" => Verb::Lock,
            "unlock" => Verb::Unlock,
            "get" => Verb::Get,
            "get-or-empty" => Verb::GetOrEmpty,
            "get-tree" => Verb::GetTree,
            "check-index" => Verb::CheckIndex,
            "check-session" => Verb::CheckSession,
            "check-not-exists" => Verb::CheckNotExists,
            "delete" => Verb::Delete,
            "delete-cas" => Verb::DeleteCas,
            "delete-tree" => Verb::DeleteTree,
            _ => return None,
        })
    }

    /// Whether the verb changes the store (Consul's `isWrite`): a
    /// transaction without one is served as a read.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Verb::Set
                | Verb::Cas
                | Verb::Lock
                | Verb::Unlock
                | Verb::Delete
                | Verb::DeleteCas
                | Verb::DeleteTree
        )
    }
}

/// One `{"KV": {...}}` operation, decoded.
#[derive(Debug, Clone)]
pub(crate) struct KvOp {
    /// `None` for a verb Consul does not know (reported per operation).
    pub verb: Option<Verb>,
    /// The verb as sent, for the error text of an unknown one.
    pub verb_word: String,
    pub key: String,
    pub value: Vec<u8>,
    pub flags: u64,
    /// `Index`: the `ModifyIndex` to compare for cas, delete-cas, check-index.
    pub index: u64,
    pub session: String,
}

/// A failed operation: Consul's `TxnError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TxnError {
    pub op_index: usize,
    pub what: String,
}

/// What an operation returned: an entry, with or without its value.
#[derive(Debug, Clone)]
pub(crate) struct TxnResult {
    pub entry: KvEntry,
}

/// Entries as they were before the transaction touched them, to put back
/// when it fails. Only the first touch of a key is recorded.
#[derive(Debug, Default)]
struct Undo {
    kv: BTreeMap<String, Option<KvEntry>>,
    tombstones: BTreeMap<String, Option<u64>>,
}

impl Undo {
    fn remember(&mut self, store: &Store, key: &str) {
        if !self.kv.contains_key(key) {
            self.kv.insert(key.to_string(), store.kv.get(key).cloned());
            self.tombstones
                .insert(key.to_string(), store.tombstones.get(key).copied());
        }
    }

    fn restore(self, store: &mut Store) {
        for (key, entry) in self.kv {
            match entry {
                Some(e) => store.kv.insert(key, e),
                None => store.kv.remove(&key),
            };
        }
        for (key, tomb) in self.tombstones {
            match tomb {
                Some(i) => store.tombstones.insert(key, i),
                None => store.tombstones.remove(&key),
            };
        }
    }
}

fn blanked(entry: &KvEntry) -> KvEntry {
    KvEntry {
        value: Vec::new(),
        ..entry.clone()
    }
}

impl Store {
    /// Runs `ops` all-or-nothing. Returns the results in order, or every
    /// operation's error when one failed (then nothing changed).
    pub fn txn(&mut self, ops: &[KvOp]) -> Result<Vec<TxnResult>, Vec<TxnError>> {
        let writes = ops.iter().any(|op| op.verb.is_some_and(Verb::is_write));
        let saved_index = self.index;
        let saved_kvs = self.tables.kvs;
        // One raft index for the whole transaction, as one Raft log entry.
        let idx = if writes { self.index + 1 } else { 0 };
        let mut undo = Undo::default();
        let mut results = Vec::new();
        let mut errors = Vec::new();
        for (op_index, op) in ops.iter().enumerate() {
            match self.txn_op(op, idx, &mut undo) {
                Ok(mut r) => results.append(&mut r),
                Err(what) => errors.push(TxnError { op_index, what }),
            }
        }
        if !errors.is_empty() {
            undo.restore(self);
            self.index = saved_index;
            self.tables.kvs = saved_kvs;
            return Err(errors);
        }
        if writes && !undo.kv.is_empty() {
            self.index = idx;
            // Journal what was committed (puts; deletes are not journalled).
            let written: Vec<KvEntry> = undo
                .kv
                .keys()
                .filter_map(|k| self.kv.get(k))
                .filter(|e| e.modify_index == idx)
                .cloned()
                .collect();
            self.journal_with(|j| {
                for e in &written {
                    j.kv_write(&e.key, idx, &e.value);
                }
            });
            self.publish();
        } else {
            // Nothing was written (deletes of missing keys): no index taken.
            self.index = saved_index;
            self.tables.kvs = saved_kvs;
        }
        Ok(results)
    }

    fn txn_put(&mut self, undo: &mut Undo, entry: KvEntry) -> KvEntry {
        undo.remember(self, &entry.key);
        self.tombstones.remove(&entry.key);
        self.tables.kvs = entry.modify_index;
        self.kv.insert(entry.key.clone(), entry.clone());
        entry
    }

    fn txn_remove(&mut self, undo: &mut Undo, key: &str, idx: u64) {
        if self.kv.contains_key(key) {
            undo.remember(self, key);
            self.kv.remove(key);
            self.tombstones.insert(key.to_string(), idx);
            self.tables.kvs = idx;
        }
    }

    fn new_entry(&self, op: &KvOp, idx: u64, lock_index: u64, session: Option<String>) -> KvEntry {
        KvEntry {
            key: op.key.clone(),
            value: op.value.clone(),
            flags: op.flags,
            lock_index,
            session,
            create_index: self.kv.get(&op.key).map_or(idx, |e| e.create_index),
            modify_index: idx,
        }
    }

    fn txn_op(&mut self, op: &KvOp, idx: u64, undo: &mut Undo) -> Result<Vec<TxnResult>, String> {
        let key = op.key.as_str();
        let Some(verb) = op.verb else {
            return Err(format!("unknown KV verb {:?}", op.verb_word));
        };
        let one = |entry: KvEntry| Ok(vec![TxnResult { entry }]);
        let existing = self.kv.get(key);
        match verb {
            Verb::Set => {
                let (lock_index, session) =
                    existing.map_or((0, None), |e| (e.lock_index, e.session.clone()));
                let entry = self.new_entry(op, idx, lock_index, session);
                one(blanked(&self.txn_put(undo, entry)))
            }
            Verb::Cas => {
                let ok = match existing {
                    None => op.index == 0,
                    Some(e) => op.index != 0 && e.modify_index == op.index,
                };
                if !ok {
                    return Err(format!("failed to set key {key:?}, index is stale"));
                }
                let (lock_index, session) =
                    existing.map_or((0, None), |e| (e.lock_index, e.session.clone()));
                let entry = self.new_entry(op, idx, lock_index, session);
                one(blanked(&self.txn_put(undo, entry)))
            }
            Verb::Lock => {
                if op.session.is_empty() {
                    return Err("missing session".to_string());
                }
                if !self.sessions.contains_key(&op.session) {
                    return Err(format!("invalid session {:?}", op.session));
                }
                let lock_index = match existing {
                    Some(e) if e.session.as_deref() == Some(op.session.as_str()) => e.lock_index,
                    Some(e) if e.session.is_some() => {
                        return Err(format!("failed to lock key {key:?}, lock is already held"));
                    }
                    Some(e) => e.lock_index + 1,
                    None => 1,
                };
                let entry = self.new_entry(op, idx, lock_index, Some(op.session.clone()));
                one(blanked(&self.txn_put(undo, entry)))
            }
            Verb::Unlock => {
                if op.session.is_empty() {
                    return Err("missing session".to_string());
                }
                let lock_index = match existing {
                    Some(e) if e.session.as_deref() == Some(op.session.as_str()) => e.lock_index,
                    _ => {
                        return Err(format!(
                            "failed to unlock key {key:?}, lock isn't held, or is held by another session"
                        ));
                    }
                };
                let entry = self.new_entry(op, idx, lock_index, None);
                one(blanked(&self.txn_put(undo, entry)))
            }
            Verb::Get => match existing {
                Some(e) => one(e.clone()),
                None => Err(format!("key {key:?} doesn't exist")),
            },
            Verb::GetOrEmpty => match existing {
                Some(e) => one(e.clone()),
                None => one(KvEntry {
                    key: op.key.clone(),
                    value: Vec::new(),
                    flags: op.flags,
                    lock_index: 0,
                    session: (!op.session.is_empty()).then(|| op.session.clone()),
                    create_index: 0,
                    modify_index: op.index,
                }),
            },
            Verb::GetTree => Ok(self
                .kv
                .range(op.key.clone()..)
                .take_while(|(k, _)| k.starts_with(key))
                .map(|(_, e)| TxnResult { entry: e.clone() })
                .collect()),
            Verb::CheckIndex => match existing {
                None => Err(format!("failed to check index, key {key:?} doesn't exist")),
                Some(e) if e.modify_index != op.index => Err(format!(
                    "failed index check for key {key:?}, current modify index {} != {}",
                    e.modify_index, op.index
                )),
                Some(e) => one(blanked(e)),
            },
            Verb::CheckSession => match existing {
                None => Err(format!(
                    "failed to check session, key {key:?} doesn't exist"
                )),
                Some(e) if e.session.as_deref().unwrap_or_default() != op.session => Err(format!(
                    "failed session check for key {key:?}, current session {:?} != {:?}",
                    e.session.as_deref().unwrap_or_default(),
                    op.session
                )),
                Some(e) => one(blanked(e)),
            },
            Verb::CheckNotExists => match existing {
                Some(_) => Err(format!("key {key:?} exists")),
                None => Ok(Vec::new()),
            },
            Verb::Delete => {
                self.txn_remove(undo, key, idx);
                Ok(Vec::new())
            }
            Verb::DeleteCas => {
                match existing {
                    // A missing key counts as deleted, as in Consul.
                    None => {}
                    Some(e) if e.modify_index != op.index => {
                        return Err(format!("failed to delete key {key:?}, index is stale"));
                    }
                    Some(_) => self.txn_remove(undo, key, idx),
                }
                Ok(Vec::new())
            }
            Verb::DeleteTree => {
                let keys: Vec<String> = self
                    .kv
                    .range(op.key.clone()..)
                    .map(|(k, _)| k)
                    .take_while(|k| k.starts_with(key))
                    .cloned()
                    .collect();
                for k in keys {
                    self.txn_remove(undo, &k, idx);
                }
                Ok(Vec::new())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(verb: &str, key: &str) -> KvOp {
        KvOp {
            verb: Verb::parse(verb),
            verb_word: verb.to_string(),
            key: key.to_string(),
            value: b"v".to_vec(),
            flags: 0,
            index: 0,
            session: String::new(),
        }
    }

    #[test]
    fn a_failed_operation_undoes_the_whole_transaction() {
        let (tx, _rx) = tokio::sync::watch::channel(0);
        let mut store = Store::new(tx);
        let ok = store.txn(&[op("set", "a"), op("set", "b")]);
        assert!(ok.is_ok());
        let index = store.index;
        assert_eq!(index, 1, "one index for the whole transaction");
        let failed = store.txn(&[op("delete", "a"), op("set", "c"), op("get", "nope")]);
        assert_eq!(
            failed.err(),
            Some(vec![TxnError {
                op_index: 2,
                what: "key \"nope\" doesn't exist".to_string()
            }])
        );
        assert!(store.kv.contains_key("a") && !store.kv.contains_key("c"));
        assert!(!store.tombstones.contains_key("a"));
        assert_eq!(store.index, index, "a failed transaction takes no index");
    }
}
