//! What the scenarios that drive real rollouts share: the sandbox Consul as
//! production runs it (ACLs on, a token per role from `config/acl/`, a
//! read-only token for the bench's own reads, the commit journal on), and
//! the real `rollgate` binary started as a coordinator or run as `rollgate
//! publish` against moto.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

use crate::acl_roles::{RoleTokens, Secret};
use crate::consul::{Config as ConsulConfig, Server, ServerHandle};
use crate::fleet::{Fleet, FleetConfig, FleetHandle};
use crate::moto::Moto;
use crate::moto::seed::{ImageSpec, SeedSpec, seed_group};
use crate::node::Binaries;

/// The environment every `rollgate` process of a bench gets: moto's dummy
/// credentials, and no instance metadata lookup.
pub(crate) const AWS_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// The sandbox Consul of a bench, with its tokens.
pub(crate) struct BenchConsul {
    /// The server.
    pub consul: ServerHandle,
    /// A token per role.
    pub roles: RoleTokens,
    /// An HTTP client holding a `global-read-only` token, for the bench's
    /// own reads.
    pub http: reqwest::Client,
}

/// Starts the sandbox Consul with ACLs on and the commit journal watching
/// `rollgate/`, makes the roles' policies and tokens from `policies` (the
/// workspace's `config/acl` when `None`), and writes the coordinator's and
/// CI's tokens to `dir/<role>.token`.
pub(crate) async fn consul(dir: &Path, policies: Option<&Path>) -> anyhow::Result<BenchConsul> {
    let management = Secret::random();
    let consul = Server::start(ConsulConfig {
        journal_kv_prefix: Some("rollgate/".to_string()),
        ..ConsulConfig::with_acls(management.expose())
    })
    .await?;
    let addr = consul.http_addr();
    let roles = match policies {
        Some(policies) => crate::acl_roles::create_roles(addr, &management, policies).await?,
        None => crate::acl_roles::create_workspace_roles(addr, &management).await?,
    };
    for role in ["coordinator", "ci"] {
        roles.write_file(role, &dir.join(format!("{role}.token")))?;
    }
    let read = crate::acl_roles::create_read_token(addr, &management, "bench reads").await?;
    let http = crate::acl_roles::http_client(&read, Duration::from_secs(660))?;
    Ok(BenchConsul {
        consul,
        roles,
        http,
    })
}

/// Starts `rollgate coordinator` with `config`; its stderr goes to `log`
/// (or nowhere).
pub(crate) fn spawn_coordinator(
    bins: &Binaries,
    config: &Path,
    log: Option<std::fs::File>,
) -> anyhow::Result<Child> {
    let stderr = log.map_or_else(std::process::Stdio::null, std::process::Stdio::from);
    Command::new(&bins.rollgate)
        .arg("--config")
        .arg(config)
        .arg("coordinator")
        .envs(AWS_ENV)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting rollgate coordinator with {}", config.display()))
}

/// `rollgate publish` of `image` as `artifact` `version`, with the CI
/// role's configuration `ci_config`; fails with its stderr.
pub(crate) async fn publish(
    bins: &Binaries,
    ci_config: &Path,
    artifact: &str,
    image: &str,
    version: &str,
) -> anyhow::Result<()> {
    let out = Command::new(&bins.rollgate)
        .arg("--config")
        .arg(ci_config)
        .args([
            "publish",
            "--artifact",
            artifact,
            "--ami",
            image,
            "--version",
            version,
        ])
        .envs(AWS_ENV)
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "publish of {image} as {artifact} {version} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// moto with the group `web-asg` of `instances` instances of `acmeinc/web
/// 1.0.0`, made real by the fleet simulator (the real `web` and `rollgate
/// agent` per instance, with the agent role's token).
pub(crate) async fn web_group(
    bins: &Binaries,
    dir: &Path,
    bench: &BenchConsul,
    instances: usize,
) -> anyhow::Result<(Moto, FleetHandle)> {
    let moto = Moto::start()
        .await
        .context("starting moto (bash sandbox/scripts/prerequisites)")?;
    let count = i32::try_from(instances).context("too many instances")?;
    seed_group(
        &moto,
        &SeedSpec::new("web-asg", ImageSpec::new("acmeinc/web", "1.0.0"), count),
    )
    .await?;
    let agent_token = bench
        .roles
        .secret("agent")
        .cloned()
        .context("no agent role token")?;
    let fleet = Fleet::start(
        FleetConfig::new(
            moto.sdk_config(),
            "web-asg",
            bench.consul.http_addr(),
            bins.clone(),
            dir.join("fleet"),
        )
        .with_agent_token(agent_token),
    )?;
    Ok((moto, fleet))
}
