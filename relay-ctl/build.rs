// Builds the XDP program (relay-ebpf, bpfel-unknown-none, nightly + bpf-linker) into OUT_DIR so
// the loader can embed it; `cargo xtask setup` installs what this needs.
fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow::anyhow!("relay-ctl has no parent directory"))?
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
