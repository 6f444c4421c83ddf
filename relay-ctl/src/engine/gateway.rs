//! The engine's side of the WebRTC <-> SIP gateway ([`crate::gateway`]): DTLS records of a leg
//! whose SRTP the relay terminates go to that leg's endpoint, and its retransmissions and first
//! flights go out to the leg's peer. Media conversion itself sits in [`Engine::media`].

use std::net::SocketAddr;

use super::{Engine, Now, Outgoing};

impl Engine {
    /// A DTLS record on an endpoint whose stream the gateway converts, from the peer the entry
    /// expects; replies go back to it. A leg whose DTLS is not the relay's passes it on.
    pub(super) fn dtls(&mut self, now: Now, local: SocketAddr, source: SocketAddr, data: &[u8]) {
        let expected = self.table.get(&local).and_then(|e| e.expected_source);
        if expected.is_some_and(|s| s != source) {
            tracing::debug!(%local, %source, "DTLS from a source other than the leg's peer, dropped");
            return;
        }
        let before = self.gateway.counters.dtls_handshakes_ok;
        let Some(replies) = self.gateway.dtls(&local, now.instant, data) else {
            return self.media(now, local, source, data);
        };
        for r in replies {
            self.outbox.push(Outgoing {
                from: local,
                to: source,
                data: r,
                media: false,
            });
        }
        if self.gateway.counters.dtls_handshakes_ok != before
            && let Some(call_id) = self.call_of.get(&local).cloned()
        {
            // The exported keys go to the journal: a restart resumes without a handshake.
            self.state.mark(&call_id);
        }
    }

    /// DTLS retransmissions and first flights, to each leg's peer once it is known.
    pub(super) fn dtls_poll(&mut self, now: Now) {
        let out = self.gateway.poll(now.instant);
        if out.is_empty() {
            return;
        }
        for (local, rec) in out {
            let peer = self
                .table
                .get(&local)
                .and_then(|e| e.expected_source)
                .or_else(|| self.table.sending_from(&local).map(|e| e.rewrite.to));
            if let Some(peer) = peer {
                self.outbox.push(Outgoing {
                    from: local,
                    to: peer,
                    data: rec,
                    media: false,
                });
            }
        }
    }
}
