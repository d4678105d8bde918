//! `/v1/health/*` and `/v1/catalog/*`: cluster-wide reads, all blocking,
//! never refused by ACLs: entries the token may not read are dropped and
//! the answer says so (`X-Consul-Results-Filtered-By-ACLs`), as in Consul.
//! `/v1/health/state/:state` needs a state; an unknown word matches no
//! check, as in Consul.
//!
//! `?passing` drops an instance when any of its checks or of its node's
//! checks (`serfHealth`, maintenance) is not passing; `warning` counts as
//! not passing, as in Consul. `?tag` (repeatable), `?node-meta=k:v` and
//! `?filter` narrow the results. Indexes: per service name for
//! `health/service`, `health/checks` and `catalog/service`; the checks
//! table for `health/state` and `health/node`; the services table for
//! `catalog/services`; the nodes table for `catalog/nodes`.

use axum::body::Body;
use axum::http::Response;
use serde_json::{Map, Value, json};

use super::super::acl::{Authz, Level, Resource};
use super::super::blocking::{self, QueryOptions};
use super::super::filter::{self, Expr};
use super::super::model::{CheckRecord, ServiceRecord, Status};
use super::super::store::Store;
use super::super::views;
use super::{ApiError, Ctx, mark_filtered, require_leader, with_meta};

const ENTRY_ROOTS: &[&str] = &["Node", "Service", "Checks"];
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
const NODE_ROOTS: &[&str] = &[
    "ID",
    "Node",
    "Address",
    "Datacenter",
    "TaggedAddresses",
    "Meta",
];
const SERVICE_NODE_ROOTS: &[&str] = &[
    "ID",
    "Node",
    "Address",
    "Datacenter",
    "TaggedAddresses",
    "NodeMeta",
    "ServiceKind",
    "ServiceID",
    "ServiceName",
    "ServiceTags",
    "ServiceAddress",
    "ServiceWeights",
    "ServiceMeta",
    "ServicePort",
    "ServiceEnableTagOverride",
    "ServiceTaggedAddresses",
    "ServiceProxy",
    "ServiceConnect",
];

/// Routes a `health` or `catalog` path; `None` when unknown.
pub(crate) async fn route(
    ctx: &Ctx<'_>,
    segments: &[&str],
) -> Option<Result<Response<Body>, ApiError>> {
    let which = match segments {
        ["health", "service", name] => Query::HealthService(name),
        ["health", "checks", name] => Query::ServiceChecks(name),
        ["health", "state", state] => Query::State(state),
        ["health", "node", node] => Query::Node(node),
        ["catalog", "services"] => Query::CatalogServices,
        ["catalog", "service", name] => Query::CatalogService(name),
        ["catalog", "nodes"] => Query::CatalogNodes,
        _ => return None,
    };
    Some(serve(ctx, which).await)
}

#[derive(Debug, Clone, Copy)]
enum Query<'a> {
    HealthService(&'a str),
    ServiceChecks(&'a str),
    State(&'a str),
    Node(&'a str),
    CatalogServices,
    CatalogService(&'a str),
    CatalogNodes,
}

/// Instance filters from `?tag` and `?node-meta`.
struct Narrow {
    tags: Vec<String>,
    node_meta: Vec<(String, String)>,
    passing: bool,
}

impl Narrow {
    fn keeps(&self, store: &Store, service: &ServiceRecord) -> bool {
        let tags_ok = self.tags.iter().all(|t| service.def.tags.contains(t));
        let meta_ok = store.nodes.get(&service.node).is_some_and(|n| {
            self.node_meta
                .iter()
                .all(|(k, v)| n.meta.get(k).is_some_and(|have| have == v))
        });
        tags_ok && meta_ok
    }
}

async fn serve(ctx: &Ctx<'_>, which: Query<'_>) -> Result<Response<Body>, ApiError> {
    let opts = QueryOptions::parse(ctx.query)?;
    require_leader(ctx, Some(&opts))?;
    let roots = match which {
        Query::HealthService(_) => ENTRY_ROOTS,
        Query::ServiceChecks(_) | Query::State(_) | Query::Node(_) => CHECK_ROOTS,
        Query::CatalogServices | Query::CatalogService(_) => SERVICE_NODE_ROOTS,
        Query::CatalogNodes => NODE_ROOTS,
    };
    let expr = match ctx.query.get("filter").filter(|f| !f.is_empty()) {
        Some(f) => Some(filter::parse(f, roots).map_err(|e| ApiError::bad_request(e.to_string()))?),
        None => None,
    };
    // Consul checks only that a state is given; an unknown one matches
    // no check.
    if let Query::State("") = which {
        return Err(ApiError::bad_request("Missing check state"));
    }
    let narrow = Narrow {
        tags: ctx.query.all("tag").map(str::to_string).collect(),
        node_meta: ctx
            .query
            .all("node-meta")
            .map(|m| match m.split_once(':') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (m.to_string(), String::new()),
            })
            .collect(),
        passing: ctx.query.flag("passing"),
    };
    let dc = ctx.cluster.datacenter.clone();
    let authz = &ctx.authz;
    let ((body, removed), index) = blocking::block_split(
        ctx.cluster,
        &opts,
        |store| index_of(store, which),
        |store| Ok(render(store, which, &narrow, expr.as_ref(), &dc, authz)),
    )
    .await?;
    let resp = with_meta(json_body(body), ctx.cluster, index, &opts);
    Ok(mark_filtered(resp, ctx, removed))
}

/// The index a query reports, without the data.
fn index_of(store: &Store, which: Query<'_>) -> u64 {
    match which {
        Query::HealthService(name) | Query::ServiceChecks(name) | Query::CatalogService(name) => {
            store.service_name_index(name)
        }
        Query::State(_) => store.tables.checks,
        Query::Node(_) => store.tables.checks.max(store.tables.nodes),
        Query::CatalogServices => store.tables.services,
        Query::CatalogNodes => store.tables.nodes,
    }
}

/// Whether the token may see a check (Consul's `filterHealthChecks`: node
/// read, and service read for a service's check).
fn may_read_check(authz: &Authz, check: &CheckRecord) -> bool {
    authz.allows(Resource::Node, &check.node, Level::Read)
        && (check.service_name.is_empty()
            || authz.allows(Resource::Service, &check.service_name, Level::Read))
}

/// Whether the token may see a service instance (Consul's
/// `filterServiceNodes`/`filterCheckServiceNodes`: node and service read).
fn may_read_instance(authz: &Authz, service: &ServiceRecord) -> bool {
    authz.allows(Resource::Node, &service.node, Level::Read)
        && authz.allows(Resource::Service, &service.def.name, Level::Read)
}

/// Checks in `state` (`any` for all; an unknown word matches none).
fn in_state(state: &str) -> impl Fn(&&CheckRecord) -> bool + '_ {
    let wanted = Status::parse(state);
    move |c| state == "any" || wanted.is_some_and(|w| c.status == w)
}

/// The JSON text of the answer, and whether ACLs removed entries.
/// Unfiltered check lists (`health/state`, the largest answers) are
/// written straight from the records.
fn render(
    store: &Store,
    which: Query<'_>,
    narrow: &Narrow,
    expr: Option<&Expr>,
    dc: &str,
    authz: &Authz,
) -> (String, bool) {
    if let (Query::State(state), None) = (which, expr) {
        let mut removed = false;
        let body = views::checks_json(store.checks.values().filter(in_state(state)).filter(|c| {
            let ok = may_read_check(authz, c);
            removed |= !ok;
            ok
        }));
        return (body, removed);
    }
    let (value, removed) = evaluate(store, which, narrow, expr, dc, authz);
    (value.to_string(), removed)
}

fn json_body(body: String) -> Response<Body> {
    let mut resp = Response::new(Body::from(body));
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn keep(expr: Option<&Expr>, item: &Value) -> bool {
    expr.is_none_or(|e| e.eval(item))
}

/// The answer as JSON, and whether ACLs removed entries from it.
fn evaluate(
    store: &Store,
    which: Query<'_>,
    narrow: &Narrow,
    expr: Option<&Expr>,
    dc: &str,
    authz: &Authz,
) -> (Value, bool) {
    let mut removed = false;
    let mut readable = |ok: bool| {
        removed |= !ok;
        ok
    };
    let value = match which {
        Query::HealthService(name) => {
            let entries: Vec<Value> = store
                .services
                .values()
                .filter(|s| s.def.name == name && narrow.keeps(store, s))
                .filter(|s| readable(may_read_instance(authz, s)))
                .filter_map(|s| {
                    let node = store.nodes.get(&s.node)?;
                    let checks: Vec<_> = store
                        .checks
                        .values()
                        .filter(|c| {
                            c.node == s.node
                                && (c.def.service_id.is_empty() || c.def.service_id == s.def.id)
                        })
                        .collect();
                    if narrow.passing && checks.iter().any(|c| c.status != Status::Passing) {
                        return None;
                    }
                    Some(json!({
                        "Node": views::node(node, dc),
                        "Service": views::node_service(s),
                        "Checks": checks.iter().map(|c| views::check(c)).collect::<Vec<_>>(),
                    }))
                })
                .filter(|v| keep(expr, v))
                .collect();
            Value::Array(entries)
        }
        Query::ServiceChecks(name) => {
            let checks = store
                .checks
                .values()
                .filter(|c| c.service_name == name && !c.def.service_id.is_empty())
                .filter(|c| readable(may_read_check(authz, c)))
                .map(views::check)
                .filter(|v| keep(expr, v))
                .collect();
            Value::Array(checks)
        }
        Query::State(state) => {
            let checks = store
                .checks
                .values()
                .filter(in_state(state))
                .filter(|c| readable(may_read_check(authz, c)))
                .map(views::check)
                .filter(|v| keep(expr, v))
                .collect();
            Value::Array(checks)
        }
        Query::Node(node) => {
            let checks = store
                .checks
                .values()
                .filter(|c| c.node == node)
                .filter(|c| readable(may_read_check(authz, c)))
                .map(views::check)
                .filter(|v| keep(expr, v))
                .collect();
            Value::Array(checks)
        }
        Query::CatalogService(name) => {
            let list = catalog_service_nodes(store, narrow, expr, dc, Some(name), &mut |s| {
                readable(may_read_instance(authz, s))
            });
            Value::Array(list)
        }
        Query::CatalogServices => {
            let mut map = Map::new();
            // Consul's `filterServices`: service read on the name only.
            let entries = catalog_service_nodes(store, narrow, expr, dc, None, &mut |s| {
                readable(authz.allows(Resource::Service, &s.def.name, Level::Read))
            });
            for entry in entries {
                let name = entry
                    .get("ServiceName")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let tags = map.entry(name).or_insert_with(|| Value::Array(Vec::new()));
                if let (Some(list), Some(new)) = (
                    tags.as_array_mut(),
                    entry.get("ServiceTags").and_then(Value::as_array),
                ) {
                    for tag in new {
                        if !list.contains(tag) {
                            list.push(tag.clone());
                        }
                    }
                }
            }
            Value::Object(map)
        }
        Query::CatalogNodes => {
            let nodes = store
                .nodes
                .values()
                .filter(|n| readable(authz.allows(Resource::Node, &n.name, Level::Read)))
                .map(|n| views::node(n, dc))
                .filter(|v| keep(expr, v))
                .collect();
            Value::Array(nodes)
        }
    };
    (value, removed)
}

fn catalog_service_nodes(
    store: &Store,
    narrow: &Narrow,
    expr: Option<&Expr>,
    dc: &str,
    name: Option<&str>,
    readable: &mut dyn FnMut(&ServiceRecord) -> bool,
) -> Vec<Value> {
    store
        .services
        .values()
        .filter(|s| name.is_none_or(|n| s.def.name == n) && narrow.keeps(store, s))
        .filter(|s| readable(s))
        .filter_map(|s| Some(views::catalog_service(store.nodes.get(&s.node)?, s, dc)))
        .filter(|v| keep(expr, v))
        .collect()
}
