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
    pub const PROGRAM: &str = "relay";
    pub const STATS_MAP: &str = "RELAY_STATS";
    pub const STREAMS_MAP: &str = "RELAY_STREAMS";
    pub const STREAM_COUNTERS_MAP: &str = "RELAY_STREAM_COUNTERS";
    pub const DEVMAP: &str = "RELAY_DEVMAP";
}
