//! Who is asking, decided by Consul: the request carries the operator's
//! Consul ACL token, and the console acts with that token, so the
//! operator policy (`config/acl/operator.hcl`) is what allows an approval.
//!
//! The API's token is taken from the first of [`SOURCES`] the request
//! has; the page's token is given once in its login form
//! ([`Caller::identify`]) and kept server-side in the session
//! (`page::session`), which [`Caller::resume`] acts with. `GET /v1/acl/token/self` then tells who it is: the
//! decision records its Description and AccessorID, never the secret.
//!
//! With Consul's ACLs off (a development Consul answers token/self with
//! `401 ACL support disabled`) no token can say who acts, so the request
//! names its operator in `X-Rollgate-Operator`, as `--as` does on the CLI.
//!
//! The token is never logged, never echoed in an error, never stored.

use axum::http::HeaderMap;

use super::error::ApiError;
use crate::config::Secret;
use crate::consul::{self, Client, QueryOptions};
use crate::preflight::TokenInfo;
use crate::rollout::store::Store;

/// The header naming the operator when Consul's ACLs are off.
pub const OPERATOR_HEADER: &str = "x-rollgate-operator";

/// Where a request may carry its Consul token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// `X-Consul-Token: SECRET`, as Consul's own API takes it.
    ConsulHeader,
    /// `Authorization: Bearer SECRET`.
    Bearer,
}

/// The sources, in the order they are tried.
pub const SOURCES: [TokenSource; 2] = [TokenSource::ConsulHeader, TokenSource::Bearer];

impl TokenSource {
    /// The token this source finds in `headers`; `Err` when the source is
    /// there but malformed.
    fn find(self, headers: &HeaderMap) -> Result<Option<Secret>, ApiError> {
        let text = |name: &str| -> Result<Option<String>, ApiError> {
            match headers.get(name) {
                None => Ok(None),
                Some(v) => v.to_str().map(|s| Some(s.trim().to_string())).map_err(|_| {
                    ApiError::BadRequest(format!("the {name} header is not plain ASCII text"))
                }),
            }
        };
        let found = match self {
            TokenSource::ConsulHeader => text("x-consul-token")?,
            TokenSource::Bearer => match text("authorization")? {
                None => None,
                Some(v) => {
                    let (scheme, rest) = v.split_once(' ').unwrap_or((v.as_str(), ""));
                    if !scheme.eq_ignore_ascii_case("bearer") {
                        return Err(ApiError::BadRequest(
                            "the Authorization header must be `Bearer <Consul ACL token>`".into(),
                        ));
                    }
                    Some(rest.trim().to_string())
                }
            },
        };
        match found {
            Some(t) if t.is_empty() => Err(ApiError::Unauthenticated(
                "the Consul token is empty; send X-Consul-Token or Authorization: Bearer with \
                 your Consul ACL token"
                    .into(),
            )),
            Some(t) if !t.chars().all(|c| c.is_ascii_graphic()) => Err(ApiError::BadRequest(
                "the Consul token has characters a token cannot have".into(),
            )),
            Some(t) => Ok(Some(Secret::new(t))),
            None => Ok(None),
        }
    }
}

/// The token a request carries, from the first source that has one.
pub fn token(headers: &HeaderMap) -> Result<Option<Secret>, ApiError> {
    for source in SOURCES {
        if let Some(t) = source.find(headers)? {
            return Ok(Some(t));
        }
    }
    Ok(None)
}

/// An authenticated caller: who, and a store acting with their token.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Recorded in decisions and commands: `Description (AccessorID)`, or
    /// the `X-Rollgate-Operator` name with ACLs off.
    pub who: String,
    /// Whether Consul's ACLs are on.
    pub acls: bool,
    /// The records, read and written with the caller's token.
    pub store: Store,
}

impl Caller {
    /// Authenticates a request: `base` is the console's Consul client (its
    /// address and limits; its own token is replaced by the caller's).
    pub async fn authenticate(
        base: &Client,
        prefix: &str,
        headers: &HeaderMap,
    ) -> Result<Caller, ApiError> {
        let token = token(headers)?;
        Self::identify(base, prefix, token, Via::Headers, || operator_name(headers)).await
    }

    /// Asks Consul who `token` is (`GET /v1/acl/token/self`); with Consul's
    /// ACLs off, `operator` names the caller instead. `via` says how the
    /// caller gave the token, so a refusal tells them what to send.
    pub async fn identify(
        base: &Client,
        prefix: &str,
        token: Option<Secret>,
        via: Via,
        operator: impl FnOnce() -> Result<String, ApiError>,
    ) -> Result<Caller, ApiError> {
        let has_token = token.is_some();
        let client = base.clone().with_token(token).for_role("operator");
        let answer = client
            .read::<TokenInfo>("/v1/acl/token/self", &[], &QueryOptions::default())
            .await;
        let (who, acls) = match answer {
            Ok(r) => {
                let t = r.value;
                let name = if t.description.trim().is_empty() {
                    "token".to_string()
                } else {
                    t.description.trim().to_string()
                };
                (format!("{name} ({})", t.accessor_id), true)
            }
            Err(consul::Error::Status {
                status: 401, body, ..
            }) if body.contains("ACL support disabled") => (operator()?, false),
            Err(consul::Error::PermissionDenied { body, .. }) if body.contains("ACL not found") => {
                return Err(if has_token {
                    ApiError::Forbidden(
                        "Consul does not know this token (ACL not found): never created, deleted, \
                         or expired"
                            .into(),
                    )
                } else {
                    ApiError::Unauthenticated(match via {
                        Via::Headers => "no Consul token: send your Consul ACL token in \
                             X-Consul-Token or Authorization: Bearer (the operator policy, \
                             config/acl/operator.hcl, grants what the console's actions need)"
                            .into(),
                        Via::Form => "no Consul token: enter your Consul ACL token (the \
                             operator policy, config/acl/operator.hcl, grants what the \
                             console's actions need)"
                            .into(),
                    })
                });
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Caller {
            who,
            acls,
            store: Store::new(client, prefix),
        })
    }

    /// The caller of a page session, identified at login: no new question
    /// to Consul (every read and write still goes with the token, so a
    /// token deleted since is refused by Consul).
    pub fn resume(
        base: &Client,
        prefix: &str,
        token: Option<Secret>,
        who: &str,
        acls: bool,
    ) -> Self {
        let client = base.clone().with_token(token).for_role("operator");
        Caller {
            who: who.to_string(),
            acls,
            store: Store::new(client, prefix),
        }
    }
}

/// How the caller gave their token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The API's headers.
    Headers,
    /// The page's login form.
    Form,
}

/// Whether Consul's ACLs are on: `token/self` without a token answers
/// `401 ACL support disabled` when they are off.
pub async fn acls_enabled(base: &Client) -> Result<bool, ApiError> {
    let client = base.clone().with_token(None).for_role("operator");
    match client
        .read::<TokenInfo>("/v1/acl/token/self", &[], &QueryOptions::default())
        .await
    {
        Err(consul::Error::Status {
            status: 401, body, ..
        }) if body.contains("ACL support disabled") => Ok(false),
        Ok(_) | Err(consul::Error::PermissionDenied { .. }) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// Whether `name` may name an operator with ACLs off: letters, digits,
/// spaces, '.', '_', '@', '-'; at most 64.
pub fn valid_operator(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " ._@-".contains(c))
}

/// The operator's name with ACLs off.
fn operator_name(headers: &HeaderMap) -> Result<String, ApiError> {
    let missing = || {
        ApiError::Unauthenticated(
            "Consul's ACLs are off, so no token can say who you are: name yourself in the \
             X-Rollgate-Operator header (letters, digits, spaces, '.', '_', '@', '-'; at most 64)"
                .into(),
        )
    };
    let name = headers
        .get(OPERATOR_HEADER)
        .ok_or_else(missing)?
        .to_str()
        .map_err(|_| missing())?
        .trim()
        .to_string();
    if valid_operator(&name) {
        Ok(name)
    } else {
        Err(missing())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn the_token_comes_from_either_header_and_a_bad_one_is_named() {
        let mut h = HeaderMap::new();
        assert!(token(&h).unwrap().is_none());
        h.insert("authorization", HeaderValue::from_static("Bearer abc-1"));
        assert_eq!(token(&h).unwrap().unwrap().expose(), "abc-1");
        h.insert("x-consul-token", HeaderValue::from_static("def-2"));
        assert_eq!(token(&h).unwrap().unwrap().expose(), "def-2");
        let mut basic = HeaderMap::new();
        basic.insert("authorization", HeaderValue::from_static("Basic Zm9v"));
        let e = token(&basic).unwrap_err();
        assert!(e.to_string().contains("Bearer"), "{e}");
        assert!(!e.to_string().contains("Zm9v"), "never echoed: {e}");
    }

    #[test]
    fn with_acls_off_the_operator_names_themself() {
        let mut h = HeaderMap::new();
        assert!(operator_name(&h).is_err());
        h.insert(OPERATOR_HEADER, HeaderValue::from_static("alice"));
        assert_eq!(operator_name(&h).unwrap(), "alice");
        h.insert(OPERATOR_HEADER, HeaderValue::from_static("<script>"));
        assert!(operator_name(&h).is_err());
    }
}
