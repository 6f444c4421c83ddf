// Included by the build scripts of the crates that embed these programs (relay-ctl: the relay;
// bench: the generator, floor and sink): builds relay-ebpf for bpfel-unknown-none (nightly +
// bpf-linker, installed by `cargo xtask setup`) into the includer's OUT_DIR.
fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow::anyhow!("no parent directory above the crate"))?
        .join("relay-ebpf");
    let root = root
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non UTF-8 path {}", root.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "relay-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
