//! App Mesh's `*.amazonaws.com` exception under `DROP_ALL`, with real interception: in the
//! `app` namespace (`sidecar init` + `envoy run`), a TLS client whose SNI is
//! `s3.eu-west-1.amazonaws.com` reaches a TLS server (`openssl s_server`) in the `aws`
//! namespace through Envoy's `cds_egress_colorapp_amazonaws` (original destination), while
//! the same server asked for `example.com` is refused: the mesh declares no backend for it.
//!
//! The "AWS endpoint" is forced to the local server with curl's `--resolve`; interception
//! then hands Envoy the original destination, exactly as for a real AWS address.

mod sidecar_support;

use std::process::{Child, Stdio};

use sidecar_support::Mesh;

const MESH_YAML: &str = "kind: Mesh
name: colorapp
spec:
  egressFilter:
    type: DROP_ALL
---
kind: VirtualNode
mesh: colorapp
name: app
spec: {}
";

/// `openssl s_server -www` on 443 in a namespace; killed on drop.
struct TlsServer(Child);

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `curl -k` to `https://<host>/` with `host` resolved to `ip`, in `ns`, optionally as `uid`;
/// returns the HTTP status (0: the connection failed).
fn curl_tls(mesh: &Mesh, ns: &str, uid: Option<u32>, host: &str, ip: &str) -> u16 {
    let resolve = format!("{host}:443:{ip}");
    let url = format!("https://{host}/");
    let curl = [
        "curl",
        "-sk",
        "--max-time",
        "5",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--resolve",
        &resolve,
        &url,
    ];
    let out = match uid {
        Some(u) => {
            let u = u.to_string();
            let args = [&["--reuid", &u, "--regid", &u, "--clear-groups"][..], &curl].concat();
            mesh.in_ns(ns, "setpriv", &args)
        }
        None => mesh.in_ns(ns, curl[0], &curl[1..]),
    };
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn amazonaws_sni_reaches_its_destination_under_drop_all_and_other_sni_is_refused() {
    let mut mesh = Mesh::start(&["app", "aws"]);
    mesh.apply(MESH_YAML);

    // The TLS server standing in for an AWS endpoint.
    let dir = mesh.dir.path().to_owned();
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    let gen_cert = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=s3.eu-west-1.amazonaws.com", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl req (apt-get install -y openssl)");
    assert!(gen_cert.status.success(), "{gen_cert:?}");
    let server = mesh
        .host("aws")
        .command("openssl")
        .args(["s_server", "-accept", "443", "-www", "-quiet", "-cert"])
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let _server = TlsServer(server);
    let aws_ip = mesh.host("aws").ip.to_string();
    // Reachable without the mesh in the way: as uid 1337, which interception exempts.
    mesh.wait_for("the TLS server", 20, || {
        curl_tls(&mesh, "app", Some(1337), "example.com", &aws_ip) == 200
    });

    mesh.sidecar("app", &[]);
    // Intercepted from now on; the first success needs Envoy's config to have arrived.
    mesh.wait_for("an amazonaws SNI through the sidecar", 60, || {
        curl_tls(&mesh, "app", None, "s3.eu-west-1.amazonaws.com", &aws_ip) == 200
    });
    assert_eq!(
        curl_tls(&mesh, "app", None, "sts.amazonaws.com", &aws_ip),
        200
    );
    let through_envoy = mesh.stat(
        "app",
        "cluster.cds_egress_colorapp_amazonaws.",
        "upstream_cx_total",
    );
    assert!(
        through_envoy >= 2,
        "the connections went through cds_egress_colorapp_amazonaws: {through_envoy}"
    );
    // The same server under another name: DROP_ALL closes it (before: 200 without the mesh).
    for other in [
        "example.com",
        "amazonaws.com.evil.example",
        "s3.amazonaws.com.cn",
    ] {
        assert_eq!(
            curl_tls(&mesh, "app", None, other, &aws_ip),
            0,
            "{other} must be refused under DROP_ALL"
        );
    }
    assert_eq!(
        mesh.stat(
            "app",
            "cluster.cds_egress_colorapp_amazonaws.",
            "upstream_cx_total",
        ),
        through_envoy,
        "refused names never reach the amazonaws cluster"
    );
}
