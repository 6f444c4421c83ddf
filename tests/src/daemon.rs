//! The relay daemon as a child process inside a namespace, stopped on drop, and an NG client
//! that talks to it from inside the same namespace (its control socket is on that loopback).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use relay_ctl::client::{ClientError, NgClient};
use serde_json::{Map, Value};

use crate::netns::Netns;

pub const NG: &str = "127.0.0.1:2223";

pub struct Daemon {
    child: Option<Child>,
    /// A state file the harness chose (removed on drop); None when the test passed its own.
    own_state: Option<PathBuf>,
    pub netns: String,
    pub pin_dir: PathBuf,
}

/// The relay-ctl binary built next to the running test or demo.
pub fn relay_ctl_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/debug/deps/test-xxxx or target/debug/relay-demo
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join("relay-ctl");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "relay-ctl binary not found near {} (cargo builds it for integration tests)",
        exe.display()
    )
}

impl Daemon {
    /// Starts `relay-ctl daemon ARGS` in `ns` and waits until it answers an NG ping.
    pub fn start(ns: &Netns, pin_dir: &Path, args: &[&str]) -> Result<Daemon> {
        let bin = relay_ctl_bin()?;
        // Never the host's default state file: each daemon gets its own unless the test says.
        let own_state = (!args.iter().any(|a| a.starts_with("--state-file"))).then(|| {
            std::env::temp_dir().join(format!("{}-{}-state.json", ns.name, std::process::id()))
        });
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", ns.name))
            .arg(&bin)
            .arg("daemon")
            .arg("--pin-dir")
            .arg(pin_dir)
            .args(args)
            .args(
                own_state
                    .iter()
                    .map(|p| format!("--state-file={}", p.display())),
            )
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut d = Daemon {
            child: Some(child),
            own_state,
            netns: ns.name.clone(),
            pin_dir: pin_dir.to_owned(),
        };
        let t0 = Instant::now();
        loop {
            if let Some(c) = d.child.as_mut()
                && let Some(st) = c.try_wait()?
            {
                bail!("relay-ctl daemon exited during start-up: {st}");
            }
            if ng_call(ns, serde_json::json!({"command": "ping"})).is_ok() {
                return Ok(d);
            }
            if t0.elapsed() > Duration::from_secs(20) {
                bail!("relay-ctl daemon did not answer ping within 20 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL and wait: a crash or an OOM kill, nothing runs on the way out.
    pub fn kill(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        child.kill().context("SIGKILL to our daemon")?;
        child.wait()?;
        Ok(())
    }

    /// SIGTERM and wait (what an init system does); returns the exit status success.
    pub fn stop(&mut self) -> Result<bool> {
        let Some(mut child) = self.child.take() else {
            return Ok(true);
        };
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Some(st) = child.try_wait()? {
                return Ok(st.success());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!("daemon ignored SIGTERM for 10 s")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.stop();
        if let Some(p) = &self.own_state {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// One NG request to our daemon from inside `ns`; `Err` for transport errors and `error`
/// results alike.
pub fn ng_call(ns: &Netns, request: Value) -> Result<Map<String, Value>> {
    ng_call_at(ns, NG.parse().expect("NG address"), request)
}

/// One NG request to any NG server (ours or rtpengine) at `server`, sent from inside `ns`;
/// `Err` for transport errors and `error` results alike.
pub fn ng_call_at(ns: &Netns, server: SocketAddr, request: Value) -> Result<Map<String, Value>> {
    match ng_reply(ns, server, request)? {
        r if r.get("result").and_then(Value::as_str) == Some("error") => bail!(
            "NG request refused: {}",
            r.get("error-reason")
                .and_then(Value::as_str)
                .unwrap_or("no reason given")
        ),
        r => Ok(r),
    }
}

/// One NG request to `server` from inside `ns`, returning the reply dictionary whatever its
/// `result` (an error reply comes back as `{"result": "error", "error-reason": ...}`), so two
/// servers' answers can be compared; `Err` only when no usable reply arrived.
pub fn ng_reply(ns: &Netns, server: SocketAddr, request: Value) -> Result<Map<String, Value>> {
    let Value::Object(req) = request else {
        bail!("NG request must be a dictionary");
    };
    ns.run(move || -> Result<Map<String, Value>> {
        let c = NgClient::new(server, Duration::from_millis(500), 2)?;
        match c.call(&req) {
            Ok(r) => Ok(r),
            Err(ClientError::Refused { reason, .. }) => {
                let mut m = Map::new();
                m.insert("result".into(), "error".into());
                m.insert("error-reason".into(), reason.into());
                Ok(m)
            }
            Err(e) => Err(e.into()),
        }
    })?
}
