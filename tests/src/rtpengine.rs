//! Debian's rtpengine as a child process inside a namespace, the reference the NG equivalence
//! tests compare our daemon with. Userspace forwarding only (`--table=-1`: no kernel module), no
//! configuration file from /etc, its log in a temporary file; stopped and reaped on drop, so on
//! every exit path including panics.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use crate::{daemon::ng_call_at, netns::Netns};

/// The rtpengine binary (`cargo xtask setup` installs Debian's `rtpengine-daemon`).
pub fn rtpengine_bin() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("rtpengine"));
    on_path
        .chain([PathBuf::from("/usr/bin/rtpengine")])
        .find(|p| p.is_file())
}

/// True when rtpengine is installed. Like [`crate::privileged`]: under `CI=true` a missing
/// rtpengine fails the test (CI installs it through `cargo xtask test`), elsewhere it skips.
pub fn available(test: &str) -> bool {
    if rtpengine_bin().is_some() {
        return true;
    }
    let why = "needs rtpengine (Debian's rtpengine-daemon; `cargo xtask setup` installs it)";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: cannot run under CI=true: {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
    false
}

/// What an rtpengine instance listens on.
pub struct RtpengineConfig<'a> {
    /// rtpengine's `--interface` values, `NAME/ADDRESS`.
    pub interfaces: &'a [&'a str],
    /// The NG control socket (UDP), inside the namespace.
    pub ng: SocketAddr,
    pub port_min: u16,
    pub port_max: u16,
    /// Further command-line options.
    pub extra: &'a [&'a str],
}

pub struct Rtpengine {
    child: Option<Child>,
    pub ng: SocketAddr,
    pub log: PathBuf,
}

impl Rtpengine {
    /// Starts `rtpengine --foreground` in `ns` and waits (at most 20 s) until NG `ping` answers.
    pub fn start(ns: &Netns, cfg: &RtpengineConfig) -> Result<Rtpengine> {
        let bin = rtpengine_bin().context("rtpengine is not installed (cargo xtask setup)")?;
        let log =
            std::env::temp_dir().join(format!("{}-{}-rtpengine.log", ns.name, std::process::id()));
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", ns.name))
            .arg(&bin)
            // Never /etc/rtpengine/rtpengine.conf: the test alone says how it runs.
            .arg("--config-file=none")
            .arg("--foreground")
            .arg("--log-stderr")
            .arg("--log-level=6")
            // Userspace forwarding only: no kernel module, no iptables rules.
            .arg("--table=-1")
            .arg("--num-threads=2")
            .arg(format!("--listen-ng={}", cfg.ng))
            .arg(format!("--port-min={}", cfg.port_min))
            .arg(format!("--port-max={}", cfg.port_max))
            .args(cfg.interfaces.iter().map(|i| format!("--interface={i}")))
            .args(cfg.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut r = Rtpengine {
            child: Some(child),
            ng: cfg.ng,
            log,
        };
        let t0 = Instant::now();
        loop {
            if let Some(c) = r.child.as_mut()
                && let Some(st) = c.try_wait()?
            {
                r.child = None;
                bail!("rtpengine exited during start-up: {st}\n{}", r.log_tail());
            }
            if ng_call_at(ns, cfg.ng, json!({"command": "ping"}))
                .is_ok_and(|p| p["result"] == "pong")
            {
                return Ok(r);
            }
            if t0.elapsed() > Duration::from_secs(20) {
                bail!(
                    "rtpengine did not answer ping within 20 s\n{}",
                    r.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// rtpengine's process id (nsenter execs it), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The last lines of rtpengine's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after 5 s; always reaped.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // nsenter execs rtpengine, so the child's pid is rtpengine's. SAFETY: our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Rtpengine {
    fn drop(&mut self) {
        self.stop();
        // Kept when the test is failing, for the post-mortem.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}
