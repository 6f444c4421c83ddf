//! The binary's own subcommands (not part of the library): those that run the daemon or work on
//! the host and its pins rather than talk NG (those are in the library's `cli`).

pub mod daemon;
pub mod generate;
pub mod pin_dir;
pub mod stats;
