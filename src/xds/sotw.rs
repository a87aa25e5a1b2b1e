//! State-of-the-world ADS: the protocol state of one stream, free of I/O so it can be tested
//! request by request.
//!
//! Make before break: when a new snapshot adds clusters, listeners and routes are sent only once
//! Envoy has answered the CDS (and EDS) update; when it drops clusters Envoy has, the CDS update first keeps
//! them (new ∪ old clusters), then listeners and routes are sent, and only once Envoy has answered
//! those is a CDS update without the dropped clusters sent. So no route ever points at a cluster
//! that is already gone. New clusters go out before the routes that use them (type order).
//!
//! See <https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol> ("ACK/NACK and
//! resource type instance version", "When to send an update", "Resource warming").

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

use envoy_types::pb::envoy::config::core::v3::ControlPlane;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Any;

use crate::snapshot::{ResourceType, Snapshot};
use crate::state::{type_index, Nack, Shared};

/// Per-type state of a stream.
#[derive(Debug, Default)]
struct TypeState {
    /// Envoy has asked for this type at least once.
    requested: bool,
    /// Names asked for (ignored for LDS/CDS, which are always full state).
    names: BTreeSet<String>,
    /// Nonce of the last response of this type; requests with another nonce are stale.
    nonce: Option<String>,
    /// Version of the last response.
    sent_version: Option<String>,
    /// Version last rejected.
    nacked_version: Option<String>,
    /// A response of this type has not been answered yet.
    awaiting: bool,
    /// What the last response carried (full-state types), so clusters can be kept while routes
    /// still use them.
    /// (The snapshot's own map when it is sent as it is: shared, not a copy per stream.)
    sent: crate::snapshot::ResourceMap,
}

/// A SotW response as it goes out: the message, with its `resources` left empty when `shared`
/// holds them, encoded once per snapshot (`Snapshot::sotw_resources`) and sent by every stream as
/// the same bytes. Derefs to the message for its version, nonce and type.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The response (without the shared resources).
    pub message: DiscoveryResponse,
    /// Its `resources` field, encoded, when shared.
    pub shared: Option<bytes::Bytes>,
}

impl Outgoing {
    /// The length of the whole encoded response.
    pub fn encoded_len(&self) -> usize {
        prost::Message::encoded_len(&self.message) + self.shared.as_ref().map_or(0, bytes::Bytes::len)
    }

    /// The gRPC message frame as chunks to write in order: the stream's own fields, then the
    /// snapshot's encoded resources as they are (when shared).
    pub fn frames(&self) -> Vec<bytes::Bytes> {
        let head = super::message_head(&self.message, self.encoded_len()).freeze();
        match &self.shared {
            Some(shared) => vec![head, shared.clone()],
            None => vec![head],
        }
    }

    /// The whole response, as Envoy decodes it.
    pub fn decoded(&self) -> DiscoveryResponse {
        let mut buf = prost::Message::encode_to_vec(&self.message);
        if let Some(s) = &self.shared {
            buf.extend_from_slice(s);
        }
        prost::Message::decode(buf.as_slice()).unwrap_or_default()
    }
}

impl std::ops::Deref for Outgoing {
    type Target = DiscoveryResponse;
    fn deref(&self) -> &DiscoveryResponse {
        &self.message
    }
}

/// The state of one SotW ADS stream.
#[derive(Debug)]
pub struct SotwStream {
    id: u64,
    nonce_counter: u64,
    types: BTreeMap<ResourceType, TypeState>,
    /// Clusters Envoy has but the snapshot dropped are kept until routes and listeners are answered.
    cluster_removal_pending: bool,
    /// Listeners and routes wait until new clusters are answered (ACK or NACK).
    routes_held: bool,
}

impl SotwStream {
    /// A fresh stream.
    pub fn new(id: u64) -> Self {
        SotwStream {
            id,
            nonce_counter: 0,
            types: BTreeMap::new(),
            cluster_removal_pending: false,
            routes_held: false,
        }
    }

    /// Handles one request; returns the responses to send (possibly none).
    pub fn on_request(
        &mut self,
        req: &DiscoveryRequest,
        snapshot: Option<&Snapshot>,
        shared: &Shared,
    ) -> Vec<Outgoing> {
        let Some(ty) = ResourceType::from_type_url(&req.type_url) else {
            tracing::debug!(stream = self.id, type_url = %req.type_url, "request for a type attache does not serve; ignored");
            return Vec::new();
        };
        let id = self.id;
        let st = self.types.entry(ty).or_default();
        if !req.response_nonce.is_empty() && st.nonce.as_deref() != Some(req.response_nonce.as_str()) {
            tracing::debug!(stream = id, r#type = ty.label(), nonce = %req.response_nonce, "stale nonce; request ignored");
            return Vec::new();
        }
        if !req.response_nonce.is_empty() {
            st.awaiting = false;
        }
        if let Some(error) = &req.error_detail {
            let version = st.sent_version.clone().unwrap_or_default();
            shared.metrics.xds_nacks[type_index(ty)].fetch_add(1, Ordering::Relaxed);
            if st.nacked_version.as_deref() != Some(version.as_str()) {
                let from: Vec<String> = super::rejected_sources(shared, ty, &error.message)
                    .iter()
                    .map(|s| format!("{} ({})", s.object, s.origin))
                    .collect();
                tracing::error!(stream = id, r#type = ty.label(), %version, message = %error.message, from = %from.join(", "), "Envoy rejected an update (NACK); it keeps its previous configuration");
            }
            st.nacked_version = Some(version.clone());
            shared.with_envoy(id, |e| {
                e.types.entry(ty.label()).or_default().last_nack = Some(Nack {
                    version,
                    message: error.message.clone(),
                });
            });
        } else if !req.response_nonce.is_empty() {
            shared.metrics.xds_acks[type_index(ty)].fetch_add(1, Ordering::Relaxed);
            st.nacked_version = None;
            shared.with_envoy(id, |e| {
                let t = e.types.entry(ty.label()).or_default();
                t.acked_version = Some(req.version_info.clone());
                t.last_nack = None;
            });
        }
        let names: BTreeSet<String> = req.resource_names.iter().filter(|n| *n != "*").cloned().collect();
        let first = !st.requested;
        let changed = names != st.names;
        st.requested = true;
        st.names = names;
        if changed {
            let subscribed: Vec<String> = st.names.iter().cloned().collect();
            shared.with_envoy(id, |e| e.types.entry(ty.label()).or_default().subscribed = subscribed);
        }
        let Some(snapshot) = snapshot else { return Vec::new() };
        // Answer a new subscription even when the content did not change. Listeners and routes
        // held for new clusters go out only with `release_held`.
        let held = self.routes_held && matches!(ty, ResourceType::Listener | ResourceType::Route);
        let mut out: Vec<Outgoing> = if held && !(first || changed) {
            Vec::new()
        } else {
            self.respond(ty, snapshot, first || changed, shared)
                .into_iter()
                .collect()
        };
        out.extend(self.release_held(snapshot, shared));
        out
    }

    /// Handles a new snapshot: every requested type whose content changed, in make-before-break
    /// order (clusters, endpoints, listeners, routes).
    pub fn on_snapshot(&mut self, snapshot: &Snapshot, shared: &Shared) -> Vec<Outgoing> {
        let requested: Vec<ResourceType> = ResourceType::ALL
            .into_iter()
            .filter(|ty| self.types.get(ty).is_some_and(|s| s.requested))
            .collect();
        let routes_follow = requested
            .iter()
            .any(|t| matches!(t, ResourceType::Route | ResourceType::Listener));
        let drops_clusters = self
            .types
            .get(&ResourceType::Cluster)
            .is_some_and(|st| st.sent.keys().any(|n| snapshot.get(ResourceType::Cluster, n).is_none()));
        if drops_clusters && routes_follow {
            self.cluster_removal_pending = true;
        }
        let adds_clusters = self.types.get(&ResourceType::Cluster).is_some_and(|st| {
            st.requested
                && snapshot
                    .of_type(ResourceType::Cluster)
                    .any(|(n, _)| !st.sent.contains_key(&**n))
        });
        if adds_clusters && routes_follow {
            self.routes_held = true;
        }
        let mut out = Vec::new();
        for ty in requested {
            let route_side = matches!(ty, ResourceType::Listener | ResourceType::Route);
            if route_side && self.routes_held {
                continue;
            }
            out.extend(self.respond(ty, snapshot, false, shared));
        }
        out.extend(self.release_held(snapshot, shared));
        out
    }

    /// Sends the held listeners and routes once new clusters (and endpoints) are answered, then the
    /// removal of dropped clusters once those are answered.
    fn release_held(&mut self, snapshot: &Snapshot, shared: &Shared) -> Vec<Outgoing> {
        let mut out = Vec::new();
        if self.routes_held {
            let waiting = [ResourceType::Cluster, ResourceType::Endpoint]
                .iter()
                .any(|t| self.types.get(t).is_some_and(|s| s.awaiting));
            if waiting {
                return out;
            }
            self.routes_held = false;
            for ty in [ResourceType::Listener, ResourceType::Route] {
                if self.types.get(&ty).is_some_and(|s| s.requested) {
                    out.extend(self.respond(ty, snapshot, false, shared));
                }
            }
        }
        out.extend(self.finish_cluster_removal(snapshot, shared));
        out
    }

    /// Sends the CDS update without the dropped clusters once the routes and listeners sent after
    /// them have been answered (ACK or NACK).
    fn finish_cluster_removal(&mut self, snapshot: &Snapshot, shared: &Shared) -> Option<Outgoing> {
        if !self.cluster_removal_pending {
            return None;
        }
        let waiting = [ResourceType::Route, ResourceType::Listener]
            .iter()
            .any(|t| self.types.get(t).is_some_and(|s| s.awaiting));
        if waiting {
            return None;
        }
        self.cluster_removal_pending = false;
        self.respond(ResourceType::Cluster, snapshot, false, shared)
    }

    fn respond(&mut self, ty: ResourceType, snapshot: &Snapshot, force: bool, shared: &Shared) -> Option<Outgoing> {
        let keep_old_clusters = ty == ResourceType::Cluster && self.cluster_removal_pending;
        let st = self.types.get_mut(&ty)?;
        // What to send, as a map by name: a full-state type as the snapshot has it is the
        // snapshot's own map, with its version computed once for every stream.
        let pairs = |m: &crate::snapshot::ResourceMap| {
            crate::snapshot::version_of_pairs(m.iter().map(|(n, r)| (&**n, r.version.as_str())))
        };
        let as_snapshot_has_it = ty.is_full_state() && !keep_old_clusters;
        let (items, version) = if as_snapshot_has_it {
            (snapshot.type_map(ty), snapshot.type_version(ty))
        } else if ty.is_full_state() {
            let mut items = snapshot.type_map(ty);
            for (n, r) in &st.sent {
                if !items.contains_key(&**n) {
                    items.insert(n.clone(), r.clone());
                }
            }
            let version = pairs(&items);
            (items, version)
        } else {
            let items: crate::snapshot::ResourceMap = st
                .names
                .iter()
                .filter_map(|n| snapshot.get_key_value(ty, n).map(|(k, r)| (k.clone(), r.clone())))
                .collect();
            let version = pairs(&items);
            (items, version)
        };
        if !force && st.sent_version.as_deref() == Some(version.as_str()) {
            return None;
        }
        if !force && st.nacked_version.as_deref() == Some(version.as_str()) {
            return None;
        }
        let (resources, shared_resources) = if as_snapshot_has_it {
            (Vec::new(), Some(snapshot.sotw_resources(ty)))
        } else {
            let resources = items
                .iter()
                .map(|(_, r)| Any {
                    type_url: ty.type_url(),
                    value: r.bytes.to_vec(),
                })
                .collect();
            (resources, None)
        };
        let count = items.len();
        if ty.is_full_state() {
            st.sent = items;
        }
        st.awaiting = true;
        self.nonce_counter += 1;
        let nonce = self.nonce_counter.to_string();
        st.nonce = Some(nonce.clone());
        st.sent_version = Some(version.clone());
        shared.metrics.xds_responses[type_index(ty)].fetch_add(1, Ordering::Relaxed);
        let id = self.id;
        shared.with_envoy(id, |e| {
            e.types.entry(ty.label()).or_default().sent_version = Some(version.clone())
        });
        tracing::debug!(stream = id, r#type = ty.label(), %version, resources = count, "sending");
        Some(Outgoing {
            message: DiscoveryResponse {
                version_info: version,
                resources,
                type_url: ty.type_url(),
                nonce,
                control_plane: Some(ControlPlane {
                    identifier: format!("attache {}", env!("CARGO_PKG_VERSION")),
                }),
                ..Default::default()
            },
            shared: shared_resources,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full-state response carries the snapshot's shared encoding of its resources: decoded,
    /// it is the message prost would have written, resource for resource.
    #[test]
    fn shared_resources_decode_as_the_plain_message() {
        let yaml = ["a", "b", "c"]
            .iter()
            .map(|n| format!("apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: {n}\nspec:\n  hostname: \"*\"\n  prefix: /{n}/\n  service: {n}\n"))
            .collect::<Vec<_>>()
            .join("---\n");
        let loaded = crate::source::parse_text("t.yaml", &yaml);
        let registry = crate::rules::Registry::core().unwrap();
        let snapshot = crate::translate(&loaded, &registry, &crate::Options::default()).snapshot;
        let shared = Shared::default();
        let mut stream = SotwStream::new(1);
        let req = DiscoveryRequest {
            type_url: ResourceType::Cluster.type_url(),
            ..Default::default()
        };
        let out = stream.on_request(&req, Some(&snapshot), &shared);
        assert_eq!(out.len(), 1);
        let r = &out[0];
        assert!(r.shared.is_some() && r.message.resources.is_empty());
        let whole = r.decoded();
        let plain: Vec<Any> = snapshot
            .of_type(ResourceType::Cluster)
            .map(|(_, res)| Any {
                type_url: ResourceType::Cluster.type_url(),
                value: res.bytes.to_vec(),
            })
            .collect();
        assert_eq!(plain.len(), 3);
        assert_eq!(whole.resources, plain);
        assert_eq!(
            (whole.version_info.as_str(), whole.nonce.as_str()),
            (r.version_info.as_str(), r.nonce.as_str())
        );
        assert_eq!(r.encoded_len(), prost::Message::encoded_len(&whole));
    }
}
