//! Keeping the fast path alive across daemon restarts: maps are created pinned (or re-opened from
//! their pins) and each XDP link is pinned, so the program stays attached and keeps forwarding
//! while no daemon runs. A new daemon swaps its program into the pinned link atomically.

use std::path::{Path, PathBuf};

use aya::{
    EbpfLoader,
    programs::{
        links::{FdLink, LinkError, PinnedLink},
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

fn link_path(pin_dir: &Path, iface: &str) -> PathBuf {
    pin_dir.join(format!("link_{iface}"))
}

/// Loads the program with every persistent map re-opened from `pin_dir` when pinned there, or
/// created and pinned there otherwise.
/// `max_streams` sizes the stream table and its counters when they are created.
pub fn load(config: &RelayConfig, pin_dir: &Path, max_streams: u32) -> Result<Relay, PinsError> {
    std::fs::create_dir_all(pin_dir).map_err(|source| PinsError::Io {
        path: pin_dir.to_owned(),
        source,
    })?;
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries(names::STREAMS_MAP, max_streams)
        .map_max_entries(names::STREAM_COUNTERS_MAP, max_streams);
    for name in PERSISTENT_MAPS {
        loader.map_pin_path(name, pin_dir.join(name));
    }
    Ok(Relay::load_with(&mut loader, config)?)
}

/// Attaches to `iface`, taking over a link an earlier daemon pinned, or pinning a new one.
pub fn attach(relay: &mut Relay, iface: &str, pin_dir: &Path) -> Result<Attached, PinsError> {
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
    let (id, mode) = relay.attach(iface)?;
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
        let is_link = entry.file_name().to_string_lossy().starts_with("link_");
        if is_link {
            let pinned = PinnedLink::from_pin(&path).map_err(|source| PinsError::Link {
                path: path.clone(),
                source,
            })?;
            // Unpinning hands back the last fd; dropping it detaches the program.
            drop(
                pinned
                    .unpin()
                    .map_err(|source| PinsError::Io { path, source })?,
            );
        } else {
            std::fs::remove_file(&path).map_err(|source| PinsError::Io { path, source })?;
        }
    }
    std::fs::remove_dir(pin_dir).map_err(|source| PinsError::Io {
        path: pin_dir.to_owned(),
        source,
    })
}
