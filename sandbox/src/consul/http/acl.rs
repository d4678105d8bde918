//! `/v1/acl/*`: the ACL endpoints rollgate and its tests use, with
//! Consul's shapes and texts: `PUT /v1/acl/policy`, `GET
//! /v1/acl/policy/:id`, `GET /v1/acl/policy/name/:name`, `PUT
//! /v1/acl/token`, `GET /v1/acl/token/self`, `GET|DELETE
//! /v1/acl/token/:accessor`.
//!
//! Managing ACLs needs `acl:write`, reading them `acl:read`;
//! `token/self` needs only a valid token (none sent: `403 ACL not found`,
//! as Consul finds no token by an empty secret). Validation failures answer 500
//! with Consul's text, as Consul's RPC errors do. With ACLs off every one
//! answers `401 ACL support disabled`. Answers carry the SecretID only
//! where Consul does (token create, read and self); nothing here logs it.

use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::time::SystemTime;

use axum::body::Body;
use axum::http::{Method, Response, StatusCode};
use base64::Engine as _;
use serde_json::{Value, json};

use super::super::acl::{
    ANONYMOUS_ACCESSOR, AclState, Global, Level, Policy, Rules, TOKEN_MAX_EXPIRATION,
    TOKEN_MIN_EXPIRATION, Token,
};
use super::super::duration;
use super::super::registration::field;
use super::super::session::new_uuid;
use super::{ApiError, Ctx, allow, json as json_resp};

/// Routes `/v1/acl/<tail>`; `None` when unknown.
pub(crate) fn route(
    ctx: &Ctx<'_>,
    tail: &[&str],
    get: bool,
    put: bool,
) -> Option<Result<Response<Body>, ApiError>> {
    if !ctx.cluster.acl.enabled() {
        return Some(Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "ACL support disabled",
        )));
    }
    let delete = *ctx.method == Method::DELETE;
    let result = match tail {
        ["policy"] => allow(ctx, put, "PUT").and_then(|()| policy_create(ctx)),
        ["policy", "name", name] => allow(ctx, get, "GET")
            .and_then(|()| policy_read(ctx, |s| s.policy_by_name(name).cloned())),
        ["policy", id] => {
            allow(ctx, get, "GET").and_then(|()| policy_read(ctx, |s| s.policies.get(*id).cloned()))
        }
        ["token"] => allow(ctx, put, "PUT").and_then(|()| token_create(ctx)),
        ["token", "self"] => allow(ctx, get, "GET").and_then(|()| token_self(ctx)),
        ["token", accessor] if delete => token_delete(ctx, accessor),
        ["token", accessor] => {
            allow(ctx, get, "GET,DELETE").and_then(|()| token_read(ctx, accessor))
        }
        _ => return None,
    };
    Some(result)
}

fn invalid(text: impl Into<String>) -> ApiError {
    ApiError::internal(text)
}

fn hash_of(parts: &[&str]) -> String {
    let mut hasher = DefaultHasher::new();
    parts.hash(&mut hasher);
    base64::engine::general_purpose::STANDARD.encode(hasher.finish().to_be_bytes())
}

fn policy_json(p: &Policy) -> Value {
    json!({
        "ID": p.id,
        "Name": p.name,
        "Description": p.description,
        "Rules": p.rules_text,
        "Datacenters": null,
        "Hash": hash_of(&[&p.name, &p.description, &p.rules_text]),
        "CreateIndex": p.create_index,
        "ModifyIndex": p.modify_index,
    })
}

fn token_json(state: &AclState, t: &Token) -> Value {
    let policies: Vec<Value> = t
        .policies
        .iter()
        .map(|id| {
            let name = state
                .policies
                .get(id)
                .map(|p| p.name.clone())
                .unwrap_or_default();
            json!({ "ID": id, "Name": name })
        })
        .collect();
    let mut out = json!({
        "AccessorID": t.accessor,
        "SecretID": t.secret,
        "Description": t.description,
        "Policies": policies,
        "Local": false,
        "CreateTime": humantime::format_rfc3339_nanos(t.create_time).to_string(),
        "Hash": hash_of(&[&t.accessor, &t.description, &t.policies.join(",")]),
        "CreateIndex": t.create_index,
        "ModifyIndex": t.modify_index,
    });
    if let (Some(expires), Some(obj)) = (t.expiration, out.as_object_mut()) {
        obj.insert(
            "ExpirationTime".into(),
            json!(humantime::format_rfc3339_nanos(expires).to_string()),
        );
    }
    out
}

/// A fresh raft index for an ACL write.
fn next_index(ctx: &Ctx<'_>) -> u64 {
    let mut store = ctx.cluster.store();
    let idx = store.next_index();
    store.publish();
    idx
}

/// The JSON body; `what` names it in Consul's decode error
/// (`Token decoding failed: ...`).
fn body_value(ctx: &Ctx<'_>, what: &str) -> Result<Value, ApiError> {
    if ctx.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let body: Value = serde_json::from_slice(&ctx.body)
        .map_err(|e| ApiError::bad_request(format!("{what} decoding failed: {e}")))?;
    if body.is_object() {
        Ok(body)
    } else {
        Err(ApiError::bad_request(format!(
            "{what} decoding failed: expected a JSON object"
        )))
    }
}

fn text_field(body: &Value, name: &str) -> Result<String, ApiError> {
    match field(body, name) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ApiError::bad_request(format!(
            "Request decode failed: {name}: expected a string"
        ))),
    }
}

fn valid_policy_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn policy_create(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    ctx.authz.check_global(Global::Acl, Level::Write)?;
    let body = body_value(ctx, "Policy")?;
    let name = text_field(&body, "Name")?;
    let description = text_field(&body, "Description")?;
    let rules_text = text_field(&body, "Rules")?;
    if !text_field(&body, "ID")?.is_empty() {
        return Err(invalid(
            "Invalid Policy: ID must be empty to create a policy",
        ));
    }
    if !valid_policy_name(&name) {
        return Err(invalid(
            "Invalid Policy: invalid Name. Only alphanumeric characters, '-' and '_' are allowed",
        ));
    }
    let rules = Rules::parse(&rules_text).map_err(invalid)?;
    if ctx.cluster.acl.state().policy_by_name(&name).is_some() {
        return Err(invalid(format!(
            "Invalid Policy: A Policy with Name {name:?} already exists"
        )));
    }
    let idx = next_index(ctx);
    let policy = Policy {
        id: new_uuid(),
        name,
        description,
        rules_text,
        rules,
        create_index: idx,
        modify_index: idx,
    };
    let answer = policy_json(&policy);
    let mut state = ctx.cluster.acl.state();
    // A concurrent create of the same name may have won meanwhile.
    if state.policy_by_name(&policy.name).is_some() {
        return Err(invalid(format!(
            "Invalid Policy: A Policy with Name {:?} already exists",
            policy.name
        )));
    }
    tracing::info!(policy = %policy.name, "ACL policy created.");
    state.policies.insert(policy.id.clone(), policy);
    Ok(json_resp(&answer))
}

fn policy_read(
    ctx: &Ctx<'_>,
    find: impl FnOnce(&AclState) -> Option<Policy>,
) -> Result<Response<Body>, ApiError> {
    ctx.authz.check_global(Global::Acl, Level::Read)?;
    let policy = find(&ctx.cluster.acl.state())
        .ok_or_else(|| ApiError::not_found("Requested policy does not exist: ACL not found"))?;
    Ok(json_resp(&policy_json(&policy)))
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

fn expiration(body: &Value, created: SystemTime) -> Result<Option<SystemTime>, ApiError> {
    let ttl = text_field(body, "ExpirationTTL")?;
    let time = text_field(body, "ExpirationTime")?;
    let at = match (ttl.is_empty(), time.is_empty()) {
        (true, true) => return Ok(None),
        (false, false) => {
            return Err(invalid(
                "Token Expiration TTL and Expiration Time cannot both be set",
            ));
        }
        (false, true) => {
            let ttl = duration::parse(&ttl).map_err(|e| {
                ApiError::bad_request(format!("Request decode failed: ExpirationTTL: {e}"))
            })?;
            created + ttl
        }
        (true, false) => humantime::parse_rfc3339_weak(&time).map_err(|e| {
            ApiError::bad_request(format!("Request decode failed: ExpirationTime: {e}"))
        })?,
    };
    let expires_in = at
        .duration_since(created)
        .map_err(|_| invalid("ExpirationTime cannot be before CreateTime"))?;
    if expires_in > TOKEN_MAX_EXPIRATION {
        return Err(invalid(format!(
            "ExpirationTime cannot be more than {} in the future (was {})",
            duration::format(TOKEN_MAX_EXPIRATION),
            duration::format(expires_in)
        )));
    }
    if expires_in < TOKEN_MIN_EXPIRATION {
        return Err(invalid(format!(
            "ExpirationTime cannot be less than {} in the future (was {})",
            duration::format(TOKEN_MIN_EXPIRATION),
            duration::format(expires_in)
        )));
    }
    Ok(Some(at))
}

fn token_create(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    ctx.authz.check_global(Global::Acl, Level::Write)?;
    let body = body_value(ctx, "Token")?;
    let description = text_field(&body, "Description")?;
    let mut accessor = text_field(&body, "AccessorID")?;
    let mut secret = text_field(&body, "SecretID")?;
    let created = SystemTime::now();
    let expires = expiration(&body, created)?;
    let links: Vec<(String, String)> = match field(&body, "Policies") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|p| Ok((text_field(p, "ID")?, text_field(p, "Name")?)))
            .collect::<Result<_, ApiError>>()?,
        Some(_) => {
            return Err(ApiError::bad_request(
                "Request decode failed: Policies: expected an array",
            ));
        }
    };
    let idx = next_index(ctx);
    let mut state = ctx.cluster.acl.state();
    let in_use = |state: &AclState, id: &str| {
        state.tokens.contains_key(id) || state.token_by_accessor(id).is_some()
    };
    if accessor.is_empty() {
        accessor = new_uuid();
    } else if !is_uuid(&accessor) {
        return Err(invalid("Invalid Token: AccessorID is not a valid UUID"));
    } else if in_use(&state, &accessor) {
        return Err(invalid("Invalid Token: AccessorID is already in use"));
    }
    if secret.is_empty() {
        secret = new_uuid();
    } else if !is_uuid(&secret) {
        return Err(invalid("Invalid Token: SecretID is not a valid UUID"));
    } else if in_use(&state, &secret) {
        return Err(invalid("Invalid Token: SecretID is already in use"));
    }
    let mut policies: Vec<String> = Vec::new();
    for (id, name) in links {
        let id = if id.is_empty() {
            state
                .policy_by_name(&name)
                .map(|p| p.id.clone())
                .ok_or_else(|| invalid(format!("No such ACL policy with name {name:?}")))?
        } else if state.policies.contains_key(&id) {
            id
        } else {
            return Err(invalid(format!("No such ACL policy with ID {id:?}")));
        };
        if !policies.contains(&id) {
            policies.push(id);
        }
    }
    let token = Token {
        accessor,
        secret,
        description,
        policies,
        create_time: created,
        expiration: expires,
        create_index: idx,
        modify_index: idx,
    };
    let answer = token_json(&state, &token);
    tracing::info!(accessor = %token.accessor, "ACL token created.");
    state.tokens.insert(token.secret.clone(), token);
    Ok(json_resp(&answer))
}

fn token_self(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    let state = ctx.cluster.acl.state();
    // Consul reads the token by the secret sent; no token sent finds none.
    if ctx.authz.accessor() == ANONYMOUS_ACCESSOR {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "ACL not found"));
    }
    // The dispatcher already refused an unknown token; look it up again
    // by accessor so this answer never depends on the secret it was sent.
    let token = state
        .token_by_accessor(ctx.authz.accessor())
        .ok_or_else(|| ApiError::new(StatusCode::FORBIDDEN, "ACL not found"))?;
    Ok(json_resp(&token_json(&state, token)))
}

fn token_read(ctx: &Ctx<'_>, accessor: &str) -> Result<Response<Body>, ApiError> {
    ctx.authz.check_global(Global::Acl, Level::Read)?;
    let state = ctx.cluster.acl.state();
    let token = state
        .token_by_accessor(accessor)
        .ok_or_else(|| ApiError::not_found("Requested token does not exist: ACL not found"))?;
    Ok(json_resp(&token_json(&state, token)))
}

fn token_delete(ctx: &Ctx<'_>, accessor: &str) -> Result<Response<Body>, ApiError> {
    ctx.authz.check_global(Global::Acl, Level::Write)?;
    if !is_uuid(accessor) {
        return Err(invalid("Accessor ID is missing or an invalid UUID"));
    }
    if accessor == ANONYMOUS_ACCESSOR {
        return Err(invalid(
            "Delete operation not permitted on the anonymous token",
        ));
    }
    if accessor == ctx.authz.accessor() {
        return Err(invalid(
            "Deletion of the request's authorization token is not permitted",
        ));
    }
    let found = {
        let state = ctx.cluster.acl.state();
        state
            .tokens
            .iter()
            .find(|(_, t)| t.accessor == accessor)
            .map(|(k, _)| k.clone())
    };
    if let Some(secret) = found {
        next_index(ctx);
        ctx.cluster.acl.state().tokens.remove(&secret);
        tracing::info!(accessor, "ACL token deleted.");
    }
    Ok(json_resp(&Value::Bool(true)))
}
