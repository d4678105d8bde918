//! The leader lock: one coordinator replica acts, the others wait.
//!
//! A replica creates a session (TTL, lock-delay, tied to its node's health
//! and to the checks in [`LockConfig::checks`]), renews it every TTL/2, and
//! takes the lock key with `?acquire=`. While another session holds the key
//! it blocks on the key (no polling); while the key is free but inside the
//! lock-delay of a lost leader, acquire answers `false` and it retries after
//! a short pause ([`LockConfig::retry`]).
//!
//! How fast a dead leader is replaced depends on what its session is tied
//! to. With the session TTL alone, Consul invalidates it only after up to
//! twice the TTL (at least 10 s), so a takeover takes 20 s or more. With a
//! short TTL check of the leader process itself in `checks` (the
//! coordinator's, see `coordinator::liveness`), the check goes critical
//! once the dead process stops refreshing it, Consul invalidates the
//! session at that moment, and the lock is free after the lock-delay: a
//! takeover takes about the check's TTL plus the lock-delay.
//!
//! Leadership ends, and [`Leadership::lost`] is cancelled, when: the session
//! renew answers 404 (the session is gone), no renew succeeded for a whole TTL
//! (we can no longer be sure we hold it), or the key no longer names our
//! session. Callers stop acting at once when the token fires.
//!
//! Leaders write with the [`Fence`] `(key, LockIndex, session)`: every KV
//! write carries a `check-session` of the lock key in the same `/v1/txn`, so
//! a deposed leader cannot write at all, and [`Fence::verify`] is checked
//! just before AWS calls, which cannot join a transaction. What the
//! lock-delay still covers is an AWS call already sent when leadership was
//! lost (the leader stops its tasks the moment it learns, see
//! `consul::leading`): a second or two, not Consul's default 15 s. It also
//! lets a check stand for a moment: a [`FenceProof`] is good for half the
//! lock-delay after it was taken, so a rollout's gate acts on a check made
//! just before its deadline instead of waiting for one after it. No
//! lock-delay can cover a leader process that stalls between the fence check
//! and the call longer than its check's TTL plus the lock-delay; AWS offers
//! no fencing token, so the rollout's actions are idempotent and derived
//! from the fenced state instead.
//!
//! Release is explicit and async ([`Leadership::release`]), never in `Drop`:
//! a process killed without releasing leaves the lock to expire with its
//! session (its check's TTL, else the session TTL), then the lock-delay.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::kv::PutOptions;
use super::types::{ServiceCheckRef, SessionRequest, go_duration};
use super::watch::backoff;
use super::{Client, Error, QueryOptions};

/// Settings of a leader lock.
#[derive(Debug, Clone, PartialEq)]
pub struct LockConfig {
    /// KV key of the lock.
    pub key: String,
    /// Who we are (host name, replica name): written into the key and the
    /// session name, so an operator can see who leads.
    pub holder: String,
    /// Session TTL (10 s .. 24 h). Without `checks`, a dead leader is
    /// replaced after about TTL (Consul may take up to 2×TTL) plus the
    /// lock-delay; with them, it is a backstop.
    pub ttl: Duration,
    /// IDs of service checks on the session's node (the Consul agent this
    /// client talks to) the session depends on, besides `serfHealth`: the
    /// session is invalidated the moment one goes critical, and cannot be
    /// created while one is critical or missing (Consul answers 500, which
    /// is retried). Empty: the node's health only.
    pub checks: Vec<String>,
    /// Consul's lock-delay for the session.
    pub lock_delay: Duration,
    /// Pause between acquire attempts while the key is free but refused
    /// (lock-delay in force), plus up to a quarter of it of jitter. Short:
    /// it adds to every takeover.
    pub retry: Duration,
    /// `wait` of the blocking read on a key held by someone else.
    pub wait: Duration,
}

impl LockConfig {
    /// Defaults for `key`, held by `holder`.
    pub fn new(key: impl Into<String>, holder: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            holder: holder.into(),
            ttl: Duration::from_secs(15),
            lock_delay: Duration::from_secs(15),
            checks: Vec::new(),
            retry: Duration::from_millis(250),
            wait: Duration::from_secs(60),
        }
    }
}

/// Proof of leadership to attach to writes: the key, the session holding it
/// and the LockIndex of this acquisition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fence {
    /// Lock key.
    pub key: String,
    /// Our session.
    pub session: String,
    /// LockIndex when we acquired; a later acquisition by anyone increments it.
    pub lock_index: u64,
}

impl Fence {
    /// Whether the lock key still names this session and LockIndex, read
    /// consistently: in Consul's default mode a server that lost its
    /// leadership may answer from its old state for up to its leader lease.
    pub async fn verify(&self, client: &Client) -> Result<bool, Error> {
        let opts = QueryOptions {
            consistent: true,
            ..QueryOptions::default()
        };
        let r = client.kv_get(&self.key, &opts).await?;
        Ok(match r.value {
            Some(kv) => {
                kv.session.as_deref() == Some(self.session.as_str())
                    && kv.lock_index == self.lock_index
            }
            None => false,
        })
    }
}

/// A [`Fence`] that remembers when it was last proved, shared by the
/// tasks of one leading round.
///
/// A verification whose request was sent at `T` and that found the key
/// naming our session proves the session held the lock at some moment
/// after `T`. If it is lost after that, Consul invalidates it (destroyed,
/// its check critical, its TTL out) and keeps the lock from anyone else
/// for the lock-delay: no other leader can act before `T + lock_delay`.
/// (A voluntary release skips the lock-delay, but this process releases
/// only after its tasks have stopped.) So a proof is taken as good for
/// half the lock-delay after its request was sent ([`FenceProof::ensure`]),
/// leaving the other half for the AWS call it guards, and a gate can act
/// without a Consul round trip on its path when a proof was taken just
/// before. With a lock-delay of 0 no proof is ever good: every check reads.
/// The clocks are this process's monotonic clock and the Consul server's,
/// over spans of a second or two.
///
/// What lock-delay does not cover, a proof cannot either: someone deleting
/// or overwriting the lock key by hand frees it at once. The key is
/// watched (see [`Leadership::lost`]), and once `ended` fires (the round
/// ends when leadership is lost) no proof counts any more.
#[derive(Debug)]
pub struct FenceProof {
    fence: Fence,
    good_for: Duration,
    /// When the request of the last verification that held was sent.
    proved: std::sync::Mutex<Option<Instant>>,
    ended: CancellationToken,
}

impl FenceProof {
    /// `fence`, held under a session with `lock_delay` until `ended`
    /// fires; not yet proved.
    pub fn new(fence: Fence, lock_delay: Duration, ended: CancellationToken) -> Self {
        Self {
            fence,
            good_for: lock_delay / 2,
            proved: std::sync::Mutex::new(None),
            ended,
        }
    }

    /// The fence.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Until when the last proof is good, if there is one.
    pub fn good_until(&self) -> Option<Instant> {
        let proved = *self
            .proved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        proved
            .filter(|_| !self.good_for.is_zero())
            .map(|t| t + self.good_for)
    }

    /// Reads the lock key ([`Fence::verify`]) and remembers the proof when
    /// it holds; forgets any proof when it does not.
    pub async fn verify(&self, client: &Client) -> Result<bool, Error> {
        let sent = Instant::now();
        let holds = self.fence.verify(client).await?;
        let mut proved = self
            .proved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *proved = match (holds, *proved) {
            (false, _) => None,
            (true, Some(earlier)) if earlier > sent => Some(earlier),
            (true, _) => Some(sent),
        };
        Ok(holds)
    }

    /// Whether we lead at `at`: not once `ended` has fired; from the last
    /// proof if it is still good then; else by reading the lock key.
    pub async fn ensure_at(&self, client: &Client, at: Instant) -> Result<bool, Error> {
        if self.ended.is_cancelled() {
            return Ok(false);
        }
        if self.good_until().is_some_and(|until| until > at) {
            return Ok(true);
        }
        self.verify(client).await
    }

    /// Whether we lead now; see [`FenceProof::ensure_at`].
    pub async fn ensure(&self, client: &Client) -> Result<bool, Error> {
        self.ensure_at(client, Instant::now()).await
    }
}

/// A session renewed in the background until stopped or lost.
#[derive(Debug)]
struct KeptSession {
    id: String,
    /// Cancelled when the session is gone or can no longer be trusted.
    lost: CancellationToken,
    /// Cancelled to stop renewing.
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl KeptSession {
    async fn create(client: &Client, config: &LockConfig) -> Result<Self, Error> {
        let id = client
            .session_create(&SessionRequest {
                name: format!("rollgate leader lock ({})", config.holder),
                ttl: go_duration(config.ttl),
                lock_delay: go_duration(config.lock_delay),
                behavior: "release".into(),
                service_checks: config
                    .checks
                    .iter()
                    .map(|id| ServiceCheckRef { id: id.clone() })
                    .collect(),
            })
            .await?;
        let lost = CancellationToken::new();
        let stop = CancellationToken::new();
        let task = tokio::spawn(renew_loop(
            client.clone(),
            id.clone(),
            config.ttl,
            lost.clone(),
            stop.clone(),
        ));
        Ok(Self {
            id,
            lost,
            stop,
            task,
        })
    }

    async fn destroy(self, client: &Client) -> Result<(), Error> {
        self.stop.cancel();
        let _ = self.task.await;
        client.session_destroy(&self.id).await.map(drop)
    }
}

async fn renew_loop(
    client: Client,
    id: String,
    ttl: Duration,
    lost: CancellationToken,
    stop: CancellationToken,
) {
    let mut last_ok = Instant::now();
    let mut delay = ttl / 2;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        match client.session_renew(&id).await {
            Ok(Some(_)) => {
                last_ok = Instant::now();
                delay = ttl / 2;
            }
            Ok(None) => {
                tracing::warn!(session = %id, "Consul session is gone; leadership lost.");
                lost.cancel();
                return;
            }
            Err(e) => {
                if last_ok.elapsed() >= ttl {
                    tracing::warn!(session = %id, error = %e,
                        "No session renewal succeeded for a whole TTL; leadership can no longer be trusted.");
                    lost.cancel();
                    return;
                }
                tracing::warn!(session = %id, error = %e, "Session renewal failed; retrying.");
                delay = (ttl / 10).max(Duration::from_millis(200));
            }
        }
    }
}

/// Contends for a lock key.
#[derive(Debug, Clone)]
pub struct LeaderLock {
    client: Client,
    config: LockConfig,
    /// Whether the token ever worked (the lock was taken with it). A
    /// 403 at start is a configuration error to report and exit on; a 403
    /// after that is a token revoked or a policy changed under a running
    /// replica, which waits for a valid token instead of exiting.
    worked: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Held leadership. Drop does not release it: call [`Leadership::release`].
#[derive(Debug)]
pub struct Leadership {
    client: Client,
    session: KeptSession,
    fence: Fence,
    monitor: JoinHandle<()>,
}

impl LeaderLock {
    /// A lock on `config.key` through `client`.
    pub fn new(client: Client, config: LockConfig) -> Self {
        Self {
            client,
            config,
            worked: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// Waits until this replica holds the lock. Answers `None` when
    /// `shutdown` is cancelled first (the session is destroyed then), and an
    /// error only for problems retrying cannot fix (a 403, a bad key).
    pub async fn acquire(&self, shutdown: &CancellationToken) -> Result<Option<Leadership>, Error> {
        let mut failures = 0u32;
        let mut session: Option<KeptSession> = None;
        loop {
            if shutdown.is_cancelled() {
                if let Some(s) = session.take() {
                    let _ = s.destroy(&self.client).await;
                }
                return Ok(None);
            }
            match self.attempt(&mut session, shutdown).await {
                Ok(Some(leadership)) => {
                    // Only a lock actually taken proves the token right: a
                    // token that can make sessions but not write the key is
                    // a configuration error, reported at start.
                    self.worked
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    return Ok(Some(leadership));
                }
                Ok(None) => failures = 0,
                Err(e) if e.is_retryable() => {
                    failures += 1;
                    let pause = backoff(
                        failures,
                        Duration::from_millis(250),
                        Duration::from_secs(30),
                    );
                    tracing::warn!(key = %self.config.key, error = %e, retry_in = ?pause,
                        "Leader lock attempt failed; retrying.");
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
                Err(e @ Error::PermissionDenied { .. })
                    if self.worked.load(std::sync::atomic::Ordering::Relaxed) =>
                {
                    failures += 1;
                    let pause = backoff(failures, Duration::from_secs(1), Duration::from_secs(30));
                    tracing::error!(key = %self.config.key, error = %e, retry_in = ?pause,
                        "Consul refuses this replica's token, which worked before (revoked, expired or its policy changed); acting on nothing until a valid token works again.");
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
                Err(e) => {
                    if let Some(s) = session.take() {
                        let _ = s.destroy(&self.client).await;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// One round: make sure we have a live session, try to acquire, and if
    /// refused wait for a reason to try again.
    async fn attempt(
        &self,
        session: &mut Option<KeptSession>,
        shutdown: &CancellationToken,
    ) -> Result<Option<Leadership>, Error> {
        if session.as_ref().is_some_and(|s| s.lost.is_cancelled()) {
            if let Some(s) = session.take() {
                let _ = s.destroy(&self.client).await;
            }
        }
        if session.is_none() {
            *session = Some(KeptSession::create(&self.client, &self.config).await?);
        }
        let Some(s) = session.as_ref() else {
            return Ok(None);
        };
        let value = serde_json::json!({
            "holder": self.config.holder,
            "session": s.id,
            "pid": std::process::id(),
        })
        .to_string();
        let acquired = self
            .client
            .kv_put(
                &self.config.key,
                value.as_bytes(),
                &PutOptions {
                    acquire: Some(s.id.clone()),
                    ..PutOptions::default()
                },
            )
            .await?;
        let current = self
            .client
            .kv_get(&self.config.key, &QueryOptions::default())
            .await?;
        let holder = current.value.as_ref().and_then(|kv| kv.session.clone());
        if acquired && holder.as_deref() == Some(s.id.as_str()) {
            let lock_index = current.value.as_ref().map_or(0, |kv| kv.lock_index);
            let Some(kept) = session.take() else {
                return Ok(None);
            };
            tracing::info!(key = %self.config.key, session = %kept.id, lock_index,
                "Leader lock acquired.");
            return Ok(Some(self.lead(kept, lock_index)));
        }
        match holder {
            Some(other) => {
                // Held by someone else: block until the key changes.
                tracing::debug!(key = %self.config.key, holder = %other, "Leader lock held; waiting.");
                let opts = QueryOptions::blocking(current.meta.index.max(1), self.config.wait);
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = s.lost.cancelled() => {}
                    r = self.client.kv_get(&self.config.key, &opts) => { r?; }
                }
            }
            None => {
                // Free but refused: the lock-delay of a lost session is in force.
                let jitter = u64::try_from(self.config.retry.as_millis() / 4).unwrap_or(0) + 1;
                let pause =
                    self.config.retry + Duration::from_millis(rand::random::<u64>() % jitter);
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
        Ok(None)
    }

    fn lead(&self, session: KeptSession, lock_index: u64) -> Leadership {
        let fence = Fence {
            key: self.config.key.clone(),
            session: session.id.clone(),
            lock_index,
        };
        let monitor = tokio::spawn(monitor_key(
            self.client.clone(),
            fence.clone(),
            self.config.wait,
            session.lost.clone(),
            session.stop.clone(),
        ));
        Leadership {
            client: self.client.clone(),
            session,
            fence,
            monitor,
        }
    }
}

/// Cancels `lost` when the key stops naming our session.
async fn monitor_key(
    client: Client,
    fence: Fence,
    wait: Duration,
    lost: CancellationToken,
    stop: CancellationToken,
) {
    let mut index = 1u64;
    let mut failures = 0u32;
    loop {
        let opts = QueryOptions::blocking(index, wait);
        let r = tokio::select! {
            _ = stop.cancelled() => return,
            _ = lost.cancelled() => return,
            r = client.kv_get(&fence.key, &opts) => r,
        };
        match r {
            Ok(resp) => {
                failures = 0;
                let ours = resp.value.as_ref().is_some_and(|kv| {
                    kv.session.as_deref() == Some(fence.session.as_str())
                        && kv.lock_index == fence.lock_index
                });
                if !ours {
                    tracing::warn!(key = %fence.key, "Leader lock key no longer names our session; leadership lost.");
                    lost.cancel();
                    return;
                }
                index = if resp.meta.index < index {
                    1
                } else {
                    resp.meta.index.max(1)
                };
            }
            Err(e) => {
                // The renew loop decides about loss on Consul errors.
                failures += 1;
                let pause = backoff(
                    failures,
                    Duration::from_millis(250),
                    Duration::from_secs(10),
                );
                tracing::debug!(key = %fence.key, error = %e, "Leader lock watch failed; retrying.");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

impl Leadership {
    /// The fence to attach to and verify before writes.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Cancelled the moment leadership is lost; stop acting then.
    pub fn lost(&self) -> CancellationToken {
        self.session.lost.clone()
    }

    /// Gives the lock up: releases the key and destroys the session, so
    /// another replica can take over without waiting for the TTL. (The
    /// session's lock-delay does not apply to an explicit release.)
    pub async fn release(self) -> Result<(), Error> {
        self.session.stop.cancel();
        let _ = self.monitor.await;
        let released = self
            .client
            .kv_put(
                &self.fence.key,
                b"",
                &PutOptions {
                    release: Some(self.session.id.clone()),
                    ..PutOptions::default()
                },
            )
            .await;
        let destroyed = self.session.destroy(&self.client).await;
        tracing::info!(key = %self.fence.key, "Leader lock released.");
        released.map(drop).and(destroyed)
    }
}
