//! The `rollgate` binary: parse the command line, load the configuration,
//! run the subcommand, and turn its result into the exit status.
//!
//! The exit status is chosen in one place, [`exit_for`], from the kind of the
//! error the failing module returned (see [`Exit`] for the table; README.md
//! and `rollgate --help` show it too). The match is exhaustive on purpose: a
//! new error variant does not compile until someone decides its status.

use std::process::ExitCode;

use clap::Parser;
use rollgate::alerting::AlertingError;
use rollgate::aws::FailureKind;
use rollgate::cli::{CheckConfigArgs, Cli, Command, Exit};
use rollgate::config::{Config, ConfigError, Sources};
use rollgate::consul;
use rollgate::consul::permissions::Role;
use rollgate::consul::records::RecordError;
use rollgate::coordinator::CoordinatorError;
use rollgate::node::NodeError;
use rollgate::node::identity::IdentityError;
use rollgate::ops::{self, OpsError};
use rollgate::preflight::{self, PreflightError};
use rollgate::rollout::store::StoreError;
use rollgate::shutdown::Shutdown;

/// Why a command failed: the error of the module that failed, kept typed so
/// [`exit_for`] can choose the exit status by its kind.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The configuration is invalid (its message ends with a newline).
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A command line clap accepts but that does not say enough.
    #[error("{0}")]
    Usage(&'static str),
    /// The async runtime could not be started.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// `check-config --connect` could not use Consul, or found the token
    /// lacking.
    #[error(transparent)]
    Connect(#[from] PreflightError),
    /// An operator command failed.
    #[error(transparent)]
    Ops(#[from] OpsError),
    /// `rollgate agent` could not start.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// `rollgate coordinator` could not run.
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
    /// `rollgate watch` could not run.
    #[error(transparent)]
    Alerting(#[from] AlertingError),
}

fn main() -> ExitCode {
    // Clap exits 2 on a usage error, as [`Exit::Usage`] does.
    let cli = Cli::parse();
    let daemon = match cli.command {
        Command::Agent => Some("node agent"),
        Command::Watch => Some("health watcher"),
        Command::Coordinator => Some("coordinator"),
        _ => None,
    };
    match run(cli) {
        Ok(exit) => exit.into(),
        Err(failure) => {
            let exit = exit_for(&failure);
            // Daemons report through their log (JSON lines for a collector
            // when so configured), set up once the configuration is loaded;
            // operator commands, and a list of configuration problems, on
            // plain stderr.
            let problems = matches!(
                failure,
                Failure::Config(_) | Failure::Node(NodeError::Config(_))
            );
            if let Some(role) = daemon.filter(|_| !problems) {
                tracing::error!(error = %failure, exit_status = exit.code(), "The {role} stopped.");
            } else {
                let text = failure.to_string();
                eprintln!("rollgate: {}", text.trim_end());
            }
            exit.into()
        }
    }
}

/// Loads the configuration and runs the subcommand on a runtime fit for it.
fn run(cli: Cli) -> Result<Exit, Failure> {
    let mut config = Config::load(&Sources::from_process(cli.config.clone()))?;
    if let Some(format) = cli.log_format {
        config.log.format = format;
    }
    // A daemon checks what its role needs before anything else, with the
    // same function `check-config --role` runs.
    let role = match cli.command {
        Command::Agent => Some(Role::Agent),
        Command::Watch => Some(Role::Watcher),
        Command::Coordinator => Some(Role::Coordinator),
        _ => None,
    };
    if role.is_some() {
        rollgate::logging::init(&config.log);
    }
    // The agent runs on every node and must be nearly free: one thread.
    // The rest wait on the network almost all the time: two workers are
    // plenty, and a bounded count bounds the allocator's per-thread arenas
    // (the watcher's peak memory) whatever the machine's core count.
    let runtime = match cli.command {
        Command::Agent => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
    }
    .map_err(Failure::Runtime)?;
    runtime.block_on(async {
        if let Some(role) = role {
            // Receivers are built as the daemon builds them: on the runtime.
            config.validate_for(role)?;
        }
        match cli.command {
            Command::CheckConfig(args) => check_config(&config, &args).await,
            Command::Agent => {
                let shutdown = Shutdown::on_signals().map_err(Failure::Signals)?;
                rollgate::node::run(&config, shutdown).await?;
                Ok(Exit::Success)
            }
            Command::Watch => {
                let shutdown = Shutdown::on_signals().map_err(Failure::Signals)?;
                rollgate::alerting::run(&config, shutdown).await?;
                Ok(Exit::Success)
            }
            Command::Coordinator => {
                let shutdown = Shutdown::on_signals().map_err(Failure::Signals)?;
                rollgate::coordinator::run(&config, shutdown).await?;
                Ok(Exit::Success)
            }
            command => operator_command(&config, command).await,
        }
    })
}

async fn operator_command(config: &Config, command: Command) -> Result<Exit, Failure> {
    use rollgate::rollout::machine::OperatorCommand;
    use rollgate::rollout::plan::{Decision, now_ms};
    let text = match command {
        Command::Publish(a) => {
            let source = match (a.manifest, a.ami) {
                (Some(path), _) => ops::PublishSource::Manifest {
                    path: path.display().to_string(),
                    artifact: a.artifact,
                },
                (None, Some(ami)) => ops::PublishSource::Image {
                    artifact: a.artifact.unwrap_or_default(),
                    image_id: ami,
                    version: a.version.unwrap_or_default(),
                },
                (None, None) => {
                    return Err(Failure::Usage(
                        "publish needs --ami (with --artifact and --version) or --manifest",
                    ));
                }
            };
            let options = ops::PublishOptions {
                source,
                region: a.region,
                force: a.force,
                operator: ops::operator(a.as_),
            };
            ops::publish(config, options).await?
        }
        Command::Rollback(a) => {
            let by = ops::operator(a.as_);
            ops::rollback(config, a.service.as_deref(), a.to.as_deref(), a.force, by).await?
        }
        Command::Plan(a) => ops::show_plan(config, a.service.as_deref(), a.json).await?,
        Command::History(a) => ops::history(config, a.service.as_deref(), a.json).await?,
        Command::Approve(a) => {
            let by = ops::operator(a.as_);
            ops::decide(config, &a.plan_id, Decision::Approved { by, at: now_ms() }).await?
        }
        Command::Reject(a) => {
            let by = ops::operator(a.as_);
            let decision = Decision::Rejected {
                by,
                at: now_ms(),
                reason: a.reason,
            };
            ops::decide(config, &a.plan_id, decision).await?
        }
        Command::Status(a) => {
            let (text, succeeded) = ops::status(config, a.service.as_deref(), a.wait).await?;
            println!("{text}");
            return Ok(if succeeded {
                Exit::Success
            } else {
                Exit::RolloutFailed
            });
        }
        Command::Pause(a) => {
            ops::command(config, a.service.as_deref(), OperatorCommand::Pause).await?
        }
        Command::Resume(a) => {
            ops::command(config, a.service.as_deref(), OperatorCommand::Resume).await?
        }
        Command::Promote(a) => {
            ops::command(config, a.service.as_deref(), OperatorCommand::Promote).await?
        }
        Command::Abort(a) => {
            let by = ops::operator(a.as_);
            let abort = OperatorCommand::Abort {
                by,
                reason: a.reason,
            };
            ops::command(config, a.service.as_deref(), abort).await?
        }
        Command::CheckConfig(_) | Command::Agent | Command::Watch | Command::Coordinator => {
            String::new()
        }
    };
    println!("{text}");
    Ok(Exit::Success)
}

async fn check_config(config: &Config, args: &CheckConfigArgs) -> Result<Exit, Failure> {
    let role = preflight::role_of(config, args.role.as_deref())?;
    if let Some(role) = role {
        config.validate_for(role)?;
    }
    print!("{}", config.to_toml());
    match (role, &args.role, preflight::infer_role(config)) {
        (Some(role), Some(_), _) => eprintln!("rollgate: configuration is valid for the {role}"),
        (Some(role), None, Some((_, why))) => eprintln!(
            "rollgate: configuration is valid for the {role} (the role inferred because {why}; \
             pass --role to check another)"
        ),
        _ => eprintln!(
            "rollgate: configuration is valid for what every role shares; no role could be told \
             from its sections (none of [[services]], [agent] artifact or expected_version, \
             [notify] receivers): pass --role coordinator|agent|watch|operator|ci to check \
             what a role needs"
        ),
    }
    if args.connect {
        let report = preflight::run(config, role).await?;
        for line in report.render().lines() {
            eprintln!("rollgate: {line}");
        }
        report.outcome()?;
        if let Some(role) = role {
            eprintln!(
                "rollgate: the token can do what the {role} needs (a rule not proven above, \
                 if missing, is named by the {role}'s first error)"
            );
        }
    }
    Ok(Exit::Success)
}

/// The exit status for a failure: the one mapping from error kinds to
/// [`Exit`].
fn exit_for(failure: &Failure) -> Exit {
    match failure {
        Failure::Config(_) | Failure::Usage(_) => Exit::Usage,
        Failure::Runtime(_) | Failure::Signals(_) => Exit::Internal,
        Failure::Connect(e) => match e {
            PreflightError::Consul(e) => consul_exit(e),
            PreflightError::Role(_) => Exit::Usage,
            PreflightError::UnknownToken { .. } | PreflightError::Missing { .. } => {
                Exit::Unavailable
            }
        },
        Failure::Ops(e) => ops_exit(e),
        Failure::Node(e) => match e {
            NodeError::Config(_) | NodeError::Registration(_) => Exit::Usage,
            NodeError::Consul(e) => consul_exit(e),
            // After its retries, what the agent lacks is `[agent.identity]`
            // (off EC2) or working instance metadata options (on EC2): both
            // configuration, which a restart does not change.
            NodeError::Identity(
                IdentityError::Unavailable { .. } | IdentityError::Incomplete(_),
            ) => Exit::Usage,
        },
        Failure::Coordinator(e) => match e {
            CoordinatorError::NoServices | CoordinatorError::Notify(_) => Exit::Usage,
            // `[coordinator.slack_app]`: a token that cannot be read, a bad receiver.
            CoordinatorError::Chatops(_) => Exit::Usage,
            // `[http]`: a listen address taken or refused, a bad certificate.
            CoordinatorError::Console(_) => Exit::Usage,
            CoordinatorError::Consul(e) | CoordinatorError::Lock(e) => consul_exit(e),
        },
        Failure::Alerting(e) => match e {
            AlertingError::Notify(_) => Exit::Usage,
            AlertingError::Consul(e) | AlertingError::Lock(e) => consul_exit(e),
        },
    }
}

/// An operator command's failure.
fn ops_exit(e: &OpsError) -> Exit {
    match e {
        OpsError::Consul(e) => consul_exit(e),
        OpsError::Store(e) => store_exit(e),
        OpsError::Aws(e) => aws_exit(e),
        OpsError::UnknownService { .. }
        | OpsError::NoServices
        | OpsError::AmbiguousService { .. }
        | OpsError::Read { .. }
        | OpsError::Manifest { .. }
        | OpsError::Setup { .. } => Exit::Usage,
        OpsError::AlreadyDecided { .. }
        | OpsError::NoRollout { .. }
        | OpsError::NotPlanned(_)
        | OpsError::RollbackRefused { .. } => Exit::Refused,
        // Part done: the status of what failed.
        OpsError::PartlyDone { source, .. } => ops_exit(source),
    }
}

/// A Consul failure: settings that cannot make a client are usage, anything
/// Consul answered (or did not) is the service's.
fn consul_exit(e: &consul::Error) -> Exit {
    match e {
        consul::Error::Config(_) => Exit::Usage,
        consul::Error::Transport { .. }
        | consul::Error::Timeout { .. }
        | consul::Error::PermissionDenied { .. }
        | consul::Error::NotFound { .. }
        | consul::Error::Status { .. }
        | consul::Error::Decode { .. } => Exit::Unavailable,
    }
}

/// A KV record failure.
fn store_exit(e: &StoreError) -> Exit {
    match e {
        StoreError::Consul(e) => consul_exit(e),
        StoreError::BadPlanId(_) => Exit::Usage,
        StoreError::NoPlan(_) => Exit::Refused,
        // Others kept writing the record: the same as a busy service.
        StoreError::Contended(_) => Exit::Unavailable,
        StoreError::Record(e) => match e {
            RecordError::Consul(e) => consul_exit(e),
            RecordError::Contended(_) => Exit::Unavailable,
            // Consul hid records from the token: it denies part of the read.
            RecordError::Hidden { .. } => Exit::Unavailable,
            // Lost leadership, or a record a newer rollgate wrote: retry
            // later or upgrade; nothing is damaged.
            RecordError::FenceLost { .. } | RecordError::TooNew { .. } => Exit::Unavailable,
            // A damaged record, or a bug: needs a human.
            RecordError::Unreadable { .. } | RecordError::Encode { .. } => Exit::Internal,
        },
    }
}

/// An AWS failure: a missing resource is a refusal (the operator named an
/// image that does not exist); a request the SDK cannot even build from the
/// settings is usage; everything else is AWS failing or denying.
fn aws_exit(e: &rollgate::aws::Error) -> Exit {
    use rollgate::aws::Error;
    match e {
        Error::NotFound { .. } => Exit::Refused,
        Error::Api {
            kind: FailureKind::Construction,
            ..
        } => Exit::Usage,
        Error::Api { .. } | Error::Unreachable { .. } | Error::Unexpected { .. } => {
            Exit::Unavailable
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn timeout() -> consul::Error {
        consul::Error::Timeout {
            call: "GET /v1/kv/x".into(),
            address: "http://127.0.0.1:1".into(),
            timeout: Duration::from_secs(1),
        }
    }

    fn denied() -> consul::Error {
        consul::Error::PermissionDenied {
            call: "GET /v1/kv/x".into(),
            body: "Permission denied".into(),
            role: Some("operator"),
        }
    }

    #[test]
    fn consul_failures_are_unavailable_except_client_settings() {
        assert_eq!(
            exit_for(&Failure::Connect(timeout().into())),
            Exit::Unavailable
        );
        assert_eq!(
            exit_for(&Failure::Connect(denied().into())),
            Exit::Unavailable
        );
        let bad_ca = consul::Error::Config("cannot read CA file /nope".into());
        assert_eq!(exit_for(&Failure::Connect(bad_ca.into())), Exit::Usage);
        let lock = Failure::Coordinator(CoordinatorError::Lock(denied()));
        assert_eq!(exit_for(&lock), Exit::Unavailable);
        let through_store = Failure::Ops(OpsError::Store(StoreError::Consul(timeout())));
        assert_eq!(exit_for(&through_store), Exit::Unavailable);
    }

    #[test]
    fn a_failed_preflight_is_3_and_a_role_it_cannot_check_is_2() {
        let missing = PreflightError::Missing {
            role: rollgate::consul::permissions::Role::Ci,
            file: "config/acl/ci.hcl".into(),
            missing: vec!["`key \"rollgate/trigger/x\" write` (key:write)".into()],
        };
        assert_eq!(exit_for(&Failure::Connect(missing)), Exit::Unavailable);
        let unknown = PreflightError::UnknownToken {
            file: "config/acl/ci.hcl".into(),
        };
        assert_eq!(exit_for(&Failure::Connect(unknown)), Exit::Unavailable);
        let no_services = PreflightError::Role("no [[services]]".into());
        assert_eq!(exit_for(&Failure::Connect(no_services)), Exit::Usage);
    }

    #[test]
    fn refusals_by_state_are_4_and_bad_input_is_2() {
        let decided = OpsError::AlreadyDecided {
            plan: "web-1".into(),
            service: "web".into(),
            state: "approved by alice".into(),
        };
        assert_eq!(exit_for(&Failure::Ops(decided)), Exit::Refused);
        let no_rollout = OpsError::NoRollout {
            service: "web".into(),
        };
        assert_eq!(exit_for(&Failure::Ops(no_rollout)), Exit::Refused);
        let unknown = OpsError::Store(StoreError::NoPlan("web-99".into()));
        assert_eq!(exit_for(&Failure::Ops(unknown)), Exit::Refused);
        let malformed = OpsError::Store(StoreError::BadPlanId("nonsense".into()));
        assert_eq!(exit_for(&Failure::Ops(malformed)), Exit::Usage);
        assert_eq!(exit_for(&Failure::Ops(OpsError::NoServices)), Exit::Usage);
        let no_services = Failure::Coordinator(CoordinatorError::NoServices);
        assert_eq!(exit_for(&no_services), Exit::Usage);
    }

    #[test]
    fn an_ignored_publish_and_a_refused_rollback_are_4_and_a_half_done_publish_is_what_failed() {
        let ignored = OpsError::NotPlanned("older than the newest".into());
        assert_eq!(exit_for(&Failure::Ops(ignored)), Exit::Refused);
        let rollback = OpsError::RollbackRefused {
            service: "web".into(),
            reason: "version 1.0.0 failed a rollout since".into(),
        };
        assert_eq!(exit_for(&Failure::Ops(rollback)), Exit::Refused);
        let half = OpsError::PartlyDone {
            done: "Tagged ami-1".into(),
            source: Box::new(OpsError::Store(StoreError::Consul(timeout()))),
            next: "the registry poll still finds it".into(),
        };
        assert_eq!(exit_for(&Failure::Ops(half)), Exit::Unavailable);
    }

    #[test]
    fn record_failures_by_kind() {
        let store = |e| exit_for(&Failure::Ops(OpsError::Store(StoreError::Record(e))));
        let hidden = RecordError::Hidden {
            prefix: "rollgate/services/web/".into(),
        };
        assert_eq!(store(hidden), Exit::Unavailable, "ACLs hid records");
        let too_new = RecordError::TooNew {
            key: "rollgate/services/web/rollout".into(),
            kind: "rollout",
            schema: 9,
            supported: 2,
        };
        assert_eq!(
            store(too_new),
            Exit::Unavailable,
            "upgrade, nothing damaged"
        );
        let damaged = RecordError::Unreadable {
            key: "rollgate/services/web/rollout".into(),
            kind: "rollout",
            reason: "expected value at line 1 column 1".into(),
        };
        assert_eq!(store(damaged), Exit::Internal);
        assert_eq!(store(RecordError::Consul(timeout())), Exit::Unavailable);
    }

    #[test]
    fn aws_failures_by_kind() {
        use rollgate::aws::Error;
        let api = |kind, code: &str| Error::Api {
            call: "ec2:CreateTags",
            resource: "image ami-1".into(),
            kind,
            code: Some(code.into()),
            status: Some(403),
            message: String::new(),
        };
        let ops = |e| exit_for(&Failure::Ops(OpsError::Aws(e)));
        assert_eq!(
            ops(api(FailureKind::Service, "UnauthorizedOperation")),
            Exit::Unavailable
        );
        assert_eq!(ops(api(FailureKind::Dispatch, "")), Exit::Unavailable);
        assert_eq!(ops(api(FailureKind::Construction, "")), Exit::Usage);
        let missing = Error::NotFound {
            call: "ec2:CreateTags",
            resource: "image ami-0dead".into(),
            message: String::new(),
        };
        assert_eq!(ops(missing), Exit::Refused);
    }

    #[test]
    fn start_up_failures_of_the_agent_are_configuration() {
        let no_imds = NodeError::Identity(IdentityError::Unavailable {
            endpoint: "http://169.254.169.254".into(),
            cause: "connection refused".into(),
        });
        assert_eq!(exit_for(&Failure::Node(no_imds)), Exit::Usage);
        let os = Failure::Signals(std::io::Error::other("no"));
        assert_eq!(exit_for(&os), Exit::Internal);
    }
}
