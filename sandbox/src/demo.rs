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
//! Then it tells three stories with the real CLI:
//!
//! 1. Image 1.1.0 is published, planned, approved and rolled out.
//! 2. A broken image 1.2.0 fails its first batch and is reverted; the alert
//!    with the reason arrives on Slack and by email.
//! 3. During the rollout of 1.3.0 the leading coordinator is killed
//!    (SIGKILL); the other replica takes over and finishes.
//!
//! It ends with a summary. The exit status is 0 only if every expectation
//! held, zero failed requests included. Every process it started is stopped
//! on exit, Ctrl-C included.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

use crate::consul::{Config as ConsulConfig, Server};
use crate::fleet::{Fleet, FleetConfig};
use crate::load::{Load, LoadConfig, LoadHandle};
use crate::moto::seed::{ImageSpec, SeedSpec, register_image, seed_group};
use crate::moto::{Moto, REGION};
use crate::node::Binaries;
use crate::slack::SlackServer;
use crate::smtp::SmtpServer;

/// Options of the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Instances in the group.
    pub instances: usize,
    /// Instances replaced per batch.
    pub batch: u32,
    /// Keep everything running at the end until Ctrl-C.
    pub keep_running: bool,
}

fn step(title: &str) {
    println!("\n== {title}");
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// One story's result, for the summary.
#[derive(Debug)]
struct Story {
    name: String,
    expected: &'static str,
    outcome: String,
    seconds: f64,
}

struct Ctx {
    bins: Binaries,
    work: PathBuf,
    consul: std::net::SocketAddr,
    http: reqwest::Client,
}

impl Ctx {
    fn config(&self, replica: &str) -> PathBuf {
        self.work.join(format!("{replica}.toml"))
    }

    async fn rollgate(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.bins.rollgate)
            .arg("--config")
            .arg(self.config("a"))
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("NO_COLOR", "1")
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
        crate::observe::kv_json(&self.http, self.consul, key).await
    }

    async fn plan(&self, n: u64) -> Option<serde_json::Value> {
        crate::observe::plan(&self.http, self.consul, n).await
    }

    async fn passing(&self) -> usize {
        crate::observe::passing(&self.http, self.consul, "web")
            .await
            .len()
    }
}

/// Publishes `version` (with behaviour tags), approves its plan and follows
/// the rollout; `kill` is called once the first batch is launching.
async fn story(
    ctx: &Ctx,
    moto: &Moto,
    load: &LoadHandle,
    n: u64,
    image: ImageSpec,
    kill: Option<&mut Vec<(String, Child)>>,
) -> anyhow::Result<(String, String)> {
    let version = image.version.clone();
    let spec = ImageSpec {
        artifact: "unpublished/web".into(),
        ..image
    };
    let ami = register_image(&moto.sdk_config(), &spec)
        .await
        .context("registering the image")?;
    print!(
        "{}",
        indent(
            &ctx.rollgate(&[
                "publish",
                "--artifact",
                "acmeinc/web",
                "--ami",
                &ami,
                "--version",
                &version
            ])
            .await?
        )
    );
    let id = format!("web-{n}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while ctx.plan(n).await.is_none() {
        if Instant::now() > deadline {
            bail!("no plan {id} within 30s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("  $ rollgate plan web");
    print!(
        "{}",
        indent(&indent(&ctx.rollgate(&["plan", "web"]).await?))
    );
    println!("  $ rollgate approve {id}");
    print!(
        "{}",
        indent(&indent(
            &ctx.rollgate(&["approve", &id, "--as", "demo-operator"])
                .await?
        ))
    );
    println!("  $ rollgate status web   (followed until the rollout ends)");
    let mut last = String::new();
    let mut kill = kill;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let rollout = ctx.kv_json("rollgate/services/web/rollout").await;
        let state = rollout
            .as_ref()
            .and_then(|r| r["state"]["state"].as_str().map(str::to_string))
            .unwrap_or_default();
        if let Some(r) = &rollout {
            let p = &r["progress"];
            // A line whenever the rollout's progress changes, with the
            // load counters at that moment.
            let progress = format!(
                "{state:<12} batches done {}, new healthy {}, old retired {}/{}",
                p["batches_done"],
                p["accepted"].as_array().map_or(0, Vec::len),
                p["retired"].as_array().map_or(0, Vec::len),
                p["to_replace"].as_array().map_or(0, Vec::len),
            );
            if progress != last {
                let report = load.report();
                println!(
                    "    {progress} | passing {} | requests {} ok, {} failed",
                    ctx.passing().await,
                    report.ok,
                    report.failed
                );
                last = progress;
            }
        }
        if state == "launching" {
            if let Some(replicas) = kill.take() {
                let holder = ctx
                    .kv_json("rollgate/leader")
                    .await
                    .and_then(|v| v["holder"].as_str().map(str::to_string))
                    .unwrap_or_default();
                if let Some(pos) = replicas.iter().position(|(name, _)| *name == holder) {
                    let (name, mut child) = replicas.remove(pos);
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    println!(
                        "    ** killed the leading coordinator {name:?} with SIGKILL mid-batch **"
                    );
                }
            }
        }
        if let Some(plan) = ctx.plan(n).await {
            if let Some(outcome) = plan["outcome"].as_object() {
                let result = outcome["result"].as_str().unwrap_or("?").to_string();
                let reason = outcome["reason"].as_str().unwrap_or("").to_string();
                return Ok((result, reason));
            }
        }
        if Instant::now() > deadline {
            bail!("rollout {id} did not end within 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs the demo; `Ok` only if every expectation held.
pub async fn run(options: DemoOptions) -> anyhow::Result<()> {
    let bins = Binaries::beside_current_exe()?;
    let work = tempfile::tempdir().context("creating a work directory")?;
    let started = Instant::now();

    step("Starting the sandbox world on loopback");
    let consul = Server::start(ConsulConfig::default())
        .await
        .context("starting the sandbox Consul")?;
    let moto = Moto::start().await.context(
        "starting moto's server (the AWS emulator); run `bash sandbox/scripts/prerequisites` to install it",
    )?;
    let slack = SlackServer::start(crate::slack::Config::default())
        .await
        .context("starting the Slack stand-in")?;
    let smtp = SmtpServer::start(crate::smtp::Config::default())
        .await
        .context("starting the SMTP server")?;
    println!(
        "  Consul (sandbox) http://{}   AWS (moto) {}",
        consul.http_addr(),
        moto.endpoint()
    );
    println!(
        "  Slack stand-in {}   SMTP server {}",
        slack.api_url(),
        smtp.addr()
    );
    let count = i32::try_from(options.instances).unwrap_or(6);
    let seeded = seed_group(
        &moto,
        &SeedSpec::new("web-asg", ImageSpec::new("acmeinc/web", "1.0.0"), count),
    )
    .await
    .context("creating the launch template and the Auto Scaling group")?;
    println!(
        "  Auto Scaling group web-asg: {} instances on {} (acmeinc/web 1.0.0), launch template v{}",
        seeded.instance_ids.len(),
        seeded.image_id,
        seeded.template_version
    );
    let fleet = Fleet::start(FleetConfig::new(
        moto.sdk_config(),
        "web-asg",
        consul.http_addr(),
        bins.clone(),
        work.path().join("fleet"),
    ))
    .context("starting the fleet simulator")?;
    let ctx = Ctx {
        bins: bins.clone(),
        work: work.path().to_path_buf(),
        consul: consul.http_addr(),
        http: reqwest::Client::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while ctx.passing().await < options.instances {
        if Instant::now() > deadline {
            bail!("the instances did not all become passing in Consul within 60s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "  every instance runs the real web and rollgate agent: {} passing in Consul",
        options.instances
    );
    let mut load_config = LoadConfig::new(consul.http_addr());
    load_config.rate_per_sec = 40;
    load_config.stop_after = Some(Duration::from_secs(900));
    let load = Load::start(load_config)
        .await
        .context("starting the load generator")?;
    println!("  load generator: 40 requests/s to the instances Consul reports passing");

    for replica in ["a", "b"] {
        write_config(
            &ctx.config(replica),
            replica,
            &consul.http_addr(),
            moto.endpoint(),
            &slack.api_url(),
            smtp.addr().port(),
            options.batch,
        )?;
    }
    let mut replicas = Vec::new();
    for replica in ["a", "b"] {
        let log = std::fs::File::create(work.path().join(format!("coordinator-{replica}.log")))?;
        let child = Command::new(&bins.rollgate)
            .arg("--config")
            .arg(ctx.config(replica))
            .arg("coordinator")
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
    println!(
        "  two rollgate coordinator replicas: demo-a and demo-b (one leads through the Consul lock)"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut stories = Vec::new();
    let plan = [
        (
            "Story 1: a new image, rolled out batch by batch",
            ImageSpec::new("acmeinc/web", "1.1.0"),
            "succeeded",
            false,
        ),
        (
            "Story 2: a broken image fails its first batch and is reverted",
            ImageSpec::new("acmeinc/web", "1.2.0").tag("sandbox:broken", "true"),
            "reverted",
            false,
        ),
        (
            "Story 3: the leading coordinator dies mid-rollout",
            ImageSpec::new("acmeinc/web", "1.3.0"),
            "succeeded",
            true,
        ),
    ];
    for (n, (title, image, expected, kill)) in plan.into_iter().enumerate() {
        step(title);
        let t = Instant::now();
        let (result, reason) = story(
            &ctx,
            &moto,
            &load,
            n as u64 + 1,
            image,
            kill.then_some(&mut replicas),
        )
        .await?;
        println!(
            "  outcome: {result}{}",
            if reason.is_empty() {
                String::new()
            } else {
                format!(": {reason}")
            }
        );
        stories.push(Story {
            name: title.split(':').next().unwrap_or(title).to_string(),
            expected,
            outcome: result,
            seconds: t.elapsed().as_secs_f64(),
        });
    }

    // Alerts are delivered by the outbox sender; give it a moment.
    let deadline = Instant::now() + Duration::from_secs(30);
    let reverted_alert = |text: &str| {
        text.contains("reverted") || text.contains("REVERTED") || text.contains("Reverted")
    };
    while !(slack.posts().iter().any(|p| reverted_alert(&p.text))
        && smtp.messages().iter().any(|m| reverted_alert(&m.data)))
    {
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let report = load.stop().await;
    let slack_posts = slack.posts();
    let emails = smtp.messages();
    let slack_revert = slack_posts.iter().any(|p| reverted_alert(&p.text));
    let email_revert = emails.iter().any(|m| reverted_alert(&m.data));

    step("Summary");
    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:<10} {:<10} {:<10} {:>9}",
        "ROLLOUT", "EXPECTED", "OUTCOME", "DURATION"
    );
    for s in &stories {
        let _ = writeln!(
            table,
            "{:<10} {:<10} {:<10} {:>8.0}s",
            s.name, s.expected, s.outcome, s.seconds
        );
    }
    print!("{}", indent(&table));
    println!(
        "  requests: {} sent, {} ok, {} failed; fewest instances passing during the demo: {}",
        report.sent, report.ok, report.failed, report.min_targets_seen
    );
    println!(
        "  alerts delivered: {} Slack messages, {} emails (the revert alert on Slack: {}, by email: {})",
        slack_posts.len(),
        emails.len(),
        if slack_revert { "yes" } else { "NO" },
        if email_revert { "yes" } else { "NO" }
    );
    println!("  total time: {:.0}s", started.elapsed().as_secs_f64());

    let mut failed = Vec::new();
    for s in &stories {
        if s.outcome != s.expected {
            failed.push(format!(
                "{} ended {} (expected {})",
                s.name, s.outcome, s.expected
            ));
        }
    }
    if report.failed > 0 {
        failed.push(format!("{} requests failed", report.failed));
    }
    if !slack_revert || !email_revert {
        failed.push("the revert alert did not arrive on both channels".into());
    }
    if options.keep_running {
        println!(
            "\nKeeping the world running (Consul http://{}); Ctrl-C to stop.",
            consul.http_addr()
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    for (_, mut child) in replicas {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    fleet.shutdown().await;
    slack.shutdown().await;
    smtp.shutdown().await;
    consul.shutdown().await;
    let _ = moto.shutdown();
    if failed.is_empty() {
        println!("\nEvery expectation held.");
        Ok(())
    } else {
        bail!("expectations not met: {}", failed.join("; "))
    }
}

fn write_config(
    path: &Path,
    replica: &str,
    consul: &std::net::SocketAddr,
    moto: &str,
    slack: &str,
    smtp_port: u16,
    batch: u32,
) -> anyhow::Result<()> {
    std::fs::write(
        path,
        format!(
            "[consul]\naddress = \"http://{consul}\"\n\n[log]\nlevel = \"info\"\n\n\
             [coordinator]\nregistry_poll = \"30s\"\nreplica_name = \"demo-{replica}\"\nlock_ttl = \"10s\"\n\
             lock_delay = \"1s\"\naws_region = \"{REGION}\"\naws_endpoint = \"{moto}\"\n\n\
             [notify]\ndefault_receivers = [\"ops-slack\", \"ops-email\"]\n\n\
             [[notify.receivers]]\nname = \"ops-slack\"\n[notify.receivers.slack]\nchannel = \"C0ALERTS\"\n\
             token = \"xoxb-sandbox-token\"\napi_url = \"{slack}\"\nallow_insecure = true\n\n\
             [[notify.receivers]]\nname = \"ops-email\"\n[notify.receivers.email]\nhost = \"127.0.0.1\"\n\
             port = {smtp_port}\ntls = \"none\"\nallow_insecure = true\nfrom = \"rollgate <rollgate@example.com>\"\n\
             to = [\"ops@example.com\"]\n\n\
             [[services]]\nname = \"web\"\nauto_scaling_group = \"web-asg\"\nlaunch_template = \"web-asg-lt\"\n\
             artifact = \"acmeinc/web\"\napproval = \"manual\"\nexpected_boot_time = \"2s\"\n\n\
             [services.rollout]\nbatch_size = {batch}\nmin_healthy_time = \"3s\"\nhealthy_deadline = \"45s\"\n\
             progress_deadline = \"2m\"\n"
        ),
    )?;
    Ok(())
}
