//! One owner per launch-template field (infra/README.md, "Ownership after
//! creation"), checked from the coordinator's side against the Terraform
//! that relies on it:
//!
//! - Terraform owns the template's default version: no code of rollgate
//!   calls `ModifyLaunchTemplate`, and the coordinator's IAM does not allow
//!   it;
//! - Terraform refuses an apply while a rollout runs by looking for the
//!   processes a rollout suspends: its list (`infra/web.tf`,
//!   `local.rollout_suspended_processes`) is the machine's
//!   `SUSPENDED_PROCESSES`, in the same order.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use rollgate_core::machine::SUSPENDED_PROCESSES;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(relative: &str) -> String {
    let path = workspace().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The string items of the HCL list assigned to `name` (one line or
/// several; comments and blank lines skipped).
fn hcl_string_list(text: &str, name: &str) -> Vec<String> {
    let start = text
        .lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(name)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .unwrap_or_else(|| panic!("{name} = [...] not found"));
    let mut list = String::new();
    for line in text.lines().skip(start) {
        let code = line.split('#').next().unwrap_or_default();
        list.push_str(code);
        if code.contains(']') {
            break;
        }
    }
    let inner = list
        .split_once('[')
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(inner, _)| inner)
        .unwrap_or_else(|| panic!("{name} is not a one-level list: {list}"));
    inner
        .split(',')
        .map(|item| item.trim().trim_matches('"').to_owned())
        .filter(|item| !item.is_empty())
        .collect()
}

#[test]
fn terraform_looks_for_the_processes_a_rollout_suspends() {
    let web = read("infra/web.tf");
    let listed = hcl_string_list(&web, "rollout_suspended_processes");
    assert_eq!(
        listed, SUSPENDED_PROCESSES,
        "infra/web.tf local.rollout_suspended_processes must list \
         core/src/machine/action.rs SUSPENDED_PROCESSES: Terraform refuses an apply \
         while they are suspended, which is how it sees a rollout"
    );
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn rollgate_never_changes_a_templates_default_version() {
    let mut files = Vec::new();
    rust_files(&workspace().join("agent/src"), &mut files);
    assert!(!files.is_empty());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            assert!(
                !code.contains("modify_launch_template"),
                "{}:{}: the template's default version is Terraform's; \
                 rollgate only creates versions and pins groups to them",
                file.display(),
                n + 1
            );
        }
    }
    let iam = read("infra/iam.tf");
    let allowed = hcl_string_list(&iam, "coordinator_ec2_actions");
    assert!(
        allowed
            .iter()
            .any(|a| a == "ec2:CreateLaunchTemplateVersion"),
        "{allowed:?}"
    );
    assert!(
        !allowed.iter().any(|a| a == "ec2:ModifyLaunchTemplate"),
        "the coordinator must not be allowed to move the default version: {allowed:?}"
    );
}

#[test]
fn the_list_reader_reads_one_and_several_lines() {
    let text =
        "locals {\n  a_b = [\"x\", \"y\"] # two\n  c = [\n    \"p\", # first\n    \"q\",\n  ]\n}\n";
    assert_eq!(hcl_string_list(text, "a_b"), ["x", "y"]);
    assert_eq!(hcl_string_list(text, "c"), ["p", "q"]);
}
