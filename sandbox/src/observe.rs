//! Reading rollgate's world from outside, over Consul's HTTP API, for the
//! demo and the benchmarks (the sandbox does not depend on the `rollgate`
//! crate, so it reads the KV records as JSON).

use std::net::SocketAddr;

use base64::Engine as _;

/// A KV value decoded as JSON, if present and readable.
pub async fn kv_json(
    http: &reqwest::Client,
    consul: SocketAddr,
    key: &str,
) -> Option<serde_json::Value> {
    let url = format!("http://{consul}/v1/kv/{key}");
    let entries: Vec<serde_json::Value> = http.get(url).send().await.ok()?.json().await.ok()?;
    let raw = entries.first()?["Value"].as_str()?.to_string();
    let bytes = base64::engine::general_purpose::STANDARD.decode(raw).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Plan `n` of the `web` service (`web-<n>`), if stored.
pub async fn plan(http: &reqwest::Client, consul: SocketAddr, n: u64) -> Option<serde_json::Value> {
    kv_json(
        http,
        consul,
        &format!("rollgate/services/web/plans/{n:010}"),
    )
    .await
}

/// The instances of `service` Consul reports passing (health entries).
pub async fn passing(
    http: &reqwest::Client,
    consul: SocketAddr,
    service: &str,
) -> Vec<serde_json::Value> {
    let url = format!("http://{consul}/v1/health/service/{service}?passing");
    match http.get(url).send().await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}
