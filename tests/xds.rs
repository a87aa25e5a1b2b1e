//! ADS protocol conversations against the in-process server, with a tonic client playing Envoy.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;

use attache::snapshot::ResourceType;
use attache::state::Shared;

fn snapshot_of(yaml: &str) -> Arc<attache::snapshot::Snapshot> {
    let loaded = attache::source::parse_text("test.yaml", yaml);
    let registry = attache::rules::Registry::core().unwrap();
    Arc::new(attache::translate(&loaded, &registry, &attache::Options::default()).snapshot)
}

fn mappings(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: {n}\nspec:\n  hostname: \"*\"\n  prefix: /{n}/\n  service: {n}\n"))
        .collect::<Vec<_>>()
        .join("---\n")
}

async fn start(shared: Arc<Shared>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(attache::xds::serve(listener, shared, None, std::future::pending()));
    format!("http://{addr}")
}

/// The next response on a stream, within 5 s.
async fn recv_within<T>(rx: &mut tonic::Streaming<T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), rx.next())
        .await
        .expect("a response within 5s")
        .expect("the stream is open")
        .expect("a response, not an error")
}

/// Asserts that nothing arrives on a stream for 300 ms.
async fn assert_quiet<T: std::fmt::Debug>(rx: &mut tonic::Streaming<T>) {
    if let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(300), rx.next()).await {
        panic!("unexpected response: {r:?}");
    }
}

struct FakeEnvoy {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: tonic::Streaming<DiscoveryResponse>,
    node: Option<Node>,
}

impl FakeEnvoy {
    async fn connect(url: &str, node_id: &str) -> FakeEnvoy {
        let mut client = AggregatedDiscoveryServiceClient::connect(url.to_string())
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(16);
        let response = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap();
        FakeEnvoy {
            tx,
            rx: response.into_inner(),
            node: Some(Node {
                id: node_id.into(),
                cluster: "test".into(),
                ..Default::default()
            }),
        }
    }

    async fn send(&mut self, ty: ResourceType, version: &str, nonce: &str, names: &[&str], error: Option<&str>) {
        let req = DiscoveryRequest {
            version_info: version.into(),
            node: self.node.take(),
            resource_names: names.iter().map(|s| (*s).to_string()).collect(),
            type_url: ty.type_url(),
            response_nonce: nonce.into(),
            error_detail: error.map(|m| RpcStatus {
                code: 3,
                message: m.into(),
                details: vec![],
            }),
            ..Default::default()
        };
        self.tx.send(req).await.unwrap();
    }

    async fn recv(&mut self) -> DiscoveryResponse {
        recv_within(&mut self.rx).await
    }

    /// Asserts that nothing arrives for a while.
    async fn quiet(&mut self) {
        assert_quiet(&mut self.rx).await;
    }
}

fn names(r: &DiscoveryResponse) -> Vec<String> {
    use prost::Message as _;
    r.resources
        .iter()
        .map(|any| match ResourceType::from_type_url(&any.type_url) {
            Some(ResourceType::Cluster) => {
                envoy_types::pb::envoy::config::cluster::v3::Cluster::decode(any.value.as_slice())
                    .unwrap()
                    .name
            }
            Some(ResourceType::Route) => {
                envoy_types::pb::envoy::config::route::v3::RouteConfiguration::decode(any.value.as_slice())
                    .unwrap()
                    .name
            }
            Some(ResourceType::Listener) => {
                envoy_types::pb::envoy::config::listener::v3::Listener::decode(any.value.as_slice())
                    .unwrap()
                    .name
            }
            _ => String::new(),
        })
        .collect()
}

#[tokio::test]
async fn ack_nack_stale_nonce_and_updates() {
    let shared = Arc::new(Shared::default());
    shared.snapshot.send_replace(Some(snapshot_of(&mappings(&["a", "b"]))));
    let url = start(Arc::clone(&shared)).await;
    let mut envoy = FakeEnvoy::connect(&url, "node-1").await;

    // First request: the full set of clusters.
    envoy.send(ResourceType::Cluster, "", "", &[], None).await;
    let r1 = envoy.recv().await;
    assert_eq!(r1.type_url, ResourceType::Cluster.type_url());
    assert_eq!(names(&r1), vec!["cluster_a_80", "cluster_b_80"]);
    assert!(!r1.nonce.is_empty() && !r1.version_info.is_empty());

    // ACK: nothing more to send.
    envoy
        .send(ResourceType::Cluster, &r1.version_info, &r1.nonce, &[], None)
        .await;
    envoy.quiet().await;
    let acked = shared.envoys.lock().unwrap().values().next().unwrap().types["clusters"]
        .acked_version
        .clone();
    assert_eq!(acked.as_deref(), Some(r1.version_info.as_str()));

    // A new snapshot: a new version with the full state (a cluster removed is absent).
    shared.snapshot.send_replace(Some(snapshot_of(&mappings(&["a", "c"]))));
    let r2 = envoy.recv().await;
    assert_ne!(r2.version_info, r1.version_info);
    assert_ne!(r2.nonce, r1.nonce);
    assert_eq!(names(&r2), vec!["cluster_a_80", "cluster_c_80"]);

    // A stale request (old nonce) is ignored, even with other content.
    envoy
        .send(ResourceType::Cluster, &r1.version_info, &r1.nonce, &["x"], None)
        .await;
    envoy.quiet().await;

    // NACK: recorded, counted, and the same content is not sent again.
    envoy
        .send(
            ResourceType::Cluster,
            &r1.version_info,
            &r2.nonce,
            &[],
            Some("bad cluster"),
        )
        .await;
    envoy.quiet().await;
    {
        let envoys = shared.envoys.lock().unwrap();
        let status = &envoys.values().next().unwrap().types["clusters"];
        let nack = status.last_nack.as_ref().expect("NACK recorded");
        assert_eq!(nack.message, "bad cluster");
        assert_eq!(nack.version, r2.version_info);
        assert_eq!(status.acked_version.as_deref(), Some(r1.version_info.as_str()));
    }
    assert!(shared
        .render_metrics()
        .contains("attache_xds_nacks_total{type=\"clusters\"} 1"));

    // Republishing identical content does not resend the rejected version.
    shared.snapshot.send_replace(Some(snapshot_of(&mappings(&["c", "a"]))));
    envoy.quiet().await;

    // A later good config is sent, and its ACK clears the NACK.
    shared.snapshot.send_replace(Some(snapshot_of(&mappings(&["a"]))));
    let r3 = envoy.recv().await;
    assert_eq!(names(&r3), vec!["cluster_a_80"]);
    envoy
        .send(ResourceType::Cluster, &r3.version_info, &r3.nonce, &[], None)
        .await;
    envoy.quiet().await;
    let envoys = shared.envoys.lock().unwrap();
    assert!(envoys.values().next().unwrap().types["clusters"].last_nack.is_none());
}

#[tokio::test]
async fn rds_answers_requested_names_and_subscription_changes() {
    let shared = Arc::new(Shared::default());
    shared.snapshot.send_replace(Some(snapshot_of(&mappings(&["a"]))));
    let url = start(Arc::clone(&shared)).await;
    let mut envoy = FakeEnvoy::connect(&url, "node-1").await;

    envoy.send(ResourceType::Route, "", "", &["routes-8080"], None).await;
    let r1 = envoy.recv().await;
    assert_eq!(names(&r1), vec!["routes-8080"]);
    envoy
        .send(ResourceType::Route, &r1.version_info, &r1.nonce, &["routes-8080"], None)
        .await;
    envoy.quiet().await;

    // Subscribing to a name that does not exist: answered (without it) even though nothing changed.
    envoy
        .send(
            ResourceType::Route,
            &r1.version_info,
            &r1.nonce,
            &["routes-8080", "routes-9999"],
            None,
        )
        .await;
    let r2 = envoy.recv().await;
    assert_eq!(names(&r2), vec!["routes-8080"]);

    // Unsubscribing from everything: an empty response.
    envoy
        .send(ResourceType::Route, &r2.version_info, &r2.nonce, &[], None)
        .await;
    let r3 = envoy.recv().await;
    assert!(r3.resources.is_empty());
}

#[tokio::test]
async fn snapshot_changes_go_out_in_make_before_break_order() {
    let shared = Arc::new(Shared::default());
    shared.snapshot.send_replace(Some(snapshot_of(&mappings(&["a"]))));
    let url = start(Arc::clone(&shared)).await;
    let mut envoy = FakeEnvoy::connect(&url, "node-1").await;
    // Subscribe in the "wrong" order: routes, listeners, clusters.
    for (ty, names) in [
        (ResourceType::Route, vec!["routes-8080"]),
        (ResourceType::Listener, vec![]),
        (ResourceType::Cluster, vec![]),
    ] {
        envoy.send(ty, "", "", &names, None).await;
        let r = envoy.recv().await;
        envoy.send(ty, &r.version_info, &r.nonce, &names, None).await;
    }
    envoy.quiet().await;

    // A change that adds a cluster and a route to it: the cluster first, and the route only once
    // Envoy has answered the cluster update.
    shared.snapshot.send_replace(Some(snapshot_of(&mappings(&["a", "b"]))));
    let first = envoy.recv().await;
    assert_eq!(first.type_url, ResourceType::Cluster.type_url());
    envoy.quiet().await;
    envoy
        .send(ResourceType::Cluster, &first.version_info, &first.nonce, &[], None)
        .await;
    let second = envoy.recv().await;
    assert_eq!(second.type_url, ResourceType::Route.type_url());
    envoy.quiet().await;
}

#[tokio::test]
async fn two_envoys_are_served_independently() {
    let shared = Arc::new(Shared::default());
    shared.snapshot.send_replace(Some(snapshot_of(&mappings(&["a"]))));
    let url = start(Arc::clone(&shared)).await;
    let mut one = FakeEnvoy::connect(&url, "node-1").await;
    let mut two = FakeEnvoy::connect(&url, "node-2").await;
    one.send(ResourceType::Cluster, "", "", &[], None).await;
    let r1 = one.recv().await;
    // `two` never ACKs or reads its updates; `one` keeps getting its own.
    two.send(ResourceType::Cluster, "", "", &[], None).await;
    let r2 = two.recv().await;
    assert_eq!(
        r1.version_info, r2.version_info,
        "same content, same version on every stream"
    );
    one.send(ResourceType::Cluster, &r1.version_info, &r1.nonce, &[], None)
        .await;
    for i in 0..20 {
        let names: Vec<String> = (0..=i).map(|n| format!("m{n}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        shared.snapshot.send_replace(Some(snapshot_of(&mappings(&refs))));
        let r = one.recv().await;
        one.send(ResourceType::Cluster, &r.version_info, &r.nonce, &[], None)
            .await;
    }
    let nodes: Vec<String> = shared
        .envoys
        .lock()
        .unwrap()
        .values()
        .map(|e| e.node_id.clone())
        .collect();
    assert_eq!(nodes, vec!["node-1", "node-2"]);
}

// ---- Delta (incremental) xDS ----

struct FakeDeltaEnvoy {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: tonic::Streaming<envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse>,
    node: Option<Node>,
}

type DeltaResponse = envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse;

impl FakeDeltaEnvoy {
    async fn connect(url: &str, node_id: &str) -> FakeDeltaEnvoy {
        let mut client = AggregatedDiscoveryServiceClient::connect(url.to_string())
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(16);
        let response = client
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap();
        FakeDeltaEnvoy {
            tx,
            rx: response.into_inner(),
            node: Some(Node {
                id: node_id.into(),
                ..Default::default()
            }),
        }
    }

    async fn send(
        &mut self,
        ty: ResourceType,
        nonce: &str,
        subscribe: &[&str],
        unsubscribe: &[&str],
        initial: &[(&str, &str)],
        error: Option<&str>,
    ) {
        let req = DeltaDiscoveryRequest {
            node: self.node.take(),
            type_url: ty.type_url(),
            resource_names_subscribe: subscribe.iter().map(|s| (*s).to_string()).collect(),
            resource_names_unsubscribe: unsubscribe.iter().map(|s| (*s).to_string()).collect(),
            initial_resource_versions: initial
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
            response_nonce: nonce.into(),
            error_detail: error.map(|m| RpcStatus {
                code: 3,
                message: m.into(),
                details: vec![],
            }),
            ..Default::default()
        };
        self.tx.send(req).await.unwrap();
    }

    async fn recv(&mut self) -> DeltaResponse {
        recv_within(&mut self.rx).await
    }

    async fn quiet(&mut self) {
        assert_quiet(&mut self.rx).await;
    }
}

fn upserted(r: &DeltaResponse) -> Vec<String> {
    r.resources.iter().map(|x| x.name.clone()).collect()
}

#[tokio::test]
async fn delta_wildcard_sends_only_changes_then_removals() {
    let shared = Arc::new(Shared::default());
    shared.snapshot.send_replace(Some(snapshot_of(&mappings(&["a", "b"]))));
    let url = start(Arc::clone(&shared)).await;
    let mut envoy = FakeDeltaEnvoy::connect(&url, "d1").await;

    // Legacy wildcard: a first CDS request naming nothing.
    envoy.send(ResourceType::Cluster, "", &[], &[], &[], None).await;
    let r1 = envoy.recv().await;
    assert_eq!(upserted(&r1), vec!["cluster_a_80", "cluster_b_80"]);
    assert!(r1
        .resources
        .iter()
        .all(|r| !r.version.is_empty() && r.resource.is_some()));
    envoy.send(ResourceType::Cluster, &r1.nonce, &[], &[], &[], None).await;
    envoy.quiet().await;

    // b removed, c added: the addition first, then the removal; a is not resent.
    shared.snapshot.send_replace(Some(snapshot_of(&mappings(&["a", "c"]))));
    let add = envoy.recv().await;
    assert_eq!(
        (upserted(&add), add.removed_resources.clone()),
        (vec!["cluster_c_80".to_string()], vec![])
    );
    let remove = envoy.recv().await;
    assert_eq!(
        (upserted(&remove), remove.removed_resources.clone()),
        (vec![], vec!["cluster_b_80".to_string()])
    );
    envoy.send(ResourceType::Cluster, &add.nonce, &[], &[], &[], None).await;
    envoy
        .send(ResourceType::Cluster, &remove.nonce, &[], &[], &[], None)
        .await;
    envoy.quiet().await;

    // NACK: recorded; the rejected content is not sent again; the next change is.
    shared
        .snapshot
        .send_replace(Some(snapshot_of(&mappings(&["a", "c", "d"]))));
    let r = envoy.recv().await;
    assert_eq!(upserted(&r), vec!["cluster_d_80"]);
    envoy
        .send(ResourceType::Cluster, &r.nonce, &[], &[], &[], Some("no thanks"))
        .await;
    envoy.quiet().await;
    assert_eq!(
        shared.envoys.lock().unwrap().values().next().unwrap().types["clusters"]
            .last_nack
            .as_ref()
            .map(|n| n.message.clone()),
        Some("no thanks".to_string())
    );
    shared
        .snapshot
        .send_replace(Some(snapshot_of(&mappings(&["a", "c", "d", "e"]))));
    let r = envoy.recv().await;
    assert_eq!(upserted(&r), vec!["cluster_e_80"]);
}

#[tokio::test]
async fn delta_reconnect_with_initial_versions_resends_nothing_envoy_has() {
    let shared = Arc::new(Shared::default());
    let snapshot = snapshot_of(&mappings(&["a", "b"]));
    let va = snapshot.get(ResourceType::Cluster, "cluster_a_80").unwrap().version;
    let vb = snapshot.get(ResourceType::Cluster, "cluster_b_80").unwrap().version;
    shared.snapshot.send_replace(Some(snapshot));
    let url = start(Arc::clone(&shared)).await;

    // Envoy has both at the current versions: nothing to send.
    let mut envoy = FakeDeltaEnvoy::connect(&url, "d1").await;
    envoy
        .send(
            ResourceType::Cluster,
            "",
            &[],
            &[],
            &[("cluster_a_80", va.as_str()), ("cluster_b_80", vb.as_str())],
            None,
        )
        .await;
    envoy.quiet().await;

    // Envoy has an old b and a cluster that no longer exists: b is sent, the other removed.
    let mut envoy = FakeDeltaEnvoy::connect(&url, "d2").await;
    envoy
        .send(
            ResourceType::Cluster,
            "",
            &[],
            &[],
            &[
                ("cluster_a_80", va.as_str()),
                ("cluster_b_80", "old"),
                ("cluster_gone_80", "x"),
            ],
            None,
        )
        .await;
    let r = envoy.recv().await;
    assert_eq!(upserted(&r), vec!["cluster_b_80"]);
    assert_eq!(r.removed_resources, vec!["cluster_gone_80"]);
}

#[tokio::test]
async fn delta_explicit_subscriptions_and_unknown_names() {
    let shared = Arc::new(Shared::default());
    shared.snapshot.send_replace(Some(snapshot_of(&mappings(&["a"]))));
    let url = start(Arc::clone(&shared)).await;
    let mut envoy = FakeDeltaEnvoy::connect(&url, "d1").await;

    envoy
        .send(ResourceType::Route, "", &["routes-8080", "routes-9999"], &[], &[], None)
        .await;
    let r = envoy.recv().await;
    assert_eq!(upserted(&r), vec!["routes-8080"]);
    assert_eq!(
        r.removed_resources,
        vec!["routes-9999"],
        "a subscribed name that does not exist is reported removed"
    );
    envoy.send(ResourceType::Route, &r.nonce, &[], &[], &[], None).await;
    envoy.quiet().await;

    // Unsubscribe (with a stale nonce: subscription changes count whatever the nonce), then
    // subscribe again: sent again.
    envoy
        .send(ResourceType::Route, "0", &[], &["routes-8080"], &[], None)
        .await;
    envoy.quiet().await;
    envoy
        .send(ResourceType::Route, "0", &["routes-8080"], &[], &[], None)
        .await;
    let r = envoy.recv().await;
    assert_eq!(upserted(&r), vec!["routes-8080"]);
    assert!(r.removed_resources.is_empty());

    // Only subscribed route configurations are sent when the snapshot changes.
    shared.snapshot.send_replace(Some(snapshot_of(&mappings(&["a", "b"]))));
    let r = envoy.recv().await;
    assert_eq!(r.type_url, ResourceType::Route.type_url());
    assert_eq!(upserted(&r), vec!["routes-8080"]);
}

#[tokio::test]
async fn delta_and_sotw_streams_side_by_side() {
    let shared = Arc::new(Shared::default());
    shared.snapshot.send_replace(Some(snapshot_of(&mappings(&["a"]))));
    let url = start(Arc::clone(&shared)).await;
    let mut d = FakeDeltaEnvoy::connect(&url, "delta-node").await;
    let mut s = FakeEnvoy::connect(&url, "sotw-node").await;
    d.send(ResourceType::Cluster, "", &["*"], &[], &[], None).await;
    s.send(ResourceType::Cluster, "", "", &[], None).await;
    assert_eq!(upserted(&d.recv().await), vec!["cluster_a_80"]);
    assert_eq!(names(&s.recv().await), vec!["cluster_a_80"]);
    let protocols: Vec<&str> = shared.envoys.lock().unwrap().values().map(|e| e.protocol).collect();
    assert_eq!(protocols, vec!["delta", "sotw"]);
}

#[tokio::test]
async fn sotw_removes_a_cluster_only_after_the_routes_that_used_it() {
    let shared = Arc::new(Shared::default());
    shared.snapshot.send_replace(Some(snapshot_of(&mappings(&["a"]))));
    let url = start(Arc::clone(&shared)).await;
    let mut envoy = FakeEnvoy::connect(&url, "n").await;
    for (ty, names) in [
        (ResourceType::Cluster, vec![]),
        (ResourceType::Listener, vec![]),
        (ResourceType::Route, vec!["routes-8080"]),
    ] {
        envoy.send(ty, "", "", &names, None).await;
        let r = envoy.recv().await;
        envoy.send(ty, &r.version_info, &r.nonce, &names, None).await;
    }
    envoy.quiet().await;

    // `a` is replaced by `b`: clusters a and b; the routes once that is ACKed; `a` goes once the
    // routes are ACKed.
    shared.snapshot.send_replace(Some(snapshot_of(&mappings(&["b"]))));
    let cds = envoy.recv().await;
    assert_eq!(names(&cds), vec!["cluster_a_80", "cluster_b_80"]);
    envoy.quiet().await;
    envoy
        .send(ResourceType::Cluster, &cds.version_info, &cds.nonce, &[], None)
        .await;
    let rds = envoy.recv().await;
    assert_eq!(rds.type_url, ResourceType::Route.type_url());
    envoy.quiet().await;
    envoy
        .send(
            ResourceType::Route,
            &rds.version_info,
            &rds.nonce,
            &["routes-8080"],
            None,
        )
        .await;
    let cds2 = envoy.recv().await;
    assert_eq!(names(&cds2), vec!["cluster_b_80"]);
}

#[tokio::test]
async fn delta_removes_a_cluster_only_after_the_routes_that_used_it() {
    let shared = Arc::new(Shared::default());
    shared.snapshot.send_replace(Some(snapshot_of(&mappings(&["a"]))));
    let url = start(Arc::clone(&shared)).await;
    let mut envoy = FakeDeltaEnvoy::connect(&url, "n").await;
    for (ty, names) in [
        (ResourceType::Cluster, vec![]),
        (ResourceType::Listener, vec![]),
        (ResourceType::Route, vec!["routes-8080"]),
    ] {
        envoy.send(ty, "", &names, &[], &[], None).await;
        let r = envoy.recv().await;
        envoy.send(ty, &r.nonce, &[], &[], &[], None).await;
    }
    envoy.quiet().await;

    // `a` is replaced by `b`: cluster b first; the routes once that is ACKed; the removal of `a`
    // once the routes are ACKed.
    shared.snapshot.send_replace(Some(snapshot_of(&mappings(&["b"]))));
    let cds = envoy.recv().await;
    assert_eq!(
        (upserted(&cds), cds.removed_resources.len()),
        (vec!["cluster_b_80".to_string()], 0)
    );
    envoy.quiet().await;
    envoy.send(ResourceType::Cluster, &cds.nonce, &[], &[], &[], None).await;
    let rds = envoy.recv().await;
    assert_eq!(rds.type_url, ResourceType::Route.type_url());
    envoy.quiet().await;
    envoy.send(ResourceType::Route, &rds.nonce, &[], &[], &[], None).await;
    let removal = envoy.recv().await;
    assert_eq!(
        (upserted(&removal), removal.removed_resources.clone()),
        (vec![], vec!["cluster_a_80".to_string()])
    );
}
