//! `relay-ctl generate` (hidden, for packaging): man pages from the CLI definitions, with
//! xdp-relay.toml(5) from the daemon's options, and shell completions.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::CommandFactory as _;

use crate::Cli;

pub fn write(man: Option<PathBuf>, completions: Option<PathBuf>) -> Result<()> {
    let cmd = Cli::command();
    if let Some(dir) = man {
        std::fs::create_dir_all(&dir)?;
        clap_mangen::generate_to(cmd.clone(), &dir)?;
        let daemon = cmd
            .find_subcommand("daemon")
            .context("no daemon subcommand")?;
        std::fs::write(dir.join("xdp-relay.toml.5"), config_man_page(daemon))?;
    }
    if let Some(dir) = completions {
        std::fs::create_dir_all(&dir)?;
        use clap_complete::Shell;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            clap_complete::generate_to(shell, &mut cmd.clone(), "relay-ctl", &dir)?;
        }
    }
    Ok(())
}

/// roff escapes for text taken from help strings.
fn roff(s: &str) -> String {
    s.replace('\\', "\\e").replace('-', "\\-")
}

/// xdp-relay.toml(5): the configuration file's keys, from the daemon's options (one name, one
/// description and default for both).
fn config_man_page(daemon: &clap::Command) -> String {
    let mut o = String::from(
        ".TH XDP-RELAY.TOML 5 \"\" \"xdp-relay\" \"File Formats\"\n\
         .SH NAME\nxdp-relay.toml \\- configuration of the xdp-relay daemon\n\
         .SH SYNOPSIS\n/etc/xdp-relay/relay.toml\n\
         .SH DESCRIPTION\n\
         A TOML file read by \\fBrelay-ctl daemon \\-\\-config\\fR at start and again on \\fBSIGHUP\\fR \
         (\\fBsystemctl reload xdp-relay\\fR). Every key is optional and named as the daemon option; \
         an option given on the command line wins over the file. An unknown key, a value of the wrong \
         type or a refused value stops the daemon before anything is attached, with the line and key \
         at fault; on reload the running configuration is kept. A reload applies timeout, \
         silent\\-timeout, final\\-timeout, log\\-level and detach at once and logs every other \
         changed key as needing a restart.\n.SH KEYS\n",
    );
    for a in daemon.get_arguments() {
        let Some(long) = a.get_long() else { continue };
        if matches!(long, "config" | "help") {
            continue;
        }
        let key = if long == "interface" {
            "interface"
        } else {
            long
        };
        let kind = match a.get_action() {
            clap::ArgAction::Append => "[ \"...\", ... ]",
            clap::ArgAction::SetTrue => "true | false",
            _ => a
                .get_value_names()
                .and_then(|v| v.first())
                .map(|v| v.as_str())
                .unwrap_or("VALUE"),
        };
        let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
        o.push_str(&format!(
            ".TP\n\\fB{}\\fR = {}\n{}\n",
            roff(key),
            roff(kind),
            roff(&help)
        ));
    }
    o.push_str(
        ".SH FILES\n/etc/xdp-relay/relay.toml, /var/lib/xdp-relay/sessions.json, /sys/fs/bpf/xdp-relay\n\
         .SH SEE ALSO\n\\fBrelay-ctl\\fR(1), \\fBrelay-ctl-daemon\\fR(1)\n",
    );
    o
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn config_man_page_lists_every_key() {
        let cli = crate::Cli::command();
        let page = super::config_man_page(cli.find_subcommand("daemon").unwrap());
        for key in [
            "listen",
            "interface",
            "port\\-min",
            "timeout",
            "log\\-level",
            "detach",
        ] {
            assert!(
                page.contains(&format!("\\fB{key}\\fR = ")),
                "{key} in\n{page}"
            );
        }
        assert!(!page.contains("\\fBconfig\\fR"));
    }
}
