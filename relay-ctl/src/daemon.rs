//! The daemon's event loop: one task owns all state (the [`Engine`]); sockets feed it through
//! channels, so there are no locks and every state change happens in one place.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, UdpSocket},
    sync::{mpsc, oneshot},
};

use sd_notify::NotifyState;

use crate::{
    config::{self, Config},
    engine::{Engine, Now},
    metrics,
    ports::{Inbound, PortSockets},
    xdp,
};

/// Bound on queued relay-port datagrams: a flood of unknown-stream packets fills this queue
/// and the kernel drops the rest, while NG requests keep their own socket and get served.
const INBOUND_QUEUE: usize = 4096;
/// How often the host's addresses are read for the automatic takeover (getifaddrs).
const ADDRESS_POLL: Duration = Duration::from_millis(200);
/// NG requests handled per journal sync at most, besides the one that woke the loop.
const NG_BATCH: usize = 63;

/// The clocks the engine runs on, read here and nowhere in the engine.
pub fn now() -> Now {
    Now {
        instant: Instant::now(),
        wall: SystemTime::now(),
        fast_path_ns: xdp::monotonic_ns(),
    }
}

/// What SIGHUP (`systemctl reload`) needs from the binary: the configuration read again the
/// way it was at start (the same file and flags), and a way to change the log filter.
pub struct Reload {
    pub load: Box<dyn FnMut() -> Result<Config>>,
    pub set_log_level: SetLogLevel,
}

/// Replaces the log filter (None: RUST_LOG, else the default).
pub type SetLogLevel = Box<dyn FnMut(Option<&str>) -> Result<()>>;

/// Runs until SIGTERM or SIGINT; returns the configuration in force then (a reload may have
/// changed it).
pub async fn run(
    mut cfg: Config,
    engine_init: impl FnOnce(PortSockets, Now) -> Result<Engine>,
    mut reload: Reload,
) -> Result<Config> {
    raise_fd_limit(&cfg);
    let ng = UdpSocket::bind(cfg.ng_listen)
        .await
        .with_context(|| format!("binding the NG control socket {}", cfg.ng_listen))?;
    let (in_tx, mut in_rx) = mpsc::channel::<Inbound>(INBOUND_QUEUE);
    let mut engine = engine_init(PortSockets::new(in_tx), now())?;
    let mut remote = engine.take_remote_events();
    let mut addr_poll = tokio::time::interval(ADDRESS_POLL);
    addr_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let (mreq_tx, mut mreq_rx) = mpsc::channel::<oneshot::Sender<String>>(8);
    if let Some(addr) = cfg.metrics_listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics listener {addr}"))?;
        tokio::spawn(serve_metrics(listener, mreq_tx));
    }
    tracing::info!(ng = %cfg.ng_listen, metrics = ?cfg.metrics_listen, "relay daemon running");
    // systemd (Type=notify): ready once NG is served; a no-op without NOTIFY_SOCKET.
    notify(&[NotifyState::Ready]);

    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut device_watch = tokio::time::interval(std::time::Duration::from_secs(1));
    // Routes and neighbours, for next hops the fast path reads without a FIB lookup.
    let mut net = match crate::next_hop_watch::spawn() {
        Ok(rx) => Some(rx),
        Err(e) => {
            tracing::warn!(error = %e, "no netlink watcher: every stream uses the kernel FIB lookup");
            None
        }
    };
    let mut buf = vec![0u8; 65_536];
    loop {
        // The engine's earliest deadline: an agent's, a delayed delete, the media-timeout
        // sweep or the batched state write.
        let deadline = tokio::time::Instant::from_std(engine.poll_timeout());
        tokio::select! {
            biased;
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => {
                let mut state = vec![NotifyState::Reloading];
                state.extend(NotifyState::monotonic_usec_now().ok());
                notify(&state);
                apply_reload(&mut cfg, &mut reload, &mut engine);
                notify(&[NotifyState::Ready]);
            }
            () = tokio::time::sleep_until(deadline) => {
                engine.handle_timeout(now());
                engine.commit();
            }
            r = ng.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    // Group commit: the requests already waiting are handled too, and their
                    // changes made durable with one journal sync before any reply goes out.
                    let mut replies = Vec::new();
                    replies.extend(engine.handle_ng(now(), from, &buf[..n]).map(|r| (from, r)));
                    for _ in 0..NG_BATCH {
                        match ng.try_recv_from(&mut buf) {
                            Ok((n, from)) => replies
                                .extend(engine.handle_ng(now(), from, &buf[..n]).map(|r| (from, r))),
                            Err(_) => break,
                        }
                    }
                    engine.commit();
                    for (to, reply) in replies {
                        if let Err(e) = ng.send_to(&reply, to).await {
                            tracing::warn!(%to, error = %e, "sending NG reply");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "NG socket receive"),
            },
            Some(reply) = mreq_rx.recv() => {
                let _ = reply.send(format!(
                    "{}{}",
                    metrics::render(&engine.metrics()),
                    crate::rtpe_compat::render_metrics(&engine.rtpe_figures(now().instant))
                ));
            }
            Some(inbound) = in_rx.recv() => {
                engine.handle_inbound(now(), inbound);
                engine.commit();
            }
            // Devices that disappear are noticed within a second (their streams then go to the
            // daemon); nothing else depends on this timer.
            _ = device_watch.tick() => crate::datapath::watch(),
            Some(ev) = async {
                match remote.as_mut() {
                    Some(r) => r.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                engine.handle_remote(now(), ev);
                engine.commit();
            }
            Some(snap) = async {
                match net.as_mut() {
                    Some(r) => r.recv().await,
                    None => std::future::pending().await,
                }
            } => engine.net_changed(snap),
            _ = addr_poll.tick(), if engine.ha_enabled() => {
                engine.poll_addresses(now());
                engine.commit();
            }
        }
    }
    notify(&[NotifyState::Stopping]);
    engine.shutdown();
    Ok(cfg)
}

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::debug!(error = %e, "sd_notify");
    }
}

/// SIGHUP: re-reads the configuration; a bad one is refused whole (the running one stays), a
/// good one applies what can change live and names what needs a restart.
fn apply_reload(cfg: &mut Config, reload: &mut Reload, engine: &mut Engine) {
    let new = match (reload.load)() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("reload refused, the running configuration stays: {e:#}");
            return;
        }
    };
    let plan = config::reload_plan(cfg, &new);
    if plan.applied.contains(&"log-level")
        && let Err(e) = (reload.set_log_level)(new.log_level.as_deref())
    {
        tracing::error!("reload: log-level: {e:#}");
    }
    engine.set_timeouts(&new);
    cfg.media_timeout = new.media_timeout;
    cfg.silent_timeout = new.silent_timeout;
    cfg.final_timeout = new.final_timeout;
    cfg.log_level = new.log_level;
    cfg.detach = new.detach;
    if !plan.needs_restart.is_empty() {
        tracing::warn!(
            keys = %plan.needs_restart.join(", "),
            "configuration reloaded; these changes need a restart (systemctl restart xdp-relay; calls survive it) and are not applied"
        );
    }
    tracing::info!(
        applied = %if plan.applied.is_empty() { "nothing changed".to_owned() } else { plan.applied.join(", ") },
        "configuration reloaded"
    );
}

/// Every relay port is a socket: the descriptor limit, not the port range, would otherwise cap the
/// calls (at about 250 with the usual 1024).
fn raise_fd_limit(cfg: &Config) {
    let ports = u64::from(cfg.port_max.saturating_sub(cfg.port_min)) + 1;
    let needed = crate::fd_limit::needed(ports, cfg.interfaces.len() as u64);
    match crate::fd_limit::raise_for_ports(needed) {
        Ok(l) if l.enough() => {
            tracing::info!(
                limit = l.soft,
                needed,
                "file descriptor limit fits the port range"
            )
        }
        Ok(l) => tracing::warn!(
            limit = l.soft,
            hard = l.hard,
            needed,
            calls = l.calls(),
            "the file descriptor limit is below what the relay port range needs: about {} plain calls fit; raise LimitNOFILE (or run with CAP_SYS_RESOURCE)",
            l.calls()
        ),
        Err(e) => tracing::warn!(error = %e, "reading the file descriptor limit"),
    }
}

async fn serve_metrics(listener: TcpListener, req: mpsc::Sender<oneshot::Sender<String>>) {
    loop {
        let Ok((mut conn, peer)) = listener.accept().await else {
            continue;
        };
        let req = req.clone();
        tokio::spawn(async move {
            // Read the whole request head (it may arrive in pieces), bounded in size and time.
            let mut head = Vec::with_capacity(1024);
            let mut buf = [0u8; 1024];
            let read_head = async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
            };
            if tokio::time::timeout(Duration::from_secs(5), read_head)
                .await
                .is_err()
            {
                return;
            }
            let (tx, rx) = oneshot::channel();
            let body = if req.send(tx).await.is_ok() {
                rx.await.unwrap_or_default()
            } else {
                String::new()
            };
            let resp = metrics::http_response(&head, || body);
            if let Err(e) = conn.write_all(&resp).await {
                tracing::debug!(%peer, error = %e, "metrics response");
            }
        });
    }
}
