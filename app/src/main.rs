//! The `web` binary: parse the command line and the environment, bind, print
//! the address, serve until SIGTERM or SIGINT.
//!
//! Exit status: 0 after a graceful shutdown, 2 for an invalid argument or
//! environment variable, 1 for anything else (such as an address in use).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tracing::info;
use web::Settings;

/// The sample service rollgate rolls out: `/`, `/version`, `/health`.
///
/// Behaviour comes from the environment: WEB_VERSION (reported version),
/// WEB_BOOT_DELAY (e.g. 3s: answer 503 until then), WEB_FAIL_HEALTH=1 (health
/// answers 500 forever), WEB_FAIL_AFTER (e.g. 30s: health turns 500 that long
/// after becoming ready).
#[derive(Debug, Parser)]
#[command(name = "web", version)]
struct Cli {
    /// Address to listen on; port 0 picks a free port. The bound address is
    /// printed on stdout as `listening on ADDR`.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("web: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(serve(cli, settings)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("web: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cli: Cli, settings: Settings) -> anyhow::Result<()> {
    // Install the handlers before announcing the address: whoever reads the
    // line may signal at once, and the default action would kill the process.
    let shutdown = shutdown_signal().context("cannot install signal handlers")?;
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {addr}").context("cannot write to stdout")?;
        stdout.flush().context("cannot write to stdout")?;
    }
    web::run(settings, listener, shutdown)
        .await
        .context("serving failed")
}

/// A future that completes on the first SIGTERM or SIGINT.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(
            signal = name,
            "Shutting down: finishing in-flight requests."
        );
    })
}

/// A future that completes on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        info!("Shutting down: finishing in-flight requests.");
    })
}
