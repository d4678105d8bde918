//! "Run while leading": the one loop the coordinator and the standalone
//! watcher share. Contend for the lock; while this replica leads, run the
//! round's tasks in a [`JoinSet`]; end the round when leadership is lost,
//! on shutdown, or when any task ends (a task that returns or panics early
//! leaves the round incomplete, and a half-working leader is worse than
//! another replica taking over). Then release the lock and, unless shutting
//! down, contend again, after a back-off if the round failed.
//!
//! Every task is awaited before the next round starts: none outlives its
//! round, and a panic is logged with the task's name, never dropped.
//!
//! When leadership is lost the round's tasks are aborted, not asked to
//! finish: a deposed leader must not complete a step it started (an AWS call
//! cannot be fenced in Consul's transaction), and everything a task would
//! lose lives in KV, from which the next leader rebuilds. This is what lets
//! the lock-delay be short (see `consul::lock`). On shutdown or after a task
//! ended, the tasks stop at their own pace.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Error;
use super::lock::{Fence, LeaderLock};

/// The tasks of one round, each with a name for the logs.
#[derive(Debug, Default)]
pub struct Round {
    tasks: JoinSet<&'static str>,
}

impl Round {
    /// Starts a task of this round. It must return when the round's token
    /// is cancelled.
    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(async move {
            task.await;
            name
        });
    }

    /// Waits until `stop` is cancelled or a task ends; answers whether a
    /// task ended (or panicked) first.
    async fn supervise(&mut self, stop: &CancellationToken) -> bool {
        if self.tasks.is_empty() {
            stop.cancelled().await;
            return false;
        }
        tokio::select! {
            _ = stop.cancelled() => false,
            Some(ended) = self.tasks.join_next() => {
                match ended {
                    Ok(name) if !stop.is_cancelled() => {
                        tracing::error!(task = name, "A task of the leadership round ended early; ending the round.");
                    }
                    Ok(_) => return false,
                    Err(e) => log_panic(e),
                }
                true
            }
        }
    }

    /// Stops every task at its next await point (leadership lost).
    fn abort(&mut self) {
        self.tasks.abort_all();
    }

    /// Awaits every task (after the round was cancelled or aborted).
    async fn drain(&mut self) {
        while let Some(ended) = self.tasks.join_next().await {
            if let Err(e) = ended {
                log_panic(e);
            }
        }
    }
}

fn log_panic(e: tokio::task::JoinError) {
    if e.is_panic() {
        tracing::error!(error = %e, "A task of the leadership round panicked; ending the round.");
    }
}

/// What a round is started with.
#[derive(Debug)]
pub struct RoundContext<'a> {
    /// The leader's fence, or `None` when running without a lock.
    pub fence: Option<&'a Fence>,
    /// Cancelled when the round ends; every task must stop then.
    pub cancel: CancellationToken,
}

/// Runs rounds until `shutdown`: with `lock`, only while this replica holds
/// it; without, one round at a time all the same (supervised, restarted
/// after a failure). `start` spawns the round's tasks. Errors only for a
/// lock failure retrying cannot fix (a 403).
pub async fn run_while_leading<S>(
    lock: Option<&LeaderLock>,
    what: &'static str,
    shutdown: &CancellationToken,
    mut start: S,
) -> Result<(), Error>
where
    S: FnMut(RoundContext<'_>, &mut Round),
{
    let mut failures = 0u32;
    loop {
        let leadership = match lock {
            Some(lock) => match lock.acquire(shutdown).await? {
                Some(l) => Some(l),
                None => return Ok(()),
            },
            None => None,
        };
        let round = shutdown.child_token();
        let lost = leadership.as_ref().map(|l| l.lost());
        if let Some(l) = &leadership {
            tracing::info!(role = what, key = %l.fence().key, lock_index = l.fence().lock_index, "Leadership acquired.");
        }
        let mut tasks = Round::default();
        start(
            RoundContext {
                fence: leadership.as_ref().map(|l| l.fence()),
                cancel: round.clone(),
            },
            &mut tasks,
        );
        let lost_signal = async {
            match &lost {
                Some(lost) => lost.cancelled().await,
                None => std::future::pending().await,
            }
        };
        // The round token is a child of `shutdown`: supervision also ends on
        // shutdown.
        let failed = tokio::select! {
            failed = tasks.supervise(&round) => failed,
            () = lost_signal => false,
        };
        round.cancel();
        if lost.as_ref().is_some_and(CancellationToken::is_cancelled) {
            tasks.abort();
        }
        tasks.drain().await;
        if let Some(l) = leadership {
            let lost_it = lost.as_ref().is_some_and(CancellationToken::is_cancelled);
            if !lost_it {
                if let Err(e) = l.release().await {
                    tracing::warn!(role = what, error = %e, "Cannot release the leader lock; it expires with its session.");
                }
            } else {
                tracing::warn!(
                    role = what,
                    "Leadership lost; stopped acting, contending again."
                );
            }
        }
        if shutdown.is_cancelled() {
            return Ok(());
        }
        if failed {
            failures += 1;
            let pause =
                crate::backoff::delay(failures, Duration::from_secs(1), Duration::from_secs(60));
            tracing::warn!(role = what, retry_in = ?pause, "Round failed; starting again after a pause.");
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(pause) => {}
            }
        } else {
            failures = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_ends_the_round_and_a_new_one_starts() {
        let shutdown = CancellationToken::new();
        let rounds = Arc::new(AtomicU32::new(0));
        let stopped_siblings = Arc::new(AtomicU32::new(0));
        let (r, s, sd) = (rounds.clone(), stopped_siblings.clone(), shutdown.clone());
        let run = tokio::spawn(async move {
            run_while_leading(None, "test", &sd, |cx, round| {
                let n = r.fetch_add(1, Ordering::SeqCst);
                let cancel = cx.cancel.clone();
                let s = s.clone();
                round.spawn("sibling", async move {
                    cancel.cancelled().await;
                    s.fetch_add(1, Ordering::SeqCst);
                });
                if n < 2 {
                    round.spawn("faulty", async { panic!("boom") });
                }
            })
            .await
        });
        // Two failed rounds (with back-off between them), then a healthy one.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 3);
        assert_eq!(
            stopped_siblings.load(Ordering::SeqCst),
            2,
            "every task of a failed round is stopped and awaited"
        );
        shutdown.cancel();
        assert!(run.await.is_ok_and(|r| r.is_ok()));
        assert_eq!(stopped_siblings.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_returning_early_ends_the_round() {
        let shutdown = CancellationToken::new();
        let rounds = Arc::new(AtomicU32::new(0));
        let (r, sd) = (rounds.clone(), shutdown.clone());
        let run = tokio::spawn(async move {
            run_while_leading(None, "test", &sd, |_, round| {
                r.fetch_add(1, Ordering::SeqCst);
                round.spawn("quitter", async {});
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(rounds.load(Ordering::SeqCst) >= 2);
        shutdown.cancel();
        assert!(run.await.is_ok_and(|r| r.is_ok()));
    }
}
