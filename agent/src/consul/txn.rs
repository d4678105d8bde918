//! KV transactions: `PUT /v1/txn`, several KV operations applied all or
//! nothing, in one raft index.
//!
//! rollgate uses them to fence a leader's writes: the check that this
//! replica's session still holds the leader lock and the write itself are
//! one atomic operation (a fenced [`Records`](super::records::Records) store
//! puts a `check-session` first), so a deposed leader cannot write between a
//! check and a write the way a read-then-write fence allows.
//!
//! Consul answers 200 with `Results` when every operation succeeded and 409
//! with `Errors` (`OpIndex`, `What`) when one failed; nothing is applied
//! then. Both are answers, not client errors: [`TxnOutcome`] keeps them apart
//! from transport and permission failures ([`Error`]).

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::types::KvPair;
use super::{Client, Error, QueryOptions, decode, path_segment, status_error};

/// Consul's limit on operations in one transaction.
pub const MAX_OPS: usize = 128;

/// One KV operation of a transaction, as Consul's `api.KVTxnOp` spells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KvOp {
    /// `set`, `cas`, `delete`, `delete-cas`, `check-session`, ...
    pub verb: &'static str,
    /// The key.
    pub key: String,
    /// The value, base64 (writes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The ModifyIndex for `cas`, `delete-cas` and `check-index`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    /// The session for `check-session`, `lock` and `unlock`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

impl KvOp {
    /// Fails the transaction unless `key` is locked by `session`.
    pub fn check_session(key: &str, session: &str) -> Self {
        Self::bare("check-session", key).with_session(session)
    }

    /// Writes `value` only if the key's ModifyIndex is `index` (0: only if
    /// the key does not exist).
    pub fn cas(key: &str, value: &[u8], index: u64) -> Self {
        Self {
            value: Some(base64::engine::general_purpose::STANDARD.encode(value)),
            index: Some(index),
            ..Self::bare("cas", key)
        }
    }

    /// Writes `value` whatever the key holds.
    pub fn set(key: &str, value: &[u8]) -> Self {
        Self {
            value: Some(base64::engine::general_purpose::STANDARD.encode(value)),
            ..Self::bare("set", key)
        }
    }

    /// Deletes the key if its ModifyIndex is `index`.
    pub fn delete_cas(key: &str, index: u64) -> Self {
        Self {
            index: Some(index),
            ..Self::bare("delete-cas", key)
        }
    }

    /// Deletes the key if it exists.
    pub fn delete(key: &str) -> Self {
        Self::bare("delete", key)
    }

    fn bare(verb: &'static str, key: &str) -> Self {
        Self {
            verb,
            key: key.to_owned(),
            value: None,
            index: None,
            session: None,
        }
    }

    fn with_session(mut self, session: &str) -> Self {
        self.session = Some(session.to_owned());
        self
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Op<'a> {
    #[serde(rename = "KV")]
    kv: &'a KvOp,
}

/// One failed operation of a rolled-back transaction.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OpError {
    /// Which operation (0-based, in the order sent).
    pub op_index: usize,
    /// Consul's reason (`failed to set key "…", index is stale`, ...).
    pub what: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Answer {
    #[serde(default)]
    results: Option<Vec<OpResult>>,
    #[serde(default)]
    errors: Option<Vec<OpError>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct OpResult {
    #[serde(rename = "KV")]
    kv: Option<KvPair>,
}

/// What Consul did with a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Every operation applied; one entry per operation that returns one
    /// (writes return the entry with its new ModifyIndex, without value).
    Committed(Vec<KvPair>),
    /// Nothing applied: the operations that failed, with Consul's reasons.
    RolledBack(Vec<OpError>),
}

impl OpError {
    /// Whether Consul refused the operation for the token's permissions
    /// (`Permission denied: token with AccessorID '…' lacks permission
    /// 'key:write' on "…"`), not for its condition.
    pub fn is_acl_denial(&self) -> bool {
        self.what.starts_with("Permission denied") || self.what.contains("ACL not found")
    }
}

impl TxnOutcome {
    /// Whether the operation at `index` is among the failures.
    pub fn failed_at(&self, index: usize) -> bool {
        matches!(self, TxnOutcome::RolledBack(errors) if errors.iter().any(|e| e.op_index == index))
    }
}

impl Client {
    /// `PUT /v1/txn` with KV operations. 409 (rolled back) is an answer,
    /// not an error; a 403 names the call like every other.
    pub async fn txn(&self, ops: &[KvOp]) -> Result<TxnOutcome, Error> {
        let call = "PUT /v1/txn".to_owned();
        if ops.len() > MAX_OPS {
            return Err(Error::Status {
                call,
                status: 413,
                body: format!(
                    "{} operations exceed Consul's limit of {MAX_OPS} per transaction",
                    ops.len()
                ),
            });
        }
        let body: Vec<Op<'_>> = ops.iter().map(|kv| Op { kv }).collect();
        let body = serde_json::to_vec(&body).map_err(|source| Error::Decode {
            call: call.clone(),
            source,
            snippet: String::new(),
        })?;
        let (status, _meta, bytes) = self
            .send(
                Method::PUT,
                &format!("/v1/{}", path_segment("txn", false)),
                &[],
                &QueryOptions::default(),
                Some(body),
                &call,
            )
            .await?;
        if status != StatusCode::OK && status != StatusCode::CONFLICT {
            return Err(status_error(&call, status, &bytes, self.role));
        }
        let answer: Answer = decode(&call, &bytes)?;
        match answer.errors {
            // Consul's Txn.preCheck reports an ACL denial as the failed
            // operation's error in a 409, not as a 403. Read as a rollback,
            // it would pass for a lost check-and-set or a lost lock and be
            // retried in silence; it is the permission error it says it is.
            Some(errors) if !errors.is_empty() => match errors.iter().find(|e| e.is_acl_denial()) {
                Some(denied) => Err(Error::PermissionDenied {
                    call,
                    role: self.role,
                    body: format!(
                        "operation {} of the transaction: {}",
                        denied.op_index, denied.what
                    ),
                }),
                None => Ok(TxnOutcome::RolledBack(errors)),
            },
            _ if status == StatusCode::CONFLICT => Ok(TxnOutcome::RolledBack(Vec::new())),
            _ => Ok(TxnOutcome::Committed(
                answer
                    .results
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|r| r.kv)
                    .collect(),
            )),
        }
    }
}
