//! Kamailio (Debian's 5.6 with its rtpengine module) and sipp as child processes inside test
//! namespaces, each stopped on drop, with their files in a per-test directory removed on drop.
//! The configuration and scenarios are templates in `tests/kamailio/`.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::netns::Netns;

pub const KAMAILIO_BIN: &str = "/usr/sbin/kamailio";
pub const SIPP_BIN: &str = "/usr/bin/sipp";
pub const RTPENGINE_MODULE: &str = "/usr/lib/x86_64-linux-gnu/kamailio/modules/rtpengine.so";

/// Where the templates are (`tests/kamailio`).
pub fn template_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kamailio")
}

/// Whether Kamailio, its rtpengine module and sipp are installed (`cargo xtask setup` does it).
pub fn missing() -> Option<&'static str> {
    [KAMAILIO_BIN, RTPENGINE_MODULE, SIPP_BIN]
        .into_iter()
        .find(|p| !Path::new(p).exists())
}

/// A scratch directory for one test's files, removed on drop.
pub struct Workdir {
    pub path: PathBuf,
}

impl Workdir {
    pub fn new(prefix: &str) -> Result<Workdir> {
        let path = std::env::temp_dir().join(format!("{prefix}-kamailio"));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        Ok(Workdir { path })
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A child process, killed (SIGTERM, then SIGKILL after 5 s) and reaped on drop.
pub struct Proc {
    pub name: &'static str,
    child: Option<Child>,
}

impl Proc {
    fn spawn(name: &'static str, ns: &Netns, bin: &str, args: &[String]) -> Result<Proc> {
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", ns.name))
            .arg(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {bin}"))?;
        Ok(Proc {
            name,
            child: Some(child),
        })
    }

    /// The exit status once the process ends, or an error after `limit` (the process is then
    /// stopped by drop).
    pub fn wait(&mut self, limit: Duration) -> Result<(ExitStatus, String)> {
        let t0 = Instant::now();
        let Some(c) = self.child.as_mut() else {
            bail!("{}: already reaped", self.name);
        };
        loop {
            if let Some(st) = c.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = c.stderr.take() {
                    use std::io::Read as _;
                    let _ = e.read_to_string(&mut err);
                }
                self.child = None;
                return Ok((st, err));
            }
            if t0.elapsed() > limit {
                bail!("{} still running after {limit:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM, wait up to 5 s, then SIGKILL; returns what it wrote to stderr.
    pub fn stop(&mut self) -> String {
        let Some(mut c) = self.child.take() else {
            return String::new();
        };
        // SAFETY: signalling our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if matches!(c.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        let mut err = String::new();
        if let Some(mut e) = c.stderr.take() {
            use std::io::Read as _;
            let _ = e.read_to_string(&mut err);
        }
        err
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The values a configuration template gets: each `@NAME@` is replaced.
pub fn render(template: &str, values: &[(&str, &str)]) -> Result<String> {
    let mut out = template.to_owned();
    for (k, v) in values {
        out = out.replace(&format!("@{k}@"), v);
    }
    if let Some(i) = out.find('@').filter(|&i| {
        out[i + 1..].split('@').next().is_some_and(|n| {
            !n.is_empty() && n.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
        })
    }) {
        bail!(
            "template placeholder left unfilled near: {}",
            &out[i..(i + 30).min(out.len())]
        );
    }
    Ok(out)
}

/// Kamailio with `tests/kamailio/kamailio.cfg` rendered with `values`, in `ns`, in the
/// foreground (`-DD -E`, logs on stderr); checked with `-c` first so a bad template fails with
/// Kamailio's own message.
pub fn start_kamailio(ns: &Netns, dir: &Workdir, values: &[(&str, &str)]) -> Result<Proc> {
    let template = std::fs::read_to_string(template_dir().join("kamailio.cfg"))?;
    let cfg = dir.file("kamailio.cfg");
    std::fs::write(&cfg, render(&template, values)?)?;
    let run_dir = dir.file("run");
    std::fs::create_dir_all(&run_dir)?;
    let cfg_s = cfg.display().to_string();
    let check = Command::new(KAMAILIO_BIN)
        .args(["-c", "-f", &cfg_s])
        .output()?;
    if !check.status.success() {
        bail!(
            "kamailio -c refused the configuration: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let args: Vec<String> = [
        "-f",
        &cfg_s,
        "-DD",
        "-E",
        "-m",
        "64",
        "-M",
        "8",
        "-Y",
        &run_dir.display().to_string(),
        "-P",
        &dir.file("kamailio.pid").display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Proc::spawn("kamailio", ns, KAMAILIO_BIN, &args)
}

/// One sipp run of a scenario in `tests/kamailio/`, `calls` calls, messages traced to
/// `DIR/NAME-messages.log`.
pub struct SippRun<'a> {
    pub name: &'static str,
    pub scenario: &'a str,
    pub local: &'a str,
    pub sip_port: u16,
    /// sipp's own media port (it binds it even when the scenario sends no media).
    pub media_port: u16,
    /// `[rtp_port]` in the scenario: the test's RTP socket.
    pub rtp_port: u16,
    /// The `<pause/>` length in ms (`-d`).
    pub pause_ms: u64,
    /// Remote SIP address for a caller; None for a callee.
    pub remote: Option<&'a str>,
    /// Calls to place (a caller) or to answer (a callee) before sipp exits (`-m`).
    pub calls: u32,
}

impl SippRun<'_> {
    pub fn messages(&self, dir: &Workdir) -> PathBuf {
        dir.file(&format!("{}-messages.log", self.name))
    }

    pub fn start(&self, ns: &Netns, dir: &Workdir) -> Result<Proc> {
        let mut args: Vec<String> = vec![
            "-sf".into(),
            template_dir().join(self.scenario).display().to_string(),
            "-i".into(),
            self.local.into(),
            "-p".into(),
            self.sip_port.to_string(),
            "-mi".into(),
            self.local.into(),
            "-mp".into(),
            self.media_port.to_string(),
            "-m".into(),
            self.calls.to_string(),
            "-d".into(),
            self.pause_ms.to_string(),
            "-key".into(),
            "rtp_port".into(),
            self.rtp_port.to_string(),
            "-trace_msg".into(),
            "-message_file".into(),
            self.messages(dir).display().to_string(),
            "-trace_err".into(),
            "-error_file".into(),
            dir.file(&format!("{}-errors.log", self.name))
                .display()
                .to_string(),
            "-timeout".into(),
            "30s".into(),
            "-timeout_error".into(),
            "-nostdin".into(),
        ];
        if let Some(r) = self.remote {
            args.push(r.into());
        }
        Proc::spawn(self.name, ns, SIPP_BIN, &args)
    }
}

/// The SDP bodies of the messages sipp received whose first line starts with `first_line`
/// (`SIP/2.0 200`, `INVITE`), in order, from its message trace.
pub fn received_sdps(trace: &Path, first_line: &str) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(trace).with_context(|| format!("reading {}", trace.display()))?;
    let mut out = Vec::new();
    // sipp writes "----- ... message received [N] bytes :" before each received message and a
    // line of dashes before the next entry.
    for block in text.split("-----------------------------------------------") {
        let Some(pos) = block.find("message received") else {
            continue;
        };
        let msg = block[pos..].split_once('\n').map_or("", |(_, m)| m);
        let msg = msg.trim_start_matches(['\r', '\n']);
        if !msg.starts_with(first_line) {
            continue;
        }
        let body = msg
            .split_once("\r\n\r\n")
            .or_else(|| msg.split_once("\n\n"))
            .map_or("", |(_, b)| b);
        if body.trim_start().starts_with("v=0") {
            out.push(body.trim_end_matches(['\n', '\r']).to_owned() + "\r\n");
        }
    }
    Ok(out)
}

/// The relay endpoint facing the participant whose tag contains `who`, from our `query`.
pub fn relay_port(
    call: &serde_json::Map<String, serde_json::Value>,
    who: &str,
) -> Option<std::net::SocketAddr> {
    let tags = call.get("tags")?.as_object()?;
    let (_, t) = tags.iter().find(|(k, _)| k.contains(who))?;
    let s = t.get("medias")?.get(0)?.get("streams")?.get(0)?;
    let ep = s.get("local endpoint")?;
    Some(std::net::SocketAddr::new(
        ep.get("address")?.as_str()?.parse().ok()?,
        u16::try_from(ep.get("port")?.as_u64()?).ok()?,
    ))
}
