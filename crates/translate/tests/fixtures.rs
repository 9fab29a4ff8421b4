//! Snapshot tests: each `tests/cases/<name>.yaml` (App Mesh resources) is translated for every
//! virtual node and gateway of the mesh, and the Envoy resources (proto3 JSON, `Any`s
//! expanded) plus diagnostics are compared with `tests/cases/<name>.snap`.
//! Review changes with `cargo insta review`.

mod common;

use std::collections::BTreeMap;

use serde_json::Value;

fn check(name: &str) {
    let case = common::load_case(name);
    let configs = common::translate_all(case.resources, &case.endpoints);
    let rendered: BTreeMap<String, Value> = configs
        .iter()
        .map(|(k, v)| (k.clone(), common::render(v)))
        .collect();
    insta::with_settings!({
        snapshot_path => common::cases_dir(),
        prepend_module_to_snapshot => false,
        sort_maps => true,
        omit_expression => true,
        description => format!("tests/cases/{name}.yaml"),
    }, {
        insta::assert_yaml_snapshot!(name, rendered);
    });
}

#[test]
fn fixture_cases() {
    // Check every case, then report all mismatching ones (insta panics on the first).
    let failed: Vec<String> = common::case_names()
        .into_iter()
        .filter(|name| std::panic::catch_unwind(|| check(name)).is_err())
        .collect();
    assert!(
        failed.is_empty(),
        "snapshot mismatch in cases: {failed:?} (cargo insta review)"
    );
}
