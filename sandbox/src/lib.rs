//! The sandbox world: real processes and servers on loopback that stand in for
//! the parts of production rollgate talks to, so tests and the demo need no AWS
//! account and no Consul binary.
//!
//! - [`acl_roles`]: rollgate's ACL roles on a sandbox Consul: a policy per
//!   `config/acl/*.hcl` file and a token per role, created as an operator would.
//! - [`consul`]: a Consul-compatible HTTP server for the subset of the API rollgate
//!   uses, with Consul's semantics (index, blocking queries, checks, sessions, KV, ACL).
//! - [`imds`]: an IMDSv2-compatible instance metadata endpoint, one per simulated instance.
//! - [`moto`]: the AWS stand-in (a moto server process) and seeding of an AMI, template and group.
//! - [`node`]: one simulated instance (IMDS, the real `web`, the real
//!   `rollgate agent`) as processes.
//! - [`fleet`]: the fleet simulator: a simulated node for every instance of an
//!   emulated Auto Scaling group, its behaviour read from the AMI's tags.
//! - [`load`]: the load generator: traffic to the instances Consul reports
//!   passing, as a load balancer sends it, with every failure accounted for.
//! - [`observe`]: reading rollgate's KV records and Consul health as JSON.
//! - [`proxy`]: a fault-injecting proxy: a server unreachable or throttling
//!   for one client only.
//! - [`demo`]: `sandbox demo`, the main job in the sandbox.
//! - [`chart`]: the demo's timeline chart (SVG).
//! - [`bench`]: the benchmark scenarios behind `BENCHMARKS.md`.
//! - [`testkit`]: helpers for tests: locate workspace binaries, free ports.
//! - [`smtp`]: a real SMTP server on loopback that keeps what it receives
//!   (STARTTLS, AUTH, switches to refuse a recipient or a login).
//! - [`slack`]: a stand-in for the Slack Web API rollgate uses
//!   (`chat.postMessage` with threads, `chat.update`, `chat.postEphemeral`,
//!   `views.open`, `usergroups.users.list`, `auth.test`), an incoming
//!   webhook, and Socket Mode (`apps.connections.open`, envelopes to
//!   acknowledge), with switches to go down and come back and to click a
//!   button as a user.

pub mod acl_roles;
pub mod bench;
pub mod chart;
pub mod consul;
pub mod demo;
pub mod fleet;
pub mod imds;
pub mod load;
pub mod moto;
pub mod node;
pub mod observe;
pub mod proxy;
pub mod slack;
pub mod smtp;
pub mod testkit;
