//! Transparent interception in network namespaces, against a real `meshplane serve` and real
//! Envoys run by `meshplane envoy run --proxy-uid 1337` after `meshplane sidecar init`. The
//! "applications" are plain curl processes and the demo's color backends: they know nothing
//! about Envoy.

mod sidecar_support;

use sidecar_support::{Mesh, colorapp};

const WORKLOADS: [&str; 4] = ["front", "red", "blue", "green"];

fn nat_rules(mesh: &Mesh, host: &str) -> (String, String) {
    let v4 = mesh.in_ns(host, "iptables", &["-w", "-t", "nat", "-S"]);
    let v6 = mesh.in_ns(host, "ip6tables", &["-w", "-t", "nat", "-S"]);
    (
        String::from_utf8_lossy(&v4.stdout).to_string(),
        String::from_utf8_lossy(&v6.stdout).to_string(),
    )
}

/// Starts colorapp with interception on everywhere; `front` ignores egress port 9999.
fn colorapp_mesh() -> (Mesh, (String, String)) {
    let mut mesh = Mesh::start(&WORKLOADS);
    let baseline = nat_rules(&mesh, "front");
    mesh.apply(colorapp());
    for c in ["red", "blue", "green"] {
        mesh.backend(c, c, 8080);
        mesh.sidecar(c, &["--app-ports", "8080"]);
    }
    mesh.backend("red", "red-9999", 9999);
    mesh.backend("red", "red-9998", 9998);
    mesh.sidecar(
        "front",
        &["--egress-ignored-ports", "9999", "--enable-ipv6", "true"],
    );
    mesh.wait_for("a first answer through front's sidecar", 60, || {
        mesh.curl("front", "http://color.colorapp.local:8080/", &[])
            .0
            == 200
    });
    (mesh, baseline)
}

/// `n` requests over one curl invocation: (status, body) each.
fn curl_many(mesh: &Mesh, host: &str, url: &str, n: usize, headers: &[&str]) -> Vec<(u16, String)> {
    let mut args: Vec<String> = vec!["-s".into(), "--max-time".into(), "20".into()];
    for h in headers {
        args.push("-H".into());
        args.push((*h).to_owned());
    }
    for i in 0..n {
        if i > 0 {
            args.push("--next".into());
            for h in headers {
                args.push("-H".into());
                args.push((*h).to_owned());
            }
        }
        args.push("-w".into());
        args.push("|%{http_code}\n".into());
        args.push(url.to_owned());
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = mesh.in_ns(host, "curl", &argv);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut res = vec![];
    let mut body = String::new();
    for line in text.lines() {
        if let Some(code) = line.strip_prefix('|') {
            res.push((code.parse().unwrap_or(0), body.trim().to_owned()));
            body.clear();
        } else if let Some((b, code)) = line.rsplit_once('|') {
            body.push_str(b);
            res.push((code.parse().unwrap_or(0), body.trim().to_owned()));
            body.clear();
        } else {
            body.push_str(line);
        }
    }
    res
}

#[test]
fn outbound_and_inbound_go_through_envoy_and_clean_removes_every_rule() {
    let (mesh, baseline) = colorapp_mesh();
    let egress = |m: &Mesh| m.stat("front", "http.egress.", "downstream_rq_total");
    // Every connection the egress listener accepts, HTTP or not.
    // (a DROP_ALL mesh has no filter chain for undeclared ports: those count as no match).
    let egress_cx = |m: &Mesh| {
        m.stat("front", "listener.0.0.0.0_15001.", "downstream_cx_total")
            + m.stat("front", "listener.0.0.0.0_15001.", "no_filter_chain_match")
    };
    let ingress = |m: &Mesh, h: &str| m.stat(h, "http.ingress.", "downstream_rq_total");

    // The application's outbound call is redirected to the egress listener.
    let before = egress(&mesh);
    let (red0, blue0) = (ingress(&mesh, "red"), ingress(&mesh, "blue"));
    let res = curl_many(&mesh, "front", "http://color.colorapp.local:8080/", 20, &[]);
    assert_eq!(res.len(), 20, "{res:?}");
    for (code, body) in &res {
        assert_eq!(*code, 200, "{res:?}");
        assert!(body == "red" || body == "blue", "{res:?}");
    }
    assert!(egress(&mesh) >= before + 20, "egress counter did not move");
    // ... and arrives through the colors' ingress listeners (inbound interception on 8080),
    // which proves Envoy's own upstream traffic (uid 1337) was not looped back into itself.
    let inbound = ingress(&mesh, "red") - red0 + ingress(&mesh, "blue") - blue0;
    assert!(
        inbound >= 20,
        "ingress listeners saw {inbound} of 20 requests"
    );

    // The proxy's uid is exempt: its request bypasses front's Envoy (red's ingress still
    // intercepts inbound).
    let before = egress_cx(&mesh);
    let (code, body) = mesh.curl_as("front", Some(1337), "http://red.colorapp.local:8080/", &[]);
    assert_eq!((code, body.as_str()), (200, "red"));
    assert_eq!(
        egress_cx(&mesh),
        before,
        "uid 1337 traffic went through the egress listener"
    );

    // An ignored egress port bypasses Envoy; any other port is intercepted.
    let (code, body) = mesh.curl("front", "http://red.colorapp.local:9999/", &[]);
    assert_eq!((code, body.as_str()), (200, "red-9999"));
    assert_eq!(
        egress_cx(&mesh),
        before,
        "ignored port 9999 went through Envoy"
    );
    let (_, body) = mesh.curl("front", "http://red.colorapp.local:9998/", &[]);
    assert_ne!(body, "red-9998", "port 9998 bypassed the sidecar");
    assert!(
        egress_cx(&mesh) > before,
        "port 9998 did not reach the egress listener"
    );

    // init is idempotent.
    let rules = nat_rules(&mesh, "front");
    let again = mesh.in_ns(
        "front",
        sidecar_support::BIN,
        &[
            "sidecar",
            "init",
            "--egress-ignored-ports",
            "9999",
            "--enable-ipv6",
            "true",
        ],
    );
    assert!(again.status.success());
    assert_eq!(
        nat_rules(&mesh, "front"),
        rules,
        "second init changed the rules"
    );
    assert!(rules.0.contains("-N APPMESH_EGRESS") && rules.1.contains("-N APPMESH_EGRESS"));

    // clean removes every rule and chain, twice safely; interception is then gone.
    for _ in 0..2 {
        let out = mesh.in_ns("front", sidecar_support::BIN, &["sidecar", "clean"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(nat_rules(&mesh, "front"), baseline);
    }
    let (code, _) = mesh.curl("front", "http://color.colorapp.local:8080/", &[]);
    assert_eq!(code, 0, "the virtual service answered without interception");
}

#[test]
fn transparent_weighted_split_header_routing_and_retries() {
    let (mesh, _) = colorapp_mesh();

    // Weighted split 75/25 (examples/colorapp.yaml).
    let res = curl_many(
        &mesh,
        "front",
        "http://color.colorapp.local:8080/",
        200,
        &[],
    );
    assert_eq!(res.len(), 200);
    assert!(res.iter().all(|(c, _)| *c == 200), "{res:?}");
    let red = res.iter().filter(|(_, b)| b == "red").count() as f64 / 200.0;
    let green = res.iter().filter(|(_, b)| b == "green").count();
    assert!((0.63..=0.87).contains(&red), "red share {red}");
    assert_eq!(green, 0);

    // Header routing: a higher-priority route sends `x-color: green` to green.
    mesh.apply(
        "kind: Route\nmesh: colorapp\nvirtualRouter: color-router\nname: green-header\nspec:\n  \
         priority: 0\n  httpRoute:\n    match:\n      prefix: /\n      headers:\n        - name: \
         x-color\n          match:\n            exact: green\n    action:\n      \
         weightedTargets:\n        - virtualNode: green\n          weight: 1\n",
    );
    mesh.wait_for("the header route", 30, || {
        mesh.curl(
            "front",
            "http://color.colorapp.local:8080/",
            &["x-color: green"],
        )
        .1 == "green"
    });
    let res = curl_many(
        &mesh,
        "front",
        "http://color.colorapp.local:8080/",
        20,
        &["x-color: green"],
    );
    assert!(
        res.iter().all(|(c, b)| *c == 200 && b == "green"),
        "{res:?}"
    );
    let res = curl_many(&mesh, "front", "http://color.colorapp.local:8080/", 20, &[]);
    assert!(
        res.iter().all(|(c, b)| *c == 200 && b != "green"),
        "{res:?}"
    );

    // Retries: every backend fails every other /flaky request with 503; App Mesh's default
    // retry policy (503, up to 2 retries) hides that from the application.
    let res = curl_many(
        &mesh,
        "front",
        "http://color.colorapp.local:8080/flaky",
        20,
        &[],
    );
    assert!(res.iter().all(|(c, _)| *c == 200), "{res:?}");
    let retries = mesh.stat("front", "cluster.", ".upstream_rq_retry");
    assert!(retries > 0, "no retry counted");
}
