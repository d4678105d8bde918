//! The coordinator, part 1, as real processes: moto's server (AWS), the
//! sandbox Consul, `rollgate coordinator` replicas and the operator commands.
//! Publishing triggers a plan; approvals are recorded once; a killed leader
//! is replaced and no plan is produced twice; bad input is named.
//!
//! Consul runs with ACLs on and Consul's own timings; every process has the
//! token of its role, from `config/acl/*.hcl` ([`sandbox::acl_roles`]):
//! coordinators `coordinator`, `rollgate publish` `ci`, the other commands
//! `operator`. The test's own reads and its one direct write of a plan
//! ([`World::store`]) act as the coordinator, with its token.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use rollgate::config::{ConsulConfig, Secret as ConsulSecret};
use rollgate::consul::{Client, QueryOptions};
use rollgate::rollout::plan::{Decision, Plan};
use rollgate::rollout::store::Store;
use sandbox::acl_roles::{RoleTokens, Secret};
use sandbox::consul::{Config as ServerConfig, Server, ServerHandle};
use sandbox::moto::seed::{ImageSpec, SeedSpec, Seeded, register_image, seed_group};
use sandbox::moto::{Moto, REGION};
use sandbox::testkit::{LoggedChild, until};
use tokio::process::Command;

struct World {
    moto: Moto,
    consul: ServerHandle,
    seeded: Seeded,
    dir: tempfile::TempDir,
    roles: RoleTokens,
}

impl World {
    async fn new(approval: &str) -> Self {
        let moto = Moto::start()
            .await
            .expect("moto starts (bash sandbox/scripts/prerequisites)");
        let management = Secret::random();
        let consul = Server::start(ServerConfig::with_acls(management.expose()))
            .await
            .unwrap();
        let roles = sandbox::acl_roles::create_workspace_roles(consul.http_addr(), &management)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        for role in sandbox::acl_roles::ROLES {
            roles
                .write_file(role, &dir.path().join(format!("{role}.token")))
                .unwrap();
        }
        let seeded = seed_group(
            &moto,
            &SeedSpec::new("web-asg", ImageSpec::new("acmeinc/web", "1.0.0"), 3),
        )
        .await
        .unwrap();
        let w = Self {
            moto,
            consul,
            seeded,
            dir,
            roles,
        };
        w.write_config("coordinator.toml", approval, "web-asg", "a");
        w
    }

    fn write_config(
        &self,
        name: &str,
        approval: &str,
        group: &str,
        replica: &str,
    ) -> std::path::PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "[consul]\naddress = \"http://{consul}\"\ntoken_file = {token_file:?}\n\n[coordinator]\nregistry_poll = \"1h\"\n\
                 replica_name = \"{replica}\"\nlock_ttl = \"10s\"\nlock_delay = \"1s\"\n\
                 aws_region = \"{REGION}\"\naws_endpoint = \"{moto}\"\n\n\
                 [[services]]\nname = \"web\"\nauto_scaling_group = \"{group}\"\n\
                 launch_template = \"web-asg-lt\"\nartifact = \"acmeinc/web\"\napproval = \"{approval}\"\n\
                 approval_timeout = \"{timeout}\"\n\n[services.rollout]\nbatch_size = 2\n{rollout}",
                consul = self.consul.http_addr(),
                moto = self.moto.endpoint(),
                token_file = self.token_file("coordinator").display().to_string(),
                timeout = if approval == "short" { "1m" } else { "72h" },
                approval = match approval {
                    "short" => "manual",
                    "auto-fast" => "auto",
                    other => other,
                },
                rollout = if approval == "auto-fast" {
                    "min_healthy_time = \"1s\"\nhealthy_deadline = \"6s\"\nfailure_time = \"3s\"\nprogress_deadline = \"20s\"\n"
                } else {
                    ""
                },
            ),
        )
        .unwrap();
        path
    }

    fn config(&self) -> std::path::PathBuf {
        self.dir.path().join("coordinator.toml")
    }

    fn token_file(&self, role: &str) -> std::path::PathBuf {
        self.dir.path().join(format!("{role}.token"))
    }

    /// The CLI configuration of `role` (`operator`, `ci`): the
    /// coordinator's, with the role's token file.
    fn cli_config(&self, role: &str) -> std::path::PathBuf {
        let text = std::fs::read_to_string(self.config()).unwrap();
        let coordinator = self.token_file("coordinator").display().to_string();
        assert!(text.contains(&coordinator), "{text}");
        let ours = self.token_file(role).display().to_string();
        let path = self.dir.path().join(format!("{role}.toml"));
        std::fs::write(&path, text.replace(&coordinator, &ours)).unwrap();
        path
    }

    fn command(&self, config: &std::path::Path) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rollgate"));
        c.arg("--config")
            .arg(config)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("USER", "ci-operator");
        c
    }

    /// Runs an operator command; answers (exit code, stdout, stderr).
    async fn run(&self, args: &[&str]) -> (i32, String, String) {
        self.run_as("operator", args).await
    }

    /// Runs a command with the token of `role`.
    async fn run_as(&self, role: &str, args: &[&str]) -> (i32, String, String) {
        let out = self
            .command(&self.cli_config(role))
            .args(args)
            .output()
            .await
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn coordinator(&self, config: &std::path::Path) -> LoggedChild {
        let mut c = self.command(config);
        c.arg("coordinator")
            .env("RUST_LOG", "rollgate=debug,info")
            .stdout(Stdio::null());
        LoggedChild::spawn(c).unwrap()
    }

    fn store(&self) -> Store {
        self.store_as("coordinator")
    }

    /// The records as `role` reaches them.
    fn store_as(&self, role: &str) -> Store {
        let client = Client::new(&ConsulConfig {
            address: format!("http://{}", self.consul.http_addr()),
            token: Some(ConsulSecret::new(self.roles.secret(role).unwrap().expose())),
            ..ConsulConfig::default()
        })
        .unwrap();
        Store::new(client, "rollgate")
    }

    async fn plans(&self) -> Vec<Plan> {
        self.store()
            .plans("web")
            .await
            .unwrap()
            .into_iter()
            .map(|(p, _)| p)
            .collect()
    }

    async fn new_image(&self, version: &str) -> String {
        // Registered under another artifact: `rollgate publish` makes it ours.
        register_image(
            &self.moto.sdk_config(),
            &ImageSpec::new("unpublished/web", version),
        )
        .await
        .unwrap()
    }

    /// `rollgate publish`, as a CI job runs it.
    async fn publish(&self, image: &str, version: &str) {
        let (code, out, err) = self
            .run_as(
                "ci",
                &[
                    "publish",
                    "--artifact",
                    "acmeinc/web",
                    "--ami",
                    image,
                    "--version",
                    version,
                ],
            )
            .await;
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains(image), "{out}");
    }

    async fn shutdown(self) {
        self.consul.shutdown().await;
        let _ = self.moto.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_triggers_a_plan_and_a_newer_image_supersedes_it() {
    let w = World::new("manual").await;
    let c = w.coordinator(&w.config());
    // Leading (lock held) before publishing: the poll is an hour, so only
    // the trigger can produce the plan.
    let client = w.store().client().clone();
    until("leader", Duration::from_secs(20), || async {
        let kv = client
            .kv_get("rollgate/leader", &QueryOptions::default())
            .await
            .ok()?
            .value?;
        kv.session.map(|_| ())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let v11 = w.new_image("1.1.0").await;
    w.publish(&v11, "1.1.0").await;
    let published = Instant::now();
    let plan = until("a plan", Duration::from_secs(10), || async {
        w.plans().await.pop()
    })
    .await;
    let reaction = published.elapsed();
    assert!(
        reaction < Duration::from_secs(3),
        "{reaction:?}\n{}",
        c.log()
    );
    assert_eq!(plan.id, "web-1");
    assert_eq!(plan.current.image_id, w.seeded.image_id);
    assert_eq!(plan.current.version, "1.0.0");
    assert_eq!(plan.target.image_id, v11);
    assert_eq!(plan.target.version, "1.1.0");
    let mut to_replace: Vec<_> = plan.to_replace().map(|i| i.instance_id.clone()).collect();
    to_replace.sort();
    let mut seeded = w.seeded.instance_ids.clone();
    seeded.sort();
    assert_eq!(to_replace, seeded, "every instance runs the old image");
    assert_eq!(plan.batches, 2, "3 instances, batch 2");
    assert!(matches!(plan.decision, Decision::Pending { .. }));

    // The plan as operators read it.
    let (code, out, _) = w.run(&["plan", "web"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("Plan web-1")
            && out.contains(&v11)
            && out.contains("1.0.0")
            && out.contains("1.1.0"),
        "{out}"
    );
    assert!(!out.contains('\x1b'), "no colour when piped");
    let (_, json, _) = w.run(&["plan", "web", "--json"]).await;
    let parsed: Vec<Plan> = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed[0].id, "web-1");

    // A newer image supersedes the pending plan.
    tokio::time::sleep(Duration::from_millis(1100)).await; // CreationDate has 1 s resolution
    let v12 = w.new_image("1.2.0").await;
    w.publish(&v12, "1.2.0").await;
    let plans = until("second plan", Duration::from_secs(10), || async {
        let p = w.plans().await;
        (p.len() == 2 && matches!(p[0].decision, Decision::Superseded { .. })).then_some(p)
    })
    .await;
    assert_eq!(plans[1].target.image_id, v12);
    assert!(
        matches!(&plans[0].decision, Decision::Superseded { by_plan, .. } if by_plan == "web-2")
    );
    let (_, history, _) = w.run(&["history"]).await;
    assert!(
        history.contains("superseded") && history.contains("by web-2"),
        "{history}"
    );
    drop(c);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_and_reject_are_recorded_once() {
    let w = World::new("manual").await;
    let _c = w.coordinator(&w.config());
    let v11 = w.new_image("1.1.0").await;
    w.publish(&v11, "1.1.0").await;
    until("a plan", Duration::from_secs(20), || async {
        w.plans().await.pop()
    })
    .await;

    let (code, out, err) = w.run(&["approve", "web-1", "--as", "alice"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("approved by alice"), "{out}");
    let plan = w.plans().await.pop().unwrap();
    let Decision::Approved { by, at } = &plan.decision else {
        panic!("{plan:?}")
    };
    assert_eq!(by, "alice");
    assert!(*at > 0);

    // A second decision on the same plan is refused (exit 4), naming the first.
    let (code, _, err) = w.run(&["reject", "web-1", "--reason", "too late"]).await;
    assert_eq!(code, 4);
    assert!(err.contains("approved by alice"), "{err}");
    let (code, _, err) = w.run(&["approve", "web-1"]).await;
    assert_eq!(code, 4, "{err}");

    // An unknown plan is a refusal (4), a malformed ID a usage error (2).
    let (code, _, err) = w.run(&["approve", "web-99"]).await;
    assert_eq!(code, 4);
    assert!(err.contains("no plan web-99"), "{err}");
    let (code, _, err) = w.run(&["approve", "nonsense"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("not a plan ID"), "{err}");

    // Reject records who (the OS user by default) and why.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let v12 = w.new_image("1.2.0").await;
    w.publish(&v12, "1.2.0").await;
    until("second plan", Duration::from_secs(10), || async {
        let p = w.plans().await;
        (p.len() == 2).then_some(())
    })
    .await;
    let (code, out, err) = w
        .run(&["reject", "web-2", "--reason", "bad release notes"])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    let p = w.plans().await;
    assert!(
        matches!(&p[1].decision, Decision::Rejected { by, reason, .. } if by == "ci-operator" && reason == "bad release notes")
    );
    // The approved plan is not superseded by a newer pending one.
    assert!(matches!(p[0].decision, Decision::Approved { .. }));
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_plan_cannot_be_approved() {
    let w = World::new("manual").await;
    let store = w.store();
    // A plan whose time ran out, as the coordinator would have stored it.
    let mut plan: Plan = serde_json::from_str(include_str!("fixtures/plan_pending.json")).unwrap();
    plan.decision = Decision::Pending { expires_at: 1 };
    assert!(store.create_plan(&plan).await.unwrap());
    let (code, _, err) = w.run(&["approve", &plan.id]).await;
    assert_eq!(code, 4);
    assert!(err.contains("expired"), "{err}");
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_approval_approves_at_once() {
    let w = World::new("auto").await;
    let _c = w.coordinator(&w.config());
    let v11 = w.new_image("1.1.0").await;
    w.publish(&v11, "1.1.0").await;
    let plan = until("approved plan", Duration::from_secs(20), || async {
        w.plans()
            .await
            .pop()
            .filter(|p| matches!(p.decision, Decision::Approved { .. }))
    })
    .await;
    assert!(matches!(plan.decision, Decision::Approved { ref by, .. } if by == "policy:auto"));
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_no_plan_is_produced_twice() {
    let w = World::new("manual").await;
    let a_cfg = w.write_config("a.toml", "manual", "web-asg", "a");
    let b_cfg = w.write_config("b.toml", "manual", "web-asg", "b");
    let mut a = w.coordinator(&a_cfg);
    let client = w.store().client().clone();
    until("a leads", Duration::from_secs(20), || async {
        let kv = client
            .kv_get("rollgate/leader", &QueryOptions::default())
            .await
            .ok()?
            .value?;
        kv.session.map(|_| ())
    })
    .await;
    let b = w.coordinator(&b_cfg);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let v11 = w.new_image("1.1.0").await;
    w.publish(&v11, "1.1.0").await;
    until("one plan", Duration::from_secs(10), || async {
        w.plans().await.pop()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        w.plans().await.len(),
        1,
        "exactly one plan with two replicas"
    );
    assert!(
        a.log().contains("Plan created"),
        "a leads and plans:\n{}",
        a.log()
    );
    assert!(
        !b.log().contains("Plan created"),
        "b must not plan:\n{}",
        b.log()
    );

    // SIGKILL: no release; b takes over after the session TTL and lock-delay.
    a.child.start_kill().unwrap();
    let _ = a.child.wait().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let v12 = w.new_image("1.2.0").await;
    w.publish(&v12, "1.2.0").await;
    let plans = until("b plans", Duration::from_secs(45), || async {
        let p = w.plans().await;
        (p.len() >= 2).then_some(p)
    })
    .await;
    assert!(b.log().contains("Leadership acquired"), "{}", b.log());
    assert!(b.log().contains("Plan created"), "{}", b.log());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let plans_after = w.plans().await;
    assert_eq!(plans_after.len(), 2, "no plan produced twice: {plans:?}");
    assert_eq!(plans_after[1].target.image_id, v12);
    drop(b);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_names_the_call_and_the_resource() {
    let w = World::new("manual").await;
    // An image that does not exist.
    let (code, _, err) = w
        .run_as(
            "ci",
            &[
                "publish",
                "--artifact",
                "acmeinc/web",
                "--ami",
                "ami-0000000000000dead",
                "--version",
                "9",
            ],
        )
        .await;
    assert_eq!(code, 4, "no such image: a refusal");
    assert!(err.contains("ami-0000000000000dead"), "{err}");
    // A manifest that is not Packer's.
    let bad = w.dir.path().join("manifest.json");
    std::fs::write(&bad, "{\"hello\": 1}").unwrap();
    let (code, _, err) = w
        .run_as("ci", &["publish", "--manifest", bad.to_str().unwrap()])
        .await;
    assert_eq!(code, 2, "not a Packer manifest: usage");
    assert!(err.contains("manifest.json"), "{err}");

    // A group that does not exist: the coordinator logs it, names the call
    // and the group, and keeps serving (it does not exit).
    let cfg = w.write_config("missing.toml", "manual", "no-such-asg", "m");
    let mut c = w.coordinator(&cfg);
    let v11 = w.new_image("1.1.0").await;
    w.publish(&v11, "1.1.0").await;
    until(
        "the failing call named",
        Duration::from_secs(20),
        || async {
            let log = c.log();
            (log.contains("DescribeAutoScalingGroups") && log.contains("no-such-asg")).then_some(())
        },
    )
    .await;
    assert!(
        c.child.try_wait().unwrap().is_none(),
        "still running:\n{}",
        c.log()
    );
    assert!(w.plans().await.is_empty());
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_whose_instances_never_pass_is_reverted() {
    // No simulated nodes: new instances never register in Consul, as with an
    // image whose agent or app never starts.
    let w = World::new("auto-fast").await;
    let c = w.coordinator(&w.config());
    let v11 = w.new_image("1.1.0").await;
    w.publish(&v11, "1.1.0").await;
    let plan = until("an outcome", Duration::from_secs(90), || async {
        w.plans().await.pop().filter(|p| p.outcome.is_some())
    })
    .await;
    let outcome = plan.outcome.clone().unwrap();
    assert_eq!(outcome.word(), "reverted", "{outcome:?}\n{}", c.log());
    assert!(
        outcome.reason().contains("not registered in Consul"),
        "{}",
        outcome.reason()
    );
    assert!(
        outcome.reason().contains("healthy_deadline"),
        "{}",
        outcome.reason()
    );
    assert!(
        outcome.reason().contains("i-"),
        "names the instance: {}",
        outcome.reason()
    );

    // The group is back on the old template version and image, at its
    // original capacity, and the new instances are gone.
    let fleet = rollgate::aws::sdk::SdkFleet::new(&w.moto.sdk_config());
    use rollgate::aws::Fleet as _;
    let group = until("capacity restored", Duration::from_secs(30), || async {
        let g = fleet.describe_group("web-asg").await.ok()?;
        let live: Vec<_> = g
            .instances
            .iter()
            .filter(|i| !i.lifecycle_state.starts_with("Terminat"))
            .collect();
        (g.desired_capacity == 3 && live.len() == 3).then_some(g)
    })
    .await;
    assert_eq!(
        group.launch_template.as_ref().unwrap().version,
        "1",
        "{group:?}"
    );
    let ids: Vec<String> = group
        .instances
        .iter()
        .filter(|i| !i.lifecycle_state.starts_with("Terminat"))
        .map(|i| i.instance_id.clone())
        .collect();
    let instances = fleet.describe_instances(&ids).await.unwrap();
    assert!(
        instances.iter().all(|i| i.image_id == w.seeded.image_id),
        "{instances:?}"
    );
    assert!(
        group.suspended_processes.is_empty(),
        "processes resumed: {group:?}"
    );
    // The revert-loop guard: the failed image is recorded and never planned again.
    let failed = w.store().failed_images("web").await.unwrap();
    assert!(failed.contains(&v11), "{failed:?}");
    let (code, out, _) = w.run(&["status", "web"]).await;
    assert_eq!(code, 1, "status reports the failure: {out}");
    assert!(out.contains("reverted"), "{out}");
    w.shutdown().await;
}

/// Waits until the coordinator leads (the poll is an hour: only triggers
/// make plans).
async fn leading(w: &World, c: &LoggedChild) {
    let client = w.store().client().clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let held = client
            .kv_get("rollgate/leader", &QueryOptions::default())
            .await
            .ok()
            .and_then(|r| r.value)
            .and_then(|kv| kv.session);
        if held.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no leader within 20s:\n{}",
            c.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
}

fn publish_args<'a>(image: &'a str, version: &'a str) -> Vec<&'a str> {
    vec![
        "publish",
        "--artifact",
        "acmeinc/web",
        "--ami",
        image,
        "--version",
        version,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_refuses_a_rejected_or_older_image_and_says_why() {
    let w = World::new("manual").await;
    // An image built before 1.1.0, published only later.
    let v09 = w.new_image("0.9.0").await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // CreationDate has 1 s resolution
    // A receiver, so announcements reach the outbox (nothing listens: they
    // stay there, pending, which is all this test reads).
    let mut config = std::fs::read_to_string(w.config()).unwrap();
    config.push_str(
        "\n[notify]\ndefault_receivers = [\"hook\"]\n\n[[notify.receivers]]\nname = \"hook\"\n\
         [notify.receivers.webhook]\nurl = \"http://127.0.0.1:9/hook\"\nallow_insecure = true\n",
    );
    std::fs::write(w.config(), config).unwrap();
    let c = w.coordinator(&w.config());
    leading(&w, &c).await;
    let v11 = w.new_image("1.1.0").await;
    w.publish(&v11, "1.1.0").await;
    until("a plan", Duration::from_secs(10), || async {
        w.plans().await.pop()
    })
    .await;
    let (code, out, err) = w
        .run(&["reject", "web-1", "--reason", "bad notes", "--as", "bob"])
        .await;
    assert_eq!(code, 0, "{out}{err}");

    // Publishing the rejected image again: refused, named, how to override.
    let (code, out, err) = w.run_as("ci", &publish_args(&v11, "1.1.0")).await;
    assert_eq!(code, 4, "nothing will happen: a refusal\n{out}{err}");
    assert!(
        err.contains("web-1") && err.contains("rejected by bob") && err.contains("bad notes"),
        "{err}"
    );
    assert!(err.contains("--force"), "says how to override: {err}");
    assert!(err.contains("Nothing was changed"), "{err}");
    assert!(!out.contains("plans it"), "no false promise: {out}");

    // An image older than the newest: refused, with the way back.
    let (code, out, err) = w.run_as("ci", &publish_args(&v09, "0.9.0")).await;
    assert_eq!(code, 4, "{out}{err}");
    assert!(err.contains(&v09) && err.contains("older than"), "{err}");
    assert!(err.contains("rollgate rollback web --to 0.9.0"), "{err}");
    let fleet = rollgate::aws::sdk::SdkFleet::new(&w.moto.sdk_config());
    use rollgate::aws::registry::Registry as _;
    let old = fleet
        .registry()
        .describe_image(&v09)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        old.artifact.as_deref(),
        Some("unpublished/web"),
        "a refused publish tags nothing"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(w.plans().await.len(), 1, "nothing planned");

    // A trigger the coordinator will not act on (as an older rollgate
    // wrote it) is said above debug level, with the reason.
    w.store_as("ci")
        .write_trigger(
            "acmeinc/web",
            &rollgate::rollout::store::Trigger {
                image_id: v11.clone(),
                version: "1.1.0".into(),
                at: rollgate::rollout::plan::now_ms(),
            },
        )
        .await
        .unwrap();
    until(
        "the ignored publish logged",
        Duration::from_secs(10),
        || async {
            c.log()
                .lines()
                .any(|l| {
                    l.contains("WARN")
                        && l.contains("Published image not planned")
                        && l.contains("rejected by bob")
                })
                .then_some(())
        },
    )
    .await;

    // The operator overrides the rejection explicitly.
    let mut forced = publish_args(&v11, "1.1.0");
    forced.extend(["--force", "--as", "alice"]);
    let (code, out, err) = w.run(&forced).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("overridden by alice") && out.contains("web-2"),
        "{out}"
    );
    let plans = w.plans().await;
    assert_eq!(plans.len(), 2, "{plans:?}");
    assert_eq!(plans[1].target.image_id, v11);
    assert!(matches!(plans[1].decision, Decision::Pending { .. }));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(w.plans().await.len(), 2, "the coordinator adds none");
    // The CLI's token may not write the outbox: the coordinator announces
    // the plan the operator made, once.
    let announced = || async {
        let entries = w
            .store()
            .client()
            .kv_list(
                "rollgate/outbox/",
                &rollgate::consul::QueryOptions::default(),
            )
            .await
            .unwrap()
            .value;
        entries
            .iter()
            .filter(|kv| {
                let text = String::from_utf8_lossy(&kv.value().unwrap_or_default()).to_string();
                text.contains("\"web-2\"") && text.contains("pending_approval")
            })
            .count()
    };
    until("web-2 announced", Duration::from_secs(20), || async {
        (announced().await > 0).then_some(())
    })
    .await;
    w.publish(&w.new_image("1.2.0").await, "1.2.0").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(announced().await, 1, "announced once, however many rounds");
    drop(c);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_region_manifest_tags_each_image_in_its_own_region() {
    use aws_config::Region;
    use rollgate::aws::registry::Registry as _;
    let w = World::new("manual").await;
    let c = w.coordinator(&w.config());
    leading(&w, &c).await;
    let other = "eu-west-1";
    let there = w
        .moto
        .sdk_config()
        .into_builder()
        .region(Region::new(other))
        .build();
    let here_ami = w.new_image("1.1.0").await;
    let there_ami = register_image(&there, &ImageSpec::new("unpublished/web", "1.1.0"))
        .await
        .unwrap();
    let manifest = w.dir.path().join("packer-manifest.json");
    std::fs::write(
        &manifest,
        format!(
            r#"{{"builds": [{{"name": "web", "builder_type": "amazon-ebs", "build_time": 1714557600,
                "artifact_id": "{other}:{there_ami},{REGION}:{here_ami}", "packer_run_uuid": "run-1",
                "custom_data": {{"artifact": "acmeinc/web", "version": "1.1.0"}}}}],
              "last_run_uuid": "run-1"}}"#
        ),
    )
    .unwrap();
    let path = manifest.to_str().unwrap();

    // --region: only that region's image, the others named as skipped.
    let (code, out, err) = w
        .run_as("ci", &["publish", "--manifest", path, "--region", other])
        .await;
    assert_eq!(code, 4, "nothing planned by this coordinator\n{out}{err}");
    assert!(
        err.contains(&format!("Skipped {here_ami} in {REGION}")),
        "{err}"
    );
    assert!(
        err.contains(&format!("Tagged {there_ami} in {other}")),
        "{err}"
    );
    let there_registry = rollgate::aws::sdk::SdkFleet::new(&there).registry();
    let tagged = there_registry
        .describe_image(&there_ami)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tagged.artifact.as_deref(), Some("acmeinc/web"));
    let here_registry = rollgate::aws::sdk::SdkFleet::new(&w.moto.sdk_config()).registry();
    let untouched = here_registry
        .describe_image(&here_ami)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(untouched.artifact.as_deref(), Some("unpublished/web"));

    // Both: each tagged in its own region, the coordinator's planned.
    let (code, out, err) = w.run_as("ci", &["publish", "--manifest", path]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("Tagged {there_ami} in {other}")),
        "{out}"
    );
    assert!(
        out.contains("the coordinator plans it for web now"),
        "{out}"
    );
    let tagged = here_registry
        .describe_image(&here_ami)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tagged.artifact.as_deref(), Some("acmeinc/web"));
    let plan = until("a plan", Duration::from_secs(10), || async {
        w.plans().await.pop()
    })
    .await;
    assert_eq!(plan.target.image_id, here_ami, "{}", c.log());
    drop(c);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_whose_trigger_cannot_be_written_says_what_was_done() {
    let w = World::new("manual").await;
    let v11 = w.new_image("1.1.0").await;
    // Consul gone: the image is tagged, the trigger is not written.
    let cfg = w.cli_config("ci");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        &format!("http://{}", w.consul.http_addr()),
        "http://127.0.0.1:9",
    );
    std::fs::write(&cfg, text).unwrap();
    let out = w
        .command(&cfg)
        .args(publish_args(&v11, "1.1.0"))
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "Consul unreachable: {err}");
    assert!(
        err.contains(&format!("Tagged {v11} as acmeinc/web 1.1.0")),
        "{err}"
    );
    assert!(
        err.contains("registry poll"),
        "says what will still happen: {err}"
    );
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terraform_only_template_change_is_planned_as_a_template_change() {
    let w = World::new("manual").await;
    // What `terraform apply` does after a change of a field it owns: a new
    // version made the default, the image unchanged.
    let ec2 = aws_sdk_ec2::Client::new(&w.moto.sdk_config());
    let data = aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
        .image_id(&w.seeded.image_id)
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Small)
        .build();
    let v2 = ec2
        .create_launch_template_version()
        .launch_template_id(&w.seeded.template_id)
        .source_version("1")
        .launch_template_data(data)
        .send()
        .await
        .unwrap()
        .launch_template_version()
        .and_then(|v| v.version_number())
        .unwrap();
    ec2.modify_launch_template()
        .launch_template_id(&w.seeded.template_id)
        .default_version(v2.to_string())
        .send()
        .await
        .unwrap();
    // Nobody publishes: the registry poll finds the change.
    let cfg = w.write_config("poll.toml", "manual", "web-asg", "p");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("registry_poll = \"1h\"", "registry_poll = \"1s\""),
    )
    .unwrap();
    let c = w.coordinator(&cfg);
    let plan = until("a template plan", Duration::from_secs(30), || async {
        w.plans().await.pop()
    })
    .await;
    assert_eq!(
        plan.change,
        rollgate::rollout::plan::Change::Template {
            from_version: 1,
            to_version: v2
        },
        "{}",
        c.log()
    );
    assert_eq!(plan.target.image_id, w.seeded.image_id, "the image stays");
    assert_eq!(plan.current.image_id, w.seeded.image_id);
    assert_eq!(plan.base_template_version, Some(v2));
    assert_eq!(
        plan.to_replace().count(),
        w.seeded.instance_ids.len(),
        "every instance is replaced to pick the new version up"
    );
    let (code, out, _) = w.run(&["plan", "web"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!(
            "template: launch template default version 1 -> {v2}, same image"
        )),
        "{out}"
    );
    let (_, history, _) = w.run(&["history", "web"]).await;
    assert!(
        history.contains(&format!("template v1 -> v{v2}")),
        "{history}"
    );
    // Later rounds (every second) add nothing while it is pending.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(w.plans().await.len(), 1, "{}", c.log());
    drop(c);
    w.shutdown().await;
}
