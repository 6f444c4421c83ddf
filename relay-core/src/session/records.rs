//! One call at a time out of and into [`Sessions`]: the per-call state a shared store (Redis)
//! keeps, so another relay can hold the call as foreign (its ports reserved) and take it over.
//!
//! A [`CallExport`] names its sides' logical interfaces by name and bind address: a relay imports
//! it only when it has the same logical interfaces (the floating address of an active-passive
//! pair, or a pool member's address configured on the survivors). Its body is versioned
//! ([`CALL_VERSION`]); an unknown version is refused before anything changes.

use std::net::IpAddr;

use thiserror::Error;

use super::{Call, Sessions};
use crate::latch::StreamId;

/// Version of the call body in a [`CallExport`]. Version 1: the call as the state file held it
/// before state versions existed (the `calls` entry of an unversioned `SessionsState`).
pub const CALL_VERSION: u32 = 1;

/// Oldest call body version [`Sessions::import_call`] still reads.
pub const CALL_VERSION_MIN: u32 = 1;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ImportError {
    #[error(
        "call body version {0} is not one this relay reads ({CALL_VERSION_MIN} to {CALL_VERSION})"
    )]
    Version(u32),
    #[error("no logical interface `{name}` with bind address {bind} here")]
    Interface { name: String, bind: IpAddr },
    #[error("relay port {bind}:{port} is already in use here")]
    PortBusy { bind: IpAddr, port: u16 },
    #[error("relay port {bind}:{port} is outside this relay's port range")]
    PortRange { bind: IpAddr, port: u16 },
    #[error("call `{0}` already exists here")]
    Exists(String),
}

/// One call's state, self-describing enough to be imported by another relay.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CallExport {
    /// Version of `call` (see [`CALL_VERSION`]).
    pub call_version: u32,
    /// Logical interface (name, bind address) of side 0 and side 1.
    pub interfaces: [(String, IpAddr); 2],
    call: Call,
}

impl CallExport {
    /// Bind addresses this call's relay endpoints use (one or two).
    pub fn binds(&self) -> Vec<IpAddr> {
        let mut b: Vec<IpAddr> = self.interfaces.iter().map(|(_, ip)| *ip).collect();
        b.dedup();
        b
    }

    /// Every relay port the call holds, with its bind address.
    pub fn ports(&self) -> Vec<(IpAddr, u16)> {
        let mut out = Vec::new();
        for (side, (_, bind)) in self.call.sides.iter().zip(&self.interfaces) {
            for st in &side.streams {
                for p in [st.rtp, st.rtcp].into_iter().flatten() {
                    out.push((*bind, p));
                }
            }
        }
        out
    }
}

impl Sessions {
    /// The state of one call, for a shared store; none for an unknown call.
    pub fn export_call(&self, call_id: &str) -> Option<CallExport> {
        let call = self.calls.get(call_id)?;
        let iface = |i: usize| {
            let li = &self.interfaces[i];
            (li.name.clone(), li.bind)
        };
        Some(CallExport {
            call_version: CALL_VERSION,
            interfaces: [iface(call.sides[0].iface), iface(call.sides[1].iface)],
            call: call.clone(),
        })
    }

    /// Adds a call exported by this or another relay, reserving its relay ports. Checked as a
    /// whole first: on any error nothing changes. Stream ids are renumbered (ids are local).
    pub fn import_call(&mut self, call_id: &str, export: CallExport) -> Result<(), ImportError> {
        if !(CALL_VERSION_MIN..=CALL_VERSION).contains(&export.call_version) {
            return Err(ImportError::Version(export.call_version));
        }
        if self.calls.contains_key(call_id) {
            return Err(ImportError::Exists(call_id.to_owned()));
        }
        let mut idx = [0usize; 2];
        for (k, (name, bind)) in export.interfaces.iter().enumerate() {
            idx[k] = self
                .interfaces
                .iter()
                .position(|li| &li.name == name && li.bind == *bind)
                .ok_or_else(|| ImportError::Interface {
                    name: name.clone(),
                    bind: *bind,
                })?;
        }
        let ports = export.ports();
        for &(bind, port) in &ports {
            let alloc = self
                .allocators
                .get(&bind)
                .ok_or_else(|| ImportError::Interface {
                    name: String::new(),
                    bind,
                })?;
            if !alloc.in_range(port) {
                return Err(ImportError::PortRange { bind, port });
            }
            if alloc.is_used(port) {
                return Err(ImportError::PortBusy { bind, port });
            }
        }
        let mut call = export.call;
        for (side, i) in call.sides.iter_mut().zip(idx) {
            side.iface = i;
            for st in &mut side.streams {
                st.id = StreamId(self.next_stream);
                self.next_stream += 1;
            }
        }
        for (bind, port) in ports {
            if let Some(a) = self.allocators.get_mut(&bind) {
                a.reserve(port);
            }
        }
        self.calls.insert(call_id.to_owned(), call);
        Ok(())
    }

    /// Removes a call and frees its ports; false if it was not there.
    pub fn remove_call(&mut self, call_id: &str) -> bool {
        self.calls.contains_key(call_id) && self.delete(call_id, None, None).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Config, OfferOptions};

    fn sessions(bind: &str) -> Sessions {
        Sessions::new(Config {
            interfaces: vec![format!("pub/{bind}").parse().unwrap()],
            port_min: 30000,
            port_max: 30100,
        })
        .unwrap()
    }

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

    #[test]
    fn a_call_moves_between_relays_with_its_ports() {
        let mut a = sessions("10.0.0.1");
        a.offer("c1", "ft", SDP, &OfferOptions::default()).unwrap();
        let ex = a.export_call("c1").unwrap();
        let ports = ex.ports();
        assert!(!ports.is_empty());
        let json = serde_json::to_string(&ex).unwrap();
        let back: CallExport = serde_json::from_str(&json).unwrap();

        let mut b = sessions("10.0.0.1");
        b.import_call("c1", back.clone()).unwrap();
        assert_eq!(b.ports_in_use("10.0.0.1".parse().unwrap()), ports.len());
        assert_eq!(
            b.import_call("c1", back.clone()),
            Err(ImportError::Exists("c1".into()))
        );
        // A fresh call on b never gets the imported ports.
        b.offer("c2", "ft", SDP, &OfferOptions::default()).unwrap();
        let c2 = b.export_call("c2").unwrap().ports();
        assert!(c2.iter().all(|p| !ports.contains(p)));
        assert!(b.remove_call("c1"));
        assert_eq!(b.ports_in_use("10.0.0.1".parse().unwrap()), c2.len());
    }

    #[test]
    fn imports_that_do_not_fit_change_nothing() {
        let mut a = sessions("10.0.0.1");
        a.offer("c1", "ft", SDP, &OfferOptions::default()).unwrap();
        let ex = a.export_call("c1").unwrap();

        let mut other = sessions("10.0.0.2");
        assert!(matches!(
            other.import_call("c1", ex.clone()),
            Err(ImportError::Interface { .. })
        ));
        let mut busy = sessions("10.0.0.1");
        busy.offer("x", "ft", SDP, &OfferOptions::default())
            .unwrap();
        assert!(matches!(
            busy.import_call("c1", ex.clone()),
            Err(ImportError::PortBusy { .. })
        ));
        assert_eq!(busy.call_ids().count(), 1);
        let mut future = ex;
        future.call_version = CALL_VERSION + 1;
        assert_eq!(
            sessions("10.0.0.1").import_call("c1", future),
            Err(ImportError::Version(CALL_VERSION + 1))
        );
    }
}
