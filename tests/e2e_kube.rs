//! `attache serve --kubernetes --envoy` end to end: the real binary reads the in-process API
//! server emulation (`support::apiserver`) through a kubeconfig, and a real Envoy serves real
//! requests to loopback upstreams. Readiness waits for the first complete list; objects added,
//! changed and deleted in the API reach Envoy; expired watches re-list without a request failing;
//! a rotated Secret reaches Envoy.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::apiserver::ApiServer;
use support::*;

fn listener_and_host(port: u16) -> String {
    format!(
        "apiVersion: getambassador.io/v3alpha1\nkind: Listener\nmetadata:\n  name: http\n  namespace: ambassador\nspec:\n  port: {port}\n  protocol: HTTP\n  securityModel: XFP\n  hostBinding:\n    namespace:\n      from: ALL\n---\napiVersion: getambassador.io/v3alpha1\nkind: Host\nmetadata:\n  name: any\n  namespace: ambassador\nspec:\n  hostname: \"*\"\n  requestPolicy:\n    insecure:\n      action: Route\n"
    )
}

fn mapping_in(namespace: &str, name: &str, prefix: &str, service: std::net::SocketAddr) -> String {
    format!("apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  hostname: \"*\"\n  prefix: {prefix}\n  service: {service}\n")
}

/// A temporary directory, an API server emulation, and a kubeconfig for it in the directory.
fn emulated_cluster() -> (tempfile::TempDir, ApiServer, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let api = ApiServer::start();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    (dir, api, kubeconfig)
}

fn status(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    get(addr, "example.com", path).ok().map(|r| r.status)
}

#[test]
fn kubernetes_changes_reach_envoy_and_relists_drop_no_request() {
    let (dir, api, kubeconfig) = emulated_cluster();
    let (a, b) = (upstream("a"), upstream("b"));
    let port = free_port();
    api.set_outage(true);
    api.apply(&listener_and_host(port));
    api.apply(&mapping_in("default", "a", "/a/", a.addr));

    let (attache, envoy, envoy_admin, admin) = serve_kubernetes(&kubeconfig, dir.path(), port, &[]);
    // While the API is down: alive, not ready, errors counted.
    wait_for("API errors in /metrics", Duration::from_secs(20), || {
        metric(admin, "attache_kube_errors_total ").filter(|n| *n > 0)
    });
    assert_eq!(
        get(admin, "a", "/ready").map(|r| r.status).ok(),
        Some(503),
        "ready before the first list"
    );
    assert_eq!(get(admin, "a", "/alive").map(|r| r.status).ok(), Some(200));

    api.set_outage(false);
    wait_for("/a/ through Envoy", Duration::from_secs(60), || {
        get(envoy, "example.com", "/a/x")
            .ok()
            .filter(|r| r.status == 200 && r.body.contains("upstream=a"))
    });
    assert_eq!(get(admin, "a", "/ready").map(|r| r.status).ok(), Some(200));

    // Add, change, delete.
    api.apply(&mapping_in("shop", "b", "/b/", b.addr));
    wait_for("a new Mapping answers", Duration::from_secs(20), || {
        get(envoy, "example.com", "/b/")
            .ok()
            .filter(|r| r.status == 200 && r.body.contains("upstream=b"))
    });
    api.apply(&mapping_in("shop", "b", "/b2/", b.addr));
    wait_for(
        "a changed Mapping answers at its new prefix",
        Duration::from_secs(20),
        || (status(envoy, "/b2/") == Some(200) && status(envoy, "/b/") == Some(404)).then_some(()),
    );
    assert!(api.delete("getambassador.io/v3alpha1", "Mapping", "shop", "b"));
    wait_for("a deleted Mapping is gone", Duration::from_secs(20), || {
        (status(envoy, "/b2/") == Some(404)).then_some(())
    });

    // Expired watches and dropped connections, while requests keep flowing: none may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let hammer = {
        let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match status(envoy, "/a/") {
                    Some(200) => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let relists_before = metric(admin, "attache_kube_relists_total ").unwrap_or(0);
    for round in 0..3 {
        // A change only a re-list can see, then every watch expires.
        api.apply_unseen(&mapping_in(
            "default",
            &format!("r{round}"),
            &format!("/r{round}/"),
            b.addr,
        ));
        api.compact();
        api.drop_watches();
        wait_for("the re-listed Mapping answers", Duration::from_secs(20), || {
            (status(envoy, &format!("/r{round}/")) == Some(200)).then_some(())
        });
    }
    stop.store(true, Ordering::Relaxed);
    hammer.join().unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok >= 20, "only {ok} requests went through");
    assert_eq!(failed, 0, "{failed} of {} requests failed during re-lists", ok + failed);
    assert!(metric(admin, "attache_kube_relists_total ").unwrap_or(0) > relists_before);
    assert_routes_accepted(envoy_admin, port);
    drop(attache);
}

#[test]
fn a_rotated_secret_reaches_envoy() {
    let (dir, api, kubeconfig) = emulated_cluster();
    let a = upstream("a");
    let port = free_port();
    api.apply(&format!(
        "apiVersion: getambassador.io/v3alpha1\nkind: Listener\nmetadata:\n  name: https\n  namespace: ambassador\nspec:\n  port: {port}\n  protocol: HTTPS\n  securityModel: XFP\n  hostBinding:\n    namespace:\n      from: ALL\n---\n\
apiVersion: getambassador.io/v3alpha1\nkind: Host\nmetadata:\n  name: h1\n  namespace: ambassador\nspec:\n  hostname: h1.example.com\n  tlsSecret:\n    name: h1-cert\n"
    ));
    api.apply(&tls_secret("ambassador", "h1-cert", "h1.crt", "h1.key"));
    api.apply(&mapping_in("default", "a", "/a/", a.addr));
    let (_attache, _envoy, _envoy_admin, _admin) = serve_kubernetes(&kubeconfig, dir.path(), port, &[]);
    wait_for("the certificate from the Secret", Duration::from_secs(60), || {
        Some(curl(port, "h1.example.com", None, "/a/", "h1.crt")).filter(|r| r.0 == 0 && r.1 == 200)
    });
    api.apply(&tls_secret("ambassador", "h1-cert", "h1-rotated.crt", "h1-rotated.key"));
    wait_for("the rotated certificate", Duration::from_secs(30), || {
        Some(curl(port, "h1.example.com", None, "/a/", "h1-rotated.crt")).filter(|r| r.0 == 0 && r.1 == 200)
    });
    // The old certificate is no longer served.
    assert_eq!(curl(port, "h1.example.com", None, "/a/", "h1.crt").0, 60);
}

fn endpoint_slice(addr: std::net::SocketAddr) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: pods-1\n  namespace: shop\n  labels:\n    kubernetes.io/service-name: pods\naddressType: IPv4\nports:\n- name: http\n  port: {}\nendpoints:\n- addresses: [\"{}\"]\n  conditions:\n    ready: true\n",
        addr.port(),
        addr.ip()
    )
}

#[test]
fn endpoint_slice_changes_reach_envoy_as_eds_only_delta() {
    endpoint_slice_changes("delta");
}

#[test]
fn endpoint_slice_changes_reach_envoy_as_eds_only_sotw() {
    endpoint_slice_changes("sotw");
}

fn endpoint_slice_changes(xds: &str) {
    let (dir, api, kubeconfig) = emulated_cluster();
    let (a, b) = (upstream("a"), upstream("b"));
    let port = free_port();
    api.apply(&listener_and_host(port));
    api.apply("apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: pods\n  namespace: shop\nspec:\n  hostname: \"*\"\n  prefix: /pods/\n  service: pods:80\n  resolver: kubernetes-endpoint\n");
    api.apply("apiVersion: v1\nkind: Service\nmetadata:\n  name: pods\n  namespace: shop\nspec:\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n");
    api.apply(&endpoint_slice(a.addr));
    let (_attache, envoy, envoy_admin, _admin) = serve_kubernetes(&kubeconfig, dir.path(), port, &["--xds", xds]);
    wait_for("the pod behind the Service answers", Duration::from_secs(60), || {
        get(envoy, "example.com", "/pods/")
            .ok()
            .filter(|r| r.status == 200 && r.body.contains("upstream=a"))
    });
    let cluster = "cluster_pods_shop_80_eds";
    let counters = || {
        (
            stat(envoy_admin, "cluster_manager.cds.update_success"),
            stat(envoy_admin, "listener_manager.lds.update_success"),
            stat(
                envoy_admin,
                &format!("http.ingress_http.rds.routes-{port}.update_success"),
            ),
        )
    };
    let before = counters();
    let eds_before = stat(envoy_admin, &format!("cluster.{cluster}.update_success")).unwrap_or(0);

    // The pod moves: Envoy follows over EDS, nothing else is sent.
    api.apply(&endpoint_slice(b.addr));
    wait_for("the moved pod answers", Duration::from_secs(20), || {
        get(envoy, "example.com", "/pods/")
            .ok()
            .filter(|r| r.status == 200 && r.body.contains("upstream=b"))
    });
    assert_eq!(
        counters(),
        before,
        "(CDS, LDS, RDS) updates while only endpoints changed"
    );
    assert!(stat(envoy_admin, &format!("cluster.{cluster}.update_success")).unwrap_or(0) > eds_before);

    // No pod ready: 503, still without touching the rest.
    api.apply("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: pods-1\n  namespace: shop\n  labels:\n    kubernetes.io/service-name: pods\naddressType: IPv4\nports:\n- name: http\n  port: 1\nendpoints:\n- addresses: [\"127.0.0.1\"]\n  conditions:\n    ready: false\n");
    wait_for("no ready pod: 503", Duration::from_secs(20), || {
        (status(envoy, "/pods/") == Some(503)).then_some(())
    });
    assert_eq!(counters(), before);
}

fn ingress(class: &str) -> String {
    format!("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: shop\n  namespace: shop\nspec:\n  ingressClassName: {class}\n  rules:\n  - http:\n      paths:\n      - path: /shop/\n        pathType: Prefix\n        backend:\n          service:\n            name: pods\n            port:\n              name: web\n      - path: /exact\n        pathType: Exact\n        backend:\n          service:\n            name: pods\n            port:\n              number: 80\n")
}

#[test]
fn ingresses_of_attaches_class_reach_envoy_through_their_services() {
    let (dir, api, kubeconfig) = emulated_cluster();
    let a = upstream("a");
    let port = free_port();
    api.apply(&listener_and_host(port));
    // Ingress backends are Kubernetes Services: here their pods are found through their
    // EndpointSlices (the Module's default resolver), which point at a loopback upstream.
    api.apply("apiVersion: getambassador.io/v3alpha1\nkind: Module\nmetadata:\n  name: ambassador\n  namespace: ambassador\nspec:\n  config:\n    resolver: kubernetes-endpoint\n");
    api.apply("apiVersion: v1\nkind: Service\nmetadata:\n  name: pods\n  namespace: shop\nspec:\n  ports:\n  - name: web\n    port: 80\n    targetPort: 8080\n");
    api.apply(&endpoint_slice(a.addr).replace("- name: http", "- name: web"));
    api.apply("apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: ambassador\nspec:\n  controller: getambassador.io/ingress-controller\n");
    api.apply(&ingress("ambassador"));
    let (_attache, envoy, _envoy_admin, admin) = serve_kubernetes(&kubeconfig, dir.path(), port, &[]);
    // The named port resolved through the Service; the prefix is rewritten to `/` (Emissary's
    // Mapping default, which its Ingress support keeps).
    let r = wait_for("the Ingress path answers", Duration::from_secs(60), || {
        get(envoy, "example.com", "/shop/items")
            .ok()
            .filter(|r| r.status == 200 && r.body.contains("upstream=a"))
    });
    assert!(r.body.contains("path=/items"), "{}", r.body);
    // Exact means exact.
    assert_eq!(status(envoy, "/exact"), Some(200));
    assert_eq!(status(envoy, "/exact/more"), Some(404));
    // Given to another controller, the Ingress is no longer served, and the diagnostics say why.
    api.apply(&ingress("nginx"));
    wait_for("the Ingress of another class to go", Duration::from_secs(30), || {
        (status(envoy, "/shop/items") == Some(404)).then_some(())
    });
    let diagnostics = get(admin, "a", "/debug/diagnostics").unwrap().body;
    assert!(diagnostics.contains("ingress.other_class"), "{diagnostics}");
}

/// `attache serve --kubernetes --write-status` without Envoy, with a short status Lease.
fn status_replica(
    kubeconfig: &std::path::Path,
    logs: &std::path::Path,
    name: &'static str,
) -> (Proc, std::net::SocketAddr) {
    let admin = loopback(free_port());
    let mut cmd = attache();
    cmd.args(["serve", "--kubernetes", "--write-status", "--status-lease-seconds", "2"])
        .args(["--status-service", "ambassador/attache"])
        .args(["--ads-listen", &loopback(free_port()).to_string()])
        .args(["--admin-listen", &admin.to_string()])
        .args(["--ambassador-namespace", "ambassador", "--debounce-ms", "50"])
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST");
    (Proc::spawn(name, cmd, logs.join(format!("{name}.log"))), admin)
}

fn bad_mapping(timeout: &str) -> String {
    format!("apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: bad\n  namespace: shop\nspec:\n  hostname: \"*\"\n  prefix: /bad/\n  service: bad:80\n  timeout_ms: {timeout}\n")
}

#[test]
fn one_replica_writes_status_and_another_takes_over_when_it_dies() {
    let (dir, api, kubeconfig) = emulated_cluster();
    let port = free_port();
    api.apply(&listener_and_host(port));
    api.apply(&mapping_in("shop", "good", "/good/", loopback(1)));
    api.apply(&bad_mapping("abc"));
    api.apply("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: web\n  namespace: shop\n  annotations:\n    kubernetes.io/ingress.class: ambassador\nspec:\n  defaultBackend:\n    service:\n      name: web\n      port:\n        number: 80\n");
    // attache's own Service, with the address its load balancer got.
    api.apply("apiVersion: v1\nkind: Service\nmetadata:\n  name: attache\n  namespace: ambassador\nspec:\n  ports:\n  - port: 80\nstatus:\n  loadBalancer:\n    ingress:\n    - ip: 192.0.2.10\n      ipMode: VIP\n");
    let (a, a_admin) = status_replica(&kubeconfig, dir.path(), "replica-a");
    let (b, b_admin) = status_replica(&kubeconfig, dir.path(), "replica-b");
    let status = |kind: &str, ns: &str, name: &str| {
        let api_version = if kind == "Ingress" {
            "networking.k8s.io/v1"
        } else {
            "getambassador.io/v3alpha1"
        };
        api.object(api_version, kind, ns, name)
            .map(|o| o["status"].clone())
            .unwrap_or_default()
    };
    let accepted = |name: &str| {
        status("Mapping", "shop", name)["conditions"][0]["status"]
            .as_str()
            .map(str::to_string)
    };
    wait_for("statuses written", Duration::from_secs(30), || {
        (accepted("good").as_deref() == Some("True")
            && accepted("bad").as_deref() == Some("False")
            && status("Host", "ambassador", "any")["state"] == "Ready"
            && status("Ingress", "shop", "web")["loadBalancer"]["ingress"][0]["ip"] == "192.0.2.10")
            .then_some(())
    });
    let bad = status("Mapping", "shop", "bad");
    assert_eq!(bad["state"], "Inactive");
    let message = bad["conditions"][0]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("spec.timeout_ms:"), "{bad}");
    assert!(bad["conditions"][0]["lastTransitionTime"].is_string(), "{bad}");
    assert!(
        status("Ingress", "shop", "web")["loadBalancer"]["ingress"][0]
            .get("ipMode")
            .is_none(),
        "a Service's ipMode is not an Ingress field"
    );
    // One writer.
    let leader = |admin| metric(admin, "attache_status_leader ").unwrap_or(0);
    wait_for("one leader", Duration::from_secs(10), || {
        (leader(a_admin) + leader(b_admin) == 1).then_some(())
    });
    // Status writes are not changes to translate, and nothing is written twice.
    let counts = || {
        [a_admin, b_admin].map(|admin| {
            (
                metric(admin, "attache_translations_total ").unwrap_or(0),
                metric(admin, "attache_status_writes_total ").unwrap_or(0),
            )
        })
    };
    let before = counts();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(counts(), before, "(translations, status writes) of each replica");

    // The leader dies; the author fixes the Mapping; the other replica takes over and clears
    // the error.
    let (mut leader_proc, survivor) = if leader(a_admin) == 1 {
        (a, b_admin)
    } else {
        (b, a_admin)
    };
    let _ = leader_proc.child.kill();
    let _ = leader_proc.child.wait();
    api.apply(&bad_mapping("3000"));
    wait_for("the other replica to clear the error", Duration::from_secs(30), || {
        (accepted("bad").as_deref() == Some("True")).then_some(())
    });
    let fixed = status("Mapping", "shop", "bad");
    assert_eq!(fixed["state"], "Running", "{fixed}");
    assert!(fixed.get("reason").is_none(), "the error's reason is removed: {fixed}");
    assert_eq!(leader(survivor), 1);
    drop(leader_proc);
}

fn versioned_mapping(prefix: &str, timeout: &str) -> String {
    format!("apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: shop\n  namespace: shop\nspec:\n  hostname: \"*\"\n  prefix: {prefix}\n  service: shop:80\n  timeout_ms: {timeout}\n")
}

/// The snapshot version a replica serves, and whether its routes hold `prefix`.
fn served(admin: std::net::SocketAddr, prefix: &str) -> Option<(String, bool)> {
    let body = get(admin, "a", "/debug/snapshot").ok()?.body;
    let snapshot: serde_json::Value = serde_json::from_str(&body).ok()?;
    let version = snapshot["version"].as_str()?.to_string();
    Some((version, body.contains(&format!("\"prefix\":\"{prefix}\""))))
}

#[test]
fn replicas_share_the_last_valid_version_so_a_restarted_one_serves_the_same() {
    let (dir, api, kubeconfig) = emulated_cluster();
    api.apply(&listener_and_host(free_port()));
    api.apply(&versioned_mapping("/v1/", "3000"));
    let (_a, a_admin) = status_replica(&kubeconfig, dir.path(), "replica-a");
    let status = || {
        api.object("getambassador.io/v3alpha1", "Mapping", "shop", "shop")
            .map(|o| o["status"].clone())
            .unwrap_or_default()
    };
    wait_for("the first version served", Duration::from_secs(30), || {
        served(a_admin, "/v1/").filter(|(_, has)| *has)
    });
    wait_for("the Mapping accepted", Duration::from_secs(30), || {
        (status()["conditions"][0]["status"] == "True").then_some(())
    });

    // The author breaks it: the first version is still served, and kept in its status.
    api.apply(&versioned_mapping("/v2/", "abc"));
    wait_for("status.lastValid written", Duration::from_secs(30), || {
        (status()["lastValid"]["spec"]["prefix"] == "/v1/").then_some(())
    });
    let s = status();
    assert_eq!(s["conditions"][0]["status"], "False", "{s}");
    assert_eq!(s["conditions"][0]["reason"], "ServingLastValid", "{s}");
    assert_eq!(s["state"], "Running", "{s}");
    let (version_a, has_v1) = served(a_admin, "/v1/").unwrap();
    assert!(has_v1);
    assert!(!served(a_admin, "/v2/").unwrap().1);
    assert_eq!(metric(a_admin, "attache_last_known_good_objects ").unwrap_or(0), 1);
    let diagnostics = get(a_admin, "a", "/debug/diagnostics").unwrap().body;
    assert!(diagnostics.contains("lastgood.serving_previous"), "{diagnostics}");

    // A replica that starts now never saw the valid version: it reads it from the status and
    // serves exactly the same bytes.
    let (_b, b_admin) = status_replica(&kubeconfig, dir.path(), "replica-b");
    let (version_b, b_has_v1) = wait_for("the new replica's first snapshot", Duration::from_secs(30), || {
        served(b_admin, "/v1/")
    });
    assert!(b_has_v1, "the restarted replica serves the last valid version");
    assert_eq!(version_b, version_a, "replicas agree byte for byte");

    // Fixed: both serve the new version, and the stored one is removed.
    api.apply(&versioned_mapping("/v3/", "3000"));
    wait_for("both replicas serve the fix", Duration::from_secs(30), || {
        let a = served(a_admin, "/v3/").filter(|(_, has)| *has)?;
        let b = served(b_admin, "/v3/").filter(|(_, has)| *has)?;
        (a.0 == b.0).then_some(())
    });
    wait_for("status.lastValid removed", Duration::from_secs(30), || {
        status().get("lastValid").is_none().then_some(())
    });

    // Broken again, then deleted: gone from both.
    api.apply(&versioned_mapping("/v4/", "abc"));
    wait_for("the fix kept", Duration::from_secs(30), || {
        (status()["lastValid"]["spec"]["prefix"] == "/v3/").then_some(())
    });
    assert!(api.delete("getambassador.io/v3alpha1", "Mapping", "shop", "shop"));
    wait_for(
        "both replicas drop the deleted Mapping",
        Duration::from_secs(30),
        || {
            let a = served(a_admin, "/v3/").filter(|(_, has)| !*has)?;
            let b = served(b_admin, "/v3/").filter(|(_, has)| !*has)?;
            (a.0 == b.0).then_some(())
        },
    );
}
