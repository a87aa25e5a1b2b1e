//! Mapping resources → routes (in Emissary's match order) and deduplicated clusters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, PoisonError};

pub(super) mod patch;

use crate::diagnostic::Diagnostic;
use crate::lang::service::Scheme;
use crate::resource::host::InsecureAction;
use crate::resource::mapping::HeaderValue;
use crate::resource::resolver::{Resolver, BUILT_IN};
use crate::resource::{LabelSelector, Mapping, Meta, ResourceSet};

use super::host::{globs_intersect, EffectiveHost};
use super::{source_of, LowerOptions};
use crate::ir::{
    Cluster, Discovery, HeaderMatch, MatchKind, Mirror, Route, RouteAction, RuntimeFraction, SecurityModel, SourceRef,
};

/// Emissary's default upstream timeout (`cluster_request_timeout_ms`).
const DEFAULT_TIMEOUT_MS: u64 = 3000;
/// Emissary's default connect timeout.
const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 3000;
/// How many Mappings a cluster lists in `used_by`.
const USED_BY_MAX: usize = 8;

/// What identifies an upstream cluster.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct ClusterKey {
    tls: bool,
    host: String,
    port: u16,
    /// Addresses from EndpointSlices over EDS (the `kubernetes-endpoint` resolver), not DNS.
    eds: bool,
    settings: crate::resource::mapping::ClusterSettings,
}

/// Clusters collected while lowering routes, by the address of their interned key.
pub(super) struct Clusters<'a> {
    by_key: crate::keyed::AddrMap<ClusterUse<'a>>,
    interner: Interner,
    resolvers: Resolvers,
}

/// Cluster keys by content, one shared allocation per distinct key (kept by [`LowerCache`]), so
/// that equal keys are found by address: only a new Mapping's key is compared by content.
#[derive(Debug, Default)]
pub(super) struct Interner {
    keys: std::collections::BTreeSet<Arc<ClusterKey>>,
}

impl Interner {
    fn intern(&mut self, key: ClusterKey) -> Arc<ClusterKey> {
        if let Some(k) = self.keys.get(&key) {
            return Arc::clone(k);
        }
        let k = Arc::new(key);
        self.keys.insert(Arc::clone(&k));
        k
    }

    /// Forgets keys nothing else uses.
    pub(super) fn prune(&mut self) {
        self.keys.retain(|k| Arc::strong_count(k) > 1);
    }

    /// Forgets `key` if nothing but the interner (and this handle) holds it.
    fn release(&mut self, key: Arc<ClusterKey>) {
        if Arc::strong_count(&key) <= 2 {
            self.keys.remove(&*key);
        }
    }
}

/// A cluster of the last translation, with what it was built from.
#[derive(Debug)]
pub(super) struct BuiltCluster {
    key: Arc<ClusterKey>,
    /// Its users, in [`user_order`].
    users: Vec<SourceRef>,
    connect_timeout_ms: u64,
    upstream_tls: Option<crate::ir::UpstreamTls>,
    cluster: Arc<Cluster>,
}

/// Resolver names in effect: the built-in ones, the declared ones, and the Module's default.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Resolvers {
    declared: BTreeMap<String, Resolver>,
    default: Option<String>,
    ambassador_namespace: String,
}

impl Clusters<'_> {
    /// No clusters yet; Mappings resolve their services with `resolvers`.
    pub(super) fn new<'a>(resolvers: Resolvers, interner: Interner) -> Clusters<'a> {
        Clusters {
            by_key: crate::keyed::AddrMap::default(),
            interner,
            resolvers,
        }
    }
}

impl Resolvers {
    /// The resolvers of `set`; a Mapping or Module naming one that does not exist is reported
    /// (once, here) and resolves by DNS.
    pub(super) fn new(set: &ResourceSet, options: &LowerOptions, diagnostics: &mut Vec<Diagnostic>) -> Resolvers {
        let mut declared = BTreeMap::new();
        for (meta, r) in &set.resolvers {
            declared.entry(meta.name.clone()).or_insert(*r);
        }
        let resolvers = Resolvers {
            declared,
            default: set.module.as_ref().and_then(|(_, m)| m.resolver.clone()),
            ambassador_namespace: options.ambassador_namespace.clone(),
        };
        let unknown = |name: &str| resolvers.kind(name).is_none();
        let hint = "declare a KubernetesEndpointResolver or KubernetesServiceResolver with this name, or use the built-in `kubernetes-endpoint` or `kubernetes-service`";
        if let (Some((meta, _)), Some(name)) = (&set.module, &resolvers.default) {
            if unknown(name) {
                diagnostics.push(
                    Diagnostic::error(
                        "module.unknown_resolver",
                        format!("resolver `{name}` does not exist: Mappings resolve their services by DNS"),
                    )
                    .at(meta.origin.clone())
                    .on(meta.object_ref())
                    .path("spec.config.resolver")
                    .hint(hint),
                );
            }
        }
        resolvers
    }

    /// Reports the Mappings that name a resolver that does not exist, with each Mapping's
    /// address.
    pub(super) fn unknown<'m>(
        &self,
        mappings: impl IntoIterator<Item = &'m Arc<(Meta, Mapping)>>,
    ) -> Vec<(usize, Diagnostic)> {
        let hint = "declare a KubernetesEndpointResolver or KubernetesServiceResolver with this name, or use the built-in `kubernetes-endpoint` or `kubernetes-service`";
        mappings
            .into_iter()
            .filter_map(|e| {
                let (meta, m) = &**e;
                let name = m.resolver.as_deref().filter(|n| self.kind(n).is_none())?;
                Some((
                    addr(e),
                    Diagnostic::error(
                        "mapping.unknown_resolver",
                        format!(
                            "resolver `{name}` does not exist: `{}` is resolved by DNS",
                            m.service_text
                        ),
                    )
                    .at(meta.origin.clone())
                    .on(meta.object_ref())
                    .path("spec.resolver")
                    .hint(hint),
                ))
            })
            .collect()
    }

    fn kind(&self, name: &str) -> Option<Resolver> {
        self.declared
            .get(name)
            .copied()
            .or_else(|| BUILT_IN.iter().find(|(n, _)| *n == name).map(|(_, r)| *r))
    }

    /// Whether a Mapping naming `resolver` (or none) gets its addresses over EDS.
    fn endpoint(&self, resolver: Option<&str>) -> bool {
        resolver.or(self.default.as_deref()).and_then(|name| self.kind(name)) == Some(Resolver::Endpoint)
    }
}

/// Who uses a cluster and which settings they ask for.
struct ClusterUse<'a> {
    key: Arc<ClusterKey>,
    /// The cluster's name (computed once per key).
    name: Arc<str>,
    /// Its users, once per Host that takes them (sorted and made unique when finished).
    users: smallvec::SmallVec<[&'a Meta; 2]>,
    /// Explicit `connect_timeout_ms` values, with the Mapping that asked.
    connect_timeouts: BTreeMap<u64, &'a Meta>,
}

/// The order of a cluster's users: that of their [`SourceRef`]s (object, then origin).
fn user_order(a: &Meta, b: &Meta) -> std::cmp::Ordering {
    (&a.kind, &a.namespace, &a.name, &a.origin).cmp(&(&b.kind, &b.namespace, &b.name, &b.origin))
}

/// Whether a cluster built earlier had exactly these users.
fn same_users(built: &[SourceRef], users: &[&Meta]) -> bool {
    built.len() == users.len()
        && built.iter().zip(users).all(|(s, m)| {
            s.object.kind == m.kind
                && s.object.namespace == m.namespace
                && s.object.name == m.name
                && s.origin == m.origin
        })
}

fn sanitize(s: &str) -> String {
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

fn base_name(key: &ClusterKey) -> String {
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
fn with_hex(mut base: String, digest: &[u8]) -> String {
    use std::fmt::Write as _;
    base.push('_');
    for b in digest.iter().take(4) {
        let _ = write!(base, "{b:02x}");
    }
    base
}

fn cluster_name(key: &ClusterKey) -> String {
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
    pub(super) fn resolvers(&self) -> &Resolvers {
        &self.resolvers
    }

    /// Adds a user of the cluster `key`; returns the cluster's name.
    fn add(&mut self, key: ClusterKey, user: &'a Meta, connect_timeout_ms: Option<u64>) -> String {
        let name = cluster_name(&key);
        let key = self.interner.intern(key);
        self.add_named(&key, &Arc::from(name.as_str()), user, connect_timeout_ms);
        name
    }

    /// Adds a user of the cluster `key` (interned), whose name (`cluster_name(key)`) is known.
    fn add_named(&mut self, key: &Arc<ClusterKey>, name: &Arc<str>, user: &'a Meta, connect_timeout_ms: Option<u64>) {
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

    /// The clusters; Mappings that ask one cluster for different settings are reported (the
    /// smallest value is used, whatever the input order).
    /// `built` holds the last translation's clusters: one whose inputs did not change is the
    /// same allocation again (rendering recognises it by address). Returns the interner too.
    pub(super) fn finish(
        self,
        set: &ResourceSet,
        secrets: &mut BTreeMap<String, crate::ir::Secret>,
        built: &mut crate::keyed::AddrMap<BuiltCluster>,
        list: &mut Vec<(Arc<ClusterKey>, Arc<Cluster>)>,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Finished {
        let mut endpoints = Vec::new();
        let mut client_secrets = Vec::new();
        let ambassador_namespace = self.resolvers.ambassador_namespace.clone();
        let mut previous = std::mem::take(built);
        // By name (and key, should two hashed names ever collide), whatever the map's order;
        // the last translation's clusters keep their order (a key it had is still the same
        // allocation, as `previous` holds it), only new ones are placed.
        let key_addr = |u: &ClusterUse<'_>| Arc::as_ptr(&u.key) as usize;
        let order: Vec<usize> = list.iter().map(|(k, _)| Arc::as_ptr(k) as usize).collect();
        let uses = crate::keyed::sort_incrementally(
            self.by_key.into_values().collect(),
            &order,
            |u| Some(key_addr(u)).filter(|a| previous.contains_key(a)),
            |a, b| a.name.cmp(&b.name).then_with(|| a.key.cmp(&b.key)),
        );
        let keys: Vec<Arc<ClusterKey>> = uses.iter().map(|u| Arc::clone(&u.key)).collect();
        let out: Vec<Arc<Cluster>> = uses
            .into_iter()
            .map(|ClusterUse { key: shared, name, mut users, connect_timeouts }| {
                // Sorted, so that the list does not depend on input order.
                users.sort_by(|a, b| user_order(a, b));
                users.dedup_by(|a, b| a.kind == b.kind && a.namespace == b.namespace && a.name == b.name);
                let key: &ClusterKey = &shared;
                let connect_timeout_ms = connect_timeouts.keys().next().copied().unwrap_or(DEFAULT_CONNECT_TIMEOUT_MS);
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
                    endpoints.push(endpoints_of(set, key, &name, &ambassador_namespace, first.as_ref(), diagnostics));
                }
                let address = Arc::as_ptr(&shared) as usize;
                if let Some(b) = previous.remove(&address).filter(|b| {
                    Arc::ptr_eq(&b.key, &shared)
                        && same_users(&b.users, &users)
                        && b.connect_timeout_ms == connect_timeout_ms
                        && b.upstream_tls == upstream_tls
                }) {
                    let cluster = Arc::clone(&b.cluster);
                    built.insert(address, b);
                    return cluster;
                }
                let users: Vec<SourceRef> = users.iter().map(|m| source_of(m)).collect();
                let cluster = Arc::new(cluster_node(key, &name, connect_timeout_ms, upstream_tls.clone(), &users));
                built.insert(
                    address,
                    BuiltCluster {
                        key: shared,
                        users,
                        connect_timeout_ms,
                        upstream_tls,
                        cluster: Arc::clone(&cluster),
                    },
                );
                cluster
            })
            .collect();
        *list = keys.into_iter().zip(out.iter().cloned()).collect();
        endpoints.sort_by(|a, b| a.name.cmp(&b.name));
        Finished {
            clusters: out,
            endpoints,
            client_secrets,
            interner: self.interner,
        }
    }

    /// The interner, when the clusters are not finished (a patched translation keeps the last
    /// one's).
    pub(super) fn into_interner(self) -> Interner {
        self.interner
    }
}

/// What [`Clusters::finish`] gives.
pub(super) struct Finished {
    pub(super) clusters: Vec<Arc<Cluster>>,
    pub(super) endpoints: Vec<crate::ir::Endpoints>,
    /// The client certificates of upstream TLS, also added to the secrets.
    pub(super) client_secrets: Vec<crate::ir::Secret>,
    pub(super) interner: Interner,
}

/// The IR node of a cluster. `users` are its users, in [`user_order`].
fn cluster_node(
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
fn endpoints_of(
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
    fn for_service(
        service: &crate::lang::service::ServiceRef,
        settings: crate::resource::mapping::ClusterSettings,
        meta: &Meta,
        options: &LowerOptions,
    ) -> ClusterKey {
        let tls = service.scheme == Some(Scheme::Https) || settings.originate_tls;
        let mut host = service.host.clone();
        if !service.is_ip
            && !host.contains('.')
            && meta.namespace != options.ambassador_namespace
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
pub(super) fn tcp_cluster<'a>(
    clusters: &mut Clusters<'a>,
    meta: &'a Meta,
    t: &crate::resource::TcpMapping,
    options: &LowerOptions,
) -> String {
    clusters.add(
        ClusterKey::for_service(&t.service, t.cluster.clone(), meta, options),
        meta,
        None,
    )
}

/// Request headers Emissary always sends to an HTTP AuthService.
const AUTH_DEFAULT_HEADERS: &[&str] = &[
    "authorization",
    "cookie",
    "from",
    "proxy-authorization",
    "user-agent",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

/// The `ext_authz` filter for the AuthService, with its cluster.
pub(super) fn auth_filter<'a>(
    clusters: &mut Clusters<'a>,
    meta: &'a Meta,
    a: &crate::resource::AuthService,
    options: &LowerOptions,
) -> crate::ir::AuthFilter {
    use crate::resource::authservice::AuthProto;
    let settings = crate::resource::mapping::ClusterSettings {
        http2: a.proto == AuthProto::Grpc,
        ..a.cluster.clone()
    };
    let key = ClusterKey::for_service(&a.service, settings, meta, options);
    let (tls, host, port) = (key.tls, key.host.clone(), key.port);
    let cluster = clusters.add(key, meta, None);
    let mut allowed: Vec<String> = AUTH_DEFAULT_HEADERS.iter().map(|s| (*s).to_string()).collect();
    allowed.extend(a.allowed_request_headers.iter().cloned());
    allowed.sort();
    allowed.dedup();
    let bracketed = if host.contains(':') { format!("[{host}]") } else { host };
    crate::ir::AuthFilter {
        cluster,
        uri: format!("{}://{bracketed}:{port}", if tls { "https" } else { "http" }),
        proto: a.proto,
        path_prefix: a.path_prefix.clone(),
        timeout_ms: a.timeout_ms,
        allowed_request_headers: allowed,
        allowed_authorization_headers: a.allowed_authorization_headers.clone(),
        failure_mode_allow: a.failure_mode_allow,
        status_on_error: a.status_on_error,
        include_body: a.include_body.map(|(max_bytes, allow_partial)| crate::ir::IncludeBody {
            max_bytes,
            allow_partial,
        }),
        add_auth_headers: a
            .add_auth_headers
            .iter()
            .map(|(name, value)| crate::ir::NameValue {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
    }
}

/// The `:authority` condition a Mapping adds inside a virtual host, if any.
fn authority_match(m: &Mapping, vhost_hostname: &str) -> Option<HeaderMatch> {
    if let Some(host) = &m.host {
        return Some(HeaderMatch {
            name: ":authority".into(),
            kind: if m.host_regex {
                MatchKind::Regex
            } else {
                MatchKind::Exact
            },
            value: host.clone(),
        });
    }
    let glob = m.hostname.as_deref().unwrap_or("*");
    if glob == "*" || glob.eq_ignore_ascii_case(vhost_hostname) {
        return None;
    }
    Some(if let Some(suffix) = glob.strip_prefix('*') {
        HeaderMatch {
            name: ":authority".into(),
            kind: MatchKind::Suffix,
            value: suffix.to_string(),
        }
    } else if let Some(prefix) = glob.strip_suffix('*') {
        HeaderMatch {
            name: ":authority".into(),
            kind: MatchKind::Prefix,
            value: prefix.to_string(),
        }
    } else {
        HeaderMatch {
            name: ":authority".into(),
            kind: MatchKind::Exact,
            value: glob.to_string(),
        }
    })
}

/// Whether a Mapping is served by a Host: Emissary's rule (`IRHost.matches_httpgroup`, strict
/// selectors as since Emissary 2.5 and 3.2).
/// - The Mapping's host match: a `host_regex` matches every Host (its `:authority` condition
///   decides); a `hostname` glob or exact `host` matches the Hosts whose glob it intersects.
/// - A Host with a `mappingSelector` (with at least one label) takes the Mappings whose labels
///   have all of its labels *and* whose host match (if any) matches.
/// - A Host without one takes the Mappings whose host match matches.
/// - So a Mapping with neither `hostname` nor `host` is served only by Hosts that select it by
///   label: "a Mapping that specifies no host can never match a Host that specifies no
///   mappingSelector".
fn associated(meta: &Meta, m: &Mapping, h: &EffectiveHost) -> bool {
    let host_match = if m.host_regex {
        Some(true)
    } else {
        m.hostname
            .as_deref()
            .or(m.host.as_deref())
            .map(|glob| globs_intersect(glob, &h.hostname))
    };
    let selector = h.mapping_selector.as_ref().filter(|s| !s.match_labels.is_empty());
    match (selector, host_match) {
        (Some(s), host_match) => host_match != Some(false) && s.matches(&meta.labels),
        (None, host_match) => host_match == Some(true),
    }
}

/// What a Mapping's lowering reads besides the Mapping and its Host: anything read there must be in
/// here. When it changes (a new Module, AuthService, resolver or option), [`LowerCache`] starts
/// over.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Context {
    module: crate::resource::AmbassadorModule,
    has_auth: bool,
    resolvers: Resolvers,
    options: LowerOptions,
}

impl Context {
    pub(super) fn new(set: &ResourceSet, options: &LowerOptions, resolvers: &Resolvers) -> Context {
        Context {
            module: set.module.as_ref().map(|(_, m)| m.clone()).unwrap_or_default(),
            has_auth: set.auth_service.is_some(),
            resolvers: resolvers.clone(),
            options: options.clone(),
        }
    }
}

/// What of a Host a Mapping's lowering reads.
#[derive(Clone, Debug, PartialEq)]
struct HostContext {
    hostname: String,
    insecure_action: InsecureAction,
    mapping_selector: Option<LabelSelector>,
}

impl HostContext {
    fn of(h: &EffectiveHost) -> HostContext {
        HostContext {
            hostname: h.hostname.clone(),
            insecure_action: h.insecure_action,
            mapping_selector: h.mapping_selector.clone(),
        }
    }
}

/// Which route of a Mapping: its primary route, the primary restricted to
/// `X-Forwarded-Proto: https`, or its cleartext variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Base,
    Secure,
    Insecure(RouteAction),
}

/// What a route reads besides its Mapping, Host and [`Context`].
#[derive(Clone, Debug, PartialEq, Eq)]
struct RouteSlot {
    variant: Variant,
    threshold: Option<u32>,
    mirrors: Vec<Mirror>,
}

/// What one Mapping lowers to on one Host: kept between translations, so an unchanged Mapping
/// costs a lookup (and its routes are the same allocations, which rendering recognises).
#[derive(Debug)]
struct Lowered {
    /// The Mapping (held, so that its address identifies it while this entry lives).
    mapping: Arc<(Meta, Mapping)>,
    /// The last translation that used this entry.
    generation: AtomicU64,
    /// The translation that made it (an address seen before may name a new Mapping then).
    created: u64,
    /// Whether the Host takes the Mapping; nothing below is set when not.
    associated: bool,
    headers: Vec<HeaderMatch>,
    query: Vec<HeaderMatch>,
    /// The upstream and its name (none for a host redirect).
    cluster: Option<(Arc<ClusterKey>, Arc<str>)>,
    /// Routes built so far, by what else they read (usually one or two).
    routes: Mutex<Vec<(RouteSlot, Arc<Route>)>>,
}

/// Mappings lowered by earlier translations, per Host and Mapping. Entries a translation does
/// not use are dropped at its end; a change of what every Mapping reads (the Module, the
/// AuthService, resolvers) empties it. Output with the cache is exactly output without it (a
/// property test checks this).
#[derive(Default)]
pub struct LowerCache {
    context: Option<Context>,
    hosts: Vec<HostEntries>,
    generation: u64,
    /// Interned cluster keys.
    pub(super) interner: Interner,
    /// The last translation's clusters by the address of their keys, and in name order.
    pub(super) clusters: crate::keyed::AddrMap<BuiltCluster>,
    pub(super) cluster_list: Vec<(Arc<ClusterKey>, Arc<Cluster>)>,
    /// (Mappings reused, Mappings lowered) per Host, in the last translation.
    stats: (usize, usize),
    /// What the next translation needs to patch this one.
    pub(super) last: Option<patch::Last>,
    /// Whether the last translation patched the one before.
    pub(super) patched: bool,
}

/// The cache's entries for one Host.
struct HostEntries {
    ctx: HostContext,
    entries: crate::keyed::AddrMap<Arc<Lowered>>,
    /// The Host's Mappings in route order, in the last translation.
    order: Vec<Arc<Lowered>>,
    /// Its shadow Mappings, and whether some Mapping it takes has a CORS policy, in the last
    /// translation.
    shadows: Vec<Arc<Lowered>>,
    any_cors: bool,
}

impl std::fmt::Debug for LowerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LowerCache")
            .field("hosts", &self.hosts.len())
            .field("entries", &self.hosts.iter().map(|h| h.entries.len()).sum::<usize>())
            .field("generation", &self.generation)
            .finish()
    }
}

impl LowerCache {
    /// Starts a translation in `context`.
    pub(super) fn begin(&mut self, context: Context) {
        if self.context.as_ref() != Some(&context) {
            self.hosts.clear();
            self.context = Some(context);
        }
        self.generation += 1;
        self.stats = (0, 0);
    }

    /// Ends a translation: drops what it did not use.
    pub(super) fn end(&mut self) {
        let generation = self.generation;
        for h in &mut self.hosts {
            h.entries
                .retain(|_, e| e.generation.load(AtomicOrdering::Relaxed) == generation);
        }
        self.hosts.retain(|h| !h.entries.is_empty());
    }

    /// Keeps a Host's route order (and shadows) for the next translation.
    pub(super) fn keep_order(&mut self, host: &EffectiveHost, kept: Kept) {
        let ctx = HostContext::of(host);
        if let Some(h) = self.hosts.iter_mut().find(|h| h.ctx == ctx) {
            h.order = kept.order;
            h.shadows = kept.shadows;
            h.any_cors = kept.any_cors;
        }
    }

    /// (Mapping lowerings reused, Mapping lowerings computed) in the last translation, one per
    /// Mapping and Host.
    pub fn last_stats(&self) -> (usize, usize) {
        self.stats
    }

    /// Whether the last translation patched the one before it (only a few plain Mappings had
    /// changed) rather than lowering every Mapping again.
    pub fn last_patched(&self) -> bool {
        self.patched
    }

    fn host(&self, host: &EffectiveHost) -> Option<&HostEntries> {
        let ctx = HostContext::of(host);
        self.hosts.iter().find(|h| h.ctx == ctx)
    }
}

fn addr(e: &Arc<(Meta, Mapping)>) -> usize {
    Arc::as_ptr(e) as usize
}

/// Brings the cache's entries for `host` up to date with `set`: Mappings it has not seen (or
/// seen differently, which is a new allocation) are lowered.
pub(super) fn refresh(
    set: &ResourceSet,
    host: &EffectiveHost,
    options: &LowerOptions,
    clusters: &mut Clusters,
    cache: &mut LowerCache,
) {
    let generation = cache.generation;
    let ctx = HostContext::of(host);
    let index = match cache.hosts.iter().position(|h| h.ctx == ctx) {
        Some(i) => i,
        None => {
            cache.hosts.push(HostEntries {
                ctx,
                entries: crate::keyed::AddrMap::with_capacity_and_hasher(set.mappings.len(), Default::default()),
                order: Vec::new(),
                shadows: Vec::new(),
                any_cors: false,
            });
            cache.hosts.len() - 1
        }
    };
    let module = cache.context.as_ref().map(|c| c.module.clone()).unwrap_or_default();
    let (mut reused, mut lowered) = cache.stats;
    let entries = &mut cache.hosts[index].entries;
    for e in &set.mappings {
        if let Some(hit) = entries.get(&addr(e)) {
            hit.generation.store(generation, AtomicOrdering::Relaxed);
            reused += 1;
            continue;
        }
        lowered += 1;
        let l = lower_one(
            e,
            host,
            options,
            &clusters.resolvers,
            &mut clusters.interner,
            &module,
            generation,
        );
        entries.insert(addr(e), Arc::new(l));
    }
    cache.stats = (reused, lowered);
}

/// What a Host's Mapping needs before routes are ordered: its matchers and its cluster.
fn lower_one(
    e: &Arc<(Meta, Mapping)>,
    host: &EffectiveHost,
    options: &LowerOptions,
    resolvers: &Resolvers,
    interner: &mut Interner,
    module: &crate::resource::AmbassadorModule,
    generation: u64,
) -> Lowered {
    let (meta, m) = &**e;
    let mut lowered = Lowered {
        mapping: Arc::clone(e),
        generation: AtomicU64::new(generation),
        created: generation,
        associated: associated(meta, m, host),
        headers: Vec::new(),
        query: Vec::new(),
        cluster: None,
        routes: Mutex::new(Vec::new()),
    };
    if !lowered.associated {
        return lowered;
    }
    let mut headers: Vec<HeaderMatch> = m
        .headers
        .iter()
        .map(|(name, v)| matcher(name.to_ascii_lowercase(), v))
        .collect();
    headers.extend(m.regex_headers.iter().map(|(name, re)| HeaderMatch {
        name: name.to_ascii_lowercase(),
        kind: MatchKind::Regex,
        value: re.clone(),
    }));
    if let Some(a) = authority_match(m, &host.hostname) {
        headers.push(a);
    }
    let mut query: Vec<HeaderMatch> = m
        .query_parameters
        .iter()
        .map(|(name, v)| matcher(name.clone(), v))
        .chain(m.regex_query_parameters.iter().map(|(name, re)| HeaderMatch {
            name: name.clone(),
            kind: MatchKind::Regex,
            value: re.clone(),
        }))
        .collect();
    query.sort();
    if let Some(method) = &m.method {
        headers.push(HeaderMatch {
            name: ":method".into(),
            kind: if m.method_regex {
                MatchKind::Regex
            } else {
                MatchKind::Exact
            },
            value: if m.method_regex {
                method.clone()
            } else {
                method.to_ascii_uppercase()
            },
        });
    }
    headers.sort();
    lowered.headers = headers;
    lowered.query = query;
    // A host redirect sends clients elsewhere: no cluster.
    if m.redirect.is_none() {
        let eds = !m.service.is_ip && resolvers.endpoint(m.resolver.as_deref());
        let key = ClusterKey::for_service(
            &m.service,
            {
                // The Module's defaults for what the Mapping leaves unset.
                let mut s = m.cluster.clone();
                if s.circuit_breakers.is_empty() {
                    s.circuit_breakers.clone_from(&module.circuit_breakers);
                }
                s.idle_timeout_ms = s.idle_timeout_ms.or(module.cluster_idle_timeout_ms);
                s.max_connection_lifetime_ms = s
                    .max_connection_lifetime_ms
                    .or(module.cluster_max_connection_lifetime_ms);
                if let (false, Some((policy, _))) = (m.load_balancer_set, &module.load_balancer) {
                    s.lb_policy = policy;
                }
                s
            },
            meta,
            options,
        );
        let key = ClusterKey { eds, ..key };
        let name = cluster_name(&key);
        lowered.cluster = Some((interner.intern(key), name.into()));
    }
    lowered
}

/// A header or query parameter condition of a Mapping.
fn matcher(name: String, v: &HeaderValue) -> HeaderMatch {
    match v {
        HeaderValue::Exact(value) => HeaderMatch {
            name,
            kind: MatchKind::Exact,
            value: value.clone(),
        },
        HeaderValue::Present(_) => HeaderMatch {
            name,
            kind: MatchKind::Present,
            value: String::new(),
        },
    }
}

/// A Mapping taken by a Host, with what its routes need.
pub(super) struct Candidate<'a> {
    meta: &'a Meta,
    m: &'a Mapping,
    lowered: &'a Arc<Lowered>,
}

impl<'a> Candidate<'a> {
    /// A Mapping the cache lowered, seen as a candidate.
    fn of(lowered: &'a Arc<Lowered>) -> Candidate<'a> {
        let (meta, m) = &*lowered.mapping;
        Candidate { meta, m, lowered }
    }
}

impl Candidate<'_> {
    fn headers(&self) -> &[HeaderMatch] {
        &self.lowered.headers
    }

    fn query(&self) -> &[HeaderMatch] {
        &self.lowered.query
    }

    /// The cluster's name; empty for a host redirect.
    fn cluster(&self) -> &str {
        self.lowered.cluster.as_ref().map_or("", |(_, name)| name)
    }
}

/// A Host's Mappings, in route order and grouped: what every Listener serving the Host shares
/// (only the security model differs between Listeners, see [`emit`]).
pub(super) struct Prepared<'a> {
    candidates: Vec<Candidate<'a>>,
    shadows: Vec<Candidate<'a>>,
    thresholds: Vec<Option<u32>>,
    group_of: Vec<usize>,
    module: crate::resource::AmbassadorModule,
    has_auth: bool,
    /// Whether some candidate has its own CORS policy.
    any_cors: bool,
}

/// What a Host keeps of its [`Prepared`] Mappings for the next translation (see
/// [`LowerCache::keep_order`]).
pub(super) struct Kept {
    order: Vec<Arc<Lowered>>,
    shadows: Vec<Arc<Lowered>>,
    any_cors: bool,
}

impl Prepared<'_> {
    /// The candidates in route order, and the shadows.
    pub(super) fn kept(&self) -> Kept {
        Kept {
            order: self.candidates.iter().map(|c| Arc::clone(c.lowered)).collect(),
            shadows: self.shadows.iter().map(|c| Arc::clone(c.lowered)).collect(),
            any_cors: self.any_cors,
        }
    }
}

/// Emissary's route order: precedence, then longer prefix, then more header and query matchers;
/// inside a canary group, Mappings with a weight first. A total order (namespace and name last).
fn route_order(a: &Candidate<'_>, b: &Candidate<'_>) -> std::cmp::Ordering {
    b.m.precedence
        .cmp(&a.m.precedence)
        .then(b.m.prefix.len().cmp(&a.m.prefix.len()))
        .then((b.headers().len() + b.query().len()).cmp(&(a.headers().len() + a.query().len())))
        .then(a.m.prefix.cmp(&b.m.prefix))
        .then(a.m.path_kind.cmp(&b.m.path_kind))
        .then(b.m.case_sensitive.cmp(&a.m.case_sensitive))
        .then(a.headers().cmp(b.headers()))
        .then(a.query().cmp(b.query()))
        .then(b.m.weight.is_some().cmp(&a.m.weight.is_some()))
        .then((&a.meta.namespace, &a.meta.name).cmp(&(&b.meta.namespace, &b.meta.name)))
}

/// The routes of a Host for a Listener's security model.
/// Also says whether some route has a CORS policy (known without visiting every route).
pub(super) fn routes_for(
    prepared: &Prepared<'_>,
    model: SecurityModel,
    host: &EffectiveHost,
) -> (Vec<Arc<Route>>, bool) {
    emit(prepared, model, host)
}

/// Collects, orders and groups the Mappings a Host takes (clusters are added here, once per
/// Host), from the cache's entries for the Host ([`refresh`] first).
pub(super) fn prepare<'a, 's: 'a>(
    set: &'s ResourceSet,
    host: &EffectiveHost,
    cache: &'a LowerCache,
    clusters: &mut Clusters<'s>,
    used: &mut [bool],
    diagnostics: &mut Vec<Diagnostic>,
) -> Prepared<'a> {
    let module = cache.context.as_ref().map(|c| c.module.clone()).unwrap_or_default();
    let mut candidates = Vec::new();
    let mut shadows = Vec::new();
    let mut any_cors = false;
    let cached = cache.host(host);
    for (i, e) in set.mappings.iter().enumerate() {
        let Some(lowered) = cached.and_then(|h| h.entries.get(&addr(e))) else {
            continue;
        };
        if !lowered.associated {
            continue;
        }
        if let Some(u) = used.get_mut(i) {
            *u = true;
        }
        debug_assert!(
            Arc::ptr_eq(&lowered.mapping, e),
            "an address names one allocation while it lives"
        );
        let (meta, m) = &**e;
        if let Some((key, name)) = &lowered.cluster {
            clusters.add_named(key, name, meta, m.connect_timeout_ms);
        }
        let c = Candidate { meta, m, lowered };
        if m.shadow {
            shadows.push(c);
        } else {
            any_cors |= m.cors.is_some();
            candidates.push(c);
        }
    }
    let generation = cache.generation;
    let previous: Vec<usize> = cached.map_or(Vec::new(), |h| h.order.iter().map(|l| addr(&l.mapping)).collect());
    let candidates = crate::keyed::sort_incrementally(
        candidates,
        &previous,
        |c| (c.lowered.created < generation).then(|| addr(&c.lowered.mapping)),
        route_order,
    );
    group(
        candidates,
        shadows,
        any_cors,
        module,
        set.auth_service.is_some(),
        host,
        diagnostics,
    )
}

/// [`prepare`] for a translation that patches the last one ([`patch`]): the Host's candidates
/// are the cache's, already in route order.
pub(super) fn prepare_patched<'a>(
    set: &ResourceSet,
    host: &EffectiveHost,
    cache: &'a LowerCache,
    diagnostics: &mut Vec<Diagnostic>,
) -> Prepared<'a> {
    let module = cache.context.as_ref().map(|c| c.module.clone()).unwrap_or_default();
    let (candidates, shadows, any_cors) = match cache.host(host) {
        Some(h) => (
            h.order.iter().map(Candidate::of).collect(),
            h.shadows.iter().map(Candidate::of).collect(),
            h.any_cors,
        ),
        None => (Vec::new(), Vec::new(), false),
    };
    group(
        candidates,
        shadows,
        any_cors,
        module,
        set.auth_service.is_some(),
        host,
        diagnostics,
    )
}

/// Groups a Host's candidates (in route order): canary groups, their thresholds, and what a
/// higher precedence shadows.
fn group<'a>(
    candidates: Vec<Candidate<'a>>,
    shadows: Vec<Candidate<'a>>,
    any_cors: bool,
    module: crate::resource::AmbassadorModule,
    has_auth: bool,
    host: &EffectiveHost,
    diagnostics: &mut Vec<Diagnostic>,
) -> Prepared<'a> {
    // What makes two Mappings match the same requests (then they form a canary group).
    let same_match = |a: &Candidate<'_>, b: &Candidate<'_>| {
        a.m.precedence == b.m.precedence
            && a.m.prefix == b.m.prefix
            && a.m.path_kind == b.m.path_kind
            && a.m.case_sensitive == b.m.case_sensitive
            && a.headers() == b.headers()
            && a.query() == b.query()
    };
    // Canary groups: runs of candidates with the same match. Each member's threshold is the
    // running sum of the group's weights (unweighted members share what the weighted ones leave);
    // the last member takes whatever is left, so every request of the group is routed.
    let mut thresholds: Vec<Option<u32>> = vec![None; candidates.len()];
    let mut group_of: Vec<usize> = vec![0; candidates.len()];
    // First group (index) of each match, to find matches shadowed by a higher precedence.
    type MatchKey<'k> = (
        &'k str,
        crate::resource::mapping::PathKind,
        bool,
        &'k [HeaderMatch],
        &'k [HeaderMatch],
    );
    let mut earlier_matches: BTreeMap<MatchKey<'_>, usize> = BTreeMap::new();
    // With one precedence, equal matches sort next to each other (one group): nothing can be
    // shadowed, and the map is not needed (it costs a string comparison per Mapping and step).
    let one_precedence = candidates.windows(2).all(|w| w[0].m.precedence == w[1].m.precedence);
    let mut start = 0;
    while start < candidates.len() {
        let mut end = start + 1;
        while end < candidates.len() && same_match(&candidates[start], &candidates[end]) {
            end += 1;
        }
        let group = &candidates[start..end];
        // The same match at a higher precedence takes every request first.
        let g = &group[0];
        let match_key = (
            g.m.prefix.as_str(),
            g.m.path_kind,
            g.m.case_sensitive,
            g.headers(),
            g.query(),
        );
        let shadowing = if one_precedence {
            None
        } else {
            let earlier = earlier_matches.get(&match_key).copied();
            earlier_matches.entry(match_key).or_insert(start);
            earlier
        };
        if let Some(earlier) = shadowing.map(|i| &candidates[i]) {
            for c in group {
                diagnostics.push(
                    Diagnostic::warning(
                        "mapping.shadowed",
                        format!(
                            "{} matches the same requests as {}, which has a higher precedence, and is never used on host `{}`",
                            c.meta.object_ref(),
                            earlier.meta.object_ref(),
                            host.hostname
                        ),
                    )
                    .at(c.meta.origin.clone())
                    .on(c.meta.object_ref())
                    .path("spec.precedence")
                    .hint("give it a different prefix, headers or query parameters, or the same precedence to share the traffic (a canary group)"),
                );
            }
        }
        if group.len() > 1 {
            let explicit: u32 = group.iter().filter_map(|c| c.m.weight).sum();
            let unweighted = u32::try_from(group.iter().filter(|c| c.m.weight.is_none()).count()).unwrap_or(u32::MAX);
            if explicit > 100 || (unweighted == 0 && explicit != 100) {
                let last = &group[group.len() - 1];
                diagnostics.push(
                    Diagnostic::warning(
                        "mapping.canary_weights",
                        format!(
                            "the weights of the {} Mappings matching `{}` on host `{}` add up to {explicit}, not 100; {} gets what the others leave",
                            group.len(), last.m.prefix, host.hostname, last.meta.object_ref()
                        ),
                    )
                    .at(last.meta.origin.clone())
                    .on(last.meta.object_ref())
                    .path("spec.weight")
                    .hint("give the Mappings of a canary group weights that add up to 100, or leave one without a weight"),
                );
            }
            let share = 100u32.saturating_sub(explicit) / unweighted.max(1);
            let mut sum = 0u32;
            for (i, c) in group.iter().enumerate() {
                sum = (sum + c.m.weight.unwrap_or(share)).min(100);
                if i + 1 < group.len() {
                    thresholds[start + i] = Some(sum);
                }
            }
        }
        group_of[start..end].fill(start);
        start = end;
    }
    Prepared {
        any_cors,
        candidates,
        shadows,
        thresholds,
        group_of,
        module,
        has_auth,
    }
}

/// Emits a prepared Host's routes for one security model.
fn emit(p: &Prepared<'_>, model: SecurityModel, host: &EffectiveHost) -> (Vec<Arc<Route>>, bool) {
    let Prepared {
        candidates,
        shadows,
        thresholds,
        group_of,
        module,
        has_auth,
        any_cors,
    } = p;
    // Each Mapping gives a primary route (secure, or for every request) and maybe a cleartext
    // variant; in a canary group all primaries come first, then the variants, so that each kind
    // of request meets the group's thresholds in order.
    let mut routes = Vec::with_capacity(candidates.len() * 2);
    let mut variants: Vec<Arc<Route>> = Vec::new();
    for (i, (c, threshold)) in candidates.iter().zip(thresholds.iter().copied()).enumerate() {
        if i > 0 && group_of[i] != group_of[i - 1] {
            routes.append(&mut variants);
        }
        let mut mirrors: Vec<Mirror> = shadows
            .iter()
            .filter(|s| {
                s.m.prefix == c.m.prefix
                    && s.m.path_kind == c.m.path_kind
                    && s.headers() == c.headers()
                    && s.query() == c.query()
            })
            .map(|s| Mirror {
                cluster: s.cluster().to_string(),
                percent: s.m.weight.unwrap_or(100),
            })
            .collect();
        mirrors.sort();
        mirrors.dedup();
        // The same route as the last translation's when nothing it reads changed.
        let route = |variant: Variant| {
            let slot = RouteSlot {
                variant,
                threshold,
                mirrors: mirrors.clone(),
            };
            let mut built = c.lowered.routes.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((_, r)) = built.iter().find(|(s, _)| *s == slot) {
                return Arc::clone(r);
            }
            let r = Arc::new(build_route(c, variant, threshold, mirrors.clone(), module, *has_auth));
            if built.len() >= 4 {
                built.clear();
            }
            built.push((slot, Arc::clone(&r)));
            r
        };
        match (model, host.insecure_action) {
            (SecurityModel::Secure, _) | (SecurityModel::Xfp | SecurityModel::Insecure, InsecureAction::Route) => {
                routes.push(route(Variant::Base));
            }
            (SecurityModel::Xfp, InsecureAction::Redirect) => {
                routes.push(route(Variant::Secure));
                variants.push(route(Variant::Insecure(RouteAction::HttpsRedirect)));
            }
            (SecurityModel::Xfp, InsecureAction::Reject) => routes.push(route(Variant::Secure)),
            (SecurityModel::Insecure, InsecureAction::Redirect) => {
                routes.push(route(Variant::Insecure(RouteAction::HttpsRedirect)));
            }
            (SecurityModel::Insecure, InsecureAction::Reject) => {}
        }
    }
    routes.append(&mut variants);
    // A route's policy is its Mapping's, else the Module's (see `build_route`).
    let cors = !routes.is_empty() && (module.cors.is_some() || *any_cors);
    (routes, cors)
}

/// One route of a Mapping.
fn build_route(
    c: &Candidate<'_>,
    variant: Variant,
    threshold: Option<u32>,
    mirrors: Vec<Mirror>,
    module: &crate::resource::AmbassadorModule,
    has_auth: bool,
) -> Route {
    let mut r = Route {
        name: format!("{}/{}", c.meta.namespace, c.meta.name),
        action: if c.m.redirect.is_some() {
            RouteAction::Redirect
        } else {
            RouteAction::Route
        },
        prefix: c.m.prefix.clone(),
        path_kind: c.m.path_kind,
        case_sensitive: c.m.case_sensitive,
        headers: c.headers().to_vec(),
        query_parameters: c.query().to_vec(),
        runtime_fraction: threshold.map(|numerator| RuntimeFraction {
            numerator,
            runtime_key: format!("routing.traffic_shift.{}", c.cluster()),
        }),
        redirect: c.m.redirect.clone().map(Box::new),
        regex_rewrite: c.m.regex_rewrite.clone().map(Box::new),
        auto_host_rewrite: c.m.auto_host_rewrite,
        upgrades: c.m.allow_upgrade.clone(),
        retry_policy: c
            .m
            .retry_policy
            .clone()
            .or_else(|| module.retry_policy.clone())
            .map(Box::new),
        mirrors,
        cors: c.m.cors.clone().or_else(|| module.cors.clone()).map(Box::new),
        auth: (has_auth && (c.m.bypass_auth || !c.m.auth_context_extensions.is_empty())).then(|| {
            crate::ir::RouteAuth {
                bypass: c.m.bypass_auth,
                context_extensions: c.m.auth_context_extensions.clone(),
            }
        }),
        hash_policy: if c.m.load_balancer_set {
            c.m.hash_policy.clone()
        } else {
            module.load_balancer.as_ref().and_then(|(_, h)| h.clone())
        }
        .map(Box::new),
        cluster: c.cluster().to_string(),
        prefix_rewrite: (!c.m.rewrite.is_empty() && c.m.regex_rewrite.is_none()).then(|| c.m.rewrite.clone()),
        timeout_ms: c
            .m
            .timeout_ms
            .or(module.cluster_request_timeout_ms)
            .unwrap_or(DEFAULT_TIMEOUT_MS),
        precedence: c.m.precedence,
        host_rewrite: c.m.host_rewrite.clone(),
        idle_timeout_ms: c.m.idle_timeout_ms,
        request_headers_to_add: {
            let mut h = c.m.add_request_headers.clone();
            // Linkerd routes by this header: the service as the Mapping names it.
            if c.m.add_linkerd_headers.unwrap_or(module.add_linkerd_headers) && c.m.redirect.is_none() {
                let port = c.m.service.port.map_or(String::new(), |p| format!(":{p}"));
                h.push(crate::resource::mapping::AddedHeader {
                    name: "l5d-dst-override".to_string(),
                    value: format!("{}{port}", c.m.service.host),
                    append: false,
                });
            }
            h
        },
        response_headers_to_add: c.m.add_response_headers.clone(),
        request_headers_to_remove: c.m.remove_request_headers.clone(),
        response_headers_to_remove: c.m.remove_response_headers.clone(),
        source: Some(source_of(c.meta)),
    };
    match variant {
        Variant::Base => {}
        Variant::Secure => {
            r.headers.push(HeaderMatch {
                name: "x-forwarded-proto".into(),
                kind: MatchKind::Exact,
                value: "https".into(),
            });
            r.headers.sort();
        }
        Variant::Insecure(action) => {
            r.name.push_str("/insecure");
            r.action = action;
        }
    }
    r
}

/// Warns about Mappings that no Host serves, with each Mapping's address.
/// `used[i]`: whether `set.mappings[i]` went to some Host.
pub(super) fn report_unused(set: &ResourceSet, used: &[bool]) -> Vec<(usize, Diagnostic)> {
    set.mappings
        .iter()
        .zip(used)
        .filter(|(_, used)| !**used)
        .map(|(e, _)| (addr(e), no_host(&e.0, &e.1)))
        .collect()
}

/// The warning for a Mapping no Host serves.
fn no_host(meta: &Meta, m: &Mapping) -> Diagnostic {
    let d = match m.hostname.as_deref().or(m.host.as_deref()) {
        Some(glob) => Diagnostic::warning(
            "mapping.no_host",
            format!("no Host serves this Mapping (hostname `{glob}`); it is not routed"),
        )
        .hint("check the Mapping's hostname and labels against the Hosts' hostname and mappingSelector"),
        None => Diagnostic::warning(
            "mapping.no_host",
            "this Mapping has neither `hostname` nor `host`, and no Host's mappingSelector selects it by label; it is not routed (Emissary's rule for v3alpha1 Mappings)",
        )
        .hint("add `hostname: \"*\"` to serve it on every Host, or a hostname glob, or labels that a Host's mappingSelector selects"),
    };
    d.at(meta.origin.clone()).on(meta.object_ref())
}
