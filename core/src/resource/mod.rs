//! Stage 2: typed Ambassador resources (`getambassador.io` v2 / v3alpha1), one file per kind.
//!
//! `parse` turns raw documents into typed resources and never fails as a whole: a document that is
//! not an Ambassador object, or an object with a bad field, becomes a diagnostic (naming file,
//! line, object and field path) and is left out, and the rest are returned. Unknown fields are
//! reported and ignored. The CRD spelling of every field lives here (`#[serde(rename)]`), so this
//! module is the boundary with users' manifests. Knows nothing about Envoy.

pub mod authservice;
pub mod fields;
pub mod host;
pub mod ingress;
pub mod kubernetes;
pub mod listener;
pub mod logservice;
pub mod mapping;
pub mod module;
mod patch;
pub mod ratelimitservice;
pub mod resolver;
pub mod secret;
pub mod tcpmapping;
pub mod tlscontext;
pub mod tracingservice;

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::diagnostic::{Diagnostic, ObjectRef, Origin};
use crate::source::yaml::{Node, Segment};
use crate::source::RawObject;

pub use authservice::AuthService;
pub use host::Host;
pub use listener::Listener;
pub use logservice::LogService;
pub use mapping::Mapping;
pub use module::AmbassadorModule;
pub use ratelimitservice::RateLimitService;
pub use secret::TlsSecret;
pub use tcpmapping::TcpMapping;
pub use tlscontext::TlsContext;
pub use tracingservice::TracingService;

// The API group attache reads, and the namespace of objects that name none: defined where
// objects are read (annotations need them), used here.
pub use crate::source::{DEFAULT_NAMESPACE, GROUP};

/// Options that change which objects are read.
#[derive(Clone, Debug)]
pub struct ParseOptions {
    /// This instance's `ambassador_id`; objects naming other ids are ignored (as in Emissary).
    pub ambassador_id: String,
    /// Whether a Mapping's `envoy_override` is merged into its routes (`--allow-envoy-override`:
    /// it lets any Mapping author change anything on their routes); ignored with a warning
    /// otherwise.
    pub allow_envoy_override: bool,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            ambassador_id: DEFAULT_AMBASSADOR_ID.to_string(),
            allow_envoy_override: false,
        }
    }
}

/// What every resource carries besides its spec.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Meta {
    /// `kind` as written.
    pub kind: String,
    /// `apiVersion` as written.
    pub api_version: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`, `default` when absent.
    pub namespace: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// Where the object starts.
    pub origin: Origin,
}

impl Meta {
    /// The object as diagnostics name it.
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef {
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

/// A typed spec. Kinds larger than a Listener are boxed: the parse cache keeps one `Spec` per
/// object, and each Mapping's would otherwise take as much room as a Module's.
#[derive(Clone, Debug, PartialEq)]
pub enum Spec {
    /// `Listener`.
    Listener(Listener),
    /// `Host`.
    Host(Box<Host>),
    /// `Mapping`, with its identity (shared: there are many, each much larger than the other
    /// kinds, and the parse cache hands the same one to every translation that does not change
    /// it, so later stages can recognise it by address; see [`ResourceSet::mappings`]).
    Mapping(std::sync::Arc<(Meta, Mapping)>),
    /// A core `v1` `Secret` holding a TLS certificate.
    Secret(TlsSecret),
    /// The `ambassador` `Module`.
    Module(Box<AmbassadorModule>),
    /// `TLSContext`.
    TlsContext(Box<TlsContext>),
    /// `AuthService`.
    AuthService(Box<AuthService>),
    /// `RateLimitService`.
    RateLimitService(Box<RateLimitService>),
    /// `TracingService`.
    TracingService(Box<TracingService>),
    /// `LogService`.
    LogService(Box<LogService>),
    /// `TCPMapping`.
    TcpMapping(Box<TcpMapping>),
    /// A core `v1` `Service` (its ports).
    Service(kubernetes::ServicePorts),
    /// A `discovery.k8s.io/v1` `EndpointSlice`.
    EndpointSlice(kubernetes::EndpointSlice),
    /// `KubernetesServiceResolver` or `KubernetesEndpointResolver`.
    Resolver(resolver::Resolver),
}

/// One typed resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    /// Identity and origin.
    pub meta: Meta,
    /// The kind-specific part.
    pub spec: Spec,
}

/// Every resource that parsed, sorted by (kind, namespace, name): the order of the input files
/// and documents does not matter past this point.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResourceSet {
    /// `Listener`s.
    pub listeners: Vec<(Meta, Listener)>,
    /// `Host`s.
    pub hosts: Vec<(Meta, Host)>,
    /// `Mapping`s, shared with the parse cache: an unchanged Mapping is the same allocation in
    /// every translation (lowering's cache recognises it by address).
    pub mappings: Vec<std::sync::Arc<(Meta, Mapping)>>,
    /// TLS `Secret`s.
    pub secrets: Vec<(Meta, TlsSecret)>,
    /// `TCPMapping`s.
    pub tcp_mappings: Vec<(Meta, TcpMapping)>,
    /// `TLSContext`s.
    pub tls_contexts: Vec<(Meta, TlsContext)>,
    /// The `AuthService` in effect (the first by namespace and name), or `None`.
    pub auth_service: Option<(Meta, AuthService)>,
    /// The `RateLimitService` in effect (the first by namespace and name), or `None`.
    pub rate_limit_service: Option<(Meta, RateLimitService)>,
    /// The `TracingService` in effect (the first by namespace and name), or `None`.
    pub tracing_service: Option<(Meta, TracingService)>,
    /// Every `LogService`, sorted by namespace and name (several may coexist).
    pub log_services: Vec<(Meta, LogService)>,
    /// The `ambassador` Module in effect (the first by namespace if there are several), or `None`.
    pub module: Option<(Meta, AmbassadorModule)>,
    /// `v1` `Service`s (for their ports).
    pub services: Vec<(Meta, kubernetes::ServicePorts)>,
    /// `EndpointSlice`s.
    pub endpoint_slices: Vec<(Meta, kubernetes::EndpointSlice)>,
    /// Declared resolvers (the built-in ones are not listed).
    pub resolvers: Vec<(Meta, resolver::Resolver)>,
    /// `(namespace, name)` of Secrets that hold a certificate but could not be read (each has
    /// its own error), so that what uses them can say so rather than "not found".
    pub broken_secrets: std::collections::BTreeSet<(String, String)>,
}

/// Moves Mappings out of and into a list sorted by namespace and name (the order of
/// [`ResourceSet::mappings`]), by binary search. `false` when a removed Mapping is not in the list
/// (as the same allocation) or an added one has the name of one there; the list is then only
/// partly changed.
pub(crate) fn move_mappings<'a>(
    list: &mut Vec<std::sync::Arc<(Meta, Mapping)>>,
    removed: impl IntoIterator<Item = &'a std::sync::Arc<(Meta, Mapping)>>,
    added: impl IntoIterator<Item = &'a std::sync::Arc<(Meta, Mapping)>>,
) -> bool {
    let find = |list: &[std::sync::Arc<(Meta, Mapping)>], m: &(Meta, Mapping)| {
        list.binary_search_by(|x| (&x.0.namespace, &x.0.name).cmp(&(&m.0.namespace, &m.0.name)))
    };
    for m in removed {
        match find(list, m) {
            Ok(at) if std::sync::Arc::ptr_eq(&list[at], m) => {
                list.remove(at);
            }
            _ => return false,
        }
    }
    for m in added {
        match find(list, m) {
            Ok(_) => return false,
            Err(at) => list.insert(at, std::sync::Arc::clone(m)),
        }
    }
    true
}

impl ResourceSet {
    /// Whether everything but the Mappings is equal.
    pub fn same_except_mappings(&self, other: &ResourceSet) -> bool {
        let ResourceSet {
            listeners,
            hosts,
            mappings: _,
            secrets,
            tcp_mappings,
            tls_contexts,
            auth_service,
            rate_limit_service,
            tracing_service,
            log_services,
            module,
            services,
            endpoint_slices,
            resolvers,
            broken_secrets,
        } = self;
        *listeners == other.listeners
            && *hosts == other.hosts
            && *secrets == other.secrets
            && *tcp_mappings == other.tcp_mappings
            && *tls_contexts == other.tls_contexts
            && *auth_service == other.auth_service
            && *rate_limit_service == other.rate_limit_service
            && *tracing_service == other.tracing_service
            && *log_services == other.log_services
            && *module == other.module
            && *services == other.services
            && *endpoint_slices == other.endpoint_slices
            && *resolvers == other.resolvers
            && *broken_secrets == other.broken_secrets
    }

    /// A copy without the Mappings.
    pub fn without_mappings(&self) -> ResourceSet {
        ResourceSet {
            listeners: self.listeners.clone(),
            hosts: self.hosts.clone(),
            mappings: Vec::new(),
            secrets: self.secrets.clone(),
            tcp_mappings: self.tcp_mappings.clone(),
            tls_contexts: self.tls_contexts.clone(),
            auth_service: self.auth_service.clone(),
            rate_limit_service: self.rate_limit_service.clone(),
            tracing_service: self.tracing_service.clone(),
            log_services: self.log_services.clone(),
            module: self.module.clone(),
            services: self.services.clone(),
            endpoint_slices: self.endpoint_slices.clone(),
            resolvers: self.resolvers.clone(),
            broken_secrets: self.broken_secrets.clone(),
        }
    }

    /// `(namespace, name)` of every Secret these resources refer to: Hosts' `tlsSecret` and CA,
    /// TLSContexts' certificate and CA. A source that cannot hold every Secret (Kubernetes) asks
    /// for exactly these.
    pub fn secret_references(&self) -> std::collections::BTreeSet<(String, String)> {
        let mut out = std::collections::BTreeSet::new();
        for (meta, host) in &self.hosts {
            if let Some(r) = &host.tls_secret {
                out.insert((
                    r.namespace.clone().unwrap_or_else(|| meta.namespace.clone()),
                    r.name.clone(),
                ));
            }
            if let Some(ca) = host.tls.as_ref().and_then(|t| t.ca_secret.clone()) {
                out.insert(ca);
            }
        }
        for (_, context) in &self.tls_contexts {
            out.extend(context.secret.clone());
            out.extend(context.settings.ca_secret.clone());
        }
        out
    }

    /// The TLS Secret `namespace/name`.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<&TlsSecret> {
        self.secrets
            .binary_search_by(|(m, _)| (m.namespace.as_str(), m.name.as_str()).cmp(&(namespace, name)))
            .ok()
            .map(|i| &self.secrets[i].1)
    }
}

/// Keys at the top of an object beside `apiVersion`, `kind`, `metadata` and `spec`: most often
/// a spec field that an indentation slip moved out of `spec:` (then said so), else unknown.
/// Without this they would be dropped without a word.
fn misplaced_keys(r: &mut Reader<'_>, kind: &Kind) {
    let crate::source::yaml::NodeValue::Map(entries) = &r.root.value else {
        return;
    };
    let known = (kind.fields)();
    for (key, _) in entries {
        let name = key.name.as_str();
        if matches!(name, "apiVersion" | "kind" | "metadata" | "spec" | "status") {
            continue;
        }
        let origin = Origin::new(r.meta.origin.file.clone(), key.line, key.column);
        let d = if known.iter().any(|f| f == name) {
            Diagnostic::warning(
                &format!("{}.misplaced_field", kind.code),
                format!("`{name}` is at the top of the object, not under `spec:`; ignored"),
            )
            .hint(format!("indent `{name}` like the other fields under `spec:`"))
        } else {
            let suggestion = crate::diagnostic::closest(name, ["apiVersion", "kind", "metadata", "spec"]);
            Diagnostic::warning(
                &format!("{}.unknown_field", kind.code),
                match suggestion {
                    Some(meant) => format!("unknown top-level key `{name}` (did you mean `{meant}`?); ignored"),
                    None => format!("unknown top-level key `{name}`; ignored"),
                },
            )
            .hint("an object has `apiVersion`, `kind`, `metadata` and `spec`; check the indentation")
        };
        r.diagnostics.push(d.at(origin).on(r.meta.object_ref()).path(name));
    }
}

/// serde's words for a value of the wrong type or an unknown variant, in users' words:
/// `invalid type: string "abc", expected u64` becomes ``timeout_ms` must be a whole number (0 or
/// more), got `abc``; an unknown variant gets a "did you mean". Other messages are kept.
fn rephrase(path: &str, message: &str) -> String {
    let field = match path.rsplit('.').next() {
        Some(last) if !last.is_empty() && !last.ends_with(']') => last,
        _ => path,
    };
    let expected_words = |expected: &str| -> String {
        match expected.trim() {
            "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number (0 or more)".into(),
            "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".into(),
            "f32" | "f64" => "a number".into(),
            "a boolean" => "`true` or `false`".into(),
            "a string" => "text".into(),
            "a sequence" => "a list".into(),
            "a map" => "a map of fields".into(),
            e if e.starts_with("struct ") => "a map of fields".into(),
            e => e.to_string(),
        }
    };
    let got_words = |got: &str| -> String {
        let got = got.trim();
        if let Some(text) = got.strip_prefix("string ") {
            format!("`{}`", text.trim_matches('"'))
        } else if let Some((_, value)) = got.split_once('`') {
            value.trim_end_matches('`').to_string()
        } else {
            match got {
                "map" => "a map".into(),
                "sequence" => "a list".into(),
                "null" | "unit value" => "nothing".into(),
                other => other.to_string(),
            }
        }
    };
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            if let Some((got, expected)) = rest.rsplit_once(", expected ") {
                return format!("`{field}` must be {}, got {}", expected_words(expected), got_words(got));
            }
        }
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        if let Some((value, expected)) = rest.split_once("`, expected ") {
            let choices: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            return match crate::diagnostic::closest(value, choices.iter().copied()) {
                Some(meant) => {
                    format!("`{field}`: unknown value `{value}` (did you mean `{meant}`?); expected {expected}")
                }
                None => format!("`{field}`: unknown value `{value}`; expected {expected}"),
            };
        }
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        return format!("`{}` is required", rest.trim_end_matches('`'));
    }
    message.to_string()
}

/// The field an unknown `spec` field (`spec.prefx`, `spec.config.x` of a Module) was probably
/// meant to be, among the kind's fields at the same level.
fn suggestion<'a>(path: &str, known: &'a [String]) -> Option<&'a str> {
    let rel = path.strip_prefix("spec.")?;
    let (parent, last) = rel.rsplit_once('.').unwrap_or(("", rel));
    crate::diagnostic::closest(
        last,
        known.iter().filter_map(|f| {
            let (p, l) = f.rsplit_once('.').unwrap_or(("", f.as_str()));
            (p == parent).then_some(l)
        }),
    )
}

/// Kinds of the getambassador.io group that attache does not handle yet (they are ignored with a
/// notice, rather than called unknown).
const NOT_YET: &[&str] = &["ConsulResolver", "DevPortal"];

/// A field reader for one object: turns serde errors and ignored fields into diagnostics that
/// point at the right line.
pub(crate) struct Reader<'a> {
    pub root: &'a Node,
    pub meta: &'a Meta,
    pub diagnostics: &'a mut Vec<Diagnostic>,
    pub code_prefix: &'static str,
    pub options: &'a ParseOptions,
}

impl Reader<'_> {
    /// Origin of a field path like `spec.timeout_ms` or `spec.headers[0]`.
    pub fn origin_of(&self, path: &str) -> Origin {
        let (line, column) = self.root.locate(&parse_path(path));
        Origin::new(self.meta.origin.file.clone(), line, column)
    }

    /// An error diagnostic on `path`.
    pub fn error(&self, what: &str, path: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::error(&format!("{}.{what}", self.code_prefix), message)
            .at(self.origin_of(path))
            .on(self.meta.object_ref())
            .path(path)
    }

    /// A warning diagnostic on `path`.
    pub fn warning(&self, what: &str, path: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::warning(&format!("{}.{what}", self.code_prefix), message)
            .at(self.origin_of(path))
            .on(self.meta.object_ref())
            .path(path)
    }

    /// Warns that the key at `path` (named `key`), which Emissary accepts, is not used by
    /// attache: `why` says what to do instead.
    pub(crate) fn not_used(&mut self, path: &str, key: &str, why: &str) {
        let d = self
            .warning("unsupported_key", path, format!("`{key}` is not used by attache"))
            .hint(format!("{why}; this key is ignored"));
        self.diagnostics.push(d);
    }

    /// Parses the service reference at `path` (`[scheme://]name[.namespace][:port]`); `None`,
    /// with an error pointing at the column that does not fit, when it does not parse.
    pub(crate) fn service(&mut self, path: &str, text: &str) -> Option<crate::lang::service::ServiceRef> {
        match crate::lang::service::parse(text.trim()) {
            Ok(s) => Some(s),
            Err(e) => {
                let mut d = self
                    .error(
                        "invalid_service",
                        path,
                        format!("invalid service `{}`: {} (column {})", e.input, e.message, e.offset + 1),
                    )
                    .hint("write it as [scheme://]name[.namespace][:port], e.g. `quote.default:80` or `https://api.example.com`");
                if let Some(origin) = &mut d.origin {
                    origin.column += u32::try_from(e.offset).unwrap_or(0);
                }
                self.diagnostics.push(d);
                None
            }
        }
    }

    /// A notice on `path`.
    pub fn notice(&self, what: &str, path: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::notice(&format!("{}.{what}", self.code_prefix), message)
            .at(self.origin_of(path))
            .on(self.meta.object_ref())
            .path(path)
    }

    /// Deserializes `spec`, reporting unknown fields as warnings. `None` (with an error
    /// diagnostic) when a field has the wrong type.
    pub fn spec<T: DeserializeOwned>(&mut self, hint_for: &dyn Fn(&str) -> Option<String>) -> Option<T> {
        let spec = self
            .root
            .get("spec")
            .map_or(serde_json::Value::Object(Default::default()), Node::to_json);
        let spec = if spec.is_null() {
            serde_json::Value::Object(Default::default())
        } else {
            spec
        };
        let mut ignored = Vec::new();
        // Without tracking the path first (most specs are valid); a failed spec is read again
        // with it, for the error's field path.
        let fast: Option<T> = {
            let mut on_ignored = |p: serde_ignored::Path<'_>| ignored.push(format!("spec.{p}"));
            T::deserialize(serde_ignored::Deserializer::new(&spec, &mut on_ignored)).ok()
        };
        let result: Result<T, _> = match fast {
            Some(v) => Ok(v),
            None => {
                ignored.clear();
                let mut on_ignored = |p: serde_ignored::Path<'_>| ignored.push(format!("spec.{p}"));
                let de = serde_ignored::Deserializer::new(&spec, &mut on_ignored);
                serde_path_to_error::deserialize(de)
            }
        };
        if !ignored.is_empty() {
            let known = fields::spec_fields(&self.meta.kind);
            for path in ignored {
                let d = match suggestion(&path, &known) {
                    Some(field) => self
                        .warning(
                            "unknown_field",
                            &path,
                            format!(
                                "unknown field `{}` (did you mean `{field}`?); ignored",
                                path.rsplit('.').next().unwrap_or(&path)
                            ),
                        )
                        .hint(format!("rename it `{field}`; the fields attache reads are listed in docs/compatibility.md")),
                    None => self
                        .warning("unknown_field", &path, "field not supported by attache (yet); ignored")
                        .hint("check the spelling against the getambassador.io CRD; supported fields are listed in docs/compatibility.md"),
                };
                self.diagnostics.push(d);
            }
        }
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                let inner = e.path().to_string();
                let path = if inner == "." {
                    "spec".to_string()
                } else {
                    format!("spec.{inner}")
                };
                let hint = hint_for(&path).unwrap_or_else(|| "fix the field".to_string());
                let mut message = rephrase(&path, &e.inner().to_string());
                // serde's message for untagged enums names a Rust type, which helps nobody.
                if message.contains("did not match any variant of untagged enum") {
                    message = "this value does not have any of the accepted shapes".to_string();
                }
                let d = self.error("invalid_field", &path, message).hint(format!(
                    "{hint}; this {} was left out of the configuration",
                    self.meta.kind
                ));
                self.diagnostics.push(d);
                None
            }
        }
    }
}

/// `spec.a[2].b` → segments. A key with dots is written `data["tls.crt"]`.
pub fn parse_path(path: &str) -> Vec<Segment> {
    if let Some((head, rest)) = path.split_once("[\"") {
        if let Some((key, tail)) = rest.split_once("\"]") {
            let mut out = parse_path(head);
            out.push(Segment::Key(key.to_string()));
            out.extend(parse_path(tail.trim_start_matches('.')));
            return out;
        }
    }
    let mut out = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            let key = &rest[..open];
            if !key.is_empty() {
                out.push(Segment::Key(key.to_string()));
            }
            rest = &rest[open..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let close = stripped.find(']').unwrap_or(stripped.len());
                if let Ok(i) = stripped[..close].parse() {
                    out.push(Segment::Index(i));
                }
                rest = stripped.get(close + 1..).unwrap_or("");
            }
        } else if !rest.is_empty() {
            out.push(Segment::Key(rest.to_string()));
        }
    }
    out
}

/// The [`References`](crate::source::References) of a set of raw objects, cheaply (a source asks this after every change):
/// Hosts and TLSContexts (few) are read in full; Mappings (many) only have their `service` and
/// `resolver` looked at. Services are over-approximated: when anything may use an endpoint
/// resolver (the Module sets a default resolver or a Mapping names one other than
/// `kubernetes-service`), every Service a Mapping names is included; otherwise none.
pub fn references(objects: &[&RawObject], options: &ParseOptions) -> crate::source::References {
    // Ingresses: the Hosts of their `tls` name Secrets, and a backend port given by name is
    // looked up in its Service.
    let named_ports = ingress::named_port_services(objects);
    let owned: Vec<RawObject>;
    let expanded: Vec<&RawObject>;
    // Copied only when there is an Ingress to expand (a source asks this after every change).
    let with_ingresses = objects.iter().any(|o| ingress::is_ingress_or_class(o));
    let objects = match with_ingresses
        .then(|| ingress::expand(&objects.iter().map(|o| (*o).clone()).collect::<Vec<_>>(), options))
        .flatten()
    {
        Some((list, _)) => {
            owned = list;
            expanded = owned.iter().collect();
            &expanded[..]
        }
        None => objects,
    };
    let kind_of = |o: &RawObject| str_field(&o.root, &["kind"]).and_then(Node::as_str).map(str::to_string);
    let text = |o: &RawObject, path: &[&str]| str_field(&o.root, path).and_then(Node::as_str).map(str::to_string);
    let not_dns = |r: Option<String>| r.is_some_and(|r| r != "kubernetes-service");
    let mut tls = Vec::new();
    let mut mappings = Vec::new();
    let mut endpoint_resolution = false;
    for o in objects.iter().copied() {
        match kind_of(o).as_deref() {
            Some("Host" | "TLSContext") => tls.push(o.clone()),
            Some("Module") => endpoint_resolution |= not_dns(text(o, &["spec", "config", "resolver"])),
            Some("Mapping") => {
                endpoint_resolution |= not_dns(text(o, &["spec", "resolver"]));
                mappings.push(o);
            }
            _ => {}
        }
    }
    let secrets = parse(&tls, options).0.secret_references();
    let mut services = std::collections::BTreeSet::new();
    if endpoint_resolution {
        for o in mappings {
            let namespace = text(o, &["metadata", "namespace"]).unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
            if let Some(Ok(service)) = text(o, &["spec", "service"]).map(|s| crate::lang::service::parse(&s)) {
                if !service.is_ip {
                    let mut labels = service.host.split('.');
                    let name = labels.next().unwrap_or_default().to_string();
                    let ns = labels.next().map_or(namespace, str::to_string);
                    services.insert((ns, name));
                }
            }
        }
    }
    services.extend(named_ports);
    crate::source::References { secrets, services }
}

/// The `ambassador_id` of an instance not given one, and of objects that name none.
pub const DEFAULT_AMBASSADOR_ID: &str = "default";

/// `ambassador_id` as a string or a list of strings.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum AmbassadorId {
    /// One id.
    One(String),
    /// Several ids.
    Many(Vec<String>),
}

impl AmbassadorId {
    fn contains(&self, id: &str) -> bool {
        match self {
            AmbassadorId::One(s) => s == id,
            AmbassadorId::Many(v) => v.iter().any(|s| s == id),
        }
    }
}

/// A Kubernetes label selector (only `matchLabels` is supported).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct LabelSelector {
    /// Every label here must be present with this value.
    #[serde(rename = "matchLabels", default)]
    pub match_labels: BTreeMap<String, String>,
}

impl LabelSelector {
    /// Whether `labels` satisfy the selector (an empty selector matches everything).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

fn str_field<'a>(root: &'a Node, path: &[&str]) -> Option<&'a Node> {
    let mut cur = root;
    for p in path {
        cur = cur.get(p)?;
    }
    Some(cur)
}

/// The string at `path` in a document, if it is one.
pub(crate) fn str_text<'a>(root: &'a Node, path: &[&str]) -> Option<&'a str> {
    str_field(root, path)?.as_str()
}

/// Parses raw documents into typed resources: each object read on its own (`parse_one`), then
/// gathered by kind, one definition per identity. The reference reading; [`parse_cached`] gives
/// the same set, reading only what changed.
pub fn parse(objects: &[RawObject], options: &ParseOptions) -> (ResourceSet, Vec<Diagnostic>) {
    if let Some((expanded, mut diagnostics)) = ingress::expand(objects, options) {
        let (set, more) = parse(&expanded, options);
        diagnostics.extend(more);
        return (set, diagnostics);
    }
    let parsed: Vec<Parsed> = objects
        .iter()
        .map(|obj| {
            let mut ds = Vec::new();
            let r = parse_one(obj, options, &mut ds);
            (r, ds)
        })
        .collect();
    let (set, diagnostics, _) = assemble(objects, parsed.iter(), |mappings| mappings);
    (set, diagnostics)
}

/// What reading one object gave: the resource (if any) and its diagnostics.
type Parsed = (Option<Resource>, Vec<Diagnostic>);

/// The Mappings read, each with the index of its object, before they are sorted.
type ReadMappings = Vec<(std::sync::Arc<(Meta, Mapping)>, usize)>;

/// Typed resources of the previous translation, by a hash of each raw object (its content, file
/// and positions). With it, an unchanged object is not read again; entries not used by a
/// translation are dropped at its end. Valid for one set of [`ParseOptions`].
#[derive(Debug, Default)]
pub struct ParseCache {
    /// Boxed: a resource is large, and entries move from one map to the next every translation.
    entries: crate::keyed::KeyMap<Box<Parsed>>,
    /// The addresses of the last translation's Mappings, by namespace and name.
    mapping_order: Vec<usize>,
    /// The last translation, which the next one may patch ([`patch`]).
    last: Option<patch::Last>,
    /// Whether the last translation was patched.
    patched: bool,
}

impl ParseCache {
    /// Whether the last translation patched the set of the one before (only a few Mapping
    /// objects had changed) rather than sorting and checking every object again.
    pub fn last_patched(&self) -> bool {
        self.patched
    }
}

/// From this many objects to parse, they are parsed on the worker threads.
const PARALLEL_FROM_OBJECTS: usize = 256;

/// [`parse`], reading only the objects the cache has not seen (and patching the last set when
/// only a few Mapping objects changed). The set is shared with the cache: drop it before the
/// next call, so that a patch changes it in place instead of copying it.
pub fn parse_cached(
    objects: &[RawObject],
    options: &ParseOptions,
    mut cache: Option<&mut ParseCache>,
) -> (std::sync::Arc<ResourceSet>, Vec<Diagnostic>) {
    // Patched first: a patch takes only Mappings, and an Ingress or IngressClass is never among
    // the objects the last translation kept (Ingresses are expanded into what they mean before
    // it reads them), so with one present the patch declines and the Ingresses are expanded
    // below. Without one, no walk over every object looks for them.
    if let Some(c) = cache.as_deref_mut() {
        c.patched = false;
        if let Some(patched) = patch::patch(objects, options, c) {
            c.patched = true;
            return patched;
        }
    }
    if let Some((expanded, mut diagnostics)) = ingress::expand(objects, options) {
        let (set, more) = parse_cached(&expanded, options, cache);
        diagnostics.extend(more);
        return (set, diagnostics);
    }
    // Cache hits first, then every miss (on the worker threads when there are many: objects
    // parse independently), then the results in input order.
    let mut entries: Vec<(u128, Option<Box<Parsed>>)> = objects
        .iter()
        .map(|obj| {
            let key = obj.key();
            (key, cache.as_deref_mut().and_then(|c| c.entries.remove(&key)))
        })
        .collect();
    {
        use rayon::prelude::*;
        let parse = |obj: &RawObject| {
            let mut ds = Vec::new();
            let r = parse_one(obj, options, &mut ds);
            Box::new((r, ds))
        };
        let missing: Vec<(&mut Option<Box<Parsed>>, &RawObject)> = entries
            .iter_mut()
            .zip(objects)
            .filter(|((_, e), _)| e.is_none())
            .map(|((_, e), obj)| (e, obj))
            .collect();
        if missing.len() >= PARALLEL_FROM_OBJECTS {
            crate::workers::threads().install(|| {
                missing.into_par_iter().for_each(|(e, obj)| *e = Some(parse(obj)));
            });
        } else {
            for (e, obj) in missing {
                *e = Some(parse(obj));
            }
        }
    }
    let entries: Vec<(u128, Box<Parsed>)> = entries.into_iter().filter_map(|(key, e)| e.map(|e| (key, e))).collect();
    let (set, diagnostics, duplicates) = match cache.as_deref_mut() {
        // Mappings by identity, the last translation's order reused: its Mappings are still
        // alive (held by `c.entries` until just below), so an address it names is the same
        // Mapping. `dedupe` then finds them sorted.
        Some(c) => assemble(objects, entries.iter().map(|(_, e)| &**e), |mappings| {
            let addr = |(m, _): &(std::sync::Arc<(Meta, Mapping)>, usize)| std::sync::Arc::as_ptr(m) as usize;
            let mappings = crate::keyed::sort_incrementally(
                mappings,
                &c.mapping_order,
                |m| Some(addr(m)),
                |(a, _), (b, _)| (&a.0.namespace, &a.0.name).cmp(&(&b.0.namespace, &b.0.name)),
            );
            c.mapping_order = mappings.iter().map(addr).collect();
            mappings
        }),
        None => assemble(objects, entries.iter().map(|(_, e)| &**e), |mappings| mappings),
    };
    let set = std::sync::Arc::new(set);
    if let Some(c) = cache {
        // Keep exactly what this translation used.
        c.entries = entries.into_iter().collect();
        patch::remember(c, objects, &set, &diagnostics, duplicates);
    }
    (set, diagnostics)
}

/// The resource set from what reading each object gave, in input order: resources gathered by
/// kind, one definition per identity (see [`dedupe`]), one AuthService and one Module. `order`
/// may put the Mappings in (namespace, name) order first, which `dedupe` then finds sorted.
/// Also says whether a Mapping was defined twice.
fn assemble<'p>(
    objects: &[RawObject],
    parsed: impl Iterator<Item = &'p Parsed>,
    order: impl FnOnce(ReadMappings) -> ReadMappings,
) -> (ResourceSet, Vec<Diagnostic>, bool) {
    let mut diagnostics = Vec::new();
    let mut listeners = Vec::new();
    let mut hosts = Vec::new();
    let mut mappings = Vec::new();
    let mut secrets = Vec::new();
    let mut modules = Vec::new();
    let mut tls_contexts = Vec::new();
    let mut auth_services = Vec::new();
    let mut rate_limit_services = Vec::new();
    let mut tracing_services = Vec::new();
    let mut log_services = Vec::new();
    let mut tcp_mappings = Vec::new();
    let mut services = Vec::new();
    let mut endpoint_slices = Vec::new();
    let mut resolvers = Vec::new();
    let mut broken_secrets = std::collections::BTreeSet::new();
    for (i, (parsed, ds)) in parsed.enumerate() {
        let before = diagnostics.len();
        diagnostics.extend(ds.iter().cloned());
        if parsed.is_none() && diagnostics[before..].iter().any(Diagnostic::is_error) {
            if let Some(o) = diagnostics
                .last()
                .and_then(|d| d.object.as_ref())
                .filter(|o| o.kind == "Secret")
            {
                broken_secrets.insert((o.namespace.clone(), o.name.clone()));
            }
        }
        if let Some(resource) = &parsed {
            let meta = || resource.meta.clone();
            match &resource.spec {
                Spec::Listener(l) => listeners.push(((meta(), l.clone()), i)),
                Spec::Host(h) => hosts.push(((meta(), (**h).clone()), i)),
                // Shared, not copied: most objects are Mappings.
                Spec::Mapping(m) => mappings.push((std::sync::Arc::clone(m), i)),
                Spec::Secret(s) => secrets.push(((meta(), s.clone()), i)),
                Spec::Module(m) => modules.push(((meta(), (**m).clone()), i)),
                Spec::TlsContext(c) => tls_contexts.push(((meta(), (**c).clone()), i)),
                Spec::AuthService(a) => auth_services.push(((meta(), (**a).clone()), i)),
                Spec::RateLimitService(r) => rate_limit_services.push(((meta(), (**r).clone()), i)),
                Spec::TracingService(t) => tracing_services.push(((meta(), (**t).clone()), i)),
                Spec::LogService(l) => log_services.push(((meta(), (**l).clone()), i)),
                Spec::TcpMapping(t) => tcp_mappings.push(((meta(), (**t).clone()), i)),
                Spec::Service(s) => services.push(((meta(), s.clone()), i)),
                Spec::EndpointSlice(e) => endpoint_slices.push(((meta(), e.clone()), i)),
                Spec::Resolver(r) => resolvers.push(((meta(), *r), i)),
            }
        }
    }
    let mappings = order(mappings);
    let parsed_mappings = mappings.len();
    let set = ResourceSet {
        listeners: dedupe(listeners, objects, &mut diagnostics),
        hosts: dedupe(hosts, objects, &mut diagnostics),
        mappings: dedupe(mappings, objects, &mut diagnostics),
        secrets: dedupe(secrets, objects, &mut diagnostics),
        tls_contexts: dedupe(tls_contexts, objects, &mut diagnostics),
        tcp_mappings: dedupe(tcp_mappings, objects, &mut diagnostics),
        services: dedupe(services, objects, &mut diagnostics),
        endpoint_slices: dedupe(endpoint_slices, objects, &mut diagnostics),
        resolvers: dedupe(resolvers, objects, &mut diagnostics),
        auth_service: the_one(
            dedupe(auth_services, objects, &mut diagnostics),
            &mut diagnostics,
            (
                "authservice.duplicate",
                "only one AuthService is used",
                "keep one AuthService (Emissary uses one too)",
            ),
        ),
        rate_limit_service: the_one(
            dedupe(rate_limit_services, objects, &mut diagnostics),
            &mut diagnostics,
            (
                "ratelimitservice.duplicate",
                "only one RateLimitService is used",
                "keep one RateLimitService (Emissary uses one too)",
            ),
        ),
        log_services: dedupe(log_services, objects, &mut diagnostics),
        tracing_service: the_one(
            dedupe(tracing_services, objects, &mut diagnostics),
            &mut diagnostics,
            (
                "tracingservice.duplicate",
                "only one TracingService is used",
                "keep one TracingService (Emissary uses one too)",
            ),
        ),
        module: the_one(
            dedupe(modules, objects, &mut diagnostics),
            &mut diagnostics,
            (
                "module.duplicate",
                "another ambassador Module is in effect",
                "keep one Module named `ambassador`",
            ),
        ),
        broken_secrets,
    };
    let duplicates = set.mappings.len() != parsed_mappings;
    (set, diagnostics, duplicates)
}

/// Of kinds that exist once (the AuthService, the ambassador Module): the first by namespace and
/// name, the others reported with `(code, what, hint)`.
fn the_one<T>(
    items: Vec<(Meta, T)>,
    diagnostics: &mut Vec<Diagnostic>,
    (code, what, hint): (&str, &str, &str),
) -> Option<(Meta, T)> {
    let mut all = items.into_iter();
    let first = all.next();
    let used = first
        .as_ref()
        .map(|(m, _)| m.object_ref().to_string())
        .unwrap_or_default();
    for (meta, _) in all {
        diagnostics.push(
            Diagnostic::warning(code, format!("{what} ({used}); this one is ignored"))
                .at(meta.origin.clone())
                .on(meta.object_ref())
                .hint(hint),
        );
    }
    first
}

/// A typed object with its identity, as [`ResourceSet`] holds it.
trait Identified {
    fn meta(&self) -> &Meta;
}

impl<T> Identified for (Meta, T) {
    fn meta(&self) -> &Meta {
        &self.0
    }
}

impl<T> Identified for std::sync::Arc<(Meta, T)> {
    fn meta(&self) -> &Meta {
        &self.0
    }
}

/// Sorts by (namespace, name) and keeps one object per identity, reporting the others. Which
/// one is kept depends on content only (the smallest canonical JSON), never on input order.
/// Items come with their index in `objects`.
fn dedupe<T: Identified>(
    mut items: Vec<(T, usize)>,
    objects: &[RawObject],
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<T> {
    items.sort_by(|(a, _), (b, _)| {
        let (a, b) = (a.meta(), b.meta());
        (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name))
    });
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    let mut group: Vec<(T, usize)> = Vec::new();
    let mut flush = |group: &mut Vec<(T, usize)>, out: &mut Vec<T>| {
        if group.len() > 1 {
            let content = |i: usize| objects[i].root.to_json().to_string();
            group.sort_by_cached_key(|(t, i)| (content(*i), t.meta().origin.clone()));
            let kept = group[0].0.meta().origin.clone();
            for meta in group.iter().skip(1).map(|(t, _)| t.meta()) {
                diagnostics.push(
                    Diagnostic::error(
                        "resource.duplicate",
                        format!(
                            "{} {}/{} is defined more than once; the definition at {kept} is used",
                            meta.kind, meta.namespace, meta.name
                        ),
                    )
                    .at(meta.origin.clone())
                    .on(meta.object_ref())
                    .hint("rename one of them or delete the copy"),
                );
            }
        }
        if let Some((kept, _)) = group.drain(..).next() {
            out.push(kept);
        }
        group.clear();
    };
    for item in items {
        if group.first().is_some_and(|(t, _)| {
            let (m, new) = (t.meta(), item.0.meta());
            m.namespace != new.namespace || m.name != new.name
        }) {
            flush(&mut group, &mut out);
        }
        group.push(item);
    }
    flush(&mut group, &mut out);
    out
}

fn parse_one(obj: &RawObject, options: &ParseOptions, diagnostics: &mut Vec<Diagnostic>) -> Option<Resource> {
    let root = &obj.root;
    let at = obj.origin.clone();
    if !matches!(root.value, crate::source::yaml::NodeValue::Map(_)) {
        diagnostics.push(
            Diagnostic::error(
                "resource.not_an_object",
                "document is not a mapping with apiVersion, kind and metadata",
            )
            .at(at),
        );
        return None;
    }
    let text = |path: &[&str]| str_field(root, path).and_then(Node::as_str).map(str::to_string);
    let (Some(api_version), Some(kind)) = (text(&["apiVersion"]), text(&["kind"])) else {
        diagnostics.push(
            Diagnostic::error(
                "resource.missing_type",
                "document has no string `apiVersion` and `kind`; ignored",
            )
            .at(at)
            .hint("every object needs e.g. `apiVersion: getambassador.io/v3alpha1` and `kind: Mapping`"),
        );
        return None;
    };
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version.as_str()));
    let name = text(&["metadata", "name"]);
    let namespace = text(&["metadata", "namespace"]).unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    let mut labels = BTreeMap::new();
    if let Some(Node {
        value: crate::source::yaml::NodeValue::Map(entries),
        ..
    }) = str_field(root, &["metadata", "labels"])
    {
        for (k, v) in entries {
            if let Some(s) = v.as_str() {
                labels.insert(k.name.clone(), s.to_string());
            } else {
                let j = v.to_json();
                labels.insert(k.name.clone(), j.to_string());
            }
        }
    }
    let object = ObjectRef {
        kind: kind.clone(),
        namespace: namespace.clone(),
        name: name.clone().unwrap_or_default(),
    };
    let core = |code_prefix: &'static str,
                diagnostics: &mut Vec<Diagnostic>,
                read: &dyn Fn(&mut Reader<'_>) -> Option<Spec>| {
        let meta = Meta {
            kind: kind.clone(),
            api_version: api_version.clone(),
            name: name.clone()?,
            namespace: namespace.clone(),
            labels: labels.clone(),
            origin: at.clone(),
        };
        let mut reader = Reader {
            root,
            meta: &meta,
            diagnostics,
            code_prefix,
            options,
        };
        let spec = read(&mut reader)?;
        Some(Resource { meta, spec })
    };
    if kubernetes::is_service(&api_version, &kind) {
        return core("service", diagnostics, &|r| {
            Some(Spec::Service(kubernetes::read_service(r)))
        });
    }
    if kubernetes::is_endpoint_slice(&api_version, &kind) {
        return core("endpointslice", diagnostics, &|r| {
            kubernetes::read_endpoint_slice(r).map(Spec::EndpointSlice)
        });
    }
    if secret::is_secret(&api_version, &kind) {
        let name = name?;
        let meta = Meta {
            kind,
            api_version,
            name,
            namespace,
            labels,
            origin: at,
        };
        let mut reader = Reader {
            root,
            meta: &meta,
            diagnostics,
            code_prefix: "secret",
            options,
        };
        let spec = secret::read(&mut reader).map(Spec::Secret)?;
        return Some(Resource { meta, spec });
    }
    if group != GROUP {
        diagnostics.push(
            Diagnostic::notice(
                "resource.ignored_kind",
                format!("{kind} ({api_version}) is not a {GROUP} resource; ignored"),
            )
            .at(at)
            .on(object),
        );
        return None;
    }
    if !matches!(version, "v1" | "v2" | "v3alpha1") {
        diagnostics.push(
            Diagnostic::error(
                "resource.unsupported_version",
                format!("API version `{api_version}` is not supported; ignored"),
            )
            .at(at)
            .on(object)
            .hint("use getambassador.io/v3alpha1 (v2 and v1 are read too)"),
        );
        return None;
    }
    let Some(read_kind) = KINDS.iter().find(|k| k.kind == kind) else {
        if NOT_YET.contains(&kind.as_str()) {
            diagnostics.push(
                Diagnostic::notice(
                    "resource.ignored_kind",
                    format!("{kind} is not supported by attache yet; ignored"),
                )
                .at(at)
                .on(object),
            );
            return None;
        }
        // A kind of this group that does not exist is most likely a slip: a warning, which
        // `serve` logs, since the routes it stands for are missing.
        let known = KINDS.iter().map(|k| k.kind).chain(NOT_YET.iter().copied());
        let d = match crate::diagnostic::closest(&kind, known) {
            Some(meant) => Diagnostic::warning(
                "resource.unknown_kind",
                format!("unknown kind `{kind}` (did you mean `{meant}`?); ignored"),
            )
            .hint(format!("write `kind: {meant}`")),
            None => Diagnostic::warning(
                "resource.unknown_kind",
                format!("unknown kind `{kind}` in {GROUP}; ignored"),
            )
            .hint(format!(
                "the kinds attache reads: {}",
                KINDS.iter().map(|k| k.kind).collect::<Vec<_>>().join(", ")
            )),
        };
        diagnostics.push(d.at(at).on(object).path("kind"));
        return None;
    };
    let Some(name) = name else {
        diagnostics.push(
            Diagnostic::error("resource.missing_name", format!("{kind} has no metadata.name; ignored"))
                .at(at)
                .on(object)
                .path("metadata.name"),
        );
        return None;
    };
    let meta = Meta {
        kind: kind.clone(),
        api_version: api_version.clone(),
        name,
        namespace,
        labels,
        origin: at,
    };
    // ambassador_id: objects meant for other instances are skipped.
    // Hosts may spell it `ambassadorId` (an old protobuf-JSON form Emissary still reads).
    let id_node = str_field(root, &["spec", "ambassador_id"]).or_else(|| {
        (kind == "Host")
            .then(|| str_field(root, &["spec", "ambassadorId"]))
            .flatten()
    });
    // No ambassador_id means `default`, as in Emissary: an instance with another id ignores it.
    if id_node.is_none() && options.ambassador_id != DEFAULT_AMBASSADOR_ID {
        diagnostics.push(
            Diagnostic::notice(
                "resource.other_ambassador_id",
                format!(
                    "no ambassador_id (which means `{DEFAULT_AMBASSADOR_ID}`), and this instance's is `{}`; ignored",
                    options.ambassador_id
                ),
            )
            .at(meta.origin.clone())
            .on(meta.object_ref()),
        );
        return None;
    }
    if let Some(id_node) = id_node {
        match serde_json::from_value::<AmbassadorId>(id_node.to_json()) {
            Ok(ids) if !ids.contains(&options.ambassador_id) => {
                diagnostics.push(
                    Diagnostic::notice(
                        "resource.other_ambassador_id",
                        format!("ambassador_id does not include `{}`; ignored", options.ambassador_id),
                    )
                    .at(meta.origin.clone())
                    .on(meta.object_ref())
                    .path("spec.ambassador_id"),
                );
                return None;
            }
            Ok(_) => {}
            Err(_) => {
                let r = Reader {
                    root,
                    meta: &meta,
                    diagnostics,
                    code_prefix: "resource",
                    options,
                };
                let d = r.error(
                    "invalid_field",
                    "spec.ambassador_id",
                    "ambassador_id must be a string or a list of strings",
                );
                diagnostics.push(d);
                return None;
            }
        }
    }
    let mut reader = Reader {
        root,
        meta: &meta,
        diagnostics,
        code_prefix: read_kind.code,
        options,
    };
    misplaced_keys(&mut reader, read_kind);
    let spec = (read_kind.read)(&mut reader)?;
    Some(Resource { meta, spec })
}

/// A getambassador.io kind attache reads.
pub(crate) struct Kind {
    /// `kind:` as written.
    pub(crate) kind: &'static str,
    /// The prefix of its diagnostic codes (`mapping.invalid_field`).
    code: &'static str,
    /// Reads and checks its spec.
    read: fn(&mut Reader<'_>) -> Option<Spec>,
    /// The fields its spec accepts (see `fields`).
    pub(crate) fields: fn() -> Vec<String>,
}

/// Every getambassador.io kind attache reads, the one list of them.
pub(crate) const KINDS: &[Kind] = &[
    Kind {
        kind: "Listener",
        code: "listener",
        read: |r| listener::read(r).map(Spec::Listener),
        fields: || fields::names(listener::spec_fields()),
    },
    Kind {
        kind: "Host",
        code: "host",
        read: |r| host::read(r).map(|x| Spec::Host(Box::new(x))),
        fields: || fields::names(host::spec_fields()),
    },
    Kind {
        kind: "Mapping",
        code: "mapping",
        read: |r| mapping::read(r).map(|m| Spec::Mapping(std::sync::Arc::new((r.meta.clone(), m)))),
        fields: || fields::names(mapping::spec_fields()),
    },
    Kind {
        kind: "Module",
        code: "module",
        read: |r| module::read(r).map(|x| Spec::Module(Box::new(x))),
        fields: || {
            module::config_fields()
                .iter()
                .map(|f| format!("config.{f}"))
                .chain(std::iter::once("ambassador_id".to_string()))
                .collect()
        },
    },
    Kind {
        kind: "TLSContext",
        code: "tlscontext",
        read: |r| tlscontext::read(r).map(|x| Spec::TlsContext(Box::new(x))),
        fields: || fields::names(tlscontext::spec_fields()),
    },
    Kind {
        kind: "AuthService",
        code: "authservice",
        read: |r| authservice::read(r).map(|x| Spec::AuthService(Box::new(x))),
        fields: || fields::names(authservice::spec_fields()),
    },
    Kind {
        kind: "RateLimitService",
        code: "ratelimitservice",
        read: |r| ratelimitservice::read(r).map(|x| Spec::RateLimitService(Box::new(x))),
        fields: || fields::names(ratelimitservice::spec_fields()),
    },
    Kind {
        kind: "TracingService",
        code: "tracingservice",
        read: |r| tracingservice::read(r).map(|x| Spec::TracingService(Box::new(x))),
        fields: || fields::names(tracingservice::spec_fields()),
    },
    Kind {
        kind: "LogService",
        code: "logservice",
        read: |r| logservice::read(r).map(|x| Spec::LogService(Box::new(x))),
        fields: || fields::names(logservice::spec_fields()),
    },
    Kind {
        kind: "TCPMapping",
        code: "tcpmapping",
        read: |r| tcpmapping::read(r).map(|x| Spec::TcpMapping(Box::new(x))),
        fields: || fields::names(tcpmapping::spec_fields()),
    },
    Kind {
        kind: "KubernetesServiceResolver",
        code: "resolver",
        read: |r| resolver::read(r, resolver::Resolver::Service).map(Spec::Resolver),
        fields: Vec::new,
    },
    Kind {
        kind: "KubernetesEndpointResolver",
        code: "resolver",
        read: |r| resolver::read(r, resolver::Resolver::Endpoint).map(Spec::Resolver),
        fields: Vec::new,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_errors_are_said_in_users_words() {
        assert_eq!(
            rephrase("spec.timeout_ms", "invalid type: string \"abc\", expected u64"),
            "`timeout_ms` must be a whole number (0 or more), got `abc`"
        );
        assert_eq!(
            rephrase("spec.cors.origins", "invalid type: map, expected a sequence"),
            "`origins` must be a list, got a map"
        );
        assert_eq!(
            rephrase("spec.load_balancer.policy", "unknown variant `round-robin`, expected one of `round_robin`, `ring_hash`"),
            "`policy`: unknown value `round-robin` (did you mean `round_robin`?); expected one of `round_robin`, `ring_hash`"
        );
        assert_eq!(rephrase("spec", "missing field `service`"), "`service` is required");
        assert_eq!(rephrase("spec.x", "something else"), "something else");
    }

    #[test]
    fn an_exact_authority_taken_as_the_host_stays_exact_with_host_regex() {
        // v2 with `host_regex: true` but no `host`: Emissary's conversion leaves no hostname,
        // and the exact `:authority` header is the host, matched exactly (not as a regex).
        let text = "apiVersion: getambassador.io/v2\nkind: Mapping\nmetadata:\n  name: m\nspec:\n  prefix: /a/\n  service: a\n  host_regex: true\n  headers:\n    \":authority\": a.example.com\n";
        let loaded = crate::source::parse_text("m.yaml", text);
        let (set, diagnostics) = parse(&loaded.objects, &ParseOptions::default());
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        let m = &set.mappings[0].1;
        assert_eq!(
            (m.hostname.as_deref(), m.host.as_deref(), m.host_regex),
            (None, Some("a.example.com"), false)
        );
        assert!(m.headers.is_empty());
    }

    #[test]
    fn paths_parse_with_dotted_keys() {
        assert_eq!(
            parse_path("data[\"tls.crt\"]"),
            vec![Segment::Key("data".into()), Segment::Key("tls.crt".into())]
        );
    }

    #[test]
    fn paths_parse() {
        assert_eq!(
            parse_path("spec.headers[2].name"),
            vec![
                Segment::Key("spec".into()),
                Segment::Key("headers".into()),
                Segment::Index(2),
                Segment::Key("name".into())
            ]
        );
    }
}
