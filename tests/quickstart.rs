//! The README's quick start, run as written: `scripts/quickstart` serves traffic through Envoy
//! to the demo upstreams (fixed ports 8080, 8877, 9081, 9082, 9901, 18000 on loopback).

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use support::{get, wait_for, Proc};

#[test]
fn quickstart_script_serves_traffic() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(format!("{root}/scripts/quickstart"));
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.current_dir(root).env("ATTACHE_BIN", env!("CARGO_BIN_EXE_attache"));
    let mut script = Proc::spawn("quickstart", cmd, dir.path().join("quickstart.log"));
    // Whatever happens, take the whole process group down with the test.
    struct Group(u32);
    impl Drop for Group {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.0)])
                .status();
        }
    }
    let _group = Group(script.child.id());
    let envoy: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let r = wait_for("the quick start to serve /quote/", Duration::from_secs(60), || {
        get(envoy, "localhost", "/quote/").ok().filter(|r| r.status == 200)
    });
    assert!(r.body.contains("quote upstream"), "{r:?}\n{}", script.log_text());
    // The echo upstream shows the rewrite and the added header.
    let r = get(envoy, "localhost", "/echo/anything?x=1").unwrap();
    let echoed: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {r:?}"));
    assert_eq!(echoed["path"], "/anything?x=1", "{echoed}");
    assert_eq!(echoed["headers"]["x-routed-by"], "attache", "{echoed}");
    let admin: SocketAddr = "127.0.0.1:8877".parse().unwrap();
    assert_eq!(get(admin, "localhost", "/ready").unwrap().status, 200);
    // Stop the whole process group (script, attache, Envoy, upstreams).
    let pgid = script.child.id();
    let _ = Command::new("kill").args(["-TERM", "--", &format!("-{pgid}")]).status();
    wait_for("the quick start to stop", Duration::from_secs(20), || {
        script.child.try_wait().ok().flatten()
    });
    wait_for("port 8080 to close", Duration::from_secs(20), || {
        get(envoy, "localhost", "/").is_err().then_some(())
    });
}
