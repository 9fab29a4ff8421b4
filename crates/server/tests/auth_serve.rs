//! `meshplane serve` with and without API authentication, as a process: the flags, the
//! first-start files, the warning of `--auth none`, and which paths stay open.

use std::os::unix::fs::PermissionsExt as _;

use meshplane_testkit::ControlPlane;

#[tokio::test]
async fn auth_on_writes_the_files_and_refuses_unsigned_calls() {
    let cp = ControlPlane::start_secure(&["--node-token-ttl", "2h"]).await;
    let creds = std::fs::read_to_string(cp.credentials_file()).unwrap();
    let lines: Vec<&str> = creds.lines().collect();
    assert_eq!(lines[0], "[meshplane]");
    let id = lines[1]
        .strip_prefix("aws_access_key_id = ")
        .expect("key id line");
    let secret = lines[2]
        .strip_prefix("aws_secret_access_key = ")
        .expect("secret line");
    assert!(id.starts_with("MPAK") && id.len() == 20, "{id}");
    assert_eq!(secret.len(), 40);
    for f in [
        cp.credentials_file(),
        cp.config_file(),
        cp.data_dir().join("auth.key"),
    ] {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
    let config = std::fs::read_to_string(cp.config_file()).unwrap();
    assert_eq!(
        config,
        format!(
            "[profile meshplane]\nregion = us-east-1\nendpoint_url = {}\n",
            cp.api_url()
        )
    );

    for path in [
        "/v20190125/meshes",
        "/meshplane/v1/proxy-status",
        "/meshplane/v1/access-keys",
        "/meshplane/v1/proxy-config?node=mesh/m/virtualNode/n",
        "/no/such/path",
    ] {
        let (status, body) = cp.request_unsigned("GET", path, None).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["message"], "Missing Authentication Token", "{path}");
    }
    // The same calls signed with the generated administrator key pass.
    let (status, body) = cp.request("GET", "/v20190125/meshes", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = cp.request("GET", "/meshplane/v1/access-keys", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accessKeys"][0]["name"], "admin", "{body}");
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, _) = cp.request_unsigned("GET", path, None).await;
        assert!(status == 200 || status == 503, "{path} {status}");
    }
    let log = cp.log();
    assert!(!log.contains("authentication is off"), "{log}");
    assert!(
        log.contains("AWS_PROFILE=meshplane aws appmesh list-meshes"),
        "{log}"
    );
    assert!(!log.contains(secret), "the secret must not be logged");
}

#[tokio::test]
async fn auth_none_warns_and_serves_unsigned_calls() {
    let cp = ControlPlane::start_insecure(&[]).await;
    let (status, _) = cp.request("GET", "/v20190125/meshes", None).await;
    assert_eq!(status, 200);
    assert!(!cp.credentials_file().exists());
    let log = cp.log();
    let api = cp.api_url().trim_start_matches("http://").to_owned();
    assert!(
        log.contains(&format!(
            "authentication is off (--auth none): anyone who can reach {api} and {} can read and change the mesh",
            cp.xds_addr()
        )),
        "{log}"
    );
    // Node tokens make no sense without authentication.
    let (status, body) = cp
        .request(
            "POST",
            "/meshplane/v1/node-tokens",
            Some(serde_json::json!({"mesh": "m", "virtualNodeName": "n"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}

#[test]
fn a_bad_node_token_ttl_is_refused_at_parse_time() {
    let out = std::process::Command::new(meshplane_testkit::control_plane::meshplane_binary())
        .args(["serve", "--node-token-ttl", "1w"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("use s, m, h or d"), "{err}");
}
