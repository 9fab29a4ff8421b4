//! Every fixture's translation must be accepted by real Envoy 1.40 (`--mode validate` on a
//! binary-proto static bootstrap equivalent to the xDS resources). Fails, never skips, when
//! Envoy is missing.

mod common;

#[test]
fn every_fixture_is_accepted_by_envoy() {
    let mut items = Vec::new();
    for name in common::case_names() {
        let case = common::load_case(&name);
        for (node, cfg) in common::translate_all(case.resources, &case.endpoints) {
            if cfg.listeners.is_empty() && cfg.clusters.is_empty() {
                continue; // nothing to validate (e.g. a gateway, a node with no config)
            }
            items.push((format!("{name}: {node}"), common::bootstrap(&node, &cfg)));
        }
    }
    assert!(
        items.len() >= 20,
        "expected many configs to validate, got {}",
        items.len()
    );
    let failures = common::envoy_validate(items);
    let report: Vec<String> = failures
        .iter()
        .map(|(l, out)| format!("--- {l}\n{out}"))
        .collect();
    assert!(
        failures.is_empty(),
        "Envoy rejected {} config(s):\n{}",
        failures.len(),
        report.join("\n")
    );
}

#[test]
fn envoy_rejects_a_broken_config() {
    // Guards the harness itself: a cluster referencing nothing valid must fail validation.
    use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
    let mut cfg = meshplane_translate::ProxyConfig::default();
    cfg.clusters.insert(
        "bad".into(),
        Cluster {
            name: "bad".into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::LogicalDns as i32,
            )),
            // LOGICAL_DNS requires exactly one endpoint: none given.
            ..Default::default()
        },
    );
    let failures = common::envoy_validate(vec![("broken".into(), common::bootstrap("n", &cfg))]);
    assert_eq!(
        failures.len(),
        1,
        "Envoy accepted a broken config; the harness cannot fail"
    );
}
