//! The relay endpoints' UDP sockets as the engine sees them: bound and unbound as calls come and
//! go, sending STUN replies and media the daemon forwards itself. Datagrams come in through
//! [`super::Engine::handle_inbound`]; the shell (or a test) owns the receiving side.

use std::net::SocketAddr;

use relay_core::session::PortCheck;

pub trait RelaySockets {
    /// Binds `local` (idempotent).
    fn bind(&mut self, local: SocketAddr) -> std::io::Result<()>;
    fn unbind(&mut self, local: &SocketAddr);
    /// Sends from the socket bound to `local`; false when not sent (errors are not fatal).
    fn send(&self, local: &SocketAddr, to: SocketAddr, data: &[u8]) -> bool;
    /// How the port allocator tests a port before offering it: another program may hold it.
    fn port_check(&self) -> PortCheck;
    /// True once a port test failed for want of file descriptors (EMFILE/ENFILE), not because
    /// the port was taken: the limit, not the range, is what ran out.
    fn descriptors_exhausted(&self) -> bool {
        false
    }
}
