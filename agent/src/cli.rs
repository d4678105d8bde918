//! The command line: global options, one subcommand per role or operator
//! action, and the exit statuses ([`Exit`]). Parsing only; `main.rs`
//! dispatches and chooses the exit status from the kind of error.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::LogFormat;

/// rollgate rolls new AMIs out to EC2 Auto Scaling groups without downtime,
/// gated on Consul health, and alerts the ops team on Slack or by email.
#[derive(Debug, Parser)]
#[command(name = "rollgate", version, about, long_about = None, after_help = EXIT_STATUS_HELP)]
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

/// The exit statuses of every `rollgate` command, chosen by the kind of the
/// failure so that a script can tell "the rollout failed" from "could not
/// ask", and "fix your input" from "try again later".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done.
    Success,
    /// 1: the rollout `status` reports (or `status --wait` followed) failed,
    /// was reverted or aborted; with `--wait`, also "no rollout to follow".
    /// Nothing else exits 1, so a pipeline can act on it.
    RolloutFailed,
    /// 2: bad configuration or usage; the same command fails again until the
    /// configuration or the command line is fixed. Clap's own usage errors
    /// exit 2 as well.
    Usage,
    /// 3: Consul or AWS answered with an error, not in time, or not at all,
    /// or refused the token or credentials (HTTP 403, `AccessDenied`, records
    /// hidden by ACLs): retry later, or fix the network or the permissions.
    /// Also a KV record written by a newer rollgate (upgrade this one) and a
    /// leader lock lost mid-write: nothing is damaged. (The agent's instance
    /// metadata is not in this class: when it gives up on it, what is
    /// missing is `[agent.identity]` or the instance's metadata options, so
    /// that is 2.)
    Unavailable,
    /// 4: understood, everything reachable, and refused by the current
    /// state: the plan is already decided or expired, no such plan or
    /// image, no rollout in progress. Retrying the same command will not
    /// help; `rollgate plan` or `status` shows the state.
    Refused,
    /// 5: anything else: a damaged stored record, a record that cannot be
    /// encoded, the system refusing threads or signal handlers. Worth a bug
    /// report.
    Internal,
}

impl Exit {
    /// Every status, in code order.
    pub const ALL: [Exit; 6] = [
        Exit::Success,
        Exit::RolloutFailed,
        Exit::Usage,
        Exit::Unavailable,
        Exit::Refused,
        Exit::Internal,
    ];

    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::RolloutFailed => 1,
            Exit::Usage => 2,
            Exit::Unavailable => 3,
            Exit::Refused => 4,
            Exit::Internal => 5,
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit.code())
    }
}

/// The exit statuses as `rollgate --help` shows them (README.md's "Exit
/// status" says the same; a test keeps the three in step with [`Exit`]).
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  success
  1  the rollout failed, was reverted or aborted (status, status --wait)
  2  bad configuration or usage
  3  Consul or AWS unreachable, failing or denying access; KV record too new
  4  refused: plan already decided or expired, unknown plan or image, no rollout
  5  internal error: damaged stored record, no threads or signal handlers";

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration for a role and print the effective
    /// configuration as TOML (secrets redacted). The role's own start-up
    /// rules are the daemon's, so what this calls valid the daemon accepts.
    /// Exits 2 when it is invalid, 3 when --connect cannot use Consul or the
    /// token lacks what the role needs.
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
    /// new images of every [[services]] entry, announce the plans, roll out
    /// approved ones batch by batch gated on Consul health (reverting on
    /// failure), and run the health watcher and the alert outbox sender.
    Coordinator,
    /// Tag an existing AMI as a version of an artifact and trigger planning;
    /// says what the coordinator will do with it. Exits 4, changing
    /// nothing, when the coordinator would ignore it (older than the newest
    /// image, failed or rejected before).
    Publish(PublishArgs),
    /// Plan a change back to a version that ran stable before (the last one,
    /// or --to VERSION), approved and rolled out like any plan and recorded
    /// as a rollback. Refuses a version that failed since unless --force.
    Rollback(RollbackArgs),
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
    /// check the token: who it is (never its secret) and, by harmless
    /// probes, whether it has every rule of the role's policy
    /// (config/acl/<role>.hcl). Exits 3 when Consul is unreachable, does not
    /// know the token, or the token lacks a rule the role needs.
    #[arg(long)]
    pub connect: bool,
    /// The role the configuration runs as: coordinator, agent, watch,
    /// operator or ci. Its daemon's start-up rules are checked (the
    /// coordinator needs [[services]], the agent agent.expected_version,
    /// the coordinator and watcher buildable [notify] receivers) and, with
    /// --connect, its policy. Default: inferred, coordinator with
    /// [[services]], agent with an [agent] artifact or expected_version,
    /// watch with [notify] receivers; the output names the role checked.
    #[arg(long, value_name = "ROLE",
          value_parser = ["coordinator", "agent", "watch", "watcher", "operator", "ci"])]
    pub role: Option<String>,
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
    /// Each image is tagged in its own region; the image in the
    /// coordinator's region (coordinator.aws_region) is the one planned.
    #[arg(long, conflicts_with_all = ["ami", "version"])]
    pub manifest: Option<PathBuf>,
    /// Only the image of this region (with --manifest); with --ami, the
    /// region the AMI lives in (default: coordinator.aws_region).
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// Plan the image even though it failed a rollout or its plan was
    /// rejected before (an operator's decision; needs the operator token).
    #[arg(long)]
    pub force: bool,
    /// Who forces (default: the OS user).
    #[arg(long = "as", value_name = "NAME")]
    pub as_: Option<String>,
}

/// Options of `rollback`.
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The service (may be omitted when only one is configured).
    pub service: Option<String>,
    /// The version (or AMI ID) to go back to; default: the last stable
    /// version before the running one. `rollgate history` lists them.
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,
    /// Roll back to a version that failed a rollout since it was stable.
    #[arg(long)]
    pub force: bool,
    /// Who asks (default: the OS user).
    #[arg(long = "as", value_name = "NAME")]
    pub as_: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_help_lists_every_exit_status_once_in_order() {
        let codes: Vec<u8> = EXIT_STATUS_HELP
            .lines()
            .skip(1)
            .map(|l| {
                let code = l.split_whitespace().next().unwrap_or_default();
                code.parse()
                    .unwrap_or_else(|_| panic!("{l:?} starts with a code"))
            })
            .collect();
        let all: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, all);
        assert_eq!(all, (0..=5).collect::<Vec<u8>>(), "codes are dense");
    }
}
