//! relay-ctl: the relay daemon (`relay-ctl daemon`) and its operator subcommands.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use relay_common::config::RelayConfig;
use relay_ctl::xdp::{self, AttachMode, Relay, Totals};

#[derive(Parser)]
#[command(name = "relay-ctl", version, about = "XDP media relay for SIP B2BUAs")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Load the XDP program, attach it and run the relay.
    Daemon(DaemonArgs),
    /// Show the fast path's verdict counters, summed over CPUs.
    Stats {
        /// bpffs directory the daemon pinned its maps under.
        #[arg(long, default_value = xdp::DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct DaemonArgs {
    /// Interface to attach the XDP program to (repeatable).
    #[arg(long = "interface", short = 'i', required = true)]
    interfaces: Vec<String>,
    /// First relay UDP port.
    #[arg(long, default_value_t = 30000)]
    port_min: u16,
    /// Last relay UDP port.
    #[arg(long, default_value_t = 40000)]
    port_max: u16,
    /// bpffs directory to pin maps under.
    #[arg(long, default_value = xdp::DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    /// Log the counters every this many seconds (0: never).
    #[arg(long, default_value_t = 0)]
    stats_interval: u64,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Daemon(args) => daemon(args),
        Cmd::Stats { pin_dir, json } => stats(&pin_dir, json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay-ctl: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn daemon(args: DaemonArgs) -> Result<()> {
    if args.port_min > args.port_max || args.port_min == 0 {
        bail!(
            "invalid port range {}-{}: need 1 <= --port-min <= --port-max",
            args.port_min,
            args.port_max
        );
    }
    let config = RelayConfig {
        port_min: args.port_min,
        port_max: args.port_max,
        flags: 0,
    };
    let mut relay = Relay::load(&config).context("loading the XDP program")?;
    for iface in &args.interfaces {
        let (_, mode) = relay
            .attach(iface)
            .with_context(|| format!("attaching to {iface}"))?;
        let mode = match mode {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        };
        tracing::info!(%iface, mode, "XDP program attached");
    }
    xdp::ensure_bpffs(&args.pin_dir)?;
    relay.pin_maps(&args.pin_dir)?;
    tracing::info!(pin_dir = %args.pin_dir.display(), ports = %format!("{}-{}", args.port_min, args.port_max), "relay running");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut tick = tokio::time::interval(Duration::from_secs(args.stats_interval.max(1)));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = tick.tick(), if args.stats_interval > 0 => {
                    let totals = xdp::read_totals(&relay.stats_map()?)?;
                    tracing::info!(packets = totals.packets(), "{}", one_line(&totals));
                }
            }
        }
        anyhow::Ok(())
    })?;
    // Dropping `relay` detaches the program; the pin goes with it.
    let _ = std::fs::remove_file(args.pin_dir.join(relay_common::names::STATS_MAP));
    let _ = std::fs::remove_dir(&args.pin_dir);
    tracing::info!("relay stopped");
    Ok(())
}

fn one_line(t: &Totals) -> String {
    t.0.iter()
        .filter(|(_, e)| e.packets > 0)
        .map(|(r, e)| format!("{}={}", r.name(), e.packets))
        .collect::<Vec<_>>()
        .join(" ")
}

fn stats(pin_dir: &std::path::Path, json: bool) -> Result<()> {
    let map = xdp::open_pinned_stats(pin_dir).with_context(|| {
        format!(
            "opening the stats map pinned under {} (is `relay-ctl daemon` running?)",
            pin_dir.display()
        )
    })?;
    let totals = xdp::read_totals(&map)?;
    if json {
        let rows: Vec<_> = totals
            .0
            .iter()
            .map(|(r, e)| {
                serde_json::json!({
                    "reason": r.name(),
                    "verdict": r.verdict().name(),
                    "packets": e.packets,
                    "bytes": e.bytes,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "{:<22} {:<9} {:>14} {:>16}",
            "REASON", "VERDICT", "PACKETS", "BYTES"
        );
        for (r, e) in &totals.0 {
            println!(
                "{:<22} {:<9} {:>14} {:>16}",
                r.name(),
                r.verdict().name(),
                e.packets,
                e.bytes
            );
        }
    }
    Ok(())
}
