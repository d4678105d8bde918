//! `/v1/session/*`: create, destroy, renew (PUT) and info, list, node
//! (GET, blocking), with Consul's defaults: the listener's node,
//! `serfHealth` as the only check, `LockDelay` 15s, `Behavior` release.
//!
//! `LockDelay` may be a Go duration string or nanoseconds; values below
//! 1000 are taken as seconds, as Consul does. The `Checks`/`NodeChecks`
//! defaulting follows Consul's `fixupEmptySessionChecks`.

use std::time::Duration;

use axum::body::Body;
use axum::http::Response;
use serde_json::{Value, json};

use super::super::acl::{Level, Resource};
use super::super::blocking::{self, QueryOptions};
use super::super::duration;
use super::super::model::SERF_CHECK_ID;
use super::super::registration::field;
use super::super::session::{NewSession, parse_behavior, parse_ttl};
use super::{ApiError, Ctx, allow, json as json_resp, mark_filtered, require_leader, with_meta};

/// Routes `/v1/session/<tail>`; `None` when unknown.
pub(crate) async fn route(
    ctx: &Ctx<'_>,
    tail: &[&str],
    rest: &str,
    get: bool,
    put: bool,
) -> Option<Result<Response<Body>, ApiError>> {
    let id_after = |prefix: &str| rest.strip_prefix(prefix).unwrap_or_default().to_string();
    let result = match tail {
        ["create"] => allow(ctx, put, "PUT").and_then(|()| create(ctx)),
        ["destroy", ..] => {
            allow(ctx, put, "PUT").and_then(|()| destroy(ctx, &id_after("session/destroy/")))
        }
        ["renew", ..] => {
            allow(ctx, put, "PUT").and_then(|()| renew(ctx, &id_after("session/renew/")))
        }
        ["info", ..] => match allow(ctx, get, "GET") {
            Ok(()) => read(ctx, Read::Info(&id_after("session/info/"))).await,
            Err(e) => Err(e),
        },
        ["list"] => match allow(ctx, get, "GET") {
            Ok(()) => read(ctx, Read::List).await,
            Err(e) => Err(e),
        },
        ["node", ..] => match allow(ctx, get, "GET") {
            Ok(()) => read(ctx, Read::Node(&id_after("session/node/"))).await,
            Err(e) => Err(e),
        },
        _ => return None,
    };
    Some(result)
}

fn string_list(value: &Value, name: &str) -> Result<Option<Option<Vec<String>>>, ApiError> {
    let Some(obj) = value.as_object() else {
        return Ok(None);
    };
    let wanted = name.to_lowercase();
    let Some((_, v)) = obj.iter().find(|(k, _)| k.to_lowercase() == wanted) else {
        return Ok(None);
    };
    match v {
        Value::Null => Ok(Some(None)),
        Value::Array(items) => {
            let mut out = Vec::new();
            for item in items {
                match item {
                    Value::String(s) => out.push(s.clone()),
                    // ServiceChecks entries are objects with an ID.
                    Value::Object(_) => out.push(
                        field(item, "ID")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    ),
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "Request decode failed: {name}: expected strings"
                        )));
                    }
                }
            }
            Ok(Some(Some(out)))
        }
        _ => Err(ApiError::bad_request(format!(
            "Request decode failed: {name}: expected an array"
        ))),
    }
}

fn lock_delay(value: &Value) -> Result<Duration, ApiError> {
    let raw = match field(value, "LockDelay") {
        None => return Ok(Duration::from_secs(15)),
        Some(Value::String(s)) => duration::parse(s)
            .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?,
        Some(Value::Number(n)) => Duration::from_nanos(n.as_u64().unwrap_or(0)),
        Some(_) => {
            return Err(ApiError::bad_request(
                "Request decode failed: LockDelay: expected a duration",
            ));
        }
    };
    // Consul takes values below 1000ns as seconds (users who sent `5`).
    Ok(if raw.as_nanos() < 1000 {
        Duration::from_secs(raw.as_nanos() as u64)
    } else {
        raw
    })
}

fn create(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    let body: Value = super::decode::<Option<Value>>(&ctx.body)?.unwrap_or_else(|| json!({}));
    let text = |name: &str| {
        field(&body, name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let serf = || Some(vec![SERF_CHECK_ID.to_string()]);
    let mut checks = string_list(&body, "Checks")?.unwrap_or_else(serf);
    let mut node_checks = string_list(&body, "NodeChecks")?.unwrap_or_else(serf);
    let service_checks = string_list(&body, "ServiceChecks")?.flatten();
    // Consul's fixupEmptySessionChecks.
    if checks.as_ref().is_none_or(Vec::is_empty) {
        node_checks = Some(Vec::new());
        checks = None;
    } else if checks == serf() || node_checks.as_ref().is_none_or(Vec::is_empty) {
        checks = None;
    }
    let mut node = text("Node");
    if node.is_empty() {
        node = ctx.node.to_string();
    }
    ctx.authz.check(Resource::Session, &node, Level::Write)?;
    let ttl_raw = text("TTL");
    let request = NewSession {
        name: text("Name"),
        node,
        lock_delay: lock_delay(&body)?,
        behavior: parse_behavior(&text("Behavior")).map_err(ApiError::internal)?,
        ttl: ttl_raw.clone(),
        node_checks,
        service_checks,
        legacy_checks: checks,
    };
    require_leader(ctx, None)?;
    let ttl = parse_ttl(&ttl_raw, ctx.cluster.session_ttl_min).map_err(ApiError::internal)?;
    let id = ctx
        .cluster
        .store()
        .session_create(request, ttl)
        .map_err(ApiError::internal)?;
    tracing::debug!(session = %id, "Session created.");
    Ok(json_resp(&json!({ "ID": id })))
}

fn destroy(ctx: &Ctx<'_>, id: &str) -> Result<Response<Body>, ApiError> {
    if id.is_empty() {
        return Err(ApiError::bad_request("Missing session"));
    }
    require_leader(ctx, None)?;
    session_write(ctx, id)?;
    ctx.cluster.store().session_destroy(id);
    Ok(json_resp(&Value::Bool(true)))
}

fn renew(ctx: &Ctx<'_>, id: &str) -> Result<Response<Body>, ApiError> {
    if id.is_empty() {
        return Err(ApiError::bad_request("Missing session"));
    }
    require_leader(ctx, None)?;
    session_write(ctx, id)?;
    let session = ctx
        .cluster
        .store()
        .session_renew(id)
        .ok_or_else(|| ApiError::not_found(format!("Session id '{id}' not found")))?;
    Ok(json_resp(&Value::Array(vec![session])))
}

/// Session write on the node of an existing session (Consul's
/// `Session.Apply` and `Session.Renew`); an unknown session needs none.
fn session_write(ctx: &Ctx<'_>, id: &str) -> Result<(), ApiError> {
    let node = ctx.cluster.store().sessions.get(id).map(|s| s.node.clone());
    match node {
        Some(node) => Ok(ctx.authz.check(Resource::Session, &node, Level::Write)?),
        None => Ok(()),
    }
}

enum Read<'a> {
    Info(&'a str),
    List,
    Node(&'a str),
}

async fn read(ctx: &Ctx<'_>, which: Read<'_>) -> Result<Response<Body>, ApiError> {
    match which {
        Read::Info("") => return Err(ApiError::bad_request("Missing session")),
        Read::Node("") => return Err(ApiError::bad_request("Missing node name")),
        _ => {}
    }
    let opts = QueryOptions::parse(ctx.query)?;
    require_leader(ctx, Some(&opts))?;
    let (list, index) = blocking::block(ctx.cluster, &opts, |store| {
        Ok(match which {
            Read::Info(id) => store.session_info(id),
            Read::List => store.session_list(None),
            Read::Node(node) => store.session_list(Some(node)),
        })
    })
    .await?;
    // Consul's `filterSessions`: session read on each session's node.
    let total = list.len();
    let list: Vec<Value> = list
        .into_iter()
        .filter(|s| {
            let node = s.get("Node").and_then(Value::as_str).unwrap_or_default();
            ctx.authz.allows(Resource::Session, node, Level::Read)
        })
        .collect();
    let removed = list.len() != total;
    let resp = with_meta(json_resp(&Value::Array(list)), ctx.cluster, index, &opts);
    Ok(mark_filtered(resp, ctx, removed))
}
