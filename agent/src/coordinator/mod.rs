//! The coordinator (`rollgate coordinator`): one or more replicas, one leader
//! chosen through the Consul lock `<prefix>/leader`.
//!
//! Only the leader acts. While it leads it runs, each in its own task:
//!
//! - one planning loop per `[[services]]` entry ([`planner`]), woken by the
//!   service artifact's publish trigger (a blocking query on
//!   `<prefix>/trigger/<artifact>`) and by `coordinator.registry_poll`;
//!   a failing service logs and retries without stopping the others;
//! - one rollout loop per service ([`RolloutLoop`]): it resumes the active
//!   rollout from KV, or starts the oldest approved plan, and drives it with
//!   `rollout::executor` to its end, one rollout per group at a time;
//! - the health watcher and the alert outbox sender
//!   ([`crate::alerting`], [`crate::notify`]), so plan announcements and
//!   health alerts are delivered.
//!
//! The round is supervised ([`run_while_leading`]): when leadership is lost,
//! or any task ends or panics, every task is cancelled and awaited; the next
//! leader (this replica again, after a back-off, or another) rebuilds
//! everything from KV and from what it observes. Every KV write of a round is
//! fenced by the lock in the same transaction. On shutdown the leader
//! releases the lock so another replica takes over without waiting for the
//! session TTL.
//!
//! Every replica keeps a short TTL check of its own process in its local
//! Consul agent ([`liveness`], `coordinator.leader_check_ttl`) and ties its
//! lock session to it, so a leader that dies or stalls loses the lock a few
//! seconds later, not after twice the session TTL.
//!

pub mod config;
pub mod liveness;
pub mod planner;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::aws::Fleet;
use crate::aws::registry::Registry;
use crate::aws::retry::{RetryPolicy, Retrying};
use crate::aws::sdk::SdkFleet;
use crate::config::Config;
use crate::consul::leading::run_while_leading;
use crate::consul::lock::{Fence, FenceProof, LeaderLock, LockConfig};
use crate::consul::watch::{Watch, WatchConfig, backoff};
use crate::consul::{self, Client, QueryOptions, Response};
use crate::notify::{NotifyError, Outbox, Receivers};
use crate::rollout::executor::{AWS_POLL, ExecError, Executor};
use crate::rollout::informer::Informer;
use crate::rollout::machine::{Capacity, Rollout, RolloutSpec, StableRef};
use crate::rollout::plan::now_ms;
use crate::rollout::store::Store;
use crate::shutdown::Shutdown;

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
    /// Approvals from Slack (`[coordinator.slack_app]`) could not be set up.
    #[error("cannot set up approvals from Slack: {0}")]
    Chatops(#[from] crate::chatops::ChatopsError),
    /// The console (`[http]`) could not start.
    #[error("cannot start the console: {0}")]
    Console(#[from] crate::console::ServerError),
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
    let client = Client::new(&config.consul)
        .map_err(CoordinatorError::Consul)?
        .for_role("coordinator");
    let prefix = config.consul.kv_prefix.trim_end_matches('/').to_string();
    let store = Store::new(client.clone(), &prefix);
    let mut receivers = Receivers::from_config(&config.notify)?
        .with_links(crate::notify::Links::new(&config.http.public_url));
    // Approvals from Slack: its receiver's messages carry buttons.
    crate::chatops::ChatOps::show_buttons(config, &mut receivers)?;
    let chatops = crate::chatops::ChatOps::from_config(config)?.map(Arc::new);
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
    // The console (API, /metrics) runs on every replica, leader or not.
    let console = crate::console::start_beside_coordinator(
        config,
        &client,
        &name,
        shutdown.requested.clone(),
    )
    .await?;
    // The lock's session depends on this replica's liveness check (unless
    // turned off), registered before the first session is created.
    let alive = if c.leader_check_ttl.is_zero() {
        None
    } else {
        Some(liveness::Liveness::start(client.clone(), &name, c.leader_check_ttl).await)
    };
    let lock = LeaderLock::new(
        client.clone(),
        LockConfig {
            ttl: c.lock_ttl,
            lock_delay: c.lock_delay,
            checks: alive.iter().map(|a| a.check_id().to_string()).collect(),
            ..LockConfig::new(store.leader_key(), name.clone())
        },
    );
    tracing::info!(replica = %name, services = config.services.len(), "Coordinator starting; contending for leadership.");
    let cancel = shutdown.requested.clone();
    let led = run_while_leading(Some(&lock), "coordinator", &cancel, |cx, round| {
        let Some(fence) = cx.fence else {
            return;
        };
        // Every KV write of this round is fenced by the lock, atomically.
        let store = store.fenced(fence.clone());
        crate::alerting::spawn_round(round, &cx, config, &client, &outbox, &receivers);
        if let Some(chatops) = &chatops {
            round.spawn(
                "slack approvals",
                chatops.clone().run(store.clone(), cx.cancel.clone()),
            );
        }
        // One AWS informer for every rollout of this round: one read a
        // poll interval serves all the groups being rolled out.
        let informer = Arc::new(Informer::new(fleet.clone(), AWS_POLL));
        round.spawn("aws informer", {
            let informer = Arc::clone(&informer);
            async move { informer.run().await }
        });
        // One proof of the lock for every rollout of this round: a check
        // made by one drive serves the others for half the lock-delay.
        let leader = Arc::new(FenceProof::new(
            fence.clone(),
            c.lock_delay,
            cx.cancel.clone(),
        ));
        for service in &config.services {
            let planning = ServiceLoop {
                service: service.clone(),
                fleet: fleet.clone(),
                registry: registry.clone(),
                store: store.clone(),
                outbox: outbox.clone(),
                fence: fence.clone(),
                poll: c.registry_poll,
                wait: config.consul.max_wait,
            };
            let rollouts = RolloutLoop {
                service: service.name.clone(),
                fleet: fleet.clone(),
                informer: Arc::clone(&informer),
                store: store.clone(),
                outbox: outbox.clone(),
                leader: Arc::clone(&leader),
                wait: config.consul.max_wait,
            };
            round.spawn("planning loop", planning.run(cx.cancel.clone()));
            round.spawn("rollout loop", rollouts.run(cx.cancel.clone()));
        }
    })
    .await;
    // The lock is released (or was never held) by now: deregistering the
    // check cannot invalidate a session holding it.
    if let Some(alive) = alive {
        alive.stop().await;
    }
    crate::console::stopped(console).await;
    led.map_err(CoordinatorError::Lock)?;
    tracing::info!("Coordinator stopped.");
    Ok(())
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

/// One answer of a key watch.
type KeyAnswer = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<Response<Option<u64>>, crate::consul::Error>>
            + Send,
    >,
>;

impl<F, R> ServiceLoop<F, R>
where
    F: Fleet + 'static,
    R: Registry + 'static,
{
    /// A watch of one KV key's modify index.
    fn watch_key(
        &self,
        what: &str,
        key: String,
    ) -> Watch<Option<u64>, impl FnMut(QueryOptions) -> KeyAnswer + Send + 'static> {
        let client = self.store.client().clone();
        Watch::new(
            format!("{what} {key}"),
            WatchConfig {
                wait: self.wait,
                ..WatchConfig::default()
            },
            move |opts: QueryOptions| -> KeyAnswer {
                let client = client.clone();
                let key = key.clone();
                Box::pin(async move {
                    let r = client.kv_get(&key, &opts).await?;
                    Ok(Response {
                        value: r.value.map(|kv| kv.modify_index),
                        meta: r.meta,
                    })
                })
            },
        )
    }

    async fn run(self, cancel: CancellationToken) {
        let mut triggers = self
            .watch_key("trigger", self.store.trigger_key(&self.service.artifact))
            .spawn(cancel.clone());
        // A plan stored by an operator's command (rollback, publish --force)
        // moves the plan counter: a round then announces it at once.
        let mut stored = self
            .watch_key("plan counter", self.store.seq_key(&self.service.name))
            .spawn(cancel.clone());
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
                changed = stored.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    tracing::debug!(service = %self.service.name, "A plan was stored.");
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

/// One service's rollout loop while leading.
struct RolloutLoop<F> {
    service: String,
    fleet: Arc<F>,
    informer: Arc<Informer<F>>,
    store: Store,
    outbox: Outbox,
    leader: Arc<FenceProof>,
    wait: Duration,
}

impl<F: Fleet + 'static> RolloutLoop<F> {
    async fn run(self, cancel: CancellationToken) {
        let mut failures = 0u32;
        loop {
            if cancel.is_cancelled() {
                return;
            }
            let active = match self.start_or_resume().await {
                Ok(active) => active,
                // Not leading any more: end this task (and so the round);
                // the leading loop contends again.
                Err(ExecError::NotLeader) => return,
                Err(e) => {
                    failures += 1;
                    let pause = backoff(failures, Duration::from_secs(1), Duration::from_secs(30));
                    tracing::warn!(service = %self.service, error = %e, retry_in = ?pause,
                        "Cannot start the rollout; retrying.");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    continue;
                }
            };
            if !active {
                // Nothing approved: wait for a plan record to change.
                let key = format!("{}/", self.store.plans_prefix(&self.service));
                let index = self
                    .store
                    .client()
                    .kv_list(&key, &QueryOptions::default())
                    .await
                    .map(|r| r.meta.index)
                    .unwrap_or(1);
                let opts = QueryOptions::blocking(index.max(1), self.wait);
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = self.store.client().kv_list(&key, &opts) => {}
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
                continue;
            }
            let executor = Executor {
                fleet: self.fleet.as_ref(),
                store: &self.store,
                outbox: &self.outbox,
                leader: &self.leader,
                informer: &self.informer,
                wait: self.wait,
            };
            match executor.drive(&self.service, &cancel).await {
                Ok(_) => failures = 0,
                Err(ExecError::NotLeader) => return,
                Err(e) => {
                    failures += 1;
                    let pause = backoff(
                        failures,
                        Duration::from_millis(500),
                        Duration::from_secs(30),
                    );
                    tracing::warn!(service = %self.service, error = %e, retry_in = ?pause,
                        "Rollout step failed; observing again.");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }

    /// Whether a rollout is active (resumed from KV, or started from the
    /// oldest approved plan).
    async fn start_or_resume(&self) -> Result<bool, ExecError> {
        if self.store.rollout(&self.service).await?.is_some() {
            return Ok(true);
        }
        let plans = self.store.plans(&self.service).await?;
        let Some((plan, _)) = plans.into_iter().find(|(p, _)| p.is_open_approved()) else {
            return Ok(false);
        };
        // No AWS call from a replica that no longer leads (the write below
        // is fenced anyway; this keeps a deposed leader from even reading).
        if !self.leader.verify(self.store.client()).await? {
            return Err(ExecError::NotLeader);
        }
        let group = self.fleet.describe_group(&plan.group).await?;
        let stable = match self.store.stable(&self.service).await? {
            Some(s) => s,
            None => StableRef {
                template_version: plan.current_template_version,
                image: plan.current.image_id.clone(),
                version: plan.current.version.clone(),
            },
        };
        let spec = RolloutSpec {
            id: plan.id.clone(),
            service: plan.service.clone(),
            change: plan.change.clone(),
            group: plan.group.clone(),
            launch_template_id: plan.launch_template_id.clone(),
            target_image: plan.target.image_id.clone(),
            target_version: plan.target.version.clone(),
            target_template_version: None,
            base_template_version: plan.base_template_version,
            stable,
            params: plan.params.clone(),
            original: Capacity {
                min: group.min_size,
                max: group.max_size,
                desired: group.desired_capacity,
            },
            instances_to_replace: plan.to_replace().map(|i| i.instance_id.clone()).collect(),
        };
        // Fenced: a replica that lost the lock gets NotLeader here, and a
        // rollout another leader started first wins (`None`): both end in
        // resuming whatever KV holds.
        if self
            .store
            .save_rollout(&Rollout::new(spec), 0)
            .await?
            .is_some()
        {
            tracing::info!(service = %self.service, plan = %plan.id, target = %plan.target.image_id,
                "Rollout started.");
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use sandbox::consul::{Config as ServerConfig, Server};

    use super::*;
    use crate::aws::memory::MemoryFleet;
    use crate::config::ConsulConfig;
    use crate::rollout::plan::Plan;

    const PLAN: &str = include_str!("../rollout/store/testdata/plan_v1.json");

    #[tokio::test]
    async fn a_lost_fence_stops_the_rollout_loop_without_any_aws_call() {
        let consul = Server::start(ServerConfig::default()).await.unwrap();
        let client = Client::new(&ConsulConfig {
            address: format!("http://{}", consul.http_addr()),
            ..ConsulConfig::default()
        })
        .unwrap();
        let store = Store::new(client.clone(), "rollgate");
        // An approved plan waiting for its rollout.
        let mut plan: Plan = crate::consul::records::decode("k", PLAN.as_bytes()).unwrap();
        plan.outcome = None;
        assert!(store.create_plan(&plan).await.unwrap());
        // A fence this replica does not hold (no such session on the key).
        let fence = Fence {
            key: store.leader_key(),
            session: "00000000-0000-0000-0000-00000000dead".into(),
            lock_index: 1,
        };
        let fleet = Arc::new(MemoryFleet::new());
        let rollouts = RolloutLoop {
            service: "web".into(),
            fleet: fleet.clone(),
            informer: Arc::new(Informer::new(fleet.clone(), AWS_POLL)),
            store: store.fenced(fence.clone()),
            outbox: Outbox::new(client, "rollgate", &Default::default()),
            leader: Arc::new(FenceProof::new(
                fence,
                Duration::from_secs(2),
                CancellationToken::new(),
            )),
            wait: Duration::from_secs(1),
        };
        let cancel = CancellationToken::new();
        let run = tokio::time::timeout(Duration::from_secs(10), rollouts.run(cancel.clone())).await;
        assert!(run.is_ok(), "the loop returns instead of spinning");
        assert!(
            fleet.calls().is_empty(),
            "no AWS call without the lock: {:?}",
            fleet.calls()
        );
        assert!(
            store.rollout("web").await.unwrap().is_none(),
            "nothing written"
        );
        consul.shutdown().await;
    }
}
