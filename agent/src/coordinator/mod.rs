//! The coordinator (`rollgate coordinator`): one or more replicas, one leader
//! chosen through the Consul lock `<prefix>/leader`.
//!
//! Only the leader acts. While it leads it runs, each in its own task:
//!
//! - one planning loop per `[[services]]` entry ([`planner`]), woken by the
//!   service artifact's publish trigger (a blocking query on
//!   `<prefix>/trigger/<artifact>`) and by `coordinator.registry_poll`;
//!   a failing service logs and retries without stopping the others;
//! - the health watcher and the alert outbox sender (`rollgate::watch`,
//!   `rollgate::notify`), so plan announcements and health alerts are
//!   delivered.
//!
//! When leadership is lost every task is cancelled at once; the next leader
//! rebuilds everything from KV and from what it observes. On shutdown the
//! leader releases the lock so another replica takes over without waiting
//! for the session TTL.
//!
//! The rollout of approved plans is the next step (`rollout::machine` and its
//! executor); approved plans wait in KV for it.

pub mod config;
pub mod planner;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::aws::Fleet;
use crate::aws::registry::Registry;
use crate::aws::retry::{RetryPolicy, Retrying};
use crate::aws::sdk::SdkFleet;
use crate::config::Config;
use crate::consul::lock::{Fence, LeaderLock, LockConfig};
use crate::consul::watch::{Watch, WatchConfig, backoff};
use crate::consul::{self, Client, QueryOptions, Response};
use crate::notify::{NotifyError, Outbox, Receivers, Sender};
use crate::rollout::plan::now_ms;
use crate::rollout::store::Store;
use crate::shutdown::Shutdown;
use crate::watch::{Direct, Watcher};

use self::config::ServiceConfig;
use self::planner::{PlanError, Planner, RoundResult};

/// The coordinator could not run.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// Nothing to coordinate.
    #[error("no [[services]] are configured; add one (see config/rollgate.toml)")]
    NoServices,
    /// The Consul client could not be built.
    #[error("cannot build the Consul client: {0}")]
    Consul(#[source] consul::Error),
    /// A notification receiver could not be built.
    #[error("cannot set up notifications: {0}")]
    Notify(#[from] NotifyError),
    /// The leader lock failed in a way retrying cannot fix (a 403).
    #[error("cannot take the leader lock: {0}")]
    Lock(#[source] consul::Error),
}

/// This replica's name: `coordinator.replica_name`, else the host name.
fn replica_name(config: &Config) -> String {
    if !config.coordinator.replica_name.is_empty() {
        return config.coordinator.replica_name.clone();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "coordinator".into())
}

/// Runs the coordinator until `shutdown` is requested.
pub async fn run(config: &Config, shutdown: Shutdown) -> Result<(), CoordinatorError> {
    if config.services.is_empty() {
        return Err(CoordinatorError::NoServices);
    }
    let client = Client::new(&config.consul).map_err(CoordinatorError::Consul)?;
    let prefix = config.consul.kv_prefix.trim_end_matches('/').to_string();
    let store = Store::new(client.clone(), &prefix);
    let receivers = Receivers::from_config(&config.notify)?;
    let outbox = Outbox::new(client.clone(), &prefix, &config.notify);
    let c = &config.coordinator;
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let (region, endpoint) = (opt(&c.aws_region), opt(&c.aws_endpoint));
    let sdk = SdkFleet::from_env(region.as_deref(), endpoint.as_deref()).await;
    let registry = Arc::new(Retrying::new(
        sdk.registry().with_owners(c.image_owners.clone()),
        RetryPolicy::default(),
    ));
    let fleet = Arc::new(Retrying::new(sdk, RetryPolicy::default()));
    let name = replica_name(config);
    let lock = LeaderLock::new(
        client.clone(),
        LockConfig {
            ttl: c.lock_ttl,
            lock_delay: c.lock_delay,
            ..LockConfig::new(store.leader_key(), name.clone())
        },
    );
    tracing::info!(replica = %name, services = config.services.len(), "Coordinator starting; contending for leadership.");
    let cancel = shutdown.requested.clone();
    loop {
        let Some(leadership) = lock
            .acquire(&cancel)
            .await
            .map_err(CoordinatorError::Lock)?
        else {
            return Ok(());
        };
        tracing::info!(replica = %name, lock_index = leadership.fence().lock_index, "Leading.");
        let round = cancel.child_token();
        let lost = leadership.lost();
        let r = round.clone();
        let link = tokio::spawn(async move {
            tokio::select! {
                _ = lost.cancelled() => r.cancel(),
                _ = r.cancelled() => {}
            }
        });
        let mut tasks = Vec::new();
        let sender = Sender::new(
            outbox.clone(),
            receivers.clone(),
            &config.notify,
            config.consul.max_wait,
        );
        tasks.push(tokio::spawn(sender.run(round.clone())));
        let direct = Direct {
            receivers: receivers.clone(),
            router: crate::notify::route::Router::new(&config.notify),
            send_timeout: config.notify.send_timeout,
        };
        let watcher = Watcher::new(
            client.clone(),
            config.watch.clone(),
            &prefix,
            config.consul.max_wait,
            outbox.clone(),
            Some(direct),
        );
        tasks.push(tokio::spawn(watcher.run(round.clone())));
        for service in &config.services {
            let ctx = ServiceLoop {
                service: service.clone(),
                fleet: fleet.clone(),
                registry: registry.clone(),
                store: store.clone(),
                outbox: outbox.clone(),
                fence: leadership.fence().clone(),
                poll: c.registry_poll,
                wait: config.consul.max_wait,
            };
            tasks.push(tokio::spawn(ctx.run(round.clone())));
        }
        round.cancelled().await;
        for t in tasks {
            let _ = t.await;
        }
        let _ = link.await;
        if cancel.is_cancelled() {
            if let Err(e) = leadership.release().await {
                tracing::warn!(error = %e, "Cannot release the leader lock; it expires with its session.");
            }
            tracing::info!("Coordinator stopped.");
            return Ok(());
        }
        tracing::warn!(replica = %name, "Leadership lost; stopped acting, contending again.");
    }
}

/// One service's planning loop while leading.
struct ServiceLoop<F, R> {
    service: ServiceConfig,
    fleet: Arc<F>,
    registry: Arc<R>,
    store: Store,
    outbox: Outbox,
    fence: Fence,
    poll: Duration,
    wait: Duration,
}

impl<F, R> ServiceLoop<F, R>
where
    F: Fleet + 'static,
    R: Registry + 'static,
{
    async fn run(self, cancel: CancellationToken) {
        let client = self.store.client().clone();
        let key = self.store.trigger_key(&self.service.artifact);
        let trigger = Watch::new(
            format!("trigger {key}"),
            WatchConfig {
                wait: self.wait,
                ..WatchConfig::default()
            },
            move |opts: QueryOptions| {
                let client = client.clone();
                let key = key.clone();
                async move {
                    let r = client.kv_get(&key, &opts).await?;
                    Ok(Response {
                        value: r.value.map(|kv| kv.modify_index),
                        meta: r.meta,
                    })
                }
            },
        );
        let mut triggers = trigger.spawn(cancel.clone());
        let mut poll = tokio::time::interval(self.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failures = 0u32;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = poll.tick() => {}
                changed = triggers.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    tracing::debug!(service = %self.service.name, "Publish trigger changed.");
                }
            }
            let planner = Planner {
                service: &self.service,
                fleet: self.fleet.as_ref(),
                registry: self.registry.as_ref(),
                store: &self.store,
                outbox: &self.outbox,
                fence: &self.fence,
            };
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = planner.round(now_ms()) => r,
            };
            match result {
                Ok(RoundResult::Idle(why)) => {
                    failures = 0;
                    tracing::debug!(service = %self.service.name, reason = %why, "Nothing to plan.");
                }
                Ok(RoundResult::Planned(_)) => failures = 0,
                Err(PlanError::NotLeader) => return,
                Err(e) => {
                    failures += 1;
                    let pause = backoff(
                        failures,
                        Duration::from_secs(1),
                        self.poll.max(Duration::from_secs(2)),
                    );
                    tracing::warn!(service = %self.service.name, error = %e, retry_in = ?pause,
                        "Planning round failed; retrying.");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    poll.reset_immediately();
                }
            }
        }
    }
}
