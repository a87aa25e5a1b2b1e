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
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use envoy_types::pb::envoy::config::core::v3::ControlPlane;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

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

/// A SotW response as it goes out: the message, with its `resources` left empty; they are in
/// `shared` (a full-state type's, encoded once per snapshot by `Snapshot::sotw_resources`, or
/// once per cluster transition by [`ClusterMemo`], and sent by every stream as the same bytes)
/// or in `items` (a by-name type's, each the snapshot's own encoding of a resource). Derefs to
/// the message for its version, nonce and type.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The response (without its resources).
    pub message: DiscoveryResponse,
    /// Its `resources` field, encoded, for a full-state type.
    pub shared: Option<bytes::Bytes>,
    /// The resources' encodings (each an `Any`'s value), for a by-name type.
    pub items: Vec<bytes::Bytes>,
}

impl Outgoing {
    /// The length of the whole encoded response.
    pub fn encoded_len(&self) -> usize {
        use prost::encoding::encoded_len_varint as v;
        let items: usize = self
            .items
            .iter()
            .map(|b| {
                let any = crate::snapshot::any_len(&self.message.type_url, b.len());
                1 + v(any as u64) + any
            })
            .sum();
        prost::Message::encoded_len(&self.message) + self.shared.as_ref().map_or(0, bytes::Bytes::len) + items
    }

    /// The gRPC message frame as chunks to write in order: the stream's own fields, then the
    /// resources: the shared encoding as it is, or each resource's `Any` around its bytes (large
    /// ones as the snapshot's own bytes, see `super::put_resource`).
    pub fn frames(&self) -> Vec<bytes::Bytes> {
        let mut buf = super::message_head(&self.message, self.encoded_len());
        let mut chunks = Vec::new();
        if let Some(shared) = &self.shared {
            chunks.push(std::mem::take(&mut buf).freeze());
            chunks.push(shared.clone());
        }
        for item in &self.items {
            crate::snapshot::encode_any_head(2, &self.message.type_url, item.len(), &mut buf);
            super::put_resource(&mut buf, &mut chunks, item);
        }
        if !buf.is_empty() {
            chunks.push(buf.freeze());
        }
        chunks
    }

    /// The whole response, as Envoy decodes it.
    pub fn decoded(&self) -> DiscoveryResponse {
        super::decode_frames(&self.frames())
    }
}

impl std::ops::Deref for Outgoing {
    type Target = DiscoveryResponse;
    fn deref(&self) -> &DiscoveryResponse {
        &self.message
    }
}

/// What the SotW streams that were sent the same clusters share when a new snapshot comes:
/// whether it drops some of those clusters, whether it adds others, and the CDS response that
/// keeps the dropped ones while routes still use them (make before break). Each is computed by
/// the first stream that needs it, for a pair of versions (of the clusters the stream was sent,
/// and of the snapshot's): a thousand Envoys then cost one walk over the clusters and one
/// encoding, not a thousand. Versions are content hashes, so a pair names one transition.
#[derive(Debug, Default)]
pub struct ClusterMemo {
    /// The transitions to the latest snapshot.
    transitions: Mutex<Vec<Arc<Transition>>>,
}

/// How many transitions to one snapshot [`ClusterMemo`] keeps (streams that were sent
/// different clusters: some lag a snapshot or two behind).
const TRANSITIONS_KEPT: usize = 8;

#[derive(Debug)]
struct Transition {
    /// The version of the clusters a stream was sent.
    sent: String,
    /// The version of the snapshot's clusters.
    next: String,
    /// (drops clusters the stream has, adds clusters it lacks).
    change: OnceLock<(bool, bool)>,
    /// The clusters with the dropped ones kept, their version and their encoding as a
    /// response's `resources`.
    kept: OnceLock<(crate::snapshot::ResourceMap, String, bytes::Bytes)>,
}

impl ClusterMemo {
    fn transition(&self, sent: &str, next: &str) -> Arc<Transition> {
        let mut transitions = self.transitions.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = transitions.iter().find(|t| t.sent == sent && t.next == next) {
            return Arc::clone(t);
        }
        // Streams answer the latest snapshot: transitions to an earlier one are done with (each
        // holds an encoding of every cluster).
        transitions.retain(|t| t.next == next);
        if transitions.len() >= TRANSITIONS_KEPT {
            transitions.remove(0);
        }
        let t = Arc::new(Transition {
            sent: sent.to_string(),
            next: next.to_string(),
            change: OnceLock::new(),
            kept: OnceLock::new(),
        });
        transitions.push(Arc::clone(&t));
        t
    }
}

/// Whether `snapshot` drops clusters of `sent`, and whether it adds clusters `sent` lacks.
fn cluster_change(sent: &crate::snapshot::ResourceMap, snapshot: &Snapshot) -> (bool, bool) {
    let drops = sent.keys().any(|n| snapshot.get(ResourceType::Cluster, n).is_none());
    let adds = snapshot
        .of_type(ResourceType::Cluster)
        .any(|(n, _)| !sent.contains_key(&**n));
    (drops, adds)
}

/// The snapshot's clusters plus those of `sent` it dropped, their version, and their encoding
/// as a response's `resources`.
fn clusters_kept(
    sent: &crate::snapshot::ResourceMap,
    snapshot: &Snapshot,
) -> (crate::snapshot::ResourceMap, String, bytes::Bytes) {
    let mut items = snapshot.type_map(ResourceType::Cluster);
    for (n, r) in sent {
        if !items.contains_key(&**n) {
            items.insert(n.clone(), r.clone());
        }
    }
    let version = crate::snapshot::version_of_pairs(items.iter().map(|(n, r)| (&**n, r.version.as_str())));
    let encoded = crate::snapshot::sotw_encode(ResourceType::Cluster, items.values());
    (items, version, encoded)
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
        let (drops_clusters, adds_clusters) = match self.types.get(&ResourceType::Cluster) {
            Some(st) if st.requested => {
                let next = snapshot.type_version(ResourceType::Cluster);
                match &st.sent_version {
                    // Versions are content hashes: the same clusters.
                    Some(sent) if *sent == next => (false, false),
                    Some(sent) => *shared
                        .sotw_clusters
                        .transition(sent, &next)
                        .change
                        .get_or_init(|| cluster_change(&st.sent, snapshot)),
                    None => cluster_change(&st.sent, snapshot),
                }
            }
            _ => (false, false),
        };
        if drops_clusters && routes_follow {
            self.cluster_removal_pending = true;
        }
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
        // The clusters with the dropped ones kept, encoded: shared with every stream that was
        // sent the same clusters (see `ClusterMemo`).
        let mut kept_encoded = None;
        let (items, version) = if as_snapshot_has_it {
            (snapshot.type_map(ty), snapshot.type_version(ty))
        } else if keep_old_clusters {
            let (items, version, encoded) = match &st.sent_version {
                Some(sent) => shared
                    .sotw_clusters
                    .transition(sent, &snapshot.type_version(ty))
                    .kept
                    .get_or_init(|| clusters_kept(&st.sent, snapshot))
                    .clone(),
                None => clusters_kept(&st.sent, snapshot),
            };
            kept_encoded = Some(encoded);
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
        let (shared_resources, by_name) = if as_snapshot_has_it {
            (Some(snapshot.sotw_resources(ty)), Vec::new())
        } else if let Some(encoded) = kept_encoded {
            (Some(encoded), Vec::new())
        } else {
            (None, items.values().map(|r| r.bytes.clone()).collect())
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
                type_url: ty.type_url(),
                nonce,
                control_plane: Some(ControlPlane {
                    identifier: format!("attache {}", env!("CARGO_PKG_VERSION")),
                }),
                ..Default::default()
            },
            shared: shared_resources,
            items: by_name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::Any;

    /// A full-state response carries the snapshot's shared encoding of its resources: decoded,
    /// it is the message prost would have written, resource for resource.
    #[test]
    fn shared_resources_decode_as_the_plain_message() {
        let snapshot = snapshot_of(&["a", "b", "c"]);
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

    fn snapshot_of(names: &[&str]) -> Snapshot {
        let yaml = names
            .iter()
            .map(|n| format!("apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: {n}\nspec:\n  hostname: \"*\"\n  prefix: /{n}/\n  service: {n}\n"))
            .collect::<Vec<_>>()
            .join("---\n");
        let loaded = crate::source::parse_text("t.yaml", &yaml);
        let registry = crate::rules::Registry::core().unwrap();
        crate::translate(&loaded, &registry, &crate::Options::default()).snapshot
    }

    /// Subscribes to CDS, LDS and RDS as Envoy does and ACKs every response until none comes.
    fn sync(stream: &mut SotwStream, snapshot: &Snapshot, shared: &Shared) {
        let routes: Vec<String> = snapshot
            .of_type(ResourceType::Route)
            .map(|(n, _)| n.to_string())
            .collect();
        let subscribe = |ty: ResourceType| DiscoveryRequest {
            type_url: ty.type_url(),
            resource_names: if ty == ResourceType::Route {
                routes.clone()
            } else {
                Vec::new()
            },
            ..Default::default()
        };
        let pending: Vec<Outgoing> = [ResourceType::Cluster, ResourceType::Listener, ResourceType::Route]
            .into_iter()
            .flat_map(|ty| stream.on_request(&subscribe(ty), Some(snapshot), shared))
            .collect();
        ack_all(stream, pending, snapshot, shared, &routes);
    }

    /// ACKs every response, and those its ACKs bring, until none comes; returns what was
    /// ACKed (type and version), in order.
    fn ack_all(
        stream: &mut SotwStream,
        mut pending: Vec<Outgoing>,
        snapshot: &Snapshot,
        shared: &Shared,
        routes: &[String],
    ) -> Vec<(ResourceType, String)> {
        let mut seen = Vec::new();
        while let Some(r) = (!pending.is_empty()).then(|| pending.remove(0)) {
            assert!(seen.len() < 50, "the stream does not settle");
            let ty = ResourceType::from_type_url(&r.type_url).unwrap();
            seen.push((ty, r.version_info.clone()));
            let ack = DiscoveryRequest {
                type_url: r.type_url.clone(),
                version_info: r.version_info.clone(),
                response_nonce: r.nonce.clone(),
                resource_names: if ty == ResourceType::Route {
                    routes.to_vec()
                } else {
                    Vec::new()
                },
                ..Default::default()
            };
            pending.extend(stream.on_request(&ack, Some(snapshot), shared));
        }
        seen
    }

    /// Streams that were sent the same clusters send the same response keeping the clusters a
    /// new snapshot drops: computed once (the same bytes), and what a stream computes alone.
    #[test]
    fn streams_sent_the_same_clusters_share_the_response_that_keeps_dropped_ones() {
        let (before, after) = (snapshot_of(&["a", "b", "c"]), snapshot_of(&["a", "b", "d"]));
        let shared = Shared::default();
        let alone = Shared::default();
        let mut streams: Vec<(SotwStream, &Shared)> = vec![
            (SotwStream::new(1), &shared),
            (SotwStream::new(2), &shared),
            (SotwStream::new(3), &alone),
        ];
        for (stream, shared) in &mut streams {
            sync(stream, &before, shared);
        }
        let first: Vec<Outgoing> = streams
            .iter_mut()
            .map(|(stream, shared)| {
                let out = stream.on_snapshot(&after, shared);
                assert_eq!(out.len(), 1, "clusters first, routes held until they are answered");
                out.into_iter().next().unwrap()
            })
            .collect();
        let names = |r: &Outgoing| -> Vec<String> {
            r.decoded()
                .resources
                .iter()
                .map(|a| {
                    let c: envoy_types::pb::envoy::config::cluster::v3::Cluster =
                        prost::Message::decode(a.value.as_slice()).unwrap();
                    c.name
                })
                .collect()
        };
        assert_eq!(first[0].type_url, ResourceType::Cluster.type_url());
        let mut union = names(&first[0]);
        union.sort();
        assert_eq!(
            union.len(),
            4,
            "the new cluster and the dropped one beside the others: {union:?}"
        );
        assert!(union.iter().any(|n| n.contains('c')) && union.iter().any(|n| n.contains('d')));
        let shared_bytes = |r: &Outgoing| r.shared.as_ref().map(|b| b.as_ptr());
        assert!(shared_bytes(&first[0]).is_some());
        assert_eq!(
            shared_bytes(&first[0]),
            shared_bytes(&first[1]),
            "encoded once for both streams"
        );
        assert_ne!(shared_bytes(&first[0]), shared_bytes(&first[2]));
        for r in &first[1..] {
            assert_eq!(r.version_info, first[0].version_info);
            assert_eq!(r.decoded().resources, first[0].decoded().resources);
        }
        assert_eq!(first[0].encoded_len(), prost::Message::encoded_len(&first[0].decoded()));
        // Then routes, then the clusters without the dropped one: the snapshot's own.
        let routes: Vec<String> = after.of_type(ResourceType::Route).map(|(n, _)| n.to_string()).collect();
        for ((stream, shared), r) in streams.iter_mut().zip(first) {
            let seen = ack_all(stream, vec![r], &after, shared, &routes);
            assert_eq!(
                seen.last(),
                Some(&(ResourceType::Cluster, after.type_version(ResourceType::Cluster))),
                "{seen:?}"
            );
        }
    }

    /// The memo keeps transitions to the latest snapshot only: an earlier one's encoding of
    /// every cluster is not held once streams answer a newer snapshot.
    #[test]
    fn the_cluster_memo_forgets_transitions_to_earlier_snapshots() {
        let memo = ClusterMemo::default();
        let first = memo.transition("a", "b");
        assert!(Arc::ptr_eq(&first, &memo.transition("a", "b")));
        memo.transition("c", "b");
        assert_eq!(memo.transitions.lock().unwrap().len(), 2);
        memo.transition("b", "d");
        let kept: Vec<(String, String)> = memo
            .transitions
            .lock()
            .unwrap()
            .iter()
            .map(|t| (t.sent.clone(), t.next.clone()))
            .collect();
        assert_eq!(kept, [("b".to_string(), "d".to_string())]);
    }

    /// A by-name response (RDS) carries the snapshot's encodings of the resources asked for:
    /// decoded, it is the message prost would have written.
    #[test]
    fn by_name_resources_decode_as_the_plain_message() {
        let snapshot = snapshot_of(&["a", "b"]);
        let shared = Shared::default();
        let mut stream = SotwStream::new(1);
        let names: Vec<String> = snapshot
            .of_type(ResourceType::Route)
            .map(|(n, _)| n.to_string())
            .collect();
        assert!(!names.is_empty());
        let out = stream.on_request(
            &DiscoveryRequest {
                type_url: ResourceType::Route.type_url(),
                resource_names: names.clone(),
                ..Default::default()
            },
            Some(&snapshot),
            &shared,
        );
        assert_eq!(out.len(), 1);
        let r = &out[0];
        assert!(r.shared.is_none() && r.message.resources.is_empty() && r.items.len() == names.len());
        let whole = r.decoded();
        let plain: Vec<Any> = names
            .iter()
            .map(|n| Any {
                type_url: ResourceType::Route.type_url(),
                value: snapshot.get(ResourceType::Route, n).unwrap().bytes.to_vec(),
            })
            .collect();
        assert_eq!(whole.resources, plain);
        assert_eq!(r.encoded_len(), prost::Message::encoded_len(&whole));
        assert_eq!(
            r.frames().iter().map(bytes::Bytes::len).sum::<usize>(),
            5 + r.encoded_len()
        );
    }
}
