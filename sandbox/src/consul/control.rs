//! The control API for tests (not part of Consul), served under
//! `/sandbox/v1/` on the server listener only, without ACL checks. Bodies
//! and answers are JSON with PascalCase fields. See the `consul` module
//! docs for the list of operations; each mirrors a [`super::ServerHandle`]
//! method, which is where the behaviour lives.
//!
//! This module must never be reachable on a node listener, so a client
//! under test cannot change the world by accident through its agent.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::cluster::{Cluster, Fault};
use super::http::{json as json_resp, text};
use super::model::Status;
use super::server;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct NewNode {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct SerfHealth {
    status: String,
    #[serde(default)]
    output: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct Rewind {
    index: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct Leader {
    leader: bool,
}

/// A refused control request: the status and text to answer.
type Refusal = (StatusCode, String);

fn parse<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!("Invalid request body: {e}"),
        )
    })
}

fn ok() -> Response<Body> {
    json_resp(&Value::Bool(true))
}

/// Serves `/sandbox/v1/<rest>`.
pub(crate) async fn handle(
    cluster: &Arc<Cluster>,
    method: &Method,
    rest: &str,
    body: &Bytes,
) -> Response<Body> {
    match serve(cluster, method, rest, body).await {
        Ok(resp) => resp,
        Err((status, message)) => text(status, message),
    }
}

async fn serve(
    cluster: &Arc<Cluster>,
    method: &Method,
    rest: &str,
    body: &Bytes,
) -> Result<Response<Body>, Refusal> {
    let segments: Vec<&str> = rest.split('/').collect();
    let bad = |e: super::Error| (StatusCode::BAD_REQUEST, e.to_string());
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["nodes"]) => {
            let nodes: Vec<Value> = server::all_nodes(cluster)
                .into_iter()
                .map(|n| json!({ "Name": n.name, "Addr": n.addr.to_string() }))
                .collect();
            Ok(json_resp(&Value::Array(nodes)))
        }
        ("PUT", ["nodes"]) => {
            let req: NewNode = parse(body)?;
            let addr = server::add_node(cluster, &req.name).await.map_err(bad)?;
            Ok(json_resp(
                &json!({ "Name": req.name, "Addr": addr.to_string() }),
            ))
        }
        ("DELETE", ["nodes", name]) => {
            server::remove_node(cluster, name).await.map_err(bad)?;
            Ok(ok())
        }
        ("PUT", ["nodes", name, "services"]) => {
            let list: Vec<Value> = parse(body)?;
            let n = server::register_services(cluster, name, &list).map_err(|e| match e {
                server::BulkError::Node(e) => bad(e),
                server::BulkError::Registration(i, e) => {
                    (StatusCode::BAD_REQUEST, format!("Registration {i}: {e}"))
                }
            })?;
            Ok(json_resp(&json!({ "Registered": n })))
        }
        ("PUT", ["nodes", name, "serf-health"]) => {
            let req: SerfHealth = parse(body)?;
            let status = Status::parse(&req.status).ok_or_else(|| {
                (
                    StatusCode::BAD_REQUEST,
                    format!("Invalid status {:?}", req.status),
                )
            })?;
            server::set_serf_health(cluster, name, status, req.output.as_deref()).map_err(bad)?;
            Ok(ok())
        }
        ("PUT", ["faults"]) => {
            let fault: Fault = parse(body)?;
            cluster.add_fault(fault);
            Ok(ok())
        }
        ("DELETE", ["faults"]) => {
            cluster.clear_faults();
            Ok(ok())
        }
        ("GET", ["index"]) => Ok(json_resp(&json!({ "Index": cluster.store().index }))),
        ("PUT", ["index", "rewind"]) => {
            let req: Rewind = parse(body)?;
            let mut store = cluster.store();
            store.rewind(req.index);
            Ok(json_resp(&json!({ "Index": store.index })))
        }
        ("PUT", ["leader"]) => {
            let req: Leader = parse(body)?;
            cluster.set_leader(req.leader);
            cluster.store().publish();
            Ok(ok())
        }
        ("PUT", ["restart"]) => {
            server::restart_lost_state(cluster);
            Ok(ok())
        }
        _ => Err((StatusCode::NOT_FOUND, String::new())),
    }
}
