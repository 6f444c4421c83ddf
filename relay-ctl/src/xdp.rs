//! Loading, attaching and reading the relay's programs (XDP, and its TC twin for virtual devices).

use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Map, MapData, PerCpuArray},
    programs::{
        SchedClassifier, TcAttachType, Xdp, XdpMode, tc::SchedClassifierLinkId, xdp::XdpLinkId,
    },
};
use relay_common::{
    config::{CONFIG_SYMBOL, RelayConfig},
    names,
    stats::{Event, Reason, StatEntry},
    stream::{NextHop, StreamCounters, StreamEntry, StreamKey},
};

use crate::engine::FastPathError;

/// The program object, built by build.rs from relay-ebpf.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/relay"));

/// Default bpffs directory under which the daemon pins its maps.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/xdp-relay";

#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("loading the XDP object failed (are you root, is bpffs mounted?): {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {0:?} missing from the object")]
    MissingProgram(&'static str),
    #[error("map {0:?} missing from the object")]
    MissingMap(&'static str),
    #[error("program error: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("devmap: {0}")]
    Devmap(String),
    #[error("counting CPUs: {0}")]
    Cpus(std::io::Error),
    #[error("map error: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("pinning {path} failed: {source}")]
    Pin {
        path: PathBuf,
        source: aya::pin::PinError,
    },
    #[error("creating pin directory {path} failed (is bpffs mounted at /sys/fs/bpf?): {source}")]
    PinDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{0} is not on a bpffs: mount one (`mount -t bpf bpf DIR`) or use a path under /sys/fs/bpf"
    )]
    NotBpffs(PathBuf),
    #[error("attaching TC (clsact ingress) to {iface} failed: {source}")]
    AttachTc {
        iface: String,
        source: Box<aya::programs::ProgramError>,
    },
    #[error(
        "attaching to {iface} failed in native and in generic mode: native: {native}; generic: {generic}"
    )]
    Attach {
        iface: String,
        native: Box<aya::programs::ProgramError>,
        generic: Box<aya::programs::ProgramError>,
    },
}

/// Which hook (and XDP mode) an attach ended up in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    Native,
    Generic,
    /// TC clsact ingress (TCX link where the kernel has it).
    Tc,
}

/// A loaded (not yet attached) relay program.
pub struct Relay {
    pub ebpf: Ebpf,
}

impl Relay {
    /// Loads the object with `config` as its read-only configuration and loads the program
    /// into the kernel (the verifier runs here).
    pub fn load(config: &RelayConfig) -> Result<Relay, XdpError> {
        Relay::load_with(&mut EbpfLoader::new(), config)
    }

    /// Like [`Relay::load`], with a loader the caller has prepared (map pin paths).
    pub fn load_with<'a>(
        loader: &mut EbpfLoader<'a>,
        config: &'a RelayConfig,
    ) -> Result<Relay, XdpError> {
        let mut ebpf = loader
            .override_global(CONFIG_SYMBOL, config, true)
            .load(OBJECT)?;
        program_mut(&mut ebpf)?.load()?;
        Ok(Relay { ebpf })
    }

    pub fn program(&mut self) -> Result<&mut Xdp, XdpError> {
        program_mut(&mut self.ebpf)
    }

    /// The TC entry point, loaded (verified) on first use: a daemon with only NICs never
    /// loads it.
    pub fn tc_program(&mut self) -> Result<&mut SchedClassifier, XdpError> {
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(names::TC_PROGRAM)
            .ok_or(XdpError::MissingProgram(names::TC_PROGRAM))?
            .try_into()?;
        if prog.fd().is_err() {
            prog.load()?;
        }
        Ok(prog)
    }

    /// Attaches the TC program to `iface`'s ingress: a TCX link on kernels that have it (6.6+),
    /// a clsact filter through netlink before.
    pub fn attach_tc(&mut self, iface: &str) -> Result<SchedClassifierLinkId, XdpError> {
        // Needed for the netlink attach on older kernels; harmless (EEXIST) otherwise.
        let _ = aya::programs::tc::qdisc_add_clsact(iface);
        self.tc_program()?
            .attach(iface, TcAttachType::Ingress)
            .map_err(|e| XdpError::AttachTc {
                iface: iface.to_owned(),
                source: Box::new(e),
            })
    }

    /// Attaches in native mode only (`--datapath auto` falls back to TC, not generic XDP).
    pub fn attach_native(&mut self, iface: &str) -> Result<XdpLinkId, aya::programs::ProgramError> {
        self.program()
            .map_err(|_| aya::programs::ProgramError::NotLoaded)?
            .attach(iface, XdpMode::Driver)
    }

    /// Attaches in native mode, falling back to generic (skb) mode.
    pub fn attach(&mut self, iface: &str) -> Result<(XdpLinkId, AttachMode), XdpError> {
        let prog = self.program()?;
        match prog.attach(iface, XdpMode::Driver) {
            Ok(id) => Ok((id, AttachMode::Native)),
            Err(native) => match prog.attach(iface, XdpMode::Skb) {
                Ok(id) => {
                    tracing::warn!(%iface, error = %native, "native XDP attach failed; using generic mode (slower)");
                    Ok((id, AttachMode::Generic))
                }
                Err(generic) => Err(XdpError::Attach {
                    iface: iface.to_owned(),
                    native: Box::new(native),
                    generic: Box::new(generic),
                }),
            },
        }
    }

    pub fn events_map(&self) -> Result<PerCpuArray<&MapData, u64>, XdpError> {
        let map = self
            .ebpf
            .map(names::EVENTS_MAP)
            .ok_or(XdpError::MissingMap(names::EVENTS_MAP))?;
        Ok(PerCpuArray::try_from(map)?)
    }

    /// Writes slot `slot` of the next-hop array (a zero `ifindex`: the FIB decides).
    pub fn set_next_hop(&mut self, slot: u32, hop: NextHop) -> Result<(), XdpError> {
        let map = self
            .ebpf
            .map_mut(names::NEXT_HOPS_MAP)
            .ok_or(XdpError::MissingMap(names::NEXT_HOPS_MAP))?;
        let mut arr: aya::maps::Array<&mut MapData, NextHop> = aya::maps::Array::try_from(map)?;
        Ok(arr.set(slot, hop, 0)?)
    }

    /// Slot `slot` of the next-hop array.
    pub fn next_hop(&self, slot: u32) -> Result<NextHop, XdpError> {
        let map = self
            .ebpf
            .map(names::NEXT_HOPS_MAP)
            .ok_or(XdpError::MissingMap(names::NEXT_HOPS_MAP))?;
        let arr: aya::maps::Array<&MapData, NextHop> = aya::maps::Array::try_from(map)?;
        Ok(arr.get(&slot, 0)?)
    }

    pub fn stats_map(&self) -> Result<PerCpuArray<&MapData, StatEntry>, XdpError> {
        let map = self
            .ebpf
            .map(names::STATS_MAP)
            .ok_or(XdpError::MissingMap(names::STATS_MAP))?;
        Ok(PerCpuArray::try_from(map)?)
    }
}

fn program_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp, XdpError> {
    let prog = ebpf
        .program_mut(names::PROGRAM)
        .ok_or(XdpError::MissingProgram(names::PROGRAM))?;
    Ok(prog.try_into()?)
}

/// Counters summed over CPUs, one per [`Reason`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals(pub Vec<(Reason, StatEntry)>);

impl Totals {
    pub fn get(&self, reason: Reason) -> StatEntry {
        self.0
            .iter()
            .find(|(r, _)| *r == reason)
            .map(|(_, e)| *e)
            .unwrap_or_default()
    }

    pub fn packets(&self) -> u64 {
        self.0.iter().map(|(_, e)| e.packets).sum()
    }
}

/// Sums the per-CPU stats array.
pub fn read_totals<T: std::borrow::Borrow<MapData>>(
    map: &PerCpuArray<T, StatEntry>,
) -> Result<Totals, XdpError> {
    let mut out = Vec::with_capacity(Reason::COUNT as usize);
    for reason in Reason::ALL {
        let per_cpu = map.get(&(reason as u32), 0)?;
        let sum = per_cpu
            .iter()
            .fold(StatEntry::default(), |acc, e| StatEntry {
                packets: acc.packets + e.packets,
                bytes: acc.bytes + e.bytes,
            });
        out.push((reason, sum));
    }
    Ok(Totals(out))
}

/// The per-CPU event counters ([`Event`]) summed over CPUs, in [`Event::ALL`] order.
pub fn read_events<T: std::borrow::Borrow<MapData>>(
    map: &PerCpuArray<T, u64>,
) -> Result<Vec<(Event, u64)>, XdpError> {
    let mut out = Vec::with_capacity(Event::COUNT as usize);
    for e in Event::ALL {
        out.push((e, map.get(&(e as u32), 0)?.iter().sum()));
    }
    Ok(out)
}

/// Opens the event counters a running daemon pinned under `dir`.
pub fn open_pinned_events(dir: &Path) -> Result<PerCpuArray<MapData, u64>, XdpError> {
    let data = MapData::from_pin(dir.join(names::EVENTS_MAP))?;
    Ok(PerCpuArray::try_from(Map::PerCpuArray(data))?)
}

/// Opens the stats map a running daemon pinned under `dir`.
pub fn open_pinned_stats(dir: &Path) -> Result<PerCpuArray<MapData, StatEntry>, XdpError> {
    let data = MapData::from_pin(dir.join(names::STATS_MAP))?;
    Ok(PerCpuArray::try_from(Map::PerCpuArray(data))?)
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const DEFAULT_BPFFS: &str = "/sys/fs/bpf";

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into a zeroed struct we own; `c` is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}

/// Makes sure `pin_dir` can live on a bpffs: if it is under /sys/fs/bpf and nothing is mounted
/// there (some minimal hosts), mounts bpffs there, as systemd does on most distributions.
pub fn ensure_bpffs(pin_dir: &Path) -> Result<(), XdpError> {
    let existing = pin_dir.ancestors().find(|p| p.exists()).unwrap_or(pin_dir);
    if is_bpffs(existing) {
        return Ok(());
    }
    let root = Path::new(DEFAULT_BPFFS);
    if !pin_dir.starts_with(root) {
        return Err(XdpError::NotBpffs(pin_dir.to_owned()));
    }
    std::fs::create_dir_all(root).map_err(|source| XdpError::PinDir {
        path: root.to_owned(),
        source,
    })?;
    // SAFETY: constant, NUL-terminated arguments.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            c"/sys/fs/bpf".as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(XdpError::PinDir {
            path: root.to_owned(),
            source: std::io::Error::last_os_error(),
        });
    }
    tracing::info!("mounted bpffs at {DEFAULT_BPFFS}");
    Ok(())
}

/// Stream table and counters of a loaded program.
impl Relay {
    /// Entries the stream table holds, as it was created (a re-opened pinned table keeps its
    /// size); the counter array has as many slots.
    pub fn stream_capacity(&self) -> Result<u32, XdpError> {
        match self.ebpf.map(names::STREAMS_MAP) {
            Some(aya::maps::Map::HashMap(data)) => Ok(data.info()?.max_entries()),
            _ => Err(XdpError::MissingMap(names::STREAMS_MAP)),
        }
    }

    fn streams_map(
        &mut self,
    ) -> Result<aya::maps::HashMap<&mut MapData, StreamKey, StreamEntry>, XdpError> {
        let map = self
            .ebpf
            .map_mut(names::STREAMS_MAP)
            .ok_or(XdpError::MissingMap(names::STREAMS_MAP))?;
        Ok(aya::maps::HashMap::try_from(map)?)
    }

    /// Installs or replaces the entry for relay endpoint `key` (one syscall: atomic per entry).
    pub fn insert_stream(&mut self, key: StreamKey, entry: StreamEntry) -> Result<(), XdpError> {
        Ok(self.streams_map()?.insert(key, entry, 0)?)
    }

    /// Removes the entry for `key`; a missing entry is not an error.
    pub fn remove_stream(&mut self, key: &StreamKey) -> Result<(), XdpError> {
        match self.streams_map()?.remove(key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            // The kernel says ENOENT for a key that is not there: already removed.
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Every installed entry.
    pub fn streams(&mut self) -> Result<Vec<(StreamKey, StreamEntry)>, XdpError> {
        Ok(self.streams_map()?.iter().collect::<Result<Vec<_>, _>>()?)
    }

    /// Counters of `slot`, summed over CPUs (`last_seen_ns`: the latest).
    pub fn stream_counters(&self, slot: u32) -> Result<StreamCounters, XdpError> {
        let map = self
            .ebpf
            .map(names::STREAM_COUNTERS_MAP)
            .ok_or(XdpError::MissingMap(names::STREAM_COUNTERS_MAP))?;
        let arr: PerCpuArray<&MapData, StreamCounters> = PerCpuArray::try_from(map)?;
        let per_cpu = arr.get(&slot, 0)?;
        Ok(per_cpu
            .iter()
            .fold(StreamCounters::default(), |a, c| StreamCounters {
                packets: a.packets + c.packets,
                bytes: a.bytes + c.bytes,
                last_seen_ns: a.last_seen_ns.max(c.last_seen_ns),
            }))
    }

    /// Zeroes a counter slot before it is given to a new stream.
    pub fn reset_stream_counters(&mut self, slot: u32) -> Result<(), XdpError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| XdpError::Cpus(e))?;
        let map = self
            .ebpf
            .map_mut(names::STREAM_COUNTERS_MAP)
            .ok_or(XdpError::MissingMap(names::STREAM_COUNTERS_MAP))?;
        let mut arr: PerCpuArray<&mut MapData, StreamCounters> = PerCpuArray::try_from(map)?;
        let zero = aya::maps::PerCpuValues::try_from(vec![StreamCounters::default(); cpus])
            .map_err(XdpError::Cpus)?;
        Ok(arr.set(slot, zero, 0)?)
    }

    /// Lets the program redirect to `ifindex` (every attached device is registered).
    pub fn add_egress(&mut self, ifindex: u32) -> Result<(), XdpError> {
        let map = self
            .ebpf
            .map_mut(names::DEVMAP)
            .ok_or(XdpError::MissingMap(names::DEVMAP))?;
        let mut dev: aya::maps::DevMapHash<&mut MapData> = aya::maps::DevMapHash::try_from(map)?;
        dev.insert(ifindex, ifindex, None, 0)
            .map_err(|e| XdpError::Devmap(e.to_string()))
    }
}

impl crate::engine::FastPath for Relay {
    fn insert(&mut self, key: StreamKey, entry: StreamEntry) -> Result<(), FastPathError> {
        Ok(self.insert_stream(key, entry)?)
    }

    fn remove(&mut self, key: &StreamKey) -> Result<(), FastPathError> {
        Ok(self.remove_stream(key)?)
    }

    fn counters(&self, slot: u32) -> Result<StreamCounters, FastPathError> {
        Ok(self.stream_counters(slot)?)
    }

    fn reset_counters(&mut self, slot: u32) -> Result<(), FastPathError> {
        Ok(self.reset_stream_counters(slot)?)
    }

    fn verdict_totals(&self) -> Result<Totals, FastPathError> {
        Ok(read_totals(&self.stats_map()?)?)
    }

    fn capacity(&self) -> Result<u32, FastPathError> {
        Ok(self.stream_capacity()?)
    }

    fn keys(&mut self) -> Result<Vec<StreamKey>, FastPathError> {
        Ok(self.streams()?.into_iter().map(|(k, _)| k).collect())
    }

    fn set_next_hop(&mut self, slot: u32, hop: NextHop) -> Result<(), FastPathError> {
        Ok(Relay::set_next_hop(self, slot, hop)?)
    }

    fn events(&self) -> Result<Vec<(Event, u64)>, FastPathError> {
        Ok(read_events(&self.events_map()?)?)
    }
}

/// Takes `ifindex` out of the redirect table a daemon pinned under `pin_dir` (a device that
/// went away); a missing entry is not an error.
pub fn remove_pinned_egress(pin_dir: &Path, ifindex: u32) -> Result<(), XdpError> {
    let data = MapData::from_pin(pin_dir.join(names::DEVMAP))?;
    let mut dev: aya::maps::DevMapHash<MapData> =
        aya::maps::DevMapHash::try_from(Map::DevMapHash(data))?;
    match dev.remove(ifindex) {
        Ok(()) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// CLOCK_MONOTONIC now, in the time base of `StreamCounters::last_seen_ns` (which, coarse, is
/// never ahead of it).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into ts.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The ifindex of a device in this network namespace.
pub fn ifindex(dev: &str) -> Option<u32> {
    let c = std::ffi::CString::new(dev).ok()?;
    // SAFETY: valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// The kernel's ephemeral port range (`net.ipv4.ip_local_port_range`) when it overlaps
/// `min..=max`: any program's outgoing socket may then take a relay port before the daemon.
pub fn ephemeral_overlap(min: u16, max: u16) -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text
        .split_whitespace()
        .filter_map(|v| v.parse::<u16>().ok());
    let (lo, hi) = (it.next()?, it.next()?);
    (min <= hi && lo <= max).then_some((lo, hi))
}

/// Whether IPv4 forwarding is on for `dev`, which bpf_fib_lookup requires.
pub fn forwarding_enabled(dev: &str) -> bool {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{dev}/forwarding"))
        .is_ok_and(|v| v.trim() == "1")
}
