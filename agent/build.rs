//! Builds the eBPF object with the pinned nightly (see rust-toolchain.toml and TOOLCHAIN notes in
//! docs/architecture.md). With AYA_BUILD_SKIP=1 an empty object is written instead and the
//! `wardgate_ebpf_skipped` cfg is set: host-only commands (fmt, clippy, unit tests) then work
//! without the eBPF toolchain, and the agent refuses to start on the empty object.

use std::{env, fs, path::PathBuf};

use anyhow::Context as _;

/// The nightly whose LLVM (22) matches bpf-linker; newer nightlies fail with "Invalid record".
const EBPF_TOOLCHAIN: &str = "nightly-2026-07-15";

fn main() -> anyhow::Result<()> {
    println!("cargo::rustc-check-cfg=cfg(wardgate_ebpf_skipped)");
    println!("cargo::rerun-if-env-changed=AYA_BUILD_SKIP");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        fs::write(out_dir.join("wardgate"), []).context("writing empty eBPF object")?;
        println!("cargo::rustc-cfg=wardgate_ebpf_skipped");
        return Ok(());
    }
    let root = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("no manifest dir")?);
    let ebpf_dir = root
        .parent()
        .context("agent has no parent dir")?
        .join("ebpf");
    let ebpf_dir = ebpf_dir.to_str().context("non-UTF-8 path")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "wardgate-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(EBPF_TOOLCHAIN),
    )
}
