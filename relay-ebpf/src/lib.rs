//! Empty library target so that `relay-ctl` can name this crate as a build dependency
//! (the aya-template way); the program itself is the `relay` binary.
#![no_std]
