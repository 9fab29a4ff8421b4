//! `meshplane access-keys …` as a user runs it: the real binary against an in-process stub
//! of the `/meshplane/v1/access-keys` endpoints that checks every request's SigV4 signature
//! with `meshplane_auth::sigv4` (a real verification), records the request, and answers in
//! the contract's shapes. Also: flags, local policy validation, and the credential chain.

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
const AKID: &str = "MPAKCLITESTCLITEST23";
const SECRET: &str = "cli-test-secret-0123456789-abcdefghijklm";

/// One request: method, path as on the wire, JSON body, `region` or the exception name.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    body: Value,
    outcome: Result<String, String>,
}

struct Stub {
    endpoint: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    _rt: tokio::runtime::Runtime,
}

impl Stub {
    fn start() -> Stub {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let s = seen.clone();
        let app = axum::Router::new().fallback(move |req: Request<Body>| {
            let s = s.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = to_bytes(body, 1 << 20).await.unwrap();
                let keys = HashMap::from([(AKID.to_owned(), SECRET.to_owned())]);
                let outcome = verify(
                    &RequestView::from_parts(&parts),
                    Payload::Bytes(&body),
                    SystemTime::now(),
                    &keys,
                );
                let path = parts.uri.path().to_owned();
                let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                s.lock().unwrap().push(Seen {
                    method: parts.method.to_string(),
                    path: path.clone(),
                    body: json_body.clone(),
                    outcome: outcome
                        .as_ref()
                        .map(|v| v.region.clone())
                        .map_err(|e| e.exception_name().to_owned()),
                });
                if let Err(e) = outcome {
                    return Response::builder()
                        .status(StatusCode::FORBIDDEN)
                        .header("x-amzn-ErrorType", e.exception_name())
                        .body(Body::from(
                            json!({ "message": e.client_message() }).to_string(),
                        ))
                        .unwrap();
                }
                let answer = match (parts.method.as_str(), path.as_str()) {
                    ("POST", "/meshplane/v1/access-keys") => json!({
                        "accessKeyId": "MPAKNEWKEYNEWKEY2345",
                        "secretAccessKey": "the-new-secret",
                        "name": json_body["name"],
                        "createdAt": 1_796_554_800,
                    }),
                    ("GET", "/meshplane/v1/access-keys") => json!({ "accessKeys": [
                        {"accessKeyId": AKID, "name": "admin", "createdAt": 1, "policy": "{}"},
                        {"accessKeyId": "MPAKNEWKEYNEWKEY2345", "name": "dev", "createdAt": 2, "policy": "{}"},
                    ]}),
                    ("DELETE", "/meshplane/v1/access-keys/dev") => {
                        json!({"accessKeyId": "MPAKNEWKEYNEWKEY2345", "name": "dev"})
                    }
                    ("POST", "/meshplane/v1/access-keys/dev/rotate") => json!({
                        "accessKeyId": "MPAKNEWKEYNEWKEY2345",
                        "secretAccessKey": "the-rotated-secret",
                    }),
                    _ => {
                        return Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .header("x-amzn-ErrorType", "NotFoundException")
                            .body(Body::from(r#"{"message":"no such key"}"#))
                            .unwrap();
                    }
                };
                Response::builder()
                    .header("content-type", "application/json")
                    .body(Body::from(answer.to_string()))
                    .unwrap()
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
}

/// Runs the binary with a clean AWS environment plus `env`.
fn meshplane(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("HOME", home);
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_CONFIG_FILE",
        "AWS_CA_BUNDLE",
        "AWS_ENDPOINT_URL",
        "MESHPLANE_ENDPOINT",
        "MESHPLANE_CA_BUNDLE",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run meshplane")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const ENV_KEYS: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", AKID),
    ("AWS_SECRET_ACCESS_KEY", SECRET),
    ("AWS_REGION", "eu-central-1"),
];

const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"appmesh:*","Resource":"arn:aws:appmesh:*:*:mesh/dev/*"}]}"#;

#[test]
fn create_sends_a_signed_request_and_prints_the_secret_once_with_profile_blocks() {
    let stub = Stub::start();
    let home = tempfile::tempdir().unwrap();
    let policy = home.path().join("dev.json");
    std::fs::write(&policy, POLICY).unwrap();
    let out = meshplane(
        home.path(),
        &[
            "access-keys",
            "create",
            "--name",
            "dev",
            "--policy",
            policy.to_str().unwrap(),
            "--endpoint",
            &stub.endpoint,
        ],
        ENV_KEYS,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.matches("the-new-secret").count(), 1, "{stdout}");
    for expected in [
        "access key dev (MPAKNEWKEYNEWKEY2345) created",
        "[dev]\naws_access_key_id = MPAKNEWKEYNEWKEY2345\naws_secret_access_key = the-new-secret\n",
        &format!(
            "[profile dev]\nregion = eu-central-1\nendpoint_url = {}\n",
            stub.endpoint
        ),
    ] {
        assert!(stdout.contains(expected), "{expected:?} not in:\n{stdout}");
    }
    let seen = stub.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/meshplane/v1/access-keys");
    assert_eq!(seen[0].outcome, Ok("eu-central-1".to_owned()));
    assert_eq!(
        seen[0].body,
        json!({"name": "dev", "policy": serde_json::from_str::<Value>(POLICY).unwrap()})
    );
}

#[test]
fn a_malformed_policy_is_refused_locally_with_its_path() {
    let stub = Stub::start();
    let home = tempfile::tempdir().unwrap();
    let policy = home.path().join("bad.json");
    std::fs::write(
        &policy,
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"appmesh:*","Resource":"*"},{"Effect":"allow","Action":"appmesh:*","Resource":"*"}]}"#,
    )
    .unwrap();
    let args = |p: &str| {
        vec![
            "access-keys".to_owned(),
            "create".to_owned(),
            "--name".to_owned(),
            "dev".to_owned(),
            "--policy".to_owned(),
            p.to_owned(),
            "--endpoint".to_owned(),
            stub.endpoint.clone(),
        ]
    };
    let a = args(policy.to_str().unwrap());
    let out = meshplane(
        home.path(),
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        ENV_KEYS,
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("the policy in {} is not valid", policy.display()))
            && stderr.contains("Statement[1].Effect"),
        "{stderr}"
    );
    let missing = home.path().join("missing.json");
    let a = args(missing.to_str().unwrap());
    let out = meshplane(
        home.path(),
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        ENV_KEYS,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!(
            "cannot read the policy file {}",
            missing.display()
        )),
        "{}",
        text(&out.stderr)
    );
    assert!(stub.seen().is_empty(), "nothing may be sent");
}

#[test]
fn list_delete_and_rotate_with_a_profile() {
    let stub = Stub::start();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join(".aws")).unwrap();
    std::fs::write(
        home.path().join(".aws/credentials"),
        format!("[ops]\naws_access_key_id = {AKID}\naws_secret_access_key = {SECRET}\n"),
    )
    .unwrap();
    std::fs::write(
        home.path().join(".aws/config"),
        format!(
            "[profile ops]\nregion = sa-east-1\nendpoint_url = {}\n",
            stub.endpoint
        ),
    )
    .unwrap();
    let h = home.path();
    // The global flags go before or after the sub-verb.
    let out = meshplane(h, &["access-keys", "--profile", "ops", "list"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.starts_with(
            "NAME   ACCESS KEY ID         CREATED\nadmin  MPAKCLITESTCLITEST23  1970-01-01T00:00:01Z\n"
        ),
        "{table}"
    );
    let out = meshplane(
        h,
        &["access-keys", "delete", "dev", "--profile", "ops"],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "deleted access key dev (MPAKNEWKEYNEWKEY2345)\n"
    );
    let out = meshplane(
        h,
        &["access-keys", "rotate", "dev", "--grace", "10m"],
        &[("AWS_PROFILE", "ops")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("the-rotated-secret"));
    assert!(text(&out.stdout).contains("works for 600s more"));
    let seen = stub.seen();
    let shape: Vec<(&str, &str, &Value)> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.path.as_str(), &s.body))
        .collect();
    assert_eq!(
        shape,
        vec![
            ("GET", "/meshplane/v1/access-keys", &Value::Null),
            ("DELETE", "/meshplane/v1/access-keys/dev", &Value::Null),
            (
                "POST",
                "/meshplane/v1/access-keys/dev/rotate",
                &json!({"graceSeconds": 600})
            ),
        ]
    );
    assert!(seen.iter().all(|s| s.outcome == Ok("sa-east-1".to_owned())));

    // Too long a grace never reaches the server; neither does an unknown profile.
    let out = meshplane(h, &["access-keys", "rotate", "dev", "--grace", "25h"], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("longer than 24h"),
        "{}",
        text(&out.stderr)
    );
    let out = meshplane(h, &["access-keys", "list", "--profile", "ghost"], &[]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("the config profile (ghost) could not be found"));
    assert_eq!(stub.seen().len(), 3);
}

#[test]
fn without_credentials_requests_go_unsigned_and_the_server_says_so() {
    let stub = Stub::start();
    let home = tempfile::tempdir().unwrap();
    let out = meshplane(
        home.path(),
        &["access-keys", "list", "--endpoint", &stub.endpoint],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Missing Authentication Token"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        stub.seen()[0].outcome,
        Err("MissingAuthenticationTokenException".to_owned())
    );
}
