//! A thin, typed client for the part of Consul's HTTP API rollgate uses.
//!
//! - [`Client`]: one reqwest client (rustls, optional custom CA), the token in
//!   the `X-Consul-Token` header only, a time limit on every call (for blocking
//!   calls: the wait, plus Consul's jitter of wait/16, plus the normal limit).
//! - Endpoint groups: [`agent`], [`health`], [`kv`], [`session`], [`txn`].
//! - [`records`]: typed, versioned records in KV, written with
//!   check-and-set and fenced by the leader lock in one transaction.
//! - [`watch`]: the blocking-query loop every watcher uses.
//! - [`lock`]: the leader lock (session + KV acquire) and its fence;
//!   [`leading`]: the supervised "run while leading" loop built on it.
//!
//! Every read returns a [`Response`] carrying Consul's [`QueryMeta`] (index,
//! known leader, last contact, content hash). The client never logs the token,
//! never puts it in a URL, and never retries on its own: retry policy belongs
//! to the caller ([`watch`] for reads, the callers of writes).
//!
//! Nothing here depends on a behaviour of the sandbox server that real Consul
//! does not have.

pub mod agent;
mod error;
pub mod health;
pub mod kv;
pub mod leading;
pub mod lock;
pub mod permissions;
pub mod records;
pub mod session;
pub mod txn;
pub mod types;
pub mod watch;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

pub use error::Error;

use crate::config::{ConsulConfig, Secret};

/// Consul's metadata about an answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryMeta {
    /// `X-Consul-Index`: pass it back as `index` to block for a change.
    pub index: u64,
    /// `X-Consul-KnownLeader`: whether the answering server knew a leader.
    pub known_leader: bool,
    /// `X-Consul-LastContact`: how stale a `stale` read may be.
    pub last_contact: Duration,
    /// `X-Consul-ContentHash` of agent-local blocking endpoints.
    pub content_hash: Option<String>,
    /// `X-Consul-Results-Filtered-By-ACLs: true`: Consul removed entries
    /// the token may not read. The answer is then not the whole truth: an
    /// absent instance or check may exist.
    pub filtered_by_acls: bool,
}

/// A value with the metadata of the answer that carried it.
#[derive(Debug, Clone, PartialEq)]
pub struct Response<T> {
    /// The decoded body.
    pub value: T,
    /// Consul's metadata.
    pub meta: QueryMeta,
}

/// Options of one read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryOptions {
    /// Block until the data's index is above this (`index=`).
    pub index: Option<u64>,
    /// Agent-local endpoints: block until the content hash differs (`hash=`).
    pub hash: Option<String>,
    /// How long to block (`wait=`); Consul's default is 5 minutes.
    pub wait: Option<Duration>,
    /// Any server may answer, possibly stale (`stale`).
    pub stale: bool,
    /// The leader confirms with a quorum that it still leads before
    /// answering (`consistent`): never an answer from a deposed leader.
    pub consistent: bool,
    /// Consul's `filter` expression.
    pub filter: Option<String>,
}

impl QueryOptions {
    /// A blocking read from `index`, waiting at most `wait`.
    pub fn blocking(index: u64, wait: Duration) -> Self {
        Self {
            index: Some(index),
            wait: Some(wait),
            ..Self::default()
        }
    }
}

/// The Consul HTTP client. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct Client {
    /// Shared connection pool.
    http: reqwest::Client,
    /// `scheme://host:port`, no trailing slash.
    base: String,
    /// Sent as `X-Consul-Token`; never logged.
    token: Option<Secret>,
    /// `dc=` for cluster-wide reads, when set.
    datacenter: Option<String>,
    /// Time limit of a non-blocking call.
    timeout: Duration,
    /// The rollgate role this client acts as, named in permission errors.
    role: Option<&'static str>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("datacenter", &self.datacenter)
            .finish()
    }
}

impl Client {
    /// Builds a client from the `[consul]` configuration: reads the token file
    /// and the CA file now, so a mistake shows at start-up.
    pub fn new(config: &ConsulConfig) -> Result<Self, Error> {
        let base = config.base_url().map_err(|rule| {
            Error::Config(format!("consul.address = {:?}: {rule}", config.address))
        })?;
        let token = config.resolve_token().map_err(|e| {
            Error::Config(format!(
                "consul.token_file = {:?} cannot be read: {e}",
                config.token_file.as_deref().unwrap_or_else(|| "".as_ref())
            ))
        })?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("rollgate/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(90));
        if config.ca_file.is_none() && is_plain_http(&base) {
            // Plain HTTP (the node agent's loopback Consul agent): no trust
            // roots. The default builder reads and parses the system's whole
            // CA bundle, code and heap that would stay resident for the
            // process's life to verify certificates it never sees (Consul
            // does not redirect to `https`; were it to, verification fails).
            builder = builder.tls_certs_only(std::iter::empty());
        }
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca).map_err(|e| {
                Error::Config(format!("consul.ca_file = {ca:?} cannot be read: {e}"))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Error::Config(format!(
                    "consul.ca_file = {ca:?} is not a PEM certificate: {e}"
                ))
            })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            token,
            datacenter: config.datacenter.clone().filter(|d| !d.is_empty()),
            timeout: config.timeout,
            role: None,
        })
    }

    /// The same client, acting as rollgate's `role` (`coordinator`,
    /// `agent`, `watcher`, `operator`): a 403 then names the role's policy
    /// file (`config/acl/<role>.hcl`).
    pub fn for_role(mut self, role: &'static str) -> Self {
        self.role = Some(role);
        self
    }

    /// The same client (pool, address, time limits) sending `token`
    /// instead of its own: the console acts with each operator's token, so
    /// Consul's ACLs decide what the operator may do.
    pub fn with_token(mut self, token: Option<Secret>) -> Self {
        self.token = token;
        self
    }

    /// Consul's base URL.
    pub fn address(&self) -> &str {
        &self.base
    }

    /// `GET /v1/status/leader`: the leader's address, empty when there is none.
    pub async fn status_leader(&self) -> Result<String, Error> {
        let r: Response<String> = self
            .read("/v1/status/leader", &[], &QueryOptions::default())
            .await?;
        Ok(r.value)
    }

    /// A GET with query options, decoded as JSON.
    pub(crate) async fn read<T: DeserializeOwned>(
        &self,
        path: &str,
        params: &[(&str, String)],
        opts: &QueryOptions,
    ) -> Result<Response<T>, Error> {
        let (meta, body) = self.read_raw(path, params, opts).await?;
        let value = decode(&format!("GET {path}"), &body)?;
        Ok(Response { value, meta })
    }

    /// A GET decoded by `decode` (a decoder with state of its own, say one
    /// that reuses parts of the previous answer).
    pub(crate) async fn read_with<T>(
        &self,
        path: &str,
        params: &[(&str, String)],
        opts: &QueryOptions,
        decode: impl FnOnce(&[u8]) -> Result<T, serde_json::Error>,
    ) -> Result<Response<T>, Error> {
        let (meta, body) = self.read_raw(path, params, opts).await?;
        let value = decode(&body).map_err(|source| Error::Decode {
            call: format!("GET {path}"),
            source,
            snippet: error::snippet(&body),
        })?;
        Ok(Response { value, meta })
    }

    /// A GET whose 404 means "absent" (KV), answering `None` then. Consul
    /// sends `X-Consul-Index` with the 404 too, so a watch can block for the
    /// key's creation.
    pub(crate) async fn read_optional<T: DeserializeOwned>(
        &self,
        path: &str,
        params: &[(&str, String)],
        opts: &QueryOptions,
    ) -> Result<Response<Option<T>>, Error> {
        let call = format!("GET {path}");
        let (status, meta, body) = self
            .send(Method::GET, path, params, opts, None, &call)
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(Response { value: None, meta });
        }
        if !status.is_success() {
            return Err(status_error(&call, status, &body, self.role));
        }
        let value = decode(&call, &body)?;
        Ok(Response {
            value: Some(value),
            meta,
        })
    }

    async fn read_raw(
        &self,
        path: &str,
        params: &[(&str, String)],
        opts: &QueryOptions,
    ) -> Result<(QueryMeta, bytes::Bytes), Error> {
        let call = format!("GET {path}");
        let (status, meta, body) = self
            .send(Method::GET, path, params, opts, None, &call)
            .await?;
        if status.is_success() {
            Ok((meta, body))
        } else {
            Err(status_error(&call, status, &body, self.role))
        }
    }

    /// A write (`PUT`/`DELETE`) with an optional body; answers the raw body.
    pub(crate) async fn write(
        &self,
        method: Method,
        path: &str,
        params: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<bytes::Bytes, Error> {
        let call = format!("{method} {path}");
        let (status, _meta, bytes) = self
            .send(method, path, params, &QueryOptions::default(), body, &call)
            .await?;
        if status.is_success() {
            Ok(bytes)
        } else {
            Err(status_error(&call, status, &bytes, self.role))
        }
    }

    /// A write whose answer is JSON.
    pub(crate) async fn write_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        params: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<T, Error> {
        let call = format!("{method} {path}");
        let bytes = self.write(method, path, params, body).await?;
        decode(&call, &bytes)
    }

    /// [`Client::send_unobserved`], counted and timed for `/metrics`
    /// (nothing happens unless the console installed its metrics).
    async fn send(
        &self,
        method: Method,
        path: &str,
        params: &[(&str, String)],
        opts: &QueryOptions,
        body: Option<Vec<u8>>,
        call: &str,
    ) -> Result<(StatusCode, QueryMeta, bytes::Bytes), Error> {
        let started = std::time::Instant::now();
        let blocking = opts.index.is_some() || opts.hash.is_some();
        let name = method.clone();
        let r = self
            .send_unobserved(method, path, params, opts, body, call)
            .await;
        let status = r.as_ref().ok().map(|(s, _, _)| s.as_u16());
        crate::console::metrics::consul_call(
            name.as_str(),
            path,
            blocking,
            status,
            started.elapsed(),
        );
        r
    }

    async fn send_unobserved(
        &self,
        method: Method,
        path: &str,
        params: &[(&str, String)],
        opts: &QueryOptions,
        body: Option<Vec<u8>>,
        call: &str,
    ) -> Result<(StatusCode, QueryMeta, bytes::Bytes), Error> {
        let mut query: Vec<(&str, String)> = params.to_vec();
        if let Some(dc) = &self.datacenter {
            if !path.starts_with("/v1/agent/") {
                query.push(("dc", dc.clone()));
            }
        }
        let mut timeout = self.timeout;
        if let Some(index) = opts.index {
            query.push(("index", index.to_string()));
        }
        if let Some(hash) = &opts.hash {
            query.push(("hash", hash.clone()));
        }
        if opts.index.is_some() || opts.hash.is_some() {
            let wait = opts.wait.unwrap_or(Duration::from_secs(300));
            query.push(("wait", format!("{}ms", wait.as_millis().max(1))));
            // Consul may hold the answer for wait + wait/16 of jitter.
            timeout += wait + wait / 16;
        }
        if opts.stale {
            query.push(("stale", String::new()));
        } else if opts.consistent {
            query.push(("consistent", String::new()));
        }
        if let Some(filter) = &opts.filter {
            query.push(("filter", filter.clone()));
        }
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method, &url).timeout(timeout);
        if !query.is_empty() {
            req = req.query(&query);
        }
        if let Some(token) = &self.token {
            req = req.header("X-Consul-Token", token.expose());
        }
        if let Some(body) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                Error::Timeout {
                    call: call.to_string(),
                    address: self.base.clone(),
                    timeout,
                }
            } else {
                Error::Transport {
                    call: call.to_string(),
                    address: self.base.clone(),
                    source: e.without_url(),
                }
            }
        };
        let mut resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let meta = query_meta(resp.headers());
        // Copied chunk by chunk into one buffer of the announced size: no
        // list of chunks held until the end and copied again (large
        // answers, like the cluster's every check, would be held twice).
        let mut body = Vec::with_capacity(
            resp.content_length()
                .map_or(0, |n| usize::try_from(n).unwrap_or(0).min(MAX_PREALLOC)),
        );
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            body.extend_from_slice(&chunk);
        }
        Ok((status, meta, bytes::Bytes::from(body)))
    }
}

/// Largest body buffer reserved up front from `Content-Length`.
const MAX_PREALLOC: usize = 256 * 1024 * 1024;

fn query_meta(headers: &reqwest::header::HeaderMap) -> QueryMeta {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    QueryMeta {
        index: get("X-Consul-Index")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        known_leader: get("X-Consul-KnownLeader") == Some("true"),
        last_contact: Duration::from_millis(
            get("X-Consul-LastContact")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        ),
        content_hash: get("X-Consul-ContentHash").map(str::to_string),
        filtered_by_acls: get("X-Consul-Results-Filtered-By-ACLs") == Some("true"),
    }
}

fn status_error(call: &str, status: StatusCode, body: &[u8], role: Option<&'static str>) -> Error {
    let body = error::snippet(body);
    match status {
        StatusCode::FORBIDDEN => Error::PermissionDenied {
            call: call.into(),
            body,
            role,
        },
        StatusCode::NOT_FOUND => Error::NotFound {
            call: call.into(),
            body,
        },
        s => Error::Status {
            call: call.into(),
            status: s.as_u16(),
            body,
        },
    }
}

fn decode<T: DeserializeOwned>(call: &str, body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|source| Error::Decode {
        call: call.into(),
        source,
        snippet: error::snippet(body),
    })
}

/// Percent-encodes a path segment (service names, check IDs, KV keys keep
/// their `/`).
pub(crate) fn path_segment(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let c = b as char;
        if c.is_ascii_alphanumeric() || "-_.~".contains(c) || (keep_slash && c == '/') {
            out.push(c);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether `url` is plain `http://` (any case): the client then needs no
/// trust roots.
fn is_plain_http(url: &str) -> bool {
    url.get(.."http://".len())
        .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_http_address_needs_no_trust_roots_and_https_keeps_them() {
        assert!(is_plain_http("http://127.0.0.1:8500"));
        assert!(is_plain_http("HTTP://consul.local:8500"));
        assert!(!is_plain_http("https://consul.local:8501"));
        assert!(!is_plain_http("http:/"));
        for address in [
            "127.0.0.1:8500",
            "http://127.0.0.1:8500",
            "https://127.0.0.1:8501",
        ] {
            let config = ConsulConfig {
                address: address.into(),
                ..ConsulConfig::default()
            };
            let client = Client::new(&config).expect("a client for a valid address");
            assert!(client.address().contains("127.0.0.1:850"), "{address}");
        }
    }
}
