//! Sans-IO protocol and session logic of the relay: no sockets, no clocks, no aya.
//! Time and packets are passed in; actions come out.
pub mod call_options;
pub mod codecs;
pub mod component;
pub mod creds;
pub mod forwarding;
pub mod ice;
pub mod latch;
pub mod ports;
pub mod rtpp_flags;
pub mod sdp;
pub mod sdp_edit;
pub mod session;
pub mod session_crypto;
pub mod sip;
pub mod srtp_sdp;
pub mod stun;
