//! The console's web page in a real browser (headless Chromium through
//! chromedriver, see `browser_support`), against the sandbox world with
//! Consul's ACLs on (see `rollout_support`): a real `rollgate coordinator`
//! serving its console, moto, and the fleet of real `web` and `rollgate
//! agent` processes. Each step leaves a screenshot under
//! `target/tmp/console-screenshots/`; with `UPDATE_README_SCREENSHOT=1`
//! the live rollout page is also copied to `docs/console.png` (the
//! README's picture).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod browser_support;
mod rollout_support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use browser_support::{Browser, squash};
use rollgate::rollout::plan::Decision;
use rollgate::rollout::store::Store;
use rollout_support::{Endpoints, World, rollgate_cli};
use sandbox::acl_roles::{Secret, create_read_token, http_client};
use sandbox::moto::seed::ImageSpec;
use sandbox::testkit::{LoggedChild, free_addr, until};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A page that changes in place when its button is clicked.
const SELF_TEST_PAGE: &str = "<!doctype html><html><head><title>self test</title></head>\
<body><p id=\"greeting\">hello</p><button id=\"go\" \
onclick=\"document.getElementById('greeting').textContent='clicked'; document.body.dataset.live='on';\">go</button>\
<input id=\"field\"></body></html>";

/// The support itself: chromedriver starts, a headless session opens a
/// page from a loopback server, clicks, types, waits on a change made in
/// place, and writes a PNG screenshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_opens_a_loopback_page_clicks_and_writes_a_screenshot() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{SELF_TEST_PAGE}",
                    SELF_TEST_PAGE.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });

    let b = Browser::start("self_test").await;
    b.goto(&format!("http://{addr}/")).await;
    assert_eq!(b.text("#greeting").await.as_deref(), Some("hello"));
    assert_eq!(b.text("#absent").await, None);
    b.exec("window.__marker = 'kept'; return null;", vec![])
        .await
        .unwrap();
    b.type_into("#field", "typed").await;
    b.click("#go").await;
    b.wait(
        "body[data-live=on]",
        Duration::from_secs(10),
        "document.body.dataset.live === 'on'",
    )
    .await;
    b.wait_text(
        "the greeting changes",
        Duration::from_secs(10),
        "#greeting",
        |t| t == "clicked",
    )
    .await;
    let typed = b
        .exec("return document.getElementById('field').value;", vec![])
        .await
        .unwrap();
    assert_eq!(typed, json!("typed"));
    let marker = b.exec("return window.__marker;", vec![]).await.unwrap();
    assert_eq!(marker, json!("kept"), "no navigation happened");
    let shot = b.screenshot("clicked").await;
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "a PNG: {}",
        shot.display()
    );
    assert!(png.len() > 1000, "{} bytes", png.len());
    b.close().await;
}

// ---------------------------------------------------------------------
// The console in the sandbox world.

/// Replica a's configuration: manual approval, the console on `console`,
/// `extra` appended to `[services.rollout]`.
fn config(w: &World, console: SocketAddr, healthy_deadline: &str, extra: &str) -> PathBuf {
    let path = w.config_with("a", &Endpoints::direct(w), healthy_deadline, extra);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("approval = \"auto\""), "{text}");
    let text = text.replace("approval = \"auto\"", "approval = \"manual\"");
    std::fs::write(&path, format!("{text}\n[http]\nlisten = \"{console}\"\n")).unwrap();
    path
}

/// Waits until the coordinator's console answers its login page.
async fn console_up(console: SocketAddr, c: &LoggedChild) {
    let start = std::time::Instant::now();
    loop {
        if let Ok(r) = reqwest::get(format!("http://{console}/login")).await {
            assert!(
                r.status().is_success(),
                "GET /login: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the console on {console} did not answer within 60s:\n{}",
            c.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A token with the operator policy for another person, described as
/// `name` (the description is who the console records).
async fn operator_token(w: &World, name: &str) -> Secret {
    let secret = Secret::random();
    let policy = w.roles.get("operator").unwrap().policy.clone();
    let http = http_client(&w.management, Duration::from_secs(10)).unwrap();
    let r = http
        .put(format!("http://{}/v1/acl/token", w.consul.http_addr()))
        .json(&json!({
            "Description": name,
            "SecretID": secret.expose(),
            "Policies": [{ "Name": policy }],
        }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "PUT /v1/acl/token: {}", r.status());
    secret
}

fn store(w: &World) -> Store {
    Store::new(w.client(), "rollgate")
}

/// The id of the pending plan for `version`, once the coordinator wrote it.
async fn pending_plan(w: &World, version: &str) -> String {
    let s = store(w);
    until("the pending plan", Duration::from_secs(90), || async {
        s.plans("web")
            .await
            .ok()?
            .into_iter()
            .map(|(p, _)| p)
            .find(|p| {
                matches!(p.decision, Decision::Pending { .. })
                    && serde_json::to_string(p).unwrap().contains(version)
            })
            .map(|p| p.id)
    })
    .await
}

/// Logs in with `token` and waits for the services page naming `who`.
async fn login(b: &Browser, base: &str, token: &Secret, who: &str) {
    b.goto(&format!("{base}/")).await;
    b.wait(
        "a visit without a session is sent to the login form",
        Duration::from_secs(30),
        "location.pathname === '/login' && document.querySelector('#token')",
    )
    .await;
    b.screenshot("login").await;
    b.type_into("#token", token.expose()).await;
    b.click("#login-submit").await;
    if b.exists("#login-error").await {
        b.fail("the token was refused at login").await;
    }
    b.wait_text(
        "the services page says who is logged in",
        Duration::from_secs(30),
        "#whoami",
        |t| t.contains(who),
    )
    .await;
    assert_eq!(
        b.exec("return location.pathname;", vec![]).await.unwrap(),
        json!("/"),
        "the login lands on the services page"
    );
    // The session cookie is HttpOnly and the token is nowhere on the page.
    let cookies = b.exec("return document.cookie;", vec![]).await.unwrap();
    assert!(
        !cookies
            .as_str()
            .unwrap_or_default()
            .contains("rollgate_session"),
        "the session cookie is readable by scripts: {cookies}"
    );
    let html = b
        .exec("return document.documentElement.outerHTML;", vec![])
        .await
        .unwrap();
    assert!(
        !html.as_str().unwrap_or_default().contains(token.expose())
            && !b.url().await.contains(token.expose()),
        "the token appears in the page or its URL"
    );
}

/// Opens the plan page, checks the diff names `version`, and answers it.
async fn open_plan(b: &Browser, base: &str, plan: &str, version: &str) -> String {
    b.goto(&format!("{base}/plans/{plan}")).await;
    b.wait_text(
        "the plan's diff",
        Duration::from_secs(30),
        "#plan-diff",
        |t| t.contains(version),
    )
    .await
}

/// Clicks Approve and waits for the page that answers it (the plan page
/// with its decision, or the service page); fails on a refusal.
async fn click_approve(b: &Browser, plan: &str) {
    b.click("#approve").await;
    b.wait(
        "the approval's answer",
        Duration::from_secs(30),
        &format!(
            "document.querySelector('#decision, #action-error') || \
             (location.pathname !== '/plans/{plan}' && document.readyState === 'complete')"
        ),
    )
    .await;
    if let Some(e) = b.text("#action-error").await {
        b.fail(&format!("the approval was refused: {e}")).await;
    }
}

/// With `UPDATE_README_SCREENSHOT=1`, the README's picture. (Not a
/// `ROLLGATE_` variable: the fleet's agents inherit the test's environment
/// and would read it as configuration, and refuse it.)
fn update_readme_screenshot(shot: &std::path::Path) {
    if std::env::var("UPDATE_README_SCREENSHOT").as_deref() == Ok("1") {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/console.png");
        std::fs::copy(shot, &docs).unwrap();
        eprintln!("README screenshot: {}", docs.display());
    }
}

/// Issue #15's browser story with ACLs on, one world for its steps: a
/// token without the operator policy is refused and the plan stays
/// pending; an operator reads the diff, approves, and the page shows who
/// decided (to the other person too); the service page then follows the
/// rollout to `succeeded` in place, without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_approves_in_the_browser_and_watches_the_rollout_succeed_live() {
    let w = World::new().await;
    let console = free_addr();
    let c = w.coordinator(&config(&w, console, "1m", ""));
    console_up(console, &c).await;
    let base = format!("http://{console}");
    let alice = operator_token(&w, "Alice Operator").await;
    let dana = create_read_token(w.consul.http_addr(), &w.management, "Dana Viewer")
        .await
        .unwrap();
    w.publish(ImageSpec::new("acmeinc/web", "1.1.0")).await;
    let plan = pending_plan(&w, "1.1.0").await;
    let s = store(&w);

    // A token that may read but not approve: a clear refusal, nothing
    // written.
    let viewer = Browser::start("viewer_is_refused").await;
    login(&viewer, &base, &dana, "Dana Viewer").await;
    open_plan(&viewer, &base, &plan, "1.1.0").await;
    viewer.screenshot("plan").await;
    viewer.click("#approve").await;
    let refusal = viewer
        .wait_text(
            "the refusal of an approval without the operator policy",
            Duration::from_secs(30),
            "#action-error",
            |t| !t.is_empty(),
        )
        .await;
    viewer.screenshot("refused").await;
    if !refusal.to_lowercase().contains("permission denied") {
        viewer
            .fail(&format!("the refusal does not name its reason: {refusal}"))
            .await;
    }
    assert!(
        !viewer.exists("#decision").await,
        "a refused approval shows a decision"
    );
    let (p, _) = s.plan(&plan).await.unwrap();
    assert!(
        matches!(p.decision, Decision::Pending { .. }),
        "the refused approval changed the plan: {:?}",
        p.decision
    );
    assert!(
        s.rollout("web").await.unwrap().is_none(),
        "a rollout started after a refused approval"
    );
    let api: serde_json::Value = reqwest::Client::new()
        .get(format!("{base}/v1/plans/{plan}"))
        .header("X-Consul-Token", dana.expose())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        api.to_string().contains("pending"),
        "the API shows the plan still pending: {api}"
    );

    // The operator: services, the service, its pending plan's diff.
    let op = Browser::start("operator_approves_live").await;
    login(&op, &base, &alice, "Alice Operator").await;
    op.wait(
        "the services table lists web",
        Duration::from_secs(30),
        "document.querySelector('#services tr[data-service=\"web\"] a.service-link')",
    )
    .await;
    op.screenshot("services").await;
    op.click("#services tr[data-service=\"web\"] a.service-link")
        .await;
    op.wait(
        "the service page lists the pending plan",
        Duration::from_secs(30),
        "location.pathname === '/services/web' && document.querySelector('#pending-plans a.plan-link')",
    )
    .await;
    op.screenshot("service-pending").await;
    op.click("#pending-plans a.plan-link").await;
    let diff = op
        .wait_text(
            "the plan's diff",
            Duration::from_secs(30),
            "#plan-diff",
            |t| t.contains("1.1.0"),
        )
        .await;
    assert!(
        op.url().await.ends_with(&format!("/plans/{plan}")),
        "the plan link opens {plan}: {}",
        op.url().await
    );
    let (code, cli) = rollgate_cli(&w, &["plan", "web"]).await;
    assert_eq!(code, 0, "{cli}");
    assert!(
        squash(&cli).contains(&squash(&diff)),
        "the page's diff is `rollgate plan`'s:\npage:\n{diff}\ncli:\n{cli}"
    );
    op.screenshot("plan-diff").await;
    click_approve(&op, &plan).await;
    op.screenshot("approved").await;

    // Who decided, on the plan page, for anyone who opens it.
    for (b, whose) in [(&op, "operator"), (&viewer, "viewer")] {
        b.goto(&format!("{base}/plans/{plan}")).await;
        let decision = b
            .wait_text(
                "the decision on the plan page",
                Duration::from_secs(30),
                "#decision",
                |t| t.contains("approved by"),
            )
            .await;
        if !decision.contains("Alice Operator") {
            b.fail(&format!("the decision does not say who: {decision}"))
                .await;
        }
        if b.exists("#approve").await {
            b.fail("a decided plan still offers Approve").await;
        }
        b.screenshot(&format!("decided-seen-by-{whose}")).await;
    }
    let (p, _) = s.plan(&plan).await.unwrap();
    match &p.decision {
        Decision::Approved { by, .. } => {
            assert!(by.contains("Alice Operator"), "recorded by {by}")
        }
        other => panic!("the plan is not approved: {other:?}"),
    }
    viewer.close().await;

    // The rollout, live: the page opened once follows it to the end.
    op.goto(&format!("{base}/services/web")).await;
    op.wait(
        "the page's live stream opens (body[data-live=on])",
        Duration::from_secs(30),
        "document.body.dataset.live === 'on'",
    )
    .await;
    op.exec("window.__loadedOnce = 'yes'; return null;", vec![])
        .await
        .unwrap();
    let mut phases: Vec<String> = Vec::new();
    let mut readme_shot = None;
    let start = std::time::Instant::now();
    loop {
        let phase = op.text("#rollout-phase").await.unwrap_or_default();
        if phases.last() != Some(&phase) {
            phases.push(phase.clone());
            let name = if phase.is_empty() {
                "no-rollout-yet"
            } else {
                &phase
            };
            let batch = op.text("#rollout-batch").await.unwrap_or_default();
            let shot = op.screenshot(&format!("live-{name}")).await;
            // The README's picture: the rollout in its second batch.
            if readme_shot.is_none() && batch.starts_with("2/") {
                readme_shot = Some(shot);
            }
        }
        if phase == "succeeded" {
            break;
        }
        if start.elapsed() > Duration::from_secs(300) {
            op.fail(&format!(
                "the page did not reach succeeded within 300s; phases seen: {phases:?}\n{}",
                c.log()
            ))
            .await;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let kept = op
        .exec("return window.__loadedOnce || null;", vec![])
        .await
        .unwrap();
    assert_eq!(
        kept,
        json!("yes"),
        "the page was reloaded (phases seen: {phases:?})"
    );
    assert!(
        phases.first().map(String::as_str) != Some("succeeded") && phases.len() >= 2,
        "the page did not follow the rollout in place: phases seen {phases:?}"
    );
    assert_eq!(
        op.exec("return document.body.dataset.live;", vec![])
            .await
            .unwrap(),
        json!("on"),
        "the stream is still open"
    );
    op.wait_text(
        "the stable version follows",
        Duration::from_secs(30),
        "#stable-version",
        |t| t.contains("1.1.0"),
    )
    .await;
    let done = op.screenshot("succeeded").await;
    update_readme_screenshot(readme_shot.as_deref().unwrap_or(&done));
    let outcome = w.outcome(Duration::from_secs(30)).await;
    assert_eq!(outcome.outcome.as_ref().unwrap().word(), "succeeded");
    op.close().await;
    drop(c);
    w.shutdown().await;
}

/// A broken image, approved in the browser: the service page ends showing
/// the revert and its reason, as the alert gives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_images_page_ends_showing_the_revert_and_its_reason() {
    let w = World::new().await;
    let console = free_addr();
    // healthy_deadline's story, failing fast off (as in rollout_e2e.rs).
    let c = w.coordinator(&config(&w, console, "8s", "failure_time = \"0s\"\n"));
    console_up(console, &c).await;
    let base = format!("http://{console}");
    let alice = operator_token(&w, "Alice Operator").await;
    w.publish(ImageSpec::new("acmeinc/web", "1.2.0").tag("sandbox:broken", "true"))
        .await;
    let plan = pending_plan(&w, "1.2.0").await;

    let b = Browser::start("broken_image_reverted").await;
    login(&b, &base, &alice, "Alice Operator").await;
    open_plan(&b, &base, &plan, "1.2.0").await;
    b.screenshot("plan-diff").await;
    click_approve(&b, &plan).await;
    b.goto(&format!("{base}/services/web")).await;
    b.screenshot("rollout").await;
    let outcome = w.outcome(Duration::from_secs(180)).await;
    let outcome = outcome.outcome.unwrap();
    assert_eq!(outcome.word(), "reverted", "{outcome:?}\n{}", c.log());

    // The ended rollout as a fresh visit shows it.
    b.goto(&format!("{base}/services/web")).await;
    b.wait_text(
        "the page shows the revert",
        Duration::from_secs(30),
        "#rollout-phase",
        |t| t == "reverted",
    )
    .await;
    let reason = b
        .wait_text(
            "the page shows the revert's reason",
            Duration::from_secs(30),
            "#rollout-reason",
            |t| !t.is_empty(),
        )
        .await;
    b.screenshot("reverted").await;
    if !squash(&reason).contains(&squash(outcome.reason())) {
        b.fail(&format!(
            "the page's reason is not the alert's:\npage: {reason}\nrecord: {}",
            outcome.reason()
        ))
        .await;
    }
    for needle in ["healthy_deadline", "500"] {
        assert!(reason.contains(needle), "{needle} missing from: {reason}");
    }
    b.close().await;
    drop(c);
    w.shutdown().await;
}
