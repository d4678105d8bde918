//! `rollgate agent` as a real process, with the real `web` app, the sandbox
//! Consul (one client node, like the Consul agent on an instance) and the
//! sandbox's IMDSv2 endpoint: registration, probes, self-healing, drain, and
//! the bad input an operator meets.
//!
//! Consul runs as in production: ACLs on (`default_policy = "deny"`), the
//! agent with the `agent` role's token (`config/acl/agent.hcl`, through
//! `consul.token_file`), and Consul's own timings: the tests that wait for a
//! new TTL check output read it from the node's agent (`/v1/agent/checks`,
//! at once), not the catalog, which Consul updates for an output-only change
//! only after `check_update_interval`. The test's own reads use a
//! `global-read-only` token.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rollgate::config::{ConsulConfig, Secret as ConsulSecret};
use rollgate::consul::types::{CheckStatus, ServiceEntry};
use rollgate::consul::{Client, QueryOptions};
use sandbox::acl_roles::Secret;
use sandbox::consul::{Config as ServerConfig, Fault, Server, ServerHandle};
use sandbox::imds::{self, Identity};
use sandbox::testkit::{LoggedChild, until};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const INSTANCE: &str = "i-0123456789abcdef0";

/// Sends `sig` (`TERM`, `INT`) to a running child.
fn signal(p: &LoggedChild, sig: &str) {
    let pid = p.child.id().expect("running").to_string();
    let ok = std::process::Command::new("kill")
        .args([format!("-{sig}"), pid])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn spawn(mut cmd: Command) -> LoggedChild {
    cmd.stdout(Stdio::piped());
    LoggedChild::spawn(cmd).expect("spawn")
}

/// Starts the real `web` app on a free port; answers it and its address.
async fn web(env: &[(&str, &str)]) -> (LoggedChild, SocketAddr) {
    let mut cmd = Command::new(sandbox::testkit::binary("web", "web"));
    cmd.args(["--listen", "127.0.0.1:0"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut p = spawn(cmd);
    let stdout = p.child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("web prints its address")
        .unwrap()
        .expect("a line");
    let addr = line.trim_start_matches("listening on ").parse().unwrap();
    (p, addr)
}

/// The world of one node: Consul with one client node, IMDS.
struct World {
    consul: ServerHandle,
    node: SocketAddr,
    imds: imds::ImdsHandle,
    dir: tempfile::TempDir,
    /// The test's reads.
    read_token: Secret,
}

/// Starts Consul from `config` with ACLs on, creates the roles' policies
/// and tokens from `config/acl/*.hcl` (the agent's with `agent_token`, so
/// its token file can be written before Consul is up) and a read token.
async fn acl_consul(config: ServerConfig, agent_token: &Secret) -> (ServerHandle, Secret) {
    let management = Secret::random();
    let consul = Server::start(ServerConfig {
        acl_management_token: Some(management.expose().to_owned()),
        ..config
    })
    .await
    .unwrap();
    sandbox::acl_roles::create_roles_with_secrets(
        consul.http_addr(),
        &management,
        &sandbox::acl_roles::policy_dir(),
        &[("agent".to_owned(), agent_token.clone())].into(),
    )
    .await
    .unwrap();
    let read = sandbox::acl_roles::create_read_token(consul.http_addr(), &management, "test reads")
        .await
        .unwrap();
    (consul, read)
}

impl World {
    async fn new() -> Self {
        Self::with_consul(ServerConfig {
            nodes: 1,
            ..ServerConfig::default()
        })
        .await
    }

    async fn with_consul(config: ServerConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let agent_token = Secret::random();
        agent_token
            .write_file(&dir.path().join("agent.token"))
            .unwrap();
        let (consul, read_token) = acl_consul(config, &agent_token).await;
        let node = consul.nodes()[0].addr;
        let imds = imds::start(
            Identity {
                instance_id: INSTANCE.into(),
                ami_id: "ami-0aaaaaaaaaaaaaaa1".into(),
                availability_zone: "eu-west-1b".into(),
                region: "eu-west-1".into(),
                local_ipv4: Ipv4Addr::LOCALHOST,
                instance_type: "t3.micro".into(),
                account_id: "123456789012".into(),
            },
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        Self {
            consul,
            node,
            imds,
            dir,
            read_token,
        }
    }

    /// The agent role's token file.
    fn token_file(&self) -> String {
        self.dir.path().join("agent.token").display().to_string()
    }

    /// An agent configuration's `[consul]` section for `address`, with the
    /// agent role's token file.
    fn consul_section(&self, address: impl std::fmt::Display) -> String {
        format!(
            "[consul]\naddress = \"http://{address}\"\ntoken_file = {:?}\n",
            self.token_file()
        )
    }

    fn client(&self) -> Client {
        Client::new(&ConsulConfig {
            address: format!("http://{}", self.node),
            token: Some(ConsulSecret::new(self.read_token.expose())),
            ..ConsulConfig::default()
        })
        .unwrap()
    }

    /// Starts `rollgate agent` for an app at `app`, expecting `version`.
    fn agent(&self, app: SocketAddr, version: &str, extra: &str) -> LoggedChild {
        self.agent_draining(app, version, "1s", extra)
    }

    fn agent_draining(
        &self,
        app: SocketAddr,
        version: &str,
        drain: &str,
        extra: &str,
    ) -> LoggedChild {
        let config = format!(
            "{consul}\n[log]\nlevel = \"info\"\n\n[agent]\n\
             service_port = {port}\nservice_address = \"127.0.0.1\"\nartifact = \"acmeinc/web\"\n\
             expected_version = \"{version}\"\napp_url = \"http://{app}\"\n\
             check_url = \"http://{app}/health\"\ncheck_interval = \"1s\"\ncheck_timeout = \"500ms\"\n\
             ttl = \"2s\"\ndrain_time = \"{drain}\"\nimds_endpoint = \"{imds}\"\n{extra}",
            consul = self.consul_section(self.node),
            port = app.port(),
            imds = self.imds.endpoint(),
        );
        let path = self.dir.path().join(format!("agent-{}.toml", app.port()));
        std::fs::write(&path, config).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rollgate"));
        cmd.args(["--config", path.to_str().unwrap(), "agent"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        spawn(cmd)
    }

    async fn entries(&self, passing: bool) -> Vec<ServiceEntry> {
        self.client()
            .health_service("web", passing, None, &QueryOptions::default())
            .await
            .map(|r| r.value)
            .unwrap_or_default()
    }

    /// The agent's TTL check as the node's Consul agent holds it. Not the
    /// catalog's copy: Consul's agent defers output-only changes to the
    /// catalog by `check_update_interval` (5 minutes), so a new output with
    /// an unchanged status shows there much later.
    async fn ttl_check(&self) -> Option<(CheckStatus, String)> {
        let checks = self.client().agent_checks().await.ok()?;
        let c = checks.values().find(|c| c.check_id.ends_with(":agent"))?;
        Some((c.status(), c.output.clone()))
    }

    async fn shutdown(self) {
        self.consul.shutdown().await;
        let _ = self.imds.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_with_meta_and_passes_soon_after_the_app_is_ready() {
    let w = World::new().await;
    let (_app, addr) = web(&[("WEB_VERSION", "1.2.3")]).await;
    let agent = w.agent(addr, "1.2.3", "");
    let ready = Instant::now();
    let entry = until("passing", Duration::from_secs(15), || async {
        w.entries(true).await.into_iter().next()
    })
    .await;
    // Generous on a shared machine: the agent's start-up is included here.
    // BENCHMARKS.md records the measured ready-to-passing time.
    assert!(
        ready.elapsed() < Duration::from_secs(5),
        "{:?}\n{}",
        ready.elapsed(),
        agent.log()
    );
    let meta = entry.service.meta.clone().unwrap();
    assert_eq!(meta["instance_id"], INSTANCE);
    assert_eq!(meta["ami_id"], "ami-0aaaaaaaaaaaaaaa1");
    assert_eq!(meta["version"], "1.2.3");
    assert_eq!(meta["artifact"], "acmeinc/web");
    assert_eq!(meta["az"], "eu-west-1b");
    assert_eq!(entry.service.id, format!("web-{INSTANCE}"));
    assert_eq!(entry.service.port, addr.port());
    let service_checks: Vec<_> = entry
        .checks
        .iter()
        .filter(|c| !c.service_id.is_empty())
        .collect();
    assert_eq!(
        service_checks.len(),
        2,
        "HTTP and TTL checks: {service_checks:?}"
    );
    assert!(
        service_checks
            .iter()
            .all(|c| c.status() == CheckStatus::Passing)
    );
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_health_never_passes_and_the_output_says_why() {
    let w = World::new().await;
    let (_app, addr) = web(&[("WEB_VERSION", "1.2.3"), ("WEB_FAIL_HEALTH", "1")]).await;
    let _agent = w.agent(addr, "1.2.3", "");
    let (status, output) = until("ttl output", Duration::from_secs(15), || async {
        w.ttl_check().await.filter(|(_, o)| o.contains("/health"))
    })
    .await;
    assert_eq!(status, CheckStatus::Critical);
    assert!(output.contains("answered 500"), "{output}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(w.entries(true).await.is_empty(), "never passing");
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_delay_passes_only_after_the_delay() {
    let w = World::new().await;
    let started = Instant::now();
    let (_app, addr) = web(&[("WEB_VERSION", "1.2.3"), ("WEB_BOOT_DELAY", "3s")]).await;
    let _agent = w.agent(addr, "1.2.3", "");
    until("registered", Duration::from_secs(10), || async {
        w.ttl_check().await
    })
    .await;
    assert!(w.entries(true).await.is_empty() || started.elapsed() >= Duration::from_secs(3));
    until("passing", Duration::from_secs(15), || async {
        w.entries(true).await.into_iter().next()
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "passed before the boot delay"
    );
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_mismatch_is_critical_and_names_both_versions() {
    let w = World::new().await;
    let (_app, addr) = web(&[("WEB_VERSION", "1.2.4")]).await;
    let _agent = w.agent(addr, "1.2.3", "");
    let (status, output) = until("mismatch", Duration::from_secs(15), || async {
        w.ttl_check().await.filter(|(_, o)| o.contains("mismatch"))
    })
    .await;
    assert_eq!(status, CheckStatus::Critical);
    assert!(
        output.contains("1.2.4") && output.contains("1.2.3"),
        "{output}"
    );
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_restart_with_lost_state_is_healed_within_one_ttl() {
    let w = World::new().await;
    let (_app, addr) = web(&[("WEB_VERSION", "1.2.3")]).await;
    let agent = w.agent(addr, "1.2.3", "");
    until("passing", Duration::from_secs(15), || async {
        w.entries(true).await.into_iter().next()
    })
    .await;
    w.consul.restart_lost_state();
    let lost = Instant::now();
    until("registered again", Duration::from_secs(10), || async {
        w.entries(false).await.into_iter().next()
    })
    .await;
    // TTL is 2 s: registered again within one TTL (plus scheduling slack).
    assert!(
        lost.elapsed() < Duration::from_secs(3),
        "{:?}\n{}",
        lost.elapsed(),
        agent.log()
    );
    until("passing again", Duration::from_secs(10), || async {
        w.entries(true).await.into_iter().next()
    })
    .await;
    assert!(agent.log().contains("registering again"), "{}", agent.log());
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_maintenance_then_deregisters_and_exits_0() {
    let w = World::new().await;
    let (_app, addr) = web(&[("WEB_VERSION", "1.2.3")]).await;
    let mut agent = w.agent(addr, "1.2.3", "");
    until("passing", Duration::from_secs(15), || async {
        w.entries(true).await.into_iter().next()
    })
    .await;
    signal(&agent, "TERM");
    let signalled = Instant::now();
    let maint = until("maintenance", Duration::from_secs(5), || async {
        let entries = w.entries(false).await;
        let e = entries.first()?;
        e.checks
            .iter()
            .find(|c| c.check_id.starts_with("_service_maintenance:"))
            .cloned()
    })
    .await;
    assert!(maint.notes.contains(INSTANCE), "{}", maint.notes);
    assert!(
        w.entries(true).await.is_empty(),
        "not passing while draining"
    );
    until("deregistered", Duration::from_secs(10), || async {
        w.entries(false).await.is_empty().then_some(())
    })
    .await;
    assert!(
        signalled.elapsed() >= Duration::from_millis(900),
        "drain_time (1s) honoured"
    );
    let status = agent.wait(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", agent.log());
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_skips_the_drain_wait() {
    let w = World::new().await;
    let (_app, addr) = web(&[("WEB_VERSION", "1.2.3")]).await;
    // A drain far longer than the test allows: only the second signal can
    // end it in time.
    let mut agent = w.agent_draining(addr, "1.2.3", "30s", "");
    until("passing", Duration::from_secs(15), || async {
        w.entries(true).await.into_iter().next()
    })
    .await;
    signal(&agent, "TERM");
    until("maintenance", Duration::from_secs(5), || async {
        let entries = w.entries(false).await;
        let e = entries.first()?;
        e.checks
            .iter()
            .find(|c| c.check_id.starts_with("_service_maintenance:"))
            .map(|_| ())
    })
    .await;
    signal(&agent, "INT");
    let status = agent.wait(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(0), "{}", agent.log());
    assert!(
        agent.log().contains("Drain wait skipped"),
        "{}",
        agent.log()
    );
    assert!(
        w.entries(false).await.is_empty(),
        "deregistered on the way out"
    );
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imds_unreachable_without_configured_identity_exits_2() {
    let w = World::new().await;
    let closed = sandbox::testkit::free_addr();
    let (_app, addr) = web(&[("WEB_VERSION", "1.2.3")]).await;
    let path = w.dir.path().join("noimds.toml");
    std::fs::write(
        &path,
        format!(
            "{}[agent]\nexpected_version = \"1.2.3\"\n\
             app_url = \"http://{addr}\"\nimds_endpoint = \"http://{closed}\"\n",
            w.consul_section(w.node)
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rollgate"));
    cmd.args(["--config", path.to_str().unwrap(), "agent"])
        .env_clear();
    let mut p = spawn(cmd);
    let status = p.wait(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(2), "{}", p.log());
    let log = p.log();
    assert!(
        log.contains("instance metadata service") && log.contains("[agent.identity]"),
        "{log}"
    );

    // With an identity in the configuration it starts anyway, with a warning.
    let with_id = format!(
        "{}\n[agent.identity]\ninstance_id = \"i-fallback\"\nami_id = \"ami-1\"\n\
         availability_zone = \"local\"\nlocal_ipv4 = \"127.0.0.1\"\n",
        std::fs::read_to_string(&path).unwrap()
    );
    std::fs::write(&path, with_id).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rollgate"));
    cmd.args(["--config", path.to_str().unwrap(), "agent"])
        .env_clear();
    let p = spawn(cmd);
    until("fallback registration", Duration::from_secs(20), || async {
        w.entries(false)
            .await
            .into_iter()
            .find(|e| e.service.id == "web-i-fallback")
    })
    .await;
    assert!(p.log().contains("using [agent.identity]"), "{}", p.log());
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_expected_version_exits_2_naming_the_key() {
    let w = World::new().await;
    let path = w.dir.path().join("nover.toml");
    std::fs::write(&path, w.consul_section(w.node)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rollgate"))
        .args(["--config", path.to_str().unwrap(), "agent"])
        .env_clear()
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("agent.expected_version"));
    w.shutdown().await;
}

/// An app whose answers the test switches: garbage, a hang, or healthy.
async fn switchable_app() -> (
    SocketAddr,
    Arc<Mutex<&'static str>>,
    tokio::task::JoinHandle<()>,
) {
    use axum::routing::get;
    let mode = Arc::new(Mutex::new("garbage"));
    let m1 = mode.clone();
    let m2 = mode.clone();
    let app = axum::Router::new()
        .route(
            "/health",
            get(move || {
                let mode = *m1.lock().unwrap();
                async move {
                    if mode == "hang" {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    "ok"
                }
            }),
        )
        .route(
            "/version",
            get(move || {
                let mode = *m2.lock().unwrap();
                async move {
                    match mode {
                        "garbage" => "\u{1}\u{2}not json at all".to_string(),
                        _ => r#"{"version":"1.2.3","name":"web"}"#.to_string(),
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, mode, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_hanging_app_are_named_and_the_agent_recovers() {
    let w = World::new().await;
    let (addr, mode, task) = switchable_app().await;
    let agent = w.agent(addr, "1.2.3", "");
    let (_, output) = until("garbage named", Duration::from_secs(15), || async {
        w.ttl_check()
            .await
            .filter(|(_, o)| o.contains("did not answer JSON"))
    })
    .await;
    assert!(output.contains("/version"), "{output}");
    *mode.lock().unwrap() = "hang";
    let (status, output) = until("hang named", Duration::from_secs(15), || async {
        w.ttl_check().await.filter(|(_, o)| o.contains("timed out"))
    })
    .await;
    assert_eq!(status, CheckStatus::Critical);
    assert!(output.contains("500ms"), "{output}");
    *mode.lock().unwrap() = "ok";
    until("recovered", Duration::from_secs(15), || async {
        w.ttl_check()
            .await
            .filter(|(s, _)| *s == CheckStatus::Passing)
    })
    .await;
    assert!(agent.log().contains("Probe not passing"), "{}", agent.log());
    task.abort();
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_refusing_403_is_logged_and_the_agent_recovers() {
    let w = World::new().await;
    let (_app, addr) = web(&[("WEB_VERSION", "1.2.3")]).await;
    // The node's agent refuses registration three times (a token without
    // service:write), then an operator fixes the policy.
    w.consul.inject_fault(Fault {
        path_prefix: "/v1/agent/service/register".into(),
        count: 3,
        status: 403,
        body: "Permission denied: token lacks permission 'service:write' on \"web\"".into(),
        content_type: None,
    });
    let agent = w.agent(addr, "1.2.3", "");
    until("passing after the fix", Duration::from_secs(20), || async {
        w.entries(true).await.into_iter().next()
    })
    .await;
    let log = agent.log();
    assert!(log.contains("Cannot register the service"), "{log}");
    assert!(
        log.contains("service:write") && log.contains("403"),
        "{log}"
    );
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_unreachable_at_start_is_retried_not_a_crash() {
    // Consul is not there yet when the agent starts.
    let port = sandbox::testkit::free_addr();
    let w = World::new().await;
    let (_app, addr) = web(&[("WEB_VERSION", "1.2.3")]).await;
    let path = w.dir.path().join("late.toml");
    std::fs::write(
        &path,
        format!(
            "{consul}[agent]\nexpected_version = \"1.2.3\"\n\
             app_url = \"http://{addr}\"\ncheck_url = \"http://{addr}/health\"\n\
             check_interval = \"1s\"\ncheck_timeout = \"500ms\"\nttl = \"2s\"\n\
             imds_endpoint = \"{}\"\n",
            w.imds.endpoint(),
            consul = w.consul_section(port),
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rollgate"));
    cmd.args(["--config", path.to_str().unwrap(), "agent"])
        .env_clear();
    let mut agent = spawn(cmd);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "still running:\n{}",
        agent.log()
    );
    assert!(
        agent.log().contains("cannot reach Consul"),
        "{}",
        agent.log()
    );
    // Consul appears on that address, with the token the agent already
    // has: the agent registers.
    let agent_token = Secret::new(
        std::fs::read_to_string(w.token_file())
            .unwrap()
            .trim()
            .to_owned(),
    );
    let (late, read) = acl_consul(
        ServerConfig {
            listen: port,
            ..ServerConfig::default()
        },
        &agent_token,
    )
    .await;
    let c = Client::new(&ConsulConfig {
        address: format!("http://{port}"),
        token: Some(ConsulSecret::new(read.expose())),
        ..ConsulConfig::default()
    })
    .unwrap();
    until(
        "registered once Consul is up",
        Duration::from_secs(10),
        || async {
            c.health_service("web", false, None, &QueryOptions::default())
                .await
                .ok()
                .and_then(|r| r.value.into_iter().next())
        },
    )
    .await;
    late.shutdown().await;
    w.shutdown().await;
}

/// `GET`/`HEAD`/`POST` of `path` on the agent's `/ready` listener: status
/// and body, `None` while it does not answer.
async fn ask_ready(method: reqwest::Method, addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let resp = reqwest::Client::new()
        .request(method, format!("http://{addr}{path}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

/// An app whose `/health` fails (500) while `broken` holds.
async fn breakable_app() -> (SocketAddr, Arc<Mutex<bool>>, tokio::task::JoinHandle<()>) {
    use axum::http::StatusCode;
    use axum::routing::get;
    let broken = Arc::new(Mutex::new(true));
    let b = broken.clone();
    let app = axum::Router::new()
        .route(
            "/health",
            get(move || {
                let broken = *b.lock().unwrap();
                async move {
                    if broken {
                        (StatusCode::INTERNAL_SERVER_ERROR, "broken")
                    } else {
                        (StatusCode::OK, "ok")
                    }
                }
            }),
        )
        .route(
            "/version",
            get(|| async { r#"{"version":"1.2.3","name":"web"}"# }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, broken, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_follows_consuls_verdict_failing_passing_and_draining() {
    use reqwest::Method;
    let w = World::new().await;
    let (addr, broken, task) = breakable_app().await;
    let ready = sandbox::testkit::free_addr();
    let service = format!("web-{INSTANCE}");
    // A long drain, so the test sees it; a second signal ends it.
    let mut agent = w.agent_draining(
        addr,
        "1.2.3",
        "30s",
        &format!("ready_listen = \"{ready}\"\n"),
    );

    // Failing check: 503 naming the check and its output.
    let (_, body) = until("503 naming the probe", Duration::from_secs(15), || async {
        ask_ready(Method::GET, ready, "/ready")
            .await
            // The checks start as warning (not answered yet); wait for the
            // probe's verdict.
            .filter(|(s, b)| {
                *s == 503 && b.contains(&format!("({service}:agent)")) && b.contains("answered 500")
            })
    })
    .await;
    assert!(
        body.starts_with(&format!("not ready: service {service} is critical")),
        "{body}"
    );
    assert!(body.contains("answered 500"), "the probe's output: {body}");
    let (status, head_body) = ask_ready(Method::HEAD, ready, "/ready").await.unwrap();
    assert_eq!((status, head_body.as_str()), (503, ""), "HEAD: status only");
    assert_eq!(ask_ready(Method::GET, ready, "/").await.unwrap().0, 404);
    assert_eq!(
        ask_ready(Method::POST, ready, "/ready").await.unwrap().0,
        405
    );

    // Passing: 200.
    *broken.lock().unwrap() = false;
    let (_, body) = until("200 once passing", Duration::from_secs(15), || async {
        ask_ready(Method::GET, ready, "/ready")
            .await
            .filter(|(s, _)| *s == 200)
    })
    .await;
    assert!(
        body.starts_with(&format!("ready: service {service} is passing")),
        "{body}"
    );
    assert_eq!(
        ask_ready(Method::HEAD, ready, "/ready").await.unwrap().0,
        200
    );

    // The local Consul agent failing to answer is not ready, never 200.
    w.consul.inject_fault(Fault {
        path_prefix: "/v1/agent/health/service/id/".into(),
        count: 1,
        status: 500,
        body: "rpc error: no path to the agent".into(),
        content_type: None,
    });
    let (status, body) = ask_ready(Method::GET, ready, "/ready").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("HTTP 500") && body.contains("rpc error"),
        "{body}"
    );
    assert_eq!(
        ask_ready(Method::GET, ready, "/ready").await.unwrap().0,
        200
    );

    // Draining (maintenance): 503 naming the reason, while still serving.
    signal(&agent, "TERM");
    let (_, body) = until("503 in maintenance", Duration::from_secs(10), || async {
        ask_ready(Method::GET, ready, "/ready")
            .await
            .filter(|(s, b)| *s == 503 && b.contains("maintenance"))
    })
    .await;
    assert!(
        body.contains(&format!("_service_maintenance:{service}")) && body.contains(INSTANCE),
        "the maintenance check and its reason: {body}"
    );
    signal(&agent, "INT");
    let status = agent.wait(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", agent.log());
    assert!(
        ask_ready(Method::GET, ready, "/ready").await.is_none(),
        "the listener closes with the agent"
    );
    assert!(agent.log().contains("Serving /ready"), "{}", agent.log());
    task.abort();
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_port_in_use_exits_2_naming_the_key() {
    let w = World::new().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (_app, app) = web(&[("WEB_VERSION", "1.2.3")]).await;
    let mut agent = w.agent(app, "1.2.3", &format!("ready_listen = \"{addr}\"\n"));
    let status = agent.wait(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(2), "{}", agent.log());
    assert!(
        agent.log().contains("agent.ready_listen"),
        "{}",
        agent.log()
    );
    w.shutdown().await;
}

/// The service's checks as the catalog reports them (what the coordinator
/// reads), read as the rollout core reads them: whether the instance has
/// answered wrong (see `rollgate_core::health`).
async fn answered_wrong(w: &World) -> Option<bool> {
    let entries = w.entries(false).await;
    let health = rollgate::rollout::health::health_by_instance(&entries);
    health.get(INSTANCE).map(|h| !h.answered_wrong().is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_refusing_connections_is_warning_until_it_answers_then_critical() {
    let w = World::new().await;
    // Nothing listens there yet: every probe is refused.
    let addr = sandbox::testkit::free_addr();
    let agent = w.agent(addr, "1.2.3", "");
    let (status, output) = until("not answering yet", Duration::from_secs(15), || async {
        w.ttl_check()
            .await
            .filter(|(_, o)| o.contains("not answering yet"))
    })
    .await;
    assert_eq!(status, CheckStatus::Warning, "{output}");
    assert!(output.contains("/health"), "{output}");
    // Several probes (1 s apart) later, still warning, never critical, and
    // the coordinator reads "not answered yet" although Consul's own HTTP
    // check is critical (refused).
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let (status, output) = w.ttl_check().await.unwrap();
        assert_eq!(status, CheckStatus::Warning, "{output}\n{}", agent.log());
        assert_eq!(answered_wrong(&w).await, Some(false));
    }
    // The app comes up, answering 500: the first answer, and a bad one.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "db down") }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let (_, output) = until("critical", Duration::from_secs(15), || async {
        w.ttl_check()
            .await
            .filter(|(s, _)| *s == CheckStatus::Critical)
    })
    .await;
    assert!(output.contains("answered 500: db down"), "{output}");
    until(
        "read as answered wrong",
        Duration::from_secs(10),
        || async { answered_wrong(&w).await.filter(|wrong| *wrong) },
    )
    .await;
    // Once it has answered, silence is a crash: critical, not "not yet".
    task.abort();
    let _ = task.await;
    let (status, output) = until(
        "refused after answering",
        Duration::from_secs(15),
        || async {
            w.ttl_check()
                .await
                .filter(|(_, o)| o.contains("had answered before"))
        },
    )
    .await;
    assert_eq!(status, CheckStatus::Critical, "{output}");
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booting_app_answering_503_is_warning_and_a_broken_one_turns_critical() {
    let w = World::new().await;
    // The real app: 503 everywhere while it boots, then /health 500.
    let (_app, addr) = web(&[
        ("WEB_VERSION", "1.2.3"),
        ("WEB_BOOT_DELAY", "4s"),
        ("WEB_FAIL_HEALTH", "1"),
    ])
    .await;
    let _agent = w.agent(addr, "1.2.3", "");
    let (status, output) = until("503 while booting", Duration::from_secs(10), || async {
        w.ttl_check().await.filter(|(_, o)| o.contains("503"))
    })
    .await;
    assert_eq!(status, CheckStatus::Warning, "{output}");
    assert!(output.starts_with("not answering yet"), "{output}");
    assert_eq!(
        answered_wrong(&w).await,
        Some(false),
        "booting is no evidence"
    );
    let (status, output) = until("500 once booted", Duration::from_secs(15), || async {
        w.ttl_check()
            .await
            .filter(|(_, o)| o.contains("answered 500"))
    })
    .await;
    assert_eq!(status, CheckStatus::Critical, "{output}");
    until(
        "read as answered wrong",
        Duration::from_secs(10),
        || async { answered_wrong(&w).await.filter(|wrong| *wrong) },
    )
    .await;
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_version_is_answered_wrong_even_with_health_passing() {
    let w = World::new().await;
    let (_app, addr) = web(&[("WEB_VERSION", "9.9.9")]).await;
    let _agent = w.agent(addr, "1.2.3", "");
    until(
        "Consul's HTTP check passing",
        Duration::from_secs(15),
        || async {
            let entries = w.entries(false).await;
            let e = entries.first()?;
            e.checks
                .iter()
                .any(|c| c.check_id.ends_with(":http") && c.status() == CheckStatus::Passing)
                .then_some(())
        },
    )
    .await;
    until(
        "read as answered wrong",
        Duration::from_secs(10),
        || async { answered_wrong(&w).await.filter(|wrong| *wrong) },
    )
    .await;
    let (status, output) = w.ttl_check().await.unwrap();
    assert_eq!(status, CheckStatus::Critical);
    assert!(output.contains("9.9.9"), "{output}");
    w.shutdown().await;
}
