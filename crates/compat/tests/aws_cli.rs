//! The AWS CLI (awscli 1.46.2) and boto3 against the real `meshplane serve` process.
//!
//! Starts two fresh servers (one with `--quota-virtual-nodes 2` for LimitExceededException)
//! and runs `scripts/aws_compat.py` with the project venv's python. The script drives
//! every one of the 38 App Mesh operations through the AWS CLI (the `aws` executable for a
//! smoke test, awscli's driver in-process for the bulk), boto3 paginators and modeled
//! exceptions, and raw HTTP for malformed bodies; it prints `N passed, N failed`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meshplane_compat::{Server, venv, workspace_root};

#[test]
fn aws_cli_and_boto3_against_meshplane_serve() {
    let venv = venv();
    let tmp = tempfile::tempdir().expect("tempdir");
    let main = Server::start(&tmp.path().join("main"), &[]);
    let quota = Server::start(&tmp.path().join("quota"), &["--quota-virtual-nodes", "2"]);
    let script = workspace_root().join("crates/compat/scripts/aws_compat.py");
    let started = Instant::now();
    // MESHPLANE_COMPAT_CLI_MODE=subprocess runs every CLI call through the `aws` executable
    // (slower); the default runs a smoke test through it and the rest through awscli's
    // driver in-process.
    let mode = std::env::var("MESHPLANE_COMPAT_CLI_MODE").unwrap_or_else(|_| "mixed".into());
    let mut child = Command::new(venv.join("bin/python"))
        .arg(&script)
        .args(["--endpoint", main.url(), "--quota-endpoint", quota.url()])
        .args(["--credentials", &main.credentials()])
        .args(["--quota-credentials", &quota.credentials()])
        .args(["--cli-mode", &mode])
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning the venv python");
    let mut lines = Vec::new();
    for line in BufReader::new(child.stdout.take().expect("stdout")).lines() {
        let line = line.expect("script output");
        println!("{line}");
        lines.push(line);
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "aws_compat.py is taking too long"
        );
    }
    let status = child.wait().expect("waiting for the script");
    let failures: Vec<&String> = lines.iter().filter(|l| l.starts_with("FAIL")).collect();
    let summary = lines.last().cloned().unwrap_or_default();
    assert!(
        status.success() && failures.is_empty() && summary.ends_with(" 0 failed"),
        "aws_compat.py: {status}, summary {summary:?}; failures:\n{}\n--- server log (tail) ---\n{}",
        failures
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        tail(&main.log_text(), 40)
    );
    // A run that checked nearly nothing must not pass.
    let passed: usize = summary
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(passed >= 160, "only {passed} checks ran");
    assert!(main.url().starts_with("http://127.0.0.1:"));
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
