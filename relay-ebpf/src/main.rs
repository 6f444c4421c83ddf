//! The relay's XDP program: parse -> classify -> count. For now every frame is passed to the
//! stack; the fast path (lookup, rewrite, redirect) builds on this parse.
// Host builds (`cargo clippy --workspace`) get std and a stub main; the program is bpf-only.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod net;

use aya_ebpf::{
    bindings::{BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams, xdp_action::XDP_TX},
    helpers::generated::{bpf_fib_lookup, bpf_ktime_get_ns},
    macros::{map, xdp},
    maps::{DevMapHash, HashMap, PerCpuArray},
    programs::XdpContext,
};
use net::{
    ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, EthHdr, IPPROTO_UDP, IPV6_NEXTHDR_FRAGMENT,
    Ipv4Hdr, Ipv6Hdr, UdpHdr, VlanHdr, ptr_at,
};
use relay_common::{
    config::RelayConfig,
    stats::{Reason, StatEntry},
    stream::{
        FAMILY_V4, FAMILY_V6, FLAG_SOURCE_ANY, MAX_STREAMS, Mismatch, StreamCounters, StreamEntry,
        StreamKey,
    },
};

#[map(name = "RELAY_STATS")]
static RELAY_STATS: PerCpuArray<StatEntry> = PerCpuArray::with_max_entries(Reason::COUNT, 0);

#[map(name = "RELAY_STREAMS")]
static RELAY_STREAMS: HashMap<StreamKey, StreamEntry> = HashMap::with_max_entries(MAX_STREAMS, 0);

#[map(name = "RELAY_STREAM_COUNTERS")]
static RELAY_STREAM_COUNTERS: PerCpuArray<StreamCounters> =
    PerCpuArray::with_max_entries(MAX_STREAMS, 0);

/// Egress devices for XDP_REDIRECT, keyed by ifindex; the loader registers every attached device.
#[map(name = "RELAY_DEVMAP")]
static RELAY_DEVMAP: DevMapHash = DevMapHash::with_max_entries(64, 0);

/// Set by the loader (read-only global); read with `read_volatile` so it is not folded.
#[unsafe(no_mangle)]
static RELAY_CONFIG: RelayConfig = RelayConfig::DISABLED;

#[xdp]
pub fn relay(ctx: XdpContext) -> u32 {
    // Counted with the frame's length as it arrived.
    let len = (ctx.data_end() - ctx.data()) as u64;
    let reason = match try_relay(&ctx) {
        Ok(r) | Err(r) => r,
    };
    count(reason, len);
    // Verdict numbers equal the kernel's xdp_action values (XDP_TX = 3, XDP_REDIRECT = 4).
    const _: () = assert!(relay_common::stats::Verdict::Tx as u32 == XDP_TX);
    reason.verdict() as u32
}

#[inline(always)]
fn count(reason: Reason, bytes: u64) {
    if let Some(slot) = RELAY_STATS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU in softirq context.
        unsafe {
            (*slot).packets += 1;
            (*slot).bytes += bytes;
        }
    }
}

#[inline(always)]
fn config() -> RelayConfig {
    // SAFETY: a static, always valid to read.
    unsafe { core::ptr::read_volatile(&RELAY_CONFIG) }
}

/// Where the headers of a frame are, once parsed.
struct Flow {
    l3: usize,
    l4: usize,
    v6: bool,
}

/// `Ok` and `Err` both carry the reason the frame is counted under; `Err` is an early exit.
#[inline(always)]
fn try_relay(ctx: &XdpContext) -> Result<Reason, Reason> {
    let flow = parse(ctx)?;
    let udp: *mut UdpHdr = ptr_at(ctx, flow.l4).map_err(|()| Reason::PassTruncated)?;
    // SAFETY: bounds checked by ptr_at.
    let dest = u16::from_be(unsafe { (*udp).dest });
    if !config().is_relay_port(dest) {
        return Ok(Reason::PassNotRelayPort);
    }
    let payload = flow.l4 + core::mem::size_of::<UdpHdr>();
    let first: *const u8 = ptr_at(ctx, payload).map_err(|()| Reason::PassEmpty)?;
    // SAFETY: bounds checked by ptr_at.
    match unsafe { *first } {
        0..=3 => {
            // STUN needs its magic cookie; anything else in 0-3 is not ours either way.
            let cookie: *const [u8; 4] =
                ptr_at(ctx, payload + 4).map_err(|()| Reason::PassOtherPayload)?;
            // SAFETY: bounds checked by ptr_at.
            if unsafe { *cookie } == [0x21, 0x12, 0xa4, 0x42] {
                Ok(Reason::PassStun)
            } else {
                Ok(Reason::PassOtherPayload)
            }
        }
        20..=63 => Ok(Reason::PassDtls),
        128..=191 => forward(ctx, &flow, udp),
        _ => Ok(Reason::PassOtherPayload),
    }
}

#[inline(always)]
fn parse(ctx: &XdpContext) -> Result<Flow, Reason> {
    let eth: *const EthHdr = ptr_at(ctx, 0).map_err(|()| Reason::PassTruncated)?;
    let mut off = core::mem::size_of::<EthHdr>();
    // SAFETY: bounds checked by ptr_at.
    let mut ethertype = u16::from_be(unsafe { (*eth).ethertype });

    // Up to two VLAN tags (802.1ad outer + 802.1Q inner).
    for _ in 0..2 {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let vlan: *const VlanHdr = ptr_at(ctx, off).map_err(|()| Reason::PassTruncated)?;
        // SAFETY: bounds checked by ptr_at.
        ethertype = u16::from_be(unsafe { (*vlan).ethertype });
        off += core::mem::size_of::<VlanHdr>();
    }

    let (l4, ip_payload_len, v6) = match ethertype {
        ETH_P_IP => {
            let (l4, len) = parse_ipv4(ctx, off)?;
            (l4, len, false)
        }
        ETH_P_IPV6 => {
            let (l4, len) = parse_ipv6(ctx, off)?;
            (l4, len, true)
        }
        _ => return Err(Reason::PassNotIp),
    };

    let udp: *const UdpHdr = ptr_at(ctx, l4).map_err(|()| Reason::PassTruncated)?;
    // SAFETY: bounds checked by ptr_at.
    let udp_len = u16::from_be(unsafe { (*udp).len }) as usize;
    let frame_left = ctx.data_end() - ctx.data() - l4;
    if udp_len < core::mem::size_of::<UdpHdr>() || udp_len > ip_payload_len || udp_len > frame_left
    {
        return Err(Reason::PassMalformed);
    }
    Ok(Flow { l3: off, l4, v6 })
}

/// RTP/RTCP on a relay port: look the stream up, check the source, rewrite, send.
#[inline(always)]
fn forward(ctx: &XdpContext, flow: &Flow, udp: *mut UdpHdr) -> Result<Reason, Reason> {
    let mut key = StreamKey {
        family: if flow.v6 { FAMILY_V6 } else { FAMILY_V4 },
        _pad: 0,
        // SAFETY: udp was bounds checked by the caller.
        port: unsafe { (*udp).dest },
        addr: [0; 16],
    };
    // SAFETY: udp was bounds checked by the caller.
    let sport = unsafe { (*udp).source };
    let mut src_addr = [0u8; 16];
    if flow.v6 {
        let ip: *const Ipv6Hdr = ptr_at(ctx, flow.l3).map_err(|()| Reason::PassTruncated)?;
        // SAFETY: bounds checked by ptr_at.
        unsafe {
            key.addr = (*ip).daddr;
            src_addr = (*ip).saddr;
        }
    } else {
        let ip: *const Ipv4Hdr = ptr_at(ctx, flow.l3).map_err(|()| Reason::PassTruncated)?;
        // SAFETY: bounds checked by ptr_at.
        unsafe {
            key.addr[..4].copy_from_slice(&(*ip).daddr);
            src_addr[..4].copy_from_slice(&(*ip).saddr);
        }
    }
    // SAFETY: a hash map value stays valid (RCU) while this program runs; updates swap in a
    // new element, so we read either the old or the new entry, never a mix.
    let Some(entry) = (unsafe { RELAY_STREAMS.get(key) }) else {
        return Ok(Reason::PassUnknownStream);
    };

    let from_expected = entry.expected.family == key.family
        && entry.expected.port == sport
        && entry.expected.addr == src_addr;
    if entry.flags & FLAG_SOURCE_ANY == 0 && !from_expected {
        match entry.mismatch {
            m if m == Mismatch::Forward as u8 => {}
            m if m == Mismatch::Userspace as u8 => return Ok(Reason::PassSourceMismatch),
            _ => return Ok(Reason::DropSourceMismatch),
        }
    }
    if entry.src.family != key.family || entry.dst.family != key.family {
        return Ok(Reason::PassFamilyChange);
    }

    let frame_len = (ctx.data_end() - ctx.data()) as u64;
    // Decide the next hop before touching the frame: a frame passed up must be unmodified.
    let hop = next_hop(ctx, flow, entry)?;
    if flow.v6 {
        rewrite_v6(ctx, flow, udp, entry)?;
    } else {
        rewrite_v4(ctx, flow, udp, entry)?;
    }
    let reason = send(ctx, &hop)?;
    if let Some(c) = RELAY_STREAM_COUNTERS.get_ptr_mut(entry.counter_slot) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += frame_len;
            (*c).last_seen_ns = bpf_ktime_get_ns();
        }
    }
    Ok(reason)
}

/// One's-complement sum of 16-bit words, folded; byte order independent (RFC 1071).
#[inline(always)]
fn fold(mut s: u64) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

#[inline(always)]
fn words<const N: usize>(b: &[u8; N], invert: bool) -> u64 {
    let mut s = 0u64;
    let mut i = 0;
    while i + 1 < N {
        let w = u16::from_ne_bytes([b[i], b[i + 1]]);
        s += u64::from(if invert { !w } else { w });
        i += 2;
    }
    s
}

/// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), with `delta` = sum of ~m + m'.
#[inline(always)]
fn update(check: u16, delta: u64) -> u16 {
    !fold(u64::from(!check) + delta)
}

#[inline(always)]
fn rewrite_v4(
    ctx: &XdpContext,
    flow: &Flow,
    udp: *mut UdpHdr,
    e: &StreamEntry,
) -> Result<(), Reason> {
    let ip: *mut Ipv4Hdr = ptr_at(ctx, flow.l3).map_err(|()| Reason::PassTruncated)?;
    let mut new_s = [0u8; 4];
    let mut new_d = [0u8; 4];
    new_s.copy_from_slice(&e.src.addr[..4]);
    new_d.copy_from_slice(&e.dst.addr[..4]);
    // SAFETY: ip and udp are bounds checked.
    unsafe {
        let (old_s, old_d) = ((*ip).saddr, (*ip).daddr);
        let addr_delta =
            words(&old_s, true) + words(&old_d, true) + words(&new_s, false) + words(&new_d, false);
        let old_ttl = [(*ip).ttl, (*ip).protocol];
        let new_ttl = [64, (*ip).protocol];
        let ip_delta = addr_delta + words(&old_ttl, true) + words(&new_ttl, false);
        (*ip).check = update((*ip).check, ip_delta);
        (*ip).saddr = new_s;
        (*ip).daddr = new_d;
        (*ip).ttl = 64;
        // A zero UDP checksum on IPv4 means "none" and stays zero.
        if (*udp).check != 0 {
            let ports_delta = u64::from(!(*udp).source)
                + u64::from(!(*udp).dest)
                + u64::from(e.src.port)
                + u64::from(e.dst.port);
            let c = update((*udp).check, addr_delta + ports_delta);
            (*udp).check = if c == 0 { 0xffff } else { c };
        }
        (*udp).source = e.src.port;
        (*udp).dest = e.dst.port;
    }
    Ok(())
}

#[inline(always)]
fn rewrite_v6(
    ctx: &XdpContext,
    flow: &Flow,
    udp: *mut UdpHdr,
    e: &StreamEntry,
) -> Result<(), Reason> {
    let ip: *mut Ipv6Hdr = ptr_at(ctx, flow.l3).map_err(|()| Reason::PassTruncated)?;
    // SAFETY: ip and udp are bounds checked.
    unsafe {
        let delta = words(&(*ip).saddr, true)
            + words(&(*ip).daddr, true)
            + words(&e.src.addr, false)
            + words(&e.dst.addr, false)
            + u64::from(!(*udp).source)
            + u64::from(!(*udp).dest)
            + u64::from(e.src.port)
            + u64::from(e.dst.port);
        // IPv6 UDP checksums are mandatory; a zero one is invalid input we leave to the stack.
        if (*udp).check == 0 {
            return Err(Reason::PassMalformed);
        }
        let c = update((*udp).check, delta);
        (*udp).check = if c == 0 { 0xffff } else { c };
        (*ip).saddr = e.src.addr;
        (*ip).daddr = e.dst.addr;
        (*ip).hop_limit = 64;
        (*udp).source = e.src.port;
        (*udp).dest = e.dst.port;
    }
    Ok(())
}

struct Hop {
    ifindex: u32,
    tx: bool,
    smac: [u8; 6],
    dmac: [u8; 6],
}

/// Next hop from the kernel FIB, and whether it leaves by the ingress device (XDP_TX) or by a
/// device registered in the devmap.
#[inline(always)]
fn next_hop(ctx: &XdpContext, flow: &Flow, e: &StreamEntry) -> Result<Hop, Reason> {
    // SAFETY: all-zero is a valid bpf_fib_lookup.
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    let ingress = ctx.ingress_ifindex() as u32;
    p.ifindex = ingress;
    p.l4_protocol = 17;
    p.sport = e.src.port;
    p.dport = e.dst.port;
    if flow.v6 {
        p.family = 10; // AF_INET6
        // SAFETY: both unions are 16 bytes; addresses are copied byte for byte.
        unsafe {
            core::ptr::copy_nonoverlapping(
                e.src.addr.as_ptr(),
                (&raw mut p.__bindgen_anon_3).cast::<u8>(),
                16,
            );
            core::ptr::copy_nonoverlapping(
                e.dst.addr.as_ptr(),
                (&raw mut p.__bindgen_anon_4).cast::<u8>(),
                16,
            );
        }
    } else {
        p.family = 2; // AF_INET
        p.__bindgen_anon_3.ipv4_src =
            u32::from_ne_bytes([e.src.addr[0], e.src.addr[1], e.src.addr[2], e.src.addr[3]]);
        p.__bindgen_anon_4.ipv4_dst =
            u32::from_ne_bytes([e.dst.addr[0], e.dst.addr[1], e.dst.addr[2], e.dst.addr[3]]);
    }
    // SAFETY: ctx is the program's context; p lives on the stack for the call.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx.cast(),
            &mut p,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 {
        return Err(Reason::PassFibMiss);
    }
    let tx = p.ifindex == ingress;
    // An egress device the daemon did not register cannot be redirected to.
    if !tx && RELAY_DEVMAP.get_ifindex(p.ifindex).is_none() {
        return Err(Reason::PassFibMiss);
    }
    Ok(Hop {
        ifindex: p.ifindex,
        tx,
        smac: p.smac,
        dmac: p.dmac,
    })
}

#[inline(always)]
fn send(ctx: &XdpContext, hop: &Hop) -> Result<Reason, Reason> {
    let eth: *mut EthHdr = ptr_at(ctx, 0).map_err(|()| Reason::PassTruncated)?;
    // SAFETY: bounds checked by ptr_at.
    unsafe {
        (*eth).dst = hop.dmac;
        (*eth).src = hop.smac;
    }
    if hop.tx {
        return Ok(Reason::TxForward);
    }
    match RELAY_DEVMAP.redirect(hop.ifindex, 0) {
        Ok(_) => Ok(Reason::RedirectForward),
        // Checked in next_hop; only a concurrent removal gets here. Drop the rewritten frame.
        Err(_) => Ok(Reason::DropRedirectFailed),
    }
}

/// Returns the UDP header offset and the IP payload length the header claims.
#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, off: usize) -> Result<(usize, usize), Reason> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, off).map_err(|()| Reason::PassTruncated)?;
    // SAFETY: bounds checked by ptr_at.
    let (vihl, tot_len, frag_off, protocol) = unsafe {
        (
            (*ip).version_ihl,
            u16::from_be((*ip).tot_len) as usize,
            u16::from_be((*ip).frag_off),
            (*ip).protocol,
        )
    };
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || ihl < 20 || tot_len < ihl {
        return Err(Reason::PassMalformed);
    }
    if protocol != IPPROTO_UDP {
        return Err(Reason::PassNotUdp);
    }
    // MF set or a non-zero offset: not a whole datagram.
    if frag_off & 0x3fff != 0 {
        return Err(Reason::PassFragment);
    }
    Ok((off + ihl, tot_len - ihl))
}

#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, off: usize) -> Result<(usize, usize), Reason> {
    let ip: *const Ipv6Hdr = ptr_at(ctx, off).map_err(|()| Reason::PassTruncated)?;
    // SAFETY: bounds checked by ptr_at.
    let (v, payload_len, nexthdr) = unsafe {
        (
            (*ip).vtc_flow[0] >> 4,
            u16::from_be((*ip).payload_len) as usize,
            (*ip).nexthdr,
        )
    };
    if v != 6 {
        return Err(Reason::PassMalformed);
    }
    if nexthdr == IPV6_NEXTHDR_FRAGMENT {
        return Err(Reason::PassFragment);
    }
    // Extension headers other than fragments are rare on media; the stack handles them.
    if nexthdr != IPPROTO_UDP {
        return Err(Reason::PassNotUdp);
    }
    Ok((off + core::mem::size_of::<Ipv6Hdr>(), payload_len))
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("relay-ebpf is an XDP program: build it for bpfel-unknown-none (relay-ctl does)");
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
