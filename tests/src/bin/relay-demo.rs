//! `cargo xtask demo`: a throwaway topology (caller and relay namespaces joined by a veth pair),
//! the relay daemon attached to the relay side, RTP sent across, and live counters read from
//! the XDP program's pinned map. Everything is removed on exit, including on errors.

use std::{
    net::UdpSocket,
    path::Path,
    process::{Child, Command},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use relay_common::stats::Reason;
use relay_ctl::xdp::{open_pinned_stats, read_totals};
use relay_tests::netns::{Bpffs, Netns, veth};

const RELAY_IP: &str = "10.250.0.1";
const CALLER_IP: &str = "10.250.0.2";
const RELAY_PORT: u16 = 30_000;
const SECONDS: u64 = 5;
const PPS: u64 = 50;

/// Stops the daemon (SIGTERM, then SIGKILL) on every exit path.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() -> Result<()> {
    let p = relay_tests::unique_prefix();
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("no binary directory")?
        .to_owned();
    let relay_ctl = bin_dir.join("relay-ctl");
    if !relay_ctl.exists() {
        bail!(
            "{} not built (run through `cargo xtask demo`)",
            relay_ctl.display()
        );
    }
    let result = demo(&p, &relay_ctl);
    // Everything was dropped inside demo(); show that nothing is left.
    let left = relay_tests::run("ip", &["netns", "list"])?;
    let ours: Vec<_> = left.lines().filter(|l| l.starts_with(&p)).collect();
    if ours.is_empty() {
        println!("\ncleaned up: no namespace, link or pinned map left behind");
    } else {
        eprintln!("left behind: {ours:?}");
    }
    result
}

fn demo(p: &str, relay_ctl: &Path) -> Result<()> {
    let bpffs = Bpffs::new(p)?;
    let state = std::env::temp_dir().join(format!("{p}-state.json"));
    let pin_dir = bpffs.path().join("relay");
    let caller = Netns::new(&format!("{p}-caller"))?;
    let relay = Netns::new(&format!("{p}-relay"))?;
    let (vc, vr) = (format!("{p}c"), format!("{p}r"));
    veth(
        &caller,
        &vc,
        &format!("{CALLER_IP}/24"),
        &relay,
        &vr,
        &format!("{RELAY_IP}/24"),
    )?;
    println!(
        "topology: {}({vc} {CALLER_IP}) <-> {}({vr} {RELAY_IP}, XDP)",
        caller.name, relay.name
    );

    let daemon = Daemon(
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", relay.name))
            .arg(relay_ctl)
            .args([
                "daemon",
                "--interface",
                &vr,
                "--port-min",
                "30000",
                "--port-max",
                "30100",
                "--detach",
            ])
            .arg(format!("--listen=pub/{RELAY_IP}"))
            .arg(format!("--state-file={}", state.display()))
            .arg("--pin-dir")
            .arg(&pin_dir)
            .spawn()
            .context("starting relay-ctl daemon")?,
    );
    wait_for(
        &pin_dir.join(relay_common::names::STATS_MAP),
        Duration::from_secs(20),
    )?;

    // A socket on the relay port takes the datagrams XDP passes up, drained as they come.
    let sink = relay
        .run(|| UdpSocket::bind((RELAY_IP, RELAY_PORT)))
        .context("netns")??;
    sink.set_read_timeout(Some(Duration::from_millis(500)))?;
    let reader = std::thread::spawn(move || {
        let (mut n, mut buf) = (0u64, [0u8; 2048]);
        while sink.recv_from(&mut buf).is_ok() {
            n += 1;
        }
        n
    });
    let watcher = std::thread::spawn({
        let pin_dir = pin_dir.clone();
        move || watch(&pin_dir)
    });
    let sent = caller
        .run(move || -> std::io::Result<u64> {
            let s = UdpSocket::bind((CALLER_IP, 0))?;
            let t0 = Instant::now();
            let total = SECONDS * PPS;
            for i in 0..total {
                s.send_to(
                    &relay_tests::frames::rtp_payload(i as u16),
                    (RELAY_IP, RELAY_PORT),
                )?;
                let due = Duration::from_millis((i + 1) * 1000 / PPS);
                if let Some(wait) = due.checked_sub(t0.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            Ok(total)
        })
        .context("netns")??;
    watcher
        .join()
        .map_err(|_| anyhow::anyhow!("watcher panicked"))??;
    let received = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))?;
    let totals = read_totals(&open_pinned_stats(&pin_dir)?)?;
    println!("\nsent {sent} RTP datagrams, the socket behind XDP received {received}");
    println!("relay-ctl stats:");
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", relay.name))
        .arg(relay_ctl)
        .args(["stats", "--pin-dir"])
        .arg(&pin_dir)
        .output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    let through = totals.get(Reason::PassUnknownStream).packets;
    drop(daemon);
    let _ = std::fs::remove_file(&state);
    if through < sent {
        bail!("the XDP program counted {through} of {sent} datagrams");
    }
    Ok(())
}

/// Prints the XDP counters once a second while the sender runs.
fn watch(pin_dir: &Path) -> Result<()> {
    let map = open_pinned_stats(pin_dir)?;
    println!(
        "\n{:>4}  {:>10} {:>10} {:>12}",
        "t(s)", "relay_udp", "other", "all frames"
    );
    for t in 1..=SECONDS {
        std::thread::sleep(Duration::from_secs(1));
        let tot = read_totals(&map)?;
        let relay_udp = tot.get(Reason::PassUnknownStream).packets;
        println!(
            "{t:>4}  {relay_udp:>10} {:>10} {:>12}",
            tot.packets() - relay_udp,
            tot.packets()
        );
    }
    Ok(())
}

fn wait_for(path: &Path, limit: Duration) -> Result<()> {
    let t0 = Instant::now();
    while !path.exists() {
        if t0.elapsed() > limit {
            bail!("daemon did not pin {} within {limit:?}", path.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
