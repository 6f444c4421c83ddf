//! The end-to-end topology: caller, callee and attacker hosts, each joined to the relay host by
//! its own veth pair. The relay owns one address per link plus a service address on its
//! loopback reachable from every host, so it can run with one logical interface (the service
//! address) or two (the caller-side and callee-side link addresses).

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

pub struct Topology {
    pub prefix: String,
    pub relay: Netns,
    pub caller: Host,
    pub callee: Host,
    pub attacker: Host,
}

impl Topology {
    pub fn new() -> Result<Topology> {
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
        let caller = host(&p, &relay, "cr", 1)?;
        let callee = host(&p, &relay, "ce", 2)?;
        let attacker = host(&p, &relay, "at", 3)?;
        Ok(Topology {
            prefix: p,
            relay,
            caller,
            callee,
            attacker,
        })
    }

    /// The relay-side devices the XDP program is attached to.
    pub fn relay_devices(&self) -> [&str; 3] {
        [
            self.caller.relay_dev.as_str(),
            self.callee.relay_dev.as_str(),
            self.attacker.relay_dev.as_str(),
        ]
    }

    /// `relay-ctl daemon` arguments for this topology: the service address as the one logical
    /// interface and the XDP program on every relay-side device.
    pub fn daemon_args(&self) -> Vec<String> {
        let mut a = vec![format!("--listen=pub/{RELAY_SERVICE}")];
        for d in self.relay_devices() {
            a.push(format!("--interface={d}"));
        }
        a
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

fn host(p: &str, relay: &Netns, tag: &str, n: u8) -> Result<Host> {
    let ns = Netns::new(&format!("{p}-{tag}"))?;
    let dev = format!("{p}{tag}");
    let relay_dev = format!("{p}{tag}r");
    let (addr, relay_addr) = (format!("10.1.{n}.2"), format!("10.1.{n}.1"));
    let (addr6, relay_addr6) = (format!("fd00:{n}::2"), format!("fd00:{n}::1"));
    veth(
        &ns,
        &dev,
        &format!("{addr}/24"),
        relay,
        &relay_dev,
        &format!("{relay_addr}/24"),
    )?;
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
    // Frames XDP redirects into a veth are only delivered when the receiving end runs NAPI
    // (XDP attached or GRO on); see shared/TOOLCHAIN.md. TX checksum offload is off because a
    // veth hands locally sent UDP over with only a partial checksum, where a real wire carries
    // complete ones, which the fast path updates incrementally.
    crate::run(
        "ip",
        &[
            "netns", "exec", &ns.name, "ethtool", "-K", &dev, "gro", "on", "tx", "off",
        ],
    )?;
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
        let t = Topology::new().unwrap();
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
