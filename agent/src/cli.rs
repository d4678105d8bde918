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
    /// Run the coordinator: contend for leadership and, while leading, plan
    /// new images of every [[services]] entry and announce them.
    Coordinator,
    /// Tag an existing AMI as a version of an artifact and trigger planning.
    Publish(PublishArgs),
    /// Show the newest plan of each service (or of SERVICE).
    Plan(ShowArgs),
    /// Approve a pending plan; the coordinator then rolls it out.
    Approve(DecideArgs),
    /// Reject a pending plan.
    Reject(RejectArgs),
    /// List plans with their decision, who, when and outcome.
    History(ShowArgs),
    /// Show the active rollout (phase, batch, instances, next deadline) or
    /// the last outcome. With --wait, follow it to the end: exit 0 on
    /// success, 1 on failure, revert or abort.
    Status(StatusArgs),
    /// Pause the active rollout (no actions, deadlines suspended).
    Pause(ServiceArg),
    /// Resume a paused rollout.
    Resume(ServiceArg),
    /// Abort the active rollout and revert to the last stable version.
    Abort(AbortArgs),
    /// Promote a canary waiting for approval to continue.
    Promote(ServiceArg),
}

/// Options of `check-config`.
#[derive(Debug, clap::Args)]
pub struct CheckConfigArgs {
    /// Also connect to Consul with these settings (address, token, CA) and
    /// report its leader and the agent that answered; exits 1 when that fails.
    #[arg(long)]
    pub connect: bool,
}

/// Options of `publish`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["ami", "manifest"])))]
pub struct PublishArgs {
    /// Artifact name (`acmeinc/web`); with --manifest it overrides the
    /// manifest's `custom_data.artifact`.
    #[arg(long)]
    pub artifact: Option<String>,
    /// The AMI to publish (needs --artifact and --version).
    #[arg(long, requires_all = ["artifact", "version"])]
    pub ami: Option<String>,
    /// The version of the app in that AMI.
    #[arg(long)]
    pub version: Option<String>,
    /// A Packer manifest (manifest post-processor output) to publish from.
    #[arg(long, conflicts_with_all = ["ami", "version"])]
    pub manifest: Option<PathBuf>,
}

/// Options of `plan` and `history`.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The service (default: every configured service).
    pub service: Option<String>,
    /// JSON for scripts instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Options of `approve`.
#[derive(Debug, clap::Args)]
pub struct DecideArgs {
    /// The plan (`web-3`).
    pub plan_id: String,
    /// Who approves (default: the OS user).
    #[arg(long = "as", value_name = "NAME")]
    pub as_: Option<String>,
}

/// Options of `reject`.
#[derive(Debug, clap::Args)]
pub struct RejectArgs {
    /// The plan (`web-3`).
    pub plan_id: String,
    /// Why (recorded in the history).
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Who rejects (default: the OS user).
    #[arg(long = "as", value_name = "NAME")]
    pub as_: Option<String>,
}

/// Options of `status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The service (may be omitted when only one is configured).
    pub service: Option<String>,
    /// Follow the rollout to its end; exit 0 on success, 1 otherwise.
    #[arg(long)]
    pub wait: bool,
}

/// A service argument.
#[derive(Debug, clap::Args)]
pub struct ServiceArg {
    /// The service (may be omitted when only one is configured).
    pub service: Option<String>,
}

/// Options of `abort`.
#[derive(Debug, clap::Args)]
pub struct AbortArgs {
    /// The service (may be omitted when only one is configured).
    pub service: Option<String>,
    /// Why (recorded with the outcome).
    #[arg(long, default_value = "aborted by an operator")]
    pub reason: String,
    /// Who aborts (default: the OS user).
    #[arg(long = "as", value_name = "NAME")]
    pub as_: Option<String>,
}
