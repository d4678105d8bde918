//! The health watcher: turns Consul's check statuses into alerts.
//!
//! - [`config`]: the `[watch]` section;
//! - [`diff`]: Consul's answer digested into a snapshot, and transitions
//!   (pure);
//! - [`engine`]: thresholds, grouping, silences, inhibition, repeats (pure,
//!   with the clock passed in);
//! - [`meta`]: alerts about the watcher's blind spots (pure);
//! - [`store`]: the state in Consul KV, with `cas`;
//! - [`runner`]: the I/O loop ([`Watcher`]);
//! - [`run`]: `rollgate watch`: leader lock, watcher and outbox sender.
//!
//! The watcher never sends anything itself: it enqueues events in the
//! [`crate::notify::Outbox`] and the [`crate::notify::Sender`] delivers
//! them. It never trusts memory across a restart or a change of leader: the
//! state is reloaded from KV.

pub mod config;
pub mod diff;
pub mod engine;
pub mod meta;
pub mod runner;
pub mod store;

pub use self::runner::{Direct, Watcher};

use crate::config::Config;
use crate::consul::leading::{Round, RoundContext, run_while_leading};
use crate::consul::lock::{LeaderLock, LockConfig};
use crate::consul::{self, Client};
use crate::notify::route::Router;
use crate::notify::{Links, NotifyError, Outbox, Receivers, Sender};
use crate::shutdown::Shutdown;

/// `rollgate watch` could not run.
#[derive(Debug, thiserror::Error)]
pub enum AlertingError {
    /// The Consul client could not be built (configuration).
    #[error("cannot build the Consul client: {0}")]
    Consul(#[source] consul::Error),
    /// A receiver could not be built (configuration, secret not readable).
    #[error("cannot set up notifications: {0}")]
    Notify(#[from] NotifyError),
    /// The leader lock failed in a way retrying cannot fix (a 403).
    #[error("cannot take the watcher's leader lock: {0}")]
    Lock(#[source] consul::Error),
}

/// Runs the watcher and the outbox sender until `shutdown` is requested.
///
/// With `watch.leader_lock` (the default), only the replica holding
/// `<kv_prefix>/watch/leader` works; the others wait, and take over (state
/// reloaded from KV) when it goes away. The lock is released on shutdown.
pub async fn run(config: &Config, shutdown: Shutdown) -> Result<(), AlertingError> {
    let client = Client::new(&config.consul)
        .map_err(AlertingError::Consul)?
        .for_role("watcher");
    // Rollout notices it delivers link to the console's pages.
    let receivers =
        Receivers::from_config(&config.notify)?.with_links(Links::new(&config.http.public_url));
    let prefix = config.consul.kv_prefix.trim_end_matches('/');
    let outbox = Outbox::new(client.clone(), prefix, &config.notify);
    let cancel = shutdown.requested.clone();
    let lock = LeaderLock::new(
        client.clone(),
        LockConfig::new(format!("{prefix}/watch/leader"), holder()),
    );
    let lock = config.watch.leader_lock.then_some(&lock);
    let metrics_stop = cancel.child_token();
    let metrics = serve_metrics(&config.watch.metrics_listen, metrics_stop.clone()).await;
    let done = run_while_leading(lock, "watcher", &cancel, |cx, round| {
        spawn_round(round, &cx, config, &client, &outbox, &receivers);
    })
    .await
    .map_err(AlertingError::Lock);
    metrics_stop.cancel();
    if let Some(task) = metrics {
        let _ = task.await;
    }
    done
}

/// `watch.metrics_listen`, when set: the registry installed and `/metrics`
/// served until `cancel`. An address that cannot be bound is logged, and
/// the watcher runs on without metrics: alerts never depend on them.
async fn serve_metrics(
    listen: &str,
    cancel: tokio_util::sync::CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let addr = listen.parse::<std::net::SocketAddr>().ok()?;
    match crate::console::metrics::serve(addr, cancel).await {
        Ok((bound, task)) => {
            tracing::info!(address = %bound, "Watcher metrics at /metrics.");
            Some(task)
        }
        Err(e) => {
            tracing::error!(listen = %listen, error = %e,
                "Cannot listen on watch.metrics_listen; the watcher runs on without metrics.");
            None
        }
    }
}

/// Starts a round's health watcher (its state fenced by the round's lock,
/// if any) and outbox sender: what `rollgate watch` and the coordinator's
/// leader both run.
pub fn spawn_round(
    round: &mut Round,
    cx: &RoundContext<'_>,
    config: &Config,
    client: &Client,
    outbox: &Outbox,
    receivers: &Receivers,
) {
    let sender = Sender::new(
        outbox.clone(),
        receivers.clone(),
        &config.notify,
        config.consul.max_wait,
    );
    round.spawn("outbox sender", sender.run(cx.cancel.clone()));
    let direct = Direct {
        receivers: receivers.clone(),
        router: Router::new(&config.notify),
        send_timeout: config.notify.send_timeout,
    };
    let watcher = Watcher::new(
        client.clone(),
        config.watch.clone(),
        config.consul.kv_prefix.trim_end_matches('/'),
        config.consul.max_wait,
        outbox.clone(),
        Some(direct),
    )
    .fenced(cx.fence.cloned());
    round.spawn("health watcher", watcher.run(cx.cancel.clone()));
}

fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!("rollgate-watch@{host}:{}", std::process::id())
}
