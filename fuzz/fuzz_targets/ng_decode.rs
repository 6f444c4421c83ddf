#![no_main]
//! Any datagram body through the NG decoder (bencode or JSON) and the option mapping, as the
//! daemon runs them: never panics; a decoded dictionary re-encodes, and every option reader
//! returns a value or an error. The decoder and mapping are relay-ctl's own sources, included
//! here so the fuzz build does not build relay-ctl's eBPF program.

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../relay-ctl/src/ngwire.rs"]
mod ngwire;

#[allow(dead_code)]
#[path = "../../relay-ctl/src/ngmap.rs"]
mod ngmap;

#[allow(dead_code)]
#[path = "../../relay-ctl/src/ngcrypto.rs"]
mod ngcrypto;

fuzz_target!(|data: &[u8]| {
    let Ok((dict, enc)) = ngwire::decode(data) else {
        return;
    };
    let _ = ngwire::encode(&dict, enc);
    let Ok(mut req) = ngmap::Request::parse(&dict) else {
        return;
    };
    let _ = req.offer_options();
    let _ = req.answer_options();
    let _ = req.media_options();
    let _ = req.delete_options();
    let _ = req.unknown_keys();
});
