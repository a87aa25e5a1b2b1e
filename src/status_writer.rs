//! `serve --kubernetes --write-status`: writes what `status::desired` computes into the objects'
//! `status` subresources, and copies attache's own Service's `status.loadBalancer` into the
//! Ingresses it serves (so that external-dns can publish their names).
//!
//! One writer among the replicas: the holder of a `coordination.k8s.io` Lease (renewed every
//! third of its duration; another replica takes it over once it has seen it unrenewed for a whole
//! duration, by its own clock, as client-go's leader election does). Writes are idempotent (only
//! what differs from what the object has: the leader lists the objects' statuses when it takes
//! over), batched (the latest wanted set, after a quiet period) and rate-limited. Only `status`
//! subresources are written, and only the keys attache owns; the Kubernetes source reads back
//! only `lastValid` (the version served while the object is invalid, shared by the replicas), so
//! no other status write causes a translation. Knows nothing of what the statuses mean.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::diagnostic::ObjectRef;
use crate::source::kube::api_resource as resource;
use crate::state::Shared;

/// How the writer runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// The Lease's namespace (attache's own).
    pub namespace: String,
    /// The Lease's name.
    pub lease: String,
    /// This replica, as the Lease names its holder.
    pub identity: String,
    /// How long a Lease holds without renewal.
    pub lease_duration: Duration,
    /// attache's Service (`namespace`, `name`), whose load balancer the Ingresses get.
    pub service: (String, String),
    /// At most this many writes per second.
    pub writes_per_second: u32,
    /// The one namespace watched (single-namespace mode), where statuses are listed.
    pub watched_namespace: Option<String>,
}

/// What the objects' statuses should be, from one translation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Wanted {
    /// By object: its plural and its `status`.
    pub statuses: BTreeMap<ObjectRef, (&'static str, Value)>,
    /// The Ingresses attache serves.
    pub ingresses: Vec<ObjectRef>,
}

/// Quiet period before a new wanted set is written (changes come in bursts).
const QUIET: Duration = Duration::from_millis(500);

fn ambassador(kind: &str, plural: &str) -> ApiResource {
    resource(crate::source::GROUP, "v3alpha1", kind, plural)
}

fn ingresses() -> ApiResource {
    resource("networking.k8s.io", "v1", "Ingress", "ingresses")
}

fn now_text() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// `wanted` with each condition's `lastTransitionTime`: kept from `current` while the condition
/// stays the same, now when it changes.
fn with_times(wanted: &Value, current: Option<&Value>) -> Value {
    let mut out = wanted.clone();
    let Some(conditions) = out.get_mut("conditions").and_then(Value::as_array_mut) else {
        return out;
    };
    let old = current.and_then(|c| c.get("conditions")).and_then(Value::as_array);
    for c in conditions {
        let same = old.and_then(|old| {
            old.iter().find(|o| {
                ["type", "status", "reason", "message"]
                    .iter()
                    .all(|k| o.get(*k) == c.get(*k))
            })
        });
        c["lastTransitionTime"] = same
            .and_then(|o| o.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| json!(now_text()));
    }
    out
}

/// The merge patch that turns `current` into `wanted` for the keys attache owns
/// (`status::OWNED_KEYS`: those `current` has and `wanted` has not are removed; any other key is
/// left alone), or `None` when there is nothing to change.
fn patch(current: Option<&Value>, wanted: &Value) -> Option<Value> {
    let empty = serde_json::Map::new();
    let current = current.and_then(Value::as_object).unwrap_or(&empty);
    let wanted = wanted.as_object().unwrap_or(&empty);
    let mut patch = serde_json::Map::new();
    for (k, v) in wanted {
        if current.get(k) != Some(v) {
            patch.insert(k.clone(), v.clone());
        }
    }
    for k in crate::status::OWNED_KEYS {
        if current.contains_key(*k) && !wanted.contains_key(*k) {
            patch.insert((*k).to_string(), Value::Null);
        }
    }
    (!patch.is_empty()).then_some(Value::Object(patch))
}

/// The Lease: held by this replica, or observed held by another.
struct Election {
    api: Api<Lease>,
    options: Options,
    /// The other holder's last record (holder, renew time) and when this replica saw it change.
    observed: Option<(String, Instant)>,
}

impl Election {
    /// Takes or renews the Lease; whether this replica holds it now.
    async fn hold(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let seconds = i32::try_from(self.options.lease_duration.as_secs().max(1)).unwrap_or(15);
        let Some(mut lease) = self.api.get_opt(&self.options.lease).await? else {
            let lease = Lease {
                metadata: kube::api::ObjectMeta {
                    name: Some(self.options.lease.clone()),
                    namespace: Some(self.options.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.options.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == self.options.identity;
        if !mine && !holder.is_empty() {
            // Another holder: free once its record has stayed the same for a whole duration.
            let record = format!("{holder} {:?}", spec.renew_time);
            let duration = Duration::from_secs(spec.lease_duration_seconds.map_or(15, |s| s.max(1) as u64));
            match &self.observed {
                Some((seen, at)) if *seen == record => {
                    if at.elapsed() < duration {
                        return Ok(false);
                    }
                }
                _ => {
                    self.observed = Some((record, Instant::now()));
                    return Ok(false);
                }
            }
        }
        if !mine {
            spec.holder_identity = Some(self.options.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(seconds);
        match self
            .api
            .replace(&self.options.lease, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up (on a clean stop), so another replica takes over at once.
    async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.options.lease).await {
            if let Some(spec) = lease.spec.as_mut() {
                if spec.holder_identity.as_deref() == Some(self.options.identity.as_str()) {
                    spec.holder_identity = None;
                    let _ = self
                        .api
                        .replace(&self.options.lease, &PostParams::default(), &lease)
                        .await;
                }
            }
        }
    }
}

/// The writer's view of the objects' statuses, filled by listing when it takes the Lease and
/// kept by its own writes.
struct Writer {
    client: kube::Client,
    options: Options,
    shared: Arc<Shared>,
    /// What each object's `status` is (as far as this writer knows).
    known: BTreeMap<ObjectRef, Value>,
}

impl Writer {
    /// Lists every status attache writes (when it takes the Lease).
    async fn learn(&mut self) -> Result<(), kube::Error> {
        self.known.clear();
        let mut kinds: Vec<(String, ApiResource)> = crate::source::kube::KINDS
            .iter()
            .map(|k| (k.kind.to_string(), ambassador(k.kind, k.plural)))
            .collect();
        kinds.push(("Ingress".into(), ingresses()));
        for (kind, ar) in kinds {
            let api: Api<DynamicObject> = match &self.options.watched_namespace {
                Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
                None => Api::all_with(self.client.clone(), &ar),
            };
            let list = match api.list(&ListParams::default()).await {
                Ok(list) => list,
                // A kind not installed, or not readable: nothing of it to write.
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 403 => {
                    tracing::debug!(kind, error = %e.message, "cannot list statuses of this kind; skipped");
                    continue;
                }
                Err(e) => return Err(e),
            };
            for o in list.items {
                if let Some(status) = o.data.get("status").filter(|s| !s.is_null()) {
                    let object = ObjectRef {
                        kind: kind.clone(),
                        namespace: o.metadata.namespace.clone().unwrap_or_default(),
                        name: o.metadata.name.clone().unwrap_or_default(),
                    };
                    self.known.insert(object, status.clone());
                }
            }
        }
        Ok(())
    }

    /// attache's Service's load balancer, as an Ingress's `status.loadBalancer`.
    async fn load_balancer(&self) -> Option<Value> {
        let (namespace, name) = &self.options.service;
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            namespace,
            &resource("", "v1", "Service", "services"),
        );
        let service = api.get_opt(name).await.ok()??;
        let mut ingress = service.data.get("status")?.get("loadBalancer")?.get("ingress")?.clone();
        // `ipMode` is a Service's only.
        for entry in ingress.as_array_mut()? {
            if let Some(e) = entry.as_object_mut() {
                e.remove("ipMode");
            }
        }
        (!ingress.as_array()?.is_empty()).then(|| json!({"loadBalancer": {"ingress": ingress}}))
    }

    /// Writes what differs, at most `writes_per_second`, for at most `budget`; whether
    /// everything is written.
    async fn write(&mut self, wanted: &Wanted, budget: Duration, stop: &watch::Receiver<bool>) -> bool {
        let started = Instant::now();
        let mut failed = false;
        let pause = Duration::from_secs(1) / self.options.writes_per_second.max(1);
        let mut work: Vec<(ObjectRef, ApiResource, Value)> = Vec::new();
        for (object, (plural, status)) in &wanted.statuses {
            let status = with_times(status, self.known.get(object));
            if let Some(p) = patch(self.known.get(object), &status) {
                work.push((object.clone(), ambassador(&object.kind, plural), p));
            }
        }
        if !wanted.ingresses.is_empty() {
            if let Some(lb) = self.load_balancer().await {
                for object in &wanted.ingresses {
                    let current = self.known.get(object).and_then(|s| s.get("loadBalancer"));
                    if current != lb.get("loadBalancer") {
                        work.push((object.clone(), ingresses(), lb.clone()));
                    }
                }
            }
        }
        for (object, ar, p) in work {
            if started.elapsed() > budget || *stop.borrow() {
                return false;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &object.namespace, &ar);
            match api
                .patch_status(
                    &object.name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": p})),
                )
                .await
            {
                Ok(o) => {
                    self.shared.metrics.status_writes.fetch_add(1, Ordering::Relaxed);
                    self.known
                        .insert(object, o.data.get("status").cloned().unwrap_or(Value::Null));
                }
                // Deleted meanwhile: the next set will not have it.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    failed = true;
                    self.shared.metrics.status_write_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(object = %object, error = %e, "cannot write status; retrying at the next Lease renewal");
                }
            }
            tokio::time::sleep(pause).await;
        }
        // Objects gone from the configuration are forgotten.
        let present: BTreeSet<&ObjectRef> = wanted.statuses.keys().chain(&wanted.ingresses).collect();
        self.known.retain(|o, _| present.contains(o));
        !failed
    }
}

/// Runs the writer until `stop` turns true.
pub async fn run(
    client: kube::Client,
    options: Options,
    shared: Arc<Shared>,
    mut wanted: watch::Receiver<Option<Arc<Wanted>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut election = Election {
        api: Api::namespaced(client.clone(), &options.namespace),
        options: options.clone(),
        observed: None,
    };
    let mut writer = Writer {
        client,
        options: options.clone(),
        shared: Arc::clone(&shared),
        known: BTreeMap::new(),
    };
    let renew = options.lease_duration / 3;
    let mut leader = false;
    // Whether the last wanted set is completely written.
    let mut done = false;
    let mut last_error: Option<String> = None;
    loop {
        match election.hold().await {
            Ok(holds) => {
                last_error = None;
                if holds && !leader {
                    tracing::info!(identity = %options.identity, lease = %format!("{}/{}", options.namespace, options.lease), "writing status: this replica holds the Lease");
                    match tokio::time::timeout(renew, writer.learn()).await {
                        Ok(Ok(())) => {
                            leader = true;
                            done = false;
                        }
                        failed => {
                            let why = match failed {
                                Ok(Err(e)) => e.to_string(),
                                _ => format!("no answer within {renew:?}"),
                            };
                            tracing::warn!(error = %why, "cannot list the objects' statuses; giving the Lease up and retrying");
                            // Holding the Lease without writing would keep every replica from it.
                            election.release().await;
                        }
                    }
                } else if !holds && leader {
                    tracing::info!("another replica holds the status Lease now; not writing status");
                    leader = false;
                }
            }
            Err(e) => {
                let text = e.to_string();
                if last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(error = %text, "cannot take or renew the status Lease (attache needs get, create and update on leases: deploy/rbac-status.yaml); retrying");
                    last_error = Some(text);
                }
                leader = false;
            }
        }
        shared.metrics.status_leader.store(u64::from(leader), Ordering::Relaxed);
        if leader && !done {
            let current = wanted.borrow_and_update().clone();
            if let Some(w) = current {
                done = writer.write(&w, renew, &stop).await;
            } else {
                done = true;
            }
        }
        let changed = tokio::select! {
            () = tokio::time::sleep(renew) => Some(true),
            changed = wanted.changed() => changed.is_ok().then_some(false),
            stopped = stop.wait_for(|s| *s) => {
                drop(stopped);
                None
            }
        };
        match changed {
            None => break,
            Some(true) => {
                // attache's Service is not watched: its load balancer may have changed.
                if wanted.borrow().as_ref().is_some_and(|w| !w.ingresses.is_empty()) {
                    done = false;
                }
            }
            Some(false) => {
                done = false;
                // Let a burst settle.
                tokio::time::sleep(QUIET).await;
            }
        }
    }
    if leader {
        election.release().await;
    }
    shared.metrics.status_leader.store(0, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_remove_what_is_gone_and_nothing_is_written_twice() {
        let current = json!({"state": "Error", "errorReason": "bad"});
        let wanted = json!({"state": "Ready", "tlsCertificateSource": "None"});
        assert_eq!(
            patch(Some(&current), &wanted),
            Some(json!({"state": "Ready", "tlsCertificateSource": "None", "errorReason": null}))
        );
        assert_eq!(patch(Some(&wanted), &wanted), None);
        // Only what differs, and keys attache does not own are left alone.
        let current = json!({"state": "Ready", "tlsCertificateSource": "None", "theirs": 1, "lastValid": {"spec": {}}});
        assert_eq!(patch(Some(&current), &wanted), Some(json!({"lastValid": null})));
        // Nothing to say about an object without a status: nothing written.
        assert_eq!(patch(None, &json!({})), None);
    }

    #[test]
    fn a_condition_keeps_its_transition_time_while_it_stays_the_same() {
        let wanted =
            json!({"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": ""}]});
        let mut current = wanted.clone();
        current["conditions"][0]["lastTransitionTime"] = json!("2026-01-01T00:00:00Z");
        assert_eq!(with_times(&wanted, Some(&current)), current);
        let changed =
            json!({"conditions": [{"type": "Accepted", "status": "False", "reason": "Invalid", "message": "x"}]});
        assert_ne!(
            with_times(&changed, Some(&current))["conditions"][0]["lastTransitionTime"],
            "2026-01-01T00:00:00Z"
        );
    }
}
