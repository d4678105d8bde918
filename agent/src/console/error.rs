//! The API's one error type and its JSON answer: `{"error": "..."}` with
//! the status that says whose move it is.
//!
//! | status | meaning |
//! |---|---|
//! | 400 | the request is malformed (bad plan ID, bad JSON, empty reason) |
//! | 401 | no token (or, with Consul's ACLs off, no operator name) |
//! | 403 | Consul refused the token: unknown, or lacking a rule |
//! | 404 | no such service or plan |
//! | 409 | the state does not allow it: already decided, no rollout, lost a check-and-set race |
//! | 502 | Consul failed or answered what rollgate cannot read |
//!
//! Messages never contain a token: Consul's 403 texts name the AccessorID,
//! never the SecretID, and nothing here formats a request header.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::consul;
use crate::consul::records::RecordError;
use crate::rollout::store::StoreError;

/// An API request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request itself is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// 401: who is asking is not said.
    #[error("{0}")]
    Unauthenticated(String),
    /// 403: Consul refused the caller's token.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such thing.
    #[error("{0}")]
    NotFound(String),
    /// 409: the current state refuses it.
    #[error("{0}")]
    Conflict(String),
    /// 502: Consul failed (unreachable, 5xx, unreadable record).
    #[error("{0}")]
    Upstream(String),
}

/// The JSON body of every error.
#[derive(Debug, Serialize)]
struct Body<'a> {
    error: &'a str,
}

impl ApiError {
    /// The HTTP status of the error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "Console request failed.");
        }
        let text = self.to_string();
        let mut r = (status, Json(Body { error: &text })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"rollgate\""),
            );
        }
        r
    }
}

impl From<consul::Error> for ApiError {
    fn from(e: consul::Error) -> Self {
        match e {
            consul::Error::PermissionDenied { call, body, .. } => {
                if body.contains("ACL not found") {
                    ApiError::Forbidden(format!(
                        "Consul does not know this token ({call}: ACL not found): never created, \
                         deleted, or expired"
                    ))
                } else {
                    ApiError::Forbidden(format!(
                        "Consul refused the token: {call}: {body}. The operator policy \
                         (config/acl/operator.hcl, Consul role rollgate-operator) grants what the \
                         console's actions need; ask for a token with it"
                    ))
                }
            }
            consul::Error::NotFound { call, .. } => {
                ApiError::NotFound(format!("{call}: not found in Consul"))
            }
            other => ApiError::Upstream(other.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Consul(e) => e.into(),
            StoreError::NoPlan(id) => ApiError::NotFound(format!("no plan {id}")),
            StoreError::BadPlanId(id) => ApiError::BadRequest(format!(
                "{id:?} is not a plan ID (expected SERVICE-NUMBER, e.g. web-3)"
            )),
            StoreError::Contended(key) => ApiError::Conflict(format!(
                "the record {key} changed while this request wrote it; read it again and retry"
            )),
            StoreError::Record(e) => e.into(),
        }
    }
}

impl From<RecordError> for ApiError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::Consul(e) => e.into(),
            // A list Consul filtered is not the whole truth: refused, not
            // shown as "nothing there".
            RecordError::Hidden { prefix } => ApiError::Forbidden(format!(
                "Consul hid records under {prefix} from this token \
                 (X-Consul-Results-Filtered-By-ACLs): it lacks key:read on key_prefix \"{prefix}\"; \
                 the operator policy (config/acl/operator.hcl) grants what the console's \
                 operator views need"
            )),
            RecordError::Contended(key) => ApiError::Conflict(format!(
                "the record {key} changed while this request wrote it; read it again and retry"
            )),
            other => ApiError::Upstream(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_rule_and_the_operator_policy() {
        let e: ApiError = consul::Error::PermissionDenied {
            call: "PUT /v1/txn".into(),
            body: "Permission denied: token with AccessorID 'a1' lacks permission 'key:write' on \"rollgate/services/web/plans/0000000001\"".into(),
            role: Some("operator"),
        }
        .into();
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        let text = e.to_string();
        assert!(text.contains("key:write"), "{text}");
        assert!(text.contains("config/acl/operator.hcl"), "{text}");
    }
}
