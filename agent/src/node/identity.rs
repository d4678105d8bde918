//! Who this instance is, from the EC2 instance metadata service (IMDSv2).
//!
//! IMDSv2 first: `PUT /latest/api/token` with a TTL header, then every read
//! carries the token. The endpoint is `agent.imds_endpoint`, else the standard
//! variable `AWS_EC2_METADATA_SERVICE_ENDPOINT`, else the link-local address.
//! Where the service cannot be reached (outside EC2), `[agent.identity]` in the
//! configuration may supply the identity, with a warning. Never IMDSv1.

use std::time::Duration;

use super::config::{AgentConfig, StaticIdentity};

/// The standard default metadata endpoint.
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";

/// TTL asked for the session token; the agent reads identity once at start.
const TOKEN_TTL_SECONDS: u32 = 300;

/// The instance's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// EC2 instance ID; maps the Consul service instance to the instance.
    pub instance_id: String,
    /// AMI the instance was launched from.
    pub ami_id: String,
    /// Availability zone.
    pub availability_zone: String,
    /// Private IPv4, advertised as the service address.
    pub local_ipv4: String,
    /// Where the identity came from (`imds` or `configuration`), for logs.
    pub source: &'static str,
}

/// The identity could not be established.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// IMDS unreachable or failing, and no `[agent.identity]` to fall back to.
    #[error(
        "cannot learn the instance identity: the instance metadata service at {endpoint} \
         failed ({cause}), and no [agent.identity] is configured; on EC2 check that IMDSv2 \
         is enabled with a hop limit that reaches this process; elsewhere set \
         [agent.identity] instance_id, ami_id, availability_zone and local_ipv4"
    )]
    Unavailable {
        /// The endpoint tried.
        endpoint: String,
        /// What went wrong.
        cause: String,
    },
    /// `[agent.identity]` is present but incomplete.
    #[error("[agent.identity] is incomplete: {0} must be set")]
    Incomplete(&'static str),
}

/// The metadata endpoint to use, per the precedence above.
pub fn endpoint(config: &AgentConfig, env: impl Fn(&str) -> Option<String>) -> String {
    if !config.imds_endpoint.is_empty() {
        return config.imds_endpoint.trim_end_matches('/').to_string();
    }
    env("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .filter(|v| !v.is_empty())
        .map(|v| v.trim_end_matches('/').to_string())
        .unwrap_or_else(|| DEFAULT_IMDS_ENDPOINT.to_string())
}

/// Reads the identity from IMDS, trying `attempts` times, then falls back to
/// the configured identity.
pub async fn resolve(
    config: &AgentConfig,
    endpoint: &str,
    attempts: u32,
) -> Result<Identity, IdentityError> {
    // One client for every attempt (dropped, with its connections, once the
    // identity is known).
    let http = super::local_http_client(endpoint)
        .timeout(config.check_timeout.max(Duration::from_secs(1)))
        // The metadata service is link-local: never through a proxy.
        .no_proxy()
        .build();
    let mut cause = String::new();
    match http {
        Err(e) => cause = e.to_string(),
        Ok(http) => {
            for attempt in 1..=attempts.max(1) {
                match from_imds(&http, endpoint).await {
                    Ok(id) => return Ok(id),
                    Err(e) => {
                        tracing::debug!(endpoint, attempt, error = %e, "Instance metadata not available yet.");
                        cause = e;
                        if attempt < attempts {
                            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt)))
                                .await;
                        }
                    }
                }
            }
        }
    }
    match &config.identity {
        Some(fixed) => {
            let id = from_config(fixed)?;
            tracing::warn!(endpoint, error = %cause, instance = %id.instance_id,
                "Instance metadata service unavailable; using [agent.identity] from the configuration.");
            Ok(id)
        }
        None => Err(IdentityError::Unavailable {
            endpoint: endpoint.to_string(),
            cause,
        }),
    }
}

fn from_config(fixed: &StaticIdentity) -> Result<Identity, IdentityError> {
    for (name, value) in [
        ("instance_id", &fixed.instance_id),
        ("ami_id", &fixed.ami_id),
        ("availability_zone", &fixed.availability_zone),
        ("local_ipv4", &fixed.local_ipv4),
    ] {
        if value.trim().is_empty() {
            return Err(IdentityError::Incomplete(name));
        }
    }
    Ok(Identity {
        instance_id: fixed.instance_id.clone(),
        ami_id: fixed.ami_id.clone(),
        availability_zone: fixed.availability_zone.clone(),
        local_ipv4: fixed.local_ipv4.clone(),
        source: "configuration",
    })
}

async fn from_imds(http: &reqwest::Client, endpoint: &str) -> Result<Identity, String> {
    let token = http
        .put(format!("{endpoint}/latest/api/token"))
        .header(
            "X-aws-ec2-metadata-token-ttl-seconds",
            TOKEN_TTL_SECONDS.to_string(),
        )
        .send()
        .await
        .map_err(|e| format!("PUT /latest/api/token: {}", e.without_url()))?;
    if !token.status().is_success() {
        return Err(format!("PUT /latest/api/token answered {}", token.status()));
    }
    let token = token
        .text()
        .await
        .map_err(|e| format!("PUT /latest/api/token: {}", e.without_url()))?;
    let get = |path: &'static str| {
        let http = http.clone();
        let token = token.clone();
        let url = format!("{endpoint}/latest/meta-data/{path}");
        async move {
            let r = http
                .get(url)
                .header("X-aws-ec2-metadata-token", token)
                .send()
                .await
                .map_err(|e| format!("GET meta-data/{path}: {}", e.without_url()))?;
            if !r.status().is_success() {
                return Err(format!("GET meta-data/{path} answered {}", r.status()));
            }
            let text = r
                .text()
                .await
                .map_err(|e| format!("GET meta-data/{path}: {}", e.without_url()))?;
            let text = text.trim().to_string();
            if text.is_empty() || text.len() > 256 || text.contains(char::is_whitespace) {
                return Err(format!("GET meta-data/{path} answered an unexpected value"));
            }
            Ok(text)
        }
    };
    Ok(Identity {
        instance_id: get("instance-id").await?,
        ami_id: get("ami-id").await?,
        availability_zone: get("placement/availability-zone").await?,
        local_ipv4: get("local-ipv4").await?,
        source: "imds",
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn endpoint_precedence_config_then_env_then_default() {
        let mut c = AgentConfig::default();
        assert_eq!(endpoint(&c, |_| None), DEFAULT_IMDS_ENDPOINT);
        assert_eq!(
            endpoint(&c, |_| Some("http://127.0.0.1:9/".into())),
            "http://127.0.0.1:9"
        );
        c.imds_endpoint = "http://10.0.0.1:80".into();
        assert_eq!(
            endpoint(&c, |_| Some("http://x".into())),
            "http://10.0.0.1:80"
        );
    }

    #[tokio::test]
    async fn incomplete_static_identity_names_the_missing_key() {
        let c = AgentConfig {
            identity: Some(StaticIdentity {
                instance_id: "i-1".into(),
                ..StaticIdentity::default()
            }),
            ..AgentConfig::default()
        };
        // Port 9 (discard) on loopback: nothing listens, fails fast.
        let e = resolve(&c, "http://127.0.0.1:9", 1).await.unwrap_err();
        assert!(e.to_string().contains("ami_id"), "{e}");
    }
}
