//! The `sandbox` binary: runs parts of the local world as processes that
//! test harnesses and the demo can start. Each part is a subcommand.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use sandbox::acl_roles::Secret;
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
    /// Run benchmark scenarios and write their sections of BENCHMARKS.md.
    /// Measures the `rollgate` and `web` binaries in `--bin-dir`, or beside
    /// this one.
    Bench(BenchArgs),
    /// The main job in the sandbox: the world on loopback (Consul, AWS,
    /// Slack, SMTP, simulated instances running the real web and rollgate
    /// agent, load), two coordinators, and three rollouts: a good image, a
    /// broken one reverted with alerts, a leader killed mid-rollout. Exits 0
    /// only if every expectation held. Stops everything it started on exit.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Instances in the Auto Scaling group.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u16).range(1..=20))]
    instances: u16,
    /// Instances replaced per batch.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=20))]
    batch: u32,
    /// Keep the world running at the end until Ctrl-C.
    #[arg(long)]
    keep_running: bool,
    /// Seed of every random choice (load targets, boot delays, the moment
    /// the leader is killed); printed at the start. Default: from the clock.
    #[arg(long)]
    seed: Option<u64>,
    /// How long a new instance has to become healthy before the rollout
    /// fails (Go duration). Deadlines count observed time (a silence over
    /// 15s, such as a leader takeover, moves them later), so it must exceed
    /// a boot, min_healthy_time (3s) and up to 15s of silence.
    #[arg(long, default_value = "45s", value_parser = parse_duration)]
    healthy_deadline: Duration,
    /// Directory for the configuration, logs, chart and summary; one demo
    /// at a time per directory. Default: `demo` in the target directory.
    #[arg(long, value_name = "DIR")]
    work_dir: Option<std::path::PathBuf>,
    /// Where to write the timeline chart (SVG). Default: timeline.svg in
    /// the working directory.
    #[arg(long, value_name = "PATH")]
    chart: Option<std::path::PathBuf>,
    /// Also write the summary as JSON to PATH (always written to
    /// summary.json in the working directory).
    #[arg(long, value_name = "PATH")]
    summary_json: Option<std::path::PathBuf>,
    /// Port of the sandbox Consul on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    consul_port: u16,
    /// Plain log lines only, no live bars, even on a terminal.
    #[arg(long)]
    plain: bool,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Scenarios to run (repeatable).
    #[arg(long = "scenario", value_enum, default_values_t = [Scenario::Agent])]
    scenarios: Vec<Scenario>,
    /// The Markdown file whose sections are replaced.
    #[arg(long, default_value = "BENCHMARKS.md")]
    write: std::path::PathBuf,
    /// Steady-state window of the agent footprint measurement.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    window: Duration,
    /// Repetitions of reaction measurements.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Where the measured `rollgate` and `web` binaries are (default: beside
    /// this one). The figures in BENCHMARKS.md are taken with `target/dist`,
    /// built as images/ builds them: `cargo build --profile dist -p rollgate
    /// -p web` (on its own: built with `-p sandbox`, dependency features
    /// unify and `rollgate` grows).
    #[arg(long)]
    bin_dir: Option<std::path::PathBuf>,
    /// Check interval of the simulated nodes.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    check_interval: Duration,
    /// Services of the scale scenario.
    #[arg(long, default_value_t = 20)]
    services: usize,
    /// Instances per service of the scale scenario.
    #[arg(long, default_value_t = 50)]
    instances: usize,
    /// Leader kills of the takeover scenario (one per rollout).
    #[arg(long, default_value_t = 20)]
    kills: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    /// Node agent footprint (memory, CPU) and ready-to-passing time.
    Agent,
    /// Rollout gate reaction (p50/p99) and overhead against the floor, 12
    /// instances in batches of 3.
    Rollout,
    /// Health watcher throughput: 10,000 instances × 3 checks, 1,000 status
    /// changes over 10 s; change → alert enqueued (p50/p99), CPU, memory.
    Watcher,
    /// Fail fast: broken images (`--runs`, default 10) caught by
    /// `failure_time`; time from the first new instance's first bad answer
    /// to the rollout leaving its batch; then a slow good image succeeds.
    Failfast,
    /// Leader takeover: two coordinator replicas, the leader SIGKILLed at a
    /// random moment of each of `--kills` rollouts; takeover min/p50/p99/max.
    Takeover,
    /// One coordinator, 20 services of 50 light instances each, all rolling
    /// out at once: gate reaction, coordinator CPU and memory, Consul
    /// requests per second.
    Scale,
    /// The operator's console: the service page of 50 instances with an
    /// active rollout (p50/p99), a KV change to an open event stream, the
    /// coordinator's CPU with 50 idle event streams.
    Console,
}

#[derive(Args)]
struct ConsulArgs {
    /// Address of the server listener (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8500")]
    listen: SocketAddr,
    /// Client nodes to start, each with its own agent listener.
    #[arg(long, default_value_t = 0)]
    nodes: usize,
    /// Management token (ACLs are on, `default_policy = "deny"`, as in
    /// production). Without it, a random one is made and written to
    /// `--acl-token-file`.
    #[arg(long, env = "SANDBOX_CONSUL_ACL_TOKEN", hide_env_values = true)]
    acl_token: Option<String>,
    /// Where a generated management token is written (mode 0600); the
    /// ready line names it. Default: `sandbox-consul.token` in the system's
    /// temporary directory.
    #[arg(long, conflicts_with_all = ["acl_token", "no_acls"])]
    acl_token_file: Option<std::path::PathBuf>,
    /// Development only: ACLs off, as `consul agent -dev` runs. Every
    /// request may do anything; nothing rollgate runs in production is
    /// tested this way.
    #[arg(long, conflicts_with = "acl_token")]
    no_acls: bool,
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
    /// Consul's `check_update_interval`: how long an output-only check
    /// change waits (staggered) before the catalog shows it; 0s syncs at once.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    check_update_interval: Duration,
    /// How often critical services are reaped (Consul: 30s; 0s: when due).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    reap_interval: Duration,
    /// Lowest `DeregisterCriticalServiceAfter` honoured (Consul: 1m).
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    deregister_critical_min: Duration,
}

impl std::fmt::Debug for ConsulArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulArgs")
            .field("listen", &self.listen)
            .field("nodes", &self.nodes)
            .field("acl_token_given", &self.acl_token.is_some())
            .field("no_acls", &self.no_acls)
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
    /// Whether ACLs are enforced.
    acl: bool,
    /// The file holding the generated management token, when one was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    management_token_file: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The demo tells its story on stdout; only problems go to stderr.
    let default_filter = if matches!(cli.command, Command::Demo(_)) {
        "warn"
    } else {
        "info"
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .init();
    match cli.command {
        Command::Consul(args) => run_consul(args).await,
        Command::Bench(args) => run_bench(args).await,
        Command::Demo(args) => {
            let options = sandbox::demo::DemoOptions {
                instances: usize::from(args.instances),
                batch: args.batch,
                keep_running: args.keep_running,
                seed: args.seed.unwrap_or_else(sandbox::demo::clock_seed),
                healthy_deadline: args.healthy_deadline,
                work_dir: args.work_dir,
                chart: args.chart,
                summary_json: args.summary_json,
                consul_port: args.consul_port,
                live: args.plain.then_some(false),
            };
            let shutdown = tokio_util::sync::CancellationToken::new();
            let demo = sandbox::demo::run(options, shutdown.clone());
            tokio::pin!(demo);
            tokio::select! {
                r = &mut demo => r.map(drop),
                signal = sandbox::demo::stop_signal() => {
                    // The demo stops everything it started, then returns.
                    eprintln!("sandbox demo: {signal}: stopping everything the demo started (send it again to stop at once)");
                    shutdown.cancel();
                    tokio::select! {
                        r = &mut demo => r.map(drop),
                        signal = sandbox::demo::stop_signal() => {
                            // Returning drops the demo's future: every child
                            // it owns is killed (kill_on_drop), moto's
                            // launcher exits with its stdin, the in-process
                            // servers stop and the lock file is removed.
                            anyhow::bail!("{signal} again: killed everything the demo started")
                        }
                    }
                }
            }
        }
    }
}

async fn run_bench(args: BenchArgs) -> anyhow::Result<()> {
    let bins = match &args.bin_dir {
        Some(dir) => sandbox::node::Binaries::in_dir(dir)?,
        None => sandbox::node::Binaries::beside_current_exe()?,
    };
    let dir = tempfile::tempdir().context("creating a work directory")?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    for scenario in &args.scenarios {
        match scenario {
            Scenario::Agent => {
                tracing::info!(window = ?args.window, runs = args.runs, "Running the agent benchmark.");
                let settings = sandbox::bench::agent::AgentBench {
                    window: args.window,
                    runs: args.runs,
                    check_interval: args.check_interval,
                };
                let results = sandbox::bench::agent::run(settings, &bins, dir.path()).await?;
                let section = sandbox::bench::agent_section(&results, &command);
                print!("{section}");
                sandbox::bench::write_section(&args.write, "agent", &section)
                    .with_context(|| format!("writing {}", args.write.display()))?;
            }
            Scenario::Rollout => {
                tracing::info!(runs = args.runs, "Running the rollout benchmark.");
                let settings = sandbox::bench::rollout::RolloutBench {
                    instances: 12,
                    batch: 3,
                    boot_delay: Duration::from_secs(2),
                    min_healthy: Duration::from_secs(3),
                    runs: args.runs.clamp(1, 5),
                };
                let results = sandbox::bench::rollout::run(settings, &bins, dir.path()).await?;
                let section = sandbox::bench::rollout_section(&results, &command);
                print!("{section}");
                sandbox::bench::write_section(&args.write, "rollout", &section)
                    .with_context(|| format!("writing {}", args.write.display()))?;
            }
            Scenario::Watcher => {
                tracing::info!("Running the watcher benchmark.");
                let settings = sandbox::bench::watcher::WatcherBench::issue();
                let results = sandbox::bench::watcher::run(settings, &bins, dir.path()).await?;
                let section = sandbox::bench::watcher_section(&results, &command);
                print!("{section}");
                sandbox::bench::write_section(&args.write, "watcher", &section)
                    .with_context(|| format!("writing {}", args.write.display()))?;
            }
            Scenario::Scale => {
                tracing::info!("Running the scale benchmark.");
                let settings = sandbox::bench::scale::ScaleBench {
                    services: args.services.max(1),
                    instances: args.instances.max(1),
                    ..sandbox::bench::scale::ScaleBench::default()
                };
                let results = sandbox::bench::scale::run(settings, &bins, dir.path()).await?;
                let section = sandbox::bench::scale_section(&results, &command);
                print!("{section}");
                sandbox::bench::write_section(&args.write, "scale", &section)
                    .with_context(|| format!("writing {}", args.write.display()))?;
            }
            Scenario::Failfast => {
                tracing::info!(runs = args.runs, "Running the fail-fast benchmark.");
                let settings = sandbox::bench::failfast::FailfastBench {
                    runs: args.runs.max(1),
                    ..sandbox::bench::failfast::FailfastBench::default()
                };
                let results = sandbox::bench::failfast::run(settings, &bins, dir.path()).await?;
                let section = sandbox::bench::failfast::section(&results, &command);
                print!("{section}");
                sandbox::bench::write_section(&args.write, "failfast", &section)
                    .with_context(|| format!("writing {}", args.write.display()))?;
            }
            Scenario::Console => {
                tracing::info!("Running the console benchmark.");
                let settings = sandbox::bench::console::ConsoleBench::default();
                let results = sandbox::bench::console::run(settings, &bins, dir.path()).await?;
                let section = sandbox::bench::console::section(&results, &command);
                print!("{section}");
                sandbox::bench::write_section(&args.write, "console", &section)
                    .with_context(|| format!("writing {}", args.write.display()))?;
            }
            Scenario::Takeover => {
                tracing::info!(kills = args.kills, "Running the takeover benchmark.");
                let settings = sandbox::bench::takeover::TakeoverBench {
                    kills: args.kills.max(1),
                    ..sandbox::bench::takeover::TakeoverBench::issue()
                };
                let results = sandbox::bench::takeover::run(settings, &bins, dir.path()).await?;
                let section = sandbox::bench::takeover_section(&results, &command);
                print!("{section}");
                sandbox::bench::write_section(&args.write, "takeover", &section)
                    .with_context(|| format!("writing {}", args.write.display()))?;
            }
        }
    }
    eprintln!("sandbox: wrote {}", args.write.display());
    Ok(())
}

async fn run_consul(args: ConsulArgs) -> anyhow::Result<()> {
    // ACLs on by default, as production runs Consul; a token nobody gave
    // is made here and handed over in a file, never printed.
    let (acl_management_token, management_token_file) = match (&args.acl_token, args.no_acls) {
        (Some(token), _) => (Some(token.clone()), None),
        (None, true) => (None, None),
        (None, false) => {
            let path = args
                .acl_token_file
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join("sandbox-consul.token"));
            let secret = Secret::random();
            secret
                .write_file(&path)
                .with_context(|| format!("writing the management token to {}", path.display()))?;
            (Some(secret.expose().to_string()), Some(path))
        }
    };
    let acl = acl_management_token.is_some();
    let config = consul::Config {
        listen: args.listen,
        nodes: args.nodes,
        datacenter: args.datacenter,
        acl_management_token,
        acl_read_tokens: args.read_tokens,
        session_ttl_min: args.session_ttl_min,
        check_update_interval: args.check_update_interval,
        reap_interval: args.reap_interval,
        deregister_critical_min: args.deregister_critical_min,
        journal_kv_prefix: None,
    };
    let server = consul::Server::start(config)
        .await
        .context("starting the Consul sandbox")?;
    let ready = Ready {
        http: server.http_addr(),
        nodes: server.nodes(),
        acl,
        management_token_file,
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
