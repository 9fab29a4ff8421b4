//! The crate layering, checked from `cargo metadata`: the agent and the CLI reach the control
//! plane only over the wire, so neither may link the store, the REST or xDS servers, the
//! translator, the registry or the server crate (directly or through another crate).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// Crates that run beside Envoy or on a user's laptop, and what they must never link.
const RULES: &[(&str, &[&str])] = &[
    ("meshplane-agent", FORBIDDEN_FOR_CLIENTS),
    ("meshplane-cli", FORBIDDEN_FOR_CLIENTS),
    ("meshplane-client", FORBIDDEN_FOR_CLIENTS),
];

const FORBIDDEN_FOR_CLIENTS: &[&str] = &[
    "meshplane-store",
    "meshplane-rest",
    "meshplane-xds",
    "meshplane-translate",
    "meshplane-discovery",
    "meshplane-server",
    "rusqlite",
    "tonic",
];

/// Every violation: `(crate, forbidden crate, path of crates that links it)`.
fn violations(metadata: &Value) -> Vec<String> {
    let packages: BTreeMap<&str, &str> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    // Normal (linked) dependencies only: dev-dependencies build tests, build-dependencies
    // build scripts; neither ends up in the crate's code.
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for node in metadata["resolve"]["nodes"].as_array().expect("resolve") {
        let id = node["id"].as_str().unwrap();
        let deps = node["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| k["kind"].is_null())
            })
            .map(|d| d["pkg"].as_str().unwrap())
            .collect();
        graph.insert(id, deps);
    }
    let by_name: BTreeMap<&str, &str> = packages.iter().map(|(id, n)| (*n, *id)).collect();
    let mut found = Vec::new();
    for (krate, forbidden) in RULES {
        let Some(root) = by_name.get(krate) else {
            found.push(format!("{krate} is not in the workspace"));
            continue;
        };
        // Breadth-first, remembering how each crate was reached to print the path.
        let mut via: BTreeMap<&str, &str> = BTreeMap::new();
        let mut seen = BTreeSet::from([*root]);
        let mut queue = vec![*root];
        while let Some(id) = queue.pop() {
            for dep in graph.get(id).into_iter().flatten() {
                if seen.insert(dep) {
                    via.insert(dep, id);
                    queue.push(dep);
                }
            }
        }
        for id in &seen {
            let name = packages[id];
            if forbidden.contains(&name) {
                let mut path = vec![name];
                let mut at = *id;
                while let Some(prev) = via.get(at) {
                    path.push(packages[prev]);
                    at = prev;
                }
                path.reverse();
                found.push(format!("{krate} links {name} ({})", path.join(" -> ")));
            }
        }
    }
    found
}

fn workspace_metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--manifest-path",
        ])
        .arg(manifest)
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata JSON")
}

#[test]
fn agent_and_cli_link_nothing_of_the_server() {
    let metadata = workspace_metadata();
    let found = violations(&metadata);
    assert!(found.is_empty(), "layering violated:\n{}", found.join("\n"));
}

/// The check itself: a forbidden edge added anywhere below the agent is reported with its path.
#[test]
fn a_forbidden_dependency_is_reported() {
    let mut metadata = workspace_metadata();
    let id_of = |m: &Value, name: &str| {
        m["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let model = id_of(&metadata, "meshplane-model");
    let store = id_of(&metadata, "meshplane-store");
    // meshplane-model (a dependency of the agent) gains a dependency on the store.
    for node in metadata["resolve"]["nodes"].as_array_mut().unwrap() {
        if node["id"] == model.as_str() {
            node["deps"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({
                    "name": "meshplane_store", "pkg": store,
                    "dep_kinds": [{"kind": null, "target": null}],
                }));
        }
    }
    let found = violations(&metadata);
    assert!(
        found
            .iter()
            .any(|v| v == "meshplane-agent links meshplane-store (meshplane-agent -> meshplane-model -> meshplane-store)"),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|v| v.starts_with("meshplane-cli links meshplane-store")),
        "{found:#?}"
    );
}
