//! The real binary's exit status for each kind of failure that can be caused
//! without AWS, against the sandbox Consul server (ACLs on, as in
//! production: each command runs with its role's token, made from
//! config/acl/<role>.hcl) or a loopback port nobody listens on; and the
//! table in `rollgate --help` and README.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use rollgate::cli::{EXIT_STATUS_HELP, Exit};
use sandbox::acl_roles::{Secret, create_workspace_roles};
use sandbox::consul::{Config as ServerConfig, Server, ServerHandle};

/// Runs `rollgate ARGS` with only `CONSUL_HTTP_ADDR` (and `extra`) in its
/// environment; answers the exit code and stdout + stderr.
fn rollgate(consul: SocketAddr, args: &[&str], extra: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rollgate"))
        .args(args)
        .env_clear()
        .env("CONSUL_HTTP_ADDR", consul.to_string())
        .envs(extra.iter().copied())
        .output()
        .expect("run rollgate");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn code(exit: Exit) -> i32 {
    i32::from(exit.code())
}

/// A loopback address where nothing listens (bound, then released).
fn closed() -> SocketAddr {
    sandbox::testkit::free_addr()
}

async fn consul(management: &str) -> ServerHandle {
    Server::start(ServerConfig::with_acls(management))
        .await
        .expect("sandbox consul starts")
}

#[test]
fn help_and_readme_show_the_same_table() {
    let (status, help) = rollgate(closed(), &["--help"], &[]);
    assert_eq!(status, 0);
    assert!(help.contains(EXIT_STATUS_HELP), "{help}");

    let readme = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .join("README.md"),
    )
    .unwrap();
    let section = readme
        .split("\n## Exit status\n")
        .nth(1)
        .expect("README.md has an `## Exit status` section");
    let section = section.split("\n## ").next().unwrap_or_default();
    for exit in Exit::ALL {
        let row = format!("| {} |", exit.code());
        assert!(
            section.lines().any(|l| l.starts_with(&row)),
            "README.md's exit status table has no row {row}:\n{section}"
        );
    }
}

#[test]
fn bad_configuration_or_usage_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[consul]\nadress = \"http://127.0.0.1:8500\"\n").unwrap();
    let (status, out) = rollgate(
        closed(),
        &["--config", bad.to_str().unwrap(), "check-config"],
        &[],
    );
    assert_eq!(status, code(Exit::Usage), "{out}");
    assert!(out.contains("adress"), "the unknown key is named: {out}");

    // A type error reads in plain words, and stays 2.
    let negative = dir.path().join("negative.toml");
    std::fs::write(
        &negative,
        "[[services]]\nname = \"web\"\nauto_scaling_group = \"web\"\nlaunch_template = \"web\"\n\
         artifact = \"acmeinc/web\"\n[services.rollout]\nbatch_size = -1\n",
    )
    .unwrap();
    let (status, out) = rollgate(
        closed(),
        &["--config", negative.to_str().unwrap(), "check-config"],
        &[],
    );
    assert_eq!(status, code(Exit::Usage), "{out}");
    assert!(
        out.contains("services[0].rollout.batch_size: expected a whole number between 1"),
        "{out}"
    );

    // What a role needs is configuration too: check-config --role and the
    // daemon both exit 2, before reaching Consul.
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let config = empty.to_str().unwrap();
    for args in [
        &["--config", config, "check-config", "--role", "coordinator"][..],
        &["--config", config, "coordinator"],
    ] {
        let (status, out) = rollgate(closed(), args, &[]);
        assert_eq!(status, code(Exit::Usage), "{args:?}: {out}");
        assert!(out.contains("[[services]]"), "{args:?}: {out}");
    }

    let (status, out) = rollgate(closed(), &["frobnicate"], &[]);
    assert_eq!(status, code(Exit::Usage), "clap's usage error: {out}");

    // None of these needs Consul or AWS to know the input is wrong.
    let (status, out) = rollgate(closed(), &["approve", "nonsense"], &[]);
    assert_eq!(status, code(Exit::Usage), "a malformed plan ID: {out}");
    let (status, out) = rollgate(
        closed(),
        &["publish", "--manifest", "/nonexistent/manifest.json"],
        &[],
    );
    assert_eq!(status, code(Exit::Usage), "an unreadable manifest: {out}");
    assert!(out.contains("/nonexistent/manifest.json"), "{out}");
    let (status, out) = rollgate(closed(), &["status"], &[]);
    assert_eq!(
        status,
        code(Exit::Usage),
        "no service named or configured: {out}"
    );
}

#[test]
fn unreachable_consul_exits_3() {
    let nobody = closed();
    for args in [
        &["check-config", "--connect"][..],
        &["approve", "web-1"],
        &["pause", "web"],
        // Not 1: a script waiting on a rollout must not read "cannot ask" as
        // "the rollout failed".
        &["status", "web", "--wait"],
    ] {
        let (status, out) = rollgate(nobody, args, &[]);
        assert_eq!(status, code(Exit::Unavailable), "{args:?}: {out}");
        assert!(
            out.contains(&nobody.to_string()),
            "names Consul's address: {out}"
        );
        if args[0] != "check-config" {
            assert!(
                out.contains("Connection refused") && out.contains("consul.address"),
                "says why in the system's words and what to check: {out}"
            );
        }
    }
}

// Multi-threaded: the test blocks on child processes while the in-process
// server must keep answering them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_denying_the_token_exits_3() {
    let s = consul("root-s3cr3t").await;
    let (status, out) = rollgate(s.http_addr(), &["approve", "web-1"], &[]);
    assert_eq!(status, code(Exit::Unavailable), "{out}");
    assert!(out.contains("403"), "{out}");
    let (status, out) = rollgate(
        s.http_addr(),
        &["check-config", "--connect"],
        &[("CONSUL_HTTP_TOKEN", "not-a-token")],
    );
    assert_eq!(status, code(Exit::Unavailable), "{out}");
    assert!(
        !out.contains("not-a-token"),
        "the token is never printed: {out}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_exit_4_and_status_reports_the_rollout() {
    let management = Secret::random();
    let s = consul(management.expose()).await;
    let addr = s.http_addr();
    let tokens = create_workspace_roles(addr, &management)
        .await
        .expect("role tokens");
    let operator = tokens.secret("operator").expect("operator token");
    let ci = tokens.secret("ci").expect("ci token");
    let as_operator = [("CONSUL_HTTP_TOKEN", operator.expose())];
    let (status, out) = rollgate(addr, &["approve", "web-99"], &as_operator);
    assert_eq!(status, code(Exit::Refused), "an unknown plan: {out}");
    assert!(out.contains("web-99"), "{out}");
    let (status, out) = rollgate(addr, &["pause", "web"], &as_operator);
    assert_eq!(status, code(Exit::Refused), "no rollout to pause: {out}");

    // Nothing to report is not a failure; nothing to wait for is. CI waits
    // on rollouts with its own token.
    let (status, out) = rollgate(addr, &["status", "web"], &as_operator);
    assert_eq!(status, code(Exit::Success), "{out}");
    let as_ci = [("CONSUL_HTTP_TOKEN", ci.expose())];
    let (status, out) = rollgate(addr, &["status", "web", "--wait"], &as_ci);
    assert_eq!(status, code(Exit::RolloutFailed), "{out}");
    s.shutdown().await;
}
