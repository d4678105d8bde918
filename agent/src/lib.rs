//! rollgate: health-gated AMI rollouts for EC2 Auto Scaling groups, with
//! Consul as the gate, the registry and the state store.
//!
//! One binary, one role per subcommand (like Consul itself):
//!
//! - [`config`]: defaults < TOML file < environment; every problem reported
//!   at once; secrets never printed.
//! - [`consul`]: the typed Consul HTTP client, the blocking-query
//!   [`consul::watch`] loop and the [`consul::lock`] leader lock that every
//!   other component builds on.
//! - [`node`]: the node agent (`rollgate agent`): identity, registration,
//!   probes, TTL refresh, drain.
//! - [`shutdown`]: graceful shutdown on signals, in two stages.
//! - [`cli`]: the command line.
//!
//! Later components (the node agent, the coordinator's planner and rollout
//! state machine, the health watcher and notifiers) live in their own modules
//! as the architecture in the README shows.

pub mod cli;
pub mod config;
pub mod consul;
pub mod logging;
pub mod node;
pub mod shutdown;
