//! App Mesh TLS as Envoy transport sockets: listener `tls` (a `DownstreamTlsContext` on the
//! ingress filter chain) and client policy `tls` (an `UpstreamTlsContext` on egress clusters).
//!
//! Only **file** certificates and file trust are translated in this slice: their paths become
//! `DataSource.filename`s that Envoy reads (and watches) on the proxy's host. Certificates and
//! trust from `sds` or `acm` return an error message instead of a context; the callers then
//! fail closed (a listener is not served, a backend is withheld) and report it, so TLS the
//! spec asks for is never replaced by plaintext.
//!
//! Semantics reproduced from App Mesh:
//! - listener `validation` means mutual TLS: the client must present a certificate that
//!   chains to the trust and, when `subjectAlternativeNames` is given, carries one of them;
//! - a client policy without `subjectAlternativeNames` verifies the server certificate
//!   against the target node's service-discovery name (the DNS `hostname`, or
//!   `<serviceName>.<namespaceName>` for Cloud Map), App Mesh's documented certificate
//!   requirement; Envoy's DNS SAN matching honours wildcard certificates (`*.ns.local`);
//! - the same name is sent as SNI (App Mesh gave no SNI knob);
//! - exact SANs match DNS and URI SANs (App Mesh's SPIFFE identities are URI SANs).

use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
use envoy_types::pb::envoy::config::core::v3::{DataSource, TransportSocket, data_source};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, FilterChainMatch};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SubjectAltNameMatcher,
    TlsCertificate, UpstreamTlsContext, common_tls_context, subject_alt_name_matcher,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use meshplane_model::VirtualNodeSpec;
use meshplane_model::common::{
    ClientPolicyTls, ClientTlsCertificate, ListenerTls, ListenerTlsCertificate,
    ListenerTlsValidationTrust, SubjectAlternativeNames, TlsMode, TlsValidationTrust,
};
use meshplane_model::virtual_node::ServiceDiscovery;

use crate::pb;

/// Name of Envoy's TLS transport socket.
const TLS_SOCKET: &str = "envoy.transport_sockets.tls";

fn file(path: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::Filename(path.to_owned())),
        ..Default::default()
    }
}

fn file_certificate(chain: &str, key: &str) -> TlsCertificate {
    TlsCertificate {
        certificate_chain: Some(file(chain)),
        private_key: Some(file(key)),
        ..Default::default()
    }
}

/// SAN matchers: every exact name as a DNS and as a URI SAN.
fn san_matchers(names: &[String]) -> Vec<SubjectAltNameMatcher> {
    use subject_alt_name_matcher::SanType;
    names
        .iter()
        .flat_map(|n| {
            [SanType::Dns, SanType::Uri].map(|t| SubjectAltNameMatcher {
                san_type: t as i32,
                matcher: Some(StringMatcher {
                    match_pattern: Some(string_matcher::MatchPattern::Exact(n.clone())),
                    ..Default::default()
                }),
                ..Default::default()
            })
        })
        .collect()
}

fn sans(s: Option<&SubjectAlternativeNames>) -> Option<&[String]> {
    s.map(|s| s.match_.exact.as_slice())
}

fn validation(trust_chain: &str, names: &[String]) -> common_tls_context::ValidationContextType {
    common_tls_context::ValidationContextType::ValidationContext(CertificateValidationContext {
        trusted_ca: Some(file(trust_chain)),
        match_typed_subject_alt_names: san_matchers(names),
        ..Default::default()
    })
}

/// Wraps a TLS context message into Envoy's TLS transport socket.
fn socket<T: prost::Name + prost::Message>(ctx: &T) -> TransportSocket {
    TransportSocket {
        name: TLS_SOCKET.to_owned(),
        config_type: Some(ConfigType::TypedConfig(pb::any(ctx))),
    }
}

/// The downstream transport socket of a node or gateway listener whose `tls` is `t`
/// (whatever its mode; the caller decides where it applies). `http` offers ALPN `h2` and
/// `http/1.1`. `Err` says why it cannot be translated (SDS, ACM).
pub(crate) fn downstream(t: &ListenerTls, http: bool) -> Result<TransportSocket, String> {
    let cert = match &t.certificate {
        ListenerTlsCertificate::File(f) => file_certificate(&f.certificate_chain, &f.private_key),
        ListenerTlsCertificate::Sds(s) => {
            return Err(format!(
                "certificate from SDS secret `{}` is not translated yet",
                s.secret_name
            ));
        }
        ListenerTlsCertificate::Acm(a) => {
            return Err(format!(
                "ACM certificate `{}` is not translated yet (map it to a file certificate)",
                a.certificate_arn
            ));
        }
    };
    let validation_context = match &t.validation {
        None => None,
        Some(v) => match &v.trust {
            ListenerTlsValidationTrust::File(f) => Some(validation(
                &f.certificate_chain,
                sans(v.subject_alternative_names.as_ref()).unwrap_or(&[]),
            )),
            ListenerTlsValidationTrust::Sds(s) => {
                return Err(format!(
                    "validation trust from SDS secret `{}` is not translated yet",
                    s.secret_name
                ));
            }
        },
    };
    let ctx = DownstreamTlsContext {
        require_client_certificate: validation_context.as_ref().map(|_| pb::boolv(true)),
        common_tls_context: Some(CommonTlsContext {
            tls_certificates: vec![cert],
            validation_context_type: validation_context,
            alpn_protocols: if http {
                vec!["h2".to_owned(), "http/1.1".to_owned()]
            } else {
                Vec::new()
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(socket(&ctx))
}

/// How a listener is served under its `tls`.
pub(crate) struct ListenerPlan {
    /// The TLS transport socket (STRICT, PERMISSIVE).
    pub socket: Option<TransportSocket>,
    /// Whether plaintext is accepted too (PERMISSIVE, DISABLED, no `tls`).
    pub plaintext: bool,
}

/// A listener `tls` that cannot be translated: `strict` (so the listener must not be
/// served at all) and why.
pub(crate) struct NotTranslated {
    pub strict: bool,
    pub why: String,
}

/// The plan for a listener with `tls` (`http`: an HTTP-family listener, which offers ALPN).
/// An unknown mode is treated as STRICT: fail closed.
pub(crate) fn listener_plan(
    t: Option<&ListenerTls>,
    http: bool,
) -> Result<ListenerPlan, NotTranslated> {
    let plain = ListenerPlan {
        socket: None,
        plaintext: true,
    };
    let Some(t) = t else { return Ok(plain) };
    if t.mode == TlsMode::Disabled {
        return Ok(plain);
    }
    let strict = t.mode != TlsMode::Permissive;
    match downstream(t, http) {
        Ok(socket) => Ok(ListenerPlan {
            socket: Some(socket),
            plaintext: !strict,
        }),
        Err(why) => Err(NotTranslated { strict, why }),
    }
}

/// The filter chains of one listener port under `plan`: a TLS chain (named `<name>_tls`,
/// matched on `transport_protocol: tls` when plaintext is accepted too) and/or the
/// plaintext chain `<name>`. `m` is the port's own match (destination port, or none).
pub(crate) fn filter_chains(
    name: &str,
    m: Option<FilterChainMatch>,
    filters: Vec<Filter>,
    plan: ListenerPlan,
) -> Vec<FilterChain> {
    let mut out = Vec::new();
    if let Some(socket) = plan.socket {
        let mut tm = m.clone().unwrap_or_default();
        if plan.plaintext {
            tm.transport_protocol = "tls".to_owned();
        }
        out.push(FilterChain {
            name: format!("{name}_tls"),
            filter_chain_match: (tm != FilterChainMatch::default()).then_some(tm),
            filters: filters.clone(),
            transport_socket: Some(socket),
            ..Default::default()
        });
    }
    if plan.plaintext {
        out.push(FilterChain {
            name: name.to_owned(),
            filter_chain_match: m,
            filters,
            ..Default::default()
        });
    }
    out
}

/// Whether client policy `t` makes TLS apply to a cluster on target port `port`:
/// `enforce` (default true) and `ports` (absent or empty = every port).
pub(crate) fn applies(t: &ClientPolicyTls, port: i64) -> bool {
    t.enforce.unwrap_or(true)
        && t.ports
            .as_ref()
            .is_none_or(|ps| ps.is_empty() || ps.contains(&port))
}

/// Checks that client policy `t` uses only translated sources (file trust, file client
/// certificate); `Err` says what is not translated yet.
pub(crate) fn check_client(t: &ClientPolicyTls) -> Result<(), String> {
    match &t.validation.trust {
        TlsValidationTrust::File(_) => {}
        TlsValidationTrust::Sds(s) => {
            return Err(format!(
                "validation trust from SDS secret `{}` is not translated yet",
                s.secret_name
            ));
        }
        TlsValidationTrust::Acm(a) => {
            return Err(format!(
                "ACM private CA trust {:?} is not translated yet (map it to a file trust)",
                a.certificate_authority_arns
            ));
        }
    }
    match &t.certificate {
        None | Some(ClientTlsCertificate::File(_)) => Ok(()),
        Some(ClientTlsCertificate::Sds(s)) => Err(format!(
            "client certificate from SDS secret `{}` is not translated yet",
            s.secret_name
        )),
    }
}

/// The name a target node's certificate must carry when a client policy names no SANs, as
/// App Mesh required: its DNS hostname, or `<serviceName>.<namespaceName>` for Cloud Map.
pub(crate) fn discovery_name(target: &VirtualNodeSpec) -> Option<String> {
    match target.service_discovery.as_ref()? {
        ServiceDiscovery::Dns(d) => Some(d.hostname.trim().to_owned()),
        ServiceDiscovery::AwsCloudMap(c) => {
            Some(format!("{}.{}", c.service_name, c.namespace_name))
        }
    }
}

/// The upstream transport socket of an egress cluster to `target` under client policy `t`
/// (which [`check_client`] accepted; anything else yields `None`). `alpn`: the protocol the
/// cluster speaks (`h2` or `http/1.1`; none for tcp), offered so that the server's
/// connection manager need not guess the codec.
pub(crate) fn upstream(
    t: &ClientPolicyTls,
    target: &VirtualNodeSpec,
    alpn: Option<&str>,
) -> Option<TransportSocket> {
    let TlsValidationTrust::File(trust) = &t.validation.trust else {
        return None;
    };
    let discovered = discovery_name(target);
    let names: Vec<String> = match sans(t.validation.subject_alternative_names.as_ref()) {
        Some(n) => n.to_vec(),
        None => discovered.iter().cloned().collect(),
    };
    let tls_certificates = match &t.certificate {
        None => Vec::new(),
        Some(ClientTlsCertificate::File(f)) => {
            vec![file_certificate(&f.certificate_chain, &f.private_key)]
        }
        Some(ClientTlsCertificate::Sds(_)) => return None,
    };
    let ctx = UpstreamTlsContext {
        sni: discovered.unwrap_or_default(),
        common_tls_context: Some(CommonTlsContext {
            tls_certificates,
            validation_context_type: Some(validation(&trust.certificate_chain, &names)),
            alpn_protocols: alpn.iter().map(|p| (*p).to_owned()).collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    Some(socket(&ctx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: serde_json::Value) -> ClientPolicyTls {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn ports_and_enforce_select_the_clusters() {
        let trust = serde_json::json!({"trust": {"file": {"certificateChain": "/ca.pem"}}});
        let all = policy(serde_json::json!({"validation": trust}));
        assert!(applies(&all, 8080) && applies(&all, 9090));
        let some = policy(serde_json::json!({"validation": trust, "ports": [9090]}));
        assert!(!applies(&some, 8080) && applies(&some, 9090));
        let off = policy(serde_json::json!({"validation": trust, "enforce": false}));
        assert!(!applies(&off, 8080));
    }

    #[test]
    fn default_san_is_the_discovery_name() {
        let dns: VirtualNodeSpec = serde_json::from_value(
            serde_json::json!({"serviceDiscovery": {"dns": {"hostname": "web.ns.local"}}}),
        )
        .unwrap();
        assert_eq!(discovery_name(&dns).as_deref(), Some("web.ns.local"));
        let cm: VirtualNodeSpec = serde_json::from_value(serde_json::json!({
            "serviceDiscovery": {"awsCloudMap": {"namespaceName": "ns.local", "serviceName": "web"}}
        }))
        .unwrap();
        assert_eq!(discovery_name(&cm).as_deref(), Some("web.ns.local"));
    }
}
