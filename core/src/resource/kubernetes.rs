//! Core Kubernetes objects that endpoint resolution reads: a `v1` `Service`'s ports (which
//! Service port is which named pod port) and `discovery.k8s.io/v1` `EndpointSlice`s (the pods'
//! addresses). They are the cluster's own objects, not users' Ambassador configuration: fields
//! attache does not use are ignored without a word, and malformed entries are skipped with a
//! warning.

use super::Reader;
use crate::source::yaml::Node;

/// A port of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// `name` (empty for the only port of a single-port Service).
    pub name: String,
    /// `port`: what clients (and Mappings) name.
    pub port: u16,
}

/// What attache reads of a `v1` `Service`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServicePorts {
    /// `spec.ports`.
    pub ports: Vec<ServicePort>,
}

/// A port of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlicePort {
    /// `name`: the Service port's name (empty when the Service's port has none).
    pub name: String,
    /// `port`: the pods' port.
    pub port: u16,
}

/// What attache reads of an `EndpointSlice`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointSlice {
    /// The Service it belongs to (label `kubernetes.io/service-name`), in the slice's namespace.
    pub service: String,
    /// `ports`.
    pub ports: Vec<SlicePort>,
    /// Addresses of endpoints that are ready (a `ready` condition that is absent counts as
    /// ready, as Kubernetes says consumers should).
    pub addresses: Vec<std::net::IpAddr>,
}

/// The label naming an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

pub(crate) fn is_service(api_version: &str, kind: &str) -> bool {
    api_version == "v1" && kind == "Service"
}

pub(crate) fn is_endpoint_slice(api_version: &str, kind: &str) -> bool {
    api_version == "discovery.k8s.io/v1" && kind == "EndpointSlice"
}

fn port_number(n: Option<&Node>) -> Option<u16> {
    match n.map(|n| &n.value) {
        Some(crate::source::yaml::NodeValue::Int(i)) => u16::try_from(*i).ok().filter(|p| *p > 0),
        _ => None,
    }
}

fn name_of(n: &Node) -> String {
    n.get("name").and_then(Node::as_str).unwrap_or_default().to_string()
}

fn items(n: Option<&Node>) -> &[Node] {
    match n.map(|n| &n.value) {
        Some(crate::source::yaml::NodeValue::Seq(items)) => items,
        _ => &[],
    }
}

/// Reads a Service's ports.
pub(crate) fn read_service(r: &mut Reader<'_>) -> ServicePorts {
    let mut ports = Vec::new();
    for (i, p) in items(r.root.get("spec").and_then(|s| s.get("ports")))
        .iter()
        .enumerate()
    {
        match port_number(p.get("port")) {
            Some(port) => ports.push(ServicePort { name: name_of(p), port }),
            None => {
                let d = r.warning(
                    "invalid_port",
                    &format!("spec.ports[{i}].port"),
                    "not a port number (1-65535); this port is skipped",
                );
                r.diagnostics.push(d);
            }
        }
    }
    ServicePorts { ports }
}

/// Reads an EndpointSlice; `None` (with a warning) when it names no Service.
pub(crate) fn read_endpoint_slice(r: &mut Reader<'_>) -> Option<EndpointSlice> {
    let Some(service) = r.meta.labels.get(SERVICE_NAME_LABEL).cloned() else {
        let d = r
            .warning(
                "no_service",
                &format!("metadata.labels[\"{SERVICE_NAME_LABEL}\"]"),
                "this EndpointSlice names no Service; ignored",
            )
            .hint("Kubernetes labels the EndpointSlices it manages with their Service's name");
        r.diagnostics.push(d);
        return None;
    };
    let ports = items(r.root.get("ports"))
        .iter()
        .filter_map(|p| port_number(p.get("port")).map(|port| SlicePort { name: name_of(p), port }))
        .collect();
    let mut addresses = Vec::new();
    for e in items(r.root.get("endpoints")) {
        let ready = e.get("conditions").and_then(|c| c.get("ready")).map(|n| &n.value);
        if matches!(ready, Some(crate::source::yaml::NodeValue::Bool(false))) {
            continue;
        }
        // FQDN slices and malformed addresses are skipped: only IPs can be Envoy endpoints.
        addresses.extend(
            items(e.get("addresses"))
                .iter()
                .filter_map(|a| a.as_str()?.parse::<std::net::IpAddr>().ok()),
        );
    }
    addresses.sort();
    addresses.dedup();
    Some(EndpointSlice {
        service,
        ports,
        addresses,
    })
}
