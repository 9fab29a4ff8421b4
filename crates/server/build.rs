//! Embeds envoy-types' protobuf descriptor set so `proxy-config` can render Envoy resources
//! as proto3 JSON. envoy-types ships the set (`src/generated/types.bin`) with its source but
//! does not export it; we find the exact version from Cargo.lock in Cargo's registry.

use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let lock = manifest.join("../../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let version = std::fs::read_to_string(&lock)
        .ok()
        .and_then(|s| envoy_types_version(&s))
        .unwrap_or_else(|| "0.7.7".to_owned());
    let dir = format!("envoy-types-{version}");
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo")
        });
    let found = find(&home.join("registry/src"), &dir);
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it")).join("envoy-types.bin");
    match found {
        Some(src) => {
            std::fs::copy(&src, &out).expect("copy descriptor set");
        }
        None => panic!(
            "{dir}/src/generated/types.bin not found under {}/registry/src; run `cargo fetch`",
            home.display()
        ),
    }
}

fn envoy_types_version(lock: &str) -> Option<String> {
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l.trim() == "name = \"envoy-types\"" {
            let v = lines
                .next()?
                .trim()
                .strip_prefix("version = \"")?
                .strip_suffix('"')?;
            return Some(v.to_owned());
        }
    }
    None
}

fn find(registry_src: &Path, dir: &str) -> Option<PathBuf> {
    std::fs::read_dir(registry_src)
        .ok()?
        .filter_map(|e| Some(e.ok()?.path().join(dir).join("src/generated/types.bin")))
        .find(|p| p.is_file())
}
