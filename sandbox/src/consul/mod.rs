//! A Consul-compatible HTTP server for the subset of Consul's API rollgate
//! uses, with Consul's semantics, so tests and the demo need no Consul
//! binary. rollgate's client must work unchanged against a real Consul, so
//! bodies, field names, status codes, error texts and headers are Consul's
//! (checked against the samples in Consul's API documentation); the remaining
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
//! | `acl` | policies (HCL rules), tokens, permission checks and Consul's denial texts |
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
//! list,node}`, `PUT /v1/txn` (KV operations), `PUT /v1/acl/policy`,
//! `GET /v1/acl/policy/{:id,name/:name}`, `PUT /v1/acl/token`,
//! `GET /v1/acl/token/self`, `GET|DELETE /v1/acl/token/:accessor`,
//! `GET /v1/status/{leader,peers}`.
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
//! # ACLs
//!
//! Off with [`Config::default`]; on with [`Config::with_acls`]
//! (`default_policy = "deny"`, see `acl`). Each endpoint needs what
//! Consul's ACL rules reference assigns it; single resources answer 403
//! with Consul's text, lists are filtered and carry
//! `X-Consul-Results-Filtered-By-ACLs: true` when something was removed
//! (not for anonymous requests, as in Consul):
//!
//! | endpoint | needs |
//! |---|---|
//! | `GET kv/:key` / `PUT` / `DELETE` | `key:read` / `key:write` on the key; `?recurse` delete: write on every key under the prefix |
//! | `GET kv/:prefix?recurse` or `?keys` | filtered by `key:read` |
//! | `txn` | per operation, as Consul's `Txn.preCheck` (see `http::txn`) |
//! | `agent/self` | `agent:read` on the node |
//! | `agent/service/register`, `deregister`, `maintenance` | `service:write` on the service name |
//! | `agent/check/*` | `service:write` on the check's service, `node:write` on the node for a node check |
//! | `GET agent/service/:id` | `service:read` on its name |
//! | `agent/services`, `agent/checks` | filtered by `service:read` (node checks: `node:read`) |
//! | `catalog/services` | filtered by `service:read` |
//! | `catalog/service/:s`, `health/service/:s` | filtered: `node:read` and `service:read` per instance |
//! | `catalog/nodes` | filtered by `node:read` |
//! | `health/checks/:s`, `health/state/:st`, `health/node/:n` | filtered: `node:read`, and `service:read` for a service's check |
//! | `session/create` | `session:write` on the session's node |
//! | `session/destroy`, `session/renew` | `session:write` on the session's node |
//! | `session/info`, `list`, `node` | filtered by `session:read` on each session's node |
//! | `acl/policy`, `acl/token` writes / reads | `acl:write` / `acl:read`; `acl/token/self`: any valid token |
//! | `status/*` | nothing |
//!
//! # Remaining differences from Consul
//!
//! By default the sandbox keeps Consul's timings and rules. What still
//! differs, and why rollgate cannot come to depend on it:
//!
//! - Agent registrations reach the catalog at once. Consul's agent
//!   triggers its anti-entropy sync on every registration, so a real
//!   catalog lags by milliseconds; rollgate waits for health with
//!   blocking queries and deadlines, never for a registration's visibility.
//! - The first run of an HTTP/TCP check is immediate (Consul staggers it
//!   randomly within the interval). rollgate's agent reports through TTL
//!   checks and its gate waits for passing against deadlines of many
//!   intervals, so a first result a moment earlier changes no decision.
//! - Test speed-ups, each off by default and set only by the tests that
//!   need them ([`Config::fast_timings`], or the single fields):
//!   `check_update_interval` (Consul: 5m), `reap_interval` (30s),
//!   `deregister_critical_min` (1m) and `session_ttl_min` (10s).
//! - A measuring aid Consul does not have, off by default
//!   ([`Config::journal_kv_prefix`]): the commit journal records when each
//!   index was committed, the writes of watched KV keys and every check
//!   status change, so a benchmark times events from their commit instead
//!   of from a poll. It changes no answer and no timing.
//! - ACLs: policies and tokens only (no roles, service or node
//!   identities, auth methods, policy update or delete, token update or
//!   list); the anonymous token cannot be given policies; `event`,
//!   `query`, `mesh` and `peering` rules are accepted and ignored, as
//!   their endpoints are not served; `list` on keys grants read (Consul
//!   with `acl.enable_key_list_policy` off). Tokens given in [`Config`]
//!   need not be UUIDs, as Consul's `initial_management` need not.
//!   rollgate creates no ACLs (Terraform does) and only reads
//!   `token/self`, so none of these is on its path.
//! - After [`ServerHandle::restart_lost_state`] the index restarts from 1
//!   and policies and tokens survive (a state-losing restart of one agent
//!   does not lose the servers' ACLs); idle keep-alive connections
//!   survive, in-flight requests are dropped.
//! - Namespaces, partitions, peering, Connect and prepared queries are not
//!   implemented; script/gRPC/UDP checks are refused; `/v1/txn` takes KV
//!   operations only (Node, Service, Check and Session operations answer
//!   400). rollgate uses none of them.

mod acl;
mod blocking;
mod catalog;
mod checks;
mod cluster;
mod control;
pub mod duration;
mod filter;
mod http;
mod journal;
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
pub use journal::{CheckCommit, Journal, KvCommit};
pub use model::Status;
pub use server::{BulkError, Config, Error, NodeInfo, SERVER_NODE, Server, ServerHandle};

/// The Consul version this server claims to be (`/v1/agent/self`).
pub const CONSUL_VERSION: &str = "1.20.0";
