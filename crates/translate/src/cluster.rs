//! Clusters: ingress (local application), egress (target virtual node listener) and the
//! `ALLOW_ALL` pass-through, with circuit breakers, health checks, outlier detection and
//! HTTP/2 upstream options.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection as EnvoyOutlier, circuit_breakers::Thresholds,
    cluster,
};
use envoy_types::pb::envoy::config::core::v3::{
    HealthCheck, HealthStatus, Http2ProtocolOptions, health_check,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, endpoint, lb_endpoint,
};
use envoy_types::pb::envoy::extensions::clusters::dynamic_forward_proxy::v3::{
    ClusterConfig as ForwardProxyClusterConfig, cluster_config,
};
use envoy_types::pb::envoy::extensions::common::dynamic_forward_proxy::v3::DnsCacheConfig;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::envoy::r#type::v3::CodecClientType;
use envoy_types::pb::google::protobuf::Any;
use meshplane_model::common::{HealthCheckPolicy, IpPreference, OutlierDetection, PortProtocol};
use meshplane_model::virtual_node::{
    DnsResponseType, Listener, ServiceDiscovery, VirtualNodeConnectionPool, VirtualNodeSpec,
};
use prost::Name;

use crate::endpoints::CloudMapService;
use crate::{Ctx, names, pb};

/// App Mesh's "effectively unlimited" circuit-breaker value (`INT32_MAX`).
pub(crate) const OPEN: i64 = 2_147_483_647;
/// Connect timeout of ingress clusters (App Mesh: 0.25 s).
pub(crate) const INGRESS_CONNECT_TIMEOUT_MS: i64 = 250;
/// Connect timeout of egress clusters (App Mesh: 1 s).
const EGRESS_CONNECT_TIMEOUT_MS: i64 = 1000;

/// True for the protocols carried over HTTP/2 to the upstream.
pub(crate) fn is_h2(p: &PortProtocol) -> bool {
    matches!(p, PortProtocol::Http2 | PortProtocol::Grpc)
}

/// True for protocols handled by an HTTP connection manager.
pub(crate) fn is_http(p: &PortProtocol) -> bool {
    matches!(
        p,
        PortProtocol::Http | PortProtocol::Http2 | PortProtocol::Grpc
    )
}

/// Circuit breakers from a listener's connection pool; everything not declared is open.
pub(crate) fn circuit_breakers(pool: Option<&VirtualNodeConnectionPool>) -> CircuitBreakers {
    let (mut conns, mut pending, mut reqs) = (OPEN, OPEN, OPEN);
    match pool {
        None => {}
        Some(VirtualNodeConnectionPool::Tcp(p)) => conns = p.max_connections,
        Some(VirtualNodeConnectionPool::Http(p)) => {
            conns = p.max_connections;
            pending = p.max_pending_requests.unwrap_or(OPEN);
        }
        Some(VirtualNodeConnectionPool::Http2(p)) | Some(VirtualNodeConnectionPool::Grpc(p)) => {
            reqs = p.max_requests
        }
    }
    CircuitBreakers {
        thresholds: vec![Thresholds {
            max_connections: Some(pb::u32v(conns)),
            max_pending_requests: Some(pb::u32v(pending)),
            max_requests: Some(pb::u32v(reqs)),
            max_retries: Some(pb::u32v(OPEN)),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// `typed_extension_protocol_options` forcing HTTP/2 to the upstream (one entry).
pub(crate) fn h2_protocol_options() -> HashMap<String, Any> {
    let opts = HttpProtocolOptions {
        upstream_protocol_options: Some(
            http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                http_protocol_options::ExplicitHttpConfig {
                    protocol_config: Some(
                        http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                            Http2ProtocolOptions::default(),
                        ),
                    ),
                },
            ),
        ),
        ..Default::default()
    };
    [(HttpProtocolOptions::full_name(), pb::any(&opts))]
        .into_iter()
        .collect()
}

pub(crate) fn endpoint(
    address: &str,
    port: u32,
    ipv4_compat: bool,
    hc_port: Option<u32>,
) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(pb::socket(address, port, ipv4_compat)),
            health_check_config: hc_port.map(|p| endpoint::HealthCheckConfig {
                port_value: p,
                ..Default::default()
            }),
            ..Default::default()
        })),
        ..Default::default()
    }
}

pub(crate) fn assignment(
    cluster_name: &str,
    lb_endpoints: Vec<LbEndpoint>,
) -> ClusterLoadAssignment {
    let endpoints = if lb_endpoints.is_empty() {
        Vec::new()
    } else {
        vec![LocalityLbEndpoints {
            lb_endpoints,
            ..Default::default()
        }]
    };
    ClusterLoadAssignment {
        cluster_name: cluster_name.to_owned(),
        endpoints,
        ..Default::default()
    }
}

fn is_v6(p: Option<&IpPreference>) -> bool {
    matches!(
        p,
        Some(IpPreference::Ipv6Only) | Some(IpPreference::Ipv6Preferred)
    )
}

/// The ingress cluster of one of the proxy's own listeners: STATIC to the local application
/// (`127.0.0.1`, `::1` under an IPv6 preference, or [`crate::TranslateOptions::app_address`]).
pub(crate) fn ingress_cluster(ctx: &Ctx<'_>, l: &Listener) -> Cluster {
    let pm = &l.port_mapping;
    let name = names::ingress_cluster(ctx.mesh_name(), ctx.node_name, &pm.protocol, pm.port);
    let pref = ctx.ip_preference_of(ctx.node);
    let local = match ctx.opts.app_address {
        Some(ip) => ip.to_string(),
        None if is_v6(pref.as_ref()) => "::1".to_owned(),
        None => "127.0.0.1".to_owned(),
    };
    Cluster {
        name: name.clone(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        connect_timeout: Some(pb::millis(INGRESS_CONNECT_TIMEOUT_MS)),
        lb_policy: cluster::LbPolicy::RoundRobin as i32,
        load_assignment: Some(assignment(
            &name,
            vec![endpoint(&local, pb::clamp_u32(pm.port), false, None)],
        )),
        circuit_breakers: Some(circuit_breakers(l.connection_pool.as_ref())),
        typed_extension_protocol_options: if is_h2(&pm.protocol) {
            h2_protocol_options()
        } else {
            HashMap::new()
        },
        ..Default::default()
    }
}

/// Active health check from the target listener's `healthCheck`.
fn health_check(hc: &HealthCheckPolicy) -> HealthCheck {
    let checker = match hc.protocol {
        PortProtocol::Tcp => health_check::HealthChecker::TcpHealthCheck(Default::default()),
        PortProtocol::Grpc => health_check::HealthChecker::GrpcHealthCheck(Default::default()),
        ref p => health_check::HealthChecker::HttpHealthCheck(health_check::HttpHealthCheck {
            path: hc
                .path
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "/".to_owned()),
            codec_client_type: if *p == PortProtocol::Http2 {
                CodecClientType::Http2 as i32
            } else {
                CodecClientType::Http1 as i32
            },
            ..Default::default()
        }),
    };
    let interval = pb::millis(hc.interval_millis.max(1));
    HealthCheck {
        // Envoy requires both to be > 0.
        timeout: Some(pb::millis(hc.timeout_millis.max(1))),
        interval: Some(interval),
        // The declared interval also before the caller has sent traffic: Envoy's default
        // (60 s) would leave an endpoint that failed its first probe out for a minute.
        no_traffic_interval: Some(interval),
        unhealthy_threshold: Some(pb::u32v(hc.unhealthy_threshold)),
        healthy_threshold: Some(pb::u32v(hc.healthy_threshold)),
        health_checker: Some(checker),
        ..Default::default()
    }
}

/// Outlier detection from the target listener's `outlierDetection`.
fn outlier_detection(od: &OutlierDetection) -> EnvoyOutlier {
    EnvoyOutlier {
        consecutive_5xx: Some(pb::u32v(od.max_server_errors)),
        // Envoy requires both to be > 0.
        interval: Some(pb::millis(od.interval.as_millis().max(1))),
        base_ejection_time: Some(pb::millis(od.base_ejection_duration.as_millis().max(1))),
        max_ejection_percent: Some(pb::u32v(od.max_ejection_percent.clamp(0, 100))),
        ..Default::default()
    }
}

fn dns_lookup_family(p: Option<&IpPreference>) -> cluster::DnsLookupFamily {
    match p {
        Some(IpPreference::Ipv6Only) => cluster::DnsLookupFamily::V6Only,
        Some(IpPreference::Ipv6Preferred) => cluster::DnsLookupFamily::Auto,
        Some(IpPreference::Ipv4Preferred) => cluster::DnsLookupFamily::V4Preferred,
        Some(IpPreference::Ipv4Only) => cluster::DnsLookupFamily::V4Only,
        // No preference: App Mesh's resolver "will prefer IPv6 and fall back to IPv4" (the
        // howto-ipv6 walkthrough's table), which is Envoy's AUTO. Unknown values never pass
        // validation; AUTO is the least surprising reading should one slip through.
        None | Some(IpPreference::Unknown(_)) => cluster::DnsLookupFamily::Auto,
    }
}

/// The egress cluster for listener `l` of target node `target_name`; adds it (and its EDS
/// assignment for Cloud Map targets) to the output. Returns `None` when the target has no
/// service discovery (the caller reports it).
pub(crate) fn ensure_egress_cluster(
    ctx: &mut Ctx<'_>,
    target_name: &str,
    target: &VirtualNodeSpec,
    l: &Listener,
) -> Option<String> {
    let pm = &l.port_mapping;
    let transport_socket = ctx
        .backend_tls
        .1
        .as_ref()
        .filter(|t| crate::tls::applies(t, pm.port))
        .and_then(|t| {
            let alpn = match pm.protocol {
                PortProtocol::Http => Some("http/1.1"),
                PortProtocol::Http2 | PortProtocol::Grpc => Some("h2"),
                _ => None,
            };
            crate::tls::upstream(t, target, alpn)
        });
    let mut name = names::egress_cluster(ctx.mesh_name(), target_name, &pm.protocol, pm.port);
    if let Some(existing) = ctx.out.clusters.get(&name) {
        if existing.transport_socket == transport_socket {
            return Some(name);
        }
        // Another backend reaches this listener under a different TLS policy: a cluster
        // of its own, so neither policy is weakened.
        name = format!("{name}_for_{}", ctx.backend_tls.0);
        if ctx.out.clusters.contains_key(&name) {
            return Some(name);
        }
    }
    let sd = target.service_discovery.as_ref()?;
    if matches!(sd, ServiceDiscovery::Dns(d) if d.hostname.trim().is_empty()) {
        return None;
    }
    let pref = ctx.ip_preference_of(target);
    let port = pb::clamp_u32(pm.port);
    let hc_port = l
        .health_check
        .as_ref()
        .and_then(|h| h.port)
        .map(pb::clamp_u32)
        .filter(|p| *p != port && *p != 0);
    let mut c = Cluster {
        name: name.clone(),
        connect_timeout: Some(pb::millis(EGRESS_CONNECT_TIMEOUT_MS)),
        lb_policy: cluster::LbPolicy::RoundRobin as i32,
        circuit_breakers: Some(circuit_breakers(None)),
        health_checks: l.health_check.iter().map(health_check).collect(),
        outlier_detection: l.outlier_detection.as_ref().map(outlier_detection),
        typed_extension_protocol_options: if is_h2(&pm.protocol) {
            h2_protocol_options()
        } else {
            HashMap::new()
        },
        transport_socket,
        ..Default::default()
    };
    match sd {
        ServiceDiscovery::Dns(dns) => {
            let kind = match dns.response_type {
                Some(DnsResponseType::Endpoints) => cluster::DiscoveryType::StrictDns,
                _ => cluster::DiscoveryType::LogicalDns,
            };
            c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(kind as i32));
            c.dns_lookup_family = dns_lookup_family(pref.as_ref()) as i32;
            c.load_assignment = Some(assignment(
                &name,
                vec![endpoint(&dns.hostname, port, false, hc_port)],
            ));
        }
        ServiceDiscovery::AwsCloudMap(cm) => {
            c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32,
            ));
            c.eds_cluster_config = Some(cluster::EdsClusterConfig {
                eds_config: Some(pb::ads()),
                service_name: String::new(),
            });
            let service = CloudMapService::new(&cm.namespace_name, &cm.service_name);
            let filter: Vec<(String, String)> = cm
                .attributes
                .iter()
                .flatten()
                .map(|a| (a.key.clone(), a.value.clone()))
                .collect();
            let v6 = is_v6(pref.as_ref());
            // UNHEALTHY instances are left out. When none of the matching instances is
            // healthy, all of them are sent (still marked UNHEALTHY): Envoy's panic mode then
            // balances over all of them, failing open like Cloud Map's HEALTHY_OR_ELSE_ALL.
            let matching = ctx.endpoints.matching(&service, &filter);
            let any_healthy = matching.iter().any(|i| i.healthy);
            let eps = matching
                .into_iter()
                .filter(|i| i.healthy || !any_healthy)
                .filter_map(|i| {
                    let (v4a, v6a) = (valid_ip(i.ipv4.as_deref()), valid_ip(i.ipv6.as_deref()));
                    // The preferred family first, else whichever valid address there is.
                    let addr = if v6 { v6a.or(v4a) } else { v4a.or(v6a) }?;
                    let p = i.port.filter(|p| (1..=65535).contains(p)).unwrap_or(port);
                    let mut e = endpoint(addr, p, false, hc_port);
                    e.health_status = if i.healthy {
                        HealthStatus::Healthy as i32
                    } else {
                        HealthStatus::Unhealthy as i32
                    };
                    Some(e)
                })
                .collect();
            ctx.out
                .endpoints
                .insert(name.clone(), assignment(&name, eps));
        }
    }
    ctx.add_cluster(c);
    Some(name)
}

fn valid_ip(a: Option<&str>) -> Option<&str> {
    a.filter(|s| s.parse::<std::net::IpAddr>().is_ok())
}

/// The DNS cache shared by the forward-proxy cluster and the egress HTTP filter of an
/// explicit-mode proxy under `ALLOW_ALL` (both must carry the same configuration).
pub(crate) fn forward_proxy_dns_cache(ctx: &Ctx<'_>) -> DnsCacheConfig {
    DnsCacheConfig {
        name: format!("{}_egress_dns_cache", ctx.mesh_name()),
        dns_lookup_family: dns_lookup_family(ctx.ip_preference_of(ctx.node).as_ref()) as i32,
        ..Default::default()
    }
}

/// The pass-through cluster of an explicit-mode proxy under `ALLOW_ALL`: a dynamic forward
/// proxy to the request's `Host`. Explicit mode has no iptables, so the connection's own
/// destination is the Envoy itself and an `ORIGINAL_DST` cluster would loop back into it.
pub(crate) fn forward_proxy_cluster(ctx: &Ctx<'_>) -> Cluster {
    let config = ForwardProxyClusterConfig {
        cluster_implementation_specifier: Some(
            cluster_config::ClusterImplementationSpecifier::DnsCacheConfig(
                forward_proxy_dns_cache(ctx),
            ),
        ),
        ..Default::default()
    };
    Cluster {
        name: names::passthrough_cluster(ctx.mesh_name()),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::ClusterType(
            cluster::CustomClusterType {
                name: "envoy.clusters.dynamic_forward_proxy".to_owned(),
                typed_config: Some(pb::any(&config)),
            },
        )),
        connect_timeout: Some(pb::millis(EGRESS_CONNECT_TIMEOUT_MS)),
        lb_policy: cluster::LbPolicy::ClusterProvided as i32,
        circuit_breakers: Some(circuit_breakers(None)),
        ..Default::default()
    }
}

/// The `ORIGINAL_DST` pass-through cluster used under `ALLOW_ALL`.
pub(crate) fn passthrough_cluster(mesh: &str) -> Cluster {
    original_dst_cluster(names::passthrough_cluster(mesh))
}

/// `cds_egress_<mesh>_amazonaws`: forwards intercepted TLS connections whose SNI is
/// `*.amazonaws.com` to their original destination (what the application resolved).
pub(crate) fn amazonaws_cluster(mesh: &str) -> Cluster {
    original_dst_cluster(names::amazonaws_cluster(mesh))
}

fn original_dst_cluster(name: String) -> Cluster {
    Cluster {
        name,
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::OriginalDst as i32,
        )),
        connect_timeout: Some(pb::millis(EGRESS_CONNECT_TIMEOUT_MS)),
        lb_policy: cluster::LbPolicy::ClusterProvided as i32,
        circuit_breakers: Some(circuit_breakers(None)),
        ..Default::default()
    }
}
