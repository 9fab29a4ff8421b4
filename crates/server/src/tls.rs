//! TLS on the API and xDS ports: `--tls auto|on|off`, the certificate (`--tls-cert/--tls-key`
//! or one issued by meshplane's CA, see [`crate::ca`]) and the rustls server configs (ring
//! provider) of both ports.
//!
//! `auto` turns TLS on when either port listens beyond loopback (one decision for both
//! ports, so a client never has to guess which one is encrypted) and leaves it off on
//! loopback, where the demo and local tools talk plain HTTP.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use meshplane_auth::seal::SealKey;
use meshplane_store::Store;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::ca::{Ca, LeafParams, LeafUsage};

/// Lifetime of the server certificate meshplane's CA issues at each start: one year (a
/// process running longer must be restarted to renew it; rotation without restart is for
/// the mTLS issue).
const SERVER_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Flags of TLS on both ports (flattened into `meshplane serve`).
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// TLS on the API and xDS ports: `auto` (on when either port listens beyond loopback),
    /// `on` or `off`.
    #[arg(long, env = "MESHPLANE_TLS", value_enum, default_value = "auto")]
    pub tls: TlsMode,
    /// PEM certificate chain of the ports (with `--tls-key`); without it meshplane's own CA
    /// issues one and writes its CA certificate to `<data-dir>/ca.pem`.
    #[arg(long, env = "MESHPLANE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert` (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "MESHPLANE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Extra DNS name or IP address in the certificate meshplane's CA issues (repeatable),
    /// e.g. the load balancer's name.
    #[arg(long = "tls-san", value_name = "NAME")]
    pub tls_san: Vec<String>,
    /// Time a client has to complete the TLS handshake on the API port (on the xDS port, the
    /// handshake and the HTTP/2 preface share the xDS handshake timeout, 10 s).
    #[arg(long, default_value = "10s", value_parser = crate::listener::parse_duration)]
    pub tls_handshake_timeout: Duration,
}

/// `--tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsMode {
    /// On when a port listens beyond loopback.
    Auto,
    /// Always on.
    On,
    /// Always off.
    Off,
}

/// The ports' TLS configuration.
pub struct ServerTls {
    /// For the API port (ALPN `h2`, `http/1.1`).
    pub api: Arc<rustls::ServerConfig>,
    /// For the xDS port (ALPN `h2`).
    pub xds: Arc<rustls::ServerConfig>,
    /// Where meshplane's CA certificate was written, when the CA issued the certificate.
    pub ca_pem: Option<PathBuf>,
}

// === impl TlsArgs ===

impl TlsArgs {
    /// Whether TLS is on for listeners bound to `addrs`.
    pub fn enabled(&self, addrs: &[SocketAddr]) -> bool {
        match self.tls {
            TlsMode::On => true,
            TlsMode::Off => false,
            TlsMode::Auto => addrs.iter().any(|a| !a.ip().is_loopback()),
        }
    }
}

/// Builds both ports' TLS configs: from `--tls-cert/--tls-key`, or from a certificate
/// meshplane's CA (created in `store` on first use) issues for `addrs` and `--tls-san`.
pub async fn server_tls(
    args: &TlsArgs,
    addrs: &[SocketAddr],
    store: &dyn Store,
    seal: &SealKey,
    data_dir: &Path,
) -> anyhow::Result<ServerTls> {
    let (chain, key, ca_pem) = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let (chain, key) = load_pem_pair(cert, key)?;
            (chain, key, None)
        }
        _ => {
            let ca = Ca::load_or_create(store, seal).await?;
            let issued = ca.issue_leaf(&server_leaf_params(addrs, &args.tls_san))?;
            let chain = vec![
                CertificateDer::from(issued.cert_der),
                CertificateDer::from(ca.cert_der()?),
            ];
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.key_der));
            let path = ca.write_pem(data_dir)?;
            (chain, key, Some(path))
        }
    };
    let api = server_config(chain.clone(), key.clone_key(), &[b"h2", b"http/1.1"])?;
    let xds = server_config(chain, key, &[b"h2"])?;
    Ok(ServerTls { api, xds, ca_pem })
}

/// SANs of the issued server certificate: the listen IPs (not the unspecified address),
/// `localhost`, 127.0.0.1, ::1, the hostname, and `--tls-san`.
fn server_leaf_params(addrs: &[SocketAddr], extra: &[String]) -> LeafParams {
    let mut ips: Vec<IpAddr> = vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()];
    let mut dns_names = vec!["localhost".to_owned()];
    for a in addrs {
        if !a.ip().is_unspecified() {
            ips.push(a.ip());
        }
    }
    if let Some(host) = hostname() {
        dns_names.push(host);
    }
    for name in extra {
        match name.parse::<IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => dns_names.push(name.clone()),
        }
    }
    ips.sort();
    ips.dedup();
    dns_names.sort();
    dns_names.dedup();
    LeafParams {
        common_name: dns_names
            .iter()
            .find(|n| *n != "localhost")
            .cloned()
            .unwrap_or_else(|| "localhost".into()),
        dns_names,
        ips,
        uris: Vec::new(),
        validity: SERVER_CERT_VALIDITY,
        usage: LeafUsage::Server,
    }
}

fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_ascii_lowercase();
    // Only names a certificate can carry.
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    valid.then_some(name)
}

fn load_pem_pair(
    cert: &Path,
    key: &Path,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading --tls-cert {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| {
            format!(
                "--tls-cert {} is not a PEM certificate chain",
                cert.display()
            )
        })?;
    if chain.is_empty() {
        bail!("--tls-cert {} holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("--tls-key {} holds no PEM private key", key.display()))?;
    Ok((chain, key))
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    // ring is the workspace's only provider (no aws-lc-rs); rustls 0.23.48 deprecates this
    // constructor only because ring lacks post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("tls protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the tls certificate and key do not match or are not supported")?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(tls: TlsMode) -> TlsArgs {
        TlsArgs {
            tls,
            tls_cert: None,
            tls_key: None,
            tls_san: Vec::new(),
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn auto_is_on_beyond_loopback_only() {
        let lo: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let lo6: SocketAddr = "[::1]:1".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:1".parse().unwrap();
        let lan: SocketAddr = "10.1.2.3:1".parse().unwrap();
        assert!(!args(TlsMode::Auto).enabled(&[lo, lo6]));
        assert!(args(TlsMode::Auto).enabled(&[lo, any]));
        assert!(args(TlsMode::Auto).enabled(&[lan, lo]));
        assert!(args(TlsMode::On).enabled(&[lo]));
        assert!(!args(TlsMode::Off).enabled(&[any]));
    }

    #[test]
    fn issued_sans_cover_loopback_listen_ip_and_extra_names() {
        let p = server_leaf_params(
            &["0.0.0.0:1".parse().unwrap(), "10.0.0.7:2".parse().unwrap()],
            &["mesh.example.com".into(), "192.0.2.1".into()],
        );
        assert!(p.dns_names.contains(&"localhost".to_owned()));
        assert!(p.dns_names.contains(&"mesh.example.com".to_owned()));
        for ip in ["127.0.0.1", "::1", "10.0.0.7", "192.0.2.1"] {
            assert!(p.ips.contains(&ip.parse().unwrap()), "{ip}");
        }
        assert!(!p.ips.contains(&"0.0.0.0".parse().unwrap()));
    }
}
