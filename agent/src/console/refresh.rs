//! Brings the state metrics up to date from Consul, with the coordinator's
//! own token (`/metrics` has no caller): on every scrape, and after every
//! change under `<prefix>/services/` (a blocking query), so a batch's gate
//! reactions are seen even when no scrape falls inside the batch.
//!
//! A failed read leaves the previous figures in place and is logged at
//! debug level: `/metrics` answers whatever Consul does.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::metrics::ServiceState;
use super::server::Shared;
use super::views::{ReceiverCounts, delivery_state};
use crate::consul::QueryOptions;
use crate::consul::watch::backoff;
use crate::notify::outbox::Outbox;
use crate::rollout::plan::{Plan, now_ms};
use crate::rollout::store::Store;

/// Refreshes every state figure once.
pub async fn refresh(state: &Shared) {
    let store = Store::new(state.client.clone(), &state.prefix);
    leader(state, &store).await;
    for service in &state.services {
        if let Err(e) = refresh_service(state, &store, &service.name).await {
            tracing::debug!(service = %service.name, error = %e, "Cannot refresh the service's metrics.");
        }
    }
    let outbox = Outbox::new(state.client.clone(), &state.prefix, &Default::default());
    match outbox.list().await {
        Ok(entries) => {
            let mut per: BTreeMap<String, ReceiverCounts> = state
                .receivers
                .iter()
                .map(|r| (r.clone(), ReceiverCounts::default()))
                .collect();
            let mut depth = 0i64;
            for (_, _, entry) in entries {
                let Ok(entry) = entry else { continue };
                if entry.done_ms.is_none() {
                    depth += 1;
                }
                for (receiver, d) in &entry.deliveries {
                    // Only configured receivers: a label per name in the
                    // configuration, never one per stray record.
                    if let Some(c) = per.get_mut(receiver) {
                        c.count(delivery_state(d));
                    }
                }
            }
            let per = per.into_iter().map(|(k, v)| (k, v.as_array())).collect();
            state.metrics.observe_outbox(depth, &per);
        }
        Err(e) => tracing::debug!(error = %e, "Cannot refresh the outbox metrics."),
    }
}

/// Whether this process holds the leader lock: the lock's value names the
/// holder replica and its process ID.
async fn leader(state: &Shared, store: &Store) {
    let key = store.leader_key();
    let leading = match state.client.kv_get(&key, &QueryOptions::default()).await {
        Ok(r) => r.value.is_some_and(|kv| {
            kv.session.is_some()
                && kv
                    .value()
                    .ok()
                    .and_then(|v| serde_json::from_slice::<serde_json::Value>(&v).ok())
                    .is_some_and(|v| {
                        v["holder"] == state.replica.as_str()
                            && v["pid"] == u64::from(std::process::id())
                    })
        }),
        Err(e) => {
            tracing::debug!(error = %e, "Cannot read the leader lock for the metrics.");
            return;
        }
    };
    state.metrics.set_leader(leading);
}

async fn refresh_service(
    state: &Shared,
    store: &Store,
    service: &str,
) -> Result<(), crate::rollout::store::StoreError> {
    let plans: Vec<Plan> = store
        .plans(service)
        .await?
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let rollout = store.rollout(service).await?.map(|(r, _)| r);
    let health = state
        .client
        .health_service(service, false, None, &QueryOptions::default())
        .await?
        .value;
    // New: the active rollout's target image, else the last success's.
    let target = rollout
        .as_ref()
        .map(|r| r.spec.target_image.clone())
        .or_else(|| {
            plans
                .iter()
                .rev()
                .find(|p| p.outcome.as_ref().is_some_and(|o| o.is_success()))
                .map(|p| p.target.image_id.clone())
        })
        .unwrap_or_default();
    let (mut old, mut new) = ((0, 0), (0, 0));
    for e in &health {
        let image = e
            .service
            .meta
            .as_ref()
            .and_then(|m| m.get("ami_id").cloned())
            .unwrap_or_default();
        let passing = !e.checks.is_empty()
            && e.checks.iter().all(|c| {
                c.status
                    .is_some_and(|s| s == crate::consul::types::CheckStatus::Passing)
            });
        let slot = if !target.is_empty() && image == target {
            &mut new
        } else {
            &mut old
        };
        slot.0 += 1;
        slot.1 += i64::from(passing);
    }
    state.metrics.observe(
        service,
        &ServiceState {
            plans: &plans,
            rollout: rollout.as_ref(),
            old,
            new,
            now: now_ms(),
        },
    );
    Ok(())
}

/// Refreshes after every change under `<prefix>/services/` until
/// `cancel` fires.
pub async fn follow(state: Shared, wait: Duration, cancel: CancellationToken) {
    let prefix = format!("{}/services/", state.prefix);
    let mut index = 0u64;
    let mut failures = 0u32;
    loop {
        let opts = if index == 0 {
            QueryOptions::default()
        } else {
            QueryOptions::blocking(index, wait)
        };
        let r = tokio::select! {
            _ = cancel.cancelled() => return,
            r = state.client.kv_list(&prefix, &opts) => r,
        };
        match r {
            Ok(r) => {
                failures = 0;
                let next = r.meta.index;
                // A lower index means Consul's state was reset: start over.
                let changed = next != index;
                index = if next < index { 0 } else { next.max(1) };
                if changed {
                    refresh(&state).await;
                }
                // A short gap between refreshes, however busy KV is (a change in
                // the gap is seen by the next query at once).
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
            Err(e) => {
                failures += 1;
                let pause = backoff(
                    failures,
                    Duration::from_millis(500),
                    Duration::from_secs(60),
                );
                tracing::debug!(error = %e, retry_in = ?pause, "Metrics watch failed; retrying.");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}
