//! The node agent (`rollgate agent`): runs on every instance, baked into the
//! AMI.
//!
//! - [`identity`]: who the instance is (IMDSv2, or configuration);
//! - [`registration`]: the service and its two checks, pure;
//! - [`probe`]: the agent's own probe of the app;
//! - [`ready`]: `GET /ready` for the load balancer, Consul's verdict on the
//!   service (`agent.ready_listen`), served from start-up until the drain
//!   has deregistered the service;
//! - [`run`]: start-up (configuration, Consul client, identity), then
//!   [`serve`]: the loop: register (retrying with back-off while Consul is
//!   unreachable or refuses), probe, refresh the TTL check at most TTL/2
//!   apart, re-register when the local agent lost the service, and drain on
//!   shutdown: maintenance on, wait `drain_time` (skipped on a second
//!   signal), deregister.
//!
//! The agent never exits because Consul or the app misbehave: it logs the
//! cause, keeps trying, and recovers when the cause is fixed. It exits on
//! shutdown (status 0 after draining), or at start-up with a [`NodeError`]
//! when it cannot know what to register: every variant is something to fix
//! in the configuration or the instance's metadata options, which
//! restarting will not change.

pub mod config;
pub mod identity;
pub mod probe;
pub mod ready;
pub mod registration;

use std::time::Duration;

use tokio::time::MissedTickBehavior;

use crate::config::{Config, ConfigError, Problem};
use crate::consul::types::{CheckStatus, ServiceRegistration};
use crate::consul::{Client, Error};
use crate::shutdown::Shutdown;

use self::config::AgentConfig;
use self::identity::{Identity, IdentityError};
use self::probe::Prober;
use self::ready::ReadyServer;
use self::registration::{Ids, MetaError};

/// The node agent could not start. Once it serves it does not fail: Consul
/// and the app misbehaving are logged and retried.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration lacks what only the agent needs
    /// (`agent.expected_version`).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The Consul client could not be built from `[consul]` (an unreadable
    /// CA or token file, a bad address).
    #[error("cannot build the Consul client: {0}")]
    Consul(#[source] Error),
    /// Who this instance is could not be learned: no metadata service and no
    /// `[agent.identity]`, or an incomplete `[agent.identity]`.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The registration built from the configuration and the identity
    /// breaks Consul's rules for service metadata.
    #[error("the service registration is invalid: {0}")]
    Registration(#[source] MetaError),
}

/// A client builder for one of the agent's local peers (the metadata
/// service, the app). When `url` is plain HTTP no TLS trust roots are
/// loaded: the default builder reads and parses the system's whole CA bundle
/// on every build, code and heap that would stay resident in a process that
/// runs on every node and never speaks TLS to these peers (neither
/// redirects to `https`; one that did would fail certificate verification).
/// An `https` URL gets the default trust roots.
pub(crate) fn local_http_client(url: &str) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder();
    if is_plain_http(url) {
        builder.tls_certs_only(std::iter::empty())
    } else {
        builder
    }
}

fn is_plain_http(url: &str) -> bool {
    url.get(.."http://".len())
        .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
}

/// How often the agent probes and refreshes its TTL check: every check
/// interval, and never less often than TTL/2.
pub fn refresh_interval(config: &AgentConfig) -> Duration {
    config.check_interval.min(config.ttl / 2)
}

/// `rollgate agent`: checks the agent's part of the configuration, builds
/// the Consul client, learns the instance's identity (IMDSv2, else
/// `[agent.identity]`), then [`serve`]s until `shutdown` is requested.
/// A shutdown during start-up is a clean exit.
pub async fn run(config: &Config, shutdown: Shutdown) -> Result<(), NodeError> {
    config.agent.validate_for_agent().into_result()?;
    let client = Client::new(&config.consul)
        .map_err(NodeError::Consul)?
        .for_role("agent");
    let endpoint = identity::endpoint(&config.agent, |k| std::env::var(k).ok());
    let identity = tokio::select! {
        _ = shutdown.requested.cancelled() => return Ok(()),
        id = identity::resolve(&config.agent, &endpoint, 5) => id?,
    };
    serve(&config.agent, client, identity, shutdown).await
}

/// Registers, probes and refreshes until `shutdown` is requested, then
/// drains; serves `/ready` meanwhile when `ready_listen` is set. Fails only
/// when the registration itself is invalid or `ready_listen` cannot be
/// listened on.
pub async fn serve(
    config: &AgentConfig,
    client: Client,
    identity: Identity,
    shutdown: Shutdown,
) -> Result<(), NodeError> {
    let registration = registration::build(config, &identity);
    registration::check_meta(&registration.meta).map_err(NodeError::Registration)?;
    let ids = registration::ids(config, &identity);
    tracing::info!(service = %ids.service, instance = %identity.instance_id,
        ami = %identity.ami_id, identity_source = identity.source, consul = %client.address(),
        "Node agent starting.");
    let ready = match config.ready_listen {
        None => None,
        Some(addr) => Some(start_ready(addr, &client, &ids.service).await?),
    };
    let prober = Prober::new(
        &config.app_url,
        &config.expected_version,
        config.check_timeout,
    );

    let mut registered = false;
    let mut failures = 0u32;
    let mut last_status: Option<CheckStatus> = None;
    let refresh = refresh_interval(config);
    let mut ticker = tokio::time::interval(refresh);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.requested.cancelled() => break,
            _ = ticker.tick() => {}
        }
        if !registered {
            match client.register_service(&registration).await {
                Ok(()) => {
                    registered = true;
                    failures = 0;
                    last_status = None;
                    tracing::info!(service = %ids.service, "Service registered with the local Consul agent.");
                }
                Err(e) => {
                    failures += 1;
                    // Capped at TTL/2 so a returning Consul sees the service
                    // again within one TTL.
                    let pause = crate::consul::watch::backoff(
                        failures,
                        Duration::from_millis(200),
                        refresh.max(Duration::from_millis(400)),
                    );
                    tracing::warn!(service = %ids.service, error = %e, attempt = failures,
                        retry_in = ?pause, "Cannot register the service; retrying.");
                    tokio::select! {
                        _ = shutdown.requested.cancelled() => break,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    ticker.reset_immediately();
                    continue;
                }
            }
        }
        let result = prober.probe().await;
        match client
            .update_check(&ids.ttl_check, result.status, &result.output)
            .await
        {
            Ok(()) => {
                if last_status != Some(result.status) {
                    if result.status == CheckStatus::Passing {
                        tracing::info!(check = %ids.ttl_check, output = %result.output, "Probe passing.");
                    } else {
                        tracing::warn!(check = %ids.ttl_check, status = %result.status,
                            output = %result.output, "Probe not passing.");
                    }
                    last_status = Some(result.status);
                }
            }
            Err(e) if lost_registration(&e) => {
                tracing::warn!(service = %ids.service, error = %e,
                    "The local Consul agent no longer knows the service; registering again.");
                registered = false;
                ticker.reset_immediately();
            }
            Err(e) => {
                tracing::warn!(check = %ids.ttl_check, error = %e, "Cannot update the TTL check.");
            }
        }
    }
    drain(config, &client, &ids, &registration, &shutdown).await;
    if let Some(ready) = ready {
        ready.stop().await;
    }
    Ok(())
}

/// Starts the `/ready` listener; a port that cannot be bound is a problem of
/// `agent.ready_listen` (taken, or an address this host does not have).
async fn start_ready(
    addr: std::net::SocketAddr,
    client: &Client,
    service_id: &str,
) -> Result<ReadyServer, NodeError> {
    match ReadyServer::start(addr, client.clone(), service_id.to_string()).await {
        Ok(server) => {
            tracing::info!(address = %server.local_addr(), service = %service_id,
                "Serving /ready for the load balancer.");
            Ok(server)
        }
        Err(e) => Err(NodeError::Config(ConfigError {
            problems: vec![Problem {
                key: "agent.ready_listen".into(),
                value: addr.to_string(),
                rule: format!("cannot be listened on: {e}"),
                source: None,
            }],
        })),
    }
}

/// Whether a TTL update failed because the agent lost the check (Consul
/// restarted with a fresh state, or an operator deregistered it). Consul
/// answers 404 `Unknown check ID` (older versions: 500 `... does not have
/// associated TTL`).
fn lost_registration(e: &Error) -> bool {
    match e {
        Error::NotFound { .. } => true,
        Error::Status { status, body, .. } => {
            *status == 500
                && (body.contains("does not have associated TTL") || body.contains("Unknown check"))
        }
        _ => false,
    }
}

/// Maintenance on, wait `drain_time` (unless hurried), deregister.
async fn drain(
    config: &AgentConfig,
    client: &Client,
    ids: &Ids,
    registration: &ServiceRegistration,
    shutdown: &Shutdown,
) {
    let reason = format!(
        "rollgate agent draining {} before shutdown",
        registration
            .meta
            .get("instance_id")
            .map(String::as_str)
            .unwrap_or("")
    );
    tracing::info!(service = %ids.service, drain_time = ?config.drain_time,
        "Draining: entering maintenance mode.");
    if let Err(e) = client
        .service_maintenance(&ids.service, true, &reason)
        .await
    {
        tracing::warn!(service = %ids.service, error = %e,
            "Cannot enable maintenance mode; deregistering after the drain time anyway.");
    }
    tokio::select! {
        _ = shutdown.hurry.cancelled() => {
            tracing::info!("Drain wait skipped.");
        }
        _ = tokio::time::sleep(config.drain_time) => {}
    }
    match client.deregister_service(&ids.service).await {
        Ok(()) => {
            tracing::info!(service = %ids.service, "Service deregistered; node agent stopped.")
        }
        Err(e) => tracing::warn!(service = %ids.service, error = %e,
            "Cannot deregister the service; Consul will reap it after deregister_critical_after."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_is_never_longer_than_half_the_ttl() {
        let c = AgentConfig {
            check_interval: Duration::from_secs(30),
            ttl: Duration::from_secs(10),
            ..AgentConfig::default()
        };
        assert_eq!(refresh_interval(&c), Duration::from_secs(5));
        let c = AgentConfig {
            check_interval: Duration::from_secs(2),
            ..c
        };
        assert_eq!(refresh_interval(&c), Duration::from_secs(2));
    }

    #[test]
    fn only_plain_http_peers_skip_the_trust_roots() {
        assert!(is_plain_http("http://127.0.0.1:8080"));
        assert!(is_plain_http("HTTP://169.254.169.254"));
        assert!(!is_plain_http("https://app.internal"));
        assert!(!is_plain_http("http:/"));
        assert!(local_http_client("http://127.0.0.1:9").build().is_ok());
    }

    #[test]
    fn lost_registration_is_recognised_in_old_and_new_consul_answers() {
        let nf = Error::NotFound {
            call: "PUT /v1/agent/check/update/x".into(),
            body: "Unknown check ID \"x\"".into(),
        };
        assert!(lost_registration(&nf));
        let old = Error::Status {
            call: "PUT /v1/agent/check/update/x".into(),
            status: 500,
            body: "CheckID \"x\" does not have associated TTL".into(),
        };
        assert!(lost_registration(&old));
        let other = Error::Status {
            call: "PUT /v1/agent/check/update/x".into(),
            status: 500,
            body: "rpc error".into(),
        };
        assert!(!lost_registration(&other));
    }
}
