//! Keeping the fast path alive across daemon restarts: maps are created pinned (or re-opened from
//! their pins) and each link (XDP, or TCX for the TC program) is pinned, so the program stays
//! attached and keeps forwarding while no daemon runs. A new daemon swaps its program into the
//! pinned link atomically; a device that changes hook drops the old link first.

use std::path::{Path, PathBuf};

use aya::{
    EbpfLoader,
    programs::{
        links::{FdLink, LinkError, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
    },
};
use relay_common::{config::RelayConfig, names};

use crate::xdp::{AttachMode, Relay, XdpError};

#[derive(Debug, thiserror::Error)]
pub enum PinsError {
    #[error(transparent)]
    Xdp(#[from] XdpError),
    #[error("pinned link {path}: {source}")]
    Link { path: PathBuf, source: LinkError },
    #[error("pinning link {path}: {source}")]
    Pin {
        path: PathBuf,
        source: aya::pin::PinError,
    },
    #[error("program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Maps that outlive the daemon. Global-data sections (.rodata) are never pinned.
pub const PERSISTENT_MAPS: &[&str] = &[
    names::STATS_MAP,
    names::STREAMS_MAP,
    names::STREAM_COUNTERS_MAP,
    names::DEVMAP,
    names::EVENTS_MAP,
];

/// How an interface came to run this daemon's program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    /// Fresh attach, link pinned.
    New(AttachMode),
    /// The program replaced the one in a link pinned by an earlier daemon.
    Replaced,
    /// Attached through netlink (no bpf_link support): works, but detaches when we exit.
    Unpinned(AttachMode),
}

/// Pin of a device's XDP link.
fn link_path(pin_dir: &Path, iface: &str) -> PathBuf {
    pin_dir.join(format!("{XDP_LINK_PREFIX}{iface}"))
}

/// Pin of a device's TC (TCX) link.
fn tc_link_path(pin_dir: &Path, iface: &str) -> PathBuf {
    pin_dir.join(format!("{TC_LINK_PREFIX}{iface}"))
}

pub const XDP_LINK_PREFIX: &str = "link_";
pub const TC_LINK_PREFIX: &str = "tclink_";

/// Devices and the hook their pinned link runs (`xdp` or `tc`), from the pin names: what
/// `relay-ctl stats` shows when no daemon answers.
pub fn pinned_links(pin_dir: &Path) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(pin_dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(dev) = name.strip_prefix(XDP_LINK_PREFIX) {
            out.push((dev.to_owned(), "xdp"));
        } else if let Some(dev) = name.strip_prefix(TC_LINK_PREFIX) {
            out.push((dev.to_owned(), "tc"));
        }
    }
    out.sort();
    out
}

/// Detaches and unpins the link pinned at `path`, if any.
fn drop_pinned(path: &Path) -> Result<(), PinsError> {
    if !path.exists() {
        return Ok(());
    }
    let pinned = PinnedLink::from_pin(path).map_err(|source| PinsError::Link {
        path: path.to_owned(),
        source,
    })?;
    // Unpinning hands back the last fd; dropping it detaches the program.
    drop(pinned.unpin().map_err(|source| PinsError::Io {
        path: path.to_owned(),
        source,
    })?);
    Ok(())
}

/// Loads the program with every persistent map re-opened from `pin_dir` when pinned there, or
/// created and pinned there otherwise.
/// `max_streams` sizes the stream table and its counters when they are created.
pub fn load(config: &RelayConfig, pin_dir: &Path, max_streams: u32) -> Result<Relay, PinsError> {
    std::fs::create_dir_all(pin_dir).map_err(|source| PinsError::Io {
        path: pin_dir.to_owned(),
        source,
    })?;
    unpin_incompatible(pin_dir);
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries(names::STREAMS_MAP, max_streams)
        .map_max_entries(names::STREAM_COUNTERS_MAP, max_streams);
    for name in PERSISTENT_MAPS {
        loader.map_pin_path(name, pin_dir.join(name));
    }
    Ok(Relay::load_with(&mut loader, config)?)
}

/// Key size, value size and (for the fixed tables) entries this build's program expects of a
/// persistent map.
fn expected_layout(name: &str) -> Option<(u32, u32, Option<u32>)> {
    use relay_common::{
        stats::{Event, Reason, StatEntry},
        stream::{StreamCounters, StreamEntry, StreamKey},
    };
    let size = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    Some(match name {
        names::STATS_MAP => (4, size(size_of::<StatEntry>()), Some(Reason::COUNT)),
        names::STREAMS_MAP => (
            size(size_of::<StreamKey>()),
            size(size_of::<StreamEntry>()),
            None,
        ),
        names::STREAM_COUNTERS_MAP => (4, size(size_of::<StreamCounters>()), None),
        names::EVENTS_MAP => (4, 8, Some(Event::COUNT)),
        _ => return None,
    })
}

/// Unpins the persistent maps an earlier build left with another layout (an upgrade that
/// changed an entry): the program then gets fresh maps, the running one keeps its own until
/// its link is replaced, and the daemon re-installs every call from its saved state. Returns
/// the maps unpinned.
pub fn unpin_incompatible(pin_dir: &Path) -> Vec<&'static str> {
    let mut unpinned = Vec::new();
    for &name in PERSISTENT_MAPS {
        let Some((key, value, entries)) = expected_layout(name) else {
            continue;
        };
        let path = pin_dir.join(name);
        // Absent (a first start) or unreadable: the loader says what is wrong, if anything.
        let Ok(info) = aya::maps::MapInfo::from_pin(&path) else {
            continue;
        };
        let found = (info.key_size(), info.value_size(), info.max_entries());
        if found.0 == key && found.1 == value && entries.is_none_or(|n| n == found.2) {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::warn!(map = name, ?found, expected = ?(key, value, entries), "pinned map from an earlier build has another layout: replaced by a fresh one; calls are re-installed from the saved state");
                unpinned.push(name);
            }
            Err(e) => {
                tracing::warn!(map = name, path = %path.display(), error = %e, "cannot unpin a map of another layout")
            }
        }
    }
    unpinned
}

/// Attaches XDP to `iface` (native, or generic as fallback), taking over a link an earlier
/// daemon pinned, or pinning a new one.
pub fn attach(relay: &mut Relay, iface: &str, pin_dir: &Path) -> Result<Attached, PinsError> {
    attach_xdp(relay, iface, pin_dir, true)
}

/// Attaches XDP to `iface`; without `allow_generic` only native mode is tried (and its
/// error returned, with nothing changed). A TC link an earlier daemon pinned for this device
/// is dropped first.
pub fn attach_xdp(
    relay: &mut Relay,
    iface: &str,
    pin_dir: &Path,
    allow_generic: bool,
) -> Result<Attached, PinsError> {
    let path = link_path(pin_dir, iface);
    if path.exists() {
        let pinned = PinnedLink::from_pin(&path).map_err(|source| PinsError::Link {
            path: path.clone(),
            source,
        })?;
        let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|source| PinsError::Link {
            path: path.clone(),
            source,
        })?;
        relay.program()?.attach_to_link(link)?;
        return Ok(Attached::Replaced);
    }
    let (id, mode) = if allow_generic {
        relay.attach(iface)?
    } else {
        (relay.attach_native(iface)?, AttachMode::Native)
    };
    drop_pinned(&tc_link_path(pin_dir, iface))?;
    let link = relay.program()?.take_link(id)?;
    match FdLink::try_from(link) {
        Ok(fd_link) => {
            // Dropping the returned handle closes our fd; the pin keeps the link.
            fd_link
                .pin(&path)
                .map_err(|source| PinsError::Pin { path, source })?;
            Ok(Attached::New(mode))
        }
        Err(_) => {
            tracing::warn!(%iface, "XDP attached through netlink: it cannot be pinned and detaches when the daemon exits");
            Ok(Attached::Unpinned(mode))
        }
    }
}

/// Attaches the TC program to `iface`'s ingress, taking over a TCX link an earlier daemon
/// pinned, or pinning a new one. An XDP link pinned for this device is dropped first (XDP runs
/// before TC and would take the frames).
pub fn attach_tc(relay: &mut Relay, iface: &str, pin_dir: &Path) -> Result<Attached, PinsError> {
    let path = tc_link_path(pin_dir, iface);
    drop_pinned(&link_path(pin_dir, iface))?;
    if path.exists() {
        let pinned = PinnedLink::from_pin(&path).map_err(|source| PinsError::Link {
            path: path.clone(),
            source,
        })?;
        let link = SchedClassifierLink::try_from(FdLink::from(pinned)).map_err(|source| {
            PinsError::Link {
                path: path.clone(),
                source,
            }
        })?;
        relay.tc_program()?.attach_to_link(link)?;
        return Ok(Attached::Replaced);
    }
    let id = relay.attach_tc(iface)?;
    let link = relay.tc_program()?.take_link(id)?;
    match FdLink::try_from(link) {
        Ok(fd_link) => {
            fd_link
                .pin(&path)
                .map_err(|source| PinsError::Pin { path, source })?;
            Ok(Attached::New(AttachMode::Tc))
        }
        Err(_) => {
            tracing::warn!(%iface, "TC attached through netlink (no TCX on this kernel): it cannot be pinned and detaches when the daemon exits");
            Ok(Attached::Unpinned(AttachMode::Tc))
        }
    }
}

/// Detaches every pinned link and removes every pin under `pin_dir` (`--detach`).
pub fn detach_all(pin_dir: &Path) -> Result<(), PinsError> {
    let entries = match std::fs::read_dir(pin_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(PinsError::Io {
                path: pin_dir.to_owned(),
                source,
            });
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(XDP_LINK_PREFIX) || name.starts_with(TC_LINK_PREFIX) {
            drop_pinned(&path)?;
        } else {
            std::fs::remove_file(&path).map_err(|source| PinsError::Io { path, source })?;
        }
    }
    std::fs::remove_dir(pin_dir).map_err(|source| PinsError::Io {
        path: pin_dir.to_owned(),
        source,
    })
}
