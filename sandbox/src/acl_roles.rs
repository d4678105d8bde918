//! rollgate's Consul ACL roles in a sandbox world: one policy per policy
//! file checked in under `config/acl/` (`agent.hcl`, `coordinator.hcl`,
//! `watcher.hcl`, `operator.hcl`, `ci.hcl`) and one token per role, created
//! on a running Consul with ACLs on the way an operator (or Terraform's
//! Consul provider) does it: `PUT /v1/acl/policy`, then `PUT /v1/acl/token`
//! linking the policy by name, with the management token.
//!
//! The demo and the end-to-end tests start the sandbox Consul with
//! [`crate::consul::Config::with_acls`] and a [`Secret::random`] management
//! token, call [`create_roles`], and give every process the token of its
//! role, through a token file ([`RoleTokens::write_file`]) as Puppet and
//! Terraform do in production.
//!
//! Secrets stay secret: [`Secret`]'s `Debug` shows no character of it,
//! nothing here logs one, and an error never quotes an answer that could
//! hold one (only the policy and token *create* answers carry a SecretID,
//! and those are read only on success).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::Rng as _;
use serde_json::{Value, json};

/// The roles, by policy file stem, in the order they are created.
pub const ROLES: [&str; 5] = ["agent", "coordinator", "watcher", "operator", "ci"];

/// ID of Consul's built-in `global-read-only` policy (the same in every
/// Consul, and in the sandbox).
pub const GLOBAL_READ_ONLY_POLICY_ID: &str = "00000000-0000-0000-0000-000000000002";

/// Prefix of the policies' names: `rollgate-agent`, `rollgate-coordinator`, ...
pub const POLICY_PREFIX: &str = "rollgate-";

/// A Consul token's SecretID. Its `Debug` output never shows it; read it
/// with [`Secret::expose`] only to send it or write it to a token file.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a known secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// A fresh random secret in Consul's SecretID format (a UUID).
    pub fn random() -> Self {
        let bytes: [u8; 16] = rand::rng().random();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self(format!(
            "{}-{}-4{}-a{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[13..16],
            &hex[17..20],
            &hex[20..32]
        ))
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The secret as an `X-Consul-Token` header value, marked sensitive so
    /// that HTTP clients never print it.
    pub fn header_value(&self) -> Option<reqwest::header::HeaderValue> {
        let mut value = reqwest::header::HeaderValue::from_str(&self.0).ok()?;
        value.set_sensitive(true);
        Some(value)
    }

    /// Writes the secret to `path` (created or replaced, readable by its
    /// owner only), as Puppet writes `/etc/rollgate/consul-token`.
    pub fn write_file(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(path);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(self.0.as_bytes())?;
        file.write_all(b"\n")
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A reqwest client that sends `token` in `X-Consul-Token` with every
/// request (the header is marked sensitive), for the sandbox's own reads.
pub fn http_client(token: &Secret, timeout: Duration) -> reqwest::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(value) = token.header_value() {
        headers.insert("X-Consul-Token", value);
    }
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .default_headers(headers)
        .build()
}

/// Why the roles could not be created.
#[derive(Debug, thiserror::Error)]
pub enum RolesError {
    /// The Consul address is not on loopback.
    #[error("the sandbox creates ACLs on loopback only; {0} is not on loopback")]
    NotLoopback(SocketAddr),
    /// A policy file is missing or unreadable.
    #[error("cannot read the policy file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The request did not reach Consul or its answer was unreadable.
    #[error("{what}: {source}")]
    Http {
        /// The request.
        what: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// Consul refused the request.
    #[error("{what}: Consul answered {status}: {body}")]
    Refused {
        /// The request.
        what: String,
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// Consul's error text (never a token: error answers carry none).
        body: String,
    },
    /// Consul's answer lacks a field.
    #[error("{what}: Consul's answer has no {field}")]
    Answer {
        /// The request.
        what: String,
        /// The missing field.
        field: &'static str,
    },
}

/// One role's policy and token.
#[derive(Debug, Clone)]
pub struct RoleToken {
    /// The role (the policy file's stem).
    pub role: String,
    /// The policy's name (`rollgate-<role>`).
    pub policy: String,
    /// The policy file it was created from.
    pub policy_file: PathBuf,
    /// The token's AccessorID (not secret: Consul's denials name it).
    pub accessor_id: String,
    /// The token's SecretID.
    pub secret: Secret,
}

/// A token per role, created by [`create_roles`].
#[derive(Debug, Clone, Default)]
pub struct RoleTokens {
    roles: BTreeMap<String, RoleToken>,
}

impl RoleTokens {
    /// The role's policy and token.
    pub fn get(&self, role: &str) -> Option<&RoleToken> {
        self.roles.get(role)
    }

    /// The role's SecretID.
    pub fn secret(&self, role: &str) -> Option<&Secret> {
        self.roles.get(role).map(|r| &r.secret)
    }

    /// The roles created.
    pub fn roles(&self) -> impl Iterator<Item = &str> {
        self.roles.keys().map(String::as_str)
    }

    /// Writes the role's SecretID to `path` (owner-readable only) and
    /// answers the path, for a `token_file` setting.
    pub fn write_file(&self, role: &str, path: &Path) -> std::io::Result<PathBuf> {
        let secret = self.secret(role).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no token for the role {role:?} (is config/acl/{role}.hcl there?)"),
            )
        })?;
        secret.write_file(path)?;
        Ok(path.to_path_buf())
    }
}

/// The workspace's `config/acl`: the first folder `config/acl` holding
/// `agent.hcl` above the running executable (`target/<profile>/...` sits in
/// the workspace), else above the working directory, else the one of the
/// workspace this crate was compiled in. The executable comes first: a
/// shared target directory can hold a build from another checkout, whose
/// compile-time path may be gone.
pub fn policy_dir() -> PathBuf {
    let starts = [std::env::current_exe().ok(), std::env::current_dir().ok()];
    for start in starts.iter().flatten() {
        for dir in start.ancestors() {
            let candidate = dir.join("config").join("acl");
            if candidate.join("agent.hcl").is_file() {
                return candidate;
            }
        }
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .unwrap_or(manifest)
        .join("config")
        .join("acl")
}

/// Creates a policy per role from `dir/<role>.hcl` ([`ROLES`]) and a token
/// holding it, on the Consul at `consul` with the `management` token.
pub async fn create_roles(
    consul: SocketAddr,
    management: &Secret,
    dir: &Path,
) -> Result<RoleTokens, RolesError> {
    create_roles_with_secrets(consul, management, dir, &BTreeMap::new()).await
}

/// [`create_roles`], giving the roles in `chosen` that SecretID (as
/// Terraform may, and as a test does whose process reads its token file
/// before Consul is up); the others get one from Consul.
pub async fn create_roles_with_secrets(
    consul: SocketAddr,
    management: &Secret,
    dir: &Path,
    chosen: &BTreeMap<String, Secret>,
) -> Result<RoleTokens, RolesError> {
    if !consul.ip().is_loopback() {
        return Err(RolesError::NotLoopback(consul));
    }
    let http =
        http_client(management, Duration::from_secs(10)).map_err(|source| RolesError::Http {
            what: "building an HTTP client".into(),
            source,
        })?;
    let mut out = RoleTokens::default();
    for role in ROLES {
        let path = dir.join(format!("{role}.hcl"));
        let rules = std::fs::read_to_string(&path).map_err(|source| RolesError::Read {
            path: path.clone(),
            source,
        })?;
        let policy = format!("{POLICY_PREFIX}{role}");
        let shown = path
            .strip_prefix(dir.parent().and_then(Path::parent).unwrap_or(dir))
            .unwrap_or(&path)
            .display()
            .to_string();
        put(
            &http,
            consul,
            "policy",
            &format!("creating the ACL policy {policy} from {shown}"),
            &json!({
                "Name": policy,
                "Description": format!("rollgate {role} role, from {shown}"),
                "Rules": rules,
            }),
        )
        .await?;
        let (accessor_id, secret) = create_token(
            &http,
            consul,
            &format!("rollgate {role} (sandbox)"),
            json!([{ "Name": policy }]),
            chosen.get(role),
        )
        .await?;
        tracing::debug!(role, policy = %policy, accessor = %accessor_id,
            "ACL policy and token created.");
        out.roles.insert(
            role.to_owned(),
            RoleToken {
                role: role.to_owned(),
                policy,
                policy_file: path,
                accessor_id,
                secret,
            },
        );
    }
    Ok(out)
}

/// [`create_roles`] from this workspace's `config/acl` ([`policy_dir`]).
pub async fn create_workspace_roles(
    consul: SocketAddr,
    management: &Secret,
) -> Result<RoleTokens, RolesError> {
    create_roles(consul, management, &policy_dir()).await
}

/// Creates a token holding Consul's built-in `global-read-only` policy:
/// for observers outside rollgate (the load generator, a demo's or a
/// test's own reads), which must see everything to report truthfully and
/// can change nothing.
pub async fn create_read_token(
    consul: SocketAddr,
    management: &Secret,
    description: &str,
) -> Result<Secret, RolesError> {
    if !consul.ip().is_loopback() {
        return Err(RolesError::NotLoopback(consul));
    }
    let http =
        http_client(management, Duration::from_secs(10)).map_err(|source| RolesError::Http {
            what: "building an HTTP client".into(),
            source,
        })?;
    let (_, secret) = create_token(
        &http,
        consul,
        description,
        json!([{ "ID": GLOBAL_READ_ONLY_POLICY_ID }]),
        None,
    )
    .await?;
    Ok(secret)
}

async fn create_token(
    http: &reqwest::Client,
    consul: SocketAddr,
    description: &str,
    policies: Value,
    secret: Option<&Secret>,
) -> Result<(String, Secret), RolesError> {
    let what = format!("creating the ACL token {description:?}");
    let mut body = json!({ "Description": description, "Policies": policies });
    if let (Some(secret), Some(obj)) = (secret, body.as_object_mut()) {
        obj.insert("SecretID".into(), json!(secret.expose()));
    }
    let answer = put(http, consul, "token", &what, &body).await?;
    let accessor = answer["AccessorID"]
        .as_str()
        .ok_or_else(|| RolesError::Answer {
            what: what.clone(),
            field: "AccessorID",
        })?
        .to_owned();
    let secret = answer["SecretID"]
        .as_str()
        .map(Secret::new)
        .ok_or(RolesError::Answer {
            what,
            field: "SecretID",
        })?;
    Ok((accessor, secret))
}

async fn put(
    http: &reqwest::Client,
    consul: SocketAddr,
    kind: &str,
    what: &str,
    body: &Value,
) -> Result<Value, RolesError> {
    let http_err = |source| RolesError::Http {
        what: what.to_owned(),
        source,
    };
    let response = http
        .put(format!("http://{consul}/v1/acl/{kind}"))
        .json(body)
        .send()
        .await
        .map_err(http_err)?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        return Err(RolesError::Refused {
            what: what.to_owned(),
            status,
            body: body.trim().to_owned(),
        });
    }
    response.json().await.map_err(http_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_shows_in_debug() {
        let s = Secret::random();
        let shown = format!("{s:?} {:?}", Some(&s));
        assert!(!shown.contains(s.expose()), "{shown}");
        assert_eq!(s.expose().len(), 36);
        assert_ne!(Secret::random(), s);
    }

    #[test]
    fn role_tokens_debug_hides_secrets() {
        let mut t = RoleTokens::default();
        let secret = Secret::random();
        t.roles.insert(
            "agent".into(),
            RoleToken {
                role: "agent".into(),
                policy: "rollgate-agent".into(),
                policy_file: PathBuf::from("config/acl/agent.hcl"),
                accessor_id: "acc".into(),
                secret: secret.clone(),
            },
        );
        let shown = format!("{t:?}");
        assert!(!shown.contains(secret.expose()), "{shown}");
    }
}
