//! The console's test world without AWS: the sandbox Consul with ACLs on
//! (`default_policy = "deny"`), a policy and token per role from
//! `config/acl/*.hcl`, plans and a rollout written as the coordinator
//! writes them (with the coordinator's token), and consoles started from
//! the library on loopback ports, as `rollgate coordinator` starts them.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use rollgate::config::{Config, ConsulConfig, Secret as ConsulSecret};
use rollgate::consul::Client;
use rollgate::coordinator::config::ServiceConfig;
use rollgate::rollout::machine::Rollout;
use rollgate::rollout::plan::{Decision, Plan, now_ms};
use rollgate::rollout::store::Store;
use sandbox::acl_roles::{RoleTokens, Secret, http_client};
use sandbox::consul::{Config as ServerConfig, Server, ServerHandle};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const PLAN: &str = include_str!("../../src/rollout/store/testdata/plan_v1.json");
const ROLLOUT: &str = include_str!("../../src/rollout/store/testdata/rollout_v1.json");

pub struct ConsoleWorld {
    pub consul: ServerHandle,
    pub management: Secret,
    pub roles: RoleTokens,
    pub cancel: CancellationToken,
}

impl ConsoleWorld {
    /// Consul with ACLs on and the workspace's roles.
    pub async fn new() -> Self {
        let management = Secret::random();
        let consul = Server::start(ServerConfig {
            acl_management_token: Some(management.expose().to_owned()),
            ..ServerConfig::default()
        })
        .await
        .unwrap();
        let roles = sandbox::acl_roles::create_workspace_roles(consul.http_addr(), &management)
            .await
            .unwrap();
        Self {
            consul,
            management,
            roles,
            cancel: CancellationToken::new(),
        }
    }

    /// A development Consul: ACLs off, no roles, no tokens.
    pub async fn without_acls() -> Self {
        let consul = Server::start(ServerConfig::default()).await.unwrap();
        Self {
            consul,
            management: Secret::random(),
            roles: RoleTokens::default(),
            cancel: CancellationToken::new(),
        }
    }

    /// A client with `role`'s token (none with ACLs off).
    pub fn client(&self, role: &str) -> Client {
        Client::new(&ConsulConfig {
            address: format!("http://{}", self.consul.http_addr()),
            token: self
                .roles
                .secret(role)
                .map(|s| ConsulSecret::new(s.expose())),
            ..ConsulConfig::default()
        })
        .unwrap()
    }

    /// The coordinator's store (its token), as the coordinator writes.
    pub fn store(&self) -> Store {
        Store::new(self.client("coordinator"), "rollgate")
    }

    /// `PUT /v1/acl/<what>` with the management token.
    pub async fn acl_put(&self, what: &str, body: Value) -> Value {
        let http = http_client(&self.management, Duration::from_secs(10)).unwrap();
        let r = http
            .put(format!("http://{}/v1/acl/{what}", self.consul.http_addr()))
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

    /// Another token with the operator policy (another person), described
    /// as `name`; answers its secret and AccessorID.
    pub async fn operator_token(&self, name: &str) -> (Secret, String) {
        let secret = Secret::random();
        let policy = self.roles.get("operator").unwrap().policy.clone();
        let t = self
            .acl_put(
                "token",
                json!({
                    "Description": name,
                    "SecretID": secret.expose(),
                    "Policies": [{ "Name": policy }],
                }),
            )
            .await;
        (secret, t["AccessorID"].as_str().unwrap().to_owned())
    }

    /// A pending plan `web-<n>`, written with the coordinator's token.
    pub async fn pending_plan(&self, n: u64) -> String {
        let mut plan: Plan = rollgate::consul::records::decode("k", PLAN.as_bytes()).unwrap();
        plan.id = format!("web-{n}");
        plan.created_at = now_ms();
        plan.decision = Decision::Pending {
            expires_at: now_ms() + 3_600_000,
        };
        plan.outcome = None;
        assert!(self.store().create_plan(&plan).await.unwrap());
        plan.id
    }

    /// An active rollout of `web` for plan `id`, as the leader saves it.
    pub async fn active_rollout(&self, id: &str) {
        let mut r: Rollout = rollgate::consul::records::decode("k", ROLLOUT.as_bytes()).unwrap();
        r.spec.id = id.to_owned();
        assert!(self.store().save_rollout(&r, 0).await.unwrap().is_some());
    }

    /// Asserts that nothing was recorded for `plan`: still pending, no
    /// command queued for `web`.
    pub async fn nothing_recorded(&self, plan: &str) {
        let (p, _) = self.store().plan(plan).await.unwrap();
        assert!(
            matches!(p.decision, Decision::Pending { .. }),
            "the plan is still pending: {:?}",
            p.decision
        );
        assert!(
            self.store().commands("web").await.unwrap().0.is_empty(),
            "no command queued"
        );
    }

    /// The configuration of a coordinator replica whose console listens on
    /// a free loopback port.
    pub fn config(&self) -> Config {
        let mut c = Config::default();
        c.consul.address = format!("http://{}", self.consul.http_addr());
        c.services = vec![ServiceConfig {
            name: "web".into(),
            auto_scaling_group: "web-asg".into(),
            launch_template: "web-lt".into(),
            artifact: "acmeinc/web".into(),
            ..ServiceConfig::default()
        }];
        c.http.listen = "127.0.0.1:0".into();
        c
    }

    /// A console as replica `replica` runs it (the coordinator's token).
    pub async fn console(&self, replica: &str) -> SocketAddr {
        let running = rollgate::console::start(
            &self.config(),
            &self.client("coordinator"),
            replica,
            self.cancel.clone(),
        )
        .await
        .unwrap();
        running.addr
    }

    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.consul.shutdown().await;
    }
}

/// How a request authenticates.
#[derive(Debug, Clone)]
pub enum Auth<'a> {
    None,
    ConsulHeader(&'a str),
    Bearer(&'a str),
}

/// An answer: status and JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// The `error` text (empty when none).
    pub fn error(&self) -> String {
        self.body["error"].as_str().unwrap_or_default().to_owned()
    }
}

/// Sends `method path` to the console at `addr`.
pub async fn call(
    addr: SocketAddr,
    method: reqwest::Method,
    path: &str,
    auth: Auth<'_>,
    body: Option<Value>,
) -> Answer {
    let http = reqwest::Client::new();
    let mut r = http.request(method, format!("http://{addr}{path}"));
    r = match auth {
        Auth::None => r,
        Auth::ConsulHeader(t) => r.header("X-Consul-Token", t),
        Auth::Bearer(t) => r.header("Authorization", format!("Bearer {t}")),
    };
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer { status, body }
}
