//! Secure latching in the fast path: a packet from a source other than the latched one is
//! dropped while the latched source is active, so injected media (RTP Inject) never costs the
//! daemon anything; once the latched source has been silent for the handover interval (a NAT
//! rebinding) such packets go to the daemon, which may move the latch.

use core::ffi::c_void;

use aya_ebpf::helpers::generated::{bpf_ktime_get_coarse_ns, bpf_map_lookup_percpu_elem};
use relay_common::stream::StreamCounters;

/// Upper bound on the CPUs searched; the lookup fails past the last possible CPU, which ends
/// the search earlier on smaller hosts.
const MAX_CPUS: u32 = 256;

/// True when the stream of counter `slot` forwarded a packet (from its latched source: the only
/// one a handover entry forwards) within `interval_ns`, on any CPU: a flow and an injector
/// can arrive on different receive queues.
#[inline(always)]
pub fn latched_source_active(slot: u32, interval_ns: u64) -> bool {
    // SAFETY: a helper without preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let map = core::ptr::addr_of!(crate::RELAY_STREAM_COUNTERS)
        .cast::<c_void>()
        .cast_mut();
    let key = core::ptr::addr_of!(slot).cast::<c_void>();
    for cpu in 0..MAX_CPUS {
        // SAFETY: the map is a per-CPU array of StreamCounters; the helper returns null past
        // the last possible CPU or an out-of-range slot, else a pointer to that CPU's value.
        let value = unsafe { bpf_map_lookup_percpu_elem(map, key, cpu) }.cast::<StreamCounters>();
        if value.is_null() {
            break;
        }
        // SAFETY: non-null, points to a StreamCounters owned by the map.
        let seen = unsafe { (*value).last_seen_ns };
        if seen != 0 && now.wrapping_sub(seen) < interval_ns {
            return true;
        }
    }
    false
}
