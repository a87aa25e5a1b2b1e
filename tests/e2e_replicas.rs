//! Statelessness and coalescing: replicas on the same input serve identical versions, an Envoy that moves to
//! a restarted (or another) attache over delta xDS is sent nothing it already has, and keeps
//! serving throughout; and a burst of file changes becomes one push.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use support::*;

fn attache_serve(config: &std::path::Path, ads: SocketAddr, admin: SocketAddr, log: std::path::PathBuf) -> Proc {
    let mut cmd = attache();
    cmd.arg("serve").arg("--config-dir").arg(config);
    cmd.args(["--ads-listen", &ads.to_string(), "--admin-listen", &admin.to_string()]);
    Proc::spawn("attache", cmd, log)
}

#[test]
fn replicas_agree_and_a_moved_envoy_gets_nothing_resent() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let a = upstream("a");
    let port = free_port();
    write(
        &config.join("all.yaml"),
        &format!(
            "{}---\n{}---\n{}",
            listener_and_host(port),
            mapping("a", "/a/", a.addr, ""),
            mapping("b", "/b/", a.addr, "  rewrite: /bee/\n")
        ),
    );
    let ads = loopback(free_port());
    let (admin1, admin2) = (loopback(free_port()), loopback(free_port()));
    let mut first = attache_serve(&config, ads, admin1, dir.path().join("first.log"));
    let second = attache_serve(&config, loopback(free_port()), admin2, dir.path().join("second.log"));

    // Both replicas compute the same snapshot version, and the same per-type versions.
    let version = |admin| {
        wait_for("a snapshot", Duration::from_secs(20), || {
            let body = get(admin, "a", "/debug/snapshot").ok()?.body;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            v["version"].is_string().then_some(v)
        })
    };
    let (v1, v2) = (version(admin1), version(admin2));
    assert_eq!(v1, v2, "replicas must serve identical resources and versions");
    drop(second);

    // An Envoy on the first replica (delta xDS).
    let envoy_admin = loopback(free_port());
    let out = attache()
        .args([
            "bootstrap",
            "--ads",
            &ads.to_string(),
            "--node-id",
            "moved",
            "--envoy-admin",
            &envoy_admin.to_string(),
            "--xds",
            "delta",
        ])
        .output()
        .unwrap();
    let bootstrap = dir.path().join("bootstrap.yaml");
    std::fs::write(&bootstrap, &out.stdout).unwrap();
    let mut cmd = Command::new(envoy_bin());
    cmd.arg("-c").arg(&bootstrap).arg("--use-dynamic-base-id");
    let _envoy = Proc::spawn("envoy", cmd, dir.path().join("envoy.log"));
    let listen = loopback(port);
    wait_for("Envoy to serve /a/", Duration::from_secs(30), || {
        get(listen, "x", "/a/").ok().filter(|r| r.status == 200)
    });
    let cds = stat(envoy_admin, "cluster_manager.cds.update_success").unwrap();
    let rds_stat = format!("http.ingress_http.rds.routes-{port}.update_success");
    let rds = stat(envoy_admin, &rds_stat).unwrap();

    // The replica goes away: Envoy keeps serving what it has.
    first.terminate().expect("attache stops");
    wait_for("Envoy to notice", Duration::from_secs(10), || {
        (stat(envoy_admin, "control_plane.connected_state")? == 0).then_some(())
    });
    for _ in 0..20 {
        assert_eq!(get(listen, "x", "/b/x").unwrap().body, "upstream=a path=/bee/x host=x");
    }

    // A new replica on the same address: Envoy reconnects with its resource versions and is sent
    // nothing, since it already has everything.
    let admin3 = loopback(free_port());
    let _third = attache_serve(&config, ads, admin3, dir.path().join("third.log"));
    wait_for("Envoy to reconnect", Duration::from_secs(30), || {
        (stat(envoy_admin, "control_plane.connected_state")? == 1
            && get(admin3, "a", "/debug/envoys").ok()?.body.contains("\"moved\""))
        .then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    for ty in ["clusters", "listeners", "routes"] {
        assert_eq!(
            metric(admin3, &format!("attache_xds_responses_total{{type=\"{ty}\"}} ")),
            Some(0),
            "{ty} were resent"
        );
    }
    assert_eq!(stat(envoy_admin, "cluster_manager.cds.update_success"), Some(cds));
    assert_eq!(stat(envoy_admin, &rds_stat), Some(rds));
    assert_eq!(get(listen, "x", "/a/").unwrap().status, 200);

    // And it serves the next change.
    write(&config.join("c.yaml"), &mapping("c", "/c/", a.addr, ""));
    wait_for("the new replica to push a change", Duration::from_secs(10), || {
        get(listen, "x", "/c/").ok().filter(|r| r.status == 200)
    });
}

#[test]
fn a_burst_of_500_files_becomes_one_push() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    write(&config.join("base.yaml"), &listener_and_host(free_port()));
    let admin = loopback(free_port());
    let mut cmd = attache();
    cmd.arg("serve").arg("--config-dir").arg(&config);
    cmd.args([
        "--ads-listen",
        &loopback(free_port()).to_string(),
        "--admin-listen",
        &admin.to_string(),
        "--debounce-ms",
        "300",
    ]);
    let _attache = Proc::spawn("attache", cmd, dir.path().join("attache.log"));
    wait_for("the first snapshot", Duration::from_secs(20), || {
        (metric(admin, "attache_snapshots_published_total ")? == 1).then_some(())
    });

    // `kubectl apply` of 500 objects, as 500 files written back to back.
    let upstream = loopback(9);
    for i in 0..500 {
        write(
            &config.join(format!("m{i}.yaml")),
            &mapping(
                &format!("m{i}"),
                &format!("/m{i}/"),
                SocketAddr::new(upstream.ip(), 1000 + i),
                "",
            ),
        );
    }
    wait_for("500 clusters in the snapshot", Duration::from_secs(20), || {
        (metric(admin, "attache_snapshot_resources{type=\"clusters\"} ")? == 500).then_some(())
    });
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        metric(admin, "attache_snapshots_published_total "),
        Some(2),
        "the burst must be coalesced into one push"
    );
}
