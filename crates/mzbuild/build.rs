//! Stamps the binary with a hash of what decides mzbuild's answers: the
//! crate's sources and the lock file of the workspace (the versions of the
//! crates that parse configuration and walk the tree). Caches on disk carry
//! the stamp of the binary that wrote them and are ignored by any other
//! (`cachefile::SOURCE`), so no rule change can be answered from a cache
//! written under the old rule, with no version number to remember to bump.
//!
//! It also refuses, with one clear line, to build the engine for a platform
//! it does not support, before the compiler would print a wall of errors
//! about missing Unix APIs (process groups, signals, `flock`, file modes).

// Cargo reads a build script's instructions from its stdout.
#![allow(clippy::disallowed_macros)]

use std::path::{Path, PathBuf};

fn main() {
    // Cargo sets CARGO_CFG_UNIX for Linux, macOS and the other Unixes.
    #[allow(clippy::disallowed_methods)] // a build script has no Env
    if std::env::var_os("CARGO_CFG_UNIX").is_none() {
        eprintln!(
            "mzbuild supports Linux and macOS (it relies on POSIX process groups, signals and flock); \
             on Windows, run it in WSL 2"
        );
        std::process::exit(1);
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    collect(&here.join("src"), &mut files);
    files.sort();
    files.push(here.join("Cargo.toml"));
    let lock = here.join("../../Cargo.lock");
    if lock.exists() {
        files.push(lock.clone());
        println!("cargo:rerun-if-changed={}", lock.display());
    }
    // FNV-1a, 128 bits: a change detector, not a security boundary.
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u128::from(*b);
            h = h.wrapping_mul(0x0000000001000000000000000000013B);
        }
    };
    feed(env!("CARGO_PKG_VERSION").as_bytes());
    for f in &files {
        let rel = f.strip_prefix(here).unwrap_or(f);
        feed(rel.to_string_lossy().as_bytes());
        feed(&[0]);
        feed(&std::fs::read(f).unwrap_or_default());
        feed(&[0]);
    }
    println!("cargo:rustc-env=MZBUILD_SOURCE_HASH={h:032x}");
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=Cargo.toml");
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else {
            out.push(p);
        }
    }
}
