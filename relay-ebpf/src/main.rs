//! The relay's programs: `relay` (XDP) and `relay_tc` (TC clsact ingress), two thin entry
//! points around one fast path (`fastpath`: parse -> classify -> look up the stream -> check the
//! source -> rewrite -> send), sharing the maps. Every frame is counted in exactly one reason slot.
// Host builds (`cargo clippy --workspace`) get std and a stub main; the program is bpf-only.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod csum;
mod fastpath;
mod handover;
mod hook;
mod net;
mod parse;
mod tos;

use aya_ebpf::{
    bindings::{
        TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT,
        xdp_action::{XDP_PASS, XDP_TX},
    },
    helpers::generated::bpf_redirect,
    macros::{classifier, map, xdp},
    maps::{Array, DevMapHash, HashMap, PerCpuArray},
    programs::{TcContext, XdpContext},
};
use fastpath::{Egress, try_relay};
use hook::Hook;
use relay_common::{
    config::RelayConfig,
    stats::{Event, Reason, StatEntry, Verdict},
    stream::{MAX_NEXT_HOPS, MAX_STREAMS, NextHop, StreamCounters, StreamEntry, StreamKey},
};

#[map(name = "RELAY_STATS")]
static RELAY_STATS: PerCpuArray<StatEntry> = PerCpuArray::with_max_entries(Reason::COUNT, 0);

#[map(name = "RELAY_STREAMS")]
pub(crate) static RELAY_STREAMS: HashMap<StreamKey, StreamEntry> =
    HashMap::with_max_entries(MAX_STREAMS, 0);

#[map(name = "RELAY_STREAM_COUNTERS")]
pub(crate) static RELAY_STREAM_COUNTERS: PerCpuArray<StreamCounters> =
    PerCpuArray::with_max_entries(MAX_STREAMS, 0);

/// Egress devices for XDP_REDIRECT, keyed by ifindex; the loader registers every attached device.
#[map(name = "RELAY_DEVMAP")]
pub(crate) static RELAY_DEVMAP: DevMapHash = DevMapHash::with_max_entries(64, 0);

/// Next hops the daemon resolved (routes and neighbours), indexed from the stream entries: an
/// array, so reaching one costs no hash lookup, and a neighbour change rewrites one slot.
#[map(name = "RELAY_NEXT_HOPS")]
pub(crate) static RELAY_NEXT_HOPS: Array<NextHop> = Array::with_max_entries(MAX_NEXT_HOPS, 0);

/// Per-CPU [`Event`] counters.
#[map(name = "RELAY_EVENTS")]
static RELAY_EVENTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Event::COUNT, 0);

/// Set by the loader (read-only global); read with `read_volatile` so it is not folded.
#[unsafe(no_mangle)]
static RELAY_CONFIG: RelayConfig = RelayConfig::DISABLED;

/// The XDP entry point (native XDP on NICs that run it).
#[xdp]
pub fn relay(ctx: XdpContext) -> u32 {
    // Counted with the frame's length as it arrived.
    let len = Hook::frame_len(&ctx);
    let reason = match try_relay(&ctx) {
        Ok(r) | Err(r) => r,
    };
    count(reason, len);
    // Verdict numbers equal the kernel's xdp_action values (XDP_TX = 3, XDP_REDIRECT = 4).
    const _: () = assert!(Verdict::Tx as u32 == XDP_TX);
    const _: () = assert!(Verdict::Pass as u32 == XDP_PASS);
    reason.verdict() as u32
}

/// The TC (clsact ingress) entry point, for veth and other virtual devices: the same fast
/// path on the skb, which keeps partial checksums right and redirects without the peer's help.
#[classifier]
pub fn relay_tc(ctx: TcContext) -> i32 {
    let len = Hook::frame_len(&ctx);
    // The headers must be in the linear part for direct access; pull them only when needed.
    if ((ctx.data_end() - ctx.data()) as u64) < len {
        let want = if len > TC_PULL { TC_PULL } else { len };
        let _ = ctx.pull_data(want as u32);
    }
    let reason = match try_relay(&ctx) {
        Ok(r) | Err(r) => r,
    };
    count(reason, len);
    match reason.verdict() {
        Verdict::Pass => TC_ACT_OK,
        Verdict::Tx | Verdict::Redirect => TC_ACT_REDIRECT,
        Verdict::Drop | Verdict::Aborted => TC_ACT_SHOT,
    }
}

/// Bytes of an skb pulled into its linear part when the headers are not all there.
const TC_PULL: u64 = 256;

impl Egress for XdpContext {
    #[inline(always)]
    fn send(&self, ifindex: u32) -> Reason {
        // XDP_TX only where the device delivers it (a NIC); on a virtual device the daemon
        // sets `tx_via_redirect`: a devmap redirect flushes the peer (see shared/TOOLCHAIN.md).
        if ifindex == Hook::ingress_ifindex(self) && !config().tx_via_redirect() {
            return Reason::TxForward;
        }
        match RELAY_DEVMAP.redirect(ifindex, 0) {
            Ok(_) => Reason::RedirectForward,
            // Checked in next_hop; only a concurrent removal gets here. Drop the rewritten frame.
            Err(_) => Reason::DropRedirectFailed,
        }
    }
}

impl Egress for TcContext {
    #[inline(always)]
    fn send(&self, ifindex: u32) -> Reason {
        // SAFETY: helper without preconditions; the verdict TC_ACT_REDIRECT carries it out.
        unsafe { bpf_redirect(ifindex, 0) };
        if ifindex == Hook::ingress_ifindex(self) {
            Reason::TxForward
        } else {
            Reason::RedirectForward
        }
    }
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
pub(crate) fn count_event(event: Event) {
    if let Some(slot) = RELAY_EVENTS.get_ptr_mut(event as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU in softirq context.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
pub(crate) fn config() -> RelayConfig {
    // SAFETY: a static, always valid to read.
    unsafe { core::ptr::read_volatile(&RELAY_CONFIG) }
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
