//! ACLs as a Consul server with `acl.enabled = true` and
//! `default_policy = "deny"` enforces them: policies written in Consul's
//! rule language (see `rules`), tokens that link policies, and Consul's
//! answers (`403 ACL not found` for an unknown or expired token, `403
//! Permission denied: ...` naming the token's AccessorID, or the anonymous
//! token, and the missing permission).
//!
//! A request without a token is the anonymous token (AccessorID
//! `00000000-0000-0000-0000-000000000002`, no policies, so it may do
//! nothing). The management token given at start holds the built-in
//! `global-management` policy; the optional read-only tokens given at
//! start hold the built-in `global-read-only` policy. With no management
//! token configured ACLs are off, like an agent with `acl.enabled = false`.
//! Which permission each endpoint needs is decided where the endpoint is
//! served (`http`); list, catalog and health answers are filtered there.
//!
//! Tokens are secrets: this module never logs or formats a SecretID, and
//! its `Debug` output leaves them out.

mod rules;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

pub(crate) use rules::{Global, Resource, Rules};

use super::cluster::lock;
use super::session::new_uuid;

/// AccessorID of Consul's anonymous token.
pub(crate) const ANONYMOUS_ACCESSOR: &str = "00000000-0000-0000-0000-000000000002";
/// ID of the built-in `global-management` policy.
pub(crate) const MANAGEMENT_POLICY_ID: &str = "00000000-0000-0000-0000-000000000001";
/// ID of the built-in `global-read-only` policy.
pub(crate) const READ_ONLY_POLICY_ID: &str = "00000000-0000-0000-0000-000000000002";
/// Consul's bounds on a token's expiration (`acl.token_min_expiration_ttl`
/// and `acl.token_max_expiration_ttl` defaults).
pub(crate) const TOKEN_MIN_EXPIRATION: Duration = Duration::from_secs(60);
/// See [`TOKEN_MIN_EXPIRATION`].
pub(crate) const TOKEN_MAX_EXPIRATION: Duration = Duration::from_secs(24 * 3600);

/// Read or write, as in Consul's policy language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Read,
    Write,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Read => "read",
            Level::Write => "write",
        }
    }
}

/// A denied request: the text Consul answers with status 403.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Denied(pub String);

/// Consul's text for an unknown, deleted or expired token.
pub(crate) fn not_found() -> Denied {
    Denied("ACL not found".to_string())
}

/// A stored policy.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub id: String,
    pub name: String,
    pub description: String,
    /// The rules as written (Consul answers them back verbatim).
    pub rules_text: String,
    pub rules: Rules,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A stored token. Its `Debug` output leaves the SecretID out.
#[derive(Clone)]
pub(crate) struct Token {
    pub accessor: String,
    pub secret: String,
    pub description: String,
    /// Linked policy IDs.
    pub policies: Vec<String>,
    pub create_time: SystemTime,
    pub expiration: Option<SystemTime>,
    pub create_index: u64,
    pub modify_index: u64,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("accessor", &self.accessor)
            .field("description", &self.description)
            .field("policies", &self.policies)
            .finish_non_exhaustive()
    }
}

impl Token {
    fn expired(&self, now: SystemTime) -> bool {
        self.expiration.is_some_and(|e| e <= now)
    }
}

/// Policies and tokens, keyed by policy ID and token SecretID.
#[derive(Default)]
pub(crate) struct AclState {
    pub policies: BTreeMap<String, Policy>,
    pub tokens: BTreeMap<String, Token>,
}

impl std::fmt::Debug for AclState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token map is keyed by SecretID: show its tokens, not its keys.
        f.debug_struct("AclState")
            .field("policies", &self.policies.keys().collect::<Vec<_>>())
            .field("tokens", &self.tokens.values().collect::<Vec<_>>())
            .finish()
    }
}

impl AclState {
    /// A policy by name.
    pub fn policy_by_name(&self, name: &str) -> Option<&Policy> {
        self.policies.values().find(|p| p.name == name)
    }

    /// A token by AccessorID.
    pub fn token_by_accessor(&self, accessor: &str) -> Option<&Token> {
        self.tokens.values().find(|t| t.accessor == accessor)
    }
}

/// The cluster's ACL system. See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Acl {
    enabled: bool,
    state: Mutex<AclState>,
}

fn builtin(id: &str, name: &str, description: &str, rules: Rules) -> Policy {
    Policy {
        id: id.to_string(),
        name: name.to_string(),
        description: description.to_string(),
        rules_text: String::new(),
        rules,
        create_index: 1,
        modify_index: 1,
    }
}

impl Acl {
    /// ACLs with a management token and read-only tokens; off when
    /// `management` is `None`.
    pub fn new(management: Option<&str>, read_only: &[String]) -> Acl {
        let Some(management) = management else {
            return Acl::default();
        };
        let mut state = AclState::default();
        let write_all = rules::Access::Write;
        let management_rules = Rules::everything(write_all);
        state.policies.insert(
            MANAGEMENT_POLICY_ID.to_string(),
            builtin(
                MANAGEMENT_POLICY_ID,
                "global-management",
                "Builtin Policy that grants unlimited access",
                management_rules,
            ),
        );
        state.policies.insert(
            READ_ONLY_POLICY_ID.to_string(),
            builtin(
                READ_ONLY_POLICY_ID,
                "builtin/global-read-only",
                "Builtin Policy that grants unlimited read-only access to all components",
                Rules::everything(rules::Access::Read),
            ),
        );
        let now = SystemTime::now();
        let mut add = |secret: &str, description: &str, policy: &str| {
            state.tokens.insert(
                secret.to_string(),
                Token {
                    accessor: new_uuid(),
                    secret: secret.to_string(),
                    description: description.to_string(),
                    policies: vec![policy.to_string()],
                    create_time: now,
                    expiration: None,
                    create_index: 1,
                    modify_index: 1,
                },
            );
        };
        for secret in read_only {
            add(secret, "Read-only token", READ_ONLY_POLICY_ID);
        }
        add(management, "Initial Management Token", MANAGEMENT_POLICY_ID);
        Acl {
            enabled: true,
            state: Mutex::new(state),
        }
    }

    /// Whether ACLs are enforced.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The policies and tokens, locked. Never hold across an await.
    pub fn state(&self) -> std::sync::MutexGuard<'_, AclState> {
        lock(&self.state)
    }

    /// Resolves a token (empty for none: the anonymous token) into what it
    /// may do; an unknown or expired token is Consul's `ACL not found`.
    pub fn resolve(&self, secret: &str) -> Result<Authz, Denied> {
        if !self.enabled {
            return Ok(Authz {
                accessor: String::new(),
                secret_given: !secret.is_empty(),
                rules: None,
            });
        }
        if secret.is_empty() {
            return Ok(Authz::anonymous());
        }
        let state = self.state();
        let token = state
            .tokens
            .get(secret)
            .filter(|t| !t.expired(SystemTime::now()))
            .ok_or_else(not_found)?;
        let mut merged = Rules::default();
        for id in &token.policies {
            if let Some(policy) = state.policies.get(id) {
                merged.merge(&policy.rules);
            }
        }
        Ok(Authz {
            accessor: token.accessor.clone(),
            secret_given: true,
            rules: Some(Arc::new(merged)),
        })
    }
}

/// What one resolved token may do. `rules: None` means ACLs are off.
#[derive(Debug, Clone)]
pub(crate) struct Authz {
    accessor: String,
    /// Whether the request named a token: Consul reports filtering
    /// (`X-Consul-Results-Filtered-By-ACLs`) only to requests that did.
    secret_given: bool,
    rules: Option<Arc<Rules>>,
}

impl Authz {
    /// The anonymous token with nothing granted.
    pub fn anonymous() -> Authz {
        Authz {
            accessor: ANONYMOUS_ACCESSOR.to_string(),
            secret_given: false,
            rules: Some(Arc::new(Rules::default())),
        }
    }

    /// The token's AccessorID (empty when ACLs are off).
    pub fn accessor(&self) -> &str {
        &self.accessor
    }

    /// Whether an answer that dropped entries says so in its header.
    pub fn reports_filtering(&self, removed: bool) -> bool {
        removed && self.secret_given && self.rules.is_some()
    }

    /// Whether read (or write) on the named resource is granted.
    pub fn allows(&self, resource: Resource, name: &str, level: Level) -> bool {
        self.rules
            .as_ref()
            .is_none_or(|r| r.allows(resource, name, level == Level::Write))
    }

    /// Consul's `PermissionDeniedError` text.
    fn denied(&self, what: &str, level: Level, name: Option<&str>) -> Denied {
        let on = name.map(|n| format!(" on {n:?}")).unwrap_or_default();
        let level = level.as_str();
        if self.accessor == ANONYMOUS_ACCESSOR {
            return Denied(format!(
                "Permission denied: anonymous token lacks permission '{what}:{level}'{on}. \
                 The anonymous token is used implicitly when a request does not specify a token."
            ));
        }
        Denied(format!(
            "Permission denied: token with AccessorID '{}' lacks permission '{what}:{level}'{on}",
            self.accessor
        ))
    }

    /// Checks read (or write) on the named resource.
    pub fn check(&self, resource: Resource, name: &str, level: Level) -> Result<(), Denied> {
        if self.allows(resource, name, level) {
            return Ok(());
        }
        Err(self.denied(resource.as_str(), level, Some(name)))
    }

    /// Checks a global permission (`operator`, `acl`, `keyring`).
    pub fn check_global(&self, global: Global, level: Level) -> Result<(), Denied> {
        let ok = self
            .rules
            .as_ref()
            .is_none_or(|r| r.allows_global(global, level == Level::Write));
        if ok {
            return Ok(());
        }
        Err(self.denied(global.as_str(), level, None))
    }

    /// Checks `key:<level>` on one key.
    pub fn check_key(&self, key: &str, level: Level) -> Result<(), Denied> {
        self.check(Resource::Key, key, level)
    }

    /// Checks `key:write` on every key under `prefix` (Consul's
    /// `KeyWritePrefix`, for recursive deletes).
    pub fn check_key_prefix_write(&self, prefix: &str) -> Result<(), Denied> {
        let ok = self
            .rules
            .as_ref()
            .is_none_or(|r| r.allows_key_write_prefix(prefix));
        if ok {
            return Ok(());
        }
        Err(self.denied("key", Level::Write, Some(prefix)))
    }
}

/// The token of a request: `?token=`, then `X-Consul-Token`, then
/// `Authorization: Bearer`, in Consul's order of precedence.
pub(crate) fn token_of(query_token: Option<&str>, headers: &axum::http::HeaderMap) -> String {
    if let Some(t) = query_token.filter(|t| !t.is_empty()) {
        return t.to_string();
    }
    if let Some(t) = headers
        .get("x-consul-token")
        .and_then(|v| v.to_str().ok())
        .filter(|t| !t.is_empty())
    {
        return t.to_string();
    }
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denies_like_consul() {
        let acl = Acl::new(Some("root"), &["reader".to_string()]);
        let root = acl.resolve("root").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(root.check_key("a/b", Level::Write), Ok(()));
        assert_eq!(acl.resolve("nope").err(), Some(not_found()));
        let reader = acl.resolve("reader").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reader.check_key("a/b", Level::Read), Ok(()));
        let denied = reader
            .check_key("a/b", Level::Write)
            .err()
            .map(|d| d.0)
            .unwrap_or_default();
        assert!(
            denied.starts_with("Permission denied: token with AccessorID '")
                && denied.ends_with("lacks permission 'key:write' on \"a/b\""),
            "{denied}"
        );
        assert!(reader.check_global(Global::Acl, Level::Read).is_err());
        let anon = acl
            .resolve("")
            .and_then(|a| a.check_key("a/b", Level::Read))
            .err()
            .map(|d| d.0)
            .unwrap_or_default();
        assert!(anon.starts_with(
            "Permission denied: anonymous token lacks permission 'key:read' on \"a/b\". The anonymous token"
        ));
        let shown = format!("{acl:?}");
        assert!(
            !shown.contains("root") && !shown.contains("reader"),
            "no SecretID in Debug output: {shown}"
        );
        let off = Acl::new(None, &[])
            .resolve("")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(off.check_key("a", Level::Write), Ok(()));
        assert!(!off.reports_filtering(true));
    }
}
