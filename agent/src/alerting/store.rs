//! The watcher's state in Consul KV (`<kv_prefix>/watch/state`), read and
//! written with check-and-set, so two watchers (an old and a new leader)
//! cannot overwrite each other: the loser reloads and computes again.
//!
//! A state larger than [`CHUNK_BYTES`] (about a thousand firing checks)
//! would not fit in one KV value (Consul's limit is 512 KiB). It is then
//! written as chunks under `<kv_prefix>/watch/state-chunks/<generation>/`
//! (a random generation per write, never modified afterwards), and the
//! state key holds a small [`Manifest`] naming them. The manifest's `cas`
//! write remains the single commit point: chunks of a write that lost (or
//! crashed) are never referenced and are deleted later; chunks of the
//! previous generation are deleted after the new manifest is committed. A
//! reader that finds its generation's chunks gone (a newer write deleted
//! them meanwhile) gets a conflict and reads again.
//!
//! The state key is a [`Records`] record ([`Head`], schema 1): versioned,
//! written with check-and-set and, under the watcher's leader lock, fenced
//! in the same transaction. Chunks are plain slices of the state's JSON,
//! written before the head and never modified; only the head commits them.

use serde::{Deserialize, Serialize};

use super::engine::State;
use crate::consul::kv::PutOptions;
use crate::consul::lock::Fence;
use crate::consul::records::{Record, RecordError, Records};
use crate::consul::{self, Client, QueryOptions};

/// States up to this size are written inline; larger ones in chunks of
/// this size.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// What the state key holds when the state is chunked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format marker and version (1).
    pub chunked: u32,
    /// Names the chunks' folder.
    pub generation: String,
    /// Number of chunks.
    pub chunks: u32,
    /// Total size of the state's JSON.
    pub bytes: u64,
}

/// What the state key holds: the state itself, or the manifest of its
/// chunks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Head {
    /// A large state's chunks (tried first: a manifest has required fields,
    /// a state has none).
    Chunked(Manifest),
    /// A state small enough for one value.
    Inline(State),
}

/// Schema 1: as written since the first release (the inline state, or the
/// manifest of its chunks).
impl Record for Head {
    const KIND: &'static str = "watcher state";
    const SCHEMA: u32 = 1;
}

/// A state read or write failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Consul failed; retry later.
    #[error("watcher state {key}: {source}")]
    Consul {
        /// The KV key.
        key: String,
        /// The client's error.
        #[source]
        source: consul::Error,
    },
    /// Someone else wrote the state since we read it: reload.
    #[error("watcher state {key} changed under us (another watcher is running); reloading")]
    Conflict {
        /// The KV key.
        key: String,
    },
    /// A newer rollgate wrote it, this watcher lost its lock, or the state
    /// could not be encoded: nothing was written.
    #[error(transparent)]
    Record(RecordError),
}

/// Where the state lives.
#[derive(Debug)]
pub struct StateStore {
    /// Consul client (chunks).
    client: Client,
    /// The head record, fenced when the watcher leads.
    records: Records,
    /// `<kv_prefix>/watch/state`.
    key: String,
    /// `<kv_prefix>/watch/state-chunks/`.
    chunks: String,
    /// The chunk generation the state key names now (as last read or
    /// written), deleted after the next write.
    generation: std::sync::Mutex<Option<String>>,
}

impl StateStore {
    /// The store under `<kv_prefix>/watch/state`.
    pub fn new(client: Client, kv_prefix: &str) -> Self {
        let prefix = kv_prefix.trim_end_matches('/');
        Self {
            records: Records::new(client.clone()),
            client,
            key: format!("{prefix}/watch/state"),
            chunks: format!("{prefix}/watch/state-chunks/"),
            generation: std::sync::Mutex::new(None),
        }
    }

    /// The KV key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The same store, its head written under the leader lock's fence.
    pub fn fence(&mut self, fence: Option<Fence>) {
        self.records = match fence {
            Some(f) => Records::new(self.client.clone()).fenced(f),
            None => Records::new(self.client.clone()),
        };
    }

    fn record_err(&self, e: RecordError) -> StoreError {
        match e {
            RecordError::Consul(source) => self.err(source),
            RecordError::Contended(_) => StoreError::Conflict {
                key: self.key.clone(),
            },
            other => StoreError::Record(other),
        }
    }

    fn err(&self, source: consul::Error) -> StoreError {
        StoreError::Consul {
            key: self.key.clone(),
            source,
        }
    }

    fn set_generation(&self, g: Option<String>) -> Option<String> {
        let mut current = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *current, g)
    }

    /// Loads the state and its ModifyIndex (0 when absent). An unreadable
    /// state is logged and replaced by an empty one: alerts may repeat once,
    /// but the watcher keeps working.
    pub async fn load(&self) -> Result<(State, u64), StoreError> {
        let head = match self.records.get::<Head>(&self.key).await {
            Ok(h) => h,
            Err(RecordError::Unreadable { reason, .. }) => {
                // Its ModifyIndex is needed to replace it: read it raw.
                let index = self
                    .client
                    .kv_get(&self.key, &QueryOptions::default())
                    .await
                    .map_err(|e| self.err(e))?
                    .value
                    .map_or(0, |kv| kv.modify_index);
                return Ok(self.unreadable(reason, index));
            }
            Err(e) => return Err(self.record_err(e)),
        };
        let Some(head) = head else {
            self.set_generation(None);
            self.delete_chunks_except(None).await;
            return Ok((State::default(), 0));
        };
        let (state, generation) = match head.value {
            Head::Inline(state) => (state, None),
            Head::Chunked(m) => {
                let json = self.read_chunks(&m).await?;
                match serde_json::from_slice::<State>(&json) {
                    Ok(s) => (s, Some(m.generation)),
                    Err(e) => return Ok(self.unreadable(e.to_string(), head.index)),
                }
            }
        };
        self.set_generation(generation.clone());
        self.delete_chunks_except(generation.as_deref()).await;
        Ok((state, head.index))
    }

    fn unreadable(&self, error: String, index: u64) -> (State, u64) {
        tracing::error!(key = %self.key, error = %error,
            "Watcher state is unreadable; starting from an empty state (firing alerts may be notified again).");
        (State::default(), index)
    }

    /// The state's JSON from the chunks `m` names; a conflict when some are
    /// missing (a newer write replaced them: read the manifest again).
    async fn read_chunks(&self, m: &Manifest) -> Result<Vec<u8>, StoreError> {
        let folder = format!("{}{}/", self.chunks, m.generation);
        let list = self
            .client
            .kv_list(&folder, &QueryOptions::default())
            .await
            .map_err(|e| self.err(e))?
            .value;
        let mut parts: Vec<(u32, Vec<u8>)> = Vec::with_capacity(list.len());
        for kv in &list {
            let Some(n) = kv
                .key
                .strip_prefix(&folder)
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let bytes = kv.value().map_err(|_| StoreError::Conflict {
                key: self.key.clone(),
            })?;
            parts.push((n, bytes));
        }
        parts.sort_by_key(|(n, _)| *n);
        let complete = parts.len() == m.chunks as usize
            && parts.iter().enumerate().all(|(i, (n, _))| *n as usize == i);
        let json: Vec<u8> = parts.into_iter().flat_map(|(_, b)| b).collect();
        if !complete || json.len() as u64 != m.bytes {
            return Err(StoreError::Conflict {
                key: self.key.clone(),
            });
        }
        Ok(json)
    }

    /// Deletes every chunk generation but `keep` (best effort: leftovers
    /// are retried on the next load).
    async fn delete_chunks_except(&self, keep: Option<&str>) {
        let Ok(r) = self
            .client
            .kv_list(&self.chunks, &QueryOptions::default())
            .await
        else {
            return;
        };
        let mut generations: Vec<&str> = r
            .value
            .iter()
            .filter_map(|kv| kv.key.strip_prefix(&self.chunks)?.split('/').next())
            .filter(|g| Some(*g) != keep)
            .collect();
        generations.dedup();
        for g in generations {
            self.delete_generation(g).await;
        }
    }

    async fn delete_generation(&self, generation: &str) {
        let folder = format!("{}{generation}/", self.chunks);
        if let Err(e) = self.client.kv_delete(&folder, None, true).await {
            tracing::warn!(key = %folder, error = %e, "Cannot delete old watcher state chunks; retrying on the next load.");
        }
    }

    /// Writes `state` if the key is still at `index`; answers the new index.
    pub async fn save(&self, state: &State, index: u64) -> Result<u64, StoreError> {
        let json = serde_json::to_vec(state).map_err(|source| {
            StoreError::Record(RecordError::Encode {
                key: self.key.clone(),
                kind: Head::KIND,
                source,
            })
        })?;
        let (head, generation) = if json.len() <= CHUNK_BYTES {
            (Head::Inline(state.clone()), None)
        } else {
            let generation = format!("{:016x}", rand::random::<u64>());
            let chunks = json.chunks(CHUNK_BYTES).count();
            for (i, part) in json.chunks(CHUNK_BYTES).enumerate() {
                let key = format!("{}{generation}/{i}", self.chunks);
                if let Err(e) = self.client.kv_put(&key, part, &PutOptions::default()).await {
                    self.delete_generation(&generation).await;
                    return Err(self.err(e));
                }
            }
            let manifest = Manifest {
                chunked: 1,
                generation: generation.clone(),
                chunks: u32::try_from(chunks).unwrap_or(u32::MAX),
                bytes: json.len() as u64,
            };
            (Head::Chunked(manifest), Some(generation))
        };
        let written = self.records.replace(&self.key, &head, index).await;
        // Lost the cas (or the fence): nobody will ever name these chunks.
        // (After a transport error the write may have happened: keep them;
        // the next load deletes them if they are not named.)
        let lost = matches!(
            written,
            Ok(None) | Err(RecordError::FenceLost { .. } | RecordError::TooNew { .. })
        );
        if let (true, Some(g)) = (lost, &generation) {
            self.delete_generation(g).await;
        }
        let Some(new_index) = written.map_err(|e| self.record_err(e))? else {
            return Err(StoreError::Conflict {
                key: self.key.clone(),
            });
        };
        if let Some(old) = self.set_generation(generation) {
            self.delete_generation(&old).await;
        }
        Ok(new_index)
    }
}
