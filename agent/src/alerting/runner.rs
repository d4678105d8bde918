//! The watcher's I/O loop: one blocking query on `/v1/health/state/any`
//! (through [`crate::consul::watch::Watch`]), a periodic leader probe, the
//! pure [`engine`](super::engine) and [`meta`](super::meta) steps, and the
//! commit: events into the outbox first (dedup keys make that idempotent),
//! then the state with `cas`. A crash between the two re-runs the step from
//! the old state: nothing is forgotten, and events of groups that already
//! existed get the same keys, so they are not sent twice. A group the lost
//! step opened is opened again with a new `since` (its key holds the time),
//! so its first notice can be sent twice; keying new groups on the Consul
//! index of the answer that opened them would close that window.
//!
//! When Consul is unreachable, meta-alerts cannot go through the outbox
//! (it lives in Consul): they are sent directly, with retries in memory.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::config::WatcherConfig;
use super::diff::{CheckKey, Decoder, Snapshot};
use super::engine::{self, State};
use super::meta::{self, MetaState, Progress};
use super::store::{StateStore, StoreError};
use crate::consul::watch::{Watch, WatchConfig, backoff};
use crate::consul::{Client, QueryOptions};
use crate::notify::route::Router;
use crate::notify::{Event, Outbox, Receivers, now_ms};

/// Direct delivery for events that cannot be enqueued.
#[derive(Debug, Clone)]
pub struct Direct {
    /// The notifiers.
    pub receivers: Receivers,
    /// The routes.
    pub router: Router,
    /// Time limit of one attempt.
    pub send_timeout: Duration,
}

/// The health watcher.
#[derive(Debug)]
pub struct Watcher {
    /// Consul client.
    client: Client,
    /// `[watch]`.
    config: WatcherConfig,
    /// `wait` of the blocking query (`consul.max_wait`).
    wait: Duration,
    /// Where the state lives.
    store: StateStore,
    /// Where events go.
    outbox: Outbox,
    /// Where events go when the outbox cannot be written.
    direct: Option<Direct>,
}

impl Watcher {
    /// A watcher keeping its state under `<kv_prefix>/watch/`.
    pub fn new(
        client: Client,
        config: WatcherConfig,
        kv_prefix: &str,
        wait: Duration,
        outbox: Outbox,
        direct: Option<Direct>,
    ) -> Self {
        Self {
            store: StateStore::new(client.clone(), kv_prefix),
            client,
            config,
            wait,
            outbox,
            direct,
        }
    }

    /// Writes the state under the leader lock's fence (in the same
    /// transaction as each write), so a deposed watcher cannot overwrite it.
    pub fn fenced(mut self, fence: Option<crate::consul::lock::Fence>) -> Self {
        self.store.fence(fence);
        self
    }

    /// Watches until `cancel` fires. Never gives up on Consul errors: it
    /// logs them, raises meta-alerts, and keeps trying.
    pub async fn run(self, cancel: CancellationToken) {
        let progress = Arc::new(Mutex::new(Progress {
            started_ms: now_ms(),
            ..Progress::default()
        }));
        let child = cancel.child_token();
        let mut rx = self.health_watch(progress.clone()).spawn(child.clone());
        tokio::spawn(leader_probe(
            self.client.clone(),
            self.config.leader_check_interval,
            progress.clone(),
            child.clone(),
        ));
        let (mut state, mut index) = self.load(&cancel).await;
        let mut meta_state = MetaState::default();
        let mut snapshot: Option<Arc<Snapshot>> = None;
        let mut failures = 0u32;
        // A step whose commit failed (Consul unreachable, say): committed
        // again as it is, so its events keep their dedup keys; recomputing
        // it later would give new groups a new `since`, so new keys, and
        // the same alerts would be sent twice.
        let mut pending: Option<(Vec<crate::notify::Event>, State)> = None;
        tracing::info!(key = %self.store.key(), "Health watcher started.");
        while !cancel.is_cancelled() {
            if let Some(resp) = rx.borrow_and_update().clone() {
                let snap = resp.value.clone();
                if snap.partial {
                    let hidden = hidden_services(&state, snapshot.as_deref(), &snap);
                    tracing::error!(services = %hidden,
                        "Consul filtered the health answer (X-Consul-Results-Filtered-By-ACLs): this token cannot read some services or nodes; their checks are neither resolved nor fired. Grant service:read and node:read (config/acl/watcher.hcl).");
                    lock(&progress).hidden = hidden;
                }
                if snap.skipped > 0 {
                    tracing::warn!(
                        skipped = snap.skipped,
                        "Health answer has checks without a node or check ID; ignoring them."
                    );
                }
                snapshot = Some(snap);
            }
            let now = now_ms();
            let mut wake: Option<u64> = None;
            if let Some(snap) = &snapshot {
                let (events, next) = match pending.take() {
                    Some((events, next)) => {
                        // Step again with the latest snapshot right after.
                        wake = Some(now);
                        (events, next)
                    }
                    None => {
                        let step = engine::step(&self.config, state.clone(), snap, now);
                        for t in &step.transitions {
                            log_transition(&t.key, t.from, t.to);
                        }
                        wake = step.next_wake;
                        (step.events, step.state)
                    }
                };
                if next != state || !events.is_empty() {
                    match self.commit(&events, &next, index).await {
                        Ok(i) => {
                            state = next;
                            index = i;
                            failures = 0;
                        }
                        Err(e) => {
                            failures += 1;
                            let retry = backoff(
                                failures,
                                Duration::from_millis(200),
                                Duration::from_secs(30),
                            );
                            tracing::warn!(error = %e, retry_in = ?retry, "Cannot commit the watcher's step; retrying.");
                            if matches!(e, CommitError::Store(StoreError::Conflict { .. })) {
                                (state, index) = self.load(&cancel).await;
                            } else {
                                pending = Some((events, next));
                            }
                            wake = Some(now + retry.as_millis() as u64);
                        }
                    }
                }
            }
            let p = lock(&progress).clone();
            let (events, meta_wake) = meta::evaluate(&self.config, &mut meta_state, &p, now);
            for e in events {
                tracing::warn!(event = %e.key, "Watcher meta-alert.");
                self.enqueue_or_send(e, &cancel).await;
            }
            let wake = [wake, meta_wake].into_iter().flatten().min();
            let sleep = wake.map(|w| Duration::from_millis(w.saturating_sub(now_ms()).max(10)));
            tokio::select! {
                _ = cancel.cancelled() => break,
                changed = rx.changed() => if changed.is_err() { break },
                _ = async { match sleep { Some(d) => tokio::time::sleep(d).await, None => std::future::pending().await } } => {}
            }
        }
        child.cancel();
        tracing::info!("Health watcher stopped.");
    }

    fn health_watch(
        &self,
        progress: Arc<Mutex<Progress>>,
    ) -> Watch<
        Arc<Snapshot>,
        impl FnMut(QueryOptions) -> futures::future::BoxFuture<'static, HealthResult> + Send + 'static,
    > {
        let client = self.client.clone();
        let config = WatchConfig {
            wait: self.wait,
            ..WatchConfig::default()
        };
        // Shared by the reads (one at a time): only the entries whose text
        // changed since the previous answer are parsed.
        let decoder = Arc::new(Mutex::new(Decoder::default()));
        Watch::new("health", config, move |opts: QueryOptions| {
            let client = client.clone();
            let progress = progress.clone();
            let decoder = decoder.clone();
            Box::pin(async move {
                // Decoded straight into a snapshot (no list of every
                // check, no copies): the answer is the cluster's every
                // check, tens of thousands in a large one. The watch keeps
                // the last one by `Arc` and compares by value (mostly
                // pointers: unchanged entries are shared).
                let r = client
                    .read_with(HEALTH_STATE_ANY, &[], &opts, |json| {
                        lock(&decoder).decode(json)
                    })
                    .await;
                let mut r = r;
                if let Ok(resp) = &mut r {
                    if resp.meta.filtered_by_acls {
                        std::sync::Arc::make_mut(&mut resp.value).partial = true;
                    }
                }
                let mut p = lock(&progress);
                match &r {
                    Ok(resp) => {
                        p.answered(now_ms(), resp.meta.known_leader);
                        p.filtered(now_ms(), resp.meta.filtered_by_acls);
                    }
                    Err(e) => p.failed(now_ms(), e.to_string()),
                }
                r
            }) as futures::future::BoxFuture<'static, HealthResult>
        })
    }

    async fn load(&self, cancel: &CancellationToken) -> (State, u64) {
        let mut failures = 0;
        loop {
            match self.store.load().await {
                Ok(s) => return s,
                Err(e) => {
                    failures += 1;
                    let retry = backoff(
                        failures,
                        Duration::from_millis(250),
                        Duration::from_secs(30),
                    );
                    tracing::warn!(error = %e, retry_in = ?retry, "Cannot load the watcher state; retrying.");
                    tokio::select! {
                        _ = cancel.cancelled() => return (State::default(), 0),
                        _ = tokio::time::sleep(retry) => {}
                    }
                }
            }
        }
    }

    /// Enqueues `events`, then saves `state` with `cas`.
    async fn commit(
        &self,
        events: &[Event],
        state: &State,
        index: u64,
    ) -> Result<u64, CommitError> {
        for e in events {
            tracing::info!(event = %e.key, title = %crate::notify::render::title(e), "Health notice.");
        }
        // Independent writes (each entry has its own key): a few at a time,
        // not one round trip after another. All must succeed before the
        // state is saved.
        let mut writes = futures::stream::iter(events.iter().cloned())
            .map(|e| self.outbox.enqueue(e))
            .buffer_unordered(ENQUEUE_CONCURRENCY);
        while let Some(r) = writes.next().await {
            r?;
        }
        Ok(self.store.save(state, index).await?)
    }

    async fn enqueue_or_send(&self, e: Event, cancel: &CancellationToken) {
        let err = match self.outbox.enqueue(e.clone()).await {
            Ok(_) => return,
            Err(err) => err,
        };
        let Some(direct) = self.direct.clone() else {
            tracing::error!(event = %e.key, error = %err, "Cannot enqueue a meta-alert and no direct delivery is set up.");
            return;
        };
        tracing::warn!(event = %e.key, error = %err, "Cannot enqueue a meta-alert; sending it directly.");
        let cancel = cancel.clone();
        tokio::spawn(async move {
            for r in direct.router.route(&e) {
                for attempt in 1..=10u32 {
                    match direct.receivers.send(&r, &e, direct.send_timeout).await {
                        Ok(()) => {
                            tracing::info!(event = %e.key, receiver = %r, "Meta-alert delivered directly.");
                            break;
                        }
                        Err(err) => {
                            let retry =
                                backoff(attempt, Duration::from_secs(1), Duration::from_secs(60));
                            tracing::warn!(event = %e.key, receiver = %r, error = %err, attempt,
                                "Direct delivery failed.");
                            tokio::select! {
                                _ = cancel.cancelled() => return,
                                _ = tokio::time::sleep(retry) => {}
                            }
                        }
                    }
                }
            }
        });
    }
}

type HealthResult = Result<crate::consul::Response<Arc<Snapshot>>, crate::consul::Error>;

/// Outbox writes in flight at once when a step has many events.
const ENQUEUE_CONCURRENCY: usize = 8;

/// What the watcher reads: every check of the cluster
/// (`GET /v1/health/state/any`).
const HEALTH_STATE_ANY: &str = "/v1/health/state/any";

/// A step could not be committed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// An event could not be enqueued (the state is not saved then).
    #[error(transparent)]
    Outbox(#[from] crate::notify::OutboxError),
    /// The state could not be saved.
    #[error(transparent)]
    Store(#[from] StoreError),
}

async fn leader_probe(
    client: Client,
    every: Duration,
    progress: Arc<Mutex<Progress>>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Ok(leader) = client.status_leader().await {
            lock(&progress).leader(now_ms(), &leader);
        }
    }
}

fn log_transition(
    key: &CheckKey,
    from: Option<crate::consul::types::CheckStatus>,
    to: Option<crate::consul::types::CheckStatus>,
) {
    crate::console::metrics::watch_transition(from, to);
    let word =
        |s: Option<crate::consul::types::CheckStatus>| s.map(|s| s.as_str()).unwrap_or("absent");
    tracing::info!(node = %key.node, check = %key.check_id, from = word(from), to = word(to),
        "Check status changed.");
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The services a filtered answer hides: those of tracked checks (or of
/// checks of the previous answer) that it no longer shows.
fn hidden_services(state: &State, previous: Option<&Snapshot>, now: &Snapshot) -> String {
    let mut names = std::collections::BTreeSet::new();
    for k in state.checks.keys() {
        if now.contains(k) {
            continue;
        }
        // The service a hidden check belongs to: from the last answer that
        // showed it, else from the notice that reported it (after a restart
        // the previous answer is gone, the state is not).
        let notified = state
            .groups
            .values()
            .find_map(|g| g.notified.get(k))
            .map(|c| c.service_name.as_str());
        let service = previous
            .and_then(|p| p.get(k))
            .map(|o| &*o.service_name)
            .or(notified)
            .filter(|s| !s.is_empty());
        match service {
            Some(s) => names.insert(s.to_owned()),
            None => names.insert(format!("checks of node {}", k.node)),
        };
    }
    if let Some(p) = previous {
        for (node, id, o) in p.iter() {
            if !now.contains(&super::diff::CheckKey::new(node, id)) && !o.service_name.is_empty() {
                names.insert(o.service_name.to_string());
            }
        }
    }
    if names.is_empty() {
        "services this token may not list (none seen before)".to_owned()
    } else {
        names.into_iter().collect::<Vec<_>>().join(", ")
    }
}
