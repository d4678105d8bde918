//! The console's web page against the sandbox Consul with ACLs on: the
//! login keeps the token server-side behind a strict cookie, every form is
//! CSRF-checked before anything is written, the forms act through the
//! API's own code (same records, same refusals), and a service page's
//! event stream sends an update when Consul's KV changes.
//!
//! The "browser" here is an HTTP client that keeps the cookie by hand and
//! never follows redirects, so each answer is seen as the server sent it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod console_support;

use std::net::SocketAddr;
use std::time::Duration;

use console_support::ConsoleWorld;
use rollgate::rollout::machine::OperatorCommand;
use rollgate::rollout::plan::{Decision, Outcome, now_ms};

/// A page answer: status, headers, body.
#[derive(Debug)]
struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Page {
    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    /// The value of the first hidden `csrf` input.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("a csrf input in {}", self.body));
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }

    /// The text of the element with `id` (up to its first tag end).
    fn text_of(&self, id: &str) -> Option<String> {
        let at = self.body.find(&format!("id=\"{id}\""))?;
        let rest = &self.body[at..];
        let open = rest.find('>')? + 1;
        let close = rest[open..].find('<')?;
        Some(rest[open..open + close].to_owned())
    }
}

/// One browser: a cookie jar of one cookie.
struct Browser {
    addr: SocketAddr,
    http: reqwest::Client,
    cookie: Option<String>,
}

impl Browser {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: None,
        }
    }

    async fn send(&mut self, r: reqwest::RequestBuilder) -> Page {
        let r = match &self.cookie {
            Some(c) => r.header("Cookie", c),
            None => r,
        };
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        if let Some(set) = headers.get("set-cookie") {
            let pair = set.to_str().unwrap().split(';').next().unwrap().to_owned();
            self.cookie = if pair.ends_with('=') {
                None
            } else {
                Some(pair)
            };
        }
        let body = resp.text().await.unwrap();
        Page {
            status,
            headers,
            body,
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let r = self.http.get(format!("http://{}{path}", self.addr));
        self.send(r).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let r = self
            .http
            .post(format!("http://{}{path}", self.addr))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(r).await
    }

    /// Logs in with `token`; answers the page the redirect leads to.
    async fn login(&mut self, token: &str) -> Page {
        let p = self.post("/login", &[("token", token)]).await;
        assert_eq!(p.status, 303, "login: {p:?}");
        self.get("/").await
    }
}

/// A browser logged in to the console at `addr` with a new operator token
/// described as `name`; answers it, the token and its AccessorID.
async fn logged_in(
    w: &ConsoleWorld,
    addr: SocketAddr,
    name: &str,
) -> (Browser, sandbox::acl_roles::Secret, String) {
    let (token, accessor) = w.operator_token(name).await;
    let mut b = Browser::new(addr);
    b.login(token.expose()).await;
    (b, token, accessor)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sets_a_strict_cookie_a_bad_token_is_refused_and_no_page_shows_the_token() {
    let w = ConsoleWorld::new().await;
    let plan = w.pending_plan(1).await;
    let addr = w.console("a").await;
    let (alice, alice_id) = w.operator_token("alice").await;
    let mut b = Browser::new(addr);

    // No session: every page leads to the login form, which asks for a token.
    let p = b.get("/").await;
    assert_eq!(p.status, 303);
    assert_eq!(p.header("location"), "/login");
    let p = b.get("/login").await;
    assert_eq!(p.status, 200);
    assert!(
        p.body
            .contains("id=\"token\" name=\"token\" type=\"password\""),
        "{}",
        p.body
    );
    assert!(p.body.contains("id=\"login-submit\""));

    // An unknown token: the form again, with the reason, and no cookie.
    let unknown = sandbox::acl_roles::Secret::random();
    let p = b.post("/login", &[("token", unknown.expose())]).await;
    assert_eq!(p.status, 403, "{p:?}");
    assert!(p.header("set-cookie").is_empty(), "{p:?}");
    let e = p.text_of("login-error").unwrap();
    assert!(e.contains("does not know this token"), "{e}");
    assert!(!p.body.contains(unknown.expose()), "never echoed");
    let p = b.post("/login", &[("token", "")]).await;
    assert_eq!(p.status, 401, "{p:?}");
    assert!(p.text_of("login-error").is_some());

    // A good one: a cookie with the strict attributes, holding no token.
    let p = b.post("/login", &[("token", alice.expose())]).await;
    assert_eq!(p.status, 303, "{p:?}");
    assert_eq!(p.header("location"), "/");
    let cookie = p.header("set-cookie");
    for attr in ["rollgate_session=", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{attr} in {cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP on loopback: {cookie}"
    );
    assert!(!cookie.contains(alice.expose()), "{cookie}");

    let p = b.get("/").await;
    assert_eq!(p.status, 200, "{p:?}");
    let who = p.text_of("whoami").unwrap();
    assert!(
        who.starts_with("alice (") && who.contains(&alice_id),
        "{who}"
    );
    assert!(p.body.contains("id=\"services\""));
    assert!(p.body.contains("<tr data-service=\"web\">"));
    assert!(
        p.body
            .contains("class=\"service-link\" href=\"/services/web\"")
    );
    assert!(p.body.contains(&format!("href=\"/plans/{plan}\"")));
    assert!(
        p.header("content-security-policy")
            .contains("script-src 'self'")
    );
    for path in [
        "/".to_owned(),
        "/services/web".into(),
        format!("/plans/{plan}"),
        "/outbox".into(),
    ] {
        let p = b.get(&path).await;
        assert_eq!(p.status, 200, "{path}: {p:?}");
        assert!(!p.body.contains(alice.expose()), "{path} shows the token");
        assert!(p.body.contains("id=\"whoami\""), "{path}");
    }
    // The embedded assets.
    let p = b.get("/assets/console.js").await;
    assert_eq!(p.status, 200);
    assert!(p.body.contains("EventSource"));
    assert!(
        b.get("/assets/console.css")
            .await
            .header("content-type")
            .starts_with("text/css")
    );

    // Logging out (with the form's token) forgets the session.
    let csrf = b.get("/").await.csrf();
    let p = b.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(p.status, 303, "{p:?}");
    assert!(p.header("set-cookie").contains("Max-Age=0"));
    assert_eq!(b.get("/").await.status, 303);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_without_or_with_a_stale_csrf_token_is_refused_and_records_nothing() {
    let w = ConsoleWorld::new().await;
    let plan = w.pending_plan(1).await;
    w.active_rollout(&plan).await;
    let addr = w.console("a").await;
    let (mut b, alice, _) = logged_in(&w, addr, "alice").await;
    let stale = b.get(&format!("/plans/{plan}")).await.csrf();
    // Log out and in again: the old page's token is stale.
    b.post("/logout", &[("csrf", &stale)]).await;
    b.login(alice.expose()).await;
    let fresh = b.get(&format!("/plans/{plan}")).await.csrf();
    assert_ne!(stale, fresh);

    let actions = [
        format!("/plans/{plan}/approve"),
        format!("/plans/{plan}/reject"),
        "/services/web/pause".into(),
        "/services/web/resume".into(),
        "/services/web/abort".into(),
        "/services/web/promote".into(),
        "/logout".into(),
    ];
    for path in &actions {
        for (what, form) in [
            ("no csrf", vec![("reason", "x")]),
            (
                "a stale csrf",
                vec![("csrf", stale.as_str()), ("reason", "x")],
            ),
            ("a wrong csrf", vec![("csrf", "AAAA"), ("reason", "x")]),
        ] {
            let p = b.post(path, &form).await;
            assert_eq!(p.status, 403, "{path} with {what}: {p:?}");
            let e = p.text_of("action-error").unwrap();
            assert!(e.contains("CSRF") && e.contains("nothing was done"), "{e}");
        }
        w.nothing_recorded(&plan).await;
    }
    // Another browser, without a session, with the right token: refused.
    let mut other = Browser::new(addr);
    let p = other
        .post(&format!("/plans/{plan}/approve"), &[("csrf", &fresh)])
        .await;
    assert_eq!(p.status, 403, "{p:?}");
    assert!(p.text_of("action-error").unwrap().contains("log in again"));
    w.nothing_recorded(&plan).await;
    // The session is still good.
    assert_eq!(b.get("/").await.status, 200);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_by_form_records_the_tokens_description_and_a_second_decision_is_refused() {
    let w = ConsoleWorld::new().await;
    let plan = w.pending_plan(1).await;
    let other = w.pending_plan(2).await;
    let addr = w.console("a").await;
    let (mut b, _, alice_id) = logged_in(&w, addr, "alice").await;

    let page = b.get(&format!("/plans/{plan}")).await;
    assert_eq!(page.status, 200);
    let diff = rollgate::rollout::render::plan(
        &w.store().plan(&plan).await.unwrap().0,
        rollgate::rollout::render::Style { color: false },
    );
    let shown = page.text_of("plan-diff").unwrap();
    assert_eq!(
        shown
            .replace("&gt;", ">")
            .replace("&lt;", "<")
            .replace("&amp;", "&")
            .replace("&quot;", "\"")
            .replace("&#39;", "'"),
        diff,
        "the same diff as `rollgate plan`"
    );
    assert!(page.body.contains("id=\"approve\""));
    assert!(page.body.contains("id=\"reject\"") && page.body.contains("id=\"reason\""));
    assert!(page.text_of("decision").is_none());
    let csrf = page.csrf();

    let p = b
        .post(&format!("/plans/{plan}/approve"), &[("csrf", &csrf)])
        .await;
    assert_eq!(p.status, 303, "{p:?}");
    assert_eq!(p.header("location"), format!("/plans/{plan}"));
    let (stored, _) = w.store().plan(&plan).await.unwrap();
    let Decision::Approved { by, .. } = &stored.decision else {
        panic!("approved: {:?}", stored.decision);
    };
    assert!(by.starts_with("alice (") && by.contains(&alice_id), "{by}");

    // The plan page now says who decided, without buttons.
    let page = b.get(&format!("/plans/{plan}")).await;
    let decision = page.text_of("decision").unwrap();
    assert!(decision.starts_with("approved by alice ("), "{decision}");
    assert!(!page.body.contains("id=\"approve\""), "{}", page.body);

    // Twice: refused, naming who decided; nothing changes.
    for (path, form) in [
        (
            format!("/plans/{plan}/approve"),
            vec![("csrf", csrf.as_str())],
        ),
        (
            format!("/plans/{plan}/reject"),
            vec![("csrf", csrf.as_str()), ("reason", "too late")],
        ),
    ] {
        let p = b.post(&path, &form).await;
        assert_eq!(p.status, 409, "{path}: {p:?}");
        let e = p.text_of("action-error").unwrap();
        assert!(
            e.contains("cannot be decided") && e.contains("approved by alice"),
            "{e}"
        );
        assert!(
            p.text_of("decision").is_some(),
            "the page shows the decision"
        );
    }
    assert_eq!(
        w.store().plan(&plan).await.unwrap().0.decision,
        stored.decision
    );

    // Reject needs a reason; with one it is recorded.
    let path = format!("/plans/{other}/reject");
    let p = b.post(&path, &[("csrf", &csrf), ("reason", "  ")]).await;
    assert_eq!(p.status, 400, "{p:?}");
    assert!(p.text_of("action-error").unwrap().contains("reason"));
    let p = b
        .post(&path, &[("csrf", &csrf), ("reason", "not <today>")])
        .await;
    assert_eq!(p.status, 303, "{p:?}");
    match w.store().plan(&other).await.unwrap().0.decision {
        Decision::Rejected { by, reason, .. } => {
            assert!(by.starts_with("alice ("), "{by}");
            assert_eq!(reason, "not <today>");
        }
        d => panic!("{d:?}"),
    }
    let page = b.get(&format!("/plans/{other}")).await;
    assert!(
        page.body.contains("not &lt;today&gt;"),
        "escaped: {}",
        page.body
    );
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_approving_one_plan_at_once_exactly_one_wins() {
    let w = ConsoleWorld::new().await;
    // Two replicas' consoles: each browser on its own, as behind a balancer.
    let (a, b) = (w.console("a").await, w.console("b").await);
    for round in 1..=3 {
        let plan = w.pending_plan(round).await;
        let (mut alice, _, alice_id) = logged_in(&w, a, &format!("alice-{round}")).await;
        let (mut bob, _, bob_id) = logged_in(&w, b, &format!("bob-{round}")).await;
        let path = format!("/plans/{plan}/approve");
        let (alice_csrf, bob_csrf) = (
            alice.get(&format!("/plans/{plan}")).await.csrf(),
            bob.get(&format!("/plans/{plan}")).await.csrf(),
        );
        let (alice_form, bob_form) = (
            [("csrf", alice_csrf.as_str())],
            [("csrf", bob_csrf.as_str())],
        );
        let (x, y) = tokio::join!(alice.post(&path, &alice_form), bob.post(&path, &bob_form));
        let mut statuses = [x.status, y.status];
        statuses.sort_unstable();
        assert_eq!(statuses, [303, 409], "exactly one wins: {x:?} {y:?}");
        let (winner, loser) = if x.status == 303 {
            (&alice_id, &y)
        } else {
            (&bob_id, &x)
        };
        let (stored, _) = w.store().plan(&plan).await.unwrap();
        let Decision::Approved { by, .. } = &stored.decision else {
            panic!("approved: {:?}", stored.decision);
        };
        assert!(by.contains(winner.as_str()), "the winner is recorded: {by}");
        let refusal = loser.text_of("action-error").unwrap_or_default();
        assert!(
            refusal.contains("cannot be decided") && refusal.contains("approved by"),
            "the other is told who decided: {refusal}"
        );
    }
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_without_the_policy_sees_consuls_refusal_and_nothing_changes() {
    let w = ConsoleWorld::new().await;
    let plan = w.pending_plan(1).await;
    let addr = w.console("a").await;
    // The CI role reads plans and the rollout but writes neither.
    let ci = w.roles.secret("ci").unwrap().expose().to_owned();
    let mut b = Browser::new(addr);
    b.login(&ci).await;
    let page = b.get(&format!("/plans/{plan}")).await;
    assert_eq!(page.status, 200, "{page:?}");
    let csrf = page.csrf();
    let p = b
        .post(&format!("/plans/{plan}/approve"), &[("csrf", &csrf)])
        .await;
    assert_eq!(p.status, 403, "{p:?}");
    let e = p.text_of("action-error").unwrap();
    assert!(e.contains("Consul refused"), "{e}");
    assert!(
        e.contains("Permission denied") && e.contains("key:write"),
        "{e}"
    );
    assert!(e.contains("config/acl/operator.hcl"), "{e}");
    assert!(!p.body.contains(&ci), "never the secret");
    // The page still offers the decision: nothing was recorded.
    assert!(p.body.contains("id=\"approve\""));
    w.nothing_recorded(&plan).await;

    w.active_rollout(&plan).await;
    let p = b.post("/services/web/pause", &[("csrf", &csrf)]).await;
    assert_eq!(p.status, 403, "{p:?}");
    assert!(
        p.text_of("action-error")
            .unwrap()
            .contains("Consul refused")
    );
    w.nothing_recorded(&plan).await;
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_page_shows_the_rollout_and_its_forms_queue_the_apis_commands() {
    let w = ConsoleWorld::new().await;
    let plan = w.pending_plan(1).await;
    let addr = w.console("a").await;
    let (mut b, _, _) = logged_in(&w, addr, "alice").await;

    let p = b.get("/services/web").await;
    assert_eq!(p.status, 200, "{p:?}");
    assert!(
        p.body
            .contains("<body data-live=\"off\" data-service=\"web\">")
    );
    assert!(p.body.contains("id=\"stable-version\""));
    assert!(p.body.contains("id=\"pending-plans\""));
    assert!(
        p.body
            .contains(&format!("class=\"plan-link\" href=\"/plans/{plan}\""))
    );
    assert!(p.body.contains("id=\"no-rollout\""));
    // No rollout: a command is refused as the API refuses it.
    let csrf = p.csrf();
    let r = b.post("/services/web/pause", &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 409, "{r:?}");
    assert!(
        r.text_of("action-error")
            .unwrap()
            .contains("no rollout in progress")
    );

    w.active_rollout(&plan).await;
    // One instance of the new image in Consul, its check failing.
    let target = w
        .store()
        .rollout("web")
        .await
        .unwrap()
        .unwrap()
        .0
        .spec
        .target_image;
    w.consul.add_node("node-1").await.unwrap();
    w.consul
        .register_services(
            "node-1",
            &[serde_json::json!({
                "ID": "web-i-0new", "Name": "web", "Port": 8080,
                "Meta": {"instance_id": "i-0new", "ami_id": target, "version": "2.0.0", "az": "eu-west-1a"},
                "Check": {"CheckID": "web-health", "Name": "web health", "TTL": "60s",
                          "Status": "critical", "Notes": "GET /health"},
            })],
        )
        .unwrap();
    let p = b.get("/services/web").await;
    assert_eq!(p.text_of("rollout-phase").unwrap(), "pending");
    assert!(
        p.body
            .contains("<tr data-instance=\"i-0new\" class=\"new\">"),
        "{}",
        p.body
    );
    assert!(p.body.contains("eu-west-1a") && p.body.contains("web health"));
    assert!(
        p.body.contains("<li class=\"check critical\">"),
        "{}",
        p.body
    );
    assert!(
        p.body
            .contains("id=\"bar\" data-old=\"0\" data-new=\"1\" data-passing=\"0\""),
        "{}",
        p.body
    );
    // Batches proven / the plan's batches.
    assert_eq!(p.text_of("rollout-batch").unwrap(), "0/1");
    assert!(p.body.contains("id=\"bar\" data-old="), "{}", p.body);
    assert!(p.body.contains("id=\"instances\""));
    assert!(
        p.body
            .contains("<img id=\"timeline\" src=\"/services/web/timeline.svg\"")
    );
    for button in ["pause", "abort"] {
        assert!(p.body.contains(&format!("id=\"{button}\"")), "{button}");
    }
    assert!(!p.body.contains("id=\"resume\""), "not paused");
    for (path, reason) in [
        ("/services/web/pause", ""),
        ("/services/web/resume", ""),
        ("/services/web/promote", ""),
        ("/services/web/abort", "bad <idea>"),
    ] {
        let r = b.post(path, &[("csrf", &csrf), ("reason", reason)]).await;
        assert_eq!(r.status, 303, "{path}: {r:?}");
        assert_eq!(r.header("location"), "/services/web");
    }
    let commands: Vec<OperatorCommand> = w
        .store()
        .commands("web")
        .await
        .unwrap()
        .0
        .into_iter()
        .map(|(_, _, c)| c)
        .collect();
    assert_eq!(commands.len(), 4, "{commands:?}");
    assert!(matches!(commands[0], OperatorCommand::Pause));
    match &commands[3] {
        OperatorCommand::Abort { by, reason } => {
            assert!(by.starts_with("alice ("), "{by}");
            assert_eq!(reason, "bad <idea>");
        }
        c => panic!("{c:?}"),
    }

    // Once it ended badly: the phase and the reason as the alert gives it.
    let mut r = w.store().rollout("web").await.unwrap().unwrap();
    let reason = "instance i-0abc: check web critical: HTTP 500 <oops>; healthy_deadline 5m passed";
    assert!(
        w.store()
            .set_outcome(
                &plan,
                &Outcome::Reverted {
                    at: now_ms(),
                    reason: reason.into(),
                },
            )
            .await
            .is_ok()
    );
    r.1 = w.store().rollout("web").await.unwrap().unwrap().1;
    assert!(w.store().archive_rollout(&r.0, r.1).await.unwrap());
    let p = b.get("/services/web").await;
    assert_eq!(p.text_of("rollout-phase").unwrap(), "reverted");
    assert_eq!(
        p.text_of("rollout-reason").unwrap(),
        reason.replace('<', "&lt;").replace('>', "&gt;")
    );
    assert!(!p.body.contains("id=\"pause\""), "no action applies");
    w.shutdown().await;
}

/// Reads the event stream until an `update` event; answers its data.
async fn next_update(stream: &mut reqwest::Response, buf: &mut String) -> String {
    loop {
        if let Some(end) = buf.find("\n\n") {
            let event: String = buf[..end].to_owned();
            buf.drain(..end + 2);
            if event.lines().any(|l| l == "event: update") {
                return event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: ").or(l.strip_prefix("data:")))
                    .collect::<Vec<_>>()
                    .join("\n");
            }
            continue;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(30), stream.chunk())
            .await
            .expect("an event within 30s")
            .unwrap()
            .expect("the stream goes on");
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_sends_an_update_when_the_plans_change_in_consul() {
    let w = ConsoleWorld::new().await;
    let plan = w.pending_plan(1).await;
    let addr = w.console("a").await;
    let (b, alice, _) = logged_in(&w, addr, "alice").await;

    // Without a session: no stream.
    let anon = reqwest::get(format!("http://{addr}/services/web/events"))
        .await
        .unwrap();
    assert_eq!(anon.status().as_u16(), 401);

    let resp = b
        .http
        .get(format!("http://{addr}/services/web/events"))
        .header("Cookie", b.cookie.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut stream = resp;
    let mut buf = String::new();
    // The first update is the section as it is now.
    let first = next_update(&mut stream, &mut buf).await;
    assert!(first.starts_with("<div id=\"live\""), "{first}");
    assert!(
        first.contains(&format!("href=\"/plans/{plan}\"")),
        "{first}"
    );
    assert!(!first.contains(alice.expose()));

    // A KV change by someone else (the coordinator writes a new plan):
    // the stream sends the new section.
    let second = w.pending_plan(2).await;
    let update = next_update(&mut stream, &mut buf).await;
    assert!(
        update.contains(&format!("href=\"/plans/{second}\"")),
        "{update}"
    );

    // A decision by another operator through the API reaches it too.
    let mut other = Browser::new(addr);
    let (bob, _) = w.operator_token("bob").await;
    other.login(bob.expose()).await;
    let csrf = other.get(&format!("/plans/{plan}")).await.csrf();
    other
        .post(&format!("/plans/{plan}/approve"), &[("csrf", &csrf)])
        .await;
    let mut seen = next_update(&mut stream, &mut buf).await;
    while !seen.contains("approved by bob") {
        seen = next_update(&mut stream, &mut buf).await;
    }
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_consuls_acls_off_the_login_asks_for_a_name_and_records_it() {
    let w = ConsoleWorld::without_acls().await;
    let plan = w.pending_plan(1).await;
    let addr = w.console("a").await;
    let mut b = Browser::new(addr);
    let p = b.get("/login").await;
    assert!(
        p.body.contains("id=\"operator\" name=\"operator\""),
        "{}",
        p.body
    );
    assert!(!p.body.contains("id=\"token\""));
    let p = b.post("/login", &[("operator", "<script>")]).await;
    assert_eq!(p.status, 400, "{p:?}");
    assert!(p.text_of("login-error").is_some());
    let p = b.post("/login", &[("operator", "carol")]).await;
    assert_eq!(p.status, 303, "{p:?}");
    let page = b.get(&format!("/plans/{plan}")).await;
    assert_eq!(page.text_of("whoami").unwrap(), "carol");
    let p = b
        .post(&format!("/plans/{plan}/approve"), &[("csrf", &page.csrf())])
        .await;
    assert_eq!(p.status, 303, "{p:?}");
    match w.store().plan(&plan).await.unwrap().0.decision {
        Decision::Approved { by, .. } => assert_eq!(by, "carol"),
        d => panic!("{d:?}"),
    }
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_asks_consul_nothing_and_its_queries_end_when_the_client_leaves() {
    let w = ConsoleWorld::new().await;
    w.pending_plan(1).await;
    let addr = w.console("a").await;
    let (b, _, _) = logged_in(&w, addr, "alice").await;
    // Health changes (an instance of web registered) wake the stream's
    // health query and no other reader: the console's metrics follow KV.
    w.consul.add_node("node-1").await.unwrap();
    let register = |n: u32| {
        w.consul
            .register_services(
                "node-1",
                &[serde_json::json!({"ID": format!("web-{n}"), "Name": "web", "Port": 8000 + n})],
            )
            .unwrap();
    };
    let mut stream = b
        .http
        .get(format!("http://{addr}/services/web/events"))
        .header("Cookie", b.cookie.clone().unwrap())
        .send()
        .await
        .unwrap();
    let mut buf = String::new();
    next_update(&mut stream, &mut buf).await;
    // Settled: the stream's queries are held by Consul. Nothing changes,
    // so nothing is asked (no polling).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = w.consul.requests();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        w.consul.requests(),
        before,
        "an idle stream asks Consul nothing"
    );
    // A change wakes it: it reads again.
    register(0);
    let mut woke = false;
    for _ in 0..100 {
        if w.consul.requests() > before {
            woke = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(woke, "the change woke the stream's query");

    // The client leaves: soon a change makes nobody ask Consul anything.
    drop(stream);
    let ended = goes_quiet(&w, register, 1).await;
    assert!(ended, "the stream's queries ended with the client");
    w.shutdown().await;
}

/// Whether Consul goes quiet: a change (`change(n)`, from `first` on) is
/// followed, within half a second, by no request from anyone. Tries up to
/// the 60th change.
async fn goes_quiet(w: &ConsoleWorld, change: impl Fn(u32), first: u32) -> bool {
    for n in first..=60 {
        let before = w.consul.requests();
        change(n);
        tokio::time::sleep(Duration::from_millis(500)).await;
        if w.consul.requests() == before {
            return true;
        }
    }
    false
}

/// Reads the event stream until an event with data; answers its kind
/// and data.
async fn next_event(stream: &mut reqwest::Response, buf: &mut String) -> (String, String) {
    loop {
        if let Some(end) = buf.find("\n\n") {
            let event: String = buf[..end].to_owned();
            buf.drain(..end + 2);
            let kind = event.lines().find_map(|l| l.strip_prefix("event: "));
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data: ").or(l.strip_prefix("data:")))
                .collect();
            if let Some(kind) = kind {
                return (kind.to_owned(), data.join("\n"));
            }
            continue;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(30), stream.chunk())
            .await
            .expect("an event within 30s")
            .unwrap()
            .expect("the stream goes on");
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// Opens `GET /services/web/events` with `b`'s session.
async fn events_of(b: &Browser) -> reqwest::Response {
    let r = b
        .http
        .get(format!("http://{}/services/web/events", b.addr))
        .header("Cookie", b.cookie.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r
}

/// The count of requests Consul has answered once it has answered none
/// for half a second (every reader is held or gone).
async fn settled(w: &ConsoleWorld) -> u64 {
    let mut last = w.consul.requests();
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = w.consul.requests();
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("Consul never settled: the console keeps asking");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_of_one_token_share_their_reads_each_with_its_own_csrf_and_stop_with_the_last() {
    let w = ConsoleWorld::new().await;
    let plan = w.pending_plan(1).await;
    // An active rollout: the live section has forms (with the CSRF token).
    w.active_rollout(&plan).await;
    let addr = w.console("a").await;
    let (mut a, alice, _) = logged_in(&w, addr, "alice").await;
    // The same operator logs in again (another browser): another session,
    // another CSRF token, the same Consul token.
    let mut b = Browser::new(addr);
    b.login(alice.expose()).await;
    let (csrf_a, csrf_b) = (
        a.get("/services/web").await.csrf(),
        b.get("/services/web").await.csrf(),
    );
    assert_ne!(csrf_a, csrf_b);
    w.consul.add_node("node-1").await.unwrap();
    let register = |n: u32| {
        w.consul
            .register_services(
                "node-1",
                &[serde_json::json!({"ID": format!("web-{n}"), "Name": "web", "Port": 8000 + n})],
            )
            .unwrap();
    };

    // One stream: what a change costs.
    let mut sa = events_of(&a).await;
    let mut buf_a = String::new();
    let first = next_update(&mut sa, &mut buf_a).await;
    assert!(
        first.contains(&format!("name=\"csrf\" value=\"{csrf_a}\"")),
        "{first}"
    );
    let before = settled(&w).await;
    register(0);
    next_update(&mut sa, &mut buf_a).await;
    let one = settled(&w).await - before;
    assert!(one > 0);

    // Two streams of the same token (two sessions): one set of reads.
    let mut sb = events_of(&b).await;
    let mut buf_b = String::new();
    let first = next_update(&mut sb, &mut buf_b).await;
    assert!(
        first.contains(&format!("name=\"csrf\" value=\"{csrf_b}\"")),
        "{first}"
    );
    assert!(
        !first.contains(&csrf_a),
        "never another session's CSRF token"
    );
    let before = settled(&w).await;
    assert_eq!(w.consul.requests(), before, "two idle streams ask nothing");
    register(1);
    let to_a = next_update(&mut sa, &mut buf_a).await;
    let to_b = next_update(&mut sb, &mut buf_b).await;
    let two = settled(&w).await - before;
    assert_eq!(
        two, one,
        "a change costs the same reads with two streams of one token as with one"
    );
    assert!(to_a.contains(&csrf_a) && !to_a.contains(&csrf_b), "{to_a}");
    assert!(to_b.contains(&csrf_b) && !to_b.contains(&csrf_a), "{to_b}");
    assert_eq!(
        to_a.replace(&csrf_a, "CSRF"),
        to_b.replace(&csrf_b, "CSRF"),
        "the same section"
    );
    // The CSRF token a stream sent is its session's: its form post passes.
    let p = b.post("/services/web/pause", &[("csrf", &csrf_b)]).await;
    assert_eq!(p.status, 303, "{p:?}");

    // A token that may read nothing gets its own follower, never alice's
    // section.
    let nobody = sandbox::acl_roles::Secret::random();
    w.acl_put(
        "token",
        serde_json::json!({"Description": "nobody", "SecretID": nobody.expose()}),
    )
    .await;
    let mut c = Browser::new(addr);
    c.login(nobody.expose()).await;
    let mut sc = events_of(&c).await;
    let (_, seen) = next_event(&mut sc, &mut String::new()).await;
    assert!(
        !seen.contains(&format!("href=\"/plans/{plan}\"")),
        "a token that cannot read the plans never sees them: {seen}"
    );
    drop(sc);

    // One leaves: the other still follows changes.
    drop(sa);
    register(2);
    next_update(&mut sb, &mut buf_b).await;

    // The last leaves: soon a change makes nobody ask Consul anything.
    drop(sb);
    let ended = goes_quiet(&w, register, 3).await;
    assert!(ended, "the shared queries ended with the last client");
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_tls_the_cookie_is_secure() {
    let w = ConsoleWorld::new().await;
    let (alice, _) = w.operator_token("alice").await;
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let mut config = w.config();
    config.http.tls_cert_file = Some(dir.path().join("cert.pem"));
    config.http.tls_key_file = Some(dir.path().join("key.pem"));
    let running =
        rollgate::console::start(&config, &w.client("coordinator"), "tls", w.cancel.clone())
            .await
            .unwrap();
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = https
        .post(format!("https://localhost:{}/login", running.addr.port()))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("token={}", alice.expose()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Secure"] {
        assert!(cookie.contains(attr), "{attr} in {cookie}");
    }
    w.shutdown().await;
}
