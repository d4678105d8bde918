//! The blocking-query loop, following Consul's rules for blocking queries.
//!
//! A [`Watch`] repeats one read and yields only when the data changed:
//!
//! - the first read is immediate; every later one sends `index` = the last
//!   `X-Consul-Index` and a `wait`, so Consul holds it until something changes;
//! - an answer is no proof of change: identical data is not yielded;
//! - an index lower than the previous one (a snapshot restore, a new cluster)
//!   resets the index to 0, and no request after the first answer ever sends
//!   an index below 1 (index 0 would not block at all);
//! - a token bucket limits the request rate, so a key that changes constantly
//!   cannot turn the loop into a busy loop;
//! - errors back off exponentially with jitter up to a cap, and the back-off
//!   resets after a success;
//! - `stale` reads are accepted only while `X-Consul-LastContact` is within
//!   `max_stale`; an older answer is asked again without `stale`;
//! - agent-local endpoints block on the content hash (`hash=`) instead.
//!
//! Errors are returned to the caller (who logs them or raises a meta-alert)
//! and the next call waits for the back-off before trying again: the loop
//! itself never gives up. Time comes from `tokio::time`, so tests run it under
//! `tokio::time::pause()`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Error, QueryOptions, Response};

/// How a watch queries.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchConfig {
    /// `wait` of each blocking request (Consul caps it at 10 minutes).
    pub wait: Duration,
    /// Sustained request rate allowed, per second.
    pub rate_per_sec: f64,
    /// Requests allowed back to back before the rate applies.
    pub burst: u32,
    /// First back-off after an error.
    pub backoff_min: Duration,
    /// Largest back-off.
    pub backoff_max: Duration,
    /// Allow `stale` reads.
    pub stale: bool,
    /// Oldest `stale` answer accepted.
    pub max_stale: Duration,
    /// Block on `X-Consul-ContentHash` (agent-local endpoints) instead of the index.
    pub by_hash: bool,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            wait: Duration::from_secs(300),
            rate_per_sec: 10.0,
            burst: 5,
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(60),
            stale: false,
            max_stale: Duration::from_secs(5),
            by_hash: false,
        }
    }
}

/// A read failed; the watch waits `retry_in` before the next attempt.
#[derive(Debug, thiserror::Error)]
#[error("watch {name}: {source} (attempt {failures}, retrying in {})", humantime::format_duration(*retry_in))]
pub struct WatchError {
    /// The watch's name.
    pub name: String,
    /// What failed.
    #[source]
    pub source: Error,
    /// Failures in a row, this one included.
    pub failures: u32,
    /// Back-off before the next attempt.
    pub retry_in: Duration,
}

/// A token bucket on `tokio::time`.
#[derive(Debug)]
struct TokenBucket {
    capacity: f64,
    tokens: f64,
    rate: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: f64, burst: u32) -> Self {
        let capacity = f64::from(burst.max(1));
        Self {
            capacity,
            tokens: capacity,
            rate: rate.max(0.001),
            last: Instant::now(),
        }
    }

    async fn take(&mut self) {
        loop {
            let now = Instant::now();
            let elapsed = now.duration_since(self.last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
            self.last = now;
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                return;
            }
            let missing = (1.0 - self.tokens) / self.rate;
            tokio::time::sleep(Duration::from_secs_f64(missing)).await;
        }
    }
}

/// The crate's back-off ([`crate::backoff::delay`]), under the name the
/// watch loops have always used.
pub use crate::backoff::delay as backoff;

/// One blocking-query loop over `fetch`.
pub struct Watch<T, F> {
    /// Names the watch in logs and errors.
    name: String,
    /// Performs one read with the options the loop chose.
    fetch: F,
    /// Query behaviour.
    config: WatchConfig,
    /// Last index seen (0 before the first answer or after a reset).
    index: u64,
    /// Whether any answer came back yet (after that, never send index < 1).
    answered: bool,
    /// Last content hash, for `by_hash` watches.
    hash: Option<String>,
    /// Last value yielded; identical answers are not yielded again.
    last: Option<T>,
    /// Rate limit.
    bucket: TokenBucket,
    /// Errors in a row.
    failures: u32,
    /// Earliest time of the next attempt after an error.
    retry_at: Option<Instant>,
}

impl<T, F> std::fmt::Debug for Watch<T, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("name", &self.name)
            .field("index", &self.index)
            .field("failures", &self.failures)
            .finish()
    }
}

impl<T, F, Fut> Watch<T, F>
where
    T: PartialEq + Clone,
    F: FnMut(QueryOptions) -> Fut,
    Fut: Future<Output = Result<Response<T>, Error>>,
{
    /// A watch named `name` (for logs) that reads with `fetch`.
    pub fn new(name: impl Into<String>, config: WatchConfig, fetch: F) -> Self {
        let bucket = TokenBucket::new(config.rate_per_sec, config.burst);
        Self {
            name: name.into(),
            fetch,
            config,
            index: 0,
            answered: false,
            hash: None,
            last: None,
            bucket,
            failures: 0,
            retry_at: None,
        }
    }

    /// The index the next request will block on.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Waits for the next change and answers it, or the next error.
    pub async fn next(&mut self) -> Result<Response<T>, WatchError> {
        let mut force_consistent = false;
        loop {
            if let Some(at) = self.retry_at.take() {
                tokio::time::sleep_until(at).await;
            }
            self.bucket.take().await;
            let opts = self.options(force_consistent);
            let answer = (self.fetch)(opts).await;
            let resp = match answer {
                Ok(resp) => resp,
                Err(source) => {
                    self.failures += 1;
                    let retry_in = backoff(
                        self.failures,
                        self.config.backoff_min,
                        self.config.backoff_max,
                    );
                    self.retry_at = Some(Instant::now() + retry_in);
                    return Err(WatchError {
                        name: self.name.clone(),
                        source,
                        failures: self.failures,
                        retry_in,
                    });
                }
            };
            self.failures = 0;
            if self.config.stale
                && !force_consistent
                && resp.meta.last_contact > self.config.max_stale
            {
                tracing::debug!(watch = %self.name, last_contact = ?resp.meta.last_contact,
                    "Stale answer too old; asking again consistently.");
                force_consistent = true;
                continue;
            }
            force_consistent = false;
            if resp.meta.index < self.index {
                tracing::debug!(watch = %self.name, previous = self.index, returned = resp.meta.index,
                    "Consul index went backwards; resetting.");
                self.index = 0;
            } else {
                self.index = resp.meta.index;
            }
            self.answered = true;
            if self.config.by_hash {
                self.hash = resp.meta.content_hash.clone();
            }
            if self.last.as_ref() == Some(&resp.value) {
                continue;
            }
            self.last = Some(resp.value.clone());
            return Ok(resp);
        }
    }

    fn options(&self, force_consistent: bool) -> QueryOptions {
        let mut opts = QueryOptions {
            stale: self.config.stale && !force_consistent,
            ..QueryOptions::default()
        };
        if !self.answered {
            return opts;
        }
        if self.config.by_hash {
            if let Some(hash) = &self.hash {
                opts.hash = Some(hash.clone());
                opts.wait = Some(self.config.wait);
            }
        } else {
            opts.index = Some(self.index.max(1));
            opts.wait = Some(self.config.wait);
        }
        opts
    }
}

impl<T, F, Fut> Watch<T, F>
where
    T: PartialEq + Clone + Send + Sync + 'static,
    F: FnMut(QueryOptions) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Response<T>, Error>> + Send,
{
    /// Runs the watch in a task that publishes every change into a
    /// `tokio::sync::watch` channel (`None` until the first answer), logging
    /// errors, until `shutdown` is cancelled or every receiver is gone.
    pub fn spawn(
        mut self,
        shutdown: CancellationToken,
    ) -> tokio::sync::watch::Receiver<Option<Arc<Response<T>>>> {
        let (tx, rx) = tokio::sync::watch::channel(None);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tx.closed() => break,
                    next = self.next() => match next {
                        Ok(resp) => {
                            if tx.send(Some(Arc::new(resp))).is_err() {
                                break;
                            }
                        }
                        Err(e) => tracing::warn!(watch = %e.name, error = %e.source,
                            failures = e.failures, retry_in = ?e.retry_in,
                            "Consul watch failed; retrying."),
                    }
                }
            }
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;
    use crate::consul::QueryMeta;

    type Script = Arc<Mutex<VecDeque<Result<(u64, &'static str), u16>>>>;
    type Answer = std::pin::Pin<Box<dyn Future<Output = Result<Response<String>, Error>> + Send>>;

    /// A fetch that plays a script of answers and records the options it got
    /// and when.
    fn scripted(
        script: Script,
        seen: Arc<Mutex<Vec<(Instant, QueryOptions)>>>,
    ) -> impl FnMut(QueryOptions) -> Answer {
        move |opts| {
            seen.lock().unwrap().push((Instant::now(), opts));
            let next = script.lock().unwrap().pop_front();
            Box::pin(async move {
                match next {
                    Some(Ok((index, value))) => Ok(Response {
                        value: value.to_string(),
                        meta: QueryMeta {
                            index,
                            known_leader: true,
                            ..QueryMeta::default()
                        },
                    }),
                    Some(Err(status)) => Err(Error::Status {
                        call: "GET /v1/test".into(),
                        status,
                        body: "boom".into(),
                    }),
                    None => std::future::pending().await,
                }
            })
        }
    }

    fn script(items: Vec<Result<(u64, &'static str), u16>>) -> Script {
        Arc::new(Mutex::new(items.into()))
    }

    fn fast() -> WatchConfig {
        WatchConfig {
            wait: Duration::from_secs(60),
            rate_per_sec: 1000.0,
            burst: 100,
            ..WatchConfig::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn identical_results_are_not_yielded_and_index_is_sent_back() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = script(vec![Ok((5, "a")), Ok((6, "a")), Ok((7, "a")), Ok((9, "b"))]);
        let mut w = Watch::new("t", fast(), scripted(s, seen.clone()));
        assert_eq!(w.next().await.unwrap().value, "a");
        assert_eq!(w.next().await.unwrap().value, "b");
        let seen = seen.lock().unwrap();
        let indexes: Vec<_> = seen.iter().map(|(_, o)| o.index).collect();
        assert_eq!(indexes, vec![None, Some(5), Some(6), Some(7)]);
        assert!(seen[1].1.wait.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn index_going_backwards_resets_but_never_below_one() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = script(vec![
            Ok((10, "a")),
            Ok((4, "b")),
            Ok((4, "c")),
            Ok((0, "d")),
        ]);
        let mut w = Watch::new("t", fast(), scripted(s, seen.clone()));
        for _ in 0..4 {
            w.next().await.unwrap();
        }
        let indexes: Vec<_> = seen.lock().unwrap().iter().map(|(_, o)| o.index).collect();
        // 10 -> 4 went backwards: reset to 0, sent as 1. Then 4 is kept.
        assert_eq!(indexes, vec![None, Some(10), Some(1), Some(4)]);
        // An answer with index 0 is also never sent back as 0.
        assert_eq!(w.options(false).index, Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn errors_back_off_growing_then_reset_after_success() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = script(vec![
            Ok((1, "a")),
            Err(500),
            Err(500),
            Err(500),
            Err(500),
            Err(500),
            Ok((2, "b")),
            Err(503),
            Ok((3, "c")),
        ]);
        let cfg = WatchConfig {
            backoff_min: Duration::from_millis(100),
            ..fast()
        };
        let mut w = Watch::new("t", cfg, scripted(s, seen.clone()));
        w.next().await.unwrap();
        let mut failures = Vec::new();
        let value = loop {
            match w.next().await {
                Ok(r) => break r.value,
                Err(e) => {
                    assert!(e.source.is_retryable());
                    failures.push(e.failures);
                }
            }
        };
        assert_eq!(value, "b");
        assert_eq!(failures, vec![1, 2, 3, 4, 5]);
        let e = w.next().await.unwrap_err();
        assert_eq!(e.failures, 1, "back-off resets after a success");
        assert!(e.retry_in <= Duration::from_millis(100));
        assert_eq!(w.next().await.unwrap().value, "c");

        let times: Vec<Instant> = seen.lock().unwrap().iter().map(|(t, _)| *t).collect();
        let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
        // gaps[1..6] follow errors 1..5: each at least as long as the one
        // before (equal jitter guarantees it), and the last ≥ 8× the first.
        for pair in gaps[1..6].windows(2) {
            assert!(pair[1] >= pair[0], "gaps must grow: {gaps:?}");
        }
        assert!(gaps[5] >= gaps[1] * 4, "{gaps:?}");
        assert!(gaps[1] >= Duration::from_millis(50) && gaps[1] <= Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn request_rate_is_limited() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let items: Vec<_> = (1..=21)
            .map(|i| Ok((i, if i % 2 == 0 { "x" } else { "y" })))
            .collect();
        let cfg = WatchConfig {
            rate_per_sec: 10.0,
            burst: 1,
            ..fast()
        };
        let start = Instant::now();
        let mut w = Watch::new("t", cfg, scripted(script(items), seen));
        for _ in 0..21 {
            w.next().await.unwrap();
        }
        // 21 requests at 10/s with a burst of 1: at least 2 s of (virtual) time.
        assert!(Instant::now() - start >= Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn stale_answer_too_old_is_asked_again_consistently() {
        let seen = Arc::new(Mutex::new(Vec::<QueryOptions>::new()));
        let seen2 = seen.clone();
        let mut calls = 0u32;
        let cfg = WatchConfig {
            stale: true,
            max_stale: Duration::from_secs(1),
            ..fast()
        };
        let mut w = Watch::new("t", cfg, move |opts: QueryOptions| {
            seen2.lock().unwrap().push(opts.clone());
            calls += 1;
            let contact = if opts.stale { 30_000 } else { 0 };
            let value = format!("v{calls}");
            async move {
                Ok(Response {
                    value,
                    meta: QueryMeta {
                        index: 7,
                        last_contact: Duration::from_millis(contact),
                        ..QueryMeta::default()
                    },
                })
            }
        });
        assert_eq!(w.next().await.unwrap().value, "v2");
        let seen = seen.lock().unwrap();
        assert!(seen[0].stale);
        assert!(!seen[1].stale);
    }

    #[tokio::test(start_paused = true)]
    async fn hash_watches_send_the_hash_not_the_index() {
        let seen = Arc::new(Mutex::new(Vec::<QueryOptions>::new()));
        let seen2 = seen.clone();
        let mut n = 0u32;
        let cfg = WatchConfig {
            by_hash: true,
            ..fast()
        };
        let mut w = Watch::new("t", cfg, move |opts: QueryOptions| {
            seen2.lock().unwrap().push(opts);
            n += 1;
            let value = format!("v{n}");
            async move {
                Ok(Response {
                    value,
                    meta: QueryMeta {
                        content_hash: Some(format!("h{n}")),
                        ..QueryMeta::default()
                    },
                })
            }
        });
        w.next().await.unwrap();
        w.next().await.unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen[1].hash.as_deref(), Some("h1"));
        assert_eq!(seen[1].index, None);
    }
}
