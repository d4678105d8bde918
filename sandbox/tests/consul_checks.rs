//! Checks run by the node that owns them: TTL expiry, HTTP checks against
//! a small axum target (500 critical, 429 warning), maintenance mode,
//! DeregisterCriticalServiceAfter, serfHealth, and the agent's error texts.

mod consul_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use consul_support::{World, check_status};
use sandbox::consul::{Config, Status};
use serde_json::{Value, json};

/// A target whose `/health` answers the status held in the atomic.
async fn target() -> (String, Arc<AtomicU16>, tokio::task::JoinHandle<()>) {
    let code = Arc::new(AtomicU16::new(200));
    let shared = Arc::clone(&code);
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(move || {
            let code = shared.load(Ordering::SeqCst);
            async move {
                (
                    StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
                    format!("status {code}"),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/health"), code, task)
}

#[tokio::test]
async fn a_ttl_check_turns_critical_when_not_updated() {
    let world = World::start(1).await;
    world
        .register(
            "node-1",
            &json!({"ID": "web-1", "Name": "web", "Check": {"CheckID": "web-ttl", "TTL": "1s", "Status": "passing"}}),
        )
        .await;
    // Updating keeps it alive past the TTL.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let resp = world
            .put_json(
                &world.agent("node-1", "/v1/agent/check/update/web-ttl"),
                &json!({"Status": "passing", "Output": "ok"}),
            )
            .await;
        assert_eq!(resp.status(), 200);
    }
    let (_, _, checks) = world.read(&world.url("/v1/health/checks/web")).await;
    assert_eq!(check_status(&checks, "web-ttl").as_deref(), Some("passing"));
    // Then it expires.
    let checks = world
        .wait_for("/v1/health/checks/web", Duration::from_secs(5), |c| {
            check_status(c, "web-ttl").as_deref() == Some("critical")
        })
        .await;
    let output = checks[0]["Output"].as_str().unwrap_or_default();
    assert_eq!(
        output,
        "TTL expired (last output before timeout follows): ok"
    );
    world.server.shutdown().await;
}

#[tokio::test]
async fn an_http_check_follows_its_target_500_critical_429_warning() {
    let (url, code, task) = target().await;
    let world = World::start(1).await;
    world
        .register(
            "node-1",
            &json!({"ID": "web-1", "Name": "web", "Check": {"CheckID": "web-http", "HTTP": url, "Interval": "1s", "Timeout": "1s"}}),
        )
        .await;
    let checks = world
        .wait_for("/v1/health/checks/web", Duration::from_secs(5), |c| {
            check_status(c, "web-http").as_deref() == Some("passing")
        })
        .await;
    assert_eq!(
        checks[0]["Output"],
        format!("HTTP GET {url}: 200 OK Output: status 200").as_str()
    );
    assert_eq!(checks[0]["Type"], "http");

    code.store(500, Ordering::SeqCst);
    let checks = world
        .wait_for("/v1/health/checks/web", Duration::from_secs(5), |c| {
            check_status(c, "web-http").as_deref() == Some("critical")
        })
        .await;
    assert_eq!(
        checks[0]["Output"],
        format!("HTTP GET {url}: 500 Internal Server Error Output: status 500").as_str()
    );

    code.store(429, Ordering::SeqCst);
    world
        .wait_for("/v1/health/checks/web", Duration::from_secs(5), |c| {
            check_status(c, "web-http").as_deref() == Some("warning")
        })
        .await;
    // Warning is not passing.
    let (_, _, passing) = world
        .read(&world.url("/v1/health/service/web?passing"))
        .await;
    assert_eq!(passing, json!([]));

    // The target going away is critical too.
    task.abort();
    let _ = task.await;
    let checks = world
        .wait_for("/v1/health/checks/web", Duration::from_secs(5), |c| {
            check_status(c, "web-http").as_deref() == Some("critical")
        })
        .await;
    let output = checks[0]["Output"].as_str().unwrap_or_default();
    assert!(output.starts_with(&format!("Get \"{url}\": ")), "{output}");
    world.server.shutdown().await;
}

#[tokio::test]
async fn maintenance_mode_adds_a_critical_check_and_leaves_passing_results() {
    let world = World::start(1).await;
    world
        .register(
            "node-1",
            &json!({"ID": "web-1", "Name": "web", "Check": {"TTL": "30s", "Status": "passing"}}),
        )
        .await;
    let maint = world.agent("node-1", "/v1/agent/service/maintenance/web-1");
    let resp = world
        .put(&format!("{maint}?enable=true&reason=draining"), "")
        .await;
    assert_eq!(resp.status(), 200);
    let (_, _, entries) = world.read(&world.url("/v1/health/service/web")).await;
    let check = entries[0]["Checks"]
        .as_array()
        .and_then(|c| {
            c.iter()
                .find(|c| c["CheckID"] == "_service_maintenance:web-1")
        })
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(check["Status"], "critical");
    assert_eq!(check["Name"], "Service Maintenance Mode");
    assert_eq!(check["Notes"], "draining");
    let (_, _, passing) = world
        .read(&world.url("/v1/health/service/web?passing"))
        .await;
    assert_eq!(passing, json!([]));

    world.put(&format!("{maint}?enable=false"), "").await;
    let (_, _, passing) = world
        .read(&world.url("/v1/health/service/web?passing"))
        .await;
    assert_eq!(passing.as_array().map(Vec::len), Some(1));

    world.put(&format!("{maint}?enable=true"), "").await;
    let (_, _, checks) = world.read(&world.url("/v1/health/checks/web")).await;
    let notes: Vec<&str> = checks
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["Notes"].as_str())
        .collect();
    assert!(notes.contains(&"Maintenance mode is enabled for this service, but no reason was provided. This is a default message."));

    let resp = world.put(&maint, "").await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.text().await.expect("body"), "Missing value for enable");
    let resp = world
        .put(
            &world.agent("node-1", "/v1/agent/service/maintenance/nope?enable=true"),
            "",
        )
        .await;
    assert_eq!(resp.status(), 404);
    world.server.shutdown().await;
}

#[tokio::test]
async fn a_service_whose_check_stays_critical_is_deregistered() {
    // Consul would wait at least a minute and reap every 30s; this test
    // shortens both (see `consul_timings` for Consul's own timings).
    let world = World::with(
        Config {
            nodes: 1,
            ..Config::default()
        }
        .fast_timings(),
    )
    .await;
    world
        .register(
            "node-1",
            &json!({"ID": "web-1", "Name": "web",
                    "Check": {"CheckID": "web-ttl", "TTL": "30s", "DeregisterCriticalServiceAfter": "1s"}}),
        )
        .await;
    let (_, _, services) = world.read(&world.url("/v1/catalog/service/web")).await;
    assert_eq!(
        services.as_array().map(Vec::len),
        Some(1),
        "registered, critical"
    );
    world
        .wait_for("/v1/catalog/service/web", Duration::from_secs(5), |s| {
            s == &json!([])
        })
        .await;
    let (_, _, agent) = world
        .read(&world.agent("node-1", "/v1/agent/services"))
        .await;
    assert_eq!(agent, json!({}));
    world.server.shutdown().await;
}

#[tokio::test]
async fn a_failed_node_fails_the_passing_filter_of_its_services() {
    let world = World::start(2).await;
    for node in ["node-1", "node-2"] {
        world
            .register(
                node,
                &json!({"ID": "web", "Name": "web", "Check": {"TTL": "30s", "Status": "passing"}}),
            )
            .await;
    }
    world
        .server
        .set_serf_health("node-1", Status::Critical, None)
        .expect("known node");
    let (_, _, passing) = world
        .read(&world.url("/v1/health/service/web?passing"))
        .await;
    let nodes: Vec<&str> = passing
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["Node"]["Node"].as_str())
        .collect();
    assert_eq!(nodes, vec!["node-2"]);
    let (_, _, critical) = world.read(&world.url("/v1/health/state/critical")).await;
    assert_eq!(critical[0]["CheckID"], "serfHealth");
    assert_eq!(critical[0]["Node"], "node-1");
    // Through the control API too.
    let resp = world
        .put_json(
            &world.url("/sandbox/v1/nodes/node-1/serf-health"),
            &json!({"Status": "passing"}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let (_, _, passing) = world
        .read(&world.url("/v1/health/service/web?passing"))
        .await;
    assert_eq!(passing.as_array().map(Vec::len), Some(2));
    // A filter on service metadata and node name.
    let (status, _, filtered) = world
        .read(&world.url("/v1/health/service/web?filter=Node.Node%20%3D%3D%20%22node-2%22"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(filtered.as_array().map(Vec::len), Some(1));
    let resp = world
        .get(&world.url("/v1/health/service/web?filter=Bogus%20%3D%3D%20%22x%22"))
        .await;
    assert_eq!(resp.status(), 400);
    world.server.shutdown().await;
}

#[tokio::test]
async fn agent_errors_use_consuls_texts() {
    let world = World::start(1).await;
    let agent = |p: &str| world.agent("node-1", p);
    let resp = world.put(&agent("/v1/agent/check/pass/nope"), "").await;
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.text().await.expect("body"),
        "Unknown check ID \"nope\". Ensure that the check ID is passed, not the check name."
    );
    let resp = world
        .put(&agent("/v1/agent/service/deregister/nope"), "")
        .await;
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.text().await.expect("body"),
        "Unknown service ID \"nope\". Ensure that the service ID is passed, not the service name."
    );
    let resp = world.get(&agent("/v1/agent/service/nope")).await;
    assert_eq!(resp.status(), 404);
    let resp = world
        .put_json(
            &agent("/v1/agent/service/register"),
            &json!({"Name": "web", "Meta": {"bad.key": "x"}}),
        )
        .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.text().await.expect("body"),
        "Invalid Service Meta: Couldn't load metadata pair ('bad.key', 'x'): Key contains invalid characters"
    );
    let resp = world
        .put_json(
            &agent("/v1/agent/service/register"),
            &json!({"Name": "web", "Check": {"HTTP": "http://x/"}}),
        )
        .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.text().await.expect("body"),
        "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks"
    );
    let resp = world.get(&agent("/v1/agent/service/register")).await;
    assert_eq!(resp.status(), 405);
    world
        .register("node-1", &json!({"ID": "web-1", "Name": "web", "Check": {"CheckID": "tcp", "TCP": "127.0.0.1:1", "Interval": "10s"}}))
        .await;
    let resp = world.put(&agent("/v1/agent/check/pass/tcp"), "").await;
    assert_eq!(resp.status(), 500);
    assert_eq!(
        resp.text().await.expect("body"),
        "CheckID \"tcp\" does not have associated TTL"
    );
    let resp = world
        .put_json(
            &agent("/v1/agent/check/update/tcp"),
            &json!({"Status": "fine"}),
        )
        .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.text().await.expect("body"),
        "Invalid check status: 'fine'"
    );
    world.server.shutdown().await;
}

#[tokio::test]
async fn re_registering_the_same_service_is_idempotent() {
    let world = World::start(1).await;
    let body = json!({"ID": "web-1", "Name": "web", "Meta": {"instance_id": "i-1"},
                      "Checks": [{"CheckID": "web-ttl", "TTL": "30s"}]});
    world.register("node-1", &body).await;
    world
        .put(&world.agent("node-1", "/v1/agent/check/pass/web-ttl"), "")
        .await;
    let before = world.server.index();
    let url = world.agent(
        "node-1",
        "/v1/agent/service/register?replace-existing-checks",
    );
    let resp = world.put_json(&url, &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        world.server.index(),
        before,
        "an identical registration writes nothing"
    );
    let (_, _, checks) = world.read(&world.url("/v1/health/checks/web")).await;
    assert_eq!(
        check_status(&checks, "web-ttl").as_deref(),
        Some("passing"),
        "status survives"
    );

    // replace-existing-checks drops checks that are no longer declared.
    let resp = world
        .put_json(
            &url,
            &json!({"ID": "web-1", "Name": "web", "Checks": [{"CheckID": "other", "TTL": "30s"}]}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let (_, _, checks) = world.read(&world.agent("node-1", "/v1/agent/checks")).await;
    assert!(
        checks.get("web-ttl").is_none() && checks.get("other").is_some(),
        "{checks}"
    );
    world.server.shutdown().await;
}
