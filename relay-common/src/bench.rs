//! Types of the benchmark's eBPF programs (`relay-ebpf`'s `bench` object): the in-kernel packet
//! generator run with BPF_PROG_TEST_RUN live frames, the floor program and the sink.

/// Symbol of the [`GenConfig`] global in the bench object.
pub const GEN_CONFIG_SYMBOL: &str = "GEN_CONFIG";
/// Per-CPU state of the generator: slot 0 the packet sequence, slot 1 when the next packet
/// is due, slots 2 and 3 when the first and the last packet of a trial were sent
/// (CLOCK_MONOTONIC ns; userspace zeroes 2 and 3 before a trial).
pub const GEN_SEQ_MAP: &str = "GEN_SEQ";
/// What a rate search changes between trials without reloading the generator: slot 0 the
/// interval between packets in ns (0: no pacing); slots 1 and 2 a destination address (the
/// four address bytes as a native u32) and port (host order) replacing `GenConfig`'s base,
/// when slot 1 is not zero.
pub const GEN_CTRL_MAP: &str = "GEN_CTRL";
pub const CTRL_INTERVAL: u32 = 0;
pub const CTRL_ADDR: u32 = 1;
pub const CTRL_PORT: u32 = 2;
/// Longest a packet waits for its slot, in `bpf_ktime_get_ns` calls (tens of microseconds):
/// bounds the spin, so the lowest paced rate is a few ten thousand packets per second.
pub const GEN_MAX_SPIN: u32 = 4096;
/// Per-CPU frames and bytes the sink counted and dropped (one [`StatEntry`] slot).
///
/// [`StatEntry`]: crate::stats::StatEntry
pub const SINK_STATS_MAP: &str = "SINK_STATS";
/// The floor program's egress: a devmap whose slot 0 is the device it redirects to.
pub const FLOOR_DEVMAP: &str = "FLOOR_DEVMAP";
pub const GEN_PROGRAM: &str = "gen";
pub const FLOOR_PROGRAM: &str = "floor";
/// The floor plus one stream-table lookup ([`LOOKUP_STREAMS_MAP`]).
pub const LOOKUP_FLOOR_PROGRAM: &str = "lookup_floor";
/// The lookup floor's stream table (the relay's key and value types).
pub const LOOKUP_STREAMS_MAP: &str = "LOOKUP_STREAMS";
pub const SINK_PROGRAM: &str = "sink";
/// Passes every frame: on the relay's veth it makes the kernel run NAPI for frames the
/// generator's XDP_TX queued, so the TC hook under test sees them.
pub const PASS_PROGRAM: &str = "pass";

/// Bytes of the frame the generator rewrites each time: Ethernet, IPv4 without options, UDP
/// and the 12-byte RTP header. The payload after it is never touched.
pub const GEN_HEADER: usize = 54;
/// Offsets inside [`GEN_HEADER`] of the fields that vary per packet.
pub const OFF_IP_CHECK: usize = 24;
pub const OFF_IP_DST: usize = 30;
pub const OFF_UDP_DPORT: usize = 36;
pub const OFF_UDP_CHECK: usize = 40;
pub const OFF_RTP_SEQ: usize = 44;
pub const OFF_RTP_TS: usize = 46;
pub const OFF_RTP_SSRC: usize = 50;
/// The first 8 payload bytes: the generator's send time (`bpf_ktime_get_ns`, CLOCK_MONOTONIC,
/// native byte order), which the sink subtracts from its own reading of the same clock.
pub const OFF_STAMP: usize = 54;
/// Per-CPU histogram of one-way latency the sink measured, [`LAT_BUCKETS`] slots
/// ([`lat_bucket`] gives a latency's slot, [`lat_bucket_ns`] a slot's upper edge).
pub const SINK_LAT_MAP: &str = "SINK_LAT";
pub const LAT_BUCKETS: u32 = 4096;
/// Fine buckets (250 ns wide) up to this latency; 64 us wide above.
const LAT_FINE_NS: u64 = 500_000;
const LAT_FINE_W: u64 = 250;
const LAT_COARSE_W: u64 = 64_000;

/// The histogram slot of a latency.
pub const fn lat_bucket(ns: u64) -> u32 {
    if ns < LAT_FINE_NS {
        (ns / LAT_FINE_W) as u32
    } else {
        let fine = (LAT_FINE_NS / LAT_FINE_W) as u32;
        let c = (ns - LAT_FINE_NS) / LAT_COARSE_W;
        let max = (LAT_BUCKETS - 1 - fine) as u64;
        fine + if c > max { max as u32 } else { c as u32 }
    }
}

/// The upper edge (ns) of a histogram slot.
pub const fn lat_bucket_ns(b: u32) -> u64 {
    let fine = (LAT_FINE_NS / LAT_FINE_W) as u32;
    if b < fine {
        (b as u64 + 1) * LAT_FINE_W
    } else {
        LAT_FINE_NS + ((b - fine) as u64 + 1) * LAT_COARSE_W
    }
}

/// Read-only global of the generator. Packet `n` belongs to stream `i = n % streams`, which is
/// sent to address `addr_base + i / ports_per_addr`, port `port_base + i % ports_per_addr`,
/// with RTP sequence `n / streams` (timestamp 160 per packet) and SSRC `i`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenConfig {
    /// The frame's first [`GEN_HEADER`] bytes with every varying field zero.
    pub template: [u8; GEN_HEADER],
    /// Destination port of stream 0, host byte order.
    pub port_base: u16,
    pub streams: u32,
    pub ports_per_addr: u32,
    /// Destination address of stream 0.
    pub addr_base: [u8; 4],
    /// One's-complement sums (RFC 1071, unfolded, native 16-bit words) of the template's IPv4
    /// header and of its UDP pseudo-header + datagram (payload included), varying fields zero.
    pub ip_sum: u32,
    pub udp_sum: u32,
}

const _: () = assert!(core::mem::size_of::<GenConfig>() == 76);

#[cfg(feature = "user")]
// SAFETY: repr(C), byte arrays and integers laid out without implicit padding (size asserted).
unsafe impl aya::Pod for GenConfig {}
