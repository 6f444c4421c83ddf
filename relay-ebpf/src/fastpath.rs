//! The fast path, written once for both hooks: parse -> classify -> look up the stream ->
//! check the source -> rewrite (translating IPv4<->IPv6 between legs of different family) ->
//! send. Generic over [`Hook`] (XDP or TC); the entry points in main.rs are thin.

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_OUTPUT,
        bpf_fib_lookup as FibParams,
    },
    helpers::generated::{bpf_csum_diff, bpf_fib_lookup, bpf_ktime_get_coarse_ns},
};
use relay_common::{
    stats::{Event, Reason},
    stream::{
        Endpoint, FAMILY_V4, FAMILY_V6, FLAG_RTCP_DEMUX, FLAG_SET_TOS, FLAG_SOURCE_ANY, Mismatch,
        StreamKey,
    },
};

use crate::{
    csum::{fold, ports_delta, words},
    hook::Hook,
    net::{ETH_P_IP, ETH_P_IPV6, EthHdr, IPPROTO_UDP, Ipv4Hdr, Ipv6Hdr, UdpHdr, ptr_at},
    parse::{HeaderOffsets, parse},
};

const IPV4_LEN: usize = core::mem::size_of::<Ipv4Hdr>();
const IPV6_LEN: usize = core::mem::size_of::<Ipv6Hdr>();

/// How a hook sends a rewritten frame (it needs the relay's maps, so it lives beside them).
pub trait Egress: Hook {
    /// Sends the frame out of `ifindex`; the reason it is counted under.
    fn send(&self, ifindex: u32) -> Reason;
}

/// `Ok` and `Err` both carry the reason the frame is counted under; `Err` is an early exit.
#[inline(always)]
pub fn try_relay<C: Egress>(ctx: &C) -> Result<Reason, Reason> {
    let offsets = parse(ctx)?;
    let udp: *mut UdpHdr = ptr_at(ctx, offsets.l4).map_err(|()| Reason::PassTruncated)?;
    // SAFETY: bounds checked by ptr_at.
    let dest = u16::from_be(unsafe { (*udp).dest });
    if !crate::config().is_relay_port(dest) {
        return Ok(Reason::PassNotRelayPort);
    }
    let payload = offsets.l4 + core::mem::size_of::<UdpHdr>();
    // The first payload byte is read with the UDP header: a one-byte bounds check at a variable
    // offset compiles to a compare the verifier cannot use.
    let head: *const [u8; 9] = ptr_at(ctx, offsets.l4).map_err(|()| Reason::PassEmpty)?;
    // SAFETY: bounds checked by ptr_at.
    let (first, len_be) = unsafe { ((*head)[8], [(*head)[4], (*head)[5]]) };
    // The UDP length, not the frame, says where the datagram ends: an empty datagram padded to
    // the Ethernet minimum has padding, not payload, after its header.
    let udp_len = usize::from(u16::from_be_bytes(len_be));
    if udp_len <= core::mem::size_of::<UdpHdr>() {
        return Ok(Reason::PassEmpty);
    }
    match first {
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
        128..=191 => forward(ctx, &offsets, udp, udp_len),
        _ => Ok(Reason::PassOtherPayload),
    }
}

/// RTP/RTCP on a relay port: look the stream up, check the source, rewrite, send.
#[inline(always)]
fn forward<C: Egress>(
    ctx: &C,
    offsets: &HeaderOffsets,
    udp: *mut UdpHdr,
    udp_len: usize,
) -> Result<Reason, Reason> {
    let mut key = StreamKey {
        family: if offsets.v6 { FAMILY_V6 } else { FAMILY_V4 },
        _pad: 0,
        // SAFETY: udp was bounds checked by the caller.
        port: unsafe { (*udp).dest },
        addr: [0; 16],
    };
    // SAFETY: udp was bounds checked by the caller.
    let sport = unsafe { (*udp).source };
    let mut src_addr = [0u8; 16];
    if offsets.v6 {
        let ip: *const Ipv6Hdr = ptr_at(ctx, offsets.l3).map_err(|()| Reason::PassTruncated)?;
        // SAFETY: bounds checked by ptr_at.
        unsafe {
            key.addr = (*ip).daddr;
            src_addr = (*ip).saddr;
        }
    } else {
        let ip: *const Ipv4Hdr = ptr_at(ctx, offsets.l3).map_err(|()| Reason::PassTruncated)?;
        // SAFETY: bounds checked by ptr_at.
        unsafe {
            key.addr[..4].copy_from_slice(&(*ip).daddr);
            src_addr[..4].copy_from_slice(&(*ip).saddr);
        }
    }
    // SAFETY: a hash map value stays valid (RCU) while this program runs; updates swap in a
    // new element, so we read either the old or the new entry, never a mix.
    let Some(entry) = (unsafe { crate::RELAY_STREAMS.get(key) }) else {
        return Ok(Reason::PassUnknownStream);
    };

    let from_expected = entry.expected.family == key.family
        && entry.expected.port == sport
        && entry.expected.addr == src_addr;
    if entry.flags & FLAG_SOURCE_ANY == 0 && !from_expected {
        match entry.mismatch {
            m if m == Mismatch::Forward as u8 => {}
            m if m == Mismatch::Userspace as u8 => return Ok(Reason::PassSourceMismatch),
            m if m == Mismatch::Handover as u8 => {
                let interval_ns = u64::from(entry.handover_ds) * 100_000_000;
                return Ok(
                    if crate::handover::latched_source_active(entry.counter_slot, interval_ns) {
                        Reason::DropSourceMismatch
                    } else {
                        Reason::PassSourceMismatch
                    },
                );
            }
            _ => return Ok(Reason::DropSourceMismatch),
        }
    }
    // rtcp-mux on this leg only: RTCP (RFC 5761 s.4) goes to the other leg's RTCP endpoints.
    let mut rewrite = Rewrite {
        src: &entry.src,
        dst: &entry.dst,
        egress: entry.egress_ifindex,
        next_hop: entry.next_hop,
    };
    if entry.flags & FLAG_RTCP_DEMUX != 0 {
        let rtp: *const [u8; 10] = ptr_at(ctx, offsets.l4).map_err(|()| Reason::PassMalformed)?;
        // SAFETY: bounds checked by ptr_at.
        if (192..=223).contains(&unsafe { (*rtp)[9] }) {
            rewrite.src = &entry.rtcp_src;
            rewrite.dst = &entry.rtcp_dst;
            rewrite.next_hop = entry.rtcp_next_hop;
        }
    }
    let out_v6 = match (rewrite.src.family, rewrite.dst.family) {
        (FAMILY_V4, FAMILY_V4) => false,
        (FAMILY_V6, FAMILY_V6) => true,
        _ => return Ok(Reason::PassFamilyChange),
    };

    let frame_len = ctx.frame_len();
    // Decide the next hop before touching the frame: a frame passed up must be unmodified.
    // The IP packet as it leaves, for the FIB's MTU check (translation to IPv6 grows it).
    let out_len = udp_len + if out_v6 { 40 } else { 20 };
    let hop = next_hop(ctx, out_v6, &rewrite, out_len)?;
    match (offsets.v6, out_v6) {
        (false, false) => rewrite_v4(ctx, offsets, &rewrite)?,
        (true, true) => rewrite_v6(ctx, offsets, &rewrite)?,
        (false, true) => v4_to_v6(ctx, offsets, &rewrite)?,
        (true, false) => v6_to_v4(ctx, offsets, &rewrite)?,
    }
    if entry.flags & FLAG_SET_TOS != 0 {
        crate::tos::set(ctx, offsets.l3, out_v6, entry.tos).map_err(|()| Reason::PassTruncated)?;
    }
    let reason = send(ctx, &hop)?;
    // Only a frame that left counts as the stream's media (and keeps the call alive).
    if reason == Reason::DropRedirectFailed {
        return Ok(reason);
    }
    if let Some(c) = crate::RELAY_STREAM_COUNTERS.get_ptr_mut(entry.counter_slot) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += frame_len;
            (*c).last_seen_ns = bpf_ktime_get_coarse_ns();
        }
    }
    Ok(reason)
}

/// The rewrite a packet gets: new source and destination, the egress device (0: FIB) and the
/// slot of the next hop the daemon resolved for `dst` (0: none).
struct Rewrite<'a> {
    src: &'a Endpoint,
    dst: &'a Endpoint,
    egress: u32,
    next_hop: u32,
}

/// The rewrites and the FIB lookup are BPF-to-BPF calls, each with its own stack frame
/// (checked against the 512-byte limit along the call chain by the verifier): inlined into one
/// function, the byte-wise address sums of all four rewrites do not fit beside each other.
#[inline(never)]
fn rewrite_v4<C: Hook>(ctx: &C, offsets: &HeaderOffsets, e: &Rewrite<'_>) -> Result<(), Reason> {
    let ip: *mut Ipv4Hdr = ptr_at(ctx, offsets.l3).map_err(|()| Reason::PassTruncated)?;
    let udp: *mut UdpHdr = ptr_at(ctx, offsets.l4).map_err(|()| Reason::PassTruncated)?;
    let mut new_s = [0u8; 4];
    let mut new_d = [0u8; 4];
    new_s.copy_from_slice(&e.src.addr[..4]);
    new_d.copy_from_slice(&e.dst.addr[..4]);
    // SAFETY: ip and udp are bounds checked; nothing below holds them across a helper call.
    let (addr_delta, ip_delta, ports) = unsafe {
        let (old_s, old_d) = ((*ip).saddr, (*ip).daddr);
        let addr_delta =
            words(&old_s, true) + words(&old_d, true) + words(&new_s, false) + words(&new_d, false);
        let old_ttl = [(*ip).ttl, (*ip).protocol];
        let new_ttl = [64, (*ip).protocol];
        let ip_delta = addr_delta + words(&old_ttl, true) + words(&new_ttl, false);
        let ports = ports_delta(((*udp).source, (*udp).dest), (e.src.port, e.dst.port));
        (*ip).saddr = new_s;
        (*ip).daddr = new_d;
        (*ip).ttl = 64;
        (*udp).source = e.src.port;
        (*udp).dest = e.dst.port;
        (addr_delta, ip_delta, ports)
    };
    ctx.ip_csum(offsets.l3 + IP_CHECK, ip_delta)?;
    ctx.udp_csum(offsets.l4 + UDP_CHECK, addr_delta, ports, true)
}

#[inline(never)]
fn rewrite_v6<C: Hook>(ctx: &C, offsets: &HeaderOffsets, e: &Rewrite<'_>) -> Result<(), Reason> {
    // Source and destination sit side by side in the header: one 32-byte block, whose
    // checksum difference the kernel computes (summed byte-wise here, four 16-byte addresses
    // would need more stack than a BPF frame has).
    let addrs: *mut [u8; 32] = ptr_at(ctx, offsets.l3 + 8).map_err(|()| Reason::PassTruncated)?;
    let ip: *mut Ipv6Hdr = ptr_at(ctx, offsets.l3).map_err(|()| Reason::PassTruncated)?;
    let udp: *mut UdpHdr = ptr_at(ctx, offsets.l4).map_err(|()| Reason::PassTruncated)?;
    let mut new = [0u8; 32];
    new[..16].copy_from_slice(&e.src.addr);
    new[16..].copy_from_slice(&e.dst.addr);
    // SAFETY: ip, udp and addrs are bounds checked; nothing below holds them across a helper
    // call; bpf_csum_diff reads 32 bytes from each buffer.
    let (addr_delta, ports) = unsafe {
        // IPv6 UDP checksums are mandatory; a zero one is invalid input we leave to the stack.
        if (*udp).check == 0 {
            return Err(Reason::PassMalformed);
        }
        let d = bpf_csum_diff(addrs.cast(), 32, new.as_mut_ptr().cast(), 32, 0);
        if d < 0 {
            return Err(Reason::PassMalformed);
        }
        let ports = ports_delta(((*udp).source, (*udp).dest), (e.src.port, e.dst.port));
        *addrs = new;
        (*ip).hop_limit = 64;
        (*udp).source = e.src.port;
        (*udp).dest = e.dst.port;
        (d as u64 & 0xffff_ffff, ports)
    };
    ctx.udp_csum(offsets.l4 + UDP_CHECK, addr_delta, ports, false)
}

/// Offsets of the checksum fields in their headers.
const IP_CHECK: usize = 10;
const UDP_CHECK: usize = 6;
/// Longest UDP datagram whose checksum is computed from scratch (an IPv4 datagram without one
/// going to an IPv6 leg); larger ones go to the daemon. Media stays well under it.
const MAX_SUM_BYTES: usize = 1480;

/// Adds the next `N` bytes (a multiple of 4, at most 512) to `s` with bpf_csum_diff if `len`
/// has that many left. Fixed-size steps keep the verifier's path count small, unlike a loop.
#[inline(always)]
fn sum_step<C: Hook, const N: usize>(
    ctx: &C,
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
fn sum_bytes<C: Hook>(ctx: &C, off: usize, len: usize) -> Result<u64, Reason> {
    if len > MAX_SUM_BYTES {
        return Err(Reason::PassFamilyChange);
    }
    let (mut s, mut done) = (0u64, 0usize);
    sum_step::<C, 512>(ctx, off, len, &mut done, &mut s)?;
    sum_step::<C, 512>(ctx, off, len, &mut done, &mut s)?;
    sum_step::<C, 256>(ctx, off, len, &mut done, &mut s)?;
    sum_step::<C, 128>(ctx, off, len, &mut done, &mut s)?;
    sum_step::<C, 64>(ctx, off, len, &mut done, &mut s)?;
    sum_step::<C, 32>(ctx, off, len, &mut done, &mut s)?;
    sum_step::<C, 16>(ctx, off, len, &mut done, &mut s)?;
    sum_step::<C, 8>(ctx, off, len, &mut done, &mut s)?;
    sum_step::<C, 4>(ctx, off, len, &mut done, &mut s)?;
    if len - done >= 2 {
        let w: *const [u8; 2] = ptr_at(ctx, off + done).map_err(|()| Reason::PassTruncated)?;
        // SAFETY: bounds checked by ptr_at.
        s += words(unsafe { &*w }, false);
        done += 2;
    }
    if done < len {
        // An odd last byte is summed as if padded with a zero byte (RFC 768). The helper checks
        // the bounds at run time, which a one-byte access at a variable offset needs.
        let b = ctx.load_byte(off + done)?;
        s += u64::from(u16::from_ne_bytes([b, 0]));
    }
    Ok(s)
}

/// IPv4 in, IPv6 out: the UDP datagram stays where it is; the hook makes room for the 40-byte
/// IPv6 header in place of the IPv4 one and keeps the link header in front.
/// A BPF-to-BPF call, as the other rewrites.
#[inline(never)]
fn v4_to_v6<C: Hook>(ctx: &C, offsets: &HeaderOffsets, e: &Rewrite<'_>) -> Result<(), Reason> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, offsets.l3).map_err(|()| Reason::PassTruncated)?;
    let udp: *const UdpHdr = ptr_at(ctx, offsets.l4).map_err(|()| Reason::PassTruncated)?;
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
    // IPv6 forbids a zero UDP checksum: without one, compute it from scratch, before anything
    // in the frame changes (the sum may refuse, and a refused frame must be intact).
    let scratch = if check != 0 {
        None
    } else {
        let udp_len = u16::from_be(len) as usize;
        let body = sum_bytes(ctx, offsets.l4 + 8, udp_len.saturating_sub(8))?;
        let header = u64::from(e.src.port) + u64::from(e.dst.port) + 2 * u64::from(len);
        let proto = u64::from(u16::from_ne_bytes([0, IPPROTO_UDP]));
        Some(!fold(new_addrs + proto + header + body))
    };
    ctx.resize_l3(offsets.l3, offsets.l4 - offsets.l3, IPV6_LEN, ETH_P_IPV6)?;
    let l4 = offsets.l3 + IPV6_LEN;
    let ip6: *mut Ipv6Hdr = ptr_at(ctx, offsets.l3).map_err(|()| Reason::DropTranslateFailed)?;
    let udp: *mut UdpHdr = ptr_at(ctx, l4).map_err(|()| Reason::DropTranslateFailed)?;
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
        if let Some(c) = scratch {
            (*udp).check = if c == 0 { 0xffff } else { c };
            return Ok(());
        }
    }
    let pseudo = words(&old_s, true) + words(&old_d, true) + new_addrs;
    ctx.udp_csum(l4 + UDP_CHECK, pseudo, ports, false)
        .map_err(|_| Reason::DropTranslateFailed)
}

/// IPv6 in, IPv4 out: a fresh 20-byte IPv4 header (DF set, no options) in place of the IPv6 one.
#[inline(never)]
fn v6_to_v4<C: Hook>(ctx: &C, offsets: &HeaderOffsets, e: &Rewrite<'_>) -> Result<(), Reason> {
    let ip: *const Ipv6Hdr = ptr_at(ctx, offsets.l3).map_err(|()| Reason::PassTruncated)?;
    let udp: *const UdpHdr = ptr_at(ctx, offsets.l4).map_err(|()| Reason::PassTruncated)?;
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
    let pseudo = words(&old_s, true) + words(&old_d, true) + new_addrs;
    let ports = ports_delta((sport, dport), (e.src.port, e.dst.port));
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
    ctx.resize_l3(offsets.l3, IPV6_LEN, IPV4_LEN, ETH_P_IP)?;
    let l4 = offsets.l3 + IPV4_LEN;
    let ip4: *mut Ipv4Hdr = ptr_at(ctx, offsets.l3).map_err(|()| Reason::DropTranslateFailed)?;
    let udp: *mut UdpHdr = ptr_at(ctx, l4).map_err(|()| Reason::DropTranslateFailed)?;
    // SAFETY: bounds checked by ptr_at.
    unsafe {
        *ip4 = hdr;
        (*ip4).check = ip_check;
        (*udp).source = e.src.port;
        (*udp).dest = e.dst.port;
    }
    ctx.udp_csum(l4 + UDP_CHECK, pseudo, ports, true)
        .map_err(|_| Reason::DropTranslateFailed)
}

struct Hop {
    ifindex: u32,
    smac: [u8; 6],
    dmac: [u8; 6],
}

/// Next hop as the daemon resolved it (routes and neighbours, kept current from netlink
/// events), else from the kernel FIB: the ingress device or another one the daemon registered.
#[inline(never)]
fn next_hop<C: Hook>(ctx: &C, v6: bool, e: &Rewrite<'_>, out_len: usize) -> Result<Hop, Reason> {
    if e.next_hop != 0
        && let Some(h) = crate::RELAY_NEXT_HOPS.get(e.next_hop)
        && h.ifindex != 0
    {
        // The daemon only resolves to devices it registered for redirects.
        if out_len > h.mtu as usize {
            return Err(Reason::PassTooBig);
        }
        return Ok(Hop {
            ifindex: h.ifindex,
            smac: h.smac,
            dmac: h.dmac,
        });
    }
    crate::count_event(Event::FibLookup);
    fib_lookup(ctx, v6, e, out_len)
}

/// The kernel FIB's next hop (`bpf_fib_lookup`), with its MTU check.
#[inline(always)]
fn fib_lookup<C: Hook>(ctx: &C, v6: bool, e: &Rewrite<'_>, out_len: usize) -> Result<Hop, Reason> {
    // SAFETY: all-zero is a valid bpf_fib_lookup.
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    let ingress = ctx.ingress_ifindex();
    let mut flags = 0;
    if e.egress == 0 {
        p.ifindex = ingress;
    } else {
        // An output lookup constrained to the configured device, as `ip route get ... oif`.
        p.ifindex = e.egress;
        flags = BPF_FIB_LOOKUP_OUTPUT;
    }
    p.l4_protocol = 17;
    p.__bindgen_anon_1.tot_len = out_len as u16;
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
            ctx.raw().cast(),
            &mut p,
            core::mem::size_of::<FibParams>() as i32,
            flags,
        )
    };
    if rc == BPF_FIB_LKUP_RET_FRAG_NEEDED as i64 {
        return Err(Reason::PassTooBig);
    }
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 {
        return Err(Reason::PassFibMiss);
    }
    // An egress device the daemon did not register cannot be sent to.
    if p.ifindex != ingress && crate::RELAY_DEVMAP.get_ifindex(p.ifindex).is_none() {
        return Err(Reason::PassFibMiss);
    }
    Ok(Hop {
        ifindex: p.ifindex,
        smac: p.smac,
        dmac: p.dmac,
    })
}

#[inline(always)]
fn send<C: Egress>(ctx: &C, hop: &Hop) -> Result<Reason, Reason> {
    let eth: *mut EthHdr = ptr_at(ctx, 0).map_err(|()| Reason::PassTruncated)?;
    // SAFETY: bounds checked by ptr_at.
    unsafe {
        (*eth).dst = hop.dmac;
        (*eth).src = hop.smac;
    }
    Ok(ctx.send(hop.ifindex))
}
