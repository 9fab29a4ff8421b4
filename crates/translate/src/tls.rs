//! App Mesh TLS as Envoy transport sockets: listener `tls` (a `DownstreamTlsContext` on the
//! ingress filter chain) and client policy `tls` (an `UpstreamTlsContext` on egress clusters).
//!
//! Certificate and trust sources:
//! - **file**: the paths become `DataSource.filename`s that Envoy reads (and watches) on the
//!   proxy's host;
//! - **sds**: App Mesh's SPIRE path. The secret name is passed through verbatim and fetched
//!   over gRPC SDS from the static cluster [`SDS_CLUSTER`] (the Unix socket named by
//!   `APPMESH_SDS_SOCKET_PATH`, added by the agent's bootstrap), exactly as App Mesh's Envoy
//!   image did, so an existing SPIRE agent (or any SDS server on that socket) keeps working.
//!   File and SDS sources mix freely (a file certificate with SDS trust, and vice versa);
//! - **acm**: not translated (AWS's managed CA is not reachable from here). It returns an
//!   error message instead of a context; the callers then fail closed (a listener is not
//!   served, a backend is withheld) and report it, so TLS the spec asks for is never
//!   replaced by plaintext.
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
use envoy_types::pb::envoy::config::core::v3::{
    ApiConfigSource, ApiVersion, ConfigSource, DataSource, GrpcService, TransportSocket,
    api_config_source, config_source, data_source, grpc_service,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, FilterChainMatch};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    SubjectAltNameMatcher, TlsCertificate, UpstreamTlsContext, common_tls_context,
    subject_alt_name_matcher,
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

/// The static cluster App Mesh's Envoy bootstrap adds for `APPMESH_SDS_SOCKET_PATH` (the
/// SPIRE agent's Unix socket); every SDS secret is fetched from it. The agent's bootstrap
/// defines a cluster of the same name.
pub const SDS_CLUSTER: &str = "static_cluster_sds_unix_socket";

/// An SDS reference to secret `name` (verbatim) served over gRPC (SotW, v3) by
/// [`SDS_CLUSTER`], the config source App Mesh's Envoy used.
fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_owned(),
        sds_config: Some(ConfigSource {
            resource_api_version: ApiVersion::V3 as i32,
            config_source_specifier: Some(config_source::ConfigSourceSpecifier::ApiConfigSource(
                ApiConfigSource {
                    api_type: api_config_source::ApiType::Grpc as i32,
                    transport_api_version: ApiVersion::V3 as i32,
                    grpc_services: vec![GrpcService {
                        target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                            grpc_service::EnvoyGrpc {
                                cluster_name: SDS_CLUSTER.to_owned(),
                                ..Default::default()
                            },
                        )),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
    }
}

/// Where a certificate (chain and key) comes from.
enum Cert<'a> {
    File { chain: &'a str, key: &'a str },
    Sds(&'a str),
}

/// Where the trust (CA bundle) comes from.
enum Trust<'a> {
    File(&'a str),
    Sds(&'a str),
}

/// Puts `cert` into `ctx`: an inline file certificate or an SDS reference.
fn set_certificate(ctx: &mut CommonTlsContext, cert: Cert<'_>) {
    match cert {
        Cert::File { chain, key } => ctx.tls_certificates.push(file_certificate(chain, key)),
        Cert::Sds(name) => ctx.tls_certificate_sds_secret_configs.push(sds(name)),
    }
}

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

/// The validation context for `trust` and the exact SAN `names` (none: any SAN). SDS trust
/// with SANs is a combined context: the SAN matchers stay in the translated configuration
/// while the CA bundle arrives (and rotates) over SDS.
fn validation(trust: Trust<'_>, names: &[String]) -> common_tls_context::ValidationContextType {
    use common_tls_context::{CombinedCertificateValidationContext, ValidationContextType};
    match trust {
        Trust::File(chain) => {
            ValidationContextType::ValidationContext(CertificateValidationContext {
                trusted_ca: Some(file(chain)),
                match_typed_subject_alt_names: san_matchers(names),
                ..Default::default()
            })
        }
        Trust::Sds(name) if names.is_empty() => {
            ValidationContextType::ValidationContextSdsSecretConfig(sds(name))
        }
        Trust::Sds(name) => {
            ValidationContextType::CombinedValidationContext(CombinedCertificateValidationContext {
                default_validation_context: Some(CertificateValidationContext {
                    match_typed_subject_alt_names: san_matchers(names),
                    ..Default::default()
                }),
                validation_context_sds_secret_config: Some(sds(name)),
                ..Default::default()
            })
        }
    }
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
/// `http/1.1`. `Err` says why it cannot be translated (ACM).
pub(crate) fn downstream(t: &ListenerTls, http: bool) -> Result<TransportSocket, String> {
    let cert = match &t.certificate {
        ListenerTlsCertificate::File(f) => Cert::File {
            chain: &f.certificate_chain,
            key: &f.private_key,
        },
        ListenerTlsCertificate::Sds(s) => Cert::Sds(&s.secret_name),
        ListenerTlsCertificate::Acm(a) => {
            return Err(format!(
                "ACM certificate `{}` is not translated (AWS Certificate Manager is not reachable; use a file or SDS certificate)",
                a.certificate_arn
            ));
        }
    };
    let validation_context = t.validation.as_ref().map(|v| {
        let trust = match &v.trust {
            ListenerTlsValidationTrust::File(f) => Trust::File(&f.certificate_chain),
            ListenerTlsValidationTrust::Sds(s) => Trust::Sds(&s.secret_name),
        };
        validation(
            trust,
            sans(v.subject_alternative_names.as_ref()).unwrap_or(&[]),
        )
    });
    let mut common = CommonTlsContext {
        validation_context_type: validation_context,
        alpn_protocols: if http {
            vec!["h2".to_owned(), "http/1.1".to_owned()]
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    set_certificate(&mut common, cert);
    let ctx = DownstreamTlsContext {
        require_client_certificate: common
            .validation_context_type
            .as_ref()
            .map(|_| pb::boolv(true)),
        common_tls_context: Some(common),
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

/// Checks that client policy `t` uses only translated sources (file or SDS trust and client
/// certificate); `Err` says what is not (ACM private CA trust).
pub(crate) fn check_client(t: &ClientPolicyTls) -> Result<(), String> {
    match &t.validation.trust {
        TlsValidationTrust::File(_) | TlsValidationTrust::Sds(_) => Ok(()),
        TlsValidationTrust::Acm(a) => Err(format!(
            "ACM private CA trust {:?} is not translated (AWS Private CA is not reachable; use a file or SDS trust)",
            a.certificate_authority_arns
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
/// (which [`check_client`] accepted; ACM trust yields `None`). `alpn`: the protocol the
/// cluster speaks (`h2` or `http/1.1`; none for tcp), offered so that the server's
/// connection manager need not guess the codec.
pub(crate) fn upstream(
    t: &ClientPolicyTls,
    target: &VirtualNodeSpec,
    alpn: Option<&str>,
) -> Option<TransportSocket> {
    let trust = match &t.validation.trust {
        TlsValidationTrust::File(f) => Trust::File(&f.certificate_chain),
        TlsValidationTrust::Sds(s) => Trust::Sds(&s.secret_name),
        TlsValidationTrust::Acm(_) => return None,
    };
    let discovered = discovery_name(target);
    let names: Vec<String> = match sans(t.validation.subject_alternative_names.as_ref()) {
        Some(n) => n.to_vec(),
        None => discovered.iter().cloned().collect(),
    };
    let mut common = CommonTlsContext {
        validation_context_type: Some(validation(trust, &names)),
        alpn_protocols: alpn.iter().map(|p| (*p).to_owned()).collect(),
        ..Default::default()
    };
    match &t.certificate {
        None => {}
        Some(ClientTlsCertificate::File(f)) => set_certificate(
            &mut common,
            Cert::File {
                chain: &f.certificate_chain,
                key: &f.private_key,
            },
        ),
        Some(ClientTlsCertificate::Sds(s)) => {
            set_certificate(&mut common, Cert::Sds(&s.secret_name))
        }
    }
    let ctx = UpstreamTlsContext {
        sni: discovered.unwrap_or_default(),
        common_tls_context: Some(common),
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

    fn common(socket: &TransportSocket, upstream: bool) -> CommonTlsContext {
        use prost::Message;
        let Some(ConfigType::TypedConfig(any)) = &socket.config_type else {
            panic!("no typed config")
        };
        if upstream {
            UpstreamTlsContext::decode(any.value.as_slice())
                .unwrap()
                .common_tls_context
                .unwrap()
        } else {
            DownstreamTlsContext::decode(any.value.as_slice())
                .unwrap()
                .common_tls_context
                .unwrap()
        }
    }

    fn grpc_cluster(c: &SdsSecretConfig) -> &str {
        let Some(config_source::ConfigSourceSpecifier::ApiConfigSource(api)) =
            &c.sds_config.as_ref().unwrap().config_source_specifier
        else {
            panic!("not an API config source")
        };
        assert_eq!(api.api_type, api_config_source::ApiType::Grpc as i32);
        assert_eq!(api.transport_api_version, ApiVersion::V3 as i32);
        let Some(grpc_service::TargetSpecifier::EnvoyGrpc(g)) =
            &api.grpc_services[0].target_specifier
        else {
            panic!("not envoy_grpc")
        };
        &g.cluster_name
    }

    #[test]
    fn sds_certificate_and_trust_name_the_secret_verbatim_on_the_sds_cluster() {
        let l: ListenerTls = serde_json::from_value(serde_json::json!({
            "mode": "STRICT",
            "certificate": {"sds": {"secretName": "spiffe://example.org/web"}},
            "validation": {"trust": {"sds": {"secretName": "spiffe://example.org"}}}
        }))
        .unwrap();
        let c = common(&downstream(&l, true).unwrap(), false);
        assert!(c.tls_certificates.is_empty());
        let cert = &c.tls_certificate_sds_secret_configs[0];
        assert_eq!(cert.name, "spiffe://example.org/web");
        assert_eq!(grpc_cluster(cert), SDS_CLUSTER);
        let Some(common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(v)) =
            &c.validation_context_type
        else {
            panic!("no SDS validation context: {:?}", c.validation_context_type)
        };
        assert_eq!(v.name, "spiffe://example.org");
        assert_eq!(grpc_cluster(v), SDS_CLUSTER);
    }

    #[test]
    fn mixed_sources_keep_sans_and_the_default_san() {
        // File certificate + SDS trust, no SANs: the target's discovery name is required.
        let t = policy(serde_json::json!({
            "certificate": {"file": {"certificateChain": "/c.pem", "privateKey": "/c.key"}},
            "validation": {"trust": {"sds": {"secretName": "ROOTCA"}}}
        }));
        check_client(&t).unwrap();
        let target: VirtualNodeSpec = serde_json::from_value(
            serde_json::json!({"serviceDiscovery": {"dns": {"hostname": "web.ns.local"}}}),
        )
        .unwrap();
        let c = common(&upstream(&t, &target, Some("h2")).unwrap(), true);
        assert_eq!(c.tls_certificates.len(), 1);
        let Some(common_tls_context::ValidationContextType::CombinedValidationContext(v)) =
            &c.validation_context_type
        else {
            panic!("no combined context")
        };
        assert_eq!(
            v.validation_context_sds_secret_config
                .as_ref()
                .unwrap()
                .name,
            "ROOTCA"
        );
        let sans = &v
            .default_validation_context
            .as_ref()
            .unwrap()
            .match_typed_subject_alt_names;
        assert_eq!(sans.len(), 2, "DNS and URI matchers for web.ns.local");
        // SDS certificate + file trust.
        let t = policy(serde_json::json!({
            "certificate": {"sds": {"secretName": "default"}},
            "validation": {"trust": {"file": {"certificateChain": "/ca.pem"}}}
        }));
        let c = common(&upstream(&t, &target, None).unwrap(), true);
        assert_eq!(c.tls_certificate_sds_secret_configs[0].name, "default");
        assert!(matches!(
            c.validation_context_type,
            Some(common_tls_context::ValidationContextType::ValidationContext(_))
        ));
        // ACM trust still fails closed.
        let acm = policy(serde_json::json!({
            "validation": {"trust": {"acm": {"certificateAuthorityArns": ["arn:x"]}}}
        }));
        assert!(check_client(&acm).unwrap_err().contains("ACM private CA"));
        assert!(upstream(&acm, &target, None).is_none());
    }
}
