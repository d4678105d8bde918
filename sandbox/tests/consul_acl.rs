//! ACLs as Consul enforces them with `default_policy = "deny"`: policies in
//! HCL and tokens created through the API, rule precedence (exact over
//! prefix, longest prefix, deny wins), Consul's 403 texts, unknown and
//! revoked tokens, `token/self`, filtered list answers with
//! `X-Consul-Results-Filtered-By-ACLs`, and ACLs per `/v1/txn` operation.

mod consul_support;

use base64::Engine as _;
use consul_support::World;
use reqwest::{Method, StatusCode};
use sandbox::consul::Config;
use serde_json::{Value, json};

const ROOT: &str = "root-secret";
const FILTERED: &str = "x-consul-results-filtered-by-acls";

struct Answer {
    status: StatusCode,
    filtered: bool,
    body: Value,
}

/// A request to the sandbox Consul's HTTP API at `path`.
async fn call(
    world: &World,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Answer {
    call_url(world, method, &world.url(path), token, body).await
}

/// A request to `url` (a node agent's address, for instance).
async fn call_url(
    world: &World,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let mut req = world.http.request(method, url);
    if let Some(t) = token {
        req = req.header("X-Consul-Token", t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("a request");
    let status = resp.status();
    let filtered = resp.headers().get(FILTERED).is_some_and(|v| v == "true");
    let text = resp.text().await.expect("a body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        filtered,
        body,
    }
}

async fn acl_world(nodes: usize) -> World {
    World::with(Config {
        nodes,
        ..Config::with_acls(ROOT)
    })
    .await
}

/// `PUT path` with the root token and a JSON body.
async fn root_put(world: &World, path: &str, body: Value) -> Answer {
    call(world, Method::PUT, path, Some(ROOT), Some(body)).await
}

/// Creates a policy with `rules` and a token holding it; answers the token.
async fn token_with(world: &World, name: &str, rules: &str) -> Value {
    let policy = root_put(
        world,
        "/v1/acl/policy",
        json!({"Name": name, "Rules": rules}),
    )
    .await;
    assert_eq!(policy.status, 200, "{}", policy.body);
    let token = root_put(
        world,
        "/v1/acl/token",
        json!({"Description": format!("{name} token"), "Policies": [{"Name": name}]}),
    )
    .await;
    assert_eq!(token.status, 200, "{}", token.body);
    token.body
}

fn secret(token: &Value) -> &str {
    token["SecretID"].as_str().expect("a SecretID")
}

fn denied(token: &Value, permission: &str, name: &str) -> Value {
    Value::String(format!(
        "Permission denied: token with AccessorID '{}' lacks permission '{permission}' on \"{name}\"",
        token["AccessorID"].as_str().expect("an AccessorID")
    ))
}

#[tokio::test]
async fn policies_and_tokens_are_created_and_tell_who_they_are() {
    let world = acl_world(0).await;
    let policy = root_put(&world, "/v1/acl/policy", json!({"Name": "reader", "Description": "reads", "Rules": "key_prefix \"\" { policy = \"read\" }"}))
    .await;
    assert_eq!(policy.status, 200);
    let id = policy.body["ID"].as_str().expect("an ID").to_string();
    assert_eq!(policy.body["Name"], "reader");
    assert_eq!(
        policy.body["Rules"],
        "key_prefix \"\" { policy = \"read\" }"
    );
    let read = call(
        &world,
        Method::GET,
        &format!("/v1/acl/policy/{id}"),
        Some(ROOT),
        None,
    )
    .await;
    assert_eq!(
        (read.status, &read.body["Name"]),
        (StatusCode::OK, &json!("reader"))
    );

    let chosen = "6a1253d2-1785-24fd-91c2-f8e78c745511";
    let token = root_put(
        &world,
        "/v1/acl/token",
        json!({"Description": "ci", "SecretID": chosen, "Policies": [{"ID": id}]}),
    )
    .await;
    assert_eq!(token.status, 200, "{}", token.body);
    assert_eq!(
        token.body["SecretID"], chosen,
        "a caller-given SecretID is kept"
    );
    assert_eq!(token.body["Description"], "ci");
    assert_eq!(
        token.body["Policies"],
        json!([{"ID": id, "Name": "reader"}])
    );
    let me = call(
        &world,
        Method::GET,
        "/v1/acl/token/self",
        Some(chosen),
        None,
    )
    .await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["AccessorID"], token.body["AccessorID"]);
    assert_eq!(me.body["Description"], "ci");
    let anonymous = call(&world, Method::GET, "/v1/acl/token/self", None, None).await;
    assert_eq!(
        (anonymous.status, anonymous.body),
        (StatusCode::FORBIDDEN, json!("ACL not found")),
        "no token sent: no token to describe"
    );
    let missing = call(
        &world,
        Method::GET,
        "/v1/acl/policy/00000000-0000-0000-0000-0000000000ff",
        Some(ROOT),
        None,
    )
    .await;
    assert_eq!(
        (missing.status, missing.body),
        (
            StatusCode::NOT_FOUND,
            json!("Requested policy does not exist: ACL not found")
        )
    );

    // Consul's validation texts.
    let bad = root_put(&world, "/v1/acl/token", json!({"SecretID": "not-a-uuid"})).await;
    assert_eq!(bad.body, "Invalid Token: SecretID is not a valid UUID");
    let bad = root_put(
        &world,
        "/v1/acl/token",
        json!({"Policies": [{"Name": "nope"}]}),
    )
    .await;
    assert_eq!(bad.body, "No such ACL policy with name \"nope\"");
    let bad = root_put(
        &world,
        "/v1/acl/policy",
        json!({"Name": "broken", "Rules": "key \"a\" { policy = \"sometimes\" }"}),
    )
    .await;
    assert!(bad.status.is_server_error(), "{}", bad.body);

    // Managing ACLs needs acl = "write".
    let reader = json!({"AccessorID": token.body["AccessorID"]});
    let refused = call(
        &world,
        Method::PUT,
        "/v1/acl/policy",
        Some(chosen),
        Some(json!({"Name": "mine", "Rules": ""})),
    )
    .await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.body,
        format!(
            "Permission denied: token with AccessorID '{}' lacks permission 'acl:write'",
            reader["AccessorID"].as_str().unwrap_or_default()
        )
    );
    let admin = token_with(&world, "admin", "acl = \"write\"").await;
    let made = call(
        &world,
        Method::PUT,
        "/v1/acl/policy",
        Some(secret(&admin)),
        Some(json!({"Name": "by-admin", "Rules": ""})),
    )
    .await;
    assert_eq!(made.status, 200);
}

#[tokio::test]
async fn unknown_and_revoked_tokens_are_acl_not_found() {
    let world = acl_world(0).await;
    let unknown = call(&world, Method::GET, "/v1/kv/a", Some("nope"), None).await;
    assert_eq!(
        (unknown.status, unknown.body),
        (StatusCode::FORBIDDEN, json!("ACL not found"))
    );
    let token = token_with(&world, "kv", "key_prefix \"\" { policy = \"write\" }").await;
    let put = call(
        &world,
        Method::PUT,
        "/v1/kv/a",
        Some(secret(&token)),
        Some(json!("v")),
    )
    .await;
    assert_eq!(put.status, 200);
    let accessor = token["AccessorID"].as_str().expect("an AccessorID");
    let revoke = call(
        &world,
        Method::DELETE,
        &format!("/v1/acl/token/{accessor}"),
        Some(ROOT),
        None,
    )
    .await;
    assert_eq!((revoke.status, revoke.body), (StatusCode::OK, json!(true)));
    let after = call(&world, Method::GET, "/v1/kv/a", Some(secret(&token)), None).await;
    assert_eq!(
        (after.status, after.body),
        (StatusCode::FORBIDDEN, json!("ACL not found"))
    );
    let me = call(
        &world,
        Method::GET,
        "/v1/acl/token/self",
        Some(secret(&token)),
        None,
    )
    .await;
    assert_eq!(
        me.status, 403,
        "a revoked token is not found by token/self either"
    );
}

#[tokio::test]
async fn exact_beats_prefix_longest_prefix_wins_and_deny_wins() {
    let world = acl_world(0).await;
    for key in ["app/a", "app/secret/x", "app/secret/open", "other"] {
        let put = root_put(&world, &format!("/v1/kv/{key}"), json!(1)).await;
        assert_eq!(put.status, 200);
    }
    let rules = r#"
        key_prefix "" { policy = "read" }
        key_prefix "app/" { policy = "write" }
        key_prefix "app/secret/" { policy = "deny" }
        key "app/secret/open" { policy = "read" }
    "#;
    let token = token_with(&world, "layers", rules).await;
    // A second policy on the same token: deny wins over its write.
    let deny = root_put(
        &world,
        "/v1/acl/policy",
        json!({"Name": "deny-a", "Rules": "key \"app/a\" { policy = \"deny\" }"}),
    )
    .await;
    assert_eq!(deny.status, 200);
    let both = root_put(
        &world,
        "/v1/acl/token",
        json!({"Policies": [{"Name": "layers"}, {"Name": "deny-a"}, {"Name": "write-a"}]}),
    )
    .await;
    assert_eq!(both.status, 500, "an unknown policy name is refused");
    let write_a = root_put(
        &world,
        "/v1/acl/policy",
        json!({"Name": "write-a", "Rules": "key \"app/a\" { policy = \"write\" }"}),
    )
    .await;
    assert_eq!(write_a.status, 200);
    let both = root_put(
        &world,
        "/v1/acl/token",
        json!({"Policies": [{"Name": "layers"}, {"Name": "deny-a"}, {"Name": "write-a"}]}),
    )
    .await;
    assert_eq!(both.status, 200);

    let t = secret(&token);
    let get = |key: &'static str, token: String| {
        let url = format!("/v1/kv/{key}");
        let world = &world;
        async move { call(world, Method::GET, &url, Some(&token), None).await }
    };
    let put = |key: &'static str, token: String| {
        let url = format!("/v1/kv/{key}");
        let world = &world;
        async move { call(world, Method::PUT, &url, Some(&token), Some(json!(2))).await }
    };
    assert_eq!(
        get("other", t.into()).await.status,
        200,
        "the empty prefix reads"
    );
    assert_eq!(
        put("other", t.into()).await.body,
        denied(&token, "key:write", "other")
    );
    assert_eq!(
        put("app/a", t.into()).await.status,
        200,
        "the longer prefix writes"
    );
    assert_eq!(
        get("app/secret/x", t.into()).await.body,
        denied(&token, "key:read", "app/secret/x"),
        "the longest prefix denies"
    );
    assert_eq!(
        get("app/secret/open", t.into()).await.status,
        200,
        "exact beats prefix"
    );
    assert_eq!(
        put("app/secret/open", t.into()).await.body,
        denied(&token, "key:write", "app/secret/open")
    );
    let merged = secret(&both.body).to_string();
    assert_eq!(
        get("app/a", merged.clone()).await.body,
        denied(&both.body, "key:read", "app/a"),
        "deny wins over write at the same rule"
    );
    let anonymous = call(&world, Method::GET, "/v1/kv/other", None, None).await;
    assert_eq!(
        anonymous.body,
        "Permission denied: anonymous token lacks permission 'key:read' on \"other\". \
         The anonymous token is used implicitly when a request does not specify a token."
    );
}

async fn register(world: &World, node: &str, name: &str) {
    let resp = call_url(
        world,
        Method::PUT,
        &world.agent(node, "/v1/agent/service/register"),
        Some(ROOT),
        Some(json!({"ID": name, "Name": name, "Check": {"CheckID": format!("{name}-ttl"), "TTL": "30s", "Status": "passing"}})),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
}

#[tokio::test]
async fn list_catalog_and_health_answers_are_filtered_with_the_header() {
    let world = acl_world(2).await;
    register(&world, "node-1", "web").await;
    register(&world, "node-2", "api").await;
    let web_reader = token_with(
        &world,
        "web-reader",
        r#"
        service "web" { policy = "read" }
        node_prefix "" { policy = "read" }
        "#,
    )
    .await;
    let t = Some(secret(&web_reader));

    let health = call(&world, Method::GET, "/v1/health/service/web", t, None).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.body.as_array().map(Vec::len), Some(1));
    assert!(!health.filtered, "nothing was removed");
    let hidden = call(&world, Method::GET, "/v1/health/service/api", t, None).await;
    assert_eq!((hidden.status, &hidden.body), (StatusCode::OK, &json!([])));
    assert!(hidden.filtered, "an empty answer says it was filtered");

    let services = call(&world, Method::GET, "/v1/catalog/services", t, None).await;
    let names: Vec<&String> = services.body.as_object().expect("a map").keys().collect();
    assert_eq!(names, ["web"], "consul and api are hidden");
    assert!(services.filtered);
    let catalog = call(&world, Method::GET, "/v1/catalog/service/api", t, None).await;
    assert_eq!(catalog.body, json!([]));
    assert!(catalog.filtered);
    let state = call(&world, Method::GET, "/v1/health/state/any", t, None).await;
    let ids: Vec<&str> = state
        .body
        .as_array()
        .expect("checks")
        .iter()
        .filter_map(|c| c["CheckID"].as_str())
        .collect();
    assert!(
        ids.contains(&"web-ttl") && ids.contains(&"serfHealth"),
        "{ids:?}"
    );
    assert!(!ids.contains(&"api-ttl"));
    assert!(state.filtered);
    let nodes = call(&world, Method::GET, "/v1/catalog/nodes", t, None).await;
    assert_eq!(nodes.body.as_array().map(Vec::len), Some(3));
    assert!(!nodes.filtered);
    let agent = call_url(
        &world,
        Method::GET,
        &world.agent("node-2", "/v1/agent/services"),
        t,
        None,
    )
    .await;
    assert_eq!((agent.body, agent.filtered), (json!({}), true));

    // Health of an instance needs node read as well as service read.
    let no_nodes = token_with(
        &world,
        "no-nodes",
        r#"service_prefix "" { policy = "read" }"#,
    )
    .await;
    let health = call(
        &world,
        Method::GET,
        "/v1/health/service/web",
        Some(secret(&no_nodes)),
        None,
    )
    .await;
    assert_eq!(
        (health.status, &health.body, health.filtered),
        (StatusCode::OK, &json!([]), true)
    );

    // The anonymous token is filtered too, but Consul does not say so.
    let anonymous = call(&world, Method::GET, "/v1/health/service/web", None, None).await;
    assert_eq!(
        (anonymous.status, &anonymous.body),
        (StatusCode::OK, &json!([]))
    );
    assert!(!anonymous.filtered);

    // Single-resource endpoints refuse instead.
    let one = call_url(
        &world,
        Method::GET,
        &world.agent("node-2", "/v1/agent/service/api"),
        t,
        None,
    )
    .await;
    assert_eq!(one.status, 403);
    assert_eq!(one.body, denied(&web_reader, "service:read", "api"));
    let register = call_url(
        &world,
        Method::PUT,
        &world.agent("node-1", "/v1/agent/service/register"),
        t,
        Some(json!({"Name": "web"})),
    )
    .await;
    assert_eq!(register.body, denied(&web_reader, "service:write", "web"));
    let session = call_url(
        &world,
        Method::PUT,
        &world.agent("node-1", "/v1/session/create"),
        t,
        Some(json!({})),
    )
    .await;
    assert_eq!(session.body, denied(&web_reader, "session:write", "node-1"));
}

#[tokio::test]
async fn a_node_agents_policy_registers_and_updates_its_own_service_only() {
    let world = acl_world(1).await;
    let agent = token_with(
        &world,
        "web-agent",
        r#"
        service "web" { policy = "write" }
        node "node-1" { policy = "write" }
        agent "node-1" { policy = "read" }
        "#,
    )
    .await;
    let t = Some(secret(&agent));
    let reg = call_url(
        &world,
        Method::PUT,
        &world.agent("node-1", "/v1/agent/service/register"),
        t,
        Some(json!({"ID": "web-1", "Name": "web", "Check": {"CheckID": "web-ttl", "TTL": "30s"}})),
    )
    .await;
    assert_eq!(reg.status, 200, "{}", reg.body);
    let pass = call_url(
        &world,
        Method::PUT,
        &world.agent("node-1", "/v1/agent/check/pass/web-ttl"),
        t,
        None,
    )
    .await;
    assert_eq!(pass.status, 200);
    let me = call_url(
        &world,
        Method::GET,
        &world.agent("node-1", "/v1/agent/self"),
        t,
        None,
    )
    .await;
    assert_eq!(me.status, 200);
    register(&world, "node-1", "api").await;
    let other = call_url(
        &world,
        Method::PUT,
        &world.agent("node-1", "/v1/agent/check/fail/api-ttl"),
        t,
        None,
    )
    .await;
    assert_eq!(other.body, denied(&agent, "service:write", "api"));
    let gone = call_url(
        &world,
        Method::PUT,
        &world.agent("node-1", "/v1/agent/check/fail/nope"),
        t,
        None,
    )
    .await;
    assert_eq!(
        gone.status, 404,
        "an unknown check is not found, whatever the token"
    );
}

#[tokio::test]
async fn txn_operations_are_checked_one_by_one() {
    let world = acl_world(0).await;
    let token = token_with(
        &world,
        "app",
        r#"
        key_prefix "app/" { policy = "write" }
        key "app/locked" { policy = "read" }
        "#,
    )
    .await;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let ops = json!([
        {"KV": {"Verb": "set", "Key": "app/a", "Value": b64("1")}},
        {"KV": {"Verb": "set", "Key": "app/locked", "Value": b64("1")}},
        {"KV": {"Verb": "set", "Key": "elsewhere", "Value": b64("1")}},
    ]);
    let answer = call(
        &world,
        Method::PUT,
        "/v1/txn",
        Some(secret(&token)),
        Some(ops),
    )
    .await;
    assert_eq!(answer.status, 409);
    assert_eq!(
        answer.body["Errors"],
        json!([
            {"OpIndex": 1, "What": denied(&token, "key:write", "app/locked")},
            {"OpIndex": 2, "What": denied(&token, "key:write", "elsewhere")},
        ])
    );
    let ok = json!([{"KV": {"Verb": "set", "Key": "app/a", "Value": b64("1")}}]);
    let answer = call(
        &world,
        Method::PUT,
        "/v1/txn",
        Some(secret(&token)),
        Some(ok),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let tree = json!([{"KV": {"Verb": "delete-tree", "Key": "app/"}}]);
    let answer = call(
        &world,
        Method::PUT,
        "/v1/txn",
        Some(secret(&token)),
        Some(tree),
    )
    .await;
    assert_eq!(
        answer.status, 409,
        "a read-only key below the prefix blocks delete-tree"
    );
}

#[tokio::test]
async fn acl_endpoints_say_when_acls_are_off() {
    let world = World::start(0).await;
    let answer = call(&world, Method::GET, "/v1/acl/token/self", None, None).await;
    assert_eq!(
        (answer.status, answer.body),
        (StatusCode::UNAUTHORIZED, json!("ACL support disabled"))
    );
}

#[tokio::test]
async fn kv_listings_are_filtered_even_down_to_a_404() {
    let world = acl_world(0).await;
    for key in ["app/a", "app/b", "secret/x"] {
        let put = root_put(&world, &format!("/v1/kv/{key}"), json!(1)).await;
        assert_eq!(put.status, 200);
    }
    let token = token_with(
        &world,
        "app-reader",
        r#"key_prefix "app/" { policy = "read" }"#,
    )
    .await;
    let t = Some(secret(&token));
    let all = call(&world, Method::GET, "/v1/kv/?recurse", t, None).await;
    let keys: Vec<&str> = all
        .body
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["Key"].as_str())
        .collect();
    assert_eq!((keys, all.filtered), (vec!["app/a", "app/b"], true));
    let hidden = call(&world, Method::GET, "/v1/kv/secret/?recurse", t, None).await;
    assert_eq!(
        (hidden.status, hidden.filtered),
        (StatusCode::NOT_FOUND, true)
    );
    let listed = call(&world, Method::GET, "/v1/kv/?keys", t, None).await;
    assert_eq!(
        (listed.body, listed.filtered),
        (json!(["app/a", "app/b"]), true)
    );
    let mine = call(&world, Method::GET, "/v1/kv/app/?recurse", t, None).await;
    assert!(!mine.filtered, "nothing removed, no header");
}

#[tokio::test]
async fn every_answer_names_the_default_acl_policy() {
    let header = |resp: &reqwest::Response| {
        resp.headers()
            .get("x-consul-default-acl-policy")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let on = acl_world(0).await;
    for path in [
        "/v1/status/leader",
        "/v1/kv/refused",
        "/v1/catalog/services",
    ] {
        let resp = on.get(&on.url(path)).await;
        assert_eq!(header(&resp).as_deref(), Some("deny"), "{path}");
    }
    let off = World::start(0).await;
    let resp = off.get(&off.url("/v1/catalog/services")).await;
    assert_eq!(header(&resp).as_deref(), Some("allow"));
}
