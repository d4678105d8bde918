//! `sandbox demo` end to end, as the real process: the three stories at a
//! smaller size (4 instances, batches of 2, a shorter healthy deadline),
//! checked from the machine-readable summary; and the bad-input paths: a
//! second demo on the same working directory is refused, and SIGINT stops
//! everything the demo started.
//!
//! The demo runs Consul with ACLs on and every process with the token of
//! its role (`config/acl/*.hcl`): the stories succeeding is the proof that
//! the policies are enough; no denial may appear in the coordinators' logs,
//! and no token in any output, log or summary.
//!
//! The demo finds the `web` and `rollgate` binaries beside its own, so they
//! are built (same profile) before it starts. It needs moto's server (`bash
//! sandbox/scripts/prerequisites`), like the other sandbox tests.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sandbox::testkit::binary;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// A `sandbox demo` process with its output collected and its descendants
/// tracked; SIGTERM then SIGKILL on drop, so a failing test leaves nothing.
struct Demo {
    child: Child,
    pid: u32,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    /// Every process seen below the demo while it ran.
    seen: Arc<Mutex<BTreeSet<u32>>>,
}

fn collect<R>(from: Option<R>) -> Arc<Mutex<String>>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let text = Arc::new(Mutex::new(String::new()));
    if let Some(from) = from {
        let sink = Arc::clone(&text);
        tokio::spawn(async move {
            let mut lines = BufReader::new(from).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut sink = sink.lock().unwrap();
                sink.push_str(&line);
                sink.push('\n');
            }
        });
    }
    text
}

/// Parent pid of `pid`, from `/proc/<pid>/stat`.
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

fn alive(pid: u32) -> bool {
    sandbox::testkit::process_alive(pid)
}

/// Every process below `root`.
fn descendants(root: u32) -> BTreeSet<u32> {
    let all: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|pid| Some((pid, parent(pid)?)))
                .collect()
        })
        .unwrap_or_default();
    let mut found = BTreeSet::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(pid, ppid) in &all {
            if ppid == p && found.insert(pid) {
                frontier.push(pid);
            }
        }
    }
    found
}

impl Demo {
    fn start(work: &Path, args: &[&str]) -> Demo {
        // The demo runs the binaries beside its own.
        binary("web", "web");
        binary("rollgate", "rollgate");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sandbox"));
        cmd.arg("demo")
            .arg("--work-dir")
            .arg(work)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap();
        let pid = child.id().unwrap();
        let stdout = collect(child.stdout.take());
        let stderr = collect(child.stderr.take());
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let tracked = Arc::clone(&seen);
        tokio::spawn(async move {
            while alive(pid) {
                tracked.lock().unwrap().extend(descendants(pid));
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        Demo {
            child,
            pid,
            stdout,
            stderr,
            seen,
        }
    }

    fn output(&self) -> String {
        format!(
            "--- stdout\n{}--- stderr\n{}",
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }

    async fn wait_for_line(&self, needle: &str, limit: Duration) {
        let start = Instant::now();
        while !self.stdout.lock().unwrap().contains(needle) {
            assert!(
                start.elapsed() < limit,
                "no {needle:?} within {limit:?}\n{}",
                self.output()
            );
            assert!(alive(self.pid), "the demo exited early\n{}", self.output());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn signal(&self, name: &str) {
        let _ = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.pid.to_string()])
            .status();
    }

    /// Waits for the exit; on time-out stops it (SIGTERM: it cleans up)
    /// and fails with its output.
    async fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => {
                let status = status.unwrap();
                // Let the readers drain the pipes.
                tokio::time::sleep(Duration::from_millis(200)).await;
                status
            }
            Err(_) => {
                self.signal("TERM");
                let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
                panic!("the demo did not end within {limit:?}\n{}", self.output());
            }
        }
    }

    /// Processes started below the demo that still run.
    fn leftovers(&self) -> Vec<u32> {
        let seen = self.seen.lock().unwrap().clone();
        seen.into_iter().filter(|&p| alive(p)).collect()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if alive(self.pid) {
            self.signal("TERM");
            let start = Instant::now();
            while alive(self.pid) && start.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Waits until every process in `pids` is gone (a drained agent takes a
/// moment), answering those still alive after `limit`.
async fn gone(pids: Vec<u32>, limit: Duration) -> Vec<u32> {
    let start = Instant::now();
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        if left.is_empty() || start.elapsed() > limit {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_tells_three_stories_with_zero_failed_requests() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let summary_path = dir.path().join("summary.json");
    let mut demo = Demo::start(
        &work,
        &[
            "--instances",
            "4",
            "--batch",
            "2",
            "--healthy-deadline",
            "35s",
            "--seed",
            "8",
            "--summary-json",
            summary_path.to_str().unwrap(),
        ],
    );
    // Every replica's console answers at the address the demo prints.
    demo.wait_for_line(
        "console (every replica serves it):",
        Duration::from_secs(120),
    )
    .await;
    let printed = demo.output();
    let line = printed
        .lines()
        .find(|l| l.contains("console (every replica serves it):"))
        .unwrap_or_default()
        .to_string();
    let consoles: Vec<&str> = line
        .split_whitespace()
        .filter(|w| w.starts_with("http://127.0.0.1:"))
        .map(|w| w.trim_end_matches([',', ';']))
        .collect();
    assert_eq!(consoles.len(), 2, "two consoles in {line:?}");
    for console in consoles {
        let metrics = reqwest::get(format!("{console}/metrics"))
            .await
            .unwrap_or_else(|e| panic!("{console}/metrics: {e}"));
        assert_eq!(metrics.status(), 200, "{console}/metrics");
        let text = metrics.text().await.unwrap_or_default();
        assert!(text.contains("rollgate_"), "{console}/metrics:\n{text}");
    }

    let status = demo.wait(Duration::from_secs(280)).await;
    let output = demo.output();
    assert!(status.success(), "the demo failed: {status}\n{output}");

    // Plain output (no terminal): no escape codes, one line per step.
    assert!(!output.contains('\u{1b}'), "escape codes in\n{output}");
    for line in [
        "seed 8 (repeat this run with --seed 8)",
        "Consul ACLs on (default deny)",
        "agent, ci, coordinator, operator, watcher",
        "== Story 1",
        "== Story 2",
        "== Story 3",
        "killed the leading coordinator",
        "== Summary",
        "timeline chart:",
        "Every expectation held.",
    ] {
        assert!(output.contains(line), "no {line:?} in\n{output}");
    }

    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(&summary_path).unwrap()).unwrap();
    assert_eq!(summary["ok"], true, "{summary:#}");
    assert_eq!(summary["seed"], 8);
    assert_eq!(summary["problems"].as_array().map(Vec::len), Some(0));
    let rollouts = summary["rollouts"].as_array().unwrap();
    let outcomes: Vec<(&str, &str)> = rollouts
        .iter()
        .map(|r| {
            (
                r["version"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("1.1.0", "succeeded"),
            ("1.2.0", "reverted"),
            ("1.3.0", "succeeded")
        ],
        "{summary:#}"
    );
    assert!(
        !rollouts[1]["reason"].as_str().unwrap().is_empty(),
        "the revert has a reason: {summary:#}"
    );
    let killed = rollouts[2]["leader_killed"].as_str().unwrap();
    let finisher = rollouts[2]["leader_at_end"].as_str().unwrap();
    assert_ne!(killed, finisher, "{summary:#}");
    assert!(["demo-a", "demo-b"].contains(&killed) && ["demo-a", "demo-b"].contains(&finisher));

    let requests = &summary["requests"];
    assert_eq!(requests["failed"], 0, "{summary:#}");
    assert!(requests["ok"].as_u64().unwrap() > 100, "{summary:#}");
    assert_eq!(requests["sent"], requests["ok"]);

    let alerts = &summary["alerts"];
    assert_eq!(alerts["revert_on_slack"], true, "{summary:#}");
    assert_eq!(alerts["revert_on_email"], true, "{summary:#}");
    assert!(alerts["slack"].as_u64().unwrap() >= 1);
    assert!(alerts["email"].as_u64().unwrap() >= 1);

    let fleet = &summary["fleet"];
    for key in ["in_group", "running", "on_final_version", "passing"] {
        assert_eq!(fleet[key], 4, "{key}: {summary:#}");
    }
    assert_eq!(fleet["final_version"], "1.3.0");
    assert_eq!(fleet["group_matches_fleet"], true);
    // 4 at the start, 4 per successful rollout, at least one broken batch.
    let started = fleet["started"].as_u64().unwrap();
    assert!(started >= 4 + 4 + 4 + 2, "{summary:#}");
    assert_eq!(started, fleet["stopped"].as_u64().unwrap() + 4);

    // The chart: written where the summary says, valid SVG with the story.
    let chart = summary["chart"].as_str().unwrap();
    assert_eq!(Path::new(chart), work.join("timeline.svg"));
    let svg = std::fs::read_to_string(chart).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    for text in [
        "old image",
        "new image",
        "passing in Consul",
        "failed requests/s",
        "1.1.0 succeeded",
        "1.2.0 reverted",
        "1.3.0 succeeded",
        "killed",
        "took over",
    ] {
        assert!(svg.contains(text), "the chart has no {text:?}");
    }
    assert_eq!(svg.matches("<svg").count(), 1);
    assert_eq!(
        svg.matches("<text").count(),
        svg.matches("</text>").count(),
        "unbalanced text elements"
    );

    // ACLs: every process had the token of its role, no call was denied,
    // and no token shows anywhere.
    let tokens: Vec<String> = ["agent", "ci", "coordinator", "operator", "watcher"]
        .iter()
        .map(|role| {
            let path = work.join("tokens").join(format!("{role}.token"));
            std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .trim()
                .to_owned()
        })
        .collect();
    assert!(tokens.iter().all(|t| t.len() == 36), "SecretIDs are UUIDs");
    for (config, role) in [
        ("a", "coordinator"),
        ("b", "coordinator"),
        ("ci", "ci"),
        ("operator", "operator"),
    ] {
        let text = std::fs::read_to_string(work.join(format!("{config}.toml"))).unwrap();
        assert!(
            text.contains(&format!("tokens/{role}.token")),
            "{config}.toml: {text}"
        );
    }
    let mut texts = vec![("the demo's output".to_owned(), output.clone())];
    texts.push((
        "summary.json".into(),
        std::fs::read_to_string(&summary_path).unwrap(),
    ));
    for replica in ["a", "b"] {
        let log = std::fs::read_to_string(work.join(format!("coordinator-{replica}.log"))).unwrap();
        for denied in ["lacks permission", "ACL not found", "Filtered-By-ACLs"] {
            assert!(
                !log.contains(denied),
                "coordinator {replica} was denied ({denied}):\n{log}"
            );
        }
        texts.push((format!("coordinator-{replica}.log"), log));
    }
    for (what, text) in &texts {
        for token in &tokens {
            assert!(!text.contains(token.as_str()), "a token in {what}");
        }
    }

    // Nothing left running, and the lock is gone.
    let left = gone(demo.leftovers(), Duration::from_secs(5)).await;
    assert!(left.is_empty(), "processes left running: {left:?}");
    assert!(!work.join(sandbox::demo::LOCK_FILE).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_demo_is_refused_and_sigint_stops_everything() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let mut first = Demo::start(&work, &["--instances", "1", "--batch", "1"]);
    first
        .wait_for_line("two rollgate coordinator replicas", Duration::from_secs(90))
        .await;
    assert!(work.join(sandbox::demo::LOCK_FILE).exists());

    let mut second = Demo::start(&work, &["--instances", "1"]);
    let status = second.wait(Duration::from_secs(30)).await;
    let output = second.output();
    assert!(!status.success(), "{output}");
    assert!(
        output.contains("another sandbox demo is running")
            && output.contains(&format!("process {}", first.pid))
            && output.contains("--work-dir"),
        "{output}"
    );

    let running = first.leftovers();
    assert!(
        running.len() >= 4,
        "moto, web, agent and two coordinators run below the demo: {running:?}"
    );
    first.signal("INT");
    let status = first.wait(Duration::from_secs(60)).await;
    let output = first.output();
    assert!(!status.success(), "{output}");
    assert!(output.contains("stopping everything"), "{output}");
    let left = gone(first.leftovers(), Duration::from_secs(5)).await;
    assert!(
        left.is_empty(),
        "processes left running: {left:?}\n{output}"
    );
    assert!(!work.join(sandbox::demo::LOCK_FILE).exists());
}
