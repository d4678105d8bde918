//! The one way rollgate keeps records in Consul KV: typed, versioned, and
//! fenced when a leader writes.
//!
//! - **Typed.** A record is a [`Record`]: its JSON with a `schema` field
//!   added on the way out. Reading checks the schema first: an older one is
//!   converted ([`Record::upgrade`]); a newer one (written by a newer
//!   release during an upgrade) is reported as [`RecordError::TooNew`] and
//!   left untouched: never skipped silently, never overwritten. Records
//!   written before schemas existed have none and count as schema 1.
//! - **Check-and-set.** Every update is a `cas` on the ModifyIndex read;
//!   [`Records::update`] re-reads and re-decides when someone else wrote
//!   first, a bounded number of times (one retry policy for every record).
//! - **Fenced.** A store made with [`Records::fenced`] writes through
//!   `/v1/txn`: a `check-session` on the leader lock key and the write, in
//!   one transaction. A replica that lost the lock cannot write anything,
//!   not even between a check and a write ([`RecordError::FenceLost`]).
//!
//! What it must never do: write a record it could not encode (an empty value
//! is not a record), or turn "someone else wrote first" into success.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::lock::Fence;
use super::txn::{KvOp, TxnOutcome};
use super::types::KvPair;
use super::{Client, Error, QueryOptions};

/// The field every record carries its schema version in.
pub const SCHEMA_FIELD: &str = "schema";

/// How many times an update re-reads after losing a check-and-set race
/// before it gives up ([`RecordError::Contended`]).
pub const UPDATE_ATTEMPTS: u32 = 20;

/// A record kept in KV.
pub trait Record: Serialize + DeserializeOwned {
    /// What it is, in errors (`plan`, `rollout`).
    const KIND: &'static str;
    /// The schema this release writes. Raise it when a field changes
    /// meaning or shape, and convert the old shape in [`Record::upgrade`].
    const SCHEMA: u32;

    /// Converts the JSON of an older schema (1 for records written before
    /// schemas existed) to the current shape. The default knows no older
    /// schema.
    fn upgrade(schema: u32, value: Value) -> Result<Value, String> {
        let _ = value;
        Err(format!("no conversion from schema {schema}"))
    }
}

/// A record read or write failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Consul failed (the error names the call).
    #[error(transparent)]
    Consul(#[from] Error),
    /// The value is not a record of this kind (edited by hand, or damaged).
    #[error("KV record {key} is not a readable {kind}: {reason}")]
    Unreadable {
        /// The key.
        key: String,
        /// The record kind.
        kind: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A newer rollgate wrote it; this one leaves it alone.
    #[error(
        "KV record {key} is a {kind} of schema {schema}, written by a newer rollgate (this one reads up to {supported}); it is left untouched: upgrade this replica"
    )]
    TooNew {
        /// The key.
        key: String,
        /// The record kind.
        kind: &'static str,
        /// The schema it carries.
        schema: u32,
        /// The newest schema this release reads.
        supported: u32,
    },
    /// The record could not be encoded (a bug: nothing was written).
    #[error("cannot encode the {kind} for {key}: {source}")]
    Encode {
        /// The key.
        key: String,
        /// The record kind.
        kind: &'static str,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// Someone else kept changing it.
    #[error("KV record {0} kept changing under us ({UPDATE_ATTEMPTS} attempts); try again")]
    Contended(String),
    /// Consul filtered a listing: the token may not read some records under
    /// the prefix, so the list is not the whole truth and is not used.
    #[error(
        "Consul hid some records under {prefix} from this token (X-Consul-Results-Filtered-By-ACLs): it lacks key:read on part of the prefix; see config/acl/ for the role's policy"
    )]
    Hidden {
        /// The listed prefix.
        prefix: String,
    },
    /// This replica no longer holds the leader lock; nothing was written.
    #[error("not written to {key}: this replica no longer holds the leader lock {lock}")]
    FenceLost {
        /// The record's key.
        key: String,
        /// The lock key.
        lock: String,
    },
}

impl RecordError {
    /// Whether it is worth trying again later (Consul unreachable or busy,
    /// or contention); a permission, a newer record or a lost fence is not.
    pub fn is_retryable(&self) -> bool {
        match self {
            RecordError::Consul(e) => e.is_retryable(),
            RecordError::Contended(_) => true,
            _ => false,
        }
    }
}

/// A record and the ModifyIndex it was read at (the `cas` token).
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// The record.
    pub value: T,
    /// Its ModifyIndex.
    pub index: u64,
}

/// What an [`Records::update`] closure decided.
#[derive(Debug)]
pub enum Change<T, R> {
    /// Write this and answer `R`.
    Write(T, R),
    /// Delete the record and answer `R`.
    Delete(R),
    /// Write nothing and answer `R`.
    Keep(R),
}

/// Encodes a record with its schema.
pub fn encode<T: Record>(key: &str, value: &T) -> Result<Vec<u8>, RecordError> {
    let fail = |source| RecordError::Encode {
        key: key.to_owned(),
        kind: T::KIND,
        source,
    };
    let mut json = serde_json::to_value(value).map_err(fail)?;
    if let Value::Object(map) = &mut json {
        map.insert(SCHEMA_FIELD.to_owned(), Value::from(T::SCHEMA));
    }
    serde_json::to_vec(&json).map_err(fail)
}

/// Decodes a record, converting an older schema and refusing a newer one.
pub fn decode<T: Record>(key: &str, bytes: &[u8]) -> Result<T, RecordError> {
    let unreadable = |reason: String| RecordError::Unreadable {
        key: key.to_owned(),
        kind: T::KIND,
        reason,
    };
    let mut json: Value = serde_json::from_slice(bytes).map_err(|e| unreadable(e.to_string()))?;
    let schema = match &mut json {
        Value::Object(map) => match map.remove(SCHEMA_FIELD) {
            None => 1,
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| unreadable(format!("{SCHEMA_FIELD} is {v}, not a number")))?,
        },
        _ => 1,
    };
    if schema > T::SCHEMA {
        return Err(RecordError::TooNew {
            key: key.to_owned(),
            kind: T::KIND,
            schema,
            supported: T::SCHEMA,
        });
    }
    if schema < T::SCHEMA {
        json = T::upgrade(schema, json).map_err(unreadable)?;
    }
    serde_json::from_value(json).map_err(|e| unreadable(e.to_string()))
}

fn decode_pair<T: Record>(kv: &KvPair) -> Result<Versioned<T>, RecordError> {
    let bytes = kv.value().map_err(|e| RecordError::Unreadable {
        key: kv.key.clone(),
        kind: T::KIND,
        reason: format!("the value is not base64: {e}"),
    })?;
    Ok(Versioned {
        value: decode(&kv.key, &bytes)?,
        index: kv.modify_index,
    })
}

/// Records in Consul KV, written with check-and-set (and fenced, when made
/// with [`Records::fenced`]).
#[derive(Debug, Clone)]
pub struct Records {
    client: Client,
    fence: Option<Fence>,
}

impl Records {
    /// Unfenced: for operators' and publishers' writes, which check-and-set
    /// alone protects.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            fence: None,
        }
    }

    /// The same store, every write checked against the leader lock in the
    /// same transaction.
    pub fn fenced(&self, fence: Fence) -> Self {
        Self {
            client: self.client.clone(),
            fence: Some(fence),
        }
    }

    /// The Consul client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The fence, when writes are fenced.
    pub fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }

    /// One record, `None` when the key does not exist.
    pub async fn get<T: Record>(&self, key: &str) -> Result<Option<Versioned<T>>, RecordError> {
        let r = self.client.kv_get(key, &QueryOptions::default()).await?;
        r.value.as_ref().map(decode_pair).transpose()
    }

    /// Every record under `prefix`, sorted by key, each decoded on its own:
    /// the caller decides what an unreadable one means.
    #[allow(clippy::type_complexity)]
    pub async fn list<T: Record>(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Result<Versioned<T>, RecordError>)>, RecordError> {
        Ok(self.list_indexed(prefix).await?.0)
    }

    /// [`list`](Self::list), with the listing's `X-Consul-Index`: a
    /// blocking query from it returns when anything under `prefix` changes.
    #[allow(clippy::type_complexity)]
    pub async fn list_indexed<T: Record>(
        &self,
        prefix: &str,
    ) -> Result<(Vec<(String, Result<Versioned<T>, RecordError>)>, u64), RecordError> {
        self.list_indexed_with(prefix, &QueryOptions::default())
            .await
    }

    /// [`list_indexed`](Self::list_indexed) with query options (a blocking
    /// query, say).
    pub async fn list_indexed_with<T: Record>(
        &self,
        prefix: &str,
        opts: &QueryOptions,
    ) -> Result<(Vec<(String, Result<Versioned<T>, RecordError>)>, u64), RecordError> {
        let r = self.client.kv_list(prefix, opts).await?;
        if r.meta.filtered_by_acls {
            return Err(RecordError::Hidden {
                prefix: prefix.to_owned(),
            });
        }
        Ok((
            r.value
                .iter()
                .map(|kv| (kv.key.clone(), decode_pair(kv)))
                .collect(),
            r.meta.index,
        ))
    }

    /// Creates the record; `None` when the key exists already.
    pub async fn create<T: Record>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<Option<u64>, RecordError> {
        self.replace(key, value, 0).await
    }

    /// Writes the record whatever the key holds; answers its ModifyIndex.
    pub async fn put<T: Record>(&self, key: &str, value: &T) -> Result<u64, RecordError> {
        let op = KvOp::set(key, &encode(key, value)?);
        match self.write(key, op).await? {
            Some(index) => Ok(index),
            // A plain set fails only with the fence, reported in `write`.
            None => Err(RecordError::Contended(key.to_owned())),
        }
    }

    /// Writes the record if its ModifyIndex is still `index` (0: only if
    /// absent); answers the new ModifyIndex, or `None` when someone else
    /// wrote first.
    pub async fn replace<T: Record>(
        &self,
        key: &str,
        value: &T,
        index: u64,
    ) -> Result<Option<u64>, RecordError> {
        self.write(key, KvOp::cas(key, &encode(key, value)?, index))
            .await
    }

    /// Deletes the record if its ModifyIndex is still `index` (`None`:
    /// whatever it holds); answers whether it was deleted.
    pub async fn delete(&self, key: &str, index: Option<u64>) -> Result<bool, RecordError> {
        let op = match index {
            Some(i) => KvOp::delete_cas(key, i),
            None => KvOp::delete(key),
        };
        Ok(self.write(key, op).await?.is_some())
    }

    /// Reads the record, lets `decide` choose what to do with it, and
    /// writes that with check-and-set; re-reads and asks again when someone
    /// else wrote first. A record that cannot be read is an error: it is
    /// never replaced blindly.
    pub async fn update<T, R, F>(&self, key: &str, mut decide: F) -> Result<R, RecordError>
    where
        T: Record,
        F: FnMut(Option<Versioned<T>>) -> Change<T, R>,
    {
        for _ in 0..UPDATE_ATTEMPTS {
            let current = self.get::<T>(key).await?;
            let index = current.as_ref().map_or(0, |v| v.index);
            let exists = current.is_some();
            let done = match decide(current) {
                Change::Keep(r) => return Ok(r),
                Change::Write(value, r) => self.replace(key, &value, index).await?.map(|_| r),
                Change::Delete(r) if !exists => Some(r),
                Change::Delete(r) => self.delete(key, Some(index)).await?.then_some(r),
            };
            if let Some(r) = done {
                return Ok(r);
            }
        }
        Err(RecordError::Contended(key.to_owned()))
    }

    /// One write, fenced when the store is: answers the key's new
    /// ModifyIndex (0 for a delete), or `None` when the write's own
    /// condition failed.
    async fn write(&self, key: &str, op: KvOp) -> Result<Option<u64>, RecordError> {
        let mut ops = Vec::with_capacity(2);
        if let Some(f) = &self.fence {
            ops.push(KvOp::check_session(&f.key, &f.session));
        }
        let own = ops.len();
        ops.push(op);
        match self.client.txn(&ops).await? {
            TxnOutcome::Committed(results) => Ok(Some(
                results
                    .iter()
                    .find(|kv| kv.key == key)
                    .map_or(0, |kv| kv.modify_index),
            )),
            outcome if own == 1 && outcome.failed_at(0) => Err(RecordError::FenceLost {
                key: key.to_owned(),
                lock: self
                    .fence
                    .as_ref()
                    .map(|f| f.key.clone())
                    .unwrap_or_default(),
            }),
            TxnOutcome::RolledBack(_) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Thing {
        name: String,
        size: u32,
    }

    impl Record for Thing {
        const KIND: &'static str = "thing";
        const SCHEMA: u32 = 2;
        fn upgrade(schema: u32, mut value: Value) -> Result<Value, String> {
            // Schema 1 called the size "bytes".
            if schema == 1 {
                if let Some(map) = value.as_object_mut() {
                    if let Some(b) = map.remove("bytes") {
                        map.insert("size".into(), b);
                    }
                }
                return Ok(value);
            }
            Err(format!("no conversion from schema {schema}"))
        }
    }

    #[test]
    fn written_records_carry_their_schema_and_read_back() {
        let t = Thing {
            name: "a".into(),
            size: 3,
        };
        let bytes = encode("k", &t).unwrap();
        let json: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["schema"], 2);
        assert_eq!(decode::<Thing>("k", &bytes).unwrap(), t);
    }

    #[test]
    fn records_without_a_schema_are_schema_one_and_upgraded() {
        let old = br#"{"name":"a","bytes":7}"#;
        assert_eq!(
            decode::<Thing>("k", old).unwrap(),
            Thing {
                name: "a".into(),
                size: 7
            }
        );
    }

    #[test]
    fn newer_records_are_refused_by_name() {
        let newer = br#"{"name":"a","size":7,"schema":3}"#;
        let e = decode::<Thing>("k/1", newer).unwrap_err();
        assert!(matches!(
            e,
            RecordError::TooNew {
                schema: 3,
                supported: 2,
                ..
            }
        ));
        assert!(e.to_string().contains("k/1"), "{e}");
        assert!(e.to_string().contains("newer rollgate"), "{e}");
    }

    #[test]
    fn damaged_records_are_unreadable_not_defaulted() {
        for bad in [&b"not json"[..], br#"{"name":"a"}"#, br#"{"schema":"x"}"#] {
            assert!(matches!(
                decode::<Thing>("k", bad),
                Err(RecordError::Unreadable { .. })
            ));
        }
    }
}
