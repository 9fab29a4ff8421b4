//! The AWS CLI and boto3 against the Cloud Map-compatible registry of `meshplane serve`.
//!
//! Runs `scripts/cloudmap_compat.py`, which drives every one of the 17 registry operations
//! through `aws servicediscovery …` (with `AWS_DISABLE_HOST_PREFIX_INJECTION=true`) and boto3
//! (`inject_host_prefix=False`), including typed errors and paginators, and raw JSON 1.1
//! requests; it prints `N passed, N failed`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meshplane_compat::{Server, venv, workspace_root};

#[test]
fn aws_cli_and_boto3_against_the_registry() {
    let venv = venv();
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&tmp.path().join("registry"), &[]);
    let script = workspace_root().join("crates/compat/scripts/cloudmap_compat.py");
    let started = Instant::now();
    let mut child = Command::new(venv.join("bin/python"))
        .arg(&script)
        .args(["--endpoint", server.url()])
        .args(["--credentials", &server.credentials()])
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
            started.elapsed() < Duration::from_secs(300),
            "cloudmap_compat.py is taking too long"
        );
    }
    let status = child.wait().expect("waiting for the script");
    let failures: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("FAIL"))
        .map(String::as_str)
        .collect();
    let summary = lines.last().cloned().unwrap_or_default();
    let log = server.log_text();
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    assert!(
        status.success() && failures.is_empty() && summary.ends_with(" 0 failed"),
        "cloudmap_compat.py: {status}, summary {summary:?}; failures:\n{}\n--- server log (tail) ---\n{}",
        failures.join("\n"),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    let passed: usize = summary
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(passed >= 120, "only {passed} checks ran");
}
