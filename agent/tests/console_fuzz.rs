//! The schema-driven fuzzer schemathesis (PyPI) against the console's API,
//! described by `docs/openapi.yaml`: no 5xx, no answer that breaks the
//! document, valid input accepted, invalid input refused, the token
//! required. Ignored by default: it needs schemathesis installed
//! (`SCHEMATHESIS=/path/to/schemathesis`, else `schemathesis` on PATH);
//! run it with `cargo test -p rollgate --test console_fuzz -- --ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod console_support;

use console_support::ConsoleWorld;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs schemathesis from PyPI"]
async fn schemathesis_finds_no_server_error_and_no_schema_break() {
    let w = ConsoleWorld::new().await;
    // Something to find: plans pending and decided, an active rollout.
    for n in 1..=3 {
        w.pending_plan(n).await;
    }
    w.active_rollout("web-1").await;
    let addr = w.console("a").await;
    let (token, _) = w.operator_token("fuzzer").await;
    let program = std::env::var("SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".into());
    // Its example database and caches go to a temporary folder, not the tree.
    let scratch = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(&program)
        .current_dir(scratch.path())
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
            "50",
        ])
        .args(["--suppress-health-check", "all", "--workers", "1"])
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (pip install schemathesis)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    w.shutdown().await;
}
