//! The SigV4 verifier against the real signers (`aws-sigv4`, botocore) and every refusal.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use http::{HeaderValue, StatusCode};
use meshplane_auth::sigv4::{
    InvalidReason, Payload, RequestView, SigV4Error, Verified, Verifier, verify,
};
use proptest::prelude::*;

const AKID: &str = "AKIDMESHPLANE0001";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const ENDPOINT: &str = "http://127.0.0.1:9080";
/// A mesh name that needs encoding, as the Rust SDK sends it (label-encoded).
const MESH_SDK: &str = "/v20190125/meshes/a%2Fb%3Ac%2Bd%C3%A9";
/// The same name with `:` and `+` left raw, as the issue's example and curl users send it.
const MESH_RAW: &str = "/v20190125/meshes/a%2Fb:c+d%C3%A9";

/// 2026-12-06T11:00:00Z.
fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_796_554_800)
}

fn keys() -> HashMap<String, String> {
    HashMap::from([
        (AKID.to_owned(), SECRET.to_owned()),
        (
            "AKIDBOTOCORE0001".to_owned(),
            "botocore/Secret+Key/0001".to_owned(),
        ),
    ])
}

struct Sign<'a> {
    service: &'a str,
    method: &'a str,
    /// Path and query, appended to [`ENDPOINT`].
    target: &'a str,
    headers: &'a [(&'a str, &'a str)],
    body: &'a [u8],
    presign: Option<Duration>,
    checksum_header: bool,
    token: Option<&'a str>,
    /// Whether the request carries a `Host` header (HTTP/1.1) or only the URI authority.
    host_header: bool,
}

impl Default for Sign<'_> {
    fn default() -> Self {
        Self {
            service: "appmesh",
            method: "GET",
            target: "/v20190125/meshes",
            headers: &[],
            body: b"",
            presign: None,
            checksum_header: false,
            token: None,
            host_header: true,
        }
    }
}

/// Signs with `aws-sigv4`, the signer inside the Rust SDK, at [`t0`].
fn aws_sign(s: &Sign<'_>) -> http::Request<Vec<u8>> {
    let uri = format!("{ENDPOINT}{}", s.target);
    let identity = Credentials::new(AKID, SECRET, s.token.map(str::to_owned), None, "test").into();
    let mut settings = SigningSettings::default();
    if let Some(expires) = s.presign {
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(expires);
    }
    if s.checksum_header {
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-west-2")
        .name(s.service)
        .time(t0())
        .settings(settings)
        .build()
        .expect("signing params")
        .into();
    let signable = SignableRequest::new(
        s.method,
        uri.as_str(),
        s.headers.iter().copied(),
        SignableBody::Bytes(s.body),
    )
    .expect("signable request");
    let (instructions, _) = sign(signable, &params).expect("sign").into_parts();
    let mut req = http::Request::builder().method(s.method).uri(&uri);
    for (name, value) in s.headers {
        req = req.header(*name, *value);
    }
    if s.host_header {
        req = req.header("host", "127.0.0.1:9080");
    }
    let mut req = req.body(s.body.to_vec()).expect("request");
    instructions.apply_to_request_http1x(&mut req);
    req
}

fn check(req: &http::Request<Vec<u8>>, now: SystemTime) -> Result<Verified, SigV4Error> {
    verify(
        &RequestView::from_request(req),
        Payload::Bytes(req.body()),
        now,
        &keys(),
    )
}

fn invalid(reason: InvalidReason) -> Result<Verified, SigV4Error> {
    Err(SigV4Error::InvalidSignature(reason))
}

#[test]
fn accepts_every_request_aws_sigv4_signs() {
    let body = br#"{"spec":{"egressFilter":{"type":"DROP_ALL"}}}"#;
    let mesh_vn = format!("{MESH_SDK}/virtualNodes");
    let raw_vn = format!("{MESH_RAW}/virtualNodes");
    let listing = format!("{MESH_SDK}/virtualNodes?limit=10&nextToken=a%2Bb");
    let raw_listing = format!("{raw_vn}?limit=10&nextToken=a%2Bb");
    let json = [("content-type", "application/json")];
    let spaced = [
        ("x-custom", "  a   b  "),
        ("content-type", "application/json"),
    ];
    let cases = [
        Sign::default(),
        Sign {
            target: "/v20190125/meshes?limit=10&nextToken=a%2Bb",
            ..Sign::default()
        },
        Sign {
            method: "PUT",
            target: MESH_SDK,
            headers: &json,
            body,
            ..Sign::default()
        },
        Sign {
            method: "PUT",
            target: MESH_RAW,
            headers: &spaced,
            body,
            host_header: false,
            ..Sign::default()
        },
        Sign {
            target: &mesh_vn,
            ..Sign::default()
        },
        Sign {
            target: &raw_listing,
            token: Some("session-token"),
            ..Sign::default()
        },
        Sign {
            method: "DELETE",
            target: "/v20190125/meshes/m/virtualRouters/r%20one/routes/x~y",
            checksum_header: true,
            ..Sign::default()
        },
        Sign {
            target: &listing,
            presign: Some(Duration::from_secs(300)),
            ..Sign::default()
        },
        Sign {
            target: &raw_vn,
            presign: Some(Duration::from_secs(900)),
            host_header: false,
            ..Sign::default()
        },
        Sign {
            service: "servicediscovery",
            method: "POST",
            target: "/",
            headers: &[
                ("content-type", "application/x-amz-json-1.1"),
                (
                    "x-amz-target",
                    "Route53AutoNaming_v20170314.RegisterInstance",
                ),
            ],
            body: br#"{"ServiceId":"srv-1","InstanceId":"i/1"}"#,
            ..Sign::default()
        },
        Sign {
            service: "servicediscovery",
            method: "GET",
            target: "/?Action=List&a=%C3%A9",
            presign: Some(Duration::from_secs(60)),
            ..Sign::default()
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        let req = aws_sign(case);
        let verified = check(&req, t0() + Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("case {i} ({} {}): {e}", case.method, case.target));
        assert_eq!(verified.access_key_id, AKID, "case {i}");
        assert_eq!(verified.region, "us-west-2", "case {i}");
        assert_eq!(verified.service, case.service, "case {i}");
        assert_eq!(verified.signed_at, t0(), "case {i}");
        assert_eq!(verified.presigned, case.presign.is_some(), "case {i}");
        assert_eq!(
            verified.session_token.as_deref(),
            case.token,
            "case {i}: the token is recorded"
        );
        // The caller may hand over the body's hash instead of the body.
        let hash = sha256_hex(req.body());
        let by_hash = verify(
            &RequestView::from_request(&req),
            Payload::Sha256Hex(&hash),
            t0(),
            &keys(),
        );
        assert_eq!(by_hash.as_ref().ok(), Some(&verified), "case {i}");
        // And the server's view of a request, `http::request::Parts`, verifies the same.
        let (parts, body) = req.into_parts();
        let by_parts = verify(
            &RequestView::from_parts(&parts),
            Payload::Bytes(&body),
            t0(),
            &keys(),
        );
        assert_eq!(by_parts.ok(), Some(verified), "case {i}");
    }
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn venv_python() -> std::path::PathBuf {
    let venv = std::env::var_os("MESHPLANE_VENV").unwrap_or_else(|| {
        panic!(
            "MESHPLANE_VENV is not set: point it at a virtualenv with boto3/botocore \
             (export MESHPLANE_VENV=/work/main/.venv)"
        )
    });
    let python = std::path::Path::new(&venv).join("bin/python");
    assert!(
        python.exists(),
        "{} does not exist: MESHPLANE_VENV must be a virtualenv with boto3/botocore",
        python.display()
    );
    python
}

#[test]
fn accepts_every_request_botocore_signs() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/botocore_sign.py");
    let out = std::process::Command::new(venv_python())
        .arg(script)
        .output()
        .expect("run the botocore signing script");
    assert!(
        out.status.success(),
        "botocore_sign.py failed (is botocore installed in MESHPLANE_VENV?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cases: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(cases.len(), 8);
    let mut presigned = 0;
    for case in &cases {
        let url = case["url"].as_str().unwrap();
        let mut req = http::Request::builder()
            .method(case["method"].as_str().unwrap())
            .uri(url)
            .header("host", "127.0.0.1:9080");
        for (name, value) in case["headers"].as_object().unwrap() {
            req = req.header(name.as_str(), value.as_str().unwrap());
        }
        let req = req
            .body(case["body"].as_str().unwrap().as_bytes().to_vec())
            .unwrap();
        let verified = check(&req, t0() + Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("botocore {url}: {e}"));
        assert_eq!(verified.access_key_id, "AKIDBOTOCORE0001");
        assert_eq!(verified.service, case["service"].as_str().unwrap());
        presigned += usize::from(verified.presigned);
        // One byte of body or path changed is refused.
        if !req.body().is_empty() {
            let mut tampered = req.clone();
            tampered.body_mut()[0] ^= 1;
            assert_eq!(
                check(&tampered, t0()),
                invalid(InvalidReason::SignatureMismatch),
                "{url}"
            );
        }
    }
    assert_eq!(presigned, 2, "both presigned cases verified as presigned");
}

#[test]
fn refuses_unknown_key_and_wrong_secret() {
    let req = aws_sign(&Sign::default());
    let view = RequestView::from_request(&req);
    let empty: HashMap<String, String> = HashMap::new();
    assert_eq!(
        verify(&view, Payload::Bytes(b""), t0(), &empty),
        Err(SigV4Error::UnrecognizedClient)
    );
    let wrong = HashMap::from([(AKID.to_owned(), format!("{SECRET}x"))]);
    assert_eq!(
        verify(&view, Payload::Bytes(b""), t0(), &wrong),
        invalid(InvalidReason::SignatureMismatch)
    );
}

#[test]
fn refuses_tampered_body_path_query_and_headers() {
    let body = br#"{"spec":{}}"#;
    let target = format!("{MESH_SDK}?limit=10");
    let json = [("content-type", "application/json")];
    let req = aws_sign(&Sign {
        method: "PUT",
        target: &target,
        headers: &json,
        body,
        ..Sign::default()
    });
    assert!(check(&req, t0()).is_ok());

    let mut tampered = req.clone();
    *tampered.body_mut() = br#"{"spec":{"x":1}}"#.to_vec();
    assert_eq!(
        check(&tampered, t0()),
        invalid(InvalidReason::SignatureMismatch),
        "body"
    );

    for uri in [
        format!("{ENDPOINT}/v20190125/meshes/a%2Fb%3Ac%2Bd%C3%A8?limit=10"),
        format!("{ENDPOINT}/v20190125/meshes/prod?limit=10"),
        format!("{ENDPOINT}{MESH_SDK}?limit=11"),
        format!("{ENDPOINT}{MESH_SDK}?limit=10&meshOwner=1"),
        format!("{ENDPOINT}{MESH_SDK}"),
    ] {
        let mut tampered = req.clone();
        *tampered.uri_mut() = uri.parse().unwrap();
        assert_eq!(
            check(&tampered, t0()),
            invalid(InvalidReason::SignatureMismatch),
            "{uri}"
        );
    }

    let mut tampered = req.clone();
    *tampered.method_mut() = http::Method::POST;
    assert_eq!(
        check(&tampered, t0()),
        invalid(InvalidReason::SignatureMismatch),
        "method"
    );

    let mut tampered = req.clone();
    tampered
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("text/plain"));
    assert_eq!(
        check(&tampered, t0()),
        invalid(InvalidReason::SignatureMismatch),
        "signed header value"
    );

    let mut tampered = req.clone();
    tampered
        .headers_mut()
        .insert("host", HeaderValue::from_static("evil.example:9080"));
    assert_eq!(
        check(&tampered, t0()),
        invalid(InvalidReason::SignatureMismatch),
        "host"
    );

    let mut tampered = req.clone();
    tampered.headers_mut().remove("content-type");
    assert_eq!(
        check(&tampered, t0()),
        invalid(InvalidReason::SignedHeaderAbsent),
        "signed header removed"
    );
}

/// Replaces part of the Authorization header of a signed request.
fn with_authorization(
    req: &http::Request<Vec<u8>>,
    edit: impl Fn(&str) -> String,
) -> http::Request<Vec<u8>> {
    let mut req = req.clone();
    let value = edit(req.headers()["authorization"].to_str().unwrap());
    req.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&value).expect("header value"),
    );
    req
}

#[test]
fn refuses_when_host_is_not_signed() {
    let req = aws_sign(&Sign::default());
    let auth = req.headers()["authorization"].to_str().unwrap().to_owned();
    assert!(auth.contains("SignedHeaders=host;x-amz-date,"), "{auth}");
    let unsigned_host =
        with_authorization(&req, |a| a.replace("SignedHeaders=host;", "SignedHeaders="));
    assert_eq!(
        check(&unsigned_host, t0()),
        invalid(InvalidReason::HostNotSigned)
    );

    let presigned = aws_sign(&Sign {
        presign: Some(Duration::from_secs(60)),
        ..Sign::default()
    });
    let mut no_host = presigned.clone();
    let uri = presigned
        .uri()
        .to_string()
        .replace("X-Amz-SignedHeaders=host", "X-Amz-SignedHeaders=x-amz-date");
    *no_host.uri_mut() = uri.parse().unwrap();
    assert_eq!(check(&no_host, t0()), invalid(InvalidReason::HostNotSigned));
}

#[test]
fn refuses_requests_outside_fifteen_minutes() {
    let req = aws_sign(&Sign::default());
    let minute = Duration::from_secs(60);
    assert!(check(&req, t0() + 14 * minute).is_ok());
    assert!(check(&req, t0() - 14 * minute).is_ok());
    let old = check(&req, t0() + 20 * minute).unwrap_err();
    assert_eq!(
        old,
        SigV4Error::SignatureExpired {
            signed_at: "20261206T110000Z".into(),
            earliest: "20261206T110500Z".into(),
            now: "20261206T112000Z".into(),
            skew_minutes: 15,
        }
    );
    assert_eq!(old.exception_name(), "InvalidSignatureException");
    assert!(
        old.client_message()
            .starts_with("Signature expired: 20261206T110000Z")
    );
    let future = check(&req, t0() - 20 * minute).unwrap_err();
    assert_eq!(
        future,
        SigV4Error::SignatureNotYetCurrent {
            signed_at: "20261206T110000Z".into(),
            latest: "20261206T105500Z".into(),
            now: "20261206T104000Z".into(),
            skew_minutes: 15,
        }
    );
    assert_eq!(
        future.client_message(),
        "Signature not yet current: 20261206T110000Z is still later than 20261206T105500Z \
         (20261206T104000Z + 15 min.)"
    );
    assert_eq!(future.exception_name(), "InvalidSignatureException");

    // A shorter window is honoured.
    let strict = Verifier {
        max_skew: Duration::from_secs(60),
        ..Verifier::default()
    };
    let view = RequestView::from_request(&req);
    assert!(matches!(
        strict.verify(&view, Payload::Bytes(b""), t0() + 2 * minute, &keys()),
        Err(SigV4Error::SignatureExpired { .. })
    ));
}

#[test]
fn refuses_presigned_urls_past_expiry() {
    let req = aws_sign(&Sign {
        target: "/v20190125/meshes?limit=10",
        presign: Some(Duration::from_secs(300)),
        ..Sign::default()
    });
    assert!(req.headers().get("authorization").is_none());
    // Replayed within its life it works, even after the 15-minute header window would not.
    assert!(check(&req, t0() + Duration::from_secs(300)).is_ok());
    assert_eq!(
        check(&req, t0() + Duration::from_secs(301)),
        Err(SigV4Error::PresignedUrlExpired {
            expired_at: "20261206T110500Z".into(),
            now: "20261206T110501Z".into()
        })
    );
    let long = aws_sign(&Sign {
        presign: Some(Duration::from_secs(3600)),
        ..Sign::default()
    });
    assert!(check(&long, t0() + Duration::from_secs(3000)).is_ok());
    assert!(matches!(
        check(&long, t0() - Duration::from_secs(20 * 60)),
        Err(SigV4Error::SignatureNotYetCurrent { .. })
    ));
    // Stretching X-Amz-Expires breaks the signature; beyond 7 days is refused outright.
    for (expires, want) in [
        ("3601", invalid(InvalidReason::SignatureMismatch)),
        ("604801", invalid(InvalidReason::Malformed("X-Amz-Expires"))),
        ("0", invalid(InvalidReason::Malformed("X-Amz-Expires"))),
        ("-1", invalid(InvalidReason::Malformed("X-Amz-Expires"))),
        ("1e3", invalid(InvalidReason::Malformed("X-Amz-Expires"))),
    ] {
        let mut stretched = long.clone();
        let uri = long
            .uri()
            .to_string()
            .replace("X-Amz-Expires=3600", &format!("X-Amz-Expires={expires}"));
        *stretched.uri_mut() = uri.parse().unwrap();
        assert_eq!(check(&stretched, t0()), want, "{expires}");
    }
}

#[test]
fn refuses_missing_and_doubled_authentication() {
    let req = aws_sign(&Sign::default());
    let mut bare = req.clone();
    bare.headers_mut().remove("authorization");
    assert_eq!(
        check(&bare, t0()),
        Err(SigV4Error::MissingAuthenticationToken)
    );
    let unsigned = http::Request::builder()
        .uri(format!("{ENDPOINT}/v20190125/meshes"))
        .body(Vec::new())
        .unwrap();
    assert_eq!(
        check(&unsigned, t0()),
        Err(SigV4Error::MissingAuthenticationToken)
    );

    let presigned = aws_sign(&Sign {
        presign: Some(Duration::from_secs(60)),
        ..Sign::default()
    });
    let mut both = presigned.clone();
    both.headers_mut()
        .insert("authorization", req.headers()["authorization"].clone());
    assert_eq!(check(&both, t0()), invalid(InvalidReason::TwoAuthForms));

    let mut twice = req.clone();
    twice
        .headers_mut()
        .append("authorization", req.headers()["authorization"].clone());
    assert_eq!(
        check(&twice, t0()),
        invalid(InvalidReason::Malformed("authorization: repeated header"))
    );
}

#[test]
fn checks_the_payload_hash_header() {
    let body = br#"{"spec":{}}"#;
    let req = aws_sign(&Sign {
        method: "PUT",
        target: MESH_SDK,
        body,
        checksum_header: true,
        ..Sign::default()
    });
    assert!(check(&req, t0()).is_ok());
    // The header is signed but the body is another: refused before the signature.
    let mut tampered = req.clone();
    *tampered.body_mut() = b"{}".to_vec();
    assert_eq!(
        check(&tampered, t0()),
        invalid(InvalidReason::PayloadHashMismatch)
    );
    let mut unsigned = req.clone();
    unsigned.headers_mut().insert(
        "x-amz-content-sha256",
        HeaderValue::from_static("UNSIGNED-PAYLOAD"),
    );
    assert_eq!(
        check(&unsigned, t0()),
        invalid(InvalidReason::UnsignedPayload)
    );
    // A wrong precomputed hash is a signature mismatch when there is no header.
    let plain = aws_sign(&Sign {
        method: "PUT",
        target: MESH_SDK,
        body,
        ..Sign::default()
    });
    assert_eq!(
        verify(
            &RequestView::from_request(&plain),
            Payload::Sha256Hex(&"0".repeat(64)),
            t0(),
            &keys()
        ),
        invalid(InvalidReason::SignatureMismatch)
    );
}

#[test]
fn refuses_malformed_authorization_headers() {
    let req = aws_sign(&Sign::default());
    let good = req.headers()["authorization"].to_str().unwrap().to_owned();
    let sig = good.rsplit("Signature=").next().unwrap().to_owned();
    let cases: Vec<(String, &'static str)> = vec![
        ("Bearer abc".into(), "authorization: algorithm"),
        (
            good.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512"),
            "authorization: algorithm",
        ),
        (
            good.replace(", Signature=", ", Sig=").clone(),
            "authorization: component",
        ),
        (
            good.replace(&format!(", Signature={sig}"), ""),
            "authorization: Signature",
        ),
        (
            format!("{good}, Signature={sig}"),
            "authorization: repeated component",
        ),
        (good.replace("/aws4_request", "/aws4"), "credential"),
        (good.replace("/20261206/", "/2026126/"), "credential"),
        (good.replace("us-west-2/", ""), "credential"),
        (
            good.replace("host;x-amz-date", "x-amz-date;host"),
            "signed headers",
        ),
        (
            good.replace("host;x-amz-date", "Host;x-amz-date"),
            "signed headers",
        ),
        (
            good.replace("host;x-amz-date", "host;;x-amz-date"),
            "signed headers",
        ),
        (good.replace(&sig, &sig.to_uppercase()), "signature"),
        (good.replace(&sig, &sig[..63]), "signature"),
        ("AWS4-HMAC-SHA256".into(), "authorization: algorithm"),
        ("AWS4-HMAC-SHA256 ".into(), "authorization: component"),
    ];
    for (value, what) in cases {
        let bad = with_authorization(&req, |_| value.clone());
        assert_eq!(
            check(&bad, t0()),
            invalid(InvalidReason::Malformed(what)),
            "{value}"
        );
    }
    // The scope's date must be the request's date.
    let bad = with_authorization(&req, |a| a.replace("/20261206/", "/20261205/"));
    assert_eq!(check(&bad, t0()), invalid(InvalidReason::ScopeDateMismatch));
    // A missing or garbled X-Amz-Date.
    let mut no_date = req.clone();
    no_date.headers_mut().remove("x-amz-date");
    assert_eq!(
        check(&no_date, t0()),
        invalid(InvalidReason::Malformed("x-amz-date"))
    );
    // The Date header is the documented fallback (the signature then no longer matches,
    // since x-amz-date is signed, but the request is parsed as far as the signature).
    no_date.headers_mut().insert(
        "date",
        HeaderValue::from_static("Sun, 06 Dec 2026 11:00:00 GMT"),
    );
    assert_eq!(
        check(&no_date, t0()),
        invalid(InvalidReason::SignedHeaderAbsent)
    );
}

#[test]
fn error_table_matches_aws() {
    let table = [
        (
            SigV4Error::MissingAuthenticationToken,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ),
        (
            SigV4Error::UnrecognizedClient,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ),
        (
            SigV4Error::InvalidSignature(InvalidReason::SignatureMismatch),
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided.",
        ),
        (
            SigV4Error::InvalidSignature(InvalidReason::Malformed("credential")),
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided.",
        ),
        (
            SigV4Error::InvalidSignature(InvalidReason::PayloadHashMismatch),
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided.",
        ),
        (
            SigV4Error::SignatureExpired {
                signed_at: "20261206T110000Z".into(),
                earliest: "20261206T110500Z".into(),
                now: "20261206T112000Z".into(),
                skew_minutes: 15,
            },
            "InvalidSignatureException",
            "Signature expired: 20261206T110000Z is now earlier than 20261206T110500Z \
             (20261206T112000Z - 15 min.)",
        ),
        (
            SigV4Error::SignatureNotYetCurrent {
                signed_at: "20261206T110000Z".into(),
                latest: "20261206T105500Z".into(),
                now: "20261206T104000Z".into(),
                skew_minutes: 15,
            },
            "InvalidSignatureException",
            "Signature not yet current: 20261206T110000Z is still later than 20261206T105500Z \
             (20261206T104000Z + 15 min.)",
        ),
        (
            SigV4Error::PresignedUrlExpired {
                expired_at: "20261206T110500Z".into(),
                now: "20261206T110501Z".into(),
            },
            "InvalidSignatureException",
            "Signature expired: 20261206T110500Z is now earlier than 20261206T110501Z",
        ),
    ];
    for (error, name, message) in table {
        assert_eq!(error.status(), StatusCode::FORBIDDEN, "{error}");
        assert_eq!(error.exception_name(), name, "{error}");
        assert!(
            error.client_message().starts_with(message),
            "{error}: {}",
            error.client_message()
        );
    }
}

#[test]
fn errors_carry_nothing_derived_from_the_secret() {
    let req = aws_sign(&Sign::default());
    let good = req.headers()["authorization"].to_str().unwrap().to_owned();
    let sig = good.rsplit("Signature=").next().unwrap().to_owned();
    let other_sig = format!(
        "{}{}",
        &sig[..63],
        if sig.ends_with('0') { '1' } else { '0' }
    );
    let bad = with_authorization(&req, |a| a.replace(&sig, &other_sig));
    let error = check(&bad, t0()).unwrap_err();
    let text = format!("{error} {error:?} {}", error.client_message());
    assert!(!text.contains(SECRET) && !text.contains(&sig) && !text.contains(&other_sig));
}

/// Cases per fuzz target: 512 unless `MESHPLANE_FUZZ_CASES` says otherwise.
fn fuzz_cases() -> u32 {
    std::env::var("MESHPLANE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(fuzz_cases()))]

    /// Arbitrary Authorization values never panic and never verify.
    #[test]
    fn arbitrary_authorization_is_an_error(value in "[ -~]{0,300}") {
        let req = aws_sign(&Sign::default());
        let bad = with_authorization(&req, |_| value.clone());
        let result = check(&bad, t0());
        prop_assert!(result.is_err());
        prop_assert_eq!(result.unwrap_err().status(), StatusCode::FORBIDDEN);
    }

    /// Changing any one character of a valid header, or cutting it short, is refused.
    #[test]
    fn mutated_authorization_is_refused(index in 0usize..400, replacement in "[ -~]", cut in any::<bool>()) {
        let req = aws_sign(&Sign { target: "/v20190125/meshes?limit=10", ..Sign::default() });
        let good = req.headers()["authorization"].to_str().unwrap().to_owned();
        let index = index % good.len();
        let mutated = if cut {
            good[..index].to_owned()
        } else {
            prop_assume!(good[index..].chars().next() != replacement.chars().next());
            format!("{}{}{}", &good[..index], replacement, &good[index + 1..])
        };
        let bad = with_authorization(&req, |_| mutated.clone());
        prop_assert!(check(&bad, t0()).is_err(), "{}", mutated);
    }

    /// Arbitrary paths and query strings (presigned or not) never panic.
    #[test]
    fn arbitrary_path_and_query_never_panic(path in "/[!-~]{0,80}", query in "[ -~&=%+]{0,120}") {
        let req = aws_sign(&Sign::default());
        let headers = req.headers().clone();
        let view = RequestView {
            method: "GET",
            path: &path,
            query: &query,
            headers: &headers,
            authority: None,
        };
        let _ = verify(&view, Payload::Bytes(b""), t0(), &keys());
        let mut no_auth = headers.clone();
        no_auth.remove("authorization");
        let query = format!("X-Amz-Algorithm=AWS4-HMAC-SHA256&{query}");
        let view = RequestView { query: &query, headers: &no_auth, ..view };
        prop_assert!(verify(&view, Payload::Bytes(b""), t0(), &keys()).is_err());
    }
}
