//! Logical interfaces (rtpengine's `NAME/BIND!ADVERTISED`) and which one each side of a new call
//! uses.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::SessionError;
use super::options::OfferOptions;
use crate::sdp::SessionDesc;

/// IPv4 or IPv6, as in rtpengine's `address family` (IP4/IP6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AddressFamily {
    Ip4,
    Ip6,
}

impl AddressFamily {
    pub fn of(ip: IpAddr) -> AddressFamily {
        if ip.is_ipv4() {
            AddressFamily::Ip4
        } else {
            AddressFamily::Ip6
        }
    }
}

impl fmt::Display for AddressFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressFamily::Ip4 => "IP4",
            AddressFamily::Ip6 => "IP6",
        })
    }
}

/// A logical interface: rtpengine's `NAME/BIND!ADVERTISED`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogicalInterface {
    pub name: String,
    /// Address the relay sockets (and XDP rewrites) use.
    pub bind: IpAddr,
    /// Address written into SDP (differs from `bind` behind a 1:1 NAT).
    pub advertised: IpAddr,
}

impl FromStr for LogicalInterface {
    type Err = SessionError;
    fn from_str(s: &str) -> Result<LogicalInterface, SessionError> {
        let bad = || SessionError::BadInterfaceSpec(s.to_owned());
        let (name, addrs) = s.split_once('/').unwrap_or(("default", s));
        let (bind, adv) = match addrs.split_once('!') {
            Some((b, a)) => (b, Some(a)),
            None => (addrs, None),
        };
        let bind: IpAddr = bind.parse().map_err(|_| bad())?;
        let advertised = match adv {
            Some(a) => a.parse().map_err(|_| bad())?,
            None => bind,
        };
        if name.is_empty() || bind.is_ipv4() != advertised.is_ipv4() {
            return Err(bad());
        }
        Ok(LogicalInterface {
            name: name.to_owned(),
            bind,
            advertised,
        })
    }
}

/// What the sessions are built on: the interfaces and the relay port range.
#[derive(Clone, Debug)]
pub struct Config {
    pub interfaces: Vec<LogicalInterface>,
    pub port_min: u16,
    pub port_max: u16,
}

/// Index of an interface in [`Config::interfaces`].
pub(super) type InterfaceIndex = usize;

pub(super) fn by_name(
    interfaces: &[LogicalInterface],
    name: &str,
) -> Result<InterfaceIndex, SessionError> {
    interfaces
        .iter()
        .position(|i| i.name == name)
        .ok_or_else(|| SessionError::UnknownInterface(name.to_owned()))
}

pub(super) fn by_family(
    interfaces: &[LogicalInterface],
    f: AddressFamily,
) -> Result<InterfaceIndex, SessionError> {
    interfaces
        .iter()
        .position(|i| AddressFamily::of(i.bind) == f)
        .ok_or(SessionError::NoInterfaceForFamily(f))
}

/// Interfaces of a new call (offerer's side, answerer's side): `direction` names them; otherwise
/// the offer's family picks the offerer's and `address-family` the answerer's.
pub(super) fn pick(
    interfaces: &[LogicalInterface],
    desc: &SessionDesc,
    opts: &OfferOptions,
) -> Result<(InterfaceIndex, InterfaceIndex), SessionError> {
    if let Some((a, b)) = &opts.direction {
        return Ok((by_name(interfaces, a)?, by_name(interfaces, b)?));
    }
    let offer_family = desc
        .media
        .iter()
        .find_map(|m| m.connection)
        .or(desc.connection)
        .map(AddressFamily::of);
    let a = match offer_family {
        Some(f) => by_family(interfaces, f).unwrap_or(0),
        None => 0,
    };
    let b = match opts.address_family {
        Some(f) => by_family(interfaces, f)?,
        None => a,
    };
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_specs() {
        let i: LogicalInterface = "pub/192.0.2.1!203.0.113.1".parse().unwrap();
        assert_eq!(
            (
                i.name.as_str(),
                i.bind.to_string(),
                i.advertised.to_string()
            ),
            ("pub", "192.0.2.1".into(), "203.0.113.1".into())
        );
        let i: LogicalInterface = "2001:db8::1".parse().unwrap();
        assert_eq!((i.name.as_str(), i.advertised), ("default", i.bind));
        assert!("x/1.2.3.4!::1".parse::<LogicalInterface>().is_err());
        assert!("x/nope".parse::<LogicalInterface>().is_err());
    }
}
