//! The subcommands about the pin directory: `detach` (stop forwarding) and `prepare` (the
//! service's ExecStartPre, as root).

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use relay_ctl::{
    config::{self, FileConfig},
    host, pins, xdp,
};

/// Where the pins are: `--pin-dir`, else the configuration file's `pin-dir`, else the default.
#[derive(clap::Args)]
pub struct PinArgs {
    /// The daemon's TOML configuration file, read for its pin-dir.
    #[arg(long, default_value = "/etc/xdp-relay/relay.toml")]
    config: PathBuf,
    /// bpffs directory of the pins (overrides the file's pin-dir) [default: the file's, else /sys/fs/bpf/xdp-relay].
    #[arg(long)]
    pin_dir: Option<PathBuf>,
}

impl PinArgs {
    /// The pin directory and, when the file exists, the configuration it came from.
    fn resolve(&self) -> Result<(PathBuf, Option<FileConfig>)> {
        let file = if self.config.exists() {
            Some(FileConfig::load(&self.config)?)
        } else {
            None
        };
        let dir = self
            .pin_dir
            .clone()
            .or_else(|| file.as_ref().and_then(|f| f.pin_dir.clone()))
            .unwrap_or_else(|| PathBuf::from(xdp::DEFAULT_PIN_DIR));
        Ok((dir, file))
    }
}

/// Detaches the program and removes the pins (the daemon stopped first).
pub fn detach(pins: &PinArgs) -> Result<()> {
    let (dir, _) = pins.resolve()?;
    if !dir.exists() {
        println!("nothing pinned under {}", dir.display());
        return Ok(());
    }
    pins::detach_all(&dir)
        .with_context(|| format!("detaching the pins under {}", dir.display()))?;
    println!("detached; pins under {} removed", dir.display());
    Ok(())
}

/// As root, before the daemon starts without root: what only root may do, and nothing else.
pub fn prepare(pins: &PinArgs, user: &str) -> Result<()> {
    // A configuration the daemon would refuse fails here, before anything changes. The
    // daemon's own flags are not known here: only the file is checked.
    if pins.config.exists() {
        config::load(Some(&pins.config), FileConfig::default())?;
    }
    let (dir, _) = pins.resolve()?;
    let (uid, gid) = host::user_ids(user).with_context(|| format!("no user {user}"))?;
    xdp::ensure_bpffs(&dir)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // The daemon must reach its pin directory: bpffs roots mounted by systemd are 0700.
    for parent in dir.ancestors().skip(1) {
        host::allow_search(parent)
            .with_context(|| format!("making {} searchable", parent.display()))?;
        if parent == std::path::Path::new("/") {
            break;
        }
    }
    // Pins left by a daemon that ran as root become the user's, so it can take them over.
    host::chown_tree(&dir, uid, gid)
        .with_context(|| format!("giving {} to {user}", dir.display()))?;
    tracing::info!(pin_dir = %dir.display(), %user, "pin directory ready");
    Ok(())
}
