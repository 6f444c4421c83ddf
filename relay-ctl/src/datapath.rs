//! Which hook the fast path runs on, per device: native XDP on NICs that run it, TC (clsact
//! ingress) on veth and other virtual devices, where XDP_TX is not delivered unless the peer
//! runs XDP and a local sender's partial checksum cannot be updated without the skb (see
//! shared/TOOLCHAIN.md). The plan is made and checked before anything is attached; the running
//! state is kept here for `statistics`, `query`, the metrics and the device watch.

use std::{
    path::{Path, PathBuf},
    str::FromStr,
    sync::Mutex,
};

use serde_json::{Value, json};

/// What the operator asked for, per device (`--datapath`, or `--interface DEV:MODE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Choice {
    /// Native XDP on a NIC, TC on a virtual device.
    #[default]
    Auto,
    Xdp,
    Tc,
}

impl Choice {
    pub const ALLOWED: &'static str = "auto, xdp, tc";

    pub fn name(self) -> &'static str {
        match self {
            Choice::Auto => "auto",
            Choice::Xdp => "xdp",
            Choice::Tc => "tc",
        }
    }
}

impl FromStr for Choice {
    type Err = ();
    fn from_str(s: &str) -> Result<Choice, ()> {
        match s {
            "auto" => Ok(Choice::Auto),
            "xdp" => Ok(Choice::Xdp),
            "tc" => Ok(Choice::Tc),
            _ => Err(()),
        }
    }
}

/// The hook a device ends up on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    XdpNative,
    /// Generic (skb) XDP: only when `xdp` was asked for and the driver has no native XDP.
    XdpGeneric,
    Tc,
}

impl Hook {
    /// The label used in logs, `statistics`, `stats` and the metrics.
    pub fn name(self) -> &'static str {
        match self {
            Hook::XdpNative => "xdp",
            Hook::XdpGeneric => "xdp-generic",
            Hook::Tc => "tc",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(
        "device {0:?} does not exist in this network namespace: check `ip link`, and run the daemon in the namespace that owns the device"
    )]
    NoDevice(String),
    #[error(
        "device {dev:?} is not an Ethernet device (link type {link_type}): the fast path parses Ethernet frames; leave it out of --interface (its media then goes through the daemon) or use the Ethernet device under it"
    )]
    NotEthernet { dev: String, link_type: u32 },
    #[error(
        "--interface {spec:?}: unknown datapath {mode:?}; expected DEV or DEV:MODE with MODE one of {}",
        Choice::ALLOWED
    )]
    BadSpec { spec: String, mode: String },
    #[error("device {0:?} is listed twice in --interface")]
    Duplicate(String),
}

/// How a device looks to the daemon before anything is attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub name: String,
    pub ifindex: u32,
    /// The driver (ethtool's), e.g. `veth`, `virtio_net`, `ixgbe`; empty when unknown.
    pub driver: String,
    /// No bus device behind it (veth, bridge, vxlan, ...): XDP_TX and checksums need TC.
    pub is_virtual: bool,
}

/// Drivers of virtual devices, when a bus device is present anyway (or sysfs is not mounted).
const VIRTUAL_DRIVERS: &[&str] = &[
    "veth",
    "bridge",
    "tun",
    "dummy",
    "vxlan",
    "geneve",
    "macvlan",
    "ipvlan",
    "vrf",
    "bonding",
    "team",
    "openvswitch",
    "wireguard",
    "nlmon",
    "netkit",
    "gre",
    "ip6gre",
];

impl DeviceInfo {
    /// Reads sysfs and ethtool for `dev`; refuses devices that do not exist or are not
    /// Ethernet (the program parses Ethernet headers).
    pub fn probe(dev: &str) -> Result<DeviceInfo, DatapathError> {
        let ifindex =
            crate::xdp::ifindex(dev).ok_or_else(|| DatapathError::NoDevice(dev.into()))?;
        let sys = Path::new("/sys/class/net").join(dev);
        let link_type = std::fs::read_to_string(sys.join("type"))
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            .unwrap_or(ARPHRD_ETHER);
        if link_type != ARPHRD_ETHER {
            return Err(DatapathError::NotEthernet {
                dev: dev.into(),
                link_type,
            });
        }
        let driver = ethtool_driver(dev)
            .or_else(|| sysfs_driver(&sys))
            .unwrap_or_default();
        let is_virtual = !sys.join("device").exists() || VIRTUAL_DRIVERS.contains(&driver.as_str());
        Ok(DeviceInfo {
            name: dev.into(),
            ifindex,
            driver,
            is_virtual,
        })
    }
}

const ARPHRD_ETHER: u32 = 1;

/// One device of the plan: what it is, what was asked, what it will run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    pub info: DeviceInfo,
    pub choice: Choice,
    /// XDP (native first) or TC. `auto` on a NIC whose native attach fails moves to TC.
    pub xdp: bool,
}

/// Splits `DEV[:MODE]` (a device name cannot hold ':').
pub fn parse_spec(spec: &str, default: Choice) -> Result<(String, Choice), DatapathError> {
    match spec.split_once(':') {
        None => Ok((spec.to_owned(), default)),
        Some((dev, mode)) => {
            let choice = mode.parse().map_err(|()| DatapathError::BadSpec {
                spec: spec.into(),
                mode: mode.into(),
            })?;
            Ok((dev.to_owned(), choice))
        }
    }
}

/// The hook for a device: the whole decision, pure (unit-tested).
pub fn decide(info: &DeviceInfo, choice: Choice) -> bool {
    match choice {
        Choice::Xdp => true,
        Choice::Tc => false,
        Choice::Auto => !info.is_virtual,
    }
}

/// Probes every device and decides its hook; nothing is attached yet.
pub fn plan(specs: &[String], default: Choice) -> Result<Vec<Planned>, DatapathError> {
    let mut out: Vec<Planned> = Vec::with_capacity(specs.len());
    for spec in specs {
        let (dev, choice) = parse_spec(spec, default)?;
        if out.iter().any(|p| p.info.name == dev) {
            return Err(DatapathError::Duplicate(dev));
        }
        let info = DeviceInfo::probe(&dev)?;
        let xdp = decide(&info, choice);
        if xdp && info.is_virtual {
            tracing::warn!(
                %dev,
                driver = %info.driver,
                "XDP on a virtual device (asked with xdp): frames reach the peer only if it runs an XDP program or has GRO on, and local senders' partial checksums (TX checksum offload) come out wrong; XDP_TX is replaced by a redirect. Use --datapath auto or tc here unless the peers are set up for it"
            );
        }
        out.push(Planned { info, choice, xdp });
    }
    Ok(out)
}

/// A device as it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Running {
    pub dev: String,
    pub ifindex: u32,
    pub driver: String,
    pub choice: Choice,
    pub hook: Hook,
    /// The device went away while the daemon ran: its media goes through the daemon.
    pub gone: bool,
}

static RUNNING: Mutex<Vec<Running>> = Mutex::new(Vec::new());
static PIN_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Records what runs where (after a successful attach), for status and the device watch.
pub fn record(pin_dir: &Path, r: Running) {
    tracing::info!(
        dev = %r.dev,
        driver = %r.driver,
        asked = r.choice.name(),
        datapath = r.hook.name(),
        "fast path attached"
    );
    *PIN_DIR.lock().unwrap_or_else(|e| e.into_inner()) = Some(pin_dir.to_owned());
    let mut v = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    v.retain(|x| x.dev != r.dev);
    v.push(r);
}

/// Every device as it runs now.
pub fn status() -> Vec<Running> {
    RUNNING.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// `[{"device", "datapath", "driver", "requested", "state"}]` for NG `statistics` and `query`.
pub fn status_json() -> Value {
    Value::Array(
        status()
            .iter()
            .map(|r| {
                json!({
                    "device": r.dev,
                    "datapath": r.hook.name(),
                    "driver": r.driver,
                    "requested": r.choice.name(),
                    "state": if r.gone { "gone" } else { "up" },
                })
            })
            .collect(),
    )
}

/// Checks that every device is still there (called on the daemon's tick). A device that went
/// away is logged once and taken out of the redirect table, so entries routed through it miss
/// the FIB and their media goes to the daemon's sockets; nothing else changes.
pub fn watch() {
    let pin_dir = PIN_DIR.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut v = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    for r in v.iter_mut().filter(|r| !r.gone) {
        if crate::xdp::ifindex(&r.dev) == Some(r.ifindex) {
            continue;
        }
        r.gone = true;
        tracing::warn!(
            dev = %r.dev,
            datapath = r.hook.name(),
            "device disappeared: its fast path is gone with it and its streams fall back to the daemon; restart the daemon to attach to a re-created device"
        );
        if let Some(dir) = &pin_dir
            && let Err(e) = crate::xdp::remove_pinned_egress(dir, r.ifindex)
        {
            tracing::warn!(dev = %r.dev, error = %e, "removing the device from the redirect table");
        }
    }
}

/// The driver name from ETHTOOL_GDRVINFO.
fn ethtool_driver(dev: &str) -> Option<String> {
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        data: *mut DrvInfo,
        _pad: [u8; 16],
    }
    const ETHTOOL_GDRVINFO: u32 = 3;
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    if dev.len() >= 16 {
        return None;
    }
    // SAFETY: all-zero is valid for both plain-data structs.
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    let mut req = IfReq {
        name: [0; 16],
        data: &mut info,
        _pad: [0; 16],
    };
    req.name[..dev.len()].copy_from_slice(dev.as_bytes());
    // SAFETY: a plain socket, closed below; the ioctl writes into `info` through `req`.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let rc = libc::ioctl(fd, SIOCETHTOOL as _, &mut req);
        libc::close(fd);
        if rc != 0 {
            return None;
        }
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    let name = String::from_utf8_lossy(&info.driver[..end]).into_owned();
    (!name.is_empty()).then_some(name)
}

fn sysfs_driver(sys: &Path) -> Option<String> {
    let link = std::fs::read_link(sys.join("device/driver")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(driver: &str, is_virtual: bool) -> DeviceInfo {
        DeviceInfo {
            name: "d".into(),
            ifindex: 2,
            driver: driver.into(),
            is_virtual,
        }
    }

    #[test]
    fn auto_picks_xdp_on_nics_and_tc_on_virtual_devices() {
        assert!(decide(&dev("ixgbe", false), Choice::Auto));
        assert!(decide(&dev("virtio_net", false), Choice::Auto));
        assert!(!decide(&dev("veth", true), Choice::Auto));
        assert!(!decide(&dev("ixgbe", false), Choice::Tc));
        assert!(decide(&dev("veth", true), Choice::Xdp));
    }

    #[test]
    fn specs_name_a_device_and_optionally_its_datapath() {
        assert_eq!(
            parse_spec("eth1", Choice::Auto).unwrap(),
            ("eth1".into(), Choice::Auto)
        );
        assert_eq!(
            parse_spec("eth1:tc", Choice::Xdp).unwrap(),
            ("eth1".into(), Choice::Tc)
        );
        let e = parse_spec("eth1:ebpf", Choice::Auto)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("eth1:ebpf") && e.contains("auto, xdp, tc"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_device_is_named_with_the_fix() {
        let e = plan(&["rtnosuchdev0".into()], Choice::Auto)
            .unwrap_err()
            .to_string();
        assert!(e.contains("rtnosuchdev0") && e.contains("ip link"), "{e}");
    }

    #[test]
    fn loopback_is_probed_as_virtual_and_not_ethernet() {
        // `lo` exists in every namespace; its link type is loopback (772), not Ethernet.
        let e = DeviceInfo::probe("lo").unwrap_err().to_string();
        assert!(e.contains("not an Ethernet device"), "{e}");
    }
}
