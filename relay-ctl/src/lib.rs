//! Library half of relay-ctl: the XDP loader and map access, shared by the binary and the tests.

pub mod cli;
pub mod client;
pub mod config;
pub mod crypto_media;
pub mod daemon;
pub mod dtls;
pub mod engine;
pub mod fd_limit;
pub mod gateway;
pub mod journal;
pub mod metrics;
pub mod ngcrypto;
pub mod ngmap;
pub mod ngwire;
pub mod pins;
pub mod ports;
pub mod srtp;
pub mod state_file;
pub mod xdp;
