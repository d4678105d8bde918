//! Configuration: precedence, Consul's variables, unknown keys, collected
//! problems, redaction — through the library and through the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use rollgate::config::{Config, ConfigError, Sources};

fn file(content: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(content.as_bytes()).unwrap();
    f
}

fn sources(path: Option<PathBuf>, env: &[(&str, &str)]) -> Sources {
    Sources {
        file: path.map(|p| (p, true)),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn problems(e: &ConfigError) -> Vec<String> {
    e.problems.iter().map(|p| p.key.clone()).collect()
}

#[test]
fn defaults_then_file_then_env() {
    let none = Config::load(&sources(None, &[])).unwrap();
    assert_eq!(none.consul.address, "http://127.0.0.1:8500");
    assert_eq!(none.consul.timeout, Duration::from_secs(10));

    let f = file("[consul]\naddress = \"http://10.0.0.5:8500\"\ntimeout = \"20s\"\n");
    let from_file = Config::load(&sources(Some(f.path().into()), &[])).unwrap();
    assert_eq!(from_file.consul.address, "http://10.0.0.5:8500");
    assert_eq!(from_file.consul.timeout, Duration::from_secs(20));
    assert_eq!(
        from_file.consul.kv_prefix, "rollgate",
        "untouched keys keep defaults"
    );

    let env = Config::load(&sources(
        Some(f.path().into()),
        &[("ROLLGATE_CONSUL__TIMEOUT", "3s")],
    ))
    .unwrap();
    assert_eq!(env.consul.timeout, Duration::from_secs(3), "env beats file");
    assert_eq!(
        env.consul.address, "http://10.0.0.5:8500",
        "file beats default"
    );
}

#[test]
fn consul_environment_variables_are_honoured() {
    let token = file("  tok-from-file \n");
    let ca = file("-----BEGIN CERTIFICATE-----\n");
    let c = Config::load(&sources(
        None,
        &[
            ("CONSUL_HTTP_ADDR", "consul.service:8501"),
            ("CONSUL_HTTP_SSL", "true"),
            ("CONSUL_HTTP_TOKEN_FILE", token.path().to_str().unwrap()),
            ("CONSUL_CACERT", ca.path().to_str().unwrap()),
        ],
    ))
    .unwrap();
    assert_eq!(c.consul.address, "https://consul.service:8501");
    assert_eq!(c.consul.token_file.as_deref(), Some(token.path()));
    assert_eq!(c.consul.ca_file.as_deref(), Some(ca.path()));
    assert_eq!(
        c.consul.resolve_token().unwrap().unwrap().expose(),
        "tok-from-file"
    );

    // A URL keeps its own scheme; CONSUL_HTTP_TOKEN is read too.
    let c = Config::load(&sources(
        None,
        &[
            ("CONSUL_HTTP_ADDR", "http://127.0.0.1:18500"),
            ("CONSUL_HTTP_TOKEN", "abc"),
        ],
    ))
    .unwrap();
    assert_eq!(c.consul.address, "http://127.0.0.1:18500");
    assert_eq!(c.consul.token.as_ref().unwrap().expose(), "abc");

    // rollgate's own variable is more specific and wins.
    let c = Config::load(&sources(
        None,
        &[
            ("CONSUL_HTTP_ADDR", "10.1.1.1:8500"),
            ("ROLLGATE_CONSUL__ADDRESS", "http://10.2.2.2:8500"),
        ],
    ))
    .unwrap();
    assert_eq!(c.consul.address, "http://10.2.2.2:8500");
}

#[test]
fn unknown_keys_are_rejected_in_file_and_env() {
    let f = file("[consul]\nadress = \"http://x:8500\"\n\n[colour]\nx = 1\n");
    let e = Config::load(&sources(Some(f.path().into()), &[])).unwrap_err();
    let keys = problems(&e);
    assert!(keys.contains(&"consul.adress".to_string()), "{e}");
    assert!(keys.contains(&"colour".to_string()), "{e}");
    assert!(e.to_string().contains("unknown key"), "{e}");

    let e = Config::load(&sources(None, &[("ROLLGATE_CONSUL__TIMEOUTS", "1s")])).unwrap_err();
    assert_eq!(problems(&e), vec!["consul.timeouts"]);
    assert!(e.to_string().contains("ROLLGATE_CONSUL__TIMEOUTS"), "{e}");
}

#[test]
fn every_invalid_value_is_reported_together() {
    let f = file(
        "[consul]\naddress = \"ftp://consul:21\"\ntimeout = \"0s\"\nkv_prefix = \"/bad/\"\n\
         token = \"t\"\ntoken_file = \"/nonexistent/token\"\n\n[log]\nlevel = \"loud=[\"\n",
    );
    let e = Config::load(&sources(Some(f.path().into()), &[])).unwrap_err();
    let keys = problems(&e);
    for key in [
        "consul.address",
        "consul.timeout",
        "consul.kv_prefix",
        "consul.token_file",
        "log.level",
    ] {
        assert!(keys.contains(&key.to_string()), "{key} missing from:\n{e}");
    }
    let text = e.to_string();
    assert!(
        text.contains("\"ftp://consul:21\""),
        "value is shown: {text}"
    );
    assert!(
        text.contains("must be between 1s and 5m"),
        "rule is shown: {text}"
    );
}

#[test]
fn type_errors_in_two_sections_are_both_reported() {
    let f = file("[consul]\ntimeout = 12\n\n[log]\nformat = \"xml\"\n");
    let e = Config::load(&sources(Some(f.path().into()), &[])).unwrap_err();
    let keys = problems(&e);
    assert!(keys.contains(&"consul.timeout".to_string()), "{e}");
    assert!(keys.contains(&"log.format".to_string()), "{e}");
}

#[test]
fn malformed_toml_names_the_file_and_place() {
    let f = file("[consul\naddress = 1\n");
    let e = Config::load(&sources(Some(f.path().into()), &[])).unwrap_err();
    let text = e.to_string();
    assert!(text.contains(f.path().to_str().unwrap()), "{text}");
    assert!(text.contains("line 1"), "{text}");
}

#[test]
fn explicit_missing_file_is_an_error_default_missing_is_fine() {
    let e = Config::load(&sources(Some("/nonexistent/rollgate.toml".into()), &[])).unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    let s = Sources {
        file: Some(("/nonexistent/rollgate.toml".into(), false)),
        env: vec![],
    };
    assert!(Config::load(&s).is_ok());
}

fn rollgate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rollgate"));
    // Only what the test sets: no CONSUL_* or ROLLGATE_* from the machine.
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    c
}

#[test]
fn check_config_prints_effective_toml_with_secrets_redacted() {
    let f = file("[consul]\ntoken = \"s3cr3t-file-token\"\n");
    let out = rollgate()
        .args(["--config", f.path().to_str().unwrap(), "check-config"])
        .env("ROLLGATE_LOG__LEVEL", "debug")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let parsed: toml::Value = toml::from_str(&stdout).expect("check-config prints TOML");
    assert_eq!(parsed["log"]["level"].as_str(), Some("debug"));
    assert_eq!(parsed["consul"]["token"].as_str(), Some("<redacted>"));
    assert!(!stdout.contains("s3cr3t") && !stderr.contains("s3cr3t"));

    // From the environment too.
    let out = rollgate()
        .args(["check-config"])
        .env("CONSUL_HTTP_TOKEN", "env-s3cr3t")
        .output()
        .unwrap();
    assert!(out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("env-s3cr3t"), "{all}");
}

#[test]
fn invalid_configuration_exits_2_listing_every_problem_without_secrets() {
    let f = file("[consul]\ntoken = \"s3cr3t\"\ntimeout = \"1h\"\naddress = \"\"\n");
    let out = rollgate()
        .args(["--config", f.path().to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("consul.timeout"), "{stderr}");
    assert!(stderr.contains("consul.address"), "{stderr}");
    assert!(stderr.contains("2 problems"), "{stderr}");
    assert!(!stderr.contains("s3cr3t"), "{stderr}");
}

#[test]
fn a_wrong_type_does_not_hide_an_unknown_key_of_the_same_section() {
    let f = file("[consul]\naddress = 5\nbogus_key = 1\n\n[watch]\ngroup_wait = 3\n");
    let out = rollgate()
        .args(["--config", f.path().to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("consul.address"), "{stderr}");
    assert!(stderr.contains("consul.bogus_key"), "{stderr}");
    assert!(stderr.contains("unknown key"), "{stderr}");
    assert!(stderr.contains("watch.group_wait"), "{stderr}");
    assert!(stderr.contains("3 problems"), "{stderr}");
}

#[test]
fn the_documented_example_file_is_valid_and_complete() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/rollgate.toml");
    let c = Config::load(&sources(Some(path.into()), &[])).unwrap();
    assert_eq!(c, Config::default(), "the example shows the defaults");
    // Every key of the effective configuration appears in the example,
    // commented out or not, so the file documents them all.
    let example = std::fs::read_to_string(path).unwrap();
    let effective: toml::Table = toml::from_str(&Config::default().to_toml()).unwrap();
    for (section, value) in &effective {
        let Some(table) = value.as_table() else {
            // An array of tables ([[services]]), empty by default.
            assert!(
                example.contains(&format!("[[{section}]]")),
                "[[{section}]] missing"
            );
            continue;
        };
        assert!(
            example.contains(&format!("[{section}]")),
            "[{section}] missing"
        );
        for key in table.keys() {
            assert!(
                example.contains(&format!("\n{key} = "))
                    || example.contains(&format!("# {key} = ")),
                "{section}.{key} is not documented in config/rollgate.toml"
            );
        }
    }
    for optional in [
        "token",
        "token_file",
        "ca_file",
        "datacenter",
        "instance_id",
        "ami_id",
    ] {
        assert!(example.contains(&format!("# {optional} = ")), "{optional}");
    }
}

#[test]
fn the_node_example_file_is_valid_for_the_agent() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/agent.toml");
    // Its token and CA files exist only on a node: check everything else.
    let text = std::fs::read_to_string(path).unwrap();
    let text = text
        .lines()
        .filter(|l| !l.starts_with("token_file") && !l.starts_with("ca_file"))
        .collect::<Vec<_>>()
        .join("\n");
    let f = file(&text);
    let c = Config::load(&sources(Some(f.path().into()), &[])).unwrap();
    assert_eq!(c.agent.expected_version, "1.2.3");
    assert!(c.agent.validate_for_agent().into_result().is_ok());
}

#[test]
fn agent_rules_are_reported_with_their_keys() {
    let f = file(
        "[agent]\nservice_name = \"web app\"\ncheck_timeout = \"10s\"\ncheck_interval = \"5s\"\n\
         ttl = \"1s\"\ncheck_url = \"not a url\"\n",
    );
    let e = Config::load(&sources(Some(f.path().into()), &[])).unwrap_err();
    let keys = problems(&e);
    for key in [
        "agent.service_name",
        "agent.check_timeout",
        "agent.ttl",
        "agent.check_url",
    ] {
        assert!(keys.contains(&key.to_string()), "{key} missing:\n{e}");
    }
    let c = Config::default();
    let e = c.agent.validate_for_agent().into_result().unwrap_err();
    assert_eq!(problems(&e), vec!["agent.expected_version"]);
}

#[test]
fn the_coordinator_template_of_infra_renders_a_valid_configuration() {
    // infra/templates/coordinator.toml.tftpl with sample values, as
    // Terraform renders it: the keys it writes must be keys rollgate reads.
    let template = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../infra/templates/coordinator.toml.tftpl"
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s").unwrap();
    let secret = secret.to_str().unwrap().to_string();
    let values = [
        ("${jsonencode(consul_token_file)}", format!("{secret:?}")),
        ("${jsonencode(service_name)}", "\"web\"".into()),
        ("${jsonencode(auto_scaling_group)}", "\"web\"".into()),
        ("${jsonencode(launch_template)}", "\"web\"".into()),
        ("${jsonencode(artifact)}", "\"acmeinc/web\"".into()),
        ("${jsonencode(approval)}", "\"manual\"".into()),
        ("${batch_size}", "2".into()),
        ("${jsonencode(min_healthy_time)}", "\"30s\"".into()),
        ("${jsonencode(healthy_deadline)}", "\"5m\"".into()),
        ("${jsonencode(progress_deadline)}", "\"10m\"".into()),
        ("${jsonencode(slack_token_file)}", format!("{secret:?}")),
        ("${jsonencode(slack_channel)}", "\"C0ALERTS\"".into()),
        ("${jsonencode(smtp_host)}", "\"smtp.example.com\"".into()),
        ("${smtp_port}", "587".into()),
        ("${jsonencode(smtp_username)}", "\"rollgate\"".into()),
        ("${jsonencode(smtp_password_file)}", format!("{secret:?}")),
        (
            "${jsonencode(email_from)}",
            "\"rollgate@example.com\"".into(),
        ),
        ("${jsonencode(email_to)}", "[\"ops@example.com\"]".into()),
    ];
    let mut rendered = template.clone();
    for (placeholder, value) in &values {
        rendered = rendered.replace(placeholder, value);
    }
    assert!(
        !rendered.contains("${"),
        "unrendered placeholder:\n{rendered}"
    );
    let f = file(&rendered);
    let c = Config::load(&sources(Some(f.path().into()), &[])).unwrap();
    assert_eq!(c.services.len(), 1);
    assert_eq!(c.services[0].rollout.batch_size, 2);
}

// ---- Messages in plain words (issue 17) ----

/// The whole stderr of `rollgate --config FILE ARGS` and its exit code.
fn run_with(path: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = rollgate()
        .arg("--config")
        .arg(path)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

const SERVICE: &str = "[[services]]\nname = \"web\"\nauto_scaling_group = \"web\"\n\
                       launch_template = \"web\"\nartifact = \"acmeinc/web\"\n";

#[test]
fn a_negative_batch_size_reads_as_a_whole_number_rule_with_the_file() {
    let f = file(&format!("{SERVICE}[services.rollout]\nbatch_size = -1\n"));
    let path = f.path().canonicalize().unwrap();
    let (status, out) = run_with(&path, &["check-config"], &[]);
    assert_eq!(status, Some(2), "{out}");
    let expected = format!(
        "services[0].rollout.batch_size: expected a whole number between 1 and 4294967295, \
         found -1 (in {})",
        path.display()
    );
    assert!(out.contains(&expected), "want {expected:?} in:\n{out}");
    assert!(!out.contains("signed int"), "{out}");
    assert!(!out.contains("u32"), "{out}");
}

#[test]
fn a_zero_batch_size_is_the_same_rule() {
    let f = file(&format!("{SERVICE}[services.rollout]\nbatch_size = 0\n"));
    let e = Config::load(&sources(Some(f.path().into()), &[])).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("services[0].rollout.batch_size")
            && text.contains("a whole number between 1 and 4294967295"),
        "{text}"
    );
}

#[test]
fn a_relative_config_path_is_named_in_full() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rel.toml"), "[consul]\ntimeout = 5\n").unwrap();
    let out = rollgate()
        .current_dir(dir.path())
        .args(["--config", "rel.toml", "check-config"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let full = dir.path().canonicalize().unwrap().join("rel.toml");
    assert!(
        stderr.contains(&format!("(in {})", full.display())),
        "the file is named by its full path: {stderr}"
    );
}

#[test]
fn a_duration_of_the_wrong_shape_shows_an_example() {
    let f = file("[consul]\ntimeout = 5\nmax_wait = \"soon\"\n");
    let e = Config::load(&sources(Some(f.path().into()), &[])).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("consul.timeout: expected a duration such as 30s or 5m, found 5"),
        "{text}"
    );
    assert!(
        text.contains("consul.max_wait: expected a duration such as 30s or 5m, found \"soon\""),
        "{text}"
    );
    assert!(!text.contains("invalid type"), "{text}");
}

#[test]
fn key_paths_have_one_style_in_type_and_rule_problems() {
    // Two bad keys in one service, one in a nested table: each is reported,
    // and every path spells the entry as `services[0]`.
    let f = file(&format!(
        "{SERVICE}approval_timeout = 5\n[services.rollout]\nbatch_size = -1\n\
         min_healthy_time = \"1h\"\nhealthy_deadline = \"1m\"\n"
    ));
    let e = Config::load(&sources(Some(f.path().into()), &[])).unwrap_err();
    let keys = problems(&e);
    assert!(
        keys.contains(&"services[0].approval_timeout".to_string()),
        "{e}"
    );
    assert!(
        keys.contains(&"services[0].rollout.batch_size".to_string()),
        "{e}"
    );
    assert!(
        !e.to_string().contains("services.0"),
        "one key-path style: {e}"
    );
    // A rule (not a type) problem in a service names its file too.
    let f = file(&format!(
        "{SERVICE}[services.rollout]\nmin_healthy_time = \"1h\"\nhealthy_deadline = \"1m\"\n"
    ));
    let path = f.path().canonicalize().unwrap();
    let e = Config::load(&sources(Some(path.clone()), &[])).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("services[0].rollout.min_healthy_time")
            && text.contains(&format!("(in {})", path.display())),
        "{text}"
    );
}

#[test]
fn an_unknown_section_names_the_file() {
    let f = file("[colour]\nx = 1\n");
    let path = f.path().canonicalize().unwrap();
    let e = Config::load(&sources(Some(path.clone()), &[])).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("colour: unknown section")
            && text.contains(&format!("(in {})", path.display())),
        "{text}"
    );
    assert!(!text.contains("TOML file"), "{text}");
}

#[test]
fn environment_sources_name_the_variable() {
    let e = Config::load(&sources(
        None,
        &[
            ("ROLLGATE_CONSUL__TIMEOUT", "abc"),
            (
                "ROLLGATE_SERVICES",
                "[{name = \"web\", auto_scaling_group = \"web\", launch_template = \"web\", \
                 artifact = \"acmeinc/web\", rollout = {batch_size = -2}}]",
            ),
        ],
    ))
    .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(
            "consul.timeout: expected a duration such as 30s or 5m, found \"abc\" \
             (in environment variable ROLLGATE_CONSUL__TIMEOUT)"
        ),
        "{text}"
    );
    assert!(
        text.contains("services[0].rollout.batch_size: expected a whole number between 1 and 4294967295, found -2 (in environment variable ROLLGATE_SERVICES)"),
        "the variable that holds the list, not an invented one: {text}"
    );
    // A rule problem from the environment names the variable too.
    let e = Config::load(&sources(None, &[("ROLLGATE_CONSUL__TIMEOUT", "1h")])).unwrap_err();
    assert!(
        e.to_string()
            .contains("(in environment variable ROLLGATE_CONSUL__TIMEOUT)"),
        "{e}"
    );
    let e = Config::load(&sources(
        None,
        &[("CONSUL_HTTP_TOKEN_FILE", "/nonexistent/t")],
    ))
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("(in environment variable CONSUL_HTTP_TOKEN_FILE)"),
        "{e}"
    );
}

#[test]
fn other_types_read_in_plain_words() {
    let f = file(
        "[log]\nformat = \"xml\"\n[agent]\nservice_port = 70000\ntags = \"web\"\n\
         [watch]\nleader_lock = \"yes please\"\n",
    );
    let e = Config::load(&sources(Some(f.path().into()), &[])).unwrap_err();
    let text = e.to_string();
    for want in [
        "log.format: expected one of text, json, found \"xml\"",
        "agent.service_port: expected a whole number between 0 and 65535, found 70000",
        "agent.tags: expected a list, found \"web\"",
        "watch.leader_lock: expected true or false, found \"yes please\"",
    ] {
        assert!(text.contains(want), "want {want:?} in:\n{text}");
    }
    for rust in [
        "u16",
        "u32",
        "invalid type",
        "invalid value",
        "sequence",
        "bool ",
    ] {
        assert!(!text.contains(rust), "{rust:?} is Rust's word: {text}");
    }
}
