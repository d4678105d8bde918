//! The image workflow (`.github/workflows/image.yml`) uses only what exists,
//! and its AWS role (`infra/github_ci.tf`) grants what the workflow's steps
//! call and no more.
//!
//! What the workflow uses, read from the workflow and the scripts its `run:`
//! steps call (`.github/scripts/*.sh`):
//!
//! - every script and repository path exists, every `on.push.paths` folder
//!   too, and the binaries are built where `images/web.pkr.hcl` reads them;
//! - every `rollgate` invocation parses: the real binary is run with the
//!   same subcommand and flags plus `--help` (clap refuses an unknown
//!   subcommand or flag before it prints help), and every flag is in that
//!   help;
//! - every `-var NAME=` given to Packer is a variable of the template;
//! - actions are pinned to a major version or a commit, `permissions:` are
//!   least privilege, secrets reach `run:` steps only through `env:`.
//!
//! What the role may call, two lists in a delimited block of
//! `infra/github_ci.tf`, against:
//!
//! - Packer: the EC2 calls the amazon-ebs builder makes for the settings the
//!   template's source block uses (a table below, one entry per setting, with
//!   why); a setting the table does not know fails the test, so a template
//!   change cannot silently need (or stop needing) a permission;
//! - `rollgate publish`: the EC2 operations in the bodies of the SDK registry
//!   methods that `ops::publish` calls, followed through `self.` calls.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("agent/ has a parent")
        .to_path_buf()
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(workspace().join(relative))
        .unwrap_or_else(|e| panic!("read {relative}: {e}"))
}

const WORKFLOW: &str = ".github/workflows/image.yml";

// ---------------------------------------------------------------------------
// The workflow, line by line (its layout is plain block YAML)
// ---------------------------------------------------------------------------

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// `key: value` of a YAML line, a leading `- ` allowed.
fn yaml_key_value(line: &str) -> Option<(&str, &str)> {
    let text = line.trim_start();
    let text = text.strip_prefix("- ").unwrap_or(text);
    let (key, value) = text.split_once(':')?;
    if key.is_empty()
        || !key
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
    {
        return None;
    }
    Some((key, value.trim()))
}

/// The script of every `run:` step: (line number, script).
fn run_blocks(yaml: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(("run", value)) = yaml_key_value(lines[i]) else {
            i += 1;
            continue;
        };
        let start = i + 1;
        if value.starts_with('|') || value.starts_with('>') {
            let key_indent = indent(lines[i]);
            let mut script = Vec::new();
            i += 1;
            while i < lines.len() && (lines[i].trim().is_empty() || indent(lines[i]) > key_indent) {
                script.push(lines[i].trim_start());
                i += 1;
            }
            blocks.push((start, script.join("\n")));
        } else {
            blocks.push((start, value.to_owned()));
            i += 1;
        }
    }
    blocks
}

/// Every `name: value` below a `permissions:` key, per block.
fn permission_blocks(yaml: &str) -> Vec<(usize, BTreeMap<String, String>)> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut blocks = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(("permissions", value)) = yaml_key_value(line) else {
            continue;
        };
        let mut entries = BTreeMap::new();
        if !value.is_empty() {
            entries.insert("*".to_owned(), value.to_owned());
        }
        for next in &lines[i + 1..] {
            if next.trim().is_empty() || indent(next) <= indent(line) {
                break;
            }
            let (k, v) = yaml_key_value(next).expect("permissions hold key: value lines");
            entries.insert(k.to_owned(), v.to_owned());
        }
        blocks.push((i + 1, entries));
    }
    blocks
}

// ---------------------------------------------------------------------------
// Shell: just enough to find commands and their words
// ---------------------------------------------------------------------------

/// A word of a command line, and whether any part of it was quoted.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word { text: String, quoted: bool },
    Operator(char),
}

/// Splits a script into words and operators (`| ; & ( ) < >`), with
/// comments dropped, `\` line continuations joined, and the number before a
/// redirection (`2>`) dropped.
fn shell_tokens(script: &str) -> Vec<Token> {
    let chars: Vec<char> = script.replace("\\\n", " ").chars().collect();
    let mut tokens = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut in_word = false;
    let mut i = 0;
    let flush =
        |tokens: &mut Vec<Token>, word: &mut String, quoted: &mut bool, in_word: &mut bool| {
            if *in_word {
                tokens.push(Token::Word {
                    text: std::mem::take(word),
                    quoted: *quoted,
                });
            }
            *quoted = false;
            *in_word = false;
        };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '#' if !in_word => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                tokens.push(Token::Operator(';'));
                continue;
            }
            '\'' => {
                in_word = true;
                quoted = true;
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    word.push(chars[i]);
                    i += 1;
                }
            }
            '"' => {
                in_word = true;
                quoted = true;
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        i += 1;
                    }
                    word.push(chars[i]);
                    i += 1;
                }
            }
            '\n' | ';' | '|' | '&' | '(' | ')' | '<' | '>' => {
                if matches!(c, '<' | '>')
                    && in_word
                    && !quoted
                    && word.chars().all(|d| d.is_ascii_digit())
                {
                    word.clear();
                    in_word = false;
                }
                flush(&mut tokens, &mut word, &mut quoted, &mut in_word);
                tokens.push(Token::Operator(if c == '\n' { ';' } else { c }));
            }
            c if c.is_whitespace() => flush(&mut tokens, &mut word, &mut quoted, &mut in_word),
            c => {
                in_word = true;
                word.push(c);
            }
        }
        i += 1;
    }
    flush(&mut tokens, &mut word, &mut quoted, &mut in_word);
    tokens
}

/// Whether the word at `i` is where a command name stands: first, after an
/// operator, a keyword, a `NAME=value` prefix or `timeout DURATION`.
fn command_position(tokens: &[Token], i: usize) -> bool {
    let unquoted = |j: usize| match &tokens[j] {
        Token::Word {
            text,
            quoted: false,
        } => Some(text.as_str()),
        _ => None,
    };
    if i == 0 || matches!(tokens[i - 1], Token::Operator(_)) {
        return true;
    }
    let keywords = [
        "then", "do", "else", "elif", "if", "while", "until", "!", "exec", "time", "command",
    ];
    match unquoted(i - 1) {
        Some(prev) if keywords.contains(&prev) => true,
        Some(prev)
            if prev.split_once('=').is_some_and(|(n, _)| {
                !n.is_empty() && n.chars().all(|c| c.is_alphanumeric() || c == '_')
            }) =>
        {
            command_position(tokens, i - 1)
        }
        _ => i >= 2 && unquoted(i - 2) == Some("timeout") && command_position(tokens, i - 2),
    }
}

/// The words after every command `name` (an unquoted word in command
/// position), up to the next operator.
fn invocations(tokens: &[Token], name: &str) -> Vec<Vec<Token>> {
    let mut found = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        if matches!(token, Token::Word { text, quoted: false } if text == name)
            && command_position(tokens, i)
        {
            let args = tokens[i + 1..]
                .iter()
                .take_while(|t| matches!(t, Token::Word { .. }))
                .cloned()
                .collect();
            found.push(args);
        }
    }
    found
}

fn text(token: &Token) -> &str {
    match token {
        Token::Word { text, .. } => text,
        Token::Operator(_) => "",
    }
}

/// Every shell text the workflow runs: its `run:` steps and the scripts
/// they call with `bash PATH`, with where each comes from.
fn shell_sources() -> Vec<(String, String)> {
    let yaml = read(WORKFLOW);
    let mut sources = Vec::new();
    let mut scripts = BTreeSet::new();
    for (line, script) in run_blocks(&yaml) {
        for args in invocations(&shell_tokens(&script), "bash") {
            if let Some(path) = args.first() {
                scripts.insert(text(path).to_owned());
            }
        }
        sources.push((format!("{WORKFLOW}:{line}"), script));
    }
    for script in scripts {
        let path = workspace().join(&script);
        assert!(
            path.is_file(),
            "{WORKFLOW} runs `bash {script}`, which does not exist"
        );
        sources.push((script.clone(), read(&script)));
    }
    sources
}

// ---------------------------------------------------------------------------
// What the workflow uses exists
// ---------------------------------------------------------------------------

#[test]
fn every_script_and_path_the_workflow_uses_exists() {
    let yaml = read(WORKFLOW);
    let sources = shell_sources();
    let scripts: Vec<&String> = sources
        .iter()
        .map(|(from, _)| from)
        .filter(|f| f.starts_with(".github/scripts/"))
        .collect();
    assert!(
        scripts.len() >= 4,
        "the workflow should call its scripts with `bash .github/scripts/...`; found {scripts:?}"
    );

    // Every script under .github/scripts is used by the workflow.
    for entry in
        std::fs::read_dir(workspace().join(".github/scripts")).expect("read .github/scripts")
    {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        let path = format!(".github/scripts/{name}");
        assert!(
            scripts.iter().any(|s| **s == path),
            "{path} is never run by {WORKFLOW}"
        );
    }

    // Repository paths named by the workflow and its scripts. Build outputs
    // (target/, Packer's manifest, downloads) are made by the workflow.
    let generated = [
        "images/packer-manifest.json",
        "images/downloads",
        "target/dist",
        "target/dist/rollgate",
        "target/dist/web",
    ];
    let tops = [
        "app/", "agent/", "images/", "puppet/", "sandbox/", "infra/", "config/", ".ci/",
        ".github/", "target/",
    ];
    let mut checked = 0;
    for (from, script) in &sources {
        for token in shell_tokens(script) {
            let t = text(&token);
            if t.contains('$') || !tops.iter().any(|top| t.starts_with(top)) {
                continue;
            }
            checked += 1;
            if generated.contains(&t) {
                continue;
            }
            assert!(
                workspace().join(t).exists(),
                "{from} uses {t}, which does not exist in the repository"
            );
        }
    }
    assert!(
        checked >= 5,
        "found too few repository paths to be right ({checked})"
    );

    // The trigger's folders.
    let mut paths = 0;
    for line in yaml.lines() {
        let item = line.trim();
        if let Some(glob) = item
            .strip_prefix("- \"")
            .and_then(|g| g.strip_suffix("/**\""))
        {
            paths += 1;
            assert!(
                workspace().join(glob).is_dir(),
                "{WORKFLOW}: on.push.paths names {glob}/, which is no folder"
            );
        }
    }
    for folder in ["app", "agent", "images", "puppet"] {
        assert!(
            yaml.contains(&format!("- \"{folder}/**\"")),
            "{WORKFLOW}: a push touching {folder}/ must start the workflow"
        );
    }
    assert!(paths >= 4);
    assert!(
        yaml.contains("\n  workflow_dispatch:"),
        "{WORKFLOW}: runs on demand too"
    );

    // The binaries are built with the profile and at the paths the Packer
    // template reads by default.
    let template = read("images/web.pkr.hcl");
    assert!(
        sources
            .iter()
            .any(|(_, s)| s.contains("cargo build --locked --profile dist -p rollgate -p web")),
        "the workflow builds the release binaries as images/README.md says"
    );
    assert!(
        read("Cargo.toml").contains("[profile.dist]"),
        "Cargo.toml defines the dist profile"
    );
    for binary in ["rollgate", "web"] {
        assert!(
            template.contains(&format!("\"${{path.root}}/../target/dist/{binary}\"")),
            "images/web.pkr.hcl no longer reads target/dist/{binary}: update the workflow"
        );
    }
    assert!(
        template.contains("post-processor \"manifest\"")
            && template.contains("output     = \"packer-manifest.json\""),
        "the template writes packer-manifest.json, which the hand-off reads"
    );
}

#[test]
fn every_rollgate_invocation_parses() {
    let rollgate = env!("CARGO_BIN_EXE_rollgate");
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for (from, script) in shell_sources() {
        for args in invocations(&shell_tokens(&script), "rollgate") {
            // Variables stand for values: any value will do for parsing.
            let words: Vec<String> = args
                .iter()
                .map(|t| {
                    if text(t).contains('$') {
                        "x".to_owned()
                    } else {
                        text(t).to_owned()
                    }
                })
                .collect();
            let sub = words
                .first()
                .unwrap_or_else(|| panic!("{from}: `rollgate` without a subcommand"));
            let out = Command::new(rollgate)
                .args(&words)
                .arg("--help")
                .output()
                .expect("run rollgate");
            let help = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{from}: `rollgate {}` does not parse: {}",
                words.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
            for flag in words.iter().filter(|w| w.starts_with("--")) {
                assert!(
                    help.contains(flag.as_str()),
                    "{from}: `rollgate {sub}` has no {flag} in its help:\n{help}"
                );
                seen.insert(format!("{sub} {flag}"));
            }
            seen.insert(sub.clone());
        }
    }
    for needed in ["publish --manifest", "status --wait", "history --json"] {
        assert!(
            seen.contains(needed),
            "the workflow should use `rollgate {needed}`; found {seen:?}"
        );
    }
}

#[test]
fn every_packer_variable_the_workflow_sets_is_declared() {
    let template = read("images/web.pkr.hcl");
    let mut set = BTreeSet::new();
    for (from, script) in shell_sources() {
        let tokens = shell_tokens(&script);
        for pair in tokens.windows(2) {
            if text(&pair[0]) == "-var" {
                let name = text(&pair[1])
                    .split('=')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                assert!(
                    template.contains(&format!("variable \"{name}\" {{")),
                    "{from} sets -var {name}=..., which images/web.pkr.hcl does not declare"
                );
                set.insert(name);
            }
        }
    }
    for required in ["version", "consul_sha256"] {
        assert!(
            set.contains(required),
            "the build must set {required} (it has no default); set: {set:?}"
        );
    }
}

#[test]
fn actions_are_pinned_permissions_least_and_secrets_never_inline() {
    let yaml = read(WORKFLOW);
    let mut uses = 0;
    for (n, line) in yaml.lines().enumerate() {
        if let Some(("uses", action)) = yaml_key_value(line) {
            uses += 1;
            let (_, reference) = action
                .split_once('@')
                .unwrap_or_else(|| panic!("{WORKFLOW}:{}: {action} names no version", n + 1));
            let major = reference
                .strip_prefix('v')
                .is_some_and(|m| !m.is_empty() && m.chars().all(|c| c.is_ascii_digit()));
            let commit = reference.len() == 40 && reference.chars().all(|c| c.is_ascii_hexdigit());
            assert!(
                major || commit,
                "{WORKFLOW}:{}: {action} must be pinned to a major version (@v4) or a commit",
                n + 1
            );
        }
    }
    assert!(uses >= 5);
    assert!(
        yaml.contains("aws-actions/configure-aws-credentials@"),
        "AWS access goes through OIDC"
    );
    assert!(!yaml.contains("aws-access-key-id"), "no stored AWS keys");

    let blocks = permission_blocks(&yaml);
    assert!(!blocks.is_empty(), "{WORKFLOW} sets permissions");
    let (first_line, top) = &blocks[0];
    assert_eq!(
        top,
        &BTreeMap::from([("contents".to_owned(), "read".to_owned())]),
        "{WORKFLOW}:{first_line}: the workflow-wide permissions are contents: read only"
    );
    for (line, entries) in &blocks {
        for (name, value) in entries {
            let allowed =
                (name == "contents" && value == "read") || (name == "id-token" && value == "write");
            assert!(
                allowed,
                "{WORKFLOW}:{line}: permission {name}: {value} is more than the workflow needs"
            );
        }
    }

    for (line, script) in run_blocks(&yaml) {
        assert!(
            !script.contains("secrets."),
            "{WORKFLOW}:{line}: pass secrets to run: steps through env:, never inline"
        );
    }
    for (from, script) in shell_sources() {
        for args in invocations(&shell_tokens(&script), "echo") {
            for word in args {
                assert!(
                    !text(&word).contains("TOKEN") && !text(&word).contains("CACERT_PEM"),
                    "{from}: a secret is echoed: {}",
                    text(&word)
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The CI role grants what the workflow's steps call, and no more
// ---------------------------------------------------------------------------

/// The string literals of `name = [ ... ]` inside the BEGIN/END block.
fn ci_action_list(block: &str, name: &str) -> BTreeSet<String> {
    let start = block
        .find(&format!("{name} = ["))
        .unwrap_or_else(|| panic!("infra/github_ci.tf: no `{name} = [` between the markers"));
    let body = &block[start + name.len() + 4..];
    let body = &body[..body.find(']').expect("list is closed")];
    let mut actions = BTreeSet::new();
    for item in body.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let action = item
            .strip_prefix('"')
            .and_then(|i| i.strip_suffix('"'))
            .unwrap_or_else(|| {
                panic!("infra/github_ci.tf: {name} holds {item}, not a string literal")
            });
        assert!(
            (action.starts_with("ec2:") || action.starts_with("autoscaling:Describe"))
                && !action.contains('*')
                && !action.contains('?'),
            "infra/github_ci.tf: {action} must be one ec2: action or an Auto Scaling read, no wildcard"
        );
        assert!(
            actions.insert(action.to_owned()),
            "infra/github_ci.tf: {action} is listed twice in {name}"
        );
    }
    actions
}

fn ci_policy_lists() -> (BTreeSet<String>, BTreeSet<String>) {
    let tf = read("infra/github_ci.tf");
    let begin = "===== BEGIN github ci allowed actions";
    let end = "===== END github ci allowed actions";
    assert_eq!(
        tf.matches(begin).count(),
        1,
        "infra/github_ci.tf holds one BEGIN marker"
    );
    let block = &tf[tf.find(begin).expect("begin")
        ..tf.find(end)
            .expect("infra/github_ci.tf holds the END marker")];
    (
        ci_action_list(block, "github_ci_packer_ec2_actions"),
        ci_action_list(block, "github_ci_publish_actions"),
    )
}

/// The EC2 calls of Packer's amazon-ebs builder per setting of the source
/// block (packer-plugin-amazon's steps, named in each reason). Settings with
/// no calls of their own are listed with none.
const PACKER_SETTINGS: &[(&str, &[&str], &str)] = &[
    (
        "region",
        &["DescribeRegions"],
        "StepPreValidate validates the region",
    ),
    ("instance_type", &[], "a parameter of RunInstances"),
    (
        "ami_name",
        &["DescribeImages"],
        "StepPreValidate: no AMI of ours has the name yet",
    ),
    (
        "ami_description",
        &["ModifyImageAttribute"],
        "StepModifyAMIAttributes sets it on the final (copied) image",
    ),
    (
        "imds_support",
        &["ModifyImageAttribute"],
        "StepModifyAMIAttributes: ImdsSupport",
    ),
    (
        "subnet_id",
        &["DescribeSubnets", "DescribeVpcs"],
        "StepNetworkInfo: the subnet's VPC, or the default VPC",
    ),
    (
        "ssh_username",
        &["CreateKeyPair", "DeleteKeyPair"],
        "no ssh_keypair_name: StepKeyPair makes a temporary packer_* key pair",
    ),
    (
        "source_ami_filter",
        &["DescribeImages"],
        "StepSourceAMIInfo finds the newest Canonical image",
    ),
    ("metadata_options", &[], "a parameter of RunInstances"),
    (
        "encrypt_boot",
        &[
            "CopyImage",
            "DeregisterImage",
            "DeleteSnapshot",
            "DescribeImages",
        ],
        "the intermediate image is copied encrypted, then deregistered with its snapshot",
    ),
    (
        "launch_block_device_mappings",
        &["DescribeVolumes"],
        "a parameter of RunInstances; StepCleanupVolumes looks at the volumes",
    ),
    ("tags", &["CreateTags"], "StepCreateTags on the image"),
    (
        "snapshot_tags",
        &["CreateTags", "DescribeImages"],
        "StepCreateTags on the image's snapshots, found through the image",
    ),
    (
        "run_tags",
        &["CreateTags"],
        "tag specifications of RunInstances, CreateSecurityGroup and CreateImage",
    ),
];

/// What every amazon-ebs build does whatever the settings.
const PACKER_ALWAYS: &[(&str, &str)] = &[
    (
        "CreateSecurityGroup",
        "no security_group_id(s): StepSecurityGroup makes a temporary group",
    ),
    (
        "AuthorizeSecurityGroupIngress",
        "opens SSH in the temporary group",
    ),
    ("DescribeSecurityGroups", "waits for the temporary group"),
    ("DeleteSecurityGroup", "removes it at cleanup"),
    ("RunInstances", "StepRunSourceInstance"),
    ("DescribeInstances", "waits for the instance"),
    (
        "StopInstances",
        "StepStopEBSBackedInstance before the image is made",
    ),
    ("TerminateInstances", "cleanup of the source instance"),
    ("CreateImage", "stepCreateAMI"),
];

/// The top-level settings of `source "amazon-ebs" "web" { ... }`.
fn amazon_ebs_settings(template: &str) -> BTreeSet<String> {
    let start = template
        .find("source \"amazon-ebs\"")
        .expect("images/web.pkr.hcl has an amazon-ebs source");
    let mut depth = 0;
    let mut settings = BTreeSet::new();
    for line in template[start..].lines() {
        let trimmed = line.trim();
        if depth == 1 && !trimmed.starts_with('#') {
            let name: String = trimmed
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let rest = trimmed[name.len()..].trim_start();
            if !name.is_empty() && (rest.starts_with('=') || rest.starts_with('{')) {
                settings.insert(name);
            }
        }
        depth += trimmed.matches('{').count();
        depth -= trimmed.matches('}').count();
        if depth == 0 && trimmed.ends_with('}') {
            break;
        }
    }
    settings
}

fn packer_calls() -> BTreeMap<String, Vec<String>> {
    let template = read("images/web.pkr.hcl");
    for (kind, allowed) in [
        ("provisioner", &["shell", "file"][..]),
        ("post-processor", &["manifest"][..]),
    ] {
        for piece in template.split(&format!("{kind} \"")).skip(1) {
            let name = piece.split('"').next().unwrap_or_default();
            assert!(
                allowed.contains(&name),
                "images/web.pkr.hcl uses the {kind} {name}: find what it calls in AWS, then update this test and infra/github_ci.tf"
            );
        }
    }
    let settings = amazon_ebs_settings(&template);
    assert!(
        settings.contains("source_ami_filter") && settings.contains("tags"),
        "parsed too little: {settings:?}"
    );
    let mut calls: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (action, why) in PACKER_ALWAYS {
        calls
            .entry(format!("ec2:{action}"))
            .or_default()
            .push((*why).to_owned());
    }
    for setting in &settings {
        let (_, actions, why) = PACKER_SETTINGS
            .iter()
            .find(|(name, _, _)| name == setting)
            .unwrap_or_else(|| {
                panic!(
                    "images/web.pkr.hcl sets {setting} in its amazon-ebs source, which this test does not know: \
                     find the EC2 calls it makes Packer do, add it to PACKER_SETTINGS and the actions to \
                     infra/github_ci.tf"
                )
            });
        for action in *actions {
            calls
                .entry(format!("ec2:{action}"))
                .or_default()
                .push(format!("{setting}: {why}"));
        }
    }
    for setting in [
        "security_group_id",
        "security_group_ids",
        "ssh_keypair_name",
        "iam_instance_profile",
        "ami_regions",
        "ami_users",
    ] {
        assert!(
            !settings.contains(setting),
            "the table assumes no {setting}; update it"
        );
    }
    calls
}

/// `snake_case` SDK method -> API name (`describe_images` -> `DescribeImages`).
fn api_name(method: &str) -> String {
    method
        .split('_')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The body of `fn name` in `source`, braces matched (comments and strings
/// in these files hold no unbalanced braces).
fn fn_body<'a>(source: &'a str, name: &str) -> Option<&'a str> {
    let at = source
        .find(&format!("fn {name}("))
        .or_else(|| source.find(&format!("fn {name}<")))?;
    let open = at + source[at..].find('{')?;
    let mut depth = 0;
    for (i, c) in source[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&source[open..=open + i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// Method names called on `receiver` in `code` (`receiver . name (`, across
/// lines).
fn method_calls(code: &str, receiver: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find(receiver) {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + receiver.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let Some(after) = rest.trim_start().strip_prefix('.') else {
            continue;
        };
        let after = after.trim_start();
        let name: String = after
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && after[name.len()..].trim_start().starts_with('(') {
            names.insert(name);
        }
    }
    names
}

/// The body of `fn name(` when it has one (a trait's required method ends
/// in `;` and has none).
fn body_of<'a>(source: &'a str, name: &str) -> Option<&'a str> {
    let at = source
        .find(&format!("fn {name}("))
        .or_else(|| source.find(&format!("fn {name}<")))?;
    let open = source[at..].find('{')?;
    if source[at..at + open].contains(';') {
        return None;
    }
    fn_body(&source[at..], name)
}

/// The EC2 and Auto Scaling calls behind the `Fleet` methods `methods`,
/// followed through `SdkFleet` (agent/src/aws/sdk.rs), the trait's
/// provided methods (agent/src/aws/mod.rs) and the launch template
/// helpers (agent/src/aws/sdk/templates.rs).
fn fleet_api_calls(methods: BTreeSet<String>) -> BTreeMap<String, Vec<String>> {
    let sdk = read("agent/src/aws/sdk.rs");
    let trait_file = read("agent/src/aws/mod.rs");
    let templates = read("agent/src/aws/sdk/templates.rs");
    let mut calls: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut todo: Vec<String> = methods.into_iter().collect();
    let mut done = BTreeSet::new();
    while let Some(method) = todo.pop() {
        if !done.insert(method.clone()) {
            continue;
        }
        let Some(body) = body_of(&sdk, &method)
            .or_else(|| body_of(&trait_file, &method))
            .or_else(|| body_of(&templates, &method))
        else {
            continue;
        };
        for (client, service) in [("ec2", "ec2"), ("autoscaling", "autoscaling")] {
            for op in method_calls(body, client) {
                if op != "clone" {
                    calls
                        .entry(format!("{service}:{}", api_name(&op)))
                        .or_default()
                        .push(format!("Fleet::{method}"));
                }
            }
        }
        todo.extend(method_calls(body, "self"));
        // Free helpers called as `templates::name(`.
        let mut rest = body;
        while let Some(at) = rest.find("templates::") {
            rest = &rest[at + "templates::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            todo.push(name);
        }
    }
    calls
}

fn publish_calls() -> BTreeMap<String, Vec<String>> {
    let ops = read("agent/src/ops/publish.rs");
    assert!(
        fn_body(&ops, "publish").is_some(),
        "agent/src/ops/publish.rs has fn publish"
    );
    // Every registry call of the publish module, not only of `fn publish`.
    let registry_methods = method_calls(&ops, "registry");
    assert!(
        registry_methods.contains("tag_image"),
        "publish tags the image: {registry_methods:?}"
    );

    let sdk_path = "agent/src/aws/registry/sdk.rs";
    let sdk = read(sdk_path);
    assert!(
        sdk.contains("impl Registry for SdkRegistry"),
        "{sdk_path} implements the registry"
    );
    let mut calls: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut todo: Vec<String> = registry_methods.into_iter().collect();
    let mut done = BTreeSet::new();
    while let Some(method) = todo.pop() {
        if !done.insert(method.clone()) {
            continue;
        }
        let Some(body) = fn_body(&sdk, &method) else {
            continue;
        };
        for op in method_calls(body, "ec2") {
            calls
                .entry(format!("ec2:{}", api_name(&op)))
                .or_default()
                .push(format!("SdkRegistry::{method}"));
        }
        todo.extend(method_calls(body, "self"));
    }
    assert!(
        calls.contains_key("ec2:CreateTags"),
        "the scan of {sdk_path} found too little to be right: {calls:?}"
    );
    // Before tagging, publish reads the fleet as the planner does (the
    // planner's `observe`), to say what the coordinator will do.
    assert!(
        ops.contains("observe("),
        "publish observes the fleet through the planner's observe"
    );
    let planner = read("agent/src/coordinator/planner.rs");
    let observe = fn_body(&planner, "observe").expect("planner.rs has fn observe");
    let fleet = fleet_api_calls(method_calls(observe, "fleet"));
    assert!(
        fleet.contains_key("autoscaling:DescribeAutoScalingGroups"),
        "the scan of the planner's observe found too little to be right: {fleet:?}"
    );
    for (action, why) in fleet {
        calls.entry(action).or_default().extend(why);
    }
    calls
}

fn compare(what: &str, declared: &BTreeSet<String>, derived: &BTreeMap<String, Vec<String>>) {
    let missing: Vec<String> = derived
        .iter()
        .filter(|(action, _)| !declared.contains(*action))
        .map(|(action, why)| format!("{action} ({})", why.join("; ")))
        .collect();
    let extra: Vec<&String> = declared
        .iter()
        .filter(|a| !derived.contains_key(*a))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "infra/github_ci.tf and {what} disagree.\n  missing from the role: {missing:?}\n  \
         granted but never called: {extra:?}"
    );
}

#[test]
fn ci_role_grants_what_the_workflow_calls_and_no_more() {
    let (packer_declared, publish_declared) = ci_policy_lists();
    compare(
        "Packer's calls for images/web.pkr.hcl",
        &packer_declared,
        &packer_calls(),
    );
    compare(
        "the calls of `rollgate publish`",
        &publish_declared,
        &publish_calls(),
    );

    // The workflow's steps that reach AWS are exactly the Packer build and
    // rollgate publish: no AWS CLI call would be covered by the lists.
    for (from, script) in shell_sources() {
        assert!(
            invocations(&shell_tokens(&script), "aws").is_empty(),
            "{from} calls the AWS CLI: give its calls a list in infra/github_ci.tf and check it here"
        );
    }
}

#[test]
fn ci_role_trusts_one_repository_and_branch_and_grants_no_wildcard_action() {
    let tf = read("infra/github_ci.tf");
    assert!(
        tf.contains("\"repo:${var.github_repository}:ref:refs/heads/${var.github_branch}\""),
        "the trust policy pins the subject to the repository and the branch"
    );
    let sub = tf.find(":sub\"").expect("a condition on the token's sub");
    let test = tf[..sub]
        .rfind("test")
        .expect("the sub condition has a test");
    assert!(
        tf[test..sub].contains("\"StringEquals\""),
        "the sub condition matches exactly (StringEquals, not StringLike)"
    );
    assert!(
        tf.contains(":aud\"") && tf.contains("\"sts.amazonaws.com\""),
        "the audience is STS"
    );
    for variable in ["github_repository", "github_branch"] {
        let at = tf
            .find(&format!("variable \"{variable}\""))
            .unwrap_or_else(|| panic!("infra/github_ci.tf declares {variable}"));
        let block = &tf[at..at + tf[at..].find("\n}\n").expect("variable block ends")];
        assert!(
            block.contains("description") && block.contains("validation"),
            "variable {variable} has a description and a validation"
        );
    }
    // Every action string anywhere in the file is one action, no wildcard.
    let services = ["ec2", "iam", "sts", "autoscaling", "s3", "kms", "*"];
    let actions = tf
        .split('"')
        .skip(1)
        .step_by(2)
        .filter_map(|piece| piece.split_once(':'))
        .filter(|(service, _)| services.contains(service));
    for (service, action) in actions {
        assert!(
            !(action.contains('*') || service == "*"),
            "infra/github_ci.tf: {service}:{action} is a wildcard action"
        );
    }
}

// ---------------------------------------------------------------------------
// The helpers themselves
// ---------------------------------------------------------------------------

#[test]
fn the_shell_reader_finds_commands_not_mentions() {
    let script = "# rollgate plan in a comment\necho \"run rollgate approve x\" 'rollgate abort'\n\
                  out=$(rollgate history \"$svc\" --json 2>/dev/null) || true\n\
                  timeout 5 rollgate status web \\\n  --wait | tee log; rollgate:building=1\n\
                  cargo build -p rollgate; if rollgate plan; then X=1 rollgate abort; fi";
    let found: Vec<Vec<String>> = invocations(&shell_tokens(script), "rollgate")
        .iter()
        .map(|args| args.iter().map(|t| text(t).to_owned()).collect())
        .collect();
    assert_eq!(
        found,
        [
            vec!["history", "$svc", "--json"],
            vec!["status", "web", "--wait"],
            vec!["plan"],
            vec!["abort"],
        ]
    );
    let yaml = "jobs:\n  a:\n    steps:\n      - run: bash x.sh\n      - name: b\n        run: |\n          one\n          two\n      - uses: actions/checkout@v4\n";
    assert_eq!(
        run_blocks(yaml),
        [(4, "bash x.sh".to_owned()), (6, "one\ntwo".to_owned())]
    );
    assert_eq!(api_name("describe_images"), "DescribeImages");
    assert_eq!(
        method_calls(
            "self.ec2\n    .create_tags()\n; x.ec2.describe_images(); my_ec2.run_instances()",
            "ec2"
        ),
        BTreeSet::from(["create_tags".to_owned(), "describe_images".to_owned()])
    );
}
