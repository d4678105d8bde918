//! The KV store: rollgate's durable state (plans, rollouts, outbox, lock).
//!
//! Writes answer whether they took effect: with `cas` or `acquire`, `false`
//! means someone else changed the key first, which callers must treat as
//! "reload and decide again", never as success.

use reqwest::Method;

use super::types::KvPair;
use super::{Client, Error, QueryOptions, Response, path_segment};

/// Consul's limit on one value.
pub const MAX_VALUE_BYTES: usize = 512 * 1024;

/// Conditions of a KV write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Write only if the key's ModifyIndex is this (`0`: only if absent).
    pub cas: Option<u64>,
    /// Take the key's lock for this session.
    pub acquire: Option<String>,
    /// Release the key's lock held by this session.
    pub release: Option<String>,
    /// Opaque flags stored with the value.
    pub flags: Option<u64>,
}

impl Client {
    /// `GET /v1/kv/:key`, `None` when absent. Blocks when `opts.index` is set.
    pub async fn kv_get(
        &self,
        key: &str,
        opts: &QueryOptions,
    ) -> Result<Response<Option<KvPair>>, Error> {
        let path = format!("/v1/kv/{}", path_segment(key, true));
        let r: Response<Option<Vec<KvPair>>> = self.read_optional(&path, &[], opts).await?;
        Ok(Response {
            value: r.value.and_then(|v| v.into_iter().next()),
            meta: r.meta,
        })
    }

    /// `GET /v1/kv/:prefix?recurse`: every entry under the prefix, sorted by
    /// key; empty when there is none.
    pub async fn kv_list(
        &self,
        prefix: &str,
        opts: &QueryOptions,
    ) -> Result<Response<Vec<KvPair>>, Error> {
        let path = format!("/v1/kv/{}", path_segment(prefix, true));
        let r: Response<Option<Vec<KvPair>>> = self
            .read_optional(&path, &[("recurse", "true".into())], opts)
            .await?;
        Ok(Response {
            value: r.value.unwrap_or_default(),
            meta: r.meta,
        })
    }

    /// `PUT /v1/kv/:key`: answers whether the write took effect.
    pub async fn kv_put(&self, key: &str, value: &[u8], opts: &PutOptions) -> Result<bool, Error> {
        let path = format!("/v1/kv/{}", path_segment(key, true));
        if value.len() > MAX_VALUE_BYTES {
            return Err(Error::Status {
                call: format!("PUT {path}"),
                status: 413,
                body: format!(
                    "value of {} bytes exceeds Consul's limit of {MAX_VALUE_BYTES} bytes",
                    value.len()
                ),
            });
        }
        let mut params = Vec::new();
        if let Some(cas) = opts.cas {
            params.push(("cas", cas.to_string()));
        }
        if let Some(s) = &opts.acquire {
            params.push(("acquire", s.clone()));
        }
        if let Some(s) = &opts.release {
            params.push(("release", s.clone()));
        }
        if let Some(f) = opts.flags {
            params.push(("flags", f.to_string()));
        }
        self.write_json(Method::PUT, &path, &params, Some(value.to_vec()))
            .await
    }

    /// `DELETE /v1/kv/:key` (with `cas` when given; `recurse` deletes the
    /// whole prefix). Answers whether the delete took effect.
    pub async fn kv_delete(
        &self,
        key: &str,
        cas: Option<u64>,
        recurse: bool,
    ) -> Result<bool, Error> {
        let path = format!("/v1/kv/{}", path_segment(key, true));
        let mut params = Vec::new();
        if let Some(cas) = cas {
            params.push(("cas", cas.to_string()));
        }
        if recurse {
            params.push(("recurse", "true".to_string()));
        }
        self.write_json(Method::DELETE, &path, &params, None).await
    }
}
