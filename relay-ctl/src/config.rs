//! Daemon configuration: a TOML file and command-line flags (flags win), validated as a whole
//! before anything is loaded or bound, so a bad configuration changes nothing.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

pub use relay_core::session::LogicalInterface;
use serde::Deserialize;

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
pub const DEFAULT_SILENT_TIMEOUT: u64 = 3600;
pub const DEFAULT_NG_LISTEN: &str = "127.0.0.1:2223";
pub const DEFAULT_STATE_FILE: &str = "/var/lib/xdp-relay/sessions.json";
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// Parses rtpengine's `NAME/ADDRESS[!ADVERTISED]` with relay-core's parser, then applies the
/// checks an operator needs on top: a plain name and a unicast bind address.
pub fn parse_interface(spec: &str) -> Result<LogicalInterface, ConfigError> {
    let err = |why: &str| ConfigError::Interface {
        spec: spec.to_owned(),
        why: why.to_owned(),
    };
    let li: LogicalInterface = spec
        .parse()
        .map_err(|e: relay_core::session::SessionError| err(&e.to_string()))?;
    if !li
        .name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(err(
            "the name must be ASCII letters, digits, '-', '_' or '.'",
        ));
    }
    if li.bind.is_unspecified() || li.bind.is_multicast() {
        return Err(err(
            "the bind address must be a unicast address of this host",
        ));
    }
    Ok(li)
}

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

impl Default for HaConfig {
    /// No shared store.
    fn default() -> HaConfig {
        HaConfig {
            redis: None,
            key_prefix: "xdp-relay:".into(),
            expires: Duration::from_secs(86_400),
            relay_id: "relay".into(),
            standby: false,
            auto_takeover: true,
        }
    }
}

/// Shared state and takeover (Redis).
#[derive(Clone, Debug)]
pub struct HaConfig {
    /// Redis URL; none: the state file only.
    pub redis: Option<String>,
    pub key_prefix: String,
    /// Expiry of a call's key; live calls' keys are rewritten every third of it.
    pub expires: Duration,
    /// This relay's id in the records it owns (default: the host name).
    pub relay_id: String,
    /// Start as a standby: hold other relays' calls as foreign, own none until a takeover.
    pub standby: bool,
    /// Take over foreign calls when their media address appears on this host (else only on
    /// `relay-ctl takeover`).
    pub auto_takeover: bool,
}

/// The TOML file; every key optional, names as the flags.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub listen: Option<Vec<String>>,
    pub interface: Option<Vec<String>>,
    pub port_min: Option<u16>,
    pub port_max: Option<u16>,
    pub timeout: Option<u64>,
    pub silent_timeout: Option<u64>,
    pub final_timeout: Option<u64>,
    pub max_streams: Option<u32>,
    pub max_sessions: Option<u64>,
    pub ice: Option<String>,
    pub latching: Option<String>,
    pub ng_listen: Option<SocketAddr>,
    pub metrics_listen: Option<SocketAddr>,
    pub pin_dir: Option<PathBuf>,
    pub state_file: Option<PathBuf>,
    pub log_level: Option<String>,
    pub detach: Option<bool>,
    pub datapath: Option<String>,
    pub redis: Option<String>,
    pub redis_key_prefix: Option<String>,
    pub redis_expires: Option<u64>,
    pub relay_id: Option<String>,
    pub standby: Option<bool>,
    /// auto or manual.
    pub takeover: Option<String>,
    pub dtls_cert: Option<PathBuf>,
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

/// The key a line assigns (`key = ...`), if it is an assignment.
fn assigned_key(line: &str) -> Option<&str> {
    let (k, _) = line.split_once('=')?;
    let k = k.trim().trim_matches('"');
    (!k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)))
    .then_some(k)
}

/// 1-based line where `key` is set; with `value`, the line of that string inside its list.
fn locate(text: &str, key: &str, value: Option<&str>) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|l| assigned_key(l) == Some(key))?;
    if let Some(v) = value {
        let quoted = format!("\"{v}\"");
        for (i, l) in lines.iter().enumerate().skip(start) {
            if i > start && assigned_key(l).is_some() {
                break;
            }
            if l.contains(&quoted) {
                return Some(i + 1);
            }
        }
    }
    Some(start + 1)
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        Ok(Self::load_text(path)?.0)
    }

    fn load_text(path: &Path) -> Result<(FileConfig, String), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        let file = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            // The key on that line, or on the assignment a continuation line belongs to.
            let key = line.and_then(|l| {
                text.lines()
                    .take(l)
                    .collect::<Vec<_>>()
                    .iter()
                    .rev()
                    .find_map(|l| assigned_key(l))
                    .map(str::to_owned)
            });
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                key,
                message: e.message().trim().to_owned(),
            }
        })?;
        Ok((file, text))
    }

    /// The keys this layer sets.
    fn keys_set(&self) -> Vec<&'static str> {
        let mut k = Vec::new();
        let mut add = |set: bool, key| {
            if set {
                k.push(key)
            }
        };
        add(self.listen.is_some(), "listen");
        add(self.interface.is_some(), "interface");
        add(self.port_min.is_some(), "port-min");
        add(self.port_max.is_some(), "port-max");
        add(self.timeout.is_some(), "timeout");
        add(self.silent_timeout.is_some(), "silent-timeout");
        add(self.final_timeout.is_some(), "final-timeout");
        add(self.max_streams.is_some(), "max-streams");
        add(self.ice.is_some(), "ice");
        add(self.latching.is_some(), "latching");
        add(self.ng_listen.is_some(), "ng-listen");
        add(self.metrics_listen.is_some(), "metrics-listen");
        add(self.pin_dir.is_some(), "pin-dir");
        add(self.state_file.is_some(), "state-file");
        add(self.log_level.is_some(), "log-level");
        add(self.detach.is_some(), "detach");
        k
    }

    /// Overlays `flags` (set values win) and validates the result.
    pub fn merge(self, flags: FileConfig) -> Result<Config, ConfigError> {
        let listen = flags.listen.or(self.listen).unwrap_or_default();
        let mut interfaces = Vec::with_capacity(listen.len());
        for spec in &listen {
            let li = parse_interface(spec)?;
            if interfaces
                .iter()
                .any(|i: &LogicalInterface| i.name == li.name)
            {
                return Err(ConfigError::DuplicateInterface(li.name));
            }
            interfaces.push(li);
        }
        if interfaces.is_empty() {
            return Err(ConfigError::NoInterface);
        }
        let port_min = flags.port_min.or(self.port_min).unwrap_or(DEFAULT_PORT_MIN);
        let port_max = flags.port_max.or(self.port_max).unwrap_or(DEFAULT_PORT_MAX);
        // Even base so RTP/RTCP pairs never straddle the range.
        if port_min == 0 || port_min >= port_max || !port_min.is_multiple_of(2) {
            return Err(ConfigError::PortRange {
                min: port_min,
                max: port_max,
            });
        }
        let max_streams = flags
            .max_streams
            .or(self.max_streams)
            .unwrap_or(relay_common::stream::MAX_STREAMS);
        if !(1024..=1 << 24).contains(&max_streams) {
            return Err(ConfigError::MaxStreams(max_streams));
        }
        let ice_default = flags.ice.or(self.ice).unwrap_or_else(|| "default".into());
        choice(
            "ice",
            &ice_default,
            &["default", "force", "remove", "optional"],
            "default, force, remove, optional",
        )?;
        let latching = flags
            .latching
            .or(self.latching)
            .unwrap_or_else(|| "auto".into());
        choice(
            "latching",
            &latching,
            &["auto", "symmetric", "strict"],
            "auto, symmetric, strict",
        )?;
        let log_level = flags.log_level.or(self.log_level);
        if let Some(l) = &log_level
            && let Err(e) = tracing_subscriber::EnvFilter::builder().parse(l)
        {
            return Err(ConfigError::LogLevel {
                value: l.clone(),
                why: e.to_string(),
            });
        }
        let datapath = flags
            .datapath
            .or(self.datapath)
            .unwrap_or_else(|| "auto".into());
        let datapath = datapath.parse().map_err(|()| ConfigError::Choice {
            key: "datapath",
            value: datapath.clone(),
            allowed: crate::datapath::Choice::ALLOWED,
        })?;
        let xdp_devices = flags.interface.or(self.interface).unwrap_or_default();
        for spec in &xdp_devices {
            crate::datapath::parse_spec(spec, datapath)?;
        }
        let redis = flags.redis.or(self.redis);
        if let Some(url) = &redis
            && let Err(e) = ::redis::Client::open(url.as_str())
        {
            return Err(ConfigError::Redis {
                url: url.clone(),
                why: e.to_string(),
            });
        }
        let relay_id = flags.relay_id.or(self.relay_id).unwrap_or_else(hostname);
        if relay_id.is_empty()
            || relay_id.len() > 64
            || !relay_id.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(ConfigError::Choice {
                key: "relay-id",
                value: relay_id,
                allowed: "1 to 64 printable ASCII characters without spaces",
            });
        }
        let takeover = flags
            .takeover
            .or(self.takeover)
            .unwrap_or_else(|| "auto".into());
        choice("takeover", &takeover, &["auto", "manual"], "auto, manual")?;
        let ha = HaConfig {
            redis,
            key_prefix: flags
                .redis_key_prefix
                .or(self.redis_key_prefix)
                .unwrap_or_else(|| "xdp-relay:".into()),
            expires: Duration::from_secs(
                flags
                    .redis_expires
                    .or(self.redis_expires)
                    .unwrap_or(86_400)
                    .max(3),
            ),
            relay_id,
            standby: flags.standby.or(self.standby).unwrap_or(false),
            auto_takeover: takeover == "auto",
        };
        Ok(Config {
            interfaces,
            xdp_devices,
            datapath,
            port_min,
            port_max,
            media_timeout: Duration::from_secs(
                flags.timeout.or(self.timeout).unwrap_or(DEFAULT_TIMEOUT),
            ),
            silent_timeout: Duration::from_secs(
                flags
                    .silent_timeout
                    .or(self.silent_timeout)
                    .unwrap_or(DEFAULT_SILENT_TIMEOUT),
            ),
            final_timeout: Duration::from_secs(
                flags.final_timeout.or(self.final_timeout).unwrap_or(0),
            ),
            max_streams,
            max_sessions: flags.max_sessions.or(self.max_sessions).filter(|&n| n > 0),
            ice_default,
            latching,
            ng_listen: flags
                .ng_listen
                .or(self.ng_listen)
                .unwrap_or_else(|| DEFAULT_NG_LISTEN.parse().expect("default NG address")),
            metrics_listen: flags.metrics_listen.or(self.metrics_listen),
            pin_dir: flags
                .pin_dir
                .or(self.pin_dir)
                .unwrap_or_else(|| PathBuf::from(crate::xdp::DEFAULT_PIN_DIR)),
            dtls_cert: Default::default(),
            state_file: flags
                .state_file
                .or(self.state_file)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_FILE)),
            log_level,
            detach: flags.detach.or(self.detach).unwrap_or(false),
            ha,
        })
        .map(|mut c: Config| {
            c.dtls_cert = flags
                .dtls_cert
                .or(self.dtls_cert)
                .unwrap_or_else(|| c.state_file.with_file_name("dtls-cert.pem"));
            c
        })
    }
}

/// What a reload (SIGHUP) does with a new, valid configuration: the changed settings that take
/// effect at once, and those that only a restart applies (sockets, maps and attachments stay
/// as they are, so a reload never touches running calls).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    pub applied: Vec<&'static str>,
    pub needs_restart: Vec<&'static str>,
}

pub fn reload_plan(old: &Config, new: &Config) -> ReloadPlan {
    let mut p = ReloadPlan::default();
    let mut cmp = |changed: bool, key: &'static str, live: bool| {
        if changed {
            if live {
                p.applied.push(key);
            } else {
                p.needs_restart.push(key);
            }
        }
    };
    cmp(old.media_timeout != new.media_timeout, "timeout", true);
    cmp(
        old.silent_timeout != new.silent_timeout,
        "silent-timeout",
        true,
    );
    cmp(
        old.final_timeout != new.final_timeout,
        "final-timeout",
        true,
    );
    cmp(old.log_level != new.log_level, "log-level", true);
    cmp(old.detach != new.detach, "detach", true);
    cmp(
        format!("{:?}", old.interfaces) != format!("{:?}", new.interfaces),
        "listen",
        false,
    );
    cmp(old.xdp_devices != new.xdp_devices, "interface", false);
    cmp(old.port_min != new.port_min, "port-min", false);
    cmp(old.port_max != new.port_max, "port-max", false);
    cmp(old.max_streams != new.max_streams, "max-streams", false);
    cmp(old.ice_default != new.ice_default, "ice", false);
    cmp(old.latching != new.latching, "latching", false);
    cmp(old.ng_listen != new.ng_listen, "ng-listen", false);
    cmp(
        old.metrics_listen != new.metrics_listen,
        "metrics-listen",
        false,
    );
    cmp(old.pin_dir != new.pin_dir, "pin-dir", false);
    cmp(old.state_file != new.state_file, "state-file", false);
    cmp(
        format!("{:?}", old.ha) != format!("{:?}", new.ha),
        "redis",
        false,
    );
    p
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "relay".into())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(listen: &[&str]) -> FileConfig {
        FileConfig {
            listen: Some(listen.iter().map(|s| s.to_string()).collect()),
            ..FileConfig::default()
        }
    }

    #[test]
    fn interface_specs() {
        let li = parse_interface("pub/192.0.2.1!203.0.113.7").unwrap();
        assert_eq!(li.name, "pub");
        assert_eq!(li.bind.to_string(), "192.0.2.1");
        assert_eq!(li.advertised.to_string(), "203.0.113.7");
        let li = parse_interface("2001:db8::1").unwrap();
        assert_eq!((li.name.as_str(), li.advertised), ("default", li.bind));
        for bad in [
            "pub/",
            "pub/1.2.3",
            "/192.0.2.1",
            "pub/0.0.0.0",
            "pub/192.0.2.1!2001:db8::1",
            "pub/192.0.2.1!x",
            "p b/192.0.2.1",
            "pub/224.0.0.1",
        ] {
            assert!(parse_interface(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn flags_override_file_and_defaults_apply() {
        let file: FileConfig = toml::from_str(
            "listen = [\"a/192.0.2.1\"]\nport-min = 20000\nport-max = 20100\ntimeout = 30\n",
        )
        .unwrap();
        let c = file
            .merge(FileConfig {
                port_max: Some(20200),
                ..FileConfig::default()
            })
            .unwrap();
        assert_eq!((c.port_min, c.port_max), (20000, 20200));
        assert_eq!(c.max_streams, relay_common::stream::MAX_STREAMS);
        assert_eq!(c.media_timeout, Duration::from_secs(30));
        assert_eq!(c.ng_listen.to_string(), "127.0.0.1:2223");
        assert_eq!(c.interfaces[0].name, "a");
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        let e = FileConfig::default().merge(flags(&[])).unwrap_err();
        assert!(matches!(e, ConfigError::NoInterface));
        let e = FileConfig::default()
            .merge(flags(&["a/192.0.2.1", "a/192.0.2.2"]))
            .unwrap_err();
        assert!(matches!(e, ConfigError::DuplicateInterface(n) if n == "a"));
        for (min, max) in [(0, 10), (101, 200), (200, 200), (300, 200)] {
            let mut f = flags(&["192.0.2.1"]);
            (f.port_min, f.port_max) = (Some(min), Some(max));
            assert!(matches!(
                FileConfig::default().merge(f),
                Err(ConfigError::PortRange { .. })
            ));
        }
        for n in [0, 1023, (1 << 24) + 1] {
            let mut f = flags(&["192.0.2.1"]);
            f.max_streams = Some(n);
            let e = FileConfig::default().merge(f).unwrap_err().to_string();
            assert!(e.contains(&format!("max-streams = {n}")), "{e}");
        }
        let mut f = flags(&["192.0.2.1"]);
        f.redis = Some("http://x".into());
        let e = FileConfig::default().merge(f).unwrap_err().to_string();
        assert!(e.contains("redis = \"http://x\""), "{e}");
        let c: FileConfig = toml::from_str(
            "redis = \"redis://10.0.0.9:6379/4\"\nredis-key-prefix = \"p:\"\nrelay-id = \"a\"\nstandby = true\ntakeover = \"manual\"",
        )
        .unwrap();
        let c = c.merge(flags(&["192.0.2.1"])).unwrap();
        assert_eq!(c.ha.redis.as_deref(), Some("redis://10.0.0.9:6379/4"));
        assert_eq!(
            (c.ha.key_prefix.as_str(), c.ha.relay_id.as_str()),
            ("p:", "a")
        );
        assert!(c.ha.standby && !c.ha.auto_takeover);
        assert_eq!(c.ha.expires, Duration::from_secs(86_400));
        let c: FileConfig = toml::from_str("max-streams = 262144").unwrap();
        let c = c.merge(flags(&["192.0.2.1"])).unwrap();
        assert_eq!(c.max_streams, 262_144);
        let mut f = flags(&["192.0.2.1"]);
        f.ice = Some("sometimes".into());
        let e = FileConfig::default().merge(f).unwrap_err().to_string();
        assert!(e.contains("ice = \"sometimes\""), "{e}");
        let mut f = flags(&["192.0.2.1"]);
        f.datapath = Some("ebpf".into());
        let e = FileConfig::default().merge(f).unwrap_err().to_string();
        assert!(
            e.contains("datapath = \"ebpf\"") && e.contains("auto, xdp, tc"),
            "{e}"
        );
        let c: FileConfig = toml::from_str("datapath = \"tc\"").unwrap();
        let c = c.merge(flags(&["192.0.2.1"])).unwrap();
        assert_eq!(c.datapath, crate::datapath::Choice::Tc);
        let mut f = flags(&["192.0.2.1"]);
        f.interface = Some(vec!["eth1:fast".into()]);
        let e = FileConfig::default().merge(f).unwrap_err().to_string();
        assert!(e.contains("eth1:fast"), "{e}");
        let e = toml::from_str::<FileConfig>("port-mni = 3")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field"), "{e}");
    }

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

    #[test]
    fn reload_applies_timeouts_and_log_level_and_names_the_rest() {
        let base = || flags(&["a/192.0.2.1"]);
        let old = FileConfig::default().merge(base()).unwrap();
        let mut f = base();
        f.timeout = Some(5);
        f.log_level = Some("debug".into());
        f.port_min = Some(20000);
        f.ng_listen = Some("127.0.0.1:2224".parse().unwrap());
        let new = FileConfig::default().merge(f).unwrap();
        let p = reload_plan(&old, &new);
        assert_eq!(p.applied, ["timeout", "log-level"]);
        assert_eq!(p.needs_restart, ["port-min", "ng-listen"]);
        assert_eq!(reload_plan(&old, &old), ReloadPlan::default());
    }
}
