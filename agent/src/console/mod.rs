//! The operator's console on every coordinator replica: a web page at `/`
//! (log in with a Consul token, live service pages), a JSON API under
//! `/v1/`, its OpenAPI document, and Prometheus metrics at `/metrics`.
//!
//! - [`config`]: the `[http]` section (listen address, TLS, public URL).
//! - [`server`]: the listener (rustls outside loopback), the router and its
//!   list of routes, graceful shutdown.
//! - [`auth`]: who is asking, decided by Consul from the caller's token.
//! - [`api`]: the handlers; [`views`]: what they answer; [`error`]: the
//!   JSON errors and their statuses.
//! - [`page`]: the web page (sessions, CSRF, HTML, the event stream); its
//!   actions go through [`api`]'s own functions.
//! - [`metrics`]: the registry and the call hooks; [`refresh`]: the state
//!   figures brought up to date from Consul.
//!
//! Every replica serves the console, leader or not: the state is in Consul
//! KV, and every action is a check-and-set write by the caller's token
//! through the same store functions the CLI uses. The console holds no
//! state of its own (but the page's login sessions, in memory, per
//! replica) and never acts with the coordinator's token on an
//! operator's behalf (only `/metrics`, which has no caller, reads with it).
//!
//! The node agent never starts it: nothing here runs or is allocated unless
//! [`start`] is called by `rollgate coordinator`.

pub mod api;
pub mod auth;
pub mod config;
pub mod error;
pub mod metrics;
pub mod page;
pub mod refresh;
pub mod server;
pub mod timeline;
pub mod views;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::consul::Client;

pub use server::{Running, ServerError, route_list, router};

/// [`start`] as `rollgate coordinator` runs it: a listen address that
/// cannot be bound (taken by another process) is logged as an error naming
/// `http.listen`, and the coordinator goes on without its console: rollouts
/// and leadership never depend on it. A certificate or key that cannot be
/// used is a configuration error and stops the start.
pub async fn start_beside_coordinator(
    config: &Config,
    client: &Client,
    replica: &str,
    cancel: CancellationToken,
) -> Result<Option<Running>, ServerError> {
    match start(config, client, replica, cancel).await {
        Ok(running) => Ok(Some(running)),
        Err(e @ ServerError::Bind { .. }) => {
            tracing::error!(error = %e, "Console not started; the coordinator runs on without it \
                (no API, no /metrics on this replica).");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Waits (at most a few seconds) for a console to finish its requests
/// after its cancel token fired.
pub async fn stopped(console: Option<Running>) {
    if let Some(c) = console {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), c.stopped()).await;
    }
}

/// Starts the console of `config` with the coordinator's Consul client:
/// installs the metrics, binds `[http] listen`, serves until `cancel`
/// fires, and keeps the state metrics current meanwhile.
pub async fn start(
    config: &Config,
    client: &Client,
    replica: &str,
    cancel: CancellationToken,
) -> Result<Running, ServerError> {
    let metrics = metrics::install();
    let state = Arc::new(server::AppState {
        client: client.clone(),
        prefix: config.consul.kv_prefix.trim_end_matches('/').to_string(),
        services: config.services.clone(),
        receivers: config
            .notify
            .receivers
            .iter()
            .map(|r| r.name.clone())
            .collect(),
        replica: replica.to_string(),
        metrics,
        sessions: page::session::Sessions::new(
            config.http.tls() || config.http.public_url.starts_with("https://"),
        ),
        max_wait: config.consul.max_wait,
        cancel: cancel.clone(),
        live: page::live::Followers::default(),
    });
    let mut running = server::serve(&config.http, router(state.clone()), cancel.clone()).await?;
    running.beside(tokio::spawn(refresh::follow(
        state,
        config.consul.max_wait,
        cancel,
    )));
    tracing::info!(
        address = %running.addr,
        tls = running.tls,
        public_url = %config.http.public_url,
        "Console listening (web page at /, API under /v1/, metrics at /metrics)."
    );
    Ok(running)
}
