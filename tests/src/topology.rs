//! The end-to-end topology: caller, callee and attacker hosts and the relay host, on one of two
//! wire models ([`Wire`]): "NIC-like" (each host on its own veth pair, GRO on and TX checksum
//! offload off on the hosts' ends, as a NIC wire; the relay runs XDP) or "container-like" (plain
//! veth defaults, every host behind the relay's ONE interface through a bridge; the relay runs
//! `--datapath auto`, which picks TC there). The relay owns one address per host subnet plus a
//! service address on its loopback reachable from every host, so it can run with one logical
//! interface (the service address) or two (the caller-side and callee-side link addresses).

use anyhow::Result;

use crate::netns::{Netns, veth};

/// IPv4 service address of the relay, on its loopback.
pub const RELAY_SERVICE: &str = "10.99.0.1";
/// IPv6 service address of the relay.
pub const RELAY_SERVICE6: &str = "fd00:99::1";

/// The address of the first audio m= line: its port with the first c= address (IPv4 or IPv6).
pub fn media_addr(sdp: &str) -> std::net::SocketAddr {
    let ip: std::net::IpAddr = sdp
        .lines()
        .find_map(|l| {
            l.strip_prefix("c=IN IP4 ")
                .or_else(|| l.strip_prefix("c=IN IP6 "))
        })
        .expect("c= line")
        .trim()
        .parse()
        .expect("c= address");
    let port = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split(' ').next())
        .expect("m= line");
    std::net::SocketAddr::new(ip, port.parse().expect("m= port"))
}

pub struct Host {
    pub ns: Netns,
    /// This host's end of its link to the relay.
    pub dev: String,
    /// The relay's end of that link.
    pub relay_dev: String,
    pub addr: String,
    pub addr6: String,
    pub relay_addr: String,
    pub relay_addr6: String,
}

/// How the hosts are wired to the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// One veth pair per host; GRO on and TX checksum offload off on the hosts' ends, so
    /// frames look as they do from a NIC. The daemon runs `--datapath xdp`.
    Nic,
    /// Plain veth defaults (GRO off, TX checksum offload on, no program on the hosts' ends);
    /// every host behind the relay's one interface through a bridge, as in a container. The
    /// daemon runs `--datapath auto`.
    Container,
    /// Container defaults with one veth pair per host (frames leave by another device).
    ContainerSplit,
}

impl Wire {
    /// The two models every end-to-end scenario runs on.
    pub const BOTH: [Wire; 2] = [Wire::Nic, Wire::Container];

    /// The datapath the daemon is expected to report for the relay's devices.
    pub fn datapath(self) -> &'static str {
        match self {
            Wire::Nic => "xdp",
            Wire::Container | Wire::ContainerSplit => "tc",
        }
    }
}

pub struct Topology {
    pub prefix: String,
    pub wire: Wire,
    pub relay: Netns,
    pub caller: Host,
    pub callee: Host,
    pub attacker: Host,
    /// The bridge's namespace (container-like wire only).
    pub lan: Option<Netns>,
    /// A checksum-checking packet socket on each host's device.
    pub sniffers: Vec<crate::sniff::Sniffer>,
}

impl Topology {
    /// The NIC-like topology.
    pub fn new() -> Result<Topology> {
        Topology::with(Wire::Nic)
    }

    pub fn with(wire: Wire) -> Result<Topology> {
        let p = crate::unique_prefix();
        let relay = Netns::new(&format!("{p}-relay"))?;
        relay.ip(&["addr", "add", &format!("{RELAY_SERVICE}/32"), "dev", "lo"])?;
        relay.enable_forwarding()?;
        relay.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{RELAY_SERVICE6}/128"),
            "dev",
            "lo",
        ])?;
        let lan = match wire {
            Wire::Container => Some(lan(&p, &relay)?),
            Wire::Nic | Wire::ContainerSplit => None,
        };
        let caller = host(&p, &relay, lan.as_ref(), wire, "cr", 1)?;
        let callee = host(&p, &relay, lan.as_ref(), wire, "ce", 2)?;
        let attacker = host(&p, &relay, lan.as_ref(), wire, "at", 3)?;
        let sniffers = [&caller, &callee, &attacker]
            .iter()
            .map(|h| crate::sniff::Sniffer::open(&h.ns, &h.dev))
            .collect::<Result<Vec<_>>>()?;
        Ok(Topology {
            sniffers,
            prefix: p,
            wire,
            relay,
            caller,
            callee,
            attacker,
            lan,
        })
    }

    /// The relay-side devices the fast path is attached to (one on the container-like wire).
    pub fn relay_devices(&self) -> Vec<&str> {
        let mut v = Vec::new();
        for h in [&self.caller, &self.callee, &self.attacker] {
            if !v.contains(&h.relay_dev.as_str()) {
                v.push(h.relay_dev.as_str());
            }
        }
        v
    }

    /// `relay-ctl daemon` arguments for this topology: the service address as the one logical
    /// interface and the fast path on every relay-side device, XDP on the NIC-like wire, the
    /// daemon's own choice on the container-like one.
    pub fn daemon_args(&self) -> Vec<String> {
        let mut a = vec![format!("--listen=pub/{RELAY_SERVICE}")];
        for d in self.relay_devices() {
            a.push(format!("--interface={d}"));
        }
        a.push(match self.wire {
            Wire::Nic => "--datapath=xdp".into(),
            Wire::Container | Wire::ContainerSplit => "--datapath=auto".into(),
        });
        a
    }

    /// UDP checksum errors the hosts' kernels counted (IPv4 `UdpInCsumErrors` and IPv6
    /// `Udp6InCsumErrors`), all hosts together.
    pub fn csum_errors(&self) -> Result<u64> {
        let mut n = 0;
        for h in [&self.caller, &self.callee, &self.attacker] {
            n += csum_errors(&h.ns)?;
        }
        Ok(n)
    }

    /// Asserts that no UDP datagram a host received had a bad checksum: none counted by the
    /// hosts' kernels (`InCsumErrors`, complete checksums), none found by the packet sockets
    /// on their devices, which also check the partial checksums a receiving kernel trusts.
    pub fn assert_no_csum_errors(&self) {
        assert_eq!(
            self.csum_errors().expect("reading the hosts' UDP counters"),
            0,
            "a host counted UDP checksum errors ({:?} wire)",
            self.wire
        );
        let (mut complete, mut partial) = (0, 0);
        for s in &self.sniffers {
            let r = s.drain();
            assert!(
                r.bad.is_empty(),
                "{} ({:?} wire): {}",
                s.dev,
                self.wire,
                r.bad.join("\n")
            );
            complete += r.complete;
            partial += r.partial;
        }
        assert!(complete + partial > 0, "no UDP datagram reached a host");
        eprintln!(
            "{:?} wire: UDP checksums of {complete} complete and {partial} partial datagrams checked",
            self.wire
        );
    }

    /// Starts the daemon in the relay namespace with [`Topology::daemon_args`] and `extra`.
    pub fn start_daemon(
        &self,
        pin_dir: &std::path::Path,
        extra: &[&str],
    ) -> Result<crate::daemon::Daemon> {
        let mut args = self.daemon_args();
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::daemon::Daemon::start(&self.relay, pin_dir, &args)
    }
}

/// `InCsumErrors` of UDP over IPv4 and IPv6 in `ns`'s /proc/net/snmp and snmp6.
fn csum_errors(ns: &Netns) -> Result<u64> {
    let snmp = crate::run("ip", &["netns", "exec", &ns.name, "cat", "/proc/net/snmp"])?;
    let snmp6 = crate::run("ip", &["netns", "exec", &ns.name, "cat", "/proc/net/snmp6"])?;
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (head, vals) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
    let v4 = head
        .split_whitespace()
        .zip(vals.split_whitespace())
        .find(|(k, _)| *k == "InCsumErrors")
        .and_then(|(_, v)| v.parse::<u64>().ok())
        .unwrap_or(0);
    let v6 = snmp6
        .lines()
        .find_map(|l| l.strip_prefix("Udp6InCsumErrors"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    Ok(v4 + v6)
}

/// The container-like LAN: a bridge in its own namespace, with the relay's one interface
/// (`{p}rl`, addressed per host subnet in [`host`]) as a port.
fn lan(p: &str, relay: &Netns) -> Result<Netns> {
    let lan = Netns::new(&format!("{p}-lan"))?;
    let br = format!("{p}br");
    lan.ip(&["link", "add", &br, "type", "bridge"])?;
    lan.ip(&["link", "set", &br, "up"])?;
    let (dev, port) = (format!("{p}rl"), format!("{p}lr"));
    crate::run(
        "ip",
        &[
            "link",
            "add",
            &dev,
            "netns",
            &relay.name,
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &lan.name,
        ],
    )?;
    relay.ip(&["link", "set", &dev, "up"])?;
    lan.ip(&["link", "set", &port, "master", &br])?;
    lan.ip(&["link", "set", &port, "up"])?;
    Ok(lan)
}

fn host(p: &str, relay: &Netns, lan: Option<&Netns>, wire: Wire, tag: &str, n: u8) -> Result<Host> {
    let ns = Netns::new(&format!("{p}-{tag}"))?;
    let dev = format!("{p}{tag}");
    let (addr, relay_addr) = (format!("10.1.{n}.2"), format!("10.1.{n}.1"));
    let (addr6, relay_addr6) = (format!("fd00:{n}::2"), format!("fd00:{n}::1"));
    let relay_dev = match lan {
        // The relay's one interface carries every host subnet; the host's veth is a bridge port.
        Some(lan) => {
            let relay_dev = format!("{p}rl");
            let port = format!("{p}{tag}l");
            crate::run(
                "ip",
                &[
                    "link", "add", &dev, "netns", &ns.name, "type", "veth", "peer", "name", &port,
                    "netns", &lan.name,
                ],
            )?;
            lan.ip(&["link", "set", &port, "master", &format!("{p}br")])?;
            lan.ip(&["link", "set", &port, "up"])?;
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", &dev])?;
            ns.ip(&["link", "set", &dev, "up"])?;
            relay.ip(&[
                "addr",
                "add",
                &format!("{relay_addr}/24"),
                "dev",
                &relay_dev,
            ])?;
            relay_dev
        }
        None => {
            let relay_dev = format!("{p}{tag}r");
            veth(
                &ns,
                &dev,
                &format!("{addr}/24"),
                relay,
                &relay_dev,
                &format!("{relay_addr}/24"),
            )?;
            relay_dev
        }
    };
    ns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{addr6}/64"),
        "dev",
        &dev,
        "nodad",
    ])?;
    relay.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{relay_addr6}/64"),
        "dev",
        &relay_dev,
        "nodad",
    ])?;
    ns.ip(&["route", "add", "default", "via", &relay_addr])?;
    ns.ip(&["-6", "route", "add", "default", "via", &relay_addr6])?;
    if wire == Wire::Nic {
        // Frames XDP redirects into a veth are only delivered when the receiving end runs NAPI
        // (XDP attached or GRO on); see shared/TOOLCHAIN.md. TX checksum offload is off because
        // a veth hands locally sent UDP over with only a partial checksum, where a real wire
        // carries complete ones, which XDP updates incrementally. The container-like wire
        // keeps the defaults: that is what TC is for.
        crate::run(
            "ip",
            &[
                "netns", "exec", &ns.name, "ethtool", "-K", &dev, "gro", "on", "tx", "off",
            ],
        )?;
    }
    Ok(Host {
        ns,
        dev,
        relay_dev,
        addr,
        addr6,
        relay_addr,
        relay_addr6,
    })
}

#[cfg(test)]
mod tests {
    use std::{net::UdpSocket, time::Duration};

    use super::*;

    #[test]
    fn every_host_reaches_the_relay_service_address() {
        if !crate::privileged("every_host_reaches_the_relay_service_address") {
            return;
        }
        for wire in [Wire::Nic, Wire::Container, Wire::ContainerSplit] {
            reaches(wire);
        }
    }

    fn reaches(wire: Wire) {
        let t = Topology::with(wire).unwrap();
        let rx = t
            .relay
            .run(|| {
                let s = UdpSocket::bind((RELAY_SERVICE, 40_000)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                s
            })
            .unwrap();
        for h in [&t.caller, &t.callee, &t.attacker] {
            let from = h.addr.clone();
            h.ns.run(move || {
                UdpSocket::bind((from.as_str(), 0))
                    .unwrap()
                    .send_to(b"hi", (RELAY_SERVICE, 40_000))
                    .unwrap()
            })
            .unwrap();
            let mut buf = [0u8; 8];
            let (n, src) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(
                (&buf[..n], src.ip().to_string()),
                (&b"hi"[..], h.addr.clone())
            );
        }
    }
}
