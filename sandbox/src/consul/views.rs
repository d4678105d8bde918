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
    serde_json::to_value(CheckView::of(check)).unwrap_or(Value::Null)
}

/// A check as its own agent reports it (`/v1/agent/checks`): with the
/// output the agent holds, which may be newer than the catalog's.
pub(crate) fn agent_check(check: &CheckRecord) -> Value {
    let mut view = CheckView::of(check);
    view.output = check.agent_output();
    serde_json::to_value(view).unwrap_or(Value::Null)
}

/// Checks rendered straight to JSON text, without building [`Value`]s
/// (the big, unfiltered answers such as `/v1/health/state/any`).
pub(crate) fn checks_json<'a>(checks: impl Iterator<Item = &'a CheckRecord>) -> String {
    let views: Vec<CheckView<'a>> = checks.map(CheckView::of).collect();
    serde_json::to_string(&views).unwrap_or_else(|_| "[]".to_string())
}

/// Consul's `HealthCheck`, borrowed from a record, in Consul's field order.
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CheckView<'a> {
    node: &'a str,
    #[serde(rename = "CheckID")]
    check_id: &'a str,
    name: &'a str,
    status: &'static str,
    notes: &'a str,
    output: &'a str,
    #[serde(rename = "ServiceID")]
    service_id: &'a str,
    service_name: &'a str,
    service_tags: &'a [String],
    #[serde(rename = "Type")]
    kind: &'static str,
    interval: String,
    timeout: String,
    exposed_port: u16,
    definition: DefinitionView<'a>,
    create_index: u64,
    modify_index: u64,
}

impl<'a> CheckView<'a> {
    /// The view of `check`.
    pub(crate) fn of(check: &'a CheckRecord) -> Self {
        let (interval, timeout) = match &check.def.kind {
            CheckKind::Http {
                interval, timeout, ..
            }
            | CheckKind::Tcp {
                interval, timeout, ..
            } => (duration::format(*interval), duration::format(*timeout)),
            _ => (String::new(), String::new()),
        };
        CheckView {
            node: &check.node,
            check_id: &check.def.id,
            name: &check.def.name,
            status: check.status.as_str(),
            notes: &check.def.notes,
            output: &check.output,
            service_id: &check.def.service_id,
            service_name: &check.service_name,
            service_tags: &check.service_tags,
            kind: check.def.kind.type_name(),
            interval,
            timeout,
            exposed_port: 0,
            definition: DefinitionView::of(check),
            create_index: check.create_index,
            modify_index: check.modify_index,
        }
    }
}

/// Consul's `HealthCheckDefinition`, whose fields are all `omitempty`.
#[derive(serde::Serialize)]
struct DefinitionView<'a> {
    #[serde(rename = "HTTP", skip_serializing_if = "Option::is_none")]
    http: Option<&'a str>,
    #[serde(rename = "Method", skip_serializing_if = "Option::is_none")]
    method: Option<&'a str>,
    #[serde(rename = "Header", skip_serializing_if = "Option::is_none")]
    header: Option<&'a std::collections::BTreeMap<String, Vec<String>>>,
    #[serde(rename = "TLSSkipVerify", skip_serializing_if = "Option::is_none")]
    tls_skip_verify: Option<bool>,
    #[serde(rename = "TCP", skip_serializing_if = "Option::is_none")]
    tcp: Option<&'a str>,
    #[serde(rename = "TTL", skip_serializing_if = "Option::is_none")]
    ttl: Option<String>,
    #[serde(rename = "Interval", skip_serializing_if = "Option::is_none")]
    interval: Option<String>,
    #[serde(rename = "Timeout", skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
    #[serde(
        rename = "DeregisterCriticalServiceAfter",
        skip_serializing_if = "Option::is_none"
    )]
    deregister_after: Option<String>,
}

impl<'a> DefinitionView<'a> {
    fn of(check: &'a CheckRecord) -> Self {
        let mut def = DefinitionView {
            http: None,
            method: None,
            header: None,
            tls_skip_verify: None,
            tcp: None,
            ttl: None,
            interval: None,
            timeout: None,
            deregister_after: check.def.deregister_after.map(duration::format),
        };
        match &check.def.kind {
            CheckKind::Http {
                url,
                method,
                header,
                tls_skip_verify,
                interval,
                timeout,
            } => {
                def.http = Some(url);
                def.method = (!method.is_empty()).then_some(method.as_str());
                def.header = (!header.is_empty()).then_some(header);
                def.tls_skip_verify = tls_skip_verify.then_some(true);
                def.interval = Some(duration::format(*interval));
                def.timeout = Some(duration::format(*timeout));
            }
            CheckKind::Tcp {
                address,
                interval,
                timeout,
            } => {
                def.tcp = Some(address);
                def.interval = Some(duration::format(*interval));
                def.timeout = Some(duration::format(*timeout));
            }
            CheckKind::Ttl(ttl) => def.ttl = Some(duration::format(*ttl)),
            CheckKind::Serf | CheckKind::Maintenance => {}
        }
        def
    }
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
