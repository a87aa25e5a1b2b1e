//! Kubernetes `networking.k8s.io/v1` `Ingress` and `IngressClass`, as Emissary reads them: an
//! Ingress of attache's class becomes Mappings (one per rule path, one for the default backend)
//! and, for each certificate in its `tls`, Hosts. They are then read exactly like objects a user
//! wrote, so every Mapping and Host rule applies to them, and their positions point into the
//! Ingress. This module only rewrites documents: it decides nothing about routing.
//!
//! Which Ingresses: `spec.ingressClassName` naming an IngressClass whose controller is
//! `getambassador.io/ingress-controller`, or the annotation `kubernetes.io/ingress.class:
//! ambassador`; with neither, the IngressClass marked as the cluster's default (what the API
//! server would have filled in). The `getambassador.io/ambassador-id` annotation selects the
//! instance, as for Services.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use crate::diagnostic::{Diagnostic, ObjectRef, Origin};
use crate::source::yaml::{Node, NodeValue};
use crate::source::RawObject;

use super::{ParseOptions, DEFAULT_AMBASSADOR_ID, DEFAULT_NAMESPACE, GROUP};

/// The controller name of attache's (and Emissary's) IngressClasses.
pub const CONTROLLER: &str = "getambassador.io/ingress-controller";
/// The legacy class annotation, and the value that selects attache.
const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
const CLASS_VALUE: &str = "ambassador";
/// The annotation that marks an IngressClass as the cluster's default.
const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The annotation naming the instance an Ingress or IngressClass is for.
const ID_ANNOTATION: &str = "getambassador.io/ambassador-id";
/// The label tying an Ingress's Mappings to the Hosts of its `tls` entries (Emissary's name).
pub const INGRESS_LABEL: &str = "a10r-k8s-ingress";

const API_VERSION: &str = "networking.k8s.io/v1";

fn is(o: &RawObject, kind: &str) -> bool {
    o.root.get("kind").and_then(Node::as_str) == Some(kind)
        && o.root
            .get("apiVersion")
            .and_then(Node::as_str)
            .is_some_and(|v| v.starts_with("networking.k8s.io/") || v.starts_with("extensions/"))
}

/// Whether an object is an Ingress or an IngressClass.
pub(crate) fn is_ingress_or_class(o: &RawObject) -> bool {
    is(o, "Ingress") || is(o, "IngressClass")
}

/// Whether the objects hold an Ingress or an IngressClass (else [`expand`] has nothing to do).
pub(crate) fn present(objects: &[RawObject]) -> bool {
    objects.iter().any(is_ingress_or_class)
}

use super::str_text as text;

fn items(node: Option<&Node>) -> &[Node] {
    match node.map(|n| &n.value) {
        Some(NodeValue::Seq(items)) => items,
        _ => &[],
    }
}

fn annotation<'n>(root: &'n Node, key: &str) -> Option<&'n str> {
    text(root, &["metadata", "annotations", key])
}

fn at(file: &str, node: &Node) -> Origin {
    Origin::new(file, node.line, node.column)
}

/// The instance an Ingress or IngressClass is for (`default` unless annotated).
fn ambassador_id(root: &Node) -> &str {
    annotation(root, ID_ANNOTATION).map_or(DEFAULT_AMBASSADOR_ID, str::trim)
}

/// Ports of the v1 Services among the objects, by (namespace, name): what a named backend port
/// resolves through.
fn service_ports(objects: &[RawObject]) -> BTreeMap<(String, String), Vec<(String, u16)>> {
    let mut out = BTreeMap::new();
    for o in objects {
        if o.root.get("kind").and_then(Node::as_str) != Some("Service")
            || o.root.get("apiVersion").and_then(Node::as_str) != Some("v1")
        {
            continue;
        }
        let namespace = text(&o.root, &["metadata", "namespace"]).unwrap_or(DEFAULT_NAMESPACE);
        let Some(name) = text(&o.root, &["metadata", "name"]) else {
            continue;
        };
        let ports = items(o.root.get("spec").and_then(|s| s.get("ports")))
            .iter()
            .filter_map(|p| {
                let NodeValue::Int(port) = p.get("port")?.value else {
                    return None;
                };
                Some((
                    p.get("name").and_then(Node::as_str).unwrap_or("").to_string(),
                    u16::try_from(port).ok()?,
                ))
            })
            .collect();
        out.insert((namespace.to_string(), name.to_string()), ports);
    }
    out
}

/// The Services a set of objects' Ingresses name by port name: a source that reads only the
/// Services it is asked for (Kubernetes) must read these to resolve the names.
pub(crate) fn named_port_services(objects: &[&RawObject]) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for o in objects.iter().filter(|o| is(o, "Ingress")) {
        let namespace = text(&o.root, &["metadata", "namespace"]).unwrap_or(DEFAULT_NAMESPACE);
        let spec = o.root.get("spec");
        let default = spec.and_then(|s| s.get("defaultBackend"));
        let paths = items(spec.and_then(|s| s.get("rules")))
            .iter()
            .flat_map(|r| items(r.get("http").and_then(|h| h.get("paths"))))
            .filter_map(|p| p.get("backend"));
        for backend in default.into_iter().chain(paths) {
            if let (Some(name), Some(_)) = (
                text(backend, &["service", "name"]),
                text(backend, &["service", "port", "name"]),
            ) {
                out.insert((namespace.to_string(), name.to_string()));
            }
        }
    }
    out
}

/// What one Ingress turns into, and what was wrong with it.
struct Expansion<'a> {
    file: &'a str,
    namespace: &'a str,
    ingress: ObjectRef,
    labels: Map<String, Value>,
    id: &'a str,
    ports: &'a BTreeMap<(String, String), Vec<(String, u16)>>,
    objects: Vec<RawObject>,
    diagnostics: Vec<Diagnostic>,
}

impl Expansion<'_> {
    fn push(&mut self, kind: &str, name: String, labels: &Map<String, Value>, spec: Value, node: &Node) {
        let mut metadata = json!({"name": name, "namespace": self.namespace});
        if !labels.is_empty() {
            metadata["labels"] = Value::Object(labels.clone());
        }
        let document = json!({
            "apiVersion": format!("{GROUP}/v3alpha1"),
            "kind": kind,
            "metadata": metadata,
            "spec": spec,
        });
        let origin = at(self.file, node);
        self.objects.push(RawObject::new(
            origin.clone(),
            Node::from_json(&document, origin.line, origin.column),
        ));
    }

    fn problem(&mut self, d: Diagnostic, node: &Node, path: String) {
        self.diagnostics
            .push(d.at(at(self.file, node)).on(self.ingress.clone()).path(path));
    }

    /// `service` for a backend (`name.namespace:port`), or `None` with the reason reported.
    fn service(&mut self, backend: &Node, path: &str) -> Option<String> {
        if let Some(resource) = backend.get("resource") {
            let d = Diagnostic::warning(
                "ingress.resource_backend",
                "a `resource` backend is not supported (neither by Emissary); this path is left out",
            )
            .hint("route to a Service: `backend: {service: {name: NAME, port: {number: PORT}}}`");
            self.problem(d, resource, format!("{path}.resource"));
            return None;
        }
        let Some(name) = text(backend, &["service", "name"]) else {
            let d = Diagnostic::error(
                "ingress.no_service",
                "the backend names no Service; this path is left out",
            )
            .hint("write `backend: {service: {name: NAME, port: {number: PORT}}}`");
            self.problem(d, backend, format!("{path}.service.name"));
            return None;
        };
        let port = backend.get("service").and_then(|s| s.get("port"));
        if let Some(NodeValue::Int(number)) = port.and_then(|p| p.get("number")).map(|n| &n.value) {
            if let Ok(number) = u16::try_from(*number) {
                if number > 0 {
                    return Some(format!("{name}.{}:{number}", self.namespace));
                }
            }
        } else if let Some((name_node, port_name)) =
            port.and_then(|p| p.get("name")).and_then(|n| Some((n, n.as_str()?)))
        {
            let key = (self.namespace.to_string(), name.to_string());
            match self.ports.get(&key) {
                Some(ports) => match ports.iter().find(|(n, _)| n == port_name) {
                    Some((_, number)) => return Some(format!("{name}.{}:{number}", self.namespace)),
                    None => {
                        let known: Vec<&str> = ports
                            .iter()
                            .map(|(n, _)| n.as_str())
                            .filter(|n| !n.is_empty())
                            .collect();
                        let d = Diagnostic::error(
                            "ingress.unknown_port",
                            format!(
                                "Service {}/{name} has no port named `{port_name}`; this path is left out",
                                self.namespace
                            ),
                        )
                        .hint(if known.is_empty() {
                            "name the port by number: `port: {number: PORT}`".to_string()
                        } else {
                            format!("its ports are named {}", known.join(", "))
                        });
                        self.problem(d, name_node, format!("{path}.service.port.name"));
                        return None;
                    }
                },
                None => {
                    let d = Diagnostic::error(
                        "ingress.unknown_service",
                        format!(
                            "port `{port_name}` is named, but there is no Service {}/{name} to look it up in; this path is left out",
                            self.namespace
                        ),
                    )
                    .hint("create the Service, or name the port by number: `port: {number: PORT}`");
                    self.problem(d, name_node, format!("{path}.service.port.name"));
                    return None;
                }
            }
        }
        let d = Diagnostic::error(
            "ingress.no_port",
            "the backend's Service port is neither a number (1-65535) nor a name; this path is left out",
        )
        .hint("write `port: {number: 80}` or `port: {name: http}`");
        self.problem(d, port.unwrap_or(backend), format!("{path}.service.port"));
        None
    }
}

/// attache's IngressClasses among `objects`: their names, and the one marked as the default.
fn classes(objects: &[RawObject], options: &ParseOptions) -> (BTreeSet<String>, Option<String>) {
    let mut classes = BTreeSet::new();
    let mut default_class = None;
    for o in objects.iter().filter(|o| is(o, "IngressClass")) {
        let controller = text(&o.root, &["spec", "controller"]).unwrap_or_default();
        let Some(name) = text(&o.root, &["metadata", "name"]) else {
            continue;
        };
        if !controller.eq_ignore_ascii_case(CONTROLLER) || ambassador_id(&o.root) != options.ambassador_id {
            continue;
        }
        classes.insert(name.to_string());
        if annotation(&o.root, DEFAULT_CLASS_ANNOTATION) == Some("true") {
            default_class = Some(name.to_string());
        }
    }
    (classes, default_class)
}

/// Whether an Ingress is of attache's class (not checking its ambassador_id).
fn of_class(root: &Node, classes: &BTreeSet<String>, default_class: Option<&String>) -> bool {
    let class_name = text(root, &["spec", "ingressClassName"]);
    let annotated = annotation(root, CLASS_ANNOTATION).map(str::trim);
    match (class_name, annotated) {
        (Some(c), _) if classes.contains(c) => true,
        (_, Some(a)) if a.eq_ignore_ascii_case(CLASS_VALUE) => true,
        (None, None) => default_class.is_some(),
        _ => false,
    }
}

/// The Ingresses among `objects` that attache serves (its class and ambassador_id, API
/// version v1), whose `status.loadBalancer` it may write.
pub fn served(objects: &[RawObject], options: &ParseOptions) -> Vec<ObjectRef> {
    let (classes, default_class) = classes(objects, options);
    objects
        .iter()
        .filter(|o| is(o, "Ingress") && text(&o.root, &["apiVersion"]) == Some(API_VERSION))
        .filter(|o| {
            of_class(&o.root, &classes, default_class.as_ref()) && ambassador_id(&o.root) == options.ambassador_id
        })
        .filter_map(|o| {
            Some(ObjectRef {
                kind: "Ingress".into(),
                namespace: text(&o.root, &["metadata", "namespace"])
                    .unwrap_or(DEFAULT_NAMESPACE)
                    .into(),
                name: text(&o.root, &["metadata", "name"])?.into(),
            })
        })
        .collect()
}

/// The Ingresses of attache's class among `objects`, as Mappings and Hosts, in place of the
/// Ingress and IngressClass documents (every other object is kept as it is). `None` when there
/// is no Ingress or IngressClass.
pub(crate) fn expand(objects: &[RawObject], options: &ParseOptions) -> Option<(Vec<RawObject>, Vec<Diagnostic>)> {
    if !present(objects) {
        return None;
    }
    let mut diagnostics = Vec::new();
    let (classes, default_class) = classes(objects, options);
    let ports = service_ports(objects);
    let mut out = Vec::with_capacity(objects.len());
    for o in objects {
        if is(o, "IngressClass") {
            continue;
        }
        if !is(o, "Ingress") {
            out.push(o.clone());
            continue;
        }
        let root = &*o.root;
        let namespace = text(root, &["metadata", "namespace"]).unwrap_or(DEFAULT_NAMESPACE);
        let Some(name) = text(root, &["metadata", "name"]) else {
            diagnostics.push(
                Diagnostic::error("resource.missing_name", "this Ingress has no metadata.name; ignored")
                    .at(o.origin.clone()),
            );
            continue;
        };
        let ingress = ObjectRef {
            kind: "Ingress".into(),
            namespace: namespace.into(),
            name: name.into(),
        };
        let api_version = text(root, &["apiVersion"]).unwrap_or_default();
        if api_version != API_VERSION {
            diagnostics.push(
                Diagnostic::error(
                    "ingress.unsupported_version",
                    format!("Ingress {api_version} is not read; only {API_VERSION}"),
                )
                .at(o.origin.clone())
                .on(ingress)
                .hint("Kubernetes serves every Ingress as networking.k8s.io/v1 since 1.19; write it in that version"),
            );
            continue;
        }
        // Is it attache's?
        let class_name = text(root, &["spec", "ingressClassName"]);
        let annotated = annotation(root, CLASS_ANNOTATION).map(str::trim);
        if !of_class(root, &classes, default_class.as_ref()) {
            let why = match (class_name, annotated) {
                (Some(c), _) => format!("its class `{c}` is not an IngressClass with controller {CONTROLLER}"),
                (None, Some(a)) => format!("its `{CLASS_ANNOTATION}` annotation is `{a}`, not `{CLASS_VALUE}`"),
                (None, None) => "it names no class, and no IngressClass of attache's is the default".to_string(),
            };
            diagnostics.push(
                Diagnostic::notice("ingress.other_class", format!("this Ingress is not for attache: {why}; ignored"))
                    .at(o.origin.clone())
                    .on(ingress)
                    .hint(format!("to serve it, set `spec.ingressClassName` to an IngressClass with `controller: {CONTROLLER}`, or annotate it `{CLASS_ANNOTATION}: {CLASS_VALUE}`")),
            );
            continue;
        }
        let id = ambassador_id(root);
        if id != options.ambassador_id {
            diagnostics.push(
                Diagnostic::notice(
                    "resource.other_ambassador_id",
                    format!(
                        "this Ingress is for ambassador_id `{id}` ({ID_ANNOTATION}), and this instance's is `{}`; ignored",
                        options.ambassador_id
                    ),
                )
                .at(o.origin.clone())
                .on(ingress),
            );
            continue;
        }
        let mut labels = match root.get("metadata").and_then(|m| m.get("labels")) {
            Some(l) => match l.to_json() {
                Value::Object(m) => m,
                _ => Map::new(),
            },
            None => Map::new(),
        };
        let spec = root.get("spec");
        let tls = items(spec.and_then(|s| s.get("tls")));
        // Mappings of an Ingress with TLS attach to its own Hosts (by this label) when their
        // rule names no host, as in Emissary.
        let ingress_id = (!tls.is_empty()).then(|| format!("a10r-ingress-{name}-{namespace}"));
        if let Some(id) = &ingress_id {
            labels.insert(INGRESS_LABEL.into(), Value::String(id.clone()));
        }
        let mut x = Expansion {
            file: &o.origin.file,
            namespace,
            ingress,
            labels,
            id,
            ports: &ports,
            objects: Vec::new(),
            diagnostics: Vec::new(),
        };
        let labels = x.labels.clone();
        if let Some(backend) = spec.and_then(|s| s.get("defaultBackend")) {
            if let Some(service) = x.service(backend, "spec.defaultBackend") {
                // Below every rule, which the Ingress API says come first (a rule for `/` would
                // otherwise share its traffic with it as a canary).
                let spec = json!({"ambassador_id": [x.id], "hostname": "*", "prefix": "/", "service": service, "precedence": -1});
                x.push("Mapping", format!("{name}-default-backend"), &labels, spec, backend);
            }
        }
        for (r, rule) in items(spec.and_then(|s| s.get("rules"))).iter().enumerate() {
            let host = rule.get("host").and_then(Node::as_str).filter(|h| !h.is_empty());
            for (p, path_node) in items(rule.get("http").and_then(|h| h.get("paths"))).iter().enumerate() {
                let field = format!("spec.rules[{r}].http.paths[{p}]");
                let Some(backend) = path_node.get("backend") else {
                    let d = Diagnostic::error("ingress.no_backend", "this path has no backend; it is left out")
                        .hint("write `backend: {service: {name: NAME, port: {number: PORT}}}`");
                    x.problem(d, path_node, field);
                    continue;
                };
                let Some(service) = x.service(backend, &format!("{field}.backend")) else {
                    continue;
                };
                let path = path_node
                    .get("path")
                    .and_then(Node::as_str)
                    .filter(|p| !p.is_empty())
                    .unwrap_or("/");
                let exact = path_node.get("pathType").and_then(Node::as_str) == Some("Exact");
                let mut spec = json!({
                    "ambassador_id": [x.id],
                    "prefix": path,
                    "service": service,
                    "precedence": i32::from(exact),
                });
                if exact {
                    spec["prefix_exact"] = json!(true);
                }
                match host {
                    // One DNS label in place of `*`, as the Ingress API says (and Emissary does).
                    Some(h) if h.starts_with("*.") => {
                        spec["host"] = json!(format!(
                            "^[a-z0-9]([-a-z0-9]*[a-z0-9])?\\.{}$",
                            regex_syntax::escape(&h[2..])
                        ));
                        spec["host_regex"] = json!(true);
                    }
                    Some(h) => spec["hostname"] = json!(h),
                    None if ingress_id.is_none() => spec["hostname"] = json!("*"),
                    None => {}
                }
                x.push("Mapping", format!("{name}-{r}-{p}"), &labels, spec, path_node);
            }
        }
        for (t, entry) in tls.iter().enumerate() {
            let Some(secret) = entry.get("secretName").and_then(Node::as_str) else {
                continue;
            };
            let hosts: Vec<&str> = match entry.get("hosts") {
                None => vec!["*"],
                Some(h) => items(Some(h)).iter().filter_map(Node::as_str).collect(),
            };
            for (h, hostname) in hosts.into_iter().enumerate() {
                let spec = json!({
                    "ambassador_id": [x.id],
                    "hostname": hostname,
                    "tlsSecret": {"name": secret},
                    "selector": {"matchLabels": {INGRESS_LABEL: ingress_id.clone().unwrap_or_default()}},
                    "requestPolicy": {"insecure": {"action": "Route"}},
                });
                x.push("Host", format!("{name}-{t}-{h}"), &labels, spec, entry);
            }
        }
        out.extend(x.objects);
        diagnostics.extend(x.diagnostics);
    }
    Some((out, diagnostics))
}
