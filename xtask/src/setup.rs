//! Idempotent set-up of the eBPF toolchain: nightly `rust-src`, LLVM development packages of the
//! same major as nightly rustc, bpf-linker built against that LLVM, cargo-fuzz, and the system
//! tools the tests use. Each step checks first and says what it found.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

const BPF_LINKER_VERSION: &str = "0.13.0";
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Debian packages the tests and demo use besides the LLVM ones.
const TOOLS: &[&str] = &[
    "iproute2",
    "ethtool",
    "util-linux",
    "libzstd-dev",
    "zlib1g-dev",
    // DTLS-SRTP and SRTP termination: OpenSSL (the `openssl` crate) and libsrtp2 (FFI).
    "libssl-dev",
    "libsrtp2-dev",
    "pkg-config",
    // The WebRTC test peer (aiortc) runs in a venv under target/.
    "python3-venv",
];

/// The browser-like test peer and its ICE stack, from PyPI, pinned.
pub const WEBRTC_PEER: &[&str] = &["aiortc==1.16.0", "aioice==0.13.0"];

/// Creates `target/aiortc-venv` with [`WEBRTC_PEER`] unless it is there already.
pub fn ensure_webrtc_peer() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = root.join("target/aiortc-venv");
    let python = venv.join("bin/python");
    let ok = |py: &PathBuf| {
        Command::new(py)
            .args(["-c", "import aiortc, aioice"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ok(&python) {
        report("aiortc venv", "present");
        return Ok(());
    }
    let t0 = Instant::now();
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))
        .context("python3 -m venv failed (is python3-venv installed?)")?;
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check"])
        .args(WEBRTC_PEER))
    .context("pip install aiortc failed (is PyPI reachable?)")?;
    if !ok(&python) {
        bail!(
            "{} cannot import aiortc after installing it",
            python.display()
        );
    }
    report(
        "aiortc venv",
        &format!("installed in {:.1}s", t0.elapsed().as_secs_f64()),
    );
    Ok(())
}

/// What later cargo invocations need in their environment.
pub struct Env {
    llvm_bin: PathBuf,
}

impl Env {
    pub fn vars(&self) -> Vec<(String, String)> {
        let path = std::env::var("PATH").unwrap_or_default();
        vec![("PATH".into(), format!("{}:{path}", self.llvm_bin.display()))]
    }
}

pub fn ensure() -> Result<Env> {
    let t0 = Instant::now();
    let major = nightly_llvm_major()?;
    report("nightly rustc", &format!("LLVM {major}"));

    if installed_components()?
        .iter()
        .any(|c| c.starts_with("rust-src"))
    {
        report("rust-src (nightly)", "present");
    } else {
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
            .context("rustup could not add rust-src to nightly; check network access to the Rust distribution server")?;
        report("rust-src (nightly)", "installed");
    }

    let llvm = [format!("llvm-{major}-dev"), format!("libpolly-{major}-dev")];
    let mut want: Vec<String> = llvm.to_vec();
    want.extend(TOOLS.iter().map(|s| s.to_string()));
    let missing: Vec<String> = want.into_iter().filter(|p| !deb_installed(p)).collect();
    if missing.is_empty() {
        report("Debian packages", "present");
    } else {
        apt_install(&missing)?;
        report(
            "Debian packages",
            &format!("installed {}", missing.join(" ")),
        );
    }
    let llvm_bin = PathBuf::from(format!("/usr/lib/llvm-{major}/bin"));
    if !llvm_bin.join("llvm-config").exists() {
        bail!(
            "{} missing after installing llvm-{major}-dev",
            llvm_bin.join("llvm-config").display()
        );
    }

    match bpf_linker_llvm_major() {
        Some(m) if m == major => report("bpf-linker", &format!("present, LLVM {m}")),
        found => {
            if let Some(m) = found {
                eprintln!(
                    "xtask: bpf-linker is linked against LLVM {m} but nightly rustc uses LLVM {major}: rebuilding"
                );
            }
            let path = format!(
                "{}:{}",
                llvm_bin.display(),
                std::env::var("PATH").unwrap_or_default()
            );
            run(Command::new("cargo")
                .env("PATH", path)
                .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION, "--locked", "--force"])
                .args(["--no-default-features", "--features", &format!("llvm-{major}")]))
            .context("building bpf-linker failed; with `unable to find library -lLLVM`, check that llvm-dev of the same major is installed")?;
            match bpf_linker_llvm_major() {
                Some(m) if m == major => report("bpf-linker", &format!("installed, LLVM {m}")),
                other => {
                    bail!("bpf-linker installed but links LLVM {other:?}, rustc needs {major}")
                }
            }
        }
    }

    let fuzz_ok = Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if fuzz_ok {
        report("cargo-fuzz", "present");
    } else {
        run(Command::new("cargo").args([
            "install",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
            "--locked",
        ]))
        .context("installing cargo-fuzz")?;
        report("cargo-fuzz", "installed");
    }
    eprintln!(
        "xtask: set-up checked in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    Ok(Env { llvm_bin })
}

/// What `cargo xtask bench` needs beyond the build: a font for the plot's labels, nftables
/// for the kernel-path peer, and rtpengine when it is measured too.
pub fn ensure_bench(peers: bool) -> Result<()> {
    for pkg in ["fonts-dejavu-core", "nftables"] {
        if deb_installed(pkg) {
            report(pkg, "present");
        } else {
            apt_install(&[pkg.to_owned()])?;
            report(pkg, "installed");
        }
    }
    if peers {
        install_peers()?;
    }
    Ok(())
}

/// What `cargo xtask package` and the install test use: dpkg-deb (dpkg), strip (binutils),
/// gzip, useradd (passwd, for the package's postinst), setpriv (util-linux), script (bsdutils,
/// the pseudo-terminal of the `relay-ctl top` test) and systemd-analyze (systemd; installed
/// without being started: PID 1 stays what it is).
pub fn ensure_package_tools() -> Result<()> {
    let want = [
        "dpkg",
        "binutils",
        "gzip",
        "passwd",
        "util-linux",
        "bsdutils",
        "systemd",
    ];
    let missing: Vec<String> = want
        .iter()
        .filter(|p| !deb_installed(p))
        .map(|p| p.to_string())
        .collect();
    if missing.is_empty() {
        report("packaging tools", "present");
    } else {
        let _policy = PolicyGuard::install()?;
        apt_install(&missing)?;
        report(
            "packaging tools",
            &format!("installed {}", missing.join(" ")),
        );
    }
    Ok(())
}

/// Installs Debian's `redis-server` for the HA tests, which start their own instances on the
/// loopback of a test namespace; the package's service is not started (policy-rc.d).
pub fn install_redis() -> Result<()> {
    const BIN: &str = "/usr/bin/redis-server";
    if std::path::Path::new(BIN).exists() {
        report("redis-server", "present");
        return Ok(());
    }
    let _policy = PolicyGuard::install()?;
    if !apt_has_candidate("redis-server") {
        run(Command::new("apt-get").args(["update", "-q"]))
            .context("apt-get update failed (are you root, is the Debian mirror reachable?)")?;
    }
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args([
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "redis-server",
        ]))
    .context("apt-get install redis-server failed")?;
    if !std::path::Path::new(BIN).exists() {
        bail!("redis-server installed but {BIN} is missing");
    }
    report("redis-server", "installed");
    Ok(())
}

/// Debian package of the reference NG implementation the equivalence tests run next to ours.
const PEER_PACKAGE: &str = "rtpengine-daemon";
/// Where Debian's invoke-rc.d looks for a policy; exit code 101 means "do not start services".
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// What the Kamailio test needs beside rtpengine: Kamailio (5.6 in Debian 12, its rtpengine
/// module included) and sipp (Debian's `sip-tester`), each with the file that shows it is there.
const SIP_PACKAGES: &[(&str, &str)] = &[
    (
        "kamailio",
        "/usr/lib/x86_64-linux-gnu/kamailio/modules/rtpengine.so",
    ),
    ("sip-tester", "/usr/bin/sipp"),
];

/// Installs rtpengine (Debian's `rtpengine-daemon`) for the NG equivalence tests, and Kamailio
/// and sipp for the Kamailio test. Idempotent: nothing happens when all are on the machine. The
/// packages' maintainer scripts would start the system services; the tests run their own
/// instances in namespaces, so a policy-rc.d forbids that start for the duration of the
/// install, and an rtpengine that started anyway (pid file of the init script, absent before)
/// is stopped.
pub fn install_peers() -> Result<()> {
    let mut missing: Vec<String> = SIP_PACKAGES
        .iter()
        .filter(|(_, file)| !std::path::Path::new(file).exists())
        .map(|(pkg, _)| (*pkg).to_owned())
        .collect();
    for (pkg, file) in SIP_PACKAGES {
        if !missing.iter().any(|m| m == pkg) {
            report(pkg, &format!("present ({file})"));
        }
    }
    match rtpengine_bin() {
        Some(bin) => report("rtpengine", &format!("present ({})", bin.display())),
        None => missing.push(PEER_PACKAGE.to_owned()),
    }
    if missing.is_empty() {
        return Ok(());
    }
    let t0 = Instant::now();
    // Where Debian's unit and init script (default and fallback) keep the service's pid.
    let pid_files = ["/run/rtpengine/rtpengine-daemon.pid", "/run/rtpengine.pid"];
    let pid_before: Vec<Option<String>> = pid_files
        .iter()
        .map(|f| std::fs::read_to_string(f).ok())
        .collect();
    let _policy = PolicyGuard::install()?;
    // The package lists are fetched once per machine: only when apt knows no candidate yet.
    if !missing.iter().all(|p| apt_has_candidate(p)) {
        run(Command::new("apt-get").args(["update", "-q"]))
            .context("apt-get update failed (are you root, is the Debian mirror reachable?)")?;
    }
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing))
    .with_context(|| format!("apt-get install {} failed", missing.join(" ")))?;
    drop(_policy);
    // Only a daemon whose pid file appeared during this install is ours to stop.
    for (file, before) in pid_files.iter().zip(pid_before) {
        let Ok(now) = std::fs::read_to_string(file) else {
            continue;
        };
        if before.as_deref() == Some(now.as_str()) {
            continue;
        }
        if let Ok(pid) = now.trim().parse::<u32>()
            && pid > 1
        {
            eprintln!("xtask: stopping the rtpengine service the package started (pid {pid})");
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
    let Some(bin) = rtpengine_bin() else {
        bail!("{PEER_PACKAGE} installed but no rtpengine binary found");
    };
    report(
        &missing.join(", "),
        &format!(
            "installed (rtpengine at {}) in {:.1}s",
            bin.display(),
            t0.elapsed().as_secs_f64()
        ),
    );
    Ok(())
}

/// The rtpengine binary on PATH or where Debian puts it.
pub fn rtpengine_bin() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("rtpengine"));
    on_path
        .chain([
            PathBuf::from("/usr/bin/rtpengine"),
            PathBuf::from("/usr/sbin/rtpengine"),
        ])
        .find(|p| p.is_file())
}

fn apt_has_candidate(pkg: &str) -> bool {
    Command::new("apt-cache")
        .args(["policy", pkg])
        .output()
        .is_ok_and(|o| {
            let text = String::from_utf8_lossy(&o.stdout);
            text.lines()
                .find_map(|l| l.trim().strip_prefix("Candidate:"))
                .is_some_and(|c| c.trim() != "(none)")
        })
}

/// A policy-rc.d that refuses every service start, present while it lives. An existing policy
/// (a container image usually ships one) is left as it is and not removed.
struct PolicyGuard {
    created: bool,
}

impl PolicyGuard {
    fn install() -> Result<PolicyGuard> {
        use std::os::unix::fs::PermissionsExt as _;
        let path = std::path::Path::new(POLICY_RC_D);
        if path.exists() {
            return Ok(PolicyGuard { created: false });
        }
        std::fs::write(
            path,
            "#!/bin/sh\n# written by cargo xtask for one apt-get install\nexit 101\n",
        )
        .with_context(|| format!("writing {POLICY_RC_D}"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
        Ok(PolicyGuard { created: true })
    }
}

impl Drop for PolicyGuard {
    fn drop(&mut self) {
        if self.created {
            let _ = std::fs::remove_file(POLICY_RC_D);
        }
    }
}

fn report(what: &str, state: &str) {
    eprintln!("xtask: {what:<20} {state}");
}

fn nightly_llvm_major() -> Result<u32> {
    let out = Command::new("rustc")
        .args(["+nightly", "-vV"])
        .output()
        .context("running `rustc +nightly -vV`; is rustup installed?")?;
    if !out.status.success() {
        bail!(
            "no nightly toolchain: the image ships one; otherwise `rustup toolchain install nightly` (its LLVM major must match bpf-linker's)"
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse().ok())
        .context("`rustc +nightly -vV` printed no LLVM version")
}

fn installed_components() -> Result<Vec<String>> {
    let out = Command::new("rustup")
        .args(["+nightly", "component", "list", "--installed"])
        .output()
        .context("running rustup")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

fn deb_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn apt_install(pkgs: &[String]) -> Result<()> {
    run(Command::new("apt-get").args(["update", "-q"]))
        .context("apt-get update failed (are you root, is the Debian mirror reachable?)")?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(pkgs))
    .with_context(|| format!("apt-get install {} failed", pkgs.join(" ")))
}

/// The LLVM major bpf-linker is linked against, read from its dynamic dependencies.
fn bpf_linker_llvm_major() -> Option<u32> {
    let out = Command::new("sh")
        .args(["-c", "ldd \"$(command -v bpf-linker)\""])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let lib = text.split_whitespace().find(|w| w.starts_with("libLLVM"))?;
    // libLLVM.so.22.1 or libLLVM-22.so
    lib.trim_start_matches("libLLVM")
        .trim_start_matches(['-', '.'])
        .trim_start_matches("so.")
        .split(['.', '-'])
        .next()?
        .parse()
        .ok()
}

fn run(cmd: &mut Command) -> Result<()> {
    let st = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}
