//! Upstream clusters of Mappings (and TCPMappings, AuthServices): what identifies one
//! ([`ClusterKey`]), gathering their users while routes are lowered, naming them from content,
//! and building the IR clusters (and EDS endpoints), reusing the last translation's where their
//! users and settings did not change. Must not decide routes or which Host serves a Mapping.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::diagnostic::Diagnostic;
use crate::lang::service::Scheme;
use crate::resource::{Meta, ResourceSet};

use super::super::{source_of, LowerOptions};
use super::Resolvers;
use crate::ir::{Cluster, Discovery, SourceRef};

/// Emissary's default connect timeout.
pub(in crate::ir::lower) const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 3000;
/// How many Mappings a cluster lists in `used_by`.
pub(in crate::ir::lower) const USED_BY_MAX: usize = 8;

/// What identifies an upstream cluster.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(in crate::ir::lower) struct ClusterKey {
    pub(in crate::ir::lower) tls: bool,
    pub(in crate::ir::lower) host: String,
    pub(in crate::ir::lower) port: u16,
    /// Addresses from EndpointSlices over EDS (the `kubernetes-endpoint` resolver), not DNS.
    pub(in crate::ir::lower) eds: bool,
    pub(in crate::ir::lower) settings: crate::resource::mapping::ClusterSettings,
}

/// Clusters collected while lowering routes, by the address of their interned key.
pub(in crate::ir::lower) struct Clusters<'a> {
    pub(in crate::ir::lower) by_key: crate::keyed::AddrMap<ClusterUse<'a>>,
    pub(in crate::ir::lower) interner: Interner,
    pub(in crate::ir::lower) resolvers: Resolvers,
}

/// Cluster keys by content, one shared allocation per distinct key (kept by the incremental lowering's `LowerCache`), so
/// that equal keys are found by address: only a new Mapping's key is compared by content.
#[derive(Debug, Default)]
pub(in crate::ir::lower) struct Interner {
    pub(in crate::ir::lower) keys: std::collections::BTreeSet<Arc<ClusterKey>>,
}

impl Interner {
    pub(in crate::ir::lower) fn intern(&mut self, key: ClusterKey) -> Arc<ClusterKey> {
        if let Some(k) = self.keys.get(&key) {
            return Arc::clone(k);
        }
        let k = Arc::new(key);
        self.keys.insert(Arc::clone(&k));
        k
    }

    /// Forgets keys nothing else uses.
    pub(in crate::ir::lower) fn prune(&mut self) {
        self.keys.retain(|k| Arc::strong_count(k) > 1);
    }

    /// Forgets `key` if nothing but the interner (and this handle) holds it.
    pub(in crate::ir::lower) fn release(&mut self, key: Arc<ClusterKey>) {
        if Arc::strong_count(&key) <= 2 {
            self.keys.remove(&*key);
        }
    }
}

impl Clusters<'_> {
    /// No clusters yet; Mappings resolve their services with `resolvers`.
    pub(in crate::ir::lower) fn new<'a>(resolvers: Resolvers, interner: Interner) -> Clusters<'a> {
        Clusters {
            by_key: crate::keyed::AddrMap::default(),
            interner,
            resolvers,
        }
    }
}

/// Who uses a cluster and which settings they ask for.
pub(in crate::ir::lower) struct ClusterUse<'a> {
    pub(in crate::ir::lower) key: Arc<ClusterKey>,
    /// The cluster's name (computed once per key).
    pub(in crate::ir::lower) name: Arc<str>,
    /// Its users, once per Host that takes them (sorted and made unique when finished).
    pub(in crate::ir::lower) users: smallvec::SmallVec<[&'a Meta; 2]>,
    /// Explicit `connect_timeout_ms` values, with the Mapping that asked.
    pub(in crate::ir::lower) connect_timeouts: BTreeMap<u64, &'a Meta>,
}

/// The order of a cluster's users: that of their [`SourceRef`]s (object, then origin).
pub(in crate::ir::lower) fn user_order(a: &Meta, b: &Meta) -> std::cmp::Ordering {
    (&a.kind, &a.namespace, &a.name, &a.origin).cmp(&(&b.kind, &b.namespace, &b.name, &b.origin))
}

/// Whether a cluster built earlier had exactly these users.
pub(in crate::ir::lower) fn same_users(built: &[SourceRef], users: &[&Meta]) -> bool {
    built.len() == users.len()
        && built.iter().zip(users).all(|(s, m)| {
            s.object.kind == m.kind
                && s.object.namespace == m.namespace
                && s.object.name == m.name
                && s.origin == m.origin
        })
}

pub(in crate::ir::lower) fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

pub(in crate::ir::lower) fn base_name(key: &ClusterKey) -> String {
    format!(
        "cluster_{}_{}{}{}",
        sanitize(&key.host),
        key.port,
        if key.tls { "_tls" } else { "" },
        if key.eds { "_eds" } else { "" }
    )
}

/// Cluster names: readable, and made unique with a content hash only when two different
/// upstreams would share one (so adding a Mapping never renames an unrelated cluster).
/// `<base>_<first 4 bytes of digest in hex>`.
pub(in crate::ir::lower) fn with_hex(mut base: String, digest: &[u8]) -> String {
    use std::fmt::Write as _;
    base.push('_');
    for b in digest.iter().take(4) {
        let _ = write!(base, "{b:02x}");
    }
    base
}

pub(in crate::ir::lower) fn cluster_name(key: &ClusterKey) -> String {
    let base = base_name(key);
    // Settings other than the defaults make a cluster of their own, named apart.
    if key.settings != crate::resource::mapping::ClusterSettings::default() {
        use sha2::Digest as _;
        // Only the settings that differ from the defaults go into the hash, so a setting added to
        // attache later does not rename every cluster that has one.
        let defaults = serde_json::to_value(crate::resource::mapping::ClusterSettings::default()).unwrap_or_default();
        let mut set = serde_json::to_value(&key.settings).unwrap_or_default();
        if let (Some(set), Some(defaults)) = (set.as_object_mut(), defaults.as_object()) {
            set.retain(|k, v| defaults.get(k) != Some(v));
        }
        let digest = sha2::Sha256::digest(format!("{}|{}|{}|{set}", key.tls, key.host, key.port));
        return with_hex(base, &digest);
    }
    let lossless = key
        .host
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    // `.` and `-` both become `_`: only names without `_`-ambiguity are used bare.
    if lossless && !key.host.contains('-') {
        base
    } else {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(format!("{}|{}|{}", key.tls, key.host, key.port));
        with_hex(base, &digest)
    }
}

impl<'a> Clusters<'a> {
    /// The resolvers Mappings' services are resolved with.
    pub(in crate::ir::lower) fn resolvers(&self) -> &Resolvers {
        &self.resolvers
    }

    /// Adds a user of the cluster `key`; returns the cluster's name.
    pub(in crate::ir::lower) fn add(
        &mut self,
        key: ClusterKey,
        user: &'a Meta,
        connect_timeout_ms: Option<u64>,
    ) -> String {
        let name = cluster_name(&key);
        let key = self.interner.intern(key);
        self.add_named(&key, &Arc::from(name.as_str()), user, connect_timeout_ms);
        name
    }

    /// Adds a user of the cluster `key` (interned), whose name (`cluster_name(key)`) is known.
    pub(in crate::ir::lower) fn add_named(
        &mut self,
        key: &Arc<ClusterKey>,
        name: &Arc<str>,
        user: &'a Meta,
        connect_timeout_ms: Option<u64>,
    ) {
        let entry = self
            .by_key
            .entry(Arc::as_ptr(key) as usize)
            .or_insert_with(|| ClusterUse {
                key: Arc::clone(key),
                name: Arc::clone(name),
                users: smallvec::SmallVec::new(),
                connect_timeouts: BTreeMap::new(),
            });
        if let Some(t) = connect_timeout_ms {
            let e = entry.connect_timeouts.entry(t).or_insert(user);
            if user_order(user, e).is_lt() {
                *e = user;
            }
        }
        entry.users.push(user);
    }

    /// The clusters, in name order; Mappings that ask one cluster for different settings are
    /// reported (the smallest value is used, whatever the input order).
    pub(in crate::ir::lower) fn finish(
        self,
        set: &ResourceSet,
        secrets: &mut BTreeMap<String, crate::ir::Secret>,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Finished {
        let ambassador_namespace = self.resolvers.ambassador_namespace.clone();
        let mut uses: Vec<ClusterUse<'a>> = self.by_key.into_values().collect();
        uses.sort_by(name_order);
        let mut finished = Finished::default();
        for u in uses {
            let s = settle(u, set, &ambassador_namespace, secrets, &mut finished, diagnostics);
            let users: Vec<SourceRef> = s.users.iter().map(|m| source_of(m)).collect();
            let cluster = cluster_node(&s.key, &s.name, s.connect_timeout_ms, s.upstream_tls, &users);
            finished.clusters.push(Arc::new(cluster));
        }
        finished.endpoints.sort_by(|a, b| a.name.cmp(&b.name));
        finished
    }

    /// What was collected, for a stage that finishes the clusters its own way: the uses (in no
    /// particular order), the interner and the resolvers.
    pub(in crate::ir::lower) fn into_parts(self) -> (Vec<ClusterUse<'a>>, Interner, Resolvers) {
        (self.by_key.into_values().collect(), self.interner, self.resolvers)
    }
}

/// The order of clusters: by name (and key, should two hashed names ever collide).
pub(in crate::ir::lower) fn name_order(a: &ClusterUse<'_>, b: &ClusterUse<'_>) -> std::cmp::Ordering {
    a.name.cmp(&b.name).then_with(|| a.key.cmp(&b.key))
}

/// A cluster's use, settled: what its IR node is built from.
pub(in crate::ir::lower) struct Settled<'a> {
    pub(in crate::ir::lower) key: Arc<ClusterKey>,
    pub(in crate::ir::lower) name: Arc<str>,
    /// Its users in [`user_order`], once each.
    pub(in crate::ir::lower) users: smallvec::SmallVec<[&'a Meta; 2]>,
    pub(in crate::ir::lower) connect_timeout_ms: u64,
    pub(in crate::ir::lower) upstream_tls: Option<crate::ir::UpstreamTls>,
}

/// Settles one cluster's use: its users sorted, its connect timeout (conflicts reported), its
/// upstream TLS (the client certificate added to `secrets` and `finished.client_secrets`) and,
/// for EDS, its endpoints (added to `finished.endpoints`). Clusters must be settled in
/// [`name_order`], so that what is added and reported is in a stable order.
pub(in crate::ir::lower) fn settle<'a>(
    u: ClusterUse<'a>,
    set: &ResourceSet,
    ambassador_namespace: &str,
    secrets: &mut BTreeMap<String, crate::ir::Secret>,
    finished: &mut Finished,
    diagnostics: &mut Vec<Diagnostic>,
) -> Settled<'a> {
    let ClusterUse {
        key: shared,
        name,
        mut users,
        connect_timeouts,
    } = u;
    let Finished {
        endpoints,
        client_secrets,
        ..
    } = finished;
    // Sorted, so that the list does not depend on input order.
    users.sort_by(|a, b| user_order(a, b));
    users.dedup_by(|a, b| a.kind == b.kind && a.namespace == b.namespace && a.name == b.name);
    let key: &ClusterKey = &shared;
    let connect_timeout_ms = connect_timeouts
        .keys()
        .next()
        .copied()
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT_MS);
    for (t, who) in connect_timeouts.iter().skip(1) {
        diagnostics.push(
                Diagnostic::warning(
                    "mapping.conflicting_cluster_setting",
                    format!("connect_timeout_ms {t} conflicts with {connect_timeout_ms} asked by another Mapping for the same service; {connect_timeout_ms} is used"),
                )
                .at(who.origin.clone())
                .on(who.object_ref())
                .path("spec.connect_timeout_ms")
                .hint("Mappings to one service share its cluster: give them the same connect_timeout_ms"),
            );
    }
    let upstream_tls = key.settings.tls_context.as_ref().map(|name| {
            let context = set.tls_contexts.iter().find(|(m, _)| &m.name == name);
            let Some((_, c)) = context else {
                if let Some(who) = users.first() {
                    diagnostics.push(
                        Diagnostic::error(
                            "mapping.missing_tls_context",
                            format!("TLSContext `{name}` not found: TLS to `{}` is originated without a client certificate", key.host),
                        )
                        .at(who.origin.clone())
                        .on(who.object_ref())
                        .path("spec.tls")
                        .hint("create the TLSContext, or use `tls: true` (or an https:// service) for TLS without a client certificate"),
                    );
                }
                return crate::ir::UpstreamTls {
                    client_secret: None,
                    sni: key.host.clone(),
                    alpn_protocols: Vec::new(),
                };
            };
            let client_secret = c.secret.as_ref().and_then(|(ns, n)| {
                let (meta, s) = set.secrets.iter().find(|(m, _)| &m.namespace == ns && &m.name == n)?;
                let full = format!("{ns}/{n}");
                let key = s.private_key.clone()?;
                let secret = crate::ir::Secret {
                    name: full.clone(),
                    certificate_chain: s.certificate_chain.clone(),
                    private_key: Some(crate::ir::PrivateKey(key)),
                    source: Some(super::source_of(meta)),
                };
                client_secrets.push(secret.clone());
                secrets.entry(full.clone()).or_insert(secret);
                Some(full)
            });
            crate::ir::UpstreamTls {
                client_secret,
                sni: c.sni.clone().unwrap_or_else(|| key.host.clone()),
                alpn_protocols: c.settings.alpn_protocols.clone(),
            }
        });
    if key.eds {
        let first = users.first().map(|m| source_of(m));
        endpoints.push(endpoints_of(
            set,
            key,
            &name,
            ambassador_namespace,
            first.as_ref(),
            diagnostics,
        ));
    }
    Settled {
        key: shared,
        name,
        users,
        connect_timeout_ms,
        upstream_tls,
    }
}

/// What [`Clusters::finish`] gives.
#[derive(Default)]
pub(in crate::ir::lower) struct Finished {
    pub(in crate::ir::lower) clusters: Vec<Arc<Cluster>>,
    pub(in crate::ir::lower) endpoints: Vec<crate::ir::Endpoints>,
    /// The client certificates of upstream TLS, also added to the secrets.
    pub(in crate::ir::lower) client_secrets: Vec<crate::ir::Secret>,
}

/// The IR node of a cluster. `users` are its users, in [`user_order`].
pub(in crate::ir::lower) fn cluster_node(
    key: &ClusterKey,
    name: &str,
    connect_timeout_ms: u64,
    upstream_tls: Option<crate::ir::UpstreamTls>,
    users: &[SourceRef],
) -> Cluster {
    let is_ip = key.host.parse::<std::net::IpAddr>().is_ok();
    Cluster {
        upstream_tls,
        name: name.to_string(),
        discovery: if key.eds {
            Discovery::Eds
        } else if is_ip {
            Discovery::Static
        } else if key.settings.logical_dns {
            Discovery::LogicalDns
        } else {
            Discovery::StrictDns
        },
        host: key.host.clone(),
        port: key.port,
        tls: key.tls,
        connect_timeout_ms,
        settings: key.settings.clone(),
        used_by: users.iter().take(USED_BY_MAX).map(|u| u.object.clone()).collect(),
        source: users.first().cloned(),
    }
}

/// The ready pod addresses behind a Service port, from the Service (which port name the Mapping's
/// port number is) and its EndpointSlices (that name's pod port, and the addresses). What is
/// missing is reported on the first Mapping using the cluster; the cluster then has no
/// endpoints (requests get 503 until pods appear).
pub(in crate::ir::lower) fn endpoints_of(
    set: &ResourceSet,
    key: &ClusterKey,
    name: &str,
    ambassador_namespace: &str,
    user: Option<&SourceRef>,
    diagnostics: &mut Vec<Diagnostic>,
) -> crate::ir::Endpoints {
    let mut labels = key.host.split('.');
    let service = labels.next().unwrap_or_default().to_string();
    let namespace = labels.next().unwrap_or(ambassador_namespace).to_string();
    let mut report = |code: &str, message: String, hint: &str| {
        if let Some(who) = user {
            diagnostics.push(
                Diagnostic::warning(code, message)
                    .at(who.origin.clone())
                    .on(who.object.clone())
                    .path("spec.service")
                    .hint(hint),
            );
        }
    };
    let mut addresses = Vec::new();
    match set.services.iter().find(|(m, _)| m.namespace == namespace && m.name == service) {
        None => report(
            "mapping.no_service",
            format!("the kubernetes-endpoint resolver finds no Service {namespace}/{service}: no endpoints, requests get 503"),
            "the service must name a Kubernetes Service as `name.namespace:port` (port: one of the Service's ports)",
        ),
        Some((_, s)) => match s.ports.iter().find(|p| p.port == key.port) {
            None => {
                let ports: Vec<String> = s.ports.iter().map(|p| p.port.to_string()).collect();
                report(
                    "mapping.no_service_port",
                    format!(
                        "Service {namespace}/{service} has no port {} (it has {}): no endpoints, requests get 503",
                        key.port,
                        if ports.is_empty() { "none".to_string() } else { ports.join(", ") }
                    ),
                    "name one of the Service's ports (not the pods' targetPort) in `service:`",
                );
            }
            Some(port) => {
                for (meta, slice) in &set.endpoint_slices {
                    if meta.namespace != namespace || slice.service != service {
                        continue;
                    }
                    if let Some(p) = slice.ports.iter().find(|p| p.name == port.name) {
                        addresses.extend(slice.addresses.iter().map(|a| crate::ir::EndpointAddress {
                            address: a.to_string(),
                            port: p.port,
                        }));
                    }
                }
                addresses.sort();
                addresses.dedup();
            }
        },
    }
    crate::ir::Endpoints {
        name: name.to_string(),
        service: format!("{namespace}/{service}"),
        port: key.port,
        addresses,
        source: user.cloned(),
    }
}

impl ClusterKey {
    /// The upstream of a service as an object in `meta`'s namespace names it: TLS for
    /// `https://` (or a TLS setting), a bare name outside the ambassador namespace qualified with
    /// the object's namespace (as Emissary does), port 80 (443 with TLS) by default.
    pub(in crate::ir::lower) fn for_service(
        service: &crate::lang::service::ServiceRef,
        settings: crate::resource::mapping::ClusterSettings,
        meta: &Meta,
        options: &LowerOptions,
        module: &crate::resource::AmbassadorModule,
    ) -> ClusterKey {
        let tls = service.scheme == Some(Scheme::Https) || settings.originate_tls;
        let mut host = service.host.clone();
        // A bare name is the Mapping's namespace's service (as in Emissary), unless the Module
        // says bare names are attache's namespace's (`use_ambassador_namespace_for_service_resolution`).
        if !service.is_ip
            && !host.contains('.')
            && meta.namespace != options.ambassador_namespace
            && !module.services_in_ambassador_namespace
            && host != "localhost"
        {
            host = format!("{host}.{}", meta.namespace);
        }
        let port = service.port.unwrap_or(if tls { 443 } else { 80 });
        ClusterKey {
            tls,
            host,
            port,
            eds: false,
            settings,
        }
    }
}

/// The cluster of a TCPMapping's service.
pub(in crate::ir::lower) fn tcp_cluster<'a>(
    clusters: &mut Clusters<'a>,
    meta: &'a Meta,
    t: &crate::resource::TcpMapping,
    options: &LowerOptions,
    module: &crate::resource::AmbassadorModule,
) -> String {
    let mut settings = t.cluster.clone();
    if let (false, Some(family)) = (t.ip_families_set, module.dns_lookup_family) {
        settings.dns_lookup_family = family;
    }
    clusters.add(
        ClusterKey::for_service(&t.service, settings, meta, options, module),
        meta,
        None,
    )
}
