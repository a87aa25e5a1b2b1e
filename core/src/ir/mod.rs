//! Stage 3: the semantic model between what users wrote and what Envoy gets.
//!
//! The IR speaks neither Ambassador nor protobuf: listeners with their route tables, virtual hosts,
//! routes in match order, and deduplicated upstream clusters. `lower` builds it from the
//! resource set, resolving Listener ↔ Host ↔ Mapping association,
//! and reports conflicts as diagnostics. Every node serializes to the template context that rule
//! packs see (see `rules/README.md`): field names here are a public API, so change them with care.
//! Knows nothing about Kubernetes, files, time or protobuf, and imports nothing from `resource`
//! (its value types are its own, `values`; conversions are `lower`'s).

pub mod lower;
pub mod values;

use serde::Serialize;

use crate::diagnostic::{ObjectRef, Origin};

pub use lower::lower;

/// The kinds of IR node that rule packs can target. `as_str` is the key used in `pack.yaml`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeKind {
    /// An Envoy listener on one port: [`Listener`].
    Listener,
    /// The route table of one listener: [`RouteConfig`].
    RouteConfig,
    /// One hostname's routes inside a route table: [`VirtualHost`].
    VirtualHost,
    /// One route: [`Route`].
    Route,
    /// One upstream: [`Cluster`].
    Cluster,
    /// A certificate and key served over SDS: [`Secret`].
    Secret,
    /// The addresses of an EDS cluster: [`Endpoints`].
    Endpoints,
    /// One HTTP filter of an HTTP listener's connection manager: not a node of its own, but a
    /// row of the rule pack's filter table, rendered with the [`Listener`]'s context (see
    /// `rules/README.md`).
    HttpFilter,
}

impl NodeKind {
    /// Every kind, in rendering order (children before the parents that embed them).
    pub const ALL: [NodeKind; 8] = [
        NodeKind::Secret,
        NodeKind::Endpoints,
        NodeKind::Cluster,
        NodeKind::Route,
        NodeKind::VirtualHost,
        NodeKind::RouteConfig,
        NodeKind::HttpFilter,
        NodeKind::Listener,
    ];

    /// The snake_case key used in rule packs.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Listener => "listener",
            NodeKind::RouteConfig => "route_config",
            NodeKind::VirtualHost => "virtual_host",
            NodeKind::Route => "route",
            NodeKind::Cluster => "cluster",
            NodeKind::Secret => "secret",
            NodeKind::Endpoints => "endpoints",
            NodeKind::HttpFilter => "http_filter",
        }
    }

    /// Parses a rule pack key.
    pub fn from_key(key: &str) -> Option<NodeKind> {
        NodeKind::ALL.into_iter().find(|k| k.as_str() == key)
    }
}

/// The user object an IR node came from, for diagnostics.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
pub struct SourceRef {
    /// `Kind namespace/name`.
    pub object: ObjectRef,
    /// Where it was defined.
    #[serde(skip)]
    pub origin: Origin,
    /// The object's labels (what a rule's `select` matches), when it has any.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// The whole model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Ir {
    /// Listeners, by port.
    pub listeners: Vec<Listener>,
    /// Route tables, one per listener, by name.
    pub route_configs: Vec<RouteConfig>,
    /// Upstream clusters, by name (shared, as routes are).
    pub clusters: Vec<std::sync::Arc<Cluster>>,
    /// TLS certificates, by name.
    pub secrets: Vec<Secret>,
    /// Addresses of the EDS clusters, by cluster name.
    pub endpoints: Vec<Endpoints>,
}

impl Ir {
    /// The user objects an Envoy resource of type `ty` named `name` came from: a listener's
    /// Listener, a route table's Listeners and Hosts, a cluster's (or its endpoints') first
    /// Mapping, a secret's Host or TLSContext. Empty for what attache made up (defaults).
    pub fn sources_of(&self, ty: crate::snapshot::ResourceType, name: &str) -> Vec<&SourceRef> {
        use crate::snapshot::ResourceType;
        let mut out: Vec<&SourceRef> = match ty {
            ResourceType::Listener => self
                .listeners
                .iter()
                .filter(|l| l.name == name)
                .filter_map(|l| l.source.as_ref())
                .collect(),
            ResourceType::Route => self
                .listeners
                .iter()
                .filter(|l| l.route_config == name)
                .filter_map(|l| l.source.as_ref())
                .chain(
                    self.route_configs
                        .iter()
                        .filter(|rc| rc.name == name)
                        .flat_map(|rc| rc.virtual_hosts.iter().filter_map(|vh| vh.source.as_ref())),
                )
                .collect(),
            ResourceType::Cluster => self
                .clusters
                .iter()
                .filter(|c| c.name == name)
                .filter_map(|c| c.source.as_ref())
                .collect(),
            ResourceType::Endpoint => self
                .endpoints
                .iter()
                .filter(|e| e.name == name)
                .filter_map(|e| e.source.as_ref())
                .collect(),
            ResourceType::Secret => self
                .secrets
                .iter()
                .filter(|s| s.name == name)
                .filter_map(|s| s.source.as_ref())
                .collect(),
        };
        out.sort();
        out.dedup();
        out
    }
}

/// How a listener decides whether a request is secure (Ambassador's `securityModel`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SecurityModel {
    /// `X-Forwarded-Proto: https` means secure.
    Xfp,
    /// Everything is secure.
    Secure,
    /// Everything is insecure.
    Insecure,
}

/// An Envoy listener. Ends up as `envoy.config.listener.v3.Listener`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Listener {
    /// Envoy resource name: `listener-<port>` (Envoy `Listener.name`).
    pub name: String,
    /// Address to bind (Envoy `Listener.address.socket_address.address`).
    pub address: String,
    /// Port to bind (Envoy `Listener.address.socket_address.port_value`).
    pub port: u16,
    /// HTTP connection manager stat prefix: the Listener's `statsPrefix`, else `ingress_http`
    /// (`ingress_https` for HTTPS and HTTPSPROXY); `ingress_tcp_<port>` for a TCP listener.
    pub stat_prefix: String,
    /// Name of the RouteConfiguration of the cleartext chain, fetched over RDS: `routes-<port>`,
    /// or the table of a lower port whose listener serves the same Hosts under the same
    /// security model (then shared); empty for a TCP listener.
    pub route_config: String,
    /// Filter chains: first `cleartext` (no server name, no certificate), then `tls-<server name>`
    /// per TLS server name of the Hosts terminating TLS here (a hostname without its port; Hosts
    /// sharing one share the chain), each with its own route table holding only those Hosts.
    /// A chain's `secret` and `ca_secret` are SDS names (`null` when absent; `server_names` is
    /// empty for `cleartext` and `*`). Empty for a TCP listener.
    pub filter_chains: Vec<FilterChain>,
    /// Whether some chain reads the TLS server name (a chain terminating TLS, or a TCP chain
    /// with `server_names`): then add the TLS inspector listener filter.
    pub tls: bool,
    /// Whether Envoy drops the port from `Host:` before matching hostnames: false when a Host's
    /// hostname on this listener, or any Mapping's `hostname` or `host`, has a port (then
    /// hostnames are matched with it).
    pub strip_host_port: bool,
    /// How requests are judged secure: the Listener's `securityModel` (`xfp` for the default
    /// listener, `insecure` for a TCP one); `xfp` means `X-Forwarded-Proto: https` is secure.
    pub security_model: SecurityModel,
    /// Whether a PROXY protocol header is expected (the Listener's protocol is HTTPPROXY or
    /// HTTPSPROXY).
    pub proxy_protocol: bool,
    /// Envoy's `xff_num_trusted_hops`: the Listener's `l7Depth`, else the Module's
    /// `xff_num_trusted_hops`.
    pub xff_num_trusted_hops: u32,
    /// The `ambassador` Module's HTTP connection manager settings and the HTTP filters it turns
    /// on; an optional setting the Module leaves unset is `null` (Envoy's default). A TCP
    /// listener has the defaults. `header_case` is `proper_case`, `preserve` or `null`;
    /// `access_log.path` `null` is standard output, and neither `access_log.text` nor `json` is
    /// Envoy's default line.
    pub http: HttpSettings,
    /// The AuthService's external authorization (`ext_authz`) filter, or `null`.
    pub auth: Option<AuthFilter>,
    /// Whether some route has CORS (then add the CORS filter).
    pub cors: bool,
    /// The Module's IP allow or deny list (`ip_allow` / `ip_deny`), applied by the RBAC filter
    /// to every route that has none of its own, or `null`. `action` is `ALLOW` or `DENY`; a
    /// principal's `source` is `peer` or `remote`.
    pub ip_policy: Option<values::IpPolicy>,
    /// Whether the RBAC filter is needed: the Module or some route has an IP policy.
    pub rbac: bool,
    /// The RateLimitService's rate limit filter, or `null`.
    pub ratelimit: Option<RateLimitFilter>,
    /// The TracingService's tracing of requests (the connection manager's `tracing`), or `null`.
    /// `driver` is `zipkin`, `opentelemetry` or `datadog`; the samplings are `null` for Envoy's
    /// 100; a custom tag's `kind` is `literal`, `environment` or `request_header`.
    pub tracing: Option<Tracing>,
    /// The LogServices' access loggers, by namespace and name (empty without LogServices).
    pub log_services: Vec<LogSink>,
    /// Whether some route has custom error responses of its own (then add the filter that
    /// applies them; the Module's have their own filter, see `http.error_responses`).
    pub error_responses: bool,
    /// For a TCP listener (TCPMappings on its port): its TCP proxy chains, selected by TLS
    /// server name; then `filter_chains` is empty and `route_config` names nothing. HTTP
    /// listeners have `[]`. A chain's `weighted` is empty for one TCPMapping, else its `cluster`
    /// is empty; with `server_names` and no `secret`, TLS is passed through.
    pub tcp: Vec<TcpChain>,
    /// The Listener resource this came from (for a TCP listener: its first TCPMapping), or
    /// `null` for the default listener.
    pub source: Option<SourceRef>,
}

/// A cluster's share of a TCP chain's connections.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct TcpWeight {
    /// Cluster.
    pub cluster: String,
    /// Relative weight: the TCPMapping's `weight`, else an equal share of what the others leave
    /// of 100.
    pub weight: Option<u32>,
}

/// A TCP proxy chain of a TCP listener (one TCPMapping, or several sharing by weight).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct TcpChain {
    /// Chain name, unique in its listener: `tcp` or `tcp-<server name>` (the TCPMapping's
    /// `host`).
    pub name: String,
    /// TLS server names it takes (empty: every connection).
    pub server_names: Vec<String>,
    /// The certificate's [`Secret`] (its SDS name) when TLS is terminated here, from the Host
    /// or TLSContext with that name, else `null`; with `server_names` and no secret, TLS is
    /// passed through to the service.
    pub secret: Option<String>,
    /// Cluster connections go to for one TCPMapping (empty when `weighted` is used).
    pub cluster: String,
    /// Several TCPMappings for the same connections: their clusters and weights (Envoy's
    /// `weighted_clusters`); empty for one TCPMapping (then see `cluster`).
    pub weighted: Vec<TcpWeight>,
    /// Idle timeout in milliseconds, or `null` for Envoy's.
    pub idle_timeout_ms: Option<u64>,
    /// Stats prefix of the TCP proxy.
    pub stat_prefix: String,
    /// The TCPMapping it came from.
    pub source: Option<SourceRef>,
}

/// One filter chain of a listener: which connections it takes and the routes it serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct FilterChain {
    /// Chain name, unique in its listener: `cleartext`, or `tls-<server name>`.
    pub name: String,
    /// SNI names the chain takes (empty: any, including none; so for `cleartext` and for the
    /// `*` server name).
    pub server_names: Vec<String>,
    /// SDS name of the [`Secret`] with the certificate when the chain terminates TLS; `null`
    /// for `cleartext`.
    pub secret: Option<String>,
    /// How TLS is spoken on this chain (ALPN, versions, ciphers, client certificates): the
    /// Host's `tls`, else its TLSContext's; `null` for `cleartext`.
    pub tls: Option<values::TlsSettings>,
    /// SDS name of the [`Secret`] with the CA that client certificates are checked against
    /// (`<namespace>/<name>#ca`), or `null`.
    pub ca_secret: Option<String>,
    /// Name of the RouteConfiguration served over RDS for this chain: the listener's
    /// `route_config` for `cleartext`, `routes-<port>-<server name>` (only this chain's Hosts)
    /// for a TLS chain.
    pub route_config: String,
}

/// A PEM private key: serialized as `<redacted>`, so that the IR can be shown (`/debug/ir`,
/// golden files) without it; templates get the key itself (see the renderer).
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey(pub String);

impl Serialize for PrivateKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

impl schemars::JsonSchema for PrivateKey {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PrivateKey".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "description": "PEM private key (templates get the key itself)"})
    }
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A certificate chain and its key, served over SDS. Ends up as
/// `envoy.extensions.transport_sockets.tls.v3.Secret`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Secret {
    /// Envoy resource name, which listeners' and clusters' SDS configs reference:
    /// `<namespace>/<secret name>`, or `<namespace>/<secret name>#ca` for a CA.
    pub name: String,
    /// PEM certificate chain (for a CA: the CA certificate).
    pub certificate_chain: String,
    /// PEM private key; `null` for a CA certificate, which renders as a validation context.
    /// Templates get the key itself; wherever attache prints the IR or Secrets (`/debug/ir`,
    /// `/debug/snapshot`, `translate`, golden files) it shows as `<redacted>`.
    pub private_key: Option<PrivateKey>,
    /// The Kubernetes Secret it came from.
    pub source: Option<SourceRef>,
}

/// The `ext_authz` filter an AuthService asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct AuthFilter {
    /// Cluster of the authorization service.
    pub cluster: String,
    /// `http://host:port` (or `https://`) of the service, for Envoy's `server_uri`.
    pub uri: String,
    /// `http` or `grpc`.
    pub proto: values::AuthProto,
    /// Prefix added to the checked request's path (HTTP).
    pub path_prefix: String,
    /// Timeout of the check in milliseconds.
    pub timeout_ms: u64,
    /// Request headers sent to the service (lowercase; Emissary's defaults included).
    pub allowed_request_headers: Vec<String>,
    /// Headers of an allowing answer that go upstream.
    pub allowed_authorization_headers: Vec<String>,
    /// Allow requests when the service fails.
    pub failure_mode_allow: bool,
    /// Status when it fails, or `null` for Envoy's 403.
    pub status_on_error: Option<u16>,
    /// `{max_bytes, allow_partial}`: the request body sent along, or `null`.
    pub include_body: Option<IncludeBody>,
    /// Headers added to check requests (HTTP).
    pub add_auth_headers: Vec<NameValue>,
}

/// How much of the request body an authorization check gets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct IncludeBody {
    /// Most bytes sent.
    pub max_bytes: u32,
    /// Send a partial body when the request's is larger (else 413).
    pub allow_partial: bool,
}

/// A header name and value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct NameValue {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// What a route tells the `ext_authz` filter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct RouteAuth {
    /// Skip the check (`bypass_auth`).
    pub bypass: bool,
    /// `auth_context_extensions`.
    pub context_extensions: std::collections::BTreeMap<String, String>,
}

/// HTTP connection manager settings (the `ambassador` Module's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct HttpSettings {
    /// Envoy's `use_remote_address` (Emissary's default: true).
    pub use_remote_address: bool,
    /// `Server` header, `null` for Envoy's.
    pub server_name: Option<String>,
    /// `max_request_headers_kb`, or `null`.
    pub max_request_headers_kb: Option<u32>,
    /// Downstream connection idle timeout in milliseconds, or `null`.
    pub idle_timeout_ms: Option<u64>,
    /// `merge_slashes`.
    pub merge_slashes: bool,
    /// Answer 400 to a path with an escaped slash (the Module's
    /// `reject_requests_with_escaped_slashes`); otherwise such paths are kept as they are.
    /// Paths are always normalised (RFC 3986 dot segments), as in Emissary.
    pub reject_escaped_slashes: bool,
    /// Drop the `Host:` port only when it is the listener's (instead of `strip_host_port`).
    pub strip_matching_host_port: bool,
    /// The router's `suppress_envoy_headers`.
    pub suppress_envoy_headers: bool,
    /// The gRPC-Web filter (`enable_grpc_web`).
    pub grpc_web: bool,
    /// The gRPC HTTP/1.1 bridge filter (`enable_grpc_http11_bridge`).
    pub grpc_http1_bridge: bool,
    /// The gRPC statistics filter: `{upstream_stats, services: [{name, method_names}], all_methods}`
    /// (`services` `null` unless listed), or `null`.
    pub grpc_stats: Option<values::GrpcStats>,
    /// Lua code for the Lua filter, or `null`.
    pub lua_scripts: Option<String>,
    /// Response compression (the compressor filter with gzip): `{memory_level,
    /// min_content_length, compression_level, compression_strategy, window_bits, content_type,
    /// disable_on_etag_header, remove_accept_encoding_header}` (unset values `null`), or `null`.
    pub gzip: Option<values::Gzip>,
    /// The buffer filter's `max_request_bytes` (larger requests get 413), or `null`.
    pub buffer_max_request_bytes: Option<u32>,
    /// HTTP/1.0 is accepted.
    pub enable_http10: bool,
    /// `Content-Length` with chunked encoding is accepted.
    pub allow_chunked_length: bool,
    /// A client's `X-Request-Id` is kept.
    pub preserve_external_request_id: bool,
    /// `ALLOW`, `REJECT_REQUEST` or `DROP_HEADER` for request headers with `_`, or `null`.
    pub headers_with_underscores_action: Option<&'static str>,
    /// The Module's custom error responses: `[{status, text, json, content_type}]`.
    pub error_responses: Vec<values::ErrorResponse>,
    /// Brotli compression: `{quality, window_bits, min_content_length, content_type}`, or `null`.
    pub brotli: Option<values::Brotli>,
    /// How header names are written to HTTP/1 clients: `proper_case`, `preserve`, or `null`
    /// (lowercase).
    pub header_case: Option<values::HeaderCase>,
    /// `forward_client_cert_details` (Envoy's enum name), or `null`.
    pub forward_client_cert_details: Option<&'static str>,
    /// `set_current_client_cert_details`: `{subject, cert, chain, dns, uri}`, or `null`.
    pub set_current_client_cert_details: Option<values::ClientCertDetails>,
    /// The listener's `per_connection_buffer_limit_bytes`, or `null`.
    pub buffer_limit_bytes: Option<u32>,
    /// The access log: `{path, text, json}` (`path` `null`: standard output; neither `text` nor
    /// `json`: Envoy's default line).
    pub access_log: values::AccessLog,
}

/// The rate limit filter: where and how routes' descriptors are checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct RateLimitFilter {
    /// The service's gRPC cluster.
    pub cluster: String,
    /// The descriptors' domain.
    pub domain: String,
    /// How long a request waits for the answer, in milliseconds.
    pub timeout_ms: u64,
    /// Refuse requests when the service cannot answer (else let them through).
    pub failure_mode_deny: bool,
    /// Over-limit gRPC requests get RESOURCE_EXHAUSTED (else UNAVAILABLE).
    pub resource_exhausted: bool,
    /// The RateLimitService.
    pub source: Option<SourceRef>,
}

/// Tracing of a listener's requests: the connection manager's `tracing` (the TracingService).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Tracing {
    /// `zipkin`, `opentelemetry` or `datadog`.
    pub driver: values::Driver,
    /// The collector's cluster.
    pub cluster: String,
    /// Percentages traced, each `null` for Envoy's default (100): requests that ask for a trace
    /// (`x-client-trace-id`), random requests, all requests.
    pub client_sampling: Option<values::Percent>,
    /// See `client_sampling`.
    pub random_sampling: Option<values::Percent>,
    /// See `client_sampling`.
    pub overall_sampling: Option<values::Percent>,
    /// Tags on every span: `[{tag, kind, value, default_value}]` (`kind` is `literal`,
    /// `environment` or `request_header`).
    pub custom_tags: Vec<values::CustomTag>,
    /// Zipkin: the collector's path.
    pub collector_endpoint: String,
    /// Zipkin: `HTTP_JSON` or `HTTP_PROTO`.
    pub collector_endpoint_version: &'static str,
    /// Zipkin: the `Host` of requests to the collector.
    pub collector_hostname: String,
    /// Zipkin: 128-bit trace ids.
    pub trace_id_128bit: bool,
    /// Zipkin: client and server spans share one span id (`null`: Envoy's default, true).
    pub shared_span_context: Option<bool>,
    /// Datadog and OpenTelemetry: the service name of spans.
    pub service_name: String,
    /// The TracingService.
    pub source: Option<SourceRef>,
}

/// A LogService's access logger: entries for requests (`http`) or connections go to its gRPC
/// cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct LogSink {
    /// An entry per HTTP request (else per connection).
    pub http: bool,
    /// The service's cluster.
    pub cluster: String,
    /// The log's name in the entries: the LogService's `namespace/name`.
    pub log_name: String,
    /// Entries are sent when this many bytes are buffered...
    pub buffer_size_bytes: u32,
    /// ... or after this long, in milliseconds.
    pub flush_interval_ms: u64,
    /// Request headers written into entries.
    pub request_headers: Vec<String>,
    /// Response headers written into entries.
    pub response_headers: Vec<String>,
    /// Response trailers written into entries.
    pub response_trailers: Vec<String>,
    /// The LogService.
    pub source: Option<SourceRef>,
}

/// The routes of one listener. Ends up as `envoy.config.route.v3.RouteConfiguration`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct RouteConfig {
    /// Envoy resource name: `routes-<port>` for a listener's cleartext chain, `routes-<port>+<port>…`
    /// for the one table of listeners that serve the same Hosts under the same security model
    /// (their ports in order), `routes-<port>-<server name>` for a TLS chain.
    pub name: String,
    /// One virtual host per hostname, sorted by hostname (most specific first is Envoy's job).
    pub virtual_hosts: Vec<VirtualHost>,
}

/// One hostname inside a route table. Ends up as `envoy.config.route.v3.VirtualHost`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct VirtualHost {
    /// Name, unique within the route table: the hostname.
    pub name: String,
    /// The Host's hostname (`*` for the default host).
    pub hostname: String,
    /// Envoy domains matched (Envoy `VirtualHost.domains`): the hostname.
    pub domains: Vec<String>,
    /// Routes in match order (shared: lowering hands an unchanged Mapping's route to the next
    /// translation as the same allocation, and rendering recognises it by address).
    pub routes: Vec<std::sync::Arc<Route>>,
    /// The Host resource this came from (`null` for the default host).
    pub source: Option<SourceRef>,
}

/// What a route does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RouteAction {
    /// Forward to `cluster`.
    Route,
    /// Redirect to the same URL over HTTPS.
    HttpsRedirect,
    /// Redirect to another host (`redirect`).
    Redirect,
}

/// How a header matcher compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MatchKind {
    /// Equal to `value`.
    Exact,
    /// Starts with `value`.
    Prefix,
    /// Ends with `value`.
    Suffix,
    /// Present, whatever the value.
    Present,
    /// Matches `value` as an RE2 regular expression (whole value).
    Regex,
}

/// A header condition (Envoy `HeaderMatcher`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
pub struct HeaderMatch {
    /// Header name (lowercase; `:authority` and `:method` are pseudo-headers).
    pub name: String,
    /// How to compare.
    pub kind: MatchKind,
    /// The value compared with (empty for `present`).
    pub value: String,
    /// Whether case is ignored (`:authority` conditions from a hostname or host: DNS names
    /// ignore case; not for a regex).
    pub ignore_case: bool,
}

/// A share of requests (Envoy `RuntimeFractionalPercent` with a `HUNDRED` denominator).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct RuntimeFraction {
    /// Percent threshold.
    pub numerator: u32,
    /// Runtime key that can override it: `routing.traffic_shift.<cluster>`, as Emissary names it.
    pub runtime_key: String,
}

/// TLS to an upstream with a TLSContext (`Mapping.tls: <name>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct UpstreamTls {
    /// The [`Secret`] with the client certificate, if the TLSContext has one.
    pub client_secret: Option<String>,
    /// SNI sent (the TLSContext's `sni`, else the upstream host).
    pub sni: String,
    /// ALPN protocols offered.
    pub alpn_protocols: Vec<String>,
}

/// Where a share of a route's requests is mirrored (responses are ignored).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
pub struct Mirror {
    /// Cluster of the shadow Mapping.
    pub cluster: String,
    /// Percent of requests mirrored (the shadow's `weight`, default 100).
    pub percent: u32,
}

/// One route. Ends up as `envoy.config.route.v3.Route` inside its virtual host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Route {
    /// Route name: `<namespace>/<mapping>`, plus `/insecure` for the cleartext variant (the
    /// route that redirects a Host's cleartext requests to HTTPS).
    pub name: String,
    /// What the route does: `route` forwards to `cluster`, `redirect` sends clients to another
    /// host (see `redirect`), `https_redirect` to the same URL over HTTPS.
    pub action: RouteAction,
    /// The Mapping's `prefix`: a path prefix (Envoy `RouteMatch.prefix`), an exact path
    /// (`path`) or a regular expression (`safe_regex`), as `path_kind` says.
    pub prefix: String,
    /// How `prefix` matches the path: `prefix`, `exact` (the Mapping's `prefix_exact`) or
    /// `regex` (`prefix_regex`; RE2, the whole path).
    pub path_kind: values::PathKind,
    /// Whether the path match is case sensitive.
    pub case_sensitive: bool,
    /// Header conditions, sorted by name (Envoy `RouteMatch.headers`); `kind` is `exact`,
    /// `prefix`, `suffix`, `present` or `regex`. Besides the Mapping's headers, they include the
    /// `:authority` condition of its `hostname` or `host`, the `:method` one of its `method`, and
    /// `x-forwarded-proto: https` on a route for secure requests only.
    pub headers: Vec<HeaderMatch>,
    /// Query parameter conditions, sorted by name (Envoy `RouteMatch.query_parameters`);
    /// `kind` is `exact`, `present` or `regex`, and `ignore_case` is false.
    pub query_parameters: Vec<HeaderMatch>,
    /// For a member of a canary group (Mappings with the same match): the route matches a
    /// request when its random value (0-99) is below `numerator`, a cumulative percent threshold
    /// along the group (Envoy `RouteMatch.runtime_fraction`). `null` (always matches) outside a
    /// group and for the group's last route.
    pub runtime_fraction: Option<RuntimeFraction>,
    /// For `redirect` actions: where to (Envoy `Route.redirect`), else `null`; `response_code`
    /// is Envoy's enum name.
    pub redirect: Option<Box<values::Redirect>>,
    /// Path rewrite by regular expression (Envoy `RouteAction.regex_rewrite`), or `null`;
    /// `prefix_rewrite` is `null` when this is set.
    pub regex_rewrite: Option<Box<values::RegexRewrite>>,
    /// Send the upstream's host name as `Host` (Envoy `RouteAction.auto_host_rewrite`).
    pub auto_host_rewrite: bool,
    /// Connection upgrades allowed (`websocket`; Envoy `RouteAction.upgrade_configs`).
    pub upgrades: Vec<String>,
    /// Retries (Envoy `RouteAction.retry_policy`): the Mapping's `retry_policy`, else the
    /// Module's, or `null`.
    pub retry_policy: Option<Box<values::RetryPolicy>>,
    /// Shadow Mappings with this route's match: requests are mirrored to their cluster
    /// (Envoy `RouteAction.request_mirror_policies`).
    pub mirrors: Vec<Mirror>,
    /// What requests are hashed on for `ring_hash`/`maglev` clusters (Envoy
    /// `RouteAction.hash_policy`), from the Mapping's `load_balancer`, else the Module's:
    /// `{cookie: {name, path, ttl_ms}}`, `{header: {name}}`, the string `"source_ip"`, or `null`.
    pub hash_policy: Option<Box<values::HashPolicy>>,
    /// Per-route settings of the AuthService check, when there is an AuthService and the
    /// Mapping says something (`bypass_auth`, `auth_context_extensions`); else `null`.
    pub auth: Option<RouteAuth>,
    /// CORS (the Mapping's, else the Module's), or `null`.
    pub cors: Option<Box<values::Cors>>,
    /// The Mapping's own IP allow or deny list (`ip_allow` / `ip_deny`, shaped as the listener's
    /// `ip_policy`), which replaces the listener's (the Module's) on this route through the
    /// RBAC filter's per-route config, or `null`.
    pub ip_policy: Option<Box<values::IpPolicy>>,
    /// Rate limits (with a RateLimitService): one list of actions per label group of the
    /// service's domain, the Module's default labels first; empty without labels. An action's
    /// `kind` is `source_cluster`, `destination_cluster`, `remote_address`, `generic_key` or
    /// `request_headers`.
    pub rate_limits: Vec<Vec<values::RateLimitAction>>,
    /// The Mapping's own custom error responses (`error_response_overrides`), replacing the
    /// Module's on this route; empty when it has none.
    pub error_responses: Vec<values::ErrorResponse>,
    /// No custom error responses at all on this route, not even the Module's
    /// (`bypass_error_response_overrides`).
    pub bypass_error_responses: bool,
    /// `HIGH` for the cluster's high-priority circuit breakers, or `null` for Envoy's default.
    pub priority: Option<values::RoutePriority>,
    /// The Mapping's `envoy_override` as JSON text, only with `--allow-envoy-override` and when
    /// set (absent otherwise): attache merges it into the rendered route after every rule, and
    /// checks it with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envoy_override: Option<String>,
    /// Name of the cluster for `route` actions (Envoy `RouteAction.cluster`).
    pub cluster: String,
    /// Replacement for the matched prefix, `null` for none (Envoy `RouteAction.prefix_rewrite`).
    pub prefix_rewrite: Option<String>,
    /// Upstream timeout in milliseconds (Envoy `RouteAction.timeout`): the Mapping's
    /// `timeout_ms`, else the Module's `cluster_request_timeout_ms`, else 3000.
    pub timeout_ms: u64,
    /// The Mapping's `precedence` (higher first).
    pub precedence: i32,
    /// Host header sent upstream, `null` to keep it (Envoy `RouteAction.host_rewrite_literal`).
    pub host_rewrite: Option<String>,
    /// Stream idle timeout in milliseconds, `null` for Envoy's default (Envoy `RouteAction.idle_timeout`).
    pub idle_timeout_ms: Option<u64>,
    /// Headers added to requests (Envoy `Route.request_headers_to_add`): the Mapping's
    /// `add_request_headers`, else the Module's `defaults`, plus `l5d-dst-override` with
    /// `add_linkerd_headers`. `{{> header_value_option}}` renders one as Envoy's
    /// `HeaderValueOption` (the core route template writes it out in its loops).
    pub request_headers_to_add: Vec<values::AddedHeader>,
    /// Headers added to responses (Envoy `Route.response_headers_to_add`): the Mapping's
    /// `add_response_headers`, else the Module's `defaults`. `{{> header_value_option}}` renders
    /// one as Envoy's `HeaderValueOption` (the core route template writes it out in its loops).
    pub response_headers_to_add: Vec<values::AddedHeader>,
    /// Names of the headers removed from requests (Envoy `Route.request_headers_to_remove`):
    /// the Mapping's `remove_request_headers`, else the Module's `defaults`.
    pub request_headers_to_remove: Vec<String>,
    /// Names of the headers removed from responses (Envoy `Route.response_headers_to_remove`):
    /// the Mapping's `remove_response_headers`, else the Module's `defaults`.
    pub response_headers_to_remove: Vec<String>,
    /// The Mapping this came from.
    pub source: Option<SourceRef>,
}

/// How Envoy finds a cluster's endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Discovery {
    /// Fixed IP address.
    Static,
    /// DNS name, re-resolved periodically; every address is an endpoint.
    StrictDns,
    /// DNS name; only the first address is used (`dns_type: logical_dns`).
    LogicalDns,
    /// Addresses sent over EDS ([`Endpoints`]): a Kubernetes Service's pods, read from its
    /// EndpointSlices (the `kubernetes-endpoint` resolver).
    Eds,
}

/// The addresses of an EDS cluster. Ends up as `envoy.config.endpoint.v3.ClusterLoadAssignment`;
/// a change of pods changes only this node, so only EDS goes to Envoy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Endpoints {
    /// The EDS cluster's name, used as the ClusterLoadAssignment's `cluster_name`.
    pub name: String,
    /// The Kubernetes Service, `<namespace>/<name>`.
    pub service: String,
    /// The Service port the Mappings name.
    pub port: u16,
    /// The ready pods' IP addresses with the pods' port (the Service port's target), sorted;
    /// empty when no pod is ready (or the Service or its port is not found).
    pub addresses: Vec<EndpointAddress>,
    /// The first Mapping using the cluster.
    pub source: Option<SourceRef>,
}

/// One upstream address.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
pub struct EndpointAddress {
    /// IP address.
    pub address: String,
    /// Port.
    pub port: u16,
}

/// An upstream. Ends up as `envoy.config.cluster.v3.Cluster`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Cluster {
    /// Envoy resource name: `cluster_<host>_<port>` (`host` lowercased, characters other than
    /// letters and digits as `_`), plus `_tls` for TLS, `_eds` for EDS, and a short hash when
    /// the settings differ from the defaults or the name alone would be ambiguous (a host with
    /// characters other than lowercase letters, digits and dots), e.g.
    /// `cluster_charge_payments_eu_80_d327a9bc` for `charge.payments-eu`.
    pub name: String,
    /// Host to connect to (DNS name or IP); a bare service name gets the Mapping's namespace
    /// (`charge.payments-eu`) unless that is attache's namespace or the Module's
    /// `use_ambassador_namespace_for_service_resolution` is set.
    pub host: String,
    /// Port to connect to: the service's, else 80 (443 with TLS).
    pub port: u16,
    /// Whether to originate TLS: an `https://` service, `tls: true` or a TLSContext.
    pub tls: bool,
    /// How TLS is originated, with a TLSContext: the SDS name of its client certificate (`null`
    /// when it has none), SNI and ALPN; else `null`.
    pub upstream_tls: Option<UpstreamTls>,
    /// How endpoints are found: `static` (an IP address), `strict_dns`, `logical_dns`, or `eds`
    /// (the `kubernetes-endpoint` resolver: the addresses come in the `endpoints` node of the
    /// same name).
    pub discovery: Discovery,
    /// Connect timeout in milliseconds: the Mappings' `connect_timeout_ms` (the smallest when
    /// they differ), else 3000.
    pub connect_timeout_ms: u64,
    /// The rest of the cluster's settings (`http2`, `lb_policy`, `circuit_breakers`, ...: see
    /// `rules/README.md`); Mappings asking for different ones get different clusters.
    #[serde(flatten)]
    pub settings: values::ClusterSettings,
    /// The objects using this cluster (Mappings, TCPMappings, or the AuthService,
    /// RateLimitService, TracingService or LogService it serves): the first 8 in sort order.
    pub used_by: Vec<ObjectRef>,
    /// The first object of `used_by`, which diagnostics about the cluster point at.
    pub source: Option<SourceRef>,
}

#[cfg(test)]
mod tests {
    /// The model and its value types name nothing of `resource` (conversions are `lower`'s): a
    /// change to how a CRD is read cannot change the rule packs' context by accident.
    #[test]
    fn the_model_imports_nothing_from_resource() {
        // Spelled apart, so that this test does not find itself.
        let path = ["resource", "::"].concat();
        // Nor is any IR type read straight from an object's spec: the readers have their own
        // types and convert (a CRD change is then never an operator-facing context change).
        let reads = ["Deser", "ialize"].concat();
        for (file, text) in [
            ("ir/mod.rs", include_str!("mod.rs")),
            ("ir/values.rs", include_str!("values.rs")),
        ] {
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                assert!(!code.contains(&path), "{file}:{}: {line}", n + 1);
                assert!(!code.contains(&reads), "{file}:{}: {line}", n + 1);
            }
        }
    }
}
