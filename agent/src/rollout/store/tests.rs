//! Records as earlier releases wrote them must stay readable, and records
//! from a newer release must be refused by name, never misread.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::*;
use crate::consul::records::{decode, encode};
use crate::rollout::plan::Outcome;

const PLAN_V1: &str = include_str!("testdata/plan_v1.json");
const ROLLOUT_V1: &str = include_str!("testdata/rollout_v1.json");
const COMMANDS_V1: &str = include_str!("testdata/commands_v1.json");

#[test]
fn a_plan_of_the_first_release_reads_with_its_parameters_converted() {
    let plan: Plan = decode("k", PLAN_V1.as_bytes()).unwrap();
    assert_eq!(plan.params.batch_size, 2);
    assert_eq!(plan.params.min_healthy_time, Duration::from_secs(30));
    assert_eq!(plan.params.healthy_deadline, Duration::from_secs(300));
    assert_eq!(plan.params.progress_deadline, Duration::from_secs(600));
    assert!(plan.params.auto_revert);
    assert_eq!(plan.estimate, Duration::from_secs(90));
    assert!(matches!(plan.decision, Decision::Approved { ref by, .. } if by == "alice"));
    assert!(matches!(
        plan.outcome,
        Some(Outcome::Reverted { at: 1_795_001_000_000, ref reason }) if reason.contains("i-7")
    ));
}

#[test]
fn a_plan_written_now_carries_schema_two_and_reads_back() {
    let plan: Plan = decode("k", PLAN_V1.as_bytes()).unwrap();
    let bytes = encode("k", &plan).unwrap();
    let json: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(json["schema"], 2);
    assert_eq!(json["params"]["min_healthy_time_ms"], 30_000);
    assert_eq!(decode::<Plan>("k", &bytes).unwrap(), plan);
}

#[test]
fn a_plan_from_a_newer_release_is_refused_by_name() {
    let mut json: Value = serde_json::from_str(PLAN_V1).unwrap();
    json["schema"] = 3.into();
    let e = decode::<Plan>(
        "rollgate/services/web/plans/0000000002",
        &serde_json::to_vec(&json).unwrap(),
    )
    .unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(
            e,
            RecordError::TooNew {
                schema: 3,
                supported: 2,
                ..
            }
        ),
        "{text}"
    );
    assert!(
        text.contains("plans/0000000002") && text.contains("left untouched"),
        "{text}"
    );
}

#[test]
fn a_plan_with_parameters_it_cannot_read_is_unreadable_not_defaulted() {
    let mut json: Value = serde_json::from_str(PLAN_V1).unwrap();
    json["params"]["min_healthy_time"] = "soon".into();
    assert!(matches!(
        decode::<Plan>("k", &serde_json::to_vec(&json).unwrap()),
        Err(RecordError::Unreadable { .. })
    ));
}

#[test]
fn a_rollout_of_the_first_release_reads_and_roundtrips() {
    let r: Rollout = decode("k", ROLLOUT_V1.as_bytes()).unwrap();
    assert_eq!(r.spec.id, "web-7");
    assert_eq!(r.spec.params.bake_time, Duration::from_secs(30));
    // Written before rollouts knew what they change: an image change.
    assert_eq!(r.spec.change, crate::rollout::machine::Change::Image);
    let back: Rollout = decode("k", &encode("k", &r).unwrap()).unwrap();
    assert_eq!(back, r);
}

#[test]
fn commands_stable_versions_and_triggers_of_the_first_release_read() {
    let commands: Vec<Value> = serde_json::from_str(COMMANDS_V1).unwrap();
    for c in commands {
        decode::<OperatorCommand>("k", &serde_json::to_vec(&c).unwrap()).unwrap();
    }
    let stable: StableRef = decode(
        "k",
        br#"{"template_version":4,"image":"ami-old","version":"1.2.3"}"#,
    )
    .unwrap();
    assert_eq!(stable.template_version, 4);
    let t: Trigger = decode(
        "k",
        br#"{"image_id":"ami-1","version":"1.0.0","at":1795000000000}"#,
    )
    .unwrap();
    assert_eq!(t.version, "1.0.0");
    assert_eq!(decode::<Seq>("k", b"41").unwrap(), Seq(41));
    assert_eq!(encode("k", &Seq(42)).unwrap(), b"42");
}
