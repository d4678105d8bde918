//! The blocking-query watch loop against the sandbox Consul over real HTTP:
//! it wakes on a change (no polling), skips identical answers, resets when the
//! index goes backwards, and backs off on errors then recovers.
//!
//! The loop's rules are also unit-tested under paused time in
//! `consul/watch.rs`; these tests prove they hold against a server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rollgate::config::ConsulConfig;
use rollgate::consul::kv::PutOptions;
use rollgate::consul::watch::{Watch, WatchConfig};
use rollgate::consul::{Client, QueryOptions, Response};
use sandbox::consul::{Config as ServerConfig, Fault, Server, ServerHandle};

/// The server's management token. ACLs are on, as in production; these
/// tests are about the watch loop, not about rights, so the client holds
/// the management token (the roles' rights are tested in `acl_roles.rs`).
const MANAGEMENT: &str = "watch-test-management";

async fn server() -> ServerHandle {
    Server::start(ServerConfig::with_acls(MANAGEMENT))
        .await
        .unwrap()
}

fn client(addr: std::net::SocketAddr) -> Client {
    Client::new(&ConsulConfig {
        address: format!("http://{addr}"),
        token: Some(rollgate::config::Secret::new(MANAGEMENT)),
        timeout: Duration::from_secs(5),
        ..ConsulConfig::default()
    })
    .unwrap()
}

fn config(wait: Duration) -> WatchConfig {
    WatchConfig {
        wait,
        backoff_min: Duration::from_millis(40),
        backoff_max: Duration::from_secs(5),
        ..WatchConfig::default()
    }
}

type Value = Option<Vec<u8>>;
type Answer = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Response<Value>, rollgate::consul::Error>> + Send>,
>;

/// A watch on one KV key's value, recording when each request started.
fn kv_watch(
    c: Client,
    key: &'static str,
    wait: Duration,
    starts: Arc<Mutex<Vec<Instant>>>,
) -> Watch<Value, impl FnMut(QueryOptions) -> Answer> {
    Watch::new("kv", config(wait), move |opts: QueryOptions| -> Answer {
        starts.lock().unwrap().push(Instant::now());
        let c = c.clone();
        Box::pin(async move {
            let r = c.kv_get(key, &opts).await?;
            Ok(Response {
                value: r.value.map(|kv| kv.value().unwrap_or_default()),
                meta: r.meta,
            })
        })
    })
}

#[tokio::test]
async fn wakes_on_change_and_skips_identical_answers() {
    let s = server().await;
    let c = client(s.http_addr());
    c.kv_put("w/key", b"v0", &PutOptions::default())
        .await
        .unwrap();
    let starts = Arc::new(Mutex::new(Vec::new()));
    let mut w = kv_watch(c.clone(), "w/key", Duration::from_secs(30), starts.clone());
    assert_eq!(w.next().await.unwrap().value.as_deref(), Some(&b"v0"[..]));

    // Each change is seen promptly: the query was already blocking.
    let mut latencies = Vec::new();
    for i in 1..=5 {
        let writer = c.clone();
        let value = format!("v{i}");
        let write = async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let at = Instant::now();
            writer
                .kv_put("w/key", value.as_bytes(), &PutOptions::default())
                .await
                .unwrap();
            at
        };
        let (seen, written_at) = tokio::join!(w.next(), write);
        let seen = seen.unwrap();
        latencies.push(written_at.elapsed());
        assert_eq!(seen.value.unwrap(), format!("v{i}").into_bytes());
    }
    latencies.sort();
    // The median, robust to a noisy shared machine; a polling loop would be
    // seconds late.
    assert!(latencies[2] < Duration::from_millis(100), "{latencies:?}");

    // An identical write bumps the index but is not yielded; the next real
    // change is.
    let requests_before = starts.lock().unwrap().len();
    c.kv_put("w/key", b"v5", &PutOptions::default())
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_millis(600), w.next()).await;
    assert!(next.is_err(), "identical data must not be published");
    assert!(
        starts.lock().unwrap().len() > requests_before,
        "the identical answer did arrive and was skipped"
    );
    c.kv_put("w/key", b"v6", &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(w.next().await.unwrap().value.unwrap(), b"v6");
    s.shutdown().await;
}

#[tokio::test]
async fn index_going_backwards_is_followed() {
    let s = server().await;
    let c = client(s.http_addr());
    for i in 0..5 {
        c.kv_put(&format!("w/fill{i}"), b"x", &PutOptions::default())
            .await
            .unwrap();
    }
    c.kv_put("w/key", b"before", &PutOptions::default())
        .await
        .unwrap();
    let starts = Arc::new(Mutex::new(Vec::new()));
    // After a restore, a query holding the old, higher index blocks until its
    // wait ends (as in Consul); a short wait keeps the test short.
    let mut w = kv_watch(c.clone(), "w/key", Duration::from_secs(1), starts);
    w.next().await.unwrap();
    let high = w.index();
    assert!(high > 3);

    // A snapshot restore: the index goes back, then the key changes.
    s.rewind_index(2);
    let writer = c.clone();
    let (seen, _) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(10), w.next()),
        async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            writer
                .kv_put("w/key", b"after", &PutOptions::default())
                .await
                .unwrap();
        }
    );
    let seen = seen.expect("the watch follows the lower index").unwrap();
    assert_eq!(seen.value.unwrap(), b"after");
    assert!(w.index() < high, "index reset to the server's lower index");
    s.shutdown().await;
}

#[tokio::test]
async fn five_500s_back_off_with_growing_gaps_then_recover() {
    let s = server().await;
    let c = client(s.http_addr());
    c.kv_put("w/key", b"v0", &PutOptions::default())
        .await
        .unwrap();
    let starts = Arc::new(Mutex::new(Vec::new()));
    let mut w = kv_watch(c.clone(), "w/key", Duration::from_secs(30), starts.clone());
    w.next().await.unwrap();
    // Change the key first (the fault would swallow this write), so the next
    // successful read answers at once with the new value.
    c.kv_put("w/key", b"v1", &PutOptions::default())
        .await
        .unwrap();
    s.inject_fault(Fault {
        path_prefix: "/v1/kv/".into(),
        count: 5,
        status: 500,
        body: "rpc error".into(),
        content_type: None,
    });
    let mut errors = 0;
    let value = loop {
        match tokio::time::timeout(Duration::from_secs(20), w.next())
            .await
            .unwrap()
        {
            Ok(r) => break r.value,
            Err(e) => {
                errors += 1;
                assert!(e.to_string().contains("500"), "{e}");
            }
        }
    };
    assert_eq!(errors, 5);
    assert_eq!(value.unwrap(), b"v1", "recovered with the current value");

    let starts = starts.lock().unwrap().clone();
    // The last 6 requests: 5 failing ones then the one that succeeded.
    let tail = &starts[starts.len() - 6..];
    let gaps: Vec<Duration> = tail.windows(2).map(|p| p[1] - p[0]).collect();
    // Back-off doubles (with jitter) from 40 ms: the gap after the 4th
    // failure is well above the gap after the 1st.
    assert!(gaps[4] > gaps[0] * 3, "gaps must grow: {gaps:?}");
    assert!(gaps[0] >= Duration::from_millis(15), "{gaps:?}");
    s.shutdown().await;
}
