//! `sandbox demo`: the main job, in the sandbox world on loopback.
//!
//! Starts the sandbox Consul, moto's server, an Auto Scaling group of `web`
//! instances on image 1.0.0, and for every instance a simulated node (IMDS,
//! the real `web`, the real `rollgate agent`), then a `rollgate coordinator`.
//! It shows the instances passing in Consul, publishes image 1.1.0 with
//! `rollgate publish`, prints the plan the coordinator made, approves it with
//! `rollgate approve`, and prints the history. Every process it started is
//! stopped on exit, Ctrl-C included.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::Command;

use crate::consul::{Config as ConsulConfig, Server};
use crate::imds::Identity;
use crate::moto::seed::{ImageSpec, SeedSpec, register_image, seed_group};
use crate::moto::{Moto, REGION};
use crate::node::{Binaries, NodeSpec, SimNode};

/// Options of the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Instances in the group.
    pub instances: usize,
    /// Keep everything running at the end until Ctrl-C.
    pub keep_running: bool,
}

fn step(title: &str) {
    println!("\n== {title}");
}

async fn rollgate(bins: &Binaries, config: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(&bins.rollgate)
        .arg("--config")
        .arg(config)
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
            "rollgate {} failed: {}{}",
            args.join(" "),
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

async fn passing(http: &reqwest::Client, consul: std::net::SocketAddr) -> Vec<serde_json::Value> {
    let url = format!("http://{consul}/v1/health/service/web?passing");
    match http.get(url).send().await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// Runs the demo; `Ok` only if every step held.
pub async fn run(options: DemoOptions) -> anyhow::Result<()> {
    let bins = Binaries::beside_current_exe()?;
    let work = tempfile::tempdir().context("creating a work directory")?;
    let started = Instant::now();

    step("Starting the sandbox world on loopback");
    let consul = Server::start(ConsulConfig {
        nodes: options.instances,
        ..ConsulConfig::default()
    })
    .await
    .context("starting the sandbox Consul")?;
    println!(
        "  Consul (sandbox): http://{}, {} client nodes",
        consul.http_addr(),
        options.instances
    );
    let moto = Moto::start().await.context(
        "starting moto's server (the AWS emulator); run `bash sandbox/scripts/prerequisites` to install it",
    )?;
    println!("  AWS (moto):       {}", moto.endpoint());
    let count = i32::try_from(options.instances).unwrap_or(3);
    let seeded = seed_group(
        &moto,
        &SeedSpec::new("web-asg", ImageSpec::new("acmeinc/web", "1.0.0"), count),
    )
    .await
    .context("creating the launch template and the Auto Scaling group")?;
    println!(
        "  Auto Scaling group web-asg: {} instances on {} (acmeinc/web 1.0.0), launch template {} v{}",
        seeded.instance_ids.len(),
        seeded.image_id,
        seeded.template_id,
        seeded.template_version
    );

    step("Every instance runs the real web app and the real rollgate agent");
    let mut nodes = Vec::new();
    for (n, id) in seeded.instance_ids.iter().enumerate() {
        let node = consul.nodes()[n % consul.nodes().len()].clone();
        let spec = NodeSpec {
            identity: Identity {
                instance_id: id.clone(),
                ami_id: seeded.image_id.clone(),
                availability_zone: format!("{REGION}{}", if n % 2 == 0 { 'a' } else { 'b' }),
                region: REGION.into(),
                local_ipv4: std::net::Ipv4Addr::LOCALHOST,
                instance_type: "t3.micro".into(),
                account_id: "123456789012".into(),
            },
            consul: node.addr,
            web_env: vec![("WEB_VERSION".into(), "1.0.0".into())],
            expected_version: "1.0.0".into(),
            artifact: "acmeinc/web".into(),
            check_interval: Duration::from_secs(1),
            ttl: Duration::from_secs(4),
            drain_time: Duration::from_secs(1),
            dir: work.path().join(id),
        };
        nodes.push(
            SimNode::start(&bins, &spec)
                .await
                .with_context(|| format!("starting node {id}"))?,
        );
    }
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let healthy = loop {
        let list = passing(&http, consul.http_addr()).await;
        if list.len() == nodes.len() {
            break list;
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {} instances became passing in Consul",
                list.len(),
                nodes.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "  {:<12} {:<22} {:<10} CHECKS",
        "NODE", "INSTANCE", "VERSION"
    );
    for entry in &healthy {
        let meta = &entry["Service"]["Meta"];
        let checks = entry["Checks"].as_array().map(Vec::len).unwrap_or(0);
        println!(
            "  {:<12} {:<22} {:<10} {checks} passing",
            entry["Node"]["Node"].as_str().unwrap_or("?"),
            meta["instance_id"].as_str().unwrap_or("?"),
            meta["version"].as_str().unwrap_or("?"),
        );
    }

    step("Starting rollgate coordinator (leader through the Consul lock)");
    let config = write_config(work.path(), consul.http_addr(), moto.endpoint())?;
    let log = std::fs::File::create(work.path().join("coordinator.log"))?;
    let mut coordinator = Command::new(&bins.rollgate)
        .arg("--config")
        .arg(&config)
        .arg("coordinator")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting rollgate coordinator")?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    step("Packer built acmeinc/web 1.1.0: `rollgate publish`");
    let new_image = register_image(
        &moto.sdk_config(),
        &ImageSpec::new("unpublished/web", "1.1.0"),
    )
    .await
    .context("registering the new image")?;
    print!(
        "{}",
        indent(
            &rollgate(
                &bins,
                &config,
                &[
                    "publish",
                    "--artifact",
                    "acmeinc/web",
                    "--ami",
                    &new_image,
                    "--version",
                    "1.1.0"
                ]
            )
            .await?
        )
    );

    step("The coordinator planned it: `rollgate plan web`");
    let deadline = Instant::now() + Duration::from_secs(20);
    let plan = loop {
        let text = rollgate(&bins, &config, &["plan", "web"]).await?;
        if text.contains(&new_image) {
            break text;
        }
        if Instant::now() > deadline {
            bail!(
                "no plan for {new_image} within 20s; coordinator log:\n{}",
                std::fs::read_to_string(work.path().join("coordinator.log")).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    print!("{}", indent(&plan));

    step("An operator approves: `rollgate approve web-1`");
    print!(
        "{}",
        indent(
            &rollgate(
                &bins,
                &config,
                &["approve", "web-1", "--as", "demo-operator"]
            )
            .await?
        )
    );

    step("`rollgate history`");
    print!("{}", indent(&rollgate(&bins, &config, &["history"]).await?));

    println!(
        "\nDemo complete in {:.0}s: {} instances passing in Consul, image 1.1.0 published, planned and approved.",
        started.elapsed().as_secs_f64(),
        nodes.len()
    );
    println!("The health-gated rollout of approved plans is the next part of rollgate to land.");

    if options.keep_running {
        println!(
            "\nKeeping the world running (Consul http://{}, AWS {}); Ctrl-C to stop.",
            consul.http_addr(),
            moto.endpoint()
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = coordinator.start_kill();
    let _ = coordinator.wait().await;
    for node in nodes {
        node.stop(Duration::from_secs(5)).await;
    }
    consul.shutdown().await;
    let _ = moto.shutdown();
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

fn write_config(dir: &Path, consul: std::net::SocketAddr, moto: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("rollgate.toml");
    std::fs::write(
        &path,
        format!(
            "[consul]\naddress = \"http://{consul}\"\n\n[log]\nlevel = \"info\"\n\n\
             [coordinator]\nregistry_poll = \"30s\"\nreplica_name = \"demo-a\"\nlock_delay = \"1s\"\n\
             aws_region = \"{REGION}\"\naws_endpoint = \"{moto}\"\n\n\
             [[services]]\nname = \"web\"\nauto_scaling_group = \"web-asg\"\nlaunch_template = \"web-asg-lt\"\n\
             artifact = \"acmeinc/web\"\napproval = \"manual\"\nexpected_boot_time = \"5s\"\n\n\
             [services.rollout]\nbatch_size = 2\nmin_healthy_time = \"3s\"\nhealthy_deadline = \"1m\"\n"
        ),
    )?;
    Ok(path)
}
