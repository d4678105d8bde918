//! The command line: global options and one subcommand per role or operator
//! action. Parsing only; `main.rs` dispatches.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::LogFormat;

/// rollgate rolls new AMIs out to EC2 Auto Scaling groups without downtime,
/// gated on Consul health, and alerts the ops team on Slack or by email.
#[derive(Debug, Parser)]
#[command(name = "rollgate", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (TOML). Absent is fine for the default path.
    #[arg(long, global = true, env = "ROLLGATE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Log format; overrides `log.format`.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration and print the effective configuration as
    /// TOML (secrets redacted). Exits 2 when it is invalid.
    CheckConfig(CheckConfigArgs),
    /// Run the node agent: register the service with the local Consul agent,
    /// keep its checks true, drain on SIGTERM/SIGINT (a second signal skips
    /// the drain wait). Runs on every instance.
    Agent,
    /// Run the health watcher standalone: alert on Consul health changes
    /// through the durable outbox (Slack, email). `rollgate coordinator`
    /// runs the same watcher on its leader; use this where no coordinator
    /// runs. Several replicas may run: one holds the watcher's lock.
    Watch,
}

/// Options of `check-config`.
#[derive(Debug, clap::Args)]
pub struct CheckConfigArgs {
    /// Also connect to Consul with these settings (address, token, CA) and
    /// report its leader and the agent that answered; exits 1 when that fails.
    #[arg(long)]
    pub connect: bool,
}
