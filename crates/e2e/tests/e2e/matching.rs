//! Path, header (exact/prefix/suffix/regex/range/invert), method and query matches and
//! priorities pick the documented route; an unmatched request gets Envoy's 404.

use meshplane_testkit::{HttpBackend, XdsFlavor, free_port};
use serde_json::json;

use crate::common::{World, http_route, target};

/// (method, path, headers, expected body or `None` for Envoy's 404).
type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, Option<&'a str>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matches_and_priorities_pick_the_documented_route() {
    let w = World::new("matching").await;
    // One backend (and virtual node) per route, answering the route's name.
    let routes = [
        ("exact", 10, json!({"path": {"exact": "/exact"}})),
        ("regex", 10, json!({"path": {"regex": "/re/[0-9]+"}})),
        (
            "hdr-exact",
            10,
            json!({"prefix": "/h", "headers": [{"name": "x-color", "match": {"exact": "blue"}}]}),
        ),
        (
            "hdr-prefix",
            10,
            json!({"prefix": "/h", "headers": [{"name": "x-pre", "match": {"prefix": "ab"}}]}),
        ),
        (
            "hdr-suffix",
            10,
            json!({"prefix": "/h", "headers": [{"name": "x-suf", "match": {"suffix": "yz"}}]}),
        ),
        (
            "hdr-regex",
            10,
            json!({"prefix": "/h", "headers": [{"name": "x-re", "match": {"regex": "v[0-9]+"}}]}),
        ),
        (
            "hdr-range",
            10,
            json!({"prefix": "/h", "headers": [{"name": "x-num", "match": {"range": {"start": 10, "end": 20}}}]}),
        ),
        (
            "hdr-invert",
            10,
            json!({"prefix": "/h", "headers": [{"name": "x-inv", "invert": true, "match": {"exact": "no"}}]}),
        ),
        ("method", 10, json!({"prefix": "/m", "method": "POST"})),
        (
            "query",
            10,
            json!({"prefix": "/q", "queryParameters": [{"name": "color", "match": {"exact": "green"}}]}),
        ),
        // Priority beats specificity: the shorter prefix has the better (lower) priority.
        ("prio-high", 1, json!({"prefix": "/p"})),
        ("prio-low", 2, json!({"prefix": "/p/deeper"})),
    ];
    // Unprioritised routes: the longest prefix wins.
    let unprioritised = [
        ("lp-short", json!({"prefix": "/lp"})),
        ("lp-long", json!({"prefix": "/lp/deep"})),
    ];
    let mut backends = Vec::new();
    for name in routes
        .iter()
        .map(|r| r.0)
        .chain(unprioritised.iter().map(|r| r.0))
    {
        let b = HttpBackend::start(name).await;
        w.backend_node(name, "http", b.port()).await;
        backends.push(b);
    }
    let port = free_port();
    w.router("r", "http", port).await;
    w.service("svc.local", "r").await;
    for (name, priority, m) in &routes {
        let mut spec = http_route(m.clone(), &[(name, 1)]);
        spec["priority"] = json!(priority);
        w.route("r", name, spec).await;
    }
    for (name, m) in &unprioritised {
        w.route("r", name, http_route(m.clone(), &[(name, 1)]))
            .await;
    }
    let ip = w.client("front", &["svc.local"]).await;
    let envoy = w.envoy("front", XdsFlavor::Sotw).await;
    let t = target("svc.local", ip, port);

    let cases: Vec<Case> = vec![
        ("GET", "/exact", vec![], Some("exact")),
        ("GET", "/exact/more", vec![], None),
        ("GET", "/re/123", vec![], Some("regex")),
        ("GET", "/re/abc", vec![], None),
        ("GET", "/h", vec![("x-color", "blue")], Some("hdr-exact")),
        ("GET", "/h", vec![("x-color", "red")], None),
        ("GET", "/h", vec![("x-pre", "abc")], Some("hdr-prefix")),
        ("GET", "/h", vec![("x-pre", "cab")], None),
        ("GET", "/h", vec![("x-suf", "xyz")], Some("hdr-suffix")),
        ("GET", "/h", vec![("x-suf", "yzx")], None),
        ("GET", "/h", vec![("x-re", "v42")], Some("hdr-regex")),
        ("GET", "/h", vec![("x-re", "w42")], None),
        ("GET", "/h", vec![("x-num", "15")], Some("hdr-range")),
        ("GET", "/h", vec![("x-num", "20")], None),
        ("GET", "/h", vec![("x-num", "9")], None),
        ("GET", "/h", vec![("x-inv", "yes")], Some("hdr-invert")),
        ("GET", "/h", vec![("x-inv", "no")], None),
        ("POST", "/m", vec![], Some("method")),
        ("GET", "/m", vec![], None),
        ("GET", "/q?color=green", vec![], Some("query")),
        ("GET", "/q?color=red", vec![], None),
        ("GET", "/p/deeper/x", vec![], Some("prio-high")),
        ("GET", "/lp/deep/x", vec![], Some("lp-long")),
        ("GET", "/lp/x", vec![], Some("lp-short")),
        ("GET", "/nothing-matches", vec![], None),
    ];
    let mut wrong = Vec::new();
    for (method, path, headers, expected) in &cases {
        let r = t.send(method, path, headers).await;
        let ok = match expected {
            Some(body) => r.status == 200 && r.body == *body,
            // Envoy's own 404: no upstream was involved.
            None => r.status == 404 && !r.headers.contains_key("x-backend"),
        };
        if !ok {
            wrong.push(format!(
                "{method} {path} {headers:?}: expected {expected:?}, got {} {:?}",
                r.status, r.body
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases picked the wrong route:\n{}\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n"),
        envoy.describe().await
    );
    // Every 404 was Envoy's own (no route), never an upstream's.
    let expected_404 = cases.iter().filter(|c| c.3.is_none()).count() as u64;
    assert_eq!(envoy.stat("http.egress.no_route").await, expected_404);
}
