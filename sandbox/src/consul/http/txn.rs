//! `PUT /v1/txn`: KV transactions, with Consul's HTTP shape.
//!
//! The body is a JSON array of `{"KV": {"Verb", "Key", "Value" (base64),
//! "Flags", "Index", "Session"}}`; field names match case-insensitively, as
//! Go's decoder does. At most [`MAX_TXN_OPS`] operations (Consul's
//! `maxTxnOps`) and a body of at most 512 KiB (`txn_max_req_len`), else 413
//! with Consul's text. Success is 200 `{"Results":[{"KV":...}],"Errors":null}`;
//! a failed operation is 409 `{"Results":null,"Errors":[{"OpIndex","What"}]}`.
//!
//! Before anything runs, each operation is checked as Consul's
//! `kvsPreApply` does: `key:write` for writes and `check-not-exists`,
//! `key:write` on the prefix for `delete-tree`, `key:read` for
//! `check-index`/`check-session`, nothing for gets (their results the token
//! cannot read are dropped afterwards), and lock-delay for `lock`. Such
//! failures are 409 errors too; only an unknown token is a 403. A
//! transaction without writes is served as a read (`?stale` allowed,
//! `X-Consul-KnownLeader` and `X-Consul-LastContact`, no index).

use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, header};
use base64::Engine as _;
use serde_json::{Value, json};

use super::super::acl::{Authz, Level};
use super::super::blocking::QueryOptions;
use super::super::kv::MAX_VALUE_SIZE;
use super::super::registration::field;
use super::super::txn::{KvOp, TxnError, TxnResult, Verb};
use super::super::views;
use super::{ApiError, Ctx, allow, require_leader, text};

/// Consul's limit on the operations of one transaction.
pub(crate) const MAX_TXN_OPS: usize = 128;
/// Consul's default `txn_max_req_len` (the larger of it and
/// `kv_max_value_size`, both 512 KiB by default).
pub(crate) const MAX_TXN_LEN: usize = MAX_VALUE_SIZE;

fn parse_failed(what: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("Failed to parse body: {what}"))
}

fn number(value: &Value, name: &str) -> Result<u64, ApiError> {
    match field(value, name) {
        None => Ok(0),
        Some(v) => v.as_u64().ok_or_else(|| {
            parse_failed(format!(
                "json: cannot unmarshal {v} into Go struct field KVTxnOp.KV.{name} of type uint64"
            ))
        }),
    }
}

fn string(value: &Value, name: &str) -> Result<String, ApiError> {
    match field(value, name) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(parse_failed(format!(
            "json: cannot unmarshal {v} into Go struct field KVTxnOp.KV.{name} of type string"
        ))),
    }
}

/// Decodes the body into KV operations, answering Consul's 400/413 texts.
fn decode(body: &[u8]) -> Result<Vec<KvOp>, ApiError> {
    let raw: Value = serde_json::from_slice(body).map_err(parse_failed)?;
    let Value::Array(items) = raw else {
        return Err(parse_failed(
            "json: cannot unmarshal object into Go value of type api.TxnOps",
        ));
    };
    if items.len() > MAX_TXN_OPS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Transaction contains too many operations ({} > {MAX_TXN_OPS})",
                items.len()
            ),
        ));
    }
    let mut ops = Vec::with_capacity(items.len());
    for item in &items {
        let Some(kv) = field(item, "KV") else {
            if ["Node", "Service", "Check", "Session"]
                .iter()
                .any(|n| field(item, n).is_some())
            {
                return Err(parse_failed(
                    "only KV operations are supported by this sandbox",
                ));
            }
            return Err(parse_failed("no operation specified"));
        };
        let value = match field(kv, "Value") {
            None => Vec::new(),
            Some(Value::String(s)) => base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| parse_failed(format!("failed to decode value: {e}")))?,
            Some(_) => return Err(parse_failed("unexpected value type")),
        };
        let key = string(kv, "Key")?;
        if value.len() > MAX_VALUE_SIZE {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "Value for key {key:?} is too large ({} > {MAX_VALUE_SIZE} bytes)",
                    value.len()
                ),
            ));
        }
        let verb_word = string(kv, "Verb")?;
        ops.push(KvOp {
            verb: Verb::parse(&verb_word),
            verb_word,
            key,
            value,
            flags: number(kv, "Flags")?,
            index: number(kv, "Index")?,
            session: string(kv, "Session")?,
        });
    }
    Ok(ops)
}

/// Consul's `Txn.preCheck`: ACL and lock-delay, per operation.
fn pre_check(ctx: &Ctx<'_>, authz: &Authz, ops: &[KvOp]) -> Vec<TxnError> {
    let now = Instant::now();
    let store = ctx.cluster.store();
    let mut errors = Vec::new();
    for (op_index, op) in ops.iter().enumerate() {
        let fail = |what: String| TxnError { op_index, what };
        if op.key.is_empty() && op.verb != Some(Verb::DeleteTree) {
            errors.push(fail("Must provide key".to_string()));
            continue;
        }
        let allowed = match op.verb {
            Some(Verb::Get | Verb::GetOrEmpty | Verb::GetTree) => Ok(()),
            Some(Verb::CheckIndex | Verb::CheckSession) => authz.check_key(&op.key, Level::Read),
            Some(Verb::DeleteTree) => authz.check_key_prefix_write(&op.key),
            _ => authz.check_key(&op.key, Level::Write),
        };
        if let Err(denied) = allowed {
            errors.push(fail(denied.0));
            continue;
        }
        if op.verb == Some(Verb::Lock)
            && store
                .lock_delays
                .get(&op.key)
                .is_some_and(|until| *until > now)
        {
            tracing::info!(key = %op.key, "Rejecting lock of key due to lock-delay.");
            errors.push(fail(format!(
                "failed to lock key {:?} due to lock delay",
                op.key
            )));
        }
    }
    errors
}

fn answer(status: StatusCode, body: &Value) -> Response<Body> {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn conflict(errors: &[TxnError]) -> Response<Body> {
    let errors: Vec<Value> = errors
        .iter()
        .map(|e| json!({ "OpIndex": e.op_index, "What": e.what }))
        .collect();
    answer(
        StatusCode::CONFLICT,
        &json!({ "Results": null, "Errors": errors }),
    )
}

fn results(authz: &Authz, results: Vec<TxnResult>) -> Value {
    // Consul drops the results the token may not read (`filterACL`).
    let list: Vec<Value> = results
        .iter()
        .filter(|r| authz.check_key(&r.entry.key, Level::Read).is_ok())
        .map(|r| json!({ "KV": views::kv_entry(&r.entry) }))
        .collect();
    json!({ "Results": list, "Errors": null })
}

/// Serves `PUT /v1/txn`.
pub(crate) fn handle(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    let authz = &ctx.authz;
    allow(ctx, *ctx.method == axum::http::Method::PUT, "PUT")?;
    if ctx.body.len() > MAX_TXN_LEN {
        return Ok(too_large());
    }
    let ops = decode(&ctx.body)?;
    let writes = ops.iter().any(|op| op.verb.is_some_and(Verb::is_write));
    let opts = if writes {
        None
    } else {
        Some(QueryOptions::parse(ctx.query)?)
    };
    require_leader(ctx, opts.as_ref())?;
    let errors = pre_check(ctx, authz, &ops);
    if !errors.is_empty() {
        return Ok(conflict(&errors));
    }
    let outcome = ctx.cluster.store().txn(&ops);
    let mut resp = match outcome {
        Ok(list) => answer(StatusCode::OK, &results(authz, list)),
        Err(errors) => conflict(&errors),
    };
    if !writes {
        let leader = if ctx.cluster.has_leader() {
            "true"
        } else {
            "false"
        };
        let h = resp.headers_mut();
        h.insert("x-consul-knownleader", HeaderValue::from_static(leader));
        h.insert("x-consul-lastcontact", HeaderValue::from_static("0"));
    }
    Ok(resp)
}

/// The 413 answer for a body over the limit, in Consul's words.
pub(crate) fn too_large() -> Response<Body> {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("Request body too large, max size: {MAX_TXN_LEN} bytes"),
    )
}
