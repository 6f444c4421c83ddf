//! One call as a self-contained, versioned record: what a write-ahead journal appends per change
//! and what a shared store (Redis) keeps per key. A record names its interfaces instead of
//! indexing the local list, so another daemon with the same logical interfaces can import it.

use std::net::SocketAddr;

use super::interfaces::LogicalInterface;
use super::model::{Call, Side};
use super::{CallUpdate, SessionError, Sessions};
use crate::forwarding::StreamId;

/// Format of [`CallRecord`] written by this version.
pub const CALL_RECORD_VERSION: u32 = 1;

/// One call, exported by [`Sessions::export_call`], imported by [`Sessions::import_call`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CallRecord {
    pub version: u32,
    pub call_id: String,
    /// The offerer's side's interface, then the answerer's.
    interfaces: [LogicalInterface; 2],
    call: Call,
}

impl CallRecord {
    /// The relay endpoints the record's call uses (sockets to bind, ports to reserve).
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for (side, cs) in self.call.sides() {
            let bind = self.interfaces[side_index(side)].bind;
            for st in &cs.streams {
                for p in [st.rtp, st.rtcp].into_iter().flatten() {
                    out.push(SocketAddr::new(bind, p));
                }
            }
        }
        out
    }
}

fn side_index(s: Side) -> usize {
    match s {
        Side::Offerer => 0,
        Side::Answerer => 1,
    }
}

impl Sessions {
    /// The call as a record, or None if there is no such call.
    pub fn export_call(&self, call_id: &str) -> Option<CallRecord> {
        let call = self.calls.get(call_id)?;
        Some(CallRecord {
            version: CALL_RECORD_VERSION,
            call_id: call_id.to_owned(),
            interfaces: [Side::Offerer, Side::Answerer]
                .map(|s| self.interfaces[call[s].iface].clone()),
            call: call.clone(),
        })
    }

    /// Puts a recorded call in place (replacing a call of the same id): its interfaces are
    /// looked up by name and address, its ports reserved, its streams numbered afresh. Refused
    /// whole, nothing changed, if the version is unknown, an interface is missing, or a port
    /// belongs to another call.
    pub fn import_call(&mut self, record: CallRecord) -> Result<CallUpdate, SessionError> {
        if record.version == 0 || record.version > CALL_RECORD_VERSION {
            return Err(SessionError::StateVersion {
                found: record.version,
                supported: CALL_RECORD_VERSION,
            });
        }
        let mut iface = [0; 2];
        for (k, want) in record.interfaces.iter().enumerate() {
            iface[k] = self
                .interfaces
                .iter()
                .position(|i| i == want)
                .ok_or_else(|| SessionError::UnknownInterface(want.name.clone()))?;
        }
        let own: Vec<SocketAddr> = self
            .export_call(&record.call_id)
            .map(|r| r.endpoints())
            .unwrap_or_default();
        for a in record.endpoints() {
            let used = self
                .allocators
                .get(&a.ip())
                .is_some_and(|al| al.is_used(a.port()));
            if used && !own.contains(&a) {
                return Err(SessionError::EndpointTaken {
                    endpoint: a,
                    call_id: self.call_of(a).unwrap_or("another call").to_owned(),
                });
            }
        }
        // Only now can nothing fail: drop an older version of the call, then take its place.
        if self.calls.contains_key(&record.call_id) {
            self.delete(&record.call_id, None, None)?;
        }
        let mut call = record.call.clone();
        for (k, side) in [Side::Offerer, Side::Answerer].into_iter().enumerate() {
            call[side].iface = iface[k];
        }
        let n = call[Side::Offerer].streams.len();
        for i in 0..n {
            let id = StreamId(self.next_stream);
            self.next_stream += 1;
            for side in [Side::Offerer, Side::Answerer] {
                if let Some(st) = call[side].streams.get_mut(i) {
                    st.id = id;
                }
            }
        }
        for a in record.endpoints() {
            let inside = self
                .allocators
                .get_mut(&a.ip())
                .is_some_and(|al| al.reserve(a.port()));
            if !inside {
                self.outside_range.push((record.call_id.clone(), a));
            }
        }
        self.calls.insert(record.call_id.clone(), call);
        Ok(self.reindex(&record.call_id))
    }
}
