//! The relay's XDP program: parse -> classify -> look up the stream -> check the source ->
//! rewrite (translating IPv4<->IPv6 between legs of different family) -> TX or redirect.
//! Every frame is counted in exactly one reason slot.
// Host builds (`cargo clippy --workspace`) get std and a stub main; the program is bpf-only.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod csum;
mod net;
mod parse;
mod tos;

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_OUTPUT, bpf_fib_lookup as FibParams,
        xdp_action::XDP_TX,
    },
    helpers::generated::{
        bpf_csum_diff, bpf_fib_lookup, bpf_ktime_get_coarse_ns, bpf_xdp_adjust_head,
        bpf_xdp_load_bytes,
    },
    macros::{map, xdp},
    maps::{DevMapHash, HashMap, PerCpuArray},
    programs::XdpContext,
};
use csum::{fold, ports_delta, update, words};
use net::{ETH_P_IP, ETH_P_IPV6, EthHdr, IPPROTO_UDP, Ipv4Hdr, Ipv6Hdr, UdpHdr, ptr_at};
use parse::{Flow, parse};
use relay_common::{
    config::RelayConfig,
    stats::{Reason, StatEntry},
    stream::{
        Endpoint, FAMILY_V4, FAMILY_V6, FLAG_RTCP_DEMUX, FLAG_SET_TOS, FLAG_SOURCE_ANY,
        MAX_STREAMS, Mismatch, StreamCounters, StreamEntry, StreamKey,
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
    // The first payload byte is read with the UDP header: a one-byte bounds check at a variable
    // offset compiles to a compare the verifier cannot use.
    let head: *const [u8; 9] = ptr_at(ctx, flow.l4).map_err(|()| Reason::PassEmpty)?;
    // SAFETY: bounds checked by ptr_at.
    match unsafe { (*head)[8] } {
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
    // rtcp-mux on this leg only: RTCP (RFC 5761 s.4) goes to the other leg's RTCP endpoints.
    let mut rw = Rw {
        src: &entry.src,
        dst: &entry.dst,
        egress: entry.egress_ifindex,
    };
    if entry.flags & FLAG_RTCP_DEMUX != 0 {
        let rtp: *const [u8; 10] = ptr_at(ctx, flow.l4).map_err(|()| Reason::PassMalformed)?;
        // SAFETY: bounds checked by ptr_at.
        if (192..=223).contains(&unsafe { (*rtp)[9] }) {
            rw.src = &entry.rtcp_src;
            rw.dst = &entry.rtcp_dst;
        }
    }
    let out_v6 = match (rw.src.family, rw.dst.family) {
        (FAMILY_V4, FAMILY_V4) => false,
        (FAMILY_V6, FAMILY_V6) => true,
        _ => return Ok(Reason::PassFamilyChange),
    };

    let frame_len = (ctx.data_end() - ctx.data()) as u64;
    // Decide the next hop before touching the frame: a frame passed up must be unmodified.
    let hop = next_hop(ctx, out_v6, &rw)?;
    match (flow.v6, out_v6) {
        (false, false) => rewrite_v4(ctx, flow, udp, &rw)?,
        (true, true) => rewrite_v6(ctx, flow, udp, &rw)?,
        (false, true) => v4_to_v6(ctx, flow, &rw)?,
        (true, false) => v6_to_v4(ctx, flow, &rw)?,
    }
    if entry.flags & FLAG_SET_TOS != 0 {
        tos::set(ctx, flow.l3, out_v6, entry.tos).map_err(|()| Reason::PassTruncated)?;
    }
    let reason = send(ctx, &hop)?;
    if let Some(c) = RELAY_STREAM_COUNTERS.get_ptr_mut(entry.counter_slot) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += frame_len;
            (*c).last_seen_ns = bpf_ktime_get_coarse_ns();
        }
    }
    Ok(reason)
}

/// The rewrite a packet gets: new source and destination, and the egress device (0: FIB).
struct Rw<'a> {
    src: &'a Endpoint,
    dst: &'a Endpoint,
    egress: u32,
}

#[inline(always)]
fn rewrite_v4(ctx: &XdpContext, flow: &Flow, udp: *mut UdpHdr, e: &Rw<'_>) -> Result<(), Reason> {
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
            let ports = ports_delta(((*udp).source, (*udp).dest), (e.src.port, e.dst.port));
            let c = update((*udp).check, addr_delta + ports);
            (*udp).check = if c == 0 { 0xffff } else { c };
        }
        (*udp).source = e.src.port;
        (*udp).dest = e.dst.port;
    }
    Ok(())
}

#[inline(always)]
fn rewrite_v6(ctx: &XdpContext, flow: &Flow, udp: *mut UdpHdr, e: &Rw<'_>) -> Result<(), Reason> {
    let ip: *mut Ipv6Hdr = ptr_at(ctx, flow.l3).map_err(|()| Reason::PassTruncated)?;
    // SAFETY: ip and udp are bounds checked.
    unsafe {
        let delta = words(&(*ip).saddr, true)
            + words(&(*ip).daddr, true)
            + words(&e.src.addr, false)
            + words(&e.dst.addr, false)
            + ports_delta(((*udp).source, (*udp).dest), (e.src.port, e.dst.port));
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

/// Largest Ethernet + two VLAN tags header: saved across a header-size change.
const L2_MAX: usize = 22;
/// Longest UDP datagram whose checksum is computed from scratch (an IPv4 datagram without one
/// going to an IPv6 leg); larger ones go to the daemon. Media stays well under it.
const MAX_SUM_BYTES: usize = 1480;

/// Saves the link header (MACs, VLAN tags) before the IP header changes size.
#[inline(always)]
fn save_l2(ctx: &XdpContext) -> Result<[u8; L2_MAX], Reason> {
    let l2: *const [u8; L2_MAX] = ptr_at(ctx, 0).map_err(|()| Reason::PassTruncated)?;
    // SAFETY: bounds checked by ptr_at.
    Ok(unsafe { *l2 })
}

/// Moves the frame start by `delta` bytes (negative grows it) and writes the saved link header
/// back in front, with `ethertype` as the innermost type. Only the first step can fail while
/// the frame is intact, so that failure passes it to the daemon; later ones drop it.
#[inline(always)]
fn move_head(
    ctx: &XdpContext,
    delta: i32,
    l2: &[u8; L2_MAX],
    l3: usize,
    ethertype: u16,
) -> Result<(), Reason> {
    // SAFETY: ctx is the program's context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) } != 0 {
        return Err(Reason::PassFamilyChange);
    }
    // The IP header is written right after, so the bytes past l3 copied here are overwritten.
    let out: *mut [u8; L2_MAX] = ptr_at(ctx, 0).map_err(|()| Reason::DropTranslateFailed)?;
    let tag: *mut u16 = ptr_at(ctx, l3 - 2).map_err(|()| Reason::DropTranslateFailed)?;
    // SAFETY: bounds checked by ptr_at.
    unsafe {
        *out = *l2;
        *tag = ethertype.to_be();
    }
    Ok(())
}

/// Adds the next `N` bytes (a multiple of 4, at most 512) to `s` with bpf_csum_diff if `len`
/// has that many left. Fixed-size steps keep the verifier's path count small, unlike a loop.
#[inline(always)]
fn sum_step<const N: usize>(
    ctx: &XdpContext,
    off: usize,
    len: usize,
    done: &mut usize,
    s: &mut u64,
) -> Result<(), Reason> {
    if len - *done < N {
        return Ok(());
    }
    let p: *mut [u8; N] = ptr_at(ctx, off + *done).map_err(|()| Reason::PassTruncated)?;
    // SAFETY: N bytes of the frame, bounds checked by ptr_at; nothing is written.
    let r = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, p.cast(), N as u32, 0) };
    if r < 0 {
        return Err(Reason::PassTruncated);
    }
    *s += r as u64 & 0xffff_ffff;
    *done += N;
    Ok(())
}

/// One's-complement sum of `len` bytes of the frame from `off`, for a checksum from scratch.
#[inline(always)]
fn sum_bytes(ctx: &XdpContext, off: usize, len: usize) -> Result<u64, Reason> {
    if len > MAX_SUM_BYTES {
        return Err(Reason::PassFamilyChange);
    }
    let (mut s, mut done) = (0u64, 0usize);
    sum_step::<512>(ctx, off, len, &mut done, &mut s)?;
    sum_step::<512>(ctx, off, len, &mut done, &mut s)?;
    sum_step::<256>(ctx, off, len, &mut done, &mut s)?;
    sum_step::<128>(ctx, off, len, &mut done, &mut s)?;
    sum_step::<64>(ctx, off, len, &mut done, &mut s)?;
    sum_step::<32>(ctx, off, len, &mut done, &mut s)?;
    sum_step::<16>(ctx, off, len, &mut done, &mut s)?;
    sum_step::<8>(ctx, off, len, &mut done, &mut s)?;
    sum_step::<4>(ctx, off, len, &mut done, &mut s)?;
    if len - done >= 2 {
        let w: *const [u8; 2] = ptr_at(ctx, off + done).map_err(|()| Reason::PassTruncated)?;
        // SAFETY: bounds checked by ptr_at.
        s += words(unsafe { &*w }, false);
        done += 2;
    }
    if done < len {
        // An odd last byte is summed as if padded with a zero byte (RFC 768). The helper checks
        // the bounds at run time, which a one-byte access at a variable offset needs.
        let mut b = [0u8; 1];
        // SAFETY: ctx is the program's context; b is a 1-byte stack buffer.
        let rc =
            unsafe { bpf_xdp_load_bytes(ctx.ctx, (off + done) as u32, b.as_mut_ptr().cast(), 1) };
        if rc != 0 {
            return Err(Reason::PassTruncated);
        }
        s += u64::from(u16::from_ne_bytes([b[0], 0]));
    }
    Ok(s)
}

/// IPv4 in, IPv6 out: the UDP datagram stays where it is; the link header moves to make room
/// for the 40-byte IPv6 header in place of the IPv4 one (options included).
#[inline(always)]
fn v4_to_v6(ctx: &XdpContext, flow: &Flow, e: &Rw<'_>) -> Result<(), Reason> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, flow.l3).map_err(|()| Reason::PassTruncated)?;
    let udp: *const UdpHdr = ptr_at(ctx, flow.l4).map_err(|()| Reason::PassTruncated)?;
    // SAFETY: bounds checked by ptr_at.
    let (tos, old_s, old_d, sport, dport, len, check) = unsafe {
        (
            (*ip).tos,
            (*ip).saddr,
            (*ip).daddr,
            (*udp).source,
            (*udp).dest,
            (*udp).len,
            (*udp).check,
        )
    };
    let ports = ports_delta((sport, dport), (e.src.port, e.dst.port));
    let new_addrs = words(&e.src.addr, false) + words(&e.dst.addr, false);
    // Both pseudo-headers sum the same length and protocol, so only addresses and ports change.
    // IPv6 forbids a zero UDP checksum: without one, compute it from scratch.
    let udp_check = if check != 0 {
        update(
            check,
            words(&old_s, true) + words(&old_d, true) + new_addrs + ports,
        )
    } else {
        let udp_len = u16::from_be(len) as usize;
        let body = sum_bytes(ctx, flow.l4 + 8, udp_len.saturating_sub(8))?;
        let header = u64::from(e.src.port) + u64::from(e.dst.port) + 2 * u64::from(len);
        let proto = u64::from(u16::from_ne_bytes([0, IPPROTO_UDP]));
        !fold(new_addrs + proto + header + body)
    };
    let l2 = save_l2(ctx)?;
    let ihl = (flow.l4 - flow.l3) as i32;
    move_head(ctx, ihl - 40, &l2, flow.l3, ETH_P_IPV6)?;
    let ip6: *mut Ipv6Hdr = ptr_at(ctx, flow.l3).map_err(|()| Reason::DropTranslateFailed)?;
    let udp: *mut UdpHdr = ptr_at(ctx, flow.l3 + core::mem::size_of::<Ipv6Hdr>())
        .map_err(|()| Reason::DropTranslateFailed)?;
    // SAFETY: bounds checked by ptr_at.
    unsafe {
        (*ip6).vtc_flow = [0x60 | (tos >> 4), tos << 4, 0, 0];
        (*ip6).payload_len = len;
        (*ip6).nexthdr = IPPROTO_UDP;
        (*ip6).hop_limit = 64;
        (*ip6).saddr = e.src.addr;
        (*ip6).daddr = e.dst.addr;
        (*udp).source = e.src.port;
        (*udp).dest = e.dst.port;
        (*udp).check = if udp_check == 0 { 0xffff } else { udp_check };
    }
    Ok(())
}

/// IPv6 in, IPv4 out: a fresh 20-byte IPv4 header (DF set, no options) in place of the IPv6 one.
#[inline(always)]
fn v6_to_v4(ctx: &XdpContext, flow: &Flow, e: &Rw<'_>) -> Result<(), Reason> {
    let ip: *const Ipv6Hdr = ptr_at(ctx, flow.l3).map_err(|()| Reason::PassTruncated)?;
    let udp: *const UdpHdr = ptr_at(ctx, flow.l4).map_err(|()| Reason::PassTruncated)?;
    // SAFETY: bounds checked by ptr_at.
    let (tc, old_s, old_d, sport, dport, len, check) = unsafe {
        (
            ((*ip).vtc_flow[0] << 4) | ((*ip).vtc_flow[1] >> 4),
            (*ip).saddr,
            (*ip).daddr,
            (*udp).source,
            (*udp).dest,
            (*udp).len,
            (*udp).check,
        )
    };
    if check == 0 {
        return Err(Reason::PassMalformed);
    }
    let mut new_s = [0u8; 4];
    let mut new_d = [0u8; 4];
    new_s.copy_from_slice(&e.src.addr[..4]);
    new_d.copy_from_slice(&e.dst.addr[..4]);
    let new_addrs = words(&new_s, false) + words(&new_d, false);
    let udp_check = update(
        check,
        words(&old_s, true)
            + words(&old_d, true)
            + new_addrs
            + ports_delta((sport, dport), (e.src.port, e.dst.port)),
    );
    let tot_len = u16::from_be(len).wrapping_add(20).to_be();
    let hdr = Ipv4Hdr {
        version_ihl: 0x45,
        tos: tc,
        tot_len,
        id: 0,
        frag_off: 0x4000u16.to_be(),
        ttl: 64,
        protocol: IPPROTO_UDP,
        check: 0,
        saddr: new_s,
        daddr: new_d,
    };
    let ip_check = !fold(
        u64::from(u16::from_ne_bytes([0x45, tc]))
            + u64::from(tot_len)
            + u64::from(hdr.frag_off)
            + u64::from(u16::from_ne_bytes([64, IPPROTO_UDP]))
            + new_addrs,
    );
    let l2 = save_l2(ctx)?;
    move_head(ctx, 20, &l2, flow.l3, ETH_P_IP)?;
    let ip4: *mut Ipv4Hdr = ptr_at(ctx, flow.l3).map_err(|()| Reason::DropTranslateFailed)?;
    let udp: *mut UdpHdr = ptr_at(ctx, flow.l3 + core::mem::size_of::<Ipv4Hdr>())
        .map_err(|()| Reason::DropTranslateFailed)?;
    // SAFETY: bounds checked by ptr_at.
    unsafe {
        *ip4 = hdr;
        (*ip4).check = ip_check;
        (*udp).source = e.src.port;
        (*udp).dest = e.dst.port;
        (*udp).check = if udp_check == 0 { 0xffff } else { udp_check };
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
fn next_hop(ctx: &XdpContext, v6: bool, e: &Rw<'_>) -> Result<Hop, Reason> {
    // SAFETY: all-zero is a valid bpf_fib_lookup.
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    let ingress = ctx.ingress_ifindex() as u32;
    let mut flags = 0;
    if e.egress == 0 {
        p.ifindex = ingress;
    } else {
        // An output lookup constrained to the configured device, as `ip route get ... oif`.
        p.ifindex = e.egress;
        flags = BPF_FIB_LOOKUP_OUTPUT;
    }
    p.l4_protocol = 17;
    p.sport = e.src.port;
    p.dport = e.dst.port;
    if v6 {
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
            flags,
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
