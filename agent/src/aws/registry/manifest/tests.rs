#![allow(clippy::unwrap_used)]

use super::*;

/// Two runs in one manifest, the last one built for two regions.
const TWO_RUNS: &str = r#"{
  "builds": [
    {
      "name": "web",
      "builder_type": "amazon-ebs",
      "build_time": 1714550000,
      "files": null,
      "artifact_id": "eu-west-1:ami-0aaa1111",
      "packer_run_uuid": "run-1",
      "custom_data": { "artifact": "acmeinc/web", "version": "1.3.0" }
    },
    {
      "name": "web",
      "builder_type": "amazon-ebs",
      "build_time": 1714557600,
      "files": null,
      "artifact_id": "eu-west-1:ami-0bbb2222,us-east-1:ami-0ccc3333",
      "packer_run_uuid": "run-2",
      "custom_data": { "artifact": "acmeinc/web", "version": "1.4.0", "architecture": "x86_64" }
    }
  ],
  "last_run_uuid": "run-2"
}"#;

fn build(region: &str, ami: &str, version: &str, artifact: &str) -> ManifestBuild {
    ManifestBuild {
        region: region.to_owned(),
        image_id: ami.to_owned(),
        version: version.to_owned(),
        artifact: artifact.to_owned(),
    }
}

#[test]
fn picks_the_last_run_and_splits_regions() {
    let builds = parse_packer_manifest(TWO_RUNS, None).unwrap();
    assert_eq!(
        builds,
        [
            build("eu-west-1", "ami-0bbb2222", "1.4.0", "acmeinc/web"),
            build("us-east-1", "ami-0ccc3333", "1.4.0", "acmeinc/web"),
        ]
    );
}

#[test]
fn the_override_names_the_artifact() {
    let builds = parse_packer_manifest(TWO_RUNS, Some("acmeinc/web-canary")).unwrap();
    assert!(builds.iter().all(|b| b.artifact == "acmeinc/web-canary"));
}

#[test]
fn without_a_run_id_the_last_build_counts() {
    let json = r#"{"builds": [
        {"name": "a", "artifact_id": "eu-west-1:ami-01", "custom_data": {"version": "1", "artifact": "x"}},
        {"name": "b", "artifact_id": "eu-west-1:ami-02", "custom_data": {"version": "2", "artifact": "x"}}
    ]}"#;
    assert_eq!(
        parse_packer_manifest(json, None).unwrap(),
        [build("eu-west-1", "ami-02", "2", "x")]
    );
}

#[test]
fn every_problem_is_named() {
    let cases: &[(&str, &str)] = &[
        ("not json", "not valid manifest JSON"),
        (r#"{"builds": []}"#, "lists no builds"),
        (r#"{"last_run_uuid": "x"}"#, "lists no builds"),
        (
            r#"{"builds": [{"name": "web", "artifact_id": "eu-west-1:ami-01", "packer_run_uuid": "a",
                "custom_data": {"version": "1", "artifact": "x"}}], "last_run_uuid": "b"}"#,
            "no build of its last run b",
        ),
        (
            r#"{"builds": [{"name": "web", "artifact_id": "ami-01", "custom_data": {"version": "1", "artifact": "x"}}]}"#,
            r#"build web of the Packer manifest: artifact_id "ami-01" is not region:ami-id (no ':' in an entry)"#,
        ),
        (
            r#"{"builds": [{"name": "web", "artifact_id": "eu-west-1:i-01", "custom_data": {"version": "1", "artifact": "x"}}]}"#,
            r#""i-01" is not an AMI id"#,
        ),
        (
            r#"{"builds": [{"name": "web", "artifact_id": "", "custom_data": {"version": "1", "artifact": "x"}}]}"#,
            "it is empty",
        ),
        (
            r#"{"builds": [{"name": "web", "artifact_id": "Eu West:ami-01", "custom_data": {"version": "1", "artifact": "x"}}]}"#,
            "is not a region name",
        ),
        (
            r#"{"builds": [{"name": "web", "artifact_id": "eu-west-1:ami-01", "custom_data": {"artifact": "x"}}]}"#,
            "build web of the Packer manifest has no custom_data.version",
        ),
        (
            r#"{"builds": [{"name": "web", "artifact_id": "eu-west-1:ami-01", "custom_data": {"version": " "}}]}"#,
            "has no custom_data.version",
        ),
        (
            r#"{"builds": [{"name": "web", "artifact_id": "eu-west-1:ami-01", "custom_data": {"version": "1"}}]}"#,
            "has no custom_data.artifact",
        ),
    ];
    for (json, expected) in cases {
        let err = parse_packer_manifest(json, None).unwrap_err();
        assert!(err.to_string().contains(expected), "{json}: {err}");
    }
}
