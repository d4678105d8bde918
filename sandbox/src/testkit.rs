//! Helpers for tests that run real processes: find a workspace binary (building
//! it when it is missing), and pick free loopback ports.
//!
//! Integration tests of one package can only name their own binaries with
//! `CARGO_BIN_EXE_*`; the sandbox world also needs the binaries of the other
//! packages (`web`, `rollgate`, `sandbox`). They all land in the one workspace
//! target directory, next to the test executable's `deps/` folder.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Serialises `cargo build` calls made from tests running in parallel.
static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// The directory the running test executable's profile builds into
/// (`target/debug` for `target/debug/deps/foo-1234`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of the workspace binary `name` (from package `package`), building it
/// with the same cargo and profile when it is not there yet.
///
/// A freshly built binary is always used when `cargo test --workspace` ran,
/// because cargo builds every member's binaries before running tests; the
/// build here is the fallback for `cargo test -p one-package`.
pub fn binary(package: &str, name: &str) -> PathBuf {
    let path = profile_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", package, "--bin", name]);
        if profile_dir().ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cargo can be run");
        assert!(
            status.success(),
            "cargo build -p {package} --bin {name} failed"
        );
    }
    path
}

/// A loopback address with a port that was free a moment ago.
///
/// Prefer binding port 0 in the server itself; this is for processes that
/// must be told their port on the command line.
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr")
}

/// Polls `check` every 50 ms until it answers `Some`, and answers that;
/// panics naming `what` when `limit` passes first. For tests that wait on
/// real processes, where no event can be awaited directly.
pub async fn until<T, F, Fut>(what: &str, limit: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A child process whose stderr is collected as it runs, killed on drop.
#[derive(Debug)]
pub struct LoggedChild {
    /// The process.
    pub child: tokio::process::Child,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl LoggedChild {
    /// Spawns `cmd` with stdout discarded unless the caller piped it, and
    /// stderr collected.
    pub fn spawn(mut cmd: tokio::process::Command) -> std::io::Result<Self> {
        use tokio::io::AsyncBufReadExt as _;
        cmd.stderr(std::process::Stdio::piped()).kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let reader = child.stderr.take().map(|stderr| {
            let log = log.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(mut log) = log.lock() {
                        log.push_str(&line);
                        log.push('\n');
                    }
                }
            })
        });
        Ok(Self { child, log, reader })
    }

    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits for it to exit (at most `limit`) and for its stderr to be read
    /// to the end.
    pub async fn wait(&mut self, limit: std::time::Duration) -> std::process::ExitStatus {
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .expect("the process exits in time")
            .expect("waiting for the process");
        if let Some(reader) = self.reader.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), reader).await;
        }
        status
    }
}

/// Process `pid` exists and has not exited (a zombie counts as gone), from
/// `/proc/<pid>/stat`.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}
