//! `KubernetesServiceResolver` and `KubernetesEndpointResolver`: how a Mapping's service becomes
//! upstream addresses. The service resolver (Emissary's default) lets Envoy resolve the
//! Service's DNS name; the endpoint resolver sends the pods' addresses from EndpointSlices over
//! EDS, so Envoy balances across pods directly and follows them without DNS delays.

use serde::Deserialize;

use super::Reader;

/// Which kind of resolver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resolver {
    /// `KubernetesServiceResolver`: DNS.
    Service,
    /// `KubernetesEndpointResolver`: EndpointSlices over EDS.
    Endpoint,
}

/// The resolvers that exist without being declared (as in Emissary).
pub const BUILT_IN: &[(&str, Resolver)] = &[
    ("kubernetes-service", Resolver::Service),
    ("kubernetes-endpoint", Resolver::Endpoint),
];

#[derive(Debug, Default, Deserialize)]
struct ResolverSpec {
    #[allow(dead_code, reason = "read by resource::parse before the spec")]
    ambassador_id: Option<serde_json::Value>,
}

/// Reads a resolver of `kind`.
pub(crate) fn read(r: &mut Reader<'_>, kind: Resolver) -> Option<Resolver> {
    let _: ResolverSpec = r.spec(&|_| None)?;
    Some(kind)
}
