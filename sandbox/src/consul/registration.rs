//! Parses and validates `PUT /v1/agent/service/register` bodies the way a
//! Consul agent does, with its 400 texts.
//!
//! Field names match case-insensitively and with or without underscores
//! (`DeregisterCriticalServiceAfter`, `deregister_critical_service_after`),
//! as Consul's decoder accepts both; durations may be Go strings or
//! nanosecond numbers. Meta keys follow Consul's rules (letters, digits,
//! `_` and `-`, at most 128 characters, no `consul-` prefix, at most 64
//! pairs, values at most 512 characters). Script, gRPC, UDP, H2PING and
//! alias checks are refused: this sandbox cannot run them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::checks::{DEFAULT_TIMEOUT, MIN_INTERVAL};
use super::duration;
use super::http::ApiError;
use super::model::{CheckDef, CheckKind, ServiceDef, Status, TaggedAddress};

/// Consul's limit on check output kept (`OutputMaxSize` default).
const OUTPUT_MAX: usize = 4096;

fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Looks a field of a JSON object up as Consul's decoder would.
pub(crate) fn field<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    let wanted = normalize(name);
    value
        .as_object()?
        .iter()
        .find(|(k, _)| normalize(k) == wanted)
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

fn decode_failed(what: &str) -> ApiError {
    ApiError::bad_request(format!("Request decode failed: {what}"))
}

fn string(value: &Value, name: &str) -> Result<String, ApiError> {
    match field(value, name) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(decode_failed(&format!("{name}: expected a string"))),
    }
}

fn boolean(value: &Value, name: &str) -> Result<bool, ApiError> {
    match field(value, name) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(decode_failed(&format!("{name}: expected a boolean"))),
    }
}

fn string_map(value: &Value, name: &str) -> Result<BTreeMap<String, String>, ApiError> {
    match field(value, name) {
        None => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(decode_failed(&format!("{name}.{k}: expected a string"))),
            })
            .collect(),
        Some(_) => Err(decode_failed(&format!("{name}: expected an object"))),
    }
}

fn duration_field(value: &Value, name: &str) -> Result<Option<Duration>, ApiError> {
    match field(value, name) {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => duration::parse(s)
            .map(Some)
            .map_err(|e| decode_failed(&format!("error decoding '{name}': {e}"))),
        Some(Value::Number(n)) => Ok(n
            .as_u64()
            .map(Duration::from_nanos)
            .filter(|d| !d.is_zero())),
        Some(_) => Err(decode_failed(&format!("{name}: expected a duration"))),
    }
}

fn port(value: &Value, name: &str) -> Result<u16, ApiError> {
    match field(value, name) {
        None => Ok(0),
        Some(v) => v
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| decode_failed(&format!("{name}: expected a port number"))),
    }
}

/// Consul's `validateMetadata` for service Meta.
fn validate_meta(meta: &BTreeMap<String, String>) -> Result<(), String> {
    if meta.len() > 64 {
        return Err("Node metadata cannot contain more than 64 key/value pairs".to_string());
    }
    for (key, value) in meta {
        let problem = if key.is_empty() {
            Some("Key cannot be blank".to_string())
        } else if !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            Some("Key contains invalid characters".to_string())
        } else if key.len() > 128 {
            Some("Key is too long (limit: 128 characters)".to_string())
        } else if key.starts_with("consul-") {
            Some("Key prefix 'consul-' is reserved for internal use".to_string())
        } else if value.len() > 512 {
            Some("Value is too long (limit: 512 characters)".to_string())
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(format!(
                "Couldn't load metadata pair ('{key}', '{value}'): {problem}"
            ));
        }
    }
    Ok(())
}

/// Cuts check output as Consul does.
pub(crate) fn truncate_output(output: &str) -> String {
    if output.len() <= OUTPUT_MAX {
        return output.to_string();
    }
    let mut cut = OUTPUT_MAX;
    while !output.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{} ... (captured {OUTPUT_MAX} of {} bytes)",
        &output[..cut],
        output.len()
    )
}

fn check(value: &Value, service: &ServiceDef, id_default: String) -> Result<CheckDef, ApiError> {
    let invalid = |m: &str| ApiError::bad_request(format!("Invalid check: {m}"));
    let http = string(value, "HTTP")?;
    let tcp = string(value, "TCP")?;
    let ttl = duration_field(value, "TTL")?;
    let interval = duration_field(value, "Interval")?;
    let timeout = duration_field(value, "Timeout")?.unwrap_or(DEFAULT_TIMEOUT);
    let unsupported = [
        "Args",
        "ScriptArgs",
        "GRPC",
        "UDP",
        "H2PING",
        "OSService",
        "DockerContainerID",
        "AliasNode",
        "AliasService",
    ];
    if let Some(name) = unsupported.iter().find(|n| field(value, n).is_some()) {
        return Err(invalid(&format!(
            "{name} checks are not supported by this sandbox"
        )));
    }
    let interval_check = !http.is_empty() || !tcp.is_empty();
    if interval.is_some() && ttl.is_some() {
        return Err(invalid("Interval and TTL cannot both be specified"));
    }
    let kind = match (interval_check, interval, ttl) {
        (true, None, _) => {
            return Err(invalid(
                "Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks",
            ));
        }
        (true, Some(interval), _) if !http.is_empty() => {
            let header = match field(value, "Header") {
                None => BTreeMap::new(),
                Some(h) => serde_json::from_value(h.clone())
                    .map_err(|e| decode_failed(&format!("Header: {e}")))?,
            };
            CheckKind::Http {
                url: http,
                method: string(value, "Method")?,
                header,
                tls_skip_verify: boolean(value, "TLSSkipVerify")?,
                interval: interval.max(MIN_INTERVAL),
                timeout,
            }
        }
        (true, Some(interval), _) => CheckKind::Tcp {
            address: tcp,
            interval: interval.max(MIN_INTERVAL),
            timeout,
        },
        (false, _, Some(ttl)) => CheckKind::Ttl(ttl),
        (false, _, None) => return Err(invalid("TTL must be > 0 for TTL checks")),
    };
    let status = string(value, "Status")?;
    let initial_status = if status.is_empty() {
        None
    } else {
        Some(Status::parse(&status).ok_or_else(|| {
            ApiError::bad_request("Status for checks must 'passing', 'warning', 'critical'")
        })?)
    };
    let mut id = string(value, "CheckID")?;
    if id.is_empty() {
        id = string(value, "ID")?;
    }
    if id.is_empty() {
        id = id_default;
    }
    let mut name = string(value, "Name")?;
    if name.is_empty() {
        name = format!("Service '{}' check", service.name);
    }
    Ok(CheckDef {
        id,
        name,
        notes: string(value, "Notes")?,
        service_id: service.id.clone(),
        kind,
        deregister_after: duration_field(value, "DeregisterCriticalServiceAfter")?,
        initial_status,
    })
}

/// Parses a registration body into the service and its checks.
pub(crate) fn parse(body: &[u8]) -> Result<(ServiceDef, Vec<CheckDef>), ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| decode_failed(&e.to_string()))?;
    parse_value(&value)
}

/// Parses a registration already decoded as JSON.
pub(crate) fn parse_value(value: &Value) -> Result<(ServiceDef, Vec<CheckDef>), ApiError> {
    if !value.is_object() {
        return Err(decode_failed("expected a JSON object"));
    }
    let name = string(value, "Name")?;
    if name.is_empty() {
        return Err(ApiError::bad_request("Missing service name"));
    }
    let address = string(value, "Address")?;
    if ["0.0.0.0", "::", "[::]"].contains(&address.as_str()) {
        return Err(ApiError::bad_request("Invalid service address"));
    }
    let mut id = string(value, "ID")?;
    if id.is_empty() {
        id = name.clone();
    }
    let tags = match field(value, "Tags") {
        None => Vec::new(),
        Some(t) => {
            serde_json::from_value(t.clone()).map_err(|e| decode_failed(&format!("Tags: {e}")))?
        }
    };
    let weights = match field(value, "Weights") {
        None => (1, 1),
        Some(w) => {
            let get = |n: &str| field(w, n).and_then(Value::as_i64).unwrap_or(0);
            let (passing, warning) = (get("Passing"), get("Warning"));
            if passing < 1 {
                return Err(ApiError::bad_request(
                    "Invalid Weights: Passing must be greater than 0",
                ));
            }
            (passing, warning)
        }
    };
    let mut tagged_addresses = BTreeMap::new();
    if let Some(Value::Object(map)) = field(value, "TaggedAddresses") {
        for (tag, addr) in map {
            tagged_addresses.insert(
                tag.clone(),
                TaggedAddress {
                    address: string(addr, "Address")?,
                    port: port(addr, "Port")?,
                },
            );
        }
    }
    let meta = string_map(value, "Meta")?;
    validate_meta(&meta)
        .map_err(|e| ApiError::bad_request(format!("Invalid Service Meta: {e}")))?;
    let service = ServiceDef {
        id,
        name,
        tags,
        address,
        port: port(value, "Port")?,
        meta,
        enable_tag_override: boolean(value, "EnableTagOverride")?,
        tagged_addresses,
        weights,
    };
    let mut raw_checks: Vec<&Value> = Vec::new();
    if let Some(c) = field(value, "Check").filter(|c| c.as_object().is_some_and(|o| !o.is_empty()))
    {
        raw_checks.push(c);
    }
    match field(value, "Checks") {
        None => {}
        Some(Value::Array(list)) => raw_checks.extend(list.iter()),
        Some(_) => return Err(decode_failed("Checks: expected an array")),
    }
    let many = raw_checks.len() > 1;
    let checks = raw_checks
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let default_id = if many {
                format!("service:{}:{}", service.id, i + 1)
            } else {
                format!("service:{}", service.id)
            };
            check(c, &service, default_id)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((service, checks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_rules_match_consul() {
        let ok: BTreeMap<String, String> = [("instance_id".to_string(), "i-1".to_string())].into();
        assert!(validate_meta(&ok).is_ok());
        let bad: BTreeMap<String, String> = [("consul-x".to_string(), "v".to_string())].into();
        assert_eq!(
            validate_meta(&bad),
            Err("Couldn't load metadata pair ('consul-x', 'v'): Key prefix 'consul-' is reserved for internal use".into())
        );
        let bad: BTreeMap<String, String> = [("a.b".to_string(), "v".to_string())].into();
        assert!(validate_meta(&bad).is_err_and(|e| e.ends_with("Key contains invalid characters")));
        let many: BTreeMap<String, String> =
            (0..65).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(validate_meta(&many).is_err());
    }

    #[test]
    fn parses_a_registration() {
        let body = br#"{"ID":"web-1","Name":"web","Port":8080,"Meta":{"instance_id":"i-1"},
            "Checks":[{"CheckID":"web-ttl","TTL":"10s"},{"HTTP":"http://127.0.0.1:1/","Interval":"100ms"}]}"#;
        let (service, checks) = parse(body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(service.id, "web-1");
        assert_eq!(checks.len(), 2);
        assert_eq!(checks[0].id, "web-ttl");
        assert_eq!(checks[1].id, "service:web-1:2");
        assert!(
            matches!(checks[1].kind, CheckKind::Http { interval, .. } if interval == MIN_INTERVAL)
        );
    }
}
