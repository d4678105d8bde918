//! The load generator: traffic to the `web` instances that Consul reports
//! passing, as a load balancer would send it, and an account of every
//! request that failed.
//!
//! It keeps the set of targets with a blocking query on
//! `/v1/health/service/<service>?passing` (index and wait, as Consul's docs
//! describe), so it stops picking an instance as soon as Consul takes it out
//! of the passing set (maintenance, a failing check, deregistration) and
//! picks up new ones as soon as they pass. It sends `GET /` round-robin over
//! the targets at a steady rate (open loop: requests are sent on schedule
//! whether or not earlier ones have answered), or picks each request's target
//! at random with a seeded generator when [`LoadConfig::seed`] is set (a run
//! can then be repeated request for request), and counts successes (2xx,
//! body read in full) and failures with their time, target and cause.
//! A request to an instance that is draining but still serving succeeds;
//! that is the point of draining.
//!
//! When Consul reports no passing target, the tick counts as a failure with
//! [`FailureCause::NoTarget`]: a load balancer with no healthy backend
//! answers 503 to its client. When Consul cannot be reached, the last known
//! targets are kept.
//!
//! The [`LoadReport`] has a time series ([`Sample`] per
//! [`LoadConfig::bucket`]: sent, ok, failed, targets passing) for charts.
//!
//! # What it must never do
//!
//! - Send a request off loopback: Consul must be on loopback, a target whose
//!   address is not a loopback IP is ignored (and logged), and redirects are
//!   not followed.
//! - Run unbounded: the rate is capped at [`MAX_RATE`] per second, every
//!   request has a time-out, it stops by itself after
//!   [`LoadConfig::stop_after`], on [`LoadHandle::stop`], or when its handle
//!   is dropped; it keeps at most [`MAX_FAILURES_KEPT`] failure records.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The highest rate accepted, requests per second.
pub const MAX_RATE: u32 = 1000;
/// The most failure records kept; later failures are counted only.
pub const MAX_FAILURES_KEPT: usize = 100_000;
/// The longest request time-out accepted.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// The `wait` of the blocking query on Consul.
const CONSUL_WAIT: Duration = Duration::from_secs(5);
/// The longest pause between attempts while Consul cannot be reached.
const MAX_CONSUL_BACKOFF: Duration = Duration::from_secs(2);
/// Characters escaped in the service name put in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

/// Why the load generator cannot start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Consul is not on loopback.
    #[error("the load generator only talks to loopback; Consul at {0} is not on loopback")]
    NotLoopback(SocketAddr),
    /// A setting is out of range.
    #[error("invalid load generator setting: {0}")]
    Config(String),
    /// An HTTP client could not be built.
    #[error("cannot build an HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// The first query of the passing instances failed.
    #[error("cannot read the passing instances from Consul: {0}")]
    Consul(String),
}

/// What traffic to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadConfig {
    /// A Consul HTTP address on loopback (any agent of the cluster).
    pub consul: SocketAddr,
    /// The Consul service whose passing instances are the targets.
    pub service: String,
    /// Requests per second, 1 to [`MAX_RATE`].
    pub rate_per_sec: u32,
    /// Time-out of one request, connection and body included.
    pub timeout: Duration,
    /// Stop sending this long after the start; `None` runs until
    /// [`LoadHandle::stop`] or drop.
    pub stop_after: Option<Duration>,
    /// Width of one [`Sample`] of the time series (at least 10 ms).
    pub bucket: Duration,
    /// `None`: round-robin over the targets. `Some(seed)`: each request goes
    /// to a target picked at random by a generator seeded with it, as a
    /// load balancer with a random policy would (the demo passes its
    /// `--seed`, so the same seed makes the same choices).
    pub seed: Option<u64>,
    /// The Consul ACL token sent with the health queries (a read token,
    /// see [`crate::acl_roles::create_read_token`]); `None` sends none.
    pub token: Option<crate::acl_roles::Secret>,
}

impl LoadConfig {
    /// `GET /` to the passing `web` instances, 50 per second, 2 s time-out,
    /// one-second samples, until stopped.
    pub fn new(consul: SocketAddr) -> Self {
        Self {
            consul,
            service: "web".to_owned(),
            rate_per_sec: 50,
            timeout: Duration::from_secs(2),
            stop_after: None,
            bucket: Duration::from_secs(1),
            seed: None,
            token: None,
        }
    }

    fn validate(&self) -> Result<(), LoadError> {
        if !self.consul.ip().is_loopback() {
            return Err(LoadError::NotLoopback(self.consul));
        }
        if self.service.is_empty() {
            return Err(LoadError::Config("the service name is empty".into()));
        }
        if !(1..=MAX_RATE).contains(&self.rate_per_sec) {
            return Err(LoadError::Config(format!(
                "rate {} per second is outside 1..={MAX_RATE}",
                self.rate_per_sec
            )));
        }
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            return Err(LoadError::Config(format!(
                "time-out {:?} is outside (0, {MAX_TIMEOUT:?}]",
                self.timeout
            )));
        }
        if self.bucket < Duration::from_millis(10) {
            return Err(LoadError::Config(format!(
                "bucket {:?} is below 10ms",
                self.bucket
            )));
        }
        Ok(())
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureCause {
    /// Consul reported no passing instance: nothing to send to.
    NoTarget,
    /// The instance answered with a status other than 2xx.
    Status(u16),
    /// The connection could not be made (refused, reset while connecting).
    Connect(String),
    /// No full answer within the time-out.
    Timeout,
    /// The connection broke after it was made (reset, closed mid-answer).
    Transport(String),
}

impl std::fmt::Display for FailureCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoTarget => f.write_str("no passing target"),
            Self::Status(code) => write!(f, "status {code}"),
            Self::Connect(e) => write!(f, "connect error: {e}"),
            Self::Timeout => f.write_str("timed out"),
            Self::Transport(e) => write!(f, "transport error: {e}"),
        }
    }
}

/// One failed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// When it was sent, from the start of the load.
    pub at: Duration,
    /// Where it was sent (`None` for [`FailureCause::NoTarget`]).
    pub target: Option<SocketAddr>,
    /// Why it failed.
    pub cause: FailureCause,
}

/// One bucket of the time series. Requests count in the bucket they were
/// sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Start of the bucket, from the start of the load.
    pub at: Duration,
    /// Requests sent.
    pub sent: u64,
    /// Of those, succeeded.
    pub ok: u64,
    /// Of those, failed.
    pub failed: u64,
    /// Fewest passing targets during the bucket.
    pub targets_min: usize,
    /// Most passing targets during the bucket.
    pub targets_max: usize,
}

/// Requests to one target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetStats {
    /// Requests sent to it.
    pub sent: u64,
    /// Of those, succeeded.
    pub ok: u64,
    /// Of those, failed.
    pub failed: u64,
}

/// What the load generator saw. Once it stopped, `sent == ok + failed`;
/// while it runs, requests in flight are counted in `sent` only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Wall-clock time of the start.
    pub started_at: SystemTime,
    /// How long it sent (up to now while running).
    pub elapsed: Duration,
    /// Requests sent (ticks with no target included).
    pub sent: u64,
    /// Requests that succeeded.
    pub ok: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Every failure, in completion order (at most [`MAX_FAILURES_KEPT`]).
    pub failures: Vec<Failure>,
    /// Failures counted but not kept, beyond [`MAX_FAILURES_KEPT`].
    pub failures_not_kept: u64,
    /// Fewest passing targets seen since the start.
    pub min_targets_seen: usize,
    /// Requests per target.
    pub per_target: BTreeMap<SocketAddr, TargetStats>,
    /// Width of a sample.
    pub bucket: Duration,
    /// The time series, one sample per bucket from the start.
    pub series: Vec<Sample>,
}

/// Entry point: see [`Load::start`].
#[derive(Debug)]
pub struct Load;

impl Load {
    /// Validates `config`, reads the passing instances once (an error if
    /// Consul does not answer), and starts sending.
    pub async fn start(config: LoadConfig) -> Result<LoadHandle, LoadError> {
        config.validate()?;
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(value) = config.token.as_ref().and_then(|t| t.header_value()) {
            headers.insert("X-Consul-Token", value);
        }
        let consul_http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .default_headers(headers)
            .build()
            .map_err(LoadError::HttpClient)?;
        let app_http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(LoadError::HttpClient)?;
        let mut resolver = Resolver {
            http: consul_http,
            url: format!(
                "http://{}/v1/health/service/{}",
                config.consul,
                utf8_percent_encode(&config.service, SEGMENT)
            ),
            ignored: HashSet::new(),
        };
        let (targets, index) = resolver.query(0, None).await.map_err(LoadError::Consul)?;

        let shared = Arc::new(Shared {
            start: Instant::now(),
            started_at: SystemTime::now(),
            bucket: config.bucket,
            timeout: config.timeout,
            stats: Mutex::new(Stats::new(targets.len())),
            targets: Mutex::new(targets.clone()),
        });
        let cancel = CancellationToken::new();
        let sender_done = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracker.spawn(resolve_loop(
            Arc::clone(&shared),
            resolver,
            index,
            cancel.clone(),
        ));
        tracker.spawn(send_loop(
            Arc::clone(&shared),
            app_http,
            Pace {
                rate: config.rate_per_sec,
                stop_after: config.stop_after,
                picker: Picker::new(config.seed),
            },
            cancel.clone(),
            sender_done.clone(),
            tracker.clone(),
        ));
        tracing::info!(consul = %config.consul, service = %config.service,
            rate_per_sec = config.rate_per_sec, stop_after = ?config.stop_after,
            targets = ?targets, "Load generator started.");
        Ok(LoadHandle {
            shared,
            cancel,
            sender_done,
            tracker,
            stop_after: config.stop_after,
        })
    }
}

/// A running load generator. Dropping it stops it (requests in flight end
/// within their time-out).
#[derive(Debug)]
pub struct LoadHandle {
    shared: Arc<Shared>,
    cancel: CancellationToken,
    sender_done: CancellationToken,
    tracker: TaskTracker,
    stop_after: Option<Duration>,
}

impl LoadHandle {
    /// The targets it sends to now (the passing instances), sorted.
    pub fn targets(&self) -> Vec<SocketAddr> {
        lock(&self.shared.targets).clone()
    }

    /// Whether it stopped sending (`stop_after` passed).
    pub fn is_finished(&self) -> bool {
        self.sender_done.is_cancelled()
    }

    /// What it saw so far.
    pub fn report(&self) -> LoadReport {
        self.shared.report()
    }

    /// Waits until `stop_after` has passed (at once when there is none),
    /// then stops as [`LoadHandle::stop`] does.
    pub async fn finish(self) -> LoadReport {
        if self.stop_after.is_some() {
            self.sender_done.cancelled().await;
        }
        self.stop().await
    }

    /// Stops sending and following Consul, waits for the requests in flight
    /// (at most one time-out), and answers the final report.
    pub async fn stop(self) -> LoadReport {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        let report = self.shared.report();
        tracing::info!(
            sent = report.sent,
            ok = report.ok,
            failed = report.failed,
            min_targets_seen = report.min_targets_seen,
            "Load generator stopped."
        );
        report
    }
}

impl Drop for LoadHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[derive(Debug)]
struct Shared {
    start: Instant,
    started_at: SystemTime,
    bucket: Duration,
    timeout: Duration,
    stats: Mutex<Stats>,
    /// Sorted, loopback only.
    targets: Mutex<Vec<SocketAddr>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn report(&self) -> LoadReport {
        let mut stats = lock(&self.stats);
        let elapsed = stats.ended.unwrap_or_else(|| self.start.elapsed());
        // Buckets up to the end, even when nothing happened in them.
        if !elapsed.is_zero() {
            stats.sample(elapsed.saturating_sub(Duration::from_nanos(1)), self.bucket);
        }
        LoadReport {
            started_at: self.started_at,
            elapsed,
            sent: stats.sent,
            ok: stats.ok,
            failed: stats.failed,
            failures: stats.failures.clone(),
            failures_not_kept: stats.failures_not_kept,
            min_targets_seen: stats.min_targets,
            per_target: stats.per_target.clone(),
            bucket: self.bucket,
            series: stats.series.clone(),
        }
    }

    /// Counts a request sent at `at` (from the start) to `target`.
    fn sent(&self, at: Duration, target: Option<SocketAddr>) {
        let mut stats = lock(&self.stats);
        stats.sent += 1;
        stats.sample(at, self.bucket).sent += 1;
        if let Some(t) = target {
            stats.per_target.entry(t).or_default().sent += 1;
        }
    }

    /// Counts the outcome of a request sent at `at`.
    fn outcome(&self, at: Duration, target: Option<SocketAddr>, result: Result<(), FailureCause>) {
        let mut stats = lock(&self.stats);
        match result {
            Ok(()) => {
                stats.ok += 1;
                stats.sample(at, self.bucket).ok += 1;
                if let Some(t) = target {
                    stats.per_target.entry(t).or_default().ok += 1;
                }
            }
            Err(cause) => {
                stats.failed += 1;
                stats.sample(at, self.bucket).failed += 1;
                if let Some(t) = target {
                    stats.per_target.entry(t).or_default().failed += 1;
                }
                tracing::debug!(target = ?target, cause = %cause, "Request failed.");
                if stats.failures.len() < MAX_FAILURES_KEPT {
                    stats.failures.push(Failure { at, target, cause });
                } else {
                    stats.failures_not_kept += 1;
                }
            }
        }
    }

    /// Records a new target set.
    fn set_targets(&self, targets: Vec<SocketAddr>) {
        let n = targets.len();
        *lock(&self.targets) = targets;
        let at = self.start.elapsed();
        let mut stats = lock(&self.stats);
        // Buckets before this one had the old count.
        let sample = stats.sample(at, self.bucket);
        sample.targets_min = sample.targets_min.min(n);
        sample.targets_max = sample.targets_max.max(n);
        stats.targets_now = n;
        stats.min_targets = stats.min_targets.min(n);
    }
}

#[derive(Debug)]
struct Stats {
    sent: u64,
    ok: u64,
    failed: u64,
    failures: Vec<Failure>,
    failures_not_kept: u64,
    min_targets: usize,
    targets_now: usize,
    per_target: BTreeMap<SocketAddr, TargetStats>,
    series: Vec<Sample>,
    /// When the sender stopped, from the start.
    ended: Option<Duration>,
}

impl Stats {
    fn new(targets: usize) -> Self {
        Self {
            sent: 0,
            ok: 0,
            failed: 0,
            failures: Vec::new(),
            failures_not_kept: 0,
            min_targets: targets,
            targets_now: targets,
            per_target: BTreeMap::new(),
            series: Vec::new(),
            ended: None,
        }
    }

    /// The sample holding `at`, adding the samples up to it.
    fn sample(&mut self, at: Duration, bucket: Duration) -> &mut Sample {
        let index = usize::try_from(at.as_nanos() / bucket.as_nanos().max(1)).unwrap_or(usize::MAX);
        // `at` never lies past the end of the run, so this is bounded by
        // run length / bucket; the cap guards against a clock surprise.
        let index = index.min(self.series.len() + 1_000_000);
        while self.series.len() <= index {
            let n = u32::try_from(self.series.len()).unwrap_or(u32::MAX);
            self.series.push(Sample {
                at: bucket.saturating_mul(n),
                sent: 0,
                ok: 0,
                failed: 0,
                targets_min: self.targets_now,
                targets_max: self.targets_now,
            });
        }
        &mut self.series[index]
    }
}

/// Reads the passing instances of the service from Consul.
#[derive(Debug)]
struct Resolver {
    http: reqwest::Client,
    /// `http://consul/v1/health/service/<service>`.
    url: String,
    /// Addresses ignored (not on loopback), logged once each.
    ignored: HashSet<String>,
}

impl Resolver {
    /// One query: non-blocking with `wait: None`, else blocking from
    /// `index`. Answers the sorted loopback targets and the new index.
    async fn query(
        &mut self,
        index: u64,
        wait: Option<Duration>,
    ) -> Result<(Vec<SocketAddr>, u64), String> {
        let (url, timeout) = match wait {
            Some(wait) => (
                format!(
                    "{}?passing&index={index}&wait={}ms",
                    self.url,
                    wait.as_millis()
                ),
                // Consul adds up to wait/16 of jitter.
                wait + wait / 16 + Duration::from_secs(5),
            ),
            None => (format!("{}?passing", self.url), Duration::from_secs(5)),
        };
        let response = self
            .http
            .get(&url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| chain(&e))?;
        let status = response.status();
        let new_index = response
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(format!("Consul answered {status}: {}", body.trim()));
        }
        let entries: Vec<serde_json::Value> = response
            .json()
            .await
            .map_err(|e| format!("unexpected answer from Consul: {}", chain(&e)))?;
        let mut targets = Vec::new();
        for entry in &entries {
            match target_of(entry) {
                Ok(addr) => targets.push(addr),
                Err(what) => {
                    if self.ignored.insert(what.clone()) {
                        tracing::warn!(entry = %what,
                            "Ignoring a passing instance that is not a loopback address.");
                    }
                }
            }
        }
        targets.sort();
        targets.dedup();
        let new_index = new_index.ok_or("Consul's answer has no X-Consul-Index")?;
        Ok((targets, new_index))
    }
}

/// The address to send to for one `/v1/health/service` entry: the
/// service's address (the node's when empty) and port, loopback only.
fn target_of(entry: &serde_json::Value) -> Result<SocketAddr, String> {
    let service = &entry["Service"];
    let address = service["Address"]
        .as_str()
        .filter(|a| !a.is_empty())
        .or_else(|| entry["Node"]["Address"].as_str())
        .unwrap_or_default();
    let port = service["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(0);
    let id = service["ID"].as_str().unwrap_or_default();
    match address.parse::<IpAddr>() {
        Ok(ip) if ip.is_loopback() && port != 0 => Ok(SocketAddr::new(ip, port)),
        _ => Err(format!("{id} at {address}:{port}")),
    }
}

async fn resolve_loop(
    shared: Arc<Shared>,
    mut resolver: Resolver,
    mut index: u64,
    cancel: CancellationToken,
) {
    let mut failures = 0u32;
    loop {
        let asked = Instant::now();
        let answer = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            answer = resolver.query(index, Some(CONSUL_WAIT)) => answer,
        };
        match answer {
            Ok((targets, new_index)) => {
                if failures > 0 {
                    tracing::info!(
                        attempts = failures,
                        "Consul answers the load generator again."
                    );
                }
                failures = 0;
                // Consul's rule: an index that went backwards restarts from 0.
                let previous = index;
                index = if new_index < index {
                    0
                } else {
                    new_index.max(1)
                };
                let changed = *lock(&shared.targets) != targets;
                if changed {
                    tracing::info!(targets = ?targets, count = targets.len(),
                        "Load generator targets changed.");
                    shared.set_targets(targets);
                }
                // A server that answers at once without a new index must
                // not make this loop spin.
                if index == previous && asked.elapsed() < Duration::from_millis(10) {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                }
            }
            Err(error) => {
                failures += 1;
                let pause = Duration::from_millis(100)
                    .saturating_mul(1 << failures.min(5))
                    .min(MAX_CONSUL_BACKOFF);
                if failures == 1 {
                    tracing::warn!(error = %error, retry_in = ?pause,
                        "Cannot read the passing instances from Consul; keeping the last targets.");
                } else {
                    tracing::debug!(error = %error, attempt = failures, retry_in = ?pause,
                        "Still cannot read the passing instances from Consul.");
                }
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

async fn send_loop(
    shared: Arc<Shared>,
    http: reqwest::Client,
    pace: Pace,
    cancel: CancellationToken,
    done: CancellationToken,
    tracker: TaskTracker,
) {
    let Pace {
        rate,
        stop_after,
        mut picker,
    } = pace;
    let period = Duration::from_secs(1) / rate.max(1);
    let mut ticker = tokio::time::interval_at(shared.start, period);
    // Open loop: a late tick is sent at once, so the count matches the time.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let deadline = stop_after.map(|d| shared.start + d);
    let until_deadline = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until_deadline);
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = &mut until_deadline => break,
            _ = ticker.tick() => {}
        }
        let at = shared.start.elapsed();
        let target = {
            let targets = lock(&shared.targets);
            picker.index(targets.len()).map(|i| targets[i])
        };
        shared.sent(at, target);
        match target {
            None => shared.outcome(at, None, Err(FailureCause::NoTarget)),
            Some(target) => {
                tracker.spawn(request(Arc::clone(&shared), http.clone(), target, at));
            }
        }
    }
    lock(&shared.stats).ended = Some(
        shared
            .start
            .elapsed()
            .min(stop_after.unwrap_or(Duration::MAX)),
    );
    done.cancel();
}

/// How the sender sends: its rate, when it stops, how it picks targets.
#[derive(Debug)]
struct Pace {
    rate: u32,
    stop_after: Option<Duration>,
    picker: Picker,
}

/// Chooses the target of each request: round-robin, or at random from a
/// seeded generator.
#[derive(Debug)]
enum Picker {
    /// The count of requests so far.
    RoundRobin(usize),
    /// A generator that gives the same choices for the same seed.
    Seeded(Box<rand::rngs::StdRng>),
}

impl Picker {
    fn new(seed: Option<u64>) -> Self {
        use rand::SeedableRng as _;
        match seed {
            None => Self::RoundRobin(0),
            Some(seed) => Self::Seeded(Box::new(rand::rngs::StdRng::seed_from_u64(seed))),
        }
    }

    /// The index of the next target among `len`, `None` when there is none.
    fn index(&mut self, len: usize) -> Option<usize> {
        use rand::Rng as _;
        if len == 0 {
            return None;
        }
        Some(match self {
            Self::RoundRobin(next) => {
                let i = *next % len;
                *next = next.wrapping_add(1);
                i
            }
            Self::Seeded(rng) => rng.random_range(0..len),
        })
    }
}

/// One `GET /`, counted when it ends.
async fn request(shared: Arc<Shared>, http: reqwest::Client, target: SocketAddr, at: Duration) {
    let result = async {
        let response = http
            .get(format!("http://{target}/"))
            .timeout(shared.timeout)
            .send()
            .await?;
        let status = response.status();
        response.bytes().await?;
        Ok::<_, reqwest::Error>(status)
    }
    .await;
    let outcome = match result {
        Ok(status) if status.is_success() => Ok(()),
        Ok(status) => Err(FailureCause::Status(status.as_u16())),
        Err(e) if e.is_timeout() => Err(FailureCause::Timeout),
        Err(e) if e.is_connect() => Err(FailureCause::Connect(root_cause(&e))),
        Err(e) => Err(FailureCause::Transport(root_cause(&e))),
    };
    shared.outcome(at, Some(target), outcome);
}

/// The innermost source of an error (`Connection refused (os error 111)`),
/// without the wrapping that repeats the URL already in the failure.
fn root_cause(e: &dyn std::error::Error) -> String {
    let mut root = e;
    while let Some(source) = root.source() {
        root = source;
    }
    root.to_string()
}

/// An error and its sources, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn targets_are_loopback_service_addresses() {
        let entry = json!({
            "Node": {"Address": "127.0.0.1"},
            "Service": {"ID": "web-i-1", "Address": "127.0.0.1", "Port": 8080}
        });
        assert_eq!(
            target_of(&entry),
            Ok("127.0.0.1:8080".parse().unwrap_or_else(|_| unreachable!()))
        );
        let node_address = json!({
            "Node": {"Address": "127.0.0.2"},
            "Service": {"ID": "web-i-2", "Address": "", "Port": 8081}
        });
        assert_eq!(
            target_of(&node_address).map(|a| a.to_string()),
            Ok("127.0.0.2:8081".to_owned())
        );
        for refused in [
            json!({"Node": {"Address": "10.0.0.1"}, "Service": {"ID": "a", "Address": "", "Port": 80}}),
            json!({"Node": {"Address": "127.0.0.1"}, "Service": {"ID": "b", "Address": "93.184.216.34", "Port": 80}}),
            json!({"Node": {"Address": "127.0.0.1"}, "Service": {"ID": "c", "Address": "example.com", "Port": 80}}),
            json!({"Node": {"Address": "127.0.0.1"}, "Service": {"ID": "d", "Address": "127.0.0.1", "Port": 0}}),
        ] {
            assert!(target_of(&refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn samples_fill_gaps_with_the_current_target_count() {
        let mut stats = Stats::new(2);
        let bucket = Duration::from_millis(100);
        stats.sample(Duration::from_millis(50), bucket).sent += 1;
        stats.targets_now = 1;
        stats.sample(Duration::from_millis(350), bucket).sent += 1;
        assert_eq!(stats.series.len(), 4);
        assert_eq!(stats.series[0].targets_min, 2);
        assert_eq!(stats.series[1].targets_min, 1);
        assert_eq!(stats.series[3].at, Duration::from_millis(300));
        assert_eq!(stats.series.iter().map(|s| s.sent).sum::<u64>(), 2);
    }

    #[test]
    fn the_same_seed_picks_the_same_targets() {
        let picks = |seed| {
            let mut picker = Picker::new(seed);
            (0..50)
                .map(|_| picker.index(5).unwrap_or(usize::MAX))
                .collect::<Vec<_>>()
        };
        assert_eq!(picks(Some(7)), picks(Some(7)));
        assert_ne!(picks(Some(7)), picks(Some(8)));
        assert!(picks(Some(7)).iter().all(|&i| i < 5));
        assert_eq!(picks(None)[..6], [0, 1, 2, 3, 4, 0]);
        assert_eq!(Picker::new(Some(1)).index(0), None);
    }

    #[test]
    fn settings_are_bounded() {
        let ok = LoadConfig::new(SocketAddr::from(([127, 0, 0, 1], 8500)));
        assert!(ok.validate().is_ok());
        let off_loopback = LoadConfig::new(SocketAddr::from(([10, 0, 0, 1], 8500)));
        assert!(matches!(
            off_loopback.validate(),
            Err(LoadError::NotLoopback(_))
        ));
        for bad in [
            LoadConfig {
                rate_per_sec: 0,
                ..ok.clone()
            },
            LoadConfig {
                rate_per_sec: MAX_RATE + 1,
                ..ok.clone()
            },
            LoadConfig {
                timeout: Duration::ZERO,
                ..ok.clone()
            },
            LoadConfig {
                bucket: Duration::from_millis(1),
                ..ok.clone()
            },
            LoadConfig {
                service: String::new(),
                ..ok.clone()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(LoadError::Config(_))),
                "{bad:?}"
            );
        }
    }
}
