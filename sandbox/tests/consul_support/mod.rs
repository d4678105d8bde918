//! Helpers shared by the `consul_*` integration tests: start the server in
//! process on port 0, talk to it over real HTTP with reqwest.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::{Client, Response, StatusCode};
use sandbox::consul::{Config, Server, ServerHandle};
use serde_json::Value;

/// A started server and a client for it.
pub struct World {
    pub server: ServerHandle,
    pub http: Client,
}

impl World {
    /// Starts a server with `nodes` client nodes and default settings.
    pub async fn start(nodes: usize) -> World {
        World::with(Config {
            nodes,
            ..Config::default()
        })
        .await
    }

    /// Starts a server with `config`.
    pub async fn with(config: Config) -> World {
        let server = Server::start(config).await.expect("the server starts");
        let http = Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("a reqwest client");
        World { server, http }
    }

    /// URL of `path` on the server listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.server.http_addr(), path)
    }

    /// Address of the agent of node `name`.
    pub fn node(&self, name: &str) -> SocketAddr {
        self.server
            .nodes()
            .into_iter()
            .find(|n| n.name == name)
            .map(|n| n.addr)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// URL of `path` on the agent of node `name`.
    pub fn agent(&self, name: &str, path: &str) -> String {
        format!("http://{}{}", self.node(name), path)
    }

    pub async fn get(&self, url: &str) -> Response {
        self.http.get(url).send().await.expect("GET succeeds")
    }

    pub async fn put(&self, url: &str, body: impl Into<reqwest::Body>) -> Response {
        self.http
            .put(url)
            .body(body)
            .send()
            .await
            .expect("PUT succeeds")
    }

    pub async fn put_json(&self, url: &str, body: &Value) -> Response {
        self.http
            .put(url)
            .json(body)
            .send()
            .await
            .expect("PUT succeeds")
    }

    /// Registers a service on node `name`, asserting 200.
    pub async fn register(&self, name: &str, body: &Value) {
        let resp = self
            .put_json(&self.agent(name, "/v1/agent/service/register"), body)
            .await;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::OK, "registration failed: {text}");
    }

    /// GET returning (status, index header, JSON body or Null).
    pub async fn read(&self, url: &str) -> (StatusCode, u64, Value) {
        let resp = self.get(url).await;
        let status = resp.status();
        let index = index_of(&resp);
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, index, body)
    }

    /// Waits (with blocking queries, at most `limit`) until `done` holds for
    /// the JSON answer of `path` on the server listener.
    pub async fn wait_for(
        &self,
        path: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        let mut index = 0;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let (_, new_index, body) = self
                .read(&self.url(&format!("{path}{sep}index={index}&wait=1s")))
                .await;
            if done(&body) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "condition on {path} not met within {limit:?}; last answer: {body}"
            );
            index = if new_index < index { 0 } else { new_index };
        }
    }
}

/// The `X-Consul-Index` of an answer (0 when absent).
pub fn index_of(resp: &Response) -> u64 {
    resp.headers()
        .get("x-consul-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The status of check `check_id` in a list of checks.
pub fn check_status(checks: &Value, check_id: &str) -> Option<String> {
    checks
        .as_array()?
        .iter()
        .find(|c| c["CheckID"] == check_id)
        .and_then(|c| c["Status"].as_str())
        .map(str::to_string)
}
