//! The coordinator's IAM policy allows exactly the EC2 and Auto Scaling
//! operations rollgate calls.
//!
//! Declared: the HCL lists `coordinator_ec2_actions` and
//! `coordinator_autoscaling_actions` in a `locals` block of `infra/iam.tf`
//! (plain string literals such as `"ec2:DescribeImages"`).
//!
//! Derived: every method call on a receiver named `ec2` or `autoscaling` in
//! `agent/src/**/*.rs` (comments and string literals ignored) whose name is
//! an operation of the SDK crate, checked against the crate's own source:
//! `src/operation/<name>.rs` exists and declares the API name, e.g.
//! `Metadata::new("DescribeImages", "EC2")`. A method that is no operation
//! (`clone`, `config`) is not counted.
//!
//! The conditions too: the statements that let the coordinator launch and
//! tag images must name the tag the code publishes images under
//! (`aws::registry::ARTIFACT_TAG`), and every tag key the code writes must
//! fall under the policy's `rollgate:*` tag-key condition. `terraform test`
//! (infra/tests/stack.tftest.hcl) evaluates the same policy with mock
//! providers and asserts every condition value.

mod source_support;

use source_support::{code_only, host_triple};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("agent/ has a parent")
        .to_path_buf()
}

/// The string literals of `name = [ ... ]` in the HCL text.
fn hcl_list(text: &str, name: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(name) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + name.len()..].trim_start();
        rest = &rest[at + name.len()..];
        let boundary = before.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '.'));
        let Some(list) = after
            .strip_prefix('=')
            .map(str::trim_start)
            .and_then(|a| a.strip_prefix('['))
        else {
            continue;
        };
        if !boundary {
            continue;
        }
        let end = list
            .find(']')
            .unwrap_or_else(|| panic!("infra/iam.tf: {name} = [ is never closed"));
        let body: String = list[..end]
            .lines()
            .map(|l| l.split('#').next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n");
        let items: Vec<String> = body
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                item.strip_prefix('"')
                    .and_then(|i| i.strip_suffix('"'))
                    .unwrap_or_else(|| {
                        panic!("infra/iam.tf: {name} holds {item:?}, not a plain string literal")
                    })
                    .to_owned()
            })
            .collect();
        found.push(items);
    }
    assert_eq!(
        found.len(),
        1,
        "infra/iam.tf must define `{name} = [...]` exactly once (in a locals block)"
    );
    found.remove(0)
}

/// (receiver, method, file) for every `ec2 . method (` / `autoscaling . method (`.
fn receiver_calls(code: &str, file: &Path, calls: &mut Vec<(String, String, PathBuf)>) {
    let bytes = code.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    for receiver in ["ec2", "autoscaling"] {
        let mut from = 0;
        while let Some(pos) = code[from..].find(receiver).map(|p| p + from) {
            from = pos + receiver.len();
            if pos > 0 && ident(bytes[pos - 1]) || bytes.get(from).copied().is_some_and(ident) {
                continue;
            }
            let rest = code[from..].trim_start();
            let Some(rest) = rest.strip_prefix('.') else {
                continue;
            };
            let rest = rest.trim_start();
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && rest[name.len()..].trim_start().starts_with('(') {
                calls.push((receiver.to_owned(), name, file.to_path_buf()));
            }
        }
    }
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The source directory of each SDK crate the build uses, from `cargo
/// metadata` for this platform only (offline: the build has fetched exactly
/// those packages; other platforms' dependencies are never downloaded).
fn sdk_sources() -> BTreeMap<String, PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline"])
        .arg("--filter-platform")
        .arg(host_triple())
        .arg("--manifest-path")
        .arg(workspace().join("Cargo.toml"))
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata JSON");
    let mut dirs = BTreeMap::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().unwrap_or_default();
        let receiver = match name {
            "aws-sdk-ec2" => "ec2",
            "aws-sdk-autoscaling" => "autoscaling",
            _ => continue,
        };
        let manifest = PathBuf::from(package["manifest_path"].as_str().expect("manifest_path"));
        dirs.insert(
            receiver.to_owned(),
            manifest.parent().expect("crate dir").join("src"),
        );
    }
    assert_eq!(dirs.len(), 2, "both SDK crates are dependencies: {dirs:?}");
    dirs
}

/// The API name of `method` if it is an operation of the crate at `src`.
fn operation_name(src: &Path, method: &str) -> Option<String> {
    let text = std::fs::read_to_string(src.join("operation").join(format!("{method}.rs"))).ok()?;
    let after = &text[text.find("Metadata::new(")? + "Metadata::new(".len()..];
    let quoted = after.trim_start().strip_prefix('"')?;
    Some(quoted[..quoted.find('"')?].to_owned())
}

#[test]
fn coordinator_policy_matches_the_calls_the_code_makes() {
    let iam_path = workspace().join("infra").join("iam.tf");
    let iam = std::fs::read_to_string(&iam_path).unwrap_or_else(|e| {
        panic!(
            "{} must exist with a locals block defining coordinator_ec2_actions and \
             coordinator_autoscaling_actions: {e}",
            iam_path.display()
        )
    });
    let ec2_declared = hcl_list(&iam, "coordinator_ec2_actions");
    let autoscaling_declared = hcl_list(&iam, "coordinator_autoscaling_actions");
    for (list, prefix) in [
        (&ec2_declared, "ec2:"),
        (&autoscaling_declared, "autoscaling:"),
    ] {
        for action in list {
            assert!(
                action.starts_with(prefix),
                "infra/iam.tf: {action} is in the {prefix} list"
            );
        }
    }
    let declared: BTreeSet<String> = ec2_declared
        .into_iter()
        .chain(autoscaling_declared)
        .collect();

    let sources = sdk_sources();
    let mut files = Vec::new();
    rust_files(&workspace().join("agent").join("src"), &mut files);
    let mut calls = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read source");
        receiver_calls(&code_only(&text), file, &mut calls);
    }
    let mut derived: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (receiver, method, file) in calls {
        if let Some(api) = operation_name(&sources[&receiver], &method) {
            let relative = file
                .strip_prefix(workspace())
                .unwrap_or(&file)
                .display()
                .to_string();
            derived
                .entry(format!("{receiver}:{api}"))
                .or_default()
                .insert(relative);
        }
    }
    assert!(
        derived.contains_key("ec2:DescribeImages")
            && derived.contains_key("autoscaling:DescribeAutoScalingGroups"),
        "the scan of agent/src found too little to be right: {derived:?}"
    );

    let missing: Vec<String> = derived
        .iter()
        .filter(|(action, _)| !declared.contains(*action))
        .map(|(action, files)| {
            format!(
                "{action} (called in {})",
                files.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    let extra: Vec<&String> = declared
        .iter()
        .filter(|a| !derived.contains_key(*a))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "infra/iam.tf and the code disagree.\n  missing from the policy: {missing:?}\n  \
         allowed but never called: {extra:?}\n  the code calls: {:?}",
        derived.keys().collect::<Vec<_>>()
    );
}

#[test]
fn the_scanner_ignores_comments_strings_and_non_operations() {
    let code = code_only(concat!(
        "// self.ec2.run_instances()\nlet s = \"ec2.terminate_instances()\";\n",
        "let q = '\"'; let r = r#\"ec2.delete_vpc() \" \"#; fn f<'a>(x: &'a str) {}\n",
        "/* ec2.stop_instances() */ self.ec2\n    .describe_images()\n; aws_sdk_ec2.create_vpc(); ",
        "self.autoscaling.clone(); let e = '\\''; ec2.create_tags();",
    ));
    let mut calls = Vec::new();
    receiver_calls(&code, Path::new("x.rs"), &mut calls);
    let names: Vec<(&str, &str)> = calls
        .iter()
        .map(|(r, m, _)| (r.as_str(), m.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("ec2", "describe_images"),
            ("ec2", "create_tags"),
            ("autoscaling", "clone")
        ]
    );
    let sources = sdk_sources();
    assert_eq!(
        operation_name(&sources["ec2"], "describe_images").as_deref(),
        Some("DescribeImages")
    );
    assert_eq!(operation_name(&sources["autoscaling"], "clone"), None);

    let hcl = "locals {\n  a_actions = [\n    \"ec2:A\", # why\n    \"ec2:B\",\n  ]\n  b = [for x in local.a_actions : x]\n}";
    assert_eq!(hcl_list(hcl, "a_actions"), ["ec2:A", "ec2:B"]);
}

/// The value of `pub const NAME: &str = "...";` in a Rust source file.
fn rust_str_const(text: &str, name: &str) -> String {
    let decl = format!("pub const {name}: &str = \"");
    let at = text
        .find(&decl)
        .unwrap_or_else(|| panic!("no `{decl}...\";` in the source"));
    let rest = &text[at + decl.len()..];
    rest[..rest.find('"').expect("the string literal is closed")].to_owned()
}

/// The text of each statement of `infra/iam.tf`, by `Sid` (the statements
/// are HCL objects inside `jsonencode`): from the `Sid =` line to the brace
/// that closes its object, the first `}` indented less than the `Sid` line.
/// A `Sid` used by several policies keeps its last statement.
fn iam_statements(iam: &str) -> BTreeMap<String, String> {
    let indent = |line: &str| line.len() - line.trim_start().len();
    let lines: Vec<&str> = iam.lines().collect();
    let mut statements = BTreeMap::new();
    for (at, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let Some(rest) = trimmed.strip_prefix("Sid") else {
            continue;
        };
        if !rest.trim_start().starts_with('=') {
            continue;
        }
        let Some(sid) = rest.split('"').nth(1) else {
            continue;
        };
        let body: Vec<&str> = lines[at..]
            .iter()
            .take_while(|l| !(l.trim_start().starts_with('}') && indent(l) < indent(line)))
            .copied()
            .collect();
        statements.insert(sid.to_owned(), body.join("\n"));
    }
    statements
}

#[test]
fn launch_and_tag_conditions_use_the_tags_the_code_writes() {
    let root = workspace();
    let iam =
        std::fs::read_to_string(root.join("infra").join("iam.tf")).expect("read infra/iam.tf");
    let registry = std::fs::read_to_string(root.join("agent/src/aws/registry.rs"))
        .expect("read agent/src/aws/registry.rs");
    let artifact_tag = rust_str_const(&registry, "ARTIFACT_TAG");
    let version_tag = rust_str_const(&registry, "VERSION_TAG");
    let statements = iam_statements(&iam);

    let run: Vec<(&String, &String)> = statements
        .iter()
        .filter(|(_, text)| text.contains("\"ec2:RunInstances\""))
        .collect();
    assert!(
        run.len() >= 4,
        "infra/iam.tf: ec2:RunInstances must be split per resource kind (template, image, subnets, \
         security groups, created resources), found {:?}",
        run.iter().map(|(sid, _)| sid).collect::<Vec<_>>()
    );
    for (sid, text) in &run {
        assert!(
            text.contains("local.from_web_template"),
            "infra/iam.tf: statement {sid} allows ec2:RunInstances without requiring the web launch \
             template (local.from_web_template)"
        );
        let open = text
            .lines()
            .any(|l| l.trim().starts_with("Resource") && l.trim().ends_with("\"*\""));
        assert!(
            !open,
            "infra/iam.tf: statement {sid} allows ec2:RunInstances on \"*\""
        );
    }

    let wanted = format!("\"ec2:ResourceTag/{artifact_tag}\"");
    for sid in ["RunArtifactImages", "TagArtifactImages"] {
        let text = statements
            .get(sid)
            .unwrap_or_else(|| panic!("infra/iam.tf has no statement {sid}"));
        assert!(
            text.contains(&wanted),
            "infra/iam.tf: statement {sid} must select images by {wanted}, the tag the registry \
             publishes them under (agent/src/aws/registry.rs ARTIFACT_TAG)"
        );
    }
    assert!(
        statements["RunArtifactImages"].contains("\"ec2:Owner\""),
        "infra/iam.tf: RunArtifactImages must pin the image owner to this account (no public AMIs)"
    );

    // The image tagging statement allows only keys under rollgate:.
    assert!(
        statements["TagArtifactImages"].contains("\"aws:TagKeys\" = [\"rollgate:*\"]"),
        "infra/iam.tf: TagArtifactImages must limit tag keys to rollgate:*"
    );
    for tag in [&artifact_tag, &version_tag] {
        assert!(
            tag.starts_with("rollgate:"),
            "the registry writes tag {tag}, which the rollgate:* tag-key condition of \
             TagArtifactImages does not allow"
        );
    }
}

#[test]
fn the_statement_splitter_finds_each_statement() {
    let iam = "x = [\n  {\n    Sid = \"A\"\n    Resource = \"*\"\n    Condition = {\n      X = 1\n    }\n  },\n  # \"ec2:RunInstances\" in a comment\n  {\n    Sid    = \"B\"\n    Action = \"ec2:RunInstances\"\n  },\n]";
    let statements = iam_statements(iam);
    assert_eq!(statements.keys().collect::<Vec<_>>(), ["A", "B"]);
    assert!(statements["A"].contains("Resource") && statements["A"].contains("X = 1"));
    assert!(!statements["A"].contains("RunInstances"));
    assert!(statements["B"].contains("RunInstances"));
    assert_eq!(
        rust_str_const("pub const T: &str = \"rollgate:x\";", "T"),
        "rollgate:x"
    );
}
