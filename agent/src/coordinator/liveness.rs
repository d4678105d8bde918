//! The coordinator's liveness check: a short TTL check of this process,
//! registered with the local Consul agent and refreshed while the process
//! runs, which the leader lock's session depends on.
//!
//! A leader killed (or stalled) stops refreshing; its check goes critical
//! when the TTL runs out, Consul invalidates the session at that moment and
//! frees the lock after the lock-delay. Without it only the session TTL
//! (invalidated after up to twice the TTL, at least 10 s) would notice.
//!
//! Every replica, leading or not, keeps its check: a session cannot be
//! created on a critical or missing check. The check is registered as the
//! service [`SERVICE_NAME`] (one instance per replica, ID
//! `rollgate-coordinator-<replica>`), so the coordinator's token needs
//! `service:write` on that name. When a refresh fails (the agent restarted
//! and forgot the check, or is unreachable), the next round registers the
//! service again; the session it invalidated meanwhile is replaced by the
//! lock's acquire loop. A dead replica's registration leaves by itself
//! (`DeregisterCriticalServiceAfter`), or when the replica starts again
//! (it removes its previous process's check first, which frees a lock that
//! process died holding at once); a replica stopping gracefully
//! deregisters it after releasing the lock. Replica names must therefore
//! differ between replicas sharing a Consul agent.
//!
//! What it must never do: mark the check passing for a process that is not
//! running this loop (so no refresh happens anywhere but here), or
//! deregister the check while the lock is held (that would invalidate the
//! session and arm the lock-delay instead of releasing cleanly).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::consul::types::{CheckDefinition, CheckStatus, ServiceRegistration, go_duration};
use crate::consul::{Client, Error};

/// The Consul service name every coordinator replica registers its check
/// under (`config/acl/coordinator.hcl` grants `service:write` on it).
pub const SERVICE_NAME: &str = "rollgate-coordinator";

/// How long a replica's registration stays after its check went critical
/// (Consul's minimum is one minute).
const DEREGISTER_AFTER: Duration = Duration::from_secs(60);

/// A running liveness check.
#[derive(Debug)]
pub struct Liveness {
    client: Client,
    service_id: String,
    check_id: String,
    /// Cancelled to stop refreshing.
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Service ID and check ID of `replica`'s liveness check.
pub fn ids(replica: &str) -> (String, String) {
    let safe: String = replica
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let service = format!("{SERVICE_NAME}-{safe}");
    let check = format!("{service}:alive");
    (service, check)
}

/// The registration of `replica`'s liveness service and its TTL check.
pub fn registration(replica: &str, ttl: Duration) -> ServiceRegistration {
    let (id, check_id) = ids(replica);
    ServiceRegistration {
        id,
        name: SERVICE_NAME.into(),
        meta: BTreeMap::from([
            ("replica".to_string(), replica.to_string()),
            ("pid".to_string(), std::process::id().to_string()),
        ]),
        checks: vec![CheckDefinition {
            check_id,
            name: "rollgate coordinator process alive".into(),
            notes: "Refreshed by the coordinator process itself; its leader lock's session depends on it.".into(),
            ttl: go_duration(ttl),
            // Passing from the start: the process registering it is alive,
            // and a session cannot be created on a critical check.
            status: Some(CheckStatus::Passing),
            deregister_critical_service_after: go_duration(DEREGISTER_AFTER),
            ..CheckDefinition::default()
        }],
        ..ServiceRegistration::default()
    }
}

impl Liveness {
    /// Registers `replica`'s check (one attempt; failures are logged and
    /// retried in the background) and refreshes it every `ttl / 3` until
    /// [`Liveness::stop`].
    pub async fn start(client: Client, replica: &str, ttl: Duration) -> Self {
        let registration = registration(replica, ttl);
        let (service_id, check_id) = ids(replica);
        // A predecessor of this replica (the same name: a restart) may have
        // died holding the lock. Registering over its check would keep its
        // session alive until the session TTL; removing the check ends that
        // session at once.
        match client.deregister_service(&service_id).await {
            Ok(()) => tracing::info!(check = %check_id,
                "Removed the liveness check of this replica's previous process; a lock it held is freed now."),
            Err(Error::NotFound { .. }) => {}
            Err(e) => tracing::debug!(check = %check_id, error = %e,
                "Cannot remove a previous process's liveness check."),
        }
        let registered = match client.register_service(&registration).await {
            Ok(()) => true,
            Err(e) => {
                report(&e, 1, &check_id);
                false
            }
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(keep(
            client.clone(),
            registration,
            ttl,
            registered,
            stop.clone(),
        ));
        if registered {
            tracing::info!(check = %check_id, ttl = ?ttl,
                "Coordinator liveness check registered; the leader lock's session depends on it.");
        }
        Self {
            client,
            service_id,
            check_id,
            stop,
            task,
        }
    }

    /// The check's ID, for [`crate::consul::lock::LockConfig::checks`].
    pub fn check_id(&self) -> &str {
        &self.check_id
    }

    /// Stops refreshing and deregisters the check. Call only after the
    /// leader lock was released.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
        if let Err(e) = self.client.deregister_service(&self.service_id).await {
            tracing::warn!(service = %self.service_id, error = %e,
                "Cannot deregister the coordinator's liveness check; Consul removes it a minute after it goes critical.");
        }
    }
}

fn report(e: &Error, failures: u32, check: &str) {
    // One line per streak, then one every 20 failures: at a refresh every
    // second, the log stays readable through an outage.
    if failures != 1 && failures % 20 != 0 {
        return;
    }
    if matches!(e, Error::PermissionDenied { .. }) {
        tracing::error!(check, error = %e,
            "Cannot register or refresh the coordinator's liveness check: the token needs service:write on \"rollgate-coordinator\" (config/acl/coordinator.hcl); no session can be created without it.");
    } else {
        tracing::warn!(check, error = %e, failures,
            "Cannot refresh the coordinator's liveness check; registering it again.");
    }
}

async fn keep(
    client: Client,
    registration: ServiceRegistration,
    ttl: Duration,
    mut registered: bool,
    stop: CancellationToken,
) {
    // Three refreshes per TTL: a single late or lost one does not fail the
    // check, two in a row (a process stalled for 2/3 of the TTL) may.
    let every = ttl / 3;
    let check_id = registration
        .checks
        .first()
        .map(|c| c.check_id.clone())
        .unwrap_or_default();
    let output = format!("rollgate coordinator (pid {}) is alive", std::process::id());
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(if registered { every } else { every.min(Duration::from_millis(500)) }) => {}
        }
        let result = if registered {
            client
                .update_check(&check_id, CheckStatus::Passing, &output)
                .await
        } else {
            client.register_service(&registration).await
        };
        match result {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(check = %check_id, failures, "Coordinator liveness check refreshed again.");
                }
                failures = 0;
                registered = true;
            }
            Err(e) => {
                failures += 1;
                report(&e, failures, &check_id);
                // The agent may have lost the check (a restart): register
                // it again next time, which is idempotent otherwise.
                registered = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use sandbox::consul::{Config as ServerConfig, Server};

    use super::*;
    use crate::config::ConsulConfig;
    use crate::consul::QueryOptions;
    use crate::consul::lock::{LeaderLock, LockConfig};

    fn client(addr: std::net::SocketAddr) -> Client {
        Client::new(&ConsulConfig {
            address: format!("http://{addr}"),
            ..ConsulConfig::default()
        })
        .unwrap()
    }

    async fn lead(client: &Client, check: &str) -> crate::consul::lock::Leadership {
        let lock = LeaderLock::new(
            client.clone(),
            LockConfig {
                checks: vec![check.to_string()],
                lock_delay: Duration::ZERO,
                wait: Duration::from_secs(5),
                ..LockConfig::new("rollgate/leader", "test")
            },
        );
        let cancel = CancellationToken::new();
        tokio::time::timeout(Duration::from_secs(20), lock.acquire(&cancel))
            .await
            .expect("the lock is taken")
            .unwrap()
            .expect("not shut down")
    }

    #[tokio::test]
    async fn the_session_depends_on_the_check_and_dies_with_it() {
        let consul = Server::start(ServerConfig::default()).await.unwrap();
        let client = client(consul.http_addr());
        let alive = Liveness::start(client.clone(), "replica a/1", Duration::from_secs(2)).await;
        assert_eq!(alive.check_id(), "rollgate-coordinator-replica-a-1:alive");
        let leadership = lead(&client, alive.check_id()).await;
        let info = client
            .session_info(&leadership.fence().session, &QueryOptions::default())
            .await
            .unwrap()
            .value
            .expect("the session exists");
        let checks: Vec<&str> = info
            .service_checks
            .iter()
            .flatten()
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(checks, [alive.check_id()], "{info:?}");
        assert_eq!(
            info.node_checks.as_deref(),
            Some(&["serfHealth".to_string()][..]),
            "the node's health still counts"
        );

        // The check goes critical (as when its TTL runs out): Consul
        // invalidates the session and the leader learns it at once.
        let lost = leadership.lost();
        client
            .set_check(alive.check_id(), CheckStatus::Critical, "stalled")
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), lost.cancelled())
            .await
            .expect("leadership is lost when the check goes critical");
        let gone = client
            .session_info(&leadership.fence().session, &QueryOptions::default())
            .await
            .unwrap()
            .value;
        assert!(gone.is_none(), "the session was invalidated: {gone:?}");
        let fence = leadership.fence().clone();
        assert!(!fence.verify(&client).await.unwrap(), "the fence is lost");

        // The replica is still alive: its next refresh makes the check
        // passing again, and a new session can be created on it.
        let again = lead(&client, alive.check_id()).await;
        assert_ne!(again.fence().session, fence.session);
        again.release().await.unwrap();
        alive.stop().await;
        let services = client.agent_services().await.unwrap();
        assert!(
            !services.contains_key("rollgate-coordinator-replica-a-1"),
            "deregistered on stop: {services:?}"
        );
        consul.shutdown().await;
    }

    #[tokio::test]
    async fn a_process_that_stops_refreshing_loses_its_session_with_the_check_ttl() {
        let consul = Server::start(ServerConfig::default()).await.unwrap();
        let client = client(consul.http_addr());
        let alive = Liveness::start(client.clone(), "a", Duration::from_secs(1)).await;
        let leadership = lead(&client, alive.check_id()).await;
        let lost = leadership.lost();
        // The refresh loop stops, as in a dead or stalled process; the
        // session's own TTL (15 s, invalidated after up to 30 s) is renewed
        // all along, so only the check can end it before the timeout.
        alive.task.abort();
        tokio::time::timeout(Duration::from_secs(10), lost.cancelled())
            .await
            .expect("leadership is lost when the check's TTL runs out");
        let checks = client.agent_checks().await.unwrap();
        assert_eq!(
            checks[alive.check_id()].status,
            Some(CheckStatus::Critical),
            "{checks:?}"
        );
        consul.shutdown().await;
    }

    #[tokio::test]
    async fn a_consul_agent_that_lost_its_state_gets_the_check_again() {
        let consul = Server::start(ServerConfig::default()).await.unwrap();
        let client = client(consul.http_addr());
        let alive = Liveness::start(client.clone(), "a", Duration::from_secs(2)).await;
        let leadership = lead(&client, alive.check_id()).await;
        let lost = leadership.lost();
        consul.restart_lost_state();
        tokio::time::timeout(Duration::from_secs(20), lost.cancelled())
            .await
            .expect("the session is gone with the agent's state");
        // The check is registered again, so a new session can depend on it.
        let again = lead(&client, alive.check_id()).await;
        again.release().await.unwrap();
        alive.stop().await;
        consul.shutdown().await;
    }
}
