//! rollgate: health-gated AMI rollouts for EC2 Auto Scaling groups, with
//! Consul as the gate, the registry and the state store.
//!
//! One binary, one role per subcommand (like Consul itself):
//!
//! - [`backoff`]: the one exponential back-off with jitter every retry uses.
//! - [`config`]: defaults < TOML file < environment; every problem reported
//!   at once; secrets never printed.
//! - [`consul`]: the typed Consul HTTP client, the blocking-query
//!   [`consul::watch`] loop and the [`consul::lock`] leader lock that every
//!   other component builds on.
//! - [`aws`]: the `Fleet` trait (what a rollout needs of EC2 and Auto
//!   Scaling), its SDK implementation, and the AMI artifact registry.
//! - [`node`]: the node agent (`rollgate agent`): identity, registration,
//!   probes, TTL refresh, drain.
//! - [`alerting`]: the health watcher (`rollgate watch`): one blocking query on
//!   Consul's health state, thresholds, grouping, silences, inhibition,
//!   meta-alerts, state in KV.
//! - [`notify`]: events (health, rollout, meta), routing, the durable outbox
//!   in KV and its sender, Slack (Web API, webhooks) and email notifiers.
//! - [`coordinator`]: `rollgate coordinator`: leader election, the registry
//!   poll, plans and approvals, handing approved plans to the rollout.
//! - [`rollout`]: plans (pure), their rendering and storage, the pure
//!   rollout state machine and its executor.
//! - [`console`]: the coordinator's HTTP server on every replica: the JSON
//!   API (acting with each operator's Consul token) and `/metrics`.
//! - [`chatops`]: approvals from Slack: buttons answered over Socket Mode
//!   by the coordinator's leader.
//! - [`ops`]: operator commands: publish, plan, approve, reject, history.
//! - [`preflight`]: `check-config --connect`: what the Consul token can do
//!   for the role the configuration runs as.
//! - [`shutdown`]: graceful shutdown on signals, in two stages.
//! - [`cli`]: the command line.
//!
//! The word "watch" means one thing in this crate: Consul's blocking-query
//! loop ([`consul::watch`]). The component that turns health changes into
//! alerts is [`alerting`]; its command keeps the operator-facing name
//! `rollgate watch`.

pub mod alerting;
pub mod aws;
pub mod backoff;
pub mod chatops;
pub mod cli;
pub mod config;
pub mod console;
pub mod consul;
pub mod coordinator;
pub mod logging;
pub mod node;
pub mod notify;
pub mod ops;
pub mod preflight;
pub mod rollout;
pub mod shutdown;
