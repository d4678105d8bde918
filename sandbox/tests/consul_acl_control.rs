//! ACL enforcement, the control API (faults, no leader, restart with lost
//! state, nodes joining and leaving), shutdown freeing every port, and the
//! `sandbox consul` binary's ready line.

mod consul_support;

use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use consul_support::World;
use sandbox::consul::{Config, Fault};
use serde_json::{Value, json};

async fn text(resp: reqwest::Response) -> String {
    resp.text().await.expect("a body")
}

#[tokio::test]
async fn acl_tokens_are_enforced_with_consuls_answers() {
    let world = World::with(Config {
        nodes: 1,
        acl_management_token: Some("root-secret".into()),
        acl_read_tokens: vec!["read-secret".into()],
        ..Config::default()
    })
    .await;
    let kv = world.url("/v1/kv/a");

    let resp = world.get(&kv).await;
    assert_eq!(resp.status(), 403);
    let denied = text(resp).await;
    assert!(
        denied
            .starts_with("Permission denied: anonymous token lacks permission 'key:read' on \"a\""),
        "{denied}"
    );
    let resp = world
        .http
        .get(&kv)
        .header("X-Consul-Token", "wrong")
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 403);
    assert_eq!(text(resp).await, "ACL not found");

    let put = |token: &'static str| {
        world
            .http
            .put(&kv)
            .header("X-Consul-Token", token)
            .body("v")
            .send()
    };
    let resp = put("read-secret").await.expect("PUT");
    assert_eq!(resp.status(), 403);
    let denied = text(resp).await;
    assert!(
        denied.starts_with("Permission denied: token with AccessorID '"),
        "{denied}"
    );
    assert!(
        denied.ends_with("lacks permission 'key:write' on \"a\""),
        "{denied}"
    );
    assert_eq!(text(put("root-secret").await.expect("PUT")).await, "true");

    let resp = world
        .http
        .get(&kv)
        .bearer_auth("read-secret")
        .send()
        .await
        .expect("GET");
    assert_eq!(
        resp.status(),
        200,
        "a read token reads, through Authorization: Bearer too"
    );
    let resp = world
        .http
        .put(world.agent("node-1", "/v1/agent/service/register"))
        .header("X-Consul-Token", "read-secret")
        .json(&json!({"Name": "web"}))
        .send()
        .await
        .expect("PUT");
    assert_eq!(resp.status(), 403);
    let resp = world.get(&world.url("/v1/status/leader")).await;
    assert_eq!(
        resp.status(),
        200,
        "status endpoints need no token, as in Consul"
    );
    world.server.shutdown().await;
}

#[tokio::test]
async fn injected_faults_answer_the_next_matching_requests() {
    let world = World::start(0).await;
    world.server.inject_fault(Fault {
        path_prefix: "/v1/kv/".into(),
        count: 2,
        status: 502,
        body: "<html>Bad Gateway</html>".into(),
        content_type: Some("text/html".into()),
    });
    for _ in 0..2 {
        let resp = world.get(&world.url("/v1/kv/a")).await;
        assert_eq!(resp.status(), 502);
        assert_eq!(resp.headers()["content-type"], "text/html");
        assert_eq!(text(resp).await, "<html>Bad Gateway</html>");
    }
    assert_eq!(
        world.get(&world.url("/v1/kv/a")).await.status(),
        404,
        "faults are used up"
    );
    assert_eq!(
        world.get(&world.url("/v1/catalog/nodes")).await.status(),
        200,
        "other paths unaffected"
    );

    let resp = world
        .put_json(
            &world.url("/sandbox/v1/faults"),
            &json!({"PathPrefix": "/v1/health/", "Count": 1, "Status": 500, "Body": "not json"}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let resp = world.get(&world.url("/v1/health/state/any")).await;
    assert_eq!(resp.status(), 500);
    assert_eq!(text(resp).await, "not json");
    assert_eq!(
        world.get(&world.url("/v1/health/state/any")).await.status(),
        200
    );
    world.server.shutdown().await;
}

#[tokio::test]
async fn without_a_leader_reads_need_stale_and_writes_fail() {
    let world = World::start(0).await;
    world.server.set_leader(false);
    let resp = world.get(&world.url("/v1/status/leader")).await;
    assert_eq!(text(resp).await, "\"\"");
    let resp = world.get(&world.url("/v1/kv/a")).await;
    assert_eq!(resp.status(), 500);
    assert_eq!(text(resp).await, "No cluster leader");
    let resp = world.get(&world.url("/v1/catalog/nodes?stale")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-consul-knownleader"], "false");
    assert_eq!(world.put(&world.url("/v1/kv/a"), "x").await.status(), 500);
    world
        .put_json(&world.url("/sandbox/v1/leader"), &json!({"Leader": true}))
        .await;
    assert_eq!(
        text(world.put(&world.url("/v1/kv/a"), "x").await).await,
        "true"
    );
    world.server.shutdown().await;
}

#[tokio::test]
async fn a_restart_with_lost_state_wipes_everything_but_keeps_the_ports() {
    let world = World::start(1).await;
    world
        .register(
            "node-1",
            &json!({"ID": "web-1", "Name": "web", "Check": {"CheckID": "t", "TTL": "30s"}}),
        )
        .await;
    world.put(&world.url("/v1/kv/state"), "x").await;
    let (_, before, _) = world.read(&world.url("/v1/kv/state")).await;

    // A blocked query in flight is dropped, as when the agent dies.
    let url = world.url(&format!("/v1/kv/state?index={before}&wait=5s"));
    let http = world.http.clone();
    let blocked = tokio::spawn(async move { http.get(url).send().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let node_addr = world.node("node-1");
    world.server.restart_lost_state();
    let outcome = blocked.await.expect("the task finishes");
    assert!(
        outcome.is_err(),
        "the in-flight request was dropped: {outcome:?}"
    );

    let (status, after, _) = world.read(&world.url("/v1/kv/state")).await;
    assert_eq!(status, 404);
    assert!(after < before, "the index restarted: {after} < {before}");
    let (_, _, services) = world.read(&world.url("/v1/catalog/services")).await;
    assert_eq!(services, json!({"consul": []}));
    assert_eq!(world.node("node-1"), node_addr, "same port");
    let resp = world
        .put(&world.agent("node-1", "/v1/agent/check/pass/t"), "")
        .await;
    assert_eq!(resp.status(), 404, "the agent forgot its checks");
    let (status, _, me) = world.read(&world.agent("node-1", "/v1/agent/self")).await;
    assert_eq!(status, 200);
    assert_eq!(me["Config"]["NodeName"], "node-1");
    world.server.shutdown().await;
}

#[tokio::test]
async fn nodes_join_and_leave_and_shutdown_frees_every_port() {
    let world = World::start(1).await;
    let added = world.server.add_node("node-9").await.expect("a new node");
    let (_, _, nodes) = world.read(&world.url("/v1/catalog/nodes")).await;
    let names: Vec<&str> = nodes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["Node"].as_str())
        .collect();
    assert_eq!(names, vec!["node-1", "node-9", "server-1"]);
    let resp = world.get(&format!("http://{added}/v1/agent/self")).await;
    let me: Value = resp.json().await.expect("JSON");
    assert_eq!(me["Config"]["NodeName"], "node-9");
    assert_eq!(me["Config"]["Datacenter"], "dc1");
    assert!(
        me["Config"]["NodeID"]
            .as_str()
            .is_some_and(|id| id.len() == 36)
    );

    world.server.remove_node("node-9").await.expect("removed");
    assert!(
        world
            .http
            .get(format!("http://{added}/v1/agent/self"))
            .send()
            .await
            .is_err(),
        "listener closed"
    );
    let (_, _, nodes) = world.read(&world.url("/v1/catalog/nodes")).await;
    assert_eq!(nodes.as_array().map(Vec::len), Some(2));
    let resp = world
        .put_json(&world.url("/sandbox/v1/nodes"), &json!({"Name": "node-7"}))
        .await;
    let joined: Value = resp.json().await.expect("JSON");
    assert_eq!(joined["Name"], "node-7");
    assert!(
        world.server.add_node("node-1").await.is_err(),
        "names are unique"
    );

    let mut addrs: Vec<_> = world.server.nodes().into_iter().map(|n| n.addr).collect();
    addrs.push(world.server.http_addr());
    let World { server, http } = world;
    server.shutdown().await;
    for addr in addrs {
        assert!(
            http.get(format!("http://{addr}/v1/status/leader"))
                .send()
                .await
                .is_err()
        );
        std::net::TcpListener::bind(addr).unwrap_or_else(|e| panic!("port of {addr} is free: {e}"));
    }
}

/// `GET path` on `addr` with an optional token; answers the status line.
fn raw_get(addr: &str, path: &str, token: Option<&str>) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).expect("connects");
    let header = token.map_or(String::new(), |t| format!("X-Consul-Token: {t}\r\n"));
    let _ = s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n{header}Connection: close\r\n\r\n").as_bytes(),
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines().next().unwrap_or_default().to_string()
}

/// Starts `sandbox consul` with `args`; answers the child and its ready line.
fn start_binary(args: &[&str]) -> (std::process::Child, Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sandbox"))
        .arg("consul")
        .args(args)
        .env_remove("SANDBOX_CONSUL_ACL_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("a line");
    (child, serde_json::from_str(&line).expect("one JSON line"))
}

#[test]
fn the_binary_runs_with_acls_on_unless_told_otherwise() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("mgmt.token");
    let file_arg = file.display().to_string();
    let (mut child, ready) =
        start_binary(&["--listen", "127.0.0.1:0", "--acl-token-file", &file_arg]);
    let http = ready["http"].as_str().expect("http").to_string();
    assert_eq!(ready["acl"], true);
    assert_eq!(ready["management_token_file"], file_arg.as_str());
    let token = std::fs::read_to_string(&file).expect("the token file");
    assert!(
        !ready.to_string().contains(token.trim()),
        "the line never holds the secret"
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&file)
        .expect("metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "only the owner may read the token file");
    assert!(raw_get(&http, "/v1/kv/x", None).contains("403"));
    assert!(raw_get(&http, "/v1/kv/x", Some(token.trim())).contains("404"));
    let _ = child.kill();
    let _ = child.wait();

    let (mut child, ready) = start_binary(&["--listen", "127.0.0.1:0", "--no-acls"]);
    assert_eq!(ready["acl"], false);
    assert!(ready.get("management_token_file").is_none());
    let http = ready["http"].as_str().expect("http").to_string();
    assert!(raw_get(&http, "/v1/kv/x", None).contains("404"));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_binary_prints_its_addresses_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("mgmt.token").display().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sandbox"))
        .args([
            "consul",
            "--listen",
            "127.0.0.1:0",
            "--nodes",
            "2",
            "--acl-token-file",
            &file,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("a line");
    let ready: Value = serde_json::from_str(&line).expect("one JSON line");
    let http = ready["http"].as_str().expect("http").to_string();
    assert_eq!(ready["nodes"].as_array().map(Vec::len), Some(2));
    assert_eq!(ready["nodes"][0]["name"], "node-1");

    let leader = std::net::TcpStream::connect(&http).map(|mut s| {
        use std::io::{Read as _, Write as _};
        let _ =
            s.write_all(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    });
    assert!(leader.expect("connects").contains("127.0.0.1:8300"));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = child.wait().expect("the binary exits");
    assert!(exit.success(), "clean exit on SIGTERM: {exit:?}");
}
