//! The kernel's pktgen (/proc/net/pktgen), used instead of the live-frames generator where the
//! kernel has it (CONFIG_NET_PKTGEN, as on carrier hosts). Its frames are UDP with pktgen's own
//! header as payload: the first byte (0xbe) falls in the RTP/RTCP range, so the relay looks them
//! up and forwards them like media, though they are not real RTP.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use relay_tests::netns::Netns;

use crate::{
    topo::{ns_sh, ns_sh_name},
    traffic::{Fresh, Sender, Sink, Trial},
};

/// True when the generator's namespace sees a pktgen control file.
pub fn available(ns: &Netns) -> bool {
    ns_sh(ns, "test -w /proc/net/pktgen/pgctrl").is_ok()
}

/// Where and how pktgen sends: streams are consecutive destination ports of one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub dev: String,
    pub dst_mac: [u8; 6],
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub streams: u16,
    /// Frame size without the FCS.
    pub pkt_size: usize,
}

/// The writes that set pktgen up for one run: (file under /proc/net/pktgen, command).
/// `rate` None sends as fast as the device takes it.
pub fn script(spec: &Spec, count: u64, rate: Option<f64>) -> Vec<(String, String)> {
    let thread = "kpktgend_0".to_owned();
    let dev = spec.dev.clone();
    let mac = spec
        .dst_mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let last_port = spec.dst.port() + spec.streams.saturating_sub(1);
    let mut out = vec![
        (thread.clone(), "rem_device_all".to_owned()),
        (thread, format!("add_device {dev}")),
        (dev.clone(), format!("count {count}")),
        (dev.clone(), "clone_skb 0".to_owned()),
        (dev.clone(), format!("pkt_size {}", spec.pkt_size)),
        (dev.clone(), format!("dst {}", spec.dst.ip())),
        (dev.clone(), format!("dst_mac {mac}")),
        (dev.clone(), format!("src_min {}", spec.src.ip())),
        (dev.clone(), format!("src_max {}", spec.src.ip())),
        (dev.clone(), format!("udp_src_min {}", spec.src.port())),
        (dev.clone(), format!("udp_src_max {}", spec.src.port())),
        // Without UDPDST_RND pktgen steps through the ports in order: one stream after another.
        (dev.clone(), format!("udp_dst_min {}", spec.dst.port())),
        (dev.clone(), format!("udp_dst_max {last_port}")),
    ];
    out.push(match rate {
        Some(r) => (dev, format!("ratep {}", r.max(1.0) as u64)),
        None => (dev, "delay 0".to_owned()),
    });
    out
}

/// Packets sent and the sending time from the device file's `Result:` line, as
/// `Result: OK: 1234567(c1234000+d567) usec, 1000000 (214byte,0frags)`.
pub fn parse_result(text: &str) -> Option<(u64, Duration)> {
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Result: OK: "))?;
    let usec: u64 = line.split('(').next()?.trim().parse().ok()?;
    let sent: u64 = line
        .split("usec,")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((sent, Duration::from_micros(usec)))
}

pub struct Pktgen {
    pub ns_name: String,
    pub spec: Spec,
    pub fresh: Option<Fresh>,
}

impl Pktgen {
    fn write(&self, file: &str, cmd: &str) -> Result<()> {
        ns_sh_name(
            &self.ns_name,
            &format!("echo '{cmd}' > /proc/net/pktgen/{file}"),
        )
        .with_context(|| format!("pktgen {file}: {cmd}"))?;
        Ok(())
    }

    fn read(&self, file: &str) -> Result<String> {
        ns_sh_name(&self.ns_name, &format!("cat /proc/net/pktgen/{file}"))
    }
}

impl Sender for Pktgen {
    fn trial(
        &mut self,
        sink: &Sink,
        rate: Option<f64>,
        count: u64,
        drain: Duration,
    ) -> Result<Trial> {
        if let Some(fresh) = self.fresh.as_mut() {
            self.spec.dst = fresh()?;
        }
        for (file, cmd) in script(&self.spec, count, rate) {
            self.write(&file, &cmd)?;
        }
        let before = sink.packets()?;
        let t0 = Instant::now();
        // `start` returns when the count has been sent.
        self.write("pgctrl", "start")?;
        let wall = t0.elapsed();
        std::thread::sleep(drain);
        let received = sink.packets()? - before;
        let text = self.read(&self.spec.dev.clone())?;
        let Some((sent, took)) = parse_result(&text) else {
            bail!("pktgen reported no result:\n{text}");
        };
        let secs = if took.is_zero() { wall } else { took }.as_secs_f64();
        Ok(Trial {
            sent,
            received,
            secs,
        })
    }
}

/// The destination of stream 0 for a generator configuration's address and port.
pub fn dst(addr: [u8; 4], port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(addr), port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            dev: "g0".into(),
            dst_mac: [2, 0, 0, 0, 0, 0x1b],
            src: "10.20.1.2:4000".parse().unwrap(),
            dst: "10.30.0.1:32768".parse().unwrap(),
            streams: 1000,
            pkt_size: 214,
        }
    }

    #[test]
    fn script_sets_device_streams_and_rate() {
        let s = script(&spec(), 50_000, Some(250_000.0));
        let get = |cmd: &str| {
            s.iter()
                .find(|(_, c)| c.starts_with(cmd))
                .map(|(f, c)| (f.as_str(), c.as_str()))
        };
        assert_eq!(s[0], ("kpktgend_0".into(), "rem_device_all".into()));
        assert_eq!(get("add_device"), Some(("kpktgend_0", "add_device g0")));
        assert_eq!(get("count"), Some(("g0", "count 50000")));
        assert_eq!(get("dst_mac"), Some(("g0", "dst_mac 02:00:00:00:00:1b")));
        assert_eq!(get("udp_dst_min"), Some(("g0", "udp_dst_min 32768")));
        assert_eq!(get("udp_dst_max"), Some(("g0", "udp_dst_max 33767")));
        assert_eq!(get("ratep"), Some(("g0", "ratep 250000")));
        assert_eq!(get("delay"), None);
        let fast = script(&spec(), 10, None);
        assert!(fast.contains(&("g0".into(), "delay 0".into())));
        assert!(!fast.iter().any(|(_, c)| c.starts_with("ratep")));
    }

    #[test]
    fn result_line_parses() {
        let text = "Params: count 1000000  min_pkt_size: 214  max_pkt_size: 214\n\
                    Current:\n     pkts-sofar: 1000000  errors: 0\n\
                    Result: OK: 1234567(c1234000+d567) usec, 1000000 (214byte,0frags)\n  \
                    810000pps 1386Mb/sec (1386720000bps) errors: 0\n";
        assert_eq!(
            parse_result(text),
            Some((1_000_000, Duration::from_micros(1_234_567)))
        );
        assert_eq!(parse_result("Result: Idle\n"), None);
    }
}
