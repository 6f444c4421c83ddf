//! relay-ctl: the relay daemon (`relay-ctl daemon`) and its operator subcommands.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::{CommandFactory as _, Parser, Subcommand};
use relay_common::config::{FLAG_TX_VIA_REDIRECT, RelayConfig};
use relay_ctl::{
    cli::{self, Common, MediaArgs},
    config::{self, FileConfig},
    daemon,
    datapath::{self, Choice},
    engine::Engine,
    host,
    pins::{self, Attached},
    xdp::{self, AttachMode},
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

/// Where the pins are: `--pin-dir`, else the configuration file's `pin-dir`, else the default.
#[derive(clap::Args)]
struct PinArgs {
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

/// Every option may also be set in the --config file under the same name (flags win).
#[derive(clap::Args, Clone)]
struct DaemonArgs {
    /// TOML configuration file; flags override its keys (same names) [default: none].
    #[arg(long)]
    config: Option<PathBuf>,
    /// Logical interface NAME/ADDRESS[!ADVERTISED] (repeatable), as rtpengine's --interface [default: none; at least one is required].
    #[arg(long, value_name = "SPEC")]
    listen: Vec<String>,
    /// Network device to run the fast path on (repeatable): DEV, or DEV:MODE to override --datapath for it [default: none: media goes through the daemon].
    #[arg(long = "interface", short = 'i', value_name = "DEV[:MODE]")]
    interfaces: Vec<String>,
    /// Fast-path hook: auto (native XDP on NICs, TC on veth and other virtual devices), xdp or tc [default: auto].
    #[arg(long, value_name = "MODE")]
    datapath: Option<String>,
    /// Lowest relay port, even [default: 30000].
    #[arg(long, value_name = "PORT")]
    port_min: Option<u16>,
    /// Highest relay port [default: 40000].
    #[arg(long, value_name = "PORT")]
    port_max: Option<u16>,
    /// Seconds without media before a call is deleted [default: 60].
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Seconds without media before a call on hold is deleted [default: 3600].
    #[arg(long, value_name = "SECS")]
    silent_timeout: Option<u64>,
    /// Seconds after creation any call is deleted, 0 for never [default: 0].
    #[arg(long, value_name = "SECS")]
    final_timeout: Option<u64>,
    /// Capacity of the XDP stream table, one entry per relay endpoint; pinned maps keep their size [default: 65536].
    #[arg(long, value_name = "N")]
    max_streams: Option<u32>,
    /// Also keep calls in Redis (redis://[:PASSWORD@]HOST[:PORT][/DB]): standby takeover, pools [default: none, the state file only].
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Prefix of the relay's Redis keys [default: xdp-relay:].
    #[arg(long, value_name = "PREFIX")]
    redis_key_prefix: Option<String>,
    /// Expiry of a call's Redis key, seconds; live calls' keys are refreshed [default: 86400].
    #[arg(long, value_name = "SECONDS")]
    redis_expires: Option<u64>,
    /// This relay's id as owner of its calls [default: the host name].
    #[arg(long, value_name = "ID")]
    relay_id: Option<String>,
    /// Start as a standby: hold the other relays' calls as foreign until a takeover [default: off].
    #[arg(long)]
    standby: bool,
    /// auto: take over foreign calls when their media address appears here; manual: only on `relay-ctl takeover` [default: auto].
    #[arg(long, value_name = "MODE")]
    takeover: Option<String>,
    /// Most calls held at once (rtpengine's max-sessions); an offer for a new call beyond it gets `load limit` (proxies that say they support it) or an error [default: 0, no limit].
    #[arg(long, value_name = "N")]
    max_sessions: Option<u64>,
    /// Default ICE handling: default, force, remove, optional [default: default].
    #[arg(long)]
    ice: Option<String>,
    /// Default latching for non-ICE legs: auto, symmetric, strict [default: auto].
    #[arg(long)]
    latching: Option<String>,
    /// Address of the NG control socket (UDP) [default: 127.0.0.1:2223].
    #[arg(long, value_name = "ADDR")]
    ng_listen: Option<SocketAddr>,
    /// Address of the Prometheus /metrics listener (TCP) [default: none, no metrics].
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// bpffs directory for the pinned maps and links [default: /sys/fs/bpf/xdp-relay].
    #[arg(long, value_name = "DIR")]
    pin_dir: Option<PathBuf>,
    /// File the calls are saved to, so a restarted daemon keeps them [default: /var/lib/xdp-relay/sessions.json].
    #[arg(long, value_name = "FILE")]
    state_file: Option<PathBuf>,
    /// The relay's DTLS certificate (PEM, made if missing) [default: dtls-cert.pem beside the state file].
    #[arg(long, value_name = "PATH")]
    dtls_cert: Option<PathBuf>,
    /// Log filter, tracing's EnvFilter syntax (reloadable) [default: $RUST_LOG, else info].
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// On exit, detach the program and remove the pins [default: off: forwarding goes on].
    #[arg(long)]
    detach: bool,
}

impl DaemonArgs {
    /// The flags as a configuration layer over the file.
    fn flags(&self) -> FileConfig {
        FileConfig {
            listen: (!self.listen.is_empty()).then(|| self.listen.clone()),
            interface: (!self.interfaces.is_empty()).then(|| self.interfaces.clone()),
            port_min: self.port_min,
            port_max: self.port_max,
            timeout: self.timeout,
            silent_timeout: self.silent_timeout,
            final_timeout: self.final_timeout,
            max_streams: self.max_streams,
            max_sessions: self.max_sessions,
            redis: self.redis.clone(),
            redis_key_prefix: self.redis_key_prefix.clone(),
            redis_expires: self.redis_expires,
            relay_id: self.relay_id.clone(),
            standby: self.standby.then_some(true),
            takeover: self.takeover.clone(),
            dtls_cert: self.dtls_cert.clone(),
            ice: self.ice.clone(),
            latching: self.latching.clone(),
            ng_listen: self.ng_listen,
            metrics_listen: self.metrics_listen,
            pin_dir: self.pin_dir.clone(),
            state_file: self.state_file.clone(),
            log_level: self.log_level.clone(),
            detach: self.detach.then_some(true),
            datapath: self.datapath.clone(),
        }
    }
}

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
        Cmd::Daemon(args) => run_daemon(*args, log),
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
        Cmd::Stats { pin_dir, common } => stats(&common, &pin_dir),
        Cmd::Top(args) => relay_ctl::top::run(&args),
        Cmd::Detach(pins) => detach(&pins),
        Cmd::Prepare { pins, user } => prepare(&pins, &user),
        Cmd::Generate { man, completions } => generate(man, completions),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay-ctl: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn set_log_level(log: &LogHandle, level: Option<&str>) -> Result<()> {
    let filter = match level {
        Some(l) => EnvFilter::builder().parse(l)?,
        None => env_filter(),
    };
    log.reload(filter).context("changing the log filter")
}

fn run_daemon(args: DaemonArgs, log: LogHandle) -> Result<()> {
    // Everything is validated before anything is loaded, bound or attached.
    let flags = args.flags();
    let cfg = config::load(args.config.as_deref(), flags.clone())?;
    set_log_level(&log, cfg.log_level.as_deref())?;
    // Devices are probed and each one's hook decided before anything is loaded or attached.
    let plan = datapath::plan(&cfg.xdp_devices, cfg.datapath)?;
    xdp::ensure_bpffs(&cfg.pin_dir)?;
    // XDP_TX is never used where the device cannot deliver it (XDP on a virtual device).
    let tx_via_redirect = plan.iter().any(|p| p.xdp && p.info.is_virtual);
    let rc = RelayConfig {
        port_min: cfg.port_min,
        port_max: cfg.port_max,
        flags: if tx_via_redirect {
            FLAG_TX_VIA_REDIRECT
        } else {
            0
        },
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
    for p in &plan {
        attach_planned(&mut relay, p, &cfg.pin_dir)?;
    }
    for p in &plan {
        let dev = &p.info.name;
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
    let mut detach = cfg.detach;
    let config_path = args.config.clone();
    let reload = daemon::Reload {
        load: Box::new(move || Ok(config::load(config_path.as_deref(), flags.clone())?)),
        set_log_level: Box::new(move |l| set_log_level(&log, l)),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let engine_cfg = cfg.clone();
    let result = rt.block_on(daemon::run(
        cfg,
        move |ports, now| Engine::new(engine_cfg, Box::new(relay), Box::new(ports), now),
        reload,
    ));
    if let Ok(last) = &result {
        detach = last.detach;
    }
    if detach {
        pins::detach_all(&pin_dir).context("detaching")?;
        tracing::info!("XDP program detached, pins removed");
    }
    result.map(|_| ())
}

fn detach(pins: &PinArgs) -> Result<()> {
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
fn prepare(pins: &PinArgs, user: &str) -> Result<()> {
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

fn generate(man: Option<PathBuf>, completions: Option<PathBuf>) -> Result<()> {
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

/// Attaches one device's hook as planned. `auto` on a NIC whose driver refuses native XDP moves
/// to TC (never to generic XDP, which loses the skb's checksum state for no gain).
fn attach_planned(
    relay: &mut xdp::Relay,
    p: &datapath::Planned,
    pin_dir: &std::path::Path,
) -> Result<()> {
    let dev = &p.info.name;
    let tc = |relay: &mut xdp::Relay| {
        pins::attach_tc(relay, dev, pin_dir).with_context(|| {
            format!("attaching TC to {dev} (the fast path on virtual devices; use --interface {dev}:xdp to try XDP)")
        })
    };
    let (how, hook) = if p.xdp {
        match pins::attach_xdp(relay, dev, pin_dir, p.choice == Choice::Xdp) {
            Ok(
                how
                @ (Attached::New(AttachMode::Generic) | Attached::Unpinned(AttachMode::Generic)),
            ) => (how, datapath::Hook::XdpGeneric),
            Ok(how) => (how, datapath::Hook::XdpNative),
            Err(e) if p.choice == Choice::Auto => {
                tracing::warn!(%dev, driver = %p.info.driver, error = %e, "native XDP refused (a VM's virtio-net needs as many queues as CPUs for XDP: ethtool -L DEV combined N); running TC on this device");
                (tc(relay)?, datapath::Hook::Tc)
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("attaching XDP to {dev} (use --interface {dev}:tc for the TC datapath)")
                });
            }
        }
    } else {
        (tc(relay)?, datapath::Hook::Tc)
    };
    match how {
        Attached::Replaced => tracing::info!(%dev, "program replaced in the pinned link"),
        Attached::Unpinned(_) => tracing::info!(%dev, "attached (not pinned)"),
        Attached::New(_) => {}
    }
    datapath::record(
        pin_dir,
        datapath::Running {
            dev: dev.clone(),
            ifindex: p.info.ifindex,
            driver: p.info.driver.clone(),
            choice: p.choice,
            hook,
            gone: false,
        },
    );
    Ok(())
}

fn stats(c: &Common, pin_dir: &std::path::Path) -> Result<()> {
    let map = xdp::open_pinned_stats(pin_dir).with_context(|| {
        format!(
            "opening the stats map pinned under {} (is the relay running?)",
            pin_dir.display()
        )
    })?;
    let totals = xdp::read_totals(&map)?;
    // Absent under pins of a daemon from before the events map: shown as none.
    let events = xdp::open_pinned_events(pin_dir)
        .and_then(|m| xdp::read_events(&m))
        .unwrap_or_default();
    // The daemon may be down while the fast path keeps forwarding; its part is optional.
    let daemon = cli::statistics(c).ok();
    // Which hook each device runs: the daemon says (with driver and state); without it, the
    // pinned links' names do.
    let datapaths = daemon
        .as_ref()
        .and_then(|d| d.get("statistics"))
        .and_then(|s| s.get("datapath"))
        .cloned()
        .unwrap_or_else(|| {
            serde_json::Value::Array(
                pins::pinned_links(pin_dir)
                    .into_iter()
                    .map(|(dev, hook)| serde_json::json!({"device": dev, "datapath": hook, "state": "pinned"}))
                    .collect(),
            )
        });
    if c.json {
        let rows: Vec<_> = totals
            .0
            .iter()
            .map(|(r, e)| {
                serde_json::json!({"reason": r.name(), "verdict": r.verdict().name(), "packets": e.packets, "bytes": e.bytes})
            })
            .collect();
        let events: serde_json::Map<String, serde_json::Value> = events
            .iter()
            .map(|(e, n)| (e.name().to_owned(), serde_json::json!(n)))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"fastpath": rows, "events": events, "datapath": datapaths, "daemon": daemon})
            )?
        );
        return Ok(());
    }
    println!("{:<16} {:<12} {:<12} STATE", "DEVICE", "DATAPATH", "DRIVER");
    for d in datapaths.as_array().into_iter().flatten() {
        let f = |k: &str| d.get(k).and_then(|v| v.as_str()).unwrap_or("-").to_owned();
        println!(
            "{:<16} {:<12} {:<12} {}",
            f("device"),
            f("datapath"),
            f("driver"),
            f("state")
        );
    }
    println!();
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
    // Counted besides the reasons: e.g. forwarded frames whose next hop needed the FIB.
    println!();
    println!("{:<22} {:>14}", "EVENT", "PACKETS");
    for (e, n) in &events {
        println!("{:<22} {:>14}", e.name(), n);
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

    #[test]
    fn config_man_page_lists_every_key() {
        let cli = super::Cli::command();
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
