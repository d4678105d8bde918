//! Adding and removing a Consul node per simulated instance, through the
//! sandbox Consul's control API (`/sandbox/v1/nodes`, see the `consul`
//! module). Going through HTTP rather than a `ServerHandle` lets the
//! simulator run beside whoever owns the server, with no shared lifetime.

use std::net::SocketAddr;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::json;

/// Characters escaped in a node name put in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

/// How long one control request may take.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NodeAnswer {
    name: String,
    addr: SocketAddr,
}

/// A client of the sandbox Consul's control API.
#[derive(Debug, Clone)]
pub(crate) struct Control {
    http: reqwest::Client,
    base: String,
}

impl Control {
    pub fn new(server: SocketAddr) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            base: format!("http://{server}/sandbox/v1"),
        })
    }

    /// Starts node `name` and answers its agent address. A node of that name
    /// left behind earlier (say, by a simulator that was killed) is reused.
    pub async fn add_node(&self, name: &str) -> Result<SocketAddr, String> {
        let response = self
            .http
            .put(format!("{}/nodes", self.base))
            .json(&json!({ "Name": name }))
            .send()
            .await
            .map_err(|e| format!("cannot reach the sandbox Consul: {}", chain(&e)))?;
        let status = response.status();
        if status.is_success() {
            let node: NodeAnswer = response
                .json()
                .await
                .map_err(|e| format!("unexpected answer adding node {name}: {}", chain(&e)))?;
            return Ok(node.addr);
        }
        let body = response.text().await.unwrap_or_default();
        if body.contains("already exists") {
            if let Some(addr) = self.find(name).await? {
                tracing::info!(node = name, http = %addr, "Reusing the Consul node left behind.");
                return Ok(addr);
            }
        }
        Err(format!(
            "the sandbox Consul refused to add node {name}: {status} {}",
            body.trim()
        ))
    }

    async fn find(&self, name: &str) -> Result<Option<SocketAddr>, String> {
        let nodes: Vec<NodeAnswer> = self
            .http
            .get(format!("{}/nodes", self.base))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("cannot list the sandbox Consul's nodes: {}", chain(&e)))?
            .json()
            .await
            .map_err(|e| format!("unexpected node list: {}", chain(&e)))?;
        Ok(nodes.into_iter().find(|n| n.name == name).map(|n| n.addr))
    }

    /// Stops node `name` (its services and checks leave the catalog). A node
    /// that is already gone is not an error.
    pub async fn remove_node(&self, name: &str) -> Result<(), String> {
        let response = self
            .http
            .delete(format!(
                "{}/nodes/{}",
                self.base,
                utf8_percent_encode(name, SEGMENT)
            ))
            .send()
            .await
            .map_err(|e| format!("cannot reach the sandbox Consul: {}", chain(&e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        if body.contains("no node named") {
            return Ok(());
        }
        Err(format!(
            "the sandbox Consul refused to remove node {name}: {status} {}",
            body.trim()
        ))
    }
}

/// An error and its sources, `: `-separated.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}
