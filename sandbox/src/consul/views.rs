//! Renders stored records as the JSON Consul sends, field for field.
//!
//! Field names, nesting, `null` versus empty, and omitted-when-empty fields
//! follow Consul's Go structs (`structs.HealthCheck`, `structs.NodeService`,
//! `api.AgentService`, `structs.DirEntry`, `structs.Session`). Enterprise-only
//! fields (`Namespace`, `Partition`) are left out, as a Consul CE agent does.
//! This module must never invent fields Consul does not send: a client that
//! read one would break against a real agent.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::duration;
use super::model::{CheckKind, CheckRecord, KvEntry, NodeRecord, ServiceRecord, SessionRecord};

/// A node as in `/v1/catalog/nodes` and the `Node` of `/v1/health/service`.
pub(crate) fn node(node: &NodeRecord, datacenter: &str) -> Value {
    json!({
        "ID": node.id,
        "Node": node.name,
        "Address": node.address,
        "Datacenter": datacenter,
        "TaggedAddresses": tagged_node_addresses(&node.address),
        "Meta": node.meta,
        "CreateIndex": node.create_index,
        "ModifyIndex": node.modify_index,
    })
}

fn tagged_node_addresses(address: &str) -> Value {
    json!({ "lan": address, "lan_ipv4": address, "wan": address, "wan_ipv4": address })
}

fn weights(service: &ServiceRecord) -> Value {
    json!({ "Passing": service.def.weights.0, "Warning": service.def.weights.1 })
}

fn service_tagged_addresses(service: &ServiceRecord) -> Option<Value> {
    if service.def.tagged_addresses.is_empty() {
        return None;
    }
    let map: Map<String, Value> = service
        .def
        .tagged_addresses
        .iter()
        .map(|(k, v)| (k.clone(), json!({ "Address": v.address, "Port": v.port })))
        .collect();
    Some(Value::Object(map))
}

/// A service as the agent reports it (`/v1/agent/services`, `/v1/agent/service/:id`).
pub(crate) fn agent_service(service: &ServiceRecord, datacenter: &str) -> Value {
    let mut value = json!({
        "ID": service.def.id,
        "Service": service.def.name,
        "Tags": service.def.tags,
        "Meta": service.def.meta,
        "Port": service.def.port,
        "Address": service.def.address,
        "Weights": weights(service),
        "EnableTagOverride": service.def.enable_tag_override,
        "Datacenter": datacenter,
    });
    if let (Some(tagged), Some(obj)) = (service_tagged_addresses(service), value.as_object_mut()) {
        obj.insert("TaggedAddresses".into(), tagged);
    }
    value
}

/// The `Service` of `/v1/health/service` entries (Consul's `NodeService`).
pub(crate) fn node_service(service: &ServiceRecord) -> Value {
    let mut value = json!({
        "ID": service.def.id,
        "Service": service.def.name,
        "Tags": service.def.tags,
        "Address": service.def.address,
        "Meta": service.def.meta,
        "Weights": weights(service),
        "EnableTagOverride": service.def.enable_tag_override,
        "Proxy": { "Mode": "", "MeshGateway": {}, "Expose": {} },
        "Connect": {},
        "PeerName": "",
        "CreateIndex": service.create_index,
        "ModifyIndex": service.modify_index,
    });
    if let Some(obj) = value.as_object_mut() {
        // Port is `omitempty` in Consul's NodeService.
        if service.def.port != 0 {
            obj.insert("Port".into(), json!(service.def.port));
        }
        if let Some(tagged) = service_tagged_addresses(service) {
            obj.insert("TaggedAddresses".into(), tagged);
        }
    }
    value
}

/// An entry of `/v1/catalog/service/:service` (Consul's `ServiceNode`).
pub(crate) fn catalog_service(
    node: &NodeRecord,
    service: &ServiceRecord,
    datacenter: &str,
) -> Value {
    let mut value = json!({
        "ID": node.id,
        "Node": node.name,
        "Address": node.address,
        "Datacenter": datacenter,
        "TaggedAddresses": tagged_node_addresses(&node.address),
        "NodeMeta": node.meta,
        "ServiceKind": "",
        "ServiceID": service.def.id,
        "ServiceName": service.def.name,
        "ServiceTags": service.def.tags,
        "ServiceAddress": service.def.address,
        "ServiceWeights": weights(service),
        "ServiceMeta": service.def.meta,
        "ServicePort": service.def.port,
        "ServiceSocketPath": "",
        "ServiceEnableTagOverride": service.def.enable_tag_override,
        "ServiceProxy": { "Mode": "", "MeshGateway": {}, "Expose": {} },
        "ServiceConnect": {},
        "CreateIndex": service.create_index,
        "ModifyIndex": service.modify_index,
    });
    if let (Some(tagged), Some(obj)) = (service_tagged_addresses(service), value.as_object_mut()) {
        obj.insert("ServiceTaggedAddresses".into(), tagged);
    }
    value
}

/// A check as in `/v1/health/*` and `/v1/agent/checks` (Consul's `HealthCheck`).
pub(crate) fn check(check: &CheckRecord) -> Value {
    let (interval, timeout) = match &check.def.kind {
        CheckKind::Http {
            interval, timeout, ..
        }
        | CheckKind::Tcp {
            interval, timeout, ..
        } => (duration::format(*interval), duration::format(*timeout)),
        _ => (String::new(), String::new()),
    };
    json!({
        "Node": check.node,
        "CheckID": check.def.id,
        "Name": check.def.name,
        "Status": check.status.as_str(),
        "Notes": check.def.notes,
        "Output": check.output,
        "ServiceID": check.def.service_id,
        "ServiceName": check.service_name,
        "ServiceTags": check.service_tags,
        "Type": check.def.kind.type_name(),
        "Interval": interval,
        "Timeout": timeout,
        "ExposedPort": 0,
        "Definition": check_definition(check),
        "CreateIndex": check.create_index,
        "ModifyIndex": check.modify_index,
    })
}

/// Consul's `HealthCheckDefinition`, whose fields are all `omitempty`.
fn check_definition(check: &CheckRecord) -> Value {
    let mut def = Map::new();
    match &check.def.kind {
        CheckKind::Http {
            url,
            method,
            header,
            tls_skip_verify,
            interval,
            timeout,
        } => {
            def.insert("HTTP".into(), json!(url));
            if !method.is_empty() {
                def.insert("Method".into(), json!(method));
            }
            if !header.is_empty() {
                def.insert("Header".into(), json!(header));
            }
            if *tls_skip_verify {
                def.insert("TLSSkipVerify".into(), json!(true));
            }
            def.insert("Interval".into(), json!(duration::format(*interval)));
            def.insert("Timeout".into(), json!(duration::format(*timeout)));
        }
        CheckKind::Tcp {
            address,
            interval,
            timeout,
        } => {
            def.insert("TCP".into(), json!(address));
            def.insert("Interval".into(), json!(duration::format(*interval)));
            def.insert("Timeout".into(), json!(duration::format(*timeout)));
        }
        CheckKind::Ttl(ttl) => {
            def.insert("TTL".into(), json!(duration::format(*ttl)));
        }
        CheckKind::Serf | CheckKind::Maintenance => {}
    }
    if let Some(after) = check.def.deregister_after {
        def.insert(
            "DeregisterCriticalServiceAfter".into(),
            json!(duration::format(after)),
        );
    }
    Value::Object(def)
}

/// A KV entry (Consul's `DirEntry`); `Value` is base64, or `null` when empty.
pub(crate) fn kv_entry(entry: &KvEntry) -> Value {
    let value = if entry.value.is_empty() {
        Value::Null
    } else {
        json!(base64::engine::general_purpose::STANDARD.encode(&entry.value))
    };
    let mut out = json!({
        "LockIndex": entry.lock_index,
        "Key": entry.key,
        "Flags": entry.flags,
        "Value": value,
        "CreateIndex": entry.create_index,
        "ModifyIndex": entry.modify_index,
    });
    // `Session` is `omitempty` in Consul's DirEntry.
    if let (Some(session), Some(obj)) = (&entry.session, out.as_object_mut()) {
        obj.insert("Session".into(), json!(session));
    }
    out
}

/// A session (Consul's `Session`); `LockDelay` in nanoseconds.
pub(crate) fn session(session: &SessionRecord) -> Value {
    let service_checks = session.service_checks.as_ref().map(|ids| {
        ids.iter()
            .map(|id| json!({ "ID": id, "Namespace": "" }))
            .collect::<Vec<_>>()
    });
    let mut out = json!({
        "ID": session.id,
        "Name": session.name,
        "Node": session.node,
        "LockDelay": u64::try_from(session.lock_delay.as_nanos()).unwrap_or(u64::MAX),
        "Behavior": session.behavior.as_str(),
        "TTL": session.ttl,
        "NodeChecks": session.node_checks,
        "ServiceChecks": service_checks,
        "CreateIndex": session.create_index,
        "ModifyIndex": session.modify_index,
    });
    if let (Some(checks), Some(obj)) = (&session.legacy_checks, out.as_object_mut()) {
        obj.insert("Checks".into(), json!(checks));
    }
    out
}
