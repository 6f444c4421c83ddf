//! Shared call state: the per-call record ([`record`]), who owns a call and when a relay takes
//! one over ([`takeover`]), and the stores that hold records ([`CallStore`]): Redis
//! ([`redis::RedisStore`]) for standby takeover and pools, memory for tests. The local state file
//! stays the daemon's own durable state; a store is fed from the same write path.

pub mod ha;
pub mod host_addrs;
pub mod record;
pub mod redis;
pub mod takeover;

use std::{collections::BTreeSet, net::IpAddr};

use record::{CallRecord, RecordError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Config(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// Where call records live. Writes are queued and batched by the store; they never block the
/// caller and never fail it (a store that is down counts and retries on its own).
pub trait CallStore {
    /// Writes an own call's record (created or changed).
    fn put(&mut self, rec: CallRecord);
    /// Deletes a call's record: with `force` whoever owns it (the call ended by signalling),
    /// otherwise only if this relay owns it.
    fn delete(&mut self, call_id: &str, force: bool);
    /// Every record the store holds; what cannot be decoded is listed apart, never half-read.
    fn load_all(&mut self) -> Result<Loaded, StoreError>;
    /// Stops writing a call another relay took over (neither put nor delete).
    fn forget(&mut self, _call_id: &str) {}
}

#[derive(Debug, Default)]
pub struct Loaded {
    pub records: Vec<CallRecord>,
    pub refused: Vec<(String, RecordError)>,
}

/// What a store tells the engine about other relays' calls.
#[derive(Debug)]
pub enum Remote {
    /// Every record (after each (re)subscription): reconcile foreign calls with it.
    Snapshot(Vec<CallRecord>),
    /// Another relay's call was written.
    Put(Box<CallRecord>),
    /// A call's key was deleted or expired.
    Gone(String),
    /// Our write was refused: another relay took the call over.
    Fenced(String),
}

/// Records in memory, with the same ownership rule as Redis (tests, and a relay with no store).
#[derive(Debug, Default)]
pub struct MemoryStore {
    pub relay_id: String,
    pub records: std::collections::BTreeMap<String, Vec<u8>>,
    pub fenced: Vec<String>,
}

impl CallStore for MemoryStore {
    fn put(&mut self, rec: CallRecord) {
        let stored = self
            .records
            .get(&rec.call_id)
            .and_then(|b| CallRecord::decode(b).ok());
        let allowed = takeover::may_overwrite(
            &self.relay_id,
            rec.epoch,
            stored.as_ref().map(|s| (s.owner.as_str(), s.epoch)),
        );
        if allowed {
            self.records.insert(rec.call_id.clone(), rec.encode());
        } else {
            self.fenced.push(rec.call_id);
        }
    }

    fn delete(&mut self, call_id: &str, force: bool) {
        let mine = self
            .records
            .get(call_id)
            .and_then(|b| CallRecord::decode(b).ok())
            .is_some_and(|r| r.owner == self.relay_id);
        if force || mine {
            self.records.remove(call_id);
        }
    }

    fn load_all(&mut self) -> Result<Loaded, StoreError> {
        let mut loaded = Loaded::default();
        for (k, v) in &self.records {
            match CallRecord::decode_for(k, v) {
                Ok(r) => loaded.records.push(r),
                Err(e) => loaded.refused.push((k.clone(), e)),
            }
        }
        Ok(loaded)
    }
}

/// Addresses configured on this host's devices (getifaddrs): the full read behind the
/// automatic takeover's netlink address watch ([`host_addrs`]).
pub fn local_addrs() -> std::io::Result<BTreeSet<IpAddr>> {
    let mut out = BTreeSet::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `ifap` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut cur = ifap;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, valid until freeifaddrs.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr whose family says which struct it is.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: AF_INET: a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.insert(IpAddr::from(
                    u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                ));
            } else if family == libc::AF_INET6 {
                // SAFETY: AF_INET6: a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.insert(IpAddr::from(sin6.sin6_addr.s6_addr));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `ifap` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(ifap) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use record::tests::record;

    #[test]
    fn memory_store_fences_and_deletes_like_redis() {
        let mut a = MemoryStore {
            relay_id: "a".into(),
            ..Default::default()
        };
        a.put(record("a", 0));
        // b takes over: epoch 1.
        let mut b = MemoryStore {
            relay_id: "b".into(),
            records: a.records.clone(),
            ..Default::default()
        };
        b.put(takeover::taken_over(&record("a", 0), "b", 1));
        // a comes back and writes its old view: refused.
        a.records = b.records.clone();
        a.put(record("a", 0));
        assert_eq!(a.fenced, vec!["c1".to_owned()]);
        a.delete("c1", false);
        assert_eq!(a.load_all().unwrap().records[0].owner, "b");
        a.records.insert("junk".into(), b"{".to_vec());
        let l = a.load_all().unwrap();
        assert_eq!((l.records.len(), l.refused.len()), (1, 1));
        a.delete("c1", true);
        assert_eq!(a.load_all().unwrap().records.len(), 0);
    }

    #[test]
    fn loopback_is_a_local_address() {
        assert!(
            local_addrs()
                .unwrap()
                .contains(&IpAddr::from([127, 0, 0, 1]))
        );
    }
}
