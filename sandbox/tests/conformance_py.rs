//! Runs the Consul conformance suite of `sandbox/conformance/` (pytest and
//! py-consul, a Consul client nobody here wrote) against the `sandbox`
//! binary of this build, and fails when pytest fails. Missing Python,
//! pytest or py-consul is a failure with the command that installs them,
//! never a skip: `sandbox/scripts/prerequisites` installs both.

use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The whole suite takes well under a minute; this only stops a hang.
const SUITE_TIMEOUT: Duration = Duration::from_secs(600);

fn python() -> String {
    std::env::var("SANDBOX_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance")
}

/// Fails with what to run when the interpreter or a package is missing.
fn require_packages(python: &str) {
    let probe = Command::new(python)
        .args(["-c", "import pytest, consul.api.txn"])
        .stdin(Stdio::null())
        .output();
    let hint = format!(
        "install them with `bash sandbox/scripts/prerequisites --tests` or `{python} -m pip install -r {}`",
        suite_dir().join("requirements.txt").display()
    );
    match probe {
        Err(e) => panic!("the conformance suite needs Python 3 ({python}: {e}); {hint}"),
        Ok(out) if !out.status.success() => panic!(
            "the conformance suite needs pytest and py-consul: {}; {hint}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Ok(_) => {}
    }
}

/// Waits for `child` up to `limit`; kills it past that.
fn wait_with_timeout(child: &mut std::process::Child, limit: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if started.elapsed() < limit => std::thread::sleep(Duration::from_millis(200)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

#[test]
fn conformance_suite_passes_against_the_sandbox() {
    let python = python();
    require_packages(&python);

    let dir = suite_dir();
    let work = tempfile::tempdir().expect("a temporary directory for pytest");
    let log_path = work.path().join("pytest.log");
    let log = File::create(&log_path).expect("the pytest log file");
    let log_err = log.try_clone().expect("the pytest log file, again");

    let mut child = Command::new(&python)
        .args(["-m", "pytest", "--basetemp"])
        .arg(work.path().join("basetemp"))
        .arg(&dir)
        .current_dir(&dir)
        .env("SANDBOX_BIN", env!("CARGO_BIN_EXE_sandbox"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {python} -m pytest: {e}"));
    let status = wait_with_timeout(&mut child, SUITE_TIMEOUT);

    let mut output = String::new();
    File::open(&log_path)
        .and_then(|mut f| f.read_to_string(&mut output))
        .expect("reading the pytest log");
    println!("{output}");

    match status {
        None => {
            panic!("the conformance suite did not finish within {SUITE_TIMEOUT:?}; output above")
        }
        Some(status) if status.success() => {}
        // 5: pytest collected no test, which must not pass as success.
        Some(status) => panic!(
            "the conformance suite failed ({status}); pytest's output is above. \
             Re-run it alone with: SANDBOX_BIN={} {python} -m pytest {}",
            env!("CARGO_BIN_EXE_sandbox"),
            dir.display()
        ),
    }
}
