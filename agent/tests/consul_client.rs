//! The Consul client against the sandbox Consul server over real HTTP:
//! agent registration and checks, KV, sessions and the leader lock, ACL, and
//! the failure modes an operator meets (unreachable, 403, 500, not JSON).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rollgate::config::{ConsulConfig, Secret};
use rollgate::consul::kv::PutOptions;
use rollgate::consul::lock::{FenceProof, LeaderLock, Leadership, LockConfig};
use rollgate::consul::types::{CheckDefinition, CheckStatus, ServiceRegistration};
use rollgate::consul::{Client, Error, QueryOptions};
use sandbox::consul::{Config as ServerConfig, Fault, Server, ServerHandle};
use sandbox::testkit::until;
use tokio_util::sync::CancellationToken;

/// The server's management token. ACLs are on, as in production; these
/// tests are about the client's mechanics, not about rights, so the client
/// holds the management token (the roles' rights are tested in
/// `acl_roles.rs` and `acl_policy.rs`).
const MANAGEMENT: &str = "client-test-management";

async fn server(nodes: usize) -> ServerHandle {
    Server::start(ServerConfig {
        nodes,
        ..ServerConfig::with_acls(MANAGEMENT)
    })
    .await
    .expect("sandbox consul starts")
}

fn client(addr: SocketAddr) -> Client {
    client_with(addr, Some(MANAGEMENT))
}

fn client_with(addr: SocketAddr, token: Option<&str>) -> Client {
    Client::new(&ConsulConfig {
        address: format!("http://{addr}"),
        token: token.map(Secret::new),
        timeout: Duration::from_secs(5),
        ..ConsulConfig::default()
    })
    .unwrap()
}

fn ttl_service(id: &str, ttl: &str) -> ServiceRegistration {
    ServiceRegistration {
        id: id.into(),
        name: "web".into(),
        port: 8080,
        address: "127.0.0.1".into(),
        meta: [("instance_id".to_string(), "i-1".to_string())].into(),
        checks: vec![CheckDefinition {
            check_id: format!("{id}:ttl"),
            name: "ttl".into(),
            ttl: ttl.into(),
            ..CheckDefinition::default()
        }],
        ..ServiceRegistration::default()
    }
}

async fn check_status(c: &Client, check_id: &str) -> Option<CheckStatus> {
    let r = c
        .health_checks("web", &QueryOptions::default())
        .await
        .unwrap();
    r.value
        .iter()
        .find(|h| h.check_id == check_id)
        .map(|h| h.status())
}

#[tokio::test]
async fn register_ttl_pass_then_expiry_to_critical() {
    let s = server(1).await;
    let node = s.nodes()[0].addr; // [0] is server-1
    let c = client(node);
    c.register_service(&ttl_service("web-1", "1s"))
        .await
        .unwrap();
    // Registering twice is idempotent: still one instance.
    c.register_service(&ttl_service("web-1", "1s"))
        .await
        .unwrap();
    let entries = c
        .health_service("web", false, None, &QueryOptions::default())
        .await
        .unwrap();
    assert_eq!(entries.value.len(), 1);
    assert_eq!(
        entries.value[0].service.meta.as_ref().unwrap()["instance_id"],
        "i-1"
    );

    c.update_check("web-1:ttl", CheckStatus::Passing, "all good")
        .await
        .unwrap();
    assert_eq!(
        check_status(&c, "web-1:ttl").await,
        Some(CheckStatus::Passing)
    );
    let passing = c
        .health_service("web", true, None, &QueryOptions::default())
        .await
        .unwrap();
    assert_eq!(passing.value.len(), 1, "passing with every check passing");

    // No refresh: the TTL expires and the check turns critical.
    until("ttl expiry", Duration::from_secs(5), || async {
        (check_status(&c, "web-1:ttl").await == Some(CheckStatus::Critical)).then_some(())
    })
    .await;
    let passing = c
        .health_service("web", true, None, &QueryOptions::default())
        .await
        .unwrap();
    assert!(passing.value.is_empty());
    s.shutdown().await;
}

#[tokio::test]
async fn http_check_turns_critical_when_the_target_answers_500() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU16, Ordering};
    let status = Arc::new(AtomicU16::new(200));
    let st = status.clone();
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(move || {
            let st = st.clone();
            async move { axum::http::StatusCode::from_u16(st.load(Ordering::SeqCst)).unwrap() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let app_task = tokio::spawn(async move { axum::serve(listener, app).await });

    let s = server(1).await;
    let c = client(s.nodes()[0].addr);
    c.register_service(&ServiceRegistration {
        id: "web-h".into(),
        name: "web".into(),
        port: target.port(),
        checks: vec![CheckDefinition {
            check_id: "web-h:http".into(),
            name: "http".into(),
            http: format!("http://{target}/health"),
            interval: "200ms".into(),
            timeout: "1s".into(),
            ..CheckDefinition::default()
        }],
        ..ServiceRegistration::default()
    })
    .await
    .unwrap();
    until("passing", Duration::from_secs(5), || async {
        (check_status(&c, "web-h:http").await == Some(CheckStatus::Passing)).then_some(())
    })
    .await;
    status.store(500, Ordering::SeqCst);
    until("critical", Duration::from_secs(5), || async {
        (check_status(&c, "web-h:http").await == Some(CheckStatus::Critical)).then_some(())
    })
    .await;
    status.store(429, Ordering::SeqCst);
    until("warning", Duration::from_secs(5), || async {
        (check_status(&c, "web-h:http").await == Some(CheckStatus::Warning)).then_some(())
    })
    .await;
    s.shutdown().await;
    app_task.abort();
}

#[tokio::test]
async fn maintenance_takes_the_instance_out_of_passing() {
    let s = server(1).await;
    let c = client(s.nodes()[0].addr);
    c.register_service(&ttl_service("web-m", "30s"))
        .await
        .unwrap();
    c.update_check("web-m:ttl", CheckStatus::Passing, "ok")
        .await
        .unwrap();
    c.service_maintenance("web-m", true, "draining for test")
        .await
        .unwrap();
    let all = c
        .health_service("web", false, None, &QueryOptions::default())
        .await
        .unwrap();
    let maint = all.value[0]
        .checks
        .iter()
        .find(|h| h.check_id == "_service_maintenance:web-m")
        .expect("maintenance check present");
    assert_eq!(maint.status(), CheckStatus::Critical);
    assert_eq!(maint.notes, "draining for test");
    let passing = c
        .health_service("web", true, None, &QueryOptions::default())
        .await
        .unwrap();
    assert!(passing.value.is_empty());
    c.service_maintenance("web-m", false, "").await.unwrap();
    let passing = c
        .health_service("web", true, None, &QueryOptions::default())
        .await
        .unwrap();
    assert_eq!(passing.value.len(), 1);
    s.shutdown().await;
}

#[tokio::test]
async fn kv_cas_conflict_and_round_trip() {
    let s = server(0).await;
    let c = client(s.http_addr());
    let create = PutOptions {
        cas: Some(0),
        ..PutOptions::default()
    };
    assert!(c.kv_put("rollgate/t/a", b"one", &create).await.unwrap());
    assert!(
        !c.kv_put("rollgate/t/a", b"two", &create).await.unwrap(),
        "cas=0 creates only"
    );
    let got = c
        .kv_get("rollgate/t/a", &QueryOptions::default())
        .await
        .unwrap();
    let kv = got.value.unwrap();
    assert_eq!(kv.value().unwrap(), b"one");
    let stale = PutOptions {
        cas: Some(kv.modify_index),
        ..PutOptions::default()
    };
    assert!(c.kv_put("rollgate/t/a", b"three", &stale).await.unwrap());
    assert!(
        !c.kv_put("rollgate/t/a", b"four", &stale).await.unwrap(),
        "stale cas refused"
    );
    assert!(
        c.kv_get("rollgate/t/missing", &QueryOptions::default())
            .await
            .unwrap()
            .value
            .is_none()
    );
    c.kv_put("rollgate/t/b", b"x", &PutOptions::default())
        .await
        .unwrap();
    let list = c
        .kv_list("rollgate/t/", &QueryOptions::default())
        .await
        .unwrap();
    assert_eq!(list.value.len(), 2);
    assert!(c.kv_delete("rollgate/t/", None, true).await.unwrap());
    assert!(
        c.kv_list("rollgate/t/", &QueryOptions::default())
            .await
            .unwrap()
            .value
            .is_empty()
    );
    // Oversized values are refused before sending, naming the limit.
    let big = vec![b'x'; 512 * 1024 + 1];
    let e = c
        .kv_put("rollgate/t/big", &big, &PutOptions::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("524288"), "{e}");
    s.shutdown().await;
}

fn lock_config(key: &str, holder: &str) -> LockConfig {
    LockConfig {
        ttl: Duration::from_secs(10),
        lock_delay: Duration::from_secs(1),
        retry: Duration::from_millis(100),
        wait: Duration::from_secs(5),
        ..LockConfig::new(key, holder)
    }
}

/// `a`'s session disappears without a release (as when a leader dies and
/// its session is invalidated); answers `b`'s leadership once it takes
/// the lock (after the lock-delay).
async fn lose_to(
    c: &Client,
    a: &Leadership,
    b: tokio::task::JoinHandle<Result<Option<Leadership>, Error>>,
) -> Leadership {
    assert!(c.session_destroy(&a.fence().session).await.unwrap());
    tokio::time::timeout(Duration::from_secs(10), b)
        .await
        .expect("b acquires")
        .unwrap()
        .unwrap()
        .expect("b leads")
}

#[tokio::test]
async fn lock_is_held_by_one_holder_and_taken_over_after_lock_delay() {
    let s = server(0).await;
    let a = LeaderLock::new(client(s.http_addr()), lock_config("rollgate/leader", "a"));
    let b = LeaderLock::new(client(s.http_addr()), lock_config("rollgate/leader", "b"));
    let stop = CancellationToken::new();
    let lead_a = a.acquire(&stop).await.unwrap().unwrap();
    assert!(lead_a.fence().verify(&client(s.http_addr())).await.unwrap());

    // b cannot get it while a holds it.
    let b_task = {
        let stop = stop.clone();
        tokio::spawn(async move { b.acquire(&stop).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !b_task.is_finished(),
        "b must not acquire while a holds the lock"
    );

    // a's session disappears without a release (as when a leader dies and
    // its session is invalidated): lock-delay applies, then b takes over.
    let c = client(s.http_addr());
    let lost = lead_a.lost();
    let destroyed_at = Instant::now();
    let lead_b = lose_to(&c, &lead_a, b_task).await;
    tokio::time::timeout(Duration::from_secs(10), lost.cancelled())
        .await
        .expect("a notices it lost the lock");
    assert!(
        destroyed_at.elapsed() >= Duration::from_millis(900),
        "b acquired before the 1s lock-delay ended"
    );
    assert!(lead_b.fence().lock_index > lead_a.fence().lock_index);
    assert!(
        !lead_a.fence().verify(&c).await.unwrap(),
        "a's fence is stale"
    );
    assert!(lead_b.fence().verify(&c).await.unwrap());
    lead_b.release().await.unwrap();
    let kv = c
        .kv_get("rollgate/leader", &QueryOptions::default())
        .await
        .unwrap();
    assert_eq!(kv.value.unwrap().session, None, "released");
    s.shutdown().await;
}

/// A proof of the lock is good for half the lock-delay from the sending of
/// the read that took it, without reading again; after that it reads; no
/// other holder gets the lock while a proof is good, even when the
/// session is lost the moment after the proof.
#[tokio::test]
async fn a_fence_proof_stands_for_half_the_lock_delay_and_nobody_leads_meanwhile() {
    let s = server(0).await;
    let c = client(s.http_addr());
    let a = LeaderLock::new(client(s.http_addr()), lock_config("rollgate/l3", "a"));
    let b = LeaderLock::new(client(s.http_addr()), lock_config("rollgate/l3", "b"));
    let stop = CancellationToken::new();
    let lead_a = a.acquire(&stop).await.unwrap().unwrap();
    let proof = FenceProof::new(
        lead_a.fence().clone(),
        Duration::from_secs(1),
        lead_a.lost(),
    );
    assert_eq!(proof.good_until(), None, "not proved before a read");
    let before = tokio::time::Instant::now();
    assert!(proof.verify(&c).await.unwrap());
    let until = proof.good_until().expect("proved");
    assert!(
        until >= before + Duration::from_millis(500)
            && until <= tokio::time::Instant::now() + Duration::from_millis(500),
        "good for half the 1 s lock-delay from the read's sending"
    );

    // Consul failing every KV read shows which checks read: one inside the
    // proof does not, one at its end does.
    let fail_kv = |count| Fault {
        path_prefix: "/v1/kv/".into(),
        count,
        status: 500,
        body: "rpc error: no cluster leader".into(),
        content_type: None,
    };
    s.inject_fault(fail_kv(100));
    let inside = until - Duration::from_millis(1);
    assert!(proof.ensure_at(&c, inside).await.unwrap(), "no read inside");
    assert!(proof.ensure_at(&c, until).await.is_err(), "read at its end");
    s.clear_faults();

    // Once the round has ended (leadership lost), no proof counts, and
    // nothing is read to say so.
    let ended = CancellationToken::new();
    let ending = FenceProof::new(
        lead_a.fence().clone(),
        Duration::from_secs(1),
        ended.clone(),
    );
    assert!(ending.verify(&c).await.unwrap());
    let inside = ending.good_until().unwrap() - Duration::from_millis(1);
    ended.cancel();
    s.inject_fault(fail_kv(100));
    assert!(!ending.ensure_at(&c, inside).await.unwrap());
    s.clear_faults();

    // The session is lost right after a fresh proof: lock-delay keeps b out
    // until after the proof has run out.
    assert!(proof.verify(&c).await.unwrap());
    let until = proof.good_until().unwrap();
    let b_task = {
        let stop = stop.clone();
        tokio::spawn(async move { b.acquire(&stop).await })
    };
    let lead_b = lose_to(&c, &lead_a, b_task).await;
    assert!(
        tokio::time::Instant::now() > until,
        "b led while a's proof still stood"
    );
    // A check that finds the key moved on forgets the proof.
    assert!(!proof.verify(&c).await.unwrap());
    assert_eq!(proof.good_until(), None);
    assert!(!proof.ensure(&c).await.unwrap());

    // Without a lock-delay no proof stands: every check reads.
    let bare = FenceProof::new(
        lead_b.fence().clone(),
        Duration::ZERO,
        CancellationToken::new(),
    );
    assert!(bare.verify(&c).await.unwrap());
    assert_eq!(bare.good_until(), None);
    s.inject_fault(fail_kv(1));
    assert!(bare.ensure(&c).await.is_err());
    lead_b.release().await.unwrap();
    s.shutdown().await;
}

#[tokio::test]
async fn acquire_gives_up_cleanly_on_shutdown() {
    let s = server(0).await;
    let a = LeaderLock::new(client(s.http_addr()), lock_config("rollgate/l2", "a"));
    let b = LeaderLock::new(client(s.http_addr()), lock_config("rollgate/l2", "b"));
    let stop = CancellationToken::new();
    let lead = a.acquire(&stop).await.unwrap().unwrap();
    let stop_b = CancellationToken::new();
    let sb = stop_b.clone();
    let task = tokio::spawn(async move { b.acquire(&sb).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop_b.cancel();
    let r = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert!(r.unwrap().is_none());
    // Its session was destroyed: only a's remains; after a's release, none.
    let sessions = || async {
        reqwest::Client::new()
            .get(format!("http://{}/v1/session/list", s.http_addr()))
            .header("X-Consul-Token", MANAGEMENT)
            .send()
            .await
            .unwrap()
            .json::<Vec<serde_json::Value>>()
            .await
            .unwrap()
    };
    assert_eq!(sessions().await.len(), 1);
    lead.release().await.unwrap();
    assert!(sessions().await.is_empty(), "release destroys the session");
    s.shutdown().await;
}

#[tokio::test]
async fn acl_denial_is_a_clear_error_without_the_token() {
    let s = Server::start(ServerConfig {
        acl_management_token: Some("mgmt-s3cr3t".into()),
        acl_read_tokens: vec!["read-s3cr3t".into()],
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let ok = client_with(s.http_addr(), Some("mgmt-s3cr3t"));
    assert!(ok.kv_put("k", b"v", &PutOptions::default()).await.unwrap());

    for token in [None, Some("wrong-s3cr3t"), Some("read-s3cr3t")] {
        let c = client_with(s.http_addr(), token);
        let e = c
            .kv_put("k", b"v", &PutOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
        let text = format!("{e} {e:?}");
        assert!(text.contains("PUT /v1/kv/k"), "names the call: {text}");
        assert!(text.contains("403"), "{text}");
        assert!(!text.contains("s3cr3t"), "token leaked: {text}");
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
    // A read-only token may read.
    let ro = client_with(s.http_addr(), Some("read-s3cr3t"));
    assert!(
        ro.kv_get("k", &QueryOptions::default())
            .await
            .unwrap()
            .value
            .is_some()
    );
    s.shutdown().await;
}

#[tokio::test]
async fn unreachable_500_and_non_json_are_clear_errors() {
    // Unreachable: a port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let c = client(closed);
    let e = c.agent_self().await.unwrap_err();
    assert!(matches!(e, Error::Transport { .. }), "{e:?}");
    assert!(e.is_retryable());
    let text = e.to_string();
    assert!(
        text.contains("GET /v1/agent/self") && text.contains(&closed.to_string()),
        "{text}"
    );

    let s = server(0).await;
    let c = client(s.http_addr());
    s.inject_fault(Fault {
        path_prefix: "/v1/kv/".into(),
        count: 1,
        status: 500,
        body: "rpc error: no cluster leader".into(),
        content_type: None,
    });
    let e = c.kv_get("x", &QueryOptions::default()).await.unwrap_err();
    assert!(matches!(e, Error::Status { status: 500, .. }), "{e:?}");
    assert!(e.to_string().contains("no cluster leader"), "{e}");
    assert!(e.is_retryable());

    s.inject_fault(Fault {
        path_prefix: "/v1/agent/self".into(),
        count: 1,
        status: 200,
        body: "<html>proxy error</html>".into(),
        content_type: Some("text/html".into()),
    });
    let e = c.agent_self().await.unwrap_err();
    assert!(matches!(e, Error::Decode { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("GET /v1/agent/self") && text.contains("proxy error"),
        "{text}"
    );
    assert!(!e.is_retryable());
    s.shutdown().await;
}

// Multi-threaded: the test blocks on a child process while the in-process
// server must keep answering it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_connect_reports_consul_or_the_failing_call() {
    let s = server(0).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rollgate"))
        .args(["check-config", "--connect"])
        .env_clear()
        .env("CONSUL_HTTP_ADDR", s.http_addr().to_string())
        .env("CONSUL_HTTP_TOKEN", MANAGEMENT)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("server-1") && stderr.contains("dc1"),
        "{stderr}"
    );

    // A token Consul does not know: the real server's 403.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rollgate"))
        .args(["check-config", "--connect"])
        .env_clear()
        .env("CONSUL_HTTP_ADDR", s.http_addr().to_string())
        .env("CONSUL_HTTP_TOKEN", "tok-s3cr3t")
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3), "Consul refusing: {all}");
    assert!(
        all.contains("403 ACL not found") && all.contains("CONSUL_HTTP_TOKEN"),
        "{all}"
    );
    assert!(!all.contains("tok-s3cr3t"), "{all}");
    s.shutdown().await;
}
