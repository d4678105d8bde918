//! Each role's Consul ACL policy (`config/acl/<role>.hcl`) grants exactly
//! what that role's code calls.
//!
//! Declared: the HCL files, parsed with `hcl-rs` as Consul's rule language
//! (`key_prefix "rollgate/outbox/" { policy = "write" }`).
//!
//! Derived, in three steps that each fail with the role, the rule and the
//! call named:
//!
//! 1. Which Consul client calls each role makes: every method call whose
//!    name is a client method of `consul::permissions::CALLS` (comments and
//!    string literals ignored), and every `"/v1/..."` path literal matching
//!    one of its endpoints, in the role's modules (`Role::modules`; test
//!    modules are not counted).
//! 2. Each call that needs a permission has a grant in
//!    `consul::permissions` saying on which key, service or node the role
//!    makes it, and each grant is for a call the role makes.
//! 3. The policy computed from the grants (`permissions::rules`, for the
//!    names the files are written for: prefix `rollgate`, service `web`,
//!    artifact `acmeinc/web`) equals the file's rules: a rule missing from
//!    the file, a rule the file has that no call needs, and a rule at the
//!    wrong access all fail.
//!
//! The end-to-end proof that the rules are enough, against the sandbox's
//! Consul with ACLs on, is `acl_roles.rs`.

mod source_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rollgate::config::Config;
use rollgate::consul::permissions::{self, Access, CALLS, Names, Resource, Role, Rule};
use source_support::code_only;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("agent/ has a parent")
        .to_path_buf()
}

/// The rules of a policy file, by (resource, prefix, name).
fn parse_policy(path: &Path) -> BTreeMap<(Resource, bool, String), Access> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let body: hcl::Body =
        hcl::from_str(&text).unwrap_or_else(|e| panic!("{} is not HCL: {e}", path.display()));
    let mut rules = BTreeMap::new();
    for block in body.blocks() {
        let kind = block.identifier.as_str();
        let Some((resource, prefix)) = Resource::of_block(kind) else {
            panic!(
                "{}: rule kind {kind:?} is not one rollgate needs (key, service, node, session, agent, with _prefix)",
                path.display()
            );
        };
        let [label] = block.labels.as_slice() else {
            panic!("{}: {kind} needs exactly one name", path.display());
        };
        let policy = block
            .body
            .attributes()
            .find(|a| a.key.as_str() == "policy")
            .map(|a| match &a.expr {
                hcl::Expression::String(s) => s.clone(),
                other => panic!("{}: {kind} policy is {other}, not a string", path.display()),
            })
            .unwrap_or_else(|| {
                panic!(
                    "{}: {kind} {:?} has no policy",
                    path.display(),
                    label.as_str()
                )
            });
        let access = Access::parse(&policy).unwrap_or_else(|| {
            panic!(
                "{}: {kind} {:?} has policy {policy:?}; rollgate's policies only grant read or write",
                path.display(),
                label.as_str()
            )
        });
        let previous = rules.insert((resource, prefix, label.as_str().to_owned()), access);
        assert!(
            previous.is_none(),
            "{}: {kind} {:?} appears twice",
            path.display(),
            label.as_str()
        );
    }
    assert!(
        body.attributes().next().is_none(),
        "{}: global rules (operator, acl, ...) are not needed by any rollgate role",
        path.display()
    );
    rules
}

/// The source up to its unit-test module.
fn without_tests(source: &str) -> &str {
    source.split("#[cfg(test)]").next().unwrap_or(source)
}

/// The files of a module pattern (`node/**`, `ops.rs`) under agent/src,
/// test files left out.
fn files_of(pattern: &str) -> Vec<PathBuf> {
    let src = workspace().join("agent/src");
    let mut out = Vec::new();
    if let Some(dir) = pattern.strip_suffix("/**") {
        let mut stack = vec![src.join(dir)];
        while let Some(dir) = stack.pop() {
            let entries = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("module folder {} of a role: {e}", dir.display()));
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if path.is_dir() {
                    if name != "tests" {
                        stack.push(path);
                    }
                } else if name.ends_with(".rs")
                    && name != "tests.rs"
                    && !name.ends_with("_tests.rs")
                {
                    out.push(path);
                }
            }
        }
    } else {
        let path = src.join(pattern);
        assert!(
            path.is_file(),
            "module {} of a role does not exist",
            path.display()
        );
        out.push(path);
    }
    out.sort();
    out
}

/// Where a role calls each client method: method -> "file:line" list.
fn calls_of(role: Role) -> BTreeMap<&'static str, Vec<String>> {
    let root = workspace();
    let mut found: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for pattern in role.modules() {
        for path in files_of(pattern) {
            let source = std::fs::read_to_string(&path).expect("readable source");
            let source = without_tests(&source);
            let code = code_only(source);
            let shown = path
                .strip_prefix(&root)
                .unwrap_or(&path)
                .display()
                .to_string();
            for (n, line) in code.lines().enumerate() {
                for call in CALLS {
                    let needle = format!(".{}(", call.method);
                    if line.contains(&needle) {
                        found
                            .entry(call.method)
                            .or_default()
                            .push(format!("{shown}:{}", n + 1));
                    }
                }
            }
            // Raw endpoints: a path literal given to the client's generic
            // readers (`read_with("/v1/health/state/any", ...)`).
            for (n, line) in source.lines().enumerate() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                let mut rest = line;
                while let Some(at) = rest.find("\"/v1/") {
                    let literal = &rest[at + 1..];
                    let end = literal.find('"').unwrap_or(literal.len());
                    let path_literal = &literal[..end];
                    let call = CALLS
                        .iter()
                        .find(|c| c.matches_path(path_literal))
                        .unwrap_or_else(|| {
                            panic!(
                                "{shown}:{}: Consul endpoint {path_literal:?} is not in consul::permissions::CALLS; add it with the permissions it needs",
                                n + 1
                            )
                        });
                    found
                        .entry(call.method)
                        .or_default()
                        .push(format!("{shown}:{} ({path_literal})", n + 1));
                    rest = &literal[end..];
                }
            }
        }
    }
    found
}

#[test]
fn every_call_a_role_makes_has_a_grant_and_every_grant_a_call() {
    let mut problems = Vec::new();
    for role in Role::ALL {
        let calls = calls_of(role);
        let grants = role.grants();
        for (method, sites) in &calls {
            let call = permissions::call(method).expect("found from CALLS");
            for need in call.needs.iter().filter(|n| n.only_when.is_none()) {
                let granted = grants
                    .iter()
                    .any(|g| g.call == *method && g.resource == need.resource);
                if !granted {
                    problems.push(format!(
                        "role {role}: {} calls {method} ({}), which needs {}:{} on {}; \
                         consul::permissions has no grant saying on which {} the role calls it",
                        sites.join(", "),
                        call.endpoint,
                        need.resource.as_str(),
                        need.access.as_str(),
                        need.on,
                        need.resource.as_str(),
                    ));
                }
            }
        }
        for grant in &grants {
            if !calls.contains_key(grant.call) {
                problems.push(format!(
                    "role {role}: consul::permissions grants {} {:?} {} for {} ({}), \
                     but no module of the role ({}) calls {}",
                    grant.resource.block(grant.prefix),
                    grant.name,
                    grant.access.as_str(),
                    grant.call,
                    grant.why,
                    role.modules().join(", "),
                    grant.call
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

#[test]
fn each_policy_file_holds_exactly_the_rules_its_role_needs() {
    let names = Names::example();
    let mut problems = Vec::new();
    for role in Role::ALL {
        let file = role.policy_file();
        let declared = parse_policy(&workspace().join(&file));
        let needed = permissions::rules(role, &names);
        let needed_keys: BTreeSet<_> = needed
            .iter()
            .map(|n| (n.rule.resource, n.rule.prefix, n.rule.name.clone()))
            .collect();
        for n in &needed {
            let key = (n.rule.resource, n.rule.prefix, n.rule.name.clone());
            let calls: Vec<String> = n
                .grants
                .iter()
                .map(|g| format!("{} ({}, {})", g.call, g.access.as_str(), g.why))
                .collect();
            match declared.get(&key) {
                None => problems.push(format!(
                    "role {role}: {file} lacks `{}`, needed by {}",
                    n.rule,
                    calls.join("; ")
                )),
                Some(access) if *access != n.rule.access => problems.push(format!(
                    "role {role}: {file} grants `{}` at {}, but its calls need {}: {}",
                    n.rule,
                    access.as_str(),
                    n.rule.access.as_str(),
                    calls.join("; ")
                )),
                Some(_) => {}
            }
        }
        for ((resource, prefix, name), access) in &declared {
            if !needed_keys.contains(&(*resource, *prefix, name.clone())) {
                let rule = Rule {
                    resource: *resource,
                    prefix: *prefix,
                    name: name.clone(),
                    access: *access,
                };
                problems.push(format!(
                    "role {role}: {file} grants `{rule}`, which no call of the role needs \
                     (remove it, or add the call's grant to consul::permissions)"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

#[test]
fn every_policy_file_is_a_role_and_says_who_uses_it() {
    let dir = workspace().join("config/acl");
    let files: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("config/acl exists")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let roles: BTreeSet<String> = Role::ALL
        .iter()
        .map(|r| format!("{}.hcl", r.as_str()))
        .collect();
    assert_eq!(
        files, roles,
        "config/acl/ holds one policy per role, nothing else"
    );
    for role in Role::ALL {
        let text = std::fs::read_to_string(workspace().join(role.policy_file())).expect("read");
        let header: String = text
            .lines()
            .take_while(|l| l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        for word in ["Who:", "Token:"] {
            assert!(
                header.contains(word),
                "{}: the header comment must say {word} (who uses the policy, where the token goes)",
                role.policy_file()
            );
        }
    }
}

/// Issue 18: a web node's token must not write another node's data.
#[test]
fn the_agent_policy_writes_no_node() {
    let rules = parse_policy(&workspace().join(Role::Agent.policy_file()));
    for ((resource, prefix, name), access) in &rules {
        assert!(
            !(*resource == Resource::Node && *access == Access::Write),
            "config/acl/agent.hcl grants {} {name:?} write: one compromised node could fake \
             another's health (issue 18); node write comes from each instance's node identity",
            resource.block(*prefix)
        );
    }
}

/// The names the files are written for are the defaults a configuration
/// gets, so a default setup needs no edit of the files.
#[test]
fn the_files_are_written_for_the_default_names() {
    let defaults = Config::default();
    let names = Names::example();
    assert_eq!(
        defaults.consul.kv_prefix.trim_end_matches('/'),
        names.prefix
    );
    assert_eq!(defaults.agent.service_name, names.agent_service);
}
