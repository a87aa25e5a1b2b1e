//! The Kubernetes source against the in-process API server emulation (`support::apiserver`),
//! through the real kube-rs client over HTTP: initial sync, the same snapshot as the directory
//! source, re-lists that never yield a partial view, referenced Secrets only, scoping, and a
//! kind whose CRD is missing.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use attache::snapshot::ResourceType;
use attache::source::kube::{Metrics, Options, Refs};
use attache::source::Loaded;
use support::apiserver::ApiServer;
use support::{fixture_file, tls_secret};
use tokio::sync::mpsc;

/// A configuration touching every kind the source reads: both Listeners, a TLS Host with its
/// Secret, a TLSContext, Mappings in v3alpha1 and v2 and in two namespaces, an annotated
/// Service, a Module, an AuthService, a TCPMapping, and a Mapping resolved through a Service's
/// EndpointSlice.
fn manifests() -> String {
    let objects = [
        "apiVersion: getambassador.io/v3alpha1\nkind: Listener\nmetadata:\n  name: http\n  namespace: ambassador\nspec:\n  port: 8080\n  protocol: HTTP\n  securityModel: XFP\n  hostBinding:\n    namespace:\n      from: ALL\n",
        "apiVersion: getambassador.io/v3alpha1\nkind: Listener\nmetadata:\n  name: https\n  namespace: ambassador\nspec:\n  port: 8443\n  protocol: HTTPS\n  securityModel: XFP\n  hostBinding:\n    namespace:\n      from: ALL\n",
        "apiVersion: getambassador.io/v3alpha1\nkind: Host\nmetadata:\n  name: h1\n  namespace: ambassador\nspec:\n  hostname: h1.example.com\n  tlsSecret:\n    name: h1-cert\n",
        &tls_secret("ambassador", "h1-cert", "h1.crt", "h1.key"),
        "apiVersion: getambassador.io/v3alpha1\nkind: TLSContext\nmetadata:\n  name: h2-context\n  namespace: ambassador\nspec:\n  hosts: [h2.example.com]\n  secret: h2-cert\n  min_tls_version: v1.2\n",
        "apiVersion: getambassador.io/v3alpha1\nkind: Host\nmetadata:\n  name: h2\n  namespace: ambassador\nspec:\n  hostname: h2.example.com\n  tlsContext:\n    name: h2-context\n",
        &tls_secret("ambassador", "h2-cert", "h2.crt", "h2.key"),
        "apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: a\n  namespace: default\n  labels:\n    team: a\nspec:\n  hostname: \"*\"\n  prefix: /a/\n  service: a:8080\n  timeout_ms: 3000\n",
        "apiVersion: getambassador.io/v2\nkind: Mapping\nmetadata:\n  name: legacy\n  namespace: shop\nspec:\n  hostname: \"*\"\n  prefix: /legacy/\n  service: legacy.shop:80\n  host: h1.example.com\n  use_websocket: true\n",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: annotated\n  namespace: shop\n  annotations:\n    getambassador.io/config: |\n      apiVersion: getambassador.io/v3alpha1\n      kind: Mapping\n      name: from-annotation\n      prefix: /annotated/\n      service: annotated.shop:80\n      hostname: \"*\"\nspec:\n  ports:\n  - port: 80\n",
        "apiVersion: getambassador.io/v3alpha1\nkind: Module\nmetadata:\n  name: ambassador\n  namespace: ambassador\nspec:\n  config:\n    server_name: attache-test\n",
        "apiVersion: getambassador.io/v3alpha1\nkind: AuthService\nmetadata:\n  name: auth\n  namespace: ambassador\nspec:\n  auth_service: auth.ambassador:3000\n  proto: http\n",
        "apiVersion: getambassador.io/v3alpha1\nkind: TCPMapping\nmetadata:\n  name: db\n  namespace: shop\nspec:\n  port: 5432\n  service: db.shop:5432\n",
        "apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: quote\n  namespace: shop\nspec:\n  hostname: \"*\"\n  prefix: /quote/\n  service: quote:80\n  resolver: kubernetes-endpoint\n",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: quote\n  namespace: shop\nspec:\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n",
        &endpoint_slice("quote-1", "10.1.0.5"),
        // An Ingress of attache's class, with a backend port by name: its Service is read only
        // because the Ingress names it.
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: ambassador\nspec:\n  controller: getambassador.io/ingress-controller\n",
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: catalog\n  namespace: shop\nspec:\n  ingressClassName: ambassador\n  rules:\n  - host: h1.example.com\n    http:\n      paths:\n      - path: /catalog\n        pathType: Prefix\n        backend:\n          service:\n            name: catalog\n            port:\n              name: web\n",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: catalog\n  namespace: shop\nspec:\n  ports:\n  - name: web\n    port: 8000\n",
    ];
    objects.join("---\n")
}

fn endpoint_slice(name: &str, address: &str) -> String {
    format!("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}\n  namespace: shop\n  labels:\n    kubernetes.io/service-name: quote\naddressType: IPv4\nports:\n- name: http\n  port: 8080\nendpoints:\n- addresses: [\"{address}\"]\n")
}

fn client(server: &ApiServer) -> kube::Client {
    let config = kube::Config::new(server.url().parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

fn refs() -> Refs {
    let options = attache::Options::default();
    Arc::new(move |objects| attache::resource::references(objects, &options.parse))
}

fn options() -> Options {
    Options {
        namespace: None,
        label_selector: None,
        debounce: Duration::from_millis(50),
    }
}

fn start(server: &ApiServer, options: Options) -> (mpsc::Receiver<Loaded>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::default());
    let rx = attache::source::kube::watch(client(server), options, refs(), Arc::clone(&metrics));
    (rx, metrics)
}

async fn next(rx: &mut mpsc::Receiver<Loaded>, what: &str) -> Loaded {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no object set within 20 s: {what}"))
        .expect("the source stopped")
}

/// Polls `done` every 20 ms for at most 20 s.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out after 20 s: {what}"));
}

/// No set arrives within `millis`.
async fn assert_quiet(rx: &mut mpsc::Receiver<Loaded>, millis: u64, what: &str) {
    assert!(
        tokio::time::timeout(Duration::from_millis(millis), rx.recv())
            .await
            .is_err(),
        "{what}"
    );
}

/// The object named `name` in a set.
fn object<'a>(loaded: &'a Loaded, name: &str) -> &'a attache::source::RawObject {
    loaded
        .objects
        .iter()
        .find(|o| {
            o.root
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(|n| n.as_str())
                == Some(name)
        })
        .unwrap_or_else(|| panic!("no object named {name}"))
}

/// `Kind namespace/name` of every object in a set.
fn names(loaded: &Loaded) -> BTreeSet<String> {
    loaded
        .objects
        .iter()
        .map(|o| {
            let s = |n: Option<&attache::source::yaml::Node>| n.and_then(|n| n.as_str()).unwrap_or("").to_string();
            let meta = o.root.get("metadata");
            format!(
                "{} {}/{}",
                s(o.root.get("kind")),
                s(meta.and_then(|m| m.get("namespace"))),
                s(meta.and_then(|m| m.get("name")))
            )
        })
        .collect()
}

fn translate(loaded: &Loaded) -> attache::Translation {
    let registry = attache::rules::Registry::core().unwrap();
    attache::translate(loaded, &registry, &attache::Options::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_manifests_give_the_same_snapshot_as_the_directory_source() {
    let server = ApiServer::start();
    server.apply(&manifests());
    let (mut rx, metrics) = start(&server, options());
    let from_kube = next(&mut rx, "initial sync").await;

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("all.yaml"), manifests()).unwrap();
    let from_dir = attache::source::dir::load(dir.path());
    assert_eq!(names(&from_kube), names(&from_dir));

    let (k, d) = (translate(&from_kube), translate(&from_dir));
    for ty in ResourceType::ALL {
        assert_eq!(
            attache::envoy::resources_json_with_keys(&k.snapshot, ty),
            attache::envoy::resources_json_with_keys(&d.snapshot, ty),
            "{ty:?} differ between the Kubernetes and directory sources"
        );
    }
    assert_eq!(k.snapshot.version(), d.snapshot.version());
    assert!(
        k.snapshot.count(ResourceType::Secret) >= 2,
        "both certificates were read"
    );
    let codes = |t: &attache::Translation| t.diagnostics.iter().map(|d| d.code.clone()).collect::<Vec<_>>();
    assert_eq!(codes(&k), codes(&d));
    // The v2 Mapping is read as v2 again (the API serves it as v3alpha1).
    let legacy = object(&from_kube, "legacy");
    assert_eq!(
        legacy.root.get("apiVersion").and_then(|v| v.as_str()),
        Some("getambassador.io/v2")
    );
    assert_eq!(
        metrics.watches_synced.load(Ordering::Relaxed),
        metrics.watches.load(Ordering::Relaxed)
    );
    // 10 kinds + Services + EndpointSlices + Ingresses + IngressClasses + the two referenced
    // Secrets.
    assert_eq!(metrics.watches.load(Ordering::Relaxed), 18);
    // The Ingress's route reached the snapshot, its named port resolved.
    let routes = attache::envoy::resources_json(&k.snapshot, ResourceType::Route);
    assert!(
        routes.iter().any(|r| r.to_string().contains("shop/catalog-0-0")),
        "{routes:?}"
    );
    assert!(
        attache::envoy::resources_json(&k.snapshot, ResourceType::Cluster)
            .iter()
            .any(|c| c.to_string().contains("\"portValue\":8000")),
        "the named port resolved to the Service's port"
    );
    assert!(
        attache::envoy::resources_json(&k.snapshot, ResourceType::Endpoint)
            .iter()
            .any(|e| e.to_string().contains("10.1.0.5")),
        "the EndpointSlice's address is an endpoint"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_arrive_coalesced_and_a_relist_never_yields_a_partial_view() {
    let server = ApiServer::start();
    server.apply(&manifests());
    let (mut rx, metrics) = start(&server, options());
    let first = next(&mut rx, "initial sync").await;
    let all = names(&first);

    // A burst of changes is one set.
    for i in 0..20 {
        server.apply(&format!(
            "apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: burst-{i}\n  namespace: default\nspec:\n  hostname: \"*\"\n  prefix: /b{i}/\n  service: b\n"
        ));
    }
    let mut burst = next(&mut rx, "the burst").await;
    // A slow machine may split it; never more than a few sets.
    let mut sets = 1;
    while names(&burst).iter().filter(|n| n.contains("burst-")).count() < 20 {
        burst = next(&mut rx, "the rest of the burst").await;
        sets += 1;
        assert!(sets <= 5, "20 changes in a burst gave {sets}+ sets");
    }

    // Deletion.
    assert!(server.delete("getambassador.io/v3alpha1", "Mapping", "default", "burst-0"));
    let after_delete = next(&mut rx, "the deletion").await;
    assert!(!names(&after_delete).contains("Mapping default/burst-0"));
    let expected = names(&after_delete);
    assert!(expected.is_superset(&all));

    // Watches expire (410) and drop; meanwhile one Mapping changes. Every set yielded from now on
    // holds every object: the re-list is swapped in complete.
    server.apply_unseen("apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: burst-1\n  namespace: default\nspec:\n  hostname: \"*\"\n  prefix: /changed/\n  service: b\n");
    server.compact();
    server.drop_watches();
    let relisted = next(&mut rx, "the re-list").await;
    assert_eq!(
        names(&relisted),
        expected,
        "a set after a re-list lacks or adds objects"
    );
    let changed = object(&relisted, "burst-1");
    assert_eq!(
        changed
            .root
            .get("spec")
            .and_then(|s| s.get("prefix"))
            .and_then(|p| p.as_str()),
        Some("/changed/")
    );
    assert!(metrics.relists.load(Ordering::Relaxed) >= 1, "the watches re-listed");
    assert!(server
        .requests()
        .iter()
        .any(|r| r.contains("mappings?") && !r.contains("watch=")));

    // A re-list that finds nothing new yields nothing.
    server.compact();
    server.drop_watches();
    let relists = metrics.relists.load(Ordering::Relaxed);
    // Some watches may still be listing or backing off from the first expiry; whichever re-list
    // happens now or later, none may yield a set (checked below, and again after the bookmark).
    until("the watches re-listed", || {
        metrics.relists.load(Ordering::Relaxed) > relists
    })
    .await;
    assert_quiet(&mut rx, 500, "an unchanged re-list yielded a set").await;

    // Bookmarks move the watches' versions on; they are not changes.
    server.bookmark();
    assert_quiet(&mut rx, 300, "a bookmark yielded a set").await;

    // An outage: errors are counted, the last view stays, and the source recovers.
    let errors = metrics.errors.load(Ordering::Relaxed);
    server.set_outage(true);
    until("API errors are counted", || {
        metrics.errors.load(Ordering::Relaxed) != errors
    })
    .await;
    server.set_outage(false);
    server.apply("apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: after-outage\n  namespace: default\nspec:\n  hostname: \"*\"\n  prefix: /after/\n  service: b\n");
    let mut recovered = next(&mut rx, "recovery after the outage").await;
    while !names(&recovered).contains("Mapping default/after-outage") {
        recovered = next(&mut rx, "the Mapping written after the outage").await;
    }
    assert!(names(&recovered).is_superset(&expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_referenced_secrets_are_read_and_a_rotation_arrives() {
    let server = ApiServer::start();
    server.apply(&manifests());
    server.apply(&tls_secret("ambassador", "unrelated", "h2.crt", "h2.key"));
    let (mut rx, _) = start(&server, options());
    let first = next(&mut rx, "initial sync").await;
    let secrets: BTreeSet<String> = names(&first).into_iter().filter(|n| n.starts_with("Secret ")).collect();
    assert_eq!(
        secrets,
        BTreeSet::from([
            "Secret ambassador/h1-cert".to_string(),
            "Secret ambassador/h2-cert".to_string()
        ])
    );
    // Never a list or watch of every Secret.
    for r in server.requests().iter().filter(|r| r.contains("/secrets")) {
        assert!(
            r.contains("fieldSelector=metadata.name"),
            "unscoped Secret request: {r}"
        );
    }

    // Rotation: the new certificate arrives.
    let before = translate(&first).snapshot.version();
    server.apply(&tls_secret("ambassador", "h1-cert", "h1-rotated.crt", "h1-rotated.key"));
    let rotated = next(&mut rx, "the rotated Secret").await;
    let t = translate(&rotated);
    assert_ne!(t.snapshot.version(), before);
    let rotated_pem = fixture_file("h1-rotated.crt");
    let secrets = attache::envoy::resources_json_with_keys(&t.snapshot, ResourceType::Secret);
    assert!(
        secrets
            .iter()
            .any(|s| s.to_string().contains(rotated_pem.lines().nth(1).unwrap())),
        "the rotated certificate is served"
    );

    // A Host that names a new Secret: the set comes with it.
    server.apply(&tls_secret("ambassador", "h3-cert", "h2.crt", "h2.key"));
    server.apply("apiVersion: getambassador.io/v3alpha1\nkind: Host\nmetadata:\n  name: h3\n  namespace: ambassador\nspec:\n  hostname: h3.example.com\n  tlsSecret:\n    name: h3-cert\n");
    let mut with_h3 = next(&mut rx, "the new Host").await;
    while !names(&with_h3).contains("Host ambassador/h3") {
        with_h3 = next(&mut rx, "the new Host").await;
    }
    assert!(
        names(&with_h3).contains("Secret ambassador/h3-cert"),
        "the Host arrived without its Secret"
    );
    assert!(!names(&with_h3).contains("Secret ambassador/unrelated"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_and_label_scoping() {
    let server = ApiServer::start();
    server.apply(&manifests());
    let (mut rx, _) = start(
        &server,
        Options {
            namespace: Some("shop".to_string()),
            ..options()
        },
    );
    let shop = names(&next(&mut rx, "namespace shop").await);
    assert!(!shop.is_empty());
    assert!(shop.iter().all(|n| n.contains(" shop/")), "{shop:?}");
    assert!(server
        .requests()
        .iter()
        .any(|r| r.contains("/namespaces/shop/mappings")));

    let (mut rx, _) = start(
        &server,
        Options {
            label_selector: Some("team=a".to_string()),
            ..options()
        },
    );
    let labelled = names(&next(&mut rx, "label team=a").await);
    assert_eq!(labelled, BTreeSet::from(["Mapping default/a".to_string()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambassador_id_is_applied_to_kubernetes_objects() {
    let server = ApiServer::start();
    server.apply(&manifests());
    server.apply("apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: other-id\n  namespace: default\nspec:\n  ambassador_id: [other]\n  hostname: \"*\"\n  prefix: /other/\n  service: other\n");
    let (mut rx, _) = start(&server, options());
    let loaded = next(&mut rx, "initial sync").await;
    let registry = attache::rules::Registry::core().unwrap();
    let routes = |id: &str| {
        let mut o = attache::Options::default();
        o.parse.ambassador_id = id.to_string();
        let t = attache::translate(&loaded, &registry, &o);
        serde_json::to_string(&attache::envoy::resources_json(&t.snapshot, ResourceType::Route)).unwrap()
    };
    assert!(!routes("default").contains("/other/"));
    assert!(routes("default").contains("/a/"));
    assert!(routes("other").contains("/other/"));
    let other = routes("other");
    assert!(!other.contains("\"/a/\""), "{other}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_without_its_crd_is_empty_and_said_so() {
    let server = ApiServer::start_without(&["tcpmappings"]);
    let manifests: String = manifests()
        .split("---\n")
        .filter(|d| !d.contains("kind: TCPMapping"))
        .collect::<Vec<_>>()
        .join("---\n");
    server.apply(&manifests);
    let (mut rx, metrics) = start(&server, options());
    let loaded = next(&mut rx, "initial sync without the TCPMapping CRD").await;
    assert!(names(&loaded).contains("Mapping default/a"));
    let missing: Vec<_> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.code == "source.crd_missing")
        .collect();
    assert_eq!(missing.len(), 1, "{:?}", loaded.diagnostics);
    assert!(missing[0].message.contains("tcpmappings"));
    assert!(metrics.errors.load(Ordering::Relaxed) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_slices_are_read_for_referenced_services_only() {
    let server = ApiServer::start();
    server.apply(&manifests());
    let (mut rx, _) = start(&server, options());
    let first = next(&mut rx, "initial sync").await;
    assert!(names(&first).contains("EndpointSlice shop/quote-1"));
    assert!(names(&first).contains("Service shop/quote"));

    // Pods behind a Service nothing uses: no set.
    server.apply(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: unused\n  namespace: shop\nspec:\n  ports:\n  - port: 80\n",
    );
    server.apply("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: unused-1\n  namespace: shop\n  labels:\n    kubernetes.io/service-name: unused\naddressType: IPv4\nports:\n- port: 80\nendpoints:\n- addresses: [\"10.9.9.9\"]\n");
    assert_quiet(&mut rx, 500, "an unused Service's endpoints caused a set").await;

    // A pod of the used Service moves: a set with the new address, and only EDS changes.
    let before = translate(&first);
    let mut translator = attache::Translator::new(
        Arc::new(attache::rules::Registry::core().unwrap()),
        attache::Options::default(),
    );
    translator.translate(&first);
    server.apply(&endpoint_slice("quote-1", "10.1.0.6"));
    let moved = next(&mut rx, "the moved pod").await;
    // The incremental translator renders the one changed node: the endpoints, no route.
    translator.translate(&moved);
    assert_eq!(
        translator.last_render_stats().1,
        1,
        "(reused, rendered) = {:?}",
        translator.last_render_stats()
    );
    assert!(!names(&moved).contains("EndpointSlice shop/unused-1"));
    let after = translate(&moved);
    for ty in ResourceType::ALL {
        let same =
            attache::envoy::resources_json(&before.snapshot, ty) == attache::envoy::resources_json(&after.snapshot, ty);
        assert_eq!(same, ty != ResourceType::Endpoint, "{ty:?}");
    }

    // A Mapping starts using the other Service: its endpoints come with it.
    server.apply("apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: unused\n  namespace: shop\nspec:\n  hostname: \"*\"\n  prefix: /unused/\n  service: unused:80\n  resolver: kubernetes-endpoint\n");
    let used = next(&mut rx, "the new Mapping").await;
    assert!(names(&used).contains("EndpointSlice shop/unused-1"));
    assert!(
        attache::envoy::resources_json(&translate(&used).snapshot, ResourceType::Endpoint)
            .iter()
            .any(|e| e.to_string().contains("10.9.9.9"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_in_many_pages_is_one_complete_set() {
    let server = ApiServer::start();
    server.apply(&manifests());
    // More than kube-runtime's page size (500): the list comes in three pages.
    let many: String = (0..1200)
        .map(|i| format!("apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: m{i}\n  namespace: default\nspec:\n  hostname: \"*\"\n  prefix: /m{i}/\n  service: m{i}\n"))
        .collect::<Vec<_>>()
        .join("---\n");
    server.apply(&many);
    let (mut rx, _) = start(&server, options());
    let loaded = next(&mut rx, "initial sync of 1,200 Mappings").await;
    let mappings = names(&loaded)
        .iter()
        .filter(|n| n.starts_with("Mapping default/m"))
        .count();
    assert_eq!(mappings, 1200);
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.contains("/mappings?") && r.contains("continue=")),
        "the list was paged"
    );
    // Re-listed after expiry, still in pages, still whole.
    server.compact();
    server.drop_watches();
    until("the re-list was paged too", || {
        server
            .requests()
            .iter()
            .filter(|r| r.contains("/mappings?") && r.contains("continue="))
            .count()
            >= 4
    })
    .await;
    assert_quiet(&mut rx, 500, "an unchanged paged re-list yielded a set").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_secret_holds_back_nothing_else() {
    let server = ApiServer::start();
    server.apply(&manifests());
    server.forbid(Some("/namespaces/locked/secrets"));
    server.apply("apiVersion: getambassador.io/v3alpha1\nkind: Host\nmetadata:\n  name: locked\n  namespace: ambassador\nspec:\n  hostname: locked.example.com\n  tlsSecret:\n    name: cert\n    namespace: locked\n");
    let (mut rx, metrics) = start(&server, options());
    let first = next(&mut rx, "initial sync with a forbidden Secret").await;
    assert!(names(&first).contains("Host ambassador/locked"));
    let unreadable: Vec<_> = first
        .diagnostics
        .iter()
        .filter(|d| d.code == "source.secret_unreadable")
        .collect();
    assert_eq!(unreadable.len(), 1, "{:?}", first.diagnostics);
    assert!(
        unreadable[0].message.contains("locked/cert") && unreadable[0].message.contains("403"),
        "{}",
        unreadable[0].message
    );
    assert!(metrics.errors.load(Ordering::Relaxed) >= 1);
    // Later changes still arrive.
    server.apply("apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: later\n  namespace: default\nspec:\n  hostname: \"*\"\n  prefix: /later/\n  service: later\n");
    let mut later = next(&mut rx, "a change after the forbidden Secret").await;
    while !names(&later).contains("Mapping default/later") {
        later = next(&mut rx, "the later Mapping").await;
    }
    // Access granted: the certificate arrives.
    server.apply(&tls_secret("locked", "cert", "h1.crt", "h1.key"));
    server.forbid(None);
    let mut granted = next(&mut rx, "the Secret once readable").await;
    while !names(&granted).contains("Secret locked/cert") {
        granted = next(&mut rx, "the Secret once readable").await;
    }
    assert!(granted.diagnostics.iter().all(|d| d.code != "source.secret_unreadable"));
}
