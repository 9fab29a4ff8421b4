//! The client signs every request (checked by the real verifier in an in-process server),
//! stays unsigned without credentials, and trusts a CA bundle over TLS.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::body::{Body, to_bytes};
use axum::http::{Request, Response, StatusCode};
use meshplane_auth::sigv4::{Payload, RequestView, verify};
use meshplane_client::{Client, ClientError, Credentials, Overrides, Settings, TokenNode};
use meshplane_model::{ResourceId, ResourceKind};
use serde_json::{Value, json};

const AKID: &str = "MPAKTESTTESTTESTTEST";
const SECRET: &str = "secret-of-the-test-key-0123456789abcdefg";

/// One request as the stub saw it: method, path and query as on the wire, JSON body, and
/// the verification (`region/service` or the exception name).
type Seen = Arc<Mutex<Vec<(String, String, Value, Result<String, String>)>>>;

/// A server that verifies each request with `meshplane_auth::sigv4` against one key, and
/// answers 403 with AWS's exception name like the real server does.
async fn stub() -> (String, Seen) {
    let seen: Seen = Arc::default();
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
            let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let target = parts.uri.path_and_query().unwrap().as_str().to_owned();
            s.lock().unwrap().push((
                parts.method.to_string(),
                target,
                json_body,
                outcome
                    .as_ref()
                    .map(|v| format!("{}/{}", v.region, v.service))
                    .map_err(|e| e.exception_name().to_owned()),
            ));
            match outcome {
                Ok(_) => Response::builder()
                    .header("content-type", "application/json")
                    .body(Body::from(r#"{"ok":true}"#))
                    .unwrap(),
                Err(e) => Response::builder()
                    .status(StatusCode::FORBIDDEN)
                    .header("x-amzn-ErrorType", e.exception_name())
                    .body(Body::from(
                        json!({ "message": e.client_message() }).to_string(),
                    ))
                    .unwrap(),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

fn creds(secret: &str) -> Credentials {
    Credentials {
        access_key_id: AKID.to_owned(),
        secret_access_key: secret.to_owned(),
        session_token: None,
    }
}

#[tokio::test]
async fn every_request_is_signed_and_verifies() {
    let (endpoint, seen) = stub().await;
    let client = Client::new(&endpoint)
        .unwrap()
        .with_credentials(creds(SECRET), "eu-west-3");
    // Names that need encoding: `:`, space, `%`, unicode.
    let id = ResourceId::child(ResourceKind::VirtualNode, "mésh:1", "a b%c");
    let _ = client.get(&id).await;
    client
        .create_access_key("dev team", json!({"Version": "2012-10-17"}))
        .await
        .unwrap();
    client.rotate_access_key("dev team", 600).await.unwrap();
    client.delete_access_key("dev team").await.unwrap();
    client.list_access_keys().await.unwrap();
    client
        .mint_node_token(
            "m",
            &TokenNode::VirtualGateway("gw".into()),
            Some("123456789012"),
            Some(3600),
        )
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 6);
    for (method, target, _, outcome) in &seen {
        assert_eq!(
            outcome,
            &Ok("eu-west-3/appmesh".to_owned()),
            "{method} {target}"
        );
    }
    assert_eq!(
        seen[0].1,
        "/v20190125/meshes/m%C3%A9sh%3A1/virtualNodes/a%20b%25c"
    );
    assert_eq!(
        seen[1].2,
        json!({"name": "dev team", "policy": {"Version": "2012-10-17"}})
    );
    assert_eq!(
        (seen[2].0.as_str(), seen[2].1.as_str()),
        ("POST", "/meshplane/v1/access-keys/dev%20team/rotate")
    );
    assert_eq!(seen[2].2, json!({"graceSeconds": 600}));
    assert_eq!(
        (seen[3].0.as_str(), seen[3].1.as_str()),
        ("DELETE", "/meshplane/v1/access-keys/dev%20team")
    );
    assert_eq!(
        seen[5].2,
        json!({"mesh": "m", "virtualGatewayName": "gw", "meshOwner": "123456789012", "ttlSeconds": 3600})
    );
}

#[tokio::test]
async fn a_wrong_secret_and_no_credentials_are_refused_with_aws_answers() {
    let (endpoint, seen) = stub().await;
    let wrong = Client::new(&endpoint)
        .unwrap()
        .with_credentials(creds("nope"), "us-east-1");
    let err = wrong.list_access_keys().await.unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 403, .. }));
    assert!(
        err.to_string()
            .contains("signature we calculated does not match"),
        "{err}"
    );
    let unsigned = Client::new(&endpoint).unwrap();
    assert!(!unsigned.is_signed());
    let err = unsigned.list_access_keys().await.unwrap_err();
    assert!(
        err.to_string().contains("Missing Authentication Token"),
        "{err}"
    );
    let outcomes: Vec<_> = seen.lock().unwrap().iter().map(|s| s.3.clone()).collect();
    assert_eq!(
        outcomes,
        vec![
            Err("InvalidSignatureException".to_owned()),
            Err("MissingAuthenticationTokenException".to_owned())
        ]
    );
}

#[tokio::test]
async fn settings_from_a_profile_sign_requests() {
    let (endpoint, seen) = stub().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("credentials"),
        format!("[meshplane]\naws_access_key_id = {AKID}\naws_secret_access_key = {SECRET}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("config"),
        format!("[profile meshplane]\nregion = ap-northeast-1\nendpoint_url = {endpoint}\n"),
    )
    .unwrap();
    let env = |k: &str| match k {
        "AWS_SHARED_CREDENTIALS_FILE" => Some(dir.path().join("credentials").display().to_string()),
        "AWS_CONFIG_FILE" => Some(dir.path().join("config").display().to_string()),
        "AWS_PROFILE" => Some("meshplane".to_owned()),
        _ => None,
    };
    let settings = Settings::resolve(&Overrides::default(), &env).unwrap();
    assert_eq!(settings.endpoint, endpoint);
    let client = Client::from_settings(&settings).unwrap();
    client.list_access_keys().await.unwrap();
    assert_eq!(
        seen.lock().unwrap()[0].3,
        Ok("ap-northeast-1/appmesh".to_owned())
    );
}

/// A one-connection HTTPS server: TLS with a certificate from a test CA (rcgen), then one
/// HTTP/1.1 request read up to its headers, answered `{"tls":true}`.
async fn tls_server() -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    meshplane_client::install_ring_provider();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        // Bounded: the test makes at most two connections (one refused by the client).
        for _ in 0..2 {
            let (tcp, _) = listener.accept().await.unwrap();
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = tls.read(&mut chunk).await.unwrap();
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = r#"{"tls":true}"#;
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            tls.write_all(resp.as_bytes()).await.unwrap();
            tls.shutdown().await.ok();
        }
    });
    (format!("https://localhost:{port}"), ca.pem())
}

#[tokio::test]
async fn https_trusts_the_ca_bundle_and_only_it() {
    let (endpoint, ca_pem) = tls_server().await;
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("ca.pem");
    std::fs::write(&bundle, &ca_pem).unwrap();
    let settings = |ca_bundle| Settings {
        endpoint: endpoint.clone(),
        credentials: None,
        region: "us-east-1".to_owned(),
        ca_bundle,
        profile: "default".to_owned(),
    };
    // Without the bundle the platform roots do not know the test CA: refused.
    let untrusting = Client::from_settings(&settings(None)).unwrap();
    let err = untrusting.list_access_keys().await.unwrap_err();
    assert!(matches!(err, ClientError::Transport(_)), "{err:?}");
    let trusting = Client::from_settings(&settings(Some(bundle))).unwrap();
    assert_eq!(
        trusting.list_access_keys().await.unwrap(),
        json!({"tls": true})
    );

    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let err = Client::from_settings(&settings(Some(not_pem))).unwrap_err();
    assert!(
        err.to_string().starts_with("cannot use the CA bundle"),
        "{err}"
    );
}
