//! `cargo xtask package`: the Debian package, built with `dpkg-deb` from a staged tree (no
//! cargo-deb to install; dpkg-deb ships with dpkg). Man pages and completions are generated
//! here from the release binary's own clap definitions; nothing generated is committed.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::setup::Env;

pub const PACKAGE: &str = "xdp-relay";
const DIST: &str = "dist";

/// The workspace version (`[workspace.package] version`).
pub fn workspace_version() -> Result<String> {
    let toml = fs::read_to_string("Cargo.toml").context("reading Cargo.toml")?;
    let mut in_pkg = false;
    for line in toml.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_pkg = l == "[workspace.package]";
        } else if in_pkg && let Some(v) = l.strip_prefix("version") {
            return Ok(v
                .trim_start_matches([' ', '='])
                .trim()
                .trim_matches('"')
                .to_owned());
        }
    }
    bail!("no version in [workspace.package] of Cargo.toml")
}

/// Builds relay-ctl in release and `target/debian/xdp-relay_VERSION_amd64.deb`; returns its path.
pub fn build(env: &Env, version: Option<&str>) -> Result<PathBuf> {
    let t0 = Instant::now();
    let version = match version {
        Some(v) => v.to_owned(),
        None => workspace_version()?,
    };
    if !version.starts_with(|c: char| c.is_ascii_digit())
        || !version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+~-".contains(c))
    {
        bail!("{version:?} is not a Debian version");
    }
    crate::cargo(env, &["build", "--release", "--package", "relay-ctl"])?;
    let bin = Path::new("target/release/relay-ctl");
    let out_dir = Path::new("target/debian");
    let stage = out_dir.join(format!("{PACKAGE}_{version}_amd64"));
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    let dist = Path::new(DIST);

    install(bin, &stage.join("usr/bin/relay-ctl"), 0o755)?;
    strip(&stage.join("usr/bin/relay-ctl"));
    install(
        &dist.join("systemd/xdp-relay.service"),
        &stage.join("lib/systemd/system/xdp-relay.service"),
        0o644,
    )?;
    install(
        &dist.join("relay.toml"),
        &stage.join("etc/xdp-relay/relay.toml"),
        0o644,
    )?;
    install(
        &dist.join("grafana/xdp-relay.json"),
        &stage.join("usr/share/xdp-relay/grafana/xdp-relay.json"),
        0o644,
    )?;
    let doc = stage.join("usr/share/doc").join(PACKAGE);
    install(Path::new("README.md"), &doc.join("README.md"), 0o644)?;
    write(
        &doc.join("copyright"),
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: xdp-relay\n\nFiles: *\nLicense: MIT or Apache-2.0\n",
        0o644,
    )?;

    // Man pages and completions from the binary's clap definitions.
    let gen_dir = out_dir.join(format!("generated-{version}"));
    if gen_dir.exists() {
        fs::remove_dir_all(&gen_dir)?;
    }
    let (man, comp) = (gen_dir.join("man"), gen_dir.join("completions"));
    crate::status(
        Command::new(bin)
            .arg("generate")
            .arg("--man")
            .arg(&man)
            .arg("--completions")
            .arg(&comp),
    )
    .context("generating man pages and completions")?;
    let mut pages = 0;
    for e in fs::read_dir(&man)? {
        let path = e?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let section = name.rsplit('.').next().unwrap_or("1");
        let dest = stage.join(format!("usr/share/man/man{section}/{name}.gz"));
        gzip(&path, &dest)?;
        pages += 1;
    }
    for (from, to) in [
        (
            "relay-ctl.bash",
            "usr/share/bash-completion/completions/relay-ctl",
        ),
        ("_relay-ctl", "usr/share/zsh/vendor-completions/_relay-ctl"),
        (
            "relay-ctl.fish",
            "usr/share/fish/vendor_completions.d/relay-ctl.fish",
        ),
    ] {
        install(&comp.join(from), &stage.join(to), 0o644)?;
    }
    fs::remove_dir_all(&gen_dir)?;

    let size_kib = tree_size(&stage)?.div_ceil(1024);
    let debian = stage.join("DEBIAN");
    for script in ["postinst", "prerm", "postrm"] {
        install(
            &dist.join("debian").join(script),
            &debian.join(script),
            0o755,
        )?;
    }
    write(
        &debian.join("conffiles"),
        "/etc/xdp-relay/relay.toml\n",
        0o644,
    )?;
    write(
        &debian.join("control"),
        &format!(
            "Package: {PACKAGE}\n\
             Version: {version}\n\
             Architecture: amd64\n\
             Maintainer: xdp-relay maintainers <xdp-relay@example.invalid>\n\
             Installed-Size: {size_kib}\n\
             Depends: libc6 (>= 2.34), passwd\n\
             Section: net\n\
             Priority: optional\n\
             Homepage: https://example.invalid/xdp-relay\n\
             Description: kernel-bypass RTP/RTCP relay for SIP B2BUAs (XDP, rtpengine NG protocol)\n \
             relay-ctl daemon forwards media in an XDP eBPF program embedded in the binary (CO-RE,\n \
             no kernel module) and is driven over rtpengine's NG control protocol, so Kamailio\n \
             and OpenSIPS work unchanged. Runs as the xdp-relay user with CAP_BPF, CAP_NET_ADMIN\n \
             and CAP_PERFMON; calls survive restarts and package upgrades (pinned maps and a\n \
             state file).\n"
        ),
        0o644,
    )?;

    let deb = out_dir.join(format!("{PACKAGE}_{version}_amd64.deb"));
    crate::status(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&stage)
            .arg(&deb),
    )
    .context("dpkg-deb --build")?;
    fs::remove_dir_all(&stage)?;
    eprintln!(
        "xtask: built {} ({pages} man pages) in {:.1}s",
        deb.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(deb)
}

fn install(from: &Path, to: &Path, mode: u32) -> Result<()> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn write(to: &Path, text: &str, mode: u32) -> Result<()> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(to, text).with_context(|| format!("writing {}", to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn gzip(from: &Path, to: &Path) -> Result<()> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir)?;
    }
    let out = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .arg(from)
        .output()
        .context("running gzip")?;
    if !out.status.success() {
        bail!(
            "gzip {}: {}",
            from.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    write_bytes(to, &out.stdout)
}

fn write_bytes(to: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(to, bytes)?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// Symbols are of no use to an operator and triple the size; a missing `strip` only costs size.
fn strip(bin: &Path) {
    let ok = Command::new("strip")
        .arg("--strip-unneeded")
        .arg(bin)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("xtask: strip failed or missing (binutils): the binary keeps its symbols");
    }
}

fn tree_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for e in fs::read_dir(dir)? {
        let e = e?;
        let meta = e.metadata()?;
        total += if meta.is_dir() {
            tree_size(&e.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
