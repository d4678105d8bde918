//! Whole rollouts, every part a real process on loopback: moto's server
//! (AWS), the sandbox Consul, the fleet simulator (the real `web` and
//! `rollgate agent` on every instance of the emulated group), the load
//! generator (requests to the instances Consul reports passing), the Slack
//! stand-in, and `rollgate coordinator` replicas.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use rollgate::aws::Fleet as _;
use rollgate::aws::sdk::SdkFleet;
use rollgate::config::ConsulConfig;
use rollgate::consul::{Client, QueryOptions};
use rollgate::rollout::plan::Plan;
use rollgate::rollout::store::Store;
use sandbox::consul::{Config as ServerConfig, Server, ServerHandle};
use sandbox::fleet::{Fleet, FleetConfig, FleetHandle};
use sandbox::load::{Load, LoadConfig, LoadHandle};
use sandbox::moto::seed::{ImageSpec, SeedSpec, Seeded, register_image, seed_group};
use sandbox::moto::{Moto, REGION};
use sandbox::node::Binaries;
use sandbox::slack::{SlackHandle, SlackServer};
use sandbox::testkit::{LoggedChild, until};
use tokio::process::Command;

const INSTANCES: i32 = 6;

struct World {
    moto: Moto,
    consul: ServerHandle,
    slack: SlackHandle,
    seeded: Seeded,
    fleet: Option<FleetHandle>,
    load: Option<LoadHandle>,
    dir: tempfile::TempDir,
}

fn binaries() -> Binaries {
    Binaries {
        web: sandbox::testkit::binary("web", "web"),
        rollgate: PathBuf::from(env!("CARGO_BIN_EXE_rollgate")),
    }
}

impl World {
    async fn new() -> Self {
        let moto = Moto::start()
            .await
            .expect("moto starts (bash sandbox/scripts/prerequisites)");
        let consul = Server::start(ServerConfig::default()).await.unwrap();
        let slack = SlackServer::start(sandbox::slack::Config::default())
            .await
            .unwrap();
        let seeded = seed_group(
            &moto,
            &SeedSpec::new("web-asg", ImageSpec::new("acmeinc/web", "1.0.0"), INSTANCES),
        )
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let fleet = Fleet::start(FleetConfig::new(
            moto.sdk_config(),
            "web-asg",
            consul.http_addr(),
            binaries(),
            dir.path().join("fleet"),
        ))
        .unwrap();
        let w = Self {
            moto,
            consul,
            slack,
            seeded,
            fleet: Some(fleet),
            load: None,
            dir,
        };
        until("all instances passing", Duration::from_secs(60), || async {
            (w.passing().await == INSTANCES as usize).then_some(())
        })
        .await;
        w
    }

    fn client(&self) -> Client {
        Client::new(&ConsulConfig {
            address: format!("http://{}", self.consul.http_addr()),
            ..ConsulConfig::default()
        })
        .unwrap()
    }

    async fn passing(&self) -> usize {
        self.client()
            .health_service("web", true, None, &QueryOptions::default())
            .await
            .map(|r| r.value.len())
            .unwrap_or(0)
    }

    async fn start_load(&mut self) {
        let mut config = LoadConfig::new(self.consul.http_addr());
        config.rate_per_sec = 40;
        config.stop_after = Some(Duration::from_secs(600));
        self.load = Some(Load::start(config).await.unwrap());
    }

    fn config(&self, replica: &str, healthy_deadline: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{replica}.toml"));
        std::fs::write(
            &path,
            format!(
                "[consul]\naddress = \"http://{consul}\"\n\n[coordinator]\nregistry_poll = \"1h\"\n\
                 replica_name = \"{replica}\"\nlock_ttl = \"10s\"\nlock_delay = \"1s\"\n\
                 aws_region = \"{REGION}\"\naws_endpoint = \"{moto}\"\n\n\
                 [notify]\ndefault_receivers = [\"ops-slack\"]\n\n[[notify.receivers]]\nname = \"ops-slack\"\n\
                 [notify.receivers.slack]\nchannel = \"C0ALERTS\"\ntoken = \"xoxb-sandbox-token\"\n\
                 api_url = \"{slack}\"\nallow_insecure = true\n\n\
                 [[services]]\nname = \"web\"\nauto_scaling_group = \"web-asg\"\n\
                 launch_template = \"web-asg-lt\"\nartifact = \"acmeinc/web\"\napproval = \"auto\"\n\n\
                 [services.rollout]\nbatch_size = 2\nmin_healthy_time = \"2s\"\n\
                 healthy_deadline = \"{healthy_deadline}\"\nprogress_deadline = \"2m\"\n",
                consul = self.consul.http_addr(),
                moto = self.moto.endpoint(),
                slack = self.slack.api_url(),
            ),
        )
        .unwrap();
        path
    }

    fn coordinator(&self, config: &std::path::Path) -> LoggedChild {
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

    async fn publish(&self, spec: ImageSpec) -> String {
        let version = spec.version.clone();
        // Registered under another artifact; `rollgate publish` makes it ours.
        let spec = ImageSpec {
            artifact: "unpublished/web".into(),
            ..spec
        };
        let image = register_image(&self.moto.sdk_config(), &spec)
            .await
            .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_rollgate"))
            .arg("--config")
            .arg(self.dir.path().join("a.toml"))
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

    async fn outcome(&self, limit: Duration) -> Plan {
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
    async fn fleet_state(&self) -> (i32, String, Vec<(String, String)>) {
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

    async fn shutdown(mut self) -> Option<sandbox::load::LoadReport> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_image_replaces_every_instance_with_zero_failed_requests() {
    let mut w = World::new().await;
    w.start_load().await;
    let c = w.coordinator(&w.config("a", "1m"));
    let image = w.publish(ImageSpec::new("acmeinc/web", "1.1.0")).await;
    let plan = w.outcome(Duration::from_secs(180)).await;
    let outcome = plan.outcome.clone().unwrap();
    assert_eq!(outcome.result, "succeeded", "{outcome:?}\n{}", c.log());

    let (desired, version, images) = w.fleet_state().await;
    assert_eq!(desired, INSTANCES, "desired capacity back to {INSTANCES}");
    assert_eq!(images.len(), INSTANCES as usize, "{images:?}");
    assert!(
        images.iter().all(|(_, ami)| *ami == image),
        "all on the new image: {images:?}"
    );
    assert_ne!(
        version,
        w.seeded.template_version.to_string(),
        "a new explicit template version"
    );
    assert!(
        version.parse::<i64>().is_ok(),
        "an explicit version, never $Latest: {version}"
    );
    let slack = w.slack.posts();
    assert!(slack.iter().any(|p| p.text.contains("1.1.0")), "{slack:?}");

    let report = w.shutdown().await.unwrap();
    assert_eq!(
        report.failed,
        0,
        "zero failed requests: {:?}",
        report.failures.first()
    );
    assert!(report.sent > 100, "{}", report.sent);
    assert!(
        report.min_targets_seen >= INSTANCES as usize,
        "passing instances never below {INSTANCES}: {}",
        report.min_targets_seen
    );
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_image_fails_in_the_first_batch_and_is_reverted() {
    let mut w = World::new().await;
    w.start_load().await;
    let c = w.coordinator(&w.config("a", "8s"));
    let image = w
        .publish(ImageSpec::new("acmeinc/web", "1.2.0").tag("sandbox:broken", "true"))
        .await;
    let plan = w.outcome(Duration::from_secs(180)).await;
    let outcome = plan.outcome.clone().unwrap();
    assert_eq!(outcome.result, "reverted", "{outcome:?}\n{}", c.log());
    // The reason names the instance, the check, its status and output, and
    // the deadline.
    for needle in ["i-", "healthy_deadline", "critical", "500"] {
        assert!(
            outcome.reason.contains(needle),
            "{needle} missing from: {}",
            outcome.reason
        );
    }
    let (desired, version, images) = until(
        "the old fleet restored",
        Duration::from_secs(60),
        || async {
            let state = w.fleet_state().await;
            (state.2.len() == INSTANCES as usize).then_some(state)
        },
    )
    .await;
    assert_eq!(desired, INSTANCES);
    assert_eq!(
        version,
        w.seeded.template_version.to_string(),
        "back on the stable version"
    );
    assert!(
        images.iter().all(|(_, ami)| *ami == w.seeded.image_id),
        "{images:?} (broken: {image})"
    );
    // The notification carries the reason.
    let posts = w.slack.wait_for(2, Duration::from_secs(30)).await;
    assert!(
        posts.iter().any(|p| p.text.contains("healthy_deadline")
            || p.blocks.to_string().contains("healthy_deadline")),
        "{posts:?}"
    );
    let report = w.shutdown().await.unwrap();
    assert_eq!(
        report.failed,
        0,
        "zero failed requests: {:?}",
        report.failures.first()
    );
    assert!(
        report.min_targets_seen >= INSTANCES as usize,
        "{}",
        report.min_targets_seen
    );
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_mid_batch_is_replaced_and_every_instance_is_accounted_for() {
    let w = World::new().await;
    let mut a = w.coordinator(&w.config("a", "2m"));
    let client = w.client();
    until("a leads", Duration::from_secs(20), || async {
        let kv = client
            .kv_get("rollgate/leader", &QueryOptions::default())
            .await
            .ok()?
            .value?;
        kv.session.map(|_| ())
    })
    .await;
    let b = w.coordinator(&w.config("b", "2m"));
    let image = w.publish(ImageSpec::new("acmeinc/web", "1.3.0")).await;
    // Kill the leader while it waits on the first batch.
    let store = Store::new(w.client(), "rollgate");
    until(
        "the first batch launching",
        Duration::from_secs(60),
        || async {
            let (r, _) = store.rollout("web").await.ok()??;
            (r.state.name() == "launching").then_some(())
        },
    )
    .await;
    a.child.start_kill().unwrap();
    let _ = a.child.wait().await;
    let plan = w.outcome(Duration::from_secs(240)).await;
    let outcome = plan.outcome.clone().unwrap();
    assert_eq!(outcome.result, "succeeded", "{outcome:?}\n{}", b.log());
    assert!(b.log().contains("Leading"), "{}", b.log());
    let (desired, _, images) = until("settled", Duration::from_secs(30), || async {
        let state = w.fleet_state().await;
        (state.2.len() == INSTANCES as usize).then_some(state)
    })
    .await;
    assert_eq!(desired, INSTANCES);
    assert!(
        images.iter().all(|(_, ami)| *ami == image),
        "no leaked or old instance: {images:?}"
    );
    drop(b);
    w.shutdown().await;
}

async fn rollgate_cli(w: &World, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rollgate"))
        .arg("--config")
        .arg(w.dir.path().join("a.toml"))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_pause_resume_and_abort_a_rollout() {
    let w = World::new().await;
    let c = w.coordinator(&w.config("a", "2m"));
    // No rollout yet: every command is a clear refusal.
    for cmd in ["pause", "resume", "abort", "promote"] {
        let (code, out) = rollgate_cli(&w, &[cmd]).await;
        assert_eq!(code, 1, "{cmd}: {out}");
        assert!(
            out.contains("no rollout in progress for web"),
            "{cmd}: {out}"
        );
    }
    w.publish(ImageSpec::new("acmeinc/web", "1.4.0")).await;
    let store = Store::new(w.client(), "rollgate");
    until("the rollout running", Duration::from_secs(60), || async {
        let (r, _) = store.rollout("web").await.ok()??;
        (r.state.name() == "launching").then_some(())
    })
    .await;

    let (code, out) = rollgate_cli(&w, &["pause"]).await;
    assert_eq!(code, 0, "{out}");
    let at_pause = until("paused", Duration::from_secs(20), || async {
        let (r, _) = store.rollout("web").await.ok()??;
        (r.state.name() == "paused").then_some(r.progress)
    })
    .await;
    let (code, out) = rollgate_cli(&w, &["status"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("paused"), "{out}");
    // Paused means frozen: nothing advances while it is.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (r, _) = store.rollout("web").await.unwrap().unwrap();
    assert_eq!(r.state.name(), "paused");
    assert_eq!(r.progress, at_pause, "nothing advanced while paused");

    let (code, out) = rollgate_cli(&w, &["resume"]).await;
    assert_eq!(code, 0, "{out}");
    until("resumed", Duration::from_secs(20), || async {
        let (r, _) = store.rollout("web").await.ok()??;
        (r.state.name() != "paused").then_some(())
    })
    .await;

    let (code, out) = rollgate_cli(&w, &["abort", "--reason", "wrong build"]).await;
    assert_eq!(code, 0, "{out}");
    let plan = w.outcome(Duration::from_secs(120)).await;
    let outcome = plan.outcome.unwrap();
    assert_eq!(outcome.result, "aborted", "{outcome:?}\n{}", c.log());
    let (code, out) = rollgate_cli(&w, &["status", "--wait"]).await;
    assert_eq!(code, 1, "status --wait exits 1 after an abort: {out}");
    let (_, _, images) = until("the old fleet back", Duration::from_secs(60), || async {
        let state = w.fleet_state().await;
        (state.2.len() == INSTANCES as usize).then_some(state)
    })
    .await;
    assert!(
        images.iter().all(|(_, ami)| *ami == w.seeded.image_id),
        "{images:?}"
    );
    // An abort is an operator's decision, not evidence: the image is not
    // marked failed.
    assert!(store.failed_images("web").await.unwrap().is_empty());
    drop(c);
    w.shutdown().await;
}
