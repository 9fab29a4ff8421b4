//! API authentication in-process: the real App Mesh, Cloud Map and meshplane routers behind
//! the SigV4 layer (`tower::ServiceExt::oneshot`, no socket), requests signed by
//! `aws-sigv4` (the Rust SDK's signer) with keys issued through the API.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode};
use meshplane_policy::operation::Scope;
use meshplane_server::auth::{
    ADMIN_POLICY, AccessKeys, AuthMode, AuthState, TokenRejection, endpoints, key_file,
    require_sigv4,
};
use meshplane_store::{MemoryStore, Store};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const HOST: &str = "api.test";

struct Api {
    app: Router,
    auth: AuthState,
    store: Arc<dyn Store>,
    admin: Key,
    _dir: tempfile::TempDir,
}

#[derive(Clone)]
struct Key {
    id: String,
    secret: String,
}

/// What to sign and how.
struct Call<'a> {
    method: &'a str,
    target: &'a str,
    body: Vec<u8>,
    service: &'a str,
    region: &'a str,
    time: SystemTime,
    presign: Option<Duration>,
    headers: Vec<(&'a str, String)>,
}

impl<'a> Call<'a> {
    fn new(method: &'a str, target: &'a str, body: Option<Value>) -> Call<'a> {
        Call {
            method,
            target,
            body: body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
            service: "appmesh",
            region: "us-east-1",
            time: SystemTime::now(),
            presign: None,
            headers: Vec::new(),
        }
    }

    fn cloud_map(op: &str, body: Value) -> Call<'a> {
        let mut c = Call::new("POST", "/", Some(body));
        c.service = "servicediscovery";
        c.headers = vec![
            ("x-amz-target", format!("Route53AutoNaming_v20170314.{op}")),
            ("content-type", "application/x-amz-json-1.1".to_owned()),
        ];
        c
    }

    fn signed(&self, key: &Key) -> Request<Body> {
        let uri = format!("http://{HOST}{}", self.target);
        let identity = Credentials::new(&key.id, &key.secret, None, None, "test").into();
        let mut settings = SigningSettings::default();
        if let Some(e) = self.presign {
            settings.signature_location = SignatureLocation::QueryParams;
            settings.expires_in = Some(e);
        }
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(self.region)
            .name(self.service)
            .time(self.time)
            .settings(settings)
            .build()
            .unwrap()
            .into();
        let headers: Vec<(&str, &str)> =
            self.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let signable = SignableRequest::new(
            self.method,
            &uri,
            headers.into_iter(),
            SignableBody::Bytes(&self.body),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let mut req = self.unsigned_with_uri(&uri);
        let mut plain = http::Request::new(());
        *plain.uri_mut() = req.uri().clone();
        *plain.headers_mut() = req.headers().clone();
        instructions.apply_to_request_http1x(&mut plain);
        *req.uri_mut() = plain.uri().clone();
        *req.headers_mut() = plain.headers().clone();
        req
    }

    fn unsigned(&self) -> Request<Body> {
        self.unsigned_with_uri(&format!("http://{HOST}{}", self.target))
    }

    fn unsigned_with_uri(&self, uri: &str) -> Request<Body> {
        let mut b = Request::builder()
            .method(self.method)
            .uri(uri)
            .header("host", HOST);
        for (k, v) in &self.headers {
            b = b.header(*k, v);
        }
        b.body(Body::from(self.body.clone())).unwrap()
    }
}

async fn api() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let seal = key_file::load_or_create(dir.path(), store.as_ref())
        .await
        .unwrap();
    let token_key = seal.token_key();
    let keys = AccessKeys::load(store.clone(), Arc::new(seal))
        .await
        .unwrap();
    tokio::spawn(keys.clone().run_watch());
    let auth = AuthState::new(
        keys.clone(),
        token_key,
        Scope::new("aws", "us-east-1", "000000000000"),
        AuthMode::Sigv4,
        Duration::from_secs(86_400),
        1 << 20,
    );
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(meshplane_rest::ApiMetrics::register(&mut registry));
    let service =
        meshplane_rest::MeshService::new(store.clone(), meshplane_rest::ApiConfig::default());
    let cloud_map = meshplane_discovery::Registry::new(
        store.clone(),
        meshplane_discovery::RegistryConfig {
            partition: "aws".into(),
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
        },
    );
    let app = meshplane_rest::router(service, metrics)
        .merge(meshplane_discovery::http::router(cloud_map))
        .merge(Router::new().route("/healthz", axum::routing::get(|| async { "ok" })))
        .merge(endpoints::router(auth.clone()))
        .layer(axum::middleware::from_fn_with_state(
            auth.clone(),
            require_sigv4,
        ));
    let admin = keys.create("admin", ADMIN_POLICY).await.unwrap();
    Api {
        app,
        auth,
        store,
        admin: Key {
            id: admin.id,
            secret: admin.secret,
        },
        _dir: dir,
    }
}

struct Reply {
    status: StatusCode,
    error_type: Option<String>,
    body: Value,
}

impl Api {
    async fn send(&self, req: Request<Body>) -> Reply {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let error_type = resp
            .headers()
            .get("x-amzn-errortype")
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        Reply {
            status,
            error_type,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    async fn call(&self, key: &Key, method: &str, target: &str, body: Option<Value>) -> Reply {
        self.send(Call::new(method, target, body).signed(key)).await
    }

    /// Creates an access key through the API (signed by the administrator).
    async fn create_key(&self, name: &str, policy: Value) -> Key {
        let r = self
            .call(
                &self.admin,
                "POST",
                "/meshplane/v1/access-keys",
                Some(json!({"name": name, "policy": policy})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        Key {
            id: r.body["accessKeyId"].as_str().unwrap().to_owned(),
            secret: r.body["secretAccessKey"].as_str().unwrap().to_owned(),
        }
    }
}

fn allow(actions: Value, resources: Value) -> Value {
    json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": resources}]})
}

fn assert_refused(r: &Reply, name: &str) {
    assert_eq!(r.status, 403, "{:?} {}", r.error_type, r.body);
    assert_eq!(r.error_type.as_deref(), Some(name), "{}", r.body);
}

#[tokio::test]
async fn refuses_bad_signatures_with_aws_exception_names() {
    let api = api().await;
    let list = Call::new("GET", "/v20190125/meshes", None);
    assert_eq!(api.send(list.signed(&api.admin)).await.status, 200);

    assert_refused(
        &api.send(list.unsigned()).await,
        "MissingAuthenticationTokenException",
    );
    let r = api.send(list.unsigned()).await;
    assert_eq!(r.body["message"], "Missing Authentication Token");

    let unknown = Key {
        id: "MPAKAAAAAAAAAAAAAAAA".into(),
        secret: api.admin.secret.clone(),
    };
    assert_refused(
        &api.send(list.signed(&unknown)).await,
        "UnrecognizedClientException",
    );

    let wrong = Key {
        id: api.admin.id.clone(),
        secret: "wrong-secret".into(),
    };
    assert_refused(
        &api.send(list.signed(&wrong)).await,
        "InvalidSignatureException",
    );

    let mut old = Call::new("GET", "/v20190125/meshes", None);
    old.time = SystemTime::now() - Duration::from_secs(20 * 60);
    let r = api.send(old.signed(&api.admin)).await;
    assert_refused(&r, "InvalidSignatureException");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .starts_with("Signature expired: "),
        "{}",
        r.body
    );

    // A body changed after signing.
    let create = Call::new("PUT", "/v20190125/meshes", Some(json!({"meshName": "a"})));
    let mut req = create.signed(&api.admin);
    *req.body_mut() = Body::from(json!({"meshName": "b"}).to_string());
    assert_refused(&api.send(req).await, "InvalidSignatureException");

    // A presigned URL past its expiry (signed 10 minutes ago for 5 minutes).
    let mut pre = Call::new("GET", "/v20190125/meshes", None);
    pre.presign = Some(Duration::from_secs(300));
    pre.time = SystemTime::now() - Duration::from_secs(600);
    let r = api.send(pre.signed(&api.admin)).await;
    assert_refused(&r, "InvalidSignatureException");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .starts_with("Signature expired"),
        "{}",
        r.body
    );
    // ...and one still valid works.
    pre.time = SystemTime::now();
    assert_eq!(api.send(pre.signed(&api.admin)).await.status, 200);

    // Another region, another service.
    let mut region = Call::new("GET", "/v20190125/meshes", None);
    region.region = "eu-west-1";
    let r = api.send(region.signed(&api.admin)).await;
    assert_refused(&r, "InvalidSignatureException");
    assert!(r.body["message"].as_str().unwrap().contains("valid region"));
    let mut service = Call::new("GET", "/v20190125/meshes", None);
    service.service = "servicediscovery";
    assert_refused(
        &api.send(service.signed(&api.admin)).await,
        "InvalidSignatureException",
    );

    // Cloud Map answers in JSON 1.1.
    let cm = Call::cloud_map("ListNamespaces", json!({}));
    assert_eq!(api.send(cm.signed(&api.admin)).await.status, 200);
    let r = api.send(cm.unsigned()).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["__type"], "MissingAuthenticationTokenException");

    // A body over the API's limit is refused before anything else.
    let mut big = Call::new("PUT", "/v20190125/meshes", None);
    big.body = vec![b' '; (1 << 20) + 1];
    let r = api.send(big.unsigned()).await;
    assert_eq!(
        (r.status.as_u16(), r.error_type.as_deref()),
        (400, Some("BadRequestException"))
    );

    // Probes pass without a signature.
    let health = Call::new("GET", "/healthz", None);
    assert_eq!(api.send(health.unsigned()).await.status, 200);
}

#[tokio::test]
async fn names_that_need_encoding_sign_and_verify() {
    let api = api().await;
    let a = &api.admin;
    assert_eq!(
        api.call(
            a,
            "PUT",
            "/v20190125/meshes",
            Some(json!({"meshName": "m.1", "spec": {}}))
        )
        .await
        .status,
        200
    );
    let router = json!({"virtualRouterName": "r", "spec": {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}]}});
    assert_eq!(
        api.call(
            a,
            "PUT",
            "/v20190125/meshes/m.1/virtualRouters",
            Some(router)
        )
        .await
        .status,
        200
    );
    let node = json!({"virtualNodeName": "n", "spec": {}});
    assert_eq!(
        api.call(a, "PUT", "/v20190125/meshes/m.1/virtualNodes", Some(node))
            .await
            .status,
        200
    );
    let route = json!({"routeName": "a:b", "spec": {"httpRoute": {"match": {"prefix": "/"}, "action": {"weightedTargets": [{"virtualNode": "n", "weight": 1}]}}},
                       "tags": [{"key": "team", "value": "a b/c"}]});
    let r = api
        .call(
            a,
            "PUT",
            "/v20190125/meshes/m.1/virtualRouter/r/routes",
            Some(route),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = api
        .call(
            a,
            "GET",
            "/v20190125/meshes/m.1/virtualRouter/r/routes/a%3Ab",
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["routeName"], "a:b");
    let arn = "arn:aws:appmesh:us-east-1:000000000000:mesh/m.1/virtualRouter/r/route/a:b";
    let target = format!(
        "/v20190125/tags?resourceArn={}",
        arn.replace(':', "%3A").replace('/', "%2F")
    );
    let r = api.call(a, "GET", &target, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["tags"][0]["value"], "a b/c");
}

#[tokio::test]
async fn policies_scope_keys_to_meshes_and_actions() {
    let api = api().await;
    let a = &api.admin;
    for m in ["dev", "prod"] {
        assert_eq!(
            api.call(
                a,
                "PUT",
                "/v20190125/meshes",
                Some(json!({"meshName": m, "spec": {}}))
            )
            .await
            .status,
            200
        );
    }
    let dev = api
        .create_key(
            "dev",
            allow(
                json!("appmesh:*"),
                json!([
                    "arn:aws:appmesh:*:*:mesh/dev",
                    "arn:aws:appmesh:*:*:mesh/dev/*"
                ]),
            ),
        )
        .await;
    let node = |n: &str| json!({"virtualNodeName": n, "spec": {}});
    assert_eq!(
        api.call(
            &dev,
            "PUT",
            "/v20190125/meshes/dev/virtualNodes",
            Some(node("a"))
        )
        .await
        .status,
        200
    );
    assert_eq!(
        api.call(
            &dev,
            "PUT",
            "/v20190125/meshes/dev",
            Some(json!({"spec": {"egressFilter": {"type": "ALLOW_ALL"}}}))
        )
        .await
        .status,
        200
    );
    let r = api
        .call(
            &dev,
            "PUT",
            "/v20190125/meshes/prod/virtualNodes",
            Some(node("a")),
        )
        .await;
    assert_refused(&r, "AccessDeniedException");
    assert_eq!(
        r.body["message"],
        "User: dev is not authorized to perform: appmesh:CreateVirtualNode on resource: arn:aws:appmesh:us-east-1:000000000000:mesh/prod/virtualNode/a"
    );
    assert_refused(
        &api.call(&dev, "DELETE", "/v20190125/meshes/prod", None)
            .await,
        "AccessDeniedException",
    );
    // ListMeshes has no resource: `mesh/dev` does not cover `*`.
    assert_refused(
        &api.call(&dev, "GET", "/v20190125/meshes", None).await,
        "AccessDeniedException",
    );
    // Nothing of prod was written.
    assert_eq!(
        api.call(a, "GET", "/v20190125/meshes/prod/virtualNodes", None)
            .await
            .body["virtualNodes"],
        json!([])
    );

    let ro = api
        .create_key(
            "ro",
            allow(json!(["appmesh:Describe*", "appmesh:List*"]), json!("*")),
        )
        .await;
    let r = api.call(&ro, "GET", "/v20190125/meshes", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["meshes"].as_array().unwrap().len(), 2);
    assert_eq!(
        api.call(&ro, "GET", "/v20190125/meshes/dev/virtualNodes/a", None)
            .await
            .status,
        200
    );
    assert_refused(
        &api.call(
            &ro,
            "PUT",
            "/v20190125/meshes/dev",
            Some(json!({"spec": {}})),
        )
        .await,
        "AccessDeniedException",
    );
    assert_refused(
        &api.call(
            &ro,
            "POST",
            "/meshplane/v1/access-keys",
            Some(json!({"name": "x", "policy": ADMIN_POLICY})),
        )
        .await,
        "AccessDeniedException",
    );

    let deny = api
        .create_key(
            "deny",
            json!({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "appmesh:*", "Resource": "*"},
                {"Effect": "Deny", "Action": "appmesh:Delete*", "Resource": "arn:aws:appmesh:*:*:mesh/prod*"}
            ]}),
        )
        .await;
    assert_eq!(
        api.call(
            &deny,
            "PUT",
            "/v20190125/meshes/prod/virtualNodes",
            Some(node("b"))
        )
        .await
        .status,
        200
    );
    assert_refused(
        &api.call(
            &deny,
            "DELETE",
            "/v20190125/meshes/prod/virtualNodes/b",
            None,
        )
        .await,
        "AccessDeniedException",
    );
    assert_eq!(
        api.call(
            &deny,
            "DELETE",
            "/v20190125/meshes/dev/virtualNodes/a",
            None
        )
        .await
        .status,
        200
    );

    // Cloud Map with a servicediscovery policy.
    let cm = api
        .create_key("cm", allow(json!("servicediscovery:List*"), json!("*")))
        .await;
    assert_eq!(
        api.send(Call::cloud_map("ListNamespaces", json!({})).signed(&cm))
            .await
            .status,
        200
    );
    let r = api
        .send(Call::cloud_map("CreateHttpNamespace", json!({"Name": "ns"})).signed(&cm))
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["__type"], "AccessDeniedException");
    // A Cloud Map target header on an App Mesh call does not make it a Cloud Map call.
    for service in ["appmesh", "servicediscovery"] {
        let mut smuggled = Call::new("PUT", "/v20190125/meshes", Some(json!({"meshName": "x"})));
        smuggled.service = service;
        smuggled.headers = vec![(
            "x-amz-target",
            "Route53AutoNaming_v20170314.ListNamespaces".to_owned(),
        )];
        let r = api.send(smuggled.signed(&cm)).await;
        assert_eq!(r.status, 403, "{service}: {}", r.body);
    }
    // A parameter given twice cannot pick one for the policy and another for the handler.
    let dev_arn = "arn%3Aaws%3Aappmesh%3Aus-east-1%3A000000000000%3Amesh%2Fdev";
    let prod_arn = "arn%3Aaws%3Aappmesh%3Aus-east-1%3A000000000000%3Amesh%2Fprod";
    let twice = format!("/v20190125/tag?resourceArn={dev_arn}&resourceArn={prod_arn}");
    let tags = json!({"tags": [{"key": "k", "value": "v"}]});
    assert_refused(
        &api.call(&dev, "PUT", &twice, Some(tags.clone())).await,
        "AccessDeniedException",
    );
    let once = format!("/v20190125/tag?resourceArn={dev_arn}");
    assert_eq!(api.call(&dev, "PUT", &once, Some(tags)).await.status, 200);
}

#[tokio::test]
async fn access_key_lifecycle_through_the_api() {
    let api = api().await;
    let a = &api.admin;
    // Malformed policy: the message names the element.
    let bad = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}, {"Effect": "allow", "Action": "*", "Resource": "*"}]});
    let r = api
        .call(
            a,
            "POST",
            "/meshplane/v1/access-keys",
            Some(json!({"name": "x", "policy": bad})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_type.as_deref(), Some("BadRequestException"));
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("Statement[1].Effect"),
        "{}",
        r.body
    );
    // A string policy works too; the secret is shown once, list never shows it.
    let r = api
        .call(
            a,
            "POST",
            "/meshplane/v1/access-keys",
            Some(json!({"name": "ci", "policy": ADMIN_POLICY})),
        )
        .await;
    assert_eq!(r.status, 200);
    let ci = Key {
        id: r.body["accessKeyId"].as_str().unwrap().into(),
        secret: r.body["secretAccessKey"].as_str().unwrap().into(),
    };
    assert!(ci.id.starts_with("MPAK") && ci.id.len() == 20);
    assert!(
        ci.id[4..]
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
    );
    assert_eq!(ci.secret.len(), 40);
    let r = api
        .call(
            a,
            "POST",
            "/meshplane/v1/access-keys",
            Some(json!({"name": "ci", "policy": ADMIN_POLICY})),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.error_type.as_deref()),
        (409, Some("ConflictException"))
    );
    let r = api
        .call(&ci, "GET", "/meshplane/v1/access-keys", None)
        .await;
    assert_eq!(r.status, 200);
    let names: Vec<&str> = r.body["accessKeys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "ci"]);
    assert!(!r.body.to_string().contains(&ci.secret));
    assert_eq!(
        r.body["accessKeys"][1]["policy"]["Statement"][0]["Effect"],
        "Allow"
    );

    // Rotation with grace: both secrets verify; without grace only the new one.
    let r = api
        .call(
            a,
            "POST",
            "/meshplane/v1/access-keys/ci/rotate",
            Some(json!({"graceSeconds": 600})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["accessKeyId"], ci.id.as_str());
    let ci2 = Key {
        id: ci.id.clone(),
        secret: r.body["secretAccessKey"].as_str().unwrap().into(),
    };
    assert_ne!(ci2.secret, ci.secret);
    assert_eq!(
        api.call(&ci, "GET", "/v20190125/meshes", None).await.status,
        200
    );
    assert_eq!(
        api.call(&ci2, "GET", "/v20190125/meshes", None)
            .await
            .status,
        200
    );
    let r = api
        .call(
            a,
            "POST",
            "/meshplane/v1/access-keys/ci/rotate",
            Some(json!({})),
        )
        .await;
    let ci3 = Key {
        id: ci.id.clone(),
        secret: r.body["secretAccessKey"].as_str().unwrap().into(),
    };
    assert_refused(
        &api.call(&ci2, "GET", "/v20190125/meshes", None).await,
        "InvalidSignatureException",
    );
    assert_eq!(
        api.call(&ci3, "GET", "/v20190125/meshes", None)
            .await
            .status,
        200
    );
    let r = api
        .call(
            a,
            "POST",
            "/meshplane/v1/access-keys/ci/rotate",
            Some(json!({"graceSeconds": 86401})),
        )
        .await;
    assert_eq!(r.status, 400);

    // No lock-out: admin and ci may both create keys; deleting one is fine, the last is not.
    let r = api
        .call(&ci3, "DELETE", "/meshplane/v1/access-keys/admin", None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_refused(
        &api.call(a, "GET", "/v20190125/meshes", None).await,
        "UnrecognizedClientException",
    );
    let r = api
        .call(&ci3, "DELETE", "/meshplane/v1/access-keys/ci", None)
        .await;
    assert_eq!(
        (r.status.as_u16(), r.error_type.as_deref()),
        (409, Some("ConflictException")),
        "{}",
        r.body
    );
    let r = api
        .call(&ci3, "DELETE", "/meshplane/v1/access-keys/nobody", None)
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_of_one_name_have_one_winner() {
    let api = api().await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let app = api.app.clone();
            let req = Call::new(
                "POST",
                "/meshplane/v1/access-keys",
                Some(json!({"name": "race", "policy": ADMIN_POLICY})),
            )
            .signed(&api.admin);
            tokio::spawn(async move {
                let r = app.oneshot(req).await.unwrap();
                let status = r.status();
                let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
                (status, String::from_utf8_lossy(&body).into_owned())
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        statuses.push((status.as_u16(), body));
    }
    statuses.sort();
    let codes: Vec<u16> = statuses.iter().map(|s| s.0).collect();
    assert_eq!(
        codes,
        [200, 409, 409, 409, 409, 409, 409, 409],
        "{statuses:?}"
    );
    assert_eq!(api.auth.keys().list().len(), 2);
}

#[tokio::test]
async fn another_replicas_keys_show_up_through_the_watch() {
    let api = api().await;
    // A second view of the same store (another replica, same key file).
    let dir = api._dir.path();
    let seal = key_file::load_or_create(dir, api.store.as_ref())
        .await
        .unwrap();
    let other = AccessKeys::load(api.store.clone(), Arc::new(seal))
        .await
        .unwrap();
    tokio::spawn(other.clone().run_watch());
    let issued = other.create("from-b", ADMIN_POLICY).await.unwrap();
    let key = Key {
        id: issued.id,
        secret: issued.secret,
    };
    let mut ok = false;
    for _ in 0..100 {
        if api
            .call(&key, "GET", "/v20190125/meshes", None)
            .await
            .status
            == 200
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "a key created by another replica never verified here");
    other.delete("from-b").await.unwrap();
    let mut gone = false;
    for _ in 0..100 {
        if api
            .call(&key, "GET", "/v20190125/meshes", None)
            .await
            .error_type
            .as_deref()
            == Some("UnrecognizedClientException")
        {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "a key deleted by another replica still verified here");
}

#[tokio::test]
async fn node_tokens_are_minted_verified_and_revoked() {
    let api = api().await;
    let a = &api.admin;
    assert_eq!(
        api.call(
            a,
            "PUT",
            "/v20190125/meshes",
            Some(json!({"meshName": "dev", "spec": {}}))
        )
        .await
        .status,
        200
    );
    let envoy = api
        .create_key(
            "envoy-web",
            allow(
                json!("appmesh:StreamAggregatedResources"),
                json!("arn:aws:appmesh:*:*:mesh/dev/virtualNode/web"),
            ),
        )
        .await;
    let verifier = api.auth.node_token_verifier();
    let mut feed = api.auth.keys().revocations();
    // What the xDS server's close_streams_for_token would be called with.
    let closed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = closed.clone();
    tokio::spawn(meshplane_server::auth::run_revocation_feed(
        api.auth.keys().clone(),
        Arc::new(move |tid: &str| {
            sink.lock().unwrap().push(tid.to_owned());
            1
        }),
    ));

    let r = api
        .call(
            &envoy,
            "POST",
            "/meshplane/v1/node-tokens",
            Some(json!({"mesh": "dev", "virtualNodeName": "web", "ttlSeconds": 600})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["node"], "mesh/dev/virtualNode/web");
    let token = r.body["token"].as_str().unwrap().to_owned();
    let tid = r.body["tokenId"].as_str().unwrap().to_owned();
    let v = verifier.verify(Some(&format!("Bearer {token}"))).unwrap();
    assert_eq!(
        (v.node.as_str(), v.token_id.as_str()),
        ("mesh/dev/virtualNode/web", tid.as_str())
    );
    let left = v.expires_at.duration_since(SystemTime::now()).unwrap();
    assert!(
        left <= Duration::from_secs(600) && left > Duration::from_secs(590),
        "{left:?}"
    );

    assert_refused(
        &api.call(
            &envoy,
            "POST",
            "/meshplane/v1/node-tokens",
            Some(json!({"mesh": "dev", "virtualNodeName": "db"})),
        )
        .await,
        "AccessDeniedException",
    );
    let r = api
        .call(
            &envoy,
            "POST",
            "/meshplane/v1/node-tokens",
            Some(json!({"mesh": "dev", "virtualNodeName": "web", "ttlSeconds": 86_401})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(verifier.verify(None), Err(TokenRejection::Missing));
    assert_eq!(
        verifier.verify(Some("Basic abc")),
        Err(TokenRejection::NotBearer)
    );
    assert!(matches!(
        verifier.verify(Some("Bearer mpt1.x.y")),
        Err(TokenRejection::Invalid(_))
    ));

    // Revocation: the envoy key may not revoke; the admin may. The feed reports it.
    assert_refused(
        &api.call(
            &envoy,
            "DELETE",
            &format!("/meshplane/v1/node-tokens/{tid}"),
            None,
        )
        .await,
        "AccessDeniedException",
    );
    assert_eq!(
        api.call(
            a,
            "DELETE",
            &format!("/meshplane/v1/node-tokens/{tid}"),
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        verifier.verify(Some(&format!("Bearer {token}"))),
        Err(TokenRejection::Revoked)
    );
    let got = tokio::time::timeout(Duration::from_secs(5), feed.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, tid);

    // Deleting the key revokes the tokens it minted.
    let r = api
        .call(
            &envoy,
            "POST",
            "/meshplane/v1/node-tokens",
            Some(json!({"mesh": "dev", "virtualNodeName": "web"})),
        )
        .await;
    let token2 = r.body["token"].as_str().unwrap().to_owned();
    let tid2 = r.body["tokenId"].as_str().unwrap().to_owned();
    assert!(verifier.verify(Some(&format!("Bearer {token2}"))).is_ok());
    assert_eq!(
        api.call(a, "DELETE", "/meshplane/v1/access-keys/envoy-web", None)
            .await
            .status,
        200
    );
    assert!(verifier.verify(Some(&format!("Bearer {token2}"))).is_err());
    let got = tokio::time::timeout(Duration::from_secs(5), feed.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, tid2);
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        /// Random and mutated `Authorization` headers: never a panic, never a 5xx, never
        /// anything but a 403 with an AWS exception name.
        #[test]
        fn random_authorization_headers_are_refused_cleanly(
            junk in "[ -~]{0,200}",
            cut in 0usize..400,
            flip in 0usize..400,
            date_junk in "[ -~]{0,20}",
        ) {
            let rt = runtime();
            rt.block_on(async {
                let api = api().await;
                let good = Call::new("PUT", "/v20190125/meshes", Some(json!({"meshName": "m"}))).signed(&api.admin);
                let authz = good.headers()["authorization"].to_str().unwrap().to_owned();
                let mut mutated = authz.clone().into_bytes();
                if !mutated.is_empty() {
                    let i = flip % mutated.len();
                    mutated[i] = if mutated[i] == b'a' { b'b' } else { b'a' };
                }
                let candidates = [
                    junk.clone(),
                    authz[..cut.min(authz.len())].to_owned(),
                    String::from_utf8(mutated).unwrap(),
                    format!("AWS4-HMAC-SHA256 {junk}"),
                    format!("AWS4-HMAC-SHA256 Credential={}/{junk}, SignedHeaders=host, Signature=00", api.admin.id),
                ];
                for value in candidates {
                    if value == authz {
                        continue;
                    }
                    let Ok(value) = http::HeaderValue::from_str(&value) else { continue };
                    let mut req = Call::new("PUT", "/v20190125/meshes", Some(json!({"meshName": "m"}))).signed(&api.admin);
                    req.headers_mut().insert("authorization", value);
                    if let Ok(d) = http::HeaderValue::from_str(&date_junk) && flip % 3 == 0 {
                        req.headers_mut().insert("x-amz-date", d);
                    }
                    let r = api.send(req).await;
                    prop_assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
                    prop_assert!(r.error_type.is_some());
                }
                Ok(())
            })?;
        }

        /// Random policy documents through `access-keys create`: 200 or 400, never 5xx.
        #[test]
        fn random_policy_documents_never_fail_the_server(
            effect in prop_oneof![Just("Allow".to_owned()), Just("Deny".to_owned()), "[ -~]{0,8}"],
            action in prop_oneof![Just(json!("*")), Just(json!("appmesh:List*")), "[ -~]{0,24}".prop_map(Value::from), Just(json!([1, null])), Just(json!({}))],
            resource in prop_oneof![Just(json!("*")), Just(json!("arn:aws:appmesh:*:*:mesh/dev/*")), "[ -~]{0,30}".prop_map(Value::from), Just(json!(7))],
            extra in prop_oneof![Just(None), Just(Some(("Condition", json!({})))), Just(Some(("NotAction", json!("*"))))],
            raw in "[ -~]{0,40}",
        ) {
            let rt = runtime();
            rt.block_on(async {
                let api = api().await;
                let mut st = json!({"Effect": effect, "Action": action, "Resource": resource});
                if let Some((k, v)) = extra { st[k] = v; }
                for policy in [json!({"Version": "2012-10-17", "Statement": [st]}), Value::String(raw.clone()), json!([raw.clone()])] {
                    let r = api.call(&api.admin, "POST", "/meshplane/v1/access-keys", Some(json!({"name": "p", "policy": policy}))).await;
                    prop_assert!(r.status == 200 || r.status == 400 || r.status == 409, "{} {}", r.status, r.body);
                    if r.status == 200 {
                        let key = Key { id: r.body["accessKeyId"].as_str().unwrap().into(), secret: r.body["secretAccessKey"].as_str().unwrap().into() };
                        let r = api.call(&key, "GET", "/v20190125/meshes", None).await;
                        prop_assert!(r.status == 200 || r.status == 403, "{}", r.status);
                        prop_assert_eq!(api.call(&api.admin, "DELETE", "/meshplane/v1/access-keys/p", None).await.status, StatusCode::OK);
                    }
                }
                Ok(())
            })?;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_deletes_never_remove_the_last_administrator() {
    for _ in 0..5 {
        let api = api().await;
        let keys = api.auth.keys().clone();
        keys.create("admin2", ADMIN_POLICY).await.unwrap();
        let (a, b) = (keys.clone(), keys.clone());
        let (ra, rb) = tokio::join!(
            tokio::spawn(async move { a.delete("admin").await }),
            tokio::spawn(async move { b.delete("admin2").await })
        );
        let oks = [ra.unwrap().is_ok(), rb.unwrap().is_ok()];
        assert_eq!(oks.iter().filter(|o| **o).count(), 1, "{oks:?}");
        assert_eq!(keys.list().len(), 1);
    }
}
