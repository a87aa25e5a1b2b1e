//! Traffic keeps flowing through reconfiguration: keep-alive clients send requests through a real
//! Envoy to stable routes while attache applies 100+ configuration changes (Mappings added and
//! removed, a route moved to another cluster, a cluster's settings changed in place, Hosts added
//! and removed). Every request to a route
//! that exists before and after every change must succeed, on the same connections.

mod support;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use support::*;

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    non_2xx: AtomicU64,
    conn_errors: AtomicU64,
    reconnects: AtomicU64,
}

/// One keep-alive request; `Err` on any connection-level problem.
fn keepalive_get(reader: &mut BufReader<TcpStream>, path: &str) -> std::io::Result<u16> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: load\r\n\r\n");
    reader.get_mut().write_all(request.as_bytes())?;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut length = 0usize;
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
            if k.eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close") {
                return Err(std::io::Error::other("server closed the connection"));
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(status)
}

fn client(listen: SocketAddr, id: usize, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let connect = || {
        let s = TcpStream::connect_timeout(&listen, Duration::from_secs(2)).expect("connect to Envoy");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.set_nodelay(true).unwrap();
        BufReader::new(s)
    };
    let mut conn = connect();
    let mut i = 0usize;
    // Bounded: stops on the flag, or after 60,000 requests, whichever comes first.
    while !stop.load(Ordering::Relaxed) && i < 60_000 {
        let path = format!("/stable-{}/req-{i}", (id + i) % 4);
        match keepalive_get(&mut conn, &path) {
            Ok(s) if (200..300).contains(&s) => tally.ok.fetch_add(1, Ordering::Relaxed),
            Ok(s) => {
                eprintln!("non-2xx {s} for {path}");
                tally.non_2xx.fetch_add(1, Ordering::Relaxed)
            }
            Err(e) => {
                eprintln!("connection error for {path}: {e}");
                tally.conn_errors.fetch_add(1, Ordering::Relaxed);
                tally.reconnects.fetch_add(1, Ordering::Relaxed);
                conn = connect();
                0
            }
        };
        i += 1;
        thread::sleep(Duration::from_millis(5));
    }
}

fn reconfigure_under_load(xds: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let (a, b) = (upstream("a"), upstream("b"));
    let port = free_port();
    write(&config.join("base.yaml"), &listener_and_host(port));
    // The stable routes; `connect_timeout` changes a setting of the cluster they use, in place.
    let stable = |moved_to_b: bool, connect_timeout: u64| {
        (0..4)
            .map(|k| {
                mapping(
                    &format!("stable-{k}"),
                    &format!("/stable-{k}/"),
                    if k == 0 && moved_to_b { b.addr } else { a.addr },
                    &format!("  connect_timeout_ms: {connect_timeout}\n"),
                )
            })
            .collect::<Vec<_>>()
            .join("---\n")
    };
    write(&config.join("stable.yaml"), &stable(false, 1000));
    let (attache_proc, listen, envoy_admin, admin) =
        serve(&config, dir.path(), port, &["--xds", xds, "--debounce-ms", "20"]);
    for k in 0..4 {
        wait_for("stable routes", Duration::from_secs(30), || {
            get(listen, "x", &format!("/stable-{k}/"))
                .ok()
                .filter(|r| r.status == 200)
        });
    }
    let rds = format!("http.ingress_http.rds.routes-{port}.update_success");
    let published = || metric(admin, "attache_snapshots_published_total ");
    let published_before = published().unwrap();
    let rds_before = stat(envoy_admin, &rds).unwrap();
    let cds_before = stat(envoy_admin, "cluster_manager.cds.update_success").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let clients: Vec<_> = (0..4)
        .map(|id| {
            let (stop, tally) = (Arc::clone(&stop), Arc::clone(&tally));
            thread::spawn(move || client(listen, id, stop, tally))
        })
        .collect();

    // 120 changes, each its own push (paced above the debounce).
    let started = Instant::now();
    let changes = 120;
    for i in 0..changes {
        match i % 4 {
            // Add a Mapping (new cluster: a new upstream port each time) and drop an old one.
            0 => {
                write(
                    &config.join(format!("churn-{i}.yaml")),
                    &mapping(
                        &format!("churn-{i}"),
                        &format!("/churn-{i}/"),
                        SocketAddr::from(([127, 0, 0, 1], 20000 + i as u16)),
                        "",
                    ),
                );
                if i >= 8 {
                    let _ = std::fs::remove_file(config.join(format!("churn-{}.yaml", i - 8)));
                }
            }
            // Move a stable route to the other upstream cluster and back.
            1 => write(&config.join("stable.yaml"), &stable(i % 8 == 1, 1000)),
            // Add or remove a Host (virtual hosts change, the `*` host keeps serving).
            2 => {
                let host = config.join("extra-host.yaml");
                if host.exists() {
                    std::fs::remove_file(host).unwrap();
                } else {
                    write(&host, &format!("apiVersion: getambassador.io/v3alpha1\nkind: Host\nmetadata:\n  name: extra-{i}\nspec:\n  hostname: extra-{i}.example.com\n"));
                }
            }
            // Change a route's settings (timeout) on a stable Mapping's neighbour.
            // Change a setting of the cluster the stable routes use (updated in place in Envoy),
            // and a route setting of another Mapping.
            _ => {
                write(&config.join("stable.yaml"), &stable(i % 8 == 1, 1000 + i as u64));
                write(
                    &config.join("tuned.yaml"),
                    &mapping("tuned", "/tuned/", a.addr, &format!("  timeout_ms: {}\n", 1000 + i)),
                );
            }
        }
        thread::sleep(Duration::from_millis(120));
    }
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let elapsed = started.elapsed();
    let pushes = published().unwrap() - published_before;
    let rds_updates = stat(envoy_admin, &rds).unwrap() - rds_before;
    let cds_updates = stat(envoy_admin, "cluster_manager.cds.update_success").unwrap() - cds_before;
    let ok = tally.ok.load(Ordering::Relaxed);
    eprintln!(
        "{xds}: {changes} changes in {elapsed:?}: {pushes} snapshots pushed, {rds_updates} RDS and {cds_updates} CDS updates in Envoy; {ok} requests OK ({:.0}/s), {} non-2xx, {} connection errors",
        ok as f64 / elapsed.as_secs_f64(),
        tally.non_2xx.load(Ordering::Relaxed),
        tally.conn_errors.load(Ordering::Relaxed)
    );
    let log = attache_proc.log_text();
    assert_eq!(
        tally.non_2xx.load(Ordering::Relaxed),
        0,
        "non-2xx responses on stable routes"
    );
    assert_eq!(tally.conn_errors.load(Ordering::Relaxed), 0, "connection errors");
    assert!(ok > 1000, "too few requests went through: {ok}");
    // Each change is pushed on its own (changes are paced well above the debounce); Envoy may
    // apply several pending updates of a type at once, so its counters only need to be of the
    // same order.
    assert!(pushes >= 100, "expected about {changes} pushes, saw {pushes}\n{log}");
    assert!(
        rds_updates >= changes as u64 / 2,
        "expected about {changes} route updates in Envoy, saw {rds_updates}\n{log}"
    );
    for name in [
        "cluster_manager.cds.update_rejected",
        "listener_manager.lds.update_rejected",
        &format!("http.ingress_http.rds.routes-{port}.update_rejected"),
    ] {
        assert_eq!(stat(envoy_admin, name), Some(0), "{name}");
    }
}

#[test]
fn delta_reconfiguration_drops_no_request() {
    reconfigure_under_load("delta");
}

#[test]
fn sotw_reconfiguration_drops_no_request() {
    reconfigure_under_load("sotw");
}
