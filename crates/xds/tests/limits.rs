//! Hostile and unlucky clients of the ADS port (issue 16): oversized node ids and
//! subscriptions, undecodable requests, NACK storms, forged log lines, silent sockets.

mod common;

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ResourceType::{Cluster as CDS, Endpoint as EDS};
use common::*;
use meshplane_xds::envoy_types::pb::envoy::config::core::v3::Node;
use meshplane_xds::envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest,
};
use meshplane_xds::testing::TestServer;
use meshplane_xds::{
    MAX_NACK_MESSAGE_LEN, MAX_NAMES_PER_TYPE, MAX_NODE_ID_LEN, ResourceType, SnapshotCache,
    TRUNCATED_MARKER, XdsServerConfig,
};
use prost::Message;
use prost::bytes::{Buf, BufMut};
use tokio::io::AsyncReadExt;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;

const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// A node id of exactly `len` bytes that parses as a virtual node of mesh `demo`.
fn node_id_of_len(len: usize) -> String {
    let prefix = "mesh/demo/virtualNode/";
    format!("{prefix}{}", "n".repeat(len - prefix.len()))
}

#[tokio::test]
async fn oversized_node_id_is_refused_and_leaves_nothing_behind() {
    let cache = SnapshotCache::new();
    let srv = TestServer::start(&cache).await;
    let mut events = srv.server.subscribe_events();

    let mut c = srv.sotw(&node_id_of_len(100 * 1024)).await;
    c.subscribe(CDS, &[], "");
    let err = c.closed().await.expect_err("stream must fail");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .contains(&format!("the limit is {MAX_NODE_ID_LEN} bytes")),
        "{}",
        err.message()
    );
    let mut d = srv.delta(&node_id_of_len(100 * 1024)).await;
    d.subscribe(CDS, &[], &[]);
    let err = d.closed().await.expect_err("stream must fail");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(srv.server.status().is_empty());
    assert!(events.try_recv().is_err(), "no event for refused streams");
    assert_eq!(cache.entries(), 0, "no cache entry for refused streams");

    // Exactly at the limit: accepted, registered and served.
    let id = node_id_of_len(MAX_NODE_ID_LEN);
    let mut ok = srv.sotw(&id).await;
    ok.subscribe(CDS, &[], "");
    let st = wait_subscribed(&srv.server, 1).await;
    assert_eq!(st.stream.node_id.len(), MAX_NODE_ID_LEN);
    cache.set(
        meshplane_xds::NodeKey::parse(&id).unwrap(),
        snap(config(&["a"], "one")),
    );
    assert_eq!(type_of(&ok.recv().await.type_url), CDS);
}

#[tokio::test]
async fn node_id_with_a_line_break_is_refused_and_cannot_forge_a_log_line() {
    let log = CapturedLog::install();
    let cache = SnapshotCache::new();
    let srv = TestServer::start(&cache).await;
    let forged = "2026-12-06T00:00:00.000000Z  INFO meshplane_xds: forged line";
    let mut c = srv
        .sotw(&format!("mesh/demo/virtualNode/x\n{forged}"))
        .await;
    c.subscribe(CDS, &[], "");
    let err = c.closed().await.expect_err("stream must fail");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(srv.server.status().is_empty());
    let text = log.text();
    assert!(
        text.contains(r"virtualNode/x\n2026-12-06"),
        "the refusal is logged with the line break escaped:\n{text}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("2026-12-06T00:00:00")),
        "forged line in the log:\n{text}"
    );
}

/// 1,000 NACKs of 1 MB each: the kept text is bounded and marked, the log has one NACK
/// line (per node per minute), and a line break in the text forges nothing.
#[tokio::test]
async fn nack_storm_is_stored_bounded_and_logged_once() {
    let log = CapturedLog::install();
    let cache = SnapshotCache::new();
    cache.set(key(), snap(config(&["a"], "one")));
    let srv = TestServer::start(&cache).await;
    let mut c = srv.sotw(NODE).await;
    c.subscribe(CDS, &[], "");
    let r = c.recv().await;
    let message = format!(
        "rejected\nNACK FORGED LINE {}",
        "x".repeat(1 << 20) // 1 MiB
    );
    let started = Instant::now();
    let nacks = 1000;
    let batch = 20; // bounds what the client buffers (20 MiB)
    let mut st = None;
    for sent in (batch..=nacks).step_by(batch as usize) {
        for _ in 0..batch {
            c.nack(&r, "", &[], &message);
        }
        st = Some(
            wait_status_for(&srv.server, Duration::from_secs(30), |p| {
                p.type_status(CDS).is_some_and(|t| t.nacks == sent)
            })
            .await,
        );
    }
    let st = st.unwrap();
    eprintln!("{nacks} NACKs of 1 MiB handled in {:?}", started.elapsed());
    let kept = &st
        .type_status(CDS)
        .unwrap()
        .last_nack
        .as_ref()
        .unwrap()
        .message;
    assert_eq!(kept.len(), MAX_NACK_MESSAGE_LEN + TRUNCATED_MARKER.len());
    assert!(kept.starts_with("rejected\nNACK FORGED") && kept.ends_with(TRUNCATED_MARKER));

    let text = log.text();
    let nack_lines: Vec<&str> = text.lines().filter(|l| l.contains(" nack ")).collect();
    assert_eq!(
        nack_lines.len(),
        1,
        "one WARN line per node per minute:\n{text}"
    );
    assert!(nack_lines[0].contains("WARN"), "{}", nack_lines[0]);
    assert!(
        text.len() < 64 * 1024,
        "the log holds {} bytes after the storm",
        text.len()
    );
    assert!(
        !text.lines().any(|l| l.starts_with("NACK FORGED")),
        "{text}"
    );
}

#[tokio::test]
async fn undecodable_requests_end_the_stream_with_invalid_argument() {
    let cache = SnapshotCache::new();
    cache.set(key(), snap(config(&["a"], "one")));
    let srv = TestServer::start(&cache).await;
    // Field 1 (length-delimited) whose length runs past the end of the message.
    let garbage = vec![0x0a, 0xff, 0x01, b'x'];
    let node = Some(Node {
        id: NODE.into(),
        ..Default::default()
    });
    let sotw_first = DiscoveryRequest {
        node: node.clone(),
        type_url: CDS.type_url().into(),
        ..Default::default()
    }
    .encode_to_vec();
    let delta_first = DeltaDiscoveryRequest {
        node,
        type_url: CDS.type_url().into(),
        ..Default::default()
    }
    .encode_to_vec();
    let cases = [
        ("sotw, first request", SOTW_PATH, vec![garbage.clone()]),
        (
            "sotw, later request",
            SOTW_PATH,
            vec![sotw_first, garbage.clone()],
        ),
        ("delta, first request", DELTA_PATH, vec![garbage.clone()]),
        (
            "delta, later request",
            DELTA_PATH,
            vec![delta_first, garbage],
        ),
    ];
    for (case, path, frames) in cases {
        let status = raw_stream_status(srv.addr, path, frames).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
        assert!(
            status.message().contains("malformed request"),
            "{case}: {status:?}"
        );
    }
}

#[tokio::test]
async fn subscriptions_past_the_name_limit_are_refused() {
    let cache = SnapshotCache::new();
    let srv = TestServer::start(&cache).await;
    let names: Vec<String> = (0..MAX_NAMES_PER_TYPE + 2)
        .map(|i| format!("c{i}"))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut c = srv.sotw(NODE).await;
    c.subscribe(EDS, &refs[..=MAX_NAMES_PER_TYPE], "");
    let err = c.closed().await.expect_err("stream must fail");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains(&format!("the limit is {MAX_NAMES_PER_TYPE}")),
        "{}",
        err.message()
    );

    // Delta subscriptions accumulate over requests: the bound holds across them.
    let half = MAX_NAMES_PER_TYPE / 2 + 1;
    let mut d = srv.delta(NODE).await;
    d.subscribe(EDS, &refs[..half], &[]);
    wait_subscribed(&srv.server, 1).await;
    d.update(EDS, &refs[half..2 * half], &[], "");
    let err = d.closed().await.expect_err("stream must fail");
    assert_eq!(err.code(), Code::InvalidArgument);

    let long = "n".repeat(meshplane_xds::MAX_RESOURCE_NAME_LEN + 1);
    let mut c = srv.sotw(NODE).await;
    c.subscribe(EDS, &[&long], "");
    let err = c.closed().await.expect_err("stream must fail");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
}

#[tokio::test]
async fn silent_sockets_and_streams_are_closed_after_the_handshake_timeout() {
    let cache = SnapshotCache::new();
    let config = XdsServerConfig {
        handshake_timeout: Duration::from_millis(300),
        ..XdsServerConfig::default()
    };
    let srv = TestServer::start_with_config(Arc::new(cache.clone()), config).await;

    // A TCP connection that never sends the HTTP/2 preface.
    let started = Instant::now();
    let mut sock = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // the server's SETTINGS frame, if any
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "silent connection still open after 5 s");
    assert!(started.elapsed() >= Duration::from_millis(250));

    // A stream that never sends its first request.
    let mut c = srv.sotw(NODE).await;
    let err = c.closed().await.expect_err("stream must fail");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(srv.server.status().is_empty());
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_and_slots_are_reused() {
    let cache = SnapshotCache::new();
    cache.set(key(), snap(config(&["a"], "one")));
    let config = XdsServerConfig {
        max_connections: 50,
        ..XdsServerConfig::default()
    };
    let srv = TestServer::start_with_config(Arc::new(cache.clone()), config).await;
    let mut socks = Vec::new();
    for _ in 0..60 {
        socks.push(tokio::net::TcpStream::connect(srv.addr).await.unwrap());
    }
    let mut open = Vec::new();
    let mut closed = 0;
    for mut s in socks {
        if is_closed(&mut s, Duration::from_millis(50)).await {
            closed += 1;
        } else {
            open.push(s);
        }
    }
    assert_eq!((open.len(), closed), (50, 10));

    assert_eq!(srv.server.connections(), 50);
    // Once some close, their slots are free again.
    open.truncate(40);
    let deadline = Instant::now() + Duration::from_secs(5);
    while srv.server.connections() > 40 {
        assert!(
            Instant::now() < deadline,
            "{} connections",
            srv.server.connections()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut c = srv.sotw(NODE).await;
    c.subscribe(CDS, &[], "");
    assert_eq!(type_of(&c.recv().await.type_url), CDS);
}

#[tokio::test]
async fn connections_without_a_stream_are_closed_after_the_idle_timeout() {
    let cache = SnapshotCache::new();
    cache.set(key(), snap(config(&["a"], "one")));
    let config = XdsServerConfig {
        idle_timeout: Duration::from_millis(300),
        ..XdsServerConfig::default()
    };
    let srv = TestServer::start_with_config(Arc::new(cache.clone()), config).await;

    // HTTP/2 handshake done, no stream ever opened.
    let _channel = tonic::transport::Endpoint::from_shared(format!("http://{}", srv.addr))
        .unwrap()
        .connect()
        .await
        .expect("connect");
    wait_connections(&srv.server, 1).await;
    wait_connections(&srv.server, 0).await;

    // A connection with a stream stays open past the idle timeout; it goes once the
    // stream has ended.
    let mut c = srv.sotw(NODE).await;
    c.subscribe(CDS, &[], "");
    c.recv().await;
    c.expect_silence(Duration::from_millis(900)).await;
    assert_eq!(srv.server.connections(), 1);
    assert_eq!(srv.server.status().len(), 1);
    drop(c);
    wait_connections(&srv.server, 0).await;
}

#[tokio::test]
async fn streams_past_the_stream_cap_are_refused_until_one_ends() {
    let cache = SnapshotCache::new();
    cache.set(key(), snap(config(&["a"], "one")));
    let config = XdsServerConfig {
        max_streams: 3,
        ..XdsServerConfig::default()
    };
    let srv = TestServer::start_with_config(Arc::new(cache.clone()), config).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = srv.sotw(NODE).await;
        c.subscribe(CDS, &[], "");
        c.recv().await;
        held.push(c);
    }
    let refused = raw_stream_status(srv.addr, SOTW_PATH, Vec::new()).await;
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("the limit is 3"), "{refused:?}");
    assert_eq!(srv.server.streams(), 3);
    held.pop();
    let deadline = Instant::now() + Duration::from_secs(5);
    while srv.server.streams() > 2 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut c = srv.sotw(NODE).await;
    c.subscribe(CDS, &[], "");
    assert_eq!(type_of(&c.recv().await.type_url), CDS);
}

// --- helpers ---

/// Polls until the server has `n` open connections (5 s max).
async fn wait_connections(server: &meshplane_xds::XdsServer, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.connections() != n {
        assert!(
            Instant::now() < deadline,
            "{} connections, expected {n}",
            server.connections()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether the server closed `s` within `within` (EOF or reset); data is skipped.
async fn is_closed(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

async fn wait_status_for(
    server: &meshplane_xds::XdsServer,
    within: Duration,
    pred: impl Fn(&meshplane_xds::ProxyStatus) -> bool,
) -> meshplane_xds::ProxyStatus {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(p) = server.status().into_iter().find(|p| pred(p)) {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("status condition not reached: {:#?}", server.status());
}

/// Opens a stream on `path`, sends `frames` as raw gRPC messages, and returns the status
/// the server ends the stream with (responses before it are skipped).
async fn raw_stream_status(
    addr: std::net::SocketAddr,
    path: &'static str,
    frames: Vec<Vec<u8>>,
) -> tonic::Status {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("channel ready");
    // Keep the request stream open after the frames, as a proxy does.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    for f in frames {
        tx.send(f).unwrap();
    }
    let request = tonic::Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(rx));
    let mut stream = match grpc
        .streaming(request, PathAndQuery::from_static(path), RawCodec)
        .await
    {
        Ok(resp) => resp.into_inner(),
        Err(status) => return status,
    };
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return tonic::Status::ok("stream ended with OK"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("stream still open after 10 s");
    drop(tx);
    end
}

/// A gRPC codec of raw message bytes, to send what no protobuf encoder would.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

/// Log lines written while it lives, on this (current-thread) test runtime: the
/// formatter is the one `serve` uses (plain text, one event per line).
struct CapturedLog {
    buf: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

#[derive(Clone)]
struct Writer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Writer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().write(b)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLog {
    fn install() -> CapturedLog {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = Writer(buf.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_ansi(false)
            .with_writer(move || w.clone())
            .finish();
        CapturedLog {
            buf,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    fn text(&self) -> String {
        let mut b = self.buf.lock().unwrap();
        b.flush().unwrap();
        String::from_utf8_lossy(&b).into_owned()
    }
}
