//! The `meshplane` binary: everything lives in `meshplane-runtime`; this only runs it.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    meshplane_runtime::main()
}
