//! The generator (BPF_PROG_TEST_RUN with live frames, on the generator's veth), the sink's
//! counters, and the RFC 2544 style search for the highest offered rate with loss <= 0.01%.

use std::{
    net::SocketAddrV4,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::BENCH_OBJECT;
use anyhow::{Context as _, Result, bail};
use aya::{
    EbpfLoader,
    maps::{Array, MapData, PerCpuArray, PerCpuValues},
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp},
    util::nr_cpus,
};
use etherparse::PacketBuilder;
use indicatif::ProgressBar;
use relay_common::{
    bench::{
        CTRL_ADDR, CTRL_INTERVAL, CTRL_PORT, GEN_CONFIG_SYMBOL, GEN_CTRL_MAP, GEN_HEADER,
        GEN_PROGRAM, GEN_SEQ_MAP, GenConfig, LAT_BUCKETS, OFF_IP_CHECK, OFF_IP_DST, OFF_RTP_SEQ,
        OFF_RTP_SSRC, OFF_RTP_TS, OFF_STAMP, OFF_UDP_CHECK, OFF_UDP_DPORT, SINK_LAT_MAP,
        SINK_STATS_MAP, lat_bucket_ns,
    },
    stats::StatEntry,
};
use relay_tests::frames::xdp_md;

use crate::topo::{self, GEN_ADDR, GEN_PORT, Topo};

/// RTP: 12-byte header, 160 bytes of payload (20 ms of G.711).
pub const RTP_PAYLOAD: usize = 160;
/// Frames per batch inside a live-frames run (the kernel transmits a batch at once).
const BATCH: u32 = 32;
/// Upper bound on the packets of one trial, whatever the rate.
const MAX_TRIAL_PACKETS: u64 = 20_000_000;
/// Lowest rate the search tries (the generator's pacing is precise down to about this).
const MIN_RATE: f64 = 10_000.0;
/// Loss allowed at the zero-loss rate (RFC 2544 style): 0.01%.
pub const MAX_LOSS: f64 = 1e-4;

/// One RTP frame from the generator to `dst:dport`.
pub fn rtp_frame(t: &Topo, dst: [u8; 4], dport: u16, seq: u16) -> Vec<u8> {
    let mut payload = vec![0x80, 0x00];
    payload.extend_from_slice(&seq.to_be_bytes());
    payload.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    payload.extend_from_slice(&0x5eed_0001u32.to_be_bytes());
    payload.resize(12 + RTP_PAYLOAD, 0xd5); // A-law silence
    let mut out = Vec::new();
    PacketBuilder::ethernet2(t.g0_mac, t.g1_mac)
        .ipv4(GEN_ADDR, dst, 64)
        .udp(GEN_PORT, dport)
        .write(&mut out, &payload)
        .expect("frame builds");
    out
}

fn sum(b: &[u8]) -> u64 {
    b.chunks(2)
        .map(|w| u64::from(u16::from_ne_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold32(mut s: u64) -> u32 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u32
}

/// The generator's configuration for `streams` streams from `addr_base:port_base` upwards, and
/// the template frame it starts from.
pub fn gen_config(
    t: &Topo,
    addr_base: [u8; 4],
    port_base: u16,
    streams: u32,
    ports_per_addr: u32,
) -> (GenConfig, Vec<u8>) {
    let mut frame = rtp_frame(t, [0; 4], 0, 0);
    for (off, len) in [
        (OFF_IP_CHECK, 2),
        (OFF_IP_DST, 4),
        (OFF_UDP_DPORT, 2),
        (OFF_UDP_CHECK, 2),
        (OFF_RTP_SEQ, 2),
        (OFF_RTP_TS, 4),
        (OFF_RTP_SSRC, 4),
        (OFF_STAMP, 8),
    ] {
        frame[off..off + len].fill(0);
    }
    let ip_sum = sum(&frame[14..34]);
    let udp = &frame[34..];
    let udp_len = u16::from_be_bytes([udp[4], udp[5]]);
    let pseudo = sum(&GEN_ADDR) + sum(&[0, 17]) + sum(&udp_len.to_be_bytes());
    let udp_sum = pseudo + sum(udp);
    let mut template = [0u8; GEN_HEADER];
    template.copy_from_slice(&frame[..GEN_HEADER]);
    (
        GenConfig {
            template,
            port_base,
            streams,
            ports_per_addr,
            addr_base,
            ip_sum: fold32(ip_sum),
            udp_sum: fold32(udp_sum),
        },
        frame,
    )
}

/// Frames the sink counted (and dropped), and the one-way latency it measured.
pub struct Sink {
    map: PerCpuArray<MapData, StatEntry>,
    lat: std::sync::Mutex<PerCpuArray<MapData, u64>>,
}

/// One-way latency percentiles (microseconds) at one offered rate.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    /// Fraction of the program's saturation rate offered.
    pub load: f64,
    pub pps: f64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub samples: u64,
}

impl Sink {
    pub fn new(ebpf: &mut aya::Ebpf) -> Result<Sink> {
        let map = ebpf.take_map(SINK_STATS_MAP).context("no sink map")?;
        let lat = ebpf.take_map(SINK_LAT_MAP).context("no latency map")?;
        Ok(Sink {
            map: PerCpuArray::try_from(map)?,
            lat: std::sync::Mutex::new(PerCpuArray::try_from(lat)?),
        })
    }

    /// Zeroes the latency histogram.
    pub fn reset_latency(&self) -> Result<()> {
        let cpus = nr_cpus().map_err(|(_, e)| e)?;
        let mut lat = self.lat.lock().unwrap_or_else(|e| e.into_inner());
        for b in 0..LAT_BUCKETS {
            lat.set(b, PerCpuValues::try_from(vec![0u64; cpus])?, 0)?;
        }
        Ok(())
    }

    /// The histogram summed over CPUs: p50, p99, p99.9 (us, bucket upper edges) and samples.
    pub fn latency(&self) -> Result<(f64, f64, f64, u64)> {
        let lat = self.lat.lock().unwrap_or_else(|e| e.into_inner());
        let mut counts = Vec::with_capacity(LAT_BUCKETS as usize);
        for b in 0..LAT_BUCKETS {
            counts.push(lat.get(&b, 0)?.iter().sum::<u64>());
        }
        let total: u64 = counts.iter().sum();
        let at = |q: f64| {
            let want = (total as f64 * q).ceil() as u64;
            let mut acc = 0;
            for (b, c) in counts.iter().enumerate() {
                acc += c;
                if acc >= want.max(1) {
                    return lat_bucket_ns(b as u32) as f64 / 1e3;
                }
            }
            f64::NAN
        };
        Ok((at(0.5), at(0.99), at(0.999), total))
    }

    pub fn packets(&self) -> Result<u64> {
        Ok(self.map.get(&0, 0)?.iter().map(|s| s.packets).sum())
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Trial {
    pub sent: u64,
    pub received: u64,
    pub secs: f64,
}

impl Trial {
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.secs
    }
    /// What reached the sink per second of sending.
    pub fn forwarded(&self) -> f64 {
        self.received as f64 / self.secs
    }
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 1.0;
        }
        1.0 - (self.received.min(self.sent) as f64 / self.sent as f64)
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Search {
    /// What the generator achieved without a rate limit, and the loss there.
    pub unthrottled: Trial,
    /// Highest offered rate with loss <= [`MAX_LOSS`], in packets per second.
    pub zero_loss_pps: f64,
    /// True when even the unthrottled generator saw no loss: the relay was not the limit.
    pub generator_bound: bool,
}

/// Gives the destination of the next trial (a fresh call on a relay that blocks a flooded
/// stream for good, as rtpengine does); None keeps the configured one.
pub type Fresh = Box<dyn FnMut() -> Result<SocketAddrV4> + Send>;

struct Generator<'a> {
    prog: &'a mut Xdp,
    ctrl: Array<MapData, u64>,
    fresh: Option<Fresh>,
    state: PerCpuArray<MapData, u64>,
    frame: Vec<u8>,
    ctx: Vec<u8>,
}

/// What a rate search drives: sends `count` packets paced at `rate` and reports the trial.
pub trait Sender {
    fn trial(
        &mut self,
        sink: &Sink,
        rate: Option<f64>,
        count: u64,
        drain: Duration,
    ) -> Result<Trial>;
}

impl Sender for Generator<'_> {
    /// Sends `count` packets paced at `rate` packets/s (None: as fast as possible) in one
    /// BPF_PROG_TEST_RUN call: each call sets up and tears down a page pool (an RCU grace
    /// period), so short calls would measure that instead of forwarding.
    fn trial(
        &mut self,
        sink: &Sink,
        rate: Option<f64>,
        count: u64,
        drain: Duration,
    ) -> Result<Trial> {
        let interval = rate.map_or(0, |r| (1e9 / r) as u64);
        self.ctrl.set(CTRL_INTERVAL, interval, 0)?;
        if let Some(fresh) = self.fresh.as_mut() {
            let to = fresh()?;
            self.ctrl.set(CTRL_PORT, u64::from(to.port()), 0)?;
            self.ctrl.set(
                CTRL_ADDR,
                u64::from(u32::from_ne_bytes(to.ip().octets())),
                0,
            )?;
        }
        let cpus = nr_cpus().map_err(|(_, e)| e)?;
        for slot in [2, 3] {
            self.state
                .set(slot, PerCpuValues::try_from(vec![0u64; cpus])?, 0)?;
        }
        let before = sink.packets()?;
        let start = Instant::now();
        let opts = TestRunOptions {
            data_in: Some(&self.frame),
            ctx_in: Some(&self.ctx),
            repeat: count as u32,
            attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
            ..TestRunOptions::default()
        };
        self.prog.test_run(opts).context("live-frames test run")?;
        // The sending time as the generator saw it, without the run's set-up and tear-down.
        let first = self
            .state
            .get(&2, 0)?
            .iter()
            .copied()
            .filter(|&t| t > 0)
            .min();
        let last = self.state.get(&3, 0)?.iter().copied().max();
        let secs = match (first, last) {
            (Some(f), Some(l)) if l > f => (l - f) as f64 / 1e9,
            _ => start.elapsed().as_secs_f64(),
        };
        std::thread::sleep(drain);
        let received = sink.packets()? - before;
        Ok(Trial {
            sent: count,
            received,
            secs,
        })
    }
}

pub struct SearchSpec {
    pub label: String,
    pub config: GenConfig,
    pub frame: Vec<u8>,
    pub trial: Duration,
    pub drain: Duration,
    pub steps: u32,
    /// Trials per search step; the step's result is their median.
    pub repeats: u32,
    pub fresh: Option<Fresh>,
    /// Drive the kernel's pktgen instead of the live-frames generator.
    pub pktgen: bool,
}

/// Runs the search on a thread inside the generator's namespace, pinned to CPU 0.
pub fn search(t: &Topo, sink: &Arc<Sink>, spec: SearchSpec, bar: &ProgressBar) -> Result<Search> {
    let _awake = crate::topo::KeepAwake::start(1);
    let r = search_inner(t, sink, spec, bar);
    if std::env::var_os("RELAY_BENCH_VERBOSE").is_some() {
        for (ns, dev) in [
            (&t.gen_ns, &t.g0),
            (&t.relay, &t.g1),
            (&t.relay, &t.s1),
            (&t.sink, &t.s0),
        ] {
            let out = crate::topo::ns_sh(ns, &format!("ethtool -S {dev} | grep -v ': 0$'"))
                .unwrap_or_default();
            eprintln!(
                "{dev}: {}",
                out.split_whitespace().collect::<Vec<_>>().join(" ")
            );
        }
    }
    r
}

fn search_inner(t: &Topo, sink: &Arc<Sink>, spec: SearchSpec, bar: &ProgressBar) -> Result<Search> {
    t.pin_napi()?;
    if spec.pktgen {
        let c = &spec.config;
        let streams = u16::try_from(c.streams)
            .ok()
            .filter(|&n| u32::from(n) <= c.ports_per_addr)
            .context("pktgen here sends to one address: at most one address's ports")?;
        let mut g = crate::pktgen::Pktgen {
            ns_name: t.gen_ns.name.clone(),
            spec: crate::pktgen::Spec {
                dev: t.g0.clone(),
                dst_mac: t.g1_mac,
                src: crate::pktgen::dst(crate::topo::GEN_ADDR, crate::topo::GEN_PORT),
                dst: crate::pktgen::dst(c.addr_base, c.port_base),
                streams,
                pkt_size: spec.frame.len(),
            },
            fresh: spec.fresh,
        };
        return bisect(
            &mut g,
            sink,
            &spec.label,
            spec.trial,
            spec.drain,
            spec.steps,
            spec.repeats,
            bar,
        );
    }
    let g0 = t.g0.clone();
    let sink = Arc::clone(sink);
    let bar = bar.clone();
    t.gen_ns.run(move || -> Result<Search> {
        // Pinned, but not real-time: a paced generator spins, and a real-time spinner would
        // exhaust the CPU's real-time budget and get throttled mid-trial.
        topo::pin(0, 0, None)?;
        let ifindex = relay_ctl::xdp::ifindex(&g0).context("generator device")?;
        let mut ebpf = EbpfLoader::new()
            .override_global(GEN_CONFIG_SYMBOL, &spec.config, true)
            .load(BENCH_OBJECT)?;
        let ctrl = Array::try_from(ebpf.take_map(GEN_CTRL_MAP).context("no control map")?)?;
        let state = PerCpuArray::try_from(ebpf.take_map(GEN_SEQ_MAP).context("no seq map")?)?;
        let prog: &mut Xdp = ebpf
            .program_mut(GEN_PROGRAM)
            .context("no gen program")?
            .try_into()?;
        prog.load()?;
        let ctx = xdp_md(spec.frame.len(), ifindex);
        let mut g = Generator {
            prog,
            ctrl,
            fresh: spec.fresh,
            state,
            frame: spec.frame,
            ctx,
        };
        bisect(
            &mut g,
            &sink,
            &spec.label,
            spec.trial,
            spec.drain,
            spec.steps,
            spec.repeats,
            &bar,
        )
    })?
}

/// One-way latency at the offered rates `rates` (fraction of saturation, pps): one paced trial
/// each (the live-frames generator; None with pktgen, which does not stamp).
pub fn latency(
    t: &Topo,
    sink: &Arc<Sink>,
    spec: SearchSpec,
    rates: Vec<(f64, f64)>,
) -> Result<Option<Vec<Latency>>> {
    if spec.pktgen {
        return Ok(None);
    }
    let _awake = crate::topo::KeepAwake::start(1);
    t.pin_napi()?;
    let g0 = t.g0.clone();
    let sink = Arc::clone(sink);
    t.gen_ns.run(move || -> Result<Option<Vec<Latency>>> {
        topo::pin(0, 0, None)?;
        let ifindex = relay_ctl::xdp::ifindex(&g0).context("generator device")?;
        let mut ebpf = EbpfLoader::new()
            .override_global(GEN_CONFIG_SYMBOL, &spec.config, true)
            .load(BENCH_OBJECT)?;
        let ctrl = Array::try_from(ebpf.take_map(GEN_CTRL_MAP).context("no control map")?)?;
        let state = PerCpuArray::try_from(ebpf.take_map(GEN_SEQ_MAP).context("no seq map")?)?;
        let prog: &mut Xdp = ebpf
            .program_mut(GEN_PROGRAM)
            .context("no gen program")?
            .try_into()?;
        prog.load()?;
        let ctx = xdp_md(spec.frame.len(), ifindex);
        let mut g = Generator {
            prog,
            ctrl,
            fresh: spec.fresh,
            state,
            frame: spec.frame,
            ctx,
        };
        let secs = spec.trial.as_secs_f64() * 2.0;
        let mut out = Vec::new();
        for (load, pps) in rates {
            let count = ((pps * secs) as u64).clamp(1_000, MAX_TRIAL_PACKETS);
            // A short warm-up at the same rate, then the measured trial.
            g.trial(&sink, Some(pps), count / 10 + 1_000, spec.drain)?;
            sink.reset_latency()?;
            let tr = g.trial(&sink, Some(pps), count, spec.drain)?;
            let (p50, p99, p999, samples) = sink.latency()?;
            out.push(Latency {
                load,
                pps: tr.rate(),
                p50,
                p99,
                p999,
                samples,
            });
        }
        Ok(Some(out))
    })?
}

/// The search proper: an unthrottled trial, then a geometric bisection on the offered rate.
#[allow(clippy::too_many_arguments)]
pub fn bisect(
    g: &mut dyn Sender,
    sink: &Sink,
    label: &str,
    trial: Duration,
    drain: Duration,
    steps: u32,
    repeats: u32,
    bar: &ProgressBar,
) -> Result<Search> {
    // Warm-up (page pool, NAPI thread) that also sizes the unthrottled trial.
    // Every trial's count is bounded here, whatever the sender.
    let count = |n: f64| (n as u64).clamp(1_000, MAX_TRIAL_PACKETS);
    let warm = g.trial(sink, None, 200_000, drain)?;
    let secs = trial.as_secs_f64();
    let un = g.trial(sink, None, count(warm.rate() * secs), drain)?;
    bar.set_message(format!(
        "{}: unthrottled {:.2} Mpps, loss {:.3}%",
        label,
        un.rate() / 1e6,
        un.loss() * 100.0
    ));
    bar.inc(1);
    if un.received == 0 {
        bail!("{}: nothing reached the sink", label);
    }
    if un.loss() <= MAX_LOSS {
        bar.inc(u64::from(steps));
        return Ok(Search {
            unthrottled: un,
            zero_loss_pps: un.rate(),
            generator_bound: true,
        });
    }
    // Bisect (geometrically: userspace and XDP relays differ by orders of magnitude) on
    // the offered rate. Each step is the median of `repeats` trials, as a shared machine's
    // hiccups lose packets at any rate now and then; the figure is the highest rate the
    // generator achieved (it can fall short of the offered one) in a step without loss.
    let (mut lo, mut hi, mut best) = (MIN_RATE, un.rate(), 0.0f64);
    for _ in 0..steps {
        let mid = (lo * hi).sqrt();
        let mut trials = Vec::new();
        for _ in 0..repeats {
            trials.push(g.trial(sink, Some(mid), count(mid * secs), drain)?);
        }
        trials.sort_by(|a, b| a.loss().total_cmp(&b.loss()));
        let tr = trials[trials.len() / 2];
        let ok = tr.loss() <= MAX_LOSS;
        if ok {
            best = best.max(tr.rate());
        }
        bar.set_message(format!(
            "{}: {:.3} Mpps offered, loss {:.3}% {}",
            label,
            mid / 1e6,
            tr.loss() * 100.0,
            if ok { "ok" } else { "too fast" }
        ));
        bar.inc(1);
        if std::env::var_os("RELAY_BENCH_VERBOSE").is_some() {
            eprintln!(
                "{}: {tr:?} offered {mid:.0} achieved {:.0}",
                label,
                tr.rate()
            );
        }
        if ok {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(Search {
        unthrottled: un,
        zero_loss_pps: best,
        generator_bound: false,
    })
}

/// Median ns/packet of `prog` under BPF_PROG_TEST_RUN with `repeat` (5 runs after a warm-up), checking the
/// verdict each time. Must run on a thread inside the relay's namespace (FIB, ingress device).
/// ns/packet of `repeat` runs: the median of five runs (after one warm-up) and their range.
#[derive(Clone, Copy, Debug, Default)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(mut runs: Vec<f64>) -> Spread {
        runs.sort_by(f64::total_cmp);
        Spread {
            median: runs[runs.len() / 2],
            min: runs[0],
            max: runs[runs.len() - 1],
        }
    }
}

/// BPF_PROG_TEST_RUN with `repeat` of an XDP program; `want` is the expected XDP action.
pub fn ns_per_packet(prog: &mut Xdp, frame: &[u8], ingress: u32, want: u32) -> Result<Spread> {
    repeat_runs(prog, frame, &xdp_md(frame.len(), ingress), want)
}

/// The same for a TC program: the context is an `__sk_buff` naming the device (`ifindex`).
pub fn ns_per_packet_tc(
    prog: &mut aya::programs::SchedClassifier,
    frame: &[u8],
    ifindex: u32,
    want: u32,
) -> Result<Spread> {
    let mut ctx = vec![0u8; 192];
    ctx[36..40].copy_from_slice(&ifindex.to_ne_bytes());
    ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    repeat_runs(prog, frame, &ctx, want)
}

fn repeat_runs<P>(prog: &mut P, frame: &[u8], ctx: &[u8], want: u32) -> Result<Spread>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = aya::programs::TestRunResult>,
{
    let mut runs = Vec::new();
    // The first run warms caches and the map; it is not counted.
    for i in 0..6 {
        let mut out = vec![0u8; frame.len() + 256];
        let r = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(ctx),
            repeat: 200_000,
            ..TestRunOptions::default()
        })?;
        if r.return_value != want {
            bail!("verdict {} where {want} was expected", r.return_value);
        }
        if i > 0 {
            runs.push(r.duration.as_nanos() as f64);
        }
    }
    Ok(Spread::of(runs))
}
