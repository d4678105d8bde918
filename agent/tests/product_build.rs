//! The product build carries no test fakes: the `test-util` feature of
//! `rollgate` (in-memory `MemoryFleet` and `MemoryRegistry`, the emulator
//! SDK settings with their dummy credentials) is enabled only for this
//! crate's tests, never for `cargo build -p rollgate -p web` as images/ and
//! the release workflow run it, nor with `-p sandbox` as the demo does.
//!
//! Cargo's own feature resolution decides, so this asks cargo: `cargo tree`
//! with normal and build edges only resolves features the way a build
//! without tests does (resolver 3: dev-dependencies' features are not
//! unified into it). Offline and for the host platform only, like
//! `tests/iam_policy.rs`: the build has fetched exactly those packages.

mod source_support;

use source_support::host_triple;
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("agent/ has a parent")
        .to_path_buf()
}

/// The features of `rollgate` that `cargo tree` resolves when building
/// `packages` along `edges`, one `rollgate feature "f"` line each. Inverted
/// on `rollgate`, the tree lists every feature node that leads to it,
/// whether a dependency, a default or the command line turns it on.
fn resolved_features(packages: &[&str], edges: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.args(["tree", "--offline", "--prefix", "none", "--edges", edges])
        .args(["--invert", "rollgate"])
        .arg("--target")
        .arg(host_triple())
        .arg("--manifest-path")
        .arg(workspace().join("Cargo.toml"));
    for p in packages {
        cmd.args(["--package", p]);
    }
    let output = cmd.output().expect("run cargo tree");
    assert!(
        output.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.contains(" feature \""))
        .map(str::to_owned)
        .collect()
}

fn enables_test_util(lines: &[String]) -> bool {
    lines
        .iter()
        .any(|l| l.starts_with("rollgate feature \"test-util\""))
}

#[test]
fn the_product_build_leaves_test_util_off() {
    // Alone; as images/ and the release workflow build it; as the demo and
    // the benchmarks build it.
    for packages in [
        &["rollgate"][..],
        &["rollgate", "web"],
        &["rollgate", "web", "sandbox"],
    ] {
        let lines = resolved_features(packages, "normal,build,features");
        assert!(
            !enables_test_util(&lines),
            "a build of {packages:?} enables rollgate's `test-util` feature: a normal \
             dependency turns it on. Only [dev-dependencies] may. Resolved features:\n{}",
            lines.join("\n")
        );
    }
}

#[test]
fn the_tests_build_turns_test_util_on() {
    // The control: the same question with dev edges finds the feature, so
    // the check above can see it when it is there (and the integration tests
    // that need the fakes get them).
    let lines = resolved_features(&["rollgate"], "normal,build,dev,features");
    assert!(
        enables_test_util(&lines),
        "rollgate's tests do not enable `test-util`; agent/Cargo.toml's \
         [dev-dependencies] must list rollgate itself with it. Resolved features:\n{}",
        lines.join("\n")
    );
}
