//! The schema-driven fuzzer schemathesis (PyPI, pinned by
//! `sandbox/scripts/prerequisites`) against the console's API, described
//! by `docs/openapi.yaml`: it fails on any 5xx, any answer that breaks the
//! document (status, content type, headers, body schema), valid input
//! refused, invalid input accepted, or a route answering without the token.
//! Run by CI like every test: `python3 -m schemathesis.cli`, or the program
//! `SCHEMATHESIS` names. Bounded to finish in about two minutes on two
//! cores (one worker, at most 60 examples per operation, a fixed seed so a
//! failure reproduces).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod console_support;

use console_support::ConsoleWorld;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_schema_break() {
    let w = ConsoleWorld::new().await;
    // Something to find: plans pending and decided, an active rollout.
    for n in 1..=3 {
        w.pending_plan(n).await;
    }
    w.active_rollout("web-1").await;
    let addr = w.console("a").await;
    let (token, _) = w.operator_token("fuzzer").await;
    let (program, first): (String, Vec<&str>) = match std::env::var("SCHEMATHESIS") {
        Ok(p) => (p, vec![]),
        Err(_) => ("python3".into(), vec!["-m", "schemathesis.cli"]),
    };
    // Its example database and caches go to a temporary folder, not the tree.
    let scratch = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(&program)
        .current_dir(scratch.path())
        .args(&first)
        .args(["run", &format!("http://{addr}/v1/openapi.yaml")])
        .args(["--url", &format!("http://{addr}")])
        .args(["-H", &format!("X-Consul-Token: {}", token.expose())])
        // Every check: no 5xx, answers as documented (status, content
        // type, schema), valid input accepted and invalid refused, and
        // the token required (it is withheld to see the 401).
        .args(["--checks", "all"])
        .args([
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "60",
            "--seed",
            "15",
        ])
        .args(["--suppress-health-check", "all", "--workers", "1"])
        .args(["--request-timeout", "10"])
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("cannot run {program}: {e} (bash sandbox/scripts/prerequisites installs schemathesis)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    w.shutdown().await;
}
