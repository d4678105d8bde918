//! The console's JSON API against the sandbox Consul with ACLs on: who may
//! act is decided by Consul from the caller's token; refused, unknown and
//! repeated actions answer a clear 4xx and record nothing; two operators
//! approving at once, exactly one wins; any replica answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod console_support;

use console_support::{Answer, Auth, ConsoleWorld, call};
use reqwest::Method;
use rollgate::rollout::plan::Decision;
use serde_json::json;

/// Every operator action on plan `plan` (or its service's rollout).
fn actions(plan: &str) -> Vec<(&'static str, String, Option<serde_json::Value>)> {
    vec![
        ("approve", format!("/v1/plans/{plan}/approve"), None),
        (
            "reject",
            format!("/v1/plans/{plan}/reject"),
            Some(json!({ "reason": "not today" })),
        ),
        ("pause", "/v1/services/web/pause".into(), None),
        ("resume", "/v1/services/web/resume".into(), None),
        (
            "abort",
            "/v1/services/web/abort".into(),
            Some(json!({ "reason": "stop" })),
        ),
        ("promote", "/v1/services/web/promote".into(), None),
    ]
}

/// Nothing was recorded: the plan still pending, no command queued.
async fn nothing_recorded(w: &ConsoleWorld, plan: &str) {
    let (p, _) = w.store().plan(plan).await.unwrap();
    assert!(
        matches!(p.decision, Decision::Pending { .. }),
        "the plan is still pending: {:?}",
        p.decision
    );
    assert!(
        w.store().commands("web").await.unwrap().0.is_empty(),
        "no command queued"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_without_a_token_with_an_unknown_one_or_without_the_operator_policy_is_refused_and_records_nothing()
 {
    let w = ConsoleWorld::new().await;
    let plan = w.pending_plan(1).await;
    w.active_rollout(&plan).await;
    let addr = w.console("a").await;
    let unknown = sandbox::acl_roles::Secret::random();
    // The CI role can read plans and the rollout but write neither.
    let ci = w.roles.secret("ci").unwrap().expose().to_owned();
    for (name, path, body) in actions(&plan) {
        let a = call(addr, Method::POST, &path, Auth::None, body.clone()).await;
        assert_eq!(a.status, 401, "{name} without a token: {a:?}");
        assert!(a.error().contains("X-Consul-Token"), "{name}: {a:?}");

        let a = call(
            addr,
            Method::POST,
            &path,
            Auth::ConsulHeader(unknown.expose()),
            body.clone(),
        )
        .await;
        assert_eq!(a.status, 403, "{name} with an unknown token: {a:?}");
        assert!(
            a.error().contains("does not know this token"),
            "{name}: {a:?}"
        );
        assert!(
            !a.error().contains(unknown.expose()),
            "the secret is never echoed"
        );

        let a = call(addr, Method::POST, &path, Auth::Bearer(&ci), body.clone()).await;
        assert_eq!(a.status, 403, "{name} without the operator policy: {a:?}");
        let e = a.error();
        assert!(e.contains("key:write"), "names the permission: {e}");
        assert!(
            e.contains("config/acl/operator.hcl"),
            "names the policy: {e}"
        );
        assert!(!e.contains(&ci), "the secret is never echoed");
        nothing_recorded(&w, &plan).await;
    }
    // A malformed Authorization is bad input, not an anonymous call.
    let http = reqwest::Client::new();
    let r = http
        .post(format!("http://{addr}/v1/plans/{plan}/approve"))
        .header("Authorization", "Basic b3BzOnNlY3JldA==")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    nothing_recorded(&w, &plan).await;
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_plans_and_services_bad_input_and_a_second_decision_are_clear_4xx() {
    let w = ConsoleWorld::new().await;
    let plan = w.pending_plan(1).await;
    let addr = w.console("a").await;
    let (alice, alice_id) = w.operator_token("alice").await;
    let op = Auth::ConsulHeader(alice.expose());

    for (path, status) in [
        ("/v1/plans/web-999/approve", 404),
        ("/v1/plans/api-1/approve", 404),
        ("/v1/plans/not-a-plan/approve", 400),
        ("/v1/services/api/pause", 404),
        // No rollout in progress: the state refuses it.
        ("/v1/services/web/pause", 409),
        ("/v1/services/web/promote", 409),
    ] {
        let a = call(addr, Method::POST, path, op.clone(), None).await;
        assert_eq!(a.status, status, "{path}: {a:?}");
        assert!(!a.error().is_empty(), "{path}: a JSON error: {a:?}");
    }
    let a = call(addr, Method::GET, "/v1/plans/web-999", op.clone(), None).await;
    assert_eq!(a.status, 404, "{a:?}");
    // A rejection needs a reason; bad JSON is a 400.
    let path = format!("/v1/plans/{plan}/reject");
    let a = call(addr, Method::POST, &path, op.clone(), Some(json!({}))).await;
    assert_eq!(a.status, 400, "{a:?}");
    assert!(a.error().contains("reason"), "{a:?}");
    let a = call(
        addr,
        Method::POST,
        &path,
        op.clone(),
        Some(json!({"why": 1})),
    )
    .await;
    assert_eq!(a.status, 400, "{a:?}");
    nothing_recorded(&w, &plan).await;

    // The first approval wins and records who, from the token.
    let path = format!("/v1/plans/{plan}/approve");
    let a = call(addr, Method::POST, &path, op.clone(), None).await;
    assert_eq!(a.status, 200, "{a:?}");
    let (p, _) = w.store().plan(&plan).await.unwrap();
    let Decision::Approved { by, .. } = &p.decision else {
        panic!("approved: {:?}", p.decision);
    };
    assert!(by.contains("alice") && by.contains(&alice_id), "{by}");
    assert!(!by.contains(alice.expose()), "never the secret: {by}");
    // The second answers who decided, and changes nothing.
    let a = call(addr, Method::POST, &path, op.clone(), None).await;
    assert_eq!(a.status, 409, "{a:?}");
    assert!(a.error().contains("approved by alice"), "{a:?}");
    let a = call(
        addr,
        Method::POST,
        &format!("/v1/plans/{plan}/reject"),
        op.clone(),
        Some(json!({"reason": "too late"})),
    )
    .await;
    assert_eq!(a.status, 409, "{a:?}");
    let (after, _) = w.store().plan(&plan).await.unwrap();
    assert_eq!(after.decision, p.decision, "unchanged by the refused calls");
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operators_approving_at_once_exactly_one_wins() {
    let w = ConsoleWorld::new().await;
    let a_addr = w.console("a").await;
    let b_addr = w.console("b").await;
    let (alice, _) = w.operator_token("alice").await;
    let (bob, _) = w.operator_token("bob").await;
    for n in 1..=5 {
        let plan = w.pending_plan(n).await;
        let path = format!("/v1/plans/{plan}/approve");
        // Through two replicas, as two browsers might.
        let (x, y): (Answer, Answer) = tokio::join!(
            call(
                a_addr,
                Method::POST,
                &path,
                Auth::ConsulHeader(alice.expose()),
                None
            ),
            call(
                b_addr,
                Method::POST,
                &path,
                Auth::Bearer(bob.expose()),
                None
            ),
        );
        let mut statuses = [x.status, y.status];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409], "exactly one wins: {x:?} {y:?}");
        let winner = if x.status == 200 { "alice" } else { "bob" };
        let (p, _) = w.store().plan(&plan).await.unwrap();
        match &p.decision {
            Decision::Approved { by, .. } => assert!(by.starts_with(winner), "{by}"),
            other => panic!("{other:?}"),
        }
        let loser = if x.status == 409 { &x } else { &y };
        assert!(
            loser.error().contains(&format!("approved by {winner}")),
            "{loser:?}"
        );
    }
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_answer_with_the_callers_token_and_commands_reach_the_rollout() {
    let w = ConsoleWorld::new().await;
    let plan = w.pending_plan(1).await;
    let addr = w.console("b").await;
    let (alice, _) = w.operator_token("alice").await;
    let op = Auth::ConsulHeader(alice.expose());

    let a = call(addr, Method::GET, "/v1/whoami", op.clone(), None).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert!(
        a.body["who"].as_str().unwrap().starts_with("alice ("),
        "{a:?}"
    );
    assert_eq!(a.body["acls"], true);

    let a = call(addr, Method::GET, "/v1/services", op.clone(), None).await;
    assert_eq!(a.status, 200, "{a:?}");
    let web = &a.body["services"][0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["pending_plans"], json!([plan.clone()]));
    // The operator policy reads the stable record (none recorded yet).
    assert!(web["stable_refused"].is_null(), "{web}");
    // A token without that read (the CI role's) is told so, not shown
    // "no stable version".
    let ci = w.roles.secret("ci").unwrap().expose().to_owned();
    let a = call(
        addr,
        Method::GET,
        "/v1/services",
        Auth::ConsulHeader(&ci),
        None,
    )
    .await;
    assert!(
        a.body["services"][0]["stable_refused"]
            .as_str()
            .unwrap_or_default()
            .contains("key:read"),
        "{a:?}"
    );

    let a = call(
        addr,
        Method::GET,
        "/v1/services/web/plans",
        op.clone(),
        None,
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    let p = &a.body["plans"][0];
    assert_eq!(p["id"], plan.as_str());
    assert_eq!(p["awaiting_decision"], true);
    let diff = p["diff"].as_str().unwrap();
    assert!(diff.contains("1.2.3") && diff.contains("1.3.0"), "{diff}");
    assert_eq!(
        diff,
        rollgate::rollout::render::plan(
            &w.store().plan(&plan).await.unwrap().0,
            rollgate::rollout::render::Style { color: false }
        ),
        "the same diff as `rollgate plan`"
    );

    // No rollout yet, then one.
    let a = call(
        addr,
        Method::GET,
        "/v1/services/web/rollout",
        op.clone(),
        None,
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.body["rollout"].is_null(), "{a:?}");
    w.active_rollout(&plan).await;
    let a = call(
        addr,
        Method::GET,
        "/v1/services/web/rollout",
        op.clone(),
        None,
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.body["rollout"]["phase"], "pending");
    assert_eq!(a.body["rollout"]["plan"], plan.as_str());

    for (path, body) in [
        ("/v1/services/web/pause", None),
        ("/v1/services/web/resume", None),
        ("/v1/services/web/promote", None),
        (
            "/v1/services/web/abort",
            Some(json!({"reason": "bad idea"})),
        ),
    ] {
        let a = call(addr, Method::POST, path, op.clone(), body).await;
        assert_eq!(a.status, 202, "{path}: {a:?}");
    }
    let (commands, _) = w.store().commands("web").await.unwrap();
    assert_eq!(commands.len(), 4, "{commands:?}");
    let abort = format!("{:?}", commands[3].2);
    assert!(
        abort.contains("alice") && abort.contains("bad idea"),
        "{abort}"
    );

    // The operator policy reads the outbox; a token without that read (the
    // CI role's) is filtered rather than refused by Consul, and the console
    // says so instead of showing an empty outbox.
    let coordinator_client = w.client("coordinator");
    assert!(
        coordinator_client
            .kv_put(
                "rollgate/outbox/some-event",
                b"{}",
                &rollgate::consul::kv::PutOptions::default()
            )
            .await
            .unwrap()
    );
    let a = call(addr, Method::GET, "/v1/outbox", op.clone(), None).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.body["depth"], 0, "{a:?}");
    let a = call(
        addr,
        Method::GET,
        "/v1/outbox",
        Auth::ConsulHeader(&ci),
        None,
    )
    .await;
    assert_eq!(a.status, 403, "{a:?}");
    assert!(a.error().contains("rollgate/outbox/"), "{a:?}");
    assert!(
        a.error().contains("X-Consul-Results-Filtered-By-ACLs"),
        "{a:?}"
    );
    // The coordinator's own token reads it.
    let coordinator = w.roles.secret("coordinator").unwrap().expose().to_owned();
    let a = call(
        addr,
        Method::GET,
        "/v1/outbox",
        Auth::Bearer(&coordinator),
        None,
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.body["depth"], 0);

    // Unknown paths and methods answer JSON too.
    let a = call(addr, Method::GET, "/v1/nothing", op.clone(), None).await;
    assert_eq!(a.status, 404);
    assert!(!a.error().is_empty());
    let a = call(addr, Method::DELETE, "/v1/services", op.clone(), None).await;
    assert_eq!(a.status, 405);
    assert!(!a.error().is_empty());
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_consuls_acls_off_the_operator_names_themself() {
    let w = ConsoleWorld::without_acls().await;
    let plan = w.pending_plan(1).await;
    let addr = w.console("a").await;
    let path = format!("/v1/plans/{plan}/approve");
    let a = call(addr, Method::POST, &path, Auth::None, None).await;
    assert_eq!(a.status, 401, "{a:?}");
    assert!(a.error().contains("X-Rollgate-Operator"), "{a:?}");
    nothing_recorded(&w, &plan).await;
    let r = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .header("X-Rollgate-Operator", "carol")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (p, _) = w.store().plan(&plan).await.unwrap();
    match p.decision {
        Decision::Approved { by, .. } => assert_eq!(by, "carol"),
        other => panic!("{other:?}"),
    }
    w.shutdown().await;
}
