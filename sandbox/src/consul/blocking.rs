//! Blocking queries, as Consul serves them.
//!
//! With `?index=N` a read waits until the index of the data it returns is
//! above N, or until `?wait` (Go duration, default 5m, at most 10m) plus a
//! random jitter of up to wait/16 has passed, and then answers the current
//! data and index. `?index=0` or no index answers at once. Waiting is on a
//! `watch` channel the store publishes every write on: no polling. A wake-up
//! re-runs the query; it answers only when its own index moved, so an
//! unrelated write does not end the wait, except where Consul itself
//! reports a table-wide index (a missing KV key, an unknown service).
//!
//! Agent-local endpoints block on a content hash instead (`?hash=`).
//!
//! As in Consul, an index that went backwards (a snapshot restore, see the
//! control API) makes a query with a higher `index` wait for its whole
//! `wait`: clients must reset their index when it goes down.

use std::time::Duration;

use rand::Rng as _;
use tokio::time::Instant;

use super::cluster::Cluster;
use super::duration;
use super::http::{ApiError, Query};
use super::store::Store;

/// Default `wait` of a blocking query.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// Longest `wait` Consul honours.
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// The blocking and consistency options of a read.
#[derive(Debug, Clone, Default)]
pub(crate) struct QueryOptions {
    /// `?index`; 0 for none.
    pub index: u64,
    /// `?wait`, defaulted and capped.
    pub wait: Duration,
    /// `?hash` of agent-local endpoints.
    pub hash: Option<String>,
    /// `?stale`.
    pub stale: bool,
    /// `?consistent`.
    pub consistent: bool,
}

impl QueryOptions {
    /// Parses the options, answering Consul's 400 texts for bad values.
    pub fn parse(query: &Query) -> Result<QueryOptions, ApiError> {
        let stale = query.has("stale");
        let consistent = query.has("consistent");
        if stale && consistent {
            return Err(ApiError::bad_request(
                "Cannot specify ?stale with ?consistent, conflicting semantics.",
            ));
        }
        let wait = match query.get("wait").filter(|w| !w.is_empty()) {
            Some(w) => {
                duration::parse(w).map_err(|_| ApiError::bad_request("Invalid wait time"))?
            }
            None => Duration::ZERO,
        };
        let wait = if wait.is_zero() {
            DEFAULT_WAIT
        } else {
            wait.min(MAX_WAIT)
        };
        let index = match query.get("index").filter(|i| !i.is_empty()) {
            Some(i) => i
                .parse()
                .map_err(|_| ApiError::bad_request("Invalid index"))?,
            None => 0,
        };
        Ok(QueryOptions {
            index,
            wait,
            hash: query
                .get("hash")
                .filter(|h| !h.is_empty())
                .map(str::to_string),
            stale,
            consistent,
        })
    }

    /// When a blocking query gives up: `wait` plus up to `wait/16` jitter.
    pub fn deadline(&self) -> Instant {
        let jitter_ceiling = u64::try_from((self.wait / 16).as_millis()).unwrap_or(u64::MAX);
        let jitter = if jitter_ceiling == 0 {
            0
        } else {
            rand::rng().random_range(0..=jitter_ceiling)
        };
        Instant::now() + self.wait + Duration::from_millis(jitter)
    }

    /// `X-Consul-Effective-Consistency` of the answer.
    pub fn consistency(&self) -> &'static str {
        if self.stale {
            "stale"
        } else if self.consistent {
            "consistent"
        } else {
            "leader"
        }
    }
}

/// Runs `query` until its index passes `opts.index` or the wait ends.
/// Returns the result and its index (at least 1, as Consul guarantees).
pub(crate) async fn block<T>(
    cluster: &Cluster,
    opts: &QueryOptions,
    mut query: impl FnMut(&Store) -> Result<(T, u64), ApiError>,
) -> Result<(T, u64), ApiError> {
    let mut changes = cluster.subscribe();
    let deadline = opts.deadline();
    loop {
        changes.borrow_and_update();
        let (value, index) = query(&cluster.store())?;
        let index = index.max(1);
        if opts.index == 0 || index > opts.index || Instant::now() >= deadline {
            return Ok((value, index));
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { return Ok((value, index)) },
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// Like [`block`] for queries whose index is cheap to compute and whose
/// answer is not (the health and catalog reads): `index` is evaluated on
/// every wake-up, `render` only once, when the query answers, under the
/// same lock as its final index.
pub(crate) async fn block_split<T>(
    cluster: &Cluster,
    opts: &QueryOptions,
    index: impl Fn(&Store) -> u64,
    render: impl FnOnce(&Store) -> Result<T, ApiError>,
) -> Result<(T, u64), ApiError> {
    let mut changes = cluster.subscribe();
    let deadline = opts.deadline();
    loop {
        changes.borrow_and_update();
        let current = index(&cluster.store()).max(1);
        if opts.index == 0 || current > opts.index || Instant::now() >= deadline {
            break;
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { break },
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
    let store = cluster.store();
    let current = index(&store).max(1);
    Ok((render(&store)?, current))
}

/// Hash-based blocking of agent-local endpoints: runs `query` until the
/// hash of its answer differs from `opts.hash` or the wait ends.
pub(crate) async fn block_on_hash<T>(
    cluster: &Cluster,
    opts: &QueryOptions,
    mut query: impl FnMut(&Store) -> Result<(T, String), ApiError>,
) -> Result<(T, String), ApiError> {
    let mut changes = cluster.subscribe();
    let deadline = opts.deadline();
    loop {
        changes.borrow_and_update();
        let (value, hash) = query(&cluster.store())?;
        let unchanged = opts.hash.as_deref() == Some(hash.as_str());
        if !unchanged || Instant::now() >= deadline {
            return Ok((value, hash));
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { return Ok((value, hash)) },
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}
