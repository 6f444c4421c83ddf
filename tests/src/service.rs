//! The installed systemd unit, run the way systemd would run it on a machine whose PID 1 is not
//! systemd: ExecStartPre lines with `+` as root, then ExecStart under `setpriv` as the unit's
//! user and group with exactly its capabilities (ambient, inheritable and bounding set), no new
//! privileges, its resource limits (`prlimit`), a clean environment, `/` as working directory,
//! and a NOTIFY_SOCKET on which it must say READY=1 (Type=notify). Only the network namespace
//! is the test's.

use std::{
    collections::BTreeMap,
    os::unix::{fs::PermissionsExt as _, net::UnixDatagram},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::netns::Netns;

/// The [Service] keys of a unit file; repeated keys keep every value.
pub struct Unit {
    keys: BTreeMap<String, Vec<String>>,
}

impl Unit {
    pub fn parse(text: &str) -> Unit {
        let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut section = String::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            if line.starts_with('[') {
                section = line.to_owned();
            } else if section == "[Service]"
                && let Some((k, v)) = line.split_once('=')
            {
                keys.entry(k.trim().into())
                    .or_default()
                    .push(v.trim().into());
            }
        }
        Unit { keys }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.keys
            .get(key)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    pub fn all(&self, key: &str) -> &[String] {
        self.keys.get(key).map(Vec::as_slice).unwrap_or_default()
    }

    /// `CAP_BPF CAP_NET_ADMIN` as setpriv wants them: `-all,+bpf,+net_admin`.
    fn caps(&self, key: &str) -> Result<String> {
        let v = self
            .get(key)
            .with_context(|| format!("the unit has no {key}"))?;
        let mut s = String::from("-all");
        for c in v.split_whitespace() {
            let name = c
                .strip_prefix("CAP_")
                .with_context(|| format!("{key}: {c}"))?;
            s.push_str(&format!(",+{}", name.to_ascii_lowercase()));
        }
        Ok(s)
    }

    /// The unit's limit for prlimit, at most the hard limit this process has: systemd (PID 1,
    /// every capability) can raise it, a test in a container without CAP_SYS_RESOURCE cannot,
    /// and says so.
    fn limit(&self, key: &str, resource: libc::__rlimit_resource_t) -> Option<String> {
        let want = match self.get(key)? {
            "infinity" => libc::RLIM_INFINITY,
            v => v.parse().ok()?,
        };
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        unsafe { libc::getrlimit(resource, &mut cur) };
        let n = if want > cur.rlim_max {
            eprintln!(
                "note: {key}={want} is above this process's hard limit {}; the daemon gets that",
                cur.rlim_max
            );
            cur.rlim_max
        } else {
            want
        };
        Some(if n == libc::RLIM_INFINITY {
            "unlimited".into()
        } else {
            n.to_string()
        })
    }
}

/// A daemon started from a [`Unit`]; SIGTERM on drop (what `systemctl stop` sends).
pub struct Service {
    child: Option<Child>,
    notify: UnixDatagram,
    notify_path: PathBuf,
    pub log: PathBuf,
    pub pid: u32,
}

impl Service {
    /// Runs ExecStartPre (as root) and ExecStart as the unit says, in `ns`; waits for READY=1.
    pub fn start(unit: &Unit, ns: &Netns, prefix: &str) -> Result<Service> {
        for pre in unit.all("ExecStartPre") {
            let Some(privileged) = pre.strip_prefix('+') else {
                bail!("ExecStartPre without '+' is not emulated: {pre}");
            };
            // In the test's network namespace, like ExecStart: the devices are there.
            let netns = format!("--net=/run/netns/{}", ns.name);
            let mut words = vec![netns.as_str()];
            words.extend(privileged.split_whitespace());
            crate::run("nsenter", &words).context("ExecStartPre")?;
        }
        let start = unit.get("ExecStart").context("the unit has no ExecStart")?;
        let user = unit.get("User").context("the unit has no User")?;
        let group = unit.get("Group").unwrap_or(user);
        let ambient = unit.caps("AmbientCapabilities")?;
        let bounding = unit.caps("CapabilityBoundingSet")?;
        let notify_path = std::env::temp_dir().join(format!("{prefix}-notify.sock"));
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path)?;
        std::fs::set_permissions(&notify_path, std::fs::Permissions::from_mode(0o666))?;
        let log = std::env::temp_dir().join(format!("{prefix}-daemon.log"));
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", ns.name))
            .arg("prlimit");
        if let Some(n) = unit.limit("LimitNOFILE", libc::RLIMIT_NOFILE) {
            cmd.arg(format!("--nofile={n}:{n}"));
        }
        if let Some(n) = unit.limit("LimitMEMLOCK", libc::RLIMIT_MEMLOCK) {
            cmd.arg(format!("--memlock={n}:{n}"));
        }
        cmd.args(["--", "setpriv"])
            .arg(format!("--reuid={user}"))
            .arg(format!("--regid={group}"))
            .arg("--init-groups")
            .arg(format!("--inh-caps={ambient}"))
            .arg(format!("--ambient-caps={ambient}"))
            .arg(format!("--bounding-set={bounding}"));
        if unit.get("NoNewPrivileges") == Some("yes") {
            cmd.arg("--no-new-privs");
        }
        cmd.arg("--")
            .args(start.split_whitespace())
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("NOTIFY_SOCKET", &notify_path)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        let child = cmd.spawn().context("spawning the unit's ExecStart")?;
        let pid = child.id();
        let mut s = Service {
            child: Some(child),
            notify,
            notify_path,
            log,
            pid,
        };
        s.wait_ready(Duration::from_secs(30))?;
        Ok(s)
    }

    /// Waits for READY=1 on the notify socket (after a start or a reload).
    pub fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let t0 = Instant::now();
        self.notify
            .set_read_timeout(Some(Duration::from_millis(200)))?;
        let mut buf = [0u8; 512];
        while t0.elapsed() < limit {
            if let Ok(n) = self.notify.recv(&mut buf)
                && String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l == "READY=1")
            {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Some(st) = c.try_wait()?
            {
                bail!(
                    "the daemon exited ({st}) before READY=1:\n{}",
                    self.log_text()
                );
            }
        }
        bail!("no READY=1 within {limit:?}:\n{}", self.log_text())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid as i32, sig) };
    }

    /// `systemctl stop`: SIGTERM and wait; true when it exited successfully.
    pub fn stop(&mut self) -> Result<bool> {
        let Some(mut child) = self.child.take() else {
            return Ok(true);
        };
        self.signal(libc::SIGTERM);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(15) {
            if let Some(st) = child.try_wait()? {
                return Ok(st.success());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!("the daemon ignored SIGTERM for 15 s")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_file(&self.notify_path);
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The capability sets of a process, from /proc/PID/status (hex masks).
pub fn capabilities(pid: u32) -> Result<BTreeMap<String, u64>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let mut out = BTreeMap::new();
    for l in status.lines() {
        if let Some((k, v)) = l.split_once(':')
            && k.starts_with("Cap")
        {
            out.insert(k.to_owned(), u64::from_str_radix(v.trim(), 16)?);
        }
    }
    Ok(out)
}

/// The real uid of a process.
pub fn uid(pid: u32) -> Result<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no Uid line")
}

/// True when `path` exists (a broken symlink counts).
pub fn exists(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}
