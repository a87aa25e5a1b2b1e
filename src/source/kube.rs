//! Kubernetes: kube-rs watchers on the getambassador.io kinds, on Services (for the
//! `getambassador.io/config` annotation) and on exactly the Secrets those objects refer to.
//!
//! Like the directory source it yields the *complete* current object set after each burst of
//! changes, never a partial one:
//! - nothing is yielded until every watch has completed its first list (so `/ready` means a full
//!   view, and Envoy never sees a configuration missing half its routes);
//! - during a re-list (watch expired with `410 Gone`, API server restart, dropped connection) a
//!   watch keeps its last complete set and swaps in the new list only when it is complete, the
//!   way kube-runtime's reflector stores do; a re-list that finds nothing new yields nothing;
//! - a burst of events is coalesced into one set after a quiet period (bounded, so a constant
//!   trickle of events cannot starve translation);
//! - API errors are retried with kube-runtime's backoff, counted in [`Metrics`] and logged once
//!   per distinct error. A kind whose CRD is not installed (404) counts as listed and empty, and
//!   says so in a diagnostic; it is picked up when the CRD appears.
//!
//! Secrets are not cached wholesale: the source asks a [`Refs`] function which Secrets the
//! current objects name, and keeps one single-object watch (a field selector on the name) per
//! such Secret. A set is not yielded until those Secrets are listed too, so a Host's certificate
//! arrives with the Host. Services (for their ports) and EndpointSlices are watched whole but
//! yielded, and their changes acted on, only for the Services that [`Refs`] names (those that
//! endpoint resolution may read): pods churning behind unrelated Services cost no translation.
//!
//! Objects of the getambassador.io group are watched at their storage version `v3alpha1`. The
//! CRDs from `attache crds` convert between served versions with strategy `None` (the API server
//! rewrites only `apiVersion`), so an object written as `v2` is served with its v2 fields: the
//! source gives it back its written version, read from `metadata.managedFields` (the version of
//! the last writer of `spec`).
//!
//! This module knows the Kubernetes API and nothing of what the objects mean.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt as _;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::yaml::Node;
use super::{annotation, Loaded, RawObject};
use crate::diagnostic::{Diagnostic, Origin};

/// The API group of Ambassador's kinds.
pub const GROUP: &str = "getambassador.io";
/// The version objects are stored and watched at.
pub const STORAGE_VERSION: &str = "v3alpha1";

/// A getambassador.io kind attache watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    /// `kind`, as in manifests.
    pub kind: &'static str,
    /// The resource's plural, as in URLs.
    pub plural: &'static str,
}

/// Every getambassador.io kind attache understands (and therefore watches and ships CRDs for).
pub const KINDS: &[Kind] = &[
    Kind {
        kind: "AuthService",
        plural: "authservices",
    },
    Kind {
        kind: "Host",
        plural: "hosts",
    },
    Kind {
        kind: "KubernetesEndpointResolver",
        plural: "kubernetesendpointresolvers",
    },
    Kind {
        kind: "KubernetesServiceResolver",
        plural: "kubernetesserviceresolvers",
    },
    Kind {
        kind: "Listener",
        plural: "listeners",
    },
    Kind {
        kind: "LogService",
        plural: "logservices",
    },
    Kind {
        kind: "Mapping",
        plural: "mappings",
    },
    Kind {
        kind: "Module",
        plural: "modules",
    },
    Kind {
        kind: "RateLimitService",
        plural: "ratelimitservices",
    },
    Kind {
        kind: "TCPMapping",
        plural: "tcpmappings",
    },
    Kind {
        kind: "TracingService",
        plural: "tracingservices",
    },
    Kind {
        kind: "TLSContext",
        plural: "tlscontexts",
    },
];

/// Which Kubernetes objects to watch.
#[derive(Clone, Debug)]
pub struct Options {
    /// Watch one namespace only; `None` watches all.
    pub namespace: Option<String>,
    /// Only getambassador.io objects and the annotations of Services whose labels match
    /// (Kubernetes selector syntax). Services' ports and EndpointSlices are read whatever their
    /// labels: they belong to the cluster, not to the configuration.
    pub label_selector: Option<String>,
    /// Quiet period after an event before the set is yielded.
    pub debounce: Duration,
}

/// Given the current configuration objects, the Secrets and Services they need.
pub type Refs = Arc<dyn Fn(&[&RawObject]) -> super::References + Send + Sync>;

/// Counters and gauges of the watches, for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Watches running (kinds, Services, Secrets).
    pub watches: AtomicU64,
    /// Watches that completed their first list.
    pub watches_synced: AtomicU64,
    /// Watch events received (list items included).
    pub events: AtomicU64,
    /// Re-lists after the first list (expired watches, reconnects).
    pub relists: AtomicU64,
    /// Errors from the API (each retried with backoff).
    pub errors: AtomicU64,
    /// Complete object sets yielded.
    pub sets: AtomicU64,
}

/// One watch.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum WatchId {
    Kind(Kind),
    /// Services: their `getambassador.io/config` annotations (label-selected), and their ports
    /// unless a label selector made a separate watch for those.
    Services {
        ports: bool,
    },
    /// Every Service's ports, when the annotations watch is label-selected.
    ServicePorts,
    EndpointSlices,
    /// `networking.k8s.io/v1` Ingresses (label-selected, like the Ambassador kinds).
    Ingresses,
    /// IngressClasses (cluster-scoped: not watched in single-namespace mode, as in Emissary;
    /// label-selected like everything of attache's).
    IngressClasses,
    Secret {
        namespace: String,
        name: String,
    },
}

impl PartialOrd for Kind {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Kind {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.kind.cmp(other.kind)
    }
}

impl fmt::Display for WatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WatchId::Kind(k) => write!(f, "{}.{GROUP}", k.plural),
            WatchId::Services { .. } => write!(f, "services"),
            WatchId::ServicePorts => write!(f, "services (ports)"),
            WatchId::EndpointSlices => write!(f, "endpointslices.discovery.k8s.io"),
            WatchId::Ingresses => write!(f, "ingresses.networking.k8s.io"),
            WatchId::IngressClasses => write!(f, "ingressclasses.networking.k8s.io"),
            WatchId::Secret { namespace, name } => write!(f, "secret {namespace}/{name}"),
        }
    }
}

/// What one Kubernetes object stands for: zero or more raw objects (an annotated Service holds
/// several), problems found reading it, and objects used only when a Service is referenced
/// (a Service's ports, an EndpointSlice).
#[derive(Clone, Debug, Default, PartialEq)]
struct Converted {
    objects: Vec<RawObject>,
    diagnostics: Vec<Diagnostic>,
    /// The Service `(namespace, name)` that `scoped` belongs to.
    scope: Option<ObjectKey>,
    scoped: Vec<RawObject>,
    /// The object's last valid version, from its `status.lastValid` (see `lastgood`).
    previous: Vec<RawObject>,
}

/// The parts of a [`Converted`] that go into a set.
type Visible<'a> = (&'a [RawObject], &'a [Diagnostic], &'a [RawObject], &'a [RawObject]);

impl Converted {
    fn is_empty(&self) -> bool {
        self.objects.is_empty() && self.diagnostics.is_empty() && self.scoped.is_empty() && self.previous.is_empty()
    }

    /// What of it goes into a set, given the referenced Services.
    fn visible<'a>(&'a self, services: &BTreeSet<ObjectKey>) -> Visible<'a> {
        let scoped: &[RawObject] = match &self.scope {
            Some(key) if services.contains(key) => &self.scoped,
            _ => &[],
        };
        (&self.objects, &self.diagnostics, scoped, &self.previous)
    }
}

/// What of a whole list goes into a set.
fn visible_all<'a>(objects: &'a BTreeMap<ObjectKey, Converted>, services: &BTreeSet<ObjectKey>) -> Vec<Visible<'a>> {
    objects.values().map(|c| c.visible(services)).collect()
}

/// Whether replacing `old` by `new` changes what a set holds.
/// Whether two conversions of one object say the same, whatever their resourceVersions: an
/// update that changed only what attache does not read (a status written by `--write-status`,
/// other than `lastValid`) changes their origins and nothing else.
fn same_content(old: &Converted, new: &Converted) -> bool {
    let roots = |list: &[RawObject]| list.iter().map(|o| std::sync::Arc::clone(&o.root)).collect::<Vec<_>>();
    let said = |list: &[Diagnostic]| {
        list.iter()
            .map(|d| (d.code.clone(), d.path.clone(), d.message.clone()))
            .collect::<Vec<_>>()
    };
    old.scope == new.scope
        && roots(&old.objects) == roots(&new.objects)
        && roots(&old.scoped) == roots(&new.scoped)
        && roots(&old.previous) == roots(&new.previous)
        && said(&old.diagnostics) == said(&new.diagnostics)
}

fn visible_change(old: Option<&Converted>, new: Option<&Converted>, services: &BTreeSet<ObjectKey>) -> bool {
    let empty = Converted::default();
    old.unwrap_or(&empty).visible(services) != new.unwrap_or(&empty).visible(services)
}

/// `(namespace, name)`.
type ObjectKey = (String, String);

/// A watch event, already converted (on the watch's own task).
enum Msg {
    Init,
    InitApply(ObjectKey, Converted),
    InitDone,
    Apply(ObjectKey, Converted),
    Delete(ObjectKey),
    Error { message: String, status: Option<u16> },
}

/// The last complete list of one watch, plus the list in progress.
struct Store {
    objects: BTreeMap<ObjectKey, Converted>,
    relist: Option<BTreeMap<ObjectKey, Converted>>,
    synced: bool,
    /// The API answered 404: the kind is not installed.
    missing: bool,
    last_error: Option<String>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Store {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching and returns the receiver of complete object sets. Watches stop when the
/// receiver is dropped.
pub fn watch(client: kube::Client, options: Options, refs: Refs, metrics: Arc<Metrics>) -> mpsc::Receiver<Loaded> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(run(client, options, refs, metrics, tx));
    rx
}

/// A client from the environment: in-cluster service account, else `KUBECONFIG` / `~/.kube/config`.
///
/// # Errors
/// When neither gives a usable configuration.
pub async fn client() -> anyhow::Result<kube::Client> {
    // kube's TLS needs a process-wide crypto provider; ignore "already installed".
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = kube::Config::infer().await.map_err(|e| {
        anyhow::anyhow!(
            "no Kubernetes configuration: {e} (in a pod, the service account is used; elsewhere set KUBECONFIG)"
        )
    })?;
    tracing::info!(server = %config.cluster_url, "Kubernetes API");
    kube::Client::try_from(config).map_err(|e| anyhow::anyhow!("cannot create a Kubernetes client: {e}"))
}

struct Source {
    client: kube::Client,
    options: Options,
    metrics: Arc<Metrics>,
    events: mpsc::Sender<(WatchId, Msg)>,
    stores: BTreeMap<WatchId, Store>,
    /// Services whose ports and EndpointSlices are yielded.
    services: BTreeSet<ObjectKey>,
}

async fn run(client: kube::Client, options: Options, refs: Refs, metrics: Arc<Metrics>, tx: mpsc::Sender<Loaded>) {
    let (events, mut rx) = mpsc::channel(1024);
    let mut source = Source {
        client,
        options,
        metrics,
        events,
        stores: BTreeMap::new(),
        services: BTreeSet::new(),
    };
    for kind in KINDS {
        source.start(WatchId::Kind(*kind));
    }
    let selected = source.options.label_selector.is_some();
    source.start(WatchId::Services { ports: !selected });
    if selected {
        source.start(WatchId::ServicePorts);
    }
    source.start(WatchId::EndpointSlices);
    source.start(WatchId::Ingresses);
    if source.options.namespace.is_none() {
        source.start(WatchId::IngressClasses);
    }
    let debounce = source.options.debounce;
    // Under a constant stream of events, yield at least this often.
    let longest = debounce * 10;
    let mut dirty: Option<(Instant, Instant)> = None; // (first, last) change not yet yielded
    loop {
        let ready = dirty.is_some() && source.all_synced();
        let deadline = dirty.map_or_else(
            || Instant::now() + Duration::from_secs(3600),
            |(first, last)| (last + debounce).min(first + longest),
        );
        tokio::select! {
            msg = rx.recv() => {
                let Some((id, msg)) = msg else { return };
                if source.handle(id, msg) {
                    let now = Instant::now();
                    dirty = Some(dirty.map_or((now, now), |(first, _)| (first, now)));
                }
            }
            () = tokio::time::sleep_until(deadline), if ready => {
                // Which Secrets and Services do the objects need now? Watch those Secrets (and
                // only those); yield those Services' ports and endpoints.
                let wanted = {
                    let base: Vec<&RawObject> = source
                        .stores
                        .iter()
                        .filter(|(id, _)| !matches!(id, WatchId::Secret { .. }))
                        .flat_map(|(_, s)| s.objects.values().flat_map(|c| c.objects.iter()))
                        .collect();
                    refs(&base)
                };
                source.services = wanted.services;
                if source.reconcile_secrets(&wanted.secrets) && !source.all_synced() {
                    continue; // yield when the new Secrets are listed
                }
                dirty = None;
                let loaded = source.loaded();
                source.metrics.sets.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(objects = loaded.objects.len(), "Kubernetes objects changed");
                if tx.send(loaded).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A Kubernetes resource type by group (empty for the core API), version, kind and plural.
pub(crate) fn api_resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.to_string(),
        version: version.to_string(),
        api_version: if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        },
        kind: kind.to_string(),
        plural: plural.to_string(),
    }
}

impl Source {
    fn all_synced(&self) -> bool {
        self.stores.values().all(|s| s.synced)
    }

    fn api(&self, id: &WatchId) -> (Api<DynamicObject>, watcher::Config) {
        let resource = api_resource;
        let scoped = |ar: &ApiResource| match &self.options.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, ar),
            None => Api::all_with(self.client.clone(), ar),
        };
        let mut config = watcher::Config::default();
        if let Some(selector) = &self.options.label_selector {
            config = config.labels(selector);
        }
        let services = resource("", "v1", "Service", "services");
        match id {
            WatchId::Kind(k) => (scoped(&resource(GROUP, STORAGE_VERSION, k.kind, k.plural)), config),
            WatchId::Services { .. } => (scoped(&services), config),
            WatchId::ServicePorts => (scoped(&services), watcher::Config::default()),
            WatchId::EndpointSlices => (
                scoped(&resource("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices")),
                watcher::Config::default(),
            ),
            WatchId::Ingresses => (
                scoped(&resource("networking.k8s.io", "v1", "Ingress", "ingresses")),
                config,
            ),
            WatchId::IngressClasses => (
                Api::all_with(
                    self.client.clone(),
                    &resource("networking.k8s.io", "v1", "IngressClass", "ingressclasses"),
                ),
                config,
            ),
            WatchId::Secret { namespace, name } => (
                Api::namespaced_with(self.client.clone(), namespace, &resource("", "v1", "Secret", "secrets")),
                watcher::Config::default().fields(&format!("metadata.name={name}")),
            ),
        }
    }

    fn start(&mut self, id: WatchId) {
        let (api, config) = self.api(&id);
        let events = self.events.clone();
        let task_id = id.clone();
        let task = tokio::spawn(async move {
            let stream = watcher(api, config).default_backoff();
            futures::pin_mut!(stream);
            while let Some(item) = stream.next().await {
                let msg = match item {
                    Ok(watcher::Event::Init) => Msg::Init,
                    Ok(watcher::Event::InitApply(o)) => Msg::InitApply(key(&o), convert(&task_id, o)),
                    Ok(watcher::Event::InitDone) => Msg::InitDone,
                    Ok(watcher::Event::Apply(o)) => Msg::Apply(key(&o), convert(&task_id, o)),
                    Ok(watcher::Event::Delete(o)) => Msg::Delete(key(&o)),
                    Err(e) => Msg::Error {
                        status: status_of(&e),
                        message: e.to_string(),
                    },
                };
                if events.send((task_id.clone(), msg)).await.is_err() {
                    return;
                }
            }
        });
        self.metrics.watches.fetch_add(1, Ordering::Relaxed);
        self.stores.insert(
            id,
            Store {
                objects: BTreeMap::new(),
                relist: None,
                synced: false,
                missing: false,
                last_error: None,
                task,
            },
        );
    }

    fn stop(&mut self, id: &WatchId) {
        if let Some(store) = self.stores.remove(id) {
            self.metrics.watches.fetch_sub(1, Ordering::Relaxed);
            if store.synced {
                self.metrics.watches_synced.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Starts and stops Secret watches to match `wanted`; true when something changed.
    fn reconcile_secrets(&mut self, wanted: &BTreeSet<(String, String)>) -> bool {
        let wanted: BTreeSet<WatchId> = wanted
            .iter()
            .filter(|(ns, _)| self.options.namespace.as_ref().is_none_or(|only| only == ns))
            .map(|(namespace, name)| WatchId::Secret {
                namespace: namespace.clone(),
                name: name.clone(),
            })
            .collect();
        let current: Vec<WatchId> = self
            .stores
            .keys()
            .filter(|id| matches!(id, WatchId::Secret { .. }))
            .cloned()
            .collect();
        let mut changed = false;
        for id in current {
            if !wanted.contains(&id) {
                tracing::debug!(watch = %id, "Secret no longer referenced; not watched any more");
                self.stop(&id);
                changed = true;
            }
        }
        for id in wanted {
            if !self.stores.contains_key(&id) {
                tracing::debug!(watch = %id, "watching a referenced Secret");
                self.start(id);
                changed = true;
            }
        }
        changed
    }

    /// Applies one event; true when the complete view changed.
    fn handle(&mut self, id: WatchId, msg: Msg) -> bool {
        let metrics = Arc::clone(&self.metrics);
        let Some(store) = self.stores.get_mut(&id) else {
            return false; // a watch stopped meanwhile
        };
        let recovered = |store: &mut Store| {
            if store.last_error.take().is_some() {
                tracing::info!(watch = %id, "Kubernetes watch recovered");
            }
        };
        match msg {
            Msg::Init => {
                if store.synced {
                    metrics.relists.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(watch = %id, "re-listing; serving the last complete list meanwhile");
                }
                store.relist = Some(BTreeMap::new());
                false
            }
            Msg::InitApply(key, converted) => {
                metrics.events.fetch_add(1, Ordering::Relaxed);
                if !converted.is_empty() {
                    store.relist.get_or_insert_with(BTreeMap::new).insert(key, converted);
                }
                false
            }
            Msg::InitDone => {
                recovered(store);
                let mut listed = store.relist.take().unwrap_or_default();
                // Objects that say the same as before keep their old conversion (and origin):
                // a re-list after status writes is not a change.
                for (key, new) in &mut listed {
                    if let Some(old) = store.objects.get(key).filter(|old| same_content(old, new)) {
                        *new = old.clone();
                    }
                }
                let changed = !store.synced
                    || store.missing
                    || visible_all(&listed, &self.services) != visible_all(&store.objects, &self.services);
                store.objects = listed;
                if !store.synced {
                    metrics.watches_synced.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(watch = %id, objects = store.objects.len(), "listed");
                }
                store.synced = true;
                store.missing = false;
                changed
            }
            Msg::Apply(key, converted) => {
                metrics.events.fetch_add(1, Ordering::Relaxed);
                recovered(store);
                if converted.is_empty() {
                    let old = store.objects.remove(&key);
                    visible_change(old.as_ref(), None, &self.services)
                } else if store.objects.get(&key).is_some_and(|old| same_content(old, &converted)) {
                    // Nothing attache reads changed: keep the old conversion (and its origin),
                    // so that nothing downstream sees a difference.
                    false
                } else {
                    let old = store.objects.insert(key, converted.clone());
                    visible_change(old.as_ref(), Some(&converted), &self.services)
                }
            }
            Msg::Delete(key) => {
                metrics.events.fetch_add(1, Ordering::Relaxed);
                let old = store.objects.remove(&key);
                visible_change(old.as_ref(), None, &self.services)
            }
            Msg::Error { message, status } => {
                metrics.errors.fetch_add(1, Ordering::Relaxed);
                if store.last_error.as_deref() != Some(message.as_str()) {
                    match status {
                        Some(403) => tracing::error!(
                            watch = %id, error = %message,
                            "Kubernetes API refused access; retrying with backoff (check attache's RBAC: it needs get, list and watch here)"
                        ),
                        _ => {
                            tracing::warn!(watch = %id, error = %message, "Kubernetes API error; retrying with backoff")
                        }
                    }
                    store.last_error = Some(message);
                }
                // A kind that is not installed is empty, not a reason to never become ready. A
                // Secret that cannot be read (forbidden, say) is empty too: waiting for it would
                // hold back every other change; its Host reports the missing certificate.
                let unreadable_secret = matches!(id, WatchId::Secret { .. });
                // Ingresses that cannot be read (RBAC from before attache read them, an API
                // server without them) are reported, not waited for.
                let unreadable_ingresses =
                    matches!(id, WatchId::Ingresses | WatchId::IngressClasses) && matches!(status, Some(403 | 404));
                if !store.synced
                    && (unreadable_secret
                        || unreadable_ingresses
                        || (status == Some(404) && matches!(id, WatchId::Kind(_))))
                {
                    store.synced = true;
                    store.missing = true;
                    metrics.watches_synced.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                false
            }
        }
    }

    /// The complete current set, in a deterministic order (by watch, namespace, name).
    fn loaded(&self) -> Loaded {
        let mut loaded = Loaded::default();
        for (id, store) in &self.stores {
            if store.missing {
                if let WatchId::Kind(k) = id {
                    loaded.diagnostics.push(
                        Diagnostic::warning(
                            "source.crd_missing",
                            format!(
                                "the Kubernetes API has no {}.{GROUP}/{STORAGE_VERSION}: no {} is read",
                                k.plural, k.kind
                            ),
                        )
                        .at(Origin::new("kubernetes", 0, 0))
                        .hint("install attache's CRDs: `attache crds | kubectl apply -f -`"),
                    );
                }
                if matches!(id, WatchId::Ingresses | WatchId::IngressClasses) {
                    loaded.diagnostics.push(
                        Diagnostic::warning(
                            "source.ingress_unreadable",
                            format!(
                                "cannot read {id}: {}; Kubernetes Ingresses are not served",
                                store.last_error.as_deref().unwrap_or("unknown error")
                            ),
                        )
                        .at(Origin::new("kubernetes", 0, 0))
                        .hint("attache needs get, list and watch on ingresses and ingressclasses (deploy/rbac.yaml); it keeps retrying"),
                    );
                }
                if let WatchId::Secret { namespace, name } = id {
                    loaded.diagnostics.push(
                        Diagnostic::error(
                            "source.secret_unreadable",
                            format!(
                                "cannot read Secret {namespace}/{name}: {}",
                                store.last_error.as_deref().unwrap_or("unknown error")
                            ),
                        )
                        .at(Origin::new("kubernetes", 0, 0))
                        .hint("attache needs get, list and watch on Secrets in that namespace (deploy/rbac.yaml); it keeps retrying"),
                    );
                }
            }
            for converted in store.objects.values() {
                let (objects, diagnostics, scoped, previous) = converted.visible(&self.services);
                loaded.objects.extend(objects.iter().cloned());
                loaded.diagnostics.extend(diagnostics.iter().cloned());
                loaded.objects.extend(scoped.iter().cloned());
                loaded.previous.extend(previous.iter().cloned());
            }
        }
        loaded
    }
}

fn key(o: &DynamicObject) -> ObjectKey {
    (
        o.metadata.namespace.clone().unwrap_or_default(),
        o.metadata.name.clone().unwrap_or_default(),
    )
}

fn status_of(e: &watcher::Error) -> Option<u16> {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
        watcher::Error::WatchError(s) => Some(s.code),
        _ => None,
    }
}

/// Annotations that are never configuration (and can be large).
const DROPPED_ANNOTATIONS: &[&str] = &["kubectl.kubernetes.io/last-applied-configuration"];

/// A Kubernetes object as the document a user wrote: `apiVersion` (the written one), `kind`,
/// `metadata` with name, namespace, labels and annotations only, and the rest (`spec`, a Secret's
/// `type` and `data`) as served. Server-set fields would only be noise in diagnostics.
fn convert(id: &WatchId, o: DynamicObject) -> Converted {
    let (kind, api_version) = match id {
        WatchId::Kind(k) => (k.kind, written_version(&o)),
        WatchId::Services { .. } | WatchId::ServicePorts => ("Service", "v1".to_string()),
        WatchId::EndpointSlices => ("EndpointSlice", "discovery.k8s.io/v1".to_string()),
        WatchId::Ingresses => ("Ingress", "networking.k8s.io/v1".to_string()),
        WatchId::IngressClasses => ("IngressClass", "networking.k8s.io/v1".to_string()),
        WatchId::Secret { .. } => ("Secret", "v1".to_string()),
    };
    let (namespace, name) = key(&o);
    let resource_version = o.metadata.resource_version.clone().unwrap_or_default();
    let mut metadata = serde_json::Map::new();
    metadata.insert("name".into(), Value::String(name.clone()));
    metadata.insert("namespace".into(), Value::String(namespace.clone()));
    if let Some(labels) = o.metadata.labels.as_ref().filter(|l| !l.is_empty()) {
        metadata.insert("labels".into(), serde_json::to_value(labels).unwrap_or_default());
    }
    if let Some(annotations) = &o.metadata.annotations {
        let kept: BTreeMap<&String, &String> = annotations
            .iter()
            .filter(|(k, _)| !DROPPED_ANNOTATIONS.contains(&k.as_str()))
            .collect();
        if !kept.is_empty() {
            metadata.insert("annotations".into(), serde_json::to_value(kept).unwrap_or_default());
        }
    }
    let stored_previous = match id {
        WatchId::Kind(_) => o
            .data
            .get("status")
            .and_then(|s| s.get(crate::status::LAST_VALID))
            .cloned(),
        _ => None,
    };
    let mut object = serde_json::Map::new();
    object.insert("apiVersion".into(), Value::String(api_version));
    object.insert("kind".into(), Value::String(kind.to_string()));
    object.insert("metadata".into(), Value::Object(metadata));
    if let Value::Object(rest) = o.data {
        for (k, v) in rest {
            if !matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status") {
                object.insert(k, v);
            }
        }
    }
    let object = Value::Object(object);
    let root = Node::from_json(&object, 0, 0);
    let origin = Origin::new(format!("kubernetes resourceVersion {resource_version}"), 0, 0);
    match id {
        WatchId::Services { ports } => {
            let annotation_origin = format!("kubernetes Service {namespace}/{name} resourceVersion {resource_version}");
            let (objects, diagnostics) = annotation::objects(&annotation_origin, "", &root).unwrap_or_default();
            Converted {
                objects: objects
                    .into_iter()
                    .map(|root| RawObject::new(Origin::new(annotation_origin.clone(), 0, 0), root))
                    .collect(),
                diagnostics,
                scope: ports.then(|| (namespace.clone(), name.clone())),
                scoped: if *ports {
                    vec![RawObject::new(origin, root)]
                } else {
                    Vec::new()
                },
                previous: Vec::new(),
            }
        }
        WatchId::ServicePorts => Converted {
            scope: Some((namespace, name)),
            scoped: vec![RawObject::new(origin, root)],
            ..Converted::default()
        },
        WatchId::EndpointSlices => {
            let service = o
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(crate::resource::kubernetes::SERVICE_NAME_LABEL))
                .cloned()
                .unwrap_or_default();
            Converted {
                scope: Some((namespace, service)),
                scoped: vec![RawObject::new(origin, root)],
                ..Converted::default()
            }
        }
        _ => {
            // The version the status writer keeps while the object is invalid (no
            // resourceVersion in its origin: every replica reads the same bytes).
            let previous = stored_previous
                .and_then(|stored| crate::status::from_last_valid(&object, &stored))
                .map(|v| {
                    RawObject::new(
                        Origin::new(format!("kubernetes {kind} {namespace}/{name} status.lastValid"), 0, 0),
                        Node::from_json(&v, 0, 0),
                    )
                });
            Converted {
                objects: vec![RawObject::new(origin, root)],
                previous: previous.into_iter().collect(),
                ..Converted::default()
            }
        }
    }
}

/// The version an Ambassador object was written in: the served version, unless the last writer
/// of `spec` (by `managedFields`) used another version of the group.
fn written_version(o: &DynamicObject) -> String {
    let served = o
        .types
        .as_ref()
        .map_or_else(|| format!("{GROUP}/{STORAGE_VERSION}"), |t| t.api_version.clone());
    let Some(fields) = o.metadata.managed_fields.as_ref() else {
        return served;
    };
    fields
        .iter()
        .enumerate()
        .filter(|(_, f)| f.fields_v1.as_ref().is_some_and(|v| v.0.get("f:spec").is_some()))
        .filter_map(|(i, f)| Some((f.time.as_ref().map(|t| t.0), i, f.api_version.clone()?)))
        .filter(|(_, _, v)| v.starts_with(&format!("{GROUP}/")))
        .max_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)))
        .map_or(served, |(_, _, v)| v)
}
