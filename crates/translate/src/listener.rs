//! Building blocks shared by the ingress and egress listeners: listener filters, HTTP
//! connection managers and TCP proxies.

use envoy_types::pb::envoy::config::accesslog::v3::AccessLog;
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, ListenerFilter, filter, listener_filter,
};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::common::dynamic_forward_proxy::v3::DnsCacheConfig;
use envoy_types::pb::envoy::extensions::filters::http::dynamic_forward_proxy::v3::{
    FilterConfig as ForwardProxyFilterConfig, filter_config,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::google::protobuf::Duration;

use crate::pb;

/// Envoy's name of the HTTP connection manager network filter.
pub(crate) const HCM: &str = "envoy.filters.network.http_connection_manager";
/// Envoy's name of the TCP proxy network filter.
pub(crate) const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";

/// The `original_dst` listener filter: iptables `REDIRECT`s application traffic to the proxy
/// ports, and this filter restores the original destination so filter chains can match on
/// the destination port and `ORIGINAL_DST` clusters can forward to it.
pub(crate) fn original_dst() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.original_dst".to_owned(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(pb::any(
            &OriginalDst {},
        ))),
        ..Default::default()
    }
}

/// The `tls_inspector` listener filter, run only for connections to `port` (it waits for the
/// client's first bytes, which would stall server-first protocols on other ports).
pub(crate) fn tls_inspector_on(port: i32) -> ListenerFilter {
    use envoy_types::pb::envoy::config::listener::v3::{
        ListenerFilterChainMatchPredicate, listener_filter_chain_match_predicate::Rule,
    };
    use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
    use envoy_types::pb::envoy::r#type::v3::Int32Range;
    let on_port = ListenerFilterChainMatchPredicate {
        rule: Some(Rule::DestinationPortRange(Int32Range {
            start: port,
            end: port + 1,
        })),
    };
    ListenerFilter {
        name: "envoy.filters.listener.tls_inspector".to_owned(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(pb::any(
            &TlsInspector::default(),
        ))),
        filter_disabled: Some(ListenerFilterChainMatchPredicate {
            rule: Some(Rule::NotMatch(Box::new(on_port))),
        }),
    }
}

/// Where an HTTP connection manager gets its routes.
pub(crate) enum Routes {
    /// Over RDS (ADS) by name.
    Rds(String),
    /// Inline.
    Inline(Box<RouteConfiguration>),
}

/// An HTTP connection manager filter (codec auto-detected: HTTP/1.1 and h2c).
pub(crate) fn hcm(stat_prefix: &str, routes: Routes, access_log: Vec<AccessLog>) -> Filter {
    hcm_with(
        stat_prefix,
        routes,
        access_log,
        Vec::new(),
        Router::default(),
    )
}

/// An HTTP connection manager filter with `filters` before the router, and the router's
/// own configuration.
pub(crate) fn hcm_with(
    stat_prefix: &str,
    routes: Routes,
    access_log: Vec<AccessLog>,
    filters: Vec<HttpFilter>,
    router: Router,
) -> Filter {
    let route_specifier = match routes {
        Routes::Rds(name) => http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(pb::ads()),
            route_config_name: name,
        }),
        Routes::Inline(rc) => http_connection_manager::RouteSpecifier::RouteConfig(*rc),
    };
    let hcm = HttpConnectionManager {
        stat_prefix: stat_prefix.to_owned(),
        codec_type: http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(route_specifier),
        http_filters: filters
            .into_iter()
            .chain([HttpFilter {
                name: "envoy.filters.http.router".to_owned(),
                config_type: Some(http_filter::ConfigType::TypedConfig(pb::any(&router))),
                ..Default::default()
            }])
            .collect(),
        access_log,
        // Tracing on: the provider (X-Ray, Datadog, Zipkin/Jaeger, OpenTelemetry) is the one
        // the proxy's bootstrap declares, chosen by App Mesh's image variables; without one
        // Envoy uses its null tracer and this costs nothing but a request-id flag.
        tracing: Some(http_connection_manager::Tracing::default()),
        ..Default::default()
    };
    Filter {
        name: HCM.to_owned(),
        config_type: Some(filter::ConfigType::TypedConfig(pb::any(&hcm))),
    }
}

/// The dynamic forward proxy HTTP filter over `dns_cache` (it acts only on requests routed
/// to a dynamic forward proxy cluster).
pub(crate) fn forward_proxy_filter(dns_cache: DnsCacheConfig) -> HttpFilter {
    let config = ForwardProxyFilterConfig {
        implementation_specifier: Some(filter_config::ImplementationSpecifier::DnsCacheConfig(
            dns_cache,
        )),
        ..Default::default()
    };
    HttpFilter {
        name: "envoy.filters.http.dynamic_forward_proxy".to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pb::any(&config))),
        ..Default::default()
    }
}

/// A TCP proxy to one cluster or to weighted clusters (`(name, weight)`). Zero-weight
/// clusters are left out (Envoy requires TCP weights >= 1); at least one weight must be > 0.
pub(crate) fn tcp_proxy(
    stat_prefix: &str,
    clusters: &[(String, u32)],
    idle_timeout: Option<Duration>,
    access_log: Vec<AccessLog>,
) -> Filter {
    let clusters: Vec<(String, u32)> = clusters.iter().filter(|(_, w)| *w > 0).cloned().collect();
    let cluster_specifier = match clusters.as_slice() {
        [(name, _)] => tcp_proxy::ClusterSpecifier::Cluster(name.clone()),
        many => tcp_proxy::ClusterSpecifier::WeightedClusters(tcp_proxy::WeightedCluster {
            clusters: many
                .iter()
                .map(
                    |(name, weight)| tcp_proxy::weighted_cluster::ClusterWeight {
                        name: name.clone(),
                        weight: *weight,
                        ..Default::default()
                    },
                )
                .collect(),
        }),
    };
    let tp = TcpProxy {
        stat_prefix: stat_prefix.to_owned(),
        cluster_specifier: Some(cluster_specifier),
        idle_timeout,
        access_log,
        ..Default::default()
    };
    Filter {
        name: TCP_PROXY.to_owned(),
        config_type: Some(filter::ConfigType::TypedConfig(pb::any(&tp))),
    }
}
