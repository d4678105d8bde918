//! `docs/openapi.yaml` describes exactly the routes the console's router
//! serves: every route is in the document, every path of the document is
//! routed, with the same methods. The router is also built once, so a
//! route axum would refuse fails here rather than at start-up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

/// (method, path) of every operation in the document: the keys under
/// `paths:` (two-space indent) and their method keys (four spaces).
fn documented() -> BTreeSet<(String, String)> {
    let text = rollgate::console::api::OPENAPI;
    let mut out = BTreeSet::new();
    let mut in_paths = false;
    let mut path = None::<String>;
    for line in text.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            in_paths = line.trim_end() == "paths:";
            path = None;
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  ").filter(|l| l.starts_with('/')) {
            path = Some(p.trim_end().trim_end_matches(':').to_string());
        } else if let Some(m) = line.strip_prefix("    ").filter(|l| !l.starts_with(' ')) {
            let m = m.trim_end().trim_end_matches(':');
            if ["get", "post", "put", "delete", "patch"].contains(&m) {
                out.insert((
                    m.to_uppercase(),
                    path.clone().expect("a method under a path"),
                ));
            }
        }
    }
    out
}

#[test]
fn every_route_is_documented_and_every_documented_operation_is_routed() {
    let routed: BTreeSet<(String, String)> = rollgate::console::route_list()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let documented = documented();
    assert!(
        documented.len() >= 10,
        "the document was read: {documented:?}"
    );
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty() && unrouted.is_empty(),
        "routes missing from docs/openapi.yaml: {undocumented:?}\n\
         documented but not routed: {unrouted:?}"
    );
}

#[test]
fn the_document_is_the_checked_in_file_and_is_openapi_3() {
    let on_disk = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.yaml"),
    )
    .unwrap();
    assert_eq!(on_disk, rollgate::console::api::OPENAPI);
    assert!(on_disk.starts_with("openapi: 3."), "an OpenAPI 3 document");
}

#[tokio::test]
async fn the_router_builds_and_serves_the_document_without_a_token() {
    let config = rollgate::config::Config::default();
    let client = rollgate::consul::Client::new(&config.consul).unwrap();
    let mut config = config;
    config.http.listen = "127.0.0.1:0".into();
    let cancel = tokio_util::sync::CancellationToken::new();
    let running = rollgate::console::start(&config, &client, "test", cancel.clone())
        .await
        .unwrap();
    let r = reqwest::get(format!("http://{}/v1/openapi.yaml", running.addr))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.text().await.unwrap(),
        rollgate::console::api::OPENAPI,
        "served as checked in"
    );
    cancel.cancel();
    running.stopped().await;
}
