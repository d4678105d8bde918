//! `/v1/kv/:key`: GET (`recurse`, `keys`, `separator`, `raw`, blocking),
//! PUT (`cas`, `acquire`, `release`, `flags`; answers `true`/`false`) and
//! DELETE (`cas`, `recurse`), with Consul's validation texts.
//!
//! A missing key answers 404 with an empty body and the index headers, as
//! Consul does. Key validation follows recent Consul versions (letters,
//! digits and `,-_./`, no leading `/`, no `..`), which is stricter than older
//! ones, so a client that passes here passes everywhere.

use axum::body::Body;
use axum::http::{HeaderValue, Method, Response, StatusCode, header};
use serde_json::Value;

use super::super::acl::Level;
use super::super::blocking::{self, QueryOptions};
use super::super::kv::{KvWrite, MAX_VALUE_SIZE};
use super::{ApiError, Ctx, allow, json, mark_filtered, require_leader, text, with_meta};

/// The 413 answer for an oversized value, in Consul's words.
pub(crate) fn too_large(len: usize) -> Response<Body> {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "Request body({len} bytes) too large, max size: {MAX_VALUE_SIZE} bytes. See \
             https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size."
        ),
    )
}

fn validate_key(key: &str) -> Result<(), ApiError> {
    if key.starts_with('/') {
        return Err(ApiError::bad_request("key must not begin with a '/'"));
    }
    if let Some((i, c)) = key
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || ",-_./".contains(*c)))
    {
        return Err(ApiError::bad_request(format!(
            "key contains invalid character '{c}' at position {i}. Only alphanumeric characters and ,-_./ are allowed"
        )));
    }
    if key.contains("../") {
        return Err(ApiError::bad_request(
            "key contains path traversal sequence",
        ));
    }
    Ok(())
}

fn parse_u64(ctx: &Ctx<'_>, name: &str) -> Result<Option<u64>, ApiError> {
    match ctx.query.get(name) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            ApiError::internal(format!(
                "strconv.ParseUint: parsing \"{v}\": invalid syntax"
            ))
        }),
    }
}

fn conflicting(ctx: &Ctx<'_>, flags: &[&str]) -> Result<(), ApiError> {
    if flags.iter().filter(|f| ctx.query.has(f)).count() > 1 {
        // Consul prints the query re-encoded, keys sorted (Go's url.Values.Encode).
        let mut pairs: Vec<(&str, &str)> = ctx.query.pairs().collect();
        pairs.sort_by_key(|(k, _)| *k);
        let encoded = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        return Err(ApiError::bad_request(format!(
            "Conflicting flags: {encoded}\n"
        )));
    }
    Ok(())
}

/// Serves `/v1/kv/<key>`.
pub(crate) async fn handle(ctx: &Ctx<'_>, key: &str) -> Result<Response<Body>, ApiError> {
    if !key.is_empty() {
        validate_key(key)?;
    }
    match *ctx.method {
        Method::GET | Method::HEAD => get(ctx, key).await,
        Method::PUT | Method::POST => put(ctx, key),
        Method::DELETE => delete(ctx, key),
        _ => {
            allow(ctx, false, "GET,PUT,DELETE")?;
            Ok(text(StatusCode::METHOD_NOT_ALLOWED, ""))
        }
    }
}

async fn get(ctx: &Ctx<'_>, key: &str) -> Result<Response<Body>, ApiError> {
    let opts = QueryOptions::parse(ctx.query)?;
    require_leader(ctx, Some(&opts))?;
    let cluster = ctx.cluster;
    if ctx.query.has("keys") {
        let sep = ctx
            .query
            .get("separator")
            .or(ctx.query.get("seperator"))
            .unwrap_or_default()
            .to_string();
        let (keys, index) = blocking::block(cluster, &opts, |s| Ok(s.kv_keys(key, &sep))).await?;
        // Consul's `filterKeys`: key read on each key shown.
        let total = keys.len();
        let keys: Vec<String> = keys
            .into_iter()
            .filter(|k| ctx.authz.check_key(k, Level::Read).is_ok())
            .collect();
        let removed = keys.len() != total;
        if keys.is_empty() && !key.is_empty() {
            let resp = with_meta(text(StatusCode::NOT_FOUND, ""), cluster, index, &opts);
            return Ok(mark_filtered(resp, ctx, removed));
        }
        let resp = with_meta(json(&Value::from(keys)), cluster, index, &opts);
        return Ok(mark_filtered(resp, ctx, removed));
    }
    if ctx.query.has("recurse") {
        let (entries, index) = blocking::block(cluster, &opts, |s| Ok(s.kv_list(key))).await?;
        // Consul's `FilterDirEnt`: key read on each entry.
        let total = entries.len();
        let entries: Vec<Value> = entries
            .into_iter()
            .filter(|e| {
                let k = e.get("Key").and_then(Value::as_str).unwrap_or_default();
                ctx.authz.check_key(k, Level::Read).is_ok()
            })
            .collect();
        let removed = entries.len() != total;
        if entries.is_empty() {
            // Consul sets the header on this 404 too (its meta is deferred).
            let resp = with_meta(text(StatusCode::NOT_FOUND, ""), cluster, index, &opts);
            return Ok(mark_filtered(resp, ctx, removed));
        }
        let resp = with_meta(json(&Value::Array(entries)), cluster, index, &opts);
        return Ok(mark_filtered(resp, ctx, removed));
    }
    if key.is_empty() {
        return Err(ApiError::bad_request("Missing key name"));
    }
    ctx.authz.check_key(key, Level::Read)?;
    let (entry, index) = blocking::block(cluster, &opts, |s| Ok(s.kv_get(key))).await?;
    let Some((value, raw)) = entry else {
        return Ok(with_meta(
            text(StatusCode::NOT_FOUND, ""),
            cluster,
            index,
            &opts,
        ));
    };
    if ctx.query.has("raw") {
        let mut resp = Response::new(Body::from(raw));
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            "content-security-policy",
            HeaderValue::from_static("sandbox"),
        );
        return Ok(with_meta(resp, cluster, index, &opts));
    }
    Ok(with_meta(
        json(&Value::Array(vec![value])),
        cluster,
        index,
        &opts,
    ))
}

fn put(ctx: &Ctx<'_>, key: &str) -> Result<Response<Body>, ApiError> {
    if key.is_empty() {
        return Err(ApiError::bad_request("Missing key name"));
    }
    conflicting(ctx, &["cas", "acquire", "release"])?;
    ctx.authz.check_key(key, Level::Write)?;
    let flags = parse_u64(ctx, "flags")?.unwrap_or(0);
    let cas = parse_u64(ctx, "cas")?;
    require_leader(ctx, None)?;
    if ctx.body.len() > MAX_VALUE_SIZE {
        return Ok(too_large(ctx.body.len()));
    }
    let write = KvWrite {
        key: key.to_string(),
        value: ctx.body.to_vec(),
        flags,
    };
    let mut store = ctx.cluster.store();
    let done = if let Some(session) = ctx.query.get("acquire") {
        store
            .kv_acquire(write, session)
            .map_err(|e| ApiError::internal(e.to_string()))?
    } else if let Some(session) = ctx.query.get("release") {
        store.kv_release(write, session)
    } else {
        store.kv_set(write, cas)
    };
    Ok(json(&Value::Bool(done)))
}

fn delete(ctx: &Ctx<'_>, key: &str) -> Result<Response<Body>, ApiError> {
    conflicting(ctx, &["recurse", "cas"])?;
    let recurse = ctx.query.has("recurse");
    if !recurse && key.is_empty() {
        return Err(ApiError::bad_request("Missing key name"));
    }
    let cas = parse_u64(ctx, "cas")?;
    if recurse {
        ctx.authz.check_key_prefix_write(key)?;
    } else {
        ctx.authz.check_key(key, Level::Write)?;
    }
    require_leader(ctx, None)?;
    let done = ctx.cluster.store().kv_delete(key, recurse, cas);
    Ok(json(&Value::Bool(done)))
}
