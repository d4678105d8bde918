//! `GET /v1/agent/health/service/id/:id` as Consul's agent answers it: the
//! status code carries the aggregated status (200 passing, 429 warning, 503
//! critical or maintenance, 404 unknown), the body the service and its
//! checks; `?format=text` the status word alone; `service:read` needed
//! only once the service is known. The rollgate agent's `/ready` mirrors
//! this answer for the load balancer.

mod consul_support;

use consul_support::World;
use reqwest::StatusCode;
use sandbox::consul::Config;
use serde_json::{Value, json};

const PATH: &str = "/v1/agent/health/service/id/web-1";

async fn answer(world: &World, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut req = world.http.get(world.agent("node-1", path));
    if let Some(t) = token {
        req = req.header("X-Consul-Token", t);
    }
    let resp = req.send().await.expect("a request");
    let status = resp.status();
    let text = resp.text().await.expect("a body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn set_ttl(world: &World, status: &str, output: &str) {
    let resp = world
        .put_json(
            &world.agent("node-1", "/v1/agent/check/update/web-1:ttl"),
            &json!({"Status": status, "Output": output}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
}

fn registration() -> Value {
    json!({
        "ID": "web-1", "Name": "web", "Port": 8080, "Tags": ["a"],
        "Checks": [
            {"CheckID": "web-1:ttl", "Name": "probe", "TTL": "30s", "Status": "passing"},
            {"CheckID": "web-1:ttl2", "Name": "second", "TTL": "30s", "Status": "passing"}
        ]
    })
}

#[tokio::test]
async fn the_status_code_follows_the_aggregated_status() {
    let world = World::start(1).await;
    world.register("node-1", &registration()).await;

    let (code, body) = answer(&world, PATH, None).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["AggregatedStatus"], "passing");
    assert_eq!(body["Service"]["ID"], "web-1");
    assert_eq!(body["Service"]["Service"], "web");
    let checks = body["Checks"].as_array().expect("checks");
    let ids: Vec<&str> = checks
        .iter()
        .filter_map(|c| c["CheckID"].as_str())
        .collect();
    assert_eq!(
        ids,
        ["web-1:ttl", "web-1:ttl2"],
        "the service's checks only"
    );
    assert_eq!(checks[0]["ServiceID"], "web-1");
    assert_eq!(checks[0]["Name"], "probe");

    set_ttl(&world, "warning", "slow").await;
    let (code, body) = answer(&world, PATH, None).await;
    assert_eq!(code, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["AggregatedStatus"], "warning");

    set_ttl(&world, "critical", "app answered 500").await;
    let (code, body) = answer(&world, PATH, None).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["AggregatedStatus"], "critical");
    let failing = body["Checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["CheckID"] == "web-1:ttl"))
        .cloned()
        .expect("the failing check");
    assert_eq!(failing["Status"], "critical");
    assert_eq!(failing["Output"], "app answered 500");

    // Maintenance outranks every status, passing included.
    set_ttl(&world, "passing", "ok").await;
    let resp = world
        .put(
            &world.agent(
                "node-1",
                "/v1/agent/service/maintenance/web-1?enable=true&reason=draining",
            ),
            "",
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let (code, body) = answer(&world, PATH, None).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["AggregatedStatus"], "maintenance");
    let maint = body["Checks"]
        .as_array()
        .and_then(|c| {
            c.iter()
                .find(|c| c["CheckID"] == "_service_maintenance:web-1")
        })
        .cloned()
        .expect("the maintenance check");
    assert_eq!(maint["Notes"], "draining");

    let (code, body) = answer(&world, &format!("{PATH}?format=text"), None).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, Value::String("maintenance".into()));
    world.server.shutdown().await;
}

#[tokio::test]
async fn an_unknown_service_is_404_with_a_critical_body_and_no_id_is_400() {
    let world = World::start(1).await;
    let (code, body) = answer(&world, PATH, None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"AggregatedStatus": "critical", "Service": null, "Checks": null})
    );
    let (code, body) = answer(&world, &format!("{PATH}?format=text"), None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(body, Value::String("ServiceId web-1 not found".into()));
    let (code, body) = answer(&world, "/v1/agent/health/service/id/", None).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(body, Value::String("Missing serviceID".into()));
    world.server.shutdown().await;
}

#[tokio::test]
async fn a_known_service_needs_service_read() {
    const ROOT: &str = "root-secret";
    let world = World::with(Config {
        nodes: 1,
        ..Config::with_acls(ROOT)
    })
    .await;
    let resp = world
        .http
        .put(world.agent("node-1", "/v1/agent/service/register"))
        .header("X-Consul-Token", ROOT)
        .json(&registration())
        .send()
        .await
        .expect("a request");
    assert_eq!(resp.status(), StatusCode::OK);
    let (code, body) = answer(&world, PATH, None).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    let text = body.as_str().unwrap_or_default();
    assert!(
        text.contains("lacks permission 'service:read' on \"web\""),
        "{text}"
    );
    let (code, _) = answer(&world, PATH, Some(ROOT)).await;
    assert_eq!(code, StatusCode::OK);
    // An unknown service is answered before any rule is looked at.
    let (code, _) = answer(&world, "/v1/agent/health/service/id/nope", None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    world.server.shutdown().await;
}
