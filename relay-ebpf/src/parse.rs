//! Parsing shared by the relay and the bench's floor program: Ethernet, up to two VLAN tags,
//! IPv4 (IHL honoured, fragments refused) or IPv6, UDP with its length checked.

use relay_common::stats::Reason;

use crate::{
    hook::Hook,
    net::{
        ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, EthHdr, IPPROTO_UDP,
        IPV6_NEXTHDR_FRAGMENT, Ipv4Hdr, Ipv6Hdr, UdpHdr, VlanHdr, ptr_at,
    },
};

/// Where the headers of a frame are, once parsed.
pub struct HeaderOffsets {
    pub l3: usize,
    pub l4: usize,
    pub v6: bool,
}

#[inline(always)]
pub fn parse<C: Hook>(ctx: &C) -> Result<HeaderOffsets, Reason> {
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
    Ok(HeaderOffsets { l3: off, l4, v6 })
}

/// Returns the UDP header offset and the IP payload length the header claims.
#[inline(always)]
fn parse_ipv4<C: Hook>(ctx: &C, off: usize) -> Result<(usize, usize), Reason> {
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
fn parse_ipv6<C: Hook>(ctx: &C, off: usize) -> Result<(usize, usize), Reason> {
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
