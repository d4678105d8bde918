//! The watcher's state in Consul KV (`<kv_prefix>/watch/state`), read and
//! written with check-and-set, so two watchers (an old and a new leader)
//! cannot overwrite each other: the loser reloads and computes again.

use super::engine::State;
use crate::consul::kv::PutOptions;
use crate::consul::{self, Client, QueryOptions};

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
}

/// Where the state lives.
#[derive(Debug, Clone)]
pub struct StateStore {
    /// Consul client.
    client: Client,
    /// `<kv_prefix>/watch/state`.
    key: String,
}

impl StateStore {
    /// The store under `<kv_prefix>/watch/state`.
    pub fn new(client: Client, kv_prefix: &str) -> Self {
        Self {
            client,
            key: format!("{}/watch/state", kv_prefix.trim_end_matches('/')),
        }
    }

    /// The KV key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Loads the state and its ModifyIndex (0 when absent). An unreadable
    /// state is logged and replaced by an empty one: alerts may repeat once,
    /// but the watcher keeps working.
    pub async fn load(&self) -> Result<(State, u64), StoreError> {
        let r = self
            .client
            .kv_get(&self.key, &QueryOptions::default())
            .await
            .map_err(|source| StoreError::Consul {
                key: self.key.clone(),
                source,
            })?;
        let Some(kv) = r.value else {
            return Ok((State::default(), 0));
        };
        let decoded = kv
            .value()
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<State>(&b).map_err(|e| e.to_string()));
        match decoded {
            Ok(s) => Ok((s, kv.modify_index)),
            Err(e) => {
                tracing::error!(key = %self.key, error = %e,
                    "Watcher state is unreadable; starting from an empty state (firing alerts may be notified again).");
                Ok((State::default(), kv.modify_index))
            }
        }
    }

    /// Writes `state` if the key is still at `index`; answers the new index.
    pub async fn save(&self, state: &State, index: u64) -> Result<u64, StoreError> {
        let err = |source| StoreError::Consul {
            key: self.key.clone(),
            source,
        };
        let value = serde_json::to_vec(state).unwrap_or_default();
        let opts = PutOptions {
            cas: Some(index),
            ..PutOptions::default()
        };
        if !self
            .client
            .kv_put(&self.key, &value, &opts)
            .await
            .map_err(err)?
        {
            return Err(StoreError::Conflict {
                key: self.key.clone(),
            });
        }
        let r = self
            .client
            .kv_get(&self.key, &QueryOptions::default())
            .await
            .map_err(err)?;
        Ok(r.value.map(|kv| kv.modify_index).unwrap_or(0))
    }
}
