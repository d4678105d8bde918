//! The HTTP API: routing, Consul's response headers and error answers.
//!
//! Every listener (the server's and each node's) serves the same router;
//! agent endpoints answer for the listener's own node, everything else is
//! cluster-wide. Before routing, an injected fault may answer instead
//! (control API), then the request's token is resolved (an unknown one is
//! `403 ACL not found`); each handler then checks the permission its
//! endpoint needs, or filters its list answer (see the `consul` module
//! docs for the table). Errors are plain text with
//! Consul's wording and status; JSON answers are `application/json`. Reads
//! of cluster data carry `X-Consul-Index`, `X-Consul-KnownLeader`,
//! `X-Consul-LastContact` and `X-Consul-Effective-Consistency`; agent-local
//! endpoints and writes carry none of these, as in Consul.
//!
//! Every `/v1/` answer names the default ACL policy
//! (`X-Consul-Default-ACL-Policy`: `deny` with ACLs on, else `allow`), as
//! Consul's HTTP layer does before any handler runs.
//!
//! Without a leader (control API) cluster reads fail with `500 No cluster
//! leader` unless `?stale` is given, and cluster writes always fail, as in
//! Consul; agent-local endpoints keep working. Nothing here logs a token
//! or a query string (which may hold `?token=`).

mod acl;
mod agent;
mod health;
mod kv;
mod session;
mod txn;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Method, Request, Response, StatusCode, header};
use serde_json::Value;

use super::acl as acl_core;
use super::blocking::QueryOptions;
use super::cluster::Cluster;
use super::control;

/// Largest request body accepted outside KV.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// An error answer: status and plain-text body, worded as Consul does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {body}")]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub body: String,
    /// Methods for the `Allow` header of a 405.
    pub allow: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, body: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: body.into(),
            allow: None,
        }
    }
    pub fn bad_request(body: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, body)
    }
    pub fn not_found(body: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, body)
    }
    pub fn internal(body: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, body)
    }
    fn into_response(self) -> Response<Body> {
        let mut resp = text(self.status, self.body);
        if let Some(v) = self
            .allow
            .and_then(|a| HeaderValue::from_str(&format!("OPTIONS,{a}")).ok())
        {
            resp.headers_mut().insert(header::ALLOW, v);
        }
        resp
    }
}

/// A request's query string, with Consul's "present without value" flags.
#[derive(Debug, Default)]
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        Query(
            url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }
    pub fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    /// Every pair, in order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    /// A boolean flag: present with no value, or `true`.
    pub fn flag(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| v.is_empty() || v == "true" || v == "1")
    }
}

/// What a handler sees of a request.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    pub cluster: &'a Arc<Cluster>,
    /// The node whose agent this listener is.
    pub node: &'a str,
    pub method: &'a Method,
    pub query: &'a Query,
    pub body: Bytes,
    /// What the request's token may do.
    pub authz: acl_core::Authz,
}

pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut resp = Response::new(Body::from(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A JSON answer without index headers (agent-local endpoints, writes).
pub(crate) fn json(value: &Value) -> Response<Body> {
    let mut resp = Response::new(Body::from(value.to_string()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Adds Consul's query metadata headers to a read answer.
pub(crate) fn with_meta(
    mut resp: Response<Body>,
    cluster: &Cluster,
    index: u64,
    opts: &QueryOptions,
) -> Response<Body> {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&index.max(1).to_string()) {
        h.insert("x-consul-index", v);
    }
    let leader = if cluster.has_leader() {
        "true"
    } else {
        "false"
    };
    h.insert("x-consul-knownleader", HeaderValue::from_static(leader));
    h.insert("x-consul-lastcontact", HeaderValue::from_static("0"));
    h.insert(
        "x-consul-effective-consistency",
        HeaderValue::from_static(opts.consistency()),
    );
    resp
}

/// Fails a cluster-wide request when there is no leader, as Consul does.
pub(crate) fn require_leader(ctx: &Ctx<'_>, opts: Option<&QueryOptions>) -> Result<(), ApiError> {
    if ctx.cluster.has_leader() || opts.is_some_and(|o| o.stale) {
        return Ok(());
    }
    Err(ApiError::internal("No cluster leader"))
}

/// Parses a JSON body into `T`, answering Consul's decode error text.
pub(crate) fn decode<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))
}

fn decode_path(raw: &str) -> Option<String> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|p| p.into_owned())
}

/// Serves one request on the listener of `node`.
pub(crate) async fn dispatch(
    cluster: Arc<Cluster>,
    node: Arc<str>,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let Some(path) = decode_path(parts.uri.path()) else {
        return text(StatusCode::BAD_REQUEST, "Invalid URL path encoding");
    };
    let query = Query::parse(parts.uri.query());
    if let Some(rest) = path.strip_prefix("/sandbox/v1/") {
        if *node != *cluster.server_node {
            return text(StatusCode::NOT_FOUND, "");
        }
        let body = match axum::body::to_bytes(Body::new(body), MAX_BODY).await {
            Ok(b) => b,
            Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large"),
        };
        return control::handle(&cluster, &parts.method, rest, &body).await;
    }
    if !path.starts_with("/v1/") {
        return text(StatusCode::NOT_FOUND, "");
    }
    cluster
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Some(fault) = cluster.take_fault(&path) {
        tracing::info!(path = %path, status = fault.status, "Injecting a fault.");
        let status =
            StatusCode::from_u16(fault.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = text(status, fault.body);
        if let Some(ct) = fault
            .content_type
            .and_then(|c| HeaderValue::from_str(&c).ok())
        {
            resp.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        return resp;
    }
    let mut resp = serve(&cluster, &node, parts, body, &path, &query).await;
    // Consul names its default ACL policy on every API answer (agent/http.go).
    let policy = if cluster.acl.enabled() {
        "deny"
    } else {
        "allow"
    };
    resp.headers_mut().insert(
        "x-consul-default-acl-policy",
        HeaderValue::from_static(policy),
    );
    resp
}

/// Serves one `/v1/` request after faults: token, body, route.
async fn serve(
    cluster: &Arc<Cluster>,
    node: &Arc<str>,
    parts: axum::http::request::Parts,
    body: hyper::body::Incoming,
    path: &str,
    query: &Query,
) -> Response<Body> {
    let Some(rest) = path.strip_prefix("/v1/") else {
        return text(StatusCode::NOT_FOUND, "");
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let token = acl_core::token_of(query.get("token"), &parts.headers);
    let authz = match cluster.acl.resolve(&token) {
        Ok(authz) => authz,
        // `/v1/status/*` never looks at the token, in Consul either.
        Err(_) if segments.first() == Some(&"status") => acl_core::Authz::anonymous(),
        Err(denied) => {
            tracing::debug!(path = %path, method = %parts.method, "Request with an unknown token.");
            return text(StatusCode::FORBIDDEN, denied.0);
        }
    };
    let limit = match segments.first() {
        Some(&"kv") => super::kv::MAX_VALUE_SIZE + 1,
        Some(&"txn") => txn::MAX_TXN_LEN + 1,
        _ => MAX_BODY,
    };
    let content_length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let body = match content_length {
        Some(len) if len >= limit => Err(len),
        _ => axum::body::to_bytes(Body::new(body), limit)
            .await
            .map_err(|_| limit),
    };
    let body = match body {
        Ok(b) => b,
        Err(len) if segments.first() == Some(&"kv") => {
            return kv::too_large(len);
        }
        Err(_) if segments.first() == Some(&"txn") => return txn::too_large(),
        Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large"),
    };
    let ctx = Ctx {
        cluster,
        node,
        method: &parts.method,
        query,
        body,
        authz,
    };
    let result = route(&ctx, &segments, rest).await;
    match result {
        Ok(resp) => resp,
        Err(e) => {
            if e.status == StatusCode::FORBIDDEN {
                tracing::debug!(path = %path, method = %parts.method, "Request denied by ACL.");
            }
            if e.status.is_server_error() {
                tracing::warn!(path = %path, method = %parts.method, status = %e.status, error = %e.body, "Request failed.");
            }
            e.into_response()
        }
    }
}

async fn route(ctx: &Ctx<'_>, segments: &[&str], rest: &str) -> Result<Response<Body>, ApiError> {
    let get = *ctx.method == Method::GET || *ctx.method == Method::HEAD;
    let put = *ctx.method == Method::PUT || *ctx.method == Method::POST;
    let found = match segments {
        ["kv", ..] => Some(kv::handle(ctx, rest.strip_prefix("kv/").unwrap_or_default()).await),
        ["agent", tail @ ..] => agent::route(ctx, tail, rest, get, put).await,
        ["health" | "catalog", ..] => {
            allow(ctx, get, "GET")?;
            health::route(ctx, segments).await
        }
        ["session", tail @ ..] => session::route(ctx, tail, rest, get, put).await,
        ["txn"] => Some(txn::handle(ctx)),
        ["acl", tail @ ..] => acl::route(ctx, tail, get, put),
        ["status", which @ ("leader" | "peers")] => {
            allow(ctx, get, "GET")?;
            let leader = format!("{}:8300", std::net::Ipv4Addr::LOCALHOST);
            let value = match (*which, ctx.cluster.has_leader()) {
                ("leader", true) => Value::from(leader),
                ("leader", false) => Value::from(""),
                (_, true) => Value::from(vec![leader]),
                (_, false) => Value::Array(Vec::new()),
            };
            Some(Ok(json(&value)))
        }
        _ => None,
    };
    found.unwrap_or_else(|| Ok(text(StatusCode::NOT_FOUND, "")))
}

/// Sets `X-Consul-Results-Filtered-By-ACLs: true` when ACLs removed
/// entries from a list answer and the request named a token (Consul leaves
/// it off for anonymous requests).
pub(crate) fn mark_filtered(
    mut resp: Response<Body>,
    ctx: &Ctx<'_>,
    removed: bool,
) -> Response<Body> {
    if ctx.authz.reports_filtering(removed) {
        resp.headers_mut().insert(
            "x-consul-results-filtered-by-acls",
            HeaderValue::from_static("true"),
        );
    }
    resp
}

impl From<acl_core::Denied> for ApiError {
    fn from(denied: acl_core::Denied) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, denied.0)
    }
}

/// Answers 405 (with Consul's text and `Allow` header) unless `ok`.
pub(crate) fn allow(ctx: &Ctx<'_>, ok: bool, allowed: &'static str) -> Result<(), ApiError> {
    if ok {
        return Ok(());
    }
    Err(ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        body: format!("method {} not allowed", ctx.method),
        allow: Some(allowed),
    })
}
