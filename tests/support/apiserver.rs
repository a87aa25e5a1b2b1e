//! A small Kubernetes API server emulation over real HTTP on loopback, for testing the real
//! kube-rs client path (no API server binary can run on these machines).
//!
//! It models the list/watch contract a controller relies on, not the whole API: namespaced
//! resources under `/api/v1` and `/apis/<group>/<version>`; list with `resourceVersion` and pages
//! (`limit`/`continue`), label
//! selectors (`k=v`, `k!=v`, `k`, comma-joined) and field selectors (`metadata.name`,
//! `metadata.namespace`); watch streams (`watch=true`) with ADDED/MODIFIED/DELETED events
//! replayed from the requested version, BOOKMARKs on request, an ERROR `410 Expired` for a
//! version older than the last compaction, and `timeoutSeconds`. Test controls: compaction,
//! dropping every open watch, an outage switch (500 for everything) and a request log.
//! Versions of one group are served with conversion strategy `None`: an object is returned with
//! the requested `apiVersion` and its fields as written, and `managedFields` records the version
//! it was written in, as a real API server does. It is not a conformance-tested API server.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::broadcast;

/// A resource type the emulation serves.
#[derive(Clone, Debug)]
struct ResourceType {
    group: String,
    versions: Vec<String>,
    kind: String,
    /// Objects without a namespace (IngressClass), listed only across namespaces.
    cluster_scoped: bool,
}

#[derive(Clone, Debug)]
struct Event {
    rv: u64,
    ty: &'static str,
    /// `group/plural` ("" group for the core API).
    resource: String,
    object: Value,
}

#[derive(Default)]
struct Inner {
    rv: u64,
    types: BTreeMap<String, ResourceType>,
    /// `group/plural` → (namespace, name) → object as stored.
    objects: BTreeMap<String, BTreeMap<(String, String), Value>>,
    events: Vec<Event>,
    compacted: u64,
    outage: bool,
    /// Requests whose path contains this are answered 403.
    forbidden: Option<String>,
    requests: Vec<String>,
}

/// The running emulation; stops with the test process.
#[derive(Clone)]
pub struct ApiServer {
    /// Where it listens (`http://ADDR`).
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    /// Wakes open watches.
    wake: broadcast::Sender<Wake>,
}

/// What open watches are told.
#[derive(Clone, Copy, Debug)]
enum Wake {
    /// New events in the history.
    Events,
    /// End the stream (dropped connection).
    Drop,
    /// Send a BOOKMARK at this resourceVersion.
    Bookmark(u64),
}

/// The getambassador.io kinds and plurals attache watches.
pub const AMBASSADOR: &[(&str, &str)] = &[
    ("AuthService", "authservices"),
    ("Host", "hosts"),
    ("KubernetesEndpointResolver", "kubernetesendpointresolvers"),
    ("KubernetesServiceResolver", "kubernetesserviceresolvers"),
    ("Listener", "listeners"),
    ("Mapping", "mappings"),
    ("Module", "modules"),
    ("RateLimitService", "ratelimitservices"),
    ("TracingService", "tracingservices"),
    ("LogService", "logservices"),
    ("TCPMapping", "tcpmappings"),
    ("TLSContext", "tlscontexts"),
];

impl ApiServer {
    /// Starts an emulation serving Services, Secrets and every Ambassador kind (v2, v3alpha1).
    pub fn start() -> ApiServer {
        Self::start_without(&[])
    }

    /// Like [`ApiServer::start`], without the given Ambassador plurals (CRDs not installed).
    pub fn start_without(missing: &[&str]) -> ApiServer {
        let mut inner = Inner {
            rv: 100,
            ..Inner::default()
        };
        let mut add = |group: &str, versions: &[&str], kind: &str, plural: &str| {
            inner.types.insert(
                format!("{group}/{plural}"),
                ResourceType {
                    group: group.to_string(),
                    versions: versions.iter().map(|v| v.to_string()).collect(),
                    kind: kind.to_string(),
                    cluster_scoped: kind == "IngressClass",
                },
            );
        };
        add("", &["v1"], "Service", "services");
        add("", &["v1"], "Secret", "secrets");
        add("discovery.k8s.io", &["v1"], "EndpointSlice", "endpointslices");
        add("networking.k8s.io", &["v1"], "Ingress", "ingresses");
        add("networking.k8s.io", &["v1"], "IngressClass", "ingressclasses");
        add("coordination.k8s.io", &["v1"], "Lease", "leases");
        for (kind, plural) in AMBASSADOR {
            if !missing.contains(plural) {
                add("getambassador.io", &["v2", "v3alpha1"], kind, plural);
            }
        }
        let inner = Arc::new(Mutex::new(inner));
        let (wake, _) = broadcast::channel(1024);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = ApiServer { addr, inner, wake };
        let app_state = server.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(handle).with_state(app_state);
                axum::serve(listener, app).await.unwrap();
            });
        });
        server
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig file pointing at the emulation (no authentication).
    pub fn write_kubeconfig(&self, path: &std::path::Path) {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: emu\n  cluster:\n    server: {}\ncontexts:\n- name: emu\n  context:\n    cluster: emu\n    user: emu\n    namespace: default\ncurrent-context: emu\nusers:\n- name: emu\n  user: {{}}\n",
            self.url()
        );
        std::fs::write(path, text).unwrap();
    }

    /// Creates or updates every object in a YAML text (`kubectl apply`). Returns the new
    /// resourceVersion.
    pub fn apply(&self, yaml: &str) -> u64 {
        let rv = self.apply_unseen(yaml);
        let _ = self.wake.send(Wake::Events);
        rv
    }

    /// Like [`ApiServer::apply`], but open watches are not told (until they reconnect): with
    /// [`ApiServer::compact`], a change only a re-list can see.
    pub fn apply_unseen(&self, yaml: &str) -> u64 {
        let (docs, errors) = attache::source::yaml::parse_stream(yaml);
        assert!(errors.is_empty(), "test YAML: {errors:?}");
        let mut inner = self.inner.lock().unwrap();
        for doc in docs {
            let object = doc.root.to_json();
            inner.put(object);
        }
        inner.rv
    }

    /// Deletes an object (`kubectl delete`); false when there was none.
    pub fn delete(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> bool {
        let mut inner = self.inner.lock().unwrap();
        let Some(resource) = inner.resource_of(api_version, kind) else {
            return false;
        };
        let Some(mut old) = inner
            .objects
            .get_mut(&resource)
            .and_then(|m| m.remove(&(namespace.to_string(), name.to_string())))
        else {
            return false;
        };
        inner.rv += 1;
        let rv = inner.rv;
        old["metadata"]["resourceVersion"] = json!(rv.to_string());
        inner.events.push(Event {
            rv,
            ty: "DELETED",
            resource,
            object: old,
        });
        drop(inner);
        let _ = self.wake.send(Wake::Events);
        true
    }

    /// Forgets history: a watch from an older resourceVersion now gets `410 Expired`.
    pub fn compact(&self) {
        let mut inner = self.inner.lock().unwrap();
        // As if other objects were written meanwhile: every version seen so far is too old.
        inner.rv += 1;
        inner.compacted = inner.rv;
        inner.events.clear();
    }

    /// Ends every open watch stream (a dropped connection or an API server restart).
    pub fn drop_watches(&self) {
        let _ = self.wake.send(Wake::Drop);
    }

    /// Sends a BOOKMARK on every open watch.
    pub fn bookmark(&self) {
        let rv = self.inner.lock().unwrap().rv;
        let _ = self.wake.send(Wake::Bookmark(rv));
    }

    /// While on, every request is answered 500 and open watches end.
    pub fn set_outage(&self, on: bool) {
        self.inner.lock().unwrap().outage = on;
        if on {
            self.drop_watches();
        }
    }

    /// Answers 403 Forbidden to requests whose path contains `path` (RBAC refusing a resource).
    pub fn forbid(&self, path: Option<&str>) {
        self.inner.lock().unwrap().forbidden = path.map(str::to_string);
    }

    /// Request lines seen so far (`GET /api/v1/secrets?...`).
    pub fn requests(&self) -> Vec<String> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// An object as stored (`namespace` empty for a cluster-scoped kind).
    pub fn object(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let inner = self.inner.lock().unwrap();
        let resource = inner.resource_of(api_version, kind)?;
        inner
            .objects
            .get(&resource)?
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.inner.lock().unwrap().rv
    }
}

impl Inner {
    fn resource_of(&self, api_version: &str, kind: &str) -> Option<String> {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        self.types
            .iter()
            .find(|(_, t)| t.group == group && t.kind == kind)
            .map(|(k, _)| k.clone())
    }

    fn put(&mut self, mut object: Value) {
        let api_version = object["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let resource = self
            .resource_of(&api_version, &kind)
            .unwrap_or_else(|| panic!("the emulation serves no {api_version} {kind}"));
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let namespace = if self.types[&resource].cluster_scoped {
            if let Some(m) = object["metadata"].as_object_mut() {
                m.remove("namespace");
            }
            String::new()
        } else {
            if object["metadata"]["namespace"].is_null() {
                object["metadata"]["namespace"] = json!("default");
            }
            object["metadata"]["namespace"].as_str().unwrap().to_string()
        };
        // The API server stores a Secret's stringData as base64 data.
        if kind == "Secret" {
            if let Some(Value::Object(plain)) = object.as_object_mut().and_then(|o| o.remove("stringData")) {
                use base64::Engine as _;
                for (k, v) in plain {
                    let encoded = base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or_default());
                    object["data"][k] = json!(encoded);
                }
            }
        }
        self.rv += 1;
        let rv = self.rv;
        let old = self
            .objects
            .get(&resource)
            .and_then(|m| m.get(&(namespace.clone(), name.clone())));
        let generation = old.and_then(|o| o["metadata"]["generation"].as_u64()).unwrap_or(0) + 1;
        // An update of the object leaves its status alone (the status subresource owns it).
        if let Some(status) = old
            .and_then(|o| o.get("status"))
            .filter(|_| object.get("status").is_none())
        {
            object["status"] = status.clone();
        }
        let metadata = &mut object["metadata"];
        metadata["resourceVersion"] = json!(rv.to_string());
        metadata["uid"] = json!(format!("uid-{namespace}-{name}"));
        metadata["generation"] = json!(generation);
        metadata["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        if object.get("spec").is_some() {
            object["metadata"]["managedFields"] = json!([{
                "manager": "kubectl",
                "operation": "Apply",
                "apiVersion": api_version,
                "time": format!("2026-01-01T00:{:02}:{:02}Z", (rv / 60) % 60, rv % 60),
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {}},
            }]);
        }
        let ty = if old.is_some() { "MODIFIED" } else { "ADDED" };
        self.objects
            .entry(resource.clone())
            .or_default()
            .insert((namespace, name), object.clone());
        self.events.push(Event {
            rv,
            ty,
            resource,
            object,
        });
    }
}

/// A parsed request path.
struct Target {
    resource: String,
    api_version: String,
    namespace: Option<String>,
}

fn parse_path(inner: &Inner, path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, plural) = match rest {
        [plural] => (None, *plural),
        ["namespaces", ns, plural] => (Some(ns.to_string()), *plural),
        _ => return None,
    };
    let resource = format!("{group}/{plural}");
    let t = inner.types.get(&resource)?;
    if !t.versions.iter().any(|v| v == version) {
        return None;
    }
    Some(Target {
        resource,
        api_version: if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        },
        namespace,
    })
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn error_response(code: u16, reason: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(code).unwrap(),
        [("content-type", "application/json")],
        status(code, reason, message).to_string(),
    )
        .into_response()
}

fn selected(object: &Value, target: &Target, q: &HashMap<String, String>) -> bool {
    let meta = &object["metadata"];
    if let Some(ns) = &target.namespace {
        if meta["namespace"].as_str() != Some(ns) {
            return false;
        }
    }
    if let Some(fields) = q.get("fieldSelector").filter(|s| !s.is_empty()) {
        for term in fields.split(',') {
            let (field, want) = term.split_once('=').unwrap_or((term, ""));
            let want = want.trim_start_matches('=');
            let have = match field {
                "metadata.name" => meta["name"].as_str(),
                "metadata.namespace" => meta["namespace"].as_str(),
                _ => None,
            };
            if have != Some(want) {
                return false;
            }
        }
    }
    if let Some(labels) = q.get("labelSelector").filter(|s| !s.is_empty()) {
        let have = &meta["labels"];
        for term in labels.split(',') {
            let ok = if let Some((k, v)) = term.split_once("!=") {
                have[k].as_str() != Some(v)
            } else if let Some((k, v)) = term.split_once('=') {
                have[k.trim_end_matches('=')].as_str() == Some(v)
            } else {
                !have[term].is_null()
            };
            if !ok {
                return false;
            }
        }
    }
    true
}

/// The object as served at the requested version (conversion strategy None).
fn served(object: &Value, target: &Target) -> Value {
    let mut o = object.clone();
    o["apiVersion"] = json!(target.api_version);
    o
}

/// One object's path: `(resource, namespace, name, subresource)`.
fn parse_item(inner: &Inner, path: &str) -> Option<(String, String, String, Option<String>)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match parts.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => (group.to_string(), rest),
        _ => return None,
    };
    let (group, rest) = rest;
    let (namespace, plural, name, sub) = match rest {
        ["namespaces", ns, plural, name] => (ns.to_string(), *plural, *name, None),
        ["namespaces", ns, plural, name, sub] => (ns.to_string(), *plural, *name, Some(sub.to_string())),
        [plural, name] if *plural != "namespaces" => (String::new(), *plural, *name, None),
        [plural, name, sub] if *plural != "namespaces" => (String::new(), *plural, *name, Some(sub.to_string())),
        _ => return None,
    };
    let resource = format!("{group}/{plural}");
    inner
        .types
        .contains_key(&resource)
        .then(|| (resource, namespace, name.to_string(), sub))
}

/// Merges a JSON merge patch (RFC 7386) into `target`.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            for (k, v) in p {
                if v.is_null() {
                    target.as_object_mut().unwrap().remove(k);
                } else {
                    merge(
                        target.as_object_mut().unwrap().entry(k.clone()).or_insert(Value::Null),
                        v,
                    );
                }
            }
        }
        other => *target = other.clone(),
    }
}

impl Inner {
    /// A changed object: a new resourceVersion and a MODIFIED event.
    fn modified(&mut self, resource: &str, key: (String, String), mut object: Value) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects
            .entry(resource.to_string())
            .or_default()
            .insert(key, object.clone());
        self.events.push(Event {
            rv: self.rv,
            ty: "MODIFIED",
            resource: resource.to_string(),
            object: object.clone(),
        });
        object
    }

    /// GET, POST, PUT and PATCH (merge, of the status subresource) of one object: what a
    /// status writer and a Lease holder use. `None` for lists and watches.
    fn write(&mut self, method: &axum::http::Method, path: &str, body: &[u8]) -> Option<Response> {
        use axum::http::Method;
        let json_response = |v: &Value| ([("content-type", "application/json")], v.to_string()).into_response();
        let bad = |message: &str| Some(error_response(400, "BadRequest", message));
        if *method == Method::POST {
            let target = parse_path(self, path)?;
            let Ok(mut object) = serde_json::from_slice::<Value>(body) else {
                return bad("the body is not JSON");
            };
            let declared = self.resource_of(
                object["apiVersion"].as_str().unwrap_or_default(),
                object["kind"].as_str().unwrap_or_default(),
            );
            if declared.as_deref() != Some(target.resource.as_str()) {
                return bad("the object's apiVersion and kind do not match the path");
            }
            let Some(name) = object["metadata"]["name"].as_str().map(str::to_string) else {
                return bad("metadata.name is required");
            };
            let namespace = target.namespace.clone().unwrap_or_default();
            if object["metadata"]["namespace"]
                .as_str()
                .is_some_and(|ns| ns != namespace)
            {
                return bad("the object's namespace does not match the path");
            }
            if self
                .objects
                .get(&target.resource)
                .is_some_and(|m| m.contains_key(&(namespace.clone(), name.clone())))
            {
                return Some(error_response(409, "AlreadyExists", &format!("{name} already exists")));
            }
            if !namespace.is_empty() {
                object["metadata"]["namespace"] = json!(namespace);
            }
            self.put(object);
            let stored = self.objects[&target.resource][&(namespace, name)].clone();
            return Some((StatusCode::CREATED, json_response(&served(&stored, &target))).into_response());
        }
        let (resource, namespace, name, sub) = parse_item(self, path)?;
        let key = (namespace, name.clone());
        let Some(current) = self.objects.get(&resource).and_then(|m| m.get(&key)).cloned() else {
            return Some(error_response(
                404,
                "NotFound",
                &format!("{resource} \"{name}\" not found"),
            ));
        };
        match (method.clone(), sub.as_deref()) {
            (Method::GET, None | Some("status")) => {
                // In the version the path asks for.
                let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
                let api_version = match parts.as_slice() {
                    ["api", version, ..] => (*version).to_string(),
                    ["apis", group, version, ..] => format!("{group}/{version}"),
                    _ => return bad("bad path"),
                };
                let mut o = current.clone();
                o["apiVersion"] = json!(api_version);
                Some(json_response(&o))
            }
            (Method::PUT, None) => {
                let Ok(mut object) = serde_json::from_slice::<Value>(body) else {
                    return bad("the body is not JSON");
                };
                if object["metadata"]["name"].as_str() != Some(name.as_str()) {
                    return bad("the object's name does not match the path");
                }
                // An empty resourceVersion is an unconditional update; another must be current.
                let sent = object["metadata"]["resourceVersion"].as_str().unwrap_or_default();
                if !sent.is_empty() && sent != current["metadata"]["resourceVersion"].as_str().unwrap_or_default() {
                    return Some(error_response(
                        409,
                        "Conflict",
                        "the object has been modified; please apply your changes to the latest version and try again",
                    ));
                }
                object["apiVersion"] = current["apiVersion"].clone();
                // What the server owns stays: identity, creation, generation, and the status
                // (the status subresource's).
                for k in ["uid", "creationTimestamp", "generation", "namespace"] {
                    if !current["metadata"][k].is_null() {
                        object["metadata"][k] = current["metadata"][k].clone();
                    }
                }
                if let Some(o) = object.as_object_mut() {
                    match current.get("status") {
                        Some(status) => {
                            o.insert("status".into(), status.clone());
                        }
                        None => {
                            o.remove("status");
                        }
                    }
                }
                let object = self.modified(&resource, key, object);
                Some(json_response(&object))
            }
            (Method::PATCH, Some("status")) => {
                let Ok(patch) = serde_json::from_slice::<Value>(body) else {
                    return bad("the body is not JSON");
                };
                let mut object = current.clone();
                match patch.get("status") {
                    Some(Value::Null) => {
                        if let Some(o) = object.as_object_mut() {
                            o.remove("status");
                        }
                    }
                    Some(status) => merge(&mut object["status"], status),
                    None => {}
                }
                // A patch that changes nothing is not a change (no new version, no event).
                if object == current {
                    return Some(json_response(&current));
                }
                let object = self.modified(&resource, key, object);
                Some(json_response(&object))
            }
            _ => Some(error_response(
                405,
                "MethodNotAllowed",
                &format!("{method} is not emulated here"),
            )),
        }
    }
}

async fn handle(
    State(server): State<ApiServer>,
    method: axum::http::Method,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    {
        let mut inner = server.inner.lock().unwrap();
        let is_item = parse_item(&inner, uri.path()).is_some();
        if method != axum::http::Method::GET || is_item {
            inner.requests.push(format!("{method} {uri}"));
            if inner.outage {
                return error_response(500, "InternalError", "the emulated API server is down");
            }
            if inner.forbidden.as_deref().is_some_and(|f| uri.path().contains(f)) {
                return error_response(
                    403,
                    "Forbidden",
                    &format!("forbidden: {method} {} is not allowed", uri.path()),
                );
            }
            if let Some(response) = inner.write(&method, uri.path(), &body) {
                drop(inner);
                let _ = server.wake.send(Wake::Events);
                return response;
            }
            return error_response(400, "BadRequest", &format!("cannot {method} {}", uri.path()));
        }
    }
    let (target, list, rv) = {
        let mut inner = server.inner.lock().unwrap();
        inner.requests.push(format!("GET {uri}"));
        if inner.outage {
            // 500, not 503: kube's client retries 503s itself for minutes before a watch sees them.
            return error_response(500, "InternalError", "the emulated API server is down");
        }
        if inner.forbidden.as_deref().is_some_and(|f| uri.path().contains(f)) {
            return error_response(403, "Forbidden", &format!("forbidden: {} is not allowed", uri.path()));
        }
        let Some(target) = parse_path(&inner, uri.path()) else {
            return error_response(
                404,
                "NotFound",
                &format!("the server could not find the requested resource ({})", uri.path()),
            );
        };
        let watching = q.get("watch").is_some_and(|w| w == "true" || w == "1");
        if !watching {
            let t = &inner.types[&target.resource];
            let items: Vec<Value> = inner
                .objects
                .get(&target.resource)
                .into_iter()
                .flat_map(|m| m.values())
                .filter(|o| selected(o, &target, &q))
                .map(|o| served(o, &target))
                .collect();
            // Pages: `limit` items, then a `continue` token (offset and the list's version; the
            // pages are cut from the current state, not from a snapshot as etcd would).
            let (offset, list_rv) = q
                .get("continue")
                .and_then(|c| c.split_once('-'))
                .and_then(|(o, v)| Some((o.parse::<usize>().ok()?, v.parse::<u64>().ok()?)))
                .unwrap_or((0, inner.rv));
            let limit = q
                .get("limit")
                .and_then(|l| l.parse::<usize>().ok())
                .filter(|l| *l > 0)
                .unwrap_or(usize::MAX);
            let end = offset.saturating_add(limit).min(items.len());
            let mut metadata = json!({"resourceVersion": list_rv.to_string()});
            if end < items.len() {
                metadata["continue"] = json!(format!("{end}-{list_rv}"));
            }
            let body = json!({
                "apiVersion": target.api_version,
                "kind": format!("{}List", t.kind),
                "metadata": metadata,
                "items": items.get(offset.min(end)..end).unwrap_or_default(),
            });
            return ([("content-type", "application/json")], body.to_string()).into_response();
        }
        let from: u64 = q.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
        if from < inner.compacted {
            (target, None, from)
        } else {
            let replay: Vec<Event> = inner
                .events
                .iter()
                .filter(|e| e.rv > from && e.resource == target.resource)
                .cloned()
                .collect();
            (target, Some(replay), from)
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(64);
    let line = |ty: &str, object: Value| Ok(Bytes::from(format!("{}\n", json!({"type": ty, "object": object}))));
    let Some(replay) = list else {
        // Too old: one ERROR event, as a real API server answers a watch from a compacted version.
        let _ = tx.try_send(line(
            "ERROR",
            status(410, "Expired", &format!("too old resource version: {rv}")),
        ));
        drop(tx);
        return (
            [("content-type", "application/json")],
            Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
        )
            .into_response();
    };
    let mut wake = server.wake.subscribe();
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(290), Duration::from_secs);
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let kind = server.inner.lock().unwrap().types[&target.resource].kind.clone();
    tokio::spawn(async move {
        let mut sent = rv;
        for e in &replay {
            sent = sent.max(e.rv);
            if selected(&e.object, &target, &q) && tx.send(line(e.ty, served(&e.object, &target))).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let woke = tokio::select! {
                w = wake.recv() => w,
                () = tokio::time::sleep_until(deadline) => return,
            };
            let new: Vec<Event> = match woke {
                Ok(Wake::Drop) | Err(broadcast::error::RecvError::Closed) => return,
                Ok(Wake::Bookmark(at)) => {
                    let o = json!({"kind": kind, "apiVersion": target.api_version,
                                   "metadata": {"resourceVersion": at.max(sent).to_string()}});
                    if bookmarks && tx.send(line("BOOKMARK", o)).await.is_err() {
                        return;
                    }
                    continue;
                }
                Ok(Wake::Events) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    let inner = server.inner.lock().unwrap();
                    if inner.outage {
                        return;
                    }
                    inner
                        .events
                        .iter()
                        .filter(|e| e.rv > sent && e.resource == target.resource)
                        .cloned()
                        .collect()
                }
            };
            for e in &new {
                sent = sent.max(e.rv);
                if selected(&e.object, &target, &q) && tx.send(line(e.ty, served(&e.object, &target))).await.is_err() {
                    return;
                }
            }
        }
    });
    (
        [("content-type", "application/json")],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response()
}
