//! `deploy/`: the manifests parse as the Kubernetes types they claim to be (a typo in a field
//! name fails here, not at `kubectl apply`), `deploy/crds.yaml` is exactly `attache crds`, the
//! RBAC grants exactly what the Kubernetes source watches, the probes hit attache's admin
//! endpoints, and the Listeners are valid attache configuration.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Every document of a deploy file, as JSON.
fn documents(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(deploy().join(file)).unwrap();
    let (docs, errors) = attache::source::yaml::parse_stream(&text);
    assert!(errors.is_empty(), "{file}: {errors:?}");
    docs.into_iter().map(|d| d.root.to_json()).collect()
}

/// Parses as `T` and back: a field `T` does not have (a typo) is lost on the way and fails.
fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(file: &str, doc: &Value) -> T {
    let typed: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{file}: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    let mut diffs = Vec::new();
    diff("", doc, &back, &mut diffs);
    assert!(
        diffs.is_empty(),
        "{file}: fields the Kubernetes type does not have: {diffs:?}"
    );
    typed
}

/// Paths present in `a` but absent or different in `b` (`b` may add defaults).
fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                match y.get(k) {
                    Some(w) => diff(&format!("{path}.{k}"), v, w, out),
                    None => out.push(format!("{path}.{k}")),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                diff(&format!("{path}[{i}]"), v, w, out);
            }
        }
        _ if a == b => {}
        _ => out.push(path.to_string()),
    }
}

fn typed_check(file: &str, doc: &Value) {
    match doc["kind"].as_str().unwrap_or_default() {
        "Namespace" => drop(round_trip::<Namespace>(file, doc)),
        "ServiceAccount" => drop(round_trip::<ServiceAccount>(file, doc)),
        "ClusterRole" => drop(round_trip::<ClusterRole>(file, doc)),
        "ClusterRoleBinding" => drop(round_trip::<ClusterRoleBinding>(file, doc)),
        "Role" => drop(round_trip::<Role>(file, doc)),
        "RoleBinding" => drop(round_trip::<RoleBinding>(file, doc)),
        "Deployment" => drop(round_trip::<Deployment>(file, doc)),
        "Service" => drop(round_trip::<Service>(file, doc)),
        "NetworkPolicy" => drop(round_trip::<NetworkPolicy>(file, doc)),
        "CustomResourceDefinition" => drop(round_trip::<CustomResourceDefinition>(file, doc)),
        "Listener" => {}
        other => panic!("{file}: unexpected kind {other:?}"),
    }
}

#[test]
fn every_manifest_parses_as_its_kubernetes_type() {
    let mut files: Vec<String> = std::fs::read_dir(deploy())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    files.sort();
    assert!(files.len() >= 7, "{files:?}");
    for file in &files {
        let docs = documents(file);
        assert!(!docs.is_empty(), "{file} is empty");
        for doc in &docs {
            typed_check(file, doc);
        }
    }
    // The kustomization lists every file but the namespaced RBAC variant and the status writer's
    // RBAC (only with --write-status).
    let k = &documents("kustomization.yaml")[0];
    let listed: BTreeSet<&str> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let expected: BTreeSet<&str> = files
        .iter()
        .map(String::as_str)
        .filter(|f| *f != "rbac-namespaced.yaml" && *f != "rbac-status.yaml")
        .collect();
    assert_eq!(listed, expected);
    // The generated ConfigMaps (the Grafana dashboard) name files that exist and parse.
    for generator in k["configMapGenerator"].as_array().unwrap() {
        for file in generator["files"].as_array().unwrap() {
            let text = std::fs::read_to_string(deploy().join(file.as_str().unwrap())).unwrap();
            let _: Value = serde_json::from_str(&text).unwrap();
        }
    }
}

#[test]
fn crds_yaml_is_what_attache_crds_prints() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_attache"))
        .arg("crds")
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let file = std::fs::read_to_string(deploy().join("crds.yaml")).unwrap();
    assert!(
        printed == file,
        "deploy/crds.yaml is stale: run `cargo run -- crds > deploy/crds.yaml`"
    );
}

#[test]
fn crds_serve_v2_and_v3alpha1_store_v3alpha1_and_accept_any_spec() {
    let crds: Vec<CustomResourceDefinition> = documents("crds.yaml")
        .iter()
        .map(|d| serde_json::from_value(d.clone()).unwrap())
        .collect();
    let kinds: BTreeSet<String> = crds.iter().map(|c| c.spec.names.kind.clone()).collect();
    let watched: BTreeSet<String> = attache::source::kube::KINDS
        .iter()
        .map(|k| k.kind.to_string())
        .collect();
    assert_eq!(
        kinds, watched,
        "a CRD for every kind the Kubernetes source watches, and no other"
    );
    for crd in &crds {
        let name = crd.metadata.name.clone().unwrap();
        assert_eq!(crd.spec.group, "getambassador.io");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(name, format!("{}.getambassador.io", crd.spec.names.plural));
        let versions: Vec<(&str, bool, bool)> = crd
            .spec
            .versions
            .iter()
            .map(|v| (v.name.as_str(), v.served, v.storage))
            .collect();
        assert_eq!(versions, vec![("v3alpha1", true, true), ("v2", true, false)], "{name}");
        assert!(
            crd.spec.conversion.is_none(),
            "{name}: conversion strategy None (the default)"
        );
        for v in &crd.spec.versions {
            // Structural: typed root, typed `spec` that keeps unknown fields, `spec` optional.
            let schema = v.schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()).unwrap();
            assert_eq!(schema.type_.as_deref(), Some("object"), "{name}");
            assert!(
                schema.required.as_ref().is_none_or(|r| !r.iter().any(|f| f == "spec")),
                "{name}"
            );
            let spec = &schema.properties.as_ref().unwrap()["spec"];
            assert_eq!(spec.type_.as_deref(), Some("object"), "{name}");
            assert_eq!(spec.x_kubernetes_preserve_unknown_fields, Some(true), "{name}");
        }
    }
}

fn rules_of(file: &str, kind: &str) -> Vec<PolicyRule> {
    let doc = documents(file).into_iter().find(|d| d["kind"] == kind).unwrap();
    match kind {
        "ClusterRole" => serde_json::from_value::<ClusterRole>(doc).unwrap().rules.unwrap(),
        _ => serde_json::from_value::<Role>(doc).unwrap().rules.unwrap(),
    }
}

#[test]
fn rbac_grants_read_access_to_exactly_what_is_watched() {
    let mut expected: BTreeSet<(String, String)> = attache::source::kube::KINDS
        .iter()
        .map(|k| ("getambassador.io".to_string(), k.plural.to_string()))
        .collect();
    for (group, resource) in [
        ("", "services"),
        ("", "secrets"),
        ("discovery.k8s.io", "endpointslices"),
        ("networking.k8s.io", "ingresses"),
    ] {
        expected.insert((group.to_string(), resource.to_string()));
    }
    for (file, kind) in [("rbac.yaml", "ClusterRole"), ("rbac-namespaced.yaml", "Role")] {
        // IngressClasses are cluster-scoped: watched only when watching every namespace.
        let mut expected = expected.clone();
        if kind == "ClusterRole" {
            expected.insert(("networking.k8s.io".to_string(), "ingressclasses".to_string()));
        }
        let mut granted = BTreeSet::new();
        for rule in rules_of(file, kind) {
            let verbs: BTreeSet<&str> = rule.verbs.iter().map(String::as_str).collect();
            assert_eq!(verbs, BTreeSet::from(["get", "list", "watch"]), "{file}: read-only");
            for group in rule.api_groups.unwrap() {
                for resource in rule.resources.clone().unwrap() {
                    granted.insert((group.clone(), resource));
                }
            }
        }
        assert_eq!(granted, expected, "{file}");
    }
}

#[test]
fn the_deployment_probes_attache_admin_and_runs_the_kubernetes_source_with_envoy() {
    let doc = documents("deployment.yaml").remove(0);
    let d: Deployment = serde_json::from_value(doc).unwrap();
    let template = d.spec.unwrap().template;
    // A standard annotation-driven Prometheus scrapes attache's /metrics (with Envoy's stats).
    let annotations = template.metadata.unwrap().annotations.unwrap();
    for (key, value) in [
        ("prometheus.io/scrape", "true"),
        ("prometheus.io/port", "8877"),
        ("prometheus.io/path", "/metrics"),
    ] {
        assert_eq!(annotations.get(key).map(String::as_str), Some(value), "{key}");
    }
    let pod = template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("attache"));
    let c = &pod.containers[0];
    let args = c.args.clone().unwrap();
    for flag in ["serve", "--kubernetes", "--envoy", "--admin-listen=0.0.0.0:8877"] {
        assert!(args.iter().any(|a| a == flag), "{flag} in {args:?}");
    }
    let admin_port = c
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .find(|p| p.name.as_deref() == Some("admin"))
        .unwrap()
        .container_port;
    assert_eq!(admin_port, 8877);
    let path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone().unwrap()
    };
    assert_eq!(path(&c.readiness_probe), "/ready");
    assert_eq!(path(&c.liveness_probe), "/alive");
    assert!(c.resources.as_ref().unwrap().requests.is_some());
    // The service sends 80 and 443 to the ports the default Listeners open.
    let svc: Service = serde_json::from_value(documents("service.yaml").remove(0)).unwrap();
    let ports: Vec<(i32, String)> = svc
        .spec
        .unwrap()
        .ports
        .unwrap()
        .iter()
        .map(|p| (p.port, format!("{:?}", p.target_port.clone().unwrap())))
        .collect();
    assert_eq!(
        ports,
        vec![(80, "Int(8080)".to_string()), (443, "Int(8443)".to_string())]
    );
}

#[test]
fn the_default_listeners_are_valid_configuration() {
    let loaded = attache::source::dir::load(&deploy().join("listeners.yaml"));
    let registry = attache::rules::Registry::core().unwrap();
    let t = attache::translate(&loaded, &registry, &attache::Options::default());
    assert!(t.diagnostics.iter().all(|d| !d.is_error()), "{:?}", t.diagnostics);
    let ports: Vec<u64> = attache::envoy::resources_json(&t.snapshot, attache::snapshot::ResourceType::Listener)
        .iter()
        .filter_map(|l| l["address"]["socketAddress"]["portValue"].as_u64())
        .collect();
    assert_eq!(ports, vec![8080, 8443]);
}

#[test]
fn the_status_rbac_grants_exactly_what_the_status_writer_uses() {
    let mut patched = BTreeSet::new();
    for rule in rules_of("rbac-status.yaml", "ClusterRole") {
        let verbs: BTreeSet<&str> = rule.verbs.iter().map(String::as_str).collect();
        assert_eq!(verbs, BTreeSet::from(["get", "patch"]), "status subresources only");
        for group in rule.api_groups.unwrap() {
            for resource in rule.resources.clone().unwrap() {
                assert!(resource.ends_with("/status"), "{resource}: only status is written");
                patched.insert((group.clone(), resource));
            }
        }
    }
    // Every kind: any object may get `status.lastValid`.
    let mut expected: BTreeSet<(String, String)> = attache::source::kube::KINDS
        .iter()
        .map(|k| ("getambassador.io".to_string(), format!("{}/status", k.plural)))
        .collect();
    expected.insert(("networking.k8s.io".into(), "ingresses/status".into()));
    assert_eq!(patched, expected);
    let lease = rules_of("rbac-status.yaml", "Role");
    assert_eq!(lease.len(), 1);
    assert_eq!(lease[0].resources.as_deref(), Some(&["leases".to_string()][..]));
    let verbs: BTreeSet<&str> = lease[0].verbs.iter().map(String::as_str).collect();
    assert_eq!(verbs, BTreeSet::from(["create", "get", "update"]));
}

#[test]
fn the_network_policy_opens_the_traffic_ports_and_keeps_admin_to_prometheus() {
    let policy: NetworkPolicy = round_trip("networkpolicy.yaml", &documents("networkpolicy.yaml")[0]);
    let deployment: Deployment = round_trip("deployment.yaml", &documents("deployment.yaml")[0]);
    let spec = policy.spec.unwrap();
    let pod_labels = deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone();
    assert_eq!(
        spec.pod_selector.unwrap().match_labels,
        pod_labels,
        "selects the attache pods"
    );
    let container = &deployment.spec.unwrap().template.spec.unwrap().containers[0];
    let port_of = |name: &str| {
        container
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .unwrap()
            .container_port
    };
    let mut open = BTreeSet::new();
    let mut restricted = BTreeSet::new();
    for rule in spec.ingress.unwrap() {
        for p in rule.ports.unwrap_or_default() {
            let port = match p.port.unwrap() {
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => n,
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => port_of(&s),
            };
            if rule.from.as_ref().is_none_or(Vec::is_empty) {
                open.insert(port);
            } else {
                restricted.insert(port);
            }
        }
    }
    assert_eq!(open, BTreeSet::from([port_of("http"), port_of("https")]));
    assert_eq!(restricted, BTreeSet::from([port_of("admin")]));
}
