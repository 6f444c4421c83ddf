//! Library half of relay-ctl: the XDP loader and map access, shared by the binary and the tests.

pub mod cli;
pub mod client;
pub mod config;
pub mod crypto_media;
pub mod daemon;
pub mod datapath;
pub mod dtls;
pub mod engine;
pub mod fd_limit;
pub mod gateway;
pub mod host;
pub mod journal;
pub mod metrics;
pub mod ngcrypto;
pub mod ngmap;
pub mod ngopts;
pub mod ngwire;
pub mod pins;
pub mod ports;
pub mod rtpe_compat;
pub mod srtp;
pub mod state;
pub mod state_file;
pub mod top;
pub mod xdp;
