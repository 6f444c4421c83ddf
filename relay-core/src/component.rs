//! RTP or RTCP, numbered as ICE components (RFC 8445 s.4.1.1.1: RTP is 1, RTCP is 2). One type
//! for the session model, the forwarding entries and the ICE agents.

/// RTP (component 1) or RTCP (component 2).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[repr(u8)]
pub enum Component {
    Rtp = 1,
    Rtcp = 2,
}

impl Component {
    pub const BOTH: [Component; 2] = [Component::Rtp, Component::Rtcp];

    /// 0 for RTP, 1 for RTCP: the position in per-component arrays.
    pub fn index(self) -> usize {
        self as usize - 1
    }

    /// The ICE component id (a=candidate's second field).
    pub fn id(self) -> u16 {
        self as u16
    }

    pub fn from_id(id: u16) -> Option<Component> {
        match id {
            1 => Some(Component::Rtp),
            2 => Some(Component::Rtcp),
            _ => None,
        }
    }

    /// The component of the `i`-th relay endpoint of a leg (RTP first, then RTCP).
    pub fn nth(i: usize) -> Component {
        if i == 0 {
            Component::Rtp
        } else {
            Component::Rtcp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_numbering() {
        assert_eq!(Component::Rtp.index(), 0);
        assert_eq!(Component::Rtcp.index(), 1);
        assert_eq!(Component::from_id(2), Some(Component::Rtcp));
        assert_eq!(Component::from_id(3), None);
        assert!(Component::Rtp < Component::Rtcp);
    }
}
