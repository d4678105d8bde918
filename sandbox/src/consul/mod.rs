//! A Consul-compatible HTTP server for the subset of Consul's API rollgate
//! uses, with Consul's semantics, so tests and the demo need no Consul
//! binary. rollgate's client must work unchanged against a real Consul, so
//! bodies, field names, status codes, error texts and headers are Consul's
//! (checked against the samples in Consul's API documentation); deliberate
//! differences are listed below. It must never grow behaviour a real
//! Consul does not have, because a client could come to depend on it.
//!
//! # Shape
//!
//! One process emulates a one-server cluster: the server listener is the
//! agent of node `server-1`, and every further node (`node-1`, ...) is a
//! Consul client agent with its own listener, node ID, `serfHealth` check
//! and agent endpoints. Catalog, health, KV, session and status endpoints
//! are cluster-wide and answer on every listener.
//!
//! | module | concept |
//! |---|---|
//! | `server` | [`Server::start`], [`Config`], [`ServerHandle`]: lifecycle and nodes |
//! | `cluster` | shared state: store, ACL, leader flag, faults, task tracking |
//! | `store` | tables and the single raft-like index, published on a watch channel |
//! | `catalog` | service/check registration, check status, maintenance, reaper |
//! | `kv`, `session` | KV semantics (cas, locks, lock-delay) and sessions |
//! | `txn` | all-or-nothing KV transactions (`/v1/txn`) |
//! | `checks` | HTTP/TCP check runners and the TTL/session/reaper timers |
//! | `blocking` | `index`/`wait`/jitter and hash-based blocking queries |
//! | `filter` | the `?filter=` expression subset |
//! | `acl` | token checks and Consul's denial texts |
//! | `registration` | parsing and validating service registrations |
//! | `views` | records rendered as Consul's JSON |
//! | `http` | routing, headers, error answers; one file per endpoint group |
//! | `control` | the control API for tests |
//! | `listener` | accept loops and connections |
//!
//! # Endpoints
//!
//! Agent (per node): `GET /v1/agent/self`, `/v1/agent/services`,
//! `/v1/agent/checks`, `/v1/agent/service/:id` (hash blocking);
//! `PUT /v1/agent/service/register[?replace-existing-checks]`,
//! `/v1/agent/service/deregister/:id`, `/v1/agent/service/maintenance/:id`,
//! `/v1/agent/check/{pass,warn,fail}/:id`, `/v1/agent/check/update/:id`,
//! `/v1/agent/check/deregister/:id`. Cluster: `GET /v1/health/{service,
//! checks,state,node}/...`, `/v1/catalog/{services,service/:s,nodes}`,
//! `GET|PUT|DELETE /v1/kv/...`, `/v1/session/{create,destroy,renew,info,
//! list,node}`, `PUT /v1/txn` (KV operations), `GET /v1/status/{leader,peers}`.
//!
//! # Control API (not Consul)
//!
//! Under `/sandbox/v1/` on the server listener only, no token needed,
//! JSON bodies with PascalCase fields; each has a [`ServerHandle`] twin.
//!
//! | request | effect |
//! |---|---|
//! | `GET nodes` | `[{"Name","Addr"}]` of every node, `server-1` included |
//! | `PUT nodes` `{"Name"}` | starts a node, answers `{"Name","Addr"}` |
//! | `DELETE nodes/:name` | stops a node and removes it from the catalog |
//! | `PUT nodes/:name/services` `[registration, ...]` | registers many services on the node at once (bodies as for `agent/service/register`, all valid or none written), answers `{"Registered"}` |
//! | `PUT nodes/:name/serf-health` `{"Status","Output"?}` | sets its `serfHealth` |
//! | `PUT faults` `{"PathPrefix","Count","Status","Body"?,"ContentType"?}` | the next `Count` `/v1/` requests under the prefix answer that instead |
//! | `DELETE faults` | drops pending faults |
//! | `GET index` | `{"Index"}` |
//! | `PUT index/rewind` `{"Index"}` | moves the index back, as a snapshot restore |
//! | `PUT leader` `{"Leader": bool}` | toggles "no leader" |
//! | `PUT restart` | restart with lost state ([`ServerHandle::restart_lost_state`]) |
//!
//! # Deliberate differences from Consul
//!
//! - Agent registrations reach the catalog at once (no anti-entropy delay),
//!   and check output changes are written at once (Consul batches
//!   output-only changes every `check_update_interval`).
//! - The first run of an HTTP/TCP check is immediate (Consul staggers it).
//! - `DeregisterCriticalServiceAfter` is honoured to within a moment, with
//!   no 1-minute minimum; Consul's reaper runs every 30 seconds.
//! - With ACLs on, a request without a token is denied on every endpoint
//!   but `/v1/status/*`; Consul filters list answers to nothing instead.
//! - After [`ServerHandle::restart_lost_state`] the index restarts from 1;
//!   idle keep-alive connections survive, in-flight requests are dropped.
//! - Namespaces, partitions, peering, Connect and prepared queries are not
//!   implemented; script/gRPC/UDP checks are refused; `/v1/txn` takes KV
//!   operations only (Node, Service, Check and Session operations answer
//!   400).

mod acl;
mod blocking;
mod catalog;
mod checks;
mod cluster;
mod control;
pub mod duration;
mod filter;
mod http;
mod kv;
mod listener;
mod model;
mod registration;
mod server;
mod session;
mod store;
mod txn;
mod views;

pub use cluster::Fault;
pub use model::Status;
pub use server::{BulkError, Config, Error, NodeInfo, SERVER_NODE, Server, ServerHandle};

/// The Consul version this server claims to be (`/v1/agent/self`).
pub const CONSUL_VERSION: &str = "1.20.0";
