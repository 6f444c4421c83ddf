#![no_main]
//! Any string through the rtpp-flags parser and the merge into a request: never panics; a
//! string that parses merges into any dictionary and expands without panicking.

use libfuzzer_sys::fuzz_target;
use relay_core::rtpp_flags;
use serde_json::{Map, Value, json};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = rtpp_flags::parse(text) {
        let Value::Object(mut req) = json!({
            "flags": ["trust-address"], "codec": {"strip": ["PCMU"]}, "label": "x",
            "replace": "origin", "direction": ["a", "b"],
        }) else {
            return;
        };
        rtpp_flags::merge(&mut req, parsed.dict.clone());
        rtpp_flags::expand_flags(&mut req);
        let mut empty = Map::new();
        rtpp_flags::merge(&mut empty, parsed.dict);
    }
});
