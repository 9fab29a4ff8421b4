//! meshplane's own certificate authority: one ECDSA P-256 root kept in the store under
//! `ca/root`, its private key sealed with the data directory's key file, created once and
//! shared by every replica; it issues the API and xDS ports' server certificate at each start.
//!
//! ```text
//!  store ca/root {commonName, certificatePem, sealedKey (SealKey, context "ca/root"), createdAt}
//!     │ load_or_create (Absent precondition: two replicas starting at once agree on one root)
//!     ▼
//!  Ca ──issue_leaf(LeafParams)──▶ IssuedCert {certificate chain PEM, private key PEM}
//!     └─▶ <data-dir>/ca.pem (what clients trust: AWS_CA_BUNDLE, Envoy's trusted_ca)
//! ```
//!
//! `issue_leaf` is the extension point for workload certificates (SPIFFE URI SANs, client
//! usage, short lifetimes): leaves are never stored, only the root is.
//!
//! rcgen is built without its X.509 parser, so the issuer is rebuilt from the stored common
//! name and key rather than by parsing the certificate: the subject, the key identifier
//! (SHA-256 of the public key) and the key usages are deterministic, so leaves chain to the
//! stored certificate.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use meshplane_auth::seal::SealKey;
use meshplane_store::{Op, Precondition, Store, Txn, TxnOutcome};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};

/// The store key of the root.
pub const CA_KEY: &str = "ca/root";
/// Seal context of the root's private key (a sealed value opens only under its context).
const SEAL_CONTEXT: &str = "ca/root";
/// The root's lifetime: 10 years. Rotation is a later issue; a root that outlives the
/// deployment is what self-managed meshes (Consul, Linkerd's default) do.
const ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates are backdated by a day so a peer whose clock lags is not refused.
const BACKDATE_DAYS: i64 = 1;

/// Midnight UTC `offset` days from today (rcgen takes calendar dates; day precision is
/// enough for certificate validity). A macro: rcgen does not re-export the date type.
macro_rules! days_from_now {
    ($offset:expr) => {{
        let today = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() / 86_400);
        let (y, m, d) = civil_from_days(i64::try_from(today).unwrap_or(0) + $offset);
        rcgen::date_time_ymd(y, m, d)
    }};
}

/// The CA: its certificate and the issuer built from its key.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafUsage {
    /// TLS server (the API and xDS ports).
    Server,
    /// TLS client (a workload's outbound mTLS).
    Client,
    /// Both (a workload's inbound and outbound mTLS).
    ServerAndClient,
}

/// A leaf certificate request.
#[derive(Debug, Clone)]
pub struct LeafParams {
    /// Subject common name (informational; verification uses the SANs).
    pub common_name: String,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// IP SANs.
    pub ips: Vec<IpAddr>,
    /// URI SANs (SPIFFE ids for workloads: `spiffe://<trust domain>/...`).
    pub uris: Vec<String>,
    /// Lifetime from now.
    pub validity: Duration,
    /// Server, client or both.
    pub usage: LeafUsage,
}

/// An issued leaf: chain (leaf then root) and its fresh private key, both PEM.
pub struct IssuedCert {
    /// The leaf certificate followed by the CA certificate.
    pub chain_pem: String,
    /// PKCS#8 private key of the leaf.
    pub key_pem: String,
    /// The leaf's DER (for rustls).
    pub cert_der: Vec<u8>,
    /// The leaf key's PKCS#8 DER (for rustls).
    pub key_der: Vec<u8>,
}

/// The `ca/root` record.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RootRecord {
    common_name: String,
    certificate_pem: String,
    sealed_key: String,
    created_at: u64,
}

// === impl Ca ===

impl Ca {
    /// Loads the root from the store, or creates it if absent. Two processes creating it at
    /// once both end up with the one that committed first (an `Absent` precondition).
    pub async fn load_or_create(store: &dyn Store, seal: &SealKey) -> anyhow::Result<Ca> {
        for _ in 0..3 {
            if let Some(kv) = store
                .get(CA_KEY)
                .await
                .context("reading the CA from the store")?
            {
                return Ca::from_record(&kv.value, seal);
            }
            let (record, ca) = Ca::generate(seal)?;
            let txn = Txn {
                preconditions: vec![Precondition::Absent(CA_KEY.into())],
                ops: vec![Op::Put {
                    key: CA_KEY.into(),
                    value: serde_json::to_vec(&record)?,
                }],
            };
            match store.txn(txn).await.context("storing the new CA")? {
                TxnOutcome::Committed { .. } => {
                    tracing::info!(subject = %record.common_name, "created meshplane's certificate authority");
                    return Ok(ca);
                }
                // Another replica created it first: use theirs.
                TxnOutcome::Failed { .. } => continue,
            }
        }
        bail!("the CA record {CA_KEY} keeps changing; is another process rewriting it?")
    }

    fn generate(seal: &SealKey) -> anyhow::Result<(RootRecord, Ca)> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generating CA key")?;
        let mut suffix = [0u8; 6];
        meshplane_auth::seal::random_bytes(&mut suffix).context("random CA name")?;
        let common_name = format!("meshplane CA {}", meshplane_auth::sigv4::hex_lower(&suffix));
        let params = root_params(&common_name);
        let mut params = params;
        params.not_before = days_from_now!(-BACKDATE_DAYS);
        params.not_after = days_from_now!(days(ROOT_VALIDITY));
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key).context("self-signing the CA")?;
        let sealed_key = seal
            .seal(SEAL_CONTEXT, &key.serialize_der())
            .map_err(|e| anyhow::anyhow!("sealing the CA key: {e}"))?;
        let record = RootRecord {
            common_name: common_name.clone(),
            certificate_pem: cert.pem(),
            sealed_key,
            created_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let ca = Ca {
            cert_pem: record.certificate_pem.clone(),
            issuer: Issuer::new(root_params(&common_name), key),
        };
        Ok((record, ca))
    }

    fn from_record(bytes: &[u8], seal: &SealKey) -> anyhow::Result<Ca> {
        let record: RootRecord =
            serde_json::from_slice(bytes).context("the CA record ca/root is not valid JSON")?;
        let der = seal.open(SEAL_CONTEXT, &record.sealed_key).map_err(|e| {
            anyhow::anyhow!(
                "cannot open the CA key in the store ({e}): the data directory's key file is not \
                 the one it was sealed with"
            )
        })?;
        let key = KeyPair::try_from(der.as_slice()).context("the CA key does not parse")?;
        Ok(Ca {
            cert_pem: record.certificate_pem,
            issuer: Issuer::new(root_params(&record.common_name), key),
        })
    }

    /// The CA certificate, PEM: what clients trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Writes the CA certificate to `<data_dir>/ca.pem` (mode 0644, replaced atomically).
    pub fn write_pem(&self, data_dir: &Path) -> anyhow::Result<std::path::PathBuf> {
        use std::os::unix::fs::PermissionsExt as _;
        let path = data_dir.join("ca.pem");
        let tmp = data_dir.join(".ca.pem.tmp");
        std::fs::write(&tmp, &self.cert_pem)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Issues a leaf certificate with a fresh ECDSA P-256 key.
    pub fn issue_leaf(&self, p: &LeafParams) -> anyhow::Result<IssuedCert> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generating leaf key")?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, p.common_name.as_str());
        params.distinguished_name = dn;
        for name in &p.dns_names {
            let dns = name
                .clone()
                .try_into()
                .with_context(|| format!("{name:?} is not a valid DNS name for a certificate"))?;
            params.subject_alt_names.push(SanType::DnsName(dns));
        }
        for ip in &p.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        for uri in &p.uris {
            let uri = uri
                .clone()
                .try_into()
                .with_context(|| format!("{uri:?} is not a valid URI SAN"))?;
            params.subject_alt_names.push(SanType::URI(uri));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match p.usage {
            LeafUsage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            LeafUsage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            LeafUsage::ServerAndClient => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        params.use_authority_key_identifier_extension = true;
        params.not_before = days_from_now!(-BACKDATE_DAYS);
        params.not_after = days_from_now!(days(p.validity).max(1));
        params.serial_number = Some(random_serial()?);
        let cert = params
            .signed_by(&key, &self.issuer)
            .context("signing the leaf certificate")?;
        Ok(IssuedCert {
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        })
    }

    /// The CA certificate's DER (for a rustls chain).
    pub fn cert_der(&self) -> anyhow::Result<Vec<u8>> {
        pem_to_der(&self.cert_pem)
    }
}

/// The root's parameters apart from validity and serial (deterministic from its name).
fn root_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "meshplane");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn random_serial() -> anyhow::Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    meshplane_auth::seal::random_bytes(&mut bytes).context("random serial")?;
    bytes[0] &= 0x7f; // positive
    Ok(SerialNumber::from_slice(&bytes))
}

fn days(d: Duration) -> i64 {
    i64::try_from(d.as_secs() / 86_400).unwrap_or(i64::MAX / 2)
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (
        i32::try_from(y).unwrap_or(9999),
        u8::try_from(m).unwrap_or(1),
        u8::try_from(d).unwrap_or(1),
    )
}

/// The first PEM block's DER.
pub fn pem_to_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let der =
        CertificateDer::from_pem_slice(pem.as_bytes()).context("parsing a PEM certificate")?;
    Ok(der.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
    }
}
