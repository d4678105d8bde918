//! The Consul half of the executor's observation, followed in the
//! background.
//!
//! The [`Follower`] holds two blocking queries open for one service: its
//! health (`/v1/health/service/:service`) and its pending operator commands
//! (the commands prefix in KV). Each answer that changes something is kept
//! with the moment it arrived, and wakes the executor. A step therefore
//! reads Consul from memory: the gate's reaction is the step, the fence
//! check and the AWS call, not two or three Consul round trips after the
//! timer fires; and a health change that arrives while the executor waits
//! for an AWS read is dated when it arrived (`Observation::health_read_at`),
//! so `min_healthy_time` is not lengthened by that wait.
//!
//! A view held in memory is not trusted blindly. Each view carries the
//! moment Consul last confirmed it ([`HealthView::confirmed`]): the
//! arrival of its blocking answer, or the sending of a plain read
//! ([`Follower::current`]) that found Consul still at its index
//! ([`Follower::offer`]). The executor acts only on a view confirmed
//! within [`CONFIRMED_FOR`]; an older one it checks with a plain read
//! first, beside its check of the leader lock, and if Consul has moved
//! past the view (a change still on its way, or a blocking query stuck on
//! a dead connection) it steps again on what Consul answers now instead of
//! acting. Before a deadline it knows of (the gate's `min_healthy_time`),
//! it reads ahead of time, so the gate acts on a view confirmed a moment
//! before without a round trip on its path. What no read can close
//! remains: a change committed between the last confirmation and the
//! action, which the blocking query, open all along, reports
//! milliseconds later.
//!
//! A failed read is never hidden behind an older view (as in the
//! [`Informer`](super::informer::Informer)): the next [`Follower::view`]
//! answers the error, and the executor ends the drive as after any failed
//! tick (the next drive follows afresh). A health answer Consul filtered by
//! ACLs is such an error: missing instances would read as "not
//! registered".
//!
//! It only reads, but for one write it inherits from
//! [`Store::commands`]: a command it cannot decode is deleted.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::executor::ExecError;
use super::machine::{Health, OperatorCommand, Timestamp};
use super::plan::now_ms;
use super::store::Store;
use crate::consul::types::ServiceEntry;
use crate::consul::watch::{Watch, WatchConfig, backoff};
use crate::consul::{QueryOptions, Response};

/// The service's health as Consul last answered it.
#[derive(Debug)]
pub struct HealthView {
    /// Health per EC2 instance ([`super::health::health_by_instance`]).
    pub by_instance: BTreeMap<String, Health>,
    /// When the answer that made it so arrived (wall clock).
    pub at: Timestamp,
    /// Its `X-Consul-Index`.
    pub index: u64,
    /// When Consul last answered this index: the sending of a plain read;
    /// for a blocking answer, its arrival (later than Consul's answer by
    /// the transit, a millisecond or so: the only moment known).
    pub confirmed: Instant,
}

/// How long after its last confirmation a view is acted on without
/// reading Consul again (see the module documentation): a quarter of a
/// second, against the minutes a dead connection can go unnoticed.
pub const CONFIRMED_FOR: Duration = Duration::from_millis(250);

/// How long the commands' blocking query waits after an answer that
/// changed nothing (see `Follower::follow_commands`): an operator's command
/// is obeyed that much later at most.
const COMMANDS_SETTLE: Duration = Duration::from_millis(250);

/// The service's pending operator commands: key, ModifyIndex, command.
pub type Commands = Vec<(String, u64, OperatorCommand)>;

/// What the follower holds; `None` before the first answer.
#[derive(Debug, Default)]
struct Latest {
    health: Option<Arc<HealthView>>,
    commands: Option<Arc<Commands>>,
    /// A failed read, until the executor has been told.
    error: Option<ExecError>,
}

/// Follows one service's health and commands; see the module documentation.
#[derive(Debug)]
pub struct Follower<'a> {
    store: &'a Store,
    service: String,
    wait: Duration,
    latest: Mutex<Latest>,
    /// Bumped after every change (or failure).
    changes: watch::Sender<u64>,
}

impl<'a> Follower<'a> {
    /// A follower of `service`, whose blocking queries wait up to `wait`,
    /// once [`Follower::run`] runs.
    pub fn new(store: &'a Store, service: &str, wait: Duration) -> Self {
        Self {
            store,
            service: service.to_owned(),
            wait,
            latest: Mutex::new(Latest::default()),
            changes: watch::Sender::new(0),
        }
    }

    /// Follows health and commands; never returns (drop it to stop).
    pub async fn run(&self) {
        tokio::join!(self.follow_health(), self.follow_commands());
    }

    /// The latest health and commands, waiting for the first answers; a
    /// failed read is answered once, as the error it was.
    pub async fn view(&self) -> Result<(Arc<HealthView>, Arc<Commands>), ExecError> {
        loop {
            let mut changes = self.changes.subscribe();
            {
                let mut latest = self.lock();
                if let Some(e) = latest.error.take() {
                    return Err(e);
                }
                if let (Some(h), Some(c)) = (&latest.health, &latest.commands) {
                    return Ok((Arc::clone(h), Arc::clone(c)));
                }
            }
            // The sender lives as long as `self`.
            let _ = changes.changed().await;
        }
    }

    /// How many changes (and failures) it has seen: what a later
    /// [`Follower::changed_since`] compares with.
    pub fn changes(&self) -> u64 {
        *self.changes.borrow()
    }

    /// The service's health in Consul now (a plain read, not blocking),
    /// confirmed when the read was sent.
    pub async fn current(&self) -> Result<HealthView, ExecError> {
        let sent = Instant::now();
        let resp = self
            .store
            .client()
            .health_service(&self.service, false, None, &QueryOptions::default())
            .await?;
        self.health_view(&resp, sent)
    }

    /// Until when the held view may be acted on without reading Consul
    /// again ([`CONFIRMED_FOR`] after its confirmation), if it is still at
    /// `index`: a view that moved on since the step that read it has not.
    pub fn confirmed_until(&self, index: u64) -> Option<Instant> {
        let latest = self.lock();
        let held = latest.health.as_ref()?;
        (held.index == index && latest.error.is_none()).then(|| held.confirmed + CONFIRMED_FOR)
    }

    /// A health answer as the view the executor reads, dated now and
    /// confirmed at `confirmed`; one Consul filtered by ACLs is an error
    /// (missing instances would read as "not registered").
    fn health_view(
        &self,
        resp: &Response<Vec<ServiceEntry>>,
        confirmed: Instant,
    ) -> Result<HealthView, ExecError> {
        if resp.meta.filtered_by_acls {
            return Err(ExecError::HiddenByAcls {
                service: self.service.clone(),
            });
        }
        Ok(HealthView {
            by_instance: super::health::health_by_instance(&resp.value),
            at: Timestamp(now_ms()),
            index: resp.meta.index,
            confirmed,
        })
    }

    /// Takes `view` (from [`Follower::current`]) as the latest health when
    /// it is newer than the one held: the blocking query's answer is on
    /// its way, or stuck on a dead connection. One at the held view's index
    /// confirms the held view (no change: nothing wakes); an older one is
    /// ignored.
    ///
    /// Consul moves a service's index without changing what it answers
    /// (the blocking query then answers nothing new: [`Watch`] passes on
    /// changes only), so an offer showing the same health keeps the time
    /// the held view arrived.
    pub fn offer(&self, mut view: HealthView) {
        {
            let mut latest = self.lock();
            if let Some(held) = &latest.health {
                if view.index < held.index {
                    return;
                }
                if view.index == held.index {
                    if view.confirmed > held.confirmed {
                        let confirmed = HealthView {
                            by_instance: held.by_instance.clone(),
                            confirmed: view.confirmed,
                            ..**held
                        };
                        latest.health = Some(Arc::new(confirmed));
                    }
                    return;
                }
                if view.by_instance == held.by_instance {
                    view.at = held.at;
                }
            }
        }
        self.publish(|l| l.health = Some(Arc::new(view)));
    }

    /// Resolves once a change (or failure) follows the count `seen`; at
    /// once if one already did.
    pub async fn changed_since(&self, seen: u64) {
        let mut changes = self.changes.subscribe();
        // The sender lives as long as `self`.
        let _ = changes.wait_for(|n| *n != seen).await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Latest> {
        self.latest.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, update: impl FnOnce(&mut Latest)) {
        update(&mut self.lock());
        self.changes.send_modify(|n| *n += 1);
    }

    async fn follow_health(&self) {
        let client = self.store.client();
        let service = self.service.as_str();
        let config = WatchConfig {
            wait: self.wait,
            // Fifty instances coming up at once change health dozens of
            // times a second; every change matters to the gate.
            rate_per_sec: 200.0,
            burst: 50,
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(5),
            ..WatchConfig::default()
        };
        let mut health = Watch::new(format!("health of {service}"), config, |opts| async move {
            client.health_service(service, false, None, &opts).await
        });
        loop {
            let view = match health.next().await {
                Ok(resp) => self.health_view(&resp, Instant::now()),
                // The watch waits its back-off before the next attempt.
                Err(e) => Err(ExecError::Consul(e.source)),
            };
            match view {
                Ok(view) => self.publish(|l| l.health = Some(Arc::new(view))),
                Err(e) => self.publish(|l| l.error = Some(e)),
            }
        }
    }

    /// One blocking query a change: its answer is the commands. A
    /// commands prefix is mostly empty, and for an empty prefix Consul
    /// answers the whole KV store's index, so any KV write anywhere (the
    /// rollout records of every service) wakes it; after an answer that
    /// changed nothing it waits [`COMMANDS_SETTLE`] before asking again,
    /// so a coordinator with many services does not multiply its KV
    /// writes into Consul requests.
    async fn follow_commands(&self) {
        let mut failures = 0u32;
        let mut last: Option<Commands> = None;
        let mut index = 0u64;
        loop {
            let opts = if last.is_none() {
                QueryOptions::default()
            } else {
                // Never block on an index below 1 (see consul::watch).
                QueryOptions::blocking(index.max(1), self.wait)
            };
            match self.store.commands_with(&self.service, &opts).await {
                Ok((commands, at)) => {
                    failures = 0;
                    // An index going backwards (a restore) starts over.
                    index = if at < index { 0 } else { at };
                    if last.as_ref() == Some(&commands) {
                        tokio::time::sleep(COMMANDS_SETTLE).await;
                    } else {
                        last = Some(commands.clone());
                        self.publish(|l| l.commands = Some(Arc::new(commands)));
                    }
                }
                Err(e) => {
                    failures += 1;
                    self.publish(|l| l.error = Some(ExecError::from(e)));
                    let pause =
                        backoff(failures, Duration::from_millis(250), Duration::from_secs(5));
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}
