//! `rollgate check-config --connect`: before a process runs, what its Consul
//! token can and cannot do for the role it runs as.
//!
//! 1. `GET /v1/status/leader` (no permission needed): Consul answers.
//! 2. `GET /v1/acl/token/self`: who the token is (AccessorID, Description,
//!    policies, roles, identities, expiry). The SecretID is never read from
//!    the answer, so it cannot be shown. Consul answers `401 ACL support
//!    disabled` when ACLs are off, and `403 ACL not found` for a token it
//!    does not know: never created, deleted, or expired (Consul does not
//!    tell these apart).
//! 3. One probe per rule of the role's policy
//!    ([`crate::consul::permissions::rules`], the same table the policy
//!    files are checked against). Every probe only reads, or asks Consul
//!    to check a condition; none changes anything:
//!
//! | rule | probe | missing when |
//! |---|---|---|
//! | `key` read | `GET /v1/kv/<key>` (absent is fine) | 403 |
//! | `key_prefix` read | `GET /v1/kv/<prefix>rollgate-preflight-probe` | 403 |
//! | `key`/`key_prefix` write | `PUT /v1/txn` with one `check-not-exists` operation on the key (or `<prefix>rollgate-preflight-probe`): Consul checks `key:write` for it and writes nothing | the operation's error is `Permission denied` |
//! | `service_prefix ""` read | `GET /v1/catalog/services` | Consul filtered the answer |
//! | `service` read or write | `GET /v1/agent/services` of the local agent, then `GET /v1/agent/health/service/id/<id>` of the service's instance there (not proven when it is not registered there) | 403 |
//! | `node_prefix ""` read | `GET /v1/catalog/nodes` | Consul filtered the answer |
//! | `session_prefix ""` write | `GET /v1/session/list` | Consul filtered the answer (no read, so no write) |
//! | `agent` read | `GET /v1/agent/self` | 403 |
//!
//! Some permissions cannot be proven without changing something: a
//! `service` write needs a registration, a `session` write a new session.
//! Those are reported as *not proven* (with what was proven short of it),
//! never as granted; the process itself then names the permission in its
//! first error. Only a rule proven missing, or a token Consul does not know,
//! fails the check.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use reqwest::Method;
use serde::Deserialize;

use crate::config::Config;
use crate::consul::permissions::{self, Access, Names, Resource, Role, Rule};
use crate::consul::types::AgentService;
use crate::consul::{self, Client, QueryOptions};

/// The key name probed under a `key_prefix` rule. Never written: a read
/// answers 404, a `check-not-exists` succeeds.
pub const PROBE_KEY: &str = "rollgate-preflight-probe";

/// The preflight could not run or found the token lacking.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// Consul could not be asked (unreachable, failing, not in time).
    #[error(transparent)]
    Consul(#[from] consul::Error),
    /// The role is not known, cannot be inferred, or lacks the
    /// configuration its probes need.
    #[error("{0}")]
    Role(String),
    /// Consul does not know the configured token.
    #[error(
        "Consul does not know the configured token (403 ACL not found): it was never created, \
         was deleted, or has expired. Set consul.token, consul.token_file or CONSUL_HTTP_TOKEN \
         to a token made from {file}"
    )]
    UnknownToken {
        /// The role's policy file.
        file: String,
    },
    /// The token lacks rules the role needs.
    #[error(
        "the token cannot do everything the {role} needs: it lacks {}; {file} grants {}",
        missing.join(", "),
        if missing.len() == 1 { "it" } else { "them" }
    )]
    Missing {
        /// The role.
        role: Role,
        /// The policy file granting the rules.
        file: String,
        /// The missing rules and permissions, as text.
        missing: Vec<String>,
    },
}

/// What a probe showed about one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The token has it; how that was seen.
    Granted(String),
    /// The token lacks it; Consul's words or what Consul hid.
    Missing(String),
    /// No harmless probe can tell; what was seen short of it.
    Unproven(String),
}

/// One rule of the role's policy and its probe's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCheck {
    /// The rule.
    pub rule: Rule,
    /// The calls that need it.
    pub calls: Vec<&'static str>,
    /// What the probe showed.
    pub verdict: Verdict,
}

/// `GET /v1/acl/token/self`, the fields shown. No `SecretID` field: the
/// secret is never kept, so it can never be printed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TokenInfo {
    /// Public identifier of the token (Consul's 403 texts name it too).
    #[serde(rename = "AccessorID")]
    pub accessor_id: String,
    /// What the token is for.
    pub description: String,
    /// Its policies.
    pub policies: Vec<Link>,
    /// Its roles.
    pub roles: Vec<Link>,
    /// Its service identities.
    pub service_identities: Vec<ServiceIdentity>,
    /// Its node identities.
    pub node_identities: Vec<NodeIdentity>,
    /// When it expires, RFC 3339.
    pub expiration_time: Option<String>,
}

/// A policy or role a token links to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Link {
    /// Its name.
    pub name: String,
}

/// A service identity of a token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceIdentity {
    /// The service.
    pub service_name: String,
}

/// A node identity of a token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeIdentity {
    /// The node.
    pub node_name: String,
}

/// Who the token is, as far as Consul says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenState {
    /// Consul knows it.
    Known(TokenInfo),
    /// No token configured and Consul's anonymous token is used.
    Anonymous,
    /// Consul's ACLs are off: every request may do everything.
    AclsDisabled,
    /// A token is configured and Consul does not know it.
    Unknown,
}

/// The preflight's findings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The role checked; `None` when none was given or could be told.
    pub role: Option<Role>,
    /// Consul's base URL.
    pub address: String,
    /// The cluster leader, empty when none.
    pub leader: String,
    /// The answering agent's node and datacenter, when the token may read
    /// them (`agent:read`, which no role needs).
    pub agent: Option<(String, String)>,
    /// Who the token is.
    pub token: TokenState,
    /// Each rule of the role's policy, probed (empty when ACLs are off or
    /// the token is unknown).
    pub rules: Vec<RuleCheck>,
}

impl Report {
    /// The rules proven missing.
    pub fn missing(&self) -> impl Iterator<Item = &RuleCheck> {
        self.rules
            .iter()
            .filter(|c| matches!(c.verdict, Verdict::Missing(_)))
    }

    /// Ok, or why the role cannot work with this token.
    pub fn outcome(&self) -> Result<(), PreflightError> {
        let file = self.role.map_or_else(
            || "the policy file of the process's role (config/acl/)".to_owned(),
            Role::policy_file,
        );
        if self.token == TokenState::Unknown {
            return Err(PreflightError::UnknownToken { file });
        }
        let Some(role) = self.role else {
            return Ok(());
        };
        let missing: Vec<String> = self
            .missing()
            .map(|c| format!("`{}` ({})", c.rule, c.rule.permission()))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(PreflightError::Missing {
                role,
                file,
                missing,
            })
        }
    }

    /// The report as lines for an operator.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let leader = if self.leader.is_empty() {
            "none (the cluster has no leader)"
        } else {
            &self.leader
        };
        let _ = write!(
            out,
            "Consul at {} answers; cluster leader {leader}",
            self.address
        );
        match &self.agent {
            Some((node, dc)) => {
                let _ = writeln!(out, "; agent node {node:?} in datacenter {dc:?}");
            }
            None => out.push_str("; the agent's details need agent:read, which no role needs\n"),
        }
        match &self.token {
            TokenState::Known(t) => {
                let names = |links: &[Link]| {
                    links
                        .iter()
                        .map(|l| l.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let _ = write!(
                    out,
                    "Token: AccessorID {}, description {:?}",
                    t.accessor_id, t.description
                );
                if !t.policies.is_empty() {
                    let _ = write!(out, ", policies {}", names(&t.policies));
                }
                if !t.roles.is_empty() {
                    let _ = write!(out, ", roles {}", names(&t.roles));
                }
                if !t.service_identities.is_empty() {
                    let s: Vec<&str> = t
                        .service_identities
                        .iter()
                        .map(|s| s.service_name.as_str())
                        .collect();
                    let _ = write!(out, ", service identities {}", s.join(", "));
                }
                if !t.node_identities.is_empty() {
                    let s: Vec<&str> = t
                        .node_identities
                        .iter()
                        .map(|s| s.node_name.as_str())
                        .collect();
                    let _ = write!(out, ", node identities {}", s.join(", "));
                }
                match &t.expiration_time {
                    Some(at) => {
                        let _ = writeln!(out, ", expires {at}");
                    }
                    None => out.push_str(", never expires\n"),
                }
            }
            TokenState::Anonymous => out.push_str(
                "Token: none configured (consul.token, consul.token_file, CONSUL_HTTP_TOKEN); \
                 requests run as Consul's anonymous token\n",
            ),
            TokenState::AclsDisabled => out.push_str(
                "Token: not checked: Consul's ACLs are off (GET /v1/acl/token/self: 401 ACL \
                 support disabled), so every request may do everything and the role lacks \
                 nothing; with ACLs on (production) the token needs the policy of ",
            ),
            TokenState::Unknown => out.push_str(
                "Token: Consul does not know it (403 ACL not found): never created, deleted, \
                 or expired\n",
            ),
        }
        let Some(role) = self.role else {
            if self.token == TokenState::AclsDisabled {
                out.push_str("its role (config/acl/)\n");
            }
            out.push_str(
                "Role: not known, so no permission was probed (pass --role \
                 coordinator|agent|watch|operator|ci)\n",
            );
            return out;
        };
        if self.token == TokenState::AclsDisabled {
            let _ = writeln!(out, "{}", role.policy_file());
            return out;
        }
        if self.rules.is_empty() {
            return out;
        }
        let _ = writeln!(
            out,
            "Role {role}: {} rules of {}:",
            self.rules.len(),
            role.policy_file()
        );
        for c in &self.rules {
            let (word, detail) = match &c.verdict {
                Verdict::Granted(d) => ("ok", d),
                Verdict::Missing(d) => ("MISSING", d),
                Verdict::Unproven(d) => ("not proven", d),
            };
            let _ = writeln!(
                out,
                "  {word:<10} {} ({}, for {}): {detail}",
                c.rule,
                c.rule.permission(),
                c.calls.join(", ")
            );
        }
        out
    }
}

/// The role of `--role`, else the one the configuration's sections show
/// ([`infer_role`]). `None`: no role can be told. `--role` means the same
/// to `check-config` with and without `--connect`: the process whose
/// start-up rules are checked ([`Config::validate_for`]) and, with
/// `--connect`, whose policy the token is probed for.
pub fn role_of(config: &Config, flag: Option<&str>) -> Result<Option<Role>, PreflightError> {
    if let Some(name) = flag {
        return Role::parse(name).map(Some).ok_or_else(|| {
            PreflightError::Role(format!(
                "--role {name:?} is not a role; use coordinator, agent, watch, operator or ci"
            ))
        });
    }
    Ok(infer_role(config).map(|(role, _)| role))
}

/// The role the configuration's sections show, and which section shows it:
/// `[[services]]` means the coordinator (operators and CI pass `--role`),
/// an `[agent]` with an artifact or an expected version the node agent,
/// notification receivers without services the standalone watcher.
pub fn infer_role(config: &Config) -> Option<(Role, &'static str)> {
    if !config.services.is_empty() {
        Some((Role::Coordinator, "[[services]] is set"))
    } else if !config.agent.artifact.is_empty() || !config.agent.expected_version.is_empty() {
        Some((Role::Agent, "[agent] names an artifact or expected_version"))
    } else if !config.notify.receivers.is_empty() {
        Some((
            Role::Watcher,
            "[notify] has receivers and there is no [[services]]",
        ))
    } else {
        None
    }
}

/// Connects, identifies the token and probes every rule of `role` (none
/// without a role).
pub async fn run(config: &Config, role: Option<Role>) -> Result<Report, PreflightError> {
    if let Some(role) = role {
        if matches!(role, Role::Operator | Role::Ci | Role::Coordinator)
            && config.services.is_empty()
        {
            return Err(PreflightError::Role(format!(
                "the {role} works on the [[services]] of the configuration, and none is configured"
            )));
        }
    }
    let client = Client::new(&config.consul)?;
    let leader = client.status_leader().await?;
    let token = token_state(&client, config).await?;
    let agent = if token == TokenState::Unknown {
        None
    } else {
        match client.agent_self().await {
            Ok(a) => Some((a.config.node_name, a.config.datacenter)),
            // A known token without agent:read, which no role needs.
            Err(consul::Error::PermissionDenied { body, .. })
                if body.contains("Permission denied") =>
            {
                None
            }
            Err(e) => return Err(e.into()),
        }
    };
    let mut report = Report {
        role,
        address: client.address().to_owned(),
        leader,
        agent,
        token,
        rules: Vec::new(),
    };
    let Some(role) = role else {
        return Ok(report);
    };
    if matches!(report.token, TokenState::AclsDisabled | TokenState::Unknown) {
        return Ok(report);
    }
    let names = Names::of(config);
    for needed in permissions::rules(role, &names) {
        let verdict = probe(&client, &needed.rule).await?;
        let mut calls: Vec<&'static str> = needed.grants.iter().map(|g| g.call).collect();
        calls.dedup();
        report.rules.push(RuleCheck {
            rule: needed.rule,
            calls,
            verdict,
        });
    }
    Ok(report)
}

async fn token_state(client: &Client, config: &Config) -> Result<TokenState, PreflightError> {
    let configured = config.consul.token.is_some() || config.consul.token_file.is_some();
    match client
        .read::<TokenInfo>("/v1/acl/token/self", &[], &QueryOptions::default())
        .await
    {
        Ok(r) => Ok(TokenState::Known(r.value)),
        Err(consul::Error::Status {
            status: 401, body, ..
        }) if body.contains("ACL support disabled") => Ok(TokenState::AclsDisabled),
        Err(consul::Error::PermissionDenied { body, .. }) if body.contains("ACL not found") => {
            Ok(if configured {
                TokenState::Unknown
            } else {
                TokenState::Anonymous
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// The key a rule is probed on.
fn probe_key(rule: &Rule) -> String {
    if rule.prefix {
        format!("{}{PROBE_KEY}", rule.name)
    } else {
        rule.name.clone()
    }
}

async fn probe(client: &Client, rule: &Rule) -> Result<Verdict, PreflightError> {
    Ok(match rule.resource {
        Resource::Key => match rule.access {
            Access::Read => key_read(client, &probe_key(rule)).await?,
            Access::Write => key_write(client, &probe_key(rule)).await?,
        },
        Resource::Service if rule.prefix => {
            let seen = filtered_list(client, "/v1/catalog/services", "service:read").await?;
            write_unproven(seen, rule, "registering a service")
        }
        Resource::Service => {
            let seen = local_service(client, &rule.name).await?;
            write_unproven(seen, rule, "registering the service")
        }
        Resource::Node => {
            let seen = filtered_list(client, "/v1/catalog/nodes", "node:read").await?;
            write_unproven(seen, rule, "writing a node's checks")
        }
        Resource::Session => {
            let seen = filtered_list(client, "/v1/session/list", "session:read").await?;
            write_unproven(seen, rule, "creating a session")
        }
        Resource::Agent => match client.agent_self().await {
            Ok(_) => write_unproven(
                Verdict::Granted("GET /v1/agent/self answered".into()),
                rule,
                "changing the agent",
            ),
            Err(consul::Error::PermissionDenied { body, .. }) => Verdict::Missing(body),
            Err(e) => return Err(e.into()),
        },
    })
}

/// A read verdict turned into a write verdict: read missing means write
/// missing; read granted leaves write unproven.
fn write_unproven(read: Verdict, rule: &Rule, change: &str) -> Verdict {
    match (rule.access, read) {
        (Access::Read, v) => v,
        (Access::Write, Verdict::Granted(seen)) => Verdict::Unproven(format!(
            "{seen}, so read is granted; write cannot be probed without {change}"
        )),
        (Access::Write, Verdict::Unproven(seen)) => {
            Verdict::Unproven(format!("{seen}; write cannot be probed without {change}"))
        }
        (Access::Write, missing) => missing,
    }
}

async fn key_read(client: &Client, key: &str) -> Result<Verdict, PreflightError> {
    match client.kv_get(key, &QueryOptions::default()).await {
        Ok(r) => Ok(Verdict::Granted(format!(
            "GET /v1/kv/{key} answered ({})",
            if r.value.is_some() {
                "present"
            } else {
                "absent"
            }
        ))),
        Err(consul::Error::PermissionDenied { body, .. }) => Ok(Verdict::Missing(body)),
        Err(e) => Err(e.into()),
    }
}

/// A transaction of one `check-not-exists` on the key: Consul checks
/// `key:write` for it (its `Txn.preCheck` treats every verb but get,
/// check-index and check-session as a write) and changes nothing, whether
/// the key exists (the check fails, 409) or not (the check passes).
async fn key_write(client: &Client, key: &str) -> Result<Verdict, PreflightError> {
    let body = serde_json::json!([{ "KV": { "Verb": "check-not-exists", "Key": key } }]);
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let seen = format!("PUT /v1/txn check-not-exists on {key:?} accepted");
    match client.write(Method::PUT, "/v1/txn", &[], Some(body)).await {
        Ok(_) => Ok(Verdict::Granted(seen)),
        Err(consul::Error::Status {
            status: 409, body, ..
        }) => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct OpError {
                what: String,
            }
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Answer {
                errors: Option<Vec<OpError>>,
            }
            let denied = serde_json::from_str::<Answer>(&body)
                .ok()
                .and_then(|a| a.errors)
                .and_then(|e| {
                    e.into_iter()
                        .map(|e| e.what)
                        .find(|w| w.contains("Permission denied"))
                })
                .or_else(|| body.contains("Permission denied").then(|| body.clone()));
            Ok(match denied {
                Some(what) => Verdict::Missing(what),
                None => Verdict::Granted(format!("{seen} (the key exists)")),
            })
        }
        Err(consul::Error::PermissionDenied { body, .. }) => Ok(Verdict::Missing(body)),
        Err(e) => Err(e.into()),
    }
}

/// A list endpoint: filtered means the permission is missing for some
/// entries; entries seen unfiltered mean it is granted; an empty unfiltered
/// answer proves nothing.
async fn filtered_list(
    client: &Client,
    path: &str,
    permission: &str,
) -> Result<Verdict, PreflightError> {
    let r = client
        .read::<serde_json::Value>(path, &[], &QueryOptions::default())
        .await?;
    let count = match &r.value {
        serde_json::Value::Array(a) => a.len(),
        serde_json::Value::Object(o) => o.len(),
        _ => 0,
    };
    Ok(if r.meta.filtered_by_acls {
        Verdict::Missing(format!(
            "Consul hid entries of GET {path} from this token \
             (X-Consul-Results-Filtered-By-ACLs): it lacks {permission} on them"
        ))
    } else if count > 0 {
        Verdict::Granted(format!("GET {path} showed {count} entries, none hidden"))
    } else {
        Verdict::Unproven(format!("GET {path} is empty, so nothing could be hidden"))
    })
}

/// The service's instance on the local agent: visible and its health
/// readable means read is granted.
async fn local_service(client: &Client, name: &str) -> Result<Verdict, PreflightError> {
    let r = client
        .read::<BTreeMap<String, AgentService>>("/v1/agent/services", &[], &QueryOptions::default())
        .await?;
    let Some(id) = r
        .value
        .values()
        .find(|s| s.service == name)
        .map(|s| s.id.clone())
    else {
        // Other services hidden by the filter would set the header too: only
        // a refusal of the service's own health proves the rule missing.
        return Ok(Verdict::Unproven(if r.meta.filtered_by_acls {
            format!(
                "{name:?} is not among the local agent's services this token sees (some are \
                 hidden: X-Consul-Results-Filtered-By-ACLs): not registered here yet, or the \
                 token lacks service:read on it"
            )
        } else {
            format!("{name:?} is not registered with the local agent yet")
        }));
    };
    match client.agent_service_health(&id).await {
        Ok(_) => Ok(Verdict::Granted(format!(
            "GET /v1/agent/health/service/id/{id} answered"
        ))),
        Err(consul::Error::PermissionDenied { body, .. }) => Ok(Verdict::Missing(body)),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::coordinator::config::ServiceConfig;

    #[test]
    fn the_role_is_the_flag_or_what_the_sections_show() {
        let mut config = Config::default();
        assert_eq!(role_of(&config, None).ok(), Some(None));
        assert_eq!(
            role_of(&config, Some("watch")).ok(),
            Some(Some(Role::Watcher))
        );
        assert!(matches!(
            role_of(&config, Some("root")),
            Err(PreflightError::Role(_))
        ));
        config.agent.artifact = "acmeinc/web".into();
        assert_eq!(role_of(&config, None).ok(), Some(Some(Role::Agent)));
        config.services.push(ServiceConfig::default());
        assert_eq!(role_of(&config, None).ok(), Some(Some(Role::Coordinator)));
        assert_eq!(role_of(&config, Some("ci")).ok(), Some(Some(Role::Ci)));
    }

    fn report(verdicts: Vec<Verdict>, token: TokenState) -> Report {
        Report {
            role: Some(Role::Ci),
            address: "http://127.0.0.1:8500".into(),
            leader: String::new(),
            agent: None,
            token,
            rules: verdicts
                .into_iter()
                .map(|verdict| RuleCheck {
                    rule: Rule {
                        resource: Resource::Key,
                        prefix: false,
                        name: "rollgate/trigger/acmeinc_web".into(),
                        access: Access::Write,
                    },
                    calls: vec!["txn"],
                    verdict,
                })
                .collect(),
        }
    }

    #[test]
    fn only_a_rule_proven_missing_or_an_unknown_token_fails() {
        let known = TokenState::Known(TokenInfo::default());
        let unproven = report(vec![Verdict::Unproven("no probe".into())], known.clone());
        assert!(unproven.outcome().is_ok());
        let missing = report(vec![Verdict::Missing("Permission denied".into())], known);
        let e = missing.outcome().unwrap_err().to_string();
        assert!(
            e.contains(r#"`key "rollgate/trigger/acmeinc_web" write` (key:write)"#)
                && e.contains("config/acl/ci.hcl grants it"),
            "{e}"
        );
        let unknown = report(Vec::new(), TokenState::Unknown);
        let e = unknown.outcome().unwrap_err().to_string();
        assert!(
            e.contains("ACL not found") && e.contains("config/acl/ci.hcl"),
            "{e}"
        );
        let off = report(Vec::new(), TokenState::AclsDisabled);
        assert!(off.outcome().is_ok());
        assert!(off.render().contains("ACLs are off"), "{}", off.render());
    }
}
