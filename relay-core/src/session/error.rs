//! Why a session operation was refused. Every refusal leaves the sessions as they were.

use std::net::SocketAddr;

use thiserror::Error;

use super::interfaces::AddressFamily;
use crate::ports::PortError;
use crate::sdp::SdpError;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SessionError {
    #[error("bad SDP: {0}")]
    Sdp(#[from] SdpError),
    #[error(transparent)]
    Ports(#[from] PortError),
    #[error("no logical interface named `{0}`")]
    UnknownInterface(String),
    #[error("no logical interface of family {0}")]
    NoInterfaceForFamily(AddressFamily),
    #[error("bad interface spec `{0}`: expected NAME/IP or NAME/IP!ADVERTISED")]
    BadInterfaceSpec(String),
    #[error("no logical interfaces configured")]
    NoInterfaces,
    #[error("unknown call `{0}`")]
    UnknownCall(String),
    #[error("tag `{tag}` is not part of call `{call_id}`")]
    UnknownTag { call_id: String, tag: String },
    #[error("re-offer has {got} m= lines, fewer than the {had} already negotiated (RFC 3264 s.8)")]
    MediaRemoved { got: usize, had: usize },
    #[error("answer has {got} m= lines, the offer had {want}")]
    AnswerMismatch { got: usize, want: usize },
    #[error("no relay endpoint {0}")]
    UnknownEndpoint(SocketAddr),
    #[error("saved sessions were made for other logical interfaces")]
    StateMismatch,
    #[error(
        "saved sessions are format version {found}; this daemon reads versions 1 to {supported}"
    )]
    StateVersion { found: u32, supported: u32 },
    #[error("relay endpoint {endpoint} belongs to call `{call_id}`")]
    EndpointTaken {
        endpoint: SocketAddr,
        call_id: String,
    },
    #[error("SDP of {size} bytes is over the limit of {max}")]
    SdpTooLarge { size: usize, max: usize },
    #[error("SDP has {got} m= lines, over the limit of {max}")]
    TooManyMedia { got: usize, max: usize },
    #[error("endpoint {0} does not terminate ICE")]
    NotIce(SocketAddr),
}
