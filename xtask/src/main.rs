//! `cargo xtask <cmd>`: set-up of the eBPF toolchain, the demo, the whole test suite.
//! Every command runs the set-up checks first, so a fresh machine needs no other step.

mod package;
mod setup;

use std::process::{Command, ExitCode};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the eBPF build and the tests need, rtpengine included (idempotent).
    Setup,
    /// Build, start the relay on a throwaway namespace topology, show traffic crossing XDP.
    Demo,
    /// Forwarding rate and ns/packet against the floor program (and rtpengine with --peers);
    /// writes bench/results/latest.md and latest.png.
    Bench {
        /// Install Debian's rtpengine-daemon if needed and measure it on the same topology.
        #[arg(long)]
        peers: bool,
        /// Shorter trials and fewer search steps: a smoke run with rougher numbers.
        #[arg(long)]
        quick: bool,
        /// Only the HA figures (failover media gap, calls preserved, NG rate with Redis off and
        /// on); writes bench/results/ha.md (about 2 minutes warm).
        #[arg(long)]
        ha: bool,
    },
    /// Build the Debian package target/debian/xdp-relay_VERSION_amd64.deb (dpkg-deb, release build).
    Package {
        /// Package version [default: the workspace version].
        #[arg(long)]
        version: Option<String>,
    },
    /// Run every check and test: fmt, clippy (host and eBPF), unit, kernel, end-to-end, fuzz.
    Test {
        /// Seconds each fuzz target runs for.
        #[arg(long, default_value_t = 15)]
        fuzz_seconds: u32,
    },
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let env = setup::ensure()?;
    match cli.cmd {
        Cmd::Setup => {
            setup::install_peers()?;
            setup::install_redis()?;
            setup::ensure_webrtc_peer()
        }
        Cmd::Demo => {
            require_root("the demo creates network namespaces and loads XDP")?;
            cargo(
                &env,
                &[
                    "build",
                    "--package",
                    "relay-ctl",
                    "--package",
                    "relay-tests",
                    "--bins",
                ],
            )?;
            cargo(
                &env,
                &[
                    "run",
                    "--quiet",
                    "--package",
                    "relay-tests",
                    "--bin",
                    "relay-demo",
                ],
            )
        }
        Cmd::Test { fuzz_seconds } => test(&env, fuzz_seconds),
        Cmd::Package { version } => {
            setup::ensure_package_tools()?;
            package::build(&env, version.as_deref()).map(|_| ())
        }
        Cmd::Bench { peers, quick, ha } => {
            require_root("the bench creates network namespaces and loads XDP")?;
            setup::ensure_bench(peers)?;
            if ha {
                setup::install_redis()?;
            }
            // Release: the daemon's NG rate is compared with rtpengine's optimised C.
            cargo(
                &env,
                &[
                    "build",
                    "--release",
                    "--package",
                    "relay-bench",
                    "--package",
                    "relay-ctl",
                ],
            )?;
            let mut args = vec![
                "run",
                "--quiet",
                "--release",
                "--package",
                "relay-bench",
                "--",
            ];
            if peers {
                args.push("--peers");
            }
            if quick {
                args.push("--quick");
            }
            if ha {
                args.push("--ha");
            }
            cargo(&env, &args)
        }
    }
}

fn require_root(why: &str) -> Result<()> {
    let uid = Command::new("id").arg("-u").output()?.stdout;
    if String::from_utf8_lossy(&uid).trim() != "0" {
        bail!("run as root: {why}");
    }
    Ok(())
}

fn test(env: &setup::Env, fuzz_seconds: u32) -> Result<()> {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    if require_root("").is_err() {
        if ci {
            bail!("CI=true and not root: the kernel and end-to-end tests cannot run");
        }
        eprintln!("xtask: not root: privileged tests will report SKIPPED");
    }
    // The NG equivalence tests run Debian's rtpengine next to our daemon.
    setup::install_peers()?;
    // The HA tests run their own redis-server instances.
    setup::install_redis()?;
    // The WebRTC gateway tests drive aiortc as the browser leg.
    setup::ensure_webrtc_peer()?;
    step("cargo fmt --check");
    cargo(env, &["fmt", "--all", "--check"])?;
    step("clippy (workspace)");
    cargo(
        env,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    step("clippy (eBPF crate, bpfel-unknown-none)");
    cargo(
        env,
        &[
            "+nightly",
            "clippy",
            "--package",
            "relay-ebpf",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--target-dir",
            "target/ebpf-clippy",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    step("build binaries (end-to-end tests run relay-ctl as a process)");
    cargo(env, &["build", "--workspace", "--bins"])?;
    step("Debian packages (this version and a later one, for the install and upgrade test)");
    setup::ensure_package_tools()?;
    let version = package::workspace_version()?;
    let deb = package::build(env, Some(&version))?;
    let upgrade = package::build(env, Some(&format!("{version}+upgrade1")))?;
    step("tests (unit, kernel, end-to-end, package install)");
    let mut cmd = Command::new("cargo");
    cmd.envs(env.vars())
        .env("XDP_RELAY_DEB", std::fs::canonicalize(&deb)?)
        .env("XDP_RELAY_DEB_UPGRADE", std::fs::canonicalize(&upgrade)?)
        .args(["test", "--workspace", "--no-fail-fast"]);
    status(&mut cmd)?;
    step("fuzz targets (bounded)");
    for target in fuzz_targets()? {
        let secs = format!("-max_total_time={fuzz_seconds}");
        let mut cmd = Command::new("cargo");
        cmd.envs(env.vars())
            .current_dir("fuzz")
            .args(["+nightly", "fuzz", "run", &target, "--", &secs]);
        status(&mut cmd).with_context(|| format!("fuzz target {target}"))?;
    }
    step("all checks passed");
    Ok(())
}

fn fuzz_targets() -> Result<Vec<String>> {
    let mut out = Vec::new();
    let dir = std::path::Path::new("fuzz/fuzz_targets");
    if !dir.exists() {
        return Ok(out);
    }
    for entry in std::fs::read_dir(dir).context("reading fuzz/fuzz_targets")? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            out.push(stem.to_owned());
        }
    }
    out.sort();
    Ok(out)
}

fn step(what: &str) {
    eprintln!("\n==> {what}");
}

fn cargo(env: &setup::Env, args: &[&str]) -> Result<()> {
    let mut cmd = Command::new("cargo");
    cmd.envs(env.vars()).args(args);
    status(&mut cmd)
}

fn status(cmd: &mut Command) -> Result<()> {
    let st = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}
