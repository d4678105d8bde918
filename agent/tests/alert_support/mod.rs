//! The world the alerting tests run in: the sandbox Consul, the Slack
//! stand-in and the SMTP server, all on loopback, and a rollgate
//! configuration with every duration scaled down to fractions of a second.
//!
//! Consul runs with ACLs on (`default_policy = "deny"`) and Consul's own
//! timings. The code under test (the watcher, the outbox and its sender:
//! what `rollgate watch` runs) uses the token of the `watcher` role, created
//! from `config/acl/watcher.hcl` ([`sandbox::acl_roles`]), and the KV
//! prefix that policy is written for (`rollgate`). The test's stand-ins
//! for the instances' agents ([`World::agent`], [`World::register`],
//! [`World::set`]) register and update services of any name on any node,
//! which no rollgate role may do (the agent role writes `web` only), so
//! they use the management token.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rollgate::alerting::Watcher;
use rollgate::config::{Config, Secret};
use rollgate::consul::types::{CheckDefinition, CheckStatus, ServiceRegistration};
use rollgate::consul::{self, Client};
use rollgate::notify::config::{EmailReceiver, ReceiverConfig, SlackReceiver, TlsMode};
use rollgate::notify::{Outbox, Receivers, Sender};
use sandbox::acl_roles::{RoleTokens, Secret as AclSecret};
use sandbox::consul::{Server, ServerHandle};
use sandbox::slack::{SlackHandle, SlackServer};
use sandbox::smtp::{SmtpHandle, SmtpServer};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "xoxb-sandbox-token";

pub struct World {
    pub consul: ServerHandle,
    pub slack: SlackHandle,
    pub smtp: SmtpHandle,
    /// The watcher role's token in `consul.token`.
    pub config: Config,
    /// The management token: the stand-ins for the instances' agents.
    pub management: AclSecret,
    /// A token per role, from `config/acl/*.hcl`.
    pub roles: RoleTokens,
}

impl World {
    pub async fn start(nodes: usize) -> World {
        let management = AclSecret::random();
        let consul = Server::start(sandbox::consul::Config {
            nodes,
            ..sandbox::consul::Config::with_acls(management.expose())
        })
        .await
        .expect("consul starts");
        let roles = sandbox::acl_roles::create_workspace_roles(consul.http_addr(), &management)
            .await
            .expect("the roles' policies and tokens are created");
        let slack = SlackServer::start(sandbox::slack::Config::default())
            .await
            .expect("slack starts");
        let smtp = SmtpServer::start(sandbox::smtp::Config::default())
            .await
            .expect("smtp starts");
        let mut config = Config::default();
        config.consul.address = format!("http://{}", consul.http_addr());
        config.consul.max_wait = Duration::from_secs(5);
        // The prefix config/acl/*.hcl is written for.
        config.consul.kv_prefix = "rollgate".into();
        config.consul.token = Some(Secret::new(
            roles.secret("watcher").expect("watcher token").expose(),
        ));
        config.notify.receivers = vec![
            slack_receiver(&slack, TOKEN, "C0ALERTS"),
            email_receiver(&smtp),
        ];
        config.notify.default_receivers = vec!["ops-slack".into(), "ops-email".into()];
        config.notify.retry_min = Duration::from_millis(50);
        config.notify.retry_max = Duration::from_millis(400);
        config.notify.fallback_after = Duration::from_secs(1);
        config.notify.send_timeout = Duration::from_secs(2);
        config.notify.lease = Duration::from_secs(3);
        config.watch.change_threshold = Duration::from_millis(400);
        config.watch.group_wait = Duration::from_millis(300);
        config.watch.group_interval = Duration::from_millis(300);
        config.watch.repeat_interval = Duration::from_secs(3600);
        config.watch.leader_check_interval = Duration::from_millis(200);
        World {
            consul,
            slack,
            smtp,
            config,
            management,
            roles,
        }
    }

    pub fn client(&self) -> Client {
        Client::new(&self.config.consul).expect("client")
    }

    /// A client for the agent of node `name`, with the management token
    /// (see the module docs).
    pub fn agent(&self, name: &str) -> Client {
        let addr = self
            .consul
            .nodes()
            .into_iter()
            .find(|n| n.name == name)
            .map(|n| n.addr)
            .expect("node exists");
        let mut c = self.config.consul.clone();
        c.address = format!("http://{addr}");
        c.token = Some(Secret::new(self.management.expose()));
        Client::new(&c).expect("client")
    }

    pub fn outbox(&self) -> Outbox {
        Outbox::new(
            self.client(),
            &self.config.consul.kv_prefix,
            &self.config.notify,
        )
    }

    pub fn receivers(&self) -> Receivers {
        Receivers::from_config_with_env(&self.config.notify, &|_| None).expect("receivers build")
    }

    /// Starts the outbox sender; answers its task and its stop switch.
    pub fn sender(&self) -> (JoinHandle<()>, CancellationToken) {
        let cancel = CancellationToken::new();
        let sender = Sender::new(
            self.outbox(),
            self.receivers(),
            &self.config.notify,
            self.config.consul.max_wait,
        );
        (tokio::spawn(sender.run(cancel.clone())), cancel)
    }

    /// Starts the watcher and the sender.
    pub fn watch(&self) -> Running {
        let cancel = CancellationToken::new();
        let (sender, sender_cancel) = self.sender();
        let watcher = Watcher::new(
            self.client(),
            self.config.watch.clone(),
            &self.config.consul.kv_prefix,
            self.config.consul.max_wait,
            self.outbox(),
            None,
        );
        let watching = tokio::spawn(watcher.run(cancel.clone()));
        Running {
            watching,
            sender,
            cancel,
            sender_cancel,
        }
    }

    /// Registers `service_id` of `service` on `node` with `checks` TTL checks,
    /// all passing; answers the check IDs.
    pub async fn register(
        &self,
        node: &str,
        service: &str,
        service_id: &str,
        checks: usize,
    ) -> Vec<String> {
        let ids: Vec<String> = (0..checks)
            .map(|i| format!("{service_id}:check-{i}"))
            .collect();
        let reg = ServiceRegistration {
            id: service_id.into(),
            name: service.into(),
            tags: vec!["prod".into()],
            port: 8080,
            checks: ids
                .iter()
                .map(|id| CheckDefinition {
                    check_id: id.clone(),
                    name: format!("{service} health"),
                    ttl: "10m".into(),
                    status: Some(CheckStatus::Passing),
                    ..CheckDefinition::default()
                })
                .collect(),
            ..ServiceRegistration::default()
        };
        self.agent(node)
            .register_service(&reg)
            .await
            .expect("registers");
        ids
    }

    pub async fn set(&self, node: &str, check: &str, status: CheckStatus, output: &str) {
        self.agent(node)
            .update_check(check, status, output)
            .await
            .expect("check update");
    }

    pub async fn shutdown(self) {
        self.slack.shutdown().await;
        self.smtp.shutdown().await;
        self.consul.shutdown().await;
    }
}

pub struct Running {
    pub watching: JoinHandle<()>,
    pub sender: JoinHandle<()>,
    pub cancel: CancellationToken,
    pub sender_cancel: CancellationToken,
}

impl Running {
    pub async fn stop(self) {
        self.cancel.cancel();
        self.sender_cancel.cancel();
        let _ = self.watching.await;
        let _ = self.sender.await;
    }
}

pub fn slack_receiver(slack: &SlackHandle, token: &str, channel: &str) -> ReceiverConfig {
    ReceiverConfig {
        name: "ops-slack".into(),
        fallback: Some("ops-email".into()),
        slack: Some(SlackReceiver {
            channel: channel.into(),
            token: Some(Secret::new(token)),
            api_url: slack.api_url(),
            allow_insecure: true,
            ..SlackReceiver::default()
        }),
        ..ReceiverConfig::default()
    }
}

pub fn email_receiver(smtp: &SmtpHandle) -> ReceiverConfig {
    ReceiverConfig {
        name: "ops-email".into(),
        email: Some(EmailReceiver {
            host: "127.0.0.1".into(),
            port: smtp.addr().port(),
            tls: TlsMode::None,
            allow_insecure: true,
            from: "rollgate <rollgate@example.com>".into(),
            to: vec!["ops@example.com".into()],
            timeout: Duration::from_secs(5),
            ..EmailReceiver::default()
        }),
        ..ReceiverConfig::default()
    }
}

/// Waits until `f` holds or `timeout` passes; answers whether it held.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < until {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    f()
}

/// Shows rollgate's logs when a test fails (`RUST_LOG=rollgate=debug`).
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub fn consul_error_text(e: &consul::Error) -> String {
    e.to_string()
}
