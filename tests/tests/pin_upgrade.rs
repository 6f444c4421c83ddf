//! An upgrade that changes a map's layout (the stream entry grew from 120 to 128 bytes when next
//! hops moved into it): the new daemon must not fail to load on the old pins. Maps of another
//! layout are unpinned and made fresh (the daemon then re-installs its calls from the state);
//! maps of the same layout are kept.

use std::{ffi::CString, os::unix::ffi::OsStrExt as _, path::Path};

use aya::maps::MapInfo;
use relay_common::{
    config::RelayConfig,
    names,
    stream::{StreamCounters, StreamEntry},
};
use relay_tests::netns::Bpffs;

/// A hash map of the given sizes, pinned at `path`, made with the raw bpf(2) calls (as an
/// earlier build's loader would have left it).
fn pin_hash_map(path: &Path, key_size: u32, value_size: u32) {
    // union bpf_attr, BPF_MAP_CREATE: map_type, key_size, value_size, max_entries, map_flags.
    let mut attr = [0u8; 128];
    for (i, v) in [1u32, key_size, value_size, 64, 0].into_iter().enumerate() {
        attr[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }
    // SAFETY: bpf(2) reads `attr.len()` bytes of a buffer we own.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_ptr(), attr.len()) };
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    let cpath = CString::new(path.as_os_str().as_bytes()).unwrap();
    // BPF_OBJ_PIN: pathname (u64 pointer), bpf_fd (u32).
    let mut attr = [0u8; 128];
    attr[..8].copy_from_slice(&(cpath.as_ptr() as u64).to_ne_bytes());
    attr[8..12].copy_from_slice(&u32::try_from(fd).unwrap().to_ne_bytes());
    // SAFETY: as above; cpath outlives the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, 6, attr.as_ptr(), attr.len()) };
    assert_eq!(r, 0, "BPF_OBJ_PIN: {}", std::io::Error::last_os_error());
    // SAFETY: our own descriptor; the pin keeps the map.
    unsafe { libc::close(fd as i32) };
}

#[test]
fn pinned_maps_of_another_layout_are_replaced_and_the_rest_kept() {
    if !relay_tests::privileged("pinned_maps_of_another_layout_are_replaced_and_the_rest_kept") {
        return;
    }
    let bpffs = Bpffs::new(&relay_tests::unique_prefix()).unwrap();
    let dir = bpffs.path().join("relay");
    std::fs::create_dir_all(&dir).unwrap();
    // The stream table of the earlier layout.
    pin_hash_map(&dir.join(names::STREAMS_MAP), 20, 120);
    let counters = size_of::<StreamCounters>() as u32;
    let streams = size_of::<StreamEntry>() as u32;
    assert_ne!(
        streams, 120,
        "the test needs a layout change to be meaningful"
    );
    let config = RelayConfig {
        port_min: 30_000,
        port_max: 30_100,
        flags: 0,
    };
    let relay = relay_ctl::pins::load(&config, &dir, 1024).expect("load over an old-layout pin");
    let new = MapInfo::from_pin(dir.join(names::STREAMS_MAP)).unwrap();
    assert_eq!((new.key_size(), new.value_size()), (20, streams));
    let kept = MapInfo::from_pin(dir.join(names::STREAM_COUNTERS_MAP)).unwrap();
    assert_eq!(kept.value_size(), counters);
    drop(relay);
    // A second load over today's pins keeps them (same map ids).
    let id = |n: &str| MapInfo::from_pin(dir.join(n)).unwrap().id();
    let before = (id(names::STREAMS_MAP), id(names::STREAM_COUNTERS_MAP));
    assert!(relay_ctl::pins::unpin_incompatible(&dir).is_empty());
    let relay = relay_ctl::pins::load(&config, &dir, 1024).unwrap();
    assert_eq!(
        (id(names::STREAMS_MAP), id(names::STREAM_COUNTERS_MAP)),
        before
    );
    drop(relay);
    relay_ctl::pins::detach_all(&dir).unwrap();
}
