//! relay-ctl: the relay daemon (`relay-ctl daemon`) and its operator subcommands.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use relay_common::config::RelayConfig;
use relay_ctl::{
    cli::{self, Common, MediaArgs},
    config::{Config, FileConfig},
    daemon,
    engine::Engine,
    pins::{self, Attached},
    xdp,
};

#[derive(Parser)]
#[command(name = "relay-ctl", version, about = "XDP media relay for SIP B2BUAs")]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the relay: load and attach the XDP program, serve NG on --ng-listen.
    Daemon(Box<DaemonArgs>),
    /// Check that the daemon answers.
    Ping,
    /// Send an SDP offer; prints the SDP to forward to the callee.
    Offer(MediaArgs),
    /// Send an SDP answer; prints the SDP to forward to the caller.
    Answer {
        #[command(flatten)]
        media: MediaArgs,
        /// The callee's tag (taken from the message's To with --sip).
        #[arg(long)]
        to_tag: Option<String>,
    },
    /// Delete a call, or one leg of it.
    Delete {
        #[arg(long)]
        call_id: String,
        #[arg(long)]
        from_tag: Option<String>,
        #[arg(long)]
        to_tag: Option<String>,
    },
    /// List call ids.
    List,
    /// Show a call: legs, relay ports, peers, ICE state, per-stream counters.
    Show { call_id: String },
    /// Fast-path verdict counters (from the pinned map) and daemon statistics.
    Stats {
        /// bpffs directory the daemon pinned its maps under.
        #[arg(long, default_value = xdp::DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct DaemonArgs {
    /// TOML configuration file; flags override its keys (same names).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Logical interface NAME/ADDRESS[!ADVERTISED] (repeatable), as rtpengine's --interface.
    #[arg(long)]
    listen: Vec<String>,
    /// Network device to attach the XDP program to (repeatable).
    #[arg(long = "interface", short = 'i')]
    interfaces: Vec<String>,
    #[arg(long)]
    port_min: Option<u16>,
    #[arg(long)]
    port_max: Option<u16>,
    /// Media timeout, seconds.
    #[arg(long)]
    timeout: Option<u64>,
    /// Media timeout for calls on hold, seconds.
    #[arg(long)]
    silent_timeout: Option<u64>,
    /// Delete any call this long after it was created, seconds (0: never).
    #[arg(long)]
    final_timeout: Option<u64>,
    /// Capacity of the XDP stream table: one entry per relay endpoint (RTP and RTCP of each
    /// leg), default 65536. A restarted daemon keeps the size of the maps it re-opens.
    #[arg(long)]
    max_streams: Option<u32>,
    /// Default ICE handling: default, force, remove, optional.
    #[arg(long)]
    ice: Option<String>,
    /// Default latching for non-ICE legs: auto, symmetric, strict.
    #[arg(long)]
    latching: Option<String>,
    #[arg(long)]
    ng_listen: Option<SocketAddr>,
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    #[arg(long)]
    pin_dir: Option<PathBuf>,
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// The relay's DTLS certificate (PEM, made if missing); default beside the state file.
    #[arg(long)]
    dtls_cert: Option<PathBuf>,
    /// On exit, detach the program and remove the pins (default: keep forwarding).
    #[arg(long)]
    detach: bool,
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
    let c = &cli.common;
    let result = match cli.cmd {
        Cmd::Daemon(args) => run_daemon(*args),
        Cmd::Ping => cli::ping(c),
        Cmd::Offer(m) => cli::offer_answer(c, "offer", &m, None),
        Cmd::Answer { media, to_tag } => cli::offer_answer(c, "answer", &media, to_tag.as_deref()),
        Cmd::Delete {
            call_id,
            from_tag,
            to_tag,
        } => cli::delete(c, &call_id, from_tag.as_deref(), to_tag.as_deref()),
        Cmd::List => cli::list(c),
        Cmd::Show { call_id } => cli::show(c, &call_id),
        Cmd::Stats { pin_dir } => stats(c, &pin_dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay-ctl: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn daemon_config(args: &DaemonArgs) -> Result<Config> {
    let file = match &args.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let flags = FileConfig {
        listen: (!args.listen.is_empty()).then(|| args.listen.clone()),
        interface: (!args.interfaces.is_empty()).then(|| args.interfaces.clone()),
        port_min: args.port_min,
        port_max: args.port_max,
        timeout: args.timeout,
        silent_timeout: args.silent_timeout,
        final_timeout: args.final_timeout,
        max_streams: args.max_streams,
        ice: args.ice.clone(),
        latching: args.latching.clone(),
        ng_listen: args.ng_listen,
        metrics_listen: args.metrics_listen,
        pin_dir: args.pin_dir.clone(),
        state_file: args.state_file.clone(),
        dtls_cert: args.dtls_cert.clone(),
    };
    Ok(file.merge(flags)?)
}

fn run_daemon(args: DaemonArgs) -> Result<()> {
    // Everything is validated before anything is loaded, bound or attached.
    let cfg = daemon_config(&args)?;
    xdp::ensure_bpffs(&cfg.pin_dir)?;
    let rc = RelayConfig {
        port_min: cfg.port_min,
        port_max: cfg.port_max,
        flags: 0,
    };
    let mut relay =
        pins::load(&rc, &cfg.pin_dir, cfg.max_streams).context("loading the XDP program")?;
    let capacity = relay.stream_capacity()?;
    if capacity != cfg.max_streams {
        tracing::warn!(
            configured = cfg.max_streams,
            capacity,
            "the pinned stream table keeps the size it was created with; --detach and restart to resize it"
        );
    }
    for dev in &cfg.xdp_devices {
        let how = pins::attach(&mut relay, dev, &cfg.pin_dir)
            .with_context(|| format!("attaching to {dev}"))?;
        match how {
            Attached::New(mode) => tracing::info!(%dev, ?mode, "XDP program attached"),
            Attached::Replaced => tracing::info!(%dev, "XDP program replaced in the pinned link"),
            Attached::Unpinned(mode) => {
                tracing::info!(%dev, ?mode, "XDP program attached (not pinned)")
            }
        }
    }
    for dev in &cfg.xdp_devices {
        let ifindex = xdp::ifindex(dev).with_context(|| format!("no device {dev}"))?;
        relay
            .add_egress(ifindex)
            .with_context(|| format!("registering {dev} for redirects"))?;
        if !xdp::forwarding_enabled(dev) {
            tracing::warn!(%dev, "IP forwarding is off on this device: the kernel FIB lookup from XDP refuses it, so media falls back to userspace; enable net.ipv4.conf.{dev}.forwarding and net.ipv6.conf.{dev}.forwarding");
        }
    }
    if let Some((lo, hi)) = xdp::ephemeral_overlap(cfg.port_min, cfg.port_max) {
        tracing::warn!(
            port_min = cfg.port_min,
            port_max = cfg.port_max,
            "the relay port range overlaps the kernel's ephemeral ports {lo}-{hi}: other programs' sockets can take relay ports (offers then get a port that cannot be bound); move the range or reserve it in net.ipv4.ip_local_reserved_ports"
        );
    }
    let pin_dir = cfg.pin_dir.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(daemon::run(cfg.clone(), move |ports, now| {
        Engine::new(cfg, Box::new(relay), Box::new(ports), now)
    }));
    if args.detach {
        pins::detach_all(&pin_dir).context("detaching")?;
        tracing::info!("XDP program detached, pins removed");
    }
    result
}

fn stats(c: &Common, pin_dir: &std::path::Path) -> Result<()> {
    let map = xdp::open_pinned_stats(pin_dir).with_context(|| {
        format!(
            "opening the stats map pinned under {} (is the relay running?)",
            pin_dir.display()
        )
    })?;
    let totals = xdp::read_totals(&map)?;
    // The daemon may be down while the fast path keeps forwarding; its part is optional.
    let daemon = cli::statistics(c).ok();
    if c.json {
        let rows: Vec<_> = totals
            .0
            .iter()
            .map(|(r, e)| {
                serde_json::json!({"reason": r.name(), "verdict": r.verdict().name(), "packets": e.packets, "bytes": e.bytes})
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"fastpath": rows, "daemon": daemon}))?
        );
        return Ok(());
    }
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
    match daemon
        .as_ref()
        .and_then(|d| d.get("statistics"))
        .and_then(|s| s.get("currentstatistics"))
    {
        Some(cur) => println!(
            "\nsessions: {} own, {} total",
            cur.get("sessionsown").unwrap_or(&serde_json::Value::Null),
            cur.get("sessionstotal").unwrap_or(&serde_json::Value::Null)
        ),
        None => println!(
            "\ndaemon: not answering on {} (the fast path runs without it)",
            c.ng
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
