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
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
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
    #[error("{key} = {value:?}: expected one of {allowed}")]
    Choice {
        key: &'static str,
        value: String,
        allowed: &'static str,
    },
}

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
    /// Network devices the XDP program is attached to.
    pub xdp_devices: Vec<String>,
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
    pub ice_default: String,
    pub latching: String,
    pub ng_listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    pub pin_dir: PathBuf,
    /// Where sessions are persisted so a restarted daemon recovers them.
    pub state_file: PathBuf,
    /// The relay's DTLS certificate and key (PEM), made on first start and kept so the
    /// a=fingerprint survives restarts; default `dtls-cert.pem` beside the state file.
    pub dtls_cert: PathBuf,
}

/// The TOML file; every key optional, names as the flags.
#[derive(Debug, Default, Deserialize)]
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
    pub ice: Option<String>,
    pub latching: Option<String>,
    pub ng_listen: Option<SocketAddr>,
    pub metrics_listen: Option<SocketAddr>,
    pub pin_dir: Option<PathBuf>,
    pub state_file: Option<PathBuf>,
    pub dtls_cert: Option<PathBuf>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
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
        let port_min = flags.port_min.or(self.port_min).unwrap_or(30_000);
        let port_max = flags.port_max.or(self.port_max).unwrap_or(40_000);
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
        Ok(Config {
            interfaces,
            xdp_devices: flags.interface.or(self.interface).unwrap_or_default(),
            port_min,
            port_max,
            media_timeout: Duration::from_secs(flags.timeout.or(self.timeout).unwrap_or(60)),
            silent_timeout: Duration::from_secs(
                flags.silent_timeout.or(self.silent_timeout).unwrap_or(3600),
            ),
            final_timeout: Duration::from_secs(
                flags.final_timeout.or(self.final_timeout).unwrap_or(0),
            ),
            max_streams,
            ice_default,
            latching,
            ng_listen: flags
                .ng_listen
                .or(self.ng_listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 2223))),
            metrics_listen: flags.metrics_listen.or(self.metrics_listen),
            pin_dir: flags
                .pin_dir
                .or(self.pin_dir)
                .unwrap_or_else(|| PathBuf::from(crate::xdp::DEFAULT_PIN_DIR)),
            dtls_cert: Default::default(),
            state_file: flags
                .state_file
                .or(self.state_file)
                .unwrap_or_else(|| PathBuf::from("/var/lib/xdp-relay/sessions.json")),
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
        let c: FileConfig = toml::from_str("max-streams = 262144").unwrap();
        let c = c.merge(flags(&["192.0.2.1"])).unwrap();
        assert_eq!(c.max_streams, 262_144);
        let mut f = flags(&["192.0.2.1"]);
        f.ice = Some("sometimes".into());
        let e = FileConfig::default().merge(f).unwrap_err().to_string();
        assert!(e.contains("ice = \"sometimes\""), "{e}");
        let e = toml::from_str::<FileConfig>("port-mni = 3")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field"), "{e}");
    }
}
