//! `TracingService`: where Envoy sends trace spans (Zipkin, OpenTelemetry or Datadog), how many
//! requests are traced, and which tags spans carry. Delivered in the connection manager over xDS,
//! so a change applies without restarting Envoy (Emissary writes it into Envoy's bootstrap).

use serde::Deserialize;

use super::Reader;
use crate::lang::service::ServiceRef;

#[derive(Clone, Debug, Default, Deserialize)]
struct TracingServiceSpec {
    driver: Option<String>,
    service: Option<String>,
    sampling: Option<SamplingSpec>,
    #[serde(default)]
    tag_headers: Vec<String>,
    #[serde(default)]
    custom_tags: Vec<CustomTagSpec>,
    config: Option<ConfigSpec>,
    stats_name: Option<String>,
    #[allow(dead_code, reason = "read by resource::parse before the spec")]
    ambassador_id: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SamplingSpec {
    client: Option<f64>,
    random: Option<f64>,
    overall: Option<f64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigSpec {
    collector_endpoint: Option<String>,
    collector_endpoint_version: Option<String>,
    collector_hostname: Option<String>,
    trace_id_128bit: Option<bool>,
    shared_span_context: Option<bool>,
    service_name: Option<String>,
    // Emissary's CRD has them; see `read`.
    access_token_file: Option<String>,
    collector_cluster: Option<String>,
    propagation_modes: Option<Vec<String>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomTagSpec {
    tag: String,
    literal: Option<LiteralSpec>,
    environment: Option<FromSpec>,
    request_header: Option<FromSpec>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LiteralSpec {
    value: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FromSpec {
    name: String,
    default_value: Option<String>,
}

/// The field names of its spec (see `resource::fields`).
pub(super) fn spec_fields() -> &'static [&'static str] {
    super::fields::of::<TracingServiceSpec>()
}

pub use crate::ir::values::Driver;

pub use crate::ir::values::CustomTag;

/// A tracing service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TracingService {
    /// The tracer.
    pub driver: Driver,
    /// Where its collector listens.
    pub service: ServiceRef,
    /// Percentages of requests traced: `(client, random, overall)`, each `None` for Envoy's
    /// default (100).
    pub sampling: [Option<Percent>; 3],
    /// Tags added to every span (`custom_tags`, and `tag_headers` as request header tags).
    pub custom_tags: Vec<CustomTag>,
    /// Zipkin: the collector's path (`/api/v2/spans`).
    pub collector_endpoint: String,
    /// Zipkin: `HTTP_JSON` or `HTTP_PROTO`.
    pub collector_endpoint_version: &'static str,
    /// Zipkin: the `Host` of requests to the collector, `None` for the cluster's name.
    pub collector_hostname: Option<String>,
    /// Zipkin: 128-bit trace ids (Emissary's default: true).
    pub trace_id_128bit: bool,
    /// Zipkin: client and server spans share one span id (Envoy's default: true).
    pub shared_span_context: Option<bool>,
    /// Datadog and OpenTelemetry: the service name spans carry (`ambassador` by default, as in
    /// Emissary).
    pub service_name: String,
    /// Its cluster's settings (HTTP/2 for OpenTelemetry, stats name).
    pub cluster: super::mapping::ClusterSettings,
}

pub use crate::ir::values::Percent;

/// Reads and checks a TracingService spec.
pub(crate) fn read(r: &mut Reader<'_>) -> Option<TracingService> {
    let spec: TracingServiceSpec = r.spec(&|p| {
        p.starts_with("spec.sampling")
            .then(|| "a percentage from 0 to 100".to_string())
    })?;
    let mut ok = true;
    let mut fail = |r: &mut Reader<'_>, path: &str, message: String, hint: &str| {
        let d = r.error("invalid_tracing", path, message).hint(hint);
        r.diagnostics.push(d);
        ok = false;
    };
    let driver = match spec.driver.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("zipkin") => Some(Driver::Zipkin),
        Some("opentelemetry") => Some(Driver::Opentelemetry),
        Some("datadog" | "envoy.tracers.datadog") => Some(Driver::Datadog),
        Some("lightstep") => {
            fail(
                r,
                "spec.driver",
                "the `lightstep` driver is gone from Envoy (and from Emissary since 3.4)".into(),
                "Lightstep accepts OpenTelemetry: use `driver: opentelemetry` with an OpenTelemetry collector",
            );
            None
        }
        Some(other) => {
            fail(
                r,
                "spec.driver",
                format!("`{other}` is not a tracing driver attache supports"),
                "`zipkin`, `opentelemetry` or `datadog`",
            );
            None
        }
        None => {
            fail(
                r,
                "spec.driver",
                "a TracingService needs `driver`".into(),
                "`zipkin`, `opentelemetry` or `datadog`",
            );
            None
        }
    };
    let service = match spec.service.as_deref().filter(|s| !s.trim().is_empty()) {
        Some(text) => r.service("spec.service", text),
        None => {
            fail(
                r,
                "spec.service",
                "a TracingService needs `service`: where its collector listens".into(),
                "e.g. `service: zipkin.monitoring:9411`",
            );
            None
        }
    };
    let mut sampling = [None, None, None];
    if let Some(s) = &spec.sampling {
        for (i, (name, v)) in [("client", s.client), ("random", s.random), ("overall", s.overall)]
            .into_iter()
            .enumerate()
        {
            match v {
                None => {}
                Some(p) if (0.0..=100.0).contains(&p) => {
                    sampling[i] = serde_json::Number::from_f64(p).map(Percent);
                }
                Some(p) => fail(
                    r,
                    &format!("spec.sampling.{name}"),
                    format!("{p} is not a percentage from 0 to 100"),
                    "e.g. `sampling: {overall: 10}` traces one request in ten",
                ),
            }
        }
    }
    let mut custom_tags = Vec::new();
    for (i, t) in spec.custom_tags.iter().enumerate() {
        let at = format!("spec.custom_tags[{i}]");
        let tag = match (&t.literal, &t.environment, &t.request_header) {
            (Some(l), None, None) => Some(("literal", l.value.clone(), None)),
            (None, Some(e), None) => Some(("environment", e.name.clone(), e.default_value.clone())),
            (None, None, Some(h)) => Some(("request_header", h.name.clone(), h.default_value.clone())),
            _ => None,
        };
        match tag {
            Some(_) if t.tag.is_empty() => {
                fail(r, &format!("{at}.tag"), "a tag needs a name".into(), "e.g. `tag: team`")
            }
            Some((kind, value, default_value)) => custom_tags.push(CustomTag {
                tag: t.tag.clone(),
                kind,
                value,
                default_value,
            }),
            None => fail(
                r,
                &at,
                "a custom tag has exactly one of `literal`, `environment` and `request_header`".into(),
                "e.g. `{tag: team, literal: {value: edge}}` or `{tag: user, request_header: {name: x-user}}`",
            ),
        }
    }
    // Emissary 3 reads `tag_headers` but no longer uses it; its CRD says it stands for request
    // header tags, which attache makes them.
    for h in &spec.tag_headers {
        custom_tags.push(CustomTag {
            tag: h.clone(),
            kind: "request_header",
            value: h.clone(),
            default_value: None,
        });
    }
    let config = spec.config.unwrap_or_default();
    let version = match config.collector_endpoint_version.as_deref() {
        None | Some("HTTP_JSON") => "HTTP_JSON",
        Some("HTTP_PROTO") => "HTTP_PROTO",
        Some(other) => {
            fail(
                r,
                "spec.config.collector_endpoint_version",
                format!("`{other}` is not a Zipkin collector API Envoy speaks"),
                "`HTTP_JSON` (the default) or `HTTP_PROTO` (Zipkin's v1 API is gone from Envoy)",
            );
            "HTTP_JSON"
        }
    };
    for (key, set, why) in [
        (
            "access_token_file",
            config.access_token_file.is_some(),
            "it was Lightstep's, whose driver is gone",
        ),
        (
            "collector_cluster",
            config.collector_cluster.is_some(),
            "the collector's cluster is made from `service`",
        ),
        (
            "propagation_modes",
            config.propagation_modes.is_some(),
            "it was Lightstep's, whose driver is gone",
        ),
    ] {
        if set {
            r.not_used(&format!("spec.config.{key}"), key, why);
        }
    }
    let (Some(driver), Some(service), true) = (driver, service, ok) else {
        return None;
    };
    let cluster = super::mapping::ClusterSettings {
        http2: driver == Driver::Opentelemetry,
        stats_name: spec.stats_name,
        ..super::mapping::ClusterSettings::default()
    };
    Some(TracingService {
        driver,
        service,
        sampling,
        custom_tags,
        collector_endpoint: config
            .collector_endpoint
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "/api/v2/spans".to_string()),
        collector_endpoint_version: version,
        collector_hostname: config.collector_hostname,
        trace_id_128bit: config.trace_id_128bit.unwrap_or(true),
        shared_span_context: config.shared_span_context,
        service_name: config
            .service_name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "ambassador".to_string()),
        cluster,
    })
}
