//! The benchmark's programs, a separate object from the relay so production never loads them:
//! `gen` (an in-kernel RTP generator driven by BPF_PROG_TEST_RUN live frames, the mechanism
//! xdp-trafficgen uses), `floor` (the relay's parse and port check, then a redirect: no lookup,
//! no rewrite), `lookup_floor` (the same plus one stream-table lookup: what the relay adds on
//! top of it is its own cost), `sink` (counts and drops what arrives) and `pass` (lets a veth deliver to
//! the TC program behind it).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

// Only part of the checksum helpers is needed here.
#[allow(dead_code)]
mod csum;
// The floor runs on XDP only; the TC half of the hooks is the relay's.
#[allow(dead_code)]
mod hook;
mod net;
// Shared with the relay, which reads every field of the parsed headers; the floor needs fewer.
#[allow(dead_code)]
mod parse;

use aya_ebpf::{
    bindings::xdp_action::{XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX},
    helpers::generated::bpf_ktime_get_ns,
    macros::{map, xdp},
    maps::{Array, DevMap, HashMap, PerCpuArray},
    programs::XdpContext,
};
use csum::{fold, words};
use net::{Ipv4Hdr, Ipv6Hdr, UdpHdr, ptr_at};
use relay_common::{
    bench::{
        CTRL_ADDR, CTRL_INTERVAL, CTRL_PORT, GEN_HEADER, GEN_MAX_SPIN, GenConfig, LAT_BUCKETS,
        OFF_IP_CHECK, OFF_IP_DST, OFF_RTP_SEQ, OFF_RTP_SSRC, OFF_RTP_TS, OFF_STAMP, OFF_UDP_CHECK,
        OFF_UDP_DPORT, lat_bucket,
    },
    config::RelayConfig,
    stats::StatEntry,
    stream::{FAMILY_V4, FAMILY_V6, MAX_STREAMS, StreamEntry, StreamKey},
};

#[unsafe(no_mangle)]
static RELAY_CONFIG: RelayConfig = RelayConfig::DISABLED;

#[unsafe(no_mangle)]
static GEN_CONFIG: GenConfig = GenConfig {
    template: [0; GEN_HEADER],
    port_base: 0,
    streams: 0,
    ports_per_addr: 1,
    addr_base: [0; 4],
    ip_sum: 0,
    udp_sum: 0,
};

#[map(name = "GEN_SEQ")]
static GEN_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(4, 0);

#[map(name = "GEN_CTRL")]
static GEN_CTRL: Array<u64> = Array::with_max_entries(3, 0);

#[map(name = "SINK_STATS")]
static SINK_STATS: PerCpuArray<StatEntry> = PerCpuArray::with_max_entries(1, 0);

/// The lookup floor's stream table: the relay's key and value types, so a lookup costs the same.
#[map(name = "LOOKUP_STREAMS")]
static LOOKUP_STREAMS: HashMap<StreamKey, StreamEntry> = HashMap::with_max_entries(MAX_STREAMS, 0);

#[map(name = "SINK_LAT")]
static SINK_LAT: PerCpuArray<u64> = PerCpuArray::with_max_entries(LAT_BUCKETS, 0);

#[map(name = "FLOOR_DEVMAP")]
static FLOOR_DEVMAP: DevMap = DevMap::with_max_entries(1, 0);

/// Writes the next packet's headers over the frame and transmits it. Everything that varies
/// is written absolutely, because live-frame pages come back with whatever the relay wrote.
#[xdp]
pub fn r#gen(ctx: XdpContext) -> u32 {
    // SAFETY: a static, always valid to read.
    let c = unsafe { core::ptr::read_volatile(&GEN_CONFIG) };
    if c.streams == 0 || c.ports_per_addr == 0 {
        return XDP_ABORTED;
    }
    let (Some(seq), Some(next), Some(first), Some(last)) = (
        GEN_SEQ.get_ptr_mut(0),
        GEN_SEQ.get_ptr_mut(1),
        GEN_SEQ.get_ptr_mut(2),
        GEN_SEQ.get_ptr_mut(3),
    ) else {
        return XDP_ABORTED;
    };
    let interval = GEN_CTRL.get(CTRL_INTERVAL).copied().unwrap_or(0);
    if interval > 0 {
        // Pacing: wait (bounded) for this packet's slot, like pktgen's delay.
        // SAFETY: helper without preconditions; per-CPU slot, one writer.
        unsafe {
            let mut now = bpf_ktime_get_ns();
            let mut due = *next;
            // A slot far in the past (a new trial, or the generator was preempted) restarts the
            // clock rather than catching up with a burst a real sender would not make.
            if due == 0 || due + 32 * interval < now {
                due = now;
            }
            let mut spins = 0;
            while now < due && spins < GEN_MAX_SPIN {
                now = bpf_ktime_get_ns();
                spins += 1;
            }
            *next = due + interval;
        }
    }
    // SAFETY: helper without preconditions; per-CPU slots, one writer.
    unsafe {
        let now = bpf_ktime_get_ns();
        if *first == 0 {
            *first = now;
        }
        *last = now;
    }
    // SAFETY: per-CPU slot; the test run executes on one CPU at a time.
    let n = unsafe {
        let n = *seq;
        *seq = n + 1;
        n
    };
    let Ok(frame) = ptr_at::<[u8; GEN_HEADER]>(&ctx, 0) else {
        return XDP_ABORTED;
    };
    let streams = u64::from(c.streams);
    let ppa = u64::from(c.ports_per_addr);
    let i = n % streams;
    let round = n / streams;
    let (addr_base, port_base) = match (GEN_CTRL.get(CTRL_ADDR), GEN_CTRL.get(CTRL_PORT)) {
        (Some(&a), Some(&p)) if a != 0 => ((a as u32).to_ne_bytes(), p as u16),
        _ => (c.addr_base, c.port_base),
    };
    let addr = (u32::from_be_bytes(addr_base).wrapping_add((i / ppa) as u32)).to_be_bytes();
    let port = (port_base.wrapping_add((i % ppa) as u16)).to_be_bytes();
    let rtp_seq = (round as u16).to_be_bytes();
    let ts = (round as u32).wrapping_mul(160).to_be_bytes();
    let ssrc = (i as u32).to_be_bytes();
    let ip_check = !fold(u64::from(c.ip_sum) + words(&addr, false));
    let udp = !fold(
        u64::from(c.udp_sum)
            + words(&addr, false)
            + words(&port, false)
            + words(&rtp_seq, false)
            + words(&ts, false)
            + words(&ssrc, false),
    );
    // The send time, last, so it includes everything above (pacing too).
    let Ok(stamp_at) = ptr_at::<[u8; 8]>(&ctx, OFF_STAMP) else {
        return XDP_ABORTED;
    };
    // SAFETY: helper without preconditions.
    let stamp = unsafe { bpf_ktime_get_ns() }.to_ne_bytes();
    let udp = !fold(u64::from(!udp) + words(&stamp, false));
    let udp_check = if udp == 0 { 0xffff } else { udp };
    // SAFETY: bounds checked by ptr_at.
    unsafe { *stamp_at = stamp };
    // SAFETY: GEN_HEADER bytes bounds checked by ptr_at; all offsets are inside it.
    unsafe {
        let f = &mut *frame;
        *f = c.template;
        f[OFF_IP_CHECK..OFF_IP_CHECK + 2].copy_from_slice(&ip_check.to_ne_bytes());
        f[OFF_IP_DST..OFF_IP_DST + 4].copy_from_slice(&addr);
        f[OFF_UDP_DPORT..OFF_UDP_DPORT + 2].copy_from_slice(&port);
        f[OFF_UDP_CHECK..OFF_UDP_CHECK + 2].copy_from_slice(&udp_check.to_ne_bytes());
        f[OFF_RTP_SEQ..OFF_RTP_SEQ + 2].copy_from_slice(&rtp_seq);
        f[OFF_RTP_TS..OFF_RTP_TS + 4].copy_from_slice(&ts);
        f[OFF_RTP_SSRC..OFF_RTP_SSRC + 4].copy_from_slice(&ssrc);
    }
    XDP_TX
}

/// The relay's own parse and port check, then a redirect to one device.
#[xdp]
pub fn floor(ctx: XdpContext) -> u32 {
    let Ok(offsets) = parse::parse(&ctx) else {
        return XDP_PASS;
    };
    let Ok(udp) = ptr_at::<UdpHdr>(&ctx, offsets.l4) else {
        return XDP_PASS;
    };
    // SAFETY: a static, always valid to read; udp bounds checked by ptr_at.
    let (config, dest) = unsafe {
        (
            core::ptr::read_volatile(&RELAY_CONFIG),
            u16::from_be((*udp).dest),
        )
    };
    if !config.is_relay_port(dest) {
        return XDP_PASS;
    }
    FLOOR_DEVMAP.redirect(0, 0).unwrap_or(XDP_PASS)
}

/// The floor plus the relay's stream-table lookup (by local address and port), then the same
/// redirect: no source check, rewrite or next hop.
#[xdp]
pub fn lookup_floor(ctx: XdpContext) -> u32 {
    let Ok(offsets) = parse::parse(&ctx) else {
        return XDP_PASS;
    };
    let Ok(udp) = ptr_at::<UdpHdr>(&ctx, offsets.l4) else {
        return XDP_PASS;
    };
    // SAFETY: a static, always valid to read; udp bounds checked by ptr_at.
    let (config, port) = unsafe { (core::ptr::read_volatile(&RELAY_CONFIG), (*udp).dest) };
    if !config.is_relay_port(u16::from_be(port)) {
        return XDP_PASS;
    }
    let mut key = StreamKey {
        family: FAMILY_V4,
        _pad: 0,
        port,
        addr: [0; 16],
    };
    if offsets.v6 {
        let Ok(ip) = ptr_at::<Ipv6Hdr>(&ctx, offsets.l3) else {
            return XDP_PASS;
        };
        key.family = FAMILY_V6;
        // SAFETY: bounds checked by ptr_at.
        key.addr = unsafe { (*ip).daddr };
    } else {
        let Ok(ip) = ptr_at::<Ipv4Hdr>(&ctx, offsets.l3) else {
            return XDP_PASS;
        };
        // SAFETY: bounds checked by ptr_at.
        key.addr[..4].copy_from_slice(unsafe { &(*ip).daddr });
    }
    // SAFETY: a hash map value read under RCU, not kept past this program.
    if unsafe { LOOKUP_STREAMS.get(key) }.is_none() {
        return XDP_PASS;
    }
    FLOOR_DEVMAP.redirect(0, 0).unwrap_or(XDP_PASS)
}

/// Passes everything: a veth runs NAPI (and so delivers frames a peer's XDP sent) only when
/// it has an XDP program; this one lets the TC hook behind it be measured.
#[xdp]
pub fn pass(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

/// Counts and drops UDP; passes everything else (neighbour discovery keeps working).
#[xdp]
pub fn sink(ctx: XdpContext) -> u32 {
    let Ok(offsets) = parse::parse(&ctx) else {
        return XDP_PASS;
    };
    let len = (ctx.data_end() - ctx.data()) as u64;
    // One-way latency from the generator's stamp (same clock, same host).
    if let Ok(stamp) = ptr_at::<[u8; 8]>(&ctx, offsets.l4 + 8 + 12) {
        // SAFETY: bounds checked by ptr_at; helper without preconditions.
        let (sent, now) = unsafe { (u64::from_ne_bytes(*stamp), bpf_ktime_get_ns()) };
        if sent != 0
            && sent <= now
            && now - sent < 1_000_000_000
            && let Some(b) = SINK_LAT.get_ptr_mut(lat_bucket(now - sent))
        {
            // SAFETY: per-CPU slot, no concurrent writer on this CPU.
            unsafe { *b += 1 };
        }
    }
    if let Some(s) = SINK_STATS.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe {
            (*s).packets += 1;
            (*s).bytes += len;
        }
    }
    XDP_DROP
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("the bench object is eBPF: build it for bpfel-unknown-none (bench/build.rs does)");
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "license")]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
