//! Mesh TLS with certificates and trust from SDS (issue 13, App Mesh's SPIRE path), proven
//! through real Envoy 1.40 against a SPIRE-style SDS server: a test double speaking the real
//! protocol (`envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets`, state of the
//! world) on a Unix socket, serving SPIFFE-named secrets the way a SPIRE agent does
//! (`spiffe://example.org/<workload>` certificates, the trust domain's bundle under
//! `spiffe://example.org`).
//!
//! Both Envoys are started with `APPMESH_SDS_SOCKET_PATH` (the agent's bootstrap adds the
//! static cluster `static_cluster_sds_unix_socket`), and the translated configuration names
//! the secrets verbatim on that cluster:
//! - `web`'s STRICT listener serves its SDS certificate and requires a client certificate
//!   chaining to the SDS bundle with SAN `spiffe://example.org/front`;
//! - `front`'s client policy presents its SDS certificate and verifies `web` against the
//!   SDS bundle and SAN `spiffe://example.org/web`;
//! - a client without a certificate is refused; Envoy's `sds.<name>.update_success`
//!   counters show the secrets arrived over SDS;
//! - the double pushes a renewed certificate for `web`: Envoy applies it without a
//!   restart (its `/certs` shows the new serial) and requests keep succeeding throughout;
//! - a virtual gateway: its STRICT listener serves its SDS certificate, and its
//!   `backendDefaults` reach `web` over mutual TLS with SDS certificate and trust.

#[path = "e2e/common.rs"]
#[allow(dead_code)]
mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{World, target};
use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use envoy_types::pb::google::protobuf::Any;
use meshplane_testkit::{
    Envoy, EnvoyOptions, HttpBackend, XdsFlavor, addr, loopback_ip, tls::https_request, wait_for,
};
use prost::{Message, Name};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType, SerialNumber,
};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// Bound of every "config arrived / counter moved" wait.
const WAIT: Duration = Duration::from_secs(10);

/// SPIRE's names: the trust domain's bundle and one SVID per workload.
const BUNDLE: &str = "spiffe://example.org";
const WEB_ID: &str = "spiffe://example.org/web";
const FRONT_ID: &str = "spiffe://example.org/front";
const GW_ID: &str = "spiffe://example.org/gw";

/// The secrets the double serves, with a version bumped on every change.
type Secrets = (u64, BTreeMap<String, Secret>);

/// A SPIRE-agent-like SDS server: answers every `StreamSecrets` request with the requested
/// secrets it has, pushes changes to every open stream, and records NACKs.
#[derive(Clone)]
struct SdsDouble {
    secrets: watch::Receiver<Secrets>,
    nacks: Arc<Mutex<Vec<String>>>,
}

fn response(secrets: &Secrets, names: &[String], nonce: u64) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: secrets.0.to_string(),
        resources: names
            .iter()
            .filter_map(|n| secrets.1.get(n))
            .map(|s| Any {
                type_url: Secret::type_url(),
                value: s.encode_to_vec(),
            })
            .collect(),
        type_url: Secret::type_url(),
        nonce: nonce.to_string(),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl SecretDiscoveryService for SdsDouble {
    type StreamSecretsStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaSecretsStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let mut inbound = request.into_inner();
        let mut secrets = self.secrets.clone();
        let nacks = self.nacks.clone();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut names: Option<Vec<String>> = None;
            let mut nonce = 0u64;
            loop {
                tokio::select! {
                    msg = inbound.message() => {
                        let Ok(Some(req)) = msg else { return };
                        if let Some(e) = &req.error_detail {
                            nacks.lock().unwrap().push(format!("{:?}: {}", req.resource_names, e.message));
                        }
                        // An ACK or NACK of what was sent: nothing new to send.
                        if names.as_ref() == Some(&req.resource_names) {
                            continue;
                        }
                        names = Some(req.resource_names);
                    }
                    changed = secrets.changed() => {
                        if changed.is_err() { return }
                        if names.is_none() { continue }
                    }
                }
                nonce += 1;
                let r = response(
                    &secrets.borrow_and_update(),
                    names.as_deref().unwrap(),
                    nonce,
                );
                if tx.send(Ok(r)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_secrets(
        &self,
        _: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented("the SPIRE agent speaks SotW SDS"))
    }

    async fn fetch_secrets(
        &self,
        _: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        Err(Status::unimplemented("REST fetch"))
    }
}

/// The trust domain's CA and the SVIDs it signs.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().expect("ca key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "example.org spire ca");
        let pem = params.self_signed(&key).expect("ca cert").pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// An SVID for `id` (URI SAN) that also names `dns` (so a plain TLS client can verify
    /// the server), with serial `serial`, as a TLS-certificate secret named `id`.
    fn svid(&self, id: &str, dns: &str, serial: &[u8]) -> Secret {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(vec![dns.to_owned()]).expect("leaf params");
        params
            .subject_alt_names
            .push(SanType::URI(id.try_into().expect("URI SAN")));
        params.distinguished_name.push(DnType::CommonName, dns);
        params.serial_number = Some(SerialNumber::from_slice(serial));
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        Secret {
            name: id.to_owned(),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: Some(inline(cert.pem())),
                private_key: Some(inline(key.serialize_pem())),
                ..Default::default()
            })),
        }
    }

    /// The bundle as a validation-context secret named `name`.
    fn bundle(&self, name: &str) -> Secret {
        Secret {
            name: name.to_owned(),
            r#type: Some(secret::Type::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(inline(self.pem.clone())),
                    ..Default::default()
                },
            )),
        }
    }
}

fn inline(pem: String) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(pem.into_bytes())),
        ..Default::default()
    }
}

/// Serves the double on a fresh Unix socket at `path`.
fn serve(path: &Path, double: SdsDouble) {
    let listener = tokio::net::UnixListener::bind(path).expect("bind SDS socket");
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(SecretDiscoveryServiceServer::new(double))
            .serve_with_incoming(UnixListenerStream::new(listener))
            .await
            .expect("SDS server");
    });
}

/// A started Envoy for `node_id` using the SDS socket, waited LIVE.
async fn envoy(w: &World, node_id: String, sds: &Path, hosts: Option<&Path>) -> Envoy {
    let mut opts = EnvoyOptions::new(node_id, w.cp.xds_addr(), XdsFlavor::Delta);
    opts.env.push((
        "APPMESH_SDS_SOCKET_PATH".to_owned(),
        sds.display().to_string(),
    ));
    opts.hosts_file = hosts.map(Path::to_path_buf);
    let e = Envoy::start_with(opts);
    e.wait_live().await;
    e
}

/// Envoy's `sds.<name>.update_success` counter; Envoy sanitises `://` and `:` in stat
/// names to `_` (`sds.spiffe_example.org/web.update_success`).
async fn sds_updates(e: &Envoy, name: &str) -> u64 {
    let name = name.replace("://", "_").replace(':', "_");
    e.stat(&format!("sds.{name}.update_success")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sds_certificates_and_trust_from_a_spire_style_server() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
    let initial: BTreeMap<String, Secret> = [
        ca.svid(WEB_ID, "web.tls.test", &[0x5d, 0x50, 0x01]),
        ca.svid(FRONT_ID, "front.tls.test", &[0x5d, 0x50, 0x02]),
        ca.svid(GW_ID, "gw.tls.test", &[0x5d, 0x50, 0x04]),
        ca.bundle(BUNDLE),
    ]
    .into_iter()
    .map(|s| (s.name.clone(), s))
    .collect();
    let (push, secrets) = watch::channel((1u64, initial));
    let double = SdsDouble {
        secrets,
        nacks: Arc::default(),
    };
    let socket = dir.path().join("agent.sock");
    serve(&socket, double.clone());

    let w = World::new("tlssds").await;
    let web_app = HttpBackend::start("web").await;
    let (ip_web, ip_front): (Ipv4Addr, Ipv4Addr) = (loopback_ip(), loopback_ip());
    w.cp.create_virtual_node_at(
        &w.mesh,
        "web",
        json!({
            "listeners": [{"portMapping": {"port": web_app.port(), "protocol": "http"},
                "tls": {"mode": "STRICT",
                        "certificate": {"sds": {"secretName": WEB_ID}},
                        "validation": {"trust": {"sds": {"secretName": BUNDLE}},
                                       "subjectAlternativeNames": {"match": {"exact": [FRONT_ID, GW_ID]}}}}}],
            "serviceDiscovery": {"dns": {"hostname": "web.tls.test"}},
        }),
        ip_web,
    )
    .await;
    w.cp.create_virtual_service(
        &w.mesh,
        "web.svc.test",
        json!({"provider": {"virtualNode": {"virtualNodeName": "web"}}}),
    )
    .await;
    w.cp.create_virtual_node_at(
        &w.mesh,
        "front",
        json!({
            "serviceDiscovery": {"dns": {"hostname": "front.tls.test"}},
            "backends": [{"virtualService": {"virtualServiceName": "web.svc.test",
                "clientPolicy": {"tls": {
                    "certificate": {"sds": {"secretName": FRONT_ID}},
                    "validation": {"trust": {"sds": {"secretName": BUNDLE}},
                                   "subjectAlternativeNames": {"match": {"exact": [WEB_ID]}}}}}}}],
        }),
        ip_front,
    )
    .await;
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        format!("127.0.0.1 localhost\n{ip_web} web.tls.test\n"),
    )
    .unwrap();
    let e_web = envoy(&w, w.node_id("web"), &socket, None).await;
    let e_front = envoy(&w, w.node_id("front"), &socket, Some(&hosts)).await;

    // front -> web over mutual TLS, every certificate and bundle from SDS.
    let via_front = target("web.svc.test", ip_front, web_app.port());
    let r = wait_for("front -> web over mutual TLS from SDS", WAIT, || async {
        let r = via_front.get("/").await;
        if r.status == 200 {
            Ok(r)
        } else {
            Err(format!(
                "{r:?}; nacks: {:?}",
                double.nacks.lock().unwrap().clone()
            ))
        }
    })
    .await;
    assert_eq!(r.body, "web");
    assert!(
        double.nacks.lock().unwrap().is_empty(),
        "Envoy rejected SDS secrets: {:?}",
        double.nacks.lock().unwrap()
    );
    // The secrets arrived over SDS: one update per secret each Envoy uses.
    for (e, names) in [(&e_web, [WEB_ID, BUNDLE]), (&e_front, [FRONT_ID, BUNDLE])] {
        for name in names {
            let n = sds_updates(e, name).await;
            assert!(
                n >= 1,
                "{}: no sds update for `{name}`: {:?}",
                e.node_id(),
                e.stats()
                    .await
                    .into_iter()
                    .filter(|(k, _)| k.starts_with("sds."))
                    .collect::<Vec<_>>()
            );
        }
    }
    let web_handshakes: u64 = e_web
        .stats()
        .await
        .iter()
        .filter(|(k, _)| k.starts_with("listener.") && k.ends_with(".ssl.handshake"))
        .map(|(_, v)| *v)
        .sum();
    assert!(web_handshakes >= 1, "no TLS handshake on web's listener");

    // A client without a certificate (trusting the bundle, verifying web's name) is refused.
    let anonymous = https_request(
        addr(ip_web, web_app.port()),
        "web.tls.test",
        "GET",
        "/",
        None,
        &[],
        &dir.path().join("ca.pem"),
    )
    .await;
    assert!(
        anonymous.is_err() || anonymous.as_ref().is_ok_and(|(s, _)| *s != 200),
        "web served a client without certificate: {anonymous:?}"
    );
    let no_cert: u64 = e_web
        .stats()
        .await
        .iter()
        .filter(|(k, _)| k.ends_with(".ssl.fail_verify_no_cert"))
        .map(|(_, v)| *v)
        .sum();
    assert!(
        no_cert >= 1,
        "web did not count the client without certificate"
    );
    assert_eq!(web_app.requests(), 1, "only the mTLS client reached web");

    // Renewal: the double pushes a new SVID for web while requests keep flowing.
    let load = {
        let t = target("web.svc.test", ip_front, web_app.port());
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            for _ in 0..60 {
                let r = t.get("/").await;
                if r.status == 200 {
                    ok += 1;
                } else {
                    failed.push(format!("{r:?}"));
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    push.send_modify(|(v, s)| {
        *v += 1;
        s.insert(
            WEB_ID.to_owned(),
            ca.svid(WEB_ID, "web.tls.test", &[0x5d, 0x50, 0x03]),
        );
    });
    wait_for("web applies the renewed SVID", WAIT, || async {
        let n = sds_updates(&e_web, WEB_ID).await;
        let (_, certs) = e_web.admin_get("/certs").await?;
        if n >= 2 && certs.contains("5d5003") {
            Ok(())
        } else {
            Err(format!("update_success {n}; /certs: {certs}"))
        }
    })
    .await;
    let (ok, failed) = load.await.expect("load task");
    assert!(
        failed.is_empty(),
        "requests failed across the renewal: {failed:?}"
    );
    assert_eq!(ok, 60);

    // A gateway: its STRICT listener serves its SDS certificate to an HTTPS client, and its
    // backendDefaults reach web over mutual TLS with its own SDS certificate and the bundle.
    let ip_gw = loopback_ip();
    let gw_port = meshplane_testkit::free_port();
    w.cp.call(
        "PUT",
        &format!("/v20190125/meshes/{}/virtualGateways", w.mesh),
        Some(json!({
            "virtualGatewayName": "gw",
            "spec": {
                "listeners": [{"portMapping": {"port": gw_port, "protocol": "http"},
                               "tls": {"mode": "STRICT", "certificate": {"sds": {"secretName": GW_ID}}}}],
                "backendDefaults": {"clientPolicy": {"tls": {
                    "certificate": {"sds": {"secretName": GW_ID}},
                    "validation": {"trust": {"sds": {"secretName": BUNDLE}},
                                   "subjectAlternativeNames": {"match": {"exact": [WEB_ID]}}}}}},
            },
            "tags": [{"key": "meshplane.io/listen-address", "value": ip_gw.to_string()}],
        })),
    )
    .await;
    w.cp.call(
        "PUT",
        &format!(
            "/v20190125/meshes/{}/virtualGateway/gw/gatewayRoutes",
            w.mesh
        ),
        Some(json!({"gatewayRouteName": "to-web", "spec": {"httpRoute": {
            "match": {"prefix": "/"},
            "action": {"target": {"virtualService": {"virtualServiceName": "web.svc.test"}}},
        }}})),
    )
    .await;
    let e_gw = envoy(
        &w,
        format!("mesh/{}/virtualGateway/gw", w.mesh),
        &socket,
        Some(&hosts),
    )
    .await;
    let ca_file = dir.path().join("ca.pem");
    let (status, body) = wait_for(
        "https -> gateway -> web, SDS on both hops",
        WAIT,
        || async {
            match https_request(
                addr(ip_gw, gw_port),
                "gw.tls.test",
                "GET",
                "/",
                None,
                &[],
                &ca_file,
            )
            .await
            {
                Ok((200, body)) => Ok((200, body)),
                other => Err(format!(
                    "{other:?}; nacks: {:?}",
                    double.nacks.lock().unwrap().clone()
                )),
            }
        },
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "web"));
    assert!(sds_updates(&e_gw, GW_ID).await >= 1);
    assert!(sds_updates(&e_gw, BUNDLE).await >= 1);
    let plain = target("web.svc.test", ip_gw, gw_port).get("/").await;
    assert_eq!(
        plain.status, 0,
        "a plaintext client reached the gateway's STRICT listener: {plain:?}"
    );
    assert!(double.nacks.lock().unwrap().is_empty());
}
