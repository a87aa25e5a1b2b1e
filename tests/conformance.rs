//! Conformance with Emissary's own test data (`../shared/conformance/emissary/`, read at test
//! time, never copied here).
//!
//! `hostsem`: Emissary's expected output is a normalized view of its listeners: per listener port,
//! filter chains (SNI names, TLS or not), their virtual hosts and routes, each route a request
//! shape (scheme, host, path) and what Emissary does with it (route to a service, or redirect to
//! HTTPS). The comparison is by behaviour: for every route Emissary lists, the same request is
//! run through attache's configuration (chain by SNI, route table over RDS, virtual host by
//! Envoy's domain rules, first matching route) and must get the same action and service; and
//! every listener must have the same TLS chains. attache's route tables differ in shape (one route
//! where Emissary emits an `https` and an `implicit-http` twin with the same action) but not in
//! what a request gets. Emissary's built-in diagnostics routes (`/ambassador/v0/`) and its ready
//! listener (8006) are left out: attache serves those on its own admin port.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use attache::snapshot::ResourceType;
use serde_json::Value;

fn emissary_data(set: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/conformance/emissary")
        .join(set)
}

/// What attache serves, as JSON, with each cluster's upstream host.
struct Ours {
    listeners: BTreeMap<u64, Value>,
    routes: BTreeMap<String, Value>,
    cluster_host: BTreeMap<String, String>,
}

fn translate(input: &Path) -> Ours {
    let loaded = attache::source::dir::load(input);
    let t = attache::translate(
        &loaded,
        &attache::rules::Registry::core().unwrap(),
        &attache::Options::default(),
    );
    let errors: Vec<String> = t
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    assert!(errors.is_empty(), "{}: {errors:#?}", input.display());
    let listeners = attache::envoy::resources_json(&t.snapshot, ResourceType::Listener)
        .into_iter()
        .map(|l| (l["address"]["socketAddress"]["portValue"].as_u64().unwrap_or(0), l))
        .collect();
    let routes = attache::envoy::resources_json(&t.snapshot, ResourceType::Route)
        .into_iter()
        .map(|r| (r["name"].as_str().unwrap_or_default().to_string(), r))
        .collect();
    let cluster_host = t.ir.clusters.iter().map(|c| (c.name.clone(), c.host.clone())).collect();
    Ours {
        listeners,
        routes,
        cluster_host,
    }
}

/// A service name both sides can be compared on: Emissary's `cluster_quote_ambassador_default`
/// and attache's upstream host `quote.ambassador` both give `quote_ambassador`.
fn service_of_emissary_cluster(cluster: &str) -> String {
    cluster
        .trim()
        .trim_start_matches("cluster_")
        .trim_end_matches("_default")
        .to_string()
}

fn canonical_host(host: &str) -> String {
    host.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The filter chain a connection gets: by SNI when there is one (TLS), else the chain without a
/// match (cleartext).
fn chain<'a>(listener: &'a Value, sni: Option<&str>) -> Option<&'a Value> {
    let chains = listener["filterChains"].as_array()?;
    chains.iter().find(|c| {
        let m = &c["filterChainMatch"];
        match sni {
            Some(name) => {
                m["transportProtocol"] == "tls"
                    && m["serverNames"]
                        .as_array()
                        .is_none_or(|names| names.iter().any(|n| n == name))
            }
            None => m.is_null(),
        }
    })
}

/// Envoy's virtual host choice: exact domain, then the longest `*.suffix`, then the longest
/// `prefix*`, then `*`.
fn virtual_host<'a>(rc: &'a Value, host: &str) -> Option<&'a Value> {
    let vhosts = rc["virtualHosts"].as_array()?;
    let domains = |v: &'a Value| v["domains"].as_array().into_iter().flatten().filter_map(Value::as_str);
    if let Some(v) = vhosts.iter().find(|v| domains(v).any(|d| d.eq_ignore_ascii_case(host))) {
        return Some(v);
    }
    let best = |pick: &dyn Fn(&str) -> Option<usize>| {
        vhosts
            .iter()
            .filter_map(|v| domains(v).filter_map(pick).max().map(|n| (n, v)))
            .max_by_key(|(n, _)| *n)
            .map(|(_, v)| v)
    };
    best(&|d| {
        d.strip_prefix('*')
            .filter(|s| !s.is_empty() && host.ends_with(s) && host.len() > s.len())
            .map(str::len)
    })
    .or_else(|| {
        best(&|d| {
            d.strip_suffix('*')
                .filter(|p| !p.is_empty() && host.starts_with(p) && host.len() > p.len())
                .map(str::len)
        })
    })
    .or_else(|| vhosts.iter().find(|v| domains(v).any(|d| d == "*")))
}

fn header_matches(m: &Value, headers: &BTreeMap<&str, String>) -> bool {
    let value = m["name"].as_str().and_then(|n| headers.get(n));
    let matched = if m["presentMatch"].as_bool() == Some(true) {
        value.is_some()
    } else if let Some(s) = m.get("stringMatch") {
        value.is_some_and(|v| {
            s["exact"].as_str().is_none_or(|e| v == e)
                && s["prefix"].as_str().is_none_or(|p| v.starts_with(p))
                && s["suffix"].as_str().is_none_or(|x| v.ends_with(x))
        })
    } else {
        panic!("header matcher the conformance harness does not evaluate: {m}");
    };
    matched != (m["invertMatch"].as_bool() == Some(true))
}

/// What attache does with a request: `ROUTE <service>`, `REDIRECT HTTPS`, or why nothing.
fn outcome(ours: &Ours, port: u64, sni: Option<&str>, host: &str, path: &str, https: bool) -> String {
    let Some(listener) = ours.listeners.get(&port) else {
        return format!("no listener on {port}");
    };
    let Some(chain) = chain(listener, sni) else {
        return format!("no filter chain for SNI {sni:?}");
    };
    let rc_name = chain["filters"][0]["typedConfig"]["rds"]["routeConfigName"]
        .as_str()
        .unwrap_or_default();
    let Some(rc) = ours.routes.get(rc_name) else {
        return format!("no route table {rc_name}");
    };
    let Some(vh) = virtual_host(rc, host) else {
        return format!("no virtual host for {host}");
    };
    let headers: BTreeMap<&str, String> = [
        (":authority", host.to_string()),
        ("x-forwarded-proto", if https { "https" } else { "http" }.to_string()),
    ]
    .into_iter()
    .collect();
    let route = vh["routes"].as_array().into_iter().flatten().find(|r| {
        let m = &r["match"];
        m["prefix"].as_str().is_some_and(|p| path.starts_with(p))
            && m["headers"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|h| header_matches(h, &headers))
    });
    match route {
        None => "NO ROUTE".to_string(),
        Some(r) if r["redirect"]["httpsRedirect"].as_bool() == Some(true) => "REDIRECT HTTPS".to_string(),
        Some(r) => {
            let cluster = r["route"]["cluster"].as_str().unwrap_or_default();
            let host = ours.cluster_host.get(cluster).map_or(cluster, String::as_str);
            format!("ROUTE {}", canonical_host(host))
        }
    }
}

#[test]
fn hostsem_cases_route_every_request_as_emissary_does() {
    let dir = emissary_data("hostsem");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (the conformance data lives in ../shared)", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    cases.sort();
    assert_eq!(cases.len(), 5, "hostsem cases in {}", dir.display());
    let mut failures = Vec::new();
    let mut checked = 0;
    for input in &cases {
        let name = input.file_stem().unwrap().to_string_lossy().to_string();
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}-expected.json"))).unwrap()).unwrap();
        let ours = translate(input);
        for l in expected.as_array().unwrap() {
            let port = l["port"].as_u64().unwrap();
            if port == 8006 {
                continue; // Emissary's ready listener
            }
            // The same TLS chains (SNI names) on the listener.
            let theirs: BTreeSet<Vec<String>> = l["chains"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["transport_protocol"] == "tls")
                .map(|c| serde_json::from_value(c["server_names"].clone()).unwrap_or_default())
                .collect();
            let mine: BTreeSet<Vec<String>> = ours
                .listeners
                .get(&port)
                .and_then(|x| x["filterChains"].as_array())
                .into_iter()
                .flatten()
                .filter(|c| c["filterChainMatch"]["transportProtocol"] == "tls")
                .map(|c| serde_json::from_value(c["filterChainMatch"]["serverNames"].clone()).unwrap_or_default())
                .collect();
            if theirs != mine {
                failures.push(format!("{name} port {port}: TLS chains {mine:?}, Emissary {theirs:?}"));
            }
            for c in l["chains"].as_array().unwrap() {
                let sni = (c["transport_protocol"] == "tls")
                    .then(|| c["server_names"][0].as_str())
                    .flatten();
                for v in c["vhosts"].as_array().unwrap() {
                    for r in v["routes"].as_array().unwrap() {
                        let path = r["path"].as_str().unwrap();
                        if path.starts_with("/ambassador/v0/") {
                            continue;
                        }
                        assert_eq!(
                            r["authority"], "",
                            "{name}: authority matches are not in this harness yet"
                        );
                        let host = match r["host"].as_str().unwrap() {
                            "*" => "any.example.org",
                            h => h,
                        };
                        let https = r["scheme"] == "https";
                        let want = match r["action"].as_str().unwrap() {
                            "ROUTE" => format!(
                                "ROUTE {}",
                                service_of_emissary_cluster(r["action_arg"].as_str().unwrap())
                            ),
                            other => format!("{other}{}", r["action_arg"].as_str().unwrap()),
                        };
                        let got = outcome(&ours, port, sni, host, path, https);
                        checked += 1;
                        if got != want {
                            failures.push(format!(
                                "{name} port {port} SNI {sni:?} {} {host}{path}: attache {got}, Emissary {want}",
                                r["scheme"].as_str().unwrap()
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(checked >= 40, "only {checked} requests compared");
    assert!(
        failures.is_empty(),
        "{} of {checked} differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
