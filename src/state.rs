//! The live state shared by `serve`, `xds` and `admin`: the current translation and snapshot,
//! connected Envoys, and counters for `/metrics`. Holds no logic beyond bookkeeping.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use tokio::sync::watch;

use crate::snapshot::{ResourceType, Snapshot};
use crate::Translation;

/// What one connected Envoy stream has been sent and has said, per resource type.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TypeStatus {
    /// Version of the last response sent.
    pub sent_version: Option<String>,
    /// Version Envoy last accepted.
    pub acked_version: Option<String>,
    /// The last rejection, until a later version is accepted.
    pub last_nack: Option<Nack>,
    /// Resource names subscribed to (empty for wildcard types).
    pub subscribed: Vec<String>,
}

/// A rejected update.
#[derive(Clone, Debug, Serialize)]
pub struct Nack {
    /// Version that was rejected.
    pub version: String,
    /// Envoy's error message.
    pub message: String,
}

/// One ADS stream.
#[derive(Clone, Debug, Serialize)]
pub struct EnvoyStatus {
    /// Envoy's node id.
    pub node_id: String,
    /// Envoy's node cluster.
    pub node_cluster: String,
    /// `sotw` or `delta`.
    pub protocol: &'static str,
    /// Peer address.
    pub peer: String,
    /// Per type label (`clusters`, `routes`...).
    pub types: BTreeMap<&'static str, TypeStatus>,
}

/// Counters and gauges exported on `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Translations run.
    pub translations: AtomicU64,
    /// Duration of the last translation, in microseconds.
    pub last_translation_micros: AtomicU64,
    /// Every translation's duration.
    pub translation_seconds: Histogram,
    /// Snapshots published (version changed).
    pub snapshots_published: AtomicU64,
    /// Raw objects in the last load.
    pub objects: AtomicU64,
    /// xDS responses sent.
    pub xds_responses: [AtomicU64; 5],
    /// ACKs received.
    pub xds_acks: [AtomicU64; 5],
    /// NACKs received.
    pub xds_nacks: [AtomicU64; 5],
    /// ADS streams opened.
    pub xds_streams_opened: AtomicU64,
    /// Envoy child restarts.
    pub envoy_restarts: AtomicU64,
    /// 1 while this replica holds the status Lease (`--write-status`).
    pub status_leader: AtomicU64,
    /// Status subresources written.
    pub status_writes: AtomicU64,
    /// Status writes that failed (retried).
    pub status_write_errors: AtomicU64,
    /// Rule pack reloads that took effect (`serve --rules`: a pack's files changed).
    pub rule_reloads: AtomicU64,
    /// Rule pack reloads refused (the pack is broken; the previous packs stay).
    pub rule_reload_errors: AtomicU64,
    /// 1 while the rule packs in use are the ones on disk, 0 while a broken edit is refused.
    pub rule_packs_current: AtomicU64,
    /// ADS connections refused in the TLS handshake (`serve --ads-tls-*`).
    pub ads_tls_failures: AtomicU64,
}

/// Upper bounds of [`Histogram`]'s buckets, in seconds: from a one-object change (about a
/// millisecond) to a cold translation of 100,000 Mappings.
pub const DURATION_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// A Prometheus histogram of durations with [`DURATION_BUCKETS`].
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at or below each bound (not cumulative; summed when rendered).
    buckets: [AtomicU64; DURATION_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: std::time::Duration) {
        let seconds = d.as_secs_f64();
        if let Some(i) = DURATION_BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, n) in DURATION_BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}\n{name}_count {count}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
    }
}

/// Index of a type in the per-type counter arrays.
pub fn type_index(ty: ResourceType) -> usize {
    ResourceType::ALL.iter().position(|t| *t == ty).unwrap_or(0)
}

/// Everything the running server shares.
#[derive(Debug)]
pub struct Shared {
    /// The snapshot Envoys are served (None until the first translation).
    pub snapshot: watch::Sender<Option<Arc<Snapshot>>>,
    /// The last translation (IR, diagnostics).
    pub translation: RwLock<Arc<Translation>>,
    /// Connected streams by stream id.
    pub envoys: Mutex<BTreeMap<u64, EnvoyStatus>>,
    /// Counters.
    pub metrics: Metrics,
    /// Set once the first snapshot is published and the ADS server listens.
    pub ready: AtomicBool,
    /// The Kubernetes source's watches (all zero with a directory source).
    pub kube: Arc<crate::source::kube::Metrics>,
    /// The admin address of the Envoy that `serve --envoy` supervises: `/metrics` adds its
    /// Prometheus stats to attache's own.
    pub envoy_admin: Option<std::net::SocketAddr>,
    /// The directory source's root (`--config-dir`): the diagnostics page shows the lines around
    /// a problem from the files under it, and only from those.
    pub config_dir: Option<std::path::PathBuf>,
    /// The effective rule table, for the diagnostics page (replaced when packs are reloaded).
    pub rules: RwLock<Arc<Vec<RuleSummary>>>,
    /// When the served configuration last changed version (None before the first).
    pub changed_at: Mutex<Option<std::time::SystemTime>>,
    /// What SotW streams that were sent the same clusters share when a snapshot drops some.
    pub sotw_clusters: crate::xds::sotw::ClusterMemo,
}

/// One effective rule, as the diagnostics page lists it.
#[derive(Clone, Debug, Serialize)]
pub struct RuleSummary {
    /// Rule id.
    pub id: String,
    /// The pack that defined it (a later pack's rule of the same id replaced earlier ones).
    pub pack: String,
    /// IR node kind.
    pub kind: String,
    /// The Envoy message it emits.
    pub emits: String,
    /// `pack/template path`.
    pub template: String,
    /// Its condition as written.
    pub when: Option<String>,
    /// A patch merged into the other rules' output.
    pub patch: bool,
}

impl RuleSummary {
    /// The rule table of a registry.
    pub fn table(registry: &crate::rules::Registry) -> Vec<RuleSummary> {
        registry
            .rules()
            .iter()
            .map(|r| RuleSummary {
                id: r.id.clone(),
                pack: r.pack.clone(),
                kind: r.kind.as_str().to_string(),
                emits: r.emits.clone(),
                template: r.template.clone(),
                when: r.when.as_ref().map(|(text, _)| text.clone()),
                patch: r.patch,
            })
            .collect()
    }
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            snapshot: watch::channel(None).0,
            translation: RwLock::new(Arc::new(Translation::default())),
            envoys: Mutex::new(BTreeMap::new()),
            metrics: Metrics::default(),
            ready: AtomicBool::new(false),
            kube: Arc::default(),
            envoy_admin: None,
            config_dir: None,
            rules: RwLock::default(),
            changed_at: Mutex::new(None),
            sotw_clusters: Default::default(),
        }
    }
}

impl Shared {
    /// The effective rule table.
    pub fn rules(&self) -> Arc<Vec<RuleSummary>> {
        self.rules.read().map(|r| Arc::clone(&r)).unwrap_or_default()
    }

    /// The current translation.
    pub fn translation(&self) -> Arc<Translation> {
        self.translation.read().map(|t| Arc::clone(&t)).unwrap_or_default()
    }

    /// Runs `f` on the status of one stream.
    pub fn with_envoy(&self, id: u64, f: impl FnOnce(&mut EnvoyStatus)) {
        if let Ok(mut map) = self.envoys.lock() {
            if let Some(e) = map.get_mut(&id) {
                f(e);
            }
        }
    }

    /// Prometheus text exposition of the metrics.
    pub fn render_metrics(&self) -> String {
        let m = &self.metrics;
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, kind: &str, samples: Vec<(String, u64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        let one = |a: &AtomicU64| vec![(String::new(), a.load(Ordering::Relaxed))];
        let per_type = |arr: &[AtomicU64; 5]| {
            ResourceType::ALL
                .iter()
                .map(|t| {
                    (
                        format!("{{type=\"{}\"}}", t.label()),
                        arr[type_index(*t)].load(Ordering::Relaxed),
                    )
                })
                .collect::<Vec<_>>()
        };
        counter(
            "attache_ready",
            "1 once the first snapshot is served",
            "gauge",
            vec![(String::new(), u64::from(self.ready.load(Ordering::Relaxed)))],
        );
        let version = self.snapshot.borrow().as_ref().map(|snap| snap.version());
        if let Some(version) = version {
            counter(
                "attache_configuration_info",
                "The configuration version served (as in the log, /debug/snapshot and /debug/envoys)",
                "gauge",
                vec![(format!("{{version=\"{version}\"}}"), 1)],
            );
        }
        counter(
            "attache_translations_total",
            "Translations run",
            "counter",
            one(&m.translations),
        );
        counter(
            "attache_translation_last_duration_microseconds",
            "Duration of the last translation",
            "gauge",
            one(&m.last_translation_micros),
        );
        m.translation_seconds.render(
            &mut out,
            "attache_translation_duration_seconds",
            "Duration of translations (load to snapshot)",
        );
        let mut counter = |name: &str, help: &str, kind: &str, samples: Vec<(String, u64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        counter(
            "attache_snapshots_published_total",
            "Snapshots with a new version",
            "counter",
            one(&m.snapshots_published),
        );
        counter(
            "attache_config_objects",
            "Objects read in the last load",
            "gauge",
            one(&m.objects),
        );
        let t = self.translation();
        let counts = crate::diagnostic::count(&t.diagnostics);
        counter(
            "attache_diagnostics",
            "Diagnostics of the last translation",
            "gauge",
            vec![
                ("{severity=\"error\"}".into(), counts.errors as u64),
                ("{severity=\"warning\"}".into(), counts.warnings as u64),
                ("{severity=\"notice\"}".into(), counts.notices as u64),
            ],
        );
        counter(
            "attache_last_known_good_objects",
            "Objects served from their previous valid version because the current one has errors",
            "gauge",
            vec![(String::new(), t.kept.len() as u64)],
        );
        counter(
            "attache_snapshot_resources",
            "Resources in the served snapshot",
            "gauge",
            ResourceType::ALL
                .iter()
                .map(|ty| (format!("{{type=\"{}\"}}", ty.label()), t.snapshot.count(*ty) as u64))
                .collect(),
        );
        let k = &self.kube;
        for (name, help, kind, value) in [
            (
                "attache_kube_watches",
                "Kubernetes watches running",
                "gauge",
                &k.watches,
            ),
            (
                "attache_kube_watches_synced",
                "Kubernetes watches that completed their first list",
                "gauge",
                &k.watches_synced,
            ),
            (
                "attache_kube_events_total",
                "Kubernetes watch events received",
                "counter",
                &k.events,
            ),
            (
                "attache_kube_relists_total",
                "Kubernetes re-lists after the first list (expired watches, reconnects)",
                "counter",
                &k.relists,
            ),
            (
                "attache_kube_errors_total",
                "Kubernetes API errors (each retried with backoff)",
                "counter",
                &k.errors,
            ),
            (
                "attache_kube_sets_total",
                "Complete object sets read from Kubernetes",
                "counter",
                &k.sets,
            ),
        ] {
            counter(name, help, kind, one(value));
        }
        let connected = self.envoys.lock().map(|e| e.len() as u64).unwrap_or(0);
        counter(
            "attache_xds_connected_streams",
            "Open ADS streams",
            "gauge",
            vec![(String::new(), connected)],
        );
        counter(
            "attache_xds_streams_opened_total",
            "ADS streams opened",
            "counter",
            one(&m.xds_streams_opened),
        );
        counter(
            "attache_xds_responses_total",
            "xDS responses sent",
            "counter",
            per_type(&m.xds_responses),
        );
        counter(
            "attache_xds_acks_total",
            "xDS ACKs received",
            "counter",
            per_type(&m.xds_acks),
        );
        counter(
            "attache_xds_nacks_total",
            "xDS NACKs (rejected updates) received",
            "counter",
            per_type(&m.xds_nacks),
        );
        counter(
            "attache_envoy_restarts_total",
            "Times the supervised Envoy was restarted",
            "counter",
            one(&m.envoy_restarts),
        );
        counter(
            "attache_status_leader",
            "1 while this replica holds the status Lease and writes status (--write-status)",
            "gauge",
            one(&m.status_leader),
        );
        counter(
            "attache_status_writes_total",
            "Status subresources written",
            "counter",
            one(&m.status_writes),
        );
        counter(
            "attache_status_write_errors_total",
            "Status writes that failed (each retried)",
            "counter",
            one(&m.status_write_errors),
        );
        counter(
            "attache_rule_pack_reloads_total",
            "Rule pack reloads after their files changed, by result (an error keeps the previous packs)",
            "counter",
            vec![
                ("{result=\"ok\"}".into(), m.rule_reloads.load(Ordering::Relaxed)),
                (
                    "{result=\"error\"}".into(),
                    m.rule_reload_errors.load(Ordering::Relaxed),
                ),
            ],
        );
        counter(
            "attache_ads_tls_handshake_failures_total",
            "ADS connections refused in the TLS handshake (no client certificate, or one --ads-client-ca did not sign)",
            "counter",
            one(&m.ads_tls_failures),
        );
        counter(
            "attache_rule_packs_current",
            "1 while the rule packs in use are those on disk; 0 while a broken edit of one is refused",
            "gauge",
            one(&m.rule_packs_current),
        );
        out
    }
}
