//! Two relays sharing a floating media address, for failover tests.
//!
//! ```text
//!   caller 10.50.0.2 (lo) --veth 10.10.1.0/24-- relay 0 (10.99.0.1 on lo while active)
//!                         --veth 10.10.2.0/24-- relay 1
//!   callee 10.50.0.3 (lo) --veth 10.11.1.0/24-- relay 0
//!                         --veth 10.11.2.0/24-- relay 1
//!   redis: its own namespace, loopback + a Unix socket the relays use
//! ```
//!
//! The floating address moves as a routed VIP does (keepalived with a host route, or BGP): it is
//! removed from the old relay's loopback, added to the new one's, and the hosts' route to it
//! switches to the new relay's link. [`HaTopology::fail_over`] also takes the old relay's links
//! down, as if its host had died.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{
    netns::{Bpffs, Netns, veth},
    redis::Redis,
};

/// Relay 0's media address (the floating one of an active-passive pair).
pub const FLOAT: &str = "10.99.0.1";
/// Relay 1's media address in a pool (active-active).
pub const FLOAT1: &str = "10.99.0.2";
pub const CALLER: &str = "10.50.0.2";
pub const CALLEE: &str = "10.50.0.3";

pub struct HaTopology {
    pub prefix: String,
    pub relays: [Netns; 2],
    pub caller: Netns,
    pub callee: Netns,
    /// Relay-side devices: `devs[relay]` = [to caller, to callee].
    pub devs: [[String; 2]; 2],
    pub redis_ns: Netns,
}

/// What every HA test starts from: the topology, a bpffs for the relays' pins and a
/// redis-server (127.0.0.1:`redis_port` and a Unix socket) in its own namespace. None when
/// `test` cannot run here (not privileged, or no redis-server; under `CI=true` those panic).
pub fn ha_setup(test: &str, pool: bool, redis_port: u16) -> Option<(HaTopology, Bpffs, Redis)> {
    if !crate::privileged(test) || !crate::redis::available(test) {
        return None;
    }
    let t = HaTopology::new(pool).unwrap();
    let bpffs = Bpffs::new(&t.prefix).unwrap();
    let redis = Redis::start(&t.redis_ns, redis_port).unwrap();
    Some((t, bpffs, redis))
}

impl HaTopology {
    /// Relay 0 holds [`FLOAT`]; with `pool`, relay 1 holds [`FLOAT1`] too (active-active).
    pub fn new(pool: bool) -> Result<HaTopology> {
        let p = crate::unique_prefix();
        let relays = [
            Netns::new(&format!("{p}-r0"))?,
            Netns::new(&format!("{p}-r1"))?,
        ];
        let caller = Netns::new(&format!("{p}-cr"))?;
        let callee = Netns::new(&format!("{p}-ce"))?;
        let redis_ns = Netns::new(&format!("{p}-rd"))?;
        let mut devs: [[String; 2]; 2] = Default::default();
        for (h, (host, addr)) in [(&caller, CALLER), (&callee, CALLEE)]
            .into_iter()
            .enumerate()
        {
            host.ip(&["addr", "add", &format!("{addr}/32"), "dev", "lo"])?;
            crate::run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &host.name,
                    "sysctl",
                    "-qw",
                    "net.ipv4.conf.all.rp_filter=0",
                    "net.ipv4.conf.default.rp_filter=0",
                ],
            )?;
            for (r, relay) in relays.iter().enumerate() {
                let net = format!("10.{}.{}", 10 + h, r + 1);
                let hd = format!("{p}h{h}r{r}");
                let rd = format!("{p}r{r}h{h}");
                veth(
                    host,
                    &hd,
                    &format!("{net}.2/24"),
                    relay,
                    &rd,
                    &format!("{net}.1/24"),
                )?;
                relay.ip(&[
                    "route",
                    "add",
                    &format!("{addr}/32"),
                    "via",
                    &format!("{net}.2"),
                ])?;
                // XDP-redirected frames reach a veth only with NAPI on its receiving end; a
                // veth sends local UDP with partial checksums, a wire with complete ones.
                crate::run(
                    "ip",
                    &[
                        "netns", "exec", &host.name, "ethtool", "-K", &hd, "gro", "on", "tx", "off",
                    ],
                )?;
                devs[r][h] = rd;
            }
            host.ip(&[
                "route",
                "add",
                &format!("{FLOAT}/32"),
                "via",
                &format!("10.{}.1.1", 10 + h),
            ])?;
            if pool {
                host.ip(&[
                    "route",
                    "add",
                    &format!("{FLOAT1}/32"),
                    "via",
                    &format!("10.{}.2.1", 10 + h),
                ])?;
            }
        }
        for r in &relays {
            r.enable_forwarding()?;
        }
        relays[0].ip(&["addr", "add", &format!("{FLOAT}/32"), "dev", "lo"])?;
        if pool {
            relays[1].ip(&["addr", "add", &format!("{FLOAT1}/32"), "dev", "lo"])?;
        }
        Ok(HaTopology {
            prefix: p,
            relays,
            caller,
            callee,
            devs,
            redis_ns,
        })
    }

    /// `relay-ctl daemon` arguments for relay `r` of a pair: the floating address as its one
    /// logical interface.
    pub fn daemon_args(&self, r: usize) -> Vec<String> {
        self.args_with(r, &[format!("pub/{FLOAT}")])
    }

    /// Arguments for relay `r` of a pool: its own address first (new calls go there), then the
    /// other relay's, under the same names on both, so each can take the other's calls over.
    pub fn pool_args(&self, r: usize) -> Vec<String> {
        let own = [format!("p0/{FLOAT}"), format!("p1/{FLOAT1}")];
        let (first, second) = if r == 0 {
            (&own[0], &own[1])
        } else {
            (&own[1], &own[0])
        };
        self.args_with(r, &[first.clone(), second.clone()])
    }

    fn args_with(&self, r: usize, listen: &[String]) -> Vec<String> {
        let mut a: Vec<String> = listen.iter().map(|l| format!("--listen={l}")).collect();
        for d in &self.devs[r] {
            a.push(format!("--interface={d}"));
        }
        a
    }

    /// Moves the floating address from relay `from` to relay `to`; with `dead`, `from`'s links
    /// go down first (its host died).
    pub fn fail_over(&self, addr: &str, from: usize, to: usize, dead: bool) -> Result<()> {
        if dead {
            for d in &self.devs[from] {
                self.relays[from].ip(&["link", "set", "dev", d, "down"])?;
            }
        }
        let _ = self.relays[from].ip(&["addr", "del", &format!("{addr}/32"), "dev", "lo"]);
        self.relays[to].ip(&["addr", "add", &format!("{addr}/32"), "dev", "lo"])?;
        for (h, host) in [&self.caller, &self.callee].into_iter().enumerate() {
            host.ip(&[
                "route",
                "replace",
                &format!("{addr}/32"),
                "via",
                &format!("10.{}.{}.1", 10 + h, to + 1),
            ])?;
        }
        Ok(())
    }
}

/// One leg's media socket on a host and the relay endpoint it sends to.
pub struct Leg {
    pub sock: UdpSocket,
    pub relay: SocketAddr,
}

/// Arrival times per leg, as [`MediaRun`] recorded them.
pub struct Arrivals(pub Vec<Vec<Instant>>);

impl Arrivals {
    /// Per leg: the longest silence between `from` and `to` (counting the edges), or None for a
    /// leg that received nothing after `from`.
    pub fn gaps(&self, from: Instant, to: Instant) -> Vec<Option<Duration>> {
        self.0
            .iter()
            .map(|times| {
                let mut last = from;
                let mut max = Duration::ZERO;
                let mut any = false;
                for &t in times.iter().filter(|t| **t > from && **t <= to) {
                    max = max.max(t - last);
                    last = t;
                    any = true;
                }
                any.then_some(max.max(to.saturating_duration_since(last)))
            })
            .collect()
    }

    /// Legs that received anything after `t`.
    pub fn alive_after(&self, t: Instant) -> usize {
        self.0
            .iter()
            .filter(|times| times.iter().any(|x| *x > t))
            .count()
    }
}

/// RTP sent from every leg of a host every `interval` (sequence numbers advancing), and
/// everything received timestamped, until stopped. Bounded by `limit` in any case.
pub struct MediaRun {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<(Arrivals, Vec<Leg>)>>,
}

impl MediaRun {
    pub fn start(legs: Vec<Leg>, interval: Duration, limit: Duration) -> MediaRun {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            for l in &legs {
                l.sock.set_nonblocking(true).expect("nonblocking");
            }
            let mut arrivals = vec![Vec::new(); legs.len()];
            let t0 = Instant::now();
            let mut next = t0;
            let mut seq: u16 = 0;
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) && t0.elapsed() < limit {
                if Instant::now() >= next {
                    let pkt = crate::frames::rtp_payload(seq);
                    for l in &legs {
                        // A leg with no route for a moment (failover) just loses that packet.
                        let _ = l.sock.send_to(&pkt, l.relay);
                    }
                    seq = seq.wrapping_add(1);
                    next += interval;
                }
                for (i, l) in legs.iter().enumerate() {
                    // Bounded per round: a flood cannot hold the sender back.
                    for _ in 0..64 {
                        match l.sock.recv_from(&mut buf) {
                            Ok((n, _)) if n > 0 && buf[0] >= 128 => {
                                arrivals[i].push(Instant::now())
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            (Arrivals(arrivals), legs)
        });
        MediaRun {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops; the arrival times and the legs back.
    pub fn finish(mut self) -> (Arrivals, Vec<Leg>) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or((Arrivals(Vec::new()), Vec::new()))
    }
}

impl Drop for MediaRun {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Per call, the media gap across a failover (the longer of the two directions; None when a
/// direction got nothing after `before`), and how many calls had media both ways in the last
/// 500 ms before `end`. `aa`/`ab`: arrivals at the callers' and the callees' sockets, call by call.
pub fn resumption(
    aa: &Arrivals,
    ab: &Arrivals,
    before: Instant,
    end: Instant,
) -> (Vec<Option<Duration>>, usize) {
    let settled = end - Duration::from_millis(500);
    let n = aa.0.len().min(ab.0.len());
    let resumed = (0..n)
        .filter(|i| aa.0[*i].iter().any(|x| *x > settled) && ab.0[*i].iter().any(|x| *x > settled))
        .count();
    let gaps = aa
        .gaps(before, end)
        .into_iter()
        .zip(ab.gaps(before, end))
        .map(|(x, y)| Some(x?.max(y?)))
        .collect();
    (gaps, resumed)
}

/// What a failover did to the calls' media.
pub struct Failover {
    /// Per call that got media both ways after the failure began, its longest gap.
    pub gaps: Vec<Duration>,
    /// Calls with media both ways at the end.
    pub resumed: usize,
    /// The callers' legs back (for consent checks).
    pub callers: Vec<Leg>,
}

/// Runs RTP every `tick` on every leg, fails relay `from` over to `to` after 1.5 s (SIGKILL,
/// its links down, `addr` moved), waits 4 s and says how the calls fared. Panics if a call had
/// no media before the failure.
pub fn fail_over_with_media(
    t: &HaTopology,
    daemons: &mut [crate::daemon::Daemon; 2],
    legs: Vec<(Leg, Leg)>,
    addr: &str,
    (from, to): (usize, usize),
    tick: Duration,
) -> Result<Failover> {
    let n = legs.len();
    let (a, b): (Vec<Leg>, Vec<Leg>) = legs.into_iter().unzip();
    let limit = Duration::from_secs(30);
    let (ra, rb) = (
        MediaRun::start(a, tick, limit),
        MediaRun::start(b, tick, limit),
    );
    std::thread::sleep(Duration::from_millis(1500));
    let t_fail = Instant::now();
    daemons[from].kill()?;
    t.fail_over(addr, from, to, true)?;
    // Bounded: resumption is judged from the arrival times.
    std::thread::sleep(Duration::from_secs(4));
    let end = Instant::now();
    let ((aa, callers), (ab, _)) = (ra.finish(), rb.finish());
    let before = t_fail - Duration::from_millis(500);
    anyhow::ensure!(
        aa.alive_after(before) == n && ab.alive_after(before) == n,
        "not every call's media flowed before the failure ({} / {} of {n})",
        aa.alive_after(before),
        ab.alive_after(before)
    );
    let (gaps, resumed) = resumption(&aa, &ab, before, end);
    Ok(Failover {
        gaps: gaps.into_iter().flatten().collect(),
        resumed,
        callers,
    })
}

/// RTP from one socket to several relay endpoints (one per call) every `interval`, and what the
/// socket receives timestamped per call by its source (the relay endpoint), until stopped;
/// bounded by `limit`. For sipp-driven calls, whose scenarios announce one port per side. Calls
/// can be added while it runs ([`FanRun::add`]).
pub struct FanRun {
    stop: Arc<AtomicBool>,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    handle: Option<std::thread::JoinHandle<(Arrivals, UdpSocket)>>,
}

impl FanRun {
    pub fn start(
        sock: UdpSocket,
        peers: Vec<SocketAddr>,
        interval: Duration,
        limit: Duration,
    ) -> FanRun {
        let stop = Arc::new(AtomicBool::new(false));
        let peers = Arc::new(Mutex::new(peers));
        let (flag, list) = (stop.clone(), peers.clone());
        let handle = std::thread::spawn(move || {
            sock.set_nonblocking(true).expect("nonblocking");
            let mut arrivals: Vec<Vec<Instant>> = Vec::new();
            let t0 = Instant::now();
            let mut next = t0;
            let mut seq: u16 = 0;
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) && t0.elapsed() < limit {
                let peers = list.lock().expect("peer list").clone();
                arrivals.resize(peers.len(), Vec::new());
                if Instant::now() >= next {
                    let pkt = crate::frames::rtp_payload(seq);
                    for p in &peers {
                        let _ = sock.send_to(&pkt, p);
                    }
                    seq = seq.wrapping_add(1);
                    next += interval;
                }
                // Bounded per round: a flood cannot hold the sender back.
                for _ in 0..256 {
                    match sock.recv_from(&mut buf) {
                        Ok((n, from)) if n > 0 && buf[0] >= 128 => {
                            if let Some(i) = peers.iter().position(|p| *p == from) {
                                arrivals[i].push(Instant::now());
                            }
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            (Arrivals(arrivals), sock)
        });
        FanRun {
            stop,
            peers,
            handle: Some(handle),
        }
    }

    /// More calls: their arrivals follow the first ones' in [`Arrivals`], in this order.
    pub fn add(&self, more: impl IntoIterator<Item = SocketAddr>) {
        self.peers.lock().expect("peer list").extend(more);
    }

    /// Stops; the arrival times per peer and the socket back.
    pub fn finish(mut self) -> (Arrivals, UdpSocket) {
        self.stop.store(true, Ordering::Relaxed);
        let h = self.handle.take().expect("joined once");
        h.join().expect("media thread")
    }
}

impl Drop for FanRun {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Median and maximum of some durations, in milliseconds.
pub fn median_max_ms(mut d: Vec<Duration>) -> (f64, f64) {
    if d.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    d.sort();
    let ms = |x: Duration| x.as_secs_f64() * 1000.0;
    (ms(d[d.len() / 2]), ms(d[d.len() - 1]))
}

/// ICE credentials of a caller leg: the caller's ufrag, the relay's ufrag and password.
#[derive(Clone, Debug)]
pub struct IceLeg {
    pub caller_ufrag: String,
    pub relay_ufrag: String,
    pub relay_pwd: String,
}

/// A consent check (RFC 7675) from a caller leg's socket to its relay endpoint: the response's
/// error code (None: success) and whether it is signed; None without any STUN response.
pub fn consent_check(leg: &Leg, ice: &IceLeg) -> Option<(Option<u16>, bool)> {
    use is::{
        DefaultSha1HmacProvider, Sha1HmacProvider,
        stun::{StunMessage, TransId},
    };
    let username = format!("{}:{}", ice.relay_ufrag, ice.caller_ufrag);
    let hmac = |k: &[u8], p: &[&[u8]]| DefaultSha1HmacProvider.sha1_hmac(k, p);
    let check =
        StunMessage::binding_request(&username, TransId::new(), true, 1, 2_130_706_431, false);
    let mut buf = [0u8; 1500];
    let n = check
        .to_bytes(Some(ice.relay_pwd.as_bytes()), &mut buf, hmac)
        .ok()?;
    leg.sock.set_nonblocking(false).ok()?;
    leg.sock
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    leg.sock.send_to(&buf[..n], leg.relay).ok()?;
    // Media may still be queued towards the caller: skip it, bounded.
    for _ in 0..200 {
        let (n, _) = leg.sock.recv_from(&mut buf).ok()?;
        if buf[0] < 4 {
            let m = relay_core::stun::StunMessage::parse(&buf[..n]).ok()?;
            return Some((m.attributes.error_code.map(|e| e.code), m.has_integrity()));
        }
    }
    None
}

/// One call through the relay in `relay_ns`: the caller's and callee's legs (sockets bound on
/// the hosts, sending to their relay endpoints). With `ice`, the caller offers ICE, the relay
/// terminates it (ICE=force) and str0m's `is` agent nominates the relay's candidate first.
pub fn open_call(
    t: &HaTopology,
    relay: usize,
    call_id: &str,
    port_a: u16,
    port_b: u16,
    ice: bool,
) -> Result<(Leg, Leg, Option<IceLeg>)> {
    use crate::{
        call::{bind, sdp},
        daemon::ng_call,
        topology::media_addr,
    };
    let ns = &t.relays[relay];
    let creds = is::IceCreds::new();
    let offer_sdp = if ice {
        sdp(
            CALLER,
            port_a,
            &[
                &format!("a=ice-ufrag:{}", creds.ufrag),
                &format!("a=ice-pwd:{}", creds.pass),
                &format!("a=candidate:1 1 UDP 2130706431 {CALLER} {port_a} typ host"),
            ],
        )
    } else {
        sdp(CALLER, port_a, &[])
    };
    let mut offer = serde_json::json!({"command": "offer", "call-id": call_id, "from-tag": "A", "sdp": offer_sdp});
    if ice {
        offer["ICE"] = "force".into();
    }
    let to_b = ng_call(ns, offer)?["sdp"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let relay_b = media_addr(&to_b);
    let answer = serde_json::json!({"command": "answer", "call-id": call_id, "from-tag": "A", "to-tag": "B", "sdp": sdp(CALLEE, port_b, &[])});
    let to_a = ng_call(ns, answer)?["sdp"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let relay_a = media_addr(&to_a);
    let callee = bind(&t.callee, &format!("{CALLEE}:{port_b}"));
    let ice_leg = ice.then(|| {
        let r = crate::ice::creds(&to_a);
        IceLeg {
            caller_ufrag: creds.ufrag.clone(),
            relay_ufrag: r.ufrag,
            relay_pwd: r.pass,
        }
    });
    let caller = if ice {
        let peer = crate::ice::creds(&to_a);
        let local: SocketAddr = format!("{CALLER}:{port_a}").parse()?;
        let checked = t.caller.run(move || {
            let sock = UdpSocket::bind(local).expect("bind caller");
            crate::ice::check(
                sock,
                local,
                creds,
                peer,
                &[relay_a],
                true,
                Duration::from_secs(5),
            )
        })?;
        anyhow::ensure!(
            checked.nominated == Some(relay_a),
            "{call_id}: the caller's agent nominated {:?}, not {relay_a}",
            checked.nominated
        );
        checked.sock
    } else {
        bind(&t.caller, &format!("{CALLER}:{port_a}"))
    };
    Ok((
        Leg {
            sock: caller,
            relay: relay_a,
        },
        Leg {
            sock: callee,
            relay: relay_b,
        },
        ice_leg,
    ))
}
