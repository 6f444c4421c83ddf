//! The NG options that change how a call is negotiated and latched, as relay-core types.

use std::net::IpAddr;

use super::interfaces::AddressFamily;
use crate::forwarding::MismatchPolicy;

/// rtpengine's `ICE` key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum IceOption {
    /// Strip all ICE attributes.
    Remove,
    /// Mandatory termination (RFC 7584 s.4.2): the relay is the only candidate, on every leg.
    Force,
    /// `Force` if the offer has ICE, otherwise add none.
    #[default]
    Default,
    /// Optional termination (RFC 7584 s.4.3) if the offer has ICE, otherwise `Force`.
    Optional,
    /// Like `Optional`, but the offer's relay candidates are dropped first.
    ForceRelay,
}

/// rtpengine's `rtcp-mux` key (RFC 5761); `None` passes the offerer's choice through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RtcpMuxOption {
    #[default]
    None,
    /// Offer rtcp-mux to the answerer even if the offerer did not.
    Offer,
    /// Accept the offerer's rtcp-mux but offer separate RTCP to the answerer.
    Demux,
    /// Accept the offerer's rtcp-mux whatever the answerer says.
    Accept,
    /// Refuse the offerer's rtcp-mux; the answerer is offered what the offerer offered (as
    /// rtpengine does: combined with `offer` it is the opposite of `demux`).
    Reject,
    /// The answerer must use rtcp-mux: offered without an RTCP port.
    Require,
    /// `offer` and `reject` together: offered to the answerer, refused to the offerer (the
    /// opposite of `Demux`).
    OfferReject,
}

/// rtpengine flags that change latching.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    /// Trust the SDP address even if the signalling came from elsewhere.
    pub trust_address: bool,
    /// Always latch symmetrically.
    pub symmetric: bool,
    /// The endpoint does not do symmetric RTP: learn nothing, accept any source.
    pub asymmetric: bool,
    /// After latching, drop packets from other sources.
    pub strict_source: bool,
    /// After latching, hand packets from other sources to userspace, which re-latches.
    pub media_handover: bool,
    /// Keep local ports on a re-offer even if the remote address changed.
    pub port_latching: bool,
}

/// rtpengine's `replace` list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replace {
    /// Rewrite the address in o=.
    pub origin: bool,
    /// Rewrite c=/m= to the relay even under optional ICE termination.
    pub session_connection: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OfferOptions {
    pub ice: IceOption,
    pub rtcp_mux: RtcpMuxOption,
    pub flags: Flags,
    pub replace: Replace,
    /// Interface names (offerer side, answerer side); first offer only.
    pub direction: Option<(String, String)>,
    /// Family the answerer wants (interworking); ignored if `direction` is given.
    pub address_family: Option<AddressFamily>,
    /// Source address of the SIP message carrying this SDP.
    pub received_from: Option<IpAddr>,
    /// Overrides the mismatch policy the flags imply.
    pub source_mismatch: Option<MismatchPolicy>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnswerOptions {
    /// rtpengine's `ICE` key in the answer, towards the offerer: `Force` makes the relay the
    /// offerer's only (ICE-lite) candidate, `Remove` strips ICE; absent or `Default` does the
    /// same as `Force` for an offerer that sent ICE (even if the offer removed it towards the
    /// answerer, as rtpengine does); other values keep what the offer settled.
    pub ice: Option<IceOption>,
    pub flags: Flags,
    pub replace: Replace,
    pub received_from: Option<IpAddr>,
    pub source_mismatch: Option<MismatchPolicy>,
}
