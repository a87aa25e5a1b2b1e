//! EndpointSlice churn: `attache serve --kubernetes --envoy` against the API server emulation
//! (tests/support/apiserver.rs, real HTTP on loopback, the real kube-rs client) with 1,000
//! Services behind Mappings with the `kubernetes-endpoint` resolver, and 200 EndpointSlice
//! updates a second for a minute (pods moving: each update gives one Service a new endpoint
//! set). Measures: attache's CPU (goal: at most half a core), the xDS responses by type (goal:
//! EDS only, coalesced: far fewer pushes than updates), Envoy's CDS/LDS/RDS updates (none), and
//! at the end whether Envoy holds every Service's last endpoint set (read from its `/clusters`).
//! Writes `target/endpoints-report.md`.
//!
//! ```sh
//! cargo bench --bench endpoints                              # 1,000 Services, 200 updates/s, 60 s
//! cargo bench --bench endpoints -- --services 200 --seconds 10
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[path = "../tests/support/mod.rs"]
mod support;

use support::apiserver::ApiServer;
use support::{cpu_seconds, free_port, get, loopback, rss_kib, stat_sum, Proc};

fn num(flag: &str, default: u64) -> u64 {
    let all: Vec<String> = std::env::args().collect();
    all.iter()
        .position(|a| a == flag)
        .and_then(|i| all.get(i + 1)?.parse().ok())
        .unwrap_or(default)
}

/// The endpoint set of Service `i` after its `generation`th update: two pods, addresses
/// outside loopback (Envoy connects to none: no request goes to them), the port telling the
/// generation.
fn endpoints_of(i: usize, generation: u64) -> [String; 2] {
    let port = 10_000 + generation % 50_000;
    [
        format!("10.1.{}.{}:{port}", i / 250, i % 250 + 1),
        format!("10.2.{}.{}:{port}", i / 250, i % 250 + 1),
    ]
}

fn slice(i: usize, generation: u64) -> String {
    let [a, b] = endpoints_of(i, generation);
    let (a, port) = a.split_once(':').unwrap();
    let (b, _) = b.split_once(':').unwrap();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: svc-{i}-abcde\n  namespace: shop\n  labels:\n    kubernetes.io/service-name: svc-{i}\naddressType: IPv4\nports:\n- name: http\n  port: {port}\nendpoints:\n- addresses: [\"{a}\"]\n  conditions:\n    ready: true\n- addresses: [\"{b}\"]\n  conditions:\n    ready: true\n"
    )
}

/// attache's `/metrics`: the sample of each line starting with `name`, by its labels.
fn metrics(admin: SocketAddr, name: &str) -> BTreeMap<String, u64> {
    get(admin, "a", "/metrics")
        .map(|r| {
            r.body
                .lines()
                .filter(|l| l.starts_with(name))
                .filter_map(|l| {
                    let (key, v) = l.rsplit_once(' ')?;
                    Some((key[name.len()..].to_string(), v.parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Envoy's endpoints by cluster, from `/clusters` (`cluster::address:port::stat::value`).
fn envoy_endpoints(envoy_admin: SocketAddr) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let body = get(envoy_admin, "admin", "/clusters")
        .map(|r| r.body)
        .unwrap_or_default();
    for line in body.lines() {
        let parts: Vec<&str> = line.split("::").collect();
        if parts.len() >= 4 && parts[2] == "health_flags" {
            out.entry(parts[0].to_string())
                .or_default()
                .insert(parts[1].to_string());
        }
    }
    out
}

fn main() {
    let services = num("--services", 1_000) as usize;
    let rate = num("--rate", 200);
    let seconds = num("--seconds", 60);
    let dir = tempfile::tempdir().unwrap();
    let api = ApiServer::start();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let port = free_port();
    api.apply(&support::listener_and_host(port));
    let mut objects = String::new();
    for i in 0..services {
        objects += &format!(
            "apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: svc-{i}\n  namespace: shop\nspec:\n  hostname: \"*\"\n  prefix: /svc-{i}/\n  service: svc-{i}:80\n  resolver: kubernetes-endpoint\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{i}\n  namespace: shop\nspec:\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n---\n{}---\n",
            slice(i, 0)
        );
    }
    api.apply(&objects);

    let ads = loopback(free_port());
    let admin = loopback(free_port());
    let envoy_admin = loopback(free_port());
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_attache"));
    // The production defaults (the debounce included); only the addresses are the bench's.
    cmd.arg("serve")
        .arg("--kubernetes")
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("RUST_LOG", "warn")
        .args(["--ads-listen", &ads.to_string(), "--admin-listen", &admin.to_string()])
        .args(["--envoy-admin", &envoy_admin.to_string(), "--node-id", "endpoints"])
        .arg("--envoy")
        .arg(support::envoy_bin());
    let mut attache = Proc::spawn("attache", cmd, dir.path().join("attache.log"));
    let pid = attache.child.id();

    // Every Service's first endpoint set in Envoy.
    let expected = |generation: &[u64]| -> BTreeSet<String> {
        generation
            .iter()
            .enumerate()
            .flat_map(|(i, g)| endpoints_of(i, *g))
            .collect()
    };
    let mut generation = vec![0u64; services];
    let held = |envoy_admin| -> BTreeSet<String> {
        envoy_endpoints(envoy_admin)
            .into_iter()
            .filter(|(c, _)| c.starts_with("cluster_svc_"))
            .flat_map(|(_, hosts)| hosts)
            .collect()
    };
    let started = Instant::now();
    attache.wait_for(
        "Envoy to hold the first endpoint sets",
        Duration::from_secs(180),
        || (held(envoy_admin) == expected(&generation)).then_some(()),
    );
    let first_sync = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let responses_before = metrics(admin, "attache_xds_responses_total");
    let envoy_before = stat_sum(envoy_admin, "(cds|lds|rds).*update_success");
    let translations_before = metrics(admin, "attache_translations_total").values().sum::<u64>();
    let cpu_before = cpu_seconds(pid);
    println!(
        "endpoints: {services} Services in Envoy after {:.1} s; {rate} EndpointSlice updates/s for {seconds} s",
        first_sync.as_secs_f64()
    );

    // The churn: a random Service's pods move, `rate` times a second.
    let churn_started = Instant::now();
    let total = (rate * seconds) as usize;
    let mut rng: u64 = 0x2545_F491_4F6C_DD1D;
    let mut rss = Vec::new();
    for n in 0..total {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let i = rng as usize % services;
        generation[i] += 1;
        api.apply(&slice(i, generation[i]));
        if n % rate as usize == 0 {
            rss.push(rss_kib(pid) as f64 / 1024.0);
        }
        let due = churn_started + Duration::from_secs_f64((n + 1) as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let churn = churn_started.elapsed();
    let cpu = cpu_seconds(pid) - cpu_before;

    // Until Envoy holds every last endpoint set.
    let settle = Instant::now();
    let want = expected(&generation);
    let mut last = BTreeSet::new();
    while settle.elapsed() < Duration::from_secs(60) {
        last = held(envoy_admin);
        if last == want {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let converged = last == want;
    let settled = settle.elapsed();
    let responses_after = metrics(admin, "attache_xds_responses_total");
    let translations = metrics(admin, "attache_translations_total").values().sum::<u64>() - translations_before;
    let envoy_after = stat_sum(envoy_admin, "(cds|lds|rds).*update_success");
    let nacks: u64 = metrics(admin, "attache_xds_nacks_total").values().sum();
    attache.terminate();

    let delta = |label: &str| -> u64 {
        let key = format!("{{type=\"{label}\"}}");
        responses_after.get(&key).copied().unwrap_or(0) - responses_before.get(&key).copied().unwrap_or(0)
    };
    let mut report = format!(
        "## EndpointSlice churn: {services} Services, {total} updates in {:.1} s ({rate}/s)\n\n",
        churn.as_secs_f64()
    );
    report += &format!(
        "- attache CPU during the churn: {cpu:.1} s, {:.0}% of one core (goal: at most 50%); RSS MiB min {:.1}, max {:.1}\n",
        100.0 * cpu / churn.as_secs_f64(),
        rss.iter().copied().fold(f64::MAX, f64::min),
        rss.iter().copied().fold(0.0, f64::max)
    );
    report += &format!(
        "- xDS responses during the churn and the settling: endpoints {}, clusters {}, listeners {}, routes {}, secrets {}; translations {translations}; NACKs {nacks}\n",
        delta("endpoints"),
        delta("clusters"),
        delta("listeners"),
        delta("routes"),
        delta("secrets")
    );
    report += &format!("- Envoy's CDS/LDS/RDS update_success: {envoy_before} before, {envoy_after} after\n");
    let series: Vec<String> = rss
        .iter()
        .enumerate()
        .step_by((rss.len() / 20).max(1))
        .map(|(s, r)| format!("{s}s {r:.0}"))
        .collect();
    report += &format!("- attache RSS through the churn (MiB): {}\n", series.join(", "));
    report += &format!(
        "- Envoy holds every Service's last endpoint set: {} ({:.1} s after the last update; first sync {:.1} s){}\n",
        if converged { "yes" } else { "NO" },
        settled.as_secs_f64(),
        first_sync.as_secs_f64(),
        if converged {
            String::new()
        } else {
            format!(
                "; missing {}, extra {}",
                want.difference(&last).count(),
                last.difference(&want).count()
            )
        }
    );
    println!("{report}");
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/endpoints-report.md");
    let _ = std::fs::write(&out, &report);
    println!("report written to {}", out.display());
}
