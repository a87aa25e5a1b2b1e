//! TLS termination through a real Envoy: SNI picks the Host's certificate (checked by a real TLS
//! client, `curl`, trusting only that certificate; server names in capitals through `openssl`),
//! each TLS chain serves only its Host, the insecure action applies to cleartext, and a rotated
//! Secret reaches Envoy over SDS without touching the listener.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::*;

fn tls_secret(name: &str, crt: &str, key: &str) -> String {
    support::tls_secret("default", name, crt, key)
}

fn config(port: u16, upstream: SocketAddr, h1_cert: (&str, &str)) -> String {
    format!(
        "apiVersion: getambassador.io/v3alpha1\nkind: Listener\nmetadata:\n  name: https\nspec:\n  port: {port}\n  protocol: HTTPS\n  securityModel: XFP\n  hostBinding:\n    namespace:\n      from: ALL\n---\n\
apiVersion: getambassador.io/v3alpha1\nkind: Host\nmetadata:\n  name: h1\nspec:\n  hostname: h1.example.com\n  tlsSecret:\n    name: h1-cert\n  requestPolicy:\n    insecure:\n      action: Route\n---\n\
apiVersion: getambassador.io/v3alpha1\nkind: Host\nmetadata:\n  name: h2\nspec:\n  hostname: h2.example.com\n  tlsSecret:\n    name: h2-cert\n---\n\
{}---\n{}---\n{}",
        mapping("a", "/a/", upstream, "  hostname: \"*\"\n"),
        tls_secret("h1-cert", h1_cert.0, h1_cert.1),
        tls_secret("h2-cert", "h2.crt", "h2.key"),
    )
}

/// An HTTPS request with the server name `sni` sent as written (also as `Host:`), trusting only
/// the fixture certificate `ca`: the raw response, empty when the handshake failed.
fn sni_request(port: u16, sni: &str, ca: &str, path: &str) -> String {
    use std::io::Write;
    let ca = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(ca);
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-verify_return_error", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-servername", sni, "-CAfile"])
        .arg(&ca)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl runs");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n");
    let _ = child.stdin.take().expect("stdin").write_all(request.as_bytes());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("openssl output");
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn tls_termination_by_sni(xds: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config_dir = dir.path().join("config");
    let a = upstream("a");
    let port = free_port();
    write(
        &config_dir.join("all.yaml"),
        &config(port, a.addr, ("h1.crt", "h1.key")),
    );
    let (_attache, listen, envoy_admin, admin) = serve(&config_dir, dir.path(), port, &["--xds", xds]);

    let (code, status, body) = wait_for("h1 over TLS", Duration::from_secs(30), || {
        Some(curl(port, "h1.example.com", None, "/a/x", "h1.crt")).filter(|r| r.1 == 200)
    });
    assert_eq!((code, body.as_str()), (0, "upstream=a path=/x host=h1.example.com"));
    // The certificate was chosen by SNI: h2's name gets h2's certificate, and h1's certificate
    // does not verify as h2's.
    let (_, status2, body2) = curl(port, "h2.example.com", None, "/a/y", "h2.crt");
    assert_eq!(
        (status2, body2.as_str()),
        (200, "upstream=a path=/y host=h2.example.com")
    );
    assert_eq!(
        curl(port, "h1.example.com", None, "/a/", "h2.crt").0,
        60,
        "h1 must not present h2's certificate"
    );
    assert_eq!(status, 200);
    // Server names are case-insensitive: an SNI and `Host:` in capitals get h2's certificate
    // (verified against it alone) and its routes. (curl lowercases the name it sends, so
    // openssl's client sends this one as written.)
    let upper = sni_request(port, "H2.EXAMPLE.COM", "h2.crt", "/a/u");
    assert!(
        upper.starts_with("HTTP/1.1 200") && upper.contains("upstream=a path=/u"),
        "{upper}"
    );
    // A TLS chain serves only its own Host (no other hostname over h1's certificate).
    let (_, fronted, _) = curl(port, "h1.example.com", Some("h2.example.com"), "/a/", "h1.crt");
    assert_eq!(fronted, 404);
    // Cleartext on the same port: h1 routes insecure requests, h2 redirects them to HTTPS.
    assert_eq!(
        get(listen, "h1.example.com", "/a/z").unwrap().body,
        "upstream=a path=/z host=h1.example.com"
    );
    let redirect = get(listen, "h2.example.com", "/a/z").unwrap();
    assert_eq!(redirect.status, 301, "{redirect:?}");
    assert_eq!(
        redirect.header("location"),
        Some("https://h2.example.com/a/z"),
        "{redirect:?}"
    );

    // What Envoy holds: both certificates, as SDS secrets.
    let dump = get(envoy_admin, "x", "/config_dump?resource=dynamic_active_secrets")
        .unwrap()
        .body;
    assert!(
        dump.contains("default/h1-cert") && dump.contains("default/h2-cert"),
        "{dump}"
    );

    // Rotation: a new certificate for h1 reaches Envoy over SDS; the listener is not touched.
    let modified = stat(envoy_admin, "listener_manager.listener_modified");
    let lds = stat(envoy_admin, "listener_manager.lds.update_success");
    write(
        &config_dir.join("all.yaml"),
        &config(port, a.addr, ("h1-rotated.crt", "h1-rotated.key")),
    );
    wait_for("the rotated certificate", Duration::from_secs(30), || {
        Some(curl(port, "h1.example.com", None, "/a/", "h1-rotated.crt")).filter(|r| r.0 == 0 && r.1 == 200)
    });
    assert_eq!(
        curl(port, "h1.example.com", None, "/a/", "h1.crt").0,
        60,
        "the old certificate is gone"
    );
    assert_eq!(stat(envoy_admin, "listener_manager.listener_modified"), modified);
    assert_eq!(stat(envoy_admin, "listener_manager.lds.update_success"), lds);
    assert_eq!(
        metric(admin, "attache_xds_nacks_total{type=\"secrets\"} ").unwrap_or(0),
        0
    );
}

#[test]
fn delta_terminates_tls_by_sni_and_rotates_certificates() {
    tls_termination_by_sni("delta");
}

#[test]
fn sotw_terminates_tls_by_sni_and_rotates_certificates() {
    tls_termination_by_sni("sotw");
}

#[test]
fn static_bootstrap_carries_certificates_and_passes_envoy_validate() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.yaml");
    write(&input, &config(8443, loopback(9), ("h1.crt", "h1.key")));
    let out = attache()
        .args(["translate", "--bootstrap", "-o", "yaml"])
        .arg(&input)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    // A static bootstrap has no SDS server: the secrets (keys included) are in it.
    assert_eq!(text.matches("BEGIN PRIVATE KEY").count(), 2, "{text}");
    let file = dir.path().join("bootstrap.yaml");
    write(&file, &text);
    let v = Command::new(envoy_bin())
        .args(["--mode", "validate", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    // Plain `translate` output never shows a key.
    let out = attache().arg("translate").arg(&input).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("<redacted>") && !text.contains("PRIVATE KEY"), "{text}");
}

/// `curl` with extra arguments: (exit code, status, HTTP version).
fn curl_with(port: u16, sni: &str, ca: &str, extra: &[&str]) -> (i32, u16, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
        ])
        .arg("--resolve")
        .arg(format!("{sni}:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(dir.join(ca))
        .args(
            extra
                .iter()
                .map(|a| a.replace("{fixtures}", &dir.display().to_string())),
        )
        .arg(format!("https://{sni}:{port}/a/"))
        .output()
        .expect("curl runs (.ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (code, version) = text.split_once(' ').unwrap_or(("0", ""));
    (
        out.status.code().unwrap_or(-1),
        code.parse().unwrap_or(0),
        version.to_string(),
    )
}

#[test]
fn tls_settings_and_client_certificates_from_host_and_tlscontext() {
    let dir = tempfile::tempdir().unwrap();
    let config_dir = dir.path().join("config");
    let a = upstream("a");
    let port = free_port();
    let ca_secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: test-ca\nstringData:\n  tls.crt: |\n{}",
        fixture_file("ca.crt")
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    );
    // h1: a TLSContext with ALPN h2 and TLS 1.3 only. h2: client certificates from the test CA.
    let config = format!(
        "apiVersion: getambassador.io/v3alpha1\nkind: Listener\nmetadata:\n  name: https\nspec:\n  port: {port}\n  protocol: HTTPS\n  securityModel: XFP\n  hostBinding:\n    namespace:\n      from: ALL\n---\n\
apiVersion: getambassador.io/v3alpha1\nkind: TLSContext\nmetadata:\n  name: modern\nspec:\n  hosts: [h1.example.com]\n  secret: h1-cert\n  alpn_protocols: h2,http/1.1\n  min_tls_version: v1.3\n---\n\
apiVersion: getambassador.io/v3alpha1\nkind: Host\nmetadata:\n  name: h1\nspec:\n  hostname: h1.example.com\n---\n\
apiVersion: getambassador.io/v3alpha1\nkind: Host\nmetadata:\n  name: h2\nspec:\n  hostname: h2.example.com\n  tlsSecret:\n    name: h2-cert\n  tls:\n    ca_secret: test-ca\n    cert_required: true\n---\n\
apiVersion: getambassador.io/v3alpha1\nkind: TLSContext\nmetadata:\n  name: upstream-client\nspec:\n  secret: h1-cert\n  sni: backend.internal\n  alpn_protocols: [http/1.1]\n---\n\
{}---\n{}---\n{}---\n{}---\n{}",
        mapping("a", "/a/", a.addr, "  hostname: \"*\"\n"),
        // Accepted by Envoy (a client certificate over SDS); the loopback upstream speaks no TLS.
        mapping("mtls-out", "/mtls-out/", a.addr, "  hostname: \"*\"\n  tls: upstream-client\n"),
        tls_secret("h1-cert", "h1.crt", "h1.key"),
        tls_secret("h2-cert", "h2.crt", "h2.key"),
        ca_secret,
    );
    write(&config_dir.join("all.yaml"), &config);
    let (_attache, _listen, envoy_admin, _admin) = serve(&config_dir, dir.path(), port, &[]);
    let (_, status, version) = wait_for("h1 over TLS", Duration::from_secs(30), || {
        Some(curl_with(port, "h1.example.com", "h1.crt", &[])).filter(|r| r.1 == 200)
    });
    assert_eq!((status, version.as_str()), (200, "2"), "ALPN h2 from the TLSContext");
    // TLS 1.3 only: a client limited to 1.2 is refused.
    assert_ne!(curl_with(port, "h1.example.com", "h1.crt", &["--tls-max", "1.2"]).0, 0);
    // h2 wants a client certificate from the test CA.
    let with_cert = curl_with(
        port,
        "h2.example.com",
        "h2.crt",
        &["--cert", "{fixtures}/client.crt", "--key", "{fixtures}/client.key"],
    );
    assert_eq!((with_cert.0, with_cert.1), (0, 200), "{with_cert:?}");
    let without = curl_with(port, "h2.example.com", "h2.crt", &[]);
    assert!(
        without.0 != 0 || without.1 != 200,
        "no client certificate must not get through: {without:?}"
    );
    // A certificate not from the CA is refused too (h1's key pair as a client certificate).
    let foreign = curl_with(
        port,
        "h2.example.com",
        "h2.crt",
        &["--cert", "{fixtures}/h1.crt", "--key", "{fixtures}/h1.key"],
    );
    assert!(foreign.0 != 0 || foreign.1 != 200, "{foreign:?}");
    let dump = get(envoy_admin, "x", "/config_dump?resource=dynamic_active_secrets")
        .unwrap()
        .body;
    assert!(dump.contains("default/test-ca#ca"), "{dump}");
    assert_eq!(stat(envoy_admin, "cluster_manager.cds.update_rejected"), Some(0));
    let clusters = get(envoy_admin, "x", "/config_dump?resource=dynamic_active_clusters")
        .unwrap()
        .body;
    assert!(
        clusters.contains("backend.internal") && clusters.contains("tls_certificate_sds_secret_configs"),
        "{clusters}"
    );
}

#[test]
fn tcp_mappings_proxy_connections_and_terminate_tls_by_server_name() {
    let dir = tempfile::tempdir().unwrap();
    let config_dir = dir.path().join("config");
    let (a, b, c) = (upstream("a"), upstream("b"), upstream("c"));
    let (http_port, raw_port, tls_port) = (free_port(), free_port(), free_port());
    let tcp = |name: &str, port: u16, service: SocketAddr, host: &str| {
        format!("apiVersion: getambassador.io/v3alpha1\nkind: TCPMapping\nmetadata:\n  name: {name}\nspec:\n  port: {port}\n  service: {service}\n{host}")
    };
    let config = [
        listener_and_host(http_port),
        tcp("raw", raw_port, a.addr, ""),
        tcp("raw-canary", raw_port, c.addr, "  weight: 50\n"),
        tcp("tls-h1", tls_port, b.addr, "  host: h1.example.com\n"),
        "apiVersion: getambassador.io/v3alpha1\nkind: Host\nmetadata:\n  name: h1\nspec:\n  hostname: h1.example.com\n  tlsSecret:\n    name: h1-cert\n".to_string(),
        tls_secret("h1-cert", "h1.crt", "h1.key"),
    ];
    write(&config_dir.join("all.yaml"), &config.join("---\n"));
    let (_attache, _listen, envoy_admin, _admin) = serve(&config_dir, dir.path(), http_port, &[]);
    // Plain TCP: whatever is sent (here an HTTP request) reaches the service as is.
    let raw = wait_for("the raw TCP listener", Duration::from_secs(30), || {
        get(loopback(raw_port), "anything", "/raw")
            .ok()
            .filter(|r| r.status == 200)
    });
    assert!(raw.body.ends_with("path=/raw host=anything"), "{raw:?}");
    // Two TCPMappings for the same connections share them 50/50: 60 connections, a's share
    // within 4 standard deviations (±16) of 30.
    let to_a = (0..60)
        .filter(|_| {
            get(loopback(raw_port), "x", "/w")
                .unwrap()
                .body
                .starts_with("upstream=a")
        })
        .count();
    assert!((14..=46).contains(&to_a), "{to_a} of 60 connections went to a");
    // TLS by server name, terminated with the Host's certificate, then TCP to b.
    let (code, status, body) = wait_for("the TLS TCP listener", Duration::from_secs(30), || {
        Some(curl(tls_port, "h1.example.com", None, "/over-tls", "h1.crt")).filter(|r| r.1 == 200)
    });
    // (Layer 4: the client's Host header, port included, arrives untouched.)
    assert_eq!(
        (code, body),
        (0, format!("upstream=b path=/over-tls host=h1.example.com:{tls_port}"))
    );
    assert_eq!(status, 200);
    assert_eq!(stat(envoy_admin, "listener_manager.lds.update_rejected"), Some(0));
    assert!(stat(envoy_admin, &format!("tcp.ingress_tcp_{raw_port}.downstream_cx_total")).unwrap_or(0) >= 1);
}

/// A real Envoy, run here with a bootstrap `attache bootstrap` printed (`args` are its flags).
fn envoy_with_bootstrap(dir: &Path, name: &'static str, args: &[String]) -> (Proc, SocketAddr) {
    let admin = loopback(free_port());
    let out = attache()
        .arg("bootstrap")
        .args(["--envoy-admin", &admin.to_string(), "--node-id", name])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, &out.stdout).unwrap();
    let mut cmd = Command::new(envoy_bin());
    cmd.arg("-c")
        .arg(&path)
        .args(["--use-dynamic-base-id", "--log-level", "warning"]);
    (Proc::spawn(name, cmd, dir.join(format!("{name}.log"))), admin)
}

#[test]
fn remote_envoys_need_a_client_certificate_signed_by_the_client_ca() {
    let Fixture {
        dir,
        config,
        a: _a,
        port,
    } = support::fixture();
    let fixture = fixture_path;
    let ads = loopback(free_port());
    let admin = loopback(free_port());
    let mut cmd = attache();
    cmd.args(["serve", "--config-dir"])
        .arg(&config)
        .args(["--ads-listen", &ads.to_string(), "--admin-listen", &admin.to_string()])
        .args([
            "--ads-tls-cert",
            &fixture("ads-server.crt"),
            "--ads-tls-key",
            &fixture("ads-server.key"),
        ])
        .args(["--ads-client-ca", &fixture("ca.crt")]);
    let _attache = Proc::spawn("attache", cmd, dir.path().join("attache.log"));
    wait_for("attache ready", Duration::from_secs(30), || {
        get(admin, "a", "/ready").ok().filter(|r| r.status == 200)
    });
    let tls = |cert: &str, key: &str| -> Vec<String> {
        [
            "--ads",
            &ads.to_string(),
            "--tls-ca",
            &fixture("ca.crt"),
            "--tls-cert",
            &fixture(cert),
            "--tls-key",
            &fixture(key),
            "--tls-server-name",
            "attache-ads.test",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    // Served: a client certificate the CA signed.
    let (_good, good_admin) = envoy_with_bootstrap(dir.path(), "good", &tls("ads-client.crt", "ads-client.key"));
    let r = wait_for(
        "traffic through the Envoy with a certificate",
        Duration::from_secs(30),
        || get(loopback(port), "x", "/a/b").ok().filter(|r| r.status == 200),
    );
    assert_eq!(r.body, "upstream=a path=/b host=x");
    assert_eq!(stat(good_admin, "control_plane.connected_state"), Some(1));
    // Refused: a certificate the CA did not sign, and none at all (plaintext).
    let (_bad, bad_admin) = envoy_with_bootstrap(dir.path(), "bad", &tls("h2.crt", "h2.key"));
    let (_plain, plain_admin) = envoy_with_bootstrap(dir.path(), "plain", &["--ads".to_string(), ads.to_string()]);
    wait_for("two refused handshakes", Duration::from_secs(30), || {
        (metric(admin, "attache_ads_tls_handshake_failures_total ")? >= 2).then_some(())
    });
    for envoy_admin in [bad_admin, plain_admin] {
        let state = wait_for("the refused Envoy's admin", Duration::from_secs(30), || {
            stat(envoy_admin, "control_plane.connected_state")
        });
        assert_eq!(state, 0, "a refused Envoy is not connected");
    }
    let envoys = get(admin, "a", "/debug/envoys").unwrap().body;
    assert!(envoys.contains("\"node_id\":\"good\""), "{envoys}");
    assert!(
        !envoys.contains("\"node_id\":\"bad\"") && !envoys.contains("\"node_id\":\"plain\""),
        "{envoys}"
    );
}

#[test]
fn ads_tls_flags_are_checked_at_start() {
    let fixture = fixture_path;
    let dir = tempfile::tempdir().unwrap();
    let out = attache()
        .args(["serve", "--config-dir"])
        .arg(dir.path())
        .args([
            "--ads-tls-cert",
            &fixture("ads-server.crt"),
            "--ads-tls-key",
            &fixture("ca.crt"),
        ])
        .args(["--ads-client-ca", &fixture("ca.crt")])
        .args(["--ads-listen", &loopback(free_port()).to_string()])
        .args(["--admin-listen", &loopback(free_port()).to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--ads-tls-key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // TLS for remote Envoys and a supervised Envoy do not go together.
    let out = attache()
        .args(["serve", "--config-dir"])
        .arg(dir.path())
        .args([
            "--ads-tls-cert",
            "x",
            "--ads-tls-key",
            "y",
            "--ads-client-ca",
            "z",
            "--envoy",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
