//! Stage 7: the Aggregated Discovery Service Envoy connects to. The only module that knows tonic.
//!
//! Each ADS stream gets its own task and its own protocol state ([`sotw::SotwStream`]), fed by
//! the requests Envoy sends and by new snapshots. Rules followed (see DESIGN.md §3): nonces per
//! stream, stale nonces ignored, ACK/NACK told apart by `error_detail`, rejected content never
//! resent in a loop, LDS/CDS as full state and RDS by name, types sent in make-before-break
//! order, message size limits well above tonic's 4 MiB default. Delta streams
//! ([`delta::DeltaStream`]) send only what changed and honour `initial_resource_versions`.

pub mod delta;
pub mod sotw;
pub mod tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{BufMut as _, Bytes, BytesMut};
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use futures::StreamExt as _;
use tokio::sync::mpsc;
use tonic::codegen::http;
use tonic::{Status, Streaming};

use envoy_types::pb::envoy::config::core::v3::Node;

use crate::snapshot::Snapshot;
use crate::state::{EnvoyStatus, Shared};

/// The objects a rejected update of `ty` came from: the resources of that type in the served
/// snapshot that Envoy's message names (Envoy names the listener, cluster or route table it
/// refused), traced back through the IR. Empty when the message names none.
pub fn rejected_sources(
    shared: &Shared,
    ty: crate::snapshot::ResourceType,
    message: &str,
) -> Vec<crate::ir::SourceRef> {
    let Some(snapshot) = shared.snapshot.borrow().clone() else {
        return Vec::new();
    };
    sources_named(&shared.translation().ir, &snapshot, &[ty], message)
}

/// The objects behind the resources of `types` in `snapshot` whose names `message` contains.
pub fn sources_named(
    ir: &crate::ir::Ir,
    snapshot: &Snapshot,
    types: &[crate::snapshot::ResourceType],
    message: &str,
) -> Vec<crate::ir::SourceRef> {
    let mut out: Vec<crate::ir::SourceRef> = types
        .iter()
        .flat_map(|ty| {
            snapshot
                .of_type(*ty)
                .filter(|(name, _)| message.contains(&***name))
                .flat_map(|(name, _)| ir.sources_of(*ty, name).into_iter().cloned())
        })
        .collect();
    // Envoy's checks of a cluster's address quote the address, not the cluster
    // (`malformed IP address: bad.invalid`).
    if out.is_empty() && types.contains(&crate::snapshot::ResourceType::Cluster) {
        // The host as a word: not inside a longer name (a full stop ending the sentence is fine).
        let quoted = |host: &str| {
            message.match_indices(host).any(|(at, _)| {
                let name_char = |c: char| c.is_alphanumeric() || c == '-' || c == '_';
                let before = message[..at].chars().next_back();
                let rest = &message[at + host.len()..];
                let after_ok = match rest.chars().next() {
                    None => true,
                    Some('.') => rest[1..].chars().next().is_none_or(|c| !name_char(c)),
                    Some(c) => !name_char(c),
                };
                before.is_none_or(|c| !name_char(c) && c != '.') && after_ok
            })
        };
        out.extend(
            ir.clusters
                .iter()
                .filter(|c| c.host.len() >= 3 && quoted(&c.host))
                .filter_map(|c| c.source.clone()),
        );
    }
    out.sort();
    out.dedup();
    out
}

/// Every connected Envoy's last rejected update, as diagnostics on the objects it came from
/// (or on no object when Envoy's message names no resource attache knows).
pub fn nack_diagnostics(shared: &Shared) -> Vec<crate::diagnostic::Diagnostic> {
    let envoys = shared.envoys.lock().map(|m| m.clone()).unwrap_or_default();
    let mut out = Vec::new();
    for e in envoys.values() {
        for (label, t) in &e.types {
            let Some(nack) = &t.last_nack else { continue };
            let Some(ty) = crate::snapshot::ResourceType::ALL
                .into_iter()
                .find(|ty| ty.label() == *label)
            else {
                continue;
            };
            let what = format!(
                "Envoy `{}` rejected {label} version {}: {}; it keeps serving its previous configuration",
                e.node_id, nack.version, nack.message
            );
            let hint =
                "fix this object; the next version Envoy accepts clears this (its text is also at /debug/envoys)";
            let sources = rejected_sources(shared, ty, &nack.message);
            if sources.is_empty() {
                out.push(crate::diagnostic::Diagnostic::error("envoy.rejected", what.clone()).hint(hint));
            }
            for source in sources {
                out.push(
                    crate::diagnostic::Diagnostic::error("envoy.rejected", what.clone())
                        .at(source.origin.clone())
                        .on(source.object.clone())
                        .hint(hint),
                );
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Whether a stream error only says that the peer went away: its connection reset or closed
/// under a request body (Envoy stopping or restarting), not a protocol problem worth a warning.
fn peer_went_away(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            ) {
                return true;
            }
        }
        source = e.source();
    }
    matches!(status.code(), tonic::Code::Cancelled) || status.message().contains("error reading a body from connection")
}

/// Largest xDS message accepted or sent (SotW responses at tens of thousands of routes are big).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// The ADS service.
#[derive(Debug, Clone)]
pub struct Ads {
    shared: Arc<Shared>,
    next_stream: Arc<AtomicU64>,
}

impl Ads {
    /// A service over shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        Ads {
            shared,
            next_stream: Arc::new(AtomicU64::new(1)),
        }
    }
}

/// The ADS gRPC service at the HTTP level. Requests are decoded with tonic; each response is
/// encoded into a buffer of its own exact size, handed to hyper, and freed once written. (Through
/// tonic's generated server, every stream kept a buffer as large as the largest response it ever
/// sent: with 10,000 clusters, megabytes per connected Envoy for as long as it stays connected.)
impl tonic::server::NamedService for Ads {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

const SOTW_METHOD: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_METHOD: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

impl tower::Service<http::Request<tonic::body::Body>> for Ads {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let response = match req.uri().path() {
            SOTW_METHOD => self.open(req, sotw::SotwStream::new),
            DELTA_METHOD => self.open(req, delta::DeltaStream::new),
            other => Status::unimplemented(format!("attache serves ADS only, not {other}")).into_http(),
        };
        std::future::ready(Ok(response))
    }
}

/// Decodes one request message (prost), as tonic's own codec does.
struct RequestDecoder<T>(std::marker::PhantomData<T>);

impl<T: prost::Message + Default> tonic::codec::Decoder for RequestDecoder<T> {
    type Item = T;
    type Error = Status;
    fn decode(&mut self, buf: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<T>, Status> {
        T::decode(buf)
            .map(Some)
            .map_err(|e| Status::internal(format!("cannot decode the request: {e}")))
    }
}

/// The start of a gRPC message frame of `total` bytes (uncompressed flag, length) and `message`
/// (the fields a response encodes itself; what follows is the caller's), in a buffer of that
/// size.
fn message_head(message: &impl prost::Message, total: usize) -> BytesMut {
    let mut buf = BytesMut::with_capacity(5 + message.encoded_len());
    buf.put_u8(0);
    buf.put_u32(u32::try_from(total).unwrap_or(u32::MAX));
    // Cannot fail: the buffer has the message's length.
    let _ = message.encode(&mut buf);
    buf
}

/// Resources at least this large go out as the snapshot's own bytes (a chunk of their own);
/// smaller ones are copied into the frame around them.
const SHARED_CHUNK_FROM: usize = 16 * 1024;

/// Appends a resource's bytes to a frame being built: a large one as a chunk of its own (the
/// snapshot's bytes, not copied, after what `buf` holds so far), a small one copied into `buf`.
fn put_resource(buf: &mut BytesMut, chunks: &mut Vec<Bytes>, resource: &Bytes) {
    if resource.len() >= SHARED_CHUNK_FROM {
        chunks.push(std::mem::take(buf).freeze());
        chunks.push(resource.clone());
    } else {
        buf.put_slice(resource);
    }
}

/// A response as Envoy decodes it, from its frame's chunks (tests and the admin's views).
fn decode_frames<M: prost::Message + Default>(chunks: &[Bytes]) -> M {
    let all: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).skip(5).collect();
    M::decode(all.as_slice()).unwrap_or_default()
}

/// Serves ADS on an already bound listener until `shutdown` resolves.
///
/// # Errors
/// When the server fails (not when a stream fails).
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .add_service(Ads::new(Arc::clone(&shared)));
    if let Some(config) = tls {
        return server
            .serve_with_incoming_shutdown(tls::incoming(listener, config, shared), shutdown)
            .await;
    }
    // Responses go out at once: with Nagle's algorithm, the last segment of a large response
    // waited for Envoy's delayed ACK (about 40 ms on loopback).
    let incoming = tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(listener), |stream| {
        let stream = stream?;
        stream.set_nodelay(true)?;
        Ok::<_, std::io::Error>(stream)
    });
    server.serve_with_incoming_shutdown(incoming, shutdown).await
}

impl Ads {
    /// Starts the task that serves one stream and returns its response side.
    fn open<P: Protocol>(
        &self,
        request: http::Request<tonic::body::Body>,
        new: fn(u64) -> P,
    ) -> http::Response<tonic::body::Body>
    where
        P::Request: prost::Message + Default,
        Streaming<P::Request>: futures::Stream<Item = Result<P::Request, Status>> + Unpin + Send,
    {
        let request = tonic::Request::from_http(request);
        let peer = request.remote_addr();
        let inbound = Streaming::new_request(
            RequestDecoder::<P::Request>(std::marker::PhantomData),
            request.into_inner(),
            None,
            Some(MAX_MESSAGE_BYTES),
        );
        // Small queue: a slow Envoy slows only its own task, and responses are computed from the
        // latest snapshot when they are due, never queued stale.
        let (tx, rx) = mpsc::channel::<Result<P::Response, Status>>(4);
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        self.shared.metrics.xds_streams_opened.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(run_stream(Arc::clone(&self.shared), id, peer, inbound, tx, new(id)));
        // Each response as its data frames; when the stream task ends, the trailers say how.
        let pending: std::collections::VecDeque<Bytes> = std::collections::VecDeque::new();
        let frames = futures::stream::unfold(Some((rx, pending)), |state| async move {
            let (mut rx, mut pending) = state?;
            if let Some(data) = pending.pop_front() {
                return Some((Ok::<_, Status>(http_body::Frame::data(data)), Some((rx, pending))));
            }
            let status = match rx.recv().await {
                Some(Ok(response)) => {
                    pending.extend(P::frames(&response));
                    let first = pending.pop_front().unwrap_or_default();
                    return Some((Ok(http_body::Frame::data(first)), Some((rx, pending))));
                }
                Some(Err(status)) => status,
                None => Status::ok(""),
            };
            let mut trailers = http::HeaderMap::new();
            let _ = status.add_header(&mut trailers);
            Some((Ok(http_body::Frame::trailers(trailers)), None))
        });
        let mut response = http::Response::new(tonic::body::Body::new(http_body_util::StreamBody::new(frames)));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        response
    }
}

/// One protocol's per-stream state machine, as the stream task drives it.
trait Protocol: Send + 'static {
    type Request: Send + 'static;
    type Response: Send + 'static;
    /// `sotw` or `delta`, for logs and the admin API.
    const NAME: &'static str;
    fn node(req: &Self::Request) -> Option<&Node>;
    fn on_request(&mut self, req: &Self::Request, snapshot: Option<&Snapshot>, shared: &Shared) -> Vec<Self::Response>;
    fn on_snapshot(&mut self, snapshot: &Snapshot, shared: &Shared) -> Vec<Self::Response>;
    /// A response as gRPC message frames: HTTP/2 data, in order (one message may span several).
    fn frames(response: &Self::Response) -> Vec<Bytes>;
}

impl Protocol for sotw::SotwStream {
    type Request = DiscoveryRequest;
    type Response = sotw::Outgoing;
    const NAME: &'static str = "sotw";
    fn node(req: &DiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }
    fn on_request(
        &mut self,
        req: &DiscoveryRequest,
        snapshot: Option<&Snapshot>,
        shared: &Shared,
    ) -> Vec<sotw::Outgoing> {
        sotw::SotwStream::on_request(self, req, snapshot, shared)
    }
    fn on_snapshot(&mut self, snapshot: &Snapshot, shared: &Shared) -> Vec<sotw::Outgoing> {
        sotw::SotwStream::on_snapshot(self, snapshot, shared)
    }
    fn frames(response: &sotw::Outgoing) -> Vec<Bytes> {
        response.frames()
    }
}

impl Protocol for delta::DeltaStream {
    type Request = DeltaDiscoveryRequest;
    type Response = delta::Outgoing;
    const NAME: &'static str = "delta";
    fn node(req: &DeltaDiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }
    fn on_request(
        &mut self,
        req: &DeltaDiscoveryRequest,
        snapshot: Option<&Snapshot>,
        shared: &Shared,
    ) -> Vec<delta::Outgoing> {
        delta::DeltaStream::on_request(self, req, snapshot, shared)
    }
    fn on_snapshot(&mut self, snapshot: &Snapshot, shared: &Shared) -> Vec<delta::Outgoing> {
        delta::DeltaStream::on_snapshot(self, snapshot, shared)
    }
    fn frames(response: &delta::Outgoing) -> Vec<Bytes> {
        response.frames()
    }
}

/// Drives one ADS stream: requests from Envoy and new snapshots in, responses out, until either
/// side goes away.
async fn run_stream<P: Protocol>(
    shared: Arc<Shared>,
    id: u64,
    peer: Option<SocketAddr>,
    mut inbound: Streaming<P::Request>,
    tx: mpsc::Sender<Result<P::Response, Status>>,
    mut stream: P,
) where
    Streaming<P::Request>: futures::Stream<Item = Result<P::Request, Status>> + Unpin,
{
    let mut snapshots = shared.snapshot.subscribe();
    let peer = peer.map_or_else(|| "unknown".to_string(), |p| p.to_string());
    let mut registered = false;
    'stream: loop {
        let responses = tokio::select! {
            msg = inbound.next() => match msg {
                Some(Ok(req)) => {
                    if !registered {
                        let (node_id, node_cluster) = P::node(&req).map(|n| (n.id.clone(), n.cluster.clone())).unwrap_or_default();
                        tracing::info!(stream = id, node = %node_id, %peer, protocol = P::NAME, "Envoy connected");
                        if let Ok(mut map) = shared.envoys.lock() {
                            map.insert(id, EnvoyStatus { node_id, node_cluster, protocol: P::NAME, peer: peer.clone(), types: Default::default() });
                        }
                        registered = true;
                    }
                    // `borrow`, not `borrow_and_update`: a snapshot that arrived meanwhile must
                    // still wake the other branch so every type gets it, not only this one.
                    let snapshot = snapshots.borrow().clone();
                    stream.on_request(&req, snapshot.as_deref(), &shared)
                }
                Some(Err(status)) => {
                    if peer_went_away(&status) {
                        // Envoy stopped or restarted (as at every shutdown): nothing is wrong.
                        tracing::debug!(stream = id, %peer, error = %status.message(), "ADS stream closed: Envoy went away");
                    } else {
                        tracing::warn!(stream = id, %peer, code = ?status.code(), error = %status.message(), "ADS stream ended with an error");
                    }
                    break;
                }
                None => {
                    tracing::info!(stream = id, %peer, "ADS stream closed by Envoy");
                    break;
                }
            },
            changed = snapshots.changed() => {
                if changed.is_err() {
                    break;
                }
                let snapshot = snapshots.borrow_and_update().clone();
                match snapshot {
                    Some(s) => stream.on_snapshot(&s, &shared),
                    None => Vec::new(),
                }
            }
        };
        for r in responses {
            if tx.send(Ok(r)).await.is_err() {
                tracing::info!(stream = id, %peer, "ADS stream dropped by Envoy");
                break 'stream;
            }
        }
    }
    if let Ok(mut map) = shared.envoys.lock() {
        map.remove(&id);
    }
}
