//! rtpengine's `TOS` option on the fast path: the forwarded packet's IPv4 TOS byte or IPv6
//! traffic class, set after the rewrite (and after any family translation).

use crate::csum::{update, words};
use crate::hook::Hook;
use crate::net::{Ipv4Hdr, Ipv6Hdr, ptr_at};

/// Sets the TOS / traffic class of the IP header at `l3` to `tos`. IPv4 gets an incremental
/// header checksum update (RFC 1624); IPv6 has no header checksum and the UDP pseudo-header
/// does not cover the traffic class.
#[inline(always)]
pub fn set<C: Hook>(ctx: &C, l3: usize, v6: bool, tos: u8) -> Result<(), ()> {
    if v6 {
        let ip: *mut Ipv6Hdr = ptr_at(ctx, l3)?;
        // SAFETY: bounds checked by ptr_at.
        unsafe {
            let b = &mut (*ip).vtc_flow;
            b[0] = (b[0] & 0xf0) | (tos >> 4);
            b[1] = (b[1] & 0x0f) | (tos << 4);
        }
    } else {
        let ip: *mut Ipv4Hdr = ptr_at(ctx, l3)?;
        // SAFETY: bounds checked by ptr_at.
        unsafe {
            let old = [(*ip).version_ihl, (*ip).tos];
            let new = [(*ip).version_ihl, tos];
            (*ip).check = update((*ip).check, words(&old, true) + words(&new, false));
            (*ip).tos = tos;
        }
    }
    Ok(())
}
