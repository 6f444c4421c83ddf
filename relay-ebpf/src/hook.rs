//! The two hooks the fast path runs on, behind one small trait: native XDP (`XdpContext`, no
//! skb: checksums are plain bytes) and TC clsact (`TcContext`, an skb: checksums go through the
//! kernel's helpers so a partial checksum (CHECKSUM_PARTIAL, a local sender on veth) stays
//! right). The packet logic in `fastpath` is written once, generic over [`Hook`].

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    helpers::generated::{bpf_skb_load_bytes, bpf_xdp_adjust_head, bpf_xdp_load_bytes},
    programs::{TcContext, XdpContext},
};
use relay_common::stats::Reason;

use crate::csum::{fold, update};

/// Largest Ethernet + two VLAN tags header: saved across a header-size change.
const L2_MAX: usize = 22;

/// What the packet logic needs from the hook it runs on.
pub trait Hook {
    /// Start and end of the directly accessible frame bytes.
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
    /// The frame's length as it arrived (an skb may hold more than its linear part).
    fn frame_len(&self) -> u64;
    /// The device the frame arrived on.
    fn ingress_ifindex(&self) -> u32;
    /// The raw context, for helpers that take either kind (bpf_fib_lookup).
    fn raw(&self) -> *mut core::ffi::c_void;
    /// Adds `delta` (a one's-complement sum of removed words, complemented, and added words)
    /// to the IPv4 header checksum at `off`.
    fn ip_csum(&self, off: usize, delta: u64) -> Result<(), Reason>;
    /// Updates the UDP checksum at `off` for a pseudo-header change (`pseudo`: addresses) and
    /// a change in the datagram (`data`: ports). With `v4` a zero checksum means "none" and
    /// stays zero; a result of zero is written as 0xffff.
    fn udp_csum(&self, off: usize, pseudo: u64, data: u64, v4: bool) -> Result<(), Reason>;
    /// Replaces the IP header of `old_len` bytes at `l3` with room for `new_len` bytes, keeping
    /// the link header in front with `ethertype` as its innermost type. `PassFamilyChange`
    /// while the frame is still intact; `DropTranslateFailed` after it was changed.
    fn resize_l3(
        &self,
        l3: usize,
        old_len: usize,
        new_len: usize,
        ethertype: u16,
    ) -> Result<(), Reason>;
    /// One byte at a variable offset, bounds checked at run time.
    fn load_byte(&self, off: usize) -> Result<u8, Reason>;
}

/// Pointer to a `T` at byte `off` of the frame, or `Err` if it does not fit.
/// The explicit compare against `data_end` is what the verifier needs to see.
#[inline(always)]
pub fn ptr_at<T>(ctx: &impl Hook, off: usize) -> Result<*mut T, ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    let len = core::mem::size_of::<T>();
    if start + off + len > end {
        return Err(());
    }
    Ok((start + off) as *mut T)
}

/// Writes the saved link header at the new frame start and the ethertype before `l3`.
#[inline(always)]
fn restore_l2<C: Hook>(
    ctx: &C,
    l2: &[u8; L2_MAX],
    l3: usize,
    ethertype: u16,
) -> Result<(), Reason> {
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

/// In-place UDP checksum update over plain bytes (XDP, and TC frames without offload state).
#[inline(always)]
fn udp_csum_bytes<C: Hook>(ctx: &C, off: usize, delta: u64, v4: bool) -> Result<(), Reason> {
    let p: *mut u16 = ptr_at(ctx, off).map_err(|()| Reason::PassTruncated)?;
    // SAFETY: bounds checked by ptr_at.
    unsafe {
        if *p == 0 {
            // IPv4 without a checksum stays without; IPv6 callers refuse zero before this.
            return if v4 {
                Ok(())
            } else {
                Err(Reason::PassMalformed)
            };
        }
        let c = update(*p, delta);
        *p = if c == 0 { 0xffff } else { c };
    }
    Ok(())
}

impl Hook for XdpContext {
    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }
    #[inline(always)]
    fn frame_len(&self) -> u64 {
        (XdpContext::data_end(self) - XdpContext::data(self)) as u64
    }
    #[inline(always)]
    fn ingress_ifindex(&self) -> u32 {
        XdpContext::ingress_ifindex(self) as u32
    }
    #[inline(always)]
    fn raw(&self) -> *mut core::ffi::c_void {
        self.as_ptr()
    }
    #[inline(always)]
    fn ip_csum(&self, off: usize, delta: u64) -> Result<(), Reason> {
        let p: *mut u16 = ptr_at(self, off).map_err(|()| Reason::PassTruncated)?;
        // SAFETY: bounds checked by ptr_at.
        unsafe { *p = update(*p, delta) };
        Ok(())
    }
    #[inline(always)]
    fn udp_csum(&self, off: usize, pseudo: u64, data: u64, v4: bool) -> Result<(), Reason> {
        udp_csum_bytes(self, off, pseudo + data, v4)
    }
    #[inline(always)]
    fn resize_l3(
        &self,
        l3: usize,
        old_len: usize,
        new_len: usize,
        ethertype: u16,
    ) -> Result<(), Reason> {
        let l2: *const [u8; L2_MAX] = ptr_at(self, 0).map_err(|()| Reason::PassTruncated)?;
        // SAFETY: bounds checked by ptr_at.
        let l2 = unsafe { *l2 };
        let delta = old_len as i32 - new_len as i32;
        // SAFETY: the program's own context.
        if unsafe { bpf_xdp_adjust_head(self.ctx, delta) } != 0 {
            return Err(Reason::PassFamilyChange);
        }
        restore_l2(self, &l2, l3, ethertype)
    }
    #[inline(always)]
    fn load_byte(&self, off: usize) -> Result<u8, Reason> {
        let mut b = [0u8; 1];
        // SAFETY: ctx is the program's context; b is a 1-byte stack buffer.
        let rc = unsafe { bpf_xdp_load_bytes(self.ctx, off as u32, b.as_mut_ptr().cast(), 1) };
        if rc != 0 {
            return Err(Reason::PassTruncated);
        }
        Ok(b[0])
    }
}

impl Hook for TcContext {
    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }
    #[inline(always)]
    fn frame_len(&self) -> u64 {
        u64::from(self.len())
    }
    // On the ingress hook the device the skb is on is the one it arrived on.
    #[allow(clippy::misnamed_getters)]
    #[inline(always)]
    fn ingress_ifindex(&self) -> u32 {
        // SAFETY: the program's own __sk_buff.
        unsafe { (*self.skb.skb).ifindex }
    }
    #[inline(always)]
    fn raw(&self) -> *mut core::ffi::c_void {
        self.as_ptr()
    }
    #[inline(always)]
    fn ip_csum(&self, off: usize, delta: u64) -> Result<(), Reason> {
        // Size 0: `to` is a checksum difference.
        self.l3_csum_replace(off, 0, u64::from(fold(delta)), 0)
            .map_err(|_| Reason::DropTranslateFailed)
    }
    #[inline(always)]
    fn udp_csum(&self, off: usize, pseudo: u64, data: u64, v4: bool) -> Result<(), Reason> {
        // The helper knows the skb's checksum state: a partial checksum (the field holds the
        // pseudo-header sum, the device finishes it) takes only the pseudo-header change.
        let zero = if v4 {
            u64::from(BPF_F_MARK_MANGLED_0)
        } else {
            0
        };
        if !v4 {
            let p: *const u16 = ptr_at(self, off).map_err(|()| Reason::PassTruncated)?;
            // SAFETY: bounds checked by ptr_at.
            if unsafe { *p } == 0 {
                return Err(Reason::PassMalformed);
            }
        }
        self.l4_csum_replace(
            off,
            0,
            u64::from(fold(pseudo)),
            u64::from(BPF_F_PSEUDO_HDR) | zero,
        )
        .map_err(|_| Reason::DropTranslateFailed)?;
        self.l4_csum_replace(off, 0, u64::from(fold(data)), zero)
            .map_err(|_| Reason::DropTranslateFailed)
    }
    #[inline(always)]
    fn resize_l3(
        &self,
        l3: usize,
        old_len: usize,
        new_len: usize,
        ethertype: u16,
    ) -> Result<(), Reason> {
        // bpf_skb_change_proto inserts or removes exactly 20 bytes after the link header and
        // keeps the skb's offload state (partial checksum, GSO) consistent: IPv4 options do
        // not fit that and go to the daemon.
        match (old_len, new_len) {
            (20, 40) | (40, 20) => {}
            _ => return Err(Reason::PassFamilyChange),
        }
        if self.change_proto(ethertype.to_be(), 0).is_err() {
            return Err(Reason::PassFamilyChange);
        }
        let tag: *mut u16 = ptr_at(self, l3 - 2).map_err(|()| Reason::DropTranslateFailed)?;
        // SAFETY: bounds checked by ptr_at.
        unsafe { *tag = ethertype.to_be() };
        Ok(())
    }
    #[inline(always)]
    fn load_byte(&self, off: usize) -> Result<u8, Reason> {
        let mut b = [0u8; 1];
        // SAFETY: the program's own skb; b is a 1-byte stack buffer.
        let rc = unsafe { bpf_skb_load_bytes(self.as_ptr(), off as u32, b.as_mut_ptr().cast(), 1) };
        if rc != 0 {
            return Err(Reason::PassTruncated);
        }
        Ok(b[0])
    }
}
