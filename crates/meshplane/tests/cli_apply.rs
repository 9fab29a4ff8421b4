//! CLI verbs against the real `meshplane serve` on `127.0.0.1:0`: apply is idempotent,
//! export round-trips, `--dry-run` writes nothing, `delete -f` removes everything, and
//! invalid documents fail with the field path.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_meshplane");

/// A `meshplane serve` process, killed on drop.
struct Server {
    child: Child,
    endpoint: String,
    _data: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let data = tempfile::tempdir().unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", "--data-dir"])
            .arg(data.path())
            .args(["--api-listen", "127.0.0.1:0", "--xds-listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn meshplane serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("listening api ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let endpoint = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(e) => e,
            Err(_) => {
                let _ = child.kill();
                panic!("meshplane serve did not print `listening api ...` within 60 s");
            }
        };
        Server {
            child,
            endpoint,
            _data: data,
        }
    }

    /// Runs `meshplane ARGS` against this server, with `stdin` as its input.
    fn run(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(BIN)
            .args(args)
            .env("MESHPLANE_ENDPOINT", &self.endpoint)
            // Signed with the administrator key `serve` wrote on first start.
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self._data.path().join("credentials"),
            )
            .env("AWS_PROFILE", "meshplane")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs and asserts success; returns stdout.
    fn ok(&self, args: &[&str], stdin: &str) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "meshplane {args:?} failed\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `kind/name -> version` for every resource of the colorapp mesh, via `get -o json`.
    fn versions(&self) -> BTreeMap<String, i64> {
        let mut out = BTreeMap::new();
        for kind in [
            "meshes",
            "virtualnodes",
            "virtualrouters",
            "virtualservices",
            "routes",
        ] {
            let args: Vec<&str> = if kind == "meshes" {
                vec!["get", kind, "-o", "json"]
            } else {
                vec!["get", kind, "--mesh", "colorapp", "-o", "json"]
            };
            let items: Value = serde_json::from_str(&self.ok(&args, "")).unwrap();
            for item in items.as_array().unwrap() {
                let name = [
                    "routeName",
                    "virtualServiceName",
                    "virtualRouterName",
                    "virtualNodeName",
                    "meshName",
                ]
                .iter()
                .find_map(|f| item.get(*f))
                .and_then(Value::as_str)
                .unwrap();
                out.insert(
                    format!("{kind}/{name}"),
                    item["metadata"]["version"].as_i64().unwrap(),
                );
            }
        }
        out
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/colorapp.yaml")
}

fn assert_all(stdout: &str, word: &str, count: usize) {
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), count, "{stdout}");
    for l in lines {
        assert!(
            l.ends_with(&format!(" {word}")),
            "expected `{word}`: {l}\n{stdout}"
        );
    }
}

#[test]
fn apply_is_idempotent_export_round_trips_dry_run_writes_nothing_and_delete_removes_all() {
    let server = Server::start();
    let file = example();
    let file = file.to_str().unwrap();

    let first = server.ok(&["apply", "-f", file], "");
    assert_all(&first, "created", 8);
    assert!(first.starts_with("mesh/colorapp created\n"), "{first}");
    assert!(
        first.contains("route/color-router/color-route created"),
        "{first}"
    );
    let v1 = server.versions();
    assert_eq!(v1.len(), 8, "{v1:?}");
    assert!(v1.values().all(|v| *v == 1), "{v1:?}");

    assert_all(&server.ok(&["apply", "-f", file], ""), "unchanged", 8);
    assert_eq!(server.versions(), v1);

    // export | apply -f -, in both formats.
    let yaml = server.ok(&["export", "--mesh", "colorapp"], "");
    assert!(
        yaml.contains("kind: VirtualNode") && yaml.contains("app: colorapp"),
        "{yaml}"
    );
    assert_all(&server.ok(&["apply", "-f", "-"], &yaml), "unchanged", 8);
    let json = server.ok(&["export", "--mesh", "colorapp", "-o", "json"], "");
    assert_all(&server.ok(&["apply", "-f", "-"], &json), "unchanged", 8);
    assert_eq!(server.versions(), v1);

    // A changed weight: --dry-run shows it, writes nothing; apply then bumps one version.
    let modified = std::fs::read_to_string(file)
        .unwrap()
        .replace("weight: 75", "weight: 10");
    let dir = tempfile::tempdir().unwrap();
    let mod_file = dir.path().join("colorapp.yaml");
    std::fs::write(&mod_file, &modified).unwrap();
    let mod_file = mod_file.to_str().unwrap();
    let dry = server.ok(&["apply", "--dry-run", "-f", mod_file], "");
    assert!(
        dry.contains("route/color-router/color-route configured (dry run)\n"),
        "{dry}"
    );
    assert!(
        dry.contains("~ spec.httpRoute.action.weightedTargets[0].weight: 75 -> 10"),
        "{dry}"
    );
    assert!(dry.contains("virtualnode/red unchanged (dry run)"), "{dry}");
    assert_eq!(server.versions(), v1);
    let applied = server.ok(&["apply", "-f", dir.path().to_str().unwrap()], "");
    assert!(
        applied.contains("route/color-router/color-route configured\n"),
        "{applied}"
    );
    let v2 = server.versions();
    assert_eq!(v2["routes/color-route"], 2);
    assert_eq!(v2.iter().filter(|(_, v)| **v != 1).count(), 1, "{v2:?}");

    // get / describe.
    let table = server.ok(&["get", "routes", "--mesh", "colorapp"], "");
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains("ROUTER") && table.contains("color-router"),
        "{table}"
    );
    let described = server.ok(
        &["describe", "virtualnode", "red", "--mesh", "colorapp"],
        "",
    );
    assert!(
        described.starts_with("meshName: colorapp\nvirtualNodeName: red\nspec:"),
        "{described}"
    );
    assert!(described.contains("status: ACTIVE"), "{described}");

    // --dry-run also checks the model's field rules locally.
    let out = server.run(
        &["apply", "--dry-run", "-f", "-"],
        &modified.replace("port: 8080", "port: 0"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "error: virtualnode/red: BadRequestException: spec.listeners[0].portMapping.port:"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "error: route/color-router/color-route: skipped: virtualrouter/color-router failed"
        ),
        "{stderr}"
    );
    assert_eq!(server.versions(), v2);

    // An invalid document: the server's field path on stderr, non-zero exit, nothing written.
    let bad = "kind: VirtualNode\nmesh: colorapp\nname: bad\nspec:\n  listeners:\n  - portMapping: {port: 0, protocol: http}\n";
    let out = server.run(&["apply", "-f", "-"], bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("error: virtualnode/bad: BadRequestException"),
        "{stderr}"
    );
    assert!(
        stderr.contains("spec.listeners[0].portMapping.port"),
        "{stderr}"
    );
    // A type error is caught before anything is sent, also with its path and document.
    let out = server.run(
        &["apply", "-f", "-"],
        &bad.replace("port: 0", "port: eighty"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("-: document 1: spec.listeners[0].portMapping.port:"),
        "{stderr}"
    );
    let out = server.run(&["get", "virtualnode", "bad", "--mesh", "colorapp"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFoundException"));

    // delete -f removes everything, children first.
    let deleted = server.ok(&["delete", "-f", file], "");
    assert_all(&deleted, "deleted", 8);
    assert!(
        deleted.starts_with("route/color-router/color-route deleted\n"),
        "{deleted}"
    );
    assert!(deleted.ends_with("mesh/colorapp deleted\n"), "{deleted}");
    let out = server.run(&["get", "mesh", "colorapp"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFoundException"));
    let meshes: Value =
        serde_json::from_str(&server.ok(&["get", "meshes", "-o", "json"], "")).unwrap();
    assert_eq!(meshes, Value::Array(vec![]));
}

#[test]
fn a_failed_document_skips_its_dependents_but_not_independent_ones() {
    let server = Server::start();
    // The router is invalid (port 0): its route and service are skipped; the node is created.
    let docs = "kind: Mesh\nname: m\n---\n\
        kind: VirtualRouter\nmesh: m\nname: r\nspec: {listeners: [{portMapping: {port: 0, protocol: http}}]}\n---\n\
        kind: VirtualService\nmesh: m\nname: s\nspec: {provider: {virtualRouter: {virtualRouterName: r}}}\n---\n\
        kind: VirtualNode\nmesh: m\nname: n\nspec: {listeners: [{portMapping: {port: 80, protocol: http}}], serviceDiscovery: {dns: {hostname: n.m.local}}}\n";
    let out = server.run(&["apply", "-f", "-"], docs);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(
        stdout, "mesh/m created\nvirtualnode/n created\n",
        "{stderr}"
    );
    assert!(
        stderr.contains("error: virtualrouter/r: BadRequestException"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: virtualservice/s: skipped: virtualrouter/r failed"),
        "{stderr}"
    );
}

#[test]
fn lists_follow_pagination_past_one_page() {
    let server = Server::start();
    // 130 nodes: more than the 100 items of one page.
    let mut docs = vec![serde_json::json!({"kind": "Mesh", "name": "big"})];
    for i in 0..130 {
        docs.push(serde_json::json!({"kind": "VirtualNode", "mesh": "big", "name": format!("n {i:03}"), "spec": {}}));
    }
    let docs = serde_json::to_string(&docs).unwrap();
    assert_all(&server.ok(&["apply", "-f", "-"], &docs), "created", 131);
    let nodes: Value =
        serde_json::from_str(&server.ok(&["get", "vn", "--mesh", "big", "-o", "json"], ""))
            .unwrap();
    let mut names: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["virtualNodeName"].as_str().unwrap())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 130);
    let exported = server.ok(&["export", "--mesh", "big"], "");
    assert_all(
        &server.ok(&["apply", "-f", "-"], &exported),
        "unchanged",
        131,
    );
    assert_all(
        &server.ok(&["delete", "-f", "-"], &exported),
        "deleted",
        131,
    );
}

const GATEWAY: &str = "kind: VirtualGateway\nmesh: colorapp\nname: ingress\n\
    spec: {listeners: [{portMapping: {port: 9080, protocol: http}}]}\n\
    tags: [{key: tier, value: edge}]\n---\n\
    kind: GatewayRoute\nmesh: colorapp\nvirtualGateway: ingress\nname: to-color\n\
    spec: {httpRoute: {match: {prefix: /color}, action: {target: {virtualService: {virtualServiceName: color.colorapp.local}}}}}\n";

#[test]
fn gateways_and_tags_round_trip_through_export() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(example(), dir.path().join("a-colorapp.yaml")).unwrap();
    std::fs::write(dir.path().join("b-gateway.yml"), GATEWAY).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a document").unwrap();
    let dir_arg = dir.path().to_str().unwrap();

    let created = server.ok(&["apply", "-f", dir_arg], "");
    assert_all(&created, "created", 10);
    assert!(
        created
            .ends_with("virtualgateway/ingress created\ngatewayroute/ingress/to-color created\n"),
        "{created}"
    );
    assert_all(&server.ok(&["apply", "-f", dir_arg], ""), "unchanged", 10);
    let exported = server.ok(&["export", "--mesh", "colorapp"], "");
    assert!(
        exported.contains("virtualGateway: ingress") && exported.contains("tier: edge"),
        "{exported}"
    );
    assert_all(
        &server.ok(&["apply", "-f", "-"], &exported),
        "unchanged",
        10,
    );

    // A changed tag value is shown by diff and then set by apply.
    let retagged = GATEWAY.replace("value: edge", "value: core");
    let diff = server.ok(&["diff", "-f", "-"], &retagged);
    assert!(
        diff.contains(
            "virtualgateway/ingress configured (dry run)\n    ~ tags.tier: \"edge\" -> \"core\"\n"
        ),
        "{diff}"
    );
    assert!(
        server
            .ok(&["apply", "-f", "-"], &retagged)
            .starts_with("virtualgateway/ingress configured\n")
    );
    let described = server.ok(&["describe", "vg", "ingress", "--mesh", "colorapp"], "");
    assert!(
        described.contains("- key: tier\n  value: core"),
        "{described}"
    );

    let deleted = server.ok(&["delete", "-f", dir_arg], "");
    assert_all(&deleted, "deleted", 10);
    assert!(
        deleted
            .starts_with("gatewayroute/ingress/to-color deleted\nvirtualgateway/ingress deleted\n"),
        "{deleted}"
    );
}
