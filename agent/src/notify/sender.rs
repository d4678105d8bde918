//! The sender: delivers the outbox.
//!
//! It follows the outbox prefix with a blocking query (no polling) and, for
//! each entry, one step at a time: add fallbacks that are due, or claim one
//! due copy (a `cas` write of a lease), send it, and record the outcome
//! (read again, apply, `cas` write). A copy whose delivery was recorded is
//! never sent again; a sender that dies between sending and recording leaves
//! a lease that runs out, after which the copy is claimed again as *maybe
//! sent* and sent again the way its notifier makes recognisable (at least
//! once: the same `Message-ID`; on Slack, an update of the thread's first
//! message instead of a second reply).
//!
//! Per receiver, a story's notices go out in order: a copy waits while an
//! earlier notice of its story is undelivered to that receiver (see
//! [`super::outbox::Stories`]), and is threaded under the story's first
//! message.
//! Outcomes that could not be recorded (Consul unreachable) are kept in
//! memory and recorded first on the next pass, so this process does not
//! send them twice.
//!
//! Several senders (an old and a new leader) may run at once: claims are
//! `cas` writes, so each attempt has one owner. The sender rebuilds
//! everything from KV on every pass and keeps no other state across a
//! restart.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::config::NotifyConfig;
use super::outbox::{Attempt, Entry, Policy, Stories, decode};
use super::{Outbox, Receivers, UnixMillis, now_ms};
use crate::consul::QueryOptions;
use crate::consul::records::{Change, RecordError, Records, Versioned};
use crate::consul::types::KvPair;
use crate::consul::watch::{Watch, WatchConfig};

/// Delivers the outbox to the receivers.
#[derive(Debug)]
pub struct Sender {
    /// The outbox (Consul client and prefix).
    outbox: Outbox,
    /// The notifiers by name.
    receivers: Receivers,
    /// Retry, lease, fallback and retention rules.
    policy: Policy,
    /// Time limit of one delivery.
    send_timeout: Duration,
    /// Names this sender in leases.
    holder: String,
    /// `wait` of the blocking query on the outbox.
    wait: Duration,
    /// Outcomes not yet recorded in KV: (KV key, receiver) → outcome.
    unrecorded: Mutex<HashMap<(String, String), Attempt>>,
    /// KV keys already reported as undecodable (logged once).
    corrupt: Mutex<HashMap<String, u64>>,
}

impl Sender {
    /// A sender for `outbox` using `receivers`, with `[notify]`'s policy;
    /// `wait` is the blocking query's wait (`consul.max_wait`).
    pub fn new(
        outbox: Outbox,
        receivers: Receivers,
        config: &NotifyConfig,
        wait: Duration,
    ) -> Self {
        let holder = format!(
            "{}-{}-{:08x}",
            hostname(),
            std::process::id(),
            rand::random::<u32>()
        );
        Self {
            outbox,
            receivers,
            policy: Policy::new(config),
            send_timeout: config.send_timeout,
            holder,
            wait,
            unrecorded: Mutex::new(HashMap::new()),
            corrupt: Mutex::new(HashMap::new()),
        }
    }

    /// Delivers until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        let client = self.outbox.client().clone();
        let prefix = self.outbox.prefix().to_string();
        let config = WatchConfig {
            wait: self.wait,
            ..WatchConfig::default()
        };
        let watch = Watch::new("outbox", config, move |opts: QueryOptions| {
            let client = client.clone();
            let prefix = prefix.clone();
            async move { client.kv_list(&prefix, &opts).await }
        });
        let watch_cancel = cancel.child_token();
        let mut rx = watch.spawn(watch_cancel.clone());
        tracing::info!(holder = %self.holder, prefix = %self.outbox.prefix(), "Outbox sender started.");
        loop {
            let list = rx.borrow_and_update().clone();
            let next = match list {
                Some(resp) => self.pass(&resp.value).await,
                None => None,
            };
            let sleep = next.map(|t| Duration::from_millis(t.saturating_sub(now_ms())));
            tokio::select! {
                _ = cancel.cancelled() => break,
                changed = rx.changed() => if changed.is_err() { break },
                _ = sleep_for(sleep) => {}
            }
        }
        watch_cancel.cancel();
        tracing::info!(holder = %self.holder, "Outbox sender stopped.");
    }

    /// One pass over the outbox: does what is due, answers when the next
    /// thing will be due.
    pub async fn pass(&self, list: &[KvPair]) -> Option<UnixMillis> {
        let fallback_of = |r: &str| self.receivers.fallback_of(r).map(str::to_string);
        let mut next: Option<UnixMillis> = None;
        let mut entries = Vec::with_capacity(list.len());
        for kv in list {
            let (key, index, entry) = decode(kv);
            match entry {
                Ok(e) => entries.push((key, index, e)),
                Err(e) => {
                    let mut seen = lock(&self.corrupt);
                    if seen.insert(key.clone(), index) != Some(index) {
                        tracing::error!(key = %key, error = %e, "Outbox entry is unreadable; skipping it.");
                    }
                }
            }
        }
        let stories = Stories::new(entries.iter().map(|(k, _, e)| (k.as_str(), e)));
        for (key, index, entry) in entries {
            let step = self.step(&key, index, entry, &stories).await;
            if let Some(entry) = step {
                let waiting = |r: &str| stories.waiting(&key, &entry, r);
                next = min(next, entry.next_due(&self.policy, &fallback_of, &waiting));
            } else {
                // Changed under us or failed: look again soon.
                next = min(
                    next,
                    Some(now_ms() + self.policy.retry_min.as_millis() as u64),
                );
            }
        }
        next
    }

    /// One step on one entry; answers the entry as it now stands, or `None`
    /// when it was written (or changed under us): the next list shows it.
    async fn step(
        &self,
        key: &str,
        index: u64,
        mut entry: Entry,
        stories: &Stories,
    ) -> Option<Entry> {
        let records = self.outbox.records();
        let now = now_ms();
        // Outcomes this process could not record yet come first.
        let pending: Vec<(String, Attempt)> = lock(&self.unrecorded)
            .iter()
            .filter(|((k, _), _)| k == key)
            .map(|((_, r), o)| (r.clone(), o.clone()))
            .collect();
        if !pending.is_empty() {
            for (r, o) in &pending {
                entry.record(r, o, &self.policy);
            }
            if cas_put(records, key, &entry, index).await {
                let mut u = lock(&self.unrecorded);
                for (r, _) in pending {
                    u.remove(&(key.to_string(), r));
                }
            }
            return None;
        }
        if entry.expired(now, &self.policy) {
            match records.delete(key, Some(index)).await {
                Ok(_) => tracing::debug!(key = %key, "Delivered outbox entry expired; deleted."),
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "Cannot delete an expired outbox entry.")
                }
            }
            return None;
        }
        let fallback_of = |r: &str| self.receivers.fallback_of(r).map(str::to_string);
        let before: HashMap<String, Option<UnixMillis>> = entry
            .deliveries
            .keys()
            .map(|r| (r.clone(), stories.failing_before(key, &entry, r)))
            .collect();
        let failing_before = |r: &str| before.get(r).copied().flatten();
        let added = entry.add_fallbacks(now, &self.policy, &fallback_of, &failing_before);
        if !added.is_empty() {
            for (failing, fallback) in &added {
                tracing::warn!(event = %entry.event.key, receiver = %failing, fallback = %fallback,
                    after = %humantime::format_duration(self.policy.fallback_after),
                    "Receiver keeps failing; also sending the event to its fallback.");
            }
            cas_put(records, key, &entry, index).await;
            return None;
        }
        let waiting = |r: &str| stories.waiting(key, &entry, r);
        let Some(receiver) = entry.due(now, &waiting) else {
            return Some(entry); // nothing due now
        };
        // The attempt is recorded before it is made.
        entry.claim(&receiver, &self.holder, now, self.policy.lease);
        if !cas_put(records, key, &entry, index).await {
            return None;
        }
        let thread = stories.thread(key, &entry, &receiver);
        if thread.maybe_sent {
            tracing::warn!(event = %entry.event.key, receiver = %receiver,
                "An earlier attempt was in flight when its sender stopped; it may have arrived. Sending again, recognisably.");
        }
        let result = self
            .receivers
            .deliver(&receiver, &entry.event, &thread, self.send_timeout)
            .await;
        let outcome = Attempt::of(&result, now_ms());
        crate::console::metrics::delivery(
            &receiver,
            self.receivers.get(&receiver).is_some(),
            result.as_ref().map(|_| ()).map_err(|e| e.retryable()),
            entry.event.at_ms,
        );
        let attempt = entry
            .deliveries
            .get(&receiver)
            .map(|d| d.attempts)
            .unwrap_or(0);
        match &result {
            Ok(_) => tracing::info!(event = %entry.event.key, receiver = %receiver, attempt,
                "Event delivered."),
            Err(e) if e.retryable() => {
                tracing::warn!(event = %entry.event.key, receiver = %receiver,
                attempt, error = %e, "Delivery failed; the event stays in the outbox.")
            }
            Err(e) => tracing::error!(event = %entry.event.key, receiver = %receiver, attempt,
                error = %e, "Delivery failed and will keep failing until fixed; the event stays in the outbox."),
        }
        self.record(key, &receiver, outcome).await
    }

    /// Records an outcome: read, apply, `cas` write, a few times; if that
    /// fails, keeps it in memory for the next pass.
    async fn record(&self, key: &str, receiver: &str, outcome: Attempt) -> Option<Entry> {
        let written = self
            .outbox
            .records()
            .update(key, |current: Option<Versioned<Entry>>| {
                // Deleted by an operator: nothing to record.
                let Some(v) = current else {
                    return Change::Keep(None);
                };
                let mut entry = v.value;
                entry.record(receiver, &outcome, &self.policy);
                Change::Write(entry.clone(), Some(entry))
            })
            .await;
        match written {
            Ok(entry) => entry,
            Err(e @ RecordError::Unreadable { .. }) => {
                tracing::error!(key = %key, error = %e, "Outbox entry became unreadable; the outcome is not recorded.");
                None
            }
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "Cannot record a delivery outcome yet; keeping it in memory.");
                lock(&self.unrecorded).insert((key.to_string(), receiver.to_string()), outcome);
                None
            }
        }
    }
}

/// `cas` write of an entry; `false` when it changed or Consul failed.
async fn cas_put(records: &Records, key: &str, entry: &Entry, index: u64) -> bool {
    match records.replace(key, entry, index).await {
        Ok(done) => done.is_some(),
        Err(e) => {
            tracing::warn!(key = %key, error = %e, "Cannot write an outbox entry.");
            false
        }
    }
}

fn min(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn sleep_for(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "rollgate".into())
}
