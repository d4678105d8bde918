//! Graceful shutdown: the first SIGTERM or SIGINT asks the process to stop
//! cleanly (the agent drains, the coordinator releases its lock); a second one
//! asks it to hurry (skip waits).
//!
//! Components take a [`Shutdown`] instead of listening to signals themselves,
//! so tests pass their own and trigger it when they want.

use tokio_util::sync::CancellationToken;

/// The two stages of shutting down.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Cancelled when the process should stop cleanly.
    pub requested: CancellationToken,
    /// Cancelled when it should stop now, skipping waits such as the drain.
    pub hurry: CancellationToken,
}

impl Shutdown {
    /// A shutdown that only code triggers.
    pub fn new() -> Self {
        Self::default()
    }

    /// A shutdown triggered by SIGTERM/SIGINT: the first requests, the
    /// second hurries. Must be called inside a Tokio runtime.
    pub fn on_signals() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let shutdown = Self::new();
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let s = shutdown.clone();
        tokio::spawn(async move {
            for stage in 0..2 {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                if stage == 0 {
                    tracing::info!(signal = name, "Shutdown requested.");
                    s.requested.cancel();
                } else {
                    tracing::info!(
                        signal = name,
                        "Second signal: shutting down without waiting."
                    );
                    s.hurry.cancel();
                }
            }
        });
        Ok(shutdown)
    }
}
