//! `meshplane node-tokens create | revoke` and `proxy-status`'s TOKEN column as a user runs
//! them: the real binary against an in-process stub of `/meshplane/v1` that verifies each
//! request's SigV4 signature with `meshplane_auth::sigv4`, records it, and answers in the
//! contract's shapes (or with the AWS error the test asks for).
//! The same verbs against the real server: `crates/e2e/tests/security.rs`.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::body::{Body, to_bytes};
use axum::http::{Request, Response, StatusCode};
use meshplane_auth::sigv4::{Payload, RequestView, verify};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_meshplane");
const AKID: &str = "MPAKTOKENSTESTTOKEN2";
const SECRET: &str = "tok-test-secret-0123456789-abcdefghijklm";

/// One request as the stub saw it: method, path on the wire, JSON body, and the
/// signature check's outcome (the region, or the exception name).
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: String,
    path: String,
    body: Value,
    signed: Result<String, String>,
}

/// An answer: status, `x-amzn-ErrorType` (for errors), JSON body.
type Answer = (u16, Option<&'static str>, Value);

struct Stub {
    endpoint: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    _rt: tokio::runtime::Runtime,
}

impl Stub {
    /// A stub answering each verified request with `answer(method, path, body)`.
    fn start(answer: fn(&str, &str, &Value) -> Answer) -> Stub {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        let app = axum::Router::new().fallback(move |req: Request<Body>| {
            let log = log.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = to_bytes(body, 1 << 20).await.unwrap();
                let keys = HashMap::from([(AKID.to_owned(), SECRET.to_owned())]);
                let signed = verify(
                    &RequestView::from_parts(&parts),
                    Payload::Bytes(&body),
                    SystemTime::now(),
                    &keys,
                )
                .map(|v| v.region)
                .map_err(|e| e.exception_name().to_owned());
                let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let path = parts.uri.path().to_owned();
                log.lock().unwrap().push(Seen {
                    method: parts.method.to_string(),
                    path: path.clone(),
                    body: json_body.clone(),
                    signed: signed.clone(),
                });
                let (status, error, body) = match signed {
                    Err(e) => (
                        403,
                        Some("InvalidSignatureException"),
                        json!({"message": e}),
                    ),
                    Ok(_) => answer(parts.method.as_str(), &path, &json_body),
                };
                let mut r = Response::builder()
                    .status(StatusCode::from_u16(status).unwrap())
                    .header("content-type", "application/json");
                if let Some(e) = error {
                    r = r.header("x-amzn-ErrorType", e);
                }
                r.body(Body::from(body.to_string())).unwrap()
            }
        });
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
        Stub {
            endpoint,
            seen,
            _rt: rt,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Runs the binary with only `HOME`, the stub's endpoint and the test key.
    fn meshplane(&self, home: &Path, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env_clear()
            .env("HOME", home)
            .env("MESHPLANE_ENDPOINT", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", AKID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env("AWS_REGION", "eu-central-1")
            .output()
            .expect("run meshplane")
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The happy answers of the contract; anything unexpected is a 404.
fn contract(method: &str, path: &str, body: &Value) -> Answer {
    match (method, path) {
        ("POST", "/meshplane/v1/node-tokens") => {
            let node = match (
                body["virtualNodeName"].as_str(),
                body["virtualGatewayName"].as_str(),
            ) {
                (Some(n), None) => {
                    format!("mesh/{}/virtualNode/{n}", body["mesh"].as_str().unwrap())
                }
                (None, Some(g)) => {
                    format!("mesh/{}/virtualGateway/{g}", body["mesh"].as_str().unwrap())
                }
                _ => {
                    return (
                        400,
                        Some("BadRequestException"),
                        json!({"message": "which proxy?"}),
                    );
                }
            };
            (
                200,
                None,
                json!({"token": "mpt1.payload.mac", "tokenId": "T-1", "node": node, "expiresAt": 1_796_554_800}),
            )
        }
        ("DELETE", "/meshplane/v1/node-tokens/T-1") => (
            200,
            None,
            json!({"tokenId": "T-1", "expiresAt": 1_796_554_800}),
        ),
        ("DELETE", _) => (
            404,
            Some("NotFoundException"),
            json!({"message": "no node token T-2"}),
        ),
        ("GET", "/meshplane/v1/proxy-status") => (
            200,
            None,
            json!({"proxies": [
                {"node": "mesh/m/virtualNode/front", "flavor": "delta", "connectedAt": 1.0,
                 "tokenId": "T-1", "types": [{"type": "cds", "sentVersion": "v1", "inSync": true}]},
                {"node": "mesh/m/virtualNode/open", "flavor": "sotw", "connectedAt": 1.0,
                 "tokenId": null, "types": [{"type": "cds", "sentVersion": "v1", "inSync": true}]},
            ]}),
        ),
        _ => (
            404,
            Some("NotFoundException"),
            json!({"message": "no such route"}),
        ),
    }
}

#[test]
fn create_prints_id_node_expiry_and_token_from_a_signed_request() {
    let stub = Stub::start(contract);
    let home = tempfile::tempdir().unwrap();
    let out = stub.meshplane(
        home.path(),
        &[
            "node-tokens",
            "create",
            "--mesh",
            "m",
            "--virtual-node",
            "front",
            "--ttl",
            "1h",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "token_id:   T-1\nnode:       mesh/m/virtualNode/front\n\
         expires_at: 2026-12-06T11:00:00Z (1796554800)\ntoken:      mpt1.payload.mac\n"
    );
    let out = stub.meshplane(
        home.path(),
        &[
            "node-tokens",
            "create",
            "-m",
            "m",
            "--virtual-gateway",
            "gw",
            "--mesh-owner",
            "123456789012",
            "-o",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["node"], "mesh/m/virtualGateway/gw");
    assert_eq!(answer["token"], "mpt1.payload.mac");
    let seen = stub.seen();
    assert_eq!(
        seen,
        vec![
            Seen {
                method: "POST".into(),
                path: "/meshplane/v1/node-tokens".into(),
                body: json!({"mesh": "m", "virtualNodeName": "front", "ttlSeconds": 3600}),
                signed: Ok("eu-central-1".into()),
            },
            Seen {
                method: "POST".into(),
                path: "/meshplane/v1/node-tokens".into(),
                body: json!({"mesh": "m", "virtualGatewayName": "gw", "meshOwner": "123456789012"}),
                signed: Ok("eu-central-1".into()),
            },
        ]
    );
}

#[test]
fn create_needs_exactly_one_proxy_and_a_positive_ttl_before_sending() {
    let stub = Stub::start(contract);
    let home = tempfile::tempdir().unwrap();
    for args in [
        &["node-tokens", "create", "--mesh", "m"][..],
        &[
            "node-tokens",
            "create",
            "--mesh",
            "m",
            "--virtual-node",
            "a",
            "--virtual-gateway",
            "b",
        ],
        &[
            "node-tokens",
            "create",
            "--mesh",
            "m",
            "--virtual-node",
            "a",
            "--ttl",
            "0s",
        ],
        &[
            "node-tokens",
            "create",
            "--mesh",
            "m",
            "--virtual-node",
            "a",
            "--ttl",
            "soon",
        ],
    ] {
        let out = stub.meshplane(home.path(), args);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(!text(&out.stderr).is_empty());
    }
    assert!(stub.seen().is_empty(), "nothing may be sent");
}

#[test]
fn revoke_sends_a_signed_delete_and_errors_keep_their_aws_names() {
    let stub = Stub::start(contract);
    let home = tempfile::tempdir().unwrap();
    let out = stub.meshplane(home.path(), &["node-tokens", "revoke", "T-1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "revoked node token T-1; its xDS streams are closed\n"
    );
    let out = stub.meshplane(home.path(), &["node-tokens", "revoke", "T-2"]);
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr),
        "error: NotFoundException: no node token T-2\n"
    );
    // A token id is one path segment, whatever it holds.
    let out = stub.meshplane(home.path(), &["node-tokens", "revoke", "a/b c"]);
    assert!(!out.status.success());
    let paths: Vec<String> = stub.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(
        paths,
        [
            "/meshplane/v1/node-tokens/T-1",
            "/meshplane/v1/node-tokens/T-2",
            "/meshplane/v1/node-tokens/a%2Fb%20c"
        ]
    );
    assert!(
        stub.seen()
            .iter()
            .all(|s| s.method == "DELETE" && s.signed.is_ok())
    );

    let denied = Stub::start(|_, _, _| {
        (
            403,
            Some("AccessDeniedException"),
            json!({"message": "User: ops is not authorized to perform: meshplane:RevokeNodeToken on resource: arn:aws:meshplane:eu-central-1:000000000000:node-token/T-1"}),
        )
    });
    let out = denied.meshplane(home.path(), &["node-tokens", "revoke", "T-1"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).starts_with(
            "error: AccessDeniedException: User: ops is not authorized to perform: meshplane:RevokeNodeToken"
        ),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn proxy_status_shows_each_streams_token() {
    let stub = Stub::start(contract);
    let home = tempfile::tempdir().unwrap();
    let out = stub.meshplane(home.path(), &["proxy-status"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "NODE", "FLAVOR", "AGE", "CDS", "EDS", "LDS", "RDS", "TOKEN", "LAST", "NACK"
        ]
    );
    assert_eq!(rows[1][0], "mesh/m/virtualNode/front");
    assert_eq!(rows[1][7], "T-1", "{table}");
    assert_eq!(
        rows[2][..4],
        ["mesh/m/virtualNode/open", "sotw", rows[2][2], "SYNCED"]
    );
    assert_eq!(rows[2][7], "-", "a stream without authentication: {table}");
}
