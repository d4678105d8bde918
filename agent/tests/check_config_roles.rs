//! `check-config --role` agrees with each daemon's start-up on the same
//! file: what it calls valid for a role, the role's daemon starts with; what
//! it refuses, the daemon refuses with the same words and exit status 2.
//!
//! The daemons run against the sandbox Consul with ACLs on, each with its
//! role's token (made from config/acl/<role>.hcl), so "starts" means it got
//! as far as its first real work: the coordinator and the watcher take their
//! leader lock, the agent learns its identity and starts serving.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use sandbox::acl_roles::{RoleTokens, Secret, create_workspace_roles};
use sandbox::consul::{Config as ServerConfig, Server, ServerHandle};
use sandbox::testkit::{LoggedChild, free_addr, until};

struct World {
    consul: ServerHandle,
    tokens: RoleTokens,
    dir: tempfile::TempDir,
}

impl World {
    async fn start() -> World {
        let management = Secret::random();
        let consul = Server::start(ServerConfig::with_acls(management.expose()))
            .await
            .unwrap();
        let tokens = create_workspace_roles(consul.http_addr(), &management)
            .await
            .unwrap();
        World {
            consul,
            tokens,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A configuration file: `[consul]` with the role's token file, then
    /// `body`.
    fn file(&self, name: &str, role: &str, body: &str) -> PathBuf {
        let token = self
            .tokens
            .write_file(role, &self.dir.path().join(format!("{name}.token")))
            .unwrap();
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "[consul]\naddress = \"http://{}\"\ntoken_file = {:?}\n\n{body}",
                self.consul.http_addr(),
                token.display().to_string()
            ),
        )
        .unwrap();
        path
    }
}

fn rollgate(config: &Path, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_rollgate"));
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(std::process::Stdio::null());
    cmd
}

/// `check-config ARGS`: exit code and stderr.
async fn check(config: &Path, args: &[&str]) -> (i32, String) {
    let mut all = vec!["check-config"];
    all.extend_from_slice(args);
    let out = rollgate(config, &all).output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// How a daemon's start went.
#[derive(Debug)]
enum Start {
    /// It printed `marker`: it got past its start-up checks.
    Started,
    /// It exited first, with this code and stderr.
    Exited(i32, String),
}

async fn start(config: &Path, daemon: &str, marker: &str) -> Start {
    let mut child = LoggedChild::spawn(rollgate(config, &[daemon])).unwrap();
    let outcome = until(
        &format!("`rollgate {daemon}` starts or exits"),
        Duration::from_secs(60),
        || {
            let log = child.log();
            let exited = child.child.try_wait().unwrap();
            async move {
                if log.contains(marker) {
                    Some(None)
                } else {
                    exited.map(|status| Some(status.code().unwrap_or(-1)))
                }
            }
        },
    )
    .await;
    match outcome {
        None => {
            child.child.kill().await.unwrap();
            Start::Started
        }
        Some(code) => {
            child.wait(Duration::from_secs(10)).await;
            Start::Exited(code, child.log())
        }
    }
}

const SERVICE: &str = "[[services]]\nname = \"web\"\nauto_scaling_group = \"web\"\n\
                       launch_template = \"web\"\nartifact = \"acmeinc/web\"\n";

/// What the agent needs off EC2: who it is, and no metadata service.
fn agent_section() -> String {
    format!(
        "[agent]\nexpected_version = \"1.2.3\"\nartifact = \"acmeinc/web\"\n\
         imds_endpoint = \"http://{}\"\n\n[agent.identity]\ninstance_id = \"i-0abc\"\n\
         ami_id = \"ami-0abc\"\navailability_zone = \"us-east-1a\"\nlocal_ipv4 = \"127.0.0.1\"\n",
        free_addr()
    )
}

// Multi-threaded: the test waits on child processes while the in-process
// Consul must keep answering them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_services_is_valid_for_the_watcher_and_refused_for_the_coordinator() {
    let w = World::start().await;
    let coordinator = w.file("no-services-coordinator", "coordinator", "");
    let (code, out) = check(&coordinator, &["--role", "coordinator"]).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("[[services]]"), "{out}");
    let Start::Exited(daemon_code, daemon_out) =
        start(&coordinator, "coordinator", "Leadership acquired.").await
    else {
        panic!("the coordinator started without [[services]]");
    };
    assert_eq!(daemon_code, 2, "{daemon_out}");
    let line = |text: &str| {
        text.lines()
            .find(|l| l.contains("services"))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(line(&out), line(&daemon_out), "the same words");

    let watcher = w.file("no-services-watch", "watcher", "");
    let (code, out) = check(&watcher, &["--role", "watch"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("valid for the watcher"),
        "says which role: {out}"
    );
    assert!(
        matches!(
            start(&watcher, "watch", "Leadership acquired.").await,
            Start::Started
        ),
        "the watcher starts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_needs_its_version_and_the_check_says_so_too() {
    let w = World::start().await;
    let without = w.file("agent-without-version", "agent", "");
    let (code, out) = check(&without, &["--role", "agent"]).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("agent.expected_version"), "{out}");
    let Start::Exited(daemon_code, daemon_out) =
        start(&without, "agent", "Node agent starting.").await
    else {
        panic!("the agent started without agent.expected_version");
    };
    assert_eq!(daemon_code, 2, "{daemon_out}");
    assert!(
        daemon_out.contains("agent.expected_version"),
        "{daemon_out}"
    );

    let with = w.file("agent-with-version", "agent", &agent_section());
    let (code, out) = check(&with, &["--role", "agent"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("valid for the agent"), "{out}");
    assert!(
        matches!(
            start(&with, "agent", "Node agent starting.").await,
            Start::Started
        ),
        "the agent starts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_role_is_inferred_and_named_when_not_given() {
    let w = World::start().await;
    let full = w.file("full", "coordinator", SERVICE);
    let (code, out) = check(&full, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("valid for the coordinator") && out.contains("[[services]]"),
        "names the role and why: {out}"
    );
    assert!(
        matches!(
            start(&full, "coordinator", "Leadership acquired.").await,
            Start::Started
        ),
        "the coordinator starts"
    );

    let bare = w.file("bare", "operator", "");
    let (code, out) = check(&bare, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("--role"), "says how to check a role: {out}");
}
