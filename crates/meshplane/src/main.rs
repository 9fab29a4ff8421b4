//! The `meshplane` binary: the command line lives in the `meshplane` library; this only runs it.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    meshplane::main()
}
