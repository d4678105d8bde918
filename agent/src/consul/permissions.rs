//! What each call of the Consul client needs from the ACL token, and which
//! calls each rollgate role makes on what: the source of the policies in
//! `config/acl/<role>.hcl`.
//!
//! - [`CALLS`]: every client method (and raw endpoint) rollgate uses, with
//!   the ACL permissions Consul's ACL rules reference assigns it, and
//!   whether a missing permission is refused (HTTP 403 naming it) or
//!   silently filtered out of the answer
//!   (`X-Consul-Results-Filtered-By-ACLs`).
//! - [`Role`] and [`Role::grants`]: per role, each call it makes and the
//!   rule that lets it, with the KV paths and service names as templates
//!   filled from the configuration ([`Names`]).
//! - [`rules`]: a role's policy, computed: one [`Rule`] per resource, at the
//!   highest access any of its calls needs.
//!
//! `agent/tests/acl_policy.rs` keeps the three in step with the code and
//! the files: it finds which of [`CALLS`] each role's modules
//! ([`Role::modules`]) call, requires a grant for each of them and no
//! grant without a call, and compares [`rules`] with the HCL file. The
//! preflight (`rollgate check-config --connect`) probes [`rules`] for the
//! configured role. Nothing here talks to Consul.

use std::collections::BTreeMap;
use std::fmt;

use crate::config::Config;

/// The kind of thing an ACL rule governs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// KV keys (`key`, `key_prefix`).
    Key,
    /// Service names (`service`, `service_prefix`).
    Service,
    /// Node names (`node`, `node_prefix`).
    Node,
    /// Sessions, by the node they are created on (`session`,
    /// `session_prefix`).
    Session,
    /// Agent endpoints, by node name (`agent`, `agent_prefix`).
    Agent,
}

impl Resource {
    /// Every resource, in rule order.
    pub const ALL: [Resource; 5] = [
        Resource::Key,
        Resource::Service,
        Resource::Node,
        Resource::Session,
        Resource::Agent,
    ];

    /// Consul's name (`key`), also the exact-rule block name.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Key => "key",
            Resource::Service => "service",
            Resource::Node => "node",
            Resource::Session => "session",
            Resource::Agent => "agent",
        }
    }

    /// The HCL block name of a rule on it: `key` or `key_prefix`.
    pub fn block(self, prefix: bool) -> String {
        if prefix {
            format!("{}_prefix", self.as_str())
        } else {
            self.as_str().to_owned()
        }
    }

    /// The resource and prefix flag of an HCL block name (`key_prefix`).
    pub fn of_block(block: &str) -> Option<(Resource, bool)> {
        let (name, prefix) = match block.strip_suffix("_prefix") {
            Some(name) => (name, true),
            None => (block, false),
        };
        Resource::ALL
            .into_iter()
            .find(|r| r.as_str() == name)
            .map(|r| (r, prefix))
    }
}

/// A level of access; `write` includes `read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// `read`.
    Read,
    /// `write`.
    Write,
}

impl Access {
    /// Consul's word (`read`, `write`).
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }

    /// The access of a policy word; `None` for `deny`, `list` or unknown.
    pub fn parse(word: &str) -> Option<Access> {
        match word {
            "read" => Some(Access::Read),
            "write" => Some(Access::Write),
            _ => None,
        }
    }
}

/// One permission a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// On what kind of resource.
    pub resource: Resource,
    /// At which level.
    pub access: Access,
    /// Which name the permission is checked on, in words.
    pub on: &'static str,
    /// `Some(when)`: only needed when the call is used that way (a
    /// transaction's `check-session`, a recursive delete).
    pub only_when: Option<&'static str>,
    /// A missing permission does not refuse the call: Consul answers 200
    /// with the entries the token may not read removed, and sets
    /// `X-Consul-Results-Filtered-By-ACLs: true`.
    pub filtered: bool,
}

/// A Consul client method and what it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// The [`super::Client`] method (`kv_get`), or a name for an endpoint
    /// read raw (the preflight's list probes).
    pub method: &'static str,
    /// `METHOD /v1/path` with `:params`.
    pub endpoint: &'static str,
    /// The permissions (none: any token, even an unknown one, may call it).
    pub needs: &'static [Need],
}

impl Call {
    /// Whether a request path (`/v1/health/state/any`) is this call's
    /// endpoint (`:params` match one segment, a trailing one the rest).
    pub fn matches_path(&self, path: &str) -> bool {
        let pattern = self.endpoint.split_once(' ').map_or("", |(_, p)| p);
        let pattern: Vec<&str> = pattern.split('/').collect();
        let path: Vec<&str> = path.split('?').next().unwrap_or("").split('/').collect();
        if path.len() < pattern.len() {
            return false;
        }
        let last = pattern.len() - 1;
        pattern.iter().enumerate().all(|(i, p)| {
            if p.starts_with(':') {
                !path[i].is_empty()
            } else {
                *p == path[i]
            }
        }) && (path.len() == pattern.len() || pattern[last].starts_with(':'))
    }
}

const fn need(resource: Resource, access: Access, on: &'static str) -> Need {
    Need {
        resource,
        access,
        on,
        only_when: None,
        filtered: false,
    }
}

const fn filtered(resource: Resource, on: &'static str) -> Need {
    Need {
        resource,
        access: Access::Read,
        on,
        only_when: None,
        filtered: true,
    }
}

const fn when(mut n: Need, why: &'static str) -> Need {
    n.only_when = Some(why);
    n
}

use Access::{Read, Write};
use Resource::{Agent, Key, Node, Service, Session};

/// Every Consul call rollgate makes, with the permissions Consul's ACL
/// rules reference assigns its endpoint. Agent endpoints act on the local
/// agent's node; sessions are checked on the node they are created on.
pub const CALLS: &[Call] = &[
    Call {
        method: "status_leader",
        endpoint: "GET /v1/status/leader",
        needs: &[],
    },
    Call {
        method: "acl_token_self",
        endpoint: "GET /v1/acl/token/self",
        // Any valid token may read itself.
        needs: &[],
    },
    Call {
        method: "agent_self",
        endpoint: "GET /v1/agent/self",
        needs: &[need(Agent, Read, "the agent's node")],
    },
    Call {
        method: "register_service",
        endpoint: "PUT /v1/agent/service/register",
        // Its checks belong to the service: service:write covers them.
        needs: &[need(Service, Write, "the service's name")],
    },
    Call {
        method: "deregister_service",
        endpoint: "PUT /v1/agent/service/deregister/:id",
        needs: &[need(Service, Write, "the service's name")],
    },
    Call {
        method: "update_check",
        endpoint: "PUT /v1/agent/check/update/:id",
        needs: &[need(Service, Write, "the check's service")],
    },
    Call {
        method: "set_check",
        endpoint: "PUT /v1/agent/check/:verb/:id",
        needs: &[need(Service, Write, "the check's service")],
    },
    Call {
        method: "service_maintenance",
        endpoint: "PUT /v1/agent/service/maintenance/:id",
        needs: &[need(Service, Write, "the service's name")],
    },
    Call {
        method: "agent_services",
        endpoint: "GET /v1/agent/services",
        needs: &[filtered(Service, "each service's name")],
    },
    Call {
        method: "agent_service",
        endpoint: "GET /v1/agent/service/:id",
        needs: &[need(Service, Read, "the service's name")],
    },
    Call {
        method: "agent_checks",
        endpoint: "GET /v1/agent/checks",
        needs: &[
            filtered(Service, "each check's service"),
            when(filtered(Node, "the agent's node"), "for node checks"),
        ],
    },
    Call {
        method: "agent_service_health",
        endpoint: "GET /v1/agent/health/service/id/:id",
        needs: &[need(Service, Read, "the service's name")],
    },
    Call {
        method: "health_service",
        endpoint: "GET /v1/health/service/:service",
        needs: &[
            filtered(Service, "the service's name"),
            filtered(Node, "each instance's node"),
        ],
    },
    Call {
        method: "health_state",
        endpoint: "GET /v1/health/state/:state",
        needs: &[
            filtered(Service, "each check's service"),
            filtered(Node, "each check's node"),
        ],
    },
    Call {
        method: "health_checks",
        endpoint: "GET /v1/health/checks/:service",
        needs: &[
            filtered(Service, "the service's name"),
            filtered(Node, "each check's node"),
        ],
    },
    Call {
        method: "health_node",
        endpoint: "GET /v1/health/node/:node",
        needs: &[
            filtered(Node, "the node's name"),
            filtered(Service, "each check's service"),
        ],
    },
    Call {
        method: "catalog_services",
        endpoint: "GET /v1/catalog/services",
        needs: &[filtered(Service, "each service's name")],
    },
    Call {
        // Read raw by the preflight (`rollgate check-config --connect`).
        method: "catalog_nodes",
        endpoint: "GET /v1/catalog/nodes",
        needs: &[filtered(Node, "each node's name")],
    },
    Call {
        // Read raw by the preflight.
        method: "session_list",
        endpoint: "GET /v1/session/list",
        needs: &[filtered(Session, "each session's node")],
    },
    Call {
        method: "kv_get",
        endpoint: "GET /v1/kv/:key",
        needs: &[need(Key, Read, "the key")],
    },
    Call {
        method: "kv_list",
        endpoint: "GET /v1/kv/:prefix?recurse",
        needs: &[filtered(Key, "each key under the prefix")],
    },
    Call {
        method: "kv_put",
        // ?acquire= and ?release= too (the leader lock).
        endpoint: "PUT /v1/kv/:key",
        needs: &[need(Key, Write, "the key")],
    },
    Call {
        method: "kv_delete",
        endpoint: "DELETE /v1/kv/:key",
        // With ?recurse: write on the whole prefix (a key_prefix rule, and
        // no deny below it).
        needs: &[need(
            Key,
            Write,
            "the key, or with ?recurse every key under it",
        )],
    },
    Call {
        method: "session_create",
        endpoint: "PUT /v1/session/create",
        needs: &[need(Session, Write, "the node of the agent answering")],
    },
    Call {
        method: "session_renew",
        endpoint: "PUT /v1/session/renew/:id",
        needs: &[need(Session, Write, "the session's node")],
    },
    Call {
        method: "session_destroy",
        endpoint: "PUT /v1/session/destroy/:id",
        needs: &[need(Session, Write, "the session's node")],
    },
    Call {
        method: "session_info",
        endpoint: "GET /v1/session/info/:id",
        needs: &[filtered(Session, "the session's node")],
    },
    Call {
        method: "txn",
        // Consul's Txn.preCheck, per KV operation. A denied operation
        // rolls the transaction back (HTTP 409) with Consul's
        // `Permission denied` text as that operation's error.
        endpoint: "PUT /v1/txn",
        needs: &[
            need(
                Key,
                Write,
                "each key a set, cas, delete or check-not-exists writes",
            ),
            when(
                need(Key, Read, "each key a check-session or check-index checks"),
                "for fenced writes (check-session on the leader lock)",
            ),
        ],
    },
];

/// The call of a client method.
pub fn call(method: &str) -> Option<&'static Call> {
    CALLS.iter().find(|c| c.method == method)
}

/// A rollgate role: one kind of process, one token, one policy file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// `rollgate agent` on every node.
    Agent,
    /// `rollgate coordinator`, with its embedded watcher.
    Coordinator,
    /// `rollgate watch`, the standalone watcher.
    Watcher,
    /// A person using the CLI.
    Operator,
    /// A CI job: publish and `status --wait`.
    Ci,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 5] = [
        Role::Agent,
        Role::Coordinator,
        Role::Watcher,
        Role::Operator,
        Role::Ci,
    ];

    /// The role's name, also its policy file's stem.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Coordinator => "coordinator",
            Role::Watcher => "watcher",
            Role::Operator => "operator",
            Role::Ci => "ci",
        }
    }

    /// The role by name (`watch` names the watcher, as its subcommand).
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "watch" => Some(Role::Watcher),
            other => Role::ALL.into_iter().find(|r| r.as_str() == other),
        }
    }

    /// The policy file, relative to the repository.
    pub fn policy_file(self) -> String {
        format!("config/acl/{}.hcl", self.as_str())
    }

    /// The source files (under `agent/src/`) whose Consul calls the role
    /// makes: a `/**` suffix takes a folder. Test modules are not counted.
    pub fn modules(self) -> &'static [&'static str] {
        match self {
            Role::Agent => &["node/**"],
            Role::Coordinator => &[
                "coordinator/**",
                "chatops/**",
                "rollout/**",
                "notify/**",
                "alerting/**",
                "consul/lock.rs",
                "consul/leading.rs",
                "consul/records.rs",
            ],
            Role::Watcher => &[
                "alerting/**",
                "notify/sender.rs",
                "notify/outbox.rs",
                "consul/lock.rs",
                "consul/leading.rs",
                "consul/records.rs",
            ],
            // The console reads and writes with the operator's own token
            // (console/auth.rs makes the caller's client; the API and the
            // page read through it).
            Role::Operator => &[
                "ops.rs",
                "ops/**",
                "rollout/store.rs",
                "consul/records.rs",
                "console/api.rs",
                "console/auth.rs",
                "console/page/**",
            ],
            Role::Ci => &["ops.rs", "ops/**", "rollout/store.rs", "consul/records.rs"],
        }
    }

    /// Each call the role makes and the rule that grants it.
    pub fn grants(self) -> Vec<Grant> {
        let parts: &[&[Grant]] = match self {
            Role::Agent => &[AGENT],
            Role::Coordinator => &[COORDINATOR, WATCHING],
            Role::Watcher => &[WATCHER, WATCHING],
            Role::Operator => &[OPERATOR],
            Role::Ci => &[CI],
        };
        parts.concat()
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One call of a role on one resource, and the rule granting it.
///
/// `name` is a template: `{prefix}` is `consul.kv_prefix`, `{service}` each
/// `[[services]]` name, `{artifact}` each `[[services]]` artifact as its
/// trigger key spells it, `{agent_service}` `[agent] service_name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The client method ([`CALLS`]).
    pub call: &'static str,
    /// The resource.
    pub resource: Resource,
    /// A `_prefix` rule (else exact).
    pub prefix: bool,
    /// The rule's name, a template.
    pub name: &'static str,
    /// The access the call needs.
    pub access: Access,
    /// Why the role makes this call.
    pub why: &'static str,
}

const fn g(
    call: &'static str,
    resource: Resource,
    prefix: bool,
    name: &'static str,
    access: Access,
    why: &'static str,
) -> Grant {
    Grant {
        call,
        resource,
        prefix,
        name,
        access,
        why,
    }
}

const EXACT: bool = false;
const PREFIX: bool = true;

#[rustfmt::skip]
const AGENT: &[Grant] = &[
    g("register_service", Service, EXACT, "{agent_service}", Write, "register the instance"),
    g("update_check", Service, EXACT, "{agent_service}", Write, "refresh the TTL check"),
    g("service_maintenance", Service, EXACT, "{agent_service}", Write, "drain"),
    g("deregister_service", Service, EXACT, "{agent_service}", Write, "deregister after the drain"),
    g("agent_service_health", Service, EXACT, "{agent_service}", Read, "the /ready answer"),
];

/// What both the coordinator's embedded watcher and `rollgate watch` do
/// besides their own lock.
#[rustfmt::skip]
const WATCHING: &[Grant] = &[
    g("kv_get", Key, EXACT, "{prefix}/watch/state", Read, "load the watcher's state"),
    g("txn", Key, EXACT, "{prefix}/watch/state", Write, "commit the watcher's state"),
    g("kv_put", Key, PREFIX, "{prefix}/watch/state-chunks/", Write, "write a large state's chunks"),
    g("kv_list", Key, PREFIX, "{prefix}/watch/state-chunks/", Read, "read a large state's chunks"),
    g("kv_delete", Key, PREFIX, "{prefix}/watch/state-chunks/", Write, "delete old chunks (?recurse)"),
    g("kv_list", Key, PREFIX, "{prefix}/outbox/", Read, "list the alert outbox (blocking)"),
    g("txn", Key, PREFIX, "{prefix}/outbox/", Write, "enqueue alerts, record deliveries, delete delivered"),
    g("health_state", Service, PREFIX, "", Read, "every check of every service"),
    g("health_state", Node, PREFIX, "", Read, "every check on every node (serfHealth)"),
    g("session_create", Session, PREFIX, "", Write, "the leader lock's session"),
    g("session_renew", Session, PREFIX, "", Write, "keep the leader lock's session"),
    g("session_destroy", Session, PREFIX, "", Write, "give the leader lock up"),
];

#[rustfmt::skip]
const COORDINATOR: &[Grant] = &[
    g("kv_get", Key, EXACT, "{prefix}/leader", Read, "who holds the leader lock; the fence check"),
    g("kv_put", Key, EXACT, "{prefix}/leader", Write, "acquire and release the leader lock"),
    g("txn", Key, EXACT, "{prefix}/leader", Read, "check-session fencing every record write"),
    g("kv_get", Key, PREFIX, "{prefix}/services/", Read, "plans, rollout, stable version"),
    g("kv_list", Key, PREFIX, "{prefix}/services/", Read, "plans, commands, failed images (blocking)"),
    g("txn", Key, PREFIX, "{prefix}/services/", Write, "plans, rollout state, commands consumed, archive"),
    g("kv_get", Key, PREFIX, "{prefix}/trigger/", Read, "block on publish triggers"),
    g("health_service", Service, PREFIX, "", Read, "the gate: health of each rolled-out service"),
    g("health_service", Node, PREFIX, "", Read, "the gate: each instance's node"),
    g("register_service", Service, EXACT, "rollgate-coordinator", Write, "the replica's liveness check"),
    g("update_check", Service, EXACT, "rollgate-coordinator", Write, "refresh the liveness check"),
    g("deregister_service", Service, EXACT, "rollgate-coordinator", Write, "remove the liveness check on shutdown"),
];

#[rustfmt::skip]
const WATCHER: &[Grant] = &[
    g("kv_get", Key, EXACT, "{prefix}/watch/leader", Read, "who holds the watcher's lock; the fence check"),
    g("kv_put", Key, EXACT, "{prefix}/watch/leader", Write, "acquire and release the watcher's lock"),
    g("txn", Key, EXACT, "{prefix}/watch/leader", Read, "check-session fencing the state's writes"),
];

#[rustfmt::skip]
const OPERATOR: &[Grant] = &[
    g("kv_list", Key, PREFIX, "{prefix}/services/{service}/plans/", Read, "plan, history, status"),
    g("kv_get", Key, PREFIX, "{prefix}/services/{service}/plans/", Read, "approve, reject: read the plan"),
    g("txn", Key, PREFIX, "{prefix}/services/{service}/plans/", Write, "approve, reject: the decision"),
    g("kv_get", Key, EXACT, "{prefix}/services/{service}/rollout", Read, "status, pause, resume, abort, promote"),
    g("txn", Key, PREFIX, "{prefix}/services/{service}/commands/", Write, "pause, resume, abort, promote"),
    g("txn", Key, EXACT, "{prefix}/trigger/{artifact}", Write, "publish"),
    g("kv_list", Key, PREFIX, "{prefix}/services/{service}/failed/", Read, "publish, rollback: images that failed"),
    g("kv_get", Key, EXACT, "{prefix}/services/{service}/seq", Read, "rollback, publish --force: the plan ID"),
    g("txn", Key, EXACT, "{prefix}/services/{service}/seq", Write, "rollback, publish --force: the plan ID"),
    g("kv_get", Key, EXACT, "{prefix}/services/{service}/stable", Read, "console: the stable version of a service"),
    g("kv_list", Key, PREFIX, "{prefix}/outbox/", Read, "console: the alert outbox and its deliveries"),
    g("health_service", Service, EXACT, "{service}", Read, "console: each instance's checks in a rollout"),
    g("health_service", Node, PREFIX, "", Read, "console: each instance's node (checks are filtered by it)"),
    g("kv_get", Key, PREFIX, "{prefix}/services/{service}/rollouts/", Read, "console: the last finished rollout's timeline"),
];

#[rustfmt::skip]
const CI: &[Grant] = &[
    g("txn", Key, EXACT, "{prefix}/trigger/{artifact}", Write, "publish"),
    g("kv_list", Key, PREFIX, "{prefix}/services/{service}/failed/", Read, "publish: images that failed"),
    g("kv_list", Key, PREFIX, "{prefix}/services/{service}/plans/", Read, "status --wait: the plans"),
    g("kv_get", Key, EXACT, "{prefix}/services/{service}/rollout", Read, "status --wait: the rollout"),
];

/// The names the grants' templates are filled with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// `consul.kv_prefix`, without a trailing `/`.
    pub prefix: String,
    /// Each `[[services]]` entry: its name and its artifact's trigger key
    /// segment.
    pub services: Vec<(String, String)>,
    /// `[agent] service_name`.
    pub agent_service: String,
}

impl Names {
    /// The names of a configuration.
    pub fn of(config: &Config) -> Self {
        Self {
            prefix: config.consul.kv_prefix.trim_end_matches('/').to_owned(),
            services: config
                .services
                .iter()
                .map(|s| {
                    (
                        s.name.clone(),
                        crate::rollout::store::artifact_key(&s.artifact),
                    )
                })
                .collect(),
            agent_service: config.agent.service_name.clone(),
        }
    }

    /// The names the checked-in policy files are written for: prefix
    /// `rollgate`, service `web` published as `acmeinc/web`.
    pub fn example() -> Self {
        Self {
            prefix: "rollgate".into(),
            services: vec![(
                "web".into(),
                crate::rollout::store::artifact_key("acmeinc/web"),
            )],
            agent_service: "web".into(),
        }
    }

    /// A template filled in: one name per service when it names one.
    pub fn expand(&self, template: &str) -> Vec<String> {
        let base = template
            .replace("{prefix}", &self.prefix)
            .replace("{agent_service}", &self.agent_service);
        if base.contains("{service}") || base.contains("{artifact}") {
            self.services
                .iter()
                .map(|(service, artifact)| {
                    base.replace("{service}", service)
                        .replace("{artifact}", artifact)
                })
                .collect()
        } else {
            vec![base]
        }
    }
}

/// One rule of a policy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    /// What it governs.
    pub resource: Resource,
    /// A `_prefix` rule.
    pub prefix: bool,
    /// The name or prefix.
    pub name: String,
    /// The access granted.
    pub access: Access,
}

impl Rule {
    /// The permission as Consul's 403 text names it (`key:write`).
    pub fn permission(&self) -> String {
        format!("{}:{}", self.resource.as_str(), self.access.as_str())
    }

    /// The rule in HCL.
    pub fn to_hcl(&self) -> String {
        format!(
            "{} {:?} {{\n  policy = {:?}\n}}\n",
            self.resource.block(self.prefix),
            self.name,
            self.access.as_str()
        )
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:?} {}",
            self.resource.block(self.prefix),
            self.name,
            self.access.as_str()
        )
    }
}

/// A rule of a role's policy and the calls that need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needed {
    /// The rule.
    pub rule: Rule,
    /// The grants it comes from.
    pub grants: Vec<Grant>,
}

/// A role's policy for these names: one rule per resource name, at the
/// highest access its calls need. Calls needing no permission add none.
pub fn rules(role: Role, names: &Names) -> Vec<Needed> {
    let mut by: BTreeMap<(Resource, bool, String), Needed> = BTreeMap::new();
    for grant in role.grants() {
        if call(grant.call).is_some_and(|c| c.needs.is_empty()) {
            continue;
        }
        for name in names.expand(grant.name) {
            let entry = by
                .entry((grant.resource, grant.prefix, name.clone()))
                .or_insert_with(|| Needed {
                    rule: Rule {
                        resource: grant.resource,
                        prefix: grant.prefix,
                        name,
                        access: grant.access,
                    },
                    grants: Vec::new(),
                });
            entry.rule.access = entry.rule.access.max(grant.access);
            entry.grants.push(grant);
        }
    }
    by.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_grant_names_a_known_call_and_one_of_its_needs() {
        for role in Role::ALL {
            for grant in role.grants() {
                let Some(c) = call(grant.call) else {
                    panic!("{role}: {} is not in CALLS", grant.call);
                };
                assert!(
                    c.needs.is_empty()
                        || c.needs
                            .iter()
                            .any(|n| n.resource == grant.resource && n.access == grant.access),
                    "{role}: {} does not need {}:{}",
                    grant.call,
                    grant.resource.as_str(),
                    grant.access.as_str()
                );
            }
        }
    }

    #[test]
    fn endpoints_match_paths() {
        let state = call("health_state").map(|c| c.matches_path("/v1/health/state/any"));
        assert_eq!(state, Some(true));
        let leader = call("status_leader").map(|c| c.matches_path("/v1/health/state/any"));
        assert_eq!(leader, Some(false));
        let kv = call("kv_get").map(|c| c.matches_path("/v1/kv/rollgate/a/b"));
        assert_eq!(kv, Some(true));
    }

    #[test]
    fn templates_expand_per_service() {
        let mut names = Names::example();
        names.services.push(("api".into(), "acmeinc_api".into()));
        assert_eq!(
            names.expand("{prefix}/trigger/{artifact}"),
            [
                "rollgate/trigger/acmeinc_web",
                "rollgate/trigger/acmeinc_api"
            ]
        );
        assert_eq!(names.expand("{prefix}/leader"), ["rollgate/leader"]);
    }

    #[test]
    fn access_merges_to_the_highest() {
        let rules = rules(Role::Coordinator, &Names::example());
        let leader = rules
            .iter()
            .find(|n| n.rule.name == "rollgate/leader")
            .map(|n| n.rule.access);
        assert_eq!(leader, Some(Access::Write));
    }
}
