//! `cargo xtask`: see the library for everything.

fn main() -> std::process::ExitCode {
    xtask::main()
}
