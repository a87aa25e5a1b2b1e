//! The churn soak: `attache serve --envoy` on a directory of Mappings, a real Envoy carrying
//! keep-alive traffic, and thousands of random changes to any field of any kind (the generator
//! of the all-fields property test, tests/support/churn.rs) written into the directory over
//! minutes. Measures and checks: attache's resident memory through the run (does anything grow
//! without bound?), its CPU, every request's answer, NACKs (attache's count and Envoy's
//! `update_rejected`), and at the end that the served snapshot is the one a fresh translation of
//! the final directory gives, resource by resource. Writes `target/soak-report.md`.
//!
//! ```sh
//! cargo bench --bench soak                                  # 1,000 Mappings, 10,000 changes over 300 s
//! cargo bench --bench soak -- --changes 1000 --seconds 30   # a short run
//! cargo bench --bench soak -- --purge-now                   # mimalloc returns freed memory at once
//! cargo bench --bench soak -- --xds sotw                    # state-of-the-world instead of delta
//! cargo bench --bench soak -- --debounce-ms 20              # translate up to every 0.2 s, not 1.5 s
//! cargo bench --bench soak -- --changes 1000 --replay --replay-every 20  # in-process, no Envoy
//! cargo bench --no-default-features --bench soak           # attache with the system allocator
//! ```
//!
//! Traffic goes to probe Mappings on a Host (`probe.example`) whose `mappingSelector` only the
//! probes match, so the churn's objects (a catalog Mapping `prefix: /`, a Host `*` redirecting
//! cleartext) cannot legitimately change a probe's answer: any answer but the upstream's 200 is a
//! failure. The churn leaves out the two kinds whose every field applies to every route (Module,
//! AuthService); their changes are covered by the property tests. Listener and TCPMapping ports
//! from the catalog are moved to 21000-21999 so that Envoy binds nothing outside the bench.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../tests/support/mod.rs"]
mod support;

#[allow(dead_code, reason = "shared with the property tests")]
#[path = "../tests/support/churn.rs"]
mod churn;

use proptest::strategy::{Strategy as _, ValueTree as _};
use serde_json::Value;
use support::{cpu_seconds, free_port, get, keep_alive_get, loopback, rss_kib, stat_sum, Proc};

const PROBE_HOST: &str = "probe.example";

/// The most churn objects the directory holds at a time.
const CAP: usize = 60;

struct Args {
    mappings: usize,
    changes: usize,
    seconds: u64,
    seed: u64,
    purge_now: bool,
    rps: u64,
    /// `--xds delta|sotw` (attache's default: delta).
    xds: String,
    /// `--debounce-ms N`: serve's quiet period (its default, 150 ms, if absent); a burst is
    /// translated at the latest after ten, so this sets how often a never-resting directory is.
    debounce_ms: Option<u64>,
}

fn args() -> Args {
    let all: Vec<String> = std::env::args().collect();
    let value = |flag: &str| all.iter().position(|a| a == flag).and_then(|i| all.get(i + 1));
    let num = |flag: &str, default: u64| value(flag).and_then(|v| v.parse().ok()).unwrap_or(default);
    Args {
        mappings: num("--mappings", 1_000) as usize,
        changes: num("--changes", 10_000) as usize,
        seconds: num("--seconds", 300),
        seed: num("--seed", 7),
        purge_now: all.iter().any(|a| a == "--purge-now"),
        rps: num("--rps", 200),
        xds: value("--xds").cloned().unwrap_or_else(|| "delta".into()),
        debounce_ms: value("--debounce-ms").and_then(|v| v.parse().ok()),
    }
}

fn base(listen: u16) -> String {
    format!(
        "apiVersion: getambassador.io/v3alpha1\nkind: Listener\nmetadata:\n  name: soak\nspec:\n  port: {listen}\n  protocol: HTTP\n  securityModel: XFP\n  hostBinding:\n    namespace:\n      from: ALL\n---\napiVersion: getambassador.io/v3alpha1\nkind: Host\nmetadata:\n  name: probe\nspec:\n  hostname: {PROBE_HOST}\n  mappingSelector:\n    matchLabels:\n      soak: probe\n  requestPolicy:\n    insecure:\n      action: Route\n"
    )
}

fn probe(i: usize, upstream: SocketAddr) -> String {
    format!("apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: probe-{i}\n  labels:\n    soak: probe\nspec:\n  hostname: {PROBE_HOST}\n  prefix: /svc-{i}/\n  service: {upstream}\n")
}

/// A churn object as written: ports of Listeners and TCPMappings moved into the bench's range.
fn as_written(o: &Value) -> String {
    let mut o = o.clone();
    if matches!(o["kind"].as_str(), Some("Listener" | "TCPMapping")) {
        if let Some(p) = o["spec"]["port"].as_u64() {
            o["spec"]["port"] = Value::from(21_000 + p % 1_000);
        }
    }
    attache::output::to_yaml(&o)
}

/// Writes a file whole (a rename, so that the watcher never reads half of it).
fn write_atomically(staging: &Path, path: &Path, text: &str) {
    let tmp = staging.join(path.file_name().unwrap());
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// Counters of the load.
#[derive(Default)]
struct Load {
    ok: AtomicU64,
    failed: AtomicU64,
    /// Requests sent again on a new connection after the reused one was closed before any
    /// byte of the answer (what HTTP clients do for idempotent requests).
    retried: AtomicU64,
    stop: AtomicBool,
}

fn connect(addr: SocketAddr) -> Option<TcpStream> {
    let c = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    c.set_nodelay(true).ok()?;
    Some(c)
}

/// A client thread: keep-alive requests to random probes at `rps` per second.
fn client(
    addr: SocketAddr,
    probes: usize,
    rps: u64,
    seed: u64,
    load: Arc<Load>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
) {
    let mut rng = seed | 1;
    let mut conn: Option<TcpStream> = None;
    let started = Instant::now();
    let mut sent = 0u64;
    while !load.stop.load(Ordering::Relaxed) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let path = format!("/svc-{}/x", rng as usize % probes);
        let mut outcome = None;
        for attempt in 0..2 {
            let reused = conn.is_some();
            if conn.is_none() {
                conn = connect(addr);
            }
            let Some(c) = conn.as_mut() else {
                outcome = Some(Err("cannot connect".to_string()));
                break;
            };
            match keep_alive_get(c, PROBE_HOST, &path) {
                Ok((status, close)) => {
                    outcome = Some(Ok(status));
                    if close {
                        conn = None;
                    }
                    break;
                }
                Err(e) => {
                    conn = None;
                    if reused && attempt == 0 {
                        load.retried.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    outcome = Some(Err(e.to_string()));
                    break;
                }
            }
        }
        match outcome {
            Some(Ok(200)) => {
                load.ok.fetch_add(1, Ordering::Relaxed);
            }
            other => {
                load.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut f) = failures.lock() {
                    let line = format!("{:.1} s {path}: {other:?}", started.elapsed().as_secs_f64());
                    // The first ten, and the last one.
                    if f.len() >= 11 {
                        f.pop();
                    }
                    f.push(line);
                }
            }
        }
        sent += 1;
        let due = started + Duration::from_micros(sent * 1_000_000 / rps.max(1));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

/// What attache serves: snapshot version and each resource's version, by type.
/// (type, name, version) of one resource.
type Versions = Vec<(String, String, String)>;

fn served(admin: SocketAddr) -> Option<(String, Versions)> {
    let body = get(admin, "a", "/debug/snapshot").ok()?.body;
    let v: Value = serde_json::from_str(&body).ok()?;
    let mut resources = Vec::new();
    for (ty, t) in v["types"].as_object()? {
        for r in t["resources"].as_array()? {
            resources.push((
                ty.clone(),
                r["name"].as_str()?.to_string(),
                r["version"].as_str()?.to_string(),
            ));
        }
    }
    Some((v["version"].as_str()?.to_string(), resources))
}

/// A fresh translation of the directory (the reference pipeline, nothing remembered).
fn fresh(dir: &Path) -> (String, Versions, attache::Translation) {
    let registry = attache::rules::Registry::core().unwrap();
    let loaded = attache::source::dir::load(dir);
    let t = attache::translate(&loaded, &registry, &attache::Options::default());
    let mut resources = Vec::new();
    for ty in attache::snapshot::ResourceType::ALL {
        for (name, r) in t.snapshot.of_type(ty) {
            resources.push((ty.label().to_string(), name.to_string(), r.version.to_string()));
        }
    }
    resources.sort();
    (t.snapshot.version().to_string(), resources, t)
}

fn envoys_acked(admin: SocketAddr, version: &str) -> bool {
    get(admin, "a", "/debug/envoys")
        .ok()
        .and_then(|r| serde_json::from_str::<Value>(&r.body).ok())
        .and_then(|v| {
            let list = v.as_array()?.clone();
            Some(
                !list.is_empty()
                    && list
                        .iter()
                        .all(|e| e["configuration"]["acked"] == true && e["configuration"]["version"] == version),
            )
        })
        .unwrap_or(false)
}

/// Waits until attache serves what a fresh translation gives and every Envoy ACKed it; the
/// differences if it does not within the limit.
fn converge(admin: SocketAddr, dir: &Path, limit: Duration) -> (bool, Duration, Vec<String>, attache::Translation) {
    let started = Instant::now();
    let (version, expected, t) = fresh(dir);
    loop {
        let now = served(admin);
        if let Some((v, mut got)) = now.clone() {
            got.sort();
            if v == version && got == expected && envoys_acked(admin, &version) {
                return (true, started.elapsed(), Vec::new(), t);
            }
            if started.elapsed() > limit {
                let mut diffs: Vec<String> = expected
                    .iter()
                    .filter(|e| !got.contains(e))
                    .map(|e| format!("expected {e:?}"))
                    .chain(
                        got.iter()
                            .filter(|g| !expected.contains(g))
                            .map(|g| format!("served {g:?}")),
                    )
                    .take(20)
                    .collect();
                diffs.insert(0, format!("snapshot version served {v}, fresh {version}"));
                return (false, started.elapsed(), diffs, t);
            }
        } else if started.elapsed() > limit {
            return (
                false,
                started.elapsed(),
                vec!["/debug/snapshot did not answer".into()],
                t,
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether every probe is routed in a translation: the probe listener's route table has the
/// probe Host's virtual host with each probe's prefix. `Err` says what is missing.
fn probes_routed(t: &attache::Translation, listen: u16, probes: usize) -> Result<(), String> {
    probes_routed_by(t, listen, probes, None).map(drop)
}

/// [`probes_routed`], with the route tables to check given (`Some`: those the probe listener
/// used before, which a connection it accepted then still reads while it drains); returns the
/// tables the probe listener uses now.
fn probes_routed_by(
    t: &attache::Translation,
    listen: u16,
    probes: usize,
    before: Option<&[String]>,
) -> Result<Vec<String>, String> {
    use attache::snapshot::ResourceType;
    let listeners = attache::envoy::resources_json(&t.snapshot, ResourceType::Listener);
    let listener = listeners
        .iter()
        .find(|l| l["address"]["socketAddress"]["portValue"] == listen)
        .ok_or("no listener on the probe port")?;
    let text = listener.to_string();
    let tables: Vec<String> = attache::envoy::resources_json(&t.snapshot, ResourceType::Route)
        .into_iter()
        .filter_map(|r| r["name"].as_str().map(str::to_string))
        .filter(|name| text.contains(&format!("\"routeConfigName\":\"{name}\"")))
        .collect();
    if tables.is_empty() {
        return Err("the probe listener names no route table".into());
    }
    let check = before.map_or(tables.clone(), <[String]>::to_vec);
    for table in attache::envoy::resources_json(&t.snapshot, ResourceType::Route) {
        if !check.iter().any(|n| table["name"] == n.as_str()) {
            continue;
        }
        let vh = table["virtualHosts"]
            .as_array()
            .and_then(|v| {
                v.iter().find(|vh| {
                    vh["domains"]
                        .as_array()
                        .is_some_and(|d| d.iter().any(|x| x == PROBE_HOST))
                })
            })
            .ok_or(format!(
                "route table {} has no virtual host for {PROBE_HOST}",
                table["name"]
            ))?;
        let prefixes: std::collections::HashSet<&str> = vh["routes"]
            .as_array()
            .map(|r| r.iter().filter_map(|r| r["match"]["prefix"].as_str()).collect())
            .unwrap_or_default();
        if let Some(i) = (0..probes).find(|i| !prefixes.contains(format!("/svc-{i}/").as_str())) {
            return Err(format!(
                "route table {}: no route /svc-{i}/ for {PROBE_HOST}",
                table["name"]
            ));
        }
    }
    Ok(tables)
}

fn metric_sum(admin: SocketAddr, name: &str) -> u64 {
    get(admin, "a", "/metrics")
        .map(|r| {
            r.body
                .lines()
                .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
                .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<u64>().ok()))
                .sum()
        })
        .unwrap_or(0)
}

fn main() {
    let a = args();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("config");
    let staging = root.path().join("staging");
    std::fs::create_dir_all(dir.join("churn")).unwrap();
    std::fs::create_dir_all(&staging).unwrap();
    let upstream = support::upstream("soak").addr;
    // Not in the range the churn's Listeners and TCPMappings are moved to.
    let listen = std::iter::repeat_with(free_port)
        .find(|p| !(21_000..22_000).contains(p))
        .unwrap();
    std::fs::write(dir.join("000-base.yaml"), base(listen)).unwrap();
    for chunk in 0..a.mappings.div_ceil(100) {
        let text: Vec<String> = (chunk * 100..((chunk + 1) * 100).min(a.mappings))
            .map(|i| probe(i, upstream))
            .collect();
        std::fs::write(dir.join(format!("probes-{chunk:03}.yaml")), text.join("---\n")).unwrap();
    }

    // The churn: the catalog's objects of the kinds that stay out of the probes' way.
    let catalog = churn::catalog();
    let keep = |o: &Value| !matches!(o["kind"].as_str(), Some("Module" | "AuthService"));
    let pool: Vec<Value> = catalog.objects.iter().filter(|o| keep(o)).cloned().collect();
    let mut runner = proptest::test_runner::TestRunner::new_with_rng(
        proptest::test_runner::Config::default(),
        proptest::test_runner::TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &{
            let mut s = [0u8; 32];
            s[..8].copy_from_slice(&a.seed.to_le_bytes());
            s
        }),
    );
    let strategy = churn::change();
    // Each churn object in a file of its own, named by a slot number that never comes back.
    let mut objects: Vec<(u64, Value)> = Vec::new();
    let mut next_slot = 0u64;
    let file_of = |slot: u64| dir.join("churn").join(format!("o{slot:06}.yaml"));
    for o in pool.iter().take(30) {
        std::fs::write(file_of(next_slot), as_written(o)).unwrap();
        objects.push((next_slot, o.clone()));
        next_slot += 1;
    }

    // `--replay`: no serving; after each change a translation of the directory, checked for
    // the probes' routes: the first change that loses one is printed with the state it left.
    let replay = std::env::args().any(|a| a == "--replay");
    // `--replay-every K`: translate after every K changes (`serve` takes what arrived in a burst).
    let replay_every = {
        let all: Vec<String> = std::env::args().collect();
        all.iter()
            .position(|x| x == "--replay-every")
            .and_then(|i| all.get(i + 1)?.parse().ok())
            .unwrap_or(1usize)
    };
    let mut memory = attache::lastgood::LastGood::default();
    let mut previous_tables: Option<Vec<String>> = None;
    // As `serve` reads the directory: unchanged files are not parsed again.
    let mut loader = attache::source::dir::Loader::default();
    let mut translator = replay.then(|| {
        attache::Translator::new(
            Arc::new(attache::rules::Registry::core().unwrap()),
            attache::Options::default(),
        )
    });

    let logs = root.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let ads = loopback(free_port());
    let admin = loopback(free_port());
    let envoy_admin = loopback(free_port());
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_attache"));
    cmd.arg("serve")
        .arg("--config-dir")
        .arg(&dir)
        .args(["--ads-listen", &ads.to_string(), "--admin-listen", &admin.to_string()])
        .args(["--envoy-admin", &envoy_admin.to_string(), "--node-id", "soak"])
        .args(["--xds", &a.xds])
        .arg("--envoy")
        .arg(support::envoy_bin())
        .env("RUST_LOG", std::env::var("SOAK_LOG").unwrap_or_else(|_| "warn".into()));
    if a.purge_now {
        cmd.env("MIMALLOC_PURGE_DELAY", "0");
    }
    if let Some(ms) = a.debounce_ms {
        cmd.args(["--debounce-ms", &ms.to_string()]);
    }
    // `--replay` translates in this process: nothing to start.
    let attache = (!replay).then(|| Proc::spawn("attache", cmd, logs.join("attache.log")));
    let pid = attache.as_ref().map_or(std::process::id(), |p| p.child.id());
    let probe_addr = loopback(listen);
    let ready = Instant::now();
    if let Some(attache) = &attache {
        attache.wait_for("Envoy to route the probes", Duration::from_secs(120), || {
            support::http("GET", probe_addr, PROBE_HOST, &format!("/svc-{}/", a.mappings - 1))
                .is_ok_and(|r| r.status == 200)
                .then_some(())
        });
    }
    if attache.is_some() {
        println!(
            "soak: {} probe Mappings served after {:.1} s; {} changes over {} s, {} requests/s",
            a.mappings,
            ready.elapsed().as_secs_f64(),
            a.changes,
            a.seconds,
            a.rps
        );
    }

    let load = Arc::new(Load::default());
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..2)
        .map(|k| {
            let (load, failures) = (Arc::clone(&load), Arc::clone(&failures));
            let (probes, rps) = (a.mappings, a.rps / 2);
            std::thread::spawn(move || client(probe_addr, probes, rps, 0x9E37_79B9 + k, load, failures))
        })
        .collect();

    let mut changes_log: Vec<String> = Vec::new();
    let mut dumped = false;
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let mut next_sample = Instant::now();
    for n in 0..a.changes {
        let change = strategy.new_tree(&mut runner).unwrap().current();
        let mut values: Vec<Value> = objects.iter().map(|(_, o)| o.clone()).collect();
        let before = values.clone();
        // `apply` adds from the whole catalog: an added Module or AuthService is left out.
        churn::apply(&mut values, &change);
        if values.len() > before.len() && !keep(values.last().unwrap()) {
            values.pop();
        }
        // The input stays about the same size (the generator adds twice as often as it
        // removes): past the cap, an addition replaces the oldest object.
        if values.len() > before.len() && values.len() > CAP {
            values.remove(0);
        }
        // What changed: an object added at the end, the first one that differs removed or
        // changed.
        let what = |o: &Value| {
            format!(
                "{} {}",
                o["kind"].as_str().unwrap_or("?"),
                o["metadata"]["name"].as_str().unwrap_or("?")
            )
        };
        let replaced_oldest = values.len() == before.len() && values.len() == CAP && values.first() == before.get(1);
        let first_difference = (0..before.len()).find(|&i| values.get(i) != Some(&before[i]));
        if replaced_oldest {
            let (slot, o) = objects.remove(0);
            changes_log.push(format!(
                "{:.2} remove o{slot:06} {} (the oldest)",
                started.elapsed().as_secs_f64(),
                what(&o)
            ));
            let _ = std::fs::remove_file(file_of(slot));
        }
        if values.len() > objects.len() {
            let o = values.pop().unwrap();
            changes_log.push(format!(
                "{:.2} add o{next_slot:06} {}",
                started.elapsed().as_secs_f64(),
                what(&o)
            ));
            write_atomically(&staging, &file_of(next_slot), &as_written(&o));
            objects.push((next_slot, o));
            next_slot += 1;
        } else if values.len() < objects.len() {
            let (slot, o) = objects.remove(first_difference.unwrap_or(objects.len() - 1));
            changes_log.push(format!(
                "{:.2} remove o{slot:06} {}",
                started.elapsed().as_secs_f64(),
                what(&o)
            ));
            let _ = std::fs::remove_file(file_of(slot));
        } else if let Some(i) = first_difference {
            objects[i].1 = values[i].clone();
            changes_log.push(format!(
                "{:.2} set o{:06} {}",
                started.elapsed().as_secs_f64(),
                objects[i].0,
                what(&values[i])
            ));
            write_atomically(&staging, &file_of(objects[i].0), &as_written(&values[i]));
        }
        if let Some(translator) = translator.as_mut().filter(|_| (n + 1) % replay_every == 0) {
            // As `serve` translates: objects that turn invalid are served as they last were.
            let loaded = loader.load(&dir);
            let t = attache::lastgood::translate(&loaded, &memory, |l| translator.translate(l));
            memory.remember(&loaded, &t);
            if let Err(e) = probes_routed_by(&t, listen, a.mappings, previous_tables.as_deref()) {
                println!("change {n}: a route table the probe listener used before now lacks the probes: {e} (tables now: {:?})", probes_routed_by(&t, listen, a.mappings, None));
            }
            previous_tables = probes_routed_by(&t, listen, a.mappings, None).ok();
            if (n + 1) % (replay_every * 50) == 0 {
                println!(
                    "replay: change {}: this process's RSS {:.1} MiB",
                    n + 1,
                    rss_kib(std::process::id()) as f64 / 1024.0
                );
            }
            if let Err(e) = probes_routed(&t, listen, a.mappings) {
                let kept = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/soak-replay");
                let _ = std::fs::remove_dir_all(&kept);
                let _ = std::process::Command::new("cp").arg("-r").arg(&dir).arg(&kept).status();
                println!(
                    "change {n}: {}\n  {e}\n  the directory is in {}",
                    changes_log.last().map_or("", String::as_str),
                    kept.display()
                );
                return;
            }
            let reference = attache::translate(
                &loaded,
                &attache::rules::Registry::core().unwrap(),
                &attache::Options::default(),
            );
            if let Err(e) = probes_routed(&reference, listen, a.mappings) {
                println!("change {n}: the reference translation too: {e}");
            }
            continue;
        }
        if replay {
            continue;
        }
        if !dumped && load.failed.load(Ordering::Relaxed) > 0 {
            // What Envoy and attache had when the first request failed.
            dumped = true;
            let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/soak-failure");
            let _ = std::fs::create_dir_all(&out);
            for (name, addr, path) in [
                ("envoy-config.json", envoy_admin, "/config_dump?include_eds"),
                ("envoy-listeners.txt", envoy_admin, "/listeners"),
                ("envoy-stats.txt", envoy_admin, "/stats"),
                ("attache-envoys.json", admin, "/debug/envoys"),
                ("attache-snapshot.json", admin, "/debug/snapshot"),
            ] {
                if let Ok(r) = get(addr, "a", path) {
                    let _ = std::fs::write(out.join(name), r.body);
                }
            }
            let _ = std::process::Command::new("cp")
                .arg("-r")
                .arg(&dir)
                .arg(out.join("config"))
                .status();
            println!(
                "first failure after change {n}: Envoy's and attache's state in {}",
                out.display()
            );
        }
        if Instant::now() >= next_sample {
            samples.push((started.elapsed().as_secs_f64(), rss_kib(pid)));
            next_sample += Duration::from_secs(1);
        }
        let due = started + Duration::from_secs_f64(a.seconds as f64 * (n + 1) as f64 / a.changes as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let Some(mut attache) = attache else {
        println!("replay: {} changes, every probe routed throughout", a.changes);
        return;
    };
    let churn_time = started.elapsed();
    let cpu_churn = cpu_seconds(pid) - cpu_before;

    // Objects that turned invalid are served as they last were (last known good): what is
    // served then depends on the history, not only on the final directory. Removing the
    // churn objects with errors leaves a directory whose translation alone says what to serve.
    let kept_before = {
        std::thread::sleep(Duration::from_secs(3));
        metric_sum(admin, "attache_last_known_good_objects")
    };
    let mut removed_invalid = 0;
    for _ in 0..5 {
        let (_, _, t) = fresh(&dir);
        let files: std::collections::BTreeSet<String> = t
            .diagnostics
            .iter()
            .filter(|d| d.severity == attache::diagnostic::Severity::Error)
            .filter_map(|d| d.origin.as_ref().map(|o| o.file.clone()))
            .filter(|f| f.starts_with("churn/"))
            .collect();
        if files.is_empty() {
            break;
        }
        for f in &files {
            let _ = std::fs::remove_file(dir.join(f));
            objects.retain(|(slot, _)| format!("churn/o{slot:06}.yaml") != *f);
            removed_invalid += 1;
        }
    }
    let (converged, took, diffs, t) = converge(admin, &dir, Duration::from_secs(60));
    load.stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    let kept = metric_sum(admin, "attache_last_known_good_objects");
    let nacks = metric_sum(admin, "attache_xds_nacks_total");
    let rejected = stat_sum(envoy_admin, "update_rejected");
    let translations = metric_sum(admin, "attache_translations_total");
    let published = metric_sum(admin, "attache_snapshots_published_total");
    let final_rss = rss_kib(pid);
    attache.terminate();
    // What Envoy rejected, from attache's log (it logs every NACK with Envoy's message).
    let nack_lines: Vec<String> = attache
        .log_text()
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains("nack") || l.contains("rejected"))
        .take(5)
        .map(|l| l.chars().take(600).collect())
        .collect();

    // Memory: after a warm-up of a tenth of the run, the first and the last third.
    let warm: Vec<&(f64, u64)> = samples
        .iter()
        .filter(|(t, _)| *t >= churn_time.as_secs_f64() / 10.0)
        .collect();
    let third = warm.len() / 3;
    let first = median(warm[..third].iter().map(|(_, r)| *r).collect());
    let last = median(warm[warm.len() - third..].iter().map(|(_, r)| *r).collect());
    // Whether memory has settled: mimalloc keeps fragments for a few thousand translations
    // before it holds a level (BENCHMARKS.md), so the middle third against the last says more
    // than the first against the last once a run is long enough.
    let middle = median(warm[third..warm.len() - third].iter().map(|(_, r)| *r).collect());
    let (min, max) = (
        samples.iter().map(|s| s.1).min().unwrap_or(0),
        samples.iter().map(|s| s.1).max().unwrap_or(0),
    );
    let counts = attache::diagnostic::count(&t.diagnostics);
    let mib = |k: u64| k as f64 / 1024.0;
    let mut report = String::new();
    report += &format!(
        "## Churn soak: {} probe Mappings, {} changes in {:.0} s (seed {}, xDS {}, purge now: {}, debounce: {}, allocator: {})\n\n",
        a.mappings,
        a.changes,
        churn_time.as_secs_f64(),
        a.seed,
        a.xds,
        a.purge_now,
        a.debounce_ms.map_or("default".to_string(), |ms| format!("{ms} ms")),
        if cfg!(feature = "mimalloc") { "mimalloc" } else { "system" }
    );
    report += &format!(
        "- requests: {} answered 200, {} failed, {} sent again after a closed keep-alive connection\n",
        load.ok.load(Ordering::Relaxed),
        load.failed.load(Ordering::Relaxed),
        load.retried.load(Ordering::Relaxed)
    );
    report += &format!("- NACKs: attache counted {nacks}, Envoy's update_rejected sum {rejected}\n");
    for l in &nack_lines {
        report += &format!("  - {l}\n");
    }
    report += &format!(
        "- final snapshot equals a fresh translation of the final directory: {} ({:.1} s after the last change){}\n",
        if converged { "yes" } else { "NO" },
        took.as_secs_f64(),
        if diffs.is_empty() {
            String::new()
        } else {
            format!("\n  - {}", diffs.join("\n  - "))
        }
    );
    report += &format!(
        "- at the end of the churn {kept_before} objects were served from their last good version; the {removed_invalid} churn objects with errors were then removed; final input: {} churn objects ({} errors, {} warnings in a fresh translation); served from their last good version: {kept}\n",
        objects.len(),
        counts.errors,
        counts.warnings
    );
    report += &format!("- translations {translations}, snapshots published {published}; attache CPU during the churn {cpu_churn:.1} s ({:.0}% of one core)\n", 100.0 * cpu_churn / churn_time.as_secs_f64());
    report += &format!(
        "- attache RSS MiB: min {:.1}, max {:.1}, median of the first third after warm-up {:.1}, of the middle third {:.1}, of the last third {:.1} (last / first {:.3}, last / middle {:.3}), at the end {:.1}\n",
        mib(min),
        mib(max),
        mib(first),
        mib(middle),
        mib(last),
        last as f64 / first.max(1) as f64,
        last as f64 / middle.max(1) as f64,
        mib(final_rss)
    );
    let series: Vec<String> = samples
        .iter()
        .step_by((samples.len() / 30).max(1))
        .map(|(t, r)| format!("{t:.0}s {:.0}", mib(*r)))
        .collect();
    report += &format!("- RSS through the run (MiB): {}\n", series.join(", "));
    if let Ok(f) = failures.lock() {
        if !f.is_empty() {
            report += &format!("- first failures:\n  - {}\n", f.join("\n  - "));
        }
    }
    println!("{report}");
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    let _ = std::fs::write(target.join("soak-changes.log"), changes_log.join("\n") + "\n");
    if std::env::var_os("SOAK_KEEP").is_some() {
        let kept = target.join("soak-final");
        let _ = std::fs::remove_dir_all(&kept);
        let _ = std::process::Command::new("cp")
            .arg("-r")
            .arg(root.path())
            .arg(&kept)
            .status();
    }
    let out = target.join("soak-report.md");
    let _ = std::fs::write(&out, &report);
    println!("report written to {}", out.display());
}
