//! Incremental (delta) ADS: the protocol state of one stream, free of I/O.
//!
//! Per type the stream remembers what Envoy has (`known`: name → version, seeded from
//! `initial_resource_versions` on reconnect, updated when we send), what it subscribed to
//! (wildcard and/or explicit names) and which requested names we told it do not exist. Only
//! resources whose version differs from what Envoy has are sent; deletions, and subscribed names
//! that do not exist, go in `removed_resources`. Subscription changes are honoured whatever the
//! nonce. A NACK is recorded and the rejected versions are not sent again (Envoy's state for them
//! is what it had; the next content change is sent). Make before break: listener and route changes that follow
//! new clusters wait until Envoy answered the cluster update, and cluster removals wait until the
//! routes that stopped using them were answered. See
//! <https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol#incremental-xds>.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

use envoy_types::pb::envoy::config::core::v3::ControlPlane;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};

use crate::snapshot::{Name, Resource as SnapshotResource, ResourceMap, ResourceType, Snapshot, Version};
use crate::state::{type_index, Nack, Shared};

/// Which part of a type's changes to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// Added and changed resources only.
    Upserts,
    /// Removals only.
    Removals,
    /// Both.
    All,
}

#[derive(Debug, Default)]
struct TypeState {
    requested: bool,
    wildcard: bool,
    names: BTreeSet<String>,
    /// What Envoy has, by name (only each entry's `version` is meaningful). Once Envoy has all
    /// of a type as a snapshot has it, this *is* the snapshot's map (shared, not a copy): a
    /// thousand streams on 10,000 clusters do not hold 10,000 names and versions each.
    known: ResourceMap,
    told_absent: BTreeSet<String>,
    /// A response of this type has not been answered yet.
    awaiting: bool,
    /// Nonce → system version of the responses not yet answered.
    pending: BTreeMap<String, String>,
}

/// The state of one delta ADS stream.
#[derive(Debug)]
pub struct DeltaStream {
    id: u64,
    nonce_counter: u64,
    types: BTreeMap<ResourceType, TypeState>,
    /// Cluster and endpoint removals wait until the routes and listeners sent before them are
    /// answered, so no route points at a cluster that is gone.
    removals_pending: bool,
    /// Listener and route upserts wait until new clusters (and endpoints) are answered.
    routes_held: bool,
}

impl DeltaStream {
    /// A fresh stream.
    pub fn new(id: u64) -> Self {
        DeltaStream {
            id,
            nonce_counter: 0,
            types: BTreeMap::new(),
            removals_pending: false,
            routes_held: false,
        }
    }

    /// Handles one request; returns the responses to send (possibly none).
    pub fn on_request(
        &mut self,
        req: &DeltaDiscoveryRequest,
        snapshot: Option<&Snapshot>,
        shared: &Shared,
    ) -> Vec<Outgoing> {
        let Some(ty) = ResourceType::from_type_url(&req.type_url) else {
            tracing::debug!(stream = self.id, type_url = %req.type_url, "delta request for a type attache does not serve; ignored");
            return Vec::new();
        };
        let id = self.id;
        let st = self.types.entry(ty).or_default();
        let first = !st.requested;
        st.requested = true;
        if first {
            // Reconnect: what Envoy already has is not sent again.
            st.known = req
                .initial_resource_versions
                .iter()
                .map(|(k, v)| {
                    (
                        Name::from(k.as_str()),
                        SnapshotResource {
                            bytes: bytes::Bytes::new(),
                            version: Version::from_text(v),
                        },
                    )
                })
                .collect();
            // Legacy wildcard: a first LDS/CDS request that names nothing means "everything".
            if req.resource_names_subscribe.is_empty() && ty.is_full_state() {
                st.wildcard = true;
            }
        }
        for name in &req.resource_names_subscribe {
            if name == "*" {
                st.wildcard = true;
            } else {
                st.names.insert(name.clone());
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                st.wildcard = false;
            } else {
                st.names.remove(name);
                st.told_absent.remove(name);
            }
        }
        if !st.wildcard {
            // Envoy forgets what it unsubscribed from: forget it too, so a resubscription resends it.
            let gone: Vec<Name> = st.known.keys().filter(|n| !st.names.contains(&***n)).cloned().collect();
            for n in gone {
                st.known.remove(&n);
            }
        }
        if !req.response_nonce.is_empty() {
            let version = st.pending.remove(&req.response_nonce);
            // Older nonces can no longer be answered in order; drop them.
            let nonce_num: u64 = req.response_nonce.parse().unwrap_or(0);
            st.pending.retain(|n, _| n.parse::<u64>().unwrap_or(0) > nonce_num);
            st.awaiting = !st.pending.is_empty();
            let version = version.unwrap_or_default();
            if let Some(error) = &req.error_detail {
                shared.metrics.xds_nacks[type_index(ty)].fetch_add(1, Ordering::Relaxed);
                let from: Vec<String> = super::rejected_sources(shared, ty, &error.message)
                    .iter()
                    .map(|s| format!("{} ({})", s.object, s.origin))
                    .collect();
                tracing::error!(stream = id, r#type = ty.label(), %version, message = %error.message, from = %from.join(", "), "Envoy rejected an update (NACK); it keeps its previous configuration");
                shared.with_envoy(id, |e| {
                    e.types.entry(ty.label()).or_default().last_nack = Some(Nack {
                        version,
                        message: error.message.clone(),
                    });
                });
            } else {
                shared.metrics.xds_acks[type_index(ty)].fetch_add(1, Ordering::Relaxed);
                shared.with_envoy(id, |e| {
                    let t = e.types.entry(ty.label()).or_default();
                    t.acked_version = Some(version);
                    t.last_nack = None;
                });
            }
        }
        let subscribed: Vec<String> = if st.wildcard {
            std::iter::once("*".to_string())
                .chain(st.names.iter().cloned())
                .collect()
        } else {
            st.names.iter().cloned().collect()
        };
        shared.with_envoy(id, |e| e.types.entry(ty.label()).or_default().subscribed = subscribed);
        let Some(snapshot) = snapshot else { return Vec::new() };
        let route_side = matches!(ty, ResourceType::Listener | ResourceType::Route);
        let part = if self.removals_pending && !route_side {
            Part::Upserts
        } else {
            Part::All
        };
        // Held listeners and routes go out with `release_held`, except what a changed
        // subscription asks for.
        let subscription_changed =
            !req.resource_names_subscribe.is_empty() || !req.resource_names_unsubscribe.is_empty() || first;
        let mut out: Vec<Outgoing> = if self.routes_held && route_side && !subscription_changed {
            Vec::new()
        } else {
            self.respond(ty, snapshot, part, shared).into_iter().collect()
        };
        out.extend(self.release_held(snapshot, shared));
        out
    }

    /// Handles a new snapshot, make before break: cluster and endpoint upserts first; listener and
    /// route changes once Envoy has answered those (`release_held`); cluster and endpoint removals
    /// once the listener and route changes are answered.
    pub fn on_snapshot(&mut self, snapshot: &Snapshot, shared: &Shared) -> Vec<Outgoing> {
        let requested: Vec<ResourceType> = ResourceType::ALL
            .into_iter()
            .filter(|ty| self.types.get(ty).is_some_and(|s| s.requested))
            .collect();
        let routes_follow = requested
            .iter()
            .any(|t| matches!(t, ResourceType::Listener | ResourceType::Route));
        let mut out: Vec<Outgoing> = Vec::new();
        for ty in [ResourceType::Cluster, ResourceType::Endpoint] {
            if requested.contains(&ty) {
                if let Some(r) = self.respond(ty, snapshot, Part::Upserts, shared) {
                    // New or changed clusters: listeners and routes wait for Envoy's answer.
                    self.routes_held |= routes_follow;
                    out.push(r);
                }
            }
        }
        self.removals_pending |= requested
            .iter()
            .any(|t| matches!(t, ResourceType::Cluster | ResourceType::Endpoint));
        out.extend(self.release_held(snapshot, shared));
        for ty in [ResourceType::Secret] {
            if requested.contains(&ty) {
                out.extend(self.respond(ty, snapshot, Part::All, shared));
            }
        }
        out
    }

    /// Sends held listener and route changes (upserts, then removals) once cluster and endpoint
    /// updates are answered, then cluster and endpoint removals once those are answered.
    fn release_held(&mut self, snapshot: &Snapshot, shared: &Shared) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let waiting =
            |s: &Self, types: &[ResourceType]| types.iter().any(|t| s.types.get(t).is_some_and(|st| st.awaiting));
        if self.routes_held {
            if waiting(self, &[ResourceType::Cluster, ResourceType::Endpoint]) {
                return out;
            }
            self.routes_held = false;
        }
        for part in [Part::Upserts, Part::Removals] {
            let order = if part == Part::Upserts {
                [ResourceType::Listener, ResourceType::Route]
            } else {
                [ResourceType::Route, ResourceType::Listener]
            };
            for ty in order {
                if self.types.get(&ty).is_some_and(|s| s.requested) {
                    out.extend(self.respond(ty, snapshot, part, shared));
                }
            }
        }
        out.extend(self.finish_removals(snapshot, shared));
        out
    }

    /// Sends cluster and endpoint removals once no route or listener response is unanswered.
    fn finish_removals(&mut self, snapshot: &Snapshot, shared: &Shared) -> Vec<Outgoing> {
        if !self.removals_pending {
            return Vec::new();
        }
        let waiting = [ResourceType::Route, ResourceType::Listener]
            .iter()
            .any(|t| self.types.get(t).is_some_and(|s| s.awaiting));
        if waiting {
            return Vec::new();
        }
        self.removals_pending = false;
        let types: Vec<ResourceType> = [ResourceType::Endpoint, ResourceType::Cluster]
            .into_iter()
            .filter(|ty| self.types.get(ty).is_some_and(|s| s.requested))
            .collect();
        types
            .into_iter()
            .filter_map(|ty| self.respond(ty, snapshot, Part::Removals, shared))
            .collect()
    }

    fn respond(&mut self, ty: ResourceType, snapshot: &Snapshot, part: Part, shared: &Shared) -> Option<Outgoing> {
        let st = self.types.get_mut(&ty)?;
        let mut resources = Vec::new();
        let mut removed = Vec::new();
        if part != Part::Removals {
            // The snapshot, the subscribed names and what Envoy has are all sorted by name:
            // walked side by side, without a search per resource (EDS subscribes each cluster
            // by name).
            let mut names = st.names.iter().peekable();
            let mut known = st.known.iter().peekable();
            for (name, r) in snapshot.of_type(ty) {
                if !st.wildcard {
                    while names.next_if(|n| n.as_str() < &**name).is_some() {}
                    if names.next_if(|n| n.as_str() == &**name).is_none() {
                        continue;
                    }
                }
                while known.next_if(|(k, _)| ***k < **name).is_some() {}
                let has = known.next_if(|(k, _)| ***k == **name).map(|(_, v)| v.version);
                if has != Some(r.version) {
                    resources.push((name.clone(), r.clone()));
                }
            }
        }
        if part != Part::Upserts {
            // Side by side again: what Envoy has that the snapshot no longer does.
            let mut current = snapshot.of_type(ty).peekable();
            for name in st.known.keys() {
                while current.next_if(|(n, _)| ***n < **name).is_some() {}
                if current.next_if(|(n, _)| ***n == **name).is_none() {
                    removed.push(name.to_string());
                }
            }
            // Subscribed names that do not exist, told once.
            let mut current = snapshot.of_type(ty).peekable();
            for name in &st.names {
                while current.next_if(|(n, _)| &***n < name.as_str()).is_some() {}
                let exists = current.next_if(|(n, _)| &***n == name.as_str()).is_some();
                if !exists && !st.known.contains_key(name.as_str()) && !st.told_absent.contains(name) {
                    removed.push(name.clone());
                }
            }
        }
        if resources.is_empty() && removed.is_empty() {
            return None;
        }
        for (name, r) in &resources {
            st.known.insert(name.clone(), r.clone());
            st.told_absent.remove(&**name);
        }
        for name in &removed {
            st.known.remove(name.as_str());
            if st.names.contains(name) {
                st.told_absent.insert(name.clone());
            }
        }
        // Envoy now has every resource of the type as the snapshot has it, and nothing else:
        // hold the snapshot's own map instead of a copy built entry by entry.
        // (After upserts, Envoy has every resource of this snapshot, so equal counts mean equal
        // maps; a removal alone may come with a newer snapshot than the last upserts: compared.)
        if st.wildcard {
            let current = snapshot.type_map(ty);
            let same = st.known.len() == current.len()
                && (part != Part::Removals
                    || st
                        .known
                        .iter()
                        .zip(current.iter())
                        .all(|((a, x), (b, y))| a == b && x.version == y.version));
            if same && !st.known.ptr_eq(&current) {
                st.known = current;
            }
        }
        removed.sort();
        removed.dedup();
        self.nonce_counter += 1;
        let nonce = self.nonce_counter.to_string();
        let version = snapshot.type_version(ty);
        st.pending.insert(nonce.clone(), version.clone());
        st.awaiting = true;
        shared.metrics.xds_responses[type_index(ty)].fetch_add(1, Ordering::Relaxed);
        let id = self.id;
        shared.with_envoy(id, |e| {
            e.types.entry(ty.label()).or_default().sent_version = Some(version.clone())
        });
        tracing::debug!(stream = id, r#type = ty.label(), %version, upserts = resources.len(), removals = removed.len(), "sending delta");
        Some(Outgoing {
            message: DeltaDiscoveryResponse {
                system_version_info: version,
                type_url: ty.type_url(),
                removed_resources: removed,
                nonce,
                control_plane: Some(ControlPlane {
                    identifier: format!("attache {}", env!("CARGO_PKG_VERSION")),
                }),
                ..Default::default()
            },
            upserts: resources,
        })
    }
}

/// A delta response as it goes out: the message without its resources, and the resources as
/// the snapshot holds them (names, versions and encodings shared, not copied), written into the
/// response's frames by `frames`. Derefs to the message for its type, nonce and removals.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The response, `resources` left empty.
    pub message: DeltaDiscoveryResponse,
    /// The resources it carries, in name order.
    pub upserts: Vec<(Name, SnapshotResource)>,
}

impl std::ops::Deref for Outgoing {
    type Target = DeltaDiscoveryResponse;
    fn deref(&self) -> &DeltaDiscoveryResponse {
        &self.message
    }
}

impl Outgoing {
    /// `Resource.resource`'s `Any` length, and the whole `Resource`'s, for one upsert.
    fn resource_len(&self, name: &str, r: &SnapshotResource) -> usize {
        use prost::encoding::encoded_len_varint as v;
        let any = crate::snapshot::any_len(&self.message.type_url, r.bytes.len());
        let version = r.version.as_str().len();
        (1 + v(version as u64) + version) + (1 + v(name.len() as u64) + name.len()) + (1 + v(any as u64) + any)
    }

    /// The length of the whole encoded response.
    pub fn encoded_len(&self) -> usize {
        use prost::encoding::encoded_len_varint as v;
        prost::Message::encoded_len(&self.message)
            + self
                .upserts
                .iter()
                .map(|(n, r)| {
                    let len = self.resource_len(n, r);
                    1 + v(len as u64) + len
                })
                .sum::<usize>()
    }

    /// The gRPC message frame (flag, length, message) as chunks to write in order: large
    /// resources are the snapshot's own bytes, the rest is copied (`super::put_resource`).
    /// (`Resource` fields are written version, name, resource: any order is valid protobuf.)
    pub fn frames(&self) -> Vec<bytes::Bytes> {
        use bytes::BufMut as _;
        use prost::encoding::{encode_key, encode_varint, WireType};
        let mut chunks = Vec::new();
        let mut buf = super::message_head(&self.message, self.encoded_len());
        for (name, r) in &self.upserts {
            let resource = self.resource_len(name, r);
            encode_key(2, WireType::LengthDelimited, &mut buf);
            encode_varint(resource as u64, &mut buf);
            encode_key(1, WireType::LengthDelimited, &mut buf);
            encode_varint(r.version.as_str().len() as u64, &mut buf);
            buf.put_slice(r.version.as_str().as_bytes());
            encode_key(3, WireType::LengthDelimited, &mut buf);
            encode_varint(name.len() as u64, &mut buf);
            buf.put_slice(name.as_bytes());
            crate::snapshot::encode_any_head(2, &self.message.type_url, r.bytes.len(), &mut buf);
            super::put_resource(&mut buf, &mut chunks, &r.bytes);
        }
        if !buf.is_empty() {
            chunks.push(buf.freeze());
        }
        chunks
    }

    /// The whole response, as Envoy decodes it.
    pub fn decoded(&self) -> DeltaDiscoveryResponse {
        super::decode_frames(&self.frames())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(yaml: &str) -> Snapshot {
        let loaded = crate::source::parse_text("t.yaml", yaml);
        let registry = crate::rules::Registry::core().unwrap();
        crate::translate(&loaded, &registry, &crate::Options::default()).snapshot
    }

    fn mappings(names: &[&str]) -> String {
        names
            .iter()
            .map(|n| format!("apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: {n}\nspec:\n  hostname: \"*\"\n  prefix: /{n}/\n  service: {n}\n"))
            .collect::<Vec<_>>()
            .join("---\n")
    }

    /// A snapshot of three Mappings, and a stream that asked for every cluster, with what it sent.
    fn wildcard_cds() -> (Snapshot, DeltaStream, Vec<Outgoing>) {
        let one = snapshot(&mappings(&["a", "b", "c"]));
        let mut stream = DeltaStream::new(1);
        let cds = DeltaDiscoveryRequest {
            type_url: ResourceType::Cluster.type_url(),
            ..Default::default()
        };
        let sent = stream.on_request(&cds, Some(&one), &Shared::default());
        (one, stream, sent)
    }

    /// A response's frames, small resources copied and large ones shared, decode to the message
    /// prost would have written, resource for resource; its length is what the frame says.
    #[test]
    fn frames_decode_as_the_plain_message() {
        let (one, _, mut out) = wildcard_cds();
        // One resource above the size that goes out as its own chunk.
        let big = SnapshotResource {
            bytes: bytes::Bytes::from(vec![7u8; super::super::SHARED_CHUNK_FROM + 1]),
            version: Version::of_bytes(b"big"),
        };
        out[0].upserts.push((Name::from("zz-big"), big.clone()));
        let r = &out[0];
        let chunks = r.frames();
        assert!(
            chunks.iter().any(|c| c.as_ptr() == big.bytes.as_ptr()),
            "the large resource is shared"
        );
        let total: usize = chunks.iter().map(bytes::Bytes::len).sum();
        assert_eq!(total, 5 + r.encoded_len());
        let len = u32::from_be_bytes(chunks[0][1..5].try_into().unwrap()) as usize;
        assert_eq!(len, r.encoded_len());
        let whole = r.decoded();
        let plain: Vec<(String, String, Vec<u8>)> = one
            .of_type(ResourceType::Cluster)
            .map(|(n, res)| (n.to_string(), res.version.to_string(), res.bytes.to_vec()))
            .chain(std::iter::once((
                "zz-big".to_string(),
                big.version.to_string(),
                big.bytes.to_vec(),
            )))
            .collect();
        let got: Vec<(String, String, Vec<u8>)> = whole
            .resources
            .iter()
            .map(|x| {
                let any = x.resource.clone().unwrap_or_default();
                assert_eq!(any.type_url, ResourceType::Cluster.type_url());
                (x.name.clone(), x.version.clone(), any.value)
            })
            .collect();
        assert_eq!(got, plain);
        assert_eq!(
            (whole.nonce.as_str(), whole.type_url.as_str()),
            (r.nonce.as_str(), r.type_url.as_str())
        );
    }

    /// A stream that has everything of a type as the snapshot has it holds the snapshot's own
    /// map, not a copy: per-stream memory does not grow with the configuration.
    #[test]
    fn what_envoy_has_is_the_snapshots_map_once_it_has_all_of_it() {
        let shared = Shared::default();
        let (one, mut stream, sent) = wildcard_cds();
        assert_eq!(sent.len(), 1);
        let known = |s: &DeltaStream| s.types[&ResourceType::Cluster].known.clone();
        assert!(known(&stream).ptr_eq(&one.type_map(ResourceType::Cluster)));
        // A change: the upserts go out, then the removal; then it is the new snapshot's map.
        let two = snapshot(&mappings(&["a", "b", "d"]));
        let ack = |r: &Outgoing| DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        };
        let mut out = stream.on_snapshot(&two, &shared);
        while let Some(r) = out.pop() {
            out.extend(stream.on_request(&ack(&r), Some(&two), &shared));
        }
        assert!(known(&stream).ptr_eq(&two.type_map(ResourceType::Cluster)));
        // Reconnected with what Envoy had: nothing resent, and the versions it sent are kept.
        let mut again = DeltaStream::new(2);
        let initial = two
            .of_type(ResourceType::Cluster)
            .map(|(n, r)| (n.to_string(), r.version.to_string()))
            .collect();
        let sent = again.on_request(
            &DeltaDiscoveryRequest {
                type_url: ResourceType::Cluster.type_url(),
                initial_resource_versions: initial,
                ..Default::default()
            },
            Some(&two),
            &shared,
        );
        assert!(sent.is_empty(), "{sent:?}");
    }
}
