//! Types shared by the XDP program (`relay-ebpf`) and userspace (`relay-ctl`).
//!
//! Everything here is `#[repr(C)]` with explicit padding and no `bool`, so that the kernel and
//! userspace agree on layouts; `aya::Pod` impls live behind the `user` feature.
#![no_std]

pub mod bench;
pub mod config;
pub mod stats;
pub mod stream;

/// Names of the maps and program in the object file, used by the loader and the tests.
pub mod names {
    /// The XDP entry point.
    pub const PROGRAM: &str = "relay";
    /// The TC (clsact ingress) entry point.
    pub const TC_PROGRAM: &str = "relay_tc";
    pub const STATS_MAP: &str = "RELAY_STATS";
    pub const STREAMS_MAP: &str = "RELAY_STREAMS";
    pub const STREAM_COUNTERS_MAP: &str = "RELAY_STREAM_COUNTERS";
    pub const DEVMAP: &str = "RELAY_DEVMAP";
    pub const NEXT_HOPS_MAP: &str = "RELAY_NEXT_HOPS";
    pub const EVENTS_MAP: &str = "RELAY_EVENTS";
}
