//! Approvals from Slack, end to end with real processes on loopback: moto,
//! the sandbox Consul with ACLs on (the coordinator uses its own role's
//! token), the fleet simulator, the Slack stand-in speaking Socket Mode, and
//! `rollgate coordinator`. The test "clicks" the buttons of the messages
//! the coordinator posted, as Slack users.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rollout_support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use rollgate::rollout::plan::{Decision, Plan};
use rollgate::rollout::store::Store;
use rollout_support::{Endpoints, World, rollgate_cli};
use sandbox::moto::seed::ImageSpec;
use sandbox::slack::{Post, User};
use sandbox::testkit::{LoggedChild, until};
use tokio::process::Command;

const BOT_TOKEN: &str = "xoxb-sandbox-token";

fn alice() -> User {
    User::new("U0ALICE", "alice")
}
fn carol() -> User {
    User::new("U0CAROL", "carol")
}
fn bob() -> User {
    User::new("U0BOB", "bob")
}
fn eve() -> User {
    User::new("U0EVE", "eve")
}

/// The world's coordinator configuration, with manual approval, the Slack
/// app on (the app-level token in a file) and alice, bob and the group
/// S0OPS (carol) allowed.
fn config(w: &World) -> std::path::PathBuf {
    config_with(w, "")
}

/// [`config`] with `extra` appended to `[services.rollout]`.
fn config_with(w: &World, extra: &str) -> std::path::PathBuf {
    replica_config(w, "a", extra)
}

/// [`config_with`] for replica `replica`.
fn replica_config(w: &World, replica: &str, extra: &str) -> std::path::PathBuf {
    let path = w.config_with(replica, &Endpoints::direct(w), "2m", extra);
    let app_token = w.dir.path().join("slack-app.token");
    std::fs::write(&app_token, sandbox::slack::Config::default().app_token).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("approval = \"auto\""), "{text}");
    let text = text.replace(
        "approval = \"auto\"",
        "approval = \"manual\"\nslack_approvers = [\"U0ALICE\", \"U0BOB\", \"S0OPS\"]",
    );
    let text = format!(
        "{text}\n[coordinator.slack_app]\nreceiver = \"ops-slack\"\napp_token_file = {:?}\n\
         reconnect_min = \"100ms\"\nreconnect_max = \"2s\"\n",
        app_token.display().to_string()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The coordinator, logging everything (so the token check means something).
fn coordinator(config: &Path) -> LoggedChild {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rollgate"));
    c.arg("--config")
        .arg(config)
        .arg("coordinator")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "debug")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::null());
    LoggedChild::spawn(c).unwrap()
}

fn has_button(post: &Post, action_id: &str) -> bool {
    post.blocks
        .to_string()
        .contains(&format!("\"{action_id}\""))
}

/// The message announcing `plan`, once it carries the Approve button.
async fn plan_message(w: &World, plan: &str) -> Post {
    let approve = format!("rollgate:approve:{plan}");
    until(
        &format!("the Slack message of {plan}"),
        Duration::from_secs(60),
        || async {
            w.slack
                .posts()
                .into_iter()
                .find(|p| p.thread_ts.is_none() && has_button(p, &approve))
        },
    )
    .await
}

async fn plan(w: &World, id: &str) -> Plan {
    Store::new(w.client(), "rollgate").plan(id).await.unwrap().0
}

async fn decided(w: &World, id: &str) -> Plan {
    let store = Store::new(w.client(), "rollgate");
    until(
        &format!("{id} decided"),
        Duration::from_secs(30),
        || async {
            let (p, _) = store.plan(id).await.ok()?;
            (!matches!(p.decision, Decision::Pending { .. })).then_some(p)
        },
    )
    .await
}

fn text_of(w: &World, ts: &str) -> String {
    let p = w.slack.posts().into_iter().find(|p| p.ts == ts).unwrap();
    format!("{} {}", p.text, p.blocks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plans_are_approved_and_rejected_from_slack_by_the_listed_users_only() {
    let w = World::new().await;
    w.slack.set_usergroup("S0OPS", &["U0CAROL"]);
    let cfg = config(&w);
    let coordinator = coordinator(&cfg);
    assert!(
        w.slack
            .wait_until(Duration::from_secs(60), |s| s.socket_connections() == 1)
            .await,
        "the leader opens a Socket Mode connection: {}",
        coordinator.log()
    );

    // A new image: plan web-1, announced with Approve and Reject.
    w.publish(ImageSpec::new("acmeinc/web", "2.0.0")).await;
    let msg = plan_message(&w, "web-1").await;
    assert!(has_button(&msg, "rollgate:reject:web-1"));

    // Eve is not listed: refused, told so, nothing recorded.
    let refused = w
        .slack
        .click(&eve(), &msg.ts, "rollgate:approve:web-1")
        .unwrap();
    assert!(
        w.slack
            .wait_until(Duration::from_secs(30), |s| s
                .ephemerals()
                .iter()
                .any(|e| e.user == "U0EVE"))
            .await
    );
    assert!(w.slack.acks().contains(&refused), "acknowledged");
    let e = w.slack.ephemerals();
    assert!(
        e[0].text.contains("not allowed to approve web"),
        "{:?}",
        e[0]
    );
    assert!(matches!(
        plan(&w, "web-1").await.decision,
        Decision::Pending { .. }
    ));

    // Bob rejects: a modal asks why; the reason is recorded and shown.
    w.slack
        .click(&bob(), &msg.ts, "rollgate:reject:web-1")
        .unwrap();
    assert!(
        w.slack
            .wait_until(Duration::from_secs(30), |s| !s.views().is_empty())
            .await,
        "a modal opens: {}",
        coordinator.log()
    );
    let view = w.slack.views().remove(0);
    assert_eq!(view.user, bob());
    assert!(matches!(
        plan(&w, "web-1").await.decision,
        Decision::Pending { .. }
    ));
    w.slack
        .submit_view(
            &view.id,
            &bob(),
            &[("reason", "reason", "error budget spent this week")],
        )
        .unwrap();
    let p = decided(&w, "web-1").await;
    let Decision::Rejected { by, reason, .. } = &p.decision else {
        panic!("rejected: {:?}", p.decision);
    };
    assert_eq!(by, "bob (Slack U0BOB)");
    assert_eq!(reason, "error budget spent this week");
    let (code, history) = rollgate_cli(&w, &["history", "web"]).await;
    assert_eq!(code, 0, "{history}");
    assert!(
        history.contains("error budget spent this week") && history.contains("bob (Slack U0BOB)"),
        "{history}"
    );
    assert!(
        w.slack
            .wait_until(Duration::from_secs(30), |s| {
                s.posts().iter().any(|p| p.ts == msg.ts && p.edits > 0)
            })
            .await
    );
    let shown = text_of(&w, &msg.ts);
    assert!(shown.contains("rejected by bob (Slack U0BOB)"), "{shown}");
    assert!(
        w.slack
            .click(&alice(), &msg.ts, "rollgate:approve:web-1")
            .is_err(),
        "the buttons are gone: {shown}"
    );

    // The socket drops: the leader opens another, and clicks work again.
    assert_eq!(w.slack.drop_sockets(), 1);
    assert!(
        w.slack
            .wait_until(Duration::from_secs(60), |s| s.sockets_opened() >= 2
                && s.socket_connections() == 1)
            .await,
        "re-opened: {}",
        coordinator.log()
    );

    // Plan web-2: alice and carol (through S0OPS) click Approve at once.
    w.publish(ImageSpec::new("acmeinc/web", "3.0.0")).await;
    let msg = plan_message(&w, "web-2").await;
    let first = w
        .slack
        .click(&alice(), &msg.ts, "rollgate:approve:web-2")
        .unwrap();
    let second = w
        .slack
        .click(&carol(), &msg.ts, "rollgate:approve:web-2")
        .unwrap();
    let p = decided(&w, "web-2").await;
    let Decision::Approved { by, .. } = &p.decision else {
        panic!("approved: {:?}", p.decision);
    };
    assert!(
        by == "alice (Slack U0ALICE)" || by == "carol (Slack U0CAROL)",
        "{by}"
    );
    let loser = if by.starts_with("alice") {
        "U0CAROL"
    } else {
        "U0ALICE"
    };
    assert!(
        w.slack
            .wait_until(Duration::from_secs(30), |s| s
                .ephemerals()
                .iter()
                .any(|e| e.user == loser))
            .await,
        "the other is told: {}",
        coordinator.log()
    );
    let told = w
        .slack
        .ephemerals()
        .into_iter()
        .find(|e| e.user == loser)
        .unwrap();
    assert!(
        told.text.contains(&format!("already approved by {by}")),
        "{told:?}"
    );
    // Slack delivers both envelopes again (acks lost): still one decision.
    assert!(
        w.slack
            .wait_until(Duration::from_secs(30), |s| {
                let acks = s.acks();
                acks.contains(&first) && acks.contains(&second)
            })
            .await
    );
    let acked = w.slack.acks().len();
    assert!(w.slack.redeliver(&first));
    assert!(w.slack.redeliver(&second));
    assert!(
        w.slack
            .wait_until(Duration::from_secs(30), |s| s.acks().len() >= acked + 2)
            .await,
        "redeliveries acknowledged"
    );
    assert_eq!(plan(&w, "web-2").await.decision, p.decision);
    // The message was updated in place to the decision, without buttons
    // (later notices of the rollout update it again), and the thread says it.
    let update = w
        .slack
        .updates()
        .into_iter()
        .find(|u| u.ts == msg.ts && u.text.contains("approved by"))
        .expect("the message updated with the decision");
    assert!(
        update.text.contains(&format!("approved by {by}")),
        "{update:?}"
    );
    assert!(
        !update.blocks.to_string().contains("rollgate:approve"),
        "{update:?}"
    );
    let replies: Vec<Post> = w
        .slack
        .posts()
        .into_iter()
        .filter(|p| {
            p.thread_ts.as_deref() == Some(msg.ts.as_str()) && p.text.contains("approved by")
        })
        .collect();
    assert_eq!(replies.len(), 1, "one decision, said once: {replies:?}");

    // The approved plan rolls out.
    let done = w.outcome(Duration::from_secs(240)).await;
    assert_eq!(done.id, "web-2");
    assert!(
        format!("{:?}", done.outcome).contains("Succeeded"),
        "{:?}",
        done.outcome
    );
    assert_eq!(
        w.slack
            .ephemerals()
            .iter()
            .filter(|e| e.user == loser)
            .count(),
        1,
        "a redelivered envelope is not answered twice"
    );

    // Tokens never in the logs.
    let log = coordinator.log();
    let app = sandbox::slack::Config::default().app_token;
    assert!(!log.contains(BOT_TOKEN), "bot token logged");
    assert!(!log.contains(&app), "app-level token logged");
    assert!(!log.contains("ticket="), "the Socket Mode URL logged");
    drop(coordinator);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiting_canary_is_promoted_from_slack_by_a_listed_user_only() {
    let w = World::new().await;
    w.slack.set_usergroup("S0OPS", &["U0CAROL"]);
    let cfg = config_with(&w, "canary = 1\nauto_promote = false\n");
    let coordinator = coordinator(&cfg);
    assert!(
        w.slack
            .wait_until(Duration::from_secs(60), |s| s.socket_connections() == 1)
            .await,
        "the leader opens a Socket Mode connection: {}",
        coordinator.log()
    );
    w.publish(ImageSpec::new("acmeinc/web", "2.0.0")).await;
    let msg = plan_message(&w, "web-1").await;
    w.slack
        .click(&alice(), &msg.ts, "rollgate:approve:web-1")
        .unwrap();
    decided(&w, "web-1").await;

    // The canary waits: its notice carries Promote (and Pause, Abort).
    let promote = "rollgate:promote:web-1";
    let waiting = until("a Promote button", Duration::from_secs(180), || async {
        w.slack
            .posts()
            .into_iter()
            .find(|p| p.thread_ts.is_some() && has_button(p, promote))
    })
    .await;
    assert!(has_button(&waiting, "rollgate:abort:web-1"));

    // Eve may not; nothing is queued, the canary keeps waiting.
    w.slack.click(&eve(), &waiting.ts, promote).unwrap();
    assert!(
        w.slack
            .wait_until(Duration::from_secs(30), |s| s
                .ephemerals()
                .iter()
                .any(|e| e.user == "U0EVE"))
            .await
    );
    let refused = w.slack.ephemerals();
    assert!(
        refused[0].text.contains("not allowed to promote web"),
        "{refused:?}"
    );
    let (_, status) = rollgate_cli(&w, &["status", "web"]).await;
    assert!(
        status.to_lowercase().contains("canary") || status.contains("promot"),
        "still waiting: {status}"
    );

    // Alice promotes: the rollout goes on to the end.
    w.slack.click(&alice(), &waiting.ts, promote).unwrap();
    let done = w.outcome(Duration::from_secs(240)).await;
    assert_eq!(done.id, "web-1");
    assert!(
        format!("{:?}", done.outcome).contains("Succeeded"),
        "{:?}",
        done.outcome
    );
    assert!(
        w.slack
            .ephemerals()
            .iter()
            .any(|e| e.user == "U0ALICE" && e.text.contains("to promote")),
        "{:?}",
        w.slack.ephemerals()
    );
    drop(coordinator);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_the_leader_answers_and_its_successor_takes_over_the_connection() {
    let w = World::new().await;
    let a = coordinator(&config(&w));
    assert!(
        w.slack
            .wait_until(Duration::from_secs(60), |s| s.socket_connections() == 1)
            .await,
        "the leader opens a Socket Mode connection: {}",
        a.log()
    );
    let b = coordinator(&replica_config(&w, "b", ""));
    until("replica b running", Duration::from_secs(30), || async {
        b.log().contains("Coordinator starting").then_some(())
    })
    .await;
    w.publish(ImageSpec::new("acmeinc/web", "2.0.0")).await;
    let msg = plan_message(&w, "web-1").await;
    assert_eq!(
        w.slack.socket_connections(),
        1,
        "a replica that does not lead opens none"
    );

    // The leader dies: the other replica leads and opens its own.
    let opened = w.slack.sockets_opened();
    drop(a);
    assert!(
        w.slack
            .wait_until(Duration::from_secs(90), |s| s.sockets_opened() > opened
                && s.socket_connections() == 1)
            .await,
        "the new leader connects: {}",
        b.log()
    );
    w.slack
        .click(&alice(), &msg.ts, "rollgate:approve:web-1")
        .unwrap();
    let p = decided(&w, "web-1").await;
    assert!(
        matches!(&p.decision, Decision::Approved { by, .. } if by == "alice (Slack U0ALICE)"),
        "{:?}",
        p.decision
    );
    let done = w.outcome(Duration::from_secs(240)).await;
    assert!(
        format!("{:?}", done.outcome).contains("Succeeded"),
        "{:?}",
        done.outcome
    );
    drop(b);
    w.shutdown().await;
}
