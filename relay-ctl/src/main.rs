//! relay-ctl: the relay daemon (`relay-ctl daemon`) and its operator subcommands.

mod commands;

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use commands::{daemon::DaemonArgs, pin_dir::PinArgs};
use relay_ctl::{
    cli::{self, Common, MediaArgs},
    config, xdp,
};
use tracing_subscriber::{EnvFilter, prelude::*, reload};

#[derive(Parser)]
#[command(name = "relay-ctl", version, about = "XDP media relay for SIP B2BUAs")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the relay: load and attach the XDP program, serve NG on --ng-listen.
    Daemon(Box<DaemonArgs>),
    /// Check that the daemon answers.
    Ping(Common),
    /// Send an SDP offer; prints the SDP to forward to the callee.
    Offer {
        #[command(flatten)]
        media: MediaArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Send an SDP answer; prints the SDP to forward to the caller.
    Answer {
        #[command(flatten)]
        media: MediaArgs,
        /// The callee's tag (taken from the message's To with --sip).
        #[arg(long)]
        to_tag: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Delete a call, or one leg of it.
    Delete {
        /// Call-ID of the call.
        #[arg(long)]
        call_id: String,
        /// Delete only this leg (the caller's tag).
        #[arg(long)]
        from_tag: Option<String>,
        /// Delete only this fork (the callee's tag).
        #[arg(long)]
        to_tag: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// List call ids.
    List(Common),
    /// Show a call: legs, relay ports, peers, ICE state, per-stream counters.
    Show {
        /// Call-ID of the call.
        call_id: String,
        #[command(flatten)]
        common: Common,
    },
    /// Take over the foreign calls (held from Redis) whose media addresses are on this host:
    /// install their entries and ICE-lite agents and own them.
    Takeover(Common),
    /// Fast-path verdict counters (from the pinned map) and daemon statistics.
    Stats {
        /// bpffs directory the daemon pinned its maps under.
        #[arg(long, default_value = xdp::DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Live view of calls, per-stream packet rates (fast path and daemon) and drop reasons.
    Top(cli::TopArgs),
    /// Stop forwarding: detach the XDP program and remove the pins (stop the daemon first).
    Detach(PinArgs),
    /// Prepare the host for a daemon without root (the service's ExecStartPre, run as root):
    /// check the configuration, mount bpffs if absent, give USER the pin directory.
    Prepare {
        #[command(flatten)]
        pins: PinArgs,
        /// System user the daemon runs as.
        #[arg(long, default_value = "xdp-relay")]
        user: String,
    },
    /// Write the man pages and shell completions (used when packaging).
    #[command(hide = true)]
    Generate {
        /// Directory for the man pages (relay-ctl.1, one page per subcommand, xdp-relay.toml.5).
        #[arg(long)]
        man: Option<PathBuf>,
        /// Directory for the bash, zsh and fish completions.
        #[arg(long)]
        completions: Option<PathBuf>,
    },
}

/// The log filter, replaced on reload (SIGHUP) when log-level changes.
type LogHandle = reload::Handle<EnvFilter, tracing_subscriber::Registry>;

fn env_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(config::DEFAULT_LOG_LEVEL))
}

fn main() -> ExitCode {
    let (filter, log) = reload::Layer::new(env_filter());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // Under systemd stderr goes to the journal, which stamps every line itself.
    let fmt = if std::env::var_os("JOURNAL_STREAM").is_some() {
        fmt.without_time().boxed()
    } else {
        fmt.boxed()
    };
    tracing_subscriber::registry().with(filter).with(fmt).init();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Daemon(args) => commands::daemon::run(*args, log),
        Cmd::Ping(c) => cli::ping(&c),
        Cmd::Offer { media, common } => cli::offer_answer(&common, "offer", &media, None),
        Cmd::Answer {
            media,
            to_tag,
            common,
        } => cli::offer_answer(&common, "answer", &media, to_tag.as_deref()),
        Cmd::Delete {
            call_id,
            from_tag,
            to_tag,
            common,
        } => cli::delete(&common, &call_id, from_tag.as_deref(), to_tag.as_deref()),
        Cmd::List(c) => cli::list(&c),
        Cmd::Show { call_id, common } => cli::show(&common, &call_id),
        Cmd::Takeover(c) => cli::takeover(&c),
        Cmd::Stats { pin_dir, common } => commands::stats::print(&common, &pin_dir),
        Cmd::Top(args) => relay_ctl::top::run(&args),
        Cmd::Detach(pins) => commands::pin_dir::detach(&pins),
        Cmd::Prepare { pins, user } => commands::pin_dir::prepare(&pins, &user),
        Cmd::Generate { man, completions } => commands::generate::write(man, completions),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay-ctl: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Sets the log filter: `level`, else $RUST_LOG, else info.
fn set_log_level(log: &LogHandle, level: Option<&str>) -> Result<()> {
    let filter = match level {
        Some(l) => EnvFilter::builder().parse(l)?,
        None => env_filter(),
    };
    log.reload(filter).context("changing the log filter")
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    /// `[default: X]` at the end of a help text (written by hand, or appended by clap).
    fn default_of(cmd: &clap::Command, long: &str) -> String {
        let a = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(long))
            .unwrap_or_else(|| panic!("no --{long}"));
        let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
        let from_help = help
            .rsplit_once("[default: ")
            .map(|(_, d)| d.trim_end_matches(']').to_owned());
        let from_clap = a
            .get_default_values()
            .first()
            .map(|v| v.to_string_lossy().into_owned());
        from_help.or(from_clap).unwrap_or_default()
    }

    #[test]
    fn every_option_has_a_description_and_each_subcommand_only_its_own() {
        let cli = super::Cli::command();
        let client_opts = ["ng", "reply-timeout", "json"];
        for sub in cli.get_subcommands() {
            for a in sub.get_arguments() {
                let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
                assert!(
                    !help.trim().is_empty() && !help.contains('\n'),
                    "{} {:?}: needs a one-line description",
                    sub.get_name(),
                    a.get_id()
                );
            }
            let talks_ng = !matches!(sub.get_name(), "daemon" | "detach" | "prepare" | "generate");
            for o in client_opts {
                let has = sub.get_arguments().any(|a| a.get_long() == Some(o));
                // top has its own output: a screen, or plain text with --once.
                let want = talks_ng && !(o == "json" && sub.get_name() == "top");
                assert_eq!(has, want, "{} and --{o}", sub.get_name());
            }
        }
        // The daemon documents the default of every option, and it is the one applied.
        let d = cli.find_subcommand("daemon").unwrap();
        for a in d.get_arguments().filter(|a| a.get_long() != Some("help")) {
            let long = a.get_long().unwrap();
            assert!(
                !default_of(d, long).is_empty(),
                "daemon --{long}: no default"
            );
        }
        let c = relay_ctl::config::FileConfig {
            listen: Some(vec!["a/192.0.2.1".into()]),
            ..Default::default()
        }
        .merge(Default::default())
        .unwrap();
        for (long, value) in [
            ("port-min", c.port_min.to_string()),
            ("port-max", c.port_max.to_string()),
            ("timeout", c.media_timeout.as_secs().to_string()),
            ("silent-timeout", c.silent_timeout.as_secs().to_string()),
            ("final-timeout", c.final_timeout.as_secs().to_string()),
            ("latch-handover", c.latch_handover.as_millis().to_string()),
            ("max-streams", c.max_streams.to_string()),
            ("ice", c.ice_default.clone()),
            ("latching", c.latching.clone()),
            ("ng-listen", c.ng_listen.to_string()),
            ("pin-dir", c.pin_dir.display().to_string()),
            ("state-file", c.state_file.display().to_string()),
        ] {
            assert_eq!(default_of(d, long), value, "daemon --{long}");
        }
    }
}
