//! Link settings of the `rollgate` binary that keep `rollgate agent`, which
//! runs on every node, small in memory (BENCHMARKS.md, the agent section).
//! Neither changes what the code does or how fast it runs; both apply to the
//! `rollgate` binary only, on x86_64 Linux with rustc's default linker (LLD
//! since Rust 1.90), and are left out anywhere else.
//!
//! - `-z pack-relative-relocs`: the position-independent binary's ~28,000
//!   relative relocations in the compact RELR form (8 KiB instead of
//!   650 KiB). The loader reads the whole table at start, and those pages
//!   stayed resident. Needs glibc 2.36 at run time (the image's Ubuntu 24.04
//!   has 2.39; an older one refuses to start the binary, naming
//!   `GLIBC_ABI_DT_RELR`).
//! - `--symbol-ordering-file=link/agent.order`: the functions the agent runs
//!   placed together at the start of the code. The kernel maps code in
//!   64 KiB windows around every page touched, so the agent's few hundred
//!   functions, scattered over 8 MB, kept nearly all of it resident; placed
//!   together they take about 1 MB. `link/agent-order.py` regenerates the
//!   list; names it lacks are placed after it, as without a list.

use std::env;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link/agent.order");
    println!("cargo:rerun-if-env-changed=ROLLGATE_LINK_MAP");
    if !default_lld_linker() {
        return;
    }
    let bin = "cargo:rustc-link-arg-bin=rollgate";
    println!("{bin}=-Wl,-z,pack-relative-relocs");
    let dir = env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    println!("{bin}=-Wl,--symbol-ordering-file={dir}/link/agent.order");
    println!("{bin}=-Wl,--no-warn-symbol-ordering");
    // `link/agent-order.py` reads the stripped binary's layout from the
    // linker's map: the names only match a build made exactly as images/
    // builds (`-p rollgate -p web`: dependency features unify).
    if let Some(map) = env::var_os("ROLLGATE_LINK_MAP") {
        println!("{bin}=-Wl,-Map={}", map.to_string_lossy());
    }
}

/// Whether the binary is linked by rustc's default linker for
/// x86_64-unknown-linux-gnu, which is LLD from Rust 1.90: no linker chosen by
/// the builder (`target.<triple>.linker`, `-C linker=`, `-C link-arg=...`).
fn default_lld_linker() -> bool {
    if env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu") {
        return false;
    }
    if env::var_os("RUSTC_LINKER").is_some()
        || env::var("CARGO_ENCODED_RUSTFLAGS").is_ok_and(|f| f.contains("link"))
    {
        return false;
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("-vV").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    // `release: 1.95.0`
    let minor = text
        .lines()
        .find_map(|l| l.strip_prefix("release: 1."))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    minor.is_some_and(|m| m >= 90)
}
