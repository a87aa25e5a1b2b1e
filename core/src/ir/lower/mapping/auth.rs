//! The listener-wide services: the AuthService's `ext_authz` filter, the RateLimitService's
//! filter, the TracingService's tracing and the LogServices' access loggers, each with its
//! cluster. Must not decide routes (a
//! route's own auth and rate limit settings are the route's).

use super::super::LowerOptions;
use super::clusters::{ClusterKey, Clusters};
use crate::resource::Meta;

/// Request headers Emissary always sends to an HTTP AuthService.
pub(super) const AUTH_DEFAULT_HEADERS: &[&str] = &[
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
pub(in crate::ir::lower) fn auth_filter<'a>(
    clusters: &mut Clusters<'a>,
    meta: &'a Meta,
    a: &crate::resource::AuthService,
    options: &LowerOptions,
    module: &crate::resource::AmbassadorModule,
) -> crate::ir::AuthFilter {
    use crate::resource::authservice::AuthProto;
    let settings = crate::resource::mapping::ClusterSettings {
        http2: a.proto == AuthProto::Grpc,
        ..a.cluster.clone()
    };
    let key = ClusterKey::for_service(&a.service, settings, meta, options, module);
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

/// The domain of rate limit descriptors: the RateLimitService's, else the Module's
/// `default_label_domain`; `None` without a RateLimitService.
pub(in crate::ir::lower) fn rate_limit_domain(set: &crate::resource::ResourceSet) -> Option<String> {
    let (_, rls) = set.rate_limit_service.as_ref()?;
    Some(rls.domain.clone().unwrap_or_else(|| {
        set.module
            .as_ref()
            .map_or_else(|| "ambassador".to_string(), |(_, m)| m.default_label_domain.clone())
    }))
}

/// Tracing for the TracingService, with its collector's cluster.
pub(in crate::ir::lower) fn tracing<'a>(
    clusters: &mut Clusters<'a>,
    meta: &'a Meta,
    t: &crate::resource::TracingService,
    options: &LowerOptions,
    module: &crate::resource::AmbassadorModule,
) -> crate::ir::Tracing {
    let key = ClusterKey::for_service(&t.service, t.cluster.clone(), meta, options, module);
    let cluster = clusters.add(key, meta, None);
    let [client_sampling, random_sampling, overall_sampling] = t.sampling.clone();
    crate::ir::Tracing {
        driver: t.driver,
        collector_hostname: t.collector_hostname.clone().unwrap_or_else(|| cluster.clone()),
        cluster,
        client_sampling,
        random_sampling,
        overall_sampling,
        custom_tags: t.custom_tags.clone(),
        collector_endpoint: t.collector_endpoint.clone(),
        collector_endpoint_version: t.collector_endpoint_version,
        trace_id_128bit: t.trace_id_128bit,
        shared_span_context: t.shared_span_context,
        service_name: t.service_name.clone(),
        source: Some(super::super::source_of(meta)),
    }
}

/// A LogService's access logger, with its (gRPC) cluster.
pub(in crate::ir::lower) fn log_sink<'a>(
    clusters: &mut Clusters<'a>,
    meta: &'a Meta,
    l: &crate::resource::LogService,
    options: &LowerOptions,
    module: &crate::resource::AmbassadorModule,
) -> crate::ir::LogSink {
    let key = ClusterKey::for_service(&l.service, l.cluster.clone(), meta, options, module);
    crate::ir::LogSink {
        http: l.http,
        cluster: clusters.add(key, meta, None),
        log_name: format!("{}/{}", meta.namespace, meta.name),
        buffer_size_bytes: l.buffer_size_bytes,
        flush_interval_ms: u64::from(l.flush_interval_s) * 1000,
        request_headers: l.request_headers.clone(),
        response_headers: l.response_headers.clone(),
        response_trailers: l.response_trailers.clone(),
        source: Some(super::super::source_of(meta)),
    }
}

/// The rate limit filter for the RateLimitService, with its (gRPC) cluster.
pub(in crate::ir::lower) fn ratelimit_filter<'a>(
    clusters: &mut Clusters<'a>,
    meta: &'a Meta,
    rls: &crate::resource::RateLimitService,
    domain: String,
    options: &LowerOptions,
    module: &crate::resource::AmbassadorModule,
) -> crate::ir::RateLimitFilter {
    let key = ClusterKey::for_service(&rls.service, rls.cluster.clone(), meta, options, module);
    crate::ir::RateLimitFilter {
        cluster: clusters.add(key, meta, None),
        domain,
        timeout_ms: rls.timeout_ms,
        failure_mode_deny: rls.failure_mode_deny,
        resource_exhausted: rls.resource_exhausted,
        source: Some(super::super::source_of(meta)),
    }
}

/// What routes read of the AuthService and the RateLimitService: whether there is an
/// AuthService, and the rate limit descriptors' domain (see `group`).
pub(in crate::ir::lower) fn services(set: &crate::resource::ResourceSet) -> (bool, Option<String>) {
    (set.auth_service.is_some(), rate_limit_domain(set))
}
