//! The world of the rollout end-to-end tests, every part a real process on
//! loopback: moto's server (AWS), the sandbox Consul, the fleet simulator
//! (the real `web` and `rollgate agent` on every instance of the emulated
//! group), the load generator, the Slack stand-in, and `rollgate
//! coordinator` replicas.
//!
//! Consul runs as in production: ACLs on (`default_policy = "deny"`) and
//! Consul's own timings, unless a test asks for shorter ones with
//! [`World::with_consul`] and says why. The world creates a policy per
//! `config/acl/*.hcl` and a token per role ([`sandbox::acl_roles`]) and
//! gives each process the token of its role through a token file: the
//! instances' agents `agent`, the coordinators `coordinator`, `rollgate
//! publish` `ci`, the other CLI commands `operator`. The test's own reads
//! ([`World::client`]) and the load generator are observers, not rollgate
//! roles: they use a token with Consul's built-in `global-read-only`
//! policy, which sees everything and can change nothing.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use rollgate::aws::Fleet as _;
use rollgate::aws::sdk::SdkFleet;
use rollgate::config::{ConsulConfig, Secret as ConsulSecret};
use rollgate::consul::{Client, QueryOptions};
use rollgate::rollout::plan::Plan;
use rollgate::rollout::store::Store;
use sandbox::acl_roles::{RoleTokens, Secret};
use sandbox::consul::{Config as ServerConfig, Server, ServerHandle};
use sandbox::fleet::{Fleet, FleetConfig, FleetHandle};
use sandbox::load::{Load, LoadConfig, LoadHandle};
use sandbox::moto::seed::{ImageSpec, SeedSpec, Seeded, register_image, seed_group};
use sandbox::moto::{Moto, REGION};
use sandbox::node::Binaries;
use sandbox::slack::{SlackHandle, SlackServer};
use sandbox::testkit::{LoggedChild, until};
use tokio::process::Command;

pub const INSTANCES: i32 = 6;

pub struct World {
    pub moto: Moto,
    pub consul: ServerHandle,
    pub slack: SlackHandle,
    pub seeded: Seeded,
    pub fleet: Option<FleetHandle>,
    pub load: Option<LoadHandle>,
    pub dir: tempfile::TempDir,
    /// The management token: only for creating ACLs.
    pub management: Secret,
    /// A token per role, from `config/acl/*.hcl`.
    pub roles: RoleTokens,
    /// The observers' token (`global-read-only`).
    pub read_token: Secret,
}

fn binaries() -> Binaries {
    Binaries {
        web: sandbox::testkit::binary("web", "web"),
        rollgate: PathBuf::from(env!("CARGO_BIN_EXE_rollgate")),
    }
}

impl World {
    /// The world with Consul's own timings.
    pub async fn new() -> Self {
        Self::with_consul(ServerConfig::default()).await
    }

    /// The world with Consul started from `config` (its timings; ACLs are
    /// turned on here).
    pub async fn with_consul(config: ServerConfig) -> Self {
        let moto = Moto::start()
            .await
            .expect("moto starts (bash sandbox/scripts/prerequisites)");
        let management = Secret::random();
        let consul = Server::start(ServerConfig {
            acl_management_token: Some(management.expose().to_owned()),
            ..config
        })
        .await
        .unwrap();
        let roles = sandbox::acl_roles::create_workspace_roles(consul.http_addr(), &management)
            .await
            .unwrap();
        let read_token =
            sandbox::acl_roles::create_read_token(consul.http_addr(), &management, "test reads")
                .await
                .unwrap();
        let dir = tempfile::tempdir().unwrap();
        for role in sandbox::acl_roles::ROLES {
            roles
                .write_file(role, &dir.path().join(format!("tokens/{role}.token")))
                .unwrap();
        }
        let slack = SlackServer::start(sandbox::slack::Config::default())
            .await
            .unwrap();
        let seeded = seed_group(
            &moto,
            &SeedSpec::new("web-asg", ImageSpec::new("acmeinc/web", "1.0.0"), INSTANCES),
        )
        .await
        .unwrap();
        let fleet = Fleet::start(
            FleetConfig::new(
                moto.sdk_config(),
                "web-asg",
                consul.http_addr(),
                binaries(),
                dir.path().join("fleet"),
            )
            .with_agent_token(roles.secret("agent").unwrap().clone()),
        )
        .unwrap();
        let w = Self {
            moto,
            consul,
            slack,
            seeded,
            fleet: Some(fleet),
            load: None,
            dir,
            management,
            roles,
            read_token,
        };
        until("all instances passing", Duration::from_secs(60), || async {
            (w.passing().await == INSTANCES as usize).then_some(())
        })
        .await;
        w
    }

    /// A client for the test's own reads, with the read token.
    pub fn client(&self) -> Client {
        Client::new(&ConsulConfig {
            address: format!("http://{}", self.consul.http_addr()),
            token: Some(ConsulSecret::new(self.read_token.expose())),
            ..ConsulConfig::default()
        })
        .unwrap()
    }

    /// The token file of `role`.
    pub fn token_file(&self, role: &str) -> PathBuf {
        self.dir.path().join(format!("tokens/{role}.token"))
    }

    /// The CLI configuration of `role` (`operator`, `ci`): replica a's
    /// configuration (same endpoints) with the role's token file.
    pub fn cli_config(&self, role: &str) -> PathBuf {
        let a = std::fs::read_to_string(self.dir.path().join("a.toml"))
            .expect("a coordinator configuration a.toml was written first");
        let coordinator = self.token_file("coordinator").display().to_string();
        let ours = self.token_file(role).display().to_string();
        assert!(a.contains(&coordinator), "a.toml has no token file: {a}");
        let path = self.dir.path().join(format!("{role}-cli.toml"));
        std::fs::write(&path, a.replace(&coordinator, &ours)).unwrap();
        path
    }

    pub async fn passing(&self) -> usize {
        self.client()
            .health_service("web", true, None, &QueryOptions::default())
            .await
            .map(|r| r.value.len())
            .unwrap_or(0)
    }

    pub async fn start_load(&mut self) {
        let mut config = LoadConfig::new(self.consul.http_addr());
        config.rate_per_sec = 40;
        config.stop_after = Some(Duration::from_secs(600));
        config.token = Some(self.read_token.clone());
        self.load = Some(Load::start(config).await.unwrap());
    }

    pub fn config(&self, replica: &str, healthy_deadline: &str) -> PathBuf {
        self.config_with(replica, &Endpoints::direct(self), healthy_deadline, "")
    }

    /// A coordinator's configuration reaching Consul and AWS through
    /// `via`, with `extra` appended to `[services.rollout]`.
    pub fn config_with(
        &self,
        replica: &str,
        via: &Endpoints,
        healthy_deadline: &str,
        extra: &str,
    ) -> PathBuf {
        let path = self.dir.path().join(format!("{replica}.toml"));
        std::fs::write(
            &path,
            format!(
                "[consul]\naddress = \"{consul}\"\ntoken_file = {token_file:?}\n\n[coordinator]\nregistry_poll = \"1h\"\n\
                 replica_name = \"{replica}\"\nlock_ttl = \"10s\"\nlock_delay = \"1s\"\n\
                 aws_region = \"{REGION}\"\naws_endpoint = \"{moto}\"\n\n\
                 [notify]\ndefault_receivers = [\"ops-slack\"]\n\n[[notify.receivers]]\nname = \"ops-slack\"\n\
                 [notify.receivers.slack]\nchannel = \"C0ALERTS\"\ntoken = \"xoxb-sandbox-token\"\n\
                 api_url = \"{slack}\"\nallow_insecure = true\n\n\
                 [[services]]\nname = \"web\"\nauto_scaling_group = \"web-asg\"\n\
                 launch_template = \"web-asg-lt\"\nartifact = \"acmeinc/web\"\napproval = \"auto\"\n\n\
                 [services.rollout]\nbatch_size = 2\nmin_healthy_time = \"2s\"\n\
                 healthy_deadline = \"{healthy_deadline}\"\nprogress_deadline = \"2m\"\n{extra}",
                consul = via.consul,
                moto = via.aws,
                slack = self.slack.api_url(),
                token_file = self.token_file("coordinator").display().to_string(),
            ),
        )
        .unwrap();
        path
    }

    pub fn coordinator(&self, config: &std::path::Path) -> LoggedChild {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rollgate"));
        c.arg("--config")
            .arg(config)
            .arg("coordinator")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdout(Stdio::null());
        LoggedChild::spawn(c).unwrap()
    }

    pub async fn publish(&self, spec: ImageSpec) -> String {
        let version = spec.version.clone();
        // Registered under another artifact; `rollgate publish` makes it ours.
        let spec = ImageSpec {
            artifact: "unpublished/web".into(),
            ..spec
        };
        let image = register_image(&self.moto.sdk_config(), &spec)
            .await
            .unwrap();
        // What a CI job runs, with the CI role's token.
        let out = Command::new(env!("CARGO_BIN_EXE_rollgate"))
            .arg("--config")
            .arg(self.cli_config("ci"))
            .args([
                "publish",
                "--artifact",
                "acmeinc/web",
                "--ami",
                &image,
                "--version",
                &version,
            ])
            .env_clear()
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        image
    }

    pub async fn outcome(&self, limit: Duration) -> Plan {
        let store = Store::new(self.client(), "rollgate");
        until("the rollout's outcome", limit, || async {
            store
                .plans("web")
                .await
                .ok()?
                .pop()
                .map(|(p, _)| p)
                .filter(|p| p.outcome.is_some())
        })
        .await
    }

    /// The group's live instances and their images.
    pub async fn fleet_state(&self) -> (i32, String, Vec<(String, String)>) {
        let fleet = SdkFleet::new(&self.moto.sdk_config());
        let g = fleet.describe_group("web-asg").await.unwrap();
        let ids: Vec<String> = g
            .instances
            .iter()
            .filter(|i| !i.lifecycle_state.starts_with("Terminat"))
            .map(|i| i.instance_id.clone())
            .collect();
        let images = fleet
            .describe_instances(&ids)
            .await
            .unwrap()
            .into_iter()
            .map(|i| (i.instance_id, i.image_id))
            .collect();
        let version = g.launch_template.map(|t| t.version).unwrap_or_default();
        (g.desired_capacity, version, images)
    }

    pub async fn shutdown(mut self) -> Option<sandbox::load::LoadReport> {
        let report = match self.load.take() {
            Some(l) => Some(l.stop().await),
            None => None,
        };
        if let Some(f) = self.fleet.take() {
            f.shutdown().await;
        }
        self.slack.shutdown().await;
        self.consul.shutdown().await;
        let _ = self.moto.shutdown();
        report
    }
}

/// Where a coordinator reaches Consul and AWS.
pub struct Endpoints {
    /// `http://host:port` of Consul.
    pub consul: String,
    /// The AWS endpoint URL.
    pub aws: String,
}

impl Endpoints {
    /// Straight to the world's servers.
    pub fn direct(w: &World) -> Self {
        Self {
            consul: format!("http://{}", w.consul.http_addr()),
            aws: w.moto.endpoint().to_string(),
        }
    }
}

/// Runs the CLI as an operator (the operator role's token).
pub async fn rollgate_cli(w: &World, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rollgate"))
        .arg("--config")
        .arg(w.cli_config("operator"))
        .args(args)
        .env_clear()
        .env("USER", "ops-test")
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
