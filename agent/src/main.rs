//! The `rollgate` binary: parse the command line, load the configuration,
//! run the subcommand. Exit status 2 means bad configuration, 1 a failure.

use std::process::ExitCode;

use clap::Parser;
use rollgate::cli::{CheckConfigArgs, Cli, Command};
use rollgate::config::{Config, Sources};
use rollgate::consul;
use rollgate::node;
use rollgate::shutdown::Shutdown;
use rollgate::watch::WatchError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = match Config::load(&Sources::from_process(cli.config.clone())) {
        Ok(c) => c,
        Err(e) => {
            eprint!("rollgate: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(format) = cli.log_format {
        config.log.format = format;
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
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rollgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::CheckConfig(args) => runtime.block_on(check_config(&config, &args)),
        Command::Agent => {
            rollgate::logging::init(&config.log);
            runtime.block_on(agent(config))
        }
        Command::Watch => {
            rollgate::logging::init(&config.log);
            runtime.block_on(watch(config))
        }
        Command::Coordinator => {
            rollgate::logging::init(&config.log);
            runtime.block_on(coordinator(config))
        }
        command => runtime.block_on(operator_command(&config, command)),
    }
}

async fn operator_command(config: &Config, command: Command) -> ExitCode {
    use rollgate::ops;
    use rollgate::rollout::machine::Command as MachineCommand;
    use rollgate::rollout::plan::{Decision, now_ms};
    let result = match command {
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
                    eprintln!(
                        "rollgate: publish needs --ami (with --artifact and --version) or --manifest"
                    );
                    return ExitCode::from(2);
                }
            };
            ops::publish(config, source).await
        }
        Command::Plan(a) => ops::show_plan(config, a.service.as_deref(), a.json).await,
        Command::History(a) => ops::history(config, a.service.as_deref(), a.json).await,
        Command::Approve(a) => {
            let by = ops::operator(a.as_);
            ops::decide(config, &a.plan_id, Decision::Approved { by, at: now_ms() }).await
        }
        Command::Reject(a) => {
            let by = ops::operator(a.as_);
            let decision = Decision::Rejected {
                by,
                at: now_ms(),
                reason: a.reason,
            };
            ops::decide(config, &a.plan_id, decision).await
        }
        Command::Status(a) => match ops::status(config, a.service.as_deref(), a.wait).await {
            Ok((text, true)) => Ok(text),
            Ok((text, false)) => {
                println!("{text}");
                return ExitCode::FAILURE;
            }
            Err(e) => Err(e),
        },
        Command::Pause(a) => {
            ops::command(config, a.service.as_deref(), MachineCommand::Pause).await
        }
        Command::Resume(a) => {
            ops::command(config, a.service.as_deref(), MachineCommand::Resume).await
        }
        Command::Promote(a) => {
            ops::command(config, a.service.as_deref(), MachineCommand::Promote).await
        }
        Command::Abort(a) => {
            let by = ops::operator(a.as_);
            ops::command(
                config,
                a.service.as_deref(),
                MachineCommand::Abort {
                    by,
                    reason: a.reason,
                },
            )
            .await
        }
        _ => Ok(String::new()),
    };
    match result {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rollgate: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn coordinator(config: Config) -> ExitCode {
    use rollgate::coordinator::{self, CoordinatorError};
    let shutdown = match Shutdown::on_signals() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "Cannot install signal handlers.");
            return ExitCode::FAILURE;
        }
    };
    match coordinator::run(&config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(
            e @ (CoordinatorError::NoServices
            | CoordinatorError::Consul(_)
            | CoordinatorError::Notify(_)),
        ) => {
            tracing::error!(error = %e, "Cannot start the coordinator.");
            ExitCode::from(2)
        }
        Err(e) => {
            tracing::error!(error = %e, "Coordinator failed.");
            ExitCode::FAILURE
        }
    }
}

async fn watch(config: Config) -> ExitCode {
    let shutdown = match Shutdown::on_signals() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "Cannot install signal handlers.");
            return ExitCode::FAILURE;
        }
    };
    match rollgate::watch::run(&config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ (WatchError::Consul(_) | WatchError::Notify(_))) => {
            tracing::error!(error = %e, "Cannot start the health watcher.");
            ExitCode::from(2)
        }
        Err(e) => {
            tracing::error!(error = %e, "Health watcher failed.");
            ExitCode::FAILURE
        }
    }
}

async fn agent(config: Config) -> ExitCode {
    if let Err(e) = config.agent.validate_for_agent().into_result() {
        eprint!("rollgate: {e}");
        return ExitCode::from(2);
    }
    let shutdown = match Shutdown::on_signals() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "Cannot install signal handlers.");
            return ExitCode::FAILURE;
        }
    };
    let client = match consul::Client::new(&config.consul) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "Cannot build the Consul client.");
            return ExitCode::from(2);
        }
    };
    let endpoint = node::identity::endpoint(&config.agent, |k| std::env::var(k).ok());
    let identity = tokio::select! {
        _ = shutdown.requested.cancelled() => return ExitCode::SUCCESS,
        id = node::identity::resolve(&config.agent, &endpoint, 5) => id,
    };
    let identity = match identity {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, "Cannot start the node agent.");
            return ExitCode::from(2);
        }
    };
    match node::run(&config.agent, client, identity, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "Node agent failed.");
            ExitCode::from(2)
        }
    }
}

async fn check_config(config: &Config, args: &CheckConfigArgs) -> ExitCode {
    print!("{}", config.to_toml());
    eprintln!("rollgate: configuration is valid");
    if !args.connect {
        return ExitCode::SUCCESS;
    }
    match connect(config).await {
        Ok(summary) => {
            eprintln!("rollgate: {summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rollgate: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn connect(config: &Config) -> Result<String, consul::Error> {
    let client = consul::Client::new(&config.consul)?;
    let agent = client.agent_self().await?;
    let leader = client.status_leader().await?;
    let leader = if leader.is_empty() {
        "none (the cluster has no leader)".to_string()
    } else {
        leader
    };
    Ok(format!(
        "Consul at {} answers: agent node {:?} in datacenter {:?}, cluster leader {leader}",
        client.address(),
        agent.config.node_name,
        agent.config.datacenter
    ))
}
