//! API authentication against the real `meshplane serve --auth sigv4`, with clients nobody
//! here wrote: the AWS CLI and boto3 (`scripts/auth_compat.py`) and `aws-sdk-appmesh`, all
//! using only the `<data-dir>/credentials` and `<data-dir>/config` that `serve` wrote.
//! Also: the key file guards the start, and no secret is stored in clear.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_appmesh::config::retry::RetryConfig;
use aws_sdk_appmesh::config::{BehaviorVersion, Credentials, Region};
use meshplane_compat::{Server, meshplane_bin, venv, workspace_root};

fn secure(dir: &Path) -> Server {
    Server::start(dir, &["--auth", "sigv4"])
}

/// `key = value` of an INI file's section.
fn ini(path: &Path, section: &str, key: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == format!("[{section}]");
        } else if inside
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == key
        {
            return v.trim().to_owned();
        }
    }
    panic!("{key} not in [{section}] of {}:\n{text}", path.display());
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn aws_cli_and_boto3_with_the_generated_credentials() {
    let venv = venv();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = secure(&data);
    let creds = data.join("credentials");
    let config = data.join("config");
    assert_eq!(mode(&creds), 0o600);
    assert_eq!(mode(&config), 0o600);
    assert_eq!(mode(&data.join("auth.key")), 0o600);
    assert_eq!(
        ini(&config, "profile meshplane", "endpoint_url"),
        server.url()
    );
    assert_eq!(ini(&config, "profile meshplane", "region"), "us-east-1");
    let secret = ini(&creds, "meshplane", "aws_secret_access_key");
    // The usage line follows the `listening` lines on stdout, so it may take a moment.
    let usage = format!(
        "AWS_SHARED_CREDENTIALS_FILE={0}/credentials AWS_CONFIG_FILE={0}/config AWS_PROFILE=meshplane aws appmesh list-meshes",
        data.display()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log_text().contains(&usage) {
        assert!(
            Instant::now() < deadline,
            "usage line missing:\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let script = workspace_root().join("crates/compat/scripts/auth_compat.py");
    let started = Instant::now();
    let mut child = Command::new(venv.join("bin/python"))
        .arg(&script)
        .arg("--data-dir")
        .arg(&data)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning the venv python");
    let mut lines = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        println!("{line}");
        lines.push(line);
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "auth_compat.py is taking too long"
        );
    }
    let status = child.wait().unwrap();
    let summary = lines.last().cloned().unwrap_or_default();
    let failures: Vec<&String> = lines.iter().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        status.success() && failures.is_empty() && summary.ends_with(" 0 failed"),
        "auth_compat.py: {status}, {summary:?}; failures:\n{failures:#?}\n--- server log ---\n{}",
        server.log_text()
    );
    let passed: usize = summary
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(passed >= 30, "only {passed} checks ran");

    // Refused and mutating calls are in the audit log.
    let log = server.log_text();
    assert!(log.contains("meshplane::audit"), "no audit lines");
    assert!(
        log.contains("outcome=\"denied\"") || log.contains("outcome=denied"),
        "no denied audit line"
    );

    // No secret in clear anywhere in the database files (db, WAL); the sealed records are
    // there, so the right files were searched.
    server.kill();
    let mut sealed_seen = false;
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("meshplane.db") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
        assert!(!found, "{name} contains the administrator secret in clear");
        let sealed: &[u8] = b"\"sealedSecret\":\"mps1.";
        sealed_seen |= bytes.windows(sealed.len()).any(|w| w == sealed);
    }
    assert!(
        sealed_seen,
        "no sealed access key record found in the database files"
    );
}

fn sdk(url: &str, id: &str, secret: &str) -> aws_sdk_appmesh::Client {
    let conf = aws_sdk_appmesh::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            id,
            secret,
            None,
            None,
            "meshplane-credentials",
        ))
        .endpoint_url(url)
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_appmesh::Client::from_conf(conf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_with_the_generated_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = secure(&data);
    let creds = data.join("credentials");
    let id = ini(&creds, "meshplane", "aws_access_key_id");
    let secret = ini(&creds, "meshplane", "aws_secret_access_key");
    let url = ini(&data.join("config"), "profile meshplane", "endpoint_url");

    let client = sdk(&url, &id, &secret);
    client
        .create_mesh()
        .mesh_name("m.1")
        .send()
        .await
        .expect("create mesh m.1");
    client
        .create_virtual_node()
        .mesh_name("m.1")
        .virtual_node_name("a b")
        .spec(aws_sdk_appmesh::types::VirtualNodeSpec::builder().build())
        .tags(
            aws_sdk_appmesh::types::TagRef::builder()
                .key("k")
                .value("v w/x")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("create virtual node `a b`");
    let node = client
        .describe_virtual_node()
        .mesh_name("m.1")
        .virtual_node_name("a b")
        .send()
        .await
        .expect("describe");
    assert_eq!(node.virtual_node().unwrap().virtual_node_name(), "a b");
    let meshes = client.list_meshes().send().await.expect("list meshes");
    assert_eq!(meshes.meshes().len(), 1);

    let code = |e: &dyn aws_sdk_appmesh::error::ProvideErrorMetadata| e.code().map(str::to_owned);
    let e = sdk(&url, &id, "wrong")
        .list_meshes()
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        code(&e).as_deref(),
        Some("InvalidSignatureException"),
        "{e:?}"
    );
    let e = sdk(&url, "MPAKAAAAAAAAAAAAAAAA", &secret)
        .list_meshes()
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        code(&e).as_deref(),
        Some("UnrecognizedClientException"),
        "{e:?}"
    );
    drop(server);
}

/// Runs `serve` expecting a refused start; returns (exit success, stderr).
fn refused_start(data: &Path) -> (bool, String) {
    let out = Command::new(meshplane_bin())
        .args([
            "serve",
            "--api-listen",
            "127.0.0.1:0",
            "--xds-listen",
            "127.0.0.1:0",
            "--auth",
            "sigv4",
        ])
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = out;
    loop {
        if let Some(status) = out.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(out.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (status.success(), err);
        }
        if Instant::now() > deadline {
            let _ = out.kill();
            let _ = out.wait();
            panic!("serve kept running with a wrong or missing key file");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_missing_or_wrong_key_file_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = secure(&data);
    server.kill();
    let key = data.join("auth.key");
    let original = std::fs::read(&key).unwrap();
    let creds_before = std::fs::read(data.join("credentials")).unwrap();

    std::fs::write(&key, [0u8; 32]).unwrap();
    let (ok, err) = refused_start(&data);
    assert!(!ok);
    assert!(err.contains("auth.key is not the key"), "{err}");
    assert!(
        err.contains("cannot be opened without the original file"),
        "{err}"
    );

    std::fs::remove_file(&key).unwrap();
    let (ok, err) = refused_start(&data);
    assert!(!ok);
    assert!(err.contains("auth.key is missing"), "{err}");
    assert!(!key.exists(), "a refused start must not write a key file");

    // The original file starts it again; the administrator key is not re-issued.
    std::fs::write(&key, &original).unwrap();
    let server = secure(&data);
    assert_eq!(
        std::fs::read(data.join("credentials")).unwrap(),
        creds_before
    );
    drop(server);
}
