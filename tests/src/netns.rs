//! Network namespaces, veth pairs and a private bpffs, each removed on drop.

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

use crate::run;

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Result<Netns> {
        run("ip", &["netns", "add", name])?;
        let ns = Netns {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Turns on IPv4 and IPv6 forwarding: the kernel's FIB lookup from XDP refuses to answer
    /// for devices that do not forward.
    pub fn enable_forwarding(&self) -> Result<()> {
        run(
            "ip",
            &[
                "netns",
                "exec",
                &self.name,
                "sysctl",
                "-qw",
                "net.ipv4.conf.all.forwarding=1",
                "net.ipv6.conf.all.forwarding=1",
            ],
        )?;
        Ok(())
    }

    /// Runs `f` on a thread that has entered this namespace; sockets it creates live there.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        self.spawn(f)?
            .join()
            .map_err(|_| anyhow::anyhow!("thread in netns panicked"))?
    }

    /// Like [`Netns::run`] without waiting: for hosts that must act at the same time (two ICE
    /// agents checking against the relay at once).
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::thread::JoinHandle<Result<T>>> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        Ok(std::thread::spawn(move || {
            // SAFETY: setns on this thread only; the fd is valid for the call.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(anyhow::anyhow!(
                    "setns: {}",
                    std::io::Error::last_os_error()
                ));
            }
            Ok(f())
        }))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace also removes the veth ends inside it.
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// Runs `f` on a thread that has entered the namespace named `name` and waits for it.
pub fn in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let path = format!("/run/netns/{name}");
    let file = File::open(&path).with_context(|| format!("opening {path}"))?;
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only; the fd is valid for the call.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(anyhow::anyhow!(
                "setns: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in netns panicked"))?
}

/// Creates a veth pair with `a` in `ns_a` and `b` in `ns_b`, addressed and up.
pub fn veth(
    ns_a: &Netns,
    a: &str,
    addr_a: &str,
    ns_b: &Netns,
    b: &str,
    addr_b: &str,
) -> Result<()> {
    run(
        "ip",
        &[
            "link", "add", a, "netns", &ns_a.name, "type", "veth", "peer", "name", b, "netns",
            &ns_b.name,
        ],
    )?;
    for (ns, dev, addr) in [(ns_a, a, addr_a), (ns_b, b, addr_b)] {
        let v6 = addr.contains(':');
        if v6 {
            ns.ip(&["-6", "addr", "add", addr, "dev", dev, "nodad"])?;
        } else {
            ns.ip(&["addr", "add", addr, "dev", dev])?;
        }
        ns.ip(&["link", "set", dev, "up"])?;
    }
    Ok(())
}

/// A bpffs mounted on a fresh temporary directory, unmounted and removed on drop, so tests
/// never touch the host's /sys/fs/bpf.
pub struct Bpffs {
    pub path: PathBuf,
}

impl Bpffs {
    pub fn new(prefix: &str) -> Result<Bpffs> {
        let path = std::env::temp_dir().join(format!("{prefix}-bpffs"));
        std::fs::create_dir_all(&path)?;
        run(
            "mount",
            &["-t", "bpf", "bpf", path.to_str().unwrap_or_default()],
        )?;
        Ok(Bpffs { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = run("umount", &[self.path.to_str().unwrap_or_default()]);
        let _ = std::fs::remove_dir(&self.path);
    }
}
