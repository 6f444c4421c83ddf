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
    engine::{Engine, JournalWrite, Now, Release},
    journal::JournalError,
    metrics,
    ports::{Inbound, PortSockets},
    xdp,
};

/// Bound on queued relay-port datagrams: a flood of unknown-stream packets fills this queue
/// and the kernel drops the rest, while NG requests keep their own socket and get served.
const INBOUND_QUEUE: usize = 4096;
/// The automatic takeover follows netlink address events; reading the host's addresses whole
/// this often is only a safety net (a lost event, a watch that could not start).
const ADDRESS_POLL: Duration = Duration::from_secs(5);
/// NG requests read in one go at most, besides the one that woke the loop.
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
    let mut addr_events = if engine.ha_enabled() {
        crate::state::host_addrs::watch()
            .map_err(|e| tracing::warn!(error = %e, "no netlink address watch: the automatic takeover reads the host's addresses every {ADDRESS_POLL:?} instead"))
            .ok()
    } else {
        None
    };

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
    let (done_tx, mut done_rx) = mpsc::channel(1);
    let mut commits = GroupCommit::new(done_tx);
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
            Some(change) = async {
                match addr_events.as_mut() {
                    Some(r) => r.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                let mut changes = vec![change];
                while let Some(Ok(c)) = addr_events.as_mut().map(|r| r.try_recv()) {
                    changes.push(c);
                }
                engine.address_changes(now(), changes);
                commits.advance(&mut engine, &ng).await;
            }
            Some(written) = done_rx.recv() => {
                commits.write_done(&mut engine, &ng, written).await;
            }
            () = tokio::time::sleep_until(deadline) => {
                engine.handle_timeout(now());
                commits.advance(&mut engine, &ng).await;
            }
            r = ng.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    // The requests already waiting are handled too; their replies go out once
                    // their changes are durable.
                    commits.reply(from, engine.handle_ng(now(), from, &buf[..n]));
                    for _ in 0..NG_BATCH {
                        match ng.try_recv_from(&mut buf) {
                            Ok((n, from)) => {
                                commits.reply(from, engine.handle_ng(now(), from, &buf[..n]))
                            }
                            Err(_) => break,
                        }
                    }
                    commits.advance(&mut engine, &ng).await;
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
                commits.advance(&mut engine, &ng).await;
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
                commits.advance(&mut engine, &ng).await;
            }
            Some(snap) = async {
                match net.as_mut() {
                    Some(r) => r.recv().await,
                    None => std::future::pending().await,
                }
            } => engine.net_changed(snap),
            _ = addr_poll.tick(), if engine.ha_enabled() => {
                engine.poll_addresses(now());
                commits.advance(&mut engine, &ng).await;
            }
        }
    }
    // The write in flight finishes and its replies go out before the final snapshot.
    if commits.in_flight()
        && let Some(written) = done_rx.recv().await
    {
        commits.write_done(&mut engine, &ng, written).await;
    }
    notify(&[NotifyState::Stopping]);
    engine.shutdown();
    Ok(cfg)
}

/// Group commit with one journal write in flight: while it syncs on a blocking thread the loop
/// keeps handling events, and what they change forms the next write. Replies, map changes and
/// datagrams wait for the write that makes their state durable; those that depend on nothing
/// unwritten go at once.
struct GroupCommit {
    in_flight: Option<InFlight>,
    /// Replies produced since the last write began.
    waiting: Vec<(std::net::SocketAddr, Vec<u8>)>,
    done: mpsc::Sender<Result<(), JournalError>>,
}

struct InFlight {
    release: Release,
    replies: Vec<(std::net::SocketAddr, Vec<u8>)>,
}

impl GroupCommit {
    fn new(done: mpsc::Sender<Result<(), JournalError>>) -> GroupCommit {
        GroupCommit {
            in_flight: None,
            waiting: Vec::new(),
            done,
        }
    }

    fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    fn reply(&mut self, to: std::net::SocketAddr, reply: Option<Vec<u8>>) {
        self.waiting.extend(reply.map(|r| (to, r)));
    }

    /// After every event: starts a write when none is in flight, and sends what needs none.
    async fn advance(&mut self, engine: &mut Engine, ng: &UdpSocket) {
        if self.in_flight.is_some() {
            if !engine.state_dirty() {
                // Only reads and datagrams of unchanged calls since the write began.
                engine.commit();
                send_replies(ng, std::mem::take(&mut self.waiting)).await;
            }
            return;
        }
        let (write, release) = engine.begin_commit();
        let Some(write) = write else {
            engine.finish_commit(None, release);
            send_replies(ng, std::mem::take(&mut self.waiting)).await;
            return;
        };
        self.in_flight = Some(InFlight {
            release,
            replies: std::mem::take(&mut self.waiting),
        });
        let done = self.done.clone();
        tokio::task::spawn_blocking(move || run_write(write, &done));
    }

    /// The write in flight is durable (or failed, counted): its changes and replies go out,
    /// and the next write starts with what accumulated meanwhile.
    async fn write_done(
        &mut self,
        engine: &mut Engine,
        ng: &UdpSocket,
        written: Result<(), JournalError>,
    ) {
        let Some(flight) = self.in_flight.take() else {
            return;
        };
        engine.finish_commit(Some(written), flight.release);
        send_replies(ng, flight.replies).await;
        self.advance(engine, ng).await;
    }
}

fn run_write(write: JournalWrite, done: &mpsc::Sender<Result<(), JournalError>>) {
    // The loop always waits for this answer before the next write; it only goes missing when
    // the daemon is stopping.
    let _ = done.blocking_send(write.run());
}

async fn send_replies(ng: &UdpSocket, replies: Vec<(std::net::SocketAddr, Vec<u8>)>) {
    for (to, reply) in replies {
        if let Err(e) = ng.send_to(&reply, to).await {
            tracing::warn!(%to, error = %e, "sending NG reply");
        }
    }
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
