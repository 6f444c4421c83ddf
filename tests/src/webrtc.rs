//! The browser leg of the WebRTC gateway tests: aiortc (`tests/py/browser_leg.py`) in a venv
//! under `target/`, run inside a test namespace, SDP exchanged over its stdin/stdout.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Mutex, mpsc},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::netns::Netns;

/// Pinned like `cargo xtask setup` pins them.
const PACKAGES: &[&str] = &["aiortc==1.16.0", "aioice==0.13.0"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The venv's python, creating the venv first if it is missing (once per process; tests that
/// run at the same time wait for the first).
pub fn python() -> Result<PathBuf> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let venv = root().join("target/aiortc-venv");
    let py = venv.join("bin/python");
    let importable = || {
        Command::new(&py)
            .args(["-c", "import aiortc, aioice"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if importable() {
        return Ok(py);
    }
    crate::run("python3", &["-m", "venv", &venv.to_string_lossy()])
        .context("python3 -m venv (Debian: python3-venv; `cargo xtask setup` installs it)")?;
    let pip = venv.join("bin/pip");
    let mut args = vec!["install", "-q", "--disable-pip-version-check"];
    args.extend_from_slice(PACKAGES);
    crate::run(&pip.to_string_lossy(), &args).context("pip install aiortc")?;
    if !importable() {
        bail!("aiortc still not importable from {}", py.display());
    }
    Ok(py)
}

/// A running aiortc peer. Killed on drop.
pub struct BrowserLeg {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

/// What the peer saw, from its closing summary.
#[derive(Debug)]
pub struct Summary {
    pub ice: Vec<String>,
    pub connection: Vec<String>,
    pub dtls: Vec<String>,
    /// Encoded RTP payloads it sent, in order.
    pub sent: Vec<Vec<u8>>,
    /// (sequence number, payload type, payload) of what it received after SRTP.
    pub received: Vec<(u16, u8, Vec<u8>)>,
}

impl BrowserLeg {
    /// Starts the peer in `ns` as `role` ("offer" or "answer"), sending for `seconds`.
    pub fn start(ns: &Netns, role: &str, seconds: f32) -> Result<BrowserLeg> {
        let py = python()?;
        let script = root().join("tests/py/browser_leg.py");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(&py)
            .arg(&script)
            .args(["--role", role, "--seconds", &seconds.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting browser_leg.py")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(BrowserLeg {
            stdin: child.stdin.take(),
            child,
            lines,
        })
    }

    fn read(&self, key: &str, wait: Duration) -> Result<Value> {
        let line = self
            .lines
            .recv_timeout(wait)
            .with_context(|| format!("browser leg gave no `{key}` within {wait:?}"))?;
        let v: Value =
            serde_json::from_str(&line).with_context(|| format!("browser leg: {line}"))?;
        v.get(key)
            .cloned()
            .with_context(|| format!("browser leg: no `{key}` in {line}"))
    }

    /// The SDP the peer produced (its offer, or its answer after [`BrowserLeg::give_sdp`]).
    pub fn sdp(&self) -> Result<String> {
        Ok(self
            .read("sdp", Duration::from_secs(20))?
            .as_str()
            .context("sdp is not a string")?
            .to_owned())
    }

    /// Hands the peer the remote SDP (the answer to its offer, or the offer it answers).
    pub fn give_sdp(&mut self, sdp: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin gone")?;
        writeln!(stdin, "{}", serde_json::json!({ "sdp": sdp }))?;
        stdin.flush()?;
        Ok(())
    }

    /// Waits for the closing summary (the peer sends for its `seconds`, then reports).
    pub fn summary(&mut self, wait: Duration) -> Result<Summary> {
        let v = self.read("summary", wait)?;
        let strings = |k: &str| -> Vec<String> {
            v[k].as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| x.as_str().unwrap_or("").to_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        let sent = strings("sent").iter().map(|h| unhex(h)).collect();
        let received = v["received"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| {
                        (
                            r["seq"].as_u64().unwrap_or(0) as u16,
                            r["pt"].as_u64().unwrap_or(0) as u8,
                            unhex(r["payload"].as_str().unwrap_or("")),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Summary {
            ice: strings("ice"),
            connection: strings("connection"),
            dtls: strings("dtls"),
            sent,
            received,
        })
    }
}

impl Drop for BrowserLeg {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn unhex(h: &str) -> Vec<u8> {
    (0..h.len() / 2)
        .filter_map(|i| u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// The value of the first `a=NAME:` line.
pub fn attr<'a>(sdp: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("a={name}:");
    sdp.lines().find_map(|l| l.strip_prefix(prefix.as_str()))
}
