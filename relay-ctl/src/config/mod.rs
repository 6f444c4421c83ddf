//! Daemon configuration: a TOML file and command-line flags (flags win), validated as a whole
//! before anything is loaded or bound, so a bad configuration changes nothing.
//!
//! | module | owns |
//! |---|---|
//! | `file` | the TOML file's keys ([`FileConfig`]), reading it, the line each key is on |
//! | `interface` | logical interfaces as `NAME/ADDRESS[!ADVERTISED]` |
//! | `validate` | flags over file, checked as a whole: [`Config`] |
//! | `ha` | the shared-state (Redis) and takeover keys: [`HaConfig`] |
//! | `reload` | what a SIGHUP applies at once and what needs a restart |

mod file;
mod ha;
mod interface;
mod reload;
mod validate;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

pub use file::FileConfig;
use file::locate;
pub use ha::HaConfig;
pub use interface::parse_interface;
pub use relay_core::session::LogicalInterface;
pub use reload::{ReloadPlan, reload_plan};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}{}: {message}", at(*line, key.as_deref()))]
    Parse {
        path: PathBuf,
        /// 1-based line of the fault, when the parser located it.
        line: Option<usize>,
        key: Option<String>,
        message: String,
    },
    /// A value the file set that failed validation: where it is, and why.
    #[error("{path}{}: {error}", at(Some(*line), Some(key)))]
    At {
        path: PathBuf,
        line: usize,
        key: String,
        /// Not a `source`: the message already includes it, once.
        error: Box<ConfigError>,
    },
    #[error(
        "log-level = {value:?}: {why} (e.g. \"info\", \"debug\", \"info,relay_ctl::engine=debug\")"
    )]
    LogLevel { value: String, why: String },
    #[error(
        "interface {0:?}: no such network device in this network namespace: check `ip link`, and run the daemon in the namespace that owns the device"
    )]
    NoDevice(String),
    #[error(
        "interface {spec:?}: {why} (expected NAME/ADDRESS[!ADVERTISED], e.g. pub/192.0.2.1!203.0.113.1)"
    )]
    Interface { spec: String, why: String },
    #[error("duplicate logical interface name {0:?}")]
    DuplicateInterface(String),
    #[error("no logical interface: give at least one --listen NAME/ADDRESS")]
    NoInterface,
    #[error("port range {min}-{max}: need 1 <= port-min < port-max, port-min even")]
    PortRange { min: u16, max: u16 },
    #[error(
        "max-streams = {0}: expected 1024 to 16777216 (one per relay endpoint: RTP and RTCP of each leg)"
    )]
    MaxStreams(u32),
    #[error(
        "latch-handover = {0}: expected 100 to 25500 milliseconds (the silence after which another source may take a latched stream over)"
    )]
    LatchHandover(u64),
    #[error(transparent)]
    Datapath(#[from] crate::datapath::DatapathError),
    #[error(
        "redis = {url:?}: {why} (expected redis://[:PASSWORD@]HOST[:PORT][/DB] or unix:///PATH?db=DB)"
    )]
    Redis { url: String, why: String },
    #[error("{key} = {value:?}: expected one of {allowed}")]
    Choice {
        key: &'static str,
        value: String,
        allowed: &'static str,
    },
}

fn at(line: Option<usize>, key: Option<&str>) -> String {
    match (line, key) {
        (Some(l), Some(k)) => format!(" line {l}, key {k}"),
        (Some(l), None) => format!(" line {l}"),
        (None, Some(k)) => format!(", key {k}"),
        (None, None) => String::new(),
    }
}

impl ConfigError {
    /// The configuration key a validation error is about, and the value it names (to find the
    /// line of one element of a list).
    fn key(&self) -> Option<(&'static str, Option<&str>)> {
        Some(match self {
            ConfigError::Interface { spec, .. } => ("listen", Some(spec.as_str())),
            ConfigError::DuplicateInterface(name) => ("listen", Some(name.as_str())),
            ConfigError::NoInterface => ("listen", None),
            ConfigError::PortRange { .. } => ("port-range", None),
            ConfigError::MaxStreams(_) => ("max-streams", None),
            ConfigError::LatchHandover(_) => ("latch-handover", None),
            ConfigError::Choice { key, .. } => (key, None),
            ConfigError::LogLevel { .. } => ("log-level", None),
            ConfigError::NoDevice(dev) => ("interface", Some(dev.as_str())),
            _ => return None,
        })
    }
}

pub const DEFAULT_PORT_MIN: u16 = 30_000;
pub const DEFAULT_PORT_MAX: u16 = 40_000;
pub const DEFAULT_TIMEOUT: u64 = 60;
pub const DEFAULT_LATCH_HANDOVER_MS: u64 = 2000;
pub const DEFAULT_SILENT_TIMEOUT: u64 = 3600;
pub const DEFAULT_NG_LISTEN: &str = "127.0.0.1:2223";
pub const DEFAULT_STATE_FILE: &str = "/var/lib/xdp-relay/sessions.json";
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// The daemon's validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub interfaces: Vec<LogicalInterface>,
    /// Network devices the fast path is attached to, as given: `DEV` or `DEV:MODE`.
    pub xdp_devices: Vec<String>,
    /// The datapath of devices given without `:MODE` (`--datapath`).
    pub datapath: crate::datapath::Choice,
    pub port_min: u16,
    pub port_max: u16,
    /// No media in either direction for this long: the call is deleted (rtpengine's `timeout`).
    pub media_timeout: Duration,
    /// Same, for calls on hold (rtpengine's `silent-timeout`).
    pub silent_timeout: Duration,
    /// Any call is deleted this long after creation (0: never; rtpengine's `final-timeout`).
    pub final_timeout: Duration,
    /// Capacity of the XDP stream table and its counters (one entry per relay endpoint).
    pub max_streams: u32,
    /// Most calls held at once; None: no limit (rtpengine's `max-sessions`).
    pub max_sessions: Option<u64>,
    /// Secure latching: how long a latched source must be silent before another source may
    /// take its stream over (a NAT rebinding); until then others are dropped in the fast path.
    pub latch_handover: Duration,
    pub ice_default: String,
    pub latching: String,
    pub ng_listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    pub pin_dir: PathBuf,
    /// Where sessions are persisted so a restarted daemon recovers them.
    pub state_file: PathBuf,
    /// tracing filter directives; None: RUST_LOG, else "info".
    pub log_level: Option<String>,
    /// On exit, detach the program and remove the pins.
    pub detach: bool,
    pub ha: HaConfig,
    /// The relay's DTLS certificate and key (PEM), made on first start and kept so the
    /// a=fingerprint survives restarts; default `dtls-cert.pem` beside the state file.
    pub dtls_cert: PathBuf,
}

/// Reads `path` (when given), overlays `flags` (set values win) and validates the result. An
/// error in the file names its line and key: a syntax or type error where the parser found it,
/// a refused value where the file sets it (unless a flag overrode it).
pub fn load(path: Option<&Path>, flags: FileConfig) -> Result<Config, ConfigError> {
    let Some(path) = path else {
        return FileConfig::default().merge(flags).and_then(devices_exist);
    };
    let (file, text) = FileConfig::load_text(path)?;
    let from_flags = flags.keys_set();
    file.merge(flags).and_then(devices_exist).map_err(|e| {
        let Some((key, value)) = e.key() else {
            return e;
        };
        let keys: &[&str] = if key == "port-range" {
            &["port-min", "port-max"]
        } else {
            &[key]
        };
        for k in keys {
            if from_flags.contains(k) {
                return e;
            }
            if let Some(line) = locate(&text, k, value) {
                return ConfigError::At {
                    path: path.to_owned(),
                    line,
                    key: (*k).to_owned(),
                    error: Box::new(e),
                };
            }
        }
        e
    })
}

/// Every device the program is to be attached to exists (checked before anything is attached,
/// so a typo in the second of two devices does not leave the first attached).
fn devices_exist(c: Config) -> Result<Config, ConfigError> {
    match c
        .xdp_devices
        .iter()
        .map(|spec| spec.split_once(':').map_or(spec.as_str(), |(dev, _)| dev))
        .find(|d| crate::xdp::ifindex(d).is_none())
    {
        Some(d) => Err(ConfigError::NoDevice(d.to_owned())),
        None => Ok(c),
    }
}

fn choice(
    key: &'static str,
    value: &str,
    allowed: &[&str],
    list: &'static str,
) -> Result<(), ConfigError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::Choice {
            key,
            value: value.to_owned(),
            allowed: list,
        })
    }
}

/// The flags layer with only `--listen` set.
#[cfg(test)]
fn flags(listen: &[&str]) -> FileConfig {
    FileConfig {
        listen: Some(listen.iter().map(|s| s.to_string()).collect()),
        ..FileConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (PathBuf, impl Drop) {
        struct Rm(PathBuf);
        impl Drop for Rm {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "relay-config-test-{}-{}.toml",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(&p, text).unwrap();
        (p.clone(), Rm(p))
    }

    #[test]
    fn file_errors_name_the_line_and_key() {
        let cases = [
            // (file, line, key, part of the reason)
            (
                "listen = [\"a/192.0.2.1\"]\nport-mni = 3\n",
                2,
                "port-mni",
                "unknown field",
            ),
            (
                "listen = [\"a/192.0.2.1\"]\n\ntimeout = \"60\"\n",
                3,
                "timeout",
                "invalid type",
            ),
            ("listen = [\"a/192.0.2.1\"\n", 1, "listen", ""),
            (
                "# c\nlisten = [\n  \"a/192.0.2.1\",\n  \"b/0.0.0.0\",\n]\n",
                4,
                "listen",
                "unicast",
            ),
            (
                "listen = [\"a/192.0.2.1\"]\nport-max = 100\n",
                2,
                "port-max",
                "port range",
            ),
            (
                "listen = [\"a/192.0.2.1\"]\nice = \"sometimes\"\n",
                2,
                "ice",
                "expected one of",
            ),
            (
                "listen = [\"a/192.0.2.1\"]\nlog-level = \"info,[\"\n",
                2,
                "log-level",
                "log-level",
            ),
            ("listen = []\n", 1, "listen", "no logical interface"),
        ];
        for (text, line, key, why) in cases {
            let (p, _rm) = file(text);
            let e = load(Some(&p), FileConfig::default())
                .expect_err(text)
                .to_string();
            let at = format!("{} line {line}, key {key}", p.display());
            assert!(
                e.starts_with(&at),
                "{text:?}: {e:?} does not start with {at:?}"
            );
            assert!(e.contains(why), "{text:?}: {e:?} lacks {why:?}");
        }
        // A flag that overrides the bad key is not blamed on the file.
        let (p, _rm) = file("listen = [\"a/192.0.2.1\"]\nport-max = 100\n");
        let flags = FileConfig {
            port_max: Some(200),
            port_min: Some(151),
            ..FileConfig::default()
        };
        let e = load(Some(&p), flags).unwrap_err();
        assert!(matches!(e, ConfigError::PortRange { .. }), "{e}");
        let (p, _rm) = file("listen = [\"a/192.0.2.1\"]\nport-max = 30100\n");
        assert_eq!(
            load(Some(&p), FileConfig::default()).unwrap().port_max,
            30100
        );
    }
}
