//! `GET /services/{service}/timeline.svg` against the sandbox Consul with
//! ACLs on: the chart of the active rollout, or of the last finished one,
//! read with the caller's token (or the page's login session) as the API
//! reads; the API's JSON errors for a missing or unknown token and an
//! unknown service.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod console_support;

use std::net::SocketAddr;

use console_support::ConsoleWorld;
use rollgate::rollout::machine::{Rollout, Timestamp};
use rollgate::rollout::plan::{Decision, Outcome, Plan, now_ms};
use serde_json::json;

const PLAN: &str = include_str!("../src/rollout/store/testdata/plan_v1.json");
const SUCCEEDED: &str = include_str!("../src/console/testdata/timeline_succeeded.json");
const REVERTED: &str = include_str!("../src/console/testdata/timeline_reverted.json");

/// An answer: status, content type, body.
struct Got {
    status: u16,
    kind: String,
    body: String,
}

impl Got {
    fn error(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not a JSON error ({e}): {}", self.body));
        v["error"].as_str().unwrap_or_default().to_owned()
    }
}

async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Got {
    let mut r = reqwest::Client::new().get(format!("http://{addr}{path}"));
    if let Some(t) = token {
        r = r.header("X-Consul-Token", t);
    }
    let resp = r.send().await.unwrap();
    let kind = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    Got {
        status: resp.status().as_u16(),
        kind,
        body: resp.text().await.unwrap(),
    }
}

fn rollout(json: &str, id: &str) -> Rollout {
    let mut r: Rollout = serde_json::from_str(json).unwrap();
    r.spec.id = id.to_owned();
    r
}

/// Plan `id`, approved and finished with `outcome`, as the coordinator
/// records it.
async fn finished_plan(w: &ConsoleWorld, id: &str, outcome: Outcome) {
    let mut plan: Plan = rollgate::consul::records::decode("k", PLAN.as_bytes()).unwrap();
    plan.id = id.to_owned();
    plan.created_at = now_ms();
    plan.decision = Decision::Approved {
        by: "alice".into(),
        at: now_ms(),
    };
    plan.outcome = Some(outcome);
    assert!(w.store().create_plan(&plan).await.unwrap());
}

/// A token with the operator policy and `extra` rules, answering its
/// secret.
async fn operator_with(w: &ConsoleWorld, name: &str, extra: &str) -> String {
    w.acl_put(
        "policy",
        json!({ "Name": format!("{name}-extra"), "Rules": extra }),
    )
    .await;
    let secret = sandbox::acl_roles::Secret::random();
    let operator = w.roles.get("operator").unwrap().policy.clone();
    w.acl_put(
        "token",
        json!({
            "Description": name,
            "SecretID": secret.expose(),
            "Policies": [{ "Name": operator }, { "Name": format!("{name}-extra") }],
        }),
    )
    .await;
    secret.expose().to_owned()
}

/// Whether the checked-in operator policy lets operators read archived
/// rollouts.
fn operator_policy_reads_the_archive() -> bool {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/acl/operator.hcl");
    std::fs::read_to_string(path)
        .unwrap()
        .contains("key_prefix \"rollgate/services/web/rollouts/\"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_rollout_is_drawn_for_an_operator_and_refused_without_a_token() {
    let w = ConsoleWorld::new().await;
    let addr = w.console("a").await;
    let operator = w.roles.secret("operator").unwrap().expose().to_owned();
    let path = "/services/web/timeline.svg";

    // No rollout yet: a chart that says so.
    let g = get(addr, path, Some(&operator)).await;
    assert_eq!(g.status, 200, "{}", g.body);
    assert!(g.kind.starts_with("image/svg+xml"), "{}", g.kind);
    assert!(
        g.body.contains("<title>No rollout of web yet</title>"),
        "{}",
        g.body
    );

    let r = rollout(SUCCEEDED, "web-1");
    assert!(w.store().save_rollout(&r, 0).await.unwrap().is_some());
    let g = get(addr, path, Some(&operator)).await;
    assert_eq!(g.status, 200, "{}", g.body);
    assert!(g.kind.starts_with("image/svg+xml"), "{}", g.kind);
    assert!(
        g.body
            .starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\"")
    );
    assert!(
        g.body
            .contains("<title>Rollout web-1 of web: 1.0.0 → 2.0.0 (succeeded)</title>"),
        "{}",
        g.body
    );
    assert_eq!(
        g.body,
        rollgate::console::timeline::svg(&r, Timestamp::from_millis(now_ms())),
        "the record drawn as the renderer draws it (it ended: `now` does not matter)"
    );

    // The API's refusals, as JSON.
    let g = get(addr, path, None).await;
    assert_eq!(g.status, 401, "{}", g.body);
    assert!(g.kind.starts_with("application/json"));
    assert!(g.error().contains("X-Consul-Token"), "{}", g.error());
    let unknown = sandbox::acl_roles::Secret::random();
    let g = get(addr, path, Some(unknown.expose())).await;
    assert_eq!(g.status, 403, "{}", g.body);
    assert!(g.error().contains("does not know this token"));
    assert!(
        !g.body.contains(unknown.expose()),
        "the secret is never echoed"
    );

    // The page embeds the chart as an image: its login session stands for
    // the token.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = http
        .post(format!("http://{addr}/login"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("token", &operator)
                .finish(),
        )
        .send()
        .await
        .unwrap();
    let cookie = login
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .expect("a session cookie")
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let img = http
        .get(format!("http://{addr}{path}"))
        .header(reqwest::header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(img.status().as_u16(), 200);
    let body = img.text().await.unwrap();
    assert!(body.contains("(succeeded)</title>"), "{body}");
    let forged = http
        .get(format!("http://{addr}{path}"))
        .header(reqwest::header::COOKIE, "rollgate_session=forged")
        .send()
        .await
        .unwrap();
    assert_eq!(
        forged.status().as_u16(),
        401,
        "an unknown session is no session"
    );

    let g = get(addr, "/services/api/timeline.svg", Some(&operator)).await;
    assert_eq!(g.status, 404, "{}", g.body);
    assert!(g.kind.starts_with("application/json"));
    assert!(g.error().contains("no service \"api\""), "{}", g.error());
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_finished_rollout_is_drawn_from_its_archived_record() {
    let w = ConsoleWorld::new().await;
    let addr = w.console("a").await;
    let path = "/services/web/timeline.svg";
    let r = rollout(REVERTED, "web-2");
    finished_plan(
        &w,
        "web-2",
        Outcome::Aborted {
            at: now_ms(),
            reason: "checks".into(),
        },
    )
    .await;
    let index = w.store().save_rollout(&r, 0).await.unwrap().unwrap();
    assert!(w.store().archive_rollout(&r, index).await.unwrap());
    assert!(
        w.store().rollout("web").await.unwrap().is_none(),
        "archived"
    );

    let reader = operator_with(
        &w,
        "carol",
        "key_prefix \"rollgate/services/web/rollouts/\" { policy = \"read\" }",
    )
    .await;
    let g = get(addr, path, Some(&reader)).await;
    assert_eq!(g.status, 200, "{}", g.body);
    assert!(g.kind.starts_with("image/svg+xml"));
    assert!(g.body.contains("(aborted)</title>"), "{}", g.body);
    assert!(g.body.contains(">abort</text>"));
    assert!(
        g.body
            .contains("checks &lt;red&gt; &amp; &quot;failing&quot;")
    );

    // An operator token reads it only if the operator policy grants the
    // archive; otherwise the refusal names the rule it lacks.
    let operator = w.roles.secret("operator").unwrap().expose().to_owned();
    let g = get(addr, path, Some(&operator)).await;
    if operator_policy_reads_the_archive() {
        assert_eq!(g.status, 200, "{}", g.body);
    } else {
        assert_eq!(g.status, 403, "{}", g.body);
        let e = g.error();
        assert!(
            e.contains("key_prefix \"rollgate/services/web/rollouts/\"") && e.contains("web-2"),
            "{e}"
        );
    }
    w.shutdown().await;
}
