//! Accept loops: one TCP listener per node, HTTP/1.1 via hyper, every
//! connection a task on the cluster's tracker.
//!
//! A connection stops when its node's token is cancelled (node removal,
//! shutdown); a request to the Consul API is aborted (the connection
//! dropped without an answer, as when an agent process dies) when a
//! state-losing restart begins. The accept loop owns the socket, so when
//! it returns the port is free. Nothing here may keep a task alive past
//! its token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::cluster::{Cluster, NodeListener};
use super::http;

/// The error that makes hyper drop a connection whose request was aborted.
#[derive(Debug, thiserror::Error)]
#[error("the agent restarted and lost its state")]
struct Restarted;

/// Starts serving `listener` as the agent of `node`.
pub(crate) fn spawn(
    cluster: &Arc<Cluster>,
    node: &str,
    listener: TcpListener,
    addr: SocketAddr,
) -> NodeListener {
    let cancel = cluster.root.child_token();
    let task = cluster.tracker.spawn(accept_loop(
        Arc::clone(cluster),
        Arc::from(node),
        listener,
        cancel.clone(),
    ));
    NodeListener {
        addr,
        cancel,
        task: Some(task),
    }
}

async fn accept_loop(
    cluster: Arc<Cluster>,
    node: Arc<str>,
    listener: TcpListener,
    cancel: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _peer)) => {
                let conn = serve(
                    Arc::clone(&cluster),
                    Arc::clone(&node),
                    stream,
                    cancel.clone(),
                );
                cluster.tracker.spawn(conn);
            }
            Err(e) => {
                tracing::warn!(node = %node, error = %e, "Accepting a connection failed.");
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        }
    }
    tracing::debug!(node = %node, "Listener stopped.");
}

async fn serve(
    cluster: Arc<Cluster>,
    node: Arc<str>,
    stream: TcpStream,
    cancel: CancellationToken,
) {
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let cluster = Arc::clone(&cluster);
        let node = Arc::clone(&node);
        async move { answer(cluster, node, req).await }
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = cancel.cancelled() => {}
        r = conn => {
            if let Err(e) = r {
                tracing::trace!(error = %e, "Connection ended with an error.");
            }
        }
    }
}

async fn answer(
    cluster: Arc<Cluster>,
    node: Arc<str>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Restarted> {
    if req.uri().path().starts_with("/sandbox/") {
        return Ok(http::dispatch(cluster, node, req).await);
    }
    let epoch = cluster.conn_epoch();
    tokio::select! {
        resp = http::dispatch(Arc::clone(&cluster), node, req) => Ok(resp),
        _ = epoch.cancelled() => Err(Restarted),
    }
}
