//! generator namespace -> relay namespace -> sink namespace, joined by two veth pairs with
//! unique names; everything is removed on drop (namespaces take their veths with them).

use anyhow::{Context as _, Result, bail};
use relay_tests::netns::{Netns, veth};

pub const GEN_ADDR: [u8; 4] = [10, 20, 1, 2];
pub const GEN_PORT: u16 = 4000;
pub const RELAY_OUT: [u8; 4] = [10, 20, 2, 1];
pub const SINK_ADDR: [u8; 4] = [10, 20, 2, 2];
/// rtpengine's (and our daemon's) service address, on the relay's loopback.
pub const SERVICE: &str = "10.99.0.1";
/// Stream keys the generator targets when the relay program is measured: 10.30.0.1 upwards.
pub const STREAM_ADDR_BASE: [u8; 4] = [10, 30, 0, 1];

pub struct Topo {
    pub gen_ns: Netns,
    pub relay: Netns,
    pub sink: Netns,
    /// Generator side: `g0` in gen_ns, `g1` in relay.
    pub g0: String,
    pub g1: String,
    /// Sink side: `s1` in relay, `s0` in sink.
    pub s1: String,
    pub s0: String,
    pub g0_mac: [u8; 6],
    pub g1_mac: [u8; 6],
    pub s1_mac: [u8; 6],
    pub s0_mac: [u8; 6],
}

fn mac(ns: &Netns, dev: &str) -> Result<[u8; 6]> {
    let out = ns.ip(&["-br", "link", "show", "dev", dev])?;
    let text = out
        .split_whitespace()
        .nth(2)
        .with_context(|| format!("no MAC in `{out}`"))?;
    let mut m = [0u8; 6];
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() != 6 {
        bail!("bad MAC {text}");
    }
    for (b, p) in m.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16)?;
    }
    Ok(m)
}

/// `ip netns exec NS sh -c CMD` (sysfs writes and ethtool need the namespace's view).
pub fn ns_sh(ns: &Netns, cmd: &str) -> Result<String> {
    ns_sh_name(&ns.name, cmd)
}

/// [`ns_sh`] by namespace name.
pub fn ns_sh_name(ns: &str, cmd: &str) -> Result<String> {
    relay_tests::run("ip", &["netns", "exec", ns, "sh", "-c", cmd])
}

impl Topo {
    pub fn new() -> Result<Topo> {
        let p = relay_tests::unique_prefix();
        let gen_ns = Netns::new(&format!("{p}-bg"))?;
        let relay = Netns::new(&format!("{p}-br"))?;
        let sink = Netns::new(&format!("{p}-bs"))?;
        let (g0, g1, s1, s0) = (
            format!("{p}g0"),
            format!("{p}g1"),
            format!("{p}s1"),
            format!("{p}s0"),
        );
        veth(&gen_ns, &g0, "10.20.1.2/24", &relay, &g1, "10.20.1.1/24")?;
        veth(&relay, &s1, "10.20.2.1/24", &sink, &s0, "10.20.2.2/24")?;
        relay.enable_forwarding()?;
        relay.ip(&["addr", "add", &format!("{SERVICE}/32"), "dev", "lo"])?;
        gen_ns.ip(&["route", "add", "10.0.0.0/8", "via", "10.20.1.1"])?;
        sink.ip(&["route", "add", "10.0.0.0/8", "via", "10.20.2.1"])?;
        let s0_mac_bytes = mac(&sink, &s0)?;
        let s1_mac = mac(&relay, &s1)?;
        let s0_mac = s0_mac_bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        relay.ip(&[
            "neigh",
            "replace",
            "10.20.2.2",
            "lladdr",
            &s0_mac,
            "dev",
            &s1,
            "nud",
            "permanent",
        ])?;
        // GRO gives the receiving veths a NAPI instance, which frames sent by XDP need even
        // when no program is attached (rtpengine's run); the relay's ingress NAPI runs in its
        // own kernel thread so it can be pinned away from the generator.
        ns_sh(&relay, &format!("ethtool -K {g1} gro on >/dev/null"))?;
        ns_sh(&sink, &format!("ethtool -K {s0} gro on >/dev/null"))?;
        ns_sh(&relay, &format!("echo 1 > /sys/class/net/{g1}/threaded"))?;
        ns_sh(&sink, &format!("echo 1 > /sys/class/net/{s0}/threaded"))?;
        let g0_mac = mac(&gen_ns, &g0)?;
        let g1_mac = mac(&relay, &g1)?;
        Ok(Topo {
            gen_ns,
            relay,
            sink,
            g0,
            g1,
            s1,
            s0,
            g0_mac,
            g1_mac,
            s1_mac,
            s0_mac: s0_mac_bytes,
        })
    }

    /// Pins the NAPI threads of the relay's ingress and of the sink to CPU 1 (the generator
    /// runs on CPU 0). They are re-created when programs are attached or detached, so this
    /// runs before every search.
    pub fn pin_napi(&self) -> Result<()> {
        if cpus() < 2 {
            return Ok(());
        }
        // The sink outranks the relay: under overload the relay's own ring overflows (its
        // loss), instead of the relay starving the sink on the shared CPU.
        pin_napi_of(&self.g1, 50)?;
        pin_napi_of(&self.s0, 60)?;
        Ok(())
    }
}

fn pin_napi_of(dev: &str, prio: i32) -> Result<()> {
    {
        let want = format!("napi/{dev}-");
        let mut pinned = 0;
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) else {
                continue;
            };
            if comm.trim_end().starts_with(&want) {
                pin(pid, 1, Some(prio))?;
                pinned += 1;
            }
        }
        if pinned == 0 {
            bail!("no NAPI thread for {dev} (threaded NAPI not active)");
        }
        Ok(())
    }
}

pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Pins `pid` (0: the calling thread) to `cpu`, with a real-time FIFO priority if given: the
/// machines are shared, and a compiler preempting the relay's NAPI thread for a few
/// milliseconds overflows a 256-frame veth ring, which would be counted as the relay's loss.
/// The real-time throttle (95% by default) still leaves the CPU to others.
pub fn pin(pid: i32, cpu: usize, prio: Option<i32>) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t and sched_param are valid; CPU_SET writes inside the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "sched_setaffinity({pid}, {cpu}): {}",
                std::io::Error::last_os_error()
            );
        }
        let Some(prio) = prio else {
            return Ok(());
        };
        let mut param: libc::sched_param = std::mem::zeroed();
        param.sched_priority = prio;
        if libc::sched_setscheduler(pid, libc::SCHED_FIFO, &param) != 0 {
            bail!(
                "sched_setscheduler({pid}, FIFO): {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// A SCHED_IDLE thread spinning on one CPU while it lives. On a virtual machine an idle vCPU
/// halts, and waking it for the relay's NAPI thread can take milliseconds (a 256-frame veth
/// ring overflows meanwhile); the spinner keeps it running and yields to any other thread.
pub struct KeepAwake {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KeepAwake {
    pub fn start(cpu: usize) -> Option<KeepAwake> {
        if cpus() <= cpu {
            return None;
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            // SAFETY: a zeroed sched_param is valid for SCHED_IDLE (priority 0).
            unsafe {
                let param: libc::sched_param = std::mem::zeroed();
                libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
            }
            if pin(0, cpu, None).is_err() {
                return;
            }
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        Some(KeepAwake {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for KeepAwake {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
