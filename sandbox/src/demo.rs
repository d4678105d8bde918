//! `sandbox demo`: the main job, in the sandbox world on loopback.
//!
//! It starts the world:
//!
//! - the sandbox Consul, moto's server, the Slack stand-in and the SMTP
//!   server;
//! - an Auto Scaling group of `web` instances on image 1.0.0, each run by the
//!   fleet simulator as the real `web` and `rollgate agent`;
//! - a load generator sending requests to the instances Consul reports
//!   passing;
//! - two `rollgate coordinator` replicas.
//!
//! Consul runs as production runs it: ACLs on with `default_policy =
//! "deny"`, and Consul's own timings. The demo holds the management token
//! and, as an operator would, creates a policy per role from the checked-in
//! `config/acl/*.hcl` and a token per role ([`crate::acl_roles`]); every
//! process gets the token of its role through a token file in
//! `<work dir>/tokens/`:
//!
//! | process | role |
//! |---|---|
//! | each instance's `rollgate agent` | `agent` (through the fleet simulator) |
//! | the coordinator replicas (with their embedded watcher) | `coordinator` |
//! | `rollgate publish` (what a CI job runs) | `ci` |
//! | `rollgate plan`, `approve`, `status` | `operator` |
//!
//! The demo runs no standalone watcher, so the `watcher` token is created
//! but unused. The load generator (standing in for a load balancer) and the
//! demo's own reads (the recorder, the live view, the summary) are not
//! rollgate: they use a read token with Consul's built-in
//! `global-read-only` policy, so they see every instance and record to
//! report truthfully but can change nothing, and cannot do on a role's
//! behalf what its policy lacks. The management token is used only to
//! create those policies and tokens.
//!
//! Then it tells three stories with the real CLI:
//!
//! 1. Image 1.1.0 is published and planned; its plan is approved from Slack
//!    (a simulated click of the Approve button, answered over Socket Mode)
//!    and rolled out.
//! 2. A broken image 1.2.0 fails its first batch and is reverted; the alert
//!    with the reason arrives on Slack and by email.
//! 3. During the rollout of 1.3.0 the leading coordinator is killed
//!    (SIGKILL); the other replica takes over and finishes.
//!
//! While a rollout runs, a live view ([`view`]) shows it on a terminal; the
//! log lines are the same everywhere. At the end: a summary
//! ([`summary::Summary`], also as JSON), a timeline chart (SVG, see
//! [`crate::chart`]) in the working directory, and an exit status of 0 only if
//! every expectation held, zero failed requests included.
//!
//! # What it must never do
//!
//! - Leave a process behind: every process it starts is stopped on exit, on
//!   an error, and on Ctrl-C (SIGINT), SIGTERM or SIGHUP (gracefully; a
//!   second signal kills everything at once).
//! - Run twice on one working directory ([`lock`]).
//! - Reach off loopback: every server binds `127.0.0.1`.

mod lock;
mod record;
pub mod summary;
mod view;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use rand::{Rng as _, SeedableRng as _};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::acl_roles::{RoleTokens, Secret};
use crate::chart::{RequestPoint, Span, Timeline};
use crate::consul::{Config as ConsulConfig, Server, ServerHandle};
use crate::fleet::{BOOT_DELAY_TAG, BROKEN_TAG, Fleet, FleetConfig, FleetHandle, InstanceState};
use crate::load::{Load, LoadConfig, LoadHandle, LoadReport};
use crate::moto::seed::{ImageSpec, SeedSpec, register_image, seed_group};
use crate::moto::{Moto, REGION};
use crate::node::Binaries;
use crate::slack::{SlackHandle, SlackServer};
use crate::smtp::{SmtpHandle, SmtpServer};

pub use self::lock::{DemoLock, LOCK_FILE, LockError};
use self::record::Recorder;
use self::summary::{AlertSummary, FleetSummary, RequestSummary, RolloutSummary, Summary};
use self::view::{Frame, View};

/// The Auto Scaling group the demo creates.
const GROUP: &str = "web-asg";
/// The load generator's rate.
const RATE: u32 = 40;
/// How often the recorder samples the fleet.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// Options of the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Instances in the group.
    pub instances: usize,
    /// Instances replaced per batch.
    pub batch: u32,
    /// Keep everything running at the end until Ctrl-C.
    pub keep_running: bool,
    /// Seeds every random choice: the load generator's target per request,
    /// each image's boot delay, the moment the leader is killed.
    pub seed: u64,
    /// The rollouts' `healthy_deadline`: how long a broken batch has before
    /// the rollout fails. Deadlines count observed time: a silence over
    /// 15 s moves them later, a shorter one (a leader takeover: the dead
    /// leader's liveness check TTL plus the lock delay, a few seconds) does
    /// not, so it must exceed a boot, `min_healthy_time` and 15 s.
    pub healthy_deadline: Duration,
    /// Where the configuration, logs, chart and summary go; one demo at a
    /// time per directory. `None`: [`default_work_dir`].
    pub work_dir: Option<PathBuf>,
    /// The chart's path; `None`: `timeline.svg` in the working directory.
    pub chart: Option<PathBuf>,
    /// Also write the summary as JSON here (it is always written to
    /// `summary.json` in the working directory).
    pub summary_json: Option<PathBuf>,
    /// The sandbox Consul's port; 0 picks a free one.
    pub consul_port: u16,
    /// Show bars: `None` decides from whether stdout is a terminal.
    pub live: Option<bool>,
}

impl DemoOptions {
    /// The demo of the README: 6 instances, batches of 2, a 45 s healthy
    /// deadline, a free Consul port, the given seed.
    pub fn new(seed: u64) -> Self {
        Self {
            instances: 6,
            batch: 2,
            keep_running: false,
            seed,
            healthy_deadline: Duration::from_secs(45),
            work_dir: None,
            chart: None,
            summary_json: None,
            consul_port: 0,
            live: None,
        }
    }
}

/// A seed from the clock, for a run without `--seed`.
pub fn clock_seed() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    // Seconds and nanoseconds mixed: two runs a second apart differ.
    now.as_secs().wrapping_mul(1_000_000_007) ^ u64::from(now.subsec_nanos())
}

/// `demo` beside the target directory the running binary was built into
/// (`target/demo` for `target/release/sandbox`), else in the temporary
/// directory.
pub fn default_work_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("demo")))
        .unwrap_or_else(|| std::env::temp_dir().join("rollgate-demo"))
}

/// Waits for SIGINT, SIGTERM or SIGHUP and answers which.
pub async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let hup = signal(SignalKind::hangup());
    match (term, hup) {
        (Ok(mut term), Ok(mut hup)) => tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
            _ = hup.recv() => "SIGHUP",
        },
        _ => {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

fn indent(text: &str, by: &str) -> String {
    text.lines().map(|l| format!("{by}{l}\n")).collect()
}

/// Turns "address in use" into what to do about it.
fn explain_bind(e: std::io::Error, what: &str, port: u16) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        anyhow::anyhow!(
            "{what}: port {port} on 127.0.0.1 is already in use (by another Consul, or a demo \
             started with --keep-running?). Stop the program that holds it (`ss -ltnp 'sport = :{port}'` \
             shows it), choose another port with --consul-port, or leave the option out to let the \
             demo pick a free one"
        )
    } else {
        anyhow::Error::new(e).context(what.to_owned())
    }
}

/// The running world.
#[derive(Debug)]
struct World {
    bins: Binaries,
    work: PathBuf,
    consul: ServerHandle,
    moto: Moto,
    slack: SlackHandle,
    smtp: SmtpHandle,
    fleet: Arc<FleetHandle>,
    load: LoadHandle,
    recorder: Recorder,
    /// Coordinator replicas still running, by replica name.
    replicas: Vec<(String, Child)>,
    /// Each replica's console address (`[http] listen`), by replica name.
    consoles: Vec<(String, SocketAddr)>,
    /// Sends the read token (see the module docs).
    http: reqwest::Client,
}

/// Who runs a CLI command, by the configuration (and so the Consul token)
/// it reads.
#[derive(Debug, Clone, Copy)]
enum Cli {
    /// A CI job: `rollgate publish`.
    Ci,
    /// An operator: `rollgate plan`, `approve`, `status`.
    Operator,
}

impl World {
    fn config(&self, name: &str) -> PathBuf {
        self.work.join(format!("{name}.toml"))
    }

    /// Runs the `rollgate` CLI as `who` and answers its stdout.
    async fn rollgate(&self, who: Cli, args: &[&str]) -> anyhow::Result<String> {
        let config = match who {
            Cli::Ci => "ci",
            Cli::Operator => "operator",
        };
        let out = Command::new(&self.bins.rollgate)
            .arg("--config")
            .arg(self.config(config))
            .env_remove("CONSUL_HTTP_TOKEN")
            .env_remove("CONSUL_HTTP_TOKEN_FILE")
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("NO_COLOR", "1")
            .kill_on_drop(true)
            .output()
            .await
            .with_context(|| format!("running rollgate {}", args.join(" ")))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "rollgate {} failed: {stdout}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(stdout)
    }

    async fn kv_json(&self, key: &str) -> Option<serde_json::Value> {
        crate::observe::kv_json(&self.http, self.consul.http_addr(), key).await
    }

    async fn plan(&self, n: u64) -> Option<serde_json::Value> {
        crate::observe::plan(&self.http, self.consul.http_addr(), n).await
    }

    async fn passing(&self) -> usize {
        crate::observe::passing(&self.http, self.consul.http_addr(), "web")
            .await
            .len()
    }

    async fn leader(&self) -> Option<String> {
        self.kv_json("rollgate/leader")
            .await
            .and_then(|v| v["holder"].as_str().map(str::to_owned))
            .filter(|h| !h.is_empty())
    }

    /// Stops everything, in order: coordinators, the recorder, the load,
    /// the fleet (drained), the servers, moto. Answers the load's final
    /// report and the recorded timeline.
    async fn shutdown(self) -> (LoadReport, Timeline) {
        let World {
            consul,
            moto,
            slack,
            smtp,
            fleet,
            load,
            recorder,
            replicas,
            ..
        } = self;
        for (_, mut child) in replicas {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        let report = load.stop().await;
        let (fleet_points, spans, marks) = recorder.stop().await;
        if let Some(fleet) = Arc::into_inner(fleet) {
            fleet.shutdown().await;
        }
        slack.shutdown().await;
        smtp.shutdown().await;
        consul.shutdown().await;
        let _ = moto.shutdown();
        let timeline = Timeline {
            title: String::new(),
            fleet: fleet_points,
            // The last bucket is cut short by the stop: it would show as a
            // drop in traffic that never happened.
            requests: report.series[..report.series.len().saturating_sub(1)]
                .iter()
                .map(|s| RequestPoint {
                    at_ms: u64::try_from(s.at.as_millis()).unwrap_or(u64::MAX),
                    width_ms: u64::try_from(report.bucket.as_millis()).unwrap_or(1000),
                    ok: s.ok,
                    failed: s.failed,
                })
                .collect(),
            spans,
            marks,
        };
        (report, timeline)
    }
}

/// Starts the world and waits until every instance passes in Consul.
async fn start_world(
    options: &DemoOptions,
    bins: Binaries,
    work: &Path,
    rng: &mut rand::rngs::StdRng,
    view: &View,
) -> anyhow::Result<World> {
    view.line("\n== Starting the sandbox world on loopback");
    // moto first: a missing Python or moto is the likeliest problem on a
    // fresh machine, and nothing else has started yet.
    let moto = Moto::start().await.context(
        "starting moto's server (the AWS emulator); run `bash sandbox/scripts/prerequisites` \
         to install Python's moto[server]",
    )?;
    let listen = SocketAddr::from(([127, 0, 0, 1], options.consul_port));
    if options.consul_port != 0 {
        // Checked here, so the message can say what to do.
        drop(
            std::net::TcpListener::bind(listen)
                .map_err(|e| explain_bind(e, "starting the sandbox Consul", options.consul_port))?,
        );
    }
    // ACLs on with a fresh management token, and Consul's own timings:
    // the demo needs no speed-up (status changes reach the catalog at once,
    // drained instances deregister themselves).
    let management = Secret::random();
    let consul = Server::start(ConsulConfig {
        listen,
        ..ConsulConfig::with_acls(management.expose())
    })
    .await
    .map_err(|e| match e {
        crate::consul::Error::Bind { source, .. } => {
            explain_bind(source, "starting the sandbox Consul", options.consul_port)
        }
        other => anyhow::Error::new(other).context("starting the sandbox Consul"),
    })?;
    let slack = SlackServer::start(crate::slack::Config::default())
        .await
        .context("starting the Slack stand-in")?;
    let smtp = SmtpServer::start(crate::smtp::Config::default())
        .await
        .context("starting the SMTP server")?;
    view.line(format!(
        "  Consul (sandbox) http://{}   AWS (moto) {}",
        consul.http_addr(),
        moto.endpoint()
    ));
    view.line(format!(
        "  Slack stand-in {}   SMTP server {}",
        slack.api_url(),
        smtp.addr()
    ));
    let (roles, read_token) = create_tokens(&consul, &management, work).await?;
    view.line(format!(
        "  Consul ACLs on (default deny): a policy and a token per role from config/acl/*.hcl ({}); \
         token files in {}",
        roles.roles().collect::<Vec<_>>().join(", "),
        work.join("tokens").display()
    ));
    let agent_token = roles
        .secret("agent")
        .cloned()
        .context("no token for the agent role")?;
    let count = i32::try_from(options.instances).context("too many instances")?;
    let seeded = seed_group(&moto, &SeedSpec::new(GROUP, image("1.0.0", rng), count))
        .await
        .context("creating the launch template and the Auto Scaling group")?;
    view.line(format!(
        "  Auto Scaling group {GROUP}: {} instances on {} (acmeinc/web 1.0.0), launch template v{}",
        seeded.instance_ids.len(),
        seeded.image_id,
        seeded.template_version
    ));
    let fleet_dir = work.join("fleet");
    let fleet = Fleet::start(
        FleetConfig::new(
            moto.sdk_config(),
            GROUP,
            consul.http_addr(),
            bins.clone(),
            fleet_dir,
        )
        .with_agent_token(agent_token),
    )
    .context("starting the fleet simulator")?;
    let fleet = Arc::new(fleet);
    let http = crate::acl_roles::http_client(&read_token, Duration::from_secs(10))
        .context("building an HTTP client")?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let passing = crate::observe::passing(&http, consul.http_addr(), "web")
            .await
            .len();
        if passing >= options.instances {
            break;
        }
        if Instant::now() > deadline {
            let failed = fleet.counters().start_failures;
            bail!(
                "only {passing} of {} instances became passing in Consul within 90s \
                 ({failed} failed starts; the instances' logs are in {})",
                options.instances,
                work.join("fleet").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    view.line(format!(
        "  every instance runs the real web and rollgate agent: {} passing in Consul",
        options.instances
    ));
    let recorder = Recorder::start(
        Arc::clone(&fleet),
        consul.http_addr(),
        read_token.clone(),
        SAMPLE_EVERY,
    );
    let mut load_config = LoadConfig::new(consul.http_addr());
    load_config.token = Some(read_token);
    load_config.rate_per_sec = RATE;
    load_config.stop_after = Some(Duration::from_secs(3600));
    load_config.seed = Some(rng.random());
    let load = Load::start(load_config)
        .await
        .context("starting the load generator")?;
    view.line(format!(
        "  load generator: {RATE} requests/s, each to a passing instance picked at random (seeded)"
    ));

    // Each process reads the configuration of its role: the replicas a and
    // b (coordinator), ci and operator (the CLI).
    // Each replica serves its console on a port of its own.
    let consoles: Vec<(String, SocketAddr)> = ["a", "b"]
        .into_iter()
        .map(|r| (format!("demo-{r}"), crate::testkit::free_addr()))
        .collect();
    for (name, role) in [
        ("a", "coordinator"),
        ("b", "coordinator"),
        ("ci", "ci"),
        ("operator", "operator"),
    ] {
        let console = consoles
            .iter()
            .find(|(replica, _)| *replica == format!("demo-{name}"))
            .map(|(_, addr)| *addr);
        write_config(
            &work.join(format!("{name}.toml")),
            name,
            console,
            &work.join("tokens").join(format!("{role}.token")),
            &consul.http_addr(),
            moto.endpoint(),
            &slack.api_url(),
            smtp.addr().port(),
            options,
        )?;
    }
    let mut replicas = Vec::new();
    for replica in ["a", "b"] {
        let log_path = work.join(format!("coordinator-{replica}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let child = Command::new(&bins.rollgate)
            .arg("--config")
            .arg(work.join(format!("{replica}.toml")))
            .arg("coordinator")
            .env_remove("CONSUL_HTTP_TOKEN")
            .env_remove("CONSUL_HTTP_TOKEN_FILE")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting rollgate coordinator")?;
        replicas.push((format!("demo-{replica}"), child));
    }
    view.line(
        "  two rollgate coordinator replicas: demo-a and demo-b (one leads through the Consul lock)",
    );
    let world = World {
        bins,
        work: work.to_path_buf(),
        consul,
        moto,
        slack,
        smtp,
        fleet,
        load,
        recorder,
        replicas,
        consoles,
        http,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while world.leader().await.is_none() {
        if Instant::now() > deadline {
            bail!(
                "no coordinator took the leader lock within 30s; see {}",
                work.join("coordinator-a.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The addresses are printed once each replica's console accepts
    // connections, so a reader (or a script) can open them at once.
    for (name, addr) in &world.consoles {
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if Instant::now() > deadline {
                bail!(
                    "{name}'s console did not listen on {addr} within 30s; see {}",
                    work.join(format!(
                        "coordinator-{}.log",
                        name.trim_start_matches("demo-")
                    ))
                    .display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    view.line(format!(
        "  console (every replica serves it): {}; log in with the operator token in {}",
        console_list(&world.consoles),
        work.join("tokens").join("operator.token").display()
    ));
    Ok(world)
}

/// Creates the roles' policies and tokens ([`crate::acl_roles`]) with the
/// management token, writes each role's token to `<work>/tokens/<role>.token`,
/// and creates the observers' read token.
async fn create_tokens(
    consul: &ServerHandle,
    management: &Secret,
    work: &Path,
) -> anyhow::Result<(RoleTokens, Secret)> {
    let dir = crate::acl_roles::policy_dir();
    let roles = crate::acl_roles::create_roles(consul.http_addr(), management, &dir)
        .await
        .with_context(|| {
            format!(
                "creating the roles' ACL policies and tokens from {}",
                dir.display()
            )
        })?;
    let tokens = work.join("tokens");
    for role in crate::acl_roles::ROLES {
        let path = tokens.join(format!("{role}.token"));
        roles
            .write_file(role, &path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let read = crate::acl_roles::create_read_token(
        consul.http_addr(),
        management,
        "sandbox demo observers (load generator, recorder, summary): read only",
    )
    .await
    .context("creating the observers' read token")?;
    Ok((roles, read))
}

/// An image of `acmeinc/web` at `version`, booting in 0.5 to 2 s (seeded).
fn image(version: &str, rng: &mut rand::rngs::StdRng) -> ImageSpec {
    let boot = rng.random_range(500..2000u64);
    ImageSpec::new("acmeinc/web", version).tag(BOOT_DELAY_TAG, &format!("{boot}ms"))
}

/// One story: what to roll out and what should happen.
#[derive(Debug)]
struct Story {
    title: &'static str,
    image: ImageSpec,
    expected: &'static str,
    kill_leader: bool,
}

/// Publishes the story's image, approves its plan and follows the rollout
/// to its outcome, killing the leader mid-batch when the story says so.
async fn run_story(
    world: &mut World,
    view: &mut View,
    options: &DemoOptions,
    n: u64,
    story: Story,
    kill_delay: Duration,
) -> anyhow::Result<RolloutSummary> {
    let version = story.image.version.clone();
    let id = format!("web-{n}");
    let mut result = RolloutSummary {
        plan: id.clone(),
        version: version.clone(),
        expected: story.expected.to_owned(),
        outcome: String::new(),
        reason: String::new(),
        seconds: 0.0,
        kills_leader: story.kill_leader,
        leader_at_start: None,
        leader_killed: None,
        leader_at_end: None,
    };
    let started = Instant::now();
    let start_ms = world.recorder.now_ms();
    // Registered under another artifact so the registry does not see it
    // before `rollgate publish` says so.
    let spec = ImageSpec {
        artifact: "unpublished/web".into(),
        ..story.image
    };
    let ami = register_image(&world.moto.sdk_config(), &spec)
        .await
        .context("registering the image")?;
    world.recorder.set_target(&version);
    let published = world
        .rollgate(
            Cli::Ci,
            &[
                "publish",
                "--artifact",
                "acmeinc/web",
                "--ami",
                &ami,
                "--version",
                &version,
            ],
        )
        .await?;
    view.line(format!(
        "  $ rollgate publish --artifact acmeinc/web --ami {ami} --version {version}"
    ));
    view.line(indent(&published, "    ").trim_end());
    let deadline = Instant::now() + Duration::from_secs(30);
    while world.plan(n).await.is_none() {
        if Instant::now() > deadline {
            bail!("no plan {id} within 30s of publishing {version}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    view.line("  $ rollgate plan web");
    view.line(
        indent(
            &world.rollgate(Cli::Operator, &["plan", "web"]).await?,
            "    ",
        )
        .trim_end(),
    );
    if n == 1 {
        approve_from_slack(world, view, n, &id).await?;
    } else {
        view.line(format!("  $ rollgate approve {id}"));
        let approved = world
            .rollgate(Cli::Operator, &["approve", &id, "--as", "demo-operator"])
            .await?;
        view.line(indent(&approved, "    ").trim_end());
    }
    view.line("  $ rollgate status web   (followed until the rollout ends)");
    result.leader_at_start = world.leader().await;

    let approved_at = Instant::now();
    let batch = u64::from(options.batch);
    view.start(options.instances as u64, batch);
    let mut last_step = String::new();
    let mut kill_at: Option<Instant> = None;
    let mut killed: Option<String> = None;
    let mut took_over = false;
    let deadline = Instant::now() + Duration::from_secs(300);
    let outcome = loop {
        let rollout = world.kv_json("rollgate/services/web/rollout").await;
        let leader = world.leader().await.unwrap_or_default();
        if let Some(dead) = &killed {
            if !took_over && !leader.is_empty() && leader != *dead {
                took_over = true;
                world.recorder.mark(format!("{leader} took over"));
                view.line(format!(
                    "    ** {leader} took the leader lock and continues the rollout **"
                ));
            }
        }
        // Only the rollout of this plan counts (the record of the previous
        // one stays until this one starts).
        let rollout = rollout.filter(|r| r["spec"]["id"].as_str() == Some(id.as_str()));
        if let Some(r) = &rollout {
            let frame = frame(r, &id, &version, options, world, &leader, approved_at);
            view.show(&frame);
            let step = format!(
                "{}|{}|{}|{}",
                frame.phase,
                frame.batch,
                r["progress"]["accepted"].as_array().map_or(0, Vec::len),
                r["progress"]["retired"].as_array().map_or(0, Vec::len)
            );
            if step != last_step {
                view.line(view::step_line(&frame));
                last_step = step;
            }
            if story.kill_leader && killed.is_none() && frame.phase == "launching" {
                let at = *kill_at.get_or_insert_with(|| Instant::now() + kill_delay);
                if Instant::now() >= at {
                    if let Some(pos) = world.replicas.iter().position(|(name, _)| *name == leader) {
                        let (name, mut child) = world.replicas.remove(pos);
                        let _ = child.start_kill();
                        let _ = child.wait().await;
                        world.recorder.mark(format!("{name} killed"));
                        view.line(format!(
                            "    ** killed the leading coordinator {name} with SIGKILL mid-batch **"
                        ));
                        killed = Some(name);
                    }
                }
            }
        }
        if let Some(plan) = world.plan(n).await {
            if let Some(outcome) = plan["outcome"].as_object() {
                let result = outcome
                    .get("result")
                    .and_then(|v| v.as_str())
                    .unwrap_or("?")
                    .to_owned();
                let reason = outcome
                    .get("reason")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_owned();
                break (result, reason);
            }
        }
        if Instant::now() > deadline {
            view.finish();
            bail!("rollout {id} did not end within 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    view.finish();
    (result.outcome, result.reason) = outcome;
    result.leader_killed = killed;
    result.leader_at_end = world.leader().await;
    result.seconds = started.elapsed().as_secs_f64();
    let good = result.outcome == result.expected;
    world.recorder.span(Span {
        start_ms,
        end_ms: world.recorder.now_ms(),
        label: format!("{version} {}", result.outcome),
        good: good && result.outcome == "succeeded",
    });
    Ok(result)
}

/// The live view's frame for a rollout record.
fn frame(
    r: &serde_json::Value,
    id: &str,
    version: &str,
    options: &DemoOptions,
    world: &World,
    leader: &str,
    approved_at: Instant,
) -> Frame {
    let state = &r["state"];
    let phase = state["state"].as_str().unwrap_or("?").to_owned();
    let progress = &r["progress"];
    let done = progress["batches_done"].as_u64().unwrap_or(0);
    let to_replace =
        progress["to_replace"]
            .as_array()
            .map_or(0, Vec::len)
            .max(if phase == "pending" {
                options.instances
            } else {
                0
            });
    let batch = u64::from(options.batch.max(1));
    let batches = (to_replace as u64).div_ceil(batch);
    let current = state["number"]
        .as_u64()
        .or_else(|| state["batch"].as_u64())
        .unwrap_or(done);
    let fleet = world.recorder.latest();
    let report = world.load.report();
    Frame {
        title: format!("{id} -> {version}"),
        phase,
        batch: u32::try_from(current).unwrap_or(0),
        batches: u32::try_from(batches).unwrap_or(0),
        old: fleet.old as u64,
        new: fleet.new as u64,
        passing: fleet.passing as u64,
        leader: leader.to_owned(),
        served: report.ok,
        failed: report.failed,
        seconds: approved_at.elapsed().as_secs(),
    }
}

/// Waits (up to 30 s) for the fleet to settle on `instances` passing
/// instances of `version` with nothing draining, then accounts for every
/// instance.
async fn account(world: &World, instances: usize, version: &str) -> FleetSummary {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut summary;
    loop {
        let snapshot = world.fleet.snapshot();
        let running: Vec<_> = snapshot
            .iter()
            .filter(|i| matches!(i.state, InstanceState::Booting | InstanceState::Running))
            .collect();
        let draining = snapshot
            .iter()
            .filter(|i| i.state == InstanceState::Draining)
            .count();
        let mut in_group = in_service(world).await;
        in_group.sort();
        let mut running_ids: Vec<String> = running.iter().map(|i| i.instance_id.clone()).collect();
        running_ids.sort();
        let counters = world.fleet.counters();
        summary = FleetSummary {
            expected: instances,
            final_version: version.to_owned(),
            in_group: in_group.len(),
            running: running.len(),
            on_final_version: running.iter().filter(|i| i.version == version).count(),
            passing: world.passing().await,
            started: counters.started,
            stopped: counters.stopped,
            group_matches_fleet: in_group == running_ids,
        };
        if (draining == 0 && summary.problems().is_empty()) || Instant::now() > deadline {
            return summary;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The InService members of the group, as moto reports them.
async fn in_service(world: &World) -> Vec<String> {
    let asg = aws_sdk_autoscaling::Client::new(&world.moto.sdk_config());
    match asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(GROUP)
        .send()
        .await
    {
        Ok(out) => out
            .auto_scaling_groups()
            .iter()
            .flat_map(|g| g.instances())
            .filter(|i| {
                i.lifecycle_state()
                    .is_some_and(|s| s.as_str() == "InService")
            })
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "Cannot describe the group for the summary.");
            Vec::new()
        }
    }
}

/// Whether an alert's text is about the revert.
fn revert_alert(text: &str) -> bool {
    text.to_ascii_lowercase().contains("reverted")
}

/// Runs the demo until it ends or `shutdown` is cancelled (then it stops
/// everything it started and fails). `Ok` only if every expectation held;
/// the summary is printed and written either way once the stories ran.
pub async fn run(options: DemoOptions, shutdown: CancellationToken) -> anyhow::Result<Summary> {
    let bins = Binaries::beside_current_exe()?;
    let work = options.work_dir.clone().unwrap_or_else(default_work_dir);
    std::fs::create_dir_all(&work)
        .with_context(|| format!("creating the working directory {}", work.display()))?;
    let _lock = DemoLock::acquire(&work)?;
    // The instances' folders of an earlier run would only confuse.
    let _ = std::fs::remove_dir_all(work.join("fleet"));
    let chart_path = options
        .chart
        .clone()
        .unwrap_or_else(|| work.join("timeline.svg"));
    let started = Instant::now();
    let mut view = View::new(options.live.unwrap_or_else(View::stdout_is_terminal));
    let seed = options.seed;
    view.line(format!(
        "sandbox demo: seed {seed} (repeat this run with --seed {seed}); working files in {}",
        work.display()
    ));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let mut world = tokio::select! {
        world = start_world(&options, bins, &work, &mut rng, &view) => world?,
        _ = shutdown.cancelled() => bail!("interrupted while starting; stopped everything the demo started"),
    };

    let stories = stories(&mut rng);
    let kill_delay = Duration::from_millis(rng.random_range(0..1500));
    let Told {
        rollouts,
        final_version,
        interrupted,
    } = tell_stories(
        &mut world, &mut view, &options, stories, kill_delay, &shutdown,
    )
    .await;
    if interrupted {
        world.shutdown().await;
        bail!("interrupted; stopped everything the demo started");
    }
    let alerts = collect_alerts(&world, &shutdown).await;
    let fleet = account(&world, options.instances, &final_version).await;

    if options.keep_running && !shutdown.is_cancelled() {
        let live: Vec<(String, SocketAddr)> = world
            .consoles
            .iter()
            .filter(|(name, _)| world.replicas.iter().any(|(r, _)| r == name))
            .cloned()
            .collect();
        view.line(format!(
            "\nKeeping the world running (Consul http://{}, AWS {}); `rollgate --config {} status web` \
             works against it, and so does the console: {} (the operator token is in {}). Ctrl-C to stop.",
            world.consul.http_addr(),
            world.moto.endpoint(),
            world.config("operator").display(),
            console_list(&live),
            world.work.join("tokens").join("operator.token").display()
        ));
        shutdown.cancelled().await;
    }
    view.line("\n== Stopping everything the demo started");
    let (report, mut timeline) = world.shutdown().await;
    timeline.title = format!(
        "rollgate sandbox demo: {} instances, batches of {}, seed {seed}",
        options.instances, options.batch
    );
    let chart = match timeline.write_svg(&chart_path) {
        Ok(()) => Some(chart_path.clone()),
        Err(e) => {
            view.line(format!("  {e}"));
            None
        }
    };
    let mut summary = Summary {
        ok: false,
        problems: Vec::new(),
        seed,
        instances: options.instances,
        batch: options.batch,
        rollouts,
        requests: RequestSummary {
            sent: report.sent,
            ok: report.ok,
            failed: report.failed,
            min_passing: report.min_targets_seen,
        },
        alerts,
        fleet,
        chart: chart.clone(),
        work_dir: work.clone(),
        seconds: started.elapsed().as_secs_f64(),
    };
    summary.check();
    if chart.is_none() {
        summary.ok = false;
        summary
            .problems
            .push("the timeline chart was not written".into());
    }
    report_summary(&summary, &options, &work, &view)?;
    if summary.ok {
        view.line("\nEvery expectation held.");
        Ok(summary)
    } else {
        bail!("expectations not met: {}", summary.problems.join("; "))
    }
}

/// The demo's three stories, their images' boot delays drawn from `rng`.
fn stories(rng: &mut rand::rngs::StdRng) -> [Story; 3] {
    [
        Story {
            title: "Story 1: a new image, rolled out batch by batch",
            image: image("1.1.0", rng),
            expected: "succeeded",
            kill_leader: false,
        },
        Story {
            title: "Story 2: a broken image fails its first batch and is reverted",
            image: image("1.2.0", rng).tag(BROKEN_TAG, "true"),
            expected: "reverted",
            kill_leader: false,
        },
        Story {
            title: "Story 3: the leading coordinator dies mid-rollout",
            image: image("1.3.0", rng),
            expected: "succeeded",
            kill_leader: true,
        },
    ]
}

/// What telling the stories gave.
struct Told {
    /// One summary per story, run or not.
    rollouts: Vec<RolloutSummary>,
    /// The version the fleet should end on: the last one that succeeded.
    final_version: String,
    /// Ctrl-C (or SIGTERM) arrived: stop everything, summarise nothing.
    interrupted: bool,
}

/// Runs the stories in order; after one the demo could not follow (or an
/// interruption) the rest are recorded as not run.
async fn tell_stories(
    world: &mut World,
    view: &mut View,
    options: &DemoOptions,
    stories: [Story; 3],
    kill_delay: Duration,
    shutdown: &CancellationToken,
) -> Told {
    let mut told = Told {
        rollouts: Vec::new(),
        final_version: "1.0.0".to_owned(),
        interrupted: false,
    };
    let mut failed_early = false;
    for (n, story) in stories.into_iter().enumerate() {
        let n = n as u64 + 1;
        let unfinished =
            |outcome: &str, reason: String, story: (&String, &str, bool)| RolloutSummary {
                plan: format!("web-{n}"),
                version: story.0.clone(),
                expected: story.1.to_owned(),
                outcome: outcome.into(),
                reason,
                seconds: 0.0,
                kills_leader: story.2,
                leader_at_start: None,
                leader_killed: None,
                leader_at_end: None,
            };
        let version = story.image.version.clone();
        let (expected, kills_leader) = (story.expected, story.kill_leader);
        if failed_early || told.interrupted {
            let skipped = unfinished("not run", String::new(), (&version, expected, kills_leader));
            told.rollouts.push(skipped);
            continue;
        }
        view.line(format!("\n== {}", story.title));
        let result = tokio::select! {
            r = run_story(world, view, options, n, story, kill_delay) => Some(r),
            _ = shutdown.cancelled() => None,
        };
        view.finish();
        match result {
            None => {
                told.interrupted = true;
                view.line("  interrupted: stopping everything the demo started");
            }
            Some(Ok(r)) => {
                view.line(format!(
                    "  outcome: {}{}",
                    r.outcome,
                    if r.reason.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", r.reason)
                    }
                ));
                if r.outcome == "succeeded" {
                    told.final_version = r.version.clone();
                }
                told.rollouts.push(r);
            }
            Some(Err(e)) => {
                view.line(format!("  the demo could not follow this rollout: {e:#}"));
                failed_early = true;
                let error = unfinished(
                    "error",
                    format!("{e:#}"),
                    (&version, expected, kills_leader),
                );
                told.rollouts.push(error);
            }
        }
    }
    told
}

/// Waits (at most 30 s) for the revert alert on both channels, which the
/// outbox sender delivers on its own schedule, then counts what arrived.
async fn collect_alerts(world: &World, shutdown: &CancellationToken) -> AlertSummary {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(world.slack.posts().iter().any(|p| revert_alert(&p.text))
        && world.smtp.messages().iter().any(|m| revert_alert(&m.data)))
    {
        if Instant::now() > deadline || shutdown.is_cancelled() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let slack_posts = world.slack.posts();
    let emails = world.smtp.messages();
    AlertSummary {
        slack: slack_posts.len(),
        email: emails.len(),
        revert_on_slack: slack_posts.iter().any(|p| revert_alert(&p.text)),
        revert_on_email: emails.iter().any(|m| revert_alert(&m.data)),
    }
}

/// Prints the summary and writes it as JSON (into the working directory
/// and wherever `--summary-json` says).
fn report_summary(
    summary: &Summary,
    options: &DemoOptions,
    work: &std::path::Path,
    view: &View,
) -> anyhow::Result<()> {
    view.line("\n== Summary");
    view.line(summary.render().trim_end());
    if let Some(path) = &summary.chart {
        view.line(format!("  timeline chart: {}", path.display()));
    }
    let json = serde_json::to_string_pretty(summary).context("encoding the summary")?;
    let mut json_paths = vec![work.join("summary.json")];
    json_paths.extend(options.summary_json.clone());
    for path in &json_paths {
        std::fs::write(path, &json)
            .with_context(|| format!("writing the summary to {}", path.display()))?;
    }
    view.line(format!(
        "  summary as JSON: {}; coordinator logs: {}",
        json_paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        work.join("coordinator-*.log").display()
    ));
    Ok(())
}

/// The first story's plan is approved from Slack: the demo's operator
/// (Slack user `U0DEMO`, listed in `slack_approvers`) clicks Approve on the
/// message announcing it, and the leader answers over Socket Mode.
async fn approve_from_slack(
    world: &World,
    view: &mut View,
    n: u64,
    id: &str,
) -> anyhow::Result<()> {
    let action = format!("rollgate:approve:{id}");
    let button = format!("\"{action}\"");
    let deadline = Instant::now() + Duration::from_secs(30);
    let ts = loop {
        let message = world
            .slack
            .posts()
            .into_iter()
            .find(|p| p.thread_ts.is_none() && p.blocks.to_string().contains(&button));
        if let Some(p) = message {
            break p.ts;
        }
        if Instant::now() > deadline {
            bail!("no Slack message with an Approve button for {id} within 30s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    view.line(format!(
        "  Slack: demo-operator clicks Approve on the message announcing {id}"
    ));
    world
        .slack
        .click(
            &crate::slack::User::new("U0DEMO", "demo-operator"),
            &ts,
            &action,
        )
        .map_err(|e| anyhow::anyhow!("clicking Approve: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let decision = world.plan(n).await.map(|p| p["decision"].clone());
        if let Some(d) = decision.filter(|d| d["state"] == "approved") {
            view.line(format!(
                "    Plan {id} approved from Slack by {}; the message now says so.",
                d["by"].as_str().unwrap_or("?")
            ));
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("plan {id} not approved within 30s of the Slack click");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A rollgate configuration for `name` (a replica, or the CLI of a role),
/// sending the token in `token_file`. The Slack app (Socket Mode, its
/// app-level token in a file beside the configuration) answers buttons of
/// `ops-slack`, and the demo's operator `U0DEMO` may use them.
#[allow(clippy::too_many_arguments)]
/// `http://ADDR (replica), ...`.
fn console_list(consoles: &[(String, SocketAddr)]) -> String {
    consoles
        .iter()
        .map(|(name, addr)| format!("http://{addr} ({name})"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[allow(clippy::too_many_arguments)]
fn write_config(
    path: &Path,
    name: &str,
    console: Option<SocketAddr>,
    token_file: &Path,
    consul: &SocketAddr,
    moto: &str,
    slack: &str,
    smtp_port: u16,
    options: &DemoOptions,
) -> anyhow::Result<()> {
    let batch = options.batch;
    let token_file = token_file.display().to_string();
    let healthy = format!("{}ms", options.healthy_deadline.as_millis());
    let app_token_file = path.with_file_name("slack-app.token");
    std::fs::write(&app_token_file, crate::slack::Config::default().app_token)
        .with_context(|| format!("writing {}", app_token_file.display()))?;
    let app_token_file = app_token_file.display().to_string();
    // A replica's console, and links to it in its alerts.
    let http = console.map_or(String::new(), |addr| {
        format!("[http]\nlisten = \"{addr}\"\npublic_url = \"http://{addr}\"\n\n")
    });
    std::fs::write(
        path,
        format!(
            "[consul]\naddress = \"http://{consul}\"\ntoken_file = {token_file:?}\n\n[log]\nlevel = \"info\"\n\n{http}\
             [coordinator]\nregistry_poll = \"30s\"\nreplica_name = \"demo-{name}\"\nlock_ttl = \"10s\"\n\
             lock_delay = \"1s\"\naws_region = \"{REGION}\"\naws_endpoint = \"{moto}\"\n\n\
             [notify]\ndefault_receivers = [\"ops-slack\", \"ops-email\"]\n\n\
             [[notify.receivers]]\nname = \"ops-slack\"\n[notify.receivers.slack]\nchannel = \"C0ALERTS\"\n\
             token = \"xoxb-sandbox-token\"\napi_url = \"{slack}\"\nallow_insecure = true\n\n\
             [[notify.receivers]]\nname = \"ops-email\"\n[notify.receivers.email]\nhost = \"127.0.0.1\"\n\
             port = {smtp_port}\ntls = \"none\"\nallow_insecure = true\nfrom = \"rollgate <rollgate@example.com>\"\n\
             to = [\"ops@example.com\"]\n\n\
             [[services]]\nname = \"web\"\nauto_scaling_group = \"{GROUP}\"\nlaunch_template = \"{GROUP}-lt\"\n\
             artifact = \"acmeinc/web\"\napproval = \"manual\"\nexpected_boot_time = \"2s\"\n\
             slack_approvers = [\"U0DEMO\"]\n\n\
             [services.rollout]\nbatch_size = {batch}\nmin_healthy_time = \"3s\"\nhealthy_deadline = \"{healthy}\"\n\
             progress_deadline = \"2m\"\n\n\
             [coordinator.slack_app]\nreceiver = \"ops-slack\"\napp_token_file = {app_token_file:?}\n\
             reconnect_min = \"200ms\"\nreconnect_max = \"5s\"\n"
        ),
    )
    .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_images() {
        let boot = |seed| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            image("1.1.0", &mut rng).tags
        };
        assert_eq!(boot(3), boot(3));
        assert_ne!(boot(3), boot(4));
    }

    #[test]
    fn a_port_in_use_says_what_to_do() {
        let e = explain_bind(
            std::io::Error::from(std::io::ErrorKind::AddrInUse),
            "starting the sandbox Consul",
            8500,
        );
        let text = format!("{e:#}");
        assert!(text.contains("port 8500"), "{text}");
        assert!(text.contains("--consul-port"), "{text}");
    }

    #[test]
    fn the_config_sets_the_deadline_and_batch() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("a.toml");
        let mut options = DemoOptions::new(1);
        options.batch = 3;
        options.healthy_deadline = Duration::from_secs(20);
        write_config(
            &path,
            "a",
            Some(SocketAddr::from(([127, 0, 0, 1], 9181))),
            &dir.path().join("tokens/coordinator.token"),
            &SocketAddr::from(([127, 0, 0, 1], 8500)),
            "http://127.0.0.1:5000",
            "http://127.0.0.1:5001/api/",
            2525,
            &options,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(text.contains("batch_size = 3"), "{text}");
        assert!(text.contains("healthy_deadline = \"20000ms\""), "{text}");
        assert!(text.contains("replica_name = \"demo-a\""), "{text}");
        assert!(text.contains("tokens/coordinator.token"), "{text}");
        assert!(text.contains("slack_approvers = [\"U0DEMO\"]"), "{text}");
        assert!(
            text.contains("[http]\nlisten = \"127.0.0.1:9181\""),
            "{text}"
        );
        assert!(
            text.contains("public_url = \"http://127.0.0.1:9181\""),
            "{text}"
        );
        assert!(dir.path().join("slack-app.token").is_file());
    }
}
