//! Harness of the compatibility suite: runs the real `meshplane serve` process.
//!
//! ```text
//!   meshplane_bin()   cargo build -p meshplane (once per test binary) -> target/<profile>/meshplane
//!   Server::start()   spawn `serve --data-dir D --api-listen 127.0.0.1:0 --xds-listen 127.0.0.1:0`,
//!                     wait for `listening api http://…` on stdout; SIGKILL + reap on Drop
//!   venv()            $MESHPLANE_VENV (else <workspace>/.venv) with awscli and boto3
//! ```
//!
//! Finding the binary: Cargo only hands `CARGO_BIN_EXE_<name>` to the tests of the package
//! that owns the binary, and `cargo test --workspace` does not build another package's
//! binary for us. So the harness runs `cargo build -p meshplane --bin meshplane` itself,
//! into the target directory and profile of the running test executable (derived from
//! `std::env::current_exe()`): the binary under test is then always as fresh as the
//! sources, whichever way the suite was started. A binary there that is newer than every
//! source file (`crates/*/src`, `build.rs`, manifests, `Cargo.lock`) is used without
//! invoking Cargo: `cargo test --workspace` has just built it. `MESHPLANE_BIN` overrides
//! all of this (tests then use that binary as is).
//!
//! std only: the tests bring their own clients.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

/// How long a server gets to print its `listening api` line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/compat lives two levels below the workspace root")
        .to_path_buf()
}

/// Path of the `meshplane` binary, built on first use (see the module docs).
pub fn meshplane_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("MESHPLANE_BIN") {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "MESHPLANE_BIN={} does not exist", p.display());
            return p;
        }
        build_meshplane()
    })
}

/// The newest modification time among the inputs of the `meshplane` binary: every
/// crate's `src/`, `build.rs` and `Cargo.toml`, and the workspace manifest and lock file.
fn newest_source_mtime(root: &Path) -> Option<SystemTime> {
    fn walk(p: &Path, newest: &mut Option<SystemTime>) {
        let Ok(meta) = std::fs::metadata(p) else {
            return;
        };
        if meta.is_dir() {
            for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
                walk(&e.path(), newest);
            }
        } else if let Ok(m) = meta.modified() {
            *newest = (*newest).max(Some(m));
        }
    }
    let mut newest = None;
    walk(&root.join("Cargo.toml"), &mut newest);
    walk(&root.join("Cargo.lock"), &mut newest);
    for krate in std::fs::read_dir(root.join("crates")).ok()?.flatten() {
        for part in ["src", "build.rs", "Cargo.toml"] {
            walk(&krate.path().join(part), &mut newest);
        }
    }
    newest
}

fn build_meshplane() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // <target>/[<triple>/]<profile>/deps/<test-binary>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in <target>/<profile>/deps")
        .to_path_buf();
    let profile = profile_dir
        .file_name()
        .and_then(|s| s.to_str())
        .expect("profile directory name")
        .to_owned();
    let above = profile_dir
        .parent()
        .expect("target directory")
        .to_path_buf();
    // Cargo marks the root of a target directory with CACHEDIR.TAG; if it is one level
    // further up, the level in between is a `--target` triple.
    let (target_dir, triple) = if above.join("CACHEDIR.TAG").exists() {
        (above, None)
    } else {
        let triple = above
            .file_name()
            .and_then(|s| s.to_str())
            .map(str::to_owned);
        (
            above.parent().expect("target directory").to_path_buf(),
            triple,
        )
    };
    let bin = profile_dir.join(format!("meshplane{}", std::env::consts::EXE_SUFFIX));
    // `cargo test --workspace` already builds the binary (the `meshplane` package has
    // integration tests); a binary newer than every source is used as is, which also
    // avoids rebuilding dependencies whose features the workspace-wide resolution unified
    // differently from `-p meshplane`.
    let bin_mtime = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    if let (Some(b), Some(src)) = (bin_mtime, newest_source_mtime(&workspace_root()))
        && b >= src
    {
        return bin;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "--quiet", "-p", "meshplane", "--bin", "meshplane"])
        .env("CARGO_TARGET_DIR", &target_dir);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    if let Some(t) = &triple {
        cmd.args(["--target", t]);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed: {status}");
    assert!(bin.is_file(), "{} was not built", bin.display());
    bin
}

/// The project virtualenv with awscli and boto3 (`$MESHPLANE_VENV`, else `<workspace>/.venv`).
/// Panics with an install hint when it is missing: these tests never skip.
pub fn venv() -> PathBuf {
    let dir = std::env::var_os("MESHPLANE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv"));
    for tool in ["bin/python", "bin/aws"] {
        assert!(
            dir.join(tool).exists(),
            "{} is missing: run `cargo xtask setup` (installs awscli and boto3 into {})",
            dir.join(tool).display(),
            dir.display()
        );
    }
    dir
}

/// A running `meshplane serve` child; killed (SIGKILL) and reaped on drop.
pub struct Server {
    child: Option<Child>,
    url: String,
    data_dir: PathBuf,
    log: PathBuf,
}

impl Server {
    /// Starts `meshplane serve` on loopback port 0 with `data_dir` and `extra` flags, and
    /// waits until it announces its API address. Its stderr goes to `<data_dir>.log`.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let log = data_dir.with_extension("log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        let mut child = Command::new(meshplane_bin())
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--api-listen", "127.0.0.1:0", "--xds-listen", "127.0.0.1:0"])
            .args(["--log", "info"])
            // Authentication is on by default; `--auth none` in `extra` turns it off (a
            // later `--auth` wins).
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", meshplane_bin().display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keeps draining stdout after the announcement so the child never sees EPIPE.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("listening api ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let mut server = Server {
            child: Some(child),
            url: String::new(),
            data_dir: data_dir.to_path_buf(),
            log,
        };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(url) => server.url = url,
            Err(_) => panic!(
                "meshplane serve did not print `listening api` within {START_TIMEOUT:?}; log:\n{}",
                server.log_text()
            ),
        }
        server
    }

    /// The administrator key `serve` issued on first start, as `ACCESS_KEY_ID:SECRET`
    /// (read from `<data-dir>/credentials`, profile `meshplane`).
    pub fn credentials(&self) -> String {
        let path = self.data_dir.join("credentials");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let value = |key: &str| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().to_owned())
                .unwrap_or_else(|| panic!("{key} missing in {}", path.display()))
        };
        format!(
            "{}:{}",
            value("aws_access_key_id"),
            value("aws_secret_access_key")
        )
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The data directory it serves.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Its stderr so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL (no shutdown path runs) and reap. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // `Child::kill` is SIGKILL on Unix.
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
