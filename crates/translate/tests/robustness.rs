//! Translation never panics and always produces internally consistent output, whatever is
//! missing or odd in the mesh: fixtures are mutated at random (resources dropped, weights,
//! ports and priorities scrambled, listeners removed) and every result must satisfy the
//! `ProxyConfig` invariants; a fixed sample of mutations is also validated by real Envoy.

mod common;

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::cluster::v3::cluster;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, filter};
use envoy_types::pb::envoy::config::route::v3::{route, route_action};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use meshplane_model::{Resource, Spec};
use meshplane_translate::ProxyConfig;
use proptest::prelude::*;
use prost::{Message, Name};

/// The invariants documented on `ProxyConfig`.
fn check_invariants(c: &ProxyConfig) -> Result<(), String> {
    let mut referenced_clusters = BTreeSet::new();
    let mut referenced_rds = BTreeSet::new();
    let mut inline_rcs = Vec::new();
    for (name, l) in &c.listeners {
        if *name != l.name {
            return Err(format!("listener key {name} != name {}", l.name));
        }
        if l.filter_chains.is_empty() && l.default_filter_chain.is_none() {
            return Err(format!("listener {name} has no filter chain"));
        }
        let chains: Vec<&FilterChain> = l
            .filter_chains
            .iter()
            .chain(l.default_filter_chain.as_ref())
            .collect();
        // Envoy rejects two chains with the same match (port, SNIs, transport protocol).
        let ports: Vec<_> = l
            .filter_chains
            .iter()
            .map(|ch| {
                ch.filter_chain_match.as_ref().map(|m| {
                    (
                        m.destination_port.as_ref().map(|p| p.value),
                        m.server_names.clone(),
                        m.transport_protocol.clone(),
                    )
                })
            })
            .collect();
        if ports.iter().collect::<BTreeSet<_>>().len() != ports.len() {
            return Err(format!(
                "listener {name} has duplicate filter chain matches"
            ));
        }
        for ch in chains {
            for f in &ch.filters {
                let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                    continue;
                };
                if any.type_url == HttpConnectionManager::type_url() {
                    let hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
                    match hcm.route_specifier {
                        Some(RouteSpecifier::Rds(r)) => {
                            referenced_rds.insert(r.route_config_name);
                        }
                        Some(RouteSpecifier::RouteConfig(rc)) => inline_rcs.push(rc),
                        other => return Err(format!("unexpected route specifier {other:?}")),
                    }
                } else if any.type_url == TcpProxy::type_url() {
                    let tp = TcpProxy::decode(any.value.as_slice()).unwrap();
                    match tp.cluster_specifier {
                        Some(tcp_proxy::ClusterSpecifier::Cluster(n)) => {
                            referenced_clusters.insert(n);
                        }
                        Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) => {
                            if w.clusters.iter().any(|c| c.weight == 0) {
                                return Err("tcp weighted cluster with weight 0".into());
                            }
                            referenced_clusters.extend(w.clusters.into_iter().map(|c| c.name));
                        }
                        None => return Err("tcp proxy without cluster".into()),
                    }
                }
            }
        }
    }
    for rds in &referenced_rds {
        if !c.route_configs.contains_key(rds) {
            return Err(format!("RDS {rds} referenced but missing"));
        }
    }
    for (name, rc) in c
        .route_configs
        .iter()
        .map(|(k, v)| (k.clone(), v))
        .chain(inline_rcs.iter().map(|r| (r.name.clone(), r)))
    {
        if name != rc.name {
            return Err(format!("route config key {name} != name {}", rc.name));
        }
        let mut domains = BTreeSet::new();
        for vh in &rc.virtual_hosts {
            for d in &vh.domains {
                if !domains.insert(d.to_ascii_lowercase()) {
                    return Err(format!("duplicate domain {d} in {name}"));
                }
            }
            for r in &vh.routes {
                let a = match &r.action {
                    Some(route::Action::Route(a)) => a,
                    // A gateway's hop 2 ends in a marked 404 for unknown targets.
                    Some(route::Action::DirectResponse(d))
                        if vh.name == "unknown_target" && d.status == 404 =>
                    {
                        continue;
                    }
                    _ => return Err("non-route action".into()),
                };
                match &a.cluster_specifier {
                    Some(route_action::ClusterSpecifier::Cluster(n)) => {
                        referenced_clusters.insert(n.clone());
                    }
                    Some(route_action::ClusterSpecifier::WeightedClusters(w)) => {
                        if w.clusters
                            .iter()
                            .all(|c| c.weight.as_ref().is_none_or(|x| x.value == 0))
                        {
                            return Err(format!("route {} has only zero weights", r.name));
                        }
                        referenced_clusters.extend(w.clusters.iter().map(|c| c.name.clone()));
                    }
                    other => return Err(format!("unexpected cluster specifier {other:?}")),
                }
            }
        }
    }
    for n in &referenced_clusters {
        if !c.clusters.contains_key(n) {
            return Err(format!("cluster {n} referenced but missing"));
        }
    }
    for (name, cl) in &c.clusters {
        if *name != cl.name {
            return Err(format!("cluster key {name} != name {}", cl.name));
        }
        let eds = cl.cluster_discovery_type
            == Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32,
            ));
        if eds != c.endpoints.contains_key(name) {
            return Err(format!("cluster {name}: EDS type and assignment disagree"));
        }
    }
    Ok(())
}

/// Applies pseudo-random mutations driven by `bytes` to a case's resources.
fn mutate(resources: &[Resource], bytes: &[u8]) -> Vec<Resource> {
    let mut b = bytes.iter().copied().cycle();
    let mut next = move || b.next().unwrap_or(0);
    let mut out = Vec::new();
    for r in resources {
        if next() % 6 == 0 {
            continue; // dropped
        }
        let mut r = r.clone();
        match &mut r.spec {
            Spec::Route(route) => {
                if next() % 3 == 0 {
                    route.priority = Some(i64::from(next() % 4));
                }
                let targets =
                    if let Some(h) = route.http_route.as_mut().or(route.http2_route.as_mut()) {
                        if next() % 4 == 0 {
                            h.match_.port = Some(i64::from(next()) * 40);
                        }
                        &mut h.action.weighted_targets
                    } else if let Some(g) = route.grpc_route.as_mut() {
                        &mut g.action.weighted_targets
                    } else if let Some(t) = route.tcp_route.as_mut() {
                        &mut t.action.weighted_targets
                    } else {
                        continue;
                    };
                for t in targets.iter_mut() {
                    t.weight = i64::from(next() % 3);
                    if next() % 5 == 0 {
                        t.port = Some(i64::from(next()) * 40);
                    }
                }
            }
            Spec::VirtualNode(n) => {
                if next() % 5 == 0 {
                    n.listeners = None;
                }
                if next() % 7 == 0 {
                    n.service_discovery = None;
                }
            }
            _ => {}
        }
        out.push(r);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn mutated_meshes_translate_to_consistent_output(
        case_idx in 0usize..64,
        bytes in proptest::collection::vec(any::<u8>(), 1..64),
    ) {
        let names = common::case_names();
        let case = common::load_case(&names[case_idx % names.len()]);
        let mutated = mutate(&case.resources, &bytes);
        for (node, cfg) in common::translate_all(mutated, &case.endpoints) {
            if let Err(e) = check_invariants(&cfg) {
                prop_assert!(false, "{} {node}: {e}", case.name);
            }
        }
    }
}

#[test]
fn fixtures_satisfy_the_invariants() {
    for name in common::case_names() {
        let case = common::load_case(&name);
        for (node, cfg) in common::translate_all(case.resources, &case.endpoints) {
            check_invariants(&cfg).unwrap_or_else(|e| panic!("{name} {node}: {e}"));
        }
    }
}

#[test]
fn mutated_meshes_are_accepted_by_envoy() {
    let mut items = Vec::new();
    for (i, name) in common::case_names().into_iter().enumerate() {
        let case = common::load_case(&name);
        // A fixed, varied byte pattern per case: reproducible.
        let bytes: Vec<u8> = (0..48u32)
            .map(|k| ((k * 37 + i as u32 * 11) % 251) as u8)
            .collect();
        for (node, cfg) in common::translate_all(mutate(&case.resources, &bytes), &case.endpoints) {
            if !cfg.listeners.is_empty() || !cfg.clusters.is_empty() {
                items.push((
                    format!("{name} (mutated): {node}"),
                    common::bootstrap(&node, &cfg),
                ));
            }
        }
    }
    assert!(!items.is_empty());
    let failures = common::envoy_validate(items);
    let report: Vec<String> = failures
        .iter()
        .map(|(l, out)| format!("--- {l}\n{out}"))
        .collect();
    assert!(
        failures.is_empty(),
        "Envoy rejected:\n{}",
        report.join("\n")
    );
}
