//! The relay's XDP program: parse -> classify -> count. For now every frame is passed to the
//! stack; the fast path (lookup, rewrite, redirect) builds on this parse.
// Host builds (`cargo clippy --workspace`) get std and a stub main; the program is bpf-only.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod net;

use aya_ebpf::{
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};
use net::{
    ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, EthHdr, IPPROTO_UDP, IPV6_NEXTHDR_FRAGMENT,
    Ipv4Hdr, Ipv6Hdr, UdpHdr, VlanHdr, ptr_at,
};
use relay_common::{
    config::RelayConfig,
    stats::{Reason, StatEntry},
};

#[map(name = "RELAY_STATS")]
static RELAY_STATS: PerCpuArray<StatEntry> = PerCpuArray::with_max_entries(Reason::COUNT, 0);

/// Set by the loader (read-only global); read with `read_volatile` so it is not folded.
#[unsafe(no_mangle)]
static RELAY_CONFIG: RelayConfig = RelayConfig::DISABLED;

#[xdp]
pub fn relay(ctx: XdpContext) -> u32 {
    let reason = match try_relay(&ctx) {
        Ok(r) | Err(r) => r,
    };
    count(&ctx, reason);
    reason.verdict() as u32
}

#[inline(always)]
fn count(ctx: &XdpContext, reason: Reason) {
    if let Some(slot) = RELAY_STATS.get_ptr_mut(reason as u32) {
        let bytes = (ctx.data_end() - ctx.data()) as u64;
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

    let (l4_off, ip_payload_len) = match ethertype {
        ETH_P_IP => parse_ipv4(ctx, off)?,
        ETH_P_IPV6 => parse_ipv6(ctx, off)?,
        _ => return Err(Reason::PassNotIp),
    };

    let udp: *const UdpHdr = ptr_at(ctx, l4_off).map_err(|()| Reason::PassTruncated)?;
    // SAFETY: bounds checked by ptr_at.
    let (dest, udp_len) = unsafe { (u16::from_be((*udp).dest), u16::from_be((*udp).len)) };
    let frame_left = ctx.data_end() - ctx.data() - l4_off;
    if (udp_len as usize) < core::mem::size_of::<UdpHdr>()
        || udp_len as usize > ip_payload_len
        || udp_len as usize > frame_left
    {
        return Err(Reason::PassMalformed);
    }

    if config().is_relay_port(dest) {
        Ok(Reason::PassRelayUdp)
    } else {
        Ok(Reason::PassNotRelayPort)
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
