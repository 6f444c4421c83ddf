//! Shared state and takeover (Redis): the HA part of the configuration and its checks.

use std::time::Duration;

use super::{ConfigError, choice};

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

/// The HA keys of the file with the flags laid over them (flags win), not yet checked.
pub(super) struct HaKeys {
    pub redis: Option<String>,
    pub key_prefix: Option<String>,
    /// Seconds.
    pub expires: Option<u64>,
    pub relay_id: Option<String>,
    pub standby: Option<bool>,
    /// auto or manual.
    pub takeover: Option<String>,
}

impl HaConfig {
    /// Checks the HA keys (a Redis URL that parses, a printable relay id, auto or manual
    /// takeover) and applies their defaults.
    pub(super) fn from_keys(keys: HaKeys) -> Result<HaConfig, ConfigError> {
        let redis = keys.redis;
        if let Some(url) = &redis
            && let Err(e) = ::redis::Client::open(url.as_str())
        {
            return Err(ConfigError::Redis {
                url: url.clone(),
                why: e.to_string(),
            });
        }
        let relay_id = keys.relay_id.unwrap_or_else(hostname);
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
        let takeover = keys.takeover.unwrap_or_else(|| "auto".into());
        choice("takeover", &takeover, &["auto", "manual"], "auto, manual")?;
        Ok(HaConfig {
            redis,
            key_prefix: keys.key_prefix.unwrap_or_else(|| "xdp-relay:".into()),
            expires: Duration::from_secs(keys.expires.unwrap_or(86_400).max(3)),
            relay_id,
            standby: keys.standby.unwrap_or(false),
            auto_takeover: takeover == "auto",
        })
    }
}

/// The host name: the default relay id.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "relay".into())
}
