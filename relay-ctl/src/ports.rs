//! One UDP socket per allocated relay port. STUN and media that the fast path passes up arrive
//! here and are handed to the daemon's single event loop; replies go out of the same socket.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use tokio::{net::UdpSocket, sync::mpsc, task::JoinHandle};

/// Largest datagram read from a relay port: a UDP payload over IPv4 can be this long.
const RECV_BUFFER: usize = 65_535;

/// A datagram received on a relay port.
#[derive(Debug)]
pub struct Inbound {
    pub local: SocketAddr,
    pub source: SocketAddr,
    pub data: Vec<u8>,
}

struct Bound {
    socket: Arc<UdpSocket>,
    task: JoinHandle<()>,
}

/// The set of bound relay ports.
pub struct PortSockets {
    bound: HashMap<SocketAddr, Bound>,
    tx: mpsc::Sender<Inbound>,
    /// Set by the port check when a test bind failed with EMFILE/ENFILE.
    descriptors_exhausted: Arc<std::sync::atomic::AtomicBool>,
}

impl PortSockets {
    /// `tx` receives every datagram; it is bounded so a flood cannot grow memory without limit
    /// (excess datagrams are dropped by the kernel once the socket buffer fills).
    pub fn new(tx: mpsc::Sender<Inbound>) -> PortSockets {
        PortSockets {
            bound: HashMap::new(),
            tx,
            descriptors_exhausted: Arc::default(),
        }
    }

    /// Binds `local` (idempotent).
    pub fn bind(&mut self, local: SocketAddr) -> std::io::Result<()> {
        if self.bound.contains_key(&local) {
            return Ok(());
        }
        let std_sock = std::net::UdpSocket::bind(local)?;
        std_sock.set_nonblocking(true)?;
        let socket = Arc::new(UdpSocket::from_std(std_sock)?);
        let (rx_sock, tx) = (Arc::clone(&socket), self.tx.clone());
        let task = tokio::spawn(receive(rx_sock, local, tx));
        self.bound.insert(local, Bound { socket, task });
        Ok(())
    }

    pub fn unbind(&mut self, local: &SocketAddr) {
        if let Some(b) = self.bound.remove(local) {
            b.task.abort();
        }
    }

    pub fn is_bound(&self, local: &SocketAddr) -> bool {
        self.bound.contains_key(local)
    }

    pub fn len(&self) -> usize {
        self.bound.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bound.is_empty()
    }

    /// Sends from the socket bound to `local`; errors are logged, not fatal (ICMP unreachable
    /// from a peer must not stop the relay).
    pub fn send(&self, local: &SocketAddr, to: SocketAddr, data: &[u8]) -> bool {
        match self.bound.get(local) {
            Some(b) => match b.socket.try_send_to(data, to) {
                Ok(_) => true,
                Err(e) => {
                    tracing::debug!(%local, %to, error = %e, "send from relay port");
                    false
                }
            },
            None => false,
        }
    }
}

/// Hands every datagram of one relay port to the event loop. The future holds no buffer while it
/// waits: a datagram is read into a stack buffer only once the socket is readable, so an idle
/// relay port costs a few hundred bytes, not 64 KiB (thousands of calls, four sockets each).
async fn receive(socket: Arc<UdpSocket>, local: SocketAddr, tx: mpsc::Sender<Inbound>) {
    loop {
        if let Err(e) = socket.readable().await {
            tracing::debug!(%local, error = %e, "relay port readiness");
            return;
        }
        loop {
            let mut buf = [0u8; RECV_BUFFER];
            match socket.try_recv_from(&mut buf) {
                Ok((n, source)) => {
                    let msg = Inbound {
                        local,
                        source,
                        data: buf[..n].to_vec(),
                    };
                    // Full queue: drop rather than stall the socket (the loop is behind).
                    if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(msg) {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!(%local, error = %e, "recv on relay port");
                    break;
                }
            }
        }
    }
}

impl crate::engine::RelaySockets for PortSockets {
    fn bind(&mut self, local: SocketAddr) -> std::io::Result<()> {
        PortSockets::bind(self, local)
    }

    fn unbind(&mut self, local: &SocketAddr) {
        PortSockets::unbind(self, local)
    }

    fn send(&self, local: &SocketAddr, to: SocketAddr, data: &[u8]) -> bool {
        PortSockets::send(self, local, to, data)
    }

    fn port_check(&self) -> relay_core::session::PortCheck {
        // A port another program holds is skipped at allocation, not discovered at bind time.
        let exhausted = Arc::clone(&self.descriptors_exhausted);
        Box::new(
            move |ip, port| match std::net::UdpSocket::bind(SocketAddr::new(ip, port)) {
                Ok(_) => {
                    exhausted.store(false, std::sync::atomic::Ordering::Relaxed);
                    true
                }
                Err(e) => {
                    if crate::fd_limit::is_exhaustion(&e) {
                        exhausted.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    false
                }
            },
        )
    }

    fn descriptors_exhausted(&self) -> bool {
        self.descriptors_exhausted
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for PortSockets {
    fn drop(&mut self) {
        for b in self.bound.values() {
            b.task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_idle_port_holds_no_receive_buffer() {
        let (tx, _rx) = mpsc::channel(1);
        let std_sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        std_sock.set_nonblocking(true).unwrap();
        let local = std_sock.local_addr().unwrap();
        let sock = Arc::new(UdpSocket::from_std(std_sock).unwrap());
        let fut = receive(sock, local, tx);
        assert!(
            std::mem::size_of_val(&fut) < 1024,
            "{}",
            std::mem::size_of_val(&fut)
        );
    }

    #[tokio::test]
    async fn datagrams_reach_the_loop_and_replies_leave_the_same_port() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut ports = PortSockets::new(tx);
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let local = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap()
        };
        ports.bind(local).unwrap();
        ports.bind(local).unwrap();
        assert_eq!(ports.len(), 1);
        probe.send_to(b"\x80hello", local).unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(2), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (got.local, got.source, got.data.as_slice()),
            (local, probe.local_addr().unwrap(), &b"\x80hello"[..])
        );
        assert!(ports.send(&local, got.source, b"back"));
        let mut buf = [0u8; 16];
        probe
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let (n, from) = probe.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"back"[..], local));
        ports.unbind(&local);
        assert!(!ports.is_bound(&local));
        assert!(!ports.send(&local, got.source, b"x"));
    }
}
