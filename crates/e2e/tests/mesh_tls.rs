//! Mesh TLS with file certificates (issue 13, first slice), proven through real Envoy 1.40
//! with real backends and certificates generated here (rcgen: one CA, one leaf per node):
//!
//! - `STRICT` refuses a plaintext client and serves a TLS one;
//! - `PERMISSIVE` serves TLS and plaintext on the same port;
//! - mutual TLS between two sidecar Envoys: the caller's client policy presents a file
//!   certificate and verifies the server's name (its DNS hostname, App Mesh's default when
//!   no SANs are given); the server's listener `validation` requires the client certificate
//!   (a client without one is refused);
//! - a client policy whose SANs do not match fails the connection (`ssl.fail_verify_san`);
//! - a listener's `subjectAlternativeNames` refuse a client certificate from the trusted CA
//!   that carries another name;
//! - a virtual gateway: STRICT TLS on its listener, and mutual TLS to a node under its
//!   `backendDefaults`;
//! - a client policy with `ports` (here from `backendDefaults`) applies TLS to those ports
//!   only (`DISABLED` = plaintext); `enforce: false` means plaintext.
//!
//! Layout: every node in explicit mode on its own loopback IP (its Envoy binds
//! `<ip>:<listener port>`, its application `127.0.0.1:<port>`); the caller's Envoy resolves
//! `*.tls.test` through a private hosts file (mount namespace, needs root like the other
//! e2e tests that use one).

#[path = "e2e/common.rs"]
#[allow(dead_code)]
mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{World, target};
use meshplane_testkit::{
    Envoy, EnvoyOptions, HttpBackend, XdsFlavor, addr, loopback_ip, tls::https_request, wait_for,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::{Value, json};

/// Bound of every "config arrived / counter moved" wait.
const WAIT: Duration = Duration::from_secs(10);

/// Certificates written to a temporary directory: `ca.pem` and `<name>.pem`/`<name>.key`.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    /// A CA and one leaf per name, valid for DNS SAN `<name>.tls.test` (server and client).
    fn generate(names: &[&str]) -> Certs {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct subjects: with rcgen's default (the same CN everywhere) a leaf looks
        // self-issued and BoringSSL does not build the chain to the CA.
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "meshplane test ca");
        let ca = ca_params.self_signed(&ca_key).expect("ca cert");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        for name in names {
            let key = KeyPair::generate().expect("leaf key");
            let mut params =
                CertificateParams::new(vec![format!("{name}.tls.test")]).expect("leaf params");
            params
                .distinguished_name
                .push(DnType::CommonName, format!("{name}.tls.test"));
            let cert = params.signed_by(&key, &issuer).expect("leaf cert");
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem()).unwrap();
        }
        Certs { dir }
    }

    fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// `certificate.file` of `name`.
    fn file(&self, name: &str) -> Value {
        json!({"file": {
            "certificateChain": self.path(&format!("{name}.pem")),
            "privateKey": self.path(&format!("{name}.key")),
        }})
    }

    /// `validation` trusting the CA, with exact SANs when given.
    fn validation(&self, sans: &[&str]) -> Value {
        let mut v = json!({"trust": {"file": {"certificateChain": self.path("ca.pem")}}});
        if !sans.is_empty() {
            v["subjectAlternativeNames"] = json!({"match": {"exact": sans}});
        }
        v
    }
}

/// A node in explicit mode on `ip`, discovered as `<name>.tls.test`, with `listeners`.
async fn node(w: &World, name: &str, ip: Ipv4Addr, listeners: Value) {
    w.cp.create_virtual_node_at(
        &w.mesh,
        name,
        json!({
            "listeners": listeners,
            "serviceDiscovery": {"dns": {"hostname": format!("{name}.tls.test")}},
        }),
        ip,
    )
    .await;
}

/// A virtual service provided by a virtual node.
async fn service(w: &World, vs: &str, node: &str) {
    w.cp.create_virtual_service(
        &w.mesh,
        vs,
        json!({"provider": {"virtualNode": {"virtualNodeName": node}}}),
    )
    .await;
}

/// A started Envoy for `name`, waited LIVE.
async fn envoy(w: &World, name: &str, hosts: Option<&Path>) -> Envoy {
    let mut opts = EnvoyOptions::new(w.node_id(name), w.cp.xds_addr(), XdsFlavor::Delta);
    opts.hosts_file = hosts.map(Path::to_path_buf);
    let e = Envoy::start_with(opts);
    e.wait_live().await;
    e
}

/// An HTTPS GET to `ip:port` verifying the server as `<name>.tls.test` against the CA.
async fn https_get(certs: &Certs, ip: Ipv4Addr, port: u16, name: &str) -> Result<String, String> {
    let (status, body) = https_request(
        addr(ip, port),
        &format!("{name}.tls.test"),
        "GET",
        "/",
        None,
        &[],
        &certs.ca(),
    )
    .await?;
    if status == 200 {
        Ok(body)
    } else {
        Err(format!("status {status}: {body}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_certificate_tls_strict_permissive_mutual_sans_and_ports() {
    let certs = Certs::generate(&["web", "strict", "perm", "dual", "front", "intruder", "gw"]);
    let w = World::new("tls").await;

    // Applications on 127.0.0.1; each node's Envoy on its own loopback IP.
    let web_app = HttpBackend::start("web").await;
    let strict_app = HttpBackend::start("strict").await;
    let perm_app = HttpBackend::start("perm").await;
    let dual_tls_app = HttpBackend::start("dual-tls").await;
    let dual_plain_app = HttpBackend::start("dual-plain").await;
    let (ip_web, ip_strict, ip_perm, ip_dual, ip_front, ip_intruder) = (
        loopback_ip(),
        loopback_ip(),
        loopback_ip(),
        loopback_ip(),
        loopback_ip(),
        loopback_ip(),
    );

    // web: STRICT with mutual TLS (client certificate from the CA, SAN front.tls.test).
    node(
        &w,
        "web",
        ip_web,
        json!([{"portMapping": {"port": web_app.port(), "protocol": "http"},
                "tls": {"mode": "STRICT", "certificate": certs.file("web"),
                        "validation": certs.validation(&["front.tls.test", "gw.tls.test"])}}]),
    )
    .await;
    // strict: STRICT, server certificate only.
    node(
        &w,
        "strict",
        ip_strict,
        json!([{"portMapping": {"port": strict_app.port(), "protocol": "http"},
                "tls": {"mode": "STRICT", "certificate": certs.file("strict")}}]),
    )
    .await;
    // perm: PERMISSIVE.
    node(
        &w,
        "perm",
        ip_perm,
        json!([{"portMapping": {"port": perm_app.port(), "protocol": "http"},
                "tls": {"mode": "PERMISSIVE", "certificate": certs.file("perm")}}]),
    )
    .await;
    // dual: one STRICT listener, one DISABLED.
    node(
        &w,
        "dual",
        ip_dual,
        json!([
            {"portMapping": {"port": dual_tls_app.port(), "protocol": "http"},
             "tls": {"mode": "STRICT", "certificate": certs.file("dual")}},
            {"portMapping": {"port": dual_plain_app.port(), "protocol": "http"},
             "tls": {"mode": "DISABLED", "certificate": certs.file("dual")}},
        ]),
    )
    .await;
    for (vs, n) in [
        ("web.svc.test", "web"),
        ("strict.svc.test", "strict"),
        ("wrong-san.svc.test", "strict"),
        ("dual.svc.test", "dual"),
        ("dual-off.svc.test", "dual"),
    ] {
        service(&w, vs, n).await;
    }
    // front: calls web with its client certificate (no SANs: web's DNS name is required),
    // strict under a policy naming a SAN strict's certificate lacks, dual under its
    // `backendDefaults` (TLS on the STRICT port only), and dual again with `enforce: false`
    // (plaintext everywhere, so it reaches the DISABLED port).
    let policy = |extra: Value| {
        let mut tls = json!({"validation": certs.validation(&[])});
        for (k, v) in extra.as_object().unwrap() {
            tls[k] = v.clone();
        }
        json!({"tls": tls})
    };
    w.cp.create_virtual_node_at(
        &w.mesh,
        "front",
        json!({
            "serviceDiscovery": {"dns": {"hostname": "front.tls.test"}},
            "backendDefaults": {"clientPolicy": policy(json!({"ports": [dual_tls_app.port()]}))},
            "backends": [
                {"virtualService": {"virtualServiceName": "web.svc.test",
                    "clientPolicy": policy(json!({"certificate": certs.file("front")}))}},
                {"virtualService": {"virtualServiceName": "strict.svc.test",
                    "clientPolicy": policy(json!({}))}},
                {"virtualService": {"virtualServiceName": "wrong-san.svc.test",
                    "clientPolicy": policy(json!({"validation": certs.validation(&["other.tls.test"])}))}},
                {"virtualService": {"virtualServiceName": "dual.svc.test"}},
                {"virtualService": {"virtualServiceName": "dual-off.svc.test",
                    "clientPolicy": policy(json!({"enforce": false}))}},
            ],
        }),
        ip_front,
    )
    .await;
    // intruder: a certificate from the same CA, but not a SAN web's listener accepts.
    w.cp.create_virtual_node_at(
        &w.mesh,
        "intruder",
        json!({
            "serviceDiscovery": {"dns": {"hostname": "intruder.tls.test"}},
            "backends": [
                {"virtualService": {"virtualServiceName": "web.svc.test",
                    "clientPolicy": policy(json!({"certificate": certs.file("intruder")}))}},
            ],
        }),
        ip_intruder,
    )
    .await;

    let hosts = certs.dir.path().join("hosts");
    std::fs::write(
        &hosts,
        format!(
            "127.0.0.1 localhost\n{ip_web} web.tls.test\n{ip_strict} strict.tls.test\n\
             {ip_perm} perm.tls.test\n{ip_dual} dual.tls.test\n"
        ),
    )
    .unwrap();
    let e_web = envoy(&w, "web", None).await;
    let e_strict = envoy(&w, "strict", None).await;
    let e_perm = envoy(&w, "perm", None).await;
    let e_dual = envoy(&w, "dual", None).await;
    let e_front = envoy(&w, "front", Some(&hosts)).await;
    let e_intruder = envoy(&w, "intruder", Some(&hosts)).await;

    // STRICT: a TLS client is served, a plaintext one refused.
    let body = wait_for("strict serves TLS", WAIT, || async {
        https_get(&certs, ip_strict, strict_app.port(), "strict").await
    })
    .await;
    assert_eq!(body, "strict");
    let plain = target("strict.tls.test", ip_strict, strict_app.port())
        .get("/")
        .await;
    assert_eq!(
        plain.status, 0,
        "a plaintext client reached a STRICT listener: {plain:?}"
    );
    assert_eq!(strict_app.requests(), 1);

    // PERMISSIVE: TLS and plaintext on one port.
    let body = wait_for("permissive serves TLS", WAIT, || async {
        https_get(&certs, ip_perm, perm_app.port(), "perm").await
    })
    .await;
    assert_eq!(body, "perm");
    let plain = target("perm.tls.test", ip_perm, perm_app.port())
        .get("/")
        .await;
    assert_eq!((plain.status, plain.body.as_str()), (200, "perm"));
    assert_eq!(perm_app.requests(), 2);

    // Mutual TLS: a client without a certificate is refused by web's listener...
    wait_for("web's listener is up", WAIT, || async {
        match tokio::net::TcpStream::connect(addr(ip_web, web_app.port())).await {
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    let anonymous = https_get(&certs, ip_web, web_app.port(), "web").await;
    assert!(
        anonymous.is_err(),
        "web served a client without certificate: {anonymous:?}"
    );
    // ...and the front sidecar, presenting its file certificate, is served.
    let via_front = target("web.svc.test", ip_front, web_app.port());
    let r = wait_for("front -> web over mutual TLS", WAIT, || async {
        let r = via_front.get("/").await;
        if r.status == 200 {
            Ok(r)
        } else {
            let out: Vec<String> = e_front
                .stats()
                .await
                .into_iter()
                .filter(|(k, v)| k.contains("cds_egress_tls_web") && *v > 0)
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let inn: Vec<String> = e_web
                .stats()
                .await
                .into_iter()
                .filter(|(k, v)| k.contains("ssl") && *v > 0)
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            Err(format!("{r:?}; front: {out:?}; web: {inn:?}"))
        }
    })
    .await;
    assert_eq!(r.body, "web");
    assert_eq!(web_app.requests(), 1, "only the mTLS client reached web");
    let web_in = e_web.stats().await;
    let handshakes: u64 = web_in
        .iter()
        .filter(|(k, _)| k.starts_with("listener.") && k.ends_with(".ssl.handshake"))
        .map(|(_, v)| *v)
        .sum();
    assert!(handshakes >= 1, "no TLS handshake on web's listener");
    let no_cert: u64 = web_in
        .iter()
        .filter(|(k, _)| k.ends_with(".ssl.fail_verify_no_cert"))
        .map(|(_, v)| *v)
        .sum();
    assert!(
        no_cert >= 1,
        "web did not count the client without certificate: {web_in:?}"
    );
    let front_web = format!(
        "cluster.cds_egress_tls_web_http_{}.ssl.handshake",
        web_app.port()
    );
    assert!(e_front.stat(&front_web).await >= 1, "{front_web}");

    // web's listener SANs: a certificate from the trusted CA with another name is refused.
    let r = target("web.svc.test", ip_intruder, web_app.port())
        .get("/")
        .await;
    assert_eq!(r.status, 503, "web served a client outside its SANs: {r:?}");
    assert_eq!(web_app.requests(), 1, "the intruder reached web");
    let web_san: u64 = e_web
        .stats()
        .await
        .iter()
        .filter(|(k, _)| k.starts_with("listener.") && k.ends_with(".ssl.fail_verify_san"))
        .map(|(_, v)| *v)
        .sum();
    assert!(web_san >= 1, "web did not count the SAN mismatch");
    drop(e_intruder);

    // The same strict listener: reached with its name verified, refused under a policy
    // whose SAN its certificate lacks (a cluster of its own, `_for_<service>`).
    let ok = target("strict.svc.test", ip_front, strict_app.port());
    wait_for("front -> strict over TLS", WAIT, || async {
        let r = ok.get("/").await;
        if r.status == 200 && r.body == "strict" {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await;
    let before = strict_app.requests();
    let wrong = target("wrong-san.svc.test", ip_front, strict_app.port());
    let r = wrong.get("/").await;
    assert_eq!(r.status, 503, "SAN mismatch was not refused: {r:?}");
    let fail_san = format!(
        "cluster.cds_egress_tls_strict_http_{}_for_wrong-san.svc.test.ssl.fail_verify_san",
        strict_app.port()
    );
    assert!(
        e_front.stat(&fail_san).await >= 1,
        "{fail_san}: {}",
        e_front.describe().await
    );
    assert_eq!(
        strict_app.requests(),
        before,
        "the mismatched request reached strict"
    );

    // `ports`: TLS on the STRICT port, plaintext on the DISABLED one. Either direction
    // wrong fails the request (plaintext into STRICT, TLS into plaintext).
    for (app, body) in [(&dual_tls_app, "dual-tls"), (&dual_plain_app, "dual-plain")] {
        let t = target("dual.svc.test", ip_front, app.port());
        wait_for(&format!("front -> {body}"), WAIT, || async {
            let r = t.get("/").await;
            if r.status == 200 && r.body == body {
                Ok(())
            } else {
                Err(format!("{r:?}"))
            }
        })
        .await;
    }
    // `enforce: false`: plaintext, so the DISABLED port answers and the STRICT one refuses.
    let off = target("dual-off.svc.test", ip_front, dual_plain_app.port());
    wait_for("front -> dual-off (plaintext)", WAIT, || async {
        let r = off.get("/").await;
        if r.status == 200 && r.body == "dual-plain" {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await;
    let off_strict = target("dual-off.svc.test", ip_front, dual_tls_app.port())
        .get("/")
        .await;
    assert_eq!(
        off_strict.status, 503,
        "plaintext reached a STRICT listener: {off_strict:?}"
    );
    // dual-off.svc.test sorts first and keeps the App Mesh cluster name (plaintext) on the
    // STRICT port; dual.svc.test's TLS cluster there is its own, `_for_dual.svc.test`.
    let tls_port = format!(
        "cluster.cds_egress_tls_dual_http_{}_for_dual.svc.test.ssl.handshake",
        dual_tls_app.port()
    );
    let plain_port = format!(
        "cluster.cds_egress_tls_dual_http_{}.ssl.handshake",
        dual_plain_app.port()
    );
    assert!(e_front.stat(&tls_port).await >= 1, "{tls_port}");
    assert_eq!(e_front.stat(&plain_port).await, 0, "{plain_port}");

    // A gateway: STRICT TLS on its listener (mutual TLS not asked), and its backendDefaults
    // call web over mutual TLS with the gateway's certificate.
    let ip_gw = loopback_ip();
    let gw_port = meshplane_testkit::free_port();
    w.cp.call(
        "PUT",
        &format!("/v20190125/meshes/{}/virtualGateways", w.mesh),
        Some(json!({
            "virtualGatewayName": "gw",
            "spec": {
                "listeners": [{"portMapping": {"port": gw_port, "protocol": "http"},
                               "tls": {"mode": "STRICT", "certificate": certs.file("gw")}}],
                "backendDefaults": {"clientPolicy": policy(json!({"certificate": certs.file("gw")}))},
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
    let mut opts = EnvoyOptions::new(
        format!("mesh/{}/virtualGateway/gw", w.mesh),
        w.cp.xds_addr(),
        XdsFlavor::Delta,
    );
    opts.hosts_file = Some(hosts.clone());
    let e_gw = Envoy::start_with(opts);
    e_gw.wait_live().await;
    let body = wait_for("https -> gateway -> web over mutual TLS", WAIT, || async {
        https_get(&certs, ip_gw, gw_port, "gw").await
    })
    .await;
    assert_eq!(body, "web");
    let plain = target("web.svc.test", ip_gw, gw_port).get("/").await;
    assert_eq!(
        plain.status, 0,
        "a plaintext client reached the gateway's STRICT listener: {plain:?}"
    );
    let gw_web = format!(
        "cluster.cds_egress_tls_web_http_{}.ssl.handshake",
        web_app.port()
    );
    assert!(e_gw.stat(&gw_web).await >= 1, "{gw_web}");
    drop((e_strict, e_perm, e_dual));
}
