//! The command-line contract: exit codes, output formats, help text.

mod support;

use std::path::Path;
use std::process::Command;

use support::{attache, envoy_bin, write};

#[test]
fn validate_prints_located_diagnostics_and_fails_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("ns/mappings.yaml"),
        "apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: ok\nspec:\n  hostname: \"*\"\n  prefix: /ok/\n  service: ok\n---\napiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: slow\n  namespace: shop\nspec:\n  hostname: \"*\"\n  prefix: /slow/\n  service: slow\n  timeout_ms: \"notanumber\"\n",
    );
    let out = attache().arg("validate").arg(dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("ns/mappings.yaml:19:3: Mapping shop/slow: spec.timeout_ms: error[mapping.invalid_field]: `timeout_ms` must be a whole number (0 or more), got `notanumber`"),
        "{stdout}"
    );
    assert!(
        stdout.contains("hint: timeout_ms is a whole number of milliseconds"),
        "{stdout}"
    );
    assert!(stdout.contains("2 objects read: 1 error, "), "{stdout}");
    // The file as it opens from where attache was started: under the directory given.
    assert!(
        stdout.contains(&format!("{}/ns/mappings.yaml:19:3", dir.path().display())),
        "{stdout}"
    );

    write(&dir.path().join("ns/mappings.yaml"), "apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: ok\nspec:\n  hostname: \"*\"\n  prefix: /ok/\n  service: ok\n");
    let out = attache().arg("validate").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn translate_prints_yaml_or_json_by_type() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("m.yaml"), "apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: q\nspec:\n  hostname: \"*\"\n  prefix: /q/\n  service: quote\n");
    let out = attache()
        .args(["translate", "-o", "json"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["clusters"][0]["name"], "cluster_quote_80");
    assert_eq!(v["listeners"][0]["name"], "listener-8080");
    assert_eq!(v["routes"][0]["virtualHosts"][0]["routes"][0]["match"]["prefix"], "/q/");
    let out = attache()
        .arg("translate")
        .arg(dir.path().join("m.yaml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("clusters:\n"), "{text}");
    // Diagnostics go to stderr, not into the resources.
    assert!(String::from_utf8_lossy(&out.stderr).contains("listener.default"));
}

#[test]
fn ads_bootstrap_is_accepted_by_envoy() {
    let dir = tempfile::tempdir().unwrap();
    let out = attache()
        .args(["bootstrap", "--ads", "127.0.0.1:18000", "--node-id", "n1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("id: n1") && text.contains("attache_ads"), "{text}");
    // A limit on downstream connections by default (Envoy warns at start without one).
    assert!(text.contains("max_active_downstream_connections: 50000"), "{text}");
    let unlimited = attache()
        .args(["bootstrap", "--max-connections", "0"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&unlimited.stdout).contains("overload_manager"));
    let path = dir.path().join("b.yaml");
    std::fs::write(&path, &text).unwrap();
    let v = Command::new(envoy_bin())
        .args(["--mode", "validate", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        v.status.success(),
        "{}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    // With --log-format json, Envoy's own log lines are JSON objects too.
    let out = attache()
        .args(["--log-format", "json", "bootstrap", "--ads", "127.0.0.1:18000"])
        .output()
        .unwrap();
    std::fs::write(&path, &out.stdout).unwrap();
    let v = Command::new(envoy_bin())
        .args(["--mode", "validate", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&v.stderr).to_string() + &String::from_utf8_lossy(&v.stdout);
    assert!(v.status.success(), "{log}");
    let json_line = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["target"].as_str().is_some_and(|t| t.starts_with("envoy::")));
    assert!(json_line.is_some_and(|l| l["message"].is_string()), "{log}");
    let out = attache().args(["bootstrap", "--ads", "nonsense"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HOST:PORT"));
}

#[test]
fn a_bad_rule_pack_stops_attache_with_the_rule_named() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("pack/pack.yaml"), "name: broken\nrules:\n  - id: x.route\n    kind: route\n    emits: envoy.config.route.v3.Route\n    template: route.yaml.hbs\n");
    write(&dir.path().join("pack/route.yaml.hbs"), "name: {{json name}\n");
    write(&dir.path().join("config/m.yaml"), "");
    let out = attache()
        .arg("translate")
        .arg("--rules")
        .arg(dir.path().join("pack"))
        .arg(dir.path().join("config"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("route.yaml.hbs") && err.contains("rule pack"), "{err}");
}

#[test]
fn help_explains_every_subcommand() {
    let out = attache().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["translate", "validate", "bootstrap", "serve", "crds"] {
        assert!(text.contains(sub), "{text}");
    }
    let out = attache().args(["serve", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config-dir",
        "--ads-listen",
        "--admin-listen",
        "--envoy",
        "--rules",
        "--debounce-ms",
        "--kubernetes",
        "--single-namespace",
        "--label-selector",
        "AMBASSADOR_SINGLE_NAMESPACE",
        "--log-format",
        "ATTACHE_LOG_FORMAT",
    ] {
        assert!(text.contains(flag), "{flag} missing from serve --help:\n{text}");
    }
}

#[test]
fn serve_needs_exactly_one_source() {
    let out = attache().arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("give --config-dir DIR or --kubernetes"), "{err}");
    let out = attache()
        .args(["serve", "--config-dir", ".", "--kubernetes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
}

#[test]
fn serve_without_a_kubernetes_configuration_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = attache()
        .args([
            "serve",
            "--kubernetes",
            "--ads-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env("KUBECONFIG", dir.path().join("missing"))
        .env("HOME", dir.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no Kubernetes configuration") && err.contains("KUBECONFIG"),
        "{err}"
    );
}

#[test]
fn serve_refuses_a_missing_directory_clearly() {
    let out = attache()
        .args([
            "serve",
            "--config-dir",
            "/nonexistent/attache",
            "--ads-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a directory"));
}

#[test]
fn a_missing_path_is_an_error_not_an_empty_config() {
    for sub in ["translate", "validate"] {
        let out = attache().args([sub, "/nonexistent/attache-config"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{sub}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no such file or directory"),
            "{sub}"
        );
    }
}

#[test]
fn help_says_what_attache_reads_with_examples() {
    let out = attache().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for word in [
        "Ingress",
        "annotations",
        "Kubernetes",
        "Examples:",
        "attache serve --config-dir",
    ] {
        assert!(text.contains(word), "{word} missing from --help:\n{text}");
    }
}

#[test]
fn misspelled_fields_and_kinds_get_a_did_you_mean() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("typos.yaml"),
        "apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: a\nspec:\n  hostname: \"*\"\n  prefx: /a/\n  prefix: /a/\n  service: a\n  timeout: 30\n---\napiVersion: getambassador.io/v3alpha1\nkind: Mappng\nmetadata:\n  name: b\nspec:\n  prefix: /b/\n  service: b\n",
    );
    let out = attache().arg("validate").arg(dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "typos.yaml:7:3: Mapping default/a: spec.prefx: warning[mapping.unknown_field]: unknown field `prefx` (did you mean `prefix`?); ignored",
        "spec.timeout: warning[mapping.unknown_field]: unknown field `timeout` (did you mean `timeout_ms`?)",
        "typos.yaml:12:1: Mappng default/b: kind: warning[resource.unknown_kind]: unknown kind `Mappng` (did you mean `Mapping`?); ignored",
    ] {
        assert!(stdout.contains(expected), "missing `{expected}` in:\n{stdout}");
    }
}

#[test]
fn yaml_slips_are_explained_at_the_line_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let mapping = |name: &str, spec: &str| {
        format!("apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: {name}\nspec:\n{spec}")
    };
    write(
        &dir.path().join("tab.yaml"),
        &mapping("tab", "\tprefix: /a/\n  service: a\n"),
    );
    write(
        &dir.path().join("colon.yaml"),
        &mapping("colon", "  prefix /a/\n  service: a\n"),
    );
    write(
        &dir.path().join("indent.yaml"),
        &mapping("indent", "  prefix: /a/\n   service: a\n"),
    );
    write(
        &dir.path().join("dedent.yaml"),
        &mapping("dedent", "    prefix: /a/\n  service: a\n"),
    );
    write(
        &dir.path().join("outdent.yaml"),
        &mapping("outdent", "  hostname: \"*\"\n  prefix: /a/\nservice: a\n"),
    );
    // Both required fields slipped out of `spec`: both are named, not one per edit.
    write(
        &dir.path().join("both.yaml"),
        &format!(
            "{}---\napiVersion: getambassador.io/v3alpha1\nkind: Listener\nmetadata:\n  name: l\nspec:\n  hostBinding: {{}}\n",
            mapping("both", "  hostname: \"*\"\nprefix: /a/\nservice: a\n")
        ),
    );
    let out = attache().arg("validate").arg(dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "tab.yaml:6:2: error[yaml.syntax]: YAML syntax error: a tab in the indentation",
        "colon.yaml:6:3: error[yaml.syntax]: YAML syntax error: a key without `:`",
        "indent.yaml:7:11: error[yaml.syntax]: YAML syntax error: this line is indented more than the key above",
        "dedent.yaml:7:3: error[yaml.syntax]: YAML syntax error: this line is not indented like the keys around it",
        "outdent.yaml:8:1: Mapping default/outdent: service: warning[mapping.misplaced_field]: `service` is at the top of the object, not under `spec:`",
        "both.yaml:5:1: Mapping default/both: spec.prefix: error[mapping.missing_prefix]",
        "both.yaml:5:1: Mapping default/both: spec.service: error[mapping.missing_service]",
        "both.yaml:7:1: Mapping default/both: prefix: warning[mapping.misplaced_field]",
        "Listener default/l: spec: error[listener.missing_port]",
        "Listener default/l: spec: error[listener.missing_protocol]",
        "Listener default/l: spec: error[listener.missing_security_model]",
    ] {
        assert!(stdout.contains(expected), "missing `{expected}` in:\n{stdout}");
    }
}

#[test]
fn validate_with_envoy_reports_what_envoy_refuses_on_its_object() {
    let dir = tempfile::tempdir().unwrap();
    // An operator pack that makes a cluster STATIC: fine for attache's schema, refused by Envoy
    // for a DNS name.
    write(
        &dir.path().join("pack/pack.yaml"),
        "name: force-static\nrules:\n  - id: force_static.cluster\n    kind: cluster\n    patch: true\n    when: host == \"bad.invalid\"\n    emits: envoy.config.cluster.v3.Cluster\n    template: cluster/static.yaml.hbs\n",
    );
    write(&dir.path().join("pack/cluster/static.yaml.hbs"), "type: STATIC\n");
    write(
        &dir.path().join("config/bad.yaml"),
        "apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: bad\nspec:\n  hostname: \"*\"\n  prefix: /bad/\n  service: bad.invalid\n",
    );
    let run = |envoy: Option<String>| {
        let mut cmd = attache();
        cmd.arg("validate").arg("--rules").arg(dir.path().join("pack"));
        cmd.args(envoy);
        cmd.arg(dir.path().join("config")).output().unwrap()
    };
    // attache alone finds nothing wrong; Envoy does, and it is put on the Mapping's line.
    assert_eq!(run(None).status.code(), Some(0));
    // `--envoy` alone finds Envoy itself and leaves the directory to be the path.
    let found = run(Some("--envoy".into()));
    assert_eq!(
        found.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&found.stderr)
    );
    let out = run(Some(format!("--envoy={}", envoy_bin().display())));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("bad.yaml:1:1: Mapping default/bad: error[envoy.rejected]: Envoy's own check (envoy --mode validate) refuses the configuration:"),
        "{stdout}"
    );
}

fn examples_pack(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/packs")
        .join(name)
}

#[test]
fn the_example_packs_pass_their_fixtures() {
    for pack in [
        "security-headers",
        "lua-filter",
        "json-access-log",
        "namespace-retries",
        "platform-defaults",
    ] {
        let out = attache()
            .args(["rules", "test"])
            .arg(examples_pack(pack))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{pack}:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(" 0 failed"), "{pack}: {stdout}");
        assert!(!stdout.contains("written"), "{pack}: every case has its expected.yaml");
    }
}

#[test]
fn rules_test_shows_what_differs_and_update_rewrites() {
    let dir = tempfile::tempdir().unwrap();
    let pack = dir.path().join("pack");
    // A copy of an example pack, with its fixture's expectation made wrong.
    let source = examples_pack("security-headers");
    for file in ["pack.yaml", "route/headers.yaml.hbs", "tests/every-route/input.yaml"] {
        write(&pack.join(file), &std::fs::read_to_string(source.join(file)).unwrap());
    }
    let expected = std::fs::read_to_string(source.join("tests/every-route/expected.yaml")).unwrap();
    write(
        &pack.join("tests/every-route/expected.yaml"),
        &expected.replace("value: nosniff", "value: sniff-away"),
    );
    let out = attache().args(["rules", "test"]).arg(&pack).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAILED  every-route"), "{stdout}");
    assert!(
        stdout.contains("-                value: sniff-away") || stdout.contains("-") && stdout.contains("sniff-away"),
        "{stdout}"
    );
    assert!(stdout.contains("+") && stdout.contains("nosniff"), "{stdout}");
    let out = attache()
        .args(["rules", "test", "--update"])
        .arg(&pack)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("written"));
    let out = attache().args(["rules", "test"]).arg(&pack).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    // A pack that does not load is exit 2, naming the pack.
    write(&pack.join("pack.yaml"), "name: broken\nrules:\n  - id: x\n");
    let out = attache().args(["rules", "test"]).arg(&pack).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loading the pack under test"));
}

#[test]
fn translate_diff_shows_what_a_pack_changes() {
    let input = examples_pack("namespace-retries").join("tests/payments-only/input.yaml");
    let out = attache()
        .arg("translate")
        .arg(&input)
        .arg("--diff")
        .arg("--rules")
        .arg(examples_pack("namespace-retries"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.starts_with("--- built-in pack\n+++ with "), "{stdout}");
    assert!(
        stdout.contains("+                numRetries: 2") || stdout.contains("numRetries: 2"),
        "{stdout}"
    );
    assert!(stdout.contains("-") && stdout.contains("timeout: 3s"), "{stdout}");
    // Only the payments route changed: the blog route's lines are not in the diff.
    assert!(
        !stdout.contains("web/blog") || stdout.matches("retryPolicy").count() == 1,
        "{stdout}"
    );
    let out = attache().arg("translate").arg(&input).arg("--diff").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn envoy_override_is_merged_into_the_routes_only_when_the_operator_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    let mapping = |name: &str, prefix: &str, over: &str| {
        format!("apiVersion: getambassador.io/v2\nkind: Mapping\nmetadata:\n  name: {name}\nspec:\n  prefix: {prefix}\n  service: svc\n  envoy_override:\n{over}")
    };
    write(
        &dir.path().join("m.yaml"),
        &format!(
            "{}---\n{}",
            mapping(
                "over",
                "/over/",
                "    route:\n      idle_timeout: 42s\n    decorator:\n      operation: checkout\n"
            ),
            mapping("bad", "/bad/", "    route:\n      idle_timeout: -5s\n"),
        ),
    );
    // Off: a warning, nothing merged.
    let out = attache().arg("translate").arg(dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stdout.contains("42s") && !stdout.contains("checkout"), "{stdout}");
    assert!(stderr.contains("warning[mapping.envoy_override_disabled]"), "{stderr}");
    // On: merged, and a bad override is an error on its Mapping while the route is sent without it.
    let out = attache()
        .args(["translate", "--allow-envoy-override"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("idleTimeout: 42s") && stdout.contains("operation: checkout"),
        "{stdout}"
    );
    assert!(stdout.contains("prefix: /bad/"), "the route stays: {stdout}");
    assert!(
        stderr.contains("Mapping default/bad: spec.envoy_override: error[mapping.envoy_override_invalid]"),
        "{stderr}"
    );
    // And Envoy takes what is sent.
    let out = attache()
        .args(["validate", "--allow-envoy-override"])
        .arg(format!("--envoy={}", envoy_bin().display()))
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("envoy.rejected"), "{stdout}");
    assert!(stdout.contains("1 error"), "{stdout}");
}

#[test]
fn rules_schema_prints_the_context_of_a_kind() {
    let out = attache().args(["rules", "schema", "route"]).output().unwrap();
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let props = schema["properties"].as_object().unwrap();
    for field in ["name", "prefix", "timeout_ms", "retry_policy", "source", "rendered"] {
        assert!(props.contains_key(field), "{field}: {schema}");
    }
    let all: serde_json::Value =
        serde_json::from_slice(&attache().args(["rules", "schema"]).output().unwrap().stdout).unwrap();
    assert_eq!(all["version"], "v1");
    assert!(all["virtual_host"]["properties"]["rendered"]["properties"]["routes"].is_object());
    // As the table rules/README.md shows; an unknown kind is named with the ones there are.
    let md = attache()
        .args(["rules", "schema", "--markdown", "route"])
        .output()
        .unwrap();
    let md = String::from_utf8(md.stdout).unwrap();
    assert!(md.starts_with("### `route` → `envoy.config.route.v3.Route`"), "{md}");
    assert!(md.contains("| `timeout_ms` | integer | Upstream timeout"), "{md}");
    let bad = attache().args(["rules", "schema", "rout"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown kind `rout` (one of: "));
}

#[test]
fn a_rule_that_selects_nothing_is_noted_by_translate_and_rules_test() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pack = root.join("examples/packs/namespace-retries");
    // The quick start has no `payments*` namespace.
    let out = attache()
        .args(["translate", "-o", "json", "--rules"])
        .arg(&pack)
        .arg(root.join("examples/quickstart"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("note: rule `namespace_retries.payments` of pack `namespace-retries` applies to no node"),
        "{stderr}"
    );
    // A misspelled namespace glob: no fixture exercises the rule any more.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("pack");
    std::fs::create_dir_all(copy.join("tests/payments-only")).unwrap();
    let text = std::fs::read_to_string(pack.join("pack.yaml")).unwrap();
    write(&copy.join("pack.yaml"), &text.replace("\"payments*\"", "\"paymets*\""));
    for f in ["input.yaml", "expected.yaml"] {
        std::fs::copy(
            pack.join("tests/payments-only").join(f),
            copy.join("tests/payments-only").join(f),
        )
        .unwrap();
    }
    let out = attache().args(["rules", "test"]).arg(&copy).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("note: rule `namespace_retries.payments` applies to no node in any case"),
        "{stdout}"
    );
    // The example pack itself: exercised.
    let out = attache().args(["rules", "test"]).arg(&pack).output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("note:"));
}
