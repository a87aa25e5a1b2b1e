//! The JSON under `/debug/`: what the diagnostics page reads, and what scripts and support
//! threads read. Views of the current translation and the connected Envoys; lists that grow with
//! the configuration (routes, clusters) are filtered and paginated here, so the page stays fast at
//! 10,000 Mappings. Reads configuration files only under `--config-dir`, for the lines around a
//! diagnostic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Json;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::ir;
use crate::snapshot::ResourceType;
use crate::state::Shared;

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/debug/summary", get(summary))
        .route("/debug/routes", get(routes_list))
        .route("/debug/clusters", get(clusters))
        .route("/debug/diagnostics", get(diagnostics))
        .route("/debug/envoys", get(envoys))
        .route("/debug/rules", get(rules))
        .route("/debug/snapshot", get(snapshot))
        .route("/debug/ir", get(ir))
}

/// A page of a long list: `q` filters (case-insensitive substring of the row's text), `offset`
/// and `limit` (at most [`MAX_LIMIT`]) choose the page.
#[derive(Debug, Default, Deserialize)]
struct Page {
    #[serde(default)]
    q: String,
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
}

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

impl Page {
    /// The page of `rows` whose search text contains every word of `q`, and how many matched.
    /// A row's JSON is made only when it is on the page.
    fn apply<F: FnOnce() -> Value>(&self, rows: impl Iterator<Item = (String, F)>) -> Value {
        let words: Vec<String> = self.q.split_whitespace().map(str::to_lowercase).collect();
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
        let mut total = 0;
        let mut items = Vec::new();
        for (text, row) in rows {
            let text = text.to_lowercase();
            if !words.iter().all(|w| text.contains(w.as_str())) {
                continue;
            }
            if total >= self.offset && items.len() < limit {
                items.push(row());
            }
            total += 1;
        }
        json!({"total": total, "offset": self.offset, "limit": limit, "items": items})
    }
}

fn unix_millis(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What the page polls: cheap, and `generation` changes with every translation.
async fn summary(State(s): State<Arc<Shared>>) -> Json<Value> {
    let t = s.translation();
    let version = s.snapshot.borrow().as_ref().map(|snap| snap.version().to_string());
    let changed_at = s.changed_at.lock().ok().and_then(|at| *at).map(unix_millis);
    let routes: usize =
        t.ir.route_configs
            .iter()
            .flat_map(|rc| &rc.virtual_hosts)
            .map(|vh| vh.routes.len())
            .sum();
    let envoys: Vec<Value> = s
        .envoys
        .lock()
        .map(|m| {
            m.iter()
                .map(|(id, e)| {
                    let nacks = e.types.values().filter(|t| t.last_nack.is_some()).count();
                    let acked: BTreeMap<&str, Option<&str>> =
                        e.types.iter().map(|(k, t)| (*k, t.acked_version.as_deref())).collect();
                    json!({"stream": id, "node_id": e.node_id, "nacks": nacks, "acked": acked})
                })
                .collect()
        })
        .unwrap_or_default();
    // The configuration's own and the Envoys' refusals, counted without copying the list.
    let mut counts = crate::diagnostic::count(&t.diagnostics);
    let refused = crate::diagnostic::count(&crate::xds::nack_diagnostics(&s));
    counts.errors += refused.errors;
    counts.warnings += refused.warnings;
    counts.notices += refused.notices;
    Json(json!({
        "ready": s.ready.load(Ordering::Relaxed),
        "version": version,
        "changed_at_unix_ms": changed_at,
        "now_unix_ms": unix_millis(std::time::SystemTime::now()),
        "generation": s.metrics.translations.load(Ordering::Relaxed),
        "source": match &s.config_dir {
            Some(dir) => format!("directory {}", dir.display()),
            None => "kubernetes".to_string(),
        },
        "objects": s.metrics.objects.load(Ordering::Relaxed),
        "counts": counts,
        "routes": routes,
        "clusters": t.ir.clusters.len(),
        "envoys": envoys,
        "rules": s.rules().len(),
    }))
}

fn source_json(source: Option<&ir::SourceRef>) -> Value {
    source.map_or(Value::Null, |src| {
        json!({
            "object": src.object.to_string(),
            "origin": origin_text(&src.origin),
        })
    })
}

/// `file:line` (or the file alone when the line is unknown, as for Kubernetes objects).
fn origin_text(origin: &crate::diagnostic::Origin) -> String {
    if origin.line == 0 {
        origin.file.clone()
    } else {
        format!("{}:{}", origin.file, origin.line)
    }
}

fn match_kind(kind: ir::MatchKind) -> &'static str {
    match kind {
        ir::MatchKind::Exact => "=",
        ir::MatchKind::Prefix => "^=",
        ir::MatchKind::Suffix => "$=",
        ir::MatchKind::Present => "present",
        ir::MatchKind::Regex => "~",
    }
}

fn conditions(list: &[ir::HeaderMatch]) -> Vec<String> {
    list.iter()
        .map(|h| match h.kind {
            ir::MatchKind::Present => format!("{} present", h.name),
            kind => format!("{} {} {}", h.name, match_kind(kind), h.value),
        })
        .collect()
}

/// The share of requests each route of a virtual host gets: 100 unless it is one of a canary
/// group (routes with the same match), whose cumulative thresholds become percentages.
fn weights(routes: &[Arc<ir::Route>]) -> Vec<u32> {
    let mut out = Vec::with_capacity(routes.len());
    let mut below = 0;
    let same_match = |a: &ir::Route, b: &ir::Route| {
        a.prefix == b.prefix
            && a.path_kind == b.path_kind
            && a.headers == b.headers
            && a.query_parameters == b.query_parameters
    };
    for (i, r) in routes.iter().enumerate() {
        if i > 0 && !same_match(&routes[i - 1], r) {
            below = 0;
        }
        match &r.runtime_fraction {
            Some(f) => {
                out.push(f.numerator.saturating_sub(below));
                below = f.numerator;
            }
            None => {
                out.push(100u32.saturating_sub(below));
                below = 0;
            }
        }
    }
    out
}

/// Every route of every route table, in match order.
async fn routes_list(State(s): State<Arc<Shared>>, Query(page): Query<Page>) -> Json<Value> {
    let t = s.translation();
    let rows = t.ir.route_configs.iter().flat_map(|rc| {
        rc.virtual_hosts.iter().flat_map(move |vh| {
            let weights = weights(&vh.routes);
            vh.routes.iter().zip(weights).map(move |(r, weight)| {
                let path_kind = match r.path_kind {
                    crate::resource::mapping::PathKind::Prefix => "prefix",
                    crate::resource::mapping::PathKind::Exact => "exact",
                    crate::resource::mapping::PathKind::Regex => "regex",
                };
                let target = match r.action {
                    ir::RouteAction::Route => r.cluster.clone(),
                    ir::RouteAction::HttpsRedirect => "redirect to https".to_string(),
                    ir::RouteAction::Redirect => "redirect".to_string(),
                };
                let headers = conditions(&r.headers);
                let query = conditions(&r.query_parameters);
                let (object, origin) = r
                    .source
                    .as_ref()
                    .map(|src| (src.object.to_string(), origin_text(&src.origin)))
                    .unwrap_or_default();
                let text = format!(
                    "{} {} {} {} {} {object} {origin}",
                    vh.hostname,
                    r.prefix,
                    target,
                    headers.join(" "),
                    query.join(" "),
                );
                let row = move || {
                    json!({
                        "table": rc.name,
                        "host": vh.hostname,
                        "name": r.name,
                        "path": r.prefix,
                        "path_kind": path_kind,
                        "headers": headers,
                        "query": query,
                        "weight": weight,
                        "precedence": r.precedence,
                        "action": r.action,
                        "target": target,
                        "source": source_json(r.source.as_ref()),
                    })
                };
                (text, row)
            })
        })
    });
    Json(page.apply(rows))
}

/// Every cluster, with the Mappings that use it and, for EDS, its endpoints.
async fn clusters(State(s): State<Arc<Shared>>, Query(page): Query<Page>) -> Json<Value> {
    let t = s.translation();
    let endpoints: BTreeMap<&str, &ir::Endpoints> = t.ir.endpoints.iter().map(|e| (e.name.as_str(), e)).collect();
    let rows = t.ir.clusters.iter().map(|c| {
        let used_by: Vec<String> = c.used_by.iter().map(ToString::to_string).collect();
        let eds = endpoints.get(c.name.as_str()).map(|e| {
            json!({
                "service": e.service,
                "port": e.port,
                "addresses": e.addresses.iter().map(|a| format!("{}:{}", a.address, a.port)).collect::<Vec<_>>(),
            })
        });
        let text = format!("{} {}:{} {}", c.name, c.host, c.port, used_by.join(" "));
        let row = move || {
            json!({
                "name": c.name,
                "host": c.host,
                "port": c.port,
                "tls": c.tls,
                "discovery": c.discovery,
                "used_by": used_by,
                "endpoints": eds,
                "source": source_json(c.source.as_ref()),
            })
        };
        (text, row)
    });
    Json(page.apply(rows))
}

#[derive(Debug, Default, Deserialize)]
struct Context {
    /// Lines of source to show before and after each diagnostic's line (at most 10).
    #[serde(default)]
    context: u32,
}

/// The file of an origin, if it lies under the configuration directory (nothing else is read).
fn config_file(dir: &Path, file: &str) -> Option<PathBuf> {
    let root = dir.canonicalize().ok()?;
    let path = Path::new(file);
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
    };
    let path = path.canonicalize().ok()?;
    (path.starts_with(&root) && path.is_file()).then_some(path)
}

async fn diagnostics(State(s): State<Arc<Shared>>, Query(context): Query<Context>) -> Json<Value> {
    // Reading files is blocking work.
    let value = tokio::task::spawn_blocking(move || diagnostics_json(&s, context.context.min(10)))
        .await
        .unwrap_or(Value::Null);
    Json(value)
}

/// The lines around `line` (1-based) within its YAML document (never past a `---`): context
/// that belongs to the object the diagnostic is about, and never to a neighbouring Secret.
fn document_lines(lines: &[String], line: u32, around: u32) -> Vec<Value> {
    let index = line as usize - 1;
    let separator = |i: usize| lines.get(i).is_some_and(|l| l.starts_with("---"));
    let mut first = index;
    while first > 0 && index - first < around as usize && !separator(first - 1) && !separator(first) {
        first -= 1;
    }
    let mut last = index;
    while last + 1 < lines.len() && last - index < around as usize && !separator(last + 1) {
        last += 1;
    }
    (first..=last.min(lines.len().saturating_sub(1)))
        .filter_map(|i| lines.get(i).map(|l| json!({"line": i + 1, "text": l})))
        .collect()
}

fn diagnostics_json(s: &Shared, around: u32) -> Value {
    let t = s.translation();
    // The configuration's own, then what connected Envoys refused (on the objects it came from).
    let mut all = t.diagnostics.clone();
    all.extend(crate::xds::nack_diagnostics(s));
    let mut files: BTreeMap<String, Option<Vec<String>>> = BTreeMap::new();
    let mut lines_of = |d: &crate::diagnostic::Diagnostic| -> Value {
        let Some(origin) = &d.origin else { return Value::Null };
        // A Secret's lines are its key material.
        let secret = d.object.as_ref().is_some_and(|o| o.kind == "Secret");
        let (Some(dir), true) = (&s.config_dir, around > 0 && origin.line > 0 && !secret) else {
            return Value::Null;
        };
        let text = files.entry(origin.file.clone()).or_insert_with(|| {
            let path = config_file(dir, &origin.file)?;
            let text = std::fs::read_to_string(path).ok()?;
            Some(text.lines().map(str::to_string).collect())
        });
        match text {
            Some(lines) if (origin.line as usize) <= lines.len() => {
                Value::Array(document_lines(lines, origin.line, around))
            }
            _ => Value::Null,
        }
    };
    let list: Vec<Value> = all
        .iter()
        .map(|d| {
            let source = lines_of(d);
            json!({
                "text": d.to_string(),
                "code": d.code,
                "severity": d.severity,
                "object": d.object,
                "origin": d.origin,
                "path": d.path,
                "message": d.message,
                "hint": d.hint,
                "source": source,
            })
        })
        .collect();
    json!({
        "counts": crate::diagnostic::count(&all),
        "diagnostics": list,
    })
}

async fn rules(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(serde_json::to_value(&*s.rules()).unwrap_or(Value::Null))
}

async fn snapshot(State(s): State<Arc<Shared>>) -> Json<Value> {
    let snap = s.snapshot.borrow().clone();
    let Some(snap) = snap else {
        return Json(json!({"version": null}));
    };
    let mut types = serde_json::Map::new();
    for ty in ResourceType::ALL {
        // Secrets would carry private keys: only their names and versions leave the process.
        let resources: Vec<Value> = snap
            .of_type(ty)
            .map(|(name, r)| {
                let config = if ty == ResourceType::Secret {
                    json!("<redacted>")
                } else {
                    crate::envoy::bytes_to_json(ty.message_name(), &r.bytes)
                };
                json!({"name": name, "version": r.version, "config": config})
            })
            .collect();
        types.insert(
            ty.label().to_string(),
            json!({"version": snap.type_version(ty), "resources": resources}),
        );
    }
    Json(json!({"version": snap.version(), "types": types}))
}

async fn ir(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(serde_json::to_value(&s.translation().ir).unwrap_or(Value::Null))
}

/// Every connected Envoy, and whether it runs the configuration being served: the served
/// `version` (the one in attache's log and `/debug/snapshot`) counts as ACKed when everything sent
/// to the stream is ACKed and nothing was rejected; `types` are its per-type versions, which the
/// streams' `sent_version`/`acked_version` are (for a stream subscribed to every resource).
async fn envoys(State(s): State<Arc<Shared>>) -> Json<Value> {
    let snapshot = s.snapshot.borrow().clone();
    let list: Vec<Value> = s
        .envoys
        .lock()
        .map(|m| {
            m.iter()
                .map(|(id, e)| {
                    let configuration = snapshot.as_ref().map(|snap| {
                        let types: BTreeMap<&str, String> = ResourceType::ALL
                            .iter()
                            .map(|ty| (ty.label(), snap.type_version(*ty)))
                            .collect();
                        // Everything sent ACKed and nothing rejected: each stream answers every
                        // new version, so this is the served configuration.
                        let acked = !e.types.is_empty()
                            && e.types.values().all(|t| {
                                t.last_nack.is_none() && t.acked_version.is_some() && t.acked_version == t.sent_version
                            });
                        json!({"version": snap.version(), "acked": acked, "types": types})
                    });
                    json!({"stream": id, "configuration": configuration, "status": e})
                })
                .collect()
        })
        .unwrap_or_default();
    Json(Value::Array(list))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_hold_the_rows_with_every_word_and_count_them_all() {
        let rows = (0..250).map(|i| (format!("Host-{i} /svc-{i}/"), move || json!(i)));
        let page = Page {
            q: "host /SVC-1".into(),
            offset: 5,
            limit: Some(3),
        };
        // 1, 10..19, 100..199: 111 rows match; the page is the 6th to 8th (1, 10, 11, 12, 13 first).
        let out = page.apply(rows);
        assert_eq!(out["total"], 111);
        assert_eq!(out["items"], json!([14, 15, 16]));
        let all = Page {
            limit: Some(5000),
            ..Page::default()
        }
        .apply((0..2000).map(|i| (String::new(), move || json!(i))));
        assert_eq!(all["items"].as_array().unwrap().len(), MAX_LIMIT);
    }

    #[test]
    fn context_stays_inside_the_document() {
        let lines: Vec<String> = [
            "kind: Secret",
            "data:",
            "  tls.key: SECRET",
            "---",
            "kind: Mapping",
            "spec:",
            "  timeout_ms: abc",
            "---",
            "kind: Secret",
        ]
        .iter()
        .map(|l| l.to_string())
        .collect();
        let shown: Vec<u64> = document_lines(&lines, 7, 5)
            .iter()
            .map(|v| v["line"].as_u64().unwrap())
            .collect();
        assert_eq!(shown, [5, 6, 7]);
        let shown: Vec<u64> = document_lines(&lines, 5, 1)
            .iter()
            .map(|v| v["line"].as_u64().unwrap())
            .collect();
        assert_eq!(shown, [5, 6]);
        assert_eq!(document_lines(&lines, 1, 0).len(), 1);
    }

    #[test]
    fn only_files_under_the_configuration_directory_are_read() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("config");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/a.yaml"), "a").unwrap();
        std::fs::write(root.path().join("secret.yaml"), "s").unwrap();
        assert!(config_file(&dir, "sub/a.yaml").is_some());
        assert!(config_file(&dir, &dir.join("sub/a.yaml").display().to_string()).is_some());
        assert!(config_file(&dir, "../secret.yaml").is_none());
        assert!(config_file(&dir, &root.path().join("secret.yaml").display().to_string()).is_none());
        assert!(config_file(&dir, "sub").is_none());
        assert!(config_file(&dir, "kubernetes resourceVersion 12").is_none());
    }
}
