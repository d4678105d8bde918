//! The `sandbox` binary: runs parts of the local world as processes that
//! test harnesses and the demo can start. Each part is a subcommand.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use sandbox::consul::{self, NodeInfo};
use serde::Serialize;

/// The local world rollgate is tested and demonstrated in.
#[derive(Debug, Parser)]
#[command(name = "sandbox", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Consul-compatible server until SIGINT or SIGTERM. Once it
    /// listens, one JSON line with its addresses is printed on stdout.
    Consul(ConsulArgs),
}

#[derive(Args)]
struct ConsulArgs {
    /// Address of the server listener (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8500")]
    listen: SocketAddr,
    /// Client nodes to start, each with its own agent listener.
    #[arg(long, default_value_t = 0)]
    nodes: usize,
    /// Management token; enables ACL enforcement.
    #[arg(long, env = "SANDBOX_CONSUL_ACL_TOKEN", hide_env_values = true)]
    acl_token: Option<String>,
    /// A read-only token (repeatable).
    #[arg(
        long = "read-token",
        env = "SANDBOX_CONSUL_READ_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    read_tokens: Vec<String>,
    /// Datacenter name.
    #[arg(long, default_value = "dc1")]
    datacenter: String,
    /// Lowest session TTL accepted (Go duration).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    session_ttl_min: Duration,
}

impl std::fmt::Debug for ConsulArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulArgs")
            .field("listen", &self.listen)
            .field("nodes", &self.nodes)
            .field("acl", &self.acl_token.is_some())
            .field("datacenter", &self.datacenter)
            .finish_non_exhaustive()
    }
}

fn parse_duration(raw: &str) -> Result<Duration, String> {
    consul::duration::parse(raw).map_err(|e| e.to_string())
}

/// The line printed once the server listens.
#[derive(Debug, Serialize)]
struct Ready {
    http: SocketAddr,
    nodes: Vec<NodeInfo>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Consul(args) => run_consul(args).await,
    }
}

async fn run_consul(args: ConsulArgs) -> anyhow::Result<()> {
    let config = consul::Config {
        listen: args.listen,
        nodes: args.nodes,
        datacenter: args.datacenter,
        acl_management_token: args.acl_token,
        acl_read_tokens: args.read_tokens,
        session_ttl_min: args.session_ttl_min,
    };
    let server = consul::Server::start(config)
        .await
        .context("starting the Consul sandbox")?;
    let ready = Ready {
        http: server.http_addr(),
        nodes: server.nodes(),
    };
    println!("{}", serde_json::to_string(&ready)?);
    shutdown_signal().await?;
    server.shutdown().await;
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
        _ = term.recv() => {}
    }
    tracing::info!("Shutting down.");
    Ok(())
}
