//! The hand-written AWS config resolution against botocore's, on the same files and
//! environment: credentials, region, `endpoint_url`, `ca_bundle`, and which profiles are
//! errors. botocore runs from `$MESHPLANE_VENV` (the project's virtualenv).

use std::path::{Path, PathBuf};
use std::process::Command;

use meshplane_client::config::{ConfigError, DEFAULT_ENDPOINT, DEFAULT_REGION};
use meshplane_client::{Overrides, Settings};
use serde_json::{Value, json};

/// Resolves like `Settings::resolve`, printed as one JSON object (or `{"error": ...}`).
const BOTOCORE: &str = r#"
import json, os, sys
import botocore.session, botocore.exceptions
from botocore.configprovider import ConfiguredEndpointProvider
profile = sys.argv[1] or None
try:
    s = botocore.session.Session(profile=profile)
    c = s.get_credentials()
    out = {
        "key": c.access_key if c else None,
        "secret": c.secret_key if c else None,
        "token": c.token if c else None,
        "region": s.get_config_variable("region"),
        # What an appmesh client would use: AWS_ENDPOINT_URL_APP_MESH, AWS_ENDPOINT_URL,
        # then the profile's endpoint_url (a per-client lookup in botocore).
        "endpoint_url": ConfiguredEndpointProvider(
            s.full_config, s.get_scoped_config(), "appmesh", os.environ
        ).provide(),
        "ca_bundle": s.get_config_variable("ca_bundle"),
    }
except botocore.exceptions.ProfileNotFound:
    out = {"error": "ProfileNotFound"}
print(json.dumps(out))
"#;

fn venv_python() -> PathBuf {
    let venv = std::env::var_os("MESHPLANE_VENV").unwrap_or_else(|| {
        panic!(
            "MESHPLANE_VENV is not set: export MESHPLANE_VENV=/work/main/.venv (boto3 installed)"
        )
    });
    let python = Path::new(&venv).join("bin/python");
    assert!(python.exists(), "{} does not exist", python.display());
    python
}

fn botocore(profile: Option<&str>, env: &[(&str, String)]) -> Value {
    let mut cmd = Command::new(venv_python());
    cmd.env_clear()
        // Never ask an instance metadata service: no network beyond loopback in tests.
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .arg("-c")
        .arg(BOTOCORE)
        .arg(profile.unwrap_or(""));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run botocore");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ours(profile: Option<&str>, env: &[(&str, String)]) -> Value {
    let overrides = Overrides {
        profile: profile.map(str::to_owned),
        ..Overrides::default()
    };
    let lookup = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
    match Settings::resolve(&overrides, &lookup) {
        Ok(s) => {
            let c = s.credentials.as_ref();
            json!({
                "key": c.map(|c| c.access_key_id.clone()),
                "secret": c.map(|c| c.secret_access_key.clone()),
                "token": c.and_then(|c| c.session_token.clone()),
                // botocore leaves these unset where meshplane has a default.
                "region": Some(s.region).filter(|r| r != DEFAULT_REGION),
                "endpoint_url": Some(s.endpoint).filter(|e| e != DEFAULT_ENDPOINT),
                "ca_bundle": s.ca_bundle.map(|p| p.display().to_string()),
            })
        }
        Err(ConfigError::ProfileNotFound { .. }) => json!({"error": "ProfileNotFound"}),
        Err(e) => panic!("{e}"),
    }
}

/// Environment variables for one case.
type Env = Vec<(&'static str, String)>;

const CREDENTIALS: &str = "\
# team keys
[default]
aws_access_key_id = DEFAULTKEY
aws_secret_access_key = default/secret+x==

[meshplane]
AWS_ACCESS_KEY_ID=MPAKAAAAAAAAAAAAAAAA
aws_secret_access_key =   spaced secret  
aws_session_token = tok=en

; another comment
[half-empty]
";

const CONFIG: &str = "\
[default]
region = eu-west-1

[profile  meshplane]
region = us-west-2 # not a comment for botocore either
endpoint_url = https://127.0.0.1:7443
ca_bundle = /data/ca.pem
s3 =
  max_concurrent_requests = 10

[profile cfgonly]
aws_access_key_id = CFGKEY
aws_secret_access_key = cfgsecret
region = ap-south-1

[profile half-empty]
region = sa-east-1
";

#[test]
fn resolution_matches_botocore() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("credentials"), CREDENTIALS).unwrap();
    std::fs::write(dir.path().join("config"), CONFIG).unwrap();
    let base = vec![
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            dir.path().join("credentials").display().to_string(),
        ),
        (
            "AWS_CONFIG_FILE",
            dir.path().join("config").display().to_string(),
        ),
        ("HOME", dir.path().join("no-home").display().to_string()),
    ];
    let with = |extra: &[(&'static str, &str)]| {
        let mut env = base.clone();
        env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        env
    };
    let env_keys: &[(&'static str, &str)] = &[
        ("AWS_ACCESS_KEY_ID", "ENVKEY"),
        ("AWS_SECRET_ACCESS_KEY", "envsecret"),
        ("AWS_SESSION_TOKEN", "envtoken"),
    ];
    let cases: Vec<(&str, Option<&str>, Env)> = vec![
        ("default profile", None, with(&[])),
        ("AWS_PROFILE", None, with(&[("AWS_PROFILE", "meshplane")])),
        ("--profile", Some("meshplane"), with(&[])),
        ("config-only keys", Some("cfgonly"), with(&[])),
        ("profile without keys", Some("half-empty"), with(&[])),
        ("environment keys", None, with(env_keys)),
        (
            "environment keys and --profile",
            Some("meshplane"),
            with(env_keys),
        ),
        (
            "environment region and bundle",
            Some("meshplane"),
            // botocore reads AWS_DEFAULT_REGION only; AWS_REGION (the Rust SDK's and AWS
            // CLI v2's, taking precedence) is covered by the unit tests.
            with(&[
                ("AWS_DEFAULT_REGION", "ca-central-1"),
                ("AWS_CA_BUNDLE", "/env/ca.pem"),
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
            ]),
        ),
        (
            "AWS_DEFAULT_REGION",
            None,
            with(&[("AWS_DEFAULT_REGION", "me-south-1")]),
        ),
        ("missing --profile", Some("ghost"), with(&[])),
        (
            "missing AWS_PROFILE",
            None,
            with(&[("AWS_PROFILE", "ghost")]),
        ),
        (
            "no files at all",
            None,
            vec![("HOME", "/nonexistent".to_owned())],
        ),
    ];
    for (name, profile, env) in cases {
        assert_eq!(ours(profile, &env), botocore(profile, &env), "{name}");
    }
}
