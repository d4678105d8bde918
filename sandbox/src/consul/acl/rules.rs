//! Consul's ACL rule language: parsing a policy's HCL rules and deciding
//! what they grant.
//!
//! Resources with names (`service`, `node`, `key`, `session`, `agent`) take
//! an exact rule (`key "a/b" { policy = "read" }`) or a prefix rule
//! (`key_prefix "a/" { ... }`); the global ones (`operator`, `acl`,
//! `keyring`) are attributes (`operator = "read"`). Levels are `read`,
//! `list` (keys only; grants read), `write` and `deny`.
//!
//! Deciding follows Consul's policy authorizer: an exact rule beats every
//! prefix rule, the longest matching prefix wins, and no matching rule
//! means the default policy (deny, as production runs). Rules of several
//! policies merge per (resource, name, exact or prefix) with Consul's
//! precedence: deny over write over list over read. Parsing uses a
//! maintained HCL parser; nothing here panics on user input.

use std::collections::{BTreeMap, HashMap};

/// An access level of a rule. The order is Consul's merge precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Access {
    Read,
    List,
    Write,
    Deny,
}

impl Access {
    fn parse(word: &str) -> Option<Access> {
        Some(match word {
            "read" => Access::Read,
            "list" => Access::List,
            "write" => Access::Write,
            "deny" => Access::Deny,
            _ => return None,
        })
    }

    /// Whether this level grants `write` (else only reading).
    fn grants(self, write: bool) -> bool {
        match self {
            Access::Write => true,
            Access::Read | Access::List => !write,
            Access::Deny => false,
        }
    }
}

/// A resource kind whose rules name resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Resource {
    Service,
    Node,
    Key,
    Session,
    Agent,
}

impl Resource {
    /// Consul's name for the resource, as in `service:read`.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Service => "service",
            Resource::Node => "node",
            Resource::Key => "key",
            Resource::Session => "session",
            Resource::Agent => "agent",
        }
    }

    const ALL: [Resource; 5] = [
        Resource::Service,
        Resource::Node,
        Resource::Key,
        Resource::Session,
        Resource::Agent,
    ];

    /// The resource of a rule block, and whether it is a prefix rule.
    fn of_block(word: &str) -> Option<(Resource, bool)> {
        let (base, prefix) = match word.strip_suffix("_prefix") {
            Some(base) => (base, true),
            None => (word, false),
        };
        Resource::ALL
            .into_iter()
            .find(|r| r.as_str() == base)
            .map(|r| (r, prefix))
    }
}

/// A resource kind without names (attributes in the rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Global {
    Operator,
    Acl,
    Keyring,
}

impl Global {
    /// Consul's name for the resource, as in `operator:read`.
    pub fn as_str(self) -> &'static str {
        match self {
            Global::Operator => "operator",
            Global::Acl => "acl",
            Global::Keyring => "keyring",
        }
    }

    const ALL: [Global; 3] = [Global::Operator, Global::Acl, Global::Keyring];
}

/// The exact and prefix rules of one resource kind.
#[derive(Debug, Clone, Default)]
struct Table {
    exact: HashMap<String, Access>,
    prefix: BTreeMap<String, Access>,
}

impl Table {
    fn insert(&mut self, prefix: bool, name: &str, access: Access) {
        let map_entry = |a: &mut Access| *a = (*a).max(access);
        if prefix {
            self.prefix
                .entry(name.to_string())
                .and_modify(map_entry)
                .or_insert(access);
        } else {
            self.exact
                .entry(name.to_string())
                .and_modify(map_entry)
                .or_insert(access);
        }
    }

    fn decide(&self, name: &str) -> Option<Access> {
        if let Some(a) = self.exact.get(name) {
            return Some(*a);
        }
        self.prefix
            .iter()
            .filter(|(p, _)| name.starts_with(p.as_str()))
            .max_by_key(|(p, _)| p.len())
            .map(|(_, a)| *a)
    }

    /// Consul's `KeyWritePrefix`: write on the prefix itself, and no rule
    /// at or below it that withholds write.
    fn write_prefix(&self, prefix: &str) -> bool {
        let below_ok = self
            .exact
            .iter()
            .chain(self.prefix.iter())
            .filter(|(name, _)| name.starts_with(prefix))
            .all(|(_, a)| *a == Access::Write);
        let covering = self
            .prefix
            .iter()
            .filter(|(p, _)| prefix.starts_with(p.as_str()))
            .max_by_key(|(p, _)| p.len())
            .map(|(_, a)| *a);
        below_ok && covering == Some(Access::Write)
    }
}

/// Compiled rules of one or more policies. See the module docs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rules {
    tables: HashMap<Resource, Table>,
    globals: HashMap<Global, Access>,
}

impl Rules {
    /// Rules granting `access` on everything (the built-in policies).
    pub fn everything(access: Access) -> Rules {
        let mut rules = Rules::default();
        for r in Resource::ALL {
            rules.tables.entry(r).or_default().insert(true, "", access);
        }
        for g in Global::ALL {
            // The built-in read-only policy grants no ACL reads.
            if access == Access::Write || g != Global::Acl {
                rules.globals.insert(g, access);
            }
        }
        rules
    }

    /// Parses HCL rules; errors are worded for an API answer.
    pub fn parse(text: &str) -> Result<Rules, String> {
        let body = hcl::parse(text).map_err(|e| format!("Failed to parse ACL rules: {e}"))?;
        let mut rules = Rules::default();
        for structure in body {
            match structure {
                hcl::Structure::Attribute(attr) => {
                    let key = attr.key.as_str();
                    let Some(global) = Global::ALL.into_iter().find(|g| g.as_str() == key) else {
                        // Consul ignores rule kinds it does not enforce here
                        // (mesh, peering, ...), as this sandbox does not
                        // serve their endpoints.
                        continue;
                    };
                    let access = level(&attr.expr, key)?;
                    rules.add_global(global, access);
                }
                hcl::Structure::Block(block) => {
                    let kind = block.identifier.as_str();
                    let Some((resource, prefix)) = Resource::of_block(kind) else {
                        continue;
                    };
                    let [label] = block.labels.as_slice() else {
                        return Err(format!(
                            "Failed to parse ACL rules: {kind} needs exactly one name"
                        ));
                    };
                    let policy = block
                        .body
                        .attributes()
                        .find(|a| a.key.as_str() == "policy")
                        .ok_or_else(|| {
                            format!(
                                "Failed to parse ACL rules: {kind} {:?} has no policy",
                                label.as_str()
                            )
                        })?;
                    let access = level(&policy.expr, resource.as_str())?;
                    if access == Access::List && resource != Resource::Key {
                        return Err(format!(
                            "Invalid {} policy: {:?}",
                            resource.as_str(),
                            "list"
                        ));
                    }
                    rules.tables.entry(resource).or_default().insert(
                        prefix,
                        label.as_str(),
                        access,
                    );
                }
            }
        }
        Ok(rules)
    }

    fn add_global(&mut self, global: Global, access: Access) {
        self.globals
            .entry(global)
            .and_modify(|a| *a = (*a).max(access))
            .or_insert(access);
    }

    /// Adds every rule of `other`, with Consul's merge precedence.
    pub fn merge(&mut self, other: &Rules) {
        for (resource, table) in &other.tables {
            let mine = self.tables.entry(*resource).or_default();
            for (name, access) in &table.exact {
                mine.insert(false, name, *access);
            }
            for (name, access) in &table.prefix {
                mine.insert(true, name, *access);
            }
        }
        for (global, access) in &other.globals {
            self.add_global(*global, *access);
        }
    }

    /// Whether the rules grant read (or write) on the named resource.
    pub fn allows(&self, resource: Resource, name: &str, write: bool) -> bool {
        self.tables
            .get(&resource)
            .and_then(|t| t.decide(name))
            .is_some_and(|a| a.grants(write))
    }

    /// Whether the rules grant read (or write) on a global resource.
    pub fn allows_global(&self, global: Global, write: bool) -> bool {
        self.globals.get(&global).is_some_and(|a| a.grants(write))
    }

    /// Whether the rules grant write on every key under `prefix`.
    pub fn allows_key_write_prefix(&self, prefix: &str) -> bool {
        self.tables
            .get(&Resource::Key)
            .is_some_and(|t| t.write_prefix(prefix))
    }
}

fn level(expr: &hcl::Expression, what: &str) -> Result<Access, String> {
    match expr {
        hcl::Expression::String(word) => {
            Access::parse(word).ok_or_else(|| format!("Invalid {what} policy: {word:?}"))
        }
        other => Err(format!(
            "Failed to parse ACL rules: {what}: expected a string, found {other}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Rules {
        Rules::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn exact_beats_prefix_and_the_longest_prefix_wins() {
        let r = rules(
            r#"
            key_prefix "" { policy = "read" }
            key_prefix "app/" { policy = "write" }
            key_prefix "app/secret/" { policy = "deny" }
            key "app/secret/open" { policy = "read" }
            service "web" { policy = "write" }
            service_prefix "" { policy = "read" }
            operator = "read"
            "#,
        );
        assert!(r.allows(Resource::Key, "other", false));
        assert!(!r.allows(Resource::Key, "other", true));
        assert!(r.allows(Resource::Key, "app/x", true));
        assert!(!r.allows(Resource::Key, "app/secret/x", false));
        assert!(r.allows(Resource::Key, "app/secret/open", false));
        assert!(!r.allows(Resource::Key, "app/secret/open", true));
        assert!(r.allows(Resource::Service, "web", true));
        assert!(!r.allows(Resource::Service, "api", true));
        assert!(!r.allows(Resource::Node, "n", false), "default deny");
        assert!(r.allows_global(Global::Operator, false));
        assert!(!r.allows_global(Global::Operator, true));
        assert!(!r.allows_global(Global::Acl, false));
        assert!(!r.allows_key_write_prefix("app/"), "a deny below");
        assert!(r.allows_key_write_prefix("app/other/"));
    }

    #[test]
    fn deny_wins_when_policies_merge() {
        let mut merged = rules(r#"service "web" { policy = "write" }"#);
        merged.merge(&rules(r#"service "web" { policy = "deny" }"#));
        assert!(!merged.allows(Resource::Service, "web", false));
        let mut merged = rules(r#"key_prefix "a/" { policy = "read" }"#);
        merged.merge(&rules(r#"key_prefix "a/" { policy = "write" }"#));
        assert!(merged.allows(Resource::Key, "a/b", true));
    }

    #[test]
    fn bad_rules_are_errors() {
        assert!(Rules::parse(r#"key "a" { policy = "bogus" }"#).is_err());
        assert!(Rules::parse(r#"key "a" {"#).is_err());
        assert!(Rules::parse(r#"service "a" { policy = "list" }"#).is_err());
        assert!(Rules::parse(r#"operator = 5"#).is_err());
    }
}
