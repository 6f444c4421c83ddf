//! `cargo xtask bench`: the relay's forwarding rate and ns/packet against a floor program (the
//! relay's own parse and a redirect, no lookup, no rewrite) and rtpengine, on a throwaway
//! generator -> relay -> sink namespace topology. Writes a markdown table and a PNG plot.

/// The bench's programs (generator, floor, sink; see relay-common's `bench`), built by build.rs.
pub(crate) static BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench"));

mod ha;
mod peers;
mod pktgen;
mod report;
mod srtp;
mod topo;
mod traffic;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::{Context as _, Result, bail};
use aya::{
    EbpfLoader,
    maps::DevMap,
    programs::{Xdp, XdpMode},
};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use relay_common::{
    bench::{
        FLOOR_DEVMAP, FLOOR_PROGRAM, LOOKUP_FLOOR_PROGRAM, LOOKUP_STREAMS_MAP, PASS_PROGRAM,
        SINK_PROGRAM,
    },
    config::{CONFIG_SYMBOL, RelayConfig},
    names,
    stream::{Endpoint, FLAG_SOURCE_ANY, Mismatch, NextHop, StreamEntry, StreamKey},
};
use relay_ctl::xdp::Relay;

use crate::{
    report::{Program, Results},
    topo::{GEN_ADDR, GEN_PORT, RELAY_OUT, SINK_ADDR, STREAM_ADDR_BASE, Topo},
    traffic::{
        Latency, Search, SearchSpec, Sink, Spread, gen_config, ns_per_packet, ns_per_packet_tc,
        rtp_frame, search,
    },
};

#[derive(Parser)]
#[command(name = "relay-bench")]
struct Args {
    /// Also measure rtpengine (Debian rtpengine-daemon) on the same topology.
    #[arg(long)]
    peers: bool,
    /// Packet generator: the kernel's pktgen where it exists (auto), or BPF_PROG_TEST_RUN live
    /// frames (live, the only one on kernels without CONFIG_NET_PKTGEN).
    #[arg(long, value_enum, default_value = "auto")]
    generator: GeneratorKind,
    /// Shorter trials and fewer search steps (a smoke run; numbers are rougher).
    #[arg(long)]
    quick: bool,
    /// Only the HA figures (failover gap, calls preserved, NG rate with Redis off and on),
    /// written to ha.md.
    #[arg(long)]
    ha: bool,
    /// Where the table and plot go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum GeneratorKind {
    Auto,
    Live,
    Pktgen,
}

/// Relay ports of the streams the generator targets: 32768 per address.
const PORT_BASE: u16 = 32_768;
const PORTS_PER_ADDR: u32 = 32_768;
/// The stream the ns/packet runs hit: its rewrite leads back to itself, so every `repeat`
/// iteration takes the whole lookup + FIB + rewrite + redirect path.
const LOOP_PORT: u16 = 40_000;
const INSTALLED: [u32; 4] = [1, 1_000, 100_000, 1_000_000];
const OFFERED: [u32; 3] = [1, 1_000, 100_000];
const XDP_REDIRECT: u32 = 4;
/// The next-hop slot every stream of the bench names (the daemon gives one per destination;
/// all streams go to the sink).
const HOP_SLOT: u32 = 1;
const TC_ACT_REDIRECT: u32 = 7;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn sa(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

fn stream_entry(
    slot: u32,
    expected: SocketAddr,
    src: SocketAddr,
    dst: SocketAddr,
    flags: u8,
) -> StreamEntry {
    StreamEntry {
        stream_id: u64::from(slot),
        expected: Endpoint::from(expected),
        src: Endpoint::from(src),
        dst: Endpoint::from(dst),
        flags,
        mismatch: Mismatch::Drop as u8,
        tos: 0,
        handover_ds: 0,
        counter_slot: slot,
        egress_ifindex: 0,
        next_hop: HOP_SLOT,
        rtcp_next_hop: 0,
        rtcp_src: Endpoint::default(),
        rtcp_dst: Endpoint::default(),
    }
}

/// Key of generator stream `i` (see `GenConfig`).
fn stream_key(i: u32) -> SocketAddr {
    let addr = u32::from_be_bytes(STREAM_ADDR_BASE) + i / PORTS_PER_ADDR;
    sa(addr.to_be_bytes(), PORT_BASE + (i % PORTS_PER_ADDR) as u16)
}

/// Runs a search `runs` times: the search with the median zero-loss rate, and the zero-loss
/// and saturation (forwarded pps under the unthrottled generator's overload) ranges.
fn rate_spreads(
    runs: u32,
    mut f: impl FnMut() -> Result<Search>,
) -> Result<(Search, Spread, Spread)> {
    let mut all = (0..runs.max(1)).map(|_| f()).collect::<Result<Vec<_>>>()?;
    let sat = Spread::of(all.iter().map(|s| s.unthrottled.forwarded()).collect());
    all.sort_by(|a, b| a.zero_loss_pps.total_cmp(&b.zero_loss_pps));
    let spread = Spread {
        median: all[all.len() / 2].zero_loss_pps,
        min: all[0].zero_loss_pps,
        max: all[all.len() - 1].zero_loss_pps,
    };
    Ok((all[all.len() / 2], spread, sat))
}

/// The loads latency is measured at: fractions of the program's median saturation rate.
fn loads(saturation: &Spread) -> Vec<(f64, f64)> {
    [0.1, 0.5, 0.9]
        .into_iter()
        .map(|f| (f, f * saturation.median))
        .collect()
}

fn cmd_out(cmd: &str, args: &[&str]) -> String {
    relay_tests::run(cmd, args).map_or_else(|_| "?".into(), |s| s.trim().to_owned())
}

fn run() -> Result<()> {
    let args = Args::parse();
    if std::env::var_os("RUST_LOG").is_none() {
        // The daemon measured for NG inherits this: one log line per call would drown the bar.
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("RUST_LOG", "warn") };
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("run as root: the bench creates network namespaces and loads XDP");
    }
    if args.ha {
        return ha::run(
            &args.out,
            args.quick,
            format!("{}, {} CPUs", cpu_model(), topo::cpus()),
            cmd_out("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        );
    }
    // Short trials, several per step: on a shared virtual machine the vCPU running the relay
    // stalls now and then for longer than a 256-frame veth ring lasts, whatever the rate; the
    // median of several short trials measures the relay instead of those stalls.
    // And each search runs `runs` times, the median kept: one unlucky step ends a bisection low.
    let (trial, steps, repeats, runs) = if args.quick {
        (Duration::from_millis(200), 5, 3, 1)
    } else {
        (Duration::from_millis(200), 8, 5, 3)
    };
    let t = Topo::new()?;
    let use_pktgen = match args.generator {
        GeneratorKind::Live => false,
        GeneratorKind::Auto => pktgen::available(&t.gen_ns),
        GeneratorKind::Pktgen if pktgen::available(&t.gen_ns) => true,
        GeneratorKind::Pktgen => bail!("no /proc/net/pktgen: this kernel has no pktgen"),
    };
    let mut notes = Vec::new();
    let relay_config = RelayConfig {
        port_min: PORT_BASE,
        port_max: u16::MAX,
        flags: 0,
    };

    // Sink: counts and drops on the sink's veth.
    let mut sink_obj = EbpfLoader::new().load(BENCH_OBJECT)?;
    let sink = Arc::new(Sink::new(&mut sink_obj)?);
    let s0 = t.s0.clone();
    let sink_obj = t.sink.run(move || -> Result<aya::Ebpf> {
        let mut obj = sink_obj;
        let p: &mut Xdp = obj.program_mut(SINK_PROGRAM).context("sink")?.try_into()?;
        p.load()?;
        p.attach(&s0, XdpMode::Driver)?;
        Ok(obj)
    })??;

    // The floor / XDP / TC comparison runs at least three searches each, so each figure has a
    // median and a range even with --quick.
    let cmp_runs = runs.max(3);
    let searches = 1 + OFFERED.len() as u64 + 2 * u64::from(args.peers) + 2 + 2;
    let srtp_effort = srtp::Effort::new(args.quick);
    let bar = ProgressBar::new(
        searches * u64::from(runs) * (1 + u64::from(steps))
            + (1 + u64::from(args.peers)) * srtp_effort.bar_units(),
    );
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} search steps  {msg}",
    )?);
    let loop_frame = rtp_frame(&t, SINK_ADDR, LOOP_PORT, 1);
    let live = |label: &str, streams: u32, drain_ms: u64| {
        let (config, frame) = gen_config(&t, STREAM_ADDR_BASE, PORT_BASE, streams, PORTS_PER_ADDR);
        SearchSpec {
            label: label.to_owned(),
            config,
            frame,
            trial,
            drain: Duration::from_millis(drain_ms),
            steps,
            repeats,
            fresh: None,
            pktgen: use_pktgen,
        }
    };

    // Floor: same parse and port check, redirect to the sink side.
    bar.set_message("floor: attaching");
    let floor_obj = EbpfLoader::new()
        .override_global(CONFIG_SYMBOL, &relay_config, true)
        .load(BENCH_OBJECT)?;
    let (g1, s1, frame) = (t.g1.clone(), t.s1.clone(), loop_frame.clone());
    let (floor_obj, floor_ns) = t.relay.run(move || -> Result<(aya::Ebpf, Spread)> {
        let mut obj = floor_obj;
        let s1_index = relay_ctl::xdp::ifindex(&s1).context("s1")?;
        let g1_index = relay_ctl::xdp::ifindex(&g1).context("g1")?;
        let mut devmap = DevMap::try_from(obj.map_mut(FLOOR_DEVMAP).context("floor devmap")?)?;
        devmap.set(0, s1_index, None, 0)?;
        let p: &mut Xdp = obj
            .program_mut(FLOOR_PROGRAM)
            .context("floor")?
            .try_into()?;
        p.load()?;
        let ns = ns_per_packet(p, &frame, g1_index, XDP_REDIRECT)?;
        p.attach(&g1, XdpMode::Driver)?;
        Ok((obj, ns))
    })??;
    let (floor_rate, floor_spread, floor_sat) =
        rate_spreads(cmp_runs, || search(&t, &sink, live("floor", 1, 20), &bar))?;
    let mut latencies: Vec<(String, Vec<Latency>)> = Vec::new();
    bar.set_message("floor: latency");
    if let Some(l) = traffic::latency(&t, &sink, live("floor", 1, 20), loads(&floor_sat))? {
        latencies.push(("parse floor (XDP)".into(), l));
    }
    drop(floor_obj);
    let mut programs = vec![Program {
        name: "parse floor (XDP)".into(),
        ns: Some(floor_ns),
        saturation: floor_sat,
        zero_loss: floor_spread,
    }];

    // Lookup floor: the parse floor plus one stream-table lookup, same redirect.
    bar.set_message("lookup floor: attaching");
    let lookup_obj = EbpfLoader::new()
        .override_global(CONFIG_SYMBOL, &relay_config, true)
        .load(BENCH_OBJECT)?;
    let (g1, s1, frame) = (t.g1.clone(), t.s1.clone(), loop_frame.clone());
    let (lookup_obj, lookup_ns) = t.relay.run(move || -> Result<(aya::Ebpf, Spread)> {
        let mut obj = lookup_obj;
        let s1_index = relay_ctl::xdp::ifindex(&s1).context("s1")?;
        let g1_index = relay_ctl::xdp::ifindex(&g1).context("g1")?;
        let mut devmap = DevMap::try_from(obj.map_mut(FLOOR_DEVMAP).context("floor devmap")?)?;
        devmap.set(0, s1_index, None, 0)?;
        let mut streams: aya::maps::HashMap<_, StreamKey, StreamEntry> =
            aya::maps::HashMap::try_from(obj.map_mut(LOOKUP_STREAMS_MAP).context("streams")?)?;
        let e = stream_entry(
            1,
            sa(GEN_ADDR, GEN_PORT),
            sa(RELAY_OUT, 1),
            sa(SINK_ADDR, 5000),
            0,
        );
        for key in [sa(SINK_ADDR, LOOP_PORT), stream_key(0)] {
            streams.insert(StreamKey::from(key), e, 0)?;
        }
        let p: &mut Xdp = obj
            .program_mut(LOOKUP_FLOOR_PROGRAM)
            .context("lookup floor")?
            .try_into()?;
        p.load()?;
        let ns = ns_per_packet(p, &frame, g1_index, XDP_REDIRECT)?;
        p.attach(&g1, XdpMode::Driver)?;
        Ok((obj, ns))
    })??;
    let (_, lookup_zero, lookup_sat) = rate_spreads(cmp_runs, || {
        search(&t, &sink, live("lookup floor", 1, 20), &bar)
    })?;
    bar.set_message("lookup floor: latency");
    if let Some(l) = traffic::latency(&t, &sink, live("lookup floor", 1, 20), loads(&lookup_sat))? {
        latencies.push(("lookup floor (XDP)".into(), l));
    }
    drop(lookup_obj);
    programs.push(Program {
        name: "lookup floor (XDP)".into(),
        ns: Some(lookup_ns),
        saturation: lookup_sat,
        zero_loss: lookup_zero,
    });

    // The relay with room for a million streams.
    bar.set_message("relay: loading");
    let max = INSTALLED[INSTALLED.len() - 1] + 1;
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries(names::STREAMS_MAP, max)
        .map_max_entries(names::STREAM_COUNTERS_MAP, max);
    let relay = Relay::load_with(&mut loader, &relay_config)?;
    let g1 = t.g1.clone();
    let s1 = t.s1.clone();
    let (s1_mac, s0_mac) = (t.s1_mac, t.s0_mac);
    let (mut relay, xdp_link, hop) = t.relay.run(move || -> Result<_> {
        let mut relay = relay;
        let s1_index = relay_ctl::xdp::ifindex(&s1).context("s1")?;
        relay.add_egress(s1_index)?;
        // The next hop as the daemon resolves it (route to the sink's subnet, its neighbour).
        let hop = NextHop {
            ifindex: s1_index,
            mtu: 1500,
            smac: s1_mac,
            dmac: s0_mac,
        };
        relay.set_next_hop(HOP_SLOT, hop)?;
        let (link, _) = relay.attach(&g1)?;
        Ok((relay, link, hop))
    })??;
    relay.insert_stream(
        StreamKey::from(sa(SINK_ADDR, LOOP_PORT)),
        stream_entry(
            max - 1,
            sa(GEN_ADDR, GEN_PORT),
            sa(RELAY_OUT, LOOP_PORT + 1),
            sa(SINK_ADDR, LOOP_PORT),
            FLAG_SOURCE_ANY,
        ),
    )?;
    let mut relay_ns = Vec::new();
    let mut relay_rate = Vec::new();
    let mut xdp_ns1 = Spread::default();
    let mut xdp_spread = Spread::default();
    let mut xdp_sat = Spread::default();
    let mut xdp_fib_ns = Spread::default();
    let mut installed = 0u32;
    for n in INSTALLED {
        bar.set_message(format!("relay: installing {n} streams"));
        while installed < n {
            let i = installed;
            relay.insert_stream(
                StreamKey::from(stream_key(i)),
                stream_entry(
                    i,
                    sa(GEN_ADDR, GEN_PORT),
                    sa(RELAY_OUT, PORT_BASE + (i % PORTS_PER_ADDR) as u16),
                    sa(SINK_ADDR, 5000),
                    0,
                ),
            )?;
            installed += 1;
        }
        let (g1, frame) = (t.g1.clone(), loop_frame.clone());
        let (r, ns) = t.relay.run(move || -> Result<(Relay, Spread)> {
            let mut relay = relay;
            let g1_index = relay_ctl::xdp::ifindex(&g1).context("g1")?;
            let ns = ns_per_packet(relay.program()?, &frame, g1_index, XDP_REDIRECT)?;
            Ok((relay, ns))
        })??;
        relay = r;
        if n == 1 {
            xdp_ns1 = ns;
            // The same stream with its next hop unresolved: the FIB lookup the slot replaces.
            relay.set_next_hop(HOP_SLOT, NextHop::default())?;
            let (g1, frame) = (t.g1.clone(), loop_frame.clone());
            let (r, ns) = t.relay.run(move || -> Result<(Relay, Spread)> {
                let mut relay = relay;
                let g1_index = relay_ctl::xdp::ifindex(&g1).context("g1")?;
                let ns = ns_per_packet(relay.program()?, &frame, g1_index, XDP_REDIRECT)?;
                Ok((relay, ns))
            })??;
            relay = r;
            relay.set_next_hop(HOP_SLOT, hop)?;
            xdp_fib_ns = ns;
        }
        relay_ns.push((n, ns.median));
        if OFFERED.contains(&n) {
            if use_pktgen && n > PORTS_PER_ADDR {
                notes.push(format!(
                    "pktgen sends to one address here, so the {n}-stream rate was not measured."
                ));
                bar.inc(u64::from(runs) * (1 + u64::from(steps)));
            } else {
                let label = format!("relay, {n} streams");
                let r_runs = if n == 1 { cmp_runs } else { runs };
                let (r, spread, sat) =
                    rate_spreads(r_runs, || search(&t, &sink, live(&label, n, 20), &bar))?;
                if n == 1 {
                    xdp_spread = spread;
                    xdp_sat = sat;
                    bar.set_message("relay: latency");
                    if let Some(l) = traffic::latency(&t, &sink, live(&label, 1, 20), loads(&sat))?
                    {
                        latencies.push(("relay (XDP)".into(), l));
                    }
                }
                relay_rate.push((n, r));
            }
        }
    }
    let verifier_insns = relay.program()?.info()?.verified_instruction_count();

    // The same relay on the TC hook (what `--datapath auto` runs on veth): the XDP program
    // leaves g1, a pass-through XDP program keeps the veth delivering what the generator's
    // XDP_TX sends, and TC clsact ingress does the relaying; same maps, same streams.
    bar.set_message("relay TC: attaching");
    relay.program()?.detach(xdp_link)?;
    let mut pass_obj = EbpfLoader::new().load(BENCH_OBJECT)?;
    let (g1, frame) = (t.g1.clone(), loop_frame.clone());
    let (r, pass_obj, tc_ns) = t.relay.run(move || -> Result<_> {
        let mut relay = relay;
        let g1_index = relay_ctl::xdp::ifindex(&g1).context("g1")?;
        let p: &mut Xdp = pass_obj
            .program_mut(PASS_PROGRAM)
            .context("pass")?
            .try_into()?;
        p.load()?;
        p.attach(&g1, XdpMode::Driver)?;
        relay.attach_tc(&g1)?;
        let ns = ns_per_packet_tc(relay.tc_program()?, &frame, g1_index, TC_ACT_REDIRECT)?;
        Ok((relay, pass_obj, ns))
    })??;
    relay = r;
    let (tc_rate, tc_spread, tc_sat) = rate_spreads(cmp_runs, || {
        search(&t, &sink, live("relay TC, 1 stream", 1, 20), &bar)
    })?;
    let tc_insns = relay.tc_program()?.info()?.verified_instruction_count();
    bar.set_message("relay TC: latency");
    if let Some(l) = traffic::latency(&t, &sink, live("relay TC", 1, 20), loads(&tc_sat))? {
        latencies.push(("relay (TC)".into(), l));
    }
    drop(relay);
    drop(pass_obj);
    programs.push(Program {
        name: "relay (XDP)".into(),
        ns: Some(xdp_ns1),
        saturation: xdp_sat,
        zero_loss: xdp_spread,
    });
    programs.push(Program {
        name: "relay (TC)".into(),
        ns: Some(tc_ns),
        saturation: tc_sat,
        zero_loss: tc_spread,
    });

    // The kernel's forwarding path with nftables rewriting the same 5-tuple (no program).
    bar.set_message("kernel path: nftables");
    let stream0 = match stream_key(0) {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => bail!("stream 0 is IPv4"),
    };
    let kernel = {
        let _nft = peers::KernelPath::start(&t, stream0, RELAY_OUT)?;
        let r = rate_spreads(cmp_runs, || {
            search(&t, &sink, live("kernel path, 1 stream", 1, 20), &bar)
        })?;
        bar.set_message("kernel path: latency");
        if let Some(l) = traffic::latency(&t, &sink, live("kernel path", 1, 20), loads(&r.2))? {
            latencies.push(("kernel path (nftables)".into(), l));
        }
        r
    };
    programs.push(Program {
        name: "kernel path (nftables)".into(),
        ns: None,
        saturation: kernel.2,
        zero_loss: kernel.1,
    });

    let calls = if args.quick { 200 } else { 1000 };
    let (mut rtpengine_rate, mut ng_rtpengine, mut srtp_rtpengine) = (None, None, None);
    if args.peers {
        bar.set_message("rtpengine: starting");
        let _rtpe = peers::rtpengine_start(&t)?;
        let (r, zero, sat) = rate_spreads(runs, || {
            peers::rtpengine_rate(&t, &sink, trial, steps, repeats, use_pktgen, &bar)
        })?;
        rtpengine_rate = Some(r);
        bar.set_message("rtpengine: latency");
        let spec = peers::rtpengine_spec(&t, trial, steps, repeats, use_pktgen)?;
        if let Some(l) = traffic::latency(&t, &sink, spec, loads(&sat))? {
            latencies.push(("rtpengine (userspace)".into(), l));
        }
        programs.push(Program {
            name: "rtpengine (userspace)".into(),
            ns: None,
            saturation: sat,
            zero_loss: zero,
        });
        bar.set_message("rtpengine: SRTP -> RTP");
        let pid = _rtpe.pid().context("rtpengine's pid")?;
        srtp_rtpengine = Some(srtp::measure(
            &t,
            &sink,
            peers::RTPENGINE_NG,
            "rtpengine",
            pid,
            &srtp_effort,
            &bar,
        )?);
        if std::env::var_os("RELAY_BENCH_VERBOSE").is_some() {
            eprintln!("{}", _rtpe.log_tail());
        }
        bar.set_message("rtpengine: NG offer+answer");
        ng_rtpengine = Some(ng_rates(&t.relay, peers::RTPENGINE_NG, calls, "rtpengine")?);
    } else {
        notes.push("rtpengine was not measured: run `cargo xtask bench --peers`.".to_owned());
    }
    bar.set_message("our daemon: NG offer+answer");
    let pins = relay_tests::netns::Bpffs::new(&format!("{}-bench", t.relay.name))?;
    let mut daemon = relay_tests::daemon::Daemon::start(
        &t.relay,
        pins.path(),
        &[
            &format!("--listen=pub/{}", topo::SERVICE),
            &format!("--interface={}", t.g1),
            &format!("--interface={}", t.s1),
            "--port-min=20000",
            "--port-max=29999",
        ],
    )?;
    bar.set_message("our daemon: SRTP -> RTP");
    let pid = daemon.pid().context("the daemon's pid")?;
    let srtp_ours = Some(srtp::measure(
        &t,
        &sink,
        peers::OUR_NG,
        "ours",
        pid,
        &srtp_effort,
        &bar,
    )?);
    let ng_ours = Some(ng_rates(&t.relay, peers::OUR_NG, calls, "ours")?);
    daemon.stop()?;
    bar.finish_and_clear();
    drop(sink_obj);

    let results = Results {
        generator: if use_pktgen {
            "the kernel's pktgen (UDP with pktgen's payload, 214-byte frames)".into()
        } else {
            "BPF_PROG_TEST_RUN live frames (RTP, 12 + 160 bytes, 214-byte frames)".into()
        },
        date: cmd_out("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        machine: format!("{}, {} CPUs", cpu_model(), topo::cpus()),
        kernel: cmd_out("uname", &["-r"]),
        verifier_insns,
        floor_ns: floor_ns.median,
        relay_ns,
        programs,
        xdp_fib_ns,
        latencies,
        hooks: report::Hooks {
            floor_ns,
            xdp_ns: xdp_ns1,
            tc_ns,
            floor_rate: floor_spread,
            xdp_rate: xdp_spread,
            tc_rate: tc_spread,
            tc_unthrottled: tc_rate.unthrottled,
            tc_insns,
        },
        floor_rate,
        relay_rate,
        rtpengine_rate,
        srtp_ours,
        srtp_rtpengine,
        ng_ours,
        ng_rtpengine,
        notes,
    };
    let md = results.markdown();
    std::fs::create_dir_all(&args.out)?;
    let md_path = args.out.join("latest.md");
    let png_path = args.out.join("latest.png");
    std::fs::write(&md_path, &md)?;
    results.plot(&png_path)?;
    println!("{md}");
    println!("written: {} and {}", md_path.display(), png_path.display());
    Ok(())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// NG offer+answer pairs/s with one client and with [`report::NG_CLIENTS`].
fn ng_rates(
    ns: &relay_tests::netns::Netns,
    server: &str,
    calls: u32,
    tag: &'static str,
) -> Result<(f64, f64)> {
    Ok((
        peers::ng_pairs_per_second(ns, server, calls, 1, tag)?,
        peers::ng_pairs_per_second(ns, server, calls, report::NG_CLIENTS, tag)?,
    ))
}
