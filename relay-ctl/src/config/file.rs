//! The TOML file as written: its keys, reading it, and finding the line a key is set on.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use super::ConfigError;

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
    pub latch_handover: Option<u64>,
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

/// The key a line assigns (`key = ...`), if it is an assignment.
pub(super) fn assigned_key(line: &str) -> Option<&str> {
    let (k, _) = line.split_once('=')?;
    let k = k.trim().trim_matches('"');
    (!k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)))
    .then_some(k)
}

/// 1-based line where `key` is set; with `value`, the line of that string inside its list.
pub(super) fn locate(text: &str, key: &str, value: Option<&str>) -> Option<usize> {
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

    pub(super) fn load_text(path: &Path) -> Result<(FileConfig, String), ConfigError> {
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
    pub(super) fn keys_set(&self) -> Vec<&'static str> {
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
        add(self.latch_handover.is_some(), "latch-handover");
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
}
