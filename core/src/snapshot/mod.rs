//! Stage 6: versioned snapshots of Envoy resources, and what changed between two of them.
//!
//! A [`Snapshot`] maps `(ResourceType, name)` to the resource's encoded protobuf bytes and a content
//! hash. Versions are content hashes: per resource, of its bytes; per type, of the sorted
//! `(name, hash)` pairs. Two replicas given the same input therefore agree on every version.
//! Knows no IR and no tonic; the bytes are opaque here.

pub mod diff;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// The xDS resource types attache serves, in make-before-break order: what a resource refers to is
/// delivered before it (clusters before the routes that name them, listeners before their routes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum ResourceType {
    /// CDS: `envoy.config.cluster.v3.Cluster`.
    Cluster,
    /// EDS: `envoy.config.endpoint.v3.ClusterLoadAssignment`.
    Endpoint,
    /// LDS: `envoy.config.listener.v3.Listener`.
    Listener,
    /// RDS: `envoy.config.route.v3.RouteConfiguration`.
    Route,
    /// SDS: `envoy.extensions.transport_sockets.tls.v3.Secret`.
    Secret,
}

impl ResourceType {
    /// All types in make-before-break order.
    pub const ALL: [ResourceType; 5] = [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Listener,
        ResourceType::Route,
        ResourceType::Secret,
    ];

    /// The full protobuf message name.
    pub fn message_name(self) -> &'static str {
        match self {
            ResourceType::Cluster => "envoy.config.cluster.v3.Cluster",
            ResourceType::Endpoint => "envoy.config.endpoint.v3.ClusterLoadAssignment",
            ResourceType::Listener => "envoy.config.listener.v3.Listener",
            ResourceType::Route => "envoy.config.route.v3.RouteConfiguration",
            ResourceType::Secret => "envoy.extensions.transport_sockets.tls.v3.Secret",
        }
    }

    /// The xDS type URL.
    pub fn type_url(self) -> String {
        format!("type.googleapis.com/{}", self.message_name())
    }

    /// The type for a type URL.
    pub fn from_type_url(url: &str) -> Option<ResourceType> {
        let name = url.strip_prefix("type.googleapis.com/")?;
        Self::from_message_name(name)
    }

    /// The type for a message name.
    pub fn from_message_name(name: &str) -> Option<ResourceType> {
        ResourceType::ALL.into_iter().find(|t| t.message_name() == name)
    }

    /// Short lowercase label (`clusters`, `listeners`...) used in file names and metrics.
    pub fn label(self) -> &'static str {
        match self {
            ResourceType::Cluster => "clusters",
            ResourceType::Endpoint => "endpoints",
            ResourceType::Listener => "listeners",
            ResourceType::Route => "routes",
            ResourceType::Secret => "secrets",
        }
    }

    /// Whether a state-of-the-world response of this type must carry every resource (LDS, CDS),
    /// rather than the names the client asked for (RDS, EDS, SDS).
    pub fn is_full_state(self) -> bool {
        matches!(self, ResourceType::Cluster | ResourceType::Listener)
    }
}

/// One resource: encoded bytes and their hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    /// Protobuf encoding of the message.
    pub bytes: bytes::Bytes,
    /// Content hash of `bytes`.
    pub version: Version,
}

/// The version of a resource: the first 8 bytes of the SHA-256 of its encoding, as 16 hex
/// digits. A plain value (copied, never allocated): every resource carries one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version([u8; 16]);

impl Version {
    /// The version of encoded bytes.
    pub fn of_bytes(data: &[u8]) -> Version {
        Version::of_digest(&Sha256::digest(data))
    }

    fn of_digest(digest: &[u8]) -> Version {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'0'; 16];
        for (i, b) in digest.iter().take(8).enumerate() {
            out[2 * i] = HEX[usize::from(b >> 4)];
            out[2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
        Version(out)
    }

    /// A version as a client sent it back (Envoy's `initial_resource_versions`): attache's own
    /// 16 hex digits, or, for any other text, a version no resource has (it never matches, so the
    /// resource is sent again).
    pub fn from_text(text: &str) -> Version {
        match <[u8; 16]>::try_from(text.as_bytes()) {
            Ok(b) if b.iter().all(u8::is_ascii_hexdigit) => Version(b),
            _ => Version(*b"~~~~~~~~~~~~~~~~"),
        }
    }

    /// The 16 hex digits.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("0000000000000000")
    }
}

impl Default for Version {
    fn default() -> Self {
        Version([b'0'; 16])
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl PartialEq<str> for Version {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl Resource {
    /// Wraps encoded bytes, computing the version.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self::from_shared(bytes.into())
    }

    /// Wraps shared encoded bytes, computing the version.
    pub fn from_shared(bytes: bytes::Bytes) -> Self {
        let version = Version::of_bytes(&bytes);
        Resource { bytes, version }
    }
}

/// The version of a resource's bytes (what [`Resource::from_shared`] computes).
pub fn version_of_bytes(data: &[u8]) -> Version {
    Version::of_bytes(data)
}

fn short_hash(digest: &[u8]) -> String {
    Version::of_digest(digest).to_string()
}

/// The version of a list of (name, resource version) pairs, given sorted by name.
pub fn version_of_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut h = Sha256::new();
    for (name, version) in pairs {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(version.as_bytes());
        h.update([b'\n']);
    }
    short_hash(&h.finalize())
}

/// Resources of one type encoded as `DiscoveryResponse.resources` (field 2, each an `Any` of the
/// type's URL and the resource's encoding), in the order given.
pub fn sotw_encode<'a>(ty: ResourceType, resources: impl Iterator<Item = &'a Resource>) -> bytes::Bytes {
    let type_url = ty.type_url();
    let mut buf = Vec::new();
    for r in resources {
        encode_any(2, &type_url, &r.bytes, &mut buf);
    }
    bytes::Bytes::from(buf)
}

/// Appends field `field` holding a `google.protobuf.Any` of `type_url` and `value`, in
/// protobuf's encoding (what prost would write for that field of the enclosing message).
pub fn encode_any(field: u32, type_url: &str, value: &[u8], buf: &mut Vec<u8>) {
    encode_any_head(field, type_url, value.len(), buf);
    buf.extend_from_slice(value);
}

/// The encoded length of a `google.protobuf.Any` of `type_url` and a value of `value_len` bytes.
pub fn any_len(type_url: &str, value_len: usize) -> usize {
    use prost::encoding::encoded_len_varint;
    let url = 1 + encoded_len_varint(type_url.len() as u64) + type_url.len();
    // proto3: an empty `bytes` field is not written.
    let value = if value_len == 0 {
        0
    } else {
        1 + encoded_len_varint(value_len as u64) + value_len
    };
    url + value
}

/// `encode_any` up to the value's bytes, which the caller writes next (or sends as a chunk of
/// their own): field key and length, the type URL, and the value's key and length.
pub fn encode_any_head(field: u32, type_url: &str, value_len: usize, buf: &mut impl bytes::BufMut) {
    use prost::encoding::{encode_key, encode_varint, WireType};
    encode_key(field, WireType::LengthDelimited, buf);
    encode_varint(any_len(type_url, value_len) as u64, buf);
    encode_key(1, WireType::LengthDelimited, buf);
    encode_varint(type_url.len() as u64, buf);
    buf.put_slice(type_url.as_bytes());
    if value_len > 0 {
        encode_key(2, WireType::LengthDelimited, buf);
        encode_varint(value_len as u64, buf);
    }
}

/// A resource's name, shared: snapshots, diffs and streams hold the same allocation.
pub type Name = Arc<str>;

/// The resources of one type by name: a persistent (structurally shared) ordered map. A copy
/// costs one reference count, and a copy changed in a few places shares everything else with
/// the original, so a translation that changes one resource among 10,000 builds its snapshot,
/// and compares it with the last one, in a few microseconds.
pub type ResourceMap = imbl::OrdMap<Name, Resource>;

/// All resources at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    resources: BTreeMap<ResourceType, ResourceMap>,
    /// The version of each type, computed once when first asked for (every stream's response
    /// and every reload's log line ask); emptied by any change.
    versions: OnceLock<BTreeMap<ResourceType, String>>,
    /// Each full-state type's resources as a SotW response carries them, encoded once when first
    /// asked for (`sotw_resources`); emptied by any change.
    sotw_encoded: [OnceLock<bytes::Bytes>; ResourceType::ALL.len()],
}

impl PartialEq for Snapshot {
    fn eq(&self, other: &Self) -> bool {
        self.resources == other.resources
    }
}

impl Eq for Snapshot {}

impl Snapshot {
    /// A snapshot of these maps (empty ones are left out).
    pub fn from_maps(maps: impl IntoIterator<Item = (ResourceType, ResourceMap)>) -> Self {
        Snapshot {
            resources: maps.into_iter().filter(|(_, m)| !m.is_empty()).collect(),
            versions: OnceLock::new(),
            sotw_encoded: Default::default(),
        }
    }

    /// The resources of one type (none: an empty map).
    pub fn map(&self, ty: ResourceType) -> Option<&ResourceMap> {
        self.resources.get(&ty)
    }

    /// Adds (or replaces) a resource.
    pub fn insert(&mut self, ty: ResourceType, name: impl Into<Name>, resource: Resource) {
        self.versions = OnceLock::new();
        self.sotw_encoded = Default::default();
        self.resources.entry(ty).or_default().insert(name.into(), resource);
    }

    /// Removes a resource (if present).
    pub fn remove(&mut self, ty: ResourceType, name: &str) {
        self.versions = OnceLock::new();
        self.sotw_encoded = Default::default();
        if let Some(m) = self.resources.get_mut(&ty) {
            m.remove(name);
            if m.is_empty() {
                self.resources.remove(&ty);
            }
        }
    }

    /// The resources of one type, by name.
    pub fn of_type(&self, ty: ResourceType) -> impl Iterator<Item = (&Name, &Resource)> {
        self.resources.get(&ty).into_iter().flat_map(|m| m.iter())
    }

    /// The resources of one type as a map sharing this snapshot's (a copy costs one reference
    /// count: a stream can hold "what I sent" for 10,000 clusters at no cost of its own).
    pub fn type_map(&self, ty: ResourceType) -> ResourceMap {
        self.resources.get(&ty).cloned().unwrap_or_default()
    }

    /// Every resource of a type encoded as `DiscoveryResponse.resources` (field 2, each an
    /// `Any` of the type's URL and the resource's encoding), in name order: what a SotW response
    /// of a full-state type carries, encoded once per snapshot and sent by every stream as a
    /// shared chunk of its response (a reference count per stream, not a copy).
    pub fn sotw_resources(&self, ty: ResourceType) -> bytes::Bytes {
        let i = ResourceType::ALL.iter().position(|t| *t == ty).unwrap_or(0);
        self.sotw_encoded[i]
            .get_or_init(|| sotw_encode(ty, self.of_type(ty).map(|(_, r)| r)))
            .clone()
    }

    /// One resource, with the snapshot's own name for it.
    pub fn get_key_value(&self, ty: ResourceType, name: &str) -> Option<(&Name, &Resource)> {
        self.resources.get(&ty)?.get_key_value(name)
    }

    /// One resource.
    pub fn get(&self, ty: ResourceType, name: &str) -> Option<&Resource> {
        self.resources.get(&ty)?.get(name)
    }

    /// Number of resources of one type.
    pub fn count(&self, ty: ResourceType) -> usize {
        self.resources.get(&ty).map_or(0, ResourceMap::len)
    }

    /// The version of everything of one type (the SotW `version_info` of LDS and CDS): a hash
    /// over its sorted (name, version) pairs, computed once per snapshot.
    pub fn type_version(&self, ty: ResourceType) -> String {
        let versions = self.versions.get_or_init(|| {
            ResourceType::ALL
                .into_iter()
                .map(|ty| {
                    let pairs = self.of_type(ty).map(|(n, r)| (&**n, r.version.as_str()));
                    (ty, version_of_pairs(pairs))
                })
                .collect()
        });
        versions.get(&ty).cloned().unwrap_or_default()
    }

    /// One version for the whole snapshot (for logs and metrics).
    pub fn version(&self) -> String {
        let mut h = Sha256::new();
        for ty in ResourceType::ALL {
            h.update(ty.label().as_bytes());
            h.update(self.type_version(ty).as_bytes());
        }
        short_hash(&h.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_content_hashes() {
        let mut a = Snapshot::default();
        a.insert(ResourceType::Cluster, "x", Resource::new(vec![1, 2]));
        a.insert(ResourceType::Cluster, "y", Resource::new(vec![3]));
        let mut b = Snapshot::default();
        b.insert(ResourceType::Cluster, "y", Resource::new(vec![3]));
        b.insert(ResourceType::Cluster, "x", Resource::new(vec![1, 2]));
        assert_eq!(
            a.type_version(ResourceType::Cluster),
            b.type_version(ResourceType::Cluster)
        );
        assert_eq!(a.version(), b.version());
        b.insert(ResourceType::Cluster, "x", Resource::new(vec![1, 3]));
        assert_ne!(
            a.type_version(ResourceType::Cluster),
            b.type_version(ResourceType::Cluster)
        );
        assert_eq!(a.get(ResourceType::Cluster, "y"), b.get(ResourceType::Cluster, "y"));
        // Versions are remembered, and forgotten by any change.
        let mut only_y = Snapshot::default();
        only_y.insert(ResourceType::Cluster, "y", Resource::new(vec![3]));
        assert_ne!(a.version(), only_y.version());
        a.remove(ResourceType::Cluster, "x");
        assert_eq!(a.version(), only_y.version());
        assert_eq!(
            a.type_version(ResourceType::Cluster),
            only_y.type_version(ResourceType::Cluster)
        );
    }

    #[test]
    fn type_urls_round_trip() {
        for ty in ResourceType::ALL {
            assert_eq!(ResourceType::from_type_url(&ty.type_url()), Some(ty));
        }
    }
}
