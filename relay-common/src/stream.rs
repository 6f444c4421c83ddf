//! The stream table: one entry per relay endpoint (local address + UDP port) whose media the
//! fast path forwards, and the per-stream counters userspace reads for `show` and timeouts.
//!
//! Addresses are 16 bytes: IPv6 as is, IPv4 in the first 4 bytes with the rest zero. Ports are
//! in network byte order, as they sit in the packet, so the program compares and copies without
//! swapping.

pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// Key of [`STREAMS_MAP`](crate::names::STREAMS_MAP): the relay endpoint a packet arrives on.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub family: u8,
    pub _pad: u8,
    /// Network byte order.
    pub port: u16,
    pub addr: [u8; 16],
}

/// An address and port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Endpoint {
    pub addr: [u8; 16],
    /// Network byte order.
    pub port: u16,
    pub family: u8,
    pub _pad: u8,
}

/// What the program does with a packet from a source other than the expected one.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mismatch {
    Drop = 0,
    /// XDP_PASS to the daemon, which may re-latch (media handover).
    Userspace = 1,
    Forward = 2,
    /// Secure latching: dropped while the latched source has been seen within
    /// `StreamEntry::handover_ds` on any CPU; after that silence (a NAT rebinding) passed to the
    /// daemon, which may move the latch.
    Handover = 3,
}

/// `StreamEntry::flags`: accept any source (nothing latched to compare with).
pub const FLAG_SOURCE_ANY: u8 = 1;
/// `StreamEntry::flags`: the ingress port carries RTP and RTCP (rtcp-mux) and the other leg
/// does not: RTCP (RFC 5761 s.4: second byte 192-223) is rewritten with `rtcp_src`/`rtcp_dst`.
pub const FLAG_RTCP_DEMUX: u8 = 2;
/// `StreamEntry::flags`: set the forwarded packet's IPv4 TOS / IPv6 traffic class to
/// `StreamEntry::tos` (rtpengine's `TOS` option).
pub const FLAG_SET_TOS: u8 = 4;

/// Value of the stream table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamEntry {
    /// The daemon's stream id, for logs and `show`.
    pub stream_id: u64,
    /// Expected source (latched or ICE-nominated peer).
    pub expected: Endpoint,
    /// Rewritten source: the relay endpoint of the other leg.
    pub src: Endpoint,
    /// Rewritten destination: the other leg's peer.
    pub dst: Endpoint,
    pub flags: u8,
    /// A [`Mismatch`] value.
    pub mismatch: u8,
    /// With [`FLAG_SET_TOS`]: the TOS / traffic class byte (DSCP and ECN) of forwarded packets.
    pub tos: u8,
    /// With [`Mismatch::Handover`]: the silence, in tenths of a second, after which another
    /// source may take the latch over.
    pub handover_ds: u8,
    /// Index into [`STREAM_COUNTERS_MAP`](crate::names::STREAM_COUNTERS_MAP).
    pub counter_slot: u32,
    /// Egress device: 0 lets the kernel FIB choose; otherwise the FIB lookup is made as output
    /// through this ifindex (policy for multi-homed hosts), which must be in the devmap.
    pub egress_ifindex: u32,
    /// With [`FLAG_RTCP_DEMUX`]: the rewrite for RTCP (the other leg's RTCP endpoints).
    pub rtcp_src: Endpoint,
    pub rtcp_dst: Endpoint,
    /// Slot in [`NEXT_HOPS_MAP`](crate::names::NEXT_HOPS_MAP) holding the way to `dst`,
    /// resolved by the daemon; 0 (or a slot not resolved now): the kernel FIB decides.
    pub next_hop: u32,
    /// The same for `rtcp_dst` (with [`FLAG_RTCP_DEMUX`]).
    pub rtcp_next_hop: u32,
}

/// Value of the next-hop array: where frames to one destination leave, as the daemon resolved
/// it from the kernel's routes and neighbours. Slot 0 is never used.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NextHop {
    /// Egress device; 0: not resolved (no route the daemon can follow, no neighbour entry
    /// yet): the program makes the FIB lookup instead.
    pub ifindex: u32,
    /// Largest IP packet the egress takes (the route's MTU, else the device's).
    pub mtu: u32,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
}

/// Capacity of the next-hop array: one slot per distinct (destination, egress) in use.
pub const MAX_NEXT_HOPS: u32 = 16_384;

/// Per-CPU, per-stream counters. `last_seen_ns` is `bpf_ktime_get_coarse_ns()`:
/// CLOCK_MONOTONIC_COARSE, at most a tick behind CLOCK_MONOTONIC and ~20 ns cheaper per packet;
/// timeouts and `show` need no finer time.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct StreamCounters {
    pub packets: u64,
    pub bytes: u64,
    pub last_seen_ns: u64,
}

/// Default capacity of the stream table and the counter array (the loader may change it).
pub const MAX_STREAMS: u32 = 65_536;

const _: () = assert!(core::mem::size_of::<StreamKey>() == 20);
const _: () = assert!(core::mem::size_of::<Endpoint>() == 20);
const _: () = assert!(core::mem::size_of::<StreamEntry>() == 128);
const _: () = assert!(core::mem::size_of::<NextHop>() == 20);
const _: () = assert!(core::mem::size_of::<StreamCounters>() == 24);

#[cfg(feature = "user")]
mod user {
    use core::net::{IpAddr, SocketAddr};

    use super::*;

    // SAFETY: repr(C), integer fields and byte arrays, explicit padding, no niches.
    unsafe impl aya::Pod for StreamKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Endpoint {}
    // SAFETY: as above.
    unsafe impl aya::Pod for StreamEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for StreamCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for NextHop {}

    fn addr_bytes(ip: IpAddr) -> (u8, [u8; 16]) {
        let mut a = [0u8; 16];
        match ip {
            IpAddr::V4(v4) => {
                a[..4].copy_from_slice(&v4.octets());
                (FAMILY_V4, a)
            }
            IpAddr::V6(v6) => (FAMILY_V6, v6.octets()),
        }
    }

    impl From<SocketAddr> for StreamKey {
        fn from(s: SocketAddr) -> StreamKey {
            let (family, addr) = addr_bytes(s.ip());
            StreamKey {
                family,
                _pad: 0,
                port: s.port().to_be(),
                addr,
            }
        }
    }

    impl From<SocketAddr> for Endpoint {
        fn from(s: SocketAddr) -> Endpoint {
            let (family, addr) = addr_bytes(s.ip());
            Endpoint {
                addr,
                port: s.port().to_be(),
                family,
                _pad: 0,
            }
        }
    }

    impl StreamKey {
        pub fn socket_addr(&self) -> Option<SocketAddr> {
            Endpoint {
                addr: self.addr,
                port: self.port,
                family: self.family,
                _pad: 0,
            }
            .socket_addr()
        }
    }

    impl Endpoint {
        pub fn socket_addr(&self) -> Option<SocketAddr> {
            let ip = match self.family {
                FAMILY_V4 => IpAddr::from([self.addr[0], self.addr[1], self.addr[2], self.addr[3]]),
                FAMILY_V6 => IpAddr::from(self.addr),
                _ => return None,
            };
            Some(SocketAddr::new(ip, u16::from_be(self.port)))
        }
    }
}
