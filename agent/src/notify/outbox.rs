//! The durable outbox: every event is written to Consul KV before anything
//! is sent, so a crash, a restart or a leader change loses nothing.
//!
//! Layout: `<kv_prefix>/outbox/<dedup key>` holds one JSON [`Entry`]: the
//! event and, per receiver, a [`Delivery`] (attempts, next attempt, lease,
//! last error, delivered time, and what the receiver called the message).
//! Enqueueing writes with `cas=0`, so the same event enqueued twice is one
//! entry. The [`super::Sender`] delivers each receiver's copy at least once
//! and never again once it recorded the delivery; delivered entries stay
//! for `keep_delivered` so a late duplicate is still recognised, then are
//! deleted (with `cas`).
//!
//! Every attempt is recorded (claimed, with a lease) before it is made. A
//! lease that runs out without an outcome is an attempt whose sender
//! stopped mid-way: the next claim marks the copy *maybe sent*
//! ([`Delivery::maybe_sent`]), and notifiers resend it recognisably (the
//! same `Message-ID`) or repair instead of resending (Slack).
//!
//! Stories ([`Stories`]): per receiver, a copy is not due while an earlier
//! notice of the same story ([`Event::story`]) still waits for that
//! receiver, so a later notice never overtakes one being retried; and each
//! copy is threaded under the story's first message.
//!
//! The rules (what is due, retry delays, fallback, expiry) are pure methods
//! of [`Entry`]; this module's only I/O is [`Outbox::enqueue`] and
//! [`Outbox::list`]. It never sends anything itself.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::NotifyConfig;
use super::route::Router;
use super::{Event, Sent, Thread, UnixMillis, now_ms};
use crate::consul::records::{self, Record, RecordError, Records};
use crate::consul::{self, Client, QueryOptions};

/// An outbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// Consul could not be read or written; the caller retries (the event is
    /// not in the outbox yet when enqueueing failed).
    #[error("outbox: {0}")]
    Consul(#[from] consul::Error),
    /// An entry is not an outbox entry (written by something else, or by a
    /// newer rollgate), or could not be encoded; it is left alone.
    #[error("outbox: {0}; it is left in place for an operator")]
    Record(RecordError),
}

impl From<RecordError> for OutboxError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::Consul(e) => OutboxError::Consul(e),
            other => OutboxError::Record(other),
        }
    }
}

/// Schema 1: as written since the first release.
impl Record for Entry {
    const KIND: &'static str = "outbox entry";
    const SCHEMA: u32 = 1;
}

/// The delivery state of one receiver's copy of an event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Delivery {
    /// When it was delivered (acknowledged); never sent again after that.
    pub delivered_ms: Option<UnixMillis>,
    /// Attempts made so far.
    pub attempts: u32,
    /// First failed attempt, for `fallback_after`.
    pub first_failure_ms: Option<UnixMillis>,
    /// Not before this time.
    pub next_attempt_ms: UnixMillis,
    /// A sender owns the attempt until then (0: nobody).
    pub lease_until_ms: UnixMillis,
    /// Which sender owns it.
    pub lease_holder: String,
    /// The last failure, for operators reading the outbox.
    pub last_error: String,
    /// Set when this copy exists because another receiver failed too long.
    pub fallback_for: Option<String>,
    /// An attempt was in flight (claimed, its lease ran out with no
    /// outcome recorded): the copy may have arrived already.
    pub maybe_sent: bool,
    /// This copy's message as the receiver knows it (Slack `channel/ts`,
    /// email `Message-ID`), once delivered.
    pub reference: Option<String>,
    /// The story's first message for this receiver, once delivered: the
    /// next notices of the story are threaded under it.
    pub root: Option<String>,
}

/// One outbox entry: an event and its deliveries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The event.
    pub event: Event,
    /// When it was enqueued.
    pub enqueued_ms: UnixMillis,
    /// Per receiver name.
    pub deliveries: BTreeMap<String, Delivery>,
    /// When every delivery was done; the entry is deleted `keep_delivered`
    /// later.
    pub done_ms: Option<UnixMillis>,
}

/// The result of one delivery attempt, as the entry records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// When the attempt ended.
    pub at_ms: UnixMillis,
    /// `None`: delivered. Otherwise the error's text.
    pub error: Option<String>,
    /// Whether retrying soon may help.
    pub retryable: bool,
    /// The delay the server asked for.
    pub retry_after: Option<Duration>,
    /// What the receiver answered of a delivery.
    pub sent: Sent,
}

impl Attempt {
    /// The outcome of `result` at `at_ms`.
    pub fn of(result: &Result<Sent, super::NotifyError>, at_ms: UnixMillis) -> Self {
        match result {
            Ok(sent) => Self {
                at_ms,
                error: None,
                retryable: true,
                retry_after: None,
                sent: sent.clone(),
            },
            Err(e) => Self {
                at_ms,
                error: Some(e.to_string()),
                retryable: e.retryable(),
                retry_after: e.retry_after(),
                sent: Sent::default(),
            },
        }
    }
}

/// Retry, lease, fallback and retention settings (from `[notify]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// First retry delay.
    pub retry_min: Duration,
    /// Longest retry delay; also the delay after a non-retryable failure.
    pub retry_max: Duration,
    /// Failing this long adds the receiver's fallback.
    pub fallback_after: Duration,
    /// How long a claimed attempt is owned.
    pub lease: Duration,
    /// How long delivered entries are kept for dedup.
    pub keep_delivered: Duration,
}

impl Policy {
    /// The policy `[notify]` describes.
    pub fn new(c: &NotifyConfig) -> Self {
        Self {
            retry_min: c.retry_min,
            retry_max: c.retry_max,
            fallback_after: c.fallback_after,
            lease: c.lease,
            keep_delivered: c.keep_delivered,
        }
    }

    /// Delay before attempt `attempts + 1` after a failure.
    pub fn delay(&self, attempts: u32, o: &Attempt) -> Duration {
        let base = if o.retryable {
            consul::watch::backoff(attempts, self.retry_min, self.retry_max)
        } else {
            self.retry_max
        };
        base.max(o.retry_after.unwrap_or_default())
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl Entry {
    /// A new entry for `event`, to be delivered to `receivers`.
    pub fn new(event: Event, receivers: &[String], now: UnixMillis) -> Self {
        Self {
            event,
            enqueued_ms: now,
            deliveries: receivers
                .iter()
                .map(|r| {
                    (
                        r.clone(),
                        Delivery {
                            next_attempt_ms: now,
                            ..Delivery::default()
                        },
                    )
                })
                .collect(),
            done_ms: None,
        }
    }

    /// The first receiver whose copy is due at `now`, not leased, and not
    /// `waiting` (for an earlier notice of its story).
    pub fn due(&self, now: UnixMillis, waiting: &dyn Fn(&str) -> bool) -> Option<String> {
        self.deliveries
            .iter()
            .find(|(r, d)| {
                d.delivered_ms.is_none()
                    && d.next_attempt_ms <= now
                    && d.lease_until_ms <= now
                    && !waiting(r)
            })
            .map(|(r, _)| r.clone())
    }

    /// Records that `holder` attempts `receiver`'s copy until `now + lease`.
    /// A lease still set is an attempt whose outcome was never recorded (its
    /// sender stopped): the copy is *maybe sent* from then on.
    pub fn claim(&mut self, receiver: &str, holder: &str, now: UnixMillis, lease: Duration) {
        if let Some(d) = self.deliveries.get_mut(receiver) {
            if d.lease_until_ms != 0 {
                d.maybe_sent = true;
            }
            d.attempts += 1;
            d.lease_until_ms = now + ms(lease);
            d.lease_holder = holder.to_string();
        }
    }

    /// Records an attempt's outcome; answers the delay before the next
    /// attempt after a failure.
    pub fn record(&mut self, receiver: &str, o: &Attempt, policy: &Policy) -> Option<Duration> {
        let d = self.deliveries.get_mut(receiver)?;
        d.lease_until_ms = 0;
        d.lease_holder.clear();
        match &o.error {
            None => {
                if d.delivered_ms.is_none() {
                    d.reference = o.sent.reference.clone();
                    d.root = o.sent.root.clone();
                }
                d.delivered_ms.get_or_insert(o.at_ms);
                d.last_error.clear();
                if self.deliveries.values().all(|d| d.delivered_ms.is_some()) {
                    self.done_ms.get_or_insert(o.at_ms);
                }
                None
            }
            Some(e) => {
                if d.delivered_ms.is_some() {
                    return None;
                }
                d.first_failure_ms.get_or_insert(o.at_ms);
                d.last_error = e.clone();
                let delay = policy.delay(d.attempts.max(1), o);
                d.next_attempt_ms = o.at_ms + ms(delay);
                Some(delay)
            }
        }
    }

    /// Adds the fallback receiver of every copy that has failed for
    /// `fallback_after`, unless the event already goes there. A copy
    /// waiting behind an earlier notice of its story counts as failing
    /// since that notice's copy fails (`failing_before`), so it falls back
    /// with it. Answers the `(failing, fallback)` pairs added.
    pub fn add_fallbacks(
        &mut self,
        now: UnixMillis,
        policy: &Policy,
        fallback_of: &dyn Fn(&str) -> Option<String>,
        failing_before: &dyn Fn(&str) -> Option<UnixMillis>,
    ) -> Vec<(String, String)> {
        let mut added = Vec::new();
        for (r, d) in &self.deliveries {
            let failing_long = d.delivered_ms.is_none()
                && d.first_failure_ms
                    .or_else(|| failing_before(r))
                    .is_some_and(|f| now >= f + ms(policy.fallback_after));
            if !failing_long {
                continue;
            }
            if let Some(f) = fallback_of(r) {
                if !self.deliveries.contains_key(&f) && !added.iter().any(|(_, a)| *a == f) {
                    added.push((r.clone(), f));
                }
            }
        }
        for (r, f) in &added {
            self.done_ms = None;
            self.deliveries.insert(
                f.clone(),
                Delivery {
                    next_attempt_ms: now,
                    fallback_for: Some(r.clone()),
                    ..Delivery::default()
                },
            );
        }
        added
    }

    /// Whether every copy was delivered and the entry has been kept long
    /// enough.
    pub fn expired(&self, now: UnixMillis, policy: &Policy) -> bool {
        self.done_ms
            .is_some_and(|d| now >= d + ms(policy.keep_delivered))
    }

    /// When something is next to be done with this entry (an attempt, a
    /// lease running out, a fallback, the deletion). Copies `waiting` for an
    /// earlier notice are left out: that notice's delivery wakes them.
    pub fn next_due(
        &self,
        policy: &Policy,
        fallback_of: &dyn Fn(&str) -> Option<String>,
        waiting: &dyn Fn(&str) -> bool,
    ) -> Option<UnixMillis> {
        if let Some(done) = self.done_ms {
            return Some(done + ms(policy.keep_delivered));
        }
        self.deliveries
            .iter()
            .filter(|(r, d)| d.delivered_ms.is_none() && !waiting(r))
            .flat_map(|(r, d)| {
                let attempt = d.next_attempt_ms.max(d.lease_until_ms);
                let fallback = d
                    .first_failure_ms
                    .filter(|_| fallback_of(r).is_some_and(|f| !self.deliveries.contains_key(&f)))
                    .map(|f| f + ms(policy.fallback_after));
                [Some(attempt), fallback]
            })
            .flatten()
            .min()
    }
}

/// The outbox's entries by story, in order: what decides, per receiver,
/// whether a copy waits for an earlier notice and which thread it joins.
/// Built from one listing; pure.
#[derive(Debug, Default)]
pub struct Stories {
    /// Story → its notices, sorted by position.
    by_story: BTreeMap<String, Vec<Told>>,
}

/// One notice of a story: (position, KV key, deliveries).
type Told = ((u64, u64), String, BTreeMap<String, Delivery>);

impl Stories {
    /// The stories of the decoded entries `(KV key, entry)`.
    pub fn new<'a>(entries: impl IntoIterator<Item = (&'a str, &'a Entry)>) -> Self {
        let mut by_story: BTreeMap<_, Vec<_>> = BTreeMap::new();
        for (key, e) in entries {
            by_story.entry(e.event.story()).or_default().push((
                e.event.position(),
                key.to_string(),
                e.deliveries.clone(),
            ));
        }
        for list in by_story.values_mut() {
            list.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        }
        Self { by_story }
    }

    /// The notices of `entry`'s story before it, nearest last.
    fn earlier<'s>(
        &'s self,
        key: &'s str,
        entry: &Entry,
    ) -> impl Iterator<Item = &'s BTreeMap<String, Delivery>> + 's {
        let position = entry.event.position();
        self.by_story
            .get(&entry.event.story())
            .into_iter()
            .flatten()
            .filter(move |(p, k, _)| (*p, k.as_str()) < (position, key))
            .map(|(_, _, d)| d)
    }

    /// Whether `receiver`'s copy of `entry` must wait: an earlier notice
    /// of its story is not delivered to `receiver` yet.
    pub fn waiting(&self, key: &str, entry: &Entry, receiver: &str) -> bool {
        self.earlier(key, entry)
            .any(|d| d.get(receiver).is_some_and(|d| d.delivered_ms.is_none()))
    }

    /// Since when an earlier notice of `entry`'s story has been failing
    /// to reach `receiver` (the earliest such failure), if one is.
    pub fn failing_before(&self, key: &str, entry: &Entry, receiver: &str) -> Option<UnixMillis> {
        self.earlier(key, entry)
            .filter_map(|d| d.get(receiver))
            .filter(|d| d.delivered_ms.is_none())
            .filter_map(|d| d.first_failure_ms)
            .min()
    }

    /// How `receiver`'s copy of `entry` is threaded: under the root the
    /// story's latest delivered notice recorded, replying to that notice.
    pub fn thread(&self, key: &str, entry: &Entry, receiver: &str) -> Thread {
        let last = self
            .earlier(key, entry)
            .filter_map(|d| d.get(receiver))
            .filter(|d| d.delivered_ms.is_some() && d.root.is_some())
            .last();
        Thread {
            notice: key.to_string(),
            root: last.and_then(|d| d.root.clone()),
            previous: last.and_then(|d| d.reference.clone().or_else(|| d.root.clone())),
            maybe_sent: entry.deliveries.get(receiver).is_some_and(|d| d.maybe_sent),
        }
    }
}

/// Escapes a dedup key into KV key segments using only what Consul accepts
/// in keys (letters, digits, `,-./`): every other byte, `_` included, and a
/// `/` that would make an empty segment, becomes `_XX` (hex), so distinct
/// dedup keys stay distinct.
pub fn escape_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let bytes = key.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        let c = *b as char;
        let slash_ok = c == '/' && i > 0 && i + 1 < bytes.len() && bytes[i - 1] != b'/';
        if c.is_ascii_alphanumeric() || ",-.".contains(c) || slash_ok {
            out.push(c);
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    out
}

/// What [`Outbox::enqueue`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// A new entry, for these receivers.
    New {
        /// The KV key.
        key: String,
        /// Receiver names.
        receivers: Vec<String>,
    },
    /// The key already exists: the event was enqueued before (nothing
    /// written).
    Duplicate {
        /// The KV key.
        key: String,
    },
    /// No route and no default receiver: nothing to deliver (logged).
    NoReceiver,
}

/// The outbox in Consul KV. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    /// Entries in KV, each a versioned record.
    records: Records,
    /// `<kv_prefix>/outbox/`.
    prefix: String,
    /// Picks receivers at enqueue time.
    router: Router,
}

impl Outbox {
    /// The outbox under `<kv_prefix>/outbox/`, routing with `[notify]`.
    pub fn new(client: Client, kv_prefix: &str, config: &NotifyConfig) -> Self {
        Self {
            records: Records::new(client),
            prefix: format!("{}/outbox/", kv_prefix.trim_end_matches('/')),
            router: Router::new(config),
        }
    }

    /// The KV prefix of the entries (ends with `/`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The Consul client.
    pub fn client(&self) -> &Client {
        self.records.client()
    }

    /// The entries' record store.
    pub fn records(&self) -> &Records {
        &self.records
    }

    /// The KV key of an event's entry.
    pub fn key_of(&self, event: &Event) -> String {
        format!("{}{}", self.prefix, escape_key(&event.key))
    }

    /// Routes `event` and writes its entry, unless its dedup key is there
    /// already. After `Ok`, the event will be delivered (or kept) whatever
    /// happens to this process.
    pub async fn enqueue(&self, event: Event) -> Result<Enqueued, OutboxError> {
        let receivers = self.router.route(&event);
        if receivers.is_empty() {
            tracing::warn!(event = %event.key, kind = event.body.kind(), service = %event.service,
                "No route and no default receiver for the event; it is not sent.");
            return Ok(Enqueued::NoReceiver);
        }
        let key = self.key_of(&event);
        let entry = Entry::new(event, &receivers, now_ms());
        let created = self.records.create(&key, &entry).await?.is_some();
        if created {
            tracing::info!(event = %entry.event.key, receivers = ?receivers, "Event enqueued.");
            Ok(Enqueued::New { key, receivers })
        } else {
            tracing::debug!(event = %entry.event.key, "Event already in the outbox.");
            Ok(Enqueued::Duplicate { key })
        }
    }

    /// Every entry with its ModifyIndex; undecodable ones are reported as
    /// errors in place.
    pub async fn list(
        &self,
    ) -> Result<Vec<(String, u64, Result<Entry, OutboxError>)>, OutboxError> {
        let r = self
            .client()
            .kv_list(&self.prefix, &QueryOptions::default())
            .await?;
        Ok(r.value.iter().map(decode).collect())
    }
}

/// Decodes one KV pair of the outbox.
pub fn decode(kv: &consul::types::KvPair) -> (String, u64, Result<Entry, OutboxError>) {
    let entry = kv
        .value()
        .map_err(|e| RecordError::Unreadable {
            key: kv.key.clone(),
            kind: Entry::KIND,
            reason: format!("the value is not base64: {e}"),
        })
        .and_then(|bytes| records::decode::<Entry>(&kv.key, &bytes))
        .map_err(OutboxError::from);
    (kv.key.clone(), kv.modify_index, entry)
}

#[cfg(test)]
#[path = "outbox_tests.rs"]
mod tests;
