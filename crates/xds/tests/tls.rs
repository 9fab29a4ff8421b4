//! TLS on the xDS port, at the connection level: the handshake and the HTTP/2 preface share
//! the handshake deadline, a stalled handshake holds its connection slot only until then,
//! and a plaintext client is refused at once instead of hanging.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use meshplane_xds::testing::TestServer;
use meshplane_xds::{SnapshotCache, XdsServerConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

fn tls_config() -> Arc<rustls::ServerConfig> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    #[allow(deprecated)] // ring is the workspace's provider
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

async fn server(max_connections: usize) -> TestServer {
    let cache = SnapshotCache::new();
    cache.set(key(), snap(config(&["a"], "a")));
    TestServer::start_with_config(
        Arc::new(cache),
        XdsServerConfig {
            tls: Some(tls_config()),
            handshake_timeout: Duration::from_millis(500),
            max_connections,
            ..XdsServerConfig::default()
        },
    )
    .await
}

/// Connects, sends `bytes`, and returns how long until the server closed the connection.
async fn closed_after(addr: std::net::SocketAddr, bytes: &[u8]) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    assert!(r.is_ok(), "connection still open after 5 s");
    (got, started.elapsed())
}

#[tokio::test]
async fn stalled_tls_handshake_is_closed_at_the_handshake_deadline() {
    let srv = server(100).await;
    // A TLS record header, then nothing.
    let (_, took) = closed_after(srv.addr, &[0x16, 0x03, 0x01]).await;
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "closed after {took:?}, expected about 500 ms"
    );
    // Silent from the start: the same deadline.
    let (_, took) = closed_after(srv.addr, &[]).await;
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test]
async fn plaintext_http2_on_the_tls_port_fails_at_once() {
    let srv = server(100).await;
    let (got, took) = closed_after(srv.addr, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    assert!(took < Duration::from_millis(400), "{took:?}");
    // Whatever came back is a TLS alert, not an HTTP/2 SETTINGS frame.
    assert!(got.is_empty() || got[0] == 0x15, "{got:?}");
}

#[tokio::test]
async fn a_handshaking_connection_holds_its_slot_until_the_deadline() {
    let srv = server(1).await;
    let mut stalled = TcpStream::connect(srv.addr).await.unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Past the cap: closed at once.
    let (_, took) = closed_after(srv.addr, &[]).await;
    assert!(took < Duration::from_millis(300), "{took:?}");
    // Once the stalled one is cut, the slot is free again (closed by the deadline, not the cap).
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stalled.read_to_end(&mut buf)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (_, took) = closed_after(srv.addr, &[]).await;
    assert!(took >= Duration::from_millis(400), "{took:?}");
}
