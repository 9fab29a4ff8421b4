//! Fuzzing ADS request handling: random `DiscoveryRequest` and `DeltaDiscoveryRequest`
//! sequences (type URLs, versions, nonces, resource names, `error_detail`, node ids
//! including empty, huge and control-character ones) sent over loopback to a server
//! holding a real snapshot, streams half-closed or cancelled mid-way.
//!
//! The contract: no panic; every stream answers well-formed responses and then ends,
//! cleanly or with a gRPC status, within a bounded time; the server keeps serving a
//! well-behaved proxy throughout; and every fuzzed stream is unregistered once gone.
//! With an authenticator, random `authorization` metadata (absent, garbage, near-misses of the
//! valid token, huge) never panics the server and only the valid token for `NODE` ever
//! receives a response.
//! Cases are bounded by default; `MESHPLANE_FUZZ_CASES=100000` runs longer.

mod common;

use std::time::Duration;

use common::{NODE, config, key, snap};
use meshplane_xds::envoy_types::pb::envoy::config::core::v3::Node;
use meshplane_xds::envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use meshplane_xds::envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest,
};
use meshplane_xds::envoy_types::pb::google::rpc::Status as RpcStatus;
use meshplane_xds::testing::{TestServer, resource_names};
use meshplane_xds::{ResourceType, SnapshotCache};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use meshplane_xds::testing::{MapAuthenticator, SotwClient};
use meshplane_xds::{StreamIdentity, XdsServerConfig};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

/// Cases unless `MESHPLANE_FUZZ_CASES` says otherwise.
const DEFAULT_CASES: u32 = 2000;
/// How long a fuzzed stream may take to end after its last request.
const END_WITHIN: Duration = Duration::from_secs(10);
/// A well-behaved proxy is checked after this many fuzzed streams.
const PROBE_EVERY: u32 = 50;

fn cases() -> u32 {
    std::env::var("MESHPLANE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// One fuzzed stream.
#[derive(Clone, Debug)]
struct Script {
    delta: bool,
    /// Drop the stream after the first response instead of half-closing it.
    cancel: bool,
    requests: Vec<Req>,
}

/// The members of either request flavour.
#[derive(Clone, Debug)]
struct Req {
    node: Option<String>,
    type_url: String,
    version: String,
    nonce: String,
    names: Vec<String>,
    unsubscribe: Vec<String>,
    error: Option<(i32, String)>,
}

// === strategies ===

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        proptest::sample::select(
            &["1", "2", "3", "4", "5", "10", "a", "r", "s", "l", "*", "0"][..]
        )
        .prop_map(str::to_owned),
        any::<String>(),
        "[ -~\n\r\t\u{0}\u{202e}]{0,40}",
    ]
}

fn node_id() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just(NODE.to_owned()),
        2 => Just("mesh/demo/virtualNode/other".to_owned()),
        1 => Just("mesh/demo/virtualGateway/gw".to_owned()),
        1 => Just(String::new()),
        2 => any::<String>(),
        1 => "mesh/[a-z/\n\u{0}]{0,8}/virtualNode/[a-z/\n\r\u{202e}]{0,8}",
        1 => (1usize..200_000).prop_map(|n| format!("mesh/demo/virtualNode/{}", "n".repeat(n))),
    ]
}

fn type_url() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => proptest::sample::select(&ResourceType::ALL[..]).prop_map(|t| t.type_url().to_owned()),
        1 => Just(String::new()),
        1 => Just("type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig".to_owned()),
        1 => any::<String>(),
    ]
}

fn req() -> impl Strategy<Value = Req> {
    let error = proptest::option::weighted(
        0.2,
        (
            any::<i32>(),
            prop_oneof![text(), (1usize..100_000).prop_map(|n| "e\n".repeat(n))],
        ),
    );
    (
        proptest::option::weighted(0.3, node_id()),
        type_url(),
        text(),
        text(),
        proptest::collection::vec(text(), 0..5),
        proptest::collection::vec(text(), 0..3),
        error,
    )
        .prop_map(
            |(node, type_url, version, nonce, names, unsubscribe, error)| Req {
                node,
                type_url,
                version,
                nonce,
                names,
                unsubscribe,
                error,
            },
        )
}

fn script() -> impl Strategy<Value = Script> {
    (
        any::<bool>(),
        proptest::bool::weighted(0.2),
        proptest::collection::vec(req(), 0..8),
        proptest::option::weighted(0.8, node_id()),
    )
        .prop_map(|(delta, cancel, mut requests, first_node)| {
            // Most streams name a node first, as Envoy does, so the handling after the
            // handshake is reached; the rest test the handshake itself.
            if let (Some(first), Some(node)) = (requests.first_mut(), first_node) {
                first.node = Some(node);
            }
            Script {
                delta,
                cancel,
                requests,
            }
        })
}

// === running a script ===

fn node(id: &str) -> Node {
    Node {
        id: id.to_owned(),
        cluster: "fuzz".into(),
        ..Default::default()
    }
}

fn rpc_status(e: &Option<(i32, String)>) -> Option<RpcStatus> {
    e.as_ref().map(|(code, message)| RpcStatus {
        code: *code,
        message: message.clone(),
        details: Vec::new(),
    })
}

fn sotw_request(r: &Req) -> DiscoveryRequest {
    DiscoveryRequest {
        node: r.node.as_deref().map(node),
        type_url: r.type_url.clone(),
        version_info: r.version.clone(),
        response_nonce: r.nonce.clone(),
        resource_names: r.names.clone(),
        error_detail: rpc_status(&r.error),
        ..Default::default()
    }
}

fn delta_request(r: &Req) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: r.node.as_deref().map(node),
        type_url: r.type_url.clone(),
        response_nonce: r.nonce.clone(),
        resource_names_subscribe: r.names.clone(),
        resource_names_unsubscribe: r.unsubscribe.clone(),
        initial_resource_versions: r
            .names
            .iter()
            .map(|n| (n.clone(), r.version.clone()))
            .collect(),
        error_detail: rpc_status(&r.error),
        ..Default::default()
    }
}

/// How a stream ended.
#[derive(Debug, PartialEq)]
enum End {
    Clean,
    Status,
    Cancelled,
}

/// Runs `s` and returns how it ended and how many responses it carried.
async fn run_script(
    channel: &Channel,
    s: &Script,
    authorization: Option<&AsciiMetadataValue>,
) -> Result<(End, usize), String> {
    fn with<T>(stream: T, authorization: Option<&AsciiMetadataValue>) -> tonic::Request<T> {
        let mut request = tonic::Request::new(stream);
        if let Some(v) = authorization {
            request.metadata_mut().insert("authorization", v.clone());
        }
        request
    }
    let mut client =
        AggregatedDiscoveryServiceClient::new(channel.clone()).max_decoding_message_size(256 << 20);
    let mut responses = 0usize;
    macro_rules! drain {
        ($stream:expr) => {{
            let mut stream = $stream;
            loop {
                match tokio::time::timeout(END_WITHIN, stream.message()).await {
                    Err(_) => {
                        return Err(format!(
                            "stream still open {END_WITHIN:?} after its last request"
                        ));
                    }
                    Ok(Ok(Some(r))) => {
                        if r.type_url.is_empty() || r.nonce.is_empty() {
                            return Err(format!("malformed response {r:?}"));
                        }
                        responses += 1;
                        if s.cancel {
                            return Ok((End::Cancelled, responses));
                        }
                    }
                    Ok(Ok(None)) => return Ok((End::Clean, responses)),
                    Ok(Err(_)) => return Ok((End::Status, responses)),
                }
            }
        }};
    }
    if s.delta {
        let reqs: Vec<_> = s.requests.iter().map(delta_request).collect();
        match client
            .delta_aggregated_resources(with(tokio_stream::iter(reqs), authorization))
            .await
        {
            Ok(resp) => drain!(resp.into_inner()),
            Err(_) => Ok((End::Status, 0)),
        }
    } else {
        let reqs: Vec<_> = s.requests.iter().map(sotw_request).collect();
        match client
            .stream_aggregated_resources(with(tokio_stream::iter(reqs), authorization))
            .await
        {
            Ok(resp) => drain!(resp.into_inner()),
            Err(_) => Ok((End::Status, 0)),
        }
    }
}

/// A well-behaved proxy gets the node's clusters at the snapshot's version.
async fn probe(srv: &TestServer, version: &str) {
    let mut c = srv.sotw(NODE).await;
    c.subscribe(ResourceType::Cluster, &[], "");
    let r = c.recv().await;
    assert_eq!(r.type_url, ResourceType::Cluster.type_url());
    assert_eq!(r.version_info, version);
    assert_eq!(resource_names(&r), ["a", "b"]);
    c.ack(&r, &[]);
}

#[test]
fn ads_request_sequences_never_panic_and_the_server_keeps_serving() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cache = SnapshotCache::new();
    let s1 = snap(config(&["a", "b"], "one"));
    let version = s1.version(ResourceType::Cluster).to_owned();
    cache.set(key(), s1);
    let srv = rt.block_on(TestServer::start(&cache));
    let channel = rt.block_on(async {
        tonic::transport::Endpoint::from_shared(format!("http://{}", srv.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    });
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let n = std::cell::Cell::new(0u32);
    let ends = std::cell::RefCell::new(std::collections::BTreeMap::<String, u32>::new());
    let answered = std::cell::Cell::new(0u32);
    runner
        .run(&script(), |s| {
            let (end, responses) = rt
                .block_on(run_script(&channel, &s, None))
                .map_err(|e| TestCaseError::fail(format!("{e}\n{s:?}")))?;
            *ends.borrow_mut().entry(format!("{end:?}")).or_default() += 1;
            answered.set(answered.get() + u32::from(responses > 0));
            n.set(n.get() + 1);
            if n.get().is_multiple_of(PROBE_EVERY) {
                rt.block_on(probe(&srv, &version));
            }
            Ok(())
        })
        .unwrap();
    rt.block_on(probe(&srv, &version));
    let ends = ends.into_inner();
    eprintln!(
        "stream ends: {ends:?}, streams answered: {}",
        answered.get()
    );
    assert!(
        answered.get() > 0,
        "no fuzzed stream reached a response: {ends:?}"
    );
    // Every stream is gone from the status registry once it ended (bounded poll).
    rt.block_on(async {
        for _ in 0..500 {
            if srv.server.status().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("streams left registered: {:#?}", srv.server.status());
    });
}

/// The token the authenticated fuzz server accepts, for `NODE` only.
const TOKEN: &str = "Bearer mpt1.valid";

fn authorization() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        1 => Just(None),
        3 => Just(Some(TOKEN.as_bytes().to_vec())),
        2 => proptest::sample::select(&[
            "Bearer mpt1.valid ", "bearer mpt1.valid", "Bearer  mpt1.valid", "Bearer mpt1.vali",
            "Bearer", "Bearer ", "mpt1.valid", "Basic bXB0MQ==", "Bearer mpt1.valid\t",
        ][..]).prop_map(|s| Some(s.as_bytes().to_vec())),
        2 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Some),
        1 => "Bearer [ -~]{0,80}".prop_map(|s| Some(s.into_bytes())),
        1 => (1usize..16_000).prop_map(|n| Some(format!("Bearer {}", "x".repeat(n)).into_bytes())),
    ]
}

#[test]
fn random_authorization_metadata_never_panics_and_only_the_valid_token_is_served() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cache = SnapshotCache::new();
    cache.set(key(), snap(config(&["a", "b"], "one")));
    let auth = MapAuthenticator::default();
    auth.insert(
        TOKEN.trim_start_matches("Bearer "),
        StreamIdentity {
            node: NODE.into(),
            token_id: "fuzz".into(),
            expires_at: std::time::SystemTime::now() + Duration::from_secs(3600),
        },
    );
    let srv = rt.block_on(TestServer::start_with_config(
        std::sync::Arc::new(cache.clone()),
        XdsServerConfig {
            authenticator: Some(std::sync::Arc::new(auth)),
            ..XdsServerConfig::default()
        },
    ));
    let channel = rt.block_on(async {
        tonic::transport::Endpoint::from_shared(format!("http://{}", srv.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    });
    let mut runner = TestRunner::new(Config {
        cases: cases() / 4,
        failure_persistence: None,
        ..Config::default()
    });
    let answered = std::cell::Cell::new(0u32);
    runner
        .run(&(script(), authorization()), |(s, raw)| {
            // Values that cannot be HTTP header values never leave the client.
            let value = raw
                .as_deref()
                .and_then(|b| AsciiMetadataValue::try_from(b).ok());
            let (_, responses) = rt
                .block_on(run_script(&channel, &s, value.as_ref()))
                .map_err(|e| TestCaseError::fail(format!("{e}\n{s:?}")))?;
            if responses > 0 {
                let first_node = s.requests.first().and_then(|r| r.node.as_deref());
                prop_assert_eq!(value.as_ref().map(|v| v.as_bytes()), Some(TOKEN.as_bytes()));
                prop_assert_eq!(first_node, Some(NODE));
                answered.set(answered.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    assert!(
        answered.get() > 0,
        "no fuzzed stream with the valid token was served"
    );
    rt.block_on(async {
        let mut c = SotwClient::connect_with(srv.addr, NODE, Some(TOKEN))
            .await
            .unwrap();
        c.subscribe(ResourceType::Cluster, &[], "");
        assert_eq!(resource_names(&c.recv().await), ["a", "b"]);
        drop(c);
        for _ in 0..500 {
            if srv.server.status().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("streams left registered: {:#?}", srv.server.status());
    });
}
