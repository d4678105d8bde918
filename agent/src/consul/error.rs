//! The one error type of the Consul client.

use std::time::Duration;

/// The innermost cause of a transport error, in the operating system's
/// words (`Connection refused (os error 111)`, a DNS or TLS failure),
/// instead of reqwest's outer "error sending request".
fn root_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

/// A Consul call failed. Every variant names the call (`METHOD /v1/path`,
/// never the query string or the token) so an operator can tell which
/// permission or endpoint is involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Consul could not be reached: connection refused, DNS, TLS handshake.
    #[error(
        "{call}: cannot reach Consul at {address}: {}; check consul.address (or \
         CONSUL_HTTP_ADDR) and that a Consul agent listens there",
        root_cause(source)
    )]
    Transport {
        /// The call, e.g. `GET /v1/kv/rollgate/state`.
        call: String,
        /// Consul's base URL.
        address: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// No complete answer within the time limit.
    #[error(
        "{call}: no answer from Consul at {address} within {}; check that the Consul agent \
         there is not overloaded or stuck (consul.timeout sets the limit)",
        humantime::format_duration(*timeout)
    )]
    Timeout {
        /// The call.
        call: String,
        /// Consul's base URL.
        address: String,
        /// The limit that passed.
        timeout: Duration,
    },
    /// HTTP 403: the token is missing, unknown or lacks a permission.
    #[error(
        "{call}: Consul refused the request (HTTP 403: {body}); check that the ACL token \
         (consul.token, consul.token_file or CONSUL_HTTP_TOKEN) exists and grants this call{}",
        match role {
            Some(role) => format!(
                " (the {role} role's policy, config/acl/{role}.hcl, grants what this role needs; \
                 `rollgate check-config --connect` lists what the token lacks)"
            ),
            None => String::new(),
        }
    )]
    PermissionDenied {
        /// The call.
        call: String,
        /// Consul's explanation (`Permission denied`, `ACL not found`).
        body: String,
        /// The rollgate role the client acts as (`coordinator`, `agent`,
        /// ...), to name the policy file that grants the call.
        role: Option<&'static str>,
    },
    /// HTTP 404 where the caller expected the object to exist.
    #[error("{call}: not found in Consul (HTTP 404{})", if body.is_empty() { String::new() } else { format!(": {body}") })]
    NotFound {
        /// The call.
        call: String,
        /// Consul's message, often empty.
        body: String,
    },
    /// Any other non-success status.
    #[error("{call}: Consul answered HTTP {status}: {body}")]
    Status {
        /// The call.
        call: String,
        /// HTTP status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The body was not the JSON the call expects.
    #[error(
        "{call}: Consul's answer is not the expected JSON ({source}); it starts with {snippet:?}"
    )]
    Decode {
        /// The call.
        call: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
        /// The start of the body.
        snippet: String,
    },
    /// The client could not be built (bad CA file, unreadable token file).
    #[error("Consul client configuration: {0}")]
    Config(String),
}

impl Error {
    /// Whether trying the same call again later may succeed: transport
    /// problems, time-outs, 429 and 5xx. A 403 or a decode error will not fix
    /// itself by retrying quickly.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport { .. } | Error::Timeout { .. } => true,
            Error::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// Cuts a body to a length fit for an error message, on a char boundary.
pub(crate) fn snippet(body: &[u8]) -> String {
    const MAX: usize = 300;
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_denial_names_the_role_policy_file_when_the_role_is_known() {
        let e = Error::PermissionDenied {
            call: "PUT /v1/txn".into(),
            body: "Permission denied: token with AccessorID 'a' lacks permission 'key:write' on \"rollgate/leader\"".into(),
            role: Some("coordinator"),
        };
        let text = e.to_string();
        assert!(text.contains("key:write"), "{text}");
        assert!(text.contains("config/acl/coordinator.hcl"), "{text}");
        let anonymous = Error::PermissionDenied {
            call: "GET /v1/kv/x".into(),
            body: "ACL not found".into(),
            role: None,
        };
        assert!(!anonymous.to_string().contains("config/acl"));
    }
}
