//! ACL token checks, with Consul's answers: `403 ACL not found` for a token
//! that does not exist, and `403 Permission denied: ...` (naming the
//! anonymous token or the token's AccessorID and the missing permission)
//! when a token lacks the right.
//!
//! Two kinds of token exist here: the management token (every right) and
//! read-only tokens (`read` on every resource). With no management token
//! configured ACLs are off, like a Consul agent with `acl.enabled = false`.
//! Differences from Consul, on purpose: a request without a token is denied
//! on every `/v1/` endpoint (Consul filters list answers down to nothing
//! instead), except `/v1/status/*`, which needs no ACL in Consul either.
//! Tokens are secrets: this module never logs or formats a SecretID.

use std::collections::HashMap;

use super::session::new_uuid;

/// Read or write, as in Consul's policy language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Read,
    Write,
}

/// The permission an endpoint needs: resource kind, level, and the
/// resource's name when the endpoint names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Permission {
    pub resource: &'static str,
    pub level: Level,
    pub name: Option<String>,
}

/// A denied request: the text Consul answers with status 403.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Denied(pub String);

#[derive(Debug, Clone)]
struct Token {
    accessor: String,
    write: bool,
}

/// The configured tokens. See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Acl {
    tokens: HashMap<String, Token>,
    enabled: bool,
}

impl Acl {
    /// ACLs with a management token and read-only tokens; off when
    /// `management` is `None`.
    pub fn new(management: Option<&str>, read_only: &[String]) -> Acl {
        let Some(management) = management else {
            return Acl::default();
        };
        let mut tokens = HashMap::new();
        for secret in read_only {
            tokens.insert(
                secret.clone(),
                Token {
                    accessor: new_uuid(),
                    write: false,
                },
            );
        }
        tokens.insert(
            management.to_string(),
            Token {
                accessor: new_uuid(),
                write: true,
            },
        );
        Acl {
            tokens,
            enabled: true,
        }
    }

    /// Resolves a token (empty for none: the anonymous token) into what it
    /// may do; an unknown token is Consul's `ACL not found`.
    pub fn resolve(&self, token: &str) -> Result<Authz, Denied> {
        if !self.enabled {
            return Ok(Authz {
                accessor: String::new(),
                kind: Kind::All,
            });
        }
        if token.is_empty() {
            return Ok(Authz {
                accessor: ANONYMOUS_ACCESSOR.to_string(),
                kind: Kind::Nothing,
            });
        }
        let found = self
            .tokens
            .get(token)
            .ok_or_else(|| Denied("ACL not found".to_string()))?;
        Ok(Authz {
            accessor: found.accessor.clone(),
            kind: if found.write {
                Kind::All
            } else {
                Kind::ReadOnly
            },
        })
    }

    /// Checks `token` (empty for none) against `needed`.
    #[cfg(test)]
    pub fn authorize(&self, token: &str, needed: &Permission) -> Result<(), Denied> {
        self.resolve(token)?.check(needed)
    }
}

/// AccessorID of Consul's anonymous token.
pub(crate) const ANONYMOUS_ACCESSOR: &str = "00000000-0000-0000-0000-000000000002";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    All,
    ReadOnly,
    Nothing,
}

/// What one resolved token may do.
#[derive(Debug, Clone)]
pub(crate) struct Authz {
    accessor: String,
    kind: Kind,
}

impl Authz {
    /// The anonymous token with nothing granted.
    pub fn anonymous() -> Authz {
        Authz {
            accessor: ANONYMOUS_ACCESSOR.to_string(),
            kind: Kind::Nothing,
        }
    }

    fn allowed(&self, level: Level) -> bool {
        match self.kind {
            Kind::All => true,
            Kind::ReadOnly => level == Level::Read,
            Kind::Nothing => false,
        }
    }

    /// Consul's `PermissionDeniedError` text for a missing permission.
    fn denied(&self, resource: &str, level: Level, name: Option<&str>) -> Denied {
        let level = match level {
            Level::Read => "read",
            Level::Write => "write",
        };
        let on = name.map(|n| format!(" on {n:?}")).unwrap_or_default();
        if self.accessor == ANONYMOUS_ACCESSOR {
            return Denied(format!(
                "Permission denied: anonymous token lacks permission '{resource}:{level}'{on}. \
                 The anonymous token is used implicitly when a request does not specify a token."
            ));
        }
        Denied(format!(
            "Permission denied: token with AccessorID '{}' lacks permission '{resource}:{level}'{on}",
            self.accessor
        ))
    }

    /// Checks one permission.
    pub fn check(&self, needed: &Permission) -> Result<(), Denied> {
        if self.allowed(needed.level) {
            return Ok(());
        }
        Err(self.denied(needed.resource, needed.level, needed.name.as_deref()))
    }

    /// Checks `key:<level>` on one key.
    pub fn check_key(&self, key: &str, level: Level) -> Result<(), Denied> {
        self.check(&Permission {
            resource: "key",
            level,
            name: Some(key.to_string()),
        })
    }

    /// Checks `key:write` on every key under `prefix`.
    pub fn check_key_prefix_write(&self, prefix: &str) -> Result<(), Denied> {
        self.check_key(prefix, Level::Write)
    }
}

/// The permission a `/v1/` request needs; `None` when it needs none.
pub(crate) fn required(method: &str, segments: &[&str], node: &str) -> Option<Permission> {
    let read = method == "GET" || method == "HEAD";
    let level = if read { Level::Read } else { Level::Write };
    let named = |resource: &'static str, level: Level, name: Option<&str>| {
        Some(Permission {
            resource,
            level,
            name: name.map(str::to_string),
        })
    };
    match segments {
        ["status", ..] => None,
        // Checked per operation by the handler, as Consul's `Txn.preCheck`.
        ["txn"] => None,
        ["kv", rest @ ..] => named("key", level, Some(&rest.join("/"))),
        ["agent", "self"] => named("agent", Level::Read, Some(node)),
        ["agent", "check", ..] => named("service", Level::Write, None),
        ["agent", "service", "register"] => named("service", Level::Write, None),
        ["agent", "service", _, id] => named("service", Level::Write, Some(id)),
        ["agent", ..] => named("service", level, None),
        ["health", "service" | "checks", name] => named("service", Level::Read, Some(name)),
        ["health", ..] => named("node", Level::Read, None),
        ["catalog", "service", name] => named("service", Level::Read, Some(name)),
        ["catalog", "services"] => named("service", Level::Read, None),
        ["catalog", ..] => named("node", Level::Read, None),
        ["session", "create" | "destroy" | "renew", ..] => {
            named("session", Level::Write, Some(node))
        }
        ["session", ..] => named("session", Level::Read, None),
        _ => named("operator", level, None),
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
        let write = required("PUT", &["kv", "a", "b"], "n").unwrap_or_else(|| unreachable!());
        assert_eq!(acl.authorize("root", &write), Ok(()));
        assert_eq!(
            acl.authorize("nope", &write),
            Err(Denied("ACL not found".into()))
        );
        let denied = acl
            .authorize("reader", &write)
            .err()
            .map(|d| d.0)
            .unwrap_or_default();
        assert!(
            denied.starts_with("Permission denied: token with AccessorID '"),
            "{denied}"
        );
        assert!(
            denied.ends_with("lacks permission 'key:write' on \"a/b\""),
            "{denied}"
        );
        let anon = acl
            .authorize("", &write)
            .err()
            .map(|d| d.0)
            .unwrap_or_default();
        assert!(
            anon.starts_with("Permission denied: anonymous token lacks permission 'key:write'")
        );
        assert!(required("GET", &["status", "leader"], "n").is_none());
        assert_eq!(Acl::new(None, &[]).authorize("", &write), Ok(()));
    }
}
