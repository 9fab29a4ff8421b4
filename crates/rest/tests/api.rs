//! In-process tests of the App Mesh API: the axum router over a `MemoryStore`, driven with
//! `oneshot` requests (no socket). One test per operation family and per error path.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use meshplane_rest::{ApiConfig, ApiMetrics, MeshService, Quotas};
use meshplane_store::MemoryStore;
use serde_json::{Value, json};
use tower::ServiceExt;

struct Api {
    router: Router,
}

struct Reply {
    status: StatusCode,
    error: Option<String>,
    body: Value,
}

impl Reply {
    #[track_caller]
    fn ok(self) -> Value {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "{:?} {}",
            self.error,
            self.body
        );
        self.body
    }

    #[track_caller]
    fn err(self, status: u16, name: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert_eq!(self.error.as_deref(), Some(name), "{}", self.body);
        self.body["message"].as_str().unwrap_or_default().to_owned()
    }
}

impl Api {
    fn new() -> Api {
        Api::with(ApiConfig::default())
    }

    fn with(cfg: ApiConfig) -> Api {
        let svc = MeshService::new(Arc::new(MemoryStore::new()), cfg);
        Api {
            router: meshplane_rest::router(svc, Arc::new(ApiMetrics::unregistered())),
        }
    }

    async fn raw(&self, method: &str, path: &str, body: Vec<u8>) -> Reply {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::from(body))
            .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let error = resp
            .headers()
            .get("x-amzn-errortype")
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            error,
            body,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.raw(method, &format!("/v20190125{path}"), bytes).await
    }

    async fn put(&self, path: &str, body: Value) -> Reply {
        self.call("PUT", path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None).await
    }

    async fn delete(&self, path: &str) -> Reply {
        self.call("DELETE", path, None).await
    }

    /// A mesh with nodes red and blue, router `r` with a route to both, and service
    /// `color.local` provided by the router.
    async fn colorapp(&self) {
        self.put("/meshes", json!({"meshName": "m"})).await.ok();
        for n in ["red", "blue"] {
            self.put(
                "/meshes/m/virtualNodes",
                json!({"virtualNodeName": n, "spec": node_spec(&format!("{n}.local"))}),
            )
            .await
            .ok();
        }
        self.put("/meshes/m/virtualRouters", json!({"virtualRouterName": "r", "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}})).await.ok();
        self.put(
            "/meshes/m/virtualRouter/r/routes",
            json!({"routeName": "rt", "spec": route_spec(1, 1)}),
        )
        .await
        .ok();
        self.put("/meshes/m/virtualServices", json!({"virtualServiceName": "color.local", "spec": {"provider": {"virtualRouter": {"virtualRouterName": "r"}}}})).await.ok();
    }
}

fn node_spec(host: &str) -> Value {
    json!({
        "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
        "serviceDiscovery": {"dns": {"hostname": host}}
    })
}

fn route_spec(red: i64, blue: i64) -> Value {
    json!({"httpRoute": {
        "match": {"prefix": "/"},
        "action": {"weightedTargets": [{"virtualNode": "red", "weight": red}, {"virtualNode": "blue", "weight": blue}]}
    }})
}

#[tokio::test]
async fn mesh_lifecycle_versions_and_wire_shape() {
    let api = Api::new();
    let created = api
        .put(
            "/meshes",
            json!({"meshName": "m", "spec": {"egressFilter": {"type": "ALLOW_ALL"}}}),
        )
        .await
        .ok();
    assert_eq!(created["meshName"], "m");
    assert_eq!(
        created["spec"],
        json!({"egressFilter": {"type": "ALLOW_ALL"}})
    );
    assert_eq!(created["status"]["status"], "ACTIVE");
    let md = &created["metadata"];
    assert_eq!(md["arn"], "arn:aws:appmesh:us-east-1:000000000000:mesh/m");
    assert_eq!(md["version"], 1);
    assert!(md["createdAt"].is_number() && md["lastUpdatedAt"].is_number());
    assert_eq!(md["meshOwner"], "000000000000");
    assert_eq!(md["resourceOwner"], "000000000000");
    assert!(md["uid"].as_str().is_some_and(|u| u.len() == 36));

    let described = api.get("/meshes/m").await.ok();
    assert_eq!(described, created);

    let updated = api.put("/meshes/m", json!({"spec": {}})).await.ok();
    assert_eq!(updated["metadata"]["version"], 2);
    assert_eq!(updated["metadata"]["uid"], md["uid"]);
    assert_eq!(updated["spec"], json!({}));
    // UpdateMesh with no spec is valid (botocore sends only a clientToken).
    assert_eq!(
        api.put("/meshes/m", json!({"clientToken": "u1"}))
            .await
            .ok()["metadata"]["version"],
        3
    );

    let list = api.get("/meshes").await.ok();
    assert_eq!(list["meshes"].as_array().unwrap().len(), 1);
    assert!(list["meshes"][0].get("uid").is_none(), "refs carry no uid");
    assert!(list.get("nextToken").is_none());

    let deleted = api.delete("/meshes/m").await.ok();
    assert_eq!(deleted["status"]["status"], "DELETED");
    assert_eq!(deleted["metadata"]["version"], 3);
    api.get("/meshes/m").await.err(404, "NotFoundException");
}

#[tokio::test]
async fn every_child_kind_supports_create_describe_update_list_delete() {
    let api = Api::new();
    api.colorapp().await;
    api.put("/meshes/m/virtualGateways", json!({"virtualGatewayName": "gw", "spec": {"listeners": [{"portMapping": {"port": 9080, "protocol": "http"}}]}})).await.ok();
    api.put("/meshes/m/virtualGateway/gw/gatewayRoutes", json!({"gatewayRouteName": "gr", "spec": {"httpRoute": {"match": {"prefix": "/color"}, "action": {"target": {"virtualService": {"virtualServiceName": "color.local"}}}}}})).await.ok();

    let items = [
        (
            "/meshes/m/virtualNodes",
            "virtualNodes",
            "red",
            "virtualNodeName",
            json!(node_spec("red2.local")),
        ),
        (
            "/meshes/m/virtualRouters",
            "virtualRouters",
            "r",
            "virtualRouterName",
            json!({"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}),
        ),
        (
            "/meshes/m/virtualRouter/r/routes",
            "routes",
            "rt",
            "routeName",
            route_spec(3, 1),
        ),
        (
            "/meshes/m/virtualServices",
            "virtualServices",
            "color.local",
            "virtualServiceName",
            json!({"provider": {"virtualNode": {"virtualNodeName": "red"}}}),
        ),
        (
            "/meshes/m/virtualGateways",
            "virtualGateways",
            "gw",
            "virtualGatewayName",
            json!({"listeners": [{"portMapping": {"port": 9090, "protocol": "http"}}]}),
        ),
        (
            "/meshes/m/virtualGateway/gw/gatewayRoutes",
            "gatewayRoutes",
            "gr",
            "gatewayRouteName",
            json!({"httpRoute": {"match": {"prefix": "/c"}, "action": {"target": {"virtualService": {"virtualServiceName": "color.local"}}}}}),
        ),
    ];
    for (collection, list_key, name, name_field, new_spec) in items {
        let item = format!("{collection}/{}", name);
        let d = api.get(&item).await.ok();
        assert_eq!(d[name_field], name, "{item}");
        assert_eq!(d["meshName"], "m");
        assert_eq!(d["metadata"]["version"], 1, "{item}");
        let u = api.put(&item, json!({"spec": new_spec})).await.ok();
        assert_eq!(u["metadata"]["version"], 2, "{item}");
        assert_eq!(u["spec"], new_spec, "{item}");
        let l = api.get(collection).await.ok();
        assert!(
            l[list_key]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r[name_field] == name),
            "{item}: {l}"
        );
    }
    let route = api.get("/meshes/m/virtualRouter/r/routes/rt").await.ok();
    assert_eq!(route["virtualRouterName"], "r");
    assert_eq!(
        route["metadata"]["arn"],
        "arn:aws:appmesh:us-east-1:000000000000:mesh/m/virtualRouter/r/route/rt"
    );
    let gr = api
        .get("/meshes/m/virtualGateway/gw/gatewayRoutes/gr")
        .await
        .ok();
    assert_eq!(
        gr["metadata"]["arn"],
        "arn:aws:appmesh:us-east-1:000000000000:mesh/m/virtualGateway/gw/gatewayRoute/gr"
    );

    // Delete in dependency order; each returns DELETED.
    for item in [
        "/meshes/m/virtualGateway/gw/gatewayRoutes/gr",
        "/meshes/m/virtualGateways/gw",
        "/meshes/m/virtualServices/color.local",
        "/meshes/m/virtualRouter/r/routes/rt",
        "/meshes/m/virtualRouters/r",
        "/meshes/m/virtualNodes/red",
        "/meshes/m/virtualNodes/blue",
        "/meshes/m",
    ] {
        assert_eq!(
            api.delete(item).await.ok()["status"]["status"],
            "DELETED",
            "{item}"
        );
        api.get(item).await.err(404, "NotFoundException");
    }
}

#[tokio::test]
async fn missing_parents_are_not_found_naming_the_parent() {
    let api = Api::new();
    let m = api
        .put(
            "/meshes/nope/virtualNodes",
            json!({"virtualNodeName": "a", "spec": {}}),
        )
        .await
        .err(404, "NotFoundException");
    assert!(m.contains("Mesh nope"), "{m}");
    api.put("/meshes", json!({"meshName": "m"})).await.ok();
    let m = api
        .put(
            "/meshes/m/virtualRouter/none/routes",
            json!({"routeName": "a", "spec": route_spec(1, 1)}),
        )
        .await
        .err(404, "NotFoundException");
    assert!(m.contains("VirtualRouter none"), "{m}");
    let m = api
        .get("/meshes/m/virtualRouter/none/routes")
        .await
        .err(404, "NotFoundException");
    assert!(m.contains("VirtualRouter none"), "{m}");
    let m = api
        .get("/meshes/m/virtualGateway/none/gatewayRoutes/x")
        .await
        .err(404, "NotFoundException");
    assert!(m.contains("VirtualGateway none"), "{m}");
    api.get("/meshes/x/virtualNodes")
        .await
        .err(404, "NotFoundException");
    api.delete("/meshes/m/virtualNodes/ghost")
        .await
        .err(404, "NotFoundException");
    api.put("/meshes/m/virtualNodes/ghost", json!({"spec": {}}))
        .await
        .err(404, "NotFoundException");
    // References must exist too.
    api.put("/meshes/m/virtualServices", json!({"virtualServiceName": "s", "spec": {"provider": {"virtualNode": {"virtualNodeName": "ghost"}}}})).await.err(404, "NotFoundException");
}

#[tokio::test]
async fn duplicate_names_conflict() {
    let api = Api::new();
    api.colorapp().await;
    api.put("/meshes", json!({"meshName": "m"}))
        .await
        .err(409, "ConflictException");
    api.put(
        "/meshes/m/virtualNodes",
        json!({"virtualNodeName": "red", "spec": node_spec("x.local")}),
    )
    .await
    .err(409, "ConflictException");
    api.put(
        "/meshes/m/virtualRouter/r/routes",
        json!({"routeName": "rt", "spec": route_spec(1, 1)}),
    )
    .await
    .err(409, "ConflictException");
}

#[tokio::test]
async fn client_token_replays_same_request_and_rejects_a_different_one() {
    let api = Api::new();
    let body = json!({"meshName": "m", "clientToken": "tok-1"});
    let first = api.put("/meshes", body.clone()).await.ok();
    let again = api.put("/meshes", body).await.ok();
    assert_eq!(first, again, "same token and body return the same result");
    let m = api
        .put(
            "/meshes",
            json!({"meshName": "other", "clientToken": "tok-1"}),
        )
        .await
        .err(409, "ConflictException");
    assert!(m.contains("tok-1"), "{m}");
    api.get("/meshes/other").await.err(404, "NotFoundException");

    let upd = json!({"spec": {"egressFilter": {"type": "ALLOW_ALL"}}, "clientToken": "tok-2"});
    assert_eq!(
        api.put("/meshes/m", upd.clone()).await.ok()["metadata"]["version"],
        2
    );
    assert_eq!(
        api.put("/meshes/m", upd).await.ok()["metadata"]["version"],
        2,
        "replay does not bump the version"
    );
    assert_eq!(api.get("/meshes/m").await.ok()["metadata"]["version"], 2);
}

#[tokio::test]
async fn validation_reports_every_offending_field() {
    let api = Api::new();
    api.put("/meshes", json!({"meshName": "m"})).await.ok();
    let spec = json!({
        "listeners": [{"portMapping": {"port": 0, "protocol": "udp"},
                       "healthCheck": {"healthyThreshold": 1, "intervalMillis": 5000, "protocol": "http", "timeoutMillis": 2000, "unhealthyThreshold": 2}}],
        "serviceDiscovery": {"dns": {"hostname": "a.local", "responseType": "SOMETIMES"}}
    });
    let m = api
        .put(
            "/meshes/m/virtualNodes",
            json!({"virtualNodeName": "a", "spec": spec}),
        )
        .await
        .err(400, "BadRequestException");
    for path in [
        "spec.listeners[0].portMapping.port",
        "spec.listeners[0].portMapping.protocol",
        "spec.listeners[0].healthCheck.healthyThreshold",
        "spec.serviceDiscovery.dns.responseType",
    ] {
        assert!(m.contains(path), "{path} missing from: {m}");
    }
    let long = "x".repeat(256);
    let m = api
        .put(
            "/meshes/m/virtualNodes",
            json!({"virtualNodeName": long, "spec": {}}),
        )
        .await
        .err(400, "BadRequestException");
    assert!(m.contains("virtualNodeName"), "{m}");
    let m = api.put("/meshes/m/virtualRouters", json!({"virtualRouterName": "r", "spec": {"listeners": [{"portMapping": {"port": "80", "protocol": "http"}}]}})).await.err(400, "BadRequestException");
    assert!(m.contains("spec.listeners[0].portMapping.port"), "{m}");
}

#[tokio::test]
async fn malformed_bodies_and_unknown_operations_never_500() {
    let api = Api::new();
    for body in [
        &b"{"[..],
        b"null",
        b"[1]",
        b"\xff\xfe",
        b"{\"meshName\": 5}",
    ] {
        let r = api.raw("PUT", "/v20190125/meshes", body.to_vec()).await;
        r.err(400, "BadRequestException");
    }
    let huge = format!(
        "{{\"meshName\":\"m\",\"spec\":{{\"x\":\"{}\"}}}}",
        "a".repeat(2 << 20)
    );
    let m = api
        .raw("PUT", "/v20190125/meshes", huge.into_bytes())
        .await
        .err(400, "BadRequestException");
    assert!(m.contains("larger"), "{m}");
    let r = api.raw("PATCH", "/v20190125/meshes", vec![]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = api.raw("GET", "/v20190125/nothing/here", vec![]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    api.get("/meshes?limit=0")
        .await
        .err(400, "BadRequestException");
    api.get("/meshes?limit=101")
        .await
        .err(400, "BadRequestException");
    api.get("/meshes?nextToken=garbage!")
        .await
        .err(400, "BadRequestException");
}

#[tokio::test]
async fn deletes_are_refused_while_in_use() {
    let api = Api::new();
    api.colorapp().await;
    let m = api
        .delete("/meshes/m")
        .await
        .err(409, "ResourceInUseException");
    assert!(m.contains("virtualNode"), "{m}");
    let m = api
        .delete("/meshes/m/virtualRouters/r")
        .await
        .err(409, "ResourceInUseException");
    assert!(
        m.contains("route rt") && m.contains("virtual service color.local"),
        "{m}"
    );
    let m = api
        .delete("/meshes/m/virtualNodes/red")
        .await
        .err(409, "ResourceInUseException");
    assert!(m.contains("route rt"), "{m}");
    // Once the route no longer targets blue, blue can go.
    api.put("/meshes/m/virtualRouter/r/routes/rt", json!({"spec": {"httpRoute": {"match": {"prefix": "/"}, "action": {"weightedTargets": [{"virtualNode": "red", "weight": 1}]}}}})).await.ok();
    api.delete("/meshes/m/virtualNodes/blue").await.ok();
    // A node named as a virtual service provider is in use.
    api.put("/meshes/m/virtualServices", json!({"virtualServiceName": "red.svc", "spec": {"provider": {"virtualNode": {"virtualNodeName": "red"}}}})).await.ok();
    api.delete("/meshes/m/virtualRouter/r/routes/rt").await.ok();
    let m = api
        .delete("/meshes/m/virtualNodes/red")
        .await
        .err(409, "ResourceInUseException");
    assert!(m.contains("virtual service red.svc"), "{m}");
    // A gateway with routes is in use; a service targeted by a gateway route is in use.
    api.put("/meshes/m/virtualGateways", json!({"virtualGatewayName": "gw", "spec": {"listeners": [{"portMapping": {"port": 9080, "protocol": "http"}}]}})).await.ok();
    api.put("/meshes/m/virtualGateway/gw/gatewayRoutes", json!({"gatewayRouteName": "gr", "spec": {"httpRoute": {"match": {"prefix": "/"}, "action": {"target": {"virtualService": {"virtualServiceName": "red.svc"}}}}}})).await.ok();
    api.delete("/meshes/m/virtualGateways/gw")
        .await
        .err(409, "ResourceInUseException");
    api.delete("/meshes/m/virtualServices/red.svc")
        .await
        .err(409, "ResourceInUseException");
}

#[tokio::test]
async fn quotas_are_enforced() {
    let api = Api::with(ApiConfig {
        quotas: Quotas {
            meshes: 1,
            virtual_nodes_per_mesh: 1,
            backends_per_virtual_node: 1,
            ..Quotas::default()
        },
        ..ApiConfig::default()
    });
    api.put("/meshes", json!({"meshName": "m"})).await.ok();
    api.put("/meshes", json!({"meshName": "m2"}))
        .await
        .err(400, "LimitExceededException");
    api.put(
        "/meshes/m/virtualNodes",
        json!({"virtualNodeName": "a", "spec": {}}),
    )
    .await
    .ok();
    let m = api
        .put(
            "/meshes/m/virtualNodes",
            json!({"virtualNodeName": "b", "spec": {}}),
        )
        .await
        .err(400, "LimitExceededException");
    assert!(m.contains("virtual nodes per mesh"), "{m}");
    let backends = json!({"backends": [
        {"virtualService": {"virtualServiceName": "a.local"}},
        {"virtualService": {"virtualServiceName": "b.local"}}
    ]});
    api.put("/meshes/m/virtualNodes/a", json!({"spec": backends}))
        .await
        .err(400, "LimitExceededException");
}

#[tokio::test]
async fn pagination_walks_every_item_once() {
    let api = Api::new();
    api.put("/meshes", json!({"meshName": "m"})).await.ok();
    for i in 0..7 {
        api.put(
            "/meshes/m/virtualNodes",
            json!({"virtualNodeName": format!("n{i}"), "spec": {}}),
        )
        .await
        .ok();
    }
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = match &token {
            Some(t) => format!(
                "/meshes/m/virtualNodes?limit=3&nextToken={}",
                percent_encoding::utf8_percent_encode(t, percent_encoding::NON_ALPHANUMERIC)
            ),
            None => "/meshes/m/virtualNodes?limit=3".to_owned(),
        };
        let page = api.get(&q).await.ok();
        pages += 1;
        for r in page["virtualNodes"].as_array().unwrap() {
            seen.push(r["virtualNodeName"].as_str().unwrap().to_owned());
        }
        match page.get("nextToken").and_then(Value::as_str) {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, (0..7).map(|i| format!("n{i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn percent_encoded_names_stay_one_segment() {
    let api = Api::new();
    api.put("/meshes", json!({"meshName": "a b"})).await.ok();
    api.put(
        "/meshes/a%20b/virtualRouters",
        json!({"virtualRouterName": "x/y:z", "spec": {}}),
    )
    .await
    .ok();
    let d = api.get("/meshes/a%20b/virtualRouters/x%2Fy%3Az").await.ok();
    assert_eq!(d["virtualRouterName"], "x/y:z");
    assert_eq!(d["meshName"], "a b");
    // `:` and spaces stay valid in a virtual node name; `/` does not (see below).
    api.put(
        "/meshes/a%20b/virtualNodes",
        json!({"virtualNodeName": "x y:z", "spec": {}}),
    )
    .await
    .ok();
    let d = api.get("/meshes/a%20b/virtualNodes/x%20y%3Az").await.ok();
    assert_eq!(d["virtualNodeName"], "x y:z");
    // A literal `+` is not a space.
    api.put("/meshes", json!({"meshName": "p+q"})).await.ok();
    api.get("/meshes/p%2Bq").await.ok();
    api.get("/meshes/p%20q").await.err(404, "NotFoundException");
}

/// Issue 16: names that become Envoy node ids (`mesh/<mesh>/virtualNode/<name>`) refuse
/// `/`; every name refuses control and bidi characters; the message names the field.
#[tokio::test]
async fn unusable_names_are_rejected_naming_the_field() {
    let api = Api::new();
    let msg = api
        .put("/meshes", json!({"meshName": "a/b"}))
        .await
        .err(400, "BadRequestException");
    assert!(msg.starts_with("meshName: must not contain \"/\""), "{msg}");
    api.put("/meshes", json!({"meshName": "m"})).await.ok();
    for (coll, field) in [
        ("virtualNodes", "virtualNodeName"),
        ("virtualGateways", "virtualGatewayName"),
    ] {
        let msg = api
            .put(
                &format!("/meshes/m/{coll}"),
                json!({field: "x/y", "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}}),
            )
            .await
            .err(400, "BadRequestException");
        assert!(
            msg.starts_with(&format!("{field}: must not contain \"/\"")),
            "{msg}"
        );
    }
    for bad in ["n\nforged", "n\u{0}", "n\u{202e}gnp.exe", "n\u{85}"] {
        let msg = api
            .put(
                "/meshes/m/virtualRouters",
                json!({"virtualRouterName": bad, "spec": {}}),
            )
            .await
            .err(400, "BadRequestException");
        assert!(
            msg.starts_with("virtualRouterName: must not contain control or bidi characters"),
            "{msg}"
        );
    }
    // Nothing was created by the refused calls.
    let l = api.get("/meshes/m/virtualNodes").await.ok();
    assert_eq!(l["virtualNodes"], json!([]));
    let l = api.get("/meshes").await.ok();
    assert_eq!(l["meshes"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn tags_merge_untag_list_and_limit() {
    let api = Api::new();
    let mesh = api
        .put(
            "/meshes",
            json!({"meshName": "m", "tags": [{"key": "team", "value": "core"}]}),
        )
        .await
        .ok();
    let arn = mesh["metadata"]["arn"].as_str().unwrap().to_owned();
    let enc =
        percent_encoding::utf8_percent_encode(&arn, percent_encoding::NON_ALPHANUMERIC).to_string();
    let tags = |v: &Value| -> Vec<(String, String)> {
        v["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["key"].as_str().unwrap().into(),
                    t["value"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    assert_eq!(
        tags(&api.get(&format!("/tags?resourceArn={enc}")).await.ok()),
        [("team".into(), "core".into())]
    );
    api.put(
        &format!("/tag?resourceArn={enc}"),
        json!({"tags": [{"key": "team", "value": "mesh"}, {"key": "env", "value": ""}]}),
    )
    .await
    .ok();
    assert_eq!(
        tags(&api.get(&format!("/tags?resourceArn={enc}")).await.ok()),
        [("team".into(), "mesh".into()), ("env".into(), "".into())]
    );
    assert_eq!(
        api.get("/meshes/m").await.ok()["metadata"]["version"],
        1,
        "tagging does not bump version"
    );
    api.put(
        &format!("/untag?resourceArn={enc}"),
        json!({"tagKeys": ["team", "absent"]}),
    )
    .await
    .ok();
    assert_eq!(
        tags(&api.get(&format!("/tags?resourceArn={enc}")).await.ok()),
        [("env".into(), "".into())]
    );

    let many: Vec<Value> = (0..50)
        .map(|i| json!({"key": format!("k{i}"), "value": "v"}))
        .collect();
    let m = api
        .put(&format!("/tag?resourceArn={enc}"), json!({"tags": many}))
        .await
        .err(400, "TooManyTagsException");
    assert!(m.contains("50"), "{m}");
    assert_eq!(
        tags(&api.get(&format!("/tags?resourceArn={enc}")).await.ok()).len(),
        1,
        "nothing applied"
    );

    let page = api.get(&format!("/tags?resourceArn={enc}&limit=51")).await;
    page.err(400, "BadRequestException");
    let unknown = percent_encoding::utf8_percent_encode(
        "arn:aws:appmesh:us-east-1:000000000000:mesh/zzz",
        percent_encoding::NON_ALPHANUMERIC,
    )
    .to_string();
    api.get(&format!("/tags?resourceArn={unknown}"))
        .await
        .err(404, "NotFoundException");
    api.get("/tags?resourceArn=not-an-arn")
        .await
        .err(400, "BadRequestException");
    let too_many: Vec<Value> = (0..51)
        .map(|i| json!({"key": format!("k{i}"), "value": "v"}))
        .collect();
    api.put("/meshes", json!({"meshName": "t", "tags": too_many}))
        .await
        .err(400, "BadRequestException");
}

#[tokio::test]
async fn mesh_owner_of_another_account_is_not_found() {
    let api = Api::new();
    api.put("/meshes", json!({"meshName": "m"})).await.ok();
    api.get("/meshes/m?meshOwner=000000000000").await.ok();
    api.get("/meshes/m?meshOwner=111122223333")
        .await
        .err(404, "NotFoundException");
    api.put(
        "/meshes/m/virtualNodes?meshOwner=111122223333",
        json!({"virtualNodeName": "a", "spec": {}}),
    )
    .await
    .err(404, "NotFoundException");
}

#[tokio::test]
async fn route_ports_must_match_listeners() {
    let api = Api::new();
    api.colorapp().await;
    let spec = json!({"httpRoute": {"match": {"prefix": "/", "port": 9999}, "action": {"weightedTargets": [{"virtualNode": "red", "weight": 1}]}}});
    let m = api
        .put(
            "/meshes/m/virtualRouter/r/routes",
            json!({"routeName": "p", "spec": spec}),
        )
        .await
        .err(400, "BadRequestException");
    assert!(m.contains("9999"), "{m}");
    let spec = json!({"httpRoute": {"match": {"prefix": "/"}, "action": {"weightedTargets": [{"virtualNode": "red", "weight": 1, "port": 1234}]}}});
    api.put(
        "/meshes/m/virtualRouter/r/routes",
        json!({"routeName": "p", "spec": spec}),
    )
    .await
    .err(400, "BadRequestException");
    let spec = json!({"httpRoute": {"match": {"prefix": "/"}, "action": {"weightedTargets": [{"virtualNode": "ghost", "weight": 1}]}}});
    api.put(
        "/meshes/m/virtualRouter/r/routes",
        json!({"routeName": "p", "spec": spec}),
    )
    .await
    .err(404, "NotFoundException");
}

#[tokio::test]
async fn gateway_route_ports_must_match_listeners() {
    let api = Api::new();
    api.colorapp().await;
    let two = json!({"listeners": [
        {"portMapping": {"port": 8080, "protocol": "http"}},
        {"portMapping": {"port": 8081, "protocol": "http"}}
    ]});
    api.put(
        "/meshes/m/virtualGateways",
        json!({"virtualGatewayName": "gw", "spec": two}),
    )
    .await
    .ok();
    let route = |m: Value, target: Value| json!({"gatewayRouteName": "g", "spec": {"httpRoute": {"match": m, "action": {"target": target}}}});
    let color = json!({"virtualService": {"virtualServiceName": "color.local"}});
    // Two listeners and no match.port.
    let m = api
        .put(
            "/meshes/m/virtualGateway/gw/gatewayRoutes",
            route(json!({"prefix": "/"}), color.clone()),
        )
        .await
        .err(400, "BadRequestException");
    assert!(m.contains("must set port"), "{m}");
    // A match.port the gateway does not listen on.
    let m = api
        .put(
            "/meshes/m/virtualGateway/gw/gatewayRoutes",
            route(json!({"prefix": "/", "port": 9999}), color.clone()),
        )
        .await
        .err(400, "BadRequestException");
    assert!(m.contains("9999"), "{m}");
    // A target port the provider (router r, listener 8080) does not listen on.
    let bad_target = json!({"virtualService": {"virtualServiceName": "color.local"}, "port": 1234});
    let m = api
        .put(
            "/meshes/m/virtualGateway/gw/gatewayRoutes",
            route(json!({"prefix": "/", "port": 8080}), bad_target),
        )
        .await
        .err(400, "BadRequestException");
    assert!(m.contains("1234") && m.contains("color.local"), "{m}");
    // Correct: listener port chosen, target port served by the router.
    let good_target =
        json!({"virtualService": {"virtualServiceName": "color.local"}, "port": 8080});
    api.put(
        "/meshes/m/virtualGateway/gw/gatewayRoutes",
        route(json!({"prefix": "/", "port": 8081}), good_target),
    )
    .await
    .ok();
}

#[tokio::test]
async fn concurrent_updates_of_one_resource_each_get_their_own_version() {
    let api = Arc::new(Api::new());
    api.put("/meshes", json!({"meshName": "m"})).await.ok();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let f = if i % 2 == 0 { "ALLOW_ALL" } else { "DROP_ALL" };
            api.put("/meshes/m", json!({"spec": {"egressFilter": {"type": f}}}))
                .await
                .ok()["metadata"]["version"]
                .as_i64()
                .unwrap()
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.unwrap());
    }
    versions.sort();
    assert_eq!(
        versions,
        (2..22).collect::<Vec<_>>(),
        "every acknowledged update has a distinct version"
    );
    assert_eq!(api.get("/meshes/m").await.ok()["metadata"]["version"], 21);
}

#[tokio::test]
async fn expired_client_tokens_are_pruned_and_live_ones_kept() {
    let store: Arc<MemoryStore> = Arc::new(MemoryStore::new());
    let fresh = MeshService::new(store.clone(), ApiConfig::default());
    let expiring = MeshService::new(
        store.clone(),
        ApiConfig {
            idempotency_ttl_ms: -1,
            ..ApiConfig::default()
        },
    );
    let api = Api {
        router: meshplane_rest::router(fresh.clone(), Arc::new(ApiMetrics::unregistered())),
    };
    api.put("/meshes", json!({"meshName": "a", "clientToken": "t1"}))
        .await
        .ok();
    api.put("/meshes", json!({"meshName": "b", "clientToken": "t2"}))
        .await
        .ok();
    assert_eq!(
        fresh.prune_idempotency().await.unwrap(),
        0,
        "live records are kept"
    );
    assert_eq!(
        expiring.prune_idempotency().await.unwrap(),
        2,
        "expired records are deleted"
    );
    // The token is free again: reusing it with another body is no longer a conflict.
    api.put("/meshes", json!({"meshName": "c", "clientToken": "t1"}))
        .await
        .ok();
}
