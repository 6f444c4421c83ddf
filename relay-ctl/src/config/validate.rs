//! The file with the flags laid over it, checked as a whole: the daemon's [`Config`].

use std::{path::PathBuf, time::Duration};

use super::ha::{HaConfig, HaKeys};
use super::{
    Config, ConfigError, DEFAULT_NG_LISTEN, DEFAULT_PORT_MAX, DEFAULT_PORT_MIN,
    DEFAULT_SILENT_TIMEOUT, DEFAULT_STATE_FILE, DEFAULT_TIMEOUT, FileConfig, LogicalInterface,
    choice, parse_interface,
};

impl FileConfig {
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
        let latch_handover = flags
            .latch_handover
            .or(self.latch_handover)
            .unwrap_or(super::DEFAULT_LATCH_HANDOVER_MS);
        // The fast path keeps it in tenths of a second, in one byte.
        if !(100..=25_500).contains(&latch_handover) {
            return Err(ConfigError::LatchHandover(latch_handover));
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
        let ha = HaConfig::from_keys(HaKeys {
            redis: flags.redis.or(self.redis),
            key_prefix: flags.redis_key_prefix.or(self.redis_key_prefix),
            expires: flags.redis_expires.or(self.redis_expires),
            relay_id: flags.relay_id.or(self.relay_id),
            standby: flags.standby.or(self.standby),
            takeover: flags.takeover.or(self.takeover),
        })?;
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
            latch_handover: Duration::from_millis(latch_handover),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::flags;

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
}
