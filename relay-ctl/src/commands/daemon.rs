//! `relay-ctl daemon`: its options (a configuration layer over the file), and the start:
//! validate, load and attach the fast path, run the event loop, detach on exit if asked.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::{Context as _, Result};
use relay_common::config::{FLAG_TX_VIA_REDIRECT, RelayConfig};
use relay_ctl::{
    config::{self, FileConfig},
    daemon,
    datapath::{self, Choice},
    engine::Engine,
    pins::{self, Attached},
    xdp::{self, AttachMode},
};

use crate::{LogHandle, set_log_level};

/// Every option may also be set in the --config file under the same name (flags win).
#[derive(clap::Args, Clone)]
pub struct DaemonArgs {
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
    /// Milliseconds a latched source must be silent before another may take its stream over (NAT rebinding); until then other sources are dropped in the fast path [default: 2000].
    #[arg(long, value_name = "MS")]
    latch_handover: Option<u64>,
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
            latch_handover: self.latch_handover,
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

/// Runs the daemon until it is stopped; detaches on exit when asked (flag, file or reload).
pub fn run(args: DaemonArgs, log: LogHandle) -> Result<()> {
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
