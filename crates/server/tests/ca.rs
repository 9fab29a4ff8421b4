//! meshplane's CA: created once (two replicas racing on one SQLite store agree on one root),
//! reopened only with the right key file, issuing leaves that a TLS client trusting the root
//! accepts (server leaves for the ports, URI-SAN leaves as issue 13 will issue to workloads),
//! and the ports' TLS configs built from it.

use std::sync::Arc;
use std::time::Duration;

use meshplane_auth::seal::SealKey;
use meshplane_server::ca::{Ca, LeafParams, LeafUsage};
use meshplane_server::tls::{TlsArgs, TlsMode, server_tls};
use std::sync::atomic::{AtomicUsize, Ordering};

use meshplane_store::{
    KeyValue, ListPage, MemoryStore, Revision, SqliteStore, Store, StoreError, Txn, TxnOutcome,
    WatchStream,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

fn key() -> SealKey {
    SealKey::generate().unwrap().1
}

/// A store whose first `REPLICAS` reads wait for each other, so every replica sees `ca/root`
/// absent before any of them writes: the race is forced, not hoped for.
struct RacingReads {
    inner: SqliteStore,
    reads: AtomicUsize,
    barrier: tokio::sync::Barrier,
}

const REPLICAS: usize = 4;

#[async_trait::async_trait]
impl Store for RacingReads {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let r = self.inner.get(key).await;
        if self.reads.fetch_add(1, Ordering::SeqCst) < REPLICAS {
            self.barrier.wait().await;
        }
        r
    }
    async fn list(&self, p: &str, s: Option<&str>, l: usize) -> Result<ListPage, StoreError> {
        self.inner.list(p, s, l).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        self.inner.txn(txn).await
    }
    async fn revision(&self) -> Result<Revision, StoreError> {
        self.inner.revision().await
    }
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        self.inner.watch(prefix, from).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_to_create_the_ca_agree_on_one_root() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RacingReads {
        inner: SqliteStore::open(&dir.path().join("meshplane.db")).unwrap(),
        reads: AtomicUsize::new(0),
        barrier: tokio::sync::Barrier::new(REPLICAS),
    });
    let seal = Arc::new(key());
    let mut tasks = Vec::new();
    for _ in 0..REPLICAS {
        let (store, seal) = (store.clone(), seal.clone());
        tasks.push(tokio::spawn(async move {
            Ca::load_or_create(&*store, &seal)
                .await
                .unwrap()
                .cert_pem()
                .to_owned()
        }));
    }
    let mut pems = Vec::new();
    for t in tasks {
        pems.push(t.await.unwrap());
    }
    assert!(pems.windows(2).all(|w| w[0] == w[1]), "replicas disagree");
    let stored = store.inner.get("ca/root").await.unwrap().unwrap();
    assert_eq!(stored.version, 1, "the root was written once");
    let again = Ca::load_or_create(&store.inner, &seal).await.unwrap();
    assert_eq!(again.cert_pem(), pems[0]);
}

#[tokio::test]
async fn the_ca_key_opens_only_with_its_key_file_and_is_not_in_clear() {
    let store = MemoryStore::new();
    let seal = key();
    Ca::load_or_create(&store, &seal).await.unwrap();
    let record = store.get("ca/root").await.unwrap().unwrap();
    let text = String::from_utf8(record.value).unwrap();
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    let err = Ca::load_or_create(&store, &key())
        .await
        .err()
        .expect("another key must not open the CA")
        .to_string();
    assert!(err.contains("key file"), "{err}");
}

/// A TLS handshake over an in-memory pipe: the client trusts only `ca_pem` and verifies
/// `name`; returns the handshake result.
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    ca_pem: &str,
    name: &str,
) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let (c, s) = tokio::io::duplex(64 << 10);
    let accept =
        tokio::spawn(async move { tokio_rustls::TlsAcceptor::from(server).accept(s).await });
    let connected = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(ServerName::try_from(name.to_owned()).unwrap(), c)
        .await;
    let _ = tokio::time::timeout(Duration::from_secs(5), accept).await;
    connected.map(drop).map_err(|e| e.to_string())
}

#[tokio::test]
async fn server_certificate_verifies_for_its_sans_only() {
    let store = MemoryStore::new();
    let dir = tempfile::tempdir().unwrap();
    let args = TlsArgs {
        tls: TlsMode::On,
        tls_cert: None,
        tls_key: None,
        tls_san: vec!["cp.example.com".into()],
        tls_handshake_timeout: Duration::from_secs(10),
    };
    let addrs = [
        "127.0.0.1:7080".parse().unwrap(),
        "0.0.0.0:7081".parse().unwrap(),
    ];
    let tls = server_tls(&args, &addrs, &store, &key(), dir.path())
        .await
        .unwrap();
    let ca_path = tls.ca_pem.clone().expect("ca.pem written");
    let ca = std::fs::read_to_string(&ca_path).unwrap();
    for name in ["localhost", "127.0.0.1", "cp.example.com"] {
        handshake(tls.api.clone(), &ca, name).await.unwrap();
        handshake(tls.xds.clone(), &ca, name).await.unwrap();
    }
    let err = handshake(tls.api.clone(), &ca, "other.example.com")
        .await
        .unwrap_err();
    assert!(
        err.contains("NotValidForName") || err.contains("not valid"),
        "{err}"
    );
    // Another CA's clients do not trust it.
    let other = Ca::load_or_create(&MemoryStore::new(), &key())
        .await
        .unwrap();
    assert!(
        handshake(tls.api.clone(), other.cert_pem(), "localhost")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn user_certificate_files_are_served_and_bad_ones_are_refused() {
    // A certificate from "elsewhere": a CA the server crate issues, written as files.
    let ca = Ca::load_or_create(&MemoryStore::new(), &key())
        .await
        .unwrap();
    let leaf = ca
        .issue_leaf(&LeafParams {
            common_name: "own".into(),
            dns_names: vec!["own.example.com".into()],
            ips: vec![],
            uris: vec![],
            validity: Duration::from_secs(86_400),
            usage: LeafUsage::Server,
        })
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, keyf) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, &leaf.chain_pem).unwrap();
    std::fs::write(&keyf, &leaf.key_pem).unwrap();
    let mut args = TlsArgs {
        tls: TlsMode::On,
        tls_cert: Some(cert.clone()),
        tls_key: Some(keyf.clone()),
        tls_san: vec![],
        tls_handshake_timeout: Duration::from_secs(10),
    };
    let store = MemoryStore::new();
    let addrs = ["127.0.0.1:1".parse().unwrap()];
    let tls = server_tls(&args, &addrs, &store, &key(), dir.path())
        .await
        .unwrap();
    assert!(
        tls.ca_pem.is_none(),
        "no CA when the user brings a certificate"
    );
    assert!(store.get("ca/root").await.unwrap().is_none());
    handshake(tls.xds.clone(), ca.cert_pem(), "own.example.com")
        .await
        .unwrap();
    // The key file holding a certificate instead: a clear error naming the flag.
    args.tls_key = Some(cert);
    let err = server_tls(&args, &addrs, &store, &key(), dir.path())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--tls-key"), "{err}");
}

#[tokio::test]
async fn workload_leaves_carry_spiffe_ids() {
    let ca = Ca::load_or_create(&MemoryStore::new(), &key())
        .await
        .unwrap();
    let leaf = ca
        .issue_leaf(&LeafParams {
            common_name: "front".into(),
            dns_names: vec![],
            ips: vec![],
            uris: vec!["spiffe://meshplane/mesh/demo/virtualNode/front".into()],
            validity: Duration::from_secs(3600),
            usage: LeafUsage::ServerAndClient,
        })
        .unwrap();
    let der = CertificateDer::from_pem_slice(leaf.chain_pem.as_bytes()).unwrap();
    let needle = b"spiffe://meshplane/mesh/demo/virtualNode/front";
    assert!(der.windows(needle.len()).any(|w| w == needle));
    assert!(PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).is_ok());
    // The chain ends with the CA certificate.
    assert!(leaf.chain_pem.ends_with(ca.cert_pem()));
}
