//! The host's addresses, for the automatic takeover. Netlink address events (RTM_NEWADDR,
//! RTM_DELADDR) keep the set current the moment keepalived moves a floating address; a full
//! read (getifaddrs) follows every (re)subscription and socket overrun, and runs every few
//! seconds as a safety net only (an event lost some other way, a watch that could not start).
//! [`HostAddrs`] is the sans-IO part: it applies [`AddrChange`]s to the set and says whether it
//! changed; [`AddrSource`] is the full read, faked in tests.

use std::{collections::BTreeSet, io, net::IpAddr, time::Duration};

use futures_util::StreamExt as _;
use rtnetlink::{
    MulticastGroup,
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::{
        RouteNetlinkMessage,
        address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage},
    },
};
use tokio::sync::mpsc;

/// One change of the host's addresses, as the watch reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddrChange {
    Added(IpAddr),
    Removed(IpAddr),
    /// Events may have been missed (a new subscription, a socket overrun): read them all again.
    Resync,
}

/// A full read of the host's addresses.
pub trait AddrSource {
    fn read_all(&mut self) -> io::Result<BTreeSet<IpAddr>>;
}

/// getifaddrs(3).
pub struct Getifaddrs;

impl AddrSource for Getifaddrs {
    fn read_all(&mut self) -> io::Result<BTreeSet<IpAddr>> {
        super::local_addrs()
    }
}

/// The host's addresses as the last read and the events since say.
pub struct HostAddrs<S: AddrSource> {
    source: S,
    current: BTreeSet<IpAddr>,
}

impl<S: AddrSource> HostAddrs<S> {
    pub fn new(source: S) -> Self {
        let mut h = HostAddrs {
            source,
            current: BTreeSet::new(),
        };
        h.refresh();
        h
    }

    pub fn current(&self) -> &BTreeSet<IpAddr> {
        &self.current
    }

    /// Applies changes; true when the set changed.
    pub fn apply(&mut self, changes: impl IntoIterator<Item = AddrChange>) -> bool {
        let mut changed = false;
        for c in changes {
            changed |= match c {
                AddrChange::Added(a) => self.current.insert(a),
                AddrChange::Removed(a) => self.current.remove(&a),
                AddrChange::Resync => self.refresh(),
            };
        }
        changed
    }

    /// Reads every address again; true when the set changed. A failed read keeps the set.
    pub fn refresh(&mut self) -> bool {
        match self.source.read_all() {
            Ok(now) if now != self.current => {
                self.current = now;
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::debug!(error = %e, "reading host addresses");
                false
            }
        }
    }
}

/// What a netlink message means for the address set; None for anything else. A tentative
/// IPv6 address (duplicate address detection running) is not usable yet: the kernel sends
/// another RTM_NEWADDR when it is.
pub fn change_of(msg: &NetlinkMessage<RouteNetlinkMessage>) -> Option<AddrChange> {
    match &msg.payload {
        NetlinkPayload::Overrun(_) => Some(AddrChange::Resync),
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(m)) => {
            let a = address_of(m)?;
            Some(if tentative(m) {
                AddrChange::Removed(a)
            } else {
                AddrChange::Added(a)
            })
        }
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(m)) => {
            address_of(m).map(AddrChange::Removed)
        }
        _ => None,
    }
}

/// The local address: IFA_LOCAL where there is one (on a point-to-point link IFA_ADDRESS is
/// the peer's), else IFA_ADDRESS, as iproute2 reads it.
fn address_of(m: &AddressMessage) -> Option<IpAddr> {
    let local = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

fn tentative(m: &AddressMessage) -> bool {
    m.header.flags.contains(AddressHeaderFlags::Tentative)
        || m.attributes
            .iter()
            .any(|a| matches!(a, AddressAttribute::Flags(f) if f.contains(AddressFlags::Tentative)))
}

/// Subscribes to the host's IPv4 and IPv6 address events and forwards them; a
/// [`AddrChange::Resync`] follows each subscription, so a change between the first full read
/// and the subscription is not missed. If the socket fails, it resubscribes after a second.
/// Errors only when the first subscription fails (the caller falls back to the slow poll).
pub fn watch() -> io::Result<mpsc::UnboundedReceiver<AddrChange>> {
    let (tx, rx) = mpsc::unbounded_channel();
    let first = subscribe()?;
    tokio::spawn(async move {
        let mut sub = Some(first);
        loop {
            if let Some(mut messages) = sub.take() {
                if tx.send(AddrChange::Resync).is_err() {
                    return;
                }
                while let Some((msg, _)) = messages.next().await {
                    if let Some(c) = change_of(&msg)
                        && tx.send(c).is_err()
                    {
                        return;
                    }
                }
                tracing::warn!(
                    "netlink address watch ended: resubscribing (the 5 s address poll covers the meantime)"
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            match subscribe() {
                Ok(m) => sub = Some(m),
                Err(e) => tracing::warn!(error = %e, "netlink address watch: subscribing"),
            }
        }
    });
    Ok(rx)
}

/// The unsolicited messages of an rtnetlink connection (its channel type, boxed).
type Messages = futures_util::stream::BoxStream<
    'static,
    (
        NetlinkMessage<RouteNetlinkMessage>,
        rtnetlink::sys::SocketAddr,
    ),
>;

fn subscribe() -> io::Result<Messages> {
    let (conn, _handle, messages) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
    ])?;
    tokio::spawn(conn);
    Ok(messages.boxed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_core::NetlinkHeader;

    struct Fake(Vec<io::Result<BTreeSet<IpAddr>>>);

    impl AddrSource for Fake {
        fn read_all(&mut self) -> io::Result<BTreeSet<IpAddr>> {
            self.0.remove(0)
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn msg(
        new: bool,
        attrs: Vec<AddressAttribute>,
        flags: AddressHeaderFlags,
    ) -> NetlinkMessage<RouteNetlinkMessage> {
        let mut m = AddressMessage::default();
        m.header.flags = flags;
        m.attributes = attrs;
        let inner = if new {
            RouteNetlinkMessage::NewAddress(m)
        } else {
            RouteNetlinkMessage::DelAddress(m)
        };
        NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(inner),
        )
    }

    #[test]
    fn events_and_resyncs_keep_the_set() {
        let lo = ip("127.0.0.1");
        let float = ip("10.99.0.1");
        let mut h = HostAddrs::new(Fake(vec![
            Ok([lo].into()),
            Err(io::Error::other("boom")),
            Ok([lo, float].into()),
            Ok([lo, float].into()),
        ]));
        assert_eq!(h.current(), &[lo].into());
        assert!(h.apply([AddrChange::Added(float)]));
        assert!(
            !h.apply([AddrChange::Added(float)]),
            "a repeated event changes nothing"
        );
        assert!(h.apply([AddrChange::Removed(float)]));
        // A failed full read keeps what the events said.
        assert!(!h.apply([AddrChange::Resync]));
        assert_eq!(h.current(), &[lo].into());
        // The overrun's full read finds the address added meanwhile.
        assert!(h.apply([AddrChange::Resync]));
        assert!(h.current().contains(&float));
        assert!(!h.refresh());
    }

    #[test]
    fn netlink_messages_become_changes() {
        let none = AddressHeaderFlags::empty();
        let a = ip("10.99.0.1");
        assert_eq!(
            change_of(&msg(true, vec![AddressAttribute::Address(a)], none)),
            Some(AddrChange::Added(a))
        );
        assert_eq!(
            change_of(&msg(false, vec![AddressAttribute::Address(a)], none)),
            Some(AddrChange::Removed(a))
        );
        // Point-to-point: IFA_LOCAL is ours, IFA_ADDRESS the peer's.
        let peer = ip("10.99.0.254");
        assert_eq!(
            change_of(&msg(
                true,
                vec![AddressAttribute::Address(peer), AddressAttribute::Local(a)],
                none
            )),
            Some(AddrChange::Added(a))
        );
        // Tentative (DAD running), by header or by IFA_FLAGS: not usable yet.
        let v6 = ip("2001:db8::1");
        assert_eq!(
            change_of(&msg(
                true,
                vec![AddressAttribute::Address(v6)],
                AddressHeaderFlags::Tentative
            )),
            Some(AddrChange::Removed(v6))
        );
        assert_eq!(
            change_of(&msg(
                true,
                vec![
                    AddressAttribute::Address(v6),
                    AddressAttribute::Flags(AddressFlags::Tentative)
                ],
                none
            )),
            Some(AddrChange::Removed(v6))
        );
        assert_eq!(change_of(&msg(true, vec![], none)), None);
        let overrun = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::<RouteNetlinkMessage>::Overrun(Vec::new()),
        );
        assert_eq!(change_of(&overrun), Some(AddrChange::Resync));
    }
}
