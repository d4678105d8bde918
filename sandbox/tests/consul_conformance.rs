//! Conformance of the sandbox's answers to the sample responses in Consul's
//! API documentation: same field names and JSON types at every level.
//!
//! Rules of the comparison (see `shape_diff`): every field of the sample
//! must exist in our answer with the same JSON type; our answer may have
//! more fields (the samples are abridged). Enterprise-only fields
//! (`Namespace`, `Partition`) are skipped: a Consul CE agent omits them.
//! Map-valued fields (`Meta`, `TaggedAddresses`, ...) hold user data, so
//! only their being objects is compared. A `null` in a sample matches a
//! `null`, an array or an object (Go's nil slices and maps).

mod consul_support;

use consul_support::World;
use serde_json::{Value, json};

const ENTERPRISE_ONLY: &[&str] = &["Namespace", "Partition"];
const MAPS: &[&str] = &[
    "Meta",
    "NodeMeta",
    "ServiceMeta",
    "TaggedAddresses",
    "ServiceTaggedAddresses",
];

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Differences between the shape of `sample` and of `actual`, one line each.
fn shape_diff(sample: &Value, actual: &Value, path: &str, out: &mut Vec<String>) {
    match (sample, actual) {
        (Value::Null, Value::Null | Value::Array(_) | Value::Object(_)) => {}
        (Value::Object(s), Value::Object(a)) => {
            for (key, sv) in s {
                if ENTERPRISE_ONLY.contains(&key.as_str()) {
                    continue;
                }
                let here = format!("{path}.{key}");
                match a.get(key) {
                    None => out.push(format!("{here}: missing")),
                    Some(av) if MAPS.contains(&key.as_str()) => {
                        if !av.is_object() {
                            out.push(format!("{here}: expected a map, got {}", type_name(av)));
                        }
                    }
                    Some(av) => shape_diff(sv, av, &here, out),
                }
            }
        }
        (Value::Array(s), Value::Array(a)) => {
            if let Some(first) = s.first() {
                if a.is_empty() {
                    out.push(format!("{path}: empty, the sample has elements"));
                }
                for (i, av) in a.iter().enumerate() {
                    // Every element of ours must have the shape of some sample element.
                    let fits = s.iter().any(|sv| {
                        let mut d = Vec::new();
                        shape_diff(sv, av, "", &mut d);
                        d.is_empty()
                    });
                    if !fits {
                        shape_diff(first, av, &format!("{path}[{i}]"), out);
                    }
                }
            }
        }
        (s, a) if type_name(s) == type_name(a) => {}
        (s, a) => out.push(format!(
            "{path}: expected {}, got {}",
            type_name(s),
            type_name(a)
        )),
    }
}

fn assert_conforms(fixture: &str, actual: &Value) {
    let sample: Value = serde_json::from_str(fixture).expect("the fixture is JSON");
    let mut diff = Vec::new();
    shape_diff(&sample, actual, "$", &mut diff);
    assert!(
        diff.is_empty(),
        "answer differs from Consul's sample:\n{}\nanswer: {actual:#}",
        diff.join("\n")
    );
}

#[test]
fn the_shape_comparer_catches_differences() {
    let sample = json!([{"A": 1, "B": {"C": "x"}, "Meta": {"k": "v"}, "Namespace": "default"}]);
    let mut diff = Vec::new();
    shape_diff(
        &sample,
        &json!([{"A": 1, "B": {"C": "y"}, "Meta": {}, "Extra": true}]),
        "$",
        &mut diff,
    );
    assert!(diff.is_empty(), "{diff:?}");
    shape_diff(
        &sample,
        &json!([{"A": "1", "B": {}, "Meta": []}]),
        "$",
        &mut diff,
    );
    assert_eq!(diff.len(), 3, "{diff:?}");
    let mut diff = Vec::new();
    shape_diff(&sample, &json!([]), "$", &mut diff);
    assert_eq!(diff.len(), 1, "{diff:?}");
}

async fn redis_world() -> World {
    let world = World::start(1).await;
    world
        .register(
            "node-1",
            &json!({
                "ID": "redis",
                "Name": "redis",
                "Tags": ["primary"],
                "Address": "10.1.10.12",
                "Port": 8000,
                "Meta": {"redis_version": "4.0"},
                "Weights": {"Passing": 10, "Warning": 1},
                "TaggedAddresses": {
                    "lan": {"Address": "10.1.10.12", "Port": 8000},
                    "wan": {"Address": "198.18.1.2", "Port": 80}
                },
                "Check": {"CheckID": "service:redis", "TTL": "30s", "Status": "passing"}
            }),
        )
        .await;
    world
}

#[tokio::test]
async fn health_service_matches_the_documented_sample() {
    let world = redis_world().await;
    let (status, index, body) = world.read(&world.url("/v1/health/service/redis")).await;
    assert_eq!(status, 200);
    assert!(index >= 1);
    assert_conforms(include_str!("fixtures/consul/health_service.json"), &body);
    assert_eq!(body[0]["Service"]["Weights"]["Passing"], 10);
    world.server.shutdown().await;
}

#[tokio::test]
async fn health_state_matches_the_documented_sample() {
    let world = redis_world().await;
    let (status, _, body) = world.read(&world.url("/v1/health/state/passing")).await;
    assert_eq!(status, 200);
    assert_conforms(include_str!("fixtures/consul/health_state.json"), &body);
    assert!(
        body.as_array()
            .is_some_and(|a| a.iter().all(|c| c["Status"] == "passing"))
    );
    world.server.shutdown().await;
}

#[tokio::test]
async fn kv_get_matches_the_documented_sample() {
    let world = World::start(0).await;
    let resp = world.put(&world.url("/v1/session/create"), "{}").await;
    let session = resp.json::<Value>().await.expect("JSON")["ID"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let resp = world
        .put(&world.url(&format!("/v1/kv/zip?acquire={session}")), "test")
        .await;
    assert_eq!(resp.text().await.expect("body"), "true");
    let (status, _, body) = world.read(&world.url("/v1/kv/zip")).await;
    assert_eq!(status, 200);
    assert_conforms(include_str!("fixtures/consul/kv_get.json"), &body);
    assert_eq!(body[0]["Value"], "dGVzdA==");
    assert_eq!(body[0]["Session"], session.as_str());
    world.server.shutdown().await;
}

#[tokio::test]
async fn session_info_matches_the_documented_sample() {
    let world = World::start(0).await;
    let resp = world
        .put_json(
            &world.url("/v1/session/create"),
            &json!({"Name": "test-session", "TTL": "30s"}),
        )
        .await;
    let id = resp.json::<Value>().await.expect("JSON")["ID"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (status, _, body) = world
        .read(&world.url(&format!("/v1/session/info/{id}")))
        .await;
    assert_eq!(status, 200);
    assert_conforms(include_str!("fixtures/consul/session_info.json"), &body);
    assert_eq!(body[0]["LockDelay"], 15_000_000_000_u64);
    assert_eq!(body[0]["NodeChecks"], json!(["serfHealth"]));
    let (_, _, missing) = world
        .read(&world.url("/v1/session/info/00000000-0000-0000-0000-000000000000"))
        .await;
    assert_eq!(missing, json!([]), "an unknown session is an empty list");
    world.server.shutdown().await;
}
