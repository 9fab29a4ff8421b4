//! The signer against `aws-sigv4` (byte-equal headers) and against the verifier (round trip).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials as AwsCredentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign as aws_sign,
};
use aws_sigv4::sign::v4;
use http::HeaderMap;
use meshplane_auth::sign::{Credentials, SigningParams, sign};
use meshplane_auth::sigv4::{InvalidReason, Payload, RequestView, SigV4Error, verify};

const AKID: &str = "MPAKABCDEFGHIJKLMNOP";
const SECRET: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEy";

/// 2026-12-06T11:00:00Z.
fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_796_554_800)
}

fn creds(token: Option<&str>) -> Credentials {
    Credentials {
        access_key_id: AKID.to_owned(),
        secret_access_key: SECRET.to_owned(),
        session_token: token.map(str::to_owned),
    }
}

struct Case<'a> {
    method: &'a str,
    url: &'a str,
    headers: &'a [(&'a str, &'a str)],
    body: &'a [u8],
    service: &'a str,
    token: Option<&'a str>,
}

/// What `aws-sigv4` (the Rust SDK's signer) adds, with the content hash header on as ours.
fn reference(c: &Case<'_>) -> Vec<(String, String)> {
    let identity = AwsCredentials::new(AKID, SECRET, c.token.map(str::to_owned), None, "t").into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-west-2")
        .name(c.service)
        .time(t0())
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let signable = SignableRequest::new(
        c.method,
        c.url,
        c.headers.iter().copied(),
        SignableBody::Bytes(c.body),
    )
    .unwrap();
    let (instructions, _) = aws_sign(signable, &params).unwrap().into_parts();
    let mut out: Vec<(String, String)> = instructions
        .headers()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_owned()))
        .collect();
    out.sort();
    out
}

fn ours(c: &Case<'_>) -> Vec<(String, String)> {
    let mut headers = HeaderMap::new();
    for (n, v) in c.headers {
        headers.append(
            http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let uri: http::Uri = c.url.parse().unwrap();
    let params = SigningParams {
        region: "us-west-2",
        service: c.service,
        now: t0(),
    };
    let mut out: Vec<(String, String)> =
        sign(c.method, &uri, &headers, c.body, &creds(c.token), &params)
            .unwrap()
            .into_iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
            .collect();
    out.sort();
    out
}

/// Signs with ours, then verifies the request as the server sees it.
fn roundtrip(c: &Case<'_>, secret_on_server: &str, now: SystemTime) -> Result<(), SigV4Error> {
    let uri: http::Uri = c.url.parse().unwrap();
    let mut req = http::Request::builder().method(c.method).uri(&uri);
    for (n, v) in c.headers {
        req = req.header(*n, *v);
    }
    let host = uri.authority().unwrap().as_str().replace(":443", "");
    req = req.header("host", host);
    for (n, v) in ours(c) {
        req = req.header(n, v);
    }
    let req = req.body(c.body.to_vec()).unwrap();
    let keys = HashMap::from([(AKID.to_owned(), secret_on_server.to_owned())]);
    verify(
        &RequestView::from_request(&req),
        Payload::Bytes(req.body()),
        now,
        &keys,
    )
    .map(|_| ())
}

fn cases() -> Vec<Case<'static>> {
    let json: &'static [(&str, &str)] = &[("content-type", "application/json")];
    vec![
        Case {
            method: "GET",
            url: "http://127.0.0.1:9080/v20190125/meshes",
            headers: &[],
            body: b"",
            service: "appmesh",
            token: None,
        },
        Case {
            method: "GET",
            url: "http://127.0.0.1:9080/v20190125/meshes?limit=10&nextToken=a%2Bb%3D%3D",
            headers: &[],
            body: b"",
            service: "appmesh",
            token: Some("FwoGZXIvYXdzEJr//session+token="),
        },
        // A route name with `:`, a space and `%`, a mesh name in unicode, as encode_segment sends them.
        Case {
            method: "PUT",
            url: "http://127.0.0.1:9080/v20190125/meshes/m%C3%A9sh/virtualRouter/r/routes/a%3Ab%20c%25d",
            headers: json,
            body: br#"{"spec":{}}"#,
            service: "appmesh",
            token: None,
        },
        // `:` left raw in the path, an https endpoint on its default port.
        Case {
            method: "DELETE",
            url: "https://mesh.example:443/v20190125/meshes/a:b/virtualNodes/x~y",
            headers: &[],
            body: b"",
            service: "appmesh",
            token: None,
        },
        // Query values needing encoding, repeated keys, a non-default https port.
        Case {
            method: "GET",
            url: "https://cp.example:8443/v20190125/meshes/m/virtualNodes?b=2&b=1&q=%C3%A9%20x&meshOwner=123456789012",
            headers: &[],
            body: b"",
            service: "appmesh",
            token: None,
        },
        Case {
            method: "POST",
            url: "http://127.0.0.1:9080/meshplane/v1/access-keys",
            headers: &[
                ("content-type", "application/json"),
                ("x-custom", "  a   b  "),
            ],
            body: br#"{"name":"dev","policy":{}}"#,
            service: "appmesh",
            token: None,
        },
        Case {
            method: "POST",
            url: "http://127.0.0.1:9080/",
            headers: &[
                ("content-type", "application/x-amz-json-1.1"),
                (
                    "x-amz-target",
                    "Route53AutoNaming_v20170314.RegisterInstance",
                ),
            ],
            body: br#"{"ServiceId":"srv-1"}"#,
            service: "servicediscovery",
            token: None,
        },
    ]
}

#[test]
fn headers_are_byte_equal_to_aws_sigv4() {
    for c in cases() {
        assert_eq!(ours(&c), reference(&c), "{} {}", c.method, c.url);
    }
}

#[test]
fn every_signed_request_verifies() {
    for c in cases() {
        assert_eq!(
            roundtrip(&c, SECRET, t0() + Duration::from_secs(60)),
            Ok(()),
            "{}",
            c.url
        );
    }
}

#[test]
fn the_verifier_refuses_a_wrong_secret_and_an_old_signature() {
    let c = &cases()[2];
    assert_eq!(
        roundtrip(c, "another-secret", t0()),
        Err(SigV4Error::InvalidSignature(
            InvalidReason::SignatureMismatch
        ))
    );
    let err = roundtrip(c, SECRET, t0() + Duration::from_secs(20 * 60)).unwrap_err();
    assert_eq!(err.exception_name(), "InvalidSignatureException");
}

#[test]
fn a_uri_without_host_is_refused() {
    let uri: http::Uri = "/v20190125/meshes".parse().unwrap();
    let params = SigningParams {
        region: "us-west-2",
        service: "appmesh",
        now: t0(),
    };
    assert!(sign("GET", &uri, &HeaderMap::new(), b"", &creds(None), &params).is_err());
}

#[test]
fn debug_never_shows_the_secret() {
    let text = format!("{:?}", creds(Some("tok")));
    assert!(!text.contains(SECRET) && !text.contains("tok\""), "{text}");
}
