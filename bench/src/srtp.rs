//! SRTP -> RTP through a userspace relay, ours (the daemon's crypto path) and rtpengine's (its
//! userspace SRTP), on the bench topology and driven the same way: one call per trial over NG,
//! the generator's offer `RTP/SAVP` with its own `a=crypto` (AES_CM_128_HMAC_SHA1_80) and
//! `transport-protocol=RTP/AVP` toward the sink, so the relay authenticates, replay-checks and
//! decrypts every packet. The generator is a userspace sender of real SRTP (libsrtp2 through
//! relay-ctl's `srtp` module, packets protected before the clock starts, sent with sendmmsg);
//! the XDP sink counts what arrives.
//!
//! Before the searches, one call whose callee is a UDP socket checks that what the relay sends
//! is the decrypted RTP, payload for payload. The relay process (all its threads) and the NAPI
//! threads of its two veths share CPU 1 at equal priority (one core, kernel work included); the
//! generator runs on CPU 0.
//!
//! The search starts at 1 kpps and doubles while a step loses at most [`MAX_LOSS`], then
//! bisects between the last good and first bad rate; each step is the median of a few trials,
//! each trial on a fresh call. The saturation figure is what reached the sink with the
//! generator unthrottled. Repeated searches give a median and a range.

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use indicatif::ProgressBar;
use relay_core::srtp_sdp::{CryptoAttr, SrtpSuite};
use relay_ctl::{
    client::NgClient,
    srtp::{Direction, SrtpContext},
};
use relay_tests::topology::media_addr;
use serde_json::{Map, Value, json};

use crate::{
    topo::{self, GEN_ADDR, GEN_PORT, RELAY_OUT, SINK_ADDR, Topo},
    traffic::{MAX_LOSS, RTP_PAYLOAD, Sink, Spread, Trial},
};

const SUITE: SrtpSuite = SrtpSuite::AesCm128HmacSha1_80;
/// First rate of the ramp (packets/s).
const START_PPS: f64 = 1_000.0;
/// Bounds on one trial's packets, whatever the rate (they are all protected beforehand).
const MIN_TRIAL: u64 = 300;
const MAX_TRIAL: u64 = 250_000;
/// Packets per sendmmsg call.
const BATCH: usize = 32;
/// A userspace relay holds packets in socket buffers: time for them to come out.
const DRAIN: Duration = Duration::from_millis(300);
/// Packets of the payload check, and where its callee listens (the relay's own namespace).
const CHECK_PACKETS: u16 = 64;
const CHECK_PORT: u16 = 5998;
const SSRC: u32 = 0x5eed_0002;

/// One relay's SRTP -> RTP figures over repeated searches (packets/s).
#[derive(Clone, Copy, Debug, Default)]
pub struct SrtpFigures {
    /// Highest rate with loss <= [`MAX_LOSS`]; 0 when even 1 kpps lost packets.
    pub zero_loss: Spread,
    /// Forwarded with the generator unthrottled (overload).
    pub saturation: Spread,
    /// What the unthrottled generator offered (median over the searches).
    pub offered: f64,
    /// Loss at that overload (median).
    pub overload_loss: f64,
    /// True when even the unthrottled generator saw no loss (the relay was not the limit).
    pub generator_bound: bool,
    /// Decrypted packets verified at the check callee, of those sent.
    pub verified: (u16, u16),
    pub searches: usize,
}

/// How hard to look.
#[derive(Clone, Copy, Debug)]
pub struct Effort {
    /// Searches per relay.
    pub runs: u32,
    /// Trials per step (their median loss decides).
    pub repeats: u32,
    /// Bisection steps after the ramp.
    pub steps: u32,
    /// Target length of one trial.
    pub trial: Duration,
}

impl Effort {
    pub fn new(quick: bool) -> Effort {
        if quick {
            Effort {
                runs: 1,
                repeats: 1,
                steps: 3,
                trial: Duration::from_millis(200),
            }
        } else {
            Effort {
                runs: 5,
                repeats: 3,
                steps: 5,
                trial: Duration::from_millis(250),
            }
        }
    }

    /// Progress-bar units one relay's measurement takes.
    pub fn bar_units(&self) -> u64 {
        u64::from(self.runs)
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn sdp_str(v: &Map<String, Value>) -> Result<&str> {
    v.get("sdp")
        .and_then(Value::as_str)
        .with_context(|| format!("reply without SDP: {v:?}"))
}

/// The generator's master key and salt for call `n` (every call its own).
fn key(n: u32) -> Vec<u8> {
    (0..SUITE.master_len() as u32)
        .map(|i| (n.wrapping_mul(131).wrapping_add(i * 29 + 7) % 251) as u8)
        .collect()
}

/// Offer (the generator, SDES) and answer (the callee at `callee`, plain RTP) with the same
/// flags for both relays; returns the relay endpoint the generator sends its SRTP to.
fn call(c: &NgClient, call_id: &str, n: u32, callee: SocketAddr) -> Result<SocketAddr> {
    let crypto = format!("a=crypto:{}", CryptoAttr::new(1, SUITE, key(n)));
    let offer = relay_tests::call::sdp(
        &Ipv4Addr::from(GEN_ADDR).to_string(),
        GEN_PORT,
        &["a=sendrecv", &crypto],
    )
    .replace("RTP/AVP", "RTP/SAVP");
    let to_callee = c.call(&obj(json!({
        "command": "offer", "call-id": call_id, "from-tag": "gen", "sdp": offer,
        "transport-protocol": "RTP/AVP", "DTLS": "off", "ICE": "remove",
    })))?;
    let s = sdp_str(&to_callee)?;
    if !s.contains(" RTP/AVP ") || s.contains("a=crypto") {
        bail!("the relay's offer to the callee is not plain RTP/AVP:\n{s}");
    }
    let answer = relay_tests::call::sdp(&callee.ip().to_string(), callee.port(), &["a=sendrecv"]);
    let to_gen = c.call(&obj(json!({
        "command": "answer", "call-id": call_id, "from-tag": "gen", "to-tag": "sink",
        "sdp": answer,
    })))?;
    let s = sdp_str(&to_gen)?;
    if !s.contains(" RTP/SAVP ") || !s.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80") {
        bail!("the relay's answer to the generator does not accept its SDES:\n{s}");
    }
    Ok(media_addr(s))
}

/// RTP packet `i` of a trial: sequence and timestamp from `i`, a payload that says `i` too.
fn rtp(i: u64) -> Vec<u8> {
    let seq = i as u16;
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&((i as u32).wrapping_mul(160)).to_be_bytes());
    p.extend_from_slice(&SSRC.to_be_bytes());
    p.extend((0..RTP_PAYLOAD).map(|j| (i as usize).wrapping_mul(7).wrapping_add(j) as u8));
    p
}

/// `count` packets of call `n`, protected in order (libsrtp keeps the rollover counter).
fn protected(n: u32, count: u64) -> Result<Vec<Vec<u8>>> {
    let mut ctx = SrtpContext::new(SUITE, &key(n), Direction::Outbound)?;
    (0..count)
        .map(|i| {
            let mut p = rtp(i);
            ctx.protect_rtp(&mut p)?;
            Ok(p)
        })
        .collect()
}

/// Sends `pkts` on the connected socket `sock`, paced at `rate` packets/s (None: as fast as
/// it goes); returns the seconds it took.
fn send(sock: &UdpSocket, pkts: &[Vec<u8>], rate: Option<f64>) -> Result<f64> {
    let mut iov: Vec<libc::iovec> = pkts
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iov
        .iter_mut()
        .map(|v| {
            // SAFETY: an all-zero mmsghdr is valid (no name, no control data).
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    let fd = sock.as_raw_fd();
    let start = Instant::now();
    let mut sent = 0usize;
    while sent < msgs.len() {
        let due = rate.map_or(msgs.len(), |r| {
            ((start.elapsed().as_secs_f64() * r) as usize + 1).min(msgs.len())
        });
        if due <= sent {
            std::hint::spin_loop();
            continue;
        }
        let n = (due - sent).min(BATCH);
        // SAFETY: msgs[sent..sent + n] point at iovecs and buffers that outlive the call.
        let r = unsafe { libc::sendmmsg(fd, msgs[sent..].as_mut_ptr(), n as u32, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN | libc::ENOBUFS | libc::EINTR) => continue,
                _ => bail!("sendmmsg: {e}"),
            }
        }
        sent += r as usize;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// One relay under test, with the sockets and counters a trial needs.
struct Bench<'a> {
    label: &'a str,
    client: NgClient,
    gen_sock: UdpSocket,
    sink: &'a Sink,
    /// Calls made so far (call-ids and keys).
    calls: u32,
    tag: String,
}

impl Bench<'_> {
    fn call_id(&self, n: u32) -> String {
        format!("bench-srtp-{}-{n}", self.tag)
    }

    /// One fresh call, `count` packets at `rate`, the call deleted after the drain.
    fn trial(&mut self, rate: Option<f64>, count: u64) -> Result<Trial> {
        let n = self.calls;
        self.calls += 1;
        let id = self.call_id(n);
        let to = call(&self.client, &id, n, SocketAddr::from((SINK_ADDR, 5000)))?;
        let pkts = protected(n, count.clamp(MIN_TRIAL, MAX_TRIAL))?;
        self.gen_sock.connect(to)?;
        let before = self.sink.packets()?;
        let secs = send(&self.gen_sock, &pkts, rate)?;
        std::thread::sleep(DRAIN);
        let received = self.sink.packets()? - before;
        // Gone before the next trial reads the sink: nothing of this call counts there.
        let _ = self
            .client
            .call(&obj(json!({"command": "delete", "call-id": id})));
        Ok(Trial {
            sent: pkts.len() as u64,
            received,
            secs,
        })
    }

    /// The median trial (by loss) of `repeats` at `rate`.
    fn step(&mut self, rate: f64, e: &Effort) -> Result<Trial> {
        let count = (rate * e.trial.as_secs_f64()) as u64;
        let mut trials = (0..e.repeats.max(1))
            .map(|_| self.trial(Some(rate), count))
            .collect::<Result<Vec<_>>>()?;
        trials.sort_by(|a, b| a.loss().total_cmp(&b.loss()));
        let t = trials[trials.len() / 2];
        if std::env::var_os("RELAY_BENCH_VERBOSE").is_some() {
            eprintln!("{}: offered {rate:.0} pps: {t:?}", self.label);
        }
        Ok(t)
    }

    /// One search: the unthrottled trial, the ramp from [`START_PPS`], the bisection.
    /// Returns (zero-loss pps, the unthrottled trial).
    fn search(&mut self, e: &Effort, bar: &ProgressBar) -> Result<(f64, Trial)> {
        let warm = self.trial(None, 20_000)?;
        let un = self.trial(None, (warm.rate() * 2.0 * e.trial.as_secs_f64()) as u64)?;
        if un.received == 0 {
            bail!("{}: nothing reached the sink", self.label);
        }
        if un.loss() <= MAX_LOSS {
            return Ok((un.rate(), un));
        }
        let (mut lo, mut hi, mut best) = (0.0f64, un.rate(), 0.0f64);
        let mut rate = START_PPS;
        while rate < un.rate() {
            let t = self.step(rate, e)?;
            bar.set_message(format!(
                "{}: SRTP {:.1} kpps, loss {:.3}%",
                self.label,
                rate / 1e3,
                t.loss() * 100.0
            ));
            if t.loss() > MAX_LOSS {
                hi = rate;
                break;
            }
            best = best.max(t.rate());
            lo = rate;
            rate *= 2.0;
        }
        if lo > 0.0 {
            for _ in 0..e.steps {
                let mid = (lo * hi).sqrt();
                let t = self.step(mid, e)?;
                if t.loss() <= MAX_LOSS {
                    best = best.max(t.rate());
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
        }
        Ok((best, un))
    }

    /// The payload check: a call whose callee is a socket in the relay's namespace.
    fn check(&mut self, t: &Topo) -> Result<(u16, u16)> {
        let callee = SocketAddr::from((RELAY_OUT, CHECK_PORT));
        let rx = t.relay.run(move || -> Result<UdpSocket> {
            let s = UdpSocket::bind(callee)?;
            s.set_read_timeout(Some(Duration::from_millis(500)))?;
            Ok(s)
        })??;
        let n = self.calls;
        self.calls += 1;
        let id = self.call_id(n);
        let to = call(&self.client, &id, n, callee)?;
        let pkts = protected(n, u64::from(CHECK_PACKETS))?;
        self.gen_sock.connect(to)?;
        let mut ok = 0u16;
        let mut buf = [0u8; 2048];
        for (i, p) in pkts.iter().enumerate() {
            self.gen_sock.send(p)?;
            match rx.recv(&mut buf) {
                Ok(len) if buf[..len] == rtp(i as u64)[..] => ok += 1,
                Ok(len) => bail!(
                    "{}: packet {i} reached the callee as {len} bytes that are not its RTP \
                     (still encrypted?)",
                    self.label
                ),
                Err(e) => bail!("{}: packet {i} did not reach the callee: {e}", self.label),
            }
        }
        let _ = self
            .client
            .call(&obj(json!({"command": "delete", "call-id": id})));
        Ok((ok, CHECK_PACKETS))
    }
}

fn spread(mut v: Vec<f64>) -> Spread {
    v.sort_by(f64::total_cmp);
    Spread {
        median: v[v.len() / 2],
        min: v[0],
        max: v[v.len() - 1],
    }
}

/// Every thread of process `pid` onto `cpus`.
fn pin_process(pid: u32, cpus: &[usize]) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside the set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: as above.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
        let Ok(tid) = task.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // SAFETY: the set is initialised; a thread that just exited only makes this fail.
        unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    }
    Ok(())
}

/// The NAPI threads of `devs` onto CPU 1 at normal priority (the relay competes with them).
fn napi_on_cpu1(devs: &[&str]) -> Result<()> {
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        if devs
            .iter()
            .any(|d| comm.trim_end().starts_with(&format!("napi/{d}-")))
        {
            // SAFETY: a zeroed sched_param is valid for SCHED_OTHER (priority 0).
            unsafe {
                let p: libc::sched_param = std::mem::zeroed();
                libc::sched_setscheduler(pid, libc::SCHED_OTHER, &p);
            }
            topo::pin(pid, 1, None)?;
        }
    }
    Ok(())
}

/// Measures the relay behind the NG server `server` (process `pid`, pinned to CPU 1 for the
/// measurement and released after).
#[allow(clippy::too_many_arguments)]
pub fn measure(
    t: &Topo,
    sink: &Arc<Sink>,
    server: &str,
    label: &str,
    pid: u32,
    effort: &Effort,
    bar: &ProgressBar,
) -> Result<SrtpFigures> {
    let two = topo::cpus() >= 2;
    if two {
        pin_process(pid, &[1])?;
        napi_on_cpu1(&[&t.g1, &t.s1, &t.s0])?;
    }
    let r = measure_pinned(t, sink, server, label, effort, bar);
    if two {
        let all: Vec<usize> = (0..topo::cpus()).collect();
        pin_process(pid, &all)?;
    }
    r
}

fn measure_pinned(
    t: &Topo,
    sink: &Arc<Sink>,
    server: &str,
    label: &str,
    effort: &Effort,
    bar: &ProgressBar,
) -> Result<SrtpFigures> {
    let ng: SocketAddr = server.parse()?;
    let client = t
        .relay
        .run(move || NgClient::new(ng, Duration::from_secs(1), 3))??;
    let gen_sock = t
        .gen_ns
        .run(|| UdpSocket::bind(SocketAddr::from((GEN_ADDR, GEN_PORT))))??;
    static RUN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let sink = Arc::clone(sink);
    let label = label.to_owned();
    let e = *effort;
    let bar = bar.clone();
    // The generator's thread: CPU 0, with CPU 1 kept awake for the relay.
    std::thread::scope(|s| {
        s.spawn(move || -> Result<SrtpFigures> {
            if topo::cpus() >= 2 {
                topo::pin(0, 0, None)?;
            }
            let _awake = topo::KeepAwake::start(1);
            let mut b = Bench {
                label: &label,
                client,
                gen_sock,
                sink: &sink,
                calls: 0,
                tag: format!("{}-{run}", label.replace(' ', "-")),
            };
            bar.set_message(format!("{label}: SRTP payload check"));
            let verified = b.check(t)?;
            let (mut zero, mut sat, mut offered, mut loss) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let mut generator_bound = false;
            for _ in 0..e.runs.max(1) {
                let (z, un) = b.search(&e, &bar)?;
                generator_bound |= un.loss() <= MAX_LOSS;
                zero.push(z);
                sat.push(un.forwarded());
                offered.push(un.rate());
                loss.push(un.loss());
                bar.inc(1);
            }
            Ok(SrtpFigures {
                zero_loss: spread(zero),
                saturation: spread(sat),
                offered: spread(offered).median,
                overload_loss: spread(loss).median,
                generator_bound,
                verified,
                searches: e.runs.max(1) as usize,
            })
        })
        .join()
        .map_err(|_| anyhow::anyhow!("SRTP generator thread panicked"))?
    })
}

fn kpps(v: f64) -> String {
    format!("{:.1}", v / 1e3)
}

fn range(s: &Spread) -> String {
    format!("{} ({}-{})", kpps(s.median), kpps(s.min), kpps(s.max))
}

/// The report's section for the SRTP figures, same run.
pub fn section(ours: Option<&SrtpFigures>, rte: Option<&SrtpFigures>) -> String {
    let mut s = String::new();
    let searches = ours.or(rte).map_or(0, |f| f.searches);
    let _ = writeln!(
        s,
        "\n### SRTP -> RTP through userspace, same run\n\nOne call per trial, set up over NG with \
         the same flags for both relays: the generator offers `RTP/SAVP` with its `a=crypto` \
         (AES_CM_128_HMAC_SHA1_80), `transport-protocol=RTP/AVP` toward the sink. The generator \
         sends real SRTP (libsrtp2, 172-byte RTP + 10-byte tag) from userspace on CPU 0; the \
         relay (every thread) and the NAPI threads of its veths share CPU 1. Zero loss: the \
         highest rate with loss <= 0.01%, ramping from 1 kpps (x2) then bisecting, median of \
         the step's trials. kpps, median (min-max) over {searches} searches. Saturation: what \
         reached the sink per second with the generator unthrottled.\n"
    );
    let _ = writeln!(s, "| measure | our daemon | rtpengine | ours / rtpengine |");
    let _ = writeln!(s, "|---|---:|---:|---:|");
    let cell = |f: Option<&SrtpFigures>, g: &dyn Fn(&SrtpFigures) -> String| {
        f.map_or("not run".to_owned(), g)
    };
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.2}x", a / b)
        } else {
            "-".into()
        }
    };
    let both = |g: &dyn Fn(&SrtpFigures) -> f64| match (ours, rte) {
        (Some(o), Some(r)) => ratio(g(o), g(r)),
        _ => "-".into(),
    };
    let _ = writeln!(
        s,
        "| zero-loss kpps, SRTP -> RTP, 1 call | {} | {} | {} |",
        cell(ours, &|f| {
            let bound = if f.generator_bound {
                " (generator-bound)"
            } else {
                ""
            };
            format!("{}{bound}", range(&f.zero_loss))
        }),
        cell(rte, &|f| range(&f.zero_loss)),
        both(&|f| f.zero_loss.median)
    );
    let _ = writeln!(
        s,
        "| saturation: forwarded kpps, generator unthrottled | {} | {} | {} |",
        cell(ours, &|f| range(&f.saturation)),
        cell(rte, &|f| range(&f.saturation)),
        both(&|f| f.saturation.median)
    );
    let _ = writeln!(
        s,
        "| offered kpps then (loss) | {} | {} | |",
        cell(ours, &|f| format!(
            "{} ({:.1}%)",
            kpps(f.offered),
            f.overload_loss * 100.0
        )),
        cell(rte, &|f| format!(
            "{} ({:.1}%)",
            kpps(f.offered),
            f.overload_loss * 100.0
        )),
    );
    let _ = writeln!(
        s,
        "| decrypted RTP checked at a callee socket (payload equal) | {} | {} | |",
        cell(ours, &|f| format!("{}/{}", f.verified.0, f.verified.1)),
        cell(rte, &|f| format!("{}/{}", f.verified.0, f.verified.1)),
    );
    s
}
