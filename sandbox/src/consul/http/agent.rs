//! `/v1/agent/*`: the endpoints of one node's agent (self, services,
//! checks, registration, TTL updates, maintenance, a service's aggregated
//! health), with Consul's texts.
//!
//! These answer for the listener's own node only and carry no index
//! headers, like a Consul agent's local endpoints. Registration bodies are
//! parsed and validated by `consul::registration`; this module must never
//! touch another node's services or checks.

use std::hash::{DefaultHasher, Hash as _, Hasher as _};

use axum::body::Body;
use axum::http::{Response, StatusCode};
use serde_json::{Map, Value, json};

use super::super::acl::{Level, Resource};
use super::super::blocking::{self, QueryOptions};
use super::super::catalog::{CheckUpdateError, unknown_service};
use super::super::filter;
use super::super::model::{CheckRecord, SERF_CHECK_ID, SERVICE_MAINT_PREFIX, Status};
use super::super::views;
use super::{ApiError, Ctx, allow, json as json_resp, mark_filtered, text};
use crate::consul::registration;

/// Routes `/v1/agent/<tail>`; `None` for an unknown path.
pub(crate) async fn route(
    ctx: &Ctx<'_>,
    tail: &[&str],
    rest: &str,
    get: bool,
    put: bool,
) -> Option<Result<Response<Body>, ApiError>> {
    let id_after = |prefix: &str| rest.strip_prefix(prefix).unwrap_or_default().to_string();
    let result = match tail {
        ["self"] => allow(ctx, get, "GET").and_then(|()| agent_self(ctx)),
        ["services"] => allow(ctx, get, "GET").and_then(|()| services(ctx)),
        ["checks"] => allow(ctx, get, "GET").and_then(|()| checks(ctx)),
        ["service", "register"] => allow(ctx, put, "PUT").and_then(|()| register(ctx)),
        ["service", "deregister", _, ..] => allow(ctx, put, "PUT")
            .and_then(|()| deregister(ctx, &id_after("agent/service/deregister/"))),
        ["service", "maintenance", _, ..] => allow(ctx, put, "PUT")
            .and_then(|()| maintenance(ctx, &id_after("agent/service/maintenance/"))),
        ["health", "service", "id", _, ..] => allow(ctx, get, "GET")
            .and_then(|()| health_by_id(ctx, &id_after("agent/health/service/id/"))),
        ["service", _, ..] => match allow(ctx, get, "GET") {
            Ok(()) => service(ctx, &id_after("agent/service/")).await,
            Err(e) => Err(e),
        },
        ["check", verb @ ("pass" | "warn" | "fail"), _, ..] => {
            allow(ctx, put, "PUT").and_then(|()| {
                let status = match *verb {
                    "pass" => Status::Passing,
                    "warn" => Status::Warning,
                    _ => Status::Critical,
                };
                let note = ctx.query.get("note").unwrap_or_default();
                ttl_update(
                    ctx,
                    &id_after(&format!("agent/check/{verb}/")),
                    status,
                    note,
                )
            })
        }
        ["check", "update", _, ..] => allow(ctx, put, "PUT")
            .and_then(|()| check_update(ctx, &id_after("agent/check/update/"))),
        ["check", "deregister", _, ..] => allow(ctx, put, "PUT")
            .and_then(|()| check_deregister(ctx, &id_after("agent/check/deregister/"))),
        _ => return None,
    };
    Some(result)
}

fn empty_ok() -> Response<Body> {
    Response::new(Body::empty())
}

fn agent_self(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    ctx.authz.check(Resource::Agent, ctx.node, Level::Read)?;
    let store = ctx.cluster.store();
    let node = store
        .nodes
        .get(ctx.node)
        .ok_or_else(|| ApiError::internal("Agent is not running"))?;
    let server = ctx.node == ctx.cluster.server_node;
    let dc = &ctx.cluster.datacenter;
    let version = crate::consul::CONSUL_VERSION;
    let body = json!({
        "Config": {
            "Datacenter": dc,
            "PrimaryDatacenter": dc,
            "NodeName": node.name,
            "NodeID": node.id,
            "Revision": "sandbox",
            "Server": server,
            "Version": version,
            "BuildDate": "2024-01-01T00:00:00Z",
        },
        "DebugConfig": { "Datacenter": dc, "NodeName": node.name, "NodeID": node.id, "ServerMode": server },
        "Coord": { "Vec": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], "Error": 1.5, "Adjustment": 0.0, "Height": 1e-5 },
        "Member": {
            "Name": node.name,
            "Addr": node.address,
            "Port": 8301,
            "Tags": {
                "dc": dc,
                "id": node.id,
                "role": if server { "consul" } else { "node" },
                "build": format!("{version}:sandbox"),
                "segment": "",
                "vsn": "2",
            },
            "Status": 1,
            "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
            "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4,
        },
        "Stats": { "agent": { "check_monitors": "0", "check_ttls": "0", "checks": "0", "services": "0" } },
        "Meta": node.meta,
    });
    Ok(json_resp(&body))
}

/// The permission to change a check: service write for a service's check,
/// node write for a node check (Consul's `vetCheckUpdateWithAuthorizer`).
/// An unknown check is Consul's 404.
fn check_write(ctx: &Ctx<'_>, id: &str) -> Result<(), ApiError> {
    let owner = {
        let store = ctx.cluster.store();
        store
            .checks
            .get(&(ctx.node.to_string(), id.to_string()))
            .map(|c| c.service_name.clone())
    };
    match owner {
        None => Err(update_error(CheckUpdateError::Unknown(id.to_string()))),
        Some(service) if service.is_empty() => {
            Ok(ctx.authz.check(Resource::Node, ctx.node, Level::Write)?)
        }
        Some(service) => Ok(ctx.authz.check(Resource::Service, &service, Level::Write)?),
    }
}

/// Service write on the name of a service of this agent; an unknown
/// service ID is Consul's 404.
fn service_write(ctx: &Ctx<'_>, id: &str) -> Result<(), ApiError> {
    let name = {
        let store = ctx.cluster.store();
        store
            .services
            .get(&(ctx.node.to_string(), id.to_string()))
            .map(|s| s.def.name.clone())
    };
    let name = name.ok_or_else(|| ApiError::not_found(unknown_service(id)))?;
    Ok(ctx.authz.check(Resource::Service, &name, Level::Write)?)
}

fn filtered(ctx: &Ctx<'_>, items: Vec<(String, Value)>, roots: &[&str]) -> Result<Value, ApiError> {
    let expr = match ctx.query.get("filter").filter(|f| !f.is_empty()) {
        Some(f) => Some(filter::parse(f, roots).map_err(|e| ApiError::bad_request(e.to_string()))?),
        None => None,
    };
    let map: Map<String, Value> = items
        .into_iter()
        .filter(|(_, v)| expr.as_ref().is_none_or(|e| e.eval(v)))
        .collect();
    Ok(Value::Object(map))
}

const SERVICE_ROOTS: &[&str] = &[
    "ID",
    "Service",
    "Tags",
    "Meta",
    "Port",
    "Address",
    "TaggedAddresses",
    "Weights",
    "EnableTagOverride",
    "Datacenter",
    "Kind",
];
const CHECK_ROOTS: &[&str] = &[
    "Node",
    "CheckID",
    "Name",
    "Status",
    "Notes",
    "Output",
    "ServiceID",
    "ServiceName",
    "ServiceTags",
    "Type",
];

fn services(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    let mut removed = false;
    let items: Vec<(String, Value)> = {
        let store = ctx.cluster.store();
        store
            .services
            .values()
            .filter(|s| s.node == ctx.node)
            .filter(|s| {
                let ok = ctx
                    .authz
                    .allows(Resource::Service, &s.def.name, Level::Read);
                removed |= !ok;
                ok
            })
            .map(|s| {
                (
                    s.def.id.clone(),
                    views::agent_service(s, &ctx.cluster.datacenter),
                )
            })
            .collect()
    };
    let resp = json_resp(&filtered(ctx, items, SERVICE_ROOTS)?);
    Ok(mark_filtered(resp, ctx, removed))
}

fn checks(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    let mut removed = false;
    let items: Vec<(String, Value)> = {
        let store = ctx.cluster.store();
        store
            .checks
            .values()
            .filter(|c| c.node == ctx.node)
            .filter(|c| {
                // Consul's agent filter: service read for a service's
                // check, node read for a node check.
                let ok = if c.service_name.is_empty() {
                    ctx.authz.allows(Resource::Node, &c.node, Level::Read)
                } else {
                    ctx.authz
                        .allows(Resource::Service, &c.service_name, Level::Read)
                };
                removed |= !ok;
                ok
            })
            .map(|c| (c.def.id.clone(), views::agent_check(c)))
            .collect()
    };
    let resp = json_resp(&filtered(ctx, items, CHECK_ROOTS)?);
    Ok(mark_filtered(resp, ctx, removed))
}

async fn service(ctx: &Ctx<'_>, id: &str) -> Result<Response<Body>, ApiError> {
    let opts = QueryOptions::parse(ctx.query)?;
    let dc = ctx.cluster.datacenter.clone();
    let node = ctx.node;
    let authz = &ctx.authz;
    let (mut body, hash) = blocking::block_on_hash(ctx.cluster, &opts, |store| {
        let service = store
            .services
            .get(&(node.to_string(), id.to_string()))
            .ok_or_else(|| ApiError::not_found(format!("unknown service ID: {id}")))?;
        authz.check(Resource::Service, &service.def.name, Level::Read)?;
        let view = views::agent_service(service, &dc);
        let mut hasher = DefaultHasher::new();
        view.to_string().hash(&mut hasher);
        Ok((view, format!("{:016x}", hasher.finish())))
    })
    .await?;
    if let Some(obj) = body.as_object_mut() {
        obj.insert("ContentHash".into(), Value::from(hash.clone()));
    }
    let mut resp = json_resp(&body);
    if let Ok(v) = axum::http::HeaderValue::from_str(&hash) {
        resp.headers_mut().insert("x-consul-contenthash", v);
    }
    Ok(resp)
}

/// Node-level maintenance, which Consul counts in every service's status.
const NODE_MAINT_ID: &str = "_node_maintenance";

/// Consul's `HealthChecks.AggregatedStatus`: maintenance > critical >
/// warning > passing; no checks at all is passing.
fn aggregated_status<'a>(checks: impl Iterator<Item = &'a CheckRecord>) -> &'static str {
    let (mut maintenance, mut critical, mut warning) = (false, false, false);
    for check in checks {
        if check.def.id == NODE_MAINT_ID || check.def.id.starts_with(SERVICE_MAINT_PREFIX) {
            maintenance = true;
            continue;
        }
        match check.status {
            Status::Passing => {}
            Status::Warning => warning = true,
            Status::Critical => critical = true,
        }
    }
    if maintenance {
        "maintenance"
    } else if critical {
        "critical"
    } else if warning {
        "warning"
    } else {
        "passing"
    }
}

/// The check as Consul's agent copies it into this answer: only the
/// identifying fields, status, notes and output are set; the type,
/// definition and indexes keep their zero values.
fn health_check_view(check: &CheckRecord) -> Value {
    json!({
        "Node": check.node,
        "CheckID": check.def.id,
        "Name": check.def.name,
        "Status": check.status.as_str(),
        "Notes": check.def.notes,
        "Output": check.agent_output(),
        "ServiceID": check.def.service_id,
        "ServiceName": check.service_name,
        "ServiceTags": check.service_tags,
        "Type": "",
        "ExposedPort": 0,
        "Definition": {},
        "CreateIndex": 0,
        "ModifyIndex": 0,
    })
}

/// `GET /v1/agent/health/service/id/:id` (Consul's
/// `AgentHealthServiceByID`): the service's checks on this agent, node
/// checks included, with their aggregated status, answered as HTTP 200
/// passing, 429 warning, 503 critical or maintenance, 404 unknown service
/// (body `AggregatedStatus` critical, no service, no checks). An unknown
/// service is answered before any ACL rule is looked at; a known one needs
/// `service:read`. `?format=text` answers the status word alone. (Consul
/// also honours `Accept: text/plain`; handlers here do not see headers.)
fn health_by_id(ctx: &Ctx<'_>, id: &str) -> Result<Response<Body>, ApiError> {
    if id.is_empty() {
        return Err(ApiError::bad_request("Missing serviceID"));
    }
    let text_format = ctx.query.get("format") == Some("text");
    let answer = {
        let store = ctx.cluster.store();
        match store.services.get(&(ctx.node.to_string(), id.to_string())) {
            None => None,
            Some(service) => {
                ctx.authz
                    .check(Resource::Service, &service.def.name, Level::Read)?;
                // The agent's own checks of the service and of its node.
                // `serfHealth` lives in the catalog only, not in an agent's
                // local state, so it is not among them.
                let mut checks: Vec<&CheckRecord> = store
                    .checks
                    .values()
                    .filter(|c| c.node == ctx.node)
                    .filter(|c| {
                        c.def.service_id == id
                            || (c.def.service_id.is_empty() && c.def.id != SERF_CHECK_ID)
                    })
                    .collect();
                checks.sort_by(|a, b| a.def.id.cmp(&b.def.id));
                let status = aggregated_status(checks.iter().copied());
                let body = json!({
                    "AggregatedStatus": status,
                    "Service": views::agent_service(service, &ctx.cluster.datacenter),
                    "Checks": checks.iter().map(|c| health_check_view(c)).collect::<Vec<_>>(),
                });
                Some((status, body))
            }
        }
    };
    let (code, mut resp) = match answer {
        Some((status, body)) => {
            let code = match status {
                "passing" => StatusCode::OK,
                "warning" => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            let resp = if text_format {
                text(code, status)
            } else {
                json_resp(&body)
            };
            (code, resp)
        }
        None if text_format => (
            StatusCode::NOT_FOUND,
            text(StatusCode::NOT_FOUND, format!("ServiceId {id} not found")),
        ),
        None => (
            StatusCode::NOT_FOUND,
            json_resp(&json!({ "AggregatedStatus": "critical", "Service": null, "Checks": null })),
        ),
    };
    *resp.status_mut() = code;
    Ok(resp)
}

fn register(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    let (service, checks) = registration::parse(&ctx.body)?;
    // Every check of a registration belongs to the service, so service
    // write on its name covers them (Consul's `vetServiceRegister`).
    ctx.authz
        .check(Resource::Service, &service.name, Level::Write)?;
    let replace = ctx
        .query
        .get("replace-existing-checks")
        .is_some_and(|v| v.is_empty() || v == "true");
    let mut spawn = ctx.cluster.spawner();
    tracing::info!(node = ctx.node, service = %service.id, "Registering service.");
    ctx.cluster
        .store()
        .register_service(ctx.node, service, checks, replace, &mut spawn);
    Ok(empty_ok())
}

fn deregister(ctx: &Ctx<'_>, id: &str) -> Result<Response<Body>, ApiError> {
    service_write(ctx, id)?;
    if !ctx.cluster.store().deregister_service(ctx.node, id) {
        return Err(ApiError::not_found(unknown_service(id)));
    }
    tracing::info!(node = ctx.node, service = %id, "Deregistered service.");
    Ok(empty_ok())
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(raw: &str) -> Option<bool> {
    match raw {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn maintenance(ctx: &Ctx<'_>, id: &str) -> Result<Response<Body>, ApiError> {
    if id.is_empty() {
        return Err(ApiError::bad_request("Missing service ID"));
    }
    let raw = ctx
        .query
        .get("enable")
        .ok_or_else(|| ApiError::bad_request("Missing value for enable"))?;
    let enable = parse_go_bool(raw)
        .ok_or_else(|| ApiError::bad_request(format!("Invalid value for enable: {raw:?}")))?;
    let reason = ctx.query.get("reason").unwrap_or_default();
    service_write(ctx, id)?;
    if !ctx
        .cluster
        .store()
        .set_service_maintenance(ctx.node, id, enable, reason)
    {
        return Err(ApiError::not_found(unknown_service(id)));
    }
    tracing::info!(node = ctx.node, service = %id, enable, "Service maintenance mode changed.");
    Ok(empty_ok())
}

fn update_error(e: CheckUpdateError) -> ApiError {
    match e {
        CheckUpdateError::Unknown(_) => ApiError::not_found(e.to_string()),
        CheckUpdateError::NotTtl(_) => ApiError::internal(e.to_string()),
    }
}

fn ttl_update(
    ctx: &Ctx<'_>,
    id: &str,
    status: Status,
    output: &str,
) -> Result<Response<Body>, ApiError> {
    check_write(ctx, id)?;
    let output = registration::truncate_output(output);
    ctx.cluster
        .store()
        .update_ttl_check(ctx.node, id, status, &output)
        .map_err(update_error)?;
    Ok(empty_ok())
}

fn check_update(ctx: &Ctx<'_>, id: &str) -> Result<Response<Body>, ApiError> {
    let body: Value = super::decode::<Option<Value>>(&ctx.body)?.unwrap_or(Value::Null);
    let field = |name: &str| {
        registration::field(&body, name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let status_word = field("Status");
    let status = Status::parse(&status_word)
        .ok_or_else(|| ApiError::bad_request(format!("Invalid check status: '{status_word}'")))?;
    ttl_update(ctx, id, status, &field("Output"))
}

fn check_deregister(ctx: &Ctx<'_>, id: &str) -> Result<Response<Body>, ApiError> {
    check_write(ctx, id)?;
    if !ctx.cluster.store().deregister_check(ctx.node, id) {
        return Err(update_error(CheckUpdateError::Unknown(id.to_string())));
    }
    Ok(empty_ok())
}
