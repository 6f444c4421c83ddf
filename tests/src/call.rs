//! What the end-to-end call scenarios share: a relay daemon on a fresh topology, SDP bodies,
//! media sockets on the hosts, media bursts checked byte for byte, and the two ways to see that
//! media crossed XDP: per-stream fast-path counters (NG `query`) and the pinned stream table.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use aya::maps::{HashMap as BpfHashMap, Map as BpfMap, MapData};
use relay_common::{
    names,
    stream::{FAMILY_V4, FAMILY_V6, StreamEntry, StreamKey},
};
use serde_json::{Map, Value};

use crate::{
    daemon::{Daemon, ng_call},
    netns::{Bpffs, Netns},
    topology::Topology,
};

/// A running relay on its own topology. Field order is drop order: the daemon stops (and
/// detaches) before its bpffs is unmounted and the namespaces go.
pub struct Relay {
    pub daemon: Daemon,
    pub bpffs: Bpffs,
    pub pin_dir: PathBuf,
    pub t: Topology,
}

/// One entry of the XDP stream table, as addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapEntry {
    /// None: any source accepted.
    pub expected: Option<SocketAddr>,
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

impl Relay {
    /// A topology and a daemon with the topology's arguments, `--detach` and `extra`.
    pub fn start(extra: &[&str]) -> Result<Relay> {
        let t = Topology::new()?;
        let bpffs = Bpffs::new(&t.prefix)?;
        let pin_dir = bpffs.path().join("relay");
        let mut args = vec!["--detach"];
        args.extend_from_slice(extra);
        let daemon = t.start_daemon(&pin_dir, &args)?;
        Ok(Relay {
            daemon,
            bpffs,
            pin_dir,
            t,
        })
    }

    /// One NG request; panics on an error reply, with the request in the message.
    pub fn ng(&self, req: Value) -> Map<String, Value> {
        ng_call(&self.t.relay, req.clone())
            .unwrap_or_else(|e| panic!("NG request {req} failed: {e:#}"))
    }

    /// An offer from `from_tag`; `extra` (a JSON object) adds NG keys. Returns the SDP for B.
    pub fn offer(&self, call_id: &str, from_tag: &str, sdp: &str, extra: Value) -> String {
        let mut req = serde_json::json!({"command": "offer", "call-id": call_id, "from-tag": from_tag, "sdp": sdp});
        merge(&mut req, extra);
        self.ng(req)["sdp"].as_str().expect("offer sdp").to_owned()
    }

    /// The answer of `to_tag`; returns the SDP for A.
    pub fn answer(
        &self,
        call_id: &str,
        from_tag: &str,
        to_tag: &str,
        sdp: &str,
        extra: Value,
    ) -> String {
        let mut req = serde_json::json!({"command": "answer", "call-id": call_id, "from-tag": from_tag, "to-tag": to_tag, "sdp": sdp});
        merge(&mut req, extra);
        self.ng(req)["sdp"].as_str().expect("answer sdp").to_owned()
    }

    /// `query` of one call.
    pub fn query(&self, call_id: &str) -> Map<String, Value> {
        self.ng(serde_json::json!({"command": "query", "call-id": call_id}))
    }

    /// Media packets the daemon forwarded itself, all streams together.
    pub fn userspace_forwarded(&self) -> u64 {
        let st = self.ng(serde_json::json!({"command": "statistics"}));
        st["statistics"]["userspace forwarded packets"]
            .as_u64()
            .expect("userspace forwarded packets")
    }

    /// A fast-path verdict counter (packets) from `statistics`, 0 when the reason never fired.
    pub fn fastpath(&self, reason: &str) -> u64 {
        let st = self.ng(serde_json::json!({"command": "statistics"}));
        st["statistics"]["fastpath"][reason]["packets"]
            .as_u64()
            .unwrap_or(0)
    }

    /// The XDP stream table as the kernel holds it, read from the daemon's pinned map.
    pub fn streams(&self) -> Result<BTreeMap<SocketAddr, MapEntry>> {
        pinned_streams(&self.pin_dir)
    }

    /// The daemon's pinned stream table.
    fn stream_map(&self) -> Result<BpfHashMap<MapData, StreamKey, StreamEntry>> {
        stream_map(&self.pin_dir)
    }

    /// One raw entry of the pinned stream table (fields [`MapEntry`] leaves out, as RTCP demux).
    pub fn raw_stream(&self, local: SocketAddr) -> Result<Option<StreamEntry>> {
        match self.stream_map()?.get(&StreamKey::from(local), 0) {
            Ok(e) => Ok(Some(e)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Polls the stream table until `done` holds (the daemon installs entries asynchronously
    /// to the packet that caused them), at most 2 s; returns the last table read.
    pub fn wait_streams(
        &self,
        done: impl Fn(&BTreeMap<SocketAddr, MapEntry>) -> bool,
    ) -> BTreeMap<SocketAddr, MapEntry> {
        let t0 = Instant::now();
        loop {
            let m = self.streams().expect("reading the pinned stream table");
            if done(&m) || t0.elapsed() > Duration::from_secs(2) {
                return m;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The pinned stream table under `pin_dir`, as addresses.
pub fn pinned_streams(pin_dir: &std::path::Path) -> Result<BTreeMap<SocketAddr, MapEntry>> {
    let map = stream_map(pin_dir)?;
    let mut out = BTreeMap::new();
    for kv in map.iter() {
        let (k, e) = kv?;
        let local = key_addr(&k).context("stream key family")?;
        let expected = if e.flags & relay_common::stream::FLAG_SOURCE_ANY != 0 {
            None
        } else {
            e.expected.socket_addr()
        };
        out.insert(
            local,
            MapEntry {
                expected,
                src: e.src.socket_addr().context("entry src")?,
                dst: e.dst.socket_addr().context("entry dst")?,
            },
        );
    }
    Ok(out)
}

fn stream_map(pin_dir: &std::path::Path) -> Result<BpfHashMap<MapData, StreamKey, StreamEntry>> {
    let path = pin_dir.join(names::STREAMS_MAP);
    let data = MapData::from_pin(&path).with_context(|| format!("{}", path.display()))?;
    Ok(BpfHashMap::try_from(BpfMap::HashMap(data))?)
}

fn merge(req: &mut Value, extra: Value) {
    if let (Value::Object(r), Value::Object(e)) = (req, extra) {
        r.extend(e);
    }
}

fn key_addr(k: &StreamKey) -> Option<SocketAddr> {
    let ip = match k.family {
        FAMILY_V4 => IpAddr::from([k.addr[0], k.addr[1], k.addr[2], k.addr[3]]),
        FAMILY_V6 => IpAddr::from(k.addr),
        _ => return None,
    };
    Some(SocketAddr::new(ip, u16::from_be(k.port)))
}

/// The stream table of an established plain call: each relay endpoint accepts its latched
/// peer and sends from the other leg's endpoint to the other peer.
pub fn two_way(
    relay_a: SocketAddr,
    a: SocketAddr,
    relay_b: SocketAddr,
    b: SocketAddr,
) -> BTreeMap<SocketAddr, MapEntry> {
    BTreeMap::from([
        (
            relay_a,
            MapEntry {
                expected: Some(a),
                src: relay_b,
                dst: b,
            },
        ),
        (
            relay_b,
            MapEntry {
                expected: Some(b),
                src: relay_a,
                dst: a,
            },
        ),
    ])
}

/// An audio offer or answer from `ip:port` (IPv4 or IPv6), with `extra` attribute lines.
pub fn sdp(ip: &str, port: u16, extra: &[&str]) -> String {
    let fam = if ip.contains(':') { "IP6" } else { "IP4" };
    let mut s = format!(
        "v=0\r\no=- 1 1 IN {fam} {ip}\r\ns=-\r\nc=IN {fam} {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    );
    for a in extra {
        s.push_str(a);
        s.push_str("\r\n");
    }
    s
}

/// A UDP socket bound in `ns`, with a read timeout long enough for one relayed packet.
pub fn bind(ns: &Netns, addr: &str) -> UdpSocket {
    let addr = addr.to_owned();
    ns.run(move || {
        let s = UdpSocket::bind(&addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        s
    })
    .unwrap()
}

/// The next datagram that is not STUN (ICE peers may still see stray checks), or None after
/// the read timeout.
pub fn recv(s: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = [0u8; 2048];
    for _ in 0..16 {
        let (n, a) = s.recv_from(&mut buf).ok()?;
        if n > 0 && buf[0] >= 128 {
            return Some((buf[..n].to_vec(), a));
        }
    }
    None
}

/// True when nothing but STUN arrives within `wait` (bounded: the socket's read timeout is
/// set to it).
pub fn silent(s: &UdpSocket, wait: Duration) -> bool {
    let old = s.read_timeout().ok().flatten();
    s.set_read_timeout(Some(wait)).unwrap();
    let got = recv(s);
    s.set_read_timeout(old).unwrap();
    got.is_none()
}

/// An RTCP receiver report (PT 201, RFC 3550 s.6.4.2) with a sequence-dependent SSRC.
pub fn rtcp_payload(n: u16) -> Vec<u8> {
    let mut p = vec![0x80, 201, 0x00, 0x01];
    p.extend_from_slice(&(0xabcd_0000u32 | u32::from(n)).to_be_bytes());
    p
}

/// Sends `n` packets (`make(i)`) from `tx` to `to`; each must arrive at `rx` intact, from
/// `from` (the relay's endpoint on the receiver's leg).
pub fn burst(
    tx: &UdpSocket,
    to: SocketAddr,
    rx: &UdpSocket,
    from: SocketAddr,
    n: u16,
    make: impl Fn(u16) -> Vec<u8>,
) {
    for i in 0..n {
        let p = make(i);
        tx.send_to(&p, to).unwrap();
        let got = recv(rx).unwrap_or_else(|| panic!("packet {i} of {n} to {to} not delivered"));
        assert_eq!(got, (p, from), "packet {i} to {to}");
    }
}

/// RTP bursts with sequence numbers starting at `base`.
pub fn rtp(base: u16) -> impl Fn(u16) -> Vec<u8> {
    move |i| crate::frames::rtp_payload(base.wrapping_add(i))
}

/// The `n`th stream (0: RTP, 1: separate RTCP) of a tag's first media in a `query` reply.
pub fn stream<'a>(q: &'a Map<String, Value>, tag: &str, n: usize) -> &'a Value {
    &q["tags"][tag]["medias"][0]["streams"][n]
}

/// Packets the fast path counted on a tag's `n`th stream, and the total (fast path plus daemon).
pub fn packets(q: &Map<String, Value>, tag: &str, n: usize) -> (u64, u64) {
    let s = stream(q, tag, n);
    (
        s["fast path"]["packets"].as_u64().unwrap_or(0),
        s["stats"]["packets"].as_u64().unwrap_or(0),
    )
}

/// Asserts that between two queries the stream's packets rose by at least `n` and all of
/// them in XDP: the daemon's share (total minus fast path) did not move.
pub fn assert_fast(
    before: &Map<String, Value>,
    after: &Map<String, Value>,
    tag: &str,
    n: usize,
    at_least: u64,
) {
    let (f0, t0) = packets(before, tag, n);
    let (f1, t1) = packets(after, tag, n);
    assert!(
        f1 >= f0 + at_least,
        "{tag}/{n}: fast path counted {f0} -> {f1}, wanted +{at_least}: {after:#?}"
    );
    assert_eq!(
        t1 - f1,
        t0 - f0,
        "{tag}/{n}: the daemon forwarded packets of this stream after its entry was installed"
    );
}
