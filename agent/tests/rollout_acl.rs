//! Rollouts when Consul's ACLs get in the way, as they do in production:
//! a coordinator token that cannot see the service, and a token revoked
//! while a rollout runs. Every part is a real process (see
//! `rollout_support`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rollout_support;

use std::path::PathBuf;
use std::time::Duration;

use rollgate::rollout::store::Store;
use rollout_support::{INSTANCES, World};
use sandbox::acl_roles::{Secret, http_client, policy_dir};
use sandbox::moto::seed::ImageSpec;
use sandbox::testkit::until;
use serde_json::{Value, json};

/// `PUT /v1/acl/<what>` with the management token; answers Consul's JSON.
async fn acl_put(w: &World, what: &str, body: Value) -> Value {
    let http = http_client(&w.management, Duration::from_secs(10)).unwrap();
    let r = http
        .put(format!("http://{}/v1/acl/{what}", w.consul.http_addr()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "PUT /v1/acl/{what}: {}",
        r.status()
    );
    r.json().await.unwrap()
}

/// A token with `rules`, written to a token file; answers the file and the
/// token's AccessorID.
async fn token_with(w: &World, name: &str, rules: &str, secret: &Secret) -> (PathBuf, String) {
    acl_put(w, "policy", json!({ "Name": name, "Rules": rules })).await;
    let token = acl_put(
        w,
        "token",
        json!({
            "Description": name,
            "SecretID": secret.expose(),
            "Policies": [{ "Name": name }],
        }),
    )
    .await;
    let path = w.dir.path().join(format!("tokens/{name}.token"));
    secret.write_file(&path).unwrap();
    (path, token["AccessorID"].as_str().unwrap().to_owned())
}

/// A replica's configuration with another token file (replica a's
/// configuration is written too: the CLI helpers derive theirs from it).
fn config_with_token(w: &World, replica: &str, deadline: &str, token: &std::path::Path) -> PathBuf {
    w.config("a", deadline);
    let path = w.config(replica, deadline);
    let text = std::fs::read_to_string(&path).unwrap();
    let coordinator = w.token_file("coordinator").display().to_string();
    std::fs::write(
        &path,
        text.replace(&coordinator, &token.display().to_string()),
    )
    .unwrap();
    path
}

fn store(w: &World) -> Store {
    Store::new(w.client(), "rollgate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_that_cannot_read_the_service_neither_reverts_nor_calls_it_unhealthy() {
    let w = World::new().await;
    // The coordinator's policy, less what reading `web` needs: an exact
    // deny beats the policy's `service_prefix "" read`.
    let rules = format!(
        "{}\nservice \"web\" {{\n  policy = \"deny\"\n}}\n",
        std::fs::read_to_string(policy_dir().join("coordinator.hcl")).unwrap()
    );
    let (token, _) = token_with(&w, "blind-coordinator", &rules, &Secret::random()).await;
    let c = w.coordinator(&config_with_token(&w, "blind", "15s", &token));
    w.publish(ImageSpec::new("acmeinc/web", "1.1.0")).await;
    until(
        "the filtered answer is named",
        Duration::from_secs(60),
        || async {
            c.log()
                .contains("X-Consul-Results-Filtered-By-ACLs")
                .then_some(())
        },
    )
    .await;
    // Well past healthy_deadline: a gate that read "no instances" as
    // "unhealthy" would have failed and reverted by now.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let log = c.log();
    assert!(log.contains("service:read"), "names the permission:\n{log}");
    assert!(log.contains("\"web\""), "names the service:\n{log}");
    assert!(
        !log.contains("not healthy within"),
        "no false unhealthy:\n{log}"
    );
    let (rollout, _) = store(&w)
        .rollout("web")
        .await
        .unwrap()
        .expect("the rollout is still active, waiting");
    assert!(
        !rollout.is_terminal()
            && !matches!(
                rollout.state,
                rollgate::rollout::machine::State::Reverting(_)
            ),
        "no revert: {}",
        rollout.state.name()
    );
    let (desired, _, images) = w.fleet_state().await;
    assert_eq!(desired, INSTANCES, "nothing launched or terminated blind");
    assert_eq!(images.len(), INSTANCES as usize);
    drop(c);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_mid_rollout_stops_acting_and_the_rollout_resumes_with_a_valid_one() {
    let mut w = World::new().await;
    w.start_load().await;
    let rules = std::fs::read_to_string(policy_dir().join("coordinator.hcl")).unwrap();
    let secret = Secret::random();
    let (token, accessor) = token_with(&w, "revocable-coordinator", &rules, &secret).await;
    let mut c = w.coordinator(&config_with_token(&w, "revocable", "1m", &token));
    w.publish(ImageSpec::new("acmeinc/web", "1.1.0")).await;
    let s = store(&w);
    until(
        "the first batch launches",
        Duration::from_secs(120),
        || async {
            let (r, _) = s.rollout("web").await.ok()??;
            (r.state.name() == "launching").then_some(())
        },
    )
    .await;

    // Revoked: every call of the coordinator is now refused.
    let http = http_client(&w.management, Duration::from_secs(10)).unwrap();
    let r = http
        .delete(format!(
            "http://{}/v1/acl/token/{accessor}",
            w.consul.http_addr()
        ))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    until("the refusal is logged", Duration::from_secs(60), || async {
        c.log().contains("ACL not found").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (desired, _, _) = w.fleet_state().await;
    assert!(desired >= INSTANCES, "capacity kept while blind: {desired}");
    assert!(
        w.passing().await >= INSTANCES as usize,
        "still serving while the coordinator is refused"
    );
    assert!(
        c.child.try_wait().unwrap().is_none(),
        "the coordinator waits instead of exiting:\n{}",
        c.log()
    );

    // A valid token again (the same secret, as an operator restoring it).
    let _ = token_with(&w, "revocable-coordinator-2", &rules, &secret).await;
    let plan = w.outcome(Duration::from_secs(240)).await;
    let outcome = plan.outcome.clone().unwrap();
    assert_eq!(outcome.word(), "succeeded", "{outcome:?}\n{}", c.log());
    let report = w.shutdown().await.unwrap();
    assert_eq!(
        report.failed,
        0,
        "zero failed requests: {:?}",
        report.failures.first()
    );
    drop(c);
}
