//! `web`: the sample service that rollgate rolls out.
//!
//! In production it runs on every instance of the Auto Scaling group behind
//! Apache on port 80; the node agent probes its `/health` and reports the result
//! to Consul, which gates the rollout. In the sandbox the fleet simulator starts
//! one per simulated instance and makes it a good or a broken image through the
//! environment.
//!
//! - [`settings`]: `WEB_*` environment variables, parsed and validated.
//! - [`readiness`]: booting / ready / unhealthy as a pure function of the clock.
//! - [`routes`]: the router: `/`, `/version`, `/health`.
//! - [`run`]: serves a router on a bound listener until a shutdown signal,
//!   letting in-flight requests finish.
//!
//! The binary (`main.rs`) only parses the command line and the environment,
//! binds, prints the address and calls [`run`] with the process signals.

pub mod readiness;
pub mod routes;
pub mod settings;

use std::future::Future;

use tokio::net::TcpListener;
use tokio::time::{Instant, sleep_until};
use tracing::{info, warn};

pub use readiness::{Health, Readiness};
pub use routes::{VersionInfo, router};
pub use settings::{Settings, SettingsError};

/// Serves the app on `listener` until `shutdown` completes, then stops taking
/// connections and returns once in-flight requests have been answered.
///
/// The boot delay and the failure schedule count from the moment `run` is
/// called.
pub async fn run<F>(settings: Settings, listener: TcpListener, shutdown: F) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let readiness = Readiness::new(&settings, Instant::now());
    info!(
        version = %settings.version,
        boot_delay = %humantime::format_duration(settings.boot_delay),
        fail_health = settings.fail_health,
        fail_after = %settings
            .fail_after
            .map_or_else(|| "never".to_owned(), |d| humantime::format_duration(d).to_string()),
        "Starting."
    );
    let announcer = tokio::spawn(announce_transitions(readiness.clone()));
    let app = router(&settings, readiness);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    announcer.abort();
    info!("Stopped.");
    served
}

/// Logs the moments the app becomes ready and turns unhealthy, so that the
/// sandbox's logs show when a simulated image changed state. The state itself
/// is computed per request; this task only narrates it.
async fn announce_transitions(readiness: Readiness) {
    let Some(ready_at) = readiness.ready_at() else {
        return;
    };
    sleep_until(ready_at).await;
    if readiness.fails_health() {
        warn!("Booted, failing every health check as told by WEB_FAIL_HEALTH.");
        return;
    }
    info!("Ready.");
    if let Some(unhealthy_at) = readiness.unhealthy_at() {
        sleep_until(unhealthy_at).await;
        warn!("Turned unhealthy as told by WEB_FAIL_AFTER.");
    }
}
