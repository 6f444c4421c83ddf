// Builds relay-ebpf (bpfel-unknown-none, nightly + bpf-linker) into OUT_DIR so the bench can embed
// its own programs (generator, floor, sink); relay-ctl embeds only the relay.
fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow::anyhow!("bench has no parent directory"))?
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
